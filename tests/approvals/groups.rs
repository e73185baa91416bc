//! A group's approval policy over its keys' protected operations.

use keyward_tests::api::{TestDaemon, b64};
use reqwest::Method;
use serde_json::{Value, json};

use super::{PW, decide, kid_of, needs_approval, request, user, world};

#[tokio::test]
async fn protected_operations_need_a_quorum_and_run_once_as_the_requester() {
    let w = world().await;
    let (admin, app, kid) = (&w.admin, &w.app, w.kid.as_str());
    let encrypt = json!({"alg": "AES", "mode": "GCM", "plain": b64(b"payroll")});

    // Every protected operation, called directly, answers 403 ApprovalRequired.
    needs_approval(
        admin
            .call(
                Method::POST,
                "/crypto/v1/keys/rekey",
                Some(json!({"name": "k"})),
            )
            .await,
        "rotate",
    );
    needs_approval(
        admin
            .call(
                Method::POST,
                &format!("/crypto/v1/keys/{kid}/destroy"),
                None,
            )
            .await,
        "destroy",
    );
    needs_approval(
        app.call(
            Method::POST,
            "/crypto/v1/keys/export",
            Some(json!({"kid": kid})),
        )
        .await,
        "export",
    );
    needs_approval(
        admin
            .call(
                Method::PATCH,
                &format!("/crypto/v1/keys/{kid}"),
                Some(json!({"key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]})),
            )
            .await,
        "key operations",
    );
    needs_approval(
        app.call(
            Method::POST,
            &format!("/crypto/v1/keys/{kid}/encrypt"),
            Some(encrypt.clone()),
        )
        .await,
        "encrypt",
    );
    needs_approval(
        admin
            .call(
                Method::PATCH,
                &format!("/sys/v1/groups/{}", w.group),
                Some(json!({"description": "changed"})),
            )
            .await,
        "group update",
    );
    assert_eq!(kid_of(admin, "k").await, kid, "nothing rotated");

    // The administrator asks for the rotation; the three reviewers see it.
    let id = request(admin, "POST", "/crypto/v1/keys/rekey", json!({"name": "k"})).await;
    for (_, r) in &w.reviewers {
        let pending = r
            .ok(
                Method::GET,
                "/sys/v1/approval_requests?status=PENDING",
                None,
            )
            .await;
        assert!(
            pending
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["request_id"] == id.as_str()),
            "{pending}"
        );
    }
    // No one approves their own request; one approval of two is not enough, nor is the
    // same reviewer twice.
    let (s, b) = decide(admin, &id, "approve", json!({})).await;
    assert_eq!(s, 403, "{b}");
    let r1 = &w.reviewers[0].1;
    for _ in 0..2 {
        let (s, b) = decide(r1, &id, "approve", json!({})).await;
        assert_eq!((s, b["status"].as_str()), (200, Some("PENDING")), "{b}");
    }
    assert_eq!(kid_of(admin, "k").await, kid, "not yet");
    let (s, b) = admin
        .call(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(s, 409, "no result yet: {b}");
    // Two more reviewers approve at once: the rotation runs once.
    let (a, b) = tokio::join!(
        decide(&w.reviewers[1].1, &id, "approve", json!({})),
        decide(&w.reviewers[2].1, &id, "approve", json!({}))
    );
    assert!(a.0 == 200 || b.0 == 200, "{a:?} {b:?}");
    let done = admin
        .ok(
            Method::GET,
            &format!("/sys/v1/approval_requests/{id}"),
            None,
        )
        .await;
    assert_eq!(done["status"], "APPROVED", "{done}");
    let rotated = kid_of(admin, "k").await;
    assert_ne!(rotated, kid, "rotated");
    w.d.state.audit.flush().await;
    let runs = admin
        .ok(
            Method::GET,
            "/sys/v1/logs?action=approval_request.execute&size=100",
            None,
        )
        .await;
    assert_eq!(keyward_tests::api::log_entries(&runs).len(), 1, "ran once");
    let rotations = admin
        .ok(Method::GET, "/sys/v1/logs?action=key.rotate&size=100", None)
        .await;
    let rotations = keyward_tests::api::log_entries(&rotations);
    assert_eq!(rotations.len(), 1, "{rotations:?}");
    let users = admin.ok(Method::GET, "/sys/v1/users", None).await;
    let admin_id = users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_email"] == keyward_tests::api::ADMIN_EMAIL)
        .unwrap()["user_id"]
        .clone();
    assert_eq!(rotations[0]["actor_id"], admin_id, "as the requester");
    // The result: the requester's, once.
    let (s, _) = w.reviewers[0]
        .1
        .call(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let result = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(result["status"], 201, "{result}");
    assert_eq!(result["body"]["kid"], rotated.as_str(), "{result}");
    let (s, _) = admin
        .call(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(s, 409, "read once");
    let (s, _) = decide(&w.reviewers[2].1, &id, "approve", json!({})).await;
    assert_eq!(s, 409, "decided");

    // The application's encryption, approved: its result carries the ciphertext.
    let enc = request(
        app,
        "POST",
        &format!("/crypto/v1/keys/{rotated}/encrypt"),
        encrypt.clone(),
    )
    .await;
    decide(r1, &enc, "approve", json!({})).await;
    decide(&w.reviewers[1].1, &enc, "approve", json!({})).await;
    let result = app
        .ok(
            Method::POST,
            &format!("/sys/v1/approval_requests/{enc}/result"),
            None,
        )
        .await;
    assert_eq!(result["status"], 200, "{result}");
    assert!(result["body"]["cipher"].is_string(), "{result}");
    w.d.stop().await;
}

#[tokio::test]
async fn denied_expired_withdrawn_and_orphaned_requests_never_run() {
    let w = world().await;
    let (admin, app, kid) = (&w.admin, &w.app, w.kid.as_str());
    let (r1, r2) = (&w.reviewers[0].1, &w.reviewers[1].1);
    let ops = |k: &str| format!("/crypto/v1/keys/{k}");

    // Denied, with a reason: approvals after it do nothing.
    let id = request(
        admin,
        "PATCH",
        &ops(kid),
        json!({"key_ops": ["ENCRYPT", "DECRYPT"]}),
    )
    .await;
    let (s, b) = decide(r1, &id, "deny", json!({"reason": "no"})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("DENIED")), "{b}");
    assert_eq!(b["denial_reason"], "no");
    assert_eq!(decide(r2, &id, "approve", json!({})).await.0, 409);
    let (s, _) = admin
        .call(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert_eq!(s, 409);

    // Withdrawn by its requester (and by no one else): gone.
    let id = request(admin, "POST", "/crypto/v1/keys/rekey", json!({"name": "k"})).await;
    let (s, _) = r1
        .call(
            Method::DELETE,
            &format!("/sys/v1/approval_requests/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = admin
        .call(
            Method::DELETE,
            &format!("/sys/v1/approval_requests/{id}"),
            None,
        )
        .await;
    assert_eq!(s, 204);
    assert_eq!(decide(r1, &id, "approve", json!({})).await.0, 404);

    // Expired after 30 days.
    let id = request(admin, "POST", "/crypto/v1/keys/rekey", json!({"name": "k"})).await;
    w.d.clock.advance(31 * 86_400);
    let (s, b) = decide(r1, &id, "approve", json!({})).await;
    assert_eq!(s, 409, "{b}");
    assert!(b["message"].as_str().unwrap().contains("expired"), "{b}");

    // The application loses the group between its request and the quorum: FAILED, with the
    // refusal as its result, and nothing exported.
    let id = request(app, "POST", "/crypto/v1/keys/export", json!({"kid": kid})).await;
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/apps/{}", w.app_id),
            Some(json!({"del_groups": [w.group]})),
        )
        .await;
    decide(r1, &id, "approve", json!({})).await;
    let (s, b) = decide(r2, &id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("FAILED")), "{b}");
    let result = app
        .ok(
            Method::POST,
            &format!("/sys/v1/approval_requests/{id}/result"),
            None,
        )
        .await;
    assert!(result["status"].as_u64().unwrap() >= 400, "{result}");
    assert!(
        result["body"].get("value").is_none(),
        "no material: {result}"
    );

    // Nothing of it changed the key.
    let k = admin.ok(Method::GET, &ops(kid), None).await;
    assert_eq!(
        k["key_ops"],
        json!(["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]),
        "{k}"
    );
    assert_eq!(kid_of(admin, "k").await, kid);
    w.d.stop().await;
}

#[tokio::test]
async fn the_policy_changes_only_with_its_quorum_and_names_real_reviewers() {
    let w = world().await;
    let admin = &w.admin;
    let path = format!("/sys/v1/groups/{}", w.group);
    needs_approval(
        admin
            .call(
                Method::PATCH,
                &path,
                Some(json!({"approval_policy": "remove"})),
            )
            .await,
        "removing the policy",
    );
    needs_approval(
        admin.call(Method::DELETE, &path, None).await,
        "deleting the group",
    );
    let id = request(admin, "PATCH", &path, json!({"approval_policy": "remove"})).await;
    decide(&w.reviewers[0].1, &id, "approve", json!({})).await;
    let (s, b) = decide(&w.reviewers[2].1, &id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("APPROVED")), "{b}");
    let g = admin.ok(Method::GET, &path, None).await;
    assert!(g["approval_policy"].is_null(), "{g}");
    // Without a policy, the key rotates directly, and a request is refused as needless.
    admin
        .ok(
            Method::POST,
            "/crypto/v1/keys/rekey",
            Some(json!({"name": "k"})),
        )
        .await;
    let (s, b) = admin
        .call(
            Method::POST,
            "/sys/v1/approval_requests",
            Some(json!({"method": "POST", "operation": "/crypto/v1/keys/rekey", "body": {"name": "k"}})),
        )
        .await;
    assert_eq!((s, b["field"].as_str()), (400, Some("operation")), "{b}");

    // A policy names users and applications of the account, in a well-formed quorum.
    for bad in [
        json!({"quorum": {"n": 3, "members": [{"user": w.reviewers[0].0}, {"user": w.reviewers[1].0}]}}),
        json!({"quorum": {"n": 1, "members": []}}),
        json!({"user": "00000000-0000-4000-8000-000000000000"}),
        json!({"quorum": {"n": 1, "members": [{"group": w.group}]}}),
    ] {
        let (s, b) = admin
            .call(Method::PATCH, &path, Some(json!({"approval_policy": bad})))
            .await;
        assert_eq!(s, 400, "{bad}: {b}");
    }
    w.d.stop().await;
}

#[tokio::test]
async fn a_scheduled_rotation_of_a_protected_key_asks_and_rotates_once_approved() {
    let w = world().await;
    let admin = &w.admin;
    // The daily policy was set before the group's approval policy: setting it needs none.
    let daily = admin
        .create_key(
            json!({"name": "daily", "group_id": w.group, "obj_type": "AES", "key_size": 256,
            "rotation_policy": {"interval_days": 1}}),
        )
        .await;
    let kid = daily["kid"].as_str().unwrap();
    w.d.clock.advance(86_400 + 60);
    w.d.state.scheduler.tick().await.unwrap();
    assert_eq!(
        kid_of(admin, "daily").await,
        kid,
        "not rotated without approval"
    );
    let pending = w.reviewers[0]
        .1
        .ok(
            Method::GET,
            "/sys/v1/approval_requests?status=PENDING",
            None,
        )
        .await;
    let asked: Vec<&Value> = pending
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "/crypto/v1/keys/rekey" && r["body"]["kid"] == kid)
        .collect();
    assert_eq!(asked.len(), 1, "{pending}");
    let id = asked[0]["request_id"].as_str().unwrap().to_string();
    // The next fire does not ask again while the request waits.
    w.d.clock.advance(86_400);
    w.d.state.scheduler.tick().await.unwrap();
    let again = w.reviewers[0]
        .1
        .ok(
            Method::GET,
            "/sys/v1/approval_requests?status=PENDING",
            None,
        )
        .await;
    assert_eq!(
        again
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["body"]["kid"] == kid)
            .count(),
        1
    );
    decide(&w.reviewers[0].1, &id, "approve", json!({})).await;
    let (s, b) = decide(&w.reviewers[1].1, &id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("APPROVED")), "{b}");
    assert_ne!(kid_of(admin, "daily").await, kid, "rotated once approved");
    w.d.stop().await;
}

#[tokio::test]
async fn reviewers_give_their_password_applications_review_and_endpoints_are_told() {
    let d = TestDaemon::start_with(|c| {
        c.notify.enabled = false;
        c.notify.allowed_hosts =
            vec![keyward::plugins::HostPattern::parse("http://127.0.0.1:*").unwrap()];
    })
    .await;
    let admin = d.bootstrap().await;
    let group = admin.create_group("ledger", json!({})).await;
    let (r1_id, r1) = user(&d, &admin, "r1@example.com", &group).await;
    let (app_id, api_key) = admin.create_app("approver", &[&group]).await;
    let app = d.login_app(&api_key).await;
    admin
        .create_key(json!({"name": "k", "group_id": group, "obj_type": "AES", "key_size": 256}))
        .await;
    let endpoint = admin
        .ok(
            Method::POST,
            "/sys/v1/notification_endpoints",
            Some(json!({"url": "http://127.0.0.1:9/hook",
                "events": ["approval.requested", "approval.decided"]})),
        )
        .await;
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{group}"),
            Some(json!({"approval_policy": {
                "quorum": {"n": 2, "members": [{"user": r1_id}, {"app": app_id}], "require_password": true},
                "protect_permissions": ["ROTATE_SOBJECTS"]}})),
        )
        .await;
    let id = request(
        &admin,
        "POST",
        "/crypto/v1/keys/rekey",
        json!({"name": "k"}),
    )
    .await;

    // A user reviewer gives their password again; the application reviews without one.
    let (s, b) = decide(&r1, &id, "approve", json!({})).await;
    assert_eq!((s, b["field"].as_str()), (400, Some("password")), "{b}");
    let (s, _) = decide(&r1, &id, "approve", json!({"password": "not it at all"})).await;
    assert_eq!(s, 403);
    let (s, b) = decide(&r1, &id, "approve", json!({"password": PW})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("PENDING")), "{b}");
    let (s, b) = decide(&app, &id, "approve", json!({})).await;
    assert_eq!((s, b["status"].as_str()), (200, Some("APPROVED")), "{b}");
    let approvers = b["approvers"].as_array().unwrap();
    assert_eq!(approvers.len(), 2, "{b}");
    assert!(
        approvers.contains(&json!({"user": r1_id})) && approvers.contains(&json!({"app": app_id}))
    );

    // The endpoint was told of the request and of the decision.
    let messages = admin
        .ok(
            Method::GET,
            &format!(
                "/sys/v1/notification_endpoints/{}/messages",
                endpoint["id"].as_str().unwrap()
            ),
            None,
        )
        .await;
    let mut types: Vec<&str> = messages
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["event_type"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["approval.decided", "approval.requested"]);
    d.stop().await;
}
