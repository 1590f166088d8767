//! `galion-edge`: see `galion-edge --help`.

/// mimalloc instead of glibc malloc: allocation was a tenth of the CPU time under load
/// (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    galion_edge::main()
}
