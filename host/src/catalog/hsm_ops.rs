//! The journal of changes made in external key managers. Each change is written as `pending`
//! before the remote call and finished (`succeeded` or `failed`) after it; a daemon that
//! stops in between leaves it `pending`, marked `interrupted` at the next start, for the next
//! sync of the group to reconcile.

use crate::catalog::db::{self, Row};
use serde::{Deserialize, Serialize};

use super::{CatalogError, Conn, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpStatus {
    Pending,
    Succeeded,
    Failed,
    Interrupted,
    Reconciled,
}

impl OpStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OpStatus::Pending => "pending",
            OpStatus::Succeeded => "succeeded",
            OpStatus::Failed => "failed",
            OpStatus::Interrupted => "interrupted",
            OpStatus::Reconciled => "reconciled",
        }
    }

    fn parse(s: &str) -> Option<OpStatus> {
        [
            OpStatus::Pending,
            OpStatus::Succeeded,
            OpStatus::Failed,
            OpStatus::Interrupted,
            OpStatus::Reconciled,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// How a change ended, as far as the key manager said.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OpOutcome {
    /// The remote key (version) the change produced or touched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct HsmOp {
    pub id: String,
    pub account_id: String,
    pub group_id: Option<String>,
    pub run_id: Option<String>,
    pub actor_kind: String,
    pub actor_id: String,
    /// `create_key`, `create_kek`, `import_key`, `update_key`, `delete_key`, `recover_key`,
    /// `purge_key`, `restore_key`.
    pub operation: String,
    pub target: Option<String>,
    pub kid: Option<String>,
    pub status: OpStatus,
    pub started_at: i64,
    pub finished_at: Option<i64>,
    pub outcome: Option<OpOutcome>,
}

fn from_row(r: &Row) -> Result<HsmOp> {
    let outcome: Option<String> = r.get("outcome");
    Ok(HsmOp {
        id: r.get("id"),
        account_id: r.get("account_id"),
        group_id: r.get("group_id"),
        run_id: r.get("run_id"),
        actor_kind: r.get("actor_kind"),
        actor_id: r.get("actor_id"),
        operation: r.get("operation"),
        target: r.get("target"),
        kid: r.get("kid"),
        status: OpStatus::parse(r.get("status"))
            .ok_or_else(|| CatalogError::Corrupt("hsm_ops status".into()))?,
        started_at: r.get("started_at"),
        finished_at: r.get("finished_at"),
        outcome: outcome
            .map(|o| serde_json::from_str(&o))
            .transpose()
            .map_err(|_| CatalogError::Corrupt("hsm_ops outcome".into()))?,
    })
}

pub async fn insert(c: &mut Conn, op: &HsmOp) -> Result<()> {
    db::query(
        "INSERT INTO hsm_ops (id, account_id, group_id, run_id, actor_kind, actor_id, operation, target, kid, status,
            started_at, finished_at, outcome)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&op.id)
    .bind(&op.account_id)
    .bind(&op.group_id)
    .bind(&op.run_id)
    .bind(&op.actor_kind)
    .bind(&op.actor_id)
    .bind(&op.operation)
    .bind(&op.target)
    .bind(&op.kid)
    .bind(op.status.as_str())
    .bind(op.started_at)
    .bind(op.finished_at)
    .bind(
        op.outcome
            .as_ref()
            .map(|o| serde_json::to_string(o).expect("serialize")),
    )
    .execute(c)
    .await?;
    Ok(())
}

/// Ends a journal entry that is still `from` (pending, or interrupted for a reconciliation).
/// `false`: it was ended already.
pub async fn finish(
    c: &mut Conn,
    id: &str,
    from: OpStatus,
    to: OpStatus,
    outcome: &OpOutcome,
    at: i64,
) -> Result<bool> {
    Ok(db::query(
        "UPDATE hsm_ops SET status = ?, outcome = ?, finished_at = ? WHERE id = ? AND status = ?",
    )
    .bind(to.as_str())
    .bind(serde_json::to_string(outcome).expect("serialize"))
    .bind(at)
    .bind(id)
    .bind(from.as_str())
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Marks what a previous daemon left pending as interrupted.
pub async fn interrupt_pending(c: &mut Conn, at: i64) -> Result<u64> {
    Ok(db::query(
        "UPDATE hsm_ops SET status = 'interrupted', finished_at = ? WHERE status = 'pending'",
    )
    .bind(at)
    .execute(c)
    .await?
    .rows_affected())
}

/// The interrupted changes of a group, oldest first.
pub async fn interrupted_in_group(c: &mut Conn, group_id: &str) -> Result<Vec<HsmOp>> {
    db::query(
        "SELECT * FROM hsm_ops WHERE group_id = ? AND status = 'interrupted' ORDER BY started_at, id",
    )
    .bind(group_id)
    .fetch_all(c)
    .await?
    .iter()
    .map(from_row)
    .collect()
}

/// The changes a workflow run made, oldest first.
pub async fn of_run(c: &mut Conn, run_id: &str) -> Result<Vec<HsmOp>> {
    db::query("SELECT * FROM hsm_ops WHERE run_id = ? ORDER BY started_at, {seq}")
        .bind(run_id)
        .fetch_all(c)
        .await?
        .iter()
        .map(from_row)
        .collect()
}
