//! The C entry points of the module's frame: initialization, slots and tokens, sessions,
//! login, objects and their attributes (`entry_crypto` has the cryptography, `entry_keys`
//! making and moving keys). Each checks its arguments as PKCS#11 says, calls into the module,
//! and turns the outcome into a `CK_RV` (a panic becomes `CKR_GENERAL_ERROR`, never an
//! unwind into the caller). Functions the module does not offer answer
//! `CKR_FUNCTION_NOT_SUPPORTED`.

#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use std::panic::{AssertUnwindSafe, catch_unwind};

use cryptoki_sys::*;

use crate::mechanisms::SUPPORTED;
use crate::module::{self, rv, with};
use crate::objects::{self, Attr, Part};

pub(crate) fn guard(f: impl FnOnce() -> Result<(), CK_RV>) -> CK_RV {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => CKR_OK,
        Ok(Err(rv)) => rv,
        Err(_) => CKR_GENERAL_ERROR,
    }
}

/// `len` bytes at `ptr` (null allowed when `len` is 0).
pub(crate) unsafe fn input<'a>(ptr: *const u8, len: CK_ULONG) -> Result<&'a [u8], CK_RV> {
    match (ptr.is_null(), len) {
        (_, 0) => Ok(&[]),
        (true, _) => Err(CKR_ARGUMENTS_BAD),
        (false, n) => Ok(unsafe { std::slice::from_raw_parts(ptr, n as usize) }),
    }
}

pub(crate) unsafe fn set<T>(ptr: *mut T, v: T) -> Result<(), CK_RV> {
    if ptr.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    unsafe { ptr.write(v) };
    Ok(())
}

/// A blank-padded fixed-size text field.
fn padded<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [b' '; N];
    let mut n = s.len().min(N);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    out[..n].copy_from_slice(&s.as_bytes()[..n]);
    out
}

/// The two-call list pattern: the count when `list` is null, else the items if they fit.
unsafe fn list<T: Copy>(items: &[T], list: *mut T, count: *mut CK_ULONG) -> Result<(), CK_RV> {
    if count.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    let room = unsafe { *count } as usize;
    unsafe { *count = items.len() as CK_ULONG };
    if list.is_null() {
        return Ok(());
    }
    if room < items.len() {
        return Err(CKR_BUFFER_TOO_SMALL);
    }
    unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), list, items.len()) };
    Ok(())
}

const VERSION: CK_VERSION = CK_VERSION {
    major: 2,
    minor: 40,
};

const LIBRARY_VERSION: CK_VERSION = CK_VERSION { major: 0, minor: 1 };

pub unsafe extern "C" fn C_Initialize(args: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !args.is_null() {
            let a = unsafe { &*(args as *const CK_C_INITIALIZE_ARGS) };
            if !a.pReserved.is_null() {
                return Err(CKR_ARGUMENTS_BAD);
            }
            // Locking callbacks without leave to use the OS's: the module cannot honour
            // them (it locks with the standard library's mutexes).
            if a.CreateMutex.is_some() && a.flags & CKF_OS_LOCKING_OK == 0 {
                return Err(CKR_CANT_LOCK);
            }
        }
        module::initialize()
    })
}

pub unsafe extern "C" fn C_Finalize(reserved: *mut std::ffi::c_void) -> CK_RV {
    guard(|| {
        if !reserved.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        module::finalize()
    })
}

pub unsafe extern "C" fn C_GetInfo(info: *mut CK_INFO) -> CK_RV {
    guard(|| {
        with(|_| Ok(()))?;
        unsafe {
            set(
                info,
                CK_INFO {
                    cryptokiVersion: VERSION,
                    manufacturerID: padded("Keyward"),
                    flags: 0,
                    libraryDescription: padded("Keyward PKCS#11 module"),
                    libraryVersion: LIBRARY_VERSION,
                },
            )
        }
    })
}

pub unsafe extern "C" fn C_GetSlotList(
    _token_present: CK_BBOOL,
    slots: *mut CK_SLOT_ID,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        let ids: Vec<CK_SLOT_ID> = with(|m| Ok((0..m.slots.len() as CK_SLOT_ID).collect()))?;
        unsafe { list(&ids, slots, count) }
    })
}

pub unsafe extern "C" fn C_GetSlotInfo(slot: CK_SLOT_ID, info: *mut CK_SLOT_INFO) -> CK_RV {
    guard(|| {
        let description = with(|m| Ok(format!("Keyward group {}", m.slot(slot)?.group_id)))?;
        unsafe {
            set(
                info,
                CK_SLOT_INFO {
                    slotDescription: padded(&description),
                    manufacturerID: padded("Keyward"),
                    flags: CKF_TOKEN_PRESENT,
                    hardwareVersion: LIBRARY_VERSION,
                    firmwareVersion: LIBRARY_VERSION,
                },
            )
        }
    })
}

pub unsafe extern "C" fn C_GetTokenInfo(slot: CK_SLOT_ID, info: *mut CK_TOKEN_INFO) -> CK_RV {
    guard(|| {
        let (label, group, sessions, stored_key) = with(|m| {
            let s = m.slot(slot)?;
            let open = m
                .sessions
                .values()
                .filter(|x| x.slot == slot as usize)
                .count();
            Ok((
                s.label.clone(),
                s.group_id.clone(),
                open,
                m.config.api_key_file.is_some(),
            ))
        })?;
        let serial: String = group.chars().filter(|c| *c != '-').take(16).collect();
        unsafe {
            set(
                info,
                CK_TOKEN_INFO {
                    label: padded(&label),
                    manufacturerID: padded("Keyward"),
                    model: padded("Keyward group"),
                    serialNumber: padded(&serial),
                    // With the credential in the configuration nobody logs in: opening a
                    // session does.
                    flags: CKF_USER_PIN_INITIALIZED
                        | CKF_TOKEN_INITIALIZED
                        | CKF_RNG
                        | if stored_key { 0 } else { CKF_LOGIN_REQUIRED },
                    ulMaxSessionCount: CK_EFFECTIVELY_INFINITE,
                    ulSessionCount: sessions as CK_ULONG,
                    ulMaxRwSessionCount: CK_EFFECTIVELY_INFINITE,
                    ulRwSessionCount: CK_UNAVAILABLE_INFORMATION,
                    ulMaxPinLen: 1024,
                    ulMinPinLen: 1,
                    ulTotalPublicMemory: CK_UNAVAILABLE_INFORMATION,
                    ulFreePublicMemory: CK_UNAVAILABLE_INFORMATION,
                    ulTotalPrivateMemory: CK_UNAVAILABLE_INFORMATION,
                    ulFreePrivateMemory: CK_UNAVAILABLE_INFORMATION,
                    hardwareVersion: LIBRARY_VERSION,
                    firmwareVersion: LIBRARY_VERSION,
                    utcTime: padded(""),
                },
            )
        }
    })
}

pub unsafe extern "C" fn C_GetMechanismList(
    slot: CK_SLOT_ID,
    mechs: *mut CK_MECHANISM_TYPE,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        with(|m| m.slot(slot).map(|_| ()))?;
        let types: Vec<CK_MECHANISM_TYPE> = SUPPORTED.iter().map(|m| m.0).collect();
        unsafe { list(&types, mechs, count) }
    })
}

pub unsafe extern "C" fn C_GetMechanismInfo(
    slot: CK_SLOT_ID,
    mech: CK_MECHANISM_TYPE,
    info: *mut CK_MECHANISM_INFO,
) -> CK_RV {
    guard(|| {
        with(|m| m.slot(slot).map(|_| ()))?;
        let (_, min, max, flags) = SUPPORTED
            .iter()
            .find(|m| m.0 == mech)
            .ok_or(CKR_MECHANISM_INVALID)?;
        unsafe {
            set(
                info,
                CK_MECHANISM_INFO {
                    ulMinKeySize: *min,
                    ulMaxKeySize: *max,
                    flags: *flags,
                },
            )
        }
    })
}

pub unsafe extern "C" fn C_OpenSession(
    slot: CK_SLOT_ID,
    flags: CK_FLAGS,
    _app: *mut std::ffi::c_void,
    _notify: CK_NOTIFY,
    session: *mut CK_SESSION_HANDLE,
) -> CK_RV {
    guard(|| {
        if session.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if flags & CKF_SERIAL_SESSION == 0 {
            return Err(CKR_SESSION_PARALLEL_NOT_SUPPORTED);
        }
        let (h, sign_in_now) = with(|m| {
            let h = m.open(slot, flags & CKF_RW_SESSION != 0)?;
            let slot = &m.slots[slot as usize];
            Ok((h, slot.token.is_none() && m.config.api_key_file.is_some()))
        })?;
        // With the credential in the configuration the token needs no login: the first
        // session logs the slot in (OpenSSH's `ssh -I` never logs in, nor can it ask for a
        // PIN in batch mode).
        if sign_in_now {
            match sign_in(slot as usize, None) {
                Ok(()) | Err(CKR_USER_ALREADY_LOGGED_IN) => {}
                Err(e) => {
                    let _ = with(|m| Ok(m.sessions.remove(&h)));
                    return Err(e);
                }
            }
        }
        unsafe { set(session, h) }
    })
}

pub unsafe extern "C" fn C_CloseSession(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        with(|m| {
            m.sessions
                .remove(&session)
                .map(|_| ())
                .ok_or(CKR_SESSION_HANDLE_INVALID)
        })
    })
}

pub unsafe extern "C" fn C_CloseAllSessions(slot: CK_SLOT_ID) -> CK_RV {
    guard(|| {
        with(|m| {
            m.slot(slot)?;
            m.sessions.retain(|_, s| s.slot != slot as usize);
            Ok(())
        })
    })
}

pub unsafe extern "C" fn C_GetSessionInfo(
    session: CK_SESSION_HANDLE,
    info: *mut CK_SESSION_INFO,
) -> CK_RV {
    guard(|| {
        let (slot, rw, user) = with(|m| {
            let s = m.session(session)?;
            let (slot, rw) = (s.slot, s.rw);
            Ok((slot, rw, m.slots[slot].token.is_some()))
        })?;
        let state = match (rw, user) {
            (false, false) => CKS_RO_PUBLIC_SESSION,
            (true, false) => CKS_RW_PUBLIC_SESSION,
            (false, true) => CKS_RO_USER_FUNCTIONS,
            (true, true) => CKS_RW_USER_FUNCTIONS,
        };
        unsafe {
            set(
                info,
                CK_SESSION_INFO {
                    slotID: slot as CK_SLOT_ID,
                    state,
                    flags: CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 },
                    ulDeviceError: 0,
                },
            )
        }
    })
}

pub unsafe extern "C" fn C_Login(
    session: CK_SESSION_HANDLE,
    user: CK_USER_TYPE,
    pin: *mut CK_UTF8CHAR,
    pin_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let (slot, logged_in, stored) = with(|m| {
            let slot = m.session(session)?.slot;
            match user {
                CKU_USER => {}
                CKU_SO => return Err(CKR_USER_TYPE_INVALID),
                CKU_CONTEXT_SPECIFIC => return Err(CKR_OPERATION_NOT_INITIALIZED),
                _ => return Err(CKR_USER_TYPE_INVALID),
            }
            Ok((
                slot,
                m.slots[slot].token.is_some(),
                m.config.api_key_file.is_some(),
            ))
        })?;
        match (logged_in, stored) {
            // The configured credential logged the slot in when a session opened; a caller
            // that logs in anyway (`pkcs11-tool --login`) finds it done.
            (true, true) => Ok(()),
            (true, false) => Err(CKR_USER_ALREADY_LOGGED_IN),
            (false, true) => sign_in(slot, None),
            (false, false) => {
                let pin = unsafe { input(pin, pin_len)? };
                let pin = std::str::from_utf8(pin).map_err(|_| CKR_PIN_INCORRECT)?;
                sign_in(slot, Some(pin.trim()))
            }
        }
    })
}

/// Logs the slot in as the application, with the PIN or, given none, the configured
/// credential: a session with the daemon that every session of the slot uses.
fn sign_in(slot: usize, pin: Option<&str>) -> Result<(), CK_RV> {
    let (client, group, app_id, stored) = with(|m| {
        Ok((
            m.client.clone(),
            m.slots[slot].group_id.clone(),
            m.config.app_id.clone(),
            m.config.stored_key(),
        ))
    })?;
    let api_key = match (pin, stored) {
        (Some(pin), _) => pin.to_string(),
        (None, Some(Ok(key))) => key,
        (None, Some(Err(e))) => {
            eprintln!("keyward-pkcs11: {e}");
            return Err(CKR_DEVICE_ERROR);
        }
        (None, None) => return Err(CKR_PIN_INCORRECT),
    };
    let (token, entity) = client.login(&api_key).map_err(|e| match e {
        crate::client::ClientError::Unauthenticated | crate::client::ClientError::Invalid(_) => {
            CKR_PIN_INCORRECT
        }
        e => rv(e, CKR_PIN_INCORRECT),
    })?;
    if app_id.is_some_and(|a| a != entity) {
        let _ = client.logout(&token);
        return Err(CKR_PIN_INCORRECT);
    }
    let label = client.group_name(&token, &group).ok();
    with(|m| {
        let s = &mut m.slots[slot];
        if s.token.is_some() {
            let _ = client.logout(&token);
            return Err(CKR_USER_ALREADY_LOGGED_IN);
        }
        s.token = Some(token);
        if let Some(l) = label.filter(|l| !l.is_empty()) {
            s.label = l;
        }
        Ok(())
    })
}

pub unsafe extern "C" fn C_Logout(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        let (client, token) = with(|m| {
            let slot = m.session(session)?.slot;
            let token = m.slots[slot].token.take().ok_or(CKR_USER_NOT_LOGGED_IN)?;
            for s in m.sessions.values_mut().filter(|s| s.slot == slot) {
                s.ops.clear();
                s.found = None;
            }
            Ok((m.client.clone(), token))
        })?;
        let _ = client.logout(&token);
        Ok(())
    })
}

pub unsafe extern "C" fn C_GetAttributeValue(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if template.is_null() && count > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let (key, part) = with(|m| m.object(session, object))?;
        if count == 0 {
            return Ok(());
        }
        let attrs = unsafe { std::slice::from_raw_parts_mut(template, count as usize) };
        let mut result = Ok(());
        for a in attrs.iter_mut() {
            let worse = match objects::attribute(&key, part, a.type_) {
                Attr::Value(v) if a.pValue.is_null() => {
                    a.ulValueLen = v.len() as CK_ULONG;
                    None
                }
                Attr::Value(v) if (a.ulValueLen as usize) < v.len() => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    Some(CKR_BUFFER_TOO_SMALL)
                }
                Attr::Value(v) => {
                    unsafe {
                        std::ptr::copy_nonoverlapping(v.as_ptr(), a.pValue as *mut u8, v.len())
                    };
                    a.ulValueLen = v.len() as CK_ULONG;
                    None
                }
                Attr::Sensitive => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    Some(CKR_ATTRIBUTE_SENSITIVE)
                }
                Attr::Invalid => {
                    a.ulValueLen = CK_UNAVAILABLE_INFORMATION;
                    Some(CKR_ATTRIBUTE_TYPE_INVALID)
                }
            };
            // Every attribute is answered; the call reports one of the problems.
            if let (Some(rv), Ok(())) = (worse, &result) {
                result = Err(rv);
            }
        }
        result
    })
}

pub unsafe extern "C" fn C_FindObjectsInit(
    session: CK_SESSION_HANDLE,
    template: *mut CK_ATTRIBUTE,
    count: CK_ULONG,
) -> CK_RV {
    guard(|| {
        if template.is_null() && count > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let mut wanted = Vec::new();
        let given = if count == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(template, count as usize) }
        };
        for a in given {
            let v = unsafe { input(a.pValue as *const u8, a.ulValueLen)? };
            wanted.push((a.type_, v.to_vec()));
        }
        let login = with(|m| {
            let s = m.session(session)?;
            if s.found.is_some() {
                return Err(CKR_OPERATION_ACTIVE);
            }
            let slot = s.slot;
            let group = m.slots[slot].group_id.clone();
            Ok((m.token(session).ok(), m.client.clone(), group))
        })?;
        let public_only = login.0.is_none();
        let keys = match login {
            (Some((client, token)), _, group) => client
                .keys(&token, &group)
                .map_err(|e| rv(e, CKR_DEVICE_ERROR))?,
            // Before login, public keys when the configuration holds the credential.
            (None, client, group) => match with(|m| Ok(m.config.stored_key()))? {
                Some(Ok(key)) => {
                    let (token, _) = client.login(&key).map_err(|e| rv(e, CKR_DEVICE_ERROR))?;
                    let keys = client.keys(&token, &group);
                    let _ = client.logout(&token);
                    keys.map_err(|e| rv(e, CKR_DEVICE_ERROR))?
                }
                _ => vec![],
            },
        };
        with(|m| m.find(session, keys, &wanted, public_only))
    })
}

pub unsafe extern "C" fn C_FindObjects(
    session: CK_SESSION_HANDLE,
    objects: *mut CK_OBJECT_HANDLE,
    max: CK_ULONG,
    count: *mut CK_ULONG,
) -> CK_RV {
    guard(|| {
        if objects.is_null() || count.is_null() {
            return Err(CKR_ARGUMENTS_BAD);
        }
        let taken = with(|m| {
            let found = m
                .session(session)?
                .found
                .as_mut()
                .ok_or(CKR_OPERATION_NOT_INITIALIZED)?;
            let n = (max as usize).min(found.len());
            Ok(found.drain(..n).collect::<Vec<_>>())
        })?;
        unsafe {
            std::ptr::copy_nonoverlapping(taken.as_ptr(), objects, taken.len());
            set(count, taken.len() as CK_ULONG)
        }
    })
}

pub unsafe extern "C" fn C_FindObjectsFinal(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        with(|m| {
            m.session(session)?
                .found
                .take()
                .map(|_| ())
                .ok_or(CKR_OPERATION_NOT_INITIALIZED)
        })
    })
}

pub unsafe extern "C" fn C_DestroyObject(
    session: CK_SESSION_HANDLE,
    object: CK_OBJECT_HANDLE,
) -> CK_RV {
    guard(|| {
        let (client, token, key) = with(|m| {
            let (key, part) = m.object(session, object)?;
            if part == Part::Public {
                return Err(CKR_ACTION_PROHIBITED);
            }
            if !m.session(session)?.rw {
                return Err(CKR_SESSION_READ_ONLY);
            }
            let (client, token) = m.token(session)?;
            Ok((client, token, key))
        })?;
        client
            .delete(&token, &key.kid)
            .map_err(|e| rv(e, CKR_OBJECT_HANDLE_INVALID))?;
        with(|m| {
            m.keys.remove(&key.kid);
            Ok(())
        })
    })
}
