//! Making keys through the module: `C_GenerateKey` (AES) and `C_GenerateKeyPair` (RSA, EC)
//! become `POST /crypto/v1/keys` in the session's group, so the daemon's rules and the
//! group's policies decide as for any application's key. A template asks only what Keyward
//! can give: a key that is not a token object, not sensitive, or with an id of the caller's
//! choosing is refused, not made otherwise.

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
