//! Using keys: what a cryptographic operation may use (the hot path, from the cache),
//! export, and unwrapping under a key-encryption key, which is a cryptographic operation of
//! the KEK like any other: applications of its group only, through its policy, audited.

use std::sync::Arc;

use serde_json::json;

use crate::catalog::groups::Group;
use crate::catalog::sobjects::{self, KeyOp, KeyState, RemoteState, SObject};
use crate::crypto::{self, Material, RsaEncryptionMode, Shape};
use crate::kms::Link;
use crate::plugins::kms::{CryptRequest, KeyRef as RemoteRef};
use crate::plugins::policy::Action;
use crate::policy::key_op;

use super::access::{approved, may_export, may_use};
use super::error::{KeyError, Result};
use super::{KeyRef, KeyService, KeyView, load, open_material, resolve, view};
use crate::auth::Access;
use crate::catalog::approvals::Protected;

/// Whether `access` may take the key's material out now, before the policies are asked.
pub(super) fn export_allowed(access: &Access, o: &SObject, group: &Group) -> Result<()> {
    may_export(access, o, group)?;
    approved(access, group, Some(Protected::ExportSobjects))?;
    if o.is_virtual() {
        return Err(KeyError::state(
            "the key's material lives in the external key manager",
        ));
    }
    if o.material.is_none() {
        return Err(KeyError::state("the key has been destroyed"));
    }
    if !o.enabled {
        return Err(KeyError::forbidden("the key is disabled"));
    }
    Ok(())
}

/// A key ready for use: its metadata (without the sealed material) and its opened material
/// (none for virtual and destroyed keys).
pub struct UsableKey {
    pub object: SObject,
    pub material: Option<Arc<Material>>,
}

/// How wrapped key material is wrapped: AES key wrap (`KW`, `KWP`) or an RSA encryption
/// mode.
#[derive(Debug, Clone, PartialEq)]
pub enum WrapMode {
    Aes(String),
    Rsa(RsaEncryptionMode),
}

impl WrapMode {
    fn parts(mode: &Option<WrapMode>) -> (Option<&str>, Option<RsaEncryptionMode>) {
        match mode {
            None => (None, None),
            Some(WrapMode::Aes(m)) => (Some(m.as_str()), None),
            Some(WrapMode::Rsa(m)) => (None, Some(m.clone())),
        }
    }
}

impl KeyService {
    /// A key with its material opened, from the cache or the catalog.
    pub async fn usable_key(&self, account: &str, kid: &str) -> Result<Arc<UsableKey>> {
        let cache = &self.inner.usable;
        let key = match cache.get(kid) {
            Some(k) => k,
            None => {
                let ticket = cache.ticket();
                let mut conn = self.catalog().conn().await?;
                let Some(mut object) = sobjects::get(&mut conn, account, kid).await? else {
                    return Err(KeyError::NotFound(format!("no key {kid}")));
                };
                drop(conn);
                let material = open_material(self.catalog(), &object)?.map(Arc::new);
                object.material = None;
                let k = Arc::new(UsableKey { object, material });
                cache.put(kid, k.clone(), ticket);
                k
            }
        };
        if key.object.account_id != account {
            return Err(KeyError::NotFound(format!("no key {kid}")));
        }
        Ok(key)
    }

    /// The key of a cryptographic operation, after everything that decides whether it may be
    /// used for `op`: the caller (applications of the key's group), the key (enabled, its
    /// state, its operations, its material or remote state) and the policies.
    pub async fn usable_for(
        &self,
        access: &Access,
        key: &KeyRef,
        op: KeyOp,
    ) -> Result<Arc<UsableKey>> {
        let kid = match key {
            KeyRef::Kid(kid) => kid.clone(),
            KeyRef::Name(_) => {
                let mut conn = self.catalog().conn().await?;
                resolve(&mut conn, access, key).await?.kid
            }
        };
        if !crate::catalog::is_id(&kid) {
            return Err(KeyError::invalid(
                "kid",
                format!("'{kid}' is not a valid key id"),
            ));
        }
        let key = self.usable_key(&access.account_id, &kid).await?;
        let o = &key.object;
        may_use(access, o, op)?;
        if !o.enabled {
            return Err(KeyError::forbidden("the key is disabled"));
        }
        match o.state(self.now()) {
            KeyState::Active => {}
            KeyState::Deactivated | KeyState::Compromised if op.unprotects() => {}
            s => {
                return Err(KeyError::forbidden(format!(
                    "a {} key cannot be used for {}",
                    s.as_str(),
                    op.as_str()
                )));
            }
        }
        if !o.has_op(op) {
            return Err(KeyError::forbidden(format!(
                "the key does not permit {}",
                op.as_str()
            )));
        }
        if key.material.is_none() {
            match o.remote_state() {
                None => {
                    return Err(KeyError::state(
                        "the key has no material (it was destroyed)",
                    ));
                }
                Some(RemoteState::Active) => {}
                Some(RemoteState::Disabled) => {
                    return Err(KeyError::forbidden(
                        "the key is disabled in the external key manager",
                    ));
                }
                Some(s) => {
                    return Err(KeyError::state(format!(
                        "the key is {} in the external key manager",
                        s.as_str()
                    )));
                }
            }
        }
        // One read of the group for both: its quorum policy, then its policies.
        let group = self.group(&access.account_id, &o.group_id).await?;
        approved(access, &group, None)?;
        self.enforce(
            access,
            &group,
            Action::Crypto(key_op(op)),
            &format!("key.{}", op.as_str().to_ascii_lowercase()),
            o,
            None,
        )
        .await?;
        Ok(key)
    }

    /// Where a virtual key's operations go: its group's link and its name there.
    pub async fn remote_of(&self, o: &SObject) -> Result<(Link, RemoteRef)> {
        let group = self.group(&o.account_id, &o.group_id).await?;
        let link = self.link_for(&group)?;
        let name = o
            .external_name()
            .ok_or_else(|| KeyError::Internal("virtual key without an external name".into()))?;
        // A version a rotation replaced is used as that version; the current key as
        // whatever the HSM's latest is (it may have rotated on its own).
        let version = o
            .rotated_at
            .and(o.external.as_ref())
            .and_then(|e| e.id.version.clone());
        Ok((
            link,
            RemoteRef {
                name: name.to_string(),
                version,
            },
        ))
    }

    /// Whether the key's material may leave, to this caller: the export rules, then the
    /// policies, which see it as the EXPORT operation.
    pub(super) async fn check_export(&self, access: &Access, o: &SObject) -> Result<()> {
        let group = self.group(&access.account_id, &o.group_id).await?;
        export_allowed(access, o, &group)?;
        self.enforce(
            access,
            &group,
            Action::Crypto(key_op(KeyOp::Export)),
            "key.export",
            o,
            None,
        )
        .await?;
        Ok(())
    }

    /// A key whose material the caller may take out under another key (wrapping).
    pub async fn exportable(&self, access: &Access, key: &KeyRef) -> Result<Arc<UsableKey>> {
        let o = self.resolve(access, key).await?;
        self.check_export(access, &o).await?;
        self.usable_key(&access.account_id, &o.kid).await
    }

    /// The key with its material (PKCS#8 DER for RSA and EC, raw for AES). The export is in
    /// the audit log before the material is handed out.
    pub async fn export(&self, access: &Access, key: &KeyRef) -> Result<(KeyView, Vec<u8>)> {
        let o = self.resolve(access, key).await?;
        self.check_export(access, &o).await?;
        let material = open_material(self.catalog(), &o)?
            .ok_or_else(|| KeyError::state("the key has been destroyed"))?;
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        self.event(access, "key.export", &o.kid, serde_json::Value::Null)
            .write(&mut tx)
            .await?;
        sobjects::mark_used(&mut tx, &o.kid, now).await?;
        let o = load(&mut tx, access, &o.kid).await?;
        let v = view(&mut tx, o, vec![]).await?;
        tx.commit().await?;
        Ok((v, material.to_der()))
    }

    /// Unwraps `wrapped` with the key-encryption key `kek`, as the UNWRAPKEY operation of the
    /// KEK: only a caller that may use the KEK, through its policy; recorded in the audit log
    /// before the plaintext is used.
    pub(super) async fn unwrap(
        &self,
        access: &Access,
        kek: &KeyRef,
        mode: &Option<WrapMode>,
        wrapped: &[u8],
    ) -> Result<Vec<u8>> {
        let key = self.usable_for(access, kek, KeyOp::UnwrapKey).await?;
        let (aes_mode, rsa_mode) = WrapMode::parts(mode);
        let plain = match &key.material {
            Some(m) => crypto::unwrap(m, aes_mode, &rsa_mode, wrapped).map_err(|e| {
                KeyError::invalid(
                    "value",
                    format!(
                        "could not be unwrapped with the key-encryption key: {}",
                        e.0
                    ),
                )
            })?,
            None => {
                let alg = crypto::wrapping_alg(Shape::of_object(&key.object), aes_mode, &rsa_mode)?;
                let (link, remote) = self.remote_of(&key.object).await?;
                self.inner
                    .kms
                    .unwrap_key(
                        &link,
                        &remote,
                        &CryptRequest {
                            algorithm: alg.into(),
                            value: wrapped.to_vec(),
                            iv: None,
                            aad: None,
                            tag: None,
                        },
                    )
                    .await?
                    .value
            }
        };
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        self.event(
            access,
            "key.unwrapkey",
            &key.object.kid,
            json!({"purpose": "import"}),
        )
        .write(&mut tx)
        .await?;
        sobjects::mark_used(&mut tx, &key.object.kid, now).await?;
        tx.commit().await?;
        Ok(plain)
    }
}
