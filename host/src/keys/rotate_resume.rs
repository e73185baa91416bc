//! What a rotation run left: steps it did not settle are failed when the HSM did not make
//! their version, and otherwise released for [`KeyService::resume_abandoned`], which takes
//! over steps whose worker stopped (their lease expired). Each resumption acts as the
//! principal that started the rotation, with that principal's rights now, one rotation at a
//! time (the copies of one source together, as they started), and first asks the HSM
//! whether the version exists (adopting it) before making one.

use std::collections::{BTreeMap, HashSet};

use serde_json::json;

use crate::auth;
use crate::catalog::notifications::{self, EventType};
use crate::catalog::rotation::{self, Step, StepKind, StepStatus};
use crate::catalog::sobjects::{self, Origin};

use super::access::may_manage;
use super::build::{copy_successor, successor};
use super::error::{KeyError, Result};
use super::flows::FlowMaterial;
use super::flows::{RotationRun, Trigger};
use super::rotate_hsm::CopyPlan;
use super::tiers;
use super::{KeyService, open_material};

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

impl KeyService {
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
            (Some(_), Some(src)) => open_material(self.catalog(), src)?.map(|m| FlowMaterial {
                material: m,
                // EXPORT may have been removed since the rotation started.
                plain_ok: tiers::plain_allowed(Some(src)),
            }),
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
