//! [`TieredStorage`]: a `pingora_cache::Storage` with a memory tier over a disk tier.
//!
//! - Lookup: memory first; then the index, which lists every entry file of the zone: a key it
//!   does not list is a miss, answered at once; then the entry file, read whole and verified
//!   (checksum, lengths, key) before any byte is served, and promoted to memory if it fits. A
//!   bad file is deleted, counted, and reported as a miss.
//! - Fill: the body streams to a temp file as it arrives (memory use is one chunk, plus a copy
//!   for the memory tier only if the object fits there); the footer is appended and the file
//!   renamed into place when the response is complete, and only then is the entry indexed and
//!   put in memory. An aborted fill leaves nothing.
//! - Capacity: Pingora's LRU eviction manager (`pingora_cache::eviction::lru::Manager`) tracks
//!   every entry's size on disk (rounded up to 4 KiB blocks) and tells Pingora what to purge;
//!   [`TieredStorage::open`] re-admits what is on disk at start, oldest first.
//! - Disk faults (full, read-only, directory removed, I/O errors) never fail a request: the
//!   response is served uncached, the error is counted by [`DiskOp`] in
//!   [`ZoneStats::disk_errors()`] and logged at most once per [`LOG_EVERY`], and the next fill
//!   tries the disk again (recreating the zone directory if it is gone), so caching resumes
//!   by itself when the disk recovers.
//!
//! # What runs where
//!
//! Pingora calls the storage on its worker threads, and a worker that waits on the disk waits
//! for every connection it holds. Handing work to tokio's blocking pool is not free either: a
//! futex wake-up of a pool thread, and another to wake the task when it is done (issue 20: a
//! third of the proxy's CPU samples on the uncacheable path were these, when every lookup
//! that missed memory went to the pool). So each piece of disk work is placed by how often it
//! runs and what it costs, measured with `cargo bench -p galion-edge-benches --bench cache --
//! cache_` (the file system of the temp directory, ext4 here; inline and blocking pool in
//! the same run, 2 shared cores):
//!
//! | work | how often | where | measured |
//! |---|---|---|---|
//! | a key the index does not list | every uncacheable request on a caching route, every first request | worker: a read lock | 907 ns against 13.4 µs for the old open of the absent file on the blocking pool (criterion medians); end to end, proxy CPU per uncacheable request -38% (docs/performance.md, change 16) |
//! | a chunk of a fill's body | every chunk | worker: a `write` into the page cache | 16 KiB: caller CPU 3.4-5.9 µs inline against 2.9-5.1 µs with the hand-off when idle (equal within the noise), 4.0-4.6 against 4.6-10.8 µs under write pressure; wall p50 4.2-4.6 against 10-13 µs. Kept inline: no CPU to win, and a hand-off per chunk multiplies wake-ups |
//! | a fill's end: footer, close, rename | once per fill | blocking pool, awaited | caller CPU 40-83 µs inline against 5.4-17 µs with the hand-off: renamed over an older entry, ext4 starts writing the new file back inside the `rename` (`auto_da_alloc`). The fill's end comes later: p50 +5-18% idle, +11-33% under write pressure (66-94 against 76-114 µs) |
//! | the unlink of an evicted or invalidated entry | once per entry evicted or invalidated | blocking pool, queued, not awaited | caller CPU of one unlink 4.0-6.1 µs inline against 4.5-33 µs for an awaited hand-off, so no CPU is saved: it is moved for the tail. A purge through the storage (forget, queue) costs the worker 2.1 µs against 5.7 µs for the inline unlink alone (criterion, back-to-back evictions that find the drainer running) |
//! | removing the temp file of a fill given up (aborted response, disk error, over `max_object_size`) | failed fills only | worker, inline | an unlink, as above; rare, and the end-to-end fault tests check that no temp file outlives the response |
//! | creating a fill's temp file | once per fill | worker, inline | not measured here (left as it was) |
//! | reading an entry file | a hit on disk | blocking pool | (unchanged: up to `max_object_size` of reads) |
//! | purges by URL, prefix, zone | admin requests, the purge bus | inline, on the admin or purge-bus thread (not a proxy worker) | |
//!
//! Tails (the bench's `disk_tail` lines: 2,000 operations per run, 3 runs, idle and while another
//! thread writes and fsyncs 8 MiB at a time on the same file system): inline, the worker is held
//! for the whole call. Under that write pressure an inline unlink took 12-20 ms at p99.9 and an
//! inline fill end 13-22 ms at p99 (40-49 ms at most), against 4-8 ms at p99.9 idle (multiples
//! of the 4 ms scheduler tick, `CONFIG_HZ=250`: this loaded 2-core machine, not the disk). A
//! chunk write reached 28 ms once at p99.9 under pressure (the page cache's dirty limit
//! throttles writers), at most 8 ms (the tick again) otherwise: rare enough to keep it inline,
//! and the trade-off this table records.
//!
//! Unlinks are queued per zone and drained by one blocking task at a time: admitting one large
//! object can evict thousands of small ones, and a task each would start as many pool threads
//! (tokio starts one for every task that finds none idle, up to 512). The entry leaves the
//! index and the memory tier before the purge returns, so it is a miss at once; its file goes
//! when the drainer reaches it (a process killed in between finds the file again at its next
//! start, as it would after a power loss: nothing here is fsynced).
//!
//! # Unlinks that finish late
//!
//! A queued unlink may run after a fill of the same key has renamed a newer file into the same
//! path. Each key's path has a lock (striped, `PATH_STRIPES`): a fill renames its file and
//! inserts it in the index under it, and the unlink checks the index and unlinks under it. So
//! the unlink either runs before the rename (it removes the dropped file, or nothing), or finds
//! the key indexed again and leaves the file: the rename has already replaced the dropped one.
//! A key dropped again after that has queued an unlink of its own. A meta update (after a 304)
//! renames its rewritten file under the same lock, and only over an entry still indexed, so a
//! purge during a revalidation does not bring the entry back. Test:
//! `a_late_unlink_leaves_a_newer_fill_of_the_same_key`.
//!
//! # What a miss on the index assumes
//!
//! The index lists every file this process may serve: [`TieredStorage::open`] scans the zone
//! directory at start (so entries of earlier runs are found: test
//! `entries_of_a_previous_run_are_found_after_a_restart`), a fill inserts its entry once the
//! file is in place, and every drop removes it before the file goes. A file that appears in the
//! directory later, written by another process (the old one during a binary upgrade), is not
//! served by this one: its key misses, the next fill replaces the file and indexes it, and the
//! next start indexes it anyway (test `an_unindexed_key_misses_without_reading_the_disk`). Such
//! a file was never in this process's eviction accounting either. A file removed behind the
//! proxy's back is still listed: reading it finds it gone, and the entry is forgotten and
//! counted as [`DiskOp::Lost`].

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
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// Disk accounting unit: what a file really occupies on a 4 KiB-block filesystem.
const BLOCK: u64 = 4096;

/// Shards of the disk tier's eviction manager.
pub(crate) const DISK_EVICTION_SHARDS: usize = 16;

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
/// (Pingora wants `&'static`), as `super::CacheZone::open` does.
///
/// It is a plain `pingora_cache::Storage`: any `ProxyHttp` can use it, with its
/// [`DiskEviction`] manager (which must be the one given to `open`, so that evictions Pingora
/// decides remove the files) and, usually, a cache lock:
///
/// ```
/// use proxy_core::{DiskEviction, TieredStorage};
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
    /// Per stripe of keys: orders a rename into an entry's path (with the index insert after
    /// it) against a dropped entry's late unlink (with its index check before it). See the
    /// module doc, "Unlinks that finish late".
    paths: [Mutex<()>; PATH_STRIPES],
    /// Entry files to unlink, dropped from the index by a worker thread.
    unlinks: Mutex<Unlinks>,
    /// Counters.
    pub stats: ZoneStats,
}

/// Stripes of [`TieredStorage::paths`]: keys are hashes, so any byte spreads them evenly.
const PATH_STRIPES: usize = 64;

/// The queue of unlinks, drained by one blocking-pool task at a time: a burst of evictions
/// (one large object admitted can evict thousands of small ones) costs one hand-off, not one
/// thread each.
#[derive(Default)]
struct Unlinks {
    keys: Vec<HashBinary>,
    /// A drainer has been started and has not yet found the queue empty.
    draining: bool,
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
            paths: std::array::from_fn(|_| Mutex::new(())),
            unlinks: Mutex::new(Unlinks::default()),
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
        // A zone that shrank drops its oldest entries beyond the new size here, exactly. Left to
        // the eviction manager, they would go by its own choice of shard (two at random, the
        // longer one loses its oldest): close to oldest first, but not exactly.
        let room =
            (self.eviction.weight_limit() as u64).saturating_sub(self.eviction.total_size() as u64);
        let mut excess = found
            .iter()
            .map(|(_, _, _, len)| weight_of(*len))
            .sum::<u64>()
            .saturating_sub(room);
        let mut shrunk = 0u64;
        found.retain(|(_, path, _, len)| {
            if excess == 0 {
                return true;
            }
            excess = excess.saturating_sub(weight_of(*len));
            shrunk += 1;
            let _ = std::fs::remove_file(path);
            false
        });
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
        if n > 0 || dropped > 0 || shrunk > 0 {
            info!(
                "cache zone {}: {} entries on disk ({} bytes), {} unreadable files removed, \
                 {} oldest entries removed beyond the zone's size",
                self.name,
                self.index.read().map(|i| i.len()).unwrap_or(0),
                self.eviction.total_size(),
                dropped,
                shrunk
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

    /// Removes one entry from the index, the memory tier and the eviction manager's
    /// accounting: from now on it is a miss. Its file is left to the caller. Whether the zone
    /// knew the entry.
    fn forget(&self, key: &HashBinary) -> bool {
        let in_memory = self.memory.remove(key);
        let entry = self.index.write().ok().and_then(|mut i| i.remove(key));
        if let Some(e) = &entry {
            self.eviction.remove(CacheEntryKeyRef::KeyOnly(&e.compact));
        }
        in_memory || entry.is_some()
    }

    /// Whether the index lists `key`: every entry file the zone serves is listed (the start-up
    /// scan, then each fill once its file is in place, until the entry is dropped). A poisoned
    /// index answers yes, so that the disk is asked as before.
    fn indexed(&self, key: &HashBinary) -> bool {
        self.index.read().map_or(true, |i| i.contains_key(key))
    }

    /// The lock ordering renames into `key`'s path against unlinks of it.
    fn path_lock(&self, key: &HashBinary) -> MutexGuard<'_, ()> {
        self.paths[key[0] as usize % PATH_STRIPES]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Unlinks the file of a dropped entry, unless the key is in the index again: then a fill
    /// has renamed a newer file over the dropped one (which the rename unlinked), and that
    /// file stays. Blocking: runs on the blocking pool, at start or on the admin thread, never
    /// on a worker. Whether a file was removed.
    fn unlink_dropped(&self, key: &HashBinary) -> bool {
        let path = disk::entry_path(&self.dir, key);
        let _order = self.path_lock(key);
        if self.indexed(key) {
            return false;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                self.disk_error(DiskOp::Remove, &path, &e);
                false
            }
        }
    }

    /// Removes one entry from every tier and its file, here and now (for callers that are off
    /// the worker threads already). Whether there was anything to remove.
    fn drop_entry(&self, key: &HashBinary) -> bool {
        let known = self.forget(key);
        self.unlink_dropped(key) || known
    }

    /// Removes one entry from every tier at once and queues its file's unlink for the blocking
    /// pool (for callers on a worker thread). Whether the zone knew the entry.
    fn drop_entry_later(&'static self, key: &HashBinary) -> bool {
        let known = self.forget(key);
        self.unlink_later(*key);
        known
    }

    /// Queues an unlink; starts a drainer on the blocking pool if none is running (outside a
    /// tokio runtime, unlinks here).
    fn unlink_later(&'static self, key: HashBinary) {
        let start = {
            let mut q = self
                .unlinks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            q.keys.push(key);
            !std::mem::replace(&mut q.draining, true)
        };
        if start {
            match tokio::runtime::Handle::try_current() {
                Ok(rt) => drop(rt.spawn_blocking(move || self.drain_unlinks())),
                Err(_) => self.drain_unlinks(),
            }
        }
    }

    /// Unlinks what is queued until the queue is empty.
    fn drain_unlinks(&self) {
        loop {
            let keys = {
                let mut q = self
                    .unlinks
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if q.keys.is_empty() {
                    q.draining = false;
                    return;
                }
                std::mem::take(&mut q.keys)
            };
            for k in &keys {
                self.unlink_dropped(k);
            }
        }
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
    ///
    /// Called on a worker thread (an unsafe request invalidates its URL): the entries are
    /// forgotten at once and their files unlinked on the blocking pool.
    pub fn purge_primary(&'static self, primary: &HashBinary) -> usize {
        let keys = self
            .index
            .read()
            .map(|i| i.under_primary(primary))
            .unwrap_or_default();
        let mut n = 0;
        for k in &keys {
            if self.drop_entry_later(k) {
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
    ///
    /// These purges by URL, prefix and zone unlink their files before they return: they run on
    /// the admin listener's thread or the purge bus's, not on a proxy worker.
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

/// Sets an entry file's access and modification times from the precise clock, so that the
/// start-up scan re-admits entries in the order they were written. The kernel stamps files from
/// its coarse clock (one scheduler tick, 1-10 ms): entries written within one tick would tie, and
/// a shrunken zone could then keep an older entry and drop a newer one. Best effort: a file
/// system that refuses leaves the kernel's own times, which order entries to within a tick.
fn stamp(file: &std::fs::File) {
    let now = SystemTime::now();
    let _ = file.set_times(
        std::fs::FileTimes::new()
            .set_accessed(now)
            .set_modified(now),
    );
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
        // From here the fill belongs to the placing job: if this future is dropped (the
        // request's task ends) the job still completes, and `Drop` has nothing to undo.
        self.done = true;
        let Some(file) = self.file.take() else {
            self.storage
                .stats
                .fill_errors
                .fetch_add(1, Ordering::Relaxed);
            return Ok(STORED_NOTHING);
        };
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
        let weight = weight_of(self.written + (footer.len() + disk::TAIL_LEN) as u64);
        let job = Placing {
            file,
            footer,
            tail,
            tmp: std::mem::take(&mut self.tmp),
            key: self.key,
            entry: IndexEntry {
                compact: self.compact.clone(),
                url: std::mem::take(&mut self.url).into_boxed_str(),
                weight,
            },
            copy: self
                .copy
                .take()
                .map(|c| MemObject::new(std::mem::take(&mut self.meta), c.freeze())),
        };
        let storage = self.storage;
        // The footer, close, directory and rename on the blocking pool: a rename can wait on the
        // file system's journal for milliseconds, which would stall every request of this
        // worker; the hand-off is paid once per fill (module doc, "What runs where").
        let stored = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(move || storage.place(job))
                .await
                .unwrap_or_else(|_| {
                    // Cancelled at shutdown (the temp file goes at the next start) or panicked.
                    storage.stats.fill_errors.fetch_add(1, Ordering::Relaxed);
                    false
                }),
            Err(_) => storage.place(job),
        };
        Ok(if stored {
            MissFinishType::Created(weight as usize)
        } else {
            STORED_NOTHING
        })
    }
}

/// What a complete fill hands to the blocking pool to be put in place.
struct Placing {
    file: std::fs::File,
    footer: Vec<u8>,
    tail: [u8; disk::TAIL_LEN],
    tmp: PathBuf,
    key: HashBinary,
    entry: IndexEntry,
    /// The memory tier's copy, if the object fits there.
    copy: Option<MemObject>,
}

impl TieredStorage {
    /// Completes a fill (blocking): appends footer and tail, closes the file and renames it into
    /// place, then indexes it and puts its copy in memory. Rename and index insert are done
    /// under the key's path lock, so that a late unlink of a dropped entry of the same key
    /// either runs before the rename or sees the key indexed and leaves the file. Whether the
    /// entry is stored; a disk error is counted and logged, and the temp file removed.
    fn place(&self, job: Placing) -> bool {
        let Placing {
            mut file,
            footer,
            tail,
            tmp,
            key,
            entry,
            copy,
        } = job;
        let final_path = disk::entry_path(&self.dir, &key);
        let written = (|| -> std::io::Result<()> {
            file.write_all(&footer)?;
            file.write_all(&tail)?;
            stamp(&file);
            drop(file);
            if let Some(parent) = final_path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            Ok(())
        })();
        let placed = written.and_then(|()| {
            let _order = self.path_lock(&key);
            std::fs::rename(&tmp, &final_path)?;
            if let Ok(mut idx) = self.index.write() {
                idx.insert(key, entry);
            }
            match copy {
                Some(obj) => self.memory.insert(key, obj),
                // A new, larger version must not leave the old one in memory.
                None => {
                    self.memory.remove(&key);
                }
            }
            Ok(())
        });
        if let Err(e) = placed {
            self.disk_error(DiskOp::Write, &final_path, &e);
            remove_temp(self, &tmp);
            self.stats.fill_errors.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.disk_ok();
        self.stats.fills.fetch_add(1, Ordering::Relaxed);
        true
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
        // Not indexed, not on disk: a miss answered on this thread. Every uncacheable request
        // on a caching route comes here, and a trip to the blocking pool (two thread wake-ups)
        // was a third of the proxy's CPU on that path.
        if !self.indexed(&k) {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return Ok(None);
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
            self.drop_entry_later(&k);
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
        // Pingora calls this on a worker thread (evictions run in a task it spawns after each
        // fill): the file goes on the blocking pool.
        if self.drop_entry_later(&k) {
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
            let write = || -> std::io::Result<bool> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&body)?;
                f.write_all(&enc)?;
                f.write_all(&tail)?;
                stamp(&f);
                drop(f);
                // Only over an entry still indexed: one dropped meanwhile (purged, evicted)
                // must not come back, nor its file be left for the next start to find.
                let _order = self.path_lock(&k);
                if !self.indexed(&k) {
                    return Ok(false);
                }
                std::fs::rename(&tmp, disk::entry_path(&self.dir, &k))?;
                Ok(true)
            };
            match write() {
                Ok(true) => Some(()),
                Ok(false) => {
                    remove_temp(self, &tmp);
                    None
                }
                Err(e) => {
                    // The old entry stays (with its old freshness); the memory copy is updated.
                    self.disk_error(DiskOp::Write, &tmp, &e);
                    remove_temp(self, &tmp);
                    None
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::trace::Span;
    use pingora_http::ResponseHeader;
    use std::future::Future;
    use std::task::{Context, Poll, Waker};

    fn leak<T>(t: T) -> &'static T {
        Box::leak(Box::new(t))
    }

    /// A zone on `dir`; `memory` 0 turns the memory tier off, so every hit reads the file.
    fn zone(dir: &Path, memory: usize) -> &'static TieredStorage {
        let eviction = leak(DiskEviction::with_capacity(64 << 20, 1024));
        leak(TieredStorage::open("test", dir, memory, 1 << 20, eviction).unwrap())
    }

    fn key(path: &str) -> CacheKey {
        CacheKey::new(format!("https://galion.app{path}"), "test")
    }

    fn meta() -> CacheMeta {
        let now = SystemTime::now();
        let h = ResponseHeader::build(200, None).unwrap();
        CacheMeta::new(now + Duration::from_secs(3600), now, 0, 0, h)
    }

    /// Runs a future that must complete on this thread, outside any tokio runtime: a trip to
    /// the blocking pool panics there (no runtime) or stays pending.
    fn on_this_thread<F: Future>(f: F) -> F::Output {
        let mut f = std::pin::pin!(f);
        match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(v) => v,
            Poll::Pending => panic!("the future left this thread"),
        }
    }

    async fn fill(z: &'static TieredStorage, key: &CacheKey, body: &'static [u8]) {
        let span = Span::inactive();
        let mut miss = z
            .get_miss_handler(key, &meta(), &span.handle())
            .await
            .unwrap();
        miss.write_body(Bytes::from_static(body), true)
            .await
            .unwrap();
        assert!(matches!(
            miss.finish().await.unwrap(),
            MissFinishType::Created(_)
        ));
    }

    async fn body(z: &'static TieredStorage, key: &CacheKey) -> Option<Bytes> {
        let span = Span::inactive();
        let (_, mut hit) = z.lookup(key, &span.handle()).await.unwrap()?;
        hit.read_body().await.unwrap()
    }

    /// Holds the unlink drainer, as a busy blocking pool would: unlinks queue up until
    /// `drain_unlinks` runs.
    fn hold_unlinks(z: &TieredStorage) {
        z.unlinks.lock().unwrap().draining = true;
    }

    /// Evicts `key` through the storage, as Pingora's eviction manager does.
    async fn evict(z: &'static TieredStorage, key: &CacheKey) {
        let span = Span::inactive();
        let evicted = z
            .purge(
                PurgeTarget::Exact(&CacheEntryKey::key_only(key.to_compact())),
                PurgeType::Eviction,
                &span.handle(),
            )
            .await
            .unwrap();
        assert!(matches!(evicted, PurgeOutcome::Purged(_)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_late_unlink_leaves_a_newer_fill_of_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let z = zone(dir.path(), 0);
        let key = key("/api/a");
        let path = disk::entry_path(dir.path(), &key.combined_bin());
        fill(z, &key, b"old").await;

        // An eviction drops the entry; its unlink is queued and has not run yet.
        hold_unlinks(z);
        evict(z, &key).await;
        assert_eq!(body(z, &key).await, None, "dropped: a miss at once");
        assert!(path.exists(), "the unlink waits in the queue");

        // A fill of the same key renames a new file into the same path; then the unlink runs.
        fill(z, &key, b"new").await;
        z.drain_unlinks();
        assert_eq!(body(z, &key).await.as_deref(), Some(&b"new"[..]));
        assert_eq!(z.stats.disk_errors(DiskOp::Lost), 0);

        // Without a newer fill, the queued unlink removes the file.
        hold_unlinks(z);
        evict(z, &key).await;
        z.drain_unlinks();
        assert!(!path.exists());
        assert_eq!(z.stats.disk_evictions.load(Ordering::Relaxed), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn queued_unlinks_are_drained_by_the_blocking_pool() {
        let dir = tempfile::tempdir().unwrap();
        let z = zone(dir.path(), 0);
        let keys: Vec<CacheKey> = (0..20).map(|i| key(&format!("/api/{i}"))).collect();
        for k in &keys {
            fill(z, k, b"x").await;
        }
        let span = Span::inactive();
        for k in &keys {
            let target = CacheEntryKey::key_only(k.to_compact());
            z.purge(
                PurgeTarget::Exact(&target),
                PurgeType::Eviction,
                &span.handle(),
            )
            .await
            .unwrap();
        }
        assert_eq!(z.usage().disk_objects, 0);
        let deadline = Instant::now() + Duration::from_secs(10);
        let left = || {
            keys.iter()
                .filter(|k| disk::entry_path(dir.path(), &k.combined_bin()).exists())
                .count()
        };
        while left() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(left(), 0, "every evicted file unlinked");
        assert!(!z.unlinks.lock().unwrap().draining, "the drainer stopped");
    }

    #[test]
    fn an_unindexed_key_misses_without_reading_the_disk() {
        // A whole, valid entry file appears in the zone after its start-up scan (as another
        // process could write one): the index does not list it, so it is not read.
        let (src, dst) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let key = key("/api/elsewhere");
        let k = key.combined_bin();
        // Outside a runtime a fill completes on this thread too.
        on_this_thread(fill(zone(src.path(), 0), &key, b"from another process"));
        let z = zone(dst.path(), 0);
        let to = disk::entry_path(dst.path(), &k);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(disk::entry_path(src.path(), &k), &to).unwrap();

        let span = Span::inactive();
        let found = on_this_thread(z.lookup(&key, &span.handle())).unwrap();
        assert!(found.is_none(), "answered as a miss, on this thread");
        assert_eq!(z.stats.misses.load(Ordering::Relaxed), 1);
        assert_eq!(z.stats.disk_hits.load(Ordering::Relaxed), 0);
        for op in DiskOp::ALL {
            assert_eq!(z.stats.disk_errors(op), 0, "{op:?}");
        }
        // The next start indexes it, and serves it.
        let restarted = zone(dst.path(), 0);
        assert_eq!(restarted.usage().disk_objects, 1);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt.block_on(body(restarted, &key)).as_deref(),
            Some(&b"from another process"[..])
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn entries_of_a_previous_run_are_found_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let before = zone(dir.path(), 1 << 20);
        let keys: Vec<CacheKey> = (0..3).map(|i| key(&format!("/api/kept/{i}"))).collect();
        for k in &keys {
            fill(before, k, b"kept across restarts").await;
        }
        let after = zone(dir.path(), 1 << 20);
        assert_eq!(after.usage().disk_objects, 3);
        for k in &keys {
            assert_eq!(
                body(after, k).await.as_deref(),
                Some(&b"kept across restarts"[..])
            );
        }
        assert_eq!(after.stats.disk_hits.load(Ordering::Relaxed), 3);
        assert_eq!(after.stats.misses.load(Ordering::Relaxed), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn an_update_of_a_dropped_entry_does_not_bring_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let z = zone(dir.path(), 0);
        let key = key("/api/revalidated");
        fill(z, &key, b"body").await;
        // Dropped (purged or evicted) while a revalidation is under way, its unlink not yet
        // run: the update finds the old file but must not put a new one in place.
        hold_unlinks(z);
        assert!(z.drop_entry_later(&key.combined_bin()));
        let span = Span::inactive();
        assert!(!z.update_meta(&key, &meta(), &span.handle()).await.unwrap());
        z.drain_unlinks();
        assert!(!disk::entry_path(dir.path(), &key.combined_bin()).exists());
        assert_eq!(
            std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            0
        );
        assert_eq!(z.stats.disk_errors(DiskOp::Write), 0);
        assert_eq!(
            zone(dir.path(), 0).usage().disk_objects,
            0,
            "nothing at restart"
        );
    }
}
