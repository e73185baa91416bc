//! Azure Resource Manager: the Managed HSMs and the key vaults of a subscription, paged with
//! `nextLink`, in ARM's shapes (a vault's `sku` inside `properties`, a Managed HSM's at the
//! top) and with ARM's errors.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::error::AzureError;
use crate::shared::Shared;
use crate::state::{Hsm, Kind};

const READ_HSMS: &str = "Microsoft.KeyVault/managedHSMs/read";

pub fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/metadata/endpoints", get(cloud_metadata))
        .route("/tenants", get(list_tenants))
        .route("/subscriptions", get(list_subscriptions))
        .route("/subscriptions/{sub}", get(get_subscription))


        .route("/subscriptions/{sub}/providers/Microsoft.KeyVault/managedHSMs", get(list_hsms))
        .route("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/managedHSMs", get(list_hsms_in_group))
        .route("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/managedHSMs/{name}", get(get_hsm))
        .route("/subscriptions/{sub}/providers/Microsoft.KeyVault/vaults", get(list_vaults))
        .route("/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/vaults/{name}", get(get_vault))
}

fn api_version(q: &HashMap<String, String>) -> Result<String, AzureError> {
    q.get("api-version")
        .filter(|v| !v.is_empty())
        .cloned()
        .ok_or_else(|| {
            AzureError::arm(
                StatusCode::BAD_REQUEST,
                "MissingApiVersionParameter",
                "The api-version query parameter (?api-version=) is required for all requests.",
            )
        })
}

fn hsm_json(s: &Shared, tenant: &str, owner: &str, h: &Hsm) -> Value {
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/managedHSMs/{}", h.subscription, h.resource_group, h.name),
        "name": h.name,
        "type": "Microsoft.KeyVault/managedHSMs",
        "location": h.location,
        "sku": {"family": "B", "name": "Standard_B1"},
        "tags": {},
        "properties": {
            "tenantId": tenant,
            "initialAdminObjectIds": [owner],
            "enableSoftDelete": true,
            "softDeleteRetentionInDays": h.retention_days,
            "enablePurgeProtection": h.purge_protection,
            "hsmUri": s.hsm_uri(&h.name),
            "provisioningState": "Succeeded",
            "statusMessage": "ManagedHsm is functional.",
            "publicNetworkAccess": "Enabled",
            "securityDomainProperties": {"activationStatus": "Active", "activationStatusMessage": "Your HSM has been activated and can be used for cryptographic operations."},
        },
    })
}

fn vault_json(s: &Shared, tenant: &str, world: &crate::state::World, v: &Hsm) -> Value {
    let object_id = |client: &str| {
        world
            .apps
            .get(client)
            .map_or(client.to_string(), |a| a.object_id.clone())
    };
    let policies: Vec<Value> = v
        .access_policies
        .iter()
        .map(|(client, keys)| {
            json!({
                "tenantId": tenant,
                "objectId": object_id(client),
                "applicationId": null,
                "permissions": {"keys": keys, "secrets": [], "certificates": []},
            })
        })
        .collect();
    let sku = if v.kind == Kind::Premium {
        "premium"
    } else {
        "standard"
    };
    json!({
        "id": format!("/subscriptions/{}/resourceGroups/{}/providers/Microsoft.KeyVault/vaults/{}", v.subscription, v.resource_group, v.name),
        "name": v.name,
        "type": "Microsoft.KeyVault/vaults",
        "location": v.location,
        "tags": {},
        "properties": {
            "sku": {"family": "A", "name": sku},
            "tenantId": tenant,
            "accessPolicies": policies,
            "enabledForDeployment": false,
            "enabledForDiskEncryption": false,
            "enabledForTemplateDeployment": false,
            "enableSoftDelete": true,
            "softDeleteRetentionInDays": v.retention_days,
            "enablePurgeProtection": v.purge_protection,
            "enableRbacAuthorization": v.rbac,
            "vaultUri": s.vault_uri(&v.name),
            "provisioningState": "Succeeded",
            "publicNetworkAccess": "Enabled",
        },
    })
}

/// One page of `items`, with a `nextLink` carrying the offset of the next page.
fn page(
    s: &Shared,
    path: &str,
    version: &str,
    q: &HashMap<String, String>,
    items: Vec<Value>,
) -> Result<Value, AzureError> {
    let max = s.settings.arm_page_size.max(1);
    let top = match q.get("$top") {
        Some(t) => t.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
            AzureError::arm(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                format!("The value '{t}' of $top is not valid."),
            )
        })?,
        None => max,
    }
    .min(max);
    let skip = match q.get("$skiptoken") {
        Some(t) => URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| {
                AzureError::arm(
                    StatusCode::BAD_REQUEST,
                    "InvalidSkipToken",
                    "The skip token is not valid.",
                )
            })?,
        None => 0,
    };
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(top).collect();
    let mut body = json!({"value": value});
    if skip + top < total {
        let token = URL_SAFE_NO_PAD.encode((skip + top).to_string());
        body["nextLink"] = json!(format!(
            "{}{path}?api-version={version}&$top={top}&$skiptoken={token}",
            s.base_url
        ));
    }
    Ok(body)
}

async fn list(
    s: &Shared,
    headers: &HeaderMap,
    sub: &str,
    rg: Option<&str>,
    q: &HashMap<String, String>,
) -> Result<Json<Value>, AzureError> {
    let version = api_version(q)?;
    let claims = s.authorize_arm(headers, sub, READ_HSMS)?;
    let world = s.world.read().unwrap();
    let tenant = world.subscriptions[sub].tenant.clone();
    let items = world
        .hsms
        .values()
        .filter(|h| {
            h.kind == Kind::Managed
                && h.subscription == sub
                && rg.is_none_or(|rg| h.resource_group.eq_ignore_ascii_case(rg))
        })
        .map(|h| hsm_json(s, &tenant, &claims.oid, h))
        .collect();
    let path = match rg {
        Some(rg) => format!(
            "/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.KeyVault/managedHSMs"
        ),
        None => format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/managedHSMs"),
    };
    Ok(Json(page(s, &path, &version, q, items)?))
}

async fn list_hsms(
    State(s): State<Arc<Shared>>,
    Path(sub): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    list(&s, &headers, &sub, None, &q).await
}

async fn list_hsms_in_group(
    State(s): State<Arc<Shared>>,
    Path((sub, rg)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    list(&s, &headers, &sub, Some(&rg), &q).await
}

async fn get_hsm(
    State(s): State<Arc<Shared>>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    api_version(&q)?;
    let claims = s.authorize_arm(&headers, &sub, READ_HSMS)?;
    let world = s.world.read().unwrap();
    let tenant = world.subscriptions[&sub].tenant.clone();
    match world.hsms.get(&name).filter(|h| {
        h.kind == Kind::Managed
            && h.subscription == sub
            && h.resource_group.eq_ignore_ascii_case(&rg)
    }) {
        Some(h) => Ok(Json(hsm_json(&s, &tenant, &claims.oid, h))),
        None => Err(AzureError::arm(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.KeyVault/managedHSMs/{name}' under resource group '{rg}' was not found."
            ),
        )),
    }
}

const READ_VAULTS: &str = "Microsoft.KeyVault/vaults/read";

/// `Vaults_ListBySubscription`: the Standard and Premium vaults of a subscription.
async fn list_vaults(
    State(s): State<Arc<Shared>>,
    Path(sub): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    let version = api_version(&q)?;
    s.authorize_arm(&headers, &sub, READ_VAULTS)?;
    let world = s.world.read().unwrap();
    let tenant = world.subscriptions[&sub].tenant.clone();
    let items = world
        .hsms
        .values()
        .filter(|v| v.kind.is_vault() && v.subscription == sub)
        .map(|v| vault_json(&s, &tenant, &world, v))
        .collect();
    let path = format!("/subscriptions/{sub}/providers/Microsoft.KeyVault/vaults");
    Ok(Json(page(&s, &path, &version, &q, items)?))
}

async fn get_vault(
    State(s): State<Arc<Shared>>,
    Path((sub, rg, name)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    api_version(&q)?;
    s.authorize_arm(&headers, &sub, READ_VAULTS)?;
    let world = s.world.read().unwrap();
    let tenant = world.subscriptions[&sub].tenant.clone();
    match world.hsms.get(&name).filter(|v| {
        v.kind.is_vault() && v.subscription == sub && v.resource_group.eq_ignore_ascii_case(&rg)
    }) {
        Some(v) => Ok(Json(vault_json(&s, &tenant, &world, v))),
        None => Err(AzureError::arm(
            StatusCode::NOT_FOUND,
            "ResourceNotFound",
            format!(
                "The Resource 'Microsoft.KeyVault/vaults/{name}' under resource group '{rg}' was not found."
            ),
        )),
    }
}

/// ARM's cloud metadata (`/metadata/endpoints`), which the Azure CLI reads when a custom cloud
/// is registered with this emulator as its resource manager.
async fn cloud_metadata(State(s): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "name": "KeywardEmulator",
        "portal": s.base_url,
        "resourceManager": format!("{}/", s.base_url),
        "authentication": {
            "loginEndpoint": s.base_url,
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "graphAudience": "https://graph.windows.net/",
        "graph": "https://graph.windows.net/",
        "suffixes": {
            "keyVaultDns": format!("vault.{}:{}", s.settings.hsm_domain, s.port),
            "mhsmDns": format!("{}:{}", s.settings.hsm_domain, s.port),
            "storage": "core.windows.net",
            "acrLoginServer": "azurecr.io",
            "sqlServerHostname": "database.windows.net",
        },
    }))
}

/// Authenticates an ARM call that is not about one subscription (listing tenants and
/// subscriptions): any valid ARM token will do.
fn arm_caller(s: &Shared, headers: &HeaderMap) -> Result<crate::jwt::Claims, AzureError> {
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            AzureError::arm(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
        })?;
    let claims = s.issuer.verify(token, s.clock.now()).map_err(|e| {
        AzureError::arm(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!("The access token is invalid: {e}."),
        )
    })?;
    if s.audience(&claims.aud) != Some(crate::shared::Audience::Arm) {
        return Err(AzureError::arm(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthenticationToken",
            format!("The access token has an invalid audience '{}'.", claims.aud),
        ));
    }
    Ok(claims)
}

fn subscription_json(sub: &crate::state::Subscription) -> Value {
    json!({
        "id": format!("/subscriptions/{}", sub.id),
        "authorizationSource": "RoleBased",
        "subscriptionId": sub.id,
        "tenantId": sub.tenant,
        "displayName": sub.name,
        "state": "Enabled",
        "subscriptionPolicies": {"locationPlacementId": "Public_2014-09-01", "quotaId": "PayAsYouGo_2014-09-01", "spendingLimit": "Off"},
    })
}

async fn list_tenants(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    api_version(&q)?;
    let claims = arm_caller(&s, &headers)?;
    Ok(Json(json!({"value": [{
        "id": format!("/tenants/{}", claims.tid),
        "tenantId": claims.tid,
        "tenantCategory": "Home",
        "displayName": "Keyward emulator tenant",
    }]})))
}

/// The subscriptions of the caller's tenant on which it has a role.
async fn list_subscriptions(
    State(s): State<Arc<Shared>>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    api_version(&q)?;
    let claims = arm_caller(&s, &headers)?;
    let world = s.world.read().unwrap();
    let value: Vec<Value> = world
        .subscriptions
        .values()
        .filter(|sub| sub.tenant == claims.tid && sub.readers.contains(&claims.appid))
        .map(subscription_json)
        .collect();
    Ok(Json(json!({"value": value})))
}

async fn get_subscription(
    State(s): State<Arc<Shared>>,
    Path(sub): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, AzureError> {
    api_version(&q)?;
    s.authorize_arm(&headers, &sub, "Microsoft.Resources/subscriptions/read")?;
    let world = s.world.read().unwrap();
    Ok(Json(subscription_json(&world.subscriptions[&sub])))
}
