//! The host functions of rotation runs (`rotate`, `rotate_to_keyward`, `rotate_copies`):
//! `keys::record_rotation` records the new HSM version of the run's key, and the bulk
//! `keys::rotate_copies` gives every linked copy of the run its new version. Both act on the
//! steps the key service planned for the run (never on keys the script names), and record
//! through the key service.

use std::sync::Arc;

use rhai::{Dynamic, Map};
use serde_json::json;

use crate::keys::{MadeVersion, Pending, RotationRun, StepPlan};
use crate::kms::{KmsError, Link};
use crate::plugins::kms::{ImportRequest, KeyMaterial, RemoteKey};

use super::{Backup, HostError, HostErrorKind, RhaiResult, RunContext, invalid};
use crate::workflows::values::from_json;

impl RunContext {
    fn rotation_run(&self) -> RhaiResult<RotationRun> {
        match &*self.pending.lock().unwrap() {
            Some(Pending::Rotation(r)) => Ok(r.clone()),
            _ => Err(invalid("this run rotates no key")),
        }
    }
}

/// `keys::record_rotation(remote, backup)`: the run's one key got the new version `remote`.
pub fn record_rotation(
    c: &RunContext,
    remote: &Map,
    backup: Option<&Backup>,
) -> RhaiResult<String> {
    let remote = c.remembered(remote)?;
    let run = c.rotation_run()?;
    let plan = run
        .plan_for(&remote.name)
        .ok_or_else(|| invalid(format!("this run does not rotate '{}'", remote.name)))?;
    let kid = c.keys(c.services.keys.record_version(
        c.scope()?,
        plan,
        &run.worker,
        &remote,
        backup.map(|b| b.blob.as_slice()),
    ))?;
    *c.recorded.lock().unwrap() = Some(kid.clone());
    c.log(&format!(
        "recorded version {} of {} as key {kid}",
        remote.version, remote.name
    ));
    Ok(kid)
}

/// What became of one copy in the HSM.
enum CopyResult {
    /// The HSM has the version (made now, or before an interruption) and its backup.
    Made(Box<RemoteKey>, Option<Vec<u8>>),
    Failed {
        error: KmsError,
        reached: bool,
    },
}

/// Versions recorded in one catalog transaction at most, so a commit stays short.
const RECORD_BATCH: usize = 64;

/// `keys::rotate_copies(blob)` (or `(material)` in a Standard vault, where material goes as a
/// plain JWK): every copy of the run gets it as a new version of its HSM key, with bounded
/// concurrency; each is recorded as soon as the HSM has it. A copy that resumes an
/// interrupted rotation is first looked up: a version the HSM already made is adopted, not
/// made again. Returns `#{rotated, failed}`; failures do not stop the others.
pub fn rotate_copies(c: &Arc<RunContext>, material: KeyMaterial) -> RhaiResult<Map> {
    let run = c.rotation_run()?;
    let link = c.link()?.clone();
    let slots = Arc::new(tokio::sync::Semaphore::new(c.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    {
        let _guard = c.rt.enter();
        // The tasks are the daemon's work (other threads free them), not the script's memory.
        let _uncounted = crate::workflows::memory::Paused::new();
        for plan in run.steps.iter().cloned() {
            let (kms, link, slots, material) = (
                c.services.kms.clone(),
                link.clone(),
                slots.clone(),
                material.clone(),
            );
            tasks.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("never closed");
                let r = rotate_one(&kms, &link, &plan, &material).await;
                (plan, r)
            });
        }
    }
    let mut rotated = Vec::new();
    let mut failed = Vec::new();
    c.block(async {
        while let Some(first) = tasks.join_next().await {
            // The copies that finished meanwhile are recorded with it, in one commit: the
            // HSM makes versions faster than a commit per version could record them.
            let mut done = vec![first];
            while done.len() < RECORD_BATCH
                && let Some(more) = tasks.try_join_next()
            {
                done.push(more);
            }
            let mut made = Vec::new();
            for joined in done {
                let (plan, result) = joined.expect("rotation task does not panic");
                match result {
                    CopyResult::Made(remote, backup) => {
                        c.reached_hsm
                            .lock()
                            .unwrap()
                            .insert(plan.hsm_name.to_lowercase());
                        made.push((plan, *remote, backup));
                    }
                    CopyResult::Failed { error, reached } => {
                        if reached {
                            c.reached_hsm
                                .lock()
                                .unwrap()
                                .insert(plan.hsm_name.to_lowercase());
                        }
                        c.progress.add("failed", 1);
                        failed.push(json!({"kid": plan.kid, "error": HostError::from(error)}));
                    }
                }
            }
            if made.is_empty() {
                continue;
            }
            let batch: Vec<MadeVersion> = made
                .iter()
                .map(|(plan, remote, backup)| MadeVersion {
                    plan,
                    remote,
                    backup: backup.as_deref(),
                })
                .collect();
            let recorded = match c.scope() {
                Ok(scope) => c
                    .services
                    .keys
                    .record_versions(scope, &run.worker, &batch)
                    .await
                    .map_err(HostError::from),
                Err(_) => Err(HostError::new(
                    HostErrorKind::Invalid,
                    "this run has no linked group",
                )),
            };
            let each: Vec<Result<String, HostError>> = match recorded {
                Ok(results) => results
                    .into_iter()
                    .map(|r| r.map_err(HostError::from))
                    .collect(),
                Err(e) => vec![Err(e); made.len()],
            };
            for ((plan, remote, _), r) in made.iter().zip(each) {
                match r {
                    Ok(kid) => {
                        c.progress.add("rotated", 1);
                        rotated.push(
                            json!({"kid": plan.kid, "new_kid": kid, "version": remote.version}),
                        );
                    }
                    Err(e) => {
                        c.progress.add("failed", 1);
                        failed.push(json!({"kid": plan.kid, "error": e}));
                    }
                }
            }
        }
    })?;
    c.log(&format!(
        "rotated {} linked copies ({} failed)",
        rotated.len(),
        failed.len()
    ));
    let mut out = Map::new();
    out.insert(
        "rotated".into(),
        Dynamic::from_array(rotated.iter().map(from_json).collect()),
    );
    out.insert(
        "failed".into(),
        Dynamic::from_array(failed.iter().map(from_json).collect()),
    );
    Ok(out)
}

async fn rotate_one(
    kms: &crate::kms::Kms,
    link: &Link,
    plan: &StepPlan,
    material: &KeyMaterial,
) -> CopyResult {
    let existing = if plan.resume {
        match kms.find_key(link, &plan.hsm_name).await {
            Ok(Some(k)) if plan.prior_version.as_deref() != Some(k.version.as_str()) => Some(k),
            Ok(_) => None,
            Err(error) => {
                return CopyResult::Failed {
                    error,
                    reached: false,
                };
            }
        }
    } else {
        None
    };
    let remote = match existing {
        Some(k) => k,
        None => match kms
            .import_key(link, &import_request(link, plan, material))
            .await
        {
            Ok(k) => k,
            Err(error) => {
                return CopyResult::Failed {
                    error,
                    reached: false,
                };
            }
        },
    };
    // The version exists now: record it even if its backup fails (the next escrow refresh
    // of the key takes it then).
    let backup = match kms.backup_key(link, &plan.hsm_name).await {
        Ok(b) => Some(b),
        Err(e) => {
            tracing::warn!(key = %plan.hsm_name, "backing up the rotated copy: {e}");
            None
        }
    };
    CopyResult::Made(Box::new(remote), backup)
}

/// The import of a copy's new version, with the attributes of the key it becomes.
fn import_request(link: &Link, plan: &StepPlan, material: &KeyMaterial) -> ImportRequest {
    let a = crate::keys::remote_attributes(&plan.successor);
    ImportRequest {
        name: plan.hsm_name.clone(),
        material: material.clone(),
        ops: a.ops,
        enabled: a.enabled,
        not_before: a.not_before,
        expires: a.expires,
        tags: a.tags,
        hsm: super::hsm::hsm_protected(link),
    }
}
