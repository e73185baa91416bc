//! What a workflow script can do, and nothing more. Functions are grouped in modules:
//!
//! - `hsm::*`: calls to the group's external key manager through its connector plugin
//!   (`instances`, `check`, `list_keys`, `list_deleted`, `get_key`, `find_key`,
//!   `find_deleted`, `create_key`, `create_kek`, `import_key`, `update_key`, `delete_key`,
//!   `recover_key`, `purge_key`, `backup_key`, `restore_key`);
//! - `byok::wrap`: a BYOK transfer blob of a key for a key-exchange key;
//! - `keys::*`: the group's virtual keys in the catalog (`linked`, `adopt` and
//!   `adopt_listed` (bulk), `record`,
//!   `save`, `get`, `set_remote_state`, `refresh`, `escrow`, `put_escrow`, `remove`);
//! - `policy::check`, `audit::record`, and the globals `log`, `progress` and `now`.
//!
//! Host functions block on the daemon's runtime (scripts run on a blocking thread) and never
//! past the run's deadline. Their errors reach the script as catchable maps
//! `#{kind, code, message, status}`.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rhai::{
    Array, Dynamic, Engine, EvalAltResult, FnPtr, ImmutableString, Map, Module, NativeCallContext,
    Position,
};
use serde_json::{Value, json};

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::groups::Group;
use crate::catalog::sobjects::{self, Creator, ObjType, SObject, escrow_context};
use crate::catalog::{CatalogError, new_id};
use crate::kms::{KmsError, Link};
use crate::plugins::kms::{
    CreateRequest, Curve, DeletedKey, DeletedKeyItem, ImportRequest, Instance, KeyItem,
    KeyMaterial, KeyOp, KeyRef, KeySpec, KeyType, PublicKey, RemoteKey, Tag, UpdateRequest,
};
use crate::time::format_dsm;

use super::values::{from_json, to_json};
use super::{PendingKey, Progress, RunRequest, Services};

type RhaiResult<T> = Result<T, Box<EvalAltResult>>;

/// Key material handed to a run (import, copy). Scripts can pass it to `hsm::import_key` or
/// `byok::wrap` but never see its bytes.
#[derive(Clone)]
pub struct Secret(pub Arc<keyward_crypto::Material>);

/// A provider backup (all versions of a key), opaque to scripts.
#[derive(Clone)]
pub struct Backup(Arc<Vec<u8>>);

/// A BYOK transfer blob made for one key-exchange key.
#[derive(Clone)]
pub struct ByokBlob {
    kek_id: String,
    spec: KeySpec,
    blob: Arc<Vec<u8>>,
}

/// An error a host function raised: what the key manager or the catalog said.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HostError {
    /// `not_found`, `unauthorized`, `forbidden`, `conflict`, `throttled`, `bad_request`,
    /// `unavailable`, `other`, `invalid` (misuse by the script or the link), `internal`.
    pub kind: String,
    pub code: String,
    pub message: String,
    pub status: Option<u16>,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl HostError {
    pub fn new(kind: &str, message: impl Into<String>) -> HostError {
        HostError {
            kind: kind.into(),
            code: String::new(),
            message: message.into(),
            status: None,
        }
    }

    fn to_dynamic(&self) -> Dynamic {
        from_json(&json!({
            "kind": self.kind, "code": self.code, "message": self.message, "status": self.status,
        }))
    }

    /// A thrown map with a string `kind` and `message` (from a host function, or a script
    /// that wants its failure classified).
    pub fn from_dynamic(d: &Dynamic) -> Option<HostError> {
        let v = to_json(d);
        Some(HostError {
            kind: v["kind"].as_str()?.to_string(),
            message: v["message"].as_str()?.to_string(),
            code: v["code"].as_str().unwrap_or_default().to_string(),
            status: v["status"].as_u64().map(|s| s as u16),
        })
    }

    fn throw(self) -> Box<EvalAltResult> {
        Box::new(EvalAltResult::ErrorRuntime(
            self.to_dynamic(),
            Position::NONE,
        ))
    }
}

impl From<KmsError> for HostError {
    fn from(e: KmsError) -> Self {
        let message = e.to_string();
        match e {
            KmsError::Remote {
                kind, status, code, ..
            } => HostError {
                kind: kind.as_str().into(),
                code,
                message,
                status,
            },
            KmsError::NotLinked | KmsError::Incomplete(_) | KmsError::UnknownKind(_) => {
                HostError::new("invalid", message)
            }
            KmsError::Plugin(_) => HostError::new("unavailable", message),
            KmsError::Secrets(_) => HostError::new("internal", message),
        }
    }
}

impl From<sqlx::Error> for HostError {
    fn from(e: sqlx::Error) -> Self {
        HostError::from(CatalogError::from(e))
    }
}

impl From<CatalogError> for HostError {
    fn from(e: CatalogError) -> Self {
        if e.is_unique_violation() {
            return HostError::new("conflict", "the name is already taken in the catalog");
        }
        tracing::error!("catalog error in a workflow: {e}");
        HostError::new("internal", "catalog error (see the daemon log)")
    }
}

fn invalid(message: impl Into<String>) -> Box<EvalAltResult> {
    HostError::new("invalid", message).throw()
}

/// Everything a run's host functions share.
pub struct RunContext {
    services: Services,
    rt: tokio::runtime::Handle,
    run_id: String,
    account: String,
    group: Option<Arc<Group>>,
    link: Option<Link>,
    principal: Principal,
    deadline: Instant,
    concurrency: usize,
    pending: Mutex<Option<PendingKey>>,
    recorded: Mutex<Option<String>>,
    progress: Arc<Progress>,
    log: Mutex<Vec<Value>>,
    /// What the key manager said about keys in this run, by key id: `keys::record` and
    /// `keys::refresh` take the script's map but trust only this.
    remotes: Mutex<HashMap<String, RemoteKey>>,
}

const MAX_LOG_ENTRIES: usize = 2_000;
const ADOPT_BATCH: usize = 100;

impl RunContext {
    pub fn new(
        services: Services,
        rt: tokio::runtime::Handle,
        run_id: &str,
        req: &RunRequest,
        deadline: Instant,
        concurrency: usize,
        progress: Arc<Progress>,
    ) -> RunContext {
        RunContext {
            services,
            rt,
            run_id: run_id.to_string(),
            account: req.account.clone(),
            group: req.group.clone(),
            link: req.link.clone(),
            principal: req.principal.clone(),
            deadline,
            concurrency: concurrency.max(1),
            pending: Mutex::new(req.pending.clone()),
            recorded: Mutex::new(None),
            progress,
            log: Mutex::new(Vec::new()),
            remotes: Mutex::new(HashMap::new()),
        }
    }

    pub fn log(&self, message: &str) {
        let mut log = self.log.lock().unwrap();
        if log.len() < MAX_LOG_ENTRIES {
            log.push(json!({"at": format_dsm(self.services.clock.now()), "message": message}));
        } else if log.len() == MAX_LOG_ENTRIES {
            log.push(json!({"at": format_dsm(self.services.clock.now()), "message": "(further entries left out)"}));
        }
        tracing::debug!(run = %self.run_id, "{message}");
    }

    pub fn log_json(&self) -> Value {
        Value::Array(self.log.lock().unwrap().clone())
    }

    pub fn recorded(&self) -> Option<String> {
        self.recorded.lock().unwrap().clone()
    }

    /// Runs `fut` on the daemon's runtime, but not past the run's deadline.
    fn block<T>(&self, fut: impl Future<Output = T>) -> RhaiResult<T> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        self.rt
            .block_on(tokio::time::timeout_at(deadline, fut))
            .map_err(|_| {
                Box::new(EvalAltResult::ErrorTerminated(
                    "time limit".into(),
                    Position::NONE,
                ))
            })
    }

    fn link(&self) -> RhaiResult<&Link> {
        self.link
            .as_ref()
            .ok_or_else(|| invalid("this run has no external key manager link"))
    }

    fn group(&self) -> RhaiResult<&Arc<Group>> {
        self.group
            .as_ref()
            .ok_or_else(|| invalid("this run belongs to no group"))
    }

    /// A connector call; a refusal becomes a catchable error map.
    fn kms<T>(&self, fut: impl Future<Output = Result<T, KmsError>>) -> RhaiResult<T> {
        self.block(fut)?.map_err(|e| HostError::from(e).throw())
    }

    fn catalog<T>(&self, fut: impl Future<Output = Result<T, CatalogError>>) -> RhaiResult<T> {
        self.block(fut)?.map_err(|e| HostError::from(e).throw())
    }

    fn remember(&self, k: &RemoteKey) -> Dynamic {
        self.remotes.lock().unwrap().insert(k.id.clone(), k.clone());
        from_json(&key_json(k))
    }

    /// The key manager's own record of a key map the script passes back.
    fn remembered(&self, key: &Map) -> RhaiResult<RemoteKey> {
        let id = key
            .get("id")
            .map(|d| d.to_string())
            .ok_or_else(|| invalid("pass a key returned by an hsm:: function"))?;
        self.remotes
            .lock()
            .unwrap()
            .get(&id)
            .cloned()
            .ok_or_else(|| invalid("pass a key returned by an hsm:: function of this run"))
    }

    /// Writes an audit event of the run's principal (outside any transaction).
    fn audit(&self, action: &str, object: Option<(&str, &str)>, details: Value) {
        let mut e = Event::new(
            Some(&self.account),
            &self.principal,
            action,
            self.services.clock.now(),
        )
        .details(json!({"workflow_run": self.run_id, "details": details}));
        if let Some((kind, id)) = object {
            e = e.object(kind, id);
        }
        let audit = self.services.audit.clone();
        self.rt.block_on(audit.later(e));
    }

    fn forget(&self, kid: &str) {
        (self.services.forget_key)(kid);
    }

    fn creator(&self) -> Creator {
        match &self.principal {
            Principal::User { user_id, .. } => Creator::User(user_id.clone()),
            Principal::App { app_id, .. } => Creator::App(app_id.clone()),
        }
    }
}

/// Registers the opaque types (for every engine, so compiled scripts can name them).
pub fn register_types(engine: &mut Engine) {
    engine
        .register_type_with_name::<Secret>("Secret")
        .register_fn("to_string", |_: &mut Secret| "<secret>".to_string())
        .register_fn("to_debug", |_: &mut Secret| "<secret>".to_string())
        .register_type_with_name::<Backup>("Backup")
        .register_fn("to_string", |_: &mut Backup| "<backup>".to_string())
        .register_fn("to_debug", |_: &mut Backup| "<backup>".to_string())
        .register_type_with_name::<ByokBlob>("ByokBlob")
        .register_fn("to_string", |_: &mut ByokBlob| "<byok blob>".to_string())
        .register_fn("to_debug", |_: &mut ByokBlob| "<byok blob>".to_string());
}

/// Registers the host API of one run.
pub fn register(engine: &mut Engine, ctx: Arc<RunContext>) {
    let c = ctx.clone();
    engine.on_print(move |text| c.log(text));
    let c = ctx.clone();
    engine.on_debug(move |text, _, pos| c.log(&format!("debug ({pos}): {text}")));
    let c = ctx.clone();
    engine.register_fn("log", move |text: ImmutableString| c.log(&text));
    let c = ctx.clone();
    engine.register_fn("progress", move |counters: Map| {
        for (k, v) in counters {
            if let Ok(i) = v.as_int() {
                c.progress.set(&k, i);
            }
        }
    });
    let c = ctx.clone();
    engine.register_fn("now", move || c.services.clock.now());

    engine.register_static_module("hsm", hsm_module(&ctx).into());
    engine.register_static_module("byok", byok_module().into());
    engine.register_static_module("keys", keys_module(&ctx).into());
    engine.register_static_module("policy", policy_module(&ctx).into());
    engine.register_static_module("audit", audit_module(&ctx).into());
}

// ---------------------------------------------------------------------------------------
// hsm::

fn hsm_module(ctx: &Arc<RunContext>) -> Module {
    let mut m = Module::new();
    let c = ctx.clone();
    m.set_native_fn("instances", move || {
        let link = c.link()?;
        let list = c.kms(c.services.kms.list_instances(link))?;
        c.log(&format!("listed {} instances", list.len()));
        Ok(Dynamic::from_array(
            list.iter().map(|i| from_json(&instance_json(i))).collect(),
        ))
    });
    let c = ctx.clone();
    m.set_native_fn("check", move || {
        let link = c.link()?;
        c.kms(c.services.kms.check_instance(link))?;
        c.log("the instance answers");
        Ok(())
    });
    let c = ctx.clone();
    m.set_native_fn("list_keys", move || {
        let link = c.link()?;
        let items = c.kms(c.services.kms.list_all_keys(link))?;
        c.log(&format!("listed {} keys", items.len()));
        Ok(Dynamic::from_array(
            items.iter().map(|i| from_json(&item_json(i))).collect(),
        ))
    });
    let c = ctx.clone();
    m.set_native_fn("list_deleted", move || {
        let link = c.link()?;
        let items = c.kms(c.services.kms.list_all_deleted(link))?;
        c.log(&format!("listed {} soft-deleted keys", items.len()));
        Ok(Dynamic::from_array(
            items
                .iter()
                .map(|i| from_json(&deleted_item_json(i)))
                .collect(),
        ))
    });
    let c = ctx.clone();
    m.set_native_fn("get_key", move |name: ImmutableString| {
        let link = c.link()?;
        let key = KeyRef {
            name: name.to_string(),
            version: None,
        };
        let k = c.kms(c.services.kms.get_key(link, &key))?;
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn("find_key", move |name: ImmutableString| {
        let link = c.link()?;
        Ok(match c.kms(c.services.kms.find_key(link, &name))? {
            Some(k) => c.remember(&k),
            None => Dynamic::UNIT,
        })
    });
    let c = ctx.clone();
    m.set_native_fn("find_deleted", move |name: ImmutableString| {
        let link = c.link()?;
        Ok(match c.kms(c.services.kms.find_deleted(link, &name))? {
            Some(d) => from_json(&deleted_json(&d)),
            None => Dynamic::UNIT,
        })
    });
    let c = ctx.clone();
    m.set_native_fn("create_key", move |spec: Map| {
        let link = c.link()?;
        let v = to_json(&Dynamic::from_map(spec));
        let req = CreateRequest {
            name: str_field(&v, "name")?,
            spec: spec_from_json(&v)?,
            ops: ops_from_json(&v["ops"])?,
            enabled: v["enabled"].as_bool().unwrap_or(true),
            not_before: v["not_before"].as_i64(),
            expires: v["expires"].as_i64(),
            tags: tags_from_json(&v["tags"]),
        };
        let k = c.kms(c.services.kms.create_key(link, &req))?;
        c.log(&format!("created key {} in the HSM", k.id));
        c.audit(
            "hsm.create_key",
            Some(("external_key", &k.id)),
            json!({"name": k.name}),
        );
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn("create_kek", move |name: ImmutableString| {
        let link = c.link()?;
        // Azure's BYOK key-exchange key: RSA-HSM whose only operation is `import`.
        let req = CreateRequest {
            name: name.to_string(),
            spec: KeySpec {
                key_type: KeyType::Rsa,
                size: Some(3072),
                curve: None,
            },
            ops: vec![KeyOp::Import],
            enabled: true,
            not_before: None,
            expires: Some(c.services.clock.now() + 3600),
            tags: vec![Tag {
                name: "keyward-purpose".into(),
                value: "byok-kek".into(),
            }],
        };
        let k = c.kms(c.services.kms.create_key(link, &req))?;
        c.log(&format!("created key-exchange key {}", k.id));
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn(
        "import_key",
        move |name: ImmutableString, material: Secret, opts: Map| {
            let link = c.link()?;
            let req = import_request(&name, material_of(&material.0), &opts)?;
            let k = c.kms(c.services.kms.import_key(link, &req))?;
            c.log(&format!("imported key material into {}", k.id));
            c.audit(
                "hsm.import_key",
                Some(("external_key", &k.id)),
                json!({"name": k.name, "byok": false}),
            );
            Ok(c.remember(&k))
        },
    );
    let c = ctx.clone();
    m.set_native_fn(
        "import_key",
        move |name: ImmutableString, blob: ByokBlob, opts: Map| {
            let link = c.link()?;
            let material = KeyMaterial::Byok(crate::plugins::kms::ByokBlob {
                kek_id: blob.kek_id.clone(),
                spec: blob.spec,
                blob: blob.blob.to_vec(),
            });
            let req = import_request(&name, material, &opts)?;
            let k = c.kms(c.services.kms.import_key(link, &req))?;
            c.log(&format!("imported a BYOK transfer blob into {}", k.id));
            c.audit(
                "hsm.import_key",
                Some(("external_key", &k.id)),
                json!({"name": k.name, "byok": true}),
            );
            Ok(c.remember(&k))
        },
    );
    let c = ctx.clone();
    m.set_native_fn("update_key", move |name: ImmutableString, changes: Map| {
        let link = c.link()?;
        let v = to_json(&Dynamic::from_map(changes));
        let req = UpdateRequest {
            enabled: v["enabled"].as_bool(),
            not_before: v["not_before"].as_i64(),
            expires: v["expires"].as_i64(),
            ops: (!v["ops"].is_null())
                .then(|| ops_from_json(&v["ops"]))
                .transpose()?,
            tags: (!v["tags"].is_null()).then(|| tags_from_json(&v["tags"])),
        };
        let key = KeyRef {
            name: name.to_string(),
            version: None,
        };
        let k = c.kms(c.services.kms.update_key(link, &key, &req))?;
        c.log(&format!("updated {} in the HSM", k.id));
        c.audit(
            "hsm.update_key",
            Some(("external_key", &k.id)),
            json!({"name": k.name, "changes": v}),
        );
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn("delete_key", move |name: ImmutableString| {
        let link = c.link()?;
        let d = c.kms(c.services.kms.delete_key(link, &name))?;
        c.log(&format!("soft-deleted {name} in the HSM"));
        c.audit(
            "hsm.delete_key",
            Some(("external_key", &d.key.id)),
            json!({"name": name.as_str()}),
        );
        Ok(from_json(&deleted_json(&d)))
    });
    let c = ctx.clone();
    m.set_native_fn("recover_key", move |name: ImmutableString| {
        let link = c.link()?;
        let k = c.kms(c.services.kms.recover_key(link, &name))?;
        c.log(&format!("recovered {name} in the HSM"));
        c.audit(
            "hsm.recover_key",
            Some(("external_key", &k.id)),
            json!({"name": name.as_str()}),
        );
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn("purge_key", move |name: ImmutableString| {
        let link = c.link()?;
        c.kms(c.services.kms.purge_key(link, &name))?;
        c.log(&format!("purged {name} in the HSM"));
        c.audit("hsm.purge_key", None, json!({"name": name.as_str()}));
        Ok(())
    });
    let c = ctx.clone();
    m.set_native_fn("backup_key", move |name: ImmutableString| {
        let link = c.link()?;
        let b = c.kms(c.services.kms.backup_key(link, &name))?;
        c.log(&format!("backed up {name} ({} bytes)", b.len()));
        Ok(Backup(Arc::new(b)))
    });
    let c = ctx.clone();
    m.set_native_fn("restore_key", move |backup: Backup| {
        let link = c.link()?;
        let k = c.kms(c.services.kms.restore_key(link, &backup.0))?;
        c.log(&format!("restored {} from a backup", k.id));
        c.audit(
            "hsm.restore_key",
            Some(("external_key", &k.id)),
            json!({"name": k.name}),
        );
        Ok(c.remember(&k))
    });
    m
}

fn import_request(name: &str, material: KeyMaterial, opts: &Map) -> RhaiResult<ImportRequest> {
    let v = to_json(&Dynamic::from_map(opts.clone()));
    Ok(ImportRequest {
        name: name.to_string(),
        material,
        ops: ops_from_json(&v["ops"])?,
        enabled: v["enabled"].as_bool().unwrap_or(true),
        not_before: v["not_before"].as_i64(),
        expires: v["expires"].as_i64(),
        tags: tags_from_json(&v["tags"]),
        hsm: true,
    })
}

/// Key material in the contract's shape (private components, big-endian).
fn material_of(m: &keyward_crypto::Material) -> KeyMaterial {
    use crate::plugins::kms::{EcPrivate, RsaPrivate};
    use keyward_crypto::Material as M;
    let mut jwk = serde_json::Map::new();
    m.public_jwk(&mut jwk);
    let b = |v: &Value| {
        v.as_str()
            .and_then(|s| keyward_crypto::decode_b64("jwk", s).ok())
            .unwrap_or_default()
    };
    match m {
        M::Rsa(k) => {
            let p = keyward_crypto::rsa_private_jwk(k);
            KeyMaterial::Rsa(RsaPrivate {
                n: b(&p["n"]),
                e: b(&p["e"]),
                d: b(&p["d"]),
                p: b(&p["p"]),
                q: b(&p["q"]),
                dp: b(&p["dp"]),
                dq: b(&p["dq"]),
                qi: b(&p["qi"]),
            })
        }
        M::P256(_) | M::P384(_) | M::P521(_) => {
            let curve = match m.curve() {
                Some(keyward_crypto::Curve::P384) => Curve::P384,
                Some(keyward_crypto::Curve::P521) => Curve::P521,
                _ => Curve::P256,
            };
            let d = match m {
                M::P256(k) => k.to_bytes().to_vec(),
                M::P384(k) => k.to_bytes().to_vec(),
                M::P521(k) => k.to_bytes().to_vec(),
                _ => unreachable!("EC material"),
            };
            KeyMaterial::Ec(EcPrivate {
                curve,
                x: b(&jwk["x"]),
                y: b(&jwk["y"]),
                d,
            })
        }
        M::Oct(k) => KeyMaterial::Symmetric(k.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// byok::

fn byok_module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("wrap", |material: Secret, kek: Map| {
        let v = to_json(&Dynamic::from_map(kek));
        let kek_id = str_field(&v, "id")?;
        let n = b64url_field(&v["jwk"], "n")?;
        let e = b64url_field(&v["jwk"], "e")?;
        let public = keyward_crypto::rsa_public(&n, &e)
            .map_err(|e| invalid(format!("the key-exchange key is not an RSA key: {e}")))?;
        let spec = spec_of_material(&material.0);
        let blob = keyward_crypto::byok_transfer_document(
            &kek_id,
            &public,
            &material.0.to_der(),
            "Keyward",
        )
        .map_err(|e| invalid(format!("cannot wrap the key: {e}")))?;
        Ok(ByokBlob {
            kek_id,
            spec,
            blob: Arc::new(blob),
        })
    });
    m
}

fn spec_of_material(m: &keyward_crypto::Material) -> KeySpec {
    use keyward_crypto::Kty;
    match m.family() {
        Kty::Rsa => KeySpec {
            key_type: KeyType::Rsa,
            size: m.size(),
            curve: None,
        },
        Kty::Ec => KeySpec {
            key_type: KeyType::Ec,
            size: None,
            curve: Some(match m.curve() {
                Some(keyward_crypto::Curve::P384) => Curve::P384,
                Some(keyward_crypto::Curve::P521) => Curve::P521,
                _ => Curve::P256,
            }),
        },
        Kty::Oct => KeySpec {
            key_type: KeyType::Aes,
            size: m.size(),
            curve: None,
        },
    }
}

// ---------------------------------------------------------------------------------------
// keys::

fn keys_module(ctx: &Arc<RunContext>) -> Module {
    let mut m = Module::new();
    let c = ctx.clone();
    m.set_native_fn("linked", move || {
        let group = c.group()?.clone();
        let refs = c.catalog(async {
            let mut conn = c.services.catalog.conn().await?;
            sobjects::external_refs(&mut conn, &group.id).await
        })?;
        let mut out = Map::new();
        for r in refs {
            let label = r.external["id"]["label"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.insert(
                label.into(),
                from_json(&json!({
                    "kid": r.kid, "name": r.name, "enabled": r.enabled,
                    "state": r.external["state"], "source": r.external["source"],
                })),
            );
        }
        Ok(out)
    });
    let c = ctx.clone();
    m.set_native_fn("adopt", move |names: Array| {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        adopt(&c, names)
    });
    let c = ctx.clone();
    m.set_native_fn(
        "adopt_listed",
        move |nc: NativeCallContext, filter: FnPtr| adopt_listed(&c, &nc, filter),
    );
    let c = ctx.clone();
    m.set_native_fn("record", move |remote: Map, backup: Backup| {
        let remote = c.remembered(&remote)?;
        record(&c, &remote, Some(&backup))
    });
    let c = ctx.clone();
    m.set_native_fn("record", move |remote: Map| {
        let remote = c.remembered(&remote)?;
        record(&c, &remote, None)
    });
    let c = ctx.clone();
    m.set_native_fn("save", move |remote: Map| {
        let remote = c.remembered(&remote)?;
        save(&c, &remote)
    });
    let c = ctx.clone();
    m.set_native_fn("get", move |kid: ImmutableString| {
        let o = load_in_group(&c, &kid)?;
        Ok(from_json(&object_json(&o, c.services.clock.now())))
    });
    let c = ctx.clone();
    m.set_native_fn(
        "set_remote_state",
        move |kid: ImmutableString, state: ImmutableString, details: Map| {
            set_remote_state(&c, &kid, &state, &to_json(&Dynamic::from_map(details)))
        },
    );
    let c = ctx.clone();
    m.set_native_fn("refresh", move |kid: ImmutableString, remote: Map| {
        let remote = c.remembered(&remote)?;
        refresh(&c, &kid, &remote)
    });
    let c = ctx.clone();
    m.set_native_fn("escrow", move |kid: ImmutableString| {
        let o = load_in_group(&c, &kid)?;
        let sealed = c
            .catalog(async {
                let mut conn = c.services.catalog.conn().await?;
                sobjects::get_escrow(&mut conn, &o.kid).await
            })?
            .ok_or_else(|| {
                HostError::new("not_found", format!("no escrowed backup of key {}", o.kid)).throw()
            })?;
        let blob = c
            .services
            .catalog
            .open_sealed(&escrow_context(&o.kid), &sealed)
            .map_err(|e| HostError::from(e).throw())?;
        c.log(&format!("took the escrowed backup of {}", o.kid));
        Ok(Backup(Arc::new(blob)))
    });
    let c = ctx.clone();
    m.set_native_fn("put_escrow", move |kid: ImmutableString, backup: Backup| {
        let o = load_in_group(&c, &kid)?;
        let sealed = c.services.catalog.seal(&escrow_context(&o.kid), &backup.0);
        let now = c.services.clock.now();
        c.catalog(async {
            let mut tx = c.services.catalog.begin().await?;
            sobjects::put_escrow(&mut tx, &o.kid, &sealed, now).await?;
            Ok(tx.commit().await?)
        })?;
        c.log(&format!("escrowed a backup of {}", o.kid));
        Ok(())
    });
    let c = ctx.clone();
    m.set_native_fn("remove", move |kid: ImmutableString| {
        let o = load_in_group(&c, &kid)?;
        let now = c.services.clock.now();
        c.catalog(async {
            let mut tx = c.services.catalog.begin().await?;
            sobjects::delete(&mut tx, &o.kid).await?;
            Event::new(Some(&c.account), &c.principal, "key.delete", now)
                .object("sobject", &o.kid)
                .details(json!({"name": o.name, "workflow_run": c.run_id, "escrow_removed": true}))
                .write(&mut tx)
                .await?;
            Ok(tx.commit().await?)
        })?;
        c.forget(&o.kid);
        c.log(&format!(
            "removed virtual key {} and its escrowed backup",
            o.kid
        ));
        Ok(())
    });
    m
}

/// A key of the run's group.
fn load_in_group(c: &RunContext, kid: &str) -> RhaiResult<SObject> {
    let group = c.group()?.id.clone();
    let o = c.catalog(async {
        let mut conn = c.services.catalog.conn().await?;
        sobjects::get(&mut conn, kid).await
    })?;
    match o {
        Some(o) if o.group_id == group => Ok(o),
        _ => Err(HostError::new("not_found", format!("no key {kid} in this group")).throw()),
    }
}

/// The `external` document of a virtual key.
fn external_json(c: &RunContext, remote: &RemoteKey, source: &str) -> Result<Value, HostError> {
    let (Some(group), Some(link)) = (&c.group, &c.link) else {
        return Err(HostError::new("invalid", "this run has no linked group"));
    };
    Ok(json!({
        "kind": group.link.as_ref().map(|l| l.kind.clone()),
        "hsm_group_id": group.id,
        "instance": link.instance(),
        "id": {"label": remote.name, "version": remote.version},
        "key_id": remote.id,
        "key_version": remote.version,
        "kty": remote.kty,
        "source": source,
        "state": if remote.properties.enabled { "Active" } else { "Disabled" },
        "managed": remote.managed,
        "created": remote.properties.created.map(format_dsm),
        "updated": remote.properties.updated.map(format_dsm),
        "recovery_level": remote.properties.recovery_level,
        "synced_at": format_dsm(c.services.clock.now()),
    }))
}

fn dsm_curve(c: Curve) -> &'static str {
    match c {
        Curve::P256 => "NistP256",
        Curve::P384 => "NistP384",
        Curve::P521 => "NistP521",
        Curve::Secp256k1 => "SecP256K1",
    }
}

fn obj_type_of(spec: &KeySpec) -> ObjType {
    match spec.key_type {
        KeyType::Rsa => ObjType::Rsa,
        KeyType::Ec => ObjType::Ec,
        KeyType::Aes => ObjType::Aes,
    }
}

fn public_der(remote: &RemoteKey) -> Option<Vec<u8>> {
    match &remote.public_key {
        Some(PublicKey::Rsa(k)) => keyward_crypto::rsa_public_der(&k.n, &k.e).ok(),
        Some(PublicKey::Ec(k)) => {
            let curve = match k.curve {
                Curve::P256 => keyward_crypto::Curve::P256,
                Curve::P384 => keyward_crypto::Curve::P384,
                Curve::P521 => keyward_crypto::Curve::P521,
                Curve::Secp256k1 => return None,
            };
            keyward_crypto::ec_public_der(curve, &k.x, &k.y).ok()
        }
        None => None,
    }
}

fn dsm_ops(ops: &[KeyOp]) -> Vec<String> {
    ops.iter()
        .filter_map(|o| {
            Some(
                match o {
                    KeyOp::Encrypt => "ENCRYPT",
                    KeyOp::Decrypt => "DECRYPT",
                    KeyOp::Sign => "SIGN",
                    KeyOp::Verify => "VERIFY",
                    KeyOp::WrapKey => "WRAPKEY",
                    KeyOp::UnwrapKey => "UNWRAPKEY",
                    KeyOp::Export => "EXPORT",
                    _ => return None,
                }
                .to_string(),
            )
        })
        .collect()
}

/// A virtual key for a key found in the key manager.
fn adopted_object(
    c: &RunContext,
    group: &Group,
    remote: &RemoteKey,
    name: String,
) -> Result<SObject, HostError> {
    let now = c.services.clock.now();
    let p = &remote.properties;
    Ok(SObject {
        kid: new_id(),
        account_id: c.account.clone(),
        group_id: group.id.clone(),
        name,
        description: None,
        obj_type: obj_type_of(&remote.spec),
        key_size: remote.spec.size,
        elliptic_curve: remote.spec.curve.map(|c| dsm_curve(c).to_string()),
        key_ops: dsm_ops(&remote.ops),
        enabled: p.enabled,
        activation_date: p.not_before.or(p.created).or(Some(now)),
        deactivation_date: p.expires,
        compromise_date: None,
        destruction_date: None,
        revocation_reason: None,
        created_at: now,
        lastused_at: None,
        creator: c.creator(),
        origin: "External".into(),
        material: None,
        pub_key: public_der(remote),
        kcv: None,
        external: Some(external_json(c, remote, "External")?),
        tags: remote
            .tags
            .iter()
            .map(|t| (t.name.clone(), t.value.clone()))
            .collect(),
    })
}

/// A key and its backup, or why they could not be fetched.
type Fetched = Result<(RemoteKey, Vec<u8>), KmsError>;

/// Fetches keys (key and backup) with bounded concurrency and stores each as a virtual key
/// with its escrowed backup, in batches, while more are being fetched. Keys that already
/// have a virtual key are skipped; ones that fail are reported, not fatal.
struct Adopter<'a> {
    c: &'a RunContext,
    link: Link,
    group: Arc<Group>,
    slots: Arc<tokio::sync::Semaphore>,
    tasks: tokio::task::JoinSet<(String, Fetched)>,
    batch: Vec<(RemoteKey, Vec<u8>)>,
    added: Vec<String>,
    failed: Vec<Value>,
}

impl<'a> Adopter<'a> {
    fn new(c: &'a RunContext) -> RhaiResult<Adopter<'a>> {
        Ok(Adopter {
            link: c.link()?.clone(),
            group: c.group()?.clone(),
            slots: Arc::new(tokio::sync::Semaphore::new(c.concurrency)),
            tasks: tokio::task::JoinSet::new(),
            batch: Vec::new(),
            added: Vec::new(),
            failed: Vec::new(),
            c,
        })
    }

    /// Starts fetching a key (on the runtime: it proceeds while the caller does other work).
    fn spawn(&mut self, name: String) {
        let slots = self.slots.clone();
        let kms = self.c.services.kms.clone();
        let link = self.link.clone();
        let _guard = self.c.rt.enter();
        self.tasks.spawn(async move {
            let _slot = slots.acquire_owned().await.expect("never closed");
            let key = KeyRef {
                name: name.clone(),
                version: None,
            };
            let got = async {
                let remote = kms.get_key(&link, &key).await?;
                let backup = kms.backup_key(&link, &name).await?;
                Ok::<_, KmsError>((remote, backup))
            }
            .await;
            (name, got)
        });
    }

    fn take(&mut self, (name, got): (String, Fetched)) {
        match got {
            Ok(v) => self.batch.push(v),
            Err(e) => {
                self.c.progress.add("failed", 1);
                self.failed
                    .push(json!({"name": name, "error": HostError::from(e)}));
            }
        }
    }

    async fn store(&mut self) -> Result<(), HostError> {
        let kids = store_batch(self.c, &self.group, std::mem::take(&mut self.batch)).await?;
        self.c.progress.add("added", kids.len() as i64);
        self.added.extend(kids);
        Ok(())
    }

    /// Collects what has been fetched so far and stores full batches.
    async fn collect_ready(&mut self) -> Result<(), HostError> {
        while let Some(joined) = self.tasks.try_join_next() {
            self.take(joined.expect("fetch task does not panic"));
        }
        if self.batch.len() >= ADOPT_BATCH {
            self.store().await?;
        }
        Ok(())
    }

    /// Waits for every fetch and stores the rest.
    async fn finish(mut self) -> Result<(Vec<String>, Vec<Value>), HostError> {
        while let Some(joined) = self.tasks.join_next().await {
            self.take(joined.expect("fetch task does not panic"));
            if self.batch.len() >= ADOPT_BATCH {
                self.store().await?;
            }
        }
        if !self.batch.is_empty() {
            self.store().await?;
        }
        Ok((self.added, self.failed))
    }
}

fn adopted_map(added: Vec<String>, failed: Vec<Value>) -> Map {
    let mut out = Map::new();
    out.insert(
        "added".into(),
        Dynamic::from_array(added.into_iter().map(Dynamic::from).collect()),
    );
    out.insert(
        "failed".into(),
        Dynamic::from_array(failed.iter().map(from_json).collect()),
    );
    out
}

/// `keys::adopt(names)`: adopts the named keys.
fn adopt(c: &Arc<RunContext>, names: Vec<String>) -> RhaiResult<Map> {
    let total = names.len();
    let mut adopter = Adopter::new(c)?;
    for name in names {
        adopter.spawn(name);
    }
    let (added, failed) = c.block(adopter.finish())?.map_err(HostError::throw)?;
    c.log(&format!(
        "adopted {} of {total} keys ({} failed)",
        added.len(),
        failed.len()
    ));
    Ok(adopted_map(added, failed))
}

/// `keys::adopt_listed(filter)`: lists every key of the HSM and, while the pages come in,
/// adopts those without a virtual key that `filter` accepts, so fetching overlaps listing.
/// Returns `#{listed, added, failed}`.
fn adopt_listed(c: &Arc<RunContext>, nc: &NativeCallContext, filter: FnPtr) -> RhaiResult<Map> {
    let mut adopter = Adopter::new(c)?;
    let group = adopter.group.id.clone();
    let known: std::collections::HashSet<String> = c
        .catalog(async {
            let mut conn = c.services.catalog.conn().await?;
            sobjects::external_refs(&mut conn, &group).await
        })?
        .into_iter()
        .filter_map(|r| r.external["id"]["label"].as_str().map(str::to_string))
        .collect();
    let mut listed = Array::new();
    let mut page: Option<String> = None;
    loop {
        let p = c.kms(c.services.kms.list_keys(&adopter.link, page.as_deref()))?;
        for item in &p.items {
            let d = from_json(&item_json(item));
            listed.push(d.clone());
            if !known.contains(&item.name) && filter.call_within_context::<bool>(nc, (d,))? {
                adopter.spawn(item.name.clone());
            }
        }
        c.progress.set("seen", listed.len() as i64);
        c.block(adopter.collect_ready())?
            .map_err(HostError::throw)?;
        match p.next {
            Some(next) => page = Some(next),
            None => break,
        }
    }
    c.log(&format!("listed {} keys", listed.len()));
    let (added, failed) = c.block(adopter.finish())?.map_err(HostError::throw)?;
    c.log(&format!(
        "adopted {} keys ({} failed)",
        added.len(),
        failed.len()
    ));
    let mut out = adopted_map(added, failed);
    out.insert("listed".into(), Dynamic::from_array(listed));
    Ok(out)
}

/// Stores fetched keys as virtual keys in one transaction.
async fn store_batch(
    c: &RunContext,
    group: &Group,
    batch: Vec<(RemoteKey, Vec<u8>)>,
) -> Result<Vec<String>, HostError> {
    let now = c.services.clock.now();
    let labels: Vec<String> = batch.iter().map(|(r, _)| r.name.clone()).collect();
    let instance = c
        .link
        .as_ref()
        .and_then(|l| l.instance_name())
        .unwrap_or_default();
    let mut tx = c.services.catalog.begin().await?;
    let present = sobjects::external_labels_present(&mut tx, &group.id, &labels).await?;
    let mut kids = Vec::new();
    for (remote, backup) in batch {
        if present.contains(&remote.name) {
            continue;
        }
        // The key's own name when free in the account, else qualified by the instance.
        let mut name = remote.name.clone();
        let mut n = 1;
        while sobjects::name_taken(&mut tx, &c.account, &name).await? {
            n += 1;
            name = if n == 2 {
                format!("{} ({instance})", remote.name)
            } else {
                format!("{} ({instance}) {n}", remote.name)
            };
        }
        let o = adopted_object(c, group, &remote, name)?;
        sobjects::insert(&mut tx, &o).await?;
        let sealed = c.services.catalog.seal(&escrow_context(&o.kid), &backup);
        sobjects::put_escrow(&mut tx, &o.kid, &sealed, now).await?;
        Event::new(Some(&c.account), &c.principal, "key.sync", now)
            .object("sobject", &o.kid)
            .details(json!({"name": o.name, "external_name": remote.name, "group_id": group.id, "workflow_run": c.run_id}))
            .write(&mut tx)
            .await?;
        kids.push(o.kid);
    }
    tx.commit().await?;
    Ok(kids)
}

/// Stores the run's pending key as a virtual key of `remote`, with its escrowed backup.
fn record(c: &RunContext, remote: &RemoteKey, backup: Option<&Backup>) -> RhaiResult<String> {
    let pending =
        c.pending.lock().unwrap().take().ok_or_else(|| {
            invalid("this run has no new key to record (or it was recorded already)")
        })?;
    let mut o = pending.object;
    o.external = Some(external_json(c, remote, pending.source).map_err(HostError::throw)?);
    o.origin = "External".into();
    o.enabled = remote.properties.enabled;
    o.pub_key = public_der(remote).or(o.pub_key);
    o.key_size = o.key_size.or(remote.spec.size);
    o.material = None;
    let now = c.services.clock.now();
    let sealed = backup.map(|b| c.services.catalog.seal(&escrow_context(&o.kid), &b.0));
    let mut details = pending.audit_details.clone();
    if let Value::Object(d) = &mut details {
        d.insert("external_key".into(), json!(remote.id));
        d.insert("workflow_run".into(), json!(c.run_id));
    }
    let result: Result<(), CatalogError> = c.block(async {
        let mut tx = c.services.catalog.begin().await?;
        sobjects::insert(&mut tx, &o).await?;
        if let Some(sealed) = &sealed {
            sobjects::put_escrow(&mut tx, &o.kid, sealed, now).await?;
        }
        if let Some(source) = &pending.copy_of {
            sobjects::add_link(
                &mut tx,
                &sobjects::Link {
                    kind: sobjects::LinkKind::Copy,
                    source: source.clone(),
                    target: o.kid.clone(),
                    target_group: Some(o.group_id.clone()),
                    created_by: c.principal.id().to_string(),
                    created_at: now,
                },
            )
            .await?;
        }
        Event::new(Some(&c.account), &c.principal, &pending.audit_action, now)
            .object("sobject", &o.kid)
            .details(details)
            .write(&mut tx)
            .await?;
        Ok(tx.commit().await?)
    })?;
    if let Err(e) = result {
        let e = if e.is_unique_violation() {
            HostError::new(
                "conflict",
                format!("a key named '{}' exists in this account", o.name),
            )
        } else {
            HostError::from(e)
        };
        return Err(e.throw());
    }
    if let Some(source) = &pending.copy_of {
        c.forget(source);
    }
    c.log(&format!("recorded virtual key {} for {}", o.kid, remote.id));
    *c.recorded.lock().unwrap() = Some(o.kid.clone());
    Ok(o.kid)
}

/// Stores the run's pending change of an existing virtual key, now that `remote` has it.
fn save(c: &RunContext, remote: &RemoteKey) -> RhaiResult<String> {
    let pending =
        c.pending.lock().unwrap().take().ok_or_else(|| {
            invalid("this run has no key change to save (or it was saved already)")
        })?;
    let mut o = pending.object;
    let source = o
        .external
        .as_ref()
        .and_then(|e| e["source"].as_str().map(str::to_string))
        .unwrap_or_else(|| "External".into());
    o.external = Some(external_json(c, remote, &source).map_err(HostError::throw)?);
    o.enabled = remote.properties.enabled;
    let now = c.services.clock.now();
    let mut details = pending.audit_details.clone();
    if let Value::Object(d) = &mut details {
        d.insert("external_key".into(), json!(remote.id));
        d.insert("workflow_run".into(), json!(c.run_id));
    }
    let result: Result<(), CatalogError> = c.block(async {
        let mut tx = c.services.catalog.begin().await?;
        sobjects::update(&mut tx, &o).await?;
        Event::new(Some(&c.account), &c.principal, &pending.audit_action, now)
            .object("sobject", &o.kid)
            .details(details)
            .write(&mut tx)
            .await?;
        Ok(tx.commit().await?)
    })?;
    result.map_err(|e| HostError::from(e).throw())?;
    c.forget(&o.kid);
    *c.recorded.lock().unwrap() = Some(o.kid.clone());
    c.log(&format!("saved the change of {}", o.kid));
    Ok(o.kid)
}

/// Updates the external state of a virtual key (`Active`, `Disabled`, `SoftDeleted`,
/// `Purged`); returns whether anything changed.
fn set_remote_state(c: &RunContext, kid: &str, state: &str, details: &Value) -> RhaiResult<bool> {
    if !["Active", "Disabled", "SoftDeleted", "Purged"].contains(&state) {
        return Err(invalid(format!(
            "'{state}' is not a remote state (Active, Disabled, SoftDeleted, Purged)"
        )));
    }
    let mut o = load_in_group(c, kid)?;
    let mut ext = o.external.clone().unwrap_or_else(|| json!({}));
    let before = ext.clone();
    ext["state"] = json!(state);
    let date = |name: &str| details[name].as_i64().map(format_dsm);
    match state {
        "SoftDeleted" => {
            ext["deleted_date"] = json!(date("deleted"));
            ext["scheduled_purge_date"] = json!(date("scheduled_purge"));
            ext["recovery_id"] = details["recovery_id"].clone();
        }
        "Purged" => {
            ext["purged_seen"] = json!(format_dsm(c.services.clock.now()));
        }
        _ => {
            for k in [
                "deleted_date",
                "scheduled_purge_date",
                "recovery_id",
                "purged_seen",
            ] {
                if let Value::Object(m) = &mut ext {
                    m.remove(k);
                }
            }
        }
    }
    if ext == before {
        return Ok(false);
    }
    o.external = Some(ext);
    let now = c.services.clock.now();
    c.catalog(async {
        let mut tx = c.services.catalog.begin().await?;
        sobjects::update(&mut tx, &o).await?;
        Event::new(Some(&c.account), &c.principal, "key.external_state", now)
            .object("sobject", &o.kid)
            .details(json!({"state": state, "previous": before["state"], "workflow_run": c.run_id}))
            .write(&mut tx)
            .await?;
        Ok(tx.commit().await?)
    })?;
    c.forget(&o.kid);
    c.log(&format!("{} is now {state} in the HSM", o.kid));
    Ok(true)
}

/// Refreshes a virtual key from what the key manager says now (after a recover or restore).
fn refresh(c: &RunContext, kid: &str, remote: &RemoteKey) -> RhaiResult<()> {
    let mut o = load_in_group(c, kid)?;
    let source = o
        .external
        .as_ref()
        .and_then(|e| e["source"].as_str().map(str::to_string))
        .unwrap_or_else(|| "External".into());
    o.external = Some(external_json(c, remote, &source).map_err(HostError::throw)?);
    o.enabled = remote.properties.enabled;
    c.catalog(async {
        let mut tx = c.services.catalog.begin().await?;
        sobjects::update(&mut tx, &o).await?;
        Ok(tx.commit().await?)
    })?;
    c.forget(&o.kid);
    Ok(())
}

/// A catalog key as a script sees it.
fn object_json(o: &SObject, now: i64) -> Value {
    json!({
        "kid": o.kid, "name": o.name, "group_id": o.group_id, "obj_type": o.obj_type.as_str(),
        "key_size": o.key_size, "elliptic_curve": o.elliptic_curve, "key_ops": o.key_ops,
        "enabled": o.enabled, "state": o.state(now).as_str(), "origin": o.origin,
        "activation_date": o.activation_date, "deactivation_date": o.deactivation_date,
        "external": o.external, "tags": o.tags,
    })
}

// ---------------------------------------------------------------------------------------
// policy:: and audit::

fn policy_module(ctx: &Arc<RunContext>) -> Module {
    let mut m = Module::new();
    let c = ctx.clone();
    m.set_native_fn(
        "check",
        move |action: ImmutableString, kid: ImmutableString| {
            use crate::plugins::policy::{Action, PolicyRequest};
            let o = load_in_group(&c, &kid)?;
            let group = c.group()?.clone();
            let action = match action.as_str() {
                "create" => Action::Create,
                "import" => Action::Import,
                "copy" => Action::Copy,
                "rotate" => Action::Rotate,
                "update" => Action::Update,
                other => {
                    return Err(invalid(format!(
                        "'{other}' is not a policy action (create, import, copy, rotate, update)"
                    )));
                }
            };
            let now = c.services.clock.now();
            let verdict = c.block(async {
                let mut conn = c.services.catalog.conn().await?;
                let account = crate::catalog::accounts::get(&mut conn, &c.account)
                    .await?
                    .ok_or_else(|| CatalogError::Corrupt("the run's account vanished".into()))?;
                drop(conn);
                let request = PolicyRequest {
                    action,
                    principal: crate::policy::principal(&c.principal),
                    account: c.account.clone(),
                    group: group.id.clone(),
                    key: crate::policy::attributes(&o, now),
                    current: None,
                    now,
                };
                Ok::<_, CatalogError>(
                    crate::policy::check(&c.services.plugins, &account, &group, &request).await,
                )
            })?;
            let verdict = verdict
                .map_err(|e| HostError::from(e).throw())?
                .map_err(|e| HostError::new("unavailable", e.to_string()).throw())?;
            Ok(from_json(&json!({
                "allowed": verdict.allowed(),
                "violations": verdict.violations,
                "warnings": verdict.warnings,
            })))
        },
    );
    m
}

fn audit_module(ctx: &Arc<RunContext>) -> Module {
    let mut m = Module::new();
    let c = ctx.clone();
    m.set_native_fn("record", move |action: ImmutableString, details: Map| {
        // Script events are namespaced so they cannot pass for the daemon's own.
        let action = format!("workflow.{action}");
        c.audit(&action, None, to_json(&Dynamic::from_map(details)));
        Ok(())
    });
    m
}

// ---------------------------------------------------------------------------------------
// JSON shapes and parsing

fn key_json(k: &RemoteKey) -> Value {
    let p = &k.properties;
    let jwk = match &k.public_key {
        Some(PublicKey::Rsa(r)) => {
            json!({"kty": "RSA", "n": keyward_crypto::b64url(&r.n), "e": keyward_crypto::b64url(&r.e)})
        }
        Some(PublicKey::Ec(e)) => {
            json!({"kty": "EC", "crv": format!("{:?}", e.curve), "x": keyward_crypto::b64url(&e.x), "y": keyward_crypto::b64url(&e.y)})
        }
        None => Value::Null,
    };
    json!({
        "name": k.name, "version": k.version, "id": k.id, "kty": k.kty,
        "obj_type": obj_type_of(&k.spec).as_str(), "key_size": k.spec.size,
        "elliptic_curve": k.spec.curve.map(dsm_curve),
        "ops": dsm_ops(&k.ops), "enabled": p.enabled, "not_before": p.not_before,
        "expires": p.expires, "created": p.created, "updated": p.updated,
        "recoverable_days": p.recoverable_days, "recovery_level": p.recovery_level,
        "tags": tags_json(&k.tags), "managed": k.managed, "jwk": jwk,
    })
}

fn tags_json(tags: &[Tag]) -> Value {
    Value::Object(
        tags.iter()
            .map(|t| (t.name.clone(), json!(t.value)))
            .collect(),
    )
}

fn item_json(i: &KeyItem) -> Value {
    let p = &i.properties;
    json!({
        "name": i.name, "id": i.id, "version": i.version, "enabled": p.enabled,
        "not_before": p.not_before, "expires": p.expires, "created": p.created,
        "updated": p.updated, "tags": tags_json(&i.tags), "managed": i.managed,
    })
}

fn deleted_item_json(d: &DeletedKeyItem) -> Value {
    let mut v = item_json(&d.item);
    v["recovery_id"] = json!(d.recovery_id);
    v["deleted"] = json!(d.deleted);
    v["scheduled_purge"] = json!(d.scheduled_purge);
    v
}

fn deleted_json(d: &DeletedKey) -> Value {
    let mut v = key_json(&d.key);
    v["recovery_id"] = json!(d.recovery_id);
    v["deleted"] = json!(d.deleted);
    v["scheduled_purge"] = json!(d.scheduled_purge);
    v
}

fn instance_json(i: &Instance) -> Value {
    json!({
        "id": i.id, "name": i.name, "uri": i.uri, "location": i.location,
        "retention_days": i.retention_days, "purge_protection": i.purge_protection,
        "tags": tags_json(&i.tags),
    })
}

fn str_field(v: &Value, name: &str) -> RhaiResult<String> {
    v[name]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .ok_or_else(|| invalid(format!("'{name}' is required")))
}

fn b64url_field(v: &Value, name: &str) -> RhaiResult<Vec<u8>> {
    let s = str_field(v, name)?;
    keyward_crypto::decode_b64(name, &s).map_err(|e| invalid(e.to_string()))
}

/// `obj_type` (RSA, EC, AES), `key_size`, `elliptic_curve` (NistP256 or P-256 style).
fn spec_from_json(v: &Value) -> RhaiResult<KeySpec> {
    let size = v["key_size"].as_u64().map(|s| s as u32);
    let curve = match v["elliptic_curve"].as_str() {
        None => None,
        Some("NistP256" | "P-256") => Some(Curve::P256),
        Some("NistP384" | "P-384") => Some(Curve::P384),
        Some("NistP521" | "P-521") => Some(Curve::P521),
        Some(other) => return Err(invalid(format!("unknown curve '{other}'"))),
    };
    let key_type = match v["obj_type"].as_str() {
        Some("RSA") => KeyType::Rsa,
        Some("EC") => KeyType::Ec,
        Some("AES") => KeyType::Aes,
        other => {
            return Err(invalid(format!("obj_type {other:?} is not RSA, EC or AES")));
        }
    };
    Ok(KeySpec {
        key_type,
        size,
        curve,
    })
}

/// Operations by DSM (`ENCRYPT`, `WRAPKEY`) or Azure (`encrypt`, `wrapKey`) name. Operations
/// that exist only in the catalog (`EXPORT`, `APPMANAGEABLE`, ...) are not sent.
fn ops_from_json(v: &Value) -> RhaiResult<Vec<KeyOp>> {
    let mut out = Vec::new();
    for op in v.as_array().into_iter().flatten() {
        let name = op
            .as_str()
            .ok_or_else(|| invalid("operations are strings"))?;
        let op = match name.to_ascii_uppercase().as_str() {
            "ENCRYPT" => KeyOp::Encrypt,
            "DECRYPT" => KeyOp::Decrypt,
            "SIGN" => KeyOp::Sign,
            "VERIFY" => KeyOp::Verify,
            "WRAPKEY" => KeyOp::WrapKey,
            "UNWRAPKEY" => KeyOp::UnwrapKey,
            "IMPORT" => KeyOp::Import,
            "EXPORT" | "APPMANAGEABLE" | "DERIVEKEY" | "MACGENERATE" | "MACVERIFY" | "AGREEKEY"
            | "TRANSFORM" | "HIGHVOLUME" => continue,
            _ => return Err(invalid(format!("unknown key operation '{name}'"))),
        };
        if !out.contains(&op) {
            out.push(op);
        }
    }
    Ok(out)
}

fn tags_from_json(v: &Value) -> Vec<Tag> {
    v.as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| Tag {
            name: k.clone(),
            value: v.as_str().map_or_else(|| v.to_string(), str::to_string),
        })
        .collect()
}
