//! Shared pieces of the criterion benches: the production-shaped config, the documented
//! targets each bench protects, a short criterion configuration, and the margin report.
//!
//! Every bench measures through criterion and then prints one line naming the target it
//! protects (../shared/seed/ARCHITECTURE.md) and the margin: the target divided by the
//! measured time per operation. The goal for the proxy's own share is two orders of magnitude
//! (100x) inside the target.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use criterion::{black_box, Bencher, Criterion};
use proxy_core::config::Config;
use std::cell::RefCell;
use std::time::{Duration, Instant};

/// configs/galion.toml's sites and routes, with certificates and files left out so it loads
/// anywhere.
pub fn production_config() -> Config {
    let text = include_str!("../../configs/galion.toml");
    let mut raw: proxy_core::config::RawConfig = toml::from_str(text).unwrap();
    raw.listeners.https.clear();
    raw.listeners.http_proxy = vec!["127.0.0.1:1".into()];
    raw.access_log.path = Some("off".into());
    raw.acme.webroot = None;
    for s in &mut raw.sites {
        s.tls = None;
    }
    Config::from_raw(raw, std::path::Path::new(".")).unwrap()
}

/// A documented latency target (ARCHITECTURE.md, "Performance targets").
#[derive(Debug, Clone, Copy)]
pub struct Target {
    /// What the document says.
    pub name: &'static str,
    /// The figure the margin is taken against: the strictest end of the range.
    pub budget: Duration,
}

/// A server-side cache hit in 5-20 ms; the margin is against the low end.
pub const CACHE_HIT: Target = Target {
    name: "server cache hit 5-20 ms",
    budget: Duration::from_millis(5),
};

/// An average API call in 50-150 ms; the margin is against the low end.
pub const API_CALL: Target = Target {
    name: "average API call 50-150 ms",
    budget: Duration::from_millis(50),
};

/// P99 under 500 ms.
pub const P99: Target = Target {
    name: "P99 under 500 ms",
    budget: Duration::from_millis(500),
};

/// The margin we aim for: the proxy's own share two orders of magnitude inside the target.
pub const GOAL: f64 = 100.0;

/// The bench configuration: short warm-up and measurement so `cargo bench` as a whole takes a
/// few minutes. Command-line options (`--measurement-time` etc.) still override it.
/// Also prints the machine's load average once: on a shared machine every time below grows
/// with it.
pub fn criterion() -> Criterion {
    if let Ok(load) = std::fs::read_to_string("/proc/loadavg") {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!(
            "machine: {cores} cores, load average {}",
            load.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

/// Whether the binary runs as a real benchmark (`cargo bench`, which passes `--bench`), not
/// as a compile-and-run-once check (`cargo test --benches`).
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// Collects the per-operation times criterion measures for one bench, to report the margin.
#[derive(Debug, Default)]
pub struct Margin {
    per_op_ns: RefCell<Vec<f64>>,
}

impl Margin {
    /// An empty collector.
    pub fn new() -> Self {
        Self::default()
    }

    fn record(&self, elapsed: Duration, iters: u64) {
        if iters > 0 {
            self.per_op_ns
                .borrow_mut()
                .push(elapsed.as_secs_f64() * 1e9 / iters as f64);
        }
    }

    /// Measures `f` (as `Bencher::iter` does) and records each sample.
    pub fn iter<O>(&self, b: &mut Bencher<'_>, mut f: impl FnMut() -> O) {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(f());
            }
            let elapsed = start.elapsed();
            self.record(elapsed, iters);
            elapsed
        });
    }

    /// Measures `routine` on inputs made by `setup` outside the timed part (as
    /// `Bencher::iter_batched_ref` does), in batches of at most 1024 inputs.
    pub fn iter_batched<I, O>(
        &self,
        b: &mut Bencher<'_>,
        mut setup: impl FnMut() -> I,
        mut routine: impl FnMut(&mut I) -> O,
    ) {
        b.iter_custom(|iters| {
            let mut elapsed = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(1024);
                let mut inputs: Vec<I> = (0..n).map(|_| setup()).collect();
                let start = Instant::now();
                for i in &mut inputs {
                    black_box(routine(i));
                }
                elapsed += start.elapsed();
                drop(inputs);
                left -= n;
            }
            self.record(elapsed, iters);
            elapsed
        });
    }

    /// The median time per operation over the samples recorded, if any.
    pub fn per_op(&self) -> Option<Duration> {
        let mut v = self.per_op_ns.borrow().clone();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        Some(Duration::from_secs_f64(v[v.len() / 2] / 1e9))
    }

    /// Prints `what`'s time per operation, the target it protects and the margin.
    pub fn report(&self, what: &str, target: Target) {
        if let Some(t) = self.per_op() {
            report_margin(what, t, target);
        }
    }
}

/// Prints how far inside `target` a measured per-operation time is: the target divided by the
/// time, against the [`GOAL`] of 100x.
pub fn report_margin(what: &str, per_op: Duration, target: Target) {
    let ratio = target.budget.as_secs_f64() / per_op.as_secs_f64().max(1e-12);
    let verdict = if ratio >= GOAL { "ok" } else { "SHORT" };
    println!(
        "margin: {what}: {} per operation; protects \"{}\": {} / {} = {ratio:.0}x (goal {GOAL:.0}x: {verdict})",
        fmt_duration(per_op),
        target.name,
        fmt_duration(target.budget),
        fmt_duration(per_op),
    );
}

/// A duration in the unit that reads best (ns, µs, ms).
pub fn fmt_duration(d: Duration) -> String {
    let ns = d.as_secs_f64() * 1e9;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{:.2} ms", ns / 1e6)
    }
}

/// Benchmarks `f` as `id` and prints its margin against `target`.
pub fn bench<O>(c: &mut Criterion, id: &str, target: Target, f: impl FnMut() -> O) {
    let m = Margin::new();
    let mut f = f;
    c.bench_function(id, |b| m.iter(b, &mut f));
    m.report(id, target);
}
