//! RFC 9111 (HTTP caching) for a shared cache, one test per requirement, against the real
//! binary. Zones: `rfc` with `freshness = "origin"` (the origin alone decides; a 10% heuristic
//! capped at 6 s), `bare` in origin mode without a heuristic, and `api` in the default policy
//! mode (a proxy-chosen TTL when the origin says nothing). Routes `/o/`, `/n/` and `/p/` use
//! them. The sample origin adds any header asked for with `h-NAME=VALUE` (`h304-NAME=VALUE` on
//! 304s only) and answers `If-None-Match` with 304 when `etag=` matches.
//!
//! docs/cache.md's RFC 9111 table names the test of each requirement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use std::time::{Duration, SystemTime};

fn config(api: &Origin, cache_extra: &str) -> String {
    base_config(
        false,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[cache]
{cache_extra}

[cache.zones.rfc]
path = "{{dir}}/cache/rfc"
size = "16MB"
freshness = "origin"
heuristic = "10%"
heuristic_max = "6s"

[cache.zones.bare]
path = "{{dir}}/cache/bare"
size = "16MB"
freshness = "origin"

[cache.zones.api]
path = "{{dir}}/cache/api"
size = "16MB"
default_ttl = "10m"
stale_if_error = "10m"

[upstreams.api]
backends = ["{}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/o/", upstream = "api", cache = "rfc" }},
  {{ path = "/n/", upstream = "api", cache = "bare" }},
  {{ path = "/p/", upstream = "api", cache = "api" }},
  {{ path = "/", upstream = "api", cache = "off" }},
]
"#,
            api.addr
        ),
    )
}

struct Env {
    api: Origin,
    proxy: Proxy,
    _dir: tempfile::TempDir,
}

async fn setup() -> Env {
    setup_with("").await
}

async fn setup_with(cache_extra: &str) -> Env {
    let api = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start(bin!(), dir.path(), &config(&api, cache_extra));
    Env {
        api,
        proxy,
        _dir: dir,
    }
}

/// `Age` of an answer, if it has one.
fn age(r: &Fetched) -> Option<u64> {
    r.header("age").map(|a| a.parse().unwrap())
}

impl Env {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Fetched {
        fetch(&self.proxy, "GET", path, headers).await
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> Fetched {
        fetch(&self.proxy, method, path, headers).await
    }

    /// The statuses of `X-Cache-Status` for `path` fetched `n` times in a row.
    async fn labels(&self, path: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(self.get(path, &[]).await.cache);
        }
        out
    }

    /// Requests the origin received for exactly this target.
    fn seen(&self, path: &str) -> Vec<Recorded> {
        self.api
            .requests()
            .into_iter()
            .filter(|r| r.uri == path)
            .collect()
    }
}

/// `application/x-www-form-urlencoded`-style escaping for a query value.
fn q(v: &str) -> String {
    let mut out = String::new();
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn http_date(t: SystemTime) -> String {
    httpdate::fmt_http_date(t)
}

fn labels(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// What `X-Cache-Status` says for a stored response that is stale when it is next asked for:
/// in origin mode it is validated (`REVALIDATED` with a validator, else fetched again:
/// `EXPIRED`); in policy mode the zone's default `stale_while_revalidate` (30 s) serves it
/// stale while it is refreshed in the background (`UPDATING`).
fn stale(zone: &str, validator: bool) -> &'static str {
    match (zone, validator) {
        ("p", _) => "UPDATING",
        (_, true) => "REVALIDATED",
        (_, false) => "EXPIRED",
    }
}

/// §4.2.1: `s-maxage` over `max-age` over `Expires`, in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_s_maxage_over_max_age_over_expires() {
    let env = setup().await;
    let hour = http_date(SystemTime::now() + Duration::from_secs(3600));
    for zone in ["o", "p"] {
        let s_maxage = format!(
            "/{zone}/a?cc={}&h-expires={}",
            q("s-maxage=2, max-age=600"),
            q(&hour)
        );
        let max_age = format!("/{zone}/b?cc={}&h-expires={}", q("max-age=2"), q(&hour));
        let expires = format!("/{zone}/c?h-expires={}", q(&hour));
        for p in [&s_maxage, &max_age, &expires] {
            assert_eq!(env.labels(p, 2).await, labels(&["MISS", "HIT"]), "{p}");
        }
        // Lifetimes of 2 s: `Date` has whole seconds, so a response received in the second
        // after the one its `Date` names is already a second old (RFC 9111 §4.2.3).
        tokio::time::sleep(Duration::from_millis(2200)).await;
        // `s-maxage` forbids serving stale (§5.2.2.10): no stale-while-revalidate either.
        assert_eq!(env.get(&s_maxage, &[]).await.cache, "EXPIRED", "{s_maxage}");
        assert_eq!(
            env.get(&max_age, &[]).await.cache,
            stale(zone, false),
            "{max_age}"
        );
        assert_eq!(env.get(&expires, &[]).await.cache, "HIT", "{expires}");
    }
}

/// §4.2.1: invalid, negative and duplicated-but-different values make the response stale
/// (stored, revalidated on every use), in both modes; the same value twice is one value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_negative_and_duplicated_values_are_stale() {
    let env = setup().await;
    for zone in ["o", "p"] {
        for (i, cc) in ["max-age=-1", "max-age=abc", "max-age=1.5"]
            .iter()
            .enumerate()
        {
            let p = format!("/{zone}/inv{i}?etag=%22v%22&cc={}", q(cc));
            assert_eq!(
                env.labels(&p, 2).await,
                labels(&["MISS", stale(zone, true)]),
                "{p}"
            );
        }
        // `s-maxage` without a value: stale, and (being there) it forbids stale answers.
        let p = format!("/{zone}/inv-s?etag=%22v%22&cc=s-maxage%3D");
        assert_eq!(
            env.labels(&p, 2).await,
            labels(&["MISS", "REVALIDATED"]),
            "{p}"
        );
        let dup = format!(
            "/{zone}/dup?etag=%22v%22&h-cache-control=max-age%3D60&h-cache-control=max-age%3D120"
        );
        assert_eq!(
            env.labels(&dup, 2).await,
            labels(&["MISS", stale(zone, true)]),
            "{dup}"
        );
        let same =
            format!("/{zone}/same?h-cache-control=max-age%3D60&h-cache-control=max-age%3D60");
        assert_eq!(
            env.labels(&same, 2).await,
            labels(&["MISS", "HIT"]),
            "{same}"
        );
    }
}

/// §4.2.1 and §5.3: an `Expires` in the past, unparseable, `0`, or given twice with different
/// values is already expired (and, in policy mode, explicit: no proxy TTL replaces it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expires_in_the_past_or_unparseable_is_expired() {
    let env = setup().await;
    let past = http_date(SystemTime::now() - Duration::from_secs(3600));
    let a = http_date(SystemTime::now() + Duration::from_secs(3600));
    let b = http_date(SystemTime::now() + Duration::from_secs(7200));
    for zone in ["o", "p"] {
        for (i, exp) in [
            format!("h-expires={}", q(&past)),
            "h-expires=0".to_string(),
            "h-expires=next%20week".to_string(),
            format!("h-expires={}&h-expires={}", q(&a), q(&b)),
        ]
        .iter()
        .enumerate()
        {
            let p = format!("/{zone}/exp{i}?etag=%22v%22&{exp}");
            assert_eq!(
                env.labels(&p, 2).await,
                labels(&["MISS", stale(zone, true)]),
                "{p}"
            );
        }
    }
}

/// §4.2.3 and §5.1: the `Age` a response arrives with, and a `Date` in the past, count against
/// its lifetime; every answer from the cache carries `Age`, from where the upstream's left off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_age_and_date_count_and_hits_carry_age() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let p = format!("/{zone}/age?cc=max-age%3D600&h-age=100");
        assert_eq!(env.get(&p, &[]).await.cache, "MISS");
        let hit = env.get(&p, &[]).await;
        assert_eq!(hit.cache, "HIT");
        let got = age(&hit).expect("Age on a hit");
        assert!((100..=102).contains(&got), "Age {got}, expected 100 and up");
        // Already older than its lifetime when it arrived: stale at once.
        let old = format!("/{zone}/old?cc=max-age%3D60&h-age=61&etag=%22v%22");
        assert_eq!(
            env.labels(&old, 2).await,
            labels(&["MISS", stale(zone, true)]),
            "{old}"
        );
        // A Date 100 s in the past: its apparent age is 100 s, stale by 40 s (past the policy
        // zone's 30 s stale-while-revalidate too).
        let date = http_date(SystemTime::now() - Duration::from_secs(100));
        let dated = format!(
            "/{zone}/dated?cc=max-age%3D60&etag=%22v%22&h-date={}",
            q(&date)
        );
        assert_eq!(
            env.labels(&dated, 2).await,
            labels(&["MISS", "REVALIDATED"]),
            "{dated}"
        );
        let recent = format!("/{zone}/recent?cc=max-age%3D600&h-date={}", q(&date));
        assert_eq!(env.get(&recent, &[]).await.cache, "MISS");
        let hit = env.get(&recent, &[]).await;
        assert_eq!(hit.cache, "HIT");
        assert!(age(&hit).unwrap() >= 100, "{:?}", age(&hit));
        // A list or an invalid value: the first member, or nothing.
        let list = format!("/{zone}/list?cc=max-age%3D600&h-age={}", q("50, 500"));
        env.get(&list, &[]).await;
        let got = age(&env.get(&list, &[]).await).unwrap();
        assert!((50..=52).contains(&got), "{got}");
        let bad = format!("/{zone}/bad?cc=max-age%3D600&h-age=-7");
        env.get(&bad, &[]).await;
        assert!(age(&env.get(&bad, &[]).await).unwrap() <= 2);
    }
}

/// §4.2.2: in origin mode a response without explicit freshness is fresh for a fraction of the
/// time since `Last-Modified` (10% here), bounded (6 s here), only for heuristically cacheable
/// statuses or `public`. Without a heuristic it is stored only to be revalidated, and only
/// with a validator. Policy mode applies the zone's TTL instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heuristic_freshness_follows_last_modified_bounded() {
    let env = setup().await;
    let ago = |s: u64| q(&http_date(SystemTime::now() - Duration::from_secs(s)));
    // 10% of 30 s: fresh for 3 s. 10% of 100 days: capped at 6 s.
    let thirty = format!("/o/h30?h-last-modified={}", ago(30));
    let long = format!("/o/hlong?h-last-modified={}", ago(100 * 86400));
    let found = format!("/o/h302?code=302&h-last-modified={}", ago(10_000));
    let public = format!("/o/hpub?code=302&cc=public&h-last-modified={}", ago(10_000));
    assert_eq!(env.labels(&thirty, 2).await, labels(&["MISS", "HIT"]));
    assert_eq!(env.labels(&long, 2).await, labels(&["MISS", "HIT"]));
    assert_eq!(env.labels(&found, 2).await, labels(&["BYPASS", "BYPASS"]));
    assert_eq!(env.labels(&public, 2).await, labels(&["MISS", "HIT"]));
    // (Whole seconds of Date and Last-Modified make each lifetime up to 0.1 s longer.)
    tokio::time::sleep(Duration::from_millis(3300)).await;
    assert_eq!(env.get(&thirty, &[]).await.cache, "EXPIRED");
    assert_eq!(env.get(&long, &[]).await.cache, "HIT");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    assert_eq!(env.get(&long, &[]).await.cache, "EXPIRED");
    // Origin mode without a heuristic: stored stale with a validator, not stored without one.
    let lm = format!("/n/lm?h-last-modified={}", ago(10_000));
    let etag = "/n/etag?etag=%22v%22";
    let nothing = "/n/nothing";
    assert_eq!(env.labels(&lm, 2).await, labels(&["MISS", "EXPIRED"]));
    assert_eq!(env.labels(etag, 2).await, labels(&["MISS", "REVALIDATED"]));
    assert_eq!(env.labels(nothing, 2).await, labels(&["BYPASS", "BYPASS"]));
    // The revalidation asked with the stored validators.
    assert_eq!(env.seen(etag)[1].header("if-none-match"), Some("\"v\""));
    let lm_seen = env.seen(&lm);
    assert!(
        lm_seen[1].header("if-modified-since").is_some(),
        "{lm_seen:?}"
    );
    // Policy mode: the zone's TTL.
    assert_eq!(env.labels("/p/nothing", 2).await, labels(&["MISS", "HIT"]));
}

/// §4.3.4: a 304 updates the stored response's headers with its own (a changed header is what
/// the next hit serves, and a new `Cache-Control` gives the new lifetime), except the fields
/// the stored body depends on and `Set-Cookie`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_304_updates_the_stored_headers() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let p = format!(
            "/{zone}/upd?etag=%22v1%22&h-cache-control=max-age%3D1&h-x-version=1&h304-x-version=2\
             &h304-cache-control=max-age%3D600&h304-set-cookie=s%3D1&h304-x-added=yes"
        );
        let first = env.get(&p, &[]).await;
        assert_eq!(
            (first.cache.as_str(), first.header("x-version")),
            ("MISS", Some("1"))
        );
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let reval = env.get(&p, &[]).await;
        assert_eq!(reval.cache, stale(zone, true), "{p}");
        assert_eq!(reval.body, first.body, "the stored body is served");
        // In policy mode the refresh runs in the background: wait for it.
        let mut hit = env.get(&p, &[]).await;
        for _ in 0..50 {
            if hit.header("x-version") == Some("2") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            hit = env.get(&p, &[]).await;
        }
        assert_eq!(hit.cache, "HIT", "{p}: the 304's max-age=600 applies");
        assert_eq!(
            hit.header("x-version"),
            Some("2"),
            "{p}: the 304's header is stored"
        );
        assert_eq!(hit.header("x-added"), Some("yes"));
        assert_eq!(
            hit.header("set-cookie"),
            None,
            "a 304's Set-Cookie is never stored"
        );
        assert_eq!(
            hit.header("content-length")
                .map(|l| l.parse::<usize>().unwrap()),
            Some(first.body.len())
        );
        assert_eq!(env.seen(&p).len(), 2);
    }
}

/// §5.2.1.1, §5.2.1.3, §5.2.1.4: request `max-age`, `min-fresh` and `no-cache` make a stored
/// response be validated first (origin mode); policy mode ignores them (the operator's TTLs
/// decide, as nginx does).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_age_min_fresh_and_no_cache() {
    let env = setup().await;
    let p = "/o/req?etag=%22v%22&cc=max-age%3D600";
    env.get(p, &[]).await;
    for (cc, want) in [
        ("max-age=600", "HIT"),
        ("max-age=0", "REVALIDATED"),
        ("min-fresh=100", "HIT"),
        ("min-fresh=700", "REVALIDATED"),
        ("no-cache", "REVALIDATED"),
        ("max-age=abc", "HIT"),
    ] {
        let r = env.get(p, &[("cache-control", cc)]).await;
        assert_eq!(r.cache, want, "{cc}");
    }
    let seen = env.seen(p);
    assert_eq!(seen.len(), 4, "one fill, three validations");
    assert!(seen[1..]
        .iter()
        .all(|r| r.header("if-none-match") == Some("\"v\"")));
    // Policy mode: stored by the zone's TTL, and the client's directives do not refetch it.
    let p = "/p/req?etag=%22v%22";
    env.get(p, &[]).await;
    for cc in ["max-age=0", "no-cache", "min-fresh=700"] {
        assert_eq!(
            env.get(p, &[("cache-control", cc)]).await.cache,
            "HIT",
            "{cc}"
        );
    }
}

/// §5.2.1.2: request `max-stale` lets a stale response be served without validation, within
/// its bound, unless the response forbids it (`must-revalidate`, `proxy-revalidate`,
/// `s-maxage`, `no-cache`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_max_stale() {
    let env = setup().await;
    let ok = "/o/ms?cc=max-age%3D1";
    let strict = ["must-revalidate", "proxy-revalidate"]
        .map(|d| format!("/o/ms-{d}?cc={}", q(&format!("max-age=1, {d}"))));
    let smax = "/o/ms-s?cc=s-maxage%3D1".to_string();
    env.get(ok, &[]).await;
    for p in strict.iter().chain([&smax]) {
        env.get(p, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let r = env.get(ok, &[("cache-control", "max-stale")]).await;
    assert_eq!(r.cache, "HIT");
    assert!(age(&r).unwrap() >= 2);
    assert_eq!(
        env.get(ok, &[("cache-control", "max-stale=60")])
            .await
            .cache,
        "HIT"
    );
    assert_eq!(env.seen(ok).len(), 1, "served stale without going upstream");
    // Stale by more than the bound: fetched.
    assert_eq!(
        env.get(ok, &[("cache-control", "max-stale=0")]).await.cache,
        "EXPIRED"
    );
    for p in strict.iter().chain([&smax]) {
        let r = env.get(p, &[("cache-control", "max-stale")]).await;
        assert_eq!(r.cache, "EXPIRED", "{p}");
        assert_eq!(env.seen(p).len(), 2, "{p}");
    }
}

/// §5.2.1.5: a request's `no-store` keeps its response out of the cache, in both modes (a
/// stored response may still answer it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_no_store() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let p = format!("/{zone}/ns?cc=max-age%3D600");
        let ns = [("cache-control", "no-store")];
        assert_eq!(env.get(&p, &ns).await.cache, "BYPASS");
        assert_eq!(env.labels(&p, 2).await, labels(&["MISS", "HIT"]));
        assert_eq!(env.get(&p, &ns).await.cache, "HIT");
    }
    let log = env
        .proxy
        .wait_for_log(Duration::from_secs(5), |l| l.contains("nocache=request"));
    assert!(log.contains("cache=BYPASS nocache=request"), "{log}");
}

/// §5.2.1.7: `only-if-cached` gets a stored response or `504`, and never reaches the origin;
/// in both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_only_if_cached() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let p = format!("/{zone}/oic?cc=max-age%3D600");
        let oic = [("cache-control", "only-if-cached")];
        let r = env.get(&p, &oic).await;
        assert_eq!(r.status, 504);
        assert_eq!(
            r.header("x-frame-options"),
            Some("SAMEORIGIN"),
            "our headers on the 504"
        );
        assert!(env.seen(&p).is_empty(), "never upstream");
        env.get(&p, &[]).await;
        let r = env.get(&p, &oic).await;
        assert_eq!((r.status, r.cache.as_str()), (200, "HIT"));
    }
    // Stale and needing validation: 504 as well in origin mode. (In policy mode the zone's
    // stale-while-revalidate window serves it stale, as for any request.)
    let p = "/o/oic-stale?cc=max-age%3D0&etag=%22v%22";
    env.get(p, &[]).await;
    let r = env.get(p, &[("cache-control", "only-if-cached")]).await;
    assert_eq!(r.status, 504);
    assert_eq!(env.seen(p).len(), 1);
}

/// §5.2.2.2 and §5.2.2.8: `must-revalidate` and `proxy-revalidate` (and `s-maxage`) forbid a
/// stale answer even when the origin fails; without them `stale-if-error` serves one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn must_revalidate_and_proxy_revalidate_forbid_stale() {
    let env = setup().await;
    let base = "max-age=1, stale-if-error=600";
    let paths: Vec<(String, &str)> = [
        ("", "STALE"),
        (", must-revalidate", "503"),
        (", proxy-revalidate", "503"),
        (", s-maxage=1", "503"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (extra, want))| {
        (
            format!("/o/mr{i}?cc={}", q(&format!("{base}{extra}"))),
            *want,
        )
    })
    .collect();
    for (p, _) in &paths {
        env.get(p, &[]).await;
    }
    tokio::time::sleep(Duration::from_millis(1200)).await;
    env.api.set_failing(true);
    for (p, want) in &paths {
        let r = env.get(p, &[]).await;
        if *want == "STALE" {
            assert_eq!((r.status, r.cache.as_str()), (200, "STALE"), "{p}");
        } else {
            // The origin's 503 itself, never the stored answer.
            assert_eq!(r.status, 503, "{p}");
            assert_ne!(r.cache, "STALE", "{p}");
        }
    }
    env.api.set_failing(false);
}

/// §5.2.2.4 and §5.2.2.7: `no-cache` and `private`, bare and with field names. A bare
/// `no-cache` is stored and validated on every use; `no-cache="f"` and `private="f"` store the
/// response without the named fields; a bare `private` is not stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_cache_and_private_with_and_without_field_names() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let bare = format!("/{zone}/nc?etag=%22v%22&cc=no-cache");
        assert_eq!(
            env.labels(&bare, 3).await,
            labels(&["MISS", "REVALIDATED", "REVALIDATED"])
        );
        for (i, cc) in [
            "no-cache=\"x-secret\", max-age=600",
            "private=\"x-secret\", max-age=600",
        ]
        .iter()
        .enumerate()
        {
            let p = format!("/{zone}/q{i}?cc={}&h-x-secret=s3&h-x-public=ok", q(cc));
            let miss = env.get(&p, &[]).await;
            assert_eq!(
                miss.header("x-secret"),
                Some("s3"),
                "the origin's answer itself has it"
            );
            let hit = env.get(&p, &[]).await;
            assert_eq!(hit.cache, "HIT", "{cc}");
            assert_eq!(hit.header("x-secret"), None, "{cc}");
            assert_eq!(hit.header("x-public"), Some("ok"));
        }
        let private = format!("/{zone}/priv?cc={}", q("private, max-age=600"));
        assert_eq!(env.labels(&private, 2).await, labels(&["BYPASS", "BYPASS"]));
    }
}

/// §5.2.2.5 and §5.2.2.3: `no-store` is never stored, unless `must-understand` is there with a
/// status whose caching this cache implements; with another status, nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_store_and_must_understand() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let ns = format!("/{zone}/ns?cc={}", q("no-store, max-age=600"));
        assert_eq!(env.labels(&ns, 2).await, labels(&["BYPASS", "BYPASS"]));
        let mu = format!(
            "/{zone}/mu?cc={}",
            q("no-store, must-understand, max-age=600")
        );
        assert_eq!(env.labels(&mu, 2).await, labels(&["MISS", "HIT"]));
        let unknown = format!(
            "/{zone}/mu299?code=299&cc={}",
            q("must-understand, max-age=600")
        );
        assert_eq!(env.labels(&unknown, 2).await, labels(&["BYPASS", "BYPASS"]));
    }
}

/// RFC 9213: the first valid targeted field of `[cache] targeted_fields` (by default
/// `Galion-Edge-Cache-Control`, then `CDN-Cache-Control`) decides instead of `Cache-Control`
/// and `Expires`; an invalid one is ignored; a config can leave `CDN-Cache-Control` out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn targeted_fields_take_precedence() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let cdn = format!("/{zone}/t1?cc=private&h-expires=0&h-cdn-cache-control=max-age%3D600");
        assert_eq!(env.labels(&cdn, 2).await, labels(&["MISS", "HIT"]));
        let ours = format!(
            "/{zone}/t2?cc=max-age%3D600&h-galion-edge-cache-control=no-store&h-cdn-cache-control=max-age%3D600"
        );
        assert_eq!(env.labels(&ours, 2).await, labels(&["BYPASS", "BYPASS"]));
        let invalid = format!("/{zone}/t3?cc=no-store&h-cdn-cache-control=Max-Age%3D600");
        assert_eq!(env.labels(&invalid, 2).await, labels(&["BYPASS", "BYPASS"]));
        let short = format!("/{zone}/t4?cc=max-age%3D600&h-cdn-cache-control=max-age%3D1");
        env.get(&short, &[]).await;
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert_eq!(
            env.get(&short, &[]).await.cache,
            stale(zone, false),
            "{short}"
        );
    }
    drop(env);
    let env = setup_with("targeted_fields = [\"Galion-Edge-Cache-Control\"]").await;
    let cdn = "/o/t5?cc=no-store&h-cdn-cache-control=max-age%3D600";
    assert_eq!(env.labels(cdn, 2).await, labels(&["BYPASS", "BYPASS"]));
    let ours = "/o/t6?cc=no-store&h-galion-edge-cache-control=max-age%3D600";
    assert_eq!(env.labels(ours, 2).await, labels(&["MISS", "HIT"]));
}

/// §3.3/§3.4 and RFC 9110 §14: a Range request is answered from a complete stored response,
/// and a 206 from upstream is never stored as if it were complete.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_from_complete_responses_and_206_never_stored() {
    let env = setup().await;
    for zone in ["o", "p"] {
        let p = format!("/{zone}/r/data?n=1000&cc=max-age%3D600");
        let full = env.get(&p, &[]).await;
        assert_eq!((full.status, full.body.len()), (200, 1000));
        let r = env.get(&p, &[("range", "bytes=10-19")]).await;
        assert_eq!((r.status, r.cache.as_str()), (206, "HIT"));
        assert_eq!(r.body, full.body.slice(10..20));
        assert_eq!(r.header("content-range"), Some("bytes 10-19/1000"));
        let partial = format!("/{zone}/r206?code=206&cc=max-age%3D600");
        assert_eq!(env.labels(&partial, 2).await, labels(&["BYPASS", "BYPASS"]));
        assert_eq!(env.seen(&partial).len(), 2);
    }
    let log = env
        .proxy
        .wait_for_log(Duration::from_secs(5), |l| l.contains("nocache=partial"));
    assert!(log.contains("nocache=partial"), "{log}");
}

/// §4.4: a non-error answer to an unsafe method (`POST`, `PUT`, `DELETE`, `PATCH`, or one of
/// unknown safety) invalidates the stored responses of its URL, every variant, and of the
/// same-origin URLs in `Location` and `Content-Location`; an error answer, a safe method and
/// another host's URL invalidate nothing. In both modes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsafe_methods_invalidate_their_url_and_same_origin_locations() {
    let mut env = setup().await;
    for zone in ["o", "p"] {
        let item = format!("/{zone}/item?cc=max-age%3D600&vary=Accept-Language");
        for method in ["POST", "PUT", "DELETE", "PATCH", "PROPPATCH"] {
            for lang in ["en", "fr"] {
                env.get(&item, &[("accept-language", lang)]).await;
                let hit = env.get(&item, &[("accept-language", lang)]).await;
                assert_eq!(hit.cache, "HIT", "{method} {lang}");
            }
            let r = env.send(method, &item, &[]).await;
            assert_eq!(r.status, 200, "{method}");
            for lang in ["en", "fr"] {
                let after = env.get(&item, &[("accept-language", lang)]).await;
                assert_eq!(
                    after.cache, "MISS",
                    "{method} invalidates the {lang} variant"
                );
            }
        }
        // A safe method, and an error answer, invalidate nothing.
        assert_eq!(env.send("OPTIONS", &item, &[]).await.status, 200);
        env.api.set_failing(true);
        assert_eq!(env.send("POST", &item, &[]).await.status, 503);
        env.api.set_failing(false);
        assert_eq!(
            env.get(&item, &[("accept-language", "en")]).await.cache,
            "HIT"
        );

        // Location and Content-Location on the same host; another host's is left alone.
        let a = format!("/{zone}/a?cc=max-age%3D600");
        let b = format!("/{zone}/b?cc=max-age%3D600");
        let c = format!("/{zone}/c?cc=max-age%3D600");
        for p in [&a, &b, &c] {
            env.get(p, &[]).await;
            assert_eq!(env.get(p, &[]).await.cache, "HIT");
        }
        let post = format!(
            "/{zone}/create?h-location={}&h-content-location={}&h-link=x",
            q(&a),
            q(&format!("http://galion.app{b}"))
        );
        assert_eq!(env.send("POST", &post, &[]).await.status, 200);
        assert_eq!(env.get(&a, &[]).await.cache, "MISS", "Location");
        assert_eq!(env.get(&b, &[]).await.cache, "MISS", "Content-Location");
        let elsewhere = format!(
            "/{zone}/create2?h-location={}",
            q(&format!("https://galion.studio{c}"))
        );
        assert_eq!(env.send("POST", &elsewhere, &[]).await.status, 200);
        assert_eq!(
            env.get(&c, &[]).await.cache,
            "HIT",
            "another host's URL stays"
        );
    }
    // Entries read back from disk after a restart are found as well (the index of variants
    // is rebuilt from the files).
    let item = "/o/disk?cc=max-age%3D600&vary=Accept-Language";
    for lang in ["en", "fr"] {
        env.get(item, &[("accept-language", lang)]).await;
    }
    env.proxy.terminate();
    env.proxy.restart(bin!());
    for lang in ["en", "fr"] {
        let hit = env.get(item, &[("accept-language", lang)]).await;
        assert_eq!(hit.cache, "HIT", "{lang} from disk");
    }
    assert_eq!(env.send("DELETE", item, &[]).await.status, 200);
    for lang in ["en", "fr"] {
        let after = env.get(item, &[("accept-language", lang)]).await;
        assert_eq!(after.cache, "MISS", "{lang}");
    }
}

/// Not an RFC requirement, the cost of following it: a URL whose last answer could not be
/// stored (`no-store`, `private`, `Set-Cookie`, `Vary: *`) skips the lookup and the cache
/// lock on its next requests and goes straight upstream, labelled as before; a `5xx` is never
/// remembered, so a stale entry keeps being served while the origin fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uncacheable_urls_skip_the_lookup_but_stale_entries_stay_served() {
    let env = setup().await;
    let misses = || {
        metric(
            &env.proxy,
            "galion_edge_cache_misses_total",
            &["zone=\"api\""],
        )
    };
    let p = "/p/nostore?cc=no-store";
    assert_eq!(env.labels(p, 1).await, ["BYPASS"]);
    let looked_up = misses().await;
    assert_eq!(env.labels(p, 3).await, ["BYPASS"; 3]);
    assert_eq!(misses().await, looked_up, "no lookup for a remembered URL");
    assert_eq!(env.seen(p).len(), 4, "every request went upstream");
    // The access log and the metric still say why. The metric is counted by the `logging`
    // hook, which runs after the answer is sent: the last request's may come a moment after
    // its answer (one run under heavy load read 3).
    let bypass = &["zone=\"api\"", "reason=\"origin\""];
    let bypassed = || metric(&env.proxy, "galion_edge_cache_bypass_total", bypass);
    eventually(Duration::from_secs(5), || async { bypassed().await >= 4 }).await;
    assert_eq!(bypassed().await, 4);

    // A stored entry, then an origin that fails: every request is answered stale. Ages count
    // whole seconds, so `max-age=3` stays fresh for at least two: time enough for the `HIT`
    // on a slow CI machine (with `max-age=1` one run saw `EXPIRED` there).
    let s = format!("/o/failing?cc={}", q("max-age=3, stale-if-error=600"));
    assert_eq!(env.labels(&s, 2).await, ["MISS", "HIT"]);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    env.api.set_failing(true);
    for _ in 0..3 {
        let r = env.get(&s, &[]).await;
        assert_eq!((r.status, r.cache.as_str()), (200, "STALE"));
    }
    env.api.set_failing(false);
}
