//! New keys: generated, imported (plain, or wrapped by a key-encryption key of the catalog)
//! and copied, into a regular group (material sealed in the catalog) or a group linked to an
//! external key manager (material in the HSM, a virtual key here).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::auth::{Access, Principal};
use crate::catalog::groups::Group;
use crate::catalog::rotation::{self, RotationPolicy};
use crate::catalog::sobjects::{
    self, Curve, KeyOps, ObjType, Origin, SObject, Tags, curve_name, material_context,
};
use crate::catalog::{apps, new_id};
use crate::crypto::{self, Material};
use crate::plugins::policy::Action;
use crate::policy::Verdict;

use super::build::{copy_link, policy_row};

use super::access::{approved, may_manage, may_manage_group};
use super::error::{KeyError, Result};
use super::rules::{
    check_dates, check_hsm_name, check_name, check_ops, check_tags, copy_ops, copyable,
};
use super::usage::WrapMode;
use super::{KeyRef, KeyService, KeyView, creator, view};
use crate::catalog::approvals::Protected;

/// A key to create or import. Type, size and curve say what it is; everything else is as the
/// caller asks or the defaults.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub name: String,
    /// The group (applications: their default group when absent).
    pub group_id: Option<String>,
    pub obj_type: ObjType,
    pub key_size: Option<u32>,
    pub curve: Option<Curve>,
    /// Default: every operation of the type except EXPORT.
    pub key_ops: Option<KeyOps>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub activation_date: Option<i64>,
    pub deactivation_date: Option<i64>,
    pub tags: Option<Tags>,
    /// Rotate on a schedule (set with the key, acting as its creator).
    pub rotation_policy: Option<RotationPolicy>,
    /// In a linked group: the key's name in the HSM (default: the name, with what the HSM
    /// does not allow made dashes).
    pub external_name: Option<String>,
}

impl NewKey {
    /// The HSM name asked for, checked; only for a group linked to an HSM.
    fn hsm_name(&self, group: &Group) -> Result<Option<String>> {
        match &self.external_name {
            None => Ok(None),
            Some(_) if group.link.is_none() => Err(KeyError::invalid(
                "external_name",
                "applies only to keys of a group linked to an HSM",
            )),
            Some(n) => check_hsm_name(n).map(Some),
        }
    }
}

/// The material of an import.
pub enum ImportValue {
    Plain(Vec<u8>),
    /// Wrapped by a key-encryption key of the catalog.
    Wrapped {
        kek: KeyRef,
        mode: Option<WrapMode>,
        wrapped: Vec<u8>,
    },
}

/// A copy of a key into a group (FLOWS F16).
#[derive(Debug, Clone)]
pub struct CopySpec {
    pub source: KeyRef,
    pub group_id: String,
    /// Default: `<source name>_copyN`, the first free one.
    pub name: Option<String>,
    /// Default: the source's; never more than the source's.
    pub key_ops: Option<KeyOps>,
    pub description: Option<String>,
    pub enabled: Option<bool>,
    pub activation_date: Option<i64>,
    pub deactivation_date: Option<i64>,
    /// Default: the source's custom metadata.
    pub tags: Option<Tags>,
}

impl KeyService {
    /// Generates a key (FLOWS F5; in a linked group, in the HSM: F14).
    pub async fn create(&self, access: &Access, spec: NewKey) -> Result<KeyView> {
        check_spec(&spec)?;
        let group = self.target_group(access, spec.group_id.as_deref()).await?;
        let hsm_name = spec.hsm_name(&group)?;
        let (size, curve) = (spec.key_size, spec.curve);
        let o = new_object(
            access,
            &group,
            &spec,
            size,
            curve,
            Origin::Keyward,
            self.now(),
        )?;
        // Policy first, on the proposed attributes, before spending time on key generation.
        let verdict = self
            .enforce(access, &group, Action::Create, "key.create", &o, None)
            .await?;
        let policy = spec.rotation_policy.as_ref();
        if let Some(p) = policy {
            policy_fits_new(&group, p)?;
        }
        if group.link.is_some() {
            return self
                .create_in_hsm(access, group, o, verdict, None, None, policy, hsm_name)
                .await;
        }
        let t = spec.obj_type;
        let material = tokio::task::spawn_blocking(move || crypto::generate(t, size, curve))
            .await
            .map_err(|e| KeyError::Internal(e.to_string()))??;
        self.store_new(access, o, &material, verdict, "key.create", None, policy)
            .await
    }

    /// Imports key material (FLOWS F5; in a linked group, into the HSM: F15).
    pub async fn import(
        &self,
        access: &Access,
        spec: NewKey,
        value: ImportValue,
    ) -> Result<KeyView> {
        let group = self.target_group(access, spec.group_id.as_deref()).await?;
        let hsm_name = spec.hsm_name(&group)?;
        let bytes = match value {
            ImportValue::Plain(b) => b,
            ImportValue::Wrapped { kek, mode, wrapped } => {
                self.unwrap(access, &kek, &mode, &wrapped).await?
            }
        };
        let material =
            crypto::import(spec.obj_type, &bytes).map_err(|e| KeyError::invalid("value", e.0))?;
        if let Some(size) = spec.key_size
            && material.size() != Some(size)
        {
            return Err(KeyError::invalid(
                "key_size",
                format!("the imported key is {} bits", material.size().unwrap_or(0)),
            ));
        }
        if spec.curve.is_some() && material.curve() != spec.curve {
            return Err(KeyError::invalid(
                "elliptic_curve",
                "does not match the imported key",
            ));
        }
        let o = new_object(
            access,
            &group,
            &spec,
            material.size(),
            material.curve(),
            Origin::External,
            self.now(),
        )?;
        let verdict = self
            .enforce(access, &group, Action::Import, "key.import", &o, None)
            .await?;
        let policy = spec.rotation_policy.as_ref();
        if let Some(p) = policy {
            policy_fits_new(&group, p)?;
        }
        if group.link.is_some() {
            // The material goes into the HSM; the catalog keeps none of it.
            return self
                .create_in_hsm(
                    access,
                    group,
                    o,
                    verdict,
                    Some(material),
                    None,
                    policy,
                    hsm_name,
                )
                .await;
        }
        self.store_new(access, o, &material, verdict, "key.import", None, policy)
            .await
    }

    /// Copies a key into a group (into a linked group by BYOK transfer), linked to its
    /// source. The copy never permits more than its source, is exportable only if the
    /// source is, and is checked by the policies of both groups.
    pub async fn copy(&self, access: &Access, spec: CopySpec) -> Result<KeyView> {
        let source = self.resolve(access, &spec.source).await?;
        may_manage(access, &source)?;
        // A copy takes the material out of the source's group: an export there.
        let source_group = self.group(&access.account_id, &source.group_id).await?;
        approved(access, &source_group, Some(Protected::ExportSobjects))?;
        let now = self.now();
        copyable(&source, now)?;
        let key_ops = copy_ops(&source, spec.key_ops.clone())?;
        let target = self.target_group(access, Some(&spec.group_id)).await?;
        let material = self
            .usable_key(&access.account_id, &source.kid)
            .await?
            .material
            .clone()
            .ok_or_else(|| KeyError::state("the source key has no material"))?;
        let name = match &spec.name {
            Some(n) => check_name(n)?,
            None => self.copy_name(access, &source.kid).await?,
        };
        let tags = spec.tags.clone().unwrap_or_else(|| source.tags.clone());
        check_tags(&tags)?;
        let activation = spec.activation_date.unwrap_or(now);
        check_dates(Some(activation), spec.deactivation_date)?;
        let copy = SObject {
            kid: new_id(),
            group_id: target.id.clone(),
            name,
            description: spec.description.clone().or(source.description.clone()),
            key_ops,
            enabled: spec.enabled.unwrap_or(true),
            activation_date: Some(activation),
            deactivation_date: spec.deactivation_date,
            compromise_date: None,
            destruction_date: None,
            revocation_reason: None,
            created_at: now,
            lastused_at: None,
            creator: creator(&access.principal),
            // The material is the source's: it has been exportable if the source has.
            never_exportable: source.never_exportable,
            material: None,
            external: None,
            tags,
            rotated_at: None,
            version: 0,
            ..source.clone()
        };
        let source_group = self.group(&access.account_id, &source.group_id).await?;
        let out = self
            .enforce(
                access,
                &source_group,
                Action::Copy,
                "key.copy",
                &source,
                None,
            )
            .await?;
        let mut verdict = self
            .enforce(
                access,
                &target,
                Action::Copy,
                "key.copy",
                &copy,
                Some(&source),
            )
            .await?;
        verdict.warnings.extend(out.warnings);
        verdict.dry_run.extend(out.dry_run);
        if target.link.is_some() {
            return self
                .create_in_hsm(
                    access,
                    target,
                    copy,
                    verdict,
                    Some((*material).clone()),
                    Some(&source),
                    None,
                    None,
                )
                .await;
        }
        self.store_new(
            access,
            copy,
            &material,
            verdict,
            "key.copy",
            Some(&source),
            None,
        )
        .await
    }

    /// The name a copy of the key gets unless another is given: `<name>_copyN`, the first
    /// free one.
    pub async fn copy_name(&self, access: &Access, kid: &str) -> Result<String> {
        let source = self.get(access, kid).await?;
        let mut conn = self.catalog().conn().await?;
        for n in 1.. {
            let candidate = format!("{}_copy{n}", source.name);
            if !sobjects::name_taken(&mut conn, &access.account_id, &candidate).await? {
                return Ok(candidate);
            }
        }
        unreachable!("some suffix is free")
    }

    /// The group a new key goes into, checked for the caller's rights.
    async fn target_group(&self, access: &Access, requested: Option<&str>) -> Result<Arc<Group>> {
        let gid = match (requested, &access.principal) {
            (Some(g), _) => g.to_string(),
            (None, Principal::App { app_id, .. }) => {
                let mut conn = self.catalog().conn().await?;
                apps::get(&mut conn, &access.account_id, app_id)
                    .await?
                    .and_then(|a| a.default_group)
                    .ok_or_else(|| {
                        KeyError::invalid(
                            "group_id",
                            "is required (the application has no default group)",
                        )
                    })?
            }
            (None, Principal::User { .. }) => {
                return Err(KeyError::invalid("group_id", "is required"));
            }
        };
        if !crate::catalog::is_id(&gid) {
            return Err(KeyError::invalid(
                "group_id",
                format!("'{gid}' is not a valid group id"),
            ));
        }
        let group = self.group(&access.account_id, &gid).await?;
        may_manage_group(access, &group.id)?;
        Ok(group)
    }

    /// Seals the material into the new object and stores it with its audit event (and, for a
    /// copy, the link to its source; for a key with a rotation policy, the policy) in one
    /// transaction.
    #[allow(clippy::too_many_arguments, reason = "the parts of one catalog write")]
    async fn store_new(
        &self,
        access: &Access,
        mut o: SObject,
        material: &Material,
        verdict: Verdict,
        audit_action: &str,
        copy_of: Option<&SObject>,
        policy: Option<&RotationPolicy>,
    ) -> Result<KeyView> {
        o.material = Some(
            self.catalog()
                .seal(&material_context(&o.kid), &material.to_der()),
        );
        o.pub_key = material.public_key_der();
        o.kcv = material.kcv();
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        sobjects::insert(&mut tx, &o)
            .await
            .map_err(|e| name_taken(e, &o.name))?;
        if let Some(source) = copy_of {
            sobjects::add_link(&mut tx, &copy_link(access, source, &o, now)).await?;
        }
        if let Some(p) = policy {
            rotation::set_policy(&mut tx, &policy_row(access, &o.kid, p.clone(), now)).await?;
        }
        self.event(
            access,
            audit_action,
            &o.kid,
            new_key_details(&o, &verdict, copy_of),
        )
        .write(&mut tx)
        .await?;
        let v = view(&mut tx, o, verdict.warnings).await?;
        tx.commit().await?;
        if let Some(source) = copy_of {
            self.forget(&source.kid);
        }
        Ok(v)
    }
}

/// A new key's rotation policy: copies to rotate along make sense only for keys held in the
/// catalog.
fn policy_fits_new(group: &Group, p: &RotationPolicy) -> Result<()> {
    if group.link.is_some() && p.rotate_copied_keys.is_some() {
        return Err(KeyError::invalid(
            "rotation_policy.rotate_copied_keys",
            "applies to keys held in the catalog that have linked copies",
        ));
    }
    Ok(())
}

/// Type, size and curve of a key to generate.
fn check_spec(spec: &NewKey) -> Result<()> {
    match spec.obj_type {
        ObjType::Ec => {
            if spec.curve.is_none() {
                return Err(KeyError::invalid(
                    "elliptic_curve",
                    "is required for EC keys",
                ));
            }
            if spec.key_size.is_some() {
                return Err(KeyError::invalid(
                    "key_size",
                    "EC keys take an elliptic_curve instead",
                ));
            }
        }
        t => {
            if spec.curve.is_some() {
                return Err(KeyError::invalid(
                    "elliptic_curve",
                    "applies to EC keys only",
                ));
            }
            crypto::check_size(t, spec.key_size).map_err(|e| KeyError::invalid("key_size", e.0))?;
        }
    }
    Ok(())
}

/// The new object of a create or import request; the caller adds material, public key and
/// check value.
fn new_object(
    access: &Access,
    group: &Group,
    spec: &NewKey,
    key_size: Option<u32>,
    curve: Option<Curve>,
    origin: Origin,
    now: i64,
) -> Result<SObject> {
    let name = check_name(&spec.name)?;
    let key_ops = spec
        .key_ops
        .clone()
        .unwrap_or_else(|| spec.obj_type.default_ops());
    check_ops(spec.obj_type, &key_ops)?;
    check_dates(spec.activation_date.or(Some(now)), spec.deactivation_date)?;
    let tags = spec.tags.clone().unwrap_or_default();
    check_tags(&tags)?;
    Ok(SObject {
        kid: new_id(),
        account_id: access.account_id.clone(),
        group_id: group.id.clone(),
        name,
        description: spec.description.clone(),
        obj_type: spec.obj_type,
        key_size,
        curve,
        never_exportable: !key_ops.contains(sobjects::KeyOp::Export),
        key_ops,
        enabled: spec.enabled.unwrap_or(true),
        activation_date: Some(spec.activation_date.unwrap_or(now)),
        deactivation_date: spec.deactivation_date,
        compromise_date: None,
        destruction_date: None,
        revocation_reason: None,
        created_at: now,
        lastused_at: None,
        creator: creator(&access.principal),
        origin,
        material: None,
        pub_key: None,
        kcv: None,
        external: None,
        tags,
        rotated_at: None,
        version: 0,
    })
}

/// What the audit log records of a new key.
pub(super) fn new_key_details(o: &SObject, verdict: &Verdict, copy_of: Option<&SObject>) -> Value {
    let mut details = json!({
        "name": o.name, "obj_type": o.obj_type.as_str(), "key_size": o.key_size,
        "elliptic_curve": o.curve.map(curve_name), "group_id": o.group_id,
        "key_ops": o.key_ops, "copied_from": copy_of.map(|s| &s.kid),
    });
    if let Value::Object(p) = verdict.audit_details() {
        details.as_object_mut().expect("object").extend(p);
    }
    details
}

pub(super) fn name_taken(e: crate::catalog::CatalogError, name: &str) -> KeyError {
    if e.is_unique_violation() {
        KeyError::NameTaken(format!("a key named '{name}' exists in this account"))
    } else {
        e.into()
    }
}
