//! Encrypt, decrypt, wrap, unwrap, sign and verify with a key, by JOSE algorithm name.

use super::*;

impl Material {
    /// Encrypt or wrap `value` with `alg`.
    pub fn encrypt(
        &self,
        alg: &str,
        value: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
    ) -> Result<Sealed, CryptoError> {
        match (self, alg) {
            (Material::Rsa(k), "RSA-OAEP") => {
                rsa_out(k.to_public_key().oaep_encrypt::<Sha1>(value))
            }
            (Material::Rsa(k), "RSA-OAEP-256") => {
                rsa_out(k.to_public_key().oaep_encrypt::<Sha256>(value))
            }
            (Material::Rsa(k), "RSA1_5") => rsa_out(k.to_public_key().pkcs1v15_encrypt(value)),
            (Material::Oct(k), "A128GCM" | "A192GCM" | "A256GCM") => {
                check_aes_len(alg, k)?;
                let iv = match iv {
                    Some(iv) if iv.len() == 12 => iv.to_vec(),
                    Some(_) => return Err(bad("The iv for AES-GCM must be 12 bytes.")),
                    None => random_bytes(12),
                };
                let mut out = gcm_seal(k, &iv, value, aad.unwrap_or_default())?;
                let tag = out.split_off(out.len() - 16);
                Ok(Sealed {
                    value: out,
                    iv: Some(iv),
                    tag: Some(tag),
                })
            }
            (Material::Oct(k), "A128CBC" | "A192CBC" | "A256CBC")
            | (Material::Oct(k), "A128CBCPAD" | "A192CBCPAD" | "A256CBCPAD") => {
                check_aes_len(alg, k)?;
                let iv = match iv {
                    Some(iv) => iv.to_vec(),
                    None => random_bytes(16),
                };
                Ok(Sealed {
                    value: cbc_seal(k, &iv, value, alg.ends_with("PAD"))?,
                    iv: Some(iv),
                    tag: None,
                })
            }
            (Material::Oct(k), "A128KW" | "A192KW" | "A256KW" | "CKM_AES_KEY_WRAP") => {
                if alg != "CKM_AES_KEY_WRAP" {
                    check_aes_len(alg, k)?;
                }
                Ok(Sealed::plain(aes_kw_wrap(k, value, false)?))
            }
            (Material::Oct(k), "CKM_AES_KEY_WRAP_PAD") => {
                Ok(Sealed::plain(aes_kw_wrap(k, value, true)?))
            }
            _ => Err(wrong_alg(self, alg)),
        }
    }

    pub fn decrypt(
        &self,
        alg: &str,
        value: &[u8],
        iv: Option<&[u8]>,
        aad: Option<&[u8]>,
        tag: Option<&[u8]>,
    ) -> Result<Vec<u8>, CryptoError> {
        let failed = || bad("Decryption failed: the ciphertext is not valid for this key.");
        match (self, alg) {
            (Material::Rsa(k), "RSA-OAEP") => k.oaep_decrypt::<Sha1>(value).map_err(|_| failed()),
            (Material::Rsa(k), "RSA-OAEP-256") => {
                k.oaep_decrypt::<Sha256>(value).map_err(|_| failed())
            }
            (Material::Rsa(k), "RSA1_5") => k.pkcs1v15_decrypt(value).map_err(|_| failed()),
            (Material::Oct(k), "A128GCM" | "A192GCM" | "A256GCM") => {
                check_aes_len(alg, k)?;
                let iv = iv.ok_or_else(|| bad("AES-GCM decryption needs 'iv'."))?;
                let tag = tag.ok_or_else(|| bad("AES-GCM decryption needs 'tag'."))?;
                if iv.len() != 12 || tag.len() != 16 {
                    return Err(bad("AES-GCM needs a 12-byte iv and a 16-byte tag."));
                }
                let mut sealed = value.to_vec();
                sealed.extend_from_slice(tag);
                gcm_open(k, iv, &sealed, aad.unwrap_or_default()).map_err(|_| failed())
            }
            (Material::Oct(k), "A128CBC" | "A192CBC" | "A256CBC")
            | (Material::Oct(k), "A128CBCPAD" | "A192CBCPAD" | "A256CBCPAD") => {
                check_aes_len(alg, k)?;
                let iv = iv.ok_or_else(|| bad("AES-CBC decryption needs 'iv'."))?;
                cbc_open(k, iv, value, alg.ends_with("PAD")).map_err(|_| failed())
            }
            (Material::Oct(k), "A128KW" | "A192KW" | "A256KW" | "CKM_AES_KEY_WRAP") => {
                if alg != "CKM_AES_KEY_WRAP" {
                    check_aes_len(alg, k)?;
                }
                aes_kw_unwrap(k, value, false)
            }
            (Material::Oct(k), "CKM_AES_KEY_WRAP_PAD") => aes_kw_unwrap(k, value, true),
            _ => Err(wrong_alg(self, alg)),
        }
    }

    /// Sign a digest (`value` is the digest, as Key Vault takes it).
    pub fn sign(&self, alg: &str, digest: &[u8]) -> Result<Vec<u8>, CryptoError> {
        use p256::ecdsa::signature::hazmat::PrehashSigner;
        let hash_len = digest_len(alg)?;
        if digest.len() != hash_len {
            return Err(bad(format!(
                "The digest for {alg} must be {hash_len} bytes, not {}.",
                digest.len()
            )));
        }
        let sig_failed = |e: &dyn std::fmt::Display| bad(format!("Signing failed: {e}"));
        match (self, alg) {
            (Material::Rsa(k), "RS256") => k
                .pkcs1v15_sign_prehash::<Sha256>(digest)
                .map_err(|e| sig_failed(&e)),
            (Material::Rsa(k), "RS384") => k
                .pkcs1v15_sign_prehash::<Sha384>(digest)
                .map_err(|e| sig_failed(&e)),
            (Material::Rsa(k), "RS512") => k
                .pkcs1v15_sign_prehash::<Sha512>(digest)
                .map_err(|e| sig_failed(&e)),
            (Material::Rsa(k), "PS256") => k
                .pss_sign_prehash::<Sha256>(digest)
                .map_err(|e| sig_failed(&e)),
            (Material::Rsa(k), "PS384") => k
                .pss_sign_prehash::<Sha384>(digest)
                .map_err(|e| sig_failed(&e)),
            (Material::Rsa(k), "PS512") => k
                .pss_sign_prehash::<Sha512>(digest)
                .map_err(|e| sig_failed(&e)),
            (Material::P256(k), "ES256") => {
                let s: p256::ecdsa::Signature = p256::ecdsa::SigningKey::from(k)
                    .sign_prehash(digest)
                    .map_err(|e| sig_failed(&e))?;
                Ok(s.to_bytes().to_vec())
            }
            (Material::P384(k), "ES384") => {
                let s: p384::ecdsa::Signature = p384::ecdsa::SigningKey::from(k)
                    .sign_prehash(digest)
                    .map_err(|e| sig_failed(&e))?;
                Ok(s.to_bytes().to_vec())
            }
            (Material::P521(k), "ES512") => {
                let s: p521::ecdsa::Signature = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes())
                    .map_err(|e| sig_failed(&e))?
                    .sign_prehash(digest)
                    .map_err(|e| sig_failed(&e))?;
                Ok(s.to_bytes().to_vec())
            }
            _ => Err(wrong_alg(self, alg)),
        }
    }

    pub fn verify(&self, alg: &str, digest: &[u8], signature: &[u8]) -> Result<bool, CryptoError> {
        use p256::ecdsa::signature::hazmat::PrehashVerifier;
        let hash_len = digest_len(alg)?;
        if digest.len() != hash_len {
            return Err(bad(format!(
                "The digest for {alg} must be {hash_len} bytes, not {}.",
                digest.len()
            )));
        }
        let ok = match (self, alg) {
            (Material::Rsa(k), "RS256") => k
                .to_public_key()
                .pkcs1v15_verify_prehash::<Sha256>(digest, signature)
                .is_ok(),
            (Material::Rsa(k), "RS384") => k
                .to_public_key()
                .pkcs1v15_verify_prehash::<Sha384>(digest, signature)
                .is_ok(),
            (Material::Rsa(k), "RS512") => k
                .to_public_key()
                .pkcs1v15_verify_prehash::<Sha512>(digest, signature)
                .is_ok(),
            (Material::Rsa(k), "PS256") => k
                .to_public_key()
                .pss_verify_prehash::<Sha256>(digest, signature)
                .is_ok(),
            (Material::Rsa(k), "PS384") => k
                .to_public_key()
                .pss_verify_prehash::<Sha384>(digest, signature)
                .is_ok(),
            (Material::Rsa(k), "PS512") => k
                .to_public_key()
                .pss_verify_prehash::<Sha512>(digest, signature)
                .is_ok(),
            (Material::P256(k), "ES256") => p256::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| {
                    p256::ecdsa::VerifyingKey::from(k.public_key())
                        .verify_prehash(digest, &s)
                        .is_ok()
                }),
            (Material::P384(k), "ES384") => p384::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| {
                    p384::ecdsa::VerifyingKey::from(k.public_key())
                        .verify_prehash(digest, &s)
                        .is_ok()
                }),
            (Material::P521(k), "ES512") => p521::ecdsa::Signature::from_slice(signature)
                .is_ok_and(|s| {
                    p521::ecdsa::VerifyingKey::from_affine(*k.public_key().as_affine())
                        .is_ok_and(|v| v.verify_prehash(digest, &s).is_ok())
                }),
            _ => return Err(wrong_alg(self, alg)),
        };
        Ok(ok)
    }
}

/// Result of an encryption: ciphertext, plus iv and tag for AES-GCM.
pub struct Sealed {
    pub value: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
}

impl Sealed {
    fn plain(value: Vec<u8>) -> Sealed {
        Sealed {
            value,
            iv: None,
            tag: None,
        }
    }
}

fn rsa_out(r: rsa::Result<Vec<u8>>) -> Result<Sealed, CryptoError> {
    r.map(Sealed::plain)
        .map_err(|e| bad(format!("Encryption failed: {e}")))
}

fn wrong_alg(m: &Material, alg: &str) -> CryptoError {
    const KNOWN: &[&str] = &[
        "RSA-OAEP",
        "RSA-OAEP-256",
        "RSA1_5",
        "A128GCM",
        "A192GCM",
        "A256GCM",
        "A128CBC",
        "A192CBC",
        "A256CBC",
        "A128CBCPAD",
        "A192CBCPAD",
        "A256CBCPAD",
        "A128KW",
        "A192KW",
        "A256KW",
        "CKM_AES_KEY_WRAP",
        "CKM_AES_KEY_WRAP_PAD",
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
        "ES256",
        "ES384",
        "ES512",
    ];
    if KNOWN.contains(&alg) {
        let what = match m.curve() {
            Some(c) => format!("{} {}", m.kty(), c.name()),
            None => m.kty().to_string(),
        };
        bad(format!(
            "Algorithm {alg} is not supported for a key of type {what}."
        ))
    } else if ["RSNULL", "ES256K"].contains(&alg) {
        CryptoError::Unsupported(format!(
            "Algorithm {alg} is not supported by this emulator."
        ))
    } else {
        bad(format!("Invalid algorithm: {alg}."))
    }
}

fn digest_len(alg: &str) -> Result<usize, CryptoError> {
    match alg {
        "RS256" | "PS256" | "ES256" => Ok(32),
        "RS384" | "PS384" | "ES384" => Ok(48),
        "RS512" | "PS512" | "ES512" => Ok(64),
        "RSNULL" | "ES256K" | "HS256" | "HS384" | "HS512" => Err(CryptoError::Unsupported(
            format!("Algorithm {alg} is not supported by this emulator."),
        )),
        other => Err(bad(format!("Invalid signature algorithm: {other}."))),
    }
}

fn check_aes_len(alg: &str, key: &[u8]) -> Result<(), CryptoError> {
    let want = match &alg[1..4] {
        "128" => 16,
        "192" => 24,
        _ => 32,
    };
    if key.len() != want {
        return Err(bad(format!(
            "Algorithm {alg} needs a {}-bit key; this key has {} bits.",
            want * 8,
            key.len() * 8
        )));
    }
    Ok(())
}
