//! Recording the versions rotation runs made: each new HSM version becomes the virtual key
//! that replaces the rotated one (taking its name, with its links, escrowed backup, rotation
//! policy and audit event), and its step is finished in the same transaction. A bulk
//! rotation records many versions in one transaction, each in a savepoint of its own.

use serde_json::json;

use crate::catalog::Conn;
use crate::catalog::rotation::{self, StepKind, StepStatus};
use crate::catalog::sobjects::{self, KeySource, Origin, escrow_context};
use crate::kms::public_der;
use crate::plugins::kms::RemoteKey;

use super::access::may_manage;
use super::build::{copy_link, merge_ops, successor};
use super::error::{KeyError, Result};
use super::flows::{MadeVersion, RunScope, StepPlan};
use super::rotate::rotated_notice;
use super::{KeyService, integrity};

impl KeyService {
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
            // One savepoint per version: a version that fails is undone alone.
            tx.savepoint("version").await?;
            let r = self
                .write_version_in(&mut tx, scope, m.plan, worker, m.remote, m.backup)
                .await;
            match &r {
                Ok(_) => tx.release_savepoint("version").await?,
                Err(_) => tx.rollback_to_savepoint("version").await?,
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
    pub(super) async fn write_version(
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
}
