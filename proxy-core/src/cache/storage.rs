//! [`TieredStorage`]: a `pingora_cache::Storage` with a memory tier over a disk tier.
//!
//! - Lookup: memory first; then the entry file, read whole and verified (checksum, lengths,
//!   key) before any byte is served, and promoted to memory if it fits. A bad file is deleted,
//!   counted, and reported as a miss.
//! - Fill: the body streams to a temp file as it arrives (memory use is one chunk, plus a copy
//!   for the memory tier only if the object fits there); the footer is appended and the file
//!   renamed into place when the response is complete. An aborted fill leaves nothing.
//! - Capacity: Pingora's LRU eviction manager (`pingora_cache::eviction::lru::Manager`) tracks
//!   every entry's size on disk (rounded up to 4 KiB blocks) and tells Pingora what to purge;
//!   [`TieredStorage::open`] re-admits what is on disk at start, oldest first.
//! - Disk faults (full, read-only, directory removed, I/O errors) never fail a request: the
//!   response is served uncached, the error is counted by [`DiskOp`] in
//!   [`ZoneStats::disk_errors()`] and logged at most once per [`LOG_EVERY`], and the next fill
//!   tries the disk again (recreating the zone directory if it is gone), so caching resumes
//!   by itself when the disk recovers.

use super::disk::{self, Corrupt, Footer};
use super::memory::{MemObject, MemoryTier};
use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use log::{info, warn};
use pingora_cache::eviction::lru::Manager;
use pingora_cache::eviction::{CacheEntryKey, CacheEntryKeyRef, EvictionManager};
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};
use pingora_cache::storage::{
    HandleHit, HandleMiss, HitHandler, MissFinishType, MissHandler, PurgeOutcome, PurgeTarget,
    PurgeType, Storage,
};
use pingora_cache::trace::SpanHandle;
use pingora_cache::{CacheKey, CacheMeta};
use pingora_error::{Error, ErrorType, OrErr, Result};
use std::any::Any;
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime};

/// Disk accounting unit: what a file really occupies on a 4 KiB-block filesystem.
const BLOCK: u64 = 4096;

/// Shards of the disk tier's eviction manager.
pub const DISK_EVICTION_SHARDS: usize = 16;

/// The eviction manager type used for the disk tier.
pub type DiskEviction = Manager<DISK_EVICTION_SHARDS>;

/// Counters of one zone. All monotonic except the `*_bytes`/`*_objects` gauges.
#[derive(Debug, Default)]
pub struct ZoneStats {
    /// Hits served from memory.
    pub memory_hits: AtomicU64,
    /// Hits served from disk.
    pub disk_hits: AtomicU64,
    /// Lookups that found nothing.
    pub misses: AtomicU64,
    /// Entries written.
    pub fills: AtomicU64,
    /// Fills that failed (disk error, aborted response).
    pub fill_errors: AtomicU64,
    /// Entry files found corrupt and dropped.
    pub corrupt: AtomicU64,
    /// Entries evicted from disk.
    pub disk_evictions: AtomicU64,
    /// Disk operations that failed, indexed by [`DiskOp`] (`DiskOp::X as usize`).
    pub disk_errors: [AtomicU64; DiskOp::ALL.len()],
}

impl ZoneStats {
    /// Disk errors of one kind so far.
    pub fn disk_errors(&self, op: DiskOp) -> u64 {
        self.disk_errors[op as usize].load(Ordering::Relaxed)
    }
}

/// A kind of disk operation that can fail, for `galion_edge_cache_disk_errors_total{op}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskOp {
    /// Reading an entry file (other than it not existing).
    Read = 0,
    /// Creating, writing or renaming an entry or temp file, or recreating the zone directory:
    /// the disk is full, read-only or failing, or a file-size limit was hit.
    Write = 1,
    /// Deleting an entry file (purge, eviction, corrupt entry).
    Remove = 2,
    /// An entry the index knew of was gone from disk (the zone directory or files were
    /// removed behind the proxy's back).
    Lost = 3,
}

impl DiskOp {
    /// Every kind, in index order.
    pub const ALL: [DiskOp; 4] = [DiskOp::Read, DiskOp::Write, DiskOp::Remove, DiskOp::Lost];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskOp::Read => "read",
            DiskOp::Write => "write",
            DiskOp::Remove => "remove",
            DiskOp::Lost => "lost",
        }
    }
}

/// Disk errors of a zone are logged at most once per this interval (with the count of those
/// not logged), so a full disk does not turn into one log line per request.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Rate-limited logging of disk errors, and whether the disk is failing now.
#[derive(Debug)]
struct DiskHealth {
    epoch: Instant,
    /// Milliseconds since `epoch` before which no error is logged.
    quiet_until: AtomicU64,
    /// The same for "disk writes work again" (a disk that flaps between full and not must not
    /// log once per request either).
    recovery_quiet_until: AtomicU64,
    /// Errors not logged since the last line.
    suppressed: AtomicU64,
    /// Set by a write error, cleared (and logged) by the next complete fill.
    failing: AtomicBool,
}

#[derive(Debug, Clone)]
struct IndexEntry {
    compact: CompactCacheKey,
    url: Box<str>,
    weight: u64,
}

/// The disk tier's entries by key (a primary key's hash, or a variant's), and the keys of the
/// variants stored under each primary key, so that one URL's entries are found without scanning
/// the zone (an unsafe request invalidates its URL, RFC 9111 §4.4). An entry without variance
/// is found by its primary key itself and costs nothing more.
#[derive(Default)]
struct Index {
    entries: HashMap<HashBinary, IndexEntry>,
    variants: HashMap<HashBinary, Vec<HashBinary>>,
}

impl Index {
    fn insert(&mut self, key: HashBinary, entry: IndexEntry) {
        let variant = entry.compact.variance.is_some();
        let primary = entry.compact.primary;
        // A key is a hash of its primary key and variance: a replaced entry had the same ones.
        if self.entries.insert(key, entry).is_none() && variant {
            self.variants.entry(primary).or_default().push(key);
        }
    }

    fn remove(&mut self, key: &HashBinary) -> Option<IndexEntry> {
        let entry = self.entries.remove(key)?;
        if entry.compact.variance.is_some() {
            if let std::collections::hash_map::Entry::Occupied(mut keys) =
                self.variants.entry(entry.compact.primary)
            {
                keys.get_mut().retain(|k| k != key);
                if keys.get().is_empty() {
                    keys.remove();
                }
            }
        }
        Some(entry)
    }

    /// The keys stored under one primary key: the entry itself and its variants.
    fn under_primary(&self, primary: &HashBinary) -> Vec<HashBinary> {
        let mut keys = self.variants.get(primary).cloned().unwrap_or_default();
        if self.entries.contains_key(primary) {
            keys.push(*primary);
        }
        keys
    }
}

impl std::ops::Deref for Index {
    type Target = HashMap<HashBinary, IndexEntry>;

    fn deref(&self) -> &Self::Target {
        &self.entries
    }
}

/// A snapshot of a zone's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ZoneUsage {
    /// Bytes on disk (block-rounded).
    pub disk_bytes: u64,
    /// Entries on disk.
    pub disk_objects: u64,
    /// Bytes in memory.
    pub memory_bytes: u64,
    /// Objects in memory.
    pub memory_objects: u64,
}

/// A two-tier cache storage for one zone. Create with [`TieredStorage::open`], then leak it
/// (Pingora wants `&'static`), as [`super::CacheZone::open`] does.
///
/// It is a plain `pingora_cache::Storage`: any `ProxyHttp` can use it, with its
/// [`DiskEviction`] manager (which must be the one given to `open`, so that evictions Pingora
/// decides remove the files) and, usually, a cache lock:
///
/// ```
/// use proxy_core::cache::{DiskEviction, TieredStorage};
/// use proxy_core::pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
/// use std::time::Duration;
///
/// let dir = tempfile::tempdir().unwrap();
/// // 64 MiB on disk (about 4096 entries expected), 8 MiB in memory, objects up to 1 MiB.
/// let eviction: &'static DiskEviction =
///     Box::leak(Box::new(DiskEviction::with_capacity(64 << 20, 4096)));
/// let storage: &'static TieredStorage = Box::leak(Box::new(
///     TieredStorage::open("example", dir.path(), 8 << 20, 1 << 20, eviction).unwrap(),
/// ));
/// let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(Duration::from_secs(5)));
///
/// // Then, in `ProxyHttp::request_cache_filter`:
/// // session.cache.enable(storage, Some(eviction), None, Some(lock), None);
/// # let _ = lock;
/// assert_eq!(storage.usage().disk_objects, 0);
/// ```
///
/// `proxy-core/examples/cache_and_limiter.rs` is a whole proxy built that way.
pub struct TieredStorage {
    name: String,
    dir: PathBuf,
    memory: MemoryTier,
    index: RwLock<Index>,
    eviction: &'static DiskEviction,
    max_object: u64,
    seq: AtomicU64,
    health: DiskHealth,
    /// Counters.
    pub stats: ZoneStats,
}

impl std::fmt::Debug for TieredStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TieredStorage")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .finish()
    }
}

fn weight_of(file_len: u64) -> u64 {
    file_len.div_ceil(BLOCK).max(1) * BLOCK
}

impl TieredStorage {
    /// Opens (creating if needed) the zone directory, removes temp files left by a crash, and
    /// indexes the entries on disk, admitting them into `eviction` oldest first. Entries that
    /// no longer fit (the zone shrank) are deleted.
    pub fn open(
        name: &str,
        dir: &Path,
        memory_bytes: usize,
        max_object: u64,
        eviction: &'static DiskEviction,
    ) -> std::io::Result<TieredStorage> {
        std::fs::create_dir_all(dir.join("tmp"))?;
        for e in std::fs::read_dir(dir.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(e.path());
        }
        let storage = TieredStorage {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            memory: MemoryTier::new(memory_bytes),
            index: RwLock::new(Index::default()),
            eviction,
            max_object,
            seq: AtomicU64::new(0),
            health: DiskHealth {
                epoch: Instant::now(),
                quiet_until: AtomicU64::new(0),
                recovery_quiet_until: AtomicU64::new(0),
                suppressed: AtomicU64::new(0),
                failing: AtomicBool::new(false),
            },
            stats: ZoneStats::default(),
        };
        storage.scan()?;
        Ok(storage)
    }

    /// Reads every entry's footer (not its body) and re-admits it.
    fn scan(&self) -> std::io::Result<()> {
        let mut found: Vec<(SystemTime, PathBuf, Footer, u64)> = Vec::new();
        let mut dropped = 0u64;
        for sub in std::fs::read_dir(&self.dir)?.flatten() {
            let name = sub.file_name();
            let name = name.to_string_lossy();
            if name.len() != 2 || !sub.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(sub.path())?.flatten() {
                let path = f.path();
                match read_footer(&path) {
                    Ok((footer, len, mtime))
                        if disk::entry_path(&self.dir, &footer.key) == path =>
                    {
                        found.push((mtime, path, footer, len))
                    }
                    _ => {
                        dropped += 1;
                        let _ = std::fs::remove_file(&path);
                    }
                }
            }
        }
        found.sort_by_key(|(t, ..)| *t);
        let n = found.len();
        for (_, path, footer, len) in found {
            let meta = match CacheMeta::deserialize(&footer.meta.0, &footer.meta.1) {
                Ok(m) => m,
                Err(_) => {
                    dropped += 1;
                    let _ = std::fs::remove_file(&path);
                    continue;
                }
            };
            let compact = CompactCacheKey {
                primary: footer.primary,
                variance: footer.variance.map(Box::new),
                user_tag: footer.user_tag.clone().into_boxed_str(),
            };
            let weight = weight_of(len);
            if let Ok(mut idx) = self.index.write() {
                idx.insert(
                    footer.key,
                    IndexEntry {
                        compact: compact.clone(),
                        url: footer.url.into_boxed_str(),
                        weight,
                    },
                );
            }
            let evicted = self.eviction.admit(
                CacheEntryKey::key_only(compact),
                weight as usize,
                meta.fresh_until(),
            );
            for e in evicted {
                self.drop_entry(&e.key().combined_bin());
            }
        }
        if n > 0 || dropped > 0 {
            info!(
                "cache zone {}: {} entries on disk ({} bytes), {} unreadable files removed",
                self.name,
                self.index.read().map(|i| i.len()).unwrap_or(0),
                self.eviction.total_size(),
                dropped
            );
        }
        Ok(())
    }

    /// The zone's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Current sizes of both tiers.
    pub fn usage(&self) -> ZoneUsage {
        let (disk_bytes, disk_objects) = self
            .index
            .read()
            .map(|i| (i.values().map(|e| e.weight).sum(), i.len() as u64))
            .unwrap_or((0, 0));
        ZoneUsage {
            disk_bytes,
            disk_objects,
            memory_bytes: self.memory.bytes() as u64,
            memory_objects: self.memory.objects() as u64,
        }
    }

    /// Objects evicted from the memory tier so far.
    pub fn memory_evictions(&self) -> u64 {
        self.memory.evictions()
    }

    /// Removes one entry from every tier and from the eviction manager's accounting.
    fn drop_entry(&self, key: &HashBinary) -> bool {
        let in_memory = self.memory.remove(key);
        let entry = self.index.write().ok().and_then(|mut i| i.remove(key));
        if let Some(e) = &entry {
            self.eviction.remove(CacheEntryKeyRef::KeyOnly(&e.compact));
        }
        let path = disk::entry_path(&self.dir, key);
        let on_disk = match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                self.disk_error(DiskOp::Remove, &path, &e);
                false
            }
        };
        in_memory || on_disk || entry.is_some()
    }

    /// Counts a failed disk operation and logs it, at most once per [`LOG_EVERY`] per zone.
    fn disk_error(&self, op: DiskOp, path: &Path, e: &std::io::Error) {
        self.stats.disk_errors[op as usize].fetch_add(1, Ordering::Relaxed);
        if op == DiskOp::Write {
            self.health.failing.store(true, Ordering::Relaxed);
        }
        if !self.log_slot(&self.health.quiet_until) {
            self.health.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let more = self.health.suppressed.swap(0, Ordering::Relaxed);
        let (name, path) = (&self.name, path.display());
        let what = match op {
            DiskOp::Write => format!(
                "disk write failed on {path}: {e}; responses are served uncached until the disk \
                 works again"
            ),
            DiskOp::Read => format!("disk read failed on {path}: {e}; answered as a miss"),
            DiskOp::Remove => format!("cannot remove {path}: {e}; the file stays on disk"),
            DiskOp::Lost => format!("{path} is gone ({e}); the entry is forgotten"),
        };
        warn!(
            "cache zone {name}: {what} ({more} more disk errors in this zone since the last \
             message, not logged)"
        );
    }

    /// Whether a line may be logged now under the window `cell` (at most one per
    /// [`LOG_EVERY`]); if so, starts the next window.
    fn log_slot(&self, cell: &AtomicU64) -> bool {
        let now = self.health.epoch.elapsed().as_millis() as u64;
        let quiet_until = cell.load(Ordering::Relaxed);
        now >= quiet_until
            && cell
                .compare_exchange(
                    quiet_until,
                    now + LOG_EVERY.as_millis() as u64,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
    }

    /// Notes a complete fill: if writes were failing, they work again. Logged at most once per
    /// [`LOG_EVERY`], like the errors.
    fn disk_ok(&self) {
        if self.health.failing.swap(false, Ordering::Relaxed)
            && self.log_slot(&self.health.recovery_quiet_until)
        {
            info!(
                "cache zone {}: disk writes work again, caching resumed",
                self.name
            );
        }
    }

    /// Creates the zone directory and its `tmp/` if they are missing (removed while serving).
    /// Entries the index still lists whose files are gone are forgotten, in the background.
    fn recreate_dirs(&'static self) -> std::io::Result<()> {
        let tmp = self.dir.join("tmp");
        if tmp.is_dir() {
            return Ok(());
        }
        std::fs::create_dir_all(&tmp)?;
        warn!(
            "cache zone {}: {} was missing and has been recreated; entries that were in it are \
             forgotten",
            self.name,
            self.dir.display()
        );
        tokio::task::spawn_blocking(move || self.forget_lost());
        Ok(())
    }

    /// Drops index entries (and their eviction accounting) whose files no longer exist.
    fn forget_lost(&self) {
        let keys: Vec<HashBinary> = self
            .index
            .read()
            .map(|i| i.keys().copied().collect())
            .unwrap_or_default();
        let mut lost = 0u64;
        for k in keys {
            if !disk::entry_path(&self.dir, &k).exists() {
                lost += 1;
                self.drop_entry(&k);
            }
        }
        self.stats.disk_errors[DiskOp::Lost as usize].fetch_add(lost, Ordering::Relaxed);
    }

    /// Opens a new temp file for a fill, recreating the zone directory once if it was removed.
    fn create_temp(&'static self, key: &HashBinary) -> std::io::Result<(PathBuf, std::fs::File)> {
        let open = |tmp: &Path| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(tmp)
        };
        let tmp = self.next_temp(key);
        match open(&tmp) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.recreate_dirs()?;
                open(&tmp).map(|f| (tmp, f))
            }
            r => r.map(|f| (tmp, f)),
        }
    }

    /// Purges every variant of one URL (`https://host/path?query`; the scheme is ignored, so
    /// what was cached through either listener goes). Returns how many entries went.
    pub fn purge_url(&self, url: &str) -> usize {
        let want = strip_scheme(url);
        self.purge_where(|e| strip_scheme(&e.url) == want)
    }

    /// Purges every entry whose URL starts with `prefix` (scheme ignored, as for
    /// [`TieredStorage::purge_url`]).
    pub fn purge_prefix(&self, prefix: &str) -> usize {
        let want = strip_scheme(prefix);
        self.purge_where(|e| strip_scheme(&e.url).starts_with(want))
    }

    /// Purges every entry stored under one primary key (the hash of a key's text, such as
    /// [`super::cache_key`] builds): the response and all its variants, from both tiers, without
    /// scanning the zone. Returns how many entries went.
    pub fn purge_primary(&self, primary: &HashBinary) -> usize {
        let keys = self
            .index
            .read()
            .map(|i| i.under_primary(primary))
            .unwrap_or_default();
        let mut n = 0;
        for k in &keys {
            if self.drop_entry(k) {
                n += 1;
            }
        }
        // A memory copy of the primary entry whose disk file was never indexed goes too.
        if self.memory.remove(primary) && !keys.contains(primary) {
            n += 1;
        }
        n
    }

    /// Purges everything in the zone.
    pub fn purge_all(&self) -> usize {
        self.memory.clear();
        self.purge_where(|_| true)
    }

    fn purge_where(&self, pred: impl Fn(&IndexEntry) -> bool) -> usize {
        let keys: Vec<HashBinary> = self
            .index
            .read()
            .map(|i| i.iter().filter(|(_, e)| pred(e)).map(|(k, _)| *k).collect())
            .unwrap_or_default();
        for k in &keys {
            self.drop_entry(k);
        }
        keys.len()
    }

    fn next_temp(&self, key: &HashBinary) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join("tmp")
            .join(format!("{}.{}.{n}", disk::hex(key), std::process::id()))
    }

    /// Reads and verifies an entry file. `None` when there is none or it cannot be read; a bad
    /// file is removed.
    fn read_entry(&self, key: &HashBinary) -> Option<(Footer, Bytes)> {
        let path = disk::entry_path(&self.dir, key);
        let limit = self.max_object + disk::MAX_FOOTER as u64 + disk::TAIL_LEN as u64;
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Indexed but gone: the directory or the file was removed behind our back.
                let known = self.index.read().is_ok_and(|i| i.contains_key(key));
                if known {
                    self.drop_entry(key);
                    self.disk_error(DiskOp::Lost, &path, &e);
                }
                return None;
            }
            Err(e) => {
                self.disk_error(DiskOp::Read, &path, &e);
                return None;
            }
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(u64::MAX);
        let data = if len > limit {
            Err(Corrupt::BadLength)
        } else {
            let mut buf = Vec::with_capacity(len as usize);
            if let Err(e) = f.read_to_end(&mut buf) {
                self.disk_error(DiskOp::Read, &path, &e);
                return None;
            }
            Ok(buf)
        };
        let decoded = data.and_then(|d| {
            let (footer, range) = disk::decode(&d, key)?;
            let body = Bytes::from(d).slice(range);
            Ok((footer, body))
        });
        match decoded {
            Ok(found) => Some(found),
            Err(why) => {
                warn!(
                    "cache zone {}: dropping entry {}: {why}",
                    self.name,
                    path.display()
                );
                self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                self.drop_entry(key);
                None
            }
        }
    }
}

fn strip_scheme(url: &str) -> &str {
    url.strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .unwrap_or(url)
}

fn read_footer(path: &Path) -> std::io::Result<(Footer, u64, SystemTime)> {
    let bad = |e: Corrupt| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let mut f = std::fs::File::open(path)?;
    let meta = f.metadata()?;
    let len = meta.len();
    if len < disk::TAIL_LEN as u64 {
        return Err(bad(Corrupt::BadMagic));
    }
    let mut t = [0u8; disk::TAIL_LEN];
    f.seek(SeekFrom::End(-(disk::TAIL_LEN as i64)))?;
    f.read_exact(&mut t)?;
    let flen = disk::footer_len_from_tail(&t).map_err(bad)?;
    let start = len
        .checked_sub((disk::TAIL_LEN + flen) as u64)
        .ok_or_else(|| bad(Corrupt::BadLength))?;
    let mut footer = vec![0u8; flen];
    f.seek(SeekFrom::Start(start))?;
    f.read_exact(&mut footer)?;
    let footer = disk::decode_footer(&footer).map_err(bad)?;
    if footer.body_len != start {
        return Err(bad(Corrupt::BadLength));
    }
    let mtime = meta
        .accessed()
        .or_else(|_| meta.modified())
        .unwrap_or(SystemTime::UNIX_EPOCH);
    Ok((footer, len, mtime))
}

/// A hit: the whole body in memory, with seeking for Range requests.
struct BodyHit {
    body: Bytes,
    done: bool,
    start: usize,
    end: usize,
}

#[async_trait]
impl HandleHit for BodyHit {
    async fn read_body(&mut self) -> Result<Option<Bytes>> {
        if self.done {
            return Ok(None);
        }
        self.done = true;
        Ok(Some(self.body.slice(self.start..self.end)))
    }

    async fn finish(
        self: Box<Self>,
        _storage: &'static (dyn Storage + Sync),
        _key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<()> {
        Ok(())
    }

    fn can_seek(&self) -> bool {
        true
    }

    fn seek(&mut self, start: usize, end: Option<usize>) -> Result<()> {
        if start >= self.body.len() {
            return Error::e_explain(
                ErrorType::InternalError,
                format!("seek start out of range {start} >= {}", self.body.len()),
            );
        }
        self.start = start;
        self.end = end.map_or(self.body.len(), |e| e.min(self.body.len()));
        self.done = false;
        Ok(())
    }

    fn get_eviction_weight(&self) -> usize {
        0
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync) {
        self
    }

    fn as_any_mut(&mut self) -> &mut (dyn Any + Send + Sync) {
        self
    }
}

fn hit(meta: &(Vec<u8>, Vec<u8>), body: Bytes) -> Result<(CacheMeta, HitHandler)> {
    let meta = CacheMeta::deserialize(&meta.0, &meta.1)?;
    Ok((meta, body_hit(body)))
}

fn body_hit(body: Bytes) -> HitHandler {
    let end = body.len();
    Box::new(BodyHit {
        body,
        done: false,
        start: 0,
        end,
    })
}

/// A fill in progress: the body goes to a temp file as it arrives.
///
/// A disk error does not fail the response: the fill turns into a discard (the temp file is
/// removed, the error counted and logged), the client is served as if the response were not
/// cacheable, and nothing is stored.
struct DiskFill {
    storage: &'static TieredStorage,
    key: HashBinary,
    compact: CompactCacheKey,
    url: String,
    meta: (Vec<u8>, Vec<u8>),
    tmp: PathBuf,
    /// `None` once the fill has been given up (disk error) or finished.
    file: Option<std::fs::File>,
    crc: crc32fast::Hasher,
    written: u64,
    copy: Option<BytesMut>,
    done: bool,
}

impl DiskFill {
    fn fail(&mut self, why: String) -> Box<Error> {
        self.abandon();
        Error::explain(ErrorType::InternalError, why)
    }

    /// Gives the fill up: closes and removes the temp file and counts a fill error.
    fn abandon(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.copy = None;
        if self.file.take().is_some() {
            remove_temp(self.storage, &self.tmp);
        }
        self.storage
            .stats
            .fill_errors
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A disk error: counted and logged by the zone, then the fill is given up.
    fn disk_failed(&mut self, path: &Path, e: &std::io::Error) {
        self.storage.disk_error(DiskOp::Write, path, e);
        self.abandon();
    }
}

/// Removes a temp file, counting a failure other than it being gone already.
fn remove_temp(storage: &TieredStorage, tmp: &Path) {
    match std::fs::remove_file(tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => storage.disk_error(DiskOp::Remove, tmp, &e),
    }
}

/// What `finish` reports for a fill that stored nothing: Pingora's eviction manager then only
/// promotes an existing entry (or admits a 1-byte placeholder that a later eviction purges as
/// not found). An error would make Pingora log a warning per request.
const STORED_NOTHING: MissFinishType = MissFinishType::Appended(0, Some(0));

#[async_trait]
impl HandleMiss for DiskFill {
    async fn write_body(&mut self, data: Bytes, _eof: bool) -> Result<()> {
        if self.done {
            // Given up after a disk error: the response goes on, uncached.
            return Ok(());
        }
        self.written += data.len() as u64;
        if self.written > self.storage.max_object {
            return Err(self.fail(format!(
                "object over the zone's max_object_size ({} bytes)",
                self.storage.max_object
            )));
        }
        self.crc.update(&data);
        if let Some(copy) = &mut self.copy {
            if self.storage.memory.admits(copy.len() + data.len()) {
                copy.extend_from_slice(&data);
            } else {
                self.copy = None;
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        // Chunks are small (tens of KiB) and land in the page cache: a direct write is cheaper
        // than a trip to the blocking pool.
        if let Err(e) = file.write_all(&data) {
            let tmp = self.tmp.clone();
            self.disk_failed(&tmp, &e);
        }
        Ok(())
    }

    async fn finish(mut self: Box<Self>) -> Result<MissFinishType> {
        if self.done {
            return Ok(STORED_NOTHING);
        }
        let footer = Footer {
            key: self.key,
            primary: self.compact.primary,
            variance: self.compact.variance.as_deref().copied(),
            user_tag: self.compact.user_tag.to_string(),
            url: self.url.clone(),
            meta: self.meta.clone(),
            body_len: self.written,
        };
        let footer = disk::encode_footer(&footer);
        self.crc.update(&footer);
        let crc = std::mem::take(&mut self.crc).finalize();
        let tail = disk::tail(crc, footer.len());
        let final_path = disk::entry_path(&self.storage.dir, &self.key);
        let result = (|| -> std::io::Result<()> {
            let mut file = self
                .file
                .take()
                .ok_or_else(|| std::io::Error::other("no file"))?;
            file.write_all(&footer)?;
            file.write_all(&tail)?;
            drop(file);
            if let Some(parent) = final_path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&self.tmp, &final_path)
        })();
        if let Err(e) = result {
            self.storage.disk_error(DiskOp::Write, &final_path, &e);
            // The file is closed already: remove it here, then only count.
            remove_temp(self.storage, &self.tmp);
            self.abandon();
            return Ok(STORED_NOTHING);
        }
        self.done = true;
        self.storage.disk_ok();
        let total = self.written + (footer.len() + disk::TAIL_LEN) as u64;
        let weight = weight_of(total);
        if let Ok(mut idx) = self.storage.index.write() {
            idx.insert(
                self.key,
                IndexEntry {
                    compact: self.compact.clone(),
                    url: self.url.clone().into_boxed_str(),
                    weight,
                },
            );
        }
        match self.copy.take() {
            Some(copy) => self
                .storage
                .memory
                .insert(self.key, MemObject::new(self.meta.clone(), copy.freeze())),
            // A new, larger version must not leave the old one in memory.
            None => {
                self.storage.memory.remove(&self.key);
            }
        }
        self.storage.stats.fills.fetch_add(1, Ordering::Relaxed);
        Ok(MissFinishType::Created(weight as usize))
    }
}

impl Drop for DiskFill {
    fn drop(&mut self) {
        // Not finished: the response was aborted (origin or client gone) or not cacheable
        // after all. Nothing is stored.
        self.abandon();
    }
}

#[async_trait]
impl Storage for TieredStorage {
    async fn lookup(
        &'static self,
        key: &CacheKey,
        _trace: &SpanHandle,
    ) -> Result<Option<(CacheMeta, HitHandler)>> {
        let k = key.combined_bin();
        if let Some(obj) = self.memory.get(&k) {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            // The meta parsed on the object's first hit: no zstd and header parse per hit.
            return match obj.meta() {
                Some(meta) => Ok(Some((meta, body_hit(obj.body.clone())))),
                None => hit(&obj.meta, obj.body.clone()).map(Some),
            };
        }
        let found = tokio::task::spawn_blocking(move || self.read_entry(&k))
            .await
            .or_err(ErrorType::InternalError, "cache read task")?;
        let Some((footer, body)) = found else {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
        };
        self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
        let result = hit(&footer.meta, body.clone());
        if result.is_ok() {
            self.memory.insert(k, MemObject::new(footer.meta, body));
        } else {
            self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
            self.drop_entry(&k);
            return Ok(None);
        }
        result.map(Some)
    }

    async fn get_miss_handler(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<MissHandler> {
        let k = key.combined_bin();
        let (tmp, file) = match self.create_temp(&k) {
            Ok((tmp, file)) => (tmp, Some(file)),
            Err(e) => {
                // No fill: the response is served uncached (see `DiskFill`).
                let tmp = self.dir.join("tmp");
                self.disk_error(DiskOp::Write, &tmp, &e);
                self.stats.fill_errors.fetch_add(1, Ordering::Relaxed);
                (tmp, None)
            }
        };
        let done = file.is_none();
        Ok(Box::new(DiskFill {
            storage: self,
            key: k,
            compact: key.to_compact(),
            url: String::from_utf8_lossy(key.primary_key()).into_owned(),
            meta: meta.serialize()?,
            tmp,
            file,
            crc: crc32fast::Hasher::new(),
            written: 0,
            copy: (!done).then(BytesMut::new),
            done,
        }))
    }

    async fn purge(
        &'static self,
        target: PurgeTarget<'_>,
        purge_type: PurgeType,
        _trace: &SpanHandle,
    ) -> Result<PurgeOutcome> {
        // Entries carry no storage-specific id.
        if matches!(target, PurgeTarget::Exact(CacheEntryKey::Identified { .. })) {
            return Ok(PurgeOutcome::NotFound);
        }
        let k = target.key().combined_bin();
        if self.drop_entry(&k) {
            if matches!(purge_type, PurgeType::Eviction) {
                self.stats.disk_evictions.fetch_add(1, Ordering::Relaxed);
            }
            Ok(PurgeOutcome::Purged(None))
        } else {
            Ok(PurgeOutcome::NotFound)
        }
    }

    async fn update_meta(
        &'static self,
        key: &CacheKey,
        meta: &CacheMeta,
        _trace: &SpanHandle,
    ) -> Result<bool> {
        let k = key.combined_bin();
        let new_meta = meta.serialize()?;
        let tmp = self.next_temp(&k);
        let m = new_meta.clone();
        let rewritten = tokio::task::spawn_blocking(move || -> Option<()> {
            let (mut footer, body) = self.read_entry(&k)?;
            footer.meta = m;
            let enc = disk::encode_footer(&footer);
            let mut crc = crc32fast::Hasher::new();
            crc.update(&body);
            crc.update(&enc);
            let tail = disk::tail(crc.finalize(), enc.len());
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&body)?;
                f.write_all(&enc)?;
                f.write_all(&tail)?;
                drop(f);
                std::fs::rename(&tmp, disk::entry_path(&self.dir, &k))
            };
            if let Err(e) = write() {
                // The old entry stays (with its old freshness); the memory copy is updated.
                self.disk_error(DiskOp::Write, &tmp, &e);
                remove_temp(self, &tmp);
                return None;
            }
            Some(())
        })
        .await
        .or_err(ErrorType::InternalError, "cache meta update task")?;
        self.memory.update_meta(&k, new_meta);
        Ok(rewritten.is_some())
    }

    fn as_any(&self) -> &(dyn Any + Send + Sync + 'static) {
        self
    }
}
