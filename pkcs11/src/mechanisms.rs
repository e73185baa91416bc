//! The mechanisms the module offers: exactly what Keyward's API does, and the request body
//! each becomes. Anything else is `CKR_MECHANISM_INVALID`, and parameters the API cannot
//! honour (another PSS salt length, OAEP labels, GCM tags other than 128 bits) are
//! `CKR_MECHANISM_PARAM_INVALID`, never quietly changed.

use cryptoki_sys::*;
use serde_json::{Value, json};

use crate::client::{Key, b64};

/// A digest the API signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    pub fn name(self) -> &'static str {
        match self {
            Hash::Sha256 => "SHA256",
            Hash::Sha384 => "SHA384",
            Hash::Sha512 => "SHA512",
        }
    }

    pub fn size(self) -> usize {
        match self {
            Hash::Sha256 => 32,
            Hash::Sha384 => 48,
            Hash::Sha512 => 64,
        }
    }

    fn of_len(n: usize) -> Option<Hash> {
        [Hash::Sha256, Hash::Sha384, Hash::Sha512]
            .into_iter()
            .find(|h| h.size() == n)
    }

    fn of_mechanism(m: CK_MECHANISM_TYPE) -> Option<Hash> {
        match m {
            CKM_SHA256 => Some(Hash::Sha256),
            CKM_SHA384 => Some(Hash::Sha384),
            CKM_SHA512 => Some(Hash::Sha512),
            _ => None,
        }
    }

    fn mgf(self) -> CK_RSA_PKCS_MGF_TYPE {
        match self {
            Hash::Sha256 => CKG_MGF1_SHA256,
            Hash::Sha384 => CKG_MGF1_SHA384,
            Hash::Sha512 => CKG_MGF1_SHA512,
        }
    }

    /// The DER prefix of a PKCS#1 `DigestInfo` with this digest.
    fn digest_info_prefix(self) -> &'static [u8] {
        match self {
            Hash::Sha256 => &[
                0x30, 0x31, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x01, 0x05, 0x00, 0x04, 0x20,
            ],
            Hash::Sha384 => &[
                0x30, 0x41, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x02, 0x05, 0x00, 0x04, 0x30,
            ],
            Hash::Sha512 => &[
                0x30, 0x51, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
                0x03, 0x05, 0x00, 0x04, 0x40,
            ],
        }
    }
}

/// OAEP's digest (the API's `OAEP_MGF1_SHA1` and `OAEP_MGF1_SHA256`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OaepHash {
    Sha1,
    Sha256,
}

/// A mechanism with its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mech {
    /// Signing: the caller's `DigestInfo`; encryption: PKCS#1 v1.5 padding.
    RsaPkcs,
    RsaPkcsHash(Hash),
    /// `prehashed`: `CKM_RSA_PKCS_PSS`, the caller gives the digest.
    RsaPss {
        hash: Hash,
        prehashed: bool,
    },
    RsaOaep(OaepHash),
    /// The caller gives the digest.
    Ecdsa,
    EcdsaHash(Hash),
    AesGcm {
        iv: Vec<u8>,
        aad: Vec<u8>,
    },
    /// `pad`: `CKM_AES_CBC_PAD` (PKCS#7), else `CKM_AES_CBC` (whole blocks).
    AesCbc {
        iv: Vec<u8>,
        pad: bool,
    },
    /// Key wrapping: RFC 3394 (`CKM_AES_KEY_WRAP`) or, `pad`, RFC 5649
    /// (`CKM_AES_KEY_WRAP_KWP`).
    AesKeyWrap {
        pad: bool,
    },
}

/// What a mechanism is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Sign,
    Verify,
    Encrypt,
    Decrypt,
    Wrap,
    Unwrap,
}

/// Every mechanism offered: type, key sizes (bits), what for.
pub const SUPPORTED: [(CK_MECHANISM_TYPE, CK_ULONG, CK_ULONG, CK_FLAGS); 21] = {
    const RSA: (CK_ULONG, CK_ULONG) = (2048, 4096);
    const SIGN: CK_FLAGS = CKF_SIGN | CKF_VERIFY;
    const CRYPT: CK_FLAGS = CKF_ENCRYPT | CKF_DECRYPT;
    const WRAP: CK_FLAGS = CKF_WRAP | CKF_UNWRAP;
    [
        (CKM_RSA_PKCS, RSA.0, RSA.1, SIGN | CRYPT),
        (CKM_SHA256_RSA_PKCS, RSA.0, RSA.1, SIGN),
        (CKM_SHA384_RSA_PKCS, RSA.0, RSA.1, SIGN),
        (CKM_SHA512_RSA_PKCS, RSA.0, RSA.1, SIGN),
        (CKM_RSA_PKCS_PSS, RSA.0, RSA.1, SIGN),
        (CKM_SHA256_RSA_PKCS_PSS, RSA.0, RSA.1, SIGN),
        (CKM_SHA384_RSA_PKCS_PSS, RSA.0, RSA.1, SIGN),
        (CKM_SHA512_RSA_PKCS_PSS, RSA.0, RSA.1, SIGN),
        (CKM_RSA_PKCS_OAEP, RSA.0, RSA.1, CRYPT | WRAP),
        (
            CKM_ECDSA,
            256,
            521,
            SIGN | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        ),
        (
            CKM_ECDSA_SHA256,
            256,
            521,
            SIGN | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        ),
        (
            CKM_ECDSA_SHA384,
            256,
            521,
            SIGN | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        ),
        (
            CKM_ECDSA_SHA512,
            256,
            521,
            SIGN | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        ),
        // AES key sizes in bytes, as PKCS#11 counts them.
        (CKM_AES_GCM, 16, 32, CRYPT),
        (CKM_AES_CBC, 16, 32, CRYPT),
        (CKM_AES_CBC_PAD, 16, 32, CRYPT),
        (CKM_AES_KEY_WRAP, 16, 32, WRAP),
        (CKM_AES_KEY_WRAP_KWP, 16, 32, WRAP),
        (CKM_AES_KEY_GEN, 16, 32, CKF_GENERATE),
        (
            CKM_RSA_PKCS_KEY_PAIR_GEN,
            RSA.0,
            RSA.1,
            CKF_GENERATE_KEY_PAIR,
        ),
        (
            CKM_EC_KEY_PAIR_GEN,
            256,
            521,
            CKF_GENERATE_KEY_PAIR | CKF_EC_F_P | CKF_EC_NAMEDCURVE | CKF_EC_UNCOMPRESS,
        ),
    ]
};

/// The parameters of `m`, read as `T` (`CKR_MECHANISM_PARAM_INVALID` when absent or of
/// another size).
///
/// # Safety
/// `m.pParameter` points to `m.ulParameterLen` readable bytes, as the caller promised.
unsafe fn params<T: Copy>(m: &CK_MECHANISM) -> Result<T, CK_RV> {
    if m.pParameter.is_null() || m.ulParameterLen as usize != std::mem::size_of::<T>() {
        return Err(CKR_MECHANISM_PARAM_INVALID);
    }
    Ok(unsafe { std::ptr::read_unaligned(m.pParameter as *const T) })
}

/// # Safety
/// `ptr` points to `len` readable bytes, or is null with `len` 0.
unsafe fn bytes(ptr: *const u8, len: CK_ULONG) -> Result<Vec<u8>, CK_RV> {
    match (ptr.is_null(), len) {
        (_, 0) => Ok(vec![]),
        (true, _) => Err(CKR_MECHANISM_PARAM_INVALID),
        (false, n) => Ok(unsafe { std::slice::from_raw_parts(ptr, n as usize) }.to_vec()),
    }
}

/// Reads a mechanism the caller passed.
///
/// # Safety
/// The mechanism's parameter pointers are valid as PKCS#11 says.
pub unsafe fn parse(m: &CK_MECHANISM) -> Result<Mech, CK_RV> {
    let pss = |prehashed_with: Option<Hash>| -> Result<Mech, CK_RV> {
        let p: CK_RSA_PKCS_PSS_PARAMS = unsafe { params(m)? };
        let hash = Hash::of_mechanism(p.hashAlg).ok_or(CKR_MECHANISM_PARAM_INVALID)?;
        if prehashed_with.is_some_and(|h| h != hash)
            || p.mgf != hash.mgf()
            || p.sLen as usize != hash.size()
        {
            return Err(CKR_MECHANISM_PARAM_INVALID);
        }
        Ok(Mech::RsaPss {
            hash,
            prehashed: prehashed_with.is_none(),
        })
    };
    Ok(match m.mechanism {
        CKM_RSA_PKCS => Mech::RsaPkcs,
        CKM_SHA256_RSA_PKCS => Mech::RsaPkcsHash(Hash::Sha256),
        CKM_SHA384_RSA_PKCS => Mech::RsaPkcsHash(Hash::Sha384),
        CKM_SHA512_RSA_PKCS => Mech::RsaPkcsHash(Hash::Sha512),
        CKM_RSA_PKCS_PSS => pss(None)?,
        CKM_SHA256_RSA_PKCS_PSS => pss(Some(Hash::Sha256))?,
        CKM_SHA384_RSA_PKCS_PSS => pss(Some(Hash::Sha384))?,
        CKM_SHA512_RSA_PKCS_PSS => pss(Some(Hash::Sha512))?,
        CKM_RSA_PKCS_OAEP => {
            let p: CK_RSA_PKCS_OAEP_PARAMS = unsafe { params(m)? };
            let hash = match (p.hashAlg, p.mgf) {
                (CKM_SHA_1, CKG_MGF1_SHA1) => OaepHash::Sha1,
                (CKM_SHA256, CKG_MGF1_SHA256) => OaepHash::Sha256,
                _ => return Err(CKR_MECHANISM_PARAM_INVALID),
            };
            if p.ulSourceDataLen != 0 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            Mech::RsaOaep(hash)
        }
        CKM_ECDSA => Mech::Ecdsa,
        CKM_ECDSA_SHA256 => Mech::EcdsaHash(Hash::Sha256),
        CKM_ECDSA_SHA384 => Mech::EcdsaHash(Hash::Sha384),
        CKM_ECDSA_SHA512 => Mech::EcdsaHash(Hash::Sha512),
        CKM_AES_GCM => {
            let p: CK_GCM_PARAMS = unsafe { params(m)? };
            if p.ulTagBits != 128 || p.ulIvLen != 12 {
                return Err(CKR_MECHANISM_PARAM_INVALID);
            }
            Mech::AesGcm {
                iv: unsafe { bytes(p.pIv, p.ulIvLen)? },
                aad: unsafe { bytes(p.pAAD, p.ulAADLen)? },
            }
        }
        CKM_AES_CBC | CKM_AES_CBC_PAD => {
            let iv: [u8; 16] = unsafe { params(m)? };
            Mech::AesCbc {
                iv: iv.to_vec(),
                pad: m.mechanism == CKM_AES_CBC_PAD,
            }
        }
        // The default initial value only: the API takes no other.
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_KWP if m.ulParameterLen == 0 => Mech::AesKeyWrap {
            pad: m.mechanism == CKM_AES_KEY_WRAP_KWP,
        },
        CKM_AES_KEY_WRAP | CKM_AES_KEY_WRAP_KWP => return Err(CKR_MECHANISM_PARAM_INVALID),
        _ => return Err(CKR_MECHANISM_INVALID),
    })
}

impl Mech {
    /// Whether the mechanism serves `purpose` on keys of `obj_type`.
    pub fn fits(&self, purpose: Purpose, obj_type: &str) -> Result<(), CK_RV> {
        let crypt = matches!(purpose, Purpose::Encrypt | Purpose::Decrypt);
        let wrap = matches!(purpose, Purpose::Wrap | Purpose::Unwrap);
        let (ty, ok) = match self {
            Mech::RsaPkcs => ("RSA", !wrap),
            Mech::RsaPkcsHash(_) | Mech::RsaPss { .. } => {
                ("RSA", matches!(purpose, Purpose::Sign | Purpose::Verify))
            }
            Mech::RsaOaep(_) => ("RSA", crypt || wrap),
            Mech::Ecdsa | Mech::EcdsaHash(_) => {
                ("EC", matches!(purpose, Purpose::Sign | Purpose::Verify))
            }
            Mech::AesGcm { .. } | Mech::AesCbc { .. } => ("AES", crypt),
            Mech::AesKeyWrap { .. } => ("AES", wrap),
        };
        if !ok {
            return Err(CKR_MECHANISM_INVALID);
        }
        if ty != obj_type {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        Ok(())
    }

    /// Whether data may come in parts: the mechanism hashes it, or is an AES cipher (whose
    /// parts the module gathers and the daemon encrypts in one call at the end: an update
    /// answers no output, the final call all of it).
    pub fn multipart(&self) -> bool {
        matches!(
            self,
            Mech::RsaPkcsHash(_)
                | Mech::RsaPss {
                    prehashed: false,
                    ..
                }
                | Mech::EcdsaHash(_)
                | Mech::AesGcm { .. }
                | Mech::AesCbc { .. }
        )
    }

    /// The signature's length with `key`.
    pub fn signature_len(&self, key: &Key) -> Option<usize> {
        match key.obj_type.as_str() {
            "RSA" => key.key_size.map(|b| b as usize / 8),
            "EC" => key
                .elliptic_curve
                .as_deref()
                .and_then(crate::objects::ecdsa_len),
            _ => None,
        }
    }

    /// The sign request's body for `data`, and for a verification its `signature`.
    pub fn sign_body(&self, data: &[u8], signature: Option<&[u8]>) -> Result<Value, CK_RV> {
        let (hash, input, mode) = match self {
            Mech::RsaPkcs => {
                let hash = [Hash::Sha256, Hash::Sha384, Hash::Sha512]
                    .into_iter()
                    .find(|h| {
                        data.len() == h.digest_info_prefix().len() + h.size()
                            && data.starts_with(h.digest_info_prefix())
                    })
                    .ok_or(CKR_DATA_INVALID)?;
                let digest = &data[hash.digest_info_prefix().len()..];
                (hash, ("hash", digest), Some(json!({"PKCS1_V15": {}})))
            }
            Mech::RsaPkcsHash(h) => (*h, ("data", data), Some(json!({"PKCS1_V15": {}}))),
            Mech::RsaPss { hash, prehashed } => {
                if *prehashed && data.len() != hash.size() {
                    return Err(CKR_DATA_LEN_RANGE);
                }
                let field = if *prehashed { "hash" } else { "data" };
                (
                    *hash,
                    (field, data),
                    Some(json!({"PSS": {"mgf": {"mgf1": {"hash": hash.name()}}}})),
                )
            }
            Mech::Ecdsa => {
                let h = Hash::of_len(data.len()).ok_or(CKR_DATA_LEN_RANGE)?;
                (h, ("hash", data), None)
            }
            Mech::EcdsaHash(h) => (*h, ("data", data), None),
            _ => return Err(CKR_MECHANISM_INVALID),
        };
        let mut body = json!({"hash_alg": hash.name(), input.0: b64(input.1)});
        if let Some(m) = mode {
            body["mode"] = m;
        }
        if let Some(s) = signature {
            body["signature"] = json!(b64(s));
        }
        Ok(body)
    }

    /// The encrypt (or decrypt, `decrypt`) request's body for `input`, and the answer's
    /// length bound.
    pub fn crypt_body(&self, input: &[u8], decrypt: bool) -> Result<Value, CK_RV> {
        let rsa = |mode: &str| {
            let field = if decrypt { "cipher" } else { "plain" };
            Ok(json!({"alg": "RSA", "mode": mode, field: b64(input)}))
        };
        match self {
            Mech::RsaPkcs => rsa("PKCS1_V15"),
            Mech::RsaOaep(OaepHash::Sha1) => rsa("OAEP_MGF1_SHA1"),
            Mech::RsaOaep(OaepHash::Sha256) => rsa("OAEP_MGF1_SHA256"),
            Mech::AesGcm { iv, aad } => {
                let mut body = json!({"alg": "AES", "mode": "GCM", "iv": b64(iv)});
                if !aad.is_empty() {
                    body["ad"] = json!(b64(aad));
                }
                if decrypt {
                    // PKCS#11 carries the tag after the ciphertext.
                    let split = input
                        .len()
                        .checked_sub(16)
                        .ok_or(CKR_ENCRYPTED_DATA_LEN_RANGE)?;
                    body["cipher"] = json!(b64(&input[..split]));
                    body["tag"] = json!(b64(&input[split..]));
                } else {
                    body["plain"] = json!(b64(input));
                    body["tag_len"] = json!(128);
                }
                Ok(body)
            }
            Mech::AesCbc { iv, pad } => {
                if (decrypt || !pad) && !input.len().is_multiple_of(16) {
                    return Err(if decrypt {
                        CKR_ENCRYPTED_DATA_LEN_RANGE
                    } else {
                        CKR_DATA_LEN_RANGE
                    });
                }
                let mode = if *pad { "CBC" } else { "CBCNOPAD" };
                let field = if decrypt { "cipher" } else { "plain" };
                Ok(json!({"alg": "AES", "mode": mode, "iv": b64(iv), field: b64(input)}))
            }
            _ => Err(CKR_MECHANISM_INVALID),
        }
    }

    /// The API's `alg` and `mode` of a key wrap or unwrap with this mechanism.
    pub fn wrap_mode(&self) -> Result<(&'static str, &'static str), CK_RV> {
        match self {
            Mech::AesKeyWrap { pad: false } => Ok(("AES", "KW")),
            Mech::AesKeyWrap { pad: true } => Ok(("AES", "KWP")),
            Mech::RsaOaep(OaepHash::Sha1) => Ok(("RSA", "OAEP_MGF1_SHA1")),
            Mech::RsaOaep(OaepHash::Sha256) => Ok(("RSA", "OAEP_MGF1_SHA256")),
            _ => Err(CKR_MECHANISM_INVALID),
        }
    }

    /// The longest answer an encryption or decryption of `n` bytes gives with `key`.
    pub fn crypt_len(&self, key: &Key, n: usize, decrypt: bool) -> usize {
        match (self, decrypt) {
            (Mech::AesGcm { .. }, false) => n + 16,
            (Mech::AesGcm { .. }, true) => n.saturating_sub(16),
            (Mech::AesCbc { pad: true, .. }, false) => (n / 16 + 1) * 16,
            (Mech::AesCbc { .. }, _) => n,
            _ => key.key_size.map_or(n, |b| b as usize / 8),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_digest_info_becomes_a_hash_and_anything_else_is_refused() {
        let mut info = Hash::Sha256.digest_info_prefix().to_vec();
        info.extend([7u8; 32]);
        let body = Mech::RsaPkcs.sign_body(&info, None).unwrap();
        assert_eq!(body["hash_alg"], "SHA256");
        assert_eq!(body["hash"], b64(&[7u8; 32]));
        assert_eq!(
            Mech::RsaPkcs.sign_body(b"not a digest info", None),
            Err(CKR_DATA_INVALID)
        );
        assert_eq!(
            Mech::Ecdsa.sign_body(&[1u8; 20], None),
            Err(CKR_DATA_LEN_RANGE)
        );
    }

    #[test]
    fn pss_takes_only_what_the_api_does() {
        let mut p = CK_RSA_PKCS_PSS_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            sLen: 32,
        };
        let m = CK_MECHANISM {
            mechanism: CKM_SHA256_RSA_PKCS_PSS,
            pParameter: &mut p as *mut _ as *mut _,
            ulParameterLen: std::mem::size_of::<CK_RSA_PKCS_PSS_PARAMS>() as CK_ULONG,
        };
        assert_eq!(
            unsafe { parse(&m) },
            Ok(Mech::RsaPss {
                hash: Hash::Sha256,
                prehashed: false
            })
        );
        p.sLen = 20;
        let m = CK_MECHANISM {
            pParameter: &mut p as *mut _ as *mut _,
            ..m
        };
        assert_eq!(unsafe { parse(&m) }, Err(CKR_MECHANISM_PARAM_INVALID));
    }
}
