//! Quorum approval through the CLI: a policy set on a group, a rotation refused and asked
//! for, approved by the reviewer, and its result read by the requester; the account's
//! policy set, shown, guarding group creation, and removed with its quorum.

use super::support::{Demo, kid};

#[test]
fn a_protected_rotation_is_asked_for_approved_and_read_through_the_cli() {
    let d = Demo::start();
    d.login_admin();
    let group = d.detail("local_group_id");
    let invited = d.run(
        &[
            "users",
            "invite",
            "--email",
            "reviewer@example.com",
            "--role",
            "member",
            "--password-stdin",
            "-o",
            "json",
        ],
        Some("a long enough password 7"),
    );
    assert_eq!(invited.code, 0, "{}", invited.stderr);
    let reviewer_id = invited.json()["user_id"].as_str().unwrap().to_string();
    let login = d.run(
        &[
            "login",
            "--addr",
            &d.api,
            "--email",
            "reviewer@example.com",
            "--password-stdin",
            "--profile",
            "reviewer",
        ],
        Some("a long enough password 7"),
    );
    assert_eq!(login.code, 0, "{}", login.stderr);
    let key = d.ok(&[
        "keys", "generate", "--name", "guarded", "--type", "AES", "--size", "256", "--group",
        &group,
    ]);
    let k = kid(&key);
    let g = d.ok(&[
        "groups",
        "set-approval-policy",
        &group,
        "--n",
        "1",
        "--user",
        &reviewer_id,
        "--protect",
        "ROTATE_SOBJECTS",
    ]);
    assert_eq!(
        g["approval_policy"]["protect_permissions"][0],
        "ROTATE_SOBJECTS"
    );

    // Refused with the code, then asked for.
    let refused = d.run(&["keys", "rotate", &k, "-o", "json"], None);
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert_eq!(refused.error()["error"]["code"], "ApprovalRequired");
    let body = format!("{{\"kid\": \"{k}\"}}");
    let asked = d.ok(&[
        "approvals",
        "request",
        "--method",
        "POST",
        "--operation",
        "/crypto/v1/keys/rekey",
        "--body",
        &body,
        "--description",
        "rotate the guarded key",
    ]);
    let id = asked["request_id"].as_str().unwrap().to_string();
    let queue = d.ok_as("reviewer", &["approvals", "list", "--status", "PENDING"]);
    assert!(
        queue
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["request_id"] == id.as_str()),
        "{queue}"
    );
    let approved = d.ok_as("reviewer", &["approvals", "approve", &id]);
    assert_eq!(approved["status"], "APPROVED", "{approved}");
    let result = d.ok(&["approvals", "result", &id]);
    assert_eq!(result["status"], 201, "{result}");
    assert_ne!(result["body"]["kid"], k.as_str(), "a new key version");

    // The account's policy: group creation now needs the reviewer's approval.
    let set = d.ok(&[
        "policies",
        "set-approval",
        "--n",
        "1",
        "--user",
        &reviewer_id,
        "--manage-groups",
        "--expiry-hours",
        "48",
    ]);
    assert_eq!(set["approval_policy"]["manage_groups"], true, "{set}");
    assert_eq!(set["approval_request_expiry"], 48 * 3600);
    let shown = d.ok(&["policies", "show"]);
    assert_eq!(
        shown["approval_policy"]["policy"]["quorum"]["members"][0]["user"],
        reviewer_id.as_str()
    );
    let refused = d.run(&["groups", "create", "--name", "later", "-o", "json"], None);
    assert_eq!(refused.code, 2, "{}", refused.stdout);
    assert_eq!(refused.error()["error"]["code"], "ApprovalRequired");
    let removal = d.run(
        &["policies", "set-approval", "--remove", "-o", "json"],
        None,
    );
    assert_eq!(removal.error()["error"]["code"], "ApprovalRequired");
    let asked = d.ok(&[
        "approvals",
        "request",
        "--method",
        "PATCH",
        "--operation",
        &format!("/sys/v1/accounts/{}", shown["acct_id"].as_str().unwrap()),
        "--body",
        "{\"approval_policy\": \"remove\"}",
    ]);
    let id = asked["request_id"].as_str().unwrap().to_string();
    let approved = d.ok_as("reviewer", &["approvals", "approve", &id]);
    assert_eq!(approved["status"], "APPROVED", "{approved}");
    d.ok(&["groups", "create", "--name", "later"]);
}
