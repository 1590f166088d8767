//! The validated settings: plain types the rest of the crate reads, with every default applied.
//! Built only by validation (`super::validate`), so a value here has passed its checks.

use crate::access_log::AccessLogSettings;
use crate::acme::AcmeSettings;
use crate::cache::{CacheSettings, RouteCache};
use crate::headers::HeaderSettings;
use crate::redis_link::RedisSettings;
use crate::tls::{CertSource, SiteCertSpec};
use crate::upstream::UpstreamSettings;
use http::HeaderName;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

// The defaults and bounds of `[server]` and `[downstream]` (the server module hands these
// settings to Pingora and to the front). The validator, docs/configuration.md (through a test)
// and docs/headers-and-limits.md use these; nothing else writes the values.

/// Worker threads per service when `[server] threads` is 0 or unset but the number of cores
/// cannot be read (the default is one thread per core).
pub const FALLBACK_THREADS: usize = 1;
/// Most worker threads per service (`[server] threads`).
pub const MAX_THREADS: usize = 1024;
/// `[server] work_stealing`: Pingora's default, a service's threads share one runtime.
pub const DEFAULT_WORK_STEALING: bool = true;
/// `[server] grace_period`: how long to keep serving after a graceful shutdown begins.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(5);
/// `[server] graceful_shutdown_timeout`: the time runtimes get to exit after the grace period.
pub const DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);
/// `[server] pid_file`.
pub const DEFAULT_PID_FILE: &str = "/tmp/galion-edge.pid";
/// `[server] upgrade_sock`: where `run --upgrade` receives the running instance's sockets.
pub const DEFAULT_UPGRADE_SOCK: &str = "/tmp/galion-edge-upgrade.sock";
/// `[server] upstream_keepalive_pool_size`: idle upstream connections kept (per thread).
pub const DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE: usize = 128;

/// `[downstream] client_header_timeout` (nginx: 60s): an HTTP/1 head not complete after this
/// gets 408.
pub const DEFAULT_CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// `[downstream] keepalive_timeout`: how long an idle client connection is kept.
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(60);
/// `[downstream] keepalive_requests` (nginx's `keepalive_requests`): HTTP/1 requests per
/// connection. At least 1 (1 turns keepalive off).
pub const DEFAULT_KEEPALIVE_REQUESTS: u32 = 1000;
/// `[downstream] max_header_bytes` (nginx: 4 x 8k): a larger HTTP/1 head gets 431.
pub const DEFAULT_MAX_HEADER_BYTES: u64 = 32 << 10;
/// What `[downstream] max_header_bytes` may be set to: 1 KiB to 1 MiB.
pub const MAX_HEADER_BYTES_RANGE: RangeInclusive<u64> = (1 << 10)..=(1 << 20);
/// `[downstream] max_header_count`: more HTTP/1 header lines get 431.
pub const DEFAULT_MAX_HEADER_COUNT: usize = 100;
/// What `[downstream] max_header_count` may be set to; the top stays under the front's own
/// parsing bound of 256 lines.
pub const MAX_HEADER_COUNT_RANGE: RangeInclusive<usize> = 8..=250;
/// `[downstream] max_body_size`: the request body limit of a route that sets none (413 beyond).
pub const DEFAULT_MAX_BODY_SIZE: u64 = 10 << 20;
/// What a body limit (`[downstream]`'s or a route's `max_body_size`) may be set to: 0 to 1 TiB.
pub const MAX_BODY_SIZE_RANGE: RangeInclusive<u64> = 0..=(1 << 40);
/// `[downstream] h2_max_concurrent_streams`: streams per HTTP/2 connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 128;
/// What `[downstream] h2_max_concurrent_streams` may be set to.
pub const H2_MAX_CONCURRENT_STREAMS_RANGE: RangeInclusive<u32> = 1..=1000;
/// `[downstream] max_connections_per_peer`: 0, no cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: u32 = 0;
/// `[downstream] send_timeout` (nginx `send_timeout`): a write to a client that makes no
/// progress for this long ends the request.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(60);

/// Pingora's server settings, from `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Worker threads per service. Default: the number of cores (Pingora's own default is 1),
    /// or [`FALLBACK_THREADS`](FALLBACK_THREADS) when it cannot be read.
    pub threads: usize,
    /// Default [`DEFAULT_WORK_STEALING`](DEFAULT_WORK_STEALING), `true`
    /// (Pingora's default): a service's threads share one runtime and steal
    /// each other's tasks. `false`: every thread runs its own single-threaded runtime and a
    /// connection stays on the thread it was given when accepted, as with nginx's workers.
    pub work_stealing: bool,
    /// Graceful shutdown: time to keep serving after SIGTERM-style signals. Default
    /// [`DEFAULT_GRACE_PERIOD`](DEFAULT_GRACE_PERIOD).
    pub grace_period: Duration,
    /// Time runtimes get to exit after the grace period. Default
    /// [`DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT`](DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT).
    pub graceful_shutdown_timeout: Duration,
    /// Default [`DEFAULT_PID_FILE`](DEFAULT_PID_FILE).
    pub pid_file: String,
    /// Default [`DEFAULT_UPGRADE_SOCK`](DEFAULT_UPGRADE_SOCK).
    pub upgrade_sock: String,
    /// Idle upstream connections kept. Default
    /// [`DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE`](DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE).
    pub upstream_keepalive_pool_size: usize,
}

/// `[admin] allow_remote`: the admin listener only binds loopback addresses, because nothing
/// on it is authenticated.
pub const DEFAULT_ALLOW_REMOTE: bool = false;

/// Listening addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSettings {
    /// TLS listeners.
    pub https: Vec<SocketAddr>,
    /// Plain HTTP: redirect to https and ACME challenges.
    pub http: Vec<SocketAddr>,
    /// Plain HTTP that proxies (local development, load tests behind a TLS terminator).
    pub http_proxy: Vec<SocketAddr>,
}

/// Limits on clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownstreamSettings {
    /// Default [`DEFAULT_CLIENT_HEADER_TIMEOUT`](DEFAULT_CLIENT_HEADER_TIMEOUT).
    /// A client that started a request head and does not finish it in this time gets 408 and
    /// is disconnected; one that sends nothing is closed silently.
    pub client_header_timeout: Duration,
    /// Default [`DEFAULT_KEEPALIVE_TIMEOUT`](DEFAULT_KEEPALIVE_TIMEOUT).
    pub keepalive_timeout: Duration,
    /// Default [`DEFAULT_KEEPALIVE_REQUESTS`](DEFAULT_KEEPALIVE_REQUESTS).
    pub keepalive_requests: u32,
    /// Default [`DEFAULT_MAX_HEADER_BYTES`](DEFAULT_MAX_HEADER_BYTES). Larger
    /// header blocks get 431.
    pub max_header_bytes: usize,
    /// Default [`DEFAULT_MAX_HEADER_COUNT`](DEFAULT_MAX_HEADER_COUNT) header
    /// lines. More get 431.
    pub max_header_count: usize,
    /// Default [`DEFAULT_MAX_BODY_SIZE`](DEFAULT_MAX_BODY_SIZE). Routes may
    /// override.
    pub max_body_size: u64,
    /// Default
    /// [`DEFAULT_H2_MAX_CONCURRENT_STREAMS`](DEFAULT_H2_MAX_CONCURRENT_STREAMS).
    pub h2_max_concurrent_streams: u32,
    /// Default [`DEFAULT_MAX_CONNECTIONS_PER_PEER`](DEFAULT_MAX_CONNECTIONS_PER_PEER),
    /// no cap. Most connections one TCP peer (IPv6: one /64) may hold open at once
    /// on a listener; a connection beyond it is closed at once, before anything is read. Peers
    /// in `[client_ip] trusted` are exempt.
    pub max_connections_per_peer: u32,
    /// Default [`DEFAULT_SEND_TIMEOUT`](DEFAULT_SEND_TIMEOUT). A write to a
    /// client that makes no progress for this long ends the request and closes the connection
    /// (a slow-read client); 0 is an error.
    pub send_timeout: Duration,
}

/// Where a site's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteTls {
    /// `tls = { cert = "…", key = "…" }`: files, reloaded when they change.
    Files(CertPaths),
    /// `tls = { acme = true }`: ordered and renewed by `[acme]`.
    Acme,
}

/// A certificate pair on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertPaths {
    /// Chain.
    pub cert: PathBuf,
    /// Key.
    pub key: PathBuf,
}

/// Who the client is, from `[client_ip]`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ClientIpSettings {
    /// Proxies whose forwarding headers are believed. Default: none (only the peer counts).
    pub trusted: Vec<ipnet::IpNet>,
    /// Header a trusted proxy names the client in. Default
    /// [`DEFAULT_HEADER`](crate::client_ip::DEFAULT_HEADER), `CF-Connecting-IP`.
    pub header: Option<HeaderName>,
}

/// One rate-limit class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitClassSettings {
    /// Name (`api`, `default`).
    pub name: String,
    /// Requests per window.
    pub rate: u32,
    /// Extra requests per window.
    pub burst: u32,
    /// JSON 429 bodies.
    pub json: bool,
}

/// `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsSettings {
    /// Default [`DEFAULT_WINDOW`](crate::ratelimit::DEFAULT_WINDOW).
    pub window: Duration,
    /// Default [`DEFAULT_SLOTS`](crate::ratelimit::DEFAULT_SLOTS) (8 MiB of sketch: enough for
    /// 100,000 clients a minute, see `ratelimit`).
    pub sketch_slots: usize,
    /// Never limited.
    pub allow: Vec<ipnet::IpNet>,
    /// Never limited path prefixes. Default none.
    pub exempt_paths: Vec<String>,
    /// Default 0 (no cap).
    pub max_connections_per_ip: u32,
    /// Classes in name order.
    pub classes: Vec<LimitClassSettings>,
    /// Where the counts live. Default [`LimitBackend::Local`].
    pub backend: LimitBackend,
}

/// Where rate-limit counts live, from `[limits] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LimitBackend {
    /// This process's sketch (`"local"`, the default): each instance counts on its own.
    #[default]
    Local,
    /// Redis (`"redis"`, needs `[redis]`): every instance sharing the Redis shares the counts;
    /// the local sketch answers while Redis cannot (see `ratelimit::redis`).
    Redis,
}

/// `[compression]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionSettings {
    /// Default [`DEFAULT_ENABLED`](crate::compression::DEFAULT_ENABLED).
    pub enabled: bool,
    /// Default [`DEFAULT_GZIP_LEVEL`](crate::compression::DEFAULT_GZIP_LEVEL).
    pub gzip_level: u32,
    /// Default [`DEFAULT_BROTLI_QUALITY`](crate::compression::DEFAULT_BROTLI_QUALITY).
    pub brotli_quality: u32,
    /// Default [`DEFAULT_MIN_SIZE`](crate::compression::DEFAULT_MIN_SIZE).
    pub min_size: u64,
    /// Default: `compression::CompressionPolicy::default_types()`.
    pub types: Option<Vec<String>>,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSettings {
    /// Path prefix.
    pub prefix: String,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
    /// Body limit in bytes.
    pub max_body_size: u64,
    /// Read timeout override.
    pub read_timeout: Option<Duration>,
    /// Cache use.
    pub cache: RouteCache,
    /// Rate-limit class (index into `limits.classes`), if limited.
    pub limit: Option<usize>,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteSettings {
    /// Name for logs.
    pub name: String,
    /// Lower-case host names.
    pub hosts: Vec<String>,
    /// Certificate.
    pub tls: Option<SiteTls>,
    /// Response headers.
    pub headers: HeaderSettings,
    /// Routes in file order.
    pub routes: Vec<RouteSettings>,
}

/// A validated configuration. Build it with [`Config::load`] or [`Config::from_toml_str`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `[server]`
    pub server: ServerSettings,
    /// `[listeners]`
    pub listeners: ListenerSettings,
    /// `[downstream]`
    pub downstream: DownstreamSettings,
    /// Certificate check interval. Default
    /// [`DEFAULT_RELOAD_INTERVAL`](crate::tls::DEFAULT_RELOAD_INTERVAL).
    pub tls_reload_interval: Duration,
    /// `[access_log]`
    pub access_log: AccessLogSettings,
    /// ACME webroot.
    pub acme_webroot: Option<PathBuf>,
    /// `[acme]` certificate issuance, when a site has `tls = { acme = true }`.
    pub acme: Option<AcmeSettings>,
    /// `[cache]`
    pub cache: CacheSettings,
    /// `[client_ip]`
    pub client_ip: ClientIpSettings,
    /// `[limits]`
    pub limits: LimitsSettings,
    /// `[redis]`, if any.
    pub redis: Option<RedisSettings>,
    /// `[compression]`
    pub compression: CompressionSettings,
    /// Admin listener addresses (`[admin] listen`); empty for none.
    pub admin_listen: Vec<SocketAddr>,
    /// Upstream groups, sorted by name.
    pub upstreams: Vec<UpstreamSettings>,
    /// Sites in file order.
    pub sites: Vec<SiteSettings>,
    /// Headers for answers that belong to no site (an unknown host), from `[headers]`.
    pub default_headers: HeaderSettings,
    /// Directory the file was read from (relative paths are resolved against it).
    pub base_dir: PathBuf,
}

impl Config {
    /// The group a route sends to.
    pub fn upstream(&self, index: usize) -> Option<&UpstreamSettings> {
        self.upstreams.get(index)
    }

    /// Each site's certificate source, in file order, for
    /// [`SniResolver::with_sites`](crate::tls::SniResolver::with_sites) (sites without `tls`
    /// are left out).
    pub fn certificate_specs(&self) -> impl Iterator<Item = SiteCertSpec<'_>> {
        self.sites.iter().filter_map(|s| {
            let source = match s.tls.as_ref()? {
                SiteTls::Files(paths) => CertSource::Files {
                    cert: &paths.cert,
                    key: &paths.key,
                },
                SiteTls::Acme => CertSource::Acme,
            };
            Some(SiteCertSpec {
                name: &s.name,
                hosts: &s.hosts,
                source,
            })
        })
    }
}
