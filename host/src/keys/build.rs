//! The pure builders of the key service: what a decided flow is made of, as functions of
//! the keys and the request, with no catalog or HSM access. A key's HSM name and what a
//! script sees of it, a copy's link, a rotation policy's row, the successor of a rotated key
//! (or of a copy rotating with its source), and the catalog's reading of an HSM's operations.
//! The rules they apply are in [`super::rules`].

use serde_json::{Value, json};

use crate::auth::Access;
use crate::catalog::new_id;
use crate::catalog::rotation::{self, PolicyRow, RotationPolicy};
use crate::catalog::sobjects::{self, KeyOp, KeyOps, ObjType, Origin, SObject, Tags, curve_name};
use crate::crypto;
use crate::plugins::kms as remote;

use super::creator;
use super::error::{KeyError, Result};
use super::rules::{check_dates, check_tags, ops_change};

/// What a rotation may change (DSM lets a rekey change these).
#[derive(Debug, Clone, Default)]
pub struct RekeyChange {
    pub description: Option<String>,
    pub key_ops: Option<KeyOps>,
    pub enabled: Option<bool>,
    pub activation_date: Option<i64>,
    pub deactivation_date: Option<i64>,
    pub tags: Option<Tags>,
    /// Keys held in the catalog: a new size (AES, RSA).
    pub key_size: Option<u32>,
}

/// The name a key gets in the HSM: Managed HSM key names are 1 to 127 letters, digits and
/// dashes, so anything else becomes a dash.
pub fn azure_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(127)
        .collect()
}

/// What a script sees of a key to create (`input.key`).
pub(super) fn key_input(o: &SObject) -> Value {
    json!({
        "name": o.name,
        "obj_type": o.obj_type.as_str(),
        "key_size": o.key_size,
        "elliptic_curve": o.curve.map(curve_name),
        "key_ops": o.key_ops,
        "enabled": o.enabled,
        "activation_date": remote_attributes(o).not_before,
        "deactivation_date": o.deactivation_date,
        "custom_metadata": o.tags,
        "description": o.description,
    })
}

/// The attributes a key's new version gets in its HSM (what `key_input` shows a script, in
/// the connector's types): its operations the HSM knows, whether it is enabled, its dates
/// and its tags.
pub fn remote_attributes(o: &SObject) -> RemoteAttributes {
    RemoteAttributes {
        ops: o.key_ops.iter().filter_map(remote_op).collect(),
        enabled: o.enabled,
        // A key active from its creation gets no not-before date in the HSM.
        not_before: o.activation_date.filter(|a| *a > o.created_at),
        expires: o.deactivation_date,
        tags: o
            .tags
            .iter()
            .map(|(name, value)| remote::Tag {
                name: name.clone(),
                value: value.clone(),
            })
            .collect(),
    }
}

/// See [`remote_attributes`].
#[derive(Debug, Clone)]
pub struct RemoteAttributes {
    pub ops: Vec<remote::KeyOp>,
    pub enabled: bool,
    pub not_before: Option<i64>,
    pub expires: Option<i64>,
    pub tags: Vec<remote::Tag>,
}

/// The HSM's name of a catalog operation (`None`: one the HSM does not know).
fn remote_op(op: KeyOp) -> Option<remote::KeyOp> {
    Some(match op {
        KeyOp::Encrypt => remote::KeyOp::Encrypt,
        KeyOp::Decrypt => remote::KeyOp::Decrypt,
        KeyOp::Sign => remote::KeyOp::Sign,
        KeyOp::Verify => remote::KeyOp::Verify,
        KeyOp::WrapKey => remote::KeyOp::WrapKey,
        KeyOp::UnwrapKey => remote::KeyOp::UnwrapKey,
        _ => return None,
    })
}

pub(super) fn copy_link(
    access: &Access,
    source: &SObject,
    copy: &SObject,
    now: i64,
) -> sobjects::Link {
    sobjects::Link {
        kind: sobjects::LinkKind::Copy,
        source: source.kid.clone(),
        target: copy.kid.clone(),
        target_group: Some(copy.group_id.clone()),
        created_by: access.principal.id().to_string(),
        created_at: now,
    }
}

pub(super) fn policy_row(access: &Access, kid: &str, p: RotationPolicy, now: i64) -> PolicyRow {
    PolicyRow {
        kid: kid.to_string(),
        account_id: access.account_id.clone(),
        next_due: p.next_due(now, None),
        policy: p,
        owner: creator(&access.principal),
        set_at: now,
        last_rotated_at: None,
        status: rotation::PolicyStatus::Active,
        failures: 0,
        last_error: None,
    }
}

/// The replacement of a key: its name, type and group, the attributes the request changes,
/// the rest of the replaced key's. Material, public key and check value come later.
pub(super) fn successor(
    access: &Access,
    current: &SObject,
    c: &RekeyChange,
    now: i64,
) -> Result<SObject> {
    let key_ops = c.key_ops.clone().unwrap_or_else(|| current.key_ops.clone());
    // No copy ceiling here: the replacement holds new material, not the copied source's
    // (copies that rotate with their source take `copy_successor`'s operations).
    ops_change(current, &key_ops, None)?;
    let key_size = match c.key_size {
        Some(size) if current.is_virtual() => {
            if Some(size) != current.key_size {
                return Err(KeyError::invalid(
                    "key_size",
                    "the new version of a key in an external key manager keeps its size",
                ));
            }
            Some(size)
        }
        Some(size) => {
            if current.obj_type == ObjType::Ec {
                return Err(KeyError::invalid(
                    "key_size",
                    "EC keys take an elliptic_curve instead",
                ));
            }
            crypto::check_size(current.obj_type, Some(size))
                .map_err(|e| KeyError::invalid("key_size", e.0))?;
            Some(size)
        }
        None => current.key_size,
    };
    let tags = c.tags.clone().unwrap_or_else(|| current.tags.clone());
    check_tags(&tags)?;
    let activation = c.activation_date.unwrap_or(now);
    check_dates(Some(activation), c.deactivation_date)?;
    if c.deactivation_date.is_some_and(|d| d < now) {
        return Err(KeyError::invalid(
            "deactivation_date",
            "must not be in the past",
        ));
    }
    Ok(SObject {
        kid: new_id(),
        description: c
            .description
            .clone()
            .or_else(|| current.description.clone()),
        key_size,
        never_exportable: !key_ops.contains(sobjects::KeyOp::Export),
        key_ops,
        enabled: c.enabled.unwrap_or(current.enabled),
        activation_date: Some(activation),
        deactivation_date: c.deactivation_date,
        compromise_date: None,
        destruction_date: None,
        revocation_reason: None,
        created_at: now,
        lastused_at: None,
        creator: creator(&access.principal),
        origin: sobjects::Origin::Keyward,
        material: None,
        pub_key: None,
        kcv: None,
        tags,
        rotated_at: None,
        version: 0,
        ..current.clone()
    })
}

/// The size the new version takes from its catalog source (F26): the rotated key's type and
/// size (or curve). A synced AES key whose size its HSM does not report (Azure gives none for
/// `oct-HSM`) takes any size the HSM holds, and the new version records it from then on.
pub(super) fn rotate_from_size(current: &SObject, source: &SObject) -> Result<Option<u32>> {
    let unknown_aes = current.obj_type == ObjType::Aes && current.key_size.is_none();
    let same = source.obj_type == current.obj_type
        && source.curve == current.curve
        && (source.key_size == current.key_size
            || (unknown_aes && matches!(source.key_size, Some(128 | 192 | 256))));
    if !same {
        return Err(KeyError::invalid(
            "rotate_from",
            "the source key must have the type and size (or curve) of the key it rotates",
        ));
    }
    Ok(source.key_size)
}

/// The virtual key a copy's new version becomes: the copy's attributes, with its operations
/// cut down to what the new source permits (a copy never permits more than its source), and
/// exportable only if the source's material has been.
pub(super) fn copy_successor(
    access: &Access,
    copy: &SObject,
    source: &SObject,
    now: i64,
) -> Result<SObject> {
    let ops = copy
        .key_ops
        .iter()
        .filter(|op| source.key_ops.contains(*op))
        .collect();
    let mut next = successor(
        access,
        copy,
        &RekeyChange {
            key_ops: Some(ops),
            ..Default::default()
        },
        now,
    )?;
    next.origin = Origin::External;
    next.never_exportable = source.never_exportable || !next.key_ops.contains(KeyOp::Export);
    Ok(next)
}

/// The catalog's name of an HSM operation (`None`: one the catalog does not keep).
pub(super) fn catalog_op(o: remote::KeyOp) -> Option<KeyOp> {
    Some(match o {
        remote::KeyOp::Encrypt => KeyOp::Encrypt,
        remote::KeyOp::Decrypt => KeyOp::Decrypt,
        remote::KeyOp::Sign => KeyOp::Sign,
        remote::KeyOp::Verify => KeyOp::Verify,
        remote::KeyOp::WrapKey => KeyOp::WrapKey,
        remote::KeyOp::UnwrapKey => KeyOp::UnwrapKey,
        _ => return None,
    })
}

/// An HSM's operations in the catalog's names.
pub(super) fn remote_ops(remote: &[remote::KeyOp]) -> KeyOps {
    remote.iter().copied().filter_map(catalog_op).collect()
}

/// A virtual key's operations from its HSM's, keeping what only the catalog knows: EXPORT
/// (which the HSM list never adds) and APPMANAGEABLE.
pub(super) fn merge_ops(catalog: &KeyOps, remote: &[remote::KeyOp]) -> KeyOps {
    let mut ops = remote_ops(remote);
    for keep in [KeyOp::Export, KeyOp::AppManageable] {
        if catalog.contains(keep) {
            ops.insert(keep);
        }
    }
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hsm_names_keep_letters_digits_and_dashes() {
        assert_eq!(azure_name("payments key/v2"), "payments-key-v2");
        assert_eq!(azure_name("Ünïcode"), "-n-code");
        assert_eq!(azure_name(&"x".repeat(300)).len(), 127);
    }

    #[test]
    fn a_refresh_never_adds_export() {
        let remote_ops = [remote::KeyOp::Encrypt, remote::KeyOp::Export];
        let merged = merge_ops(&KeyOps::of(&[KeyOp::Encrypt]), &remote_ops);
        assert_eq!(merged, KeyOps::of(&[KeyOp::Encrypt]));
        let kept = merge_ops(
            &KeyOps::of(&[KeyOp::Export, KeyOp::AppManageable]),
            &remote_ops,
        );
        assert_eq!(
            kept,
            KeyOps::of(&[KeyOp::Encrypt, KeyOp::Export, KeyOp::AppManageable])
        );
    }

    #[test]
    fn the_catalog_and_the_hsm_name_operations_alike() {
        for op in KeyOps::of(&[
            KeyOp::Encrypt,
            KeyOp::Decrypt,
            KeyOp::Sign,
            KeyOp::Verify,
            KeyOp::WrapKey,
            KeyOp::UnwrapKey,
        ])
        .iter()
        {
            assert_eq!(remote_op(op).and_then(catalog_op), Some(op));
        }
        assert_eq!(remote_op(KeyOp::Export), None);
    }
}
