//! The C entry points that make keys and move them in and out: generate, create (import),
//! wrap and unwrap. Each is one REST call in the session's group (`generate` builds the
//! request from the caller's template), so the daemon's export rules, the group's policies
//! and its quorum decide as for any application's call.

#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use cryptoki_sys::*;
use serde_json::json;

use crate::client::{self, Client, ClientError, Key};
use crate::entry::{guard, input, set};
use crate::entry_crypto::mechanism;
use crate::generate;
use crate::mechanisms::Purpose;
use crate::module::{Wrapped, rv, with};
use crate::objects::{self, Part};
use crate::ops;

/// A caller's template, copied.
unsafe fn template(t: *mut CK_ATTRIBUTE, count: CK_ULONG) -> Result<generate::Template, CK_RV> {
    if count == 0 {
        return Ok(vec![]);
    }
    if t.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    let mut out = Vec::new();
    for a in unsafe { std::slice::from_raw_parts(t, count as usize) } {
        out.push((
            a.type_,
            unsafe { input(a.pValue as *const u8, a.ulValueLen)? }.to_vec(),
        ));
    }
    Ok(out)
}

/// Makes a key through the API in the session's group (`call` gets the client, the token
/// and the group); the new key's objects' handles, private (or secret) first.
fn make(
    session: CK_SESSION_HANDLE,
    call: impl FnOnce(&Client, &str, &str) -> Result<Key, CK_RV>,
) -> Result<Vec<CK_OBJECT_HANDLE>, CK_RV> {
    let (client, token, group) = with(|m| {
        let s = m.session(session)?;
        if !s.rw {
            return Err(CKR_SESSION_READ_ONLY);
        }
        let slot = s.slot;
        let group = m.slots[slot].group_id.clone();
        let (client, token) = m.token(session)?;
        Ok((client, token, group))
    })?;
    let key = call(&client, &token, &group)?;
    with(|m| {
        let handles = objects::parts_of(&key)
            .into_iter()
            .map(|p| m.handle(&key.kid, p))
            .collect();
        m.keys.insert(key.kid.clone(), key);
        Ok(handles)
    })
}

/// A refusal of the daemon's about a template: the caller's to read in the module's log.
fn template_refused(e: ClientError) -> CK_RV {
    match e {
        ClientError::Invalid(why) => {
            eprintln!("keyward-pkcs11: {why}");
            CKR_TEMPLATE_INCONSISTENT
        }
        e => rv(e, CKR_DEVICE_ERROR),
    }
}

pub unsafe extern "C" fn C_GenerateKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    t: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        if mech.is_null() || key.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mech = unsafe { (*mech).mechanism };
        let t = unsafe { template(t, count)? };
        let handles = make(session, |client, token, group| {
            let body = generate::secret_key(mech, &t, group)?;
            client.create(token, body).map_err(template_refused)
        })?;
        unsafe { set(key, handles[0]) }
    })
}

pub unsafe extern "C" fn C_GenerateKeyPair(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    public: *mut CK_ATTRIBUTE,
    public_count: CK_ULONG,
    private: *mut CK_ATTRIBUTE,
    private_count: CK_ULONG,
    public_key: *mut CK_OBJECT_HANDLE,
    private_key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        if mech.is_null() || public_key.is_null() || private_key.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mech = unsafe { (*mech).mechanism };
        let public = unsafe { template(public, public_count)? };
        let private = unsafe { template(private, private_count)? };
        let handles = make(session, |client, token, group| {
            let body = generate::key_pair(mech, &public, &private, group)?;
            client.create(token, body).map_err(template_refused)
        })?;
        let [private_h, public_h] = handles[..] else {
            return Err(CKR_DEVICE_ERROR);
        };
        unsafe {
            set(private_key, private_h)?;
            set(public_key, public_h)
        }
    })
}

/// Imports a key: an AES key from `CKA_VALUE`, an RSA or EC private key from its
/// components.
pub unsafe extern "C" fn C_CreateObject(
    session: CK_SESSION_HANDLE,
    t: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    object: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        with(|m| m.session(session).map(|_| ()))?;
        if object.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let t = unsafe { template(t, count)? };
        let handles = make(session, |client, token, group| {
            let body = generate::import(&t, group)?;
            client.import(token, body).map_err(template_refused)
        })?;
        unsafe { set(object, handles[0]) }
    })
}

/// Wraps a key (its exportable material, under the daemon's export rules) with another:
/// AES key wrap (RFC 3394 or 5649) or RSA-OAEP. The length query makes the call and keeps
/// the answer for the call that takes it.
pub unsafe extern "C" fn C_WrapKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    wrapping: CK_OBJECT_HANDLE,
    key: CK_OBJECT_HANDLE,
    out: *mut CK_BYTE,
    out_len: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        with(|m| m.session(session).map(|_| ()))?;
        if out_len.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mech = unsafe { mechanism(mech)? };
        let (alg, mode) = mech.wrap_mode()?;
        let asked = Wrapped {
            mech: mech.clone(),
            wrapping,
            key,
        };
        let (client, token, wrapper, subject, kept, wait) = with(|m| {
            let (wrapper, _) = m
                .object(session, wrapping)
                .map_err(|_| CKR_WRAPPING_KEY_HANDLE_INVALID)?;
            let (subject, part) = m.object(session, key).map_err(|_| CKR_KEY_HANDLE_INVALID)?;
            mech.fits(Purpose::Wrap, &wrapper.obj_type)
                .map_err(|e| match e {
                    CKR_KEY_TYPE_INCONSISTENT => CKR_WRAPPING_KEY_TYPE_INCONSISTENT,
                    e => e,
                })?;
            let (client, token) = m.token(session)?;
            if part == Part::Public {
                return Err(CKR_KEY_NOT_WRAPPABLE);
            }
            if !wrapper.permits(ops::key_op(Purpose::Wrap)) {
                return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
            }
            if !subject.permits("EXPORT") {
                return Err(CKR_KEY_UNEXTRACTABLE);
            }
            let kept = m
                .session(session)?
                .wrapped
                .take()
                .filter(|(w, _)| *w == asked)
                .map(|(_, bytes)| bytes);
            Ok((
                client,
                token,
                wrapper,
                subject,
                kept,
                m.config.wait_for_quorum_approval,
            ))
        })?;
        let wrapped = match kept {
            Some(w) => w,
            None => {
                let body = json!({"alg": alg, "mode": mode, "subject": {"kid": subject.kid}});
                let v = ops::operate_approved(&client, &token, &wrapper.kid, "wrapkey", body, wait)
                    .map_err(|e| rv(e, CKR_KEY_HANDLE_INVALID))?;
                client::field(&v, "wrapped_key").map_err(|e| rv(e, CKR_DEVICE_ERROR))?
            }
        };
        let have = unsafe { *out_len } as usize;
        unsafe { *out_len = wrapped.len() as CK_ULONG };
        if out.is_null() || have < wrapped.len() {
            let too_small = !out.is_null();
            with(|m| {
                m.session(session)?.wrapped = Some((asked, wrapped));
                Ok(())
            })?;
            return if too_small {
                Err(CKR_BUFFER_TOO_SMALL)
            } else {
                Ok(())
            };
        }
        unsafe { std::ptr::copy_nonoverlapping(wrapped.as_ptr(), out, wrapped.len()) };
        Ok(())
    })
}

/// Unwraps a key with a key of the catalog and imports it into the session's group as the
/// template says (class, key type, label, operations).
pub unsafe extern "C" fn C_UnwrapKey(
    session: CK_SESSION_HANDLE,
    mech: *mut CK_MECHANISM,
    unwrapping: CK_OBJECT_HANDLE,
    wrapped: *mut CK_BYTE,
    wrapped_len: CK_ULONG,
    t: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
    key: *mut CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        with(|m| m.session(session).map(|_| ()))?;
        if key.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mech = unsafe { mechanism(mech)? };
        let (alg, mode) = mech.wrap_mode()?;
        let wrapped = unsafe { input(wrapped, wrapped_len)? };
        if wrapped.is_empty() {
            return Err(CKR_WRAPPED_KEY_LEN_RANGE);
        }
        let t = unsafe { template(t, count)? };
        let kek = with(|m| {
            let (kek, part) = m
                .object(session, unwrapping)
                .map_err(|_| CKR_UNWRAPPING_KEY_HANDLE_INVALID)?;
            mech.fits(Purpose::Unwrap, &kek.obj_type)
                .map_err(|e| match e {
                    CKR_KEY_TYPE_INCONSISTENT => CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT,
                    e => e,
                })?;
            // Only a private key unwraps what its public half wrapped.
            if part == Part::Public {
                return Err(CKR_UNWRAPPING_KEY_TYPE_INCONSISTENT);
            }
            if !kek.permits(ops::key_op(Purpose::Unwrap)) {
                return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
            }
            Ok(kek)
        })?;
        let handles = make(session, |client, token, group| {
            let mut body = generate::unwrapped(&t, group)?;
            body["alg"] = json!(alg);
            body["mode"] = json!(mode);
            body["wrapped_key"] = json!(client::b64(wrapped));
            client.unwrap(token, &kek.kid, body).map_err(|e| match e {
                ClientError::Invalid(why) => {
                    eprintln!("keyward-pkcs11: {why}");
                    CKR_WRAPPED_KEY_INVALID
                }
                e => rv(e, CKR_UNWRAPPING_KEY_HANDLE_INVALID),
            })
        })?;
        unsafe { set(key, handles[0]) }
    })
}
