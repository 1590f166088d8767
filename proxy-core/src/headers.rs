//! Header policy: security headers on every response, forwarded headers toward upstreams,
//! hop-by-hop stripping and request ids.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use pingora_http::{CasedHeaderName, RequestHeader, ResponseHeader};
use std::net::IpAddr;

/// `X-Request-Id`.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// `X-Cache-Status`: what the cache did (HIT, MISS, EXPIRED, STALE, UPDATING, REVALIDATED, BYPASS).
pub const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
/// `X-Forwarded-For`.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// `X-Real-IP`.
pub const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const X_POWERED_BY: HeaderName = HeaderName::from_static("x-powered-by");

/// The names inserted on every request, made once: Pingora's `insert_header` parses a `&str`
/// name and copies a custom `HeaderName` on every call, and a [`CasedHeaderName`] neither
/// (vendor/README.md, pingora-http). Written lowercase, as the `HeaderName`s above.
pub(crate) mod cased {
    use pingora_http::CasedHeaderName;
    pub(crate) const X_REQUEST_ID: CasedHeaderName = CasedHeaderName::from_static("x-request-id");
    pub(crate) const X_CACHE_STATUS: CasedHeaderName =
        CasedHeaderName::from_static("x-cache-status");
    pub(crate) const X_FORWARDED_FOR: CasedHeaderName =
        CasedHeaderName::from_static("x-forwarded-for");
    pub(crate) const X_FORWARDED_PROTO: CasedHeaderName =
        CasedHeaderName::from_static("x-forwarded-proto");
    pub(crate) const X_FORWARDED_HOST: CasedHeaderName =
        CasedHeaderName::from_static("x-forwarded-host");
    pub(crate) const X_REAL_IP: CasedHeaderName = CasedHeaderName::from_static("x-real-ip");
    pub(crate) const VARY: CasedHeaderName = CasedHeaderName::from_static("vary");
    pub(crate) const RATELIMIT_POLICY: CasedHeaderName =
        CasedHeaderName::from_static("ratelimit-policy");
    pub(crate) const RATELIMIT: CasedHeaderName = CasedHeaderName::from_static("ratelimit");
}

/// Whether `name` is a hop-by-hop header the proxy manages.
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    in_hop_by_hop(name) || name == header::TRANSFER_ENCODING
}

/// Whether `name` describes one connection, not the message (RFC 9110 §7.6.1).
/// `Transfer-Encoding` is left to Pingora, which frames bodies itself; `Upgrade` and
/// `Connection` are kept on WebSocket upgrades.
///
/// One `match` on the name's text, which the headers a message has go through once: a hashed
/// lookup per listed name cost about 130 instructions each, six on every request and every
/// response. The test `the_name_matches_agree_with_the_lists` holds it to a plain list.
fn in_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection" | "keep-alive" | "proxy-connection" | "te" | "trailer" | "upgrade"
    )
}

/// Removes hop-by-hop headers and any header the `Connection` header names, through `remove`
/// (so Pingora's header-case map stays in step). On an upgrade (`keep_upgrade`),
/// `Connection` and `Upgrade` stay so the other side sees the handshake.
pub(crate) fn strip_hop_by_hop(
    headers: &HeaderMap,
    keep_upgrade: bool,
    mut remove: impl FnMut(&HeaderName),
) {
    if let Some(conn) = headers.get(header::CONNECTION) {
        if !keep_upgrade || conn.as_bytes().contains(&b',') {
            let named: Vec<HeaderName> = headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
                .filter(|n| {
                    !(keep_upgrade && n == header::UPGRADE)
                        && n != header::TRANSFER_ENCODING
                        && n != header::HOST
                        && n != header::CONTENT_LENGTH
                        && headers.contains_key(n)
                })
                .collect();
            for n in &named {
                remove(n);
            }
        }
    }
    for n in headers.keys() {
        if in_hop_by_hop(n) && !(keep_upgrade && (n == header::CONNECTION || n == header::UPGRADE))
        {
            remove(n);
        }
    }
}

/// The security headers the config uses when it says nothing (`[headers]` absent), in the
/// order they are set. See [`HeaderPolicy::recommended`].
const RECOMMENDED: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    (
        "content-security-policy",
        "default-src 'self'; frame-ancestors 'self'; object-src 'none'; base-uri 'self'",
    ),
    ("x-frame-options", "SAMEORIGIN"),
    ("referrer-policy", "strict-origin-when-cross-origin"),
    (
        "permissions-policy",
        "camera=(), microphone=(), geolocation=(), payment=()",
    ),
];

/// The recommended value of one of the security headers a config without `[headers]` gets
/// (`x-content-type-options`, `strict-transport-security`, `content-security-policy`,
/// `x-frame-options`, `referrer-policy`, `permissions-policy`): the one place these defaults
/// are written, for [`HeaderPolicy::recommended`] and the config's validator. An empty string
/// for any other name.
pub(crate) fn recommended(name: &str) -> &'static str {
    RECOMMENDED
        .iter()
        .find(|(n, _)| *n == name)
        .map_or("", |(_, v)| v)
}

/// Security headers, validated into header values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderSettings {
    /// Headers added to every response, in order.
    pub add: Vec<(HeaderName, HeaderValue)>,
    /// `Server` value.
    pub server: HeaderValue,
}

/// `[headers] server`: the `Server` value when nothing else is said (a name, never a version).
pub const DEFAULT_SERVER_NAME: &str = "galion-edge";
/// [`DEFAULT_SERVER_NAME`] as a header value.
pub const DEFAULT_SERVER: HeaderValue = HeaderValue::from_static(DEFAULT_SERVER_NAME);

/// The security-header policy of one site, ready to apply.
///
/// Built from config ([`HeaderPolicy::new`]), or without one: [`HeaderPolicy::recommended`]
/// (what a config without `[headers]` gives) or [`HeaderPolicy::builder`]. Applying it never
/// fails and allocates nothing beyond the header map's own growth.
///
/// ```
/// use proxy_core::HeaderPolicy;
/// use proxy_core::pingora::http::ResponseHeader;
/// use http::header::{HeaderName, HeaderValue};
///
/// let policy = HeaderPolicy::recommended()
///     .into_builder()
///     .header(
///         HeaderName::from_static("content-security-policy"),
///         HeaderValue::from_static("default-src 'self'; connect-src 'self' wss://galion.app"),
///     )
///     .build();
///
/// let mut resp = ResponseHeader::build(200, None).unwrap();
/// resp.insert_header("x-powered-by", "Express 4.18.2").unwrap();
/// resp.insert_header("server", "uvicorn/0.30.1").unwrap();
/// policy.apply(&mut resp);
///
/// assert_eq!(resp.headers["server"], "galion-edge");
/// assert!(!resp.headers.contains_key("x-powered-by"));
/// assert_eq!(resp.headers["x-content-type-options"], "nosniff");
/// assert_eq!(resp.headers["x-frame-options"], "SAMEORIGIN");
/// assert_eq!(
///     resp.headers["content-security-policy"],
///     "default-src 'self'; connect-src 'self' wss://galion.app"
/// );
/// ```
#[derive(Debug, Clone)]
pub struct HeaderPolicy {
    add: Vec<(HeaderName, HeaderValue)>,
    server: HeaderValue,
    /// `add` then `Server`, with names and values on `'static` bytes (see [`interned`]), as
    /// [`HeaderPolicy::apply`] inserts them.
    wire: Vec<(CasedHeaderName, HeaderValue)>,
}

impl HeaderPolicy {
    /// Builds the policy from validated settings.
    pub fn new(settings: &HeaderSettings) -> HeaderPolicy {
        HeaderPolicy::from_parts(settings.add.clone(), settings.server.clone())
    }

    fn from_parts(add: Vec<(HeaderName, HeaderValue)>, server: HeaderValue) -> HeaderPolicy {
        let wire = add
            .iter()
            .chain(std::iter::once(&(header::SERVER, server.clone())))
            .map(|(name, value)| {
                let name = std::str::from_utf8(interned(name.as_str().as_bytes()))
                    .ok()
                    .and_then(|n| CasedHeaderName::new(n).ok())
                    .unwrap_or(CasedHeaderName::from_static("server"));
                let mut fixed =
                    HeaderValue::from_maybe_shared(Bytes::from_static(interned(value.as_bytes())))
                        .unwrap_or_else(|_| value.clone());
                fixed.set_sensitive(value.is_sensitive());
                (name, fixed)
            })
            .collect();
        HeaderPolicy { add, server, wire }
    }

    /// The policy a config without `[headers]` gives: `X-Content-Type-Options: nosniff`,
    /// HSTS for a year with subdomains, a same-origin CSP, `X-Frame-Options: SAMEORIGIN`,
    /// `Referrer-Policy: strict-origin-when-cross-origin`, a `Permissions-Policy` denying
    /// camera, microphone, geolocation and payment, and `Server: galion-edge`.
    pub fn recommended() -> HeaderPolicy {
        HeaderPolicy::from_parts(
            RECOMMENDED
                .iter()
                .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
                .collect(),
            DEFAULT_SERVER,
        )
    }

    /// A builder starting from nothing: no headers added, `Server: galion-edge`.
    pub fn builder() -> HeaderPolicyBuilder {
        HeaderPolicyBuilder {
            add: Vec::new(),
            server: DEFAULT_SERVER,
        }
    }

    /// A builder starting from this policy, to change a few headers of it.
    pub fn into_builder(self) -> HeaderPolicyBuilder {
        HeaderPolicyBuilder {
            add: self.add,
            server: self.server,
        }
    }

    /// Sets the security headers and `Server` on a response, replacing what the upstream sent
    /// for those names, and removes `X-Powered-By` (it names frameworks and versions).
    ///
    /// Call it from `response_filter` for proxied and cached answers, and on every answer your
    /// own `request_filter` writes (a `429`, a redirect): those never pass `response_filter`.
    /// The `cache_and_limiter` example does both.
    pub fn apply(&self, resp: &mut ResponseHeader) {
        // A `CasedHeaderName` is neither parsed nor copied by the insert, and values on static
        // bytes are cloned without touching a reference count that every worker thread shares.
        for (name, value) in &self.wire {
            // insert_header only fails on invalid names or values; these were checked at load.
            let _ = resp.insert_header(name, value.clone());
        }
        let _ = resp.remove_header(&X_POWERED_BY);
    }

    /// The `Server` value.
    pub fn server(&self) -> &HeaderValue {
        &self.server
    }

    /// The headers this policy adds, for inspection.
    pub fn headers(&self) -> &[(HeaderName, HeaderValue)] {
        &self.add
    }
}

/// Builds a [`HeaderPolicy`] without a config: from [`HeaderPolicy::builder`] (empty) or
/// [`HeaderPolicy::into_builder`] (for example on [`HeaderPolicy::recommended`]).
///
/// Names and values are `http` types, so nothing here can fail. The config's extra checks
/// (visible ASCII only, no version in `Server`) are not applied: that is the caller's call.
#[derive(Debug, Clone)]
pub struct HeaderPolicyBuilder {
    add: Vec<(HeaderName, HeaderValue)>,
    server: HeaderValue,
}

impl HeaderPolicyBuilder {
    /// Sets `name` on every response, replacing what the upstream sent. A name set before keeps
    /// its place and gets the new value. `Server` sets [`HeaderPolicyBuilder::server`];
    /// `X-Powered-By` can be set but is removed again, as on every response.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        if name == header::SERVER {
            self.server = value;
        } else if let Some(slot) = self.add.iter_mut().find(|(n, _)| *n == name) {
            slot.1 = value;
        } else {
            self.add.push((name, value));
        }
        self
    }

    /// Stops setting `name` (responses keep what the upstream sent). `Server` cannot be
    /// removed: the upstream's would name its software.
    pub fn without(mut self, name: &HeaderName) -> Self {
        self.add.retain(|(n, _)| n != name);
        self
    }

    /// The `Server` value. Default `galion-edge`.
    pub fn server(mut self, value: HeaderValue) -> Self {
        self.server = value;
        self
    }

    /// The policy.
    pub fn build(self) -> HeaderPolicy {
        HeaderPolicy::from_parts(self.add, self.server)
    }
}

/// `bytes` on `'static` storage: leaked once per distinct content, then shared by every policy
/// that uses it. Header policies are built at start and on reload, so what this keeps is
/// bounded by the distinct header names and values ever configured (a few KiB), not by the
/// number of reloads.
fn interned(bytes: &[u8]) -> &'static [u8] {
    static SEEN: std::sync::Mutex<std::collections::BTreeSet<&'static [u8]>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(s) = seen.get(bytes) {
        return s;
    }
    let s: &'static [u8] = Box::leak(bytes.to_vec().into_boxed_slice());
    seen.insert(s);
    s
}

/// Whether a client-supplied request id is kept: 1 to 128 of `A-Z a-z 0-9 - _ . :`.
pub(crate) fn valid_request_id(v: &[u8]) -> bool {
    !v.is_empty()
        && v.len() <= 128
        && v.iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Marks a header value that changes with every response (a request id, a `RateLimit`
/// count) so that HTTP/2 sends it as a never-indexed literal (RFC 7541 §6.2.3), the way
/// nghttp2 treats such headers.
///
/// The h2 crate otherwise adds every new value to the connection's 4 KiB HPACK table. A value
/// seen once is never sent again, so each insert only evicts the headers that do repeat (CSP,
/// HSTS and the other security headers, about 600 bytes), which then go out in full again every
/// 50 or so responses, and every lookup walks the chain of dead values kept under the name.
/// HTTP/1.1 ignores the mark.
pub(crate) fn unique_value(mut v: HeaderValue) -> HeaderValue {
    v.set_sensitive(true);
    v
}

/// A new request id: 32 lower-case hex digits from a random 128-bit number, marked as
/// [`unique_value`].
pub(crate) fn new_request_id() -> HeaderValue {
    let n: u128 = rand::random();
    let mut buf = [0u8; 32];
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    // Hex digits are always a valid header value.
    unique_value(HeaderValue::from_bytes(&buf).unwrap_or_else(|_| HeaderValue::from_static("0")))
}

/// The request id to use: the client's when valid, a new one otherwise; marked as
/// `unique_value` either way.
pub fn request_id(req: &RequestHeader) -> HeaderValue {
    match req.headers.get(&X_REQUEST_ID) {
        Some(v) if valid_request_id(v.as_bytes()) => unique_value(v.clone()),
        _ => new_request_id(),
    }
}

/// Whether `name` is a request header that frameworks read to rewrite the URL, host, scheme,
/// port or method of a request (Symfony/IIS `X-Original-URL`, Rails/Rack `X-Forwarded-Scheme`,
/// Express/Django "trust proxy" settings, method overrides). The proxy neither keys its cache
/// on them nor sets them, so a client could use them to make an origin answer one URL with
/// another's content and have that stored for everyone (web cache poisoning):
/// [`set_forwarded`] removes them from every upstream request. The proxy's own
/// `X-Forwarded-Host`/`-Proto` are set, never passed on.
///
/// Matched as [`in_hop_by_hop`] does it (thirteen hashed lookups were about 1,700
/// instructions on every request).
fn is_untrusted_override(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "x-original-url"
            | "x-rewrite-url"
            | "x-original-host"
            | "x-host"
            | "x-forwarded-server"
            | "x-forwarded-scheme"
            | "x-forwarded-port"
            | "x-forwarded-prefix"
            | "x-forwarded-ssl"
            | "forwarded"
            | "x-http-method-override"
            | "x-http-method"
            | "x-method-override"
    )
}

/// Appends `ip` as text: an IPv4 address digit by digit (`Display` goes through the `fmt`
/// machinery, about 1,300 instructions, and it is written twice on every proxied request), an
/// IPv6 address with `Display`.
pub(crate) fn push_ip(out: &mut String, ip: IpAddr) {
    use std::fmt::Write as _;
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        // Writing to a String cannot fail.
        IpAddr::V6(_) => {
            let _ = write!(out, "{ip}");
        }
    }
}

/// Sets the forwarded headers on an upstream request: `X-Forwarded-For` is replaced by
/// `forwarded_for` (the chain as the client-IP resolver vouches for it, see
/// [`crate::client_ip::ClientIpResolver::forwarded_for`]), `X-Real-IP` by the resolved client,
/// `X-Forwarded-Proto` by the listener's scheme (a client cannot forge any of them),
/// `X-Forwarded-Host` carries the host the client asked for, and `X-Request-Id` is set.
/// Headers a client sent that frameworks read to rewrite the URL, host, scheme, port or method
/// (`X-Original-URL`, `X-Forwarded-Scheme`, `Forwarded`, method overrides, …) are removed.
pub fn set_forwarded(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    forwarded_for: Option<&str>,
    https: bool,
    host: &str,
    request_id: &HeaderValue,
) {
    match forwarded_for.and_then(|v| HeaderValue::from_str(v).ok()) {
        Some(v) => {
            let _ = req.insert_header(&cased::X_FORWARDED_FOR, v);
        }
        None => {
            let _ = req.remove_header(&X_FORWARDED_FOR);
        }
    }
    match client.and_then(|ip| {
        let mut text = String::with_capacity(39);
        push_ip(&mut text, ip);
        HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
    }) {
        Some(v) => {
            let _ = req.insert_header(&cased::X_REAL_IP, v);
        }
        None => {
            let _ = req.remove_header(&X_REAL_IP);
        }
    }
    let proto = if https { "https" } else { "http" };
    let _ = req.insert_header(&cased::X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    if let Ok(v) = HeaderValue::from_str(host) {
        let _ = req.insert_header(&cased::X_FORWARDED_HOST, v);
    }
    let _ = req.insert_header(&cased::X_REQUEST_ID, request_id.clone());
    let untrusted: Vec<HeaderName> = req
        .headers
        .keys()
        .filter(|n| is_untrusted_override(n))
        .cloned()
        .collect();
    for name in &untrusted {
        let _ = req.remove_header(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_ip_writes_what_display_writes() {
        let mut octets = vec![
            0u8, 1, 9, 10, 11, 99, 100, 101, 109, 110, 199, 200, 250, 255,
        ];
        octets.extend(0..=255u8);
        for (i, &a) in octets.iter().enumerate() {
            let b = octets[(i * 7 + 3) % octets.len()];
            let v4 = IpAddr::V4(std::net::Ipv4Addr::new(a, b, 255 - a, b / 3));
            let mut out = String::from("x, ");
            push_ip(&mut out, v4);
            assert_eq!(out, format!("x, {v4}"));
        }
        for v6 in ["::1", "2606:4700::1", "::ffff:1.2.3.4", "fe80::1:2:3:4"] {
            let ip: IpAddr = v6.parse().unwrap();
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    /// The hop-by-hop names [`in_hop_by_hop`] matches, as a list.
    const HOP_BY_HOP: [HeaderName; 6] = [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        header::TE,
        header::TRAILER,
        header::UPGRADE,
    ];

    /// The names [`is_untrusted_override`] matches, as a list.
    const UNTRUSTED_OVERRIDES: [HeaderName; 13] = [
        HeaderName::from_static("x-original-url"),
        HeaderName::from_static("x-rewrite-url"),
        HeaderName::from_static("x-original-host"),
        HeaderName::from_static("x-host"),
        HeaderName::from_static("x-forwarded-server"),
        HeaderName::from_static("x-forwarded-scheme"),
        HeaderName::from_static("x-forwarded-port"),
        HeaderName::from_static("x-forwarded-prefix"),
        HeaderName::from_static("x-forwarded-ssl"),
        HeaderName::from_static("forwarded"),
        HeaderName::from_static("x-http-method-override"),
        HeaderName::from_static("x-http-method"),
        HeaderName::from_static("x-method-override"),
    ];

    #[test]
    fn the_name_matches_agree_with_the_lists() {
        let listed = |list: &[HeaderName], name: &HeaderName| list.contains(name);
        let mut names: Vec<HeaderName> = HOP_BY_HOP
            .iter()
            .chain(UNTRUSTED_OVERRIDES.iter())
            .cloned()
            .collect();
        names.extend(
            [
                "transfer-encoding",
                "host",
                "x-forwarded-for",
                "x-forwarded",
                "connectio",
                "te2",
                "content-length",
                "x-original-urls",
            ]
            .map(HeaderName::from_static),
        );
        for name in &names {
            assert_eq!(in_hop_by_hop(name), listed(&HOP_BY_HOP, name), "{name}");
            assert_eq!(
                is_untrusted_override(name),
                listed(&UNTRUSTED_OVERRIDES, name),
                "{name}"
            );
        }
    }

    #[test]
    fn interned_strings_are_kept_once_and_policies_apply_them_unchanged() {
        let a = interned(b"max-age=31536000; includeSubDomains");
        let owned = String::from("max-age=31536000; includeSubDomains");
        let b = interned(owned.as_bytes());
        assert!(std::ptr::eq(a, b), "one copy per distinct content");
        assert_ne!(interned(b"DENY"), interned(b"SAMEORIGIN"));

        let policy = HeaderPolicy::builder()
            .header(
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            )
            .header(
                HeaderName::from_static("x-custom-policy"),
                HeaderValue::from_bytes(b"caf\xe9").unwrap(),
            )
            .server(HeaderValue::from_static("edge"))
            .build();
        let again = policy.clone().into_builder().build();
        assert!(std::ptr::eq(
            policy.wire[0].0.as_str(),
            again.wire[0].0.as_str()
        ));
        let mut resp = ResponseHeader::build(200, None).unwrap();
        resp.insert_header("X-Frame-Options", "ALLOW").unwrap();
        resp.insert_header("x-powered-by", "php").unwrap();
        again.apply(&mut resp);
        assert_eq!(resp.headers["x-frame-options"], "DENY");
        assert_eq!(resp.headers.get_all("x-frame-options").iter().count(), 1);
        assert_eq!(resp.headers["x-custom-policy"].as_bytes(), b"caf\xe9");
        assert_eq!(resp.headers["server"], "edge");
        assert!(!resp.headers.contains_key("x-powered-by"));
    }

    #[test]
    fn recommended_is_what_a_config_without_headers_gives() {
        let config = crate::config::Config::from_toml_str(
            r#"
            [listeners]
            http_proxy = ["127.0.0.1:8080"]
            [upstreams.app]
            backends = ["127.0.0.1:3000"]
            [[sites]]
            hosts = ["example.test"]
            routes = [{ path = "/", upstream = "app" }]
            "#,
            std::path::Path::new("."),
        )
        .unwrap();
        let recommended = HeaderPolicy::recommended();
        for settings in [&config.default_headers, &config.sites[0].headers] {
            let from_config = HeaderPolicy::new(settings);
            assert_eq!(from_config.headers(), recommended.headers());
            assert_eq!(from_config.server(), recommended.server());
        }
    }

    #[test]
    fn builder_replaces_in_place_and_removes() {
        let csp = HeaderName::from_static("content-security-policy");
        let p = HeaderPolicy::recommended()
            .into_builder()
            .header(csp.clone(), HeaderValue::from_static("default-src 'none'"))
            .header(header::SERVER, HeaderValue::from_static("edge"))
            .without(&header::STRICT_TRANSPORT_SECURITY)
            .build();
        assert_eq!(p.server(), "edge");
        assert_eq!(p.headers().len(), RECOMMENDED.len() - 1);
        assert_eq!(
            p.headers()[1],
            (csp, HeaderValue::from_static("default-src 'none'"))
        );
        assert!(HeaderPolicy::builder().build().headers().is_empty());
    }

    #[test]
    fn request_ids() {
        let id = new_request_id();
        assert_eq!(id.len(), 32);
        assert!(valid_request_id(id.as_bytes()));
        assert_ne!(new_request_id(), id);
        assert!(
            id.is_sensitive(),
            "a new id is sent as a never-indexed literal"
        );
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.insert_header(X_REQUEST_ID, "client-id-1").unwrap();
        let kept = request_id(&req);
        assert_eq!(kept, "client-id-1");
        assert!(kept.is_sensitive(), "so is a client's");
        assert!(!valid_request_id(b""));
        assert!(!valid_request_id(b"a b"));
        assert!(!valid_request_id(&[b'a'; 129]));
    }

    #[test]
    fn hop_by_hop_and_connection_tokens_go() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert(
            HeaderName::from_static("keep-alive"),
            HeaderValue::from_static("timeout=5"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        let mut gone = Vec::new();
        strip_hop_by_hop(&h, false, |n| gone.push(n.clone()));
        for n in &gone {
            h.remove(n);
        }
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_kept_for_websocket() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        let mut gone = Vec::new();
        strip_hop_by_hop(&h, true, |n| gone.push(n.clone()));
        assert!(gone.is_empty(), "{gone:?}");
    }
}
