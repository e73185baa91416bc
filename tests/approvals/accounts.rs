//! An account's approval policy (DSM's `AccountApprovalPolicy`): group creation and
//! deletion, applications' credentials, the cryptographic policy, notification endpoints and
//! the policy itself need its quorum; a group deletion under both an account and a group
//! policy needs both; requests wait as long as the account says; a policy that allows it
//! lets the requester approve their own.

use keyward::catalog::db;
use keyward_tests::api::Api;
use reqwest::Method;
use serde_json::json;

use super::{decide, needs_approval, request, world};

async fn account_of(admin: &Api) -> String {
    admin.ok(Method::GET, "/sys/v1/accounts", None).await[0]["acct_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn the_account_policy_protects_groups_credentials_policies_endpoints_and_itself() {
    let w = world().await;
    let admin = &w.admin;
    let acct = account_of(admin).await;
    let account_path = format!("/sys/v1/accounts/{acct}");
    let (r1, r2, r3) = (&w.reviewers[0], &w.reviewers[1], &w.reviewers[2]);
    let spare = admin.create_group("spare", json!({})).await;
    let both = admin
        .create_group(
            "both",
            json!({"approval_policy": {"user": r3.0, "protect_permissions": ["DELETE_SOBJECTS"]}}),
        )
        .await;

    // Reviewers must be the account's; the expiry has bounds; nothing changed by a refusal.
    for bad in [
        json!({"approval_policy": {"policy": {"user": "00000000-0000-4000-8000-000000000000"}}}),
        json!({"approval_policy": {"policy": {"quorum": {"n": 3, "members": [{"user": r1.0}]}}}}),
        json!({"approval_policy": {"policy": {"user": r1.0}, "protect_everything": true}}),
        json!({"approval_request_expiry": 10}),
    ] {
        let (s, b) = admin.call(Method::PATCH, &account_path, Some(bad)).await;
        assert_eq!(s, 400, "{b}");
    }
    let a = admin
        .ok(
            Method::PATCH,
            &account_path,
            Some(json!({"approval_request_expiry": 7200, "approval_policy": {
                "policy": {"quorum": {"n": 2, "members": [{"user": r1.0}, {"user": r2.0}, {"user": r3.0}]}},
                "manage_groups": true, "protect_authentication_methods": true,
                "protect_cryptographic_policy": true, "protect_logging_config": true}})),
        )
        .await;
    assert_eq!(a["approval_policy"]["policy"]["quorum"]["n"], 2, "{a}");
    assert_eq!(a["approval_request_expiry"], 7200);

    // Each protected account change, called directly: 403 ApprovalRequired.
    needs_approval(
        admin
            .call(Method::POST, "/sys/v1/groups", Some(json!({"name": "new"})))
            .await,
        "group creation",
    );
    needs_approval(
        admin
            .call(Method::DELETE, &format!("/sys/v1/groups/{spare}"), None)
            .await,
        "group deletion",
    );
    needs_approval(
        admin
            .call(
                Method::POST,
                &format!("/sys/v1/apps/{}/reset_secret", w.app_id),
                None,
            )
            .await,
        "a new API key",
    );
    needs_approval(
        admin
            .call(
                Method::POST,
                "/sys/v1/notification_endpoints",
                Some(json!({"url": "https://siem.example.com/hook"})),
            )
            .await,
        "a notification endpoint",
    );
    for change in [
        json!({"cryptographic_policy": {"aes": {"key_sizes": [256]}}}),
        json!({"approval_policy": "remove"}),
        json!({"approval_request_expiry": 86400}),
    ] {
        needs_approval(
            admin
                .call(Method::PATCH, &account_path, Some(change.clone()))
                .await,
            &change.to_string(),
        );
    }
    needs_approval(
        admin.call(Method::DELETE, &account_path, None).await,
        "account deletion",
    );
    // What the policy does not protect goes on.
    admin
        .ok(
            Method::PATCH,
            &account_path,
            Some(json!({"description": "audited"})),
        )
        .await;
    let spare_path = format!("/sys/v1/groups/{spare}");
    assert_eq!(admin.call(Method::GET, &spare_path, None).await.0, 200);

    // A deletion asked for: the account decides, and waits as long as the account says.
    let id = request(admin, "DELETE", &spare_path, json!(null)).await;
    let r = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/approval_requests/{id}"),
            None,
        )
        .await;
    assert_eq!(r["subjects"], json!([{"account": acct}]), "{r}");
    assert_eq!(r["reviewers"].as_array().unwrap().len(), 3, "{r}");
    let mut c = w.d.state.catalog.conn().await.unwrap();
    let row = db::query("SELECT created_at, expires_at FROM approval_requests WHERE id = ?")
        .bind(&id)
        .fetch_one(&mut c)
        .await
        .unwrap();
    let (created, expires): (i64, i64) = (row.get(0), row.get(1));
    drop(c);
    assert_eq!(expires - created, 7200);
    let (s, b) = decide(&r1.1, &id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("PENDING")), "{b}");
    let (s, b) = decide(&r2.1, &id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("APPROVED")), "{b}");
    assert_eq!(admin.call(Method::GET, &spare_path, None).await.0, 404);

    // A group with a policy of its own under an account policy that protects group deletion:
    // both quorums decide, each with its own reviewers.
    let both_path = format!("/sys/v1/groups/{both}");
    let id = request(admin, "DELETE", &both_path, json!(null)).await;
    let r = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/approval_requests/{id}"),
            None,
        )
        .await;
    assert_eq!(
        r["subjects"],
        json!([{"group": both}, {"account": acct}]),
        "{r}"
    );
    decide(&r1.1, &id, "approve", json!({})).await;
    let (_, b) = decide(&r2.1, &id, "approve", json!({})).await;
    assert_eq!(
        b["status"], "PENDING",
        "the group's own reviewer has not approved: {b}"
    );
    assert_eq!(admin.call(Method::GET, &both_path, None).await.0, 200);
    let (_, b) = decide(&r3.1, &id, "approve", json!({})).await;
    assert_eq!(b["status"], "APPROVED", "{b}");
    assert_eq!(admin.call(Method::GET, &both_path, None).await.0, 404);

    // A new key for the application, approved: the result holds it, for the requester once.
    let id = request(
        admin,
        "POST",
        &format!("/sys/v1/apps/{}/reset_secret", w.app_id),
        json!(null),
    )
    .await;
    decide(&r2.1, &id, "approve", json!({})).await;
    decide(&r3.1, &id, "approve", json!({})).await;
    let result = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(result["status"], 200, "{result}");
    let new_key = result["body"]["api_key"].as_str().unwrap().to_string();
    let (s, _) = w.app.call(Method::GET, "/sys/v1/session/auth", None).await;
    assert_ne!(s, 200, "the old key's session ended");
    w.d.login_app(&new_key).await;

    // The policy removed by its quorum: group creation is free again.
    let id = request(
        admin,
        "PATCH",
        &account_path,
        json!({"approval_policy": "remove"}),
    )
    .await;
    decide(&r1.1, &id, "approve", json!({})).await;
    decide(&r3.1, &id, "approve", json!({})).await;
    let a = admin.ok(Method::GET, &account_path, None).await;
    assert!(a["approval_policy"].is_null(), "{a}");
    admin.create_group("free", json!({})).await;

    // Every step is in the audit log.
    for action in [
        "approval_request.create",
        "approval_request.approve",
        "approval_request.execute",
        "group.delete",
        "account.update",
    ] {
        let logs = admin
            .ok(
                Method::GET,
                &format!("/sys/v1/logs?action={action}&size=100"),
                None,
            )
            .await;
        assert!(
            !keyward_tests::api::log_entries(&logs).is_empty(),
            "no {action} in the log"
        );
    }
}

#[tokio::test]
async fn a_policy_that_allows_it_lets_the_requester_approve_their_own() {
    let w = world().await;
    let admin = &w.admin;
    let acct = account_of(admin).await;
    let users = admin.ok(Method::GET, "/sys/v1/users", None).await;
    let me = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_email"] == keyward_tests::api::ADMIN_EMAIL)
        .unwrap()["user_id"]
        .as_str()
        .unwrap()
        .to_string();

    // Off by default: the sole reviewer of the account's policy cannot approve their own.
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/accounts/{acct}"),
            Some(json!({"approval_policy": {"policy": {"user": me}, "manage_groups": true}})),
        )
        .await;
    let id = request(admin, "POST", "/sys/v1/groups", json!({"name": "mine"})).await;
    let (s, b) = decide(admin, &id, "approve", json!({})).await;
    assert_eq!(s, 403, "{b}");
    let (s, _) = decide(admin, &id, "deny", json!({})).await;
    assert_eq!(s, 403);

    // A group whose policy allows it: the requester's own approval counts.
    let path = format!("/sys/v1/groups/{}", w.group);
    let id = request(
        admin,
        "PATCH",
        &path,
        json!({"approval_policy": {"user": me, "protect_permissions": ["ROTATE_SOBJECTS"],
            "allow_self_approval": true}}),
    )
    .await;
    decide(&w.reviewers[0].1, &id, "approve", json!({})).await;
    decide(&w.reviewers[1].1, &id, "approve", json!({})).await;
    let g = admin.ok(Method::GET, &path, None).await;
    assert_eq!(g["approval_policy"]["allow_self_approval"], true, "{g}");
    needs_approval(
        admin
            .call(
                Method::POST,
                "/crypto/v1/keys/rekey",
                Some(json!({"kid": w.kid})),
            )
            .await,
        "rotation",
    );
    let id = request(
        admin,
        "POST",
        "/crypto/v1/keys/rekey",
        json!({"kid": w.kid}),
    )
    .await;
    let (s, b) = decide(admin, &id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("APPROVED")), "{b}");
    let result = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(result["status"], 201, "{result}");
    assert_ne!(result["body"]["kid"], w.kid.as_str(), "a new key: {result}");
}
