//! Security-header policy on a response, and forwarded headers plus request id on a request.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md); both run on every response.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{production_config, report_margin, CACHE_HIT_TARGET};
use proxy_core::headers::{request_id, set_forwarded, HeaderPolicy};
use proxy_core::pingora::http::{RequestHeader, ResponseHeader};
use std::time::Instant;

fn response() -> ResponseHeader {
    let mut r = ResponseHeader::build(200, Some(8)).unwrap();
    r.insert_header("content-type", "application/json").unwrap();
    r.insert_header("content-length", "1024").unwrap();
    r.insert_header("server", "uvicorn").unwrap();
    r
}

fn request() -> RequestHeader {
    let mut r = RequestHeader::build("GET", b"/api/v1/users", Some(8)).unwrap();
    r.insert_header("host", "galion.app").unwrap();
    r.insert_header("user-agent", "Mozilla/5.0").unwrap();
    r.insert_header("x-forwarded-for", "198.51.100.7").unwrap();
    r
}

fn bench(c: &mut Criterion) {
    let config = production_config();
    let policy = HeaderPolicy::new(&config.sites[0].headers);
    c.bench_function("header_policy/apply", |b| {
        b.iter_batched_ref(
            response,
            |r| policy.apply(black_box(r)),
            criterion::BatchSize::SmallInput,
        )
    });
    let client = Some("203.0.113.9".parse().unwrap());
    c.bench_function("forwarded_headers/set", |b| {
        b.iter_batched_ref(
            request,
            |r| {
                let id = request_id(r);
                set_forwarded(
                    black_box(r),
                    client,
                    Some("198.51.100.7, 203.0.113.9"),
                    true,
                    "galion.app",
                    &id,
                );
            },
            criterion::BatchSize::SmallInput,
        )
    });

    let n = 50_000u32;
    let mut rs: Vec<ResponseHeader> = (0..n).map(|_| response()).collect();
    let start = Instant::now();
    for r in &mut rs {
        policy.apply(black_box(r));
    }
    report_margin("security headers", start.elapsed() / n, CACHE_HIT_TARGET);
}

criterion_group!(benches, bench);
criterion_main!(benches);
