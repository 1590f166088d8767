//! Upstream groups: round-robin over healthy backends, active health checks, timeouts.
//!
//! Each group is a Pingora [`LoadBalancer`] with a TCP or HTTP health check. [`HealthChecker`]
//! is one background service that runs the current state's groups' checks, each at that
//! group's interval, following reloads.
//! [`UpstreamGroup::peer`] builds the [`HttpPeer`] with our timeouts: Pingora sets none.

use crate::exposition;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_load_balancing::health_check::{HttpHealthCheck, TcpHealthCheck};
use pingora_load_balancing::selection::RoundRobin;
use pingora_load_balancing::{Backend, LoadBalancer};
use prometheus::proto::MetricFamily;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::sync::Arc;
use std::time::Duration;

/// `[upstreams.NAME] connect_timeout`: time to open a connection to a backend.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// `[upstreams.NAME] read_timeout` (nginx `proxy_read_timeout`): the longest wait for the next
/// bytes of an answer; a route may set its own.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// `[upstreams.NAME] write_timeout`: the longest a write to a backend may make no progress.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(60);
/// `[upstreams.NAME] idle_timeout`: how long an idle pooled connection is kept.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// `health_check.path` with `kind = "http"`.
pub const DEFAULT_HEALTH_CHECK_PATH: &str = "/";
/// `health_check.interval`: time between two checks of a backend.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// `health_check.timeout`: a check not answered in this time failed.
pub const DEFAULT_HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(1);
/// `health_check.fall` and `health_check.rise`: one failed check takes a backend out of
/// rotation, one passed check brings it back.
pub const DEFAULT_HEALTH_CHECK_COUNT: usize = 1;
/// What `health_check.fall` and `health_check.rise` may be set to.
pub const HEALTH_CHECK_COUNT_RANGE: RangeInclusive<usize> = 1..=100;

/// How backends are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheckKind {
    /// A TCP connect succeeds.
    Tcp,
    /// `GET path` answers 2xx or 3xx.
    Http {
        /// Request path.
        path: String,
    },
    /// No active checks; backends are always in rotation.
    None,
}

/// Active health checks for one group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheckSettings {
    /// Default tcp.
    pub kind: HealthCheckKind,
    /// Default [`DEFAULT_HEALTH_CHECK_INTERVAL`].
    pub interval: Duration,
    /// Default [`DEFAULT_HEALTH_CHECK_TIMEOUT`].
    pub timeout: Duration,
    /// Default [`DEFAULT_HEALTH_CHECK_COUNT`] (a dead backend leaves rotation at the first
    /// failed check).
    pub fall: usize,
    /// Default [`DEFAULT_HEALTH_CHECK_COUNT`].
    pub rise: usize,
}

/// Timeouts toward one group. Pingora sets none by default; these are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Default [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect: Duration,
    /// Default [`DEFAULT_READ_TIMEOUT`].
    pub read: Duration,
    /// Default [`DEFAULT_WRITE_TIMEOUT`].
    pub write: Duration,
    /// Idle keepalive connections are closed after this. Default [`DEFAULT_IDLE_TIMEOUT`].
    pub idle: Duration,
}

/// One upstream group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSettings {
    /// The group's name.
    pub name: String,
    /// Backends, in file order.
    pub backends: Vec<SocketAddr>,
    /// Timeouts.
    pub timeouts: UpstreamTimeouts,
    /// Health checks.
    pub health_check: HealthCheckSettings,
}

/// One upstream group and its load balancer.
pub struct UpstreamGroup {
    settings: UpstreamSettings,
    lb: Arc<LoadBalancer<RoundRobin>>,
}

/// Why an upstream group could not be built from its (validated) settings.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The backend list could not be turned into a load balancer's backends.
    #[error("backends: {0}")]
    Backends(#[source] std::io::Error),
    /// The HTTP health check's request could not be built from its path.
    #[error("health check request: {0}")]
    HealthCheckRequest(#[source] Box<pingora_error::Error>),
}

impl std::fmt::Debug for UpstreamGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamGroup")
            .field("name", &self.settings.name)
            .field("backends", &self.settings.backends)
            .finish()
    }
}

impl UpstreamGroup {
    /// Builds the group and its health check from validated settings.
    pub fn new(settings: &UpstreamSettings) -> Result<UpstreamGroup, UpstreamError> {
        let mut lb = LoadBalancer::<RoundRobin>::try_from_iter(settings.backends.iter().copied())
            .map_err(UpstreamError::Backends)?;
        let hc = &settings.health_check;
        match &hc.kind {
            HealthCheckKind::None => {}
            HealthCheckKind::Tcp => {
                let mut check = TcpHealthCheck::new();
                check.consecutive_failure = hc.fall;
                check.consecutive_success = hc.rise;
                check.peer_template.options.connection_timeout = Some(hc.timeout);
                check.peer_template.options.total_connection_timeout = Some(hc.timeout);
                lb.set_health_check(check);
                lb.health_check_frequency = Some(hc.interval);
            }
            HealthCheckKind::Http { path } => {
                let mut check = HttpHealthCheck::new("localhost", false);
                check.consecutive_failure = hc.fall;
                check.consecutive_success = hc.rise;
                check.peer_template.options.connection_timeout = Some(hc.timeout);
                check.peer_template.options.total_connection_timeout = Some(hc.timeout);
                check.peer_template.options.read_timeout = Some(hc.timeout);
                let mut req = RequestHeader::build("GET", path.as_bytes(), None)
                    .map_err(UpstreamError::HealthCheckRequest)?;
                let _ = req.insert_header("Host", "localhost");
                let _ = req.insert_header("User-Agent", "galion-edge-health-check");
                check.req = req;
                check.validator = Some(Box::new(|resp: &ResponseHeader| {
                    if resp.status.as_u16() < 400 {
                        Ok(())
                    } else {
                        pingora_error::Error::e_explain(
                            pingora_error::ErrorType::InternalError,
                            format!("health check answered {}", resp.status),
                        )
                    }
                }));
                lb.set_health_check(Box::new(check));
                lb.health_check_frequency = Some(hc.interval);
            }
        }
        lb.parallel_health_check = true;
        Ok(UpstreamGroup {
            settings: settings.clone(),
            lb: Arc::new(lb),
        })
    }

    /// The group's settings.
    pub fn settings(&self) -> &UpstreamSettings {
        &self.settings
    }

    /// The group's name.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The next healthy backend in round-robin order that is not in `exclude`. When every
    /// backend is down it falls back to any backend not yet tried (as nginx does), so a health
    /// check that lags never turns into a hard outage by itself.
    pub fn select(&self, exclude: &[SocketAddr]) -> Option<SocketAddr> {
        let not_tried = |b: &Backend| b.addr.as_inet().is_some_and(|a| !exclude.contains(a));
        let n = self.settings.backends.len().max(1) * 2;
        self.lb
            .select_with(b"", n, |b, healthy| healthy && not_tried(b))
            .or_else(|| self.lb.select_with(b"", n, |b, _| not_tried(b)))
            .and_then(|b| b.addr.as_inet().copied())
    }

    /// Whether a backend is currently in rotation.
    pub fn is_healthy(&self, addr: SocketAddr) -> bool {
        self.lb
            .backends()
            .get_backend()
            .iter()
            .find(|b| b.addr.as_inet() == Some(&addr))
            .is_some_and(|b| self.lb.backends().ready(b))
    }

    /// The peer for one attempt, with connect, read, write and idle timeouts set.
    pub fn peer(&self, addr: SocketAddr, read_timeout: Option<Duration>) -> HttpPeer {
        let t = &self.settings.timeouts;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(t.connect);
        peer.options.total_connection_timeout = Some(t.connect);
        peer.options.read_timeout = Some(read_timeout.unwrap_or(t.read));
        peer.options.write_timeout = Some(t.write);
        peer.options.idle_timeout = Some(t.idle);
        peer
    }

    /// Runs one round of health checks now.
    pub async fn check_now(&self) {
        self.lb.backends().run_health_check(true).await;
    }
}

/// The `galion_edge_backend_up` series of `groups`, read now from their health state. Fails
/// only on a bug in the family's definition.
pub(crate) fn backend_families(
    groups: &[Arc<UpstreamGroup>],
) -> exposition::Result<Vec<MetricFamily>> {
    let mut out = Vec::new();
    let backends: Vec<(String, String, bool)> = groups
        .iter()
        .flat_map(|g| {
            g.settings()
                .backends
                .iter()
                .map(|b| (g.name().to_string(), b.to_string(), g.is_healthy(*b)))
        })
        .collect();
    out.extend(exposition::gauges(
        "galion_edge_backend_up",
        "1 while the backend is in rotation (its health check passes, or it has none), else 0.",
        &["upstream", "backend"],
        backends
            .iter()
            .map(|(g, b, up)| (vec![g.as_str(), b.as_str()], i64::from(*up))),
    )?);
    Ok(out)
}

/// Runs the health checks of the current state's groups, each at its group's interval, until
/// shutdown. It follows state swaps: a group added by a reload is checked from the next tick
/// (every 100 ms it looks at which groups are due), a removed one is no longer checked, and a
/// rebuilt one (changed settings) is checked at once.
pub struct HealthChecker {
    groups: GroupSource,
}

/// Where a [`HealthChecker`] reads the groups to check, at every tick: the groups of the
/// state running now (the server passes the current state's groups).
pub type GroupSource = Box<dyn Fn() -> Vec<Arc<UpstreamGroup>> + Send + Sync>;

impl HealthChecker {
    /// A checker for whatever groups `groups` returns at each tick. Groups with
    /// `kind = "none"` are skipped.
    pub fn new(groups: GroupSource) -> Self {
        HealthChecker { groups }
    }
}

/// How often the checker looks for due checks.
const HEALTH_TICK: Duration = Duration::from_millis(100);

struct Due {
    group: Arc<UpstreamGroup>,
    next: tokio::time::Instant,
    running: Option<tokio::task::JoinHandle<()>>,
}

#[async_trait]
impl BackgroundService for HealthChecker {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut due: HashMap<String, Due> = HashMap::new();
        let mut tick = tokio::time::interval(HEALTH_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let now = tokio::time::Instant::now();
            let groups = (self.groups)();
            let checked = || {
                groups
                    .iter()
                    .filter(|g| g.settings.health_check.kind != HealthCheckKind::None)
            };
            due.retain(|name, d| {
                let keep = checked().any(|g| Arc::ptr_eq(g, &d.group) && g.name() == name);
                if !keep {
                    if let Some(t) = d.running.take() {
                        t.abort();
                    }
                }
                keep
            });
            for g in checked() {
                let d = due.entry(g.name().to_string()).or_insert_with(|| Due {
                    group: g.clone(),
                    next: now,
                    running: None,
                });
                let busy = d.running.as_ref().is_some_and(|t| !t.is_finished());
                if busy || now < d.next {
                    continue;
                }
                d.next = now + g.settings.health_check.interval;
                let g = g.clone();
                d.running = Some(tokio::spawn(async move { g.check_now().await }));
            }
        }
        for d in due.into_values() {
            if let Some(t) = d.running {
                t.abort();
            }
        }
    }
}
