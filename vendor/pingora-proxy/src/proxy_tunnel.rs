// Galion Edge patch (tunnel): not in upstream Pingora; vendor/README.md has the issue text.

//! An upgraded HTTP/1 connection (a WebSocket) copied between its two sockets by a task of its
//! own, once the `101` is through (see [`ProxyHttp::tunnel_upgraded_in_own_task`]).
//!
//! Inside the proxy's state machine a tunnel keeps, for its whole life, the request's future
//! (sized by every phase a request can be in), the connection's task above it, the two task
//! channels and a body buffer per direction. Here it keeps the two streams, the session for
//! the `logging` hook, and nothing else while idle: each read goes into a buffer on the stack
//! of the poll and is written out at once; only what the other side does not take right away
//! is copied to the heap, and freed once written.
//!
//! [`ProxyHttp::tunnel_upgraded_in_own_task`]: crate::ProxyHttp::tunnel_upgraded_in_own_task

use bytes::{Buf, BytesMut};
use pingora_core::protocols::http::ServerSession as HttpSession;
use pingora_core::protocols::Stream;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType};
use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The size of one read, in a buffer on the stack of the poll (a TLS record's worth).
const READ_SIZE: usize = 16 * 1024;

/// The longest wait to shut a side's write half after the other ended, without a write timeout.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Both sides of an upgraded connection, taken from the two sessions once the `101` is
/// through: the downstream session keeps the client's stream (it is borrowed from there).
pub(crate) struct UpgradedTunnel {
    /// The client's bytes read past the upgrade request, not yet sent upstream.
    pub(crate) client_unread: BytesMut,
    /// The upstream's stream, taken from the client session that read the `101`.
    pub(crate) upstream: Stream,
    /// The server's bytes read past the `101`, not yet sent to the client.
    pub(crate) upstream_unread: BytesMut,
    /// The longest silence in both directions: the upstream's read timeout, or the
    /// downstream's if shorter.
    pub(crate) idle_timeout: Option<Duration>,
    /// The longest wait for the upstream to take bytes.
    pub(crate) upstream_write_timeout: Option<Duration>,
    /// The longest wait for the client to take bytes.
    pub(crate) client_write_timeout: Option<Duration>,
}

impl UpgradedTunnel {
    /// The tunnel of `downstream` (its timeouts) and an upstream session's parts, with
    /// `peer`'s timeouts.
    pub(crate) fn new(
        downstream: &HttpSession,
        peer: &HttpPeer,
        client_unread: BytesMut,
        upstream: Stream,
        upstream_unread: BytesMut,
    ) -> Self {
        let idle_timeout = match (peer.options.read_timeout, downstream.get_read_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        UpgradedTunnel {
            client_unread,
            upstream,
            upstream_unread,
            idle_timeout,
            upstream_write_timeout: peer.options.write_timeout,
            client_write_timeout: downstream.get_write_timeout(),
        }
    }
}

/// What a tunnel moved, in payload bytes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TunnelTotals {
    /// Bytes written to the client (read from the upstream).
    pub(crate) to_client: usize,
    /// Bytes written to the upstream (read from the client).
    pub(crate) to_upstream: usize,
}

/// One direction of the tunnel.
#[derive(Default)]
struct Half {
    /// Bytes read and not yet written; empty (no allocation) unless the writer pushed back.
    pending: BytesMut,
    /// The writer holds bytes not yet flushed.
    unflushed: bool,
    /// The reader reached its end.
    eof: bool,
    /// Bytes written.
    total: usize,
}

/// What one poll of both directions came to.
enum Step {
    /// Bytes moved (the idle timer starts again) and nothing more is ready.
    Moved,
    /// One side ended, and what it sent before is written to the other.
    Done,
}

/// Whether a side failed reading or writing.
enum Failure {
    Read(io::Error),
    Write(io::Error),
}

impl Half {
    /// Copies from `r` to `w` until neither is ready. `Ready(true)`: the reader ended and
    /// everything before its end is written and flushed.
    fn poll_copy(
        &mut self,
        cx: &mut Context<'_>,
        r: &mut Stream,
        w: &mut Stream,
        moved: &mut bool,
    ) -> Poll<std::result::Result<bool, Failure>> {
        loop {
            while !self.pending.is_empty() {
                match Pin::new(&mut *w).poll_write(cx, &self.pending) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(Failure::Write(write_zero()))),
                    Poll::Ready(Ok(n)) => {
                        self.pending.advance(n);
                        self.total += n;
                        self.unflushed = true;
                        *moved = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Write(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.pending.capacity() > 0 {
                // the push-back is over: free its buffer
                self.pending = BytesMut::new();
            }
            if self.unflushed {
                match Pin::new(&mut *w).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Write(e))),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.eof {
                return Poll::Ready(Ok(true));
            }
            let mut stack = [MaybeUninit::<u8>::uninit(); READ_SIZE];
            let mut buf = ReadBuf::uninit(&mut stack);
            match Pin::new(&mut *r).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Read(e))),
                Poll::Pending => return Poll::Pending,
            }
            let read = buf.filled();
            if read.is_empty() {
                self.eof = true;
                continue;
            }
            *moved = true;
            // write what was read at once; keep on the heap only what the writer does not take
            let written = match Pin::new(&mut *w).poll_write(cx, read) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Failure::Write(write_zero()))),
                Poll::Ready(Ok(n)) => n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(Failure::Write(e))),
                Poll::Pending => 0,
            };
            self.total += written;
            self.unflushed |= written > 0;
            if written < read.len() {
                self.pending.extend_from_slice(&read[written..]);
            }
        }
    }
}

fn write_zero() -> io::Error {
    io::Error::new(io::ErrorKind::WriteZero, "the peer took no bytes")
}

/// Copies bytes both ways between `client` and `t.upstream` until either side ends (then what
/// it sent before its end is delivered, and the other side's write half is shut down), an
/// error, or a silence longer than `t.idle_timeout` (a wait to write longer than the write
/// timeout of the side that does not take bytes). The unread bytes of `t` are sent first.
/// Returns what was moved, and the error that ended the tunnel, if one did.
pub(crate) async fn tunnel(
    client: &mut Stream,
    t: &mut UpgradedTunnel,
) -> (TunnelTotals, Option<Box<Error>>) {
    let mut to_client = Half {
        pending: std::mem::take(&mut t.upstream_unread),
        unflushed: true, // the `101` may still be in the client stream's write buffer
        ..Half::default()
    };
    let mut to_upstream = Half {
        pending: std::mem::take(&mut t.client_unread),
        ..Half::default()
    };
    let upstream = &mut t.upstream;
    let result = loop {
        // a side that does not take what it was sent bounds the wait by its write timeout
        let (limit, slow_upstream) = if !to_upstream.pending.is_empty() {
            (t.upstream_write_timeout, true)
        } else if !to_client.pending.is_empty() {
            (t.client_write_timeout, false)
        } else {
            (t.idle_timeout, false)
        };
        let pushed_back = !to_client.pending.is_empty() || !to_upstream.pending.is_empty();
        let step = poll_fn(|cx| {
            let mut moved = false;
            let down = to_client.poll_copy(cx, upstream, client, &mut moved);
            let upw = to_upstream.poll_copy(cx, client, upstream, &mut moved);
            match (down, upw) {
                (Poll::Ready(Err(e)), _) => Poll::Ready(Err((e, true))),
                (_, Poll::Ready(Err(e))) => Poll::Ready(Err((e, false))),
                (Poll::Ready(Ok(true)), _) | (_, Poll::Ready(Ok(true))) => {
                    Poll::Ready(Ok(Step::Done))
                }
                _ if moved => Poll::Ready(Ok(Step::Moved)),
                _ => Poll::Pending,
            }
        });
        let step = match limit {
            Some(limit) => match tokio::time::timeout(limit, step).await {
                Ok(step) => step,
                Err(_) if pushed_back => {
                    let mut e = Error::explain(
                        ErrorType::WriteTimedout,
                        format!("tunnel: bytes not taken for {limit:?}"),
                    );
                    if slow_upstream {
                        e.as_up();
                    } else {
                        e.as_down();
                    }
                    break Some(e);
                }
                Err(_) => {
                    let mut e = Error::explain(
                        ErrorType::ReadTimedout,
                        format!("tunnel: no bytes either way for {limit:?}"),
                    );
                    e.as_up();
                    break Some(e);
                }
            },
            None => step.await,
        };
        match step {
            Ok(Step::Moved) => continue,
            Ok(Step::Done) => break None,
            // the flag: the failure was in the direction from upstream to client
            Err((failure, upstream_to_client)) => {
                let (etype, read_side, cause) = match failure {
                    Failure::Read(e) => (ErrorType::ReadError, true, e),
                    Failure::Write(e) => (ErrorType::WriteError, false, e),
                };
                let mut e = Error::because(etype, "tunnel", cause);
                // reading from the upstream or writing to it is the upstream's failure
                if read_side == upstream_to_client {
                    e.as_up();
                } else {
                    e.as_down();
                }
                break Some(e);
            }
        }
    };
    if result.is_none() {
        // one side ended: shut the other's write half (both streams close when dropped)
        let (other, limit): (&mut Stream, _) = if to_upstream.eof {
            (upstream, t.upstream_write_timeout)
        } else {
            (client, t.client_write_timeout)
        };
        let shutdown = poll_fn(|cx| Pin::new(&mut *other).poll_shutdown(cx));
        let _ = tokio::time::timeout(limit.unwrap_or(SHUTDOWN_TIMEOUT), shutdown).await;
    }
    let totals = TunnelTotals {
        to_client: to_client.total,
        to_upstream: to_upstream.total,
    };
    (totals, result)
}
