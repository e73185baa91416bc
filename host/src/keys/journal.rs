//! The journal of changes made in external key managers, and its reconciliation.
//!
//! Every HSM-side change a script makes is written as an intent before the remote call and
//! finished, with its one audit event, after it. A daemon that stops in between leaves the
//! intent, marked interrupted at the next start; the next sync of the group reconciles it
//! (`keys::reconcile`) from what the HSM says then, together with reservations of new keys
//! whose run ended without recording them: completed from the HSM when it has the key,
//! released when it does not.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::audit::Event;
use crate::catalog::Conn;
use crate::catalog::hsm_ops::{self, HsmOp, OpOutcome, OpStatus};
use crate::catalog::new_id;
use crate::catalog::sobjects::{self, ExternalRef, KeySource, RemoteState};
use crate::kms::KmsError;

use super::KeyService;
use super::access::{approved, may_manage};
use super::error::{KeyError, Result};
use super::flows::RunScope;
use crate::catalog::approvals::Protected;
use crate::catalog::sobjects::SObject;

/// A change a script makes in its group's HSM: the journal's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HsmChange {
    CreateKey,
    CreateKek,
    ImportKey,
    UpdateKey,
    RotateKey,
    DeleteKey,
    RecoverKey,
    PurgeKey,
    RestoreKey,
}

impl HsmChange {
    pub fn as_str(self) -> &'static str {
        match self {
            HsmChange::CreateKey => "create_key",
            HsmChange::CreateKek => "create_kek",
            HsmChange::ImportKey => "import_key",
            HsmChange::UpdateKey => "update_key",
            HsmChange::RotateKey => "rotate_key",
            HsmChange::DeleteKey => "delete_key",
            HsmChange::RecoverKey => "recover_key",
            HsmChange::PurgeKey => "purge_key",
            HsmChange::RestoreKey => "restore_key",
        }
    }

    /// What a group's approval policy must allow for this change of `o`, a key the catalog
    /// knows (as the same change asked of the API would: `key_flow`, `rekey`). An update
    /// needs nothing more: a run may only bring the HSM to what the catalog decided
    /// (`check_remote_update`).
    pub fn protected(self, o: &SObject) -> Option<Protected> {
        match self {
            // The run's own reservation is a new key; any other key gets a new version.
            HsmChange::CreateKey | HsmChange::ImportKey => (o.remote_state()
                != Some(RemoteState::Creating))
            .then_some(Protected::RotateSobjects),
            HsmChange::RotateKey => Some(Protected::RotateSobjects),
            HsmChange::DeleteKey => Some(Protected::DeleteSobjects),
            HsmChange::PurgeKey => Some(Protected::DeleteKeyMaterial),
            HsmChange::RecoverKey | HsmChange::RestoreKey => Some(Protected::UpdateSobjectsProfile),
            HsmChange::UpdateKey | HsmChange::CreateKek => None,
        }
    }
}

/// What a reconciliation did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RemoteReport {
    /// Reserved keys the HSM has: completed as virtual keys.
    pub completed: Vec<String>,
    /// Reservations the HSM never saw: released.
    pub released: Vec<String>,
    /// Virtual keys refreshed after an interrupted change.
    pub refreshed: Vec<String>,
    /// Journal entries of interrupted changes now settled.
    pub reconciled: usize,
}

impl KeyService {
    /// Marks HSM-side changes a previous daemon left pending as interrupted.
    pub async fn recover_interrupted(&self) -> Result<u64> {
        let mut tx = self.catalog().begin().await?;
        let n = hsm_ops::interrupt_pending(&mut tx, self.now()).await?;
        tx.commit().await?;
        if n > 0 {
            tracing::warn!(
                changes = n,
                "changes in external key managers were interrupted by the last shutdown; the next sync of their groups reconciles them"
            );
        }
        Ok(n)
    }

    /// Writes the intent of an HSM-side change a script makes before the remote call;
    /// returns its journal id. The run's principal must, at this moment, manage the key it
    /// changes (or, for a key the catalog does not know yet, the group's keys): a webhook,
    /// job or resumed run acts with its owner's current rights. A change the group's quorum
    /// protects passes only in a run an approved request started
    /// ([`KeyError::ApprovalRequired`] otherwise).
    pub async fn journal_begin(
        &self,
        scope: RunScope<'_>,
        operation: HsmChange,
        target: Option<&str>,
        kid: Option<&str>,
    ) -> Result<String> {
        match kid {
            Some(kid) => {
                let o = self.in_group(scope, kid).await?;
                may_manage(scope.access, &o)?;
                if let Some(what) = operation.protected(&o) {
                    approved(scope.access, scope.group, Some(what))?;
                }
            }
            None if scope.access.can_manage_keys(&scope.group.id) => {}
            None => {
                return Err(KeyError::forbidden(
                    "the run's principal may not manage this group's keys",
                ));
            }
        }
        self.journal_open(scope, operation, target, kid).await
    }

    /// Writes the intent of an HSM-side change, whoever asked for it (the key service's own
    /// put-backs of drift need no one's rights).
    pub(super) async fn journal_open(
        &self,
        scope: RunScope<'_>,
        operation: HsmChange,
        target: Option<&str>,
        kid: Option<&str>,
    ) -> Result<String> {
        let op = HsmOp {
            id: new_id(),
            account_id: scope.access.account_id.clone(),
            group_id: Some(scope.group.id.clone()),
            run_id: Some(scope.run_id.to_string()),
            actor_kind: scope.access.principal.kind().to_string(),
            actor_id: scope.access.principal.id().to_string(),
            operation: operation.as_str().to_string(),
            target: target.map(str::to_string),
            kid: kid.map(str::to_string),
            status: OpStatus::Pending,
            started_at: self.now(),
            finished_at: None,
            outcome: None,
        };
        let mut tx = self.catalog().begin().await?;
        hsm_ops::insert(&mut tx, &op).await?;
        tx.commit().await?;
        Ok(op.id)
    }

    /// Writes the outcome of an HSM-side change, with its one audit event.
    pub async fn journal_end(
        &self,
        scope: RunScope<'_>,
        id: &str,
        operation: HsmChange,
        outcome: std::result::Result<Option<String>, &KmsError>,
        details: Value,
    ) -> Result<()> {
        let (status, out) = match &outcome {
            Ok(remote_id) => (
                OpStatus::Succeeded,
                OpOutcome {
                    remote_id: remote_id.clone(),
                    error: None,
                },
            ),
            Err(e) => (
                OpStatus::Failed,
                OpOutcome {
                    remote_id: None,
                    error: Some(e.to_string()),
                },
            ),
        };
        let mut event = Event::new(
            Some(&scope.access.account_id),
            &scope.access.principal,
            &format!("hsm.{}", operation.as_str()),
            self.now(),
        )
        .details(
            json!({"workflow_run": scope.run_id, "group_id": scope.group.id, "details": details}),
        );
        if let Some(rid) = &out.remote_id {
            event = event.object("external_key", rid);
        }
        if let Some(e) = &out.error {
            event = event.outcome("failure", e.clone());
        }
        let mut tx = self.catalog().begin().await?;
        hsm_ops::finish(&mut tx, id, OpStatus::Pending, status, &out, self.now()).await?;
        event.write(&mut tx).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Settles what ended or crashed half-way in the group's HSM: reservations whose run is
    /// over are completed from the HSM or released, and keys whose change was interrupted
    /// are refreshed from the HSM.
    pub async fn reconcile(&self, scope: RunScope<'_>) -> Result<RemoteReport> {
        let mut report = RemoteReport::default();
        let kms = &self.inner.kms;
        let reservations: Vec<ExternalRef> = {
            let mut conn = self.catalog().conn().await?;
            sobjects::external_refs(&mut conn, &scope.group.id)
                .await?
                .into_iter()
                .filter(|r| r.external.state == RemoteState::Creating)
                .collect()
        };
        for res in reservations {
            let o = self.in_group(scope, &res.kid).await?;
            if !self.reservation_is_stale(&o).await? {
                continue;
            }
            let name = res.external.name().to_string();
            match kms.find_key(scope.link, &name).await? {
                Some(r) => {
                    let backup = kms.backup_key(scope.link, &name).await?;
                    let details = json!({"name": o.name, "external_key": r.id, "reconciled": true, "workflow_run": scope.run_id});
                    let action = match res.external.source {
                        KeySource::External => "key.create",
                        KeySource::Keyward => "key.import",
                    };
                    self.complete(
                        scope,
                        &o.kid,
                        &r,
                        res.external.source,
                        Some(&backup),
                        action,
                        details,
                        None,
                    )
                    .await?;
                    report.completed.push(o.kid);
                }
                None => {
                    let mut tx = self.catalog().begin().await?;
                    release(&mut tx, &scope.access.account_id, &o.kid).await?;
                    tx.commit().await?;
                    self.forget(&o.kid);
                    report.released.push(name);
                }
            }
        }
        let interrupted = {
            let mut conn = self.catalog().conn().await?;
            hsm_ops::interrupted_in_group(&mut conn, &scope.group.id).await?
        };
        let mut refreshed = HashSet::new();
        for op in interrupted {
            let mut remote_id = None;
            if let (Some(kid), Some(target)) = (&op.kid, &op.target)
                && self.in_group(scope, kid).await.is_ok()
                && let Some(r) = kms.find_key(scope.link, target).await?
            {
                if refreshed.insert(kid.clone()) {
                    self.refresh(scope, kid, &r).await?;
                    report.refreshed.push(kid.clone());
                }
                remote_id = Some(r.id);
            }
            let out = OpOutcome {
                remote_id,
                error: Some("interrupted; settled from what the key manager says now".into()),
            };
            let event = Event::new(
                Some(&scope.access.account_id),
                &scope.access.principal,
                &format!("hsm.{}", op.operation),
                self.now(),
            )
            .outcome("reconciled", "interrupted by a shutdown; settled from what the key manager says now")
            .details(json!({"journal": op.id, "target": op.target, "interrupted_run": op.run_id, "workflow_run": scope.run_id}));
            let mut tx = self.catalog().begin().await?;
            if hsm_ops::finish(
                &mut tx,
                &op.id,
                OpStatus::Interrupted,
                OpStatus::Reconciled,
                &out,
                self.now(),
            )
            .await?
            {
                event.write(&mut tx).await?;
                report.reconciled += 1;
            }
            tx.commit().await?;
        }
        Ok(report)
    }
}

/// Removes a reservation that never became a key.
pub(super) async fn release(c: &mut Conn, account: &str, kid: &str) -> Result<()> {
    if let Some(o) = sobjects::get(c, account, kid).await?
        && o.remote_state() == Some(RemoteState::Creating)
    {
        sobjects::delete(c, account, kid).await?;
    }
    Ok(())
}
