//! The `galion-edge` command: CLI, logging and exit codes around `proxy-core`.
//!
//! Everything the proxy does lives in `proxy-core`; this crate parses arguments, sets up logging,
//! turns errors into exit codes, and carries the sample origins of `galion-edge demo` (which the
//! end-to-end tests use as their origins too).

#![deny(missing_docs)]

pub mod demo;
pub mod loadtest;
pub mod origin;

use anyhow::Context;
use clap::{Parser, Subcommand};
use proxy_core::config::Config;
use proxy_core::server::{build_server_with, ProxyOptions, RunOptions};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The embedded local config used by `galion-edge demo`.
pub const LOCAL_CONFIG: &str = include_str!("../../configs/local.toml");

#[derive(Parser, Debug)]
#[command(
    name = "galion-edge",
    version,
    about = "Galion Edge: an edge proxy on Pingora"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the proxy with a config file.
    Run {
        /// Config file (TOML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Take the listening sockets over from a running instance (zero-downtime upgrade).
        #[arg(short = 'u', long)]
        upgrade: bool,
    },
    /// Validate a config file like `nginx -t`: prints OK or every error, exits non-zero on errors.
    Check {
        /// Config file (TOML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Look up absolute paths (certificates, webroot, log directory) under this directory,
        /// to validate a config for a chroot or container image before deploying it.
        #[arg(long)]
        root: Option<PathBuf>,
    },
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

/// Runs the command line; what `main` calls.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Check { config, root } => return check(&config, root.as_deref()),
        Command::Run { config, upgrade } => run(&config, upgrade),
        Command::Demo { configs } => demo::run(configs),
        Command::Loadtest(args) => loadtest::run(*args),
        Command::Origins { config } => demo::run_origins(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galion-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let env = env_logger::Env::default().default_filter_or("info");
    let _ = env_logger::Builder::from_env(env)
        .format_timestamp_millis()
        .try_init();
}

/// `galion-edge check -c FILE`.
pub fn check(path: &Path, root: Option<&Path>) -> ExitCode {
    match Config::load_with_root(path, root) {
        Ok(c) => {
            println!(
                "galion-edge: configuration file {} is OK ({} sites, {} upstream groups, {} routes)",
                path.display(),
                c.sites.len(),
                c.upstreams.len(),
                c.sites.iter().map(|s| s.routes.len()).sum::<usize>()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors.0 {
                println!("error: {e}");
            }
            println!(
                "galion-edge: configuration file {} test failed ({} error{})",
                path.display(),
                errors.0.len(),
                if errors.0.len() == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
    }
}

/// Loads, validates and runs; returns only on a startup error. SIGHUP re-reads `path`.
pub fn run(path: &Path, upgrade: bool) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    serve(config, Some(path), upgrade)
}

/// Runs a validated config until the process is told to stop. `path` is the file a reload
/// (SIGHUP, `POST /reload`) reads again; without it reloads are refused.
pub fn serve(config: Config, path: Option<&Path>, upgrade: bool) -> anyhow::Result<()> {
    let mut proxy = ProxyOptions::default();
    if let Some(p) = path {
        // Absolute, so a reload finds the file whatever the working directory is then.
        proxy = proxy.with_config_path(std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()));
    }
    let server =
        build_server_with(config, &RunOptions { upgrade }, proxy).context("starting the server")?;
    log::info!("galion-edge {} starting", env!("CARGO_PKG_VERSION"));
    server.run_forever()
}
