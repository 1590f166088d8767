//! Replays the committed fuzz corpora through the fuzz targets' invariant checks, on the stable
//! toolchain, so CI covers what the fuzzers check. Needs proxy-core's `fuzzing` feature:
//! `cargo test -p proxy-core --features fuzzing --test fuzz_corpus` (as `scripts/test.sh` runs it).
//!
//! `fuzz/corpus/<target>/seed-*` are the seeds; `fuzz/regressions/<target>/*` are inputs a
//! fuzzer once crashed on (each also has a focused unit test next to the code it broke). Both
//! go through `proxy_core::fuzzing::<target>`, the function the cargo-fuzz target calls.
//!
//! The disk-entry seeds are real entry files written by `TieredStorage`; `write_disk_seeds`
//! (ignored) regenerates them:
//! `GALION_WRITE_FUZZ_SEEDS=1 cargo test -p proxy-core --features fuzzing --test fuzz_corpus -- --ignored`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use proxy_core::fuzzing;
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// Every file under `fuzz/<kind>/<target>/`, sorted; none if the directory does not exist.
fn inputs(kind: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join(kind).join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

fn replay(target: &str, check: impl Fn(&[u8])) {
    let seeds = inputs("corpus", target);
    assert!(
        seeds.len() >= 3,
        "fuzz/corpus/{target} should hold the committed seeds"
    );
    for (path, data) in seeds.iter().chain(&inputs("regressions", target)) {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(data)));
        assert!(outcome.is_ok(), "{} breaks an invariant", path.display());
    }
}

#[test]
fn every_target_has_a_corpus() {
    for target in fuzzing::TARGETS {
        assert!(
            fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{target}.rs"))
                .is_file(),
            "no fuzz target for {target}"
        );
        assert!(
            !inputs("corpus", target).is_empty(),
            "no seeds for {target}"
        );
    }
}

#[test]
fn config_corpus() {
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    replay("config", |d| fuzzing::config(d, &configs));
}

#[test]
fn routing_corpus() {
    replay("routing", fuzzing::routing);
}

#[test]
fn client_ip_corpus() {
    replay("client_ip", fuzzing::client_ip);
}

#[test]
fn accept_encoding_corpus() {
    replay("accept_encoding", fuzzing::accept_encoding);
}

#[test]
fn cache_control_corpus() {
    replay("cache_control", fuzzing::cache_control);
}

#[test]
fn disk_entry_corpus() {
    replay("disk_entry", fuzzing::disk_entry);
    // The seeds written by the real disk tier still decode: the format has not drifted.
    let mut entries = 0;
    for (path, data) in inputs("corpus", "disk_entry") {
        let name = path.file_name().unwrap().to_string_lossy();
        if !name.starts_with("seed-entry-") {
            continue;
        }
        let key = fuzzing::stored_key(&data).unwrap();
        let (footer, body) = proxy_core::decode_cache_entry(&data, &key).unwrap();
        assert_eq!(body.end as u64, footer.body_len, "{name}");
        proxy_core::pingora::cache::CacheMeta::deserialize(&footer.meta.0, &footer.meta.1).unwrap();
        entries += 1;
    }
    assert!(entries >= 2, "the real disk entries are part of the corpus");
}

#[test]
fn acme_path_corpus() {
    let dir = tempfile::tempdir().unwrap();
    let fixture = fuzzing::AcmeFixture::new(dir.path()).unwrap();
    replay("acme_path", |d| fuzzing::acme_path(&fixture, d));
}

/// Writes real disk-tier entries (a plain body, a varied response, an empty body) into
/// `fuzz/corpus/disk_entry/` with the disk tier's own writer.
#[tokio::test]
#[ignore = "regenerates committed seeds; run with GALION_WRITE_FUZZ_SEEDS=1"]
async fn write_disk_seeds() {
    use bytes::Bytes;
    use proxy_core::pingora::cache::key::CacheHashKey;
    use proxy_core::pingora::cache::storage::{MissFinishType, Storage};
    use proxy_core::pingora::cache::trace::Span;
    use proxy_core::pingora::cache::{CacheKey, CacheMeta};
    use proxy_core::pingora::http::ResponseHeader;
    use proxy_core::{DiskEviction, TieredStorage};
    use std::time::{Duration, SystemTime};

    if std::env::var_os("GALION_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let zone = tempfile::tempdir().unwrap();
    let eviction: &'static DiskEviction =
        Box::leak(Box::new(DiskEviction::with_capacity(1 << 20, 64)));
    let storage: &'static TieredStorage = Box::leak(Box::new(
        TieredStorage::open("api", zone.path(), 1 << 16, 1 << 16, eviction).unwrap(),
    ));
    let span = Span::inactive();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let entries: [(&str, &str, Option<&str>, &[u8]); 3] = [
        (
            "plain",
            "https://galion.app/api/users?page=2",
            None,
            b"{\"users\":[1,2,3]}",
        ),
        (
            "vary",
            "https://galion.studio/",
            Some("br"),
            b"<!doctype html><title>Galion Studio</title>",
        ),
        ("empty", "http://galion.app/empty", None, b""),
    ];
    let out = fuzz_dir().join("corpus").join("disk_entry");
    std::fs::create_dir_all(&out).unwrap();
    for (name, url, variance, body) in entries {
        let mut key = CacheKey::new(url, "api");
        if let Some(v) = variance {
            key.set_variance_key(*blake2_like(v));
        }
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("content-type", "application/json").unwrap();
        h.insert_header("cache-control", "public, max-age=60")
            .unwrap();
        if variance.is_some() {
            h.insert_header("vary", "Accept-Encoding").unwrap();
            h.insert_header("content-encoding", "br").unwrap();
        }
        let meta = CacheMeta::new(now + Duration::from_secs(60), now, 30, 600, h);
        let mut miss = storage
            .get_miss_handler(&key, &meta, &span.handle())
            .await
            .unwrap();
        miss.write_body(Bytes::copy_from_slice(body), true)
            .await
            .unwrap();
        assert!(matches!(
            miss.finish().await.unwrap(),
            MissFinishType::Created(_)
        ));
        let file = fuzzing::entry_path(zone.path(), &key.combined_bin());
        std::fs::copy(&file, out.join(format!("seed-entry-{name}"))).unwrap();
    }
}

/// A fixed 16-byte variance key from a short text (the seeds need a stable one, not a good hash).
fn blake2_like(text: &str) -> Box<[u8; 16]> {
    let mut k = [0u8; 16];
    for (i, b) in text.bytes().enumerate() {
        k[i % 16] ^= b;
    }
    Box::new(k)
}
