//! The connection front: HTTP/1 request heads are read here, with deadlines and size limits,
//! before Pingora parses them.
//!
//! Pingora reads request headers with a per-read timeout only (a client sending one byte every
//! few seconds is never cut off) and accepts up to 1 MiB of headers, answering a bare 400 beyond.
//! [`Front`] wraps any Pingora [`HttpServerApp`] (the proxy) and, for each HTTP/1 request on a
//! connection: waits for the first byte (up to `client_header_timeout` on a new connection, the
//! keepalive timeout between requests; silence is closed without an answer), then gives the whole head
//! `client_header_timeout` to arrive (408 after), refuses heads over `max_header_bytes` or with
//! more than `max_header_count` lines (431), refuses heads whose framing could be read two ways
//! (request smuggling shapes, see [`check_head`]: 400), and hands the bytes read to Pingora's
//! parser as a prefix. HTTP/2 connections go straight to the app; the h2 layer enforces its own
//! limits.
//!
//! Every refusal carries `Connection: close` and the `[headers]` security headers, and the
//! connection is closed after it: nothing of a refused request reaches Pingora or an upstream.
//!
//! Before any of that, a TCP peer that already holds `max_connections_per_peer` connections
//! (HTTP/1 or HTTP/2, any listener of the same service) has the new one closed at once, unless
//! the peer is a trusted proxy (`[client_ip] trusted`).

use crate::access_log::AccessRecord;
use crate::client_ip::{canonical, TrustedProxies};
use crate::config::DownstreamSettings;
use crate::headers::HeaderPolicy;
use crate::metrics::InFlight;
use crate::ratelimit::ConnLimiter;
use crate::state::ProxyState;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use prometheus::IntGauge;
use std::any::Any;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant, Sleep};

/// Wraps an HTTP app with header deadlines and limits. See the module docs.
pub(crate) struct Front<A> {
    app: Arc<A>,
    limits: DownstreamSettings,
    policy: HeaderPolicy,
    open: Option<IntGauge>,
    per_peer: ConnLimiter,
    exempt: TrustedProxies,
    /// Where the front's own answers are counted and logged: the current state's metrics and
    /// access log (none in unit tests).
    state: Option<Arc<ArcSwap<ProxyState>>>,
}

impl<A> Front<A> {
    /// Wraps `app`; `policy` supplies the security headers of the front's own 400/408/431
    /// answers. `limits.max_connections_per_peer` caps the connections of each TCP peer (0: no
    /// cap); no peer is exempt until [`Front::with_exempt_peers`].
    pub(crate) fn new(app: A, limits: DownstreamSettings, policy: HeaderPolicy) -> Self {
        Front {
            app: Arc::new(app),
            per_peer: ConnLimiter::new(limits.max_connections_per_peer),
            limits,
            policy,
            open: None,
            exempt: TrustedProxies::new(Vec::new()),
            state: None,
        }
    }

    /// Peers whose connections are never capped by `max_connections_per_peer`: the proxy's
    /// own trusted proxies (`[client_ip] trusted`, e.g. Cloudflare), which carry many clients
    /// each.
    pub(crate) fn with_exempt_peers(mut self, exempt: TrustedProxies) -> Self {
        self.exempt = exempt;
        self
    }

    /// Counts the connections being served in `gauge`: up when [`ServerApp::process_new`]
    /// starts, down when it returns (or unwinds).
    pub(crate) fn with_connection_gauge(mut self, gauge: IntGauge) -> Self {
        self.open = Some(gauge);
        self
    }

    /// Counts the front's own answers (`galion_edge_malformed_requests_total`) and writes them
    /// to the access log of `state`'s current config, as the service does for its answers.
    pub(crate) fn with_state(mut self, state: Arc<ArcSwap<ProxyState>>) -> Self {
        self.state = Some(state);
        self
    }

    /// Records one answer of the front: the metric, and an access-log line with the TCP peer
    /// as the client (the front answers before the real client IP is resolved), the request
    /// line's method and target when it has them, and `-` for what no request has yet. Called
    /// before the answer is written, so that a client that has read the answer finds it
    /// counted; the line's duration ends there too.
    fn record(&self, peer: Option<IpAddr>, head: &[u8], answer: Answered, started: Instant) {
        let Some(state) = &self.state else { return };
        let state = state.load();
        state.metrics.front_answer(answer.status, answer.reason);
        let line = head
            .split(|b| *b == b'\n')
            .find(|l| !l.iter().all(|b| *b == b'\r'))
            .unwrap_or_default();
        let line = String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line));
        let mut parts = line.split(' ');
        let (method, uri) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let protocol = parts.next().unwrap_or("");
        state.access_log.log(&AccessRecord {
            client_ip: peer,
            host: "-",
            method: if method.is_empty() { "-" } else { method },
            uri: if uri.is_empty() { "-" } else { uri },
            protocol: if protocol.is_empty() { "-" } else { protocol },
            status: answer.status,
            bytes_sent: answer.body_len,
            referer: "",
            user_agent: "",
            duration: started.elapsed(),
            upstream: None,
            upstream_time: None,
            request_id: "-",
            site: "-",
            cache: "-",
            cache_reason: answer.reason,
        });
    }
}

/// One answer the front wrote itself.
#[derive(Debug, Clone, Copy)]
struct Answered {
    status: u16,
    /// The metric's `reason` label, also in the access log's cache-reason field.
    reason: &'static str,
    body_len: usize,
}

/// What reading one request head gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Head {
    /// A complete head (and maybe some body bytes after it).
    Ready(BytesMut),
    /// The client went away or stayed idle past the keepalive timeout before sending a byte.
    Closed,
    /// The head did not arrive within the header timeout.
    TooSlow,
    /// The head is larger than allowed.
    TooLarge,
    /// The head has too many header lines.
    TooManyHeaders,
}

/// Reads one request head from `stream`. `idle` bounds the wait for the first byte, then the
/// whole head must arrive within `header_timeout`.
#[cfg(test)]
pub(crate) async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    idle: Duration,
    header_timeout: Duration,
    max_bytes: usize,
    max_lines: usize,
) -> Head {
    let timer = std::pin::pin!(tokio::time::sleep(idle));
    let limits = HeadLimits {
        idle,
        header_timeout,
        max_bytes,
        max_lines,
    };
    read_head_timed(stream, timer, BytesMut::new(), limits).await
}

/// [`read_head`] with a timer the caller keeps for the connection's life, as [`Front`] does.
///
/// The timer is moved forward for each head. While its deadline only grows that is an atomic
/// update of the registered timer; a new tokio timer per request would be inserted into and
/// removed from the runtime's timer wheel every time (1.3% of the proxy's samples on `tls-h1`
/// went to that). It is moved back, a re-registration, only for a head that did not arrive in
/// one read.
pub(crate) async fn read_head_timed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    mut timer: Pin<&mut Sleep>,
    pending: BytesMut,
    limits: HeadLimits,
) -> Head {
    let HeadLimits {
        idle,
        header_timeout,
        max_bytes,
        max_lines,
    } = limits;
    // Bytes of this head already read with the previous request (a pipelined request), if any.
    let mut buf = if pending.is_empty() {
        BytesMut::with_capacity(4096)
    } else {
        pending
    };
    timer.as_mut().reset(Instant::now() + idle);
    // Whether the timer bounds the whole head yet (it bounds the wait for the first byte until
    // the first read that leaves the head incomplete).
    let mut head_deadline = false;
    loop {
        if let Some(end) = head_end(&buf) {
            let lines = buf[..end].iter().filter(|b| **b == b'\n').count();
            // The request line and the blank line are not headers.
            if lines.saturating_sub(2) > max_lines {
                return Head::TooManyHeaders;
            }
            if end > max_bytes {
                return Head::TooLarge;
            }
            return Head::Ready(buf);
        }
        if buf.len() > max_bytes {
            return Head::TooLarge;
        }
        if !buf.is_empty() && !head_deadline {
            // Microseconds after the first bytes: the head's deadline counts from them.
            head_deadline = true;
            timer.as_mut().reset(Instant::now() + header_timeout);
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096.min(max_bytes + 4 - buf.len()).max(1024));
        }
        let read = tokio::select! {
            biased;
            read = stream.read_buf(&mut buf) => Some(read),
            () = timer.as_mut() => None,
        };
        match read {
            None => {
                return if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    Head::Closed
                } else {
                    Head::TooSlow
                }
            }
            Some(Err(_)) | Some(Ok(0)) => return Head::Closed,
            Some(Ok(_)) => {}
        }
    }
}

/// The bounds of one head read by [`read_head_timed`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadLimits {
    /// How long to wait for the head's first byte.
    pub(crate) idle: Duration,
    /// How long the whole head may take from its first byte.
    pub(crate) header_timeout: Duration,
    /// The most bytes a head may have.
    pub(crate) max_bytes: usize,
    /// The most header lines a head may have.
    pub(crate) max_lines: usize,
}

/// Index just past the blank line that ends a head (`\r\n\r\n` or a bare `\n\n`).
fn head_end(buf: &[u8]) -> Option<usize> {
    // Leading empty lines before the request line are allowed (RFC 9112 §2.2).
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let body = &buf[start..];
    let mut i = 0;
    while let Some(p) = body[i..].iter().position(|b| *b == b'\n') {
        let nl = i + p;
        let rest = &body[nl + 1..];
        if rest.first() == Some(&b'\n') {
            return Some(start + nl + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(start + nl + 3);
        }
        i = nl + 1;
    }
    None
}

/// Whether `b` may appear in a token (RFC 9110 §5.6.2), such as a method.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The authority of an absolute-form `http://` or `https://` target, if it is one.
fn absolute_form_authority(target: &[u8]) -> Option<&[u8]> {
    let rest = [&b"http://"[..], b"https://"].iter().find_map(|scheme| {
        (target.len() >= scheme.len() && target[..scheme.len()].eq_ignore_ascii_case(scheme))
            .then(|| &target[scheme.len()..])
    })?;
    let end = rest
        .iter()
        .position(|b| matches!(b, b'/' | b'?' | b'#'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Why [`check_head`] refused a complete HTTP/1 request head. Each is answered with `400`
/// and a closed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Malformed {
    /// A header line does not parse: no colon, whitespace before the colon, a control byte
    /// (NUL, bare CR) in a name or value.
    BadHeader,
    /// A header line starts with a space or tab (obsolete line folding, RFC 9112 §5.2).
    ObsFold,
    /// Both `Content-Length` and `Transfer-Encoding` (RFC 9112 §6.3 allows a server to reject
    /// this; an upstream that reads the other one would see a different body).
    LengthAndChunked,
    /// More than one `Content-Length` line, or a comma-separated list.
    DuplicateContentLength,
    /// A `Content-Length` that is not 1–18 decimal digits.
    BadContentLength,
    /// A `Transfer-Encoding` other than one `chunked`, or one on an HTTP/1.0 request.
    BadTransferEncoding,
    /// More than one `Host` line.
    DuplicateHost,
    /// `Content_Length` or `Transfer_Encoding`: servers that fold `_` into `-` (CGI/WSGI
    /// conventions) would read them as framing headers the proxy did not.
    LookalikeFraming,
    /// An absolute-form target (`GET http://a/ HTTP/1.1`) whose authority differs from `Host`
    /// (RFC 9112 §3.2.2 lets either win; a proxy and an origin could pick differently).
    HostMismatch,
    /// Userinfo (`user@`) in `Host` or in an absolute-form target.
    UserInfo,
    /// `CONNECT`: the proxy is not a tunnel (answered `405`).
    Connect,
    /// A request line with a control byte (NUL, DEL, bare CR, …), a method that is not a
    /// token, or a version other than `HTTP/1.0` and `HTTP/1.1` at its end.
    BadRequestLine,
    /// A target that is neither a path (`/…`), nor an `http(s)://` absolute form, nor `*` for
    /// `OPTIONS`: authority-form (`host:port`) outside `CONNECT`, other schemes.
    BadTarget,
}

impl Malformed {
    /// The body of the `400` answer: one line naming the problem.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Malformed::BadHeader => "bad request: malformed header line\n",
            Malformed::ObsFold => "bad request: obsolete header line folding\n",
            Malformed::LengthAndChunked => {
                "bad request: both content-length and transfer-encoding\n"
            }
            Malformed::DuplicateContentLength => "bad request: more than one content-length\n",
            Malformed::BadContentLength => "bad request: invalid content-length\n",
            Malformed::BadTransferEncoding => "bad request: unsupported transfer-encoding\n",
            Malformed::DuplicateHost => "bad request: more than one host\n",
            Malformed::LookalikeFraming => "bad request: header name with '_' mimics framing\n",
            Malformed::HostMismatch => "bad request: host differs from the request target\n",
            Malformed::UserInfo => "bad request: userinfo in host\n",
            Malformed::Connect => "method not allowed: this server is not a proxy\n",
            Malformed::BadRequestLine => "bad request: malformed request line\n",
            Malformed::BadTarget => "bad request: request target is not a path\n",
        }
    }

    /// The `reason` label of `galion_edge_malformed_requests_total`.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Malformed::BadHeader => "bad_header",
            Malformed::ObsFold => "obs_fold",
            Malformed::LengthAndChunked => "length_and_chunked",
            Malformed::DuplicateContentLength => "duplicate_content_length",
            Malformed::BadContentLength => "bad_content_length",
            Malformed::BadTransferEncoding => "bad_transfer_encoding",
            Malformed::DuplicateHost => "duplicate_host",
            Malformed::LookalikeFraming => "lookalike_framing",
            Malformed::HostMismatch => "host_mismatch",
            Malformed::UserInfo => "userinfo",
            Malformed::Connect => "connect",
            Malformed::BadRequestLine => "bad_request_line",
            Malformed::BadTarget => "bad_target",
        }
    }

    /// The status code and reason phrase of the answer: `405` for [`Malformed::Connect`],
    /// `400` otherwise.
    pub(crate) fn status(self) -> (u16, &'static str) {
        match self {
            Malformed::Connect => (405, "Method Not Allowed"),
            _ => (400, "Bad Request"),
        }
    }
}

/// Most header lines [`check_head`] parses; the front's `max_header_count` (≤ 250) refuses
/// more before it is called.
const MAX_CHECKED_HEADERS: usize = 256;
/// Heads with up to this many lines are checked without an allocation.
const INLINE_CHECKED_HEADERS: usize = 32;

/// Checks a complete head (as returned in [`Head::Ready`]) for shapes that two HTTP parsers
/// could read differently: framing (`Content-Length`/`Transfer-Encoding`), folded or malformed
/// header lines, and which host is meant (duplicate `Host`, userinfo, an absolute-form target
/// naming another host), plus `CONNECT`. The rest of the request line is left to Pingora's
/// parser (which percent-escapes some illegal target bytes rather than failing); routing then
/// refuses bad targets. Allocation-free for heads of up to 32 lines.
pub(crate) fn check_head(buf: &[u8]) -> Result<(), Malformed> {
    let Some(end) = head_end(buf) else {
        return Ok(());
    };
    let start = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(end);
    let head = &buf[start..end];
    let Some(nl) = head.iter().position(|b| *b == b'\n') else {
        return Ok(());
    };
    let request_line = head[..nl].trim_ascii_end();
    // Pingora percent-escapes some illegal target bytes; control bytes are refused here.
    if request_line.iter().any(|b| b.is_ascii_control()) {
        return Err(Malformed::BadRequestLine);
    }
    let mut parts = request_line.split(|b| *b == b' ').filter(|p| !p.is_empty());
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let version = request_line
        .rsplit(|b| *b == b' ')
        .next()
        .unwrap_or_default();
    if method.is_empty()
        || !method.iter().all(|b| is_tchar(*b))
        || !(version == b"HTTP/1.1" || version == b"HTTP/1.0")
    {
        return Err(Malformed::BadRequestLine);
    }
    if method == b"CONNECT" {
        return Err(Malformed::Connect);
    }
    let target_authority = absolute_form_authority(target);
    if target.first() != Some(&b'/')
        && target_authority.is_none()
        && !(method == b"OPTIONS" && target == b"*")
    {
        return Err(Malformed::BadTarget);
    }
    if target_authority.is_some_and(|a| a.contains(&b'@')) {
        return Err(Malformed::UserInfo);
    }
    let fields = &head[nl + 1..];
    let mut lines = 0;
    for line in fields.split(|b| *b == b'\n') {
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Malformed::ObsFold);
        }
        lines += 1;
    }
    // Room for one header per line: on the stack for ordinary heads (zeroing room for all
    // `MAX_CHECKED_HEADERS` was 8 KiB of stores per request), on the heap for long ones.
    let mut inline = [httparse::EMPTY_HEADER; INLINE_CHECKED_HEADERS];
    let mut long = Vec::new();
    let storage = if lines <= INLINE_CHECKED_HEADERS {
        &mut inline[..]
    } else {
        long.resize(lines.min(MAX_CHECKED_HEADERS), httparse::EMPTY_HEADER);
        &mut long[..]
    };
    let headers = match httparse::parse_headers(fields, storage) {
        Ok(httparse::Status::Complete((_, headers))) => headers,
        // The front's line count refuses more than 250 headers before this is reached.
        Err(httparse::Error::TooManyHeaders) | Ok(httparse::Status::Partial) => return Ok(()),
        Err(_) => return Err(Malformed::BadHeader),
    };
    let (mut lengths, mut encodings, mut hosts) = (0u32, 0u32, 0u32);
    for h in headers.iter() {
        let name = h.name.as_bytes();
        let value = h.value.trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            lengths += 1;
            if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
                return Err(if value.contains(&b',') {
                    Malformed::DuplicateContentLength
                } else {
                    Malformed::BadContentLength
                });
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            encodings += 1;
            if !value.eq_ignore_ascii_case(b"chunked") {
                return Err(Malformed::BadTransferEncoding);
            }
        } else if name.eq_ignore_ascii_case(b"host") {
            hosts += 1;
            if value.contains(&b'@') {
                return Err(Malformed::UserInfo);
            }
            if target_authority.is_some_and(|a| a != value) {
                return Err(Malformed::HostMismatch);
            }
        } else if name.eq_ignore_ascii_case(b"content_length")
            || name.eq_ignore_ascii_case(b"transfer_encoding")
        {
            return Err(Malformed::LookalikeFraming);
        }
    }
    if lengths > 1 {
        return Err(Malformed::DuplicateContentLength);
    }
    if encodings > 1 || (encodings == 1 && request_line.ends_with(b"HTTP/1.0")) {
        return Err(Malformed::BadTransferEncoding);
    }
    if encodings == 1 && lengths == 1 {
        return Err(Malformed::LengthAndChunked);
    }
    if hosts > 1 {
        return Err(Malformed::DuplicateHost);
    }
    Ok(())
}

impl<A> Front<A> {
    async fn refuse(&self, stream: &mut Stream, status: u16, reason: &str, body: &str) {
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\nserver: {}\r\n",
            body.len(),
            self.policy
                .server()
                .to_str()
                .unwrap_or(crate::headers::DEFAULT_SERVER_NAME),
        );
        for (name, value) in self.policy.headers() {
            if let Ok(v) = value.to_str() {
                out.push_str(name.as_str());
                out.push_str(": ");
                out.push_str(v);
                out.push_str("\r\n");
            }
        }
        out.push_str("\r\n");
        out.push_str(body);
        let write = async {
            stream.write_all(out.as_bytes()).await?;
            stream.flush().await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), write).await;
    }
}

/// After a refusal: reads and discards what the client is still sending (a body behind a
/// refused head), for at most 64 KiB or 1 s, so that closing does not reset the connection
/// before the client has read the answer.
async fn drain(stream: &mut Stream) {
    let mut buf = [0u8; 4096];
    let mut left = 64usize << 10;
    let deadline = Instant::now() + Duration::from_secs(1);
    while left > 0 {
        match timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => return,
        }
    }
}

#[async_trait]
impl<A> ServerApp for Front<A>
where
    A: HttpServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        mut stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let open = self.open.as_ref().map(InFlight::enter);
        let peer = stream.get_socket_digest().and_then(|d| {
            d.peer_addr()
                .and_then(|a| a.as_inet())
                .map(|a| canonical(a.ip()))
        });
        // Held for the life of the connection; dropping it frees the peer's slot.
        let slot = match peer {
            Some(ip) if !self.exempt.contains(ip) => match self.per_peer.acquire(ip) {
                Ok(slot) => slot,
                Err(held) => {
                    log::debug!("{ip}: connection closed, it already holds {held}");
                    return None;
                }
            },
            _ => None,
        };
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            let _held = (open, slot);
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        // The gauge and the slot stay with every session of the connection: an upgraded one
        // is tunnelled by a task of its own after this one returns (`tunnel_upgraded_in_own_task`).
        let held: Option<Arc<dyn Any + Send + Sync>> = match (open, slot) {
            (None, None) => None,
            held => Some(Arc::new(held)),
        };
        let l = &self.limits;
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        // One timer for all the heads of the connection (see `read_head_timed`).
        let mut timer = std::pin::pin!(tokio::time::sleep(l.client_header_timeout));
        loop {
            let idle = if first {
                l.client_header_timeout
            } else {
                l.keepalive_timeout
            };
            // A pipelined request: what the previous request's session read past its end. The
            // head is checked here like any other before the session parses it.
            let pending = persistent
                .as_mut()
                .and_then(HttpPersistentSettings::take_pipelined_prefix)
                .unwrap_or_default();
            let limits = HeadLimits {
                idle,
                header_timeout: l.client_header_timeout,
                max_bytes: l.max_header_bytes,
                max_lines: l.max_header_count,
            };
            let started = Instant::now();
            let head = read_head_timed(&mut stream, timer.as_mut(), pending, limits).await;
            let refused = match &head {
                Head::Ready(_) | Head::Closed => None,
                Head::TooSlow => Some((
                    408,
                    "Request Timeout",
                    "request header timeout\n",
                    "slow_head",
                )),
                Head::TooLarge => Some((
                    431,
                    "Request Header Fields Too Large",
                    "request header too large\n",
                    "head_too_large",
                )),
                Head::TooManyHeaders => Some((
                    431,
                    "Request Header Fields Too Large",
                    "too many request headers\n",
                    "too_many_headers",
                )),
            };
            if let Some((status, phrase, body, reason)) = refused {
                let answered = Answered {
                    status,
                    reason,
                    body_len: body.len(),
                };
                self.record(peer, b"", answered, started);
                self.refuse(&mut stream, status, phrase, body).await;
                return None;
            }
            let Head::Ready(buf) = head else {
                return None;
            };
            if let Err(why) = check_head(&buf) {
                log::debug!("refused a request head: {why:?}");
                let (status, phrase) = why.status();
                let answered = Answered {
                    status,
                    reason: why.label(),
                    body_len: why.message().len(),
                };
                self.record(peer, &buf, answered, started);
                self.refuse(&mut stream, status, phrase, why.message())
                    .await;
                drain(&mut stream).await;
                return None;
            }
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(p) => p.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(Some(l.keepalive_timeout.as_secs().max(1)));
                    session.set_keepalive_reuses_remaining(Some(
                        l.keepalive_requests.saturating_sub(1),
                    ));
                    // Requests sent before the previous answer arrived (RFC 9112 §9.3.2) are
                    // answered in order; without it Pingora answers the first and closes.
                    // The settings carry it to every later session of the connection.
                    session.set_pipelining_enabled(true);
                }
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(buf);
            if let Some(held) = &held {
                session.set_connection_guard(held.clone());
            }
            let reused = self.app.process_new_http(session, shutdown).await?;
            let (s, p) = reused.consume();
            stream = s;
            persistent = p;
            first = false;
        }
    }

    async fn cleanup(&self) {
        self.app.http_cleanup().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1 KiB and 10 lines, `d` for both timeouts.
    fn test_limits(d: Duration) -> HeadLimits {
        HeadLimits {
            idle: d,
            header_timeout: d,
            max_bytes: 1024,
            max_lines: 10,
        }
    }

    #[tokio::test]
    async fn a_pipelined_head_is_read_from_the_bytes_already_read() {
        let d = Duration::from_secs(1);
        let timer = std::pin::pin!(tokio::time::sleep(d));
        // The whole head is in what was read with the previous request: no read at all.
        let mut nothing: &[u8] = b"";
        let pending = BytesMut::from(&b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3"[..]);
        let head = read_head_timed(&mut nothing, timer, pending, test_limits(d)).await;
        assert_eq!(
            head,
            Head::Ready(BytesMut::from(
                &b"GET /2 HTTP/1.1\r\nHost: a\r\n\r\nGET /3"[..]
            ))
        );
        // Half of it: the rest is read from the stream.
        let timer = std::pin::pin!(tokio::time::sleep(d));
        let mut rest: &[u8] = b"st: a\r\n\r\n";
        let pending = BytesMut::from(&b"GET /3 HTTP/1.1\r\nHo"[..]);
        let head = read_head_timed(&mut rest, timer, pending, test_limits(d)).await;
        assert_eq!(
            head,
            Head::Ready(BytesMut::from(&b"GET /3 HTTP/1.1\r\nHost: a\r\n\r\n"[..]))
        );
    }

    #[test]
    fn head_end_finds_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\n"), Some(24));
        assert_eq!(head_end(b"\r\nGET / HTTP/1.1\r\n\r\n"), Some(20));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }

    #[tokio::test]
    async fn limits() {
        let mut ok: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let d = Duration::from_secs(1);
        assert!(matches!(
            read_head(&mut ok, d, d, 1024, 10).await,
            Head::Ready(_)
        ));
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(5000));
        assert_eq!(
            read_head(&mut big.as_bytes(), d, d, 1024, 10).await,
            Head::TooLarge
        );
        let many: String = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(20));
        assert_eq!(
            read_head(&mut many.as_bytes(), d, d, 4096, 10).await,
            Head::TooManyHeaders
        );
        let mut empty: &[u8] = b"";
        assert_eq!(read_head(&mut empty, d, d, 1024, 10).await, Head::Closed);
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        let ok = |extra: &str| {
            check_head(format!("POST / HTTP/1.1\r\nHost: a\r\n{extra}\r\n").as_bytes())
        };
        assert_eq!(ok(""), Ok(()));
        assert_eq!(ok("Content-Length: 5\r\n"), Ok(()));
        assert_eq!(ok("Transfer-Encoding: chunked\r\n"), Ok(()));
        assert_eq!(ok("transfer-encoding:  Chunked \r\n"), Ok(()));
        assert_eq!(
            ok("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            Err(Malformed::LengthAndChunked)
        );
        assert_eq!(
            ok("Content-Length: 5\r\nContent-Length: 5\r\n"),
            Err(Malformed::DuplicateContentLength)
        );
        assert_eq!(
            ok("Content-Length: 5, 5\r\n"),
            Err(Malformed::DuplicateContentLength)
        );
        for bad in ["+5", "-1", "0x10", "", "5 5", "1234567890123456789"] {
            assert_eq!(
                ok(&format!("Content-Length: {bad}\r\n")),
                Err(Malformed::BadContentLength),
                "{bad:?}"
            );
        }
        for bad in [
            "chunked, identity",
            "identity",
            "xchunked",
            "gzip, chunked",
            "chunked;x=1",
        ] {
            assert_eq!(
                ok(&format!("Transfer-Encoding: {bad}\r\n")),
                Err(Malformed::BadTransferEncoding),
                "{bad:?}"
            );
        }
        assert_eq!(
            ok("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Err(Malformed::BadTransferEncoding)
        );
        assert_eq!(
            check_head(b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(Malformed::BadTransferEncoding)
        );
        assert_eq!(ok("X-A: 1\r\n  folded\r\n"), Err(Malformed::ObsFold));
        assert_eq!(ok("X-A: 1\r\n\tfolded\r\n"), Err(Malformed::ObsFold));
        assert_eq!(
            check_head(b"GET / HTTP/1.1\r\n Host: a\r\n\r\n"),
            Err(Malformed::ObsFold)
        );
        assert_eq!(
            ok("Transfer-Encoding : chunked\r\n"),
            Err(Malformed::BadHeader)
        );
        assert_eq!(ok("X-A: a\0b\r\n"), Err(Malformed::BadHeader));
        assert_eq!(ok("X-A: a\rb\r\n"), Err(Malformed::BadHeader));
        assert_eq!(ok("NoColon\r\n"), Err(Malformed::BadHeader));
        assert_eq!(ok("Host: b\r\n"), Err(Malformed::DuplicateHost));
        assert_eq!(
            ok("Transfer_Encoding: chunked\r\n"),
            Err(Malformed::LookalikeFraming)
        );
        assert_eq!(
            ok("content_length: 3\r\n"),
            Err(Malformed::LookalikeFraming)
        );
        // Bare LF line endings and leading empty lines are fine.
        assert_eq!(check_head(b"\r\nGET / HTTP/1.1\nHost: a\n\n"), Ok(()));
        assert_eq!(
            check_head(b"GET http://evil.example/ HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Malformed::HostMismatch)
        );
        assert_eq!(
            check_head(b"GET HTTP://a/x HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(())
        );
        assert_eq!(
            check_head(b"GET http://a@b/ HTTP/1.1\r\nHost: a@b\r\n\r\n"),
            Err(Malformed::UserInfo)
        );
        assert_eq!(
            ok("X: 1\r\n").and(check_head(b"GET / HTTP/1.1\r\nHost: u@a\r\n\r\n")),
            Err(Malformed::UserInfo)
        );
        assert_eq!(
            check_head(b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n"),
            Err(Malformed::Connect)
        );
        assert_eq!(
            check_head(b"GET /a\0b HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Malformed::BadRequestLine)
        );
        assert_eq!(
            check_head(b"GET /a\rb HTTP/1.1\r\nHost: a\r\n\r\n"),
            Err(Malformed::BadRequestLine)
        );
        for bad in [&b"evil.example:80"[..], b"ftp://a/x", b"*", b"a/b"] {
            let mut head = b"GET ".to_vec();
            head.extend_from_slice(bad);
            head.extend_from_slice(b" HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(check_head(&head), Err(Malformed::BadTarget));
        }
        assert_eq!(check_head(b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), Ok(()));
        for bad in [
            &b"GET / HTTP/9.9\r\nHost: a\r\n\r\n"[..],
            b"GET / HTTP/2.0\r\nHost: a\r\n\r\n",
            b"GET /\r\nHost: a\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / http/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert_eq!(check_head(bad), Err(Malformed::BadRequestLine), "{bad:?}");
        }
        // The rest of the request line is Pingora's to judge.
        assert_eq!(
            check_head(b"GET /a|b{c} HTTP/1.1\r\nHost: a\r\n\r\n"),
            Ok(())
        );
    }

    /// One timer serves every head of a connection: moved forward for each (the waits add up
    /// to more than one `idle`, and none of them times out), then a dribbled head gets
    /// `TooSlow` and silence `Closed`.
    #[tokio::test]
    async fn one_timer_serves_every_head_of_a_connection() {
        use tokio::io::AsyncWriteExt;
        let (client, mut server) = tokio::io::duplex(4096);
        let client = std::sync::Arc::new(tokio::sync::Mutex::new(client));
        let mut timer = std::pin::pin!(tokio::time::sleep(Duration::from_secs(60)));
        let d = Duration::from_millis(300);
        let send_later = |bytes: &'static [u8]| {
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(150)).await;
                client.lock().await.write_all(bytes).await.unwrap();
            })
        };
        for i in 0..4 {
            send_later(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            let head =
                read_head_timed(&mut server, timer.as_mut(), BytesMut::new(), test_limits(d)).await;
            assert!(matches!(head, Head::Ready(_)), "head {i}: {head:?}");
        }
        send_later(b"GET / HTTP/1.1\r\n");
        let started = Instant::now();
        let head =
            read_head_timed(&mut server, timer.as_mut(), BytesMut::new(), test_limits(d)).await;
        assert_eq!(head, Head::TooSlow);
        assert!(started.elapsed() >= d, "{:?}", started.elapsed());
        let started = Instant::now();
        let head =
            read_head_timed(&mut server, timer.as_mut(), BytesMut::new(), test_limits(d)).await;
        assert_eq!(head, Head::Closed);
        assert!(started.elapsed() >= d, "{:?}", started.elapsed());
    }

    /// Heads longer than the inline header room are checked in full, up to the last line.
    #[test]
    fn long_heads_are_checked_to_their_last_line() {
        for n in [
            INLINE_CHECKED_HEADERS - 4,
            INLINE_CHECKED_HEADERS,
            INLINE_CHECKED_HEADERS + 1,
            200,
        ] {
            let filler: String = (0..n).map(|i| format!("X-{i}: v\r\n")).collect();
            let head = |last: &str| format!("POST / HTTP/1.1\r\nHost: a\r\n{filler}{last}\r\n");
            assert_eq!(check_head(head("").as_bytes()), Ok(()), "{n}");
            assert_eq!(
                check_head(head("Content-Length: 1\r\nContent-Length: 2\r\n").as_bytes()),
                Err(Malformed::DuplicateContentLength),
                "{n}"
            );
            assert_eq!(
                check_head(head("Host: b\r\n").as_bytes()),
                Err(Malformed::DuplicateHost),
                "{n}"
            );
            assert_eq!(
                check_head(head("X-Bad: a\0b\r\n").as_bytes()),
                Err(Malformed::BadHeader),
                "{n}"
            );
        }
    }
}
