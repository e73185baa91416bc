//! Quorum approval in the browser: a group's approval policy set as a form, a protected
//! rotation asked for through the API, the reviewer's badge and queue, approval, and the
//! requester reading the result once; the account's approval policy set as a form.

use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, TestDaemon};
use reqwest::Method;
use serde_json::json;

use crate::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_is_set_and_a_request_approved_in_the_browser() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let group = admin.create_group("Treasury", json!({})).await;
    let pw = "a long enough password 8";
    let reviewer = admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(json!({"user_email": "reviewer@example.com", "user_password": pw, "account_role": "member"})),
        )
        .await;
    let reviewer_id = reviewer["user_id"].as_str().unwrap().to_string();
    let key = admin
        .create_key(
            json!({"name": "treasury", "group_id": group, "obj_type": "AES", "key_size": 256}),
        )
        .await;
    let kid = key["kid"].as_str().unwrap().to_string();

    // The administrator sets the policy in the form: the reviewer, one approval, rotation.
    let b = Browser::start(&d.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.goto(&format!("/console/groups/{group}?tab=policies"))
        .await;
    b.click("approval-policy-link").await;
    b.tick_value("reviewer", &reviewer_id, true).await;
    b.tick("policy-ROTATE_SOBJECTS", true).await;
    b.click("save-approval-policy").await;
    b.wait_text("notice", "Approval policy saved").await;
    let g = admin
        .ok(Method::GET, &format!("/sys/v1/groups/{group}"), None)
        .await;
    assert_eq!(
        g["approval_policy"]["quorum"]["members"],
        json!([{"user": reviewer_id}]),
        "{g}"
    );
    assert_eq!(
        g["approval_policy"]["protect_permissions"],
        json!(["ROTATE_SOBJECTS"])
    );
    // Changing it now needs the quorum: the form says so.
    b.tick("policy-remove", true).await;
    b.click("save-approval-policy").await;
    b.wait_text("error", "requires approval").await;

    // A rotation asked for; the reviewer sees a badge and approves in the queue.
    let (s, _) = admin
        .call(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"kid": kid})),
        )
        .await;
    assert_eq!(s, 403);
    let asked = admin
        .ok(
            Method::POST,
            "/sys/v1/approval_requests",
            Some(
                json!({"method": "POST", "operation": "/crypto/v1/keys/rekey",
                "body": {"kid": kid}, "description": "quarterly"}),
            ),
        )
        .await;
    let id = asked["request_id"].as_str().unwrap().to_string();
    let r = Browser::start(&d.url).await;
    r.login("reviewer@example.com", pw).await;
    assert_eq!(r.text("approvals-badge").await, "1");
    r.click("nav-approvals").await;
    r.wait_text("approvals-table", "quarterly").await;
    r.shot("approvals-queue").await;
    r.click("approval-approve").await;
    r.wait_text("notice", "APPROVED").await;
    assert!(r.all("approvals-badge").await.is_empty(), "nothing waits");

    // The requester reads the result once in the console.
    b.goto("/console/approvals").await;
    b.wait_text("approval-status", "APPROVED").await;
    b.click("approval-result").await;
    b.wait_text("notice", "answered 201").await;
    assert!(b.text("approval-result").await.contains("\"kid\""));
    let (s, _) = admin
        .call(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(s, 409, "read once");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_account_policy_is_set_in_the_browser_and_then_guards_group_creation() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let reviewer = admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(json!({"user_email": "auditor@example.com", "user_password": "a long enough password 8",
                "account_role": "member"})),
        )
        .await;
    let reviewer_id = reviewer["user_id"].as_str().unwrap().to_string();
    let b = Browser::start(&d.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    b.goto("/console/accounts").await;
    b.click("account-approval-policy").await;
    b.tick_value("reviewer", &reviewer_id, true).await;
    b.tick("policy-manage_groups", true).await;
    b.tick("policy-protect_logging_config", true).await;
    b.set_value("policy-expiry", "48").await;
    b.shot("account-approval-policy").await;
    b.click("save-account-policy").await;
    b.wait_text("notice", "Approval policy saved").await;
    let a = admin.ok(Method::GET, "/sys/v1/accounts", None).await;
    let a = &a[0];
    assert_eq!(
        a["approval_policy"]["policy"]["quorum"]["members"],
        json!([{"user": reviewer_id}]),
        "{a}"
    );
    assert_eq!(a["approval_policy"]["manage_groups"], true);
    assert_eq!(a["approval_policy"]["protect_logging_config"], true);
    assert_eq!(a["approval_policy"]["protect_cryptographic_policy"], false);
    assert_eq!(a["approval_request_expiry"], 48 * 3600);

    // Group creation in the console now answers that it needs approval; nothing is created.
    b.goto("/console/groups/new").await;
    b.fill("group-name", "Unapproved").await;
    b.click("save-group").await;
    b.wait_text("error", "requires approval").await;
    let groups = admin.ok(Method::GET, "/sys/v1/groups", None).await;
    assert!(!groups.to_string().contains("Unapproved"), "{groups}");
    // And the policy form says a policy is in force; removing it needs the quorum.
    b.goto("/console/account/approval_policy").await;
    b.wait_text("policy-in-force", "in force").await;
    b.tick("policy-remove", true).await;
    b.click("save-account-policy").await;
    b.wait_text("error", "requires approval").await;
    d.stop().await;
}
