//! Rotations that give virtual keys a new version in their HSM, run as workflow scripts:
//!
//! - `rotate` (FLOWS F23): the HSM makes the new version;
//! - `rotate_to_keyward` (F26): the new version holds a catalog key's material;
//! - `rotate_copies` (F24): the linked copies of a rotated catalog key, all those in one HSM
//!   in one run, each getting the new material as a new version.
//!
//! Here: the planning (rules and policies, per copy) and the runs. Each virtual key that is
//! to get a version has a step (`catalog::rotation`) written before any HSM call and leased
//! to this daemon. The script's run may create versions only of its steps' keys;
//! `keys::record_rotation` (or the bulk `keys::rotate_copies`) records each new version
//! (`rotate_record`) and finishes the step in the same transaction. A step its run did not
//! settle is failed or left for the resumption (`rotate_resume`): a crash never leaves a
//! version unrecorded, nor makes two.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use crate::auth::Access;
use crate::catalog::approvals::Protected;
use crate::catalog::new_id;
use crate::catalog::rotation::{self, CopySelection, Step, StepKind, StepStatus};
use crate::catalog::sobjects::{self, KeyOp, LinkKind, Origin, SObject};
use crate::plugins::policy::Action;

use super::access::may_manage;
use super::build::{copy_successor, rotate_from_size, successor};
use super::error::{KeyError, Result};
use super::flows::{CopyOutcome, Pending, RotationRun, StepPlan};
use super::flows::{FlowMaterial, FlowRequest, Trigger};
use super::hsm::{ensure_live, exclusive_key, vault_type};
use super::rotate::{MAX_HSM_VERSIONS, RekeySpec, Rekeyed};
use super::rules::{copy_ops, copyable};
use super::tiers;
use super::{KeyService, creator, open_material};

/// A linked copy that rotates along with its source, and the virtual key its new version
/// becomes.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    pub copy: SObject,
    pub successor: SObject,
}

/// Copies whose rotation is planned (checked against the rules and policies) at once.
const PLANNED_AT_ONCE: usize = 8;

impl KeyService {
    /// The linked copies of `current` that rotate with it: every current copy in a linked
    /// group (`all_external`) or the selected ones. A copy that cannot rotate (its HSM key is
    /// soft-deleted, at its version limit, its group's policy refuses) is reported, not fatal.
    pub(super) async fn copy_plans(
        &self,
        access: &Access,
        current: &SObject,
        new: &SObject,
        selection: Option<&CopySelection>,
    ) -> Result<(Vec<CopyPlan>, Vec<CopyOutcome>)> {
        let Some(selection) = selection else {
            return Ok((vec![], vec![]));
        };
        let mut conn = self.catalog().conn().await?;
        let mut linked = Vec::new();
        for l in sobjects::links_of(&mut conn, &current.kid).await? {
            if l.kind != LinkKind::Copy || l.source != current.kid {
                continue;
            }
            if let Some(o) = sobjects::get(&mut conn, &access.account_id, &l.target).await?
                && o.is_virtual()
                && o.rotated_at.is_none()
            {
                linked.push(o);
            }
        }
        drop(conn);
        let chosen: Vec<SObject> = match selection {
            CopySelection::AllExternal => linked,
            CopySelection::Select(kids) => {
                let mut out = Vec::new();
                for kid in kids {
                    let o = linked.iter().find(|o| &o.kid == kid).ok_or_else(|| {
                        KeyError::invalid(
                            "rotate_copied_keys",
                            format!("{kid} is not a linked copy of this key in a group linked to an external key manager"),
                        )
                    })?;
                    out.push(o.clone());
                }
                out
            }
        };
        let now = self.now();
        // Each plan asks the policy plugins; a few at a time keep a rotation of a thousand
        // copies from waiting on them one by one.
        let slots = Arc::new(tokio::sync::Semaphore::new(PLANNED_AT_ONCE));
        let mut planning = tokio::task::JoinSet::new();
        for (i, copy) in chosen.into_iter().enumerate() {
            let (this, access, new, slots) =
                (self.clone(), access.clone(), new.clone(), slots.clone());
            planning.spawn(async move {
                let _slot = slots.acquire_owned().await.expect("never closed");
                let planned = this.copy_plan(&access, &copy, &new, now).await;
                (i, copy, planned)
            });
        }
        let mut done = planning.join_all().await;
        done.sort_by_key(|(i, ..)| *i);
        let (mut plans, mut refused) = (Vec::new(), Vec::new());
        for (_, copy, planned) in done {
            match planned {
                Ok(p) => plans.push(p),
                Err(e) => refused.push(CopyOutcome {
                    kid: copy.kid,
                    group_id: copy.group_id,
                    new_kid: None,
                    error: Some(e.to_string()),
                }),
            }
        }
        Ok((plans, refused))
    }

    async fn copy_plan(
        &self,
        access: &Access,
        copy: &SObject,
        source: &SObject,
        now: i64,
    ) -> Result<CopyPlan> {
        may_manage(access, copy)?;
        ensure_live(copy)?;
        self.version_room(copy).await?;
        let next = copy_successor(access, copy, source, now)?;
        let group = self.group(&access.account_id, &copy.group_id).await?;
        // A copy in a group of its own quorum rotates along only as an approved rotation.
        super::access::approved(access, &group, Some(Protected::RotateSobjects))?;
        tiers::check_transfer(vault_type(&group), Some(source))?;
        self.enforce(
            access,
            &group,
            Action::Rotate,
            "key.rotate",
            &next,
            Some(copy),
        )
        .await?;
        Ok(CopyPlan {
            copy: copy.clone(),
            successor: next,
        })
    }

    /// Refuses a new version of a key that has all the versions Managed HSM allows.
    async fn version_room(&self, o: &SObject) -> Result<()> {
        let name = o.external_name().unwrap_or_default();
        let mut conn = self.catalog().conn().await?;
        let n = sobjects::version_count(&mut conn, &o.group_id, name).await?;
        if n >= MAX_HSM_VERSIONS {
            return Err(KeyError::state(format!(
                "the HSM key '{name}' has {n} versions, the most Managed HSM allows; create a new key instead of rotating this one"
            )));
        }
        Ok(())
    }

    /// A virtual key gets a new version: made by the HSM (F23) or holding a catalog key's
    /// material (F26, `rotate_from`).
    pub(super) async fn rekey_virtual(
        &self,
        access: &Access,
        current: SObject,
        spec: RekeySpec,
    ) -> Result<Rekeyed> {
        ensure_live(&current)?;
        self.version_room(&current).await?;
        let now = self.now();
        let mut next = successor(access, &current, &spec.change, now)?;
        next.origin = Origin::External;
        let (kind, material) = match &spec.rotate_from {
            None => (StepKind::Native, None),
            Some(from) => {
                let source = self.resolve(access, from).await?;
                may_manage(access, &source)?;
                copyable(&source, now)?;
                next.key_size = rotate_from_size(&current, &source)?;
                next.key_ops = match spec.change.key_ops {
                    Some(_) => copy_ops(&source, Some(next.key_ops.clone()))?,
                    None => next
                        .key_ops
                        .iter()
                        .filter(|op| source.key_ops.contains(*op))
                        .collect(),
                };
                next.never_exportable =
                    source.never_exportable || !next.key_ops.contains(KeyOp::Export);
                let source_group = self.group(&access.account_id, &source.group_id).await?;
                self.enforce(
                    access,
                    &source_group,
                    Action::Copy,
                    "key.copy",
                    &source,
                    None,
                )
                .await?;
                let target_group = self.group(&access.account_id, &current.group_id).await?;
                tiers::check_transfer(vault_type(&target_group), Some(&source))?;
                let m = open_material(self.catalog(), &source)?
                    .ok_or_else(|| KeyError::state("the source key has no material"))?;
                let m = FlowMaterial {
                    material: m,
                    plain_ok: tiers::plain_allowed(Some(&source)),
                };
                (StepKind::Keyward, Some((source.kid.clone(), m)))
            }
        };
        let group = self.group(&access.account_id, &current.group_id).await?;
        let verdict = self
            .enforce(
                access,
                &group,
                Action::Rotate,
                "key.rotate",
                &next,
                Some(&current),
            )
            .await?;
        let step = Step {
            id: new_id(),
            account_id: access.account_id.clone(),
            kind,
            target_kid: current.kid.clone(),
            group_id: current.group_id.clone(),
            source_kid: material.as_ref().map(|(k, _)| k.clone()),
            prior_version: current.external.as_ref().and_then(|e| e.id.version.clone()),
            deactivate_old: spec.deactivate_rotated_key,
            owner: creator(&access.principal),
            worker: self.inner.lease.worker.clone(),
            lease_until: self.lease_until(),
            status: StepStatus::Pending,
            new_kid: None,
            error: None,
            created_at: now,
            updated_at: now,
        };
        let mut tx = self.catalog().begin().await?;
        rotation::insert_step(&mut tx, &step).await.map_err(|e| {
            if e.is_unique_violation() {
                KeyError::state("another rotation of this key is in progress")
            } else {
                e.into()
            }
        })?;
        tx.commit().await?;
        // The policy in the request is stored with the new version, in the transaction that
        // records it: a rotation that fails changes nothing.
        let mut plan = self.plan_of(&step, &current, next, false);
        plan.rotation_policy = spec.rotation_policy.clone();
        let outcome = self
            .run_steps(
                access,
                &current.group_id,
                vec![plan],
                material.map(|(_, m)| m),
                spec.trigger,
            )
            .await;
        let settled = self.step_outcome(&step.id, &current).await?;
        match (settled.new_kid, outcome) {
            (Some(kid), _) => {
                let mut key = self.view(access, &kid).await?;
                key.warnings = verdict.warnings;
                Ok(Rekeyed {
                    key,
                    replaced: current.kid,
                    copies: vec![],
                })
            }
            (None, Err(e)) => Err(e),
            (None, Ok(())) => {
                Err(KeyError::Internal(settled.error.unwrap_or_else(|| {
                    "the rotation run did not record the new version".into()
                })))
            }
        }
    }

    /// The plan of a step for a run.
    pub(super) fn plan_of(
        &self,
        step: &Step,
        target: &SObject,
        successor: SObject,
        resume: bool,
    ) -> StepPlan {
        StepPlan {
            step_id: step.id.clone(),
            kind: step.kind,
            kid: target.kid.clone(),
            hsm_name: target.external_name().unwrap_or_default().to_string(),
            prior_version: step.prior_version.clone(),
            resume,
            successor,
            deactivate_old: step.deactivate_old,
            source_kid: step.source_kid.clone(),
            rotation_policy: None,
        }
    }

    /// Runs the copy steps of a rotated source, one run per HSM, at the same time, and says
    /// how each copy went.
    pub(super) async fn run_copy_steps(
        &self,
        access: &Access,
        material: &FlowMaterial,
        plans: Vec<CopyPlan>,
        steps: Vec<Step>,
        resume: bool,
        trigger: Trigger,
    ) -> Vec<CopyOutcome> {
        let mut by_group: BTreeMap<String, Vec<StepPlan>> = BTreeMap::new();
        for (plan, step) in plans.into_iter().zip(&steps) {
            let p = self.plan_of(step, &plan.copy, plan.successor, resume);
            by_group
                .entry(plan.copy.group_id.clone())
                .or_default()
                .push(p);
        }
        let mut runs = tokio::task::JoinSet::new();
        for (group, plans) in by_group {
            let (this, access, m) = (self.clone(), access.clone(), material.clone());
            runs.spawn(async move {
                if let Err(e) = this
                    .run_steps(&access, &group, plans, Some(m), trigger)
                    .await
                {
                    tracing::warn!(group, "rotating linked copies: {e}");
                }
            });
        }
        while runs.join_next().await.is_some() {}
        let mut out = Vec::new();
        let mut conn = match self.catalog().conn().await {
            Ok(c) => c,
            Err(e) => {
                return steps
                    .iter()
                    .map(|s| CopyOutcome {
                        kid: s.target_kid.clone(),
                        group_id: s.group_id.clone(),
                        new_kid: None,
                        error: Some(e.to_string()),
                    })
                    .collect();
            }
        };
        for s in &steps {
            let now = rotation::step(&mut conn, &s.id).await.ok().flatten();
            out.push(copy_outcome(s, now.as_ref()));
        }
        out
    }

    /// How a step ended, for the caller of a single-step rotation.
    async fn step_outcome(&self, step_id: &str, target: &SObject) -> Result<CopyOutcome> {
        let mut conn = self.catalog().conn().await?;
        let s = rotation::step(&mut conn, step_id).await?;
        Ok(match &s {
            Some(s) => copy_outcome(s, Some(s)),
            None => CopyOutcome {
                kid: target.kid.clone(),
                group_id: target.group_id.clone(),
                new_kid: None,
                error: Some("the rotation step is gone".into()),
            },
        })
    }

    /// One run of a rotation script for steps of one group, holding their keys.
    pub(super) async fn run_steps(
        &self,
        access: &Access,
        group_id: &str,
        plans: Vec<StepPlan>,
        material: Option<FlowMaterial>,
        trigger: Trigger,
    ) -> Result<()> {
        let group = self.group(&access.account_id, group_id).await?;
        let link = self.link_for(&group)?;
        let kind = plans[0].kind;
        let (workflow, input) = match kind {
            StepKind::Copy => (
                "rotate_copies",
                json!({
                    "source": plans[0].source_kid,
                    "copies": plans.iter().map(StepPlan::input).collect::<Vec<_>>(),
                }),
            ),
            StepKind::Native | StepKind::Keyward => {
                let mut v = plans[0].input();
                v["source"] = json!(plans[0].source_kid);
                (
                    if kind == StepKind::Native {
                        "rotate"
                    } else {
                        "rotate_to_keyward"
                    },
                    v,
                )
            }
        };
        let exclusive = (plans.len() == 1).then(|| exclusive_key(&plans[0].kid));
        let run = super::rotate_hsm::RotationRun {
            worker: self.inner.lease.worker.clone(),
            steps: plans,
        };
        let renew = self.keep_leased(run.steps.iter().map(|s| s.step_id.clone()).collect());
        let result = self
            .launch(FlowRequest {
                workflow: workflow.into(),
                trigger,
                access: access.clone(),
                group,
                link,
                input,
                material,
                pending: Some(Pending::Rotation(run)),
                exclusive,
                run_id: None,
            })
            .await;
        renew.abort();
        result.map(|_| ())
    }

    /// Renews the leases of steps while their run works on them (a rotation of many copies
    /// can outlast one lease).
    pub(super) fn keep_leased(&self, ids: Vec<String>) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let every = std::time::Duration::from_secs((this.inner.lease.secs / 3).max(1) as u64);
            loop {
                tokio::time::sleep(every).await;
                let until = this.lease_until();
                let worker = this.inner.lease.worker.clone();
                let renewed = async {
                    let mut tx = this.catalog().begin().await?;
                    rotation::renew_steps(&mut tx, &worker, &ids, until).await?;
                    tx.commit().await?;
                    Ok::<_, KeyError>(())
                }
                .await;
                if let Err(e) = renewed {
                    tracing::warn!("renewing the leases of rotation steps: {e}");
                }
            }
        })
    }
}

fn copy_outcome(s: &Step, now: Option<&Step>) -> CopyOutcome {
    let (new_kid, error) = match now {
        Some(n) if n.status == StepStatus::Done => (n.new_kid.clone(), None),
        Some(n) if n.status == StepStatus::Failed => (None, n.error.clone()),
        Some(_) => (
            None,
            Some("the HSM has the new version but recording it failed; it is adopted when the rotation resumes".into()),
        ),
        None => (None, Some("the rotation step is gone".into())),
    };
    CopyOutcome {
        kid: s.target_kid.clone(),
        group_id: s.group_id.clone(),
        new_kid,
        error,
    }
}
