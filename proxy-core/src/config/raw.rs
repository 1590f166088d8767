//! The config file exactly as written: serde structs with `deny_unknown_fields`.
//!
//! Nothing here is trusted. [`super::Config::from_raw`] turns these into runtime types and
//! collects every semantic error with its field path.

use super::units::{RawDuration, RawSize};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The whole file.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Pingora's own server settings.
    #[serde(default)]
    pub server: RawServer,
    /// Where the proxy listens.
    #[serde(default)]
    pub listeners: RawListeners,
    /// Limits on what clients may send.
    #[serde(default)]
    pub downstream: RawDownstream,
    /// Certificate reloading.
    #[serde(default)]
    pub tls: RawTls,
    /// The access log.
    #[serde(default)]
    pub access_log: RawAccessLog,
    /// ACME http-01 challenge serving on the plain-HTTP listener.
    #[serde(default)]
    pub acme: RawAcme,
    /// Security headers every site gets unless it overrides them.
    #[serde(default)]
    pub headers: RawHeaders,
    /// Who the client is behind Cloudflare.
    #[serde(default)]
    pub client_ip: RawClientIp,
    /// Per-client rate limits and connection caps.
    #[serde(default)]
    pub limits: RawLimits,
    /// Redis shared by several instances: rate-limit counts and purge fan-out.
    pub redis: Option<RawRedis>,
    /// gzip and brotli.
    #[serde(default)]
    pub compression: RawCompression,
    /// The admin listener: health, cache purges and stats.
    #[serde(default)]
    pub admin: RawAdmin,
    /// The HTTP cache and its zones.
    #[serde(default)]
    pub cache: RawCache,
    /// Upstream groups by name.
    #[serde(default)]
    pub upstreams: BTreeMap<String, RawUpstream>,
    /// The sites, matched by `Host`.
    #[serde(default)]
    pub sites: Vec<RawSite>,
}

/// `[server]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// Worker threads per service; 0 or absent means one per core.
    pub threads: Option<usize>,
    /// Whether a service's threads steal each other's tasks (one shared runtime) or each run
    /// their own connections (one runtime per thread).
    pub work_stealing: Option<bool>,
    /// How long a graceful shutdown keeps serving before closing listeners' connections.
    pub grace_period: Option<RawDuration>,
    /// How long runtimes get to finish after the grace period.
    pub graceful_shutdown_timeout: Option<RawDuration>,
    /// Pid file path.
    pub pid_file: Option<String>,
    /// Unix socket used to hand listening sockets to a new binary on upgrade.
    pub upgrade_sock: Option<String>,
    /// Idle upstream connections kept per service thread.
    pub upstream_keepalive_pool_size: Option<usize>,
}

/// `[listeners]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawListeners {
    /// TLS listeners (h2 and http/1.1).
    #[serde(default)]
    pub https: Vec<String>,
    /// Plain-HTTP listeners: redirect to https, and ACME challenges.
    #[serde(default)]
    pub http: Vec<String>,
    /// Plain-HTTP listeners that proxy like the TLS ones (for local use and tests).
    #[serde(default)]
    pub http_proxy: Vec<String>,
}

/// `[downstream]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDownstream {
    /// Time allowed to send a whole request header once its first byte arrived.
    pub client_header_timeout: Option<RawDuration>,
    /// Idle time allowed between requests on a keepalive connection.
    pub keepalive_timeout: Option<RawDuration>,
    /// Most requests served on one connection.
    pub keepalive_requests: Option<u32>,
    /// Largest request header block (request line and all headers).
    pub max_header_bytes: Option<RawSize>,
    /// Most header lines in one request.
    pub max_header_count: Option<usize>,
    /// Default request body limit for routes that set none.
    pub max_body_size: Option<RawSize>,
    /// Most concurrent HTTP/2 streams per connection.
    pub h2_max_concurrent_streams: Option<u32>,
    /// Most open connections per TCP peer (0: no cap); trusted proxies are exempt.
    pub max_connections_per_peer: Option<u32>,
    /// Longest a write to a client may wait (a client that stopped reading).
    pub send_timeout: Option<RawDuration>,
}

/// `[tls]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// How often certificate files are checked for renewal.
    pub reload_interval: Option<RawDuration>,
}

/// `[access_log]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAccessLog {
    /// `"combined"` or `"json"`.
    pub format: Option<String>,
    /// `"stdout"`, `"off"`, or a file path.
    pub path: Option<String>,
}

/// `[acme]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    /// Directory that holds `.well-known/acme-challenge/` (certbot `--webroot -w`).
    pub webroot: Option<String>,
    /// ACME directory: `"letsencrypt"`, `"letsencrypt-staging"` or an https URL.
    pub directory: Option<String>,
    /// Contact email for the CA account.
    pub email: Option<String>,
    /// Where the account and certificates are kept.
    pub state_dir: Option<String>,
    /// PEM file of the root(s) the directory's own https certificate chains to.
    pub ca_root: Option<String>,
    /// `"http-01"` or `"tls-alpn-01"`.
    pub challenge: Option<String>,
    /// Wait after a first failed order.
    pub first_retry: Option<RawDuration>,
}

/// `[headers]` and `[sites.headers]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHeaders {
    /// `Strict-Transport-Security`.
    pub hsts: Option<String>,
    /// `Content-Security-Policy`.
    pub content_security_policy: Option<String>,
    /// `X-Frame-Options`.
    pub x_frame_options: Option<String>,
    /// `Referrer-Policy`.
    pub referrer_policy: Option<String>,
    /// `Permissions-Policy`.
    pub permissions_policy: Option<String>,
    /// `Server` (never a version).
    pub server: Option<String>,
    /// More headers, by name.
    #[serde(default)]
    pub extra: BTreeMap<String, String>,
}

/// `[client_ip]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawClientIp {
    /// CIDRs of proxies whose forwarding headers are believed (Cloudflare's ranges, loopback).
    pub trusted: Option<Vec<String>>,
    /// Header a trusted proxy puts the client address in (`CF-Connecting-IP`); `""` for none.
    pub header: Option<String>,
}

/// `[limits]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Sliding window of the rate limits.
    pub window: Option<RawDuration>,
    /// Counters per hash row of the shared sketch (memory is fixed by it).
    pub sketch_slots: Option<usize>,
    /// CIDRs never limited.
    pub allow: Option<Vec<String>>,
    /// Path prefixes never limited (health checks).
    pub exempt_paths: Option<Vec<String>>,
    /// Concurrent requests per client IP (nginx `limit_conn`); 0 for none.
    pub max_connections_per_ip: Option<u32>,
    /// Classes by name; routes name one, `default` applies to routes that name none.
    #[serde(default)]
    pub classes: BTreeMap<String, RawLimitClass>,
    /// Where request counts live: `"local"` (this process) or `"redis"` (shared, `[redis]`).
    pub backend: Option<String>,
}

/// `[redis]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://[user:password@]host[:port][/db]`.
    pub url: Option<String>,
    /// Prefix of every key and of the default purge channel.
    pub key_prefix: Option<String>,
    /// Time allowed for one command on the request path before falling back.
    pub timeout: Option<RawDuration>,
    /// Time allowed to open a connection.
    pub connect_timeout: Option<RawDuration>,
    /// How often an unreachable Redis is tried again.
    pub retry_interval: Option<RawDuration>,
    /// Multiplexed connections in the pool.
    pub connections: Option<usize>,
    /// Pub/sub channel of cache purges; `""` turns the fan-out off.
    pub purge_channel: Option<String>,
}

/// `[limits.classes.NAME]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLimitClass {
    /// Requests per window.
    pub rate: Option<u32>,
    /// Extra requests allowed on top of `rate` in a window.
    pub burst: Option<u32>,
    /// Answer 429 with a small JSON body (API routes) instead of text.
    pub json: Option<bool>,
}

/// `[compression]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCompression {
    /// Compress responses at all.
    pub enabled: Option<bool>,
    /// gzip level, 1-9.
    pub gzip_level: Option<u32>,
    /// brotli quality, 0-11.
    pub brotli_quality: Option<u32>,
    /// Smallest body compressed (when its length is known).
    pub min_size: Option<RawSize>,
    /// MIME types (or prefixes ending in `/`) compressed.
    pub types: Option<Vec<String>>,
}

/// `[admin]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Addresses of the admin listener (loopback unless `allow_remote`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// Allow non-loopback admin addresses (purges are unauthenticated: firewall them).
    pub allow_remote: Option<bool>,
}

/// `[cache]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    /// File extensions whose responses go to the `static` zone on any route that caches.
    pub static_extensions: Option<Vec<String>>,
    /// How long concurrent misses on one key wait for the first fill before going upstream.
    pub lock_timeout: Option<RawDuration>,
    /// Cookie names that make a request carry credentials (default: every cookie).
    pub credential_cookies: Option<Vec<String>>,
    /// Targeted cache-control fields (RFC 9213), in order of precedence.
    pub targeted_fields: Option<Vec<String>>,
    /// Zones by name.
    #[serde(default)]
    pub zones: BTreeMap<String, RawZone>,
}

/// `[cache.zones.NAME]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    /// Directory of the disk tier.
    pub path: Option<String>,
    /// Disk tier size.
    pub size: Option<RawSize>,
    /// Memory tier size.
    pub memory_size: Option<RawSize>,
    /// Largest object stored; larger responses pass through uncached.
    pub max_object_size: Option<RawSize>,
    /// TTL when the origin says nothing.
    pub default_ttl: Option<RawDuration>,
    /// Smallest TTL a route may set.
    pub min_ttl: Option<RawDuration>,
    /// Largest TTL a route may set.
    pub max_ttl: Option<RawDuration>,
    /// Serve stale while refreshing in the background, when the origin says nothing.
    pub stale_while_revalidate: Option<RawDuration>,
    /// Serve stale while the origin fails, when the origin says nothing.
    pub stale_if_error: Option<RawDuration>,
    /// `"policy"` (proxy TTLs when the origin says nothing) or `"origin"` (RFC 9111 only).
    pub freshness: Option<String>,
    /// Heuristic freshness in origin mode: a percentage of the `Last-Modified` age, `"10%"`.
    pub heuristic: Option<String>,
    /// Longest heuristic freshness.
    pub heuristic_max: Option<RawDuration>,
}

/// `[upstreams.NAME]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawUpstream {
    /// `host:port` of each backend.
    #[serde(default)]
    pub backends: Vec<String>,
    /// TCP connect timeout.
    pub connect_timeout: Option<RawDuration>,
    /// Time allowed between reads from the upstream.
    pub read_timeout: Option<RawDuration>,
    /// Time allowed for each write to the upstream.
    pub write_timeout: Option<RawDuration>,
    /// How long an idle keepalive connection is kept in the pool.
    pub idle_timeout: Option<RawDuration>,
    /// Active health checks.
    #[serde(default)]
    pub health_check: RawHealthCheck,
}

/// `[upstreams.NAME.health_check]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    /// `"tcp"` (connect only), `"http"` (GET `path`, expect a status below 400) or `"none"`.
    pub kind: Option<String>,
    /// Path for `http` checks.
    pub path: Option<String>,
    /// Time between checks.
    pub interval: Option<RawDuration>,
    /// Time allowed for one check.
    pub timeout: Option<RawDuration>,
    /// Consecutive failures before a backend leaves rotation.
    pub fall: Option<usize>,
    /// Consecutive successes before it comes back.
    pub rise: Option<usize>,
}

/// `[[sites]]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawSite {
    /// A name for logs and metrics.
    pub name: Option<String>,
    /// Host names this site answers for.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Certificate and key (PEM).
    pub tls: Option<RawCert>,
    /// Header overrides for this site.
    #[serde(default)]
    pub headers: RawHeaders,
    /// Routes, matched by longest path prefix.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

/// `[sites.tls]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCert {
    /// Certificate chain (Let's Encrypt `fullchain.pem`).
    pub cert: Option<String>,
    /// Private key (Let's Encrypt `privkey.pem`).
    pub key: Option<String>,
    /// `true`: the certificate comes from `[acme]`.
    pub acme: Option<bool>,
}

/// `[[sites.routes]]`
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Path prefix, starting with `/`.
    pub path: Option<String>,
    /// Name of an `[upstreams.NAME]` group.
    pub upstream: Option<String>,
    /// Request body limit for this route.
    pub max_body_size: Option<RawSize>,
    /// Overrides the upstream's read timeout (e.g. long-lived WebSockets).
    pub read_timeout: Option<RawDuration>,
    /// Rate-limit class for this route, or `"off"` (default: the class named `default`).
    pub limit: Option<String>,
    /// Cache zone for this route's responses, or `"off"`.
    pub cache: Option<String>,
    /// TTL when the origin says nothing, within the zone's `min_ttl`..`max_ttl`.
    pub cache_ttl: Option<RawDuration>,
}
