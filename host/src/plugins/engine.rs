//! The wasmtime engine shared by every plugin, its epoch ticker, and the on-disk cache of
//! compiled components.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Engine};

use super::PluginError;

/// How often the epoch advances. A running plugin yields to the executor (and checks its
/// deadline) once per tick, so this bounds both how long a runaway plugin can hold a worker
/// thread and how precisely deadlines are enforced.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

pub struct PluginEngine {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

impl PluginEngine {
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, PluginError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines: a ticker advances the epoch; each store checks its own deadline.
        config.epoch_interruption(true);
        // Instruction budgets. Cheap for the short calls policies make.
        config.consume_fuel(true);
        let engine = Engine::new(&config).map_err(|e| PluginError::Engine(format!("{e:#}")))?;
        spawn_ticker(&engine);
        if let Some(dir) = &cache_dir {
            std::fs::create_dir_all(dir).map_err(|e| {
                PluginError::Engine(format!(
                    "cannot create the plugin cache directory {}: {e}",
                    dir.display()
                ))
            })?;
        }
        Ok(PluginEngine { engine, cache_dir })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles a component, or loads it from the cache when this exact component was
    /// compiled before by a compatible engine. Runs on the calling thread: use from
    /// `spawn_blocking`.
    pub fn compile(&self, bytes: &[u8]) -> Result<Component, String> {
        let Some(dir) = &self.cache_dir else {
            return self.compile_fresh(bytes);
        };
        let path = dir.join(format!("{}.cwasm", self.cache_key(bytes)));
        if path.exists() {
            // SAFETY: the file was written by `Component::serialize` of this engine
            // configuration (the key includes the engine's compatibility hash) into the
            // daemon's own cache directory. A file that fails wasmtime's own header and
            // compatibility checks is recompiled below.
            #[allow(unsafe_code)]
            match unsafe { Component::deserialize_file(&self.engine, &path) } {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(path = %path.display(), "discarding unusable cached component: {e:#}")
                }
            }
        }
        let component = self.compile_fresh(bytes)?;
        if let Err(e) = self.store_in_cache(&component, &path) {
            tracing::warn!(path = %path.display(), "could not cache the compiled component: {e}");
        }
        Ok(component)
    }

    fn compile_fresh(&self, bytes: &[u8]) -> Result<Component, String> {
        if !bytes.starts_with(b"\0asm") {
            return Err("not a WebAssembly file".to_string());
        }
        Component::new(&self.engine, bytes)
            .map_err(|e| format!("not a valid WebAssembly component: {e:#}"))
    }

    fn store_in_cache(&self, component: &Component, path: &Path) -> std::io::Result<()> {
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        // Write then rename, so a crash never leaves a truncated artifact under the final name.
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    }

    /// Content hash of the component plus the engine's compatibility hash (wasmtime version
    /// and every setting that affects generated code).
    fn cache_key(&self, bytes: &[u8]) -> String {
        let mut h = DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("{}-{:016x}", hex_digest(bytes), h.finish())
    }
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn hex_digest(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Advances the engine's epoch every tick until the engine is dropped.
fn spawn_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("keyward-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawn the epoch ticker thread");
}
