//! `galion-edge`: see `galion-edge --help`.

fn main() -> std::process::ExitCode {
    galion_edge::main()
}
