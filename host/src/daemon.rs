//! The daemon's composition root: the data directory (master key, catalog, plugin cache),
//! the plugin runtime, the audit writer, the caches, the key service, the workflow engine,
//! the scheduler, webhooks and notifications wired together, and the REST API (HTTPS, or plain HTTP on loopback)
//! running until shut down.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::client_certs::{ClientCertConfig, ClientCerts};
use crate::api::transport::{TlsError, TlsListener};
use crate::api::{self, ApiListener, AppState};
use crate::audit::Auditor;
use crate::auth::{LoginThrottle, Sessions, ThrottleLimits};
use crate::cache::Caches;
use crate::catalog::seal::SealError;
use crate::catalog::{Catalog, CatalogError, Location, MasterKey};
use crate::keys::{self, KeyService};
use crate::kms::Kms;
use crate::notify::{Deliverer, Notifications, NotifyConfig};
use crate::plugins::{HostPattern, PluginError, PluginRuntime, RuntimeConfig};
use crate::scheduler::jobs::Jobs;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::time::Clock;
use crate::webhooks::Webhooks;
use crate::workflows::{Services, WorkflowLimits, Workflows};

/// The API's certificate chain and private key (PEM files).
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// Everything the daemon needs to start. Defaults keep all state under one data directory.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Holds the catalog (`catalog.db`, unless `database` says otherwise), the master key
    /// (`master.key`), the compiled-plugin cache and, by default, the plugin directory.
    pub data_dir: PathBuf,
    /// Where the catalog lives. Default: SQLite at `<data_dir>/catalog.db`. Daemons that
    /// share a PostgreSQL catalog must share the master key too.
    pub database: Option<Location>,
    /// Extra plugins (`<name>.toml` + `<name>.wasm`). Default: `<data_dir>/plugins`.
    pub plugin_dir: Option<PathBuf>,
    /// How often the plugin directory is rescanned for new or changed plugins.
    pub plugin_scan_interval: Duration,
    /// Where the REST API listens.
    pub listen: SocketAddr,
    /// Serve HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// Serve plain HTTP on a non-loopback address anyway (behind a TLS-terminating proxy).
    pub insecure_http: bool,
    /// How long a cached key, group or account may be served without a fresh read.
    pub cache_ttl_secs: i64,
    /// Limits on failed logins.
    pub login_limits: ThrottleLimits,
    /// Idle lifetime of a session.
    pub session_lifetime_secs: i64,
    /// The clock every date decision uses (tests move it).
    pub clock: Clock,
    /// Compiled-plugin cache. Default: `<data_dir>/cache/plugins`.
    pub plugin_cache_dir: Option<PathBuf>,
    /// Hosts a connector plugin may reach beyond its manifest, by plugin name.
    pub extra_outbound_hosts: HashMap<String, Vec<HostPattern>>,
    /// Workflow scripts that override the shipped ones. Default: `<data_dir>/workflows`.
    pub workflow_dir: Option<PathBuf>,
    pub workflow_limits: WorkflowLimits,
    /// Scheduled rotations, cron jobs and the resumption of interrupted rotations.
    pub scheduler: SchedulerConfig,
    /// Notifications of key events: where they may go, and their retries.
    pub notify: NotifyConfig,
    /// Applications' client certificates behind a proxy, and where their CRLs may come from.
    pub client_certs: ClientCertConfig,
}

impl DaemonConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DaemonConfig {
            data_dir: data_dir.into(),
            database: None,
            plugin_dir: None,
            plugin_scan_interval: Duration::from_secs(2),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            insecure_http: false,
            cache_ttl_secs: 30,
            login_limits: ThrottleLimits::default(),
            session_lifetime_secs: 3600,
            clock: Clock::system(),
            plugin_cache_dir: None,
            extra_outbound_hosts: HashMap::new(),
            workflow_dir: None,
            workflow_limits: WorkflowLimits::default(),
            scheduler: SchedulerConfig::default(),
            notify: NotifyConfig::default(),
            client_certs: ClientCertConfig::default(),
        }
    }

    /// Where the catalog lives: `database`, or the data directory's SQLite file.
    pub fn database(&self) -> Location {
        self.database
            .clone()
            .unwrap_or_else(|| Location::Sqlite(self.data_dir.join("catalog.db")))
    }

    pub fn workflow_dir(&self) -> PathBuf {
        self.workflow_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("workflows"))
    }

    pub fn plugin_dir(&self) -> PathBuf {
        self.plugin_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.join("plugins"))
    }

    pub fn runtime_config(&self) -> RuntimeConfig {
        RuntimeConfig {
            plugin_dir: Some(self.plugin_dir()),
            cache_dir: Some(
                self.plugin_cache_dir
                    .clone()
                    .unwrap_or_else(|| self.data_dir.join("cache").join("plugins")),
            ),

            without_builtins: false,
            extra_outbound_hosts: self.extra_outbound_hosts.clone(),
            metrics: Default::default(),
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
    #[error(transparent)]
    MasterKey(#[from] SealError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve plain HTTP on {0}, which is not a loopback address: give --tls-cert and --tls-key, or --insecure-http behind a TLS-terminating proxy"
    )]
    InsecureListen(SocketAddr),
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    #[error("the API server failed: {0}")]
    Serve(std::io::Error),
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

/// Opens the catalog with the master key (file or `KEYWARD_MASTER_KEY`). A wrong master key
/// is refused here, before anything is served.
pub async fn open_catalog(config: &DaemonConfig) -> Result<Catalog, DaemonError> {
    let catalog = open_catalog_unmigrated(config).await?;
    catalog.migrate().await?;
    Ok(catalog)
}

/// Opens the catalog without migrating it (`keyward migrate` migrates it itself).
pub async fn open_catalog_unmigrated(config: &DaemonConfig) -> Result<Catalog, DaemonError> {
    std::fs::create_dir_all(&config.data_dir).map_err(|source| DaemonError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let master = MasterKey::load_or_create(&config.data_dir.join("master.key"))?;
    Ok(Catalog::open_unmigrated(&config.database(), master).await?)
}

/// A started daemon.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Waits until the daemon has shut down (after the shutdown signal given to [`start`]).
    pub async fn wait(self) -> Result<(), DaemonError> {
        let served = self
            .server
            .await
            .map_err(|e| DaemonError::Serve(std::io::Error::other(e)))?;
        let _ = self.watcher.await;
        self.state.caches.disconnect();
        self.state.catalog.close().await;
        served.map_err(DaemonError::Serve)
    }
}

/// The listener of the API: HTTPS when the config has a certificate, plain HTTP only on
/// loopback unless `insecure_http` says otherwise.
async fn listener(config: &DaemonConfig) -> Result<ApiListener, DaemonError> {
    let tls = config
        .tls
        .as_ref()
        .map(|t| api::transport::server_config(&t.cert, &t.key))
        .transpose()?;
    if tls.is_none() && !config.listen.ip().is_loopback() && !config.insecure_http {
        return Err(DaemonError::InsecureListen(config.listen));
    }
    let tcp = TcpListener::bind(config.listen)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;
    Ok(match tls {
        Some(t) => ApiListener::Tls(TlsListener::new(tcp, t)),
        None => ApiListener::Plain(tcp),
    })
}

/// Builds what the API serves from: the audit writer, the caches, the key service and the
/// workflow engine, which hold each other (the engine runs the key service's HSM flows, its
/// scripts write through the key service).
fn app_state(
    config: &DaemonConfig,
    catalog: Catalog,
    plugins: PluginRuntime,
    workflow_dir: PathBuf,
) -> AppState {
    let clock = config.clock.clone();
    let audit = Auditor::start(catalog.clone());
    // This daemon's id: in its leases and claims, and in the changes it tells the others.
    let worker = crate::catalog::new_id();
    let caches = Arc::new(Caches::new(clock.clone(), config.cache_ttl_secs, &worker));
    caches.connect(&catalog);
    let kms = Kms::new(plugins.clone());
    // One registry: the plugin runtime's, which counts plugin calls.
    let metrics = plugins.metrics();
    let workflows = Arc::new_cyclic(|engine| {
        let keys = KeyService::new(
            keys::Parts {
                catalog: catalog.clone(),
                plugins: plugins.clone(),
                kms: kms.clone(),
                audit: audit.clone(),
                clock: clock.clone(),
                caches: caches.clone(),
                lease: keys::Lease {
                    worker: worker.clone(),
                    secs: config.scheduler.lease_secs,
                },
            },
            engine.clone() as std::sync::Weak<dyn keys::FlowRunner>,
        );
        Workflows::new(
            Services {
                daemon_id: worker.clone(),
                catalog: catalog.clone(),
                keys,
                plugins: plugins.clone(),
                kms: kms.clone(),
                clock: clock.clone(),
                audit: audit.clone(),
                metrics: metrics.clone(),
            },
            Some(workflow_dir),
            config.workflow_limits.clone(),
        )
    });
    let keys = workflows.services().keys.clone();
    let scheduler = Arc::new(Scheduler::new(
        catalog.clone(),
        keys.clone(),
        workflows.clone(),
        clock.clone(),
        config.scheduler.clone(),
        worker.clone(),
    ));
    AppState {
        daemon_id: worker,
        jobs: Jobs::new(catalog.clone(), workflows.clone(), clock.clone()),
        webhooks: Webhooks::new(
            catalog.clone(),
            keys.clone(),
            workflows.clone(),
            clock.clone(),
            metrics.clone(),
        ),
        notifications: Notifications::new(catalog.clone(), clock.clone(), &config.notify),
        client_certs: ClientCerts::new(config.client_certs.clone(), clock.clone()),
        deliverer: Arc::new(Deliverer::new(
            catalog.clone(),
            clock.clone(),
            config.notify.clone(),
            metrics.clone(),
        )),
        scheduler,
        keys,
        sessions: Sessions::new(
            catalog.clone(),
            clock.clone(),
            config.session_lifetime_secs,
            &caches,
        ),
        logins: LoginThrottle::new(catalog.clone(), clock.clone(), config.login_limits),
        catalog,
        plugins,
        kms,
        workflows,
        clock,
        audit,
        caches,
        metrics,
    }
}

/// Starts the daemon: catalog, plugins and the API on `config.listen` (port 0 picks one).
pub async fn start(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Running, DaemonError> {
    let listener = listener(&config).await?;
    let addr = listener
        .local_addr()
        .map_err(|source| DaemonError::Listen {
            addr: config.listen,
            source,
        })?;
    let catalog = open_catalog(&config).await?;
    let plugins = start_plugins(&config).await?;
    let workflow_dir = config.workflow_dir();
    std::fs::create_dir_all(&workflow_dir).map_err(|source| DaemonError::DataDir {
        path: workflow_dir.clone(),
        source,
    })?;
    let state = Arc::new(app_state(&config, catalog, plugins.clone(), workflow_dir));
    state.workflows.recover_interrupted().await?;
    state.workflows.load_account_scripts().await?;
    state.keys.recover_interrupted().await?;

    // One shutdown signal, fanned out to the watcher and the server.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop.send(true);
    });
    let wait = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let watcher = plugins.watch(config.plugin_scan_interval, wait(stopped.clone()));
    if config.scheduler.enabled {
        tokio::spawn(state.scheduler.clone().run(stopped.clone()));
    }
    if config.notify.enabled {
        tokio::spawn(state.deliverer.clone().run(stopped.clone()));
    }
    let server = tokio::spawn(api::serve(
        listener,
        state.clone(),
        crate::console::routes(),
        wait(stopped),
    ));
    tracing::info!(%addr, tls = config.tls.is_some(), data_dir = %config.data_dir.display(), "keyward is serving");
    Ok(Running {
        addr,
        state,
        server,
        watcher,
    })
}

/// Runs the daemon until `shutdown` completes.
pub async fn run(
    config: DaemonConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    start(config, shutdown).await?.wait().await
}
