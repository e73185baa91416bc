//! Key material: generation, encodings (PKCS#8, SEC1, JWK), public keys and check values.

use super::*;

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
                // JWKs drop leading zero bytes; the private exponent works at the modulus'
                // precision, so it is widened back to the modulus' length.
                let mut d = field("d")?;
                if d.len() < n.len() {
                    let mut wide = vec![0; n.len() - d.len()];
                    wide.extend_from_slice(&d);
                    d = wide;
                }
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
