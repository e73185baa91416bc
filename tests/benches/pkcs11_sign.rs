//! Signatures per second through the PKCS#11 module, beside the same signatures through the
//! REST API with the same kind of client, and the ratio: what the module costs on top of the
//! call it makes. RSA-2048 (`CKM_SHA256_RSA_PKCS`) and ECDSA P-256 (`CKM_ECDSA_SHA256`), one
//! thread and eight (each with its own PKCS#11 session), against a daemon in this process.
//!
//! Run with `cargo bench -p keyward-tests --bench pkcs11_sign`.

use std::ptr::null_mut;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_pkcs11::cryptoki_sys::*;
use keyward_tests::api::TestDaemon;
use serde_json::json;

const WINDOW: Duration = Duration::from_secs(3);

fn f() -> &'static CK_FUNCTION_LIST {
    let mut list: *mut CK_FUNCTION_LIST = null_mut();
    assert_eq!(
        unsafe { keyward_pkcs11::C_GetFunctionList(&mut list) },
        CKR_OK
    );
    unsafe { &*list }
}

/// A logged-in session and the private key labelled `label`.
fn session(pin: &str, label: &str) -> (CK_SESSION_HANDLE, CK_OBJECT_HANDLE) {
    let f = f();
    let mut s = 0;
    unsafe {
        assert_eq!(
            f.C_OpenSession.unwrap()(0, CKF_SERIAL_SESSION, null_mut(), None, &mut s),
            CKR_OK
        );
        let rv = f.C_Login.unwrap()(s, CKU_USER, pin.as_ptr() as *mut _, pin.len() as CK_ULONG);
        assert!(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN);
        let found = keyward_tests::pkcs11::find(f, s, CKO_PRIVATE_KEY, label);
        assert_eq!(found.len(), 1, "{label}");
        (s, found[0])
    }
}

/// Signatures per second over WINDOW from `threads` threads, each running `one`.
fn rate<S: Send + 'static>(threads: usize, setup: impl Fn() -> S, one: fn(&mut S)) -> f64 {
    let deadline = Instant::now() + WINDOW;
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let mut state = setup();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    one(&mut state);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    total as f64 / WINDOW.as_secs_f64()
}

fn module_sign(state: &mut (CK_SESSION_HANDLE, CK_OBJECT_HANDLE, CK_MECHANISM_TYPE)) {
    let f = f();
    let (s, key, mech) = *state;
    let mut m = CK_MECHANISM {
        mechanism: mech,
        pParameter: null_mut(),
        ulParameterLen: 0,
    };
    let data = b"a message of some sixty-four bytes, as a document digest would be";
    let mut sig = [0u8; 512];
    let mut len = sig.len() as CK_ULONG;
    unsafe {
        assert_eq!(f.C_SignInit.unwrap()(s, &mut m, key), CKR_OK);
        assert_eq!(
            f.C_Sign.unwrap()(
                s,
                data.as_ptr() as *mut _,
                data.len() as CK_ULONG,
                sig.as_mut_ptr(),
                &mut len
            ),
            CKR_OK
        );
    }
}

struct Rest {
    http: reqwest::blocking::Client,
    url: String,
    token: String,
}

fn rest_sign(r: &mut Rest) {
    let data = b"a message of some sixty-four bytes, as a document digest would be";
    let resp = r
        .http
        .post(&r.url)
        .bearer_auth(&r.token)
        .json(&json!({"hash_alg": "SHA256", "data": STANDARD.encode(data)}))
        .send()
        .unwrap();
    assert!(resp.status().is_success());
    resp.bytes().unwrap();
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (d, api_key, group, kids) = rt.block_on(async {
        let d = TestDaemon::start().await;
        let admin = d.bootstrap().await;
        let group = admin.create_group("bench", serde_json::json!({})).await;
        let rsa = admin
            .create_key(
                json!({"name": "rsa", "group_id": group, "obj_type": "RSA", "key_size": 2048,
                "key_ops": ["SIGN", "VERIFY"]}),
            )
            .await;
        let ec = admin
            .create_key(json!({"name": "ec", "group_id": group, "obj_type": "EC",
                "elliptic_curve": "NistP256", "key_ops": ["SIGN", "VERIFY"]}))
            .await;
        let (_, api_key) = admin.create_app("bench", &[&group]).await;
        let kids = (
            rsa["kid"].as_str().unwrap().to_string(),
            ec["kid"].as_str().unwrap().to_string(),
        );
        (d, api_key, group, kids)
    });
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("pkcs11.toml");
    std::fs::write(
        &conf,
        format!(
            "address = \"{}\"\n[[slot]]\ngroup_id = \"{group}\"\n",
            d.url
        ),
    )
    .unwrap();
    // Read once, at C_Initialize, before any other thread exists.
    unsafe { std::env::set_var("KEYWARD_PKCS11_CONF", &conf) };
    assert_eq!(unsafe { f().C_Initialize.unwrap()(null_mut()) }, CKR_OK);

    let http = reqwest::blocking::Client::new();
    let token: String = http
        .post(format!("{}/sys/v1/session/auth", d.url))
        .header("authorization", format!("Basic {api_key}"))
        .send()
        .unwrap()
        .json::<serde_json::Value>()
        .unwrap()["access_token"]
        .as_str()
        .unwrap()
        .to_string();

    println!("signatures per second (window {} s each)", WINDOW.as_secs());
    println!(
        "{:<22} {:>8} {:>12} {:>10} {:>7}",
        "key", "threads", "PKCS#11", "REST", "ratio"
    );
    for (label, kid, mech) in [
        ("RSA-2048 SHA256-PKCS", &kids.0, CKM_SHA256_RSA_PKCS),
        ("ECDSA P-256 SHA256", &kids.1, CKM_ECDSA_SHA256),
    ] {
        let name = if mech == CKM_ECDSA_SHA256 {
            "ec"
        } else {
            "rsa"
        };
        for threads in [1, 8] {
            let module = rate(
                threads,
                || {
                    let (s, h) = session(&api_key, name);
                    (s, h, mech)
                },
                module_sign,
            );
            let rest = rate(
                threads,
                || Rest {
                    http: http.clone(),
                    url: format!("{}/crypto/v1/keys/{kid}/sign", d.url),
                    token: token.clone(),
                },
                rest_sign,
            );
            println!(
                "{label:<22} {threads:>8} {module:>12.0} {rest:>10.0} {:>7.2}",
                module / rest
            );
        }
    }
    unsafe { f().C_Finalize.unwrap()(null_mut()) };
    rt.block_on(d.stop());
}
