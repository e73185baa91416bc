//! Where the daemon is and which groups are the module's slots: a TOML file named by
//! `KEYWARD_PKCS11_CONF`, each setting overridable from the environment.
//!
//! ```toml
//! address = "https://keyward.example.com:4443"
//! ca_file = "/etc/keyward/ca.pem"            # optional: a CA for the daemon's certificate
//! app_id = "3f0c…"                           # optional: the PIN must be this application's
//! api_key_file = "/etc/keyward/app.key"      # optional: the credential, instead of the PIN
//! wait_for_quorum_approval = 300             # optional: seconds to wait for a quorum
//! [[slot]]
//! group_id = "5e6f…"
//! label = "payments"                         # optional: shown before login
//! ```
//!
//! Without `[[slot]]`, and with `api_key_file`, every group the application may use is a
//! slot, labelled with the group's name, as the daemon lists them at `C_Initialize`.
//!
//! Environment: `KEYWARD_PKCS11_ADDR`, `KEYWARD_PKCS11_CA`, `KEYWARD_PKCS11_APP_ID`,
//! `KEYWARD_PKCS11_GROUPS` (group ids, comma-separated: one slot each),
//! `KEYWARD_PKCS11_API_KEY_FILE`.
//!
//! With `api_key_file` the file is the application's credential (readable by whoever may use
//! the keys, and nobody else): the token needs no login (opening a session logs the slot in,
//! as OpenSSH's `ssh -I` and `ssh-keygen -D` expect) and `C_Login` takes any PIN, since many
//! PKCS#11 front ends take no PIN longer than 32 characters and an API key is longer.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The daemon's base URL.
    #[serde(default)]
    pub address: String,
    pub ca_file: Option<PathBuf>,
    pub app_id: Option<String>,
    pub api_key_file: Option<PathBuf>,
    /// A quorum-protected operation asks for approval and waits this many seconds for it
    /// (DSM's `wait_for_quorum_approval`); unset, it fails at once with the request's id.
    pub wait_for_quorum_approval: Option<u64>,
    #[serde(default, rename = "slot")]
    pub slots: Vec<SlotConfig>,
}

/// One slot: a group the application may use.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlotConfig {
    pub group_id: String,
    pub label: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, toml::de::Error),
    #[error("no daemon address: set `address` in KEYWARD_PKCS11_CONF or KEYWARD_PKCS11_ADDR")]
    NoAddress,
    #[error(
        "no slots: add [[slot]] group_id = \"...\" to KEYWARD_PKCS11_CONF, set KEYWARD_PKCS11_GROUPS, or give api_key_file to use every group of the application"
    )]
    NoSlots,
}

impl Config {
    /// The API key from `api_key_file`, read at each use (a replaced file takes effect).
    pub fn stored_key(&self) -> Option<Result<String, ConfigError>> {
        self.api_key_file.as_ref().map(|f| {
            std::fs::read_to_string(f)
                .map(|k| k.trim().to_string())
                .map_err(|e| ConfigError::Read(f.clone(), e))
        })
    }

    /// The configuration from the file and the environment.
    pub fn load() -> Result<Config, ConfigError> {
        Config::from_sources(
            std::env::var_os("KEYWARD_PKCS11_CONF").map(PathBuf::from),
            |k| std::env::var(k).ok(),
        )
    }

    /// As [`load`](Self::load), with the environment given (for tests).
    pub fn from_sources(
        file: Option<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut c = match file {
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| ConfigError::Read(path.clone(), e))?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse(path, e))?
            }
            None => Config::default(),
        };
        if let Some(a) = env("KEYWARD_PKCS11_ADDR") {
            c.address = a;
        }
        if let Some(ca) = env("KEYWARD_PKCS11_CA") {
            c.ca_file = Some(PathBuf::from(ca));
        }
        if let Some(app) = env("KEYWARD_PKCS11_APP_ID") {
            c.app_id = Some(app);
        }
        if let Some(f) = env("KEYWARD_PKCS11_API_KEY_FILE") {
            c.api_key_file = Some(PathBuf::from(f));
        }
        if let Some(groups) = env("KEYWARD_PKCS11_GROUPS") {
            c.slots = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(|g| SlotConfig {
                    group_id: g.to_string(),
                    label: None,
                })
                .collect();
        }
        c.address = c.address.trim_end_matches('/').to_string();
        if c.address.is_empty() {
            return Err(ConfigError::NoAddress);
        }
        // With the credential at hand the slots can be the application's groups.
        if c.slots.is_empty() && c.api_key_file.is_none() {
            return Err(ConfigError::NoSlots);
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_gives_slots_and_the_environment_overrides() {
        let dir = std::env::temp_dir().join(format!("kw-pkcs11-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("pkcs11.toml");
        std::fs::write(
            &file,
            "address = \"http://a/\"\n[[slot]]\ngroup_id = \"g1\"\nlabel = \"one\"\n",
        )
        .unwrap();
        let c = Config::from_sources(Some(file.clone()), |_| None).unwrap();
        assert_eq!(c.address, "http://a");
        assert_eq!(c.slots[0].label.as_deref(), Some("one"));
        let c = Config::from_sources(Some(file), |k| match k {
            "KEYWARD_PKCS11_GROUPS" => Some("g2, g3".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(c.slots.len(), 2);
        assert!(matches!(
            Config::from_sources(None, |_| None),
            Err(ConfigError::NoAddress)
        ));
    }
}
