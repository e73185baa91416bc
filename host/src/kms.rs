//! External key managers: a group's link resolved into what its connector plugin needs
//! (endpoints, credentials, chosen instance, TLS settings), and typed calls through the
//! plugin. Nothing here speaks Azure: the `azure-mhsm` plugin does.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::catalog::Catalog;
use crate::catalog::groups::{
    ExternalLink, Group, LinkConfig, LinkKind, VaultType, secrets_context,
};
use crate::catalog::sobjects::{Curve, ObjType};
use crate::plugins::kms::{
    Connection, Credentials, CryptRequest, CryptResult, Curve as ConnectorCurve, DeletedKey,
    DeletedKeyItem, Endpoints, ImportRequest, Instance, InstanceKind, KeyItem, KeyPage, KeyRef,
    KeySpec, KeyType, KmsError as RemoteError, PublicKey, RemoteKey, SignRequest, SignResult,
    UpdateRequest, VerifyRequest,
};
use crate::plugins::{PluginError, PluginRuntime, TlsSettings};

/// The connector plugin that serves Azure Managed HSM links.
pub const AZURE_PLUGIN: &str = "azure-mhsm";

/// Azure public cloud endpoints, used where a link does not override them.
pub const DEFAULT_IDENTITY: &str = "https://login.microsoftonline.com";
pub const DEFAULT_MANAGEMENT: &str = "https://management.azure.com";
pub const DEFAULT_INSTANCE_SUFFIX: &str = "managedhsm.azure.net";
pub const DEFAULT_VAULT_SUFFIX: &str = "vault.azure.net";

/// How a remote refusal is classified (the contract's `kms-error` cases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    NotFound,
    Unauthorized,
    Forbidden,
    Conflict,
    Throttled,
    BadRequest,
    Unavailable,
    Other,
}

impl RemoteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoteKind::NotFound => "not_found",
            RemoteKind::Unauthorized => "unauthorized",
            RemoteKind::Forbidden => "forbidden",
            RemoteKind::Conflict => "conflict",
            RemoteKind::Throttled => "throttled",
            RemoteKind::BadRequest => "bad_request",
            RemoteKind::Unavailable => "unavailable",
            RemoteKind::Other => "other",
        }
    }

    pub fn parse(s: &str) -> Option<RemoteKind> {
        [
            RemoteKind::NotFound,
            RemoteKind::Unauthorized,
            RemoteKind::Forbidden,
            RemoteKind::Conflict,
            RemoteKind::Throttled,
            RemoteKind::BadRequest,
            RemoteKind::Unavailable,
            RemoteKind::Other,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum KmsError {
    #[error("the group is not linked to an external key manager")]
    NotLinked,
    #[error("the group's link is incomplete: {0}")]
    Incomplete(String),
    /// The key manager (or the way to it) refused or failed; what it said is kept.
    #[error("{}", remote_message(*.kind, .code, .message))]
    Remote {
        kind: RemoteKind,
        status: Option<u16>,
        code: String,
        message: String,
        retry_after_ms: Option<u64>,
    },
    #[error("{0}")]
    Plugin(String),
    #[error("the link's sealed secrets cannot be opened: {0}")]
    Secrets(String),
}

fn remote_message(kind: RemoteKind, code: &str, message: &str) -> String {
    let what = match kind {
        RemoteKind::NotFound => "not found in the external key manager",
        RemoteKind::Unauthorized => "the external key manager did not accept the credentials",
        RemoteKind::Forbidden => "the external key manager refused the operation",
        RemoteKind::Conflict => "conflict in the external key manager",
        RemoteKind::Throttled => "the external key manager is throttling requests",
        RemoteKind::BadRequest => "the external key manager rejected the request",
        RemoteKind::Unavailable => "the external key manager could not be reached",
        RemoteKind::Other => "the external key manager failed",
    };
    match (code.is_empty(), message.is_empty()) {
        (true, true) => what.to_string(),
        (true, false) => format!("{what}: {message}"),
        (false, true) => format!("{what} ({code})"),
        (false, false) => format!("{what} ({code}): {message}"),
    }
}

impl From<RemoteError> for KmsError {
    fn from(e: RemoteError) -> Self {
        let (kind, r, retry_after_ms) = match e {
            RemoteError::NotFound(r) => (RemoteKind::NotFound, r, None),
            RemoteError::Unauthorized(r) => (RemoteKind::Unauthorized, r, None),
            RemoteError::Forbidden(r) => (RemoteKind::Forbidden, r, None),
            RemoteError::Conflict(r) => (RemoteKind::Conflict, r, None),
            RemoteError::Throttled(t) => (RemoteKind::Throttled, t.error, t.retry_after_ms),
            RemoteError::BadRequest(r) => (RemoteKind::BadRequest, r, None),
            RemoteError::Unavailable(r) => (RemoteKind::Unavailable, r, None),
            RemoteError::Other(r) => (RemoteKind::Other, r, None),
        };
        KmsError::Remote {
            kind,
            status: r.status,
            code: r.code,
            message: r.message,
            retry_after_ms,
        }
    }
}

impl From<PluginError> for KmsError {
    fn from(e: PluginError) -> Self {
        KmsError::Plugin(e.to_string())
    }
}

impl KmsError {
    pub fn kind(&self) -> Option<RemoteKind> {
        match self {
            KmsError::Remote { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == Some(RemoteKind::NotFound)
    }
}

pub type Result<T> = std::result::Result<T, KmsError>;

/// A link ready for calls: the plugin to use, the connection it gets with every call and the
/// TLS settings of its HTTP requests. Holds the unsealed client secret: never log it.
#[derive(Clone)]
pub struct Link {
    pub plugin: String,
    pub conn: Connection,
    pub tls: TlsSettings,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("plugin", &self.plugin)
            .field("tenant", &self.conn.credentials.tenant_id)
            .field("client", &self.conn.credentials.client_id)
            .field("instance", &self.conn.instance)
            .finish_non_exhaustive()
    }
}

impl Link {
    /// The link of a group, with its secrets unsealed.
    /// The group's link, or `None` for a group without one.
    pub fn if_linked(catalog: &Catalog, group: &Group) -> Result<Option<Link>> {
        match group.link {
            Some(_) => Link::of_group(catalog, group).map(Some),
            None => Ok(None),
        }
    }

    pub fn of_group(catalog: &Catalog, group: &Group) -> Result<Link> {
        let link = group.link.as_ref().ok_or(KmsError::NotLinked)?;
        let secrets = unseal(catalog, &group.id, link)?;
        Link::from_parts(link.kind, &link.config, &secrets)
    }

    /// A link from its stored (or proposed) settings and secrets.
    pub fn from_parts(
        kind: LinkKind,
        config: &LinkConfig,
        secrets: &HashMap<String, String>,
    ) -> Result<Link> {
        let LinkKind::AzureManagedHsm = kind;
        let field = |name: &str, v: &Option<String>| -> Result<String> {
            v.as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(str::to_string)
                .ok_or_else(|| KmsError::Incomplete(format!("{name} is not set")))
        };
        let endpoints = config.endpoints.clone().unwrap_or_default();
        let endpoint = |v: &Option<String>, default: &str| {
            v.as_deref()
                .filter(|s| !s.is_empty())
                .unwrap_or(default)
                .trim_end_matches('/')
                .to_string()
        };
        let client_secret = secrets
            .get("client_secret")
            .cloned()
            .ok_or_else(|| KmsError::Incomplete("client_secret is not set".into()))?;
        Ok(Link {
            plugin: AZURE_PLUGIN.to_string(),
            conn: Connection {
                endpoints: Endpoints {
                    identity: endpoint(&endpoints.identity, DEFAULT_IDENTITY),
                    management: endpoint(&endpoints.management, DEFAULT_MANAGEMENT),
                    instance_suffix: endpoint(&endpoints.instance_suffix, DEFAULT_INSTANCE_SUFFIX),
                    vault_suffix: endpoint(&endpoints.vault_suffix, DEFAULT_VAULT_SUFFIX),
                },
                credentials: Credentials {
                    tenant_id: field("tenant_id", &config.tenant_id)?,
                    client_id: field("client_id", &config.client_id)?,
                    client_secret,
                },
                subscription_id: field("subscription_id", &config.subscription_id)?,
                instance: config.instance.clone().filter(|s| !s.is_empty()),
                kind: instance_kind(config.vault_type()),
            },
            tls: tls_settings(config, secrets),
        })
    }

    pub fn instance(&self) -> Option<&str> {
        self.conn.instance.as_deref()
    }

    /// The instance's short name (`contoso` of `https://contoso.managedhsm.azure.net`).
    pub fn instance_name(&self) -> Option<String> {
        let uri = self.instance()?;
        let host = uri.split_once("://").map_or(uri, |(_, r)| r);
        Some(
            host.split(['.', '/', ':'])
                .next()
                .unwrap_or(host)
                .to_string(),
        )
    }
}

/// Key permissions Keyward uses in a vault that grants access by access policies: every
/// key-management flow, and the cryptographic operations applications ask of the vault's
/// keys.
pub const NEEDED_KEY_PERMISSIONS: &[&str] = &[
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
    "encrypt",
    "decrypt",
    "wrapKey",
    "unwrapKey",
    "sign",
    "verify",
];

/// One instance of a subscription as a connection test lists it (DSM's `KeyVault`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstanceInfo {
    /// Azure resource id.
    pub id: String,
    pub name: String,
    /// `STANDARD`, `PREMIUM` or `MANAGED`.
    #[schema(value_type = String)]
    pub vault_type: VaultType,
    /// Data-plane URI: what `external_kms.instance` takes.
    pub uri: String,
    pub location: String,
    /// Soft-delete retention in days.
    pub retention_days: Option<u32>,
    pub purge_protection: bool,
    /// Whether Azure roles (rather than access policies) grant access.
    pub rbac: bool,
    /// Vaults with access policies: the key permissions the application's policy grants.
    pub key_permissions: Option<Vec<String>>,
    /// Vaults with access policies: what Keyward needs that the policy does not grant.
    pub missing_permissions: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

impl InstanceInfo {
    pub fn of(i: &Instance) -> InstanceInfo {
        let missing = match &i.key_permissions {
            Some(granted) => NEEDED_KEY_PERMISSIONS
                .iter()
                .filter(|n| !granted.iter().any(|g| g.eq_ignore_ascii_case(n)))
                .map(|n| n.to_string())
                .collect(),
            None => vec![],
        };
        InstanceInfo {
            id: i.id.clone(),
            name: i.name.clone(),
            vault_type: vault_type_of(i.kind),
            uri: i.uri.clone(),
            location: i.location.clone(),
            retention_days: i.retention_days,
            purge_protection: i.purge_protection,
            rbac: i.rbac,
            key_permissions: i.key_permissions.clone(),
            missing_permissions: missing,
            tags: i
                .tags
                .iter()
                .map(|t| (t.name.clone(), t.value.clone()))
                .collect(),
        }
    }

    /// What a person must grant the application, when the instance's access policy lacks
    /// something Keyward needs.
    pub fn access_warning(&self) -> Option<String> {
        (!self.missing_permissions.is_empty()).then(|| {
            format!(
                "the access policy of the application on the vault '{}' lacks the key permissions {}: add them to the policy (Azure portal: Access policies) or some flows will be refused",
                self.name,
                self.missing_permissions.join(", ")
            )
        })
    }
}

/// What to grant an application that the instance refused, by kind of instance.
pub fn access_advice(t: VaultType) -> &'static str {
    match t {
        VaultType::Managed => {
            "give the application the Managed HSM Crypto Officer role (key management) and the Managed HSM Crypto User role (cryptography) in the HSM's local RBAC"
        }
        VaultType::Standard | VaultType::Premium => {
            "give the application the Key Vault Crypto Officer role on the vault, or, if the vault uses access policies, an access policy with the key permissions get, list, create, import, update, delete, recover, purge, backup, restore, rotate and the cryptographic ones"
        }
    }
}

/// The connector's name for a kind of instance.
pub fn instance_kind(t: VaultType) -> InstanceKind {
    match t {
        VaultType::Standard => InstanceKind::Standard,
        VaultType::Premium => InstanceKind::Premium,
        VaultType::Managed => InstanceKind::Managed,
    }
}

/// Keyward's name for a connector's kind of instance.
pub fn vault_type_of(k: InstanceKind) -> VaultType {
    match k {
        InstanceKind::Standard => VaultType::Standard,
        InstanceKind::Premium => VaultType::Premium,
        InstanceKind::Managed => VaultType::Managed,
    }
}

/// The secrets of a stored link (client secret, TLS client key).
pub fn unseal(
    catalog: &Catalog,
    group_id: &str,
    link: &ExternalLink,
) -> Result<HashMap<String, String>> {
    match &link.secrets {
        Some(sealed) => {
            let plain = catalog
                .open_sealed(&secrets_context(group_id), sealed)
                .map_err(|e| KmsError::Secrets(e.to_string()))?;
            serde_json::from_slice(&plain).map_err(|e| KmsError::Secrets(e.to_string()))
        }
        None => Ok(HashMap::new()),
    }
}

/// The TLS settings of a link, for the connector's HTTP calls.
pub fn tls_settings(config: &LinkConfig, secrets: &HashMap<String, String>) -> TlsSettings {
    let t = config.tls.clone().unwrap_or_default();
    TlsSettings {
        ca_pem: t.ca_pem,
        client_cert_pem: t.client_cert,
        client_key_pem: secrets.get("client_key").cloned(),
        validate_hostname: t.validate_hostname,
    }
}

/// The catalog's type of a key the connector describes.
pub fn obj_type_of(spec: &KeySpec) -> ObjType {
    match spec.key_type {
        KeyType::Rsa => ObjType::Rsa,
        KeyType::Ec => ObjType::Ec,
        KeyType::Aes => ObjType::Aes,
    }
}

/// The catalog's curve of a connector's curve (Keyward holds no secp256k1 keys).
pub fn curve_of(c: ConnectorCurve) -> Option<Curve> {
    match c {
        ConnectorCurve::P256 => Some(Curve::P256),
        ConnectorCurve::P384 => Some(Curve::P384),
        ConnectorCurve::P521 => Some(Curve::P521),
        ConnectorCurve::Secp256k1 => None,
    }
}

/// The SubjectPublicKeyInfo DER of a remote key's public key.
pub fn public_der(r: &RemoteKey) -> Option<Vec<u8>> {
    match &r.public_key {
        Some(PublicKey::Rsa(k)) => keyward_crypto::rsa_public_der(&k.n, &k.e).ok(),
        Some(PublicKey::Ec(k)) => {
            keyward_crypto::ec_public_der(curve_of(k.curve)?, &k.x, &k.y).ok()
        }
        None => None,
    }
}

/// Typed calls into a connector plugin.
#[derive(Clone)]
pub struct Kms {
    plugins: PluginRuntime,
}

/// One connector call: `$method` of the `kms` interface with the link's connection first.
macro_rules! connector_calls {
    ($($(#[$doc:meta])* $name:ident => $call:ident ( $($arg:ident : $ty:ty),* ) -> $ret:ty;)*) => {$(
        $(#[$doc])*
        pub async fn $name(&self, link: &Link, $($arg: $ty),*) -> Result<$ret> {
            let answer = self
                .plugins
                .call_connector(&link.plugin, &link.tls, async |k, store| {
                    k.$call(store, &link.conn, $($arg),*).await
                })
                .await?;
            Ok(answer?)
        }
    )*};
}

impl Kms {
    pub fn new(plugins: PluginRuntime) -> Kms {
        Kms { plugins }
    }

    connector_calls! {
        /// Authenticates and lists the instances of the subscription.
        list_instances => call_list_instances() -> Vec<Instance>;
        /// Checks data-plane access to the chosen instance.
        check_instance => call_check_instance() -> ();
        get_key => call_get_key(key: &KeyRef) -> RemoteKey;
        /// One page of a key's versions.
        list_versions => call_list_versions(name: &str, page: Option<&str>) -> KeyPage;
        create_key => call_create_key(req: &crate::plugins::kms::CreateRequest) -> RemoteKey;
        import_key => call_import_key(req: &ImportRequest) -> RemoteKey;
        update_key => call_update_key(key: &KeyRef, req: &UpdateRequest) -> RemoteKey;
        rotate_key => call_rotate_key(name: &str) -> RemoteKey;
        delete_key => call_delete_key(name: &str) -> DeletedKey;
        get_deleted => call_get_deleted(name: &str) -> DeletedKey;
        recover_key => call_recover_key(name: &str) -> RemoteKey;
        purge_key => call_purge_key(name: &str) -> ();
        backup_key => call_backup_key(name: &str) -> Vec<u8>;
        restore_key => call_restore_key(backup: &[u8]) -> RemoteKey;
        encrypt => call_encrypt(key: &KeyRef, req: &CryptRequest) -> CryptResult;
        decrypt => call_decrypt(key: &KeyRef, req: &CryptRequest) -> CryptResult;
        wrap_key => call_wrap_key(key: &KeyRef, req: &CryptRequest) -> CryptResult;
        unwrap_key => call_unwrap_key(key: &KeyRef, req: &CryptRequest) -> CryptResult;
        sign => call_sign(key: &KeyRef, req: &SignRequest) -> SignResult;
        verify => call_verify(key: &KeyRef, req: &VerifyRequest) -> bool;
    }

    /// One page of keys: the first without a continuation token, else the one it names.
    pub async fn list_keys(&self, link: &Link, page: Option<&str>) -> Result<KeyPage> {
        Ok(self
            .plugins
            .call_connector(&link.plugin, &link.tls, async |k, store| {
                k.call_list_keys(store, &link.conn, page).await
            })
            .await??)
    }

    /// Every key of the instance, following the continuation links.
    pub async fn list_all_keys(&self, link: &Link) -> Result<Vec<KeyItem>> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let p = self.list_keys(link, page.as_deref()).await?;
            out.extend(p.items);
            match p.next {
                Some(next) => page = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// Every soft-deleted key of the instance.
    pub async fn list_all_deleted(&self, link: &Link) -> Result<Vec<DeletedKeyItem>> {
        let mut out = Vec::new();
        let mut page: Option<String> = None;
        loop {
            let p = self
                .plugins
                .call_connector(&link.plugin, &link.tls, async |k, store| {
                    k.call_list_deleted(store, &link.conn, page.as_deref())
                        .await
                })
                .await??;
            out.extend(p.items);
            match p.next {
                Some(next) => page = Some(next),
                None => return Ok(out),
            }
        }
    }

    /// The key, or `None` when the instance has no (live) key of that name.
    pub async fn find_key(&self, link: &Link, name: &str) -> Result<Option<RemoteKey>> {
        let key = KeyRef {
            name: name.to_string(),
            version: None,
        };
        match self.get_key(link, &key).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The soft-deleted key, or `None`.
    pub async fn find_deleted(&self, link: &Link, name: &str) -> Result<Option<DeletedKey>> {
        match self.get_deleted(link, name).await {
            Ok(k) => Ok(Some(k)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}
