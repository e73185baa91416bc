//! Keyward's PKCS#11 module (`libkeyward_pkcs11.so`): applications that speak PKCS#11
//! (pkcs11-tool, OpenSSL's pkcs11 provider, ssh) use Keyward keys through it. It logs in as
//! an application (the PIN is its API key) and shows one slot per configured group, each
//! group's keys as objects (`objects`). Every cryptographic operation is one REST call the
//! daemon authorizes, audits and puts through its policies (`ops`, `client`); the module
//! keeps no key material and decides nothing a daemon would.
//!
//! - `entry`: the C functions (argument checks, `CK_RV`s); `unsupported`: the rest.
//! - `module`: slots, sessions, handles; `config`: `KEYWARD_PKCS11_CONF` and environment.
//! - `mechanisms`: what is offered and the request each becomes; `generate`: new keys.

pub mod client;
pub mod config;
mod entry;
mod entry_crypto;
mod entry_keys;
mod generate;
pub mod mechanisms;
mod module;
pub mod objects;
mod ops;
mod unsupported;

pub use cryptoki_sys;
use cryptoki_sys::*;
use entry::*;
use entry_crypto::*;
use entry_keys::*;
use unsupported::*;

/// A function list of type `$list` and version `$major.$minor`: the 2.40 functions, and
/// `$extra` (3.0's).
macro_rules! function_list {
    ($list:ident, $major:expr, $minor:expr, { $($extra:tt)* }) => {
        $list {
            version: CK_VERSION {
                major: $major,
                minor: $minor,
            },
            C_Initialize: Some(C_Initialize),
            C_Finalize: Some(C_Finalize),
            C_GetInfo: Some(C_GetInfo),
            C_GetFunctionList: Some(C_GetFunctionList),
            C_GetSlotList: Some(C_GetSlotList),
            C_GetSlotInfo: Some(C_GetSlotInfo),
            C_GetTokenInfo: Some(C_GetTokenInfo),
            C_GetMechanismList: Some(C_GetMechanismList),
            C_GetMechanismInfo: Some(C_GetMechanismInfo),
            C_InitToken: Some(C_InitToken),
            C_InitPIN: Some(C_InitPIN),
            C_SetPIN: Some(C_SetPIN),
            C_OpenSession: Some(C_OpenSession),
            C_CloseSession: Some(C_CloseSession),
            C_CloseAllSessions: Some(C_CloseAllSessions),
            C_GetSessionInfo: Some(C_GetSessionInfo),
            C_GetOperationState: Some(C_GetOperationState),
            C_SetOperationState: Some(C_SetOperationState),
            C_Login: Some(C_Login),
            C_Logout: Some(C_Logout),
            C_CreateObject: Some(C_CreateObject),
            C_CopyObject: Some(C_CopyObject),
            C_DestroyObject: Some(C_DestroyObject),
            C_GetObjectSize: Some(C_GetObjectSize),
            C_GetAttributeValue: Some(C_GetAttributeValue),
            C_SetAttributeValue: Some(C_SetAttributeValue),
            C_FindObjectsInit: Some(C_FindObjectsInit),
            C_FindObjects: Some(C_FindObjects),
            C_FindObjectsFinal: Some(C_FindObjectsFinal),
            C_EncryptInit: Some(C_EncryptInit),
            C_Encrypt: Some(C_Encrypt),
            C_EncryptUpdate: Some(C_EncryptUpdate),
            C_EncryptFinal: Some(C_EncryptFinal),
            C_DecryptInit: Some(C_DecryptInit),
            C_Decrypt: Some(C_Decrypt),
            C_DecryptUpdate: Some(C_DecryptUpdate),
            C_DecryptFinal: Some(C_DecryptFinal),
            C_DigestInit: Some(C_DigestInit),
            C_Digest: Some(C_Digest),
            C_DigestUpdate: Some(C_DigestUpdate),
            C_DigestKey: Some(C_DigestKey),
            C_DigestFinal: Some(C_DigestFinal),
            C_SignInit: Some(C_SignInit),
            C_Sign: Some(C_Sign),
            C_SignUpdate: Some(C_SignUpdate),
            C_SignFinal: Some(C_SignFinal),
            C_SignRecoverInit: Some(C_SignRecoverInit),
            C_SignRecover: Some(C_SignRecover),
            C_VerifyInit: Some(C_VerifyInit),
            C_Verify: Some(C_Verify),
            C_VerifyUpdate: Some(C_VerifyUpdate),
            C_VerifyFinal: Some(C_VerifyFinal),
            C_VerifyRecoverInit: Some(C_VerifyRecoverInit),
            C_VerifyRecover: Some(C_VerifyRecover),
            C_DigestEncryptUpdate: Some(C_DigestEncryptUpdate),
            C_DecryptDigestUpdate: Some(C_DecryptDigestUpdate),
            C_SignEncryptUpdate: Some(C_SignEncryptUpdate),
            C_DecryptVerifyUpdate: Some(C_DecryptVerifyUpdate),
            C_GenerateKey: Some(C_GenerateKey),
            C_GenerateKeyPair: Some(C_GenerateKeyPair),
            C_WrapKey: Some(C_WrapKey),
            C_UnwrapKey: Some(C_UnwrapKey),
            C_DeriveKey: Some(C_DeriveKey),
            C_SeedRandom: Some(C_SeedRandom),
            C_GenerateRandom: Some(C_GenerateRandom),
            C_GetFunctionStatus: Some(C_GetFunctionStatus),
            C_CancelFunction: Some(C_CancelFunction),
            C_WaitForSlotEvent: Some(C_WaitForSlotEvent),
            $($extra)*
        }
    };
}

static FUNCTIONS: CK_FUNCTION_LIST = function_list!(CK_FUNCTION_LIST, 2, 40, {});

static FUNCTIONS_3_0: CK_FUNCTION_LIST_3_0 = function_list!(CK_FUNCTION_LIST_3_0, 3, 0, {
    C_GetInterfaceList: Some(C_GetInterfaceList),
    C_GetInterface: Some(C_GetInterface),
    C_LoginUser: Some(C_LoginUser),
    C_SessionCancel: Some(C_SessionCancel),
    C_MessageEncryptInit: Some(C_MessageEncryptInit),
    C_EncryptMessage: Some(C_EncryptMessage),
    C_EncryptMessageBegin: Some(C_EncryptMessageBegin),
    C_EncryptMessageNext: Some(C_EncryptMessageNext),
    C_MessageEncryptFinal: Some(C_MessageEncryptFinal),
    C_MessageDecryptInit: Some(C_MessageDecryptInit),
    C_DecryptMessage: Some(C_DecryptMessage),
    C_DecryptMessageBegin: Some(C_DecryptMessageBegin),
    C_DecryptMessageNext: Some(C_DecryptMessageNext),
    C_MessageDecryptFinal: Some(C_MessageDecryptFinal),
    C_MessageSignInit: Some(C_MessageSignInit),
    C_SignMessage: Some(C_SignMessage),
    C_SignMessageBegin: Some(C_SignMessageBegin),
    C_SignMessageNext: Some(C_SignMessageNext),
    C_MessageSignFinal: Some(C_MessageSignFinal),
    C_MessageVerifyInit: Some(C_MessageVerifyInit),
    C_VerifyMessage: Some(C_VerifyMessage),
    C_VerifyMessageBegin: Some(C_VerifyMessageBegin),
    C_VerifyMessageNext: Some(C_VerifyMessageNext),
    C_MessageVerifyFinal: Some(C_MessageVerifyFinal),
});

/// The interfaces `C_GetInterfaceList` names: "PKCS 11" 3.0, then 2.40.
struct Interfaces([CK_INTERFACE; 2]);

// The pointers are to statics that never change.
unsafe impl Sync for Interfaces {}

const NAME: &[u8] = b"PKCS 11\0";

static INTERFACES: Interfaces = Interfaces([
    CK_INTERFACE {
        pInterfaceName: NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTIONS_3_0 as *const CK_FUNCTION_LIST_3_0 as *mut std::ffi::c_void,
        flags: 0,
    },
    CK_INTERFACE {
        pInterfaceName: NAME.as_ptr() as *mut CK_UTF8CHAR,
        pFunctionList: &FUNCTIONS as *const CK_FUNCTION_LIST as *mut std::ffi::c_void,
        flags: 0,
    },
]);

/// The interfaces the module offers (PKCS#11 3.0).
///
/// # Safety
/// `count` is writable; `list` is null or has room for `*count` interfaces.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterfaceList(
    list: *mut CK_INTERFACE,
    count: *mut CK_ULONG,
) -> CK_RV {
    if count.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    let room = unsafe { *count } as usize;
    unsafe { *count = INTERFACES.0.len() as CK_ULONG };
    if list.is_null() {
        return CKR_OK;
    }
    if room < INTERFACES.0.len() {
        return CKR_BUFFER_TOO_SMALL;
    }
    unsafe { std::ptr::copy_nonoverlapping(INTERFACES.0.as_ptr(), list, INTERFACES.0.len()) };
    CKR_OK
}

/// An interface by name and version ("PKCS 11", 3.0 unless 2.40 is asked for).
///
/// # Safety
/// `name` is null or a NUL-terminated string; `version` is null or readable; `interface`
/// is writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetInterface(
    name: *mut CK_UTF8CHAR,
    version: *mut CK_VERSION,
    interface: *mut *mut CK_INTERFACE,
    flags: CK_FLAGS,
) -> CK_RV {
    if interface.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    if !name.is_null() {
        let asked = unsafe { std::ffi::CStr::from_ptr(name as *const std::ffi::c_char) };
        if asked.to_bytes_with_nul() != NAME {
            return CKR_ARGUMENTS_BAD;
        }
    }
    // No interface of the module has flags (such as fork safety) to ask for.
    if flags != 0 {
        return CKR_ARGUMENTS_BAD;
    }
    let which = match unsafe { version.as_ref() } {
        None | Some(CK_VERSION { major: 3, minor: 0 }) => 0,
        Some(CK_VERSION {
            major: 2,
            minor: 40,
        }) => 1,
        Some(_) => return CKR_ARGUMENTS_BAD,
    };
    unsafe { *interface = &INTERFACES.0[which] as *const CK_INTERFACE as *mut CK_INTERFACE };
    CKR_OK
}

/// The module's one exported symbol: its function list.
///
/// # Safety
/// `list` is null or points to writable memory for one pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn C_GetFunctionList(list: *mut *mut CK_FUNCTION_LIST) -> CK_RV {
    if list.is_null() {
        return CKR_ARGUMENTS_BAD;
    }
    // The callers' C declarations take a non-const pointer; nothing writes through it.
    unsafe { *list = &FUNCTIONS as *const CK_FUNCTION_LIST as *mut CK_FUNCTION_LIST };
    CKR_OK
}
