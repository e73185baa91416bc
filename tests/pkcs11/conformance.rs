//! PKCS#11's rules, as Google's pkcs11test checks them for the functions the module offers:
//! the initialization and session state rules, login states, the two-call length queries
//! and `CKR_BUFFER_TOO_SMALL`, attribute templates, operation state, mechanisms that do not
//! fit their key.

use std::ptr::null_mut;
use std::sync::Arc;

use super::World;
use super::capi::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_rules_error_codes_and_length_queries() {
    let w = Arc::new(World::start().await);
    let t = w.clone();
    tokio::task::spawn_blocking(move || {
        let w = &*t;
        let m = Loaded::take(&w.conf_file());
        let f = m.f;
        unsafe {
            // The PKCS#11 3.0 interfaces, and 2.40's function list beside them.
            let (v, n) = m.interface(None).unwrap();
            assert_eq!((v.major, v.minor, n), (3, 0, 2));
            let (v, _) = m
                .interface(Some(CK_VERSION {
                    major: 2,
                    minor: 40,
                }))
                .unwrap();
            assert_eq!((v.major, v.minor), (2, 40));
            assert_eq!(
                m.interface(Some(CK_VERSION { major: 1, minor: 0 })).err(),
                Some(CKR_ARGUMENTS_BAD)
            );
            assert_eq!((f.version.major, f.version.minor), (2, 40));

            // Initialization.
            let mut info = CK_INFO::default();
            assert_eq!(
                f.C_GetInfo.unwrap()(&mut info),
                CKR_CRYPTOKI_NOT_INITIALIZED
            );
            assert_eq!(m.initialize(), CKR_OK);
            assert_eq!(m.initialize(), CKR_CRYPTOKI_ALREADY_INITIALIZED);
            assert_eq!(f.C_GetInfo.unwrap()(&mut info), CKR_OK);
            assert_eq!(info.cryptokiVersion.major, 2);
            assert_eq!(
                f.C_Finalize.unwrap()(std::ptr::dangling_mut()),
                CKR_ARGUMENTS_BAD
            );

            // Slots: the two-call list.
            let mut n = 0;
            assert_eq!(
                f.C_GetSlotList.unwrap()(CK_TRUE, null_mut(), &mut n),
                CKR_OK
            );
            assert_eq!(n, 1);
            let mut slots = [0; 4];
            let mut none = 0;
            assert_eq!(
                f.C_GetSlotList.unwrap()(CK_TRUE, slots.as_mut_ptr(), &mut none),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(none, 1);
            let mut token = std::mem::zeroed::<CK_TOKEN_INFO>();
            assert_eq!(f.C_GetTokenInfo.unwrap()(0, &mut token), CKR_OK);
            assert!(token.label.starts_with(b"signing"));
            assert_eq!(
                f.C_GetTokenInfo.unwrap()(9, &mut token),
                CKR_SLOT_ID_INVALID
            );
            let mut mechs = 0;
            assert_eq!(
                f.C_GetMechanismList.unwrap()(0, null_mut(), &mut mechs),
                CKR_OK
            );
            assert!(mechs >= 10);
            let mut mi = CK_MECHANISM_INFO::default();
            assert_eq!(
                f.C_GetMechanismInfo.unwrap()(0, CKM_SHA256_RSA_PKCS, &mut mi),
                CKR_OK
            );
            assert!(mi.flags & CKF_SIGN != 0);
            assert_eq!(
                f.C_GetMechanismInfo.unwrap()(0, CKM_DES3_CBC, &mut mi),
                CKR_MECHANISM_INVALID
            );

            // Sessions and login states.
            let mut h = 0;
            assert_eq!(
                f.C_OpenSession.unwrap()(0, 0, null_mut(), None, &mut h),
                CKR_SESSION_PARALLEL_NOT_SUPPORTED
            );
            assert_eq!(
                f.C_OpenSession.unwrap()(7, CKF_SERIAL_SESSION, null_mut(), None, &mut h),
                CKR_SLOT_ID_INVALID
            );
            let s = m.open(false);
            let mut si = CK_SESSION_INFO::default();
            assert_eq!(f.C_GetSessionInfo.unwrap()(s, &mut si), CKR_OK);
            assert_eq!(si.state, CKS_RO_PUBLIC_SESSION);
            assert_eq!(
                f.C_GetSessionInfo.unwrap()(s + 100, &mut si),
                CKR_SESSION_HANDLE_INVALID
            );
            assert_eq!(f.C_Logout.unwrap()(s), CKR_USER_NOT_LOGGED_IN);
            // Before login the module shows no objects.
            assert!(m.find(s, CKO_PRIVATE_KEY, "rsa-signer").is_empty());
            let pin = w.api_key.as_str();
            assert_eq!(
                f.C_Login.unwrap()(s, CKU_SO, pin.as_ptr() as *mut _, pin.len() as CK_ULONG),
                CKR_USER_TYPE_INVALID
            );
            assert_eq!(m.login(s, pin), CKR_OK);
            assert_eq!(m.login(s, pin), CKR_USER_ALREADY_LOGGED_IN);
            assert_eq!(f.C_GetSessionInfo.unwrap()(s, &mut si), CKR_OK);
            assert_eq!(si.state, CKS_RO_USER_FUNCTIONS);

            // Objects and attribute templates.
            let mut found = [0; 4];
            assert_eq!(
                f.C_FindObjects.unwrap()(s, found.as_mut_ptr(), 4, &mut n),
                CKR_OPERATION_NOT_INITIALIZED
            );
            let rsa = m.find(s, CKO_PRIVATE_KEY, "rsa-signer")[0];
            let ec_pub = m.find(s, CKO_PUBLIC_KEY, "ec-signer")[0];
            let mut short = [0u8; 2];
            let mut attrs = [
                CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: null_mut(),
                    ulValueLen: 0,
                },
                CK_ATTRIBUTE {
                    type_: CKA_LABEL,
                    pValue: short.as_mut_ptr() as *mut _,
                    ulValueLen: 2,
                },
                CK_ATTRIBUTE {
                    type_: 0x8000_1234,
                    pValue: null_mut(),
                    ulValueLen: 0,
                },
            ];
            let rv = f.C_GetAttributeValue.unwrap()(s, rsa, attrs.as_mut_ptr(), 3);
            assert!(
                rv == CKR_BUFFER_TOO_SMALL || rv == CKR_ATTRIBUTE_TYPE_INVALID,
                "{rv:#x}"
            );
            assert_eq!(attrs[0].ulValueLen, "rsa-signer".len() as CK_ULONG);
            assert_eq!(attrs[1].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            assert_eq!(attrs[2].ulValueLen, CK_UNAVAILABLE_INFORMATION);
            assert_eq!(m.attribute(s, rsa, CKA_MODULUS).unwrap().len(), 256);
            assert_eq!(m.attribute(s, rsa, CKA_PUBLIC_EXPONENT), Ok(vec![1, 0, 1]));
            assert_eq!(m.attribute(s, rsa, CKA_ID).unwrap().len(), 16);
            assert_eq!(
                m.attribute(s, ec_pub, CKA_EC_PARAMS),
                Ok(vec![
                    0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07
                ])
            );
            let point = m.attribute(s, ec_pub, CKA_EC_POINT).unwrap();
            assert_eq!(&point[..3], &[0x04, 65, 0x04]);
            assert_eq!(
                m.attribute(s, 999, CKA_LABEL),
                Err(CKR_OBJECT_HANDLE_INVALID)
            );

            // Operations: state, the mechanism's fit, the buffer that is too small.
            let mut sig = [0u8; 512];
            let mut sig_len = 512;
            assert_eq!(
                f.C_Sign.unwrap()(
                    s,
                    b"x".as_ptr() as *mut _,
                    1,
                    sig.as_mut_ptr(),
                    &mut sig_len
                ),
                CKR_OPERATION_NOT_INITIALIZED
            );
            assert_eq!(
                m.sign_init(s, Loaded::mechanism(CKM_ECDSA_SHA256), rsa),
                CKR_KEY_TYPE_INCONSISTENT
            );
            assert_eq!(
                m.sign_init(s, Loaded::mechanism(CKM_MD5_RSA_PKCS), rsa),
                CKR_MECHANISM_INVALID
            );
            let mut pss = CK_RSA_PKCS_PSS_PARAMS {
                hashAlg: CKM_SHA256,
                mgf: CKG_MGF1_SHA256,
                sLen: 20,
            };
            assert_eq!(
                m.sign_init(s, with_params(CKM_SHA256_RSA_PKCS_PSS, &mut pss), rsa),
                CKR_MECHANISM_PARAM_INVALID
            );
            assert_eq!(
                m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), rsa),
                CKR_OK
            );
            assert_eq!(
                m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), rsa),
                CKR_OPERATION_ACTIVE
            );
            let data = b"twice asked";
            let mut small = 10;
            assert_eq!(
                f.C_Sign.unwrap()(
                    s,
                    data.as_ptr() as *mut _,
                    data.len() as CK_ULONG,
                    sig.as_mut_ptr(),
                    &mut small
                ),
                CKR_BUFFER_TOO_SMALL
            );
            assert_eq!(small, 256);
            // The operation is still active; a large enough buffer takes the answer.
            assert_eq!(
                f.C_Sign.unwrap()(
                    s,
                    data.as_ptr() as *mut _,
                    data.len() as CK_ULONG,
                    sig.as_mut_ptr(),
                    &mut sig_len
                ),
                CKR_OK
            );
            assert_eq!(sig_len, 256);
            let rsa_pub = m.find(s, CKO_PUBLIC_KEY, "rsa-signer")[0];
            assert_eq!(
                m.verify(
                    s,
                    Loaded::mechanism(CKM_SHA256_RSA_PKCS),
                    rsa_pub,
                    data,
                    &sig[..256]
                ),
                CKR_OK
            );
            // Multi-part signing of a hashing mechanism equals single-part.
            assert_eq!(
                m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), rsa),
                CKR_OK
            );
            for part in [&b"twice "[..], &b"asked"[..]] {
                assert_eq!(
                    f.C_SignUpdate.unwrap()(s, part.as_ptr() as *mut _, part.len() as CK_ULONG),
                    CKR_OK
                );
            }
            let mut multi = [0u8; 256];
            let mut multi_len = 256;
            assert_eq!(
                f.C_SignFinal.unwrap()(s, multi.as_mut_ptr(), &mut multi_len),
                CKR_OK
            );
            assert_eq!(&multi[..], &sig[..256], "PKCS#1 v1.5 is deterministic");
            // A key is made only in a read-write session, and only as Keyward makes keys.
            let mut mech = Loaded::mechanism(CKM_AES_KEY_GEN);
            let mut k = 0;
            let mut len: CK_ULONG = 32;
            let mut no = CK_FALSE;
            let mut value_len = CK_ATTRIBUTE {
                type_: CKA_VALUE_LEN,
                pValue: &mut len as *mut _ as *mut _,
                ulValueLen: std::mem::size_of::<CK_ULONG>() as CK_ULONG,
            };
            assert_eq!(
                f.C_GenerateKey.unwrap()(s, &mut mech, &mut value_len, 1, &mut k),
                CKR_SESSION_READ_ONLY
            );
            let rw = m.open(true);
            let mut session_object = [
                value_len,
                CK_ATTRIBUTE {
                    type_: CKA_TOKEN,
                    pValue: &mut no as *mut _ as *mut _,
                    ulValueLen: 1,
                },
            ];
            assert_eq!(
                f.C_GenerateKey.unwrap()(rw, &mut mech, session_object.as_mut_ptr(), 2, &mut k),
                CKR_TEMPLATE_INCONSISTENT
            );
            let mut not_sensitive = [
                value_len,
                CK_ATTRIBUTE {
                    type_: CKA_SENSITIVE,
                    pValue: &mut no as *mut _ as *mut _,
                    ulValueLen: 1,
                },
            ];
            assert_eq!(
                f.C_GenerateKey.unwrap()(rw, &mut mech, not_sensitive.as_mut_ptr(), 2, &mut k),
                CKR_ATTRIBUTE_VALUE_INVALID
            );
            assert_eq!(
                f.C_GenerateKey.unwrap()(rw, &mut mech, null_mut(), 0, &mut k),
                CKR_TEMPLATE_INCOMPLETE
            );
            assert_eq!(
                f.C_GenerateKey.unwrap()(rw, &mut mech, &mut value_len, 1, &mut k),
                CKR_OK
            );
            assert_eq!(
                m.attribute(rw, k, CKA_VALUE_LEN),
                Ok(32u64.to_ne_bytes().to_vec())
            );
            assert_eq!(m.attribute(rw, k, CKA_EXTRACTABLE), Ok(vec![CK_FALSE]));
            // A key-generation mechanism does not wrap; functions the module does not
            // offer say so.
            let mut wrapped = [0u8; 64];
            let mut wrapped_len = 64;
            assert_eq!(
                f.C_WrapKey.unwrap()(rw, &mut mech, k, k, wrapped.as_mut_ptr(), &mut wrapped_len),
                CKR_MECHANISM_INVALID
            );
            let mut copy = 0;
            assert_eq!(
                f.C_CopyObject.unwrap()(rw, k, null_mut(), 0, &mut copy),
                CKR_FUNCTION_NOT_SUPPORTED
            );
            let mut random = [0u8; 32];
            assert_eq!(
                f.C_GenerateRandom.unwrap()(s, random.as_mut_ptr(), 32),
                CKR_OK
            );
            assert_ne!(random, [0u8; 32]);
            assert_eq!(f.C_CloseSession.unwrap()(s), CKR_OK);
            assert_eq!(f.C_CloseSession.unwrap()(s), CKR_SESSION_HANDLE_INVALID);
            assert_eq!(m.finalize(), CKR_OK);
            assert_eq!(m.finalize(), CKR_CRYPTOKI_NOT_INITIALIZED);
        }
    })
    .await
    .unwrap();
}
