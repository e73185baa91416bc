//! Key material and the cryptographic primitives that Keyward and its Azure Managed HSM
//! emulator share, on the RustCrypto crates: key generation (AES, RSA, EC), PKCS#8 and JSON
//! Web Key encodings, the JOSE-named algorithms (RSA-OAEP, A256GCM, A256KW, PS256, ES256, ...),
//! AES key wrap (RFC 3394 and 5649), and BYOK transfer blobs (CKM_RSA_AES_KEY_WRAP).

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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Curve {
    #[serde(rename = "P-256")]
    P256,
    #[serde(rename = "P-384")]
    P384,
    #[serde(rename = "P-521")]
    P521,
}

impl Curve {
    pub fn parse(s: &str) -> Result<Curve, CryptoError> {
        match s {
            "P-256" => Ok(Curve::P256),
            "P-384" => Ok(Curve::P384),
            "P-521" => Ok(Curve::P521),
            "P-256K" => Err(CryptoError::Unsupported(
                "The curve P-256K is not supported by this emulator.".into(),
            )),
            other => Err(bad(format!(
                "Invalid curve name: {other}. Supported curves: P-256, P-384, P-521."
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P384 => "P-384",
            Curve::P521 => "P-521",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P384 => 48,
            Curve::P521 => 66,
        }
    }
}

/// Key material held by the emulated HSM.
#[derive(Clone)]
pub enum Material {
    Rsa(Box<PrivateKey>),
    P256(p256::SecretKey),
    P384(p384::SecretKey),
    P521(p521::SecretKey),
    Oct(Vec<u8>),
}

impl std::fmt::Debug for Material {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Material({})", self.kty())
    }
}

/// Key type families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kty {
    Rsa,
    Ec,
    Oct,
}

impl Kty {
    /// Accepts the HSM key types and their plain names: Managed HSM keeps every key in the
    /// HSM, so `RSA` becomes `RSA-HSM` (clients importing a JWK commonly send `RSA`).
    pub fn parse_hsm(kty: &str) -> Result<Kty, CryptoError> {
        match kty {
            "RSA-HSM" | "RSA" => Ok(Kty::Rsa),
            "EC-HSM" | "EC" => Ok(Kty::Ec),
            "oct-HSM" | "oct" => Ok(Kty::Oct),
            other => Err(bad(format!(
                "Invalid kty value: {other}. Supported: RSA-HSM, EC-HSM, oct-HSM."
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kty::Rsa => "RSA-HSM",
            Kty::Ec => "EC-HSM",
            Kty::Oct => "oct-HSM",
        }
    }
}

impl Material {
    pub fn kty(&self) -> &'static str {
        self.family().name()
    }

    pub fn family(&self) -> Kty {
        match self {
            Material::Rsa(_) => Kty::Rsa,
            Material::P256(_) | Material::P384(_) | Material::P521(_) => Kty::Ec,
            Material::Oct(_) => Kty::Oct,
        }
    }

    pub fn curve(&self) -> Option<Curve> {
        match self {
            Material::P256(_) => Some(Curve::P256),
            Material::P384(_) => Some(Curve::P384),
            Material::P521(_) => Some(Curve::P521),
            _ => None,
        }
    }

    /// Size in bits (RSA modulus, AES key); none for EC.
    pub fn size(&self) -> Option<u32> {
        match self {
            Material::Rsa(k) => Some(k.size() as u32 * 8),
            Material::Oct(k) => Some(k.len() as u32 * 8),
            _ => None,
        }
    }

    pub fn generate_rsa(bits: u32, exponent: Option<u32>) -> Result<Material, CryptoError> {
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(bad(format!(
                "Invalid key_size {bits} for RSA-HSM. Supported sizes: 2048, 3072, 4096."
            )));
        }
        let mut rng = getrandom::SysRng;
        let key = match exponent {
            None | Some(65537) => PrivateKey::new(&mut rng, bits as usize),
            Some(e) if e >= 3 && e % 2 == 1 => {
                PrivateKey::new_with_exp(&mut rng, bits as usize, BoxedUint::from(e as u64))
            }
            Some(e) => return Err(bad(format!("Invalid public_exponent {e}."))),
        }
        .map_err(|e| bad(format!("RSA key generation failed: {e}")))?;
        Ok(Material::Rsa(Box::new(key)))
    }

    pub fn generate_ec(curve: Curve) -> Material {
        match curve {
            Curve::P256 => Material::P256(p256::SecretKey::generate()),
            Curve::P384 => Material::P384(p384::SecretKey::generate()),
            Curve::P521 => Material::P521(p521::SecretKey::generate()),
        }
    }

    pub fn generate_oct(bits: u32) -> Result<Material, CryptoError> {
        if ![128, 192, 256].contains(&bits) {
            return Err(bad(format!(
                "Invalid key_size {bits} for oct-HSM. Supported sizes: 128, 192, 256."
            )));
        }
        Ok(Material::Oct(random_bytes(bits as usize / 8)))
    }

    /// The public JWK members (no private parts): `n`/`e`, `crv`/`x`/`y`, nothing for oct.
    pub fn public_jwk(&self, jwk: &mut serde_json::Map<String, serde_json::Value>) {
        use serde_json::Value::String as S;
        match self {
            Material::Rsa(k) => {
                jwk.insert("n".into(), S(b64url(&k.n_bytes())));
                jwk.insert("e".into(), S(b64url(&k.e_bytes())));
            }
            Material::P256(_) | Material::P384(_) | Material::P521(_) => {
                let (x, y) = self.ec_point().expect("EC material");
                jwk.insert("crv".into(), S(self.curve().unwrap().name().into()));
                jwk.insert("x".into(), S(b64url(&x)));
                jwk.insert("y".into(), S(b64url(&y)));
            }
            Material::Oct(_) => {}
        }
    }

    fn ec_point(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        use p256::elliptic_curve::sec1::ToSec1Point;
        let point = match self {
            Material::P256(k) => k.public_key().to_sec1_point(false).as_bytes().to_vec(),
            Material::P384(k) => k.public_key().to_sec1_point(false).as_bytes().to_vec(),
            Material::P521(k) => k.public_key().to_sec1_point(false).as_bytes().to_vec(),
            _ => return None,
        };
        let len = (point.len() - 1) / 2;
        Some((point[1..1 + len].to_vec(), point[1 + len..].to_vec()))
    }

    /// Material from a private JWK (`kty` already checked to be an HSM type).
    pub fn from_jwk(kty: Kty, jwk: &serde_json::Value) -> Result<Material, CryptoError> {
        let field = |name: &str| -> Result<Vec<u8>, CryptoError> {
            let v = jwk.get(name).and_then(|v| v.as_str()).ok_or_else(|| {
                bad(format!(
                    "The JSON Web Key is missing the required member '{name}'."
                ))
            })?;
            decode_b64(name, v)
        };
        match kty {
            Kty::Rsa => {
                let n = field("n")?;
                let e = field("e")?;
                let d = field("d")?;
                let p = field("p")?;
                let q = field("q")?;
                let key = PrivateKey::from_components(
                    BoxedUint::from_be_slice_vartime(&n),
                    BoxedUint::from_be_slice_vartime(&e),
                    BoxedUint::from_be_slice_vartime(&d),
                    vec![
                        BoxedUint::from_be_slice_vartime(&p),
                        BoxedUint::from_be_slice_vartime(&q),
                    ],
                )
                .map_err(|e| bad(format!("The RSA key is not valid: {e}")))?;
                let bits = key.size() * 8;
                if ![2048, 3072, 4096].contains(&bits) {
                    return Err(bad(format!(
                        "RSA key size {bits} is not supported. Supported sizes: 2048, 3072, 4096."
                    )));
                }
                Ok(Material::Rsa(Box::new(key)))
            }
            Kty::Ec => {
                let crv = jwk
                    .get("crv")
                    .and_then(|v| v.as_str())
                    .ok_or_else(|| bad("The JSON Web Key is missing 'crv'."))?;
                let curve = Curve::parse(crv)?;
                let d = field("d")?;
                if d.len() != curve.coordinate_len() {
                    return Err(bad(format!(
                        "The private key 'd' has the wrong length for {crv}."
                    )));
                }
                let material = match curve {
                    Curve::P256 => p256::SecretKey::from_slice(&d).map(Material::P256),
                    Curve::P384 => p384::SecretKey::from_slice(&d).map(Material::P384),
                    Curve::P521 => p521::SecretKey::from_slice(&d).map(Material::P521),
                }
                .map_err(|_| bad("The EC private key is not valid."))?;
                // When the public point is given it must belong to the private key.
                if let (Some(_), Some(_)) = (jwk.get("x"), jwk.get("y")) {
                    let (x, y) = material.ec_point().expect("EC");
                    if field("x")? != x || field("y")? != y {
                        return Err(bad(
                            "The EC public key (x, y) does not match the private key 'd'.",
                        ));
                    }
                }
                Ok(material)
            }
            Kty::Oct => {
                let k = field("k")?;
                if ![16, 24, 32].contains(&k.len()) {
                    return Err(bad(format!(
                        "Invalid oct key length {} bits. Supported sizes: 128, 192, 256.",
                        k.len() * 8
                    )));
                }
                Ok(Material::Oct(k))
            }
        }
    }

    /// PKCS#8 DER (RSA, EC) or the raw bytes (oct): the BYOK target format, and how
    /// material is serialized in backups and persisted state.
    pub fn to_der(&self) -> Vec<u8> {
        match self {
            Material::Rsa(k) => k.to_pkcs8_der().expect("encode RSA").as_bytes().to_vec(),
            Material::P256(k) => k.to_pkcs8_der().expect("encode P-256").as_bytes().to_vec(),
            Material::P384(k) => k.to_pkcs8_der().expect("encode P-384").as_bytes().to_vec(),
            Material::P521(k) => k.to_pkcs8_der().expect("encode P-521").as_bytes().to_vec(),
            Material::Oct(k) => k.clone(),
        }
    }

    /// Inverse of [`Material::to_der`] for a known family (and curve).
    pub fn from_der(kty: Kty, curve: Option<Curve>, der: &[u8]) -> Result<Material, CryptoError> {
        let invalid = |what: &str| {
            bad(format!(
                "The transferred key is not a valid {what} PKCS#8 private key."
            ))
        };
        match (kty, curve) {
            (Kty::Rsa, _) => {
                let key = PrivateKey::from_pkcs8_der(der).map_err(|_| invalid("RSA"))?;
                if ![2048, 3072, 4096].contains(&(key.size() * 8)) {
                    return Err(bad(
                        "RSA key size is not supported. Supported sizes: 2048, 3072, 4096.",
                    ));
                }
                Ok(Material::Rsa(Box::new(key)))
            }
            (Kty::Ec, Some(Curve::P256)) => p256::SecretKey::from_pkcs8_der(der)
                .map(Material::P256)
                .map_err(|_| invalid("P-256")),
            (Kty::Ec, Some(Curve::P384)) => p384::SecretKey::from_pkcs8_der(der)
                .map(Material::P384)
                .map_err(|_| invalid("P-384")),
            (Kty::Ec, Some(Curve::P521)) => p521::SecretKey::from_pkcs8_der(der)
                .map(Material::P521)
                .map_err(|_| invalid("P-521")),
            (Kty::Ec, None) => Err(bad("An EC key needs 'crv'.")),
            (Kty::Oct, _) => {
                if ![16, 24, 32].contains(&der.len()) {
                    return Err(bad(
                        "Invalid oct key length. Supported sizes: 128, 192, 256.",
                    ));
                }
                Ok(Material::Oct(der.to_vec()))
            }
        }
    }

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
    } else if [
        "A128CBC",
        "A192CBC",
        "A256CBC",
        "A128CBCPAD",
        "A192CBCPAD",
        "A256CBCPAD",
        "RSNULL",
        "ES256K",
    ]
    .contains(&alg)
    {
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

pub fn gcm_seal(
    key: &[u8],
    iv: &[u8],
    plaintext: &[u8],
    aad: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce = Nonce::try_from(iv).map_err(|_| bad("bad nonce"))?;
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let r = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        24 => Aes192Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        32 => Aes256Gcm::new_from_slice(key)
            .unwrap()
            .encrypt(&nonce, payload),
        _ => return Err(bad("bad AES key length")),
    };
    r.map_err(|_| bad("AES-GCM encryption failed"))
}

pub fn gcm_open(key: &[u8], iv: &[u8], sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let nonce = Nonce::try_from(iv).map_err(|_| bad("bad nonce"))?;
    let payload = Payload { msg: sealed, aad };
    let r = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(&nonce, payload),
        24 => Aes192Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(&nonce, payload),
        32 => Aes256Gcm::new_from_slice(key)
            .unwrap()
            .decrypt(&nonce, payload),
        _ => return Err(bad("bad AES key length")),
    };
    r.map_err(|_| bad("AES-GCM authentication failed"))
}

/// Dispatches an AES-KW/KWP call on the KEK size. A macro because the six cipher types share
/// no trait that exposes `wrap_key`.
macro_rules! macro_kw {
    ($kek:expr, $pad:expr, $op:ident, $input:expr, $buf:expr) => {{
        let kek: &[u8] = $kek;
        let fail = |_| bad("The key unwrap failed: integrity check error.");
        let res: Result<usize, CryptoError> = match (kek.len(), $pad) {
            (16, false) => KwAes128::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (24, false) => KwAes192::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (32, false) => KwAes256::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (16, true) => KwpAes128::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (24, true) => KwpAes192::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            (32, true) => KwpAes256::new_from_slice(kek)
                .unwrap()
                .$op($input, $buf)
                .map(|b| b.len())
                .map_err(fail),
            _ => Err(bad("bad AES key length")),
        };
        res
    }};
}

/// AES key wrap, RFC 3394 (`pad` false) or RFC 5649 (`pad` true).
pub fn aes_kw_wrap(kek: &[u8], data: &[u8], pad: bool) -> Result<Vec<u8>, CryptoError> {
    if !pad && (data.len() < 16 || !data.len().is_multiple_of(8)) {
        return Err(bad(
            "AES key wrap needs data of at least 16 bytes in multiples of 8; use CKM_AES_KEY_WRAP_PAD.",
        ));
    }
    if data.is_empty() {
        return Err(bad("Nothing to wrap."));
    }
    let mut buf = vec![0u8; data.len().div_ceil(8) * 8 + 8];
    let n = macro_kw!(kek, pad, wrap_key, data, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

pub fn aes_kw_unwrap(kek: &[u8], wrapped: &[u8], pad: bool) -> Result<Vec<u8>, CryptoError> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(bad("The wrapped key has an invalid length."));
    }
    let mut buf = vec![0u8; wrapped.len()];
    let n = macro_kw!(kek, pad, unwrap_key, wrapped, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

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

/// SubjectPublicKeyInfo DER of an RSA public key given as JWK `n` and `e`.
pub fn rsa_public_der(n: &[u8], e: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use rsa::pkcs8::EncodePublicKey;
    Ok(rsa_public(n, e)?
        .to_public_key_der()
        .map_err(|e| bad(format!("cannot encode the RSA public key: {e}")))?
        .as_bytes()
        .to_vec())
}

/// SubjectPublicKeyInfo DER of an EC public key given as JWK `crv`, `x` and `y`.
pub fn ec_public_der(curve: Curve, x: &[u8], y: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use rsa::pkcs8::EncodePublicKey;
    let mut point = Vec::with_capacity(1 + x.len() + y.len());
    point.push(4);
    point.extend_from_slice(x);
    point.extend_from_slice(y);
    let invalid = |_| bad("the EC public point is not on the curve");
    let der = match curve {
        Curve::P256 => p256::PublicKey::from_sec1_bytes(&point)
            .map_err(invalid)?
            .to_public_key_der(),
        Curve::P384 => p384::PublicKey::from_sec1_bytes(&point)
            .map_err(invalid)?
            .to_public_key_der(),
        Curve::P521 => p521::PublicKey::from_sec1_bytes(&point)
            .map_err(invalid)?
            .to_public_key_der(),
    }
    .map_err(|e| bad(format!("cannot encode the EC public key: {e}")))?;
    Ok(der.as_bytes().to_vec())
}

/// SHA-256 digest, for callers preparing signatures.
pub fn sha256(data: &[u8]) -> Vec<u8> {
    Sha256::digest(data).to_vec()
}

/// RSA public key from JWK `n` and `e`.
pub fn rsa_public(n: &[u8], e: &[u8]) -> Result<rsa::PublicKey, CryptoError> {
    rsa::PublicKey::new(
        BoxedUint::from_be_slice_vartime(n),
        BoxedUint::from_be_slice_vartime(e),
    )
    .map_err(|e| bad(format!("invalid RSA public key: {e}")))
}

/// RSA private components for export in a JWK (tests and backups never need this; the BYOK
/// tool in the tests does).
pub fn rsa_private_jwk(k: &PrivateKey) -> serde_json::Value {
    let trimmed = |u: &BoxedUint| b64url(&u.to_be_bytes_trimmed_vartime());
    let p = trimmed(k.primes()[0].as_ref());
    let q = trimmed(k.primes()[1].as_ref());
    serde_json::json!({
        "n": b64url(&k.n_bytes()),
        "e": b64url(&k.e_bytes()),
        "d": trimmed(k.d()),
        "p": p,
        "q": q,
        "dp": k.dp().map(trimmed).unwrap_or_default(),
        "dq": k.dq().map(trimmed).unwrap_or_default(),
        "qi": k.crt_coefficient().map(|c| trimmed(&c)).unwrap_or_default(),
    })
}

/// How key material is serialized (persisted state, sealed backups): type, curve and DER.
#[derive(Serialize, Deserialize)]
struct MaterialRepr {
    kty: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    crv: Option<Curve>,
    der: String,
}

impl Serialize for Material {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        MaterialRepr {
            kty: self.kty().to_string(),
            crv: self.curve(),
            der: b64url(&self.to_der()),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Material {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Material, D::Error> {
        use serde::de::Error;
        let repr = MaterialRepr::deserialize(d)?;
        let kty = Kty::parse_hsm(&repr.kty).map_err(D::Error::custom)?;
        let der = decode_b64("der", &repr.der).map_err(D::Error::custom)?;
        Material::from_der(kty, repr.crv, &der).map_err(D::Error::custom)
    }
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

impl Material {
    /// Private key material in any of the usual DER encodings: PKCS#8 for every type, PKCS#1
    /// for RSA, SEC1 for EC (the curve is found from the key).
    pub fn from_private_der(kty: Kty, der: &[u8]) -> Result<Material, CryptoError> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        match kty {
            Kty::Rsa => {
                let key = PrivateKey::from_pkcs8_der(der)
                    .or_else(|_| PrivateKey::from_pkcs1_der(der))
                    .map_err(|_| bad("The value is not an RSA private key in PKCS#8 or PKCS#1 DER."))?;
                if ![2048, 3072, 4096].contains(&(key.size() * 8)) {
                    return Err(bad(format!("RSA key size {} is not supported (2048, 3072 or 4096).", key.size() * 8)));
                }
                Ok(Material::Rsa(Box::new(key)))
            }
            Kty::Ec => p256::SecretKey::from_pkcs8_der(der)
                .or_else(|_| p256::SecretKey::from_sec1_der(der))
                .map(Material::P256)
                .or_else(|_| p384::SecretKey::from_pkcs8_der(der).or_else(|_| p384::SecretKey::from_sec1_der(der)).map(Material::P384))
                .or_else(|_| p521::SecretKey::from_pkcs8_der(der).or_else(|_| p521::SecretKey::from_sec1_der(der)).map(Material::P521))
                .map_err(|_| bad("The value is not an EC private key (P-256, P-384 or P-521) in PKCS#8 or SEC1 DER.")),
            Kty::Oct => Material::from_der(Kty::Oct, None, der),
        }
    }

    /// The public key as SubjectPublicKeyInfo DER (RSA and EC).
    pub fn public_key_der(&self) -> Option<Vec<u8>> {
        use rsa::pkcs8::EncodePublicKey;
        let der = match self {
            Material::Rsa(k) => k.to_public_key().to_public_key_der().ok()?,
            Material::P256(k) => k.public_key().to_public_key_der().ok()?,
            Material::P384(k) => k.public_key().to_public_key_der().ok()?,
            Material::P521(k) => k.public_key().to_public_key_der().ok()?,
            Material::Oct(_) => return None,
        };
        Some(der.as_bytes().to_vec())
    }

    /// Key check value of an AES key: the first 3 bytes of AES-ECB of a zero block, in hex.
    pub fn kcv(&self) -> Option<String> {
        use aes::cipher::{BlockCipherEncrypt, KeyInit as _};
        let Material::Oct(k) = self else { return None };
        let mut block = aes::Block::default();
        match k.len() {
            16 => aes::Aes128::new_from_slice(k)
                .ok()?
                .encrypt_block(&mut block),
            24 => aes::Aes192::new_from_slice(k)
                .ok()?
                .encrypt_block(&mut block),
            32 => aes::Aes256::new_from_slice(k)
                .ok()?
                .encrypt_block(&mut block),
            _ => return None,
        }
        Some(block[..3].iter().map(|b| format!("{b:02X}")).collect())
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

    #[test]
    fn aes_kcv() {
        // AES-128 of a zero block under a zero key starts 66 E9 4B.
        assert_eq!(Material::Oct(vec![0; 16]).kcv().unwrap(), "66E94B");
    }
}
