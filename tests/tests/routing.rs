//! Routing for every production route, unknown hosts refused, forwarded headers as the origin
//! saw them, security headers on answers of every kind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::time::Duration;

struct Sites {
    app_frontend: Origin,
    app_api: Origin,
    app_voice: Origin,
    studio_frontend: Origin,
    studio_api: Origin,
    studio_realtime: Origin,
}

async fn sites() -> Sites {
    Sites {
        app_frontend: origin("app_frontend").await,
        app_api: origin("app_api").await,
        app_voice: origin("app_voice").await,
        studio_frontend: origin("studio_frontend").await,
        studio_api: origin("studio_api").await,
        studio_realtime: origin("studio_realtime").await,
    }
}

/// The production routes of configs/galion.toml on test ports.
fn production_like(
    s: &Sites,
    tls: Option<(
        &std::path::Path,
        &std::path::Path,
        &std::path::Path,
        &std::path::Path,
    )>,
) -> String {
    let (app_tls, studio_tls) = match tls {
        Some((ac, ak, sc, sk)) => (
            format!("tls = {{ cert = {:?}, key = {:?} }}", ac, ak),
            format!("tls = {{ cert = {:?}, key = {:?} }}", sc, sk),
        ),
        None => (String::new(), String::new()),
    };
    let body = format!(
        r#"
[headers]
hsts = "max-age=31536000; includeSubDomains"

[upstreams.app_frontend]
backends = ["{}"]
[upstreams.app_api]
backends = ["{}"]
[upstreams.app_voice]
backends = ["{}"]
[upstreams.studio_frontend]
backends = ["{}"]
[upstreams.studio_api]
backends = ["{}"]
[upstreams.studio_realtime]
backends = ["{}"]

[[sites]]
name = "galion.app"
hosts = ["galion.app", "www.galion.app"]
{app_tls}
headers.content_security_policy = "default-src 'self'; connect-src 'self' wss://galion.app"
routes = [
  {{ path = "/api/", upstream = "app_api" }},
  {{ path = "/voice/", upstream = "app_voice" }},
  {{ path = "/", upstream = "app_frontend" }},
]

[[sites]]
name = "galion.studio"
hosts = ["galion.studio", "www.galion.studio"]
{studio_tls}
headers.content_security_policy = "default-src 'self'; connect-src 'self' wss://galion.studio"
routes = [
  {{ path = "/api/", upstream = "studio_api" }},
  {{ path = "/socket.io/", upstream = "studio_realtime", read_timeout = "120s" }},
  {{ path = "/", upstream = "studio_frontend" }},
]
"#,
        s.app_frontend.addr,
        s.app_api.addr,
        s.app_voice.addr,
        s.studio_frontend.addr,
        s.studio_api.addr,
        s.studio_realtime.addr,
    );
    base_config(tls.is_some(), &body)
}

const ROUTES: [(&str, &str, &str); 9] = [
    ("galion.app", "/api/users?page=2", "app_api"),
    ("galion.app", "/voice/tts", "app_voice"),
    ("galion.app", "/", "app_frontend"),
    ("galion.app", "/apixyz", "app_frontend"),
    ("WWW.Galion.App:443", "/api/x", "app_api"),
    ("galion.studio", "/api/projects", "studio_api"),
    (
        "galion.studio",
        "/socket.io/?EIO=4&transport=polling",
        "studio_realtime",
    ),
    ("www.galion.studio", "/dashboard", "studio_frontend"),
    ("galion.studio", "/voice/tts", "studio_frontend"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_production_route_over_plain_http() {
    let s = sites().await;
    every_route_over_plain_http(&production_like(&s, None)).await;
}

/// `[server] work_stealing = false`: one runtime per thread, connections pinned to a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_production_route_with_a_runtime_per_thread() {
    let s = sites().await;
    let config =
        production_like(&s, None).replace("threads = 2\n", "threads = 2\nwork_stealing = false\n");
    assert!(config.contains("work_stealing = false"));
    every_route_over_plain_http(&config).await;
}

async fn every_route_over_plain_http(config: &str) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), config);
    // A new connection per request: connections are spread over the threads' runtimes.
    let c = fresh_client();
    for _ in 0..4 {
        for (host, path, service) in ROUTES {
            let r = c
                .get(format!("http://{}{path}", proxy.plain_addr()))
                .header("host", host)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{host}{path}");
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                v["service"], service,
                "{host}{path} went to {}",
                v["service"]
            );
            assert_eq!(
                v["uri"], path,
                "the origin sees the path and query unchanged"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_production_route_over_tls_h2_with_sni() {
    let s = sites().await;
    let dir = tempfile::tempdir().unwrap();
    let app = gen_cert(&["galion.app", "www.galion.app"]);
    let studio = gen_cert(&["galion.studio", "www.galion.studio"]);
    let (ac, ak) = app.write(dir.path(), "app");
    let (sc, sk) = studio.write(dir.path(), "studio");
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &production_like(&s, Some((&ac, &ak, &sc, &sk))),
    );
    let hosts = [
        "galion.app",
        "www.galion.app",
        "galion.studio",
        "www.galion.studio",
    ];
    let c = tls_client(&[&app, &studio], &hosts, proxy.https_addr());
    for (host, path, service) in ROUTES {
        let host = galion_edge_tests_host(host);
        let r = c
            .get(format!("https://{host}:{}{path}", proxy.ports.https))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.version(),
            reqwest::Version::HTTP_2,
            "h2 negotiated by ALPN"
        );
        assert_eq!(r.status(), 200, "{host}{path}");
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["service"], service, "{host}{path}");
        let headers = v["headers"].as_array().unwrap();
        let xfp = headers
            .iter()
            .find(|h| h[0] == "x-forwarded-proto")
            .unwrap();
        assert_eq!(xfp[1], "https");
    }
}

/// reqwest needs a lower-case name without port for SNI and `resolve`.
fn galion_edge_tests_host(h: &str) -> String {
    h.split(':').next().unwrap().to_ascii_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_hosts_are_refused_and_never_proxied() {
    let s = sites().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &production_like(&s, None));
    let c = client();
    for host in [
        "evil.example",
        "galion.app.evil.example",
        "127.0.0.1",
        "localhost",
    ] {
        let r = c
            .get(format!("http://{}/api/x", proxy.plain_addr()))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "{host}");
        assert_eq!(
            r.headers()["x-content-type-options"],
            "nosniff",
            "security headers on refusals"
        );
        assert!(r.text().await.unwrap().len() < 100, "short body");
    }
    // Absolute-form URI naming a foreign host, with a known Host header: refused (Pingora's
    // parser answers 400 to the mismatch, RFC 9112 §3.2.2), never proxied.
    let raw = raw_exchange(
        proxy.plain_addr(),
        b"GET http://evil.example/api/x HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(matches!(status_of(&raw), 400 | 421), "{raw}");
    let raw = raw_exchange(
        proxy.plain_addr(),
        b"GET http://evil.example/api/x HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&raw), 421, "{raw}");
    // CONNECT is never tunnelled.
    let raw = raw_exchange(
        proxy.plain_addr(),
        b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(matches!(status_of(&raw), 400 | 405 | 421), "{raw}");
    // Absolute-form naming a known host is served, in origin-form upstream.
    let raw = raw_exchange(
        proxy.plain_addr(),
        b"GET http://galion.app/api/abs HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&raw), 200, "{raw}");
    let seen = s.app_api.requests();
    assert_eq!(
        seen.len(),
        1,
        "only the known-host request reached an origin"
    );
    assert_eq!(seen[0].uri, "/api/abs");
    for o in [
        &s.app_frontend,
        &s.app_voice,
        &s.studio_api,
        &s.studio_frontend,
        &s.studio_realtime,
    ] {
        assert!(o.requests().is_empty(), "{} saw {:?}", o.name, o.requests());
    }
}

/// Sends `request` on `stream` and reads one response (head, then `Content-Length` bytes of
/// body); returns its status and head.
fn exchange_on(stream: &mut std::net::TcpStream, request: &str) -> (u16, String) {
    use std::io::{Read, Write};
    stream.write_all(request.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut buf).unwrap();
        assert!(
            n > 0,
            "closed before a whole head: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let len: usize = raw_header(&head, "content-length")
        .unwrap()
        .parse()
        .unwrap();
    while got.len() < head_end + len {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed before the whole body");
        got.extend_from_slice(&buf[..n]);
    }
    (status_of(&head), head)
}

/// A refusal for the host (421) or the path (404) keeps the connection when the request has no
/// body: the next request on it is served. With a body left unread, the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_keep_the_connection_unless_a_body_is_left_unread() {
    let s = sites().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &production_like(&s, None));
    let mut c = std::net::TcpStream::connect(proxy.plain_addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (request, want) in [
        ("GET /api/x HTTP/1.1\r\nHost: evil.example\r\n\r\n", 421),
        ("GET /api/a HTTP/1.1\r\nHost: galion.app\r\n\r\n", 200),
        (
            "DELETE /api/x HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 0\r\n\r\n",
            421,
        ),
        ("GET /api/b HTTP/1.1\r\nHost: galion.app\r\n\r\n", 200),
    ] {
        let (status, head) = exchange_on(&mut c, request);
        assert_eq!(status, want, "{request:?}: {head}");
        assert_ne!(
            raw_header(&head, "connection").as_deref(),
            Some("close"),
            "{head}"
        );
    }
    // A body the proxy will not read: answered, then the connection closes.
    let (status, head) = exchange_on(
        &mut c,
        "POST /api/x HTTP/1.1\r\nHost: evil.example\r\nContent-Length: 5\r\n\r\nhello",
    );
    assert_eq!(status, 421);
    assert_eq!(
        raw_header(&head, "connection").as_deref(),
        Some("close"),
        "{head}"
    );
    assert_eq!(
        s.app_api.requests().len(),
        2,
        "only the two known-host requests"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_cannot_escape_a_route() {
    let s = sites().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &production_like(&s, None));
    for target in [
        "/voice/../api/admin",
        "/voice/%2e%2e/api/admin",
        "/voice/.%2E/api/admin",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(proxy.plain_addr(), req.as_bytes(), Duration::from_secs(5));
        assert_eq!(status_of(&raw), 400, "{target}: {raw}");
    }
    assert!(s.app_voice.requests().is_empty());
    assert!(s.app_api.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_as_the_origin_saw_them() {
    let s = sites().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &production_like(&s, None));
    let c = client();
    let r = c
        .get(format!("http://{}/api/me", proxy.plain_addr()))
        .header("host", "galion.app")
        .header("x-forwarded-for", "198.51.100.7")
        .header("x-real-ip", "6.6.6.6")
        .header("x-forwarded-proto", "https")
        .header("x-request-id", "client-chosen-id-42")
        .header("connection", "keep-alive, x-secret-hop")
        .header("x-secret-hop", "must-not-pass")
        .header("keep-alive", "timeout=5")
        .header("proxy-connection", "keep-alive")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["x-request-id"],
        "client-chosen-id-42",
        "a valid id is kept and returned"
    );
    let seen = s.app_api.requests();
    let req = &seen[0];
    assert_eq!(
        req.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "the client is not a trusted proxy: its own X-Forwarded-For claim is dropped"
    );
    assert_eq!(
        req.header("x-real-ip"),
        Some("127.0.0.1"),
        "replaced, not trusted"
    );
    assert_eq!(
        req.header("x-forwarded-proto"),
        Some("http"),
        "the listener's scheme, not the client's claim"
    );
    assert_eq!(req.header("x-request-id"), Some("client-chosen-id-42"));
    assert_eq!(req.header("host"), Some("galion.app"));
    for hop in ["x-secret-hop", "keep-alive", "proxy-connection"] {
        assert_eq!(req.header(hop), None, "{hop} is hop-by-hop");
    }

    // An invalid id is replaced by a generated one, the same upstream and downstream.
    let r = c
        .get(format!("http://{}/api/me", proxy.plain_addr()))
        .header("host", "galion.app")
        .header("x-request-id", "bad id with spaces")
        .send()
        .await
        .unwrap();
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 32);
    let seen = s.app_api.requests();
    assert_eq!(seen[1].header("x-request-id"), Some(id.as_str()));
    assert_eq!(seen[1].header("x-forwarded-for"), Some("127.0.0.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_on_success_error_and_refusal() {
    let s = sites().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &production_like(&s, None));
    let c = client();
    let get = |host: &'static str, path: &'static str| {
        c.get(format!("http://{}{path}", proxy.plain_addr()))
            .header("host", host)
            .send()
    };
    let ok = get("galion.app", "/api/x").await.unwrap();
    let not_found_upstream = get("galion.studio", "/api/status?code=404").await.unwrap();
    let refused = get("nope.example", "/").await.unwrap();
    for (what, r, csp) in [
        ("200", &ok, Some("connect-src 'self' wss://galion.app")),
        (
            "upstream 404",
            &not_found_upstream,
            Some("wss://galion.studio"),
        ),
        ("421", &refused, None),
    ] {
        let h = r.headers();
        assert_eq!(
            h["strict-transport-security"], "max-age=31536000; includeSubDomains",
            "{what}"
        );
        assert_eq!(h["x-frame-options"], "SAMEORIGIN", "{what}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{what}");
        assert_eq!(
            h["referrer-policy"], "strict-origin-when-cross-origin",
            "{what}"
        );
        assert!(h.contains_key("permissions-policy"), "{what}");
        let server = h["server"].to_str().unwrap();
        assert!(
            !server.chars().any(|c| c.is_ascii_digit()),
            "{what}: Server leaks a version: {server}"
        );
        assert!(!h.contains_key("x-powered-by"), "{what}");
        if let Some(csp) = csp {
            assert!(
                h["content-security-policy"].to_str().unwrap().contains(csp),
                "{what}: per-site CSP"
            );
        }
    }
    assert_eq!(not_found_upstream.status(), 404);
}
