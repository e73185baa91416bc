//! Consulting the policy plugins on key operations (FLOWS F27 to F29).
//!
//! Every create, import, update, copy, rotate and cryptographic operation is put to the
//! account's crypto policy, the group's crypto policy, the group's key metadata policy and the
//! group's own policy plugins. One denial in enforce mode denies; violations of `warn`
//! policies come back as warnings; `dry-run` violations are only recorded in the audit log.
//! A policy that cannot be evaluated fails the operation (closed).

use serde::Serialize;

use crate::catalog::accounts::Account;
use crate::catalog::groups::Group;
use crate::catalog::sobjects::{self, Curve, ObjType, SObject};
use crate::plugins::policy::{
    Decision, KeyAttributes, KeyOp, KeySpec, KeyState, KeyType, Mode, PolicyRequest, Principal, Tag,
};
use crate::plugins::{PluginError, PluginRuntime};

pub const CRYPTO_POLICY_PLUGIN: &str = "crypto-policy";
pub const METADATA_POLICY_PLUGIN: &str = "key-metadata-policy";

/// One finding of one policy.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PolicyFinding {
    /// Which policy: `account crypto policy`, `group crypto policy`, `key metadata policy` or
    /// a custom plugin's name.
    pub policy: String,
    pub rule: String,
    pub message: String,
}

/// The combined verdict of every policy that applies.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Verdict {
    /// Violations of enforced policies: non-empty means denied.
    pub violations: Vec<PolicyFinding>,
    /// Shown to the caller and recorded: violations of `warn` policies and plugin warnings.
    pub warnings: Vec<PolicyFinding>,
    /// Recorded only: violations of `dry-run` policies.
    pub dry_run: Vec<PolicyFinding>,
}

impl Verdict {
    pub fn allowed(&self) -> bool {
        self.violations.is_empty()
    }

    /// What the audit log records about the decision (nothing when nothing was found).
    pub fn audit_details(&self) -> serde_json::Value {
        if self.violations.is_empty() && self.warnings.is_empty() && self.dry_run.is_empty() {
            return serde_json::Value::Null;
        }
        serde_json::json!({"policy": self})
    }

    fn absorb(&mut self, policy: &str, d: Decision) {
        let find = |f: &crate::plugins::policy::Finding| PolicyFinding {
            policy: policy.to_string(),
            rule: f.rule.clone(),
            message: f.message.clone(),
        };
        let violations = d.violations.iter().map(find);
        match d.mode {
            Mode::Enforce if !d.allow => self.violations.extend(violations),
            Mode::Enforce => {}
            Mode::Warn => self.warnings.extend(violations),
            Mode::DryRun => self.dry_run.extend(violations),
        }
        self.warnings.extend(d.warnings.iter().map(find));
    }
}

#[derive(Debug, thiserror::Error)]
#[error("policy '{policy}' could not be evaluated: {source}")]
pub struct PolicyUnavailable {
    pub policy: String,
    #[source]
    pub source: PluginError,
}

/// A catalog operation as the policy contract names it.
pub fn key_op(op: sobjects::KeyOp) -> KeyOp {
    match op {
        sobjects::KeyOp::Encrypt => KeyOp::Encrypt,
        sobjects::KeyOp::Decrypt => KeyOp::Decrypt,
        sobjects::KeyOp::Sign => KeyOp::Sign,
        sobjects::KeyOp::Verify => KeyOp::Verify,
        sobjects::KeyOp::WrapKey => KeyOp::WrapKey,
        sobjects::KeyOp::UnwrapKey => KeyOp::UnwrapKey,
        sobjects::KeyOp::Export => KeyOp::Export,
        sobjects::KeyOp::AppManageable => KeyOp::AppManageable,
    }
}

/// A security object as the policy contract sees it.
pub fn attributes(o: &SObject, now: i64) -> KeyAttributes {
    let curve = o.curve.map(|c| match c {
        Curve::P256 => crate::plugins::policy::Curve::P256,
        Curve::P384 => crate::plugins::policy::Curve::P384,
        Curve::P521 => crate::plugins::policy::Curve::P521,
    });
    let state = match o.state(now) {
        crate::catalog::sobjects::KeyState::PreActive => KeyState::PreActive,
        crate::catalog::sobjects::KeyState::Active => KeyState::Active,
        crate::catalog::sobjects::KeyState::Deactivated => KeyState::Deactivated,
        crate::catalog::sobjects::KeyState::Compromised => KeyState::Compromised,
        crate::catalog::sobjects::KeyState::Destroyed => KeyState::Destroyed,
    };
    KeyAttributes {
        name: o.name.clone(),
        description: o.description.clone(),
        spec: KeySpec {
            key_type: match o.obj_type {
                ObjType::Aes => KeyType::Aes,
                ObjType::Rsa => KeyType::Rsa,
                ObjType::Ec => KeyType::Ec,
            },
            size: o.key_size,
            curve,
        },
        ops: o.key_ops.iter().map(key_op).collect(),
        enabled: o.enabled,
        state: Some(state),
        created: Some(o.created_at),
        activation: o.activation_date,
        deactivation: o.deactivation_date,
        tags: o
            .tags
            .iter()
            .map(|(k, v)| Tag {
                name: k.clone(),
                value: v.clone(),
            })
            .collect(),
        external: o.external.is_some(),
    }
}

/// Who is acting, for the policy request.
pub fn principal(p: &crate::auth::Principal) -> Principal {
    match p {
        crate::auth::Principal::User { user_id, .. } => Principal::User(user_id.clone()),
        crate::auth::Principal::App { app_id, .. } => Principal::App(app_id.clone()),
    }
}

/// Puts one operation (`request`, for a key of `group` in `account`) to every policy of the
/// account and group.
pub async fn check(
    plugins: &PluginRuntime,
    account: &Account,
    group: &Group,
    request: &PolicyRequest,
) -> Result<Verdict, PolicyUnavailable> {
    let mut policies: Vec<(String, &str, String)> = Vec::new();
    if let Some(p) = &account.crypto_policy {
        policies.push((
            "account crypto policy".into(),
            CRYPTO_POLICY_PLUGIN,
            p.clone(),
        ));
    }
    if let Some(p) = &group.crypto_policy {
        policies.push((
            "group crypto policy".into(),
            CRYPTO_POLICY_PLUGIN,
            p.clone(),
        ));
    }
    if let Some(p) = &group.key_metadata_policy {
        policies.push((
            "key metadata policy".into(),
            METADATA_POLICY_PLUGIN,
            p.clone(),
        ));
    }
    for c in &group.custom_policies {
        policies.push((c.plugin.clone(), c.plugin.as_str(), c.config.to_string()));
    }
    let mut verdict = Verdict::default();
    if policies.is_empty() {
        return Ok(verdict);
    }
    for (label, plugin, config) in policies {
        let decision = plugins
            .evaluate_policy(plugin, &config, request)
            .await
            .map_err(|source| PolicyUnavailable {
                policy: label.clone(),
                source,
            })?;
        verdict.absorb(&label, decision);
    }
    Ok(verdict)
}
