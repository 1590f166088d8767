//! The cache key of a request (scheme, lower-cased host without port, path and query, zone)
//! and its variance against a stored response's `Vary: Accept-Encoding`; both run on every
//! cacheable request, the variance on every hit, and a hit hashes the key for the storage
//! lookup and the eviction manager.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{bench, criterion, CACHE_HIT};
use pingora_cache::key::CacheHashKey;
use pingora_cache::CacheMeta;
use proxy_core::pingora::http::{RequestHeader, ResponseHeader};
use proxy_core::{cache_key, cache_variance};
use std::time::{Duration, SystemTime};

fn cache_key_bench(c: &mut Criterion) {
    bench(c, "cache_key/api_with_query", CACHE_HIT, || {
        cache_key(
            black_box(true),
            black_box("Galion.App:443"),
            black_box("/api/v1/users?page=2&per_page=20"),
            black_box("api"),
        )
    });
    // What a hit asks of the key: the storage lookup's hash and the eviction manager's
    // compact key (both from the key's text, hashed once in `cache_key`).
    bench(c, "cache_key/api_with_hit_hashes", CACHE_HIT, || {
        let key = cache_key(
            black_box(true),
            black_box("Galion.App:443"),
            black_box("/api/v1/users?page=2&per_page=20"),
            black_box("api"),
        );
        (key.combined_bin(), key.to_compact())
    });

    let now = SystemTime::now();
    let mut stored = ResponseHeader::build(200, Some(4)).unwrap();
    stored
        .insert_header("content-type", "application/javascript")
        .unwrap();
    stored.insert_header("vary", "Accept-Encoding").unwrap();
    let meta = CacheMeta::new(now + Duration::from_secs(600), now, 30, 600, stored);
    let mut req = RequestHeader::build("GET", b"/static/js/main.js", Some(4)).unwrap();
    req.insert_header("host", "galion.app").unwrap();
    req.insert_header("accept-encoding", "gzip, deflate, br, zstd")
        .unwrap();
    assert!(cache_variance(&meta, &req).is_some());
    bench(c, "cache_key/variance_accept_encoding", CACHE_HIT, || {
        cache_variance(black_box(&meta), black_box(&req))
    });
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = cache_key_bench
}
criterion_main!(benches);
