//! The memory tier: hot objects by combined key, bounded in bytes, evicted LRU.
//!
//! Objects live in a sharded map; their order lives in Pingora's sharded `pingora_lru::Lru`.
//! Evicting from memory never removes an object from disk: the disk tier holds everything the
//! zone holds, the memory tier is a copy of what is hot.

use bytes::Bytes;
use pingora_cache::key::HashBinary;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use pingora_lru::Lru;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::SystemTime;

const SHARDS: usize = 16;

/// One object in memory.
#[derive(Debug)]
pub(crate) struct MemObject {
    /// Serialized `CacheMeta`.
    pub meta: (Vec<u8>, Vec<u8>),
    /// The body.
    pub body: Bytes,
    /// The meta parsed once, on the first hit (`None` inside if it does not parse).
    parsed: OnceLock<Option<Parsed>>,
}

/// What a hit needs of a parsed meta.
#[derive(Debug)]
enum Parsed {
    /// Every internal field is one `CacheMeta::new` and its setters can set: rebuilt from them.
    Rebuilt(ParsedMeta),
    /// Fields no public setter reaches (a revalidated entry's `updated`, a carried-over
    /// provenance): the internal half is decoded from its stored bytes (a few bytes of
    /// MessagePack) with a bare header, and this header put in its place.
    Header(ResponseHeader),
}

/// The header half of a serialized meta whose response header is a bare `200`: a few bytes of
/// zstd, so deserializing it costs a small constant, unlike a real response header (Huffman
/// tables against Pingora's dictionary, growing with the header). Empty if it cannot be made;
/// such hits then take the full parse.
fn bare_header() -> &'static [u8] {
    static BARE: OnceLock<Vec<u8>> = OnceLock::new();
    BARE.get_or_init(|| {
        let t = SystemTime::UNIX_EPOCH;
        ResponseHeader::build(200, Some(0))
            .and_then(|h| CacheMeta::new(t, t, 0, 0, h).serialize())
            .map(|(_, header)| header)
            .unwrap_or_default()
    })
}

impl Parsed {
    /// Parses `meta` once and picks the cheaper exact way to give it back on every hit.
    fn new(meta: &(Vec<u8>, Vec<u8>)) -> Option<Parsed> {
        let m = CacheMeta::deserialize(&meta.0, &meta.1).ok()?;
        let parsed = ParsedMeta::of(&m);
        let exact = parsed
            .rebuild()
            .serialize()
            .is_ok_and(|(internal, _)| internal == meta.0);
        Some(if exact {
            Parsed::Rebuilt(parsed)
        } else {
            Parsed::Header(parsed.header)
        })
    }

    fn meta(&self, stored: &(Vec<u8>, Vec<u8>)) -> Option<CacheMeta> {
        match self {
            Parsed::Rebuilt(p) => Some(p.rebuild()),
            Parsed::Header(h) => {
                let mut m = CacheMeta::deserialize(&stored.0, bare_header()).ok()?;
                *m.response_header_mut() = h.clone();
                Some(m)
            }
        }
    }
}

/// A `CacheMeta` kept parsed, so a memory hit does not decompress (zstd) and parse the stored
/// response header again: it clones the header and sets the same fields.
#[derive(Debug)]
struct ParsedMeta {
    header: ResponseHeader,
    fresh_until: SystemTime,
    created: SystemTime,
    stale_while_revalidate: u32,
    stale_if_error: u32,
    variance: Option<HashBinary>,
    epoch_override: Option<SystemTime>,
}

impl ParsedMeta {
    /// The fields of `m` that `CacheMeta::new` and its public setters can set. Whether they
    /// rebuild `m` exactly is for [`Parsed::new`] to check.
    fn of(m: &CacheMeta) -> ParsedMeta {
        ParsedMeta {
            header: m.response_header_copy(),
            fresh_until: m.fresh_until(),
            created: m.created(),
            stale_while_revalidate: m.stale_while_revalidate_sec(),
            stale_if_error: m.stale_if_error_sec(),
            variance: m.variance(),
            epoch_override: m.epoch_override(),
        }
    }

    fn rebuild(&self) -> CacheMeta {
        let mut m = CacheMeta::new(
            self.fresh_until,
            self.created,
            self.stale_while_revalidate,
            self.stale_if_error,
            self.header.clone(),
        );
        if let Some(v) = self.variance {
            m.set_variance(v);
        }
        if let Some(e) = self.epoch_override {
            m.set_epoch_override(e);
        }
        m
    }
}

impl MemObject {
    /// An object from its serialized meta and body.
    pub(crate) fn new(meta: (Vec<u8>, Vec<u8>), body: Bytes) -> Self {
        MemObject {
            meta,
            body,
            parsed: OnceLock::new(),
        }
    }

    /// The meta of a hit, exactly as stored, without decompressing (zstd) and parsing the
    /// stored response header again after the first call: rebuilt from its parsed fields, or
    /// (a revalidated entry) its internal half decoded with the parsed header put in. `None` if
    /// the meta does not parse; the caller's full parse then reports why.
    pub(crate) fn meta(&self) -> Option<CacheMeta> {
        self.parsed
            .get_or_init(|| Parsed::new(&self.meta))
            .as_ref()?
            .meta(&self.meta)
    }

    fn weight(&self) -> usize {
        self.body.len() + self.meta.0.len() + self.meta.1.len() + 128
    }
}

/// The memory tier of one zone.
pub(crate) struct MemoryTier {
    shards: Vec<RwLock<HashMap<HashBinary, Arc<MemObject>>>>,
    lru: Lru<HashBinary, SHARDS>,
    limit: usize,
    evictions: AtomicU64,
}

impl std::fmt::Debug for MemoryTier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTier")
            .field("limit", &self.limit)
            .field("bytes", &self.lru.weight())
            .finish()
    }
}

fn lru_key(k: &HashBinary) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&k[..8]);
    u64::from_le_bytes(b)
}

impl MemoryTier {
    /// A tier holding at most `limit` bytes (0 disables it).
    pub(crate) fn new(limit: usize) -> Self {
        MemoryTier {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            // The capacity is per shard (see `CacheZone::open`): a 4 KiB average object.
            lru: Lru::with_capacity(limit.max(1), (limit / 4096).clamp(64, 1 << 20) / SHARDS),
            limit,
            evictions: AtomicU64::new(0),
        }
    }

    fn shard(&self, k: &HashBinary) -> &RwLock<HashMap<HashBinary, Arc<MemObject>>> {
        &self.shards[(k[15] as usize) % SHARDS]
    }

    /// The object for `key`, marking it recently used.
    pub(crate) fn get(&self, key: &HashBinary) -> Option<Arc<MemObject>> {
        let obj = self.shard(key).read().ok()?.get(key).cloned()?;
        self.lru.promote(lru_key(key));
        Some(obj)
    }

    /// Whether an object of `len` body bytes is admitted at all (at most 1/8 of the tier, so one
    /// large object cannot flush everything hot).
    pub(crate) fn admits(&self, len: usize) -> bool {
        self.limit > 0 && len <= self.limit / 8
    }

    /// Inserts or replaces an object, evicting least-recently-used ones over the limit.
    pub(crate) fn insert(&self, key: HashBinary, obj: MemObject) {
        if !self.admits(obj.body.len()) {
            self.remove(&key);
            return;
        }
        let weight = obj.weight();
        if let Ok(mut m) = self.shard(&key).write() {
            m.insert(key, Arc::new(obj));
        }
        self.lru.admit(lru_key(&key), key, weight);
        for (evicted, _) in self.lru.evict_to_limit() {
            self.evictions.fetch_add(1, Ordering::Relaxed);
            if let Ok(mut m) = self.shard(&evicted).write() {
                m.remove(&evicted);
            }
        }
    }

    /// Replaces the meta of an object in memory, keeping its body.
    pub(crate) fn update_meta(&self, key: &HashBinary, meta: (Vec<u8>, Vec<u8>)) {
        if let Ok(mut m) = self.shard(key).write() {
            if let Some(old) = m.get(key).cloned() {
                m.insert(*key, Arc::new(MemObject::new(meta, old.body.clone())));
            }
        }
    }

    /// Drops an object. Returns whether it was there.
    pub(crate) fn remove(&self, key: &HashBinary) -> bool {
        self.lru.remove(lru_key(key));
        self.shard(key)
            .write()
            .map(|mut m| m.remove(key).is_some())
            .unwrap_or(false)
    }

    /// Drops everything.
    pub(crate) fn clear(&self) {
        for s in &self.shards {
            if let Ok(mut m) = s.write() {
                for k in m.keys() {
                    self.lru.remove(lru_key(k));
                }
                m.clear();
            }
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        self.lru.weight()
    }

    /// Objects held.
    pub(crate) fn objects(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().map(|m| m.len()).unwrap_or(0))
            .sum()
    }

    /// Objects evicted so far.
    pub(crate) fn evictions(&self) -> u64 {
        self.evictions.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(n: usize) -> MemObject {
        MemObject::new((vec![], vec![]), Bytes::from(vec![0u8; n]))
    }

    #[test]
    fn bounded_and_lru() {
        let t = MemoryTier::new(64 * 1024);
        // Every key in one LRU shard (the low byte of the key picks it): Pingora evicts from the
        // longer of two random shards, so keys spread over shards leave an old cold key in
        // place now and then (a flaky test), while one shard evicts strictly in LRU order.
        for i in 0..100u8 {
            let mut k = [0u8; 16];
            k[1] = i;
            t.insert(k, obj(1000));
            // keep key 0 hot
            t.get(&[0u8; 16]);
        }
        assert!(t.bytes() <= 64 * 1024, "{}", t.bytes());
        assert!(t.get(&[0u8; 16]).is_some(), "the hot key survives");
        let mut cold = [0u8; 16];
        cold[1] = 1;
        assert!(t.get(&cold).is_none(), "an old cold key is evicted");
        assert!(t.evictions() > 0);
        assert!(!t.admits(9 * 1024), "over 1/8 of the tier is not admitted");
    }

    #[test]
    fn parsed_meta_rebuilds_the_stored_meta_exactly() {
        let created = SystemTime::now() - std::time::Duration::from_secs(10);
        let mut h = ResponseHeader::build(200, None).unwrap();
        h.insert_header("Content-Type", "text/plain").unwrap();
        h.insert_header("vary", "Accept-Encoding").unwrap();
        let fresh = created + std::time::Duration::from_secs(60);
        let mut m = CacheMeta::new(fresh, created, 30, 600, h);
        m.set_variance([7u8; 16]);
        let stored = m.serialize().unwrap();
        let o = MemObject::new(stored.clone(), Bytes::new());
        let rebuilt = o.meta().expect("a fresh entry is kept parsed");
        assert!(matches!(o.parsed.get(), Some(Some(Parsed::Rebuilt(_)))));
        assert_eq!(rebuilt.serialize().unwrap(), stored);
        assert_eq!(rebuilt.variance(), Some([7u8; 16]));
        assert_eq!(rebuilt.headers()["vary"], "Accept-Encoding");
        // The second hit gives the same.
        assert_eq!(o.meta().unwrap().serialize().unwrap(), stored);

        // A revalidated entry (`updated` after `created`, provenance kept) too: every internal
        // field comes from the stored bytes.
        let mut revalidated = CacheMeta::deserialize(&stored.0, &stored.1).unwrap();
        revalidated.update_freshness(fresh + std::time::Duration::from_secs(60), 5, 7);
        revalidated.set_epoch_override(created);
        let stored = revalidated.serialize().unwrap();
        let o = MemObject::new(stored.clone(), Bytes::new());
        let rebuilt = o.meta().expect("a revalidated entry is kept parsed");
        assert!(matches!(o.parsed.get(), Some(Some(Parsed::Header(_)))));
        assert_eq!(rebuilt.serialize().unwrap(), stored);
        assert!(rebuilt.updated() > rebuilt.created());
        assert_eq!(rebuilt.provenance(), created);
        assert_eq!(rebuilt.stale_if_error_sec(), 7);
        assert_eq!(rebuilt.epoch_override(), Some(created));
        // Anything that does not parse is left to the caller's full parse (and its error).
        assert!(MemObject::new((vec![1, 2], vec![3]), Bytes::new())
            .meta()
            .is_none());
        assert!(MemObject::new((stored.0.clone(), vec![3]), Bytes::new())
            .meta()
            .is_none());
    }
}
