//! ECDSA signatures in the two encodings clients use: raw `r ‖ s` (JOSE, Azure) and the
//! ASN.1 DER `SEQUENCE { r, s }` (X.509, PKCS#11, DSM).

use super::*;

/// `r ‖ s` as DER.
pub fn ecdsa_signature_to_der(curve: Curve, raw: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let invalid = |_| bad("The signature is not an ECDSA signature for the key's curve.");
    Ok(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_slice(raw)
            .map_err(invalid)?
            .to_der()
            .as_bytes()
            .to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_slice(raw)
            .map_err(invalid)?
            .to_der()
            .as_bytes()
            .to_vec(),
        Curve::P521 => p521::ecdsa::Signature::from_slice(raw)
            .map_err(invalid)?
            .to_der()
            .as_bytes()
            .to_vec(),
    })
}

/// DER as `r ‖ s`; `None` when `der` is not a DER signature for the curve.
pub fn ecdsa_signature_from_der(curve: Curve, der: &[u8]) -> Option<Vec<u8>> {
    Some(match curve {
        Curve::P256 => p256::ecdsa::Signature::from_der(der)
            .ok()?
            .to_bytes()
            .to_vec(),
        Curve::P384 => p384::ecdsa::Signature::from_der(der)
            .ok()?
            .to_bytes()
            .to_vec(),
        Curve::P521 => p521::ecdsa::Signature::from_der(der)
            .ok()?
            .to_bytes()
            .to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_and_der_round_trip_on_every_curve() {
        for (curve, len) in [(Curve::P256, 32), (Curve::P384, 48), (Curve::P521, 66)] {
            let mut raw = vec![0u8; 2 * len];
            raw[len - 1] = 7; // r = 7
            raw[2 * len - 1] = 9; // s = 9
            let der = ecdsa_signature_to_der(curve, &raw).unwrap();
            assert_eq!(der[0], 0x30, "a SEQUENCE");
            assert_eq!(ecdsa_signature_from_der(curve, &der), Some(raw.clone()));
            assert_eq!(
                ecdsa_signature_from_der(curve, &raw),
                None,
                "raw is not DER"
            );
        }
        assert!(ecdsa_signature_to_der(Curve::P256, &[1; 10]).is_err());
    }
}
