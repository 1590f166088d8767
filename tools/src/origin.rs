//! Sample origins: small HTTP/1.1 servers that stand in for the GALION services.
//!
//! Every origin answers with a JSON description of the request it received (so you can see
//! what the proxy forwarded), records it for tests, and understands a few paths anywhere in the
//! URL: `/health` (200 "ok"), `slow?ms=N` (answer after N ms), `bytes?n=N` (N bytes of body),
//! `status?code=N`, `text?n=N` (N bytes of JavaScript-like text, `application/javascript`).
//! `h-NAME=VALUE` adds a header to the answer (repeat it for repeated lines) and
//! `h304-NAME=VALUE` one to 304 answers only, so a test can make a 304 differ from its 200.
//! Any path also takes `gz=1` (send the body gzip-encoded, whatever the client accepts), `cc=` (a `Cache-Control` value), `etag=` (an `ETag`,
//! answering `If-None-Match` with 304), `vary=`, `cookie=1` (a `Set-Cookie`) and `fail=1` (answer
//! 503), percent-encoded. A WebSocket upgrade on any path becomes an echo server.
//!
//! For fault tests:
//! - `data?n=N`: N bytes that depend only on the request target (path and query, as the origin
//!   receives it): [`url_body`] computes the same bytes, so a test can check any copy of it.
//! - `chunked=1`: the body is sent with chunked encoding (no `Content-Length`), 16 KiB a chunk.
//! - `pace=MS`: wait MS milliseconds before each chunk after the first.
//! - `die=N`: send the head (with the full `Content-Length`, unless `chunked=1`) and the first
//!   N bytes of the body, then close the connection: the response is cut short, with no
//!   terminating chunk when chunked.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;

/// A request as an origin saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Method.
    pub method: String,
    /// Request target as received.
    pub uri: String,
    /// Headers, names lower-case, in order.
    pub headers: Vec<(String, String)>,
    /// Body length received.
    pub body_len: usize,
}

impl Recorded {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running origin.
#[derive(Debug, Clone)]
pub struct Origin {
    /// Its service name, echoed in every answer.
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests received, oldest first.
    pub seen: Arc<Mutex<Vec<Recorded>>>,
    /// What `/health` answers: 200 while true, 503 while false. Other paths are unaffected,
    /// so a test can tell a health check's verdict from a dead backend.
    pub healthy: Arc<AtomicBool>,
    /// While true, every request but `/health` gets 503.
    pub failing: Arc<AtomicBool>,
    /// While true (the default), requests are kept in `seen`; turn it off for long runs.
    pub recording: Arc<AtomicBool>,
    accept: Arc<tokio::task::JoinHandle<()>>,
    stopped: tokio::sync::watch::Sender<bool>,
}

impl Origin {
    /// Requests received so far.
    pub fn requests(&self) -> Vec<Recorded> {
        self.seen.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Stops accepting connections, closes the listening socket and every open connection:
    /// the origin is down.
    pub fn stop(&self) {
        self.accept.abort();
        let _ = self.stopped.send(true);
    }

    /// Sets whether every request but `/health` gets 503.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Sets whether requests are kept in [`Origin::seen`] (on by default; a soak run turns it
    /// off so the origin's memory stays flat).
    pub fn set_recording(&self, recording: bool) {
        self.recording.store(recording, Ordering::SeqCst);
    }

    /// Sets what `/health` answers.
    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Ordering::SeqCst);
    }
}

/// Binds `addr` (port 0 for any) and serves until the runtime stops.
pub async fn spawn_origin(name: &str, addr: SocketAddr) -> std::io::Result<Origin> {
    let listener = TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let seen = Arc::new(Mutex::new(Vec::new()));
    let healthy = Arc::new(AtomicBool::new(true));
    let failing = Arc::new(AtomicBool::new(false));
    let recording = Arc::new(AtomicBool::new(true));
    let (stopped, stop_rx) = tokio::sync::watch::channel(false);
    let o = Origin {
        name: name.to_string(),
        addr,
        seen: seen.clone(),
        healthy: healthy.clone(),
        failing: failing.clone(),
        recording: recording.clone(),
        accept: Arc::new(tokio::spawn(async {})),
        stopped: stopped.clone(),
    };
    let accept = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let o = o.clone();
            let mut stop = stop_rx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| handle(o.clone(), req));
                let conn = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades();
                tokio::select! {
                    _ = conn => {}
                    _ = stop.wait_for(|s| *s) => {}
                }
            });
        }
    });
    Ok(Origin {
        name: name.to_string(),
        addr,
        seen,
        healthy,
        failing,
        recording,
        accept: Arc::new(accept),
        stopped,
    })
}

fn query_str(req: &Request<Incoming>, key: &str) -> Option<String> {
    form_urlencoded::parse(req.uri().query()?.as_bytes())
        .find_map(|(k, v)| (k == key).then(|| v.into_owned()))
}

fn query_num(req: &Request<Incoming>, key: &str) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.parse().ok()).flatten()
    })
}

/// The body type the origins answer with: whole, or streamed for `chunked=`, `pace=`, `die=`.
type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Bytes per chunk when a body is streamed.
const CHUNK: usize = 16 * 1024;

/// How `chunked=`, `pace=` and `die=` asked the body to be sent.
#[derive(Debug, Clone, Copy, Default)]
struct Shape {
    chunked: bool,
    pace: Option<u64>,
    die: Option<u64>,
}

async fn handle(o: Origin, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let shape = Shape {
        chunked: query_str(&req, "chunked").is_some(),
        pace: query_num(&req, "pace").map(|ms| ms.min(10_000)),
        die: query_num(&req, "die"),
    };
    let extra = extra_headers(&req);
    let mut resp = answer(o, req).await?;
    let not_modified = resp.status() == http::StatusCode::NOT_MODIFIED;
    for (only_304, name, value) in extra {
        if only_304 == not_modified {
            resp.headers_mut().append(name, value);
        }
    }
    Ok(shaped(resp, shape).await)
}

/// The `h-NAME=VALUE` query parameters (a header on every answer but a 304) and `h304-NAME=VALUE`
/// (a header on 304s only), values percent-decoded, in order; repeated names give repeated
/// lines. Names or values that are not valid in a header are skipped.
fn extra_headers(req: &Request<Incoming>) -> Vec<(bool, http::HeaderName, http::HeaderValue)> {
    let Some(query) = req.uri().query() else {
        return Vec::new();
    };
    form_urlencoded::parse(query.as_bytes())
        .filter_map(|(k, v)| {
            let (only_304, name) = match k.strip_prefix("h304-") {
                Some(n) => (true, n),
                None => (false, k.strip_prefix("h-")?),
            };
            let name = http::HeaderName::from_bytes(name.as_bytes()).ok()?;
            let value = http::HeaderValue::from_str(&v).ok()?;
            Some((only_304, name, value))
        })
        .collect()
}

/// Sends `resp` as `shape` says.
async fn shaped(resp: Response<Full<Bytes>>, shape: Shape) -> Response<Body> {
    if !shape.chunked && shape.pace.is_none() && shape.die.is_none() {
        return resp.map(|b| b.map_err(|never| match never {}).boxed_unsync());
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(c) => c.to_bytes(),
        Err(never) => match never {},
    };
    if shape.chunked {
        parts.headers.remove(http::header::CONTENT_LENGTH);
    } else {
        parts
            .headers
            .insert(http::header::CONTENT_LENGTH, bytes.len().into());
    }
    let limit = shape
        .die
        .map_or(bytes.len(), |d| (d as usize).min(bytes.len()));
    // State: the body, how far it was sent, whether the connection was broken already.
    let stream = futures_util::stream::unfold(
        (bytes, 0usize, false),
        move |(bytes, pos, broken)| async move {
            if broken {
                return None;
            }
            if pos >= limit {
                shape.die?;
                // Let the connection flush what was sent, then break it.
                tokio::time::sleep(Duration::from_millis(50)).await;
                let e = std::io::Error::other("the origin dies here (die=)");
                return Some((Err(e), (bytes, pos, true)));
            }
            if pos > 0 {
                if let Some(ms) = shape.pace {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                }
            }
            let end = (pos + CHUNK).min(limit);
            let frame = hyper::body::Frame::data(bytes.slice(pos..end));
            Some((Ok(frame), (bytes, end, false)))
        },
    );
    Response::from_parts(parts, StreamBody::new(stream).boxed_unsync())
}

/// The body of `data?n=N` for the request target `uri` (path and query as the origin receives
/// them): `len` pseudo-random bytes seeded by the target.
pub fn url_body(uri: &str, len: usize) -> Vec<u8> {
    // FNV-1a of the target seeds a xorshift64* generator.
    let mut x = uri.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

async fn answer(
    o: Origin,
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let path = req.uri().path().to_string();
    let is_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));

    if is_ws {
        record(&o, &method, &uri, &headers, 0);
        return Ok(websocket(&mut req));
    }
    let cc = query_str(&req, "cc");
    let etag = query_str(&req, "etag");
    let vary = query_str(&req, "vary");
    let cookie = query_str(&req, "cookie").is_some();
    let fail = query_str(&req, "fail").is_some();
    let gzip_body = query_str(&req, "gz").is_some();
    let if_none_match = req
        .headers()
        .get("if-none-match")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let ms = query_num(&req, "ms");
    let n = query_num(&req, "n");
    let code = query_num(&req, "code");
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    record(&o, &method, &uri, &headers, body.len());

    if path.ends_with("/health") {
        return Ok(if o.healthy.load(Ordering::SeqCst) {
            text(200, "ok\n")
        } else {
            text(503, "unhealthy\n")
        });
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_millis(ms.unwrap_or(1000).min(60_000))).await;
    }
    if path.ends_with("/text") {
        let len = n.unwrap_or(4096).min(16 << 20) as usize;
        let body = sample_text(len);
        let mut r = Response::new(Full::new(Bytes::from(if gzip_body {
            gzip(&body)
        } else {
            body
        })));
        let h = r.headers_mut();
        h.insert(
            "content-type",
            http::HeaderValue::from_static("application/javascript"),
        );
        h.insert("etag", http::HeaderValue::from_static("\"text-v1\""));
        if gzip_body {
            h.insert("content-encoding", http::HeaderValue::from_static("gzip"));
        }
        add_cache_headers(&mut r, &cc, &etag, &vary, cookie);
        return Ok(r);
    }
    if path.ends_with("/data") {
        let len = n.unwrap_or(1024).min(64 << 20) as usize;
        let mut r = Response::new(Full::new(Bytes::from(url_body(&uri, len))));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/octet-stream"),
        );
        add_cache_headers(&mut r, &cc, &etag, &vary, cookie);
        return Ok(r);
    }
    if path.ends_with("/bytes") {
        let len = n.unwrap_or(1024).min(64 << 20) as usize;
        let mut r = Response::new(Full::new(Bytes::from(vec![b'x'; len])));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/octet-stream"),
        );
        return Ok(r);
    }
    if fail || o.failing.load(Ordering::SeqCst) {
        return Ok(text(503, "origin failing\n"));
    }
    if let (Some(tag), Some(inm)) = (&etag, &if_none_match) {
        if inm.split(',').any(|t| t.trim() == tag) {
            let mut r = text(304, "");
            *r.body_mut() = Full::new(Bytes::new());
            add_cache_headers(&mut r, &cc, &etag, &vary, cookie);
            return Ok(r);
        }
    }
    let status = code.and_then(|c| u16::try_from(c).ok()).unwrap_or(200);
    let json = serde_json::json!({
        "service": o.name,
        "method": method,
        "uri": uri,
        "headers": headers.iter().map(|(k, v)| serde_json::json!([k, v])).collect::<Vec<_>>(),
        "body_len": body.len(),
    });
    let mut r = Response::new(Full::new(Bytes::from(json.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json"),
    );
    // What an origin framework leaks; the proxy must not pass it on.
    r.headers_mut().insert(
        "x-powered-by",
        http::HeaderValue::from_static("Express 4.18.2"),
    );
    r.headers_mut()
        .insert("server", http::HeaderValue::from_static("uvicorn/0.30.1"));
    add_cache_headers(&mut r, &cc, &etag, &vary, cookie);
    Ok(r)
}

/// Deterministic JavaScript-like text of exactly `len` bytes.
pub fn sample_text(len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 128);
    let mut i = 0u64;
    while out.len() < len {
        let line = format!(
            "function handler_{i}(request, response) {{ const id = request.params.id_{}; return response.json({{ id, ok: true, n: {} }}); }}\n",
            i % 97,
            i * 31 % 1009
        );
        out.extend_from_slice(line.as_bytes());
        i += 1;
    }
    out.truncate(len);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let _ = e.write_all(data);
    e.finish().unwrap_or_default()
}

fn add_cache_headers(
    r: &mut Response<Full<Bytes>>,
    cc: &Option<String>,
    etag: &Option<String>,
    vary: &Option<String>,
    cookie: bool,
) {
    let h = r.headers_mut();
    for (name, value) in [("cache-control", cc), ("etag", etag), ("vary", vary)] {
        if let Some(v) = value
            .as_ref()
            .and_then(|v| http::HeaderValue::from_str(v).ok())
        {
            h.insert(name, v);
        }
    }
    if cookie {
        h.insert(
            "set-cookie",
            http::HeaderValue::from_static("session=secret; HttpOnly"),
        );
    }
}

fn record(o: &Origin, method: &str, uri: &str, headers: &[(String, String)], body_len: usize) {
    if !o.recording.load(Ordering::Relaxed) {
        return;
    }
    if let Ok(mut v) = o.seen.lock() {
        v.push(Recorded {
            method: method.to_string(),
            uri: uri.to_string(),
            headers: headers.to_vec(),
            body_len,
        });
    }
}

fn text(status: u16, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
    r
}

fn websocket(req: &mut Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        return text(400, "missing sec-websocket-key\n");
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        let mut ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_close() {
                break;
            }
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert("connection", http::HeaderValue::from_static("upgrade"));
    h.insert("upgrade", http::HeaderValue::from_static("websocket"));
    if let Ok(v) = http::HeaderValue::from_str(&accept) {
        h.insert("sec-websocket-accept", v);
    }
    r
}
