//! Helpers shared by Keyward's end-to-end tests: fixture plugins, plugin directories,
//! policy requests, and a local HTTPS server with its own CA.

pub mod api;
pub mod azure;
pub mod child;
pub mod pkcs11;
pub mod postgres;
pub mod tls;

use std::path::{Path, PathBuf};

use keyward::plugins::policy::{
    Action, Curve, KeyAttributes, KeyOp, KeySpec, KeyType, PolicyRequest, Principal, Tag, Timestamp,
};
use keyward::plugins::{PluginRuntime, RuntimeConfig};

/// A fixed "now" for policy requests: 2026-01-01T00:00:00Z.
pub const NOW: Timestamp = 1_767_225_600;
pub const DAY: i64 = 86_400;

/// The compiled fixture component `<crate_name>.wasm` (e.g. `fixture_prefix_policy.wasm`).
pub fn fixture(file: &str) -> PathBuf {
    Path::new(env!("KEYWARD_FIXTURES_DIR")).join(file)
}

/// Compiled components are cached across test processes (keyed by content and engine), so
/// only the first test to load a plugin pays for compiling it.
pub fn cache_dir() -> PathBuf {
    std::env::temp_dir().join("keyward-test-plugin-cache")
}

/// A runtime with the shipped plugins and, optionally, a plugin directory.
pub async fn runtime(plugin_dir: Option<&Path>) -> PluginRuntime {
    PluginRuntime::start(RuntimeConfig {
        plugin_dir: plugin_dir.map(Path::to_path_buf),
        cache_dir: Some(cache_dir()),
        without_builtins: false,
        ..Default::default()
    })
    .await
    .expect("plugin runtime starts")
}

/// Writes `<name>.toml` for a plugin of `world` into `dir` and copies the fixture component
/// next to it as `<name>.wasm`. `extra` is appended to the manifest (e.g. a `[limits]` table).
pub fn install(dir: &Path, name: &str, world: &str, fixture_file: &str, extra: &str) {
    let manifest =
        format!("name = \"{name}\"\nversion = \"1.0.0\"\nworld = \"{world}\"\n{extra}\n");
    std::fs::write(dir.join(format!("{name}.toml")), manifest).unwrap();
    replace_file(&fixture(fixture_file), &dir.join(format!("{name}.wasm")));
}

/// Replaces `to` with a copy of `from` the way a careful operator does: write aside, rename.
pub fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("partial");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

pub const POLICY_WORLD: &str = "keyward:plugin/policy@0.1.0";
pub const CONNECTOR_WORLD: &str = "keyward:plugin/kms-connector@0.1.0";

/// A key of the given type created now, usable for encrypt and decrypt, with no metadata.
pub fn key(key_type: KeyType, size: Option<u32>, curve: Option<Curve>) -> KeyAttributes {
    KeyAttributes {
        name: "payments-key".into(),
        description: None,
        spec: KeySpec {
            key_type,
            size,
            curve,
        },
        ops: vec![KeyOp::Encrypt, KeyOp::Decrypt],
        enabled: true,
        state: None,
        created: Some(NOW),
        activation: None,
        deactivation: None,
        tags: vec![],
        external: false,
    }
}

pub fn aes(bits: u32) -> KeyAttributes {
    key(KeyType::Aes, Some(bits), None)
}

pub fn rsa(bits: u32) -> KeyAttributes {
    let mut k = key(KeyType::Rsa, Some(bits), None);
    k.ops = vec![KeyOp::Sign, KeyOp::Verify];
    k
}

pub fn ec(curve: Curve) -> KeyAttributes {
    let mut k = key(KeyType::Ec, None, Some(curve));
    k.ops = vec![KeyOp::Sign, KeyOp::Verify];
    k
}

pub fn tag(name: &str, value: &str) -> Tag {
    Tag {
        name: name.into(),
        value: value.into(),
    }
}

pub fn request(action: Action, key: KeyAttributes) -> PolicyRequest {
    PolicyRequest {
        action,
        principal: Principal::User("alice@example.com".into()),
        account: "acct-1".into(),
        group: "group-1".into(),
        key,
        current: None,
        now: NOW,
    }
}
