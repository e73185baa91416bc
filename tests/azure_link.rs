//! Linking a group to Azure Managed HSM (F7 to F12) against the emulator over HTTPS: test the
//! connection before saving, save with an instance or while Not Connected, edit the
//! credentials but not the instance, TLS settings, and the connection status in group lists.

use keyward_tests::api::{TestDaemon, catalog_snapshot};
use keyward_tests::azure::{
    CLIENT, HSM, LOCKED_HSM, NO_ROLE_CLIENT, NO_ROLE_SECRET, SECRET, allow_local, emulator, link,
    settle,
};
use reqwest::Method;
use serde_json::json;

const PW: &str = "a long enough password";

#[tokio::test]
async fn a_connection_test_lists_the_subscriptions_hsms_and_the_group_saves_with_one() {
    let em = emulator().await;
    let d = TestDaemon::start_with(allow_local).await;
    let admin = d.bootstrap().await;

    // F8: test before saving.
    let status = admin
        .ok(
            Method::POST,
            "/sys/v1/groups/hmg/check",
            Some(link(&em, SECRET, None)),
        )
        .await;
    assert_eq!(status["status"], "Connected", "{status}");
    let names: Vec<&str> = status["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [HSM, LOCKED_HSM, "demo-premium", "demo-standard"],
        "the Managed HSMs, then the vaults"
    );
    let demo = &status["instances"][0];
    assert_eq!(demo["uri"], em.hsm_uri(HSM));
    assert_eq!(demo["retention_days"], 90);
    let locked = &status["instances"][1];
    assert_eq!(locked["purge_protection"], true);

    let vaults = admin
        .ok(
            Method::POST,
            "/sys/v1/groups/hmg/azure_vaults",
            Some(link(&em, SECRET, None)),
        )
        .await;
    assert_eq!(vaults.as_array().unwrap().len(), 4);

    // F9: save with the chosen instance; F12: the list marks it and shows the status.
    let g = admin
        .create_group("hsm", json!({"external_kms": link(&em, SECRET, Some(HSM))}))
        .await;
    let plain = admin.create_group("plain", json!({})).await;
    let checked = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    assert_eq!(checked["status"], "Connected");
    let groups = admin.ok(Method::GET, "/sys/v1/groups", None).await;
    let find = |id: &str| {
        groups
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["group_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(find(&g)["is_external"], true);
    assert_eq!(find(&g)["connection_status"], "Connected");
    assert_eq!(find(&g)["external_kms"]["instance"], em.hsm_uri(HSM));
    assert_eq!(find(&plain)["is_external"], false);
    assert!(find(&plain)["connection_status"].is_null());

    // A group auditor's own view shows the status too.
    admin
        .ok(
            Method::POST,
            "/sys/v1/users/invite",
            Some(json!({"user_email": "viewer@example.com", "user_password": PW, "account_role": "member", "groups": {&g: "auditor"}})),
        )
        .await;
    let viewer = d.login("viewer@example.com", PW).await;
    let mine = viewer.ok(Method::GET, "/sys/v1/groups", None).await;
    assert_eq!(mine.as_array().unwrap().len(), 1);
    assert_eq!(mine[0]["connection_status"], "Connected");
    // Auditors read; they do not run tests against the HSM.
    let (s, _) = viewer
        .call(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    assert_eq!(s, 403);

    d.stop().await;
    em.stop().await;
}

#[tokio::test]
async fn a_wrong_secret_unknown_tenant_or_missing_role_is_not_connected_with_the_reason() {
    let em = emulator().await;
    let d = TestDaemon::start_with(allow_local).await;
    let admin = d.bootstrap().await;

    let status = admin
        .ok(
            Method::POST,
            "/sys/v1/groups/hmg/check",
            Some(link(&em, "wrong", None)),
        )
        .await;
    assert_eq!(status["status"], "Not Connected");
    assert_eq!(status["error_code"], "AADSTS7000215", "{status}");
    assert!(
        status["reason"].as_str().unwrap().contains("client secret"),
        "{status}"
    );
    assert!(status["instances"].as_array().unwrap().is_empty());
    // The secret never shows up in the answer.
    assert!(!status.to_string().contains("\"wrong\""));

    let (s, body) = admin
        .call(
            Method::POST,
            "/sys/v1/groups/hmg/azure_vaults",
            Some(link(&em, "wrong", None)),
        )
        .await;
    assert_eq!(s, 502, "{body}");
    assert_eq!(body["code"], "ExternalKmsError");

    let mut unknown_tenant = link(&em, SECRET, None);
    unknown_tenant["tenant_id"] = json!("00000000-0000-4000-8000-000000000000");
    let status = admin
        .ok(
            Method::POST,
            "/sys/v1/groups/hmg/check",
            Some(unknown_tenant),
        )
        .await;
    assert_eq!(status["status"], "Not Connected");
    assert_eq!(status["error_code"], "AADSTS90002", "{status}");

    let mut no_role = link(&em, NO_ROLE_SECRET, None);
    no_role["client_id"] = json!(NO_ROLE_CLIENT);
    let status = admin
        .ok(Method::POST, "/sys/v1/groups/hmg/check", Some(no_role))
        .await;
    assert_eq!(status["status"], "Not Connected");
    assert!(
        status["reason"].as_str().unwrap().contains("refused"),
        "{status}"
    );

    d.stop().await;
    em.stop().await;
}

#[tokio::test]
async fn an_unreachable_identity_provider_or_hsm_is_not_connected() {
    let em = emulator().await;
    let d = TestDaemon::start_with(allow_local).await;
    let admin = d.bootstrap().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();

    let mut nowhere = link(&em, SECRET, None);
    nowhere["endpoints"]["identity"] = json!(format!("https://localhost:{closed}"));
    let status = admin
        .ok(Method::POST, "/sys/v1/groups/hmg/check", Some(nowhere))
        .await;
    assert_eq!(status["status"], "Not Connected");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{status}"
    );

    // Credentials fine, but the chosen instance does not answer.
    let mut gone = link(&em, SECRET, None);
    gone["instance"] = json!(format!("https://gone.localhost:{closed}/"));
    let g = admin
        .create_group("gone", json!({"external_kms": gone}))
        .await;
    let status = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    assert_eq!(status["status"], "Not Connected");
    assert!(
        status["reason"]
            .as_str()
            .unwrap()
            .contains("could not be reached"),
        "{status}"
    );
    let group = admin
        .ok(Method::GET, &format!("/sys/v1/groups/{g}"), None)
        .await;
    assert_eq!(group["connection_status"], "Not Connected");

    d.stop().await;
    em.stop().await;
}

#[tokio::test]
async fn a_group_saved_while_not_connected_is_fixed_later_but_its_instance_never_changes() {
    let em = emulator().await;
    let d = TestDaemon::start_with(allow_local).await;
    let admin = d.bootstrap().await;

    // F9: saved while Not Connected (wrong secret).
    let g = admin
        .create_group(
            "later",
            json!({"external_kms": link(&em, "wrong", Some(HSM))}),
        )
        .await;
    let status = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    assert_eq!(status["status"], "Not Connected");

    // Trying a new secret without saving it.
    let status = admin
        .ok(
            Method::POST,
            &format!("/sys/v1/groups/{g}/hmg/check"),
            Some(json!({"config": {"kind": "AzureManagedHsm", "client_secret": SECRET}})),
        )
        .await;
    assert_eq!(status["status"], "Connected");
    let group = admin
        .ok(Method::GET, &format!("/sys/v1/groups/{g}"), None)
        .await;
    assert_eq!(group["connection_status"], "Not Connected", "not saved");

    // F10: edit tenant, client and secret.
    let updated = admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({"external_kms": {"kind": "AzureManagedHsm", "client_id": CLIENT, "client_secret": SECRET}})),
        )
        .await;
    assert_eq!(updated["external_kms"]["has_client_secret"], true);
    assert!(
        !updated.to_string().contains(SECRET),
        "the secret is never shown"
    );
    let status = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    assert_eq!(status["status"], "Connected");

    // The instance cannot change, and a refused change changes nothing.
    settle(&admin).await;
    let before = catalog_snapshot(&d).await;
    let (s, body) = admin
        .call(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({"external_kms": {"kind": "AzureManagedHsm", "instance": em.hsm_uri(LOCKED_HSM)}})),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("instance"));
    assert_eq!(before, catalog_snapshot(&d).await);

    // The secret is sealed at rest and absent from the audit log.
    let logs = admin.ok(Method::GET, "/sys/v1/logs", None).await;
    assert!(!logs.to_string().contains(SECRET));
    let raw = keyward_tests::postgres::catalog_bytes(&d.data_dir).await;
    assert!(!raw.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()));

    d.stop().await;
    em.stop().await;
}

#[tokio::test]
async fn tls_settings_decide_whom_the_connector_trusts() {
    let em = emulator().await;
    let d = TestDaemon::start_with(allow_local).await;
    let admin = d.bootstrap().await;

    // The global public roots do not know the emulator's CA.
    let mut public_roots = link(&em, SECRET, None);
    public_roots.as_object_mut().unwrap().remove("tls");
    let status = admin
        .ok(Method::POST, "/sys/v1/groups/hmg/check", Some(public_roots))
        .await;
    assert_eq!(status["status"], "Not Connected");
    assert!(
        status["reason"].as_str().unwrap().contains("TLS"),
        "{status}"
    );

    // Another CA is not trusted either.
    let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let mut wrong_ca = link(&em, SECRET, None);
    wrong_ca["tls"]["ca_pem"] = json!(other.cert.pem());
    let status = admin
        .ok(Method::POST, "/sys/v1/groups/hmg/check", Some(wrong_ca))
        .await;
    assert_eq!(status["status"], "Not Connected");

    // Host-name validation off still needs the CA; with it, the connection works.
    let mut no_hostname = link(&em, SECRET, None);
    no_hostname["tls"]["validate_hostname"] = json!(false);
    let status = admin
        .ok(Method::POST, "/sys/v1/groups/hmg/check", Some(no_hostname))
        .await;
    assert_eq!(status["status"], "Connected");

    // A client certificate and key are accepted and stored (the key sealed); garbage is not.
    let client = rcgen::generate_simple_self_signed(vec!["keyward-client".into()]).unwrap();
    let mut mtls = link(&em, SECRET, Some(HSM));
    mtls["tls"]["client_cert"] = json!(client.cert.pem());
    mtls["tls"]["client_key"] = json!(client.signing_key.serialize_pem());
    let g = admin
        .create_group("mtls", json!({"external_kms": mtls}))
        .await;
    let group = admin
        .ok(Method::GET, &format!("/sys/v1/groups/{g}"), None)
        .await;
    assert_eq!(group["external_kms"]["tls"]["has_client_key"], true);
    assert!(!group.to_string().contains("PRIVATE KEY"));
    let status = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    assert_eq!(status["status"], "Connected");

    // `null` takes a setting back: the client certificate (with its sealed key), then the
    // CA (the public roots again, which do not know the emulator's: Not Connected).
    let cleared = admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(
                json!({"external_kms": {"kind": "AzureManagedHsm", "tls": {"client_cert": null}}}),
            ),
        )
        .await;
    let tls = &cleared["external_kms"]["tls"];
    assert!(tls["client_cert"].is_null(), "{cleared}");
    assert_eq!(tls["has_client_key"], false, "{cleared}");
    assert!(tls["ca_pem"].is_string(), "the rest stays: {cleared}");
    let public = admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({"external_kms": {"kind": "AzureManagedHsm", "tls": {"ca_pem": null}}})),
        )
        .await;
    assert!(
        public["external_kms"]["tls"]["ca_pem"].is_null(),
        "{public}"
    );
    let status = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    assert_eq!(status["status"], "Not Connected");

    let mut bad = link(&em, SECRET, None);
    bad["tls"]["ca_pem"] = json!("not a certificate");
    let (s, body) = admin
        .call(
            Method::POST,
            "/sys/v1/groups",
            Some(json!({"name": "bad", "external_kms": bad})),
        )
        .await;
    assert_eq!(s, 400, "{body}");
    assert_eq!(body["field"], "external_kms.tls");

    d.stop().await;
    em.stop().await;
}

#[tokio::test]
async fn malformed_links_are_refused_with_the_field_named() {
    let em = emulator().await;
    let d = TestDaemon::start_with(allow_local).await;
    let admin = d.bootstrap().await;
    let before = catalog_snapshot(&d).await;
    for (change, field) in [
        (json!({"kind": "AwsKms"}), "external_kms.kind"),
        (json!({"tenant_id": " "}), "external_kms.tenant_id"),
        (json!({"client_secret": ""}), "external_kms.client_secret"),
        (
            json!({"instance": "http://demo-hsm.localhost"}),
            "external_kms.instance",
        ),
        (
            json!({"endpoints": {"identity": "ftp://x"}}),
            "external_kms.endpoints.identity",
        ),
        (
            json!({"endpoints": {"vault": "https://x"}}),
            "external_kms.endpoints",
        ),
    ] {
        let mut l = link(&em, SECRET, None);
        for (k, v) in change.as_object().unwrap() {
            l[k] = v.clone();
        }
        let (s, body) = admin
            .call(
                Method::POST,
                "/sys/v1/groups",
                Some(json!({"name": "x", "external_kms": l})),
            )
            .await;
        assert_eq!(s, 400, "{change}: {body}");
        assert_eq!(body["field"], field, "{change}: {body}");
    }
    // A test of an incomplete link says what is missing.
    let mut incomplete = link(&em, SECRET, None);
    incomplete.as_object_mut().unwrap().remove("client_secret");
    let (s, body) = admin
        .call(Method::POST, "/sys/v1/groups/hmg/check", Some(incomplete))
        .await;
    assert_eq!(s, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("client_secret"));
    assert_eq!(before, catalog_snapshot(&d).await);
    d.stop().await;
    em.stop().await;
}

#[tokio::test]
async fn the_instance_is_chosen_after_saving_and_keys_wait_for_it() {
    let em = emulator().await;
    let d = TestDaemon::start_with(allow_local).await;
    let admin = d.bootstrap().await;
    let g = admin
        .create_group(
            "pick-later",
            json!({"external_kms": link(&em, SECRET, None)}),
        )
        .await;
    let (s, body) = admin
        .call(Method::POST, &format!("/sys/v1/groups/{g}/hmg/scan"), None)
        .await;
    assert_eq!(s, 409, "{body}");
    assert!(body["message"].as_str().unwrap().contains("instance"));
    let (s, body) = admin
        .call(
            Method::POST,
            "/crypto/v1/keys",
            Some(json!({"name": "early", "group_id": g, "obj_type": "AES", "key_size": 256})),
        )
        .await;
    assert_eq!(s, 409, "{body}");

    // F9: choose from the list the connection test gave.
    let status = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/check"), None)
        .await;
    let uri = status["instances"][0]["uri"].as_str().unwrap().to_string();
    admin
        .ok(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({"external_kms": {"kind": "AzureManagedHsm", "instance": uri}})),
        )
        .await;
    let synced = admin
        .ok(Method::POST, &format!("/sys/v1/groups/{g}/hmg/scan"), None)
        .await;
    assert!(synced.as_array().unwrap().is_empty(), "an empty HSM");
    let k = admin
        .create_key(json!({"name": "now", "group_id": g, "obj_type": "AES", "key_size": 256}))
        .await;
    assert_eq!(k["external"]["instance"], uri.as_str());

    // A group that holds virtual keys cannot be unlinked.
    let (s, body) = admin
        .call(
            Method::PATCH,
            &format!("/sys/v1/groups/{g}"),
            Some(json!({"external_kms": "remove"})),
        )
        .await;
    assert_eq!(s, 409, "{body}");
    d.stop().await;
    em.stop().await;
}
