//! The link to a Redis shared by several instances ([`RedisLink`]): a small pool of
//! multiplexed connections behind a circuit breaker, and the counters behind the
//! `galion_edge_redis_*` metrics.
//!
//! Two users: the shared rate limiter ([`crate::ratelimit::redis`], one `EVALSHA` per decided
//! request) and the purge fan-out ([`crate::purge_bus`], `PUBLISH` through a script and a
//! `SUBSCRIBE` connection of its own).
//!
//! # The pool
//!
//! `[redis] connections` (default [`DEFAULT_CONNECTIONS`]) multiplexed connections from redis-rs, used in turn. Each
//! pipelines every command sent on it, so a handful serve any number of concurrent requests
//! without a checkout/return cycle; a pool crate (deadpool, bb8) would add a lock and a
//! dependency to hand out connections that are already shareable.
//!
//! # The breaker
//!
//! The request path never waits for Redis to come back. It asks [`RedisLink::conn`] for a
//! connection, which answers `None` at once while the link is down; the caller then decides
//! locally. A connection error, or [`TRIP_AFTER`] timeouts in a row, take the link down: the
//! connections are dropped, one `warn` line is logged, and [`RedisService`] (a Pingora
//! background service) opens new ones every `retry_interval` until one answers `PING`, then
//! logs one `info` line and the request path uses Redis again. State changes are logged once,
//! never per request.

use crate::exposition;
use arc_swap::ArcSwapOption;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use prometheus::proto::MetricFamily;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::fmt;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The databases a `[redis] url` may name: Redis's default `databases 16` (production uses 4).
pub const DB_RANGE: RangeInclusive<i64> = 0..=15;
/// `[redis] key_prefix`: what every key the proxy writes starts with.
pub const DEFAULT_KEY_PREFIX: &str = "galion-edge:";
/// Longest `[redis] key_prefix`, in bytes.
pub const MAX_KEY_PREFIX_LEN: usize = 64;
/// `[redis] purge_channel` is `key_prefix` followed by this unless set.
pub const PURGE_CHANNEL_SUFFIX: &str = "purge";
/// Shortest `timeout`, `connect_timeout` and `retry_interval` of `[redis]`.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(1);
/// `[redis] timeout`: the time one command may take on the request path.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);
/// Longest `[redis] timeout`: a request never waits longer for Redis.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(5);
/// `[redis] connect_timeout`: the time to open a connection (in the background).
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest `[redis] connect_timeout`.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(60);
/// `[redis] retry_interval`: how often an unreachable Redis is tried again.
pub const DEFAULT_RETRY_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `[redis] retry_interval` (5 minutes).
pub const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(300);
/// `[redis] connections`: multiplexed connections in the pool (plenty for one proxy).
pub const DEFAULT_CONNECTIONS: usize = 2;
/// What `[redis] connections` may be set to.
pub const CONNECTIONS_RANGE: RangeInclusive<usize> = 1..=64;

/// `[redis]`: the Redis that several instances share (rate-limit counts, purge fan-out).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]` as written (production: DB 4, see
    /// ARCHITECTURE.md). Required.
    pub url: String,
    /// The database number from the URL (default 0).
    pub db: i64,
    /// Prefix of every key the proxy writes. Default [`DEFAULT_KEY_PREFIX`].
    pub key_prefix: String,
    /// Time allowed for one command on the request path; past it the request is decided by
    /// the local limiter. Default [`DEFAULT_TIMEOUT`].
    pub timeout: Duration,
    /// Time allowed to open a connection (background, never on the request path). Default
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub connect_timeout: Duration,
    /// How often an unreachable Redis is tried again. Default [`DEFAULT_RETRY_INTERVAL`].
    pub retry_interval: Duration,
    /// Multiplexed connections in the pool, used in turn. Default [`DEFAULT_CONNECTIONS`].
    pub connections: usize,
    /// Pub/sub channel of cache purges; `None` (written `""`) when the fan-out is off.
    /// Default `key_prefix` then [`PURGE_CHANNEL_SUFFIX`].
    pub purge_channel: Option<String>,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &redact_url(&self.url))
            .field("db", &self.db)
            .field("key_prefix", &self.key_prefix)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("retry_interval", &self.retry_interval)
            .field("connections", &self.connections)
            .field("purge_channel", &self.purge_channel)
            .finish()
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// Consecutive timeouts that take the link down (a connection error does at once). One slow
/// answer costs one request `timeout`; a Redis that stopped answering costs three.
pub(crate) const TRIP_AFTER: u32 = 3;

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The URL was refused by the client (validation normally catches this first).
    #[error("redis url {url}: {source}")]
    Url {
        /// The URL, password redacted.
        url: String,
        /// The client's reason.
        source: redis::RedisError,
    },
}

/// What a Redis command was for, a label of `galion_edge_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// A rate-limit decision (request path).
    Limit,
    /// Publishing a purge.
    Publish,
    /// The purge subscription and its resync read.
    Subscribe,
    /// Opening the pool's connections.
    Connect,
    /// ACME: the order lock, shared certificates and HTTP-01 answers.
    Acme,
}

impl Op {
    /// Every op, in label order.
    pub(crate) const ALL: [Op; 5] = [Op::Limit, Op::Publish, Op::Subscribe, Op::Connect, Op::Acme];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Op::Limit => "ratelimit",
            Op::Publish => "publish",
            Op::Subscribe => "subscribe",
            Op::Connect => "connect",
            Op::Acme => "acme",
        }
    }
}

/// How a Redis command failed, a label of `galion_edge_redis_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailKind {
    /// No answer within the configured time.
    Timeout,
    /// Refused, reset or closed connection.
    Connection,
    /// Anything else (an error reply, a script error, an unexpected answer).
    Other,
}

impl FailKind {
    /// Every kind, in label order.
    pub(crate) const ALL: [FailKind; 3] =
        [FailKind::Timeout, FailKind::Connection, FailKind::Other];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            FailKind::Timeout => "timeout",
            FailKind::Connection => "connection",
            FailKind::Other => "other",
        }
    }

    /// The kind of a client error.
    pub(crate) fn of(e: &redis::RedisError) -> FailKind {
        if e.is_timeout() {
            FailKind::Timeout
        } else if e.is_io_error()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
            || e.is_unrecoverable_error()
        {
            FailKind::Connection
        } else {
            FailKind::Other
        }
    }
}

/// Counters of the link and its users, read at scrape time (see [`crate::metrics`]). All
/// monotonic.
#[derive(Debug, Default)]
pub(crate) struct RedisStats {
    /// Rate-limit decisions made by a Redis round trip.
    pub limit_redis: AtomicU64,
    /// Requests refused without a round trip: Redis refused this client and the wait it gave
    /// has not passed.
    pub limit_refused_locally: AtomicU64,
    /// Rate-limit decisions made by the local limiter because Redis was down or slow.
    pub limit_fallback: AtomicU64,
    /// Errors by [`Op`] × [`FailKind`], indexed `[op][kind]` in `ALL` order.
    pub errors: [[AtomicU64; 3]; Op::ALL.len()],
    /// Times the link went down.
    pub went_down: AtomicU64,
    /// Times the link came (back) up.
    pub came_up: AtomicU64,
    /// Purges this instance published.
    pub purges_published: AtomicU64,
    /// Purges that could not be published at once (Redis down) and wait in the queue.
    pub purges_queued: AtomicU64,
    /// Purges of other instances applied here.
    pub purges_applied: AtomicU64,
    /// Cache clears (of at least one entry) because purges may have been missed (see
    /// [`crate::purge_bus`]).
    pub purge_resync_clears: AtomicU64,
}

impl RedisStats {
    fn error(&self, op: Op, kind: FailKind) -> &AtomicU64 {
        let o = Op::ALL.iter().position(|x| *x == op).unwrap_or(0);
        let k = FailKind::ALL.iter().position(|x| *x == kind).unwrap_or(0);
        &self.errors[o][k]
    }

    /// The count of errors of `op` and `kind`.
    pub(crate) fn errors_of(&self, op: Op, kind: FailKind) -> u64 {
        self.error(op, kind).load(Ordering::Relaxed)
    }
}

/// How a link's rate-limit decisions were made, counted since start
/// ([`RedisLink::limit_decisions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedisDecisions {
    /// Decided by a Redis round trip.
    pub redis: u64,
    /// Refused without a round trip: Redis refused the client and its wait has not passed.
    pub refused_locally: u64,
    /// Decided by the local limiter because Redis was down or slow.
    pub fallback: u64,
}

/// The pool of connections to one Redis, with its breaker. Share it in an `Arc`; every method
/// takes `&self`. Created down: [`RedisService`] connects it.
pub struct RedisLink {
    settings: RedisSettings,
    client: redis::Client,
    slots: Vec<ArcSwapOption<MultiplexedConnection>>,
    next: AtomicUsize,
    up: AtomicBool,
    timeouts_in_row: AtomicU32,
    /// Set when the link went down or a purge waits, so the maintenance loop runs now.
    wake: tokio::sync::Notify,
    /// Logged "cannot connect" since the last time it was up (so the line appears once).
    told_unreachable: AtomicBool,
    instance: String,
    /// The link's counters.
    pub(crate) stats: RedisStats,
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLink")
            .field("url", &redact_url(&self.settings.url))
            .field("up", &self.is_up())
            .finish_non_exhaustive()
    }
}

impl RedisLink {
    /// A link for `settings`, not connected yet (the request path decides locally until
    /// [`RedisService`] or [`RedisLink::connect`] brings it up). Fails only on a URL the
    /// client refuses, which config validation rejects first.
    pub fn new(settings: &RedisSettings) -> Result<RedisLink, LinkError> {
        let client =
            redis::Client::open(settings.url.as_str()).map_err(|source| LinkError::Url {
                url: redact_url(&settings.url),
                source,
            })?;
        let instance = format!("{:016x}", rand::random::<u64>());
        Ok(RedisLink {
            settings: settings.clone(),
            client,
            slots: (0..settings.connections.max(1))
                .map(|_| ArcSwapOption::empty())
                .collect(),
            next: AtomicUsize::new(0),
            up: AtomicBool::new(false),
            timeouts_in_row: AtomicU32::new(0),
            wake: tokio::sync::Notify::new(),
            told_unreachable: AtomicBool::new(false),
            instance,
            stats: RedisStats::default(),
        })
    }

    /// The settings the link was made with.
    pub fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// This process's random id, put in the purges it publishes so it can skip its own.
    pub fn instance_id(&self) -> &str {
        &self.instance
    }

    /// The redis-rs client (for connections of another kind, such as pub/sub).
    pub(crate) fn client(&self) -> &redis::Client {
        &self.client
    }

    /// How the rate-limit decisions over this link were made since start (the counts of
    /// `galion_edge_ratelimit_decisions_total`).
    pub fn limit_decisions(&self) -> RedisDecisions {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RedisDecisions {
            redis: get(&self.stats.limit_redis),
            refused_locally: get(&self.stats.limit_refused_locally),
            fallback: get(&self.stats.limit_fallback),
        }
    }

    /// Whether the request path uses Redis now.
    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// The per-command timeout of the request path (`[redis] timeout`).
    pub(crate) fn timeout(&self) -> Duration {
        self.settings.timeout
    }

    /// The next connection of the pool, or `None` at once while the link is down. Cloning a
    /// multiplexed connection is a few reference-count increments.
    pub(crate) fn conn(&self) -> Option<MultiplexedConnection> {
        if !self.is_up() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[n].load().as_deref().cloned()
    }

    /// Records a command that answered.
    pub(crate) fn succeeded(&self) {
        if self.timeouts_in_row.load(Ordering::Relaxed) != 0 {
            self.timeouts_in_row.store(0, Ordering::Relaxed);
        }
    }

    /// Records a failed command of `op`: counts it, and takes the link down on a connection
    /// error or after [`TRIP_AFTER`] timeouts in a row.
    pub(crate) fn failed(&self, op: Op, kind: FailKind, detail: &dyn std::fmt::Display) {
        self.stats.error(op, kind).fetch_add(1, Ordering::Relaxed);
        let trip = match kind {
            FailKind::Connection => true,
            FailKind::Timeout => {
                self.timeouts_in_row.fetch_add(1, Ordering::Relaxed) + 1 >= TRIP_AFTER
            }
            // An error reply proves the server answers: nothing to fall back from.
            FailKind::Other => false,
        };
        if trip {
            self.take_down(op, kind, detail);
        }
    }

    /// Takes the link down (once: later calls while down do nothing) and wakes the
    /// maintenance loop.
    fn take_down(&self, op: Op, kind: FailKind, detail: &dyn std::fmt::Display) {
        if self.up.swap(false, Ordering::AcqRel) {
            for s in &self.slots {
                s.store(None);
            }
            self.stats.went_down.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "redis {}: {} {} ({detail}); limits are counted locally and purges queued until it answers again",
                redact_url(&self.settings.url),
                op.label(),
                kind.label(),
            );
            self.wake.notify_one();
        }
    }

    /// Opens every connection of the pool and checks each with `PING`; on success the link is
    /// up. Logs one line when it comes up, and one when it first cannot (not on every retry).
    /// Does nothing if the link is already up.
    pub async fn connect(&self) -> bool {
        if self.is_up() {
            return true;
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.settings.connect_timeout)
            .set_response_timeout(self.settings.connect_timeout);
        let mut conns = Vec::with_capacity(self.slots.len());
        for _ in 0..self.slots.len() {
            let opened = async {
                let mut c = self
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                redis::cmd("PING").query_async::<()>(&mut c).await?;
                Ok::<_, redis::RedisError>(c)
            };
            match tokio::time::timeout(self.settings.connect_timeout * 2, opened).await {
                Ok(Ok(mut c)) => {
                    c.set_response_timeout(self.settings.timeout);
                    conns.push(c);
                }
                Ok(Err(e)) => return self.connect_failed(FailKind::of(&e), &e),
                Err(_) => return self.connect_failed(FailKind::Timeout, &"no answer"),
            }
        }
        for (slot, c) in self.slots.iter().zip(conns) {
            slot.store(Some(Arc::new(c)));
        }
        self.timeouts_in_row.store(0, Ordering::Relaxed);
        self.told_unreachable.store(false, Ordering::Relaxed);
        self.up.store(true, Ordering::Release);
        self.stats.came_up.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "redis {}: connected ({} connections, db {}); limits and purges are shared",
            redact_url(&self.settings.url),
            self.slots.len(),
            self.settings.db
        );
        true
    }

    fn connect_failed(&self, kind: FailKind, detail: &dyn std::fmt::Display) -> bool {
        self.stats
            .error(Op::Connect, kind)
            .fetch_add(1, Ordering::Relaxed);
        if !self.told_unreachable.swap(true, Ordering::Relaxed) {
            log::warn!(
                "redis {}: cannot connect ({detail}); trying again every {:?}, limits are local meanwhile",
                redact_url(&self.settings.url),
                self.settings.retry_interval
            );
        }
        false
    }

    /// Waits until the link is taken down or something asks for the maintenance loop, or
    /// `limit` passes.
    async fn wait(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.wake.notified()).await;
    }

    /// Wakes the maintenance loop (a purge waits to be published).
    pub(crate) fn poke(&self) {
        self.wake.notify_one();
    }

    /// The link's series, read now from its counters: up, transitions, errors, rate-limit
    /// decisions, purge fan-out. Fails only on a bug in a family's definition.
    pub fn metric_families(&self) -> exposition::Result<Vec<MetricFamily>> {
        let s = &self.stats;
        let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let mut out = Vec::new();
        out.extend(exposition::gauges(
            "galion_edge_redis_up",
            "1 while the request path uses Redis (shared limits, purges published), 0 while it \
             decides locally and retries.",
            &[],
            [(vec![], i64::from(self.is_up()))],
        )?);
        out.extend(exposition::counters(
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
        out.extend(exposition::counters(
            "galion_edge_redis_errors_total",
            "Redis commands that failed, by what they were for and how.",
            &["op", "kind"],
            errors,
        )?);
        out.extend(exposition::counters(
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
        out.extend(exposition::counters(
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
}

/// Work that runs on a [`RedisLink`] beside its maintenance: the purge bus
/// (the purge bus is one). [`RedisService`] drives it.
#[async_trait]
pub trait LinkUser: Send + Sync {
    /// Called each time the link has (re)connected: publish what waited meanwhile.
    async fn connected(&self);
    /// Runs for as long as the service does (a subscription, resubscribing after losses).
    async fn run(&self);
}

/// The Pingora background service that keeps a [`RedisLink`] up (reconnecting every
/// `retry_interval` while it is down) and drives its [`LinkUser`] (the purge bus: queued
/// purges published after each reconnection, and its subscription).
pub struct RedisService {
    link: Arc<RedisLink>,
    user: Option<Arc<dyn LinkUser>>,
}

impl RedisService {
    /// The service keeping `link` up and driving `user`. Both are the same across reloads
    /// (`[redis]` changes need a restart).
    pub fn new(link: Arc<RedisLink>, user: Option<Arc<dyn LinkUser>>) -> Self {
        RedisService { link, user }
    }
}

#[async_trait]
impl BackgroundService for RedisService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let link = &self.link;
        let retry = link.settings().retry_interval;
        let maintain = async {
            loop {
                if link.connect().await {
                    if let Some(user) = &self.user {
                        user.connected().await;
                    }
                }
                link.wait(retry).await;
            }
        };
        let run = async {
            match &self.user {
                Some(user) => user.run().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = maintain => {}
            _ = run => {}
            _ = shutdown.changed() => {}
        }
    }
}
