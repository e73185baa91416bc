use std::path::PathBuf;

/// Errors of the plugin runtime. Each names the plugin and, for a sandbox violation, the
/// limit that was hit.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("no plugin named '{0}' is loaded")]
    NotFound(String),

    #[error("plugin '{plugin}' implements {actual}, not {expected}")]
    WrongWorld {
        plugin: String,
        expected: &'static str,
        actual: &'static str,
    },

    #[error("plugin '{plugin}' rejected its configuration: {message}")]
    InvalidConfig { plugin: String, message: String },

    #[error("plugin '{plugin}' exceeded its time limit of {limit_ms} ms")]
    Timeout { plugin: String, limit_ms: u64 },

    #[error("plugin '{plugin}' exceeded its memory limit of {limit_mb} MiB")]
    MemoryLimit { plugin: String, limit_mb: u64 },

    #[error("plugin '{plugin}' exceeded its instruction budget of {fuel} units")]
    FuelExhausted { plugin: String, fuel: u64 },

    #[error("plugin '{plugin}' crashed: {message}")]
    Trap { plugin: String, message: String },

    /// The plugin ran to completion but reported that it could not do its job.
    #[error("plugin '{plugin}' failed: {message}")]
    Failed { plugin: String, message: String },

    #[error("plugin '{plugin}' could not be instantiated: {message}")]
    Instantiate { plugin: String, message: String },

    #[error("invalid plugin at {path}: {reason}")]
    Load { path: PathBuf, reason: String },

    #[error("plugin runtime could not start: {0}")]
    Engine(String),
}

impl PluginError {
    /// True when the plugin broke a sandbox limit or crashed (as opposed to giving an answer
    /// or being misconfigured).
    pub fn is_sandbox_violation(&self) -> bool {
        matches!(
            self,
            PluginError::Timeout { .. }
                | PluginError::MemoryLimit { .. }
                | PluginError::FuelExhausted { .. }
                | PluginError::Trap { .. }
        )
    }
}
