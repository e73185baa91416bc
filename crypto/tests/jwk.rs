//! Private keys survive the trip through a JWK: what the rebuilt key signs, the original
//! verifies (a JWK drops leading zero bytes, which must not change the key).

use keyward_crypto::{Kty, Material, rsa_private_jwk};

#[test]
fn an_rsa_key_rebuilt_from_its_jwk_signs_as_the_original() {
    for _ in 0..4 {
        let m = Material::generate_rsa(2048, None).unwrap();
        let Material::Rsa(k) = &m else { unreachable!() };
        let jwk = rsa_private_jwk(k);
        let rebuilt = Material::from_jwk(Kty::Rsa, &jwk).unwrap();
        let digest = keyward_crypto::sha256(b"data");
        let sig = rebuilt.sign("RS256", &digest).unwrap();
        assert!(m.verify("RS256", &digest, &sig).unwrap());
        assert_eq!(rebuilt.to_der(), m.to_der());
    }
}
