//! Hostile HTTP/1 clients against the real proxy: request smuggling shapes and bad chunked
//! bodies (400 and a closed connection, nothing acted on upstream), keepalive abuse, slowloris
//! at scale, the per-peer connection cap, slow readers, cache poisoning through unkeyed
//! headers, open-proxy attempts, and ACME webroot escapes. Each attack is bounded in count and
//! time, runs on loopback, and checks that a well-behaved client is served while it runs.
//! HTTP/2 abuse is in `hostile_h2.rs`; docs/security.md maps each test to its defence. The last
//! test checks that `check` validates the settings added for these defences.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One site, `galion.app`: `/cached/` stores in the `pages` zone, everything else is proxied
/// uncached to `app`. `downstream` lines are added to `[downstream]`, `extra` to the file.
fn config(
    app: &Origin,
    tls: Option<(&std::path::Path, &std::path::Path)>,
    downstream: &str,
    extra: &str,
) -> String {
    let tls_line = match tls {
        Some((c, k)) => format!("tls = {{ cert = {c:?}, key = {k:?} }}"),
        None => String::new(),
    };
    let body = format!(
        r#"
{extra}

[cache]
lock_timeout = "5s"

[cache.zones.pages]
path = "{{dir}}/cache/pages"
size = "8MB"
memory_size = "1MB"
max_object_size = "256k"
default_ttl = "10m"

[upstreams.app]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
{tls_line}
routes = [
  {{ path = "/cached/", upstream = "app", cache = "pages" }},
  {{ path = "/", upstream = "app" }},
]
"#,
        app.addr
    );
    base_config(tls.is_some(), &body).replace(
        "max_body_size = \"1MB\"\n",
        &format!("max_body_size = \"1MB\"\n{downstream}\n"),
    )
}

/// A bystander on the plain listener, a fresh connection per request.
fn bystander(proxy: &Proxy, path: &str) -> Bystander {
    Bystander::start(
        fresh_client(),
        format!("http://{}{path}", proxy.plain_addr()),
        Some("galion.app"),
        Duration::from_millis(20),
    )
}

fn assert_served(report: &BystanderReport, what: &str, at_least: usize) {
    assert!(
        report.failed.is_empty(),
        "{what}: the well-behaved client failed: {:?}",
        report.failed
    );
    assert!(
        report.ok >= at_least,
        "{what}: the well-behaved client got only {} answers",
        report.ok
    );
}

/// Sends `request` on a new connection; returns what came back and whether the proxy closed
/// the connection (EOF or reset) within `limit`.
async fn exchange(addr: SocketAddr, request: &[u8], limit: Duration) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// A refusal from the proxy itself: one answer, the given status, our headers, closed.
fn assert_refused(raw: &str, closed: bool, status: u16, what: &str) {
    assert_eq!(status_of(raw), status, "{what}: {raw:?}");
    assert_eq!(
        raw.matches("HTTP/1.1 ").count(),
        1,
        "{what}: one answer only: {raw:?}"
    );
    assert_eq!(
        raw_header(raw, "connection").as_deref(),
        Some("close"),
        "{what}: {raw:?}"
    );
    assert_eq!(
        raw_header(raw, "x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}: security headers: {raw:?}"
    );
    assert_eq!(
        raw_header(raw, "server").as_deref(),
        Some("galion-edge"),
        "{what}: {raw:?}"
    );
    assert!(
        closed,
        "{what}: the connection stays open after the refusal"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_shapes_get_400_close_and_never_reach_the_origin() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let addr = proxy.plain_addr();
    let by = bystander(&proxy, "/ok");

    // Each head is followed by a body that hides a second request: a parser that frames the
    // body differently from the proxy would see `GET /smuggled/N`.
    let cases: Vec<(&str, String, String)> = vec![
        (
            "CL then TE",
            "Content-Length: 6\r\nTransfer-Encoding: chunked\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "TE then CL",
            "Transfer-Encoding: chunked\r\nContent-Length: 3\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "two Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 60\r\n".into(),
            "hello".into(),
        ),
        (
            "two equal Content-Lengths",
            "Content-Length: 5\r\nContent-Length: 5\r\n".into(),
            "hello".into(),
        ),
        (
            "Content-Length list",
            "Content-Length: 5, 60\r\n".into(),
            "hello".into(),
        ),
        (
            "signed Content-Length",
            "Content-Length: +5\r\n".into(),
            "hello".into(),
        ),
        (
            "hex Content-Length",
            "Content-Length: 0x5\r\n".into(),
            "hello".into(),
        ),
        (
            "obs-fold Transfer-Encoding",
            "Transfer-Encoding:\r\n chunked\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "obs-fold any header",
            "X-Note: a\r\n\tb\r\nContent-Length: 5\r\n".into(),
            "hello".into(),
        ),
        (
            "TE chunked, identity",
            "Transfer-Encoding: chunked, identity\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "TE identity",
            "Transfer-Encoding: identity\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "TE xchunked",
            "Transfer-Encoding: xchunked\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "two TE",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "space before colon",
            "Transfer-Encoding : chunked\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "Transfer_Encoding",
            "Transfer_Encoding: chunked\r\n".into(),
            "0\r\n\r\n".into(),
        ),
        (
            "Content_Length",
            "Content_Length: 5\r\n".into(),
            "hello".into(),
        ),
        ("NUL in a value", "X-A: a\0b\r\n".into(), String::new()),
        ("bare CR in a value", "X-A: a\rb\r\n".into(), String::new()),
        ("two Hosts", "Host: evil.example\r\n".into(), String::new()),
        ("no colon", "X-A\r\n".into(), String::new()),
    ];
    for (i, (what, headers, body)) in cases.iter().enumerate() {
        let req = format!(
            "POST /s/{i} HTTP/1.1\r\nHost: galion.app\r\n{headers}\r\n{body}GET /smuggled/{i} HTTP/1.1\r\nHost: galion.app\r\n\r\n"
        );
        let (raw, closed) = exchange(addr, req.as_bytes(), Duration::from_secs(5)).await;
        assert_refused(&raw, closed, 400, what);
        assert!(raw.contains("bad request"), "{what}: {raw:?}");
    }
    // TE on HTTP/1.0 (RFC 9112 §6.1: faulty framing).
    let (raw, closed) = exchange(
        addr,
        b"POST /s/http10 HTTP/1.0\r\nHost: galion.app\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_refused(&raw, closed, 400, "TE on HTTP/1.0");
    // Malformed request lines get the proxy's own 400 too, not Pingora's bare one.
    for req in [
        &b"GET /s/v HTTP/9.9\r\nHost: galion.app\r\n\r\n"[..],
        b"GET /s/v HTTP/2.0\r\nHost: galion.app\r\n\r\n",
        b"G@T /s/v HTTP/1.1\r\nHost: galion.app\r\n\r\n",
        b"GET /s/v\r\nHost: galion.app\r\n\r\n",
    ] {
        let what = String::from_utf8_lossy(req)
            .lines()
            .next()
            .unwrap()
            .to_string();
        let (raw, closed) = exchange(addr, req, Duration::from_secs(5)).await;
        assert_refused(&raw, closed, 400, &what);
    }

    let report = by.stop().await;
    assert_served(&report, "smuggling", 1);
    let seen = app.requests();
    let reached: Vec<_> = seen.iter().filter(|r| r.uri != "/ok").collect();
    assert!(
        reached.is_empty(),
        "refused requests reached the origin: {reached:?}"
    );
    assert!(
        seen.len() >= report.ok,
        "the bystander's requests were proxied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_chunk_sizes_get_400_close_and_nothing_complete_upstream() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let addr = proxy.plain_addr();
    let by = bystander(&proxy, "/ok");

    let bodies = [
        ("not hex", "zz\r\nhello\r\n0\r\n\r\n"),
        ("negative", "-5\r\nhello\r\n0\r\n\r\n"),
        ("0x prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        (
            "overflowing size",
            "5\r\nhello\r\nffffffffffffffffffff\r\nx\r\n0\r\n\r\n",
        ),
        (
            "data longer than its size",
            "5\r\nhelloSMUGGLE\r\n0\r\n\r\n",
        ),
        ("empty size line", "\r\nhello\r\n0\r\n\r\n"),
        ("space inside the size", "5 5\r\nhello\r\n0\r\n\r\n"),
    ];
    for (i, (what, body)) in bodies.iter().enumerate() {
        let req = format!(
            "POST /c/{i} HTTP/1.1\r\nHost: galion.app\r\nTransfer-Encoding: chunked\r\n\r\n{body}GET /smuggled-c/{i} HTTP/1.1\r\nHost: galion.app\r\n\r\n"
        );
        let (raw, closed) = exchange(addr, req.as_bytes(), Duration::from_secs(8)).await;
        assert!(closed, "{what}: the connection stays open: {raw:?}");
        assert_eq!(raw.matches("HTTP/1.1 ").count(), 1, "{what}: {raw:?}");
        if *what == "empty size line" {
            // httparse reads an empty size line as the last chunk (size 0): the body is empty,
            // and the connection is closed after the answer, so what follows is never a request.
            assert_eq!(status_of(&raw), 200, "{what}: {raw:?}");
            assert_eq!(
                raw_header(&raw, "connection").as_deref(),
                Some("close"),
                "{what}: {raw:?}"
            );
        } else {
            // The proxy's own 400, with its headers, and the connection closed.
            assert_refused(&raw, closed, 400, what);
        }
    }

    let report = by.stop().await;
    assert_served(&report, "bad chunks", 1);
    for r in app.requests().iter().filter(|r| r.uri != "/ok") {
        // The head may have gone upstream before the bad chunk arrived; no byte of a bad body
        // completed there (the origin records a failed body as 0 bytes), and nothing behind
        // it was ever read as a request.
        assert!(r.uri.starts_with("/c/"), "smuggled: {r:?}");
        assert_eq!(
            r.body_len, 0,
            "a bad chunked body completed upstream: {r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_connections_close_after_keepalive_requests() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    // The default keepalive_requests (1000) applies.
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let by = bystander(&proxy, "/ok");

    let total = 3000;
    let mut per_connection = Vec::new();
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    while sent < total && Instant::now() < deadline {
        let s = TcpStream::connect(proxy.plain_addr()).await.unwrap();
        let mut s = tokio::io::BufReader::new(s);
        let mut served = 0;
        let mut last_close = false;
        while sent < total {
            let req = format!("GET /ka?i={sent} HTTP/1.1\r\nHost: galion.app\r\n\r\n");
            if s.get_mut().write_all(req.as_bytes()).await.is_err() {
                break;
            }
            match tokio::time::timeout(Duration::from_secs(10), read_response_async(&mut s)).await {
                Ok(Some(head)) => {
                    assert_eq!(status_of(&head), 200, "{head}");
                    served += 1;
                    sent += 1;
                    last_close = raw_header(&head, "connection").as_deref() == Some("close");
                    if last_close {
                        break;
                    }
                }
                _ => break,
            }
        }
        if last_close {
            // The proxy closes after its `Connection: close`.
            let mut rest = Vec::new();
            let end = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
            assert!(
                matches!(end, Ok(Ok(0))),
                "open after close: {end:?} {rest:?}"
            );
        }
        per_connection.push((served, last_close));
    }
    assert_eq!(sent, total, "{per_connection:?}");
    assert_eq!(
        per_connection,
        vec![(1000, true), (1000, true), (1000, true)],
        "1000 requests per connection, the last one with Connection: close"
    );
    let report = by.stop().await;
    assert_served(&report, "keepalive abuse", 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_hundred_slowloris_connections_are_cut_and_others_served() {
    raise_fd_limit();
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let addr = proxy.plain_addr();
    let rss_before = rss_kib(proxy.pid());

    // 400 dribblers: a request line, then one header byte every 300 ms, never done.
    // 100 silent: connect and send nothing.
    let dribblers: Vec<_> = (0..400)
        .map(|i| {
            tokio::spawn(async move {
                let start = Instant::now();
                let Ok(s) = TcpStream::connect(addr).await else {
                    return (String::from("connect failed"), false, start.elapsed());
                };
                let (mut rd, mut wr) = s.into_split();
                let writer = tokio::spawn(async move {
                    let _ = wr
                        .write_all(
                            format!("GET /slow/{i} HTTP/1.1\r\nHost: galion.app\r\n").as_bytes(),
                        )
                        .await;
                    for b in
                        b"X-Dribble: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
                    {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if wr.write_all(&[*b]).await.is_err() {
                            return;
                        }
                    }
                });
                let mut out = Vec::new();
                let mut buf = [0u8; 4096];
                let closed = loop {
                    match tokio::time::timeout(Duration::from_secs(10), rd.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break true,
                        Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
                        Err(_) => break false,
                    }
                };
                writer.abort();
                (
                    String::from_utf8_lossy(&out).into_owned(),
                    closed,
                    start.elapsed(),
                )
            })
        })
        .collect();
    let silent: Vec<_> = (0..100)
        .map(|_| {
            tokio::spawn(async move {
                let start = Instant::now();
                let mut s = TcpStream::connect(addr).await.unwrap();
                let mut buf = [0u8; 64];
                let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
                (matches!(r, Ok(Ok(0)) | Ok(Err(_))), start.elapsed())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_attack = rss_kib(proxy.pid());
    let by = bystander(&proxy, "/ok");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let report = by.stop().await;

    let mut latest = Duration::ZERO;
    for (i, h) in dribblers.into_iter().enumerate() {
        let (resp, closed, elapsed) = h.await.unwrap();
        assert_eq!(status_of(&resp), 408, "dribbler {i}: {resp:?}");
        assert!(closed, "dribbler {i}: still open after {elapsed:?}");
        latest = latest.max(elapsed);
    }
    for (i, h) in silent.into_iter().enumerate() {
        let (closed, elapsed) = h.await.unwrap();
        assert!(
            closed,
            "silent connection {i}: still open after {elapsed:?}"
        );
    }
    // client_header_timeout is 2 s; generous slack for a loaded machine.
    assert!(
        latest < Duration::from_secs(8),
        "the last dribbler was cut after {latest:?}"
    );
    assert_served(&report, "slowloris", 5);
    let rss_peak = peak_rss_kib(proxy.pid());
    eprintln!(
        "slowloris: RSS before {rss_before} KiB, during {rss_attack} KiB, peak {rss_peak} KiB; \
         last dribbler cut after {latest:?}; bystander {} ok, slowest {:?}",
        report.ok, report.slowest
    );
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "500 idle connections grew the proxy from {rss_before} to {rss_peak} KiB"
    );
    assert!(
        app.requests().iter().all(|r| r.uri == "/ok"),
        "a slow head reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_peer_cannot_hold_more_than_max_connections_per_peer() {
    raise_fd_limit();
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&app, None, "max_connections_per_peer = 50", "")
        .replace(
            "client_header_timeout = \"2s\"",
            "client_header_timeout = \"20s\"",
        )
        .replace(
            "http_proxy = [\"127.0.0.1:{plain}\"]",
            "http_proxy = [\"127.0.0.1:{plain}\", \"[::1]:{plain}\"]",
        );
    let proxy = Proxy::start(bin!(), dir.path(), &text);
    let v4 = proxy.plain_addr();
    let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, proxy.ports.plain));
    let by = Bystander::start(
        fresh_client(),
        format!("http://{v6}/ok"),
        Some("galion.app"),
        Duration::from_millis(50),
    );

    // 200 connections from 127.0.0.1, each with half a request head, held open.
    let mut held = Vec::new();
    for _ in 0..200 {
        let mut s = TcpStream::connect(v4).await.unwrap();
        let _ = s.write_all(b"GET /held HTTP/1.1\r\n").await;
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut open = 0;
    let mut closed = 0;
    for s in &mut held {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf)).await {
            Err(_) => open += 1,
            Ok(Ok(0)) | Ok(Err(_)) => closed += 1,
            Ok(Ok(n)) => panic!("a held connection got an answer: {:?}", &buf[..n]),
        }
    }
    assert_eq!((open, closed), (50, 150), "connections kept and closed");
    // While 127.0.0.1 is at its cap, a new connection from it is closed at once...
    let (raw, was_closed) = exchange(
        v4,
        b"GET /ok HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(was_closed && raw.is_empty(), "over the cap: {raw:?}");
    // ...and ::1 is served throughout.
    let report = by.stop().await;
    assert_served(&report, "per-peer cap", 5);

    drop(held);
    let c = fresh_client();
    let back = eventually(Duration::from_secs(5), || {
        let c = c.clone();
        async move {
            c.get(format!("http://{v4}/ok"))
                .header("host", "galion.app")
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(back, "127.0.0.1 served again once its connections closed");
    assert!(app.requests().iter().all(|r| r.uri == "/ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_are_timed_out_and_not_buffered() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&app, None, "send_timeout = \"3s\"", ""),
    );
    let addr = proxy.plain_addr();
    // Warm up, so the baseline includes the worker threads' buffers.
    let r = client()
        .get(format!("http://{addr}/big/bytes?n=1048576"))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);
    let rss_before = rss_kib(proxy.pid());

    // Ten clients ask for 32 MiB each and read nothing after the first bytes.
    const SIZE: usize = 32 << 20;
    let mut readers = Vec::new();
    for i in 0..10 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET /big/bytes?n={SIZE}&i={i} HTTP/1.1\r\nHost: galion.app\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut first = [0u8; 1024];
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut first))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
        readers.push((s, n));
    }
    let by = bystander(&proxy, "/ok");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_stalled = rss_kib(proxy.pid());
    let report = by.stop().await;
    assert_served(&report, "slow readers", 5);

    // After send_timeout without progress the proxy gives up: each reader finds the end of
    // the stream before the end of the body.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, (mut s, n)) in readers.into_iter().enumerate() {
        let mut total = n;
        let mut buf = vec![0u8; 1 << 16];
        let end = loop {
            match tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break true,
                Ok(Ok(k)) => total += k,
                Err(_) => break false,
            }
        };
        assert!(end, "reader {i}: still open after {total} bytes");
        assert!(
            total < SIZE,
            "reader {i}: got the whole body ({total} bytes) despite stalling"
        );
    }
    let rss_peak = peak_rss_kib(proxy.pid());
    eprintln!(
        "slow read: RSS before {rss_before} KiB, stalled {rss_stalled} KiB, peak {rss_peak} KiB \
         (10 x {} MiB requested)",
        SIZE >> 20
    );
    assert!(
        rss_peak < rss_before + 96 * 1024,
        "10 stalled 32 MiB downloads grew the proxy from {rss_before} to {rss_peak} KiB"
    );
    let c = client();
    let r = c
        .get(format!("http://{addr}/after"))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unkeyed_headers_never_change_what_others_get_from_the_cache() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let base = format!("http://{}", proxy.plain_addr());
    let c = client();
    let poison = [
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-proto", "gopher"),
        ("x-forwarded-scheme", "nothttps"),
        ("x-forwarded-port", "1337"),
        ("x-forwarded-server", "evil.example"),
        ("x-forwarded-prefix", "/evilprefix"),
        ("x-forwarded-ssl", "off"),
        ("x-original-url", "/admin/evil"),
        ("x-rewrite-url", "/admin/evil"),
        ("x-original-host", "evil.example"),
        ("x-host", "evil.example"),
        ("forwarded", "host=evil.example;proto=gopher"),
        ("x-http-method-override", "DELETE"),
        ("x-method-override", "DELETE"),
        ("x-http-method", "DELETE"),
    ];
    let url = format!("{base}/cached/page?cc=public,max-age=60");
    let mut req = c.get(&url).header("host", "galion.app");
    for (k, v) in poison {
        req = req.header(k, v);
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-cache-status"], "MISS");
    let seen = app.requests();
    assert_eq!(seen.len(), 1);
    for (k, _) in poison {
        match k {
            "x-forwarded-host" => assert_eq!(seen[0].header(k), Some("galion.app")),
            "x-forwarded-proto" => assert_eq!(seen[0].header(k), Some("http")),
            _ => assert_eq!(seen[0].header(k), None, "{k} reached the origin"),
        }
    }

    // Another client asks for the same URL and gets the stored object: clean.
    let r = c
        .get(&url)
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache-status"], "HIT");
    let body = r.text().await.unwrap();
    for needle in ["evil", "gopher", "1337", "DELETE", "admin"] {
        assert!(
            !body.contains(needle),
            "{needle} in what another client got: {body}"
        );
    }

    // Responses that belong to one client never reach another: `Set-Cookie`, `private`,
    // `no-store`, and answers to requests with credentials, even with `public` or a TTL.
    for (i, (query, header)) in [
        ("cc=public,max-age=60&cookie=1", ("x-attacker", "1")),
        ("cc=private,max-age=60", ("cookie", "session=attacker")),
        ("cc=no-store", ("cookie", "session=attacker")),
        ("cc=max-age=60", ("authorization", "Bearer attacker-token")),
    ]
    .into_iter()
    .enumerate()
    {
        let url = format!("{base}/cached/own{i}?{query}");
        let r = c
            .get(&url)
            .header("host", "galion.app")
            .header(header.0, header.1)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let before = app.requests().len();
        let r = c
            .get(&url)
            .header("host", "galion.app")
            .send()
            .await
            .unwrap();
        assert_ne!(r.headers()["x-cache-status"], "HIT", "{query}");
        assert_eq!(app.requests().len(), before + 1, "{query}: fetched again");
        let body = r.text().await.unwrap();
        assert!(
            !body.contains("attacker") && !body.contains("x-attacker"),
            "{query}: {body}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_is_not_an_open_proxy() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let addr = proxy.plain_addr();
    let by = bystander(&proxy, "/ok");

    let refused: [(&[u8], u16); 7] = [
        // Absolute-form naming our host, Host naming another: which one wins differs between
        // parsers, so neither does.
        (b"GET http://galion.app/p HTTP/1.1\r\nHost: evil.example\r\n\r\n", 400),
        (b"GET http://evil.example/p HTTP/1.1\r\nHost: galion.app\r\n\r\n", 400),
        (b"GET https://evil.example:443/p HTTP/1.1\r\nHost: galion.app\r\n\r\n", 400),
        (b"GET http://galion.app@evil.example/p HTTP/1.1\r\nHost: galion.app@evil.example\r\n\r\n", 400),
        (b"GET /p HTTP/1.1\r\nHost: galion.app@evil.example\r\n\r\n", 400),
        (b"CONNECT galion.app:443 HTTP/1.1\r\nHost: galion.app:443\r\n\r\n", 405),
        (b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n", 405),
    ];
    for (req, status) in refused {
        let what = String::from_utf8_lossy(req)
            .lines()
            .next()
            .unwrap()
            .to_string();
        let (raw, closed) = exchange(addr, req, Duration::from_secs(5)).await;
        assert_refused(&raw, closed, status, &what);
    }
    let not_ours: [&[u8]; 6] = [
        // An empty Host is valid syntax (RFC 9112 §3.2) and names no site of ours.
        b"GET /p HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n",
        b"GET http://evil.example/p HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: evil.example:80\r\nConnection: close\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: galion.app.evil.example\r\nConnection: close\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    ];
    for req in not_ours {
        let what = String::from_utf8_lossy(req)
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join(" | ");
        let (raw, _) = exchange(addr, req, Duration::from_secs(5)).await;
        assert_eq!(status_of(&raw), 421, "{what}: {raw:?}");
        assert_eq!(
            raw_header(&raw, "server").as_deref(),
            Some("galion-edge"),
            "{what}"
        );
    }
    // Bad or missing hosts.
    let bad: [&[u8]; 3] = [
        b"GET /p HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET evil.example:80 HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n",
        b"GET * HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n",
    ];
    for req in bad {
        let what = String::from_utf8_lossy(req)
            .lines()
            .take(2)
            .collect::<Vec<_>>()
            .join(" | ");
        let (raw, closed) = exchange(addr, req, Duration::from_secs(5)).await;
        assert_refused(&raw, closed, 400, &what);
    }
    // A path that looks like a host stays a path on our site.
    let (raw, _) = exchange(
        addr,
        b"GET //evil.example/p HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(status_of(&raw), 200, "{raw:?}");

    let report = by.stop().await;
    assert_served(&report, "open proxy", 1);
    for r in app.requests() {
        assert_eq!(r.header("host"), Some("galion.app"), "{r:?}");
        assert!(r.uri == "/ok" || r.uri == "//evil.example/p", "{r:?}");
    }
}

/// TRACE (and IIS's TRACK) would echo the request, cookies and `Authorization` included, back
/// to a script that can make the browser send one: answered 405 by the proxy, with `Allow`,
/// never forwarded; the connection stays usable (the refusal has no body to skip).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_refused_not_forwarded() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    for method in ["TRACE", "TRACK"] {
        let mut s = std::net::TcpStream::connect(proxy.plain_addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let req =
            format!("{method} /p HTTP/1.1\r\nHost: galion.app\r\nCookie: session=secret\r\n\r\n");
        std::io::Write::write_all(&mut s, req.as_bytes()).unwrap();
        let raw = read_response(&mut s);
        assert_eq!(status_of(&raw), 405, "{method}: {raw:?}");
        assert_eq!(
            raw_header(&raw, "allow").as_deref(),
            Some("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            "{method}"
        );
        assert_eq!(
            raw_header(&raw, "x-content-type-options").as_deref(),
            Some("nosniff")
        );
        assert_eq!(raw_header(&raw, "server").as_deref(), Some("galion-edge"));
        assert!(!raw.contains("secret"), "{method}: echoed: {raw:?}");
        // The next request on the same connection is served.
        std::io::Write::write_all(&mut s, b"GET /ok HTTP/1.1\r\nHost: galion.app\r\n\r\n").unwrap();
        let next = read_response(&mut s);
        assert_eq!(status_of(&next), 200, "{method}: then {next:?}");
    }
    assert!(
        app.requests().iter().all(|r| r.uri == "/ok"),
        "forwarded: {:?}",
        app.requests()
    );
}

/// The front's own answers, which come before a request exists, are counted
/// (`galion_edge_malformed_requests_total{status,reason}`) and written to the access log like
/// every other answer: a smuggling shape (`400`), `CONNECT` (`405`), a head with too many
/// lines (`431`) and one that never ends (`408`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn front_answers_are_counted_and_logged() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let admin = "[admin]\nlisten = [\"127.0.0.1:{admin}\"]";
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", admin));
    let addr = proxy.plain_addr();
    let limit = Duration::from_secs(5);
    let smuggle = b"POST /f/smuggle HTTP/1.1\r\nHost: galion.app\r\nContent-Length: 5\r\n\
                    Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    assert_eq!(status_of(&exchange(addr, smuggle, limit).await.0), 400);
    let connect = b"CONNECT galion.app:443 HTTP/1.1\r\nHost: galion.app:443\r\n\r\n";
    assert_eq!(status_of(&exchange(addr, connect, limit).await.0), 405);
    let many = format!(
        "GET /f/many HTTP/1.1\r\nHost: galion.app\r\n{}\r\n",
        "X-A: 1\r\n".repeat(60)
    );
    assert_eq!(
        status_of(&exchange(addr, many.as_bytes(), limit).await.0),
        431
    );
    // client_header_timeout is 2 s in the test config.
    let slow = b"GET /f/slow HTTP/1.1\r\nHost: gal";
    assert_eq!(status_of(&exchange(addr, slow, limit).await.0), 408);

    for (status, reason) in [
        ("400", "length_and_chunked"),
        ("405", "connect"),
        ("431", "too_many_headers"),
        ("408", "slow_head"),
    ] {
        let labels = [
            format!("status=\"{status}\""),
            format!("reason=\"{reason}\""),
        ];
        let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
        assert_eq!(
            metric(&proxy, "galion_edge_malformed_requests_total", &labels).await,
            1,
            "{status} {reason}\n{}",
            metrics_text(&proxy).await
        );
    }
    let logged = eventually(Duration::from_secs(5), || async {
        let log = proxy.stdout();
        log.contains("\"POST /f/smuggle HTTP/1.1\" 400")
            && log.contains("\"CONNECT galion.app:443 HTTP/1.1\" 405")
            && log.matches("\" 431 ").count() == 1
            && log.matches("\" 408 ").count() == 1
    })
    .await;
    assert!(logged, "access log:\n{}", proxy.stdout());
    assert!(app.requests().is_empty(), "{:?}", app.requests());
}

/// Heads that are unusual but unambiguous get an answer, never a silent close: request
/// targets with bytes RFC 3986 does not allow unescaped but that every server on the path reads
/// the same way (`|`, `{`, `^`, `"`: nginx takes them too), and line ends of a bare LF (RFC 9112
/// §2.2 lets a recipient accept them; the request goes upstream with CRLF). Each is served
/// with the security headers, and the origin receives the same target.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lenient_heads_are_answered_not_dropped() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let cases: [(&[u8], &str); 6] = [
        (b"GET /l/a|b HTTP/1.1\r\nHost: galion.app\r\n\r\n", "/l/a|b"),
        (
            b"GET /l/a{b} HTTP/1.1\r\nHost: galion.app\r\n\r\n",
            "/l/a{b}",
        ),
        (b"GET /l/a^b HTTP/1.1\r\nHost: galion.app\r\n\r\n", "/l/a^b"),
        (
            b"GET /l/a\"b HTTP/1.1\r\nHost: galion.app\r\n\r\n",
            "/l/a\"b",
        ),
        (b"GET /l/lf HTTP/1.1\nHost: galion.app\n\n", "/l/lf"),
        (
            b"GET /l/mixed HTTP/1.1\r\nHost: galion.app\n\r\n",
            "/l/mixed",
        ),
    ];
    for (req, target) in cases {
        let (raw, _) = exchange(proxy.plain_addr(), req, Duration::from_secs(3)).await;
        assert_eq!(status_of(&raw), 200, "{target}: {raw:?}");
        assert_eq!(
            raw_header(&raw, "x-content-type-options").as_deref(),
            Some("nosniff"),
            "{target}"
        );
        assert!(
            app.requests().iter().any(|r| r.uri == target),
            "{target} did not reach the origin as sent: {:?}",
            app.requests()
        );
    }
}

/// HTTP/1.1 pipelining (RFC 9112 §9.3.2): requests written at once, before any answer, are
/// answered in order on the same connection, a POST with its body and a cached route among
/// them. Every pipelined head passes the front's checks as a first one does: a smuggling shape
/// behind a good request gets `400` and a close, and nothing after it reaches the origin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_and_each_head_is_checked() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&app, None, "", ""));
    let answers = |requests: &'static [u8], n: usize| {
        let addr = proxy.plain_addr();
        async move {
            let mut s = tokio::io::BufReader::new(TcpStream::connect(addr).await.unwrap());
            s.get_mut().write_all(requests).await.unwrap();
            let mut got = Vec::new();
            for _ in 0..n {
                match tokio::time::timeout(Duration::from_secs(5), read_response_async(&mut s))
                    .await
                {
                    Ok(Some(r)) => got.push(r),
                    _ => break,
                }
            }
            let mut rest = [0u8; 1];
            let closed = matches!(
                tokio::time::timeout(Duration::from_secs(5), s.read(&mut rest)).await,
                Ok(Ok(0) | Err(_))
            );
            (got, closed)
        }
    };
    let (got, closed) = answers(
        b"GET /p/1 HTTP/1.1\r\nHost: galion.app\r\n\r\n\
          POST /p/2 HTTP/1.1\r\nHost: galion.app\r\nContent-Length: 5\r\n\r\nhello\
          GET /cached/p/3 HTTP/1.1\r\nHost: galion.app\r\n\r\n\
          GET /p/4 HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n",
        4,
    )
    .await;
    assert_eq!(got.len(), 4, "four answers: {got:?}");
    for (r, uri) in got.iter().zip(["/p/1", "/p/2", "/cached/p/3", "/p/4"]) {
        assert_eq!(status_of(r), 200, "{uri}: {r}");
        assert!(
            r.contains(&format!("\"uri\":\"{uri}\"")),
            "{uri} answered out of order: {r}"
        );
    }
    assert!(got[1].contains("\"body_len\":5"), "{}", got[1]);
    assert!(closed, "closed after the request with Connection: close");

    let (got, closed) = answers(
        b"GET /p/5 HTTP/1.1\r\nHost: galion.app\r\n\r\n\
          POST /p/6 HTTP/1.1\r\nHost: galion.app\r\nContent-Length: 5\r\n\
          Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          GET /p/7 HTTP/1.1\r\nHost: galion.app\r\n\r\n",
        3,
    )
    .await;
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(status_of(&got[0]), 200, "{}", got[0]);
    assert_eq!(status_of(&got[1]), 400, "{}", got[1]);
    assert!(closed);
    let uris: Vec<String> = app.requests().iter().map(|r| r.uri.clone()).collect();
    assert_eq!(uris, ["/p/1", "/p/2", "/cached/p/3", "/p/4", "/p/5"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_webroot_escapes_are_refused() {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let challenges = dir.path().join("webroot/.well-known/acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    std::fs::write(challenges.join("tok_EN-123"), "tok_EN-123.thumb").unwrap();
    let secret = "TOP-SECRET-webroot-sibling";
    std::fs::write(dir.path().join("webroot/secret.txt"), secret).unwrap();
    std::fs::write(dir.path().join("secret.txt"), secret).unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(
            &app,
            Some((&c, &k)),
            "",
            "[acme]\nwebroot = \"{dir}/webroot\"",
        ),
    );
    let http = proxy.http_addr();
    let by = bystander(&proxy, "/ok");

    let long = "a".repeat(300);
    let huge = "b".repeat(8000);
    let targets = [
        "/.well-known/acme-challenge/..\\..\\secret.txt".to_string(),
        "/.well-known/acme-challenge/..%5c..%5csecret.txt".into(),
        "/.well-known/acme-challenge/..%5C..%5Csecret.txt".into(),
        "/.well-known/acme-challenge/%2e%2e%5csecret.txt".into(),
        "/.well-known/acme-challenge/..%252f..%252fsecret.txt".into(),
        "/.well-known/acme-challenge/%252e%252e%252fsecret.txt".into(),
        "/.well-known/acme-challenge/..;/..;/secret.txt".into(),
        "/.well-known/acme-challenge/%c0%ae%c0%ae/secret.txt".into(),
        "/.well-known/acme-challenge/tok_EN-123%00.txt".into(),
        "/.well-known/acme-challenge/tok_EN-123%00".into(),
        "/.well-known/acme-challenge//etc/passwd".into(),
        "/.well-known/acme-challenge/%2fetc%2fpasswd".into(),
        "/.well-known/acme-challenge/../secret.txt".into(),
        "/.well-known/acme-challenge/..".into(),
        "/.well-known/acme-challenge/.".into(),
        "/.well-known/acme-challenge/~".into(),
        format!("/.well-known/acme-challenge/{long}"),
        format!("/.well-known/acme-challenge/{huge}"),
    ];
    for target in &targets {
        let req = format!("GET {target} HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n");
        let (raw, _) = exchange(http, req.as_bytes(), Duration::from_secs(5)).await;
        let status = status_of(&raw);
        // 404 (not a token), 400 (unsafe path), 301 (not a challenge path at all once
        // normalised: the redirect names the path and serves nothing), 431 (over the header
        // limit).
        assert!(matches!(status, 301 | 400 | 404 | 431), "{target}: {raw:?}");
        assert!(!raw.contains("TOP-SECRET"), "{target} leaked: {raw:?}");
        assert!(!raw.contains("root:"), "{target} leaked: {raw:?}");
    }
    // A raw NUL or control byte in the request target.
    for req in [
        &b"GET /.well-known/acme-challenge/tok_EN-123\0 HTTP/1.1\r\nHost: galion.app\r\n\r\n"[..],
        b"GET /.well-known/acme-challenge/..\x01/secret.txt HTTP/1.1\r\nHost: galion.app\r\n\r\n",
    ] {
        let (raw, closed) = exchange(http, req, Duration::from_secs(5)).await;
        assert_refused(&raw, closed, 400, "control byte in the target");
        assert!(!raw.contains("TOP-SECRET"));
    }
    // The real token is served.
    let r = client()
        .get(format!(
            "http://{http}/.well-known/acme-challenge/tok_EN-123"
        ))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "tok_EN-123.thumb");
    let report = by.stop().await;
    assert_served(&report, "acme escapes", 1);
    assert!(app.requests().iter().all(|r| r.uri == "/ok"));
}

#[test]
fn the_new_downstream_settings_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let text = "[listeners]\nhttp_proxy = [\"127.0.0.1:1\"]\n\n[downstream]\n{LINES}\n\n\
                [upstreams.web]\nbackends = [\"127.0.0.1:3001\"]\n\n[[sites]]\nhosts = \
                [\"example.test\"]\nroutes = [{ path = \"/\", upstream = \"web\" }]\n";
    let check = |lines: &str| {
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text.replace("{LINES}", lines)).unwrap();
        let out = std::process::Command::new(bin!())
            .args(["check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), said)
    };
    let (ok, err) = check("send_timeout = \"30s\"\nmax_connections_per_peer = 64");
    assert!(ok, "{err}");
    let (ok, err) = check("send_timeout = \"0s\"");
    assert!(!ok, "{err}");
    assert!(
        err.contains("downstream.send_timeout = \"0s\"") && err.contains("greater than zero"),
        "{err}"
    );
    let (ok, err) = check("max_connections_per_peer = -1");
    assert!(!ok, "{err}");
    assert!(err.contains("downstream.max_connections_per_peer"), "{err}");
}
