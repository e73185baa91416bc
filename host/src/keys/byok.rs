//! Keyward as the BYOK tool (Azure's flow c): a key's material wrapped for a key-exchange key
//! that lives in a vault or Managed HSM, as the `.byok` transfer file that
//! `az keyvault key import --byok-file` takes. For organisations whose vaults Keyward may not
//! write to: someone else carries the file in.
//!
//! The file holds the material under a foreign public key, so making one is an export: the
//! key must permit EXPORT, the caller must be allowed to export it, the policies are asked
//! about an export, and the audit log records it as one before the file is handed out.

use serde_json::json;

use crate::auth::Access;
use crate::catalog::sobjects::{self, ObjType};

use super::error::{KeyError, Result};
use super::{KeyRef, KeyService, open_material};

/// The key-exchange key a transfer file is made for: its identifier in Azure (the `kid` with
/// its version) and its RSA public key (SubjectPublicKeyInfo DER).
#[derive(Debug, Clone)]
pub struct ByokKek {
    pub id: String,
    pub public_der: Vec<u8>,
}

/// Who made the files, as the `generator` field says.
fn generator() -> String {
    format!("Keyward {}", env!("CARGO_PKG_VERSION"))
}

impl KeyService {
    /// The key-exchange key of a linked group, given as a Keyward key: a virtual RSA key
    /// whose Azure identifier and public key the catalog has.
    pub async fn byok_kek(&self, access: &Access, kek: &KeyRef) -> Result<ByokKek> {
        let o = self.resolve(access, kek).await?;
        let not = |why: &str| {
            KeyError::invalid(
                "kek",
                format!(
                    "'{}' {why}; a key-exchange key is an RSA key with the import operation, created in the vault or Managed HSM the file is for",
                    o.name
                ),
            )
        };
        if o.obj_type != ObjType::Rsa {
            return Err(not("is not an RSA key"));
        }
        let id = o
            .external
            .as_ref()
            .and_then(|e| e.key_id.clone())
            .ok_or_else(|| not("is not a key of a vault or Managed HSM"))?;
        let public_der = o.pub_key.clone().ok_or_else(|| not("has no public key"))?;
        Ok(ByokKek { id, public_der })
    }

    /// The `.byok` transfer file of `key` for `kek`: recorded as an export, then made.
    pub async fn byok_transfer(
        &self,
        access: &Access,
        key: &KeyRef,
        kek: &ByokKek,
    ) -> Result<Vec<u8>> {
        let o = self.resolve(access, key).await?;
        self.check_export(access, &o).await?;
        let material = open_material(self.catalog(), &o)?
            .ok_or_else(|| KeyError::state("the key has been destroyed"))?;
        let (kek_id, public, target) = (kek.id.clone(), kek.public_der.clone(), material.to_der());
        let file = tokio::task::spawn_blocking(move || {
            keyward_crypto::byok_transfer_for_spki(&kek_id, &public, &target, &generator())
        })
        .await
        .map_err(|e| KeyError::Internal(e.to_string()))?
        .map_err(|e| KeyError::invalid("kek", e.to_string()))?;
        let now = self.now();
        let mut tx = self.catalog().begin().await?;
        self.event(
            access,
            "key.export",
            &o.kid,
            json!({"format": "byok", "wrapped_for": kek.id}),
        )
        .write(&mut tx)
        .await?;
        sobjects::mark_used(&mut tx, &o.kid, now).await?;
        tx.commit().await?;
        Ok(file)
    }
}
