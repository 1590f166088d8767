//! Hostile HTTP/2 clients against the real proxy over TLS (ALPN h2): rapid reset (streams
//! opened and cancelled in a loop), SETTINGS and PING floods written as raw frames, more
//! streams than `h2_max_concurrent_streams`, slow readers that never open their flow-control
//! window, and a foreign `:authority`. Each attack is bounded in count and time; the proxy must
//! stay up with bounded memory while a well-behaved client on fresh connections keeps being
//! served.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::h2raw::*;
use galion_edge_tests::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

struct Setup {
    app: Origin,
    cert: TestCert,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

async fn setup(extra: &str) -> Setup {
    setup_with(extra, "").await
}

/// [`setup`] with `downstream` lines added to `[downstream]`.
async fn setup_with(extra: &str, downstream: &str) -> Setup {
    let app = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let body = format!(
        r#"
{extra}

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
    );
    let text = base_config(true, &body).replace(
        "max_body_size = \"1MB\"\n",
        &format!("max_body_size = \"1MB\"\n{downstream}\n"),
    );
    let proxy = Proxy::start(bin!(), dir.path(), &text);
    Setup {
        app,
        cert,
        proxy,
        _dir: dir,
    }
}

/// A well-behaved HTTP/2 client: a new TLS connection for every request.
fn h2_bystander(s: &Setup) -> Bystander {
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(s.cert.cert_pem.as_bytes()).unwrap())
        .resolve("galion.app", s.proxy.https_addr())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    Bystander::start(
        client,
        format!("https://galion.app:{}/ok", s.proxy.ports.https),
        None,
        Duration::from_millis(50),
    )
}

fn assert_served(report: &BystanderReport, what: &str) {
    assert!(
        report.failed.is_empty(),
        "{what}: the well-behaved client failed: {:?}",
        report.failed
    );
    assert!(
        report.ok >= 5,
        "{what}: the well-behaved client got only {} answers",
        report.ok
    );
}

/// What the server sent, as far as the rapid-reset client cares.
enum Event {
    PingAck,
    GoAway(u32),
    Closed,
}

/// What a rapid-reset run did.
#[derive(Debug)]
struct RapidReset {
    /// Streams opened and cancelled (written).
    written: usize,
    /// Of those, streams the server processed (a PING behind their batch was acknowledged).
    processed: usize,
    connections: usize,
    /// GOAWAY error codes received, with counts.
    goaways: std::collections::BTreeMap<u32, usize>,
    elapsed: Duration,
}

/// HEADERS then RST_STREAM(CANCEL), stream after stream, written as raw frames in batches of
/// `batch`, each batch followed by a PING whose ACK shows the server processed it; on one
/// connection until the server sends GOAWAY or closes, then on a new one; `streams` in all, or
/// 60 s.
async fn rapid_reset(
    addr: SocketAddr,
    cert: &TestCert,
    batch: usize,
    streams: usize,
) -> RapidReset {
    let start = Instant::now();
    let mut run = RapidReset {
        written: 0,
        processed: 0,
        connections: 0,
        goaways: std::collections::BTreeMap::new(),
        elapsed: Duration::ZERO,
    };
    while run.written < streams && start.elapsed() < Duration::from_secs(60) {
        let tls = tls_h2(addr, cert).await;
        run.connections += 1;
        let (mut rd, mut wr) = tokio::io::split(tls);
        let mut out = PREFACE.to_vec();
        out.extend(frame(SETTINGS, 0, 0, &[]));
        wr.write_all(&out).await.unwrap();
        // The reader reports PING ACKs, GOAWAY (with its code) and the end of the connection.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let reader = tokio::spawn(async move {
            while let Some((kind, flags, _, payload)) = read_frame(&mut rd).await {
                if kind == PING && flags & ACK != 0 {
                    let _ = tx.send(Event::PingAck);
                }
                if kind == GOAWAY && payload.len() >= 8 {
                    let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                    let _ = tx.send(Event::GoAway(code));
                    return;
                }
            }
            let _ = tx.send(Event::Closed);
        });
        let mut id = 1u32;
        while run.written < streams && start.elapsed() < Duration::from_secs(60) {
            let mut out = Vec::new();
            for _ in 0..batch {
                let mut headers = get_headers(id, "galion.app", &format!("/rr/{}", run.written));
                headers[4] = 0x4; // END_HEADERS only: the request is still open
                out.extend(headers);
                out.extend(frame(RST_STREAM, 0, id, &0x8u32.to_be_bytes())); // CANCEL
                id += 2;
            }
            out.extend(frame(PING, 0, 0, b"rapidrst"));
            if !matches!(
                tokio::time::timeout(Duration::from_secs(5), wr.write_all(&out)).await,
                Ok(Ok(()))
            ) {
                break;
            }
            run.written += batch;
            match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                Ok(Some(Event::PingAck)) => run.processed += batch,
                Ok(Some(Event::GoAway(code))) => {
                    *run.goaways.entry(code).or_insert(0) += 1;
                    break;
                }
                _ => break,
            }
        }
        reader.abort();
    }
    run.elapsed = start.elapsed();
    run
}

fn reached(app: &Origin, prefix: &str) -> usize {
    app.requests()
        .iter()
        .filter(|r| r.uri.starts_with(prefix))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rapid_reset_keeps_the_proxy_up_and_bounded() {
    let s = setup("").await;
    let addr = s.proxy.https_addr();
    let rss_before = rss_kib(s.proxy.pid());
    let by = h2_bystander(&s);

    // Bursts of 50 resets: more than the 20 pending-accept resets allowed, so every
    // connection ends with GOAWAY(ENHANCE_YOUR_CALM) after its first burst.
    let burst = rapid_reset(addr, &s.cert, 50, 2_000).await;
    // Paced in batches of 10 (below that limit): the attack a client can keep up.
    let paced = rapid_reset(addr, &s.cert, 10, 20_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = by.stop().await;
    let rss_after = rss_kib(s.proxy.pid());
    let rss_peak = peak_rss_kib(s.proxy.pid());
    let reached = reached(&s.app, "/rr/");
    eprintln!(
        "rapid reset: bursts of 50: {burst:?}; paced by 10: {paced:?}; {reached} cancelled \
         streams reached the origin in all; RSS before {rss_before} KiB, after {rss_after} KiB, \
         peak {rss_peak} KiB; bystander {} ok, slowest {:?}",
        report.ok, report.slowest
    );
    assert_eq!(burst.written, 2_000, "{burst:?}");
    assert_eq!(burst.processed, 0, "no burst was accepted: {burst:?}");
    assert_eq!(
        burst.goaways.get(&0xb),
        Some(&burst.connections),
        "ENHANCE_YOUR_CALM: {burst:?}"
    );
    assert_eq!(
        paced.written, 20_000,
        "the attack ran to its end within 60 s: {paced:?}"
    );
    assert_served(&report, "rapid reset");
    assert!(
        rss_peak < rss_before + 128 * 1024,
        "rapid reset grew the proxy from {rss_before} to {rss_peak} KiB"
    );
    // Still up: a new request is answered.
    let c = tls_client(&[&s.cert], &["galion.app"], addr);
    let r = c
        .get(format!("https://galion.app:{}/after", s.proxy.ports.https))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), http::Version::HTTP_2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_bounds_what_a_paced_rapid_reset_sends_upstream() {
    // Paced resets each become a request upstream; the per-client rate limit is what bounds
    // them (the bystander's path is exempt, as a health check would be).
    let s = setup(
        r#"
[limits]
window = "60s"
exempt_paths = ["/ok"]
[limits.classes.default]
rate = 500
burst = 0
"#,
    )
    .await;
    let by = h2_bystander(&s);
    let paced = rapid_reset(s.proxy.https_addr(), &s.cert, 10, 5_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let report = by.stop().await;
    let reached = reached(&s.app, "/rr/");
    eprintln!("rapid reset under a 500/min rate limit: {paced:?}; {reached} reached the origin");
    assert_eq!(paced.written, 5_000, "{paced:?}");
    assert!(
        reached <= 500,
        "{reached} cancelled streams reached the origin; the rate is 500"
    );
    assert_served(&report, "rapid reset, rate-limited");
}

/// Writes `count` copies of `one` in batches for at most `limit`, while a reader counts the
/// frames the server sends back (or none, if `read` is false). Returns (frames written,
/// frames of `count_kind` read with the ACK flag, whether a GOAWAY came, whether the server
/// closed the connection).
async fn flood(
    addr: SocketAddr,
    cert: &TestCert,
    one: Vec<u8>,
    count: usize,
    read: bool,
    count_kind: u8,
    limit: Duration,
) -> (usize, usize, bool, bool) {
    let tls = tls_h2(addr, cert).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[]));
    wr.write_all(&start).await.unwrap();
    let reader = tokio::spawn(async move {
        let (mut acks, mut goaway) = (0, false);
        if !read {
            return (acks, goaway);
        }
        while let Some((kind, flags, _, _)) = read_frame(&mut rd).await {
            if kind == count_kind && flags & ACK != 0 {
                acks += 1;
            }
            if kind == GOAWAY {
                goaway = true;
            }
        }
        (acks, goaway)
    });
    let batch: Vec<u8> = one.iter().copied().cycle().take(one.len() * 1000).collect();
    let deadline = Instant::now() + limit;
    let mut written = 0;
    let mut closed = false;
    while written < count && Instant::now() < deadline {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, wr.write_all(&batch)).await {
            Ok(Ok(())) => written += 1000,
            Ok(Err(_)) => {
                closed = true;
                break;
            }
            Err(_) => break,
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), wr.flush()).await;
    let (acks, goaway) = if read {
        // Give the server a moment to answer what it read, then stop reading.
        tokio::time::sleep(Duration::from_millis(500)).await;
        reader.abort();
        match reader.await {
            Ok(r) => r,
            Err(_) => (usize::MAX, false),
        }
    } else {
        reader.await.unwrap()
    };
    (written, acks, goaway, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_ping_floods_keep_the_proxy_up_and_bounded() {
    let s = setup("").await;
    let addr = s.proxy.https_addr();
    let rss_before = rss_kib(s.proxy.pid());
    let by = h2_bystander(&s);

    // SETTINGS_INITIAL_WINDOW_SIZE = 65535, 100,000 times, reading the ACKs.
    let settings = frame(SETTINGS, 0, 0, &[0x00, 0x04, 0x00, 0x00, 0xff, 0xff]);
    let (s_written, _, s_goaway, s_closed) = flood(
        addr,
        &s.cert,
        settings.clone(),
        100_000,
        true,
        SETTINGS,
        Duration::from_secs(20),
    )
    .await;
    // The same without ever reading: TCP back-pressure must stop the server, not its memory.
    let (s2_written, _, _, s2_closed) = flood(
        addr,
        &s.cert,
        settings,
        100_000,
        false,
        SETTINGS,
        Duration::from_secs(10),
    )
    .await;
    let rss_settings = peak_rss_kib(s.proxy.pid());
    let ping = frame(PING, 0, 0, b"flooding");
    let (p_written, _, p_goaway, p_closed) = flood(
        addr,
        &s.cert,
        ping.clone(),
        200_000,
        true,
        PING,
        Duration::from_secs(20),
    )
    .await;
    let (p2_written, _, _, p2_closed) = flood(
        addr,
        &s.cert,
        ping,
        200_000,
        false,
        PING,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let report = by.stop().await;
    let rss_peak = peak_rss_kib(s.proxy.pid());
    eprintln!(
        "floods: SETTINGS read {s_written} written (goaway {s_goaway}, closed {s_closed}), \
         unread {s2_written} (closed {s2_closed}); PING read {p_written} (goaway {p_goaway}, \
         closed {p_closed}), unread {p2_written} (closed {p2_closed}); RSS before {rss_before} \
         KiB, peak after SETTINGS {rss_settings} KiB, peak {rss_peak} KiB; bystander {} ok, \
         slowest {:?}",
        report.ok, report.slowest
    );
    assert_served(&report, "SETTINGS/PING floods");
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "floods grew the proxy from {rss_before} to {rss_peak} KiB"
    );
    let c = tls_client(&[&s.cert], &["galion.app"], addr);
    let r = c
        .get(format!("https://galion.app:{}/after", s.proxy.ports.https))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_beyond_the_limit_are_refused_and_never_reach_the_origin() {
    let s = setup("").await;
    let addr = s.proxy.https_addr();
    let by = h2_bystander(&s);

    let tls = tls_h2(addr, &s.cert).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    // 300 requests at once, each held 1.5 s by the origin; the default limit is 128.
    const OPENED: u32 = 300;
    for i in 0..OPENED {
        out.extend(get_headers(2 * i + 1, "galion.app", "/many/slow?ms=1500"));
    }
    wr.write_all(&out).await.unwrap();
    let mut answered = std::collections::BTreeSet::new();
    let mut refused = std::collections::BTreeSet::new();
    let mut other_resets = Vec::new();
    let mut goaway = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while answered.len() + refused.len() + other_resets.len() < OPENED as usize
        && Instant::now() < deadline
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(Some((kind, flags, stream, payload))) =
            tokio::time::timeout(left, read_frame(&mut rd)).await
        else {
            break;
        };
        match kind {
            SETTINGS if flags & ACK == 0 => {
                wr.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap()
            }
            HEADERS => {
                answered.insert(stream);
            }
            DATA => {}
            RST_STREAM => {
                let code = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
                if code == 0x7 {
                    refused.insert(stream);
                } else {
                    other_resets.push((stream, code));
                }
            }
            GOAWAY => {
                goaway = Some(u32::from_be_bytes([
                    payload[4], payload[5], payload[6], payload[7],
                ]));
                break;
            }
            _ => {}
        }
    }
    let report = by.stop().await;
    let reached = s
        .app
        .requests()
        .iter()
        .filter(|r| r.uri.starts_with("/many/"))
        .count();
    eprintln!(
        "concurrent streams: {OPENED} opened, {} answered, {} refused (REFUSED_STREAM), other \
         resets {other_resets:?}, GOAWAY {goaway:?}, {reached} reached the origin",
        answered.len(),
        refused.len()
    );
    assert_served(&report, "too many streams");
    assert!(
        reached <= 128,
        "{reached} streams reached the origin; the limit is 128"
    );
    assert!(
        answered.len() <= 128 && answered.len() + refused.len() == OPENED as usize,
        "answered {}, refused {}, other {other_resets:?}, goaway {goaway:?}",
        answered.len(),
        refused.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_h2_readers_are_bounded_by_flow_control_and_timed_out() {
    let s = setup_with("", "send_timeout = \"3s\"").await;
    let addr = s.proxy.https_addr();
    let rss_before = rss_kib(s.proxy.pid());

    // Ten streams on one connection ask for 32 MiB each; the client never sends WINDOW_UPDATE,
    // so flow control lets the proxy send 64 KiB in all.
    const SIZE: usize = 32 << 20;
    let tls = tls_h2(addr, &s.cert).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    for i in 0..10u32 {
        out.extend(get_headers(
            2 * i + 1,
            "galion.app",
            &format!("/big/bytes?n={SIZE}&i={i}"),
        ));
    }
    wr.write_all(&out).await.unwrap();
    let by = h2_bystander(&s);
    let start = Instant::now();
    let mut data = 0usize;
    let mut ended = std::collections::BTreeSet::new();
    let mut goaway = false;
    let mut rss_stalled = 0;
    while ended.len() < 10 && start.elapsed() < Duration::from_secs(20) {
        if rss_stalled == 0 && start.elapsed() > Duration::from_secs(2) {
            rss_stalled = rss_kib(s.proxy.pid());
        }
        let Ok(Some((kind, flags, stream, payload))) =
            tokio::time::timeout(Duration::from_millis(500), read_frame(&mut rd)).await
        else {
            continue;
        };
        match kind {
            SETTINGS if flags & ACK == 0 => {
                wr.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap()
            }
            DATA => {
                data += payload.len();
                if flags & 0x1 != 0 {
                    ended.insert(stream);
                }
            }
            RST_STREAM => {
                ended.insert(stream);
            }
            GOAWAY => {
                goaway = true;
                break;
            }
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    let report = by.stop().await;
    let rss_peak = peak_rss_kib(s.proxy.pid());
    eprintln!(
        "slow h2 read: {data} bytes of DATA received for 10 x {} MiB; {} streams ended by the \
         proxy, GOAWAY {goaway}, after {elapsed:?}; RSS before {rss_before} KiB, stalled \
         {rss_stalled} KiB, peak {rss_peak} KiB; bystander {} ok",
        SIZE >> 20,
        ended.len(),
        report.ok
    );
    assert!(
        data <= 65_535,
        "{data} bytes sent past the flow-control window"
    );
    assert!(
        goaway || ended.len() == 10,
        "streams still open after {elapsed:?}: {ended:?}"
    );
    // Ended by send_timeout (3 s), not before.
    assert!(
        elapsed >= Duration::from_millis(2500),
        "ended after {elapsed:?}"
    );
    assert_served(&report, "slow h2 readers");
    assert!(
        rss_peak < rss_before + 64 * 1024,
        "10 stalled 32 MiB h2 downloads grew the proxy from {rss_before} to {rss_peak} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_authority_over_h2_is_refused() {
    let s = setup("").await;
    let tls = tls_h2(s.proxy.https_addr(), &s.cert).await;
    let (client, conn) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(conn);
    for uri in [
        "https://evil.example/p",
        "https://galion.app.evil.example/p",
        "https://127.0.0.1/p",
    ] {
        let mut c = client.clone().ready().await.unwrap();
        let req = http::Request::get(uri).body(()).unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(5), resp)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(resp.status(), 421, "{uri}");
        assert_eq!(resp.headers()["x-content-type-options"], "nosniff", "{uri}");
    }
    driver.abort();
    assert!(s.app.requests().is_empty(), "{:?}", s.app.requests());
}
