//! The load generator's client: hyper 1 connections (HTTP/1.1, or HTTP/1.1 and HTTP/2 over
//! rustls), one task per connection, keep-alive, closed-loop or at a fixed rate.
//!
//! At a fixed rate every request has an intended send time on a schedule fixed in advance, and
//! its latency is measured from that time, not from when it was actually sent: a server that
//! stalls is charged for every request the stall delayed (no coordinated omission).

use super::scenarios::{RequestSpec, Transport};
use super::LoadtestError;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{HeaderValue, Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::{Rng, SeedableRng};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Latencies are recorded in microseconds, from 1 µs to this (60 s), 3 significant digits.
pub const MAX_LATENCY_US: u64 = 60_000_000;

/// The `X-Cache-Status` values counted (nginx's `$upstream_cache_status` uses the same words).
pub const CACHE_STATUSES: [&str; 7] = [
    "HIT",
    "MISS",
    "EXPIRED",
    "STALE",
    "UPDATING",
    "REVALIDATED",
    "BYPASS",
];

/// Counters of one part of a run; merged at the end.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Latency of completed requests, µs.
    pub hist: Histogram<u64>,
    /// Completed requests (any status).
    pub requests: u64,
    /// Body bytes received.
    pub body_bytes: u64,
    /// Responses per status code.
    pub statuses: BTreeMap<u16, u64>,
    /// Responses per `X-Cache-Status` value, as in [`CACHE_STATUSES`].
    pub cache: [u64; CACHE_STATUSES.len()],
    /// Responses with another `X-Cache-Status` value.
    pub cache_other: u64,
    /// Responses without `X-Cache-Status`.
    pub cache_none: u64,
    /// Failed connection attempts.
    pub connect_errors: u64,
    /// Requests that failed after being sent (reset, protocol error).
    pub request_errors: u64,
    /// Requests without a complete answer within the request timeout.
    pub timeouts: u64,
    /// New connections after the first (the server closed keep-alive, or an error).
    pub reconnects: u64,
    /// Position in the fixed-rate schedule.
    next_slot: u64,
}

impl Stats {
    /// Empty counters.
    pub fn new() -> Self {
        Stats {
            hist: new_histogram(),
            requests: 0,
            body_bytes: 0,
            statuses: BTreeMap::new(),
            cache: [0; CACHE_STATUSES.len()],
            cache_other: 0,
            cache_none: 0,
            connect_errors: 0,
            request_errors: 0,
            timeouts: 0,
            reconnects: 0,
            next_slot: 0,
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides: `add` cannot fail.
        let _ = self.hist.add(&other.hist);
        self.requests += other.requests;
        self.body_bytes += other.body_bytes;
        for (k, v) in &other.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (a, b) in self.cache.iter_mut().zip(other.cache) {
            *a += b;
        }
        self.cache_other += other.cache_other;
        self.cache_none += other.cache_none;
        self.connect_errors += other.connect_errors;
        self.request_errors += other.request_errors;
        self.timeouts += other.timeouts;
        self.reconnects += other.reconnects;
    }

    fn record_cache(&mut self, value: Option<&HeaderValue>) {
        match value {
            None => self.cache_none += 1,
            Some(v) => match CACHE_STATUSES
                .iter()
                .position(|s| s.as_bytes().eq_ignore_ascii_case(v.as_bytes()))
            {
                Some(i) => self.cache[i] += 1,
                None => self.cache_other += 1,
            },
        }
    }
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

/// A histogram with the bounds every part of a run uses.
pub fn new_histogram() -> Histogram<u64> {
    // 1..=60 s with 3 significant digits is a valid configuration; the fallback is unreachable.
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3)
        .or_else(|_| Histogram::new(3))
        .unwrap_or_else(|_| unreachable_histogram())
}

#[allow(clippy::expect_used)]
fn unreachable_histogram() -> Histogram<u64> {
    Histogram::new_with_max(MAX_LATENCY_US, 2).expect("a histogram with constant, valid bounds")
}

/// Where to connect, and how.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// The loopback address.
    pub addr: SocketAddr,
    /// TLS client config (with the ALPN of the transport) when the endpoint is HTTPS.
    pub tls: Option<Arc<ClientConfig>>,
    /// HTTP/2 (over TLS) or HTTP/1.1.
    pub h2: bool,
}

/// The bounds and shape of a run.
#[derive(Debug, Clone)]
pub struct RunParams {
    /// Connections.
    pub connections: usize,
    /// Concurrent streams per HTTP/2 connection.
    pub h2_streams: usize,
    /// Measurement time.
    pub duration: Duration,
    /// At most this many requests in all.
    pub max_requests: u64,
    /// Requests per second over all connections (open loop); closed loop when `None`.
    pub rate: Option<f64>,
    /// A request without a complete answer after this counts as a timeout.
    pub request_timeout: Duration,
}

/// A request ready to be cloned onto the wire.
#[derive(Debug, Clone)]
struct Prepared {
    uri: Uri,
    host: HeaderValue,
    accept_encoding: Option<HeaderValue>,
}

/// The requests of a scenario, prepared, with cumulative weights for drawing.
#[derive(Debug, Clone)]
pub struct RequestSet {
    prepared: Vec<Prepared>,
    cumulative: Vec<u32>,
}

impl RequestSet {
    /// Prepares `specs` for `transport` (absolute URIs for HTTP/2, origin-form for HTTP/1.1).
    pub fn new(specs: &[RequestSpec], transport: Transport) -> Result<Self, LoadtestError> {
        let mut prepared = Vec::new();
        let mut cumulative = Vec::new();
        let mut total = 0u32;
        for s in specs {
            let text = if transport == Transport::TlsHttp2 {
                format!("https://{}{}", s.host, s.path)
            } else {
                s.path.clone()
            };
            let uri: Uri = text
                .parse()
                .map_err(|e| LoadtestError::Scenario(format!("bad request URI {text:?}: {e}")))?;
            let host = HeaderValue::from_str(s.host)
                .map_err(|e| LoadtestError::Scenario(format!("bad host {:?}: {e}", s.host)))?;
            prepared.push(Prepared {
                uri,
                host,
                accept_encoding: s.accept_encoding_value(),
            });
            total += s.weight.max(1);
            cumulative.push(total);
        }
        if prepared.is_empty() {
            return Err(LoadtestError::Scenario(
                "a scenario without requests".into(),
            ));
        }
        Ok(RequestSet {
            prepared,
            cumulative,
        })
    }

    fn pick(&self, rng: &mut impl Rng) -> &Prepared {
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = rng.gen_range(0..total);
        let i = self.cumulative.partition_point(|&c| c <= x);
        &self.prepared[i.min(self.prepared.len() - 1)]
    }

    fn build(&self, p: &Prepared, h2: bool) -> Request<Empty<Bytes>> {
        let mut r = Request::new(Empty::new());
        *r.uri_mut() = p.uri.clone();
        let h = r.headers_mut();
        if !h2 {
            h.insert(http::header::HOST, p.host.clone());
        }
        h.insert(
            http::header::USER_AGENT,
            HeaderValue::from_static("galion-edge-loadtest"),
        );
        if let Some(ae) = &p.accept_encoding {
            h.insert(http::header::ACCEPT_ENCODING, ae.clone());
        }
        r
    }
}

/// A TLS client config for loopback load tests: any certificate is accepted (the handshake
/// signatures are still checked), because the local certificates are self-signed CA
/// certificates that webpki will not take as server certificates. Targets are loopback only.
pub fn tls_config(h2: bool) -> Result<Arc<ClientConfig>, LoadtestError> {
    let provider = Arc::new(proxy_core::crypto_provider());
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| LoadtestError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider)))
        .with_no_client_auth();
    config.alpn_protocols = vec![if h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    Ok(Arc::new(config))
}

#[derive(Debug)]
struct AcceptAnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Io for T {}

/// An open connection's request sender.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    /// Another handle on the same HTTP/2 connection; HTTP/1.1 senders are never shared.
    fn share(&self) -> Option<Sender> {
        match self {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Sender::H2(s.clone())),
        }
    }
}

async fn connect(ep: &Endpoint, sni: &str) -> std::io::Result<Sender> {
    let tcp = TcpStream::connect(ep.addr).await?;
    tcp.set_nodelay(true)?;
    let io: Box<dyn Io> = match &ep.tls {
        None => Box::new(tcp),
        Some(config) => {
            let name = ServerName::try_from(sni.to_string())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name, tcp)
                .await?;
            Box::new(tls)
        }
    };
    let io = TokioIo::new(io);
    if ep.h2 {
        let (sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Sender::H2(sender))
    } else {
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(std::io::Error::other)?;
        tokio::spawn(conn);
        Ok(Sender::H1(sender))
    }
}

/// The status, cache status and body length of one exchange.
async fn exchange(
    sender: &mut Sender,
    req: Request<Empty<Bytes>>,
    stats: &mut Stats,
) -> Result<(u16, u64), hyper::Error> {
    let resp = match sender {
        Sender::H1(s) => s.send_request(req).await?,
        Sender::H2(s) => s.send_request(req).await?,
    };
    let status = resp.status().as_u16();
    stats.record_cache(resp.headers().get("x-cache-status"));
    let mut body = resp.into_body();
    let mut n = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame?.data_ref() {
            n += d.len() as u64;
        }
    }
    Ok((status, n))
}

/// Whether a sender can take a request now (a closed keep-alive connection cannot).
async fn ready(sender: &mut Sender) -> bool {
    match sender {
        Sender::H1(s) => s.ready().await.is_ok(),
        Sender::H2(s) => s.ready().await.is_ok(),
    }
}

/// Shared state of a run.
#[derive(Debug)]
pub struct Shared {
    /// Requests started (the budget is checked against it).
    pub issued: AtomicU64,
    /// Requests completed, for the progress bar.
    pub completed: AtomicU64,
    /// Set to stop every worker early (Ctrl-C).
    pub stop: Arc<AtomicBool>,
}

impl Shared {
    /// A fresh run that stops early when `stop` is set.
    pub fn new(stop: Arc<AtomicBool>) -> Arc<Self> {
        Arc::new(Shared {
            issued: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            stop,
        })
    }
}

/// Sends each request of the set `times` times, one after the other on one connection, and
/// fails unless every answer is a 2xx: fills the caches and checks the target is the right one.
pub async fn warm(
    ep: &Endpoint,
    set: &RequestSet,
    times: usize,
    timeout: Duration,
) -> Result<(), LoadtestError> {
    let sni = set.prepared[0]
        .host
        .to_str()
        .unwrap_or("localhost")
        .to_string();
    let mut sender = tokio::time::timeout(timeout, connect(ep, &sni))
        .await
        .map_err(|_| LoadtestError::Warmup(format!("connecting to {}: timed out", ep.addr)))?
        .map_err(|e| LoadtestError::Warmup(format!("connecting to {}: {e}", ep.addr)))?;
    let mut stats = Stats::new();
    for _ in 0..times {
        for p in &set.prepared {
            if !ready(&mut sender).await {
                sender = connect(ep, &sni)
                    .await
                    .map_err(|e| LoadtestError::Warmup(format!("reconnecting: {e}")))?;
            }
            let req = set.build(p, ep.h2);
            let got = tokio::time::timeout(timeout, exchange(&mut sender, req, &mut stats)).await;
            match got {
                Ok(Ok((status, _))) if (200..300).contains(&status) => {}
                Ok(Ok((status, _))) => {
                    return Err(LoadtestError::Warmup(format!(
                        "{} {} answered {status}",
                        p.host.to_str().unwrap_or("?"),
                        p.uri
                    )))
                }
                Ok(Err(e)) => {
                    return Err(LoadtestError::Warmup(format!("{}: {e}", p.uri)));
                }
                Err(_) => {
                    return Err(LoadtestError::Warmup(format!(
                        "{}: no answer within {timeout:?}",
                        p.uri
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Runs the load on `ep` and returns the merged counters and the measured wall time.
pub async fn run(
    ep: Endpoint,
    set: Arc<RequestSet>,
    params: RunParams,
    shared: Arc<Shared>,
) -> (Stats, Duration) {
    let streams = if ep.h2 { params.h2_streams.max(1) } else { 1 };
    let workers = params.connections * streams;
    let interval = params
        .rate
        .map(|r| Duration::from_secs_f64(workers as f64 / r.max(0.001)));
    let start = Instant::now();
    let deadline = start + params.duration;
    let mut tasks = Vec::with_capacity(params.connections);
    for c in 0..params.connections {
        let ep = ep.clone();
        let set = set.clone();
        let shared = shared.clone();
        let params = params.clone();
        tasks.push(tokio::spawn(async move {
            connection_task(
                c, streams, workers, interval, start, deadline, ep, set, params, shared,
            )
            .await
        }));
    }
    let mut total = Stats::new();
    for t in tasks {
        if let Ok(s) = t.await {
            total.merge(&s);
        }
    }
    (total, start.elapsed())
}

#[allow(clippy::too_many_arguments)]
async fn connection_task(
    conn_index: usize,
    streams: usize,
    workers: usize,
    interval: Option<Duration>,
    start: Instant,
    deadline: Instant,
    ep: Endpoint,
    set: Arc<RequestSet>,
    params: RunParams,
    shared: Arc<Shared>,
) -> Stats {
    let sni = set.prepared[0]
        .host
        .to_str()
        .unwrap_or("localhost")
        .to_string();
    let mut per_stream: Vec<Stats> = (0..streams).map(|_| Stats::new()).collect();
    let mut first = true;
    loop {
        if Instant::now() >= deadline || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let sender = match tokio::time::timeout(params.request_timeout, connect(&ep, &sni)).await {
            Ok(Ok(s)) => s,
            _ => {
                per_stream[0].connect_errors += 1;
                // Back off a little: a refused connection returns at once.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if !first {
            per_stream[0].reconnects += 1;
        }
        first = false;
        let mut all_done = true;
        if streams == 1 {
            let mut sender = sender;
            all_done &= stream_loop(
                &mut sender,
                conn_index,
                workers,
                interval,
                start,
                deadline,
                &set,
                &params,
                &shared,
                &mut per_stream[0],
            )
            .await;
        } else {
            let futures = per_stream.iter_mut().enumerate().map(|(s, stats)| {
                let sender = sender.share();
                let set = &set;
                let params = &params;
                let shared = &shared;
                async move {
                    let Some(mut sender) = sender else {
                        return true;
                    };
                    stream_loop(
                        &mut sender,
                        conn_index * streams + s,
                        workers,
                        interval,
                        start,
                        deadline,
                        set,
                        params,
                        shared,
                        stats,
                    )
                    .await
                }
            });
            for done in futures_util::future::join_all(futures).await {
                all_done &= done;
            }
        }
        if all_done {
            break;
        }
    }
    let mut total = Stats::new();
    for s in &per_stream {
        total.merge(s);
    }
    total
}

/// Sends requests on one sender until the run ends (returns true) or the connection breaks
/// (returns false: reconnect).
#[allow(clippy::too_many_arguments)]
async fn stream_loop(
    sender: &mut Sender,
    worker: usize,
    workers: usize,
    interval: Option<Duration>,
    start: Instant,
    deadline: Instant,
    set: &RequestSet,
    params: &RunParams,
    shared: &Shared,
    stats: &mut Stats,
) -> bool {
    let mut rng = rand::rngs::StdRng::seed_from_u64(worker as u64 * 7919 + stats.requests);
    // Workers' schedules are staggered evenly over one interval.
    let stagger = interval.map(|i| i.mul_f64(worker as f64 / workers.max(1) as f64));
    loop {
        if shared.stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return true;
        }
        if !ready(sender).await {
            return false;
        }
        let intended = match (interval, stagger) {
            (Some(i), Some(s)) => {
                let slot = stats.next_slot;
                let t = start + s + i.mul_f64(slot as f64);
                if t >= deadline {
                    return true;
                }
                tokio::time::sleep_until(t).await;
                t
            }
            _ => Instant::now(),
        };
        if shared.issued.fetch_add(1, Ordering::Relaxed) >= params.max_requests {
            return true;
        }
        stats.next_slot += 1;
        let p = set.pick(&mut rng);
        let req = set.build(p, matches!(sender, Sender::H2(_)));
        match tokio::time::timeout(params.request_timeout, exchange(sender, req, stats)).await {
            Ok(Ok((status, bytes))) => {
                let us = intended.elapsed().as_micros().min(MAX_LATENCY_US as u128) as u64;
                stats.hist.saturating_record(us.max(1));
                stats.requests += 1;
                stats.body_bytes += bytes;
                *stats.statuses.entry(status).or_default() += 1;
                shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(_)) => {
                stats.request_errors += 1;
                return false;
            }
            Err(_) => {
                stats.timeouts += 1;
                return false;
            }
        }
    }
}

/// The result of the idle WebSocket scenario.
#[derive(Debug, Clone, Copy, Default)]
pub struct WsOutcome {
    /// Connections opened and answering an echo.
    pub opened: u64,
    /// Connections that failed to open or to echo.
    pub failed: u64,
}

/// Open WebSocket connections, held idle until [`WsHold::close`].
#[derive(Debug)]
pub struct WsHold {
    release: tokio::sync::watch::Sender<bool>,
    holders: Vec<tokio::task::JoinHandle<()>>,
}

impl WsHold {
    /// Closes every connection (a close frame each), waiting at most `limit`.
    pub async fn close(self, limit: Duration) {
        let _ = self.release.send(true);
        let all = futures_util::future::join_all(self.holders);
        let _ = tokio::time::timeout(limit, all).await;
    }
}

/// Opens up to `n` WebSocket connections (at most 64 handshakes at a time, over TLS with SNI
/// `host` when `endpoint` has a TLS config), checks each with one echo, and returns them
/// open. Stops at `deadline`.
pub async fn open_websockets(
    endpoint: &Endpoint,
    host: &str,
    path: &str,
    n: usize,
    deadline: Instant,
    shared: &Shared,
) -> (WsHold, WsOutcome) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let scheme = if endpoint.tls.is_some() { "wss" } else { "ws" };
    let url = format!("{scheme}://{host}{path}");
    let (addr, tls) = (endpoint.addr, endpoint.tls.clone());
    let sni = ServerName::try_from(host.to_string()).ok();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bool>(n.max(1));
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let mut holders = Vec::with_capacity(n);
    for i in 0..n {
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        if Instant::now() >= deadline || shared.stop.load(Ordering::Relaxed) {
            break;
        }
        let url = url.clone();
        let tx = tx.clone();
        let mut release = release_rx.clone();
        let (tls, sni) = (tls.clone(), sni.clone());
        holders.push(tokio::spawn(async move {
            let open = async {
                let tcp = TcpStream::connect(addr).await.ok()?;
                let io: Box<dyn Io> = match tls {
                    None => Box::new(tcp),
                    Some(config) => Box::new(
                        tokio_rustls::TlsConnector::from(config)
                            .connect(sni?, tcp)
                            .await
                            .ok()?,
                    ),
                };
                let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), io)
                    .await
                    .ok()?;
                let text = format!("42[\"hello\",{i}]");
                ws.send(Message::text(text.clone())).await.ok()?;
                match ws.next().await {
                    Some(Ok(Message::Text(t))) if t.as_str() == text => Some(ws),
                    _ => None,
                }
            };
            let ws = tokio::time::timeout_at(deadline, open).await.ok().flatten();
            drop(permit);
            let ok = ws.is_some();
            let _ = tx.send(ok).await;
            if let Some(mut ws) = ws {
                // Hold the connection idle until released (or the sender is gone), then close.
                let _ = release.wait_for(|r| *r).await;
                let _ = ws.close(None).await;
            }
        }));
        shared.completed.fetch_add(1, Ordering::Relaxed);
    }
    drop(tx);
    let mut out = WsOutcome::default();
    while let Some(ok) = rx.recv().await {
        if ok {
            out.opened += 1;
        } else {
            out.failed += 1;
        }
        if out.opened + out.failed == holders.len() as u64 {
            break;
        }
    }
    (
        WsHold {
            release: release_tx,
            holders,
        },
        out,
    )
}
