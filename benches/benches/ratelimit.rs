//! Rate-limit check and client-address resolution, both run on every request.
//! Protects: the 5-20 ms server cache-hit target and the 50-150 ms average API call
//! (ARCHITECTURE.md); the limiter's and resolver's share of a request must be negligible
//! against the low end of the first.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{report_margin, CACHE_HIT_TARGET};
use http::{HeaderMap, HeaderValue};
use proxy_core::client_ip::{ClientIpResolver, CF_CONNECTING_IP};
use proxy_core::headers::X_FORWARDED_FOR;
use proxy_core::ratelimit::{LimitClass, RateLimiter};
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

/// Times `n` runs of `f` outside criterion and prints the per-operation cost.
fn per_op(what: &str, n: u32, mut f: impl FnMut(u32)) {
    let start = Instant::now();
    for i in 0..n {
        f(i);
    }
    report_margin(what, start.elapsed() / n, CACHE_HIT_TARGET);
}

fn bench(c: &mut Criterion) {
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

    c.bench_function("ratelimit/check_hot_key_allowed", |b| {
        b.iter(|| limiter.check(black_box(&open), black_box(hot)))
    });
    c.bench_function("ratelimit/check_hot_key_denied", |b| {
        b.iter(|| limiter.check(black_box(&tight), black_box(hot)))
    });
    let mut i = 0u32;
    c.bench_function("ratelimit/check_distinct_ips", |b| {
        b.iter(|| {
            i = i.wrapping_add(1);
            limiter.check(black_box(&open), black_box(distinct(i)))
        })
    });

    let resolver = ClientIpResolver::cloudflare();
    let cf_peer: IpAddr = "172.70.1.2".parse().unwrap();
    let mut cf = HeaderMap::new();
    cf.insert(CF_CONNECTING_IP, HeaderValue::from_static("198.51.100.7"));
    cf.insert(
        X_FORWARDED_FOR,
        HeaderValue::from_static("198.51.100.7, 172.70.1.2"),
    );
    let mut xff = HeaderMap::new();
    xff.insert(
        X_FORWARDED_FOR,
        HeaderValue::from_static("198.51.100.7, 162.158.1.1, 104.16.0.5"),
    );
    assert_eq!(
        resolver.resolve(cf_peer, &cf),
        "198.51.100.7".parse::<IpAddr>().unwrap()
    );
    assert_eq!(
        resolver.resolve(cf_peer, &xff),
        "198.51.100.7".parse::<IpAddr>().unwrap()
    );
    c.bench_function("client_ip/resolve_cf_header", |b| {
        b.iter(|| resolver.resolve(black_box(cf_peer), black_box(&cf)))
    });
    c.bench_function("client_ip/resolve_xff_3_hops", |b| {
        b.iter(|| resolver.resolve(black_box(cf_peer), black_box(&xff)))
    });
    c.bench_function("client_ip/forwarded_for", |b| {
        b.iter(|| resolver.forwarded_for(black_box(cf_peer), black_box(&xff)))
    });

    let n = 1_000_000;
    per_op("ratelimit check, hot key allowed", n, |_| {
        black_box(limiter.check(&open, black_box(hot)));
    });
    per_op("ratelimit check, hot key denied", n, |_| {
        black_box(limiter.check(&tight, black_box(hot)));
    });
    per_op("ratelimit check, distinct IPs", n, |i| {
        black_box(limiter.check(&open, black_box(distinct(i.wrapping_add(1 << 28)))));
    });
    per_op("client_ip resolve, CF-Connecting-IP", n, |_| {
        black_box(resolver.resolve(black_box(cf_peer), &cf));
    });
    per_op("client_ip resolve, 3-hop X-Forwarded-For", n, |_| {
        black_box(resolver.resolve(black_box(cf_peer), &xff));
    });
    per_op("client_ip forwarded_for", n, |_| {
        black_box(resolver.forwarded_for(black_box(cf_peer), &xff));
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
