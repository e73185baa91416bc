//! OpenSC's pkcs11-tool through the module, OpenSSL checking what it signs.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use super::{World, id_hex, module_path};

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("the tool runs");
    assert!(
        out.status.success(),
        "{cmd:?}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn tool(w: &World) -> Command {
    let mut c = Command::new("pkcs11-tool");
    c.env("KEYWARD_PKCS11_CONF", w.conf_file())
        .arg("--module")
        .arg(module_path());
    c
}

/// Signs `data` with `key` by `mechanism` through pkcs11-tool; the signature's file.
fn sign(w: &World, dir: &Path, key: &Value, mechanism: &str, extra: &[&str]) -> std::path::PathBuf {
    let sig = dir.join(format!("{mechanism}.sig"));
    run(tool(w)
        .args(["--login", "--pin", &w.api_key, "--sign", "-m", mechanism])
        .args(["--id", &id_hex(key)])
        .args(extra)
        .arg("--input-file")
        .arg(dir.join("data"))
        .arg("--output-file")
        .arg(&sig));
    sig
}

fn openssl_verifies(dir: &Path, pem: &str, sig: &Path, opts: &[&str]) {
    let key = dir.join("pub.pem");
    std::fs::write(&key, pem).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&key)
        .args(opts)
        .arg("-signature")
        .arg(sig)
        .arg(dir.join("data"))
        .output()
        .unwrap();
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK"),
        "openssl {opts:?} on {} bytes: {} {}",
        std::fs::read(sig).unwrap().len(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_tool_ssh_keygen_and_openssl_use_the_keys_and_openssl_verifies_what_they_sign() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("data"), b"an invoice to sign").unwrap();
    let (rsa_pem, ec_pem) = (w.public_pem(&w.rsa).await, w.public_pem(&w.ec).await);

    let w = std::sync::Arc::new(w);
    let t = w.clone();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let w = &*t;
        let slots = run(tool(w).arg("--list-slots"));
        let slots = String::from_utf8_lossy(&slots.stdout);
        assert!(slots.contains("signing"), "{slots}");
        let objects = run(tool(w).args(["--login", "--pin", &w.api_key, "--list-objects"]));
        let objects = String::from_utf8_lossy(&objects.stdout);
        for name in ["rsa-signer", "ec-signer", "aes-data", "rsa-no-sign"] {
            assert!(objects.contains(name), "{name} in {objects}");
        }
        let mechanisms = run(tool(w).arg("--list-mechanisms"));
        let mechanisms = String::from_utf8_lossy(&mechanisms.stdout);
        assert!(mechanisms.contains("SHA256-RSA-PKCS-PSS"), "{mechanisms}");

        // Keys made through the module are the daemon's keys, in the group.
        run(tool(w)
            .args([
                "--login",
                "--pin",
                &w.api_key,
                "--keygen",
                "--key-type",
                "aes:32",
            ])
            // pkcs11-tool asks for a key that is not sensitive unless told; Keyward's are.
            .args(["--sensitive", "--label", "made-aes"]));
        run(tool(w)
            .args([
                "--login",
                "--pin",
                &w.api_key,
                "--keypairgen",
                "--key-type",
                "EC:prime256v1",
            ])
            .args(["--label", "made-ec", "--usage-sign"]));
        let objects = run(tool(w).args(["--login", "--pin", &w.api_key, "--list-objects"]));
        let objects = String::from_utf8_lossy(&objects.stdout);
        assert!(
            objects.contains("made-aes") && objects.contains("made-ec"),
            "{objects}"
        );

        let dir = dir_path.as_path();
        let sig = sign(w, dir, &w.rsa, "SHA256-RSA-PKCS", &[]);
        openssl_verifies(dir, &rsa_pem, &sig, &[]);
        let sig = sign(w, dir, &w.rsa, "SHA256-RSA-PKCS-PSS", &[]);
        openssl_verifies(
            dir,
            &rsa_pem,
            &sig,
            &[
                "-sigopt",
                "rsa_padding_mode:pss",
                "-sigopt",
                "rsa_pss_saltlen:32",
            ],
        );
        let sig = sign(
            w,
            dir,
            &w.ec,
            "ECDSA-SHA256",
            &["--signature-format", "openssl"],
        );
        openssl_verifies(dir, &ec_pem, &sig, &[]);
    })
    .await
    .unwrap();

    // With the credential in a file: ssh-keygen lists the public keys before any login, and
    // OpenSSL (the pkcs11 engine, whose PINs stop at 32 characters) signs a CSR.
    let key_file = dir.path().join("app.key");
    std::fs::write(&key_file, &w.api_key).unwrap();
    let conf = dir.path().join("with-key.toml");
    std::fs::write(
        &conf,
        format!(
            "address = \"{}\"\napi_key_file = \"{}\"\n[[slot]]\ngroup_id = \"{}\"\n",
            w.d.url,
            key_file.display(),
            w.group
        ),
    )
    .unwrap();
    let engine = dir.path().join("engine.cnf");
    std::fs::write(
        &engine,
        format!(
            "openssl_conf = init\n[init]\nengines = engines\n[engines]\npkcs11 = pkcs11\n[pkcs11]\nengine_id = pkcs11\nMODULE_PATH = {}\ninit = 0\n",
            module_path().display()
        ),
    )
    .unwrap();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let ssh = run(Command::new("ssh-keygen")
            .env("KEYWARD_PKCS11_CONF", &conf)
            .arg("-D")
            .arg(module_path()));
        let ssh = String::from_utf8_lossy(&ssh.stdout);
        assert!(
            ssh.contains("ecdsa-sha2-nistp256 ") && ssh.contains("ec-signer"),
            "{ssh}"
        );
        assert!(
            ssh.contains("ssh-rsa ") && ssh.contains("rsa-signer"),
            "{ssh}"
        );
        let csr = dir_path.join("ec.csr");
        run(Command::new("openssl")
            .env("KEYWARD_PKCS11_CONF", &conf)
            .env("OPENSSL_CONF", &engine)
            .args(["req", "-new", "-engine", "pkcs11", "-keyform", "engine"])
            .args([
                "-key",
                "pkcs11:object=ec-signer;type=private;pin-value=unused",
            ])
            .args(["-subj", "/CN=ec-signer", "-out"])
            .arg(&csr));
        let checked = run(Command::new("openssl")
            .args(["req", "-noout", "-verify", "-in"])
            .arg(&csr));
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        assert!(said.contains("verify OK"), "{said}");
    })
    .await
    .unwrap();
}
