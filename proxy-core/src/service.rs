//! The `ProxyHttp` implementation: a thin dispatcher from Pingora's hooks to the modules.
//!
//! | hook | does | module |
//! |---|---|---|
//! | `request_filter` | request id, routing (the [`RouteDecider`], by default host then longest path prefix), body-size check, rate limits, port-80 redirect and ACME | [`routing`](crate::routing), [`ratelimit`], [`acme`](crate::acme) |
//! | `upstream_peer` | pick a healthy backend not tried yet, with timeouts | [`upstream`](crate::upstream) |
//! | `fail_to_connect` | retry a failed connect on another backend | |
//! | `connected_to_upstream` | count the connection, new or reused from the keepalive pool | [`metrics`](crate::metrics) |
//! | `upstream_request_filter` | origin-form URI, forwarded headers, hop-by-hop stripping | [`headers`] |
//! | `request_body_filter` | body limit on streamed bodies (413) | |
//! | `upstream_response_filter` / `response_filter` | hop-by-hop stripping, security headers, request id | [`headers`] |
//! | `fail_to_proxy` | 502/504/4xx with a short body and the security headers | [`errors`](crate::errors) |
//! | `logging` | one access-log line; the request's metrics | [`access_log`](crate::access_log), [`metrics`](crate::metrics) |

use crate::access_log::AccessRecord;
use crate::cache::{self, Caches};
use crate::compression::{self, BodyCoder};
use crate::errors::{answer_for, body_for, Refusal};
use crate::headers::{self, HeaderPolicy, X_REQUEST_ID};
use crate::metrics::{InFlight, RequestMetrics};
use crate::ratelimit::{self, Decision};
use crate::routing::{path_is_clean, HostPathDecider, RouteDecider, RouteError};
use crate::state::{Class, ProxyState, Route, Site, Upstream};
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
    decider: Arc<dyn RouteDecider>,
}

impl GalionProxy {
    /// A proxy for `role` reading the current state from `state` at each request, routing
    /// with [`HostPathDecider`] (host, then longest path prefix).
    pub fn new(state: Arc<ArcSwap<ProxyState>>, role: ListenerRole) -> Self {
        GalionProxy {
            state,
            role,
            decider: Arc::new(HostPathDecider),
        }
    }

    /// The same proxy routing with `decider` instead: see [`RouteDecider`] for what its answers
    /// mean. Share one decider between the proxies of several listeners by cloning the `Arc`.
    pub fn with_decider(mut self, decider: Arc<dyn RouteDecider>) -> Self {
        self.decider = decider;
        self
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
    /// The request carries credentials (`Authorization` or a credential cookie): it shares
    /// only stored responses the origin marked shareable.
    credentials: bool,
    /// Why a stored response was found but not used for this request (it goes upstream and
    /// its answer is not stored under that reason); see `cache_hit_filter`.
    cache_refused: Option<&'static str>,
    /// The request's own `Cache-Control`, when it has one (boxed: most requests have none).
    request_cc: Option<Box<cache::freshness::RequestDirectives>>,
    /// The fields of a `304` that validated a stored response, kept from
    /// `upstream_response_filter` for `response_cache_filter` (RFC 9111 §4.3.4).
    not_modified: Option<Box<http::HeaderMap>>,
    peer: Option<IpAddr>,
    client: Option<IpAddr>,
    conn_guard: Option<pingora_limits::inflight::Guard>,
    /// The rate-limit headers' remaining count and reset, when the route's class allowed it.
    rate: Option<(u32, u32)>,
    coder: Option<BodyCoder>,
    in_flight: Option<InFlight>,
    /// A cache hit's body chunk held back over HTTP/2 until the next one (or the end) is known;
    /// see `response_body_filter`.
    held: Option<Bytes>,
}

impl RequestCtx {
    /// The request's `Cache-Control` directives (all absent without the header).
    fn request_cc(&self) -> cache::freshness::RequestDirectives {
        self.request_cc.as_deref().copied().unwrap_or_default()
    }

    /// The site the request was routed to (or whose host it named).
    fn site(&self) -> Option<&Site> {
        self.state.sites.get(self.site?)
    }

    /// The route the request was routed to.
    fn route(&self) -> Option<&Route> {
        self.state.route(self.site?, self.route?)
    }

    /// The route's rate-limit class.
    fn class(&self) -> Option<&Class> {
        self.route()?.class.as_deref()
    }

    /// The upstream group the request goes to.
    fn upstream(&self) -> Option<&Upstream> {
        self.state.upstreams.get(self.upstream?)
    }

    /// The metrics the request is counted under: its route's, else its site's, else those of
    /// requests that matched no site.
    fn request_metrics(&self) -> &RequestMetrics {
        match (self.site(), self.route()) {
            (_, Some(r)) => &r.metrics,
            (Some(s), None) => &s.unrouted,
            (None, None) => &self.state.unrouted,
        }
    }

    fn policy(&self) -> &HeaderPolicy {
        self.site()
            .map_or(&self.state.default_headers, |s| &s.headers)
    }
}

/// `a` then `b` as one buffer, copying only when both hold bytes.
fn concat(a: Bytes, b: Bytes) -> Bytes {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut joined = Vec::with_capacity(a.len() + b.len());
    joined.extend_from_slice(&a);
    joined.extend_from_slice(&b);
    Bytes::from(joined)
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

/// After a non-error answer to an unsafe request (RFC 9111 §4.4): invalidates what the cache
/// holds for the request's URL, and for the same-origin URLs in the answer's `Location` and
/// `Content-Location`.
fn invalidate(req: &RequestHeader, resp: &ResponseHeader, caches: &Caches) {
    let Some(host) = request_host(req) else {
        return;
    };
    caches.invalidate(host, req.uri.path_and_query().map_or("/", |p| p.as_str()));
    for name in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(target) = resp
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| cache::same_origin_target(v, host))
        {
            caches.invalidate(host, target);
        }
    }
}

/// Writes a complete response generated by the proxy, with the security headers.
async fn respond(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    body: Bytes,
    content_type: &'static str,
    extra: &[(header::HeaderName, HeaderValue)],
) -> Result<()> {
    let mut resp = ResponseHeader::build(status, Some(6))?;
    resp.insert_header(header::CONTENT_TYPE, content_type)?;
    resp.insert_header(header::CONTENT_LENGTH, body.len())?;
    resp.insert_header(X_REQUEST_ID, ctx.request_id.clone())?;
    for (k, v) in extra {
        resp.insert_header(k.clone(), v.clone())?;
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

async fn refuse(session: &mut Session, ctx: &RequestCtx, why: Refusal) -> Result<bool> {
    let status = why.status();
    if !keep_after_refusal(session.req_header(), status) {
        session.set_keepalive(None);
    }
    let allow = [(header::ALLOW, HeaderValue::from_static(Refusal::ALLOW))];
    respond(
        session,
        ctx,
        status,
        Bytes::from_static(why.body().as_bytes()),
        "text/plain; charset=utf-8",
        if status == 405 { &allow } else { &[] },
    )
    .await?;
    if why == Refusal::BodyTooLarge {
        linger(session).await;
    }
    Ok(true)
}

/// Whether a connection may carry the next request after `status` refused this one unread.
/// Only when the request has no body to skip (no `Transfer-Encoding`, no `Content-Length` or
/// `0`), and the refusal is not for the request's own shape (`400`, `413`): a client turned away
/// by host (`421`), path (`404`), method (`405`) or a limit (`429`) keeps its connection, so a
/// throttled client behind TLS does not pay a new handshake on every retry (nginx keeps it too).
fn keep_after_refusal(req: &RequestHeader, status: u16) -> bool {
    let bodiless = !req.headers.contains_key(header::TRANSFER_ENCODING)
        && req
            .headers
            .get_all(header::CONTENT_LENGTH)
            .iter()
            .all(|v| v.as_bytes().trim_ascii() == b"0");
    bodiless && !matches!(status, 400 | 413)
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

/// Why a request was refused by a limit.
enum LimitRefusal {
    /// Too many requests in the window for the route's class.
    Rate { retry_after: u32 },
    /// Too many requests in flight from this client.
    Concurrency,
}

impl GalionProxy {
    /// Applies the connection cap and the route's rate class to the resolved client.
    async fn check_limits(&self, ctx: &mut RequestCtx, path: &str) -> Option<LimitRefusal> {
        let state = ctx.state.clone();
        let ip = ctx.client?;
        if state.limit_allow.contains(ip)
            || state
                .config
                .limits
                .exempt_paths
                .iter()
                .any(|p| path.starts_with(p.as_str()))
        {
            return None;
        }
        match state.conn_limiter.acquire(ip) {
            Ok(guard) => ctx.conn_guard = guard,
            Err(_) => return Some(LimitRefusal::Concurrency),
        }
        let class = state.route(ctx.site?, ctx.route?)?.class.as_deref()?;
        let decision = match &state.redis_limiter {
            Some(shared) => shared.check(&state.limiter, &class.limit, ip).await,
            None => state.limiter.check(&class.limit, ip),
        };
        match decision {
            Decision::Allow {
                remaining,
                reset_secs,
            } => {
                ctx.rate = Some((remaining, reset_secs));
                None
            }
            Decision::Deny { retry_after_secs } => Some(LimitRefusal::Rate {
                retry_after: retry_after_secs,
            }),
        }
    }

    /// The 429 answer: `Retry-After`, the ratelimit headers, a JSON body for JSON classes.
    async fn too_many(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        why: LimitRefusal,
    ) -> Result<bool> {
        let class = ctx.class();
        let retry_after = match why {
            LimitRefusal::Rate { retry_after } => {
                if let Some(c) = class {
                    c.metrics.rate_rejected();
                }
                retry_after
            }
            LimitRefusal::Concurrency => {
                class
                    .map_or(&ctx.state.unclassed, |c| &c.metrics)
                    .concurrency_rejected();
                1
            }
        };
        let mut extra = vec![(header::RETRY_AFTER, HeaderValue::from(retry_after))];
        // The ratelimit headers describe the class's window: a concurrency refusal is not one.
        let rate_class = class.filter(|_| matches!(why, LimitRefusal::Rate { .. }));
        if let Some(c) = rate_class {
            extra.push((ratelimit::RATELIMIT_POLICY, c.policy.clone()));
            extra.push((
                ratelimit::RATELIMIT,
                ratelimit::ratelimit_header(&c.limit, 0, retry_after),
            ));
        }
        let (body, content_type) = if rate_class.is_some_and(|c| c.json) {
            (
                Bytes::from(format!(
                    "{{\"error\":\"too_many_requests\",\"retry_after\":{retry_after}}}"
                )),
                "application/json",
            )
        } else {
            (
                Bytes::from_static(body_for(429).as_bytes()),
                "text/plain; charset=utf-8",
            )
        };
        if !keep_after_refusal(session.req_header(), 429) {
            session.set_keepalive(None);
        }
        respond(session, ctx, 429, body, content_type, &extra).await?;
        Ok(true)
    }

    async fn redirect_or_acme(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        let req = session.req_header();
        let path = req.uri.path();
        if let Some(token) = path.strip_prefix(crate::acme::CHALLENGE_PREFIX) {
            if let Some(answer) = ctx.state.certificates.challenges.http01(token).await {
                respond(session, ctx, 200, Bytes::from(answer), "text/plain", &[]).await?;
                return Ok(true);
            }
            let Some(webroot) = ctx.state.config.acme_webroot.clone() else {
                return refuse(session, ctx, Refusal::NoChallenge).await;
            };
            return match crate::acme::read_challenge(&webroot, token).await {
                Some(body) => {
                    respond(session, ctx, 200, body, "text/plain", &[]).await?;
                    Ok(true)
                }
                None => refuse(session, ctx, Refusal::NoChallenge).await,
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
                    &[(header::LOCATION, v)],
                )
                .await?;
                Ok(true)
            }
            Err(_) => refuse(session, ctx, Refusal::BadRedirectTarget).await,
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
            credentials: false,
            cache_refused: None,
            request_cc: None,
            not_modified: None,
            peer: None,
            client: None,
            conn_guard: None,
            rate: None,
            coder: None,
            in_flight: None,
            held: None,
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        // A cache revalidation in the background is a subrequest: not a client's request.
        if session.subrequest_ctx.is_none() {
            ctx.in_flight = Some(ctx.state.metrics.in_flight());
        }
        // Pingora sets no downstream write timeout: a client that stops reading would hold the
        // request (and its upstream connection) for as long as TCP keeps the socket.
        session.set_write_timeout(Some(ctx.state.config.downstream.send_timeout));
        // Where a chunked body ends is Pingora's parser's call (it reads an empty chunk-size
        // line as the last chunk, for one): never read another request after one, so bytes a
        // client meant as body can never be served as a request of their own.
        if session
            .req_header()
            .headers
            .contains_key(header::TRANSFER_ENCODING)
        {
            session.set_keepalive(None);
        }
        let req = session.req_header();
        ctx.request_id = headers::request_id(req);
        ctx.peer = client_ip(session);
        ctx.client = ctx
            .peer
            .map(|p| ctx.state.client_ip.resolve(p, &req.headers));
        if req.method.as_str() == "TRACE" || req.method.as_str() == "TRACK" {
            return refuse(session, ctx, Refusal::Trace).await;
        }
        let Some(host) = request_host(req) else {
            return refuse(session, ctx, Refusal::NoHost).await;
        };
        if self.role == ListenerRole::Redirect {
            let Some(site) = ctx.state.routes.site_for_host(host) else {
                return refuse(session, ctx, Refusal::UnknownHost).await;
            };
            ctx.site = Some(site);
            return self.redirect_or_acme(session, ctx).await;
        }
        let decided = self.decider.decide(req, host, &ctx.state.routes);
        let site = match decided {
            Ok(d) => d.site,
            Err(RouteError::NoRoute { site }) => site,
            Err(RouteError::UnknownHost) => {
                return refuse(session, ctx, Refusal::UnknownHost).await
            }
        };
        ctx.site = (site < ctx.state.sites.len()).then_some(site);
        let path = req.uri.path();
        if !path_is_clean(path) {
            return refuse(session, ctx, Refusal::UncleanPath).await;
        }
        let decision = match decided {
            Ok(d) => d,
            Err(_) => return refuse(session, ctx, Refusal::NoRoute).await,
        };
        let exists = ctx.state.route(decision.site, decision.route).is_some()
            && decision.upstream < ctx.state.upstreams.len();
        if !exists {
            log::warn!(
                "route decider chose {decision:?}, which names no site, route or upstream group"
            );
            return refuse(session, ctx, Refusal::DeciderBug).await;
        }
        ctx.route = Some(decision.route);
        ctx.upstream = Some(decision.upstream);
        let limit = ctx.route().map_or(0, |r| r.max_body_size);
        ctx.body_limit = limit;
        let declared = req
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit) {
            return refuse(session, ctx, Refusal::BodyTooLarge).await;
        }
        if let Some(refusal) = self.check_limits(ctx, path).await {
            return self.too_many(session, ctx, refusal).await;
        }
        Ok(false)
    }

    fn request_cache_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<()> {
        let Some(rc) = ctx.route().map(|r| r.cache) else {
            return Ok(());
        };
        let req = session.req_header();
        if req.method != Method::GET && req.method != Method::HEAD {
            return Ok(());
        }
        let Some(z) = ctx.state.caches.zone_for(&rc, req.uri.path()) else {
            return Ok(());
        };
        let zone = &ctx.state.caches.zones[z];
        session.cache.enable(
            zone.storage,
            Some(zone.eviction),
            Some(ctx.state.caches.uncacheable),
            Some(ctx.state.caches.lock),
            None,
        );
        session
            .cache
            .set_max_file_size_bytes(zone.settings.max_object_size as usize);
        ctx.cache_zone = Some(z);
        let headers = &session.req_header().headers;
        let scan = ctx.state.config.cache.credential_cookies.scan(headers);
        ctx.credentials = scan.credentials;
        // A background revalidation is the cache's own request: the client's directives
        // (`only-if-cached`, `no-store`) are not its own.
        if session.subrequest_ctx.is_none() && scan.cache_control {
            ctx.request_cc = Some(Box::new(cache::freshness::RequestDirectives::of(headers)));
        }
        Ok(())
    }

    async fn cache_hit_filter(
        &self,
        _session: &mut Session,
        meta: &pingora_cache::CacheMeta,
        _hit_handler: &mut pingora_cache::HitHandler,
        _is_fresh: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<pingora_cache::ForcedFreshness>> {
        // A stored response the origin did not mark shareable may have been made for someone
        // else (or for nobody, while this request would get a personal answer): go upstream,
        // leaving the stored response in place for requests without credentials.
        let targeted = &ctx.state.config.cache.targeted_fields;
        if ctx.credentials && !cache::shared_with_credentials(meta.headers(), targeted) {
            ctx.cache_refused = Some(cache::CREDENTIALS);
            return Ok(Some(pingora_cache::ForcedFreshness::ForceMiss));
        }
        // The request's freshness directives (RFC 9111 §5.2.1) are obeyed where the origin alone
        // decides freshness; in policy mode the operator's TTLs do.
        let origin_mode = || {
            ctx.cache_zone.is_some_and(|z| {
                ctx.state.caches.zones[z].settings.freshness == cache::FreshnessMode::Origin
            })
        };
        let request_cc = ctx.request_cc();
        if request_cc.affects_reuse() && origin_mode() {
            use cache::freshness::Reuse;
            let forbids_stale = || {
                cache::freshness::Directives::of_response(meta.headers(), targeted).forbids_stale()
            };
            let now = std::time::SystemTime::now();
            return Ok(
                match request_cc.reuse(meta.age(), meta.fresh_until(), now, forbids_stale) {
                    Reuse::AsStored => None,
                    Reuse::Revalidate => Some(pingora_cache::ForcedFreshness::ForceExpired),
                    Reuse::ServeStale => Some(pingora_cache::ForcedFreshness::ForceFresh),
                },
            );
        }
        Ok(None)
    }

    async fn proxy_upstream_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        // `only-if-cached` (RFC 9111 §5.2.1.7): a stored response or 504, never the origin.
        if ctx.cache_zone.is_none() || !ctx.request_cc().only_if_cached {
            return Ok(true);
        }
        // (Bypassing: the URL's last answer could not be stored, so nothing was looked up.)
        if session.cache.enabled() || session.cache.bypassing() {
            session
                .cache
                .disable(pingora_cache::NoCacheReason::Custom(cache::ONLY_IF_CACHED));
        }
        respond(
            session,
            ctx,
            504,
            Bytes::from_static(
                b"gateway timeout: only-if-cached, and no stored response can be used\n",
            ),
            "text/plain; charset=utf-8",
            &[],
        )
        .await?;
        Ok(false)
    }

    fn cache_miss(&self, session: &mut Session, ctx: &mut RequestCtx) {
        match ctx.cache_refused {
            // Not a fill: disabling releases the key's lock (taken microseconds ago, when the
            // hit was turned into a miss) before anything goes upstream.
            Some(reason) => session
                .cache
                .disable(pingora_cache::NoCacheReason::Custom(reason)),
            None => session.cache.cache_miss(),
        }
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
        let (Some(z), Some(route)) = (ctx.cache_zone, ctx.route()) else {
            return Ok(pingora_cache::RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::NeverEnabled,
            ));
        };
        let zone = &ctx.state.caches.zones[z].settings;
        // The route's TTL applies to its own zone; static-extension requests get the static
        // zone's default.
        let ttl = match route.cache.zone {
            Some(rz) if rz == z => route.cache.ttl.unwrap_or(zone.default_ttl),
            _ => zone.default_ttl,
        };
        let req = session.req_header();
        // The body is stored under the variant of this request's negotiated coding: a body in
        // any other coding (the origin's own, left as is) must not be stored there.
        if !compression::fits_variant(&req.headers, &resp.headers) {
            return Ok(pingora_cache::RespCacheable::Uncacheable(
                pingora_cache::NoCacheReason::Custom("encoding-variant-mismatch"),
            ));
        }
        // A 304 that validated a stored response: its fields update the stored ones (Pingora's
        // merge, which `resp` is, takes only a few).
        let merged;
        let resp = match (ctx.not_modified.take(), session.cache.maybe_cache_meta()) {
            (Some(fields), Some(stored)) => {
                merged = cache::merge_not_modified(stored.response_header(), &fields);
                &merged
            }
            _ => resp,
        };
        let sent = ctx
            .upstream_start
            .map(|t| std::time::SystemTime::now() - t.elapsed());
        let admission = cache::Admission {
            credentials: ctx.credentials,
            ttl,
            targeted: &ctx.state.config.cache.targeted_fields,
            sent,
            request_no_store: ctx.request_cc().no_store,
        };
        Ok(cache::response_cacheability(resp, &admission, zone))
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
        let (Some(route), Some(up)) = (ctx.route(), ctx.upstream()) else {
            return Error::e_explain(ErrorType::InternalError, "request was not routed");
        };
        let read_timeout = route.read_timeout;
        let group = up.group.clone();
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
        Ok(Box::new(group.peer(addr, read_timeout)))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        let backends = match ctx.upstream() {
            Some(u) => {
                let timed_out = matches!(e.etype(), ErrorType::ConnectTimedout);
                u.metrics.connect_failed(timed_out);
                u.group.settings().backends.len()
            }
            None => 0,
        };
        // Nothing was sent yet, so another backend can take the request.
        if ctx.tried.len() < backends {
            e.set_retry(true);
        }
        e
    }

    async fn connected_to_upstream(
        &self,
        _session: &mut Session,
        reused: bool,
        _peer: &HttpPeer,
        #[cfg(unix)] _fd: std::os::unix::io::RawFd,
        #[cfg(windows)] _sock: std::os::windows::io::RawSocket,
        _digest: Option<&pingora_core::protocols::Digest>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(u) = ctx.upstream() {
            u.metrics.connected(reused);
        }
        Ok(())
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
        let xff = ctx
            .peer
            .map(|p| ctx.state.client_ip.forwarded_for(p, &up.headers));
        headers::set_forwarded(
            up,
            ctx.client,
            xff.as_deref(),
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
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if let Some(start) = ctx.upstream_start {
            ctx.upstream_time.get_or_insert(start.elapsed());
        }
        if resp.status == http::StatusCode::NOT_MODIFIED
            && session.cache.phase() == pingora_cache::CachePhase::Stale
        {
            ctx.not_modified = Some(Box::new(resp.headers.clone()));
        }
        // RFC 9110 §15: a status is 100..=599. Anything else (`HTTP/1.1 999`) is garbage: 502.
        if resp.status.as_u16() > 599 {
            let mut e = Error::explain(
                ErrorType::InvalidHTTPHeader,
                format!("upstream answered status {}", resp.status.as_u16()),
            );
            e.as_up();
            return Err(e);
        }
        let mut gone = Vec::new();
        headers::strip_hop_by_hop(&resp.headers, resp.status.as_u16() == 101, |n| {
            gone.push(n.clone())
        });
        for n in gone {
            resp.remove_header(&n);
        }
        if let Some(policy) = &ctx.state.compression {
            let plan = policy.plan_response(session.req_header(), resp, session.cache.enabled());
            ctx.state.compression_stats.record(&plan);
            ctx.coder = BodyCoder::new(&plan, policy);
        }
        Ok(())
    }

    fn upstream_response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        let Some(coder) = ctx.coder.as_mut() else {
            return Ok(None);
        };
        let failed = |e: std::io::Error| {
            let mut err = Error::because(ErrorType::InternalError, "response (de)compression", e);
            err.as_up();
            err
        };
        let mut out = match body.take() {
            Some(chunk) => coder.push(&chunk).map_err(failed)?,
            None => Bytes::new(),
        };
        if end_of_stream {
            let tail = coder.finish().map_err(failed)?;
            out = concat(out, tail);
        }
        *body = (!out.is_empty() || end_of_stream).then_some(out);
        Ok(None)
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.policy().apply(resp);
        // Made-once names: neither parsed nor copied by the insert (headers::cased).
        resp.insert_header(&headers::cased::X_REQUEST_ID, ctx.request_id.clone())?;
        if let (Some((remaining, reset)), Some(class)) = (ctx.rate, ctx.class()) {
            resp.insert_header(&headers::cased::RATELIMIT_POLICY, class.policy.clone())?;
            resp.insert_header(
                &headers::cased::RATELIMIT,
                ratelimit::ratelimit_header(&class.limit, remaining, reset),
            )?;
        }
        if self.role != ListenerRole::Redirect
            && ctx.route.is_some()
            && cache::invalidates(&session.req_header().method, resp.status.as_u16())
        {
            invalidate(session.req_header(), resp, &ctx.state.caches);
        }
        if self.role != ListenerRole::Redirect {
            let label = if ctx.cache_zone.is_some() {
                cache::status_label(session.cache.phase())
            } else {
                "BYPASS"
            };
            resp.insert_header(
                &headers::cased::X_CACHE_STATUS,
                HeaderValue::from_static(label),
            )?;
        }
        Ok(())
    }

    /// Cache hits over HTTP/2: Pingora writes a hit's last body chunk without END_STREAM and then
    /// an empty DATA frame with it, which the h2 connection usually flushes as a second TLS
    /// record and `send`. Holding each chunk back until the next is read (one chunk of
    /// lookahead) lets the last one carry END_STREAM itself: one frame, one record, one `send`
    /// for a small hit. HTTP/1.1 and proxied responses are left as they are.
    fn response_body_filter(
        &self,
        session: &mut Session,
        body: &mut Option<Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<Duration>> {
        if ctx.held.is_none()
            && !(session.is_http2()
                && matches!(
                    session.cache.phase(),
                    pingora_cache::CachePhase::Hit
                        | pingora_cache::CachePhase::Stale
                        | pingora_cache::CachePhase::StaleUpdating
                        | pingora_cache::CachePhase::Revalidated
                        | pingora_cache::CachePhase::RevalidatedNoCache(_)
                ))
        {
            return Ok(None);
        }
        if !end_of_stream {
            // Send the chunk held so far (None the first time: Pingora then reads on).
            let this = body.take().filter(|b| !b.is_empty());
            *body = match this {
                Some(b) => ctx.held.replace(b),
                None => ctx.held.take(),
            };
        } else if let Some(held) = ctx.held.take() {
            // A last chunk read together with the end (ranges) costs one copy, rarely.
            *body = Some(concat(held, body.take().unwrap_or_default()));
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let answer = answer_for(e);
        // Connect timeouts were counted by `fail_to_connect`.
        if let (Some(u), ErrorType::ReadTimedout | ErrorType::WriteTimedout) =
            (ctx.upstream(), e.etype())
        {
            if e.esource() == &pingora_error::ErrorSource::Upstream {
                u.metrics.timed_out();
            }
        }
        // The connection is closed after an error: say so, or keepalive clients retry into a reset.
        session.set_keepalive(None);
        if answer.status > 0 && session.response_written().is_none() {
            let _ = respond(
                session,
                ctx,
                answer.status,
                Bytes::from_static(answer.body.as_bytes()),
                "text/plain; charset=utf-8",
                &[],
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

    /// Upgraded connections (WebSockets) are tunnelled by a task of their own after the `101`:
    /// an idle one then holds its two sockets and this request's session and context, not the
    /// request's whole future (docs/performance.md, change 24). Our body filters have nothing
    /// to do for an upgraded body (`request_body_filter` skips it, and a `101` has no coder
    /// nor held chunk); the front gives every session its connection's gauge and per-peer slot
    /// (`set_connection_guard`), and `logging` runs when the tunnel closes, with its bytes.
    fn tunnel_upgraded_in_own_task(&self, _session: &Session, _ctx: &RequestCtx) -> bool {
        true
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        let req = session.req_header();
        let status = session.response_written().map_or(0, |r| r.status.as_u16());
        let duration = ctx.start.elapsed();
        let bytes_sent = session.as_downstream().body_bytes_sent();
        if session.subrequest_ctx.is_none() {
            ctx.request_metrics().record(
                status,
                duration,
                bytes_sent,
                session.as_downstream().body_bytes_read(),
            );
            if let Some(zone) = ctx.cache_zone.and_then(|z| ctx.state.caches.zones.get(z)) {
                let phase = session.cache.phase();
                if matches!(
                    phase,
                    pingora_cache::CachePhase::Stale | pingora_cache::CachePhase::StaleUpdating
                ) {
                    zone.requests.stale();
                }
                if let Some(reason) = cache::bypass_reason(phase) {
                    zone.requests.bypassed(reason);
                }
            }
        }
        if let (Some(u), Some(t)) = (ctx.upstream(), ctx.upstream_time) {
            u.metrics.response(t);
        }
        let hdr = |name: header::HeaderName| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
        };
        let site = ctx.site().map_or("-", |s| s.name.as_str());
        let protocol = match req.version {
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let record = AccessRecord {
            client_ip: ctx.client,
            host: request_host(req).unwrap_or("-"),
            method: req.method.as_str(),
            uri: req.uri.path_and_query().map_or("/", |p| p.as_str()),
            protocol,
            status,
            bytes_sent,
            referer: hdr(header::REFERER),
            user_agent: hdr(header::USER_AGENT),
            duration,
            upstream: ctx.upstream_addr,
            upstream_time: ctx.upstream_time,
            request_id: ctx.request_id.to_str().unwrap_or("-"),
            site,
            cache: if ctx.cache_zone.is_some() {
                cache::status_label(session.cache.phase())
            } else {
                "-"
            },
            cache_reason: cache::bypass_reason(session.cache.phase()).unwrap_or("-"),
        };
        ctx.state.access_log.log(&record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_keep_the_connection_only_without_a_body_to_skip() {
        let req = |lines: &[(&str, &str)]| {
            let mut r = RequestHeader::build("POST", b"/", None).expect("request");
            for (k, v) in lines {
                r.append_header(k.to_string(), *v).expect("header");
            }
            r
        };
        for status in [404, 405, 421, 429, 500] {
            assert!(keep_after_refusal(&req(&[]), status), "{status}");
            assert!(keep_after_refusal(&req(&[("content-length", "0")]), status));
            assert!(!keep_after_refusal(
                &req(&[("content-length", "5")]),
                status
            ));
            assert!(!keep_after_refusal(
                &req(&[("transfer-encoding", "chunked")]),
                status
            ));
            assert!(!keep_after_refusal(
                &req(&[("content-length", "0"), ("content-length", "7")]),
                status
            ));
        }
        for status in [400, 413] {
            assert!(!keep_after_refusal(&req(&[]), status), "{status}");
        }
    }
}
