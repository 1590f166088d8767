//! The connection front: HTTP/1 request heads are read here, with deadlines and size limits,
//! before Pingora parses them.
//!
//! Pingora reads request headers with a per-read timeout only (a client sending one byte every
//! few seconds is never cut off) and accepts up to 1 MiB of headers, answering a bare 400 beyond.
//! [`Front`] wraps any Pingora [`HttpServerApp`] (the proxy) and, for each HTTP/1 request on a
//! connection: waits for the first byte (up to `client_header_timeout` on a new connection, the
//! keepalive timeout between requests; silence is closed without an answer), then gives the whole head
//! `client_header_timeout` to arrive (408 after), refuses heads over `max_header_bytes` or with
//! more than `max_header_count` lines (431), and hands the bytes read to Pingora's parser as a
//! prefix. HTTP/2 connections go straight to the app; the h2 layer enforces its own limits.

use crate::config::DownstreamSettings;
use crate::headers::HeaderPolicy;
use crate::metrics::InFlight;
use async_trait::async_trait;
use bytes::BytesMut;
use pingora_core::apps::{HttpPersistentSettings, HttpServerApp, ServerApp};
use pingora_core::protocols::http::ServerSession;
use pingora_core::protocols::{Stream, ALPN};
use pingora_core::server::ShutdownWatch;
use prometheus::IntGauge;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout_at, Instant};

/// Wraps an HTTP app with header deadlines and limits. See the module docs.
pub struct Front<A> {
    app: Arc<A>,
    limits: DownstreamSettings,
    policy: HeaderPolicy,
    open: Option<IntGauge>,
}

impl<A> Front<A> {
    /// Wraps `app`; `policy` supplies the security headers of the front's own 408/431 answers.
    pub fn new(app: A, limits: DownstreamSettings, policy: HeaderPolicy) -> Self {
        Front {
            app: Arc::new(app),
            limits,
            policy,
            open: None,
        }
    }

    /// Counts the connections being served in `gauge`: up when [`ServerApp::process_new`]
    /// starts, down when it returns (or unwinds).
    pub fn with_connection_gauge(mut self, gauge: IntGauge) -> Self {
        self.open = Some(gauge);
        self
    }

    /// The wrapped app.
    pub fn app(&self) -> &Arc<A> {
        &self.app
    }
}

/// What reading one request head gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Head {
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
pub async fn read_head<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    idle: Duration,
    header_timeout: Duration,
    max_bytes: usize,
    max_lines: usize,
) -> Head {
    let mut buf = BytesMut::with_capacity(4096);
    let first_deadline = Instant::now() + idle;
    let mut deadline = None;
    loop {
        let d = deadline.unwrap_or(first_deadline);
        let read = timeout_at(d, stream.read_buf(&mut buf)).await;
        match read {
            Err(_) => {
                return if buf.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    Head::Closed
                } else {
                    Head::TooSlow
                }
            }
            Ok(Err(_)) | Ok(Ok(0)) => return Head::Closed,
            Ok(Ok(_)) => {}
        }
        if deadline.is_none() {
            deadline = Some(Instant::now() + header_timeout);
        }
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
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096.min(max_bytes + 4 - buf.len()).max(1024));
        }
    }
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

impl<A> Front<A> {
    async fn refuse(&self, stream: &mut Stream, status: u16, reason: &str, body: &str) {
        let mut out = format!(
            "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\nserver: {}\r\n",
            body.len(),
            self.policy.server().to_str().unwrap_or("galion-edge"),
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
        let _open = self.open.as_ref().map(InFlight::enter);
        if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
            return ServerApp::process_new(&self.app, stream, shutdown).await;
        }
        let l = &self.limits;
        let mut persistent: Option<HttpPersistentSettings> = None;
        let mut first = true;
        loop {
            let idle = if first {
                l.client_header_timeout
            } else {
                l.keepalive_timeout
            };
            let head = read_head(
                &mut stream,
                idle,
                l.client_header_timeout,
                l.max_header_bytes,
                l.max_header_count,
            )
            .await;
            let buf = match head {
                Head::Ready(buf) => buf,
                Head::Closed => return None,
                Head::TooSlow => {
                    self.refuse(
                        &mut stream,
                        408,
                        "Request Timeout",
                        "request header timeout\n",
                    )
                    .await;
                    return None;
                }
                Head::TooLarge => {
                    self.refuse(
                        &mut stream,
                        431,
                        "Request Header Fields Too Large",
                        "request header too large\n",
                    )
                    .await;
                    return None;
                }
                Head::TooManyHeaders => {
                    self.refuse(
                        &mut stream,
                        431,
                        "Request Header Fields Too Large",
                        "too many request headers\n",
                    )
                    .await;
                    return None;
                }
            };
            let mut session = ServerSession::new_http1(stream);
            match persistent.take() {
                Some(p) => p.apply_to_session(&mut session),
                None => {
                    session.set_keepalive(Some(l.keepalive_timeout.as_secs().max(1)));
                    session.set_keepalive_reuses_remaining(Some(
                        l.keepalive_requests.saturating_sub(1),
                    ));
                }
            }
            if *shutdown.borrow() {
                session.set_keepalive(None);
            }
            session.set_pipelined_prefix(buf);
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
}
