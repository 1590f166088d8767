//! The shared (Redis) rate limiter against the local one, in the same run: what a request pays
//! for `[limits] backend = "redis"`. Starts its own `redis-server` on a loopback port with a
//! temp dir (skipped with a message if it is not installed: `bash scripts/setup.sh`).
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md); the round trip must stay a
//! small fraction of its low end.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{report_margin, CACHE_HIT};
use proxy_core::config::RedisSettings;
use proxy_core::RedisLimiter;
use proxy_core::RedisLink;
use proxy_core::{LimitClass, RateLimiter};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A redis-server of the bench's own, killed on drop (its temp dir goes with it).
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_redis() -> Option<(Server, u16)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let dir = tempfile::tempdir().ok()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some((Server { child, _dir: dir }, port))
}

fn bench(c: &mut Criterion) {
    let Some((_server, port)) = start_redis() else {
        println!(
            "ratelimit_redis: SKIPPED, redis-server is not installed (`bash scripts/setup.sh` installs it)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let settings = RedisSettings {
        url: format!("redis://127.0.0.1:{port}/4"),
        db: 4,
        key_prefix: "bench:".into(),
        timeout: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(1),
        retry_interval: Duration::from_secs(1),
        connections: 2,
        purge_channel: None,
    };
    let link = Arc::new(RedisLink::new(&settings).unwrap());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.block_on(link.connect()) {
        assert!(Instant::now() < deadline, "redis-server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    let window = Duration::from_secs(60);
    let shared = RedisLimiter::new(link.clone(), window);
    let local = RateLimiter::new(window, 131_072);
    let open = LimitClass {
        id: 1,
        name: "api".into(),
        rate: u32::MAX / 2,
        burst: 0,
    };
    let tight = LimitClass {
        id: 2,
        name: "login".into(),
        rate: 1,
        burst: 0,
    };
    let hot: IpAddr = "203.0.113.9".parse().unwrap();
    // Spend the tight budget so the refused path answers from the local table (a limit of 1
    // refuses for at least a whole window, longer than the run).
    for _ in 0..2 {
        rt.block_on(shared.check(&local, &tight, hot));
    }

    c.bench_function("ratelimit_redis/local_check_allowed", |b| {
        b.iter(|| local.check(black_box(&open), black_box(hot)))
    });
    c.bench_function("ratelimit_redis/redis_check_allowed", |b| {
        b.iter(|| rt.block_on(shared.check(&local, black_box(&open), black_box(hot))))
    });
    c.bench_function("ratelimit_redis/redis_check_refused_locally", |b| {
        b.iter(|| rt.block_on(shared.check(&local, black_box(&tight), black_box(hot))))
    });

    // The same three outside criterion, back to back, for the note.
    let per_op = |what: &str, n: u32, f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        let t = start.elapsed() / n;
        report_margin(what, t, CACHE_HIT);
        t
    };
    let l = per_op("local limiter, allowed", 1_000_000, &mut || {
        black_box(local.check(&open, hot));
    });
    let r = per_op("redis limiter, allowed (one EVALSHA)", 20_000, &mut || {
        black_box(rt.block_on(shared.check(&local, &open, hot)));
    });
    let d = per_op(
        "redis limiter, refused from the local table",
        1_000_000,
        &mut || {
            black_box(rt.block_on(shared.check(&local, &tight, hot)));
        },
    );
    let fallback = link.limit_decisions().fallback;
    println!(
        "ratelimit_redis: added per allowed request with Redis: {:.1} us (redis {:.1} us - local {:.0} ns); \
         refused locally {:.0} ns; fallbacks during the run: {fallback}",
        (r.saturating_sub(l)).as_secs_f64() * 1e6,
        r.as_secs_f64() * 1e6,
        l.as_secs_f64() * 1e9,
        d.as_secs_f64() * 1e9,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
