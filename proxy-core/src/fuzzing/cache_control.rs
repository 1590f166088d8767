//! The `cache_control` target: whether and how long a response is stored.

use super::lines;
use crate::cache;
use crate::config::ZoneSettings;
use http::header::{HeaderName, HeaderValue};
use pingora_cache::{CacheMeta, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// The zone settings the cache-control target decides with (the `api` zone's defaults).
pub fn cache_control_zone() -> ZoneSettings {
    ZoneSettings {
        name: "api".into(),
        path: PathBuf::from("/nonexistent"),
        size: cache::DEFAULT_ZONE_SIZE,
        memory_size: cache::default_memory_size(cache::DEFAULT_ZONE_SIZE),
        max_object_size: cache::default_max_object_size(cache::DEFAULT_ZONE_SIZE),
        default_ttl: cache::DEFAULT_TTL,
        min_ttl: cache::DEFAULT_MIN_TTL,
        max_ttl: cache::DEFAULT_MAX_TTL,
        stale_while_revalidate: cache::DEFAULT_STALE_WHILE_REVALIDATE,
        stale_if_error: cache::DEFAULT_STALE_IF_ERROR,
        freshness: cache::FreshnessMode::Policy,
        heuristic_percent: 0,
        heuristic_max: cache::DEFAULT_MAX_TTL,
    }
}

/// Whether any `name` header line has the directive `directive` (`bare`: without a value), by
/// a simple split on `,` and `;` (both delimit directives for Pingora's parser); `None` when a
/// line has a quote, where such a split is not a parse.
fn reference_directive(
    resp: &ResponseHeader,
    name: &str,
    directive: &[u8],
    bare: bool,
) -> Option<bool> {
    let mut found = false;
    for v in resp.headers.get_all(name) {
        let v = v.as_bytes();
        if v.contains(&b'"') {
            return None;
        }
        found |= v.split(|b| *b == b',' || *b == b';').any(|d| {
            let mut kv = d.splitn(2, |b| *b == b'=');
            let n = kv.next().unwrap_or_default();
            n.trim_ascii().eq_ignore_ascii_case(directive) && (!bare || kv.next().is_none())
        });
    }
    Some(found)
}

/// The response cacheability decision over origin `Cache-Control`, `Expires`, `Vary` and
/// `Set-Cookie`: `data` is two bytes of status (100 + n % 500), one flag byte (bit 0: the
/// request had `Authorization`), then `name:value` header lines of the response (also sent as
/// the request's headers for the `Vary` variance).
///
/// Invariants: `Set-Cookie`, `Vary: *`, `no-store` and `private` (without field names) are
/// never stored, whatever else the header says (without a targeted field such as
/// `CDN-Cache-Control`, which takes precedence, and without `must-understand`); `no-cache` is
/// stored stale; a request with `Authorization` is stored only with `public`, `s-maxage` or
/// `must-revalidate`; a 206 is never stored; the entry is created now minus the response's
/// age, and a 404/410 without explicit freshness is fresh for at most a
/// minute; a stored response's `CacheMeta` survives the disk tier's
/// serialization; the variance of a request is deterministic.
pub fn cache_control(data: &[u8]) {
    if data.len() < 3 {
        return;
    }
    let status = 100 + u16::from_le_bytes([data[0], data[1]]) % 500;
    let authorization = data[2] & 1 != 0;
    let Ok(mut resp) = ResponseHeader::build(status, None) else {
        return;
    };
    let Ok(mut req) = RequestHeader::build("GET", b"/x", None) else {
        return;
    };
    for line in lines(&data[3..]) {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(line[..colon].trim_ascii()),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        let _ = resp.append_header(name.clone(), value.clone());
        let _ = req.append_header(name, value);
    }
    let zone = cache_control_zone();
    let before = SystemTime::now();
    let targeted: Vec<HeaderName> = cache::DEFAULT_TARGETED_FIELDS
        .iter()
        .map(|n| HeaderName::from_static(n))
        .collect();
    let admission = cache::Admission {
        credentials: authorization,
        ttl: zone.default_ttl,
        targeted: &targeted,
        sent: None,
        request_no_store: false,
    };
    let decision = cache::response_cacheability(&resp, &admission, &zone);
    let after = SystemTime::now();
    let has = |d: &[u8], bare| reference_directive(&resp, "cache-control", d, bare);
    let RespCacheable::Cacheable(meta) = decision else {
        return;
    };
    assert!(!resp.headers.contains_key(http::header::SET_COOKIE));
    let vary_star = resp.headers.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == b"*")
    });
    assert!(!vary_star, "Vary: * stored");
    // A targeted field (RFC 9213) takes precedence over Cache-Control when it is valid; the
    // directive checks below read Cache-Control, so they hold only without one.
    let targeted_present = targeted.iter().any(|n| resp.headers.contains_key(n));
    let cc: Vec<u8> = std::iter::once(&http::header::CACHE_CONTROL)
        .chain(&targeted)
        .flat_map(|n| resp.headers.get_all(n).iter())
        .flat_map(|v| v.as_bytes().to_ascii_lowercase())
        .collect();
    let mentions = |d: &[u8]| cc.windows(d.len()).any(|w| w == d);
    if !targeted_present && !mentions(b"must-understand") {
        assert_ne!(has(b"no-store", false), Some(true), "no-store stored");
    }
    if !targeted_present {
        assert_ne!(has(b"private", true), Some(true), "private stored");
    }
    if !targeted_present && has(b"no-cache", true) == Some(true) {
        assert!(meta.fresh_until() < meta.created(), "no-cache stored fresh");
        if !mentions(b"stale-while-revalidate") {
            assert_eq!(
                meta.stale_while_revalidate_sec(),
                0,
                "no-cache served stale"
            );
        }
    }
    if authorization {
        let allowed = [&b"public"[..], b"s-maxage", b"must-revalidate"]
            .iter()
            .any(|d| mentions(d));
        assert!(allowed, "authorized response stored without permission");
    }
    // The entry is created now, minus the age the response already had (RFC 9111 §4.2.3).
    let max_age = cache::freshness::initial_age(&resp.headers, before, after);
    assert!(meta.created() <= after && meta.created() + max_age >= before);
    assert_ne!(status, 206, "a partial response stored");
    let explicit =
        resp.headers.contains_key("cache-control") || resp.headers.contains_key("expires");
    if matches!(status, 404 | 410) && !explicit {
        assert!(meta.fresh_until() <= after + Duration::from_secs(60));
    }

    // What the disk tier stores, and reads back.
    if let Ok((internal, header)) = meta.serialize() {
        match CacheMeta::deserialize(&internal, &header) {
            Ok(back) => {
                assert_eq!(back.response_header().status, meta.response_header().status);
                let secs = |t: SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0)
                };
                assert_eq!(secs(back.fresh_until()), secs(meta.fresh_until()));
                assert_eq!(
                    back.stale_while_revalidate_sec(),
                    meta.stale_while_revalidate_sec()
                );
                assert_eq!(back.stale_if_error_sec(), meta.stale_if_error_sec());
            }
            Err(e) => panic!("a serialized meta does not deserialize: {e}"),
        }
    }
    assert_eq!(cache::variance(&meta, &req), cache::variance(&meta, &req));
}
