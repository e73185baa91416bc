//! Lease rows for singleton work across the daemons sharing a catalog (catalog version 10):
//! taken, renewed and read by single statements timed by the database's clock, never by a
//! daemon's, and never a session-level advisory lock (which a pooled connection would hold
//! past its work). The TTL and renewal period are the holder's (see `workflows::lease`).

use super::db::{self, Row};
use super::{Conn, Result};

/// A held lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub detail: Option<String>,
    /// Unix milliseconds, by the database's clock.
    pub valid_until: i64,
}

fn from_row(r: &Row) -> Lease {
    Lease {
        name: r.get("name"),
        holder: r.get("holder"),
        detail: r.get("detail"),
        valid_until: r.get("valid_until"),
    }
}

/// Takes `name` for `ttl_ms` if it is free or expired, or renews it if `holder` has it.
/// `Ok(false)`: another holder has it.
pub async fn take(
    c: &mut Conn,
    name: &str,
    holder: &str,
    detail: Option<&str>,
    ttl_ms: i64,
) -> Result<bool> {
    Ok(db::query(
        "INSERT INTO leases (name, holder, detail, valid_until) VALUES (?, ?, ?, {now_ms} + ?)
         ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, detail = excluded.detail,
             valid_until = excluded.valid_until
         WHERE leases.valid_until < {now_ms} OR leases.holder = excluded.holder",
    )
    .bind(name)
    .bind(holder)
    .bind(detail)
    .bind(ttl_ms)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Gives `name` up, if `holder` has it.
pub async fn release(c: &mut Conn, name: &str, holder: &str) -> Result<()> {
    db::query("DELETE FROM leases WHERE name = ? AND holder = ?")
        .bind(name)
        .bind(holder)
        .execute(c)
        .await?;
    Ok(())
}

/// The live lease of `name`, if any.
pub async fn holder_of(c: &mut Conn, name: &str) -> Result<Option<Lease>> {
    Ok(
        db::query("SELECT * FROM leases WHERE name = ? AND valid_until >= {now_ms}")
            .bind(name)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(from_row),
    )
}

/// The live leases `holder` has.
pub async fn held_by(c: &mut Conn, holder: &str) -> Result<Vec<Lease>> {
    Ok(
        db::query(
            "SELECT * FROM leases WHERE holder = ? AND valid_until >= {now_ms} ORDER BY name",
        )
        .bind(holder)
        .fetch_all(c)
        .await?
        .iter()
        .map(from_row)
        .collect(),
    )
}

/// A claim of scheduled work a worker holds: a fire (`fire:<kind>:<target>:<due>`) or a
/// rotation step (`rotation_step:<id>`), with the time its lease ends (Unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub name: String,
    pub until: i64,
}

/// The claims `worker` holds at `now`.
pub async fn claims_of(c: &mut Conn, worker: &str, now: i64) -> Result<Vec<Claim>> {
    let fires = db::query(
        "SELECT kind, target, due_at, lease_until FROM fires
         WHERE worker = ? AND status = 'running' AND lease_until >= ? ORDER BY lease_until",
    )
    .bind(worker)
    .bind(now)
    .fetch_all(&mut *c)
    .await?;
    let steps = db::query(
        "SELECT id, lease_until FROM rotation_steps
         WHERE worker = ? AND status = 'pending' AND lease_until >= ? ORDER BY lease_until",
    )
    .bind(worker)
    .bind(now)
    .fetch_all(c)
    .await?;
    Ok(fires
        .iter()
        .map(|r| Claim {
            name: format!(
                "fire:{}:{}:{}",
                r.get::<String, _>(0),
                r.get::<String, _>(1),
                r.get::<i64, _>(2)
            ),
            until: r.get(3),
        })
        .chain(steps.iter().map(|r| Claim {
            name: format!("rotation_step:{}", r.get::<String, _>(0)),
            until: r.get(1),
        }))
        .collect())
}
