//! Cron jobs (a workflow on a schedule, acting as its owner) and fires: each time a rotation
//! policy or a job falls due.
//!
//! A fire is claimed by one conditional statement keyed by (what, when), which works
//! unchanged on SQLite and PostgreSQL: the first daemon to insert it runs it; a fire whose
//! retry is due, or whose worker's lease has expired, is taken over by whoever updates it
//! first, with the attempt number raised. Only the holder of the current attempt can record
//! the outcome, so a worker that stalled past its lease cannot overwrite its successor's.

use std::collections::HashMap;

use crate::catalog::db::{self, Row};
use serde_json::Value;

use crate::cadence::Cron;

use super::sobjects::Creator;
use super::{CatalogError, Conn, Result};

#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: String,
    pub account_id: String,
    pub name: String,
    pub workflow: String,
    /// The group the workflow runs for (and whose link it uses).
    pub group_id: Option<String>,
    pub cron: Cron,
    /// The workflow's `input`.
    pub input: Value,
    /// Runs act as who created the job.
    pub owner: Creator,
    pub paused: bool,
    pub next_due: Option<i64>,
    pub last_fire: Option<i64>,
    pub created_at: i64,
}

fn job_from_row(r: &Row) -> Result<Job> {
    let corrupt =
        |what: &str| CatalogError::Corrupt(format!("job {}: {what}", r.get::<String, _>("id")));
    let input: String = r.get("input");
    Ok(Job {
        id: r.get("id"),
        account_id: r.get("account_id"),
        name: r.get("name"),
        workflow: r.get("workflow"),
        group_id: r.get("group_id"),
        cron: Cron::parse(r.get("cron"), r.get("time_zone")).map_err(|_| corrupt("cron"))?,
        input: serde_json::from_str(&input).map_err(|_| corrupt("input"))?,
        owner: Creator::from_parts(r.get("owner_kind"), r.get("owner_id")),
        paused: r.get("paused"),
        next_due: r.get("next_due"),
        last_fire: r.get("last_fire"),
        created_at: r.get("created_at"),
    })
}

pub async fn insert_job(c: &mut Conn, j: &Job) -> Result<()> {
    db::query(
        "INSERT INTO jobs (id, account_id, name, workflow, group_id, cron, time_zone, input, owner_kind, owner_id, paused, next_due, last_fire, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&j.id)
    .bind(&j.account_id)
    .bind(&j.name)
    .bind(&j.workflow)
    .bind(&j.group_id)
    .bind(j.cron.expression())
    .bind(j.cron.time_zone())
    .bind(j.input.to_string())
    .bind(j.owner.kind())
    .bind(j.owner.id())
    .bind(j.paused)
    .bind(j.next_due)
    .bind(j.last_fire)
    .bind(j.created_at)
    .execute(c)
    .await?;
    Ok(())
}

pub async fn job(c: &mut Conn, account: &str, id: &str) -> Result<Option<Job>> {
    db::query("SELECT * FROM jobs WHERE id = ? AND account_id = ?")
        .bind(id)
        .bind(account)
        .fetch_optional(c)
        .await?
        .as_ref()
        .map(job_from_row)
        .transpose()
}

pub async fn jobs_of(c: &mut Conn, account: &str) -> Result<Vec<Job>> {
    db::query("SELECT * FROM jobs WHERE account_id = ? ORDER BY name")
        .bind(account)
        .fetch_all(c)
        .await?
        .iter()
        .map(job_from_row)
        .collect()
}

/// Pauses or resumes a job; a resumed job is next due at `next_due`.
pub async fn set_paused(
    c: &mut Conn,
    account: &str,
    id: &str,
    paused: bool,
    next_due: Option<i64>,
) -> Result<bool> {
    Ok(
        db::query("UPDATE jobs SET paused = ?, next_due = ? WHERE id = ? AND account_id = ?")
            .bind(paused)
            .bind(next_due)
            .bind(id)
            .bind(account)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

pub async fn delete_job(c: &mut Conn, account: &str, id: &str) -> Result<bool> {
    Ok(
        db::query("DELETE FROM jobs WHERE id = ? AND account_id = ?")
            .bind(id)
            .bind(account)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Jobs due at `now` (served by the partial index on `next_due`).
pub async fn due_jobs(c: &mut Conn, now: i64, limit: u32) -> Result<Vec<Job>> {
    let sql = format!(
        "SELECT * FROM jobs WHERE NOT paused AND next_due <= ?1 AND {} ORDER BY next_due LIMIT ?2",
        claimable(FireKind::Job, "jobs.id", "jobs.next_due")
    );
    db::Builder::new(sql)
        .build()
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(c)
        .await?
        .iter()
        .map(job_from_row)
        .collect()
}

/// Moves a job past the fire at `due_at`; `false` when another daemon already did.
pub async fn advance_job(
    c: &mut Conn,
    id: &str,
    due_at: i64,
    next_due: Option<i64>,
) -> Result<bool> {
    Ok(
        db::query("UPDATE jobs SET next_due = ?, last_fire = ? WHERE id = ? AND next_due = ?")
            .bind(next_due)
            .bind(due_at)
            .bind(id)
            .bind(due_at)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FireKind {
    Rotation,
    Job,
}

impl FireKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FireKind::Rotation => "rotation",
            FireKind::Job => "job",
        }
    }
}

/// Which fire: a policy's key or a job, and the due time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FireKey {
    pub kind: FireKind,
    pub target: String,
    pub due_at: i64,
}

/// The claim of a fire by one worker, for one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub key: FireKey,
    pub worker: String,
    pub attempt: i64,
}

/// SQL that is true when the fire of `kind` for the row's `target` and `due` columns could be
/// claimed at `?1`: it has no row yet, its retry is due, or its lease expired (the test
/// `claim` makes in its conflict clause). The due queries filter on it, so fires held
/// elsewhere or waiting for a retry neither fill a round's limit nor cost a claim attempt.
pub(super) fn claimable(kind: FireKind, target: &str, due: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM fires f WHERE f.kind = '{}' AND f.target = {target} AND f.due_at = {due}
           AND NOT ((f.status = 'retry' AND f.next_attempt_at <= ?1) OR (f.status = 'running' AND f.lease_until < ?1)))",
        kind.as_str()
    )
}

/// Fires per claiming statement (seven values each, far below either database's limit).
const CLAIM_BATCH: usize = 500;

/// Claims fires, each with its account: inserts each, or takes it over when its retry is
/// due or its lease expired. One statement per 500 fires, so a round that claims a thousand
/// costs two round trips to the database, not a thousand. Returns the fires claimed; the
/// others are held by another worker or finished.
pub async fn claim_all(
    c: &mut Conn,
    fires: &[(FireKey, &str)],
    worker: &str,
    lease_until: i64,
    now: i64,
) -> Result<Vec<Claim>> {
    let mut claims = Vec::new();
    for chunk in fires.chunks(CLAIM_BATCH) {
        let mut q = db::Builder::new(
            "INSERT INTO fires (kind, target, due_at, account_id, worker, attempt, lease_until, status, claimed_at) VALUES ",
        );
        for (i, (key, account)) in chunk.iter().enumerate() {
            q.push(if i == 0 { "(" } else { ", (" })
                .push_bind(key.kind.as_str())
                .push(", ")
                .push_bind(key.target.clone())
                .push(", ")
                .push_bind(key.due_at)
                .push(", ")
                .push_bind(account.to_string())
                .push(", ")
                .push_bind(worker.to_string())
                .push(", 1, ")
                .push_bind(lease_until)
                .push(", 'running', ")
                .push_bind(now)
                .push(")");
        }
        q.push(
            " ON CONFLICT (kind, target, due_at) DO UPDATE SET
               worker = excluded.worker, attempt = fires.attempt + 1, lease_until = excluded.lease_until,
               status = 'running', claimed_at = excluded.claimed_at, next_attempt_at = NULL
             WHERE (fires.status = 'retry' AND fires.next_attempt_at <= excluded.claimed_at)
                OR (fires.status = 'running' AND fires.lease_until < excluded.claimed_at)
             RETURNING kind, target, due_at, attempt",
        );
        let claimed: HashMap<(String, String, i64), i64> = q
            .build()
            .fetch_all(c)
            .await?
            .iter()
            .map(|r| ((r.get(0), r.get(1), r.get(2)), r.get(3)))
            .collect();
        // In the order asked for (RETURNING promises none).
        for (key, _) in chunk {
            let id = (
                key.kind.as_str().to_string(),
                key.target.clone(),
                key.due_at,
            );
            if let Some(&attempt) = claimed.get(&id) {
                claims.push(Claim {
                    key: key.clone(),
                    worker: worker.to_string(),
                    attempt,
                });
            }
        }
    }
    Ok(claims)
}

/// How a fire's attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum FireOutcome {
    Succeeded {
        run_id: Option<String>,
    },
    Retry {
        at: i64,
        run_id: Option<String>,
        error: String,
    },
    Failed {
        run_id: Option<String>,
        error: String,
    },
}

/// Records the outcome of the claim's attempt; `false` when the claim is stale (another
/// worker took the fire over), and nothing was written.
pub async fn finish(c: &mut Conn, claim: &Claim, outcome: &FireOutcome, now: i64) -> Result<bool> {
    let (status, next, run_id, error) = match outcome {
        FireOutcome::Succeeded { run_id } => ("succeeded", None, run_id, None),
        FireOutcome::Retry { at, run_id, error } => ("retry", Some(*at), run_id, Some(error)),
        FireOutcome::Failed { run_id, error } => ("failed", None, run_id, Some(error)),
    };
    Ok(db::query(
        "UPDATE fires SET status = ?, next_attempt_at = ?, run_id = COALESCE(?, run_id), error = ?, finished_at = ?
         WHERE kind = ? AND target = ? AND due_at = ? AND worker = ? AND attempt = ? AND status = 'running'",
    )
    .bind(status)
    .bind(next)
    .bind(run_id)
    .bind(error)
    .bind(now)
    .bind(claim.key.kind.as_str())
    .bind(&claim.key.target)
    .bind(claim.key.due_at)
    .bind(&claim.worker)
    .bind(claim.attempt)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Extends the lease of a claim while its attempt runs; `false` when the claim is stale.
pub async fn renew(c: &mut Conn, claim: &Claim, lease_until: i64) -> Result<bool> {
    Ok(db::query(
        "UPDATE fires SET lease_until = ? WHERE kind = ? AND target = ? AND due_at = ? AND worker = ? AND attempt = ? AND status = 'running'",
    )
    .bind(lease_until)
    .bind(claim.key.kind.as_str())
    .bind(&claim.key.target)
    .bind(claim.key.due_at)
    .bind(&claim.worker)
    .bind(claim.attempt)
    .execute(c)
    .await?
    .rows_affected()
        == 1)
}

/// Marks the running fire of a key's rotation succeeded: called in the transaction of the
/// rotation itself, so a crash after it commits leaves nothing to redo.
pub async fn rotation_done(c: &mut Conn, kid: &str, run_id: Option<&str>, now: i64) -> Result<()> {
    db::query(
        "UPDATE fires SET status = 'succeeded', finished_at = ?, run_id = COALESCE(?, run_id)
         WHERE kind = 'rotation' AND target = ? AND status IN ('running', 'retry')",
    )
    .bind(now)
    .bind(run_id)
    .bind(kid)
    .execute(c)
    .await?;
    Ok(())
}

/// One fire as the history shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    pub key: FireKey,
    pub worker: String,
    pub attempt: i64,
    pub status: String,
    pub next_attempt_at: Option<i64>,
    pub claimed_at: i64,
    pub finished_at: Option<i64>,
    pub run_id: Option<String>,
    pub error: Option<String>,
}

/// The latest fires of a key's rotations or a job, newest first.
pub async fn history(
    c: &mut Conn,
    account: &str,
    kind: FireKind,
    targets: &[String],
    limit: u32,
) -> Result<Vec<Fire>> {
    if targets.is_empty() {
        return Ok(vec![]);
    }
    let mut q: db::Builder = db::Builder::new("SELECT * FROM fires WHERE account_id = ");
    q.push_bind(account.to_string())
        .push(" AND kind = ")
        .push_bind(kind.as_str())
        .push(" AND target IN (");
    let mut sep = q.separated(", ");
    for t in targets {
        sep.push_bind(t.clone());
    }
    q.push(") ORDER BY due_at DESC LIMIT ")
        .push_bind(i64::from(limit));
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .map(|r| Fire {
            key: FireKey {
                kind,
                target: r.get("target"),
                due_at: r.get("due_at"),
            },
            worker: r.get("worker"),
            attempt: r.get("attempt"),
            status: r.get("status"),
            next_attempt_at: r.get("next_attempt_at"),
            claimed_at: r.get("claimed_at"),
            finished_at: r.get("finished_at"),
            run_id: r.get("run_id"),
            error: r.get("error"),
        })
        .collect())
}
