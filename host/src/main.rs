//! The `keyward` command: the daemon and its command-line tools.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use keyward::daemon::{self, DaemonConfig};

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
    /// Directory of additional plugins (<name>.toml + <name>.wasm). Default: <data-dir>/plugins.
    #[arg(long, global = true, env = "KEYWARD_PLUGIN_DIR")]
    plugin_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Serve(ServeArgs),
    /// List the plugins the daemon would load, and the ones it would skip with the reason.
    Plugins,
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address of the REST API.
    #[arg(long, env = "KEYWARD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Seconds between rescans of the plugin directory.
    #[arg(long, default_value_t = 2)]
    plugin_scan_secs: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn,sqlx=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config = DaemonConfig::new(cli.data_dir);
    config.plugin_dir = cli.plugin_dir;
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::parse_from(["serve"])));
    match command {
        Command::Serve(args) => {
            config.plugin_scan_interval = Duration::from_secs(args.plugin_scan_secs.max(1));
            config.listen = args.listen;
            let shutdown = async {
                tokio::signal::ctrl_c().await.ok();
            };
            daemon::run(config, shutdown)
                .await
                .context("keyward stopped")?;
        }
        Command::Plugins => {
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
    }
    Ok(())
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
