//! The two-tier storage driven the way Pingora drives it (lookup, fill, admit into the LRU
//! eviction manager, purge what it evicts), without HTTP in between.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use pingora_cache::eviction::{CacheEntryKey, EvictionManager};
use pingora_cache::storage::{MissFinishType, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use proxy_core::pingora::http::ResponseHeader;
use proxy_core::{DiskEviction, TieredStorage};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, SystemTime};

fn meta() -> CacheMeta {
    let now = SystemTime::now();
    let h = ResponseHeader::build(200, None).unwrap();
    CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, h)
}

fn leak<T>(t: T) -> &'static T {
    Box::leak(Box::new(t))
}

/// One request as Pingora handles it: a hit, or a fill plus admission and evictions.
async fn request(
    storage: &'static TieredStorage,
    eviction: &'static DiskEviction,
    key: u32,
    body: &Bytes,
) -> bool {
    let span = Span::inactive();
    let k = CacheKey::new(format!("https://galion.app/obj/{key}"), "api");
    if let Some((m, mut hit)) = storage.lookup(&k, &span.handle()).await.unwrap() {
        let got = hit.read_body().await.unwrap().unwrap();
        assert_eq!(&got, body, "a hit serves the stored bytes");
        eviction.access(
            &CacheEntryKey::key_only(k.to_compact()),
            got.len(),
            m.fresh_until(),
        );
        return true;
    }
    let mut miss = storage
        .get_miss_handler(&k, &meta(), &span.handle())
        .await
        .unwrap();
    miss.write_body(body.clone(), true).await.unwrap();
    let MissFinishType::Created(size) = miss.finish().await.unwrap() else {
        panic!("created");
    };
    let evicted = eviction.admit(
        CacheEntryKey::key_only(k.to_compact()),
        size,
        SystemTime::now() + Duration::from_secs(3600),
    );
    for e in evicted {
        storage
            .purge(
                pingora_cache::storage::PurgeTarget::Exact(&e),
                PurgeType::Eviction,
                &span.handle(),
            )
            .await
            .unwrap();
    }
    false
}

/// Whether `key` is stored, by a lookup alone (no fill on a miss).
async fn stored(storage: &'static TieredStorage, key: u32) -> bool {
    let span = Span::inactive();
    let k = CacheKey::new(format!("https://galion.app/obj/{key}"), "api");
    storage.lookup(&k, &span.handle()).await.unwrap().is_some()
}

/// A Zipf-like sequence over `n` keys (rank r has weight 1/r^s), from a fixed seed.
fn zipf(n: usize, s: f64, count: usize, mut seed: u64) -> Vec<u32> {
    let weights: Vec<f64> = (1..=n).map(|r| 1.0 / (r as f64).powf(s)).collect();
    let total: f64 = weights.iter().sum();
    let mut cdf = Vec::with_capacity(n);
    let mut acc = 0.0;
    for w in &weights {
        acc += w / total;
        cdf.push(acc);
    }
    (0..count)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let u = (seed >> 11) as f64 / (1u64 << 53) as f64;
            cdf.partition_point(|c| *c < u).min(n - 1) as u32
        })
        .collect()
}

/// Exact LRU over `capacity` equal-sized objects: the reference hit ratio.
fn exact_lru(seq: &[u32], capacity: usize) -> f64 {
    let mut order: VecDeque<u32> = VecDeque::new();
    let mut present: HashMap<u32, ()> = HashMap::new();
    let mut hits = 0;
    for k in seq {
        if present.contains_key(k) {
            hits += 1;
            let pos = order.iter().position(|x| x == k).unwrap();
            order.remove(pos);
            order.push_back(*k);
        } else {
            present.insert(*k, ());
            order.push_back(*k);
            if order.len() > capacity {
                let old = order.pop_front().unwrap();
                present.remove(&old);
            }
        }
    }
    hits as f64 / seq.len() as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hit_ratio_on_a_skewed_workload_matches_lru() {
    let dir = tempfile::tempdir().unwrap();
    // 8 KiB bodies take 12 KiB on disk with the footer and block rounding: 200 of them fit.
    let capacity_bytes = 200 * 12 * 1024;
    let eviction = leak(DiskEviction::with_capacity(capacity_bytes, 1024));
    // A memory tier of ~10 objects: the disk tier decides the hit ratio.
    let storage =
        leak(TieredStorage::open("api", dir.path(), 10 * 9 * 1024, 1 << 20, eviction).unwrap());
    let body = Bytes::from(vec![b'x'; 8 * 1024]);
    let seq = zipf(2000, 0.9, 20_000, 0x9e3779b97f4a7c15);
    let mut hits = 0usize;
    for k in &seq {
        if request(storage, eviction, *k, &body).await {
            hits += 1;
        }
    }
    let ours = hits as f64 / seq.len() as f64;
    let objects_held = storage.usage().disk_objects as usize;
    let reference = exact_lru(&seq, objects_held.max(1));
    println!("hit ratio {ours:.3}, exact LRU of {objects_held} objects {reference:.3}");
    assert!(
        ours >= reference - 0.02,
        "hit ratio {ours:.3} is below exact LRU's {reference:.3}"
    );
    // And the disk holds what the accounting says, within the zone.
    let u = storage.usage();
    assert!(u.disk_bytes as usize <= capacity_bytes, "{u:?}");
    assert!(u.disk_objects >= 190, "the zone is used: {u:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reindexes_and_enforces_a_smaller_size() {
    let dir = tempfile::tempdir().unwrap();
    let body = Bytes::from(vec![b'y'; 8 * 1024]);
    {
        let eviction = leak(DiskEviction::with_capacity(100 * 12 * 1024, 1024));
        let storage = leak(TieredStorage::open("api", dir.path(), 0, 1 << 20, eviction).unwrap());
        for k in 0..100 {
            request(storage, eviction, k, &body).await;
        }
        assert_eq!(storage.usage().disk_objects, 100);
    }
    // Reopened with half the size: the oldest half is dropped, the newest kept and served.
    let eviction = leak(DiskEviction::with_capacity(50 * 12 * 1024, 1024));
    let storage = leak(TieredStorage::open("api", dir.path(), 0, 1 << 20, eviction).unwrap());
    let u = storage.usage();
    assert!(u.disk_objects <= 50 && u.disk_objects >= 45, "{u:?}");
    // Exactly the newest entries stay, even those written within one tick of the kernel's clock.
    let n = u.disk_objects as u32;
    let mut kept = Vec::new();
    for k in 0..100 {
        if stored(storage, k).await {
            kept.push(k);
        }
    }
    assert_eq!(
        kept,
        (100 - n..100).collect::<Vec<_>>(),
        "the newest {n} are kept"
    );
    assert!(
        request(storage, eviction, 99, &body).await,
        "the newest entry is a hit"
    );
}
