//! What each kind of Azure key store holds, and how key material may reach it: pure
//! functions of the link's kind and the key, checked before anything reaches the store.
//!
//! | kind              | key types                                              | material arrives as |
//! |-------------------|--------------------------------------------------------|---------------------|
//! | Standard vault    | RSA 2048/3072/4096, EC P-256/P-384/P-521, software     | a plain JWK over TLS, only for material that may be exported (flow a) |
//! | Premium vault     | the same, HSM-protected                                | a BYOK transfer (CKM_RSA_AES_KEY_WRAP) under a key-exchange key made in the vault (flow b) |
//! | Managed HSM       | the same and AES 128/192/256, HSM-protected            | a BYOK transfer (flow d) |
//!
//! Azure also knows secp256k1 (`P-256K`); Keyward holds no such keys, so none is offered.
//! A Standard vault has no HSM, hence no key-exchange key: the only way in is the plain one,
//! which is an export of the material, so it needs a source that permits EXPORT (material a
//! caller imports is theirs to send).

use crate::catalog::groups::VaultType;
use crate::catalog::sobjects::{KeyOp, ObjType, SObject};

use super::error::{KeyError, Result};

/// How key material travels into a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transfer {
    /// The private key as a JWK over TLS.
    Plain,
    /// Wrapped for a key-exchange key that lives in the store.
    Byok,
}

impl Transfer {
    pub fn of(t: VaultType) -> Transfer {
        match t {
            VaultType::Standard => Transfer::Plain,
            VaultType::Premium | VaultType::Managed => Transfer::Byok,
        }
    }

    /// How the audit log names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Transfer::Plain => "plain_jwk",
            Transfer::Byok => "byok",
        }
    }
}

/// The key types a kind of store holds, as a sentence for refusals.
fn holds(t: VaultType) -> &'static str {
    match t {
        VaultType::Standard => {
            "RSA 2048/3072/4096 and EC P-256/P-384/P-521 keys, software-protected"
        }
        VaultType::Premium => "RSA 2048/3072/4096 and EC P-256/P-384/P-521 keys, HSM-protected",
        VaultType::Managed => {
            "RSA 2048/3072/4096, EC P-256/P-384/P-521 and AES 128/192/256 keys, HSM-protected"
        }
    }
}

/// Whether a key of this type fits a store of kind `t`.
pub fn check_type(t: VaultType, o: &SObject) -> Result<()> {
    let ok = match o.obj_type {
        ObjType::Rsa => matches!(o.key_size, Some(2048 | 3072 | 4096)),
        ObjType::Aes => t == VaultType::Managed && matches!(o.key_size, Some(128 | 192 | 256)),
        ObjType::Ec => o.curve.is_some(),
    };
    if ok {
        Ok(())
    } else {
        Err(KeyError::invalid(
            "obj_type",
            format!("a {} holds {}", t.label(), holds(t)),
        ))
    }
}

/// Whether material may go into a store of kind `t` the way that store takes it: a plain
/// transfer needs material the caller brought (`source` none) or a source that permits
/// EXPORT.
pub fn check_transfer(t: VaultType, source: Option<&SObject>) -> Result<Transfer> {
    let transfer = Transfer::of(t);
    if transfer == Transfer::Plain
        && let Some(s) = source
        && !s.key_ops.contains(KeyOp::Export)
    {
        return Err(KeyError::rule(format!(
            "a {} takes key material only as a plain JWK, which is an export: the key '{}' does not permit EXPORT; copy it to a Premium tier Key Vault or a Managed HSM instead (BYOK)",
            t.label(),
            s.name
        )));
    }
    Ok(transfer)
}

/// Whether material from `source` (none: the caller's own) may leave as a plain JWK at all,
/// whatever the store; the host functions of scripts refuse a plain import otherwise.
pub fn plain_allowed(source: Option<&SObject>) -> bool {
    source.is_none_or(|s| s.key_ops.contains(KeyOp::Export))
}
