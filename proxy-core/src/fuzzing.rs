//! Fuzzing entry points: one function per parser of outside input, each asserting the
//! parser's invariants (beyond "does not panic").
//!
//! The cargo-fuzz targets in `fuzz/fuzz_targets/` call these functions, and the stable
//! regression test `proxy-core/tests/fuzz_corpus.rs` replays every committed seed and every
//! input a fuzzer once crashed on through the same functions, so CI checks the same invariants
//! without a nightly toolchain. Each function takes raw fuzzer bytes, never fails, and panics
//! only when an invariant is broken (that panic is the finding).
//!
//! Not part of the library's API: hidden from the docs, and subject to change.

use crate::acme;
use crate::cache::{self, disk};
use crate::client_ip::{canonical, ClientIpResolver, IpNet, TrustedProxies, CF_CONNECTING_IP};
use crate::compression::{self, Encoding};
use crate::config::{valid_hostname, Config, ZoneSettings};
use crate::headers::X_FORWARDED_FOR;
use crate::routing::{path_is_clean, strip_port, RouteError, RouteTable};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use pingora_cache::{CacheMeta, RespCacheable};
use pingora_http::{RequestHeader, ResponseHeader};
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The names of the fuzz targets, which are also the corpus directory names.
pub const TARGETS: &[&str] = &[
    "config",
    "routing",
    "client_ip",
    "accept_encoding",
    "cache_control",
    "disk_entry",
    "acme_path",
];

/// Lines of `data` split on `\n` (a trailing `\r` is kept: it is part of the input).
fn lines(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    data.split(|b| *b == b'\n')
}

// ---------------------------------------------------------------------------------------------
// config

/// `Config::from_toml_str` on `data` (UTF-8 only; anything else is skipped, as TOML must be
/// UTF-8), relative paths resolved against `base_dir`.
///
/// Invariants: no panic; an error list is never empty and every entry has a field path and a
/// message; a valid config has valid host names, routes whose groups exist and whose prefixes
/// start with `/`, and compiles to a [`RouteTable`] that sends every host of every site to
/// that site and every route prefix to that route.
pub fn config(data: &[u8], base_dir: &Path) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, base_dir) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without entries");
            for e in &errors.0 {
                assert!(!e.path.is_empty(), "error without a field path: {e:?}");
                assert!(!e.message.is_empty(), "error without a message: {e:?}");
            }
            let _ = errors.to_string();
        }
        Ok(config) => check_config(&config),
    }
}

fn check_config(config: &Config) {
    let table = match config.route_table() {
        Ok(t) => t,
        Err(e) => panic!("a validated config that does not route: {e}"),
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, site) in config.sites.iter().enumerate() {
        for host in &site.hosts {
            assert!(valid_hostname(host), "invalid host accepted: {host:?}");
            let first = *seen.entry(host.as_str()).or_insert(i);
            assert_eq!(table.site_for_host(host), Some(first), "host {host:?}");
            let upper = host.to_ascii_uppercase();
            assert_eq!(table.site_for_host(&format!("{upper}.:443")), Some(first));
        }
        for (j, route) in site.routes.iter().enumerate() {
            assert!(route.prefix.starts_with('/'), "prefix {:?}", route.prefix);
            assert!(route.upstream < config.upstreams.len(), "route {i}/{j}");
            let d = table.decide_in_site(i, &route.prefix);
            assert_eq!(d.map(|d| (d.route, d.upstream)), Ok((j, route.upstream)));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// routing

const ROUTING_CONFIG: &str = r#"
[listeners]
http_proxy = ["127.0.0.1:8080"]
[upstreams.web]
backends = ["127.0.0.1:3001"]
[upstreams.api]
backends = ["127.0.0.1:8001"]
[upstreams.voice]
backends = ["127.0.0.1:8002"]
[upstreams.studio]
backends = ["127.0.0.1:3003"]
[upstreams.socket]
backends = ["127.0.0.1:8004"]
[[sites]]
hosts = ["galion.app", "www.galion.app"]
routes = [
  { path = "/", upstream = "web" },
  { path = "/api/", upstream = "api" },
  { path = "/api/v1/voice/", upstream = "voice" },
  { path = "/voice/", upstream = "voice" },
]
[[sites]]
hosts = ["galion.studio", "localhost"]
routes = [
  { path = "/", upstream = "studio" },
  { path = "/socket.io/", upstream = "socket" },
  { path = "/api", upstream = "api" },
]
[[sites]]
hosts = ["api.galion.studio"]
routes = [{ path = "/v2/", upstream = "api" }]
"#;

/// The config and table the routing target runs against (the two production sites, and one
/// without a `/` route so that `NoRoute` is reachable).
pub fn routing_fixture() -> &'static (Config, RouteTable) {
    static FIXTURE: OnceLock<(Config, RouteTable)> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        match Config::from_toml_str(ROUTING_CONFIG, Path::new(".")) {
            Ok(config) => match config.route_table() {
                Ok(table) => (config, table),
                Err(e) => panic!("the routing fixture does not route: {e}"),
            },
            // A fixed, tested string: failing here is a bug in this module.
            Err(e) => panic!("the routing fixture config is invalid: {e}"),
        }
    })
}

/// Host and path routing: `data` is `host \n path` (UTF-8; the path is everything after the
/// first newline).
///
/// Invariants: [`strip_port`] returns a prefix of its input and only removes a `:digits` port
/// (or what follows a bracketed IPv6 literal); [`RouteTable::decide`] is deterministic and
/// agrees with a naive scan of the config (case-insensitive host without port or final dot,
/// longest prefix that the path starts with); [`path_is_clean`] agrees with a reference that
/// percent-decodes each segment and refuses `.`, `..`, `/` and `\`.
pub fn routing(data: &[u8]) {
    let (host, path) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let (Ok(host), Ok(path)) = (std::str::from_utf8(host), std::str::from_utf8(path)) else {
        return;
    };
    let (config, table) = routing_fixture();

    for h in [host, path] {
        let stripped = strip_port(h);
        assert!(h.starts_with(stripped), "strip_port({h:?}) = {stripped:?}");
        let rest = &h[stripped.len()..];
        if h.starts_with('[') && h.contains(']') {
            assert!(stripped.ends_with(']'), "strip_port({h:?}) = {stripped:?}");
        } else if !rest.is_empty() {
            assert!(rest.starts_with(':'), "strip_port({h:?}) = {stripped:?}");
            assert!(rest[1..].bytes().all(|b| b.is_ascii_digit()), "{h:?}");
        }
    }

    let got = table.decide(host, path);
    assert_eq!(got, table.decide(host, path), "not deterministic");
    let name = strip_port(host);
    let name = name.strip_suffix('.').unwrap_or(name);
    let site = config
        .sites
        .iter()
        .position(|s| s.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)));
    match (site, got) {
        (None, Err(RouteError::UnknownHost)) => {}
        (Some(site), got) => {
            let routes = &config.sites[site].routes;
            let best = routes
                .iter()
                .enumerate()
                .filter(|(_, r)| path.starts_with(r.prefix.as_str()))
                .max_by_key(|(_, r)| r.prefix.len());
            match (best, got) {
                (None, Err(RouteError::NoRoute { site: s })) => assert_eq!(s, site),
                (Some((j, r)), Ok(d)) => {
                    assert_eq!((d.site, d.route, d.upstream), (site, j, r.upstream));
                    assert!(path.starts_with(routes[d.route].prefix.as_str()));
                }
                (best, got) => panic!("{host:?} {path:?}: got {got:?}, expected {best:?}"),
            }
        }
        (None, got) => panic!("{host:?}: unknown host routed: {got:?}"),
    }

    assert_eq!(
        path_is_clean(path),
        reference_path_is_clean(path),
        "path_is_clean({path:?})"
    );
}

/// One pass of percent-decoding (`%XX` with two hex digits; anything else is literal), as an
/// upstream server does it.
fn percent_decode(seg: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(seg.len());
    let mut i = 0;
    while i < seg.len() {
        if seg[i] == b'%' && i + 2 < seg.len() {
            if let (Some(h), Some(l)) = (hex(seg[i + 1]), hex(seg[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(seg[i]);
        i += 1;
    }
    out
}

fn reference_path_is_clean(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('\\')
        && path.split('/').all(|seg| {
            let d = percent_decode(seg.as_bytes());
            d != b"." && d != b".." && !d.contains(&b'/') && !d.contains(&b'\\')
        })
}

// ---------------------------------------------------------------------------------------------
// client IP

const CLIENT_IP_PEERS: &[&str] = &[
    "10.1.2.3",
    "::ffff:10.9.9.9",
    "2400:cb00::1",
    "192.168.7.7",
    "203.0.113.9",
    "::ffff:198.51.100.1",
    "2001:db8::5",
    "127.0.0.1",
];

const CLIENT_IP_TRUSTED: &[&str] = &[
    "10.0.0.0/8",
    "2400:cb00::/32",
    "::ffff:192.168.0.0/112",
    "127.0.0.1/32",
];

/// Client IP resolution: `data` is one flag byte (bits 0-2: which peer of a fixed list,
/// bit 3: no `CF-Connecting-IP` header belief, bit 4: the first line is a comma-separated list
/// of trusted networks instead of the fixed set, bit 5: the first line is the peer address),
/// then header lines: `cf:VALUE` is a `CF-Connecting-IP` line, anything else an
/// `X-Forwarded-For` line.
///
/// Invariants: [`TrustedProxies::contains`] agrees with `ipnet` on the documented rule (IPv4
/// and IPv4-mapped addresses match IPv4 nets and nets inside `::ffff:0:0/96`, other IPv6
/// addresses IPv6 nets); [`ClientIpResolver::resolve`] returns a canonical address, the peer
/// itself when it is untrusted, and otherwise agrees with a reference walk of the headers;
/// [`ClientIpResolver::forwarded_for`] ends with the canonical peer and is only the peer for
/// an untrusted one.
pub fn client_ip(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut lines = lines(rest).peekable();
    let mut nets: Vec<IpNet> = CLIENT_IP_TRUSTED
        .iter()
        .filter_map(|n| n.parse().ok())
        .collect();
    if flags & 0x10 != 0 {
        let first = lines.next().unwrap_or_default();
        nets = String::from_utf8_lossy(first)
            .split(',')
            .filter_map(|n| n.trim().parse().ok())
            .collect();
    }
    let peer: IpAddr = if flags & 0x20 != 0 {
        let first = lines.next().unwrap_or_default();
        match std::str::from_utf8(first).ok().and_then(|s| s.parse().ok()) {
            Some(ip) => ip,
            None => return,
        }
    } else {
        match CLIENT_IP_PEERS[usize::from(flags & 7)].parse() {
            Ok(ip) => ip,
            Err(_) => return,
        }
    };
    let header = (flags & 0x08 == 0).then_some(CF_CONNECTING_IP);
    let mut headers = HeaderMap::new();
    for line in lines {
        let (name, value) = match line.strip_prefix(b"cf:") {
            Some(v) => (CF_CONNECTING_IP, v),
            None => (X_FORWARDED_FOR, line),
        };
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(name, v);
        }
    }

    let trusted = TrustedProxies::new(nets.clone());
    for ip in std::iter::once(peer).chain(xff_hops(&headers).into_iter().flatten().flatten()) {
        assert_eq!(
            trusted.contains(ip),
            reference_contains(&nets, ip),
            "contains({ip}) over {nets:?}"
        );
    }

    let resolver = ClientIpResolver::new(trusted.clone(), header.clone());
    let got = resolver.resolve(peer, &headers);
    assert_eq!(canonical(got), got, "not canonical: {got}");
    let peer_c = canonical(peer);
    let expected = if !trusted.contains(peer_c) {
        peer_c
    } else {
        reference_resolve(&trusted, peer_c, header.as_ref(), &headers)
    };
    assert_eq!(got, expected, "resolve({peer}) with {headers:?}");

    let xff = resolver.forwarded_for(peer, &headers);
    assert!(xff.ends_with(&peer_c.to_string()), "{xff:?}");
    if !trusted.contains(peer_c) {
        assert_eq!(xff, peer_c.to_string());
    }
    assert!(
        HeaderValue::from_str(&xff).is_ok(),
        "not a header value: {xff:?}"
    );
}

fn reference_contains(nets: &[IpNet], ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(a) => nets.iter().any(|n| match n {
            IpNet::V4(n) => n.contains(&a),
            IpNet::V6(n) => {
                n.prefix_len() >= 96
                    && n.network().to_ipv4_mapped().is_some()
                    && n.contains(&a.to_ipv6_mapped())
            }
        }),
        IpAddr::V6(a) => nets.iter().any(|n| match n {
            IpNet::V4(_) => false,
            IpNet::V6(n) => n.contains(&a),
        }),
    }
}

/// Every `X-Forwarded-For` hop in order; a line that is not text is `None`, an element that is
/// not an address `Some(None)`.
fn xff_hops(headers: &HeaderMap) -> Vec<Option<Option<IpAddr>>> {
    let mut out = Vec::new();
    for line in headers.get_all(X_FORWARDED_FOR) {
        match line.to_str() {
            Err(_) => out.push(None),
            Ok(text) => {
                for hop in text.split(',') {
                    let hop = hop.trim_matches([' ', '\t']);
                    if !hop.is_empty() {
                        out.push(Some(hop.parse::<IpAddr>().ok()));
                    }
                }
            }
        }
    }
    out
}

fn reference_resolve(
    trusted: &TrustedProxies,
    peer: IpAddr,
    header: Option<&HeaderName>,
    headers: &HeaderMap,
) -> IpAddr {
    if let Some(name) = header {
        let values: Vec<&HeaderValue> = headers.get_all(name).iter().collect();
        if let [only] = values[..] {
            if let Some(ip) = only
                .to_str()
                .ok()
                .and_then(|s| s.trim_matches([' ', '\t']).parse::<IpAddr>().ok())
            {
                return canonical(ip);
            }
        }
    }
    let mut last = peer;
    for hop in xff_hops(headers).into_iter().rev() {
        let Some(Some(ip)) = hop else {
            return last;
        };
        let ip = canonical(ip);
        if !trusted.contains(ip) {
            return ip;
        }
        last = ip;
    }
    last
}

// ---------------------------------------------------------------------------------------------
// Accept-Encoding

/// `Accept-Encoding` negotiation: `data` is the header value; its lines (split on `\n`) are
/// also tried as several header lines.
///
/// Invariants: [`compression::negotiate`] agrees with a reference written from RFC 9110
/// §12.5.3 and the documented rules (it only answers a coding the client listed, or covered
/// with `*`, with a weight above zero); several header lines mean the same as one
/// comma-joined line; the cache's variant key is the negotiated token.
pub fn accept_encoding(data: &[u8]) {
    let got = compression::negotiate(Some(data));
    assert_eq!(got, reference_negotiate(&[data]), "negotiate({data:?})");
    assert_eq!(cache::normalise_accept_encoding(data), got.as_str());
    if got != Encoding::Identity {
        let listed = data
            .split(|b| *b == b',')
            .filter_map(|e| e.split(|b| *b == b';').next())
            .map(|c| c.trim_ascii().to_ascii_lowercase())
            .any(|c| {
                c == got.as_str().as_bytes()
                    || c == b"*"
                    || (got == Encoding::Gzip && c == b"x-gzip")
            });
        assert!(listed, "{got} chosen but not listed in {data:?}");
    }

    let parts: Vec<&[u8]> = lines(data).collect();
    let mut headers = HeaderMap::new();
    for part in &parts {
        match HeaderValue::from_bytes(part) {
            Ok(v) => headers.append(http::header::ACCEPT_ENCODING, v),
            Err(_) => return,
        };
    }
    let joined = parts.join(&b","[..]);
    assert_eq!(
        compression::negotiate_headers(&headers),
        compression::negotiate(Some(&joined)),
        "lines {parts:?}"
    );
}

/// A qvalue (`0`, `0.x`, `1`, `1.0`, up to three decimals) as a float; `None` if malformed.
fn reference_qvalue(v: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(v).ok()?;
    let (int, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text, None),
    };
    if int != "0" && int != "1" {
        return None;
    }
    if let Some(f) = frac {
        if f.len() > 3 || !f.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if int == "1" && f.bytes().any(|b| b != b'0') {
            return None;
        }
    }
    text.parse::<f64>().ok()
}

fn reference_negotiate(values: &[&[u8]]) -> Encoding {
    // Lowest weight of each listed coding (a malformed weight counts as 0).
    let mut weights: HashMap<&'static str, f64> = HashMap::new();
    for value in values {
        for element in value.split(|b| *b == b',') {
            let mut parts = element.split(|b| *b == b';');
            let coding = parts
                .next()
                .unwrap_or_default()
                .trim_ascii()
                .to_ascii_lowercase();
            let key = match coding.as_slice() {
                b"br" => "br",
                b"gzip" | b"x-gzip" => "gzip",
                b"*" => "*",
                _ => continue,
            };
            let mut q: f64 = 1.0;
            for param in parts {
                let mut kv = param.splitn(2, |b| *b == b'=');
                let name = kv.next().unwrap_or_default().trim_ascii();
                let value = kv.next().unwrap_or_default().trim_ascii();
                if name.eq_ignore_ascii_case(b"q") {
                    q = q.min(reference_qvalue(value).unwrap_or(0.0));
                }
            }
            let w = weights.entry(key).or_insert(q);
            *w = w.min(q);
        }
    }
    let star = weights.get("*").copied();
    let weight = |k: &str| weights.get(k).copied().or(star).unwrap_or(0.0);
    let (br, gzip) = (weight("br"), weight("gzip"));
    if br <= 0.0 && gzip <= 0.0 {
        Encoding::Identity
    } else if br >= gzip {
        Encoding::Brotli
    } else {
        Encoding::Gzip
    }
}

// ---------------------------------------------------------------------------------------------
// Cache-Control

/// The zone settings the cache-control target decides with (the `api` zone's defaults).
pub fn cache_control_zone() -> ZoneSettings {
    ZoneSettings {
        name: "api".into(),
        path: PathBuf::from("/nonexistent"),
        size: 1 << 30,
        memory_size: 1 << 27,
        max_object_size: 1 << 24,
        default_ttl: Duration::from_secs(600),
        min_ttl: Duration::from_secs(60),
        max_ttl: Duration::from_secs(3600),
        stale_while_revalidate: Duration::from_secs(30),
        stale_if_error: Duration::from_secs(600),
        freshness: cache::FreshnessMode::Policy,
        heuristic_percent: 0,
        heuristic_max: Duration::from_secs(3600),
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

// ---------------------------------------------------------------------------------------------
// disk entries

fn check_decoded(file: &[u8], expect: &[u8; 16]) {
    let Ok((footer, range)) = disk::decode(file, expect) else {
        return;
    };
    let footer_end = file.len() - disk::TAIL_LEN;
    let tail = &file[footer_end..];
    assert_eq!(&tail[8..], disk::MAGIC);
    let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    assert_eq!(
        crc32fast::hash(&file[..footer_end]),
        stored,
        "bad checksum accepted"
    );
    assert_eq!(&footer.key, expect);
    assert_eq!(range.start, 0);
    assert_eq!(range.end as u64, footer.body_len);
    let footer_bytes = &file[range.end..footer_end];
    assert_eq!(
        u32::from_le_bytes([tail[4], tail[5], tail[6], tail[7]]) as usize,
        footer_bytes.len()
    );
    // The footer read back is the footer written, byte for byte (text fields are stored as
    // UTF-8, so a lossy decode is only possible for files this proxy did not write).
    let reencoded = disk::encode_footer(&footer);
    if !footer.user_tag.contains('\u{fffd}') && !footer.url.contains('\u{fffd}') {
        assert_eq!(reencoded, footer_bytes, "footer does not round-trip");
    }
    // A hit deserializes the meta; it must fail cleanly on garbage, and a memory hit must give
    // the same meta as the full parse.
    memory_hit_meta(&footer.meta);
}

/// A memory hit's meta (`MemObject::meta`: rebuilt from parsed fields, or the stored internal
/// half with the header parsed once) must be exactly what a full parse of the stored bytes
/// gives, on every hit; and it gives a meta whenever the full parse does.
fn memory_hit_meta(stored: &(Vec<u8>, Vec<u8>)) {
    let Ok(full) = CacheMeta::deserialize(&stored.0, &stored.1) else {
        return;
    };
    let object = cache::memory::MemObject::new(stored.clone(), bytes::Bytes::new());
    for hit in 0..2 {
        let fast = object.meta().unwrap_or_else(|| {
            panic!("hit {hit}: the full parse succeeded, the fast path gave none")
        });
        assert_eq!(
            fast.serialize().ok(),
            full.serialize().ok(),
            "hit {hit}: the fast path differs from the full parse"
        );
        assert_eq!(fast.headers(), full.headers(), "hit {hit}: header");
    }
}

/// The on-disk entry decoder: `data` is a whole entry file, decoded as it is and again with
/// its magic and checksum repaired (so that the fuzzer reaches the footer parser), and its
/// footer is also parsed the way the start-up scan does (tail and footer, no checksum).
///
/// Invariants: no panic; an accepted entry has the right magic, a matching checksum, the
/// expected key, a body range that is exactly the bytes before the footer, and a footer that
/// re-encodes to the bytes on disk; the meta parser fails cleanly on anything, and a memory
/// hit's meta is exactly the full parse's.
pub fn disk_entry(data: &[u8]) {
    // The key the caller expects: the footer's own key if there is one (so a valid entry is
    // accepted), and a fixed other key (so `WrongKey` is reached).
    let own_key = footer_key(data).unwrap_or([0; 16]);
    check_decoded(data, &own_key);
    check_decoded(data, &[0xa5; 16]);

    // The start-up scan: tail and footer only, no checksum.
    if data.len() >= disk::TAIL_LEN {
        let tail = &data[data.len() - disk::TAIL_LEN..];
        if let Ok(n) = disk::footer_len_from_tail(tail) {
            let end = data.len() - disk::TAIL_LEN;
            if let Some(start) = end.checked_sub(n) {
                if let Ok(footer) = disk::decode_footer(&data[start..end]) {
                    memory_hit_meta(&footer.meta);
                }
            }
        }
    }

    // The same bytes with the magic and checksum made right.
    if data.len() >= disk::TAIL_LEN {
        let mut fixed = data.to_vec();
        let end = fixed.len() - disk::TAIL_LEN;
        let crc = crc32fast::hash(&fixed[..end]);
        fixed[end..end + 4].copy_from_slice(&crc.to_le_bytes());
        fixed[end + 8..].copy_from_slice(disk::MAGIC);
        let key = footer_key(&fixed).unwrap_or([0; 16]);
        check_decoded(&fixed, &key);
    }
}

/// The key field of an entry's footer, if the tail points at one.
fn footer_key(file: &[u8]) -> Option<[u8; 16]> {
    let end = file.len().checked_sub(disk::TAIL_LEN)?;
    let t = &file[end..];
    let n = u32::from_le_bytes([t[4], t[5], t[6], t[7]]) as usize;
    let start = end.checked_sub(n)?;
    file.get(start..start + 16)?.try_into().ok()
}

// ---------------------------------------------------------------------------------------------
// ACME webroot

/// A webroot with challenge files, a symlink inside it, a symlink out of it, a directory and
/// an oversized file, and the runtime [`acme::read_challenge`] runs on.
#[derive(Debug)]
pub struct AcmeFixture {
    webroot: PathBuf,
    /// Token → the bytes that must be served for it; any other token gets nothing.
    served: HashMap<&'static str, &'static [u8]>,
    runtime: tokio::runtime::Runtime,
}

impl AcmeFixture {
    /// Creates the webroot under `dir` (an empty directory the caller owns) and a
    /// secret file beside it, outside the webroot.
    pub fn new(dir: &Path) -> std::io::Result<AcmeFixture> {
        let webroot = dir.join("webroot");
        let challenges = webroot.join(".well-known").join("acme-challenge");
        std::fs::create_dir_all(&challenges)?;
        std::fs::write(dir.join("secret"), b"outside the webroot")?;
        std::fs::write(webroot.join("not-a-challenge"), b"webroot file")?;
        std::fs::write(
            challenges.join("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"),
            b"c1",
        )?;
        std::fs::write(challenges.join("tok_2-x"), b"c2")?;
        std::fs::write(challenges.join("big"), vec![b'x'; 20_000])?;
        std::fs::create_dir_all(challenges.join("subdir"))?;
        std::fs::write(challenges.join("subdir").join("inner"), b"nested")?;
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.join("secret"), challenges.join("escape"))?;
            std::os::unix::fs::symlink(challenges.join("tok_2-x"), challenges.join("alias"))?;
        }
        let mut served: HashMap<&'static str, &'static [u8]> = HashMap::new();
        served.insert("LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0", b"c1");
        served.insert("tok_2-x", b"c2");
        #[cfg(unix)]
        served.insert("alias", b"c2");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(AcmeFixture {
            webroot,
            served,
            runtime,
        })
    }

    /// The webroot directory.
    pub fn webroot(&self) -> &Path {
        &self.webroot
    }
}

/// The ACME webroot path check: `data` is a request target (`/.well-known/acme-challenge/…`);
/// it is tried as the raw path and as the path `http::Uri` parses from it, as the service
/// sees it.
///
/// Invariants: a token that [`acme::valid_token`] accepts is one plain path component, so it
/// cannot leave the challenge directory; [`acme::read_challenge`] serves exactly the fixture's
/// challenge files (including the symlink inside the webroot) and nothing else: not the
/// symlink out of it, the directory, the oversized file, or anything by another name.
pub fn acme_path(fixture: &AcmeFixture, data: &[u8]) {
    let Ok(raw) = std::str::from_utf8(data) else {
        return;
    };
    let uri_path = raw.parse::<http::Uri>().ok();
    let candidates = std::iter::once(raw).chain(uri_path.as_ref().map(http::Uri::path));
    for path in candidates {
        let Some(token) = path.strip_prefix(acme::CHALLENGE_PREFIX) else {
            continue;
        };
        let valid = acme::valid_token(token);
        if valid {
            let mut components = Path::new(token).components();
            assert!(
                matches!(components.next(), Some(Component::Normal(c)) if c == token),
                "token {token:?} is not one path component"
            );
            assert!(
                components.next().is_none(),
                "token {token:?} has several components"
            );
        }
        let got = fixture
            .runtime
            .block_on(acme::read_challenge(&fixture.webroot, token));
        match (got, fixture.served.get(token)) {
            (None, None) => {}
            (Some(body), Some(expected)) => {
                assert!(valid);
                assert_eq!(&body[..], *expected, "token {token:?}");
            }
            (got, expected) => panic!("token {token:?}: served {got:?}, expected {expected:?}"),
        }
    }
}
