//! Access tokens: RS256-signed JWTs carrying tenant, application, audience and expiry, the
//! way Entra ID issues them for the client-credentials flow.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rsa::PrivateKey;
use rsa::traits::PublicKeyParts;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::crypto::b64url;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub aud: String,
    pub iss: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Application (client) id.
    pub appid: String,
    /// Service principal object id.
    pub oid: String,
    pub sub: String,
    /// Tenant id.
    pub tid: String,
    pub ver: String,
    pub idtyp: String,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token signature is invalid")]
    BadSignature,
    #[error("the token is expired")]
    Expired,
    #[error("the token is not yet valid")]
    NotYetValid,
}

pub struct TokenIssuer {
    key: PrivateKey,
    kid: String,
}

impl TokenIssuer {
    pub fn new(key: PrivateKey) -> TokenIssuer {
        let kid = b64url(&Sha256::digest(key.n_bytes())[..16]);
        TokenIssuer { key, kid }
    }

    pub fn key(&self) -> &PrivateKey {
        &self.key
    }

    pub fn issue(&self, claims: &Claims) -> String {
        self.sign_json(&serde_json::to_value(claims).expect("claims serialize"))
    }

    /// A compact RS256 JWS of `payload` (access tokens, key release answers).
    pub fn sign_json(&self, payload: &serde_json::Value) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid, "x5t": self.kid});
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(payload.to_string().as_bytes())
        );
        let digest = Sha256::digest(signing_input.as_bytes());
        let sig = self
            .key
            .pkcs1v15_sign_prehash::<Sha256>(&digest)
            .expect("RS256 signing");
        format!("{signing_input}.{}", b64url(&sig))
    }

    /// Checks signature and time window (with a small clock skew allowance). The caller
    /// checks audience, tenant and application.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Malformed);
        };
        let sig = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| TokenError::Malformed)?;
        let digest = Sha256::digest(format!("{h}.{p}").as_bytes());
        self.key
            .to_public_key()
            .pkcs1v15_verify_prehash::<Sha256>(&digest, &sig)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
        const SKEW: i64 = 300;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf > now + SKEW {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }

    /// The signing key's public half (to check what it signed).
    pub fn public_key(&self) -> rsa::PublicKey {
        self.key.to_public_key()
    }

    /// The signing key as a JWK set (`/{tenant}/discovery/v2.0/keys`).
    pub fn jwks(&self) -> serde_json::Value {
        json!({"keys": [{
            "kty": "RSA", "use": "sig", "kid": self.kid, "x5t": self.kid,
            "n": b64url(&self.key.n_bytes()), "e": b64url(&self.key.e_bytes()),
        }]})
    }
}

/// The claims of an RS256 JWT signed by `key`, whatever they are (attestation tokens, whose
/// claims belong to the attestation service).
pub fn verify_rs256(key: &rsa::PublicKey, token: &str) -> Result<serde_json::Value, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header: serde_json::Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)?;
    if header["alg"] != "RS256" {
        return Err(TokenError::Malformed);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| TokenError::Malformed)?;
    let digest = Sha256::digest(format!("{h}.{p}").as_bytes());
    key.pkcs1v15_verify_prehash::<Sha256>(&digest, &sig)
        .map_err(|_| TokenError::BadSignature)?;
    URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(TokenError::Malformed)
}

/// The claims of a JWT without checking its signature (to find out who issued it first).
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    let payload = token.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}
