//! The suite's database switch, PostgreSQL clusters for the tests that stop, restart or
//! fail over their database, and two daemons sharing one PostgreSQL catalog.
//!
//! `KEYWARD_TEST_DATABASE=postgres://...` (an administrator's URL, e.g. the one
//! `tests/postgres.sh start` prints) runs every test daemon on PostgreSQL: each data
//! directory gets a database of its own, created on first use and remembered in the
//! directory, so a daemon restarted on the same directory finds its catalog again. Unset (or
//! `sqlite`), daemons use SQLite in their data directory as they do by default.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use keyward::catalog::Location;
use keyward::daemon::DaemonConfig;
use sqlx::Connection;

use crate::api::TestDaemon;

const MARKER: &str = "test-database-url";

/// The administrator URL of the suite's PostgreSQL, when the suite runs on PostgreSQL.
pub fn admin_url() -> Option<String> {
    std::env::var("KEYWARD_TEST_DATABASE")
        .ok()
        .filter(|v| v.starts_with("postgres"))
}

/// Whether this run of the suite is on PostgreSQL.
pub fn on_postgres() -> bool {
    admin_url().is_some()
}

/// The catalog location for a daemon on `dir`: `None` (SQLite in the directory) unless the
/// suite runs on PostgreSQL.
pub async fn location_for(dir: &Path) -> Option<Location> {
    let admin = admin_url()?;
    let marker = dir.join(MARKER);
    if let Ok(url) = std::fs::read_to_string(&marker) {
        return Some(Location::from_str(url.trim()).expect("a database URL"));
    }
    let url = create_database(&admin).await;
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(&marker, &url).unwrap();
    Some(Location::from_str(&url).expect("a database URL"))
}

/// A new, empty database on the server of `admin`; its URL.
pub async fn create_database(admin: &str) -> String {
    let name = format!("kw_{}", keyward::catalog::new_id().replace('-', ""));
    let mut conn = sqlx::PgConnection::connect(admin)
        .await
        .expect("the suite's PostgreSQL answers (tests/postgres.sh start)");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {name} TEMPLATE template0"
    )))
    .execute(&mut conn)
    .await
    .unwrap();
    let _ = conn.close().await;
    let (base, _) = admin.rsplit_once('/').expect("a URL with a database");
    format!("{base}/{name}")
}

/// A PostgreSQL cluster of one test's own, on a free loopback port, for stopping, starting
/// and promoting. Stopped (immediately) when dropped.
pub struct Cluster {
    pub dir: PathBuf,
    pub port: u16,
    _tmp: tempfile::TempDir,
}

fn bindir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL from Debian's packages (tests/postgres.sh installs it)")
        .filter_map(|e| Some(e.ok()?.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("a PostgreSQL installation")
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs a PostgreSQL program as the cluster's owner (PostgreSQL refuses to run as root).
fn pg(program: &str, args: &[&str]) -> std::process::Output {
    let path = bindir().join(program);
    let mut cmd = if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(&path);
        c
    } else {
        Command::new(&path)
    };
    cmd.args(args).output().expect("run a PostgreSQL program")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    /// A new primary, started.
    pub fn primary() -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("keyward-pg")
            .tempdir()
            .unwrap();
        let dir = tmp.path().join("data");
        Cluster::own(tmp.path());
        let out = pg(
            "initdb",
            &[
                "-D",
                dir.to_str().unwrap(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        );
        assert!(out.status.success(), "initdb: {out:?}");
        let port = free_port();
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 200\nwal_level = replica\nmax_wal_senders = 4\n\
             synchronous_commit = on\n",
            tmp.path().display()
        );
        append(&dir.join("postgresql.conf"), &conf);
        append(
            &dir.join("pg_hba.conf"),
            "host replication postgres 127.0.0.1/32 trust\n",
        );
        let c = Cluster {
            dir,
            port,
            _tmp: tmp,
        };
        c.start();
        c
    }

    /// A streaming standby of `primary`, started, and made `primary`'s one synchronous
    /// standby: a commit on the primary returns once the standby has it.
    pub fn standby_of(primary: &Cluster) -> Cluster {
        let tmp = tempfile::Builder::new()
            .prefix("keyward-pg")
            .tempdir()
            .unwrap();
        Cluster::own(tmp.path());
        let dir = tmp.path().join("data");
        let out = pg(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &primary.port.to_string(),
                "-U",
                "postgres",
                "-D",
                dir.to_str().unwrap(),
                "-R",
                "-X",
                "stream",
                // An immediate checkpoint, not a spread one (which takes minutes).
                "-c",
                "fast",
            ],
        );
        assert!(out.status.success(), "pg_basebackup: {out:?}");
        let port = free_port();
        append(
            &dir.join("postgresql.conf"),
            &format!(
                "port = {port}\nunix_socket_directories = '{}'\n",
                tmp.path().display(),
            ),
        );
        // pg_basebackup -R wrote a primary_conninfo into postgresql.auto.conf, which wins
        // over postgresql.conf: the standby's name goes there.
        append(
            &dir.join("postgresql.auto.conf"),
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={} user=postgres application_name=standby'\n",
                primary.port
            ),
        );
        let standby = Cluster {
            dir,
            port,
            _tmp: tmp,
        };
        standby.start();
        append(
            &primary.dir.join("postgresql.conf"),
            "synchronous_standby_names = 'standby'\n",
        );
        let out = pg("pg_ctl", &["-D", primary.dir.to_str().unwrap(), "reload"]);
        assert!(out.status.success(), "reload: {out:?}");
        standby
    }

    fn own(dir: &Path) {
        if is_root() {
            let s = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir)
                .status()
                .unwrap();
            assert!(s.success());
        }
    }

    /// The URL of database `postgres` (the administrator's).
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    pub fn start(&self) {
        let log = self.dir.parent().unwrap().join("log");
        let out = pg(
            "pg_ctl",
            &[
                "-D",
                self.dir.to_str().unwrap(),
                "-l",
                log.to_str().unwrap(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(out.status.success(), "pg_ctl start: {out:?}");
    }

    /// Stops at once, as a crash would (`-m immediate`): no checkpoint, clients cut off.
    pub fn stop(&self) {
        let out = pg(
            "pg_ctl",
            &[
                "-D",
                self.dir.to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
        assert!(out.status.success(), "pg_ctl stop: {out:?}");
    }

    /// Promotes a standby to primary.
    pub fn promote(&self) {
        let out = pg(
            "pg_ctl",
            &["-D", self.dir.to_str().unwrap(), "-w", "promote"],
        );
        assert!(out.status.success(), "pg_ctl promote: {out:?}");
    }

    /// Waits until a standby streams from this primary as its synchronous standby.
    pub async fn synchronous_standby(&self) {
        use sqlx::Row;
        for _ in 0..400 {
            if let Ok(mut c) = sqlx::PgConnection::connect(&self.admin_url()).await {
                let sync = sqlx::query(
                    "SELECT COUNT(*) FROM pg_stat_replication WHERE sync_state = 'sync'",
                )
                .fetch_one(&mut c)
                .await
                .map(|r| r.get::<i64, _>(0))
                .unwrap_or(0);
                if sync > 0 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no synchronous standby streams from port {}", self.port);
    }

    /// Waits until the server answers queries.
    pub async fn ready(&self) {
        for _ in 0..200 {
            if sqlx::PgConnection::connect(&self.admin_url()).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("PostgreSQL on port {} does not answer", self.port);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg(
            "pg_ctl",
            &["-D", self.dir.to_str().unwrap(), "-m", "immediate", "stop"],
        );
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// Everything the catalog of the daemon on `dir` stores, as bytes, to search for secrets
/// that must never be there: SQLite's files as they are on disk; on PostgreSQL every row of
/// every table as text, with each `bytea` value (shown as hex) decoded back to its bytes.
pub async fn catalog_bytes(dir: &Path) -> Vec<u8> {
    let Ok(url) = std::fs::read_to_string(dir.join(MARKER)) else {
        let mut bytes = Vec::new();
        for f in ["catalog.db", "catalog.db-wal"] {
            if let Ok(b) = std::fs::read(dir.join(f)) {
                bytes.extend(b);
            }
        }
        return bytes;
    };
    use sqlx::Row;
    let mut conn = sqlx::PgConnection::connect(url.trim()).await.unwrap();
    let tables: Vec<String> = sqlx::query(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema()",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    let mut bytes = Vec::new();
    for t in tables {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT row_to_json(\"{t}\")::text FROM \"{t}\""
        )))
        .fetch_all(&mut conn)
        .await
        .unwrap();
        for r in rows {
            let text: String = r.get(0);
            bytes.extend(text.as_bytes());
            bytes.extend(decoded_hex(&text));
        }
    }
    bytes
}

/// The bytes of every `\\x<hex>` in `text` (how `row_to_json` shows a `bytea`).
fn decoded_hex(text: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for part in text.split("\\\\x").skip(1) {
        let hex: Vec<u8> = part.bytes().take_while(u8::is_ascii_hexdigit).collect();
        for pair in hex.chunks_exact(2) {
            let s = std::str::from_utf8(pair).unwrap();
            out.push(u8::from_str_radix(s, 16).unwrap());
        }
        out.push(0);
    }
    out
}

/// Two daemons on one PostgreSQL catalog, sharing the master key and nothing else, as behind
/// a load balancer; with whatever else the test needs (a cluster, a directory) kept alive
/// as long as they are.
pub struct Pair {
    pub a: TestDaemon,
    pub b: TestDaemon,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    kept: Vec<Box<dyn std::any::Any>>,
}

impl Pair {
    /// Two daemons on the database at `url`, each configured further by `adjust`.
    pub async fn on(url: &str, adjust: impl Fn(&mut DaemonConfig) + Clone + 'static) -> Pair {
        let location = Location::from_str(url).expect("a database URL");
        let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let start = |dir: &Path, name: &str| {
            let (location, adjust) = (location.clone(), adjust.clone());
            let (dir, name) = (dir.to_path_buf(), name.to_string());
            async move {
                TestDaemon::start_configured(&dir, move |c| {
                    c.database = Some(location);
                    adjust(c);
                })
                .await
                .unwrap_or_else(|e| panic!("daemon {name} starts: {e}"))
            }
        };
        let a = start(da.path(), "A").await;
        std::fs::copy(da.path().join("master.key"), db.path().join("master.key")).unwrap();
        let b = start(db.path(), "B").await;
        Pair {
            a,
            b,
            _dirs: (da, db),
            kept: Vec::new(),
        }
    }

    /// Keeps `thing` alive as long as the pair.
    pub fn keeping(mut self, thing: impl std::any::Any) -> Pair {
        self.kept.push(Box::new(thing));
        self
    }
}
