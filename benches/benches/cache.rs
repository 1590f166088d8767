//! Cache hit latency from each tier of a zone, through the `Storage` API Pingora calls:
//! lookup, deserialize the meta, read the body.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md). The storage's share of a
//! hit must be a tiny fraction of it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{bench, criterion, CACHE_HIT};
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use proxy_core::cache::{DiskEviction, TieredStorage};
use proxy_core::pingora::http::ResponseHeader;
use std::time::{Duration, SystemTime};

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

async fn fill(storage: &'static TieredStorage, key: &CacheKey, body: Bytes) {
    let now = SystemTime::now();
    // The header an API response typically has.
    let mut h = ResponseHeader::build(200, None).unwrap();
    for (name, value) in [
        ("content-type", "application/json"),
        ("content-length", "1024"),
        ("date", "Thu, 26 Nov 2026 05:00:00 GMT"),
        ("cache-control", "public, max-age=600"),
        ("etag", "\"5d8c72a5edda8d6a\""),
        ("vary", "Accept-Encoding"),
        ("server", "uvicorn"),
        ("x-request-id", "0f9c2b8e-8d5e-4a57-9a8e-3f1c2d4b5a69"),
    ] {
        h.insert_header(name, value).unwrap();
    }
    let meta = CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, h);
    let span = Span::inactive();
    let mut miss = storage
        .get_miss_handler(key, &meta, &span.handle())
        .await
        .unwrap();
    miss.write_body(body, true).await.unwrap();
    miss.finish().await.unwrap();
}

/// What Pingora does after a `304`: the stored meta with its freshness renewed.
async fn revalidate(storage: &'static TieredStorage, key: &CacheKey) {
    let span = Span::inactive();
    let (mut meta, _) = storage.lookup(key, &span.handle()).await.unwrap().unwrap();
    meta.update_freshness(SystemTime::now() + Duration::from_secs(3600), 0, 0);
    assert!(storage
        .update_meta(key, &meta, &span.handle())
        .await
        .unwrap());
}

async fn hit(storage: &'static TieredStorage, key: &CacheKey) -> usize {
    let span = Span::inactive();
    let (meta, mut h) = storage.lookup(key, &span.handle()).await.unwrap().unwrap();
    black_box(meta);
    h.read_body().await.unwrap().unwrap().len()
}

fn cache_hits(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let eviction = leak(DiskEviction::with_capacity(256 << 20, 4096));
    // Memory tier on: hits come from memory after the first read.
    let warm = leak(
        TieredStorage::open(
            "warm",
            &dir.path().join("warm"),
            64 << 20,
            16 << 20,
            eviction,
        )
        .unwrap(),
    );
    // Memory tier off: every hit reads and verifies the file (page cache warm).
    let cold =
        leak(TieredStorage::open("cold", &dir.path().join("cold"), 0, 16 << 20, eviction).unwrap());

    for (name, size) in [("1KiB_json", 1024usize), ("100KiB_js", 100 * 1024)] {
        let key = CacheKey::new(format!("https://galion.app/{name}"), "bench");
        let body = Bytes::from(vec![b'a'; size]);
        rt.block_on(fill(warm, &key, body.clone()));
        rt.block_on(fill(cold, &key, body));
        rt.block_on(hit(warm, &key));
        bench(c, &format!("cache_hit/memory/{name}"), CACHE_HIT, || {
            rt.block_on(hit(warm, &key))
        });
        bench(c, &format!("cache_hit/disk/{name}"), CACHE_HIT, || {
            rt.block_on(hit(cold, &key))
        });
    }
    // A memory hit on an entry that was revalidated (a 304 refreshed it: `updated` is after
    // `created`), as API entries are after their first TTL.
    let key = CacheKey::new("https://galion.app/revalidated".to_string(), "bench");
    rt.block_on(fill(warm, &key, Bytes::from(vec![b'a'; 1024])));
    rt.block_on(revalidate(warm, &key));
    rt.block_on(hit(warm, &key));
    bench(
        c,
        "cache_hit/memory_revalidated/1KiB_json",
        CACHE_HIT,
        || rt.block_on(hit(warm, &key)),
    );
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = cache_hits
}
criterion_main!(benches);
