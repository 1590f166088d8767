//! The `galion-edge` command: CLI, logging and exit codes around `proxy-core`.
//!
//! Everything the proxy does lives in `proxy-core`; this crate parses arguments, sets up logging
//! and turns errors into exit codes. The binary ships only the proxy (`run`, `check`). The demo,
//! the sample origins and the load generator are another binary, `galion-edge-tools` (crate
//! `galion_edge_tools` in `tools/`), so that their HTTP server and client, WebSocket, histogram
//! and progress-bar crates are not in what is deployed; `galion-edge demo`, `loadtest` and
//! `origins` remain as hidden commands that only name the command that replaced them.

#![deny(missing_docs)]

use anyhow::Context;
use clap::{Parser, Subcommand};
use proxy_core::config::Config;
use proxy_core::{build_server_with, ProxyOptions, RunOptions};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

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
    /// List each site's certificate: names, issuer, expiry, source (file or ACME), next renewal.
    Certs {
        /// Config file (TOML).
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
    },
    /// Moved to `galion-edge-tools demo`.
    #[command(hide = true, disable_help_flag = true)]
    Demo(Moved),
    /// Moved to `galion-edge-tools loadtest`.
    #[command(hide = true, disable_help_flag = true)]
    Loadtest(Moved),
    /// Moved to `galion-edge-tools origins`.
    #[command(hide = true, disable_help_flag = true)]
    Origins(Moved),
}

/// The arguments of a command that moved to `galion-edge-tools`, taken whatever they are, so
/// that the answer is where the command went rather than an argument error.
#[derive(clap::Args, Debug)]
struct Moved {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<OsString>,
}

/// The binary that holds the commands that left this one.
pub const TOOLS_BIN: &str = "galion-edge-tools";

/// Runs the command line; what `main` calls. Exits 0 on success, 1 on an error (printed on
/// stderr), 2 on a usage error, including a command that moved to [`TOOLS_BIN`].
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    let result = match cli.command {
        Command::Check { config, root } => return check(&config, root.as_deref()),
        Command::Certs { config } => certs(&config),
        Command::Run { config, upgrade } => run(&config, upgrade),
        Command::Demo(m) => return moved("demo", &m.args),
        Command::Loadtest(m) => return moved("loadtest", &m.args),
        Command::Origins(m) => return moved("origins", &m.args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("galion-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `galion-edge COMMAND ARGS` for a command that moved to the tools binary: says the command
/// to type instead, exits 2.
fn moved(command: &str, args: &[OsString]) -> ExitCode {
    eprintln!("galion-edge: {}", moved_message(command, args));
    ExitCode::from(2)
}

fn moved_message(command: &str, args: &[OsString]) -> String {
    let rest: String = args
        .iter()
        .map(|a| format!(" {}", a.to_string_lossy()))
        .collect();
    format!(
        "`{command}` is not part of the proxy's binary any more; run `{TOOLS_BIN} {command}{rest}` \
         (build it with `cargo build -p {TOOLS_BIN}`, or from the repository: \
         `cargo run -p {TOOLS_BIN} -- {command}{rest}`)"
    )
}

/// Sets up logging as every binary of the workspace does: `env_logger` on stderr, filtered by
/// `RUST_LOG` (default `info`), millisecond timestamps. A second call changes nothing.
pub fn init_logging() {
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

/// `galion-edge certs -c FILE`: each site's certificate as the proxy would serve it at start
/// (files as they are on disk, ACME certificates from the state directory).
pub fn certs(path: &Path) -> anyhow::Result<()> {
    use proxy_core::{SniResolver, StateDir};
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    let resolver = SniResolver::with_sites(config.certificate_specs())
        .context("loading the certificate files")?;
    if let Some(acme) = &config.acme {
        let state = StateDir::open(&acme.state_dir)
            .with_context(|| format!("opening acme.state_dir {}", acme.state_dir.display()))?;
        for site in &acme.sites {
            match state.load_cert(&site.name) {
                Ok(Some((stored, key))) => resolver.install(&site.name, key, stored.info),
                Ok(None) => {}
                Err(e) => println!("{}: saved certificate unusable: {e}", site.name),
            }
        }
    }
    let rows = resolver.certificates();
    if rows.is_empty() {
        println!("no site has a certificate (no https listener, or no site with tls)");
        return Ok(());
    }
    let date = httpdate::fmt_http_date;
    for c in rows {
        let source = match &c.file {
            Some(f) => format!("file {}", f.display()),
            None => "acme".to_string(),
        };
        println!("{} ({source})", c.site);
        println!("  hosts:        {}", c.hosts.join(", "));
        let Some(info) = c.info else {
            println!(
                "  certificate:  none yet (ordered when the proxy starts; until issued, https \
                 clients for these names get the TLS alert access_denied)"
            );
            continue;
        };
        println!("  names:        {}", info.names.join(", "));
        println!("  issuer:       {}", info.issuer);
        println!(
            "  valid:        {} to {}",
            date(info.not_before),
            date(info.not_after)
        );
        if !info.covers(&c.hosts) {
            println!("  warning:      does not cover every host of the site");
        }
        match c.file {
            Some(_) => println!(
                "  next renewal: by whatever writes the files (certbot); reloaded within \
                 tls.reload_interval"
            ),
            None => println!(
                "  next renewal: {} (two thirds of the lifetime; earlier if the CA's renewal \
                 information says so)",
                date(proxy_core::acme_renewal_time(&info))
            ),
        }
    }
    Ok(())
}

/// Loads, validates and runs; returns only on a startup error. SIGHUP re-reads `path`.
pub fn run(path: &Path, upgrade: bool) -> anyhow::Result<()> {
    let config = Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))?;
    serve(config, Some(path), upgrade)
}

/// Runs a validated config until the process is told to stop (also what
/// `galion-edge-tools demo` runs). `path` is the file a reload (SIGHUP, `POST /reload`) reads
/// again; without it reloads are refused.
pub fn serve(config: Config, path: Option<&Path>, upgrade: bool) -> anyhow::Result<()> {
    let mut proxy = ProxyOptions::default();
    if let Some(p) = path {
        // Absolute, so a reload finds the file whatever the working directory is then.
        let p = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        proxy = proxy
            .with_upgrade_command(upgrade_command(&p))
            .with_config_path(p);
    }
    let server =
        build_server_with(config, &RunOptions { upgrade }, proxy).context("starting the server")?;
    log::info!("galion-edge {} starting", env!("CARGO_PKG_VERSION"));
    server.run_forever()
}

/// What a SIGUSR2 starts (docs/operations.md "Binary upgrade"): this binary, found again by
/// the name it was started with (an absolute path, or a name looked up in `PATH`), so that
/// the file installed over it is what runs; `run -c CONFIG --upgrade`.
fn upgrade_command(config: &Path) -> Vec<OsString> {
    let argv0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| OsString::from("galion-edge"));
    let program = if Path::new(&argv0).components().count() > 1 {
        std::path::absolute(&argv0).map_or(argv0, PathBuf::into_os_string)
    } else {
        argv0
    };
    vec![
        program,
        "run".into(),
        "-c".into(),
        config.as_os_str().to_owned(),
        "--upgrade".into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moved_commands_take_any_arguments_and_name_the_tools_command() {
        let cli = Cli::try_parse_from(["galion-edge", "loadtest", "-s", "api-hit", "--help"]);
        let args = match cli.map(|c| c.command) {
            Ok(Command::Loadtest(m)) => m.args,
            other => panic!("{other:?}"),
        };
        assert_eq!(args, ["-s", "api-hit", "--help"]);
        let msg = moved_message("loadtest", &args);
        assert!(
            msg.contains("`galion-edge-tools loadtest -s api-hit --help`"),
            "{msg}"
        );
        assert!(
            msg.contains("cargo run -p galion-edge-tools -- loadtest"),
            "{msg}"
        );
        assert!(matches!(
            Cli::try_parse_from(["galion-edge", "demo"]).map(|c| c.command),
            Ok(Command::Demo(_))
        ));
    }
}
