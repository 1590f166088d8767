//! Rate-limit check (the sliding-window sketch) and the per-client concurrency cap, run on
//! every request of a limited route.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md); the limiter's share of a
//! request must be negligible against it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{bench, criterion, CACHE_HIT};
use proxy_core::{ConnLimiter, LimitClass, RateLimiter};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

fn ratelimit(c: &mut Criterion) {
    // The production shape: 60 s window, the default 131072-slot sketch (8 MiB).
    let limiter = RateLimiter::new(Duration::from_secs(60), 131_072);
    // A budget nobody reaches, so the hot key stays on the allow path (read + count).
    let open = LimitClass {
        id: 1,
        name: "api".into(),
        rate: u32::MAX,
        burst: 0,
    };
    // A budget spent at once, so the hot key measures the refusal path (read only).
    let tight = LimitClass {
        id: 2,
        name: "login".into(),
        rate: 5,
        burst: 0,
    };
    let hot: IpAddr = "203.0.113.9".parse().unwrap();
    let distinct = |i: u32| IpAddr::V4(Ipv4Addr::from(0x0b00_0000u32.wrapping_add(i)));

    bench(c, "ratelimit/check_hot_key_allowed", CACHE_HIT, || {
        limiter.check(black_box(&open), black_box(hot))
    });
    bench(c, "ratelimit/check_hot_key_denied", CACHE_HIT, || {
        limiter.check(black_box(&tight), black_box(hot))
    });
    let mut i = 0u32;
    bench(c, "ratelimit/check_distinct_ips", CACHE_HIT, || {
        i = i.wrapping_add(1);
        limiter.check(black_box(&open), black_box(distinct(i)))
    });
    let conns = ConnLimiter::new(64);
    bench(
        c,
        "ratelimit/concurrency_acquire_release",
        CACHE_HIT,
        || drop(black_box(conns.acquire(black_box(hot)))),
    );
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = ratelimit
}
criterion_main!(benches);
