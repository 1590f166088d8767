//! galion-edge patch: marks this pingora-proxy as the one patched in galion-edge's `vendor/`
//! (vendor/README.md lists the patches). proxy-core's build script reads the `patches` value
//! (`DEP_GALION_EDGE_PINGORA_PROXY_PATCHES`) and refuses to build against crates.io's pingora-proxy, whose
//! builds lack the fixes the proxy relies on.
fn main() {
    println!("cargo:patches=websocket-teardown,single-chunk-terminator,joined-chunks,boxed-connect,upgraded-tunnel-task");
}
