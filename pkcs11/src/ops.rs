//! Signing, verifying, encrypting and decrypting: an operation is started with its key and
//! mechanism (a key that does not permit it, as last listed, is refused at once; the list
//! never allows anything: the daemon decides at the call), given its data, and finished by
//! one REST call, so a destroyed key or a revoked application fails at that call. The
//! two-call length query (a null output buffer) answers the length without a call; an
//! answer that does not fit the caller's buffer is kept until a large enough one comes.

use cryptoki_sys::*;

use crate::client::{self, ClientError};
use crate::mechanisms::{Mech, Purpose};
use crate::module::{self, Op, rv, with};
use crate::objects::{self, Part};

/// The key operation a purpose needs.
pub fn key_op(p: Purpose) -> &'static str {
    match p {
        Purpose::Sign => "SIGN",
        Purpose::Verify => "VERIFY",
        Purpose::Encrypt => "ENCRYPT",
        Purpose::Decrypt => "DECRYPT",
        Purpose::Wrap => "WRAPKEY",
        Purpose::Unwrap => "UNWRAPKEY",
    }
}

/// Starts an operation of `purpose` with the key behind `handle`.
pub fn init(
    session: CK_SESSION_HANDLE,
    purpose: Purpose,
    mech: Mech,
    handle: CK_OBJECT_HANDLE,
) -> Result<(), CK_RV> {
    with(|m| {
        let (key, part) = m
            .object(session, handle)
            .map_err(|_| CKR_KEY_HANDLE_INVALID)?;
        if m.session(session)?.ops.contains_key(&purpose) {
            return Err(CKR_OPERATION_ACTIVE);
        }
        // A private key signs and decrypts; its public half verifies and encrypts.
        if part == Part::Public && matches!(purpose, Purpose::Sign | Purpose::Decrypt) {
            return Err(CKR_KEY_TYPE_INCONSISTENT);
        }
        mech.fits(purpose, &key.obj_type)?;
        m.token(session)?;
        if !key.permits(key_op(purpose)) {
            return Err(CKR_KEY_FUNCTION_NOT_PERMITTED);
        }
        m.session(session)?.ops.insert(
            purpose,
            Op {
                key,
                mech,
                data: Vec::new(),
                answer: None,
            },
        );
        Ok(())
    })
}

/// Adds data to a multi-part operation.
pub fn update(session: CK_SESSION_HANDLE, purpose: Purpose, data: &[u8]) -> Result<(), CK_RV> {
    with(|m| {
        let s = m.session(session)?;
        let op = s
            .ops
            .get_mut(&purpose)
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if !op.mech.multipart() {
            s.ops.remove(&purpose);
            return Err(CKR_FUNCTION_NOT_SUPPORTED);
        }
        op.data.extend_from_slice(data);
        Ok(())
    })
}

/// Where an answer goes: the caller's buffer and its length.
pub struct Out {
    pub buf: *mut u8,
    pub len: *mut CK_ULONG,
}

/// Finishes an operation (`data`: its last or only part) into `out`.
pub fn finish(
    session: CK_SESSION_HANDLE,
    purpose: Purpose,
    data: Option<&[u8]>,
    out: Out,
) -> Result<(), CK_RV> {
    if out.len.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    // The data given now joins the operation only when it completes: a length query
    // passes the same data again.
    let (op, client, token, wait) = with(|m| {
        let s = m.session(session)?;
        let mut op = s
            .ops
            .get(&purpose)
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?
            .clone();
        if let Some(d) = data {
            op.data.extend_from_slice(d);
        }
        let (client, token) = m.token(session)?;
        Ok((op, client, token, m.config.wait_for_quorum_approval))
    })?;
    let answer = match &op.answer {
        Some(a) => a.clone(),
        None if out.buf.is_null() => {
            let n = match purpose {
                Purpose::Sign => op.mech.signature_len(&op.key).unwrap_or(512),
                _ => op
                    .mech
                    .crypt_len(&op.key, op.data.len(), purpose == Purpose::Decrypt),
            };
            unsafe { *out.len = n as CK_ULONG };
            return Ok(());
        }
        None => match compute(&client, &token, purpose, &op, wait) {
            Ok(a) => a,
            Err(e) => {
                end(session, purpose);
                return Err(e);
            }
        },
    };
    let have = unsafe { *out.len } as usize;
    unsafe { *out.len = answer.len() as CK_ULONG };
    if have < answer.len() {
        with(|m| {
            if let Some(o) = m.session(session)?.ops.get_mut(&purpose) {
                o.answer = Some(answer);
                o.data.clear();
            }
            Ok(())
        })?;
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    unsafe { std::ptr::copy_nonoverlapping(answer.as_ptr(), out.buf, answer.len()) };
    end(session, purpose);
    Ok(())
}

/// Verifies `signature` over the data given (`data`: the last or only part).
pub fn verify(
    session: CK_SESSION_HANDLE,
    data: Option<&[u8]>,
    signature: &[u8],
) -> Result<(), CK_RV> {
    let (op, client, token) = with(|m| {
        let s = m.session(session)?;
        let mut op = s
            .ops
            .remove(&Purpose::Verify)
            .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
        if let Some(d) = data {
            op.data.extend_from_slice(d);
        }
        let (client, token) = m.token(session)?;
        Ok((op, client, token))
    })?;
    if op
        .mech
        .signature_len(&op.key)
        .is_some_and(|n| n != signature.len())
    {
        return Err(CKR_SIGNATURE_LEN_RANGE);
    }
    let body = op.mech.sign_body(&op.data, Some(signature))?;
    match client.verify(&token, &op.key.kid, body) {
        Ok(true) => Ok(()),
        Ok(false) => Err(CKR_SIGNATURE_INVALID),
        Err(ClientError::Invalid(_)) => Err(CKR_SIGNATURE_INVALID),
        Err(e) => Err(rv(e, CKR_KEY_HANDLE_INVALID)),
    }
}

fn end(session: CK_SESSION_HANDLE, purpose: Purpose) {
    let _ = module::with(|m| {
        m.session(session)?.ops.remove(&purpose);
        Ok(())
    });
}

/// A cryptographic call; one the group's quorum protects asks for approval as the
/// application (the request's id in the module's log), and, when the configuration says to
/// wait, waits for the reviewers and takes the approved operation's answer.
pub fn operate_approved(
    client: &client::Client,
    token: &str,
    kid: &str,
    name: &str,
    body: serde_json::Value,
    wait: Option<u64>,
) -> Result<serde_json::Value, ClientError> {
    match client.operate(token, kid, name, body.clone()) {
        Err(ClientError::ApprovalRequired) => {}
        other => return other,
    }
    let id = client.ask_approval(token, &format!("/crypto/v1/keys/{kid}/{name}"), &body)?;
    eprintln!("keyward-pkcs11: approval request {id} asks the group's quorum for this {name}");
    let Some(secs) = wait else {
        return Err(ClientError::ApprovalRequired);
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        match client.approval_status(token, &id)?.as_str() {
            "PENDING" => std::thread::sleep(std::time::Duration::from_millis(500)),
            "APPROVED" => {
                let (status, answer) = client.approval_result(token, &id)?;
                if (200..300).contains(&status) {
                    return Ok(answer);
                }
                return Err(ClientError::Daemon(status, answer.to_string()));
            }
            other => {
                eprintln!("keyward-pkcs11: approval request {id} is {other}");
                return Err(ClientError::ApprovalRequired);
            }
        }
    }
    eprintln!("keyward-pkcs11: approval request {id} is still pending after {secs} s");
    Err(ClientError::ApprovalRequired)
}

/// The REST call that does the work.
fn compute(
    client: &client::Client,
    token: &str,
    purpose: Purpose,
    op: &Op,
    wait: Option<u64>,
) -> Result<Vec<u8>, CK_RV> {
    let fail = |e| rv(e, CKR_KEY_HANDLE_INVALID);
    let kid = &op.key.kid;
    let call = |name: &str, body: serde_json::Value| {
        operate_approved(client, token, kid, name, body, wait)
    };
    match purpose {
        Purpose::Sign => {
            let body = op.mech.sign_body(&op.data, None)?;
            let v = call("sign", body).map_err(fail)?;
            let sig = client::field(&v, "signature").map_err(fail)?;
            // The API answers ECDSA signatures in DER, as DSM does; PKCS#11 wants r || s.
            match op.key.elliptic_curve.as_deref().and_then(objects::curve_of) {
                Some(curve) => {
                    keyward_crypto::ecdsa_signature_from_der(curve, &sig).ok_or(CKR_DEVICE_ERROR)
                }
                None => Ok(sig),
            }
        }
        Purpose::Encrypt => {
            let body = op.mech.crypt_body(&op.data, false)?;
            let v = call("encrypt", body).map_err(fail)?;
            let mut cipher = client::field(&v, "cipher").map_err(fail)?;
            if matches!(op.mech, Mech::AesGcm { .. }) {
                cipher.extend(client::field(&v, "tag").map_err(fail)?);
            }
            Ok(cipher)
        }
        Purpose::Decrypt => {
            let body = op.mech.crypt_body(&op.data, true)?;
            match call("decrypt", body) {
                Ok(v) => client::field(&v, "plain").map_err(fail),
                // A ciphertext the key does not open (wrong tag, bad padding).
                Err(ClientError::Invalid(_)) => Err(CKR_ENCRYPTED_DATA_INVALID),
                Err(e) => Err(fail(e)),
            }
        }
        Purpose::Verify | Purpose::Wrap | Purpose::Unwrap => Err(CKR_FUNCTION_FAILED),
    }
}
