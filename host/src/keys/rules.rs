//! The integrity rules of keys, as pure functions of a key and a request: what a name,
//! operation list, dates and tags may be; that EXPORT is never added; what a copy may have;
//! and the KMIP lifecycle, with the dates each transition sets.
//!
//! KMIP's states and transitions (KMIP 1.4, section 3.22), which [`transition`] and
//! [`date_changes`] follow:
//!
//! | from \ to    | Active          | Deactivated         | Compromised | Destroyed |
//! |--------------|-----------------|---------------------|-------------|-----------|
//! | Pre-Active   | activate / date | -                   | revoke (compromise) | destroy |
//! | Active       |                 | deactivate / revoke / date | revoke (compromise) | - |
//! | Deactivated  | -               |                     | revoke (compromise) | destroy |
//! | Compromised  | -               | -                   |             | destroy   |
//! | Destroyed    | -               | -                   | revoke (compromise, "destroyed compromised") | |
//!
//! There is no way back to Active, and a date that has passed does not change.

use crate::catalog::sobjects::{KeyOp, KeyOps, KeyState, ObjType, Patch, SObject, Tags};

use super::error::{KeyError, Result};

pub const MAX_NAME: usize = 256;
pub const MAX_TAGS: usize = 64;

pub fn check_name(n: &str) -> Result<String> {
    let n = n.trim();
    if n.is_empty() || n.len() > MAX_NAME {
        return Err(KeyError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} characters"),
        ));
    }
    Ok(n.to_string())
}

/// A key name chosen for the HSM: Managed HSM and Key Vault key names are 1 to 127 letters,
/// digits and dashes.
pub fn check_hsm_name(n: &str) -> Result<String> {
    if n.is_empty() || n.len() > 127 || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(KeyError::invalid(
            "external_name",
            "must be 1 to 127 letters, digits and dashes (the HSM's key name rule)",
        ));
    }
    Ok(n.to_string())
}

/// The operations must exist for the key's type.
pub fn check_ops(obj_type: ObjType, ops: &KeyOps) -> Result<()> {
    let allowed = obj_type.allowed_ops();
    if let Some(bad) = ops.beyond(&allowed).next() {
        return Err(KeyError::invalid(
            "key_ops",
            format!(
                "'{}' is not an operation for {} keys ({})",
                bad.as_str(),
                obj_type.as_str(),
                allowed.names().join(", ")
            ),
        ));
    }
    Ok(())
}

pub fn check_tags(tags: &Tags) -> Result<()> {
    if tags.len() > MAX_TAGS {
        return Err(KeyError::invalid(
            "custom_metadata",
            format!("at most {MAX_TAGS} entries"),
        ));
    }
    for (k, v) in tags {
        if k.is_empty() || k.len() > 128 || v.len() > 1024 {
            return Err(KeyError::invalid(
                "custom_metadata",
                "names are 1-128 characters, values at most 1024",
            ));
        }
    }
    Ok(())
}

pub fn check_dates(activation: Option<i64>, deactivation: Option<i64>) -> Result<()> {
    if let (Some(a), Some(d)) = (activation, deactivation)
        && d <= a
    {
        return Err(KeyError::invalid(
            "deactivation_date",
            "must be after the activation date",
        ));
    }
    Ok(())
}

/// A key's new operation list: valid for its type, without EXPORT unless it had it
/// (PKCS#11: extractable can be turned off, never on), and for a copy (`source`: its source's
/// operations) nothing its source lacks: a copy never does more than the key it copies.
pub fn ops_change(current: &SObject, new: &KeyOps, source: Option<&KeyOps>) -> Result<()> {
    check_ops(current.obj_type, new)?;
    if new.contains(KeyOp::Export) && !current.has_op(KeyOp::Export) {
        return Err(KeyError::rule(
            "EXPORT cannot be added to a key after it was created: a key that was not exportable stays so",
        ));
    }
    if let Some(source) = source {
        let extra: Vec<&str> = new
            .beyond(&current.key_ops)
            .filter(|op| !source.contains(*op))
            .map(KeyOp::as_str)
            .collect();
        if !extra.is_empty() {
            return Err(KeyError::rule(format!(
                "a copy cannot have operations its source lacks ({})",
                extra.join(", ")
            )));
        }
    }
    Ok(())
}

/// How an external key manager's view of a virtual key strays beyond what the catalog allows:
/// the catalog is the authority, so such drift is put back in the HSM, never adopted.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drift {
    /// The HSM has the key enabled where the key's lifecycle forbids it.
    pub enabled: bool,
    /// Operations the HSM permits that the catalog does not.
    pub extra_ops: KeyOps,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        !self.enabled && self.extra_ops.is_empty()
    }
}

/// Compares what an HSM reports of a virtual key (`enabled`, its operations mapped to the
/// catalog's names) with the catalog's rules: enabling follows [`enable_change`], and the
/// operations may only be the catalog's or fewer.
pub fn remote_drift(o: &SObject, enabled: bool, ops: &KeyOps, now: i64) -> Drift {
    Drift {
        enabled: enabled && enable_change(o, true, now).is_err(),
        extra_ops: ops.beyond(&o.key_ops).collect(),
    }
}

/// What may be copied: a key whose material is here, usable (pre-active or active, enabled),
/// and for RSA and EC keys exportable (FLOWS F16).
pub fn copyable(source: &SObject, now: i64) -> Result<()> {
    if source.is_virtual() {
        return Err(KeyError::state(
            "a virtual key cannot be copied: its material lives in the external key manager",
        ));
    }
    match source.state(now) {
        KeyState::PreActive | KeyState::Active => {}
        s => {
            return Err(KeyError::state(format!(
                "a {} key cannot be copied",
                s.as_str()
            )));
        }
    }
    if !source.enabled {
        return Err(KeyError::state("a disabled key cannot be copied"));
    }
    if matches!(source.obj_type, ObjType::Rsa | ObjType::Ec) && !source.has_op(KeyOp::Export) {
        return Err(KeyError::rule(format!(
            "the source key does not permit EXPORT, which {} keys need to be copied",
            source.obj_type.as_str()
        )));
    }
    Ok(())
}

/// A copy's operations: the source's unless asked otherwise, and never more than the
/// source's.
pub fn copy_ops(source: &SObject, requested: Option<KeyOps>) -> Result<KeyOps> {
    let ops = requested.unwrap_or_else(|| source.key_ops.clone());
    check_ops(source.obj_type, &ops)?;
    let extra: Vec<&str> = ops.beyond(&source.key_ops).map(KeyOp::as_str).collect();
    if !extra.is_empty() {
        return Err(KeyError::rule(format!(
            "a copy cannot have operations its source lacks ({})",
            extra.join(", ")
        )));
    }
    Ok(ops)
}

/// KMIP revocation reasons that make a key Compromised.
pub const COMPROMISING: [&str; 2] = ["KeyCompromise", "CACompromise"];
/// KMIP revocation reasons that deactivate it.
pub const DEACTIVATING: [&str; 5] = [
    "Unspecified",
    "AffiliationChanged",
    "Superseded",
    "CessationOfOperation",
    "PrivilegeWithdrawn",
];

/// Whether a revocation reason is a compromise (`None`: not a KMIP revocation reason).
pub fn is_compromise(code: &str) -> Option<bool> {
    if COMPROMISING.contains(&code) {
        Some(true)
    } else if DEACTIVATING.contains(&code) {
        Some(false)
    } else {
        None
    }
}

/// A lifecycle operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Transition {
    Activate,
    Deactivate,
    /// KMIP Revoke: for a compromise (KeyCompromise, CACompromise) or another reason, which
    /// deactivates.
    Revoke {
        compromise: bool,
        reason: String,
    },
    Destroy,
}

impl Transition {
    pub fn audit_action(&self) -> &'static str {
        match self {
            Transition::Activate => "key.activate",
            Transition::Deactivate => "key.deactivate",
            Transition::Revoke { .. } => "key.revoke",
            Transition::Destroy => "key.destroy",
        }
    }
}

/// Whether a key held in the catalog may be deleted: once it is no longer active.
pub fn deletable(o: &SObject, now: i64) -> Result<()> {
    if o.state(now) == KeyState::Active {
        return Err(KeyError::state(
            "an active key cannot be deleted: deactivate or revoke it first",
        ));
    }
    Ok(())
}

/// The change a lifecycle operation makes, by the KMIP table; an empty patch when the key is
/// already where the operation would take it.
pub fn transition(o: &SObject, t: &Transition, now: i64) -> Result<Patch> {
    let state = o.state(now);
    let refuse = |what: &str| {
        Err(KeyError::state(format!(
            "a {} key cannot be {what}",
            state.as_str()
        )))
    };
    let mut p = Patch::default();
    match t {
        Transition::Activate => match state {
            KeyState::PreActive => p.activation_date = Some(Some(now)),
            KeyState::Active => {}
            _ => return refuse("activated: nothing returns to Active"),
        },
        Transition::Deactivate => match state {
            KeyState::Active => p.deactivation_date = Some(Some(now)),
            KeyState::Deactivated => {}
            KeyState::PreActive => {
                return refuse("deactivated before it was active (activate it, or destroy it)");
            }
            _ => return refuse("deactivated"),
        },
        Transition::Revoke {
            compromise: true,
            reason,
        } => match state {
            KeyState::PreActive | KeyState::Active | KeyState::Deactivated => {
                p.compromise_date = Some(now);
                if o.deactivation_date.is_none_or(|d| d > now) {
                    p.deactivation_date = Some(Some(now));
                }
                p.revocation_reason = Some(reason.clone());
            }
            // KMIP's "Destroyed Compromised": the record says the material was compromised.
            KeyState::Destroyed if o.compromise_date.is_none() => {
                p.compromise_date = Some(now);
                p.revocation_reason = Some(reason.clone());
            }
            KeyState::Destroyed | KeyState::Compromised => {}
        },
        Transition::Revoke {
            compromise: false,
            reason,
        } => match state {
            KeyState::Active => {
                p.deactivation_date = Some(Some(now));
                p.revocation_reason = Some(reason.clone());
            }
            KeyState::Deactivated if o.revocation_reason.is_none() => {
                p.revocation_reason = Some(reason.clone());
            }
            KeyState::Deactivated => {}
            KeyState::PreActive => {
                return refuse("revoked before it was active, except for a compromise");
            }
            _ => return refuse("revoked for a reason other than a compromise"),
        },
        Transition::Destroy => match state {
            KeyState::PreActive | KeyState::Deactivated | KeyState::Compromised => {
                p.destroyed = Some(now)
            }
            KeyState::Destroyed => return Err(KeyError::state("the key is already destroyed")),
            KeyState::Active => {
                return Err(KeyError::state(
                    "an active key cannot be destroyed: deactivate or revoke it first",
                ));
            }
        },
    }
    Ok(p)
}

/// The date changes an update asks for (`None`: unchanged; `Some(None)`: remove), checked
/// against the key's state: the activation date moves only while the key is pre-active, the
/// deactivation date only until it is reached, neither into the past.
#[allow(
    clippy::type_complexity,
    reason = "unchanged / removed / set, per date"
)]
pub fn date_changes(
    o: &SObject,
    activation: Option<Option<i64>>,
    deactivation: Option<Option<i64>>,
    now: i64,
) -> Result<(Option<Option<i64>>, Option<Option<i64>>)> {
    let state = o.state(now);
    let activation = activation.filter(|a| *a != o.activation_date);
    let deactivation = deactivation.filter(|d| *d != o.deactivation_date);
    if let Some(a) = activation {
        if state != KeyState::PreActive {
            return Err(KeyError::state(format!(
                "the activation date of a {} key cannot change",
                state.as_str()
            )));
        }
        match a {
            None => {
                return Err(KeyError::invalid(
                    "activation_date",
                    "cannot be removed (POST .../activate activates the key now)",
                ));
            }
            Some(t) if t < now => {
                return Err(KeyError::invalid(
                    "activation_date",
                    "must not be in the past (POST .../activate activates the key now)",
                ));
            }
            Some(_) => {}
        }
    }
    if let Some(d) = deactivation {
        if !matches!(state, KeyState::PreActive | KeyState::Active) {
            return Err(KeyError::state(format!(
                "the deactivation date of a {} key cannot change",
                state.as_str()
            )));
        }
        if let Some(t) = d
            && t < now
        {
            return Err(KeyError::invalid(
                "deactivation_date",
                "must not be in the past (POST .../deactivate deactivates the key now)",
            ));
        }
    }
    if activation.is_some() || deactivation.is_some() {
        check_dates(
            activation.unwrap_or(o.activation_date),
            deactivation.unwrap_or(o.deactivation_date),
        )?;
    }
    Ok((activation, deactivation))
}

/// Turning a virtual key back on in its key manager after it was deactivated, compromised or
/// destroyed here would undo that there: refused.
pub fn enable_change(o: &SObject, enabled: bool, now: i64) -> Result<()> {
    let state = o.state(now);
    if enabled
        && !o.enabled
        && o.is_virtual()
        && matches!(
            state,
            KeyState::Deactivated | KeyState::Compromised | KeyState::Destroyed
        )
    {
        return Err(KeyError::state(format!(
            "a {} key of an external key manager cannot be enabled again",
            state.as_str()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::sobjects::{Creator, Origin};

    const NOW: i64 = 1_800_000_000;
    const DAY: i64 = 86_400;

    fn key(state: KeyState) -> SObject {
        let mut o = SObject {
            kid: "k".into(),
            account_id: "a".into(),
            group_id: "g".into(),
            name: "n".into(),
            description: None,
            obj_type: ObjType::Aes,
            key_size: Some(256),
            curve: None,
            key_ops: ObjType::Aes.default_ops(),
            enabled: true,
            activation_date: Some(NOW - DAY),
            deactivation_date: None,
            compromise_date: None,
            destruction_date: None,
            revocation_reason: None,
            created_at: NOW - 2 * DAY,
            lastused_at: None,
            creator: Creator::App("app".into()),
            origin: Origin::Keyward,
            never_exportable: true,
            material: Some(vec![1]),
            pub_key: None,
            kcv: None,
            external: None,
            tags: Tags::new(),
            rotated_at: None,
            version: 0,
        };
        match state {
            KeyState::PreActive => o.activation_date = Some(NOW + DAY),
            KeyState::Active => {}
            KeyState::Deactivated => o.deactivation_date = Some(NOW - 1),
            KeyState::Compromised => {
                o.deactivation_date = Some(NOW - 1);
                o.compromise_date = Some(NOW - 1);
            }
            KeyState::Destroyed => {
                o.deactivation_date = Some(NOW - 2);
                o.destruction_date = Some(NOW - 1);
                o.material = None;
            }
        }
        assert_eq!(o.state(NOW), state);
        o
    }

    fn after(o: &SObject, t: Transition) -> Option<KeyState> {
        transition(o, &t, NOW)
            .ok()
            .map(|p| p.applied_to(o).state(NOW))
    }

    #[test]
    fn lifecycle_follows_the_kmip_table() {
        use KeyState::*;
        let compromise = || Transition::Revoke {
            compromise: true,
            reason: "KeyCompromise".into(),
        };
        let retire = || Transition::Revoke {
            compromise: false,
            reason: "Superseded".into(),
        };
        // (from, operation, where it ends up; None = refused)
        let table: Vec<(KeyState, Transition, Option<KeyState>)> = vec![
            (PreActive, Transition::Activate, Some(Active)),
            (PreActive, Transition::Deactivate, None),
            (PreActive, retire(), None),
            (PreActive, compromise(), Some(Compromised)),
            (PreActive, Transition::Destroy, Some(Destroyed)),
            (Active, Transition::Activate, Some(Active)),
            (Active, Transition::Deactivate, Some(Deactivated)),
            (Active, retire(), Some(Deactivated)),
            (Active, compromise(), Some(Compromised)),
            (Active, Transition::Destroy, None),
            (Deactivated, Transition::Activate, None),
            (Deactivated, Transition::Deactivate, Some(Deactivated)),
            (Deactivated, retire(), Some(Deactivated)),
            (Deactivated, compromise(), Some(Compromised)),
            (Deactivated, Transition::Destroy, Some(Destroyed)),
            (Compromised, Transition::Activate, None),
            (Compromised, Transition::Deactivate, None),
            (Compromised, retire(), None),
            (Compromised, compromise(), Some(Compromised)),
            (Compromised, Transition::Destroy, Some(Destroyed)),
            (Destroyed, Transition::Activate, None),
            (Destroyed, Transition::Deactivate, None),
            (Destroyed, retire(), None),
            (Destroyed, compromise(), Some(Destroyed)),
            (Destroyed, Transition::Destroy, None),
        ];
        for (from, t, want) in table {
            assert_eq!(after(&key(from), t.clone()), want, "{from:?} {t:?}");
        }
        // Destroying erases the material; compromising a destroyed key records it.
        let d = transition(&key(Deactivated), &Transition::Destroy, NOW).unwrap();
        assert!(d.applied_to(&key(Deactivated)).material.is_none());
        let dc = transition(&key(Destroyed), &compromise(), NOW).unwrap();
        assert_eq!(dc.compromise_date, Some(NOW));
    }

    #[test]
    fn dates_move_only_where_kmip_lets_them() {
        use KeyState::*;
        // Removing the deactivation date of a deactivated or revoked key would make it
        // active again.
        for s in [Deactivated, Compromised, Destroyed] {
            assert!(
                date_changes(&key(s), None, Some(None), NOW).is_err(),
                "{s:?}"
            );
            assert!(
                date_changes(&key(s), None, Some(Some(NOW + DAY)), NOW).is_err(),
                "{s:?}"
            );
        }
        // An active key keeps its activation date; a future deactivation date may move.
        assert!(date_changes(&key(Active), Some(Some(NOW + DAY)), None, NOW).is_err());
        assert!(date_changes(&key(Active), None, Some(Some(NOW + DAY)), NOW).is_ok());
        assert!(date_changes(&key(Active), None, Some(Some(NOW - 10)), NOW).is_err());
        let mut later = key(Active);
        later.deactivation_date = Some(NOW + DAY);
        assert!(date_changes(&later, None, Some(None), NOW).is_ok());
        // A pre-active key's activation date moves forward, not into the past, not away.
        let pre = key(PreActive);
        assert!(date_changes(&pre, Some(Some(NOW + 2 * DAY)), None, NOW).is_ok());
        assert!(date_changes(&pre, Some(Some(NOW - DAY)), None, NOW).is_err());
        assert!(date_changes(&pre, Some(None), None, NOW).is_err());
        // Unchanged values are no change, even for a key deactivated the second it became
        // active.
        assert_eq!(
            date_changes(&key(Destroyed), None, Some(Some(NOW - 2)), NOW).unwrap(),
            (None, None)
        );
        let mut at_once = key(Deactivated);
        at_once.activation_date = at_once.deactivation_date;
        assert_eq!(
            date_changes(&at_once, None, None, NOW).unwrap(),
            (None, None)
        );
    }

    #[test]
    fn export_is_never_added_and_copies_never_gain_operations() {
        let k = key(KeyState::Active);
        let mut with_export = k.key_ops.clone();
        with_export.insert(KeyOp::Export);
        assert!(matches!(
            ops_change(&k, &with_export, None),
            Err(KeyError::Rule(_))
        ));
        let mut fewer = k.key_ops.clone();
        fewer.remove(KeyOp::Encrypt);
        assert!(ops_change(&k, &fewer, None).is_ok());
        // A copy that was narrowed gets back only what its source has.
        let mut copy = k.clone();
        copy.key_ops = KeyOps::of(&[KeyOp::Encrypt]);
        let source = KeyOps::of(&[KeyOp::Encrypt, KeyOp::Decrypt]);
        let widened = KeyOps::of(&[KeyOp::Encrypt, KeyOp::Decrypt, KeyOp::WrapKey]);
        assert!(matches!(
            ops_change(&copy, &widened, Some(&source)),
            Err(KeyError::Rule(_))
        ));
        assert!(ops_change(&copy, &source, Some(&source)).is_ok());
        assert!(ops_change(&copy, &KeyOps::of(&[]), Some(&source)).is_ok());
        assert!(matches!(
            copy_ops(&k, Some(with_export)),
            Err(KeyError::Rule(_))
        ));
        assert_eq!(copy_ops(&k, None).unwrap(), k.key_ops);
        let mut exportable = k.clone();
        exportable.key_ops.insert(KeyOp::Export);
        assert!(
            ops_change(&exportable, &fewer, None).is_ok(),
            "EXPORT can be removed"
        );
    }

    #[test]
    fn an_hsm_never_widens_a_virtual_key() {
        let mut v = key(KeyState::Compromised);
        v.enabled = false;
        v.external = Some(
            serde_json::from_value(serde_json::json!({
                "kind": "AzureManagedHsm", "hsm_group_id": "g", "instance": null,
                "id": {"label": "k", "version": "1"}, "key_id": null, "key_version": null,
                "kty": "oct-HSM", "source": "External", "state": "Active"
            }))
            .unwrap(),
        );
        v.material = None;
        let ops = v.key_ops.clone();
        assert!(remote_drift(&v, true, &ops, NOW).enabled);
        assert!(remote_drift(&v, false, &ops, NOW).is_empty());
        let mut more = ops.clone();
        more.insert(KeyOp::Sign);
        assert_eq!(
            remote_drift(&v, false, &more, NOW).extra_ops,
            KeyOps::of(&[KeyOp::Sign])
        );
        // An active key may be enabled again in its HSM, as through the API.
        let mut active = v.clone();
        active.compromise_date = None;
        active.deactivation_date = None;
        assert!(remote_drift(&active, true, &ops, NOW).is_empty());
    }

    #[test]
    fn only_usable_keys_with_their_material_are_copied() {
        assert!(copyable(&key(KeyState::Active), NOW).is_ok());
        assert!(copyable(&key(KeyState::PreActive), NOW).is_ok());
        for s in [
            KeyState::Deactivated,
            KeyState::Compromised,
            KeyState::Destroyed,
        ] {
            assert!(copyable(&key(s), NOW).is_err(), "{s:?}");
        }
        let mut off = key(KeyState::Active);
        off.enabled = false;
        assert!(copyable(&off, NOW).is_err());
        let mut rsa = key(KeyState::Active);
        rsa.obj_type = ObjType::Rsa;
        assert!(matches!(copyable(&rsa, NOW), Err(KeyError::Rule(_))));
    }
}
