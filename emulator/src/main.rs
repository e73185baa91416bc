//! `mhsm-emulator`: run the Azure Managed HSM emulator from the command line.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use keyward_emulator::EmulatorConfig;

/// An Azure Managed HSM emulator (Entra ID, ARM, keys data plane) that the official Azure SDKs
/// accept. Without --config it starts the demo set-up: one tenant, one application, one
/// subscription, the HSM `demo-hsm` and the vaults `demo-standard` and `demo-premium`.
#[derive(Parser)]
#[command(name = "mhsm-emulator", version)]
struct Args {
    /// TOML configuration (tenants, applications, subscriptions, HSMs, role assignments,
    /// [server] settings). Flags override its [server] values.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// HTTPS port for Entra ID, ARM and the data plane (0: any free port).
    #[arg(long)]
    port: Option<u16>,
    /// Port of the plain-HTTP admin API (0: any free port).
    #[arg(long)]
    admin_port: Option<u16>,
    /// Address to listen on.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// HSM host names are {name}.{hsm_domain}.
    #[arg(long)]
    hsm_domain: Option<String>,
    /// Extra names for the server certificate (repeatable).
    #[arg(long = "name")]
    names: Vec<String>,
    /// Directory for the CA (ca.pem is written here for clients to trust) and, with
    /// --persist, the emulator's state.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Keep keys and configuration across restarts (needs --state-dir).
    #[arg(long)]
    persist: bool,
    /// Serve plain HTTP instead of HTTPS, for debugging with curl. Azure SDKs refuse it.
    #[arg(long)]
    plain_http: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            EmulatorConfig::from_toml(&text).map_err(anyhow::Error::msg)?
        }
        None => {
            let mut demo = EmulatorConfig::demo();
            demo.server.port = 8443;
            demo.server.admin_port = 8444;
            demo
        }
    };
    let s = &mut config.server;
    if let Some(p) = args.port {
        s.port = p;
    }
    if let Some(p) = args.admin_port {
        s.admin_port = p;
    }
    if let Some(b) = args.bind {
        s.bind = b;
    }
    if let Some(d) = args.hsm_domain {
        s.hsm_domain = d;
    }
    s.names.extend(args.names);
    if args.state_dir.is_some() {
        s.state_dir = args.state_dir;
    }
    s.persist |= args.persist;
    s.plain_http |= args.plain_http;

    let emulator = keyward_emulator::start(config.clone()).await?;
    println!("Azure Managed HSM and Key Vault emulator");
    println!("  authority (Entra ID): {}", emulator.base_url);
    println!("  management (ARM):     {}", emulator.base_url);
    for h in &config.hsms {
        println!(
            "  HSM {:<17} {}",
            format!("{}:", h.name),
            emulator.hsm_uri(&h.name)
        );
    }
    for v in &config.vaults {
        let tier = match v.sku {
            keyward_emulator::config::VaultSku::Standard => "standard",
            keyward_emulator::config::VaultSku::Premium => "premium",
        };
        println!(
            "  vault {:<15} {} ({tier})",
            format!("{}:", v.name),
            emulator.vault_uri(&v.name)
        );
    }
    println!("  admin API:            {}", emulator.admin_url);
    match &config.server.state_dir {
        Some(d) => println!("  CA certificate:       {}", d.join("ca.pem").display()),
        None => println!(
            "  CA certificate:       {}/admin/ca.pem",
            emulator.admin_url
        ),
    }
    if args.config.is_none() {
        use keyward_emulator::config::demo;
        println!(
            "  demo tenant {} client {} secret {}",
            demo::TENANT,
            demo::CLIENT_ID,
            demo::CLIENT_SECRET
        );
        println!("  demo subscription {}", demo::SUBSCRIPTION);
    }
    tokio::signal::ctrl_c().await.ok();
    emulator.stop().await;
    Ok(())
}
