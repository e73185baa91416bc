//! A group's link to an external key manager as requested (`external_kms`): checked field by
//! field and merged into what is stored, the non-secret settings as a typed [`LinkConfig`],
//! the secrets sealed.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::catalog::groups::{
    ExternalLink, LinkConfig, LinkEndpoints, LinkKind, LinkTls, VaultType, secrets_context,
};
use crate::kms;

use super::model::Removable;
use super::{ApiError, ApiResult, AppState};

/// The link of a group to an external key manager (Azure Managed HSM or Key Vault vault). Secrets
/// (`client_secret`, `tls.client_key`) are write-only: stored sealed, never returned.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExternalKmsIn {
    /// `AzureManagedHsm`.
    #[schema(schema_with = super::schemas::link_kind)]
    pub kind: String,
    pub tenant_id: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub subscription_id: Option<String>,
    /// The chosen instance (Managed HSM or vault URI). Once set it cannot be changed.
    pub instance: Option<String>,
    /// What the instance is: `STANDARD` or `PREMIUM` (a Key Vault vault of that tier) or
    /// `MANAGED` (a Managed HSM, the default for an instance under the Managed HSM suffix).
    /// Required with a vault's URI; fixed once the instance is chosen.
    #[schema(schema_with = super::schemas::vault_type)]
    pub key_vault_type: Option<String>,
    /// Endpoint overrides: `identity`, `management`, `instance_suffix`, `vault_suffix`.
    #[schema(value_type = Option<Object>)]
    pub endpoints: Option<Value>,
    pub tls: Option<TlsIn>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsIn {
    /// PEM of a CA to trust instead of the public roots; `null` (or `"remove"`): the public
    /// roots again; absent: as it is.
    #[serde(default, deserialize_with = "super::model::null_removes")]
    #[schema(value_type = Option<String>)]
    pub ca_pem: Option<Removable<String>>,
    /// PEM of a client certificate (chain), with `client_key`; `null` (or `"remove"`)
    /// removes both.
    #[serde(default, deserialize_with = "super::model::null_removes")]
    #[schema(value_type = Option<String>)]
    pub client_cert: Option<Removable<String>>,
    pub client_key: Option<String>,
    /// Check that certificates name the host (default true).
    pub validate_hostname: Option<bool>,
}

/// A stored link as shown: its kind and non-secret settings (secrets only as the
/// `has_client_secret` and `tls.has_client_key` flags).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ExternalKmsOut {
    /// `AzureManagedHsm`.
    pub kind: String,
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub config: LinkConfig,
}

impl From<&ExternalLink> for ExternalKmsOut {
    fn from(l: &ExternalLink) -> Self {
        ExternalKmsOut {
            kind: l.kind.as_str().to_string(),
            config: l.config.clone(),
        }
    }
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

fn endpoints(e: &Value) -> ApiResult<LinkEndpoints> {
    let map = e
        .as_object()
        .ok_or_else(|| ApiError::field("external_kms.endpoints", "must be an object"))?;
    let mut out = LinkEndpoints::default();
    for (k, v) in map {
        let field = format!("external_kms.endpoints.{k}");
        let v = v
            .as_str()
            .ok_or_else(|| ApiError::field(&field, "must be a string"))?
            .to_string();
        match k.as_str() {
            "identity" => {
                check_https(&field, &v)?;
                out.identity = Some(v);
            }
            "management" => {
                check_https(&field, &v)?;
                out.management = Some(v);
            }
            "instance_suffix" => out.instance_suffix = Some(v),
            "vault_suffix" => out.vault_suffix = Some(v),
            other => {
                return Err(ApiError::field(
                    "external_kms.endpoints",
                    format!(
                        "unknown endpoint '{other}' (identity, management, instance_suffix, vault_suffix)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// The kind of a newly chosen instance: the one asked for, checked against the instance's
/// host name (vaults live under the vault suffix, Managed HSMs under theirs), or, when none
/// is asked for, a Managed HSM outside the vault suffix.
fn instance_type(
    config: &LinkConfig,
    instance: &str,
    asked: Option<VaultType>,
) -> ApiResult<VaultType> {
    let endpoints = config.endpoints.clone().unwrap_or_default();
    let vault_suffix = endpoints
        .vault_suffix
        .as_deref()
        .unwrap_or(kms::DEFAULT_VAULT_SUFFIX)
        .to_ascii_lowercase();
    let host = instance
        .strip_prefix("https://")
        .unwrap_or(instance)
        .split(['/', ':'])
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    let in_vaults = host.ends_with(&format!(".{vault_suffix}"));
    match (asked, in_vaults) {
        (None, false) => Ok(VaultType::Managed),
        (None, true) => Err(ApiError::field(
            "external_kms.key_vault_type",
            "is required for a Key Vault vault: STANDARD or PREMIUM, as its pricing tier",
        )),
        (Some(VaultType::Managed), true) => Err(ApiError::field(
            "external_kms.key_vault_type",
            format!("MANAGED does not fit '{host}', a vault host name (*.{vault_suffix})"),
        )),
        (Some(t), false) if t.is_vault() => Err(ApiError::field(
            "external_kms.key_vault_type",
            format!(
                "{} needs a vault host name (*.{vault_suffix}), not '{host}'",
                t.as_str()
            ),
        )),
        (Some(t), _) => Ok(t),
    }
}

/// The settings and secrets of a link after applying `new` to the current ones (none for a
/// new link), checked but not stored.
pub fn link_settings(
    old_config: Option<&LinkConfig>,
    mut secrets: HashMap<String, String>,
    new: ExternalKmsIn,
) -> ApiResult<(LinkKind, LinkConfig, HashMap<String, String>)> {
    let kind = LinkKind::parse(&new.kind).ok_or_else(|| {
        ApiError::field(
            "external_kms.kind",
            format!("'{}' is not supported (AzureManagedHsm)", new.kind),
        )
    })?;
    let mut config = old_config.cloned().unwrap_or_default();
    for (field, value, slot) in [
        ("tenant_id", &new.tenant_id, &mut config.tenant_id),
        ("client_id", &new.client_id, &mut config.client_id),
        (
            "subscription_id",
            &new.subscription_id,
            &mut config.subscription_id,
        ),
    ] {
        if let Some(v) = value {
            if v.trim().is_empty() {
                return Err(ApiError::field(
                    &format!("external_kms.{field}"),
                    "must not be empty",
                ));
            }
            *slot = Some(v.trim().to_string());
        }
    }
    if let Some(e) = &new.endpoints {
        config.endpoints = Some(endpoints(e)?);
    }
    let asked_type = match &new.key_vault_type {
        Some(t) => Some(VaultType::parse(t).ok_or_else(|| {
            ApiError::field(
                "external_kms.key_vault_type",
                format!("'{t}' is not one of STANDARD, PREMIUM, MANAGED"),
            )
        })?),
        None => None,
    };
    if let Some(instance) = &new.instance {
        check_https("external_kms.instance", instance)?;
        if let Some(current) = &config.instance
            && current != instance
        {
            return Err(ApiError::Conflict(
                "the instance of a linked group cannot be changed".into(),
            ));
        }
        if config.instance.is_none() {
            config.key_vault_type = Some(instance_type(&config, instance, asked_type)?);
        }
        config.instance = Some(instance.clone());
    }
    if let Some(t) = asked_type
        && config.instance.is_some()
        && t != config.vault_type()
    {
        return Err(ApiError::Conflict(format!(
            "the group's instance is a {}; its kind cannot be changed",
            config.vault_type().label()
        )));
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
        let t = config.tls.get_or_insert_with(LinkTls::default);
        match tls.ca_pem {
            Some(Removable::Set(ca)) => t.ca_pem = Some(ca),
            Some(Removable::Remove) => t.ca_pem = None,
            None => {}
        }
        match tls.client_cert {
            Some(Removable::Set(c)) => t.client_cert = Some(c),
            Some(Removable::Remove) => {
                t.client_cert = None;
                secrets.remove("client_key");
            }
            None => {}
        }
        if let Some(v) = tls.validate_hostname {
            t.validate_hostname = v;
        }
    }
    // Check the TLS settings can be used before storing them.
    kms::tls_settings(&config, &secrets)
        .validate()
        .map_err(|e| ApiError::field("external_kms.tls", e))?;
    config.has_client_secret = secrets.contains_key("client_secret");
    if let Some(t) = &mut config.tls {
        t.has_client_key = secrets.contains_key("client_key");
    }
    Ok((kind, config, secrets))
}

/// Merges a link update into the stored link: non-secret fields into `config`, secrets into
/// the sealed part.
pub fn merge_link(
    state: &AppState,
    group_id: &str,
    old: Option<&ExternalLink>,
    new: ExternalKmsIn,
) -> ApiResult<ExternalLink> {
    let secrets = match old {
        Some(l) => kms::unseal(&state.catalog, group_id, l)?,
        None => HashMap::new(),
    };
    let (kind, config, secrets) = link_settings(old.map(|l| &l.config), secrets, new)?;
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
