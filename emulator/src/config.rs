//! Configuration: a TOML file (and command-line flags) describing the directory (tenants,
//! applications), subscriptions, Managed HSMs, Key Vault vaults, role assignments and access
//! policies, plus server settings.
//!
//! ```toml
//! [server]
//! port = 8443            # HTTPS: Entra ID, ARM and the HSM data plane
//! admin_port = 8444      # plain HTTP on the bind address: the admin API
//! hsm_domain = "localhost"
//!
//! [[tenants]]
//! id = "6f1c1f5e-6b1a-4d4e-9b0e-2a7d3c9e4b10"
//!
//! [[applications]]
//! tenant = "6f1c1f5e-6b1a-4d4e-9b0e-2a7d3c9e4b10"
//! client_id = "2b8d4c3a-9f7e-4a61-8c25-5e0b7d1f3a94"
//! client_secret = "..."
//!
//! [[subscriptions]]
//! id = "8e3a1d2c-4b5f-4c7a-9e1d-0f2b3c4d5e6f"
//! tenant = "6f1c1f5e-6b1a-4d4e-9b0e-2a7d3c9e4b10"
//! readers = ["2b8d4c3a-9f7e-4a61-8c25-5e0b7d1f3a94"]
//!
//! [[hsms]]
//! name = "demo-hsm"
//! subscription = "8e3a1d2c-4b5f-4c7a-9e1d-0f2b3c4d5e6f"
//! retention_days = 90
//! roles = [{ principal = "2b8d4c3a-9f7e-4a61-8c25-5e0b7d1f3a94", role = "Managed HSM Crypto User" }]
//!
//! [[vaults]]
//! name = "demo-premium"
//! subscription = "8e3a1d2c-4b5f-4c7a-9e1d-0f2b3c4d5e6f"
//! sku = "premium"          # or "standard"
//! access_policies = [{ principal = "2b8d4c3a-9f7e-4a61-8c25-5e0b7d1f3a94", keys = ["get", "list", "create", "import"] }]
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmulatorConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub tenants: Vec<TenantConfig>,
    #[serde(default)]
    pub applications: Vec<ApplicationConfig>,
    #[serde(default)]
    pub subscriptions: Vec<SubscriptionConfig>,
    #[serde(default)]
    pub hsms: Vec<HsmConfig>,
    /// Key Vault vaults (Standard and Premium), served at `{name}.vault.{hsm_domain}`.
    #[serde(default)]
    pub vaults: Vec<VaultConfig>,
    /// Attestation services whose tokens key release trusts (as Azure trusts Microsoft Azure
    /// Attestation): a release policy's `authority` names one by its `issuer`.
    #[serde(default)]
    pub attestation_issuers: Vec<AttestationIssuer>,
}

/// An attestation service: its issuer (the tokens' `iss`) and the RSA public key (PEM) its
/// RS256 tokens are signed with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationIssuer {
    pub issuer: String,
    pub public_key_pem: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address both listeners bind to.
    pub bind: IpAddr,
    /// HTTPS port for Entra ID, ARM and the data plane; 0 picks a free one.
    pub port: u16,
    /// Plain-HTTP admin API port; 0 picks a free one.
    pub admin_port: u16,
    /// Extra DNS names (and IPs) for the server certificate, besides `localhost`,
    /// `*.localhost` and `127.0.0.1`.
    pub names: Vec<String>,
    /// HSM host names are `{name}.{hsm_domain}`; the data-plane token audience is
    /// `https://{hsm_domain}`.
    pub hsm_domain: String,
    /// Where the CA, server certificate and (with `persist`) state live. Without it, a fresh
    /// CA is made in memory and written nowhere.
    pub state_dir: Option<PathBuf>,
    /// Save keys and configuration changes to `state_dir` so a demo survives restarts.
    pub persist: bool,
    /// Serve plain HTTP instead of HTTPS (debugging only; Azure SDKs refuse it).
    pub plain_http: bool,
    /// Lifetime of issued access tokens.
    pub token_lifetime_secs: i64,
    /// Largest ARM list page (`$top` may ask for fewer).
    pub arm_page_size: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 0,
            admin_port: 0,
            names: vec![],
            hsm_domain: "localhost".into(),
            state_dir: None,
            persist: false,
            plain_http: false,
            token_lifetime_secs: 3599,
            arm_page_size: 100,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantConfig {
    pub id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApplicationConfig {
    pub tenant: String,
    pub client_id: String,
    pub client_secret: String,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionConfig {
    pub id: String,
    pub tenant: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Applications (client ids) with the Reader role on the subscription: they may list its
    /// Managed HSMs through ARM.
    #[serde(default)]
    pub readers: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HsmConfig {
    pub name: String,
    pub subscription: String,
    #[serde(default = "default_resource_group")]
    pub resource_group: String,
    #[serde(default = "default_location")]
    pub location: String,
    /// Soft-delete retention, 7 to 90 days.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    #[serde(default)]
    pub purge_protection: bool,
    #[serde(default)]
    pub roles: Vec<RoleAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleAssignment {
    /// Client id of the application.
    pub principal: String,
    /// `Managed HSM Crypto User`, `Managed HSM Crypto Officer`, `Managed HSM Crypto Auditor`
    /// or `Managed HSM Administrator`.
    pub role: String,
}

/// The pricing tier of a vault: Standard holds software-protected keys only, Premium
/// HSM-protected keys too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VaultSku {
    Standard,
    Premium,
}

/// A Key Vault vault. Who may do what is decided by access policies (the classic model)
/// or, with `rbac`, by role assignments (`Key Vault Crypto Officer`, ...).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    pub name: String,
    pub subscription: String,
    pub sku: VaultSku,
    #[serde(default = "default_resource_group")]
    pub resource_group: String,
    #[serde(default = "default_location")]
    pub location: String,
    /// Soft-delete retention, 7 to 90 days.
    #[serde(default = "default_retention")]
    pub retention_days: u32,
    #[serde(default)]
    pub purge_protection: bool,
    /// Role-based access (`enableRbacAuthorization`) instead of access policies.
    #[serde(default)]
    pub rbac: bool,
    #[serde(default)]
    pub access_policies: Vec<AccessPolicy>,
    /// With `rbac`: `Key Vault Administrator`, `Key Vault Crypto Officer`,
    /// `Key Vault Crypto User` or `Key Vault Reader`.
    #[serde(default)]
    pub roles: Vec<RoleAssignment>,
}

/// An access policy entry: the key permissions of one application, as Azure names them
/// (`get`, `list`, `create`, `import`, `update`, `delete`, `recover`, `purge`, `backup`,
/// `restore`, `rotate`, `encrypt`, `decrypt`, `wrapKey`, `unwrapKey`, `sign`, `verify`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessPolicy {
    /// Client id of the application.
    pub principal: String,
    pub keys: Vec<String>,
}

/// Every key permission an access policy can grant.
pub const KEY_PERMISSIONS: &[&str] = &[
    "get",
    "list",
    "create",
    "import",
    "update",
    "delete",
    "recover",
    "purge",
    "backup",
    "restore",
    "rotate",
    "getrotationpolicy",
    "setrotationpolicy",
    "release",
    "encrypt",
    "decrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
];

fn default_resource_group() -> String {
    "default".into()
}
fn default_location() -> String {
    "westeurope".into()
}
fn default_retention() -> u32 {
    90
}

/// Well-known identifiers of the demo set-up.
pub mod demo {
    pub const TENANT: &str = "6f1c1f5e-6b1a-4d4e-9b0e-2a7d3c9e4b10";
    pub const CLIENT_ID: &str = "2b8d4c3a-9f7e-4a61-8c25-5e0b7d1f3a94";
    pub const CLIENT_SECRET: &str = "demo-client-secret";
    pub const SUBSCRIPTION: &str = "8e3a1d2c-4b5f-4c7a-9e1d-0f2b3c4d5e6f";
    pub const HSM: &str = "demo-hsm";
    /// A Standard vault (software-protected keys).
    pub const STANDARD_VAULT: &str = "demo-standard";
    /// A Premium vault (HSM-protected keys too).
    pub const PREMIUM_VAULT: &str = "demo-premium";
}

impl EmulatorConfig {
    /// One tenant, one application with full rights on one subscription and one HSM.
    pub fn demo() -> EmulatorConfig {
        EmulatorConfig {
            server: ServerConfig::default(),
            tenants: vec![TenantConfig {
                id: demo::TENANT.into(),
            }],
            applications: vec![ApplicationConfig {
                tenant: demo::TENANT.into(),
                client_id: demo::CLIENT_ID.into(),
                client_secret: demo::CLIENT_SECRET.into(),
                name: Some("keyward-demo".into()),
            }],
            subscriptions: vec![SubscriptionConfig {
                id: demo::SUBSCRIPTION.into(),
                tenant: demo::TENANT.into(),
                name: Some("Keyward demo".into()),
                readers: vec![demo::CLIENT_ID.into()],
            }],
            hsms: vec![HsmConfig {
                name: demo::HSM.into(),
                subscription: demo::SUBSCRIPTION.into(),
                resource_group: "keyward-demo".into(),
                location: default_location(),
                retention_days: 90,
                purge_protection: false,
                roles: vec![
                    RoleAssignment {
                        principal: demo::CLIENT_ID.into(),
                        role: "Managed HSM Crypto User".into(),
                    },
                    RoleAssignment {
                        principal: demo::CLIENT_ID.into(),
                        role: "Managed HSM Crypto Officer".into(),
                    },
                ],
            }],
            vaults: [
                (demo::STANDARD_VAULT, VaultSku::Standard),
                (demo::PREMIUM_VAULT, VaultSku::Premium),
            ]
            .into_iter()
            .map(|(name, sku)| VaultConfig {
                name: name.into(),
                subscription: demo::SUBSCRIPTION.into(),
                sku,
                resource_group: "keyward-demo".into(),
                location: default_location(),
                retention_days: 90,
                purge_protection: false,
                rbac: false,
                access_policies: vec![AccessPolicy {
                    principal: demo::CLIENT_ID.into(),
                    keys: KEY_PERMISSIONS.iter().map(|p| p.to_string()).collect(),
                }],
                roles: vec![],
            })
            .collect(),
            attestation_issuers: vec![],
        }
    }

    pub fn from_toml(text: &str) -> Result<EmulatorConfig, String> {
        toml::from_str(text).map_err(|e| format!("invalid emulator configuration: {e}"))
    }
}
