//! Key material and the cryptographic primitives that Keyward and its Azure Managed HSM
//! emulator share, on the RustCrypto crates:
//!
//! - `material`: key generation (AES, RSA, EC), PKCS#8, SEC1 and JSON Web Key encodings,
//!   public keys, check values;
//! - `ops`: the JOSE-named algorithms (RSA-OAEP, A256GCM, A256KW, PS256, ES256, ...) with a
//!   key;
//! - `symmetric`: AES-GCM and AES key wrap (RFC 3394 and 5649) on raw keys;
//! - `byok`: BYOK transfer blobs (CKM_RSA_AES_KEY_WRAP);
//! - here: errors, randomness, base64 and digests.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce};
use aes_kw::{KwAes128, KwAes192, KwAes256, KwpAes128, KwpAes192, KwpAes256};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BoxedUint, Generate, PrivateKey};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha384, Sha512};

/// AES-192-GCM (not predefined by `aes-gcm`).
type Aes192Gcm = AesGcm<aes::Aes192, aes_gcm::aead::consts::U12>;

mod byok;
mod ecdsa_der;
mod material;
mod ops;
mod symmetric;

pub use byok::{byok_transfer_document, byok_transfer_for_spki, byok_unwrap, byok_wrap};
pub use ecdsa_der::{ecdsa_signature_from_der, ecdsa_signature_to_der};
pub use material::{
    Curve, Kty, Material, ec_public_der, rsa_private_jwk, rsa_public, rsa_public_der,
};
pub use ops::Sealed;
pub use symmetric::{aes_kw_unwrap, aes_kw_wrap, cbc_open, cbc_seal, gcm_open, gcm_seal};

/// Why a cryptographic request failed; becomes a `BadParameter` (or `Forbidden`) reply.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CryptoError {
    #[error("{0}")]
    BadParameter(String),
    #[error("{0}")]
    Unsupported(String),
}

fn bad(msg: impl Into<String>) -> CryptoError {
    CryptoError::BadParameter(msg.into())
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).expect("the operating system RNG works");
    buf
}

/// base64url without padding, as Key Vault writes binary fields.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Accepts base64url or standard base64, padded or not: clients are not consistent.
pub fn decode_b64(field: &str, value: &str) -> Result<Vec<u8>, CryptoError> {
    let trimmed = value.trim_end_matches('=');
    URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD.decode(value))
        .map_err(|_| bad(format!("The parameter '{field}' is not valid base64url.")))
}
/// SHA-256 digest, for callers preparing signatures.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// Digest of `data` with SHA-256, SHA-384 or SHA-512 (by output length in bits).
pub fn sha2_digest(bits: u32, data: &[u8]) -> Option<Vec<u8>> {
    match bits {
        256 => Some(Sha256::digest(data).to_vec()),
        384 => Some(Sha384::digest(data).to_vec()),
        512 => Some(Sha512::digest(data).to_vec()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// NIST SP 800-38D, GCM test case 3 (AES-128) and 15 (AES-256, no AAD).
    #[test]
    fn public_keys_from_jwk_members_match_the_private_keys() {
        let ec = Material::generate_ec(Curve::P384);
        let mut jwk = serde_json::Map::new();
        ec.public_jwk(&mut jwk);
        let x = decode_b64("x", jwk["x"].as_str().unwrap()).unwrap();
        let y = decode_b64("y", jwk["y"].as_str().unwrap()).unwrap();
        assert_eq!(
            ec_public_der(Curve::P384, &x, &y).unwrap(),
            ec.public_key_der().unwrap()
        );
        assert!(ec_public_der(Curve::P256, &x[..32], &y[..32]).is_err());

        let rsa = Material::generate_rsa(2048, None).unwrap();
        let Material::Rsa(k) = &rsa else {
            unreachable!()
        };
        assert_eq!(
            rsa_public_der(&k.n_bytes(), &k.e_bytes()).unwrap(),
            rsa.public_key_der().unwrap()
        );
    }

    #[test]
    fn a_byok_transfer_document_opens_with_the_key_exchange_key_only() {
        let kek = Material::generate_rsa(2048, None).unwrap();
        let Material::Rsa(k) = &kek else {
            unreachable!()
        };
        let target = Material::generate_oct(256).unwrap().to_der();
        let doc =
            byok_transfer_document("https://h/keys/kek/1", &k.to_public_key(), &target, "test")
                .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&doc).unwrap();
        assert_eq!(v["header"]["enc"], "CKM_RSA_AES_KEY_WRAP");
        assert_eq!(v["header"]["kid"], "https://h/keys/kek/1");
        let ct = decode_b64("ciphertext", v["ciphertext"].as_str().unwrap()).unwrap();
        assert_eq!(byok_unwrap(&kek, &ct).unwrap(), target);
        let other = Material::generate_rsa(2048, None).unwrap();
        assert!(byok_unwrap(&other, &ct).is_err());
    }

    #[test]
    fn aes_gcm_known_answers() {
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let key = hex("feffe9928665731c6d6a8f9467308308");
        let iv = hex("cafebabefacedbaddecaf888");
        let pt = hex(
            "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        );
        let ct = hex(
            "42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985",
        );
        let tag = hex("4d5c2af327cd64a62cf35abd2ba6fab4");
        let sealed = gcm_seal(&key, &iv, &pt, &[]).unwrap();
        assert_eq!(&sealed[..pt.len()], &ct[..]);
        assert_eq!(&sealed[pt.len()..], &tag[..]);
        assert_eq!(gcm_open(&key, &iv, &sealed, &[]).unwrap(), pt);

        let key = hex("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308");
        let ct = hex(
            "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        );
        let tag = hex("b094dac5d93471bdec1a502270e3cc6c");
        let sealed = gcm_seal(&key, &iv, &pt, &[]).unwrap();
        assert_eq!(&sealed[..pt.len()], &ct[..]);
        assert_eq!(&sealed[pt.len()..], &tag[..]);
    }

    /// RFC 3394 section 4.6 (256-bit KEK, 256-bit key) and RFC 5649 section 6 (192-bit KEK, 20 octets).
    #[test]
    fn aes_key_wrap_known_answers() {
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let kek = hex("000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F");
        let key = hex("00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F");
        let wrapped =
            hex("28C9F404C4B810F4CBCCB35CFB87F8263F5786E2D80ED326CBC7F0E71A99F43BFB988B9B7A02DD21");
        assert_eq!(aes_kw_wrap(&kek, &key, false).unwrap(), wrapped);
        assert_eq!(aes_kw_unwrap(&kek, &wrapped, false).unwrap(), key);

        let kek = hex("5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8");
        let key = hex("c37b7e6492584340bed12207808941155068f738");
        let wrapped = hex("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a");
        assert_eq!(aes_kw_wrap(&kek, &key, true).unwrap(), wrapped);
        assert_eq!(aes_kw_unwrap(&kek, &wrapped, true).unwrap(), key);
    }

    /// NIST SP 800-38A F.2.1 and F.2.5 (CBC-AES128 and CBC-AES256, first two blocks); with
    /// PKCS#7 a whole block of padding follows.
    #[test]
    fn aes_cbc_known_answers() {
        let hex = |s: &str| {
            (0..s.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
                .collect::<Vec<u8>>()
        };
        let iv = hex("000102030405060708090a0b0c0d0e0f");
        let plain = hex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51");
        let cases = [
            (
                "2b7e151628aed2a6abf7158809cf4f3c",
                "7649abac8119b246cee98e9b12e9197d5086cb9b507219ee95db113a917678b2",
            ),
            (
                "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
                "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d",
            ),
        ];
        for (key, cipher) in cases {
            let (key, cipher) = (hex(key), hex(cipher));
            assert_eq!(cbc_seal(&key, &iv, &plain, false).unwrap(), cipher);
            assert_eq!(cbc_open(&key, &iv, &cipher, false).unwrap(), plain);
            let padded = cbc_seal(&key, &iv, &plain, true).unwrap();
            assert_eq!(padded.len(), 48);
            assert_eq!(&padded[..32], &cipher[..]);
            assert_eq!(cbc_open(&key, &iv, &padded, true).unwrap(), plain);
            // Unpadded data that is not whole blocks, and a bad padding, are refused.
            assert!(cbc_seal(&key, &iv, &plain[..20], false).is_err());
            assert!(cbc_open(&key, &iv, &cipher, true).is_err());
        }
    }

    #[test]
    fn aes_kcv() {
        // AES-128 of a zero block under a zero key starts 66 E9 4B.
        assert_eq!(Material::Oct(vec![0; 16]).kcv().unwrap(), "66E94B");
    }
}
