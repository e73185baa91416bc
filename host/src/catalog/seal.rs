//! Sealing secrets at rest: AES-256-GCM under the master key, bound to where the secret is
//! stored (the associated data names the table and row), so a sealed value copied into
//! another row does not open.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use keyward_crypto::{gcm_open, gcm_seal, random_bytes};

/// Environment variable that may carry the master key (base64 of 32 bytes) instead of the
/// key file.
pub const MASTER_KEY_ENV: &str = "KEYWARD_MASTER_KEY";
const VERSION: u8 = 1;

/// The key that seals every secret in the catalog.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the master key in {0} is not 32 bytes of base64")]
    BadKey(String),
    #[error("cannot read or create the master key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "a sealed value could not be opened (wrong master key, or the value was tampered with)"
    )]
    Open,
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(bytes)
    }

    pub fn generate() -> MasterKey {
        MasterKey(random_bytes(32).try_into().expect("32 bytes"))
    }

    fn parse(text: &str, origin: &str) -> Result<MasterKey, SealError> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| SealError::BadKey(origin.into()))?;
        Ok(MasterKey(
            bytes
                .try_into()
                .map_err(|_| SealError::BadKey(origin.into()))?,
        ))
    }

    /// The master key from `KEYWARD_MASTER_KEY`, else from `path`, which is created (mode
    /// 0600) with a fresh key on first start.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, SealError> {
        if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
            return MasterKey::parse(&text, MASTER_KEY_ENV);
        }
        let file_err = |source| SealError::File {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read_to_string(path) {
            Ok(text) => MasterKey::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = MasterKey::generate();
                write_private(path, &STANDARD.encode(key.0)).map_err(file_err)?;
                tracing::warn!(path = %path.display(), "created a new master key; back it up: without it the catalog's secrets cannot be opened");
                Ok(key)
            }
            Err(e) => Err(file_err(e)),
        }
    }

    /// Seals `plain` for the place named by `context` (e.g. `sobject:{kid}:material`).
    pub fn seal(&self, context: &str, plain: &[u8]) -> Vec<u8> {
        let nonce = random_bytes(12);
        let sealed = gcm_seal(&self.0, &nonce, plain, context.as_bytes())
            .expect("AES-256-GCM with a 32-byte key");
        let mut out = Vec::with_capacity(1 + 12 + sealed.len());
        out.push(VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        if sealed.len() < 1 + 12 + 16 || sealed[0] != VERSION {
            return Err(SealError::Open);
        }
        gcm_open(&self.0, &sealed[1..13], &sealed[13..], context.as_bytes())
            .map_err(|_| SealError::Open)
    }
}

fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_place_and_with_their_key() {
        let k = MasterKey::generate();
        let sealed = k.seal("sobject:1:material", b"secret");
        assert_eq!(k.open("sobject:1:material", &sealed).unwrap(), b"secret");
        assert!(k.open("sobject:2:material", &sealed).is_err());
        assert!(
            MasterKey::generate()
                .open("sobject:1:material", &sealed)
                .is_err()
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert!(k.open("sobject:1:material", &tampered).is_err());
    }

    #[test]
    fn the_key_file_is_created_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let a = MasterKey::load_or_create(&path).unwrap();
        let b = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(a.0, b.0);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
    }
}
