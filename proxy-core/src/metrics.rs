//! Prometheus metrics, served as text (exposition format 0.0.4) on the admin listener's
//! `GET /metrics`.
//!
//! [`Metrics`] owns a private [`prometheus::Registry`] (never the process-wide default one, so
//! several proxies in one process keep apart) and the series the request path counts. It is
//! created once per proxy and outlives config swaps: the compiled state
//! ([`ProxyState`](crate::ProxyState)) takes it, and gives each site and route, upstream group
//! and limit class its handles ([`RequestMetrics`], [`UpstreamMetrics`], [`ClassMetrics`]) when
//! it is compiled, so a request never looks a label set up.
//!
//! Two kinds of series:
//!
//! - **Counted on the request path** (registered here): requests, durations, upstream response
//!   times and failures, rate-limit rejections, bytes in and out, requests in flight, TLS
//!   handshakes and ClientHellos, open client connections (counted by the
//!   [`Front`](crate::front::Front)), upstream connections new or reused. The service's
//!   `logging` hook does most of it, once per request; `fail_to_connect` / `fail_to_proxy`
//!   count upstream failures and the 429 path the rejections.
//! - **Read at scrape time** from counters each source keeps anyway and exports as its own
//!   families: the cache zones (`Caches::metric_families`: tiers, stale answers, bypasses),
//!   compression, the access log's dropped lines, backend health, the Redis link.
//!   [`Metrics::render`] encodes them with the registered series; they cost the request path
//!   nothing, and their sources only grow, so the counters among them are monotonic.
//!
//! Label values come from the config only (site name, route prefix, group, backend address,
//! zone, class) or from fixed sets (status class, tier, reason, action): a path, a host sent by
//! a client or a client address is never a label. `docs/metrics.md` lists every series.

use async_trait::async_trait;
use pingora_core::listeners::{TlsAccept, TlsAcceptCallbacks};
use pingora_core::protocols::tls::TlsRef;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

/// The `Content-Type` of [`Metrics::render`]'s output.
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The label value of "none": a request that matched no site or route, a route without a
/// rate-limit class, a request answered with no status.
pub(crate) const NONE: &str = "-";

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
pub(crate) struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    upstream_response: HistogramVec,
    upstream_connect_failures: IntCounterVec,
    upstream_timeouts: IntCounterVec,
    ratelimit_rejections: IntCounterVec,
    bytes_sent: IntCounterVec,
    bytes_received: IntCounterVec,
    in_flight: IntGauge,
    tls_handshakes: IntCounter,
    tls_client_hellos: IntCounter,
    downstream_connections: IntGauge,
    upstream_connections: IntCounterVec,
    front_answers: IntCounterVec,
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
    pub(crate) fn new() -> Result<Metrics, MetricsError> {
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
            front_answers: counter_vec(
                "galion_edge_malformed_requests_total",
                "HTTP/1 request heads the front answered itself before any request existed: \
                 400 (smuggling-shaped or malformed, reason names the shape), 405 (CONNECT), \
                 408 (head too slow), 431 (head too large or too many lines).",
                &["status", "reason"],
            )?,
        };
        let collectors: [Box<dyn Collector>; 14] = [
            Box::new(m.requests.clone()),
            Box::new(m.request_duration.clone()),
            Box::new(m.upstream_response.clone()),
            Box::new(m.upstream_connect_failures.clone()),
            Box::new(m.upstream_timeouts.clone()),
            Box::new(m.ratelimit_rejections.clone()),
            Box::new(m.bytes_sent.clone()),
            Box::new(m.bytes_received.clone()),
            Box::new(m.in_flight.clone()),
            Box::new(m.tls_handshakes.clone()),
            Box::new(m.tls_client_hellos.clone()),
            Box::new(m.downstream_connections.clone()),
            Box::new(m.upstream_connections.clone()),
            Box::new(m.front_answers.clone()),
        ];
        for c in collectors {
            m.registry.register(c)?;
        }
        Ok(m)
    }

    /// Marks one client request in flight until the guard is dropped.
    pub(crate) fn in_flight(&self) -> InFlight {
        InFlight::enter(&self.in_flight)
    }

    /// Counts one answer the HTTP/1 front wrote itself (`galion_edge_malformed_requests_total`).
    pub(crate) fn front_answer(&self, status: u16, reason: &str) {
        let mut code = itoa::Buffer::new();
        self.front_answers
            .with_label_values(&[code.format(status), reason])
            .inc();
    }

    /// The gauge of open client connections, for [`Front::with_connection_gauge`].
    ///
    /// [`Front::with_connection_gauge`]: crate::front::Front::with_connection_gauge
    pub(crate) fn downstream_connections(&self) -> IntGauge {
        self.downstream_connections.clone()
    }

    /// The ClientHello counter, for [`SniResolver::with_client_hello_counter`].
    ///
    /// [`SniResolver::with_client_hello_counter`]: crate::tls::SniResolver::with_client_hello_counter
    pub(crate) fn tls_client_hellos(&self) -> IntCounter {
        self.tls_client_hellos.clone()
    }

    /// Pingora TLS callbacks that count completed handshakes, for
    /// `TlsSettings::with_callbacks`. (Pingora 0.9.1 calls nothing on a failed handshake: it
    /// logs it and drops the connection, so failures are not counted.)
    pub(crate) fn tls_callbacks(&self) -> TlsAcceptCallbacks {
        Box::new(HandshakeCounter(self.tls_handshakes.clone()))
    }

    /// The series of requests on one site and route (`route` is the prefix; [`NONE`] for a
    /// request that matched no route of the site, `site` [`NONE`] for one that matched no
    /// site), created now at zero so a request only increments them.
    pub(crate) fn request_metrics(
        &self,
        site: &str,
        route: &str,
    ) -> Result<RequestMetrics, MetricsError> {
        let status = |class: &str| {
            self.requests
                .get_metric_with_label_values(&[site, route, class])
        };
        Ok(RequestMetrics {
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
            bytes_sent: self.bytes_sent.get_metric_with_label_values(&[site])?,
            bytes_received: self.bytes_received.get_metric_with_label_values(&[site])?,
        })
    }

    /// The series of one upstream group, created now at zero.
    pub(crate) fn upstream_metrics(&self, group: &str) -> Result<UpstreamMetrics, MetricsError> {
        let name = [group];
        Ok(UpstreamMetrics {
            response: self.upstream_response.get_metric_with_label_values(&name)?,
            connect_failures: self
                .upstream_connect_failures
                .get_metric_with_label_values(&name)?,
            timeouts: self.upstream_timeouts.get_metric_with_label_values(&name)?,
            connections: [
                self.upstream_connections
                    .get_metric_with_label_values(&[group, "false"])?,
                self.upstream_connections
                    .get_metric_with_label_values(&[group, "true"])?,
            ],
        })
    }

    /// The rejection series of one limit class ([`NONE`] for requests on routes without one),
    /// created now at zero.
    pub(crate) fn class_metrics(&self, class: &str) -> Result<ClassMetrics, MetricsError> {
        let rejection = |reason: &str| {
            self.ratelimit_rejections
                .get_metric_with_label_values(&[class, reason])
        };
        Ok(ClassMetrics {
            rate: rejection("rate")?,
            concurrency: rejection("concurrency")?,
        })
    }

    /// The whole exposition: the registered series, plus `scraped`, the families the sources
    /// built just now from their own counters (cache zones, compression, access log, backend
    /// health, Redis). Fails only if the encoder does.
    pub(crate) fn render(&self, scraped: Vec<MetricFamily>) -> Result<String, MetricsError> {
        let mut families = self.registry.gather();
        // A family with no series (no cache zone configured) is an encoder error: leave it out.
        families.extend(scraped.into_iter().filter(|f| !f.get_metric().is_empty()));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = String::with_capacity(16 * 1024);
        TextEncoder::new().encode_utf8(&families, &mut out)?;
        Ok(out)
    }
}

/// One in-flight request (or open connection); the gauge goes down when it is dropped.
#[derive(Debug)]
pub(crate) struct InFlight(IntGauge);

impl InFlight {
    /// Raises `gauge` by one until the guard is dropped.
    pub(crate) fn enter(gauge: &IntGauge) -> InFlight {
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

/// The series of one site/route pair (or of requests that matched none), from
/// [`Metrics::request_metrics`].
#[derive(Debug)]
pub(crate) struct RequestMetrics {
    requests: [IntCounter; 6],
    duration: Histogram,
    bytes_sent: IntCounter,
    bytes_received: IntCounter,
}

impl RequestMetrics {
    /// Records one answered client request: its status class, duration and body bytes.
    pub(crate) fn record(&self, status: u16, duration: Duration, sent: usize, received: usize) {
        self.requests[status_class(status)].inc();
        self.duration.observe(duration.as_secs_f64());
        if sent > 0 {
            self.bytes_sent.inc_by(sent as u64);
        }
        if received > 0 {
            self.bytes_received.inc_by(received as u64);
        }
    }
}

/// The series of one upstream group, from [`Metrics::upstream_metrics`].
#[derive(Debug)]
pub(crate) struct UpstreamMetrics {
    response: Histogram,
    connect_failures: IntCounter,
    timeouts: IntCounter,
    /// Indexed by `reused`: `[false, true]`.
    connections: [IntCounter; 2],
}

impl UpstreamMetrics {
    /// Records a backend's time to response header.
    pub(crate) fn response(&self, time: Duration) {
        self.response.observe(time.as_secs_f64());
    }

    /// Records a failed connection attempt; `timed_out` if it was a connect timeout.
    pub(crate) fn connect_failed(&self, timed_out: bool) {
        self.connect_failures.inc();
        if timed_out {
            self.timeouts.inc();
        }
    }

    /// Records a request sent on an upstream connection, `reused` from the keepalive pool.
    pub(crate) fn connected(&self, reused: bool) {
        self.connections[usize::from(reused)].inc();
    }

    /// Records an upstream read or write timeout.
    pub(crate) fn timed_out(&self) {
        self.timeouts.inc();
    }
}

/// The 429 series of one limit class, from [`Metrics::class_metrics`].
#[derive(Debug)]
pub(crate) struct ClassMetrics {
    rate: IntCounter,
    concurrency: IntCounter,
}

impl ClassMetrics {
    /// Records a 429 for the class's rate.
    pub(crate) fn rate_rejected(&self) {
        self.rate.inc();
    }

    /// Records a 429 for the per-client concurrency cap on a route of this class.
    pub(crate) fn concurrency_rejected(&self) {
        self.concurrency.inc();
    }
}

/// The index of a status's class in [`STATUS_CLASSES`]: `1xx`..`5xx`, or `-` for none (0).
fn status_class(status: u16) -> usize {
    match status {
        100..=599 => usize::from(status / 100 - 1),
        _ => 5,
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
