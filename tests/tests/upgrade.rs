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
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let sent = Arc::new(AtomicUsize::new(0));
    let stop = Instant::now() + Duration::from_secs(10);
    let base = format!("http://{}", proxy.plain_addr());
    let mut load = Vec::new();
    for t in 0..4 {
        let (failures, sent, base) = (failures.clone(), sent.clone(), base.clone());
        load.push(tokio::spawn(async move {
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
    tokio::time::sleep(Duration::from_millis(300)).await;
    let old_pid = proxy.pid();
    tokio::task::block_in_place(|| proxy.upgrade(bin!()));
    for t in load {
        t.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    assert!(sent.load(Ordering::Relaxed) >= 100, "the load run ran");
    assert!(
        failures.is_empty(),
        "{} failed requests: {failures:?}\n{}",
        failures.len(),
        proxy.stderr()
    );

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
