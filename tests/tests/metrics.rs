//! `/metrics` and `/readyz` on the admin listener of the real proxy: exact counter values after
//! known traffic, bounded label sets, and readiness flipping when a group loses every backend.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::collections::BTreeMap;
use std::time::Duration;

/// One series: its labels, sorted.
type Labels = BTreeMap<String, String>;

/// A parsed exposition: `(name, labels) -> value`.
#[derive(Debug, Default)]
struct Scrape(BTreeMap<(String, Labels), f64>);

impl Scrape {
    /// Parses the text format's sample lines (`name{a="x",b="y"} value`); comments are skipped.
    fn parse(text: &str) -> Scrape {
        let mut out = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap())),
                None => (series, Labels::new()),
            };
            assert!(
                out.insert((name.to_string(), labels), value).is_none(),
                "duplicate series: {line}"
            );
        }
        Scrape(out)
    }

    /// The value of one series; panics if it is not exposed.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = (name.to_string(), labels_of(labels));
        *self
            .0
            .get(&key)
            .unwrap_or_else(|| panic!("no series {name}{labels:?}"))
    }

    /// Every series of one metric whose value is not zero.
    fn nonzero(&self, name: &str) -> BTreeMap<Labels, f64> {
        self.0
            .iter()
            .filter(|((n, _), v)| n == name && **v != 0.0)
            .map(|((_, l), v)| (l.clone(), *v))
            .collect()
    }
}

fn labels_of(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn parse_labels(s: &str) -> Labels {
    let mut out = Labels::new();
    let mut chars = s.chars().peekable();
    while chars.peek().is_some() {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "label {name} is quoted");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        if chars.peek() == Some(&',') {
            chars.next();
        }
        out.insert(name, value);
    }
    out
}

async fn scrape(proxy: &Proxy) -> (Scrape, String) {
    let r = client()
        .get(format!("http://{}/metrics", proxy.admin_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    (Scrape::parse(&text), text)
}

fn config(
    app: &Origin,
    dead: std::net::SocketAddr,
    cert: (&std::path::Path, &std::path::Path),
) -> String {
    base_config(
        true,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[cache.zones.api]
path = "{{dir}}/cache/api"
size = "8MB"
memory_size = "1MB"
default_ttl = "10m"

[limits]
window = "60s"

[limits.classes.tiny]
rate = 1
burst = 0

[upstreams.app]
backends = ["{}"]
health_check = {{ kind = "none" }}
[upstreams.dead]
backends = ["{dead}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
tls = {{ cert = {:?}, key = {:?} }}
routes = [
  {{ path = "/api/", upstream = "app", cache = "api" }},
  {{ path = "/tiny/", upstream = "app", limit = "tiny" }},
  {{ path = "/dead/", upstream = "dead" }},
  {{ path = "/slow/", upstream = "app", read_timeout = "300ms" }},
  {{ path = "/", upstream = "app" }},
]
"#,
            app.addr, cert.0, cert.1
        ),
    )
}

/// Status, X-Cache-Status and body of a request.
async fn send(rb: reqwest::RequestBuilder) -> (u16, String, bytes::Bytes) {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, cache, r.bytes().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_counters_after_known_traffic() {
    let app = origin("app").await;
    let dead = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, dead, (&c, &k)));
    let base = format!("http://{}", proxy.plain_addr());
    let get = |path: &str| {
        client()
            .get(format!("{base}{path}"))
            .header("host", "galion.app")
    };
    // Response body bytes the clients of galion.app received, as they came (no decoding).
    let mut sent_app = 0usize;

    // 3 x 200 on "/": one over TLS (one handshake), one POST with a 1000-byte body, one
    // compressed for a gzip client.
    let tls = tls_client(&[&cert], &["galion.app"], proxy.https_addr());
    let (s, _, body) =
        send(tls.get(format!("https://galion.app:{}/hello", proxy.ports.https))).await;
    assert_eq!(s, 200);
    sent_app += body.len();
    let (s, _, body) = send(
        client()
            .post(format!("{base}/echo"))
            .header("host", "galion.app")
            .body(vec![b'x'; 1000]),
    )
    .await;
    assert_eq!(s, 200);
    sent_app += body.len();
    let r = get("/text?n=4096")
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-encoding"], "gzip");
    sent_app += r.bytes().await.unwrap().len();

    // 2 x 404 from the origin.
    for _ in 0..2 {
        let (s, _, body) = send(get("/status?code=404")).await;
        assert_eq!(s, 404);
        sent_app += body.len();
    }

    // 1 x 421 for a host no site has.
    let (s, _, unknown_body) = send(
        client()
            .get(format!("{base}/anything"))
            .header("host", "unknown.test"),
    )
    .await;
    assert_eq!(s, 421);

    // Two URLs of the api zone, each MISS then HIT.
    for n in [100, 200] {
        for want in ["MISS", "HIT"] {
            let (s, cache, body) = send(get(&format!("/api/bytes?n={n}"))).await;
            assert_eq!((s, cache.as_str(), body.len()), (200, want, n));
            sent_app += body.len();
        }
    }

    // The tiny class allows one request a minute: 200 then 429.
    let (s, _, body) = send(get("/tiny/a")).await;
    assert_eq!(s, 200);
    sent_app += body.len();
    let (s, _, body) = send(get("/tiny/a")).await;
    assert_eq!(s, 429);
    sent_app += body.len();

    // A backend nobody listens on: 502.
    let (s, _, body) = send(get("/dead/x")).await;
    assert_eq!(s, 502);
    sent_app += body.len();

    // An origin slower than the route's read timeout: 504.
    let (s, _, body) = send(get("/slow/slow?ms=3000")).await;
    assert_eq!(s, 504);
    sent_app += body.len();

    // A request is counted when it ends, just after its answer went out: wait for the last.
    let settled = |m: &Scrape| {
        m.nonzero("galion_edge_requests_total")
            .values()
            .sum::<f64>()
            == 14.0
            && m.get("galion_edge_downstream_requests_in_flight", &[]) == 0.0
    };
    assert!(
        eventually(Duration::from_secs(5), || async {
            settled(&scrape(&proxy).await.0)
        })
        .await,
        "{}",
        scrape(&proxy).await.1
    );
    let (m, text) = scrape(&proxy).await;
    let site = ("site", "galion.app");

    // Requests by site, route and status class: exactly these, every other series at zero.
    let requests = m.nonzero("galion_edge_requests_total");
    let want: BTreeMap<Labels, f64> = [
        (labels_of(&[site, ("route", "/"), ("status", "2xx")]), 3.0),
        (labels_of(&[site, ("route", "/"), ("status", "4xx")]), 2.0),
        (
            labels_of(&[("site", "-"), ("route", "-"), ("status", "4xx")]),
            1.0,
        ),
        (
            labels_of(&[site, ("route", "/api/"), ("status", "2xx")]),
            4.0,
        ),
        (
            labels_of(&[site, ("route", "/tiny/"), ("status", "2xx")]),
            1.0,
        ),
        (
            labels_of(&[site, ("route", "/tiny/"), ("status", "4xx")]),
            1.0,
        ),
        (
            labels_of(&[site, ("route", "/dead/"), ("status", "5xx")]),
            1.0,
        ),
        (
            labels_of(&[site, ("route", "/slow/"), ("status", "5xx")]),
            1.0,
        ),
    ]
    .into_iter()
    .collect();
    assert_eq!(requests, want, "{text}");
    // Series exist from the start, at zero.
    assert_eq!(
        m.get(
            "galion_edge_requests_total",
            &[site, ("route", "/api/"), ("status", "5xx")]
        ),
        0.0
    );
    let durations = |route: &str, s: &str| {
        m.get(
            "galion_edge_request_duration_seconds_count",
            &[("site", s), ("route", route)],
        )
    };
    assert_eq!(durations("/", "galion.app"), 5.0);
    assert_eq!(durations("/api/", "galion.app"), 4.0);
    assert_eq!(durations("/tiny/", "galion.app"), 2.0);
    assert_eq!(durations("/dead/", "galion.app"), 1.0);
    assert_eq!(durations("/slow/", "galion.app"), 1.0);
    assert_eq!(durations("-", "-"), 1.0);
    assert_eq!(
        m.get(
            "galion_edge_request_duration_seconds_bucket",
            &[site, ("route", "/"), ("le", "+Inf")]
        ),
        5.0
    );

    // Upstreams: 3 + 2 answers on "/", 2 cache misses, 1 on /tiny/ (none from /slow/); one
    // refused connect, one read timeout.
    let up = |name: &str, u: &str| m.get(name, &[("upstream", u)]);
    assert_eq!(
        up("galion_edge_upstream_response_seconds_count", "app"),
        8.0
    );
    assert_eq!(
        up("galion_edge_upstream_response_seconds_count", "dead"),
        0.0
    );
    assert_eq!(
        up("galion_edge_upstream_connect_failures_total", "dead"),
        1.0
    );
    assert_eq!(
        up("galion_edge_upstream_connect_failures_total", "app"),
        0.0
    );
    assert_eq!(up("galion_edge_upstream_timeouts_total", "dead"), 0.0);
    assert_eq!(up("galion_edge_upstream_timeouts_total", "app"), 1.0);
    let backend = |u: &str, b: String| {
        m.get(
            "galion_edge_backend_up",
            &[("upstream", u), ("backend", b.as_str())],
        )
    };
    assert_eq!(backend("app", app.addr.to_string()), 1.0);
    // No health check: a dead backend stays in rotation.
    assert_eq!(backend("dead", dead.to_string()), 1.0);

    // The cache, against what the origin saw and /cache/stats.
    let zone = ("zone", "api");
    assert_eq!(
        app.requests()
            .iter()
            .filter(|r| r.uri.starts_with("/api/"))
            .count(),
        2
    );
    assert_eq!(
        m.get("galion_edge_cache_hits_total", &[zone, ("tier", "memory")]),
        2.0
    );
    assert_eq!(
        m.get("galion_edge_cache_hits_total", &[zone, ("tier", "disk")]),
        0.0
    );
    assert_eq!(m.get("galion_edge_cache_misses_total", &[zone]), 2.0);
    assert_eq!(m.get("galion_edge_cache_fills_total", &[zone]), 2.0);
    assert_eq!(m.get("galion_edge_cache_fill_errors_total", &[zone]), 0.0);
    assert_eq!(
        m.get("galion_edge_cache_corrupt_entries_total", &[zone]),
        0.0
    );
    assert_eq!(
        m.get(
            "galion_edge_cache_evictions_total",
            &[zone, ("tier", "memory")]
        ),
        0.0
    );
    assert_eq!(
        m.get(
            "galion_edge_cache_evictions_total",
            &[zone, ("tier", "disk")]
        ),
        0.0
    );
    assert_eq!(
        m.get("galion_edge_cache_objects", &[zone, ("tier", "disk")]),
        2.0
    );
    assert_eq!(
        m.get("galion_edge_cache_objects", &[zone, ("tier", "memory")]),
        2.0
    );
    assert_eq!(m.get("galion_edge_cache_stale_total", &[zone]), 0.0);
    let stats: serde_json::Value = client()
        .get(format!("http://{}/cache/stats", proxy.admin_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let api = &stats["zones"]["api"];
    for (tier, key) in [("disk", "disk_bytes"), ("memory", "memory_bytes")] {
        let bytes = m.get("galion_edge_cache_bytes", &[zone, ("tier", tier)]);
        assert_eq!(bytes, api[key].as_u64().unwrap() as f64, "{tier}: {stats}");
        assert!(bytes >= 300.0, "{tier} holds both bodies: {bytes}");
    }

    // Limits, compression, the access log, TLS, bytes, in flight.
    let rejections = m.nonzero("galion_edge_ratelimit_rejections_total");
    let want: BTreeMap<Labels, f64> =
        [(labels_of(&[("class", "tiny"), ("reason", "rate")]), 1.0)].into();
    assert_eq!(rejections, want);
    assert_eq!(
        m.get(
            "galion_edge_ratelimit_rejections_total",
            &[("class", "tiny"), ("reason", "concurrency")]
        ),
        0.0
    );
    assert_eq!(
        m.get("galion_edge_compression_total", &[("action", "compressed")]),
        1.0
    );
    assert_eq!(
        m.get(
            "galion_edge_compression_total",
            &[("action", "decompressed")]
        ),
        0.0
    );
    assert_eq!(m.get("galion_edge_access_log_dropped_total", &[]), 0.0);
    assert_eq!(m.get("galion_edge_tls_handshakes_total", &[]), 1.0);
    assert_eq!(m.get("galion_edge_tls_client_hellos_total", &[]), 1.0);
    assert_eq!(m.get("galion_edge_bytes_received_total", &[site]), 1000.0);
    assert_eq!(
        m.get("galion_edge_bytes_received_total", &[("site", "-")]),
        0.0
    );
    assert_eq!(
        m.get("galion_edge_bytes_sent_total", &[site]),
        sent_app as f64
    );
    assert_eq!(
        m.get("galion_edge_bytes_sent_total", &[("site", "-")]),
        unknown_body.len() as f64
    );
    assert_eq!(m.get("galion_edge_downstream_requests_in_flight", &[]), 0.0);
    // The file certificate's expiry (gen_cert's certificates run to the year 4096).
    let expiry = m.0.iter().find_map(|((name, labels), v)| {
        (name == "galion_edge_tls_certificate_expiry_timestamp_seconds"
            && labels.get("source").map(String::as_str) == Some("file"))
        .then_some(*v)
    });
    assert!(expiry.is_some_and(|v| v > 6.0e10), "{expiry:?}");

    // Bounded label sets: only these names, and never a path, a client's host or a client IP.
    let allowed = [
        "site", "route", "status", "upstream", "backend", "zone", "tier", "class", "reason",
        "action", "le", "reused", "op", "source", "result",
    ];
    let paths = [
        "/hello",
        "/echo",
        "/text",
        "/status",
        "/anything",
        "/api/bytes",
        "/tiny/a",
        "/dead/x",
        "/slow/slow",
        "?",
    ];
    for (name, labels) in m.0.keys() {
        assert!(name.starts_with("galion_edge_"), "{name}");
        for (k, v) in labels {
            assert!(allowed.contains(&k.as_str()), "{name}: label {k}");
            // The client's address (backends are configured `IP:port`, a different value).
            assert_ne!(v, "127.0.0.1", "{name}: {k}");
            assert!(!v.contains("unknown.test"), "{name}: {k}={v:?}");
            for p in paths {
                assert!(!v.contains(p), "{name}: {k}={v:?} holds {p:?}");
            }
        }
    }
    let statuses: Vec<&String> = m.0.keys().filter_map(|(_, l)| l.get("status")).collect();
    assert!(statuses
        .iter()
        .all(|s| ["1xx", "2xx", "3xx", "4xx", "5xx", "-"].contains(&s.as_str())));

    // A second scrape sees the same counters (scraping counts nothing).
    let (again, _) = scrape(&proxy).await;
    assert_eq!(
        again.nonzero("galion_edge_requests_total"),
        m.nonzero("galion_edge_requests_total")
    );
}

/// Open client connections, new and reused upstream connections, ClientHellos against completed
/// handshakes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_counters() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let config = base_config(
        true,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[upstreams.app]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
tls = {{ cert = {c:?}, key = {k:?} }}
routes = [{{ path = "/", upstream = "app" }}]
"#,
            app.addr
        ),
    );
    let proxy = Proxy::start(bin!(), dir.path(), &config);
    let open = || async {
        scrape(&proxy)
            .await
            .0
            .get("galion_edge_downstream_connections_open", &[])
    };
    // The baseline is 0: the admin listener (the scrapes' own connections) is not counted, and
    // the start-up probes' connections (`Proxy::start` connects to each port) close at once.
    assert!(eventually(Duration::from_secs(5), || async { open().await == 0.0 }).await);

    // N requests one after the other on one keep-alive client connection to one backend. The
    // proxy reads request i+1 only after request i is finished, and Pingora returns the
    // upstream connection to its pool before it finishes a request (`release_http_session`
    // comes before `logging`), so the first request opens a connection and every later one
    // takes it from the pool.
    const N: usize = 5;
    // One raw TCP connection, so the client side cannot open a second one behind our back
    // (a pooling client may, when the previous connection is not yet back in its pool).
    let mut keep = std::net::TcpStream::connect(proxy.plain_addr()).unwrap();
    keep.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    for _ in 0..N {
        use std::io::{Read, Write};
        keep.write_all(b"GET /hello HTTP/1.1\r\nHost: galion.app\r\n\r\n")
            .unwrap();
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            assert_eq!(keep.read(&mut byte).unwrap(), 1, "connection closed early");
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{head}");
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .expect("a content-length")
            .trim()
            .parse()
            .unwrap();
        let mut body = vec![0u8; len];
        keep.read_exact(&mut body).unwrap();
    }
    let (m, text) = scrape(&proxy).await;
    let conns = |reused: &str| {
        m.get(
            "galion_edge_upstream_connections_total",
            &[("upstream", "app"), ("reused", reused)],
        )
    };
    assert_eq!(conns("false"), 1.0, "{text}");
    assert_eq!(conns("true"), (N - 1) as f64, "{text}");
    // The client still holds its (idle) connection: exactly that one is open.
    assert_eq!(
        m.get("galion_edge_downstream_connections_open", &[]),
        1.0,
        "{text}"
    );
    drop(keep);
    assert!(
        eventually(Duration::from_secs(5), || async { open().await == 0.0 }).await,
        "{}",
        scrape(&proxy).await.1
    );

    // One successful handshake: as many ClientHellos as completed handshakes. reqwest
    // negotiates h2 and keeps the connection open even after the client is dropped (its
    // connection task lives on in the runtime), so the request runs in a runtime of its own,
    // whose end closes the connection.
    std::thread::scope(|s| {
        s.spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let tls = tls_client(&[&cert], &["galion.app"], proxy.https_addr());
                let r = tls
                    .get(format!("https://galion.app:{}/hello", proxy.ports.https))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(
                    (r.status().as_u16(), r.version()),
                    (200, http::Version::HTTP_2)
                );
                // The h2 connection counts while it is open.
                assert_eq!(open().await, 1.0);
            });
        })
        .join()
        .unwrap();
    });
    assert!(
        eventually(Duration::from_secs(5), || async { open().await == 0.0 }).await,
        "{}",
        scrape(&proxy).await.1
    );
    let hellos = |m: &Scrape| {
        (
            m.get("galion_edge_tls_client_hellos_total", &[]),
            m.get("galion_edge_tls_handshakes_total", &[]),
        )
    };
    assert_eq!(hellos(&scrape(&proxy).await.0), (1.0, 1.0));

    // A client that does not trust the certificate sends its ClientHello, gets the
    // certificate, and gives up: one more ClientHello, no more completed handshakes.
    proxy_core::install_crypto_provider();
    let cfg = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(proxy.https_addr())
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("galion.app").unwrap();
    let res = tokio::time::timeout(
        Duration::from_secs(5),
        tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp),
    )
    .await
    .expect("handshake ends");
    assert!(res.is_err(), "an empty root store trusts nothing");
    assert_eq!(hellos(&scrape(&proxy).await.0), (2.0, 1.0));
    // Neither TLS client left a connection open (the failed one never reached the front).
    assert!(
        eventually(Duration::from_secs(5), || async { open().await == 0.0 }).await,
        "{}",
        scrape(&proxy).await.1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_flips_when_every_backend_of_a_group_is_down() {
    let front = origin("front").await;
    let api1 = origin("api1").await;
    let api2 = origin("api2").await;
    let dir = tempfile::tempdir().unwrap();
    let config = base_config(
        false,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[upstreams.front]
backends = ["{}"]
health_check = {{ kind = "http", path = "/health", interval = "200ms", timeout = "500ms" }}
[upstreams.api]
backends = ["{}", "{}"]
health_check = {{ kind = "tcp", interval = "200ms", timeout = "500ms" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/", upstream = "api" }},
  {{ path = "/", upstream = "front" }},
]
"#,
            front.addr, api1.addr, api2.addr
        ),
    );
    let proxy = Proxy::start(bin!(), dir.path(), &config);
    let admin = format!("http://{}", proxy.admin_addr());
    let readyz = || async {
        let r = client()
            .get(format!("{admin}/readyz"))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };

    assert!(
        eventually(Duration::from_secs(5), || async { readyz().await.0 == 200 }).await,
        "{:?}",
        readyz().await
    );
    assert_eq!(readyz().await.1, serde_json::json!({"status": "ready"}));

    // One api backend down (once the health check has seen it): still ready.
    api1.stop();
    let api1_up = || async {
        let (m, _) = scrape(&proxy).await;
        m.get(
            "galion_edge_backend_up",
            &[
                ("upstream", "api"),
                ("backend", api1.addr.to_string().as_str()),
            ],
        )
    };
    assert!(eventually(Duration::from_secs(5), || async { api1_up().await == 0.0 }).await);
    assert_eq!(readyz().await.0, 200);

    // Both down: 503 naming the group, once the health check has seen it.
    api2.stop();
    assert!(
        eventually(Duration::from_secs(5), || async { readyz().await.0 == 503 }).await,
        "{:?}",
        readyz().await
    );
    let (_, body) = readyz().await;
    assert_eq!(
        body,
        serde_json::json!({
            "status": "not ready",
            "groups_without_healthy_backend": ["api"],
            "listeners_not_bound": [],
        })
    );
    // Liveness is not readiness.
    let r = client()
        .get(format!("{admin}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The metrics say the same.
    let (m, _) = scrape(&proxy).await;
    let up = |u: &str, b: std::net::SocketAddr| {
        m.get(
            "galion_edge_backend_up",
            &[("upstream", u), ("backend", b.to_string().as_str())],
        )
    };
    assert_eq!(up("api", api1.addr), 0.0);
    assert_eq!(up("api", api2.addr), 0.0);
    assert_eq!(up("front", front.addr), 1.0);
}
