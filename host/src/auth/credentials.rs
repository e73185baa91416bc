//! Credentials: user passwords (argon2id) and application API keys.
//!
//! An API key is, as in Fortanix DSM, `base64(app_id:secret)`; the catalog keeps only the
//! SHA-256 of the secret. The secret is 32 random bytes, so a fast hash is as good as a slow
//! one here (there is nothing to brute-force), and it keeps API-key logins cheap.

use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Argon2, PasswordHash};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};

pub const MIN_PASSWORD_LEN: usize = 8;

/// argon2id PHC string for a password.
pub fn hash_password(password: &str) -> String {
    Argon2::default()
        .hash_password(password.as_bytes())
        .expect("argon2 hashing with default parameters")
        .to_string()
}

/// Checks a password against the stored hash, or, for an unknown user, against a hash of
/// nothing in particular: either way the check costs one argon2 verification, so the time a
/// login takes does not tell whether the email exists.
pub fn verify_password_or_dummy(hash: Option<&str>, password: &str) -> bool {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    match hash {
        Some(h) => verify_password(h, password),
        None => {
            let dummy = DUMMY.get_or_init(|| hash_password("no user has this password"));
            verify_password(dummy, password);
            false
        }
    }
}

pub fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// An application's API key.
pub struct ApiKey {
    pub app_id: String,
    secret: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKey({}, ..)", self.app_id)
    }
}

impl ApiKey {
    pub fn generate(app_id: &str) -> ApiKey {
        ApiKey {
            app_id: app_id.to_string(),
            secret: URL_SAFE_NO_PAD.encode(keyward_crypto::random_bytes(32)),
        }
    }

    /// Parses the base64 form handed to the application.
    pub fn parse(text: &str) -> Option<ApiKey> {
        let decoded = String::from_utf8(STANDARD.decode(text.trim()).ok()?).ok()?;
        let (app_id, secret) = decoded.split_once(':')?;
        Some(ApiKey {
            app_id: app_id.to_string(),
            secret: secret.to_string(),
        })
    }

    /// What the application is given, once.
    pub fn encoded(&self) -> String {
        STANDARD.encode(format!("{}:{}", self.app_id, self.secret))
    }

    /// The key of `app_id` with a secret read back from its sealed copy.
    pub fn from_secret(app_id: &str, secret: String) -> ApiKey {
        ApiKey {
            app_id: app_id.to_string(),
            secret,
        }
    }

    /// The secret half, for sealing at rest and for DSM's credential endpoint.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    pub fn hash(&self) -> Vec<u8> {
        Sha256::digest(self.secret.as_bytes()).to_vec()
    }

    /// Constant-time comparison with a stored hash.
    pub fn matches(&self, stored: &[u8]) -> bool {
        let h = self.hash();
        h.len() == stored.len() && h.iter().zip(stored).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let h = hash_password("correct horse");
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "wrong horse"));
        assert!(!verify_password("not a hash", "correct horse"));
    }

    #[test]
    fn api_keys_round_trip_and_match_their_hash() {
        let k = ApiKey::generate("app-1");
        let parsed = ApiKey::parse(&k.encoded()).unwrap();
        assert_eq!(parsed.app_id, "app-1");
        assert!(parsed.matches(&k.hash()));
        assert!(!ApiKey::generate("app-1").matches(&k.hash()));
        assert!(ApiKey::parse("not base64!").is_none());
        assert!(!format!("{k:?}").contains(&k.secret));
    }
}
