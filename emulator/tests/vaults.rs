//! Key Vault vaults (Standard and Premium) through the official Azure SDK for Rust: each
//! tier's key types and refusals, plain JWK import (Standard), BYOK import (Premium), the
//! lifecycle (list, rotate, backup, soft delete, recover, purge, restore), access policies,
//! and the ARM listing that tells the tiers apart.

mod common;

use azure_security_keyvault_keys::ResourceExt;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, EncryptionAlgorithm, ImportKeyParameters, JsonWebKey,
    KeyOperation, KeyOperationParameters, KeyType, RestoreKeyParameters,
};
use common::*;
use futures::TryStreamExt;
use keyward_emulator::crypto::{self, Material, b64url};
use serde_json::{Value, json};

fn create(kty: KeyType, size: Option<i32>, curve: Option<CurveName>) -> CreateKeyParameters {
    CreateKeyParameters {
        kty: Some(kty),
        key_size: size,
        curve,
        ..Default::default()
    }
}

/// The Key Vault error an SDK call failed with: HTTP status and message.
fn failure(e: azure_core::Error) -> (u16, String) {
    let status = match e.kind() {
        azure_core::error::ErrorKind::HttpResponse { status, .. } => u16::from(*status),
        other => panic!("not an HTTP error: {other:?}"),
    };
    (status, e.to_string())
}

#[tokio::test]
async fn a_standard_vault_holds_software_keys_only() {
    let em = emulator().await;
    let client = vault_client(&em, STANDARD);

    let rsa = client
        .create_key(
            "std-rsa",
            create(KeyType::Rsa, Some(2048), None).try_into().unwrap(),
            None,
        )
        .await
        .expect("software RSA")
        .into_model()
        .unwrap();
    assert_eq!(rsa.key.as_ref().unwrap().kty, Some(KeyType::Rsa));
    let kid = rsa.key.as_ref().unwrap().kid.clone().unwrap();
    assert!(
        kid.starts_with(&format!("https://{STANDARD}.vault.localhost:")),
        "{kid}"
    );
    let attrs = rsa.attributes.unwrap();
    assert_eq!(attrs.recoverable_days, Some(90));
    client
        .create_key(
            "std-ec",
            create(KeyType::Ec, None, Some(CurveName::P384))
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .expect("software EC");

    for (kty, size) in [
        (KeyType::RsaHsm, Some(2048)),
        (KeyType::EcHsm, None),
        (KeyType::OctHsm, Some(256)),
        (KeyType::Oct, Some(256)),
    ] {
        let e = client
            .create_key(
                "refused",
                create(kty.clone(), size, None).try_into().unwrap(),
                None,
            )
            .await
            .expect_err("a Standard vault refuses it");
        let (status, msg) = failure(e);
        assert_eq!(status, 400, "{kty:?}: {msg}");
        if matches!(kty, KeyType::RsaHsm | KeyType::EcHsm) {
            assert!(
                msg.contains("Hardware key operation not allowed on standard vault"),
                "{msg}"
            );
        } else {
            assert!(msg.contains("Managed HSM"), "{msg}");
        }
    }

    // Plain import (flow a): the private key as a JWK over TLS; the same key comes back.
    let material = Material::generate_rsa(2048, None).unwrap();
    let Material::Rsa(private) = &material else {
        unreachable!()
    };
    let jwk_json = crypto::rsa_private_jwk(private);
    let field = |k: &str| crypto::decode_b64(k, jwk_json[k].as_str().unwrap()).unwrap();
    let jwk = JsonWebKey {
        kty: Some(KeyType::Rsa),
        n: Some(field("n")),
        e: Some(field("e")),
        d: Some(field("d")),
        p: Some(field("p")),
        q: Some(field("q")),
        dp: Some(field("dp")),
        dq: Some(field("dq")),
        qi: Some(field("qi")),
        key_ops: Some(vec!["encrypt".into(), "decrypt".into()]),
        ..Default::default()
    };
    let imported = client
        .import_key(
            "std-imported",
            ImportKeyParameters {
                key: Some(jwk.clone()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("plain import")
        .into_model()
        .unwrap();
    assert_eq!(imported.key.as_ref().unwrap().kty, Some(KeyType::Rsa));
    assert_eq!(imported.key.as_ref().unwrap().n, Some(field("n")));
    assert!(
        imported.key.unwrap().d.is_none(),
        "the private part never comes back"
    );
    // Asking for HSM protection on Standard is refused.
    let e = client
        .import_key(
            "std-imported-hsm",
            ImportKeyParameters {
                key: Some(jwk),
                hsm: Some(true),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect_err("no HSM keys on Standard");
    assert_eq!(failure(e).0, 400);
    // What the vault encrypts, the imported private key decrypts.
    let ct = client
        .encrypt(
            "std-imported",
            KeyOperationParameters {
                algorithm: Some(EncryptionAlgorithm::RsaOaep256),
                value: Some(b"pan".to_vec()),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let local = material
        .decrypt("RSA-OAEP-256", &ct.result.unwrap(), None, None, None)
        .unwrap();
    assert_eq!(local, b"pan");

    lifecycle(&client, "std-rsa", KeyType::Rsa).await;
    em.stop().await;
}

/// Rotate, list versions, back up, soft delete, purge, restore, delete and recover one key.
async fn lifecycle(client: &azure_security_keyvault_keys::KeyClient, name: &str, kty: KeyType) {
    let rotated = client
        .rotate_key(name, None)
        .await
        .expect("rotate")
        .into_model()
        .unwrap();
    assert_eq!(
        rotated.key.unwrap().kty,
        Some(kty),
        "a new version keeps the protection"
    );
    let versions: Vec<_> = client
        .list_key_properties_versions(name, None)
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(versions.len(), 2);
    let names: Vec<String> = client
        .list_key_properties(None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.resource_id().unwrap().name)
        .collect();
    assert!(names.contains(&name.to_string()), "{names:?}");

    let backup = client
        .backup_key(name, None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap();
    client.delete_key(name, None).await.expect("soft delete");
    client
        .get_deleted_key(name, None)
        .await
        .expect("listed as deleted");
    client
        .recover_deleted_key(name, None)
        .await
        .expect("recover");
    client.get_key(name, None).await.expect("recovered");
    client.delete_key(name, None).await.unwrap();
    client.purge_deleted_key(name, None).await.expect("purge");
    let restored = client
        .restore_key(
            RestoreKeyParameters {
                key_backup: Some(backup),
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("restore")
        .into_model()
        .unwrap();
    assert_eq!(restored.resource_id().unwrap().name, name);
}

#[tokio::test]
async fn a_premium_vault_holds_hsm_keys_and_takes_byok_transfers() {
    let em = emulator().await;
    let client = vault_client(&em, PREMIUM);

    for (name, kty, size, curve) in [
        ("prem-rsa-hsm", KeyType::RsaHsm, Some(3072), None),
        ("prem-ec-hsm", KeyType::EcHsm, None, Some(CurveName::P384)),
        ("prem-rsa", KeyType::Rsa, Some(2048), None),
    ] {
        let k = client
            .create_key(
                name,
                create(kty.clone(), size, curve).try_into().unwrap(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .into_model()
            .unwrap();
        assert_eq!(k.key.unwrap().kty, Some(kty));
    }
    let e = client
        .create_key(
            "prem-aes",
            create(KeyType::OctHsm, Some(256), None).try_into().unwrap(),
            None,
        )
        .await
        .expect_err("no symmetric keys in vaults");
    assert_eq!(failure(e).0, 400);

    // BYOK (flow b): a key-exchange key in the vault, the target wrapped for it here.
    let kek = client
        .create_key(
            "byok-kek",
            CreateKeyParameters {
                kty: Some(KeyType::RsaHsm),
                key_size: Some(2048),
                key_ops: Some(vec![KeyOperation::Import]),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("a KEK")
        .into_model()
        .unwrap();
    let kek_jwk = kek.key.unwrap();
    let kek_public =
        crypto::rsa_public(kek_jwk.n.as_ref().unwrap(), kek_jwk.e.as_ref().unwrap()).unwrap();
    let target = Material::generate_ec(crypto::Curve::P256);
    let blob = crypto::byok_transfer_document(
        kek_jwk.kid.as_ref().unwrap(),
        &kek_public,
        &target.to_der(),
        "test",
    )
    .unwrap();
    let imported = client
        .import_key(
            "prem-byok",
            ImportKeyParameters {
                key: Some(JsonWebKey {
                    kty: Some(KeyType::EcHsm),
                    crv: Some(CurveName::P256),
                    t: Some(blob),
                    key_ops: Some(vec!["sign".into(), "verify".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("BYOK import")
        .into_model()
        .unwrap();
    let key = imported.key.unwrap();
    assert_eq!(key.kty, Some(KeyType::EcHsm));
    let mut public = serde_json::Map::new();
    target.public_jwk(&mut public);
    assert_eq!(
        b64url(key.x.as_ref().unwrap()),
        public["x"].as_str().unwrap(),
        "the vault holds the transferred key"
    );

    lifecycle(&client, "prem-rsa-hsm", KeyType::RsaHsm).await;
    em.stop().await;
}

#[tokio::test]
async fn a_standard_vault_refuses_byok() {
    let em = emulator().await;
    let premium = vault_client(&em, PREMIUM);
    let kek = premium
        .create_key(
            "kek",
            CreateKeyParameters {
                kty: Some(KeyType::RsaHsm),
                key_ops: Some(vec![KeyOperation::Import]),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .key
        .unwrap();
    let public = crypto::rsa_public(kek.n.as_ref().unwrap(), kek.e.as_ref().unwrap()).unwrap();
    let target = Material::generate_rsa(2048, None).unwrap();
    let blob =
        crypto::byok_transfer_document(kek.kid.as_ref().unwrap(), &public, &target.to_der(), "t")
            .unwrap();
    let e = vault_client(&em, STANDARD)
        .import_key(
            "byok",
            ImportKeyParameters {
                key: Some(JsonWebKey {
                    kty: Some(KeyType::RsaHsm),
                    t: Some(blob),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect_err("Standard has no HSM");
    let (status, msg) = failure(e);
    assert_eq!(status, 400);
    assert!(msg.contains("standard vault"), "{msg}");
    em.stop().await;
}

#[tokio::test]
async fn access_policies_decide_and_name_what_is_missing() {
    let em = emulator().await;
    admin(
        &em,
        reqwest::Method::PUT,
        "/admin/access-policies",
        json!({"vault": PREMIUM, "principal": CLIENT, "keys": ["get", "list", "create"]}),
    )
    .await;
    let client = vault_client(&em, PREMIUM);
    client
        .create_key(
            "allowed",
            create(KeyType::RsaHsm, Some(2048), None)
                .try_into()
                .unwrap(),
            None,
        )
        .await
        .expect("create is granted");
    let e = client
        .delete_key("allowed", None)
        .await
        .expect_err("delete is not granted");
    let (status, msg) = failure(e);
    assert_eq!(status, 403);
    assert!(
        msg.contains("does not have keys delete permission"),
        "{msg}"
    );

    // A Managed HSM token is not a vault token.
    let hsm_token = hsm_token(&em).await;
    let resp = http(&em)
        .get(format!("{}keys?api-version=7.5", em.vault_uri(PREMIUM)))
        .bearer_auth(hsm_token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let challenge = resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        challenge.contains("resource=\"https://vault.localhost:"),
        "{challenge}"
    );
    // A vault is not reachable under a Managed HSM host name, nor the other way round.
    let resp = http(&em)
        .get(format!(
            "https://{PREMIUM}.localhost:{}/keys?api-version=7.5",
            em.port
        ))
        .send()
        .await;
    if let Ok(r) = resp {
        assert_eq!(r.status(), 404);
    }
    em.stop().await;
}

#[tokio::test]
async fn arm_lists_vaults_with_their_tier_and_settings() {
    let em = emulator().await;
    let arm = token(&em, CLIENT, SECRET, "https://management.azure.com/.default").await;
    let list: Value = http(&em)
        .get(format!(
            "{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/vaults?api-version=2023-07-01",
            em.base_url
        ))
        .bearer_auth(&arm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let vaults = list["value"].as_array().unwrap();
    let sku = |name: &str| {
        vaults.iter().find(|v| v["name"] == name).unwrap()["properties"]["sku"]["name"].clone()
    };
    assert_eq!(sku(STANDARD), "standard");
    assert_eq!(sku(PREMIUM), "premium");
    let p = &vaults.iter().find(|v| v["name"] == PREMIUM).unwrap()["properties"];
    assert_eq!(p["vaultUri"], em.vault_uri(PREMIUM));
    assert_eq!(p["softDeleteRetentionInDays"], 90);
    assert_eq!(p["enableRbacAuthorization"], false);
    assert!(
        p["accessPolicies"][0]["permissions"]["keys"]
            .as_array()
            .unwrap()
            .contains(&json!("import"))
    );
    // Managed HSMs are listed apart.
    let hsms: Value = http(&em)
        .get(format!(
            "{}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.KeyVault/managedHSMs?api-version=2023-07-01",
            em.base_url
        ))
        .bearer_auth(&arm)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        hsms["value"]
            .as_array()
            .unwrap()
            .iter()
            .all(|h| h["type"] == "Microsoft.KeyVault/managedHSMs")
    );
    em.stop().await;
}
