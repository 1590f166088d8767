//! Zero-downtime binary upgrade (`run --upgrade` + SIGQUIT to the old process) through the real
//! proxy binary, under load, with a warm disk cache.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// An API route cached in the `api` zone and an uncached one, both to `api`.
fn config(api: &Origin) -> String {
    base_config(
        false,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[cache]
lock_timeout = "5s"

[cache.zones.api]
path = "{{dir}}/cache/api"
size = "64MB"
memory_size = "256k"
max_object_size = "256k"
default_ttl = "10m"

[upstreams.api]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/", upstream = "api", cache = "api" }},
  {{ path = "/nocache/", upstream = "api", cache = "off" }},
]
"#,
            api.addr
        ),
    )
}

async fn get(proxy: &Proxy, path: &str) -> (u16, String) {
    let r = client()
        .get(format!("http://{}{path}", proxy.plain_addr()))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    let cache = r
        .headers()
        .get("x-cache-status")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (r.status().as_u16(), cache)
}

fn count(o: &Origin, prefix: &str) -> usize {
    o.requests()
        .iter()
        .filter(|r| r.uri.starts_with(prefix))
        .count()
}

/// A bounded load run across an upgrade: 4 clients on keep-alive connections, 500 requests
/// each at most, alternating cached and uncached paths, until `for_` has passed.
struct Load {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    failures: Arc<Mutex<Vec<String>>>,
    sent: Arc<AtomicUsize>,
}

impl Load {
    fn start(proxy: &Proxy, for_: Duration) -> Load {
        let failures = Arc::new(Mutex::new(Vec::<String>::new()));
        let sent = Arc::new(AtomicUsize::new(0));
        let stop = Instant::now() + for_;
        let base = format!("http://{}", proxy.plain_addr());
        let mut tasks = Vec::new();
        for t in 0..4 {
            let (failures, sent, base) = (failures.clone(), sent.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let c = client();
                for i in 0..500 {
                    if Instant::now() > stop {
                        break;
                    }
                    let path = if i % 2 == 0 {
                        format!("/api/warm/{}", (t + i) % 10)
                    } else {
                        format!("/nocache/{t}/{i}")
                    };
                    let r = c
                        .get(format!("{base}{path}"))
                        .header("host", "galion.app")
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    match r {
                        Ok(r) if r.status() == 200 => match r.bytes().await {
                            Ok(_) => {}
                            Err(e) => failures.lock().unwrap().push(format!("{path}: body: {e}")),
                        },
                        Ok(r) => failures
                            .lock()
                            .unwrap()
                            .push(format!("{path}: {}", r.status())),
                        Err(e) => failures.lock().unwrap().push(format!("{path}: {e:?}")),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        Load {
            tasks,
            failures,
            sent,
        }
    }

    /// Waits for the run's end; asserts it ran and that no request failed.
    async fn finish_without_failures(self, proxy: &Proxy) {
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        assert!(self.sent.load(Ordering::Relaxed) >= 100, "the load run ran");
        assert!(
            failures.is_empty(),
            "{} failed requests: {failures:?}\n{}",
            failures.len(),
            proxy.stderr()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn binary_upgrade_under_load_drops_nothing_and_keeps_the_cache_warm() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let mut proxy = Proxy::start(bin!(), dir.path(), &config(&api));

    // Fill 10 entries.
    for i in 0..10 {
        assert_eq!(
            get(&proxy, &format!("/api/warm/{i}")).await,
            (200, "MISS".into())
        );
        assert_eq!(
            get(&proxy, &format!("/api/warm/{i}")).await,
            (200, "HIT".into())
        );
    }
    assert_eq!(count(&api, "/api/warm/"), 10);

    // A bounded load run (cached and uncached paths) across the upgrade.
    let load = Load::start(&proxy, Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old_pid = proxy.pid();
    tokio::task::block_in_place(|| proxy.upgrade(bin!()));
    load.finish_without_failures(&proxy).await;

    // The old process is gone, the new one serves.
    assert!(!alive(old_pid), "old process {old_pid} still alive");
    assert_ne!(proxy.pid(), old_pid);
    assert!(alive(proxy.pid()));
    assert_eq!(get(&proxy, "/nocache/after-upgrade").await.0, 200);
    // Its admin listener (inherited too) reports ready: the inherited sockets count as bound.
    let ready = client()
        .get(format!("http://{}/readyz", proxy.admin_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{:?}", ready.text().await);
    // The access log is written in batches: wait (bounded) for the new process's line.
    let new_log = dir.path().join("stdout-upgrade.log");
    let logged = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&new_log)
            .unwrap_or_default()
            .contains("/nocache/after-upgrade")
    })
    .await;
    assert!(logged, "the new process did not log the request");

    // The disk cache is warm in the new process: the same 10 entries are hits, never refetched.
    for i in 0..10 {
        assert_eq!(
            get(&proxy, &format!("/api/warm/{i}")).await,
            (200, "HIT".into()),
            "/api/warm/{i} after the upgrade"
        );
    }
    assert_eq!(
        count(&api, "/api/warm/"),
        10,
        "no refetch across the upgrade"
    );
    let log = proxy.stderr();
    assert!(log.contains("listener sockets sent"), "{log}");
}

/// What systemd would read on a `Type=notify` unit's socket: the next datagram, as text.
fn next_notification(sock: &std::os::unix::net::UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).expect("a notification within 20 s");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The `MAINPID=` of a notification that also says `READY=1`.
fn ready_main_pid(message: &str) -> u32 {
    let lines: Vec<&str> = message.lines().collect();
    assert!(lines.contains(&"READY=1"), "{message}");
    lines
        .iter()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .unwrap_or_else(|| panic!("no MAINPID in {message}"))
        .parse()
        .unwrap()
}

/// Stops a process this test did not start itself (the one the old proxy started), however
/// the test ends.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = signal(self.0, "TERM");
        let end = Instant::now() + Duration::from_secs(10);
        while alive(self.0) && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = signal(self.0, "KILL");
    }
}

/// SIGUSR2, what `systemctl kill -s USR2 --kill-whom=main galion-edge` sends: the running
/// process starts its own binary with `run -c CONFIG --upgrade` and hands the sockets over,
/// under load, nothing dropped. The shipped unit is `Type=notify` with `NotifyAccess=all`:
/// each process says `READY=1` with its `MAINPID=` once it listens, which moves the unit to
/// the new process. systemd is not on this machine; its notify socket is, a datagram socket
/// read here as systemd reads it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_upgrades_in_place_and_tells_systemd_the_new_main_pid() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut proxy = Proxy::start_with_env(
        bin!(),
        dir.path(),
        &config(&api),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let old_pid = proxy.pid();
    assert_eq!(ready_main_pid(&next_notification(&notify)), old_pid);
    for i in 0..10 {
        assert_eq!(get(&proxy, &format!("/api/warm/{i}")).await.0, 200);
    }

    let load = Load::start(&proxy, Duration::from_secs(8));
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.signal("USR2");
    let new_pid = tokio::task::block_in_place(|| ready_main_pid(&next_notification(&notify)));
    let _stop = StopOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);
    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(20)));
    assert!(
        status.is_some_and(|s| s.success()),
        "the old process exits 0: {status:?}\n{}",
        proxy.stderr()
    );
    load.finish_without_failures(&proxy).await;

    // The new process serves, and it is the one that answers.
    assert!(alive(new_pid));
    assert_eq!(get(&proxy, "/nocache/after-upgrade").await.0, 200);
    assert_eq!(get(&proxy, "/api/warm/3").await, (200, "HIT".into()));
    let log = proxy.stderr();
    assert!(log.contains("SIGUSR2: starting the new binary"), "{log}");
    assert!(log.contains("listener sockets sent"), "{log}");
    assert!(!alive(old_pid));
}

/// A SIGUSR2 whose new process cannot start (here: the config no longer loads) changes
/// nothing: the running process logs why and keeps serving; no notification moves the unit.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigusr2_with_a_config_the_new_process_refuses_keeps_the_old_one_serving() {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let proxy = Proxy::start_with_env(
        bin!(),
        dir.path(),
        &config(&api),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    next_notification(&notify);
    std::fs::write(&proxy.config_path, "[server]\nthreads = \"many\"\n").unwrap();
    proxy.signal("USR2");
    let refused = eventually(Duration::from_secs(15), || async {
        proxy
            .stderr()
            .contains("SIGUSR2: upgrade refused, still serving")
    })
    .await;
    assert!(refused, "{}", proxy.stderr());
    assert!(alive(proxy.pid()));
    assert_eq!(get(&proxy, "/nocache/still-serving").await.0, 200);
    let mut buf = [0u8; 256];
    assert!(notify.recv(&mut buf).is_err(), "no notification");
}

/// The config of [`upgrade_keeps_every_listener_kind_whole`]: TLS on `https` (HTTP/1.1 and
/// HTTP/2 by ALPN), plain on `http_proxy`, the cached and uncached routes of [`config`].
fn tls_config(api: &Origin, (cert, key): (&str, &str)) -> String {
    base_config(
        true,
        &format!(
            r#"
[cache.zones.api]
path = "{{dir}}/cache/api"
size = "64MB"
default_ttl = "10m"

[upstreams.api]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
tls = {{ cert = {cert:?}, key = {key:?} }}
routes = [
  {{ path = "/api/", upstream = "api", cache = "api" }},
  {{ path = "/nocache/", upstream = "api", cache = "off" }},
]
"#,
            api.addr
        ),
    )
}

/// A POST of `len` bytes on its own connection, written in 8 pieces `pause` apart: the status
/// line of the answer and its body.
async fn slow_upload(addr: std::net::SocketAddr, len: usize, pause: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /nocache/upload HTTP/1.1\r\nHost: galion.app\r\nContent-Length: {len}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let piece = vec![b'u'; len / 8];
    for _ in 0..8 {
        s.write_all(&piece).await.unwrap();
        tokio::time::sleep(pause).await;
    }
    s.write_all(&vec![b'u'; len - 8 * piece.len()])
        .await
        .unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

/// A binary upgrade (SIGUSR2) under load on every listener kind at once: plain HTTP/1.1, TLS
/// HTTP/1.1 and TLS HTTP/2 (four streams at a time on one connection), a 900 KB upload written
/// slowly and a 2 MB response read as it streams, both in flight when the signal arrives, and
/// a WebSocket opened before it. Every request is answered (none failed, none reset), the
/// upload and the download complete byte for byte on the old process. The WebSocket keeps
/// echoing on the old process while it drains, and is closed when that process exits
/// (`grace_period` + `graceful_shutdown_timeout` after it stops accepting: docs/operations.md);
/// a WebSocket opened afterwards is served by the new process.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn upgrade_keeps_every_listener_kind_whole() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Message;
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut proxy = Proxy::start_with_env(
        bin!(),
        dir.path(),
        &tls_config(&api, (c.to_str().unwrap(), k.to_str().unwrap())),
        &[("NOTIFY_SOCKET", notify_path.to_str().unwrap())],
    );
    let old_pid = ready_main_pid(&next_notification(&notify));
    let plain = format!("http://{}", proxy.plain_addr());

    // A WebSocket on the old process, echoing every 200 ms until it ends.
    let ws_task = echo_websocket(
        proxy.plain_addr(),
        "galion.app",
        "/nocache/ws",
        Instant::now() + Duration::from_secs(30),
    )
    .await;
    let load = ListenerLoad::start(
        &proxy,
        &cert,
        "/nocache/",
        Instant::now() + Duration::from_secs(9),
    );
    let upload = tokio::spawn(slow_upload(
        proxy.plain_addr(),
        900_000,
        Duration::from_millis(250),
    ));
    let download_path = "/nocache/stream/data?n=2000000&chunked=1&pace=20";
    let download = {
        let c = client();
        let url = format!("{plain}{download_path}");
        tokio::spawn(async move {
            let r = c
                .get(url)
                .header("host", "galion.app")
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.bytes().await.map(|b| b.to_vec()))
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let signalled = Instant::now();
    proxy.signal("USR2");
    let new_pid = tokio::task::block_in_place(|| ready_main_pid(&next_notification(&notify)));
    let _stop = StopOnDrop(new_pid);
    assert_ne!(new_pid, old_pid);

    load.finish(400).await;
    let answer = upload.await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("\"body_len\":900000"), "{answer}");
    let (status, body) = download.await.unwrap();
    assert_eq!(status, 200);
    let body = body.expect("the whole streamed body");
    assert!(
        body == galion_edge_tools::origin::url_body(download_path, 2_000_000),
        "streamed body: {} bytes, not the origin's",
        body.len()
    );

    let status = tokio::task::block_in_place(|| proxy.wait_exit(Duration::from_secs(20)));
    assert!(
        status.is_some_and(|s| s.success()),
        "old process: {status:?}"
    );
    let (echoed, ended) = ws_task.await.unwrap();
    let lived = ended.expect("the WebSocket ended with the old process") - signalled;
    assert!(
        lived >= Duration::from_secs(5),
        "the WebSocket echoed {echoed} messages and ended {lived:?} after the signal"
    );
    // A new WebSocket goes to the new process.
    let ws_req = "ws://galion.app/nocache/ws-after"
        .into_client_request()
        .unwrap();
    let tcp = tokio::net::TcpStream::connect(proxy.plain_addr())
        .await
        .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(ws_req, tcp).await.unwrap();
    ws.send(Message::text("after")).await.unwrap();
    assert_eq!(ws.next().await.unwrap().unwrap(), Message::text("after"));
}
