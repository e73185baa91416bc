//! The admin API (plain HTTP on its own port, not reachable with Azure tokens): configure the
//! directory, subscriptions, HSMs and role assignments; seed keys; advance the clock; set
//! faults; read request counts.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::config::{HsmConfig, VaultConfig};
use crate::crypto::{Curve, Kty, Material};
use crate::faults::FaultConfig;
use crate::shared::Shared;
use crate::state::{KeyRecord, KeyVersion, Kind, Role, new_version_id};

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route(
            "/admin/health",
            get(|| async { Json(json!({"status": "ok"})) }),
        )
        .route("/admin/ca.pem", get(ca))
        .route("/admin/info", get(info))
        .route("/admin/tenants", post(add_tenant))
        .route("/admin/applications", post(add_application))
        .route(
            "/admin/applications/{client_id}",
            axum::routing::delete(remove_application),
        )
        .route("/admin/subscriptions", post(add_subscription))
        .route("/admin/hsms", post(add_hsm))
        .route("/admin/vaults", post(add_vault))
        .route(
            "/admin/access-policies",
            axum::routing::put(set_access_policy),
        )
        .route(
            "/admin/role-assignments",
            post(assign_role).delete(revoke_role),
        )
        .route("/admin/hsms/{name}/seed", post(seed))
        .route("/admin/clock", get(clock))
        .route("/admin/clock/advance", post(advance_clock))
        .route(
            "/admin/faults",
            get(get_faults).put(put_faults).delete(clear_faults),
        )
        .route("/admin/counters", get(counters).delete(reset_counters))
}

struct AdminError(StatusCode, String);

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> AdminError {
    AdminError(StatusCode::BAD_REQUEST, msg.into())
}

type AdminResult = Result<Json<Value>, AdminError>;

/// JSON bodies with a readable error instead of axum's plain-text rejection.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(bytes).map_err(|e| bad(format!("invalid request body: {e}")))
}

async fn ca(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        s.ca_pem.clone(),
    )
}

async fn info(State(s): State<Arc<Shared>>) -> Json<Value> {
    let world = s.world.read().unwrap();
    let entry = |h: &crate::state::Hsm| json!({"name": h.name, "uri": s.store_uri(h), "subscription": h.subscription, "keys": h.keys.len(), "deleted_keys": h.deleted.len()});
    let hsms: Vec<Value> = world
        .hsms
        .values()
        .filter(|h| !h.kind.is_vault())
        .map(entry)
        .collect();
    let vaults: Vec<Value> = world
        .hsms
        .values()
        .filter(|h| h.kind.is_vault())
        .map(|h| {
            let mut v = entry(h);
            v["sku"] = json!(if h.kind == Kind::Premium {
                "premium"
            } else {
                "standard"
            });
            v
        })
        .collect();
    Json(json!({
        "authority": s.base_url,
        "management": s.base_url,
        "hsm_domain": s.settings.hsm_domain,
        "hsm_resource": s.hsm_resource(),
        "tenants": world.tenants,
        "subscriptions": world.subscriptions.keys().collect::<Vec<_>>(),
        "hsms": hsms,
        "vaults": vaults,
        "vault_resource": s.vault_resource(),
        "clock_offset_secs": s.clock.offset(),
    }))
}

fn changed(s: &Shared, r: Result<(), String>) -> AdminResult {
    r.map_err(bad)?;
    s.persist();
    Ok(Json(json!({"ok": true})))
}

async fn add_tenant(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    #[derive(Deserialize)]
    struct T {
        id: String,
    }
    let t: T = body(&b)?;
    let r = s.world.write().unwrap().add_tenant(&t.id);
    changed(&s, r)
}

async fn add_application(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let a: crate::config::ApplicationConfig = body(&b)?;
    let r = s.world.write().unwrap().add_app(
        &a.tenant,
        &a.client_id,
        &a.client_secret,
        a.name.as_deref(),
    );
    changed(&s, r)
}

async fn remove_application(
    State(s): State<Arc<Shared>>,
    Path(client_id): Path<String>,
) -> AdminResult {
    let removed = s.world.write().unwrap().apps.remove(&client_id).is_some();
    if !removed {
        return Err(AdminError(
            StatusCode::NOT_FOUND,
            format!("no application {client_id}"),
        ));
    }
    changed(&s, Ok(()))
}

async fn add_subscription(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let sub: crate::config::SubscriptionConfig = body(&b)?;
    let r = {
        let mut w = s.world.write().unwrap();
        w.add_subscription(&sub.id, &sub.tenant, sub.name.as_deref())
            .and_then(|_| {
                sub.readers
                    .iter()
                    .try_for_each(|r| w.grant_reader(&sub.id, r))
            })
    };
    changed(&s, r)
}

async fn add_hsm(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let h: HsmConfig = body(&b)?;
    let r = s.world.write().unwrap().add_hsm(&h);
    changed(&s, r)
}

async fn add_vault(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let v: VaultConfig = body(&b)?;
    let r = s.world.write().unwrap().add_vault(&v);
    changed(&s, r)
}

/// `{"vault": name, "principal": client_id, "keys": [...]}`: replaces one application's
/// access policy (an empty list removes it).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyChange {
    vault: String,
    principal: String,
    keys: Vec<String>,
}

async fn set_access_policy(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let p: PolicyChange = body(&b)?;
    let r = {
        let mut w = s.world.write().unwrap();
        match w.hsms.get_mut(&p.vault) {
            Some(v) => v.set_access_policy(&p.principal, &p.keys),
            None => Err(format!("no vault {}", p.vault)),
        }
    };
    changed(&s, r)
}

/// `{"principal": client_id, "role": "...", "hsm": name}` or `{"principal", "role": "Reader", "subscription": id}`.
#[derive(Deserialize)]
struct Assignment {
    principal: String,
    role: String,
    hsm: Option<String>,
    subscription: Option<String>,
}

fn apply_assignment(s: &Shared, a: Assignment, grant: bool) -> Result<(), String> {
    let mut w = s.world.write().unwrap();
    match (a.hsm, a.subscription) {
        (Some(hsm), None) => {
            let h = w
                .hsms
                .get_mut(&hsm)
                .ok_or_else(|| format!("no HSM or vault {hsm}"))?;
            if grant {
                h.grant(&a.principal, &a.role)
            } else {
                let role = Role::parse(&a.role)?;
                h.roles.entry(a.principal).or_default().remove(&role);
                Ok(())
            }
        }
        (None, Some(sub)) => {
            if !["Reader", "Contributor", "Owner"].contains(&a.role.as_str()) {
                return Err(format!(
                    "subscription role '{}' is not one of Reader, Contributor, Owner",
                    a.role
                ));
            }
            let sub = w
                .subscriptions
                .get_mut(&sub)
                .ok_or_else(|| format!("no subscription {sub}"))?;
            if grant {
                sub.readers.insert(a.principal);
            } else {
                sub.readers.remove(&a.principal);
            }
            Ok(())
        }
        _ => Err("give exactly one of 'hsm' and 'subscription'".into()),
    }
}

async fn assign_role(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let a: Assignment = body(&b)?;
    let r = apply_assignment(&s, a, true);
    changed(&s, r)
}

async fn revoke_role(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let a: Assignment = body(&b)?;
    let r = apply_assignment(&s, a, false);
    changed(&s, r)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Seed {
    count: usize,
    #[serde(default = "seed_prefix")]
    prefix: String,
    #[serde(default = "seed_kty")]
    kty: String,
    key_size: Option<u32>,
    crv: Option<String>,
}

fn seed_prefix() -> String {
    "seed".into()
}
fn seed_kty() -> String {
    "oct-HSM".into()
}

/// Creates `count` keys named `{prefix}-{n:05}`. AES keys by default: they are cheap, and
/// seeding is about having many keys to list, sync and back up.
async fn seed(
    State(s): State<Arc<Shared>>,
    Path(name): Path<String>,
    b: axum::body::Bytes,
) -> AdminResult {
    let req: Seed = body(&b)?;
    if req.count == 0 || req.count > 100_000 {
        return Err(bad("count must be 1 to 100000"));
    }
    let kind = s
        .world
        .read()
        .unwrap()
        .hsms
        .get(&name)
        .map(|h| h.kind)
        .ok_or_else(|| AdminError(StatusCode::NOT_FOUND, format!("no HSM or vault {name}")))?;
    let (kty, protected) = crate::keys::protection(kind, &req.kty, false).map_err(|e| {
        bad(e.body["error"]["message"]
            .as_str()
            .unwrap_or("bad key type")
            .to_string())
    })?;
    let curve = match kty {
        Kty::Ec => Some(
            Curve::parse(req.crv.as_deref().unwrap_or("P-256")).map_err(|e| bad(e.to_string()))?,
        ),
        _ => None,
    };
    let count = req.count;
    let materials = tokio::task::spawn_blocking(move || -> Result<Vec<Material>, String> {
        (0..count)
            .map(|_| match kty {
                Kty::Rsa => Material::generate_rsa(req.key_size.unwrap_or(2048), None)
                    .map_err(|e| e.to_string()),
                Kty::Ec => Ok(Material::generate_ec(curve.expect("curve"))),
                Kty::Oct => {
                    Material::generate_oct(req.key_size.unwrap_or(256)).map_err(|e| e.to_string())
                }
            })
            .collect()
    })
    .await
    .expect("seeding does not panic")
    .map_err(bad)?;
    let now = s.clock.now();
    let mut names = Vec::with_capacity(count);
    {
        let mut w = s.world.write().unwrap();
        let h = w.hsms.get_mut(&name).expect("checked");
        let start = h.keys.len();
        for (i, material) in materials.into_iter().enumerate() {
            let key_name = format!("{}-{:05}", req.prefix, start + i + 1);
            let ops = match kty {
                Kty::Rsa => vec![
                    "encrypt",
                    "decrypt",
                    "sign",
                    "verify",
                    "wrapKey",
                    "unwrapKey",
                ],
                Kty::Ec => vec!["sign", "verify"],
                Kty::Oct => vec!["encrypt", "decrypt", "wrapKey", "unwrapKey"],
            };
            let version = KeyVersion {
                id: new_version_id(),
                material,
                ops: ops.into_iter().map(String::from).collect(),
                enabled: true,
                nbf: None,
                exp: None,
                created: now,
                updated: now,
                tags: Default::default(),
                exportable: false,
                hsm: protected,
                release_policy: None,
            };
            h.keys.insert(
                &key_name,
                KeyRecord {
                    versions: vec![version],
                    rotation_policy: None,
                },
            );
            names.push(key_name);
        }
    }
    s.persist();
    Ok(Json(
        json!({"created": names.len(), "first": names.first(), "last": names.last()}),
    ))
}

async fn clock(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"now": s.clock.now(), "offset_secs": s.clock.offset()}))
}

async fn advance_clock(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    #[derive(Deserialize)]
    struct Advance {
        seconds: i64,
    }
    let a: Advance = body(&b)?;
    if a.seconds < 0 {
        return Err(bad("the clock only moves forward"));
    }
    s.clock.advance(a.seconds);
    let now = s.clock.now();
    let purged: usize = s
        .world
        .write()
        .unwrap()
        .hsms
        .values_mut()
        .map(|h| h.purge_expired(now))
        .sum();
    if purged > 0 {
        s.persist();
    }
    Ok(Json(
        json!({"now": now, "offset_secs": s.clock.offset(), "purged": purged}),
    ))
}

async fn get_faults(State(s): State<Arc<Shared>>) -> Json<FaultConfig> {
    Json(s.faults.config())
}

async fn put_faults(State(s): State<Arc<Shared>>, b: axum::body::Bytes) -> AdminResult {
    let f: FaultConfig = body(&b)?;
    s.faults.set(f).map_err(bad)?;
    Ok(Json(json!({"ok": true})))
}

async fn clear_faults(State(s): State<Arc<Shared>>) -> AdminResult {
    s.faults.set(FaultConfig::default()).map_err(bad)?;
    Ok(Json(json!({"ok": true})))
}

async fn counters(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({"requests": s.faults.counts(), "injected": s.faults.injected()}))
}

async fn reset_counters(State(s): State<Arc<Shared>>) -> AdminResult {
    s.faults.reset_counts();
    Ok(Json(json!({"ok": true})))
}
