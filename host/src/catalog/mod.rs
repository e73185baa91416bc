//! The catalog: accounts, users, applications, groups, security objects, links, escrow,
//! rotation policies and steps, cron jobs and their fires, webhooks, notification endpoints
//! and their outbox, workflow runs, the journal of changes in external key managers and the
//! audit log, in SQLite (the embedded default) or PostgreSQL (several daemons on one
//! database), through sqlx.
//!
//! Everything SQL lives in this module, behind functions that take a connection (a pooled
//! one or a transaction). The SQL is written once for both databases; what differs between
//! them is in [`db`] (placeholders, a few expressions, how writes are serialized) and in the
//! two migration lists. Each API call that changes state runs in one transaction
//! ([`Catalog::begin`]), audit event included. Secrets are sealed under the master key
//! ([`seal`]).

pub mod accounts;
pub mod approvals;
pub mod apps;
pub mod audit;
pub mod changes;
pub mod copy;
pub mod db;
pub mod groups;
pub mod hsm_ops;
pub mod leases;
pub mod notifications;
pub mod pg;
pub mod reports;
pub mod rotation;
pub mod schedule;
pub mod seal;
pub mod sessions;
pub mod sobjects;
pub mod users;
pub mod webhooks;
pub mod workflow_runs;
pub mod workflow_scripts;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

pub use db::{Backend, Conn, Tx};
pub use seal::MasterKey;

/// SQLite's migrations, from an empty file to the current schema.
const SQLITE_MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/sqlite/0001_catalog.sql")),
    (2, include_str!("migrations/sqlite/0002_workflows.sql")),
    (3, include_str!("migrations/sqlite/0003_integrity.sql")),
    (4, include_str!("migrations/sqlite/0004_rotation.sql")),
    (5, include_str!("migrations/sqlite/0005_versions.sql")),
    (
        6,
        include_str!("migrations/sqlite/0006_app_credentials.sql"),
    ),
    (
        7,
        include_str!("migrations/sqlite/0007_app_permissions_audit_types.sql"),
    ),
    (
        8,
        include_str!("migrations/sqlite/0008_workflow_scripts.sql"),
    ),
    (
        9,
        include_str!("migrations/sqlite/0009_webhooks_per_account.sql"),
    ),
    (10, include_str!("migrations/sqlite/0010_sessions.sql")),
    (
        11,
        include_str!("migrations/sqlite/0011_app_certificates.sql"),
    ),
    (12, include_str!("migrations/sqlite/0012_approvals.sql")),
    (
        13,
        include_str!("migrations/sqlite/0013_account_approvals.sql"),
    ),
];

/// PostgreSQL's migrations. PostgreSQL catalogs start at version 9, the schema SQLite
/// reached by then; every later version has a migration in both lists.
const POSTGRES_MIGRATIONS: &[(i64, &str)] = &[
    (9, include_str!("migrations/postgres/0009_catalog.sql")),
    (10, include_str!("migrations/postgres/0010_sessions.sql")),
    (
        11,
        include_str!("migrations/postgres/0011_app_certificates.sql"),
    ),
    (12, include_str!("migrations/postgres/0012_approvals.sql")),
    (
        13,
        include_str!("migrations/postgres/0013_account_approvals.sql"),
    ),
];

/// The migrations of `backend`, in order.
pub fn migrations(backend: Backend) -> &'static [(i64, &'static str)] {
    match backend {
        Backend::Sqlite => SQLITE_MIGRATIONS,
        Backend::Postgres => POSTGRES_MIGRATIONS,
    }
}

const CHECK_CONTEXT: &str = "catalog:master-key-check";
const CHECK_PLAINTEXT: &[u8] = b"keyward catalog";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog storage error: {0}")]
    Db(#[from] sqlx::Error),
    #[error(
        "the master key does not open this catalog: it was created with a different key. Start with the original \
         master key file or KEYWARD_MASTER_KEY; without it the sealed secrets (key material, client secrets) cannot be recovered"
    )]
    WrongMasterKey,
    #[error("catalog migration {version} failed: {source}")]
    Migration { version: i64, source: sqlx::Error },
    #[error(
        "the catalog is at version {found}, newer than this daemon knows ({known}): run the newer keyward, or restore a backup"
    )]
    TooNew { found: i64, known: i64 },
    #[error("a sealed secret could not be opened: {0}")]
    Seal(#[from] seal::SealError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Url(#[from] pg::UrlError),
}

impl CatalogError {
    /// True when the error is a uniqueness violation (a name already taken).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, CatalogError::Db(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// True when the database cannot be reached or cannot take writes now (it is down,
    /// restarting, failing over, or every connection is busy past the timeout): the request
    /// may succeed later, and nothing was committed.
    pub fn is_unavailable(&self) -> bool {
        match self {
            CatalogError::Db(e) => db_unavailable(e),
            CatalogError::Migration { source, .. } => db_unavailable(source),
            _ => false,
        }
    }

    /// The rule a schema trigger refused a write for (migration 3): a code path that missed
    /// one of the key service's checks, stopped by the schema.
    pub fn integrity_violation(&self) -> Option<&str> {
        match self {
            CatalogError::Db(sqlx::Error::Database(e)) => e.message().strip_prefix("integrity: "),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, CatalogError>;

fn db_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // SQLSTATE class 08 (connection exception), 57P01..57P03 (the server is shutting
        // down or starting), 25006 (a standby, or a demoted primary, refusing a write).
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || ["57P01", "57P02", "57P03", "25006"].contains(&c.as_ref())
        }),
        _ => false,
    }
}

/// Where a catalog lives: `--database` / `KEYWARD_DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// A SQLite file (`sqlite://<path>`), created when missing.
    Sqlite(PathBuf),
    /// A PostgreSQL URL (`postgres://...`), possibly naming several hosts.
    Postgres(String),
}

#[derive(Debug, thiserror::Error)]
#[error(
    "{0:?} is not a database URL: use sqlite://<path> or postgres://[user[:password]@]host[:port][,host2...]/database"
)]
pub struct LocationError(String);

impl FromStr for Location {
    type Err = LocationError;
    fn from_str(s: &str) -> std::result::Result<Location, LocationError> {
        if let Some(path) = s
            .strip_prefix("sqlite://")
            .or_else(|| s.strip_prefix("sqlite:"))
        {
            if path.is_empty() {
                return Err(LocationError(s.to_string()));
            }
            Ok(Location::Sqlite(PathBuf::from(path)))
        } else if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            pg::split_url(s).map_err(|_| LocationError(s.to_string()))?;
            Ok(Location::Postgres(s.to_string()))
        } else {
            Err(LocationError(s.to_string()))
        }
    }
}

/// Shown without the password, so a location can be logged and reported.
impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            Location::Postgres(url) => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
                match rest.rsplit_once('@') {
                    Some((userinfo, hosts)) => {
                        let user = userinfo.split(':').next().unwrap_or("");
                        write!(f, "{scheme}://{user}@{hosts}")
                    }
                    None => write!(f, "{scheme}://{rest}"),
                }
            }
        }
    }
}

impl fmt::Debug for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Location {
    pub fn backend(&self) -> Backend {
        match self {
            Location::Sqlite(_) => Backend::Sqlite,
            Location::Postgres(_) => Backend::Postgres,
        }
    }
}

/// The schema version and what one daemon holds: the catalog's part of its health.
#[derive(Debug)]
pub struct Standing {
    pub schema_version: i64,
    pub leases: Vec<leases::Lease>,
    pub claims: Vec<leases::Claim>,
}

#[derive(Clone)]
pub struct Catalog {
    pool: db::Pool,
    master: MasterKey,
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path`, applies migrations and checks that
    /// `master` is the key the catalog was created with.
    pub async fn open(path: &Path, master: MasterKey) -> Result<Catalog> {
        Catalog::open_at(&Location::Sqlite(path.to_path_buf()), master).await
    }

    /// Opens the catalog at `location`, migrating it to this daemon's version first.
    pub async fn open_at(location: &Location, master: MasterKey) -> Result<Catalog> {
        let catalog = Catalog {
            pool: connect(location).await?,
            master,
        };
        catalog.migrate().await?;
        Ok(catalog)
    }

    /// Opens the catalog without migrating it: for `keyward migrate --check` and for
    /// reading a catalog of this version.
    pub async fn open_unmigrated(location: &Location, master: MasterKey) -> Result<Catalog> {
        Ok(Catalog {
            pool: connect(location).await?,
            master,
        })
    }

    pub fn backend(&self) -> Backend {
        self.pool.backend()
    }

    /// The catalog's schema version (0 for an empty database).
    pub async fn version(&self) -> Result<i64> {
        let mut c = self.conn().await?;
        c.run_script(SCHEMA_MIGRATIONS).await?;
        Ok(
            db::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                .fetch_one(&mut c)
                .await?
                .get(0),
        )
    }

    /// Applies the migrations this catalog lacks and checks the master key, in one write
    /// transaction: two daemons starting together on one PostgreSQL migrate once (the
    /// second waits for the first's transaction and then finds nothing to do), and a daemon
    /// with the wrong master key writes nothing, not even a migration.
    pub async fn migrate(&self) -> Result<Vec<i64>> {
        let mut tx = self.begin().await?;
        tx.run_script(SCHEMA_MIGRATIONS).await?;
        let applied: Vec<i64> = db::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut tx)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let list = migrations(self.backend());
        let known = list.last().map(|(v, _)| *v).unwrap_or(0);
        if let Some(found) = applied.iter().copied().max().filter(|v| *v > known) {
            return Err(CatalogError::TooNew { found, known });
        }
        if !applied.is_empty() {
            self.check_master_key(&mut tx).await?;
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut done = Vec::new();
        for (version, sql) in list {
            if applied.contains(version) {
                continue;
            }
            let run = async {
                tx.run_script(sql).await?;
                db::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)")
                    .bind(*version)
                    .bind(now)
                    .execute(&mut tx)
                    .await?;
                Ok::<_, sqlx::Error>(())
            };
            run.await.map_err(|source| CatalogError::Migration {
                version: *version,
                source,
            })?;
            done.push(*version);
        }
        self.check_master_key(&mut tx).await?;
        tx.commit().await?;
        for version in &done {
            tracing::info!(version, backend = self.backend().name(), "catalog migrated");
        }
        Ok(done)
    }

    async fn check_master_key(&self, c: &mut Conn) -> Result<()> {
        let row = db::query("SELECT value FROM catalog_meta WHERE name = 'master_key_check'")
            .fetch_optional(c)
            .await?;
        match row {
            Some(row) => {
                let sealed: Vec<u8> = row.get(0);
                match self.master.open(CHECK_CONTEXT, &sealed) {
                    Ok(plain) if plain == CHECK_PLAINTEXT => Ok(()),
                    _ => Err(CatalogError::WrongMasterKey),
                }
            }
            None => {
                db::query("INSERT INTO catalog_meta (name, value) VALUES ('master_key_check', ?)")
                    .bind(self.master.seal(CHECK_CONTEXT, CHECK_PLAINTEXT))
                    .execute(c)
                    .await?;
                Ok(())
            }
        }
    }

    /// A write transaction. Write transactions are serialized (see [`db`]): a transaction
    /// that reads first and writes later never loses to another writer in between.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// A pooled connection for reads.
    pub async fn conn(&self) -> Result<Conn> {
        Ok(self.pool.acquire().await?)
    }

    pub fn pool(&self) -> &db::Pool {
        &self.pool
    }

    /// What the daemon `holder` stands on, read over one connection within two seconds
    /// (health asks while the database may be gone: it must neither hang nor take several
    /// connections from a pool that is short of them).
    pub async fn standing(&self, holder: &str, now: i64) -> Result<Standing> {
        let probe = async {
            let mut c = self.conn().await?;
            let schema_version =
                db::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
                    .fetch_one(&mut c)
                    .await?
                    .get(0);
            Ok::<_, CatalogError>(Standing {
                schema_version,
                leases: leases::held_by(&mut c, holder).await?,
                claims: leases::claims_of(&mut c, holder, now).await?,
            })
        };
        tokio::time::timeout(Duration::from_secs(2), probe)
            .await
            .map_err(|_| CatalogError::Db(sqlx::Error::PoolTimedOut))?
    }

    /// The database server in use: the PostgreSQL host (of several, the primary found), or
    /// `None` for SQLite.
    pub fn current_host(&self) -> Option<String> {
        match &self.pool {
            db::Pool::Postgres(hosts) => hosts.current_host(),
            db::Pool::Sqlite(_) => None,
        }
    }

    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        self.master.seal(context, plain)
    }

    pub fn open_sealed(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>> {
        Ok(self.master.open(context, sealed)?)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)";

async fn connect(location: &Location) -> Result<db::Pool> {
    Ok(match location {
        Location::Sqlite(path) => {
            let options = SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .foreign_keys(true)
                .busy_timeout(Duration::from_secs(10));
            db::Pool::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(8)
                    .connect_with(options)
                    .await?,
            )
        }
        Location::Postgres(url) => db::Pool::Postgres(pg::Hosts::new(url, 16)?),
    })
}

/// A fresh random id (UUID v4 form).
pub fn new_id() -> String {
    let mut b = keyward_crypto::random_bytes(16);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Whether `s` looks like an id this catalog hands out (so malformed ids get a clear 400).
pub fn is_id(s: &str) -> bool {
    s.len() == 36
        && s.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::Row;

    /// An empty SQLite catalog in memory, with foreign keys on as the daemon has them.
    async fn memory_pool() -> sqlx::SqlitePool {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .unwrap()
            .foreign_keys(true);
        SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap()
    }

    /// Runs `sql` in one transaction, as a migration runs.
    async fn apply(pool: &sqlx::SqlitePool, sql: &str) {
        let mut tx = pool.begin().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
            .execute(&mut *tx)
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }

    async fn count(pool: &sqlx::SqlitePool, sql: &'static str) -> i64 {
        sqlx::query(sql)
            .fetch_one(pool)
            .await
            .unwrap()
            .get::<i64, _>(0)
    }

    /// Catalog version 9 makes webhook names unique per account by building the webhooks
    /// tables anew: a catalog upgraded from version 8 keeps its webhooks and accepted
    /// deliveries (refusals are no longer stored), and the cascade still holds.
    #[tokio::test]
    async fn upgrading_to_per_account_webhook_names_keeps_webhooks_and_deliveries() {
        let pool = memory_pool().await;
        let apply = |sql: &'static str| apply(&pool, sql);
        for (version, sql) in SQLITE_MIGRATIONS.iter().filter(|(v, _)| *v <= 8) {
            assert!(*version <= 8);
            apply(sql).await;
        }
        let seed = "
            INSERT INTO accounts (id, name, created_at) VALUES ('a1', 'one', 0), ('a2', 'two', 0);
            INSERT INTO webhooks (id, account_id, name, kind, workflow, secret, owner_kind, owner_id, created_at)
                VALUES ('w1', 'a1', 'deploy', 'standard', 'sync', x'00', 'user', 'u1', 0),
                       ('w2', 'a2', 'other', 'standard', 'sync', x'00', 'user', 'u2', 0);
            INSERT INTO webhook_deliveries (webhook_id, message_id, received_at, outcome, run_id)
                VALUES ('w1', 'msg_1', 1, 'accepted', 'r1'), ('w1', NULL, 2, 'refused', NULL);
        ";
        apply(seed).await;
        let (_, v9) = SQLITE_MIGRATIONS.iter().find(|(v, _)| *v == 9).unwrap();
        apply(v9).await;

        let count = |sql: &'static str| count(&pool, sql);
        assert_eq!(count("SELECT COUNT(*) FROM webhooks").await, 2);
        assert_eq!(
            count("SELECT COUNT(*) FROM webhook_deliveries WHERE outcome = 'accepted' AND message_id = 'msg_1'").await,
            1
        );
        assert_eq!(
            count("SELECT COUNT(*) FROM webhook_deliveries WHERE outcome = 'refused'").await,
            0
        );
        // Another account may take a name; the same account may not take it twice.
        sqlx::raw_sql("INSERT INTO webhooks (id, account_id, name, kind, workflow, secret, owner_kind, owner_id, created_at) VALUES ('w3', 'a2', 'deploy', 'standard', 'sync', x'00', 'user', 'u2', 0)")
            .execute(&pool)
            .await
            .unwrap();
        let again = sqlx::raw_sql("INSERT INTO webhooks (id, account_id, name, kind, workflow, secret, owner_kind, owner_id, created_at) VALUES ('w4', 'a2', 'deploy', 'standard', 'sync', x'00', 'user', 'u2', 0)")
            .execute(&pool)
            .await;
        assert!(again.is_err());
        // Deleting a webhook still deletes its deliveries.
        sqlx::raw_sql("DELETE FROM webhooks WHERE id = 'w1'")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM webhook_deliveries").await, 0);
    }

    /// Catalog version 13 lets a request need the account's policy instead of a group's by
    /// building the approval tables anew: a catalog upgraded from version 12 keeps its
    /// requests and their votes, and deleting a request still deletes its votes.
    #[tokio::test]
    async fn upgrading_to_account_approvals_keeps_requests_and_votes() {
        let pool = memory_pool().await;
        let apply = |sql: &'static str| apply(&pool, sql);
        for (_, sql) in SQLITE_MIGRATIONS.iter().filter(|(v, _)| *v <= 12) {
            apply(sql).await;
        }
        apply("
            INSERT INTO accounts (id, name, created_at) VALUES ('a1', 'one', 0);
            INSERT INTO approval_requests (id, account_id, requester_kind, requester_id, created_at, expires_at,
                                           method, operation, group_id, status)
                VALUES ('q1', 'a1', 'user', 'u1', 0, 10, 'POST', '/crypto/v1/keys/rekey', 'g1', 'PENDING');
            INSERT INTO approval_votes (request_id, principal_kind, principal_id, at) VALUES ('q1', 'user', 'u2', 1);
        ").await;
        let (_, v13) = SQLITE_MIGRATIONS.iter().find(|(v, _)| *v == 13).unwrap();
        apply(v13).await;
        let count = |sql: &'static str| count(&pool, sql);
        assert_eq!(
            count("SELECT COUNT(*) FROM approval_requests WHERE group_id = 'g1' AND NOT account_policy").await,
            1
        );
        assert_eq!(count("SELECT COUNT(*) FROM approval_votes").await, 1);
        // An account-level request has no group; a request of neither is refused.
        sqlx::raw_sql("INSERT INTO approval_requests (id, account_id, requester_kind, requester_id, created_at, expires_at, method, operation, account_policy, status)
                       VALUES ('q2', 'a1', 'user', 'u1', 0, 10, 'POST', '/sys/v1/groups', 1, 'PENDING')")
            .execute(&pool)
            .await
            .unwrap();
        let neither = sqlx::raw_sql("INSERT INTO approval_requests (id, account_id, requester_kind, requester_id, created_at, expires_at, method, operation, status)
                       VALUES ('q3', 'a1', 'user', 'u1', 0, 10, 'POST', '/sys/v1/groups', 'PENDING')")
            .execute(&pool)
            .await;
        assert!(neither.is_err());
        sqlx::raw_sql("DELETE FROM approval_requests WHERE id = 'q1'")
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(count("SELECT COUNT(*) FROM approval_votes").await, 0);
    }
}
