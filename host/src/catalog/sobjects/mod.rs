//! Security objects (keys): metadata, sealed material for keys Keyward holds, the external
//! reference of virtual keys, custom metadata (tags), links between keys and escrowed
//! backups.
//!
//! Reads that take an id from a request are scoped to an account. Writes after creation are
//! field-level [`Patch`]es applied with compare-and-swap on the row's `version`, so a write
//! never carries back a value it did not mean to change; the integrity rules that can be
//! stated on one row (EXPORT is never added, a destroyed key stays destroyed, ...) are also
//! triggers in the schema (migration 3), under the key service's own checks.

use crate::catalog::db::{self, Row};
mod links;
mod model;

use super::{CatalogError, Conn, Result};

pub use links::*;
pub use model::*;

/// The sealing context of a key's material.
pub fn material_context(kid: &str) -> String {
    format!("sobject:{kid}:material")
}

/// The sealing context of a key's escrowed backup.
pub fn escrow_context(kid: &str) -> String {
    format!("sobject:{kid}:escrow")
}

fn from_row(r: &Row) -> Result<SObject> {
    let corrupt = |what: &str| {
        CatalogError::Corrupt(format!("sobject {}: {what}", r.get::<String, _>("kid")))
    };
    let creator = Creator::from_parts(r.get("creator_kind"), r.get("creator_id"));
    let ops: String = r.get("key_ops");
    let external: Option<String> = r.get("external");
    let curve: Option<String> = r.get("elliptic_curve");
    Ok(SObject {
        kid: r.get("kid"),
        account_id: r.get("account_id"),
        group_id: r.get("group_id"),
        name: r.get("name"),
        description: r.get("description"),
        obj_type: ObjType::parse(r.get("obj_type")).ok_or_else(|| corrupt("obj_type"))?,
        key_size: r.get::<Option<i64>, _>("key_size").map(|s| s as u32),
        curve: curve
            .map(|c| parse_curve(&c).ok_or_else(|| corrupt("elliptic_curve")))
            .transpose()?,
        key_ops: serde_json::from_str(&ops).map_err(|_| corrupt("key_ops"))?,
        enabled: r.get("enabled"),
        activation_date: r.get("activation_date"),
        deactivation_date: r.get("deactivation_date"),
        compromise_date: r.get("compromise_date"),
        destruction_date: r.get("destruction_date"),
        revocation_reason: r.get("revocation_reason"),
        created_at: r.get("created_at"),
        lastused_at: r.get("lastused_at"),
        creator,
        origin: Origin::parse(r.get("origin")).ok_or_else(|| corrupt("origin"))?,
        never_exportable: r.get("never_exportable"),
        material: r.get("material"),
        pub_key: r.get("pub_key"),
        kcv: r.get("kcv"),
        external: external
            .map(|e| serde_json::from_str(&e))
            .transpose()
            .map_err(|_| corrupt("external"))?,
        tags: Tags::new(),
        rotated_at: r.get("rotated_at"),
        version: r.get("version"),
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("catalog values serialize")
}

async fn load_tags(c: &mut Conn, objects: &mut [SObject]) -> Result<()> {
    if objects.is_empty() {
        return Ok(());
    }
    let mut q: db::Builder =
        db::Builder::new("SELECT kid, name, value FROM sobject_tags WHERE kid IN (");
    let mut sep = q.separated(", ");
    for o in objects.iter() {
        sep.push_bind(o.kid.clone());
    }
    q.push(")");
    for r in q.build().fetch_all(c).await? {
        let kid: String = r.get("kid");
        if let Some(o) = objects.iter_mut().find(|o| o.kid == kid) {
            o.tags.insert(r.get("name"), r.get("value"));
        }
    }
    Ok(())
}

async fn save_tags(c: &mut Conn, kid: &str, tags: &Tags) -> Result<()> {
    db::query("DELETE FROM sobject_tags WHERE kid = ?")
        .bind(kid)
        .execute(&mut *c)
        .await?;
    for (k, v) in tags {
        db::query("INSERT INTO sobject_tags (kid, name, value) VALUES (?, ?, ?)")
            .bind(kid)
            .bind(k)
            .bind(v)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

pub async fn insert(c: &mut Conn, o: &SObject) -> Result<()> {
    db::query(
        "INSERT INTO sobjects (kid, account_id, group_id, name, description, obj_type, key_size, elliptic_curve, key_ops,
            enabled, activation_date, deactivation_date, compromise_date, destruction_date, revocation_reason, created_at,
            lastused_at, creator_kind, creator_id, origin, never_exportable, material, pub_key, kcv, external, rotated_at, version)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)",
    )
    .bind(&o.kid)
    .bind(&o.account_id)
    .bind(&o.group_id)
    .bind(&o.name)
    .bind(&o.description)
    .bind(o.obj_type.as_str())
    .bind(o.key_size.map(i64::from))
    .bind(o.curve.map(curve_name))
    .bind(to_json(&o.key_ops))
    .bind(o.enabled)
    .bind(o.activation_date)
    .bind(o.deactivation_date)
    .bind(o.compromise_date)
    .bind(o.destruction_date)
    .bind(&o.revocation_reason)
    .bind(o.created_at)
    .bind(o.lastused_at)
    .bind(o.creator.kind())
    .bind(o.creator.id())
    .bind(o.origin.as_str())
    .bind(o.never_exportable)
    .bind(&o.material)
    .bind(&o.pub_key)
    .bind(&o.kcv)
    .bind(o.external.as_ref().map(to_json))
    .bind(o.rotated_at)
    .execute(&mut *c)
    .await?;
    save_tags(c, &o.kid, &o.tags).await
}

/// A change to some fields of a key; `None` leaves a field as it is. Material is never set
/// by a patch: it is written once, when the key is created, and erased by `destroyed`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Patch {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub key_ops: Option<KeyOps>,
    pub enabled: Option<bool>,
    pub activation_date: Option<Option<i64>>,
    pub deactivation_date: Option<Option<i64>>,
    pub compromise_date: Option<i64>,
    /// Destroys the key: sets the date and erases the material.
    pub destroyed: Option<i64>,
    pub revocation_reason: Option<String>,
    pub tags: Option<Tags>,
    pub external: Option<ExternalKey>,
    pub pub_key: Option<Vec<u8>>,
    pub key_size: Option<u32>,
    /// The key was replaced by a rotation at this time.
    pub rotated_at: Option<i64>,
}

impl Patch {
    pub fn is_empty(&self) -> bool {
        self.fields().is_empty()
    }

    /// The names of the fields it changes (for the audit log).
    pub fn fields(&self) -> Vec<&'static str> {
        let mut f = Vec::new();
        let mut add = |set: bool, name: &'static str| {
            if set {
                f.push(name)
            }
        };
        add(self.name.is_some(), "name");
        add(self.description.is_some(), "description");
        add(self.key_ops.is_some(), "key_ops");
        add(self.enabled.is_some(), "enabled");
        add(self.activation_date.is_some(), "activation_date");
        add(self.deactivation_date.is_some(), "deactivation_date");
        add(self.compromise_date.is_some(), "compromise_date");
        add(self.destroyed.is_some(), "destruction_date");
        add(self.revocation_reason.is_some(), "revocation_reason");
        add(self.tags.is_some(), "custom_metadata");
        add(self.external.is_some(), "external");
        add(self.pub_key.is_some(), "pub_key");
        add(self.key_size.is_some(), "key_size");
        add(self.rotated_at.is_some(), "rotated_at");
        f
    }

    /// The object as it is after the patch.
    pub fn applied_to(&self, o: &SObject) -> SObject {
        let mut o = o.clone();
        if let Some(v) = &self.name {
            o.name = v.clone();
        }
        if let Some(v) = &self.description {
            o.description = v.clone();
        }
        if let Some(v) = &self.key_ops {
            o.key_ops = v.clone();
        }
        if let Some(v) = self.enabled {
            o.enabled = v;
        }
        if let Some(v) = self.activation_date {
            o.activation_date = v;
        }
        if let Some(v) = self.deactivation_date {
            o.deactivation_date = v;
        }
        if let Some(v) = self.compromise_date {
            o.compromise_date = Some(v);
        }
        if let Some(v) = self.destroyed {
            o.destruction_date = Some(v);
            o.material = None;
        }
        if let Some(v) = &self.revocation_reason {
            o.revocation_reason = Some(v.clone());
        }
        if let Some(v) = &self.tags {
            o.tags = v.clone();
        }
        if let Some(v) = &self.external {
            o.external = Some(v.clone());
        }
        if let Some(v) = &self.pub_key {
            o.pub_key = Some(v.clone());
        }
        if let Some(v) = self.key_size {
            o.key_size = Some(v);
        }
        if let Some(v) = self.rotated_at {
            o.rotated_at = Some(v);
        }
        o.version += 1;
        o
    }
}

/// Applies `patch` to the key if it is still at `version`. `false`: the key changed (or
/// went) since it was read; nothing was written.
pub async fn apply(
    c: &mut Conn,
    account: &str,
    kid: &str,
    version: i64,
    patch: &Patch,
) -> Result<bool> {
    let mut q: db::Builder = db::Builder::new("UPDATE sobjects SET version = version + 1");
    if let Some(v) = &patch.name {
        q.push(", name = ").push_bind(v.clone());
    }
    if let Some(v) = &patch.description {
        q.push(", description = ").push_bind(v.clone());
    }
    if let Some(v) = &patch.key_ops {
        q.push(", key_ops = ").push_bind(to_json(v));
    }
    if let Some(v) = patch.enabled {
        q.push(", enabled = ").push_bind(v);
    }
    if let Some(v) = patch.activation_date {
        q.push(", activation_date = ").push_bind(v);
    }
    if let Some(v) = patch.deactivation_date {
        q.push(", deactivation_date = ").push_bind(v);
    }
    if let Some(v) = patch.compromise_date {
        q.push(", compromise_date = ").push_bind(v);
    }
    if let Some(v) = patch.destroyed {
        q.push(", destruction_date = ")
            .push_bind(v)
            .push(", material = NULL");
    }
    if let Some(v) = &patch.revocation_reason {
        q.push(", revocation_reason = ").push_bind(v.clone());
    }
    if let Some(v) = &patch.external {
        q.push(", external = ").push_bind(to_json(v));
    }
    if let Some(v) = &patch.pub_key {
        q.push(", pub_key = ").push_bind(v.clone());
    }
    if let Some(v) = patch.key_size {
        q.push(", key_size = ").push_bind(i64::from(v));
    }
    if let Some(v) = patch.rotated_at {
        q.push(", rotated_at = ").push_bind(v);
    }
    q.push(" WHERE kid = ")
        .push_bind(kid.to_string())
        .push(" AND account_id = ")
        .push_bind(account.to_string())
        .push(" AND version = ")
        .push_bind(version);
    if q.build().execute(&mut *c).await?.rows_affected() != 1 {
        return Ok(false);
    }
    if let Some(tags) = &patch.tags {
        save_tags(c, kid, tags).await?;
    }
    Ok(true)
}

/// A key of `account`.
pub async fn get(c: &mut Conn, account: &str, kid: &str) -> Result<Option<SObject>> {
    let Some(row) = db::query("SELECT * FROM sobjects WHERE kid = ? AND account_id = ?")
        .bind(kid)
        .bind(account)
        .fetch_optional(&mut *c)
        .await?
    else {
        return Ok(None);
    };
    let mut objs = [from_row(&row)?];
    load_tags(c, &mut objs).await?;
    let [o] = objs;
    Ok(Some(o))
}

pub async fn get_by_name(c: &mut Conn, account: &str, name: &str) -> Result<Option<SObject>> {
    let kid: Option<String> =
        db::query("SELECT kid FROM sobjects WHERE account_id = ? AND name = ?")
            .bind(account)
            .bind(name)
            .fetch_optional(&mut *c)
            .await?
            .map(|r| r.get(0));
    match kid {
        Some(kid) => get(c, account, &kid).await,
        None => Ok(None),
    }
}

pub async fn delete(c: &mut Conn, account: &str, kid: &str) -> Result<bool> {
    Ok(
        db::query("DELETE FROM sobjects WHERE kid = ? AND account_id = ?")
            .bind(kid)
            .bind(account)
            .execute(c)
            .await?
            .rows_affected()
            == 1,
    )
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortBy {
    #[default]
    NameAsc,
    NameDesc,
    CreatedAsc,
    CreatedDesc,
}

#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub account_id: String,
    /// Only objects in these groups (the caller's visible groups); `None`: every group.
    pub visible_groups: Option<Vec<String>>,
    pub group_id: Option<String>,
    /// Exact name.
    pub name: Option<String>,
    /// Part of the name, any case.
    pub name_contains: Option<String>,
    pub obj_type: Option<ObjType>,
    /// Only virtual keys (held by an HSM) or only Keyward-held ones.
    pub external: Option<bool>,
    pub state: Option<KeyState>,
    pub now: i64,
    pub limit: u32,
    pub offset: u32,
    pub sort: SortBy,
}

fn push_filter(q: &mut db::Builder, f: &ListFilter) {
    q.push(" WHERE account_id = ")
        .push_bind(f.account_id.clone());
    if let Some(groups) = &f.visible_groups {
        if groups.is_empty() {
            q.push(" AND FALSE");
        } else {
            q.push(" AND group_id IN (");
            let mut sep = q.separated(", ");
            for g in groups {
                sep.push_bind(g.clone());
            }
            q.push(")");
        }
    }
    if let Some(g) = &f.group_id {
        q.push(" AND group_id = ").push_bind(g.clone());
    }
    if let Some(n) = &f.name {
        q.push(" AND name = ").push_bind(n.clone());
    }
    if let Some(part) = &f.name_contains {
        // `%`, `_` and the escape itself are literal here, not patterns.
        let escaped = part
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        q.push(" AND LOWER(name) LIKE ")
            .push_bind(format!("%{escaped}%"))
            .push(" ESCAPE '\\'");
    }
    if let Some(t) = f.obj_type {
        q.push(" AND obj_type = ").push_bind(t.as_str().to_string());
    }
    match f.external {
        Some(true) => {
            q.push(" AND external IS NOT NULL");
        }
        Some(false) => {
            q.push(" AND external IS NULL");
        }
        None => {}
    }
    let now = f.now;
    match f.state {
        None => {}
        Some(KeyState::Destroyed) => {
            q.push(" AND destruction_date IS NOT NULL");
        }
        Some(KeyState::Compromised) => {
            q.push(" AND destruction_date IS NULL AND compromise_date IS NOT NULL");
        }
        Some(KeyState::Deactivated) => {
            q.push(" AND destruction_date IS NULL AND compromise_date IS NULL AND deactivation_date <= ").push_bind(now);
        }
        Some(KeyState::PreActive) => {
            q.push(" AND destruction_date IS NULL AND compromise_date IS NULL AND (deactivation_date IS NULL OR deactivation_date > ")
                .push_bind(now)
                .push(") AND activation_date > ")
                .push_bind(now);
        }
        Some(KeyState::Active) => {
            q.push(" AND destruction_date IS NULL AND compromise_date IS NULL AND (deactivation_date IS NULL OR deactivation_date > ")
                .push_bind(now)
                .push(") AND (activation_date IS NULL OR activation_date <= ")
                .push_bind(now)
                .push(")");
        }
    }
}

pub async fn list(c: &mut Conn, f: &ListFilter) -> Result<Vec<SObject>> {
    let mut q: db::Builder = db::Builder::new("SELECT * FROM sobjects");
    push_filter(&mut q, f);
    q.push(match f.sort {
        SortBy::NameAsc => " ORDER BY name ASC",
        SortBy::NameDesc => " ORDER BY name DESC",
        SortBy::CreatedAsc => " ORDER BY created_at ASC, name ASC",
        SortBy::CreatedDesc => " ORDER BY created_at DESC, name ASC",
    });
    q.push(" LIMIT ")
        .push_bind(i64::from(f.limit))
        .push(" OFFSET ")
        .push_bind(i64::from(f.offset));
    let rows = q.build().fetch_all(&mut *c).await?;
    let mut objs = rows.iter().map(from_row).collect::<Result<Vec<_>>>()?;
    load_tags(c, &mut objs).await?;
    Ok(objs)
}

pub async fn count(c: &mut Conn, f: &ListFilter) -> Result<i64> {
    let mut q: db::Builder = db::Builder::new("SELECT COUNT(*) FROM sobjects");
    push_filter(&mut q, f);
    Ok(q.build().fetch_one(c).await?.get(0))
}

/// Records last use of keys (batched by the audit writer).
pub async fn mark_used(c: &mut Conn, kid: &str, at: i64) -> Result<()> {
    db::query(
        "UPDATE sobjects SET lastused_at = {greatest}(COALESCE(lastused_at, 0), ?) WHERE kid = ?",
    )
    .bind(at)
    .bind(kid)
    .execute(c)
    .await?;
    Ok(())
}

/// A virtual key as its group's sync sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ExternalRef {
    pub kid: String,
    pub name: String,
    pub enabled: bool,
    pub external: ExternalKey,
}

/// The current virtual keys of a group (without the versions rotations replaced).
pub async fn external_refs(c: &mut Conn, group_id: &str) -> Result<Vec<ExternalRef>> {
    let rows = db::query(
        "SELECT kid, name, enabled, external FROM sobjects WHERE group_id = ? AND external IS NOT NULL AND rotated_at IS NULL",
    )
    .bind(group_id)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            let text: String = r.get("external");
            Ok(ExternalRef {
                kid: r.get("kid"),
                name: r.get("name"),
                enabled: r.get("enabled"),
                external: serde_json::from_str(&text)
                    .map_err(|_| CatalogError::Corrupt("sobject external".into()))?,
            })
        })
        .collect()
}

/// Which of `labels` (remote key names) already have a virtual key in the group, compared
/// without case as the key manager compares them; the result holds them lowercased.
pub async fn external_labels_present(
    c: &mut Conn,
    group_id: &str,
    labels: &[String],
) -> Result<std::collections::HashSet<String>> {
    if labels.is_empty() {
        return Ok(Default::default());
    }
    let mut q: db::Builder = db::Builder::new(
        "SELECT lower({label}) FROM sobjects WHERE external IS NOT NULL AND rotated_at IS NULL AND group_id = ",
    );
    q.push_bind(group_id.to_string())
        .push(" AND lower({label}) IN (");
    let mut sep = q.separated(", ");
    for l in labels {
        sep.push_bind(l.to_lowercase());
    }
    q.push(")");
    Ok(q.build()
        .fetch_all(c)
        .await?
        .iter()
        .filter_map(|r| r.get::<Option<String>, _>(0))
        .collect())
}

/// The current virtual key of a group for a remote key name (compared without case).
pub async fn by_external_name(
    c: &mut Conn,
    account: &str,
    group_id: &str,
    name: &str,
) -> Result<Option<SObject>> {
    let kid: Option<String> = db::query(
        "SELECT kid FROM sobjects WHERE account_id = ? AND group_id = ? AND external IS NOT NULL
           AND rotated_at IS NULL AND lower({label}) = lower(?)",
    )
    .bind(account)
    .bind(group_id)
    .bind(name)
    .fetch_optional(&mut *c)
    .await?
    .map(|r| r.get(0));
    match kid {
        Some(kid) => get(c, account, &kid).await,
        None => Ok(None),
    }
}

/// Whether the account has a key of that name.
pub async fn name_taken(c: &mut Conn, account: &str, name: &str) -> Result<bool> {
    Ok(
        db::query("SELECT 1 FROM sobjects WHERE account_id = ? AND name = ?")
            .bind(account)
            .bind(name)
            .fetch_optional(c)
            .await?
            .is_some(),
    )
}

/// The versions rotations replaced of a group's HSM key (compared without case), oldest
/// first.
pub async fn replaced_versions(
    c: &mut Conn,
    account: &str,
    group_id: &str,
    name: &str,
) -> Result<Vec<SObject>> {
    let kids: Vec<String> = db::query(
        "SELECT kid FROM sobjects WHERE account_id = ? AND group_id = ? AND external IS NOT NULL
           AND rotated_at IS NOT NULL AND lower({label}) = lower(?)
         ORDER BY rotated_at",
    )
    .bind(account)
    .bind(group_id)
    .bind(name)
    .fetch_all(&mut *c)
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect();
    let mut out = Vec::with_capacity(kids.len());
    for kid in kids {
        if let Some(o) = get(c, account, &kid).await? {
            out.push(o);
        }
    }
    Ok(out)
}

/// How many virtual keys (current and replaced versions) a group's HSM key has.
pub async fn version_count(c: &mut Conn, group_id: &str, name: &str) -> Result<i64> {
    Ok(db::query(
        "SELECT COUNT(*) FROM sobjects WHERE group_id = ? AND external IS NOT NULL
           AND lower({label}) = lower(?)",
    )
    .bind(group_id)
    .bind(name)
    .fetch_one(c)
    .await?
    .get(0))
}
