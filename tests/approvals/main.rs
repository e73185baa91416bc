//! Quorum approval (DSM's group and account approval policies and approval requests).
//! `groups`: each protected operation of a group answers 403 `ApprovalRequired`; a request
//! approved by two of three reviewers runs once, as its requester, and its result is read
//! once, by the requester only; denied, expired and withdrawn requests never run; no one
//! approves their own; a requester who lost access gets FAILED; the policy itself changes
//! only with its quorum. `accounts`: the account's policy over group creation and deletion,
//! credentials, the cryptographic policy, notification endpoints and itself. `scripts`: a
//! workflow run that would change a protected key asks for approval instead.

mod accounts;
mod groups;
mod recovery;
mod scripts;

use keyward_tests::api::{Api, TestDaemon};
use reqwest::Method;
use serde_json::{Value, json};

pub(crate) const PW: &str = "a long enough password 9";

pub(crate) struct World {
    pub d: TestDaemon,
    pub admin: Api,
    pub reviewers: Vec<(String, Api)>,
    pub group: String,
    pub kid: String,
    pub app: Api,
    pub app_id: String,
}

pub(crate) async fn user(d: &TestDaemon, admin: &Api, email: &str, group: &str) -> (String, Api) {
    let u = admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(
                json!({"user_email": email, "user_password": PW, "account_role": "member",
                "groups": {group: "administrator"}}),
            ),
        )
        .await;
    (
        u["user_id"].as_str().unwrap().to_string(),
        d.login(email, PW).await,
    )
}

/// A group with an exportable AES key and an application, under a 2-of-3 policy of three
/// reviewers protecting rotation, destruction, export, key operations, deletion and
/// cryptography.
pub(crate) async fn world() -> World {
    let d = TestDaemon::start_with(|c| {
        c.session_lifetime_secs = 400 * 86_400;
        c.scheduler.enabled = false;
        c.cache_ttl_secs = 1;
    })
    .await;
    let admin = d.bootstrap().await;
    let group = admin.create_group("vault", json!({})).await;
    let mut reviewers = vec![];
    for r in ["r1", "r2", "r3"] {
        reviewers.push(user(&d, &admin, &format!("{r}@example.com"), &group).await);
    }
    let key = admin
        .create_key(
            json!({"name": "k", "group_id": group, "obj_type": "AES", "key_size": 256,
            "key_ops": ["ENCRYPT", "DECRYPT", "EXPORT", "APPMANAGEABLE"]}),
        )
        .await;
    let (app_id, api_key) = admin.create_app("payments", &[&group]).await;
    let app = d.login_app(&api_key).await;
    let members: Vec<Value> = reviewers
        .iter()
        .map(|(id, _)| json!({"user": id}))
        .collect();
    let g = admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{group}"),
            Some(json!({"approval_policy": {
                "quorum": {"n": 2, "members": members},
                "protect_permissions": ["ROTATE_SOBJECTS", "DESTROY_SOBJECTS", "EXPORT_SOBJECTS",
                    "UPDATE_KEY_OPS", "DELETE_SOBJECTS", "REVOKE_SOBJECTS"],
                "protect_crypto_operations": true}})),
        )
        .await;
    assert_eq!(g["approval_policy"]["quorum"]["n"], 2, "{g}");
    World {
        kid: key["kid"].as_str().unwrap().to_string(),
        d,
        admin,
        reviewers,
        group,
        app,
        app_id,
    }
}

pub(crate) fn needs_approval((s, b): (u16, Value), what: &str) {
    assert_eq!(s, 403, "{what}: {b}");
    assert_eq!(b["code"], "ApprovalRequired", "{what}: {b}");
    assert_eq!(b["message"], "This operation requires approval", "{what}");
}

pub(crate) async fn request(api: &Api, method: &str, operation: &str, body: Value) -> String {
    let r = api
        .ok(
            Method::POST,
            "/sys/v1/approval_requests",
            Some(
                json!({"method": method, "operation": operation, "body": body,
                "description": "please"}),
            ),
        )
        .await;
    assert_eq!(r["status"], "PENDING", "{r}");
    r["request_id"].as_str().unwrap().to_string()
}

pub(crate) async fn decide(api: &Api, id: &str, how: &str, body: Value) -> (u16, Value) {
    api.call(
        Method::POST,
        &format!("/sys/v1/approval_requests/{id}/{how}"),
        Some(body),
    )
    .await
}

pub(crate) async fn kid_of(admin: &Api, name: &str) -> String {
    let keys = admin
        .ok(Method::GET, &format!("/crypto/v1/keys?name={name}"), None)
        .await;
    keys[0]["kid"].as_str().unwrap().to_string()
}
