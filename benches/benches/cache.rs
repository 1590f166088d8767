//! Cache hit latency from each tier of a zone, through the `Storage` API Pingora calls:
//! lookup, deserialize the meta, read the body.
//! Protects: the 5-20 ms server cache-hit target (ARCHITECTURE.md). The storage's share of a
//! hit must be a tiny fraction of it.
//!
//! Then the disk work around fills and evictions, and the miss (`cache_disk_work`): what each
//! costs on the thread that calls it, done inline against handed to tokio's blocking pool, in
//! the same run, on the file system of the temp directory (the cache's own on a server). The
//! decisions in `proxy-core/src/cache/storage.rs` ("What runs where") rest on these figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use galion_edge_benches::{bench, benchmarking, criterion, fmt_duration, Margin, CACHE_HIT};
use pingora_cache::eviction::CacheEntryKey;
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::{CacheKey, CacheMeta};
use proxy_core::pingora::http::ResponseHeader;
use proxy_core::{DiskEviction, TieredStorage};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

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

/// Where the storage keeps `key`'s entry: `ZONE/ab/abcdef…` (`cache::disk::entry_path`).
fn entry_path(zone: &Path, key: &CacheKey) -> PathBuf {
    let hex: String = key
        .combined_bin()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    zone.join(&hex[..2]).join(hex)
}

/// Benchmarks `f` on inputs from `setup` (not timed) as `id`, and prints its margin.
fn bench_batched<I, O>(
    c: &mut Criterion,
    id: &str,
    setup: impl FnMut() -> I,
    routine: impl FnMut(&mut I) -> O,
) {
    let m = Margin::new();
    let (mut setup, mut routine) = (setup, routine);
    c.bench_function(id, |b| m.iter_batched(b, &mut setup, &mut routine));
    m.report(id, CACHE_HIT);
}

/// A temp file with a 1 KiB body written and still open, as a fill has it before `finish`.
fn open_fill(dir: &Path, n: &AtomicU64) -> (PathBuf, std::fs::File) {
    let tmp = dir.join(format!("fill.{}", n.fetch_add(1, Ordering::Relaxed)));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(&[b'a'; 1024]).unwrap();
    (tmp, f)
}

/// The disk work of the old `DiskFill::finish`: footer and tail appended, file closed, parent
/// directory made sure of, renamed over the previous version of the entry (a refill).
fn finish_fill(tmp: &Path, mut f: std::fs::File, to: &Path) {
    f.write_all(&[b'f'; 300]).unwrap();
    f.write_all(&[b't'; 16]).unwrap();
    drop(f);
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::rename(tmp, to).unwrap();
}

/// A 1 KiB entry-sized file, closed, to be unlinked.
fn entry_file(dir: &Path, n: &AtomicU64) -> PathBuf {
    let p = dir.join(format!("victim.{}", n.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&p, [b'v'; 1340]).unwrap();
    p
}

/// CPU time of the calling thread so far (`/proc/thread-self/schedstat`, nanoseconds on CPU).
fn thread_cpu() -> Option<Duration> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(Duration::from_nanos(
        s.split_whitespace().next()?.parse().ok()?,
    ))
}

/// Runs `op` on `n` inputs made beforehand and prints the calling thread's CPU time per
/// operation and the wall-clock percentiles: what a worker thread pays, and how long it can be
/// held.
fn per_op<I>(label: &str, inputs: Vec<I>, mut op: impl FnMut(I)) {
    let n = inputs.len();
    let mut lat = Vec::with_capacity(n);
    let cpu0 = thread_cpu();
    for i in inputs {
        let t = Instant::now();
        op(i);
        lat.push(t.elapsed());
    }
    let cpu = thread_cpu().zip(cpu0).map(|(b, a)| (b - a) / n as u32);
    lat.sort();
    let q = |p: f64| fmt_duration(lat[((n as f64 * p) as usize).min(n - 1)]);
    println!(
        "disk_tail: {label}: caller CPU {} per op; wall p50 {} p99 {} p99.9 {} max {} ({n} ops)",
        cpu.map_or("?".into(), fmt_duration),
        q(0.5),
        q(0.99),
        q(0.999),
        fmt_duration(lat[n - 1]),
    );
}

/// Writes and fsyncs 8 MiB at a time on `dir`'s file system until `stop`: the journal commits
/// that other writers (logs, the origin, a full page cache) put a rename or unlink behind.
fn write_pressure(dir: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let path = dir.join("pressure");
    std::thread::spawn(move || {
        let chunk = vec![b'p'; 8 << 20];
        let mut f = std::fs::File::create(&path).unwrap();
        let mut written = 0u64;
        while !stop.load(Ordering::Relaxed) {
            f.write_all(&chunk).unwrap();
            f.sync_data().unwrap();
            written += chunk.len() as u64;
            if written >= 256 << 20 {
                f.set_len(0).unwrap();
                written = 0;
            }
        }
        drop(f);
        let _ = std::fs::remove_file(&path);
    })
}

fn cache_disk_work(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let eviction = leak(DiskEviction::with_capacity(1 << 30, 1 << 16));
    let zone_dir = dir.path().join("zone");
    let zone = leak(TieredStorage::open("disk", &zone_dir, 64 << 20, 16 << 20, eviction).unwrap());
    let span = Span::inactive();
    let body = Bytes::from(vec![b'a'; 1024]);

    // A miss: a key the zone does not hold (every uncacheable request on a caching route).
    let absent = CacheKey::new("https://galion.app/api/me?cc=private".to_string(), "bench");
    bench(c, "cache_miss/unindexed/index_check", CACHE_HIT, || {
        rt.block_on(zone.lookup(&absent, &span.handle()))
            .unwrap()
            .is_none()
    });
    // The old path: the entry file opened on the blocking pool, found absent.
    // The key's hash and path are made on each call, as the old lookup and `read_entry` did.
    bench(
        c,
        "cache_miss/unindexed/blocking_pool_open",
        CACHE_HIT,
        || {
            let p = entry_path(&zone_dir, &absent);
            rt.block_on(async {
                tokio::task::spawn_blocking(move || std::fs::File::open(p).is_err())
                    .await
                    .unwrap()
            })
        },
    );

    // A whole fill of 1 KiB through the storage (create, write, finish), over the previous
    // version of the same entry, as a refill after expiry.
    let refill = CacheKey::new("https://galion.app/api/refilled".to_string(), "bench");
    bench(c, "cache_fill/1KiB/storage", CACHE_HIT, || {
        rt.block_on(fill(zone, &refill, body.clone()))
    });

    // One 16 KiB chunk of a fill's body appended to its temp file, inline (what `write_body`
    // does) against on the blocking pool. The file is emptied every 64 MiB, outside the timing.
    let chunk_file = Arc::new(std::fs::File::create(dir.path().join("chunks")).unwrap());
    let chunk = Bytes::from(vec![b'c'; 16 << 10]);
    let appended = AtomicU64::new(0);
    let empty_if_large = || {
        if appended.load(Ordering::Relaxed) >= 64 << 20 {
            chunk_file.set_len(0).unwrap();
            appended.store(0, Ordering::Relaxed);
        }
    };
    let append = |f: &std::fs::File, c: &[u8]| {
        (&*f).write_all(c).unwrap();
        appended.fetch_add(c.len() as u64, Ordering::Relaxed);
    };
    bench_batched(
        c,
        "cache_fill/chunk_write_16KiB/inline",
        empty_if_large,
        |_| rt.block_on(async { append(&chunk_file, &chunk) }),
    );
    bench_batched(
        c,
        "cache_fill/chunk_write_16KiB/blocking_pool",
        empty_if_large,
        |_| {
            let (f, c) = (chunk_file.clone(), chunk.clone());
            rt.block_on(async {
                tokio::task::spawn_blocking(move || (&*f).write_all(&c).unwrap())
                    .await
                    .unwrap()
            });
            appended.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        },
    );

    // The disk work of `finish` alone, inline against on the blocking pool.
    let scratch = dir.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let n = AtomicU64::new(0);
    let to = scratch.join("ab").join("abcdef");
    bench_batched(
        c,
        "cache_fill/finish_disk_work/inline",
        || Some(open_fill(&scratch, &n)),
        |input| {
            let (tmp, f) = input.take().unwrap();
            rt.block_on(async { finish_fill(&tmp, f, &to) })
        },
    );
    bench_batched(
        c,
        "cache_fill/finish_disk_work/blocking_pool",
        || Some(open_fill(&scratch, &n)),
        |input| {
            let ((tmp, f), to) = (input.take().unwrap(), to.clone());
            rt.block_on(async {
                tokio::task::spawn_blocking(move || finish_fill(&tmp, f, &to))
                    .await
                    .unwrap()
            })
        },
    );

    // An eviction: through the storage (the entry forgotten, its unlink queued), then the
    // unlink alone, inline against on the blocking pool.
    let evicted = AtomicU64::new(0);
    bench_batched(
        c,
        "cache_evict/purge/storage",
        || {
            let i = evicted.fetch_add(1, Ordering::Relaxed);
            let key = CacheKey::new(format!("https://galion.app/api/evicted/{i}"), "bench");
            rt.block_on(fill(zone, &key, body.clone()));
            CacheEntryKey::key_only(key.to_compact())
        },
        |target| {
            rt.block_on(zone.purge(
                PurgeTarget::Exact(&*target),
                PurgeType::Eviction,
                &span.handle(),
            ))
            .unwrap()
        },
    );
    bench_batched(
        c,
        "cache_evict/unlink/inline",
        || Some(entry_file(&scratch, &n)),
        |p| {
            let p = p.take().unwrap();
            rt.block_on(async { std::fs::remove_file(p).unwrap() })
        },
    );
    bench_batched(
        c,
        "cache_evict/unlink/blocking_pool",
        || Some(entry_file(&scratch, &n)),
        |p| {
            let p = p.take().unwrap();
            rt.block_on(async {
                tokio::task::spawn_blocking(move || std::fs::remove_file(p).unwrap())
                    .await
                    .unwrap()
            })
        },
    );

    // The caller's CPU per operation and the wall-clock tail, idle and while another writer
    // keeps the journal busy; rounds interleaved.
    let (ops, rounds) = if benchmarking() { (2000, 3) } else { (20, 1) };
    for pressure in [false, true] {
        if pressure && !benchmarking() {
            continue;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let writer = pressure.then(|| write_pressure(dir.path(), stop.clone()));
        let under = if pressure {
            "under write pressure"
        } else {
            "idle"
        };
        for round in 1..=rounds {
            let fills = || {
                (0..ops)
                    .map(|_| open_fill(&scratch, &n))
                    .collect::<Vec<_>>()
            };
            per_op(
                &format!("finish, inline, {under}, round {round}"),
                fills(),
                |(tmp, f)| rt.block_on(async { finish_fill(&tmp, f, &to) }),
            );
            per_op(
                &format!("finish, blocking pool, {under}, round {round}"),
                fills(),
                |(tmp, f)| {
                    let to = to.clone();
                    rt.block_on(async {
                        tokio::task::spawn_blocking(move || finish_fill(&tmp, f, &to))
                            .await
                            .unwrap()
                    })
                },
            );
            chunk_file.set_len(0).unwrap();
            per_op(
                &format!("chunk write 16 KiB, inline, {under}, round {round}"),
                vec![(); ops],
                |()| rt.block_on(async { (&*chunk_file).write_all(&chunk).unwrap() }),
            );
            chunk_file.set_len(0).unwrap();
            per_op(
                &format!("chunk write 16 KiB, blocking pool, {under}, round {round}"),
                vec![(); ops],
                |()| {
                    let (f, c) = (chunk_file.clone(), chunk.clone());
                    rt.block_on(async {
                        tokio::task::spawn_blocking(move || (&*f).write_all(&c).unwrap())
                            .await
                            .unwrap()
                    })
                },
            );
            let victims = || {
                (0..ops)
                    .map(|_| entry_file(&scratch, &n))
                    .collect::<Vec<_>>()
            };
            per_op(
                &format!("unlink, inline, {under}, round {round}"),
                victims(),
                |p| rt.block_on(async { std::fs::remove_file(p).unwrap() }),
            );
            per_op(
                &format!("unlink, blocking pool, {under}, round {round}"),
                victims(),
                |p| {
                    rt.block_on(async {
                        tokio::task::spawn_blocking(move || std::fs::remove_file(p).unwrap())
                            .await
                            .unwrap()
                    })
                },
            );
        }
        stop.store(true, Ordering::Relaxed);
        if let Some(w) = writer {
            w.join().unwrap();
        }
    }
}

criterion_group! {
    name = benches;
    config = criterion();
    targets = cache_hits, cache_disk_work
}
criterion_main!(benches);
