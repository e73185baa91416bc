//! A workflow run that would change a key its group's quorum protects asks for approval as
//! its principal would, says so in its run record, and changes nothing; the next fire finds
//! the request pending and asks nothing new; the change happens once the quorum approves.

use keyward_tests::azure::Azure;
use reqwest::Method;
use serde_json::json;

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
    let az = Azure::start().await;
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

    // Two syncs: each fails on the protected key, leaves it live, and points at one request.
    for _ in 0..2 {
        let run = admin
            .ok(
                Method::POST,
                "/sys/v1/workflows/sync/run",
                Some(json!({"group_id": az.group})),
            )
            .await;
        assert_eq!(run["status"], "failed", "{run}");
        assert!(
            run["error"].as_str().unwrap().contains("requires approval"),
            "{run}"
        );
        assert!(
            run["log"].to_string().contains("approval request"),
            "the run record says so: {run}"
        );
        assert!(az.remote("retire-me").await.is_some(), "still live");
    }
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
