//! Table-driven tests of the shipped policy plugins, through their compiled components in
//! the real plugin runtime (FLOWS F27, F28).

use keyward::plugins::policy::{Action, Curve, Decision, KeyAttributes, KeyOp, Mode};
use keyward::plugins::{PluginError, PluginRuntime};
use keyward_tests::{DAY, NOW, aes, ec, request, rsa, runtime, tag};

struct Case {
    name: &'static str,
    config: &'static str,
    action: Action,
    key: KeyAttributes,
    allow: bool,
    mode: Mode,
    /// Rule ids of the violations, in order.
    violations: &'static [&'static str],
    /// Rule ids of the warnings.
    warnings: &'static [&'static str],
}

impl Case {
    fn new(name: &'static str, config: &'static str, action: Action, key: KeyAttributes) -> Case {
        Case {
            name,
            config,
            action,
            key,
            allow: true,
            mode: Mode::Enforce,
            violations: &[],
            warnings: &[],
        }
    }
    fn denied(mut self, rules: &'static [&'static str]) -> Case {
        self.allow = false;
        self.violations = rules;
        self
    }
    fn reported(mut self, mode: Mode, rules: &'static [&'static str]) -> Case {
        self.mode = mode;
        self.violations = rules;
        self
    }
    fn warned(mut self, rules: &'static [&'static str]) -> Case {
        self.warnings = rules;
        self
    }
}

fn rules(findings: &[keyward::plugins::policy::Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.rule.as_str()).collect()
}

async fn run_table(runtime: &PluginRuntime, plugin: &str, cases: Vec<Case>) {
    assert!(cases.len() >= 15, "at least 15 cases per plugin");
    let mut failures = Vec::new();
    for case in cases {
        let req = request(case.action, case.key.clone());
        let decision: Decision = match runtime.evaluate_policy(plugin, case.config, &req).await {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{}: evaluation failed: {e}", case.name));
                continue;
            }
        };
        let got = (
            decision.allow,
            decision.mode,
            rules(&decision.violations),
            rules(&decision.warnings),
        );
        let want = (
            case.allow,
            case.mode,
            case.violations.to_vec(),
            case.warnings.to_vec(),
        );
        if got != want {
            failures.push(format!(
                "{}: got {got:?}, want {want:?}; findings {:?}",
                case.name, decision.violations
            ));
        }
        // Every finding explains itself to a human.
        for f in decision.violations.iter().chain(&decision.warnings) {
            assert!(
                !f.message.is_empty(),
                "{}: finding {} has no message",
                case.name,
                f.rule
            );
        }
    }
    assert!(
        failures.is_empty(),
        "failed cases:\n{}",
        failures.join("\n")
    );
}

const CRYPTO: &str = r#"{
    "aes": {"key_sizes": [256]},
    "rsa": {"minimum_key_length": 3072, "key_sizes": [3072, 4096]},
    "ec": {"elliptic_curves": ["NistP256", "NistP384"]},
    "key_ops": ["ENCRYPT", "DECRYPT", "SIGN", "VERIFY", "WRAPKEY", "UNWRAPKEY", "EXPORT"],
    "legacy_policy": "unprotect_only"
}"#;

#[tokio::test]
async fn crypto_policy_decisions() {
    let rt = runtime(None).await;
    let with_ops = |mut k: KeyAttributes, ops: Vec<KeyOp>| {
        k.ops = ops;
        k
    };
    let cases = vec![
        Case::new("AES-256 may be created", CRYPTO, Action::Create, aes(256)),
        Case::new(
            "AES-128 is not an allowed size",
            CRYPTO,
            Action::Create,
            aes(128),
        )
        .denied(&["aes.key-size"]),
        Case::new("RSA-4096 may be created", CRYPTO, Action::Create, rsa(4096)),
        Case::new(
            "RSA-2048 breaks the minimum and the size list",
            CRYPTO,
            Action::Create,
            rsa(2048),
        )
        .denied(&["rsa.minimum-key-length", "rsa.key-size"]),
        Case::new(
            "an operation outside key_ops",
            CRYPTO,
            Action::Create,
            with_ops(rsa(3072), vec![KeyOp::Sign, KeyOp::DeriveKey]),
        )
        .denied(&["key-ops"]),
        Case::new(
            "EC P-256 may be imported",
            CRYPTO,
            Action::Import,
            ec(Curve::P256),
        ),
        Case::new(
            "EC P-521 is not an allowed curve",
            CRYPTO,
            Action::Import,
            ec(Curve::P521),
        )
        .denied(&["ec.curve"]),
        Case::new(
            "a type without a section is not allowed",
            r#"{"aes": {}}"#,
            Action::Create,
            ec(Curve::P256),
        )
        .denied(&["object-type"]),
        Case::new(
            "an empty section allows every size",
            r#"{"rsa": {}}"#,
            Action::Create,
            rsa(2048),
        ),
        Case::new(
            "copy is checked like create",
            CRYPTO,
            Action::Copy,
            aes(192),
        )
        .denied(&["aes.key-size"]),
        Case::new(
            "rotate to a compliant key",
            CRYPTO,
            Action::Rotate,
            rsa(3072),
        ),
        Case::new(
            "update may add EXPORT when allowed",
            CRYPTO,
            Action::Update,
            with_ops(ec(Curve::P384), vec![KeyOp::Sign, KeyOp::Export]),
        ),
        Case::new(
            "encrypt with a compliant key",
            CRYPTO,
            Action::Crypto(KeyOp::Encrypt),
            aes(256),
        ),
        Case::new(
            "an operation the policy does not allow",
            r#"{"aes": {}, "key_ops": ["DECRYPT"]}"#,
            Action::Crypto(KeyOp::Encrypt),
            with_ops(aes(256), vec![KeyOp::Decrypt]),
        )
        .denied(&["key-ops"]),
        Case::new(
            "unprotect-only lets a legacy key decrypt",
            CRYPTO,
            Action::Crypto(KeyOp::Decrypt),
            rsa(2048),
        )
        .warned(&["legacy-policy"]),
        Case::new(
            "unprotect-only stops a legacy key signing",
            CRYPTO,
            Action::Crypto(KeyOp::Sign),
            rsa(2048),
        )
        .denied(&["legacy-policy"]),
        Case::new(
            "prohibited legacy keys cannot decrypt",
            r#"{"aes": {"key_sizes": [256]}, "legacy_policy": "prohibited"}"#,
            Action::Crypto(KeyOp::Decrypt),
            aes(128),
        )
        .denied(&["legacy-policy"]),
        Case::new(
            "allowed legacy keys keep working with a warning",
            r#"{"aes": {"key_sizes": [256]}}"#,
            Action::Crypto(KeyOp::Encrypt),
            aes(128),
        )
        .warned(&["legacy-policy"]),
        Case::new(
            "warn mode allows and reports",
            r#"{"mode": "warn", "aes": {"key_sizes": [256]}}"#,
            Action::Create,
            aes(128),
        )
        .reported(Mode::Warn, &["aes.key-size"]),
        Case::new(
            "dry-run mode allows and records",
            r#"{"mode": "dry_run", "rsa": {"minimum_key_length": 3072}}"#,
            Action::Create,
            rsa(2048),
        )
        .reported(Mode::DryRun, &["rsa.minimum-key-length"]),
    ];
    run_table(&rt, "crypto-policy", cases).await;
}

#[tokio::test]
async fn crypto_policy_refuses_bad_configuration() {
    let rt = runtime(None).await;
    let req = request(Action::Create, aes(256));
    for (config, needle) in [
        (
            r#"{"aes": {"key_size": [256]}}"#,
            "unknown field `key_size`",
        ),
        (
            r#"{"aes": {"key_sizes": [100]}}"#,
            "100 is not an AES key size",
        ),
        (
            r#"{"rsa": {"minimum_key_length": 512}}"#,
            "minimum_key_length: 512",
        ),
        (
            r#"{"ec": {"elliptic_curves": ["P256"]}}"#,
            "unknown variant `P256`",
        ),
        (r#"{"mode": "sometimes"}"#, "unknown variant `sometimes`"),
        ("not json", "invalid policy configuration"),
    ] {
        match rt.evaluate_policy("crypto-policy", config, &req).await {
            Err(PluginError::InvalidConfig { plugin, message }) => {
                assert_eq!(plugin, "crypto-policy");
                assert!(
                    message.contains(needle),
                    "{config}: message {message:?} lacks {needle:?}"
                );
            }
            other => panic!("{config}: expected InvalidConfig, got {other:?}"),
        }
        assert!(
            rt.validate_policy_config("crypto-policy", config)
                .await
                .is_err()
        );
    }
    rt.validate_policy_config("crypto-policy", CRYPTO)
        .await
        .unwrap();
}

const METADATA: &str = r#"{
    "base": {
        "custom_metadata": {
            "owner": {"required": {}},
            "env": {"required": {"allowed_values": ["prod", "test"]}},
            "secret": {"forbidden": {}}
        },
        "description": {"required": {}},
        "activation_date": {"required": {"allowed_values": {"min": {"days": 0}, "max": {"days": 30}}}},
        "deactivation_date": {"forbidden": {}}
    },
    "for_obj_type": {
        "RSA": {
            "custom_metadata": {"env": {"forbidden": {}}},
            "deactivation_date": {"required": {"allowed_values": {"min": {"days": 30}, "max": {"days": 730}}}}
        }
    },
    "legacy_objects": "prohibited"
}"#;

/// An AES key that satisfies METADATA.
fn good_aes() -> KeyAttributes {
    let mut k = aes(256);
    k.description = Some("payments".into());
    k.tags = vec![tag("owner", "alice"), tag("env", "prod")];
    k.activation = Some(NOW + DAY);
    k
}

/// An RSA key that satisfies METADATA (no env, a deactivation date in the window).
fn good_rsa() -> KeyAttributes {
    let mut k = rsa(3072);
    k.description = Some("signing".into());
    k.tags = vec![tag("owner", "bob")];
    k.activation = Some(NOW + DAY);
    k.deactivation = Some(NOW + 365 * DAY);
    k
}

fn edit(mut k: KeyAttributes, f: impl FnOnce(&mut KeyAttributes)) -> KeyAttributes {
    f(&mut k);
    k
}

#[tokio::test]
async fn key_metadata_policy_decisions() {
    let rt = runtime(None).await;
    let cases = vec![
        Case::new("a compliant AES key", METADATA, Action::Create, good_aes()),
        Case::new(
            "a required attribute is missing",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.tags.retain(|t| t.name != "owner")),
        )
        .denied(&["custom-metadata.owner.required"]),
        Case::new(
            "a required attribute is blank",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.tags[0].value = "  ".into()),
        )
        .denied(&["custom-metadata.owner.required"]),
        Case::new(
            "a value outside allowed_values",
            METADATA,
            Action::Import,
            edit(good_aes(), |k| k.tags[1].value = "dev".into()),
        )
        .denied(&["custom-metadata.env.allowed-values"]),
        Case::new(
            "a forbidden attribute",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.tags.push(tag("secret", "x"))),
        )
        .denied(&["custom-metadata.secret.forbidden"]),
        Case::new(
            "the description is required",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.description = None),
        )
        .denied(&["description.required"]),
        Case::new(
            "the activation date is required",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.activation = None),
        )
        .denied(&["activation-date.required"]),
        Case::new(
            "activation after the window",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.activation = Some(NOW + 40 * DAY)),
        )
        .denied(&["activation-date.window"]),
        Case::new(
            "activation before creation",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.activation = Some(NOW - DAY)),
        )
        .denied(&["activation-date.window"]),
        Case::new(
            "a forbidden deactivation date",
            METADATA,
            Action::Create,
            edit(good_aes(), |k| k.deactivation = Some(NOW + 90 * DAY)),
        )
        .denied(&["deactivation-date.forbidden"]),
        Case::new(
            "RSA rules override the base",
            METADATA,
            Action::Create,
            good_rsa(),
        ),
        Case::new(
            "RSA forbids the env attribute",
            METADATA,
            Action::Copy,
            edit(good_rsa(), |k| k.tags.push(tag("env", "prod"))),
        )
        .denied(&["custom-metadata.env.forbidden"]),
        Case::new(
            "RSA requires a deactivation date",
            METADATA,
            Action::Create,
            edit(good_rsa(), |k| k.deactivation = None),
        )
        .denied(&["deactivation-date.required"]),
        Case::new(
            "RSA deactivation too soon",
            METADATA,
            Action::Rotate,
            edit(good_rsa(), |k| k.deactivation = Some(NOW + 10 * DAY)),
        )
        .denied(&["deactivation-date.window"]),
        Case::new(
            "every missing item is its own reason",
            METADATA,
            Action::Create,
            aes(256),
        )
        .denied(&[
            "custom-metadata.env.required",
            "custom-metadata.owner.required",
            "description.required",
            "activation-date.required",
        ]),
        Case::new(
            "windows are relative to the key's creation",
            METADATA,
            Action::Update,
            edit(good_aes(), |k| {
                k.created = Some(NOW - 100 * DAY);
                k.activation = Some(NOW - 90 * DAY);
            }),
        ),
        Case::new(
            "a compliant key may encrypt",
            METADATA,
            Action::Crypto(KeyOp::Encrypt),
            good_aes(),
        ),
        Case::new(
            "prohibited legacy keys may not be used",
            METADATA,
            Action::Crypto(KeyOp::Decrypt),
            aes(256),
        )
        .denied(&["legacy-policy"]),
        Case::new(
            "unprotect-only legacy keys may decrypt",
            r#"{"base": {"description": {"required": {}}}, "legacy_objects": "unprotect_only"}"#,
            Action::Crypto(KeyOp::Decrypt),
            aes(256),
        )
        .warned(&["legacy-policy"]),
        Case::new(
            "a forbidden description",
            r#"{"base": {"description": {"forbidden": {}}}}"#,
            Action::Create,
            good_aes(),
        )
        .denied(&["description.forbidden"]),
        Case::new(
            "blank descriptions count when trimming is off",
            r#"{"base": {"description": {"required": {"non_empty_after_trim": false}}}}"#,
            Action::Create,
            edit(aes(256), |k| k.description = Some("  ".into())),
        ),
        Case::new(
            "warn mode allows and reports",
            r#"{"mode": "warn", "base": {"description": {"required": {}}}}"#,
            Action::Create,
            aes(256),
        )
        .reported(Mode::Warn, &["description.required"]),
        Case::new(
            "dry-run mode allows and records",
            r#"{"mode": "dry_run", "base": {"custom_metadata": {"owner": {"required": {}}}}}"#,
            Action::Create,
            aes(256),
        )
        .reported(Mode::DryRun, &["custom-metadata.owner.required"]),
    ];
    run_table(&rt, "key-metadata-policy", cases).await;
}

#[tokio::test]
async fn key_metadata_policy_refuses_bad_configuration() {
    let rt = runtime(None).await;
    for (config, needle) in [
        (
            r#"{"base": {"activation_date": {"required": {"allowed_values": {"min": {"days": 9}, "max": {"days": 1}}}}}}"#,
            "min is after its max",
        ),
        (
            r#"{"base": {"descripton": {"required": {}}}}"#,
            "unknown field `descripton`",
        ),
        (
            r#"{"base": {"custom_metadata": {"x": {"required": {"allowed_values": []}}}}}"#,
            "allowed_values is empty",
        ),
        (r#"{"for_obj_type": {"DES": {}}}"#, "unknown variant `DES`"),
    ] {
        match rt
            .validate_policy_config("key-metadata-policy", config)
            .await
        {
            Err(PluginError::InvalidConfig { message, .. }) => {
                assert!(
                    message.contains(needle),
                    "{config}: {message:?} lacks {needle:?}"
                )
            }
            other => panic!("{config}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unknown_plugin_is_reported() {
    let rt = runtime(None).await;
    let err = rt
        .evaluate_policy("no-such-policy", "{}", &request(Action::Create, aes(256)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PluginError::NotFound(ref n) if n == "no-such-policy"),
        "{err}"
    );
    // Calls are counted by plugin and outcome, failed ones too.
    rt.evaluate_policy("crypto-policy", "{}", &request(Action::Create, aes(256)))
        .await
        .unwrap();
    let metrics = rt.metrics().render();
    for line in [
        r#"keyward_plugin_calls_total{plugin="no-such-policy",outcome="error"} 1"#,
        r#"keyward_plugin_calls_total{plugin="crypto-policy",outcome="ok"} 1"#,
        r#"keyward_plugin_call_duration_seconds_count{plugin="crypto-policy"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
}
