//! Build-script helper that compiles WebAssembly plugin crates (`wasm32-wasip2` components)
//! as part of an ordinary `cargo build` of the crate that needs them.
//!
//! Plugins are workspace members, but they need a different target than the host. A build
//! script runs a nested cargo for them with its own target directory: sharing the outer
//! target directory would wait forever on the lock the outer cargo holds.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The wasm target plugins are built for.
pub const TARGET: &str = "wasm32-wasip2";
/// The cargo profile plugins are built with (see the workspace `Cargo.toml`).
pub const PROFILE: &str = "plugin";

/// Builds `packages` (workspace package names) for `wasm32-wasip2` and returns the directory
/// holding the resulting `<crate_name>.wasm` components.
///
/// Must be called from a build script. It tells cargo to rerun when the package sources or the
/// WIT contract change.
pub fn build(packages: &[&str], source_dirs: &[&Path]) -> PathBuf {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let workspace = find_workspace_root(&manifest_dir);
    for dir in source_dirs {
        println!("cargo:rerun-if-changed={}", dir.display());
    }
    println!("cargo:rerun-if-changed={}", workspace.join("wit").display());
    println!(
        "cargo:rerun-if-changed={}",
        workspace.join("Cargo.lock").display()
    );

    ensure_target_installed();

    let target_dir = guest_target_dir();
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&workspace)
        .args(["build", "--profile", PROFILE, "--target", TARGET])
        .env("CARGO_TARGET_DIR", &target_dir);
    for p in packages {
        cmd.args(["-p", p]);
    }
    // The outer build's flags and wrappers are meant for the host target (and, under
    // `cargo clippy`, for linting); the plugin build must not inherit them.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("could not run cargo to build the plugins: {e}"));
    if !status.success() {
        panic!(
            "building the WebAssembly plugins {packages:?} failed ({status}); see the output above"
        );
    }
    target_dir.join(TARGET).join(PROFILE)
}

/// `<outer target dir>/wasm-guests`, derived from `OUT_DIR` (`<target>/<profile>/build/<pkg>/out`).
fn guest_target_dir() -> PathBuf {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    let build_dir = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .expect("OUT_DIR is inside a `build` directory");
    let profile_dir = build_dir.parent().expect("profile directory");
    let target_dir = profile_dir.parent().expect("target directory");
    target_dir.join("wasm-guests")
}

fn find_workspace_root(start: &Path) -> PathBuf {
    start
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
        .expect("a Cargo workspace above CARGO_MANIFEST_DIR")
}

/// A fresh machine may lack the wasm target even with `rust-toolchain.toml` listing it (rustup
/// only installs listed targets together with the toolchain). Add it through rustup if missing.
fn ensure_target_installed() {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if let Some(sysroot) = &sysroot
        && sysroot.join("lib/rustlib").join(TARGET).exists()
    {
        return;
    }
    println!(
        "cargo:warning=installing the {TARGET} target with rustup (first build on this machine)"
    );
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status();
    match status {
        Ok(s) if s.success() => {}
        other => panic!(
            "the {TARGET} target is not installed and `rustup target add {TARGET}` failed ({other:?}); \
             install it and build again"
        ),
    }
}
