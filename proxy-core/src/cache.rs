//! The HTTP cache: zones of two-tier storage, and the policy that decides what goes in them.
//!
//! Pingora's cache state machine does the HTTP work: lookups, the cache lock (one fill per key),
//! revalidation with `If-None-Match`/`If-Modified-Since`, stale-while-revalidate in a background
//! subrequest, stale-if-error, conditional and Range requests on hits. This module supplies:
//!
//! - [`storage::TieredStorage`], the `Storage` of each zone: memory over disk, see its docs;
//! - [`Caches`]: the zones of a config, each with Pingora's LRU eviction manager for its disk
//!   tier, and the shared cache lock;
//! - the policy functions the service's cache hooks call: [`cache_key`],
//!   [`response_cacheability`], [`variance`], [`status_label`], [`bypass_reason`];
//! - the credentials rule ([`CredentialCookies`], [`shared_with_credentials`]): a response
//!   made for a request with `Authorization` or a session cookie is stored, and a stored
//!   response is served to such a request, only when the origin marked it shareable.

pub(crate) mod disk;
pub(crate) mod freshness;
pub(crate) mod memory;
pub(crate) mod storage;

use crate::exposition;
use http::header;
use pingora_cache::key::{CacheHashKey, HashBinary};
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::predictor::Predictor;
use pingora_cache::{
    CacheKey, CacheMeta, CachePhase, NoCacheReason, RespCacheable, VarianceBuilder,
};
use pingora_http::{RequestHeader, ResponseHeader};
use prometheus::proto::MetricFamily;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

pub use storage::{DiskEviction, DiskOp, TieredStorage, ZoneStats, ZoneUsage};

/// One cache zone, as the config gives it (`[cache.zones.NAME]`; built by
/// [`crate::config::Config`], which re-exports this type).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSettings {
    /// Zone name (`api`, `static`).
    pub name: String,
    /// Disk tier directory; created at start if missing.
    pub path: PathBuf,
    /// Disk tier bytes. Default [`DEFAULT_ZONE_SIZE`].
    pub size: u64,
    /// Memory tier bytes. Default [`default_memory_size`].
    pub memory_size: u64,
    /// Largest object stored. Default [`default_max_object_size`].
    pub max_object_size: u64,
    /// TTL when the origin says nothing. Default [`DEFAULT_TTL`] ([`STATIC_ZONE`]: [`STATIC_DEFAULT_TTL`]).
    pub default_ttl: Duration,
    /// Smallest TTL a route may set. Default [`DEFAULT_MIN_TTL`] ([`STATIC_ZONE`]: [`STATIC_MIN_TTL`]).
    pub min_ttl: Duration,
    /// Largest TTL a route may set. Default [`DEFAULT_MAX_TTL`] ([`STATIC_ZONE`]: [`STATIC_MAX_TTL`]).
    pub max_ttl: Duration,
    /// Default stale-while-revalidate window. Default [`DEFAULT_STALE_WHILE_REVALIDATE`].
    pub stale_while_revalidate: Duration,
    /// Default stale-if-error window. Default [`DEFAULT_STALE_IF_ERROR`].
    pub stale_if_error: Duration,
    /// Who decides freshness when the origin gives none. Default
    /// [`FreshnessMode::Policy`].
    pub freshness: FreshnessMode,
    /// Heuristic freshness in origin mode, as a percentage of the time since `Last-Modified`
    /// (RFC 9111 §4.2.2). Default 0: none.
    pub heuristic_percent: u8,
    /// Longest heuristic freshness. Default: `max_ttl`.
    pub heuristic_max: Duration,
}

// The defaults and bounds of `[cache]` and `[cache.zones.NAME]`. The validator, the docs
// (through a test) and the fuzzing targets use these; nothing else writes the values.

/// The zone that also takes every request for a path with a static extension, with its own TTL
/// defaults ([`STATIC_DEFAULT_TTL`], [`STATIC_MIN_TTL`], [`STATIC_MAX_TTL`]).
pub const STATIC_ZONE: &str = "static";
/// `[cache] static_extensions`: the asset extensions that go to the [`STATIC_ZONE`].
pub const DEFAULT_STATIC_EXTENSIONS: [&str; 20] = [
    "js", "mjs", "css", "png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico", "woff", "woff2",
    "ttf", "otf", "wasm", "map", "mp3", "mp4", "webm",
];
/// `[cache] lock_timeout`: how long concurrent misses on one key wait for the first fill.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(5);
/// A zone's `size` (its disk tier).
pub const DEFAULT_ZONE_SIZE: u64 = 1 << 30;
/// What a zone's `size` may be set to: 1 MiB to 4 TiB.
pub const ZONE_SIZE_RANGE: RangeInclusive<u64> = (1 << 20)..=(1 << 42);
/// The largest default `memory_size`, which is otherwise an eighth of the zone's `size` (see
/// [`default_memory_size`]).
pub const DEFAULT_MEMORY_SIZE_CAP: u64 = 256 << 20;
/// What a zone's `memory_size` may be set to: 0 (no memory tier) to 1 TiB.
pub const MEMORY_SIZE_RANGE: RangeInclusive<u64> = 0..=(1 << 40);
/// The largest default `max_object_size`, which is otherwise a sixteenth of the zone's `size`
/// (see [`default_max_object_size`]).
pub const DEFAULT_MAX_OBJECT_SIZE_CAP: u64 = 16 << 20;
/// What a zone's `max_object_size` may be set to: 1 byte to 16 GiB (and at most a quarter of
/// `size`, see [`max_object_size_limit`]).
pub const MAX_OBJECT_SIZE_RANGE: RangeInclusive<u64> = 1..=(1 << 34);
/// A zone's `default_ttl`: the lifetime of a response the origin gives none.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
/// A zone's `min_ttl`: the shortest TTL a route may set.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(60);
/// A zone's `max_ttl`: the longest TTL a route may set.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(3600);
/// The [`STATIC_ZONE`]'s `default_ttl`: seven days, for assets with hashed names.
pub const STATIC_DEFAULT_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The [`STATIC_ZONE`]'s `min_ttl`.
pub const STATIC_MIN_TTL: Duration = DEFAULT_MIN_TTL;
/// The [`STATIC_ZONE`]'s `max_ttl`.
pub const STATIC_MAX_TTL: Duration = STATIC_DEFAULT_TTL;
/// A zone's `stale_while_revalidate`, when the origin says nothing.
pub const DEFAULT_STALE_WHILE_REVALIDATE: Duration = Duration::from_secs(30);
/// A zone's `stale_if_error`, when the origin says nothing.
pub const DEFAULT_STALE_IF_ERROR: Duration = Duration::from_secs(600);

/// A zone's `memory_size` when unset: an eighth of `size`, at most [`DEFAULT_MEMORY_SIZE_CAP`].
pub const fn default_memory_size(size: u64) -> u64 {
    at_most(size / 8, DEFAULT_MEMORY_SIZE_CAP)
}

/// A zone's `max_object_size` when unset: a sixteenth of `size`, at most
/// [`DEFAULT_MAX_OBJECT_SIZE_CAP`].
pub const fn default_max_object_size(size: u64) -> u64 {
    at_most(size / 16, DEFAULT_MAX_OBJECT_SIZE_CAP)
}

/// `value.min(cap)`, in a `const fn`.
const fn at_most(value: u64, cap: u64) -> u64 {
    if value < cap {
        value
    } else {
        cap
    }
}

/// The largest `max_object_size` a zone of `size` bytes accepts: a quarter of it, so that one
/// object cannot take the whole disk tier.
pub const fn max_object_size_limit(size: u64) -> u64 {
    size / 4
}

/// The cache, as the config gives it (`[cache]`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CacheSettings {
    /// Zones in name order.
    pub zones: Vec<ZoneSettings>,
    /// Lower-case extensions (without dot) that go to the `static` zone.
    pub static_extensions: Vec<String>,
    /// Index of the zone named `static`, if any.
    pub static_zone: Option<usize>,
    /// How long concurrent misses wait for the first fill. Default [`DEFAULT_LOCK_TIMEOUT`].
    pub lock_timeout: Duration,
    /// Targeted cache-control fields (RFC 9213), lower-case, in order of precedence. Default
    /// `DEFAULT_TARGETED_FIELDS`.
    pub targeted_fields: Vec<http::HeaderName>,
    /// Which cookies are credentials (`cache.credential_cookies`). A request with
    /// `Authorization` or one of these cookies only shares stored responses the origin marked
    /// shareable (see [`CredentialCookies`]). Default: every cookie.
    pub credential_cookies: CredentialCookies,
}

/// What a route does with the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RouteCache {
    /// Zone for this route's responses, if any.
    pub zone: Option<usize>,
    /// `cache = "off"`: not even static extensions are cached.
    pub off: bool,
    /// TTL when the origin says nothing (default: the zone's).
    pub ttl: Option<Duration>,
}

/// One zone: its settings, storage and disk eviction manager, all `'static` as Pingora needs.
pub(crate) struct CacheZone {
    /// Settings from the config.
    pub settings: ZoneSettings,
    /// The two-tier storage.
    pub storage: &'static TieredStorage,
    /// Pingora's LRU over the disk tier's bytes.
    pub eviction: &'static DiskEviction,
    /// What requests on this zone's routes did that the storage does not see: answers served
    /// stale, requests that bypassed the cache.
    pub requests: ZoneRequests,
}

/// A zone's request counters (see [`CacheZone::requests`]); read at scrape time as
/// `galion_edge_cache_stale_total` and `galion_edge_cache_bypass_total`.
#[derive(Debug, Default)]
pub(crate) struct ZoneRequests {
    stale: AtomicU64,
    /// One per [`BYPASS_REASONS`] entry, in that order.
    bypassed: [AtomicU64; BYPASS_REASONS.len()],
}

impl ZoneRequests {
    /// Records an answer served stale (`X-Cache-Status` STALE or UPDATING).
    pub(crate) fn stale(&self) {
        self.stale.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a request that bypassed the cache for `reason` (one of [`BYPASS_REASONS`]; any
    /// other is not counted).
    pub(crate) fn bypassed(&self, reason: &str) {
        if let Some(i) = BYPASS_REASONS.iter().position(|r| *r == reason) {
            self.bypassed[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl std::fmt::Debug for CacheZone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheZone")
            .field("name", &self.settings.name)
            .field("storage", &self.storage)
            .finish()
    }
}

impl CacheZone {
    /// Opens a zone: creates its directory, indexes what is on disk. The storage and eviction
    /// manager are leaked (they live as long as the process; Pingora requires `'static`).
    pub(crate) fn open(settings: &ZoneSettings) -> std::io::Result<CacheZone> {
        let estimated_items = (settings.size / 16384).clamp(1024, 1 << 22) as usize;
        // Pingora's LRU takes a capacity per shard: the total divided among them. (Passing the
        // total reserved 16 times the tables; their control bytes alone were megabytes of RSS
        // at start.) The tables grow past it when a zone holds more, smaller objects.
        let eviction: &'static DiskEviction = Box::leak(Box::new(DiskEviction::with_capacity(
            settings.size as usize,
            estimated_items.div_ceil(storage::DISK_EVICTION_SHARDS),
        )));
        let storage = TieredStorage::open(
            &settings.name,
            &settings.path,
            settings.memory_size as usize,
            settings.max_object_size,
            eviction,
        )?;
        Ok(CacheZone {
            settings: settings.clone(),
            storage: Box::leak(Box::new(storage)),
            eviction,
            requests: ZoneRequests::default(),
        })
    }
}

/// Why a cache zone could not be opened: names the zone and its directory.
#[derive(Debug, thiserror::Error)]
#[error("cache zone {zone} ({}): {source}", path.display())]
pub struct OpenError {
    /// The zone's name.
    pub zone: String,
    /// Its disk tier directory.
    pub path: PathBuf,
    /// What the system said.
    #[source]
    pub source: std::io::Error,
}

/// Keys the uncacheable-key memory holds per shard (16 shards): 16 384 URLs, about 1 MiB.
const PREDICTOR_KEYS_PER_SHARD: usize = 1024;

/// The uncacheable-key memory: Pingora's `Predictor`, which remembers the URLs whose last
/// answer could not be stored so that the next request for one skips the lookup and the cache
/// lock and goes straight upstream, as on a route without a cache. A bypassed request's answer
/// is still judged: if it can be stored now, the URL is forgotten and the answer stored.
pub(crate) type UncacheableKeys = Predictor<16>;

/// Whether a `NoCacheReason::Custom` is left out of the uncacheable-key memory: every reason
/// that depends on the request (credentials, its `Cache-Control`, its `Range`, its
/// `Accept-Encoding`) or on a status that may be passing (a `500` during an outage must not
/// stop the next requests from finding a stale entry). Remembered: `no-store` and `private`
/// (`OriginNotCache`), a body over the zone's limit, `Set-Cookie`, `Vary: *` and too many
/// header lines, which are the origin's answer for that URL whoever asks.
fn forgotten(reason: &'static str) -> bool {
    !matches!(reason, "set-cookie" | "vary-star" | "too-many-headers")
}

/// Every zone of a config, the shared cache lock and the uncacheable-key memory.
pub(crate) struct Caches {
    /// Zones, indexed like `config.cache.zones`.
    pub zones: Vec<CacheZone>,
    /// One fill per key: concurrent misses wait for the first.
    pub lock: &'static CacheKeyLockImpl,
    /// The URLs whose last answer could not be stored.
    pub uncacheable: &'static UncacheableKeys,
    static_extensions: Vec<String>,
    static_zone: Option<usize>,
}

impl std::fmt::Debug for Caches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caches")
            .field("zones", &self.zones)
            .finish()
    }
}

impl Caches {
    /// Opens every zone of the config. With at least one zone, also makes `SIGXFSZ` harmless
    /// for the process (see [`survive_file_size_limit`]).
    pub(crate) fn open(settings: &CacheSettings) -> Result<Caches, OpenError> {
        if !settings.zones.is_empty() {
            survive_file_size_limit();
        }
        let zones = settings
            .zones
            .iter()
            .map(|z| {
                CacheZone::open(z).map_err(|source| OpenError {
                    zone: z.name.clone(),
                    path: z.path.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let lock: Box<CacheKeyLockImpl> = CacheLock::new_boxed(settings.lock_timeout);
        Ok(Caches {
            zones,
            lock: Box::leak(lock),
            uncacheable: Box::leak(Box::new(UncacheableKeys::new(
                PREDICTOR_KEYS_PER_SHARD,
                Some(forgotten),
            ))),
            static_extensions: settings.static_extensions.clone(),
            static_zone: settings.static_zone,
        })
    }

    /// The zone a request on a route uses: `static` for static file extensions, otherwise the
    /// route's zone; none when the route says `cache = "off"`.
    pub(crate) fn zone_for(&self, route: &RouteCache, path: &str) -> Option<usize> {
        if route.off {
            return None;
        }
        if let Some(z) = self.static_zone {
            if let Some(ext) = extension(path) {
                if self
                    .static_extensions
                    .iter()
                    .any(|e| e.eq_ignore_ascii_case(ext))
                {
                    return Some(z);
                }
            }
        }
        route.zone
    }

    /// A zone by name.
    pub(crate) fn zone(&self, name: &str) -> Option<&CacheZone> {
        self.zones.iter().find(|z| z.settings.name == name)
    }

    /// Invalidates one URL (RFC 9111 §4.4): every stored response for `host` (port and case
    /// ignored) and `path_and_query`, by either scheme, in every zone, every variant, from both
    /// tiers. Each zone finds the URL's entries by its primary key: no zone is scanned. Returns
    /// how many entries went.
    pub(crate) fn invalidate(&self, host: &str, path_and_query: &str) -> usize {
        let mut n = 0;
        for z in &self.zones {
            for https in [true, false] {
                let key = cache_key(https, host, path_and_query, &z.settings.name);
                n += z.storage.purge_primary(&key.primary_bin());
            }
        }
        n
    }

    /// The zones' series, read now from their counters: hits, misses, fills, errors,
    /// evictions, bytes and objects per tier, stale answers and bypasses. Fails only on a bug
    /// in a family's definition.
    pub(crate) fn metric_families(&self) -> exposition::Result<Vec<MetricFamily>> {
        let mut out = Vec::new();
        struct Zone<'a> {
            name: &'a str,
            stats: &'a ZoneStats,
            usage: ZoneUsage,
            memory_evictions: u64,
            requests: &'a ZoneRequests,
        }
        let zones: Vec<Zone<'_>> = self
            .zones
            .iter()
            .map(|z| Zone {
                name: z.settings.name.as_str(),
                stats: &z.storage.stats,
                usage: z.storage.usage(),
                memory_evictions: z.storage.memory_evictions(),
                requests: &z.requests,
            })
            .collect();
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let per_zone = |f: &dyn Fn(&Zone<'_>) -> u64| {
            zones
                .iter()
                .map(|z| (vec![z.name], f(z)))
                .collect::<Vec<_>>()
        };
        let per_tier = |memory: &dyn Fn(&Zone<'_>) -> u64, disk: &dyn Fn(&Zone<'_>) -> u64| {
            zones
                .iter()
                .flat_map(|z| {
                    [
                        (vec![z.name, "memory"], memory(z)),
                        (vec![z.name, "disk"], disk(z)),
                    ]
                })
                .collect::<Vec<_>>()
        };
        out.extend(exposition::counters(
            "galion_edge_cache_hits_total",
            "Cache lookups answered from the memory or the disk tier.",
            &["zone", "tier"],
            per_tier(&|z| get(&z.stats.memory_hits), &|z| get(&z.stats.disk_hits)),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_misses_total",
            "Cache lookups that found nothing.",
            &["zone"],
            per_zone(&|z| get(&z.stats.misses)),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_fills_total",
            "Entries written to the cache.",
            &["zone"],
            per_zone(&|z| get(&z.stats.fills)),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_fill_errors_total",
            "Cache fills that failed (disk error, aborted response).",
            &["zone"],
            per_zone(&|z| get(&z.stats.fill_errors)),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_corrupt_entries_total",
            "Disk entries found corrupt and dropped.",
            &["zone"],
            per_zone(&|z| get(&z.stats.corrupt)),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_disk_errors_total",
            "Disk operations of a cache zone that failed (op: read, write, remove, lost); responses \
             are served uncached meanwhile.",
            &["zone", "op"],
            zones.iter().flat_map(|z| {
                DiskOp::ALL
                    .iter()
                    .map(|op| (vec![z.name, op.as_str()], z.stats.disk_errors(*op)))
            }),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_evictions_total",
            "Entries evicted from a tier to make room.",
            &["zone", "tier"],
            per_tier(&|z| z.memory_evictions, &|z| get(&z.stats.disk_evictions)),
        )?);
        out.extend(exposition::gauges(
            "galion_edge_cache_bytes",
            "Bytes held by a tier (disk: rounded up to 4 KiB blocks).",
            &["zone", "tier"],
            per_tier(&|z| z.usage.memory_bytes, &|z| z.usage.disk_bytes)
                .into_iter()
                .map(|(l, v)| (l, exposition::gauge_value(v))),
        )?);
        out.extend(exposition::gauges(
            "galion_edge_cache_objects",
            "Entries held by a tier.",
            &["zone", "tier"],
            per_tier(&|z| z.usage.memory_objects, &|z| z.usage.disk_objects)
                .into_iter()
                .map(|(l, v)| (l, exposition::gauge_value(v))),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_stale_total",
            "Answers served stale from the cache (X-Cache-Status STALE or UPDATING).",
            &["zone"],
            per_zone(&|z| get(&z.requests.stale)),
        )?);
        out.extend(exposition::counters(
            "galion_edge_cache_bypass_total",
            "Requests on a caching route neither served from the cache nor stored in it, by \
             zone and reason (credentials: the request carried Authorization or a credential \
             cookie and the origin did not mark the answer shareable; origin: Cache-Control \
             or a missing lifetime; set-cookie; vary-star; too-large; lock; encoding; \
             too-many-headers; error).",
            &["zone", "reason"],
            zones.iter().flat_map(|z| {
                BYPASS_REASONS
                    .iter()
                    .zip(&z.requests.bypassed)
                    .map(|(r, n)| (vec![z.name, *r], get(n)))
            }),
        )?);
        Ok(out)
    }
}

/// Whether an answer to `method` with `status` invalidates what is stored for its URL (RFC
/// 9111 §4.4): a non-error status (2xx, 3xx) to a method not known to be safe (anything but
/// `GET`, `HEAD`, `OPTIONS` and `TRACE`).
pub(crate) fn invalidates(method: &http::Method, status: u16) -> bool {
    // `is_safe`: GET, HEAD, OPTIONS and TRACE (RFC 9110 §9.2.1); any other, known or not, is not.
    !method.is_safe() && (200..400).contains(&status)
}

/// The same-origin path and query a `Location` or `Content-Location` value names, for
/// invalidation (RFC 9111 §4.4): a path (`/x?y`) on the request's host, or an absolute URL
/// whose host (port and case ignored) is `host`. `None` for another host (invalidating it would
/// let one site empty another's cache), or a value that is neither.
pub(crate) fn same_origin_target<'a>(value: &'a str, host: &str) -> Option<&'a str> {
    let value = value.trim();
    if value.starts_with('/') && !value.starts_with("//") {
        return Some(value);
    }
    let rest = value
        .strip_prefix("https://")
        .or_else(|| value.strip_prefix("http://"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let same =
        crate::host::strip_port(authority).eq_ignore_ascii_case(crate::host::strip_port(host));
    (same && !authority.contains('@')).then_some(path)
}

/// `SIGXFSZ` on Linux (x86-64 and arm64 alike).
const SIGXFSZ: i32 = 25;

/// Installs a `SIGXFSZ` disposition so that a write past the process's file-size limit
/// (`RLIMIT_FSIZE`, systemd's `LimitFSIZE=`) fails that write with `EFBIG`, which the cache
/// treats as any disk error, instead of killing the process (the default action). Tokio never
/// restores the default once installed. Errors are logged.
pub(crate) fn survive_file_size_limit() {
    use tokio::signal::unix::{signal, SignalKind};
    let install = || {
        if let Err(e) = signal(SignalKind::from_raw(SIGXFSZ)) {
            log::error!("cannot install a SIGXFSZ handler: {e}");
        }
    };
    if tokio::runtime::Handle::try_current().is_ok() {
        install();
        return;
    }
    match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    {
        Ok(rt) => {
            let _enter = rt.enter();
            install();
        }
        Err(e) => log::error!("cannot install a SIGXFSZ handler: {e}"),
    }
}

/// The extension of the last path segment, without the dot.
fn extension(path: &str) -> Option<&str> {
    let last = path.rsplit('/').next()?;
    let (_, ext) = last.rsplit_once('.')?;
    (!ext.is_empty()).then_some(ext)
}

/// The cache key: scheme, host (lower-case, no port) and path with query; the zone is the tag.
///
/// Its hash is computed here, once, and kept in the key: Pingora's `CacheKey` otherwise hashes
/// the key text with Blake2b every time it is asked for it (the storage lookup, the eviction
/// manager's compact key, the variant lookup: three or four times per hit).
pub fn cache_key(https: bool, host: &str, path_and_query: &str, zone: &str) -> CacheKey {
    let scheme = if https { "https://" } else { "http://" };
    let host = crate::host::strip_port(host);
    // Built by hand: `format!` and a lowercased copy of the host were a third of this
    // function's instructions, on every request to a caching route.
    let mut primary = String::with_capacity(scheme.len() + host.len() + path_and_query.len());
    primary.push_str(scheme);
    primary.push_str(host);
    primary.make_ascii_lowercase();
    primary.push_str(path_and_query);
    let mut key = CacheKey::new(primary, zone);
    let hash = pingora_cache::key::CacheHashKey::primary_bin(&key);
    key.set_primary_bin_override(hash);
    key
}

/// Which cookies make a request carry credentials (`cache.credential_cookies`).
///
/// A request carries credentials when it has `Authorization`, or a `Cookie` with a cookie this
/// setting counts. Such a request is answered from the cache, and its response stored, only
/// when the origin marked the response shareable (`shared_with_credentials`); a proxy-chosen
/// TTL never applies to it. Cookie names are compared exactly (they are case-sensitive).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CredentialCookies {
    /// Every cookie is a credential: the default, and the safe choice when it is not known
    /// which cookies identify a user.
    #[default]
    All,
    /// Only these cookies are (a session cookie, say); others, such as analytics cookies, do
    /// not stop a request from sharing the cache. Never empty (the config refuses `[]`).
    Named(Vec<String>),
}

impl CredentialCookies {
    /// Whether a request with these headers carries credentials: `Authorization` (any value,
    /// even empty), or a `Cookie` header holding a cookie this setting counts. An empty
    /// `Cookie` header holds no cookie.
    pub fn in_request(&self, headers: &http::HeaderMap) -> bool {
        self.scan(headers).credentials
    }

    /// What the cache needs of a request's headers, in one pass over them. Three hashed
    /// lookups (`Authorization`, `Cookie`, `Cache-Control`) added about 470 instructions to
    /// every cache hit; comparing the few names a request has with those standard names adds
    /// about 100 (callgrind, 12 000 hits).
    pub(crate) fn scan(&self, headers: &http::HeaderMap) -> RequestScan {
        let mut scan = RequestScan::default();
        for (name, value) in headers {
            if name == header::AUTHORIZATION {
                scan.credentials = true;
            } else if name == header::COOKIE {
                scan.credentials = scan.credentials || self.counts_in(value.as_bytes());
            } else if name == header::CACHE_CONTROL {
                scan.cache_control = true;
            }
        }
        scan
    }

    /// Whether one `Cookie` line holds a cookie this setting counts.
    fn counts_in(&self, line: &[u8]) -> bool {
        line.split(|b| *b == b';').any(|pair| {
            let pair = pair.trim_ascii();
            if pair.is_empty() {
                return false;
            }
            match self {
                CredentialCookies::All => true,
                CredentialCookies::Named(names) => {
                    // A pair without `=` is a cookie with an empty name (RFC 6265bis §5.6).
                    let name = pair
                        .iter()
                        .position(|b| *b == b'=')
                        .map_or(&b""[..], |i| pair[..i].trim_ascii());
                    names.iter().any(|n| n.as_bytes() == name)
                }
            }
        })
    }
}

/// What [`CredentialCookies::scan`] found in a request's headers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct RequestScan {
    /// `Authorization`, or a credential cookie.
    pub(crate) credentials: bool,
    /// A `Cache-Control` line.
    pub(crate) cache_control: bool,
}

/// Whether `b` may appear in a cookie name (an RFC 9110 token character).
pub(crate) fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a stored response's own directives let a shared cache serve it to a request with
/// credentials: `public`, `s-maxage` or `must-revalidate` (RFC 9111 §3.5, the explicit cases;
/// the same rule is applied to credential cookies), read from the first valid field of
/// `targeted` (RFC 9213) or `Cache-Control`. A response with neither is not shareable.
pub(crate) fn shared_with_credentials(
    headers: &http::HeaderMap,
    targeted: &[http::HeaderName],
) -> bool {
    freshness::Directives::of_response(headers, targeted).shared_with_credentials()
}

/// Who decides how long a response stays fresh when the origin gives no explicit lifetime
/// (`freshness` of a zone).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FreshnessMode {
    /// `"policy"` (the default): the route's `cache_ttl` or the zone's `default_ttl` applies to
    /// heuristically cacheable statuses (at most a minute for 404/410), and the zone's stale
    /// windows apply unless the origin forbids stale answers. Requests' own `Cache-Control`
    /// freshness directives are not obeyed (`no-store` and `only-if-cached` are).
    #[default]
    Policy,
    /// `"origin"`: RFC 9111 for a shared cache, to the letter. The origin alone decides: no
    /// proxy-chosen TTL or stale window; a response without explicit freshness is fresh for the
    /// zone's heuristic (if set), or stored only to be revalidated on each use when it has a
    /// validator; every request directive is obeyed.
    Origin,
}

impl FreshnessMode {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FreshnessMode::Policy => "policy",
            FreshnessMode::Origin => "origin",
        }
    }
}

/// The targeted cache-control fields (RFC 9213) a config gets when it names none, in order of
/// precedence: this proxy's own, then `CDN-Cache-Control`. Cloudflare in front also obeys
/// `CDN-Cache-Control`; set `[cache] targeted_fields = ["Galion-Edge-Cache-Control"]` to leave
/// that field to Cloudflare.
pub const DEFAULT_TARGETED_FIELDS: [&str; 2] = ["galion-edge-cache-control", "cdn-cache-control"];

/// What deciding about a response needs to know of its request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Admission<'a> {
    /// The request carried credentials (see [`CredentialCookies`]).
    pub credentials: bool,
    /// The proxy-chosen TTL (the route's `cache_ttl` or the zone's `default_ttl`); used only in
    /// [`FreshnessMode::Policy`], for a request without credentials.
    pub ttl: Duration,
    /// Targeted cache-control field names, in order of precedence (RFC 9213).
    pub targeted: &'a [http::HeaderName],
    /// When the request was sent upstream (for the response's age, RFC 9111 §4.2.3); `None`
    /// counts the response's transit time as zero.
    pub sent: Option<SystemTime>,
    /// The request said `Cache-Control: no-store`.
    pub request_no_store: bool,
}

/// Decides whether a response is stored, and until when it is fresh.
///
/// Never stored: a `206` (only complete responses are), a response to a request that said
/// `no-store`, `Set-Cookie`, `Vary: *`, `no-store` (unless `must-understand` and a status this
/// cache understands), a bare `private`, a response to a request with credentials that the
/// origin did not mark shareable (`public`, `s-maxage`, `must-revalidate`), and more than
/// [`MAX_STORED_HEADERS`] header lines. The directives come from the first targeted field of
/// `admission.targeted` that is valid (RFC 9213), else `Cache-Control`.
///
/// Freshness (see [`freshness`]): `s-maxage`, `max-age`, `Expires` minus `Date`; an invalid,
/// repeated-and-different or bare `no-cache` lifetime is zero (stored stale: every use
/// revalidates). Without any, [`FreshnessMode::Policy`] uses `admission.ttl` for heuristically
/// cacheable statuses (at most a minute for 404/410) and [`FreshnessMode::Origin`] the zone's
/// heuristic, or zero when the response has a validator; a response to a request with
/// credentials is not stored. The age the response has on arrival (`Age`, `Date`, transit)
/// counts against its lifetime and is where its `Age` starts.
///
/// Stale windows: the origin's `stale-while-revalidate`/`stale-if-error`, else in policy mode
/// the zone's defaults; none at all when the origin said `must-revalidate`,
/// `proxy-revalidate`, `s-maxage` or a bare `no-cache`. Fields named by `private="…"` or
/// `no-cache="…"` are left out of the stored copy.
pub(crate) fn response_cacheability(
    resp: &ResponseHeader,
    admission: &Admission<'_>,
    zone: &ZoneSettings,
) -> RespCacheable {
    use freshness::Directives;
    let status = resp.status.as_u16();
    let refuse = |why: &'static str| RespCacheable::Uncacheable(NoCacheReason::Custom(why));
    // The reasons the uncacheable-key memory keeps ([`UncacheableKeys`]), except on a 5xx: that
    // is the origin failing, not its answer for the URL, and the next request must still look
    // the URL up (to find a stale entry).
    let origin_refuses = |reason: NoCacheReason| {
        if status >= 500 {
            refuse(ORIGIN_STATUS)
        } else {
            RespCacheable::Uncacheable(reason)
        }
    };
    if status == 206 {
        return refuse(PARTIAL);
    }
    if admission.request_no_store {
        return refuse(REQUEST_NO_STORE);
    }
    if resp.headers.contains_key(header::SET_COOKIE) {
        return origin_refuses(NoCacheReason::Custom("set-cookie"));
    }
    if resp.headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == b"*")
    }) {
        return origin_refuses(NoCacheReason::Custom("vary-star"));
    }
    let d = Directives::of_response(&resp.headers, admission.targeted);
    let credentials = admission.credentials;
    if credentials && !d.shared_with_credentials() {
        return refuse(CREDENTIALS);
    }
    // `must-understand` overrides `no-store` for a status whose caching rules are implemented
    // here, and forbids storing any other (RFC 9111 §5.2.2.3).
    let no_store = if d.must_understand {
        !freshness::understood(status)
    } else {
        d.no_store
    };
    if no_store || d.private.bare() {
        return origin_refuses(NoCacheReason::OriginNotCache);
    }
    let now = SystemTime::now();
    let date = freshness::date_of(&resp.headers, now);
    let age = freshness::initial_age(&resp.headers, admission.sent.unwrap_or(now).min(now), now);
    let lifetime = match d.explicit_lifetime(&resp.headers, date) {
        Some(l) => l,
        // The origin let it be shared but said for how long only to browsers, or not at all:
        // a TTL the proxy chose must not decide how long one user's answer serves others.
        None if credentials => return refuse(CREDENTIALS),
        None => match zone.freshness {
            FreshnessMode::Policy if freshness::heuristically_cacheable(status) => {
                if matches!(status, 404 | 410) {
                    admission.ttl.min(Duration::from_secs(60))
                } else {
                    admission.ttl
                }
            }
            FreshnessMode::Policy => return refuse(ORIGIN_STATUS),
            FreshnessMode::Origin => {
                let heuristic = freshness::heuristic_lifetime(
                    &resp.headers,
                    status,
                    d.public,
                    date,
                    f64::from(zone.heuristic_percent) / 100.0,
                    zone.heuristic_max,
                );
                let storable = freshness::heuristically_cacheable(status) || d.public;
                let validator = resp.headers.contains_key(header::ETAG)
                    || resp.headers.contains_key(header::LAST_MODIFIED);
                match heuristic {
                    Some(l) => l,
                    // Stored only to be revalidated: worth it only with a validator.
                    None if storable && validator => Duration::ZERO,
                    None => return refuse(ORIGIN_STATUS),
                }
            }
        },
    };
    // The response's age counts from `epoch`, when the origin made it (RFC 9111 §4.2.3); the
    // entry is `created` now. Pingora compares a variant's `created` with its primary entry's
    // (a variant older than the primary is not served), so backdating `created` by the age would
    // reject a variant filled just after its primary whenever the variant's `Date` fell in the
    // second before it was received (1 s of apparent age): it would miss again and again.
    let epoch = now.checked_sub(age).unwrap_or(now);
    let fresh_until = if lifetime.is_zero() {
        // Stale at once (Pingora's meta is fresh while `now < fresh_until`).
        epoch.checked_sub(Duration::from_secs(1)).unwrap_or(epoch)
    } else {
        epoch.checked_add(lifetime).unwrap_or(epoch)
    };
    let secs = |d: Duration| d.as_secs().min(u64::from(u32::MAX)) as u32;
    let window = |origin: freshness::Delta, default: Duration| match origin {
        freshness::Delta::Seconds(n) => n.min(u64::from(u32::MAX)) as u32,
        freshness::Delta::Invalid => 0,
        freshness::Delta::Absent if zone.freshness == FreshnessMode::Policy => secs(default),
        freshness::Delta::Absent => 0,
    };
    let (swr, sie) = if d.forbids_stale() {
        (0, 0)
    } else {
        (
            window(d.stale_while_revalidate, zone.stale_while_revalidate),
            window(d.stale_if_error, zone.stale_if_error),
        )
    };
    let mut stored = resp.clone();
    for name in d.private.fields().iter().chain(d.no_cache.fields()) {
        stored.remove_header(name.as_str());
    }
    // A stored header that Pingora cannot parse back would be written and never served (found
    // by the `cache_control` fuzz target).
    if stored.headers.len() > MAX_STORED_HEADERS {
        return origin_refuses(NoCacheReason::Custom("too-many-headers"));
    }
    let mut meta = CacheMeta::new(fresh_until, now, swr, sie, stored);
    if epoch != now {
        meta.set_epoch_override(epoch);
    }
    RespCacheable::Cacheable(meta)
}

/// The stored response's header updated with the fields of a `304` that validated it (RFC 9111
/// §4.3.4 and §3.2): each field the `304` carries replaces the stored field of that name, so
/// a changed `Cache-Control`, `ETag` or application header is what the next hit serves.
///
/// Not taken from the `304`: the fields the stored body depends on (`Content-Length`,
/// `Content-Encoding`, `Content-Range`, `Transfer-Encoding`), `Vary` (the variant the body is
/// stored under), `Set-Cookie` (never stored), and hop-by-hop fields (`Connection` and those it
/// names, `Keep-Alive`, `TE`, `Trailer`, `Upgrade`, `Proxy-Connection`). Pingora's own merge
/// takes only `Cache-Control`, `Expires`, `ETag`, `CDN-Cache-Control` and `Cache-Tag`.
pub(crate) fn merge_not_modified(
    stored: &ResponseHeader,
    not_modified: &http::HeaderMap,
) -> ResponseHeader {
    const KEPT: [&str; 11] = [
        "content-length",
        "content-encoding",
        "content-range",
        "transfer-encoding",
        "vary",
        "set-cookie",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "upgrade",
    ];
    let named_by_connection = |n: &http::HeaderName| {
        not_modified
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(n.as_str()))
    };
    let mut merged = stored.clone();
    for name in not_modified.keys() {
        if KEPT.contains(&name.as_str())
            || name.as_str() == "proxy-connection"
            || named_by_connection(name)
        {
            continue;
        }
        merged.remove_header(name);
        for value in not_modified.get_all(name) {
            // The name and value are valid already: they came from a parsed header.
            let _ = merged.append_header(name.clone(), value.clone());
        }
    }
    merged
}

/// The most header lines `CacheMeta::deserialize` reads back (`pingora-header-serde` 0.9.1
/// parses stored headers into 256 slots); a response with more is not stored.
pub(crate) const MAX_STORED_HEADERS: usize = 256;

/// `Accept-Encoding` reduced to the encoding a response would use: `br`, `gzip` or `identity`,
/// exactly as [`crate::compression::negotiate`] decides, so the variant a response is stored
/// under is the encoding it was compressed with.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn normalise_accept_encoding(value: &[u8]) -> &'static str {
    crate::compression::negotiate(Some(value)).as_str()
}

/// The variance of a request against a stored response's `Vary` headers.
///
/// `Vary: Accept-Encoding` alone, what the proxy's own compressed variants carry, takes a
/// shortcut: its three possible variances are hashed once per process, not on every hit.
pub fn variance(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut vary = meta.headers().get_all(header::VARY).iter();
    if let (Some(only), None) = (vary.next(), vary.next()) {
        if only
            .as_bytes()
            .trim_ascii()
            .eq_ignore_ascii_case(b"accept-encoding")
        {
            let encoding = crate::compression::negotiate_headers(&req.headers);
            return Some(accept_encoding_variance(encoding));
        }
    }
    variance_by_names(meta, req)
}

/// The variance of `Vary: Accept-Encoding` for a request that negotiates `encoding`: what
/// [`variance_by_names`] gives, computed once per encoding.
fn accept_encoding_variance(encoding: crate::compression::Encoding) -> HashBinary {
    use crate::compression::Encoding;
    static BY_ENCODING: std::sync::OnceLock<[HashBinary; 3]> = std::sync::OnceLock::new();
    let all = BY_ENCODING.get_or_init(|| {
        [Encoding::Brotli, Encoding::Gzip, Encoding::Identity].map(|e| {
            let mut b = VarianceBuilder::new();
            b.add_owned_name_value(
                "accept-encoding".to_string(),
                e.as_str().as_bytes().to_vec(),
            );
            // One name and value were added, so there is a hash.
            b.finalize().unwrap_or_default()
        })
    });
    match encoding {
        Encoding::Brotli => all[0],
        Encoding::Gzip => all[1],
        Encoding::Identity => all[2],
    }
}

/// The variance over every name in the `Vary` headers, sorted and without duplicates.
fn variance_by_names(meta: &CacheMeta, req: &RequestHeader) -> Option<HashBinary> {
    let mut names: Vec<String> = meta
        .headers()
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    if names.is_empty() {
        return None;
    }
    names.sort();
    names.dedup();
    let mut b = VarianceBuilder::new();
    for name in names {
        let value: Vec<u8> = if name == "accept-encoding" {
            crate::compression::negotiate_headers(&req.headers)
                .as_str()
                .as_bytes()
                .to_vec()
        } else {
            req.headers
                .get_all(name.as_str())
                .iter()
                .flat_map(|v| v.as_bytes().iter().copied().chain(*b","))
                .collect()
        };
        b.add_owned_name_value(name, value);
    }
    b.finalize()
}

/// The `NoCacheReason` of a request with credentials whose answer is not shared: its response
/// is not stored, or a stored response is not served to it.
pub(crate) const CREDENTIALS: &str = "credentials";

/// The `NoCacheReason` of a request that said `only-if-cached` and found no usable stored
/// response: it is answered `504` without going upstream.
pub(crate) const ONLY_IF_CACHED: &str = "only-if-cached";

/// The `NoCacheReason` of a `206` from upstream: only complete responses are stored (Range
/// requests are answered from them).
pub(crate) const PARTIAL: &str = "partial";

/// The `NoCacheReason` of a response whose status is stored only with explicit freshness
/// (RFC 9111 §4.2.2) and which had none, or of any uncacheable `5xx`: labelled `origin` like
/// `no-store`, but not remembered as uncacheable, since the next answer for the URL may be a
/// `200` (and a stale entry must stay findable meanwhile).
pub(crate) const ORIGIN_STATUS: &str = "origin-status";

/// The `NoCacheReason` of a response to a request that said `Cache-Control: no-store`.
pub(crate) const REQUEST_NO_STORE: &str = "request-no-store";

/// Why a request on a caching route was not served from or stored in the cache, as the access
/// log and `galion_edge_cache_bypass_total{reason}` name it. Every value is in [`BYPASS_REASONS`].
///
/// `None` when the cache was used (a hit, or a miss that was stored) or never enabled.
pub(crate) fn bypass_reason(phase: CachePhase) -> Option<&'static str> {
    let CachePhase::Disabled(reason) = phase else {
        return None;
    };
    Some(match reason {
        NoCacheReason::NeverEnabled => return None,
        NoCacheReason::Custom(CREDENTIALS) => "credentials",
        NoCacheReason::Custom(REQUEST_NO_STORE) => "request",
        NoCacheReason::Custom(PARTIAL) => "partial",
        NoCacheReason::Custom(ONLY_IF_CACHED) => "request",
        NoCacheReason::OriginNotCache | NoCacheReason::Custom(ORIGIN_STATUS) => "origin",
        NoCacheReason::Custom("set-cookie") => "set-cookie",
        NoCacheReason::Custom("vary-star") => "vary-star",
        NoCacheReason::ResponseTooLarge | NoCacheReason::PredictedResponseTooLarge => "too-large",
        NoCacheReason::CacheLockGiveUp
        | NoCacheReason::CacheLockTimeout
        | NoCacheReason::CacheLockRetryLimit => "lock",
        NoCacheReason::Custom("encoding-variant-mismatch") => "encoding",
        NoCacheReason::Custom("too-many-headers") => "too-many-headers",
        _ => "error",
    })
}

/// Every value [`bypass_reason`] returns, for the metric's series.
pub(crate) const BYPASS_REASONS: [&str; 11] = [
    "credentials",
    "request",
    "partial",
    "origin",
    "set-cookie",
    "vary-star",
    "too-large",
    "lock",
    "encoding",
    "too-many-headers",
    "error",
];

/// What the cache did, for `X-Cache-Status`.
pub fn status_label(phase: CachePhase) -> &'static str {
    match phase {
        CachePhase::Hit => "HIT",
        CachePhase::Miss => "MISS",
        CachePhase::Expired => "EXPIRED",
        CachePhase::Stale => "STALE",
        CachePhase::StaleUpdating => "UPDATING",
        CachePhase::Revalidated | CachePhase::RevalidatedNoCache(_) => "REVALIDATED",
        _ => "BYPASS",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash kept in the key is the one Pingora computes from the key text, so entries on
    /// disk from before it, and keys built elsewhere, are the same keys.
    #[test]
    fn cache_key_keeps_the_hash_of_its_text() {
        let key = cache_key(true, "Galion.App:443", "/api/users?page=1", "api");
        let plain = CacheKey::new("https://galion.app/api/users?page=1", "api");
        assert_eq!(key.primary_key(), plain.primary_key());
        assert_eq!(key.primary_bin(), plain.primary_bin());
        assert_eq!(key.combined_bin(), plain.combined_bin());
        assert_eq!(key.to_compact(), plain.to_compact());
        let other = cache_key(true, "galion.app", "/api/users?page=2", "api");
        assert_ne!(other.primary_bin(), key.primary_bin());
    }

    /// The shortcut for `Vary: Accept-Encoding` gives exactly the general variance, for every
    /// encoding and spelling, so variants stored before it are still found.
    #[test]
    fn accept_encoding_variance_matches_the_general_one() {
        for vary in ["Accept-Encoding", " accept-encoding ", "ACCEPT-ENCODING"] {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            resp.insert_header(header::VARY, vary).unwrap();
            let now = std::time::SystemTime::now();
            let meta = CacheMeta::new(now, now, 0, 0, resp);
            for ae in [
                None,
                Some("br"),
                Some("gzip, br"),
                Some("gzip"),
                Some("identity"),
            ] {
                let mut req = RequestHeader::build("GET", b"/", None).unwrap();
                if let Some(ae) = ae {
                    req.insert_header(header::ACCEPT_ENCODING, ae).unwrap();
                }
                let fast = variance(&meta, &req);
                assert!(fast.is_some(), "{vary:?} {ae:?}");
                assert_eq!(fast, variance_by_names(&meta, &req), "{vary:?} {ae:?}");
            }
        }
        // The three encodings are three variants.
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header(header::VARY, "Accept-Encoding").unwrap();
        let now = std::time::SystemTime::now();
        let meta = CacheMeta::new(now, now, 0, 0, resp);
        let of = |ae: &str| {
            let mut req = RequestHeader::build("GET", b"/", None).unwrap();
            req.insert_header(header::ACCEPT_ENCODING, ae).unwrap();
            variance(&meta, &req)
        };
        assert_ne!(of("br"), of("gzip"));
        assert_ne!(of("gzip"), of("identity"));
        assert_ne!(of("br"), of("identity"));
    }

    #[test]
    fn credentials_are_authorization_or_a_counted_cookie() {
        let of = |lines: &[(&str, &str)]| {
            let mut h = http::HeaderMap::new();
            for (k, v) in lines {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        let all = CredentialCookies::All;
        let session = CredentialCookies::Named(vec!["session".into()]);
        assert!(!all.in_request(&of(&[])));
        assert!(!all.in_request(&of(&[("cookie", " ; ")])));
        assert!(all.in_request(&of(&[("authorization", "")])));
        assert!(all.in_request(&of(&[("cookie", "_ga=1")])));
        assert!(!session.in_request(&of(&[("cookie", "_ga=1; sessionx=2")])));
        assert!(session.in_request(&of(&[("cookie", "_ga=1"), ("cookie", " session=abc")])));
        assert!(
            !session.in_request(&of(&[("cookie", "Session=abc")])),
            "case-sensitive"
        );
        assert!(session.in_request(&of(&[("authorization", "Bearer x")])));
        let scan = all.scan(&of(&[("cache-control", "no-cache"), ("accept", "*/*")]));
        assert_eq!(
            scan,
            RequestScan {
                credentials: false,
                cache_control: true
            }
        );
    }

    #[test]
    fn unsafe_methods_with_non_error_statuses_invalidate() {
        use http::Method;
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert!(invalidates(&m, 200) && invalidates(&m, 204) && invalidates(&m, 303));
            assert!(!invalidates(&m, 404) && !invalidates(&m, 500) && !invalidates(&m, 101));
        }
        let other = Method::from_bytes(b"PROPPATCH").unwrap();
        assert!(invalidates(&other, 200), "a method of unknown safety");
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!invalidates(&m, 200));
        }
    }

    #[test]
    fn only_same_origin_locations_are_invalidated() {
        let host = "galion.app";
        assert_eq!(
            same_origin_target("/api/items/7?x=1", host),
            Some("/api/items/7?x=1")
        );
        assert_eq!(
            same_origin_target("https://Galion.App:443/a", host),
            Some("/a")
        );
        assert_eq!(same_origin_target("http://galion.app", host), Some("/"));
        assert_eq!(same_origin_target("https://galion.studio/a", host), None);
        assert_eq!(same_origin_target("//galion.studio/a", host), None);
        assert_eq!(
            same_origin_target("https://galion.app@evil.example/a", host),
            None
        );
        assert_eq!(same_origin_target("items/7", host), None);
    }

    #[test]
    fn accept_encoding_normalised() {
        assert_eq!(normalise_accept_encoding(b"gzip, deflate, br"), "br");
        assert_eq!(normalise_accept_encoding(b"gzip;q=1.0, br;q=0"), "gzip");
        assert_eq!(normalise_accept_encoding(b"identity"), "identity");
        assert_eq!(normalise_accept_encoding(b""), "identity");
        assert_eq!(normalise_accept_encoding(b"GZIP"), "gzip");
    }

    #[test]
    fn extensions() {
        assert_eq!(extension("/static/app.3f2a.js"), Some("js"));
        assert_eq!(extension("/api/v1/users"), None);
        assert_eq!(extension("/dir.d/file"), None);
        assert_eq!(extension("/x."), None);
    }

    fn admission() -> Admission<'static> {
        Admission {
            credentials: false,
            ttl: Duration::from_secs(600),
            targeted: &[],
            sent: None,
            request_no_store: false,
        }
    }

    fn decide(lines: &[&str]) -> RespCacheable {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for l in lines {
            resp.append_header(header::CACHE_CONTROL, *l).unwrap();
        }
        let zone = crate::fuzzing::cache_control_zone();
        response_cacheability(&resp, &admission(), &zone)
    }

    /// Found by the `cache_control` fuzz target (its 10-minute run for issue 21): a
    /// `Cache-Control` line with a byte that is not UTF-8 was skipped whole, so `private,
    /// max-age=600<0xB8>` lost its `private` and was stored for everyone. The byte now spoils
    /// only the member it is in.
    #[test]
    fn a_byte_that_is_not_utf8_spoils_only_its_own_directive() {
        let decide_raw = |raw: &[u8]| {
            let mut resp = ResponseHeader::build(200, None).unwrap();
            let value = http::HeaderValue::from_bytes(raw).unwrap();
            resp.append_header(header::CACHE_CONTROL, value).unwrap();
            let zone = crate::fuzzing::cache_control_zone();
            response_cacheability(&resp, &admission(), &zone)
        };
        for raw in [
            &b"private, max-age=600\xb8"[..],
            b"max-age=600\xb8, private",
            b"no-store, max-age=600\xb8",
        ] {
            assert!(
                matches!(decide_raw(raw), RespCacheable::Uncacheable(_)),
                "{} stored",
                String::from_utf8_lossy(raw)
            );
        }
        // The other members of the line still count.
        let RespCacheable::Cacheable(meta) = decide_raw(b"max-age=600, x-\xb8") else {
            panic!("max-age=600 beside a spoiled member: not stored");
        };
        assert!(meta.fresh_until() > meta.created());
    }

    /// Found with the `cache_control` fuzz target's invariants: Pingora's parser keeps the last value of a
    /// repeated directive, so a later `private="x"` hid a bare `private` (the response was
    /// stored in the shared cache), and a later `no-cache=x` a bare `no-cache` (stored fresh).
    #[test]
    fn a_bare_private_or_no_cache_is_not_overridden() {
        for lines in [
            &["private, max-age=600", "private=\"set-cookie\""][..],
            &["private; private=x-user; max-age=60"],
            &["PRIVATE , s-maxage=60, private=a"],
        ] {
            assert!(
                matches!(decide(lines), RespCacheable::Uncacheable(_)),
                "{lines:?} stored"
            );
        }
        // The qualified form alone is storable (without the named headers).
        assert!(matches!(
            decide(&["private=\"x-user\", max-age=60"]),
            RespCacheable::Cacheable(_)
        ));
        for lines in [
            &["no-cache; max-age=600; no-cache=x-user"][..],
            &["no-cache, max-age=600", "no-cache=\"x\""],
        ] {
            let RespCacheable::Cacheable(meta) = decide(lines) else {
                panic!("{lines:?} not stored");
            };
            assert!(
                meta.fresh_until() < meta.created(),
                "{lines:?} stored fresh"
            );
            assert_eq!(meta.stale_while_revalidate_sec(), 0);
            assert_eq!(meta.stale_if_error_sec(), 0);
        }
        let RespCacheable::Cacheable(meta) = decide(&["max-age=600"]) else {
            panic!("max-age=600 not stored");
        };
        assert!(meta.fresh_until() > meta.created());
    }

    /// An aged response (`Age`, or a `Date` in an earlier second) is admitted now and aged from
    /// when the origin made it: a `Vary` variant filled just after its primary entry is not
    /// older than the primary (Pingora serves no variant older than it), and its `Age` and
    /// freshness still count the time it spent before reaching the cache.
    #[test]
    fn an_aged_response_is_admitted_now_and_aged_from_its_origin() {
        let zone = crate::fuzzing::cache_control_zone();
        let before = SystemTime::now();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header(header::CACHE_CONTROL, "max-age=600")
            .unwrap();
        resp.append_header(header::AGE, "30").unwrap();
        let date = httpdate::fmt_http_date(before - Duration::from_secs(1));
        resp.append_header(header::DATE, date).unwrap();
        let RespCacheable::Cacheable(meta) = response_cacheability(&resp, &admission(), &zone)
        else {
            panic!("not stored");
        };
        let after = SystemTime::now();
        assert!(meta.created() >= before && meta.created() <= after);
        assert!(meta.age() >= Duration::from_secs(30), "{:?}", meta.age());
        assert!(meta.age() < Duration::from_secs(40), "{:?}", meta.age());
        assert!(meta.fresh_until() <= after + Duration::from_secs(570));
        assert!(meta.fresh_until() >= before + Duration::from_secs(569));
        // A fresh response: no epoch of its own.
        let mut fresh = ResponseHeader::build(200, None).unwrap();
        fresh
            .append_header(header::CACHE_CONTROL, "max-age=600")
            .unwrap();
        let RespCacheable::Cacheable(meta) = response_cacheability(&fresh, &admission(), &zone)
        else {
            panic!("not stored");
        };
        assert_eq!(meta.epoch_override(), None);
    }

    /// Found by the `cache_control` fuzz target: a response with more header lines than
    /// Pingora's meta parser reads back was stored, then failed to deserialize on every hit.
    #[test]
    fn responses_with_too_many_headers_are_not_stored() {
        let zone = crate::fuzzing::cache_control_zone();
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.append_header(header::CACHE_CONTROL, "max-age=60")
            .unwrap();
        for i in 1..MAX_STORED_HEADERS {
            resp.append_header("x-n", i).unwrap();
        }
        let ttl = Duration::from_secs(600);
        let RespCacheable::Cacheable(meta) =
            response_cacheability(&resp, &Admission { ttl, ..admission() }, &zone)
        else {
            panic!("256 headers: not stored");
        };
        let (internal, header) = meta.serialize().unwrap();
        CacheMeta::deserialize(&internal, &header).unwrap();
        resp.append_header("x-n", "one too many").unwrap();
        assert!(matches!(
            response_cacheability(&resp, &Admission { ttl, ..admission() }, &zone),
            RespCacheable::Uncacheable(NoCacheReason::Custom("too-many-headers"))
        ));
    }
}
