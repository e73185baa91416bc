//! `hsm::*`: the group's external key manager, through its connector plugin. Every call that
//! changes the HSM writes its intent to the journal before the call and its outcome, with
//! one audit event, after it. A run that reserved a new key may create or import only that
//! key. `byok::wrap` makes a BYOK transfer blob for a key-exchange key.

use std::future::Future;
use std::sync::Arc;

use rhai::{Dynamic, ImmutableString, Map, Module};
use serde_json::{Value, json};

use crate::keys::{HsmChange, KeyError, Pending};
use crate::kms::KmsError;
use crate::plugins::kms::{
    CreateRequest, Curve, ImportRequest, KeyMaterial, KeyOp, KeyRef, KeySpec, KeyType, RemoteKey,
    Tag, UpdateRequest,
};

use super::shapes::{
    b64url_field, deleted_item_json, deleted_json, instance_json, item_json, ops_from_json,
    spec_from_json, str_field, tags_from_json,
};
use super::{Backup, ByokBlob, HostError, HostErrorKind, RhaiResult, RunContext, Secret, invalid};
use crate::workflows::values::{from_json, to_json};

impl RunContext {
    /// A connector call that changes the HSM, journaled around the call.
    fn journaled<T>(
        &self,
        operation: HsmChange,
        target: &str,
        details: Value,
        call: impl Future<Output = Result<T, KmsError>>,
        remote_id: impl Fn(&T) -> Option<String>,
    ) -> RhaiResult<T> {
        let scope = self.scope()?;
        let keys = &self.services.keys;
        let target = (!target.is_empty()).then_some(target);
        let kid = match target {
            Some(t) => self.keys(keys.virtual_named(scope, t))?,
            None => None,
        };
        let entry =
            match self.block(keys.journal_begin(scope, operation, target, kid.as_deref()))? {
                Ok(entry) => entry,
                Err(KeyError::ApprovalRequired) => {
                    let kid = kid.as_deref().unwrap_or_default();
                    return Err(self.ask_approval(operation, kid, target.unwrap_or_default()));
                }
                Err(e) => return Err(HostError::from(e).throw()),
            };
        let result = self.block(call)?;
        let outcome = result.as_ref().map(&remote_id);
        self.keys(keys.journal_end(scope, &entry, operation, outcome, details))?;
        result.map_err(|e| HostError::from(e).throw())
    }

    /// A run that reserved a new key creates or imports that key and no other; a rotation
    /// run makes versions of its steps' keys only, and one that resumes an interrupted
    /// rotation makes none of a key whose HSM already has a version newer than the step's.
    fn check_reserved(&self, name: &str) -> RhaiResult<()> {
        let plan = match &*self.pending.lock().unwrap() {
            Some(Pending::New(p)) if !p.hsm_name().eq_ignore_ascii_case(name) => {
                return Err(invalid(format!(
                    "this run creates the key reserved as '{}' in the HSM, not '{name}'",
                    p.hsm_name()
                )));
            }
            Some(Pending::Rotation(r)) => match r.plan_for(name) {
                Some(p) => p.clone(),
                None => {
                    return Err(invalid(format!(
                        "this rotation run makes new versions of its keys only, not of '{name}'"
                    )));
                }
            },
            _ => return Ok(()),
        };
        if plan.resume {
            let link = self.link()?;
            let latest = self.kms(self.services.kms.find_key(link, name))?;
            if let Some(k) = latest
                && plan.prior_version.as_deref() != Some(k.version.as_str())
            {
                return Err(HostError {
                    kind: HostErrorKind::Conflict,
                    violations: vec![],
                    code: "VersionExists".into(),
                    message: format!(
                        "'{name}' already has the new version {} (made before the interruption); record it with keys::record_rotation(hsm::get_key(name), ...)",
                        k.version
                    ),
                    status: None,
                }
                .throw());
            }
        }
        Ok(())
    }

    /// An update of a key the catalog knows changes only what the run's pending change
    /// decided (no webhook or hand-run script re-enables or widens a key).
    fn check_update(&self, name: &str, req: &UpdateRequest) -> RhaiResult<()> {
        let scope = self.scope()?;
        let keys = &self.services.keys;
        let Some(kid) = self.keys(keys.virtual_named(scope, name))? else {
            return Ok(());
        };
        let current = self.keys(keys.in_group(scope, &kid))?;
        let pending = match &*self.pending.lock().unwrap() {
            Some(Pending::Change(p)) => Some(p.clone()),
            _ => None,
        };
        self.keys(async { keys.check_remote_update(&current, pending.as_ref(), req) })
    }

    /// Notes that the HSM created the run's reserved key, or a version of a rotated key.
    fn created(&self, k: &RemoteKey) {
        let ours = match &*self.pending.lock().unwrap() {
            Some(Pending::New(p)) => p.hsm_name().eq_ignore_ascii_case(&k.name),
            Some(Pending::Rotation(r)) => r.plan_for(&k.name).is_some(),
            _ => false,
        };
        if ours {
            self.reached_hsm
                .lock()
                .unwrap()
                .insert(k.name.to_lowercase());
        }
    }
}

fn remote_id(k: &RemoteKey) -> Option<String> {
    Some(k.id.clone())
}

pub fn module(ctx: &Arc<RunContext>) -> Module {
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
    m.set_native_fn("vault_type", move || {
        let link = c.link()?;
        Ok(crate::kms::vault_type_of(link.conn.kind).as_str())
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
        c.check_reserved(&req.name)?;
        c.check_name(&req.name)?;
        let k = c.journaled(
            HsmChange::CreateKey,
            &req.name,
            json!({"name": req.name}),
            c.services.kms.create_key(link, &req),
            remote_id,
        )?;
        c.created(&k);
        c.log(&format!("created key {} in the HSM", k.id));
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
        let k = c.journaled(
            HsmChange::CreateKek,
            &req.name,
            json!({"name": req.name, "purpose": "byok-kek"}),
            c.services.kms.create_key(link, &req),
            remote_id,
        )?;
        c.keks.lock().unwrap().insert(req.name.to_lowercase());
        c.log(&format!("created key-exchange key {}", k.id));
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn(
        "import_key",
        move |name: ImmutableString, material: Secret, opts: Map| {
            let link = c.link()?;
            c.check_reserved(&name)?;
            c.check_name(&name)?;
            if !material.plain_ok {
                return Err(HostError::new(
                    HostErrorKind::Denied,
                    "this key material may not leave unwrapped (its key does not permit EXPORT); bring it in by BYOK (byok::wrap)",
                )
                .throw());
            }
            let req = import_request(link, &name, material_of(&material.material), &opts)?;
            let k = c.journaled(
                HsmChange::ImportKey,
                &name,
                json!({"name": name.as_str(), "byok": false}),
                c.services.kms.import_key(link, &req),
                remote_id,
            )?;
            c.created(&k);
            c.log(&format!("imported key material into {}", k.id));
            Ok(c.remember(&k))
        },
    );
    let c = ctx.clone();
    m.set_native_fn(
        "import_key",
        move |name: ImmutableString, blob: ByokBlob, opts: Map| {
            let link = c.link()?;
            c.check_reserved(&name)?;
            c.check_name(&name)?;
            let req = import_request(link, &name, blob.material(), &opts)?;
            let k = c.journaled(
                HsmChange::ImportKey,
                &name,
                json!({"name": name.as_str(), "byok": true}),
                c.services.kms.import_key(link, &req),
                remote_id,
            )?;
            c.created(&k);
            c.log(&format!("imported a BYOK transfer blob into {}", k.id));
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
        c.check_name(&name)?;
        c.check_update(&name, &req)?;
        let key = KeyRef {
            name: name.to_string(),
            version: None,
        };
        let k = c.journaled(
            HsmChange::UpdateKey,
            &name,
            json!({"name": name.as_str(), "changes": v}),
            c.services.kms.update_key(link, &key, &req),
            remote_id,
        )?;
        c.log(&format!("updated {} in the HSM", k.id));
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn("rotate_key", move |name: ImmutableString| {
        let link = c.link()?;
        c.check_name(&name)?;
        c.check_reserved(&name)?;
        let k = c.journaled(
            HsmChange::RotateKey,
            &name,
            json!({"name": name.as_str()}),
            c.services.kms.rotate_key(link, &name),
            remote_id,
        )?;
        c.created(&k);
        c.log(&format!("rotated {name} in the HSM: version {}", k.version));
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn("delete_key", move |name: ImmutableString| {
        let link = c.link()?;
        c.check_name(&name)?;
        let d = c.journaled(
            HsmChange::DeleteKey,
            &name,
            json!({"name": name.as_str()}),
            c.services.kms.delete_key(link, &name),
            |d| Some(d.key.id.clone()),
        )?;
        c.log(&format!("soft-deleted {name} in the HSM"));
        Ok(from_json(&deleted_json(&d)))
    });
    let c = ctx.clone();
    m.set_native_fn("recover_key", move |name: ImmutableString| {
        let link = c.link()?;
        c.check_name(&name)?;
        let k = c.journaled(
            HsmChange::RecoverKey,
            &name,
            json!({"name": name.as_str()}),
            c.services.kms.recover_key(link, &name),
            remote_id,
        )?;
        c.log(&format!("recovered {name} in the HSM"));
        Ok(c.remember(&k))
    });
    let c = ctx.clone();
    m.set_native_fn("purge_key", move |name: ImmutableString| {
        let link = c.link()?;
        c.check_name(&name)?;
        c.journaled(
            HsmChange::PurgeKey,
            &name,
            json!({"name": name.as_str()}),
            c.services.kms.purge_key(link, &name),
            |_| None,
        )?;
        c.log(&format!("purged {name} in the HSM"));
        Ok(())
    });
    let c = ctx.clone();
    m.set_native_fn("backup_key", move |name: ImmutableString| {
        let link = c.link()?;
        let b = c.kms(c.services.kms.backup_key(link, &name))?;
        c.log(&format!("backed up {name} ({} bytes)", b.len()));
        Ok(Backup {
            blob: Arc::new(b),
            name: name.to_string(),
        })
    });
    let c = ctx.clone();
    m.set_native_fn("restore_key", move |backup: Backup| {
        let link = c.link()?;
        c.check_name(&backup.name)?;
        // The backup names its key (a key the catalog knows is checked as it is); the HSM
        // has the last word on what it restores.
        let k = c.journaled(
            HsmChange::RestoreKey,
            &backup.name,
            json!({}),
            c.services.kms.restore_key(link, &backup.blob),
            remote_id,
        )?;
        c.log(&format!("restored {} from a backup", k.id));
        Ok(c.remember(&k))
    });
    m
}

/// Whether imports into the link's instance ask for HSM protection: everywhere but in a
/// Standard vault, which has no HSM.
pub(super) fn hsm_protected(link: &crate::kms::Link) -> bool {
    link.conn.kind != crate::plugins::kms::InstanceKind::Standard
}

fn import_request(
    link: &crate::kms::Link,
    name: &str,
    material: KeyMaterial,
    opts: &Map,
) -> RhaiResult<ImportRequest> {
    let v = to_json(&Dynamic::from_map(opts.clone()));
    Ok(ImportRequest {
        name: name.to_string(),
        material,
        ops: ops_from_json(&v["ops"])?,
        enabled: v["enabled"].as_bool().unwrap_or(true),
        not_before: v["not_before"].as_i64(),
        expires: v["expires"].as_i64(),
        tags: tags_from_json(&v["tags"]),
        hsm: hsm_protected(link),
    })
}

/// Key material in the contract's shape (private components, big-endian).
pub(super) fn material_of(m: &keyward_crypto::Material) -> KeyMaterial {
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

pub fn byok_module() -> Module {
    let mut m = Module::new();
    m.set_native_fn("wrap", |material: Secret, kek: Map| {
        let v = to_json(&Dynamic::from_map(kek));
        let kek_id = str_field(&v, "id")?;
        let n = b64url_field(&v["jwk"], "n")?;
        let e = b64url_field(&v["jwk"], "e")?;
        let public = keyward_crypto::rsa_public(&n, &e)
            .map_err(|e| invalid(format!("the key-exchange key is not an RSA key: {e}")))?;
        let spec = spec_of_material(&material.material);
        let blob = keyward_crypto::byok_transfer_document(
            &kek_id,
            &public,
            &material.material.to_der(),
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
