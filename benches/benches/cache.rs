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
    let mut h = ResponseHeader::build(200, None).unwrap();
    h.insert_header("content-type", "application/json").unwrap();
    let meta = CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, h);
    let span = Span::inactive();
    let mut miss = storage
        .get_miss_handler(key, &meta, &span.handle())
        .await
        .unwrap();
    miss.write_body(body, true).await.unwrap();
    miss.finish().await.unwrap();
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
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = cache_hits
}
criterion_main!(benches);
