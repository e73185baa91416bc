//! SDK for Keyward policy plugins.
//!
//! A policy plugin is a WebAssembly component (`wasm32-wasip2`) implementing the
//! `keyward:plugin/policy@0.1.0` world. This crate holds the generated bindings, so a plugin
//! only implements [`Policy`] and calls [`policy_plugin!`]:
//!
//! ```ignore
//! use keyward_policy_sdk::{Policy, PolicyRequest, Decision, Mode};
//!
//! struct NoExport;
//! impl Policy for NoExport {
//!     fn configure(_config: &str) -> Result<Self, String> { Ok(NoExport) }
//!     fn evaluate(&self, req: &PolicyRequest) -> Result<Decision, String> {
//!         let mut findings = keyward_policy_sdk::Findings::default();
//!         if req.key.ops.contains(&keyward_policy_sdk::KeyOp::Export) {
//!             findings.violation("no-export", "keys may not be exportable");
//!         }
//!         Ok(findings.decide(Mode::Enforce))
//!     }
//! }
//! keyward_policy_sdk::policy_plugin!(NoExport);
//! ```
//!
//! The helpers here (modes, findings, DSM names for types, curves and operations, legacy-key
//! handling) are shared by the shipped crypto and key-metadata policies.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "policy",
        path: "../../wit/v0.1.0",
        pub_export_macro: true,
        export_macro_name: "export_policy_world",
        default_bindings_module: "keyward_policy_sdk::bindings",
    });
}

#[doc(hidden)]
pub use bindings::export_policy_world;
pub use bindings::exports;
pub use bindings::exports::keyward::plugin::policy_engine::{
    Action, Decision, Finding, Mode, PolicyRequest, Principal,
};
pub use bindings::keyward::plugin::types::{
    Curve, KeyAttributes, KeyOp, KeySpec, KeyState, KeyType, Tag, Timestamp,
};

use serde::Deserialize;

/// What a policy plugin implements. One value is built per warm instance from the policy
/// document and then asked for many decisions.
pub trait Policy: Sized + 'static {
    /// Parse and validate the policy document (JSON). The error names what is wrong.
    fn configure(config: &str) -> Result<Self, String>;
    /// Decide on one request.
    fn evaluate(&self, request: &PolicyRequest) -> Result<Decision, String>;
}

/// Exports a [`Policy`] implementation as the component's `policy-engine` interface.
#[macro_export]
macro_rules! policy_plugin {
    ($policy:ty) => {
        struct __KeywardPolicyComponent;

        ::std::thread_local! {
            static __KEYWARD_POLICY: ::std::cell::RefCell<::std::option::Option<$policy>> =
                const { ::std::cell::RefCell::new(None) };
        }

        impl $crate::exports::keyward::plugin::policy_engine::Guest for __KeywardPolicyComponent {
            fn configure(config: String) -> Result<(), String> {
                let policy = <$policy as $crate::Policy>::configure(&config)?;
                __KEYWARD_POLICY.with(|p| *p.borrow_mut() = Some(policy));
                Ok(())
            }

            fn evaluate(request: $crate::PolicyRequest) -> Result<$crate::Decision, String> {
                __KEYWARD_POLICY.with(|p| match p.borrow().as_ref() {
                    Some(policy) => $crate::Policy::evaluate(policy, &request),
                    None => Err("the policy was not configured".to_string()),
                })
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::export_policy_world!(__KeywardPolicyComponent);
    };
}

/// Collects violations and warnings and turns them into a [`Decision`] for a mode.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub violations: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Findings {
    pub fn violation(&mut self, rule: impl Into<String>, message: impl Into<String>) {
        self.violations.push(Finding {
            rule: rule.into(),
            message: message.into(),
        });
    }

    pub fn warning(&mut self, rule: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Finding {
            rule: rule.into(),
            message: message.into(),
        });
    }

    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// Only `enforce` turns violations into a denial; `warn` and `dry-run` allow and report.
    pub fn decide(self, mode: Mode) -> Decision {
        Decision {
            allow: self.violations.is_empty() || mode != Mode::Enforce,
            mode,
            violations: self.violations,
            warnings: self.warnings,
        }
    }
}

/// The enforcement mode as written in policy documents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeName {
    #[default]
    Enforce,
    Warn,
    DryRun,
}

impl From<ModeName> for Mode {
    fn from(m: ModeName) -> Self {
        match m {
            ModeName::Enforce => Mode::Enforce,
            ModeName::Warn => Mode::Warn,
            ModeName::DryRun => Mode::DryRun,
        }
    }
}

/// What happens to an existing key that no longer complies with the policy (Fortanix
/// `legacy_policy`): it stays usable, becomes unusable, or may only undo protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LegacyPolicy {
    #[default]
    Allowed,
    Prohibited,
    UnprotectOnly,
}

impl LegacyPolicy {
    /// Applies the legacy rule to a crypto operation `op` on a key whose non-compliance is
    /// described by `problems` (empty when the key complies).
    pub fn apply(self, op: KeyOp, problems: &[Finding], what: &str, findings: &mut Findings) {
        if problems.is_empty() {
            return;
        }
        let why = problems
            .iter()
            .map(|f| f.message.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let unprotect = matches!(op, KeyOp::Decrypt | KeyOp::Verify | KeyOp::UnwrapKey);
        match self {
            LegacyPolicy::Allowed => findings.warning(
                "legacy-policy",
                format!("the key does not comply with the {what} ({why}); using it is allowed for legacy keys"),
            ),
            LegacyPolicy::UnprotectOnly if unprotect => findings.warning(
                "legacy-policy",
                format!("the key does not comply with the {what} ({why}); only decrypt, verify and unwrap are allowed"),
            ),
            LegacyPolicy::UnprotectOnly => findings.violation(
                "legacy-policy",
                format!(
                    "the key does not comply with the {what} ({why}); legacy keys may only decrypt, verify and unwrap, not {}",
                    op_name(op)
                ),
            ),
            LegacyPolicy::Prohibited => findings.violation(
                "legacy-policy",
                format!("the key does not comply with the {what} ({why}); legacy keys may not be used"),
            ),
        }
    }
}

/// Fortanix DSM object type names (`obj_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum ObjType {
    #[serde(rename = "AES")]
    Aes,
    #[serde(rename = "RSA")]
    Rsa,
    #[serde(rename = "EC")]
    Ec,
}

impl From<KeyType> for ObjType {
    fn from(t: KeyType) -> Self {
        match t {
            KeyType::Aes => ObjType::Aes,
            KeyType::Rsa => ObjType::Rsa,
            KeyType::Ec => ObjType::Ec,
        }
    }
}

/// Fortanix DSM curve names (`elliptic_curve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum CurveName {
    NistP256,
    NistP384,
    NistP521,
    SecP256K1,
}

impl From<Curve> for CurveName {
    fn from(c: Curve) -> Self {
        match c {
            Curve::P256 => CurveName::NistP256,
            Curve::P384 => CurveName::NistP384,
            Curve::P521 => CurveName::NistP521,
            Curve::Secp256k1 => CurveName::SecP256K1,
        }
    }
}

/// Fortanix DSM key operation names (`key_ops`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum OpName {
    Encrypt,
    Decrypt,
    Sign,
    Verify,
    Wrapkey,
    Unwrapkey,
    Export,
    Derivekey,
    Import,
    Appmanageable,
}

impl From<KeyOp> for OpName {
    fn from(op: KeyOp) -> Self {
        match op {
            KeyOp::Encrypt => OpName::Encrypt,
            KeyOp::Decrypt => OpName::Decrypt,
            KeyOp::Sign => OpName::Sign,
            KeyOp::Verify => OpName::Verify,
            KeyOp::WrapKey => OpName::Wrapkey,
            KeyOp::UnwrapKey => OpName::Unwrapkey,
            KeyOp::Export => OpName::Export,
            KeyOp::DeriveKey => OpName::Derivekey,
            KeyOp::Import => OpName::Import,
            KeyOp::AppManageable => OpName::Appmanageable,
        }
    }
}

/// The DSM name of an operation (`WRAPKEY`), as shown in messages.
pub fn op_name(op: KeyOp) -> &'static str {
    match op {
        KeyOp::Encrypt => "ENCRYPT",
        KeyOp::Decrypt => "DECRYPT",
        KeyOp::Sign => "SIGN",
        KeyOp::Verify => "VERIFY",
        KeyOp::WrapKey => "WRAPKEY",
        KeyOp::UnwrapKey => "UNWRAPKEY",
        KeyOp::Export => "EXPORT",
        KeyOp::DeriveKey => "DERIVEKEY",
        KeyOp::Import => "IMPORT",
        KeyOp::AppManageable => "APPMANAGEABLE",
    }
}

/// The DSM name of a key type (`RSA`).
pub fn type_name(t: KeyType) -> &'static str {
    match t {
        KeyType::Aes => "AES",
        KeyType::Rsa => "RSA",
        KeyType::Ec => "EC",
    }
}

/// The DSM name of a curve (`NistP256`).
pub fn curve_name(c: Curve) -> &'static str {
    match c {
        Curve::P256 => "NistP256",
        Curve::P384 => "NistP384",
        Curve::P521 => "NistP521",
        Curve::Secp256k1 => "SecP256K1",
    }
}

/// Parses a JSON policy document into `T`, with a message that says where it went wrong.
pub fn parse_config<'a, T: Deserialize<'a>>(config: &'a str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid policy configuration: {e}"))
}
