//! What the workflow scripts of a linked group record through their host functions: a new
//! virtual key once the HSM has it, a change once the HSM made it, remote states, keys found
//! by a sync, escrowed backups, removals. Every one is a field-level write with its audit
//! event, and only ever of virtual keys of the run's group. What the HSM reports goes
//! through the catalog's rules first (`drift`: refreshes, and the put-back of drift).

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::auth::Access;
use crate::catalog::approvals::Protected;
use crate::catalog::new_id;
use crate::catalog::notifications::{self, EventType};
use crate::catalog::sobjects::{
    self, ExternalId, ExternalKey, ExternalRef, KeyOp, KeyOps, KeySource, Origin, Patch,
    RemoteState, SObject, escrow_context,
};
use crate::kms::{curve_of, obj_type_of, public_der};
use crate::plugins::kms::RemoteKey;

use super::access::may_manage;
use super::build::{copy_link, merge_ops, remote_ops};
use super::error::{KeyError, Result};
use super::flows::{PendingChange, PendingNew, RunScope};
use super::journal::release;
use super::rules::{self};
use super::{CAS_ATTEMPTS, KeyService, creator, integrity};

/// When a soft-deleted key was deleted and will be purged.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Deletion {
    pub deleted: Option<i64>,
    pub scheduled_purge: Option<i64>,
    pub recovery_id: Option<String>,
}

impl KeyService {
    /// The `external` document of a virtual key for what the HSM said.
    pub(super) fn external_of(
        &self,
        scope: RunScope<'_>,
        r: &RemoteKey,
        source: KeySource,
    ) -> ExternalKey {
        let p = &r.properties;
        ExternalKey {
            kind: scope
                .group
                .link
                .as_ref()
                .map(|l| l.kind.as_str().to_string())
                .unwrap_or_default(),
            hsm_group_id: scope.group.id.clone(),
            instance: scope.link.instance().map(str::to_string),
            id: ExternalId {
                label: r.name.clone(),
                version: Some(r.version.clone()),
            },
            key_id: Some(r.id.clone()),
            key_version: Some(r.version.clone()),
            kty: Some(r.kty.clone()),
            source,
            state: if p.enabled {
                RemoteState::Active
            } else {
                RemoteState::Disabled
            },
            managed: r.managed,
            created: p.created,
            updated: p.updated,
            recovery_level: p.recovery_level.clone(),
            synced_at: Some(self.now()),
            deleted_date: None,
            scheduled_purge_date: None,
            recovery_id: None,
            purged_seen: None,
            run_id: None,
        }
    }

    /// Completes the run's reserved key with what the HSM made of it, its escrowed backup,
    /// its link to a source, and its audit event.
    pub async fn record_new(
        &self,
        scope: RunScope<'_>,
        pending: &PendingNew,
        r: &RemoteKey,
        backup: Option<&[u8]>,
    ) -> Result<String> {
        if !r.name.eq_ignore_ascii_case(pending.hsm_name()) {
            return Err(KeyError::rule(format!(
                "the run reserved the HSM name '{}' and cannot record the key '{}'",
                pending.hsm_name(),
                r.name
            )));
        }
        let kid = pending.object.kid.clone();
        let mut details = pending.audit_details.clone();
        if let Value::Object(d) = &mut details {
            d.insert("external_key".into(), json!(r.id));
            d.insert("workflow_run".into(), json!(scope.run_id));
        }
        let source = pending
            .object
            .external
            .as_ref()
            .map_or(KeySource::External, |e| e.source);
        self.complete(
            scope,
            &kid,
            r,
            source,
            backup,
            &pending.audit_action,
            details,
            pending.copy_of.as_deref(),
        )
        .await?;
        Ok(kid)
    }

    /// Turns a reservation into a virtual key of `r`.
    #[allow(clippy::too_many_arguments, reason = "the parts of one catalog write")]
    pub(super) async fn complete(
        &self,
        scope: RunScope<'_>,
        kid: &str,
        r: &RemoteKey,
        source: KeySource,
        backup: Option<&[u8]>,
        audit_action: &str,
        details: Value,
        copy_of: Option<&str>,
    ) -> Result<()> {
        let account = &scope.access.account_id;
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        let current = sobjects::get(&mut tx, account, kid)
            .await?
            .filter(|o| o.remote_state() == Some(RemoteState::Creating))
            .ok_or_else(|| KeyError::state(format!("the reservation of key {kid} is gone")))?;
        let patch = Patch {
            external: Some(self.external_of(scope, r, source)),
            enabled: Some(r.properties.enabled),
            pub_key: public_der(r),
            key_size: current.key_size.is_none().then_some(r.spec.size).flatten(),
            ..Patch::default()
        };
        if !sobjects::apply(&mut tx, account, kid, current.version, &patch)
            .await
            .map_err(integrity)?
        {
            return Err(KeyError::Concurrent);
        }
        if let Some(b) = backup {
            let sealed = self.catalog().seal(&escrow_context(kid), b);
            sobjects::put_escrow(&mut tx, kid, &sealed, now).await?;
        }
        if let Some(source_kid) = copy_of {
            let copy = patch.applied_to(&current);
            let source = sobjects::get(&mut tx, account, source_kid)
                .await?
                .ok_or_else(|| KeyError::state("the source key of the copy is gone"))?;
            sobjects::add_link(&mut tx, &copy_link(scope.access, &source, &copy, now)).await?;
        }
        self.event(scope.access, audit_action, kid, details)
            .write(&mut tx)
            .await?;
        tx.commit().await?;
        self.forget(kid);
        if let Some(s) = copy_of {
            self.forget(s);
        }
        Ok(())
    }

    /// What becomes of a run's reservation it did not record: released when nothing reached
    /// the HSM, kept for the next sync to complete when the HSM has the key. Returns what the
    /// caller of the run should be told.
    pub async fn after_run(
        &self,
        access: &Access,
        pending: &PendingNew,
        reached_hsm: bool,
    ) -> Result<Option<String>> {
        if reached_hsm {
            tracing::warn!(
                kid = %pending.object.kid,
                "the HSM created the key but the run did not record it; the next sync completes it"
            );
            return Ok(Some(format!(
                "the HSM has the key '{}', but recording it failed; the next sync of the group completes it",
                pending.hsm_name()
            )));
        }
        let mut tx = self.catalog().begin().await?;
        release(&mut tx, &access.account_id, &pending.object.kid).await?;
        tx.commit().await?;
        self.forget(&pending.object.kid);
        Ok(None)
    }

    /// Saves a run's pending change of a virtual key now that the HSM made it.
    pub async fn save_change(
        &self,
        scope: RunScope<'_>,
        pending: &PendingChange,
        r: &RemoteKey,
    ) -> Result<String> {
        let mut details = pending.audit_details.clone();
        if let Value::Object(d) = &mut details {
            d.insert("external_key".into(), json!(r.id));
            d.insert("workflow_run".into(), json!(scope.run_id));
        }
        let mut r = r.clone();
        for _ in 0..CAS_ATTEMPTS {
            let current = self.in_group(scope, &pending.kid).await?;
            // What the HSM answered obeys the rules the change was decided by.
            let intended = pending.patch.applied_to(&current);
            let drift = rules::remote_drift(
                &intended,
                r.properties.enabled,
                &remote_ops(&r.ops),
                self.now(),
            );
            if !drift.is_empty() {
                r = self
                    .put_back(scope, &intended, &r.name, Some(&r.ops), &drift)
                    .await?;
            }
            let source = current
                .external
                .as_ref()
                .map_or(KeySource::External, |e| e.source);
            let patch = Patch {
                external: Some(self.external_of(scope, &r, source)),
                enabled: Some(r.properties.enabled),
                ..pending.patch.clone()
            };
            let event = self.event(
                scope.access,
                &pending.audit_action,
                &current.kid,
                details.clone(),
            );
            if self
                .write_recorded(scope, &current, &patch, event, &drift)
                .await?
            {
                return Ok(current.kid);
            }
        }
        Err(KeyError::Concurrent)
    }

    /// Records the state of a virtual key's HSM key (`Active`, `Disabled`, `SoftDeleted`,
    /// `Purged`), for the versions rotations replaced as well (they live in the same HSM
    /// key); returns whether anything changed. A soft deletion or purge a sync found is
    /// notified.
    pub async fn set_remote_state(
        &self,
        scope: RunScope<'_>,
        kid: &str,
        state: RemoteState,
        deletion: &Deletion,
    ) -> Result<bool> {
        if state == RemoteState::Creating {
            return Err(KeyError::invalid(
                "state",
                "Creating is set by the key service alone",
            ));
        }
        let account = &scope.access.account_id;
        let reported = state;
        // A retry after a concurrent write does not ask the HSM again.
        let mut put_back = false;
        for _ in 0..CAS_ATTEMPTS {
            let current = self.in_group(scope, kid).await?;
            let before = current.external.clone().expect("a virtual key");
            let now = self.now();
            // An HSM key found enabled that the catalog's lifecycle keeps disabled is put
            // back, not adopted.
            let drift = match reported {
                RemoteState::Active => rules::remote_drift(&current, true, &KeyOps::default(), now),
                _ => rules::Drift::default(),
            };
            let mut state = reported;
            if drift.enabled {
                if !put_back {
                    self.put_back(scope, &current, before.name(), None, &drift)
                        .await?;
                    put_back = true;
                }
                state = RemoteState::Disabled;
            }
            let ext = remote_state_of(&before, state, deletion, now);
            if ext == before && drift.is_empty() {
                return Ok(false);
            }
            let mut tx = self.catalog().begin().await?;
            let patch = Patch {
                external: Some(ext),
                ..Patch::default()
            };
            if !sobjects::apply(&mut tx, account, kid, current.version, &patch)
                .await
                .map_err(integrity)?
            {
                continue;
            }
            if !drift.is_empty() {
                self.record_drift(&mut tx, scope, &current, &drift, now)
                    .await?;
            }
            self.event(
                scope.access,
                "key.external_state",
                kid,
                json!({"state": state.as_str(), "previous": before.state.as_str(), "workflow_run": scope.run_id}),
            )
            .write(&mut tx)
            .await?;
            let replaced =
                sobjects::replaced_versions(&mut tx, account, &scope.group.id, before.name())
                    .await?;
            for old in &replaced {
                let Some(e) = &old.external else { continue };
                let patch = Patch {
                    external: Some(remote_state_of(e, state, deletion, now)),
                    ..Patch::default()
                };
                sobjects::apply(&mut tx, account, &old.kid, old.version, &patch)
                    .await
                    .map_err(integrity)?;
            }
            let event = match state {
                RemoteState::SoftDeleted => Some(EventType::SoftDeleted),
                RemoteState::Purged => Some(EventType::Purged),
                _ => None,
            };
            if let Some(event) = event {
                let data = json!({"kid": kid, "name": current.name, "group_id": scope.group.id,
                    "external_name": before.name(), "scheduled_purge_date": deletion.scheduled_purge.map(crate::time::format_dsm)});
                notifications::enqueue(&mut tx, account, event, &data, now).await?;
            }
            tx.commit().await?;
            self.forget(kid);
            for old in &replaced {
                self.forget(&old.kid);
            }
            return Ok(true);
        }
        Err(KeyError::Concurrent)
    }

    /// Stores keys found in the HSM as virtual keys of the group, each with its escrowed
    /// backup, in one transaction; keys that already have one (compared without case) are
    /// skipped.
    pub async fn adopt(
        &self,
        scope: RunScope<'_>,
        batch: Vec<(RemoteKey, Vec<u8>)>,
    ) -> Result<Vec<String>> {
        let account = &scope.access.account_id;
        let now = self.now();
        let labels: Vec<String> = batch.iter().map(|(r, _)| r.name.clone()).collect();
        let instance = scope.link.instance_name().unwrap_or_default();
        let mut tx = self.catalog().begin().await?;
        let mut present =
            sobjects::external_labels_present(&mut tx, &scope.group.id, &labels).await?;
        let mut kids = Vec::new();
        for (r, backup) in batch {
            if !present.insert(r.name.to_lowercase()) {
                continue;
            }
            // The key's own name when free in the account, else qualified by the instance.
            let mut name = r.name.clone();
            let mut n = 1;
            while sobjects::name_taken(&mut tx, account, &name).await? {
                n += 1;
                name = if n == 2 {
                    format!("{} ({instance})", r.name)
                } else {
                    format!("{} ({instance}) {n}", r.name)
                };
            }
            let o = self.adopted_object(scope, &r, name);
            sobjects::insert(&mut tx, &o).await?;
            let sealed = self.catalog().seal(&escrow_context(&o.kid), &backup);
            sobjects::put_escrow(&mut tx, &o.kid, &sealed, now).await?;
            self.event(
                scope.access,
                "key.sync",
                &o.kid,
                json!({"name": o.name, "external_name": r.name, "group_id": scope.group.id, "workflow_run": scope.run_id}),
            )
            .write(&mut tx)
            .await?;
            notifications::enqueue(
                &mut tx,
                account,
                EventType::Found,
                &json!({"kid": o.kid, "name": o.name, "group_id": scope.group.id, "external_name": r.name}),
                now,
            )
            .await?;
            kids.push(o.kid);
        }
        tx.commit().await?;
        Ok(kids)
    }

    fn adopted_object(&self, scope: RunScope<'_>, r: &RemoteKey, name: String) -> SObject {
        let now = self.now();
        let p = &r.properties;
        let key_ops = merge_ops(&KeyOps::default(), &r.ops);
        SObject {
            kid: new_id(),
            account_id: scope.access.account_id.clone(),
            group_id: scope.group.id.clone(),
            name,
            description: None,
            obj_type: obj_type_of(&r.spec),
            key_size: r.spec.size,
            curve: r.spec.curve.and_then(curve_of),
            never_exportable: !key_ops.contains(KeyOp::Export),
            key_ops,
            enabled: p.enabled,
            activation_date: p.not_before.or(p.created).or(Some(now)),
            deactivation_date: p.expires,
            compromise_date: None,
            destruction_date: None,
            revocation_reason: None,
            created_at: now,
            lastused_at: None,
            creator: creator(&scope.access.principal),
            origin: Origin::External,
            material: None,
            pub_key: public_der(r),
            kcv: None,
            external: Some(self.external_of(scope, r, KeySource::External)),
            tags: r
                .tags
                .iter()
                .map(|t| (t.name.clone(), t.value.clone()))
                .collect(),
            rotated_at: None,
            version: 0,
        }
    }

    /// Removes a virtual key and its escrowed backup (FLOWS F22; the script has checked the
    /// HSM no longer has the key).
    pub async fn remove_virtual(&self, scope: RunScope<'_>, kid: &str) -> Result<()> {
        let o = self.in_group(scope, kid).await?;
        may_manage(scope.access, &o)?;
        super::access::approved(scope.access, scope.group, Some(Protected::DeleteSobjects))?;
        let mut tx = self.catalog().begin().await?;
        if !sobjects::delete(&mut tx, &scope.access.account_id, kid).await? {
            return Err(KeyError::NotFound(format!("no key {kid}")));
        }
        self.event(
            scope.access,
            "key.delete",
            kid,
            json!({"name": o.name, "workflow_run": scope.run_id, "escrow_removed": true}),
        )
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        self.forget(kid);
        Ok(())
    }

    /// The escrowed backup of a virtual key, opened.
    pub async fn escrow(&self, scope: RunScope<'_>, kid: &str) -> Result<Vec<u8>> {
        let o = self.in_group(scope, kid).await?;
        let mut conn = self.catalog().conn().await?;
        let sealed = sobjects::get_escrow(&mut conn, &o.kid)
            .await?
            .ok_or_else(|| KeyError::NotFound(format!("no escrowed backup of key {}", o.kid)))?;
        Ok(self
            .catalog()
            .open_sealed(&escrow_context(&o.kid), &sealed)?)
    }

    /// Replaces the escrowed backup of a virtual key.
    pub async fn put_escrow(&self, scope: RunScope<'_>, kid: &str, backup: &[u8]) -> Result<()> {
        let o = self.in_group(scope, kid).await?;
        let sealed = self.catalog().seal(&escrow_context(&o.kid), backup);
        let mut tx = self.catalog().begin().await?;
        sobjects::put_escrow(&mut tx, &o.kid, &sealed, self.now()).await?;
        self.event(
            scope.access,
            "key.escrow",
            kid,
            json!({"workflow_run": scope.run_id}),
        )
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The group's virtual keys, without reservations in progress.
    pub async fn linked(&self, scope: RunScope<'_>) -> Result<Vec<ExternalRef>> {
        let mut conn = self.catalog().conn().await?;
        Ok(sobjects::external_refs(&mut conn, &scope.group.id)
            .await?
            .into_iter()
            .filter(|r| r.external.state != RemoteState::Creating)
            .collect())
    }

    /// The HSM names the group's virtual keys and reservations use, lowercased.
    pub async fn known_names(&self, scope: RunScope<'_>) -> Result<HashSet<String>> {
        let mut conn = self.catalog().conn().await?;
        Ok(sobjects::external_refs(&mut conn, &scope.group.id)
            .await?
            .into_iter()
            .map(|r| r.external.name().to_lowercase())
            .collect())
    }

    /// A virtual key of the run's group.
    pub async fn in_group(&self, scope: RunScope<'_>, kid: &str) -> Result<SObject> {
        let mut conn = self.catalog().conn().await?;
        match sobjects::get(&mut conn, &scope.access.account_id, kid).await? {
            Some(o) if o.group_id == scope.group.id && o.is_virtual() => Ok(o),
            _ => Err(KeyError::NotFound(format!(
                "no virtual key {kid} in this group"
            ))),
        }
    }

    /// The virtual key of the run's group for a name in its HSM, if there is one.
    pub async fn virtual_named(&self, scope: RunScope<'_>, name: &str) -> Result<Option<String>> {
        let mut conn = self.catalog().conn().await?;
        Ok(
            sobjects::by_external_name(&mut conn, &scope.access.account_id, &scope.group.id, name)
                .await?
                .map(|o| o.kid),
        )
    }
}

/// The `external` document with the HSM key's new state (and, while soft-deleted, when it
/// was deleted and will be purged).
fn remote_state_of(
    before: &ExternalKey,
    state: RemoteState,
    deletion: &Deletion,
    now: i64,
) -> ExternalKey {
    let mut ext = before.clone();
    ext.state = state;
    match state {
        RemoteState::SoftDeleted => {
            ext.deleted_date = deletion.deleted;
            ext.scheduled_purge_date = deletion.scheduled_purge;
            ext.recovery_id = deletion.recovery_id.clone();
        }
        RemoteState::Purged => {
            if ext.purged_seen.is_none() {
                ext.purged_seen = Some(now);
            }
        }
        _ => {
            ext.deleted_date = None;
            ext.scheduled_purge_date = None;
            ext.recovery_id = None;
            ext.purged_seen = None;
        }
    }
    ext
}
