//! The WebAssembly plugin runtime.
//!
//! Everything that decides whether an operation is allowed (policy plugins) and everything
//! that talks to an external key manager (connector plugins) runs here, as a WebAssembly
//! component behind the WIT contract in `wit/`, sandboxed per call:
//!
//! - a wall-clock deadline (epoch interruption; a running plugin yields every tick, so a
//!   runaway one never blocks other calls), a memory ceiling and an instruction budget;
//! - no filesystem, sockets or environment; connectors reach the network only through the
//!   host `http` import, limited to the hosts in their manifest and using the caller's TLS
//!   settings.
//!
//! Components are compiled once (and cached on disk), linked once ([`wasmtime::component::InstancePre`])
//! and kept warm in per-plugin pools. Pieces:
//! - [`manifest`]: the TOML manifest next to each component;
//! - `registry`: shipped plugins plus the plugin directory, rescanned without restart;
//! - `pool`: warm instances, retired after a trap or a number of calls;
//! - `host`, [`http`]: what the host provides to plugins;
//! - [`bindings`]: the contract, one module per WIT version.

pub mod bindings;
mod engine;
mod error;
mod host;
pub mod http;
pub mod manifest;
mod pool;
mod registry;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, Trap};

pub use engine::EPOCH_TICK;
pub use error::PluginError;
pub use host::HostState;
pub use http::TlsSettings;
pub use manifest::{HostPattern, Limits, Manifest, World};
pub use registry::{PluginInfo, PluginOrigin, PluginProblem};

use host::MemoryLimitExceeded;
use pool::Warm;
use registry::{BUILTIN_PLUGINS, LoadedPlugin, Registry, Runner};

/// Types of the policy contract (newest version).
pub mod policy {
    pub use super::bindings::v0_1_0::policy::exports::keyward::plugin::policy_engine::{
        Action, Decision, Finding, Mode, PolicyRequest, Principal,
    };
    pub use super::bindings::v0_1_0::policy::keyward::plugin::types::{
        Curve, KeyAttributes, KeyOp, KeySpec, KeyState, KeyType, Tag, Timestamp,
    };
}

/// Types of the connector contract (newest version).
pub mod kms {
    pub use super::bindings::v0_1_0::kms_connector::exports::keyward::plugin::kms::*;
    pub use super::bindings::v0_1_0::kms_connector::keyward::plugin::types::KeyType;
}

/// Where the runtime finds plugins and keeps compiled code.
#[derive(Debug, Clone, Default)]
pub struct RuntimeConfig {
    /// Directory scanned for `<name>.toml` + `<name>.wasm` plugins, in addition to the
    /// shipped ones.
    pub plugin_dir: Option<PathBuf>,
    /// Directory for compiled components. `None` compiles on every start.
    pub cache_dir: Option<PathBuf>,
    /// Leave out the plugins shipped inside the daemon (tests of the directory alone).
    pub without_builtins: bool,
    /// Hosts allowed to a plugin in addition to its manifest's `allowed_outbound_hosts`,
    /// by plugin name: a sovereign cloud, a private endpoint, or the emulator.
    pub extra_outbound_hosts: HashMap<String, Vec<HostPattern>>,
    /// Where plugin calls are counted (the daemon's registry).
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Handle to the plugin runtime. Cheap to clone.
#[derive(Clone)]
pub struct PluginRuntime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<engine::PluginEngine>,
    registry: Registry,
    http: Arc<http::HttpClients>,
    metrics: Arc<crate::metrics::Metrics>,
}

impl PluginRuntime {
    /// Loads the shipped plugins and scans the plugin directory. Broken plugins are reported
    /// (see [`PluginRuntime::problems`]) and skipped; only an unusable engine is an error.
    pub async fn start(config: RuntimeConfig) -> Result<PluginRuntime, PluginError> {
        let engine = Arc::new(engine::PluginEngine::new(config.cache_dir)?);
        let linkers = Arc::new(registry::Linkers::new(&engine)?);
        let registry = Registry::new(
            engine.clone(),
            linkers,
            config.plugin_dir,
            config.extra_outbound_hosts,
        );
        if !config.without_builtins {
            registry.load_builtins(BUILTIN_PLUGINS).await;
        }
        registry.rescan().await;
        Ok(PluginRuntime {
            inner: Arc::new(Inner {
                engine,
                registry,
                http: Default::default(),
                metrics: config.metrics,
            }),
        })
    }

    /// The metrics plugin calls are counted in.
    pub fn metrics(&self) -> Arc<crate::metrics::Metrics> {
        self.inner.metrics.clone()
    }

    /// Rescans the plugin directory now.
    pub async fn rescan(&self) {
        self.inner.registry.rescan().await;
    }

    /// Rescans the plugin directory every `interval` until `shutdown` completes, so a
    /// dropped-in or replaced plugin is picked up without a restart.
    pub fn watch(
        &self,
        interval: Duration,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let runtime = self.clone();
        tokio::spawn(async move {
            if runtime.inner.registry.dir().is_none() {
                return;
            }
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            tokio::pin!(shutdown);
            loop {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = ticker.tick() => runtime.rescan().await,
                }
            }
        })
    }

    /// Counter of completed directory scans, for waiting on a rescan.
    pub fn scans(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.registry.scans()
    }

    pub fn plugins(&self) -> Vec<PluginInfo> {
        self.inner.registry.list()
    }

    pub fn problems(&self) -> Vec<PluginProblem> {
        self.inner.registry.problems()
    }

    /// The manifest and component of a plugin shipped inside the daemon, e.g. to copy it
    /// into a plugin directory as the starting point of a customised version.
    pub fn shipped_plugin(name: &str) -> Option<(&'static str, &'static [u8])> {
        BUILTIN_PLUGINS
            .iter()
            .find(|b| Manifest::parse(b.manifest, "builtin").is_ok_and(|m| m.name == name))
            .map(|b| (b.manifest, b.component))
    }

    pub fn plugin_info(&self, name: &str) -> Option<PluginInfo> {
        self.plugins().into_iter().find(|p| p.name == name)
    }

    fn plugin(&self, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        self.inner
            .registry
            .get(name)
            .ok_or_else(|| PluginError::NotFound(name.to_string()))
    }

    /// Checks a policy document against a policy plugin without deciding anything.
    pub async fn validate_policy_config(
        &self,
        plugin: &str,
        config: &str,
    ) -> Result<(), PluginError> {
        let plugin = self.plugin(plugin)?;
        let Runner::Policy { pre, pool } = &plugin.runner else {
            return Err(wrong_world(&plugin, World::PolicyV0_1));
        };
        let _slot = pool.slot().await;
        let warm = self.new_policy(&plugin, pre, config).await?;
        pool.put_back(config, warm);
        Ok(())
    }

    /// Asks a policy plugin, configured with `config` (JSON), to decide on `request`.
    pub async fn evaluate_policy(
        &self,
        plugin: &str,
        config: &str,
        request: &policy::PolicyRequest,
    ) -> Result<policy::Decision, PluginError> {
        let started = Instant::now();
        let decision = self.decide(plugin, config, request).await;
        self.inner
            .metrics
            .plugin_call(plugin, decision.is_ok(), started.elapsed().as_secs_f64());
        decision
    }

    async fn decide(
        &self,
        plugin: &str,
        config: &str,
        request: &policy::PolicyRequest,
    ) -> Result<policy::Decision, PluginError> {
        let plugin = self.plugin(plugin)?;
        let Runner::Policy { pre, pool } = &plugin.runner else {
            return Err(wrong_world(&plugin, World::PolicyV0_1));
        };
        let _slot = pool.slot().await;
        let mut warm = match pool.take(config) {
            Some(w) => w,
            None => self.new_policy(&plugin, pre, config).await?,
        };
        let answer = call(&plugin, &mut warm, async |p, store| {
            p.keyward_plugin_policy_engine()
                .call_evaluate(store, request)
                .await
        })
        .await?;
        pool.put_back(config, warm);
        answer.map_err(|message| PluginError::Failed {
            plugin: plugin.manifest.name.clone(),
            message,
        })
    }

    async fn new_policy(
        &self,
        plugin: &LoadedPlugin,
        pre: &bindings::v0_1_0::policy::PolicyPre<HostState>,
        config: &str,
    ) -> Result<Warm<bindings::v0_1_0::policy::Policy>, PluginError> {
        let state = HostState::new(plugin.name.clone(), &plugin.manifest.limits, None);
        let mut warm = instantiate(
            plugin,
            state.into_store(&self.inner.engine),
            async |store| pre.instantiate_async(store).await,
        )
        .await?;
        call(plugin, &mut warm, async |p, store| {
            p.keyward_plugin_policy_engine()
                .call_configure(store, config)
                .await
        })
        .await?
        .map_err(|message| PluginError::InvalidConfig {
            plugin: plugin.manifest.name.clone(),
            message,
        })?;
        Ok(warm)
    }

    /// Runs `f` against a warm instance of a connector plugin whose outbound HTTP uses `tls`.
    ///
    /// `f` gets the plugin's `kms` interface and the store to call it with, e.g.
    /// `|kms, store| kms.call_list_instances(store, &conn)`.
    pub async fn call_connector<T>(
        &self,
        plugin: &str,
        tls: &TlsSettings,
        f: impl AsyncFnOnce(&kms::Guest, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let started = Instant::now();
        let result = self.connector_call(plugin, tls, f).await;
        self.inner
            .metrics
            .plugin_call(plugin, result.is_ok(), started.elapsed().as_secs_f64());
        result
    }

    async fn connector_call<T>(
        &self,
        plugin: &str,
        tls: &TlsSettings,
        f: impl AsyncFnOnce(&kms::Guest, &mut Store<HostState>) -> wasmtime::Result<T>,
    ) -> Result<T, PluginError> {
        let plugin = self.plugin(plugin)?;
        let Runner::Connector { pre, pool, allowed } = &plugin.runner else {
            return Err(wrong_world(&plugin, World::KmsConnectorV0_1));
        };
        let _slot = pool.slot().await;
        let mut warm = match pool.take("") {
            Some(w) => w,
            None => {
                let gate = http::HttpGate {
                    allowed: allowed.clone(),
                    tls: tls.clone(),
                    clients: self.inner.http.clone(),
                };
                let state =
                    HostState::new(plugin.name.clone(), &plugin.manifest.limits, Some(gate));
                instantiate(
                    &plugin,
                    state.into_store(&self.inner.engine),
                    async |store| pre.instantiate_async(store).await,
                )
                .await?
            }
        };
        if let Some(gate) = warm.store.data_mut().http.as_mut() {
            gate.tls = tls.clone();
        }
        let result = call(&plugin, &mut warm, async |c, store| {
            f(c.keyward_plugin_kms(), store).await
        })
        .await?;
        pool.put_back("", warm);
        Ok(result)
    }
}

fn wrong_world(plugin: &LoadedPlugin, expected: World) -> PluginError {
    PluginError::WrongWorld {
        plugin: plugin.manifest.name.clone(),
        expected: expected.id(),
        actual: plugin.manifest.world.id(),
    }
}

/// Arms the per-call limits: deadline, fuel, memory flag.
fn arm(store: &mut Store<HostState>, limits: &Limits) {
    store.data_mut().deadline = Instant::now() + limits.timeout;
    store.data_mut().limiter.exceeded = false;
    store.set_epoch_deadline(1);
    store
        .set_fuel(limits.fuel)
        .expect("fuel is enabled in the engine");
}

/// A backstop for time spent outside wasm (host calls), where epoch checks do not run.
fn backstop(limits: &Limits) -> Duration {
    limits.timeout + Duration::from_secs(1)
}

async fn instantiate<I>(
    plugin: &LoadedPlugin,
    mut store: Store<HostState>,
    f: impl AsyncFnOnce(&mut Store<HostState>) -> wasmtime::Result<I>,
) -> Result<Warm<I>, PluginError> {
    let limits = &plugin.manifest.limits;
    arm(&mut store, limits);
    match tokio::time::timeout(backstop(limits), f(&mut store)).await {
        Ok(Ok(instance)) => Ok(Warm {
            store,
            instance,
            calls: 0,
        }),
        Ok(Err(e)) => Err(match classify(plugin, &store, e) {
            PluginError::Trap { plugin, message } => PluginError::Instantiate { plugin, message },
            other => other,
        }),
        Err(_) => Err(timeout(plugin)),
    }
}

/// Calls into a warm instance under its limits. An error means the instance trapped or ran
/// out of time and must not be used again (the caller drops it).
async fn call<I, T>(
    plugin: &LoadedPlugin,
    warm: &mut Warm<I>,
    f: impl AsyncFnOnce(&I, &mut Store<HostState>) -> wasmtime::Result<T>,
) -> Result<T, PluginError> {
    let limits = &plugin.manifest.limits;
    arm(&mut warm.store, limits);
    match tokio::time::timeout(backstop(limits), f(&warm.instance, &mut warm.store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(plugin, &warm.store, e)),
        Err(_) => Err(timeout(plugin)),
    }
}

fn timeout(plugin: &LoadedPlugin) -> PluginError {
    tracing::warn!(plugin = %plugin.manifest.name, "plugin call timed out");
    PluginError::Timeout {
        plugin: plugin.manifest.name.clone(),
        limit_ms: plugin.manifest.limits.timeout.as_millis() as u64,
    }
}

/// Names the limit a failed call hit, or describes the crash.
fn classify(plugin: &LoadedPlugin, store: &Store<HostState>, e: wasmtime::Error) -> PluginError {
    let name = plugin.manifest.name.clone();
    let limits = &plugin.manifest.limits;
    tracing::warn!(plugin = %name, "plugin call failed: {e:?}");
    if store.data().limiter.exceeded || e.downcast_ref::<MemoryLimitExceeded>().is_some() {
        return PluginError::MemoryLimit {
            plugin: name,
            limit_mb: limits.memory_mb(),
        };
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => {
            return PluginError::FuelExhausted {
                plugin: name,
                fuel: limits.fuel,
            };
        }
        Some(Trap::Interrupt) => {
            return PluginError::Timeout {
                plugin: name,
                limit_ms: limits.timeout.as_millis() as u64,
            };
        }
        _ => {}
    }
    let mut message = match e.downcast_ref::<Trap>() {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}"),
    };
    let stderr = store.data().stderr.text();
    if !stderr.is_empty() {
        message.push_str(&format!(" (plugin output: {stderr})"));
    }
    PluginError::Trap {
        plugin: name,
        message,
    }
}
