//! Config reload on SIGHUP and `POST /reload`, and access-log reopen on SIGUSR1, through the
//! real proxy binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn config(upstream: &str, limits: &str, access_log: &str) -> String {
    base_config(
        false,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[client_ip]
trusted = ["127.0.0.0/8"]
header = "CF-Connecting-IP"

{limits}

[upstreams.app]
backends = ["{upstream}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/", upstream = "app", limit = "api" }},
  {{ path = "/", upstream = "app" }},
]
"#
        ),
    )
    .replace("[access_log]\npath = \"stdout\"", access_log)
}

fn limits(rate: u32) -> String {
    format!("[limits]\nwindow = \"60s\"\n\n[limits.classes.api]\nrate = {rate}\nburst = 0\n")
}

const STDOUT_LOG: &str = "[access_log]\npath = \"stdout\"";

/// Rewrites the running config file with `f` applied to its text.
fn edit(path: &Path, f: impl FnOnce(String) -> String) {
    let text = std::fs::read_to_string(path).unwrap();
    std::fs::write(path, f(text)).unwrap();
}

async fn get(proxy: &Proxy, path: &str, client_ip: &str) -> reqwest::Response {
    client()
        .get(format!("http://{}{path}", proxy.plain_addr()))
        .header("host", "galion.app")
        .header("cf-connecting-ip", client_ip)
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sighup_applies_a_changed_route_under_load_with_zero_failures() {
    let a = origin("a").await;
    let b = origin("b").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&a.addr.to_string(), &limits(100_000), STDOUT_LOG),
    );
    assert_eq!(get(&proxy, "/x", "192.0.2.1").await.status(), 200);
    assert_eq!(a.requests().len(), 1);

    // A bounded load run while the config changes under it.
    let failures = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs(8);
    let base = format!("http://{}", proxy.plain_addr());
    let mut load = Vec::new();
    for t in 0..4 {
        let (failures, sent, base) = (failures.clone(), sent.clone(), base.clone());
        load.push(tokio::spawn(async move {
            let c = client();
            for i in 0..400 {
                if Instant::now() > stop {
                    break;
                }
                let r = c
                    .get(format!("{base}/load/{t}/{i}"))
                    .header("host", "galion.app")
                    .header("cf-connecting-ip", format!("192.0.2.{}", 10 + t))
                    .send()
                    .await;
                sent.fetch_add(1, Ordering::Relaxed);
                if !matches!(&r, Ok(r) if r.status() == 200) {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    edit(&proxy.config_path, |t| {
        t.replace(&a.addr.to_string(), &b.addr.to_string())
    });
    proxy.signal("HUP");
    let switched = eventually(Duration::from_secs(10), || async {
        let before = b.requests().len();
        get(&proxy, "/probe", "192.0.2.2").await.status() == 200 && b.requests().len() > before
    })
    .await;
    assert!(
        switched,
        "requests never reached origin b: {}",
        proxy.stderr()
    );
    for t in load {
        t.await.unwrap();
    }
    assert!(sent.load(Ordering::Relaxed) >= 100, "the load run ran");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "failed requests");
    // Once switched, everything goes to b.
    let a_before = a.requests().len();
    for _ in 0..5 {
        assert_eq!(get(&proxy, "/after", "192.0.2.3").await.status(), 200);
    }
    assert_eq!(a.requests().len(), a_before);
    let log = proxy.stderr();
    assert!(log.contains("config reload: applied"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_a_changed_limit() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&o.addr.to_string(), &limits(100), STDOUT_LOG),
    );
    for _ in 0..5 {
        assert_eq!(get(&proxy, "/api/x", "203.0.113.1").await.status(), 200);
    }
    edit(&proxy.config_path, |t| t.replace("rate = 100", "rate = 3"));
    proxy.signal("HUP");
    proxy_log(&proxy, "config reload: applied");
    // A fresh client: counts from before the reload carry over.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(get(&proxy, "/api/x", "203.0.113.2").await.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    // Routes without the class are not limited.
    assert_eq!(get(&proxy, "/x", "203.0.113.2").await.status(), 200);
}

/// Waits (bounded) until the proxy's stderr contains `needle`; panics with it otherwise.
fn proxy_log(proxy: &Proxy, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = proxy.stderr();
        if s.contains(needle) {
            return s;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in the log: {s}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_on_sighup_is_refused_and_the_old_one_serves() {
    let a = origin("a").await;
    let b = origin("b").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&a.addr.to_string(), &limits(100_000), STDOUT_LOG),
    );
    let good = std::fs::read_to_string(&proxy.config_path).unwrap();

    // Not TOML at all.
    std::fs::write(&proxy.config_path, "this is [ not toml").unwrap();
    proxy.signal("HUP");
    let log = proxy_log(&proxy, "refused");
    assert!(log.contains("config reload: file"), "{log}");
    assert_eq!(get(&proxy, "/x", "192.0.2.1").await.status(), 200);
    assert_eq!(a.requests().len(), 1);

    // Valid TOML, but the route names an upstream that does not exist (and the origin moves,
    // which must not apply either).
    let bad = good
        .replace(&a.addr.to_string(), &b.addr.to_string())
        .replace(
            "{ path = \"/\", upstream = \"app\" }",
            "{ path = \"/\", upstream = \"nowhere\" }",
        );
    std::fs::write(&proxy.config_path, bad).unwrap();
    proxy.signal("HUP");
    let log = proxy_log(&proxy, "sites[0].routes[1].upstream");
    assert!(
        log.lines()
            .any(|l| l.contains("ERROR") && l.contains("sites[0].routes[1].upstream")),
        "{log}"
    );
    for _ in 0..3 {
        assert_eq!(get(&proxy, "/x", "192.0.2.1").await.status(), 200);
    }
    assert_eq!(a.requests().len(), 4, "the old route still serves");
    assert!(b.requests().is_empty());
    // The process is alive and a good file applies afterwards.
    std::fs::write(
        &proxy.config_path,
        good.replace(&a.addr.to_string(), &b.addr.to_string()),
    )
    .unwrap();
    proxy.signal("HUP");
    proxy_log(&proxy, "config reload: applied");
    assert_eq!(get(&proxy, "/x", "192.0.2.1").await.status(), 200);
    assert_eq!(b.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_reopens_the_access_log() {
    let o = origin("app").await;
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(
            &o.addr.to_string(),
            &limits(100_000),
            &format!("[access_log]\nformat = \"combined\"\npath = {log_path:?}"),
        ),
    );
    let lines = |p: &Path| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    for _ in 0..3 {
        assert_eq!(get(&proxy, "/before", "192.0.2.1").await.status(), 200);
    }
    assert!(
        eventually(Duration::from_secs(5), || async {
            lines(&log_path).len() == 3
        })
        .await,
        "{:?}",
        lines(&log_path)
    );
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log_path, &rotated).unwrap();
    proxy.signal("USR1");
    proxy_log(&proxy, "reopening");
    // The reopen happens after the writer's next wake-up; requests logged until then may still
    // go to the renamed file, so poll until one lands in the new file.
    let reopened = eventually(Duration::from_secs(10), || async {
        get(&proxy, "/after", "192.0.2.1").await.status() == 200
            && lines(&log_path).iter().any(|l| l.contains("GET /after"))
    })
    .await;
    assert!(reopened, "nothing logged at the original path");
    let old = lines(&rotated);
    assert!(old.len() >= 3, "{old:?}");
    assert!(
        old[..3].iter().all(|l| l.contains("GET /before")),
        "{old:?}"
    );
    assert!(lines(&log_path).iter().all(|l| l.contains("GET /after")));
    assert!(!proxy.stderr().contains("cannot reopen"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_on_the_admin_listener() {
    let a = origin("a").await;
    let b = origin("b").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(
        bin!(),
        dir.path(),
        &config(&a.addr.to_string(), &limits(100_000), STDOUT_LOG),
    );
    let reload = || async {
        let r = client()
            .post(format!("http://{}/reload", proxy.admin_addr()))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json::<serde_json::Value>().await.unwrap())
    };
    let good = std::fs::read_to_string(&proxy.config_path).unwrap();

    // A bad file: 400 with every error and its path; nothing changes.
    std::fs::write(
        &proxy.config_path,
        good.replace("upstream = \"app\"", "upstream = \"nowhere\""),
    )
    .unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["reloaded"], false);
    let errors: Vec<String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].starts_with("sites[0].routes[0].upstream"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("sites[0].routes[1].upstream"),
        "{errors:?}"
    );
    assert_eq!(get(&proxy, "/x", "192.0.2.1").await.status(), 200);
    assert_eq!(a.requests().len(), 1);

    // A good one, which also moves the admin listener: applied, that part needs a restart.
    let moved = good
        .replace(&a.addr.to_string(), &b.addr.to_string())
        .replace(
            &format!("127.0.0.1:{}", proxy.ports.admin),
            &format!("127.0.0.1:{}", free_port()),
        );
    std::fs::write(&proxy.config_path, moved).unwrap();
    let (status, body) = reload().await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"reloaded": true, "needs_restart": ["admin.listen"]})
    );
    assert_eq!(get(&proxy, "/x", "192.0.2.1").await.status(), 200);
    assert_eq!(b.requests().len(), 1);
    proxy_log(&proxy, "needs a restart: admin.listen");
}

/// Reloads (SIGHUP, then `POST /reload`) under load on every listener kind at once: plain
/// HTTP/1.1, TLS HTTP/1.1 and TLS HTTP/2 (four streams on one connection) loops, and a
/// WebSocket echoing every 200 ms. Each reload moves the routes to the other origin. No request
/// fails, the WebSocket (on the connection it had before either reload) echoes every message
/// and is still open at the end, and both reloads are applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reloads_on_every_listener_kind_drop_nothing() {
    let a = origin("a").await;
    let b = origin("b").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let text = base_config(
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
routes = [ {{ path = "/", upstream = "app" }} ]
"#,
            a.addr
        ),
    );
    let proxy = Proxy::start(bin!(), dir.path(), &text);
    let stop = Instant::now() + Duration::from_secs(6);
    let ws = echo_websocket(proxy.plain_addr(), "galion.app", "/ws", stop).await;
    let load = ListenerLoad::start(&proxy, &cert, "/", stop);
    let moved_to = |o: &Origin| {
        let n = o.requests().len();
        let o = o.clone();
        move || {
            let o = o.clone();
            async move { o.requests().len() > n + 20 }
        }
    };
    tokio::time::sleep(Duration::from_millis(1000)).await;
    edit(&proxy.config_path, |t| {
        t.replace(&a.addr.to_string(), &b.addr.to_string())
    });
    proxy.signal("HUP");
    assert!(
        eventually(Duration::from_secs(3), moved_to(&b)).await,
        "SIGHUP moved nothing"
    );
    edit(&proxy.config_path, |t| {
        t.replace(&b.addr.to_string(), &a.addr.to_string())
    });
    let r = client()
        .post(format!("http://{}/reload", proxy.admin_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);
    assert!(
        eventually(Duration::from_secs(3), moved_to(&a)).await,
        "POST /reload moved nothing"
    );

    load.finish(300).await;
    let (echoed, ended) = ws.await.unwrap();
    assert_eq!(ended, None, "the WebSocket ended after {echoed} echoes");
    assert!(echoed >= 20, "{echoed} echoes");
}
