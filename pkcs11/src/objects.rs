//! Keyward's keys as PKCS#11 objects: an AES key is a secret key object; an RSA or EC key
//! is a private key object and a public key object. Their attributes come from the key as
//! the API describes it: `CKA_ID` is the kid's 16 bytes, `CKA_LABEL` the name, the usage
//! flags the key's operations, `CKA_EXTRACTABLE` whether it permits EXPORT. Secret and
//! private keys are always sensitive: their value is never an attribute.

use cryptoki_sys::*;
use spki::der::Decode;

use crate::client::Key;

/// Which of a key's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// The AES key, or the RSA/EC private key.
    Key,
    Public,
}

/// An attribute's value, or why there is none.
#[derive(Debug, PartialEq)]
pub enum Attr {
    Value(Vec<u8>),
    /// The value exists but never leaves (`CKR_ATTRIBUTE_SENSITIVE`).
    Sensitive,
    /// Not an attribute of this object (`CKR_ATTRIBUTE_TYPE_INVALID`).
    Invalid,
}

fn ulong(v: CK_ULONG) -> Attr {
    Attr::Value(v.to_ne_bytes().to_vec())
}

fn bool_(b: bool) -> Attr {
    Attr::Value(vec![if b { CK_TRUE } else { CK_FALSE }])
}

/// The kid's 16 bytes (`CKA_ID`), and back.
pub fn id_of(kid: &str) -> Vec<u8> {
    uuid::Uuid::parse_str(kid)
        .map(|u| u.as_bytes().to_vec())
        .unwrap_or_else(|_| kid.as_bytes().to_vec())
}

pub fn class_of(key: &Key, part: Part) -> CK_OBJECT_CLASS {
    match (key.obj_type.as_str(), part) {
        ("AES", _) => CKO_SECRET_KEY,
        (_, Part::Key) => CKO_PRIVATE_KEY,
        (_, Part::Public) => CKO_PUBLIC_KEY,
    }
}

pub fn key_type_of(key: &Key) -> Option<CK_KEY_TYPE> {
    match key.obj_type.as_str() {
        "AES" => Some(CKK_AES),
        "RSA" => Some(CKK_RSA),
        "EC" => Some(CKK_EC),
        _ => None,
    }
}

/// The objects a key shows: a public one only when the API gives its public key.
pub fn parts_of(key: &Key) -> Vec<Part> {
    match key.obj_type.as_str() {
        "AES" => vec![Part::Key],
        "RSA" | "EC" if key.pub_key.is_some() => vec![Part::Key, Part::Public],
        "RSA" | "EC" => vec![Part::Key],
        _ => vec![],
    }
}

/// The curve's OID, DER (`CKA_EC_PARAMS`).
pub fn ec_params(curve: &str) -> Option<Vec<u8>> {
    Some(match curve {
        "NistP256" => vec![0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07],
        "NistP384" => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22],
        "NistP521" => vec![0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23],
        _ => return None,
    })
}

/// The API's curve name as the crypto crate's.
pub fn curve_of(name: &str) -> Option<keyward_crypto::Curve> {
    Some(match name {
        "NistP256" => keyward_crypto::Curve::P256,
        "NistP384" => keyward_crypto::Curve::P384,
        "NistP521" => keyward_crypto::Curve::P521,
        _ => return None,
    })
}

/// An ECDSA signature's length (`r || s`) on the curve.
pub fn ecdsa_len(curve: &str) -> Option<usize> {
    Some(match curve {
        "NistP256" => 64,
        "NistP384" => 96,
        "NistP521" => 132,
        _ => return None,
    })
}

/// The RSA public key's modulus and exponent, or the EC point, from the SPKI.
fn public_parts(key: &Key) -> Option<(Vec<u8>, Vec<u8>)> {
    let der = key.public_der()?;
    let spki = spki::SubjectPublicKeyInfoRef::from_der(&der).ok()?;
    let bits = spki.subject_public_key.raw_bytes();
    match key.obj_type.as_str() {
        "RSA" => {
            let rsa = pkcs1::RsaPublicKey::<pkcs1::UintRef<'_>>::from_der(bits).ok()?;
            Some((
                rsa.modulus.as_bytes().to_vec(),
                rsa.public_exponent.as_bytes().to_vec(),
            ))
        }
        // CKA_EC_POINT is the uncompressed point as a DER OCTET STRING.
        "EC" => {
            let mut point = Vec::with_capacity(bits.len() + 3);
            point.push(0x04);
            if bits.len() >= 128 {
                point.push(0x81);
            }
            point.push(bits.len() as u8);
            point.extend_from_slice(bits);
            Some((point, vec![]))
        }
        _ => None,
    }
}

/// The value of `attr` on `key`'s `part`.
pub fn attribute(key: &Key, part: Part, attr: CK_ATTRIBUTE_TYPE) -> Attr {
    let class = class_of(key, part);
    let public = class == CKO_PUBLIC_KEY;
    let op = |name: &str| bool_(key.permits(name));
    match attr {
        CKA_CLASS => ulong(class),
        CKA_KEY_TYPE => key_type_of(key).map_or(Attr::Invalid, ulong),
        CKA_ID => Attr::Value(id_of(&key.kid)),
        CKA_LABEL => Attr::Value(key.name.as_bytes().to_vec()),
        CKA_TOKEN => bool_(true),
        CKA_PRIVATE => bool_(!public),
        CKA_MODIFIABLE | CKA_COPYABLE | CKA_DESTROYABLE if public => bool_(false),
        CKA_MODIFIABLE | CKA_COPYABLE => bool_(false),
        CKA_DESTROYABLE => bool_(true),
        CKA_LOCAL => bool_(key.origin == "FortanixHSM"),
        CKA_START_DATE | CKA_END_DATE => Attr::Value(vec![]),
        CKA_DERIVE => bool_(false),
        CKA_ENCRYPT if class != CKO_PRIVATE_KEY => op("ENCRYPT"),
        CKA_DECRYPT if !public => op("DECRYPT"),
        CKA_SIGN if !public => op("SIGN"),
        CKA_VERIFY if class != CKO_PRIVATE_KEY => op("VERIFY"),
        CKA_WRAP if class != CKO_PRIVATE_KEY => op("WRAPKEY"),
        CKA_UNWRAP if !public => op("UNWRAPKEY"),
        CKA_SIGN_RECOVER | CKA_VERIFY_RECOVER => bool_(false),
        CKA_SENSITIVE | CKA_ALWAYS_SENSITIVE if !public => bool_(true),
        CKA_EXTRACTABLE if !public => op("EXPORT"),
        CKA_NEVER_EXTRACTABLE if !public => bool_(key.never_exportable),
        CKA_WRAP_WITH_TRUSTED | CKA_ALWAYS_AUTHENTICATE if !public => bool_(false),
        CKA_TRUSTED if public => bool_(false),
        CKA_VALUE if !public => Attr::Sensitive,
        CKA_VALUE_LEN if class == CKO_SECRET_KEY => key
            .key_size
            .map_or(Attr::Invalid, |b| ulong((b / 8) as CK_ULONG)),
        CKA_MODULUS_BITS if key.obj_type == "RSA" => {
            key.key_size.map_or(Attr::Invalid, |b| ulong(b as CK_ULONG))
        }
        CKA_MODULUS if key.obj_type == "RSA" => {
            public_parts(key).map_or(Attr::Invalid, |(m, _)| Attr::Value(m))
        }
        CKA_PUBLIC_EXPONENT if key.obj_type == "RSA" => {
            public_parts(key).map_or(Attr::Invalid, |(_, e)| Attr::Value(e))
        }
        CKA_EC_PARAMS if key.obj_type == "EC" => key
            .elliptic_curve
            .as_deref()
            .and_then(ec_params)
            .map_or(Attr::Invalid, Attr::Value),
        CKA_EC_POINT if public && key.obj_type == "EC" => {
            public_parts(key).map_or(Attr::Invalid, |(p, _)| Attr::Value(p))
        }
        CKA_PUBLIC_KEY_INFO if class != CKO_SECRET_KEY => {
            key.public_der().map_or(Attr::Invalid, Attr::Value)
        }
        _ => Attr::Invalid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aes() -> Key {
        Key {
            kid: "0c0d35f8-4d79-46fd-9707-655e31cd0b3d".into(),
            name: "k".into(),
            obj_type: "AES".into(),
            key_size: Some(256),
            elliptic_curve: None,
            key_ops: vec!["ENCRYPT".into(), "DECRYPT".into()],
            never_exportable: true,
            pub_key: None,
            origin: "FortanixHSM".into(),
        }
    }

    #[test]
    fn a_secret_key_is_sensitive_and_shows_what_it_permits() {
        let k = aes();
        assert_eq!(attribute(&k, Part::Key, CKA_CLASS), ulong(CKO_SECRET_KEY));
        assert_eq!(attribute(&k, Part::Key, CKA_VALUE), Attr::Sensitive);
        assert_eq!(attribute(&k, Part::Key, CKA_ENCRYPT), bool_(true));
        assert_eq!(attribute(&k, Part::Key, CKA_SIGN), bool_(false));
        assert_eq!(attribute(&k, Part::Key, CKA_EXTRACTABLE), bool_(false));
        assert_eq!(attribute(&k, Part::Key, CKA_NEVER_EXTRACTABLE), bool_(true));
        assert_eq!(attribute(&k, Part::Key, CKA_VALUE_LEN), ulong(32));
        assert_eq!(attribute(&k, Part::Key, CKA_MODULUS), Attr::Invalid);
        assert_eq!(id_of(&k.kid).len(), 16);
    }
}
