//! The PKCS#11 module against a running daemon. `tools`: OpenSC's pkcs11-tool lists the
//! slots and objects and signs, each signature checked by OpenSSL with the public key from
//! the REST API, and imports a key whose AES-CBC-PAD output OpenSSL matches. `transfer`:
//! import, wrap and unwrap, multi-part encryption, and the export rules. `refusals` and
//! `conformance`: the module's C function list called directly,
//! as an application does (the promises: a key without SIGN, a destroyed key, a wrong PIN, a
//! revoked application; PKCS#11's state rules, error codes and length queries).

mod capi;
mod conformance;
mod refusals;
mod tools;
mod transfer;

use std::path::PathBuf;

use keyward_tests::api::{Api, TestDaemon};
use reqwest::Method;
use serde_json::{Value, json};

/// The module's shared library, built beside this test. Cargo builds a dependency as an
/// rlib only, so the first call builds the `cdylib` as an application gets it (a no-op when
/// it is up to date).
pub fn module_path() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "keyward-pkcs11", "--lib"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "the module builds");
    });
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap();
    let so = dir.join("libkeyward_pkcs11.so");
    assert!(so.exists(), "{} was built", so.display());
    so
}

/// A daemon with a group of keys and an application that uses them.
pub struct World {
    pub d: TestDaemon,
    pub admin: Api,
    pub group: String,
    pub app_id: String,
    pub api_key: String,
    pub rsa: Value,
    pub ec: Value,
    pub aes: Value,
    /// RSA, without SIGN.
    pub no_sign: Value,
    pub conf: tempfile::TempDir,
}

impl World {
    pub async fn start() -> World {
        let d = TestDaemon::start().await;
        let admin = d.bootstrap().await;
        let group = admin.create_group("Signing", json!({})).await;
        let key = |name: &str, body: Value| {
            let mut body = body;
            body["name"] = json!(name);
            body["group_id"] = json!(group);
            admin.create_key(body)
        };
        let rsa = key(
            "rsa-signer",
            json!({"obj_type": "RSA", "key_size": 2048,
                "key_ops": ["SIGN", "VERIFY", "ENCRYPT", "DECRYPT", "APPMANAGEABLE"]}),
        )
        .await;
        let ec = key(
            "ec-signer",
            json!({"obj_type": "EC", "elliptic_curve": "NistP256",
                "key_ops": ["SIGN", "VERIFY", "APPMANAGEABLE"]}),
        )
        .await;
        let aes = key(
            "aes-data",
            json!({"obj_type": "AES", "key_size": 256,
                "key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]}),
        )
        .await;
        let no_sign = key(
            "rsa-no-sign",
            json!({"obj_type": "RSA", "key_size": 2048,
                "key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]}),
        )
        .await;
        let (app_id, api_key) = admin.create_app("pkcs11 app", &[&group]).await;
        let conf = tempfile::tempdir().unwrap();
        std::fs::write(
            conf.path().join("pkcs11.toml"),
            format!(
                "address = \"{}\"\napp_id = \"{app_id}\"\n[[slot]]\ngroup_id = \"{group}\"\nlabel = \"signing\"\n",
                d.url
            ),
        )
        .unwrap();
        World {
            d,
            admin,
            group,
            app_id,
            api_key,
            rsa,
            ec,
            aes,
            no_sign,
            conf,
        }
    }

    pub fn conf_file(&self) -> PathBuf {
        self.conf.path().join("pkcs11.toml")
    }

    /// The key's public key as PEM, from the REST API.
    pub async fn public_pem(&self, key: &Value) -> String {
        let k = self
            .admin
            .ok(
                Method::GET,
                &format!("/crypto/v1/keys/{}", key["kid"].as_str().unwrap()),
                None,
            )
            .await;
        let b64 = k["pub_key"].as_str().unwrap();
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
    }
}

/// `CKA_ID` of a key: its kid's 16 bytes, in hex as pkcs11-tool takes it.
pub fn id_hex(key: &Value) -> String {
    key["kid"].as_str().unwrap().replace('-', "")
}
