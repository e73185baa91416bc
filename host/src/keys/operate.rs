//! Cryptographic operations with a usable key: done here with the catalog's material, or by
//! the key's HSM for a virtual key, and recorded in the audit log either way. The API parses
//! the wire and renders the answer; which of the two places does the work, and the audit
//! event, are the key service's (`usage` decides who may use which key for what).

use serde_json::{Value, json};

use crate::auth::Access;
use crate::catalog::sobjects::KeyOp;
use crate::crypto::{self, Encrypted, HashAlg, RsaEncryptionMode, RsaSignatureMode, Shape};
use crate::plugins::kms::{CryptRequest, SignRequest, VerifyRequest};

use super::error::Result;
use super::{KeyService, UsableKey};

/// How an encryption, decryption or wrap uses its key: the AES mode (`GCM`, the wrap modes)
/// or the RSA padding, and the parameters that go with them.
#[derive(Debug, Clone, Default)]
pub struct CryptParams {
    pub aes_mode: Option<String>,
    pub rsa_mode: Option<RsaEncryptionMode>,
    pub iv: Option<Vec<u8>>,
    pub ad: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
}

/// How a signature is made or checked.
#[derive(Debug, Clone, Copy)]
pub struct SignParams<'a> {
    pub hash: HashAlg,
    pub mode: &'a Option<RsaSignatureMode>,
}

impl KeyService {
    pub async fn encrypt(
        &self,
        access: &Access,
        key: &UsableKey,
        p: CryptParams,
        plain: Vec<u8>,
        details: Value,
    ) -> Result<Encrypted> {
        let e = match &key.material {
            Some(m) => crypto::encrypt(
                m,
                p.aes_mode.as_deref(),
                &p.rsa_mode,
                &plain,
                p.iv.as_deref(),
                p.ad.as_deref(),
            )?,
            None => {
                let alg = crypto::encryption_alg(
                    Shape::of_object(&key.object),
                    p.aes_mode.as_deref(),
                    &p.rsa_mode,
                )?;
                crypto::check_inputs(alg, p.iv.as_deref(), p.ad.as_deref())?;
                let (link, kref) = self.remote_of(&key.object).await?;
                let r = self
                    .inner
                    .kms
                    .encrypt(
                        &link,
                        &kref,
                        &CryptRequest {
                            algorithm: alg.into(),
                            value: plain,
                            iv: p.iv,
                            aad: p.ad,
                            tag: None,
                        },
                    )
                    .await?;
                Encrypted {
                    cipher: r.value,
                    iv: r.iv,
                    tag: r.tag,
                }
            }
        };
        self.used(access, key, KeyOp::Encrypt, details).await?;
        Ok(e)
    }

    pub async fn decrypt(
        &self,
        access: &Access,
        key: &UsableKey,
        p: CryptParams,
        cipher: Vec<u8>,
        details: Value,
    ) -> Result<Vec<u8>> {
        let plain = match &key.material {
            Some(m) => crypto::decrypt(
                m,
                p.aes_mode.as_deref(),
                &p.rsa_mode,
                &cipher,
                p.iv.as_deref(),
                p.ad.as_deref(),
                p.tag.as_deref(),
            )?,
            None => {
                let alg = crypto::encryption_alg(
                    Shape::of_object(&key.object),
                    p.aes_mode.as_deref(),
                    &p.rsa_mode,
                )?;
                let (link, kref) = self.remote_of(&key.object).await?;
                self.inner
                    .kms
                    .decrypt(
                        &link,
                        &kref,
                        &CryptRequest {
                            algorithm: alg.into(),
                            value: cipher,
                            iv: p.iv,
                            aad: p.ad,
                            tag: p.tag,
                        },
                    )
                    .await?
                    .value
            }
        };
        self.used(access, key, KeyOp::Decrypt, details).await?;
        Ok(plain)
    }

    /// A signature over `digest` (r ‖ s for ECDSA, as the crypto code and Azure make it).
    pub async fn sign(
        &self,
        access: &Access,
        key: &UsableKey,
        p: SignParams<'_>,
        digest: Vec<u8>,
        details: Value,
    ) -> Result<Vec<u8>> {
        let sig = match &key.material {
            Some(m) => crypto::sign(m, p.hash, p.mode, &digest)?,
            None => {
                let alg = crypto::signature_alg(Shape::of_object(&key.object), p.hash, p.mode)?;
                let (link, kref) = self.remote_of(&key.object).await?;
                self.inner
                    .kms
                    .sign(
                        &link,
                        &kref,
                        &SignRequest {
                            algorithm: alg.into(),
                            digest,
                        },
                    )
                    .await?
                    .signature
            }
        };
        self.used(access, key, KeyOp::Sign, details).await?;
        Ok(sig)
    }

    pub async fn verify(
        &self,
        access: &Access,
        key: &UsableKey,
        p: SignParams<'_>,
        digest: Vec<u8>,
        signature: Vec<u8>,
    ) -> Result<bool> {
        let result = match &key.material {
            Some(m) => crypto::verify(m, p.hash, p.mode, &digest, &signature)?,
            None => {
                let alg = crypto::signature_alg(Shape::of_object(&key.object), p.hash, p.mode)?;
                let (link, kref) = self.remote_of(&key.object).await?;
                self.inner
                    .kms
                    .verify(
                        &link,
                        &kref,
                        &VerifyRequest {
                            algorithm: alg.into(),
                            digest,
                            signature,
                        },
                    )
                    .await?
            }
        };
        let details = json!({"hash_alg": p.hash, "result": result});
        self.used(access, key, KeyOp::Verify, details).await?;
        Ok(result)
    }

    /// Wraps `subject` (a key's material, which the caller may export) under `key`.
    pub async fn wrap(
        &self,
        access: &Access,
        key: &UsableKey,
        p: CryptParams,
        subject: Vec<u8>,
        details: Value,
    ) -> Result<Vec<u8>> {
        let wrapped = match &key.material {
            Some(m) => crypto::wrap(m, p.aes_mode.as_deref(), &p.rsa_mode, &subject)?,
            None => {
                let alg = crypto::wrapping_alg(
                    Shape::of_object(&key.object),
                    p.aes_mode.as_deref(),
                    &p.rsa_mode,
                )?;
                let (link, kref) = self.remote_of(&key.object).await?;
                self.inner
                    .kms
                    .wrap_key(
                        &link,
                        &kref,
                        &CryptRequest {
                            algorithm: alg.into(),
                            value: subject,
                            iv: None,
                            aad: None,
                            tag: None,
                        },
                    )
                    .await?
                    .value
            }
        };
        self.used(access, key, KeyOp::WrapKey, details).await?;
        Ok(wrapped)
    }

    /// The operation's audit event (queued: operations are many) and the key's last use.
    /// Records the operation: its answer goes out only once the event is committed.
    async fn used(
        &self,
        access: &Access,
        key: &UsableKey,
        op: KeyOp,
        details: Value,
    ) -> Result<()> {
        let now = self.now();
        let action = format!("key.{}", op.as_str().to_ascii_lowercase());
        self.inner
            .audit
            .record(self.event(access, &action, &key.object.kid, details))
            .await?;
        self.inner.audit.key_used(&key.object.kid, now).await;
        Ok(())
    }
}
