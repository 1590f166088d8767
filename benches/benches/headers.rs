//! Security-header policy on a response, and forwarded headers plus request id on a request.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md); both run on every response
//! (the policy also on cache hits).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{criterion, production_config, Margin, CACHE_HIT};
use proxy_core::pingora::http::{RequestHeader, ResponseHeader};
use proxy_core::{request_id, set_forwarded, HeaderPolicy};

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

fn headers(c: &mut Criterion) {
    let config = production_config();
    let policy = HeaderPolicy::new(&config.sites[0].headers);

    let m = Margin::new();
    c.bench_function("header_policy/apply", |b| {
        m.iter_batched(b, response, |r| policy.apply(black_box(r)))
    });
    m.report("header_policy/apply", CACHE_HIT);

    let client = Some("203.0.113.9".parse().unwrap());
    let m = Margin::new();
    c.bench_function("forwarded_headers/set_with_request_id", |b| {
        m.iter_batched(b, request, |r| {
            let id = request_id(r);
            set_forwarded(
                black_box(r),
                client,
                Some("198.51.100.7, 203.0.113.9"),
                true,
                "galion.app",
                &id,
            );
        })
    });
    m.report("forwarded_headers/set_with_request_id", CACHE_HIT);
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = headers
}
criterion_main!(benches);
