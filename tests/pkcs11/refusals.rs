//! What the daemon refuses, the module refuses: a wrong PIN, a key without SIGN, a key
//! destroyed after the session found it, an application revoked while logged in, a daemon
//! that does not answer. And what it allows works end to end: signatures verify, AES-GCM and
//! RSA-OAEP round trips.

use std::sync::Arc;

use reqwest::Method;
use serde_json::json;

use super::World;
use super::capi::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemons_refusals_reach_the_caller_and_its_work_round_trips() {
    let w = Arc::new(World::start().await);
    let t = w.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let w = &*t;
        let m = Loaded::take(&w.conf_file());
        assert_eq!(m.initialize(), CKR_OK);
        let s = m.open(true);
        assert_eq!(m.login(s, "not-the-key"), CKR_PIN_INCORRECT);
        assert_eq!(m.login(s, &w.api_key), CKR_OK);

        // Signatures verify; a changed message does not.
        let rsa = m.find(s, CKO_PRIVATE_KEY, "rsa-signer")[0];
        let rsa_pub = m.find(s, CKO_PUBLIC_KEY, "rsa-signer")[0];
        let mech = Loaded::mechanism(CKM_SHA256_RSA_PKCS);
        assert_eq!(m.sign_init(s, mech, rsa), CKR_OK);
        let sig = m.sign(s, b"pay 10").unwrap();
        assert_eq!(sig.len(), 256);
        assert_eq!(m.verify(s, mech, rsa_pub, b"pay 10", &sig), CKR_OK);
        assert_eq!(
            m.verify(s, mech, rsa_pub, b"pay 1000", &sig),
            CKR_SIGNATURE_INVALID
        );

        // AES-GCM: the tag follows the ciphertext; a changed byte does not decrypt.
        let aes = m.find(s, CKO_SECRET_KEY, "aes-data")[0];
        let mut iv = [7u8; 12];
        let mut gcm = CK_GCM_PARAMS {
            pIv: iv.as_mut_ptr(),
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: std::ptr::null_mut(),
            ulAADLen: 0,
            ulTagBits: 128,
        };
        let sealed = m
            .crypt(
                s,
                false,
                with_params(CKM_AES_GCM, &mut gcm),
                aes,
                b"card 4111",
            )
            .unwrap();
        assert_eq!(sealed.len(), 9 + 16);
        let opened = m
            .crypt(s, true, with_params(CKM_AES_GCM, &mut gcm), aes, &sealed)
            .unwrap();
        assert_eq!(opened, b"card 4111");
        let mut bad = sealed.clone();
        bad[0] ^= 1;
        assert_eq!(
            m.crypt(s, true, with_params(CKM_AES_GCM, &mut gcm), aes, &bad),
            Err(CKR_ENCRYPTED_DATA_INVALID)
        );
        // RSA-OAEP with SHA-256.
        let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: std::ptr::null_mut(),
            ulSourceDataLen: 0,
        };
        let c = m
            .crypt(
                s,
                false,
                with_params(CKM_RSA_PKCS_OAEP, &mut oaep),
                rsa_pub,
                b"wrapped",
            )
            .unwrap();
        let p = m
            .crypt(s, true, with_params(CKM_RSA_PKCS_OAEP, &mut oaep), rsa, &c)
            .unwrap();
        assert_eq!(p, b"wrapped");

        // A key without SIGN refuses C_SignInit; a non-exportable key says so.
        let no_sign = m.find(s, CKO_PRIVATE_KEY, "rsa-no-sign")[0];
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), no_sign),
            CKR_KEY_FUNCTION_NOT_PERMITTED
        );
        assert_eq!(m.attribute(s, aes, CKA_EXTRACTABLE), Ok(vec![CK_FALSE]));
        assert_eq!(m.attribute(s, aes, CKA_SENSITIVE), Ok(vec![CK_TRUE]));
        assert_eq!(m.attribute(s, aes, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));

        // The EC key, found by this session, is destroyed through the API: the next use
        // fails; deleted, it is gone.
        let ec = m.find(s, CKO_PRIVATE_KEY, "ec-signer")[0];
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_ECDSA_SHA256), ec),
            CKR_OK
        );
        assert_eq!(m.sign(s, b"before").unwrap().len(), 64, "r || s");
        let ec_path = format!("/crypto/v1/keys/{}", w.ec["kid"].as_str().unwrap());
        rt.block_on(async {
            w.admin
                .ok(Method::POST, &format!("{ec_path}/deactivate"), None)
                .await;
            w.admin
                .ok(Method::POST, &format!("{ec_path}/destroy"), None)
                .await;
        });
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_ECDSA_SHA256), ec),
            CKR_OK
        );
        assert_eq!(
            m.sign(s, b"after"),
            Err(CKR_KEY_FUNCTION_NOT_PERMITTED),
            "a destroyed key signs nothing"
        );
        rt.block_on(async { w.admin.ok(Method::DELETE, &ec_path, None).await });
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_ECDSA_SHA256), ec),
            CKR_OK
        );
        assert_eq!(m.sign(s, b"gone"), Err(CKR_KEY_HANDLE_INVALID));

        // The application is disabled: its logged-in session fails on the next call.
        rt.block_on(async {
            w.admin
                .ok(
                    Method::PATCH,
                    &format!("/sys/v1/apps/{}", w.app_id),
                    Some(json!({"enabled": false})),
                )
                .await;
        });
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), rsa),
            CKR_OK
        );
        assert_eq!(m.sign(s, b"pay 10"), Err(CKR_USER_NOT_LOGGED_IN));
        assert_eq!(m.finalize(), CKR_OK);
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_does_not_answer_is_a_device_error_at_once() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("pkcs11.toml");
    std::fs::write(
        &conf,
        format!(
            "address = \"http://127.0.0.1:{port}\"\n[[slot]]\ngroup_id = \"00000000-0000-4000-8000-000000000000\"\n"
        ),
    )
    .unwrap();
    tokio::task::spawn_blocking(move || {
        let m = Loaded::take(&conf);
        assert_eq!(m.initialize(), CKR_OK);
        let s = m.open(false);
        let started = std::time::Instant::now();
        assert_eq!(m.login(s, "a key"), CKR_DEVICE_ERROR);
        assert!(started.elapsed().as_secs() < 10, "promptly");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_protected_signature_asks_for_approval_and_waits_when_configured() {
    let w = Arc::new(World::start().await);
    let pw = "a long enough password 7";
    let reviewer = w
        .admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(json!({"user_email": "r@example.com", "user_password": pw,
                "account_role": "member", "groups": {&w.group: "administrator"}})),
        )
        .await;
    w.admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{}", w.group),
            Some(json!({"approval_policy": {"user": reviewer["user_id"],
                "protect_crypto_operations": true}})),
        )
        .await;
    let r = w.d.login("r@example.com", pw).await;
    let pending = |w: Arc<World>| async move {
        let list = w
            .admin
            .ok(
                Method::GET,
                "/sys/v1/approval_requests?status=PENDING",
                None,
            )
            .await;
        list.as_array().unwrap().clone()
    };

    // Not configured to wait: rejected at once, the request made as the application.
    let t = w.clone();
    tokio::task::spawn_blocking(move || {
        let m = Loaded::take(&t.conf_file());
        assert_eq!(m.initialize(), CKR_OK);
        let s = m.open(false);
        assert_eq!(m.login(s, &t.api_key), CKR_OK);
        let rsa = m.find(s, CKO_PRIVATE_KEY, "rsa-signer")[0];
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), rsa),
            CKR_OK
        );
        assert_eq!(m.sign(s, b"pay 10"), Err(CKR_FUNCTION_REJECTED));
    })
    .await
    .unwrap();
    let asked = pending(w.clone()).await;
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0]["requester"]["app"], w.app_id.as_str());
    assert!(asked[0]["operation"].as_str().unwrap().ends_with("/sign"));

    // Configured to wait: the reviewer approves the new request, and the signature comes.
    let conf = w.conf.path().join("waiting.toml");
    std::fs::write(
        &conf,
        std::fs::read_to_string(w.conf_file())
            .unwrap()
            .replace("[[slot]]", "wait_for_quorum_approval = 30\n[[slot]]"),
    )
    .unwrap();
    let first = asked[0]["request_id"].clone();
    let watcher = {
        let w = w.clone();
        tokio::spawn(async move {
            loop {
                let list = pending(w.clone()).await;
                if let Some(new) = list.iter().find(|x| x["request_id"] != first) {
                    let id = new["request_id"].as_str().unwrap();
                    r.ok(
                        Method::POST,
                        &format!("/sys/v1/approval_requests/{id}/approve"),
                        Some(json!({})),
                    )
                    .await;
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    };
    let t = w.clone();
    let sig = tokio::task::spawn_blocking(move || {
        let m = Loaded::take(&conf);
        assert_eq!(m.initialize(), CKR_OK);
        let s = m.open(false);
        assert_eq!(m.login(s, &t.api_key), CKR_OK);
        let rsa = m.find(s, CKO_PRIVATE_KEY, "rsa-signer")[0];
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), rsa),
            CKR_OK
        );
        let mut sig = [0u8; 256];
        let mut len = 256;
        let rv = unsafe {
            m.f.C_Sign.unwrap()(
                s,
                b"pay 10".as_ptr() as *mut _,
                6,
                sig.as_mut_ptr(),
                &mut len,
            )
        };
        assert_eq!(rv, CKR_OK);
        sig[..len as usize].to_vec()
    })
    .await
    .unwrap();
    watcher.await.unwrap();
    assert_eq!(sig.len(), 256);
}
