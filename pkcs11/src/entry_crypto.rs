//! The C entry points of cryptography: sign, verify, encrypt and decrypt (single-part and in
//! parts; `ops` does the work), random numbers, and the legacy parallel functions.

#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use cryptoki_sys::*;

use crate::entry::{guard, input, set};
use crate::mechanisms::{self, Purpose};
use crate::module::with;
use crate::ops::{self, Out};

/// Reads the caller's mechanism.
pub(crate) unsafe fn mechanism(m: *mut CK_MECHANISM) -> Result<mechanisms::Mech, CK_RV> {
    if m.is_null() {
        return Err(CKR_ARGUMENTS_BAD);
    }
    unsafe { mechanisms::parse(&*m) }
}

macro_rules! init_fn {
    ($name:ident, $purpose:expr) => {
        pub unsafe extern "C" fn $name(
            session: CK_SESSION_HANDLE,
            mech: *mut CK_MECHANISM,
            key: CK_OBJECT_HANDLE,
        ) -> CK_RV {
            guard(|| {
                // A session is checked before its arguments (PKCS#11's order of errors).
                with(|m| m.session(session).map(|_| ()))?;
                ops::init(session, $purpose, unsafe { mechanism(mech)? }, key)
            })
        }
    };
}

init_fn!(C_SignInit, Purpose::Sign);
init_fn!(C_VerifyInit, Purpose::Verify);
init_fn!(C_EncryptInit, Purpose::Encrypt);
init_fn!(C_DecryptInit, Purpose::Decrypt);

macro_rules! single_fn {
    ($name:ident, $purpose:expr) => {
        pub unsafe extern "C" fn $name(
            session: CK_SESSION_HANDLE,
            data: *mut CK_BYTE,
            data_len: CK_ULONG,
            out: *mut CK_BYTE,
            out_len: *mut CK_ULONG,
        ) -> CK_RV {
            guard(|| {
                let data = unsafe { input(data, data_len)? };
                ops::finish(
                    session,
                    $purpose,
                    Some(data),
                    Out {
                        buf: out,
                        len: out_len,
                    },
                )
            })
        }
    };
}

single_fn!(C_Sign, Purpose::Sign);
single_fn!(C_Encrypt, Purpose::Encrypt);
single_fn!(C_Decrypt, Purpose::Decrypt);

macro_rules! crypt_update_fn {
    ($name:ident, $purpose:expr) => {
        /// Gathers a part; the output comes whole from the final call (PKCS#11 lets an update
        /// answer nothing yet).
        pub unsafe extern "C" fn $name(
            session: CK_SESSION_HANDLE,
            part: *mut CK_BYTE,
            len: CK_ULONG,
            _out: *mut CK_BYTE,
            out_len: *mut CK_ULONG,
        ) -> CK_RV {
            guard(|| {
                if out_len.is_null() {
                    return Err(CKR_ARGUMENTS_BAD);
                }
                ops::update(session, $purpose, unsafe { input(part, len)? })?;
                unsafe { set(out_len, 0) }
            })
        }
    };
}

crypt_update_fn!(C_EncryptUpdate, Purpose::Encrypt);
crypt_update_fn!(C_DecryptUpdate, Purpose::Decrypt);

macro_rules! final_fn {
    ($name:ident, $purpose:expr) => {
        pub unsafe extern "C" fn $name(
            session: CK_SESSION_HANDLE,
            out: *mut CK_BYTE,
            out_len: *mut CK_ULONG,
        ) -> CK_RV {
            guard(|| {
                ops::finish(
                    session,
                    $purpose,
                    None,
                    Out {
                        buf: out,
                        len: out_len,
                    },
                )
            })
        }
    };
}

final_fn!(C_SignFinal, Purpose::Sign);
final_fn!(C_EncryptFinal, Purpose::Encrypt);
final_fn!(C_DecryptFinal, Purpose::Decrypt);

pub unsafe extern "C" fn C_SignUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| ops::update(session, Purpose::Sign, unsafe { input(part, len)? }))
}

pub unsafe extern "C" fn C_Verify(
    session: CK_SESSION_HANDLE,
    data: *mut CK_BYTE,
    data_len: CK_ULONG,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        let data = unsafe { input(data, data_len)? };
        let sig = unsafe { input(sig, sig_len)? };
        ops::verify(session, Some(data), sig)
    })
}

pub unsafe extern "C" fn C_VerifyUpdate(
    session: CK_SESSION_HANDLE,
    part: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| ops::update(session, Purpose::Verify, unsafe { input(part, len)? }))
}

pub unsafe extern "C" fn C_VerifyFinal(
    session: CK_SESSION_HANDLE,
    sig: *mut CK_BYTE,
    sig_len: CK_ULONG,
) -> CK_RV {
    guard(|| ops::verify(session, None, unsafe { input(sig, sig_len)? }))
}

pub unsafe extern "C" fn C_GenerateRandom(
    session: CK_SESSION_HANDLE,
    out: *mut CK_BYTE,
    len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        with(|m| m.session(session).map(|_| ()))?;
        if out.is_null() && len > 0 {
            return Err(CKR_ARGUMENTS_BAD);
        }
        if len == 0 {
            return Ok(());
        }
        let buf = unsafe { std::slice::from_raw_parts_mut(out, len as usize) };
        getrandom::fill(buf).map_err(|_| CKR_FUNCTION_FAILED)
    })
}

pub unsafe extern "C" fn C_SeedRandom(
    session: CK_SESSION_HANDLE,
    _seed: *mut CK_BYTE,
    _len: CK_ULONG,
) -> CK_RV {
    guard(|| {
        with(|m| m.session(session).map(|_| ()))?;
        Err(CKR_RANDOM_SEED_NOT_SUPPORTED)
    })
}

pub unsafe extern "C" fn C_GetFunctionStatus(session: CK_SESSION_HANDLE) -> CK_RV {
    guard(|| {
        with(|m| m.session(session).map(|_| ()))?;
        Err(CKR_FUNCTION_NOT_PARALLEL)
    })
}

pub unsafe extern "C" fn C_CancelFunction(session: CK_SESSION_HANDLE) -> CK_RV {
    unsafe { C_GetFunctionStatus(session) }
}
