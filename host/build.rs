//! Builds the shipped plugins (`plugins/*`) for wasm32-wasip2 and embeds them in the daemon,
//! so `cargo build` / `cargo run` / `cargo test` never need a separate plugin build step.

use std::path::PathBuf;

/// (package, component file, plugin source dir) of every plugin shipped inside the daemon.
const SHIPPED: &[(&str, &str, &str)] = &[
    (
        "crypto-policy",
        "crypto_policy.wasm",
        "plugins/crypto-policy",
    ),
    (
        "key-metadata-policy",
        "key_metadata_policy.wasm",
        "plugins/key-metadata-policy",
    ),
    ("azure-mhsm", "azure_mhsm.wasm", "plugins/azure-mhsm"),
];

fn main() {
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("..");
    let sources: Vec<PathBuf> = SHIPPED
        .iter()
        .map(|(_, _, dir)| root.join(dir))
        .chain([root.join("plugins/policy-sdk")])
        .collect();
    let source_refs: Vec<&std::path::Path> = sources.iter().map(PathBuf::as_path).collect();
    let packages: Vec<&str> = SHIPPED.iter().map(|(p, _, _)| *p).collect();
    let out = guest_build::build(&packages, &source_refs);

    // A table the plugin registry loads at start: manifest text and component bytes.
    let mut table = String::from("&[\n");
    for (_, wasm, dir) in SHIPPED {
        let manifest = root.join(dir).join("plugin.toml");
        table.push_str(&format!(
            "    BuiltinPlugin {{ manifest: include_str!({:?}), component: include_bytes!({:?}) }},\n",
            manifest.canonicalize().unwrap().display().to_string(),
            out.join(wasm).display().to_string(),
        ));
    }
    table.push_str("]\n");
    let dest = PathBuf::from(std::env::var_os("OUT_DIR").unwrap()).join("builtin_plugins.rs");
    std::fs::write(dest, table).unwrap();
}
