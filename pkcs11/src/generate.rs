//! Making keys through the module: `C_GenerateKey` (AES) and `C_GenerateKeyPair` (RSA, EC)
//! become `POST /crypto/v1/keys` in the session's group, `C_CreateObject` an import
//! (`PUT /crypto/v1/keys`) and `C_UnwrapKey` an unwrap under a key of the catalog, so the
//! daemon's rules and the group's policies decide as for any application's key. A template
//! asks only what Keyward can give: a key that is not a token object, not sensitive, or with
//! an id of the caller's choosing is refused, not made otherwise.

use cryptoki_sys::*;
use serde_json::{Value, json};

use crate::objects;

/// A caller's template: attribute types and values.
pub type Template = Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>;

fn find(t: &Template, a: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
    t.iter().find(|(x, _)| *x == a).map(|(_, v)| v.as_slice())
}

fn flag(t: &Template, a: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>, CK_RV> {
    match find(t, a) {
        None => Ok(None),
        Some([b]) => Ok(Some(*b != CK_FALSE)),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID),
    }
}

fn ulong(t: &Template, a: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>, CK_RV> {
    match find(t, a) {
        None => Ok(None),
        Some(v) if v.len() == std::mem::size_of::<CK_ULONG>() => Ok(Some(CK_ULONG::from_ne_bytes(
            v.try_into().expect("the length checked"),
        ))),
        Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID),
    }
}

/// What every key's template may not ask.
fn common(t: &Template) -> Result<(), CK_RV> {
    if flag(t, CKA_TOKEN)? == Some(false) {
        // Session objects would live in the module; every Keyward key lives in the daemon.
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    if find(t, CKA_ID).is_some() {
        // The id is the daemon's kid.
        return Err(CKR_ATTRIBUTE_READ_ONLY);
    }
    Ok(())
}

/// The operations the templates set, as the API names them.
fn ops(pairs: &[(&Template, CK_ATTRIBUTE_TYPE, &str)]) -> Result<Option<Vec<String>>, CK_RV> {
    let mut any = false;
    let mut out = vec!["APPMANAGEABLE".to_string()];
    for (t, a, name) in pairs {
        match flag(t, *a)? {
            Some(true) => {
                any = true;
                out.push(name.to_string());
            }
            Some(false) => any = true,
            None => {}
        }
    }
    Ok(any.then_some(out))
}

fn label(templates: &[&Template]) -> Result<String, CK_RV> {
    for t in templates {
        if let Some(l) = find(t, CKA_LABEL) {
            return String::from_utf8(l.to_vec()).map_err(|_| CKR_ATTRIBUTE_VALUE_INVALID);
        }
    }
    let mut r = [0u8; 6];
    getrandom::fill(&mut r).map_err(|_| CKR_FUNCTION_FAILED)?;
    Ok(format!(
        "pkcs11-{}",
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    ))
}

fn exportable(t: &Template) -> Result<bool, CK_RV> {
    if flag(t, CKA_SENSITIVE)? == Some(false) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    Ok(flag(t, CKA_EXTRACTABLE)?.unwrap_or(false))
}

/// The request body of an AES key for `C_GenerateKey`.
pub fn secret_key(mech: CK_MECHANISM_TYPE, t: &Template, group: &str) -> Result<Value, CK_RV> {
    if mech != CKM_AES_KEY_GEN {
        return Err(CKR_MECHANISM_INVALID);
    }
    common(t)?;
    if ulong(t, CKA_CLASS)?.is_some_and(|c| c != CKO_SECRET_KEY)
        || ulong(t, CKA_KEY_TYPE)?.is_some_and(|k| k != CKK_AES)
    {
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    let bytes = ulong(t, CKA_VALUE_LEN)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    if ![16, 24, 32].contains(&bytes) {
        return Err(CKR_ATTRIBUTE_VALUE_INVALID);
    }
    let mut ops = ops(&[
        (t, CKA_ENCRYPT, "ENCRYPT"),
        (t, CKA_DECRYPT, "DECRYPT"),
        (t, CKA_WRAP, "WRAPKEY"),
        (t, CKA_UNWRAP, "UNWRAPKEY"),
    ])?;
    if exportable(t)? {
        ops.get_or_insert_with(|| vec!["APPMANAGEABLE".into()])
            .push("EXPORT".into());
    }
    let mut body = json!({"name": label(&[t])?, "group_id": group, "obj_type": "AES",
        "key_size": bytes * 8});
    if let Some(o) = ops {
        body["key_ops"] = json!(o);
    }
    Ok(body)
}

/// The request body of an RSA or EC key for `C_GenerateKeyPair`.
pub fn key_pair(
    mech: CK_MECHANISM_TYPE,
    public: &Template,
    private: &Template,
    group: &str,
) -> Result<Value, CK_RV> {
    common(public)?;
    common(private)?;
    let mut body = json!({"name": label(&[private, public])?, "group_id": group});
    match mech {
        CKM_RSA_PKCS_KEY_PAIR_GEN => {
            let bits = ulong(public, CKA_MODULUS_BITS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            if ![2048, 3072, 4096].contains(&bits) {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
            if find(public, CKA_PUBLIC_EXPONENT).is_some_and(|e| {
                e.iter()
                    .skip_while(|b| **b == 0)
                    .copied()
                    .collect::<Vec<_>>()
                    != [1, 0, 1]
            }) {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
            body["obj_type"] = json!("RSA");
            body["key_size"] = json!(bits);
        }
        CKM_EC_KEY_PAIR_GEN => {
            let params = find(public, CKA_EC_PARAMS).ok_or(CKR_TEMPLATE_INCOMPLETE)?;
            let curve = ["NistP256", "NistP384", "NistP521"]
                .into_iter()
                .find(|c| objects::ec_params(c).as_deref() == Some(params))
                .ok_or(CKR_CURVE_NOT_SUPPORTED)?;
            body["obj_type"] = json!("EC");
            body["elliptic_curve"] = json!(curve);
        }
        _ => return Err(CKR_MECHANISM_INVALID),
    }
    let mut ops = ops(&[
        (private, CKA_SIGN, "SIGN"),
        (private, CKA_DECRYPT, "DECRYPT"),
        (private, CKA_UNWRAP, "UNWRAPKEY"),
        (public, CKA_VERIFY, "VERIFY"),
        (public, CKA_ENCRYPT, "ENCRYPT"),
        (public, CKA_WRAP, "WRAPKEY"),
    ])?;
    if exportable(private)? {
        ops.get_or_insert_with(|| vec!["APPMANAGEABLE".into()])
            .push("EXPORT".into());
    }
    if let Some(o) = ops {
        body["key_ops"] = json!(o);
    }
    Ok(body)
}

/// The class and type a template names (`CKR_TEMPLATE_INCOMPLETE` without them), as the
/// API's `obj_type`.
fn obj_type(t: &Template) -> Result<&'static str, CK_RV> {
    let class = ulong(t, CKA_CLASS)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    let key_type = ulong(t, CKA_KEY_TYPE)?.ok_or(CKR_TEMPLATE_INCOMPLETE)?;
    match (class, key_type) {
        (CKO_SECRET_KEY, CKK_AES) => Ok("AES"),
        (CKO_PRIVATE_KEY, CKK_RSA) => Ok("RSA"),
        (CKO_PRIVATE_KEY, CKK_EC) => Ok("EC"),
        (CKO_SECRET_KEY | CKO_PRIVATE_KEY, _) => Err(CKR_ATTRIBUTE_VALUE_INVALID),
        // Keyward holds keys: public keys alone, certificates and data objects it does not.
        _ => Err(CKR_TEMPLATE_INCONSISTENT),
    }
}

/// The operations of a key made from one template: a private key's public half does what
/// answers its private operations (verify, encrypt, wrap).
fn single_template_ops(t: &Template, obj_type: &str) -> Result<Option<Vec<String>>, CK_RV> {
    let mut ops = if obj_type == "AES" {
        ops(&[
            (t, CKA_ENCRYPT, "ENCRYPT"),
            (t, CKA_DECRYPT, "DECRYPT"),
            (t, CKA_WRAP, "WRAPKEY"),
            (t, CKA_UNWRAP, "UNWRAPKEY"),
        ])?
    } else {
        ops(&[
            (t, CKA_SIGN, "SIGN"),
            (t, CKA_SIGN, "VERIFY"),
            (t, CKA_DECRYPT, "DECRYPT"),
            (t, CKA_DECRYPT, "ENCRYPT"),
            (t, CKA_UNWRAP, "UNWRAPKEY"),
            (t, CKA_UNWRAP, "WRAPKEY"),
        ])?
    };
    if exportable(t)? {
        ops.get_or_insert_with(|| vec!["APPMANAGEABLE".into()])
            .push("EXPORT".into());
    }
    Ok(ops)
}

fn required(t: &Template, a: CK_ATTRIBUTE_TYPE) -> Result<&[u8], CK_RV> {
    find(t, a).ok_or(CKR_TEMPLATE_INCOMPLETE)
}

/// The material a `C_CreateObject` template carries, as the API imports it: raw AES bytes,
/// or RSA and EC private keys from their components as PKCS#8 DER.
fn material(t: &Template, obj_type: &str) -> Result<Vec<u8>, CK_RV> {
    use keyward_crypto::{Kty, Material, b64url};
    let jwk = match obj_type {
        "AES" => return Ok(required(t, CKA_VALUE)?.to_vec()),
        "RSA" => json!({
            "n": b64url(required(t, CKA_MODULUS)?),
            "e": b64url(required(t, CKA_PUBLIC_EXPONENT)?),
            "d": b64url(required(t, CKA_PRIVATE_EXPONENT)?),
            "p": b64url(required(t, CKA_PRIME_1)?),
            "q": b64url(required(t, CKA_PRIME_2)?),
        }),
        _ => {
            let params = required(t, CKA_EC_PARAMS)?;
            let curve = ["NistP256", "NistP384", "NistP521"]
                .into_iter()
                .find(|c| objects::ec_params(c).as_deref() == Some(params))
                .and_then(objects::curve_of)
                .ok_or(CKR_CURVE_NOT_SUPPORTED)?;
            json!({"crv": curve.name(), "d": b64url(required(t, CKA_VALUE)?)})
        }
    };
    let kty = if obj_type == "RSA" { Kty::Rsa } else { Kty::Ec };
    Material::from_jwk(kty, &jwk)
        .map(|m| m.to_der())
        .map_err(|e| {
            eprintln!("keyward-pkcs11: {e}");
            CKR_ATTRIBUTE_VALUE_INVALID
        })
}

/// The request body of `C_CreateObject`: an import into the session's group.
pub fn import(t: &Template, group: &str) -> Result<Value, CK_RV> {
    common(t)?;
    let obj_type = obj_type(t)?;
    let value = material(t, obj_type)?;
    let mut body = json!({"name": label(&[t])?, "group_id": group, "obj_type": obj_type,
        "value": crate::client::b64(&value)});
    if let Some(o) = single_template_ops(t, obj_type)? {
        body["key_ops"] = json!(o);
    }
    Ok(body)
}

/// The new key's part of an unwrap request (`C_UnwrapKey`): type, name, group, operations.
pub fn unwrapped(t: &Template, group: &str) -> Result<Value, CK_RV> {
    common(t)?;
    if find(t, CKA_VALUE).is_some() {
        return Err(CKR_TEMPLATE_INCONSISTENT);
    }
    let obj_type = obj_type(t)?;
    let mut body = json!({"name": label(&[t])?, "group_id": group, "obj_type": obj_type});
    if let Some(o) = single_template_ops(t, obj_type)? {
        body["key_ops"] = json!(o);
    }
    Ok(body)
}
