//! The catalog: accounts, users, applications, groups, security objects, links, escrow,
//! rotation policies and steps, cron jobs and their fires, webhooks, notification endpoints
//! and their outbox, workflow runs, the journal of changes in external key managers and the
//! audit log, in SQLite through sqlx.
//!
//! Everything SQL lives in this module, behind functions that take a connection (a pooled
//! one or a transaction), so a PostgreSQL backend can be added here without touching callers.
//! Each API call that changes state runs in one transaction ([`Catalog::begin`]), audit event
//! included. Secrets are sealed under the master key ([`seal`]).

pub mod accounts;
pub mod apps;
pub mod audit;
pub mod groups;
pub mod hsm_ops;
pub mod notifications;
pub mod rotation;
pub mod schedule;
pub mod seal;
pub mod sobjects;
pub mod users;
pub mod webhooks;
pub mod workflow_runs;
pub mod workflow_scripts;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, Sqlite, SqlitePool};

pub use seal::MasterKey;

/// A connection to run catalog queries on: pooled or inside a transaction.
pub type Conn = sqlx::SqliteConnection;
/// A catalog transaction. Dropped without commit, it rolls back.
pub type Tx = sqlx::Transaction<'static, Sqlite>;

const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("migrations/0001_catalog.sql")),
    (2, include_str!("migrations/0002_workflows.sql")),
    (3, include_str!("migrations/0003_integrity.sql")),
    (4, include_str!("migrations/0004_rotation.sql")),
    (5, include_str!("migrations/0005_versions.sql")),
    (6, include_str!("migrations/0006_app_credentials.sql")),
    (
        7,
        include_str!("migrations/0007_app_permissions_audit_types.sql"),
    ),
    (8, include_str!("migrations/0008_workflow_scripts.sql")),
    (9, include_str!("migrations/0009_webhooks_per_account.sql")),
];
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
    #[error("a sealed secret could not be opened: {0}")]
    Seal(#[from] seal::SealError),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl CatalogError {
    /// True when the error is a uniqueness violation (a name already taken).
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, CatalogError::Db(sqlx::Error::Database(e)) if e.is_unique_violation())
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

#[derive(Clone)]
pub struct Catalog {
    pool: SqlitePool,
    master: MasterKey,
}

impl Catalog {
    /// Opens (creating if needed) the catalog at `path`, applies migrations and checks that
    /// `master` is the key the catalog was created with.
    pub async fn open(path: &Path, master: MasterKey) -> Result<Catalog> {
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        let catalog = Catalog { pool, master };
        catalog.migrate().await?;
        catalog.check_master_key().await?;
        Ok(catalog)
    }

    async fn migrate(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        sqlx::raw_sql("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at INTEGER NOT NULL)")
            .execute(&mut *conn)
            .await?;
        let applied: Vec<i64> = sqlx::query("SELECT version FROM schema_migrations")
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        drop(conn);
        for (version, sql) in MIGRATIONS {
            if applied.contains(version) {
                continue;
            }
            let mut tx = self.pool.begin().await?;
            let run = async {
                sqlx::raw_sql(*sql).execute(&mut *tx).await?;
                sqlx::query("INSERT INTO schema_migrations (version, applied_at) VALUES (?, strftime('%s','now'))")
                    .bind(version)
                    .execute(&mut *tx)
                    .await?;
                Ok::<_, sqlx::Error>(())
            };
            run.await.map_err(|source| CatalogError::Migration {
                version: *version,
                source,
            })?;
            tx.commit().await?;
            tracing::info!(version, "catalog migrated");
        }
        Ok(())
    }

    async fn check_master_key(&self) -> Result<()> {
        let row = sqlx::query("SELECT value FROM catalog_meta WHERE name = 'master_key_check'")
            .fetch_optional(&self.pool)
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
                sqlx::query(
                    "INSERT INTO catalog_meta (name, value) VALUES ('master_key_check', ?)",
                )
                .bind(self.master.seal(CHECK_CONTEXT, CHECK_PLAINTEXT))
                .execute(&self.pool)
                .await?;
                Ok(())
            }
        }
    }

    /// A write transaction. It takes the write lock up front (`BEGIN IMMEDIATE`): a
    /// transaction that reads first and upgrades later can fail with SQLITE_BUSY when another
    /// writer commits in between, whereas waiting for the lock (busy timeout) always works.
    pub async fn begin(&self) -> Result<Tx> {
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    /// A pooled connection for reads.
    pub async fn conn(&self) -> Result<sqlx::pool::PoolConnection<Sqlite>> {
        Ok(self.pool.acquire().await?)
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

    /// Catalog version 9 makes webhook names unique per account by building the webhooks
    /// tables anew: a catalog upgraded from version 8 keeps its webhooks and accepted
    /// deliveries (refusals are no longer stored), and the cascade still holds.
    #[tokio::test]
    async fn upgrading_to_per_account_webhook_names_keeps_webhooks_and_deliveries() {
        let options = SqliteConnectOptions::from_str("sqlite::memory:")
            .unwrap()
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        let apply = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                let mut tx = pool.begin().await.unwrap();
                sqlx::raw_sql(sql).execute(&mut *tx).await.unwrap();
                tx.commit().await.unwrap();
            }
        };
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v <= 8) {
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
        let (_, v9) = MIGRATIONS.iter().find(|(v, _)| *v == 9).unwrap();
        apply(v9).await;

        let count = |sql: &'static str| {
            let pool = pool.clone();
            async move {
                sqlx::query(sql)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
                    .get::<i64, _>(0)
            }
        };
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
}
