//! Entra ID (Azure AD): instance and tenant discovery, signing keys, and the v2 token
//! endpoint for the client-credentials flow, with Entra ID's error codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{Value, json};

use crate::error::AzureError;
use crate::jwt::Claims;
use crate::shared::Shared;

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/common/discovery/instance", get(instance_discovery))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(openid_configuration),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(keys))
        .route("/{tenant}/oauth2/v2.0/token", post(token))
}

fn unknown_tenant(tenant: &str) -> AzureError {
    AzureError::aad(
        StatusCode::BAD_REQUEST,
        "invalid_tenant",
        90002,
        &format!(
            "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID and are signing into the correct cloud. Check with your subscription administrator, this may happen if there are no active subscriptions for the tenant."
        ),
    )
}

async fn instance_discovery(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    // MSAL passes the authorization endpoint of the authority it wants to validate.
    let tenant = q
        .get("authorization_endpoint")
        .and_then(|e| e.split('/').nth(3))
        .unwrap_or("common")
        .to_string();
    let host = s
        .base_url
        .split("://")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    Json(json!({
        "tenant_discovery_endpoint": format!("{}/{tenant}/v2.0/.well-known/openid-configuration", s.base_url),
        "api-version": "1.1",
        "metadata": [{"preferred_network": host, "preferred_cache": host, "aliases": [host]}],
    }))
}

async fn openid_configuration(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, AzureError> {
    if !s.world.read().unwrap().tenants.contains(&tenant) {
        return Err(unknown_tenant(&tenant));
    }
    let b = &s.base_url;
    Ok(Json(json!({
        "issuer": format!("{b}/{tenant}/v2.0"),
        "authorization_endpoint": format!("{b}/{tenant}/oauth2/v2.0/authorize"),
        "token_endpoint": format!("{b}/{tenant}/oauth2/v2.0/token"),
        "jwks_uri": format!("{b}/{tenant}/discovery/v2.0/keys"),
        "token_endpoint_auth_methods_supported": ["client_secret_post", "client_secret_basic"],
        "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
        "subject_types_supported": ["pairwise"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "scopes_supported": ["openid", "profile", "email", "offline_access"],
        "tenant_region_scope": "EU",
        "cloud_instance_name": "microsoftonline.com",
    })))
}

async fn keys(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
) -> Result<Json<Value>, AzureError> {
    if !s.world.read().unwrap().tenants.contains(&tenant) {
        return Err(unknown_tenant(&tenant));
    }
    Ok(Json(s.issuer.jwks()))
}

async fn token(
    State(s): State<Arc<Shared>>,
    Path(tenant): Path<String>,
    form: Result<Form<HashMap<String, String>>, axum::extract::rejection::FormRejection>,
) -> Result<Json<Value>, AzureError> {
    let bad = |error: &str, code: u32, msg: &str| {
        Err(AzureError::aad(StatusCode::BAD_REQUEST, error, code, msg))
    };
    let Ok(Form(form)) = form else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'grant_type'.",
        );
    };
    let world = s.world.read().unwrap();
    if !world.tenants.contains(&tenant) {
        return Err(unknown_tenant(&tenant));
    }
    let field = |name: &str| form.get(name).map(String::as_str).filter(|v| !v.is_empty());
    match field("grant_type") {
        None => {
            return bad(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            );
        }
        Some("client_credentials") => {}
        Some(other) => {
            return bad(
                "unsupported_grant_type",
                70003,
                &format!("The app requested an unsupported grant type '{other}'."),
            );
        }
    }
    let Some(client_id) = field("client_id") else {
        return bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        );
    };
    let Some(scope) = field("scope") else {
        return bad(
            "invalid_request",
            90014,
            "The request body must contain the following parameter: 'scope'.",
        );
    };
    let app = match world.apps.get(client_id) {
        Some(app) if app.tenant == tenant => app.clone(),
        _ => {
            return bad(
                "unauthorized_client",
                700016,
                &format!(
                    "Application with identifier '{client_id}' was not found in the directory '{tenant}'. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant. You may have sent your authentication request to the wrong tenant."
                ),
            );
        }
    };
    let Some(secret) = field("client_secret") else {
        return Err(AzureError::aad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        ));
    };
    if secret != app.secret {
        return Err(AzureError::aad(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            7000215,
            &format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '{client_id}'."
            ),
        ));
    }
    let Some(resource) = scope.strip_suffix("/.default") else {
        return bad(
            "invalid_scope",
            1002012,
            &format!(
                "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
            ),
        );
    };
    if s.audience(resource).is_none() {
        return bad(
            "invalid_resource",
            500011,
            &format!(
                "The resource principal named {resource} was not found in the tenant named {tenant}. This can happen if the application has not been installed by the administrator of the tenant or consented to by any user in the tenant."
            ),
        );
    }
    drop(world);

    let now = s.clock.now();
    let lifetime = s.settings.token_lifetime_secs;
    let claims = Claims {
        aud: resource.to_string(),
        iss: Shared::issuer_for(&tenant),
        iat: now,
        nbf: now,
        exp: now + lifetime,
        appid: app.client_id.clone(),
        oid: app.object_id.clone(),
        sub: app.object_id.clone(),
        tid: tenant,
        ver: "1.0".into(),
        idtyp: "app".into(),
    };
    Ok(Json(json!({
        "token_type": "Bearer",
        "expires_in": lifetime,
        "ext_expires_in": lifetime,
        "access_token": s.issuer.issue(&claims),
    })))
}
