//! The two-zone cache through the real proxy: policy rules, zones and TTLs, Vary, restarts
//! (graceful and kill -9), corrupted entries, one fill for concurrent misses, stale-if-error,
//! capacity on disk, Range and conditional requests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::path::Path;
use std::time::Duration;

/// A site with an API route (api zone) and a frontend route (static extensions only).
fn config(api: &Origin, web: &Origin, api_size: &str) -> String {
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
size = "{api_size}"
memory_size = "256k"
max_object_size = "256k"
default_ttl = "10m"
stale_while_revalidate = "0s"
stale_if_error = "1m"

[cache.zones.static]
path = "{{dir}}/cache/static"
size = "8MB"
memory_size = "1MB"
default_ttl = "7d"
max_ttl = "7d"

[upstreams.api]
backends = ["{}"]
health_check = {{ kind = "none" }}
[upstreams.web]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/short/", upstream = "api", cache = "api", cache_ttl = "1m" }},
  {{ path = "/api/", upstream = "api", cache = "api" }},
  {{ path = "/nocache/", upstream = "api", cache = "off" }},
  {{ path = "/", upstream = "web" }},
]
"#,
            api.addr, web.addr
        ),
    )
    .replace("stale_while_revalidate = \"0s\"\n", "")
}

async fn get(proxy: &Proxy, path: &str, headers: &[(&str, &str)]) -> Fetched {
    fetch(proxy, "GET", path, headers).await
}

fn count(o: &Origin, path_prefix: &str) -> usize {
    o.requests()
        .iter()
        .filter(|r| r.uri.starts_with(path_prefix))
        .count()
}

async fn setup(api_size: &str) -> (Origin, Origin, tempfile::TempDir, Proxy) {
    let api = origin("api").await;
    let web = origin("web").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&api, &web, api_size));
    (api, web, dir, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn miss_then_hit_with_the_same_bytes_and_route_defaults() {
    let (api, web, _dir, proxy) = setup("64MB").await;
    let a = get(&proxy, "/api/users?page=1", &[]).await;
    let b = get(&proxy, "/api/users?page=1", &[]).await;
    assert_eq!((a.status, a.cache.as_str()), (200, "MISS"));
    assert_eq!((b.status, b.cache.as_str()), (200, "HIT"));
    assert_eq!(a.body, b.body, "a hit serves the stored bytes");
    assert_eq!(count(&api, "/api/users"), 1);
    assert_eq!(
        b.headers["x-content-type-options"], "nosniff",
        "headers on hits too"
    );
    // The query is part of the key.
    assert_eq!(get(&proxy, "/api/users?page=2", &[]).await.cache, "MISS");
    // A route with cache = "off" and a frontend page without a static extension: BYPASS.
    assert_eq!(get(&proxy, "/nocache/x", &[]).await.cache, "BYPASS");
    assert_eq!(get(&proxy, "/nocache/x", &[]).await.cache, "BYPASS");
    assert_eq!(get(&proxy, "/index.html", &[]).await.cache, "BYPASS");
    assert_eq!(get(&proxy, "/dashboard", &[]).await.cache, "BYPASS");
    assert_eq!(count(&api, "/nocache/"), 2);
    // POST is never cached.
    let r = client()
        .post(format!("http://{}/api/users?page=1", proxy.plain_addr()))
        .header("host", "galion.app")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache-status"], "BYPASS");
    assert_eq!(count(&api, "/api/users?page=1"), 2);
    let _ = web;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_extensions_go_to_the_static_zone_on_any_route() {
    let (_api, web, dir, proxy) = setup("64MB").await;
    for p in ["/assets/app.3f2a.js", "/assets/site.CSS", "/logo.svg"] {
        assert_eq!(get(&proxy, p, &[]).await.cache, "MISS", "{p}");
        assert_eq!(get(&proxy, p, &[]).await.cache, "HIT", "{p}");
    }
    assert_eq!(count(&web, "/"), 3);
    let files = |zone: &str| walk(&dir.path().join("cache").join(zone)).len();
    assert_eq!(files("static"), 3, "stored in the static zone");
    assert_eq!(files("api"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_cache_control_is_obeyed() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    for (path, cached) in [
        ("/api/a?cc=no-store", false),
        ("/api/b?cc=private", false),
        ("/api/c?cc=public%2C%20max-age%3D60", true),
        ("/api/d?cc=s-maxage%3D60%2C%20max-age%3D0", true),
        ("/api/e?cookie=1", false),
        ("/api/f?vary=*", false),
        ("/api/g?code=500", false),
        ("/api/h?code=404", true),
    ] {
        let first = get(&proxy, path, &[]).await;
        let second = get(&proxy, path, &[]).await;
        let prefix = path.split('?').next().unwrap();
        if cached {
            assert_eq!(second.cache, "HIT", "{path}");
            assert_eq!(count(&api, prefix), 1, "{path}");
        } else {
            assert_ne!(second.cache, "HIT", "{path}: {}", second.cache);
            assert_eq!(count(&api, prefix), 2, "{path}");
        }
        let _ = first;
    }
    // max-age=0 / no-cache: stored but revalidated every time (origin answers 304 to its ETag).
    let p = "/api/etag?cc=no-cache&etag=%22v1%22";
    assert_eq!(get(&proxy, p, &[]).await.cache, "MISS");
    let again = get(&proxy, p, &[]).await;
    assert_eq!(again.cache, "REVALIDATED");
    assert_eq!(again.status, 200);
    let seen = api.requests();
    let reval = seen
        .iter()
        .filter(|r| r.uri.starts_with("/api/etag"))
        .nth(1)
        .unwrap();
    assert_eq!(
        reval.header("if-none-match"),
        Some("\"v1\""),
        "revalidated with If-None-Match"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_bypasses_unless_public() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    let auth = [("authorization", "Bearer user-one")];
    get(&proxy, "/api/me", &auth).await;
    let second = get(&proxy, "/api/me", &[("authorization", "Bearer user-two")]).await;
    assert_ne!(
        second.cache, "HIT",
        "one user's answer is never served to another"
    );
    assert_eq!(count(&api, "/api/me"), 2);
    get(&proxy, "/api/pub?cc=public%2C%20max-age%3D60", &auth).await;
    let hit = get(&proxy, "/api/pub?cc=public%2C%20max-age%3D60", &auth).await;
    assert_eq!(
        hit.cache, "HIT",
        "public responses to authorized requests may be stored"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vary_accept_encoding_is_normalised_and_keeps_variants_apart() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    let p = "/api/v?vary=Accept-Encoding";
    let br1 = get(&proxy, p, &[("accept-encoding", "gzip, deflate, br")]).await;
    let br2 = get(&proxy, p, &[("accept-encoding", "br")]).await;
    let gz = get(&proxy, p, &[("accept-encoding", "gzip")]).await;
    let gz2 = get(&proxy, p, &[("accept-encoding", "gzip, br;q=0")]).await;
    let id = get(&proxy, p, &[]).await;
    assert_eq!(br1.cache, "MISS");
    assert_eq!(br2.cache, "HIT", "same normalised encoding");
    assert_eq!(br1.body, br2.body);
    assert_eq!(gz.cache, "MISS", "another variant");
    assert_eq!(gz2.cache, "HIT");
    assert_eq!(id.cache, "MISS");
    assert_eq!(count(&api, "/api/v"), 3);
    // Vary on another header: each value its own variant.
    let p = "/api/lang?vary=Accept-Language";
    let en = get(&proxy, p, &[("accept-language", "en")]).await;
    let fr = get(&proxy, p, &[("accept-language", "fr")]).await;
    assert_eq!((en.cache.as_str(), fr.cache.as_str()), ("MISS", "MISS"));
    assert_eq!(
        get(&proxy, p, &[("accept-language", "en")]).await.body,
        en.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_and_range_requests_are_answered_from_cache() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    let p = "/api/doc?etag=%22abc%22&cc=max-age%3D60";
    let full = get(&proxy, p, &[]).await;
    assert_eq!(full.cache, "MISS");
    let cond = get(&proxy, p, &[("if-none-match", "\"abc\"")]).await;
    assert_eq!(cond.status, 304);
    let range = get(&proxy, p, &[("range", "bytes=0-9")]).await;
    assert_eq!(range.status, 206);
    assert_eq!(range.body, full.body.slice(0..10));
    assert_eq!(
        count(&api, "/api/doc"),
        1,
        "both answered from the stored object"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_misses_make_one_upstream_request() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    let proxy = std::sync::Arc::new(proxy);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let proxy = proxy.clone();
        tasks.push(tokio::spawn(async move {
            get(&proxy, "/api/slow?ms=500", &[]).await
        }));
    }
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    assert_eq!(
        count(&api, "/api/slow"),
        1,
        "the cache lock let one request through"
    );
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "everyone got the one fill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_is_served_while_the_origin_is_down_or_failing() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    // The origin fails with 503 after expiry: stale-if-error.
    let p = "/api/feed?cc=max-age%3D1%2C%20stale-while-revalidate%3D0%2C%20stale-if-error%3D60";
    let fresh = get(&proxy, p, &[]).await;
    assert_eq!(fresh.cache, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    api.set_failing(true);
    let stale = get(&proxy, p, &[]).await;
    assert_eq!(
        stale.status, 200,
        "served stale instead of the origin's 503"
    );
    assert_eq!(stale.cache, "STALE");
    assert_eq!(stale.body, fresh.body);
    // The origin is down: connections refused.
    api.stop();
    let stale = get(&proxy, p, &[]).await;
    assert_eq!(stale.status, 200, "served stale instead of a 502");
    assert_eq!(stale.cache, "STALE");
    assert_eq!(stale.body, fresh.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_behind() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    let p = "/api/news?cc=max-age%3D1%2C%20stale-while-revalidate%3D30";
    let first = get(&proxy, p, &[]).await;
    assert_eq!(first.cache, "MISS");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = get(&proxy, p, &[]).await;
    assert_eq!(stale.cache, "UPDATING");
    assert_eq!(stale.body, first.body, "the stale copy, at once");
    let refreshed = eventually(Duration::from_secs(5), || async {
        count(&api, "/api/news") == 2
    })
    .await;
    assert!(refreshed, "a background refresh reached the origin");
    let next = eventually(Duration::from_secs(5), || async {
        let r = get(&proxy, p, &[]).await;
        r.cache == "HIT" && r.body != first.body
    })
    .await;
    assert!(next, "the refreshed copy is served afterwards");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_is_revalidated_and_never_served_stale() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    let p = "/api/strict?cc=no-cache&etag=%22v1%22";
    assert_eq!(get(&proxy, p, &[]).await.cache, "MISS");
    assert_eq!(get(&proxy, p, &[]).await.cache, "REVALIDATED");
    api.stop();
    let r = get(&proxy, p, &[]).await;
    assert_eq!(
        r.status, 502,
        "no stale copy for no-cache when the origin is down"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().is_some_and(|n| n == "tmp") {
                continue;
            }
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_survive_graceful_restart_and_kill_9() {
    let (api, _web, _dir, mut proxy) = setup("64MB").await;
    let paths: Vec<String> = (0..20).map(|i| format!("/api/item/{i}")).collect();
    let mut bodies = Vec::new();
    for p in &paths {
        bodies.push(get(&proxy, p, &[]).await.body);
    }
    proxy.terminate();
    proxy.restart(bin!());
    for (p, b) in paths.iter().zip(&bodies) {
        let r = get(&proxy, p, &[]).await;
        assert_eq!(r.cache, "HIT", "{p} after a graceful restart");
        assert_eq!(&r.body, b);
    }
    // More writes, then kill -9 right after them.
    let more: Vec<String> = (20..40).map(|i| format!("/api/item/{i}")).collect();
    let mut more_bodies = Vec::new();
    for p in &more {
        more_bodies.push(get(&proxy, p, &[]).await.body);
    }
    proxy.kill9();
    proxy.restart(bin!());
    for (p, b) in paths
        .iter()
        .chain(&more)
        .zip(bodies.iter().chain(&more_bodies))
    {
        let r = get(&proxy, p, &[]).await;
        assert_eq!(r.cache, "HIT", "{p} after kill -9");
        assert_eq!(&r.body, b, "{p}: never wrong bytes");
    }
    assert_eq!(
        count(&api, "/api/item/"),
        40,
        "no refetch after either restart"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_entry_is_a_miss_never_wrong_bytes() {
    let (api, _web, dir, mut proxy) = setup("64MB").await;
    let a = get(&proxy, "/api/precious", &[]).await;
    assert_eq!(a.cache, "MISS");
    // Restart so the memory tier is empty, corrupting the file in between.
    proxy.terminate();
    let files = walk(&dir.path().join("cache").join("api"));
    assert_eq!(files.len(), 1);
    let mut bytes = std::fs::read(&files[0]).unwrap();
    bytes[5] ^= 0x20;
    std::fs::write(&files[0], &bytes).unwrap();
    proxy.restart(bin!());
    let b = get(&proxy, "/api/precious", &[]).await;
    assert_eq!(b.status, 200);
    assert_eq!(b.cache, "MISS", "the corrupted entry was not served");
    assert_eq!(count(&api, "/api/precious"), 2);
    let c = get(&proxy, "/api/precious", &[]).await;
    assert_eq!(c.cache, "HIT", "and it was replaced by a good one");
    assert_eq!(c.body, b.body);
    // A truncated file, and garbage under a valid name.
    proxy.terminate();
    let files = walk(&dir.path().join("cache").join("api"));
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&files[0], &bytes[..bytes.len() / 2]).unwrap();
    proxy.restart(bin!());
    let d = get(&proxy, "/api/precious", &[]).await;
    assert_eq!((d.status, d.cache.as_str()), (200, "MISS"));
    assert!(!proxy.stderr().contains("panicked"), "{}", proxy.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_use_stays_within_five_percent_of_the_zone_size() {
    // A 2 MiB zone (max object 256 KiB), filled with 3x its size in 64 KiB objects.
    let (_api, _web, dir, proxy) = setup("2MB").await;
    let zone = 2u64 << 20;
    for i in 0..96 {
        let r = get(&proxy, &format!("/api/blob/{i}/bytes?n=65536"), &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 65536);
    }
    // Eviction purges run in a task Pingora spawns after a fill completes: on a loaded machine
    // the last ones may lag the response by a moment, and a file may go between listing and
    // stat. Wait (bounded) for them to land.
    let used = || -> u64 {
        walk(&dir.path().join("cache").join("api"))
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len().div_ceil(4096) * 4096)
            .sum()
    };
    eventually(Duration::from_secs(5), || async {
        used() <= zone + zone / 20
    })
    .await;
    let on_disk = used();
    assert!(
        on_disk <= zone + zone / 20,
        "{on_disk} bytes on disk for a {zone}-byte zone"
    );
    assert!(
        on_disk >= zone / 2,
        "the zone is used, not emptied: {on_disk}"
    );
    // The most recent objects are the ones kept.
    assert_eq!(
        get(&proxy, "/api/blob/95/bytes?n=65536", &[]).await.cache,
        "HIT"
    );
    assert_ne!(
        get(&proxy, "/api/blob/0/bytes?n=65536", &[]).await.cache,
        "HIT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_over_the_limit_pass_through_uncached() {
    let (api, _web, dir, proxy) = setup("64MB").await;
    let p = "/api/huge/bytes?n=1048576";
    let a = get(&proxy, p, &[]).await;
    let b = get(&proxy, p, &[]).await;
    assert_eq!(a.body.len(), 1 << 20);
    assert_eq!(b.body.len(), 1 << 20);
    assert_ne!(b.cache, "HIT");
    assert_eq!(count(&api, "/api/huge"), 2);
    assert!(walk(&dir.path().join("cache").join("api")).is_empty());
    assert!(
        std::fs::read_dir(dir.path().join("cache/api/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temp file left"
    );
}

async fn purge(proxy: &Proxy, query: &str) -> (u16, serde_json::Value) {
    let r = client()
        .post(format!("http://{}/cache/purge?{query}", proxy.admin_addr()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_url_prefix_zone_and_all() {
    let (_api, _web, _dir, proxy) = setup("64MB").await;
    for p in [
        "/api/a",
        "/api/b?x=1",
        "/api/users/1",
        "/api/users/2",
        "/app.js",
    ] {
        get(&proxy, p, &[]).await;
        assert_eq!(get(&proxy, p, &[]).await.cache, "HIT", "{p}");
    }

    // One URL (every variant): only it is a miss afterwards.
    let (status, v) = purge(&proxy, "url=http%3A%2F%2Fgalion.app%2Fapi%2Fb%3Fx%3D1").await;
    assert_eq!((status, v["purged"].as_u64()), (200, Some(1)));
    assert_eq!(get(&proxy, "/api/b?x=1", &[]).await.cache, "MISS");
    assert_eq!(get(&proxy, "/api/a", &[]).await.cache, "HIT");

    // A prefix, given with the other scheme: matched without it.
    let (_, v) = purge(&proxy, "prefix=https://galion.app/api/users/").await;
    assert_eq!(v["purged"].as_u64(), Some(2));
    assert_eq!(get(&proxy, "/api/users/1", &[]).await.cache, "MISS");
    assert_eq!(get(&proxy, "/api/a", &[]).await.cache, "HIT");

    // A zone: api goes, static stays.
    let (_, v) = purge(&proxy, "zone=api").await;
    assert!(v["purged"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(get(&proxy, "/api/a", &[]).await.cache, "MISS");
    assert_eq!(get(&proxy, "/app.js", &[]).await.cache, "HIT");

    // Everything.
    let (_, v) = purge(&proxy, "all=1").await;
    assert!(v["purged"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(get(&proxy, "/app.js", &[]).await.cache, "MISS");

    // Bad purges are refused with a reason; GET is not a purge.
    assert_eq!(purge(&proxy, "zone=nope").await.0, 400);
    assert_eq!(purge(&proxy, "").await.0, 400);
    assert_eq!(purge(&proxy, "prefix=https://").await.0, 400);
    let r = client()
        .get(format!("http://{}/cache/purge?all=1", proxy.admin_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);

    // Stats count what happened.
    let stats = cache_stats(&proxy).await;
    let api_zone = &stats["zones"]["api"];
    assert!(api_zone["memory_hits"].as_u64().unwrap() >= 4, "{stats}");
    assert!(api_zone["fills"].as_u64().unwrap() >= 6, "{stats}");
    assert_eq!(api_zone["size"].as_u64(), Some(64 << 20));
}

/// The freshness lifetime stored with an entry, read back from its file on disk.
fn stored_ttls(zone_dir: &Path) -> Vec<(String, Duration)> {
    walk(zone_dir)
        .iter()
        .map(|p| {
            let bytes = std::fs::read(p).unwrap();
            let name = p.file_name().unwrap().to_str().unwrap();
            let mut key = [0u8; 16];
            for (i, b) in key.iter_mut().enumerate() {
                *b = u8::from_str_radix(&name[2 * i..2 * i + 2], 16).unwrap();
            }
            let (footer, _) = proxy_core::decode_cache_entry(&bytes, &key).unwrap();
            let meta =
                proxy_core::pingora::cache::CacheMeta::deserialize(&footer.meta.0, &footer.meta.1)
                    .unwrap();
            let ttl = meta.fresh_until().duration_since(meta.created()).unwrap();
            (footer.url, ttl)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_zone_stores_with_its_ttl() {
    let (_api, _web, dir, proxy) = setup("64MB").await;
    get(&proxy, "/api/default", &[]).await;
    get(&proxy, "/api/short/x", &[]).await;
    get(&proxy, "/api/explicit?cc=max-age%3D90", &[]).await;
    get(&proxy, "/bundle.js", &[]).await;
    let near = |d: Duration, want: u64| d.as_secs().abs_diff(want) <= 2;
    let api = stored_ttls(&dir.path().join("cache/api"));
    let by_url = |u: &str| api.iter().find(|(url, _)| url.ends_with(u)).unwrap().1;
    assert!(
        near(by_url("/api/default"), 600),
        "api zone default 10m: {api:?}"
    );
    assert!(
        near(by_url("/api/short/x"), 60),
        "route cache_ttl 1m: {api:?}"
    );
    assert!(
        near(by_url("/api/explicit?cc=max-age%3D90"), 90),
        "origin max-age wins: {api:?}"
    );
    let stat = stored_ttls(&dir.path().join("cache/static"));
    assert_eq!(stat.len(), 1);
    assert!(
        near(stat[0].1, 7 * 24 * 3600),
        "static zone 7 days: {stat:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_entry_without_validator_is_fetched_again() {
    let (api, _web, _dir, proxy) = setup("64MB").await;
    // 2 s: a response received in the second after the one its `Date` names is already a
    // second old (RFC 9111 §4.2.3), so a 1 s lifetime could be over before the second request.
    let p = "/api/tick?cc=max-age%3D2%2C%20stale-while-revalidate%3D0%2C%20stale-if-error%3D0";
    let a = get(&proxy, p, &[]).await;
    assert_eq!(a.cache, "MISS");
    assert_eq!(get(&proxy, p, &[]).await.cache, "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let b = get(&proxy, p, &[]).await;
    assert_eq!(b.cache, "EXPIRED");
    assert_ne!(a.body, b.body, "a new copy from the origin");
    assert_eq!(count(&api, "/api/tick"), 2);
    assert_eq!(get(&proxy, p, &[]).await.cache, "HIT");
}

/// Over HTTP/2 a hit ends its stream on its last DATA frame, with no empty DATA frame after it
/// (the proxy holds each body chunk back until it knows whether it is the last), and carries
/// the same bytes as the miss, for empty, small and multi-frame bodies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_hits_end_the_stream_on_their_last_data_frame() {
    use galion_edge_tests::h2raw::*;
    use tokio::io::AsyncWriteExt;

    let api = origin("api").await;
    let web = origin("web").await;
    let dir = tempfile::tempdir().unwrap();
    let cert = gen_cert(&["galion.app"]);
    let (c, k) = cert.write(dir.path(), "app");
    let text = config(&api, &web, "64MB")
        .replace(
            "http_proxy = [\"127.0.0.1:{plain}\"]",
            "https = [\"127.0.0.1:{https}\"]\nhttp = [\"127.0.0.1:{http}\"]\nhttp_proxy = [\"127.0.0.1:{plain}\"]",
        )
        .replace(
            "hosts = [\"galion.app\"]\n",
            &format!("hosts = [\"galion.app\"]\ntls = {{ cert = {c:?}, key = {k:?} }}\n"),
        );
    assert!(text.contains("https = ") && text.contains("tls = "));
    let proxy = Proxy::start(bin!(), dir.path(), &text);

    let tls = tls_h2(proxy.https_addr(), &cert).await;
    let (mut rd, mut wr) = tokio::io::split(tls);
    // Large windows, so no body waits for a WINDOW_UPDATE.
    let mut start = PREFACE.to_vec();
    start.extend(frame(SETTINGS, 0, 0, &[0x00, 0x04, 0x3f, 0xff, 0xff, 0xff]));
    start.extend(frame(WINDOW_UPDATE, 0, 0, &0x3fff_0000u32.to_be_bytes()));
    wr.write_all(&start).await.unwrap();

    let mut stream = 1;
    for n in [0usize, 1, 1000, 100_000] {
        let path = format!("/api/bytes?n={n}");
        let mut bodies = Vec::new();
        for _ in 0..2 {
            wr.write_all(&get_headers(stream, "galion.app", &path))
                .await
                .unwrap();
            // (DATA payload length, flags) of this stream, until END_STREAM.
            let mut data = Vec::new();
            let mut body = Vec::new();
            loop {
                let (kind, flags, id, payload) = next_frame(&mut rd, &mut wr).await;
                if id != stream {
                    continue;
                }
                if kind == DATA {
                    data.push((payload.len(), flags));
                    body.extend_from_slice(&payload);
                }
                if (kind == DATA || kind == HEADERS) && flags & END_STREAM != 0 {
                    break;
                }
            }
            bodies.push((body, data));
            stream += 2;
        }
        assert_eq!(count(&api, &path), 1, "{path}: the second answer was a hit");
        let (miss, _) = &bodies[0];
        let (hit, frames) = &bodies[1];
        assert_eq!(miss.len(), n, "{path}");
        assert_eq!(hit, miss, "{path}: the hit has the miss's bytes");
        if n > 0 {
            let (last_len, last_flags) = *frames.last().unwrap();
            assert!(
                last_flags & END_STREAM != 0 && last_len > 0,
                "{path}: the last DATA frame carries bytes and END_STREAM: {frames:?}"
            );
            assert!(
                frames.iter().all(|&(len, _)| len > 0),
                "{path}: no empty DATA frame: {frames:?}"
            );
        }
    }
}
