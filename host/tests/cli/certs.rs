//! A certificate application through the CLI, against a daemon serving HTTPS: the
//! administrator makes it with `apps create --certificate`, the application logs in with
//! `login --app --cert --key`, and every later command presents the certificate.

use std::process::{Command, Stdio};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

use super::support::free_port;

struct Daemon {
    child: std::process::Child,
    dir: tempfile::TempDir,
    config: tempfile::TempDir,
    addr: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).to_str().unwrap().to_string()
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> (i32, serde_json::Value, String) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keyward"));
        cmd.args(args)
            .args(["-o", "json", "--ca-cert", &self.path("server-ca.pem")])
            .env("KEYWARD_CONFIG_DIR", self.config.path())
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for v in [
            "KEYWARD_ADDR",
            "KEYWARD_TOKEN",
            "KEYWARD_PROFILE",
            "KEYWARD_CLIENT_CERT",
            "KEYWARD_CLIENT_KEY",
        ] {
            cmd.env_remove(v);
        }
        let mut child = cmd.spawn().unwrap();
        if let Some(text) = stdin {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (out.status.code().unwrap_or(-1), json, stderr)
    }

    fn ok(&self, args: &[&str], stdin: Option<&str>) -> serde_json::Value {
        let (code, json, stderr) = self.run(args, stdin);
        assert_eq!(code, 0, "keyward {args:?}: {stderr}");
        json
    }
}

fn write(dir: &std::path::Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

/// `keyward serve` over HTTPS, without the demo, with a certificate of a CA made here.
fn start() -> Daemon {
    let dir = tempfile::tempdir().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    write(dir.path(), "server-ca.pem", &ca.pem());
    write(dir.path(), "api.crt", &server.pem());
    write(dir.path(), "api.key", &server_key.serialize_pem());
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("daemon.log")).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["serve", "--demo", "false", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--tls-cert")
        .arg(dir.path().join("api.crt"))
        .arg("--tls-key")
        .arg(dir.path().join("api.key"))
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let d = Daemon {
        child,
        config: tempfile::tempdir().unwrap(),
        addr: format!("https://localhost:{port}"),
        dir,
    };
    for _ in 0..300 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return d;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!(
        "the daemon did not start: {}",
        std::fs::read_to_string(d.dir.path().join("daemon.log")).unwrap_or_default()
    );
}

/// A self-signed client certificate and its key, written as `<name>.pem` and `<name>.key`.
fn client_cert(d: &Daemon, name: &str) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.self_signed(&key).unwrap();
    write(d.dir.path(), &format!("{name}.pem"), &cert.pem());
    write(d.dir.path(), &format!("{name}.key"), &key.serialize_pem());
}

#[test]
fn a_certificate_application_logs_in_and_works_through_the_cli() {
    let d = start();
    // The first user signs up through the API (the CLI has no sign-up), then works through
    // the CLI.
    let (email, password) = ("cli-admin@example.com", "a long enough password 3");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let ca = std::fs::read(d.path("server-ca.pem")).unwrap();
        let http = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
            .build()
            .unwrap();
        let r = http
            .post(format!("{}/sys/v1/users", d.addr))
            .json(&serde_json::json!({"user_email": email, "user_password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    });
    d.ok(
        &[
            "login",
            "--addr",
            &d.addr,
            "--email",
            email,
            "--password-stdin",
        ],
        Some(password),
    );
    let g = d.ok(&["groups", "create", "--name", "billing"], None);
    let gid = g["group_id"].as_str().unwrap();
    let key = d.ok(
        &[
            "keys", "generate", "--name", "ledger", "--group", gid, "--type", "AES", "--size",
            "256",
        ],
        None,
    );
    let kid = key["kid"].as_str().unwrap();
    client_cert(&d, "billing-app");
    client_cert(&d, "intruder");
    let app = d.ok(
        &[
            "apps",
            "create",
            "--name",
            "billing-app",
            "--group",
            gid,
            "--certificate",
            &d.path("billing-app.pem"),
        ],
        None,
    );
    assert_eq!(app["auth_type"], "Certificate", "{app}");
    assert!(app.get("api_key").is_none(), "{app}");
    let app_id = app["app_id"].as_str().unwrap();

    // The application logs in with its certificate; its profile presents it on every call.
    let login = d.ok(
        &[
            "login",
            "--addr",
            &d.addr,
            "--app",
            app_id,
            "--cert",
            &d.path("billing-app.pem"),
            "--key",
            &d.path("billing-app.key"),
            "--profile",
            "billing",
        ],
        None,
    );
    assert_eq!(login["identity"], format!("app:{app_id}"));
    std::fs::write(d.dir.path().join("plain.txt"), b"invoice 42").unwrap();
    let sealed = d.ok(
        &[
            "--profile",
            "billing",
            "keys",
            "encrypt",
            kid,
            "--in",
            &d.path("plain.txt"),
        ],
        None,
    );
    assert!(sealed["cipher"].is_string(), "{sealed}");

    // Another certificate does not log in as the application.
    let (code, _, stderr) = d.run(
        &[
            "login",
            "--addr",
            &d.addr,
            "--app",
            app_id,
            "--cert",
            &d.path("intruder.pem"),
            "--key",
            &d.path("intruder.key"),
            "--profile",
            "intruder",
        ],
        None,
    );
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    // --app without a certificate is a local error.
    let (code, _, _) = d.run(&["login", "--addr", &d.addr, "--app", app_id], None);
    assert_eq!(code, 1);
}
