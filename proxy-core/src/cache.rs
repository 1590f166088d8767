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

pub mod disk;
pub mod memory;
pub mod storage;

use crate::config::{CacheSettings, RouteCache, ZoneSettings};
use http::header;
use pingora_cache::cache_control::{CacheControl, Cacheable as CcCacheable, InterpretCacheControl};
use pingora_cache::filters::{calculate_fresh_until, calculate_serve_stale_durations};
use pingora_cache::key::HashBinary;
use pingora_cache::lock::{CacheKeyLockImpl, CacheLock};
use pingora_cache::{
    CacheKey, CacheMeta, CacheMetaDefaults, CachePhase, NoCacheReason, RespCacheable,
    VarianceBuilder,
};
use pingora_http::{RequestHeader, ResponseHeader};
use std::time::{Duration, SystemTime};

pub use storage::{DiskEviction, DiskOp, TieredStorage, ZoneStats, ZoneUsage};

/// One zone: its settings, storage and disk eviction manager, all `'static` as Pingora needs.
pub struct CacheZone {
    /// Settings from the config.
    pub settings: ZoneSettings,
    /// The two-tier storage.
    pub storage: &'static TieredStorage,
    /// Pingora's LRU over the disk tier's bytes.
    pub eviction: &'static DiskEviction,
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
    pub fn open(settings: &ZoneSettings) -> std::io::Result<CacheZone> {
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
        })
    }
}

/// Every zone of a config and the shared cache lock.
pub struct Caches {
    /// Zones, indexed like `config.cache.zones`.
    pub zones: Vec<CacheZone>,
    /// One fill per key: concurrent misses wait for the first.
    pub lock: &'static CacheKeyLockImpl,
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
    pub fn open(settings: &CacheSettings) -> std::io::Result<Caches> {
        if !settings.zones.is_empty() {
            survive_file_size_limit();
        }
        let zones = settings
            .zones
            .iter()
            .map(CacheZone::open)
            .collect::<std::io::Result<Vec<_>>>()?;
        let lock: Box<CacheKeyLockImpl> = CacheLock::new_boxed(settings.lock_timeout);
        Ok(Caches {
            zones,
            lock: Box::leak(lock),
            static_extensions: settings.static_extensions.clone(),
            static_zone: settings.static_zone,
        })
    }

    /// The zone a request on a route uses: `static` for static file extensions, otherwise the
    /// route's zone; none when the route says `cache = "off"`.
    pub fn zone_for(&self, route: &RouteCache, path: &str) -> Option<usize> {
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
    pub fn zone(&self, name: &str) -> Option<&CacheZone> {
        self.zones.iter().find(|z| z.settings.name == name)
    }
}

/// `SIGXFSZ` on Linux (x86-64 and arm64 alike).
const SIGXFSZ: i32 = 25;

/// Installs a `SIGXFSZ` disposition so that a write past the process's file-size limit
/// (`RLIMIT_FSIZE`, systemd's `LimitFSIZE=`) fails that write with `EFBIG`, which the cache
/// treats as any disk error, instead of killing the process (the default action). Tokio never
/// restores the default once installed. Errors are logged.
pub fn survive_file_size_limit() {
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
    let scheme = if https { "https" } else { "http" };
    let host = crate::routing::strip_port(host).to_ascii_lowercase();
    let mut key = CacheKey::new(format!("{scheme}://{host}{path_and_query}"), zone);
    let hash = pingora_cache::key::CacheHashKey::primary_bin(&key);
    key.set_primary_bin_override(hash);
    key
}

/// The primary key text of a URL, as [`cache_key`] builds it, for purges.
pub fn url_key(https: bool, host: &str, path_and_query: &str) -> String {
    let scheme = if https { "https" } else { "http" };
    format!(
        "{scheme}://{}{path_and_query}",
        crate::routing::strip_port(host).to_ascii_lowercase()
    )
}

fn no_default_ttl(_: http::StatusCode) -> Option<Duration> {
    None
}

/// Statuses a response may be stored with when the origin gives no explicit freshness
/// (RFC 9110 §15.1's heuristically cacheable codes, minus partial content).
fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Which cookies make a request carry credentials (`cache.credential_cookies`).
///
/// A request carries credentials when it has `Authorization`, or a `Cookie` with a cookie this
/// setting counts. Such a request is answered from the cache, and its response stored, only
/// when the origin marked the response shareable ([`shared_with_credentials`]); a proxy-chosen
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
        if headers.contains_key(header::AUTHORIZATION) {
            return true;
        }
        headers.get_all(header::COOKIE).iter().any(|v| {
            v.as_bytes().split(|b| *b == b';').any(|pair| {
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
        })
    }
}

/// Whether `b` may appear in a cookie name (an RFC 9110 token character).
pub(crate) fn is_cookie_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Whether a response's own `Cache-Control` lets a shared cache store it for, and serve it to,
/// a request with credentials: `public`, `s-maxage` or `must-revalidate` (RFC 9111 §3.5, the
/// explicit cases; the same rule is applied to credential cookies). A response without
/// `Cache-Control` is not shareable.
pub fn shared_with_credentials(headers: &http::HeaderMap) -> bool {
    CacheControl::from_headers_named("cache-control", headers)
        .is_some_and(|cc| cc.allow_caching_authorized_req())
}

/// Decides whether a response is stored, and for how long.
///
/// In order: `Set-Cookie` and `Vary: *` are never stored; a response to a request with
/// credentials (`credentials`, see [`CredentialCookies`]) is stored only if the response says
/// `public`, `s-maxage` or `must-revalidate`, and only for the lifetime the origin gave
/// (never `ttl`); `no-store` and
/// `private` are obeyed (a bare `private` or `no-cache` wins over a later `private="…"` or
/// `no-cache="…"`; `no-cache` responses are stored stale, so every use revalidates); `s-maxage`, `max-age` and `Expires` give the freshness; otherwise
/// `ttl` applies (the route's or zone's default; at most a minute for 404/410). The stale
/// windows come from `stale-while-revalidate`/`stale-if-error`, or the zone's defaults unless
/// the origin said `no-cache`, `must-revalidate` or `proxy-revalidate`. A response with more
/// than [`MAX_STORED_HEADERS`] header lines is not stored (it could not be read back).
pub fn response_cacheability(
    resp: &ResponseHeader,
    credentials: bool,
    ttl: Duration,
    zone: &ZoneSettings,
) -> RespCacheable {
    let status = resp.status.as_u16();
    if resp.headers.contains_key(header::SET_COOKIE) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("set-cookie"));
    }
    if resp.headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == b"*")
    }) {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("vary-star"));
    }
    let cc = CacheControl::from_resp_headers(resp);
    if credentials
        && !cc
            .as_ref()
            .is_some_and(|cc| cc.allow_caching_authorized_req())
    {
        return RespCacheable::Uncacheable(NoCacheReason::Custom(CREDENTIALS));
    }
    // Pingora's parser keeps the last value of a repeated directive, so `private,
    // private="x"` reads as the qualified form only; a bare `private` or `no-cache` anywhere
    // still applies to the whole response (found with the `cache_control` fuzz target's check).
    let bare_no_cache = has_bare_directive(resp, b"no-cache");
    if has_bare_directive(resp, b"private")
        || cc
            .as_ref()
            .is_some_and(|c| c.is_cacheable() == CcCacheable::No)
    {
        return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache);
    }
    let now = SystemTime::now();
    let no_defaults = CacheMetaDefaults::new(no_default_ttl, 0, 0);
    let explicit = if bare_no_cache {
        // Stored stale, as Pingora does for `no-cache`: every use revalidates.
        Some(now.checked_sub(Duration::from_secs(1)).unwrap_or(now))
    } else {
        calculate_fresh_until(now, cc.as_ref(), resp, credentials, &no_defaults)
    };
    let fresh_until = match explicit {
        Some(t) => t,
        // The origin let it be shared but said for how long only to browsers, or not at all:
        // a TTL the proxy chose must not decide how long one user's answer serves others.
        None if credentials => {
            return RespCacheable::Uncacheable(NoCacheReason::Custom(CREDENTIALS));
        }
        None if heuristically_cacheable(status) => {
            let ttl = if matches!(status, 404 | 410) {
                ttl.min(Duration::from_secs(60))
            } else {
                ttl
            };
            now + ttl
        }
        None => return RespCacheable::Uncacheable(NoCacheReason::OriginNotCache),
    };
    let swr = zone.stale_while_revalidate.as_secs().min(u32::MAX as u64) as u32;
    let sie = zone.stale_if_error.as_secs().min(u32::MAX as u64) as u32;
    // `no-cache`, `must-revalidate` and `proxy-revalidate` forbid serving stale unless the
    // origin itself allows it: the zone's defaults do not apply then.
    let strict = bare_no_cache
        || cc
            .as_ref()
            .is_some_and(|c| c.no_cache() || c.must_revalidate() || c.proxy_revalidate());
    let (swr, sie) = if strict { (0, 0) } else { (swr, sie) };
    let zone_defaults = CacheMetaDefaults::new(no_default_ttl, swr, sie);
    let (swr, sie) = calculate_serve_stale_durations(cc.as_ref(), &zone_defaults);
    let mut stored = resp.clone();
    if let Some(cc) = &cc {
        cc.strip_private_headers(&mut stored);
    }
    // A stored header that Pingora cannot parse back would be written and never served (found
    // by the `cache_control` fuzz target).
    if stored.headers.len() > MAX_STORED_HEADERS {
        return RespCacheable::Uncacheable(NoCacheReason::Custom("too-many-headers"));
    }
    RespCacheable::Cacheable(CacheMeta::new(fresh_until, now, swr, sie, stored))
}

/// The most header lines `CacheMeta::deserialize` reads back (`pingora-header-serde` 0.9.1
/// parses stored headers into 256 slots); a response with more is not stored.
pub const MAX_STORED_HEADERS: usize = 256;

/// Whether a `Cache-Control` line has `name` as a directive without a value. Directives are
/// split on `,` and `;` as Pingora's parser does; a quoted string containing `, private,` also
/// counts, which errs on the side of not storing.
fn has_bare_directive(resp: &ResponseHeader, name: &[u8]) -> bool {
    resp.headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',' || *b == b';')
            .any(|d| d.trim_ascii().eq_ignore_ascii_case(name))
    })
}

/// `Accept-Encoding` reduced to the encoding a response would use: `br`, `gzip` or `identity`,
/// exactly as [`crate::compression::negotiate`] decides, so the variant a response is stored
/// under is the encoding it was compressed with.
pub fn normalise_accept_encoding(value: &[u8]) -> &'static str {
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
pub const CREDENTIALS: &str = "credentials";

/// Why a request on a caching route was not served from or stored in the cache, as the access
/// log and `galion_edge_cache_bypass_total{reason}` name it. Every value is in [`BYPASS_REASONS`].
///
/// `None` when the cache was used (a hit, or a miss that was stored) or never enabled.
pub fn bypass_reason(phase: CachePhase) -> Option<&'static str> {
    let CachePhase::Disabled(reason) = phase else {
        return None;
    };
    Some(match reason {
        NoCacheReason::NeverEnabled => return None,
        NoCacheReason::Custom(CREDENTIALS) => "credentials",
        NoCacheReason::OriginNotCache => "origin",
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
pub const BYPASS_REASONS: [&str; 9] = [
    "credentials",
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
    use pingora_cache::key::CacheHashKey;

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

    fn decide(lines: &[&str]) -> RespCacheable {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for l in lines {
            resp.append_header(header::CACHE_CONTROL, *l).unwrap();
        }
        let zone = crate::fuzzing::cache_control_zone();
        response_cacheability(&resp, false, Duration::from_secs(600), &zone)
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
        let RespCacheable::Cacheable(meta) = response_cacheability(&resp, false, ttl, &zone) else {
            panic!("256 headers: not stored");
        };
        let (internal, header) = meta.serialize().unwrap();
        CacheMeta::deserialize(&internal, &header).unwrap();
        resp.append_header("x-n", "one too many").unwrap();
        assert!(matches!(
            response_cacheability(&resp, false, ttl, &zone),
            RespCacheable::Uncacheable(NoCacheReason::Custom("too-many-headers"))
        ));
    }
}
