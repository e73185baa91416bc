//! Groups: collections of keys with shared access, attached policies (crypto policy, key
//! metadata policy, custom policy plugins) and an optional link to an external KMS whose
//! secrets are stored sealed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::Principal;
use crate::catalog::groups::{self, CustomPolicy, ExternalLink, Group, GroupRole, secrets_context};
use crate::catalog::new_id;
use crate::catalog::sobjects::Creator;
use crate::kms;
use crate::policy::{CRYPTO_POLICY_PLUGIN, METADATA_POLICY_PLUGIN};

use super::accounts::validate_policy;
use super::extract::{Body, Caller, id};
use super::model::{CustomPolicyIo, GroupOut, Removable, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct GroupRequest {
    pub name: Option<String>,
    pub description: Option<String>,
    /// Crypto policy document, or `"remove"`.
    #[schema(value_type = Option<Object>)]
    pub cryptographic_policy: Option<Removable<Value>>,
    /// Key metadata policy document, or `"remove"`.
    #[schema(value_type = Option<Object>)]
    pub key_metadata_policy: Option<Removable<Value>>,
    /// Policy plugins of your own, each with its configuration (replaces the list).
    pub custom_policies: Option<Vec<CustomPolicyIo>>,
    /// Link to an external key manager, or `"remove"`.
    #[schema(value_type = Option<ExternalKmsIn>)]
    pub external_kms: Option<Removable<ExternalKmsIn>>,
}

/// The link of a group to an external key manager (Azure Managed HSM). Secrets
/// (`client_secret`, `tls.client_key`) are write-only: stored sealed, never returned.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalKmsIn {
    /// `AzureManagedHsm`.
    pub kind: String,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub subscription_id: Option<String>,
    /// The chosen instance (Managed HSM URI). Once set it cannot be changed.
    pub instance: Option<String>,
    /// Endpoint overrides: `identity`, `management`, `instance_suffix`.
    #[schema(value_type = Option<Object>)]
    pub endpoints: Option<Value>,
    pub tls: Option<TlsIn>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsIn {
    /// PEM of a CA to trust instead of the public roots; absent: the public roots.
    pub ca_pem: Option<String>,
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// Check that certificates name the host (default true).
    pub validate_hostname: Option<bool>,
}

pub use crate::kms::AZURE_MANAGED_HSM;

fn group_name(n: &str) -> ApiResult<String> {
    let n = n.trim();
    if n.is_empty() || n.len() > 256 {
        return Err(ApiError::field("name", "must be 1 to 256 characters"));
    }
    Ok(n.to_string())
}

/// Checks that `group` is one of `account`'s: an unknown id is a 404, another account's group
/// a 403.
pub async fn require_in_account(
    c: &mut crate::catalog::Conn,
    field: &str,
    group: &str,
    account: &str,
) -> ApiResult<()> {
    match groups::get(c, group).await? {
        Some(g) if g.account_id == account => Ok(()),
        Some(_) => Err(ApiError::Forbidden(format!(
            "{field}: group {group} belongs to another account"
        ))),
        None => Err(ApiError::NotFound(format!("{field}: no group {group}"))),
    }
}

/// The caller's view of a group: secrets replaced by `has_*` flags.
pub fn out(g: &Group, role: Option<GroupRole>) -> GroupOut {
    let parse = |p: &Option<String>| p.as_deref().and_then(|t| serde_json::from_str(t).ok());
    GroupOut {
        group_id: g.id.clone(),
        acct_id: g.account_id.clone(),
        name: g.name.clone(),
        description: g.description.clone(),
        created_at: time(g.created_at),
        creator: (&Creator::User(g.created_by.clone())).into(),
        cryptographic_policy: parse(&g.crypto_policy),
        key_metadata_policy: parse(&g.key_metadata_policy),
        custom_policies: g
            .custom_policies
            .iter()
            .map(|c| CustomPolicyIo {
                plugin: c.plugin.clone(),
                config: c.config.clone(),
            })
            .collect(),
        external_kms: g.link.as_ref().map(|l| {
            let mut v = l.config.clone();
            v["kind"] = json!(l.kind);
            v
        }),
        is_external: g.link.is_some(),
        connection_status: g.link.as_ref().map(|l| {
            l.config["connection"]["status"]
                .as_str()
                .unwrap_or("Unknown")
                .to_string()
        }),
        role: role.map(|r| r.as_str().to_string()),
    }
}

/// Merges a link update into the stored link: non-secret fields into `config`, secrets into
/// the sealed part.
fn merge_link(
    state: &AppState,
    group_id: &str,
    old: Option<&ExternalLink>,
    new: ExternalKmsIn,
) -> ApiResult<ExternalLink> {
    let secrets = match old {
        Some(l) => kms::unseal(&state.catalog, group_id, l)?,
        None => HashMap::new(),
    };
    let kind = new.kind.clone();
    let (config, secrets) = link_settings(old.map(|l| &l.config), secrets, new)?;
    let sealed = state.catalog.seal(
        &secrets_context(group_id),
        &serde_json::to_vec(&secrets).expect("serialize"),
    );
    Ok(ExternalLink {
        kind,
        config,
        secrets: Some(sealed),
    })
}

/// An `https://` URL with a host.
fn check_https(field: &str, url: &str) -> ApiResult<()> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| ApiError::field(field, "must be an https:// URL"))?;
    if rest.split(['/', ':']).next().unwrap_or_default().is_empty() {
        return Err(ApiError::field(field, "must name a host"));
    }
    Ok(())
}

/// The settings and secrets of a link after applying `new` to the current ones (none for a
/// new link), checked but not stored.
pub fn link_settings(
    old_config: Option<&Value>,
    mut secrets: HashMap<String, String>,
    new: ExternalKmsIn,
) -> ApiResult<(Value, HashMap<String, String>)> {
    if new.kind != AZURE_MANAGED_HSM {
        return Err(ApiError::field(
            "external_kms.kind",
            format!("'{}' is not supported (AzureManagedHsm)", new.kind),
        ));
    }
    let mut config = old_config.cloned().unwrap_or_else(|| json!({}));
    for (field, value) in [
        ("tenant_id", &new.tenant_id),
        ("client_id", &new.client_id),
        ("subscription_id", &new.subscription_id),
    ] {
        if let Some(v) = value {
            if v.trim().is_empty() {
                return Err(ApiError::field(
                    &format!("external_kms.{field}"),
                    "must not be empty",
                ));
            }
            config[field] = json!(v.trim());
        }
    }
    if let Some(instance) = &new.instance {
        check_https("external_kms.instance", instance)?;
        if let Some(current) = config["instance"].as_str()
            && current != instance
        {
            return Err(ApiError::Conflict(
                "the instance of a linked group cannot be changed".into(),
            ));
        }
        config["instance"] = json!(instance);
    }
    if let Some(e) = &new.endpoints {
        for k in e
            .as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            if !["identity", "management", "instance_suffix"].contains(&k.as_str()) {
                return Err(ApiError::field(
                    "external_kms.endpoints",
                    format!("unknown endpoint '{k}' (identity, management, instance_suffix)"),
                ));
            }
            let v = e[&k].as_str().ok_or_else(|| {
                ApiError::field(&format!("external_kms.endpoints.{k}"), "must be a string")
            })?;
            if k != "instance_suffix" {
                check_https(&format!("external_kms.endpoints.{k}"), v)?;
            }
        }
        config["endpoints"] = e.clone();
    }
    if let Some(s) = new.client_secret {
        if s.is_empty() {
            return Err(ApiError::field(
                "external_kms.client_secret",
                "must not be empty",
            ));
        }
        secrets.insert("client_secret".into(), s);
    }
    if let Some(tls) = new.tls {
        if let Some(k) = tls.client_key {
            secrets.insert("client_key".into(), k);
        }
        let mut t = config["tls"].take();
        if !t.is_object() {
            t = json!({"validate_hostname": true});
        }
        if let Some(ca) = tls.ca_pem {
            t["ca_pem"] = json!(ca);
        }
        if let Some(c) = tls.client_cert {
            t["client_cert"] = json!(c);
        }
        if let Some(v) = tls.validate_hostname {
            t["validate_hostname"] = json!(v);
        }
        config["tls"] = t;
    }
    // Check the TLS settings can be used before storing them.
    let tls = kms::tls_settings(&config, &secrets);
    tls.validate()
        .map_err(|e| ApiError::field("external_kms.tls", e))?;
    config["has_client_secret"] = json!(secrets.contains_key("client_secret"));
    if config["tls"].is_object() {
        config["tls"]["has_client_key"] = json!(secrets.contains_key("client_key"));
    }
    Ok((config, secrets))
}

async fn policies(
    state: &AppState,
    req: &GroupRequest,
) -> ApiResult<(
    Option<Option<String>>,
    Option<Option<String>>,
    Option<Vec<CustomPolicy>>,
)> {
    let crypto = match &req.cryptographic_policy {
        Some(Removable::Set(doc)) => Some(Some(
            validate_policy(state, "cryptographic_policy", CRYPTO_POLICY_PLUGIN, doc).await?,
        )),
        Some(Removable::Remove) => Some(None),
        None => None,
    };
    let metadata = match &req.key_metadata_policy {
        Some(Removable::Set(doc)) => Some(Some(
            validate_policy(state, "key_metadata_policy", METADATA_POLICY_PLUGIN, doc).await?,
        )),
        Some(Removable::Remove) => Some(None),
        None => None,
    };
    let custom = match &req.custom_policies {
        Some(list) => {
            let mut out = Vec::new();
            for (i, c) in list.iter().enumerate() {
                validate_policy(
                    state,
                    &format!("custom_policies[{i}].config"),
                    &c.plugin,
                    &c.config,
                )
                .await?;
                out.push(CustomPolicy {
                    plugin: c.plugin.clone(),
                    config: c.config.clone(),
                });
            }
            Some(out)
        }
        None => None,
    };
    Ok((crypto, metadata, custom))
}

#[utoipa::path(get, path = "/sys/v1/groups", tag = "groups", responses((status = 200, body = [GroupOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<GroupOut>>> {
    let mut conn = state.catalog.conn().await?;
    let all = groups::in_account(&mut conn, caller.account()).await?;
    Ok(Json(
        all.iter()
            .filter(|g| caller.access.can_read_group(&g.id))
            .map(|g| out(g, caller.access.group_roles.get(&g.id).copied()))
            .collect(),
    ))
}

/// Account administrators and members create groups; the creator administers the group.
#[utoipa::path(post, path = "/sys/v1/groups", tag = "groups", request_body = GroupRequest,
    responses((status = 201, body = GroupOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<GroupRequest>,
) -> ApiResult<(StatusCode, Json<GroupOut>)> {
    let Principal::User { user_id, .. } = caller.principal() else {
        return Err(ApiError::Forbidden(
            "applications do not create groups".into(),
        ));
    };
    if !caller.access.can_create_group() {
        return Err(ApiError::Forbidden("auditors do not create groups".into()));
    }
    let name = group_name(
        req.name
            .as_deref()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
    )?;
    let (crypto, metadata, custom) = policies(&state, &req).await?;
    let now = state.now();
    let gid = new_id();
    let link = match req.external_kms.clone() {
        Some(Removable::Set(l)) => Some(merge_link(&state, &gid, None, l)?),
        _ => None,
    };
    let group = Group {
        id: gid,
        account_id: caller.account().to_string(),
        name,
        description: req.description,
        created_at: now,
        created_by: user_id.clone(),
        crypto_policy: crypto.flatten(),
        key_metadata_policy: metadata.flatten(),
        custom_policies: custom.unwrap_or_default(),
        link,
    };
    let mut tx = state.catalog.begin().await?;
    groups::insert(&mut tx, &group).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::Conflict(format!("a group named '{}' exists", group.name))
        } else {
            e.into()
        }
    })?;
    groups::set_member(&mut tx, &group.id, user_id, GroupRole::Administrator).await?;
    Event::new(
        Some(&group.account_id),
        caller.principal(),
        "group.create",
        now,
    )
    .object("group", &group.id)
    .details(json!({"name": group.name, "external_kms": group.link.as_ref().map(|l| &l.kind)}))
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    if group.link.is_some() {
        super::hmg::check_later(state.clone(), caller.clone(), group.id.clone());
    }
    Ok((
        StatusCode::CREATED,
        Json(out(&group, Some(GroupRole::Administrator))),
    ))
}

async fn load(state: &AppState, caller: &Caller, group_id: &str) -> ApiResult<Group> {
    id("group", group_id)?;
    let mut conn = state.catalog.conn().await?;
    match groups::get(&mut conn, group_id).await? {
        Some(g) if g.account_id == caller.account() => Ok(g),
        Some(_) => Err(ApiError::Forbidden(
            "that group belongs to another account".into(),
        )),
        None => Err(ApiError::NotFound(format!("no group {group_id}"))),
    }
}

#[utoipa::path(get, path = "/sys/v1/groups/{id}", tag = "groups", responses((status = 200, body = GroupOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
) -> ApiResult<Json<GroupOut>> {
    let g = load(&state, &caller, &group_id).await?;
    if !caller.access.can_read_group(&g.id) {
        return Err(ApiError::Forbidden("you have no role in that group".into()));
    }
    Ok(Json(out(&g, caller.access.group_roles.get(&g.id).copied())))
}

#[utoipa::path(patch, path = "/sys/v1/groups/{id}", tag = "groups", request_body = GroupRequest,
    responses((status = 200, body = GroupOut), (status = 400, body = super::error::ErrorBody), (status = 403, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
    Body(req): Body<GroupRequest>,
) -> ApiResult<Json<GroupOut>> {
    let mut g = load(&state, &caller, &group_id).await?;
    if !caller.access.can_manage_group(&g.id) {
        return Err(ApiError::Forbidden(
            "only the group's administrators change it".into(),
        ));
    }
    let (crypto, metadata, custom) = policies(&state, &req).await?;
    if let Some(n) = &req.name {
        g.name = group_name(n)?;
    }
    if let Some(d) = req.description.clone() {
        g.description = Some(d);
    }
    if let Some(p) = crypto {
        g.crypto_policy = p;
    }
    if let Some(p) = metadata {
        g.key_metadata_policy = p;
    }
    if let Some(c) = custom {
        g.custom_policies = c;
    }
    let relink = matches!(req.external_kms, Some(Removable::Set(_)));
    match req.external_kms.clone() {
        Some(Removable::Set(l)) => {
            let mut link = merge_link(&state, &g.id, g.link.as_ref(), l)?;
            // The last connection test no longer says anything about changed settings.
            if let Value::Object(c) = &mut link.config {
                c.remove("connection");
            }
            g.link = Some(link);
        }
        Some(Removable::Remove) => g.link = None,
        None => {}
    }
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    if matches!(req.external_kms, Some(Removable::Remove)) {
        let virtual_keys = crate::catalog::sobjects::external_refs(&mut tx, &g.id).await?;
        if !virtual_keys.is_empty() {
            return Err(ApiError::Conflict(format!(
                "the group holds {} virtual keys of its external key manager; delete them before unlinking",
                virtual_keys.len()
            )));
        }
    }
    groups::update(&mut tx, &g).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::Conflict(format!("a group named '{}' exists", g.name))
        } else {
            e.into()
        }
    })?;
    Event::new(Some(&g.account_id), caller.principal(), "group.update", now)
        .object("group", &g.id)
        .details(json!({
            "cryptographic_policy_changed": req.cryptographic_policy.is_some(),
            "key_metadata_policy_changed": req.key_metadata_policy.is_some(),
            "custom_policies_changed": req.custom_policies.is_some(),
            "external_kms_changed": req.external_kms.is_some(),
        }))
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.forget_group(&g.id);
    if relink {
        super::hmg::check_later(state.clone(), caller.clone(), g.id.clone());
    }
    Ok(Json(out(&g, caller.access.group_roles.get(&g.id).copied())))
}

/// Only an empty group can be deleted.
#[utoipa::path(delete, path = "/sys/v1/groups/{id}", tag = "groups", responses((status = 204), (status = 409, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(group_id): Path<String>,
) -> ApiResult<StatusCode> {
    let g = load(&state, &caller, &group_id).await?;
    if !caller.access.can_manage_group(&g.id) {
        return Err(ApiError::Forbidden(
            "only the group's administrators delete it".into(),
        ));
    }
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let n = groups::object_count(&mut tx, &g.id).await?;
    if n > 0 {
        return Err(ApiError::Conflict(format!(
            "the group still holds {n} keys; delete or move them first"
        )));
    }
    groups::delete(&mut tx, &g.id).await?;
    Event::new(Some(&g.account_id), caller.principal(), "group.delete", now)
        .object("group", &g.id)
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.forget_group(&g.id);
    Ok(StatusCode::NO_CONTENT)
}
