//! The sandbox: a plugin that loops forever, allocates without bound or traps is stopped with
//! an error naming the plugin and the limit, and other calls keep being served.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use keyward::plugins::PluginError;
use keyward::plugins::policy::Action;
use keyward_tests::{POLICY_WORLD, aes, install, request, runtime};

const SPIN: &str = r#"{"behaviour": "spin"}"#;
const HOG: &str = r#"{"behaviour": "hog"}"#;
const TRAP: &str = r#"{"behaviour": "trap"}"#;
const ALLOW: &str = r#"{"behaviour": "allow"}"#;

fn plugin_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    // The same component under two manifests: one limited by time, one by instructions.
    install(
        dir.path(),
        "misbehaving",
        POLICY_WORLD,
        "fixture_misbehaving_policy.wasm",
        "[limits]\ntimeout_ms = 200\nmemory_mb = 32\nfuel = 1_000_000_000_000",
    );
    install(
        dir.path(),
        "misbehaving-fuel",
        POLICY_WORLD,
        "fixture_misbehaving_policy.wasm",
        "[limits]\ntimeout_ms = 60_000\nfuel = 20_000_000",
    );
    dir
}

#[tokio::test]
async fn an_endless_loop_hits_the_deadline() {
    let dir = plugin_dir();
    let rt = runtime(Some(dir.path())).await;
    let err = rt
        .evaluate_policy("misbehaving", SPIN, &request(Action::Create, aes(256)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PluginError::Timeout { ref plugin, limit_ms: 200 } if plugin == "misbehaving"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugin 'misbehaving' exceeded its time limit of 200 ms"
    );
}

#[tokio::test]
async fn an_endless_loop_hits_the_instruction_budget() {
    let dir = plugin_dir();
    let rt = runtime(Some(dir.path())).await;
    let err = rt
        .evaluate_policy("misbehaving-fuel", SPIN, &request(Action::Create, aes(256)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            PluginError::FuelExhausted {
                fuel: 20_000_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains("'misbehaving-fuel' exceeded its instruction budget"),
        "{err}"
    );
}

#[tokio::test]
async fn unbounded_allocation_hits_the_memory_ceiling() {
    let dir = plugin_dir();
    let rt = runtime(Some(dir.path())).await;
    let err = rt
        .evaluate_policy("misbehaving", HOG, &request(Action::Create, aes(256)))
        .await
        .unwrap_err();
    assert!(
        matches!(err, PluginError::MemoryLimit { limit_mb: 32, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "plugin 'misbehaving' exceeded its memory limit of 32 MiB"
    );
}

#[tokio::test]
async fn a_trap_is_reported_with_the_plugins_message() {
    let dir = plugin_dir();
    let rt = runtime(Some(dir.path())).await;
    let err = rt
        .evaluate_policy("misbehaving", TRAP, &request(Action::Create, aes(256)))
        .await
        .unwrap_err();
    match &err {
        PluginError::Trap { plugin, message } => {
            assert_eq!(plugin, "misbehaving");
            assert!(
                message.contains("deliberate failure for the sandbox test"),
                "{message}"
            );
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    // The trapped instance was thrown away: the next call gets a fresh one and the same answer,
    // and the plugin still serves a well-behaved configuration.
    let again = rt
        .evaluate_policy("misbehaving", TRAP, &request(Action::Create, aes(256)))
        .await
        .unwrap_err();
    assert!(matches!(again, PluginError::Trap { .. }), "{again:?}");
    let fine = rt
        .evaluate_policy("misbehaving", ALLOW, &request(Action::Create, aes(256)))
        .await
        .unwrap();
    assert!(fine.allow);
}

/// On a single-threaded executor, a runaway plugin must still yield: the well-behaved calls
/// started after it finish while it is still running.
#[tokio::test(flavor = "current_thread")]
async fn other_calls_are_served_while_a_plugin_runs_away() {
    let dir = plugin_dir();
    let rt = runtime(Some(dir.path())).await;
    // Warm both plugins so the comparison is not about compilation.
    rt.evaluate_policy(
        "crypto-policy",
        r#"{"aes": {}}"#,
        &request(Action::Create, aes(256)),
    )
    .await
    .unwrap();

    let runaway_done = Arc::new(AtomicBool::new(false));
    let runaway = {
        let rt = rt.clone();
        let done = runaway_done.clone();
        tokio::spawn(async move {
            let r = rt
                .evaluate_policy("misbehaving", SPIN, &request(Action::Create, aes(256)))
                .await;
            done.store(true, Ordering::SeqCst);
            r
        })
    };
    let others = {
        let rt = rt.clone();
        let runaway_done = runaway_done.clone();
        tokio::spawn(async move {
            for i in 0..50 {
                let (plugin, config) = if i % 2 == 0 {
                    ("crypto-policy", r#"{"aes": {}}"#)
                } else {
                    ("misbehaving", ALLOW)
                };
                let d = rt
                    .evaluate_policy(plugin, config, &request(Action::Create, aes(256)))
                    .await
                    .unwrap();
                assert!(d.allow);
            }
            runaway_done.load(Ordering::SeqCst)
        })
    };
    let runaway_finished_first = others.await.unwrap();
    assert!(
        !runaway_finished_first,
        "the well-behaved calls should not have waited for the runaway one"
    );
    let err = runaway.await.unwrap().unwrap_err();
    assert!(matches!(err, PluginError::Timeout { .. }), "{err:?}");
}
