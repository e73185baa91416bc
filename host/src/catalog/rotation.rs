//! Rotation in the catalog: each key's rotation policy (DSM `rotation_policy`, or a cron
//! expression) with its stored next due time, and the HSM-side steps of rotations.
//!
//! A step is a virtual key getting a new version in its HSM: a linked copy taking its
//! source's new material (`copy`), an HSM-generated new version (`native`), or material from
//! a catalog key (`keyward`). Steps are written before any HSM call, with a lease: a daemon
//! that stops mid-rotation leaves them pending, and once the lease has expired another run
//! (of this daemon or another one sharing the catalog) adopts the version the HSM made or
//! retries. At most one step per key is pending (a unique index), so a key never rotates
//! twice at once.

use crate::catalog::db::{self, Row};
use serde::{Deserialize, Serialize};

use crate::cadence::{Cadence, Cron};

use super::sobjects::Creator;
use super::{CatalogError, Conn, Result};

/// Which linked copies rotate with their source (DSM `rotate_copied_keys`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CopySelection {
    /// Every copy in a group linked to an external key manager.
    AllExternal,
    /// These copies (key ids).
    Select(Vec<String>),
}

/// A key's rotation policy, as DSM has it (`interval_days` or `interval_months`,
/// `effective_at`, `deactivate_rotated_key`, `rotate_copied_keys`) plus Keyward's `cron` and
/// `time_zone`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "RawPolicy", into = "RawPolicy")]
pub struct RotationPolicy {
    pub cadence: Cadence,
    /// When the schedule starts: the first rotation is due then (intervals) or at the first
    /// cron time from then on.
    pub effective_at: Option<i64>,
    pub deactivate_rotated_key: bool,
    pub rotate_copied_keys: Option<CopySelection>,
}

/// The wire and storage form of a policy, checked into a [`RotationPolicy`].
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_months: Option<u32>,
    /// Keyward: a cron expression instead of an interval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// Keyward: the IANA time zone of `cron` (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    #[serde(
        default,
        with = "crate::time::dsm_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub effective_at: Option<i64>,
    #[serde(default)]
    pub deactivate_rotated_key: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_copied_keys: Option<CopySelection>,
}

impl TryFrom<RawPolicy> for RotationPolicy {
    type Error = String;

    fn try_from(r: RawPolicy) -> std::result::Result<Self, String> {
        let cadence = match (r.interval_days, r.interval_months, &r.cron) {
            (Some(d), None, None) => Cadence::days(d),
            (None, Some(m), None) => Cadence::months(m),
            (None, None, Some(c)) => Cron::parse(c, r.time_zone.as_deref().unwrap_or("UTC"))
                .map(|c| Cadence::Cron(Box::new(c))),
            (None, None, None) => {
                return Err("give one of interval_days, interval_months or cron".to_string());
            }
            _ => {
                return Err("give only one of interval_days, interval_months and cron".to_string());
            }
        }
        .map_err(|e| e.0)?;
        if r.time_zone.is_some() && !matches!(cadence, Cadence::Cron(_)) {
            return Err("time_zone applies to cron schedules only".into());
        }
        if let Some(CopySelection::Select(kids)) = &r.rotate_copied_keys
            && let Some(bad) = kids.iter().find(|k| !super::is_id(k))
        {
            return Err(format!("rotate_copied_keys: '{bad}' is not a key id"));
        }
        Ok(RotationPolicy {
            cadence,
            effective_at: r.effective_at,
            deactivate_rotated_key: r.deactivate_rotated_key,
            rotate_copied_keys: r.rotate_copied_keys,
        })
    }
}

impl From<RotationPolicy> for RawPolicy {
    fn from(p: RotationPolicy) -> RawPolicy {
        let mut r = RawPolicy {
            effective_at: p.effective_at,
            deactivate_rotated_key: p.deactivate_rotated_key,
            rotate_copied_keys: p.rotate_copied_keys,
            ..RawPolicy::default()
        };
        match p.cadence {
            Cadence::Days(d) => r.interval_days = Some(d),
            Cadence::Months(m) => r.interval_months = Some(m),
            Cadence::Cron(c) => {
                r.cron = Some(c.expression().to_string());
                r.time_zone = Some(c.time_zone().to_string());
            }
        }
        r
    }
}

impl RotationPolicy {
    /// When the next rotation is due: the interval after the last rotation; before the first
    /// one, `effective_at` if it is still ahead, else the interval after the policy was set.
    pub fn next_due(&self, set_at: i64, last_rotated_at: Option<i64>) -> Option<i64> {
        if let Some(t) = last_rotated_at {
            return self.cadence.next_after(t);
        }
        match (self.effective_at, &self.cadence) {
            (Some(e), Cadence::Cron(c)) if e > set_at => c.next_after(e - 1),
            (Some(e), _) if e > set_at => Some(e),
            _ => self.cadence.next_after(set_at),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyStatus {
    Active,
    /// Stopped after repeated failures; setting the policy again restarts it.
    Failed,
}

/// A key's policy with its schedule state.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRow {
    pub kid: String,
    pub account_id: String,
    pub policy: RotationPolicy,
    /// Scheduled rotations act as who set the policy.
    pub owner: Creator,
    pub set_at: i64,
    pub next_due: Option<i64>,
    pub last_rotated_at: Option<i64>,
    pub status: PolicyStatus,
    pub failures: i64,
    pub last_error: Option<String>,
}

fn policy_from_row(r: &Row) -> Result<PolicyRow> {
    let text: String = r.get("policy");
    let policy = serde_json::from_str(&text)
        .map_err(|e| CatalogError::Corrupt(format!("rotation policy: {e}")))?;
    Ok(PolicyRow {
        kid: r.get("kid"),
        account_id: r.get("account_id"),
        policy,
        owner: Creator::from_parts(r.get("owner_kind"), r.get("owner_id")),
        set_at: r.get("set_at"),
        next_due: r.get("next_due"),
        last_rotated_at: r.get("last_rotated_at"),
        status: if r.get::<&str, _>("status") == "failed" {
            PolicyStatus::Failed
        } else {
            PolicyStatus::Active
        },
        failures: r.get("failures"),
        last_error: r.get("last_error"),
    })
}

/// Sets (or replaces) a key's policy; the schedule starts afresh.
pub async fn set_policy(c: &mut Conn, row: &PolicyRow) -> Result<()> {
    db::query(
        "INSERT INTO rotation_policies (kid, account_id, policy, owner_kind, owner_id, set_at, next_due, last_rotated_at, status, failures, last_error)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'active', 0, NULL)
         ON CONFLICT (kid) DO UPDATE SET policy = excluded.policy, owner_kind = excluded.owner_kind,
           owner_id = excluded.owner_id, set_at = excluded.set_at, next_due = excluded.next_due,
           status = 'active', failures = 0, last_error = NULL",
    )
    .bind(&row.kid)
    .bind(&row.account_id)
    .bind(serde_json::to_string(&row.policy).expect("policies serialize"))
    .bind(row.owner.kind())
    .bind(row.owner.id())
    .bind(row.set_at)
    .bind(row.next_due)
    .bind(row.last_rotated_at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn remove_policy(c: &mut Conn, kid: &str) -> Result<bool> {
    Ok(db::query("DELETE FROM rotation_policies WHERE kid = ?")
        .bind(kid)
        .execute(c)
        .await?
        .rows_affected()
        == 1)
}

pub async fn policy_of(c: &mut Conn, kid: &str) -> Result<Option<PolicyRow>> {
    db::query("SELECT * FROM rotation_policies WHERE kid = ?")
        .bind(kid)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(policy_from_row)
        .transpose()
}

/// The policies of some keys (for lists).
pub async fn policies_of(c: &mut Conn, kids: &[String]) -> Result<Vec<PolicyRow>> {
    if kids.is_empty() {
        return Ok(vec![]);
    }
    let mut q: db::Builder = db::Builder::new("SELECT * FROM rotation_policies WHERE kid IN (");
    let mut sep = q.separated(", ");
    for k in kids {
        sep.push_bind(k.clone());
    }
    q.push(")");
    q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(policy_from_row)
        .collect()
}

/// Moves a policy to the key that replaced its key, with the rotation time and the next due
/// time (in the transaction of the rotation, so rotation and re-arming are one change).
pub async fn move_policy(
    c: &mut Conn,
    from: &str,
    to: &str,
    rotated_at: i64,
    next_due: Option<i64>,
) -> Result<()> {
    db::query(
        "UPDATE rotation_policies SET kid = ?, last_rotated_at = ?, next_due = ?, status = 'active', failures = 0, last_error = NULL WHERE kid = ?",
    )
    .bind(to)
    .bind(rotated_at)
    .bind(next_due)
    .bind(from)
    .execute(c)
    .await?;
    Ok(())
}

/// Records a failed scheduled rotation; `stop` marks the policy failed.
pub async fn policy_failed(c: &mut Conn, kid: &str, error: &str, stop: bool) -> Result<()> {
    db::query(
        "UPDATE rotation_policies SET failures = failures + 1, last_error = ?,
           status = CASE WHEN ? THEN 'failed' ELSE status END WHERE kid = ?",
    )
    .bind(error)
    .bind(stop)
    .bind(kid)
    .execute(c)
    .await?;
    Ok(())
}

/// The query of `due_policies` (`?1` now, `?2` the limit); public so that the scheduler
/// benchmark can show its plan.
pub fn due_policies_sql() -> String {
    format!(
        "SELECT p.kid, p.account_id, p.next_due FROM rotation_policies p
         WHERE p.status = 'active' AND p.next_due <= ?1 AND {} ORDER BY p.next_due LIMIT ?2",
        super::schedule::claimable(super::schedule::FireKind::Rotation, "p.kid", "p.next_due")
    )
}

/// Policies due at `now` whose fire can be claimed, oldest first (served by the partial
/// index on `next_due`).
pub async fn due_policies(
    c: &mut Conn,
    now: i64,
    limit: u32,
) -> Result<Vec<(String, String, i64)>> {
    Ok(db::Builder::new(due_policies_sql())
        .build()
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Copy,
    Native,
    Keyward,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Copy => "copy",
            StepKind::Native => "native",
            StepKind::Keyward => "keyward",
        }
    }

    fn parse(s: &str) -> StepKind {
        match s {
            "copy" => StepKind::Copy,
            "native" => StepKind::Native,
            _ => StepKind::Keyward,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Done,
    Failed,
}

impl StepStatus {
    fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Done => "done",
            StepStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> StepStatus {
        match s {
            "pending" => StepStatus::Pending,
            "done" => StepStatus::Done,
            _ => StepStatus::Failed,
        }
    }
}

/// One virtual key getting a new version in its HSM.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub id: String,
    pub account_id: String,
    pub kind: StepKind,
    /// The virtual key that gets a new version.
    pub target_kid: String,
    pub group_id: String,
    /// The catalog key whose material it takes (copy, keyward).
    pub source_kid: Option<String>,
    /// Its HSM version before: a different latest version means the HSM made the new one.
    pub prior_version: Option<String>,
    pub deactivate_old: bool,
    /// The rotation acts as this principal.
    pub owner: Creator,
    pub worker: String,
    pub lease_until: i64,
    pub status: StepStatus,
    pub new_kid: Option<String>,
    pub error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

fn step_from_row(r: &Row) -> Step {
    Step {
        id: r.get("id"),
        account_id: r.get("account_id"),
        kind: StepKind::parse(r.get("kind")),
        target_kid: r.get("target_kid"),
        group_id: r.get("group_id"),
        source_kid: r.get("source_kid"),
        prior_version: r.get("prior_version"),
        deactivate_old: r.get("deactivate_old"),
        owner: Creator::from_parts(r.get("owner_kind"), r.get("owner_id")),
        worker: r.get("worker"),
        lease_until: r.get("lease_until"),
        status: StepStatus::parse(r.get("status")),
        new_kid: r.get("new_kid"),
        error: r.get("error"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

/// Writes a pending step. A key with a pending step already is refused (unique index).
pub async fn insert_step(c: &mut Conn, s: &Step) -> Result<()> {
    db::query(
        "INSERT INTO rotation_steps (id, account_id, kind, target_kid, group_id, source_kid, prior_version, deactivate_old,
            owner_kind, owner_id, worker, lease_until, status, new_kid, error, created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, ?)",
    )
    .bind(&s.id)
    .bind(&s.account_id)
    .bind(s.kind.as_str())
    .bind(&s.target_kid)
    .bind(&s.group_id)
    .bind(&s.source_kid)
    .bind(&s.prior_version)
    .bind(s.deactivate_old)
    .bind(s.owner.kind())
    .bind(s.owner.id())
    .bind(&s.worker)
    .bind(s.lease_until)
    .bind(s.status.as_str())
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn step(c: &mut Conn, id: &str) -> Result<Option<Step>> {
    Ok(db::query("SELECT * FROM rotation_steps WHERE id = ?")
        .bind(id)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(step_from_row))
}

/// The pending step of a key, if it has one.
pub async fn pending_step_of(c: &mut Conn, target_kid: &str) -> Result<Option<Step>> {
    Ok(
        db::query("SELECT * FROM rotation_steps WHERE target_kid = ? AND status = 'pending'")
            .bind(target_kid)
            .fetch_optional(c)
            .await?
            .as_ref()
            .map(step_from_row),
    )
}

/// Pending steps whose lease has expired: their worker stopped.
pub async fn abandoned_steps(c: &mut Conn, now: i64, limit: u32) -> Result<Vec<Step>> {
    Ok(db::query(
        "SELECT * FROM rotation_steps WHERE status = 'pending' AND lease_until < ? ORDER BY lease_until LIMIT ?",
    )
    .bind(now)
    .bind(i64::from(limit))
    .fetch_all(c)
    .await?
    .iter()
    .map(step_from_row)
    .collect())
}

/// Takes over an abandoned step; `false` when another worker was first.
pub async fn claim_step(
    c: &mut Conn,
    id: &str,
    worker: &str,
    lease_until: i64,
    now: i64,
) -> Result<bool> {
    Ok(db::query(
        "UPDATE rotation_steps SET worker = ?, lease_until = ?, updated_at = ?
         WHERE id = ? AND status = 'pending' AND lease_until < ?",
    )
    .bind(worker)
    .bind(lease_until)
    .bind(now)
    .bind(id)
    .bind(now)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Extends the lease of a worker's pending steps while it works on them.
pub async fn renew_steps(
    c: &mut Conn,
    worker: &str,
    ids: &[String],
    lease_until: i64,
) -> Result<()> {
    for chunk in ids.chunks(500) {
        let mut q: db::Builder = db::Builder::new("UPDATE rotation_steps SET lease_until = ");
        q.push_bind(lease_until)
            .push(" WHERE status = 'pending' AND worker = ")
            .push_bind(worker.to_string())
            .push(" AND id IN (");
        let mut sep = q.separated(", ");
        for id in chunk {
            sep.push_bind(id.clone());
        }
        q.push(")");
        q.build().execute(&mut *c).await?;
    }
    Ok(())
}

/// Finishes a pending step held by `worker`; `false` when it is no longer that worker's (its
/// lease expired and another took it over) or no longer pending.
pub async fn finish_step(
    c: &mut Conn,
    id: &str,
    worker: &str,
    status: StepStatus,
    new_kid: Option<&str>,
    error: Option<&str>,
    now: i64,
) -> Result<bool> {
    Ok(db::query(
        "UPDATE rotation_steps SET status = ?, new_kid = ?, error = ?, updated_at = ?
         WHERE id = ? AND worker = ? AND status = 'pending'",
    )
    .bind(status.as_str())
    .bind(new_kid)
    .bind(error)
    .bind(now)
    .bind(id)
    .bind(worker)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Lets a pending step be taken over at once (its run ended without settling it).
pub async fn release_step(c: &mut Conn, id: &str, worker: &str, now: i64) -> Result<()> {
    db::query(
        "UPDATE rotation_steps SET lease_until = ?, updated_at = ? WHERE id = ? AND worker = ? AND status = 'pending'",
    )
    .bind(now - 1)
    .bind(now)
    .bind(id)
    .bind(worker)
    .execute(c)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: serde_json::Value) -> std::result::Result<RotationPolicy, String> {
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    #[test]
    fn policies_keep_dsm_wire_shape() {
        let v = serde_json::json!({"interval_days": 30, "effective_at": "20270101T000000Z",
            "deactivate_rotated_key": true, "rotate_copied_keys": "all_external"});
        let p = parse(v.clone()).unwrap();
        assert_eq!(p.cadence, Cadence::Days(30));
        assert_eq!(p.rotate_copied_keys, Some(CopySelection::AllExternal));
        assert_eq!(serde_json::to_value(&p).unwrap(), v);
        let sel = parse(serde_json::json!({"interval_months": 3,
            "rotate_copied_keys": {"select": ["0b1c2d3e-0000-4000-8000-000000000001"]}}))
        .unwrap();
        assert!(
            matches!(sel.rotate_copied_keys, Some(CopySelection::Select(ref k)) if k.len() == 1)
        );
    }

    #[test]
    fn bad_policies_say_what_is_wrong() {
        for (v, want) in [
            (serde_json::json!({}), "give one of"),
            (
                serde_json::json!({"interval_days": 1, "interval_months": 1}),
                "only one",
            ),
            (serde_json::json!({"interval_days": 0}), "interval_days"),
            (
                serde_json::json!({"cron": "0 3 * * *", "time_zone": "Nowhere"}),
                "IANA",
            ),
            (
                serde_json::json!({"interval_days": 1, "time_zone": "UTC"}),
                "cron schedules only",
            ),
            (
                serde_json::json!({"interval_days": 1, "every": 2}),
                "unknown field",
            ),
            (
                serde_json::json!({"interval_days": 1, "rotate_copied_keys": {"select": ["x"]}}),
                "not a key id",
            ),
        ] {
            let e = parse(v).unwrap_err();
            assert!(e.contains(want), "{e} should say {want}");
        }
    }

    #[test]
    fn the_next_rotation_follows_the_last_one() {
        let p = parse(serde_json::json!({"interval_days": 1})).unwrap();
        assert_eq!(p.next_due(1000, None), Some(1000 + 86_400));
        assert_eq!(p.next_due(1000, Some(5000)), Some(5000 + 86_400));
        let later =
            parse(serde_json::json!({"interval_days": 1, "effective_at": "20300101T000000Z"}))
                .unwrap();
        let e = crate::time::parse_dsm("20300101T000000Z").unwrap();
        assert_eq!(later.next_due(1000, None), Some(e));
    }
}
