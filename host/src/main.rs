//! The `keyward` command: the daemon and its command-line tools.

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
    /// Directory for the catalog, keys and caches.
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
    Serve {
        /// Seconds between rescans of the plugin directory.
        #[arg(long, default_value_t = 2)]
        plugin_scan_secs: u64,
    },
    /// List the plugins the daemon would load, and the ones it would skip with the reason.
    Plugins,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,wasmtime=warn,cranelift=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut config = DaemonConfig::new(cli.data_dir);
    config.plugin_dir = cli.plugin_dir;
    match cli.command.unwrap_or(Command::Serve {
        plugin_scan_secs: 2,
    }) {
        Command::Serve { plugin_scan_secs } => {
            config.plugin_scan_interval = Duration::from_secs(plugin_scan_secs.max(1));
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
