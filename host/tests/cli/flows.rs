//! Flows of FLOWS.md from the command line: inviting a user who is new to the daemon (F2),
//! testing link settings before saving them and editing a link one setting at a time, back
//! to the public roots included (F8, F10, F11), keys with their dates, description and tags
//! (F5, F14, F17), imports from every file form and under a key-encryption key (F15), and
//! lists that say when they are cut (F19). Each answer is checked against what the daemon
//! then reports.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyward_emulator::config::demo;
use serde_json::json;

use super::support::{Demo, kid};

#[test]
fn a_new_user_is_invited_with_a_first_password_and_signs_in() {
    let d = Demo::start();
    d.login_admin();
    let invited = d.run(
        &[
            "users",
            "invite",
            "--email",
            "new.member@example.com",
            "--role",
            "member",
            "--password-stdin",
            "-o",
            "json",
        ],
        Some("a first password 1"),
    );
    assert_eq!(invited.code, 0, "{}", invited.stderr);
    assert!(!invited.stdout.contains("a first password 1"));
    let login = d.run(
        &[
            "login",
            "--addr",
            &d.api,
            "--profile",
            "member",
            "--email",
            "new.member@example.com",
            "--password-stdin",
            "-o",
            "json",
        ],
        Some("a first password 1"),
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    let users = d.ok(&["users", "list"]);
    let member = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_email"] == "new.member@example.com")
        .unwrap_or_else(|| panic!("{users}"));
    assert!(
        member["account_role"]
            .as_array()
            .unwrap()
            .contains(&json!("ACCOUNTMEMBER")),
        "{member}"
    );

    // Roles change: a group role, then the account role, then out of the group again.
    let id = member["user_id"].as_str().unwrap();
    let local = d.detail("local_group_id");
    let with_group = d.ok(&[
        "users",
        "update",
        id,
        "--group-role",
        &format!("{local}=auditor"),
    ]);
    assert_eq!(with_group["groups"][&local], "auditor", "{with_group}");
    let auditor = d.ok(&["users", "update", id, "--role", "auditor"]);
    assert!(
        auditor["account_role"]
            .as_array()
            .unwrap()
            .contains(&json!("ACCOUNTAUDITOR")),
        "{auditor}"
    );
    let out = d.ok(&["users", "update", id, "--remove-group", &local]);
    assert!(out["groups"].get(&local).is_none(), "{out}");
    assert_eq!(d.ok(&["users", "show", id])["groups"], out["groups"]);
    let bad = d.run(&["users", "update", id, "--group-role", "no-equals"], None);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
}

#[test]
fn keys_get_their_dates_description_and_tags_and_imports_take_every_file_form() {
    let d = Demo::start();
    d.login_admin();
    let local = d.detail("local_group_id");

    // F5, F17: dates in any of three forms, description, tags; then tag edits.
    let k = d.ok(&[
        "keys",
        "generate",
        "--name",
        "dated",
        "--type",
        "AES",
        "--size",
        "256",
        "--group",
        &local,
        "--description",
        "for the reports",
        "--tag",
        "team=payments",
        "--tag",
        "owner=ops",
        "--activation",
        "2099-01-01",
        "--deactivation",
        "2099-06-30T12:00:00Z",
    ]);
    assert_eq!(k["description"], "for the reports");
    assert_eq!(
        k["custom_metadata"],
        json!({"team": "payments", "owner": "ops"})
    );
    assert_eq!(k["activation_date"], "20990101T000000Z");
    assert_eq!(k["deactivation_date"], "20990630T120000Z");
    assert_eq!(k["state"], "PreActive");
    let tagged = d.ok(&[
        "keys",
        "tag",
        &kid(&k),
        "--set",
        "env=prod",
        "--set",
        "team=risk",
        "--remove",
        "owner",
    ]);
    assert_eq!(
        tagged["custom_metadata"],
        json!({"env": "prod", "team": "risk"})
    );
    assert_eq!(
        d.ok(&["keys", "show", &kid(&k)])["custom_metadata"],
        json!({"env": "prod", "team": "risk"}),
        "the daemon keeps what the command printed"
    );
    let bad = d.run(&["keys", "tag", &kid(&k), "--set", "novalue"], None);
    assert_eq!(bad.code, 1, "{}", bad.stderr);

    // F15: the same AES key from a raw, a base64 and a hex file: one key check value.
    // (Bytes that are not text: `auto` reads printable ones as base64 or hex, and
    // `--format raw` is how to say otherwise.)
    let material = [0xa5_u8; 32];
    let mut kcvs = Vec::new();
    for (name, bytes) in [
        ("raw", material.to_vec()),
        (
            "b64",
            format!("{}\n", STANDARD.encode(material)).into_bytes(),
        ),
        (
            "hex",
            material
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
                .into_bytes(),
        ),
    ] {
        let file = d.file(&format!("aes.{name}"), &bytes);
        let imported = d.ok(&[
            "keys",
            "import",
            "--name",
            &format!("from-{name}"),
            "--type",
            "AES",
            "--file",
            &file,
            "--group",
            &local,
        ]);
        assert_eq!(imported["key_size"], 256, "{name}: {imported}");
        kcvs.push(imported["kcv"].clone());
    }
    assert!(
        kcvs.iter().all(|k| k == &kcvs[0] && k.is_string()),
        "{kcvs:?}"
    );
    // A base64 file forced to be read as hex is refused by the daemon, naming the field.
    let b64 = d.file("again.b64", STANDARD.encode(material).as_bytes());
    let wrong = d.run(
        &[
            "keys", "import", "--name", "wrong", "--type", "AES", "--file", &b64, "--format",
            "hex", "--group", &local, "-o", "json",
        ],
        None,
    );
    assert_eq!(wrong.code, 2, "{}", wrong.stderr);
    assert_eq!(wrong.error()["error"]["field"], "value");

    // Under a key-encryption key: the application (only it unwraps) imports material wrapped
    // by a KEK; the result has the material's key check value.
    let kek_bytes = [0x11_u8; 32];
    let kek_file = d.file("kek.raw", &kek_bytes);
    let kek = d.ok(&[
        "keys",
        "import",
        "--name",
        "kek",
        "--type",
        "AES",
        "--file",
        &kek_file,
        "--group",
        &local,
        "--ops",
        "WRAPKEY,UNWRAPKEY",
    ]);
    let wrapped = keyward_crypto::aes_kw_wrap(&kek_bytes, &material, true).unwrap();
    let wrapped_file = d.file("wrapped.bin", &wrapped);
    d.login_app("app");
    let kek_kid = kid(&kek);
    let import = [
        "keys",
        "import",
        "--name",
        "unwrapped",
        "--type",
        "AES",
        "--file",
        &wrapped_file,
        "--kek",
        &kek_kid,
        "--group",
        &local,
    ];
    let user_try = d.run(&[&import[..], &["-o", "json"]].concat(), None);
    assert_eq!(user_try.code, 2, "users do not unwrap: {}", user_try.stderr);
    let unwrapped = d.ok_as("app", &[&import[..], &["--wrapping-mode", "kwp"]].concat());
    assert_eq!(unwrapped["kcv"], kcvs[0], "{unwrapped}");
}

#[test]
fn lists_say_when_they_are_cut_and_all_pages_come_with_all() {
    let d = Demo::start();
    d.login_admin();
    let g = d.ok(&["groups", "create", "--name", "paged"]);
    let gid = g["group_id"].as_str().unwrap();
    for i in 0..5 {
        d.ok(&[
            "keys",
            "generate",
            "--name",
            &format!("p{i}"),
            "--type",
            "AES",
            "--size",
            "128",
            "--group",
            gid,
        ]);
    }
    let page = d.run(
        &[
            "keys", "list", "--group", gid, "--limit", "2", "--offset", "1", "-o", "json",
        ],
        None,
    );
    assert_eq!(page.code, 0, "{}", page.stderr);
    let names: Vec<String> = page
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["p1", "p2"]);
    assert!(page.stderr.contains("showing 2 of 5"), "{}", page.stderr);
    assert!(page.stderr.contains("--offset 3"), "{}", page.stderr);
    let all = d.run(
        &["keys", "list", "--group", gid, "--all", "-o", "json"],
        None,
    );
    assert_eq!(all.json().as_array().unwrap().len(), 5);
    assert!(all.stderr.is_empty(), "{}", all.stderr);
    // Every run, however many the endpoint gives at a time.
    let runs = d.run(&["workflows", "runs", "--all", "-o", "json"], None);
    assert_eq!(runs.code, 0, "{}", runs.stderr);
    assert!(
        !runs.json().as_array().unwrap().is_empty(),
        "the demo's first sync"
    );
    let bad = d.run(&["keys", "list", "--limit", "0"], None);
    assert_eq!(bad.code, 1, "{}", bad.stderr);
}

#[test]
fn link_settings_are_tested_before_saving_and_edited_one_at_a_time() {
    let d = Demo::start();
    d.login_admin();
    let hsm = d.detail("hsm_group_id");
    let ca = d.data.path().join("data/emulator/ca.pem");
    let flags = d.emulator_link_flags();
    let unsaved = |secret: &str| {
        let mut args = vec!["groups", "check", "-o", "json"];
        args.extend(flags.iter().map(String::as_str));
        d.run(&args, Some(secret))
    };
    // F8: details not saved anywhere; Not Connected is exit code 1 with the reason.
    let good = unsaved(demo::CLIENT_SECRET);
    assert_eq!(good.code, 0, "{}", good.stderr);
    assert_eq!(good.json()["status"], "Connected");
    let wrong = unsaved("not the secret");
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert_eq!(wrong.error()["error"]["record"]["status"], "Not Connected");
    assert!(!wrong.stderr.contains("not the secret"));

    // The demo's emulator has its admin API on the port asked for.
    let url = format!("http://127.0.0.1:{}/admin/health", d.emulator_admin_port);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async { reqwest::get(&url).await.map(|r| r.status()) })
        .unwrap();
    assert!(status.is_success(), "{status}");

    // F10, F11: one setting at a time; back to the public roots (which do not know the
    // emulator's CA: Not Connected), then the CA again.
    let before = d.ok(&["groups", "show", &hsm]);
    let public = d.ok(&["groups", "link", &hsm, "--public-roots"]);
    let tls = &public["external_kms"]["tls"];
    assert!(tls["ca_pem"].is_null(), "{public}");
    assert_eq!(
        public["external_kms"]["tenant_id"], before["external_kms"]["tenant_id"],
        "the rest stays"
    );
    let refused = d.run(&["groups", "check", &hsm, "-o", "json"], None);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    let back = d.ok(&["groups", "link", &hsm, "--ca-pem", ca.to_str().unwrap()]);
    assert!(back["external_kms"]["tls"]["ca_pem"].is_string());
    assert_eq!(d.ok(&["groups", "check", &hsm])["status"], "Connected");
}

#[test]
fn reports_show_the_dashboard_figures_and_keys_are_found_by_part_of_a_name() {
    let d = Demo::start();
    d.login_admin();
    let hsm = d.detail("hsm_group_id");
    let local = d.detail("local_group_id");

    // F14: a key in the HSM under an Azure key name of its own.
    let k = d.ok(&[
        "keys",
        "generate",
        "--name",
        "Payments KEK",
        "--type",
        "RSA",
        "--size",
        "2048",
        "--group",
        &hsm,
        "--azure-name",
        "payments-kek-v1",
    ]);
    assert_eq!(k["external"]["id"]["label"], "payments-kek-v1");
    let bad = d.run(
        &[
            "keys",
            "generate",
            "--name",
            "x",
            "--type",
            "AES",
            "--size",
            "256",
            "--group",
            &local,
            "--azure-name",
            "no-hsm-here",
        ],
        None,
    );
    assert_eq!(bad.code, 2, "only for a linked group: {}", bad.stderr);

    // F19: part of the name in any case, the type, the holder.
    let found = d.ok(&["keys", "list", "--name-contains", "payments KEK", "--all"]);
    let names: Vec<&str> = found
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Payments KEK"]);
    let held = d.ok(&[
        "keys",
        "list",
        "--external",
        "true",
        "--type",
        "rsa",
        "--all",
    ]);
    assert!(
        held.as_array()
            .unwrap()
            .iter()
            .all(|k| k["obj_type"] == "RSA" && !k["external"].is_null()),
        "{held}"
    );
    assert!(
        held.as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "Payments KEK")
    );

    // Reports: the same rows as the API's, and the daemon's CSV in a file.
    let all = d.ok(&["keys", "list", "--all"]);
    let counted = d.ok(&["reports", "keys"]);
    let total: i64 = counted
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["count"].as_i64().unwrap())
        .sum();
    assert_eq!(total as usize, all.as_array().unwrap().len());
    let hsm_held: i64 = counted
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["held_by"] == "hsm")
        .map(|r| r["count"].as_i64().unwrap())
        .sum();
    let external = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| !k["external"].is_null())
        .count();
    assert_eq!(hsm_held as usize, external);
    let rotation = d.ok(&["reports", "rotation"]);
    assert!(
        rotation
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["name"] == "Payments KEK" && r["finding"] == "no_policy"),
        "{rotation}"
    );
    let drift = d.ok(&["reports", "drift"]);
    assert_eq!(drift[0]["group_id"], hsm.as_str());
    assert_eq!(
        drift[0]["last_sync_status"], "succeeded",
        "the demo's first sync"
    );
    let file = d.data.path().join("usage.csv");
    let written = d.ok(&["reports", "usage", "--csv", file.to_str().unwrap()]);
    assert_eq!(written["rows"], 30);
    let csv = std::fs::read_to_string(&file).unwrap();
    assert!(csv.starts_with("day,operations\n"), "{csv}");
    assert_eq!(csv.lines().count(), 31);
    let table = d.run(&["reports", "usage"], None);
    assert_eq!(table.code, 0, "{}", table.stderr);
    assert!(table.stdout.contains("OPERATIONS"), "{}", table.stdout);
}

#[test]
fn vault_groups_are_linked_with_their_tier_and_keys_leave_as_byok_files() {
    let d = Demo::start();
    d.login_admin();
    d.login_app("app");
    let port = d.emulator_port;
    let premium_uri = format!("https://{}.vault.localhost:{port}/", demo::PREMIUM_VAULT);

    // A group linked to the demo's Premium vault through the CLI: the tier goes with the
    // instance, and a vault's URI without it is refused.
    let g = kid_of(
        &d.ok(&["groups", "create", "--name", "cli-premium"]),
        "group_id",
    );
    let mut flags = d.emulator_link_flags();
    flags.extend(
        [
            "--vault-suffix",
            "vault.localhost",
            "--instance",
            &premium_uri,
        ]
        .map(str::to_string),
    );
    let link = |extra: &[&str]| {
        let mut args = vec!["groups", "link", &g, "-o", "json"];
        args.extend(flags.iter().map(String::as_str));
        args.extend(extra);
        d.run(&args, Some(demo::CLIENT_SECRET))
    };
    let refused = link(&[]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("key_vault_type"),
        "{}",
        refused.stderr
    );
    let linked = link(&["--key-vault-type", "PREMIUM"]);
    assert_eq!(linked.code, 0, "{}", linked.stderr);
    assert_eq!(linked.json()["external_kms"]["key_vault_type"], "PREMIUM");
    let shown = d.run(&["groups", "check", &g, "-o", "json"], None);
    assert_eq!(shown.json()["status"], "Connected", "{}", shown.stderr);

    // Keys there are HSM-protected; the demo's Standard vault refuses AES with the reason.
    let rsa = d.ok(&[
        "keys",
        "generate",
        "--name",
        "cli-vault-rsa",
        "--type",
        "RSA",
        "--size",
        "2048",
        "--group",
        &g,
    ]);
    assert_eq!(rsa["external"]["kty"], "RSA-HSM", "{rsa}");
    let aes = d.run(
        &[
            "keys",
            "generate",
            "--name",
            "cli-vault-aes",
            "--type",
            "AES",
            "--size",
            "256",
            "--group",
            &d.detail("standard_group_id"),
        ],
        None,
    );
    assert_ne!(aes.code, 0);
    assert!(
        aes.stderr.contains("Standard tier Key Vault"),
        "{}",
        aes.stderr
    );

    // Flow c: an application's exportable key as a .byok file, for a key-exchange key given
    // as a key of the linked group, then by its Azure id and PEM public key.
    let src = kid(&d.ok_as(
        "app",
        &[
            "keys",
            "generate",
            "--name",
            "outbound",
            "--type",
            "RSA",
            "--size",
            "2048",
            "--ops",
            "ENCRYPT,DECRYPT,EXPORT",
            "--group",
            &d.detail("local_group_id"),
        ],
    ));
    // (a key-exchange key the application can see: in the demo's Premium vault group)
    let rsa = d.ok(&[
        "keys",
        "generate",
        "--name",
        "demo-vault-kek",
        "--type",
        "RSA",
        "--size",
        "2048",
        "--group",
        &d.detail("premium_group_id"),
    ]);
    let kek = kid(&rsa);
    let kek_id = rsa["external"]["key_id"].as_str().unwrap().to_string();
    let out = d.data.path().join("outbound.byok");
    let made = d.ok_as(
        "app",
        &[
            "keys",
            "byok",
            &src,
            "--kek",
            &kek,
            "--out",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(made["kek"], kek_id.as_str());
    let file: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(file["header"]["kid"], kek_id.as_str());
    assert_eq!(file["header"]["enc"], "CKM_RSA_AES_KEY_WRAP");
    let der = STANDARD.decode(rsa["pub_key"].as_str().unwrap()).unwrap();
    let b64 = STANDARD.encode(der);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    let pem = d.file(
        "kek.pem",
        format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        )
        .as_bytes(),
    );
    let out2 = d.data.path().join("outbound2.byok");
    d.ok_as(
        "app",
        &[
            "keys",
            "byok",
            &src,
            "--kek-id",
            &kek_id,
            "--kek-public-key",
            &pem,
            "--out",
            out2.to_str().unwrap(),
        ],
    );
    let file2: serde_json::Value = serde_json::from_slice(&std::fs::read(&out2).unwrap()).unwrap();
    assert_eq!(file2["header"]["kid"], kek_id.as_str());
    assert_ne!(
        file2["ciphertext"], file["ciphertext"],
        "a fresh transport key each time"
    );
    // The administrator may not: the group does not allow user export.
    let no = d.run(
        &["keys", "byok", &src, "--kek", &kek, "--out", "x.byok"],
        None,
    );
    assert_ne!(no.code, 0);
    assert!(no.stderr.contains("user_export"), "{}", no.stderr);
}

fn kid_of(v: &serde_json::Value, field: &str) -> String {
    v[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {v}"))
        .to_string()
}
