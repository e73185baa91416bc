//! The host `http` import: allowlist from the manifest, TLS settings from the caller.

use keyward::plugins::kms::{Connection, Credentials, Endpoints, InstanceKind};
use keyward::plugins::{PluginRuntime, TlsSettings};
use keyward_tests::tls::{HttpsServer, TestCa};
use keyward_tests::{CONNECTOR_WORLD, install, runtime};

/// Installs the probe connector allowed to reach only `allowed`.
async fn probe_runtime(allowed: &[&str]) -> (tempfile::TempDir, PluginRuntime) {
    let dir = tempfile::tempdir().unwrap();
    let hosts: Vec<String> = allowed.iter().map(|h| format!("{h:?}")).collect();
    install(
        dir.path(),
        "probe",
        CONNECTOR_WORLD,
        "fixture_http_probe.wasm",
        &format!(
            "[capabilities]\nallowed_outbound_hosts = [{}]",
            hosts.join(", ")
        ),
    );
    let rt = runtime(Some(dir.path())).await;
    assert!(rt.problems().is_empty(), "{:?}", rt.problems());
    (dir, rt)
}

/// What the probe saw when it fetched `<base>/probe`: `ok <status> <body>` or `err <error>`.
async fn probe(rt: &PluginRuntime, base: &str, tls: &TlsSettings) -> String {
    let conn = Connection {
        endpoints: Endpoints {
            identity: base.to_string(),
            management: base.to_string(),
            instance_suffix: "localhost".into(),
            vault_suffix: "vault.localhost".into(),
        },
        credentials: Credentials {
            tenant_id: "t".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
        },
        subscription_id: "sub".into(),
        instance: None,
        kind: InstanceKind::Managed,
    };
    let instances = rt
        .call_connector("probe", tls, async |kms, store| {
            kms.call_list_instances(store, &conn).await
        })
        .await
        .expect("the plugin runs")
        .expect("the probe always answers");
    instances[0].name.clone()
}

fn custom_ca(ca: &TestCa) -> TlsSettings {
    TlsSettings {
        ca_pem: Some(ca.pem()),
        ..TlsSettings::default()
    }
}

#[tokio::test]
async fn a_host_outside_the_allowlist_is_refused() {
    let ca = TestCa::new("Probe CA");
    let server = HttpsServer::start(&ca.issue(&["localhost", "127.0.0.1"]), "hello").await;
    let (_dir, rt) =
        probe_runtime(&["https://*.managedhsm.azure.net", "https://localhost:1"]).await;

    let seen = probe(
        &rt,
        &format!("https://127.0.0.1:{}", server.addr.port()),
        &custom_ca(&ca),
    )
    .await;
    assert!(seen.starts_with("err Error::Denied"), "{seen}");
    assert!(
        seen.contains("is not in the plugin's allowed_outbound_hosts"),
        "{seen}"
    );

    // The right host on another port is refused too.
    let seen = probe(
        &rt,
        &format!("https://localhost:{}", server.addr.port()),
        &custom_ca(&ca),
    )
    .await;
    assert!(seen.starts_with("err Error::Denied"), "{seen}");

    // And so is plain HTTP to an https-only entry.
    let seen = probe(&rt, "http://localhost:1", &custom_ca(&ca)).await;
    assert!(seen.starts_with("err Error::Denied"), "{seen}");
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_when_configured() {
    let ca = TestCa::new("Probe CA");
    let server =
        HttpsServer::start(&ca.issue(&["localhost"]), "hello from the private endpoint").await;
    let (_dir, rt) = probe_runtime(&["https://localhost:*"]).await;
    let url = format!("https://localhost:{}", server.addr.port());

    let public_roots = probe(&rt, &url, &TlsSettings::default()).await;
    assert!(public_roots.starts_with("err Error::Tls"), "{public_roots}");
    assert!(
        public_roots.to_lowercase().contains("certificate"),
        "{public_roots}"
    );

    let trusted = probe(&rt, &url, &custom_ca(&ca)).await;
    assert_eq!(trusted, "ok 200 hello from the private endpoint");

    // A different CA is not good enough.
    let other = probe(&rt, &url, &custom_ca(&TestCa::new("Another CA"))).await;
    assert!(other.starts_with("err Error::Tls"), "{other}");
}

#[tokio::test]
async fn hostname_validation_is_on_unless_switched_off() {
    let ca = TestCa::new("Probe CA");
    let server = HttpsServer::start(&ca.issue(&["some-other-name.example"]), "hello").await;
    let (_dir, rt) = probe_runtime(&["https://localhost:*"]).await;
    let url = format!("https://localhost:{}", server.addr.port());

    let validated = probe(&rt, &url, &custom_ca(&ca)).await;
    assert!(validated.starts_with("err Error::Tls"), "{validated}");
    assert!(
        validated.to_lowercase().contains("not valid for name")
            || validated.contains("NotValidForName"),
        "{validated}"
    );

    let unvalidated = probe(
        &rt,
        &url,
        &TlsSettings {
            validate_hostname: false,
            ..custom_ca(&ca)
        },
    )
    .await;
    assert_eq!(unvalidated, "ok 200 hello");

    // Switching hostname validation off does not switch off chain validation.
    let untrusted = probe(
        &rt,
        &url,
        &TlsSettings {
            validate_hostname: false,
            ..TlsSettings::default()
        },
    )
    .await;
    assert!(untrusted.starts_with("err Error::Tls"), "{untrusted}");
}

#[tokio::test]
async fn unusable_tls_settings_are_reported() {
    let (_dir, rt) = probe_runtime(&["https://localhost:*"]).await;
    let bad_ca = TlsSettings {
        ca_pem: Some("not a certificate".into()),
        ..TlsSettings::default()
    };
    assert!(
        bad_ca.validate().unwrap_err().contains("no certificate"),
        "{:?}",
        bad_ca.validate()
    );
    let seen = probe(&rt, "https://localhost:1", &bad_ca).await;
    assert!(seen.starts_with("err Error::Tls"), "{seen}");

    let ca = TestCa::new("Probe CA");
    let leaf = ca.issue(&["client"]);
    let half = TlsSettings {
        client_cert_pem: Some(leaf.cert_pem.clone()),
        ..TlsSettings::default()
    };
    assert!(half.validate().unwrap_err().contains("needs both"));
    let whole = TlsSettings {
        client_cert_pem: Some(leaf.cert_pem),
        client_key_pem: Some(leaf.key_pem),
        ..TlsSettings::default()
    };
    whole.validate().unwrap();
    // The private key never shows in debug output.
    assert!(!format!("{whole:?}").contains("PRIVATE KEY"));
}
