//! The report of a run: JSON (serde), the human table, and the comparison table of several runs
//! (`galion-edge-tools loadtest --summarize DIR`: medians per scenario and target over rounds).

use super::client::{Stats, CACHE_STATUSES};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The `tool` field of every report: the command that wrote it. Reports written before the
/// load generator moved out of the proxy's binary say `galion-edge loadtest`; `--summarize`
/// reads both.
pub const TOOL: &str = "galion-edge-tools loadtest";

/// The whole report of one `galion-edge-tools loadtest` invocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always [`TOOL`].
    pub tool: String,
    /// The galion-edge version that measured.
    pub version: String,
    /// What was measured (`galion-edge`, `nginx`, `origin`, ...).
    pub label: String,
    /// Unix time of the start, seconds.
    pub started_unix: u64,
    /// The machine.
    pub machine: Machine,
    /// The settings of the run.
    pub config: RunConfig,
    /// One entry per scenario, in the order run.
    pub scenarios: Vec<ScenarioReport>,
}

/// The machine the run was on.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Machine {
    /// Logical CPUs (`nproc`).
    pub cpus: usize,
    /// `uname -r`, from `/proc/sys/kernel/osrelease`.
    pub kernel: String,
    /// The 1-minute load average when the run started.
    pub load_average_1m: f64,
}

/// Settings of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunConfig {
    /// Connections per HTTP scenario.
    pub connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_streams: usize,
    /// Measurement time per scenario, seconds.
    pub duration_s: f64,
    /// Request cap per scenario.
    pub max_requests: u64,
    /// Fixed rate (requests/s), or none for closed loop.
    pub rate: Option<f64>,
    /// WebSocket connections of `ws-idle`.
    pub ws_connections: usize,
    /// The plain-HTTP target.
    pub url: Option<String>,
    /// The HTTPS target.
    pub tls_url: Option<String>,
    /// Whether loadtest started the origins and the proxy itself.
    pub spawned: bool,
}

/// Latency percentiles, microseconds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Latency {
    /// Smallest.
    pub min: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest.
    pub max: u64,
}

/// What the server processes used during a scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerUsage {
    /// Root PIDs measured (their children are included).
    pub pids: Vec<u32>,
    /// Processes read at the end.
    pub processes: usize,
    /// CPU seconds (user + system) during the measurement.
    pub cpu_seconds: f64,
    /// CPU as a percentage of one core over the measurement (200 = two cores busy).
    pub cpu_percent: f64,
    /// The highest sum of `VmRSS` sampled (every 100 ms) during the measurement, bytes.
    pub peak_rss_bytes: u64,
    /// Sum of `VmRSS` just before the measurement, bytes.
    pub rss_before_bytes: u64,
    /// Sum of `VmRSS` at the end, bytes.
    pub rss_after_bytes: u64,
    /// Sum of every process's `VmHWM` at the end (exact peak for one process), bytes.
    pub hwm_bytes: u64,
}

/// The result of the idle WebSocket scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WebSocketResult {
    /// Connections asked for.
    pub requested: usize,
    /// Connections opened and echoing.
    pub opened: u64,
    /// Connections that failed.
    pub failed: u64,
    /// Server `VmRSS` with all of them open, minus before, divided by `opened`.
    pub bytes_per_connection: f64,
}

/// One scenario's figures.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScenarioReport {
    /// Scenario name.
    pub scenario: String,
    /// What it measures.
    pub description: String,
    /// `http1`, `tls_http1` or `tls_http2`.
    pub transport: super::scenarios::Transport,
    /// Measured wall time, seconds.
    pub elapsed_s: f64,
    /// Completed requests.
    pub requests: u64,
    /// Completed requests per second.
    pub throughput_rps: f64,
    /// Body bytes received per second.
    pub body_bytes_per_s: f64,
    /// Latency, µs (from the intended send time at a fixed rate).
    pub latency_us: Latency,
    /// (percentile, µs) points of the latency curve, for plots.
    pub percentile_curve: Vec<(f64, u64)>,
    /// Responses per status code.
    pub status_counts: BTreeMap<String, u64>,
    /// Responses per `X-Cache-Status` (`none` when absent).
    pub cache_status_counts: BTreeMap<String, u64>,
    /// HIT, STALE and UPDATING (served from the cache) over all responses.
    pub cache_hit_ratio: f64,
    /// Failed connects, failed requests, timeouts.
    pub errors: Errors,
    /// New connections after the first ones (keep-alive closed by the server, errors).
    pub reconnects: u64,
    /// The server processes, when known.
    pub server: Option<ServerUsage>,
    /// CPU of the load generator itself, percent of one core.
    pub loadgen_cpu_percent: f64,
    /// `ws-idle` only.
    pub websockets: Option<WebSocketResult>,
}

/// Errors of a scenario.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Errors {
    /// Connections that could not be opened.
    pub connect: u64,
    /// Requests that failed on an open connection.
    pub request: u64,
    /// Requests without an answer within the request timeout.
    pub timeout: u64,
}

impl Errors {
    /// All errors.
    pub fn total(&self) -> u64 {
        self.connect + self.request + self.timeout
    }
}

/// The percentiles of the curve: 0, then towards 99.999% evenly on a log scale of 1/(1-p).
pub fn curve_percentiles() -> Vec<f64> {
    (0..=100)
        .map(|i| {
            let k = i as f64 * 0.05; // 0..=5 decades
            100.0 * (1.0 - 10f64.powf(-k))
        })
        .collect()
}

impl ScenarioReport {
    /// The figures of an HTTP scenario from its merged counters.
    pub fn from_stats(
        scenario: &super::scenarios::Scenario,
        stats: &Stats,
        elapsed: std::time::Duration,
    ) -> Self {
        let h = &stats.hist;
        let secs = elapsed.as_secs_f64().max(1e-9);
        let latency = if h.is_empty() {
            Latency::default()
        } else {
            Latency {
                min: h.min(),
                mean: h.mean(),
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                p999: h.value_at_quantile(0.999),
                max: h.max(),
            }
        };
        let curve = if h.is_empty() {
            Vec::new()
        } else {
            curve_percentiles()
                .into_iter()
                .map(|p| (p, h.value_at_percentile(p)))
                .collect()
        };
        let mut cache = BTreeMap::new();
        for (i, name) in CACHE_STATUSES.iter().enumerate() {
            if stats.cache[i] > 0 {
                cache.insert(name.to_string(), stats.cache[i]);
            }
        }
        if stats.cache_other > 0 {
            cache.insert("other".into(), stats.cache_other);
        }
        if stats.cache_none > 0 {
            cache.insert("none".into(), stats.cache_none);
        }
        let served_from_cache: u64 = ["HIT", "STALE", "UPDATING"]
            .iter()
            .filter_map(|n| cache.get(*n))
            .sum();
        ScenarioReport {
            scenario: scenario.name.into(),
            description: scenario.description.into(),
            transport: scenario.transport,
            elapsed_s: secs,
            requests: stats.requests,
            throughput_rps: stats.requests as f64 / secs,
            body_bytes_per_s: stats.body_bytes as f64 / secs,
            latency_us: latency,
            percentile_curve: curve,
            status_counts: stats
                .statuses
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            cache_status_counts: cache,
            cache_hit_ratio: if stats.requests == 0 {
                0.0
            } else {
                served_from_cache as f64 / stats.requests as f64
            },
            errors: Errors {
                connect: stats.connect_errors,
                request: stats.request_errors,
                timeout: stats.timeouts,
            },
            reconnects: stats.reconnects,
            server: None,
            loadgen_cpu_percent: 0.0,
            websockets: None,
        }
    }
}

/// Microseconds as a short human figure.
pub fn fmt_us(us: u64) -> String {
    if us >= 1_000_000 {
        format!("{:.2}s", us as f64 / 1e6)
    } else if us >= 1_000 {
        format!("{:.2}ms", us as f64 / 1e3)
    } else {
        format!("{us}µs")
    }
}

/// Bytes as MiB with one decimal.
pub fn fmt_mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

/// The human table of a report.
pub fn human(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "galion-edge-tools loadtest: {} ({} CPUs, kernel {}, load {:.2}); {} connections, {:.0}s or {} requests{}",
        report.label,
        report.machine.cpus,
        report.machine.kernel,
        report.machine.load_average_1m,
        report.config.connections,
        report.config.duration_s,
        report.config.max_requests,
        report
            .config
            .rate
            .map(|r| format!(", fixed rate {r:.0}/s"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "{:<11} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6} {:>7} {:>6} {:>11} {:>6}",
        "scenario",
        "req/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max",
        "hit%",
        "errors",
        "cpu%",
        "peak RSS",
        "gen%"
    );
    for s in &report.scenarios {
        let (cpu, rss) = match &s.server {
            Some(u) => (format!("{:.0}", u.cpu_percent), fmt_mib(u.peak_rss_bytes)),
            None => ("-".into(), "-".into()),
        };
        if let Some(ws) = &s.websockets {
            let _ = writeln!(
                out,
                "{:<11} {} of {} WebSockets open, {:.1} KiB of server RSS per connection, peak RSS {}",
                s.scenario,
                ws.opened,
                ws.requested,
                ws.bytes_per_connection / 1024.0,
                rss
            );
            continue;
        }
        let l = &s.latency_us;
        let _ = writeln!(
            out,
            "{:<11} {:>10.0} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6.1} {:>7} {:>6} {:>11} {:>6.0}",
            s.scenario,
            s.throughput_rps,
            fmt_us(l.p50),
            fmt_us(l.p90),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max),
            s.cache_hit_ratio * 100.0,
            s.errors.total(),
            cpu,
            rss,
            s.loadgen_cpu_percent
        );
        let statuses: Vec<String> = s
            .status_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let cache: Vec<String> = s
            .cache_status_counts
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let _ = writeln!(
            out,
            "{:<11} statuses {{{}}}  X-Cache-Status {{{}}}  {:.1} MB/s",
            "",
            statuses.join(", "),
            cache.join(", "),
            s.body_bytes_per_s / 1e6
        );
    }
    out
}

/// Every `*.json` report under `dirs` (recursively).
pub fn load_reports(dirs: &[PathBuf]) -> Result<Vec<Report>, String> {
    let mut files = Vec::new();
    for d in dirs {
        collect_json(d, &mut files).map_err(|e| format!("reading {}: {e}", d.display()))?;
    }
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(&f).map_err(|e| format!("reading {}: {e}", f.display()))?;
        let r: Report = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not a loadtest report: {e}", f.display()))?;
        out.push(r);
    }
    Ok(out)
}

fn collect_json(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_file() {
        if p.extension().is_some_and(|e| e == "json") {
            out.push(p.to_path_buf());
        }
        return Ok(());
    }
    for e in std::fs::read_dir(p)? {
        collect_json(&e?.path(), out)?;
    }
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Medians of one scenario on one target over rounds.
#[derive(Debug, Clone, Default)]
struct Cell {
    rounds: usize,
    rps: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    hit: f64,
    cpu: f64,
    rss: f64,
    rss_before: f64,
    errors: f64,
    ws_bytes: f64,
    ws_opened: f64,
}

/// The comparison table (markdown) of many reports: for each scenario and target label, the
/// medians over rounds; then, when both `galion-edge` and `nginx` were measured, the ratios.
pub fn summarize(reports: &[Report]) -> String {
    let mut scenarios: Vec<String> = Vec::new();
    let mut labels: Vec<String> = Vec::new();
    let mut runs: BTreeMap<(String, String), Vec<&ScenarioReport>> = BTreeMap::new();
    for r in reports {
        if !labels.contains(&r.label) {
            labels.push(r.label.clone());
        }
        for s in &r.scenarios {
            if !scenarios.contains(&s.scenario) {
                scenarios.push(s.scenario.clone());
            }
            runs.entry((s.scenario.clone(), r.label.clone()))
                .or_default()
                .push(s);
        }
    }
    let cell = |sc: &str, label: &str| -> Option<Cell> {
        let v = runs.get(&(sc.to_string(), label.to_string()))?;
        let m = |f: &dyn Fn(&ScenarioReport) -> f64| median(v.iter().map(|s| f(s)).collect());
        Some(Cell {
            rounds: v.len(),
            rps: m(&|s| s.throughput_rps),
            p50: m(&|s| s.latency_us.p50 as f64),
            p99: m(&|s| s.latency_us.p99 as f64),
            p999: m(&|s| s.latency_us.p999 as f64),
            hit: m(&|s| s.cache_hit_ratio),
            cpu: m(&|s| s.server.as_ref().map_or(f64::NAN, |u| u.cpu_percent)),
            rss: m(&|s| {
                s.server
                    .as_ref()
                    .map_or(f64::NAN, |u| u.peak_rss_bytes as f64)
            }),
            rss_before: m(&|s| {
                s.server
                    .as_ref()
                    .map_or(f64::NAN, |u| u.rss_before_bytes as f64)
            }),
            errors: m(&|s| s.errors.total() as f64),
            ws_bytes: m(&|s| {
                s.websockets
                    .as_ref()
                    .map_or(f64::NAN, |w| w.bytes_per_connection)
            }),
            ws_opened: m(&|s| s.websockets.as_ref().map_or(f64::NAN, |w| w.opened as f64)),
        })
    };
    let ms = |us: f64| {
        if us.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}", us / 1000.0)
        }
    };
    let mib = |b: f64| {
        if b.is_nan() {
            "-".to_string()
        } else {
            format!("{:.1}", b / 1048576.0)
        }
    };
    let num = |x: f64, d: usize| {
        if x.is_nan() {
            "-".to_string()
        } else {
            format!("{x:.d$}")
        }
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| scenario | target | rounds | req/s | p50 ms | p99 ms | p99.9 ms | hit % | server CPU % | server RSS before MiB | server peak RSS MiB | errors |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for sc in &scenarios {
        for label in &labels {
            let Some(c) = cell(sc, label) else { continue };
            if !c.ws_bytes.is_nan() {
                let _ = writeln!(
                    out,
                    "| {sc} | {label} | {} | {} WebSockets open: {} KiB per connection | | | | | {} | {} | {} | {} |",
                    c.rounds,
                    num(c.ws_opened, 0),
                    num(c.ws_bytes / 1024.0, 1),
                    num(c.cpu, 0),
                    mib(c.rss_before),
                    mib(c.rss),
                    num(c.errors, 0)
                );
                continue;
            }
            let _ = writeln!(
                out,
                "| {sc} | {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                c.rounds,
                num(c.rps, 0),
                ms(c.p50),
                ms(c.p99),
                ms(c.p999),
                num(c.hit * 100.0, 1),
                num(c.cpu, 0),
                mib(c.rss_before),
                mib(c.rss),
                num(c.errors, 0)
            );
        }
    }
    let (ours, theirs) = ("galion-edge", "nginx");
    if labels.iter().any(|l| l == ours) && labels.iter().any(|l| l == theirs) {
        let _ = writeln!(
            out,
            "\n| scenario | galion-edge / nginx req/s | p99 galion-edge / nginx | peak RSS galion-edge / nginx | goal met |"
        );
        let _ = writeln!(out, "|---|---:|---:|---:|---|");
        for sc in &scenarios {
            let (Some(a), Some(b)) = (cell(sc, ours), cell(sc, theirs)) else {
                continue;
            };
            if !a.ws_bytes.is_nan() {
                let ratio = a.ws_bytes / b.ws_bytes;
                let _ = writeln!(
                    out,
                    "| {sc} | per-connection memory {} | | {} | {} |",
                    num(ratio, 2),
                    num(a.rss / b.rss, 2),
                    if a.rss < b.rss {
                        "RSS lower"
                    } else {
                        "RSS higher"
                    }
                );
                continue;
            }
            let rps = a.rps / b.rps;
            let p99 = a.p99 / b.p99;
            let rss = a.rss / b.rss;
            let met = rps >= 1.2 && p99 <= 1.0 && rss < 1.0;
            let _ = writeln!(
                out,
                "| {sc} | {} | {} | {} | {} |",
                num(rps, 2),
                num(p99, 2),
                num(rss, 2),
                if met {
                    "yes".to_string()
                } else {
                    let mut why = Vec::new();
                    if rps < 1.2 {
                        why.push(format!(
                            "throughput {:.0}% short of 1.2x",
                            (1.2 - rps) / 1.2 * 100.0
                        ));
                    }
                    if p99 > 1.0 {
                        why.push(format!("p99 {:.0}% higher", (p99 - 1.0) * 100.0));
                    }
                    if rss >= 1.0 {
                        why.push(format!("peak RSS {:.0}% higher", (rss - 1.0) * 100.0));
                    }
                    format!("no: {}", why.join(", "))
                }
            );
        }
    }
    // Compressed hits against identity hits, per target.
    for label in &labels {
        if let (Some(id), Some(gz), Some(br)) = (
            cell("static-hit", label),
            cell("gzip-hit", label),
            cell("br-hit", label),
        ) {
            let _ = writeln!(
                out,
                "\n{label}: identity hits / gzip hits = {}x, identity hits / brotli hits = {}x (goal: within 1.5x)",
                num(id.rps / gz.rps, 2),
                num(id.rps / br.rps, 2)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(vec![]).is_nan());
    }

    #[test]
    fn curve_runs_from_zero_to_five_nines() {
        let c = curve_percentiles();
        assert_eq!(c.first().copied(), Some(0.0));
        assert!((c.last().copied().unwrap_or(0.0) - 99.999).abs() < 1e-9);
        assert!(c.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn human_durations() {
        assert_eq!(fmt_us(999), "999µs");
        assert_eq!(fmt_us(1500), "1.50ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
    }
}
