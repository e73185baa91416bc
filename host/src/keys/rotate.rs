//! Rotation (DSM rekey): a key is replaced by a new one that takes its name, as Fortanix DSM
//! does it. The old key is renamed `<name> (rotated at <time>)`, keeps its id and its
//! material (so what it protected can still be opened), and is linked to its replacement
//! (`replaced` / `replacement`); clients find the current key by name. Its rotation policy
//! moves to the replacement in the same transaction, so rotation and re-arming are one
//! change.
//!
//! - A key held in the catalog gets new material here; the linked copies the caller chooses
//!   (`all_external`, or a selection) get that material as a new version of their HSM key
//!   (FLOWS F24), one workflow run per HSM (`hsm`).
//! - A virtual key gets a new version in its HSM (F23), or, with `rotate_from`, a new version
//!   holding a catalog key's material (F26): see `rotate_hsm`.
//!
//! The replacement never permits EXPORT unless the key it replaces did, whatever the request
//! says, and each rotation is put to the policies as a `rotate`.

use std::collections::BTreeMap;

use serde_json::json;

use crate::audit::Event;
use crate::auth::Access;
use crate::catalog::notifications::{self, EventType};
use crate::catalog::rotation::{self, CopySelection, RotationPolicy, Step, StepKind};
use crate::catalog::schedule;
use crate::catalog::sobjects::{
    self, KeyState, LinkKind, Patch, RemoteState, SObject, material_context,
};
use crate::catalog::{Conn, new_id};
use crate::crypto;
use crate::plugins::policy::Action;
use crate::time::format_dsm;

use super::access::{approved, may_manage};
use super::build::{RekeyChange, policy_row, successor};
use super::error::{KeyError, Result};
use super::flows::CopyOutcome;
use super::flows::FlowMaterial;
use super::flows::Trigger;
use super::tiers;
use super::{KeyRef, KeyService, KeyView, creator, integrity};
use crate::catalog::approvals::Protected;

/// Managed HSM keeps at most this many versions of a key; rotations count towards it.
pub const MAX_HSM_VERSIONS: i64 = 100;

/// A rotation (DSM `SobjectRekeyRequest`).
#[derive(Debug, Clone, Default)]
pub struct RekeySpec {
    pub key: Option<KeyRef>,
    /// Deactivate the replaced key (it can still decrypt and verify).
    pub deactivate_rotated_key: bool,
    /// Attributes of the replacement; unset ones are the replaced key's.
    pub change: RekeyChange,
    /// Which linked copies in HSMs rotate along (keys held in the catalog).
    pub copies: Option<CopySelection>,
    /// Virtual keys: the catalog key whose material the new version takes (FLOWS F26).
    pub rotate_from: Option<KeyRef>,
    /// `Some(None)` removes the policy; unset, the replaced key's policy moves over.
    pub rotation_policy: Option<Option<RotationPolicy>>,
    /// What asked for the rotation (recorded with its workflow runs).
    pub trigger: Trigger,
}

/// What a rotation did.
#[derive(Debug, Clone)]
pub struct Rekeyed {
    /// The replacement.
    pub key: KeyView,
    /// The key it replaced.
    pub replaced: String,
    /// Each linked copy that was to rotate along, and how it went.
    pub copies: Vec<CopyOutcome>,
}

impl KeyService {
    /// Rotates a key (POST /crypto/v1/keys/rekey, scheduled rotations, the `rotate`
    /// workflows).
    pub async fn rekey(&self, access: &Access, spec: RekeySpec) -> Result<Rekeyed> {
        let key = spec
            .key
            .clone()
            .ok_or_else(|| KeyError::invalid("name", "name the key to rotate (or its kid)"))?;
        let current = self.resolve(access, &key).await?;
        may_manage(access, &current)?;
        let group = self.group(&access.account_id, &current.group_id).await?;
        approved(access, &group, Some(Protected::RotateSobjects))?;
        rotatable(&current, self.now())?;
        if let Some(Some(p)) = &spec.rotation_policy {
            policy_fits(&current, p)?;
        }
        if current.is_virtual() {
            if spec.copies.is_some() {
                return Err(KeyError::invalid(
                    "rotate_copied_keys",
                    "applies to keys held in the catalog that have linked copies",
                ));
            }
            return self.rekey_virtual(access, current, spec).await;
        }
        if spec.rotate_from.is_some() {
            return Err(KeyError::invalid(
                "rotate_from",
                "applies to keys of an external key manager (their new version takes the material of a catalog key)",
            ));
        }
        self.rekey_catalog(access, current, spec).await
    }

    /// A key held in the catalog gets new material, and the chosen linked copies get it as
    /// a new version in their HSMs.
    async fn rekey_catalog(
        &self,
        access: &Access,
        current: SObject,
        spec: RekeySpec,
    ) -> Result<Rekeyed> {
        let now = self.now();
        let new = successor(access, &current, &spec.change, now)?;
        let group = self.group(&access.account_id, &current.group_id).await?;
        let verdict = self
            .enforce(
                access,
                &group,
                Action::Rotate,
                "key.rotate",
                &new,
                Some(&current),
            )
            .await?;
        let (plans, mut refused) = self
            .copy_plans(access, &current, &new, spec.copies.as_ref())
            .await?;
        let (t, size, curve) = (new.obj_type, new.key_size, new.curve);
        let material = tokio::task::spawn_blocking(move || crypto::generate(t, size, curve))
            .await
            .map_err(|e| KeyError::Internal(e.to_string()))??;
        let mut new = new;
        new.material = Some(
            self.catalog()
                .seal(&material_context(&new.kid), &material.to_der()),
        );
        new.pub_key = material.public_key_der();
        new.kcv = material.kcv();

        let lease = self.lease_until();
        let steps: Vec<Step> = plans
            .iter()
            .map(|p| Step {
                id: new_id(),
                account_id: access.account_id.clone(),
                kind: StepKind::Copy,
                target_kid: p.copy.kid.clone(),
                group_id: p.copy.group_id.clone(),
                source_kid: Some(new.kid.clone()),
                prior_version: p.copy.external.as_ref().and_then(|e| e.id.version.clone()),
                deactivate_old: spec.deactivate_rotated_key,
                owner: creator(&access.principal),
                worker: self.inner.lease.worker.clone(),
                lease_until: lease,
                status: rotation::StepStatus::Pending,
                new_kid: None,
                error: None,
                created_at: now,
                updated_at: now,
            })
            .collect();
        let mut details = json!({
            "name": current.name, "replaced": current.kid, "deactivated": spec.deactivate_rotated_key,
            "copies": plans.iter().map(|p| &p.copy.kid).collect::<Vec<_>>(),
        });
        if let serde_json::Value::Object(p) = verdict.audit_details()
            && let Some(d) = details.as_object_mut()
        {
            d.extend(p);
        }
        let mut tx = self.catalog().begin().await?;
        self.retire(&mut tx, access, &current, spec.deactivate_rotated_key, now)
            .await?;
        sobjects::insert(&mut tx, &new).await.map_err(integrity)?;
        self.rearm(
            &mut tx,
            access,
            &current,
            &new,
            spec.rotation_policy.clone(),
            now,
        )
        .await?;
        for s in &steps {
            rotation::insert_step(&mut tx, s).await.map_err(|e| {
                if e.is_unique_violation() {
                    KeyError::state(format!(
                        "the copy {} is being rotated already; try again when that has finished",
                        s.target_kid
                    ))
                } else {
                    e.into()
                }
            })?;
        }
        self.event(access, "key.rotate", &new.kid, details)
            .write(&mut tx)
            .await?;
        rotated_notice(&mut tx, &current, &new, now).await?;
        tx.commit().await?;
        self.forget(&current.kid);

        let mut copies = if steps.is_empty() {
            vec![]
        } else {
            let material = FlowMaterial {
                material,
                plain_ok: tiers::plain_allowed(Some(&new)),
            };
            self.run_copy_steps(access, &material, plans, steps, false, spec.trigger)
                .await
        };
        copies.append(&mut refused);
        let mut view = self.view(access, &new.kid).await?;
        view.warnings = verdict.warnings;
        Ok(Rekeyed {
            key: view,
            replaced: current.kid,
            copies,
        })
    }

    /// Renames the replaced key and marks it rotated (deactivated if asked), at the version
    /// it was read; the replacement can take the name after this.
    pub(super) async fn retire(
        &self,
        c: &mut Conn,
        access: &Access,
        old: &SObject,
        deactivate: bool,
        now: i64,
    ) -> Result<()> {
        let fresh = sobjects::get(c, &access.account_id, &old.kid)
            .await?
            .ok_or_else(|| KeyError::NotFound(format!("no key {}", old.kid)))?;
        if fresh.rotated_at.is_some() {
            return Err(KeyError::state(format!(
                "the key {} was rotated meanwhile; rotate its replacement",
                old.kid
            )));
        }
        let mut patch = Patch {
            name: Some(rotated_name(c, &access.account_id, &old.name, now).await?),
            rotated_at: Some(now),
            ..Patch::default()
        };
        if deactivate && fresh.state(now) == KeyState::Active {
            patch.deactivation_date = Some(Some(now));
        }
        if !sobjects::apply(c, &access.account_id, &old.kid, old.version, &patch)
            .await
            .map_err(integrity)?
        {
            return Err(KeyError::Concurrent);
        }
        Ok(())
    }

    /// Links the replacement to the replaced key and moves (or sets, or drops) the rotation
    /// policy, finishing a scheduled rotation's fire in the same transaction.
    pub(super) async fn rearm(
        &self,
        c: &mut Conn,
        access: &Access,
        old: &SObject,
        new: &SObject,
        policy: Option<Option<RotationPolicy>>,
        now: i64,
    ) -> Result<()> {
        sobjects::add_link(
            c,
            &sobjects::Link {
                kind: LinkKind::Replacement,
                source: old.kid.clone(),
                target: new.kid.clone(),
                target_group: Some(new.group_id.clone()),
                created_by: access.principal.id().to_string(),
                created_at: now,
            },
        )
        .await?;
        match policy {
            None => {
                if let Some(row) = rotation::policy_of(c, &old.kid).await? {
                    let next = row.policy.next_due(row.set_at, Some(now));
                    rotation::move_policy(c, &old.kid, &new.kid, now, next).await?;
                }
            }
            Some(p) => {
                rotation::remove_policy(c, &old.kid).await?;
                if let Some(p) = &p {
                    rotation::set_policy(c, &policy_row(access, &new.kid, p.clone(), now)).await?;
                }
                Event::new(
                    Some(&access.account_id),
                    &access.principal,
                    "key.rotation_policy",
                    now,
                )
                .object("sobject", &new.kid)
                .details(json!({"rotation_policy": p, "replaced": old.kid}))
                .write(c)
                .await?;
            }
        }
        schedule::rotation_done(c, &old.kid, None, now).await?;
        Ok(())
    }

    /// Sets or removes a key's rotation policy (PATCH `rotation_policy`, or at creation).
    pub async fn set_rotation_policy(
        &self,
        access: &Access,
        kid: &str,
        policy: Option<RotationPolicy>,
    ) -> Result<KeyView> {
        let o = self.get(access, kid).await?;
        may_manage(access, &o)?;
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        match &policy {
            Some(p) => {
                check_policy(&o, p, now)?;
                rotation::set_policy(&mut tx, &policy_row(access, kid, p.clone(), now)).await?;
            }
            None => {
                rotation::remove_policy(&mut tx, kid).await?;
            }
        }
        self.event(
            access,
            "key.rotation_policy",
            kid,
            json!({"rotation_policy": policy}),
        )
        .write(&mut tx)
        .await?;
        tx.commit().await?;
        self.view(access, kid).await
    }

    /// The time a lease taken now runs out.
    pub(super) fn lease_until(&self) -> i64 {
        self.now() + self.inner.lease.secs
    }
}

/// Whether a key can be rotated: a current key (not one a rotation replaced) that is not
/// destroyed.
pub(super) fn rotatable(o: &SObject, now: i64) -> Result<()> {
    if o.rotated_at.is_some() {
        return Err(KeyError::state(
            "the key was replaced by a rotation; rotate its replacement (links.replacement)",
        ));
    }
    if o.state(now) == KeyState::Destroyed {
        return Err(KeyError::state("a destroyed key cannot be rotated"));
    }
    if o.remote_state() == Some(RemoteState::Creating) {
        return Err(KeyError::state(
            "the key is still being created in the external key manager",
        ));
    }
    Ok(())
}

/// Whether a key may have this policy: a key that can be rotated, and copies to rotate along
/// only for keys held in the catalog.
pub(super) fn check_policy(o: &SObject, p: &RotationPolicy, now: i64) -> Result<()> {
    rotatable(o, now)?;
    policy_fits(o, p)
}

/// A policy's copy selection makes sense only for keys held in the catalog.
fn policy_fits(o: &SObject, p: &RotationPolicy) -> Result<()> {
    if o.is_virtual() && p.rotate_copied_keys.is_some() {
        return Err(KeyError::invalid(
            "rotation_policy.rotate_copied_keys",
            "applies to keys held in the catalog that have linked copies",
        ));
    }
    Ok(())
}

/// `<name> (rotated at <time>)`, made unique when one second saw two rotations.
async fn rotated_name(c: &mut Conn, account: &str, name: &str, now: i64) -> Result<String> {
    let base = format!("{name} (rotated at {})", format_dsm(now));
    if !sobjects::name_taken(c, account, &base).await? {
        return Ok(base);
    }
    for n in 2.. {
        let candidate = format!("{name} (rotated at {}, {n})", format_dsm(now));
        if !sobjects::name_taken(c, account, &candidate).await? {
            return Ok(candidate);
        }
    }
    unreachable!("some suffix is free")
}

/// Writes the `key.rotated` notification for the endpoints that take it.
pub(super) async fn rotated_notice(
    c: &mut Conn,
    old: &SObject,
    new: &SObject,
    now: i64,
) -> Result<()> {
    let mut data = BTreeMap::new();
    data.insert("kid", json!(new.kid));
    data.insert("name", json!(new.name));
    data.insert("group_id", json!(new.group_id));
    data.insert("replaced", json!(old.kid));
    if let Some(e) = &new.external {
        data.insert("external_key", json!(e.key_id));
    }
    notifications::enqueue(c, &old.account_id, EventType::Rotated, &json!(data), now).await?;
    Ok(())
}
