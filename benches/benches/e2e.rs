//! End to end on loopback: the same request sent straight to a sample origin and through the
//! proxy, one keepalive HTTP/1.1 connection each, in the same bench, so the proxy's own cost is
//! the difference and the ratio.
//!
//! The proxy is the real one (`build_server_with`, as `galion-edge run` builds it) in this
//! process on a background thread, with a production-shaped config: worker threads per core,
//! the access log written to a file, metrics, rate-limit classes that are checked (with rates
//! nobody reaches), security headers, the compression policy and two cache zones. The origin is
//! `galion_edge_tools::origin` on its own one-thread runtime; the client is hyper on the bench thread.
//! Everything shares the machine's cores, as in production.
//!
//! Scenarios:
//! - `pass_api`: a GET on the `/api/` route whose answer says `Cache-Control: no-store`
//!   (cache lookup, miss, the upstream request, not stored). Protects the 50-150 ms average
//!   API call.
//! - `hit_1k_json`: a 1 KiB API answer served from the `api` zone's memory tier. Protects the
//!   5-20 ms server cache hit.
//! - `hit_100k_js`: a 100 KiB JavaScript file served from the `static` zone's memory tier.
//!   Protects the 5-20 ms server cache hit.
//!
//! After criterion's runs, a bounded run of single timed requests per scenario gives p50 and
//! p99, direct and through the proxy; the proxy's p99 protects the "P99 under 500 ms" target.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use galion_edge_benches::{
    benchmarking, criterion, fmt_duration, report_margin, Margin, Target, API_CALL, CACHE_HIT, P99,
};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use proxy_core::config::Config;
use proxy_core::{build_server_with, ProxyOptions, RunOptions};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::{Duration, Instant};

/// The allocator the `galion-edge` binary uses, so the proxy in this process runs as shipped.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A loopback port that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn config_text(dir: &Path, proxy_port: u16, origin: SocketAddr) -> String {
    let dir = dir.display();
    format!(
        r#"
[server]
threads = 0
pid_file = "{dir}/galion-edge.pid"
upgrade_sock = "{dir}/upgrade.sock"
upstream_keepalive_pool_size = 256

[listeners]
http_proxy = ["127.0.0.1:{proxy_port}"]

[access_log]
format = "combined"
path = "{dir}/access.log"

[headers]
hsts = "max-age=31536000; includeSubDomains; preload"
x_frame_options = "SAMEORIGIN"
referrer_policy = "strict-origin-when-cross-origin"
server = "galion-edge"

[limits]
window = "60s"
[limits.classes.api]
rate = 1000000
[limits.classes.default]
rate = 1000000

[compression]
enabled = true
gzip_level = 5
brotli_quality = 5

[cache.zones.api]
path = "{dir}/cache/api"
size = "256MB"
memory_size = "64MB"
default_ttl = "10m"

[cache.zones.static]
path = "{dir}/cache/static"
size = "256MB"
memory_size = "64MB"
default_ttl = "7d"
max_ttl = "7d"

[upstreams.api]
backends = ["{origin}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app", "www.galion.app"]
routes = [
  {{ path = "/api/", upstream = "api", cache = "api", limit = "api" }},
  {{ path = "/static/", upstream = "api", cache = "static" }},
  {{ path = "/", upstream = "api" }},
]
"#
    )
}

/// A keepalive HTTP/1.1 connection driven from the bench thread. When the server closes it
/// (the proxy does after `keepalive_requests`, 1000 by default, as nginx), the next request
/// opens a new one, as a browser would.
struct Client {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    sender: SendRequest<Empty<Bytes>>,
}

async fn open(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let sender = rt.block_on(open(addr));
        Client { rt, addr, sender }
    }

    /// Sends a GET and reads the whole body; returns the status, the `X-Cache-Status` and
    /// the body length.
    fn get(&mut self, path: &str) -> (u16, String, usize) {
        let request = || {
            http::Request::get(path)
                .header("host", "galion.app")
                .header("user-agent", "galion-edge-bench")
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let (addr, sender) = (self.addr, &mut self.sender);
        self.rt.block_on(async {
            if sender.ready().await.is_err() {
                *sender = open(addr).await;
            }
            let resp = match sender.send_request(request()).await {
                Ok(r) => r,
                // Closed between `ready` and the send: once more on a new connection.
                Err(_) => {
                    *sender = open(addr).await;
                    sender.send_request(request()).await.unwrap()
                }
            };
            let status = resp.status().as_u16();
            let cache = resp
                .headers()
                .get("x-cache-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            (status, cache, body.len())
        })
    }
}

struct Scenario {
    name: &'static str,
    path: &'static str,
    /// The body length, where fixed (the JSON echo's varies with the request headers).
    body_len: Option<usize>,
    /// What `X-Cache-Status` the proxy may answer with once warm.
    cache: &'static [&'static str],
    target: Target,
}

const SCENARIOS: [Scenario; 3] = [
    Scenario {
        name: "pass_api",
        // The JSON echo with `Cache-Control: no-store`: looked up, fetched, never stored
        // (MISS, then BYPASS once Pingora's predictor has seen it is uncacheable).
        path: "/api/me?cc=no-store",
        body_len: None,
        cache: &["MISS", "BYPASS"],
        target: API_CALL,
    },
    Scenario {
        name: "hit_1k_json",
        path: "/api/users/bytes?n=1024",
        body_len: Some(1024),
        cache: &["HIT"],
        target: CACHE_HIT,
    },
    Scenario {
        name: "hit_100k_js",
        path: "/static/js/main/text?n=102400",
        body_len: Some(102_400),
        cache: &["HIT"],
        target: CACHE_HIT,
    },
];

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// `n` single requests, each timed: (p50, p99).
fn latencies(client: &mut Client, path: &str, n: usize) -> (Duration, Duration) {
    let mut v: Vec<Duration> = (0..n)
        .map(|_| {
            let start = Instant::now();
            client.get(path);
            start.elapsed()
        })
        .collect();
    v.sort();
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn e2e(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    // The origin on its own runtime thread, as the demo runs it.
    let origin_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let origin = origin_rt
        .block_on(galion_edge_tools::origin::spawn_origin(
            "api",
            "127.0.0.1:0".parse().unwrap(),
        ))
        .unwrap();

    let proxy_port = free_port();
    let text = config_text(dir.path(), proxy_port, origin.addr);
    let config = Config::from_toml_str(&text, dir.path()).unwrap();
    let server =
        build_server_with(config, &RunOptions::default(), ProxyOptions::default()).unwrap();
    // Runs until the process exits at the end of the bench.
    std::thread::spawn(move || server.run_forever());
    let proxy_addr: SocketAddr = ([127, 0, 0, 1], proxy_port).into();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(proxy_addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "the proxy did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let mut direct = Client::connect(origin.addr);
    let mut proxied = Client::connect(proxy_addr);
    for s in &SCENARIOS {
        // Warm the cache (and check the answers are what the scenario says).
        for _ in 0..3 {
            proxied.get(s.path);
        }
        let (status, cache, len) = proxied.get(s.path);
        assert_eq!(status, 200, "{} through the proxy", s.name);
        assert!(
            s.cache.contains(&cache.as_str()),
            "{} through the proxy: X-Cache-Status {cache}, expected one of {:?}",
            s.name,
            s.cache
        );
        assert!(
            s.body_len.is_none_or(|n| n == len),
            "{}: {len} bytes",
            s.name
        );
        let (status, _, len) = direct.get(s.path);
        assert_eq!(status, 200, "{} direct", s.name);
        assert!(
            s.body_len.is_none_or(|n| n == len),
            "{}: {len} bytes",
            s.name
        );
    }

    let mut results = Vec::new();
    for s in &SCENARIOS {
        let mut group = c.benchmark_group(format!("e2e/{}", s.name));
        let (m_direct, m_proxy) = (Margin::new(), Margin::new());
        group.bench_function("direct_origin", |b| m_direct.iter(b, || direct.get(s.path)));
        group.bench_function("through_proxy", |b| m_proxy.iter(b, || proxied.get(s.path)));
        group.finish();
        if let (Some(d), Some(p)) = (m_direct.per_op(), m_proxy.per_op()) {
            results.push((s, d, p));
        }
    }

    println!("\nend to end, one keepalive connection, median time per request:");
    for (s, d, p) in &results {
        let added = p.saturating_sub(*d);
        println!(
            "e2e {}: direct {}, through the proxy {}: ratio {:.2}x, the proxy adds {}",
            s.name,
            fmt_duration(*d),
            fmt_duration(*p),
            p.as_secs_f64() / d.as_secs_f64().max(1e-12),
            fmt_duration(added),
        );
        report_margin(
            &format!("e2e/{} (the proxy's added latency)", s.name),
            added.max(Duration::from_nanos(1)),
            s.target,
        );
    }

    // In test mode too, past the proxy's 1000 requests per connection (reconnects work).
    let n = if benchmarking() { 2000 } else { 600 };
    println!("\nsingle requests, {n} each: p50 / p99");
    for s in &SCENARIOS {
        let (d50, d99) = latencies(&mut direct, s.path, n);
        let (p50, p99) = latencies(&mut proxied, s.path, n);
        println!(
            "e2e {}: direct {} / {}, through the proxy {} / {}",
            s.name,
            fmt_duration(d50),
            fmt_duration(d99),
            fmt_duration(p50),
            fmt_duration(p99),
        );
        report_margin(&format!("e2e/{} p99 through the proxy", s.name), p99, P99);
    }
    drop(origin_rt);
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = e2e
}
criterion_main!(benches);
