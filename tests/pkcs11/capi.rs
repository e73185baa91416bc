//! The module loaded as an application loads it, and its C function list, with the calls
//! the tests make. The module is one per process: tests that use it take [`Loaded::take`],
//! which serializes them and finalizes the module when done.

use std::ffi::c_void;
use std::path::Path;
use std::ptr::null_mut;
use std::sync::{Mutex, MutexGuard};

pub use keyward_pkcs11::cryptoki_sys::*;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

pub struct Loaded {
    _lib: libloading::Library,
    pub f: &'static CK_FUNCTION_LIST,
    _turn: MutexGuard<'static, ()>,
}

impl Loaded {
    /// The module, configured by `conf`, not yet initialized.
    pub fn take(conf: &Path) -> Loaded {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        // The module reads its configuration at C_Initialize; no other thread reads the
        // environment meanwhile (the tests that load the module take turns).
        unsafe { std::env::set_var("KEYWARD_PKCS11_CONF", conf) };
        let lib = unsafe { libloading::Library::new(super::module_path()) }.unwrap();
        let mut list: *mut CK_FUNCTION_LIST = null_mut();
        let get: libloading::Symbol<unsafe extern "C" fn(*mut *mut CK_FUNCTION_LIST) -> CK_RV> =
            unsafe { lib.get(b"C_GetFunctionList") }.unwrap();
        assert_eq!(unsafe { get(&mut list) }, CKR_OK);
        let f = unsafe { &*list };
        Loaded {
            _lib: lib,
            f,
            _turn: turn,
        }
    }

    /// The version of the function list `C_GetInterface` gives for `version` (none: the
    /// module's choice), read from the list itself; and how many interfaces there are.
    pub fn interface(&self, version: Option<CK_VERSION>) -> Result<(CK_VERSION, CK_ULONG), CK_RV> {
        type List = unsafe extern "C" fn(*mut CK_INTERFACE, *mut CK_ULONG) -> CK_RV;
        type Get = unsafe extern "C" fn(
            *mut CK_UTF8CHAR,
            *mut CK_VERSION,
            *mut *mut CK_INTERFACE,
            CK_FLAGS,
        ) -> CK_RV;
        let list: libloading::Symbol<List> =
            unsafe { self._lib.get(b"C_GetInterfaceList") }.unwrap();
        let get: libloading::Symbol<Get> = unsafe { self._lib.get(b"C_GetInterface") }.unwrap();
        let mut n = 0;
        let rv = unsafe { list(null_mut(), &mut n) };
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut v = version;
        let mut found: *mut CK_INTERFACE = null_mut();
        let rv = unsafe {
            get(
                c"PKCS 11".as_ptr() as *mut _,
                v.as_mut().map_or(null_mut(), |v| v as *mut CK_VERSION),
                &mut found,
                0,
            )
        };
        if rv != CKR_OK {
            return Err(rv);
        }
        // Every function list starts with its version.
        let listed = unsafe { *((*found).pFunctionList as *const CK_VERSION) };
        Ok((listed, n))
    }

    pub fn initialize(&self) -> CK_RV {
        unsafe { self.f.C_Initialize.unwrap()(null_mut()) }
    }

    pub fn open(&self, rw: bool) -> CK_SESSION_HANDLE {
        let mut h = 0;
        let flags = CKF_SERIAL_SESSION | if rw { CKF_RW_SESSION } else { 0 };
        let rv = unsafe { self.f.C_OpenSession.unwrap()(0, flags, null_mut(), None, &mut h) };
        assert_eq!(rv, CKR_OK);
        h
    }

    pub fn login(&self, s: CK_SESSION_HANDLE, pin: &str) -> CK_RV {
        unsafe {
            self.f.C_Login.unwrap()(s, CKU_USER, pin.as_ptr() as *mut _, pin.len() as CK_ULONG)
        }
    }

    /// The handles of objects with `class` and `label`.
    pub fn find(
        &self,
        s: CK_SESSION_HANDLE,
        class: CK_OBJECT_CLASS,
        label: &str,
    ) -> Vec<CK_OBJECT_HANDLE> {
        keyward_tests::pkcs11::find(self.f, s, class, label)
    }

    /// One attribute's bytes, or the call's error.
    pub fn attribute(
        &self,
        s: CK_SESSION_HANDLE,
        o: CK_OBJECT_HANDLE,
        t: CK_ATTRIBUTE_TYPE,
    ) -> Result<Vec<u8>, CK_RV> {
        let mut a = CK_ATTRIBUTE {
            type_: t,
            pValue: null_mut(),
            ulValueLen: 0,
        };
        let rv = unsafe { self.f.C_GetAttributeValue.unwrap()(s, o, &mut a, 1) };
        if rv != CKR_OK {
            return Err(rv);
        }
        let mut buf = vec![0u8; a.ulValueLen as usize];
        a.pValue = buf.as_mut_ptr() as *mut c_void;
        let rv = unsafe { self.f.C_GetAttributeValue.unwrap()(s, o, &mut a, 1) };
        if rv != CKR_OK {
            return Err(rv);
        }
        Ok(buf)
    }

    pub fn mechanism(m: CK_MECHANISM_TYPE) -> CK_MECHANISM {
        CK_MECHANISM {
            mechanism: m,
            pParameter: null_mut(),
            ulParameterLen: 0,
        }
    }

    pub fn sign_init(
        &self,
        s: CK_SESSION_HANDLE,
        mut m: CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
    ) -> CK_RV {
        unsafe { self.f.C_SignInit.unwrap()(s, &mut m, key) }
    }

    /// C_Sign with the length query first.
    pub fn sign(&self, s: CK_SESSION_HANDLE, data: &[u8]) -> Result<Vec<u8>, CK_RV> {
        let sign = self.f.C_Sign.unwrap();
        two_calls(|out, n| unsafe {
            sign(s, data.as_ptr() as *mut _, data.len() as CK_ULONG, out, n)
        })
    }

    pub fn verify(
        &self,
        s: CK_SESSION_HANDLE,
        mut m: CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
        data: &[u8],
        sig: &[u8],
    ) -> CK_RV {
        unsafe {
            let rv = self.f.C_VerifyInit.unwrap()(s, &mut m, key);
            if rv != CKR_OK {
                return rv;
            }
            self.f.C_Verify.unwrap()(
                s,
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                sig.as_ptr() as *mut _,
                sig.len() as CK_ULONG,
            )
        }
    }

    /// C_EncryptInit and C_Encrypt (or decrypt), with the length query first.
    pub fn crypt(
        &self,
        s: CK_SESSION_HANDLE,
        decrypt: bool,
        mut m: CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
        input: &[u8],
    ) -> Result<Vec<u8>, CK_RV> {
        let (init, call) = if decrypt {
            (self.f.C_DecryptInit.unwrap(), self.f.C_Decrypt.unwrap())
        } else {
            (self.f.C_EncryptInit.unwrap(), self.f.C_Encrypt.unwrap())
        };
        unsafe {
            let rv = init(s, &mut m, key);
            if rv != CKR_OK {
                return Err(rv);
            }
            two_calls(|out, n| call(s, input.as_ptr() as *mut _, input.len() as CK_ULONG, out, n))
        }
    }

    /// C_GenerateKey with `t`; the new key's handle.
    pub fn generate_key(
        &self,
        s: CK_SESSION_HANDLE,
        mech: CK_MECHANISM_TYPE,
        t: &Attrs,
    ) -> Result<CK_OBJECT_HANDLE, CK_RV> {
        let mut m = Self::mechanism(mech);
        let mut raw = t.raw();
        let mut h = 0;
        let rv = unsafe {
            self.f.C_GenerateKey.unwrap()(
                s,
                &mut m,
                raw.as_mut_ptr(),
                raw.len() as CK_ULONG,
                &mut h,
            )
        };
        if rv != CKR_OK {
            return Err(rv);
        }
        Ok(h)
    }

    /// C_CreateObject with `t`.
    pub fn create(&self, s: CK_SESSION_HANDLE, t: &Attrs) -> Result<CK_OBJECT_HANDLE, CK_RV> {
        let mut raw = t.raw();
        let mut h = 0;
        let rv = unsafe {
            self.f.C_CreateObject.unwrap()(s, raw.as_mut_ptr(), raw.len() as CK_ULONG, &mut h)
        };
        if rv != CKR_OK {
            return Err(rv);
        }
        Ok(h)
    }

    /// C_WrapKey with the length query first.
    pub fn wrap(
        &self,
        s: CK_SESSION_HANDLE,
        mut m: CK_MECHANISM,
        wrapping: CK_OBJECT_HANDLE,
        key: CK_OBJECT_HANDLE,
    ) -> Result<Vec<u8>, CK_RV> {
        let wrap = self.f.C_WrapKey.unwrap();
        two_calls(|out, n| unsafe { wrap(s, &mut m, wrapping, key, out, n) })
    }

    /// C_UnwrapKey into a key as `t` says.
    pub fn unwrap(
        &self,
        s: CK_SESSION_HANDLE,
        mut m: CK_MECHANISM,
        kek: CK_OBJECT_HANDLE,
        wrapped: &[u8],
        t: &Attrs,
    ) -> Result<CK_OBJECT_HANDLE, CK_RV> {
        let mut raw = t.raw();
        let mut h = 0;
        let rv = unsafe {
            self.f.C_UnwrapKey.unwrap()(
                s,
                &mut m,
                kek,
                wrapped.as_ptr() as *mut _,
                wrapped.len() as CK_ULONG,
                raw.as_mut_ptr(),
                raw.len() as CK_ULONG,
                &mut h,
            )
        };
        if rv != CKR_OK {
            return Err(rv);
        }
        Ok(h)
    }

    /// C_EncryptInit (or decrypt), C_EncryptUpdate per part (each answering no output yet),
    /// and C_EncryptFinal with the length query first.
    pub fn crypt_parts(
        &self,
        s: CK_SESSION_HANDLE,
        decrypt: bool,
        mut m: CK_MECHANISM,
        key: CK_OBJECT_HANDLE,
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, CK_RV> {
        let (init, update, finish) = if decrypt {
            let f = self.f;
            (
                f.C_DecryptInit.unwrap(),
                f.C_DecryptUpdate.unwrap(),
                f.C_DecryptFinal.unwrap(),
            )
        } else {
            let f = self.f;
            (
                f.C_EncryptInit.unwrap(),
                f.C_EncryptUpdate.unwrap(),
                f.C_EncryptFinal.unwrap(),
            )
        };
        unsafe {
            let rv = init(s, &mut m, key);
            if rv != CKR_OK {
                return Err(rv);
            }
            for part in parts {
                let mut out = [0u8; 64];
                let mut n = out.len() as CK_ULONG;
                let rv = update(
                    s,
                    part.as_ptr() as *mut _,
                    part.len() as CK_ULONG,
                    out.as_mut_ptr(),
                    &mut n,
                );
                if rv != CKR_OK {
                    return Err(rv);
                }
                assert_eq!(n, 0, "an update answers nothing yet");
            }
            two_calls(|out, n| finish(s, out, n))
        }
    }

    pub fn finalize(&self) -> CK_RV {
        unsafe { self.f.C_Finalize.unwrap()(null_mut()) }
    }
}

impl Drop for Loaded {
    fn drop(&mut self) {
        // Whatever a failed assertion left, the next test starts from an uninitialized module.
        let _ = unsafe { self.f.C_Finalize.unwrap()(null_mut()) };
    }
}

/// A pointer to `v` as a mechanism parameter.
pub fn with_params<T>(m: CK_MECHANISM_TYPE, v: &mut T) -> CK_MECHANISM {
    CK_MECHANISM {
        mechanism: m,
        pParameter: v as *mut T as *mut c_void,
        ulParameterLen: std::mem::size_of::<T>() as CK_ULONG,
    }
}

/// A template the test builds: attribute types and their values' bytes.
#[derive(Default, Clone)]
pub struct Attrs(Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>);

impl Attrs {
    pub fn flag(mut self, t: CK_ATTRIBUTE_TYPE, v: bool) -> Attrs {
        self.0.push((t, vec![if v { CK_TRUE } else { CK_FALSE }]));
        self
    }

    pub fn ulong(mut self, t: CK_ATTRIBUTE_TYPE, v: CK_ULONG) -> Attrs {
        self.0.push((t, v.to_ne_bytes().to_vec()));
        self
    }

    pub fn bytes(mut self, t: CK_ATTRIBUTE_TYPE, v: &[u8]) -> Attrs {
        self.0.push((t, v.to_vec()));
        self
    }

    /// The C template, pointing into `self`.
    pub fn raw(&self) -> Vec<CK_ATTRIBUTE> {
        self.0
            .iter()
            .map(|(t, v)| CK_ATTRIBUTE {
                type_: *t,
                pValue: v.as_ptr() as *mut c_void,
                ulValueLen: v.len() as CK_ULONG,
            })
            .collect()
    }
}

/// PKCS#11's two-call output: the length query (a null buffer), then the call that fills a
/// buffer of that length.
pub fn two_calls(mut call: impl FnMut(*mut u8, *mut CK_ULONG) -> CK_RV) -> Result<Vec<u8>, CK_RV> {
    let mut n = 0;
    let rv = call(null_mut(), &mut n);
    if rv != CKR_OK {
        return Err(rv);
    }
    let mut out = vec![0u8; n as usize];
    let rv = call(out.as_mut_ptr(), &mut n);
    if rv != CKR_OK {
        return Err(rv);
    }
    out.truncate(n as usize);
    Ok(out)
}
