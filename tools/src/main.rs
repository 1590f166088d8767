//! `galion-edge-tools`: see `galion-edge-tools --help`.

/// The proxy's allocator: the demo serves the proxy in this process, and the load generator's
/// own figures (its CPU in the reports) were measured with it when it lived in `galion-edge`.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    galion_edge_tools::main()
}
