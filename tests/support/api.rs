//! A daemon started in-process on a free port with its own data directory, and a small JSON
//! client for its REST API.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward::api::AppState;
use keyward::daemon::{self, DaemonConfig};
use keyward::time::Clock;
use reqwest::Method;
use serde_json::{Value, json};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct TestDaemon {
    pub url: String,
    pub data_dir: PathBuf,
    pub clock: Clock,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    running: Option<daemon::Running>,
    _tmp: Option<tempfile::TempDir>,
}

impl TestDaemon {
    /// `GET /metrics`, as a scraper reads it.
    pub async fn metrics(&self) -> String {
        http_client()
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// A daemon with a fresh data directory.
    pub async fn start() -> TestDaemon {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = TestDaemon::start_in(tmp.path())
            .await
            .expect("the daemon starts");
        d._tmp = Some(tmp);
        d
    }

    /// A daemon with a fresh data directory and settings changed by `adjust`.
    pub async fn start_with(adjust: impl FnOnce(&mut DaemonConfig)) -> TestDaemon {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = TestDaemon::start_configured(tmp.path(), adjust)
            .await
            .expect("the daemon starts");
        d._tmp = Some(tmp);
        d
    }

    /// A daemon with a fresh data directory, or why it did not start.
    pub async fn start_with_result(
        adjust: impl FnOnce(&mut DaemonConfig),
    ) -> Result<TestDaemon, daemon::DaemonError> {
        let tmp = tempfile::tempdir().unwrap();
        let mut d = TestDaemon::start_configured(tmp.path(), adjust).await?;
        d._tmp = Some(tmp);
        Ok(d)
    }

    /// A daemon on `dir` (kept by the caller, e.g. across a restart).
    pub async fn start_in(dir: &Path) -> Result<TestDaemon, daemon::DaemonError> {
        TestDaemon::start_configured(dir, |_| {}).await
    }

    pub async fn start_configured(
        dir: &Path,
        adjust: impl FnOnce(&mut DaemonConfig),
    ) -> Result<TestDaemon, daemon::DaemonError> {
        let mut config = DaemonConfig::new(dir);
        config.database = crate::postgres::location_for(dir).await;
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.plugin_cache_dir = Some(crate::cache_dir());
        adjust(&mut config);
        let clock = config.clock.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = daemon::start(config, async {
            stopped.await.ok();
        })
        .await?;
        Ok(TestDaemon {
            url: format!("http://{}", running.addr),
            data_dir: dir.to_path_buf(),
            clock,
            state: running.state.clone(),
            stop: Some(stop),
            running: Some(running),
            _tmp: None,
        })
    }

    /// Shuts down cleanly (the audit log is flushed).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(r) = self.running.take() {
            r.wait().await.unwrap();
        }
    }

    pub fn anonymous(&self) -> Api {
        Endpoint::at(&self.url).anonymous()
    }

    /// Signs up the first user (the account administrator) and logs in.
    pub async fn bootstrap(&self) -> Api {
        Endpoint::at(&self.url).bootstrap().await
    }

    pub async fn login(&self, email: &str, password: &str) -> Api {
        Endpoint::at(&self.url).login(email, password).await
    }

    pub async fn login_app(&self, api_key: &str) -> Api {
        Endpoint::at(&self.url).login_app(api_key).await
    }
}

/// A daemon's API by its address: one in this process, or one in another (a child process
/// the test starts and kills).
pub struct Endpoint {
    pub url: String,
}

impl Endpoint {
    pub fn at(url: &str) -> Endpoint {
        Endpoint {
            url: url.to_string(),
        }
    }

    pub fn anonymous(&self) -> Api {
        Api {
            http: http_client(),
            base: self.url.clone(),
            token: None,
        }
    }

    /// Signs up the first user (the account administrator) and logs in.
    pub async fn bootstrap(&self) -> Api {
        let (s, body) = self
            .anonymous()
            .call(
                Method::POST,
                "/sys/v1/users",
                Some(json!({"user_email": ADMIN_EMAIL, "user_password": ADMIN_PASSWORD})),
            )
            .await;
        assert_eq!(s, 201, "sign-up: {body}");
        self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await
    }

    pub async fn login(&self, email: &str, password: &str) -> Api {
        let basic = STANDARD.encode(format!("{email}:{password}"));
        self.login_basic(&basic).await
    }

    pub async fn login_app(&self, api_key: &str) -> Api {
        self.login_basic(api_key).await
    }

    async fn login_basic(&self, basic: &str) -> Api {
        let resp = http_client()
            .post(format!("{}/sys/v1/session/auth", self.url))
            .header("authorization", format!("Basic {basic}"))
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "login failed: {body}");
        Api {
            http: http_client(),
            base: self.url.clone(),
            token: Some(body["access_token"].as_str().unwrap().to_string()),
        }
    }
}

/// A session with the daemon.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    pub token: Option<String>,
}

impl Api {
    /// A caller without a session through its own HTTP client (one that presents a client
    /// certificate, say).
    pub fn over(http: reqwest::Client, base: &str) -> Api {
        Api {
            http,
            base: base.to_string(),
            token: None,
        }
    }

    /// The same session, sent to another daemon (one sharing the catalog).
    pub fn on(&self, base: &str) -> Api {
        Api {
            http: self.http.clone(),
            base: base.to_string(),
            token: self.token.clone(),
        }
    }

    /// Status and JSON body (or the text as a JSON string) of a call.
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        Self::finish(req).await
    }

    /// A call with a raw body.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: impl Into<reqwest::Body>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        Self::finish(req).await
    }

    async fn finish(req: reqwest::RequestBuilder) -> (u16, Value) {
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Value {
        let (s, b) = self.call(method.clone(), path, body).await;
        assert!(
            (200..300).contains(&s),
            "{method} {path} failed with {s}: {b}"
        );
        b
    }

    /// Creates an account and makes it the session's account; returns its id.
    pub async fn create_account(&self, name: &str) -> String {
        let id = self
            .ok(
                Method::POST,
                "/sys/v1/accounts",
                Some(json!({"name": name})),
            )
            .await["acct_id"]
            .as_str()
            .expect("an account id")
            .to_string();
        self.ok(
            Method::POST,
            "/sys/v1/session/select_account",
            Some(json!({"acct_id": id})),
        )
        .await;
        id
    }

    pub async fn create_group(&self, name: &str, extra: Value) -> String {
        let mut body = json!({"name": name});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        self.ok(Method::POST, "/sys/v1/groups", Some(body)).await["group_id"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Creates an application in `groups`; returns (app id, API key).
    pub async fn create_app(&self, name: &str, groups: &[&str]) -> (String, String) {
        let body = self
            .ok(
                Method::POST,
                "/sys/v1/apps",
                Some(json!({"name": name, "groups": groups, "default_group": groups.first()})),
            )
            .await;
        (
            body["app_id"].as_str().unwrap().to_string(),
            body["api_key"].as_str().unwrap().to_string(),
        )
    }

    pub async fn create_key(&self, body: Value) -> Value {
        self.ok(Method::POST, "/crypto/v1/keys", Some(body)).await
    }
}

/// An HTTP client (the TLS stack needs its crypto provider chosen first).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(v: &Value) -> Vec<u8> {
    STANDARD
        .decode(v.as_str().expect("a base64 string"))
        .expect("valid base64")
}

/// The entries of a `GET /sys/v1/logs` answer (DSM's `{hits: [{_id, _source}]}`), newest first.
pub fn log_entries(logs: &Value) -> Vec<Value> {
    logs["hits"]
        .as_array()
        .unwrap_or_else(|| panic!("an audit log answer: {logs}"))
        .iter()
        .map(|h| h["_source"].clone())
        .collect()
}

/// Every row of every catalog table, for asserting that a refused request changed nothing.
pub async fn catalog_snapshot(d: &TestDaemon) -> String {
    catalog_snapshot_without(d, &[]).await
}

/// Every row of every catalog table but `skip` (say, the audit log, which records refusals),
/// each table's rows sorted, on either backend.
pub async fn catalog_snapshot_without(d: &TestDaemon, skip: &[&str]) -> String {
    use keyward::catalog::Backend;
    use keyward::catalog::db::{Builder, query};
    d.state.audit.flush().await;
    let mut conn = d.state.catalog.conn().await.unwrap();
    let backend = conn.backend();
    let tables: Vec<String> = match backend {
        Backend::Sqlite => query("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"),
        Backend::Postgres => query("SELECT table_name::text FROM information_schema.tables WHERE table_schema = current_schema() ORDER BY table_name"),
    }
    .fetch_all(&mut conn)
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect();
    let mut out = String::new();
    for t in tables.into_iter().filter(|t| !skip.contains(&t.as_str())) {
        let row_text = match backend {
            Backend::Sqlite => {
                let cols: Vec<String> =
                    Builder::new(format!("SELECT name FROM pragma_table_info('{t}')"))
                        .build()
                        .fetch_all(&mut conn)
                        .await
                        .unwrap()
                        .iter()
                        .map(|r| r.get(0))
                        .collect();
                cols.iter()
                    .map(|c| format!("quote(\"{c}\")"))
                    .collect::<Vec<_>>()
                    .join(" || ',' || ")
            }
            Backend::Postgres => format!("row_to_json(\"{t}\")::text"),
        };
        let mut rows: Vec<String> = Builder::new(format!("SELECT {row_text} FROM \"{t}\""))
            .build()
            .fetch_all(&mut conn)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        rows.sort();
        out.push_str(&format!("== {t}\n"));
        for r in rows {
            out.push_str(&r);
            out.push('\n');
        }
    }
    out
}
