//! Rotations that give virtual keys a new version in their HSM, run as workflow scripts:
//!
//! - `rotate` (FLOWS F23): the HSM makes the new version;
//! - `rotate_to_keyward` (F26): the new version holds a catalog key's material;
//! - `rotate_copies` (F24): the linked copies of a rotated catalog key, all those in one HSM
//!   in one run, each getting the new material as a new version.
//!
//! Each virtual key that is to get a version has a step (`catalog::rotation`) written before
//! any HSM call and leased to this daemon. The script's run may create versions only of its
//! steps' keys; `keys::record_rotation` (or the bulk `keys::rotate_copies`) records each new
//! version as a new virtual key that takes the name, with its links, escrowed backup and
//! audit event, and finishes the step in the same transaction. A step its run did not settle
//! is failed when the HSM did not get to make the version, and otherwise left for
//! [`KeyService::resume_abandoned`], which first asks the HSM whether the version exists
//! (adopting it) before making one: a crash never leaves a version unrecorded, nor makes two.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::json;

use crate::auth::{self, Access};
use crate::catalog::notifications::{self, EventType};
use crate::catalog::rotation::{self, CopySelection, Step, StepKind, StepStatus};
use crate::catalog::sobjects::{self, KeyOp, KeySource, LinkKind, Origin, SObject, escrow_context};
use crate::catalog::{Conn, new_id};
use crate::crypto::Material;
use crate::kms::public_der;
use crate::plugins::kms::RemoteKey;
use crate::plugins::policy::Action;

use super::access::may_manage;
use super::build::{copy_link, copy_successor, merge_ops, rotate_from_size, successor};
use super::error::{KeyError, Result};
use super::flows::{CopyOutcome, MadeVersion, Pending, RotationRun, RunScope, StepPlan};
use super::flows::{FlowRequest, Trigger};
use super::hsm::{ensure_live, exclusive_key};
use super::rotate::{MAX_HSM_VERSIONS, RekeySpec, Rekeyed, rotated_notice};
use super::rules::{copy_ops, copyable};
use super::{KeyService, creator, integrity, open_material};

/// A linked copy that rotates along with its source, and the virtual key its new version
/// becomes.
#[derive(Debug, Clone)]
pub struct CopyPlan {
    pub copy: SObject,
    pub successor: SObject,
}

/// Abandoned steps resumed by one run: same account, principal, source and kind, and (but
/// for copies of one source) the same step.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ResumeGroup {
    account: String,
    owner: String,
    source: Option<String>,
    kind: &'static str,
    run: Option<String>,
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
                let m = open_material(self.catalog(), &source)?
                    .ok_or_else(|| KeyError::state("the source key has no material"))?;
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
    fn plan_of(&self, step: &Step, target: &SObject, successor: SObject, resume: bool) -> StepPlan {
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
        material: &Material,
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
    async fn run_steps(
        &self,
        access: &Access,
        group_id: &str,
        plans: Vec<StepPlan>,
        material: Option<Material>,
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
    fn keep_leased(&self, ids: Vec<String>) -> tokio::task::JoinHandle<()> {
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

    /// Records a new HSM version of a step's virtual key as the key that replaces it, and
    /// finishes the step, in one transaction. Returns the new key's id.
    pub async fn record_version(
        &self,
        scope: RunScope<'_>,
        plan: &StepPlan,
        worker: &str,
        r: &RemoteKey,
        backup: Option<&[u8]>,
    ) -> Result<String> {
        self.write_version(scope, plan, Some(worker), r, backup)
            .await
    }

    /// Records several versions of one run in one transaction, each in a savepoint of its
    /// own: a bulk rotation makes versions faster than one commit each could record them,
    /// and one that cannot be recorded (its lease was taken over) leaves the others intact.
    /// Returns each version's new key id or why it was not recorded, in the given order.
    pub async fn record_versions(
        &self,
        scope: RunScope<'_>,
        worker: &str,
        made: &[MadeVersion<'_>],
    ) -> Result<Vec<Result<String>>> {
        self.write_versions(scope, Some(worker), made).await
    }

    /// The writes of `made` in one transaction, a savepoint each; the cache entries of the
    /// replaced keys are forgotten after the commit.
    async fn write_versions(
        &self,
        scope: RunScope<'_>,
        worker: Option<&str>,
        made: &[MadeVersion<'_>],
    ) -> Result<Vec<Result<String>>> {
        let mut tx = self.catalog().begin().await?;
        let mut out = Vec::with_capacity(made.len());
        for m in made {
            let mut one = sqlx::Acquire::begin(&mut *tx).await?;
            let r = self
                .write_version_in(&mut one, scope, m.plan, worker, m.remote, m.backup)
                .await;
            match &r {
                Ok(_) => one.commit().await?,
                Err(_) => one.rollback().await?,
            }
            out.push(r);
        }
        tx.commit().await?;
        for (m, r) in made.iter().zip(&out) {
            if r.is_ok() {
                self.forget(&m.plan.kid);
            }
        }
        Ok(out)
    }

    /// Records a version of a virtual key's HSM key made outside Keyward (Azure's own
    /// rotation, the portal), found by `sync_key`: the key that replaces the virtual key, as
    /// a rotation would record it. `None` when the virtual key has that version already.
    pub async fn adopt_version(
        &self,
        scope: RunScope<'_>,
        kid: &str,
        r: &RemoteKey,
        backup: Option<&[u8]>,
    ) -> Result<Option<String>> {
        let old = self.in_group(scope, kid).await?;
        may_manage(scope.access, &old)?;
        if old.rotated_at.is_some() {
            return Err(KeyError::state(
                "the key was replaced by a rotation; its replacement holds the HSM key's name",
            ));
        }
        let prior = old.external.as_ref().and_then(|e| e.id.version.clone());
        if prior.as_deref() == Some(r.version.as_str()) {
            return Ok(None);
        }
        let now = self.now();
        let mut next = successor(scope.access, &old, &Default::default(), now)?;
        next.origin = Origin::External;
        next.key_ops = merge_ops(&old.key_ops, &r.ops);
        next.activation_date = r
            .properties
            .not_before
            .or(r.properties.created)
            .or(Some(now));
        next.deactivation_date = r.properties.expires;
        next.tags = r
            .tags
            .iter()
            .map(|t| (t.name.clone(), t.value.clone()))
            .collect();
        let plan = StepPlan {
            step_id: String::new(),
            kind: StepKind::Native,
            kid: old.kid.clone(),
            hsm_name: old.external_name().unwrap_or_default().to_string(),
            prior_version: prior,
            resume: false,
            successor: next,
            deactivate_old: false,
            source_kid: None,
            rotation_policy: None,
        };
        self.write_version(scope, &plan, None, r, backup)
            .await
            .map(Some)
    }

    /// The one write of a new version: the old virtual key retired, the new one in its name
    /// with links, escrow and policy, the step (if any) finished, the audit event and the
    /// notification.
    async fn write_version(
        &self,
        scope: RunScope<'_>,
        plan: &StepPlan,
        worker: Option<&str>,
        r: &RemoteKey,
        backup: Option<&[u8]>,
    ) -> Result<String> {
        let made = MadeVersion {
            plan,
            remote: r,
            backup,
        };
        self.write_versions(scope, worker, std::slice::from_ref(&made))
            .await?
            .pop()
            .expect("one result per version")
    }

    /// The writes of one new version in the caller's transaction (`write_versions`).
    async fn write_version_in(
        &self,
        tx: &mut Conn,
        scope: RunScope<'_>,
        plan: &StepPlan,
        worker: Option<&str>,
        r: &RemoteKey,
        backup: Option<&[u8]>,
    ) -> Result<String> {
        if !r.name.eq_ignore_ascii_case(&plan.hsm_name) {
            return Err(KeyError::rule(format!(
                "this rotation gives '{}' a new version, not '{}'",
                plan.hsm_name, r.name
            )));
        }
        if plan.prior_version.as_deref() == Some(r.version.as_str()) {
            return Err(KeyError::rule(format!(
                "'{}' has no new version yet (its latest is still {})",
                r.name, r.version
            )));
        }
        let account = &scope.access.account_id;
        let now = self.now();
        let source = match plan.kind {
            StepKind::Native => KeySource::External,
            StepKind::Copy | StepKind::Keyward => KeySource::Keyward,
        };
        let old = sobjects::get(tx, account, &plan.kid)
            .await?
            .filter(|o| o.group_id == scope.group.id)
            .ok_or_else(|| {
                KeyError::NotFound(format!("no virtual key {} in this group", plan.kid))
            })?;
        let mut new = plan.successor.clone();
        new.external = Some(self.external_of(scope, r, source));
        new.enabled = r.properties.enabled;
        new.pub_key = public_der(r).or(new.pub_key);
        self.retire(tx, scope.access, &old, plan.deactivate_old, now)
            .await?;
        sobjects::insert(tx, &new).await.map_err(integrity)?;
        self.rearm(
            tx,
            scope.access,
            &old,
            &new,
            plan.rotation_policy.clone(),
            now,
        )
        .await?;
        if let Some(source_kid) = &plan.source_kid
            && let Some(src) = sobjects::get(tx, account, source_kid).await?
        {
            sobjects::add_link(tx, &copy_link(scope.access, &src, &new, now)).await?;
        }
        if let Some(b) = backup {
            let sealed = self.catalog().seal(&escrow_context(&new.kid), b);
            sobjects::put_escrow(tx, &new.kid, &sealed, now).await?;
        }
        if let Some(worker) = worker
            && !rotation::finish_step(
                tx,
                &plan.step_id,
                worker,
                StepStatus::Done,
                Some(&new.kid),
                None,
                now,
            )
            .await?
        {
            return Err(KeyError::state(
                "the rotation step was taken over by another run (its lease expired)",
            ));
        }
        self.event(
            scope.access,
            "key.rotate",
            &new.kid,
            json!({
                "name": new.name, "replaced": old.kid, "external_key": r.id, "kind": plan.kind.as_str(),
                "source": plan.source_kid, "deactivated": plan.deactivate_old, "workflow_run": scope.run_id,
                "made_outside_keyward": worker.is_none(),
            }),
        )
        .write(tx)
        .await?;
        rotated_notice(tx, &old, &new, now).await?;
        Ok(new.kid)
    }

    /// Settles the steps a rotation run left pending: failed when the HSM did not make
    /// their version, released for the next resumption (which adopts the version) when it
    /// did.
    pub async fn after_rotation_run(
        &self,
        account: &str,
        run: &RotationRun,
        reached: &HashSet<String>,
        error: Option<&str>,
    ) -> Result<()> {
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        for p in &run.steps {
            if reached.contains(&p.hsm_name.to_lowercase()) {
                rotation::release_step(&mut tx, &p.step_id, &run.worker, now).await?;
            } else {
                let why =
                    error.unwrap_or("the rotation run ended before this key got its new version");
                if rotation::finish_step(
                    &mut tx,
                    &p.step_id,
                    &run.worker,
                    StepStatus::Failed,
                    None,
                    Some(why),
                    now,
                )
                .await?
                {
                    failed_notice(&mut tx, account, &p.kid, &p.hsm_name, why, now).await?;
                }
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Takes over rotation steps whose worker stopped (their lease expired) and finishes
    /// them, as the principal that started each. Returns how many were taken over.
    pub async fn resume_abandoned(&self) -> Result<usize> {
        let now = self.now();
        let abandoned = {
            let mut conn = self.catalog().conn().await?;
            rotation::abandoned_steps(&mut conn, now, 500).await?
        };
        // One resumption per principal and run: copy steps of one source rotate together,
        // as they started; every other step (one key each) resumes on its own. Each acts
        // with the current access of the principal that started it, never another's.
        let mut claimed: BTreeMap<ResumeGroup, Vec<Step>> = BTreeMap::new();
        for s in abandoned {
            let mut tx = self.catalog().begin().await?;
            let ok = rotation::claim_step(
                &mut tx,
                &s.id,
                &self.inner.lease.worker,
                self.lease_until(),
                now,
            )
            .await?;
            tx.commit().await?;
            if ok {
                let run = match s.kind {
                    StepKind::Copy => None,
                    StepKind::Native | StepKind::Keyward => Some(s.id.clone()),
                };
                claimed
                    .entry(ResumeGroup {
                        account: s.account_id.clone(),
                        owner: format!("{}:{}", s.owner.kind(), s.owner.id()),
                        source: s.source_kid.clone(),
                        kind: s.kind.as_str(),
                        run,
                    })
                    .or_default()
                    .push(s);
            }
        }
        let mut n = 0;
        for (g, steps) in claimed {
            n += steps.len();
            if let Err(e) = self
                .resume_steps(&g.account, g.source.as_deref(), steps)
                .await
            {
                tracing::warn!("resuming an interrupted rotation: {e}");
            }
        }
        if n > 0 {
            tracing::info!(steps = n, "resumed interrupted rotations");
        }
        Ok(n)
    }

    async fn resume_steps(
        &self,
        account: &str,
        source: Option<&str>,
        steps: Vec<Step>,
    ) -> Result<()> {
        let first = &steps[0];
        let access = {
            let mut conn = self.catalog().conn().await?;
            auth::access::load(&mut conn, account, &first.owner).await?
        };
        let Some(access) = access else {
            return self
                .fail_steps(
                    &steps,
                    "the principal that started the rotation no longer exists",
                )
                .await;
        };
        let source_key = match source {
            Some(kid) => {
                let mut conn = self.catalog().conn().await?;
                sobjects::get(&mut conn, account, kid).await?
            }
            None => None,
        };
        let material = match (source, &source_key) {
            (None, _) => None,
            (Some(_), Some(src)) => open_material(self.catalog(), src)?,
            (Some(_), None) => None,
        };
        if source.is_some() && material.is_none() {
            return self
                .fail_steps(&steps, "the source key's material is gone")
                .await;
        }
        // The principal's rights now, not when the rotation started.
        let mut targets = Vec::new();
        for s in &steps {
            let target = self
                .get(&access, &s.target_kid)
                .await
                .and_then(|t| may_manage(&access, &t).map(|()| t));
            match target {
                Ok(t) => targets.push(t),
                Err(e) => {
                    return self
                        .fail_steps(
                            &steps,
                            &format!("the principal that started the rotation may no longer rotate {}: {e}", s.target_kid),
                        )
                        .await;
                }
            }
        }
        let mut plans = Vec::new();
        let mut copies = Vec::new();
        for (s, target) in steps.iter().zip(targets) {
            let next = match &source_key {
                Some(src) => copy_successor(&access, &target, src, self.now())?,
                None => {
                    let mut next = successor(&access, &target, &Default::default(), self.now())?;
                    next.origin = Origin::External;
                    next
                }
            };
            if first.kind == StepKind::Copy {
                copies.push(CopyPlan {
                    copy: target,
                    successor: next,
                });
            } else {
                plans.push(self.plan_of(s, &target, next, true));
            }
        }
        if first.kind == StepKind::Copy {
            let m =
                material.ok_or_else(|| KeyError::Internal("copy steps without a source".into()))?;
            self.run_copy_steps(&access, &m, copies, steps, true, Trigger::Schedule)
                .await;
            return Ok(());
        }
        let group = first.group_id.clone();
        self.run_steps(&access, &group, plans, material, Trigger::Schedule)
            .await
    }

    /// Fails steps that cannot resume, each with its audit event (as the principal that
    /// started it, who may be gone).
    async fn fail_steps(&self, steps: &[Step], why: &str) -> Result<()> {
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        for s in steps {
            crate::audit::Event::system(Some(&s.account_id), s.owner.id(), "key.rotate", now)
                .object("sobject", &s.target_kid)
                .outcome("failure", why)
                .details(json!({"step": s.id, "resumed": true, "owner_kind": s.owner.kind()}))
                .write(&mut tx)
                .await?;
            rotation::finish_step(
                &mut tx,
                &s.id,
                &self.inner.lease.worker,
                StepStatus::Failed,
                None,
                Some(why),
                now,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
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

/// The `key.rotation_failed` notification of a key whose new version was not made.
async fn failed_notice(
    c: &mut crate::catalog::Conn,
    account: &str,
    kid: &str,
    hsm_name: &str,
    why: &str,
    now: i64,
) -> Result<()> {
    notifications::enqueue(
        c,
        account,
        EventType::RotationFailed,
        &json!({"kid": kid, "external_name": hsm_name, "error": why}),
        now,
    )
    .await?;
    Ok(())
}
