//! Builds the fixture plugins the tests load from plugin directories.

use std::path::PathBuf;

const FIXTURES: &[&str] = &[
    "misbehaving-policy",
    "prefix-policy",
    "prefix-policy-v2",
    "http-probe",
];

fn main() {
    let here = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
    let dirs: Vec<PathBuf> = FIXTURES
        .iter()
        .map(|f| here.join("fixtures").join(f))
        .chain([here.join("../plugins/policy-sdk")])
        .collect();
    let dir_refs: Vec<&std::path::Path> = dirs.iter().map(PathBuf::as_path).collect();
    let packages: Vec<String> = FIXTURES.iter().map(|f| format!("fixture-{f}")).collect();
    let package_refs: Vec<&str> = packages.iter().map(String::as_str).collect();
    let out = guest_build::build(&package_refs, &dir_refs);
    println!("cargo:rustc-env=KEYWARD_FIXTURES_DIR={}", out.display());
}
