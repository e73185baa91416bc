//! Keys in and out through the module: import (C_CreateObject) of AES, RSA and EC keys whose
//! signatures and ciphertexts an independent implementation checks; wrap and unwrap (AES-KW,
//! AES-KWP, RSA-OAEP) round trips; multi-part AES-GCM and AES-CBC-PAD; and the export
//! promise: a key that is not exportable, or whose EXPORT was removed after the module
//! listed it, is never wrapped.

use keyward_crypto::Material;
use reqwest::Method;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use serde_json::json;
use sha2::Sha256;

use super::World;
use super::capi::*;

fn aes_template(label: &str) -> Attrs {
    Attrs::default()
        .ulong(CKA_CLASS, CKO_SECRET_KEY)
        .ulong(CKA_KEY_TYPE, CKK_AES)
        .bytes(CKA_LABEL, label.as_bytes())
        .flag(CKA_ENCRYPT, true)
        .flag(CKA_DECRYPT, true)
}

fn cbc_pad(iv: &mut [u8; 16]) -> CK_MECHANISM {
    with_params(CKM_AES_CBC_PAD, iv)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imported_keys_work_as_their_material_says_and_wrapping_keeps_the_export_rules() {
    let w = std::sync::Arc::new(World::start().await);
    let rt = tokio::runtime::Handle::current();
    // A local RSA key and a P-256 key, imported from their components.
    let Material::Rsa(rsa_key) = Material::generate_rsa(2048, None).unwrap() else {
        unreachable!()
    };
    let ec_key = p256::SecretKey::from_slice(&[7u8; 32]).unwrap();

    tokio::task::spawn_blocking(move || {
        let conf = w.conf_file();
        let api_key = w.api_key.clone();
        let m = Loaded::take(&conf);
        assert_eq!(m.initialize(), CKR_OK);
        let s = m.open(true);
        assert_eq!(m.login(s, &api_key), CKR_OK);

        // AES from CKA_VALUE: CBC-PAD through the module is the crypto crate's CBC with the
        // same key and iv; in parts or whole, the same.
        let value = [0x42u8; 32];
        let aes = m
            .create(s, &aes_template("imported-aes").bytes(CKA_VALUE, &value))
            .unwrap();
        assert_eq!(m.attribute(s, aes, CKA_VALUE), Err(CKR_ATTRIBUTE_SENSITIVE));
        let mut iv = [9u8; 16];
        let plain = b"forty-one bytes in three uneven parts....";
        let whole = m.crypt(s, false, cbc_pad(&mut iv), aes, plain).unwrap();
        assert_eq!(
            whole,
            keyward_crypto::cbc_seal(&value, &iv, plain, true).unwrap()
        );
        let parts: [&[u8]; 3] = [&plain[..5], &plain[5..30], &plain[30..]];
        assert_eq!(
            m.crypt_parts(s, false, cbc_pad(&mut iv), aes, &parts)
                .unwrap(),
            whole
        );
        assert_eq!(
            m.crypt_parts(
                s,
                true,
                cbc_pad(&mut iv),
                aes,
                &[&whole[..20], &whole[20..]]
            )
            .unwrap(),
            plain
        );
        // GCM in parts: the tag follows the ciphertext; a changed byte does not open.
        let mut gcm = CK_GCM_PARAMS {
            pIv: [3u8; 12].as_ptr() as *mut _,
            ulIvLen: 12,
            ulIvBits: 96,
            pAAD: std::ptr::null_mut(),
            ulAADLen: 0,
            ulTagBits: 128,
        };
        let mut sealed = m
            .crypt_parts(s, false, with_params(CKM_AES_GCM, &mut gcm), aes, &parts)
            .unwrap();
        assert_eq!(sealed.len(), plain.len() + 16);
        assert_eq!(
            m.crypt(s, true, with_params(CKM_AES_GCM, &mut gcm), aes, &sealed)
                .unwrap(),
            plain
        );
        sealed[0] ^= 1;
        assert_eq!(
            m.crypt_parts(s, true, with_params(CKM_AES_GCM, &mut gcm), aes, &[&sealed])
                .unwrap_err(),
            CKR_ENCRYPTED_DATA_INVALID
        );
        // Unpadded CBC takes whole blocks only.
        assert_eq!(
            m.crypt(s, false, with_params(CKM_AES_CBC, &mut iv), aes, b"ragged")
                .unwrap_err(),
            CKR_DATA_LEN_RANGE
        );

        // RSA from its components signs what the local public key verifies.
        let be = |n: &rsa::BoxedUint| {
            let b = n.to_be_bytes();
            b.iter()
                .skip_while(|x| **x == 0)
                .copied()
                .collect::<Vec<u8>>()
        };
        let primes = rsa_key.primes();
        let rsa = m
            .create(
                s,
                &Attrs::default()
                    .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
                    .ulong(CKA_KEY_TYPE, CKK_RSA)
                    .bytes(CKA_LABEL, b"imported-rsa")
                    .flag(CKA_SIGN, true)
                    .bytes(CKA_MODULUS, &be(rsa_key.n()))
                    .bytes(CKA_PUBLIC_EXPONENT, &be(rsa_key.e()))
                    .bytes(CKA_PRIVATE_EXPONENT, &be(rsa_key.d()))
                    .bytes(CKA_PRIME_1, &be(&primes[0]))
                    .bytes(CKA_PRIME_2, &be(&primes[1])),
            )
            .unwrap();
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_SHA256_RSA_PKCS), rsa),
            CKR_OK
        );
        let sig = m.sign(s, b"an imported signer").unwrap();
        VerifyingKey::<Sha256>::new(rsa_key.to_public_key())
            .verify(
                b"an imported signer",
                &Signature::try_from(sig.as_slice()).unwrap(),
            )
            .expect("the local public key verifies");
        // EC from CKA_EC_PARAMS and the scalar.
        let p256_oid = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
        let ec = m
            .create(
                s,
                &Attrs::default()
                    .ulong(CKA_CLASS, CKO_PRIVATE_KEY)
                    .ulong(CKA_KEY_TYPE, CKK_EC)
                    .bytes(CKA_LABEL, b"imported-ec")
                    .flag(CKA_SIGN, true)
                    .bytes(CKA_EC_PARAMS, &p256_oid)
                    .bytes(CKA_VALUE, &ec_key.to_bytes()),
            )
            .unwrap();
        assert_eq!(
            m.sign_init(s, Loaded::mechanism(CKM_ECDSA_SHA256), ec),
            CKR_OK
        );
        let sig = m.sign(s, b"an imported EC signer").unwrap();
        use p256::ecdsa::signature::Verifier as _;
        p256::ecdsa::VerifyingKey::from(ec_key.public_key())
            .verify(
                b"an imported EC signer",
                &p256::ecdsa::Signature::from_slice(&sig).unwrap(),
            )
            .expect("the local public key verifies");
        // What Keyward does not hold, or material that is not a key, is refused.
        let public_only = Attrs::default()
            .ulong(CKA_CLASS, CKO_PUBLIC_KEY)
            .ulong(CKA_KEY_TYPE, CKK_RSA)
            .bytes(CKA_MODULUS, &be(rsa_key.n()));
        assert_eq!(m.create(s, &public_only), Err(CKR_TEMPLATE_INCONSISTENT));
        assert_eq!(
            m.create(s, &aes_template("short").bytes(CKA_VALUE, &[1u8; 5])),
            Err(CKR_TEMPLATE_INCONSISTENT)
        );
        assert_eq!(
            m.create(s, &aes_template("no-value")),
            Err(CKR_TEMPLATE_INCOMPLETE)
        );

        // Wrapping: an AES key-encryption key, an exportable subject, both key wraps.
        let kek = m
            .generate_key(
                s,
                CKM_AES_KEY_GEN,
                &Attrs::default()
                    .ulong(CKA_VALUE_LEN, 32)
                    .bytes(CKA_LABEL, b"kek")
                    .flag(CKA_WRAP, true)
                    .flag(CKA_UNWRAP, true),
            )
            .unwrap();
        let subject = m
            .generate_key(
                s,
                CKM_AES_KEY_GEN,
                &Attrs::default()
                    .ulong(CKA_VALUE_LEN, 32)
                    .bytes(CKA_LABEL, b"subject")
                    .flag(CKA_ENCRYPT, true)
                    .flag(CKA_DECRYPT, true)
                    .flag(CKA_EXTRACTABLE, true),
            )
            .unwrap();
        assert_eq!(m.attribute(s, subject, CKA_EXTRACTABLE), Ok(vec![CK_TRUE]));
        let reference = m.crypt(s, false, cbc_pad(&mut iv), subject, plain).unwrap();
        for mech in [CKM_AES_KEY_WRAP, CKM_AES_KEY_WRAP_KWP] {
            let wrapped = m.wrap(s, Loaded::mechanism(mech), kek, subject).unwrap();
            assert_eq!(wrapped.len(), 40, "a 32-byte key and the 8-byte check");
            let label = format!("unwrapped-{mech}");
            let back = m
                .unwrap(
                    s,
                    Loaded::mechanism(mech),
                    kek,
                    &wrapped,
                    &aes_template(&label),
                )
                .unwrap();
            assert_eq!(
                m.crypt(s, false, cbc_pad(&mut iv), back, plain).unwrap(),
                reference,
                "the unwrapped key is the subject"
            );
            let mut garbled = wrapped.clone();
            garbled[3] ^= 0xff;
            assert_eq!(
                m.unwrap(
                    s,
                    Loaded::mechanism(mech),
                    kek,
                    &garbled,
                    &aes_template("bad")
                ),
                Err(CKR_WRAPPED_KEY_INVALID)
            );
        }
        // RSA-OAEP: the public half wraps, the private half unwraps.
        let (mut public, mut private) = (0, 0);
        let mut rsa_mech = Loaded::mechanism(CKM_RSA_PKCS_KEY_PAIR_GEN);
        let pub_t = Attrs::default()
            .ulong(CKA_MODULUS_BITS, 2048)
            .bytes(CKA_LABEL, b"rsa-kek")
            .flag(CKA_WRAP, true);
        let priv_t = Attrs::default().flag(CKA_UNWRAP, true);
        let (mut pub_raw, mut priv_raw) = (pub_t.raw(), priv_t.raw());
        assert_eq!(
            unsafe {
                m.f.C_GenerateKeyPair.unwrap()(
                    s,
                    &mut rsa_mech,
                    pub_raw.as_mut_ptr(),
                    pub_raw.len() as CK_ULONG,
                    priv_raw.as_mut_ptr(),
                    priv_raw.len() as CK_ULONG,
                    &mut public,
                    &mut private,
                )
            },
            CKR_OK
        );
        let mut oaep = CK_RSA_PKCS_OAEP_PARAMS {
            hashAlg: CKM_SHA256,
            mgf: CKG_MGF1_SHA256,
            source: CKZ_DATA_SPECIFIED,
            pSourceData: std::ptr::null_mut(),
            ulSourceDataLen: 0,
        };
        let wrapped = m
            .wrap(
                s,
                with_params(CKM_RSA_PKCS_OAEP, &mut oaep),
                public,
                subject,
            )
            .unwrap();
        assert_eq!(wrapped.len(), 256);
        let back = m
            .unwrap(
                s,
                with_params(CKM_RSA_PKCS_OAEP, &mut oaep),
                private,
                &wrapped,
                &aes_template("unwrapped-oaep"),
            )
            .unwrap();
        assert_eq!(
            m.crypt(s, false, cbc_pad(&mut iv), back, plain).unwrap(),
            reference
        );

        // The export rules: a key that is not exportable is not wrapped; nor is a public
        // object; a key that may not wrap does not.
        let kwp = Loaded::mechanism(CKM_AES_KEY_WRAP_KWP);
        assert_eq!(m.attribute(s, aes, CKA_EXTRACTABLE), Ok(vec![CK_FALSE]));
        assert_eq!(m.wrap(s, kwp, kek, aes), Err(CKR_KEY_UNEXTRACTABLE));
        assert_eq!(
            m.wrap(s, kwp, subject, kek),
            Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
        );
        assert_eq!(
            m.wrap(s, Loaded::mechanism(CKM_AES_KEY_WRAP), kek, public),
            Err(CKR_KEY_NOT_WRAPPABLE)
        );
        assert_eq!(
            m.wrap(s, kwp, public, subject),
            Err(CKR_WRAPPING_KEY_TYPE_INCONSISTENT)
        );

        // EXPORT removed through the API after the module listed the key: the daemon
        // refuses the wrap the listing would have allowed, and audits nothing as exported.
        let listed = rt.block_on(w.admin.ok(
            Method::GET,
            &format!("/crypto/v1/keys?group_id={}&name=subject", w.group),
            None,
        ));
        let kid = listed[0]["kid"].as_str().unwrap().to_string();
        rt.block_on(w.admin.ok(
            Method::PATCH,
            &format!("/crypto/v1/keys/{kid}"),
            Some(json!({"key_ops": ["ENCRYPT", "DECRYPT", "APPMANAGEABLE"]})),
        ));
        assert_eq!(
            m.wrap(s, kwp, kek, subject),
            Err(CKR_KEY_FUNCTION_NOT_PERMITTED)
        );
        // Listed again, the key says so itself.
        m.find(s, CKO_SECRET_KEY, "subject");
        assert_eq!(m.attribute(s, subject, CKA_EXTRACTABLE), Ok(vec![CK_FALSE]));
        assert_eq!(m.wrap(s, kwp, kek, subject), Err(CKR_KEY_UNEXTRACTABLE));
    })
    .await
    .unwrap();
}
