//! Keyward's connector to Azure Managed HSM and Key Vault (the `kms-connector` world).
//!
//! It speaks Azure's own protocol through the host's `http` import: client-credentials
//! tokens from Entra ID (v2 endpoint, one per audience, reused until shortly before they
//! expire), Azure Resource Manager to list the subscription's Managed HSMs and vaults, and
//! the keys API (the same for both) for everything else. The connection's `kind` picks the
//! token audience and the key types asked for: software `RSA`/`EC` in a Standard vault,
//! HSM-protected types in a Premium vault and a Managed HSM. Requests throttled (429, honouring Retry-After), failing
//! with a 5xx or losing their connection are retried with exponential backoff and jitter;
//! other errors are not. Every error keeps Azure's status, code and message.
//!
//! - `azure`: requests, retries and error mapping;
//! - `token`: Entra ID tokens and their cache;
//! - `convert`: Azure JSON ⇄ contract types.

// The wasm build exports the connector; a native build (`cargo test --workspace`) only
// type-checks it.
#![cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]

mod azure;
mod convert;
mod token;

wit_bindgen::generate!({ world: "kms-connector", path: "../../wit/v0.1.0" });

use exports::keyward::plugin::kms::*;
use serde_json::{Value, json};

use azure::{Plane, bad_request, call, data_url};
use convert::{
    b64url, crypt_body, deleted_item, deleted_key, instance, key_item, ops_to_azure, remote_key,
    tags_to_azure, unb64url, vault,
};

/// Data-plane API version. Every Managed HSM supports it.
const KEYS_API: &str = "7.5";
/// Resource Manager API version for Microsoft.KeyVault/managedHSMs and vaults.
const ARM_API: &str = "2023-07-01";

struct Connector;

fn instance_uri(conn: &Connection) -> Result<&str, KmsError> {
    conn.instance
        .as_deref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad_request("the group is not bound to an instance yet"))
}

/// Every item of an ARM list, following `nextLink`s.
fn arm_list(conn: &Connection, resource_type: &str) -> Result<Vec<Value>, KmsError> {
    let mut url = format!(
        "{}/subscriptions/{}/providers/Microsoft.KeyVault/{resource_type}?api-version={ARM_API}",
        conn.endpoints.management.trim_end_matches('/'),
        conn.subscription_id
    );
    let mut out = Vec::new();
    loop {
        let page = call(conn, Plane::Management, "GET", &url, None)?;
        out.extend(page["value"].as_array().into_iter().flatten().cloned());
        match page["nextLink"].as_str().filter(|s| !s.is_empty()) {
            Some(next) => url = next.to_string(),
            None => return Ok(out),
        }
    }
}

/// Follows `nextLink`s (only those on the same host) and collects every page.
fn page_url(conn: &Connection, page: Option<String>, first: String) -> Result<String, KmsError> {
    match page {
        None => Ok(first),
        Some(next) => {
            let base = instance_uri(conn)?;
            if !same_origin(&next, base) {
                return Err(bad_request("the continuation link points to another host"));
            }
            Ok(next)
        }
    }
}

fn same_origin(a: &str, b: &str) -> bool {
    fn origin(u: &str) -> &str {
        let rest = u.split_once("://").map_or(u, |(_, r)| r);
        rest.split('/').next().unwrap_or_default()
    }
    u_scheme(a) == u_scheme(b) && origin(a).eq_ignore_ascii_case(origin(b))
}

fn u_scheme(u: &str) -> &str {
    u.split_once("://").map_or("", |(s, _)| s)
}

fn key_path(key: &KeyRef) -> String {
    format!("keys/{}/{}", key.name, key.version.as_deref().unwrap_or(""))
}

impl Guest for Connector {
    fn list_instances(conn: Connection) -> Result<Vec<Instance>, KmsError> {
        let mut out: Vec<Instance> = arm_list(&conn, "managedHSMs")?
            .iter()
            .map(instance)
            .collect();
        // Access policies name principals by object id, which the ARM token carries.
        let me = token::get(&conn, Plane::Management)
            .ok()
            .and_then(|t| token::object_id(&t));
        out.extend(
            arm_list(&conn, "vaults")?
                .iter()
                .map(|v| vault(v, me.as_deref())),
        );
        Ok(out)
    }

    fn check_instance(conn: Connection) -> Result<(), KmsError> {
        let url = data_url(instance_uri(&conn)?, "keys", &[("maxresults", "1")]);
        call(&conn, Plane::Hsm, "GET", &url, None).map(|_| ())
    }

    fn list_keys(conn: Connection, page: Option<String>) -> Result<KeyPage, KmsError> {
        let first = data_url(instance_uri(&conn)?, "keys", &[("maxresults", "25")]);
        let v = call(
            &conn,
            Plane::Hsm,
            "GET",
            &page_url(&conn, page, first)?,
            None,
        )?;
        Ok(KeyPage {
            items: v["value"]
                .as_array()
                .into_iter()
                .flatten()
                .map(key_item)
                .collect(),
            next: v["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    fn list_versions(
        conn: Connection,
        name: String,
        page: Option<String>,
    ) -> Result<KeyPage, KmsError> {
        let first = data_url(
            instance_uri(&conn)?,
            &format!("keys/{name}/versions"),
            &[("maxresults", "25")],
        );
        let v = call(
            &conn,
            Plane::Hsm,
            "GET",
            &page_url(&conn, page, first)?,
            None,
        )?;
        Ok(KeyPage {
            items: v["value"]
                .as_array()
                .into_iter()
                .flatten()
                .map(key_item)
                .collect(),
            next: v["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    fn get_key(conn: Connection, key: KeyRef) -> Result<RemoteKey, KmsError> {
        let v = call(
            &conn,
            Plane::Hsm,
            "GET",
            &data_url(instance_uri(&conn)?, &key_path(&key), &[]),
            None,
        )?;
        remote_key(&v)
    }

    fn create_key(conn: Connection, req: CreateRequest) -> Result<RemoteKey, KmsError> {
        let mut body = json!({
            "key_ops": ops_to_azure(&req.ops),
            "attributes": attributes(req.enabled, req.not_before, req.expires),
            "tags": tags_to_azure(&req.tags),
        });
        use keyward::plugin::types::{Curve, KeyType};
        // Standard vaults hold software keys; Premium vaults and Managed HSMs get HSM keys.
        let soft = conn.kind == InstanceKind::Standard;
        match req.spec.key_type {
            KeyType::Rsa => {
                body["kty"] = json!(if soft { "RSA" } else { "RSA-HSM" });
                body["key_size"] = json!(req.spec.size.unwrap_or(2048));
            }
            KeyType::Ec => {
                body["kty"] = json!(if soft { "EC" } else { "EC-HSM" });
                body["crv"] = json!(match req.spec.curve {
                    Some(Curve::P384) => "P-384",
                    Some(Curve::P521) => "P-521",
                    Some(Curve::Secp256k1) => "P-256K",
                    _ => "P-256",
                });
            }
            KeyType::Aes if conn.kind != InstanceKind::Managed => {
                return Err(bad_request(
                    "Key Vault vaults hold no symmetric keys; AES keys need a Managed HSM",
                ));
            }
            KeyType::Aes => {
                body["kty"] = json!("oct-HSM");
                body["key_size"] = json!(req.spec.size.unwrap_or(256));
            }
        }
        let url = data_url(
            instance_uri(&conn)?,
            &format!("keys/{}/create", req.name),
            &[],
        );
        remote_key(&call(&conn, Plane::Hsm, "POST", &url, Some(body))?)
    }

    fn import_key(conn: Connection, req: ImportRequest) -> Result<RemoteKey, KmsError> {
        let jwk = convert::import_jwk(&req.material, &req.ops, conn.kind);
        let body = json!({
            "key": jwk,
            "Hsm": req.hsm,
            "attributes": attributes(req.enabled, req.not_before, req.expires),
            "tags": tags_to_azure(&req.tags),
        });
        let url = data_url(instance_uri(&conn)?, &format!("keys/{}", req.name), &[]);
        remote_key(&call(&conn, Plane::Hsm, "PUT", &url, Some(body))?)
    }

    fn update_key(
        conn: Connection,
        key: KeyRef,
        req: UpdateRequest,
    ) -> Result<RemoteKey, KmsError> {
        let mut attrs = serde_json::Map::new();
        if let Some(e) = req.enabled {
            attrs.insert("enabled".into(), json!(e));
        }
        if let Some(n) = req.not_before {
            attrs.insert("nbf".into(), json!(n));
        }
        if let Some(x) = req.expires {
            attrs.insert("exp".into(), json!(x));
        }
        let mut body = json!({"attributes": attrs});
        if let Some(ops) = &req.ops {
            body["key_ops"] = json!(ops_to_azure(ops));
        }
        if let Some(tags) = &req.tags {
            body["tags"] = json!(tags_to_azure(tags));
        }
        let url = data_url(instance_uri(&conn)?, &key_path(&key), &[]);
        remote_key(&call(&conn, Plane::Hsm, "PATCH", &url, Some(body))?)
    }

    fn rotate_key(conn: Connection, name: String) -> Result<RemoteKey, KmsError> {
        let url = data_url(instance_uri(&conn)?, &format!("keys/{name}/rotate"), &[]);
        remote_key(&call(&conn, Plane::Hsm, "POST", &url, Some(json!({})))?)
    }

    fn delete_key(conn: Connection, name: String) -> Result<DeletedKey, KmsError> {
        let url = data_url(instance_uri(&conn)?, &format!("keys/{name}"), &[]);
        deleted_key(&call(&conn, Plane::Hsm, "DELETE", &url, None)?)
    }

    fn list_deleted(conn: Connection, page: Option<String>) -> Result<DeletedPage, KmsError> {
        let first = data_url(instance_uri(&conn)?, "deletedkeys", &[("maxresults", "25")]);
        let v = call(
            &conn,
            Plane::Hsm,
            "GET",
            &page_url(&conn, page, first)?,
            None,
        )?;
        Ok(DeletedPage {
            items: v["value"]
                .as_array()
                .into_iter()
                .flatten()
                .map(deleted_item)
                .collect(),
            next: v["nextLink"]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_string),
        })
    }

    fn get_deleted(conn: Connection, name: String) -> Result<DeletedKey, KmsError> {
        let url = data_url(instance_uri(&conn)?, &format!("deletedkeys/{name}"), &[]);
        deleted_key(&call(&conn, Plane::Hsm, "GET", &url, None)?)
    }

    fn recover_key(conn: Connection, name: String) -> Result<RemoteKey, KmsError> {
        let url = data_url(
            instance_uri(&conn)?,
            &format!("deletedkeys/{name}/recover"),
            &[],
        );
        remote_key(&call(&conn, Plane::Hsm, "POST", &url, Some(json!({})))?)
    }

    fn purge_key(conn: Connection, name: String) -> Result<(), KmsError> {
        let url = data_url(instance_uri(&conn)?, &format!("deletedkeys/{name}"), &[]);
        call(&conn, Plane::Hsm, "DELETE", &url, None).map(|_| ())
    }

    fn backup_key(conn: Connection, name: String) -> Result<Vec<u8>, KmsError> {
        let url = data_url(instance_uri(&conn)?, &format!("keys/{name}/backup"), &[]);
        let v = call(&conn, Plane::Hsm, "POST", &url, Some(json!({})))?;
        unb64url(v["value"].as_str().unwrap_or_default())
            .ok_or_else(|| azure::other("the backup is not base64url"))
    }

    fn restore_key(conn: Connection, backup: Vec<u8>) -> Result<RemoteKey, KmsError> {
        let url = data_url(instance_uri(&conn)?, "keys/restore", &[]);
        remote_key(&call(
            &conn,
            Plane::Hsm,
            "POST",
            &url,
            Some(json!({"value": b64url(&backup)})),
        )?)
    }

    fn encrypt(conn: Connection, key: KeyRef, req: CryptRequest) -> Result<CryptResult, KmsError> {
        crypt(&conn, &key, "encrypt", &req)
    }

    fn decrypt(conn: Connection, key: KeyRef, req: CryptRequest) -> Result<CryptResult, KmsError> {
        crypt(&conn, &key, "decrypt", &req)
    }

    fn wrap_key(conn: Connection, key: KeyRef, req: CryptRequest) -> Result<CryptResult, KmsError> {
        crypt(&conn, &key, "wrapkey", &req)
    }

    fn unwrap_key(
        conn: Connection,
        key: KeyRef,
        req: CryptRequest,
    ) -> Result<CryptResult, KmsError> {
        crypt(&conn, &key, "unwrapkey", &req)
    }

    fn sign(conn: Connection, key: KeyRef, req: SignRequest) -> Result<SignResult, KmsError> {
        let url = data_url(
            instance_uri(&conn)?,
            &format!("{}/sign", key_path(&key)),
            &[],
        );
        let v = call(
            &conn,
            Plane::Hsm,
            "POST",
            &url,
            Some(json!({"alg": req.algorithm, "value": b64url(&req.digest)})),
        )?;
        Ok(SignResult {
            key_id: v["kid"].as_str().unwrap_or_default().to_string(),
            signature: unb64url(v["value"].as_str().unwrap_or_default())
                .ok_or_else(|| azure::other("the signature is not base64url"))?,
        })
    }

    fn verify(conn: Connection, key: KeyRef, req: VerifyRequest) -> Result<bool, KmsError> {
        let url = data_url(
            instance_uri(&conn)?,
            &format!("{}/verify", key_path(&key)),
            &[],
        );
        let body = json!({"alg": req.algorithm, "digest": b64url(&req.digest), "value": b64url(&req.signature)});
        Ok(call(&conn, Plane::Hsm, "POST", &url, Some(body))?["value"]
            .as_bool()
            .unwrap_or(false))
    }
}

fn crypt(
    conn: &Connection,
    key: &KeyRef,
    op: &str,
    req: &CryptRequest,
) -> Result<CryptResult, KmsError> {
    let url = data_url(instance_uri(conn)?, &format!("{}/{op}", key_path(key)), &[]);
    let v = call(conn, Plane::Hsm, "POST", &url, Some(crypt_body(req)))?;
    let field = |name: &str| v[name].as_str().and_then(unb64url);
    Ok(CryptResult {
        key_id: v["kid"].as_str().unwrap_or_default().to_string(),
        value: field("value").ok_or_else(|| azure::other("the result is not base64url"))?,
        iv: field("iv"),
        tag: field("tag"),
    })
}

fn attributes(enabled: bool, not_before: Option<i64>, expires: Option<i64>) -> Value {
    let mut a = json!({"enabled": enabled});
    if let Some(n) = not_before {
        a["nbf"] = json!(n);
    }
    if let Some(x) = expires {
        a["exp"] = json!(x);
    }
    a
}

#[cfg(target_arch = "wasm32")]
export!(Connector);
