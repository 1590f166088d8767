//! `[cache]`: zones, static extensions, credential cookies, targeted fields; and a route's
//! `cache`/`cache_ttl`.

use super::{valid_name, Validator};
use crate::cache as owner;
use crate::config::{CacheSettings, RawCache, RawRoute, RouteCache, ZoneSettings};
use http::HeaderName;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

impl Validator {
    pub(super) fn cache(&mut self, raw: &RawCache) -> CacheSettings {
        let mut zones = Vec::new();
        for (name, z) in &raw.zones {
            let field = format!("cache.zones.{name}");
            if !valid_name(name) {
                self.err(
                    field.clone(),
                    format!("{name:?}"),
                    "zone names use letters, digits, '_' and '-'",
                );
            }
            let is_static = name == owner::STATIC_ZONE;
            let path = match &z.path {
                Some(p) => {
                    let path = self.path(p);
                    // The directory is created at start: its nearest existing ancestor
                    // must be a directory.
                    let usable = path
                        .ancestors()
                        .find(|a| a.exists())
                        .is_some_and(Path::is_dir);
                    if !usable {
                        self.err(
                            format!("{field}.path"),
                            format!("{p:?}"),
                            "must be a directory, or a path that can be created as one (it is created at start)",
                        );
                    }
                    path
                }
                None => {
                    self.err(
                        format!("{field}.path"),
                        "",
                        "missing: the directory of this zone's disk tier, such as \"/var/cache/galion-edge/api\"",
                    );
                    PathBuf::new()
                }
            };
            let size = self.size(
                &format!("{field}.size"),
                &z.size,
                owner::DEFAULT_ZONE_SIZE,
                owner::ZONE_SIZE_RANGE,
            );
            let memory_size = self.size(
                &format!("{field}.memory_size"),
                &z.memory_size,
                owner::default_memory_size(size),
                owner::MEMORY_SIZE_RANGE,
            );
            let max_object_size = self.size(
                &format!("{field}.max_object_size"),
                &z.max_object_size,
                owner::default_max_object_size(size),
                owner::MAX_OBJECT_SIZE_RANGE,
            );
            if max_object_size > owner::max_object_size_limit(size) {
                self.err(
                    format!("{field}.max_object_size"),
                    max_object_size.to_string(),
                    format!(
                        "must be at most a quarter of the zone size ({} bytes)",
                        owner::max_object_size_limit(size)
                    ),
                );
            }
            let (d_default, d_min, d_max) = if is_static {
                (
                    owner::STATIC_DEFAULT_TTL,
                    owner::STATIC_MIN_TTL,
                    owner::STATIC_MAX_TTL,
                )
            } else {
                (
                    owner::DEFAULT_TTL,
                    owner::DEFAULT_MIN_TTL,
                    owner::DEFAULT_MAX_TTL,
                )
            };
            let min_ttl = self.duration(&format!("{field}.min_ttl"), &z.min_ttl, d_min);
            let max_ttl = self.duration(&format!("{field}.max_ttl"), &z.max_ttl, d_max);
            let default_ttl =
                self.duration(&format!("{field}.default_ttl"), &z.default_ttl, d_default);
            if min_ttl > max_ttl {
                self.err(
                    format!("{field}.min_ttl"),
                    humantime::format_duration(min_ttl).to_string(),
                    format!("is above max_ttl ({})", humantime::format_duration(max_ttl)),
                );
            } else if default_ttl < min_ttl || default_ttl > max_ttl {
                self.err(
                    format!("{field}.default_ttl"),
                    humantime::format_duration(default_ttl).to_string(),
                    format!(
                        "must be within min_ttl..max_ttl ({} to {})",
                        humantime::format_duration(min_ttl),
                        humantime::format_duration(max_ttl)
                    ),
                );
            }
            let freshness = match z.freshness.as_deref() {
                None | Some("policy") => owner::FreshnessMode::Policy,
                Some("origin") => owner::FreshnessMode::Origin,
                Some(other) => {
                    self.err(
                        format!("{field}.freshness"),
                        format!("{other:?}"),
                        "expected \"policy\" (default_ttl and cache_ttl apply when the origin \
                         gives no lifetime) or \"origin\" (RFC 9111: the origin alone decides)",
                    );
                    owner::FreshnessMode::Policy
                }
            };
            let heuristic_percent = match z.heuristic.as_deref() {
                None => 0,
                Some(h) => {
                    let parsed = h
                        .trim()
                        .strip_suffix('%')
                        .and_then(|n| n.trim().parse::<u8>().ok())
                        .filter(|n| *n <= 100);
                    match parsed {
                        Some(n) if n > 0 && freshness == owner::FreshnessMode::Policy => {
                            self.err(
                                format!("{field}.heuristic"),
                                format!("{h:?}"),
                                "only used with freshness = \"origin\"; in policy mode \
                                 default_ttl applies when the origin gives no lifetime",
                            );
                            0
                        }
                        Some(n) => n,
                        None => {
                            self.err(
                                format!("{field}.heuristic"),
                                format!("{h:?}"),
                                "expected a whole percentage from \"0%\" to \"100%\", such as \
                                 \"10%\" (RFC 9111 suggests 10% of the time since Last-Modified)",
                            );
                            0
                        }
                    }
                }
            };
            let heuristic_max =
                self.duration(&format!("{field}.heuristic_max"), &z.heuristic_max, max_ttl);
            if z.heuristic_max.is_some() && heuristic_percent == 0 {
                self.err(
                    format!("{field}.heuristic_max"),
                    z.heuristic_max
                        .as_ref()
                        .map(|d| d.shown())
                        .unwrap_or_default(),
                    "only meaningful with a heuristic, such as heuristic = \"10%\"",
                );
            }
            zones.push(ZoneSettings {
                freshness,
                heuristic_percent,
                heuristic_max,
                name: name.clone(),
                path,
                size,
                memory_size,
                max_object_size,
                default_ttl,
                min_ttl,
                max_ttl,
                stale_while_revalidate: self.duration(
                    &format!("{field}.stale_while_revalidate"),
                    &z.stale_while_revalidate,
                    owner::DEFAULT_STALE_WHILE_REVALIDATE,
                ),
                stale_if_error: self.duration(
                    &format!("{field}.stale_if_error"),
                    &z.stale_if_error,
                    owner::DEFAULT_STALE_IF_ERROR,
                ),
            });
        }
        let mut seen_paths: HashMap<PathBuf, String> = HashMap::new();
        for z in &zones {
            if let Some(other) = seen_paths.insert(z.path.clone(), z.name.clone()) {
                self.err(
                    format!("cache.zones.{}.path", z.name),
                    format!("{:?}", z.path.display().to_string()),
                    format!("zone {other} uses the same directory; each zone needs its own"),
                );
            }
        }
        let static_zone = zones.iter().position(|z| z.name == owner::STATIC_ZONE);
        let static_extensions: Vec<String> = raw
            .static_extensions
            .clone()
            .unwrap_or_else(|| {
                owner::DEFAULT_STATIC_EXTENSIONS
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            })
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        if raw.static_extensions.is_some() && static_zone.is_none() {
            self.err(
                "cache.static_extensions",
                "",
                "set, but there is no [cache.zones.static] to put those responses in",
            );
        }
        let credential_cookies = self.credential_cookies(raw.credential_cookies.as_deref());
        let targeted_fields = self.targeted_fields(raw.targeted_fields.as_deref());
        CacheSettings {
            zones,
            static_extensions,
            static_zone,
            lock_timeout: self.duration(
                "cache.lock_timeout",
                &raw.lock_timeout,
                owner::DEFAULT_LOCK_TIMEOUT,
            ),
            credential_cookies,
            targeted_fields,
        }
    }

    fn targeted_fields(&mut self, names: Option<&[String]>) -> Vec<HeaderName> {
        let Some(names) = names else {
            return owner::DEFAULT_TARGETED_FIELDS
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect();
        };
        let mut out = Vec::new();
        for (i, n) in names.iter().enumerate() {
            match HeaderName::from_bytes(n.as_bytes()) {
                Ok(h) if h == http::header::CACHE_CONTROL => self.err(
                    format!("cache.targeted_fields[{i}]"),
                    format!("{n:?}"),
                    "Cache-Control is what targeted fields take precedence over; list only \
                     targeted fields such as \"CDN-Cache-Control\"",
                ),
                Ok(h) => out.push(h),
                Err(_) => self.err(
                    format!("cache.targeted_fields[{i}]"),
                    format!("{n:?}"),
                    "not a header field name (letters, digits and -)",
                ),
            }
        }
        out
    }

    fn credential_cookies(&mut self, names: Option<&[String]>) -> owner::CredentialCookies {
        use owner::CredentialCookies;
        let Some(names) = names else {
            return CredentialCookies::All;
        };
        if names.is_empty() {
            self.err(
                "cache.credential_cookies",
                "[]",
                "an empty list would make no cookie a credential, so one user's answers could \
                 be served to another; remove the setting (every cookie counts) or name the \
                 session cookies, such as [\"session\"]",
            );
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || !n.bytes().all(owner::is_cookie_name_byte) {
                self.err(
                    format!("cache.credential_cookies[{i}]"),
                    format!("{n:?}"),
                    "not a cookie name: use the name exactly as the origin's Set-Cookie \
                     sets it (letters, digits and !#$%&'*+-.^_`|~), without `=` or a value",
                );
            }
        }
        CredentialCookies::Named(names.to_vec())
    }

    pub(super) fn route_cache(
        &mut self,
        rfield: &str,
        r: &RawRoute,
        cache: &CacheSettings,
    ) -> RouteCache {
        let mut rc = RouteCache::default();
        match r.cache.as_deref() {
            None => {}
            Some("off") => rc.off = true,
            Some(name) => match cache.zones.iter().position(|z| z.name == name) {
                Some(i) => rc.zone = Some(i),
                None => {
                    let known: Vec<&str> = cache.zones.iter().map(|z| z.name.as_str()).collect();
                    self.err(
                        format!("{rfield}.cache"),
                        format!("{name:?}"),
                        format!(
                            "no cache zone has this name; use \"off\" or one of: {}",
                            if known.is_empty() {
                                "(no [cache.zones] defined)".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            },
        }
        if r.cache_ttl.is_some() {
            // Only read when written, so the fallback of a refused value does not matter.
            let ttl = self.duration(
                &format!("{rfield}.cache_ttl"),
                &r.cache_ttl,
                owner::DEFAULT_TTL,
            );
            match rc.zone.and_then(|z| cache.zones.get(z)) {
                None => self.err(
                    format!("{rfield}.cache_ttl"),
                    r.cache_ttl.as_ref().map(|d| d.shown()).unwrap_or_default(),
                    "only meaningful with `cache = \"ZONE\"` on the same route",
                ),
                Some(z) if ttl < z.min_ttl || ttl > z.max_ttl => self.err(
                    format!("{rfield}.cache_ttl"),
                    r.cache_ttl.as_ref().map(|d| d.shown()).unwrap_or_default(),
                    format!(
                        "zone {} allows TTLs from {} to {}",
                        z.name,
                        humantime::format_duration(z.min_ttl),
                        humantime::format_duration(z.max_ttl)
                    ),
                ),
                Some(_) => rc.ttl = Some(ttl),
            }
        }
        rc
    }
}
