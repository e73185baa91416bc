//! The figures behind the dashboard and `GET /sys/v1/reports/...`: aggregates over keys,
//! rotation policies, scheduled fires, the audit log and sync runs of one account, limited
//! to the groups the caller may read. Read-only; each query is one statement, so a report
//! is cheap on a catalog of many thousand keys.

use crate::catalog::db::{Builder, Row};
use crate::catalog::sobjects::KeyState;
use crate::catalog::workflow_runs::{self, WorkflowRun};

use super::{CatalogError, Conn, Result};

/// The key state of `s` as SQL, the same rule as `SObject::state`.
fn push_state(q: &mut Builder, now: i64) {
    q.push(
        "CASE WHEN s.destruction_date IS NOT NULL THEN 'Destroyed' \
         WHEN s.compromise_date IS NOT NULL THEN 'Compromised' \
         WHEN s.deactivation_date IS NOT NULL AND s.deactivation_date <= ",
    )
    .push_bind(now)
    .push(" THEN 'Deactivated' WHEN s.activation_date IS NOT NULL AND s.activation_date > ")
    .push_bind(now)
    .push(" THEN 'PreActive' ELSE 'Active' END");
}

/// Only keys `s` that are neither destroyed, compromised nor deactivated.
fn push_live(q: &mut Builder, now: i64) {
    q.push(
        " AND s.destruction_date IS NULL AND s.compromise_date IS NULL \
         AND (s.deactivation_date IS NULL OR s.deactivation_date > ",
    )
    .push_bind(now)
    .push(")");
}

/// Limits a query to `column` in the caller's readable groups (`None`: every group).
fn push_visible(q: &mut Builder, column: &str, visible: Option<&[String]>) {
    let Some(groups) = visible else { return };
    if groups.is_empty() {
        q.push(" AND FALSE");
        return;
    }
    q.push(format!(" AND {column} IN ("));
    let mut sep = q.separated(", ");
    for g in groups {
        sep.push_bind(g.clone());
    }
    q.push(")");
}

/// Who may see what a report covers.
#[derive(Debug, Clone, Copy)]
pub struct Scope<'a> {
    pub account_id: &'a str,
    /// The caller's readable groups; `None`: every group of the account.
    pub visible: Option<&'a [String]>,
    pub now: i64,
}

/// How many keys of a group are in a state, held by an HSM (virtual) or by Keyward.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyCount {
    pub group_id: String,
    pub state: KeyState,
    pub external: bool,
    pub count: i64,
}

pub async fn key_counts(c: &mut Conn, s: Scope<'_>) -> Result<Vec<KeyCount>> {
    let mut q = Builder::new("SELECT s.group_id, ");
    push_state(&mut q, s.now);
    q.push(
        " AS state, CAST(CASE WHEN s.external IS NULL THEN 0 ELSE 1 END AS BIGINT) AS external, \
         COUNT(*) AS n FROM sobjects s WHERE s.account_id = ",
    );
    q.push_bind(s.account_id.to_string());
    push_visible(&mut q, "s.group_id", s.visible);
    q.push(" GROUP BY 1, 2, 3 ORDER BY 1, 2, 3");
    q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| {
            let state: String = r.get("state");
            Ok(KeyCount {
                group_id: r.get("group_id"),
                state: KeyState::parse(&state)
                    .ok_or_else(|| CatalogError::Corrupt(format!("key state {state}")))?,
                external: r.get::<i64, _>("external") == 1,
                count: r.get("n"),
            })
        })
        .collect()
}

/// A live key's rotation policy and where its schedule stands.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyStanding {
    pub kid: String,
    pub name: String,
    pub group_id: String,
    pub next_due: Option<i64>,
    pub last_rotated_at: Option<i64>,
    /// Stopped after repeated failures.
    pub failed: bool,
    pub last_error: Option<String>,
}

pub async fn policies(c: &mut Conn, s: Scope<'_>) -> Result<Vec<PolicyStanding>> {
    let mut q = Builder::new(
        "SELECT s.kid, s.name, s.group_id, p.next_due, p.last_rotated_at, p.status, p.last_error \
         FROM rotation_policies p JOIN sobjects s ON s.kid = p.kid WHERE p.account_id = ",
    );
    q.push_bind(s.account_id.to_string());
    push_live(&mut q, s.now);
    push_visible(&mut q, "s.group_id", s.visible);
    q.push(" ORDER BY p.next_due, s.name");
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| PolicyStanding {
            kid: r.get("kid"),
            name: r.get("name"),
            group_id: r.get("group_id"),
            next_due: r.get("next_due"),
            last_rotated_at: r.get("last_rotated_at"),
            failed: r.get::<String, _>("status") == "failed",
            last_error: r.get("last_error"),
        })
        .collect())
}

/// A key named in a report, with the date that puts it there.
#[derive(Debug, Clone, PartialEq)]
pub struct DatedKey {
    pub kid: String,
    pub name: String,
    pub group_id: String,
    pub at: Option<i64>,
}

fn dated(r: &Row, at: &str) -> DatedKey {
    DatedKey {
        kid: r.get("kid"),
        name: r.get("name"),
        group_id: r.get("group_id"),
        at: r.get(at),
    }
}

/// Active keys without a rotation policy (the date: when they were created).
pub async fn without_policy(c: &mut Conn, s: Scope<'_>) -> Result<Vec<DatedKey>> {
    let mut q = Builder::new(
        "SELECT s.kid, s.name, s.group_id, s.created_at FROM sobjects s WHERE s.account_id = ",
    );
    q.push_bind(s.account_id.to_string());
    push_live(&mut q, s.now);
    q.push(" AND (s.activation_date IS NULL OR s.activation_date <= ")
        .push_bind(s.now)
        .push(")");
    push_visible(&mut q, "s.group_id", s.visible);
    q.push(
        " AND NOT EXISTS (SELECT 1 FROM rotation_policies p WHERE p.kid = s.kid) ORDER BY s.name",
    );
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| dated(r, "created_at"))
        .collect())
}

/// Live keys whose deactivation date falls in `(now, until]`.
pub async fn deactivations_due(c: &mut Conn, s: Scope<'_>, until: i64) -> Result<Vec<DatedKey>> {
    let mut q = Builder::new(
        "SELECT s.kid, s.name, s.group_id, s.deactivation_date FROM sobjects s \
         WHERE s.destruction_date IS NULL AND s.compromise_date IS NULL AND s.account_id = ",
    );
    q.push_bind(s.account_id.to_string());
    q.push(" AND s.deactivation_date > ")
        .push_bind(s.now)
        .push(" AND s.deactivation_date <= ")
        .push_bind(until);
    push_visible(&mut q, "s.group_id", s.visible);
    q.push(" ORDER BY s.deactivation_date, s.name");
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| dated(r, "deactivation_date"))
        .collect())
}

/// A scheduled fire (rotation or job) that failed for good.
#[derive(Debug, Clone, PartialEq)]
pub struct FailedFire {
    /// `rotation` or `job`.
    pub kind: String,
    /// The key's or the job's id.
    pub target: String,
    /// The key's or the job's name (none once it is gone).
    pub name: Option<String>,
    pub group_id: Option<String>,
    pub due_at: i64,
    pub finished_at: Option<i64>,
    pub error: Option<String>,
}

pub async fn failed_fires(c: &mut Conn, s: Scope<'_>, since: i64) -> Result<Vec<FailedFire>> {
    let mut q = Builder::new(
        "SELECT f.kind, f.target, f.due_at, f.finished_at, f.error, \
         COALESCE(s.name, j.name) AS name, COALESCE(s.group_id, j.group_id) AS group_id \
         FROM fires f LEFT JOIN sobjects s ON f.kind = 'rotation' AND s.kid = f.target \
         LEFT JOIN jobs j ON f.kind = 'job' AND j.id = f.target \
         WHERE f.status = 'failed' AND f.account_id = ",
    );
    q.push_bind(s.account_id.to_string());
    q.push(" AND f.due_at >= ").push_bind(since);
    push_visible(&mut q, "COALESCE(s.group_id, j.group_id)", s.visible);
    q.push(" ORDER BY f.due_at DESC");
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| FailedFire {
            kind: r.get("kind"),
            target: r.get("target"),
            name: r.get("name"),
            group_id: r.get("group_id"),
            due_at: r.get("due_at"),
            finished_at: r.get("finished_at"),
            error: r.get("error"),
        })
        .collect())
}

/// Audit events of one action class per UTC day (Unix day number → count) since `since`.
pub async fn crypto_ops_per_day(c: &mut Conn, s: Scope<'_>, since: i64) -> Result<Vec<(i64, i64)>> {
    let mut q = Builder::new(
        "SELECT a.at / 86400 AS day, COUNT(*) AS n FROM audit_events a \
         LEFT JOIN sobjects s ON s.kid = a.object_id \
         WHERE a.action_type = 'CRYPTOOPERATION' AND a.account_id = ",
    );
    q.push_bind(s.account_id.to_string());
    q.push(" AND a.at >= ").push_bind(since);
    push_visible(&mut q, "s.group_id", s.visible);
    q.push(" GROUP BY a.at / 86400 ORDER BY 1");
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| (r.get("day"), r.get("n")))
        .collect())
}

/// `key.drift` audit events (a key put back in its HSM) per group since `since`.
pub async fn drift_per_group(c: &mut Conn, s: Scope<'_>, since: i64) -> Result<Vec<(String, i64)>> {
    let mut q = Builder::new(
        "SELECT s.group_id, COUNT(*) AS n FROM audit_events a \
         JOIN sobjects s ON s.kid = a.object_id \
         WHERE a.action = 'key.drift' AND a.account_id = ",
    );
    q.push_bind(s.account_id.to_string());
    q.push(" AND a.at >= ").push_bind(since);
    push_visible(&mut q, "s.group_id", s.visible);
    q.push(" GROUP BY s.group_id");
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| (r.get("group_id"), r.get("n")))
        .collect())
}

/// The latest run of `workflow` in each group of the account.
pub async fn last_runs(c: &mut Conn, s: Scope<'_>, workflow: &str) -> Result<Vec<WorkflowRun>> {
    let mut q = Builder::new(
        "SELECT * FROM workflow_runs w WHERE w.group_id IS NOT NULL AND w.workflow = ",
    );
    q.push_bind(workflow.to_string());
    q.push(" AND w.account_id = ")
        .push_bind(s.account_id.to_string());
    push_visible(&mut q, "w.group_id", s.visible);
    q.push(
        " AND w.started_at = (SELECT MAX(x.started_at) FROM workflow_runs x \
         WHERE x.group_id = w.group_id AND x.workflow = w.workflow) ORDER BY w.group_id",
    );
    q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(workflow_runs::from_row)
        .collect()
}
