//! `galion-edge-tools`: the load generator, the sample origins and the demo, kept out of the
//! shipped proxy.
//!
//! `galion-edge` ships only the proxy (`run`, `check`). What a developer, a benchmark or a test
//! needs beside it lives here, in its own binary:
//!
//! | command | module | what it does |
//! |---|---|---|
//! | `galion-edge-tools demo` | [`demo`] | sample origins for both sites on loopback and the proxy in front of them, in this process |
//! | `galion-edge-tools loadtest` | [`loadtest`] | bounded load on loopback; starts the origins (this binary) and the proxy (the `galion-edge` binary) as child processes, or measures a running server |
//! | `galion-edge-tools origins -c FILE` (hidden) | [`demo::run_origins`] | only the sample origins of a config, what `loadtest` and `scripts/bench-vs-nginx.sh` run beside the proxy |
//!
//! [`origin`] is also the origin server of the end-to-end tests and of the e2e bench.
//!
//! The demo serves the proxy with [`galion_edge::serve`], the function `galion-edge run`
//! calls, so this crate depends on the proxy's; the proxy's crate does not depend on this one.

#![deny(missing_docs)]

pub mod demo;
pub mod loadtest;
pub mod origin;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// The embedded local config (`configs/local.toml`) that `demo` and `loadtest` run the proxy on
/// when no config is given.
pub const LOCAL_CONFIG: &str = include_str!("../../configs/local.toml");

#[derive(Parser, Debug)]
#[command(
    name = "galion-edge-tools",
    version,
    about = "Tools around the Galion Edge proxy: demo, load generator, sample origins"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start sample origins for both sites on loopback and the proxy in front of them.
    Demo {
        /// Directory holding `local.toml` and its certificates; defaults to the repository's
        /// `configs/` next to the binary's source, or the embedded copy.
        #[arg(long)]
        configs: Option<PathBuf>,
    },
    /// Run bounded load against the proxy (started here with the sample origins) or a loopback
    /// URL; print throughput, latency percentiles, cache hits, server CPU and memory; write a
    /// JSON report and an SVG latency plot.
    Loadtest(Box<loadtest::LoadtestArgs>),
    /// Start only the sample origins of a config (one on every backend address) and wait:
    /// what `loadtest` and scripts/bench-vs-nginx.sh run beside the proxy.
    #[command(hide = true)]
    Origins {
        /// Config file (TOML) whose upstream backends get an origin each.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
}

/// Runs the command line; what `main` calls. Exits 0 on success, 1 on an error (printed on
/// stderr), 2 on a usage error (clap's).
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    galion_edge::init_logging();
    let result = match cli.command {
        Command::Demo { configs } => demo::run(configs),
        Command::Loadtest(args) => loadtest::run(*args),
        Command::Origins { config } => demo::run_origins(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galion-edge-tools: {e:#}");
            ExitCode::FAILURE
        }
    }
}
