//! Login profiles: where the CLI connects and with which session token, by name, in
//! `<config dir>/keyward/profiles.toml` (`$XDG_CONFIG_HOME` or `~/.config` on Linux),
//! written readable by the user only because it holds tokens. `KEYWARD_CONFIG_DIR` moves it.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CliError;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// The daemon's base URL.
    pub addr: String,
    /// PEM file of a CA to trust for the daemon's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// The session token of the last `keyward login`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The account the session acts in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Who logged in (an email or an application id), to show.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    /// The client certificate (PEM file) a certificate application logged in with, presented
    /// on every call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// Its private key (PEM file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    profiles: BTreeMap<String, Profile>,
}

pub struct Profiles {
    path: PathBuf,
    file: File,
}

fn local(e: impl std::fmt::Display, path: &std::path::Path) -> CliError {
    CliError::Local(format!("{}: {e}", path.display()))
}

impl Profiles {
    fn path() -> Result<PathBuf, CliError> {
        if let Some(dir) = std::env::var_os("KEYWARD_CONFIG_DIR") {
            return Ok(PathBuf::from(dir).join("profiles.toml"));
        }
        dirs::config_dir()
            .map(|d| d.join("keyward").join("profiles.toml"))
            .ok_or_else(|| {
                CliError::Local(
                    "no configuration directory (set HOME or KEYWARD_CONFIG_DIR)".into(),
                )
            })
    }

    /// The profiles on disk (none yet: an empty set).
    pub fn load() -> Result<Profiles, CliError> {
        let path = Self::path()?;
        let file = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| local(e, &path))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => File::default(),
            Err(e) => return Err(local(e, &path)),
        };
        Ok(Profiles { path, file })
    }

    pub fn get(&self, name: &str) -> Option<&Profile> {
        self.file.profiles.get(name)
    }

    pub fn all(&self) -> &BTreeMap<String, Profile> {
        &self.file.profiles
    }

    pub fn put(&mut self, name: &str, profile: Profile) {
        self.file.profiles.insert(name.to_string(), profile);
    }

    /// Writes the file (mode 0600; a directory it creates gets 0700) through a temporary file,
    /// so a crash never leaves half a file.
    pub fn save(&self) -> Result<(), CliError> {
        let dir = self.path.parent().expect("the file is in a directory");
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| local(e, dir))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
                    .map_err(|e| local(e, dir))?;
            }
        }
        let text = toml::to_string(&self.file).map_err(|e| local(e, &self.path))?;
        let tmp = self.path.with_extension("toml.tmp");
        // A stale temporary file could have looser permissions than the ones set below.
        let _ = std::fs::remove_file(&tmp);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut f = options.open(&tmp).map_err(|e| local(e, &tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| local(e, &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| local(e, &self.path))
    }
}
