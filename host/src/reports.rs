//! Key health reports: the figures of the console's dashboard and of
//! `GET /sys/v1/reports/{keys,rotation,failures,usage,drift}` (JSON or CSV). Each report is
//! a list of flat rows, so the JSON, the CSV download and the charts show the same numbers.
//! A report covers the caller's account and only the groups the caller may read.
//!
//! - keys: how many keys per group, state and holder (an HSM, or Keyward itself).
//! - rotation: keys past their rotation date, whose policy stopped after failures, without a
//!   policy, and rotations and deactivations due in the next 30 days.
//! - failures: scheduled rotations and jobs that failed for good in the last 30 days.
//! - usage: cryptographic operations per UTC day over the last 30 days.
//! - drift: per linked group, the last sync (what it found) and how many keys were put back
//!   in the HSM (`key.drift`) in the last 30 days.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::Access;
use crate::catalog::reports::{self as q, Scope};
use crate::catalog::{Catalog, CatalogError, groups};
use crate::time::format_dsm;

/// What "soon" and "recently" mean in the reports.
pub const WINDOW_DAYS: i64 = 30;
const DAY: i64 = 86_400;

/// The reports, by the name in their path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    Keys,
    Rotation,
    Failures,
    Usage,
    Drift,
}

impl Report {
    pub const ALL: [Report; 5] = [
        Report::Keys,
        Report::Rotation,
        Report::Failures,
        Report::Usage,
        Report::Drift,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Report::Keys => "keys",
            Report::Rotation => "rotation",
            Report::Failures => "failures",
            Report::Usage => "usage",
            Report::Drift => "drift",
        }
    }

    pub fn parse(s: &str) -> Option<Report> {
        Report::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Who holds a key's material.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HeldBy {
    /// A virtual key: the material lives in the group's HSM.
    Hsm,
    Keyward,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct KeyCountRow {
    pub group_id: String,
    pub group_name: String,
    /// `PreActive`, `Active`, `Deactivated`, `Compromised` or `Destroyed`.
    pub state: String,
    pub held_by: HeldBy,
    pub count: i64,
}

/// Why a key is in the rotation report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Finding {
    /// Its policy's rotation date has passed without a rotation.
    Overdue,
    /// Its policy stopped after repeated failures (setting it again restarts it).
    Stopped,
    /// An active key with no rotation policy.
    NoPolicy,
    /// Its next rotation is due within the window.
    RotationDue,
    /// Its deactivation date falls within the window.
    DeactivationDue,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RotationRow {
    pub kid: String,
    pub name: String,
    pub group_id: String,
    pub group_name: String,
    pub finding: Finding,
    /// The date behind the finding (due date, deactivation date; creation for `no_policy`).
    pub at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FailureRow {
    /// `rotation` or `job`.
    pub kind: String,
    /// The key's or the job's id.
    pub target_id: String,
    pub name: Option<String>,
    pub group_id: Option<String>,
    pub group_name: Option<String>,
    pub due_at: String,
    pub failed_at: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UsageRow {
    /// A UTC day, `YYYY-MM-DD`.
    pub day: String,
    pub operations: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DriftRow {
    pub group_id: String,
    pub group_name: String,
    pub last_sync_at: Option<String>,
    /// `running`, `succeeded`, `failed` or `interrupted`; none if never synced.
    pub last_sync_status: Option<String>,
    /// HSM keys the last sync added to the catalog.
    pub keys_added: u64,
    /// HSM keys the last sync could not add.
    pub keys_failed: u64,
    /// Catalog keys the last sync found deleted, purged or back in the HSM.
    pub marked_deleted: u64,
    pub marked_purged: u64,
    pub marked_live: u64,
    /// Keys put back in the HSM because it had widened them (`key.drift`), in the window.
    pub drift_events: i64,
}

/// What the shipped sync script reports in its run's output. A user's edited script may
/// report less; what it leaves out counts as zero.
#[derive(Debug, Default, Deserialize)]
struct SyncTally {
    #[serde(default)]
    added: Tally,
    #[serde(default)]
    failed: Tally,
    #[serde(default)]
    marked_deleted: u64,
    #[serde(default)]
    marked_purged: u64,
    #[serde(default)]
    marked_live: u64,
}

/// How many: the shipped script lists what it added or could not add; a count is taken too.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Tally {
    Listed(Vec<serde::de::IgnoredAny>),
    Counted(u64),
}

impl Default for Tally {
    fn default() -> Self {
        Tally::Counted(0)
    }
}

impl Tally {
    fn count(&self) -> u64 {
        match self {
            Tally::Listed(l) => l.len() as u64,
            Tally::Counted(n) => *n,
        }
    }
}

/// A report's rows.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Rows {
    Keys(Vec<KeyCountRow>),
    Rotation(Vec<RotationRow>),
    Failures(Vec<FailureRow>),
    Usage(Vec<UsageRow>),
    Drift(Vec<DriftRow>),
}

impl Rows {
    /// The rows as CSV, a header line first.
    pub fn csv(&self) -> Result<Vec<u8>, csv::Error> {
        fn write<T: Serialize>(rows: &[T], header: &[&str]) -> Result<Vec<u8>, csv::Error> {
            let mut w = csv::WriterBuilder::new()
                .has_headers(false)
                .from_writer(vec![]);
            // Written by hand so an empty report still names its columns.
            w.write_record(header)?;
            for r in rows {
                w.serialize(r)?;
            }
            w.into_inner().map_err(|e| e.into_error().into())
        }
        match self {
            Rows::Keys(r) => write(r, &["group_id", "group_name", "state", "held_by", "count"]),
            Rows::Rotation(r) => write(
                r,
                &[
                    "kid",
                    "name",
                    "group_id",
                    "group_name",
                    "finding",
                    "at",
                    "error",
                ],
            ),
            Rows::Failures(r) => write(
                r,
                &[
                    "kind",
                    "target_id",
                    "name",
                    "group_id",
                    "group_name",
                    "due_at",
                    "failed_at",
                    "error",
                ],
            ),
            Rows::Usage(r) => write(r, &["day", "operations"]),
            Rows::Drift(r) => write(
                r,
                &[
                    "group_id",
                    "group_name",
                    "last_sync_at",
                    "last_sync_status",
                    "keys_added",
                    "keys_failed",
                    "marked_deleted",
                    "marked_purged",
                    "marked_live",
                    "drift_events",
                ],
            ),
        }
    }
}

/// One report for the caller at `now`.
pub async fn run(
    catalog: &Catalog,
    access: &Access,
    report: Report,
    now: i64,
) -> Result<Rows, CatalogError> {
    let visible = access.visible_groups();
    let scope = Scope {
        account_id: &access.account_id,
        visible: visible.as_deref(),
        now,
    };
    let mut c = catalog.conn().await?;
    let names: HashMap<String, String> = groups::in_account(&mut c, &access.account_id)
        .await?
        .into_iter()
        .map(|g| (g.id, g.name))
        .collect();
    let name = |id: &str| names.get(id).cloned().unwrap_or_else(|| id.to_string());
    let since = now - WINDOW_DAYS * DAY;
    let until = now + WINDOW_DAYS * DAY;
    Ok(match report {
        Report::Keys => Rows::Keys(
            q::key_counts(&mut c, scope)
                .await?
                .into_iter()
                .map(|k| KeyCountRow {
                    group_name: name(&k.group_id),
                    group_id: k.group_id,
                    state: k.state.as_str().to_string(),
                    held_by: if k.external {
                        HeldBy::Hsm
                    } else {
                        HeldBy::Keyward
                    },
                    count: k.count,
                })
                .collect(),
        ),
        Report::Rotation => {
            let mut rows = Vec::new();
            let row = |kid: String, key: String, group: String, finding, at: Option<i64>, error| {
                RotationRow {
                    kid,
                    name: key,
                    group_name: name(&group),
                    group_id: group,
                    finding,
                    at: at.map(format_dsm),
                    error,
                }
            };
            for p in q::policies(&mut c, scope).await? {
                let finding = if p.failed {
                    Finding::Stopped
                } else {
                    match p.next_due {
                        Some(d) if d < now => Finding::Overdue,
                        Some(d) if d <= until => Finding::RotationDue,
                        _ => continue,
                    }
                };
                let error = p.last_error.filter(|_| p.failed);
                rows.push(row(p.kid, p.name, p.group_id, finding, p.next_due, error));
            }
            for k in q::without_policy(&mut c, scope).await? {
                rows.push(row(
                    k.kid,
                    k.name,
                    k.group_id,
                    Finding::NoPolicy,
                    k.at,
                    None,
                ));
            }
            for k in q::deactivations_due(&mut c, scope, until).await? {
                let f = Finding::DeactivationDue;
                rows.push(row(k.kid, k.name, k.group_id, f, k.at, None));
            }
            Rows::Rotation(rows)
        }
        Report::Failures => Rows::Failures(
            q::failed_fires(&mut c, scope, since)
                .await?
                .into_iter()
                .map(|f| FailureRow {
                    kind: f.kind,
                    target_id: f.target,
                    name: f.name,
                    group_name: f.group_id.as_deref().map(name),
                    group_id: f.group_id,
                    due_at: format_dsm(f.due_at),
                    failed_at: f.finished_at.map(format_dsm),
                    error: f.error,
                })
                .collect(),
        ),
        Report::Usage => {
            let counts: HashMap<i64, i64> = q::crypto_ops_per_day(&mut c, scope, since)
                .await?
                .into_iter()
                .collect();
            let today = now.div_euclid(DAY);
            Rows::Usage(
                (today - WINDOW_DAYS + 1..=today)
                    .map(|d| UsageRow {
                        day: format_day(d),
                        operations: counts.get(&d).copied().unwrap_or(0),
                    })
                    .collect(),
            )
        }
        Report::Drift => {
            let drift: HashMap<String, i64> = q::drift_per_group(&mut c, scope, since)
                .await?
                .into_iter()
                .collect();
            let runs = q::last_runs(&mut c, scope, "sync").await?;
            let mut linked: Vec<(String, String)> = groups::in_account(&mut c, &access.account_id)
                .await?
                .into_iter()
                .filter(|g| g.link.is_some() && access.can_read_group(&g.id))
                .map(|g| (g.id, g.name))
                .collect();
            linked.sort_by(|a, b| a.1.cmp(&b.1));
            Rows::Drift(
                linked
                    .into_iter()
                    .map(|(id, group_name)| {
                        let run = runs.iter().find(|r| r.group_id.as_deref() == Some(&id));
                        let tally: SyncTally = run
                            .and_then(|r| r.output.clone())
                            .and_then(|o| serde_json::from_value(o).ok())
                            .unwrap_or_default();
                        DriftRow {
                            last_sync_at: run
                                .map(|r| format_dsm(r.finished_at.unwrap_or(r.started_at))),
                            last_sync_status: run.map(|r| r.status.clone()),
                            keys_added: tally.added.count(),
                            keys_failed: tally.failed.count(),
                            marked_deleted: tally.marked_deleted,
                            marked_purged: tally.marked_purged,
                            marked_live: tally.marked_live,
                            drift_events: drift.get(&id).copied().unwrap_or(0),
                            group_id: id,
                            group_name,
                        }
                    })
                    .collect(),
            )
        }
    })
}

/// A Unix day number as `YYYY-MM-DD`.
fn format_day(day: i64) -> String {
    chrono::DateTime::from_timestamp(day * DAY, 0)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_dates() {
        assert_eq!(format_day(0), "1970-01-01");
        assert_eq!(format_day(20_429), "2025-12-07");
    }

    #[test]
    fn an_empty_report_still_names_its_columns() {
        let csv = Rows::Usage(vec![]).csv().unwrap();
        assert_eq!(String::from_utf8(csv).unwrap(), "day,operations\n");
    }

    #[test]
    fn csv_rows_follow_the_header() {
        let rows = Rows::Keys(vec![KeyCountRow {
            group_id: "g".into(),
            group_name: "Payments, EU".into(),
            state: "Active".into(),
            held_by: HeldBy::Hsm,
            count: 3,
        }]);
        let text = String::from_utf8(rows.csv().unwrap()).unwrap();
        assert_eq!(
            text,
            "group_id,group_name,state,held_by,count\ng,\"Payments, EU\",Active,hsm,3\n"
        );
    }
}
