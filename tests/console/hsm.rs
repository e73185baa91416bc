//! The HSM flows in the browser: a user links a group to the emulated Managed HSM (a wrong
//! secret first: Not Connected), syncs it with progress, generates and imports keys, copies
//! one into the Azure group, rotates it with its linked copy, soft deletes and recovers the
//! copy, and edits a workflow with a syntax error (shown; the old version still runs),
//! asserting what the pages show. Also: the Content-Security-Policy, the cookie's flags and
//! CSRF refusals, checked on the wire.

use fantoccini::Locator;
use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, TestDaemon};
use keyward_tests::azure::{self, CLIENT, HSM, SECRET, SUBSCRIPTION, TENANT};
use reqwest::Method;
use serde_json::json;

use crate::browser::Browser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_links_syncs_copies_rotates_soft_deletes_and_edits_a_workflow_in_the_browser() {
    let em = azure::emulator().await;
    let d = TestDaemon::start_with(azure::allow_local).await;
    let admin = d.bootstrap().await;
    let plain = admin.create_group("Local keys", json!({})).await;
    let seeded = reqwest::Client::new()
        .post(format!("{}/admin/hsms/{HSM}/seed", em.admin_url))
        .json(&json!({"count": 12, "prefix": "native"}))
        .send()
        .await
        .unwrap();
    assert!(seeded.status().is_success());
    let b = Browser::start(&d.url).await;

    // Log in.
    b.goto("/console").await;
    assert!(b.url().await.ends_with("/console/login"));
    b.shot("login").await;
    b.fill("login-email", ADMIN_EMAIL).await;
    b.fill("login-password", ADMIN_PASSWORD).await;
    b.click("login-submit").await;
    b.el("tile-keys").await;
    b.goto("/console/groups").await;

    // Add a group linked to the emulated HSM: a wrong secret is Not Connected with the reason,
    // the right one Connected and lists the instances.
    b.click("add-group").await;
    b.fill("group-name", "Azure via console").await;
    b.click("link-hsm").await;
    b.fill("tenant-id", TENANT).await;
    b.fill("client-id", CLIENT).await;
    b.fill("client-secret", "not-the-secret").await;
    b.fill("subscription-id", SUBSCRIPTION).await;
    b.client
        .find(Locator::Css("details summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.fill("identity-endpoint", &em.base_url).await;
    b.fill("management-endpoint", &em.base_url).await;
    b.fill("instance-suffix", "localhost").await;
    b.fill("ca-pem", &em.ca_pem).await;
    b.click("test-connection").await;
    let refused = b.wait_text("connection-status", "Not Connected").await;
    assert!(
        refused.len() > "Not Connected: ".len(),
        "a reason is shown: {refused}"
    );
    b.shot("add-group-not-connected").await;
    b.fill("client-secret", SECRET).await;
    b.click("test-connection").await;
    b.wait_text("connection-status", "Connected").await;
    assert!(!b.text("connection-status").await.contains("Not"));
    b.el("instance")
        .await
        .select_by_value(&em.hsm_uri(HSM))
        .await
        .unwrap();
    b.shot("add-group-connected").await;
    b.click("save-group").await;
    b.wait_text("notice", "created").await;
    assert!(b.text("secret-masked").await.contains("never shown"));
    assert!(
        !b.client.source().await.unwrap().contains(SECRET),
        "the secret is not in the page"
    );
    let group = b
        .url()
        .await
        .split("/console/groups/")
        .nth(1)
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_string();

    // Test connection and sync with live progress.
    b.click("test-connection").await;
    b.wait_text("notice", "Connected").await;
    b.click("sync-keys").await;
    let synced = b.wait_text("sync-progress", "Sync succeeded").await;
    assert!(synced.contains("12 added"), "{synced}");
    b.shot("group-hsm-tab").await;
    b.goto("/console/groups").await;
    b.wait_text("groups-table", "Azure via console").await;
    assert!(b.text("groups-table").await.contains("Azure Managed HSM"));
    b.shot("groups").await;

    // Generate a key, and import one from a file.
    b.goto("/console/keys/new").await;
    b.fill("key-name", "console-aes").await;
    b.el("key-group")
        .await
        .select_by_value(&plain)
        .await
        .unwrap();
    b.fill("key-size", "256").await;
    b.click("save-key").await;
    b.wait_text("notice", "created").await;
    assert_eq!(b.text("key-state").await, "Active");
    let source_kid = b.text("kid").await;
    let material = d.data_dir.join("import.key");
    std::fs::write(&material, [9u8; 32]).unwrap();
    b.goto("/console/keys/new").await;
    b.fill("key-name", "console-imported").await;
    b.el("key-group")
        .await
        .select_by_value(&plain)
        .await
        .unwrap();
    b.click("source-import").await;
    b.el("key-file")
        .await
        .send_keys(material.to_str().unwrap())
        .await
        .unwrap();
    b.click("save-key").await;
    b.wait_text("notice", "created").await;
    let imported = admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys/{}", b.text("kid").await),
            None,
        )
        .await;
    assert_eq!(imported["name"], "console-imported");
    assert_eq!(imported["origin"], "External");

    // Copy the generated key into the Azure group, then rotate it with its linked copy.
    b.goto(&format!("/console/keys/{source_kid}")).await;
    b.el("copy-group")
        .await
        .select_by_value(&group)
        .await
        .unwrap();
    b.fill("copy-name", "console-aes-azure").await;
    b.click("action-copy").await;
    b.wait_text("notice", "Copied as console-aes-azure").await;
    b.click("tab-azure").await;
    assert_eq!(b.text("azure-source").await, "Keyward");
    b.goto(&format!("/console/keys/{source_kid}")).await;
    assert!(b.el("rotate-copy").await.is_selected().await.unwrap());
    b.click("action-rotate").await;
    b.wait_text("notice", "1 copies rotated along, 0 failed")
        .await;
    b.shot("key-detail").await;

    // Soft delete the copy's current version (confirmation required), then recover it.
    let copies = admin
        .ok(
            Method::GET,
            &format!("/crypto/v1/keys?group_id={group}&name=console-aes-azure"),
            None,
        )
        .await;
    let current = copies
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["links"]["replacement"].is_null())
        .unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string();
    b.goto(&format!("/console/keys/{current}?tab=azure")).await;
    assert!(
        b.el("action-recover")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some()
    );
    b.click("action-soft_delete").await;
    // The browser does not send the form without the confirmation.
    assert!(b.url().await.ends_with("tab=azure"));
    assert_eq!(b.text("azure-state").await, "Active");
    b.click("confirm-soft-delete").await;
    b.click("action-soft_delete").await;
    b.wait_text("notice", "Soft deleted").await;
    assert_eq!(b.text("azure-state").await, "SoftDeleted");
    assert!(
        b.el("action-soft_delete")
            .await
            .attr("disabled")
            .await
            .unwrap()
            .is_some()
    );
    b.shot("key-azure-soft-deleted").await;
    b.click("action-recover").await;
    b.wait_text("notice", "Recovered").await;
    assert_eq!(b.text("azure-state").await, "Active");

    // Tags of the Azure key: add one, remove it.
    b.goto(&format!("/console/keys/{current}?tab=attributes"))
        .await;
    b.fill("tag-name", "owner").await;
    b.fill("tag-value", "payments").await;
    b.click("action-tag_set").await;
    b.wait_text("notice", "Tag owner saved").await;
    assert!(b.text("tags-table").await.contains("payments"));
    let tagged = admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{current}"), None)
        .await;
    assert_eq!(tagged["custom_metadata"]["owner"], "payments");
    b.click("action-tag_remove").await;
    b.wait_text("notice", "Tag owner removed").await;
    assert!(!b.text("tags-table").await.contains("payments"));

    // Edit a workflow with a syntax error: shown with where, not saved, the old one runs.
    b.goto("/console/workflows/test_connection").await;
    b.fill("workflow-source", "output.status = ;\n").await;
    b.click("save-workflow").await;
    b.wait_text("error", "does not compile").await;
    assert!(b.text("compile-error-location").await.contains("Line 1"));
    assert!(
        b.el("workflow-source")
            .await
            .prop("value")
            .await
            .unwrap()
            .unwrap()
            .contains("output.status = ;")
    );
    b.shot("workflow-compile-error").await;
    let versions = admin
        .ok(
            Method::GET,
            "/sys/v1/workflows/test_connection/versions",
            None,
        )
        .await;
    assert_eq!(versions, json!([]));
    b.goto(&format!("/console/groups/{group}?tab=hsm")).await;
    b.click("test-connection").await;
    b.wait_text("notice", "Connected").await;

    // A schedule and a webhook; the webhook's secret is shown once, never again.
    b.goto("/console/jobs").await;
    b.fill("job-name", "nightly-check").await;
    b.el("workflow")
        .await
        .select_by_value("test_connection")
        .await
        .unwrap();
    b.el("group").await.select_by_value(&group).await.unwrap();
    b.fill("job-cron", "0 0 2 * * *").await;
    b.click("save-job").await;
    b.wait_text("notice", "Schedule nightly-check created")
        .await;
    b.click("job-pause").await;
    b.wait_text("notice", "nightly-check paused").await;
    assert!(b.text("jobs-table").await.contains("paused"));
    b.shot("schedules").await;
    b.goto("/console/webhooks").await;
    b.fill("webhook-name", "ci-check").await;
    b.el("workflow")
        .await
        .select_by_value("test_connection")
        .await
        .unwrap();
    b.el("group").await.select_by_value(&group).await.unwrap();
    b.click("save-webhook").await;
    let shown = b.wait_text("webhook-secret", "whsec_").await;
    assert!(
        b.url().await.ends_with("/console/webhooks"),
        "the secret is not in a URL"
    );
    let secret = shown
        .split_whitespace()
        .find(|w| w.starts_with("whsec_"))
        .unwrap()
        .to_string();
    b.shot("webhooks").await;
    b.goto("/console/webhooks").await;
    b.wait_text("webhooks-table", "ci-check").await;
    assert!(!b.client.source().await.unwrap().contains(&secret));

    // The other main pages.
    b.goto(&format!("/console/keys?group_id={group}")).await;
    b.wait_text("keys-table", "console-aes-azure").await;
    assert!(b.text("keys-table").await.contains("Azure: Active"));
    b.shot("security-objects").await;
    b.goto("/console/users").await;
    assert_eq!(b.text("you").await, "You");
    b.shot("users").await;
    b.goto("/console/audit?action=key.copy").await;
    b.wait_text("audit-table", "key.copy").await;
    b.shot("audit").await;
    b.goto("/console/workflows").await;
    b.shot("workflows").await;

    // On the wire: CSP, cookie flags, and CSRF.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .get(format!("{}/console/login", d.url))
        .send()
        .await
        .unwrap();
    let csp = login.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    let session = b.client.get_named_cookie("keyward_console").await.unwrap();
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(session.secure(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");
    let forged = http
        .post(format!("{}/console/keys/{source_kid}/deactivate", d.url))
        .header("cookie", format!("keyward_console={}", session.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("csrf=forged")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let key = admin
        .ok(Method::GET, &format!("/crypto/v1/keys/{source_kid}"), None)
        .await;
    assert_ne!(key["state"], "Deactivated", "a forged form changes nothing");
    // An id with control characters is refused with an answer, not a failed request.
    let csrf = b
        .client
        .find(Locator::Css("meta[name=\"csrf-token\"]"))
        .await
        .unwrap()
        .attr("content")
        .await
        .unwrap()
        .unwrap();
    let odd = http
        .post(format!("{}/console/keys/%0D%0Aevil/deactivate", d.url))
        .header("cookie", format!("keyward_console={}", session.value()))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(odd.status(), 303);
    assert!(
        odd.headers()["location"]
            .to_str()
            .unwrap()
            .starts_with("/console/")
    );

    b.click("logout").await;
    b.el("login-form").await;
    let _ = b.client.clone().close().await;
    d.stop().await;
    em.stop().await;
}
