//! galion-edge patch: marks this pingora-core as the one patched in galion-edge's `vendor/`
//! (vendor/README.md lists the patches). proxy-core's build script reads the `patches` value
//! (`DEP_GALION_EDGE_PINGORA_CORE_PATCHES`) and refuses to build against crates.io's pingora-core, whose
//! builds lack the fixes the proxy relies on.
fn main() {
    println!("cargo:patches=idle-tunnel-reads,boxed-handshake,pool-without-watcher,header-room,pipelined-prefix,server-config-hook,upgrade-head-size,upgraded-request-dropped,upgraded-tunnel-parts,vectored-body-runs,body-reads-without-copy");
}
