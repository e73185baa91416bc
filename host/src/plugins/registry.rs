//! The plugin registry: the shipped plugins (built into the daemon) plus whatever is in the
//! plugin directory, rescanned without a restart.
//!
//! Directory layout: `<name>.toml` (the manifest) next to the component it names
//! (`<name>.wasm` by default). A broken plugin is reported with the reason and skipped; a
//! plugin that breaks after an update is reported and its previous version keeps serving.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use tokio::sync::watch;
use wasmtime::component::{InstancePre, Linker};

use super::PluginError;
use super::bindings::v0_1_0::kms_connector::{KmsConnector, KmsConnectorPre};
use super::bindings::v0_1_0::policy::{Policy, PolicyPre};
use super::engine::{PluginEngine, hex_digest};
use super::host::HostState;
use super::manifest::{HostPattern, Manifest, World};
use super::pool::InstancePool;

/// A plugin compiled into the daemon.
pub struct BuiltinPlugin {
    pub manifest: &'static str,
    pub component: &'static [u8],
}

/// The shipped plugins, built for wasm32-wasip2 by `host/build.rs`.
pub static BUILTIN_PLUGINS: &[BuiltinPlugin] =
    include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// Where a loaded plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginOrigin {
    Builtin,
    Directory {
        manifest: PathBuf,
        component: PathBuf,
    },
}

/// A plugin ready to be instantiated.
pub struct LoadedPlugin {
    pub manifest: Manifest,
    pub origin: PluginOrigin,
    /// SHA-256 of the component.
    pub digest: String,
    pub(crate) name: Arc<str>,
    pub(crate) runner: Runner,
}

pub(crate) enum Runner {
    Policy {
        pre: PolicyPre<HostState>,
        pool: InstancePool<Policy>,
    },
    Connector {
        // Boxed: the connector world has many exports, so its `InstancePre` is large.
        pre: Box<KmsConnectorPre<HostState>>,
        pool: InstancePool<KmsConnector>,
        allowed: Arc<[HostPattern]>,
    },
}

/// A plugin that could not be used, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginProblem {
    pub path: PathBuf,
    pub reason: String,
}

/// What is known about a loaded plugin, for listings.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub world: World,
    pub description: Option<String>,
    pub origin: PluginOrigin,
    pub digest: String,
    pub idle_instances: usize,
}

/// The linkers of each world: what a plugin of that world may import.
pub(crate) struct Linkers {
    policy: Linker<HostState>,
    connector: Linker<HostState>,
}

impl Linkers {
    pub fn new(engine: &PluginEngine) -> Result<Linkers, PluginError> {
        let err = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut policy = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut policy).map_err(err)?;
        Policy::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut policy, |s| s)
            .map_err(err)?;
        let mut connector = Linker::new(engine.engine());
        wasmtime_wasi::p2::add_to_linker_async(&mut connector).map_err(err)?;
        KmsConnector::add_to_linker::<_, wasmtime::component::HasSelf<_>>(&mut connector, |s| s)
            .map_err(err)?;
        Ok(Linkers { policy, connector })
    }
}

/// Compiles and links one plugin. CPU-heavy: call from `spawn_blocking`.
fn load(
    engine: &PluginEngine,
    linkers: &Linkers,
    mut manifest: Manifest,
    bytes: &[u8],
    origin: PluginOrigin,
    extra_hosts: &ExtraHosts,
) -> Result<LoadedPlugin, String> {
    if let Some(extra) = extra_hosts.get(&manifest.name) {
        manifest
            .allowed_outbound_hosts
            .extend(extra.iter().cloned());
    }
    let component = engine.compile(bytes)?;
    let world = manifest.world;
    let pre_for = |linker: &Linker<HostState>| -> Result<InstancePre<HostState>, String> {
        linker.instantiate_pre(&component).map_err(|e| {
            format!("the component needs imports a {world} plugin does not get: {e:#}")
        })
    };
    let mismatch = |e: wasmtime::Error| format!("the component does not implement {world}: {e:#}");
    let runner = match world {
        World::PolicyV0_1 => Runner::Policy {
            pre: PolicyPre::new(pre_for(&linkers.policy)?).map_err(mismatch)?,
            pool: InstancePool::new(&manifest.limits),
        },
        World::KmsConnectorV0_1 => Runner::Connector {
            pre: Box::new(KmsConnectorPre::new(pre_for(&linkers.connector)?).map_err(mismatch)?),
            pool: InstancePool::new(&manifest.limits),
            allowed: manifest.allowed_outbound_hosts.clone().into(),
        },
    };
    Ok(LoadedPlugin {
        name: manifest.name.as_str().into(),
        manifest,
        origin,
        digest: hex_digest(bytes),
        runner,
    })
}

/// Modification stamp of the files behind a directory plugin; a change means reload.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    manifest: (u64, Option<SystemTime>),
    component: Option<(u64, Option<SystemTime>)>,
}

struct DirEntry {
    fingerprint: Fingerprint,
    plugin: Option<Arc<LoadedPlugin>>,
    problem: Option<String>,
}

#[derive(Default)]
struct State {
    builtins: HashMap<String, Arc<LoadedPlugin>>,
    dir: HashMap<PathBuf, DirEntry>,
    /// Name → plugin in use. A directory plugin overrides a shipped one of the same name.
    active: HashMap<String, Arc<LoadedPlugin>>,
    /// Problems that are not tied to a manifest (stray files).
    stray: Vec<PluginProblem>,
}

/// Hosts a deployment allows a plugin beyond its manifest (plugin name → patterns).
pub type ExtraHosts = HashMap<String, Vec<HostPattern>>;

pub(crate) struct Registry {
    engine: Arc<PluginEngine>,
    linkers: Arc<Linkers>,
    dir: Option<PathBuf>,
    extra_hosts: Arc<ExtraHosts>,
    state: RwLock<State>,
    scan_lock: tokio::sync::Mutex<()>,
    scans: watch::Sender<u64>,
}

impl Registry {
    pub fn new(
        engine: Arc<PluginEngine>,
        linkers: Arc<Linkers>,
        dir: Option<PathBuf>,
        extra_hosts: ExtraHosts,
    ) -> Registry {
        Registry {
            engine,
            linkers,
            dir,
            extra_hosts: Arc::new(extra_hosts),
            state: RwLock::new(State::default()),
            scan_lock: tokio::sync::Mutex::new(()),
            scans: watch::channel(0).0,
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.state.read().unwrap().active.get(name).cloned()
    }

    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// Completed scans; a receiver sees every rescan.
    pub fn scans(&self) -> watch::Receiver<u64> {
        self.scans.subscribe()
    }

    pub fn list(&self) -> Vec<PluginInfo> {
        let state = self.state.read().unwrap();
        let mut out: Vec<PluginInfo> = state
            .active
            .values()
            .map(|p| PluginInfo {
                name: p.manifest.name.clone(),
                version: p.manifest.version.clone(),
                world: p.manifest.world,
                description: p.manifest.description.clone(),
                origin: p.origin.clone(),
                digest: p.digest.clone(),
                idle_instances: match &p.runner {
                    Runner::Policy { pool, .. } => pool.idle_count(),
                    Runner::Connector { pool, .. } => pool.idle_count(),
                },
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn problems(&self) -> Vec<PluginProblem> {
        let state = self.state.read().unwrap();
        let mut out: Vec<PluginProblem> = state
            .dir
            .iter()
            .filter_map(|(path, e)| {
                Some(PluginProblem {
                    path: path.clone(),
                    reason: e.problem.clone()?,
                })
            })
            .chain(state.stray.iter().cloned())
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Loads the plugins compiled into the daemon. One that fails is reported and skipped.
    pub async fn load_builtins(&self, builtins: &'static [BuiltinPlugin]) {
        let mut tasks = Vec::new();
        for b in builtins {
            let engine = self.engine.clone();
            let linkers = self.linkers.clone();
            let extra_hosts = self.extra_hosts.clone();
            tasks.push(tokio::task::spawn_blocking(move || {
                let manifest = Manifest::parse(b.manifest, "builtin")?;
                load(
                    &engine,
                    &linkers,
                    manifest,
                    b.component,
                    PluginOrigin::Builtin,
                    &extra_hosts,
                )
            }));
        }
        let mut loaded = HashMap::new();
        for task in tasks {
            match task.await.expect("plugin loading does not panic") {
                Ok(p) => {
                    tracing::info!(plugin = %p.manifest.name, version = %p.manifest.version, world = %p.manifest.world, "loaded shipped plugin");
                    loaded.insert(p.manifest.name.clone(), Arc::new(p));
                }
                Err(reason) => tracing::error!("a shipped plugin could not be loaded: {reason}"),
            }
        }
        let mut state = self.state.write().unwrap();
        state.builtins = loaded;
        state.rebuild_active();
    }

    /// Scans the plugin directory: loads new and changed plugins, unloads removed ones and
    /// reports anything unusable. Unchanged plugins are not touched.
    pub async fn rescan(&self) {
        let Some(dir) = self.dir.clone() else { return };
        let _one_at_a_time = self.scan_lock.lock().await;
        let listing = match tokio::task::spawn_blocking({
            let dir = dir.clone();
            move || list_dir(&dir)
        })
        .await
        .expect("listing does not panic")
        {
            Ok(l) => l,
            Err(e) => {
                let mut state = self.state.write().unwrap();
                state.stray = vec![PluginProblem {
                    path: dir.clone(),
                    reason: format!("cannot read the plugin directory: {e}"),
                }];
                drop(state);
                self.scans.send_modify(|n| *n += 1);
                return;
            }
        };

        let mut next: HashMap<PathBuf, DirEntry> = HashMap::new();
        let mut referenced = Vec::new();
        for (manifest_path, fingerprint, component_path) in listing.manifests {
            if let Some(c) = &component_path {
                referenced.push(c.clone());
            }
            let previous = self
                .state
                .read()
                .unwrap()
                .dir
                .get(&manifest_path)
                .map(|e| (e.fingerprint.clone(), e.plugin.clone(), e.problem.clone()));
            if let Some((fp, plugin, problem)) = &previous
                && *fp == fingerprint
            {
                next.insert(
                    manifest_path,
                    DirEntry {
                        fingerprint,
                        plugin: plugin.clone(),
                        problem: problem.clone(),
                    },
                );
                continue;
            }
            let engine = self.engine.clone();
            let linkers = self.linkers.clone();
            let extra_hosts = self.extra_hosts.clone();
            let path = manifest_path.clone();
            let result = tokio::task::spawn_blocking(move || {
                load_from_dir(&engine, &linkers, &path, &extra_hosts)
            })
            .await
            .expect("plugin loading does not panic");
            let entry = match result {
                Ok(p) => {
                    tracing::info!(plugin = %p.manifest.name, version = %p.manifest.version, path = %manifest_path.display(), "loaded plugin");
                    DirEntry {
                        fingerprint,
                        plugin: Some(Arc::new(p)),
                        problem: None,
                    }
                }
                Err(reason) => {
                    let kept = previous.and_then(|(_, p, _)| p);
                    let reason = match &kept {
                        Some(_) => format!("{reason}; the previously loaded version keeps serving"),
                        None => reason,
                    };
                    tracing::warn!(path = %manifest_path.display(), "skipping plugin: {reason}");
                    DirEntry {
                        fingerprint,
                        plugin: kept,
                        problem: Some(reason),
                    }
                }
            };
            next.insert(manifest_path, entry);
        }

        let mut stray = Vec::new();
        for wasm in listing.components {
            if !referenced.contains(&wasm) {
                stray.push(PluginProblem {
                    path: wasm,
                    reason:
                        "component without a manifest (expected a .toml file naming it next to it)"
                            .into(),
                });
            }
        }
        for other in listing.others {
            stray.push(PluginProblem {
                path: other,
                reason: "not a plugin file (a plugin is a <name>.toml manifest and the .wasm component it names)".into(),
            });
        }
        for p in &stray {
            tracing::debug!(path = %p.path.display(), "{}", p.reason);
        }

        // Two manifests may not claim the same name: the first (by path) wins.
        let mut paths: Vec<PathBuf> = next.keys().cloned().collect();
        paths.sort();
        let mut seen: HashMap<String, PathBuf> = HashMap::new();
        for path in paths {
            let entry = next.get_mut(&path).expect("key from the map");
            let Some(plugin) = &entry.plugin else {
                continue;
            };
            let name = plugin.manifest.name.clone();
            if let Some(first) = seen.get(&name) {
                entry.problem = Some(format!(
                    "another manifest ({}) already provides a plugin named '{name}'",
                    first.display()
                ));
                entry.plugin = None;
            } else {
                seen.insert(name, path);
            }
        }

        let mut state = self.state.write().unwrap();
        for removed in state.dir.keys().filter(|k| !next.contains_key(*k)) {
            tracing::info!(path = %removed.display(), "plugin removed");
        }
        state.dir = next;
        state.stray = stray;
        state.rebuild_active();
        drop(state);
        self.scans.send_modify(|n| *n += 1);
    }
}

impl State {
    fn rebuild_active(&mut self) {
        let mut active = self.builtins.clone();
        for entry in self.dir.values() {
            if let Some(p) = &entry.plugin {
                if active.contains_key(&p.manifest.name)
                    && self.builtins.contains_key(&p.manifest.name)
                {
                    tracing::info!(plugin = %p.manifest.name, "a plugin in the plugin directory overrides the shipped one");
                }
                active.insert(p.manifest.name.clone(), p.clone());
            }
        }
        self.active = active;
    }
}

struct Listing {
    /// (manifest, fingerprint, component it names if the manifest could be read)
    manifests: Vec<(PathBuf, Fingerprint, Option<PathBuf>)>,
    components: Vec<PathBuf>,
    others: Vec<PathBuf>,
}

fn stamp(path: &Path) -> Option<(u64, Option<SystemTime>)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

fn list_dir(dir: &Path) -> std::io::Result<Listing> {
    let mut listing = Listing {
        manifests: Vec::new(),
        components: Vec::new(),
        others: Vec::new(),
    };
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        // Hidden files and our own temporary files are not plugins.
        if name.starts_with('.') || !path.is_file() {
            continue;
        }
        match path.extension().and_then(|e| e.to_str()) {
            Some("toml") => {
                let component = component_path(&path);
                let fingerprint = Fingerprint {
                    manifest: stamp(&path).unwrap_or((0, None)),
                    component: component.as_deref().and_then(stamp),
                };
                listing.manifests.push((path, fingerprint, component));
            }
            Some("wasm") => listing.components.push(path),
            _ => listing.others.push(path),
        }
    }
    Ok(listing)
}

/// The component a manifest names; `<stem>.wasm` when the manifest cannot be parsed (so
/// that component is not reported a second time as a stray file).
fn component_path(manifest: &Path) -> Option<PathBuf> {
    let stem = manifest.file_stem()?.to_str()?;
    let named = std::fs::read_to_string(manifest)
        .ok()
        .and_then(|t| Manifest::parse(&t, stem).ok());
    Some(manifest.with_file_name(named.map_or_else(|| format!("{stem}.wasm"), |m| m.component)))
}

fn load_from_dir(
    engine: &PluginEngine,
    linkers: &Linkers,
    manifest_path: &Path,
    extra_hosts: &ExtraHosts,
) -> Result<LoadedPlugin, String> {
    let text = std::fs::read_to_string(manifest_path)
        .map_err(|e| format!("cannot read the manifest: {e}"))?;
    let stem = manifest_path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let manifest = Manifest::parse(&text, stem)?;
    let component_path = manifest_path.with_file_name(&manifest.component);
    let bytes = std::fs::read(&component_path).map_err(|e| {
        format!(
            "cannot read the component {}: {e}",
            component_path.display()
        )
    })?;
    load(
        engine,
        linkers,
        manifest,
        &bytes,
        PluginOrigin::Directory {
            manifest: manifest_path.to_path_buf(),
            component: component_path,
        },
        extra_hosts,
    )
}
