//! Failing origins and disks through the real proxy.
//!
//! - An origin that dies mid-response (Content-Length or chunked, HTTP/1.1 or h2 to the client):
//!   the client sees the response aborted, never a complete-looking short body, and nothing is
//!   cached.
//! - An origin that answers garbage (status 999, random bytes, no status line, a huge header,
//!   nothing): 502 with the proxy's error page, without waiting for a timeout.
//! - The cache disk fills up (a real 4 MiB tmpfs, ENOSPC), becomes read-only (`remount,ro`,
//!   EROFS), hits the process's file-size limit (`prlimit --fsize`, EFBIG: the same fault without
//!   mount privileges), or loses its directory (`rm -rf`) while serving: every response is still
//!   served (uncached), the errors are counted in `galion_edge_cache_disk_errors_total` and
//!   logged a few times (not once per request), and caching resumes without a restart when the
//!   disk is back.
//! - `kill -9` during heavy concurrent cache writes, then a restart on the same directory:
//!   every object is a byte-exact HIT or a MISS, never wrong or truncated bytes.
//! - A drill of all of it at once under load: the origin down 2 s of every 6, the disk full,
//!   Redis gone and back; every request is answered (`fault_drill_answers_every_request`).
//!
//! The tmpfs tests mount and need `CAP_SYS_ADMIN` (root): without it they fail with a message
//! saying so; they do not skip.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use galion_edge_tools::origin::url_body;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One site: `/api/` cached in the `api` zone at `zone_path`, `/raw/` uncached, both to `api`;
/// `/garbage/` and `/garbage-cached/` to `garbage` (if given).
fn config(api: SocketAddr, garbage: Option<SocketAddr>, zone_path: &Path, memory: &str) -> String {
    let garbage = garbage.unwrap_or(api);
    base_config(
        false,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[cache]
lock_timeout = "5s"

[cache.zones.api]
path = "{}"
size = "64MB"
memory_size = "{memory}"
max_object_size = "8MB"
default_ttl = "10m"

[upstreams.api]
backends = ["{api}"]
health_check = {{ kind = "none" }}
[upstreams.garbage]
backends = ["{garbage}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/", upstream = "api", cache = "api" }},
  {{ path = "/raw/", upstream = "api", cache = "off" }},
  {{ path = "/garbage-cached/", upstream = "garbage", cache = "api", read_timeout = "30s" }},
  {{ path = "/garbage/", upstream = "garbage", cache = "off", read_timeout = "30s" }},
]
"#,
            zone_path.display()
        ),
    )
}

struct Resp {
    status: u16,
    cache: String,
    body: bytes::Bytes,
}

async fn get(proxy: &Proxy, path: &str) -> Resp {
    let r = client()
        .get(format!("http://{}{path}", proxy.plain_addr()))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    Resp {
        status: r.status().as_u16(),
        cache: r
            .headers()
            .get("x-cache-status")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default(),
        body: r.bytes().await.unwrap(),
    }
}

/// GETs a `data?n=` object and checks its bytes against what the origin computes for it.
async fn get_data(proxy: &Proxy, path: &str, n: usize) -> String {
    let r = get(proxy, path).await;
    assert_eq!(r.status, 200, "{path}");
    assert_eq!(r.body.len(), n, "{path}: whole body");
    assert!(r.body == url_body(path, n), "{path}: exact bytes");
    r.cache
}

fn count(o: &Origin, prefix: &str) -> usize {
    o.requests()
        .iter()
        .filter(|r| r.uri.starts_with(prefix))
        .count()
}

/// Entry files of a zone (not temp files).
fn entries(zone: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(zone) else {
        return out;
    };
    for sub in rd.flatten() {
        if sub.file_name() == "tmp" || !sub.path().is_dir() {
            continue;
        }
        for f in std::fs::read_dir(sub.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            out.push(f.path());
        }
    }
    out
}

fn temp_files(zone: &Path) -> usize {
    std::fs::read_dir(zone.join("tmp")).map_or(0, |rd| rd.count())
}

async fn disk_errors(proxy: &Proxy, op: &str) -> u64 {
    metric(
        proxy,
        "galion_edge_cache_disk_errors_total",
        &["zone=\"api\"", &format!("op=\"{op}\"")],
    )
    .await
}

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

fn run_ok(cmd: &str, args: &[&str]) {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = run(
            "mount",
            &[
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                at.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "this test mounts a tmpfs to fill a real file system and needs CAP_SYS_ADMIN (run \
             the suite as root, as scripts/test.sh does in CI): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    fn remount(&self, mode: &str) {
        run_ok(
            "mount",
            &["-o", &format!("remount,{mode}"), self.0.to_str().unwrap()],
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run("umount", &["-l", self.0.to_str().unwrap()]);
    }
}

/// Lines of the proxy's log that report a disk error, and Pingora's per-request cache warnings
/// (which disk errors must not cause).
fn log_lines(proxy: &Proxy) -> (usize, usize) {
    let log = proxy.stderr();
    let ours = log
        .lines()
        .filter(|l| l.contains("disk write failed"))
        .count();
    let per_request = log
        .lines()
        .filter(|l| {
            l.contains("Fail to cache response") || l.contains("Failed to finish cache miss")
        })
        .count();
    (ours, per_request)
}

// ---------------------------------------------------------------------------------------------
// Origins that fail.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_dying_mid_body_aborts_the_response_and_caches_nothing() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("cache/api");
    let proxy = Proxy::start(bin!(), dir.path(), &config(api.addr, None, &zone, "1MB"));
    let n = 300_000;
    for (framing, query) in [
        ("length", "die=100000"),
        ("chunked", "chunked=1&die=100000"),
    ] {
        for route in ["api", "raw"] {
            let path = format!("/{route}/die-{framing}/data?n={n}&{query}");
            let r = client()
                .get(format!("http://{}{path}", proxy.plain_addr()))
                .header("host", "galion.app")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}: the head had been sent");
            if framing == "length" {
                assert_eq!(
                    r.content_length(),
                    Some(n as u64),
                    "{path}: the origin's length is passed on"
                );
            }
            let body = r.bytes().await;
            assert!(
                body.is_err(),
                "{path}: the client must see the response aborted, not a complete-looking \
                 short body (got {:?} bytes)",
                body.map(|b| b.len())
            );
        }
        // Not cached: the next request goes to the origin again.
        let path = format!("/api/die-{framing}/data?n={n}&{query}");
        let r = client()
            .get(format!("http://{}{path}", proxy.plain_addr()))
            .header("host", "galion.app")
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-cache-status"], "MISS", "{path}");
        assert!(r.bytes().await.is_err());
        assert_eq!(count(&api, &format!("/api/die-{framing}/")), 2, "{path}");
    }
    // The raw bytes of the chunked case: no terminating chunk, the connection closed.
    let raw = raw_exchange(
        proxy.plain_addr(),
        format!("GET /raw/raw-chunked/data?n={n}&chunked=1&die=50000 HTTP/1.1\r\nHost: galion.app\r\n\r\n").as_bytes(),
        Duration::from_secs(10),
    );
    assert_eq!(status_of(&raw), 200);
    assert!(
        raw.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{}",
        &raw[..raw.len().min(400)]
    );
    assert!(
        !raw.ends_with("0\r\n\r\n"),
        "no terminating chunk after a cut"
    );
    assert!(entries(&zone).is_empty(), "nothing stored");
    assert_eq!(temp_files(&zone), 0, "no temp file left");
    assert!(
        metric(
            &proxy,
            "galion_edge_cache_fill_errors_total",
            &["zone=\"api\""]
        )
        .await
            >= 3,
        "the aborted fills are counted"
    );
    // A whole response on the same route is cached as usual.
    let ok = format!("/api/whole/data?n={n}&chunked=1");
    assert_eq!(get_data(&proxy, &ok, n).await, "MISS");
    assert_eq!(get_data(&proxy, &ok, n).await, "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_dying_mid_body_resets_the_h2_stream() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("cache/api");
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let text = config(api.addr, None, &zone, "1MB")
        .replace(
            "http_proxy = [\"127.0.0.1:{plain}\"]",
            "https = [\"127.0.0.1:{https}\"]\nhttp_proxy = [\"127.0.0.1:{plain}\"]",
        )
        .replace(
            "hosts = [\"galion.app\"]",
            &format!("hosts = [\"galion.app\"]\ntls = {{ cert = {c:?}, key = {k:?} }}"),
        );
    let proxy = Proxy::start(bin!(), dir.path(), &text);
    let h2 = tls_client(&[&cert], &["galion.app"], proxy.https_addr());
    let n = 300_000;
    for query in ["die=100000", "chunked=1&die=100000"] {
        for route in ["api", "raw"] {
            let path = format!("/{route}/h2/data?n={n}&{query}");
            let r = h2
                .get(format!("https://galion.app:{}{path}", proxy.ports.https))
                .send()
                .await
                .unwrap();
            assert_eq!(r.version(), reqwest::Version::HTTP_2);
            assert_eq!(r.status(), 200);
            let body = r.bytes().await;
            let Err(e) = body else {
                panic!("{path}: the h2 stream must be reset, not ended");
            };
            // reqwest -> hyper -> h2: "stream error received: ..." for a RST_STREAM.
            let mut chain = format!("{e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(&format!(": {s}"));
                source = s.source();
            }
            eprintln!("{path}: {chain}");
            assert!(chain.contains("stream error"), "{path}: {chain}");
        }
    }
    // The connection survives a reset stream: the next request on it works.
    let ok = h2
        .get(format!(
            "https://galion.app:{}/api/h2-ok/data?n=1000",
            proxy.ports.https
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap().len(), 1000);
    assert!(entries(&zone).len() <= 1, "only the whole response stored");
}

/// A raw TCP origin that answers each request with garbage chosen by its path.
async fn garbage_origin() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got).into_owned();
                let path = head.split_whitespace().nth(1).unwrap_or("").to_string();
                let kind = path.rsplit('/').next().unwrap_or("");
                let answer: Vec<u8> = match kind {
                    "status999" => b"HTTP/1.1 999 what\r\nContent-Length: 2\r\n\r\nok".to_vec(),
                    "random" => {
                        let mut x = 0x9e37_79b9_7f4a_7c15u64;
                        (0..4096)
                            .map(|_| {
                                x ^= x << 13;
                                x ^= x >> 7;
                                x ^= x << 17;
                                (x >> 24) as u8
                            })
                            .collect()
                    }
                    "nostatus" => b"hello there\r\nthis is not http\r\n\r\n".to_vec(),
                    "bighead" => {
                        let mut v = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
                        v.extend(std::iter::repeat_n(b'a', 2 << 20));
                        v.extend_from_slice(b"\r\nContent-Length: 2\r\n\r\nok");
                        v
                    }
                    "badheader" => b"HTTP/1.1 200 OK\r\nBad Header Name: x\r\n\r\n".to_vec(),
                    "halfhead" => b"HTTP/1.1 200 OK\r\nContent-".to_vec(),
                    _ => Vec::new(), // "nothing": close at once
                };
                let _ = s.write_all(&answer).await;
                let _ = s.shutdown().await;
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_answering_garbage_gets_a_502_with_our_error_page() {
    let api = origin("api").await;
    let garbage = garbage_origin().await;
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("cache/api");
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(api.addr, Some(garbage), &zone, "1MB"),
    );
    for route in ["garbage", "garbage-cached"] {
        for kind in [
            "status999",
            "random",
            "nostatus",
            "bighead",
            "badheader",
            "halfhead",
            "nothing",
        ] {
            let r = client()
                .get(format!("http://{}/{route}/{kind}", proxy.plain_addr()))
                .header("host", "galion.app")
                .timeout(Duration::from_secs(25))
                .send()
                .await
                .unwrap();
            // 502, not 504: the proxy did not wait for the route's 30 s read timeout.
            assert_eq!(r.status(), 502, "/{route}/{kind}");
            assert!(r.headers().contains_key("x-request-id"), "/{route}/{kind}");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
            assert_eq!(
                r.text().await.unwrap(),
                "bad gateway: the upstream failed\n",
                "/{route}/{kind}"
            );
        }
    }
    assert!(entries(&zone).is_empty(), "garbage is never stored");
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
    // The proxy still serves everything else.
    assert_eq!(get(&proxy, "/raw/fine").await.status, 200);
}

// ---------------------------------------------------------------------------------------------
// Disks that fail.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_then_read_only_disk_serves_uncached_and_recovers() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("disk"), "4m");
    let zone = mnt.0.join("api");
    // No memory tier: every HIT comes from the disk.
    let proxy = Proxy::start(bin!(), dir.path(), &config(api.addr, None, &zone, "0"));
    let n = 200_000;
    assert_eq!(
        get_data(&proxy, "/api/before/data?n=200000", n).await,
        "MISS"
    );
    assert_eq!(
        get_data(&proxy, "/api/before/data?n=200000", n).await,
        "HIT"
    );

    // Fill the file system: ENOSPC for every write after this.
    let filler = mnt.0.join("filler");
    let out = run(
        "dd",
        &[
            "if=/dev/zero",
            &format!("of={}", filler.display()),
            "bs=64k",
        ],
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("No space left"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..20 {
        let p = format!("/api/full/{i}/data?n={n}");
        assert_eq!(get_data(&proxy, &p, n).await, "MISS", "{p}");
        assert_eq!(get_data(&proxy, &p, n).await, "MISS", "{p}: not stored");
    }
    assert_eq!(
        count(&api, "/api/full/"),
        40,
        "every request reached the origin"
    );
    assert_eq!(
        get_data(&proxy, "/api/before/data?n=200000", n).await,
        "HIT",
        "what is stored is still served"
    );
    let errors = disk_errors(&proxy, "write").await;
    assert!(errors >= 40, "every failed fill counted: {errors}");
    let (lines, per_request) = log_lines(&proxy);
    assert!(
        (1..=3).contains(&lines),
        "{errors} disk errors logged in {lines} lines: rate-limited\n{}",
        proxy.stderr()
    );
    assert_eq!(per_request, 0, "no per-request warning\n{}", proxy.stderr());
    assert_eq!(temp_files(&zone), 0, "failed fills leave no temp file");

    // Nearly full: small objects fit, large ones do not, so writes fail and succeed by turns.
    // The log stays rate-limited (one window for errors, one for recoveries).
    std::fs::remove_file(&filler).unwrap();
    let avail = |p: &Path| -> u64 {
        let out = run("df", &["--output=avail", "-B1", p.to_str().unwrap()]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    let leave = 512 * 1024;
    let fill = (avail(&mnt.0) - leave) / 4096 * 4096;
    std::fs::write(&filler, vec![0u8; fill as usize]).unwrap();
    for i in 0..10 {
        let small = format!("/api/flap/{i}/data?n=20000");
        assert_eq!(get_data(&proxy, &small, 20_000).await, "MISS");
        assert_eq!(
            get_data(&proxy, &small, 20_000).await,
            "HIT",
            "{small} fits"
        );
        let big = format!("/api/flap/{i}/data?n=1000000");
        assert_eq!(get_data(&proxy, &big, 1_000_000).await, "MISS");
        assert_eq!(
            get_data(&proxy, &big, 1_000_000).await,
            "MISS",
            "{big} does not"
        );
    }
    let log = proxy.stderr();
    let recoveries = log.matches("disk writes work again").count();
    let (lines, _) = log_lines(&proxy);
    assert!(
        lines <= 4 && recoveries <= 3,
        "20 failures and 10 recoveries by turns: {lines} error lines and {recoveries} recovery \
         lines, not one per request\n{log}"
    );

    // Space again: caching resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    let p = "/api/after-full/data?n=200000";
    assert_eq!(get_data(&proxy, p, n).await, "MISS");
    assert_eq!(get_data(&proxy, p, n).await, "HIT", "caching resumed");
    assert!(
        proxy.stderr().contains("disk writes work again"),
        "{}",
        proxy.stderr()
    );

    // Read-only: EROFS for every write; reads go on.
    mnt.remount("ro");
    let before = disk_errors(&proxy, "write").await;
    for i in 0..10 {
        let p = format!("/api/ro/{i}/data?n={n}");
        assert_eq!(get_data(&proxy, &p, n).await, "MISS", "{p}");
        assert_eq!(get_data(&proxy, &p, n).await, "MISS", "{p}: not stored");
    }
    assert!(disk_errors(&proxy, "write").await >= before + 20);
    // This episode is logged within one window (10 s) of the last line.
    tokio::time::sleep(proxy_core::DISK_ERROR_LOG_INTERVAL + Duration::from_millis(200)).await;
    assert_eq!(
        get_data(&proxy, "/api/ro/last/data?n=200000", n).await,
        "MISS"
    );
    assert!(
        proxy.stderr().contains("Read-only file system"),
        "{}",
        proxy.stderr()
    );
    assert_eq!(get_data(&proxy, p, n).await, "HIT", "reads still work");
    mnt.remount("rw");
    let p = "/api/after-ro/data?n=200000";
    assert_eq!(get_data(&proxy, p, n).await, "MISS");
    assert_eq!(get_data(&proxy, p, n).await, "HIT", "caching resumed");
    let (_, per_request) = log_lines(&proxy);
    assert_eq!(per_request, 0, "{}", proxy.stderr());
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
    let log = proxy.stderr();
    let zone_lines: Vec<&str> = log.lines().filter(|l| l.contains("cache zone")).collect();
    eprintln!(
        "the proxy's cache log over this test:\n{}",
        zone_lines.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_fails_writes_without_killing_the_proxy() {
    // The same fault as a full disk without mount privileges: RLIMIT_FSIZE on the running proxy
    // makes every write past 1 MiB in a file fail (EFBIG, and SIGXFSZ, which the proxy survives).
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("cache/api");
    let proxy = Proxy::start(bin!(), dir.path(), &config(api.addr, None, &zone, "0"));
    let pid = proxy.pid().to_string();
    run_ok("prlimit", &["--pid", &pid, "--fsize=1048576:unlimited"]);
    let n = 1_500_000;
    for i in 0..5 {
        let p = format!("/api/big/{i}/data?n={n}");
        assert_eq!(get_data(&proxy, &p, n).await, "MISS", "{p}");
        assert_eq!(get_data(&proxy, &p, n).await, "MISS", "{p}: not stored");
    }
    // Small objects still fit under the limit.
    assert_eq!(
        get_data(&proxy, "/api/small/data?n=1000", 1000).await,
        "MISS"
    );
    assert_eq!(
        get_data(&proxy, "/api/small/data?n=1000", 1000).await,
        "HIT"
    );
    assert!(disk_errors(&proxy, "write").await >= 10);
    assert_eq!(temp_files(&zone), 0);
    run_ok("prlimit", &["--pid", &pid, "--fsize=unlimited:unlimited"]);
    let p = format!("/api/big/0/data?n={n}");
    assert_eq!(get_data(&proxy, &p, n).await, "MISS");
    assert_eq!(get_data(&proxy, &p, n).await, "HIT", "caching resumed");
    let (lines, per_request) = log_lines(&proxy);
    assert!((1..=3).contains(&lines), "{}", proxy.stderr());
    assert_eq!(per_request, 0, "{}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_zone_directory_is_recreated_while_serving() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("cache/api");
    let proxy = Proxy::start(bin!(), dir.path(), &config(api.addr, None, &zone, "0"));
    let n = 50_000;
    let paths: Vec<String> = (0..10).map(|i| format!("/api/rm/{i}/data?n={n}")).collect();
    for p in &paths {
        assert_eq!(get_data(&proxy, p, n).await, "MISS");
        assert_eq!(get_data(&proxy, p, n).await, "HIT");
    }
    std::fs::remove_dir_all(&zone).unwrap();
    // The first object: its file is gone, so a MISS; its fill recreates the directory.
    assert_eq!(get_data(&proxy, &paths[0], n).await, "MISS");
    assert_eq!(get_data(&proxy, &paths[0], n).await, "HIT", "stored again");
    assert!(zone.join("tmp").is_dir(), "the zone directory is back");
    // The others were forgotten, not served.
    for p in &paths[1..] {
        assert_eq!(get_data(&proxy, p, n).await, "MISS", "{p}");
        assert_eq!(get_data(&proxy, p, n).await, "HIT", "{p}");
    }
    assert_eq!(count(&api, "/api/rm/"), 20);
    assert!(disk_errors(&proxy, "lost").await >= 9);
    let objects = metric(
        &proxy,
        "galion_edge_cache_objects",
        &["zone=\"api\"", "tier=\"disk\""],
    )
    .await;
    assert_eq!(objects, 10, "the index matches the disk again");
    assert!(
        proxy.stderr().contains("has been recreated"),
        "{}",
        proxy.stderr()
    );
    let (_, per_request) = log_lines(&proxy);
    assert_eq!(per_request, 0, "{}", proxy.stderr());
}

// ---------------------------------------------------------------------------------------------
// kill -9 during heavy cache writes.

/// Object `i` of the kill test: sizes from 4 KiB to about 600 KiB, sent in paced chunks so
/// fills are in progress when the process dies.
fn kill_object(round: usize, i: usize) -> (String, usize) {
    let n = 4096 + (i * 7919 % 150) * 4096;
    (format!("/api/k{round}/{i}/data?n={n}&pace=2"), n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_heavy_cache_writes_never_serves_wrong_bytes() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let zone = dir.path().join("cache/api");
    let mut proxy = Proxy::start(bin!(), dir.path(), &config(api.addr, None, &zone, "2MB"));
    let objects = 160;
    let clients = 16;
    let mut temp_at_kill = Vec::new();
    let mut hits = 0;
    let mut misses = 0;
    for (round, kill_after_ms) in [(0usize, 300u64), (1, 700), (2, 1200)] {
        let addr = proxy.plain_addr();
        let mut tasks = Vec::new();
        for c in 0..clients {
            tasks.push(tokio::spawn(async move {
                let http = client();
                // Each client fetches its share, twice (fills, then hits), until the proxy dies.
                for _pass in 0..2 {
                    for i in (c..objects).step_by(clients) {
                        let (p, _) = kill_object(round, i);
                        let r = http
                            .get(format!("http://{addr}{p}"))
                            .header("host", "galion.app")
                            .send()
                            .await;
                        let Ok(r) = r else { return };
                        if r.bytes().await.is_err() {
                            return;
                        }
                    }
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(kill_after_ms)).await;
        proxy.kill9();
        temp_at_kill.push(temp_files(&zone));
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(30), t).await;
        }
        proxy.restart(bin!());
        // Every object of every round so far: a byte-exact HIT or a MISS.
        let mut checks = Vec::new();
        for r in 0..=round {
            for i in 0..objects {
                checks.push(kill_object(r, i));
            }
        }
        for chunk in checks.chunks(8) {
            let results =
                futures_util::future::join_all(chunk.iter().map(|(p, n)| get_data(&proxy, p, *n)))
                    .await;
            for status in results {
                match status.as_str() {
                    "HIT" => hits += 1,
                    "MISS" => misses += 1,
                    other => panic!("unexpected X-Cache-Status {other}"),
                }
            }
        }
        assert_eq!(
            temp_files(&zone),
            0,
            "temp files of the killed process are gone"
        );
    }
    assert!(
        temp_at_kill.iter().any(|n| *n > 0),
        "at least one kill landed during fills: temp files at each kill {temp_at_kill:?}"
    );
    assert!(
        hits > 0,
        "entries survive kill -9 ({hits} hits, {misses} misses)"
    );
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
    // What is on disk is whole: every entry decodes, and its body is the origin's. (Stopped
    // first: the zone is smaller than all objects, so evictions remove files meanwhile.)
    proxy.terminate();
    let mut on_disk = 0;
    for path in entries(&zone) {
        let bytes = std::fs::read(&path).unwrap();
        let name = path.file_name().unwrap().to_str().unwrap();
        let mut key = [0u8; 16];
        for (i, b) in key.iter_mut().enumerate() {
            *b = u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap();
        }
        let (footer, range) = proxy_core::decode_cache_entry(&bytes, &key).unwrap();
        let target = footer.url.trim_start_matches("http://galion.app");
        let n: usize = target
            .split("n=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(bytes[range] == url_body(target, n)[..], "{target}");
        on_disk += 1;
    }
    eprintln!(
        "kill -9 rounds: temp files at each kill {temp_at_kill:?}; afterwards {hits} byte-exact \
         hits, {misses} misses; {on_disk} entry files on disk, all whole"
    );
}

/// What one request of the drill got.
struct Outcome {
    path: String,
    status: u16,
    took: Duration,
    /// `None` if the body was the origin's exact bytes (or the answer was not a 200).
    wrong: Option<String>,
}

/// A fault drill under load: for 24 s, four clients ask cached URLs (`max-age=1,
/// stale-if-error=600`, all stored before the drill) and uncached ones while, in turn, the origin
/// goes down for 2 s out of every 6 and comes back on the same port, the cache's disk fills up
/// (a ballast file on its tmpfs) and empties again, and Redis (the rate limiter's backend) is
/// killed and started again. Every request is answered: a cached URL always with a 200 and the
/// origin's exact bytes (fresh, refetched or stale), an uncached one with a 200 and the exact
/// bytes or, while the origin is down, a 502 in under a second. No connection error, no other
/// status, no wrong byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fault_drill_answers_every_request() {
    let redis = RedisServer::start();
    let api = origin("api").await;
    let api_addr = api.addr;
    let dir = tempfile::tempdir().unwrap();
    let mnt = Tmpfs::mount(&dir.path().join("disk"), "8m");
    let body = format!(
        r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[redis]
url = "{}"
timeout = "200ms"
connect_timeout = "200ms"
retry_interval = "200ms"

[limits]
backend = "redis"
window = "60s"
[limits.classes.api]
rate = 1000000

[cache.zones.api]
path = "{}"
size = "64MB"
memory_size = "64k"
max_object_size = "1MB"

[upstreams.api]
backends = ["{api_addr}"]
health_check = {{ kind = "none" }}
connect_timeout = "500ms"

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/", upstream = "api", cache = "api", limit = "api" }},
  {{ path = "/raw/", upstream = "api", cache = "off", limit = "api" }},
]
"#,
        redis.url(0),
        mnt.0.join("api").display()
    );
    let proxy = Proxy::start(bin!(), dir.path(), &base_config(false, &body));
    let cached =
        |k: usize| format!("/api/drill/{k}/data?n=4096&cc=max-age%3D1%2C%20stale-if-error%3D600");
    for k in 0..8 {
        assert_eq!(get(&proxy, &cached(k)).await.status, 200);
    }

    let stop = std::time::Instant::now() + Duration::from_secs(24);
    let base = format!("http://{}", proxy.plain_addr());
    let clients: Vec<_> = (0..4)
        .map(|t| {
            let base = base.clone();
            tokio::spawn(async move {
                let c = client();
                let mut out = Vec::new();
                for i in 0..6000usize {
                    if std::time::Instant::now() > stop {
                        break;
                    }
                    let path = if i % 2 == 0 {
                        cached((t + i) % 8)
                    } else {
                        format!("/raw/drill/{t}/{i}/data?n=4096")
                    };
                    let started = std::time::Instant::now();
                    let r = c
                        .get(format!("{base}{path}"))
                        .header("host", "galion.app")
                        .send()
                        .await;
                    let (status, wrong) = match r {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            match r.bytes().await {
                                Ok(b) if status == 200 && b[..] != url_body(&path, 4096)[..] => {
                                    (status, Some(format!("{} wrong bytes", b.len())))
                                }
                                Ok(_) => (status, None),
                                Err(e) => (status, Some(format!("body: {e}"))),
                            }
                        }
                        Err(e) => (0, Some(format!("{e:?}"))),
                    };
                    out.push(Outcome {
                        path,
                        status,
                        took: started.elapsed(),
                        wrong,
                    });
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out
            })
        })
        .collect();

    // The faults, in turn. The origin is down 2 s of every 6; the disk is full from 5 s to
    // 11 s; Redis is gone from 13 s to 19 s.
    let mut redis = redis;
    let mut origin_now = Some(api);
    let ballast = mnt.0.join("ballast");
    let t0 = std::time::Instant::now();
    let at = |s: u64| tokio::time::sleep_until((t0 + Duration::from_secs(s)).into());
    for (s, what) in [
        (2, "origin down"),
        (4, "origin up"),
        (5, "disk full"),
        (8, "origin down"),
        (10, "origin up"),
        (11, "disk empty"),
        (13, "redis down"),
        (14, "origin down"),
        (16, "origin up"),
        (19, "redis up"),
        (20, "origin down"),
        (22, "origin up"),
    ] {
        at(s).await;
        match what {
            "origin down" => {
                if let Some(o) = origin_now.take() {
                    o.stop();
                }
            }
            "origin up" => {
                origin_now = Some(spawn_origin("api", api_addr).await.expect("the same port"));
            }
            "disk full" => {
                let out = run(
                    "dd",
                    &[
                        "if=/dev/zero",
                        &format!("of={}", ballast.display()),
                        "bs=64k",
                    ],
                );
                assert!(
                    String::from_utf8_lossy(&out.stderr).contains("No space left"),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            "disk empty" => std::fs::remove_file(&ballast).unwrap(),
            "redis down" => tokio::task::block_in_place(|| redis.stop()),
            "redis up" => tokio::task::block_in_place(|| redis.start_again()),
            _ => unreachable!(),
        }
    }

    let mut outcomes = Vec::new();
    for c in clients {
        outcomes.extend(c.await.unwrap());
    }
    let bad: Vec<String> = outcomes
        .iter()
        .filter(|o| {
            let cached = o.path.starts_with("/api/");
            let fast_502 = !cached && o.status == 502 && o.took < Duration::from_secs(1);
            o.wrong.is_some() || !(o.status == 200 || fast_502)
        })
        .map(|o| format!("{} {} in {:?}: {:?}", o.path, o.status, o.took, o.wrong))
        .collect();
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let raw_502 = count(&|o| o.status == 502);
    assert!(
        outcomes.len() >= 1000,
        "the load ran: {} requests",
        outcomes.len()
    );
    assert!(raw_502 > 0, "the origin was never seen down");
    let last = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "drill: {} requests, {} × 200, {raw_502} × 502 (uncached, origin down), slowest {last:?}",
        outcomes.len(),
        count(&|o| o.status == 200)
    );
    assert!(
        bad.is_empty(),
        "{} of {} requests answered wrong, the first: {:?}\n{}",
        bad.len(),
        outcomes.len(),
        &bad[..bad.len().min(10)],
        proxy.stderr()
    );
    assert!(
        disk_errors(&proxy, "fill").await > 0 || disk_errors(&proxy, "write").await > 0,
        "the disk was never full: {}",
        metrics_text(&proxy).await
    );
}
