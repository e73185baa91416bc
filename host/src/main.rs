//! The `keyward` command: the daemon, its local tools (`plugins`), and the command-line
//! client of a running daemon (`login`, `groups`, `keys`, ..., in `cli`).

mod cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyward::daemon::{self, DaemonConfig};
use keyward::plugins::HostPattern;

#[derive(Parser)]
#[command(
    name = "keyward",
    version,
    about = "Keyward key-management control plane"
)]
struct Cli {
    /// Directory for the catalog, the master key and caches.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_DATA_DIR",
        default_value = "keyward-data"
    )]
    data_dir: PathBuf,
    /// Where the catalog lives: `sqlite://<path>` or `postgres://user:password@host[:port]
    /// [,host2[:port]...]/database[?target_session_attrs=read-write]`. Default: SQLite in the
    /// data directory. Daemons sharing a PostgreSQL catalog share the master key too.
    #[arg(
        long,
        global = true,
        env = "KEYWARD_DATABASE_URL",
        hide_env_values = true
    )]
    database: Option<keyward::catalog::Location>,
    /// Directory of additional plugins (<name>.toml + <name>.wasm). Default: <data-dir>/plugins.
    #[arg(long, global = true, env = "KEYWARD_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    /// How the log (on stderr) is written: `text` for people, `json` (one object a line) for
    /// log collectors.
    #[arg(long, global = true, env = "KEYWARD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(flatten)]
    conn: cli::ConnArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve(ServeArgs),
    /// Without a daemon: the plugins a daemon with this configuration would load, and the
    /// files it would skip with the reason (`keyward plugins` asks a running daemon).
    #[command(after_help = "Example:\n  keyward check-plugins --plugin-dir ./plugins")]
    CheckPlugins,
    /// Bring the catalog to this daemon's schema version and exit (the daemon also migrates
    /// when it starts; daemons starting together migrate once).
    #[command(
        after_help = "Example:\n  keyward migrate --database postgres://keyward@db1,db2/keyward?target_session_attrs=read-write"
    )]
    Migrate,
    /// Work on catalog databases directly (the daemons may be stopped).
    #[command(subcommand)]
    Catalog(CatalogCommand),
    #[command(flatten)]
    Client(cli::ClientCommand),
}

#[derive(Subcommand)]
enum CatalogCommand {
    /// Copy a whole catalog into an empty database, e.g. from SQLite to PostgreSQL. Sealed
    /// secrets are copied as they are: the daemons on the new catalog need the same master
    /// key (this command checks that it opens both).
    #[command(
        after_help = "Example:\n  keyward catalog copy --from sqlite://keyward-data/catalog.db --to postgres://keyward@db1/keyward"
    )]
    Copy {
        /// The catalog to copy: sqlite://<path> or postgres://...
        #[arg(long)]
        from: keyward::catalog::Location,
        /// An empty database to copy it into.
        #[arg(long)]
        to: keyward::catalog::Location,
    },
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the REST API. Plain HTTP is served on a loopback address only, unless
    /// --insecure-http; elsewhere give --tls-cert and --tls-key.
    #[arg(long, env = "KEYWARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// PEM certificate chain of the API's HTTPS listener (with --tls-key).
    #[arg(long, env = "KEYWARD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of the API's HTTPS listener (with --tls-cert).
    #[arg(long, env = "KEYWARD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve plain HTTP on a non-loopback address (only behind a proxy that terminates TLS).
    #[arg(long, env = "KEYWARD_INSECURE_HTTP")]
    insecure_http: bool,
    /// Seconds between rescans of the plugin directory.
    #[arg(long, default_value_t = 2)]
    plugin_scan_secs: u64,
    /// Start the Azure Managed HSM emulator in-process and set up a demo account linked to
    /// it (the default). `--demo false` for a deployment against Azure.
    #[arg(long, env = "KEYWARD_DEMO", default_value_t = true, action = clap::ArgAction::Set)]
    demo: bool,
    /// HTTPS port of the demo's emulator.
    #[arg(long, default_value_t = keyward::demo::DEFAULT_EMULATOR_PORT)]
    demo_emulator_port: u16,
    /// Port of the demo emulator's admin API (plain HTTP on loopback: seeding keys, injecting
    /// faults); 0, the default, takes any free port and prints it.
    #[arg(long, default_value_t = 0)]
    demo_emulator_admin_port: u16,
    /// Workflow scripts overriding the shipped ones. Default: <data-dir>/workflows.
    #[arg(long, env = "KEYWARD_WORKFLOW_DIR")]
    workflow_dir: Option<PathBuf>,
    /// Wall-clock limit of one workflow run, in seconds.
    #[arg(long, default_value_t = 900)]
    workflow_timeout_secs: u64,
    /// Connector calls a bulk workflow step (such as sync) keeps in flight.
    #[arg(long, default_value_t = 32)]
    workflow_concurrency: usize,
    /// Memory one workflow run may hold, in MiB; past it the run ends with an error.
    #[arg(long, default_value_t = 64)]
    workflow_memory_mib: usize,
    /// Let a connector plugin reach another host, e.g. a private endpoint or sovereign cloud:
    /// `azure-mhsm=https://*.managedhsm.usgovcloudapi.net`. Repeatable.
    #[arg(long = "allow-outbound", value_name = "PLUGIN=HOST")]
    allow_outbound: Vec<String>,
    /// Where notification endpoints may point, e.g. `https://*.example.com` or
    /// `https://hooks.example.com:8443`. Repeatable; none: notifications are off.
    #[arg(long = "notify-allow", value_name = "HOST")]
    notify_allow: Vec<String>,
    /// The address of a TLS-terminating proxy whose client-certificate header
    /// (--client-cert-header) is believed. Repeatable; from any other address the header is
    /// ignored.
    #[arg(
        long = "trusted-proxy",
        value_name = "IP",
        requires = "client_cert_header"
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// The header in which the trusted proxies pass the client certificate they verified
    /// (URL-encoded PEM as nginx's $ssl_client_escaped_cert, or base64 DER), e.g.
    /// `X-Client-Cert`. Off by default.
    #[arg(long, value_name = "NAME", requires = "trusted_proxies")]
    client_cert_header: Option<axum::http::HeaderName>,
    /// Where applications' CRLs may be fetched from (`crl_url`), e.g. `http://pki.example.com`.
    /// Repeatable; none: CRLs are uploaded only.
    #[arg(long = "crl-allow", value_name = "HOST")]
    crl_allow: Vec<String>,
    /// Seconds a scheduled fire or a rotation step stays this daemon's without renewal:
    /// after a crash, another daemon (or this one restarted) takes over after this.
    #[arg(long, default_value_t = 300)]
    scheduler_lease_secs: i64,
    /// Do not run scheduled rotations and cron jobs in this daemon (another one sharing the
    /// catalog does).
    #[arg(long)]
    no_scheduler: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // `--help` and `--version` are answers; anything else is a local error: exit code 1
        // (clap's own is 2, which this CLI keeps for the daemon's refusals).
        Err(e) => {
            let _ = e.print();
            std::process::exit(if e.use_stderr() { 1 } else { 0 });
        }
    };
    if let Some(Command::Client(command)) = cli.command {
        let code = cli::run(cli.conn, command).await;
        std::process::exit(code);
    }
    let log = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => log.init(),
        LogFormat::Json => log.json().init(),
    }
    let mut config = DaemonConfig::new(cli.data_dir);
    config.plugin_dir = cli.plugin_dir;
    config.database = cli.database;
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::parse_from(["serve"])));
    match command {
        Command::Serve(args) => {
            config.plugin_scan_interval = Duration::from_secs(args.plugin_scan_secs.max(1));
            config.listen = args.listen;
            config.tls = args
                .tls_cert
                .zip(args.tls_key)
                .map(|(cert, key)| daemon::TlsFiles { cert, key });
            config.insecure_http = args.insecure_http;
            config.workflow_dir = args.workflow_dir;
            config.workflow_limits.timeout = Duration::from_secs(args.workflow_timeout_secs.max(1));
            config.workflow_limits.concurrency = args.workflow_concurrency.clamp(1, 64);
            config.workflow_limits.max_memory = args.workflow_memory_mib.max(1) << 20;
            for entry in &args.allow_outbound {
                let (plugin, host) = entry
                    .split_once('=')
                    .context("--allow-outbound takes PLUGIN=HOST")?;
                let pattern = HostPattern::parse(host).map_err(anyhow::Error::msg)?;
                config
                    .extra_outbound_hosts
                    .entry(plugin.to_string())
                    .or_default()
                    .push(pattern);
            }
            for host in &args.notify_allow {
                config
                    .notify
                    .allowed_hosts
                    .push(HostPattern::parse(host).map_err(anyhow::Error::msg)?);
            }
            config.client_certs.trusted_proxies = args.trusted_proxies;
            config.client_certs.header = args.client_cert_header;
            for host in &args.crl_allow {
                config
                    .client_certs
                    .crl_allowed_hosts
                    .push(HostPattern::parse(host).map_err(anyhow::Error::msg)?);
            }
            config.scheduler.lease_secs = args.scheduler_lease_secs.clamp(5, 3600);
            config.scheduler.enabled = !args.no_scheduler;
            let shutdown = shutdown_signal();
            if args.demo {
                let ports = keyward::demo::EmulatorPorts {
                    https: args.demo_emulator_port,
                    admin: args.demo_emulator_admin_port,
                };
                keyward::demo::run(config, ports, shutdown)
                    .await
                    .context("keyward stopped")?;
            } else {
                daemon::run(config, shutdown)
                    .await
                    .context("keyward stopped")?;
            }
        }
        Command::CheckPlugins => {
            let runtime = daemon::start_plugins(&config).await?;
            for p in runtime.plugins() {
                let origin = match &p.origin {
                    keyward::plugins::PluginOrigin::Builtin => "shipped".to_string(),
                    keyward::plugins::PluginOrigin::Directory { manifest, .. } => {
                        manifest.display().to_string()
                    }
                };
                println!(
                    "{:<24} {:<8} {:<40} {origin}",
                    p.name,
                    p.version,
                    p.world.id()
                );
            }
            for p in runtime.problems() {
                println!("skipped {}: {}", p.path.display(), p.reason);
            }
        }
        Command::Migrate => {
            let location = config.database();
            let catalog = daemon::open_catalog_unmigrated(&config).await?;
            let before = catalog.version().await?;
            let applied = catalog.migrate().await?;
            let after = catalog.version().await?;
            catalog.close().await;
            if applied.is_empty() {
                println!("{location}: at version {after}, nothing to do");
            } else {
                println!("{location}: migrated from version {before} to {after}");
            }
        }
        Command::Catalog(CatalogCommand::Copy { from, to }) => {
            if from == to {
                anyhow::bail!("--from and --to name the same database");
            }
            let master =
                keyward::catalog::MasterKey::load_or_create(&config.data_dir.join("master.key"))?;
            let source = keyward::catalog::Catalog::open_at(&from, master.clone())
                .await
                .with_context(|| format!("opening {from}"))?;
            let destination = keyward::catalog::Catalog::open_at(&to, master)
                .await
                .with_context(|| format!("opening {to}"))?;
            let counts = keyward::catalog::copy::copy(&source, &destination).await?;
            source.close().await;
            destination.close().await;
            for (table, n) in &counts {
                println!("{table:<24} {n}");
            }
            println!("copied {from} to {to}");
        }
        Command::Client(_) => unreachable!("client commands ran above"),
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM from a service manager or container runtime.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
                return;
            }
            Err(e) => tracing::warn!("cannot listen for SIGTERM: {e}"),
        }
    }
    tokio::signal::ctrl_c().await.ok();
}

impl ServeArgs {
    fn parse_from<const N: usize>(args: [&str; N]) -> ServeArgs {
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Wrapper::parse_from(args).serve
    }
}
