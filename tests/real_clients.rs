//! Keyward as clients it did not write see it: Fortanix's own Python client (`sdkms`) runs a
//! DSM program's whole day against a daemon (`tests/python/dsm_flow.py`); schemathesis
//! fuzzes every operation of the OpenAPI document against one and checks each answer with
//! the document; the Prometheus project's parser reads `/metrics`; the Azure CLI imports the
//! BYOK transfer files Keyward makes into the emulator's Premium vault and Managed HSM. All
//! are installed from PyPI into virtual environments under `target/` the first time (pinned
//! in `tests/python/requirements.txt`, and `tests/python/azure-cli.txt` apart, as the Azure
//! CLI pins its own dependencies).

use std::path::{Path, PathBuf};
use std::process::Output;

use keyward_tests::api::{TestDaemon, b64};
use reqwest::Method;
use serde_json::json;
use tokio::process::Command;
use tokio::sync::OnceCell;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

async fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().await.expect("the command starts");
    if !out.status.success() {
        panic!(
            "{cmd:?} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// A virtual environment's `bin/`, made (or brought up to date with its requirements) on
/// first use.
async fn venv_bin(venv: PathBuf, requirements: PathBuf) -> PathBuf {
    let wanted = std::fs::read_to_string(&requirements).unwrap();
    let stamp = venv.join("keyward-requirements.txt");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv)).await;
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements))
        .await;
        std::fs::write(&stamp, wanted).unwrap();
    }
    venv.join("bin")
}

async fn python_bin() -> &'static Path {
    static BIN: OnceCell<PathBuf> = OnceCell::const_new();
    BIN.get_or_init(|| async {
        let root = workspace();
        let venv = std::env::var_os("KEYWARD_PYTHON_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target/real-clients-venv"));
        venv_bin(venv, root.join("tests/python/requirements.txt")).await
    })
    .await
}

#[tokio::test]
async fn fortanix_dsm_python_client_runs_a_whole_flow() {
    let bin = python_bin().await;
    let d = TestDaemon::start().await;
    let out = run(Command::new(bin.join("python"))
        .arg(workspace().join("tests/python/dsm_flow.py"))
        .arg(&d.url))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        stdout.contains("dsm flow: all steps passed"),
        "the flow ran to its end"
    );
    d.stop().await;
}

/// DSM's certificate applications, made and used through the `sdkms` client over mutual TLS
/// (`tests/python/dsm_cert.py`).
#[tokio::test]
async fn fortanix_dsm_python_client_logs_in_with_client_certificates() {
    use keyward_tests::tls::{ClientSpec, TestCa};
    let bin = python_bin().await;
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    let server_ca = TestCa::new("keyward server CA");
    let server = server_ca.issue(&["localhost", "127.0.0.1"]);
    write("server-ca.pem", &server_ca.pem());
    write("api.crt", &server.cert_pem);
    write("api.key", &server.key_pem);
    let pinned = ClientSpec::named("pinned-app", 1).self_signed();
    write("pinned.pem", &pinned.cert_pem);
    write("pinned.key", &pinned.key_pem);
    let clients = TestCa::new("clients CA");
    let billing = clients.issue_client(&ClientSpec::named("billing", 2));
    write("clients-ca.pem", &clients.pem());
    write("billing.pem", &billing.cert_pem);
    write("billing.key", &billing.key_pem);
    let (cert, key) = (dir.path().join("api.crt"), dir.path().join("api.key"));
    let d = TestDaemon::start_with(|c| {
        c.tls = Some(keyward::daemon::TlsFiles { cert, key });
    })
    .await;
    let port = d.url.rsplit(':').next().unwrap();
    let out = run(Command::new(bin.join("python"))
        .arg(workspace().join("tests/python/dsm_cert.py"))
        .arg(format!("https://localhost:{port}"))
        .arg(dir.path()))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        stdout.contains("dsm certificates: all steps passed"),
        "the flow ran to its end"
    );
    d.stop().await;
}

/// DSM's quorum approval flow through the `sdkms` client's `ApprovalRequestsApi`
/// (`tests/python/dsm_approvals.py`), against a group whose policy protects rotation.
#[tokio::test]
async fn fortanix_dsm_python_client_runs_the_approval_flow() {
    use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD};
    let bin = python_bin().await;
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let group = admin.create_group("quorum", json!({})).await;
    let pw = "a long enough password 6";
    let mut members = vec![];
    for email in ["r1@example.com", "r2@example.com"] {
        let u = admin
            .ok(
                Method::POST,
                "/sys/v1/users/invite",
                Some(json!({"user_email": email, "user_password": pw, "account_role": "member"})),
            )
            .await;
        members.push(json!({"user": u["user_id"]}));
    }
    let key = admin
        .create_key(
            json!({"name": "quorum-key", "group_id": group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{group}"),
            Some(
                json!({"approval_policy": {"quorum": {"n": 2, "members": members},
                "protect_permissions": ["ROTATE_SOBJECTS"]}}),
            ),
        )
        .await;
    let out = run(Command::new(bin.join("python"))
        .arg(workspace().join("tests/python/dsm_approvals.py"))
        .args([
            d.url.as_str(),
            ADMIN_EMAIL,
            ADMIN_PASSWORD,
            "r1@example.com",
            "r2@example.com",
            pw,
            key["kid"].as_str().unwrap(),
        ]))
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        stdout.contains("dsm approvals: all steps passed"),
        "the flow ran to its end"
    );
    d.stop().await;
}

/// Every operation, with every check schemathesis has (`tests/python/schemathesis.toml`):
/// answers that break the document, schema-valid requests refused and schema-violating ones
/// accepted; as the account application (the only principal that performs cryptography)
/// for the key operations, then as the account administrator for all. Bounded in time (`KEYWARD_FUZZ_SECS`, 150 s by default, two
/// thirds and one third) and seeded (`KEYWARD_FUZZ_SEED`, 1) so a CI run is repeatable; a
/// new seed explores further.
#[tokio::test]
async fn schemathesis_finds_no_answer_the_document_does_not_describe() {
    let bin = python_bin().await;
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    // Something to find: a group, an application and its keys.
    let g = admin.create_group("fuzzed", json!({})).await;
    let (_, api_key) = admin.create_app("fuzzed-app", &[&g]).await;
    let app = d.login_app(&api_key).await;
    for (name, ty) in [("fuzzed-aes", "AES"), ("fuzzed-rsa", "RSA")] {
        app.ok(
            Method::POST,
            "/crypto/v1/keys",
            Some(json!({"name": name, "obj_type": ty, "key_size": if ty == "AES" { 256 } else { 2048 }})),
        )
        .await;
    }
    let secs: u64 = std::env::var("KEYWARD_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(150);
    let seed = std::env::var("KEYWARD_FUZZ_SEED").unwrap_or_else(|_| "1".into());
    let admin_token = admin.token.clone().unwrap();
    let app_token = app.token.clone().unwrap();
    for (who, token, only, share) in [
        ("application", app_token, Some("^/crypto/"), 1),
        ("administrator", admin_token, None, 2),
    ] {
        let mut cmd = Command::new(bin.join("st"));
        // Every check, `positive_data_acceptance` and `negative_data_rejection` included; the
        // file says why a few operations are spared the first.
        cmd.arg("--config-file")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/python/schemathesis.toml"
            ))
            .arg("run")
            .arg(format!("{}/sys/v1/openapi.json", d.url))
            .args(["--header", &format!("Authorization: Bearer {token}")])
            // Ending the session would leave the rest of the run unauthenticated.
            .args(["--exclude-path", "/sys/v1/session/terminate"])
            // One worker: CPython 3.11's parser is not thread-safe ("AST constructor
            // recursion depth mismatch" in hypothesis' lambda descriptions with two).
            .args(["--max-examples", "10", "--workers", "1"])
            .args([
                "--max-time",
                &(secs * share / 3).to_string(),
                "--seed",
                &seed,
            ])
            .env("NO_COLOR", "1")
            // Its crash cache goes with the daemon's data, not into the checkout.
            .current_dir(&d.data_dir);
        if let Some(regex) = only {
            cmd.args(["--include-path-regex", regex]);
        }
        let out = cmd.output().await.expect("schemathesis starts");
        let stdout = String::from_utf8_lossy(&out.stdout);
        println!("== as the {who}\n{stdout}");
        assert!(
            out.status.success(),
            "schemathesis found failures as the {who}:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        for schema_problem in ["Unresolvable references", "Schema Error", "schema error"] {
            assert!(
                !stdout.contains(schema_problem),
                "{schema_problem} in the document"
            );
        }
        assert!(stdout.contains(" passed"), "requests were made");
    }
    d.stop().await;
}

/// `GET /metrics` as Prometheus reads it: the Prometheus project's own parser takes the text,
/// and the request counters and latency histograms move with the requests made.
#[tokio::test]
async fn prometheus_parses_the_metrics_and_they_move() {
    let bin = python_bin().await;
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let g = admin.create_group("measured", json!({})).await;
    let (_, api_key) = admin.create_app("measured-app", &[&g]).await;
    let app = d.login_app(&api_key).await;
    let k = app
        .ok(
            Method::POST,
            "/crypto/v1/keys",
            Some(json!({"name": "measured", "obj_type": "AES", "key_size": 256})),
        )
        .await;
    let encrypt = format!("/crypto/v1/keys/{}/encrypt", k["kid"].as_str().unwrap());
    let samples = || async {
        let resp = keyward_tests::api::http_client()
            .get(format!("{}/metrics", d.url))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text")
        );
        let text = resp.text().await.unwrap();
        let mut child = Command::new(bin.join("python"))
            .arg(workspace().join("tests/python/parse_metrics.py"))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).await.unwrap();
        drop(stdin);
        let out = child.wait_with_output().await.unwrap();
        assert!(
            out.status.success(),
            "the parser refused the text:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let value = |samples: &[serde_json::Value], name: &str, route: &str, status: Option<u16>| {
        samples
            .iter()
            .filter(|s| {
                s["name"] == name
                    && s["labels"]["route"] == route
                    && status.is_none_or(|st| {
                        s["labels"]["status"].as_str().and_then(|v| v.parse().ok()) == Some(st)
                    })
            })
            .map(|s| s["value"].as_f64().unwrap())
            .sum::<f64>()
    };
    let route = "/crypto/v1/keys/{kid}/encrypt";
    let before = samples().await;
    for _ in 0..3 {
        app.ok(
            Method::POST,
            &encrypt,
            Some(json!({"alg": "AES", "mode": "GCM", "plain": b64(b"x")})),
        )
        .await;
    }
    let (s, _) = admin
        .call(Method::GET, "/crypto/v1/keys/not-an-id", None)
        .await;
    assert_eq!(s, 400);
    let after = samples().await;
    let name = "keyward_http_requests_total";
    assert_eq!(
        value(&after, name, route, Some(200)) - value(&before, name, route, Some(200)),
        3.0
    );
    assert!(value(&after, name, "/crypto/v1/keys/{kid}", Some(400)) >= 1.0);
    // Ids do not make series of their own.
    assert!(!after.iter().any(|s| {
        s["labels"]["route"]
            .as_str()
            .unwrap_or("")
            .contains("not-an-id")
    }));
    let count = "keyward_http_request_duration_seconds_count";
    assert_eq!(
        value(&after, count, route, None) - value(&before, count, route, None),
        3.0
    );
    d.stop().await;
}

/// The Azure CLI, logged in to the emulator as its demo application: a custom cloud whose
/// resource manager is the emulator (it serves the cloud's metadata), its CA trusted,
/// instance discovery off (as for Azure Stack; it would ask login.microsoftonline.com).
struct AzureCli {
    bin: PathBuf,
    dir: tempfile::TempDir,
}

impl AzureCli {
    async fn login(em: &keyward_emulator::RunningEmulator) -> AzureCli {
        let root = workspace();
        let bin = venv_bin(
            root.join("target/azure-cli-venv"),
            root.join("tests/python/azure-cli.txt"),
        )
        .await
        .join("az");
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.pem"), &em.ca_pem).unwrap();
        let cli = AzureCli { bin, dir };
        cli.az(&[
            "cloud",
            "register",
            "--name",
            "KeywardEmulator",
            "--endpoint-resource-manager",
            &em.base_url,
        ])
        .await;
        cli.az(&["cloud", "set", "--name", "KeywardEmulator"]).await;
        use keyward_tests::azure::{CLIENT, SECRET, TENANT};
        cli.az(&[
            "login",
            "--service-principal",
            "-u",
            CLIENT,
            "-p",
            SECRET,
            "--tenant",
            TENANT,
        ])
        .await;
        cli
    }

    async fn az(&self, args: &[&str]) -> serde_json::Value {
        let out = run(Command::new(&self.bin)
            .args(args)
            .args(["--output", "json"])
            .env("AZURE_CONFIG_DIR", self.dir.path().join("config"))
            .env("REQUESTS_CA_BUNDLE", self.dir.path().join("ca.pem"))
            .env("AZURE_CORE_INSTANCE_DISCOVERY", "false")
            .env("AZURE_CORE_COLLECT_TELEMETRY", "false"))
        .await;
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }
}

/// Flow (c): Keyward makes the `.byok` file for a key-exchange key the Azure CLI created, the
/// Azure CLI imports it into a Premium vault and into a Managed HSM, and what the Keyward key
/// encrypted, the imported key decrypts.
#[tokio::test]
async fn the_azure_cli_imports_byok_files_keyward_makes() {
    use keyward_tests::azure::{Azure, HSM, PREMIUM_VAULT};
    let az = Azure::start_in_vault(PREMIUM_VAULT, "PREMIUM").await;
    let cli = AzureCli::login(&az.em).await;
    let key = az
        .admin
        .create_key(json!({"name": "to-azure", "group_id": az.plain_group, "obj_type": "RSA", "key_size": 2048,
            "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT"]}))
        .await;
    let kid = key["kid"].as_str().unwrap();
    let sealed = az
        .app
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(json!({"alg": "RSA", "plain": b64(b"moved by BYOK"), "mode": "OAEP_MGF1_SHA1"})),
        )
        .await;
    for (flag, store) in [("--vault-name", PREMIUM_VAULT), ("--hsm-name", HSM)] {
        let kek = cli
            .az(&[
                "keyvault", "key", "create", flag, store, "--name", "byok-kek", "--kty", "RSA-HSM",
                "--size", "2048", "--ops", "import",
            ])
            .await;
        let kek_id = kek["key"]["kid"].as_str().unwrap().to_string();
        let pem = cli.path(&format!("{store}-kek.pem"));
        cli.az(&[
            "keyvault",
            "key",
            "download",
            flag,
            store,
            "--name",
            "byok-kek",
            "--encoding",
            "PEM",
            "--file",
            &pem,
        ])
        .await;
        let file = az
            .app
            .ok(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/byok"),
                Some(json!({"kek_id": kek_id, "kek_public_key": std::fs::read_to_string(&pem).unwrap()})),
            )
            .await;
        assert_eq!(file["header"]["kid"], kek_id.as_str());
        assert_eq!(file["header"]["enc"], "CKM_RSA_AES_KEY_WRAP");
        let byok = cli.path(&format!("{store}.byok"));
        std::fs::write(&byok, file.to_string()).unwrap();
        let imported = cli
            .az(&[
                "keyvault",
                "key",
                "import",
                flag,
                store,
                "--name",
                "from-keyward",
                "--byok-file",
                &byok,
                "--kty",
                "RSA",
            ])
            .await;
        assert_eq!(imported["key"]["kty"], "RSA-HSM", "{imported}");
        let opened = cli
            .az(&[
                "keyvault",
                "key",
                "decrypt",
                flag,
                store,
                "--name",
                "from-keyward",
                "--algorithm",
                "RSA-OAEP",
                "--value",
                sealed["cipher"].as_str().unwrap(),
                "--data-type",
                "base64",
            ])
            .await;
        assert_eq!(opened["result"], b64(b"moved by BYOK"), "{store}: {opened}");
    }

    // The file is an export: recorded as one, and refused for a key that does not permit it.
    let logs = az
        .admin
        .ok(Method::GET, "/sys/v1/logs?action=key.export", None)
        .await;
    let exports = keyward_tests::api::log_entries(&logs)
        .into_iter()
        .filter(|e| e["details"]["format"] == "byok")
        .count();
    assert_eq!(exports, 2, "{logs}");
    az.stop().await;
}
