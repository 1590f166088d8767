//! Freshness as RFC 9111 computes it for a shared cache: which directives apply (§5.2, or a
//! targeted field of RFC 9213), the freshness lifetime (§4.2.1), the heuristic (§4.2.2) and the
//! age a response already has when it arrives (§4.2.3).
//!
//! Pingora's own `CacheControl` parser keeps the last value of a repeated directive and reads
//! `max-age=-1` or `max-age=abc` as absent (so a proxy TTL applied); here a repeated directive
//! with two values, or an invalid one, makes the response stale (§4.2.1: "caches are encouraged
//! to consider responses that have invalid freshness information to be stale"), and an invalid
//! `Expires` means "already expired" (§5.3).

use http::{header, HeaderMap, HeaderName};
use std::time::{Duration, SystemTime};

/// The largest delta-seconds a cache has to keep (RFC 9111 §1.2.2): larger values are this.
pub(crate) const MAX_DELTA_SECONDS: u64 = 1 << 31;

/// A delta-seconds directive (`max-age`, `s-maxage`, …) as received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Delta {
    /// Not there.
    #[default]
    Absent,
    /// One value, or the same value every time it is repeated (capped at
    /// [`MAX_DELTA_SECONDS`]).
    Seconds(u64),
    /// Not a non-negative integer, without a value, or repeated with different values.
    Invalid,
}

impl Delta {
    fn add(&mut self, value: Option<&str>) {
        let parsed = value
            .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
            .map(|v| v.parse::<u64>().unwrap_or(MAX_DELTA_SECONDS))
            .map(|n| n.min(MAX_DELTA_SECONDS));
        *self = match (*self, parsed) {
            (Delta::Absent, Some(n)) => Delta::Seconds(n),
            (Delta::Seconds(a), Some(b)) if a == b => Delta::Seconds(a),
            _ => Delta::Invalid,
        };
    }

    /// Whether the directive is there at all, valid or not.
    pub(crate) fn present(self) -> bool {
        self != Delta::Absent
    }
}

/// `private` or `no-cache`, bare or with field names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum Qualified {
    /// Not there.
    #[default]
    Absent,
    /// Only with field names: those fields are not stored (the rest of the response is).
    Fields(Vec<String>),
    /// Bare, somewhere: it applies to the whole response, whatever qualified forms also appear.
    Bare,
}

impl Qualified {
    fn add(&mut self, value: Option<&str>) {
        match value {
            None => *self = Qualified::Bare,
            Some(names) => {
                if let Qualified::Bare = self {
                    return;
                }
                let mut list = match std::mem::take(self) {
                    Qualified::Fields(l) => l,
                    _ => Vec::new(),
                };
                list.extend(
                    names
                        .split(',')
                        .map(|n| n.trim().to_ascii_lowercase())
                        .filter(|n| !n.is_empty()),
                );
                *self = Qualified::Fields(list);
            }
        }
    }

    /// Whether it is there bare.
    pub(crate) fn bare(&self) -> bool {
        matches!(self, Qualified::Bare)
    }

    /// The field names it lists, if any.
    pub(crate) fn fields(&self) -> &[String] {
        match self {
            Qualified::Fields(l) => l,
            _ => &[],
        }
    }
}

/// Where a response's directives for this cache came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Source {
    /// `Cache-Control` (and `Expires`), or nothing.
    #[default]
    CacheControl,
    /// The targeted field at this index of the configured list (RFC 9213): `Cache-Control` and
    /// `Expires` are ignored by this cache.
    Targeted(usize),
}

/// The response directives that decide what this cache does with a response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Directives {
    /// Which field they came from.
    pub source: Source,
    /// `max-age`.
    pub max_age: Delta,
    /// `s-maxage`.
    pub s_maxage: Delta,
    /// `stale-while-revalidate`.
    pub stale_while_revalidate: Delta,
    /// `stale-if-error`.
    pub stale_if_error: Delta,
    /// `public`.
    pub public: bool,
    /// `private`.
    pub private: Qualified,
    /// `no-cache`.
    pub no_cache: Qualified,
    /// `no-store`.
    pub no_store: bool,
    /// `must-revalidate`.
    pub must_revalidate: bool,
    /// `proxy-revalidate`.
    pub proxy_revalidate: bool,
    /// `must-understand`.
    pub must_understand: bool,
}

impl Directives {
    /// The directives for this cache: from the first of `targeted` (RFC 9213 field names, in
    /// order of precedence) that is present with a valid, non-empty value, otherwise from
    /// `Cache-Control`.
    pub(crate) fn of_response(headers: &HeaderMap, targeted: &[HeaderName]) -> Directives {
        for (i, name) in targeted.iter().enumerate() {
            if let Some(mut d) = Self::parse(headers, name, true) {
                d.source = Source::Targeted(i);
                return d;
            }
        }
        Self::parse(headers, &header::CACHE_CONTROL, false).unwrap_or_default()
    }

    /// Parses every line of `name`. `strict` (a targeted field, a Structured Fields dictionary)
    /// returns `None` for a value that does not parse or is empty; `Cache-Control` is read
    /// leniently, as caches read it, and is `None` only when absent.
    fn parse(headers: &HeaderMap, name: &HeaderName, strict: bool) -> Option<Directives> {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        let mut d = Directives::default();
        let mut any = false;
        for line in lines {
            let text = match std::str::from_utf8(line.as_bytes()) {
                Ok(text) => std::borrow::Cow::Borrowed(text),
                Err(_) if strict => return None,
                // Cache-Control, leniently: a byte that is not UTF-8 spoils only the member it
                // is in (read as U+FFFD there, so that member is invalid), never the whole
                // line. Skipping the line lost `private` in `private, max-age=600<0xB8>` and
                // stored a private answer (found by the `cache_control` fuzz target).
                Err(_) => String::from_utf8_lossy(line.as_bytes()),
            };
            for member in split_members(&text) {
                let member = member.trim();
                if member.is_empty() {
                    if strict {
                        return None;
                    }
                    continue;
                }
                let (key, value) = match member.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                    None => (member, None),
                };
                if strict && !valid_sf_key(key) {
                    return None;
                }
                // A Structured Fields boolean: `?0` is false (absent), `?1` true (bare).
                let value = match value.as_deref() {
                    Some("?0") if strict => continue,
                    Some("?1") if strict => None,
                    _ => value,
                };
                any = true;
                let value = value.as_deref();
                match key.to_ascii_lowercase().as_str() {
                    "max-age" => d.max_age.add(value),
                    "s-maxage" => d.s_maxage.add(value),
                    "stale-while-revalidate" => d.stale_while_revalidate.add(value),
                    "stale-if-error" => d.stale_if_error.add(value),
                    "public" => d.public = true,
                    "private" => d.private.add(value),
                    "no-cache" => d.no_cache.add(value),
                    "no-store" => d.no_store = true,
                    "must-revalidate" => d.must_revalidate = true,
                    "proxy-revalidate" => d.proxy_revalidate = true,
                    "must-understand" => d.must_understand = true,
                    _ => {}
                }
            }
        }
        (any || !strict).then_some(d)
    }

    /// Whether a shared cache may store this response for, and serve it to, a request with
    /// credentials (RFC 9111 §3.5): `public`, `s-maxage` or `must-revalidate`.
    pub(crate) fn shared_with_credentials(&self) -> bool {
        self.public || self.s_maxage.present() || self.must_revalidate
    }

    /// Whether a stale copy may never be served without revalidation: `must-revalidate`,
    /// `proxy-revalidate`, `s-maxage` (which implies `proxy-revalidate` for a shared cache,
    /// §5.2.2.10) or a bare `no-cache`.
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate
            || self.proxy_revalidate
            || self.s_maxage.present()
            || self.no_cache.bare()
    }

    /// The freshness lifetime the response gives itself (§4.2.1): `s-maxage`, else `max-age`,
    /// else `Expires` minus `Date` (unless the directives came from a targeted field, which
    /// overrides `Expires` too). A bare `no-cache`, an invalid or repeated-and-different value,
    /// and an invalid `Expires` give zero (stale at once). `None` when nothing explicit is there.
    pub(crate) fn explicit_lifetime(
        &self,
        headers: &HeaderMap,
        date: SystemTime,
    ) -> Option<Duration> {
        if self.no_cache.bare() {
            return Some(Duration::ZERO);
        }
        for delta in [self.s_maxage, self.max_age] {
            match delta {
                Delta::Seconds(n) => return Some(Duration::from_secs(n)),
                Delta::Invalid => return Some(Duration::ZERO),
                Delta::Absent => {}
            }
        }
        if self.source != Source::CacheControl {
            return None;
        }
        let mut expires = headers.get_all(header::EXPIRES).iter();
        let first = expires.next()?;
        // Two different Expires lines: the response is considered stale (§4.2.1).
        if expires.any(|e| e != first) {
            return Some(Duration::ZERO);
        }
        match http_date(first.as_bytes()) {
            Some(at) => Some(at.duration_since(date).unwrap_or(Duration::ZERO)),
            // "0" and any other invalid date mean "already expired" (§5.3).
            None => Some(Duration::ZERO),
        }
    }
}

/// `max-stale` of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum MaxStale {
    /// Not there.
    #[default]
    Absent,
    /// Without a value: any staleness is acceptable.
    Any,
    /// Staleness up to this many seconds is acceptable.
    Seconds(u64),
}

/// The `Cache-Control` directives of a request (RFC 9111 §5.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RequestDirectives {
    /// `max-age`: the client does not want a response older than this.
    pub max_age: Delta,
    /// `max-stale`.
    pub max_stale: MaxStale,
    /// `min-fresh`: the client wants a response fresh for at least this much longer.
    pub min_fresh: Delta,
    /// `no-cache`: a stored response may be used only after validation.
    pub no_cache: bool,
    /// `no-store`: nothing of this exchange is stored.
    pub no_store: bool,
    /// `only-if-cached`: a stored response or `504`, never the origin.
    pub only_if_cached: bool,
}

/// What a request's directives make of a stored response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reuse {
    /// As the response's own freshness says (fresh: served; stale: revalidated or served stale
    /// within its windows).
    AsStored,
    /// Validated with the origin first (`no-cache`, too old for `max-age`, not fresh enough for
    /// `min-fresh`).
    Revalidate,
    /// Served although stale (`max-stale` allows it, and the response does not forbid it).
    ServeStale,
}

impl RequestDirectives {
    /// The directives of a request's `Cache-Control` lines. Unknown directives are ignored; a
    /// `max-age` or `min-fresh` that is not a non-negative integer is ignored too (it cannot
    /// say which responses the client would accept).
    pub(crate) fn of(headers: &HeaderMap) -> RequestDirectives {
        let mut r = RequestDirectives::default();
        for line in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = std::str::from_utf8(line.as_bytes()) else {
                continue;
            };
            for member in split_members(text) {
                let member = member.trim();
                let (key, value) = match member.split_once('=') {
                    Some((k, v)) => (k.trim(), Some(unquote(v.trim()))),
                    None => (member, None),
                };
                let value = value.as_deref();
                match key.to_ascii_lowercase().as_str() {
                    "max-age" => r.max_age.add(value),
                    "min-fresh" => r.min_fresh.add(value),
                    "max-stale" => {
                        let mut d = Delta::Absent;
                        d.add(value);
                        r.max_stale = match (value, d) {
                            (None, _) => MaxStale::Any,
                            (_, Delta::Seconds(n)) => MaxStale::Seconds(n),
                            _ => r.max_stale,
                        };
                    }
                    "no-cache" => r.no_cache = true,
                    "no-store" => r.no_store = true,
                    "only-if-cached" => r.only_if_cached = true,
                    _ => {}
                }
            }
        }
        r
    }

    /// Whether any directive could change how a stored response is used.
    pub(crate) fn affects_reuse(&self) -> bool {
        self.no_cache
            || matches!(self.max_age, Delta::Seconds(_))
            || matches!(self.min_fresh, Delta::Seconds(_))
            || self.max_stale != MaxStale::Absent
    }

    /// What to do with a stored response of `age` that is fresh until `fresh_until`, at `now`;
    /// `forbids_stale`: its own directives forbid serving it stale (see
    /// [`Directives::forbids_stale`]).
    pub(crate) fn reuse(
        &self,
        age: Duration,
        fresh_until: SystemTime,
        now: SystemTime,
        forbids_stale: impl FnOnce() -> bool,
    ) -> Reuse {
        if self.no_cache {
            return Reuse::Revalidate;
        }
        if let Delta::Seconds(n) = self.max_age {
            if age > Duration::from_secs(n) {
                return Reuse::Revalidate;
            }
        }
        match fresh_until.duration_since(now) {
            Ok(left) if !left.is_zero() => {
                if let Delta::Seconds(n) = self.min_fresh {
                    if left < Duration::from_secs(n) {
                        return Reuse::Revalidate;
                    }
                }
                Reuse::AsStored
            }
            _ => {
                let stale_for = now.duration_since(fresh_until).unwrap_or(Duration::ZERO);
                let accepted = match self.max_stale {
                    MaxStale::Absent => false,
                    MaxStale::Any => true,
                    MaxStale::Seconds(n) => stale_for <= Duration::from_secs(n),
                };
                // `min-fresh` asks for a fresh response: a stale one never satisfies it.
                if accepted
                    && !matches!(self.min_fresh, Delta::Seconds(n) if n > 0)
                    && !forbids_stale()
                {
                    Reuse::ServeStale
                } else {
                    Reuse::AsStored
                }
            }
        }
    }
}

/// `Date` of a response, or `received` when it has none or an invalid one.
pub(crate) fn date_of(headers: &HeaderMap, received: SystemTime) -> SystemTime {
    headers
        .get(header::DATE)
        .and_then(|d| http_date(d.as_bytes()))
        .unwrap_or(received)
}

/// The age a response already has when it arrives (§4.2.3's `corrected_initial_age`): the
/// larger of its apparent age (`received - Date`, in whole seconds) and its `Age` plus the time the request took
/// (`received - sent`). An `Age` that is not a non-negative integer is ignored; of a list, the
/// first member counts (§5.1).
pub(crate) fn initial_age(headers: &HeaderMap, sent: SystemTime, received: SystemTime) -> Duration {
    let date = date_of(headers, received);
    // `Date` has whole seconds: compare whole seconds, or a response received in the second
    // its `Date` names would look up to a second old (a `max-age=1` response stale at once).
    let whole = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let apparent = Duration::from_secs(whole(received).saturating_sub(whole(date)));
    let age = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .map(str::trim)
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .map(|v| {
            v.parse::<u64>()
                .unwrap_or(MAX_DELTA_SECONDS)
                .min(MAX_DELTA_SECONDS)
        })
        .unwrap_or(0);
    let delay = received.duration_since(sent).unwrap_or(Duration::ZERO);
    apparent.max(Duration::from_secs(age) + delay)
}

/// Statuses that are heuristically cacheable (RFC 9110 §15.1), minus `206` (this cache stores
/// only complete responses).
pub(crate) fn heuristically_cacheable(status: u16) -> bool {
    matches!(
        status,
        200 | 203 | 204 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses whose caching requirements this cache implements, for `must-understand`
/// (§5.2.2.3): those it may store, heuristically or with explicit freshness.
pub(crate) fn understood(status: u16) -> bool {
    heuristically_cacheable(status) || matches!(status, 302 | 303 | 307)
}

/// A heuristic freshness lifetime (§4.2.2): `fraction` of the time between `Last-Modified` and
/// `Date`, at most `max`. Only for a response without explicit freshness whose status is
/// heuristically cacheable or that says `public`; `None` without a usable `Last-Modified`.
pub(crate) fn heuristic_lifetime(
    headers: &HeaderMap,
    status: u16,
    public: bool,
    date: SystemTime,
    fraction: f64,
    max: Duration,
) -> Option<Duration> {
    if fraction <= 0.0 || !(heuristically_cacheable(status) || public) {
        return None;
    }
    let modified = headers
        .get(header::LAST_MODIFIED)
        .and_then(|v| http_date(v.as_bytes()))?;
    let since = date.duration_since(modified).ok()?;
    Some(since.mul_f64(fraction.min(1.0)).min(max))
}

fn http_date(v: &[u8]) -> Option<SystemTime> {
    httpdate::parse_http_date(std::str::from_utf8(v).ok()?.trim()).ok()
}

/// Splits a directive list on `,` and `;` outside quoted strings. (`;` too, as Pingora's parser
/// does: `private; max-age=60` is read as two directives, which errs towards not storing.)
fn split_members(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for (i, &b) in bytes.iter().enumerate() {
        if escaped {
            escaped = false;
            continue;
        }
        match b {
            b'\\' if quoted => escaped = true,
            b'"' => quoted = !quoted,
            b',' | b';' if !quoted => {
                out.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&text[start..]);
    out.into_iter()
}

/// A quoted-string's content, unescaped; other values as they are.
fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_string(),
    }
}

/// A Structured Fields dictionary key (RFC 8941 §3.2): lower-case letter or `*`, then lower-case
/// letters, digits, `_`, `-`, `.`, `*`.
fn valid_sf_key(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == b'*')
        && b.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn lifetime(lines: &[(&str, &str)]) -> Option<Duration> {
        let h = headers(lines);
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        Directives::of_response(&h, &[]).explicit_lifetime(&h, date_of(&h, now))
    }

    #[test]
    fn s_maxage_over_max_age_over_expires() {
        let date = "Fri, 15 Jan 2027 08:00:00 GMT";
        let later = "Fri, 15 Jan 2027 09:00:00 GMT";
        let secs = |n| Some(Duration::from_secs(n));
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=60, s-maxage=30"),
                ("date", date),
                ("expires", later)
            ]),
            secs(30)
        );
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=60"),
                ("date", date),
                ("expires", later)
            ]),
            secs(60)
        );
        assert_eq!(lifetime(&[("date", date), ("expires", later)]), secs(3600));
        assert_eq!(lifetime(&[("date", date)]), None);
    }

    #[test]
    fn invalid_negative_and_conflicting_values_are_stale() {
        let zero = Some(Duration::ZERO);
        for cc in [
            "max-age=-1",
            "max-age=abc",
            "max-age=",
            "max-age",
            "max-age=60, max-age=120",
            "s-maxage=1.5, max-age=60",
        ] {
            assert_eq!(lifetime(&[("cache-control", cc)]), zero, "{cc}");
        }
        // The same value twice is one value; huge values are capped.
        assert_eq!(
            lifetime(&[
                ("cache-control", "max-age=60"),
                ("cache-control", "max-age=60")
            ]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            lifetime(&[("cache-control", "max-age=99999999999999999999999")]),
            Some(Duration::from_secs(MAX_DELTA_SECONDS))
        );
        // Expires: unparseable, "0", in the past, two different values.
        let date = ("date", "Fri, 15 Jan 2027 08:00:00 GMT");
        for e in ["0", "tomorrow", "Fri, 15 Jan 2027 07:00:00 GMT"] {
            assert_eq!(lifetime(&[date, ("expires", e)]), zero, "{e}");
        }
        assert_eq!(
            lifetime(&[
                date,
                ("expires", "Fri, 15 Jan 2027 09:00:00 GMT"),
                ("expires", "Fri, 15 Jan 2027 10:00:00 GMT")
            ]),
            zero
        );
    }

    #[test]
    fn a_targeted_field_overrides_cache_control_and_expires() {
        let targeted = [HeaderName::from_static("cdn-cache-control")];
        let h = headers(&[
            ("cache-control", "private"),
            ("cdn-cache-control", "max-age=600"),
            ("expires", "0"),
        ]);
        let d = Directives::of_response(&h, &targeted);
        assert_eq!(d.source, Source::Targeted(0));
        assert!(!d.private.bare());
        let now = SystemTime::now();
        assert_eq!(d.explicit_lifetime(&h, now), Some(Duration::from_secs(600)));
        // Invalid (not a Structured Fields dictionary) or empty: Cache-Control applies.
        for bad in ["Max-Age=600", "max-age=600,", ""] {
            let h = headers(&[("cache-control", "max-age=5"), ("cdn-cache-control", bad)]);
            let d = Directives::of_response(&h, &targeted);
            assert_eq!(d.source, Source::CacheControl, "{bad:?}");
            assert_eq!(d.max_age, Delta::Seconds(5));
        }
        // Not on the list: ignored.
        let d = Directives::of_response(&h, &[]);
        assert!(d.private.bare());
    }

    #[test]
    fn qualified_and_bare_forms() {
        let h = headers(&[(
            "cache-control",
            "private=\"x-user, x-id\", no-cache=\"set-cookie2\"",
        )]);
        let d = Directives::of_response(&h, &[]);
        assert_eq!(d.private.fields(), ["x-user", "x-id"]);
        assert_eq!(d.no_cache.fields(), ["set-cookie2"]);
        let h = headers(&[("cache-control", "private=\"x\", private")]);
        assert!(Directives::of_response(&h, &[]).private.bare());
        // A comma inside quotes does not split directives.
        let h = headers(&[("cache-control", "no-cache=\"a, public\"")]);
        assert!(!Directives::of_response(&h, &[]).public);
    }

    #[test]
    fn initial_age_takes_the_larger_of_apparent_and_corrected_age() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let sent = t0;
        let received = t0 + Duration::from_secs(2);
        let date = httpdate::fmt_http_date(t0 - Duration::from_secs(10));
        let h = headers(&[("date", &date), ("age", "5")]);
        assert_eq!(initial_age(&h, sent, received), Duration::from_secs(12));
        let h = headers(&[("date", &date), ("age", "100, 3")]);
        assert_eq!(initial_age(&h, sent, received), Duration::from_secs(102));
        let h = headers(&[("age", "-5")]);
        assert_eq!(initial_age(&h, sent, received), Duration::from_secs(2));
    }

    #[test]
    fn request_directives_decide_reuse() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let of = |cc: &str| RequestDirectives::of(&headers(&[("cache-control", cc)]));
        let secs = Duration::from_secs;
        // Fresh for 60 s more, 30 s old.
        let fresh = |cc: &str| of(cc).reuse(secs(30), t + secs(60), t, || false);
        assert_eq!(fresh(""), Reuse::AsStored);
        assert_eq!(fresh("no-cache"), Reuse::Revalidate);
        assert_eq!(fresh("max-age=10"), Reuse::Revalidate);
        assert_eq!(fresh("max-age=30"), Reuse::AsStored);
        assert_eq!(fresh("max-age=0"), Reuse::Revalidate);
        assert_eq!(fresh("min-fresh=61"), Reuse::Revalidate);
        assert_eq!(fresh("min-fresh=60"), Reuse::AsStored);
        assert_eq!(fresh("max-age=abc"), Reuse::AsStored);
        // Stale for 20 s.
        let stale = |cc: &str, forbids: bool| of(cc).reuse(secs(90), t - secs(20), t, || forbids);
        assert_eq!(stale("", false), Reuse::AsStored);
        assert_eq!(stale("max-stale", false), Reuse::ServeStale);
        assert_eq!(stale("max-stale=30", false), Reuse::ServeStale);
        assert_eq!(stale("max-stale=10", false), Reuse::AsStored);
        assert_eq!(stale("max-stale", true), Reuse::AsStored);
        assert_eq!(stale("max-stale, min-fresh=5", false), Reuse::AsStored);
        assert_eq!(stale("max-stale, no-cache", false), Reuse::Revalidate);
        let all = of("no-store, only-if-cached");
        assert!(all.no_store && all.only_if_cached && !all.affects_reuse());
    }

    #[test]
    fn heuristic_is_a_bounded_fraction_of_the_last_modified_age() {
        let date = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let lm = httpdate::fmt_http_date(date - Duration::from_secs(10_000));
        let h = headers(&[("last-modified", &lm)]);
        let max = Duration::from_secs(600);
        assert_eq!(
            heuristic_lifetime(&h, 200, false, date, 0.1, max),
            Some(Duration::from_secs(600))
        );
        assert_eq!(
            heuristic_lifetime(&h, 200, false, date, 0.01, max),
            Some(Duration::from_secs(100))
        );
        assert_eq!(heuristic_lifetime(&h, 302, false, date, 0.1, max), None);
        assert_eq!(
            heuristic_lifetime(&h, 302, true, date, 0.01, max),
            Some(Duration::from_secs(100))
        );
        assert_eq!(heuristic_lifetime(&h, 200, false, date, 0.0, max), None);
        assert_eq!(
            heuristic_lifetime(&HeaderMap::new(), 200, false, date, 0.1, max),
            None
        );
    }
}
