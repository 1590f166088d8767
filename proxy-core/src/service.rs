//! The `ProxyHttp` implementation: a thin dispatcher from Pingora's hooks to the modules.
//!
//! | hook | does | module |
//! |---|---|---|
//! | `request_filter` | request id, host and path routing, body-size check, port-80 redirect and ACME | [`routing`](crate::routing), [`acme`](crate::acme) |
//! | `upstream_peer` | pick a healthy backend not tried yet, with timeouts | [`upstream`](crate::upstream) |
//! | `fail_to_connect` | retry a failed connect on another backend | |
//! | `upstream_request_filter` | origin-form URI, forwarded headers, hop-by-hop stripping | [`headers`] |
//! | `request_body_filter` | body limit on streamed bodies (413) | |
//! | `upstream_response_filter` / `response_filter` | hop-by-hop stripping, security headers, request id | [`headers`] |
//! | `fail_to_proxy` | 502/504/4xx with a short body and the security headers | [`errors`](crate::errors) |
//! | `logging` | one access-log line | [`access_log`](crate::access_log) |

use crate::access_log::{AccessLog, AccessRecord};
use crate::cache::{self, Caches};
use crate::config::Config;
use crate::errors::{answer_for, body_for};
use crate::headers::{self, HeaderPolicy, X_CACHE_STATUS, X_REQUEST_ID};
use crate::routing::{path_is_clean, RouteError, RouteTable};
use crate::upstream::UpstreamGroup;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::Method;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, Session};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Everything a request needs from the config, compiled. Swapped whole on reload.
#[derive(Debug)]
pub struct ProxyState {
    /// The validated config.
    pub config: Arc<Config>,
    /// Host and path routing.
    pub routes: RouteTable,
    /// Upstream groups, indexed like `config.upstreams`.
    pub upstreams: Vec<Arc<UpstreamGroup>>,
    /// Header policy per site, indexed like `config.sites`.
    pub site_headers: Vec<HeaderPolicy>,
    /// Header policy for answers that belong to no site (unknown host).
    pub default_headers: HeaderPolicy,
    /// The access log.
    pub access_log: AccessLog,
    /// Cache zones (shared across reloads: the same zones stay open).
    pub caches: Arc<Caches>,
}

impl ProxyState {
    /// Compiles a validated config. Fails only if the access log cannot be opened or a
    /// backend address cannot be used.
    pub fn new(config: Arc<Config>) -> std::io::Result<ProxyState> {
        let caches = Arc::new(Caches::open(&config.cache)?);
        Self::with_caches(config, caches)
    }

    /// Compiles a config around already-open cache zones.
    pub fn with_caches(config: Arc<Config>, caches: Arc<Caches>) -> std::io::Result<ProxyState> {
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| UpstreamGroup::new(u).map(Arc::new))
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(ProxyState {
            routes: RouteTable::new(&config),
            upstreams,
            site_headers: config
                .sites
                .iter()
                .map(|s| HeaderPolicy::new(&s.headers))
                .collect(),
            default_headers: HeaderPolicy::new(&config.default_headers),
            access_log: AccessLog::open(&config.access_log)?,
            caches,
            config,
        })
    }
}

/// What a listener does with requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerRole {
    /// TLS: route and proxy.
    Https,
    /// Plain HTTP that routes and proxies (local use, or behind another TLS terminator).
    PlainProxy,
    /// Plain HTTP: ACME challenges, and 301 to https for everything else.
    Redirect,
}

/// The proxy: one per listener role, all sharing one [`ProxyState`].
pub struct GalionProxy {
    state: Arc<ArcSwap<ProxyState>>,
    role: ListenerRole,
}

impl GalionProxy {
    /// A proxy for `role` reading the current state from `state` at each request.
    pub fn new(state: Arc<ArcSwap<ProxyState>>, role: ListenerRole) -> Self {
        GalionProxy { state, role }
    }
}

/// Per-request state.
#[derive(Debug)]
pub struct RequestCtx {
    state: Arc<ProxyState>,
    start: Instant,
    request_id: HeaderValue,
    site: Option<usize>,
    route: Option<usize>,
    upstream: Option<usize>,
    tried: Vec<SocketAddr>,
    upstream_addr: Option<SocketAddr>,
    upstream_start: Option<Instant>,
    upstream_time: Option<Duration>,
    body_limit: u64,
    body_seen: u64,
    cache_zone: Option<usize>,
}

impl RequestCtx {
    fn policy(&self) -> &HeaderPolicy {
        self.site
            .and_then(|s| self.state.site_headers.get(s))
            .unwrap_or(&self.state.default_headers)
    }
}

/// The host a request is for: the absolute-form or `:authority` host if there is one,
/// otherwise `Host`.
pub fn request_host(req: &RequestHeader) -> Option<&str> {
    req.uri
        .authority()
        .map(|a| a.as_str())
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .map(|h| h.rsplit_once('@').map_or(h, |(_, host)| host))
}

fn client_ip(session: &Session) -> Option<IpAddr> {
    session
        .as_downstream()
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip())
}

/// Writes a complete response generated by the proxy, with the security headers.
async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    body: Bytes,
    content_type: &'static str,
    extra: Option<(header::HeaderName, HeaderValue)>,
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
    if let Some((k, v)) = extra {
        resp.insert_header(k, v)?;
    }
    ctx.policy().apply(&mut resp);
    let head_only = session.req_header().method == Method::HEAD || body.is_empty();
    session
        .write_response_header(Box::new(resp), head_only)
        .await?;
    if !head_only {
        session.write_response_body(Some(body), true).await?;
    }
    Ok(())
}

async fn refuse(session: &mut Session, ctx: &RequestCtx, status: u16) -> Result<bool> {
    // The request body, if any, is not forwarded: close the connection after answering.
    session.set_keepalive(None);
    respond(
        session,
        ctx,
        status,
        Bytes::from_static(body_for(status).as_bytes()),
        "text/plain; charset=utf-8",
        None,
    )
    .await?;
    if status == 413 {
        linger(session).await;
    }
    Ok(true)
}

/// Most body bytes read and discarded after a refusal before the connection is closed.
const LINGER_BYTES: usize = 64 << 20;
/// Longest time spent doing so.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// Lingering close (RFC 9112 §9.6, nginx's `lingering_close`): after answering a request whose
/// body is not wanted, read and discard what the client is still sending, within bounds, so
/// closing does not reset the connection before the client has read the answer.
async fn linger(session: &mut Session) {
    let downstream = session.as_downstream_mut();
    let drain = async {
        let mut read = 0usize;
        while let Ok(Some(chunk)) = downstream.read_request_body().await {
            read += chunk.len();
            if read > LINGER_BYTES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_TIME, drain).await;
}

impl GalionProxy {
    async fn redirect_or_acme(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        let path = req.uri.path();
        if let Some(token) = path.strip_prefix(crate::acme::CHALLENGE_PREFIX) {
            let Some(webroot) = ctx.state.config.acme_webroot.clone() else {
                return refuse(session, ctx, 404).await;
            };
            return match crate::acme::read_challenge(&webroot, token).await {
                Some(body) => {
                    respond(session, ctx, 200, body, "text/plain", None).await?;
                    Ok(true)
                }
                None => refuse(session, ctx, 404).await,
            };
        }
        let target = req
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/");
        let host = request_host(req)
            .map(crate::routing::strip_port)
            .unwrap_or("");
        let location = format!("https://{}{}", host.to_ascii_lowercase(), target);
        match HeaderValue::from_str(&location) {
            Ok(v) => {
                respond(
                    session,
                    ctx,
                    301,
                    Bytes::from_static(b"moved permanently\n"),
                    "text/plain; charset=utf-8",
                    Some((header::LOCATION, v)),
                )
                .await?;
                Ok(true)
            }
            Err(_) => refuse(session, ctx, 400).await,
        }
    }
}

#[async_trait]
impl ProxyHttp for GalionProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            state: self.state.load_full(),
            start: Instant::now(),
            request_id: HeaderValue::from_static("-"),
            site: None,
            route: None,
            upstream: None,
            tried: Vec::new(),
            upstream_addr: None,
            upstream_start: None,
            upstream_time: None,
            body_limit: u64::MAX,
            body_seen: 0,
            cache_zone: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        ctx.request_id = headers::request_id(req);
        let Some(host) = request_host(req) else {
            return refuse(session, ctx, 400).await;
        };
        let Some(site) = ctx.state.routes.site_for_host(host) else {
            return refuse(session, ctx, 421).await;
        };
        ctx.site = Some(site);
        if self.role == ListenerRole::Redirect {
            return self.redirect_or_acme(session, ctx).await;
        }
        let path = req.uri.path();
        if !path_is_clean(path) {
            return refuse(session, ctx, 400).await;
        }
        let decision = match ctx.state.routes.decide_in_site(site, path) {
            Ok(d) => d,
            Err(RouteError::NoRoute { .. }) | Err(RouteError::UnknownHost) => {
                return refuse(session, ctx, 404).await
            }
        };
        ctx.route = Some(decision.route);
        ctx.upstream = Some(decision.upstream);
        let limit = ctx.state.config.sites[site].routes[decision.route].max_body_size;
        ctx.body_limit = limit;
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return refuse(session, ctx, 413).await;
        }
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let (Some(site), Some(route)) = (ctx.site, ctx.route) else {
            return Ok(());
        };
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            return Ok(());
        }
        let rc = ctx.state.config.sites[site].routes[route].cache;
        let Some(z) = ctx.state.caches.zone_for(&rc, req.uri.path()) else {
            return Ok(());
        };
        let zone = &ctx.state.caches.zones[z];
        session.cache.enable(
            zone.storage,
            Some(zone.eviction),
            None,
            Some(ctx.state.caches.lock),
            None,
        );
        session
            .cache
            .set_max_file_size_bytes(zone.settings.max_object_size as usize);
        ctx.cache_zone = Some(z);
        Ok(())
    }

    fn cache_key_callback(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
    ) -> Result<pingora_cache::CacheKey> {
        let req = session.req_header();
        let zone = ctx
            .cache_zone
            .map_or("", |z| ctx.state.caches.zones[z].settings.name.as_str());
        Ok(cache::cache_key(
            self.role == ListenerRole::Https,
            request_host(req).unwrap_or(""),
            req.uri.path_and_query().map_or("/", |p| p.as_str()),
            zone,
        ))
    }

    fn response_cache_filter(
        &self,
        session: &Session,
        resp: &ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<pingora_cache::RespCacheable> {
        let (Some(z), Some(site), Some(route)) = (ctx.cache_zone, ctx.site, ctx.route) else {
            return Ok(pingora_cache::RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::NeverEnabled,
            ));
        };
        let zone = &ctx.state.caches.zones[z].settings;
        let route = &ctx.state.config.sites[site].routes[route];
        // The route's TTL applies to its own zone; static-extension requests get the static
        // zone's default.
        let ttl = match route.cache.zone {
            Some(rz) if rz == z => route.cache.ttl.unwrap_or(zone.default_ttl),
            _ => zone.default_ttl,
        };
        let authorization = session
            .req_header()
            .headers
            .contains_key(header::AUTHORIZATION);
        Ok(cache::response_cacheability(resp, authorization, ttl, zone))
    }

    fn cache_vary_filter(
        &self,
        meta: &pingora_cache::CacheMeta,
        _ctx: &mut RequestCtx,
        req: &RequestHeader,
    ) -> Option<pingora_cache::key::HashBinary> {
        cache::variance(meta, req)
    }

    fn should_serve_stale(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
        error: Option<&Error>,
    ) -> bool {
        // Pingora asks only inside the entry's stale-while-revalidate (no error) or
        // stale-if-error (upstream error or 5xx) window.
        error.is_none_or(|e| e.esource() == &pingora_error::ErrorSource::Upstream)
    }

    async fn upstream_peer(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        let _ = session;
        let (Some(site), Some(route), Some(up)) = (ctx.site, ctx.route, ctx.upstream) else {
            return Error::e_explain(ErrorType::InternalError, "request was not routed");
        };
        let group = ctx.state.upstreams[up].clone();
        // A backend not tried yet; when all were tried (Pingora retrying a request that failed
        // on a reused keepalive connection), any backend again.
        let Some(addr) = group.select(&ctx.tried).or_else(|| group.select(&[])) else {
            return Error::e_explain(ErrorType::ConnectNoRoute, "no backend left to try").map_err(
                |mut e| {
                    e.as_up();
                    e
                },
            );
        };
        ctx.tried.push(addr);
        ctx.upstream_addr = Some(addr);
        ctx.upstream_start = Some(Instant::now());
        let read_timeout = ctx.state.config.sites[site].routes[route].read_timeout;
        Ok(Box::new(group.peer(addr, read_timeout)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let backends = ctx
            .upstream
            .and_then(|u| ctx.state.upstreams.get(u))
            .map_or(0, |g| g.settings().backends.len());
        // Nothing was sent yet, so another backend can take the request.
        if ctx.tried.len() < backends {
            e.set_retry(true);
        }
        e
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        up: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let host = request_host(up).unwrap_or("").to_string();
        // Absolute-form targets (`GET http://host/path`) go upstream in origin-form.
        if up.uri.authority().is_some() || up.raw_path().first() != Some(&b'/') {
            let pq = up
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into());
            let uri: http::Uri = pq
                .parse()
                .map_err(|_| Error::explain(ErrorType::HTTPStatus(400), "bad request target"))?;
            up.set_uri(uri);
        }
        up.insert_header(header::HOST, host.as_str())?;
        let keep_upgrade = session.is_upgrade_req();
        let mut gone = Vec::new();
        headers::strip_hop_by_hop(&up.headers, keep_upgrade, |n| gone.push(n.clone()));
        for n in gone {
            up.remove_header(&n);
        }
        headers::set_forwarded(
            up,
            client_ip(session),
            self.role == ListenerRole::Https,
            &host,
            &ctx.request_id,
        );
        Ok(())
    }

    async fn request_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        // After a WebSocket upgrade the "body" is the client's frames: not a request body.
        if session.was_upgraded() {
            return Ok(());
        }
        if let Some(b) = body {
            ctx.body_seen += b.len() as u64;
            if ctx.body_seen > ctx.body_limit {
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body over the limit");
            }
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_time.get_or_insert(start.elapsed());
        }
        let mut gone = Vec::new();
        headers::strip_hop_by_hop(&resp.headers, resp.status.as_u16() == 101, |n| {
            gone.push(n.clone())
        });
        for n in gone {
            resp.remove_header(&n);
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.policy().apply(resp);
        resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
        if self.role != ListenerRole::Redirect {
            let label = if ctx.cache_zone.is_some() {
                cache::status_label(session.cache.phase())
            } else {
                "BYPASS"
            };
            resp.insert_header(X_CACHE_STATUS, label)?;
        }
        Ok(())
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let answer = answer_for(e);
        // The connection is closed after an error: say so, or keepalive clients retry into a reset.
        session.set_keepalive(None);
        if answer.status > 0 && session.response_written().is_none() {
            let _ = respond(
                session,
                ctx,
                answer.status,
                Bytes::from_static(answer.body.as_bytes()),
                "text/plain; charset=utf-8",
                None,
            )
            .await;
            if answer.status == 413 {
                linger(session).await;
            }
        }
        FailToProxy {
            error_code: answer.status,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let hdr = |name: header::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let site = ctx
            .site
            .and_then(|s| ctx.state.config.sites.get(s))
            .map_or("-", |s| s.name.as_str());
        let protocol = match req.version {
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let record = AccessRecord {
            client_ip: client_ip(session),
            host: request_host(req).unwrap_or("-"),
            method: req.method.as_str(),
            uri: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            protocol,
            status,
            bytes_sent: session.as_downstream().body_bytes_sent(),
            referer: hdr(header::REFERER),
            user_agent: hdr(header::USER_AGENT),
            duration: ctx.start.elapsed(),
            upstream: ctx.upstream_addr,
            upstream_time: ctx.upstream_time,
            request_id: ctx.request_id.to_str().unwrap_or("-"),
            site,
        };
        ctx.state.access_log.log(&record);
    }
}
