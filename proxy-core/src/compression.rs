//! Response compression: `Accept-Encoding` negotiation, the policy that decides what happens to
//! an upstream response, the header rewrite that goes with it, and a streaming gzip/brotli coder.
//!
//! The pieces, in the order a response meets them:
//!
//! - [`negotiate`] / [`negotiate_headers`]: the one answer to "which coding does this request
//!   get" (`br`, `gzip` or `identity`). The cache's `Accept-Encoding` variant key must be
//!   `negotiate_headers(&req.headers).as_str()`, so that a stored variant is only ever served to
//!   requests that negotiate the same coding.
//! - [`CompressionPolicy::plan`]: compress, decompress or leave an upstream response.
//! - [`apply_headers`] (and [`ensure_vary_accept_encoding`] for a compressible response that is
//!   left as it is): `Content-Encoding`, `Content-Length`, `ETag`, `Accept-Ranges`, `Vary`.
//! - [`BodyCoder`]: the body, chunk by chunk. Decoding is bounded
//!   ([`CompressionPolicy::max_decompressed`]) against decompression bombs.
//!
//! Compression is meant to run before the cache stores a response, so a stored object is
//! compressed once and cache hits pay nothing.

use crate::exposition;
use bytes::Bytes;
use flate2::write::{GzEncoder, MultiGzDecoder};
use flate2::Compression;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use pingora_http::{RequestHeader, ResponseHeader};
use prometheus::proto::MetricFamily;
use std::io::{self, Write};
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, Ordering};

/// `[compression] enabled`: compression (and decompression for clients that need it) is on.
pub const DEFAULT_ENABLED: bool = true;
/// Default gzip level (1-9): zlib-ng's level 5 is close to level 9's ratio at a fraction of
/// its cost.
pub const DEFAULT_GZIP_LEVEL: u32 = 5;
/// Default brotli quality (0-11): 5, the lowest quality that beat gzip 5 on 100 KB of
/// JavaScript-like text (11,129 B against 12,653 B; quality 4 gave 13,738 B), at about 1 ms per
/// 100 KB, which is paid once per cached variant.
pub const DEFAULT_BROTLI_QUALITY: u32 = 5;
/// Default smallest body compressed, in bytes, when its length is known: below this the
/// saving is a few bytes and the coding overhead can even make the body larger.
pub const DEFAULT_MIN_SIZE: usize = 256;
/// What `[compression] min_size` may be set to: 0 to 1 GiB.
pub const MIN_SIZE_RANGE: RangeInclusive<u64> = 0..=(1 << 30);
/// The gzip levels there are (`[compression] gzip_level`).
pub const GZIP_LEVELS: RangeInclusive<u32> = 1..=9;
/// The brotli qualities there are (`[compression] brotli_quality`).
pub const BROTLI_QUALITIES: RangeInclusive<u32> = 0..=11;
/// Default cap on a decompressed body, in bytes (64 MiB).
pub const DEFAULT_MAX_DECOMPRESSED: usize = 64 << 20;

/// Brotli window, log2 bytes: 512 KiB, as Pingora's own brotli compressor and nginx's
/// `brotli_window` default. A larger window gains a percent or two on multi-megabyte bodies
/// and costs up to its size in memory per concurrent compression.
const BROTLI_LGWIN: u32 = 19;
/// Size of the brotli writers' internal buffers.
const BROTLI_BUFFER: usize = 4096;

const BR: HeaderValue = HeaderValue::from_static("br");
const GZIP: HeaderValue = HeaderValue::from_static("gzip");
const IDENTITY: HeaderValue = HeaderValue::from_static("identity");
const ACCEPT_ENCODING_VALUE: HeaderValue = HeaderValue::from_static("Accept-Encoding");

/// A content coding the proxy produces or understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// `br` (RFC 7932).
    Brotli,
    /// `gzip` (RFC 1952); `x-gzip` is read as the same coding.
    Gzip,
    /// No coding.
    Identity,
}

impl Encoding {
    /// The coding's token: `"br"`, `"gzip"` or `"identity"`. This is also the cache's
    /// `Accept-Encoding` variant key.
    pub const fn as_str(self) -> &'static str {
        match self {
            Encoding::Brotli => "br",
            Encoding::Gzip => "gzip",
            Encoding::Identity => "identity",
        }
    }

    /// The token as a header value, for `Content-Encoding`. Never allocates.
    pub const fn header_value(self) -> HeaderValue {
        match self {
            Encoding::Brotli => BR,
            Encoding::Gzip => GZIP,
            Encoding::Identity => IDENTITY,
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The coding a request should get, from its `Accept-Encoding` value (RFC 9110 §12.5.3).
///
/// - No header (`None`) or an empty one: [`Encoding::Identity`].
/// - Codings are case-insensitive, `x-gzip` is `gzip`, whitespace around tokens, `;` and `=`
///   is ignored, and empty list elements are skipped.
/// - `q=0` excludes a coding. A weight that is not a valid qvalue (`0`, `0.5`, `1.000`, at most
///   three decimals, at most 1; `foo`, `2`, `-1`, `0.0001`) also excludes it, as nginx does:
///   what the client cannot be understood to accept is not sent, and identity is always safe.
/// - A coding listed more than once gets its lowest weight, so a `q=0` anywhere excludes it.
/// - `*` gives its weight to `br` and `gzip` when they are not listed themselves.
/// - Between `br` and `gzip` the higher weight wins; brotli wins a tie. When neither is
///   acceptable the answer is identity, even if the client said `identity;q=0` (the proxy
///   does not answer 406).
///
/// Garbage never panics; this does not allocate.
///
/// ```
/// use proxy_core::{negotiate_encoding, Encoding};
///
/// assert_eq!(negotiate_encoding(Some(b"gzip, deflate, br")), Encoding::Brotli);
/// assert_eq!(negotiate_encoding(Some(b"br;q=0.5, gzip")), Encoding::Gzip);
/// assert_eq!(negotiate_encoding(Some(b"gzip;q=0, br;q=0")), Encoding::Identity);
/// assert_eq!(negotiate_encoding(Some(b"*")), Encoding::Brotli);
/// assert_eq!(negotiate_encoding(None), Encoding::Identity);
/// // The cache stores one variant per answer, keyed by this token.
/// assert_eq!(negotiate_encoding(Some(b"GZIP")).as_str(), "gzip");
/// ```
pub fn negotiate(accept_encoding: Option<&[u8]>) -> Encoding {
    match accept_encoding {
        None => Encoding::Identity,
        Some(value) => Accepted::parse([value]).choose(),
    }
}

/// [`negotiate`] over every `Accept-Encoding` line of a request (several lines mean the same as
/// one comma-joined line). This is what [`CompressionPolicy::plan`] uses, and what the cache's
/// variant key must use.
pub(crate) fn negotiate_headers(headers: &HeaderMap) -> Encoding {
    Accepted::from_headers(headers).choose()
}

/// The weights an `Accept-Encoding` gives to the codings the proxy can produce, in thousandths;
/// `None` when the coding is not listed.
#[derive(Debug, Clone, Copy, Default)]
struct Accepted {
    br: Option<u16>,
    gzip: Option<u16>,
    star: Option<u16>,
}

impl Accepted {
    fn from_headers(headers: &HeaderMap) -> Accepted {
        Accepted::parse(
            headers
                .get_all(header::ACCEPT_ENCODING)
                .iter()
                .map(HeaderValue::as_bytes),
        )
    }

    fn parse<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Accepted {
        let mut acc = Accepted::default();
        for value in values {
            for element in value.split(|b| *b == b',') {
                let mut parts = element.split(|b| *b == b';');
                let coding = parts.next().unwrap_or_default().trim_ascii();
                let slot = if coding.eq_ignore_ascii_case(b"br") {
                    &mut acc.br
                } else if coding.eq_ignore_ascii_case(b"gzip")
                    || coding.eq_ignore_ascii_case(b"x-gzip")
                {
                    &mut acc.gzip
                } else if coding == b"*" {
                    &mut acc.star
                } else {
                    continue;
                };
                let mut q = 1000;
                for param in parts {
                    let param = param.trim_ascii();
                    let (name, value) = match param.iter().position(|b| *b == b'=') {
                        Some(i) => (param[..i].trim_ascii(), param[i + 1..].trim_ascii()),
                        None => (param, &b""[..]),
                    };
                    if name.eq_ignore_ascii_case(b"q") {
                        q = q.min(parse_qvalue(value).unwrap_or(0));
                    }
                }
                *slot = Some(slot.map_or(q, |old| old.min(q)));
            }
        }
        acc
    }

    fn weight(&self, encoding: Encoding) -> u16 {
        let listed = match encoding {
            Encoding::Brotli => self.br,
            Encoding::Gzip => self.gzip,
            Encoding::Identity => return 1000,
        };
        listed.or(self.star).unwrap_or(0)
    }

    fn accepts(&self, encoding: Encoding) -> bool {
        self.weight(encoding) > 0
    }

    fn choose(&self) -> Encoding {
        let br = self.weight(Encoding::Brotli);
        let gzip = self.weight(Encoding::Gzip);
        if br == 0 && gzip == 0 {
            Encoding::Identity
        } else if br >= gzip {
            Encoding::Brotli
        } else {
            Encoding::Gzip
        }
    }
}

/// An RFC 9110 qvalue in thousandths: `0[.ddd]` or `1[.000]`.
fn parse_qvalue(v: &[u8]) -> Option<u16> {
    let (&first, rest) = v.split_first()?;
    let whole: u16 = match first {
        b'0' => 0,
        b'1' => 1000,
        _ => return None,
    };
    let frac = match rest.split_first() {
        None => return Some(whole),
        Some((b'.', frac)) => frac,
        Some(_) => return None,
    };
    if frac.len() > 3 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut thousandths = 0u16;
    for i in 0..3 {
        let d = frac.get(i).map_or(0, |b| u16::from(b - b'0'));
        thousandths = thousandths * 10 + d;
    }
    if whole == 1000 && thousandths != 0 {
        return None;
    }
    Some(whole + thousandths)
}

/// What to do with an upstream response's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Encode the body with this coding (never [`Encoding::Identity`] from
    /// [`CompressionPolicy::plan`]).
    Compress(Encoding),
    /// The upstream sent this coding and the client does not accept it: decode the body.
    Decompress(Encoding),
    /// Pass the body through as it is.
    Leave,
}

/// What the compression filter did, for the admin stats and the metrics. One per proxy, kept
/// across config swaps (a reload carries it over) so the counters only grow.
#[derive(Debug, Default)]
pub(crate) struct CompressionStats {
    /// Responses compressed (gzip or brotli). Cache hits never count: they serve stored bytes.
    pub compressed: AtomicU64,
    /// Responses decompressed for clients that did not accept the origin's encoding.
    pub decompressed: AtomicU64,
}

impl CompressionStats {
    /// Counts one response the plan changes (compressed or decompressed); `Leave` counts nothing.
    pub(crate) fn record(&self, plan: &Plan) {
        let counter = match plan {
            Plan::Compress(_) => &self.compressed,
            Plan::Decompress(_) => &self.decompressed,
            Plan::Leave => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The `galion_edge_compression_total` series, read now. Fails only on a bug in the
    /// family's definition.
    pub(crate) fn metric_families(&self) -> exposition::Result<Vec<MetricFamily>> {
        let mut out = Vec::new();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let c = self;
        out.extend(exposition::counters(
            "galion_edge_compression_total",
            "Responses compressed (gzip or brotli) or decompressed for the client.",
            &["action"],
            [
                (vec!["compressed"], get(&c.compressed)),
                (vec!["decompressed"], get(&c.decompressed)),
            ],
        )?);
        Ok(out)
    }
}

/// What compression does on one site: the levels, the smallest body worth compressing, the
/// content types compressed, and the cap on decompressed bodies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionPolicy {
    gzip_level: u32,
    brotli_quality: u32,
    min_size: usize,
    types: Vec<String>,
    max_decompressed: usize,
}

impl Default for CompressionPolicy {
    /// [`DEFAULT_GZIP_LEVEL`], [`DEFAULT_BROTLI_QUALITY`], [`DEFAULT_MIN_SIZE`],
    /// [`CompressionPolicy::default_types`], [`DEFAULT_MAX_DECOMPRESSED`].
    fn default() -> Self {
        CompressionPolicy::new(
            DEFAULT_GZIP_LEVEL,
            DEFAULT_BROTLI_QUALITY,
            DEFAULT_MIN_SIZE,
            CompressionPolicy::default_types(),
        )
    }
}

impl CompressionPolicy {
    /// A policy with these settings and a decompression cap of [`DEFAULT_MAX_DECOMPRESSED`]
    /// (see [`CompressionPolicy::with_max_decompressed`]).
    ///
    /// `gzip_level` is clamped to 1-9 and `brotli_quality` to 0-11 (config validation reports
    /// out-of-range values before this; clamping keeps a bad value from reaching the coders).
    /// `types` are MIME types (`application/json`) or prefixes ending in `/` (`text/`, also
    /// written `text/*`); they are compared case-insensitively, and blank entries are dropped.
    pub fn new(
        gzip_level: u32,
        brotli_quality: u32,
        min_size: usize,
        types: Vec<String>,
    ) -> CompressionPolicy {
        let types = types
            .into_iter()
            .filter_map(|t| {
                let t = t.trim().to_ascii_lowercase();
                let t = match t.strip_suffix("/*") {
                    Some(prefix) => format!("{prefix}/"),
                    None => t,
                };
                (!t.is_empty()).then_some(t)
            })
            .collect();
        CompressionPolicy {
            gzip_level: gzip_level.clamp(1, 9),
            brotli_quality: brotli_quality.min(11),
            min_size,
            types,
            max_decompressed: DEFAULT_MAX_DECOMPRESSED,
        }
    }

    /// The same policy with another cap, in bytes, on what [`BodyCoder`] decodes from one body.
    pub fn with_max_decompressed(mut self, max_decompressed: usize) -> CompressionPolicy {
        self.max_decompressed = max_decompressed;
        self
    }

    /// The content types compressed by default: text of every kind (`text/`), JSON, JavaScript,
    /// XML and their `+json`/`+xml` relatives, SVG, WebAssembly, uncompressed font formats and
    /// icons. Formats that are compressed already (WOFF/WOFF2, PNG, JPEG, GIF, WebP, AVIF,
    /// video, audio, zip, gzip, PDF) are not in the list.
    pub fn default_types() -> Vec<String> {
        [
            "text/",
            "text/javascript",
            "application/javascript",
            "application/x-javascript",
            "application/json",
            "application/ld+json",
            "application/manifest+json",
            "application/problem+json",
            "application/geo+json",
            "application/xml",
            "application/xhtml+xml",
            "application/rss+xml",
            "application/atom+xml",
            "image/svg+xml",
            "image/x-icon",
            "image/vnd.microsoft.icon",
            "image/bmp",
            "application/wasm",
            "font/ttf",
            "font/otf",
            "application/vnd.ms-fontobject",
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    /// gzip level, 1-9. Default [`DEFAULT_GZIP_LEVEL`].
    pub fn gzip_level(&self) -> u32 {
        self.gzip_level
    }

    /// Brotli quality, 0-11. Default [`DEFAULT_BROTLI_QUALITY`].
    pub fn brotli_quality(&self) -> u32 {
        self.brotli_quality
    }

    /// Bodies whose `Content-Length` is below this are left alone. Default [`DEFAULT_MIN_SIZE`].
    pub fn min_size(&self) -> usize {
        self.min_size
    }

    /// The compressed types, lower-case, prefixes ending in `/`.
    pub fn types(&self) -> &[String] {
        &self.types
    }

    /// The most a [`BodyCoder`] decodes from one body before it fails. Default 64 MiB.
    pub fn max_decompressed(&self) -> usize {
        self.max_decompressed
    }

    /// Whether a `Content-Type` is one this policy compresses. Parameters (`; charset=utf-8`)
    /// and surrounding whitespace are ignored, the comparison is case-insensitive. No content
    /// type, an empty one, and `text/event-stream` (compressing it would hold events back in
    /// the coder) are not compressible. Does not allocate.
    pub fn is_compressible(&self, content_type: Option<&[u8]>) -> bool {
        let Some(essence) = content_type.map(mime_essence) else {
            return false;
        };
        if essence.is_empty() || essence.eq_ignore_ascii_case(b"text/event-stream") {
            return false;
        }
        self.types.iter().any(|t| {
            let t = t.as_bytes();
            if t.ends_with(b"/") {
                essence.len() > t.len() && essence[..t.len()].eq_ignore_ascii_case(t)
            } else {
                essence.eq_ignore_ascii_case(t)
            }
        })
    }

    /// Decides what to do with an upstream response to `req`. [`Plan::Leave`], in this order,
    /// for:
    ///
    /// - `HEAD` requests, requests with a `Range` header;
    /// - 1xx, 204, 304 and 206 responses;
    /// - responses with `Cache-Control: no-transform` (the request's `no-transform` is not
    ///   consulted: the result is stored in the shared cache, and one client must not decide
    ///   the representation every other client gets);
    /// - `text/event-stream`.
    ///
    /// A response with a `Content-Encoding` (other than `identity`) is then left alone when
    /// the client accepts that coding, decoded ([`Plan::Decompress`]) when it is gzip
    /// (`x-gzip`) or brotli and the client does not accept it, whatever its size and type, and
    /// left alone for any other coding (`deflate`, `zstd`, several codings): the proxy does not
    /// decode those.
    ///
    /// Otherwise it is left alone when its `Content-Length` is below
    /// [`CompressionPolicy::min_size`] or its type is not compressible, and compressed with
    /// `negotiate_headers`'s choice unless that is identity. A missing or invalid
    /// `Content-Length` counts as large enough.
    pub fn plan(&self, req: &RequestHeader, resp: &ResponseHeader) -> Plan {
        if req.method == Method::HEAD || req.headers.contains_key(header::RANGE) {
            return Plan::Leave;
        }
        self.plan_body(&req.headers, resp)
    }

    /// [`CompressionPolicy::plan`] for a full body, whatever the request's method and range:
    /// `req_headers` only give the accepted codings.
    fn plan_body(&self, req_headers: &HeaderMap, resp: &ResponseHeader) -> Plan {
        let status = resp.status;
        if status.is_informational()
            || matches!(
                status,
                StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::PARTIAL_CONTENT
            )
        {
            return Plan::Leave;
        }
        if has_no_transform(&resp.headers) {
            return Plan::Leave;
        }
        let content_type = resp
            .headers
            .get(header::CONTENT_TYPE)
            .map(HeaderValue::as_bytes);
        if content_type
            .is_some_and(|ct| mime_essence(ct).eq_ignore_ascii_case(b"text/event-stream"))
        {
            return Plan::Leave;
        }
        let accepted = Accepted::from_headers(req_headers);
        match ContentCoding::of(&resp.headers) {
            ContentCoding::None => {}
            ContentCoding::Known(encoding) if accepted.accepts(encoding) => return Plan::Leave,
            ContentCoding::Known(encoding) => return Plan::Decompress(encoding),
            ContentCoding::Other => return Plan::Leave,
        }
        if content_length(&resp.headers).is_some_and(|len| len < self.min_size as u64) {
            return Plan::Leave;
        }
        if !self.is_compressible(content_type) {
            return Plan::Leave;
        }
        match accepted.choose() {
            Encoding::Identity => Plan::Leave,
            encoding => Plan::Compress(encoding),
        }
    }
}

impl CompressionPolicy {
    /// The whole compression decision for a response from upstream, with its headers
    /// rewritten for it (`apply_headers`, and `Vary: Accept-Encoding` on whatever varies by
    /// coding). What the service's `upstream_response_filter` calls; the returned plan drives
    /// the [`BodyCoder`].
    ///
    /// `stored` says the response will be stored in the cache under the variant of this
    /// request's negotiated coding (`negotiate_headers`). Then:
    ///
    /// - a `HEAD` or `Range` request is planned as the full `GET` the cache fetched for it;
    /// - a body the origin coded itself in anything but that variant's coding is decoded
    ///   (gzip, brotli) so a later client sharing the variant can read it, unless the response
    ///   says `no-transform` (then `fits_variant` keeps it out of the cache).
    pub fn plan_response(
        &self,
        req: &RequestHeader,
        resp: &mut ResponseHeader,
        stored: bool,
    ) -> Plan {
        let plan = if stored {
            self.plan_body(&req.headers, resp)
        } else {
            self.plan(req, resp)
        };
        let plan = match (plan, ContentCoding::of(&resp.headers)) {
            (Plan::Leave, ContentCoding::Known(origin))
                if stored
                    && !has_no_transform(&resp.headers)
                    && origin != negotiate_headers(&req.headers) =>
            {
                Plan::Decompress(origin)
            }
            (plan, _) => plan,
        };
        apply_headers(&plan, resp);
        // Whatever varies by coding says so: compressible types, and any body the origin coded
        // itself (caches must not hand it to clients that cannot decode it).
        if plan == Plan::Leave
            && (resp.headers.contains_key(header::CONTENT_ENCODING)
                || self
                    .is_compressible(resp.headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes())))
        {
            ensure_vary_accept_encoding(resp);
        }
        plan
    }
}

/// Whether a response's body, in the coding its `Content-Encoding` names, may be stored under
/// the cache variant of a request with `req_headers` (keyed by [`negotiate_headers`]): an
/// uncoded body always, a gzip or brotli body only under its own coding's variant, any other
/// coding (or several) never.
pub(crate) fn fits_variant(req_headers: &HeaderMap, resp_headers: &HeaderMap) -> bool {
    match ContentCoding::of(resp_headers) {
        ContentCoding::None => true,
        ContentCoding::Known(coding) => coding == negotiate_headers(req_headers),
        ContentCoding::Other => false,
    }
}

/// The `type/subtype` of a `Content-Type` value, without parameters or whitespace.
fn mime_essence(content_type: &[u8]) -> &[u8] {
    content_type
        .split(|b| *b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// Whether a response forbids transforming its body (`Cache-Control: no-transform`, with or
/// without a value): the one reading of it, for compression and for what the cache stores.
pub(crate) fn has_no_transform(headers: &HeaderMap) -> bool {
    headers.get_all(header::CACHE_CONTROL).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|directive| {
            let name = directive.split(|b| *b == b'=').next().unwrap_or_default();
            name.trim_ascii().eq_ignore_ascii_case(b"no-transform")
        })
    })
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    let v = headers.get(header::CONTENT_LENGTH)?.to_str().ok()?;
    v.trim().parse().ok()
}

/// The coding of a response body, read from its `Content-Encoding`: the one parser of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ContentCoding {
    /// No `Content-Encoding`, an empty one or `identity`.
    None,
    /// One coding the proxy can decode (gzip, `x-gzip`, brotli).
    Known(Encoding),
    /// Anything else, including several codings.
    Other,
}

impl ContentCoding {
    /// Reads every `Content-Encoding` line of `headers` (any case, surrounding spaces allowed).
    pub(crate) fn of(headers: &HeaderMap) -> ContentCoding {
        let mut values = headers.get_all(header::CONTENT_ENCODING).iter();
        let Some(first) = values.next() else {
            return ContentCoding::None;
        };
        if values.next().is_some() {
            return ContentCoding::Other;
        }
        let v = first.as_bytes().trim_ascii();
        if v.is_empty() || v.eq_ignore_ascii_case(b"identity") {
            ContentCoding::None
        } else if v.eq_ignore_ascii_case(b"br") {
            ContentCoding::Known(Encoding::Brotli)
        } else if v.eq_ignore_ascii_case(b"gzip") || v.eq_ignore_ascii_case(b"x-gzip") {
            ContentCoding::Known(Encoding::Gzip)
        } else {
            ContentCoding::Other
        }
    }
}

/// Rewrites a response's headers for a plan.
///
/// - [`Plan::Compress`]: sets `Content-Encoding`, removes `Content-Length` (Pingora then frames
///   the body with chunked encoding or HTTP/2 data frames) and `Accept-Ranges` (ranges of the
///   coded body are not offered).
/// - [`Plan::Decompress`]: removes `Content-Encoding`, `Content-Length` and `Accept-Ranges`
///   (the upstream offered ranges of the coded body).
/// - Both weaken a strong `ETag` (`"x"` becomes `W/"x"`; a malformed one is removed, as nginx
///   does), since the bytes differ from the upstream's, and call
///   [`ensure_vary_accept_encoding`].
/// - [`Plan::Leave`] (and a plan naming [`Encoding::Identity`]) changes nothing: this function
///   does not know the policy, so a caller leaving a compressible response alone calls
///   [`ensure_vary_accept_encoding`] itself when
///   [`CompressionPolicy::is_compressible`] says so.
///
/// Writes go through `insert_header`/`remove_header`, which keep Pingora's header-case map in
/// step.
pub fn apply_headers(plan: &Plan, resp: &mut ResponseHeader) {
    match *plan {
        Plan::Compress(Encoding::Identity) | Plan::Decompress(Encoding::Identity) | Plan::Leave => {
            return
        }
        Plan::Compress(encoding) => {
            // A static, valid value: insert_header cannot fail.
            let _ = resp.insert_header(header::CONTENT_ENCODING, encoding.header_value());
        }
        Plan::Decompress(_) => {
            let _ = resp.remove_header(&header::CONTENT_ENCODING);
        }
    }
    let _ = resp.remove_header(&header::CONTENT_LENGTH);
    let _ = resp.remove_header(&header::ACCEPT_RANGES);
    weaken_etag(resp);
    ensure_vary_accept_encoding(resp);
}

fn weaken_etag(resp: &mut ResponseHeader) {
    let weak = match resp.headers.get(header::ETAG).map(HeaderValue::as_bytes) {
        None => return,
        Some(v) if v.starts_with(b"W/") => return,
        Some(v) if v.starts_with(b"\"") => {
            let mut weak = Vec::with_capacity(v.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(v);
            HeaderValue::from_bytes(&weak).ok()
        }
        Some(_) => None,
    };
    match weak {
        Some(w) => {
            let _ = resp.insert_header(header::ETAG, w);
        }
        None => {
            let _ = resp.remove_header(&header::ETAG);
        }
    }
}

/// Makes sure `Vary` names `Accept-Encoding`: added when there is no `Vary`, appended to the
/// existing names otherwise (several `Vary` lines become one). Nothing changes when a `Vary`
/// already names it (in any case) or is `*`. Allocates only when appending.
pub fn ensure_vary_accept_encoding(resp: &mut ResponseHeader) {
    let mut combined: Vec<u8> = Vec::new();
    for value in resp.headers.get_all(header::VARY) {
        for name in value.as_bytes().split(|b| *b == b',') {
            let name = name.trim_ascii();
            if name == b"*" || name.eq_ignore_ascii_case(b"accept-encoding") {
                return;
            }
            if name.is_empty() {
                continue;
            }
            if !combined.is_empty() {
                combined.extend_from_slice(b", ");
            }
            combined.extend_from_slice(name);
        }
    }
    if combined.is_empty() {
        let _ = resp.insert_header(&crate::headers::cased::VARY, ACCEPT_ENCODING_VALUE);
        return;
    }
    combined.extend_from_slice(b", Accept-Encoding");
    match HeaderValue::from_bytes(&combined) {
        Ok(v) => {
            let _ = resp.insert_header(&crate::headers::cased::VARY, v);
        }
        // The names came from valid header values, so this is not expected; a second Vary
        // line means the same.
        Err(_) => {
            let _ = resp.append_header(header::VARY, ACCEPT_ENCODING_VALUE);
        }
    }
}

/// The error inside the `io::Error` (kind `InvalidData`) a decoding [`BodyCoder`] returns when a
/// body decodes to more than [`CompressionPolicy::max_decompressed`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("decompressed body exceeds the limit of {limit} bytes")]
pub(crate) struct DecompressedTooLarge {
    /// The limit that was exceeded.
    pub limit: usize,
}

impl DecompressedTooLarge {}

#[cfg(test)]
impl DecompressedTooLarge {
    /// The limit error inside `err`, if that is what `err` is.
    pub(crate) fn find(err: &io::Error) -> Option<&DecompressedTooLarge> {
        err.get_ref()?.downcast_ref()
    }
}

/// The sink decoders write into: refuses to hold more than `max` bytes over the whole body, so
/// a decompression bomb stops at the limit instead of filling memory.
struct Limited {
    buf: Vec<u8>,
    total: usize,
    max: usize,
}

impl Limited {
    fn new(max: usize) -> Limited {
        Limited {
            buf: Vec::new(),
            total: 0,
            max,
        }
    }

    fn take(&mut self) -> Bytes {
        Bytes::from(std::mem::take(&mut self.buf))
    }
}

impl Write for Limited {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let total = self.total.saturating_add(data.len());
        if total > self.max {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                DecompressedTooLarge { limit: self.max },
            ));
        }
        self.buf.extend_from_slice(data);
        self.total = total;
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

enum CoderState {
    Gzip(Box<GzEncoder<Vec<u8>>>),
    Brotli(Box<brotli::CompressorWriter<Vec<u8>>>),
    Gunzip(Box<MultiGzDecoder<Limited>>),
    Unbrotli(Box<brotli::DecompressorWriter<Limited>>),
    Finished,
    Failed,
}

/// A streaming encoder or decoder for one response body.
///
/// Encoders write into a buffer that [`BodyCoder::push`] drains; they are never flushed
/// between chunks (a flush ends a deflate block or brotli metablock and costs ratio), so a
/// push often returns nothing and the bytes come out in larger pieces or at
/// [`BodyCoder::finish`]. Decoders return what each chunk decodes to.
///
/// Decoding is bounded: once the total decoded output would exceed the policy's
/// [`CompressionPolicy::max_decompressed`], `push`/`finish` fail with `DecompressedTooLarge`
/// inside the `io::Error`, having held at most that many bytes (plus the decoders' fixed
/// buffers). Corrupt or truncated input and data after the end of the coded stream are
/// `io::Error`s too. After any error the coder is spent: every later call fails.
///
/// With [`CompressionPolicy::plan`] and [`apply_compression_headers`](crate::apply_compression_headers), this is the whole response filter of
/// any `ProxyHttp` (`upstream_response_filter` plans and rewrites the head,
/// `upstream_response_body_filter` pushes the chunks):
///
/// ```
/// use proxy_core::{
///     apply_compression_headers, BodyCoder, CompressionPlan, CompressionPolicy, Encoding,
/// };
/// use proxy_core::pingora::http::{RequestHeader, ResponseHeader};
///
/// let policy = CompressionPolicy::default();
/// let mut req = RequestHeader::build("GET", b"/app.js", None).unwrap();
/// req.insert_header("accept-encoding", "gzip").unwrap();
/// let mut resp = ResponseHeader::build(200, None).unwrap();
/// resp.insert_header("content-type", "application/javascript").unwrap();
///
/// let plan = policy.plan(&req, &resp);
/// assert_eq!(plan, CompressionPlan::Compress(Encoding::Gzip));
/// apply_compression_headers(&plan, &mut resp);
/// assert_eq!(resp.headers["content-encoding"], "gzip");
///
/// let mut coder = BodyCoder::new(&plan, &policy).expect("a plan that codes");
/// let mut body = coder.push(&b"function f() { return 1; }\n".repeat(100)).unwrap().to_vec();
/// body.extend_from_slice(&coder.finish().unwrap());
/// assert_eq!(&body[..2], &[0x1f, 0x8b], "a gzip stream");
/// assert!(body.len() < 2700);
/// ```
pub struct BodyCoder {
    state: CoderState,
    saw_input: bool,
}

impl std::fmt::Debug for BodyCoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            CoderState::Gzip(_) => "gzip encoder",
            CoderState::Brotli(_) => "brotli encoder",
            CoderState::Gunzip(_) => "gzip decoder",
            CoderState::Unbrotli(_) => "brotli decoder",
            CoderState::Finished => "finished",
            CoderState::Failed => "failed",
        };
        f.debug_struct("BodyCoder").field("state", &state).finish()
    }
}

impl BodyCoder {
    /// The coder for a plan: an encoder at the policy's level for [`Plan::Compress`], a decoder
    /// capped at [`CompressionPolicy::max_decompressed`] for [`Plan::Decompress`]; `None` for
    /// [`Plan::Leave`] and for plans naming [`Encoding::Identity`].
    pub fn new(plan: &Plan, policy: &CompressionPolicy) -> Option<BodyCoder> {
        let state = match *plan {
            Plan::Leave
            | Plan::Compress(Encoding::Identity)
            | Plan::Decompress(Encoding::Identity) => return None,
            Plan::Compress(Encoding::Gzip) => CoderState::Gzip(Box::new(GzEncoder::new(
                Vec::new(),
                Compression::new(policy.gzip_level),
            ))),
            Plan::Compress(Encoding::Brotli) => {
                CoderState::Brotli(Box::new(brotli::CompressorWriter::new(
                    Vec::new(),
                    BROTLI_BUFFER,
                    policy.brotli_quality,
                    BROTLI_LGWIN,
                )))
            }
            Plan::Decompress(Encoding::Gzip) => CoderState::Gunzip(Box::new(MultiGzDecoder::new(
                Limited::new(policy.max_decompressed),
            ))),
            Plan::Decompress(Encoding::Brotli) => {
                CoderState::Unbrotli(Box::new(brotli::DecompressorWriter::new(
                    Limited::new(policy.max_decompressed),
                    BROTLI_BUFFER,
                )))
            }
        };
        Some(BodyCoder {
            state,
            saw_input: false,
        })
    }

    /// Feeds one chunk of the body; returns the output that is ready, possibly empty.
    ///
    /// # Errors
    ///
    /// Decoding errors, the decompression limit (`DecompressedTooLarge`), a push after
    /// [`BodyCoder::finish`], or any call after an earlier error.
    pub fn push(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        let result = self.push_inner(chunk);
        if result.is_err() {
            self.state = CoderState::Failed;
        }
        result
    }

    fn push_inner(&mut self, chunk: &[u8]) -> io::Result<Bytes> {
        if chunk.is_empty() && !matches!(self.state, CoderState::Finished | CoderState::Failed) {
            return Ok(Bytes::new());
        }
        self.saw_input = true;
        match &mut self.state {
            CoderState::Gzip(enc) => {
                enc.write_all(chunk)?;
                Ok(Bytes::from(std::mem::take(enc.get_mut())))
            }
            CoderState::Brotli(enc) => {
                enc.write_all(chunk)?;
                Ok(Bytes::from(std::mem::take(enc.get_mut())))
            }
            CoderState::Gunzip(dec) => {
                dec.write_all(chunk)?;
                // flate2 keeps up to one buffer of decoded bytes until the next write; flushing
                // a decoder hands them over and costs nothing in ratio.
                dec.flush()?;
                Ok(dec.get_mut().take())
            }
            CoderState::Unbrotli(dec) => {
                dec.write_all(chunk)?;
                Ok(dec.get_mut().take())
            }
            CoderState::Finished => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "body coder: push after finish",
            )),
            CoderState::Failed => Err(spent()),
        }
    }

    /// Ends the body; returns the rest of the output. A second call returns nothing.
    ///
    /// A decoder that was given no bytes at all returns an empty body (an empty upstream body
    /// with a `Content-Encoding` is empty, not corrupt).
    ///
    /// # Errors
    ///
    /// A truncated or corrupt coded body, the decompression limit, or an earlier error.
    pub fn finish(&mut self) -> io::Result<Bytes> {
        let state = std::mem::replace(&mut self.state, CoderState::Finished);
        let result = match state {
            CoderState::Gzip(enc) => enc.finish().map(Bytes::from),
            CoderState::Brotli(enc) => Ok(Bytes::from(enc.into_inner())),
            CoderState::Gunzip(_) | CoderState::Unbrotli(_) if !self.saw_input => Ok(Bytes::new()),
            CoderState::Gunzip(dec) => dec.finish().map(|mut sink| sink.take()),
            CoderState::Unbrotli(mut dec) => dec.close().map(|()| dec.get_mut().take()),
            CoderState::Finished => Ok(Bytes::new()),
            CoderState::Failed => Err(spent()),
        };
        if result.is_err() {
            self.state = CoderState::Failed;
        }
        result
    }
}

fn spent() -> io::Error {
    io::Error::other("body coder: an earlier call failed")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn req(method: &str, ae: Option<&str>) -> RequestHeader {
        let mut r = RequestHeader::build(method, b"/app.js", None).unwrap();
        if let Some(ae) = ae {
            r.insert_header("accept-encoding", ae).unwrap();
        }
        r
    }

    fn resp(status: u16, headers: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(status, None).unwrap();
        for (k, v) in headers {
            r.append_header(k.to_string(), *v).unwrap();
        }
        r
    }

    fn js(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 100);
        let mut i = 0u32;
        while out.len() < len {
            let x = i.wrapping_mul(2_654_435_761) >> 20;
            out.extend_from_slice(
                format!("function handler{i}(event{x}) {{ return render(event{x}.value * {x}, \"item-{i}\"); }}\n")
                    .as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    fn gunzip(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn unbrotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        brotli::Decompressor::new(data, 4096)
            .read_to_end(&mut out)
            .unwrap();
        out
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut enc = GzEncoder::new(Vec::new(), Compression::new(6));
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    fn brotli_compress(data: &[u8], quality: u32) -> Vec<u8> {
        let mut enc = brotli::CompressorWriter::new(Vec::new(), 4096, quality, 22);
        enc.write_all(data).unwrap();
        enc.into_inner()
    }

    /// Runs `input` through a coder in `chunk`-sized pushes.
    fn run(plan: Plan, policy: &CompressionPolicy, input: &[u8], chunk: usize) -> Vec<u8> {
        let mut coder = BodyCoder::new(&plan, policy).unwrap();
        let mut out = Vec::new();
        for c in input.chunks(chunk.max(1)) {
            out.extend_from_slice(&coder.push(c).unwrap());
        }
        out.extend_from_slice(&coder.finish().unwrap());
        out
    }

    #[test]
    fn negotiation_table() {
        use Encoding::*;
        let table: &[(&[u8], Encoding)] = &[
            (b"br", Brotli),
            (b"gzip", Gzip),
            (b"gzip, br", Brotli),
            (b"gzip, deflate, br, zstd", Brotli),
            (b"br;q=0.5, gzip;q=0.8", Gzip),
            (b"br;q=0, gzip", Gzip),
            (b"gzip;q=0, br;q=0", Identity),
            (b"*", Brotli),
            (b"*;q=0", Identity),
            (b"identity", Identity),
            (b"identity;q=0", Identity),
            (b"gzip;q=0, *", Brotli),
            (b"br;q=0, *;q=0.5", Gzip),
            (b"*;q=0.5, gzip", Gzip),
            (b"x-gzip", Gzip),
            (b"X-GZIP;Q=0.9", Gzip),
            (b"", Identity),
            (b";;q=foo,,", Identity),
            (b",,,", Identity),
            (b"GZIP", Gzip),
            (b"BR", Brotli),
            (b"br;q=1.0, gzip;q=1.0", Brotli),
            (b"gzip;q=1, br;q=1.000", Brotli),
            (b"  gzip ; q = 0.9 ,\tbr ; q=0.8 ", Gzip),
            (b"deflate, compress", Identity),
            // Invalid weights exclude the coding.
            (b"br;q=foo, gzip", Gzip),
            (b"br;q=2, gzip;q=0.1", Gzip),
            (b"br;q=1.5", Identity),
            (b"br;q=-1", Identity),
            (b"br;q=0.0001, gzip;q=0.001", Gzip),
            (b"br;q=.5", Identity),
            (b"br;q", Identity),
            (b"br;q=", Identity),
            // Other parameters are ignored; a bare ';' too.
            (b"br;level=3", Brotli),
            (b"gzip;", Gzip),
            // Listed twice: the lowest weight counts.
            (b"gzip, gzip;q=0", Identity),
            (b"gzip;q=0.3, x-gzip;q=0.9, br;q=0.5", Brotli),
            (&[0xff, 0xfe, b',', b'g', b'z', b'i', b'p'], Gzip),
            (b"br;q=0.001", Brotli),
        ];
        for (ae, want) in table {
            assert_eq!(
                negotiate(Some(ae)),
                *want,
                "{:?}",
                String::from_utf8_lossy(ae)
            );
        }
        assert_eq!(negotiate(None), Identity);
    }

    #[test]
    fn negotiation_reads_every_header_line() {
        let mut h = HeaderMap::new();
        assert_eq!(negotiate_headers(&h), Encoding::Identity);
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(negotiate_headers(&h), Encoding::Gzip);
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br"));
        assert_eq!(negotiate_headers(&h), Encoding::Brotli);
        h.append(header::ACCEPT_ENCODING, HeaderValue::from_static("br;q=0"));
        assert_eq!(negotiate_headers(&h), Encoding::Gzip);
    }

    #[test]
    fn negotiation_never_panics_on_garbage() {
        let mut seed = 0x9e37_79b9_u32;
        let alphabet = b"brgzipx-*;q=0.15,\t ";
        for _ in 0..20_000 {
            let len = (seed % 24) as usize;
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[(seed as usize) % alphabet.len()]
                })
                .collect();
            let _ = negotiate(Some(&v));
        }
    }

    #[test]
    fn no_transform_with_or_without_a_value() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CACHE_CONTROL, v.parse().unwrap());
            has_no_transform(&h)
        };
        assert!(with("no-transform"));
        assert!(with("max-age=60, No-Transform"));
        assert!(with("no-transform=1"));
        assert!(!with("max-age=60"));
        assert!(!with("x-no-transform"));
    }

    #[test]
    fn encoding_tokens() {
        for (e, s) in [
            (Encoding::Brotli, "br"),
            (Encoding::Gzip, "gzip"),
            (Encoding::Identity, "identity"),
        ] {
            assert_eq!(e.as_str(), s);
            assert_eq!(e.header_value(), s);
            assert_eq!(e.to_string(), s);
        }
    }

    #[test]
    fn qvalues() {
        assert_eq!(parse_qvalue(b"0"), Some(0));
        assert_eq!(parse_qvalue(b"0."), Some(0));
        assert_eq!(parse_qvalue(b"0.5"), Some(500));
        assert_eq!(parse_qvalue(b"0.05"), Some(50));
        assert_eq!(parse_qvalue(b"0.123"), Some(123));
        assert_eq!(parse_qvalue(b"1"), Some(1000));
        assert_eq!(parse_qvalue(b"1.000"), Some(1000));
        for bad in [
            &b""[..],
            b"1.001",
            b"2",
            b"0.1234",
            b"a",
            b"0.5x",
            b"01",
            b".5",
            b"-0",
        ] {
            assert_eq!(
                parse_qvalue(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn compressible_types() {
        let p = CompressionPolicy::default();
        for ct in [
            "text/html",
            "text/html; charset=utf-8",
            "TEXT/CSS",
            "  application/json ;charset=UTF-8",
            "application/javascript",
            "text/javascript",
            "application/xml",
            "image/svg+xml",
            "application/wasm",
            "font/ttf",
            "font/otf",
            "application/vnd.ms-fontobject",
            "application/manifest+json",
            "application/ld+json",
        ] {
            assert!(p.is_compressible(Some(ct.as_bytes())), "{ct}");
        }
        for ct in [
            "font/woff2",
            "font/woff",
            "image/png",
            "image/jpeg",
            "image/webp",
            "application/octet-stream",
            "application/zip",
            "application/gzip",
            "video/mp4",
            "text/event-stream",
            "text/",
            "text",
            "",
            "; charset=utf-8",
            "application/jsonx",
        ] {
            assert!(!p.is_compressible(Some(ct.as_bytes())), "{ct}");
        }
        assert!(!p.is_compressible(None));

        let custom = CompressionPolicy::new(
            0,
            20,
            0,
            vec!["Application/*".into(), " image/png ".into(), "".into()],
        );
        assert_eq!(custom.gzip_level(), 1);
        assert_eq!(custom.brotli_quality(), 11);
        assert_eq!(custom.types(), ["application/", "image/png"]);
        assert!(custom.is_compressible(Some(b"application/octet-stream")));
        assert!(custom.is_compressible(Some(b"IMAGE/PNG")));
        assert!(!custom.is_compressible(Some(b"text/html")));
    }

    #[test]
    fn defaults() {
        let p = CompressionPolicy::default();
        assert_eq!(
            (p.gzip_level(), p.brotli_quality(), p.min_size()),
            (5, 5, 256)
        );
        assert_eq!(p.max_decompressed(), 64 * 1024 * 1024);
        assert_eq!(p.with_max_decompressed(10).max_decompressed(), 10);
    }

    const JS: (&str, &str) = ("content-type", "application/javascript; charset=utf-8");
    const BIG: (&str, &str) = ("content-length", "100000");

    #[test]
    fn plan_compresses_with_the_negotiated_coding() {
        let p = CompressionPolicy::default();
        let r = resp(200, &[JS, BIG]);
        let chrome = Some("gzip, deflate, br, zstd");
        assert_eq!(
            p.plan(&req("GET", chrome), &r),
            Plan::Compress(Encoding::Brotli)
        );
        assert_eq!(
            p.plan(&req("GET", Some("gzip")), &r),
            Plan::Compress(Encoding::Gzip)
        );
        assert_eq!(
            p.plan(&req("POST", Some("gzip")), &r),
            Plan::Compress(Encoding::Gzip)
        );
        // Errors are compressed too.
        assert_eq!(
            p.plan(&req("GET", chrome), &resp(404, &[JS])),
            Plan::Compress(Encoding::Brotli)
        );
        // Unknown or invalid length: compressed.
        assert_eq!(
            p.plan(&req("GET", chrome), &resp(200, &[JS])),
            Plan::Compress(Encoding::Brotli)
        );
        assert_eq!(
            p.plan(
                &req("GET", chrome),
                &resp(200, &[JS, ("content-length", "x")])
            ),
            Plan::Compress(Encoding::Brotli)
        );
        // An `identity` Content-Encoding is no coding.
        assert_eq!(
            p.plan(
                &req("GET", chrome),
                &resp(200, &[JS, BIG, ("content-encoding", "identity")])
            ),
            Plan::Compress(Encoding::Brotli)
        );
        // Exactly min_size is compressed.
        assert_eq!(
            p.plan(
                &req("GET", chrome),
                &resp(200, &[JS, ("content-length", "256")])
            ),
            Plan::Compress(Encoding::Brotli)
        );
    }

    #[test]
    fn plan_leave_rules() {
        let p = CompressionPolicy::default();
        let chrome = Some("gzip, deflate, br, zstd");
        let get = req("GET", chrome);
        let cases: Vec<(&str, RequestHeader, ResponseHeader)> = vec![
            ("HEAD", req("HEAD", chrome), resp(200, &[JS, BIG])),
            (
                "Range request",
                {
                    let mut r = req("GET", chrome);
                    r.insert_header("range", "bytes=0-99").unwrap();
                    r
                },
                resp(200, &[JS, BIG]),
            ),
            ("100", get.clone(), resp(100, &[JS])),
            ("101", get.clone(), resp(101, &[JS])),
            ("204", get.clone(), resp(204, &[JS])),
            ("304", get.clone(), resp(304, &[JS])),
            (
                "206",
                get.clone(),
                resp(206, &[JS, BIG, ("content-range", "bytes 0-99999/200000")]),
            ),
            (
                "no-transform",
                get.clone(),
                resp(200, &[JS, BIG, ("cache-control", "public, No-Transform")]),
            ),
            (
                "no-transform on a second line",
                get.clone(),
                resp(
                    200,
                    &[
                        JS,
                        BIG,
                        ("cache-control", "max-age=60"),
                        ("cache-control", "no-transform"),
                    ],
                ),
            ),
            (
                "event stream",
                get.clone(),
                resp(200, &[("content-type", "text/event-stream; charset=utf-8")]),
            ),
            (
                "small",
                get.clone(),
                resp(200, &[JS, ("content-length", "255")]),
            ),
            (
                "empty",
                get.clone(),
                resp(200, &[JS, ("content-length", "0")]),
            ),
            (
                "not compressible",
                get.clone(),
                resp(200, &[("content-type", "image/png"), BIG]),
            ),
            ("no content type", get.clone(), resp(200, &[BIG])),
            (
                "no Accept-Encoding",
                req("GET", None),
                resp(200, &[JS, BIG]),
            ),
            (
                "identity only",
                req("GET", Some("identity")),
                resp(200, &[JS, BIG]),
            ),
            (
                "already gzip, accepted",
                get.clone(),
                resp(200, &[JS, BIG, ("content-encoding", "gzip")]),
            ),
            (
                "already br, accepted",
                get.clone(),
                resp(200, &[JS, BIG, ("content-encoding", "BR")]),
            ),
            (
                "already x-gzip, accepted",
                req("GET", Some("gzip")),
                resp(200, &[JS, BIG, ("content-encoding", "x-gzip")]),
            ),
            (
                "unknown coding",
                req("GET", Some("identity")),
                resp(200, &[JS, BIG, ("content-encoding", "deflate")]),
            ),
            (
                "several codings",
                req("GET", Some("identity")),
                resp(200, &[JS, BIG, ("content-encoding", "gzip, br")]),
            ),
        ];
        for (what, rq, rs) in &cases {
            assert_eq!(p.plan(rq, rs), Plan::Leave, "{what}");
        }
    }

    #[test]
    fn the_stored_variant_is_planned_for_the_full_body_in_its_own_coding() {
        let policy = CompressionPolicy::default();
        let big_js = || resp(200, &[JS, BIG]);
        let plan = |r: &RequestHeader, mut p: ResponseHeader, stored: bool| {
            let plan = policy.plan_response(r, &mut p, stored);
            (plan, p)
        };
        // A cacheable HEAD or Range request stores the full GET's body: planned as that.
        let head = req("HEAD", Some("gzip"));
        assert_eq!(
            plan(&head, big_js(), true).0,
            Plan::Compress(Encoding::Gzip)
        );
        assert_eq!(plan(&head, big_js(), false).0, Plan::Leave);
        let mut range = req("GET", Some("br"));
        range.insert_header("range", "bytes=0-9").expect("header");
        assert_eq!(
            plan(&range, big_js(), true).0,
            Plan::Compress(Encoding::Brotli)
        );
        assert_eq!(plan(&range, big_js(), false).0, Plan::Leave);
        // The origin's own gzip, for a client that accepts it but negotiates br: passed through
        // when not stored; decoded when stored under the br variant's key.
        let gz = || resp(200, &[JS, BIG, ("content-encoding", "gzip")]);
        let both = req("GET", Some("gzip, br"));
        assert_eq!(plan(&both, gz(), false).0, Plan::Leave);
        let (stored, headers) = plan(&both, gz(), true);
        assert_eq!(stored, Plan::Decompress(Encoding::Gzip));
        assert!(headers.headers.get("content-encoding").is_none());
        // ... unless the origin forbids transforming it: left, and kept out of that variant.
        let nt = resp(
            200,
            &[
                JS,
                BIG,
                ("content-encoding", "gzip"),
                ("cache-control", "no-transform"),
            ],
        );
        let (left, headers) = plan(&both, nt, true);
        assert_eq!(left, Plan::Leave);
        assert!(!fits_variant(&both.headers, &headers.headers));
        assert_eq!(header(&headers, "vary"), Some("Accept-Encoding"));
        // The variant's own coding is stored as it is.
        let (same, headers) = plan(&req("GET", Some("gzip")), gz(), true);
        assert_eq!(same, Plan::Leave);
        assert!(fits_variant(
            &req("GET", Some("gzip")).headers,
            &headers.headers
        ));
    }

    #[test]
    fn what_fits_a_variant() {
        let ce = |v: &[&str]| {
            let mut h = HeaderMap::new();
            for v in v {
                h.append("content-encoding", HeaderValue::from_str(v).expect("value"));
            }
            h
        };
        let gzip = req("GET", Some("gzip")).headers.clone();
        let br = req("GET", Some("br, gzip")).headers.clone();
        let none = req("GET", None).headers.clone();
        for (coding, fits) in [
            (vec![], [true, true, true]),
            (vec!["identity"], [true, true, true]),
            (vec![" "], [true, true, true]),
            (vec!["gzip"], [true, false, false]),
            (vec!["X-GZIP"], [true, false, false]),
            (vec!["br"], [false, true, false]),
            (vec!["deflate"], [false, false, false]),
            (vec!["gzip", "br"], [false, false, false]),
            (vec!["gzip, br"], [false, false, false]),
        ] {
            let h = ce(&coding);
            assert_eq!(
                [
                    fits_variant(&gzip, &h),
                    fits_variant(&br, &h),
                    fits_variant(&none, &h)
                ],
                fits,
                "{coding:?}"
            );
        }
    }

    #[test]
    fn plan_decompresses_what_the_client_cannot_read() {
        let p = CompressionPolicy::default();
        let gz = resp(200, &[JS, BIG, ("content-encoding", "gzip")]);
        for ae in [None, Some("identity"), Some("gzip;q=0"), Some("br")] {
            assert_eq!(
                p.plan(&req("GET", ae), &gz),
                Plan::Decompress(Encoding::Gzip),
                "{ae:?}"
            );
        }
        let br = resp(200, &[JS, BIG, ("content-encoding", "br")]);
        assert_eq!(
            p.plan(&req("GET", Some("gzip")), &br),
            Plan::Decompress(Encoding::Brotli)
        );
        // Decoding is about correctness: small bodies and any type are decoded too.
        let small_png = resp(
            200,
            &[
                ("content-type", "image/png"),
                ("content-length", "10"),
                ("content-encoding", "gzip"),
            ],
        );
        assert_eq!(
            p.plan(&req("GET", None), &small_png),
            Plan::Decompress(Encoding::Gzip)
        );
    }

    fn header<'a>(r: &'a ResponseHeader, name: &str) -> Option<&'a str> {
        r.headers.get(name).map(|v| v.to_str().unwrap())
    }

    fn wire(r: &ResponseHeader) -> String {
        let mut buf = bytes::BytesMut::new();
        r.header_to_h1_wire(&mut buf);
        String::from_utf8(buf.to_vec()).unwrap()
    }

    #[test]
    fn headers_for_compress() {
        let mut r = resp(
            200,
            &[
                JS,
                BIG,
                ("etag", "\"v1\""),
                ("accept-ranges", "bytes"),
                ("Vary", "Origin"),
            ],
        );
        apply_headers(&Plan::Compress(Encoding::Brotli), &mut r);
        assert_eq!(header(&r, "content-encoding"), Some("br"));
        assert_eq!(header(&r, "content-length"), None);
        assert_eq!(header(&r, "accept-ranges"), None);
        assert_eq!(header(&r, "etag"), Some("W/\"v1\""));
        assert_eq!(header(&r, "vary"), Some("Origin, Accept-Encoding"));
        let w = wire(&r);
        assert_eq!(w.to_ascii_lowercase().matches("vary:").count(), 1, "{w}");
        assert!(w.contains("Content-Encoding: br\r\n"), "{w}");
        assert!(!w.to_ascii_lowercase().contains("content-length"), "{w}");
    }

    #[test]
    fn headers_for_decompress() {
        let mut r = resp(
            200,
            &[
                JS,
                BIG,
                ("content-encoding", "gzip"),
                ("etag", "W/\"v1\""),
                ("accept-ranges", "bytes"),
            ],
        );
        apply_headers(&Plan::Decompress(Encoding::Gzip), &mut r);
        assert_eq!(header(&r, "content-encoding"), None);
        assert_eq!(header(&r, "content-length"), None);
        assert_eq!(header(&r, "accept-ranges"), None);
        assert_eq!(header(&r, "etag"), Some("W/\"v1\""), "already weak");
        assert_eq!(header(&r, "vary"), Some("Accept-Encoding"));
        assert!(!wire(&r).to_ascii_lowercase().contains("content-encoding"));
    }

    #[test]
    fn headers_for_leave_are_untouched() {
        let mut r = resp(200, &[JS, BIG, ("etag", "\"v1\"")]);
        let before = wire(&r);
        apply_headers(&Plan::Leave, &mut r);
        apply_headers(&Plan::Compress(Encoding::Identity), &mut r);
        assert_eq!(wire(&r), before);
    }

    #[test]
    fn malformed_etag_is_removed() {
        let mut r = resp(200, &[JS, ("etag", "v1")]);
        apply_headers(&Plan::Compress(Encoding::Gzip), &mut r);
        assert_eq!(header(&r, "etag"), None);
    }

    #[test]
    fn vary_gets_accept_encoding_once() {
        let mut r = resp(200, &[]);
        ensure_vary_accept_encoding(&mut r);
        ensure_vary_accept_encoding(&mut r);
        assert_eq!(header(&r, "vary"), Some("Accept-Encoding"));

        let mut r = resp(200, &[("vary", "Origin, ACCEPT-ENCODING")]);
        ensure_vary_accept_encoding(&mut r);
        assert_eq!(header(&r, "vary"), Some("Origin, ACCEPT-ENCODING"));

        let mut r = resp(200, &[("vary", "*")]);
        ensure_vary_accept_encoding(&mut r);
        assert_eq!(header(&r, "vary"), Some("*"));

        let mut r = resp(200, &[("vary", "Origin,"), ("vary", " Cookie")]);
        ensure_vary_accept_encoding(&mut r);
        assert_eq!(
            r.headers.get_all("vary").iter().collect::<Vec<_>>(),
            ["Origin, Cookie, Accept-Encoding"]
        );
        assert_eq!(wire(&r).matches("ary:").count(), 1);

        let mut r = resp(200, &[("vary", "")]);
        ensure_vary_accept_encoding(&mut r);
        assert_eq!(header(&r, "vary"), Some("Accept-Encoding"));
    }

    #[test]
    fn round_trips() {
        let p = CompressionPolicy::default();
        let inputs = [Vec::new(), b"x".to_vec(), js(300), js(200_000)];
        for input in &inputs {
            for chunk in [1, 7, 4096, 65_536, usize::MAX] {
                if chunk == 1 && input.len() > 20_000 {
                    continue;
                }
                let gz = run(Plan::Compress(Encoding::Gzip), &p, input, chunk);
                assert_eq!(gunzip(&gz), *input, "gzip, {} in {chunk}", input.len());
                let br = run(Plan::Compress(Encoding::Brotli), &p, input, chunk);
                assert_eq!(unbrotli(&br), *input, "br, {} in {chunk}", input.len());
                if input.len() > 1000 {
                    assert!(gz.len() < input.len() / 4, "gzip ratio {}", gz.len());
                    assert!(br.len() < input.len() / 4, "br ratio {}", br.len());
                }

                let back = run(Plan::Decompress(Encoding::Gzip), &p, &gzip(input), chunk);
                assert_eq!(back, *input, "gunzip, {} in {chunk}", input.len());
                let back = run(
                    Plan::Decompress(Encoding::Brotli),
                    &p,
                    &brotli_compress(input, 5),
                    chunk,
                );
                assert_eq!(back, *input, "unbrotli, {} in {chunk}", input.len());
            }
        }
        // 1-byte chunks of a larger body.
        let input = js(20_000);
        assert_eq!(
            gunzip(&run(Plan::Compress(Encoding::Gzip), &p, &input, 1)),
            input
        );
        assert_eq!(
            unbrotli(&run(Plan::Compress(Encoding::Brotli), &p, &input, 1)),
            input
        );
    }

    #[test]
    fn chunking_does_not_cost_ratio() {
        let p = CompressionPolicy::default();
        let input = js(30_000);
        for e in [Encoding::Gzip, Encoding::Brotli] {
            let whole = run(Plan::Compress(e), &p, &input, usize::MAX).len();
            let bytewise = run(Plan::Compress(e), &p, &input, 1).len();
            assert!(
                bytewise <= whole + whole / 50,
                "{e}: {bytewise} in 1-byte pushes vs {whole} in one"
            );
        }
    }

    #[test]
    fn coders_for_plans() {
        let p = CompressionPolicy::default();
        assert!(BodyCoder::new(&Plan::Leave, &p).is_none());
        assert!(BodyCoder::new(&Plan::Compress(Encoding::Identity), &p).is_none());
        assert!(BodyCoder::new(&Plan::Decompress(Encoding::Identity), &p).is_none());
        fn send<T: Send>() {}
        send::<BodyCoder>();
        // Small enough to sit in the per-request context.
        assert!(std::mem::size_of::<BodyCoder>() <= 24);
    }

    #[test]
    fn decoder_errors() {
        let p = CompressionPolicy::default();
        let input = js(50_000);
        // An empty coded body is an empty body.
        for e in [Encoding::Gzip, Encoding::Brotli] {
            let mut c = BodyCoder::new(&Plan::Decompress(e), &p).unwrap();
            assert!(c.push(b"").unwrap().is_empty());
            assert!(c.finish().unwrap().is_empty());
            assert!(c.finish().unwrap().is_empty(), "second finish");
            assert!(c.push(b"x").is_err(), "push after finish");
        }
        // Truncated.
        let gz = gzip(&input);
        let mut c = BodyCoder::new(&Plan::Decompress(Encoding::Gzip), &p).unwrap();
        c.push(&gz[..gz.len() - 4]).unwrap();
        assert!(c.finish().is_err());
        let br = brotli_compress(&input, 5);
        let mut c = BodyCoder::new(&Plan::Decompress(Encoding::Brotli), &p).unwrap();
        c.push(&br[..br.len() / 2]).unwrap();
        assert!(c.finish().is_err());
        // Corrupt.
        let mut c = BodyCoder::new(&Plan::Decompress(Encoding::Gzip), &p).unwrap();
        let r = c.push(b"this is not gzip at all").and_then(|_| c.finish());
        assert!(r.is_err());
        assert!(c.push(b"more").is_err(), "spent after an error");
        assert!(c.finish().is_err(), "spent after an error");
        let mut c = BodyCoder::new(&Plan::Decompress(Encoding::Brotli), &p).unwrap();
        let r = c
            .push(&[0xff; 64])
            .and_then(|_| c.push(&[0xff; 64]))
            .and_then(|_| c.finish());
        assert!(r.is_err());
        // Several gzip members are one body.
        let mut two = gzip(b"hello, ");
        two.extend_from_slice(&gzip(b"world"));
        assert_eq!(
            run(Plan::Decompress(Encoding::Gzip), &p, &two, 3),
            b"hello, world"
        );
    }

    /// 100 MB of zeros, gzip-compressed (about 100 KB), refused at 1 MB: the coder fails after
    /// a few pushes, having returned at most 1 MB, and never holds more than that.
    #[test]
    fn decompression_bomb_is_refused() {
        const MB: usize = 1024 * 1024;
        let zeros = vec![0u8; MB];
        let mut enc = GzEncoder::new(Vec::new(), Compression::new(9));
        for _ in 0..100 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < MB / 4, "bomb is {} bytes", bomb.len());

        let p = CompressionPolicy::default().with_max_decompressed(MB);
        let mut c = BodyCoder::new(&Plan::Decompress(Encoding::Gzip), &p).unwrap();
        let mut returned = 0;
        let mut pushed = 0;
        let err = loop {
            match c.push(&bomb[pushed..(pushed + 1024).min(bomb.len())]) {
                Ok(out) => returned += out.len(),
                Err(e) => break e,
            }
            pushed += 1024;
            assert!(pushed < bomb.len(), "the whole bomb was accepted");
        };
        assert!(returned <= MB);
        assert!(
            pushed < bomb.len() / 10,
            "stopped after {pushed} bytes of input"
        );
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            DecompressedTooLarge::find(&err),
            Some(&DecompressedTooLarge { limit: MB })
        );
        assert!(c.finish().is_err());

        // The same in one push: refused, nothing returned.
        let mut c = BodyCoder::new(&Plan::Decompress(Encoding::Gzip), &p).unwrap();
        let err = c.push(&bomb).unwrap_err();
        assert!(DecompressedTooLarge::find(&err).is_some());

        // Brotli, 16 MB of zeros (a few dozen bytes coded), at 1 MB.
        let mut enc = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
        for _ in 0..16 {
            enc.write_all(&zeros).unwrap();
        }
        let bomb = enc.into_inner();
        let mut c = BodyCoder::new(&Plan::Decompress(Encoding::Brotli), &p).unwrap();
        let err = c.push(&bomb).and_then(|_| c.finish()).unwrap_err();
        assert!(DecompressedTooLarge::find(&err).is_some(), "{err}");

        // At exactly the limit a body is fine.
        let exact = CompressionPolicy::default().with_max_decompressed(MB);
        assert_eq!(
            run(
                Plan::Decompress(Encoding::Gzip),
                &exact,
                &gzip(&zeros),
                4096
            )
            .len(),
            MB
        );
    }
}
