//! The official Azure SDK for Rust (`azure_identity`, `azure_security_keyvault_keys`) against
//! the emulator, unmodified: only the authority host, the endpoint and certificate trust
//! (plus `*.localhost` name resolution) are configured.

mod common;

use std::collections::HashMap;

use azure_core::credentials::TokenCredential;
use azure_security_keyvault_keys::ResourceExt;
use azure_security_keyvault_keys::models::{
    CreateKeyParameters, CurveName, EncryptionAlgorithm, ImportKeyParameters, JsonWebKey,
    KeyAttributes, KeyClientGetKeyOptions, KeyOperationParameters, KeyType, RestoreKeyParameters,
    SignParameters, SignatureAlgorithm, UpdateKeyPropertiesParameters, VerifyParameters,
};
use common::*;
use futures::TryStreamExt;
use serde_json::json;
use sha2::{Digest, Sha256};

#[tokio::test]
async fn the_client_secret_credential_gets_a_token_and_reuses_it() {
    let em = emulator().await;
    let scope = format!("{}/.default", em.hsm_resource());
    let cred = credential(&em, SECRET);
    let t1 = cred.get_token(&[&scope], None).await.expect("a token");
    let t2 = cred.get_token(&[&scope], None).await.unwrap();
    assert_eq!(t1.token.secret(), t2.token.secret(), "cached");
    assert_eq!(em.counts()["aad.token"], 1);

    let err = credential(&em, "wrong")
        .get_token(&[&scope], None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("7000215"), "{err}");
}

#[tokio::test]
async fn key_lifecycle_through_the_sdk() {
    let em = emulator().await;
    let client = key_client(&em, HSM);

    // Create RSA, EC and AES keys.
    let rsa = client
        .create_key(
            "sdk-rsa",
            CreateKeyParameters {
                kty: Some(KeyType::RsaHsm),
                key_size: Some(2048),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("create RSA")
        .into_model()
        .unwrap();
    let rsa_version = rsa.resource_id().unwrap().version.unwrap();
    assert_eq!(rsa.key.as_ref().unwrap().n.as_ref().unwrap().len(), 256);
    client
        .create_key(
            "sdk-ec",
            CreateKeyParameters {
                kty: Some(KeyType::EcHsm),
                curve: Some(CurveName::P256),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("create EC");
    client
        .create_key(
            "sdk-aes",
            CreateKeyParameters {
                kty: Some(KeyType::OctHsm),
                key_size: Some(256),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("create AES");

    // Get: latest and by version.
    let latest = client
        .get_key("sdk-rsa", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        latest.resource_id().unwrap().version.as_deref(),
        Some(rsa_version.as_str())
    );
    let by_version = client
        .get_key(
            "sdk-rsa",
            Some(KeyClientGetKeyOptions {
                key_version: Some(rsa_version.clone()),
                ..Default::default()
            }),
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(by_version.key.unwrap().n, latest.key.unwrap().n);

    // Update tags and disable.
    let params = UpdateKeyPropertiesParameters {
        tags: Some(HashMap::from([(
            "owner".to_string(),
            "payments".to_string(),
        )])),
        key_attributes: Some(KeyAttributes {
            enabled: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let updated = client
        .update_key_properties("sdk-ec", params.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(updated.tags.unwrap()["owner"], "payments");
    assert_eq!(updated.attributes.unwrap().enabled, Some(false));

    // List with paging: 30 seeded keys plus ours, more than one page of 25.
    admin(
        &em,
        reqwest::Method::POST,
        &format!("/admin/hsms/{HSM}/seed"),
        json!({"count": 30}),
    )
    .await;
    let mut pager = client.list_key_properties(None).unwrap();
    let mut names = Vec::new();
    while let Some(item) = pager.try_next().await.unwrap() {
        names.push(item.resource_id().unwrap().name);
    }
    assert_eq!(names.len(), 33, "{names:?}");
    assert!(em.counts()["keys.list"] >= 2, "paged over nextLink");

    // Rotate: a new version.
    let rotated = client
        .rotate_key("sdk-rsa", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_ne!(rotated.resource_id().unwrap().version.unwrap(), rsa_version);
    let mut versions = client
        .list_key_properties_versions("sdk-rsa", None)
        .unwrap();
    let mut count = 0;
    while versions.try_next().await.unwrap().is_some() {
        count += 1;
    }
    assert_eq!(count, 2);

    // Backup, delete, purge, restore: versions come back.
    let backup = client
        .backup_key("sdk-rsa", None)
        .await
        .unwrap()
        .into_model()
        .unwrap()
        .value
        .unwrap();
    let deleted = client
        .delete_key("sdk-rsa", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert!(
        deleted
            .recovery_id
            .unwrap()
            .ends_with("/deletedkeys/sdk-rsa")
    );
    client
        .get_deleted_key("sdk-rsa", None)
        .await
        .expect("listed as deleted");
    client
        .purge_deleted_key("sdk-rsa", None)
        .await
        .expect("purge");
    assert!(client.get_key("sdk-rsa", None).await.is_err());
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
    assert_eq!(restored.resource_id().unwrap().name, "sdk-rsa");
    let by_old_version = client
        .get_key(
            "sdk-rsa",
            Some(KeyClientGetKeyOptions {
                key_version: Some(rsa_version.clone()),
                ..Default::default()
            }),
        )
        .await;
    assert!(by_old_version.is_ok(), "restored with all versions");

    // Delete and recover.
    client.delete_key("sdk-aes", None).await.unwrap();
    assert!(client.get_key("sdk-aes", None).await.is_err());
    client
        .recover_deleted_key("sdk-aes", None)
        .await
        .expect("recover");
    client.get_key("sdk-aes", None).await.expect("recovered");

    // Encrypt and decrypt: RSA-OAEP-256 and AES-GCM.
    let rsa_params = KeyOperationParameters {
        algorithm: Some(EncryptionAlgorithm::RsaOaep256),
        value: Some(b"card data".to_vec()),
        ..Default::default()
    };
    let ct = client
        .encrypt("sdk-rsa", rsa_params.clone().try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let version = ct.resource_id().unwrap().version.unwrap();
    let pt = client
        .decrypt(
            "sdk-rsa",
            &version,
            KeyOperationParameters {
                value: ct.result,
                ..rsa_params
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(pt.result.unwrap(), b"card data");

    let gcm = KeyOperationParameters {
        algorithm: Some(EncryptionAlgorithm::A256Gcm),
        value: Some(b"sixty-four bytes of payload, or near enough".to_vec()),
        additional_authenticated_data: Some(b"context".to_vec()),
        ..Default::default()
    };
    let ct = client
        .encrypt("sdk-aes", gcm.clone().try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let version = ct.resource_id().unwrap().version.unwrap();
    let back = KeyOperationParameters {
        value: ct.result,
        iv: ct.iv,
        authentication_tag: ct.authentication_tag,
        ..gcm
    };
    let pt = client
        .decrypt("sdk-aes", &version, back.try_into().unwrap(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(
        pt.result.unwrap(),
        b"sixty-four bytes of payload, or near enough"
    );

    // Sign and verify: ES256 (the EC key must be enabled again first) and PS256.
    let enable = UpdateKeyPropertiesParameters {
        key_attributes: Some(KeyAttributes {
            enabled: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    client
        .update_key_properties("sdk-ec", enable.try_into().unwrap(), None)
        .await
        .unwrap();
    let digest = Sha256::digest(b"release 1.2.3").to_vec();
    for (key, alg) in [
        ("sdk-ec", SignatureAlgorithm::Es256),
        ("sdk-rsa", SignatureAlgorithm::Ps256),
    ] {
        let sig = client
            .sign(
                key,
                SignParameters {
                    algorithm: Some(alg.clone()),
                    value: Some(digest.clone()),
                }
                .try_into()
                .unwrap(),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("sign with {key}: {e}"))
            .into_model()
            .unwrap();
        let version = sig.resource_id().unwrap().version.unwrap();
        let verify = |signature: Vec<u8>| VerifyParameters {
            algorithm: Some(alg.clone()),
            digest: Some(digest.clone()),
            signature: Some(signature),
        };
        let ok = client
            .verify(
                key,
                &version,
                verify(sig.result.clone().unwrap()).try_into().unwrap(),
                None,
            )
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(ok.value, Some(true), "{key} verifies its own signature");
        let mut bad = sig.result.unwrap();
        bad[5] ^= 1;
        let no = client
            .verify(key, &version, verify(bad).try_into().unwrap(), None)
            .await
            .unwrap()
            .into_model()
            .unwrap();
        assert_eq!(no.value, Some(false), "{key} rejects a tampered signature");
    }

    // Import an AES key as a JWK and check it is the same key: wrap with the HSM, unwrap here.
    let k = keyward_emulator::crypto::random_bytes(32);
    let jwk = JsonWebKey {
        kty: Some(KeyType::OctHsm),
        k: Some(k.clone()),
        key_ops: Some(vec!["wrapKey".into(), "unwrapKey".into()]),
        ..Default::default()
    };
    client
        .import_key(
            "sdk-imported",
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
        .expect("import");
    let dek = vec![7u8; 32];
    let wrapped = client
        .wrap_key(
            "sdk-imported",
            KeyOperationParameters {
                algorithm: Some(EncryptionAlgorithm::A256Kw),
                value: Some(dek.clone()),
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
    let local =
        keyward_emulator::crypto::aes_kw_unwrap(&k, &wrapped.result.unwrap(), false).unwrap();
    assert_eq!(local, dek);

    // One token for the whole session: the SDK caches it and the emulator saw it once.
    assert_eq!(em.counts()["aad.token"], 1, "{:?}", em.counts());
    em.stop().await;
}

#[tokio::test]
async fn names_are_case_insensitive_and_keep_the_case_they_were_created_in() {
    let em = emulator().await;
    let client = key_client(&em, HSM);
    let aes = || {
        CreateKeyParameters {
            kty: Some(KeyType::OctHsm),
            key_size: Some(256),
            ..Default::default()
        }
        .try_into()
        .unwrap()
    };
    let first = client.create_key("Key01", aes(), None).await.unwrap();
    // Every response can be traced, as Azure's can.
    let headers = first.headers();
    let request_id = headers
        .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
            "x-ms-request-id",
        ))
        .expect("x-ms-request-id")
        .to_string();
    assert_eq!(request_id.len(), 36, "{request_id}");
    assert!(
        headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(
                "x-ms-keyvault-service-version"
            ))
            .is_some()
    );
    let first = first.into_model().unwrap();
    // The same name in another case is the same key: creating it adds a version.
    let second = client
        .create_key("key01", aes(), None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let (a, b) = (first.resource_id().unwrap(), second.resource_id().unwrap());
    assert_eq!(b.name, "Key01", "spelled as created");
    assert_ne!(a.version, b.version);
    let got = client
        .get_key("KEY01", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(got.resource_id().unwrap().version, b.version);
    let names: Vec<String> = client
        .list_key_properties(None)
        .unwrap()
        .try_collect::<Vec<_>>()
        .await
        .unwrap()
        .iter()
        .filter_map(|k| k.resource_id().ok().map(|r| r.name))
        .filter(|n| n.eq_ignore_ascii_case("key01"))
        .collect();
    assert_eq!(names, vec!["Key01".to_string()], "one key in the list");
    // Soft delete and recovery under yet another spelling.
    client.delete_key("kEY01", None).await.unwrap();
    let recovered = client
        .recover_deleted_key("key01", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    assert_eq!(recovered.resource_id().unwrap().name, "Key01");
}

#[tokio::test]
async fn rotation_policies_are_validated_as_key_vault_does() {
    use azure_security_keyvault_keys::models::{
        KeyRotationPolicy, KeyRotationPolicyAction, KeyRotationPolicyAttributes, LifetimeAction,
        LifetimeActionTrigger, LifetimeActionType,
    };
    let em = emulator().await;
    let client = key_client(&em, HSM);
    client
        .create_key(
            "Rotated",
            CreateKeyParameters {
                kty: Some(KeyType::OctHsm),
                key_size: Some(256),
                ..Default::default()
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .unwrap();
    let action =
        |kind: KeyRotationPolicyAction, after: Option<&str>, before: Option<&str>| LifetimeAction {
            action: Some(LifetimeActionType {
                type_prop: Some(kind),
            }),
            trigger: Some(LifetimeActionTrigger {
                time_after_create: after.map(str::to_string),
                time_before_expiry: before.map(str::to_string),
            }),
        };
    let policy = |expiry: Option<&str>, actions: Vec<LifetimeAction>| KeyRotationPolicy {
        attributes: Some(KeyRotationPolicyAttributes {
            expiry_time: expiry.map(str::to_string),
            ..Default::default()
        }),
        lifetime_actions: Some(actions),
        ..Default::default()
    };
    use KeyRotationPolicyAction::{Notify, Rotate};
    // Accepted: rotate 60 days after creation, notify 30 days before a 90-day expiry.
    let set = client
        .update_key_rotation_policy(
            "rotated",
            policy(
                Some("P90D"),
                vec![
                    action(Rotate, Some("P60D"), None),
                    action(Notify, None, Some("P30D")),
                ],
            )
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("a valid policy")
        .into_model()
        .unwrap();
    assert_eq!(set.lifetime_actions.as_ref().unwrap().len(), 2);
    assert!(set.id.unwrap().ends_with("/keys/Rotated/rotationpolicy"));
    let got = client
        .get_key_rotation_policy("ROTATED", None)
        .await
        .unwrap()
        .into_model()
        .unwrap();
    let kinds: Vec<_> = got
        .lifetime_actions
        .unwrap()
        .into_iter()
        .map(|a| a.action.unwrap().type_prop.unwrap())
        .collect();
    assert_eq!(kinds, vec![Rotate, Notify], "Notify is stored");

    // Refused, each naming the rule.
    let cases = [
        (policy(Some("P27D"), vec![]), "at least 28 days"),
        (
            policy(Some("P90D"), vec![action(Rotate, Some("P6D"), None)]),
            "at least 7 days",
        ),
        (
            policy(Some("P90D"), vec![action(Rotate, Some("P85D"), None)]),
            "expiryTime minus 7 days",
        ),
        (
            policy(Some("P90D"), vec![action(Notify, None, Some("P84D"))]),
            "expiryTime minus 7 days",
        ),
        (
            policy(Some("P90D"), vec![action(Notify, Some("P30D"), None)]),
            "timeBeforeExpiry only",
        ),
        (
            policy(None, vec![action(Rotate, None, Some("P30D"))]),
            "needs attributes.expiryTime",
        ),
    ];
    for (p, says) in cases {
        let err = client
            .update_key_rotation_policy("Rotated", p.try_into().unwrap(), None)
            .await
            .expect_err(says);
        assert!(err.to_string().contains(says), "{says}: {err}");
    }
}
