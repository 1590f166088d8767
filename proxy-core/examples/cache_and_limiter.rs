//! A `ProxyHttp` of its own (not `GalionProxy`) built from two `proxy-core` blocks: the two-tier
//! cache storage (`TieredStorage` with its `DiskEviction` manager and a Pingora cache lock) and
//! the per-client rate limiter (`RateLimiter`, with `ClientIpResolver` to find the client),
//! proxying everything to one upstream.
//!
//! - `GET`/`HEAD` responses are cached as the origin's `Cache-Control` says; `200`s without one
//!   are fresh for a minute. `X-Cache-Status` says `MISS`, `HIT`, … on every response.
//! - Each client may make `--limit` requests a minute (hits included); more get `429` with
//!   `Retry-After` and the `RateLimit` headers. Clients are told apart by their address, or by
//!   `CF-Connecting-IP` when they connect from a `--trust`ed network.
//! - Every answer carries the recommended security headers (`HeaderPolicy`), the `429` too:
//!   an answer written in `request_filter` never passes `response_filter`, so it gets them
//!   there, from the same policy.
//!
//! ```sh
//! cargo run -p proxy-core --example cache_and_limiter -- \
//!     --listen 127.0.0.1:8080 --upstream 127.0.0.1:3000 --cache-dir /tmp/example-cache \
//!     --limit 10 --trust 127.0.0.0/8
//! curl -i http://127.0.0.1:8080/x    # X-Cache-Status: MISS, then HIT
//! ```
//!
//! It prints one `ready …` line once the port accepts connections, then runs until killed.

use async_trait::async_trait;
use http::header::{self, HeaderValue};
use http::{Method, StatusCode};
use proxy_core::pingora::cache::cache_control::CacheControl;
use proxy_core::pingora::cache::filters::resp_cacheable;
use proxy_core::pingora::cache::lock::{CacheKeyLockImpl, CacheLock};
use proxy_core::pingora::cache::{CacheKey, CacheMetaDefaults, RespCacheable};
use proxy_core::pingora::core::server::Server;
use proxy_core::pingora::core::upstreams::peer::HttpPeer;
use proxy_core::pingora::error::Result;
use proxy_core::pingora::http::ResponseHeader;
use proxy_core::pingora::proxy::{http_proxy_service, ProxyHttp, Session};
use proxy_core::{
    cache_key, cache_status_label, ratelimit_header, ratelimit_policy_header, request_host,
    ClientIpResolver, Decision, DiskEviction, HeaderPolicy, IpNet, LimitClass, RateLimiter,
    TieredStorage, TrustedProxies, CF_CONNECTING_IP, RATELIMIT, RATELIMIT_POLICY, X_CACHE_STATUS,
};
use std::error::Error;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Freshness when the origin gives none: a minute for 200, nothing stored otherwise.
fn default_fresh(status: StatusCode) -> Option<Duration> {
    (status == StatusCode::OK).then_some(Duration::from_secs(60))
}

static CACHE_DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(default_fresh, 0, 0);

struct CacheAndLimit {
    upstream: SocketAddr,
    // Pingora's cache wants all three for the life of the process.
    storage: &'static TieredStorage,
    eviction: &'static DiskEviction,
    lock: &'static CacheKeyLockImpl,
    clients: ClientIpResolver,
    limiter: RateLimiter,
    class: LimitClass,
    /// The security headers of every answer, early ones included.
    headers: HeaderPolicy,
    /// `RateLimit-Policy`: constant, built once.
    policy: HeaderValue,
}

#[async_trait]
impl ProxyHttp for CacheAndLimit {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<bool> {
        let peer = session
            .as_downstream()
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let Some(peer) = peer else {
            return Ok(false);
        };
        let client = self.clients.resolve(peer, &session.req_header().headers);
        let Decision::Deny { retry_after_secs } = self.limiter.check(&self.class, client) else {
            return Ok(false);
        };
        let mut resp = ResponseHeader::build(429, Some(5))?;
        resp.insert_header(header::RETRY_AFTER, retry_after_secs)?;
        resp.insert_header(RATELIMIT_POLICY, self.policy.clone())?;
        resp.insert_header(
            RATELIMIT,
            ratelimit_header(&self.class, 0, retry_after_secs),
        )?;
        resp.insert_header(header::CONTENT_LENGTH, 0)?;
        // Written here, the answer skips `response_filter`: the same headers, by hand.
        self.headers.apply(&mut resp);
        session.set_keepalive(None);
        session.write_response_header(Box::new(resp), true).await?;
        Ok(true)
    }

    fn request_cache_filter(&self, session: &mut Session, _ctx: &mut ()) -> Result<()> {
        let method = &session.req_header().method;
        if method == Method::GET || method == Method::HEAD {
            session.cache.enable(
                self.storage,
                Some(self.eviction),
                None,
                Some(self.lock),
                None,
            );
        }
        Ok(())
    }

    fn cache_key_callback(&self, session: &Session, _ctx: &mut ()) -> Result<CacheKey> {
        let req = session.req_header();
        Ok(cache_key(
            false,
            request_host(req).unwrap_or(""),
            req.uri.path_and_query().map_or("/", |p| p.as_str()),
            self.storage.name(),
        ))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut (),
    ) -> Result<RespCacheable> {
        let authorization = session
            .req_header()
            .headers
            .contains_key(header::AUTHORIZATION);
        let cc = CacheControl::from_resp_headers(resp);
        Ok(resp_cacheable(
            cc.as_ref(),
            resp.clone(),
            authorization,
            &CACHE_DEFAULTS,
        ))
    }

    async fn upstream_peer(&self, _session: &mut Session, _ctx: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        _ctx: &mut (),
    ) -> Result<()> {
        resp.insert_header(X_CACHE_STATUS, cache_status_label(session.cache.phase()))?;
        self.headers.apply(resp);
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn Error>> {
    let listen: SocketAddr = arg("--listen", "127.0.0.1:8080").parse()?;
    let upstream: SocketAddr = arg("--upstream", "127.0.0.1:3000").parse()?;
    let cache_dir = PathBuf::from(arg(
        "--cache-dir",
        &std::env::temp_dir()
            .join("galion-example-cache")
            .display()
            .to_string(),
    ));
    let limit: u32 = arg("--limit", "10").parse()?;
    let trusted = match std::env::args().position(|a| a == "--trust") {
        Some(_) => vec![arg("--trust", "").parse::<IpNet>()?],
        None => Vec::new(),
    };

    // 256 MiB on disk, 32 MiB of it in memory, objects up to 8 MiB. Leaked: they live as long
    // as the process, and Pingora's cache takes `&'static`.
    let eviction: &'static DiskEviction =
        Box::leak(Box::new(DiskEviction::with_capacity(256 << 20, 16384)));
    let storage: &'static TieredStorage = Box::leak(Box::new(TieredStorage::open(
        "example",
        &cache_dir,
        32 << 20,
        8 << 20,
        eviction,
    )?));
    let lock: &'static CacheKeyLockImpl = Box::leak(CacheLock::new_boxed(Duration::from_secs(5)));

    let class = LimitClass {
        id: 0,
        name: "default".into(),
        rate: limit,
        burst: 0,
    };
    let limiter = RateLimiter::new(Duration::from_secs(60), 4096);
    let app = CacheAndLimit {
        upstream,
        storage,
        eviction,
        lock,
        clients: ClientIpResolver::new(TrustedProxies::new(trusted), Some(CF_CONNECTING_IP)),
        headers: HeaderPolicy::recommended(),
        policy: ratelimit_policy_header(&class, limiter.window()),
        limiter,
        class,
    };

    let mut server = Server::new(None)?;
    server.bootstrap();
    let mut proxy = http_proxy_service(&server.configuration, app);
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);

    announce_when_listening(vec![listen], format!("listen={listen}"));
    server.run_forever()
}

/// `--name VALUE` from the command line, or `default`.
fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.to_string())
}

/// Prints `ready WHAT` once every address accepts connections. Pingora binds its listeners
/// when the server starts running, so this watches from a thread of its own.
fn announce_when_listening(addrs: Vec<SocketAddr>, what: String) {
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let up = |a: &SocketAddr| TcpStream::connect_timeout(a, Duration::from_millis(200));
            if addrs.iter().all(|a| up(a).is_ok()) {
                println!("ready {what}");
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("not listening after 30s: {addrs:?}");
    });
}
