//! What comes back from an HSM obeys the catalog's rules. The catalog is the authority on a
//! key's lifecycle, enabled state and operations: an HSM may narrow them, never widen them.
//! A virtual key its HSM reports enabled where the lifecycle keeps it disabled, or permitting
//! operations the catalog does not, is put back in the HSM (journaled) and the drift recorded
//! (`key.drift`, audit event and notification) in the transaction of the write-back. Here
//! too: what a run may ask the HSM to change of a key the catalog knows.

use serde_json::json;

use crate::catalog::notifications::{self, EventType};
use crate::catalog::sobjects::{self, KeySource, Patch, SObject};
use crate::kms::public_der;
use crate::plugins::kms::{self as remote, RemoteKey};

use super::build::{catalog_op, merge_ops, remote_ops};
use super::error::{KeyError, Result};
use super::flows::{PendingChange, RunScope};
use super::journal::HsmChange;
use super::rules::{self, date_changes};
use super::{CAS_ATTEMPTS, KeyService, integrity};

impl KeyService {
    /// Refreshes a virtual key from what its HSM says now (after a recover or restore, or an
    /// interrupted change): where it lives, its public key, its tags, and its dates where the
    /// lifecycle allows them. Enabled state and operations follow the catalog's rules: the
    /// HSM may narrow them, never widen them; a key the HSM has enabled (or permitting more)
    /// than the catalog allows is put back there first, with a `key.drift` audit event and
    /// notification.
    pub async fn refresh(&self, scope: RunScope<'_>, kid: &str, r: &RemoteKey) -> Result<()> {
        let mut r = r.clone();
        for _ in 0..CAS_ATTEMPTS {
            let current = self.in_group(scope, kid).await?;
            let now = self.now();
            let drift =
                rules::remote_drift(&current, r.properties.enabled, &remote_ops(&r.ops), now);
            if !drift.is_empty() {
                r = self
                    .put_back(scope, &current, &r.name, Some(&r.ops), &drift)
                    .await?;
            }
            let source = current
                .external
                .as_ref()
                .map_or(KeySource::External, |e| e.source);
            let tags: sobjects::Tags = r
                .tags
                .iter()
                .map(|t| (t.name.clone(), t.value.clone()))
                .collect();
            let ops = merge_ops(&current.key_ops, &r.ops);
            let (activation, deactivation) = date_changes(
                &current,
                Some(r.properties.not_before.or(current.activation_date)),
                Some(r.properties.expires),
                now,
            )
            .unwrap_or((None, None));
            let patch = Patch {
                external: Some(self.external_of(scope, &r, source)),
                enabled: Some(r.properties.enabled).filter(|e| *e != current.enabled),
                pub_key: public_der(&r).filter(|p| current.pub_key.as_ref() != Some(p)),
                tags: Some(tags).filter(|t| *t != current.tags),
                key_ops: Some(ops).filter(|o| *o != current.key_ops),
                activation_date: activation,
                deactivation_date: deactivation,
                ..Patch::default()
            };
            let event = self.event(
                scope.access,
                "key.refresh",
                kid,
                json!({"fields": patch.fields(), "external_key": r.id, "workflow_run": scope.run_id}),
            );
            if self
                .write_recorded(scope, &current, &patch, event, &drift)
                .await?
            {
                return Ok(());
            }
        }
        Err(KeyError::Concurrent)
    }

    /// Puts a virtual key back in its HSM where the HSM strayed beyond the catalog's rules
    /// (disabled again, operations narrowed to the catalog's: `ops_now` is what the HSM
    /// permits now), journaled like any change a script makes. Returns the key as the HSM
    /// has it afterwards.
    pub(super) async fn put_back(
        &self,
        scope: RunScope<'_>,
        o: &SObject,
        name: &str,
        ops_now: Option<&[remote::KeyOp]>,
        drift: &rules::Drift,
    ) -> Result<RemoteKey> {
        let ops = ops_now.filter(|_| !drift.extra_ops.is_empty()).map(|now| {
            now.iter()
                .copied()
                .filter(|op| catalog_op(*op).is_none_or(|c| o.key_ops.contains(c)))
                .collect::<Vec<_>>()
        });
        let req = remote::UpdateRequest {
            enabled: drift.enabled.then_some(false),
            not_before: None,
            expires: None,
            ops,
            tags: None,
        };
        let entry = self
            .journal_open(scope, HsmChange::UpdateKey, Some(name), Some(&o.kid))
            .await?;
        let key = remote::KeyRef {
            name: name.to_string(),
            version: None,
        };
        let result = self.inner.kms.update_key(scope.link, &key, &req).await;
        let details = json!({"name": name, "put_back": {
            "enabled": drift.enabled.then_some(false),
            "removed_ops": drift.extra_ops,
        }});
        self.journal_end(
            scope,
            &entry,
            HsmChange::UpdateKey,
            result.as_ref().map(|k| Some(k.id.clone())),
            details,
        )
        .await?;
        tracing::warn!(kid = %o.kid, enabled = drift.enabled, "an HSM strayed from the catalog's rules; put back");
        Ok(result?)
    }

    /// The `key.drift` audit event and notification of a key put back in its HSM, in the
    /// transaction that records it.
    pub(super) async fn record_drift(
        &self,
        tx: &mut crate::catalog::Conn,
        scope: RunScope<'_>,
        current: &SObject,
        drift: &rules::Drift,
        now: i64,
    ) -> Result<()> {
        let data = json!({
            "kid": current.kid, "name": current.name, "group_id": scope.group.id,
            "external_name": current.external_name(), "state": current.state(now).as_str(),
            "disabled_again": drift.enabled, "removed_ops": drift.extra_ops,
        });
        self.event(
            scope.access,
            "key.drift",
            &current.kid,
            json!({"workflow_run": scope.run_id, "drift": data}),
        )
        .outcome(
            "put_back",
            "the HSM strayed beyond the catalog's rules; put back",
        )
        .write(tx)
        .await?;
        notifications::enqueue(tx, &scope.access.account_id, EventType::Drift, &data, now).await?;
        Ok(())
    }

    /// Whether a run may ask the HSM for this update of a virtual key: only what the run's
    /// pending change of that key decided (the key service checked it against the rules),
    /// else nothing that could widen the key (enabled, dates, operations); tags are free.
    pub fn check_remote_update(
        &self,
        current: &SObject,
        pending: Option<&PendingChange>,
        req: &remote::UpdateRequest,
    ) -> Result<()> {
        let intended = match pending {
            Some(p) if p.kid == current.kid => p.patch.applied_to(current),
            _ => current.clone(),
        };
        let refuse = |what: &str| {
            Err(KeyError::rule(format!(
                "a workflow run changes {what} of a key in its HSM only as the key service decided (PATCH /crypto/v1/keys/{}); the catalog is the authority",
                current.kid
            )))
        };
        if req.enabled.is_some_and(|e| e != intended.enabled) {
            return refuse("whether it is enabled");
        }
        if req.not_before.is_some() && req.not_before != intended.activation_date {
            return refuse("the activation date");
        }
        if req.expires.is_some() && req.expires != intended.deactivation_date {
            return refuse("the deactivation date");
        }
        if let Some(ops) = &req.ops
            && remote_ops(ops).beyond(&intended.key_ops).next().is_some()
        {
            return refuse("the operations");
        }
        Ok(())
    }

    /// Writes a patch of what a run recorded, with its audit event, and, when the HSM had
    /// to be put back, the `key.drift` event and notification, all in one transaction.
    pub(super) async fn write_recorded(
        &self,
        scope: RunScope<'_>,
        current: &SObject,
        patch: &Patch,
        event: crate::audit::Event,
        drift: &rules::Drift,
    ) -> Result<bool> {
        if drift.is_empty() {
            return self.write_patch(scope.access, current, patch, event).await;
        }
        let account = &scope.access.account_id;
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        if !sobjects::apply(&mut tx, account, &current.kid, current.version, patch)
            .await
            .map_err(integrity)?
        {
            return Ok(false);
        }
        event.write(&mut tx).await?;
        self.record_drift(&mut tx, scope, current, drift, now)
            .await?;
        tx.commit().await?;
        self.forget(&current.kid);
        Ok(true)
    }
}
