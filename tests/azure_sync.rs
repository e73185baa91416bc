//! Sync (F13) against the emulator: only new keys are added, each with an escrowed backup;
//! throttling and server errors are ridden out; tokens are reused; a second sync of the same
//! group never runs alongside the first; keys soft-deleted or purged in Azure are marked.

use keyward_emulator::FaultConfig;
use keyward_tests::azure::{Azure, HSM, eventually, settle};
use reqwest::Method;
use serde_json::json;

async fn virtual_keys(az: &Azure) -> i64 {
    az.count(
        "SELECT COUNT(*) FROM sobjects WHERE group_id = ? AND external IS NOT NULL",
        &az.group,
    )
    .await
}

async fn escrows(az: &Azure) -> i64 {
    az.count(
        "SELECT COUNT(*) FROM escrow_blobs e JOIN sobjects s ON s.kid = e.kid WHERE s.group_id = ?",
        &az.group,
    )
    .await
}

#[tokio::test]
async fn syncing_300_keys_through_throttling_and_errors_adds_each_once() {
    let az = Azure::start().await;
    settle(&az.admin).await;
    az.seed(HSM, json!({"count": 300, "prefix": "bulk"})).await;
    let before = az.em.counts();
    // Faults on the keys data plane only, so that the token count below measures token reuse
    // rather than retried token requests.
    az.faults(FaultConfig {
        throttle_rate: 0.10,
        retry_after_secs: 1,
        error_rate: 0.05,
        error_statuses: vec![503],
        targets: vec![keyward_emulator::faults::Target::Data],
        seed: Some(7),
        ..Default::default()
    });

    let added = az.sync().await;
    assert_eq!(added.len(), 300);
    assert_eq!(virtual_keys(&az).await, 300);
    assert_eq!(escrows(&az).await, 300);
    let k = added.iter().find(|k| k["name"] == "bulk-00042").unwrap();
    assert_eq!(k["external"]["source"], "External");
    assert_eq!(k["obj_type"], "AES");

    let after = az.em.counts();
    let delta =
        |op: &str| after.get(op).copied().unwrap_or(0) - before.get(op).copied().unwrap_or(0);
    // Faults were injected and ridden out.
    assert!(delta("keys.get") > 300, "some requests were retried");
    assert!(delta("keys.backup") >= 300);
    // Tokens: one per warm connector instance at most, not one per call.
    let data = delta("keys.get") + delta("keys.backup") + delta("keys.list");
    let tokens = delta("aad.token");
    assert!(
        tokens <= 40 && tokens * 10 < data,
        "{tokens} tokens for {data} calls"
    );

    // A second sync adds nothing.
    az.faults(FaultConfig::default());
    assert!(az.sync().await.is_empty());
    assert_eq!(virtual_keys(&az).await, 300);
    assert_eq!(escrows(&az).await, 300);
    az.stop().await;
}

#[tokio::test]
async fn a_second_sync_of_a_group_is_refused_while_one_runs_and_progress_shows() {
    let az = Azure::start().await;
    settle(&az.admin).await;
    az.seed(HSM, json!({"count": 100, "prefix": "slow"})).await;
    az.faults(FaultConfig {
        latency_ms: 100,
        ..Default::default()
    });
    let path = format!("/sys/v1/groups/{}/hmg/scans", az.group);
    let scan = az.admin.ok(Method::POST, &path, None).await;
    assert_eq!(scan["is_async"], true);
    let id = scan["scan_id"].as_str().unwrap().to_string();

    let (s, body) = az.admin.call(Method::POST, &path, None).await;
    assert_eq!(s, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains(&id));
    let (s, _) = az
        .admin
        .call(
            Method::POST,
            &format!("/sys/v1/groups/{}/hmg/scan", az.group),
            None,
        )
        .await;
    assert_eq!(s, 409);

    // Progress is visible while it runs.
    let running = eventually(30, || async {
        let s = az
            .admin
            .ok(Method::GET, &format!("{path}/{id}"), None)
            .await;
        (s["status"] == "running" && s["progress"]["seen"] == 100).then_some(s)
    })
    .await;
    assert!(running["scan_result"].is_null());
    let done = eventually(60, || async {
        let s = az
            .admin
            .ok(Method::GET, &format!("{path}/{id}"), None)
            .await;
        (s["status"] != "running").then_some(s)
    })
    .await;
    assert_eq!(done["scan_result"]["$type"], "Success", "{done}");
    assert_eq!(done["progress"]["added"], 100);
    // The counters are in the metrics, by workflow (never by group: no account data in
    // labels).
    let metrics = az.daemon.state.metrics.render();
    for counter in ["seen", "added"] {
        let line =
            format!(r#"keyward_workflow_progress{{workflow="sync",counter="{counter}"}} 100"#);
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(!metrics.contains(&az.group));
    assert_eq!(done["added"].as_array().unwrap().len(), 100);
    assert_eq!(virtual_keys(&az).await, 100);

    let list = az.admin.ok(Method::GET, &path, None).await;
    assert_eq!(list[0]["scan_id"], id.as_str());
    // Now another sync may run; it finds nothing new.
    az.faults(FaultConfig::default());
    assert!(az.sync().await.is_empty());
    az.stop().await;
}

#[tokio::test]
async fn sync_marks_keys_soft_deleted_purged_and_back_in_azure() {
    let az = Azure::start().await;
    az.seed(HSM, json!({"count": 3, "prefix": "native"})).await;
    assert_eq!(az.sync().await.len(), 3);
    let link = az.link().await;
    let kms = &az.daemon.state.kms;
    let state_of = |name: &'static str| {
        let admin = az.admin.clone();
        async move {
            let keys = admin
                .ok(Method::GET, &format!("/crypto/v1/keys?name={name}"), None)
                .await;
            keys[0]["external"]["state"].as_str().unwrap().to_string()
        }
    };

    // Deleted outside Keyward: the next sync says so.
    kms.delete_key(&link, "native-00001").await.unwrap();
    kms.delete_key(&link, "native-00002").await.unwrap();
    kms.purge_key(&link, "native-00002").await.unwrap();
    assert!(az.sync().await.is_empty());
    assert_eq!(state_of("native-00001").await, "SoftDeleted");
    assert_eq!(state_of("native-00002").await, "Purged");
    assert_eq!(state_of("native-00003").await, "Active");

    // Recovered outside Keyward: back to Active.
    kms.recover_key(&link, "native-00001").await.unwrap();
    az.sync().await;
    assert_eq!(state_of("native-00001").await, "Active");

    // A purged key's escrow restores it.
    let kid = az
        .admin
        .ok(Method::GET, "/crypto/v1/keys?name=native-00002", None)
        .await[0]["kid"]
        .as_str()
        .unwrap()
        .to_string();
    az.admin
        .ok(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/restore"),
            None,
        )
        .await;
    assert!(az.remote("native-00002").await.is_some());
    assert_eq!(state_of("native-00002").await, "Active");
    az.stop().await;
}
