//! State shared by every handler, and the authorization checks of the ARM and data planes.

use std::path::PathBuf;
use std::sync::RwLock;

use axum::http::{HeaderMap, StatusCode, header};

use crate::clock::Clock;
use crate::config::ServerConfig;
use crate::error::AzureError;
use crate::faults::Faults;
use crate::jwt::{Claims, TokenError, TokenIssuer};
use crate::state::{Permission, World};

pub struct Shared {
    pub world: RwLock<World>,
    pub clock: Clock,
    pub issuer: TokenIssuer,
    pub faults: Faults,
    pub settings: ServerConfig,
    /// Scheme, host and port of the Entra ID and ARM endpoints (`https://localhost:8443`).
    pub base_url: String,
    pub scheme: &'static str,
    pub port: u16,
    /// Seals backup blobs; they restore only into this emulator (same state directory).
    pub backup_key: [u8; 32],
    /// Where to save the world after changes, when persistence is on.
    pub state_file: Option<PathBuf>,
    pub ca_pem: String,
    /// Recently opened BYOK blobs by digest of (key-exchange key version, ciphertext): a bulk
    /// rotation imports one blob into hundreds of keys, and an RSA-3072 decryption per import
    /// in software would make this emulator, not the client, what a benchmark measures.
    /// Identical input gives identical output, so the cache changes no result.
    pub byok_opened: std::sync::Mutex<std::collections::HashMap<[u8; 32], Vec<u8>>>,
    /// Trusted attestation services by issuer, for key release.
    pub attestation: Vec<(String, rsa::PublicKey)>,
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Arm,
    Hsm,
    Vault,
}

impl Shared {
    /// Data-plane base URI of an HSM, as ARM reports it (`hsmUri`).
    pub fn hsm_uri(&self, name: &str) -> String {
        format!(
            "{}://{}.{}:{}/",
            self.scheme, name, self.settings.hsm_domain, self.port
        )
    }

    /// The audience data-plane tokens carry, announced in the 401 challenge. It includes the
    /// port: the Python SDK compares host and port of the HSM URL against it, the Rust SDK the
    /// host only; `https://{hsm}.localhost:8443` ends in `.localhost:8443` for both.
    pub fn hsm_resource(&self) -> String {
        format!("https://{}:{}", self.settings.hsm_domain, self.port)
    }

    /// Data-plane base URI of a vault, as ARM reports it (`vaultUri`).
    pub fn vault_uri(&self, name: &str) -> String {
        format!(
            "{}://{}.vault.{}:{}/",
            self.scheme, name, self.settings.hsm_domain, self.port
        )
    }

    /// The audience vault tokens carry (Azure's is `https://vault.azure.net`), announced in
    /// a vault's 401 challenge; `https://{vault}.vault.localhost:8443` ends in its host.
    pub fn vault_resource(&self) -> String {
        format!("https://vault.{}:{}", self.settings.hsm_domain, self.port)
    }

    /// The data-plane URI of a Managed HSM or vault.
    pub fn store_uri(&self, h: &crate::state::Hsm) -> String {
        if h.kind.is_vault() {
            self.vault_uri(&h.name)
        } else {
            self.hsm_uri(&h.name)
        }
    }

    /// Which plane a resource identifier (scope without `/.default`) belongs to. ARM tokens
    /// use Azure's ARM audience, as clients configured for a custom cloud request it.
    pub fn audience(&self, resource: &str) -> Option<Audience> {
        let r = resource.trim_end_matches('/');
        let arm = [
            "https://management.azure.com",
            "https://management.core.windows.net",
        ];
        let hsm_resource = self.hsm_resource();
        let bare_domain = format!("https://{}", self.settings.hsm_domain);
        let hsm = [
            "https://managedhsm.azure.net",
            hsm_resource.as_str(),
            bare_domain.as_str(),
        ];

        let vault_resource = self.vault_resource();
        let bare_vault = format!("https://vault.{}", self.settings.hsm_domain);
        let vault = [
            "https://vault.azure.net",
            vault_resource.as_str(),
            bare_vault.as_str(),
        ];
        if arm.contains(&r) {
            Some(Audience::Arm)
        } else if hsm.contains(&r) {
            Some(Audience::Hsm)
        } else if vault.contains(&r) {
            Some(Audience::Vault)
        } else {
            None
        }
    }

    pub fn issuer_for(tenant: &str) -> String {
        format!("https://sts.windows.net/{tenant}/")
    }

    /// Writes the world to the state file (atomically), when persistence is on.
    pub fn persist(&self) {
        let Some(path) = &self.state_file else { return };
        let json = {
            let world = self.world.read().unwrap();
            serde_json::to_vec(&*world).expect("the world serializes")
        };
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, path)) {
            tracing::error!(path = %path.display(), "could not save the emulator state: {e}");
        }
    }

    fn bearer(headers: &HeaderMap) -> Option<&str> {
        let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
        let (scheme, token) = value.split_once(' ')?;
        scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim())
    }

    fn challenge(&self, tenant: &str, resource: &str) -> String {
        format!(
            r#"Bearer authorization="{}/{tenant}", resource="{resource}""#,
            self.base_url,
        )
    }

    /// Authorizes a data-plane call on `hsm` needing `permission`.
    pub fn authorize_hsm(
        &self,
        headers: &HeaderMap,
        hsm: &str,
        permission: Permission,
    ) -> Result<Claims, AzureError> {
        let world = self.world.read().unwrap();
        let Some(h) = world.hsms.get(hsm) else {
            return Err(AzureError::kv(
                StatusCode::NOT_FOUND,
                "NotFound",
                format!("The Managed HSM or vault '{hsm}' does not exist."),
            ));
        };
        let tenant = world.tenant_of_hsm(h).to_string();
        let (expected, resource) = if h.kind.is_vault() {
            (Audience::Vault, self.vault_resource())
        } else {
            (Audience::Hsm, self.hsm_resource())
        };
        let unauthorized = |msg: String| {
            AzureError::kv(StatusCode::UNAUTHORIZED, "Unauthorized", msg)
                .header(header::WWW_AUTHENTICATE, self.challenge(&tenant, &resource))
        };
        let Some(token) = Self::bearer(headers) else {
            return Err(unauthorized(
                "AKV10000: Request is missing a Bearer or PoP token.".into(),
            ));
        };
        let claims = match self.issuer.verify(token, self.clock.now()) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                return Err(unauthorized(
                    "AKV10020: Invalid token: the token is expired.".into(),
                ));
            }
            Err(e) => return Err(unauthorized(format!("AKV10020: Invalid token: {e}."))),
        };
        if self.audience(&claims.aud) != Some(expected) {
            return Err(unauthorized(format!(
                "AKV10022: Invalid audience. Expected {resource}, found: {}.",
                claims.aud
            )));
        }
        if claims.tid != tenant {
            return Err(unauthorized(format!(
                "AKV10032: Invalid issuer. Expected one of {}, found: {}.",
                Self::issuer_for(&tenant),
                claims.iss
            )));
        }
        if world
            .apps
            .get(&claims.appid)
            .is_none_or(|a| a.tenant != tenant)
        {
            return Err(unauthorized(
                "AKV10020: Invalid token: the application no longer exists.".into(),
            ));
        }
        if h.kind.is_vault() && !h.rbac && !h.allows(&claims.appid, permission) {
            // Azure's answer under access policies names the missing permission.
            return Err(AzureError::forbidden(
                format!(
                    "The user, group or application 'appid={};oid={};iss={}' does not have keys {} permission on key vault '{hsm};location={}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287",
                    claims.appid,
                    claims.oid,
                    claims.iss,
                    permission.policy_name(),
                    h.location
                ),
                "ForbiddenByPolicy",
            ));
        }
        if !h.allows(&claims.appid, permission) {
            return Err(AzureError::forbidden(
                format!(
                    "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or role definitions were changed recently, please observe propagation time.\r\nCaller: appid={};oid={}\r\nAction: {permission:?}\r\nResource: '{hsm}'",
                    claims.appid, claims.oid
                ),
                "AccessDenied",
            ));
        }
        Ok(claims)
    }

    /// Authorizes an ARM read on a subscription.
    pub fn authorize_arm(
        &self,
        headers: &HeaderMap,
        subscription: &str,
        action: &str,
    ) -> Result<Claims, AzureError> {
        let Some(token) = Self::bearer(headers) else {
            return Err(AzureError::arm(
                StatusCode::UNAUTHORIZED,
                "AuthenticationFailed",
                "Authentication failed. The 'Authorization' header is missing.",
            )
            .header(
                header::WWW_AUTHENTICATE,
                format!(
                    r#"Bearer authorization_uri="{}/", error="invalid_token", error_description="The authentication failed because of missing 'Authorization' header.""#,
                    self.base_url
                ),
            ));
        };
        let invalid = |msg: String| {
            AzureError::arm(StatusCode::UNAUTHORIZED, "InvalidAuthenticationToken", msg)
        };
        let claims = match self.issuer.verify(token, self.clock.now()) {
            Ok(c) => c,
            Err(TokenError::Expired) => {
                return Err(AzureError::arm(
                    StatusCode::UNAUTHORIZED,
                    "ExpiredAuthenticationToken",
                    "The access token expiry UTC time is earlier than current UTC time.",
                ));
            }
            Err(e) => return Err(invalid(format!("The access token is invalid: {e}."))),
        };
        if self.audience(&claims.aud) != Some(Audience::Arm) {
            return Err(invalid(format!(
                "The access token has an invalid audience '{}'.",
                claims.aud
            )));
        }
        let world = self.world.read().unwrap();
        let Some(sub) = world.subscriptions.get(subscription) else {
            return Err(AzureError::arm(
                StatusCode::NOT_FOUND,
                "SubscriptionNotFound",
                format!("The subscription '{subscription}' could not be found."),
            ));
        };
        if claims.tid != sub.tenant {
            return Err(AzureError::arm(
                StatusCode::UNAUTHORIZED,
                "InvalidAuthenticationTokenTenant",
                format!(
                    "The access token is from the wrong issuer '{}'. It must match the tenant '{}' associated with this subscription.",
                    claims.iss,
                    Self::issuer_for(&sub.tenant)
                ),
            ));
        }
        if !sub.readers.contains(&claims.appid) {
            return Err(AzureError::arm(
                StatusCode::FORBIDDEN,
                "AuthorizationFailed",
                format!(
                    "The client '{}' with object id '{}' does not have authorization to perform action '{action}' over scope '/subscriptions/{subscription}' or the scope is invalid. If access was recently granted, please refresh your credentials.",
                    claims.appid, claims.oid
                ),
            ));
        }
        Ok(claims)
    }
}
