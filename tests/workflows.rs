//! Workflow scripts (F30): an edited script takes effect on the next run, one that does not
//! compile is reported and the previous version keeps serving, a runaway script is stopped,
//! scripts are sandboxed, and every run is recorded.

use std::path::PathBuf;
use std::time::Duration;

use keyward_tests::azure::{Azure, SECRET};
use reqwest::Method;
use serde_json::json;

fn override_dir(az: &Azure) -> PathBuf {
    az.daemon.data_dir.join("workflows")
}

fn write(az: &Azure, name: &str, text: &str) {
    std::fs::write(override_dir(az).join(format!("{name}.rhai")), text).unwrap();
}

async fn check(az: &Azure) -> (u16, serde_json::Value) {
    az.admin
        .call(
            Method::POST,
            &format!("/sys/v1/groups/{}/hmg/check", az.group),
            None,
        )
        .await
}

#[tokio::test]
async fn an_edited_script_runs_next_time_and_a_broken_one_is_reported_while_the_last_good_one_serves()
 {
    let az = Azure::start().await;
    let (_, status) = check(&az).await;
    assert_eq!(status["status"], "Connected");

    write(
        &az,
        "test_connection",
        "// Maintenance: report every link as down.\noutput.status = \"Not Connected\";\noutput.reason = \"maintenance window\";\n",
    );
    let (_, status) = check(&az).await;
    assert_eq!(status["reason"], "maintenance window");
    let list = az.admin.ok(Method::GET, "/sys/v1/workflows", None).await;
    let tc = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "test_connection")
        .unwrap()
        .clone();
    assert_eq!(tc["origin"], "override");
    assert!(tc["problem"].is_null());
    let src = az
        .admin
        .ok(Method::GET, "/sys/v1/workflows/test_connection", None)
        .await;
    assert!(
        src["source"]
            .as_str()
            .unwrap()
            .contains("maintenance window")
    );

    // Broken: reported with line and column; the edited version keeps serving.
    write(
        &az,
        "test_connection",
        "output.status = \"Connected\";\nlet x = ;\n",
    );
    let (_, status) = check(&az).await;
    assert_eq!(status["reason"], "maintenance window");
    let list = az.admin.ok(Method::GET, "/sys/v1/workflows", None).await;
    let problem = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "test_connection")
        .unwrap()["problem"]
        .clone();
    assert_eq!(problem["line"], 2, "{problem}");
    assert!(problem["column"].as_u64().is_some(), "{problem}");
    assert!(
        problem["path"]
            .as_str()
            .unwrap()
            .ends_with("test_connection.rhai")
    );

    // Fixed, then removed: the shipped script is back.
    write(
        &az,
        "test_connection",
        "output.status = \"Connected\";\noutput.reason = \"fixed\";\n",
    );
    let (_, status) = check(&az).await;
    assert_eq!(status["reason"], "fixed");
    std::fs::remove_file(override_dir(&az).join("test_connection.rhai")).unwrap();
    let (_, status) = check(&az).await;
    assert_eq!(status["status"], "Connected");
    assert!(status["reason"].is_null());

    // Modules come from the same directory: an edited `common` changes every user of it.
    let shipped_common = az
        .admin
        .ok(Method::GET, "/sys/v1/workflows/common", None)
        .await;
    let edited = shipped_common["source"].as_str().unwrap().replace(
        "        err.message\n",
        "        `HSM says: ${err.message}`\n",
    );
    write(&az, "common", &edited);
    let mut wrong = keyward_tests::azure::link(&az.em, "wrong", None);
    wrong["client_secret"] = json!("wrong");
    let status = az
        .admin
        .ok(Method::POST, "/sys/v1/groups/hmg/check", Some(wrong))
        .await;
    assert!(
        status["reason"].as_str().unwrap().starts_with("HSM says:"),
        "{status}"
    );
    az.stop().await;
}

#[tokio::test]
async fn a_script_that_never_ends_is_stopped_and_the_daemon_keeps_serving() {
    let az = Azure::start_with(|c| c.workflow_limits.timeout = Duration::from_secs(2)).await;
    write(&az, "test_connection", "let n = 0;\nloop { n += 1; }\n");
    let started = std::time::Instant::now();
    let (s, body) = check(&az).await;
    assert_eq!(s, 504, "{body}");
    assert_eq!(body["code"], "Timeout");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Other requests were served meanwhile and still are.
    az.admin.ok(Method::GET, "/sys/v1/groups", None).await;
    let runs = az
        .admin
        .ok(
            Method::GET,
            "/sys/v1/workflow_runs?workflow=test_connection&limit=1",
            None,
        )
        .await;
    assert_eq!(runs[0]["status"], "failed");
    assert!(runs[0]["error"].as_str().unwrap().contains("time limit"));

    // Unbounded recursion hits the call-depth limit.
    write(
        &az,
        "test_connection",
        "fn down(n) { down(n + 1) }\ndown(0);\n",
    );
    let (s, body) = check(&az).await;
    assert_eq!(s, 500, "{body}");
    assert_eq!(body["code"], "WorkflowFailed");
    az.stop().await;
}

#[tokio::test]
async fn scripts_reach_only_the_host_api() {
    let az = Azure::start().await;
    // `eval` is not part of the language here: the script does not compile.
    write(
        &az,
        "test_connection",
        "output.status = eval(\"\\\"Connected\\\"\");\n",
    );
    let list = az.admin.ok(Method::GET, "/sys/v1/workflows", None).await;
    let problem = &list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "test_connection")
        .unwrap()["problem"];
    assert!(problem.is_object(), "{list}");

    // No paths in imports, no functions beyond the host API.
    for script in [
        "import \"../../etc/passwd\" as p;\noutput.status = \"Connected\";\n",
        "import \"/etc/passwd\" as p;\n",
        "let f = open_file(\"/etc/passwd\");\n",
        "let r = http::get(\"https://example.com\");\n",
    ] {
        write(&az, "test_connection", script);
        let (s, body) = check(&az).await;
        assert_eq!(s, 500, "{script}: {body}");
        assert_eq!(body["code"], "WorkflowFailed", "{script}: {body}");
    }

    // The host API: policy checks, audit events and the step log.
    write(
        &az,
        "update",
        r#"
let verdict = policy::check("update", input.kid);
log(`policy says ${verdict.allowed}`);
audit::record("update_checked", #{ kid: input.kid, allowed: verdict.allowed });
let remote = hsm::update_key(input.azure_name, input.changes);
output.kid = keys::save(remote);
output.verdict = verdict;
"#,
    );
    let k = az
        .admin
        .create_key(json!({"name": "k", "group_id": az.group, "obj_type": "AES", "key_size": 256}))
        .await;
    let kid = k["kid"].as_str().unwrap();
    az.admin
        .ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"enabled": false})),
        )
        .await;
    assert!(!az.remote("k").await.unwrap().properties.enabled);
    let run = &az
        .admin
        .ok(
            Method::GET,
            "/sys/v1/workflow_runs?workflow=update&limit=1",
            None,
        )
        .await[0];
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["output"]["verdict"]["allowed"], true);
    assert_eq!(run["inputs"]["changes"]["enabled"], false);
    assert!(run["log"].to_string().contains("policy says true"));
    az.daemon.state.audit.flush().await;
    let logs = az
        .admin
        .ok(Method::GET, "/sys/v1/logs?size=500", None)
        .await;
    assert!(
        logs.to_string().contains("workflow.update_checked"),
        "{logs}"
    );
    assert!(!logs.to_string().contains(SECRET));
    az.stop().await;
}

#[tokio::test]
async fn every_run_is_recorded_with_its_trigger_principal_inputs_and_steps() {
    let az = Azure::start().await;
    az.admin
        .create_key(
            json!({"name": "recorded", "group_id": az.group, "obj_type": "RSA", "key_size": 2048}),
        )
        .await;
    let runs = az
        .admin
        .ok(Method::GET, "/sys/v1/workflow_runs?workflow=generate", None)
        .await;
    let run = &runs[0];
    assert_eq!(run["status"], "succeeded");
    assert_eq!(run["trigger"], "api");
    assert!(run["principal"].as_str().unwrap().starts_with("user:"));
    assert_eq!(run["group_id"], az.group.as_str());
    assert_eq!(run["inputs"]["key"]["name"], "recorded");
    assert!(run["output"]["kid"].is_string());
    assert!(run["finished_at"].is_string());
    let steps = run["log"].to_string();
    assert!(steps.contains("created key"), "{steps}");
    assert!(steps.contains("recorded virtual key"), "{steps}");
    let one = az
        .admin
        .ok(
            Method::GET,
            &format!("/sys/v1/workflow_runs/{}", run["run_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(one["run_id"], run["run_id"]);
    // And counted in the metrics.
    let (s, metrics) = az.admin.call(Method::GET, "/metrics", None).await;
    assert_eq!(s, 200);
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(
            r#"keyward_workflow_runs_total{workflow="generate",trigger="api",outcome="succeeded"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"keyward_workflow_run_duration_seconds_count{workflow="generate"} 1"#),
        "{metrics}"
    );
    // The run called the connector plugin.
    assert!(
        metrics.contains(r#"keyward_plugin_calls_total{plugin="azure-mhsm",outcome="ok"}"#),
        "{metrics}"
    );

    // Another account's administrator cannot see it; bad ids are clear errors.
    let (s, _) = az
        .admin
        .call(Method::GET, "/sys/v1/workflow_runs/nope", None)
        .await;
    assert_eq!(s, 400);
    let (s, _) = az
        .admin
        .call(
            Method::GET,
            "/sys/v1/workflow_runs/00000000-0000-4000-8000-000000000000",
            None,
        )
        .await;
    assert_eq!(s, 404);
    let (s, _) = az
        .admin
        .call(Method::GET, "/sys/v1/workflows/../secrets", None)
        .await;
    assert_eq!(s, 404);
    az.stop().await;
}

/// The account's own versions of scripts (F30): validated on upload with line and column, kept
/// with author and time, restorable, audited, and confined to their account.
#[tokio::test]
async fn account_scripts_are_validated_versioned_restorable_and_confined_to_their_account() {
    let az = Azure::start().await;
    let put = |name: &str, source: &str| {
        let name = name.to_string();
        let body = json!({"source": source, "comment": "maintenance"});
        let admin = &az.admin;
        async move {
            admin
                .call(
                    Method::PUT,
                    &format!("/sys/v1/workflows/{name}"),
                    Some(body),
                )
                .await
        }
    };
    let (s, v1) = put(
        "test_connection",
        "output.status = \"Not Connected\";\noutput.reason = \"account maintenance\";\n",
    )
    .await;
    assert_eq!(s, 200, "{v1}");
    assert_eq!(v1["version"], 1);
    assert_eq!(v1["uses"], "account");
    assert_eq!(v1["comment"], "maintenance");
    assert!(v1["author"].as_str().unwrap().starts_with("user:"));
    assert!(v1["created_at"].is_string());
    assert_eq!(check(&az).await.1["reason"], "account maintenance");
    let list = az.admin.ok(Method::GET, "/sys/v1/workflows", None).await;
    let tc = list["workflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "test_connection")
        .unwrap()
        .clone();
    assert_eq!(tc["origin"], "account");
    assert_eq!(tc["account_version"], 1);

    // A script that does not compile is refused with where, and the version in use stays.
    let broken = "let a = 1;\noutput.status = ;\n";
    let (s, e) = put("test_connection", broken).await;
    assert_eq!(s, 400, "{e}");
    assert_eq!(e["code"], "InvalidScript");
    assert_eq!(e["field"], "source");
    assert_eq!(e["line"], 2, "{e}");
    assert!(e["column"].as_u64().unwrap() > 1, "{e}");
    assert_eq!(check(&az).await.1["reason"], "account maintenance");
    let checked = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/workflows/test_connection/check",
            Some(json!({"source": broken})),
        )
        .await;
    assert_eq!(checked["valid"], false);
    assert_eq!(checked["problem"]["line"], 2);
    let versions = az
        .admin
        .ok(
            Method::GET,
            "/sys/v1/workflows/test_connection/versions",
            None,
        )
        .await;
    assert_eq!(versions.as_array().unwrap().len(), 1, "{versions}");

    // A second version, then the first restored as a third.
    let (s, _) = put(
        "test_connection",
        "output.status = \"Not Connected\";\noutput.reason = \"second\";\n",
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(check(&az).await.1["reason"], "second");
    let restored = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/workflows/test_connection/versions/1/restore",
            None,
        )
        .await;
    assert_eq!(restored["version"], 3);
    assert_eq!(restored["restored_from"], 1);
    assert_eq!(check(&az).await.1["reason"], "account maintenance");
    let v2 = az
        .admin
        .ok(
            Method::GET,
            "/sys/v1/workflows/test_connection/versions/2",
            None,
        )
        .await;
    assert!(v2["source"].as_str().unwrap().contains("second"));
    let (s, _) = az
        .admin
        .call(
            Method::GET,
            "/sys/v1/workflows/test_connection/versions/9",
            None,
        )
        .await;
    assert_eq!(s, 404);

    // Only account administrators edit or run scripts by hand.
    let (_, api_key) = az.admin.create_app("scripted", &[&az.group]).await;
    let app = az.daemon.login_app(&api_key).await;
    let (s, e) = app
        .call(
            Method::PUT,
            "/sys/v1/workflows/test_connection",
            Some(json!({"source": "output.status = \"x\";"})),
        )
        .await;
    assert_eq!(s, 403, "{e}");
    let (s, _) = app
        .call(Method::POST, "/sys/v1/workflows/sync/run", Some(json!({})))
        .await;
    assert_eq!(s, 403);

    // A script of the account's own reads its keys, by hand.
    let linked = az.group.clone();
    let mine = az
        .admin
        .create_key(json!({"name": "mine", "group_id": linked, "obj_type": "AES", "key_size": 256}))
        .await;
    let (s, _) = put(
        "peek",
        "let k = keys::get(input.kid);\noutput.name = k.name;\n",
    )
    .await;
    assert_eq!(s, 200);
    let run = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/workflows/peek/run",
            Some(json!({"group_id": linked, "input": {"kid": mine["kid"]}})),
        )
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["name"], "mine");
    // Its scripts import the account's own modules.
    assert_eq!(
        put("helper", "fn hi() { \"from the account\" }").await.0,
        200
    );
    assert_eq!(
        put("greet", "import \"helper\" as h;\noutput.said = h::hi();")
            .await
            .0,
        200
    );
    let run = az
        .admin
        .ok(Method::POST, "/sys/v1/workflows/greet/run", Some(json!({})))
        .await;
    assert_eq!(run["output"]["said"], "from the account", "{run}");

    // Account B: same administrator, another account. It runs the daemon's scripts, sees none
    // of A's, and A's script cannot reach B's keys or groups.
    let acct_b = az
        .admin
        .ok(Method::POST, "/sys/v1/accounts", Some(json!({"name": "B"})))
        .await["acct_id"]
        .clone();
    let b = az
        .daemon
        .login(
            keyward_tests::api::ADMIN_EMAIL,
            keyward_tests::api::ADMIN_PASSWORD,
        )
        .await;
    b.ok(
        Method::POST,
        "/sys/v1/session/select_account",
        Some(json!({"acct_id": acct_b})),
    )
    .await;
    let tc_b = b
        .ok(Method::GET, "/sys/v1/workflows/test_connection", None)
        .await;
    assert_eq!(tc_b["origin"], "shipped");
    assert!(
        !tc_b["source"]
            .as_str()
            .unwrap()
            .contains("account maintenance")
    );
    let b_list = b.ok(Method::GET, "/sys/v1/workflows", None).await;
    assert!(
        !b_list["workflows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "peek"),
        "{b_list}"
    );
    assert_eq!(
        b.ok(
            Method::GET,
            "/sys/v1/workflows/test_connection/versions",
            None
        )
        .await,
        json!([])
    );
    let (s, _) = b
        .call(Method::POST, "/sys/v1/workflows/peek/run", Some(json!({})))
        .await;
    assert_eq!(s, 404);
    let b_group = b.create_group("b-plain", json!({})).await;
    let theirs = b
        .create_key(json!({"name": "b-secret-name", "group_id": b_group, "obj_type": "AES", "key_size": 256}))
        .await;
    let run = az
        .admin
        .ok(
            Method::POST,
            "/sys/v1/workflows/peek/run",
            Some(json!({"group_id": linked, "input": {"kid": theirs["kid"]}})),
        )
        .await;
    assert_eq!(run["status"], "failed", "{run}");
    assert!(
        run["error"].as_str().unwrap().contains("no virtual key"),
        "{run}"
    );
    assert!(!run.to_string().contains("b-secret-name"), "{run}");
    let (s, e) = az
        .admin
        .call(
            Method::POST,
            "/sys/v1/workflows/peek/run",
            Some(json!({"group_id": b_group, "input": {"kid": theirs["kid"]}})),
        )
        .await;
    assert_eq!(s, 404, "{e}");

    // Going back to the daemon's script; the versions stay.
    let reverted = az
        .admin
        .ok(Method::DELETE, "/sys/v1/workflows/test_connection", None)
        .await;
    assert_eq!(reverted["version"], 4);
    assert_eq!(reverted["uses"], "daemon");
    assert_eq!(check(&az).await.1["status"], "Connected");
    let (s, _) = az
        .admin
        .call(Method::DELETE, "/sys/v1/workflows/test_connection", None)
        .await;
    assert_eq!(s, 404);

    // Every change is audited (api_restart: the versions survive a restart).
    let logs = az
        .admin
        .ok(Method::GET, "/sys/v1/logs?size=200", None)
        .await;
    let actions: Vec<String> = keyward_tests::api::log_entries(&logs)
        .iter()
        .filter(|e| e["object_kind"] == "workflow_script" && e["object_id"] == "test_connection")
        .filter_map(|e| e["action"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        actions,
        [
            "workflow_script.revert",
            "workflow_script.restore",
            "workflow_script.put",
            "workflow_script.put"
        ]
    );
    az.stop().await;
}
