//! Standard Webhooks 1.0 signatures: `webhook-id`, `webhook-timestamp` and
//! `webhook-signature` (one or more space-separated `v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`), keyed by a `whsec_`-prefixed base64 secret. Used both ways:
//! to verify deliveries Keyward receives and to sign the notifications it sends.
//!
//! The signature is checked over the exact bytes received, before anything parses them; a
//! timestamp more than five minutes off either way is refused (a replay of an old delivery
//! fails here, a repeat within the window on its id), and any one matching `v1` signature is
//! enough, so senders can sign with the old and the new secret while rotating it.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// How far a delivery's timestamp may be from our clock, either way.
pub const TOLERANCE_SECS: i64 = 5 * 60;

const PREFIX: &str = "whsec_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("webhook-timestamp is not a Unix time in seconds")]
    BadTimestamp,
    #[error("webhook-timestamp is more than five minutes in the past")]
    TooOld,
    #[error("webhook-timestamp is more than five minutes in the future")]
    InFuture,
    #[error("no v1 signature in webhook-signature matches")]
    NoMatch,
    #[error("the secret is not a whsec_ base64 secret")]
    BadSecret,
}

/// A signing secret: the key bytes behind `whsec_<base64>`.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// A fresh random secret (32 bytes, within the spec's 24 to 64).
    pub fn generate() -> Secret {
        Secret(keyward_crypto::random_bytes(32))
    }

    pub fn parse(text: &str) -> Result<Secret, SignatureError> {
        let b64 = text.strip_prefix(PREFIX).unwrap_or(text);
        STANDARD
            .decode(b64)
            .ok()
            .filter(|k| !k.is_empty())
            .map(Secret)
            .ok_or(SignatureError::BadSecret)
    }

    pub fn from_bytes(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// `whsec_<base64>`, as shown once to whoever configures the other side.
    pub fn display(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.0))
    }

    fn mac(&self, id: &str, timestamp: &str, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `v1,<base64>` signature of a message.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self
            .mac(id, &timestamp.to_string(), body)
            .finalize()
            .into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }
}

/// The signature headers of a delivery.
pub struct Headers<'a> {
    pub id: Option<&'a str>,
    pub timestamp: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// Verifies a delivery against any of `secrets` (the current one, and the previous one while
/// a rotation's grace period lasts). Returns the message id.
pub fn verify<'a>(
    secrets: &[Secret],
    headers: &Headers<'a>,
    body: &[u8],
    now: i64,
) -> Result<&'a str, SignatureError> {
    let id = headers.id.ok_or(SignatureError::Missing("webhook-id"))?;
    let ts_text = headers
        .timestamp
        .ok_or(SignatureError::Missing("webhook-timestamp"))?;
    let signatures = headers
        .signature
        .ok_or(SignatureError::Missing("webhook-signature"))?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| SignatureError::BadTimestamp)?;
    if ts < now - TOLERANCE_SECS {
        return Err(SignatureError::TooOld);
    }
    if ts > now + TOLERANCE_SECS {
        return Err(SignatureError::InFuture);
    }
    for entry in signatures.split(' ') {
        let Some(("v1", b64)) = entry.split_once(',') else {
            continue;
        };
        let Ok(tag) = STANDARD.decode(b64) else {
            continue;
        };
        for s in secrets {
            // verify_slice compares in constant time.
            if s.mac(id, ts_text.trim(), body).verify_slice(&tag).is_ok() {
                return Ok(id);
            }
        }
    }
    Err(SignatureError::NoMatch)
}

#[cfg(test)]
mod tests {
    use super::*;

    // The test vector of the Standard Webhooks reference libraries.
    const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
    const ID: &str = "msg_27UH4WbU6Z5A5EzD8u03UvzRbpk";
    const TS: i64 = 1_649_367_553;
    const BODY: &[u8] = br#"{"email":"test@example.com","username":"test_user"}"#;
    const SIGNATURE: &str = "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=";

    fn headers<'a>(sig: &'a str, ts: &'a str) -> Headers<'a> {
        Headers {
            id: Some(ID),
            timestamp: Some(ts),
            signature: Some(sig),
        }
    }

    #[test]
    fn the_spec_test_vector_signs_and_verifies() {
        let s = Secret::parse(SECRET).unwrap();
        assert_eq!(s.sign(ID, TS, BODY), SIGNATURE);
        let ts = TS.to_string();
        assert_eq!(
            verify(&[s], &headers(SIGNATURE, &ts), BODY, TS + 10),
            Ok(ID)
        );
        assert_eq!(Secret::parse(SECRET).unwrap().display(), SECRET);
    }

    #[test]
    fn any_matching_signature_of_several_and_either_secret_will_do() {
        let old = Secret::parse(SECRET).unwrap();
        let new = Secret::generate();
        let ts = TS.to_string();
        let both = format!("v1,bm9wZQ== {} v1a,ignored", new.sign(ID, TS, BODY));
        assert_eq!(
            verify(std::slice::from_ref(&new), &headers(&both, &ts), BODY, TS),
            Ok(ID)
        );
        assert_eq!(
            verify(&[new, old], &headers(SIGNATURE, &ts), BODY, TS),
            Ok(ID)
        );
    }

    #[test]
    fn tampering_staleness_and_missing_headers_are_refused() {
        let s = Secret::parse(SECRET).unwrap();
        let ts = TS.to_string();
        let sec = [s];
        let tampered = br#"{"email":"test@example.com","username":"root"}"#;
        assert_eq!(
            verify(&sec, &headers(SIGNATURE, &ts), tampered, TS),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&sec, &headers(SIGNATURE, &ts), BODY, TS + 301),
            Err(SignatureError::TooOld)
        );
        assert_eq!(
            verify(&sec, &headers(SIGNATURE, &ts), BODY, TS - 301),
            Err(SignatureError::InFuture)
        );
        assert_eq!(
            verify(&sec, &headers(SIGNATURE, "soon"), BODY, TS),
            Err(SignatureError::BadTimestamp)
        );
        let none = Headers {
            id: Some(ID),
            timestamp: Some(&ts),
            signature: None,
        };
        assert_eq!(
            verify(&sec, &none, BODY, TS),
            Err(SignatureError::Missing("webhook-signature"))
        );
        assert!(Secret::parse("whsec_***").is_err());
    }
}
