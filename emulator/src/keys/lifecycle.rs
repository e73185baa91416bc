//! Keys and their versions: create, import (plain or BYOK), read, list, update, soft delete,
//! recover, purge, backup and restore.

use super::*;

use super::model::*;

impl Shared {
    /// Purges soft-deleted keys whose retention ran out (only takes the write lock when
    /// there is something to purge).
    pub(super) fn housekeeping(&self, hsm: &str) {
        let now = self.clock.now();
        let due = self
            .world
            .read()
            .unwrap()
            .hsms
            .get(hsm)
            .is_some_and(|h| h.deleted.values().any(|d| d.scheduled_purge <= now));
        if due {
            let purged = self
                .world
                .write()
                .unwrap()
                .hsms
                .get_mut(hsm)
                .map_or(0, |h| h.purge_expired(now));
            if purged > 0 {
                tracing::info!(hsm, purged, "retention expired: purged soft-deleted keys");
                self.persist();
            }
        }
    }

    /// Authorizes, checks the api-version and runs housekeeping: the preamble of every call.
    pub(super) fn begin(
        &self,
        headers: &HeaderMap,
        hsm: &str,
        q: &HashMap<String, String>,
        p: Permission,
    ) -> Result<String, AzureError> {
        let api = api_version(q)?;
        self.authorize_hsm(headers, hsm, p)?;
        self.housekeeping(hsm);
        Ok(api)
    }

    pub(super) fn with_hsm<T>(
        &self,
        hsm: &str,
        f: impl FnOnce(&Hsm) -> Result<T, AzureError>,
    ) -> Result<T, AzureError> {
        let world = self.world.read().unwrap();
        f(world.hsms.get(hsm).expect("authorized HSMs exist"))
    }

    pub(super) fn with_hsm_mut<T>(
        &self,
        hsm: &str,
        f: impl FnOnce(&mut Hsm) -> Result<T, AzureError>,
    ) -> Result<T, AzureError> {
        let r = {
            let mut world = self.world.write().unwrap();
            f(world.hsms.get_mut(hsm).expect("authorized HSMs exist"))
        };
        if r.is_ok() {
            self.persist();
        }
        r
    }
}

pub(super) fn not_deleted(h: &Hsm, name: &str) -> Result<(), AzureError> {
    if h.deleted.contains_key(name) {
        return Err(AzureError::deleted_but_recoverable(name));
    }
    Ok(())
}

pub(super) fn find<'a>(
    h: &'a Hsm,
    name: &str,
    version: Option<&str>,
) -> Result<&'a KeyVersion, AzureError> {
    let record = h
        .keys
        .get(name)
        .ok_or_else(|| AzureError::key_not_found(name))?;
    match version {
        None | Some("") => Ok(record.latest()),
        Some(v) => record
            .version(v)
            .ok_or_else(|| AzureError::key_not_found(&format!("{name}/{v}"))),
    }
}

/// Managed HSM keeps at most this many versions of a key; rotations count towards it.
pub const MAX_VERSIONS: usize = 100;

/// Adds a version to `name` (creating the key), refusing names held by deleted keys and keys
/// that have all the versions Managed HSM allows.
pub(super) fn add_version(h: &mut Hsm, name: &str, v: KeyVersion) -> Result<(), AzureError> {
    not_deleted(h, name)?;
    let record = h.keys.get_or_insert_with(name, || KeyRecord {
        versions: vec![],
        rotation_policy: None,
    });
    if record.versions.len() >= MAX_VERSIONS {
        return Err(too_many_versions(name));
    }
    record.versions.push(v);
    Ok(())
}

/// The answer to a new version beyond the limit. Azure documents the limit but not the error
/// body; this one follows its conflict errors.
pub(super) fn too_many_versions(name: &str) -> AzureError {
    AzureError::kv(
        axum::http::StatusCode::CONFLICT,
        "Conflict",
        format!(
            "Key {name} has {MAX_VERSIONS} versions, the most a Managed HSM key can have; no version can be added."
        ),
    )
    .with_inner("KeyVersionLimitReached")
}

pub(super) async fn create(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Create)?;
    check_name(&name)?;
    let req: CreateIn = parse_body(body)?;
    let kind = s.with_hsm(&hsm, |h| Ok(h.kind))?;
    let (kty, protected) = protection(kind, &req.kty, false)?;
    check_attributes(&req.attributes)?;
    let policy = release_policy(&req.attributes, req.release_policy.as_ref(), protected)?;
    let ops = req.key_ops.unwrap_or_else(|| default_ops(kty));
    check_ops(kty, &ops)?;
    let tags = req.tags.unwrap_or_default();
    check_tags(&tags)?;
    if s.with_hsm(&hsm, |h| Ok(h.deleted.contains_key(&name)))? {
        return Err(AzureError::deleted_but_recoverable(&name));
    }
    // Key generation can take seconds (RSA-4096): never under the lock.
    let material = match kty {
        Kty::Rsa => {
            let bits = req.key_size.unwrap_or(2048);
            tokio::task::spawn_blocking(move || Material::generate_rsa(bits, req.public_exponent))
                .await
                .expect("keygen")?
        }
        Kty::Ec => {
            if req.key_size.is_some() {
                return Err(AzureError::bad_parameter(
                    "key_size is not valid for EC keys; give 'crv'.",
                ));
            }
            Material::generate_ec(Curve::parse(req.crv.as_deref().unwrap_or("P-256"))?)
        }
        Kty::Oct => Material::generate_oct(req.key_size.unwrap_or(256))?,
    };
    let now = s.clock.now();
    let version = KeyVersion {
        id: new_version_id(),
        material,
        ops,
        enabled: req.attributes.enabled.unwrap_or(true),
        nbf: req.attributes.nbf,
        exp: req.attributes.exp,
        created: now,
        updated: now,
        tags,
        exportable: policy.is_some(),
        hsm: protected,
        release_policy: policy,
    };
    s.with_hsm_mut(&hsm, |h| {
        add_version(h, &name, version)?;
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

/// BYOK blobs whose plaintext `Shared::byok_opened` keeps.
const BYOK_OPENED_KEPT: usize = 64;

/// The key a BYOK blob targets, unwrapped with the key-exchange key it names. The KEK is
/// looked up under the HSM's read lock and the RSA unwrap (milliseconds) done outside any
/// lock: an HSM does not stop serving its other keys while it unwraps one import.
pub(super) fn byok_material(
    s: &Shared,
    hsm: &str,
    kty: Kty,
    crv: Option<Curve>,
    key_hsm: &str,
) -> Result<Material, AzureError> {
    let doc_bytes = decode_b64("key_hsm", key_hsm)?;
    let doc: Value = serde_json::from_slice(&doc_bytes).map_err(|_| {
        AzureError::bad_parameter("'key_hsm' is not a BYOK transfer document (JSON).")
    })?;
    let header = &doc["header"];
    if header["enc"] != "CKM_RSA_AES_KEY_WRAP" {
        return Err(AzureError::bad_parameter(
            "The BYOK transfer must use enc CKM_RSA_AES_KEY_WRAP.",
        ));
    }
    let kek_id = header["kid"]
        .as_str()
        .ok_or_else(|| AzureError::bad_parameter("The BYOK header has no 'kid'."))?;
    // kid: https://{host}[/hsm/{name}]/keys/{kek}/{version}
    let mut parts = kek_id.rsplit('/');
    let (version, kek_name, keys) = (parts.next(), parts.next(), parts.next());
    let (Some(version), Some(kek_name), Some("keys")) = (version, kek_name, keys) else {
        return Err(AzureError::bad_parameter(format!(
            "The BYOK key exchange key id '{kek_id}' is not a key identifier."
        )));
    };
    let kek = s.with_hsm(hsm, |h| {
        let kek = find(h, kek_name, Some(version)).map_err(|_| {
            AzureError::bad_parameter(format!(
                "The key exchange key '{kek_id}' does not exist in this HSM."
            ))
        })?;
        if kek.ops != ["import"] {
            return Err(AzureError::bad_parameter(
                "The key exchange key must have 'import' as its only key operation.",
            ));
        }
        Ok(kek.material.clone())
    })?;
    let ciphertext = decode_b64("ciphertext", doc["ciphertext"].as_str().unwrap_or_default())?;
    let digest: [u8; 32] = {
        use sha2::Digest;
        let mut d = sha2::Sha256::new();
        d.update(kek_id.as_bytes());
        d.update([0]);
        d.update(&ciphertext);
        d.finalize().into()
    };
    let opened = s.byok_opened.lock().unwrap().get(&digest).cloned();
    let target = match opened {
        Some(t) => t,
        None => {
            let t = crypto::byok_unwrap(&kek, &ciphertext)?;
            let mut memo = s.byok_opened.lock().unwrap();
            if memo.len() >= BYOK_OPENED_KEPT {
                memo.clear();
            }
            memo.insert(digest, t.clone());
            t
        }
    };
    Ok(Material::from_der(kty, crv, &target)?)
}

pub(super) async fn import(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Import)?;
    check_name(&name)?;
    let req: ImportIn = parse_body(body)?;
    let kty_name = req
        .key
        .get("kty")
        .and_then(Value::as_str)
        .ok_or_else(|| AzureError::bad_parameter("The key is missing 'kty'."))?;
    let kind = s.with_hsm(&hsm, |h| Ok(h.kind))?;
    let byok = req.key.get("key_hsm").is_some();
    let (kty, protected) = protection(kind, kty_name, byok || req.hsm == Some(true))?;
    check_attributes(&req.attributes)?;
    let policy = release_policy(&req.attributes, req.release_policy.as_ref(), protected)?;
    let ops: Vec<String> = match req.key.get("key_ops") {
        Some(v) => serde_json::from_value(v.clone())
            .map_err(|_| AzureError::bad_parameter("'key_ops' must be a list of strings."))?,
        None => default_ops(kty),
    };
    check_ops(kty, &ops)?;
    let tags = req.tags.unwrap_or_default();
    check_tags(&tags)?;
    let crv = match req.key.get("crv").and_then(Value::as_str) {
        Some(c) => Some(Curve::parse(c)?),
        None => None,
    };
    let material = match req.key.get("key_hsm").and_then(Value::as_str) {
        Some(blob) => {
            let (shared, on, blob) = (s.clone(), hsm.clone(), blob.to_string());
            tokio::task::spawn_blocking(move || byok_material(&shared, &on, kty, crv, &blob))
                .await
                .expect("unwrapping does not panic")?
        }
        None => Material::from_jwk(kty, &req.key)?,
    };
    let now = s.clock.now();
    s.with_hsm_mut(&hsm, |h| {
        not_deleted(h, &name)?;
        let version = KeyVersion {
            id: new_version_id(),
            material,
            ops,
            enabled: req.attributes.enabled.unwrap_or(true),
            nbf: req.attributes.nbf,
            exp: req.attributes.exp,
            created: now,
            updated: now,
            tags,
            exportable: policy.is_some(),
            hsm: protected,
            release_policy: policy,
        };
        add_version(h, &name, version)?;
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

pub(super) async fn get_key(
    s: &Shared,
    base: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    hsm: &str,
    name: &str,
    version: Option<&str>,
) -> Reply {
    s.begin(headers, hsm, q, Permission::Read)?;
    s.with_hsm(hsm, |h| {
        json(key_bundle(base, h, name, find(h, name, version)?))
    })
}

pub(super) async fn get_latest(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    get_key(&s, &base, &headers, &q, &hsm, &name, None).await
}

pub(super) async fn get_version(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name, version)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    get_key(&s, &base, &headers, &q, &hsm, &name, Some(&version)).await
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn update_key(
    s: &Shared,
    base: &str,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    hsm: &str,
    name: &str,
    version: Option<&str>,
    body: Body,
) -> Reply {
    s.begin(headers, hsm, q, Permission::Update)?;
    let req: UpdateIn = parse_body(body)?;
    check_attributes(&req.attributes)?;
    if let Some(tags) = &req.tags {
        check_tags(tags)?;
    }
    let now = s.clock.now();
    s.with_hsm_mut(hsm, |h| {
        let id = find(h, name, version)?.id.clone();
        let v = h
            .keys
            .get_mut(name)
            .and_then(|r| r.version_mut(&id))
            .expect("found above");
        if let Some(ops) = req.key_ops {
            check_ops(v.material.family(), &ops)?;
            v.ops = ops;
        }
        let a = req.attributes;
        let (nbf, exp) = (a.nbf.or(v.nbf), a.exp.or(v.exp));
        if let (Some(nbf), Some(exp)) = (nbf, exp)
            && nbf >= exp
        {
            return Err(AzureError::bad_parameter(
                "The key's 'nbf' must be before its 'exp'.",
            ));
        }
        v.enabled = a.enabled.unwrap_or(v.enabled);
        v.nbf = nbf;
        v.exp = exp;
        if let Some(tags) = req.tags {
            v.tags = tags;
        }
        v.updated = now;
        let v = h.keys[name].version(&id).expect("exists");
        json(key_bundle(base, h, name, v))
    })
}

pub(super) async fn update_latest(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    update_key(&s, &base, &headers, &q, &hsm, &name, None, body).await
}

pub(super) async fn update_version(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name, version)): Path<(String, String, String)>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    update_key(&s, &base, &headers, &q, &hsm, &name, Some(&version), body).await
}

pub(super) async fn list_keys(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path(hsm): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    let api = s.begin(&headers, &hsm, &q, Permission::List)?;
    s.with_hsm(&hsm, |h| {
        // Continuation tokens are folded names: the order the map iterates in.
        let items = |after: Option<&str>| {
            h.keys.after(after).map(|(folded, name, r)| {
                (
                    folded.to_string(),
                    key_item(&base, h, name, r.latest(), false),
                )
            })
        };
        json(paged(&q, &base, "/keys", &api, items)?)
    })
}

pub(super) async fn list_versions(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    let api = s.begin(&headers, &hsm, &q, Permission::List)?;
    s.with_hsm(&hsm, |h| {
        let record = h
            .keys
            .get(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        // Continuation is by position, encoded so that tokens sort like positions.
        let items = |after: Option<&str>| {
            let skip = after
                .and_then(|a| a.parse::<usize>().ok())
                .map_or(0, |a| a + 1);
            record
                .versions
                .iter()
                .enumerate()
                .skip(skip)
                .map(|(i, v)| (format!("{i:08}"), key_item(&base, h, &name, v, true)))
        };
        json(paged(
            &q,
            &base,
            &format!("/keys/{name}/versions"),
            &api,
            items,
        )?)
    })
}

pub(super) async fn delete(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Delete)?;
    let now = s.clock.now();
    s.with_hsm_mut(&hsm, |h| {
        let (name, record) = h
            .keys
            .remove(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        let deleted = DeletedKey {
            record,
            deleted: now,
            scheduled_purge: now + h.retention_days as i64 * 86_400,
        };
        let mut bundle = key_bundle(&base, h, &name, deleted.record.latest());
        deleted_fields(&base, &name, &deleted, &mut bundle);
        h.deleted.insert(&name, deleted);
        json(bundle)
    })
}

pub(super) async fn list_deleted(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path(hsm): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    let api = s.begin(&headers, &hsm, &q, Permission::List)?;
    s.with_hsm(&hsm, |h| {
        let items = |after: Option<&str>| {
            h.deleted.after(after).map(|(folded, name, d)| {
                let mut item = key_item(&base, h, name, d.record.latest(), false);
                deleted_fields(&base, name, d, &mut item);
                (folded.to_string(), item)
            })
        };
        json(paged(&q, &base, "/deletedkeys", &api, items)?)
    })
}

pub(super) async fn get_deleted(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Read)?;
    s.with_hsm(&hsm, |h| {
        let d = h
            .deleted
            .get(&name)
            .ok_or_else(|| AzureError::deleted_key_not_found(&name))?;
        let name = h.deleted.created_name(&name).expect("found above");
        let mut bundle = key_bundle(&base, h, name, d.record.latest());
        deleted_fields(&base, name, d, &mut bundle);
        json(bundle)
    })
}

pub(super) async fn recover(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Recover)?;
    s.with_hsm_mut(&hsm, |h| {
        if h.keys.contains_key(&name) {
            return Err(AzureError::kv(
                StatusCode::CONFLICT,
                "Conflict",
                format!("Key {name} already exists."),
            ));
        }
        let (name, d) = h
            .deleted
            .remove(&name)
            .ok_or_else(|| AzureError::deleted_key_not_found(&name))?;
        h.keys.insert(&name, d.record);
        json(key_bundle(&base, h, &name, h.keys[&name].latest()))
    })
}

pub(super) async fn purge(
    State(s): State<Arc<Shared>>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Purge)?;
    s.with_hsm_mut(&hsm, |h| {
        if !h.deleted.contains_key(&name) {
            return Err(AzureError::deleted_key_not_found(&name));
        }
        if h.purge_protection {
            return Err(AzureError::forbidden(
                "Operation \"purge\" is not allowed because purge protection is enabled for this vault. Key Vault service will automatically purge it after the retention period has passed.",
                "PurgeProtectionEnabled",
            ));
        }
        h.deleted.remove(&name);
        Ok(StatusCode::NO_CONTENT.into_response())
    })
}

pub(super) const BACKUP_MAGIC: &[u8] = b"KWEMB1";

pub(super) fn backup_aad(subscription: &str) -> Vec<u8> {
    format!("keyward-emulator-backup|{subscription}").into_bytes()
}

pub(super) async fn backup(
    State(s): State<Arc<Shared>>,
    Path((hsm, name)): Path<(String, String)>,
    Query(q): Q,
    headers: HeaderMap,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Backup)?;
    s.with_hsm(&hsm, |h| {
        let record = h
            .keys
            .get(&name)
            .ok_or_else(|| AzureError::key_not_found(&name))?;
        let name = h.keys.created_name(&name).expect("found above");
        let plain =
            serde_json::to_vec(&json!({"name": name, "record": record})).expect("serialize");
        let iv = crypto::random_bytes(12);
        let sealed = crypto::gcm_seal(&s.backup_key, &iv, &plain, &backup_aad(&h.subscription))?;
        let mut blob = BACKUP_MAGIC.to_vec();
        blob.extend(iv);
        blob.extend(sealed);
        json(json!({"value": b64url(&blob)}))
    })
}

pub(super) async fn restore(
    State(s): State<Arc<Shared>>,
    Extension(HsmBase(base)): Extension<HsmBase>,
    Path(hsm): Path<String>,
    Query(q): Q,
    headers: HeaderMap,
    body: Body,
) -> Reply {
    s.begin(&headers, &hsm, &q, Permission::Restore)?;
    let req: BlobIn = parse_body(body)?;
    let blob = decode_b64("value", &req.value)?;
    let invalid = || AzureError::bad_parameter("Backup blob contains invalid or corrupt version.");
    let rest = blob.strip_prefix(BACKUP_MAGIC).ok_or_else(invalid)?;
    if rest.len() < 12 {
        return Err(invalid());
    }
    let (iv, sealed) = rest.split_at(12);
    s.with_hsm_mut(&hsm, |h| {
        let plain = crypto::gcm_open(&s.backup_key, iv, sealed, &backup_aad(&h.subscription)).map_err(|_| {
            AzureError::bad_parameter("Backup blob is corrupt or was created by a different subscription or service.")
        })?;
        #[derive(Deserialize)]
        struct Backup {
            name: String,
            record: KeyRecord,
        }
        let b: Backup = serde_json::from_slice(&plain).map_err(|_| invalid())?;
        not_deleted(h, &b.name)?;
        if h.keys.contains_key(&b.name) {
            return Err(AzureError::kv(
                StatusCode::CONFLICT,
                "Conflict",
                format!("There was a conflict restoring the key '{}'. A key with that name already exists.", b.name),
            ));
        }
        h.keys.insert(&b.name, b.record);
        json(key_bundle(&base, h, &b.name, h.keys[&b.name].latest()))
    })
}
