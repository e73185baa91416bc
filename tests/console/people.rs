//! Accounts, users and applications through the console (F1..F3), and the plugins page
//! (F29): an account created and switched to; a user invited with a first password, given
//! roles, taken out of a group and removed; an application created with per-group
//! permissions whose API key is shown once and works, whose secret is reset (the old key
//! stops working) and whose permissions are edited. Each step is checked through the API.

use keyward_tests::api::{ADMIN_EMAIL, ADMIN_PASSWORD, TestDaemon};
use reqwest::Method;
use serde_json::{Value, json};

use crate::browser::Browser;

fn user<'a>(users: &'a Value, email: &str) -> Option<&'a Value> {
    users
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_email"] == email)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accounts_users_and_applications_are_managed_in_the_browser() {
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let payments = admin.create_group("Payments", json!({})).await;
    let archive = admin.create_group("Archive", json!({})).await;
    let b = Browser::start(&d.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;

    // Users (F2): invite with a first password, a role and a group role.
    b.goto("/console/users").await;
    b.fill("invite-email", "dana@example.com").await;
    b.fill("invite-password", "dana's first password").await;
    b.select("invite-role", "member").await;
    b.select("invite-group", &payments).await;
    b.select("invite-group-role", "administrator").await;
    b.click("save-invite").await;
    b.wait_text("notice", "dana@example.com invited").await;
    let users = admin.ok(Method::GET, "/sys/v1/users", None).await;
    let dana = user(&users, "dana@example.com").unwrap().clone();
    assert_eq!(dana["account_role"][0], "ACCOUNTMEMBER");
    assert_eq!(dana["groups"][&payments], "administrator");
    let dana_id = dana["user_id"].as_str().unwrap().to_string();
    d.login("dana@example.com", "dana's first password").await;
    b.shot("users").await;

    // Her row's forms: auditor of the account, auditor of Archive, out of Payments.
    let row = "[data-email=\"dana@example.com\"]";
    let within = |testid: &str| format!("{row} [data-testid=\"{testid}\"]");
    let find = |css: String| {
        let b = &b;
        async move { b.client.find(fantoccini::Locator::Css(&css)).await.unwrap() }
    };
    find(within("user-role-select"))
        .await
        .select_by_value("auditor")
        .await
        .unwrap();
    find(within("user-role-save")).await.click().await.unwrap();
    b.wait_text("notice", "updated").await;
    find(within("user-group-select"))
        .await
        .select_by_value(&archive)
        .await
        .unwrap();
    find(within("user-group-role"))
        .await
        .select_by_value("auditor")
        .await
        .unwrap();
    find(within("user-group-add")).await.click().await.unwrap();
    b.wait_text("notice", "updated").await;
    find(within("user-ungroup-select"))
        .await
        .select_by_value(&payments)
        .await
        .unwrap();
    find(within("user-group-remove"))
        .await
        .click()
        .await
        .unwrap();
    b.wait_text("notice", "updated").await;
    let dana = admin
        .ok(Method::GET, &format!("/sys/v1/users/{dana_id}"), None)
        .await;
    assert_eq!(dana["account_role"][0], "ACCOUNTAUDITOR", "{dana}");
    assert_eq!(dana["groups"], json!({archive.clone(): "auditor"}));
    find(within("user-remove")).await.click().await.unwrap();
    b.wait_text("notice", "removed").await;
    let users = admin.ok(Method::GET, "/sys/v1/users", None).await;
    assert!(user(&users, "dana@example.com").is_none());

    // Applications (F3): per-group permissions; the key shown once works.
    b.goto("/console/apps").await;
    b.fill("app-name", "checkout").await;
    b.tick_value("group", &payments, true).await;
    for p in ["ENCRYPT", "DECRYPT"] {
        b.tick_value(&format!("perm:{payments}"), p, true).await;
    }
    b.click("save-app").await;
    b.wait_text("notice", "Application checkout created").await;
    let first_key = b.text("app-api-key").await;
    assert!(
        b.url().await.ends_with("/console/apps"),
        "the key is not in a URL"
    );
    b.shot("app-created").await;
    let app = d.login_app(&first_key).await;
    let apps = admin.ok(Method::GET, "/sys/v1/apps", None).await;
    let checkout = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "checkout")
        .unwrap();
    assert_eq!(
        checkout["groups"],
        json!({payments.clone(): ["ENCRYPT", "DECRYPT"]})
    );
    let app_id = checkout["app_id"].as_str().unwrap().to_string();
    let own = app.ok(Method::GET, "/sys/v1/apps", None).await;
    assert_eq!(own[0]["app_id"], app_id.as_str());

    // Permissions edited: SIGN added in Payments, Archive joined with VERIFY.
    b.goto(&format!("/console/apps/{app_id}")).await;
    b.tick_value(&format!("perm:{payments}"), "SIGN", true)
        .await;
    b.tick_value("group", &archive, true).await;
    b.tick_value(&format!("perm:{archive}"), "VERIFY", true)
        .await;
    b.click("save-permissions").await;
    b.wait_text("notice", "Permissions saved").await;
    let a = admin
        .ok(Method::GET, &format!("/sys/v1/apps/{app_id}"), None)
        .await;
    assert_eq!(
        a["groups"],
        json!({payments.clone(): ["ENCRYPT", "DECRYPT", "SIGN"], archive.clone(): ["VERIFY"]})
    );

    // The credential is read on request; a reset makes a new key and the old one stops.
    b.click("app-credential").await;
    assert_eq!(b.text("app-api-key").await, first_key);
    b.goto(&format!("/console/apps/{app_id}")).await;
    b.click("app-reset_secret").await;
    b.wait_text("notice", "Secret reset").await;
    let second_key = b.text("app-api-key").await;
    assert_ne!(second_key, first_key);
    let stale = reqwest::Client::new()
        .post(format!("{}/sys/v1/session/auth", d.url))
        .header("authorization", format!("Basic {first_key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 401, "the old key no longer works");
    d.login_app(&second_key).await;
    b.goto(&format!("/console/apps/{app_id}")).await;
    b.click("app-delete").await;
    b.wait_text("notice", "Application deleted").await;
    let (s, _) = admin
        .call(Method::GET, &format!("/sys/v1/apps/{app_id}"), None)
        .await;
    assert_eq!(s, 404);

    // Plugins (F29): the shipped policy plugins are loaded.
    b.goto("/console/plugins").await;
    let table = b.text("plugins-table").await;
    assert!(
        table.contains("crypto-policy") && table.contains("key-metadata-policy"),
        "{table}"
    );
    assert!(table.contains("keyward:plugin/policy@0.1.0"));
    b.shot("plugins").await;

    // Accounts (F1): create one, switch to it, and back.
    b.goto("/console/accounts").await;
    b.fill("account-name", "Second account").await;
    b.click("save-account").await;
    b.wait_text("notice", "Account Second account created")
        .await;
    let accounts = admin.ok(Method::GET, "/sys/v1/accounts", None).await;
    let second = accounts
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "Second account")
        .expect("the account exists");
    assert_eq!(second["role"], "administrator");
    b.click("switch-Second account").await;
    b.wait_text("notice", "Switched account").await;
    b.goto("/console/groups").await;
    let groups = b.text("groups-table").await;
    assert!(
        !groups.contains("Payments"),
        "the other account's groups are not shown: {groups}"
    );
    b.goto("/console/accounts").await;
    b.shot("accounts").await;
    let current = b
        .client
        .find(fantoccini::Locator::Css(
            "[data-testid=\"current-account\"]",
        ))
        .await
        .unwrap();
    let row = current
        .find(fantoccini::Locator::XPath("ancestor::tr"))
        .await
        .unwrap();
    assert!(row.text().await.unwrap().contains("Second account"));

    let _ = b.client.clone().close().await;
    d.stop().await;
}

/// Applications with client certificates (DSM's `Certificate` and `TrustedCa`): made with a
/// pinned certificate in the form, shown with how they log in and when the certificate
/// expires, listed on the dashboard when that is within 30 days, and switched to a trusted CA.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_applications_are_made_and_watched_in_the_browser() {
    use keyward_tests::tls::{ClientSpec, TestCa};
    let d = TestDaemon::start().await;
    let admin = d.bootstrap().await;
    let payments = admin.create_group("Payments", json!({})).await;
    let b = Browser::start(&d.url).await;
    b.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;

    let now = time::OffsetDateTime::now_utc();
    let cert = ClientSpec {
        not_after: now + time::Duration::days(10),
        ..ClientSpec::named("pos-terminal", 5)
    }
    .self_signed();
    b.goto("/console/apps").await;
    b.fill("app-name", "pos-terminal").await;
    b.tick_value("group", &payments, true).await;
    b.tick_value(&format!("perm:{payments}"), "ENCRYPT", true)
        .await;
    b.select("app-auth-type", "certificate").await;
    b.set_value("app-certificate", &cert.cert_pem).await;
    b.click("save-app").await;
    b.wait_text("notice", "Application pos-terminal created")
        .await;
    assert!(
        b.all("app-api-key").await.is_empty(),
        "a certificate application has no API key to show"
    );
    let apps = admin.ok(Method::GET, "/sys/v1/apps", None).await;
    let made = apps
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "pos-terminal")
        .unwrap()
        .clone();
    assert_eq!(made["auth_type"], "Certificate", "{made}");
    let app_id = made["app_id"].as_str().unwrap().to_string();

    b.goto(&format!("/console/apps/{app_id}")).await;
    assert_eq!(b.text("app-auth").await, "pinned certificate");
    assert!(b.text("app-cert-subject").await.contains("CN=pos-terminal"));
    assert_eq!(
        b.text("app-cert-not-after").await,
        made["cert_not_after"].as_str().unwrap()
    );
    b.shot("app-certificate").await;

    // The dashboard lists it: it expires within 30 days.
    b.goto("/console").await;
    assert_eq!(b.text("tile-app-certs-value").await, "1");
    b.wait_text("app-certs-table", "pos-terminal").await;

    // Switched to client certificates of a trusted CA naming a subject.
    let ca = TestCa::new("terminals CA");
    b.goto(&format!("/console/apps/{app_id}")).await;
    b.select("app-auth-type", "trusted_ca").await;
    b.set_value("app-certificate", &ca.pem()).await;
    b.set_value("app-subject", "CN=pos\nO=Example").await;
    b.click("save-certificate").await;
    b.wait_text("notice", "logs in with this certificate").await;
    let now = admin
        .ok(Method::GET, &format!("/sys/v1/apps/{app_id}"), None)
        .await;
    assert_eq!(now["auth_type"], "TrustedCa", "{now}");
    assert_eq!(now["cert_subject"], "CN=pos, O=Example");
    assert_eq!(b.text("app-auth").await, "certificate of a trusted CA");

    // A subject line that is not NAME=VALUE is refused, naming the field.
    b.select("app-auth-type", "trusted_ca").await;
    b.set_value("app-certificate", &ca.pem()).await;
    b.set_value("app-subject", "just a name").await;
    b.click("save-certificate").await;
    b.wait_text("error", "subject").await;
    d.stop().await;
}
