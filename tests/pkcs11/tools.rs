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
    // OpenSSL 3's pkcs11-provider (Debian's, from bookworm-backports on Debian 12).
    let provider = dir.path().join("provider.cnf");
    std::fs::write(
        &provider,
        format!(
            "openssl_conf = init\n[init]\nproviders = providers\n[providers]\ndefault = default_sect\npkcs11 = pkcs11_sect\n[default_sect]\nactivate = 1\n[pkcs11_sect]\nmodule = /usr/lib/x86_64-linux-gnu/ossl-modules/pkcs11.so\npkcs11-module-path = {}\nactivate = 1\n",
            module_path().display()
        ),
    )
    .unwrap();
    // Without [[slot]] the application's groups are the slots, named after them.
    let discovered = dir.path().join("discover.toml");
    std::fs::write(
        &discovered,
        format!(
            "address = \"{}\"\napi_key_file = \"{}\"\n",
            w.d.url,
            key_file.display()
        ),
    )
    .unwrap();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let slots = run(Command::new("pkcs11-tool")
            .env("KEYWARD_PKCS11_CONF", &discovered)
            .arg("--module")
            .arg(module_path())
            .arg("--list-slots"));
        let slots = String::from_utf8_lossy(&slots.stdout);
        assert!(slots.contains("Signing"), "{slots}");
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
        let csr_verifies = |csr: &Path| {
            let checked = run(Command::new("openssl")
                .args(["req", "-noout", "-verify", "-in"])
                .arg(csr));
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&checked.stdout),
                String::from_utf8_lossy(&checked.stderr)
            );
            assert!(said.contains("verify OK"), "{said}");
        };
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
        csr_verifies(&csr);
        for key in ["ec-signer", "rsa-signer"] {
            let csr = dir_path.join(format!("{key}-provider.csr"));
            run(Command::new("openssl")
                .env("KEYWARD_PKCS11_CONF", &conf)
                .env("OPENSSL_CONF", &provider)
                .args(["req", "-new", "-key"])
                .arg(format!("pkcs11:object={key};type=private?pin-value=unused"))
                .args(["-subj", &format!("/CN={key}"), "-out"])
                .arg(&csr));
            csr_verifies(&csr);
        }
    })
    .await
    .unwrap();
}

/// Runs `cmd`, its standard output.
fn stdout_of(cmd: &mut Command) -> Vec<u8> {
    run(cmd).stdout
}

/// pkcs11-tool imports an AES key (C_CreateObject) and encrypts with AES-CBC-PAD what
/// OpenSSL encrypts with the same key and iv, byte for byte; decrypts it back; makes an RSA
/// key pair and decrypts (RSA-OAEP with SHA-256) what OpenSSL encrypted with the public key
/// fetched through the REST API.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pkcs11_tool_imports_a_key_and_encrypts_as_openssl_does_and_decrypts_what_openssl_encrypted()
 {
    let w = std::sync::Arc::new(World::start().await);
    let dir = tempfile::tempdir().unwrap();
    let dir_path = dir.path().to_path_buf();
    let t = w.clone();
    tokio::task::spawn_blocking(move || {
        let w = &*t;
        let dir = dir_path.as_path();
        let data = dir.join("data");
        // Not whole blocks: the padding shows.
        std::fs::write(&data, b"a record of forty-three bytes to encrypt..").unwrap();
        let key_hex = "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4";
        let key_bytes: Vec<u8> = (0..64)
            .step_by(2)
            .map(|i| u8::from_str_radix(&key_hex[i..i + 2], 16).unwrap())
            .collect();
        std::fs::write(dir.join("key.bin"), &key_bytes).unwrap();
        run(tool(w)
            .args(["--login", "--pin", &w.api_key, "--write-object"])
            .arg(dir.join("key.bin"))
            .args(["--type", "secrkey", "--key-type", "AES:32"])
            .args(["--label", "imported-aes", "--usage-decrypt", "--sensitive"]));
        // pkcs11-tool picks a key for encryption by its id only.
        let listed = stdout_of(tool(w).args(["--login", "--pin", &w.api_key, "--list-objects"]));
        let listed = String::from_utf8_lossy(&listed);
        let id = listed
            .split("label:      imported-aes")
            .nth(1)
            .and_then(|rest| rest.split("ID:").nth(1))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("imported-aes in {listed}"))
            .to_string();
        let iv = "000102030405060708090a0b0c0d0e0f";
        let ours = stdout_of(
            tool(w)
                .args([
                    "--login",
                    "--pin",
                    &w.api_key,
                    "--encrypt",
                    "-m",
                    "AES-CBC-PAD",
                ])
                .args(["--id", &id, "--iv", iv, "--input-file"])
                .arg(&data),
        );
        let theirs = stdout_of(
            Command::new("openssl")
                .args(["enc", "-aes-256-cbc", "-K", key_hex, "-iv", iv, "-in"])
                .arg(&data),
        );
        assert_eq!(ours.len(), 48);
        assert_eq!(ours, theirs, "AES-CBC-PAD through the module is OpenSSL's");
        std::fs::write(dir.join("enc"), &ours).unwrap();
        let back = stdout_of(
            tool(w)
                .args([
                    "--login",
                    "--pin",
                    &w.api_key,
                    "--decrypt",
                    "-m",
                    "AES-CBC-PAD",
                ])
                .args(["--id", &id, "--iv", iv, "--input-file"])
                .arg(dir.join("enc")),
        );
        assert_eq!(back, std::fs::read(&data).unwrap());

        run(tool(w)
            .args(["--login", "--pin", &w.api_key, "--keypairgen"])
            .args([
                "--key-type",
                "rsa:2048",
                "--label",
                "made-rsa",
                "--usage-decrypt",
            ]));
    })
    .await
    .unwrap();

    let made = w
        .admin
        .ok(
            reqwest::Method::GET,
            &format!("/crypto/v1/keys?group_id={}&name=made-rsa", w.group),
            None,
        )
        .await;
    let made = made[0].clone();
    let pem = w.public_pem(&made).await;
    let t = w.clone();
    let dir_path = dir.path().to_path_buf();
    tokio::task::spawn_blocking(move || {
        let w = &*t;
        let dir = dir_path.as_path();
        std::fs::write(dir.join("rsa.pem"), &pem).unwrap();
        run(Command::new("openssl")
            .args(["pkeyutl", "-encrypt", "-pubin", "-inkey"])
            .arg(dir.join("rsa.pem"))
            .args(["-pkeyopt", "rsa_padding_mode:oaep"])
            .args([
                "-pkeyopt",
                "rsa_oaep_md:sha256",
                "-pkeyopt",
                "rsa_mgf1_md:sha256",
            ])
            .arg("-in")
            .arg(dir.join("data"))
            .arg("-out")
            .arg(dir.join("rsa.enc")));
        let back = stdout_of(
            tool(w)
                .args([
                    "--login",
                    "--pin",
                    &w.api_key,
                    "--decrypt",
                    "-m",
                    "RSA-PKCS-OAEP",
                ])
                .args(["--hash-algorithm", "SHA256", "--mgf", "MGF1-SHA256"])
                .args(["--id", &id_hex(&made), "--input-file"])
                .arg(dir.join("rsa.enc")),
        );
        assert_eq!(back, std::fs::read(dir.join("data")).unwrap());
    })
    .await
    .unwrap();
}

/// OpenSSH logs in with a Keyward key: `ssh -I` with the module, against an sshd on loopback
/// whose `authorized_keys` holds the line `ssh-keygen -D` printed for the key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ssh_logs_in_with_a_keyward_key_through_the_module() {
    let w = World::start().await;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_path_buf();
    std::fs::write(d.join("app.key"), &w.api_key).unwrap();
    std::fs::write(
        d.join("pkcs11.toml"),
        format!(
            "address = \"{}\"\napi_key_file = \"{}\"\n[[slot]]\ngroup_id = \"{}\"\n",
            w.d.url,
            d.join("app.key").display(),
            w.group
        ),
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let said = tokio::task::spawn_blocking(move || {
        let conf = d.join("pkcs11.toml");
        let listed = run(Command::new("ssh-keygen")
            .env("KEYWARD_PKCS11_CONF", &conf)
            .arg("-D")
            .arg(module_path()));
        let listed = String::from_utf8_lossy(&listed.stdout).to_string();
        let line = listed
            .lines()
            .find(|l| l.contains("ec-signer"))
            .unwrap_or_else(|| panic!("ec-signer in {listed}"));
        std::fs::write(d.join("authorized_keys"), format!("{line}\n")).unwrap();
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(d.join("host")));
        std::fs::write(
            d.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n",
                d.join("host").display(),
                d.join("authorized_keys").display(),
                d.join("sshd.pid").display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory; /run is emptied at boot.
        std::fs::create_dir_all("/run/sshd")
            .expect("sshd needs /run/sshd: run the tests as root or create it");
        let mut sshd = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(d.join("sshd_config"))
            .spawn()
            .expect("sshd runs (tests/deps.sh installs openssh-server)");
        let user = String::from_utf8(run(Command::new("id").arg("-un")).stdout)
            .unwrap()
            .trim()
            .to_string();
        let mut said = String::new();
        // sshd takes a moment to listen.
        for _ in 0..50 {
            let out = Command::new("ssh")
                .env("KEYWARD_PKCS11_CONF", &conf)
                .arg("-I")
                .arg(module_path())
                .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
                .args(["-o", "UserKnownHostsFile=/dev/null", "-o", "IdentityFile=none"])
                .args(["-p", &port.to_string(), &format!("{user}@127.0.0.1")])
                .args(["echo", "signed-in-with-keyward"])
                .output()
                .unwrap();
            said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() || !said.contains("Connection refused") {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        let _ = sshd.kill();
        let _ = sshd.wait();
        said
    })
    .await
    .unwrap();
    assert!(said.contains("signed-in-with-keyward"), "{said}");
    // The signature was the daemon's: an audited use of the key by the application.
    let kid = w.ec["kid"].as_str().unwrap();
    let logs = w
        .admin
        .ok(
            reqwest::Method::GET,
            &format!("/sys/v1/logs?object_id={kid}"),
            None,
        )
        .await;
    let entries = keyward_tests::api::log_entries(&logs);
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "key.sign" && e["actor_id"] == w.app_id.as_str()),
        "the application's signature with the key is audited: {entries:?}"
    );
}
