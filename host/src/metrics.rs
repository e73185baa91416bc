//! The daemon's Prometheus metrics, served at `GET /metrics` as OpenMetrics text: API requests
//! by route, method and status, and their latency; workflow runs by workflow, trigger and
//! outcome, and their duration; plugin calls by plugin and outcome, and their duration;
//! scheduled fires (rotations, cron jobs) by kind and outcome, and how late they started; the
//! live counters of runs in flight (a sync's keys seen, added, failed); outbound notification
//! deliveries by outcome, and their duration. One registry per daemon rather than a
//! process-wide recorder, so that daemons sharing a process (the tests) count apart.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route's template (`/crypto/v1/keys/{kid}`), never the path itself, so that ids
    /// do not make a series each; `unmatched` for paths no route serves.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunLabels {
    pub workflow: String,
    /// `api`, `schedule` or `webhook`.
    pub trigger: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkflowLabels {
    pub workflow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabels {
    pub plugin: String,
    /// `ok`, or `error` when the plugin failed, trapped or ran out of its limits.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginName {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FireLabels {
    /// `rotation` or `job`.
    pub kind: String,
    /// `succeeded` or `failed`.
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FireKind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProgressLabels {
    /// One of the daemon's shipped workflows (an account's own scripts make no series).
    pub workflow: String,
    /// One of the shipped scripts' counters: `seen`, `added`, `failed`, ...
    pub counter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// `unknown` (no such webhook), `signature`, `body` or `too_large`.
    pub reason: String,
}

/// The HTTP methods that get a series of their own; any other counts as `other`.
const METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "CONNECT", "TRACE",
];

/// The counters a shipped script may report (`progress(#{...})`); others make no series.
const PROGRESS_COUNTERS: [&str; 8] = [
    "seen",
    "added",
    "failed",
    "skipped",
    "marked_deleted",
    "marked_purged",
    "rotated",
    "done",
];

/// A label from a bounded set: metrics carry no account data or script-chosen strings, so
/// their series stay few whatever requests and scripts do.
fn bounded<'a>(value: &'a str, known: &[&'a str], other: &'a str) -> &'a str {
    known
        .iter()
        .find(|k| **k == value)
        .copied()
        .unwrap_or(other)
}

/// Which workflow a series is about: one the daemon ships (by its name), or an account's
/// own script, counted as `account` whatever its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkflowName<'a> {
    Shipped(&'a str),
    Account,
}

impl WorkflowName<'_> {
    fn label(self) -> String {
        match self {
            WorkflowName::Shipped(n) => n.to_string(),
            WorkflowName::Account => "account".to_string(),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `delivered`, `retried` (failed, another attempt is due) or `failed` (no more attempts,
    /// or the receiver answered 410: the endpoint is disabled).
    pub outcome: String,
}

type Seconds<L> = Family<L, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: Seconds<RouteLabels>,
    workflow_runs: Family<RunLabels, Counter>,
    workflow_run_seconds: Seconds<WorkflowLabels>,
    plugin_calls: Family<PluginLabels, Counter>,
    plugin_call_seconds: Seconds<PluginName>,
    fires: Family<FireLabels, Counter>,
    fire_lag_seconds: Seconds<FireKind>,
    progress: Family<ProgressLabels, Gauge>,
    webhook_refusals: Family<RefusalLabels, Counter>,
    deliveries: Family<DeliveryLabels, Counter>,
    delivery_seconds: Histogram,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn latency() -> Histogram {
    // 0.5 ms to ~16 s: a cached encryption to a slow HSM call.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

fn lag() -> Histogram {
    // 1 s to ~9 h: a round's interval to a daemon that was down.
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("keyward");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "API requests answered, by route, method and status",
            requests.clone(),
        );
        let request_seconds: Seconds<RouteLabels> = Family::new_with_constructor(latency);
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an API request, by route and method",
            request_seconds.clone(),
        );
        let workflow_runs = Family::<RunLabels, Counter>::default();
        registry.register(
            "workflow_runs",
            "Workflow runs ended, by workflow, trigger and outcome",
            workflow_runs.clone(),
        );
        let workflow_run_seconds: Seconds<WorkflowLabels> = Family::new_with_constructor(latency);
        registry.register(
            "workflow_run_duration_seconds",
            "Time a workflow run took, by workflow",
            workflow_run_seconds.clone(),
        );
        let plugin_calls = Family::<PluginLabels, Counter>::default();
        registry.register(
            "plugin_calls",
            "Calls into plugins (policy decisions, connector operations), by plugin and outcome",
            plugin_calls.clone(),
        );
        let plugin_call_seconds: Seconds<PluginName> = Family::new_with_constructor(latency);
        registry.register(
            "plugin_call_duration_seconds",
            "Time a plugin call took, by plugin",
            plugin_call_seconds.clone(),
        );
        let webhook_refusals = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "webhook_refused_deliveries",
            "Webhook deliveries refused, by reason (no such webhook, bad signature or secret, bad body, too large)",
            webhook_refusals.clone(),
        );
        let fires = Family::<FireLabels, Counter>::default();
        registry.register(
            "scheduler_fires",
            "Scheduled rotations and cron jobs run, by kind and outcome",
            fires.clone(),
        );
        let fire_lag_seconds: Seconds<FireKind> = Family::new_with_constructor(lag);
        registry.register(
            "scheduler_lag_seconds",
            "How long after it was due a scheduled fire started, by kind",
            fire_lag_seconds.clone(),
        );
        let progress = Family::<ProgressLabels, Gauge>::default();
        registry.register(
            "workflow_progress",
            "Counters of workflow runs (a sync's keys seen, added, failed), by workflow, group and counter; a finished run's last values stay until the next run",
            progress.clone(),
        );
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "notification_deliveries",
            "Attempts to deliver an outbound notification (webhook), by outcome",
            deliveries.clone(),
        );
        let delivery_seconds = latency();
        registry.register(
            "notification_delivery_duration_seconds",
            "Time an attempt to deliver a notification took",
            delivery_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            request_seconds,
            workflow_runs,
            workflow_run_seconds,
            plugin_calls,
            plugin_call_seconds,
            fires,
            fire_lag_seconds,
            progress,
            webhook_refusals,
            deliveries,
            delivery_seconds,
        }
    }

    /// A run of a shipped workflow in flight set one of its known counters (runs of an
    /// account's own scripts, and counters of other names, make no series).
    pub fn progress(&self, workflow: WorkflowName<'_>, counter: &str, value: i64) {
        let WorkflowName::Shipped(workflow) = workflow else {
            return;
        };
        if !PROGRESS_COUNTERS.contains(&counter) {
            return;
        }
        self.progress
            .get_or_create(&ProgressLabels {
                workflow: workflow.to_string(),
                counter: counter.to_string(),
            })
            .set(value);
    }

    /// A webhook delivery was refused.
    pub fn webhook_refused(&self, reason: &str) {
        self.webhook_refusals
            .get_or_create(&RefusalLabels {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// One attempt to deliver a notification ended.
    pub fn delivery(&self, outcome: &str, seconds: f64) {
        self.deliveries
            .get_or_create(&DeliveryLabels {
                outcome: outcome.to_string(),
            })
            .inc();
        self.delivery_seconds.observe(seconds);
    }

    /// A scheduled fire started `lag_secs` after it was due.
    pub fn fire_started(&self, kind: &str, lag_secs: i64) {
        self.fire_lag_seconds
            .get_or_create(&FireKind {
                kind: kind.to_string(),
            })
            .observe(lag_secs.max(0) as f64);
    }

    /// A scheduled fire ended.
    pub fn fire_ended(&self, kind: &str, succeeded: bool) {
        self.fires
            .get_or_create(&FireLabels {
                kind: kind.to_string(),
                outcome: if succeeded { "succeeded" } else { "failed" }.to_string(),
            })
            .inc();
    }

    /// A call into a plugin ended.
    pub fn plugin_call(&self, plugin: &str, ok: bool, seconds: f64) {
        self.plugin_calls
            .get_or_create(&PluginLabels {
                plugin: plugin.to_string(),
                outcome: if ok { "ok" } else { "error" }.to_string(),
            })
            .inc();
        self.plugin_call_seconds
            .get_or_create(&PluginName {
                plugin: plugin.to_string(),
            })
            .observe(seconds);
    }

    /// A workflow run ended.
    pub fn workflow_run(
        &self,
        workflow: WorkflowName<'_>,
        trigger: &str,
        succeeded: bool,
        seconds: f64,
    ) {
        let workflow = workflow.label();
        self.workflow_runs
            .get_or_create(&RunLabels {
                workflow: workflow.clone(),
                trigger: trigger.to_string(),
                outcome: if succeeded { "succeeded" } else { "failed" }.to_string(),
            })
            .inc();
        self.workflow_run_seconds
            .get_or_create(&WorkflowLabels { workflow })
            .observe(seconds);
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        let method = bounded(method, &METHODS, "other");
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_string(),
                route: route.to_string(),
                status,
            })
            .inc();
        self.request_seconds
            .get_or_create(&RouteLabels {
                method: method.to_string(),
                route: route.to_string(),
            })
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String does not fail");
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Counts and times every request (a layer of the API router).
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let method = req.method().as_str().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(req).await;
    metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}
