//! `GET /sys/v1/plugins`: the plugins this daemon loaded (shipped or from its plugin
//! directory) and the files it skipped, with the reason; what a group can attach (F29).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use crate::plugins::PluginOrigin;

use super::extract::Caller;
use super::{ApiResult, AppState};

/// The daemon's plugins.
#[derive(Debug, Serialize, ToSchema)]
pub struct PluginsOut {
    pub loaded: Vec<PluginOut>,
    pub skipped: Vec<SkippedOut>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PluginOut {
    pub name: String,
    pub version: String,
    /// The WIT world it implements, e.g. `keyward:plugin/policy@0.1.0`.
    pub world: &'static str,
    pub description: Option<String>,
    /// `shipped` (inside the daemon) or `directory` (the daemon's plugin directory).
    pub origin: &'static str,
    /// SHA-256 of the component, hex.
    pub digest: String,
}

/// A file of the plugin directory that was not loaded. Only its name: where the daemon
/// keeps its files is not the callers' business.
#[derive(Debug, Serialize, ToSchema)]
pub struct SkippedOut {
    pub file: String,
    pub reason: String,
}

#[utoipa::path(get, path = "/sys/v1/plugins", tag = "plugins",
    responses((status = 200, body = PluginsOut), (status = 401, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    _caller: Caller,
) -> ApiResult<Json<PluginsOut>> {
    let loaded = state
        .plugins
        .plugins()
        .into_iter()
        .map(|p| PluginOut {
            name: p.name,
            version: p.version,
            world: p.world.id(),
            description: p.description,
            origin: match p.origin {
                PluginOrigin::Builtin => "shipped",
                PluginOrigin::Directory { .. } => "directory",
            },
            digest: p.digest,
        })
        .collect();
    let skipped = state
        .plugins
        .problems()
        .into_iter()
        .map(|p| SkippedOut {
            file: p
                .path
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default(),
            reason: p.reason,
        })
        .collect();
    Ok(Json(PluginsOut { loaded, skipped }))
}
