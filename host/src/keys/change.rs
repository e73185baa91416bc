//! Changes of existing keys: updates, lifecycle operations (activate, deactivate, revoke,
//! destroy) and deletion. Each reads the key, checks the rules on what it read, and writes
//! only the fields it changes, at the version it read; when another request got in between,
//! it starts over on the fresh row. Changes a virtual key's HSM must know of go there first
//! (`hsm`).

use serde_json::json;

use crate::auth::Access;
use crate::catalog::rotation::RotationPolicy;
use crate::catalog::sobjects::{self, KeyOps, KeyState, Patch, SObject, Tags};
use crate::plugins::policy::Action;

use super::access::{approved, may_manage};
use super::error::{KeyError, Result};
use super::rules::{
    self, Transition, check_name, check_tags, date_changes, enable_change, ops_change,
};
use super::{CAS_ATTEMPTS, KeyService, KeyView};
use crate::catalog::approvals::Protected;

/// An update of a key (`None`: unchanged; for dates `Some(None)` removes the date).
#[derive(Debug, Clone, Default)]
pub struct KeyChange {
    pub name: Option<String>,
    pub description: Option<String>,
    pub key_ops: Option<KeyOps>,
    pub enabled: Option<bool>,
    pub activation_date: Option<Option<i64>>,
    pub deactivation_date: Option<Option<i64>>,
    /// Replaces the custom metadata.
    pub tags: Option<Tags>,
    /// Sets and removes single tags, on the key as it is when the change is written: two
    /// people editing different tags at once both keep their edit.
    pub tag_edits: Option<TagEdits>,
    /// Sets (`Some(Some)`) or removes (`Some(None)`) the rotation policy.
    pub rotation_policy: Option<Option<RotationPolicy>>,
}

/// Tags to set (or overwrite) and to remove.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TagEdits {
    pub set: Tags,
    pub remove: Vec<String>,
}

impl KeyService {
    pub async fn update(&self, access: &Access, kid: &str, change: KeyChange) -> Result<KeyView> {
        let Some(policy) = change.rotation_policy.clone() else {
            return self.update_fields(access, kid, change).await;
        };
        // Checked before anything is written, so a bad policy changes nothing.
        let current = self.get(access, kid).await?;
        may_manage(access, &current)?;
        if let Some(p) = &policy {
            super::rotate::check_policy(&current, p, self.now())?;
        }
        let fields = KeyChange {
            rotation_policy: None,
            ..change
        };
        let mut v = self.update_fields(access, kid, fields).await?;
        let warnings = std::mem::take(&mut v.warnings);
        let mut v = self.set_rotation_policy(access, kid, policy).await?;
        v.warnings = warnings;
        Ok(v)
    }

    async fn update_fields(
        &self,
        access: &Access,
        kid: &str,
        change: KeyChange,
    ) -> Result<KeyView> {
        for _ in 0..CAS_ATTEMPTS {
            let current = self.get(access, kid).await?;
            may_manage(access, &current)?;
            let now = self.now();
            if current.state(now) == KeyState::Destroyed {
                return Err(KeyError::state("a destroyed key cannot be changed"));
            }
            let source_ops = match &change.key_ops {
                Some(_) => self.copy_source_ops(access, &current.kid).await?,
                None => None,
            };
            let patch = update_patch(&current, &change, source_ops.as_ref(), now)?;
            if patch.is_empty() {
                return self.view(access, kid).await;
            }
            let new = patch.applied_to(&current);
            let group = self.group(&access.account_id, &current.group_id).await?;
            for field in patch.fields() {
                approved(
                    access,
                    &group,
                    Some(match field {
                        "key_ops" => Protected::UpdateKeyOps,
                        "enabled" => Protected::UpdateSobjectsEnabledState,
                        _ => Protected::UpdateSobjectsProfile,
                    }),
                )?;
            }
            let verdict = self
                .enforce(
                    access,
                    &group,
                    Action::Update,
                    "key.update",
                    &new,
                    Some(&current),
                )
                .await?;
            let details =
                json!({"fields": patch.fields(), "policy": verdict.audit_details().get("policy")});
            // The versions a rotation replaced live on in the HSM as they were: their changes
            // are the catalog's alone (a change there would reach the current version).
            if current.is_virtual() && current.rotated_at.is_none() && touches_hsm(&patch) {
                let mut v = self
                    .push_change(access, &current, patch, "key.update", details)
                    .await?;
                v.warnings = verdict.warnings;
                return Ok(v);
            }
            let event = self.event(access, "key.update", kid, details);
            if self.write_patch(access, &current, &patch, event).await? {
                let mut v = self.view(access, kid).await?;
                v.warnings = verdict.warnings;
                return Ok(v);
            }
        }
        Err(KeyError::Concurrent)
    }

    /// Activate, deactivate, revoke or destroy, by the KMIP lifecycle. Deactivating or
    /// revoking a virtual key disables its HSM key (FLOWS F20); its material cannot be
    /// destroyed from here.
    pub async fn transition(&self, access: &Access, kid: &str, t: Transition) -> Result<KeyView> {
        let action = t.audit_action();
        let details = match &t {
            Transition::Revoke { reason, .. } => json!({"reason": reason}),
            _ => serde_json::Value::Null,
        };
        for _ in 0..CAS_ATTEMPTS {
            let current = self.get(access, kid).await?;
            may_manage(access, &current)?;
            let group = self.group(&access.account_id, &current.group_id).await?;
            approved(
                access,
                &group,
                Some(match t {
                    Transition::Activate => Protected::ActivateSobjects,
                    Transition::Deactivate | Transition::Revoke { .. } => Protected::RevokeSobjects,
                    Transition::Destroy => Protected::DestroySobjects,
                }),
            )?;
            let now = self.now();
            let mut patch = rules::transition(&current, &t, now)?;
            if patch.is_empty() {
                return self.view(access, kid).await;
            }
            if current.is_virtual() && current.rotated_at.is_none() {
                if t == Transition::Destroy {
                    return Err(KeyError::state(
                        "the key's material lives in the external key manager; soft-delete it there (POST /crypto/v1/keys/{kid}/schedule_deletion)",
                    ));
                }
                if current.enabled
                    && matches!(
                        patch.applied_to(&current).state(now),
                        KeyState::Deactivated | KeyState::Compromised
                    )
                {
                    patch.enabled = Some(false);
                }
                return self
                    .push_change(access, &current, patch, action, details)
                    .await;
            }
            let event = self.event(access, action, kid, details.clone());
            if self.write_patch(access, &current, &patch, event).await? {
                return self.view(access, kid).await;
            }
        }
        Err(KeyError::Concurrent)
    }

    /// The operations of the key `kid` copies, when it is a copy (whatever group the source is
    /// in: the ceiling holds for whoever updates the copy).
    async fn copy_source_ops(&self, access: &Access, kid: &str) -> Result<Option<KeyOps>> {
        let mut conn = self.catalog().conn().await?;
        let Some(link) = sobjects::links_of(&mut conn, kid)
            .await?
            .into_iter()
            .find(|l| l.kind == sobjects::LinkKind::Copy && l.target == kid)
        else {
            return Ok(None);
        };
        Ok(sobjects::get(&mut conn, &access.account_id, &link.source)
            .await?
            .map(|s| s.key_ops))
    }

    /// Deletes a key: one held here once it is no longer active, a virtual key once its HSM
    /// no longer has it (FLOWS F22).
    pub async fn delete(&self, access: &Access, kid: &str) -> Result<()> {
        let o = self.get(access, kid).await?;
        may_manage(access, &o)?;
        let group = self.group(&access.account_id, &o.group_id).await?;
        approved(access, &group, Some(Protected::DeleteSobjects))?;
        if o.is_virtual() {
            return self.delete_virtual(access, &o).await;
        }
        rules::deletable(&o, self.now())?;
        let mut tx = self.catalog().begin().await?;
        // Re-read under the write lock: the key must not have become active again (it cannot)
        // nor have been deleted meanwhile.
        let Some(o) = sobjects::get(&mut tx, &access.account_id, kid).await? else {
            return Err(KeyError::NotFound(format!("no key {kid}")));
        };
        sobjects::delete(&mut tx, &access.account_id, kid).await?;
        self.event(access, "key.delete", kid, json!({"name": o.name}))
            .write(&mut tx)
            .await?;
        tx.commit().await?;
        self.forget(kid);
        Ok(())
    }
}

/// The patch of an update, checked against the key as read.
fn update_patch(
    current: &SObject,
    c: &KeyChange,
    source_ops: Option<&KeyOps>,
    now: i64,
) -> Result<Patch> {
    let mut p = Patch::default();
    if let Some(n) = &c.name {
        let n = check_name(n)?;
        if n != current.name {
            p.name = Some(n);
        }
    }
    if let Some(d) = &c.description
        && current.description.as_ref() != Some(d)
    {
        p.description = Some(Some(d.clone()));
    }
    if let Some(ops) = &c.key_ops {
        ops_change(current, ops, source_ops)?;
        if *ops != current.key_ops {
            p.key_ops = Some(ops.clone());
        }
    }
    if let Some(e) = c.enabled {
        enable_change(current, e, now)?;
        if e != current.enabled {
            p.enabled = Some(e);
        }
    }
    let (activation, deactivation) =
        date_changes(current, c.activation_date, c.deactivation_date, now)?;
    p.activation_date = activation;
    p.deactivation_date = deactivation;
    let mut tags = c.tags.clone();
    if let Some(edits) = &c.tag_edits {
        // Applied to the row this attempt read: a retry after a concurrent write re-applies
        // them to the fresh one.
        let mut t = tags.unwrap_or_else(|| current.tags.clone());
        for k in &edits.remove {
            t.remove(k);
        }
        t.extend(edits.set.clone());
        tags = Some(t);
    }
    if let Some(tags) = tags {
        check_tags(&tags)?;
        if tags != current.tags {
            p.tags = Some(tags);
        }
    }
    Ok(p)
}

/// Whether a change concerns what the HSM holds of a virtual key.
fn touches_hsm(p: &Patch) -> bool {
    p.enabled.is_some()
        || p.key_ops.is_some()
        || p.tags.is_some()
        || p.activation_date.is_some()
        || p.deactivation_date.is_some()
}
