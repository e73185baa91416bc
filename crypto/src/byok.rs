//! BYOK transfer blobs: what an HSM vendor tool writes to bring a key into Managed HSM.

use super::*;

/// Unwraps a BYOK transfer (CKM_RSA_AES_KEY_WRAP): RSA-OAEP-SHA1 of an ephemeral AES key,
/// followed by that key's AES-KWP (RFC 5649) wrap of the target key.
pub fn byok_unwrap(kek: &Material, ciphertext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let Material::Rsa(kek) = kek else {
        return Err(bad("The key exchange key must be an RSA-HSM key."));
    };
    let split = kek.size();
    if ciphertext.len() <= split {
        return Err(bad("The BYOK ciphertext is too short."));
    }
    let (wrapped_aes, wrapped_target) = ciphertext.split_at(split);
    let aes_key = kek
        .oaep_decrypt::<Sha1>(wrapped_aes)
        .map_err(|_| bad("The BYOK blob was not made for this key exchange key."))?;
    if ![16, 24, 32].contains(&aes_key.len()) {
        return Err(bad("The BYOK blob carries an invalid transport key."));
    }
    aes_kw_unwrap(&aes_key, wrapped_target, true)
}

/// Builds a BYOK ciphertext for `target` (PKCS#8 DER or raw AES bytes) under the KEK's public
/// key: the inverse of [`byok_unwrap`], as a vendor BYOK tool would.
pub fn byok_wrap(kek_public: &rsa::PublicKey, target: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let aes_key = random_bytes(32);
    let mut out = kek_public
        .oaep_encrypt::<Sha1>(&aes_key)
        .map_err(|e| bad(format!("RSA-OAEP failed: {e}")))?;
    out.extend(aes_kw_wrap(&aes_key, target, true)?);
    Ok(out)
}

/// A BYOK transfer document (the `.byok` JSON an HSM vendor tool writes) carrying `target`
/// (PKCS#8 DER or raw AES bytes) wrapped for the key-exchange key `kek_id`, whose RSA public
/// key is `kek_public`. Importing it (`key_hsm`) is how material reaches a Managed HSM without
/// ever being readable outside the HSM on the way.
pub fn byok_transfer_document(
    kek_id: &str,
    kek_public: &rsa::PublicKey,
    target: &[u8],
    generator: &str,
) -> Result<Vec<u8>, CryptoError> {
    let ciphertext = byok_wrap(kek_public, target)?;
    let doc = serde_json::json!({
        "schema_version": "1.0.0",
        "header": {"kid": kek_id, "alg": "dir", "enc": "CKM_RSA_AES_KEY_WRAP"},
        "ciphertext": b64url(&ciphertext),
        "generator": generator,
    });
    Ok(doc.to_string().into_bytes())
}

/// A BYOK transfer document for a key-exchange key given by its SubjectPublicKeyInfo DER (as
/// Azure shows it, or as Keyward holds an HSM key's public key). Azure's key-exchange keys are
/// RSA 2048, 3072 or 4096.
pub fn byok_transfer_for_spki(
    kek_id: &str,
    kek_spki_der: &[u8],
    target: &[u8],
    generator: &str,
) -> Result<Vec<u8>, CryptoError> {
    use rsa::pkcs8::DecodePublicKey;
    let public = rsa::PublicKey::from_public_key_der(kek_spki_der).map_err(|_| {
        bad("The key exchange key is not an RSA public key (SubjectPublicKeyInfo DER).")
    })?;
    let bits = public.size() * 8;
    if ![2048, 3072, 4096].contains(&bits) {
        return Err(bad(format!(
            "The key exchange key is RSA-{bits}; Azure key exchange keys are RSA 2048, 3072 or 4096."
        )));
    }
    byok_transfer_document(kek_id, &public, target, generator)
}
