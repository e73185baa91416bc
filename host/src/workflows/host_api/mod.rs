//! What a workflow script can do, and nothing more. Functions are grouped in modules:
//!
//! - `hsm::*` (`hsm`): calls to the group's external key manager through its connector
//!   plugin (`instances`, `check`, `list_keys`, `list_deleted`, `get_key`, `find_key`,
//!   `find_deleted`, `create_key`, `create_kek`, `import_key`, `update_key`, `rotate_key`,
//!   `delete_key`, `recover_key`, `purge_key`, `backup_key`, `restore_key`); every call that changes the
//!   HSM is journaled before and audited after. `byok::wrap`: a BYOK transfer blob of a key
//!   for a key-exchange key.
//! - `keys::*` (`keys`): the group's virtual keys, through the key service (`linked`,
//!   `adopt` and `adopt_listed` (bulk), `record`, `save`, `get`, `set_remote_state`,
//!   `refresh`, `escrow`, `put_escrow`, `remove`, `reconcile`, and for rotation runs
//!   (`rotation`) `record_rotation` and the bulk `rotate_copies`). Scripts write nothing the
//!   key service does not check: the same rules hold as through the API.
//! - `policy::check`, `audit::record`, and the globals `log`, `progress` and `now` (here).
//! - `shapes`: the maps scripts see, and parsing what they pass.
//!
//! Host functions block on the daemon's runtime (scripts run on a blocking thread) and never
//! past the run's deadline. Their errors reach the script as catchable maps
//! `#{kind, code, message, status}`.

mod approval;
mod error;
mod hsm;
mod keys;
mod rotation;
mod shapes;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rhai::{Dynamic, Engine, EvalAltResult, ImmutableString, Map, Module, Position};
use serde_json::{Value, json};

use crate::audit::Event;
use crate::auth::Access;
use crate::catalog::CatalogError;
use crate::catalog::groups::Group;
use crate::keys::{KeyError, Pending, PendingNew, RotationRun, RunScope, RunTargets};
use crate::kms::{KmsError, Link};
use crate::plugins::kms::RemoteKey;
use crate::time::format_dsm;

pub use super::values::Secret;
use super::values::{from_json, to_json};
use super::{Progress, RunRequest, Services};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// A provider backup (all versions of a key), opaque to scripts, with the HSM name of the
/// key it holds (a restore acts on that key).
#[derive(Clone)]
pub struct Backup {
    blob: Arc<Vec<u8>>,
    name: String,
}

/// A BYOK transfer blob made for one key-exchange key.
#[derive(Clone)]
pub struct ByokBlob {
    kek_id: String,
    spec: crate::plugins::kms::KeySpec,
    blob: Arc<Vec<u8>>,
}

impl ByokBlob {
    /// The blob as the connector imports it.
    fn material(&self) -> crate::plugins::kms::KeyMaterial {
        crate::plugins::kms::KeyMaterial::Byok(crate::plugins::kms::ByokBlob {
            kek_id: self.kek_id.clone(),
            spec: self.spec,
            blob: self.blob.to_vec(),
        })
    }
}

pub use error::{HostError, HostErrorKind};

fn invalid(message: impl Into<String>) -> Box<EvalAltResult> {
    HostError::new(HostErrorKind::Invalid, message).throw()
}

/// Everything a run's host functions share.
pub struct RunContext {
    services: Services,
    rt: tokio::runtime::Handle,
    run_id: String,
    access: Access,
    group: Option<Arc<Group>>,
    link: Option<Link>,
    deadline: Instant,
    concurrency: usize,
    pending: Mutex<Option<Pending>>,
    /// What the run may act on, fixed when it starts (the pending plan is taken as it is
    /// recorded).
    targets: RunTargets,
    /// Key-exchange keys this run made (lowercased): it may delete and purge those too.
    keks: Mutex<HashSet<String>>,
    /// The HSM names (lowercased) of the run's reserved key or rotated keys for which the
    /// HSM made a key or version: an unrecorded one is kept for reconciliation rather than
    /// released.
    reached_hsm: Mutex<HashSet<String>>,
    recorded: Mutex<Option<String>>,
    progress: Arc<Progress>,
    log: Mutex<Vec<Value>>,
    /// What the key manager said about keys in this run, by key id: `keys::record` and
    /// `keys::refresh` take the script's map but trust only this.
    remotes: Mutex<HashMap<String, RemoteKey>>,
}

const MAX_LOG_ENTRIES: usize = 2_000;

impl RunContext {
    pub fn new(
        services: Services,
        rt: tokio::runtime::Handle,
        run_id: &str,
        req: &RunRequest,
        deadline: Instant,
        concurrency: usize,
        progress: Arc<Progress>,
    ) -> RunContext {
        RunContext {
            services,
            rt,
            run_id: run_id.to_string(),
            access: req.access.clone(),
            group: req.group.clone(),
            link: req.link.clone(),
            deadline,
            concurrency: concurrency.max(1),
            pending: Mutex::new(req.pending.clone()),
            targets: RunTargets::of(req.pending.as_ref()),
            keks: Mutex::new(HashSet::new()),
            reached_hsm: Mutex::new(HashSet::new()),
            recorded: Mutex::new(None),
            progress,
            log: Mutex::new(Vec::new()),
            remotes: Mutex::new(HashMap::new()),
        }
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn log(&self, message: &str) {
        let mut log = self.log.lock().unwrap();
        if log.len() < MAX_LOG_ENTRIES {
            log.push(json!({"at": format_dsm(self.services.clock.now()), "message": message}));
        } else if log.len() == MAX_LOG_ENTRIES {
            log.push(json!({"at": format_dsm(self.services.clock.now()), "message": "(further entries left out)"}));
        }
        tracing::debug!(run = %self.run_id, "{message}");
    }

    pub fn log_json(&self) -> Value {
        Value::Array(self.log.lock().unwrap().clone())
    }

    pub fn recorded(&self) -> Option<String> {
        self.recorded.lock().unwrap().clone()
    }

    /// The run's new key if it was not recorded, and whether the HSM has it.
    pub fn unrecorded(&self) -> Option<(PendingNew, bool)> {
        match &*self.pending.lock().unwrap() {
            Some(Pending::New(p)) => {
                let reached = self
                    .reached_hsm
                    .lock()
                    .unwrap()
                    .contains(&p.hsm_name().to_lowercase());
                Some((p.clone(), reached))
            }
            _ => None,
        }
    }

    /// The run's rotation steps, and the HSM names it made versions of.
    pub fn rotation(&self) -> Option<(RotationRun, HashSet<String>)> {
        match &*self.pending.lock().unwrap() {
            Some(Pending::Rotation(r)) => {
                Some((r.clone(), self.reached_hsm.lock().unwrap().clone()))
            }
            _ => None,
        }
    }

    /// Runs `fut` on the daemon's runtime, but not past the run's deadline.
    fn block<T>(&self, fut: impl Future<Output = T>) -> RhaiResult<T> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        // The I/O a host call does (connections, buffers that other threads free) is the
        // daemon's, not the script's: the budget counts what the call hands the script.
        super::memory::paused(|| self.rt.block_on(tokio::time::timeout_at(deadline, fut))).map_err(
            |_| {
                Box::new(EvalAltResult::ErrorTerminated(
                    "time limit".into(),
                    Position::NONE,
                ))
            },
        )
    }

    fn link(&self) -> RhaiResult<&Link> {
        self.link
            .as_ref()
            .ok_or_else(|| invalid("this run has no external key manager link"))
    }

    fn group(&self) -> RhaiResult<&Arc<Group>> {
        self.group
            .as_ref()
            .ok_or_else(|| invalid("this run belongs to no group"))
    }

    /// The run as the key service sees it.
    /// A run acts on the keys its plan names (a key flow or a change on its key, a new key's
    /// run on the reserved name, a rotation on its steps' keys) and on the key-exchange keys
    /// it made; a run without a plan on the keys of its group.
    fn check_name(&self, name: &str) -> RhaiResult<()> {
        if self.targets.has_name(name) || self.keks.lock().unwrap().contains(&name.to_lowercase()) {
            return Ok(());
        }
        Err(HostError::new(
            HostErrorKind::Denied,
            format!("this run acts on the keys it was started for, not on '{name}'"),
        )
        .throw())
    }

    /// As [`check_name`](Self::check_name), for a key of the catalog.
    fn check_kid(&self, kid: &str) -> RhaiResult<()> {
        if self.targets.has_kid(kid) {
            return Ok(());
        }
        Err(HostError::new(
            HostErrorKind::Denied,
            format!("this run acts on the keys it was started for, not on {kid}"),
        )
        .throw())
    }

    fn scope(&self) -> RhaiResult<RunScope<'_>> {
        Ok(RunScope {
            access: &self.access,
            run_id: &self.run_id,
            group: self.group()?,
            link: self.link()?,
        })
    }

    /// A connector call; a refusal becomes a catchable error map.
    fn kms<T>(&self, fut: impl Future<Output = Result<T, KmsError>>) -> RhaiResult<T> {
        self.block(fut)?.map_err(|e| HostError::from(e).throw())
    }

    /// A call into the key service; a refusal becomes a catchable error map.
    fn keys<T>(&self, fut: impl Future<Output = Result<T, KeyError>>) -> RhaiResult<T> {
        self.block(fut)?.map_err(|e| HostError::from(e).throw())
    }

    fn remember(&self, k: &RemoteKey) -> Dynamic {
        self.remotes.lock().unwrap().insert(k.id.clone(), k.clone());
        from_json(&shapes::key_json(k))
    }

    /// The key manager's own record of a key map the script passes back.
    fn remembered(&self, key: &Map) -> RhaiResult<RemoteKey> {
        let id = key
            .get("id")
            .map(|d| d.to_string())
            .ok_or_else(|| invalid("pass a key returned by an hsm:: function"))?;
        self.remotes
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| invalid("pass a key returned by an hsm:: function of this run"))
    }
}

/// Registers the opaque types (for every engine, so compiled scripts can name them).
pub fn register_types(engine: &mut Engine) {
    engine
        .register_type_with_name::<Secret>("Secret")
        .register_fn("to_string", |_: &mut Secret| "<secret>".to_string())
        .register_fn("to_debug", |_: &mut Secret| "<secret>".to_string())
        .register_type_with_name::<Backup>("Backup")
        .register_fn("to_string", |_: &mut Backup| "<backup>".to_string())
        .register_fn("to_debug", |_: &mut Backup| "<backup>".to_string())
        .register_type_with_name::<ByokBlob>("ByokBlob")
        .register_fn("to_string", |_: &mut ByokBlob| "<byok blob>".to_string())
        .register_fn("to_debug", |_: &mut ByokBlob| "<byok blob>".to_string());
}

/// Registers the host API of one run.
pub fn register(engine: &mut Engine, ctx: Arc<RunContext>) {
    let c = ctx.clone();
    engine.on_print(move |text| c.log(text));
    let c = ctx.clone();
    engine.on_debug(move |text, _, pos| c.log(&format!("debug ({pos}): {text}")));
    let c = ctx.clone();
    engine.register_fn("log", move |text: ImmutableString| c.log(&text));
    let c = ctx.clone();
    engine.register_fn("progress", move |counters: Map| {
        for (k, v) in counters {
            if let Ok(i) = v.as_int() {
                c.progress.set(&k, i);
            }
        }
    });
    let c = ctx.clone();
    engine.register_fn("now", move || c.services.clock.now());

    engine.register_static_module("hsm", hsm::module(&ctx).into());
    engine.register_static_module("byok", hsm::byok_module().into());
    engine.register_static_module("keys", keys::module(&ctx).into());
    engine.register_static_module("policy", policy_module(&ctx).into());
    engine.register_static_module("audit", audit_module(&ctx).into());
}

fn policy_module(ctx: &Arc<RunContext>) -> Module {
    let mut m = Module::new();
    let c = ctx.clone();
    m.set_native_fn(
        "check",
        move |action: ImmutableString, kid: ImmutableString| {
            use crate::plugins::policy::{Action, PolicyRequest};
            let scope = c.scope()?;
            let o = c.keys(c.services.keys.in_group(scope, &kid))?;
            let group = c.group()?.clone();
            let action = match action.as_str() {
                "create" => Action::Create,
                "import" => Action::Import,
                "copy" => Action::Copy,
                "rotate" => Action::Rotate,
                "update" => Action::Update,
                other => {
                    return Err(invalid(format!(
                        "'{other}' is not a policy action (create, import, copy, rotate, update)"
                    )));
                }
            };
            let now = c.services.clock.now();
            let verdict = c.block(async {
                let mut conn = c.services.catalog.conn().await?;
                let account = crate::catalog::accounts::get(&mut conn, &c.access.account_id)
                    .await?
                    .ok_or_else(|| CatalogError::Corrupt("the run's account vanished".into()))?;
                drop(conn);
                let request = PolicyRequest {
                    action,
                    principal: crate::policy::principal(&c.access.principal),
                    account: c.access.account_id.clone(),
                    group: group.id.clone(),
                    key: crate::policy::attributes(&o, now),
                    current: None,
                    now,
                };
                Ok::<_, CatalogError>(
                    crate::policy::check(&c.services.plugins, &account, &group, &request).await,
                )
            })?;
            let verdict = verdict
                .map_err(|e| HostError::from(e).throw())?
                .map_err(|e| HostError::new(HostErrorKind::Unavailable, e.to_string()).throw())?;
            Ok(from_json(&json!({
                "allowed": verdict.allowed(),
                "violations": verdict.violations,
                "warnings": verdict.warnings,
            })))
        },
    );
    m
}

fn audit_module(ctx: &Arc<RunContext>) -> Module {
    let mut m = Module::new();
    let c = ctx.clone();
    m.set_native_fn("record", move |action: ImmutableString, details: Map| {
        // Script events are namespaced so they cannot pass for the daemon's own.
        let e = Event::new(
            Some(&c.access.account_id),
            &c.access.principal,
            &format!("workflow.{action}"),
            c.services.clock.now(),
        )
        .details(
            json!({"workflow_run": c.run_id, "details": to_json(&Dynamic::from_map(details))}),
        );
        c.rt.block_on(c.services.audit.later(e));
        Ok(())
    });
    m
}
