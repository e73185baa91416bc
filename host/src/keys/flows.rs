//! The key service's port to the engine that runs its HSM flows as workflow scripts.
//!
//! The key service decides a flow (what to create, change or rotate, checked against the
//! rules and policies), hands the engine a [`FlowRequest`] holding that typed plan
//! (`Pending`), and records what the run reports back through its own functions. The engine
//! (`workflows`) sits above the key service and implements [`FlowRunner`]; the key service
//! holds it weakly, since the engine holds the key service in turn. Every HSM flow starts
//! through `KeyService::launch`, the one place a busy key is turned into a refusal.
//!
//! Here too are the typed plans a run acts on ([`Pending`]: a reserved new key, a decided
//! change, the steps of a rotation), the scope a run acts in ([`RunScope`]) and the outcome
//! of a linked copy's rotation ([`CopyOutcome`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Access;
use crate::catalog::groups::Group;
use crate::catalog::rotation::{RotationPolicy, StepKind};
use crate::catalog::sobjects::{Patch, SObject};
use crate::crypto::Material;
use crate::kms::Link;
use crate::plugins::kms::RemoteKey;

use super::build::key_input;

/// What asked for a run (recorded with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Trigger {
    /// A request to the API.
    #[default]
    Api,
    /// The scheduler: a rotation policy, a cron job, or a rotation resumed after a crash.
    Schedule,
    /// A webhook delivery.
    Webhook,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Api => "api",
            Trigger::Schedule => "schedule",
            Trigger::Webhook => "webhook",
        }
    }
}

/// One HSM flow for the engine to run: the script, who it acts for, the group and link it
/// works on, the typed plan its host functions act on and record.
pub struct FlowRequest {
    pub workflow: String,
    pub trigger: Trigger,
    /// Who the run acts for: every change the script makes is checked against it.
    pub access: Access,
    pub group: Arc<Group>,
    pub link: Link,
    /// The script's `input` (recorded with the run; never put secrets here).
    pub input: Value,
    /// Key material the script passes on (as `input.material`) but cannot read.
    pub material: Option<FlowMaterial>,
    /// What the key service decided, for the script to record.
    pub pending: Option<Pending>,
    /// Runs with the same key never overlap: a second one is refused.
    pub exclusive: Option<String>,
    /// The run's id, when the key service needs it before the run starts (a reservation).
    pub run_id: Option<String>,
}

/// Key material for a run, and whether it may leave as a plain JWK (material the caller
/// brought, or a key that permits EXPORT; see `tiers`): the scripts' host functions refuse a
/// plain import of material that may not.
#[derive(Clone)]
pub struct FlowMaterial {
    pub material: Material,
    pub plain_ok: bool,
}

/// How a flow's run ended.
#[derive(Debug, Clone)]
pub struct FlowOutcome {
    pub run_id: String,
    pub output: Value,
    /// The key the run recorded (`keys::record`, `keys::save`).
    pub recorded: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum FlowError {
    /// Another run holds the key.
    #[error("workflow run {run_id} of the same kind is still running")]
    Busy { run_id: String },
    /// The run ended without recording what it was for.
    #[error("workflow run {run_id} failed: {message}")]
    Unrecorded { run_id: String, message: String },
    /// The engine's own failure, typed by the engine (layers above it read it back as its
    /// type).
    #[error(transparent)]
    Run(Box<dyn std::error::Error + Send + Sync>),
}

/// The engine that runs flows (implemented by `workflows::Workflows`).
pub trait FlowRunner: Send + Sync {
    fn run_flow(
        self: Arc<Self>,
        req: FlowRequest,
    ) -> Pin<Box<dyn Future<Output = std::result::Result<FlowOutcome, FlowError>> + Send>>;
}

/// What a workflow run acts with: who started it, for which group and link.
#[derive(Clone, Copy)]
pub struct RunScope<'a> {
    pub access: &'a Access,
    pub run_id: &'a str,
    pub group: &'a Group,
    pub link: &'a Link,
}

/// What the caller of a run validated and left for its script to record.
#[derive(Debug, Clone)]
pub enum Pending {
    New(PendingNew),
    Change(PendingChange),
    /// New versions of virtual keys (rotations), each with its step.
    Rotation(RotationRun),
    /// One key's flow (soft delete, recover, restore, purge, delete): the run acts on that
    /// key alone.
    Key(KeyTarget),
}

/// The key a key flow is for.
#[derive(Debug, Clone)]
pub struct KeyTarget {
    pub kid: String,
    pub hsm_name: String,
}

/// What a run may act on: the keys its plan names (by id and by HSM name), or, for a run
/// without a plan (a sync, a script run by hand), the keys of its group.
#[derive(Debug, Clone, Default)]
pub struct RunTargets {
    /// `None`: the group's keys.
    pub kids: Option<Vec<String>>,
    /// HSM names, lowercased.
    pub names: Option<Vec<String>>,
}

impl RunTargets {
    pub fn of(pending: Option<&Pending>) -> RunTargets {
        let (kids, names): (Vec<String>, Vec<&str>) = match pending {
            None => return RunTargets::default(),
            Some(Pending::New(p)) => (vec![p.object.kid.clone()], vec![p.hsm_name()]),
            Some(Pending::Change(p)) => (vec![p.kid.clone()], vec![p.hsm_name.as_str()]),
            Some(Pending::Key(k)) => (vec![k.kid.clone()], vec![k.hsm_name.as_str()]),
            Some(Pending::Rotation(r)) => (
                r.steps.iter().map(|s| s.kid.clone()).collect(),
                r.steps.iter().map(|s| s.hsm_name.as_str()).collect(),
            ),
        };
        RunTargets {
            kids: Some(kids),
            names: Some(names.into_iter().map(str::to_lowercase).collect()),
        }
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.kids
            .as_ref()
            .is_none_or(|k| k.iter().any(|x| x == kid))
    }

    pub fn has_name(&self, name: &str) -> bool {
        let name = name.to_lowercase();
        self.names.as_ref().is_none_or(|n| n.contains(&name))
    }
}

/// A new virtual key, reserved (state `Creating`), to be completed by `keys::record`.
#[derive(Debug, Clone)]
pub struct PendingNew {
    pub object: SObject,
    pub audit_action: String,
    pub audit_details: Value,
    /// The key this one copies: the link is stored with it.
    pub copy_of: Option<String>,
}

impl PendingNew {
    /// The reserved name in the HSM.
    pub fn hsm_name(&self) -> &str {
        self.object.external_name().unwrap_or_default()
    }
}

/// A change of a virtual key, to be saved by `keys::save` once the HSM made it.
#[derive(Debug, Clone)]
pub struct PendingChange {
    pub kid: String,
    /// Its name in the HSM.
    pub hsm_name: String,
    pub patch: Patch,
    pub audit_action: String,
    pub audit_details: Value,
}

/// How a linked copy's rotation went.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CopyOutcome {
    /// The copy that was to rotate.
    pub kid: String,
    pub group_id: String,
    /// Its replacement, holding the new version.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_kid: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One virtual key a rotation run gives a new version: what the key service decided before
/// the run, for the run's host functions to act on and record.
#[derive(Debug, Clone)]
pub struct StepPlan {
    pub step_id: String,
    pub kind: StepKind,
    /// The virtual key and its HSM name.
    pub kid: String,
    pub hsm_name: String,
    /// The HSM version it has now; a different latest version is the new one.
    pub prior_version: Option<String>,
    /// The run takes over after an interrupted one: ask the HSM first.
    pub resume: bool,
    /// The virtual key the new version becomes (its id, attributes and operations).
    pub successor: SObject,
    pub deactivate_old: bool,
    /// The catalog key the material comes from (copies, F26).
    pub source_kid: Option<String>,
    /// The rotation policy the request sets (`Some(None)`: removes) on the new version;
    /// unset, the replaced key's moves over. Not kept across a resumption: an interrupted
    /// rekey answered its caller with an error, and the key keeps the policy it had.
    pub rotation_policy: Option<Option<RotationPolicy>>,
}

impl StepPlan {
    /// What the script sees of it (`input.copies[i]`, `input.key`).
    pub fn input(&self) -> Value {
        json!({
            "kid": self.kid, "azure_name": self.hsm_name, "prior_version": self.prior_version,
            "resume": self.resume, "key": key_input(&self.successor),
        })
    }
}

/// The steps a rotation run is for (`Pending::Rotation`).
#[derive(Debug, Clone)]
pub struct RotationRun {
    pub worker: String,
    pub steps: Vec<StepPlan>,
}

impl RotationRun {
    pub fn plan_for(&self, hsm_name: &str) -> Option<&StepPlan> {
        self.steps
            .iter()
            .find(|s| s.hsm_name.eq_ignore_ascii_case(hsm_name))
    }
}

/// A version the HSM made for one step of a run, for `record_versions`.
pub struct MadeVersion<'a> {
    pub plan: &'a StepPlan,
    pub remote: &'a RemoteKey,
    pub backup: Option<&'a [u8]>,
}
