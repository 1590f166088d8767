//! galion-edge patch: marks this pingora-http as the one patched in galion-edge's `vendor/`
//! (vendor/README.md lists the patches). proxy-core's build script reads the `patches` value
//! (`DEP_GALION_EDGE_PINGORA_HTTP_PATCHES`) and refuses to build against crates.io's pingora-http,
//! which lacks the `CasedHeaderName` the proxy inserts its headers with.
fn main() {
    println!("cargo:patches=header-name-without-reparse");
}
