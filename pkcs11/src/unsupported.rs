//! The PKCS#11 functions the module does not offer (yet): each answers
//! `CKR_FUNCTION_NOT_SUPPORTED`, never a silent success.

#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]

use cryptoki_sys::*;

macro_rules! unsupported {
    ($($name:ident($($t:ty),*);)*) => {
        $(
            pub unsafe extern "C" fn $name($(_: $t),*) -> CK_RV {
                CKR_FUNCTION_NOT_SUPPORTED
            }
        )*
    };
}

type Bytes = *mut CK_BYTE;
type Len = *mut CK_ULONG;
type Session = CK_SESSION_HANDLE;
type Object = CK_OBJECT_HANDLE;
type Template = *mut CK_ATTRIBUTE;
type Mechanism = *mut CK_MECHANISM;
type Params = *mut std::ffi::c_void;

unsupported! {
    C_InitToken(CK_SLOT_ID, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR);
    C_InitPIN(Session, *mut CK_UTF8CHAR, CK_ULONG);
    C_SetPIN(Session, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR, CK_ULONG);
    C_GetOperationState(Session, Bytes, Len);
    C_SetOperationState(Session, Bytes, CK_ULONG, Object, Object);
    C_CopyObject(Session, Object, Template, CK_ULONG, *mut Object);
    C_GetObjectSize(Session, Object, Len);
    C_SetAttributeValue(Session, Object, Template, CK_ULONG);
    C_DigestInit(Session, Mechanism);
    C_Digest(Session, Bytes, CK_ULONG, Bytes, Len);
    C_DigestUpdate(Session, Bytes, CK_ULONG);
    C_DigestKey(Session, Object);
    C_DigestFinal(Session, Bytes, Len);
    C_SignRecoverInit(Session, Mechanism, Object);
    C_SignRecover(Session, Bytes, CK_ULONG, Bytes, Len);
    C_VerifyRecoverInit(Session, Mechanism, Object);
    C_VerifyRecover(Session, Bytes, CK_ULONG, Bytes, Len);
    C_DigestEncryptUpdate(Session, Bytes, CK_ULONG, Bytes, Len);
    C_DecryptDigestUpdate(Session, Bytes, CK_ULONG, Bytes, Len);
    C_SignEncryptUpdate(Session, Bytes, CK_ULONG, Bytes, Len);
    C_DecryptVerifyUpdate(Session, Bytes, CK_ULONG, Bytes, Len);
    C_DeriveKey(Session, Mechanism, Object, Template, CK_ULONG, *mut Object);
    C_WaitForSlotEvent(CK_FLAGS, *mut CK_SLOT_ID, *mut std::ffi::c_void);
    // PKCS#11 3.0.
    C_LoginUser(Session, CK_USER_TYPE, *mut CK_UTF8CHAR, CK_ULONG, *mut CK_UTF8CHAR, CK_ULONG);
    C_SessionCancel(Session, CK_FLAGS);
    C_MessageEncryptInit(Session, Mechanism, Object);
    C_EncryptMessage(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, CK_ULONG, Bytes, Len);
    C_EncryptMessageBegin(Session, Params, CK_ULONG, Bytes, CK_ULONG);
    C_EncryptMessageNext(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, Len, CK_FLAGS);
    C_MessageEncryptFinal(Session);
    C_MessageDecryptInit(Session, Mechanism, Object);
    C_DecryptMessage(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, CK_ULONG, Bytes, Len);
    C_DecryptMessageBegin(Session, Params, CK_ULONG, Bytes, CK_ULONG);
    C_DecryptMessageNext(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, Len, CK_FLAGS);
    C_MessageDecryptFinal(Session);
    C_MessageSignInit(Session, Mechanism, Object);
    C_SignMessage(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, Len);
    C_SignMessageBegin(Session, Params, CK_ULONG);
    C_SignMessageNext(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, Len);
    C_MessageSignFinal(Session);
    C_MessageVerifyInit(Session, Mechanism, Object);
    C_VerifyMessage(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, CK_ULONG);
    C_VerifyMessageBegin(Session, Params, CK_ULONG);
    C_VerifyMessageNext(Session, Params, CK_ULONG, Bytes, CK_ULONG, Bytes, CK_ULONG);
    C_MessageVerifyFinal(Session);
}
