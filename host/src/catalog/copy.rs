//! Copying a whole catalog to another database (`keyward catalog copy --from --to`): how an
//! SQLite deployment moves to PostgreSQL (or back). Rows are copied as stored, sealed
//! secrets included, so the daemons on the new catalog use the same master key. Both
//! catalogs are brought to this daemon's schema version first; the destination must be
//! empty, and is written in one transaction, so a copy that fails leaves it empty.
//!
//! Sessions, failed logins and leases are not copied: they belong to the running daemons,
//! and users sign in again after the move.

use std::collections::BTreeMap;

use super::db::{self, Arg, Backend, Builder, Row};
use super::{Catalog, CatalogError, Conn, Result};

/// The tables copied, parents before children (foreign keys hold at every insert).
pub const TABLES: &[&str] = &[
    "accounts",
    "users",
    "account_members",
    "groups",
    "group_members",
    "apps",
    "app_groups",
    "sobjects",
    "sobject_tags",
    "key_links",
    "escrow_blobs",
    "rotation_policies",
    "jobs",
    "fires",
    "rotation_steps",
    "webhooks",
    "webhook_deliveries",
    "notification_endpoints",
    "outbox",
    "expiry_notices",
    "app_cert_notices",
    "approval_requests",
    "approval_votes",
    "workflow_scripts",
    "workflow_runs",
    "hsm_ops",
    "audit_events",
];

/// Tables whose integer id the database assigns; after a copy into PostgreSQL, its identity
/// sequence continues after the copied ids.
const IDENTITY_IDS: &[&str] = &["key_links", "webhook_deliveries", "audit_events"];

/// Tables the catalog lists in insertion order.
const SEQ_ORDERED: &[&str] = &["workflow_runs", "hsm_ops", "outbox"];

/// How a column's values are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int,
    Bool,
    Text,
    Blob,
}

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error(
        "the destination already has a catalog ({accounts} accounts): copy into an empty database"
    )]
    NotEmpty { accounts: i64 },
    #[error("column {table}.{column} of the source is missing in the destination")]
    Column { table: String, column: String },
}

/// The columns of `table` and how each is stored, as the database states them (without
/// PostgreSQL's `seq`, which stands for SQLite's implicit rowid and is never copied).
pub async fn columns(c: &mut Conn, table: &str) -> Result<Vec<(String, Kind)>> {
    let rows = match c.backend() {
        Backend::Sqlite => {
            Builder::new(format!(
                "SELECT name, upper(type) FROM pragma_table_info('{table}')"
            ))
            .build()
            .fetch_all(c)
            .await?
        }
        Backend::Postgres => {
            db::query(
                "SELECT column_name::text, data_type::text FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = ? ORDER BY ordinal_position",
            )
            .bind(table)
            .fetch_all(c)
            .await?
        }
    };
    let mut out = Vec::new();
    for r in rows {
        let name: String = r.get(0);
        let declared: String = r.get(1);
        let kind = match declared.to_lowercase().as_str() {
            "integer" | "bigint" => Kind::Int,
            "boolean" => Kind::Bool,
            "text" => Kind::Text,
            "blob" | "bytea" => Kind::Blob,
            other => {
                return Err(CatalogError::Corrupt(format!(
                    "{table}.{name} has type {other}"
                )));
            }
        };
        if name != "seq" {
            out.push((name, kind));
        }
    }
    Ok(out)
}

fn value(r: &Row, i: usize, kind: Kind) -> Arg {
    match kind {
        Kind::Int => Arg::Int(r.get(i)),
        Kind::Bool => Arg::Bool(r.get(i)),
        Kind::Text => Arg::Text(r.get(i)),
        Kind::Blob => Arg::Blob(r.get(i)),
    }
}

/// Rows per INSERT statement.
const BATCH: usize = 200;

/// Copies every table of `from` into the empty catalog `to`; the rows copied, by table.
pub async fn copy(
    from: &Catalog,
    to: &Catalog,
) -> std::result::Result<BTreeMap<String, u64>, CopyError> {
    let mut src = from.conn().await?;
    let mut tx = to.begin().await?;
    let accounts: i64 = db::query("SELECT COUNT(*) FROM accounts")
        .fetch_one(&mut tx)
        .await
        .map_err(CatalogError::from)?
        .get(0);
    if accounts > 0 {
        return Err(CopyError::NotEmpty { accounts });
    }
    let mut counts = BTreeMap::new();
    for table in TABLES {
        let from_columns = columns(&mut src, table).await?;
        let to_kinds: BTreeMap<String, Kind> = columns(&mut tx, table).await?.into_iter().collect();
        // Read as the destination stores it (SQLite's 0/1 as PostgreSQL's boolean, say).
        let mut kinds = Vec::new();
        for (name, _) in &from_columns {
            let kind = *to_kinds.get(name).ok_or_else(|| CopyError::Column {
                table: table.to_string(),
                column: name.clone(),
            })?;
            kinds.push((name.clone(), kind));
        }
        let list = kinds
            .iter()
            .map(|(n, _)| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        // Insertion order, where the catalog reads it (`{seq}`), is kept.
        let order = if SEQ_ORDERED.contains(table) {
            " ORDER BY {seq}"
        } else {
            ""
        };
        let rows = Builder::new(format!("SELECT {list} FROM {table}{order}"))
            .build()
            .fetch_all(&mut src)
            .await
            .map_err(CatalogError::from)?;
        for chunk in rows.chunks(BATCH) {
            let mut q = Builder::new(format!("INSERT INTO {table} ({list}) VALUES "));
            for (n, r) in chunk.iter().enumerate() {
                q.push(if n == 0 { "(" } else { ", (" });
                let mut values = q.separated(", ");
                for (i, (_, kind)) in kinds.iter().enumerate() {
                    values.push_bind(value(r, i, *kind));
                }
                q.push(")");
            }
            q.build()
                .execute(&mut tx)
                .await
                .map_err(CatalogError::from)?;
        }
        counts.insert(table.to_string(), rows.len() as u64);
    }
    if to.backend() == Backend::Postgres {
        for table in IDENTITY_IDS {
            Builder::new(format!(
                "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(MAX(id), 0) + 1, false) FROM {table}"
            ))
            .build()
            .execute(&mut tx)
            .await
            .map_err(CatalogError::from)?;
        }
    }
    tx.commit().await.map_err(CatalogError::from)?;
    Ok(counts)
}
