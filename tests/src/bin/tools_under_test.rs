//! The tools binary the end-to-end tests start: exactly `galion_edge_tools::main`, as the
//! `galion-edge-tools` binary.

fn main() -> std::process::ExitCode {
    galion_edge_tools::main()
}
