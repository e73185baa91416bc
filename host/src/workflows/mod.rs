//! Workflows: the key flows against external key managers (test connection, sync, generate,
//! import, BYOK copy, update, soft delete, recover, restore, purge, delete) as Rhai scripts
//! that users can read and edit.
//!
//! - [`store`]: shipped scripts (the repository's `workflows/`) and the override directory,
//!   recompiled when a file changes; a script that does not compile is reported and the
//!   previous version keeps serving.
//! - `editing`: an account's own versions of scripts (put, restore, go back to the
//!   daemon's), validated before they are stored, every version kept with its author.
//! - `host_api`: the only things a script can do — connector calls (each journaled before
//!   and after), the key service's reads and writes, escrow, policy checks, audit and
//!   logging — each with the run's group and caller. No files, network, `eval` or modules
//!   outside the workflow store.
//! - `values`: moving values between Rust, JSON and Rhai, with secrets kept opaque.
//!
//! Every run is recorded in the catalog (inputs without secrets, status, step log, output)
//! and limited: an operation budget, a call depth, and a wall-clock deadline that stops
//! endless loops and bounds every host call.

mod editing;
mod host_api;
mod lease;
pub mod memory;
pub mod store;
mod values;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rhai::{Dynamic, Engine, EvalAltResult, Map, Scope};
use serde_json::{Value, json};

use crate::audit::Auditor;
use crate::auth::Access;
use crate::catalog::groups::Group;
use crate::catalog::workflow_runs::{self, WorkflowRun};
use crate::catalog::{Catalog, CatalogError, new_id};
use crate::keys::{FlowError, FlowOutcome, FlowRequest, FlowRunner, KeyService, Pending};
use crate::kms::{Kms, Link};
use crate::plugins::PluginRuntime;
use crate::time::Clock;

pub use editing::{MAX_SOURCE_BYTES, ScriptError};
pub use host_api::{HostError, HostErrorKind, Secret};
pub use store::{CompileProblem, Origin, ScriptInfo, ScriptStore};

/// The exclusivity key of a workflow's runs, when runs of it must not overlap: one sync of
/// a group at a time, however it was started.
pub fn exclusive_for(workflow: &str, group: Option<&str>) -> Option<String> {
    match (workflow, group) {
        ("sync", Some(g)) => Some(format!("sync:{g}")),
        _ => None,
    }
}

/// The engine runs the key service's HSM flows.
impl FlowRunner for Workflows {
    fn run_flow(
        self: Arc<Self>,
        req: FlowRequest,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<FlowOutcome, FlowError>> + Send>>
    {
        Box::pin(async move {
            let run = RunRequest {
                workflow: req.workflow,
                trigger: req.trigger,
                access: req.access,
                group: Some(req.group),
                link: Some(req.link),
                input: req.input,
                secrets: req
                    .material
                    .map(|m| {
                        let secret = Secret {
                            material: Arc::new(m.material),
                            plain_ok: m.plain_ok,
                        };
                        vec![("material".to_string(), secret)]
                    })
                    .unwrap_or_default(),
                pending: req.pending,
                exclusive: req.exclusive,
                run_id: req.run_id,
            };
            match self.run(run).await {
                Ok(o) => Ok(FlowOutcome {
                    run_id: o.run_id,
                    output: o.output,
                    recorded: o.recorded,
                }),
                Err(WorkflowError::Busy { run_id }) => Err(FlowError::Busy { run_id }),
                Err(e) => Err(FlowError::Run(Box::new(e))),
            }
        })
    }
}

/// Whether `name` is one of the workflows the daemon ships (an account may have its own
/// version of it).
pub fn is_shipped(name: &str) -> bool {
    store::SHIPPED.iter().any(|(n, _)| *n == name)
}

/// How the metrics name a workflow: shipped ones by name, an account's own as `account`
/// (metrics carry no script-chosen strings).
fn metric_name(name: &str) -> crate::metrics::WorkflowName<'_> {
    match is_shipped(name) {
        true => crate::metrics::WorkflowName::Shipped(name),
        false => crate::metrics::WorkflowName::Account,
    }
}

/// Workflows a group's key managers may start themselves for their group: those that act
/// on the group as a whole. Every other workflow acts on keys a request names, and the key
/// service starts it for that request after its own checks.
pub const GROUP_WORKFLOWS: &[&str] = &["sync", "test_connection"];

/// Whether `access` may start `workflow`, by hand or by binding it to a webhook or a job that
/// starts it as them: account administrators any workflow, a group's key managers the
/// group-wide ones for that group. Checked when the trigger is made and again, with the
/// owner's rights at that moment, each time it fires.
pub fn may_start(
    access: &Access,
    workflow: &str,
    group: Option<&str>,
) -> Result<(), WorkflowError> {
    if access.is_account_admin() {
        return Ok(());
    }
    match group {
        Some(g) if GROUP_WORKFLOWS.contains(&workflow) && access.can_manage_keys(g) => Ok(()),
        _ => Err(WorkflowError::Forbidden(format!(
            "only account administrators start the workflow '{workflow}' (a group's key managers may start {} for their group)",
            GROUP_WORKFLOWS.join(" and ")
        ))),
    }
}

/// What the progress hook ends a run with when it passes its memory budget.
const MEMORY_LIMIT: &str = "memory limit";
const LEASE_LOST: &str = "lease lost";

/// Whether a run must stop now: past its memory budget or its deadline.
fn progress_check(limits: &WorkflowLimits, deadline: Instant, ops: u64) -> Option<Dynamic> {
    if memory::held() > limits.max_memory {
        return Some(Dynamic::from(MEMORY_LIMIT));
    }
    (ops.is_multiple_of(1024) && Instant::now() >= deadline).then(|| Dynamic::from("time limit"))
}

/// Bounds of every run.
#[derive(Debug, Clone)]
pub struct WorkflowLimits {
    /// Wall-clock limit of a run, host calls included.
    pub timeout: Duration,
    /// Script operations (expression nodes, loop iterations, calls) per run.
    pub max_operations: u64,
    /// Connector calls a bulk host function keeps in flight.
    pub concurrency: usize,
    /// Bytes a run's script may hold at once (its values, and what its host calls return
    /// to it); past this the run ends.
    pub max_memory: usize,
    /// How long the lease of a run with an exclusive key lasts without renewal (renewed
    /// every third of it): after a daemon dies, how soon another may run the same work.
    pub lease_ttl: Duration,
}

impl Default for WorkflowLimits {
    fn default() -> Self {
        WorkflowLimits {
            timeout: Duration::from_secs(15 * 60),
            // About seven seconds of pure script work: far above what the shipped scripts
            // need for tens of thousands of keys, far below a runaway loop's appetite.
            max_operations: 50_000_000,
            concurrency: 32,
            // A sync of 50,000 keys holds about 40 MiB of key maps at its peak.
            max_memory: 64 << 20,
            lease_ttl: lease::TTL,
        }
    }
}

/// What runs need from the daemon.
#[derive(Clone)]
pub struct Services {
    /// This daemon's id (in the leases of its runs).
    pub daemon_id: String,
    pub catalog: Catalog,
    pub keys: KeyService,
    pub plugins: PluginRuntime,
    pub kms: Kms,
    pub clock: Clock,
    pub audit: Auditor,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// What asked for a run: the key service's, whose flows are most runs.
pub use crate::keys::Trigger;

/// One run to start.
pub struct RunRequest {
    pub workflow: String,
    pub trigger: Trigger,
    /// Who the run acts for: the key service checks every change the script makes against
    /// it.
    pub access: Access,
    pub group: Option<Arc<Group>>,
    pub link: Option<Link>,
    /// The script's `input` (recorded with the run; never put secrets here).
    pub input: Value,
    /// Secrets added to `input` as opaque values the script can pass on but not read.
    pub secrets: Vec<(String, Secret)>,
    /// What the caller validated for the script to record (`keys::record`, `keys::save`).
    pub pending: Option<Pending>,
    /// Runs with the same key never overlap: a second one is refused.
    pub exclusive: Option<String>,
    /// The run's id, when the caller needs it before the run starts (a name reservation).
    pub run_id: Option<String>,
}

#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub run_id: String,
    pub output: Value,
    /// The key stored by `keys::record` / `keys::save`.
    pub recorded: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("no workflow named '{0}'")]
    NotFound(String),
    #[error("workflow script does not compile: {0}")]
    Compile(CompileProblem),
    #[error("workflow run {run_id} of the same kind is still running")]
    Busy { run_id: String },
    /// The script stopped on an error a host function raised (a refusal by the key manager,
    /// a conflict in the catalog, ...).
    #[error("{error} (workflow run {run_id})")]
    Host { run_id: String, error: HostError },
    #[error("workflow run {run_id} failed: {message}")]
    Failed { run_id: String, message: String },
    #[error("workflow run {run_id} was stopped after {secs} s, its time limit")]
    TimedOut { run_id: String, secs: u64 },
    #[error(
        "workflow run {run_id} was stopped: its lease on the catalog could not be renewed, so another daemon may take the work over"
    )]
    LeaseLost { run_id: String },
    #[error("workflow run {run_id} was stopped after {limit} operations, its limit")]
    TooManyOperations { run_id: String, limit: u64 },
    #[error(
        "workflow run {run_id} was stopped: it used more than {limit_mib} MiB, its memory limit"
    )]
    OutOfMemory { run_id: String, limit_mib: u64 },
    /// The principal may not start this workflow (by hand, or through a webhook or job it
    /// owns).
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

impl From<sqlx::Error> for WorkflowError {
    fn from(e: sqlx::Error) -> Self {
        WorkflowError::Catalog(e.into())
    }
}

/// Live counters of a run (seen, added, failed, ...), readable while it runs and mirrored
/// in the metrics.
pub struct Progress {
    counters: Mutex<BTreeMap<String, i64>>,
    metrics: Arc<crate::metrics::Metrics>,
    workflow: String,
}

impl Progress {
    pub fn new(metrics: Arc<crate::metrics::Metrics>, workflow: &str) -> Progress {
        Progress {
            counters: Mutex::new(BTreeMap::new()),
            metrics,
            workflow: workflow.to_string(),
        }
    }

    pub fn set(&self, name: &str, value: i64) {
        self.counters
            .lock()
            .unwrap()
            .insert(name.to_string(), value);
        self.metrics
            .progress(metric_name(&self.workflow), name, value);
    }

    pub fn add(&self, name: &str, delta: i64) {
        let value = {
            let mut counters = self.counters.lock().unwrap();
            let v = counters.entry(name.to_string()).or_insert(0);
            *v += delta;
            *v
        };
        self.metrics
            .progress(metric_name(&self.workflow), name, value);
    }

    pub fn snapshot(&self) -> BTreeMap<String, i64> {
        self.counters.lock().unwrap().clone()
    }
}

/// A started run.
pub struct RunHandle {
    pub run_id: String,
    join: tokio::task::JoinHandle<Result<RunOutcome, WorkflowError>>,
}

impl RunHandle {
    pub async fn wait(self) -> Result<RunOutcome, WorkflowError> {
        self.join.await.unwrap_or_else(|e| {
            Err(WorkflowError::Failed {
                run_id: String::new(),
                message: format!("the run task failed: {e}"),
            })
        })
    }
}

pub struct Workflows {
    store: Arc<ScriptStore>,
    services: Services,
    limits: WorkflowLimits,
    /// Exclusive key → the run holding it.
    exclusive: Mutex<HashMap<String, String>>,
    /// Progress of runs in flight.
    progress: Mutex<HashMap<String, Arc<Progress>>>,
}

/// Releases an exclusive key (and its lease) and a progress entry when a run ends, however
/// it ends.
struct RunGuard {
    workflows: Arc<Workflows>,
    run_id: String,
    exclusive: Option<String>,
    _lease: Option<lease::RunLease>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(k) = &self.exclusive {
            self.workflows.exclusive.lock().unwrap().remove(k);
        }
        self.workflows.progress.lock().unwrap().remove(&self.run_id);
    }
}

impl Workflows {
    /// The engine (the daemon builds it inside `Arc::new_cyclic`, so that the key service it
    /// holds can reach it back).
    pub fn new(
        services: Services,
        override_dir: Option<PathBuf>,
        limits: WorkflowLimits,
    ) -> Workflows {
        Workflows {
            store: Arc::new(ScriptStore::new(override_dir)),
            services,
            limits,
            exclusive: Mutex::new(HashMap::new()),
            progress: Mutex::new(HashMap::new()),
        }
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    pub fn limits(&self) -> &WorkflowLimits {
        &self.limits
    }

    /// An engine with the sandbox settings and no host API (compiling, listing).
    fn base_engine(&self, deadline: Option<Instant>, account: Option<&str>) -> Engine {
        let mut engine = Engine::new();
        engine
            .set_max_operations(self.limits.max_operations)
            .set_max_call_levels(32)
            .set_max_expr_depths(64, 32)
            .set_max_string_size(1 << 20)
            .set_max_array_size(1 << 20)
            .set_max_map_size(1 << 20)
            .set_max_modules(32)
            .set_max_variables(10_000)
            .set_max_functions(1_000)
            .set_module_resolver(store::StoreResolver {
                store: self.store.clone(),
                account: account.map(str::to_string),
            });
        engine.disable_symbol("eval");
        if let Some(deadline) = deadline {
            let limits = self.limits.clone();
            engine.on_progress(move |ops| progress_check(&limits, deadline, ops));
        }
        host_api::register_types(&mut engine);
        engine
    }

    /// The workflows an account sees (its own versions in place of the daemon's).
    pub fn list(&self, account: &str) -> Vec<ScriptInfo> {
        self.store
            .list(&self.base_engine(None, Some(account)), Some(account))
    }

    /// The source an account's runs of `name` use.
    pub fn source(&self, account: &str, name: &str) -> Result<Arc<str>, WorkflowError> {
        self.store
            .source(&self.base_engine(None, Some(account)), Some(account), name)
    }

    pub fn override_dir(&self) -> Option<&std::path::Path> {
        self.store.override_dir()
    }

    /// Counters of a run in flight.
    pub fn progress(&self, run_id: &str) -> Option<BTreeMap<String, i64>> {
        self.progress
            .lock()
            .unwrap()
            .get(run_id)
            .map(|p| p.snapshot())
    }

    /// The run holding an exclusive key, if one does.
    pub fn holder(&self, exclusive: &str) -> Option<String> {
        self.exclusive.lock().unwrap().get(exclusive).cloned()
    }

    /// Marks runs a previous daemon left unfinished.
    pub async fn recover_interrupted(&self) -> Result<u64, CatalogError> {
        let mut tx = self.services.catalog.begin().await?;
        let n = workflow_runs::interrupt_unfinished(&mut tx, self.services.clock.now()).await?;
        tx.commit().await?;
        if n > 0 {
            tracing::warn!(
                runs = n,
                "workflow runs were interrupted by the last shutdown"
            );
        }
        Ok(n)
    }

    /// Runs a workflow to its end.
    pub async fn run(self: &Arc<Self>, req: RunRequest) -> Result<RunOutcome, WorkflowError> {
        self.start(req).await?.wait().await
    }

    /// Starts a workflow; the run is recorded before this returns.
    pub async fn start(self: &Arc<Self>, req: RunRequest) -> Result<RunHandle, WorkflowError> {
        let account = req.access.account_id.clone();
        self.refresh_account_scripts(&account).await?;
        let script = self.store.script(
            &self.base_engine(None, Some(&account)),
            Some(&account),
            &req.workflow,
        )?;
        let run_id = req.run_id.clone().unwrap_or_else(new_id);
        if let Some(key) = &req.exclusive {
            let mut held = self.exclusive.lock().unwrap();
            if let Some(other) = held.get(key) {
                return Err(WorkflowError::Busy {
                    run_id: other.clone(),
                });
            }
            held.insert(key.clone(), run_id.clone());
        }
        let mut guard = RunGuard {
            workflows: self.clone(),
            run_id: run_id.clone(),
            exclusive: req.exclusive.clone(),
            _lease: None,
        };
        // The key is this daemon's; now the catalog's, across daemons.
        let stop = match &req.exclusive {
            Some(key) => {
                match lease::take(
                    &self.services.catalog,
                    &self.services.daemon_id,
                    key,
                    &run_id,
                    self.limits.lease_ttl,
                )
                .await?
                {
                    Ok(l) => {
                        let stop = l.stop_flag();
                        guard._lease = Some(l);
                        Some(stop)
                    }
                    Err(other) => {
                        return Err(WorkflowError::Busy {
                            run_id: other.unwrap_or_else(|| "on another daemon".into()),
                        });
                    }
                }
            }
            None => None,
        };
        let now = self.services.clock.now();
        let mut recorded_inputs = req.input.clone();
        if let Value::Object(m) = &mut recorded_inputs {
            for (name, _) in &req.secrets {
                m.insert(name.clone(), json!("<secret>"));
            }
        }
        let principal = &req.access.principal;
        let run = WorkflowRun {
            id: run_id.clone(),
            account_id: Some(req.access.account_id.clone()),
            group_id: req.group.as_ref().map(|g| g.id.clone()),
            workflow: req.workflow.clone(),
            trigger: req.trigger.as_str().to_string(),
            principal: Some(format!("{}:{}", principal.kind(), principal.id())),
            inputs: recorded_inputs,
            status: "running".into(),
            log: json!([]),
            output: None,
            error: None,
            started_at: now,
            finished_at: None,
        };
        let mut tx = self.services.catalog.begin().await?;
        workflow_runs::insert(&mut tx, &run).await?;
        tx.commit().await?;
        let req = RunRequest {
            run_id: Some(run_id.clone()),
            ..req
        };

        let progress = Arc::new(Progress::new(self.services.metrics.clone(), &req.workflow));
        self.progress
            .lock()
            .unwrap()
            .insert(run_id.clone(), progress.clone());
        let deadline = Instant::now() + self.limits.timeout;
        let ctx = Arc::new(host_api::RunContext::new(
            self.services.clone(),
            tokio::runtime::Handle::current(),
            &run_id,
            &req,
            deadline,
            self.limits.concurrency,
            progress,
        ));
        let engine = {
            let mut e = self.base_engine(Some(deadline), Some(&account));
            if let Some(stop) = stop {
                e.on_progress({
                    let limits = self.limits.clone();
                    move |ops| {
                        if stop.load(std::sync::atomic::Ordering::SeqCst) {
                            return Some(Dynamic::from(LEASE_LOST));
                        }
                        progress_check(&limits, deadline, ops)
                    }
                });
            }
            host_api::register(&mut e, ctx.clone());
            e
        };
        let input = values::input(&req.input, &req.secrets);
        let group = values::group(req.group.as_deref(), req.link.as_ref());
        let this = self.clone();
        let id = run_id.clone();
        let (workflow, trigger) = (req.workflow.clone(), req.trigger.as_str());
        let started = Instant::now();
        let join = tokio::spawn(async move {
            let _guard = guard;
            let ctx2 = ctx.clone();
            let result = tokio::task::spawn_blocking(move || {
                let counting = memory::Counting::start();
                let mut scope = Scope::new();
                scope.push_constant("input", input);
                scope.push_constant("group", group);
                scope.push("output", Map::new());
                let r = engine.run_ast_with_scope(&mut scope, &script.ast);
                let output = scope
                    .get("output")
                    .map(values::to_json)
                    .unwrap_or(Value::Null);
                // The scope's values are freed here, on this thread, while it still counts.
                drop(scope);
                drop(counting);
                (r, output)
            })
            .await;
            let (result, output) = match result {
                Ok(v) => v,
                Err(e) => (
                    Err(Box::new(EvalAltResult::ErrorSystem(
                        "the run panicked".into(),
                        Box::new(std::io::Error::other(e.to_string())),
                    ))),
                    Value::Null,
                ),
            };
            let outcome = this.finish(&id, &ctx2, result, output).await;
            this.services.metrics.workflow_run(
                metric_name(&workflow),
                trigger,
                outcome.is_ok(),
                started.elapsed().as_secs_f64(),
            );
            outcome
        });
        Ok(RunHandle { run_id, join })
    }

    async fn finish(
        &self,
        run_id: &str,
        ctx: &host_api::RunContext,
        result: Result<(), Box<EvalAltResult>>,
        output: Value,
    ) -> Result<RunOutcome, WorkflowError> {
        let mut outcome = match result {
            Ok(()) => Ok(()),
            Err(e) => Err(self.classify(run_id, *e)),
        };
        // A new key the run reserved but did not record: released, or left for the next sync
        // when the HSM has it.
        if let Some((pending, reached_hsm)) = ctx.unrecorded() {
            match self
                .services
                .keys
                .after_run(ctx.access(), &pending, reached_hsm)
                .await
            {
                Ok(Some(message)) => {
                    ctx.log(&message);
                    if outcome.is_ok() {
                        outcome = Err(WorkflowError::Failed {
                            run_id: run_id.to_string(),
                            message,
                        });
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::error!(run = run_id, "releasing the run's reservation: {e}"),
            }
        }
        // Rotation steps the run did not record: failed, or left for the resumption to adopt
        // the version the HSM made.
        if let Some((run, reached)) = ctx.rotation() {
            let error = outcome.as_ref().err().map(|e| e.to_string());
            if let Err(e) = self
                .services
                .keys
                .after_rotation_run(&ctx.access().account_id, &run, &reached, error.as_deref())
                .await
            {
                tracing::error!(run = run_id, "settling the run's rotation steps: {e}");
            }
        }
        let mut output = output;
        if let (Value::Object(o), Some(p)) = (&mut output, self.progress(run_id))
            && !p.is_empty()
        {
            o.entry("progress").or_insert(json!(p));
        }
        match &outcome {
            Ok(()) => tracing::info!(run = run_id, "workflow run succeeded"),
            Err(e) => {
                ctx.log(&format!("failed: {e}"));
                tracing::warn!(run = run_id, "workflow run failed: {e}");
            }
        }
        let error = outcome.as_ref().err().map(|e| e.to_string());
        let status = if outcome.is_ok() {
            "succeeded"
        } else {
            "failed"
        };
        let mut tx = self.services.catalog.begin().await?;
        workflow_runs::finish(
            &mut tx,
            run_id,
            status,
            &ctx.log_json(),
            Some(&output),
            error.as_deref(),
            self.services.clock.now(),
        )
        .await?;
        tx.commit().await?;
        outcome.map(|()| RunOutcome {
            run_id: run_id.to_string(),
            output,
            recorded: ctx.recorded(),
        })
    }

    fn classify(&self, run_id: &str, e: EvalAltResult) -> WorkflowError {
        let run_id = run_id.to_string();
        match e {
            EvalAltResult::ErrorTerminated(v, _)
                if v.clone().into_string().is_ok_and(|s| s == MEMORY_LIMIT) =>
            {
                WorkflowError::OutOfMemory {
                    run_id,
                    limit_mib: (self.limits.max_memory >> 20) as u64,
                }
            }
            EvalAltResult::ErrorTerminated(v, _)
                if v.clone().into_string().is_ok_and(|s| s == LEASE_LOST) =>
            {
                WorkflowError::LeaseLost { run_id }
            }
            EvalAltResult::ErrorTerminated(..) => WorkflowError::TimedOut {
                run_id,
                secs: self.limits.timeout.as_secs(),
            },
            EvalAltResult::ErrorTooManyOperations(..) => WorkflowError::TooManyOperations {
                run_id,
                limit: self.limits.max_operations,
            },
            EvalAltResult::ErrorRuntime(value, pos) => match HostError::from_dynamic(&value) {
                Some(error) => WorkflowError::Host { run_id, error },
                None => WorkflowError::Failed {
                    run_id,
                    message: format!("{} ({pos})", values::describe(&value)),
                },
            },
            EvalAltResult::ErrorInFunctionCall(_, _, inner, _)
            | EvalAltResult::ErrorInModule(_, inner, _) => self.classify(&run_id, *inner),
            other => WorkflowError::Failed {
                run_id,
                message: other.to_string(),
            },
        }
    }
}
