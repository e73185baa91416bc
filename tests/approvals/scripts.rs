//! A workflow run that would change a key its group's quorum protects asks for approval as
//! its principal would, says so in its run record, and changes nothing, whichever path
//! started it (a cron job, by hand, a webhook); the next fire finds the request pending and
//! asks nothing new; the change happens once the quorum approves.

use keyward::webhooks::signature::Secret;
use keyward_tests::api::http_client;
use keyward_tests::azure::{Azure, eventually};
use reqwest::Method;
use serde_json::{Value, json};

use super::{decide, user};

/// The account's sync, edited to retire keys by name in the HSM.
const RETIRING_SYNC: &str = r#"
let linked = keys::linked();
for name in linked.keys() {
    if name.starts_with("retire-") {
        let d = hsm::delete_key(name);
        keys::set_remote_state(linked[name].kid, "SoftDeleted", d);
    }
}
"#;

#[tokio::test]
async fn a_sync_that_would_soft_delete_a_protected_key_asks_and_waits_for_approval() {
    let az = Azure::start_with(|c| {
        c.scheduler.enabled = false;
        c.session_lifetime_secs = 30 * 86_400;
    })
    .await;
    let admin = &az.admin;
    let key = admin
        .create_key(
            json!({"name": "retire-me", "group_id": az.group, "obj_type": "EC",
            "elliptic_curve": "NistP256"}),
        )
        .await;
    let kid = key["kid"].as_str().unwrap().to_string();
    let r1 = user(&az.daemon, admin, "r1@example.com", &az.group).await;
    let r2 = user(&az.daemon, admin, "r2@example.com", &az.group).await;
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{}", az.group),
            Some(json!({"approval_policy": {
                "quorum": {"n": 2, "members": [{"user": r1.0}, {"user": r2.0}]},
                "protect_permissions": ["DELETE_SOBJECTS"]}})),
        )
        .await;
    admin
        .ok(
            Method::PUT,
            "/sys/v1/workflows/sync",
            Some(json!({"source": RETIRING_SYNC, "comment": "retire keys"})),
        )
        .await;

    // A cron job fires the sync: the run fails on the protected key and asks for approval.
    let job = admin
        .ok(
            Method::POST,
            "/sys/v1/jobs",
            Some(
                json!({"name": "retire", "workflow": "sync", "group_id": az.group,
                "cron": "*/5 * * * *"}),
            ),
        )
        .await;
    let d = &az.daemon;
    d.clock.advance(600);
    d.state.scheduler.tick().await.unwrap();
    let fires = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/jobs/{}/fires", job["id"].as_str().unwrap()),
            None,
        )
        .await;
    let run_id = fires[0]["run_id"]
        .as_str()
        .expect("the fire's run")
        .to_string();
    let job_run = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/workflow_runs/{run_id}"),
            None,
        )
        .await;
    let mut runs = vec![job_run];

    // By hand, and from a webhook: each asks again, finds the same request pending.
    runs.push(
        admin
            .ok(
                Method::POST,
                "/sys/v1/workflows/sync/run",
                Some(json!({"group_id": az.group})),
            )
            .await,
    );
    let hook = admin
        .ok(
            Method::POST,
            "/sys/v1/webhooks",
            Some(json!({"name": "retire", "workflow": "sync", "group_id": az.group})),
        )
        .await;
    let secret = Secret::parse(hook["secret"].as_str().unwrap()).unwrap();
    let now = d.clock.now();
    let body = b"{}";
    let delivered = http_client()
        .post(format!("{}{}", d.url, hook["path"].as_str().unwrap()))
        .header("content-type", "application/json")
        .header("webhook-id", "msg_retire")
        .header("webhook-timestamp", now.to_string())
        .header("webhook-signature", secret.sign("msg_retire", now, body))
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(delivered.status().as_u16(), 202);
    let hook_run: Value = delivered.json().await.unwrap();
    let hook_run_path = format!(
        "/sys/v1/workflow_runs/{}",
        hook_run["run_id"].as_str().unwrap()
    );
    runs.push(
        eventually(30, || async {
            let r = admin.ok(Method::GET, &hook_run_path, None).await;
            (r["status"] != "running").then_some(r)
        })
        .await,
    );
    for run in &runs {
        assert_eq!(run["status"], "failed", "{run}");
        assert!(
            run["error"].as_str().unwrap().contains("requires approval"),
            "{run}"
        );
        assert!(
            run["log"].to_string().contains("approval request"),
            "the run record says so: {run}"
        );
    }
    assert!(az.remote("retire-me").await.is_some(), "still live");
    let pending = admin
        .ok(
            Method::GET,
            "/sys/v1/approval_requests?status=PENDING",
            None,
        )
        .await;
    let pending = pending.as_array().unwrap();
    assert_eq!(pending.len(), 1, "asked once: {pending:?}");
    let r = &pending[0];
    assert_eq!(
        r["operation"],
        format!("/crypto/v1/keys/{kid}/schedule_deletion"),
        "{r}"
    );
    assert!(
        r["requester"]["user"].is_string(),
        "as the run's principal: {r}"
    );
    let id = r["request_id"].as_str().unwrap();
    for run in &runs {
        assert!(run["log"].to_string().contains(id), "{run}");
    }
    let logs = admin
        .ok(
            Method::GET,
            "/sys/v1/logs?action=hsm.delete_key&size=10",
            None,
        )
        .await;
    assert!(
        keyward_tests::api::log_entries(&logs).is_empty(),
        "no deletion reached the HSM"
    );

    // Approved: the key is soft-deleted, once, by the built-in flow, as the principal.
    decide(&r1.1, id, "approve", json!({})).await;
    let (s, b) = decide(&r2.1, id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("APPROVED")), "{b}");
    assert!(az.remote("retire-me").await.is_none(), "soft-deleted");
    let k = admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{kid}"), None)
        .await;
    assert_eq!(k["external"]["state"], "SoftDeleted", "{k}");
}
