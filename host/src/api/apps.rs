//! Applications: API-key principals that belong to groups and perform cryptographic
//! operations with their keys, each group with its own permissions (DSM's `add_groups`,
//! `mod_groups`, `del_groups`). The API key is shown at creation and at reset, and to its
//! managers through `credential`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::audit::Event;
use crate::auth::certs;
use crate::auth::sessions::Sessions;
use crate::auth::{ApiKey, Principal};
use crate::catalog::approvals::AccountProtected;
use crate::catalog::apps::{
    self, App, AppGroups, AppPermission, AuthType, CertCredential, CrlSource, TrustSubject,
};
use crate::catalog::sobjects::Creator;
use crate::catalog::{Conn, new_id};

use super::extract::{Body, Caller, id};
use super::model::{AppOut, AppWithKey, Permission, display_name, time};
use super::{ApiError, ApiResult, AppState};

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AppRequest {
    /// 1 to 256 characters, not only spaces.
    #[schema(min_length = 1, max_length = 256, pattern = r"\S")]
    pub name: Option<String>,
    pub description: Option<String>,
    /// Keyward's short form: the application's groups, replacing its list (before any
    /// `del_groups`, `mod_groups`, `add_groups`). A group new to the application gets every
    /// permission; one it had keeps its own.
    #[schema(schema_with = super::schemas::ids)]
    pub groups: Option<Vec<String>>,
    /// DSM: groups to add, each with what the application may do with its keys.
    #[schema(schema_with = super::schemas::group_permissions)]
    pub add_groups: Option<BTreeMap<String, Vec<Permission>>>,
    /// DSM: new permissions for groups the application already has.
    #[schema(schema_with = super::schemas::group_permissions)]
    pub mod_groups: Option<BTreeMap<String, Vec<Permission>>>,
    /// DSM: groups to leave.
    #[schema(schema_with = super::schemas::ids)]
    pub del_groups: Option<Vec<String>>,
    /// Where keys go when the application creates one without naming a group.
    #[schema(schema_with = super::schemas::id)]
    pub default_group: Option<String>,
    pub enabled: Option<bool>,
    /// DSM's `AppCredential`: how the application logs in, when not with an API key. A
    /// `certificate` pins one leaf certificate; `trustedca` accepts certificates issued by
    /// a CA that name a subject. `POST .../reset_secret` returns an application to an API key.
    pub credential: Option<CredentialIn>,
}

/// DSM's `AppCredential`, the certificate forms. Certificates and CRLs are base64 of DER or
/// PEM text.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialIn {
    /// The leaf certificate the application presents (DSM's `Certificate` application).
    pub certificate: Option<String>,
    /// A CA and the subject its certificates must name (DSM's `TrustedCa` application).
    pub trustedca: Option<TrustedCaIn>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrustedCaIn {
    /// The CA certificate client certificates must chain to.
    pub ca_certificate: String,
    /// DSM: attributes of the subject, as `[name, value]` pairs (`[["CN", "billing"]]`);
    /// the certificate's subject must carry each. Give this or `subject_general`.
    pub subject: Option<Vec<Vec<String>>>,
    /// DSM's `subject_general`: a DNS name or IP address among the certificate's subject
    /// alternative names, or attributes of its subject.
    pub subject_general: Option<SubjectGeneralIn>,
    /// A CRL the daemon fetches and caches (hosts allowed by `--crl-allow`).
    pub crl_url: Option<String>,
    /// A CRL uploaded with the application (PEM or base64 DER); replaces it on each update.
    pub crl: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SubjectGeneralIn {
    DirectoryName(Vec<Vec<String>>),
    DnsName(String),
    IpAddress(String),
}

/// A credential from its request form, with the certificate's expiry.
fn credential_of(state: &AppState, c: &CredentialIn) -> ApiResult<(CertCredential, i64)> {
    let bad = |e: certs::CertError| ApiError::field("credential", e.to_string());
    match (&c.certificate, &c.trustedca) {
        (Some(text), None) => {
            let certificate = certs::certificate_from_text("certificate", text).map_err(bad)?;
            let not_after = certs::not_after(&certificate).unwrap_or_default();
            Ok((CertCredential::Pinned { certificate }, not_after))
        }
        (None, Some(t)) => {
            let ca_certificate = certs::ca_from_text(&t.ca_certificate).map_err(bad)?;
            let subject = match (&t.subject, &t.subject_general) {
                (Some(pairs), None) => certs::subject_from_pairs(pairs.clone()).map_err(bad)?,
                (None, Some(SubjectGeneralIn::DirectoryName(pairs))) => {
                    certs::subject_from_pairs(pairs.clone()).map_err(bad)?
                }
                (None, Some(SubjectGeneralIn::DnsName(d))) if !d.trim().is_empty() => {
                    TrustSubject::DnsName(d.trim().to_string())
                }
                (None, Some(SubjectGeneralIn::IpAddress(ip))) => {
                    TrustSubject::IpAddress(ip.trim().parse().map_err(|_| {
                        ApiError::field("credential", format!("'{ip}' is not an IP address"))
                    })?)
                }
                _ => {
                    return Err(ApiError::field(
                        "credential",
                        "trustedca: give one of subject or subject_general",
                    ));
                }
            };
            let crl = match (&t.crl_url, &t.crl) {
                (None, None) => None,
                (Some(url), None) => {
                    state.client_certs.check_crl_url(url)?;
                    Some(CrlSource::Url(url.clone()))
                }
                (None, Some(text)) => Some(CrlSource::Uploaded(
                    certs::crl_from_bytes(text.as_bytes()).map_err(bad)?,
                )),
                (Some(_), Some(_)) => {
                    return Err(ApiError::field(
                        "credential",
                        "trustedca: give crl_url or crl, not both",
                    ));
                }
            };
            let not_after = certs::not_after(&ca_certificate).unwrap_or_default();
            Ok((
                CertCredential::TrustedCa {
                    ca_certificate,
                    subject,
                    crl,
                },
                not_after,
            ))
        }
        _ => Err(ApiError::field(
            "credential",
            "give one of certificate or trustedca (an API key comes back with POST /sys/v1/apps/{id}/reset_secret)",
        )),
    }
}

fn permissions(ps: &[Permission]) -> Vec<AppPermission> {
    ps.iter().map(|p| p.0).collect()
}

/// The application's groups after `req`, from `current`: `groups` replaces the list first
/// (a group new to the application gets every permission), then `del_groups`, `mod_groups`
/// and `add_groups` change the named groups, which the application must have (del, mod) or
/// not have (add) at that point; otherwise the request conflicts with it (409).
fn groups_after(current: &AppGroups, req: &AppRequest) -> ApiResult<AppGroups> {
    let mut groups = match &req.groups {
        Some(list) => list
            .iter()
            .map(|g| {
                let ps = current
                    .get(g)
                    .cloned()
                    .unwrap_or_else(|| AppPermission::ALL.to_vec());
                (g.clone(), ps)
            })
            .collect(),
        None => current.clone(),
    };
    let base = groups.clone();
    for g in req.del_groups.iter().flatten() {
        if groups.remove(g).is_none() {
            return Err(ApiError::Conflict(format!(
                "del_groups: {g} is not a group of the application"
            )));
        }
    }
    for (g, ps) in req.mod_groups.iter().flatten() {
        match groups.get_mut(g) {
            Some(current) => *current = permissions(ps),
            None => {
                return Err(ApiError::Conflict(format!(
                    "mod_groups: {g} is not a group of the application (add it with add_groups)"
                )));
            }
        }
    }
    for (g, ps) in req.add_groups.iter().flatten() {
        if base.contains_key(g) && !req.del_groups.iter().flatten().any(|d| d == g) {
            return Err(ApiError::Conflict(format!(
                "add_groups: {g} is already a group of the application (change it with mod_groups)"
            )));
        }
        groups.insert(g.clone(), permissions(ps));
    }
    Ok(groups)
}

fn group_ids(groups: &AppGroups) -> Vec<String> {
    groups.keys().cloned().collect()
}

pub fn out(a: &App) -> AppOut {
    AppOut {
        app_id: a.id.clone(),
        acct_id: a.account_id.clone(),
        name: a.name.clone(),
        description: a.description.clone(),
        created_at: time(a.created_at),
        creator: (&Creator::User(a.created_by.clone())).into(),
        enabled: a.enabled,
        groups: a
            .groups
            .iter()
            .map(|(g, ps)| (g.clone(), ps.iter().copied().map(Permission).collect()))
            .collect(),
        default_group: a.default_group.clone(),
        auth_type: match a.auth_type() {
            AuthType::Secret => "Secret",
            AuthType::Certificate => "Certificate",
            AuthType::TrustedCa => "TrustedCa",
        },
        cert_not_after: a.cert_not_after.map(time),
        cert_subject: match &a.credential {
            Some(CertCredential::Pinned { certificate }) => certs::subject_text(certificate),
            Some(CertCredential::TrustedCa { subject, .. }) => Some(match subject {
                TrustSubject::DirectoryName(pairs) => pairs
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                TrustSubject::DnsName(d) => format!("DNS:{d}"),
                TrustSubject::IpAddress(ip) => format!("IP:{ip}"),
            }),
            None => None,
        },
    }
}

fn user_only(caller: &Caller) -> ApiResult<()> {
    match caller.principal() {
        Principal::User { .. } => Ok(()),
        Principal::App { .. } => Err(ApiError::Forbidden(
            "applications do not manage applications".into(),
        )),
    }
}

/// Account administrators manage every application; group administrators those whose
/// groups they all administer.
fn may_manage(caller: &Caller, groups: &[String]) -> ApiResult<()> {
    if caller.access.is_account_admin()
        || (!groups.is_empty() && groups.iter().all(|g| caller.access.can_manage_group(g)))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden("only account administrators, or administrators of all the application's groups, manage it".into()))
    }
}

/// EXPORT lets an application take key material out of a group: it is granted only by an
/// account administrator, or in a group whose keys its users may export (`user_export`), so
/// that a group administrator cannot reach through an application what the group denies them.
/// With the short form (`groups`), a new group gets every permission the caller may grant;
/// asked for explicitly (`add_groups`, `mod_groups`), an EXPORT they may not grant is refused.
async fn check_export_grants(
    c: &mut Conn,
    caller: &Caller,
    before: &AppGroups,
    after: &mut AppGroups,
    short_form: bool,
) -> ApiResult<()> {
    if caller.access.is_account_admin() {
        return Ok(());
    }
    for (g, ps) in after.iter_mut() {
        let had = before
            .get(g)
            .is_some_and(|p| p.contains(&AppPermission::Export));
        if had || !ps.contains(&AppPermission::Export) {
            continue;
        }
        let allowed = crate::catalog::groups::get(c, caller.account(), g)
            .await?
            .is_some_and(|group| group.user_export);
        if allowed {
            continue;
        }
        if short_form {
            ps.retain(|p| *p != AppPermission::Export);
        } else {
            return Err(ApiError::Forbidden(format!(
                "only account administrators grant EXPORT in group {g}, whose users may not export keys (user_export)"
            )));
        }
    }
    Ok(())
}

async fn check_groups(
    c: &mut Conn,
    account: &str,
    groups: &AppGroups,
    default: &Option<String>,
) -> ApiResult<()> {
    for g in groups.keys() {
        id("group", g)?;
        super::groups::require_in_account(c, "groups", g, account).await?;
    }
    if let Some(d) = default
        && !groups.contains_key(d)
    {
        return Err(ApiError::Conflict(
            "default_group: must be one of the application's groups".into(),
        ));
    }
    Ok(())
}

fn permission_names(groups: &AppGroups) -> BTreeMap<&str, Vec<&'static str>> {
    groups
        .iter()
        .map(|(g, ps)| (g.as_str(), ps.iter().map(|p| p.as_str()).collect()))
        .collect()
}

fn seal_secret(state: &AppState, key: &ApiKey) -> Vec<u8> {
    state
        .catalog
        .seal(&apps::secret_context(&key.app_id), key.secret().as_bytes())
}

/// DSM's `AppCredentialResponse`.
#[derive(Debug, Serialize, ToSchema)]
pub struct CredentialOut {
    pub app_id: String,
    pub credential: SecretCredential,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SecretCredential {
    /// The API key's secret; the API key is base64 of `{app_id}:{secret}`.
    pub secret: String,
    /// The API key itself, as `POST /sys/v1/apps` answered it.
    pub api_key: String,
}

#[utoipa::path(get, path = "/sys/v1/apps", tag = "apps", responses((status = 200, body = [AppOut])))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> ApiResult<Json<Vec<AppOut>>> {
    let mut conn = state.catalog.conn().await?;
    let all = apps::in_account(&mut conn, caller.account()).await?;
    let visible = all.iter().filter(|a| match caller.principal() {
        Principal::App { app_id, .. } => &a.id == app_id,
        Principal::User { .. } => {
            caller.access.reads_whole_account()
                || a.groups.keys().any(|g| caller.access.can_read_group(g))
        }
    });
    Ok(Json(visible.map(out).collect()))
}

#[utoipa::path(post, path = "/sys/v1/apps", tag = "apps", request_body = AppRequest,
    responses((status = 201, body = AppWithKey), (status = 403, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Body(req): Body<AppRequest>,
) -> ApiResult<(StatusCode, Json<AppWithKey>)> {
    user_only(&caller)?;
    let name = display_name(
        "name",
        req.name
            .as_deref()
            .ok_or_else(|| ApiError::field("name", "is required"))?,
    )?;
    let groups = groups_after(&AppGroups::new(), &req)?;
    may_manage(&caller, &group_ids(&groups))?;
    let account = caller.account().to_string();
    let now = state.now();
    let app_id = new_id();
    let key = ApiKey::generate(&app_id);
    let credential = req
        .credential
        .as_ref()
        .map(|c| credential_of(&state, c))
        .transpose()?;
    let mut app = App {
        id: app_id,
        account_id: account.clone(),
        name,
        description: req.description,
        created_at: now,
        created_by: caller.principal().id().to_string(),
        api_key_hash: key.hash(),
        // A certificate application has no secret to read back; its unused hash is of a
        // key no one saw.
        api_secret_sealed: credential.is_none().then(|| seal_secret(&state, &key)),
        enabled: req.enabled.unwrap_or(true),
        default_group: req.default_group.clone(),
        groups,
        cert_not_after: credential.as_ref().map(|c| c.1),
        credential: credential.map(|c| c.0),
    };
    let mut tx = state.catalog.begin().await?;
    check_groups(&mut tx, &account, &app.groups, &app.default_group).await?;
    check_export_grants(
        &mut tx,
        &caller,
        &AppGroups::new(),
        &mut app.groups,
        req.groups.is_some(),
    )
    .await?;
    apps::insert(&mut tx, &app).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::Conflict(format!("an application named '{}' exists", app.name))
        } else {
            e.into()
        }
    })?;
    Event::new(Some(&account), caller.principal(), "app.create", now)
        .object("app", &app.id)
        .details(serde_json::json!({"groups": permission_names(&app.groups), "auth_type": app.auth_type().as_str()}))
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    Ok((
        StatusCode::CREATED,
        Json(AppWithKey {
            api_key: app.credential.is_none().then(|| key.encoded()),
            app: out(&app),
        }),
    ))
}

async fn load(c: &mut Conn, account: &str, app_id: &str) -> ApiResult<App> {
    id("app", app_id)?;
    apps::get(c, account, app_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no application {app_id}")))
}

#[utoipa::path(get, path = "/sys/v1/apps/{id}",
    params(("id" = String, Path, description = "The application's id")), tag = "apps", responses((status = 200, body = AppOut), (status = 404, body = super::error::ErrorBody)))]
pub async fn get(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> ApiResult<Json<AppOut>> {
    let mut conn = state.catalog.conn().await?;
    let app = load(&mut conn, caller.account(), &app_id).await?;
    let visible = match caller.principal() {
        Principal::App { app_id: me, .. } => *me == app.id,
        Principal::User { .. } => {
            caller.access.reads_whole_account()
                || app.groups.keys().any(|g| caller.access.can_read_group(g))
        }
    };
    if !visible {
        return Err(ApiError::Forbidden(
            "you cannot see that application".into(),
        ));
    }
    Ok(Json(out(&app)))
}

#[utoipa::path(patch, path = "/sys/v1/apps/{id}",
    params(("id" = String, Path, description = "The application's id")), tag = "apps", request_body = AppRequest,
    responses((status = 200, body = AppOut), (status = 403, body = super::error::ErrorBody)))]
pub async fn update(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
    Body(req): Body<AppRequest>,
) -> ApiResult<Json<AppOut>> {
    user_only(&caller)?;
    if req.credential.is_some() {
        super::approvals::account_approved(
            &state,
            &caller,
            AccountProtected::AuthenticationMethods,
        )
        .await?;
    }
    let account = caller.account().to_string();
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let mut app = load(&mut tx, &account, &app_id).await?;
    may_manage(&caller, &group_ids(&app.groups))?;
    if let Some(n) = &req.name {
        app.name = display_name("name", n)?;
    }
    if let Some(d) = &req.description {
        app.description = Some(d.clone());
    }
    let mut groups = groups_after(&app.groups, &req)?;
    if groups != app.groups {
        may_manage(&caller, &group_ids(&groups))?;
        check_groups(&mut tx, &account, &groups, &None).await?;
        check_export_grants(
            &mut tx,
            &caller,
            &app.groups,
            &mut groups,
            req.groups.is_some(),
        )
        .await?;
        app.groups = groups;
        if app
            .default_group
            .as_ref()
            .is_some_and(|d| !app.groups.contains_key(d))
        {
            app.default_group = None;
        }
    }
    if req.default_group.is_some() {
        app.default_group = req.default_group.clone();
    }
    if let Some(e) = req.enabled {
        app.enabled = e;
    }
    // A new credential ends the sessions of the old one.
    let mut credential_changed = false;
    if let Some(c) = &req.credential {
        let (credential, not_after) = credential_of(&state, c)?;
        credential_changed = app.credential.as_ref() != Some(&credential);
        app.credential = Some(credential);
        app.cert_not_after = Some(not_after);
        app.api_secret_sealed = None;
    }
    check_groups(&mut tx, &account, &app.groups, &app.default_group).await?;
    apps::update(&mut tx, &app).await.map_err(|e| {
        if e.is_unique_violation() {
            ApiError::Conflict(format!("an application named '{}' exists", app.name))
        } else {
            e.into()
        }
    })?;
    Event::new(Some(&account), caller.principal(), "app.update", now)
        .object("app", &app.id)
        .details(
            serde_json::json!({"groups": permission_names(&app.groups), "enabled": app.enabled,
                "auth_type": app.auth_type().as_str(), "credential_changed": credential_changed}),
        )
        .write(&mut tx)
        .await?;
    // A disabled application's sessions end; the others carry the new groups.
    if !app.enabled || credential_changed {
        Sessions::end_all_of(&mut tx, &app.id).await?;
    }
    tx.commit().await?;
    state.sessions.changed();
    Ok(Json(out(&app)))
}

#[utoipa::path(delete, path = "/sys/v1/apps/{id}",
    params(("id" = String, Path, description = "The application's id")), tag = "apps", responses((status = 204)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> ApiResult<StatusCode> {
    user_only(&caller)?;
    let account = caller.account().to_string();
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let app = load(&mut tx, &account, &app_id).await?;
    may_manage(&caller, &group_ids(&app.groups))?;
    apps::delete(&mut tx, &account, &app.id).await?;
    Sessions::end_all_of(&mut tx, &app.id).await?;
    Event::new(Some(&account), caller.principal(), "app.delete", now)
        .object("app", &app.id)
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.sessions.changed();
    Ok(StatusCode::NO_CONTENT)
}

/// The application's API key again, as DSM programs obtain it: for users who manage the
/// application, recorded in the audit log before it is answered.
#[utoipa::path(get, path = "/sys/v1/apps/{id}/credential", tag = "apps",
    params(("id" = String, Path, description = "The application's id")),
    responses((status = 200, body = CredentialOut), (status = 403, body = super::error::ErrorBody),
        (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn credential(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> ApiResult<Json<CredentialOut>> {
    user_only(&caller)?;
    let account = caller.account().to_string();
    let mut tx = state.catalog.begin().await?;
    let app = load(&mut tx, &account, &app_id).await?;
    may_manage(&caller, &group_ids(&app.groups))?;
    if app.credential.is_some() {
        return Err(ApiError::Conflict(
            "this application logs in with a client certificate; it has no secret".into(),
        ));
    }
    let sealed = app.api_secret_sealed.as_ref().ok_or_else(|| {
        ApiError::Conflict(
            "this application's secret was made before Keyward kept it; reset it to read it here"
                .into(),
        )
    })?;
    let secret = state
        .catalog
        .open_sealed(&apps::secret_context(&app.id), sealed)?;
    let secret = String::from_utf8(secret)
        .map_err(|_| ApiError::Internal("a sealed app secret is not text".into()))?;
    Event::new(
        Some(&account),
        caller.principal(),
        "app.credential_read",
        state.now(),
    )
    .object("app", &app.id)
    .write(&mut tx)
    .await?;
    tx.commit().await?;
    let key = ApiKey::from_secret(&app.id, secret);
    Ok(Json(CredentialOut {
        app_id: app.id.clone(),
        credential: SecretCredential {
            secret: key.secret().to_string(),
            api_key: key.encoded(),
        },
    }))
}

/// A new API key; the old one (or the application's certificate) stops working and the
/// application's sessions end.
#[utoipa::path(post, path = "/sys/v1/apps/{id}/reset_secret",
    params(("id" = String, Path, description = "The application's id")), tag = "apps", responses((status = 200, body = AppWithKey)))]
pub async fn reset_secret(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> ApiResult<Json<AppWithKey>> {
    user_only(&caller)?;
    super::approvals::account_approved(&state, &caller, AccountProtected::AuthenticationMethods)
        .await?;
    let account = caller.account().to_string();
    let now = state.now();
    let mut tx = state.catalog.begin().await?;
    let mut app = load(&mut tx, &account, &app_id).await?;
    may_manage(&caller, &group_ids(&app.groups))?;
    let key = ApiKey::generate(&app.id);
    app.api_key_hash = key.hash();
    app.api_secret_sealed = Some(seal_secret(&state, &key));
    // An application that logged in with a certificate logs in with this key from now on.
    app.credential = None;
    app.cert_not_after = None;
    apps::update(&mut tx, &app).await?;
    Sessions::end_all_of(&mut tx, &app.id).await?;
    Event::new(Some(&account), caller.principal(), "app.reset_secret", now)
        .object("app", &app.id)
        .write(&mut tx)
        .await?;
    tx.commit().await?;
    state.sessions.changed();
    Ok(Json(AppWithKey {
        app: out(&app),
        api_key: Some(key.encoded()),
    }))
}
