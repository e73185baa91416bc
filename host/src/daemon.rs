//! Wiring the daemon together and running it until shut down.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use crate::plugins::{PluginError, PluginRuntime, RuntimeConfig};

/// Everything the daemon needs to start. Defaults keep all state under one data directory.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Holds the catalog, the master key, the compiled-plugin cache and, by default, the
    /// plugin directory.
    pub data_dir: PathBuf,
    /// Extra plugins (`<name>.toml` + `<name>.wasm`). Default: `<data_dir>/plugins`.
    pub plugin_dir: Option<PathBuf>,
    /// How often the plugin directory is rescanned for new or changed plugins.
    pub plugin_scan_interval: Duration,
}

impl DaemonConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DaemonConfig {
            data_dir: data_dir.into(),
            plugin_dir: None,
            plugin_scan_interval: Duration::from_secs(2),
        }
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            plugin_dir: Some(self.plugin_dir()),
            cache_dir: Some(self.data_dir.join("cache").join("plugins")),
            without_builtins: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("cannot prepare {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Plugins(#[from] PluginError),
}

/// Starts the plugin runtime (shipped plugins plus the plugin directory, watched for
/// changes). Logs what was loaded and what was skipped.
pub async fn start_plugins(config: &DaemonConfig) -> Result<PluginRuntime, DaemonError> {
    let dir = config.plugin_dir();
    std::fs::create_dir_all(&dir).map_err(|source| DaemonError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let runtime = PluginRuntime::start(config.runtime_config()).await?;
    for p in runtime.plugins() {
        tracing::info!(plugin = %p.name, version = %p.version, world = %p.world, "plugin available");
    }
    for p in runtime.problems() {
        tracing::warn!(path = %p.path.display(), "plugin skipped: {}", p.reason);
    }
    Ok(runtime)
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let runtime = start_plugins(&config).await?;
    tracing::info!(plugin_dir = %config.plugin_dir().display(), "watching the plugin directory");
    runtime
        .watch(config.plugin_scan_interval, shutdown)
        .await
        .ok();
    tracing::info!("shut down");
    Ok(())
}
