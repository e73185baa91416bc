//! A daemon that stops between approving a request and carrying its operation out leaves it
//! APPROVED without a result: after the grace period the scheduler settles it as FAILED,
//! saying so, and never runs the operation (it may have taken effect before the stop).

use keyward::catalog::db;
use reqwest::Method;
use serde_json::json;

use super::{request, world};

#[tokio::test]
async fn an_approval_whose_operation_never_reported_back_is_settled_failed_not_run_again() {
    let w = world().await;
    let id = request(
        &w.admin,
        "POST",
        "/crypto/v1/keys/rekey",
        json!({"kid": w.kid}),
    )
    .await;
    // What the deciding approval commits before it carries the operation out; then the
    // daemon stops.
    let now = w.d.clock.now();
    let mut c = w.d.state.catalog.conn().await.unwrap();
    db::query("UPDATE approval_requests SET status = 'APPROVED', decided_at = ? WHERE id = ?")
        .bind(now)
        .bind(&id)
        .execute(&mut c)
        .await
        .unwrap();
    drop(c);
    let result = format!("/sys/v1/approval_requests/{id}/result");
    let tick = || async { w.d.state.scheduler.tick().await.unwrap() };

    // Within the grace period the operation may still be running: nothing is settled.
    w.d.clock.advance(600);
    assert_eq!(tick().await.approvals_settled, 0);
    assert_eq!(w.admin.call(Method::POST, &result, None).await.0, 409);

    w.d.clock.advance(3_600);
    assert_eq!(tick().await.approvals_settled, 1);
    assert_eq!(tick().await.approvals_settled, 0, "once");
    let r = w
        .admin
        .ok(
            Method::GET,
            &format!("/sys/v1/approval_requests/{id}"),
            None,
        )
        .await;
    assert_eq!(r["status"], "FAILED", "{r}");
    let answer = w.admin.ok(Method::POST, &result, None).await;
    assert_eq!(answer["status"], 500, "{answer}");
    assert_eq!(answer["body"]["code"], "Interrupted", "{answer}");
    let rotations = w
        .admin
        .ok(Method::GET, "/sys/v1/logs?action=key.rotate&size=10", None)
        .await;
    assert!(
        keyward_tests::api::log_entries(&rotations).is_empty(),
        "never run"
    );
}
