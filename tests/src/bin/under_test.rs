//! The binary the end-to-end tests start: exactly `galion_edge::main`, as the shipped binary.

fn main() -> std::process::ExitCode {
    galion_edge::main()
}
