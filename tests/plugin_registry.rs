//! The plugin directory: drop-in plugins are picked up and used, replaced files take effect
//! without a restart, and anything unusable is reported and skipped (FLOWS F29).

use std::path::Path;
use std::time::Duration;

use keyward::plugins::policy::{Action, Decision};
use keyward::plugins::{PluginError, PluginOrigin, PluginRuntime};
use keyward_tests::{
    CONNECTOR_WORLD, POLICY_WORLD, aes, fixture, install, replace_file, request, runtime,
};

const PREFIX: &str = r#"{"prefix": "team-"}"#;

async fn decide(rt: &PluginRuntime, key_name: &str) -> Result<Decision, PluginError> {
    let mut key = aes(256);
    key.name = key_name.into();
    rt.evaluate_policy("naming", PREFIX, &request(Action::Create, key))
        .await
}

fn problem_for(rt: &PluginRuntime, file: &str) -> String {
    rt.problems()
        .into_iter()
        .find(|p| p.path.file_name().unwrap() == file)
        .unwrap_or_else(|| panic!("no problem reported for {file}: {:?}", rt.problems()))
        .reason
}

#[tokio::test]
async fn a_dropped_in_policy_plugin_is_used() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "naming",
        POLICY_WORLD,
        "fixture_prefix_policy.wasm",
        "",
    );
    let rt = runtime(Some(dir.path())).await;

    let info = rt.plugin_info("naming").expect("the plugin is listed");
    assert!(matches!(info.origin, PluginOrigin::Directory { .. }));
    assert_eq!(info.version, "1.0.0");

    let denied = decide(&rt, "payments-key").await.unwrap();
    assert!(!denied.allow);
    assert_eq!(denied.violations[0].rule, "name-prefix");
    assert_eq!(
        denied.violations[0].message,
        "key names must start with 'team-'"
    );
    assert!(decide(&rt, "team-payments").await.unwrap().allow);

    // The shipped plugins are still there beside it.
    assert!(rt.plugin_info("crypto-policy").is_some());
}

#[tokio::test]
async fn replacing_a_plugin_file_changes_the_decision_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "naming",
        POLICY_WORLD,
        "fixture_prefix_policy.wasm",
        "",
    );
    let rt = runtime(Some(dir.path())).await;
    let before = decide(&rt, "payments-key").await.unwrap();
    assert!(!before.allow, "version 1 denies");
    let digest_before = rt.plugin_info("naming").unwrap().digest;

    replace_file(
        &fixture("fixture_prefix_policy_v2.wasm"),
        &dir.path().join("naming.wasm"),
    );
    rt.rescan().await;

    let after = decide(&rt, "payments-key").await.unwrap();
    assert!(after.allow, "version 2 only warns");
    assert_eq!(after.warnings[0].rule, "name-prefix");
    assert_ne!(rt.plugin_info("naming").unwrap().digest, digest_before);
}

/// The daemon's watcher picks the change up on its own.
#[tokio::test(start_paused = true)]
async fn the_watcher_rescans_the_directory() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "naming",
        POLICY_WORLD,
        "fixture_prefix_policy.wasm",
        "",
    );
    let rt = runtime(Some(dir.path())).await;
    assert!(!decide(&rt, "payments-key").await.unwrap().allow);

    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = rt.watch(Duration::from_secs(2), async {
        stopped.await.ok();
    });
    let mut scans = rt.scans();
    scans.borrow_and_update();

    replace_file(
        &fixture("fixture_prefix_policy_v2.wasm"),
        &dir.path().join("naming.wasm"),
    );
    tokio::time::advance(Duration::from_secs(3)).await;
    scans.changed().await.unwrap();

    assert!(decide(&rt, "payments-key").await.unwrap().allow);
    stop.send(()).unwrap();
    watcher.await.unwrap();
}

#[tokio::test]
async fn unusable_files_are_reported_and_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    install(d, "naming", POLICY_WORLD, "fixture_prefix_policy.wasm", "");
    std::fs::write(d.join("broken.toml"), "name = \"broken\"\nversion = [oops").unwrap();
    std::fs::write(
        d.join("future.toml"),
        "name = \"future\"\nversion = \"1\"\nworld = \"keyward:plugin/policy@9.0.0\"\n",
    )
    .unwrap();
    std::fs::copy(fixture("fixture_prefix_policy.wasm"), d.join("future.wasm")).unwrap();
    std::fs::write(d.join("notes.txt"), "remember to rotate").unwrap();
    std::fs::write(
        d.join("fake.toml"),
        format!("name = \"fake\"\nversion = \"1\"\nworld = \"{POLICY_WORLD}\"\n"),
    )
    .unwrap();
    std::fs::write(d.join("fake.wasm"), "this is not WebAssembly").unwrap();
    std::fs::copy(fixture("fixture_prefix_policy.wasm"), d.join("orphan.wasm")).unwrap();
    install(
        d,
        "mislabelled",
        CONNECTOR_WORLD,
        "fixture_prefix_policy.wasm",
        "",
    );

    let rt = runtime(Some(d)).await;

    assert!(problem_for(&rt, "broken.toml").contains("malformed manifest"));
    assert!(
        problem_for(&rt, "future.toml").contains("unknown world 'keyward:plugin/policy@9.0.0'")
    );
    assert!(problem_for(&rt, "notes.txt").contains("not a plugin file"));
    assert!(problem_for(&rt, "fake.toml").contains("not a WebAssembly file"));
    assert!(problem_for(&rt, "orphan.wasm").contains("component without a manifest"));
    assert!(problem_for(&rt, "mislabelled.toml").contains("kms-connector"));
    assert_eq!(rt.problems().len(), 6, "{:?}", rt.problems());

    // None of them is loaded, and the good plugin next to them works.
    for name in ["broken", "future", "fake", "mislabelled"] {
        assert!(
            rt.plugin_info(name).is_none(),
            "{name} should not be loaded"
        );
    }
    assert!(decide(&rt, "team-a").await.unwrap().allow);
}

#[tokio::test]
async fn a_broken_update_keeps_the_previous_version_serving() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "naming",
        POLICY_WORLD,
        "fixture_prefix_policy.wasm",
        "",
    );
    let rt = runtime(Some(dir.path())).await;

    std::fs::write(dir.path().join("naming.wasm"), b"\0asm garbage").unwrap();
    rt.rescan().await;
    let reason = problem_for(&rt, "naming.toml");
    assert!(
        reason.contains("previously loaded version keeps serving"),
        "{reason}"
    );
    assert!(!decide(&rt, "payments-key").await.unwrap().allow);

    // Fixing the file clears the problem.
    replace_file(
        &fixture("fixture_prefix_policy_v2.wasm"),
        &dir.path().join("naming.wasm"),
    );
    rt.rescan().await;
    assert!(rt.problems().is_empty(), "{:?}", rt.problems());
    assert!(decide(&rt, "payments-key").await.unwrap().allow);
}

#[tokio::test]
async fn a_removed_plugin_is_unloaded_and_a_connector_is_not_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    install(
        dir.path(),
        "naming",
        POLICY_WORLD,
        "fixture_prefix_policy.wasm",
        "",
    );
    install(
        dir.path(),
        "probe",
        CONNECTOR_WORLD,
        "fixture_http_probe.wasm",
        "",
    );
    let rt = runtime(Some(dir.path())).await;

    let err = rt
        .evaluate_policy("probe", "{}", &request(Action::Create, aes(256)))
        .await
        .unwrap_err();
    assert!(matches!(err, PluginError::WrongWorld { .. }), "{err:?}");
    assert!(err.to_string().contains(
        "implements keyward:plugin/kms-connector@0.1.0, not keyward:plugin/policy@0.1.0"
    ));

    remove(dir.path(), "naming");
    rt.rescan().await;
    assert!(matches!(
        decide(&rt, "team-a").await,
        Err(PluginError::NotFound(_))
    ));
}

fn remove(dir: &Path, name: &str) {
    std::fs::remove_file(dir.join(format!("{name}.toml"))).unwrap();
    std::fs::remove_file(dir.join(format!("{name}.wasm"))).unwrap();
}

/// What the daemon loaded and skipped is what `GET /sys/v1/plugins` tells a signed-in user
/// (the CLI's `keyward plugins` and the console ask it), naming skipped files without
/// saying where the daemon keeps them.
#[tokio::test]
async fn the_daemon_tells_its_users_what_it_loaded_and_skipped() {
    let plugins = tempfile::tempdir().unwrap();
    let p = plugins.path();
    install(p, "naming", POLICY_WORLD, "fixture_prefix_policy.wasm", "");
    std::fs::write(p.join("broken.toml"), "name = \"broken\"\nversion = [oops").unwrap();
    let dir = p.to_path_buf();
    let d = keyward_tests::api::TestDaemon::start_with(move |c| c.plugin_dir = Some(dir)).await;
    let (s, _) = d
        .anonymous()
        .call(reqwest::Method::GET, "/sys/v1/plugins", None)
        .await;
    assert_eq!(s, 401, "for signed-in users");
    let admin = d.bootstrap().await;
    let listed = admin
        .ok(reqwest::Method::GET, "/sys/v1/plugins", None)
        .await;
    let loaded = listed["loaded"].as_array().unwrap();
    let naming = loaded.iter().find(|l| l["name"] == "naming").unwrap();
    assert_eq!(naming["origin"], "directory");
    assert_eq!(naming["world"], POLICY_WORLD);
    assert!(
        loaded
            .iter()
            .any(|l| l["origin"] == "shipped" && l["world"] == CONNECTOR_WORLD),
        "{listed}"
    );
    assert_eq!(listed["skipped"][0]["file"], "broken.toml", "{listed}");
    assert!(
        listed["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("malformed manifest")
    );
    assert!(
        !listed.to_string().contains(p.to_str().unwrap()),
        "no server paths: {listed}"
    );
}
