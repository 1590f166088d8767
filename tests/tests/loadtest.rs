//! `galion-edge-tools loadtest` through the real tools binary: it starts the sample origins (its
//! own `origins`) and the proxy under test (`--proxy-bin`) as child processes, runs two short
//! scenarios bounded by a request count, and writes a JSON report and an SVG plot whose figures
//! must add up; `--url` measures a running server (and a PID given with `--pid`); non-loopback
//! targets are refused; `--summarize` builds the comparison table; a missing proxy binary is
//! named. The proxy binary itself points `demo`, `loadtest` and `origins` to the tools binary.
//! Every run is bounded by `--requests` and a kill deadline; nothing here asserts speed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Ran {
    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the tools binary with `args`, killing it after `limit`.
fn run(args: &[&str], limit: Duration) -> Ran {
    run_program(tools_bin!(), args, limit)
}

/// Runs `program` with `args`, killing it after `limit`.
fn run_program(program: &str, args: &[&str], limit: Duration) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ran {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(out).unwrap_or_default(),
        stderr: std::fs::read_to_string(err).unwrap_or_default(),
    }
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(dir.join("report.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn scenario<'a>(r: &'a Value, name: &str) -> &'a Value {
    r["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == name)
        .unwrap_or_else(|| panic!("no {name} in {r:#}"))
}

/// Checks the figures of an HTTP scenario that completed `n` requests without errors.
fn check_http(s: &Value, n: u64) {
    let what = format!("{s:#}");
    assert_eq!(s["requests"], n, "{what}");
    assert_eq!(s["status_counts"]["200"], n, "{what}");
    for e in ["connect", "request", "timeout"] {
        assert_eq!(s["errors"][e], 0, "{what}");
    }
    let l = &s["latency_us"];
    let (p50, p90, p99, p999, max) = (
        l["p50"].as_u64().unwrap(),
        l["p90"].as_u64().unwrap(),
        l["p99"].as_u64().unwrap(),
        l["p999"].as_u64().unwrap(),
        l["max"].as_u64().unwrap(),
    );
    assert!(
        0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= p999 && p999 <= max,
        "{what}"
    );
    assert!(s["throughput_rps"].as_f64().unwrap() > 0.0, "{what}");
    assert_eq!(
        s["percentile_curve"].as_array().unwrap().len(),
        101,
        "{what}"
    );
}

#[test]
fn spawned_run_writes_report_and_plot() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let ran = run(
        &[
            "loadtest",
            "-s",
            "api-hit,br-hit",
            "--requests",
            "200",
            "--connections",
            "4",
            "-o",
            out.to_str().unwrap(),
            "--proxy-bin",
            bin!(),
        ],
        Duration::from_secs(60),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    // The human table names both scenarios and where the files went.
    assert!(
        ran.stdout.contains("api-hit") && ran.stdout.contains("br-hit"),
        "{}",
        ran.show()
    );
    assert!(ran.stdout.contains("report.json"), "{}", ran.show());

    let r = report(&out);
    assert_eq!(r["tool"], "galion-edge-tools loadtest");
    assert_eq!(r["label"], "galion-edge");
    assert_eq!(r["config"]["spawned"], true);
    assert_eq!(r["config"]["connections"], 4);
    assert_eq!(r["config"]["max_requests"], 200);
    assert!(r["machine"]["cpus"].as_u64().unwrap() >= 1);
    assert_eq!(r["scenarios"].as_array().unwrap().len(), 2);
    for name in ["api-hit", "br-hit"] {
        let s = scenario(&r, name);
        check_http(s, 200);
        // Warmed before measuring: the cache answers (a few misses at most if an entry
        // were still being written).
        assert!(
            s["cache_status_counts"]["HIT"].as_u64().unwrap() >= 190,
            "{s:#}"
        );
        assert!(s["cache_hit_ratio"].as_f64().unwrap() >= 0.95, "{s:#}");
        // The proxy is a measured child process.
        let server = &s["server"];
        assert_eq!(server["pids"].as_array().unwrap().len(), 1, "{s:#}");
        assert!(server["peak_rss_bytes"].as_u64().unwrap() > 0, "{s:#}");
        assert!(server["cpu_seconds"].as_f64().unwrap() >= 0.0, "{s:#}");
    }
    // 100 KB of JavaScript, brotli-compressed once and served from the cache: far fewer bytes.
    let br = scenario(&r, "br-hit");
    let br_bytes =
        br["body_bytes_per_s"].as_f64().unwrap() / br["throughput_rps"].as_f64().unwrap();
    assert!(br_bytes < 50_000.0, "{br:#}");

    let svg = std::fs::read_to_string(out.join("latency.svg")).unwrap();
    assert!(
        svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
        "{svg}"
    );
    assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
    assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
    assert!(svg.contains(">api-hit</text>") && svg.contains(">br-hit</text>"));
    assert_eq!(svg.matches('<').count(), svg.matches('>').count());
}

/// `ws-idle` and `ws-idle-tls` open their WebSockets through the spawned proxy, plain and over
/// its HTTPS listener (`wss://`), each checked by an echo, and report memory per connection.
#[test]
fn idle_websockets_open_over_plain_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("report");
    let ran = run(
        &[
            "loadtest",
            "-s",
            "ws-idle,ws-idle-tls",
            "--ws-connections",
            "20",
            "-o",
            out.to_str().unwrap(),
            "--proxy-bin",
            bin!(),
        ],
        Duration::from_secs(90),
    );
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    let r = report(&out);
    for name in ["ws-idle", "ws-idle-tls"] {
        let ws = &scenario(&r, name)["websockets"];
        assert_eq!(ws["requested"], 20, "{name}: {ws:#}");
        assert_eq!(ws["opened"], 20, "{name}: {ws:#}");
        assert_eq!(ws["failed"], 0, "{name}: {ws:#}");
    }
}

#[tokio::test]
async fn url_mode_measures_a_running_server_and_summarizes() {
    // The origin answers any path itself: an api-pass run straight at it.
    let o = origin("app_api").await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("direct");
    let pid = std::process::id().to_string();
    let url = format!("http://{}", o.addr);
    let out_s = out.to_str().unwrap().to_string();
    let ran = tokio::task::spawn_blocking(move || {
        run(
            &[
                "loadtest", "--url", &url, "--pid", &pid, "--label", "origin", "-s", "api-pass",
                "-n", "100", "-c", "2", "-o", &out_s,
            ],
            Duration::from_secs(30),
        )
    })
    .await
    .unwrap();
    assert_eq!(ran.code, Some(0), "{}", ran.show());
    let r = report(&out);
    assert_eq!(r["label"], "origin");
    assert_eq!(r["config"]["spawned"], false);
    let s = scenario(&r, "api-pass");
    check_http(s, 100);
    // No proxy in between: no X-Cache-Status at all.
    assert_eq!(s["cache_status_counts"]["none"], 100, "{s:#}");
    assert_eq!(s["cache_hit_ratio"], 0.0);
    assert_eq!(
        s["server"]["pids"][0].as_u64(),
        Some(std::process::id() as u64)
    );
    assert!(s["server"]["peak_rss_bytes"].as_u64().unwrap() > 0);
    // The origin saw the warm-up and the measured requests.
    assert!(o.requests().len() >= 100);

    let sum = run(
        &["loadtest", "--summarize", dir.path().to_str().unwrap()],
        Duration::from_secs(10),
    );
    assert_eq!(sum.code, Some(0), "{}", sum.show());
    assert!(
        sum.stdout.contains("| api-pass | origin | 1 |"),
        "{}",
        sum.show()
    );
}

#[test]
fn refuses_what_is_not_loopback_or_unbounded() {
    for (args, expected) in [
        (
            &["loadtest", "--url", "http://10.1.2.3:80", "-n", "10"][..],
            "loopback only",
        ),
        (
            &["loadtest", "--url", "http://0.0.0.0:80", "-n", "10"][..],
            "loopback only",
        ),
        (&["loadtest", "-d", "1h"][..], "at most 5m"),
        (&["loadtest", "-c", "100000"][..], "--connections 100000"),
        (&["loadtest", "-s", "nope"][..], "unknown scenario"),
        (&["loadtest", "--pid", "1"][..], "go with --url"),
        (
            &[
                "loadtest",
                "--proxy-bin",
                "/nonexistent/galion-edge",
                "-n",
                "10",
            ][..],
            "no proxy binary at /nonexistent/galion-edge (--proxy-bin)",
        ),
    ] {
        let ran = run(args, Duration::from_secs(10));
        assert_eq!(ran.code, Some(1), "{args:?}\n{}", ran.show());
        assert!(ran.stderr.contains(expected), "{args:?}\n{}", ran.show());
    }
}

#[test]
fn the_proxy_binary_names_the_tools_command() {
    for sub in ["demo", "loadtest", "origins"] {
        let ran = run_program(bin!(), &[sub, "-s", "api-hit"], Duration::from_secs(10));
        assert_eq!(ran.code, Some(2), "{sub}\n{}", ran.show());
        assert!(
            ran.stderr.contains(&format!("galion-edge-tools {sub}")),
            "{sub}\n{}",
            ran.show()
        );
    }
}
