//! Reading the audit log: account administrators and auditors, with filters, in DSM's shape
//! (`{hits: [{_id, _source}]}`, the query parameters of DSM's `LogsParams`). Keyward's own
//! names for what DSM does not have (`action`, `outcome`, `object_kind`, `details`) ride along
//! in `_source`, which DSM clients ignore. docs/api.md maps one model onto the other.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum_extra::extract::Query;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::catalog::audit::{self, ActionType, AuditFilter, Logged};
use crate::time::format_rfc3339;

use super::extract::Caller;
use super::{ApiError, ApiResult, AppState};

/// DSM's `SeverityLevel`, from the outcome: a success is INFO, a refusal WARNING, a failure
/// ERROR. Keyward records nothing as CRITICAL; the value is accepted in filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Info,
    Warning,
    Error,
    Critical,
}

impl Severity {
    fn of(outcome: &str) -> Severity {
        match outcome {
            "success" => Severity::Info,
            "denied" => Severity::Warning,
            _ => Severity::Error,
        }
    }

    fn outcomes(self) -> &'static [&'static str] {
        match self {
            Severity::Info => &["success"],
            Severity::Warning => &["denied"],
            Severity::Error => &["failure"],
            Severity::Critical => &[],
        }
    }
}

/// DSM's action types, as they appear on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum ActionTypeName {
    Administrative,
    Auth,
    Cryptooperation,
    Runplugin,
    Custom,
    Other,
}

impl From<ActionType> for ActionTypeName {
    fn from(t: ActionType) -> Self {
        match t {
            ActionType::Administrative => ActionTypeName::Administrative,
            ActionType::Auth => ActionTypeName::Auth,
            ActionType::CryptoOperation => ActionTypeName::Cryptooperation,
            ActionType::RunPlugin => ActionTypeName::Runplugin,
            ActionType::Custom => ActionTypeName::Custom,
            ActionType::Other => ActionTypeName::Other,
        }
    }
}

impl From<ActionTypeName> for ActionType {
    fn from(t: ActionTypeName) -> Self {
        match t {
            ActionTypeName::Administrative => ActionType::Administrative,
            ActionTypeName::Auth => ActionType::Auth,
            ActionTypeName::Cryptooperation => ActionType::CryptoOperation,
            ActionTypeName::Runplugin => ActionType::RunPlugin,
            ActionTypeName::Custom => ActionType::Custom,
            ActionTypeName::Other => ActionType::Other,
        }
    }
}

/// Who acted: DSM's `User` and `App`, and Keyward's own `System` (the scheduler, the sync).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum ActorType {
    User,
    App,
    System,
}

impl ActorType {
    fn of(kind: &str) -> ActorType {
        match kind {
            "user" => ActorType::User,
            "app" => ActorType::App,
            _ => ActorType::System,
        }
    }

    fn kind(self) -> &'static str {
        match self {
            ActorType::User => "user",
            ActorType::App => "app",
            ActorType::System => "system",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Success,
    Denied,
    Failure,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Failure => "failure",
        }
    }
}

/// DSM's `LogsParams`, with Keyward's `action` and `outcome`. Lists are given by repeating
/// the parameter (`?severity=WARNING&severity=ERROR`).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// How many entries, 0 to 1000 (default 100).
    #[param(minimum = 0, maximum = 1000)]
    pub size: Option<u32>,
    /// How many of the matching entries (newest first) to skip.
    #[param(schema_with = super::schemas::offset)]
    pub from: Option<u32>,
    /// From this time, in seconds since the epoch.
    pub range_from: Option<i64>,
    /// Up to this time, in seconds since the epoch.
    pub range_to: Option<i64>,
    #[serde(default)]
    pub action_type: Vec<ActionTypeName>,
    #[serde(default)]
    pub actor_type: Vec<ActorType>,
    /// A user or application id.
    #[param(schema_with = super::schemas::id)]
    pub actor_id: Option<String>,
    /// The id of the object acted on.
    #[param(min_length = 1)]
    pub object_id: Option<String>,
    /// The `_id` of the last entry seen: only older entries.
    #[param(pattern = "^[0-9]+$")]
    pub previous_id: Option<String>,
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Keyward: an action (`key.create`) or a prefix ending in `*` (`key.*`).
    #[param(min_length = 1)]
    pub action: Option<String>,
    /// Keyward: the outcome.
    #[serde(default)]
    pub outcome: Vec<Outcome>,
}

/// DSM's `EsAuditQueryResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogsOut {
    pub hits: Vec<LogHit>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LogHit {
    /// The entry's id; `previous_id` of the next page.
    pub _id: String,
    pub _source: LogEntry,
}

/// DSM's `EsAuditLog`, with Keyward's fields after it.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogEntry {
    pub action_type: ActionTypeName,
    pub actor_type: ActorType,
    pub message: String,
    pub severity: Severity,
    /// `YYYY-MM-DDTHH:MM:SSZ`, as DSM writes it.
    #[schema(example = "2026-12-03T10:00:00Z")]
    pub time: String,
    pub acct_id: Option<String>,
    pub actor_id: String,
    /// The group acted on, or the group of the key acted on (while the key is in the
    /// catalog).
    pub group_ids: Vec<String>,
    /// What was acted on; none for events about no one object (a refused login).
    pub object_id: Option<String>,
    /// Keyward: the action, e.g. `key.create`.
    pub action: String,
    /// Keyward: `success`, `denied` or `failure`.
    pub outcome: String,
    /// Keyward: `key`, `group`, `app`, `user`, ...
    pub object_kind: Option<String>,
    /// Keyward: what the action changed, never secret.
    #[schema(value_type = Option<Object>)]
    pub details: Option<Value>,
}

fn entry(
    Logged {
        event: e,
        key_group,
    }: Logged,
) -> LogHit {
    let group_ids = match (&e.object_kind, &e.object_id) {
        (Some(kind), Some(id)) if kind == "group" => vec![id.clone()],
        _ => key_group.into_iter().collect(),
    };
    // DSM's message is a sentence; Keyward's events carry one only when something went wrong
    // or needs saying, so the action and outcome stand in.
    let message = match &e.message {
        Some(m) => format!("{} {}: {m}", e.action, e.outcome),
        None => format!("{} {}", e.action, e.outcome),
    };
    LogHit {
        _id: e.id.to_string(),
        _source: LogEntry {
            action_type: e.action_type().into(),
            actor_type: ActorType::of(&e.actor_kind),
            message,
            severity: Severity::of(&e.outcome),
            time: format_rfc3339(e.at),
            acct_id: e.account_id,
            actor_id: e.actor_id,
            group_ids,
            object_id: e.object_id,
            action: e.action,
            outcome: e.outcome,
            object_kind: e.object_kind,
            details: e.details,
        },
    }
}

/// Newest first.
#[utoipa::path(get, path = "/sys/v1/logs", tag = "audit", params(LogsQuery),
    responses((status = 200, body = LogsOut), (status = 400, body = super::error::ErrorBody),
        (status = 403, body = super::error::ErrorBody)))]
pub async fn query(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    q: Result<Query<LogsQuery>, axum_extra::extract::QueryRejection>,
) -> ApiResult<Json<LogsOut>> {
    let Query(q) = q.map_err(|e| ApiError::bad(format!("invalid query: {e}")))?;
    if !caller.access.can_read_audit_log() {
        return Err(ApiError::Forbidden(
            "only account administrators and auditors read the audit log".into(),
        ));
    }
    let limit = q.size.unwrap_or(100);
    if limit > 1000 {
        return Err(ApiError::field("size", "must be 0 to 1000"));
    }
    if let Some(a) = &q.actor_id {
        super::extract::id("actor", a)?;
    }
    let before_id = q
        .previous_id
        .as_deref()
        .map(|p| {
            p.parse::<i64>()
                .map_err(|_| ApiError::field("previous_id", "is not the _id of a log entry"))
        })
        .transpose()?;
    // Severity and outcome both narrow the outcomes; given both, an entry must satisfy both.
    let mut outcomes: Vec<String> = q.outcome.iter().map(|o| o.as_str().to_string()).collect();
    if !q.severity.is_empty() {
        let by_severity: Vec<String> = q
            .severity
            .iter()
            .flat_map(|s| s.outcomes())
            .map(|o| o.to_string())
            .collect();
        outcomes = if outcomes.is_empty() {
            by_severity
        } else {
            outcomes
                .into_iter()
                .filter(|o| by_severity.contains(o))
                .collect()
        };
        if outcomes.is_empty() {
            return Ok(Json(LogsOut { hits: vec![] }));
        }
    }
    if limit == 0 {
        return Ok(Json(LogsOut { hits: vec![] }));
    }
    // Events still queued (crypto operations) are written before we read.
    state.audit.flush().await;
    let filter = AuditFilter {
        account_id: caller.account().to_string(),
        action: q.action,
        action_types: q.action_type.into_iter().map(Into::into).collect(),
        actor_kinds: q.actor_type.iter().map(|t| t.kind().to_string()).collect(),
        actor_id: q.actor_id,
        object_id: q.object_id,
        outcomes,
        from: q.range_from,
        to: q.range_to,
        before_id,
        limit,
        offset: q.from.unwrap_or(0),
    };
    let mut conn = state.catalog.conn().await?;
    let events = audit::query(&mut conn, &filter).await?;
    Ok(Json(LogsOut {
        hits: events.into_iter().map(entry).collect(),
    }))
}
