//! The `keyward` binary as an operator runs it: the daemon's log, and the command-line
//! client against a running daemon (the demo set-up, with its emulated Managed HSM): every
//! command family here, the flows of FLOWS.md that need more than one command in `flows.rs`.

mod approvals;
mod certs;
mod flows;
mod support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use keyward_emulator::config::demo;
use support::{Demo, kid};

/// Starts `keyward <args> serve` on a free port and returns the log lines up to the one that
/// says it is serving.
fn log_until_serving(args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(args)
        .args(["serve", "--demo", "false", "--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    for line in BufReader::new(child.stderr.take().unwrap()).lines() {
        let line = line.unwrap();
        let done = line.contains("keyward is serving");
        lines.push(line);
        if done {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        lines
            .last()
            .is_some_and(|l| l.contains("keyward is serving")),
        "{lines:?}"
    );
    lines
}

#[test]
fn log_format_json_writes_one_object_a_line() {
    let lines = log_until_serving(&["--log-format", "json"]);
    for line in &lines {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{v}");
    }
    let serving: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(serving["level"], "INFO");
    assert_eq!(serving["fields"]["message"], "keyward is serving");
    assert!(
        serving["fields"]["addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
}

#[test]
fn the_default_log_is_text_for_people() {
    let lines = log_until_serving(&[]);
    let last = lines.last().unwrap();
    assert!(
        serde_json::from_str::<serde_json::Value>(last).is_err(),
        "{last}"
    );
    assert!(last.contains("INFO"), "{last}");
}

/// Every command family against a running daemon, as scripts use them (`-o json` parsed),
/// with the exit codes of local (1) and server (2) errors.
#[test]
fn every_command_family_works_against_a_running_daemon() {
    let d = Demo::start();
    let (hsm, local) = (d.detail("hsm_group_id"), d.detail("local_group_id"));

    // Login keeps a private profile, without the password; a wrong password is the server's
    // refusal (2), as JSON on stderr under -o json.
    let bad = d.run(
        &[
            "login",
            "--addr",
            &d.api,
            "--email",
            "admin@demo.keyward",
            "--password-stdin",
            "-o",
            "json",
        ],
        Some("wrong"),
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert_eq!(bad.error()["error"]["status"], 401);
    assert!(bad.stdout.is_empty());
    let password = d.detail("user_password");
    let login = d.run(
        &[
            "login",
            "--addr",
            &d.api,
            "--email",
            "admin@demo.keyward",
            "--password-stdin",
            "-o",
            "json",
        ],
        Some(&password),
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    assert_eq!(login.json()["identity"], "admin@demo.keyward");
    let file = d.config.path().join("profiles.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&password));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the profiles hold tokens");
    }
    let profiles = d.ok(&["profiles"]);
    assert_eq!(profiles[0]["name"], "default");
    assert_eq!(profiles[0]["logged_in"], true);
    assert!(!profiles.to_string().contains("token"));

    // Groups: list with the external marker, test the connection, sync with its counters.
    let groups = d.ok(&["groups", "list"]);
    let linked = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["group_id"] == hsm.as_str())
        .unwrap();
    assert_eq!(linked["external_kms"]["kind"], "AzureManagedHsm");
    assert_eq!(d.ok(&["groups", "check", &hsm])["status"], "Connected");
    let scan = d.ok(&["groups", "sync", &hsm]);
    assert_eq!(scan["scan_result"]["$type"], "Success", "{scan}");
    assert!(scan["progress"]["seen"].as_i64().unwrap() >= 1, "{scan}");
    // A new group linked to the demo's emulated HSM (as to a private endpoint: its own
    // endpoints and CA); the secret comes from stdin.
    let created = d.ok(&["groups", "create", "--name", "cli-made"]);
    let made_id = created["group_id"].as_str().unwrap().to_string();
    let hsm_uri = format!("https://{}.localhost:{}/", demo::HSM, d.emulator_port);
    let flags = d.emulator_link_flags();
    let mut args = vec![
        "groups",
        "link",
        &made_id,
        "--instance",
        &hsm_uri,
        "-o",
        "json",
    ];
    args.extend(flags.iter().map(String::as_str));
    let linked = d.run(&args, Some(demo::CLIENT_SECRET));
    assert_eq!(linked.code, 0, "{}", linked.stderr);
    assert!(
        !linked.stdout.contains(demo::CLIENT_SECRET),
        "the secret is never shown"
    );
    assert_eq!(linked.json()["external_kms"]["has_client_secret"], true);
    assert_eq!(d.ok(&["groups", "check", &made_id])["status"], "Connected");
    assert_eq!(
        d.ok(&["groups", "show", created["group_id"].as_str().unwrap()])["name"],
        "cli-made"
    );

    // Keys: generate, import from a file, copy into the Azure group, rotate with the copy,
    // soft delete (confirmed) and recover.
    let azure_keys = d.ok(&["keys", "list", "--group", &hsm]);
    assert!(!azure_keys.as_array().unwrap().is_empty());
    let src = d.ok(&[
        "keys",
        "generate",
        "--name",
        "cli-src",
        "--type",
        "AES",
        "--size",
        "256",
        "--group",
        &local,
        "--ops",
        "ENCRYPT,DECRYPT,EXPORT,APPMANAGEABLE",
    ]);
    let material = d.data.path().join("aes.key");
    std::fs::write(&material, [7u8; 32]).unwrap();
    let imported = d.ok(&[
        "keys",
        "import",
        "--name",
        "cli-imported",
        "--type",
        "AES",
        "--file",
        material.to_str().unwrap(),
        "--group",
        &local,
    ]);
    assert_eq!(imported["origin"], "External");
    let copy = d.ok(&[
        "keys",
        "copy",
        &kid(&src),
        "--group",
        &hsm,
        "--name",
        "cli-copy",
    ]);
    assert_eq!(copy["group_id"], hsm.as_str());
    let rotated = d.ok(&["keys", "rotate", &kid(&src), "--copies", "all"]);
    let new_src = rotated[0]["new_kid"].as_str().unwrap().to_string();
    let new_copy = rotated[0]["rotated_copies"][0]["new_kid"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_src, kid(&src));
    assert_eq!(rotated[0]["new_copy_kids"][0], new_copy.as_str());
    // The table names every new key, the copies' included, with their Azure version.
    let shown = d.run(&["keys", "show", &new_copy], None).stdout;
    let version = d.ok(&["keys", "show", &new_copy])["external"]["id"]["version"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(shown.contains(&version), "external version: {shown}");
    // Bulk rotation: each key's new id, one refusal reported with the others (2).
    let bulk: Vec<String> = ["bulk-1", "bulk-2"]
        .iter()
        .map(|n| {
            kid(&d.ok(&[
                "keys", "generate", "--name", n, "--type", "AES", "--size", "256", "--group",
                &local,
            ]))
        })
        .collect();
    let both = d.ok(&["keys", "rotate", &bulk[0], &bulk[1]]);
    assert_eq!(both.as_array().unwrap().len(), 2);
    assert!(
        both.as_array()
            .unwrap()
            .iter()
            .all(|r| r["new_kid"].is_string()),
        "{both}"
    );
    let newer = both[1]["new_kid"].as_str().unwrap();
    let again = d.run(&["keys", "rotate", &bulk[0], newer, "-o", "json"], None);
    assert_eq!(
        again.code, 2,
        "the first was rotated already: {}",
        again.stderr
    );
    let record = &again.error()["error"]["record"];
    assert!(record[0]["error"].is_string(), "{record}");
    assert!(record[1]["new_kid"].is_string(), "{record}");
    let refused = d.run(&["keys", "soft-delete", &new_copy], None);
    assert_eq!(
        refused.code, 1,
        "a soft delete needs --yes: {}",
        refused.stderr
    );
    let deleted = d.ok(&["keys", "soft-delete", &new_copy, "--yes"]);
    assert_eq!(deleted["external"]["state"], "SoftDeleted", "{deleted}");
    let recovered = d.ok(&["keys", "recover", &new_copy]);
    assert_eq!(recovered["external"]["state"], "Active", "{recovered}");
    let history = d.ok(&["keys", "rotations", &new_src]);
    assert!(history.is_array() || history.is_object());
    let policy = d.ok(&[
        "keys",
        "rotation-policy",
        &new_src,
        "--set",
        r#"{"interval_days": 90}"#,
    ]);
    assert_eq!(policy["rotation_policy"]["interval_days"], 90, "{policy}");
    assert!(policy["scheduled_rotation"].is_string(), "{policy}");
    let deactivated = d.ok(&["keys", "deactivate", &kid(&imported)]);
    assert_eq!(deactivated["state"], "Deactivated");
    // YAML for scripts too.
    let yaml = d.run(&["keys", "show", &new_src, "-o", "yaml"], None);
    assert_eq!(yaml.code, 0);
    let shown: serde_json::Value = serde_norway::from_str(&yaml.stdout).unwrap();
    assert_eq!(shown["kid"], new_src.as_str());

    // Cryptography is the applications': a user is refused (2), the application round-trips.
    let plain = d.data.path().join("plain.txt");
    std::fs::write(&plain, b"for applications only").unwrap();
    let user_try = d.run(
        &[
            "keys",
            "encrypt",
            &new_src,
            "--in",
            plain.to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(user_try.code, 2);
    assert_eq!(user_try.error()["error"]["status"], 403);
    let app = d.run(
        &[
            "login",
            "--addr",
            &d.api,
            "--api-key-stdin",
            "--profile",
            "app",
            "-o",
            "json",
        ],
        Some(&d.detail("api_key")),
    );
    assert_eq!(app.code, 0, "{}", app.stderr);
    let sealed = d.run(
        &[
            "--profile",
            "app",
            "keys",
            "encrypt",
            &new_src,
            "--in",
            plain.to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(sealed.code, 0, "{}", sealed.stderr);
    let sealed_file = d.data.path().join("sealed.json");
    std::fs::write(&sealed_file, &sealed.stdout).unwrap();
    let back = d.data.path().join("back.txt");
    let opened = d.run(
        &[
            "--profile",
            "app",
            "keys",
            "decrypt",
            &new_src,
            "--in",
            sealed_file.to_str().unwrap(),
            "--out",
            back.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(opened.code, 0, "{}", opened.stderr);
    assert_eq!(std::fs::read(&back).unwrap(), b"for applications only");

    // Policies.
    let set = d.ok(&[
        "policies",
        "set-crypto",
        "--group",
        &local,
        "--policy",
        r#"{"aes": {"key_sizes": [256]}}"#,
    ]);
    assert!(set["cryptographic_policy"].is_object(), "{set}");
    assert!(d.ok(&["policies", "show", "--group", &local])["cryptographic_policy"].is_object());
    assert!(d.ok(&["policies", "show"])["acct_id"].is_string());

    // Workflows: a broken script is refused with where (2) and the old version keeps running.
    let good = d.data.path().join("greet.rhai");
    std::fs::write(&good, "output.greeting = \"hello\";\n").unwrap();
    let bad_file = d.data.path().join("broken.rhai");
    std::fs::write(&bad_file, "output.greeting = ;\n").unwrap();
    assert_eq!(
        d.ok(&[
            "workflows",
            "put",
            "greet",
            "--file",
            good.to_str().unwrap()
        ])["version"],
        1
    );
    let checked = d.run(
        &[
            "workflows",
            "check",
            "greet",
            "--file",
            bad_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(checked.code, 2);
    assert!(
        checked.stderr.contains("broken.rhai:1:"),
        "{}",
        checked.stderr
    );
    let put = d.run(
        &[
            "workflows",
            "put",
            "greet",
            "--file",
            bad_file.to_str().unwrap(),
            "-o",
            "json",
        ],
        None,
    );
    assert_eq!(put.code, 2);
    assert_eq!(put.error()["error"]["line"], 1);
    let run = d.ok(&["workflows", "run", "greet"]);
    assert_eq!(run["output"]["greeting"], "hello");
    assert_eq!(
        d.ok(&["workflows", "versions", "greet"])
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let runs = d.ok(&["workflows", "runs", "--workflow", "greet"]);
    assert_eq!(runs[0]["run_id"], run["run_id"]);
    assert_eq!(
        d.ok(&["workflows", "run-log", run["run_id"].as_str().unwrap()])["status"],
        "succeeded"
    );
    assert!(
        d.ok(&["workflows", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "greet")
    );
    assert!(d.ok(&["workflows", "show", "sync"])["source"].is_string());

    // Schedules, webhooks, notifications: empty lists are `[]`.
    assert_eq!(
        d.run(&["jobs", "list", "-o", "json"], None).stdout.trim(),
        "[]"
    );
    let job = d.ok(&[
        "jobs",
        "create",
        "--name",
        "nightly",
        "--workflow",
        "greet",
        "--cron",
        "0 0 2 * * *",
    ]);
    let job_id = job["id"].as_str().unwrap().to_string();
    // The table for people fills every column the JSON has a value for.
    let table = d.run(&["jobs", "list"], None).stdout;
    assert!(
        table.contains(job["next_run"].as_str().unwrap()),
        "NEXT RUN: {table}"
    );
    assert_eq!(d.ok(&["jobs", "pause", &job_id])["paused"], true);
    assert_eq!(d.ok(&["jobs", "list"]).as_array().unwrap().len(), 1);
    d.ok(&["jobs", "delete", &job_id]);
    let hook = d.ok(&[
        "webhooks",
        "create",
        "--name",
        "ci-greet",
        "--workflow",
        "greet",
    ]);
    assert!(
        hook.to_string().contains("whsec_"),
        "the secret is shown once: {hook}"
    );
    assert_eq!(d.ok(&["webhooks", "list"]).as_array().unwrap().len(), 1);
    let table = d.run(&["webhooks", "list"], None).stdout;
    assert!(
        table.contains(hook["path"].as_str().unwrap()),
        "PATH: {table}"
    );
    assert!(!d.ok(&["webhooks", "list"]).to_string().contains("whsec_"));
    assert_eq!(
        d.run(&["notifications", "list", "-o", "json"], None)
            .stdout
            .trim(),
        "[]"
    );

    // The daemon's plugins, as it loaded them.
    let plugins = d.ok(&["plugins"]);
    assert!(
        plugins
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["status"] == "loaded" && p["origin"] == "shipped"),
        "{plugins}"
    );

    // Audit log, users and applications.
    let events = d.ok(&["audit", "--action", "workflow_script.put"]);
    assert_eq!(events[0]["object_id"], "greet");
    let users = d.ok(&["users", "list"]);
    assert_eq!(users[0]["user_email"], "admin@demo.keyward");
    let made = d.ok(&["apps", "create", "--name", "cli-app", "--group", &local]);
    assert!(
        made["api_key"].is_string() || made["credential"].is_object(),
        "{made}"
    );
    assert!(
        d.ok(&["apps", "list"])
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "cli-app")
    );

    // KEYWARD_ADDR and KEYWARD_TOKEN stand in for a profile.
    let token = std::fs::read_to_string(&file)
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("token = \"")
                .map(|t| t.trim_end_matches('"').to_string())
        })
        .unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["groups", "list", "-o", "json"])
        .env("KEYWARD_CONFIG_DIR", elsewhere.path())
        .env("KEYWARD_ADDR", &d.api)
        .env("KEYWARD_TOKEN", &token)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(env!("CARGO_BIN_EXE_keyward"))
        .args(["groups", "list", "-o", "json"])
        .env("KEYWARD_CONFIG_DIR", elsewhere.path())
        .env_remove("KEYWARD_ADDR")
        .env_remove("KEYWARD_TOKEN")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "no profile, no address: a local error"
    );

    // After logout the daemon refuses the profile (2).
    d.ok(&["logout"]);
    let after = d.run(&["groups", "list"], None);
    assert_eq!(after.code, 2, "{}", after.stderr);
}

/// Local errors exit with 1 and name the problem; every command's help has an example.
#[test]
fn local_errors_exit_1_and_every_command_has_help_with_an_example() {
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keyward"))
            .args(args)
            .env("KEYWARD_CONFIG_DIR", config.path())
            .env("KEYWARD_ADDR", "http://127.0.0.1:9")
            .output()
            .unwrap()
    };
    for args in [
        &["keys", "show"][..],
        &["no-such-command"],
        &[
            "keys",
            "import",
            "--name",
            "x",
            "--type",
            "AES",
            "--file",
            "/nonexistent/key",
        ],
        &["keys", "rotation-policy", "k", "--set", "{not json"],
        &["keys", "list", "-o", "xml"],
    ] {
        let out = run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
    // Under -o json a local error is JSON too.
    let out = run(&[
        "keys",
        "import",
        "--name",
        "x",
        "--type",
        "AES",
        "--file",
        "/nonexistent/key",
        "-o",
        "json",
    ]);
    let e: serde_json::Value = serde_json::from_slice(&out.stderr).unwrap();
    assert_eq!(e["error"]["kind"], "local");
    // A daemon that is not there is a remote error.
    let out = run(&["groups", "list"]);
    assert_eq!(out.status.code(), Some(2));

    let families = [
        "groups",
        "keys",
        "policies",
        "workflows",
        "jobs",
        "webhooks",
        "notifications",
        "users",
        "apps",
    ];
    for family in families {
        let help = run(&[family, "--help"]);
        assert_eq!(help.status.code(), Some(0));
        let text = String::from_utf8_lossy(&help.stdout).into_owned();
        let commands: Vec<String> = text
            .lines()
            .skip_while(|l| !l.starts_with("Commands:"))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .filter(|c| c != "help")
            .collect();
        assert!(!commands.is_empty(), "{family}: {text}");
        for c in commands {
            let help = run(&[family, &c, "--help"]);
            let text = String::from_utf8_lossy(&help.stdout);
            assert!(
                text.contains("Example"),
                "keyward {family} {c} --help has no example:\n{text}"
            );
        }
    }
    for top in [
        "login",
        "logout",
        "profiles",
        "audit",
        "plugins",
        "check-plugins",
    ] {
        let help = run(&[top, "--help"]);
        assert!(
            String::from_utf8_lossy(&help.stdout).contains("Example"),
            "{top}"
        );
    }
}
