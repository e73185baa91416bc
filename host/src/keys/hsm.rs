//! Flows against a group's external key manager, run as the workflow scripts users can read
//! and edit: generate, import and copy into the HSM, push a change, soft delete, recover,
//! restore, purge and delete.
//!
//! Two things are settled here, before any script runs, so that no script can get them wrong:
//! - A new key's HSM name is reserved in the catalog first (a virtual key in state
//!   `Creating`, unique per group without case, like the HSM's names): of two requests for one
//!   name, one gets the key and the other a conflict, and neither touches the HSM twice.
//! - Changes of one key in its HSM never overlap: the runs that make them hold the key.

use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use crate::auth::Access;
use crate::catalog::groups::{Group, VaultType};
use crate::catalog::rotation::{self, PolicyRow, RotationPolicy};
use crate::catalog::sobjects::{
    self, ExternalId, ExternalKey, KeyOps, KeySource, Patch, RemoteState, SObject, Tags,
};
use crate::catalog::{new_id, workflow_runs};
use crate::crypto::Material;
use crate::kms::Link;
use crate::policy::Verdict;

use super::access::{approved, may_manage};
use super::build::{azure_name, key_input, policy_row};
use super::create::{name_taken, new_key_details};
use super::error::{KeyError, Result};
use super::flows::{FlowError, FlowOutcome, FlowRequest, Trigger};
use super::flows::{FlowMaterial, KeyTarget, Pending, PendingChange, PendingNew};
use super::tiers;
use super::{KeyService, KeyView};
use crate::catalog::approvals::Protected;

/// What changes in the HSM when a virtual key changes (the `update` script's
/// `input.changes`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RemoteChanges {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_before: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ops: Option<KeyOps>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<Tags>,
}

impl RemoteChanges {
    fn of(p: &Patch) -> Result<RemoteChanges> {
        let date = |field: &str, d: Option<Option<i64>>| match d {
            None => Ok(None),
            Some(Some(t)) => Ok(Some(t)),
            Some(None) => Err(KeyError::invalid(
                field,
                "cannot be removed from a key of an external key manager",
            )),
        };
        Ok(RemoteChanges {
            enabled: p.enabled,
            not_before: date("activation_date", p.activation_date)?,
            expires: date("deactivation_date", p.deactivation_date)?,
            ops: p.key_ops.clone(),
            tags: p.tags.clone(),
        })
    }

    fn is_empty(&self) -> bool {
        *self == RemoteChanges::default()
    }
}

/// The key-management workflows that change one key in its HSM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFlow {
    SoftDelete,
    Recover,
    Restore,
    Purge,
}

impl KeyFlow {
    fn workflow(self) -> &'static str {
        match self {
            KeyFlow::SoftDelete => "soft_delete",
            KeyFlow::Recover => "recover",
            KeyFlow::Restore => "restore",
            KeyFlow::Purge => "purge",
        }
    }
}

pub(super) fn exclusive_key(kid: &str) -> String {
    format!("key:{kid}")
}

impl KeyService {
    /// The link of a group, ready for calls to its chosen instance.
    pub fn link_for(&self, group: &Group) -> Result<Link> {
        let link = Link::of_group(self.catalog(), group)?;
        if link.instance().is_none() {
            return Err(KeyError::state(
                "the group has no Managed HSM instance yet; choose one (PATCH the group's external_kms.instance)",
            ));
        }
        Ok(link)
    }

    /// One run of a flow against the group's HSM, as `access`, started by the API.
    #[allow(
        clippy::too_many_arguments,
        reason = "one run's parts, named at the call sites"
    )]
    pub(super) async fn run(
        &self,
        access: &Access,
        workflow: &str,
        group: Arc<Group>,
        input: Value,
        material: Option<FlowMaterial>,
        pending: Option<Pending>,
        exclusive: Option<String>,
        run_id: Option<String>,
    ) -> Result<FlowOutcome> {
        let link = self.link_for(&group)?;
        self.launch(FlowRequest {
            workflow: workflow.into(),
            trigger: Trigger::Api,
            access: access.clone(),
            group,
            link,
            input,
            material,
            pending,
            exclusive,
            run_id,
        })
        .await
    }

    /// A new key in a linked group: its HSM name reserved, then generated in the HSM
    /// (`material` absent, F14) or imported into it (F15, F16 for a copy), then recorded by
    /// the script as a virtual key.
    #[allow(
        clippy::too_many_arguments,
        reason = "one new key's parts, named at the call sites"
    )]
    pub(super) async fn create_in_hsm(
        &self,
        access: &Access,
        group: Arc<Group>,
        mut o: SObject,
        verdict: Verdict,
        material: Option<Material>,
        copy_of: Option<&SObject>,
        policy: Option<&RotationPolicy>,
        hsm_name: Option<String>,
    ) -> Result<KeyView> {
        let link = self.link_for(&group)?;
        let vault_type = vault_type(&group);
        tiers::check_type(vault_type, &o)?;
        let transfer = match &material {
            Some(_) => Some(tiers::check_transfer(vault_type, copy_of)?),
            None => None,
        };
        let material = material.map(|m| FlowMaterial {
            material: m,
            plain_ok: tiers::plain_allowed(copy_of),
        });
        let (workflow, source, action) = match (&material, copy_of) {
            (None, _) => ("generate", KeySource::External, "key.create"),
            (Some(_), None) => ("import", KeySource::Keyward, "key.import"),
            (Some(_), Some(_)) => ("byok_copy", KeySource::Keyward, "key.copy"),
        };
        let name = hsm_name.unwrap_or_else(|| azure_name(&o.name));
        let run_id = new_id();
        let input_key = key_input(&o);
        o.external = Some(ExternalKey {
            kind: group
                .link
                .as_ref()
                .map(|l| l.kind.as_str().to_string())
                .unwrap_or_default(),
            hsm_group_id: group.id.clone(),
            instance: link.instance().map(str::to_string),
            id: ExternalId {
                label: name.clone(),
                version: None,
            },
            key_id: None,
            key_version: None,
            kty: None,
            source,
            state: RemoteState::Creating,
            managed: false,
            created: None,
            updated: None,
            recovery_level: None,
            synced_at: None,
            deleted_date: None,
            scheduled_purge_date: None,
            recovery_id: None,
            purged_seen: None,
            run_id: Some(run_id.clone()),
        });
        o.material = None;
        o.origin = sobjects::Origin::External;
        let policy = policy.map(|p| policy_row(access, &o.kid, p.clone(), self.now()));
        self.reserve(&o, &name, policy.as_ref()).await?;
        let mut input = json!({"key": input_key, "azure_name": name});
        if let Some(src) = copy_of {
            input["source"] = json!({"kid": src.kid, "name": src.name});
        }
        let mut audit_details = new_key_details(&o, &verdict, copy_of);
        audit_details["vault_type"] = json!(vault_type.as_str());
        if let Some(t) = transfer {
            // A plain transfer is an export of the material: the audit log says so.
            audit_details["transfer"] = json!(t.as_str());
        }
        let pending = PendingNew {
            audit_action: action.into(),
            audit_details,
            copy_of: copy_of.map(|s| s.kid.clone()),
            object: o,
        };
        let outcome = self
            .run(
                access,
                workflow,
                group,
                input,
                material,
                Some(Pending::New(pending)),
                None,
                Some(run_id),
            )
            .await?;
        let kid = outcome.recorded.ok_or_else(|| {
            KeyError::Flow(FlowError::Unrecorded {
                run_id: outcome.run_id.clone(),
                message: format!("the {workflow} workflow finished without recording the key"),
            })
        })?;
        let mut v = self.view(access, &kid).await?;
        v.warnings = verdict.warnings;
        Ok(v)
    }

    /// Stores the reservation of a new virtual key: its catalog name and its HSM name, both
    /// unique, before anything reaches the HSM; with its rotation policy, which goes if the
    /// reservation is released.
    async fn reserve(&self, o: &SObject, hsm_name: &str, policy: Option<&PolicyRow>) -> Result<()> {
        let mut tx = self.catalog().begin().await?;
        if sobjects::name_taken(&mut tx, &o.account_id, &o.name).await? {
            return Err(KeyError::NameTaken(format!(
                "a key named '{}' exists in this account",
                o.name
            )));
        }
        if let Some(holder) =
            sobjects::by_external_name(&mut tx, &o.account_id, &o.group_id, hsm_name).await?
        {
            let how = match holder.remote_state() {
                Some(RemoteState::Creating) => "which is being created",
                Some(RemoteState::SoftDeleted) => {
                    "which is soft-deleted there (recover or purge it, or choose another name)"
                }
                Some(RemoteState::Purged) => {
                    "which was purged there and can be restored from escrow (delete that key, or choose another name)"
                }
                _ => "(sync the group to manage it, or choose another name)",
            };
            return Err(KeyError::NameTaken(format!(
                "the HSM name '{hsm_name}' is taken by the key '{}' ({}), {how}",
                holder.name, holder.kid
            )));
        }
        // The unique index decides between requests that got here at the same time.
        sobjects::insert(&mut tx, o).await.map_err(|e| {
            if e.is_unique_violation() {
                KeyError::NameTaken(format!(
                    "the HSM name '{hsm_name}' is being taken by another request"
                ))
            } else {
                name_taken(e, &o.name)
            }
        })?;
        if let Some(p) = policy {
            rotation::set_policy(&mut tx, p).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Pushes a change of a virtual key to the HSM and saves it (F17 tags, F20 deactivate =
    /// disable); a change the HSM need not know of is saved here alone.
    pub(super) async fn push_change(
        &self,
        access: &Access,
        current: &SObject,
        patch: Patch,
        audit_action: &str,
        audit_details: Value,
    ) -> Result<KeyView> {
        let changes = RemoteChanges::of(&patch)?;
        if changes.is_empty() {
            let event = self.event(access, audit_action, &current.kid, audit_details);
            if !self.write_patch(access, current, &patch, event).await? {
                return Err(KeyError::Concurrent);
            }
            return self.view(access, &current.kid).await;
        }
        ensure_live(current)?;
        let group = self.group(&access.account_id, &current.group_id).await?;
        let name = current
            .external_name()
            .ok_or_else(|| KeyError::Internal("virtual key without an external name".into()))?;
        let outcome = self
            .run(
                access,
                "update",
                group,
                json!({"kid": current.kid, "azure_name": name, "changes": changes}),
                None,
                Some(Pending::Change(PendingChange {
                    kid: current.kid.clone(),
                    hsm_name: name.to_string(),
                    patch,
                    audit_action: audit_action.into(),
                    audit_details,
                })),
                Some(exclusive_key(&current.kid)),
                None,
            )
            .await?;
        let kid = outcome
            .recorded
            .ok_or_else(|| KeyError::Internal("the update workflow did not save the key".into()))?;
        self.view(access, &kid).await
    }

    /// Deletes a virtual key (F22): the `delete` script removes it once the HSM no longer has
    /// the key, with its escrowed backup.
    pub(super) async fn delete_virtual(&self, access: &Access, o: &SObject) -> Result<()> {
        self.key_run(access, o, "delete").await?;
        Ok(())
    }

    /// Soft delete (F21, `confirm` checked by the caller), recover, restore from escrow,
    /// purge: one run of the flow's script, holding the key.
    pub async fn key_flow(&self, access: &Access, kid: &str, flow: KeyFlow) -> Result<KeyView> {
        let o = self.get(access, kid).await?;
        may_manage(access, &o)?;
        let group = self.group(&access.account_id, &o.group_id).await?;
        approved(
            access,
            &group,
            Some(match flow {
                KeyFlow::SoftDelete => Protected::DeleteSobjects,
                KeyFlow::Purge => Protected::DeleteKeyMaterial,
                KeyFlow::Recover | KeyFlow::Restore => Protected::UpdateSobjectsProfile,
            }),
        )?;
        flow_allowed(&o, flow)?;
        self.key_run(access, &o, flow.workflow()).await?;
        self.forget(&o.kid);
        self.view(access, kid).await
    }

    async fn key_run(&self, access: &Access, o: &SObject, workflow: &str) -> Result<FlowOutcome> {
        let group = self.group(&access.account_id, &o.group_id).await?;
        let name = o
            .external_name()
            .ok_or_else(|| KeyError::Internal("virtual key without an external name".into()))?;
        if o.remote_state() == Some(RemoteState::Creating) {
            return Err(KeyError::state(
                "the key is still being created in the external key manager",
            ));
        }
        self.run(
            access,
            workflow,
            group,
            json!({"kid": o.kid, "azure_name": name}),
            None,
            Some(Pending::Key(KeyTarget {
                kid: o.kid.clone(),
                hsm_name: name.to_string(),
            })),
            Some(exclusive_key(&o.kid)),
            None,
        )
        .await
    }

    /// Whether the run that reserved a key's name is over (a crash leaves it interrupted).
    pub(super) async fn reservation_is_stale(&self, o: &SObject) -> Result<bool> {
        let Some(run) = o.external.as_ref().and_then(|e| e.run_id.as_deref()) else {
            return Ok(true);
        };
        let mut conn = self.catalog().conn().await?;
        Ok(!workflow_runs::is_running(&mut conn, run).await?)
    }
}

/// The kind of a linked group's instance.
pub(super) fn vault_type(group: &Group) -> VaultType {
    group
        .link
        .as_ref()
        .map_or(VaultType::Managed, |l| l.config.vault_type())
}

/// Whether a key-manager flow may start on the key (the HSM has the last word).
pub(super) fn flow_allowed(o: &SObject, flow: KeyFlow) -> Result<()> {
    if !o.is_virtual() {
        return Err(KeyError::state(
            "the key is not a key of an external key manager",
        ));
    }
    if o.rotated_at.is_some() {
        return Err(KeyError::state(
            "this is a version a rotation replaced; soft delete, recover, restore and purge act on the whole HSM key, through its current version (links.replacement)",
        ));
    }
    if o.remote_state() == Some(RemoteState::Creating) {
        return Err(KeyError::state(
            "the key is still being created in the external key manager",
        ));
    }
    if flow == KeyFlow::SoftDelete {
        ensure_live(o)?;
    }
    Ok(())
}

/// A virtual key whose HSM key exists.
pub(super) fn ensure_live(o: &SObject) -> Result<()> {
    match o.remote_state() {
        Some(RemoteState::SoftDeleted) => Err(KeyError::state(
            "the key is soft-deleted in the external key manager; recover it first",
        )),
        Some(RemoteState::Purged) => Err(KeyError::state(
            "the key was purged from the external key manager; restore it from escrow first",
        )),
        Some(RemoteState::Creating) => Err(KeyError::state(
            "the key is still being created in the external key manager",
        )),
        _ => Ok(()),
    }
}
