//! Refuses to build proxy-core against crates.io's pingora-core, pingora-proxy or pingora-http.
//!
//! The proxy relies on fixes that live in galion-edge's `vendor/` (vendor/README.md: WebSocket
//! teardown, one chunk terminator, idle tunnel memory, pooled connections, pipelining, header
//! names inserted without a parse, …) and reach a build only through `[patch.crates-io]` in the
//! workspace root. A crate outside this workspace that depends on proxy-core gets crates.io's
//! crates instead, silently. The vendored crates have build scripts that announce themselves
//! (`links` metadata); without all three, this stops the build and says what to add.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let missing: Vec<&str> = [
        ("DEP_GALION_EDGE_PINGORA_CORE_PATCHES", "pingora-core"),
        ("DEP_GALION_EDGE_PINGORA_PROXY_PATCHES", "pingora-proxy"),
        ("DEP_GALION_EDGE_PINGORA_HTTP_PATCHES", "pingora-http"),
    ]
    .into_iter()
    .filter(|(var, _)| std::env::var_os(var).is_none())
    .map(|(_, krate)| krate)
    .collect();
    if missing.is_empty() {
        return;
    }
    let vendor = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("vendor");
    let vendor = std::fs::canonicalize(&vendor).unwrap_or(vendor);
    let lines: String = ["pingora-core", "pingora-proxy", "pingora-http"]
        .iter()
        .map(|k| format!("{k} = {{ path = \"{}\" }}\n", vendor.join(k).display()))
        .collect();
    eprintln!(
        "\nproxy-core must be built with galion-edge's patched {} (the fixes it relies on are \
         listed in {}); this build uses crates.io's, without them. Add to the Cargo.toml at the \
         root of your workspace:\n\n[patch.crates-io]\n{lines}\n(README.md, \"Use as a library\").\n",
        missing.join(" and "),
        vendor.join("README.md").display(),
    );
    std::process::exit(1);
}
