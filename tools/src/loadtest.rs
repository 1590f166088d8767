//! `galion-edge-tools loadtest`: bounded load runs on loopback, with a JSON report and an SVG plot.
//!
//! Without `--url`, the command starts the sample origins and the proxy (child processes: this
//! binary's `origins` and the `galion-edge` binary's `run`, on the embedded local config with free
//! ports, or on `--config`; [`spawn::proxy_binary`] says where the proxy binary is found), warms
//! the cache, and runs the chosen scenarios against the proxy. With `--url` (and `--tls-url` for the HTTPS
//! scenarios) it runs them against any loopback server, such as nginx, measuring the processes
//! given with `--pid` (and their children) the same way.
//!
//! Every run is bounded: a duration (default 10 s, at most 5 min) and a request count per
//! scenario, at most 4,096 connections and 10,000 WebSockets; targets must be loopback addresses.
//! See `docs/benchmarks.md`.

pub mod client;
pub mod plot;
pub mod procfs;
pub mod report;
pub mod scenarios;
pub mod spawn;

use client::{Endpoint, RequestSet, RunParams, Shared};
use procfs::ProcSet;
use report::{Machine, Report, RunConfig, ScenarioReport, ServerUsage, WebSocketResult};
use scenarios::{Scenario, Transport, Workload};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// At most this many connections per scenario.
pub const MAX_CONNECTIONS: usize = 4096;
/// At most this many idle WebSockets.
pub const MAX_WEBSOCKETS: usize = 10_000;
/// At most this long per scenario.
pub const MAX_DURATION: Duration = Duration::from_secs(300);
/// At most this many requests per scenario.
pub const MAX_REQUESTS: u64 = 100_000_000;
/// The duration when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// Errors of a load test.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    /// A command-line value out of bounds or inconsistent.
    #[error("{0}")]
    Args(String),
    /// The target is not on this machine.
    #[error("{url}: resolves to {addrs}; load tests target loopback only (127.0.0.0/8 or ::1), so that a run can never load someone else's server")]
    NotLoopback {
        /// The URL given.
        url: String,
        /// What it resolved to.
        addrs: String,
    },
    /// A scenario that cannot be prepared.
    #[error("scenario: {0}")]
    Scenario(String),
    /// The TLS client could not be set up.
    #[error("TLS client: {0}")]
    Tls(String),
    /// The target did not answer the warm-up requests as expected.
    #[error("warm-up failed (is the target the proxy or nginx with the bench config, and are the origins up?): {0}")]
    Warmup(String),
    /// Starting the origins or the proxy failed.
    #[error("starting the servers: {0}")]
    Spawn(String),
    /// Writing the report failed.
    #[error("writing the report: {0}")]
    Report(String),
}

/// `galion-edge-tools loadtest` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct LoadtestArgs {
    /// Scenarios, repeated or comma-separated; `all` (the default) runs every one. See --list.
    #[arg(short = 's', long = "scenario")]
    pub scenarios: Vec<String>,
    /// Print the scenarios and exit.
    #[arg(long)]
    pub list: bool,
    /// Connections per HTTP scenario (at most 4096).
    #[arg(short = 'c', long, default_value_t = 32)]
    pub connections: usize,
    /// Measurement time per scenario ("10s", "1m"; at most 5m). Default 10s, or 5m with --requests.
    #[arg(short = 'd', long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Stop each scenario after this many requests (at most 100,000,000).
    #[arg(short = 'n', long)]
    pub requests: Option<u64>,
    /// Fixed request rate per second over all connections (open loop; latency measured from
    /// each request's intended send time). Without it, each connection sends its next request
    /// as soon as the previous answer is read.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Concurrent streams per HTTP/2 connection.
    #[arg(long, default_value_t = 1)]
    pub h2_streams: usize,
    /// WebSocket connections of the ws-idle scenario (at most 10,000).
    #[arg(long, default_value_t = 1000)]
    pub ws_connections: usize,
    /// Each warm-up request is sent this many times before measuring.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
    /// Target a running server at this plain-HTTP base URL (loopback only) instead of starting
    /// the origins and the proxy.
    #[arg(long)]
    pub url: Option<String>,
    /// The HTTPS base URL of the running server, for the TLS scenarios (loopback only).
    #[arg(long)]
    pub tls_url: Option<String>,
    /// With --url: the server's PIDs to measure (CPU, RSS); their child processes are included.
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// The name of the target in the report (default: galion-edge, or "target" with --url).
    #[arg(long)]
    pub label: Option<String>,
    /// Without --url: run the proxy on this config (it needs an http_proxy listener and the
    /// sites of configs/local.toml) instead of the embedded local config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Without --url: the `galion-edge` binary to start as the proxy. Default: the path in
    /// $GALION_EDGE_BIN, else `galion-edge` in this binary's directory (where Cargo builds both).
    #[arg(long, value_name = "PATH")]
    pub proxy_bin: Option<PathBuf>,
    /// Directory for report.json and latency.svg.
    #[arg(short = 'o', long, default_value = "loadtest-report")]
    pub out: PathBuf,
    /// Print the markdown comparison (medians per scenario and label) of the reports under these
    /// directories, and run nothing.
    #[arg(long, num_args = 1..)]
    pub summarize: Vec<PathBuf>,
}

/// Runs `galion-edge-tools loadtest`.
pub fn run(args: LoadtestArgs) -> anyhow::Result<()> {
    if args.list {
        for s in scenarios::all() {
            println!("{:<11} {}", s.name, s.description);
        }
        return Ok(());
    }
    if !args.summarize.is_empty() {
        let reports = report::load_reports(&args.summarize).map_err(LoadtestError::Report)?;
        if reports.is_empty() {
            return Err(LoadtestError::Report("no reports found".into()).into());
        }
        print!("{}", report::summarize(&reports));
        return Ok(());
    }
    let plan = Plan::from_args(&args)?;
    // The servers start before the runtime: they are separate processes.
    let spawned = match &args.url {
        Some(_) => None,
        None => {
            let proxy_bin = spawn::proxy_binary(args.proxy_bin.as_deref())?;
            eprintln!(
                "galion-edge-tools loadtest: starting the sample origins and the proxy ({})...",
                proxy_bin.display()
            );
            Some(spawn::spawn(args.config.as_deref(), &proxy_bin)?)
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(run_all(&args, &plan, spawned.as_ref()))?;
    drop(spawned);

    std::fs::create_dir_all(&args.out)
        .map_err(|e| LoadtestError::Report(format!("{}: {e}", args.out.display())))?;
    let json_path = args.out.join("report.json");
    let svg_path = args.out.join("latency.svg");
    let json =
        serde_json::to_string_pretty(&report).map_err(|e| LoadtestError::Report(e.to_string()))?;
    std::fs::write(&json_path, json)
        .map_err(|e| LoadtestError::Report(format!("{}: {e}", json_path.display())))?;
    std::fs::write(&svg_path, plot::svg(&report))
        .map_err(|e| LoadtestError::Report(format!("{}: {e}", svg_path.display())))?;
    print!("{}", report::human(&report));
    println!(
        "report: {}  plot: {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}

/// The checked settings of a run.
#[derive(Debug, Clone)]
struct Plan {
    scenarios: Vec<Scenario>,
    params: RunParams,
    ws_connections: usize,
}

impl Plan {
    fn from_args(a: &LoadtestArgs) -> Result<Plan, LoadtestError> {
        let bad = |m: String| Err(LoadtestError::Args(m));
        if a.connections == 0 || a.connections > MAX_CONNECTIONS {
            return bad(format!(
                "--connections {}: must be 1..={MAX_CONNECTIONS}",
                a.connections
            ));
        }
        if a.ws_connections == 0 || a.ws_connections > MAX_WEBSOCKETS {
            return bad(format!(
                "--ws-connections {}: must be 1..={MAX_WEBSOCKETS}",
                a.ws_connections
            ));
        }
        if a.h2_streams == 0 || a.h2_streams > 128 {
            return bad(format!("--h2-streams {}: must be 1..=128", a.h2_streams));
        }
        if let Some(d) = a.duration {
            if d.is_zero() || d > MAX_DURATION {
                return bad(format!(
                    "--duration {}: must be more than 0 and at most 5m",
                    humantime::format_duration(d)
                ));
            }
        }
        if let Some(n) = a.requests {
            if n == 0 || n > MAX_REQUESTS {
                return bad(format!("--requests {n}: must be 1..={MAX_REQUESTS}"));
            }
        }
        if let Some(r) = a.rate {
            if !(r.is_finite() && r > 0.0 && r <= 1e6) {
                return bad(format!(
                    "--rate {r}: must be a number of requests per second, above 0 and at most 1000000"
                ));
            }
        }
        if a.url.is_none() && (a.tls_url.is_some() || !a.pid.is_empty()) {
            return bad("--tls-url and --pid go with --url (without --url, loadtest starts and measures the proxy itself)".into());
        }
        if a.url.is_some() && a.config.is_some() {
            return bad(
                "--config is for the proxy loadtest starts; it does not go with --url".into(),
            );
        }
        if a.url.is_some() && a.proxy_bin.is_some() {
            return bad(
                "--proxy-bin is for the proxy loadtest starts; it does not go with --url".into(),
            );
        }
        let scenarios = scenarios::select(&a.scenarios).map_err(LoadtestError::Args)?;
        let duration = a.duration.unwrap_or(if a.requests.is_some() {
            MAX_DURATION
        } else {
            DEFAULT_DURATION
        });
        Ok(Plan {
            scenarios,
            params: RunParams {
                connections: a.connections,
                h2_streams: a.h2_streams,
                duration,
                max_requests: a.requests.unwrap_or(MAX_REQUESTS),
                rate: a.rate,
                request_timeout: Duration::from_secs(15),
            },
            ws_connections: a.ws_connections,
        })
    }
}

/// Resolves a base URL and refuses anything but loopback addresses.
async fn loopback_addr(url: &str, scheme: &str) -> Result<SocketAddr, LoadtestError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| LoadtestError::Args(format!("{url}: not a URL ({e})")))?;
    if uri.scheme_str() != Some(scheme) {
        return Err(LoadtestError::Args(format!(
            "{url}: expected a {scheme}:// URL"
        )));
    }
    let host = uri
        .host()
        .ok_or_else(|| LoadtestError::Args(format!("{url}: no host")))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| LoadtestError::Args(format!("{url}: cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() || addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(LoadtestError::NotLoopback {
            url: url.to_string(),
            addrs: if addrs.is_empty() {
                "nothing".into()
            } else {
                addrs
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        });
    }
    Ok(addrs[0])
}

fn machine() -> Machine {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let load_average_1m = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        kernel,
        load_average_1m,
    }
}

async fn run_all(
    args: &LoadtestArgs,
    plan: &Plan,
    spawned: Option<&spawn::Spawned>,
) -> anyhow::Result<Report> {
    let (plain, tls, procs, label) = match spawned {
        Some(s) => (
            s.plain,
            s.https,
            ProcSet::new(vec![s.proxy_pid]),
            args.label.clone().unwrap_or_else(|| "galion-edge".into()),
        ),
        None => {
            let url = args.url.as_deref().unwrap_or_default();
            let plain = loopback_addr(url, "http").await?;
            let tls = match &args.tls_url {
                Some(u) => Some(loopback_addr(u, "https").await?),
                None => None,
            };
            (
                plain,
                tls,
                ProcSet::new(args.pid.clone()),
                args.label.clone().unwrap_or_else(|| "target".into()),
            )
        }
    };
    let shared_stop = Arc::new(AtomicBool::new(false));
    {
        let stop = shared_stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                stop.store(true, Ordering::SeqCst);
            }
        });
    }
    let started_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default();
    let mut report = Report {
        tool: report::TOOL.into(),
        version: env!("CARGO_PKG_VERSION").into(),
        label,
        started_unix,
        machine: machine(),
        config: RunConfig {
            connections: plan.params.connections,
            h2_streams: plan.params.h2_streams,
            duration_s: plan.params.duration.as_secs_f64(),
            max_requests: plan.params.max_requests,
            rate: plan.params.rate,
            ws_connections: plan.ws_connections,
            url: Some(format!("http://{plain}")),
            tls_url: tls.map(|t| format!("https://{t}")),
            spawned: spawned.is_some(),
        },
        scenarios: Vec::new(),
    };
    for sc in &plan.scenarios {
        if shared_stop.load(Ordering::SeqCst) {
            break;
        }
        let endpoint = match sc.transport {
            Transport::Http1 => Endpoint {
                addr: plain,
                tls: None,
                h2: false,
            },
            t => {
                let Some(addr) = tls else {
                    eprintln!(
                        "galion-edge-tools loadtest: {} skipped: it needs --tls-url (the target's HTTPS listener)",
                        sc.name
                    );
                    continue;
                };
                let h2 = t == Transport::TlsHttp2;
                Endpoint {
                    addr,
                    tls: Some(client::tls_config(h2)?),
                    h2,
                }
            }
        };
        eprintln!(
            "galion-edge-tools loadtest: {} ({})",
            sc.name, sc.description
        );
        let shared = Shared::new(shared_stop.clone());
        let r = match &sc.workload {
            Workload::Http { requests } => {
                let set = Arc::new(RequestSet::new(requests, sc.transport)?);
                client::warm(&endpoint, &set, args.warmup, Duration::from_secs(15)).await?;
                measure_http(sc, endpoint, set, plan, &procs, shared).await
            }
            Workload::IdleWebSockets { host, path } => {
                measure_ws(sc, &endpoint, host, path, plan, &procs, shared).await
            }
        };
        report.scenarios.push(r);
    }
    Ok(report)
}

/// Samples the server's memory every 100 ms until told to stop; returns the highest sum.
fn rss_sampler(procs: ProcSet, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::task::spawn_blocking(move || {
        let mut peak = 0;
        while !stop.load(Ordering::Relaxed) {
            peak = peak.max(procs.sample().rss_bytes);
            std::thread::sleep(Duration::from_millis(100));
        }
        peak.max(procs.sample().rss_bytes)
    })
}

fn progress(
    total: Duration,
    shared: Arc<Shared>,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stdout().is_terminal() {
            return;
        }
        let bar = indicatif::ProgressBar::new(total.as_millis() as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template("  [{bar:40}] {elapsed:>4} / {len_s} {msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        let start = tokio::time::Instant::now();
        let len_s = format!("{:.0}s", total.as_secs_f64());
        while !done.load(Ordering::Relaxed) {
            let n = shared.completed.load(Ordering::Relaxed);
            let el = start.elapsed();
            bar.set_position(el.as_millis() as u64);
            bar.set_message(format!(
                "{len_s}  {n} done, {:.0}/s",
                n as f64 / el.as_secs_f64().max(1e-3)
            ));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bar.finish_and_clear();
    })
}

async fn measure_http(
    sc: &Scenario,
    endpoint: Endpoint,
    set: Arc<RequestSet>,
    plan: &Plan,
    procs: &ProcSet,
    shared: Arc<Shared>,
) -> ScenarioReport {
    let before = procs.sample();
    let gen_before = procfs::self_cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = (!procs.is_empty()).then(|| rss_sampler(procs.clone(), stop.clone()));
    let bar = progress(plan.params.duration, shared.clone(), stop.clone());
    let (stats, elapsed) = client::run(endpoint, set, plan.params.clone(), shared).await;
    stop.store(true, Ordering::SeqCst);
    let _ = bar.await;
    let peak = match sampler {
        Some(s) => s.await.unwrap_or(0),
        None => 0,
    };
    let after = procs.sample();
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut r = ScenarioReport::from_stats(sc, &stats, elapsed);
    r.loadgen_cpu_percent = (procfs::self_cpu_seconds() - gen_before) / secs * 100.0;
    r.server = (!procs.is_empty()).then(|| usage(procs, &before, &after, peak, secs));
    r
}

fn usage(
    procs: &ProcSet,
    before: &procfs::Sample,
    after: &procfs::Sample,
    peak: u64,
    secs: f64,
) -> ServerUsage {
    let cpu = (after.cpu_seconds - before.cpu_seconds).max(0.0);
    ServerUsage {
        pids: procs.roots().to_vec(),
        processes: after.processes,
        cpu_seconds: cpu,
        cpu_percent: cpu / secs * 100.0,
        peak_rss_bytes: peak.max(after.rss_bytes),
        rss_before_bytes: before.rss_bytes,
        rss_after_bytes: after.rss_bytes,
        hwm_bytes: after.hwm_bytes,
    }
}

async fn measure_ws(
    sc: &Scenario,
    endpoint: &client::Endpoint,
    host: &str,
    path: &str,
    plan: &Plan,
    procs: &ProcSet,
    shared: Arc<Shared>,
) -> ScenarioReport {
    let start = tokio::time::Instant::now();
    // Opening is bounded by the scenario duration, but given at least 30 s for the handshakes.
    let deadline = start
        + plan
            .params
            .duration
            .max(Duration::from_secs(30))
            .min(MAX_DURATION);
    // One connection opened and closed first, so lazily allocated per-route state is in
    // the baseline rather than counted per connection.
    let (warm, _) = client::open_websockets(endpoint, host, path, 1, deadline, &shared).await;
    warm.close(Duration::from_secs(5)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = procs.sample();
    let gen_before = procfs::self_cpu_seconds();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = (!procs.is_empty()).then(|| rss_sampler(procs.clone(), stop.clone()));
    let n = plan.ws_connections;
    let (hold, outcome) = client::open_websockets(endpoint, host, path, n, deadline, &shared).await;
    // Let the servers settle (buffers of the handshakes freed), then read the memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let held = procs.sample();
    let elapsed = start.elapsed();
    hold.close(Duration::from_secs(10)).await;
    stop.store(true, Ordering::SeqCst);
    let peak = match sampler {
        Some(s) => s.await.unwrap_or(0),
        None => 0,
    };
    let secs = elapsed.as_secs_f64().max(1e-9);
    let mut stats = client::Stats::new();
    stats.requests = outcome.opened;
    let mut r = ScenarioReport::from_stats(sc, &stats, elapsed);
    r.loadgen_cpu_percent = (procfs::self_cpu_seconds() - gen_before) / secs * 100.0;
    r.errors.connect = outcome.failed;
    if !procs.is_empty() {
        let mut u = usage(procs, &before, &held, peak, secs);
        u.rss_after_bytes = held.rss_bytes;
        r.server = Some(u);
    }
    r.websockets = Some(WebSocketResult {
        requested: n,
        opened: outcome.opened,
        failed: outcome.failed,
        bytes_per_connection: if outcome.opened == 0 || procs.is_empty() {
            0.0
        } else {
            (held.rss_bytes as f64 - before.rss_bytes as f64) / outcome.opened as f64
        },
    });
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: LoadtestArgs,
    }

    fn plan(args: &[&str]) -> Result<Plan, LoadtestError> {
        let mut v = vec!["loadtest"];
        v.extend_from_slice(args);
        match Cli::try_parse_from(v) {
            Ok(c) => Plan::from_args(&c.a),
            Err(e) => Err(LoadtestError::Args(e.to_string())),
        }
    }

    #[test]
    fn bounds_are_enforced() {
        assert!(plan(&["-c", "5000"]).is_err());
        assert!(plan(&["-c", "0"]).is_err());
        assert!(plan(&["-d", "10m"]).is_err());
        assert!(plan(&["-n", "0"]).is_err());
        assert!(plan(&["--rate", "0"]).is_err());
        assert!(plan(&["--ws-connections", "20000"]).is_err());
        assert!(plan(&["--pid", "1"]).is_err());
        assert!(plan(&["--url", "http://127.0.0.1:1", "--proxy-bin", "/x"]).is_err());
        assert!(plan(&["-s", "nope"]).is_err());
        let p = plan(&["-n", "100"]).map(|p| (p.params.duration, p.params.max_requests));
        assert_eq!(p.ok(), Some((MAX_DURATION, 100)));
        let p = plan(&[]).map(|p| (p.params.duration, p.scenarios.len()));
        assert_eq!(p.ok(), Some((DEFAULT_DURATION, scenarios::all().len())));
    }

    #[tokio::test]
    async fn only_loopback_targets() {
        assert!(loopback_addr("http://127.0.0.1:8088", "http").await.is_ok());
        assert!(loopback_addr("http://127.1.2.3:8088", "http").await.is_ok());
        assert!(loopback_addr("https://[::1]:8443", "https").await.is_ok());
        assert!(loopback_addr("http://localhost:8088", "http").await.is_ok());
        let e = loopback_addr("http://10.0.0.1:80", "http").await;
        assert!(matches!(e, Err(LoadtestError::NotLoopback { .. })));
        let e = loopback_addr("http://0.0.0.0:80", "http").await;
        assert!(matches!(e, Err(LoadtestError::NotLoopback { .. })));
        assert!(loopback_addr("https://127.0.0.1:1", "http").await.is_err());
    }
}
