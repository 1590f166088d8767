//! Prometheus metrics, served as text (exposition format 0.0.4) on the admin listener's
//! `GET /metrics`.
//!
//! [`Metrics`] owns a private [`prometheus::Registry`] (never the process-wide default one, so
//! several proxies in one process keep apart) and the handles of what the request path counts.
//! It is created once per proxy and outlives config swaps: [`ProxyState::with_shared`] takes it,
//! and compiles [`MetricHandles`] for the config (one handle per site and route, upstream
//! group, cache zone and limit class), so a request never looks a label set up.
//!
//! Two kinds of series:
//!
//! - **Counted on the request path** (registered here): requests, durations, upstream response
//!   times and failures, stale answers, rate-limit rejections, bytes in and out, requests in
//!   flight, TLS handshakes and ClientHellos, open client connections (counted by the
//!   [`Front`](crate::front::Front)), upstream connections new or reused. The service's `logging` hook does most of it, once per request;
//!   `fail_to_connect` / `fail_to_proxy` count upstream failures and the 429 path the
//!   rejections.
//! - **Read at scrape time** from counters the proxy keeps anyway (cache zone statistics, the
//!   compression counters, the access log's dropped lines, backend health): [`Metrics::render`]
//!   builds those families fresh from their sources, so they cost the request path nothing.
//!   Their sources only grow, so the counters among them are monotonic.
//!
//! Label values come from the config only (site name, route prefix, group, backend address,
//! zone, class) or from fixed sets (status class, tier, reason, action): a path, a host sent by
//! a client or a client address is never a label. `docs/metrics.md` lists every series.
//!
//! [`ProxyState::with_shared`]: crate::service::ProxyState::with_shared

use crate::cache::Caches;
use crate::config::Config;
use crate::service::{CompressionStats, ProxyState};
use async_trait::async_trait;
use pingora_core::listeners::{TlsAccept, TlsAcceptCallbacks};
use pingora_core::protocols::tls::TlsRef;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};
use std::any::Any;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value of "none": a request that matched no site or route, a route without a
/// rate-limit class, a request answered with no status.
pub const NONE: &str = "-";

/// Histogram buckets in seconds, 1 ms to 10 s (the 500 ms bucket is the p99 alert's).
const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Status class labels, indexed by [`status_class`].
const STATUS_CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", NONE];

/// Why the metrics could not be set up or rendered. Only a bug (a bad metric name or label
/// count) or an encoder failure gets here; no input from a client or the config can.
#[derive(Debug, thiserror::Error)]
#[error("metrics: {0}")]
pub struct MetricsError(#[from] prometheus::Error);

/// The metrics of one proxy: a private registry and the request-path series. See the module
/// docs. Share it with `Arc`; every method takes `&self`.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_response: HistogramVec,
    upstream_connect_failures: IntCounterVec,
    upstream_timeouts: IntCounterVec,
    cache_stale: IntCounterVec,
    cache_bypass: IntCounterVec,
    ratelimit_rejections: IntCounterVec,
    bytes_sent: IntCounterVec,
    bytes_received: IntCounterVec,
    in_flight: IntGauge,
    tls_handshakes: IntCounter,
    tls_client_hellos: IntCounter,
    downstream_connections: IntGauge,
    upstream_connections: IntCounterVec,
    compression: Arc<CompressionStats>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn counter_vec(name: &str, help: &str, labels: &[&str]) -> Result<IntCounterVec, MetricsError> {
    Ok(IntCounterVec::new(Opts::new(name, help), labels)?)
}

fn histogram_vec(name: &str, help: &str, labels: &[&str]) -> Result<HistogramVec, MetricsError> {
    let opts = HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec());
    Ok(HistogramVec::new(opts, labels)?)
}

impl Metrics {
    /// A fresh set of metrics in a registry of its own, every counter at zero. Fails only on a
    /// bug in the metric definitions.
    pub fn new() -> Result<Metrics, MetricsError> {
        let m = Metrics {
            registry: Registry::new(),
            requests: counter_vec(
                "galion_edge_requests_total",
                "Requests answered, by site, route prefix and status class.",
                &["site", "route", "status"],
            )?,
            request_duration: histogram_vec(
                "galion_edge_request_duration_seconds",
                "Time from the request's start to the end of its response.",
                &["site", "route"],
            )?,
            upstream_response: histogram_vec(
                "galion_edge_upstream_response_seconds",
                "Time from choosing a backend to its response header.",
                &["upstream"],
            )?,
            upstream_connect_failures: counter_vec(
                "galion_edge_upstream_connect_failures_total",
                "Connection attempts to a backend that failed (each retry counts).",
                &["upstream"],
            )?,
            upstream_timeouts: counter_vec(
                "galion_edge_upstream_timeouts_total",
                "Upstream connect, read or write timeouts.",
                &["upstream"],
            )?,
            cache_stale: counter_vec(
                "galion_edge_cache_stale_total",
                "Answers served stale from the cache (X-Cache-Status STALE or UPDATING).",
                &["zone"],
            )?,
            cache_bypass: counter_vec(
                "galion_edge_cache_bypass_total",
                "Requests on a caching route neither served from the cache nor stored in it, by \
                 zone and reason (credentials: the request carried Authorization or a credential \
                 cookie and the origin did not mark the answer shareable; origin: Cache-Control \
                 or a missing lifetime; set-cookie; vary-star; too-large; lock; encoding; \
                 too-many-headers; error).",
                &["zone", "reason"],
            )?,
            ratelimit_rejections: counter_vec(
                "galion_edge_ratelimit_rejections_total",
                "Requests refused with 429, by the route's limit class and reason.",
                &["class", "reason"],
            )?,
            bytes_sent: counter_vec(
                "galion_edge_bytes_sent_total",
                "Response body bytes sent to clients.",
                &["site"],
            )?,
            bytes_received: counter_vec(
                "galion_edge_bytes_received_total",
                "Request body bytes read from clients.",
                &["site"],
            )?,
            in_flight: IntGauge::new(
                "galion_edge_downstream_requests_in_flight",
                "Client requests being processed now.",
            )?,
            tls_handshakes: IntCounter::new(
                "galion_edge_tls_handshakes_total",
                "TLS handshakes completed on the https listeners.",
            )?,
            tls_client_hellos: IntCounter::new(
                "galion_edge_tls_client_hellos_total",
                "TLS ClientHellos that reached certificate selection on the https listeners. \
                 Minus galion_edge_tls_handshakes_total: handshakes that did not complete \
                 (failed or abandoned), plus any second ClientHello after a HelloRetryRequest.",
            )?,
            downstream_connections: IntGauge::new(
                "galion_edge_downstream_connections_open",
                "Client connections open now on the proxy listeners (not the admin listener).",
            )?,
            upstream_connections: counter_vec(
                "galion_edge_upstream_connections_total",
                "Upstream connections a request was sent on: reused=\"true\" from the \
                 keepalive pool, reused=\"false\" newly opened.",
                &["upstream", "reused"],
            )?,
            compression: Arc::new(CompressionStats::default()),
        };
        let collectors: [Box<dyn Collector>; 15] = [
            Box::new(m.requests.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_response.clone()),
            Box::new(m.upstream_connect_failures.clone()),
            Box::new(m.upstream_timeouts.clone()),
            Box::new(m.cache_stale.clone()),
            Box::new(m.cache_bypass.clone()),
            Box::new(m.ratelimit_rejections.clone()),
            Box::new(m.bytes_sent.clone()),
            Box::new(m.bytes_received.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.tls_handshakes.clone()),
            Box::new(m.tls_client_hellos.clone()),
            Box::new(m.downstream_connections.clone()),
            Box::new(m.upstream_connections.clone()),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        Ok(m)
    }

    /// The compression counters, kept here so that they outlive config swaps as the other
    /// counters do ([`ProxyState::compression_stats`] is this `Arc`).
    pub fn compression_stats(&self) -> Arc<CompressionStats> {
        self.compression.clone()
    }

    /// Marks one client request in flight until the guard is dropped.
    pub fn in_flight(&self) -> InFlight {
        InFlight::enter(&self.in_flight)
    }

    /// The gauge of open client connections, for [`Front::with_connection_gauge`].
    ///
    /// [`Front::with_connection_gauge`]: crate::front::Front::with_connection_gauge
    pub fn downstream_connections(&self) -> IntGauge {
        self.downstream_connections.clone()
    }

    /// The ClientHello counter, for [`SniResolver::with_client_hello_counter`].
    ///
    /// [`SniResolver::with_client_hello_counter`]: crate::tls::SniResolver::with_client_hello_counter
    pub fn tls_client_hellos(&self) -> IntCounter {
        self.tls_client_hellos.clone()
    }

    /// Pingora TLS callbacks that count completed handshakes, for
    /// `TlsSettings::with_callbacks`. (Pingora 0.9.1 calls nothing on a failed handshake: it
    /// logs it and drops the connection, so failures are not counted.)
    pub fn tls_callbacks(&self) -> TlsAcceptCallbacks {
        Box::new(HandshakeCounter(self.tls_handshakes.clone()))
    }

    /// Compiles the handles the request path uses for one config: every site/route pair, group,
    /// zone and class gets its series now (at zero), and a request only indexes a table.
    pub fn handles(&self, config: &Config, caches: &Caches) -> Result<MetricHandles, MetricsError> {
        let mut sites = Vec::with_capacity(config.sites.len());
        for s in &config.sites {
            let sent = self.bytes_sent.get_metric_with_label_values(&[&s.name])?;
            let received = self
                .bytes_received
                .get_metric_with_label_values(&[&s.name])?;
            let mut routes = Vec::with_capacity(s.routes.len());
            for r in &s.routes {
                routes.push(self.request_handles(&s.name, &r.prefix, &sent, &received)?);
            }
            let unrouted = self.request_handles(&s.name, NONE, &sent, &received)?;
            sites.push(SiteHandles { routes, unrouted });
        }
        let sent = self.bytes_sent.get_metric_with_label_values(&[NONE])?;
        let received = self.bytes_received.get_metric_with_label_values(&[NONE])?;
        let unrouted = self.request_handles(NONE, NONE, &sent, &received)?;
        let mut upstreams = Vec::with_capacity(config.upstreams.len());
        for u in &config.upstreams {
            let name = [u.name.as_str()];
            upstreams.push(UpstreamHandles {
                response: self.upstream_response.get_metric_with_label_values(&name)?,
                connect_failures: self
                    .upstream_connect_failures
                    .get_metric_with_label_values(&name)?,
                timeouts: self.upstream_timeouts.get_metric_with_label_values(&name)?,
                connections: [
                    self.upstream_connections
                        .get_metric_with_label_values(&[&u.name, "false"])?,
                    self.upstream_connections
                        .get_metric_with_label_values(&[&u.name, "true"])?,
                ],
            });
        }
        let stale = caches
            .zones
            .iter()
            .map(|z| {
                self.cache_stale
                    .get_metric_with_label_values(&[&z.settings.name])
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bypass = caches
            .zones
            .iter()
            .map(|z| {
                crate::cache::BYPASS_REASONS
                    .iter()
                    .map(|r| {
                        self.cache_bypass
                            .get_metric_with_label_values(&[z.settings.name.as_str(), r])
                    })
                    .collect::<Result<Vec<_>, _>>()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rejection = |class: &str, reason: &str| {
            self.ratelimit_rejections
                .get_metric_with_label_values(&[class, reason])
        };
        let mut rate = Vec::with_capacity(config.limits.classes.len());
        let mut concurrency = Vec::with_capacity(config.limits.classes.len());
        for c in &config.limits.classes {
            rate.push(rejection(&c.name, "rate")?);
            concurrency.push(rejection(&c.name, "concurrency")?);
        }
        let concurrency_unclassed = rejection(NONE, "concurrency")?;
        Ok(MetricHandles {
            sites,
            unrouted,
            upstreams,
            stale,
            bypass,
            rate,
            concurrency,
            concurrency_unclassed,
        })
    }

    fn request_handles(
        &self,
        site: &str,
        route: &str,
        sent: &IntCounter,
        received: &IntCounter,
    ) -> Result<RequestHandles, MetricsError> {
        let status = |class: &str| {
            self.requests
                .get_metric_with_label_values(&[site, route, class])
        };
        Ok(RequestHandles {
            requests: [
                status(STATUS_CLASSES[0])?,
                status(STATUS_CLASSES[1])?,
                status(STATUS_CLASSES[2])?,
                status(STATUS_CLASSES[3])?,
                status(STATUS_CLASSES[4])?,
                status(STATUS_CLASSES[5])?,
            ],
            duration: self
                .request_duration
                .get_metric_with_label_values(&[site, route])?,
            bytes_sent: sent.clone(),
            bytes_received: received.clone(),
        })
    }

    /// The whole exposition: the registered series, plus those read now from `state` (cache
    /// zones, compression, access log, backend health). Fails only if the encoder does.
    pub fn render(&self, state: &ProxyState) -> Result<String, MetricsError> {
        let mut families = self.registry.gather();
        // A family with no series (no cache zone configured) is an encoder error: leave it out.
        families.extend(
            scrape_families(state)?
                .into_iter()
                .filter(|f| !f.get_metric().is_empty()),
        );
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = String::with_capacity(16 * 1024);
        TextEncoder::new().encode_utf8(&families, &mut out)?;
        Ok(out)
    }
}

/// Builds one counter family from absolute values (read from counters that only grow).
fn counters<'a>(
    name: &str,
    help: &str,
    labels: &[&str],
    values: impl IntoIterator<Item = (Vec<&'a str>, u64)>,
) -> Result<Vec<MetricFamily>, MetricsError> {
    let vec = counter_vec(name, help, labels)?;
    for (label_values, v) in values {
        vec.get_metric_with_label_values(&label_values)?.inc_by(v);
    }
    Ok(vec.collect())
}

/// Builds one gauge family.
fn gauges<'a>(
    name: &str,
    help: &str,
    labels: &[&str],
    values: impl IntoIterator<Item = (Vec<&'a str>, i64)>,
) -> Result<Vec<MetricFamily>, MetricsError> {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels)?;
    for (label_values, v) in values {
        vec.get_metric_with_label_values(&label_values)?.set(v);
    }
    Ok(vec.collect())
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The Redis link's series (only with `[redis]`), read from its counters.
fn redis_families(link: &crate::redis_link::RedisLink) -> Result<Vec<MetricFamily>, MetricsError> {
    use crate::redis_link::{FailKind, Op};
    let s = &link.stats;
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let mut out = Vec::new();
    out.extend(gauges(
        "galion_edge_redis_up",
        "1 while the request path uses Redis (shared limits, purges published), 0 while it \
         decides locally and retries.",
        &[],
        [(vec![], i64::from(link.is_up()))],
    )?);
    out.extend(counters(
        "galion_edge_redis_transitions_total",
        "Times the Redis link came up or went down.",
        &["to"],
        [
            (vec!["up"], get(&s.came_up)),
            (vec!["down"], get(&s.went_down)),
        ],
    )?);
    let errors: Vec<(Vec<&str>, u64)> = Op::ALL
        .iter()
        .flat_map(|op| {
            FailKind::ALL
                .iter()
                .map(move |k| (vec![op.label(), k.label()], s.errors_of(*op, *k)))
        })
        .collect();
    out.extend(counters(
        "galion_edge_redis_errors_total",
        "Redis commands that failed, by what they were for and how.",
        &["op", "kind"],
        errors,
    )?);
    out.extend(counters(
        "galion_edge_ratelimit_decisions_total",
        "Rate-limit decisions with [limits] backend = \"redis\": by=\"redis\" one round trip, \
         by=\"refused_locally\" refused without one (Redis refused the client and its wait has \
         not passed), by=\"fallback\" the local limiter because Redis was down or slow.",
        &["by"],
        [
            (vec!["redis"], get(&s.limit_redis)),
            (vec!["refused_locally"], get(&s.limit_refused_locally)),
            (vec!["fallback"], get(&s.limit_fallback)),
        ],
    )?);
    out.extend(counters(
        "galion_edge_purge_fanout_total",
        "Cache purges through Redis: published by this instance, queued while Redis was \
         unreachable, applied from other instances, and whole-cache clears after purges may \
         have been missed (resync_clear).",
        &["event"],
        [
            (vec!["published"], get(&s.purges_published)),
            (vec!["queued"], get(&s.purges_queued)),
            (vec!["applied"], get(&s.purges_applied)),
            (vec!["resync_clear"], get(&s.purge_resync_clears)),
        ],
    )?);
    Ok(out)
}

/// The series read at scrape time from what the proxy already keeps.
fn scrape_families(state: &ProxyState) -> Result<Vec<MetricFamily>, MetricsError> {
    let mut out = Vec::new();
    if let Some(link) = &state.redis {
        out.extend(redis_families(link)?);
    }
    let backends: Vec<(String, String, bool)> = state
        .upstreams
        .iter()
        .flat_map(|g| {
            g.settings()
                .backends
                .iter()
                .map(|b| (g.name().to_string(), b.to_string(), g.is_healthy(*b)))
        })
        .collect();
    out.extend(gauges(
        "galion_edge_backend_up",
        "1 while the backend is in rotation (its health check passes, or it has none), else 0.",
        &["upstream", "backend"],
        backends
            .iter()
            .map(|(g, b, up)| (vec![g.as_str(), b.as_str()], i64::from(*up))),
    )?);

    struct Zone<'a> {
        name: &'a str,
        stats: &'a crate::cache::ZoneStats,
        usage: crate::cache::ZoneUsage,
        memory_evictions: u64,
    }
    let zones: Vec<Zone<'_>> = state
        .caches
        .zones
        .iter()
        .map(|z| Zone {
            name: z.settings.name.as_str(),
            stats: &z.storage.stats,
            usage: z.storage.usage(),
            memory_evictions: z.storage.memory_evictions(),
        })
        .collect();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let per_zone = |f: &dyn Fn(&Zone<'_>) -> u64| {
        zones
            .iter()
            .map(|z| (vec![z.name], f(z)))
            .collect::<Vec<_>>()
    };
    let per_tier = |memory: &dyn Fn(&Zone<'_>) -> u64, disk: &dyn Fn(&Zone<'_>) -> u64| {
        zones
            .iter()
            .flat_map(|z| {
                [
                    (vec![z.name, "memory"], memory(z)),
                    (vec![z.name, "disk"], disk(z)),
                ]
            })
            .collect::<Vec<_>>()
    };
    out.extend(counters(
        "galion_edge_cache_hits_total",
        "Cache lookups answered from the memory or the disk tier.",
        &["zone", "tier"],
        per_tier(&|z| get(&z.stats.memory_hits), &|z| get(&z.stats.disk_hits)),
    )?);
    out.extend(counters(
        "galion_edge_cache_misses_total",
        "Cache lookups that found nothing.",
        &["zone"],
        per_zone(&|z| get(&z.stats.misses)),
    )?);
    out.extend(counters(
        "galion_edge_cache_fills_total",
        "Entries written to the cache.",
        &["zone"],
        per_zone(&|z| get(&z.stats.fills)),
    )?);
    out.extend(counters(
        "galion_edge_cache_fill_errors_total",
        "Cache fills that failed (disk error, aborted response).",
        &["zone"],
        per_zone(&|z| get(&z.stats.fill_errors)),
    )?);
    out.extend(counters(
        "galion_edge_cache_corrupt_entries_total",
        "Disk entries found corrupt and dropped.",
        &["zone"],
        per_zone(&|z| get(&z.stats.corrupt)),
    )?);
    out.extend(counters(
        "galion_edge_cache_disk_errors_total",
        "Disk operations of a cache zone that failed (op: read, write, remove, lost); responses \
         are served uncached meanwhile.",
        &["zone", "op"],
        zones.iter().flat_map(|z| {
            crate::cache::DiskOp::ALL
                .iter()
                .map(|op| (vec![z.name, op.as_str()], z.stats.disk_errors(*op)))
        }),
    )?);
    out.extend(counters(
        "galion_edge_cache_evictions_total",
        "Entries evicted from a tier to make room.",
        &["zone", "tier"],
        per_tier(&|z| z.memory_evictions, &|z| get(&z.stats.disk_evictions)),
    )?);
    out.extend(gauges(
        "galion_edge_cache_bytes",
        "Bytes held by a tier (disk: rounded up to 4 KiB blocks).",
        &["zone", "tier"],
        per_tier(&|z| z.usage.memory_bytes, &|z| z.usage.disk_bytes)
            .into_iter()
            .map(|(l, v)| (l, gauge_value(v))),
    )?);
    out.extend(gauges(
        "galion_edge_cache_objects",
        "Entries held by a tier.",
        &["zone", "tier"],
        per_tier(&|z| z.usage.memory_objects, &|z| z.usage.disk_objects)
            .into_iter()
            .map(|(l, v)| (l, gauge_value(v))),
    )?);
    let c = &state.compression_stats;
    out.extend(counters(
        "galion_edge_compression_total",
        "Responses compressed (gzip or brotli) or decompressed for the client.",
        &["action"],
        [
            (vec!["compressed"], get(&c.compressed)),
            (vec!["decompressed"], get(&c.decompressed)),
        ],
    )?);
    out.extend(counters(
        "galion_edge_access_log_dropped_total",
        "Access-log lines dropped because the writer fell behind.",
        &[],
        [(vec![], state.access_log.dropped())],
    )?);
    Ok(out)
}

/// One in-flight request (or open connection); the gauge goes down when it is dropped.
#[derive(Debug)]
pub struct InFlight(IntGauge);

impl InFlight {
    /// Raises `gauge` by one until the guard is dropped.
    pub fn enter(gauge: &IntGauge) -> InFlight {
        gauge.inc();
        InFlight(gauge.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

struct HandshakeCounter(IntCounter);

#[async_trait]
impl TlsAccept for HandshakeCounter {
    async fn handshake_complete_callback(
        &self,
        _tls: &TlsRef,
    ) -> Option<Arc<dyn Any + Send + Sync>> {
        self.0.inc();
        None
    }
}

/// The series of one site/route pair (or of requests that matched none).
#[derive(Debug)]
struct RequestHandles {
    requests: [IntCounter; 6],
    duration: Histogram,
    bytes_sent: IntCounter,
    bytes_received: IntCounter,
}

#[derive(Debug)]
struct SiteHandles {
    routes: Vec<RequestHandles>,
    unrouted: RequestHandles,
}

#[derive(Debug)]
struct UpstreamHandles {
    response: Histogram,
    connect_failures: IntCounter,
    timeouts: IntCounter,
    /// Indexed by `reused`: `[false, true]`.
    connections: [IntCounter; 2],
}

/// The request path's handles for one config, built by [`Metrics::handles`]: sites and routes,
/// groups, zones and classes are indexed as in the config, so recording never looks up or
/// allocates. Indices that name nothing are ignored (or counted under `-`), never a panic.
#[derive(Debug)]
pub struct MetricHandles {
    sites: Vec<SiteHandles>,
    unrouted: RequestHandles,
    upstreams: Vec<UpstreamHandles>,
    stale: Vec<IntCounter>,
    /// Per zone, one counter per [`crate::cache::BYPASS_REASONS`] entry, in that order.
    bypass: Vec<Vec<IntCounter>>,
    rate: Vec<IntCounter>,
    concurrency: Vec<IntCounter>,
    concurrency_unclassed: IntCounter,
}

/// The index of a status's class in [`STATUS_CLASSES`]: `1xx`..`5xx`, or `-` for none (0).
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
    }
}

impl MetricHandles {
    /// Records one answered client request: its status class, duration and body bytes, under
    /// its site and route (`-` for none).
    pub fn request(
        &self,
        site: Option<usize>,
        route: Option<usize>,
        status: u16,
        duration: Duration,
        sent: usize,
        received: usize,
    ) {
        let h = match site.and_then(|s| self.sites.get(s)) {
            Some(s) => route.and_then(|r| s.routes.get(r)).unwrap_or(&s.unrouted),
            None => &self.unrouted,
        };
        h.requests[status_class(status)].inc();
        h.duration.observe(duration.as_secs_f64());
        if sent > 0 {
            h.bytes_sent.inc_by(sent as u64);
        }
        if received > 0 {
            h.bytes_received.inc_by(received as u64);
        }
    }

    /// Records a backend's time to response header.
    pub fn upstream_response(&self, upstream: usize, time: Duration) {
        if let Some(u) = self.upstreams.get(upstream) {
            u.response.observe(time.as_secs_f64());
        }
    }

    /// Records a failed connection attempt; `timed_out` if it was a connect timeout.
    pub fn connect_failed(&self, upstream: usize, timed_out: bool) {
        if let Some(u) = self.upstreams.get(upstream) {
            u.connect_failures.inc();
            if timed_out {
                u.timeouts.inc();
            }
        }
    }

    /// Records a request sent on an upstream connection, `reused` from the keepalive pool.
    pub fn upstream_connected(&self, upstream: usize, reused: bool) {
        if let Some(u) = self.upstreams.get(upstream) {
            u.connections[usize::from(reused)].inc();
        }
    }

    /// Records an upstream read or write timeout.
    pub fn upstream_timed_out(&self, upstream: usize) {
        if let Some(u) = self.upstreams.get(upstream) {
            u.timeouts.inc();
        }
    }

    /// Records an answer served stale from a zone.
    pub fn stale(&self, zone: usize) {
        if let Some(c) = self.stale.get(zone) {
            c.inc();
        }
    }

    /// Records a request on a zone that bypassed the cache for `reason` (one of
    /// [`crate::cache::BYPASS_REASONS`]; any other is not counted).
    pub fn bypassed(&self, zone: usize, reason: &str) {
        let i = crate::cache::BYPASS_REASONS
            .iter()
            .position(|r| *r == reason);
        if let Some(c) = i.and_then(|i| self.bypass.get(zone)?.get(i)) {
            c.inc();
        }
    }

    /// Records a 429 for a class's rate.
    pub fn rate_rejected(&self, class: usize) {
        if let Some(c) = self.rate.get(class) {
            c.inc();
        }
    }

    /// Records a 429 for the per-client concurrency cap, under the route's class if it has one.
    pub fn concurrency_rejected(&self, class: Option<usize>) {
        class
            .and_then(|c| self.concurrency.get(c))
            .unwrap_or(&self.concurrency_unclassed)
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_classes() {
        assert_eq!(STATUS_CLASSES[status_class(101)], "1xx");
        assert_eq!(STATUS_CLASSES[status_class(200)], "2xx");
        assert_eq!(STATUS_CLASSES[status_class(304)], "3xx");
        assert_eq!(STATUS_CLASSES[status_class(499)], "4xx");
        assert_eq!(STATUS_CLASSES[status_class(599)], "5xx");
        assert_eq!(STATUS_CLASSES[status_class(0)], "-");
        assert_eq!(STATUS_CLASSES[status_class(600)], "-");
    }

    #[test]
    fn two_instances_stay_apart() {
        let a = Metrics::new().expect("metrics");
        let b = Metrics::new().expect("metrics");
        a.tls_handshakes.inc();
        let text = |m: &Metrics| {
            let mut s = String::new();
            TextEncoder::new()
                .encode_utf8(&m.registry.gather(), &mut s)
                .expect("encode");
            s
        };
        assert!(text(&a).contains("galion_edge_tls_handshakes_total 1\n"));
        assert!(text(&b).contains("galion_edge_tls_handshakes_total 0\n"));
        let guard = b.in_flight();
        assert!(text(&b).contains("galion_edge_downstream_requests_in_flight 1\n"));
        drop(guard);
        assert!(text(&b).contains("galion_edge_downstream_requests_in_flight 0\n"));
    }
}
