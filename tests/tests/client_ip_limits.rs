//! The real client IP behind Cloudflare, and per-IP rate limits and connection caps, through the
//! real proxy.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::time::{Duration, Instant};

fn config(o: &Origin, trusted: &str, listen: &str, limits: &str) -> String {
    base_config(
        false,
        &format!(
            r#"
[client_ip]
trusted = [{trusted}]
header = "CF-Connecting-IP"

{limits}

[upstreams.app]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/", upstream = "app", limit = "api" }},
  {{ path = "/free/", upstream = "app", limit = "off" }},
  {{ path = "/", upstream = "app" }},
]
"#,
            o.addr
        ),
    )
    .replace(
        "http_proxy = [\"127.0.0.1:{plain}\"]",
        &format!("http_proxy = [\"{listen}\"]"),
    )
}

const LIMITS: &str = r#"
[limits]
window = "60s"
allow = ["198.51.100.0/24"]
exempt_paths = ["/api/health"]

[limits.classes.api]
rate = 5
burst = 2
json = true

[limits.classes.default]
rate = 20
burst = 0
"#;

async fn send(base: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut rb = client()
        .get(format!("{base}{path}"))
        .header("host", "galion.app");
    for (k, v) in headers {
        rb = rb.header(*k, *v);
    }
    rb.send().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_headers_from_untrusted_peers_are_ignored() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    // Nobody is trusted: 127.0.0.1 is an ordinary client.
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&o, "", "127.0.0.1:{plain}", LIMITS),
    );
    let base = format!("http://{}", proxy.plain_addr());
    let spoof = [
        ("cf-connecting-ip", "203.0.113.77"),
        ("x-forwarded-for", "198.51.100.1, 203.0.113.5"),
    ];
    let r = send(&base, "/free/x", &spoof).await;
    assert_eq!(r.status(), 200);
    let seen = o.requests();
    assert_eq!(seen[0].header("x-real-ip"), Some("127.0.0.1"));
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("127.0.0.1"),
        "spoofed hops dropped"
    );
    // The spoofed address does not escape the limit either (198.51.100.0/24 is allowlisted).
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(send(&base, "/api/x", &spoof).await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 200, 200, 429]);
    let log = proxy.wait_for_log(Duration::from_secs(5), |s| s.lines().count() >= 9);
    assert!(log.lines().all(|l| l.starts_with("127.0.0.1 ")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peers_name_the_client_ipv4() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(
            &o,
            "\"127.0.0.0/8\", \"173.245.48.0/20\"",
            "127.0.0.1:{plain}",
            LIMITS,
        ),
    );
    let base = format!("http://{}", proxy.plain_addr());
    send(
        &base,
        "/free/a",
        &[
            ("cf-connecting-ip", "203.0.113.9"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    // Without CF-Connecting-IP, X-Forwarded-For is walked right to left past trusted hops.
    send(
        &base,
        "/free/b",
        &[("x-forwarded-for", "192.0.2.44, 173.245.48.7")],
    )
    .await;
    let seen = o.requests();
    assert_eq!(seen[0].header("x-real-ip"), Some("203.0.113.9"));
    assert_eq!(
        seen[0].header("x-forwarded-for"),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(seen[1].header("x-real-ip"), Some("192.0.2.44"));
    let log = proxy.wait_for_log(Duration::from_secs(5), |s| s.lines().count() >= 2);
    assert!(
        log.lines().next().unwrap().starts_with("203.0.113.9 "),
        "{log}"
    );
    // Each real client has its own limit: 7 (rate 5 + burst 2) for one, then the other still has 7.
    for ip in ["203.0.113.10", "203.0.113.11"] {
        let mut ok = 0;
        for _ in 0..9 {
            if send(&base, "/api/x", &[("cf-connecting-ip", ip)])
                .await
                .status()
                == 200
            {
                ok += 1;
            }
        }
        assert_eq!(ok, 7, "{ip}: exactly rate + burst");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_peers_name_the_client_ipv6() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&o, "\"::1/128\"", "[::1]:{plain}", LIMITS),
    );
    let base = format!("http://[::1]:{}", proxy.ports.plain);
    send(&base, "/free/a", &[("cf-connecting-ip", "2001:db8::7")]).await;
    send(&base, "/free/b", &[]).await;
    let seen = o.requests();
    assert_eq!(seen[0].header("x-real-ip"), Some("2001:db8::7"));
    assert_eq!(seen[0].header("x-forwarded-for"), Some("::1"));
    assert_eq!(seen[1].header("x-real-ip"), Some("::1"));
    let log = proxy.wait_for_log(Duration::from_secs(5), |s| s.lines().count() >= 2);
    assert!(
        log.lines().next().unwrap().starts_with("2001:db8::7 "),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_429_says_when_to_come_back() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&o, "\"127.0.0.0/8\"", "127.0.0.1:{plain}", LIMITS),
    );
    let base = format!("http://{}", proxy.plain_addr());
    let me = [("cf-connecting-ip", "203.0.113.20")];
    for i in 0..7 {
        let r = send(&base, "/api/x", &me).await;
        assert_eq!(r.status(), 200, "request {i}");
        assert_eq!(r.headers()["ratelimit-policy"], "\"api\";q=7;w=60");
        let rl = r.headers()["ratelimit"].to_str().unwrap().to_string();
        assert!(rl.starts_with(&format!("\"api\";r={};t=", 6 - i)), "{rl}");
    }
    let r = send(&base, "/api/x", &me).await;
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    // The sliding estimate has to decay below the limit: up to a window and a fraction.
    assert!((1..=120).contains(&retry), "{retry}");
    assert_eq!(r.headers()["ratelimit-policy"], "\"api\";q=7;w=60");
    assert!(r.headers()["ratelimit"]
        .to_str()
        .unwrap()
        .starts_with("\"api\";r=0;t="));
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "too_many_requests");
    assert_eq!(body["retry_after"], retry);
    // A non-API route (default class, text body) has its own count.
    let r = send(&base, "/page", &me).await;
    assert_eq!(r.status(), 200);
    // Allowlisted clients and exempt paths are never limited.
    for _ in 0..10 {
        assert_eq!(
            send(&base, "/api/x", &[("cf-connecting-ip", "198.51.100.9")])
                .await
                .status(),
            200
        );
        assert_eq!(send(&base, "/api/health", &me).await.status(), 200);
    }
    assert_eq!(
        o.requests()
            .iter()
            .filter(|r| r.header("x-real-ip") == Some("203.0.113.20") && r.uri == "/api/x")
            .count(),
        7,
        "refused requests never reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_slides() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let limits = r#"
[limits]
window = "2s"

[limits.classes.api]
rate = 5
burst = 0
"#;
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&o, "\"127.0.0.0/8\"", "127.0.0.1:{plain}", limits),
    );
    let base = format!("http://{}", proxy.plain_addr());
    // One request every 50 ms for 6 s (3 windows): record when each was allowed.
    let start = Instant::now();
    let mut allowed = Vec::new();
    while start.elapsed() < Duration::from_secs(6) {
        let t = start.elapsed();
        if send(&base, "/api/x", &[("cf-connecting-ip", "203.0.113.30")])
            .await
            .status()
            == 200
        {
            allowed.push(t);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // In any 2-second span, at most rate (+1 for the sketch's rounding of the previous window)
    // were allowed: never twice the rate across a window edge.
    let worst = allowed
        .iter()
        .map(|t0| {
            allowed
                .iter()
                .filter(|t| **t >= *t0 && **t < *t0 + Duration::from_secs(2))
                .count()
        })
        .max()
        .unwrap();
    assert!(worst <= 6, "{worst} allowed within 2 s: {allowed:?}");
    assert!(
        allowed.len() >= 10,
        "the client keeps getting its rate: {}",
        allowed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_per_ip_are_capped() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let limits = r#"
[limits]
max_connections_per_ip = 2

[limits.classes.api]
rate = 1000
"#;
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&o, "\"127.0.0.0/8\"", "127.0.0.1:{plain}", limits),
    );
    let base = format!("http://{}", proxy.plain_addr());
    let slow = |ip: &'static str| {
        let base = base.clone();
        tokio::spawn(async move {
            send(&base, "/free/slow?ms=1500", &[("cf-connecting-ip", ip)])
                .await
                .status()
                .as_u16()
        })
    };
    let a = slow("203.0.113.40");
    let b = slow("203.0.113.40");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let third = send(&base, "/free/x", &[("cf-connecting-ip", "203.0.113.40")]).await;
    assert_eq!(
        third.status(),
        429,
        "a third concurrent request from one client"
    );
    let other = send(&base, "/free/x", &[("cf-connecting-ip", "203.0.113.41")]).await;
    assert_eq!(other.status(), 200, "another client is unaffected");
    assert_eq!((a.await.unwrap(), b.await.unwrap()), (200, 200));
    let after = send(&base, "/free/x", &[("cf-connecting-ip", "203.0.113.40")]).await;
    assert_eq!(
        after.status(),
        200,
        "slots are given back when requests end"
    );
}
