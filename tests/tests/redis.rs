//! Scale-out through Redis: two proxy instances on loopback sharing one real `redis-server`
//! (started by each test on a port of its own, stopped and restarted mid-run): one rate limit
//! over both, no failed request while Redis is down (local fallback, counted, then back to
//! Redis), purges reaching the other instance, and the missed-purge policy. Also the sliding
//! window script itself, in-process against the same kind of server.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use galion_edge_tests::*;
use proxy_core::config::RedisSettings;
use proxy_core::RedisLimiter;
use proxy_core::RedisLink;
use proxy_core::{Decision, LimitClass, RateLimiter};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One instance's config: the shared Redis, a limited `api` class (rate 10 a minute, JSON
/// 429s), an `open` class nobody reaches, and a cache zone of its own.
fn config(redis: &RedisServer, origin: &Origin) -> String {
    base_config(
        false,
        &format!(
            r#"
[admin]
listen = ["127.0.0.1:{{admin}}"]

[redis]
url = "{url}"
key_prefix = "t:"
# Generous for a loaded CI machine: a timeout falls back to local counting, which the
# shared-limit test must not see.
timeout = "1s"
connect_timeout = "1s"
retry_interval = "200ms"

[limits]
backend = "redis"
window = "60s"
[limits.classes.api]
rate = 10
json = true
[limits.classes.open]
rate = 1000000

[cache.zones.api]
path = "{{dir}}/cache/api"
size = "8MB"
memory_size = "1MB"
default_ttl = "10m"

[upstreams.api]
backends = ["{origin}"]
health_check = {{ kind = "none" }}

[[sites]]
name = "galion.app"
hosts = ["galion.app"]
routes = [
  {{ path = "/api/", upstream = "api", limit = "api", cache = "off" }},
  {{ path = "/cached/", upstream = "api", limit = "off", cache = "api" }},
  {{ path = "/", upstream = "api", limit = "open", cache = "off" }},
]
"#,
            url = redis.url(4),
            origin = origin.addr,
        ),
    )
}

struct Resp {
    status: u16,
    cache: String,
    ratelimit: String,
    retry_after: String,
    body: String,
}

async fn get(proxy: &Proxy, path: &str) -> Resp {
    let r = client()
        .get(format!("http://{}{path}", proxy.plain_addr()))
        .header("host", "galion.app")
        .send()
        .await
        .unwrap();
    let h = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    Resp {
        status: r.status().as_u16(),
        cache: h("x-cache-status"),
        ratelimit: h("ratelimit"),
        retry_after: h("retry-after"),
        body: r.text().await.unwrap(),
    }
}

/// The value of one series (`name{labels}` exactly as exposed), 0 if absent.
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

async fn value(proxy: &Proxy, series: &str) -> f64 {
    metric(&metrics_text(proxy).await, series)
}

async fn purge(proxy: &Proxy, query: &str) -> serde_json::Value {
    let r = client()
        .post(format!("http://{}/cache/purge?{query}", proxy.admin_addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

/// Waits until the instance uses Redis and its purge subscription has synced `times` times
/// (counted in the log of the process started last when `restarted`).
async fn wait_shared(proxy: &Proxy, times: usize, restarted: bool) {
    let log = || {
        if restarted {
            std::fs::read_to_string(proxy.dir.join("stderr-restart.log")).unwrap_or_default()
        } else {
            proxy.stderr()
        }
    };
    let up = eventually(Duration::from_secs(15), || async {
        value(proxy, "galion_edge_redis_up").await == 1.0
            && log().matches("purge fan-out: subscribed").count() >= times
    })
    .await;
    assert!(
        up,
        "instance never (re)connected to Redis: {}",
        proxy.stderr()
    );
}

async fn two_instances(
    redis: &RedisServer,
    origin: &Origin,
) -> (Proxy, Proxy, [tempfile::TempDir; 2]) {
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let a = Proxy::start(bin!(), dirs[0].path(), &config(redis, origin));
    let b = Proxy::start(bin!(), dirs[1].path(), &config(redis, origin));
    wait_shared(&a, 1, false).await;
    wait_shared(&b, 1, false).await;
    (a, b, dirs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_limit_over_two_instances() {
    let redis = RedisServer::start();
    let origin = origin("api").await;
    let (a, b, _dirs) = two_instances(&redis, &origin).await;

    // One client (127.0.0.1) alternating between the instances: 10 in total, not 10 each.
    let mut log = Vec::new();
    for i in 0..30 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        log.push(get(proxy, "/api/x").await);
    }
    let allowed: Vec<usize> = (0..log.len()).filter(|&i| log[i].status == 200).collect();
    assert_eq!(
        allowed,
        (0..10).collect::<Vec<_>>(),
        "the first 10 pass, on either instance"
    );
    for (i, r) in log.iter().enumerate().take(10) {
        // The same RateLimit header as the local limiter, counting over both instances.
        assert!(
            r.ratelimit.starts_with(&format!("\"api\";r={};t=", 9 - i)),
            "request {i}: {}",
            r.ratelimit
        );
    }
    for r in &log[10..] {
        assert_eq!(r.status, 429);
        let wait: u32 = r.retry_after.parse().unwrap();
        assert!((1..=120).contains(&wait), "{}", r.retry_after);
        assert!(r.ratelimit.starts_with("\"api\";r=0;t="), "{}", r.ratelimit);
        assert!(r.body.contains("too_many_requests"), "{}", r.body);
    }
    assert_eq!(
        origin
            .requests()
            .iter()
            .filter(|r| r.uri == "/api/x")
            .count(),
        10
    );

    let (ma, mb) = (metrics_text(&a).await, metrics_text(&b).await);
    let by = |m: &str, how: &str| {
        metric(
            m,
            &format!("galion_edge_ratelimit_decisions_total{{by=\"{how}\"}}"),
        )
    };
    // Each instance asked Redis until it refused the client once; after that it refused
    // locally without a round trip. Nothing fell back.
    assert_eq!(by(&ma, "redis") + by(&mb, "redis"), 12.0, "{ma}\n{mb}");
    assert_eq!(
        by(&ma, "refused_locally") + by(&mb, "refused_locally"),
        18.0
    );
    assert_eq!(by(&ma, "fallback") + by(&mb, "fallback"), 0.0);
    assert_eq!(
        metric(
            &ma,
            "galion_edge_ratelimit_rejections_total{class=\"api\",reason=\"rate\"}"
        ) + metric(
            &mb,
            "galion_edge_ratelimit_rejections_total{class=\"api\",reason=\"rate\"}"
        ),
        20.0
    );
    // The count lives in DB 4 under the configured prefix.
    let keys = redis.cli(&["-n", "4", "KEYS", "t:rl:*"]);
    assert_eq!(keys.trim(), "t:rl:api:60:127.0.0.1", "{keys}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_falls_back_without_failures_and_recovers() {
    let mut redis = RedisServer::start();
    let origin = origin("api").await;
    let (a, b, _dirs) = two_instances(&redis, &origin).await;

    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let round = |n: usize| {
        let (a, b) = (&a, &b);
        async move {
            let mut out = Vec::new();
            for i in 0..n {
                let proxy = if i % 2 == 0 { a } else { b };
                out.push(get(proxy, "/open").await.status);
            }
            out
        }
    };
    for s in round(100).await {
        *statuses.entry(s).or_default() += 1;
    }
    let redis_before = value(&a, "galion_edge_ratelimit_decisions_total{by=\"redis\"}").await;
    assert!(redis_before > 0.0);

    // Redis dies mid-run: every request is still answered, by the local limiter.
    redis.stop();
    for s in round(200).await {
        *statuses.entry(s).or_default() += 1;
    }
    for p in [&a, &b] {
        let m = metrics_text(p).await;
        assert_eq!(metric(&m, "galion_edge_redis_up"), 0.0, "{m}");
        assert!(
            metric(&m, "galion_edge_ratelimit_decisions_total{by=\"fallback\"}") >= 90.0,
            "{m}"
        );
        assert!(metric(&m, "galion_edge_redis_transitions_total{to=\"down\"}") >= 1.0);
        let errors = metric(
            &m,
            "galion_edge_redis_errors_total{kind=\"connection\",op=\"ratelimit\"}",
        ) + metric(
            &m,
            "galion_edge_redis_errors_total{kind=\"connection\",op=\"subscribe\"}",
        );
        assert!(errors >= 1.0, "{m}");
    }
    // The state change is logged once, not per request.
    assert_eq!(
        a.stderr().matches("limits are counted locally").count(),
        1,
        "{}",
        a.stderr()
    );

    // Redis returns (empty): both instances go back to it by themselves.
    redis.start_again();
    wait_shared(&a, 2, false).await;
    wait_shared(&b, 2, false).await;
    for s in round(100).await {
        *statuses.entry(s).or_default() += 1;
    }
    assert_eq!(
        statuses.get(&200),
        Some(&400),
        "no failed request: {statuses:?}"
    );
    for p in [&a, &b] {
        let m = metrics_text(p).await;
        assert!(
            metric(&m, "galion_edge_redis_transitions_total{to=\"up\"}") >= 2.0,
            "{m}"
        );
    }
    let redis_after = value(&a, "galion_edge_ratelimit_decisions_total{by=\"redis\"}").await;
    assert!(
        redis_after >= redis_before + 50.0,
        "{redis_before} -> {redis_after}"
    );

    // And the limit is shared again.
    let mut allowed = 0;
    for i in 0..16 {
        let proxy = if i % 2 == 0 { &a } else { &b };
        allowed += usize::from(get(proxy, "/api/again").await.status == 200);
    }
    assert_eq!(allowed, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_reach_the_other_instance_and_missed_ones_clear_it() {
    let mut redis = RedisServer::start();
    let origin = origin("api").await;
    let (a, b, _dirs) = two_instances(&redis, &origin).await;
    for p in [&a, &b] {
        for path in ["/cached/x", "/cached/y"] {
            assert_eq!(get(p, path).await.cache, "MISS");
            assert_eq!(get(p, path).await.cache, "HIT");
        }
    }

    // A purge on one instance makes the object a MISS on the other.
    let v = purge(&a, "url=http://galion.app/cached/x").await;
    assert_eq!(
        (v["purged"].as_u64(), v["fanout"].as_str()),
        (Some(1), Some("published"))
    );
    let applied = eventually(Duration::from_secs(10), || async {
        value(&b, "galion_edge_purge_fanout_total{event=\"applied\"}").await == 1.0
    })
    .await;
    assert!(applied, "{}", b.stderr());
    assert_eq!(get(&b, "/cached/x").await.cache, "MISS");
    assert_eq!(get(&a, "/cached/x").await.cache, "MISS");
    // Nothing else went.
    assert_eq!(get(&b, "/cached/y").await.cache, "HIT");
    assert_eq!(
        value(&a, "galion_edge_purge_fanout_total{event=\"applied\"}").await,
        0.0
    );

    // Redis goes down and comes back empty: B cannot prove it saw every purge (A's purge of
    // y was queued, and Redis lost the sequence), so it clears its whole cache.
    redis.stop();
    let v = purge(&a, "url=http://galion.app/cached/y").await;
    assert_eq!(
        (v["purged"].as_u64(), v["fanout"].as_str()),
        (Some(1), Some("queued"))
    );
    assert_eq!(
        get(&b, "/cached/x").await.cache,
        "HIT",
        "B has not heard yet"
    );
    redis.start_again();
    let cleared = eventually(Duration::from_secs(15), || async {
        value(&b, "galion_edge_purge_fanout_total{event=\"resync_clear\"}").await >= 1.0
    })
    .await;
    assert!(cleared, "{}", b.stderr());
    assert_eq!(get(&b, "/cached/x").await.cache, "MISS");
    assert_eq!(get(&b, "/cached/y").await.cache, "MISS");
    // A published its queued purge once Redis was back.
    let published = eventually(Duration::from_secs(10), || async {
        value(&a, "galion_edge_purge_fanout_total{event=\"published\"}").await == 2.0
    })
    .await;
    assert!(published, "{}", a.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_instance_keeps_its_cache_only_if_no_purge_was_missed() {
    let redis = RedisServer::start();
    let origin = origin("api").await;
    let (a, mut b, _dirs) = two_instances(&redis, &origin).await;
    assert_eq!(get(&b, "/cached/x").await.cache, "MISS");
    assert_eq!(get(&b, "/cached/x").await.cache, "HIT");

    // Restarted with nothing published meanwhile: the disk tier is proved fresh and kept.
    b.terminate();
    b.restart(bin!());
    wait_shared(&b, 1, true).await;
    assert_eq!(get(&b, "/cached/x").await.cache, "HIT");
    assert_eq!(
        value(&b, "galion_edge_purge_fanout_total{event=\"resync_clear\"}").await,
        0.0
    );

    // Down while A purges something else: on start it cannot know what it missed.
    b.terminate();
    let v = purge(&a, "url=http://galion.app/cached/other").await;
    assert_eq!(v["fanout"].as_str(), Some("published"));
    b.restart(bin!());
    wait_shared(&b, 1, true).await;
    assert_eq!(
        value(&b, "galion_edge_purge_fanout_total{event=\"resync_clear\"}").await,
        1.0
    );
    assert_eq!(get(&b, "/cached/x").await.cache, "MISS");
}

async fn reload(proxy: &Proxy) -> serde_json::Value {
    let r = client()
        .post(format!("http://{}/reload", proxy.admin_addr()))
        .send()
        .await
        .unwrap();
    r.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_switches_the_backend_and_redis_changes_need_a_restart() {
    let redis = RedisServer::start();
    let origin = origin("api").await;
    let dir = tempfile::tempdir().unwrap();
    let text = config(&redis, &origin).replace("backend = \"redis\"", "backend = \"local\"");
    let proxy = Proxy::start(bin!(), dir.path(), &text);
    wait_shared(&proxy, 1, false).await;
    let by_redis = "galion_edge_ratelimit_decisions_total{by=\"redis\"}";
    assert_eq!(get(&proxy, "/api/x").await.status, 200);
    assert_eq!(value(&proxy, by_redis).await, 0.0, "local counting first");

    let written = std::fs::read_to_string(&proxy.config_path).unwrap();
    std::fs::write(
        &proxy.config_path,
        written.replace("backend = \"local\"", "backend = \"redis\""),
    )
    .unwrap();
    let v = reload(&proxy).await;
    assert_eq!(v["reloaded"], true, "{v}");
    assert_eq!(v["needs_restart"], serde_json::json!([]), "{v}");
    let r = get(&proxy, "/api/x").await;
    assert_eq!(r.status, 200);
    // Redis had not counted the request made while local.
    assert!(r.ratelimit.starts_with("\"api\";r=9;"), "{}", r.ratelimit);
    assert_eq!(value(&proxy, by_redis).await, 1.0);

    // The link is built at start: a changed [redis] is kept as running until a restart.
    let written = std::fs::read_to_string(&proxy.config_path).unwrap();
    std::fs::write(
        &proxy.config_path,
        written.replace(
            "timeout = \"1s\"\nconnect_timeout",
            "timeout = \"2s\"\nconnect_timeout",
        ),
    )
    .unwrap();
    let v = reload(&proxy).await;
    assert_eq!(v["reloaded"], true, "{v}");
    assert_eq!(v["needs_restart"], serde_json::json!(["redis"]), "{v}");
    assert_eq!(get(&proxy, "/api/x").await.status, 200);
    assert_eq!(value(&proxy, by_redis).await, 2.0, "still shared");
}

// --- The sliding-window script, in-process -------------------------------------------------

fn settings(redis: &RedisServer, prefix: &str) -> RedisSettings {
    RedisSettings {
        url: redis.url(4),
        db: 4,
        key_prefix: prefix.into(),
        timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        retry_interval: Duration::from_millis(200),
        connections: 2,
        purge_channel: None,
    }
}

async fn shared(redis: &RedisServer, prefix: &str, window: u64) -> RedisLimiter {
    let link = Arc::new(RedisLink::new(&settings(redis, prefix)).unwrap());
    assert!(link.connect().await);
    RedisLimiter::new(link, Duration::from_secs(window))
}

fn class(rate: u32, burst: u32) -> LimitClass {
    LimitClass {
        id: 1,
        name: "api".into(),
        rate,
        burst,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_matches_the_local_limiter() {
    let redis = RedisServer::start();
    // Two "instances" (two links, two local sketches) on one Redis.
    let (one, two) = (
        shared(&redis, "s:", 60).await,
        shared(&redis, "s:", 60).await,
    );
    let (l1, l2) = (
        RateLimiter::new(Duration::from_secs(60), 1024),
        RateLimiter::new(Duration::from_secs(60), 1024),
    );
    let reference = RateLimiter::new(Duration::from_secs(60), 1024);
    let c = class(8, 2);
    let ip: IpAddr = "198.51.100.7".parse().unwrap();
    for i in 0..10u32 {
        let (limiter, local) = if i % 2 == 0 { (&one, &l1) } else { (&two, &l2) };
        let got = limiter.check(local, &c, ip).await;
        let want = reference.check(&c, ip);
        let (
            Decision::Allow {
                remaining: r1,
                reset_secs: t1,
            },
            Decision::Allow { remaining: r2, .. },
        ) = (got, want)
        else {
            panic!("request {i}: {got:?} / {want:?}");
        };
        assert_eq!(r1, r2, "request {i}");
        assert_eq!(r1, 9 - i);
        assert!((1..=60).contains(&t1), "{t1}");
    }
    let Decision::Deny { retry_after_secs } = one.check(&l1, &c, ip).await else {
        panic!("the 11th request passed");
    };
    assert!((1..=120).contains(&retry_after_secs));
    // The other instance is refused at Redis, then locally for the wait it was given.
    assert!(!two.check(&l2, &c, ip).await.is_allowed());
    assert!(!two.check(&l2, &c, ip).await.is_allowed());
    let s = two.link().limit_decisions();
    assert_eq!(s.redis, 6);
    assert_eq!(s.refused_locally, 1);
    // Another client, the mapped form of the same one, an IPv6 /64.
    assert!(one
        .check(&l1, &c, "198.51.100.8".parse().unwrap())
        .await
        .is_allowed());
    assert!(!one
        .check(&l1, &c, "::ffff:198.51.100.7".parse().unwrap())
        .await
        .is_allowed());
    for a in ["2001:db8:0:1::1", "2001:db8:0:1::2"] {
        assert!(one.check(&l1, &c, a.parse().unwrap()).await.is_allowed());
    }
    let keys = redis.cli(&["-n", "4", "KEYS", "s:rl:*"]);
    let mut keys: Vec<&str> = keys.lines().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "s:rl:api:60:198.51.100.7",
            "s:rl:api:60:198.51.100.8",
            "s:rl:api:60:2001:db8:0:1::/64"
        ]
    );
    let ttl: i64 = redis
        .cli(&["-n", "4", "PTTL", "s:rl:api:60:198.51.100.7"])
        .trim()
        .parse()
        .unwrap();
    assert!(
        (100_000..=120_000).contains(&ttl),
        "expires two windows after: {ttl}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_window_slides_and_retry_after_is_honoured() {
    let redis = RedisServer::start();
    let limiter = shared(&redis, "w:", 2).await;
    let local = RateLimiter::new(Duration::from_secs(2), 1024);
    let c = class(3, 1);
    let ip: IpAddr = "192.0.2.44".parse().unwrap();
    // As the local limiter's retry_after_is_honoured test: spend, wait what 429 says, pass.
    for round in 0..2 {
        while limiter.check(&local, &c, ip).await.is_allowed() {}
        let Decision::Deny { retry_after_secs } = limiter.check(&local, &c, ip).await else {
            panic!("not refused");
        };
        assert!((1..=4).contains(&retry_after_secs), "{retry_after_secs}");
        tokio::time::sleep(Duration::from_secs(u64::from(retry_after_secs))).await;
        assert!(
            limiter.check(&local, &c, ip).await.is_allowed(),
            "round {round}: after {retry_after_secs} s"
        );
    }
    // Over 5 s of hammering (every 20 ms), no 2 s sliding window ever holds twice the limit.
    let start = Instant::now();
    let mut allowed = Vec::new();
    while start.elapsed() < Duration::from_secs(5) {
        if limiter.check(&local, &c, ip).await.is_allowed() {
            allowed.push(start.elapsed().as_secs_f64());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (i, &t) in allowed.iter().enumerate() {
        let in_window = allowed[..=i].iter().filter(|&&u| u > t - 2.0).count();
        assert!(
            in_window < 8,
            "{in_window} allowed in the 2 s before {t:.2}: {allowed:?}"
        );
    }
    assert!(allowed.len() >= 6, "the window slid: {allowed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_falls_back_when_redis_stops_and_returns() {
    let mut redis = RedisServer::start();
    let limiter = shared(&redis, "f:", 60).await;
    let local = RateLimiter::new(Duration::from_secs(60), 1024);
    let c = class(5, 0);
    let ip: IpAddr = "203.0.113.1".parse().unwrap();
    for _ in 0..3 {
        assert!(limiter.check(&local, &c, ip).await.is_allowed());
    }
    redis.stop();
    // The local sketch holds what Redis allowed, so the fallback continues the count.
    let mut passed = 0;
    for _ in 0..5 {
        passed += usize::from(limiter.check(&local, &c, ip).await.is_allowed());
    }
    assert_eq!(passed, 2);
    let link = limiter.link();
    assert!(!link.is_up());
    assert_eq!(link.limit_decisions().fallback, 5);
    redis.start_again();
    assert!(link.connect().await);
    // Redis came back empty: a fresh shared count.
    assert!(limiter.check(&local, &c, ip).await.is_allowed());
    assert_eq!(link.limit_decisions().redis, 4);
}
