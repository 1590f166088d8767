//! The compiled state: everything a request needs from the config, built once per config and
//! swapped whole on reload.
//!
//! [`ProxyState`] sits above the building blocks (routing, upstream groups, cache zones,
//! limiters, header policies, compression, the access log, the Redis link, the metrics) and
//! below what serves requests with it (the service, the admin listener, the reloader, the
//! server). It compiles the config per site and route: one lookup ([`ProxyState::route`])
//! gives a route's upstream group, cache zone, limit class with its header values, body
//! limit, read timeout and metric handles, so the request path never indexes parallel tables.

use crate::access_log::AccessLog;
use crate::acme::{AcmeStats, Challenges};
use crate::cache::{Caches, RouteCache};
use crate::client_ip::{ClientIpResolver, TrustedProxies};
use crate::compression::{CompressionPolicy, CompressionStats};
use crate::config::{Config, LimitBackend};
use crate::headers::HeaderPolicy;
use crate::metrics::{ClassMetrics, Metrics, MetricsError, RequestMetrics, UpstreamMetrics, NONE};
use crate::purge_bus::PurgeBus;
use crate::ratelimit::redis::RedisLimiter;
use crate::ratelimit::{self, ConnLimiter, LimitClass, RateLimiter};
use crate::redis_link::{LinkError, RedisLink};
use crate::routing::RouteTable;
use crate::tls::SniResolver;
use crate::upstream::{self, UpstreamError, UpstreamGroup};
use http::HeaderValue;
use std::sync::Arc;
use std::time::Duration;

/// Why a config could not be compiled into a [`ProxyState`]: each names what failed. The
/// config was valid; these are failures of the machine (a directory, a file, a socket).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// A cache zone could not be opened.
    #[error(transparent)]
    Cache(#[from] crate::cache::OpenError),
    /// The access log file could not be opened or its writer thread started.
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::OpenError),
    /// An upstream group could not be built.
    #[error("upstream group {group}: {source}")]
    Upstream {
        /// The group's name.
        group: String,
        /// What failed.
        #[source]
        source: UpstreamError,
    },
    /// The `[redis]` link could not be set up.
    #[error("redis: {0}")]
    Redis(#[from] LinkError),
    /// The routing table could not be built (only for a config the validator never saw).
    #[error("routes: {0}")]
    Routes(#[from] crate::routing::RouteTableError),
    /// The metrics could not be set up (a bug in a metric's definition).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
}

/// Everything a request needs from the config, compiled. Swapped whole on reload.
#[derive(Debug)]
pub struct ProxyState {
    /// The validated config.
    pub(crate) config: Arc<Config>,
    /// Host and path routing.
    pub(crate) routes: RouteTable,
    /// The sites, compiled, in config order (the numbering [`RouteTable`] answers with).
    pub(crate) sites: Vec<Site>,
    /// The upstream groups, compiled, in config order (the numbering routes use).
    pub(crate) upstreams: Vec<Upstream>,
    /// Header policy for answers that belong to no site (unknown host).
    pub(crate) default_headers: HeaderPolicy,
    /// The metrics of requests that matched no site.
    pub(crate) unrouted: RequestMetrics,
    /// Concurrency rejections on routes without a limit class.
    pub(crate) unclassed: ClassMetrics,
    /// The access log.
    pub(crate) access_log: AccessLog,
    /// Cache zones (shared across reloads: the same zones stay open).
    pub(crate) caches: Arc<Caches>,
    /// Who the client is.
    pub(crate) client_ip: ClientIpResolver,
    /// Requests per client and class (one fixed-size sketch).
    pub(crate) limiter: Arc<RateLimiter>,
    /// Concurrent requests per client.
    pub(crate) conn_limiter: Arc<ConnLimiter>,
    /// Clients no limit applies to (`[limits] allow`).
    pub(crate) limit_allow: TrustedProxies,
    /// The link to `[redis]`, if configured (the same across reloads).
    pub(crate) redis: Option<Arc<RedisLink>>,
    /// Rate limits counted in Redis, with `[limits] backend = "redis"`; `limiter` answers
    /// while Redis cannot.
    pub(crate) redis_limiter: Option<Arc<RedisLimiter>>,
    /// Purges fanned out to the other instances, with a `[redis] purge_channel`.
    pub(crate) purge_bus: Option<Arc<PurgeBus>>,
    /// Response compression, if enabled.
    pub(crate) compression: Option<CompressionPolicy>,
    /// Compression counters (kept across reloads, as the metrics are).
    pub(crate) compression_stats: Arc<CompressionStats>,
    /// The proxy's metrics (shared across state swaps, as the caches are).
    pub(crate) metrics: Arc<Metrics>,
    /// The certificates served and the ACME challenges in flight (set by the server that
    /// builds the listeners; the same across reloads).
    pub(crate) certificates: Certificates,
}

/// The https side that outlives config swaps: the certificate resolver, the HTTP-01 answers
/// the port-80 listener serves, and the ACME issuer's counters.
#[derive(Debug, Clone, Default)]
pub(crate) struct Certificates {
    /// The https listeners' resolver, when there are https listeners.
    pub(crate) resolver: Option<Arc<SniResolver>>,
    /// HTTP-01 answers in flight.
    pub(crate) challenges: Arc<Challenges>,
    /// The issuer's counters, with `[acme]`.
    pub(crate) acme: Option<Arc<AcmeStats>>,
}

/// One site, compiled.
#[derive(Debug)]
pub(crate) struct Site {
    /// The site's name (access log, metric labels).
    pub(crate) name: String,
    /// Security headers and `Server` for every answer of the site.
    pub(crate) headers: HeaderPolicy,
    /// The routes, in config order (the numbering [`RouteTable`] answers with).
    pub(crate) routes: Vec<Route>,
    /// The metrics of the site's requests that matched no route.
    pub(crate) unrouted: RequestMetrics,
}

/// One route, compiled: everything a request on it needs.
#[derive(Debug)]
pub(crate) struct Route {
    /// The cache zone and TTL.
    pub(crate) cache: RouteCache,
    /// The rate-limit class, if any.
    pub(crate) class: Option<Arc<Class>>,
    /// Largest request body.
    pub(crate) max_body_size: u64,
    /// Longest wait for the upstream between reads (`None`: the group's).
    pub(crate) read_timeout: Option<Duration>,
    /// The metrics of the route's requests.
    pub(crate) metrics: RequestMetrics,
}

/// One rate-limit class, compiled.
#[derive(Debug)]
pub(crate) struct Class {
    /// The limiter's view of the class.
    pub(crate) limit: LimitClass,
    /// The `RateLimit-Policy` value, built once.
    pub(crate) policy: HeaderValue,
    /// Whether a 429 of this class has a JSON body.
    pub(crate) json: bool,
    /// The class's 429 counters.
    pub(crate) metrics: ClassMetrics,
}

/// One upstream group, compiled.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The group: backends, load balancing, health, peers (kept across reloads while its
    /// settings are the same).
    pub(crate) group: Arc<UpstreamGroup>,
    /// The group's metrics.
    pub(crate) metrics: UpstreamMetrics,
}

impl ProxyState {
    /// Compiles a validated config, opening its cache zones and starting fresh metrics. Fails
    /// only if the access log or a cache zone cannot be opened or a backend address cannot be
    /// used.
    pub fn new(config: Arc<Config>) -> Result<ProxyState, StateError> {
        let caches = Arc::new(Caches::open(&config.cache)?);
        Self::with_caches(config, caches)
    }

    /// Compiles a config around already-open cache zones, with fresh metrics (every counter at
    /// zero). Fails as [`ProxyState::new`] does.
    pub(crate) fn with_caches(
        config: Arc<Config>,
        caches: Arc<Caches>,
    ) -> Result<ProxyState, StateError> {
        Self::with_shared(config, caches, Arc::new(Metrics::new()?))
    }

    /// Compiles a config around the cache zones and metrics of a state it replaces, so a swap
    /// keeps the cache and every counter (a reload builds the new state this way). `caches`
    /// must have been opened for the same zones as `config` names. Fails as
    /// [`ProxyState::new`] does.
    pub(crate) fn with_shared(
        config: Arc<Config>,
        caches: Arc<Caches>,
        metrics: Arc<Metrics>,
    ) -> Result<ProxyState, StateError> {
        Self::build(config, caches, metrics, None)
    }

    /// Compiles a config that replaces `previous` (a reload): as [`ProxyState::with_shared`]
    /// with `previous`'s cache zones and metrics, and it also keeps what did not change so
    /// nothing restarts from zero: the rate limiter when `limits.window` and
    /// `limits.sketch_slots` are the same (counts carry over; changed class rates apply to
    /// them), the connection limiter when `max_connections_per_ip` is the same, the access log
    /// when `[access_log]` is the same (one writer thread, its dropped counter continues), and
    /// each upstream group whose settings are the same (its health state carries over).
    /// `config.cache.zones` must equal `previous`'s. Fails as [`ProxyState::new`] does.
    pub(crate) fn reloaded(
        config: Arc<Config>,
        previous: &ProxyState,
    ) -> Result<ProxyState, StateError> {
        Self::build(
            config,
            previous.caches.clone(),
            previous.metrics.clone(),
            Some(previous),
        )
    }

    /// The route `site` and `route` name (as [`RouteTable`] numbers them), if both exist.
    pub(crate) fn route(&self, site: usize, route: usize) -> Option<&Route> {
        self.sites.get(site)?.routes.get(route)
    }

    /// The config this state was compiled from.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The `/metrics` exposition: the registered series and those each source exports from its
    /// own counters now (cache zones, compression, access log, backend health, Redis).
    pub fn render_metrics(&self) -> Result<String, MetricsError> {
        let mut families = self.caches.metric_families().map_err(MetricsError::from)?;
        let groups: Vec<Arc<UpstreamGroup>> =
            self.upstreams.iter().map(|u| u.group.clone()).collect();
        families.extend(upstream::backend_families(&groups)?);
        families.extend(self.compression_stats.metric_families()?);
        families.extend(self.access_log.metric_families()?);
        if let Some(link) = &self.redis {
            families.extend(link.metric_families()?);
        }
        if let Some(resolver) = &self.certificates.resolver {
            families.extend(resolver.metric_families()?);
        }
        if let Some(acme) = &self.certificates.acme {
            families.extend(acme.metric_families()?);
        }
        self.metrics.render(families)
    }

    fn build(
        config: Arc<Config>,
        caches: Arc<Caches>,
        metrics: Arc<Metrics>,
        previous: Option<&ProxyState>,
    ) -> Result<ProxyState, StateError> {
        let limits = &config.limits;
        let classes = limits
            .classes
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let limit = LimitClass {
                    id: i as u8,
                    name: c.name.clone(),
                    rate: c.rate,
                    burst: c.burst,
                };
                Ok(Arc::new(Class {
                    policy: ratelimit::policy_header(&limit, limits.window),
                    json: c.json,
                    metrics: metrics.class_metrics(&c.name)?,
                    limit,
                }))
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| {
                let same = previous
                    .and_then(|p| p.upstreams.iter().find(|g| g.group.settings() == u))
                    .map(|g| g.group.clone());
                let group =
                    match same {
                        Some(g) => g,
                        None => Arc::new(UpstreamGroup::new(u).map_err(|source| {
                            StateError::Upstream {
                                group: u.name.clone(),
                                source,
                            }
                        })?),
                    };
                Ok(Upstream {
                    group,
                    metrics: metrics.upstream_metrics(&u.name)?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        let sites = config
            .sites
            .iter()
            .map(|s| {
                let routes = s
                    .routes
                    .iter()
                    .map(|r| {
                        Ok(Route {
                            cache: r.cache,
                            class: r.limit.and_then(|c| classes.get(c).cloned()),
                            max_body_size: r.max_body_size,
                            read_timeout: r.read_timeout,
                            metrics: metrics.request_metrics(&s.name, &r.prefix)?,
                        })
                    })
                    .collect::<Result<Vec<_>, StateError>>()?;
                Ok(Site {
                    name: s.name.clone(),
                    headers: HeaderPolicy::new(&s.headers),
                    routes,
                    unrouted: metrics.request_metrics(&s.name, NONE)?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        let old_limits = previous.map(|p| &p.config.limits);
        let limiter = match previous {
            Some(p)
                if old_limits.is_some_and(|o| {
                    o.window == limits.window && o.sketch_slots == limits.sketch_slots
                }) =>
            {
                p.limiter.clone()
            }
            _ => Arc::new(RateLimiter::new(limits.window, limits.sketch_slots)),
        };
        let conn_limiter = match previous {
            Some(p)
                if old_limits
                    .is_some_and(|o| o.max_connections_per_ip == limits.max_connections_per_ip) =>
            {
                p.conn_limiter.clone()
            }
            _ => Arc::new(ConnLimiter::new(limits.max_connections_per_ip)),
        };
        let access_log = match previous {
            Some(p) if p.config.access_log == config.access_log => p.access_log.clone(),
            _ => AccessLog::open(&config.access_log)?,
        };
        let (redis, redis_limiter, purge_bus) = redis_parts(&config, &caches, previous)?;
        let compression_stats = match previous {
            Some(p) => p.compression_stats.clone(),
            None => Arc::new(CompressionStats::default()),
        };
        Ok(ProxyState {
            routes: config.route_table()?,
            sites,
            upstreams,
            default_headers: HeaderPolicy::new(&config.default_headers),
            unrouted: metrics.request_metrics(NONE, NONE)?,
            unclassed: metrics.class_metrics(NONE)?,
            access_log,
            caches,
            client_ip: ClientIpResolver::new(
                TrustedProxies::new(config.client_ip.trusted.clone()),
                config.client_ip.header.clone(),
            ),
            limiter,
            conn_limiter,
            limit_allow: TrustedProxies::new(limits.allow.clone()),
            redis,
            redis_limiter,
            purge_bus,
            compression: config.compression.enabled.then(|| {
                let c = &config.compression;
                CompressionPolicy::new(
                    c.gzip_level,
                    c.brotli_quality,
                    c.min_size as usize,
                    c.types
                        .clone()
                        .unwrap_or_else(CompressionPolicy::default_types),
                )
            }),
            compression_stats,
            metrics,
            certificates: previous.map(|p| p.certificates.clone()).unwrap_or_default(),
            config,
        })
    }
}

type RedisParts = (
    Option<Arc<RedisLink>>,
    Option<Arc<RedisLimiter>>,
    Option<Arc<PurgeBus>>,
);

/// The Redis link, shared limiter and purge bus of `config`, keeping `previous`'s where they
/// still fit (a reload keeps `[redis]` as running, so the link always carries over).
fn redis_parts(
    config: &Config,
    caches: &Arc<Caches>,
    previous: Option<&ProxyState>,
) -> Result<RedisParts, StateError> {
    let Some(settings) = &config.redis else {
        return Ok((None, None, None));
    };
    let link = match previous.and_then(|p| p.redis.clone()) {
        Some(l) if l.settings() == settings => l,
        _ => Arc::new(RedisLink::new(settings)?),
    };
    let limits = &config.limits;
    let limiter = (limits.backend == LimitBackend::Redis).then(|| {
        match previous.and_then(|p| p.redis_limiter.clone().map(|r| (p, r))) {
            Some((p, r))
                if Arc::ptr_eq(r.link(), &link)
                    && p.config.limits.window == limits.window
                    && p.config.limits.classes == limits.classes =>
            {
                r
            }
            _ => Arc::new(RedisLimiter::new(link.clone(), limits.window)),
        }
    });
    let bus = settings.purge_channel.as_ref().map(|channel| {
        match previous.and_then(|p| p.purge_bus.clone()) {
            Some(b) if b.channel() == channel => b,
            _ => Arc::new(PurgeBus::new(link.clone(), channel, caches.clone())),
        }
    });
    Ok((Some(link), limiter, bus))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors travel through `Result`s on start and reload: keep them small (boxed sources).
    #[test]
    fn error_sizes_are_pinned() {
        assert_eq!(std::mem::size_of::<StateError>(), 80);
        assert_eq!(std::mem::size_of::<crate::BuildError>(), 80);
        assert_eq!(std::mem::size_of::<crate::errors::Refusal>(), 1);
    }
}
