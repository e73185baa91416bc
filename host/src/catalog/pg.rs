//! PostgreSQL connections that follow a primary that moves.
//!
//! A URL may name several hosts, as libpq's do: `postgres://u:p@db1:5432,db2:5432/keyward?
//! target_session_attrs=read-write`. sqlx connects to one host, so the hosts are kept here:
//! the pool is built on the first host that accepts writes (`SHOW transaction_read_only` is
//! `off`), and when connecting fails or a connection lands on a server that no longer takes
//! writes (a demoted primary), the pool is dropped and the hosts are tried again, in order,
//! on the next request. A request never waits longer than the acquire timeout for a
//! connection, so a daemon whose database is gone answers quickly instead of hanging.

use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Postgres, Row};

/// How long a request waits for a database connection before it fails.
pub const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// Settings of every connection, so that no statement or transaction of a daemon holds the
/// catalog indefinitely: a statement (the serializing lock's wait included) ends after 30 s,
/// and a transaction left idle (a daemon stuck or cut off mid-transaction, still holding the
/// write lock) is ended by the server after 60 s.
const SESSION_SETTINGS: &[(&str, &str)] = &[
    ("statement_timeout", "30s"),
    ("idle_in_transaction_session_timeout", "60s"),
];

/// libpq's `target_session_attrs`: which servers a connection may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionAttrs {
    Any,
    ReadWrite,
}

/// The hosts of a PostgreSQL URL and the pool on the one in use.
#[derive(Clone)]
pub struct Hosts {
    candidates: Arc<Vec<PgConnectOptions>>,
    attrs: SessionAttrs,
    max_connections: u32,
    current: Arc<Mutex<Option<PgPool>>>,
    /// Set by `close`: no new pool after that.
    closed: Arc<std::sync::atomic::AtomicBool>,
    /// Serializes host selection so that a failover builds one pool, not one per request.
    selecting: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("the PostgreSQL URL names no host")]
    NoHost,
    #[error("target_session_attrs={0} is not supported: use read-write or any")]
    SessionAttrs(String),
    #[error("the PostgreSQL URL is not valid: {0}")]
    Invalid(#[source] sqlx::Error),
}

/// Splits a libpq-style multi-host URL into one URL per host, and reads
/// `target_session_attrs`, which sqlx does not know.
pub fn split_url(url: &str) -> Result<(Vec<String>, SessionAttrs), UrlError> {
    let (scheme, rest) = url.split_once("://").ok_or(UrlError::NoHost)?;
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((a, p)) => (a, format!("/{p}")),
        None => (before_query, String::new()),
    };
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((u, h)) => (format!("{u}@"), h),
        None => (String::new(), authority),
    };
    let mut attrs = SessionAttrs::Any;
    let mut params = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("target_session_attrs", v)) => {
                attrs = match v {
                    "read-write" | "primary" => SessionAttrs::ReadWrite,
                    "any" => SessionAttrs::Any,
                    other => return Err(UrlError::SessionAttrs(other.to_string())),
                }
            }
            _ => params.push(pair),
        }
    }
    let query = if params.is_empty() {
        String::new()
    } else {
        format!("?{}", params.join("&"))
    };
    let urls: Vec<String> = hosts
        .split(',')
        .filter(|h| !h.is_empty())
        .map(|host| format!("{scheme}://{userinfo}{host}{path}{query}"))
        .collect();
    if urls.is_empty() {
        return Err(UrlError::NoHost);
    }
    Ok((urls, attrs))
}

impl Hosts {
    pub fn new(url: &str, max_connections: u32) -> Result<Hosts, UrlError> {
        let (urls, attrs) = split_url(url)?;
        let candidates = urls
            .iter()
            .map(|u| {
                PgConnectOptions::from_str(u)
                    .map(|o| {
                        o.log_statements(tracing::log::LevelFilter::Debug)
                            .options(SESSION_SETTINGS.iter().copied())
                    })
                    .map_err(UrlError::Invalid)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Hosts {
            candidates: Arc::new(candidates),
            attrs,
            max_connections,
            current: Arc::new(Mutex::new(None)),
            closed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            selecting: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    /// The host the pool is on, for health reports.
    pub fn current_host(&self) -> Option<String> {
        let pool = self.current.lock().expect("hosts lock").clone()?;
        let o = pool.connect_options();
        Some(format!("{}:{}", o.get_host(), o.get_port()))
    }

    pub async fn acquire(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let pool = self.pool().await?;
        pool.acquire().await.inspect_err(|e| self.failed(&pool, e))
    }

    pub async fn begin(&self) -> Result<sqlx::Transaction<'static, Postgres>, sqlx::Error> {
        let pool = self.pool().await?;
        pool.begin().await.inspect_err(|e| self.failed(&pool, e))
    }

    pub async fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let pool = self.current.lock().expect("hosts lock").take();
        if let Some(pool) = pool {
            pool.close().await;
        }
    }

    /// Forgets the pool when the error says its server is gone or no longer the primary;
    /// the next request selects a host again.
    fn failed(&self, pool: &PgPool, e: &sqlx::Error) {
        let lost = matches!(
            e,
            sqlx::Error::Io(_)
                | sqlx::Error::PoolTimedOut
                | sqlx::Error::Tls(_)
                | sqlx::Error::Protocol(_)
                | sqlx::Error::WorkerCrashed
        ) || is_read_only(e);
        if !lost || self.candidates.len() < 2 {
            return;
        }
        let mut current = self.current.lock().expect("hosts lock");
        if current.as_ref().is_some_and(|c| {
            c.connect_options().get_port() == pool.connect_options().get_port()
                && c.connect_options().get_host() == pool.connect_options().get_host()
        }) {
            tracing::warn!(error = %e, "lost the PostgreSQL primary; selecting a host again");
            if let Some(old) = current.take() {
                tokio::spawn(async move { old.close().await });
            }
        }
    }

    /// The pool on the host in use, selecting one first if needed.
    pub async fn pool(&self) -> Result<PgPool, sqlx::Error> {
        if let Some(pool) = self.current.lock().expect("hosts lock").clone() {
            return Ok(pool);
        }
        let _one = self.selecting.lock().await;
        if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(sqlx::Error::PoolClosed);
        }
        if let Some(pool) = self.current.lock().expect("hosts lock").clone() {
            return Ok(pool);
        }
        let options = self.select().await?;
        let attrs = self.attrs;
        let pool = PgPoolOptions::new()
            .max_connections(self.max_connections)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if attrs == SessionAttrs::ReadWrite && read_only(conn).await? {
                        return Err(sqlx::Error::Protocol(
                            "the server no longer accepts writes (target_session_attrs=read-write)"
                                .into(),
                        ));
                    }
                    Ok(())
                })
            })
            .connect_lazy_with(options);
        *self.current.lock().expect("hosts lock") = Some(pool.clone());
        Ok(pool)
    }

    /// The first host, in URL order, that answers and (for read-write) accepts writes.
    async fn select(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let mut last = None;
        for options in self.candidates.iter() {
            let attempt = async {
                let mut conn = options.connect().await?;
                let writable = !read_only(&mut conn).await?;
                let _ = conn.close().await;
                Ok::<_, sqlx::Error>(writable)
            };
            match tokio::time::timeout(ACQUIRE_TIMEOUT, attempt).await {
                Ok(Ok(true)) => return Ok(options.clone()),
                Ok(Ok(false)) if self.attrs == SessionAttrs::Any => return Ok(options.clone()),
                Ok(Ok(false)) => {
                    last = Some(sqlx::Error::Protocol(format!(
                        "{}:{} does not accept writes",
                        options.get_host(),
                        options.get_port()
                    )))
                }
                Ok(Err(e)) => last = Some(e),
                Err(_) => last = Some(sqlx::Error::PoolTimedOut),
            }
        }
        Err(last.unwrap_or(sqlx::Error::PoolTimedOut))
    }
}

async fn read_only(conn: &mut sqlx::PgConnection) -> Result<bool, sqlx::Error> {
    let row = sqlx::query("SHOW transaction_read_only")
        .fetch_one(conn)
        .await?;
    Ok(row.get::<String, _>(0) == "on")
}

/// SQLSTATE 25006: a write on a server in recovery (a standby, or a demoted primary).
fn is_read_only(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(d) if d.code().as_deref() == Some("25006"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multi_host_url_splits_into_one_url_per_host() {
        let (urls, attrs) = split_url(
            "postgres://kw:s%40cret@db1:5432,db2:5433/keyward?sslmode=disable&target_session_attrs=read-write",
        )
        .unwrap();
        assert_eq!(
            urls,
            [
                "postgres://kw:s%40cret@db1:5432/keyward?sslmode=disable",
                "postgres://kw:s%40cret@db2:5433/keyward?sslmode=disable"
            ]
        );
        assert_eq!(attrs, SessionAttrs::ReadWrite);
        assert!(matches!(
            split_url("postgres://db1/k?target_session_attrs=standby"),
            Err(UrlError::SessionAttrs(_))
        ));
        let (one, attrs) = split_url("postgres://db1/k").unwrap();
        assert_eq!(one, ["postgres://db1/k"]);
        assert_eq!(attrs, SessionAttrs::Any);
    }
}
