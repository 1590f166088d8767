//! Request limits against the real proxy: body size (413, declared and streamed), header size
//! and count (431), slow headers (408) without starving other clients, the port-80 role (301,
//! 421) and ACME webroot serving that never leaves the webroot.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TWO_MIB: usize = 2 << 20;

/// One site, `galion.app`, whose `/upload/` route allows 4 MiB and whose other paths keep the
/// default 1 MiB limit of `base_config`.
fn one_site(small: &Origin, big: &Origin, tls: Option<(&Path, &Path)>, extra: &str) -> String {
    let tls_line = match tls {
        Some((c, k)) => format!("tls = {{ cert = {c:?}, key = {k:?} }}"),
        None => String::new(),
    };
    let body = format!(
        r#"
{extra}

[upstreams.small]
backends = ["{}"]
[upstreams.big]
backends = ["{}"]

[[sites]]
name = "galion.app"
hosts = ["galion.app", "www.galion.app"]
{tls_line}
routes = [
  {{ path = "/upload/", upstream = "big", max_body_size = "4MB" }},
  {{ path = "/", upstream = "small" }},
]
"#,
        small.addr, big.addr
    );
    base_config(tls.is_some(), &body)
}

/// The body of a raw HTTP/1 response (everything after the head).
fn raw_body(raw: &str) -> &str {
    raw.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn assert_raw_security_headers(raw: &str, what: &str) {
    assert_eq!(
        raw_header(raw, "x-content-type-options").as_deref(),
        Some("nosniff"),
        "{what}: {raw}"
    );
    assert_eq!(
        raw_header(raw, "x-frame-options").as_deref(),
        Some("SAMEORIGIN"),
        "{what}: {raw}"
    );
    assert_eq!(
        raw_header(raw, "referrer-policy").as_deref(),
        Some("strict-origin-when-cross-origin"),
        "{what}: {raw}"
    );
}

/// How reading a response ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Eof,
    Error(std::io::ErrorKind),
    Timeout,
}

/// Reads from `rd` until EOF, an error or `limit`; returns what came and how it ended.
/// `first_byte` is set as soon as anything arrives.
async fn read_all<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    limit: Duration,
    first_byte: Option<&AtomicBool>,
) -> (String, End) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    let end = loop {
        match tokio::time::timeout_at(deadline, rd.read(&mut buf)).await {
            Err(_) => break End::Timeout,
            Ok(Ok(0)) => break End::Eof,
            Ok(Ok(n)) => {
                out.extend_from_slice(&buf[..n]);
                if let Some(f) = first_byte {
                    f.store(true, Ordering::SeqCst);
                }
            }
            Ok(Err(e)) => break End::Error(e.kind()),
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_is_refused_before_the_origin() {
    let small = origin("small").await;
    let big = origin("big").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &one_site(&small, &big, None, ""));

    // 2 MiB with a Content-Length on the default 1 MiB route, the body sent while the
    // response is read: 413 from the head, and the connection ends.
    let (resp, end, sent) = upload(
        proxy.plain_addr(),
        &format!(
            "POST /api/upload HTTP/1.1\r\nHost: galion.app\r\nContent-Length: {TWO_MIB}\r\n\r\n"
        ),
        TWO_MIB,
        false,
    )
    .await;
    assert_eq!(status_of(&resp), 413, "{end:?} after {sent} bytes: {resp}");
    assert_raw_security_headers(&resp, "413");
    assert!(raw_header(&resp, "x-request-id").is_some(), "{resp}");
    assert_eq!(raw_header(&resp, "connection").as_deref(), Some("close"));
    assert_eq!(raw_body(&resp), "request body too large\n");
    assert_ne!(end, End::Timeout, "the connection is closed after the 413");

    // The same, head only: the answer comes without a byte of body being sent.
    let raw = raw_exchange(
        proxy.plain_addr(),
        format!(
            "POST /api/upload HTTP/1.1\r\nHost: galion.app\r\nContent-Length: {TWO_MIB}\r\n\r\n"
        )
        .as_bytes(),
        Duration::from_secs(5),
    );
    assert_eq!(status_of(&raw), 413, "{raw}");
    assert_raw_security_headers(&raw, "413 head only");
    assert!(small.requests().is_empty(), "{:?}", small.requests());

    // Exactly at the limit is fine.
    let c = client();
    let r = c
        .post(format!("http://{}/api/exact", proxy.plain_addr()))
        .header("host", "galion.app")
        .body(vec![b'e'; 1 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["body_len"], 1 << 20);
    let seen = small.requests();
    assert_eq!(seen.len(), 1, "only the request at the limit: {seen:?}");
    assert_eq!(seen[0].uri, "/api/exact");

    // A route with max_body_size = "4MB" takes the same 2 MiB body.
    let r = c
        .post(format!("http://{}/upload/file", proxy.plain_addr()))
        .header("host", "galion.app")
        .body(vec![b'b'; TWO_MIB])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["service"], "big");
    assert_eq!(v["body_len"], TWO_MIB);
    assert_eq!(big.requests().len(), 1);
}

/// An ordinary client (reqwest/hyper) that is still writing its body when the 413 comes must
/// get the 413, not a broken pipe: the proxy lingers (reads and discards, bounded) before closing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_still_uploading_gets_the_413_not_a_reset() {
    let small = origin("small").await;
    let big = origin("big").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &one_site(&small, &big, None, ""));
    let c = client();
    let mut outcomes = Vec::new();
    for _ in 0..10 {
        let r = c
            .post(format!("http://{}/api/upload", proxy.plain_addr()))
            .header("host", "galion.app")
            .body(vec![b'b'; TWO_MIB])
            .send()
            .await;
        outcomes.push(match r {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => format!("{e:?}"),
        });
    }
    assert!(
        outcomes.iter().all(|o| o == "413"),
        "every upload must see the 413: {outcomes:#?}"
    );
    assert!(small.requests().is_empty());
}

/// Sends `head`, then `total` bytes of body in 64 KiB pieces (chunk-framed when `chunked`)
/// while reading the response; returns the response, how reading ended, and how many body
/// bytes the writer got out.
async fn upload(addr: SocketAddr, head: &str, total: usize, chunked: bool) -> (String, End, usize) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = head.to_string();
    // The writer hands its half back instead of dropping it: dropping it would half-close the
    // connection, which Pingora takes for a client that went away.
    let writer = tokio::spawn(async move {
        let mut sent = 0usize;
        if wr.write_all(head.as_bytes()).await.is_err() {
            return (sent, wr);
        }
        let chunk = vec![b'c'; 64 * 1024];
        while sent < total {
            let n = chunk.len().min(total - sent);
            let mut frame = Vec::with_capacity(n + 16);
            if chunked {
                frame.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            }
            frame.extend_from_slice(&chunk[..n]);
            if chunked {
                frame.extend_from_slice(b"\r\n");
            }
            if wr.write_all(&frame).await.is_err() {
                return (sent, wr);
            }
            sent += n;
        }
        if chunked {
            let _ = wr.write_all(b"0\r\n\r\n").await;
        }
        (sent, wr)
    });
    let (resp, end) = read_all(&mut rd, Duration::from_secs(10), None).await;
    let sent = match tokio::time::timeout(Duration::from_secs(5), writer).await {
        Ok(r) => r.unwrap().0,
        Err(_) => usize::MAX,
    };
    (resp, end, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_body_over_the_limit_is_cut_off_with_413() {
    let small = origin("small").await;
    let big = origin("big").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &one_site(&small, &big, None, ""));

    let (resp, end, sent) = upload(
        proxy.plain_addr(),
        "POST /api/stream HTTP/1.1\r\nHost: galion.app\r\nTransfer-Encoding: chunked\r\n\r\n",
        TWO_MIB,
        true,
    )
    .await;
    assert_eq!(status_of(&resp), 413, "{end:?} after {sent} bytes: {resp}");
    assert_raw_security_headers(&resp, "streamed 413");
    assert_eq!(raw_header(&resp, "connection").as_deref(), Some("close"));
    assert_eq!(raw_body(&resp), "request body too large\n");
    assert_ne!(end, End::Timeout, "the connection is closed after the 413");

    // The origin may have seen the start of the body, never all of it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for r in small.requests() {
        assert!(r.body_len < TWO_MIB, "origin got {} bytes", r.body_len);
    }

    // A streamed body under the limit passes whole; on the 4 MiB route 2 MiB passes.
    let (resp, end, sent) = upload(
        proxy.plain_addr(),
        "POST /upload/stream HTTP/1.1\r\nHost: galion.app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        TWO_MIB,        true,
    )
    .await;
    assert_eq!(
        status_of(&resp),
        200,
        "{end:?} after {sent} bytes: {resp}\norigin saw {:?}\n{}",
        big.requests()
            .iter()
            .map(|r| r.body_len)
            .collect::<Vec<_>>(),
        proxy.stderr()
    );
    let v: serde_json::Value = serde_json::from_str(raw_body(&resp)).unwrap();
    assert_eq!(v["body_len"], TWO_MIB);
    let (resp, end, sent) = upload(
        proxy.plain_addr(),
        "POST /api/stream HTTP/1.1\r\nHost: galion.app\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        512 * 1024,        true,
    )
    .await;
    assert_eq!(
        status_of(&resp),
        200,
        "{end:?} after {sent} bytes: {resp}\norigin saw {:?}\n{}",
        small
            .requests()
            .iter()
            .map(|r| r.body_len)
            .collect::<Vec<_>>(),
        proxy.stderr()
    );
    let v: serde_json::Value = serde_json::from_str(raw_body(&resp)).unwrap();
    assert_eq!(v["body_len"], 512 * 1024);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_header_blocks_get_431() {
    let small = origin("small").await;
    let big = origin("big").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &one_site(&small, &big, None, ""));

    // One 20 KB header: over max_header_bytes = 16k.
    let req = format!(
        "GET /api/x HTTP/1.1\r\nHost: galion.app\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    let raw = raw_exchange(proxy.plain_addr(), req.as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&raw), 431, "{raw}");
    assert_eq!(
        raw_header(&raw, "x-content-type-options").as_deref(),
        Some("nosniff"),
        "{raw}"
    );
    assert_eq!(raw_header(&raw, "connection").as_deref(), Some("close"));

    // 60 small headers: over max_header_count = 50.
    let many: String = (0..60).map(|i| format!("X-H{i}: v{i}\r\n")).collect();
    let req = format!("GET /api/x HTTP/1.1\r\nHost: galion.app\r\n{many}Connection: close\r\n\r\n");
    assert!(req.len() < 2048, "small in bytes, only the count is over");
    let raw = raw_exchange(proxy.plain_addr(), req.as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&raw), 431, "{raw}");
    assert_eq!(
        raw_header(&raw, "x-content-type-options").as_deref(),
        Some("nosniff"),
        "{raw}"
    );
    assert!(small.requests().is_empty(), "{:?}", small.requests());

    // A 10 KB header and 40 headers are under the limits and served.
    let forty: String = (0..40).map(|i| format!("X-H{i}: v{i}\r\n")).collect();
    let req = format!(
        "GET /api/ok HTTP/1.1\r\nHost: galion.app\r\nX-Big: {}\r\n{forty}Connection: close\r\n\r\n",
        "a".repeat(10 * 1024)
    );
    let raw = raw_exchange(proxy.plain_addr(), req.as_bytes(), Duration::from_secs(5));
    assert_eq!(status_of(&raw), 200, "{raw}");
    let seen = small.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].header("x-big").map(str::len), Some(10 * 1024));
    assert_eq!(seen[0].header("x-h39"), Some("v39"));
}

/// A client that sends a request line and Host, then one byte of a header every 500 ms,
/// never finishing the head. Returns the response, how it ended and when.
async fn slow_client(addr: SocketAddr) -> (String, End, Duration) {
    let start = Instant::now();
    let s = TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let answered = Arc::new(AtomicBool::new(false));
    let stop = answered.clone();
    let writer = tokio::spawn(async move {
        if wr
            .write_all(b"GET /api/slow HTTP/1.1\r\nHost: galion.app\r\n")
            .await
            .is_err()
        {
            return;
        }
        // Offset by 250 ms so no byte lands right on the proxy's 2 s deadline.
        tokio::time::sleep(Duration::from_millis(250)).await;
        for b in b"X-Dribble: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
            .iter()
            .cycle()
        {
            if stop.load(Ordering::SeqCst) || wr.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
    let (resp, end) = read_all(&mut rd, Duration::from_secs(4), Some(&answered)).await;
    let elapsed = start.elapsed();
    answered.store(true, Ordering::SeqCst);
    writer.abort();
    (resp, end, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_get_408_and_do_not_starve_others() {
    let small = origin("small").await;
    let big = origin("big").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &one_site(&small, &big, None, ""));
    let addr = proxy.plain_addr();

    let slow: Vec<_> = (0..50).map(|_| tokio::spawn(slow_client(addr))).collect();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // While 50 clients dribble, fresh clients on fresh connections are served promptly.
    for i in 0..10 {
        let t = Instant::now();
        let r = client()
            .get(format!("http://{addr}/api/normal?i={i}"))
            .header("host", "galion.app")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["service"], "small");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "request {i} took {:?}",
            t.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(120)).await;
    }

    for (i, h) in slow.into_iter().enumerate() {
        let (resp, end, elapsed) = h.await.unwrap();
        assert!(
            resp.starts_with("HTTP/1.1 408"),
            "slow client {i}: {resp:?}"
        );
        assert_raw_security_headers(&resp, "408");
        assert_eq!(raw_body(&resp), "request header timeout\n");
        assert_eq!(end, End::Eof, "slow client {i}: closed after the 408");
        assert!(
            elapsed >= Duration::from_millis(1800) && elapsed < Duration::from_secs(4),
            "slow client {i}: 408 after {elapsed:?}, expected about 2s"
        );
    }
    let seen = small.requests();
    assert_eq!(seen.len(), 10, "no slow request reached the origin");
    assert!(seen.iter().all(|r| r.uri.starts_with("/api/normal")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_80_role_redirects_known_hosts_and_refuses_others() {
    let small = origin("small").await;
    let big = origin("big").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app", "www.galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &one_site(&small, &big, Some((&c, &k)), ""),
    );
    let http = proxy.http_addr();
    let cl = client();

    let r = cl
        .get(format!("http://{http}/login?next=/x"))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://galion.app/login?next=/x");
    assert_security_headers(r.headers(), "301");

    // The port is dropped and the host lower-cased; www keeps its name.
    let r = cl
        .get(format!("http://{http}/a/b?c=d&e=f"))
        .header("host", "WWW.Galion.App:80")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(
        r.headers()["location"],
        "https://www.galion.app/a/b?c=d&e=f"
    );

    // A POST is redirected too and never proxied.
    let r = cl
        .post(format!("http://{http}/api/upload"))
        .header("host", "galion.app")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 301);
    assert_eq!(r.headers()["location"], "https://galion.app/api/upload");

    for host in ["evil.example", "127.0.0.1", "galion.app.evil.example"] {
        let r = cl
            .get(format!("http://{http}/login"))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 421, "{host}");
        assert!(!r.headers().contains_key("location"), "{host}");
        assert_eq!(r.headers()["x-content-type-options"], "nosniff", "{host}");
    }
    assert!(small.requests().is_empty(), "{:?}", small.requests());
    assert!(big.requests().is_empty(), "{:?}", big.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acme_challenges_are_served_and_never_escape_the_webroot() {
    let small = origin("small").await;
    let big = origin("big").await;
    let dir = tempfile::tempdir().unwrap();
    let challenges = dir.path().join("webroot/.well-known/acme-challenge");
    std::fs::create_dir_all(&challenges).unwrap();
    let token_body = "tok_EN-123.thumbprint-Zx9";
    std::fs::write(challenges.join("tok_EN-123"), token_body).unwrap();
    let secret = "TOP-SECRET-do-not-serve-4b1d";
    std::fs::write(dir.path().join("secret.txt"), secret).unwrap();
    std::os::unix::fs::symlink(
        dir.path().join("secret.txt"),
        challenges.join("link_secret"),
    )
    .unwrap();
    std::fs::create_dir(challenges.join("a_directory")).unwrap();
    let cert = gen_cert(&["galion.app", "www.galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &one_site(
            &small,
            &big,
            Some((&c, &k)),
            "[acme]\nwebroot = \"{dir}/webroot\"",
        ),
    );
    let http = proxy.http_addr();
    let cl = client();

    let r = cl
        .get(format!(
            "http://{http}/.well-known/acme-challenge/tok_EN-123"
        ))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_security_headers(r.headers(), "challenge");
    assert_eq!(r.text().await.unwrap(), token_body);

    for target in [
        "/.well-known/acme-challenge/../../secret.txt",
        "/.well-known/acme-challenge/..%2f..%2fsecret.txt",
        "/.well-known/acme-challenge/%2e%2e/%2e%2e/secret.txt",
        "/.well-known/acme-challenge/%2E%2E%2F%2E%2E%2Fsecret.txt",
        "/.well-known/acme-challenge/link_secret",
        "/.well-known/acme-challenge/a_directory",
        "/.well-known/acme-challenge/",
        "/.well-known/acme-challenge/missing_token",
    ] {
        let req = format!("GET {target} HTTP/1.1\r\nHost: galion.app\r\nConnection: close\r\n\r\n");
        let raw = raw_exchange(http, req.as_bytes(), Duration::from_secs(5));
        assert!(matches!(status_of(&raw), 400 | 404), "{target}: {raw}");
        assert!(!raw.contains(secret), "{target} leaked the secret: {raw}");
        assert!(!raw.contains("TOP-SECRET"), "{target}: {raw}");
    }
    let r = cl
        .get(format!(
            "http://{http}/.well-known/acme-challenge/missing_token"
        ))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_security_headers(r.headers(), "404");

    // The symlink really points at the secret: only the proxy's check keeps it out.
    assert_eq!(
        std::fs::read_to_string(challenges.join("link_secret")).unwrap(),
        secret
    );
    assert!(small.requests().is_empty() && big.requests().is_empty());
}
