//! Calls into a PKCS#11 function list that the module's tests and its benchmark share.

use std::ffi::c_void;

use keyward_pkcs11::cryptoki_sys::*;

/// The handles of the objects with `class` and `label`, through `f`.
pub fn find(
    f: &CK_FUNCTION_LIST,
    s: CK_SESSION_HANDLE,
    class: CK_OBJECT_CLASS,
    label: &str,
) -> Vec<CK_OBJECT_HANDLE> {
    let mut class = class;
    let mut template = [
        CK_ATTRIBUTE {
            type_: CKA_CLASS,
            pValue: &mut class as *mut _ as *mut c_void,
            ulValueLen: std::mem::size_of::<CK_OBJECT_CLASS>() as CK_ULONG,
        },
        CK_ATTRIBUTE {
            type_: CKA_LABEL,
            pValue: label.as_ptr() as *mut c_void,
            ulValueLen: label.len() as CK_ULONG,
        },
    ];
    // SAFETY: the template's pointers live until the calls return.
    unsafe {
        assert_eq!(
            f.C_FindObjectsInit.unwrap()(s, template.as_mut_ptr(), 2),
            CKR_OK
        );
        let mut out = [0; 16];
        let mut n = 0;
        assert_eq!(
            f.C_FindObjects.unwrap()(s, out.as_mut_ptr(), 16, &mut n),
            CKR_OK
        );
        assert_eq!(f.C_FindObjectsFinal.unwrap()(s), CKR_OK);
        out[..n as usize].to_vec()
    }
}
