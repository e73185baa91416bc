//! Cryptography on catalog keys, in Fortanix DSM's terms: object types and sizes, operation
//! names, and the request shapes of encrypt, decrypt, sign, verify, wrap and unwrap, mapped
//! onto the primitives in `keyward-crypto`.

use serde::{Deserialize, Serialize};

use keyward_crypto::{CryptoError as Primitive, Kty};
pub use keyward_crypto::{Curve, Material};

use crate::catalog::sobjects::{ObjType, SObject};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CryptoError(pub String);

impl From<Primitive> for CryptoError {
    fn from(e: Primitive) -> Self {
        CryptoError(e.to_string())
    }
}

fn err(msg: impl Into<String>) -> CryptoError {
    CryptoError(msg.into())
}

/// The key sizes Keyward supports per type.
pub fn check_size(obj_type: ObjType, size: Option<u32>) -> Result<u32, CryptoError> {
    match (obj_type, size) {
        (ObjType::Aes, Some(s @ (128 | 192 | 256))) => Ok(s),
        (ObjType::Rsa, Some(s @ (2048 | 3072 | 4096))) => Ok(s),
        (ObjType::Aes, Some(s)) => Err(err(format!(
            "AES key_size {s} is not supported (128, 192 or 256)"
        ))),
        (ObjType::Rsa, Some(s)) => Err(err(format!(
            "RSA key_size {s} is not supported (2048, 3072 or 4096)"
        ))),
        (ObjType::Aes | ObjType::Rsa, None) => {
            Err(err(format!("{} keys need a key_size", obj_type.as_str())))
        }
        (ObjType::Ec, _) => Err(err("EC keys take an elliptic_curve, not a key_size")),
    }
}

pub fn generate(
    obj_type: ObjType,
    key_size: Option<u32>,
    curve: Option<Curve>,
) -> Result<Material, CryptoError> {
    match obj_type {
        ObjType::Aes => Ok(Material::generate_oct(check_size(obj_type, key_size)?)?),
        ObjType::Rsa => Ok(Material::generate_rsa(
            check_size(obj_type, key_size)?,
            None,
        )?),
        ObjType::Ec => {
            if key_size.is_some() {
                return Err(err("EC keys take an elliptic_curve, not a key_size"));
            }
            Ok(Material::generate_ec(
                curve.ok_or_else(|| err("EC keys need an elliptic_curve"))?,
            ))
        }
    }
}

/// Material from imported bytes: raw AES keys; RSA in PKCS#8 or PKCS#1 DER; EC in PKCS#8 or
/// SEC1 DER.
pub fn import(obj_type: ObjType, bytes: &[u8]) -> Result<Material, CryptoError> {
    let kty = match obj_type {
        ObjType::Aes => Kty::Oct,
        ObjType::Rsa => Kty::Rsa,
        ObjType::Ec => Kty::Ec,
    };
    Ok(Material::from_private_der(kty, bytes)?)
}

pub fn obj_type_of(m: &Material) -> ObjType {
    match m.family() {
        Kty::Oct => ObjType::Aes,
        Kty::Rsa => ObjType::Rsa,
        Kty::Ec => ObjType::Ec,
    }
}

/// Hash algorithms DSM names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum HashAlg {
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA384")]
    Sha384,
    #[serde(rename = "SHA512")]
    Sha512,
}

impl HashAlg {
    fn bits(self) -> u32 {
        match self {
            HashAlg::Sha256 => 256,
            HashAlg::Sha384 => 384,
            HashAlg::Sha512 => 512,
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        keyward_crypto::sha2_digest(self.bits(), data).expect("supported size")
    }
}

/// RSA encryption padding (DSM `mode` for RSA).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RsaEncryptionMode {
    /// OAEP with MGF1; the hash defaults to SHA-1 (as DSM and Azure's RSA-OAEP do).
    #[serde(rename = "OAEP")]
    Oaep {
        #[serde(default)]
        mgf: Option<Mgf>,
    },
    #[serde(rename = "PKCS1_V15")]
    Pkcs1V15 {},
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mgf {
    pub mgf1: Mgf1,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Mgf1 {
    pub hash: String,
}

/// RSA signature padding (DSM `mode` for RSA signatures).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub enum RsaSignatureMode {
    #[serde(rename = "PKCS1_V15")]
    Pkcs1V15 {},
    /// PSS with MGF1 on the signature hash and a salt as long as the hash.
    #[serde(rename = "PSS")]
    Pss {
        #[serde(default)]
        mgf: Option<Mgf>,
    },
}

impl RsaEncryptionMode {
    /// DSM's string form of an RSA mode (the `sdkms` Python client sends these).
    /// DSM's names of RSA paddings, which `from_name` takes.
    pub const NAMES: [&'static str; 3] = ["OAEP_MGF1_SHA1", "OAEP_MGF1_SHA256", "PKCS1_V15"];

    pub fn from_name(name: &str) -> Option<RsaEncryptionMode> {
        let oaep = |hash: &str| RsaEncryptionMode::Oaep {
            mgf: Some(Mgf {
                mgf1: Mgf1 { hash: hash.into() },
            }),
        };
        match name {
            "OAEP_MGF1_SHA1" => Some(oaep("SHA1")),
            "OAEP_MGF1_SHA256" => Some(oaep("SHA256")),
            "PKCS1_V15" => Some(RsaEncryptionMode::Pkcs1V15 {}),
            _ => None,
        }
    }
}

/// Which JOSE algorithm an RSA encryption mode is.
fn rsa_alg(mode: &Option<RsaEncryptionMode>) -> Result<&'static str, CryptoError> {
    match mode {
        None | Some(RsaEncryptionMode::Oaep { mgf: None }) => Ok("RSA-OAEP"),
        Some(RsaEncryptionMode::Oaep { mgf: Some(m) }) => match m.mgf1.hash.as_str() {
            "SHA1" => Ok("RSA-OAEP"),
            "SHA256" => Ok("RSA-OAEP-256"),
            other => Err(err(format!(
                "OAEP with MGF1 {other} is not supported (SHA1 or SHA256)"
            ))),
        },
        Some(RsaEncryptionMode::Pkcs1V15 {}) => Ok("RSA1_5"),
    }
}

/// What picks the algorithm of an operation: type, size and curve, of material in the
/// catalog or of a key in an external key manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    pub obj_type: ObjType,
    pub size: Option<u32>,
    pub curve: Option<Curve>,
}

impl Shape {
    pub fn of(m: &Material) -> Shape {
        Shape {
            obj_type: obj_type_of(m),
            size: m.size(),
            curve: m.curve(),
        }
    }

    pub fn of_object(o: &SObject) -> Shape {
        Shape {
            obj_type: o.obj_type,
            size: o.key_size,
            curve: o.curve,
        }
    }
}

/// The JOSE name of an AES mode for the key's size: `GCM`, `CBC` (PKCS#7 padding, as DSM's
/// `CBC` and Managed HSM's `A*CBCPAD`) or `CBCNOPAD` (whole blocks only).
fn aes_alg(shape: Shape, mode: Option<&str>) -> Result<&'static str, CryptoError> {
    // An external key manager may not report the size of its AES keys; 256 is what
    // Keyward creates there.
    let size = match shape.size {
        Some(s @ (128 | 192 | 256)) => s,
        None => 256,
        Some(other) => return Err(err(format!("AES does not take {other}-bit keys"))),
    };
    Ok(match (mode.unwrap_or("GCM"), size) {
        ("GCM", 128) => "A128GCM",
        ("GCM", 192) => "A192GCM",
        ("GCM", _) => "A256GCM",
        ("CBC", 128) => "A128CBCPAD",
        ("CBC", 192) => "A192CBCPAD",
        ("CBC", _) => "A256CBCPAD",
        ("CBCNOPAD", 128) => "A128CBC",
        ("CBCNOPAD", 192) => "A192CBC",
        ("CBCNOPAD", _) => "A256CBC",
        (other, _) => {
            return Err(err(format!(
                "AES mode '{other}' is not supported ({})",
                AES_CRYPT_MODES.join(", ")
            )));
        }
    })
}

/// The JOSE algorithm of an encryption (or decryption): an AES mode (`GCM`, the default,
/// `CBC` or `CBCNOPAD`) or an RSA padding.
pub fn encryption_alg(
    shape: Shape,
    aes_mode: Option<&str>,
    rsa_mode: &Option<RsaEncryptionMode>,
) -> Result<&'static str, CryptoError> {
    match shape.obj_type {
        ObjType::Aes => aes_alg(shape, aes_mode),
        ObjType::Rsa => rsa_alg(rsa_mode),
        ObjType::Ec => Err(err("EC keys cannot encrypt or decrypt")),
    }
}

/// The JOSE algorithm of a key wrap: AES key wrap (`KW` or `KWP`) or RSA-OAEP.
pub fn wrapping_alg(
    shape: Shape,
    aes_mode: Option<&str>,
    rsa_mode: &Option<RsaEncryptionMode>,
) -> Result<&'static str, CryptoError> {
    match shape.obj_type {
        ObjType::Aes => aes_wrap_alg(aes_mode),
        ObjType::Rsa => rsa_alg(rsa_mode),
        ObjType::Ec => Err(err("EC keys cannot wrap or unwrap")),
    }
}

/// Encryption result.
pub struct Encrypted {
    pub cipher: Vec<u8>,
    pub iv: Option<Vec<u8>>,
    pub tag: Option<Vec<u8>>,
}

/// What an encryption with `alg` takes besides the data: RSA no iv or ad, AES-CBC no ad
/// (whether the key is here or in an HSM).
pub fn check_inputs(alg: &str, iv: Option<&[u8]>, ad: Option<&[u8]>) -> Result<(), CryptoError> {
    if alg.starts_with("RSA") && (iv.is_some() || ad.is_some()) {
        return Err(err("RSA encryption takes no iv or ad"));
    }
    if alg.contains("CBC") && ad.is_some() {
        return Err(err("AES-CBC takes no ad"));
    }
    Ok(())
}

/// AES or RSA encryption. AES takes mode `GCM` (the default; an optional 12-byte IV, random
/// when absent, and optional associated data) or `CBC`/`CBCNOPAD` (an optional 16-byte IV);
/// RSA takes an OAEP or PKCS#1 v1.5 mode.
pub fn encrypt(
    m: &Material,
    aes_mode: Option<&str>,
    rsa_mode: &Option<RsaEncryptionMode>,
    plain: &[u8],
    iv: Option<&[u8]>,
    ad: Option<&[u8]>,
) -> Result<Encrypted, CryptoError> {
    let alg = encryption_alg(Shape::of(m), aes_mode, rsa_mode)?;
    check_inputs(alg, iv, ad)?;
    let s = m.encrypt(alg, plain, iv, ad)?;
    Ok(Encrypted {
        cipher: s.value,
        iv: s.iv,
        tag: s.tag,
    })
}

pub fn decrypt(
    m: &Material,
    aes_mode: Option<&str>,
    rsa_mode: &Option<RsaEncryptionMode>,
    cipher: &[u8],
    iv: Option<&[u8]>,
    ad: Option<&[u8]>,
    tag: Option<&[u8]>,
) -> Result<Vec<u8>, CryptoError> {
    let alg = encryption_alg(Shape::of(m), aes_mode, rsa_mode)?;
    match obj_type_of(m) {
        ObjType::Rsa => Ok(m.decrypt(alg, cipher, None, None, None)?),
        _ => Ok(m.decrypt(alg, cipher, iv, ad, tag)?),
    }
}

/// The JOSE algorithm of a signature: RS*/PS* for RSA by padding and hash, ES* for EC by
/// curve (whose hash is fixed).
pub fn signature_alg(
    shape: Shape,
    hash: HashAlg,
    mode: &Option<RsaSignatureMode>,
) -> Result<&'static str, CryptoError> {
    use HashAlg::*;
    match (shape.obj_type, mode, hash) {
        (ObjType::Rsa, None | Some(RsaSignatureMode::Pkcs1V15 {}), Sha256) => Ok("RS256"),
        (ObjType::Rsa, None | Some(RsaSignatureMode::Pkcs1V15 {}), Sha384) => Ok("RS384"),
        (ObjType::Rsa, None | Some(RsaSignatureMode::Pkcs1V15 {}), Sha512) => Ok("RS512"),
        (ObjType::Rsa, Some(RsaSignatureMode::Pss { .. }), Sha256) => Ok("PS256"),
        (ObjType::Rsa, Some(RsaSignatureMode::Pss { .. }), Sha384) => Ok("PS384"),
        (ObjType::Rsa, Some(RsaSignatureMode::Pss { .. }), Sha512) => Ok("PS512"),
        (ObjType::Ec, None, _) => match (shape.curve, hash) {
            (Some(Curve::P256), Sha256) => Ok("ES256"),
            (Some(Curve::P384), Sha384) => Ok("ES384"),
            (Some(Curve::P521), Sha512) => Ok("ES512"),
            (Some(c), h) => Err(err(format!(
                "{} keys sign {:?} digests only",
                crate::catalog::sobjects::curve_name(c),
                ec_hash(c).unwrap_or(h)
            ))),
            (None, _) => Err(err("EC key without a curve")),
        },
        (ObjType::Ec, Some(_), _) => Err(err("EC signatures take no mode")),
        (ObjType::Aes, _, _) => Err(err("AES keys cannot sign")),
    }
}

fn ec_hash(c: Curve) -> Option<HashAlg> {
    Some(match c {
        Curve::P256 => HashAlg::Sha256,
        Curve::P384 => HashAlg::Sha384,
        Curve::P521 => HashAlg::Sha512,
    })
}

/// Signs a digest. ECDSA signatures are `r || s` (as in JWS).
pub fn sign(
    m: &Material,
    hash: HashAlg,
    mode: &Option<RsaSignatureMode>,
    digest: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    Ok(m.sign(signature_alg(Shape::of(m), hash, mode)?, digest)?)
}

pub fn verify(
    m: &Material,
    hash: HashAlg,
    mode: &Option<RsaSignatureMode>,
    digest: &[u8],
    sig: &[u8],
) -> Result<bool, CryptoError> {
    Ok(m.verify(signature_alg(Shape::of(m), hash, mode)?, digest, sig)?)
}

/// Wraps `subject` (another key's exportable material) with `wrapper`: AES key wrap (`KW`,
/// RFC 3394, or `KWP`, RFC 5649) for AES wrappers, RSA-OAEP for RSA wrappers.
pub fn wrap(
    wrapper: &Material,
    aes_mode: Option<&str>,
    rsa_mode: &Option<RsaEncryptionMode>,
    subject: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let alg = wrapping_alg(Shape::of(wrapper), aes_mode, rsa_mode)?;
    Ok(wrapper.encrypt(alg, subject, None, None)?.value)
}

pub fn unwrap(
    wrapper: &Material,
    aes_mode: Option<&str>,
    rsa_mode: &Option<RsaEncryptionMode>,
    wrapped: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let alg = wrapping_alg(Shape::of(wrapper), aes_mode, rsa_mode)?;
    Ok(wrapper.decrypt(alg, wrapped, None, None, None)?)
}

/// The AES modes of encryption and of key wrapping (as the OpenAPI document lists them).
pub const AES_CRYPT_MODES: [&str; 3] = ["GCM", "CBC", "CBCNOPAD"];
pub const AES_WRAP_MODES: [&str; 2] = ["KW", "KWP"];

fn aes_wrap_alg(mode: Option<&str>) -> Result<&'static str, CryptoError> {
    match mode.unwrap_or("KWP") {
        "KW" => Ok("CKM_AES_KEY_WRAP"),
        "KWP" => Ok("CKM_AES_KEY_WRAP_PAD"),
        other => Err(err(format!(
            "AES wrapping mode '{other}' is not supported (KW or KWP)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lists the OpenAPI document gives are the names the parsers take.
    #[test]
    fn the_listed_mode_names_are_accepted() {
        for name in RsaEncryptionMode::NAMES {
            assert!(RsaEncryptionMode::from_name(name).is_some(), "{name}");
        }
        for name in AES_CRYPT_MODES {
            let shape = Shape {
                obj_type: ObjType::Aes,
                size: Some(128),
                curve: None,
            };
            assert!(aes_alg(shape, Some(name)).is_ok(), "{name}");
        }
        for name in AES_WRAP_MODES {
            assert!(aes_wrap_alg(Some(name)).is_ok(), "{name}");
        }
    }
}
