//! The configuration: one TOML file, decoded with field paths, validated in full.
//!
//! [`Config::from_toml_str`] and [`Config::load`] never panic: a file either becomes a
//! [`Config`] or a [`ConfigErrors`] listing every problem with its field path
//! (`sites[1].routes[0].upstream`), the bad value and what would be accepted.

pub mod raw;
mod routes;
pub mod units;

use crate::tls::check_cert_pair;
use http::{HeaderName, HeaderValue};
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use raw::*;
pub use units::*;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where: a field path such as `upstreams.app_api.backends[0]`, or `file` for I/O and syntax.
    pub path: String,
    /// The bad value as written (empty when the field is missing).
    pub value: String,
    /// What is wrong and what would be accepted.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.path, self.message)
        } else {
            write!(f, "{} = {}: {}", self.path, self.value, self.message)
        }
    }
}

/// Every problem found in a config file, section by section. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {e}")?;
        }
        Ok(())
    }
}

/// Pingora's server settings, from `[server]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Worker threads per service. Default: the number of cores (Pingora's own default is 1).
    pub threads: usize,
    /// Default `true` (Pingora's default): a service's threads share one runtime and steal
    /// each other's tasks. `false`: every thread runs its own single-threaded runtime and a
    /// connection stays on the thread it was given when accepted, as with nginx's workers.
    pub work_stealing: bool,
    /// Graceful shutdown: time to keep serving after SIGTERM-style signals. Default 5s.
    pub grace_period: Duration,
    /// Time runtimes get to exit after the grace period. Default 5s.
    pub graceful_shutdown_timeout: Duration,
    /// Default `/tmp/galion-edge.pid`.
    pub pid_file: String,
    /// Default `/tmp/galion-edge-upgrade.sock`.
    pub upgrade_sock: String,
    /// Idle upstream connections kept. Default 128.
    pub upstream_keepalive_pool_size: usize,
}

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
    /// Default 10s (nginx: 60s). A client that started a request head and does not finish it in
    /// this time gets 408 and is disconnected; one that sends nothing is closed silently.
    pub client_header_timeout: Duration,
    /// Default 60s.
    pub keepalive_timeout: Duration,
    /// Default 1000 (nginx's `keepalive_requests`).
    pub keepalive_requests: u32,
    /// Default 32 KiB (nginx: 4 x 8k). Larger header blocks get 431.
    pub max_header_bytes: usize,
    /// Default 100 header lines. More get 431.
    pub max_header_count: usize,
    /// Default 10 MiB. Routes may override.
    pub max_body_size: u64,
    /// Default 128.
    pub h2_max_concurrent_streams: u32,
    /// Default 0 (no cap). Most connections one TCP peer (IPv6: one /64) may hold open at once
    /// on a listener; a connection beyond it is closed at once, before anything is read. Peers
    /// in `[client_ip] trusted` are exempt.
    pub max_connections_per_peer: u32,
    /// Default 60s (nginx `send_timeout`). A write to a client that makes no progress for this
    /// long ends the request and closes the connection (a slow-read client); 0 is an error.
    pub send_timeout: Duration,
}

/// Access log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// nginx's `combined` (same time format) plus host, request time, upstream and request id.
    Combined,
    /// One JSON object per line.
    Json,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    /// Standard output.
    Stdout,
    /// Appended to a file.
    File(PathBuf),
    /// Not written.
    Off,
}

/// The access log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogSettings {
    /// Default combined.
    pub format: AccessLogFormat,
    /// Default stdout.
    pub target: AccessLogTarget,
}

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
    /// Default 2s.
    pub interval: Duration,
    /// Default 1s.
    pub timeout: Duration,
    /// Default 1 (a dead backend leaves rotation at the first failed check).
    pub fall: usize,
    /// Default 1.
    pub rise: usize,
}

/// Timeouts toward one group. Pingora sets none by default; these are ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamTimeouts {
    /// Default 2s.
    pub connect: Duration,
    /// Default 60s (nginx `proxy_read_timeout`).
    pub read: Duration,
    /// Default 60s.
    pub write: Duration,
    /// Idle keepalive connections are closed after this. Default 60s.
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

pub use crate::cache::{CacheSettings, RouteCache, ZoneSettings};
pub use crate::headers::HeaderSettings;

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
    /// Header a trusted proxy names the client in. Default `CF-Connecting-IP`.
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
    /// Default 60s.
    pub window: Duration,
    /// Default 131072 (8 MiB of sketch: enough for 100,000 clients a minute, see `ratelimit`).
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

/// `[redis]`: the Redis that several instances share (rate-limit counts, purge fan-out).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://[user:password@]host[:port][/db]` as written (production: DB 4, see
    /// ARCHITECTURE.md). Required.
    pub url: String,
    /// The database number from the URL (default 0).
    pub db: i64,
    /// Prefix of every key the proxy writes. Default `"galion-edge:"`.
    pub key_prefix: String,
    /// Time allowed for one command on the request path; past it the request is decided by
    /// the local limiter. Default 50ms.
    pub timeout: Duration,
    /// Time allowed to open a connection (background, never on the request path). Default 1s.
    pub connect_timeout: Duration,
    /// How often an unreachable Redis is tried again. Default 1s.
    pub retry_interval: Duration,
    /// Multiplexed connections in the pool, used in turn. Default 2.
    pub connections: usize,
    /// Pub/sub channel of cache purges; `None` (written `""`) when the fan-out is off.
    /// Default `"<key_prefix>purge"`.
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
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s + 3 => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_string(),
        },
        _ => url.to_string(),
    }
}

/// `[compression]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressionSettings {
    /// Default true.
    pub enabled: bool,
    /// Default 5.
    pub gzip_level: u32,
    /// Default 5 (quality 4 came out larger than gzip 5 on JavaScript).
    pub brotli_quality: u32,
    /// Default 256 bytes.
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
    pub tls: Option<CertPaths>,
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
    /// Certificate check interval. Default 60s.
    pub tls_reload_interval: Duration,
    /// `[access_log]`
    pub access_log: AccessLogSettings,
    /// ACME webroot.
    pub acme_webroot: Option<PathBuf>,
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
    /// Reads and validates a file. Relative paths in it are taken from the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        Self::load_with_root(path, None)
    }

    /// Like [`Config::load`], but absolute paths in the file (certificates, webroot, log) are
    /// looked up under `root`, as a process chrooted or in a container image rooted there would
    /// see them. `galion-edge check --root DIR` uses it to validate a config for another tree.
    pub fn load_with_root(path: &Path, root: Option<&Path>) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                path: "file".into(),
                value: path.display().to_string(),
                message: format!("cannot read the config file: {e}"),
            }])
        })?;
        // `galion.toml`'s parent is the empty path: relative paths then resolve against ".".
        let base = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Self::parse(&text, &base, root)
    }

    /// Parses and validates TOML text; relative paths are resolved against `base_dir`. This is
    /// how an embedder builds the whole proxy from a string (see
    /// [`add_to_server`](crate::server::add_to_server)). Never panics: a syntax or type error is
    /// reported alone, with its line; otherwise every semantic error is listed.
    ///
    /// ```
    /// use proxy_core::Config;
    ///
    /// let config = Config::from_toml_str(
    ///     r#"
    ///     [listeners]
    ///     http_proxy = ["127.0.0.1:8080"]
    ///     [upstreams.app]
    ///     backends = ["127.0.0.1:3000"]
    ///     [[sites]]
    ///     hosts = ["example.test"]
    ///     routes = [{ path = "/", upstream = "app" }]
    ///     "#,
    ///     std::path::Path::new("."),
    /// )
    /// .expect("valid");
    /// assert_eq!(config.upstreams[0].name, "app");
    ///
    /// let errors = Config::from_toml_str(
    ///     r#"
    ///     [listeners]
    ///     http_proxy = ["127.0.0.1:8080"]
    ///     [[sites]]
    ///     hosts = ["example.test"]
    ///     routes = [{ path = "/", upstream = "nowhere" }]
    ///     "#,
    ///     std::path::Path::new("."),
    /// )
    /// .unwrap_err();
    /// assert_eq!(errors.0[0].path, "sites[0].routes[0].upstream");
    /// assert_eq!(errors.0[0].value, "\"nowhere\"");
    /// ```
    pub fn from_toml_str(text: &str, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Self::parse(text, base_dir, None)
    }

    fn parse(text: &str, base_dir: &Path, root: Option<&Path>) -> Result<Config, ConfigErrors> {
        let de = toml::Deserializer::new(text);
        let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let message = inner.message().trim().replace('\n', "; ");
            let location = inner
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            ConfigErrors(vec![ConfigError {
                path: if path == "." { "file".into() } else { path },
                value: String::new(),
                message: format!("{message}{location}"),
            }])
        })?;
        Self::validate(raw, base_dir, root)
    }

    /// Validates decoded raw config, collecting every error.
    pub fn from_raw(raw: RawConfig, base_dir: &Path) -> Result<Config, ConfigErrors> {
        Self::validate(raw, base_dir, None)
    }

    fn validate(
        raw: RawConfig,
        base_dir: &Path,
        root: Option<&Path>,
    ) -> Result<Config, ConfigErrors> {
        let mut v = Validator {
            errors: Vec::new(),
            base: base_dir.to_path_buf(),
            root: root.map(Path::to_path_buf),
        };
        let config = v.config(raw);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(v.errors))
        }
    }

    /// The group a route sends to.
    pub fn upstream(&self, index: usize) -> Option<&UpstreamSettings> {
        self.upstreams.get(index)
    }
}

/// A fixed security header: config key, header name, the site's value, the default, the built-in.
type HeaderField<'a> = (
    &'static str,
    &'static str,
    &'a Option<String>,
    &'a Option<String>,
    &'static str,
);

struct Validator {
    errors: Vec<ConfigError>,
    base: PathBuf,
    root: Option<PathBuf>,
}

impl Validator {
    fn err(
        &mut self,
        path: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            path: path.into(),
            value: value.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, raw: &Option<RawDuration>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match raw.parse() {
            Ok(d) if d.is_zero() => {
                self.err(path, raw.shown(), "must be greater than zero");
                default
            }
            Ok(d) if d > Duration::from_secs(7 * 24 * 3600) => {
                self.err(
                    path,
                    raw.shown(),
                    "is longer than 7 days; use a shorter duration",
                );
                default
            }
            Ok(d) => d,
            Err(msg) => {
                self.err(path, raw.shown(), msg);
                default
            }
        }
    }

    fn size(&mut self, path: &str, raw: &Option<RawSize>, default: u64, min: u64, max: u64) -> u64 {
        let Some(raw) = raw else { return default };
        match raw.parse() {
            Ok(n) if n < min || n > max => {
                self.err(
                    path,
                    raw.shown(),
                    format!("must be between {min} and {max} bytes"),
                );
                default
            }
            Ok(n) => n,
            Err(msg) => {
                self.err(path, raw.shown(), msg);
                default
            }
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            match (&self.root, p.strip_prefix("/")) {
                (Some(root), Ok(rel)) => root.join(rel),
                _ => p.to_path_buf(),
            }
        } else {
            self.base.join(p)
        }
    }

    fn addresses(&mut self, field: &str, list: &[String]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(sa) => out.push(sa),
                Err(_) => self.err(
                    format!("{field}[{i}]"),
                    format!("{a:?}"),
                    "expected an IP address and port such as \"0.0.0.0:443\" or \"[::]:443\"",
                ),
            }
        }
        out
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let server = self.server(&raw.server);
        let listeners = ListenerSettings {
            https: self.addresses("listeners.https", &raw.listeners.https),
            http: self.addresses("listeners.http", &raw.listeners.http),
            http_proxy: self.addresses("listeners.http_proxy", &raw.listeners.http_proxy),
        };
        let admin_listen = self.addresses("admin.listen", &raw.admin.listen);
        let mut seen = HashMap::new();
        for (field, list) in [
            ("listeners.https", &listeners.https),
            ("listeners.http", &listeners.http),
            ("listeners.http_proxy", &listeners.http_proxy),
            ("admin.listen", &admin_listen),
        ] {
            for (i, a) in list.iter().enumerate() {
                if let Some(other) = seen.insert(*a, format!("{field}[{i}]")) {
                    self.err(
                        format!("{field}[{i}]"),
                        a.to_string(),
                        format!("address already used by {other}; each address can be bound once"),
                    );
                }
            }
        }
        if raw.listeners.https.is_empty()
            && raw.listeners.http.is_empty()
            && raw.listeners.http_proxy.is_empty()
        {
            self.err(
                "listeners",
                "",
                "no listener: add `https = [\"0.0.0.0:443\"]` (and usually `http = [\"0.0.0.0:80\"]`)",
            );
        }
        let downstream = self.downstream(&raw.downstream);
        let tls_reload_interval = self.duration(
            "tls.reload_interval",
            &raw.tls.reload_interval,
            Duration::from_secs(60),
        );
        let access_log = self.access_log(&raw.access_log);
        let acme_webroot = raw.acme.webroot.as_ref().map(|w| {
            let p = self.path(w);
            if !p.is_dir() {
                self.err(
                    "acme.webroot",
                    format!("{w:?}"),
                    "is not a readable directory; create it (certbot --webroot -w uses it) or remove the setting",
                );
            }
            p
        });
        let cache = self.cache(&raw.cache);
        let client_ip = self.client_ip(&raw.client_ip);
        let limits = self.limits(&raw.limits);
        let redis = raw.redis.as_ref().map(|r| self.redis(r));
        if limits.backend == LimitBackend::Redis && redis.is_none() {
            self.err(
                "limits.backend",
                "\"redis\"",
                "needs a [redis] section with url = \"redis://127.0.0.1:6379/4\", or use backend = \"local\"",
            );
        }
        let compression = self.compression(&raw.compression);
        if !raw.admin.allow_remote.unwrap_or(false) {
            for (i, a) in admin_listen.iter().enumerate() {
                if !a.ip().is_loopback() {
                    self.err(
                        format!("admin.listen[{i}]"),
                        a.to_string(),
                        "the admin listener purges the cache without authentication: use a loopback address such as \"127.0.0.1:9113\", or set allow_remote = true behind a firewall",
                    );
                }
            }
        }
        let upstreams: Vec<UpstreamSettings> = raw
            .upstreams
            .iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect();
        let defaults = raw.headers.clone();
        let default_headers = self.headers("headers", &RawHeaders::default(), &defaults);
        let mut sites = Vec::new();
        let mut host_owner: HashMap<String, usize> = HashMap::new();
        for (i, s) in raw.sites.iter().enumerate() {
            let site = self.site(
                i,
                s,
                &defaults,
                &upstreams,
                &downstream,
                &listeners,
                &cache,
                &limits,
            );
            for (j, h) in site.hosts.iter().enumerate() {
                if let Some(&other) = host_owner.get(h) {
                    self.err(
                        format!("sites[{i}].hosts[{j}]"),
                        format!("{h:?}"),
                        format!(
                            "host is already claimed by sites[{other}]; a host belongs to one site"
                        ),
                    );
                } else {
                    host_owner.insert(h.clone(), i);
                }
            }
            sites.push(site);
        }
        if raw.sites.is_empty() {
            self.err(
                "sites",
                "",
                "no site: add a [[sites]] table with hosts and routes",
            );
        }
        Config {
            server,
            listeners,
            downstream,
            tls_reload_interval,
            access_log,
            acme_webroot,
            cache,
            client_ip,
            limits,
            redis,
            compression,
            admin_listen,
            upstreams,
            sites,
            default_headers,
            base_dir: self.base.clone(),
        }
    }

    fn cache(&mut self, raw: &RawCache) -> CacheSettings {
        let mut zones = Vec::new();
        for (name, z) in &raw.zones {
            let field = format!("cache.zones.{name}");
            if !valid_name(name) {
                self.err(
                    field.clone(),
                    format!("{name:?}"),
                    "zone names use letters, digits, '_' and '-'",
                );
            }
            let is_static = name == "static";
            let path = match &z.path {
                Some(p) => {
                    let path = self.path(p);
                    // The directory is created at start: its nearest existing ancestor
                    // must be a directory.
                    let usable = path
                        .ancestors()
                        .find(|a| a.exists())
                        .is_some_and(Path::is_dir);
                    if !usable {
                        self.err(
                            format!("{field}.path"),
                            format!("{p:?}"),
                            "must be a directory, or a path that can be created as one (it is created at start)",
                        );
                    }
                    path
                }
                None => {
                    self.err(
                        format!("{field}.path"),
                        "",
                        "missing: the directory of this zone's disk tier, such as \"/var/cache/galion-edge/api\"",
                    );
                    PathBuf::new()
                }
            };
            let size = self.size(&format!("{field}.size"), &z.size, 1 << 30, 1 << 20, 1 << 42);
            let memory_size = self.size(
                &format!("{field}.memory_size"),
                &z.memory_size,
                (size / 8).min(256 << 20),
                0,
                1 << 40,
            );
            let max_object_size = self.size(
                &format!("{field}.max_object_size"),
                &z.max_object_size,
                (16 << 20u64).min(size / 16),
                1,
                1 << 34,
            );
            if max_object_size > size / 4 {
                self.err(
                    format!("{field}.max_object_size"),
                    max_object_size.to_string(),
                    format!(
                        "must be at most a quarter of the zone size ({} bytes)",
                        size / 4
                    ),
                );
            }
            let (d_default, d_min, d_max) = if is_static {
                (7 * 24 * 3600, 60, 7 * 24 * 3600)
            } else {
                (600, 60, 3600)
            };
            let secs = Duration::from_secs;
            let min_ttl = self.duration(&format!("{field}.min_ttl"), &z.min_ttl, secs(d_min));
            let max_ttl = self.duration(&format!("{field}.max_ttl"), &z.max_ttl, secs(d_max));
            let default_ttl = self.duration(
                &format!("{field}.default_ttl"),
                &z.default_ttl,
                secs(d_default),
            );
            if min_ttl > max_ttl {
                self.err(
                    format!("{field}.min_ttl"),
                    humantime::format_duration(min_ttl).to_string(),
                    format!("is above max_ttl ({})", humantime::format_duration(max_ttl)),
                );
            } else if default_ttl < min_ttl || default_ttl > max_ttl {
                self.err(
                    format!("{field}.default_ttl"),
                    humantime::format_duration(default_ttl).to_string(),
                    format!(
                        "must be within min_ttl..max_ttl ({} to {})",
                        humantime::format_duration(min_ttl),
                        humantime::format_duration(max_ttl)
                    ),
                );
            }
            let freshness = match z.freshness.as_deref() {
                None | Some("policy") => crate::cache::FreshnessMode::Policy,
                Some("origin") => crate::cache::FreshnessMode::Origin,
                Some(other) => {
                    self.err(
                        format!("{field}.freshness"),
                        format!("{other:?}"),
                        "expected \"policy\" (default_ttl and cache_ttl apply when the origin \
                         gives no lifetime) or \"origin\" (RFC 9111: the origin alone decides)",
                    );
                    crate::cache::FreshnessMode::Policy
                }
            };
            let heuristic_percent = match z.heuristic.as_deref() {
                None => 0,
                Some(h) => {
                    let parsed = h
                        .trim()
                        .strip_suffix('%')
                        .and_then(|n| n.trim().parse::<u8>().ok())
                        .filter(|n| *n <= 100);
                    match parsed {
                        Some(n) if n > 0 && freshness == crate::cache::FreshnessMode::Policy => {
                            self.err(
                                format!("{field}.heuristic"),
                                format!("{h:?}"),
                                "only used with freshness = \"origin\"; in policy mode \
                                 default_ttl applies when the origin gives no lifetime",
                            );
                            0
                        }
                        Some(n) => n,
                        None => {
                            self.err(
                                format!("{field}.heuristic"),
                                format!("{h:?}"),
                                "expected a whole percentage from \"0%\" to \"100%\", such as \
                                 \"10%\" (RFC 9111 suggests 10% of the time since Last-Modified)",
                            );
                            0
                        }
                    }
                }
            };
            let heuristic_max =
                self.duration(&format!("{field}.heuristic_max"), &z.heuristic_max, max_ttl);
            if z.heuristic_max.is_some() && heuristic_percent == 0 {
                self.err(
                    format!("{field}.heuristic_max"),
                    z.heuristic_max
                        .as_ref()
                        .map(|d| d.shown())
                        .unwrap_or_default(),
                    "only meaningful with a heuristic, such as heuristic = \"10%\"",
                );
            }
            zones.push(ZoneSettings {
                freshness,
                heuristic_percent,
                heuristic_max,
                name: name.clone(),
                path,
                size,
                memory_size,
                max_object_size,
                default_ttl,
                min_ttl,
                max_ttl,
                stale_while_revalidate: self.duration(
                    &format!("{field}.stale_while_revalidate"),
                    &z.stale_while_revalidate,
                    secs(30),
                ),
                stale_if_error: self.duration(
                    &format!("{field}.stale_if_error"),
                    &z.stale_if_error,
                    secs(600),
                ),
            });
        }
        let mut seen_paths: HashMap<PathBuf, String> = HashMap::new();
        for z in &zones {
            if let Some(other) = seen_paths.insert(z.path.clone(), z.name.clone()) {
                self.err(
                    format!("cache.zones.{}.path", z.name),
                    format!("{:?}", z.path.display().to_string()),
                    format!("zone {other} uses the same directory; each zone needs its own"),
                );
            }
        }
        let static_zone = zones.iter().position(|z| z.name == "static");
        let static_extensions: Vec<String> = raw
            .static_extensions
            .clone()
            .unwrap_or_else(|| {
                [
                    "js", "mjs", "css", "png", "jpg", "jpeg", "gif", "webp", "avif", "svg", "ico",
                    "woff", "woff2", "ttf", "otf", "wasm", "map", "mp3", "mp4", "webm",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            })
            .into_iter()
            .map(|e| e.trim_start_matches('.').to_ascii_lowercase())
            .collect();
        if raw.static_extensions.is_some() && static_zone.is_none() {
            self.err(
                "cache.static_extensions",
                "",
                "set, but there is no [cache.zones.static] to put those responses in",
            );
        }
        let credential_cookies = self.credential_cookies(raw.credential_cookies.as_deref());
        let targeted_fields = self.targeted_fields(raw.targeted_fields.as_deref());
        CacheSettings {
            zones,
            static_extensions,
            static_zone,
            lock_timeout: self.duration(
                "cache.lock_timeout",
                &raw.lock_timeout,
                Duration::from_secs(5),
            ),
            credential_cookies,
            targeted_fields,
        }
    }

    fn targeted_fields(&mut self, names: Option<&[String]>) -> Vec<HeaderName> {
        let Some(names) = names else {
            return crate::cache::DEFAULT_TARGETED_FIELDS
                .iter()
                .map(|n| HeaderName::from_static(n))
                .collect();
        };
        let mut out = Vec::new();
        for (i, n) in names.iter().enumerate() {
            match HeaderName::from_bytes(n.as_bytes()) {
                Ok(h) if h == http::header::CACHE_CONTROL => self.err(
                    format!("cache.targeted_fields[{i}]"),
                    format!("{n:?}"),
                    "Cache-Control is what targeted fields take precedence over; list only \
                     targeted fields such as \"CDN-Cache-Control\"",
                ),
                Ok(h) => out.push(h),
                Err(_) => self.err(
                    format!("cache.targeted_fields[{i}]"),
                    format!("{n:?}"),
                    "not a header field name (letters, digits and -)",
                ),
            }
        }
        out
    }

    fn credential_cookies(&mut self, names: Option<&[String]>) -> crate::cache::CredentialCookies {
        use crate::cache::CredentialCookies;
        let Some(names) = names else {
            return CredentialCookies::All;
        };
        if names.is_empty() {
            self.err(
                "cache.credential_cookies",
                "[]",
                "an empty list would make no cookie a credential, so one user's answers could \
                 be served to another; remove the setting (every cookie counts) or name the \
                 session cookies, such as [\"session\"]",
            );
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || !n.bytes().all(crate::cache::is_cookie_name_byte) {
                self.err(
                    format!("cache.credential_cookies[{i}]"),
                    format!("{n:?}"),
                    "not a cookie name: use the name exactly as the origin's Set-Cookie \
                     sets it (letters, digits and !#$%&'*+-.^_`|~), without `=` or a value",
                );
            }
        }
        CredentialCookies::Named(names.to_vec())
    }

    fn cidrs(&mut self, field: &str, list: &[String]) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let parsed = c
                .parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => out.push(n.trunc()),
                Err(_) => self.err(
                    format!("{field}[{i}]"),
                    format!("{c:?}"),
                    "expected an IP network such as \"173.245.48.0/20\", \"2400:cb00::/32\" or a single address",
                ),
            }
        }
        out
    }

    fn client_ip(&mut self, raw: &RawClientIp) -> ClientIpSettings {
        let trusted = self.cidrs("client_ip.trusted", raw.trusted.as_deref().unwrap_or(&[]));
        let header = match raw.header.as_deref() {
            None => Some(HeaderName::from_static("cf-connecting-ip")),
            Some("") => None,
            Some(h) => match HeaderName::from_bytes(h.as_bytes()) {
                Ok(n) => Some(n),
                Err(_) => {
                    self.err(
                        "client_ip.header",
                        format!("{h:?}"),
                        "not a header name; use \"CF-Connecting-IP\", another header, or \"\" for none",
                    );
                    None
                }
            },
        };
        ClientIpSettings { trusted, header }
    }

    fn limits(&mut self, raw: &RawLimits) -> LimitsSettings {
        let mut classes = Vec::new();
        for (name, c) in &raw.classes {
            let field = format!("limits.classes.{name}");
            if !valid_name(name) || name == "off" {
                self.err(
                    field.clone(),
                    format!("{name:?}"),
                    "class names use letters, digits, '_' and '-' (and \"off\" is reserved)",
                );
            }
            let rate = match c.rate {
                Some(r) if (1..=1_000_000).contains(&r) => r,
                Some(r) => {
                    self.err(
                        format!("{field}.rate"),
                        r.to_string(),
                        "must be between 1 and 1000000 requests per window",
                    );
                    1
                }
                None => {
                    self.err(
                        format!("{field}.rate"),
                        "",
                        "missing: requests per window, such as 100",
                    );
                    1
                }
            };
            let burst = c.burst.unwrap_or(0);
            if burst > 1_000_000 {
                self.err(
                    format!("{field}.burst"),
                    burst.to_string(),
                    "must be at most 1000000",
                );
            }
            classes.push(LimitClassSettings {
                name: name.clone(),
                rate,
                burst: burst.min(1_000_000),
                json: c.json.unwrap_or(false),
            });
        }
        if classes.len() > 255 {
            self.err(
                "limits.classes",
                classes.len().to_string(),
                "at most 255 classes",
            );
        }
        let sketch_slots = raw.sketch_slots.unwrap_or(crate::ratelimit::DEFAULT_SLOTS);
        let max_slots = crate::ratelimit::MAX_SLOTS;
        if !(1024..=max_slots).contains(&sketch_slots) {
            self.err(
                "limits.sketch_slots",
                sketch_slots.to_string(),
                format!("must be between 1024 and {max_slots} (memory is 64 bytes per slot)"),
            );
        }
        let mut exempt_paths = Vec::new();
        for (i, p) in raw.exempt_paths.iter().flatten().enumerate() {
            if p.starts_with('/') {
                exempt_paths.push(p.clone());
            } else {
                self.err(
                    format!("limits.exempt_paths[{i}]"),
                    format!("{p:?}"),
                    "expected a path prefix starting with '/'",
                );
            }
        }
        LimitsSettings {
            window: {
                let w = self.duration("limits.window", &raw.window, Duration::from_secs(60));
                if w < Duration::from_secs(1)
                    || w > Duration::from_secs(86_400)
                    || w.subsec_nanos() != 0
                {
                    self.err(
                        "limits.window",
                        raw.window.as_ref().map(|d| d.shown()).unwrap_or_default(),
                        "must be whole seconds from 1s to 1d, such as \"60s\"",
                    );
                }
                w
            },
            sketch_slots: sketch_slots.clamp(1024, max_slots),
            allow: self.cidrs("limits.allow", raw.allow.as_deref().unwrap_or(&[])),
            exempt_paths,
            max_connections_per_ip: raw.max_connections_per_ip.unwrap_or(0),
            classes,
            backend: match raw.backend.as_deref() {
                None | Some("local") => LimitBackend::Local,
                Some("redis") => LimitBackend::Redis,
                Some(other) => {
                    self.err(
                        "limits.backend",
                        format!("{other:?}"),
                        "expected \"local\" (this process counts) or \"redis\" (shared through [redis])",
                    );
                    LimitBackend::Local
                }
            },
        }
    }

    fn redis(&mut self, raw: &RawRedis) -> RedisSettings {
        use redis::IntoConnectionInfo as _;
        let url = raw.url.clone().unwrap_or_default();
        let mut db = 0;
        if url.is_empty() {
            self.err(
                "redis.url",
                "",
                "missing: the Redis to share, such as \"redis://127.0.0.1:6379/4\"",
            );
        } else if !url.starts_with("redis://") {
            self.err(
                "redis.url",
                format!("{:?}", redact_url(&url)),
                "expected a redis:// URL such as \"redis://127.0.0.1:6379/4\" (TLS and unix sockets are not supported)",
            );
        } else {
            match url.as_str().into_connection_info() {
                Ok(info) if (0..=15).contains(&info.redis.db) => db = info.redis.db,
                Ok(info) => self.err(
                    "redis.url",
                    format!("{:?}", redact_url(&url)),
                    format!(
                        "database {} is outside 0..15 (Redis's default `databases 16`); production uses /4",
                        info.redis.db
                    ),
                ),
                Err(e) => self.err(
                    "redis.url",
                    format!("{:?}", redact_url(&url)),
                    format!("not a Redis URL ({e}); expected redis://[user:password@]host[:port][/db]"),
                ),
            }
        }
        let key_prefix = raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| "galion-edge:".to_string());
        if key_prefix.len() > 64
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.err(
                "redis.key_prefix",
                format!("{key_prefix:?}"),
                "at most 64 characters, no spaces or control characters, such as \"galion-edge:\"",
            );
        }
        let bounded = |v: &mut Validator,
                       field: &str,
                       raw: &Option<RawDuration>,
                       default: Duration,
                       max: Duration| {
            let d = v.duration(field, raw, default);
            if d < Duration::from_millis(1) || d > max {
                v.err(
                    field,
                    raw.as_ref().map(|d| d.shown()).unwrap_or_default(),
                    format!("must be from 1ms to {}", humantime::format_duration(max)),
                );
                return default;
            }
            d
        };
        let timeout = bounded(
            self,
            "redis.timeout",
            &raw.timeout,
            Duration::from_millis(50),
            Duration::from_secs(5),
        );
        let connect_timeout = bounded(
            self,
            "redis.connect_timeout",
            &raw.connect_timeout,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let retry_interval = bounded(
            self,
            "redis.retry_interval",
            &raw.retry_interval,
            Duration::from_secs(1),
            Duration::from_secs(300),
        );
        let connections = raw.connections.unwrap_or(2);
        if !(1..=64).contains(&connections) {
            self.err(
                "redis.connections",
                connections.to_string(),
                "must be between 1 and 64 (each is multiplexed; 2 is plenty for one proxy)",
            );
        }
        let purge_channel = match raw.purge_channel.as_deref() {
            None => Some(format!("{key_prefix}purge")),
            Some("") => None,
            Some(c) if c.chars().any(|ch| ch.is_whitespace() || ch.is_control()) => {
                self.err(
                    "redis.purge_channel",
                    format!("{c:?}"),
                    "no spaces or control characters; or \"\" to turn the purge fan-out off",
                );
                None
            }
            Some(c) => Some(c.to_string()),
        };
        RedisSettings {
            url,
            db,
            key_prefix,
            timeout,
            connect_timeout,
            retry_interval,
            connections: connections.clamp(1, 64),
            purge_channel,
        }
    }

    fn compression(&mut self, raw: &RawCompression) -> CompressionSettings {
        let gzip_level = raw
            .gzip_level
            .unwrap_or(crate::compression::DEFAULT_GZIP_LEVEL);
        if !(1..=9).contains(&gzip_level) {
            self.err(
                "compression.gzip_level",
                gzip_level.to_string(),
                "must be between 1 and 9",
            );
        }
        let brotli_quality = raw
            .brotli_quality
            .unwrap_or(crate::compression::DEFAULT_BROTLI_QUALITY);
        if brotli_quality > 11 {
            self.err(
                "compression.brotli_quality",
                brotli_quality.to_string(),
                "must be between 0 and 11",
            );
        }
        if let Some(types) = &raw.types {
            for (i, t) in types.iter().enumerate() {
                if !t.contains('/') || t.chars().any(|c| c.is_whitespace() || c == ';') {
                    self.err(
                        format!("compression.types[{i}]"),
                        format!("{t:?}"),
                        "expected a MIME type such as \"application/json\" or a prefix such as \"text/\"",
                    );
                }
            }
        }
        CompressionSettings {
            enabled: raw.enabled.unwrap_or(true),
            gzip_level: gzip_level.clamp(1, 9),
            brotli_quality: brotli_quality.min(11),
            min_size: self.size(
                "compression.min_size",
                &raw.min_size,
                crate::compression::DEFAULT_MIN_SIZE as u64,
                0,
                1 << 30,
            ),
            types: raw.types.clone(),
        }
    }

    fn route_limit(
        &mut self,
        rfield: &str,
        r: &raw::RawRoute,
        limits: &LimitsSettings,
    ) -> Option<usize> {
        match r.limit.as_deref() {
            Some("off") => None,
            None => limits.classes.iter().position(|c| c.name == "default"),
            Some(name) => match limits.classes.iter().position(|c| c.name == name) {
                Some(i) => Some(i),
                None => {
                    let known: Vec<&str> = limits.classes.iter().map(|c| c.name.as_str()).collect();
                    self.err(
                        format!("{rfield}.limit"),
                        format!("{name:?}"),
                        format!(
                            "no [limits.classes.{name}]; use \"off\" or one of: {}",
                            if known.is_empty() {
                                "(no classes defined)".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                    None
                }
            },
        }
    }

    fn route_cache(
        &mut self,
        rfield: &str,
        r: &raw::RawRoute,
        cache: &CacheSettings,
    ) -> RouteCache {
        let mut rc = RouteCache::default();
        match r.cache.as_deref() {
            None => {}
            Some("off") => rc.off = true,
            Some(name) => match cache.zones.iter().position(|z| z.name == name) {
                Some(i) => rc.zone = Some(i),
                None => {
                    let known: Vec<&str> = cache.zones.iter().map(|z| z.name.as_str()).collect();
                    self.err(
                        format!("{rfield}.cache"),
                        format!("{name:?}"),
                        format!(
                            "no cache zone has this name; use \"off\" or one of: {}",
                            if known.is_empty() {
                                "(no [cache.zones] defined)".to_string()
                            } else {
                                known.join(", ")
                            }
                        ),
                    );
                }
            },
        }
        if r.cache_ttl.is_some() {
            let ttl = self.duration(
                &format!("{rfield}.cache_ttl"),
                &r.cache_ttl,
                Duration::from_secs(600),
            );
            match rc.zone.and_then(|z| cache.zones.get(z)) {
                None => self.err(
                    format!("{rfield}.cache_ttl"),
                    r.cache_ttl.as_ref().map(|d| d.shown()).unwrap_or_default(),
                    "only meaningful with `cache = \"ZONE\"` on the same route",
                ),
                Some(z) if ttl < z.min_ttl || ttl > z.max_ttl => self.err(
                    format!("{rfield}.cache_ttl"),
                    r.cache_ttl.as_ref().map(|d| d.shown()).unwrap_or_default(),
                    format!(
                        "zone {} allows TTLs from {} to {}",
                        z.name,
                        humantime::format_duration(z.min_ttl),
                        humantime::format_duration(z.max_ttl)
                    ),
                ),
                Some(_) => rc.ttl = Some(ttl),
            }
        }
        rc
    }

    fn server(&mut self, raw: &RawServer) -> ServerSettings {
        let cores = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let threads = match raw.threads {
            None | Some(0) => cores,
            Some(n) if n > 1024 => {
                self.err(
                    "server.threads",
                    n.to_string(),
                    "must be 0 (one per core) to 1024",
                );
                cores
            }
            Some(n) => n,
        };
        ServerSettings {
            threads,
            work_stealing: raw.work_stealing.unwrap_or(true),
            grace_period: self.duration(
                "server.grace_period",
                &raw.grace_period,
                Duration::from_secs(5),
            ),
            graceful_shutdown_timeout: self.duration(
                "server.graceful_shutdown_timeout",
                &raw.graceful_shutdown_timeout,
                Duration::from_secs(5),
            ),
            pid_file: raw
                .pid_file
                .clone()
                .unwrap_or_else(|| "/tmp/galion-edge.pid".into()),
            upgrade_sock: raw
                .upgrade_sock
                .clone()
                .unwrap_or_else(|| "/tmp/galion-edge-upgrade.sock".into()),
            upstream_keepalive_pool_size: raw.upstream_keepalive_pool_size.unwrap_or(128),
        }
    }

    fn downstream(&mut self, raw: &RawDownstream) -> DownstreamSettings {
        let max_header_count = raw.max_header_count.unwrap_or(100);
        if !(8..=250).contains(&max_header_count) {
            self.err(
                "downstream.max_header_count",
                max_header_count.to_string(),
                "must be between 8 and 250",
            );
        }
        let keepalive_requests = raw.keepalive_requests.unwrap_or(1000);
        if keepalive_requests == 0 {
            self.err(
                "downstream.keepalive_requests",
                "0",
                "must be at least 1 (1 turns keepalive off)",
            );
        }
        let h2_streams = raw.h2_max_concurrent_streams.unwrap_or(128);
        if !(1..=1000).contains(&h2_streams) {
            self.err(
                "downstream.h2_max_concurrent_streams",
                h2_streams.to_string(),
                "must be between 1 and 1000",
            );
        }
        DownstreamSettings {
            client_header_timeout: self.duration(
                "downstream.client_header_timeout",
                &raw.client_header_timeout,
                Duration::from_secs(10),
            ),
            keepalive_timeout: self.duration(
                "downstream.keepalive_timeout",
                &raw.keepalive_timeout,
                Duration::from_secs(60),
            ),
            keepalive_requests: keepalive_requests.max(1),
            max_header_bytes: self.size(
                "downstream.max_header_bytes",
                &raw.max_header_bytes,
                32 << 10,
                1 << 10,
                1 << 20,
            ) as usize,
            max_header_count: max_header_count.clamp(8, 250),
            max_body_size: self.size(
                "downstream.max_body_size",
                &raw.max_body_size,
                10 << 20,
                0,
                1 << 40,
            ),
            h2_max_concurrent_streams: h2_streams.clamp(1, 1000),
            max_connections_per_peer: raw.max_connections_per_peer.unwrap_or(0),
            send_timeout: self.duration(
                "downstream.send_timeout",
                &raw.send_timeout,
                Duration::from_secs(60),
            ),
        }
    }

    fn access_log(&mut self, raw: &RawAccessLog) -> AccessLogSettings {
        let format = match raw.format.as_deref() {
            None | Some("combined") => AccessLogFormat::Combined,
            Some("json") => AccessLogFormat::Json,
            Some(other) => {
                self.err(
                    "access_log.format",
                    format!("{other:?}"),
                    "expected \"combined\" or \"json\"",
                );
                AccessLogFormat::Combined
            }
        };
        let target = match raw.path.as_deref() {
            None | Some("stdout") | Some("-") => AccessLogTarget::Stdout,
            Some("off") => AccessLogTarget::Off,
            Some("") => {
                self.err(
                    "access_log.path",
                    "\"\"",
                    "expected \"stdout\", \"off\" or a file path",
                );
                AccessLogTarget::Stdout
            }
            Some(p) => {
                let path = self.path(p);
                match path.parent() {
                    Some(dir) if !dir.as_os_str().is_empty() && !dir.is_dir() => self.err(
                        "access_log.path",
                        format!("{p:?}"),
                        format!(
                            "directory {} does not exist; create it first",
                            dir.display()
                        ),
                    ),
                    _ => {}
                }
                AccessLogTarget::File(path)
            }
        };
        AccessLogSettings { format, target }
    }

    fn upstream(&mut self, name: &str, raw: &RawUpstream) -> UpstreamSettings {
        let field = format!("upstreams.{name}");
        if !valid_name(name) {
            self.err(
                field.clone(),
                format!("{name:?}"),
                "group names use letters, digits, '_' and '-'",
            );
        }
        if raw.backends.is_empty() {
            self.err(
                format!("{field}.backends"),
                "[]",
                "an upstream group needs at least one backend, such as [\"127.0.0.1:8001\"]",
            );
        }
        let mut backends = Vec::new();
        for (i, b) in raw.backends.iter().enumerate() {
            let resolved = b.parse::<SocketAddr>().ok().or_else(|| {
                // host:port with a name: resolved once, at load (like nginx without `resolve`).
                if b.rsplit_once(':')
                    .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                {
                    b.to_socket_addrs().ok().and_then(|mut a| a.next())
                } else {
                    None
                }
            });
            match resolved {
                Some(a) if a.port() == 0 => self.err(
                    format!("{field}.backends[{i}]"),
                    format!("{b:?}"),
                    "port 0 is not a backend port",
                ),
                Some(a) => {
                    if backends.contains(&a) {
                        self.err(
                            format!("{field}.backends[{i}]"),
                            format!("{b:?}"),
                            "listed twice in this group",
                        );
                    }
                    backends.push(a)
                }
                None => self.err(
                    format!("{field}.backends[{i}]"),
                    format!("{b:?}"),
                    "expected host:port such as \"127.0.0.1:8001\" (a host name must resolve)",
                ),
            }
        }
        let timeouts = UpstreamTimeouts {
            connect: self.duration(
                &format!("{field}.connect_timeout"),
                &raw.connect_timeout,
                Duration::from_secs(2),
            ),
            read: self.duration(
                &format!("{field}.read_timeout"),
                &raw.read_timeout,
                Duration::from_secs(60),
            ),
            write: self.duration(
                &format!("{field}.write_timeout"),
                &raw.write_timeout,
                Duration::from_secs(60),
            ),
            idle: self.duration(
                &format!("{field}.idle_timeout"),
                &raw.idle_timeout,
                Duration::from_secs(60),
            ),
        };
        let hc = &raw.health_check;
        let hfield = format!("{field}.health_check");
        let kind = match hc.kind.as_deref() {
            None | Some("tcp") => HealthCheckKind::Tcp,
            Some("none") => HealthCheckKind::None,
            Some("http") => {
                let path = hc.path.clone().unwrap_or_else(|| "/".into());
                if !path.starts_with('/') || path.chars().any(|c| c.is_control() || c == ' ') {
                    self.err(
                        format!("{hfield}.path"),
                        format!("{path:?}"),
                        "expected an absolute path such as \"/health\"",
                    );
                }
                HealthCheckKind::Http { path }
            }
            Some(other) => {
                self.err(
                    format!("{hfield}.kind"),
                    format!("{other:?}"),
                    "expected \"tcp\", \"http\" or \"none\"",
                );
                HealthCheckKind::Tcp
            }
        };
        if hc.path.is_some() && !matches!(kind, HealthCheckKind::Http { .. }) {
            self.err(
                format!("{hfield}.path"),
                format!("{:?}", hc.path.clone().unwrap_or_default()),
                "only used with kind = \"http\"; set kind = \"http\" or remove path",
            );
        }
        let mut count = |name: &str, v: Option<usize>| match v {
            None => 1,
            Some(n) if (1..=100).contains(&n) => n,
            Some(n) => {
                self.err(
                    format!("{hfield}.{name}"),
                    n.to_string(),
                    "must be between 1 and 100",
                );
                1
            }
        };
        let fall = count("fall", hc.fall);
        let rise = count("rise", hc.rise);
        let health_check = HealthCheckSettings {
            kind,
            interval: self.duration(
                &format!("{hfield}.interval"),
                &hc.interval,
                Duration::from_secs(2),
            ),
            timeout: self.duration(
                &format!("{hfield}.timeout"),
                &hc.timeout,
                Duration::from_secs(1),
            ),
            fall,
            rise,
        };
        UpstreamSettings {
            name: name.to_string(),
            backends,
            timeouts,
            health_check,
        }
    }

    /// Builds a header policy from a site's values over the `[headers]` defaults. Errors in a
    /// default are reported once, by the `[headers]` pass itself (`field == "headers"`), not
    /// again for every site that inherits it.
    fn headers(&mut self, field: &str, site: &RawHeaders, defaults: &RawHeaders) -> HeaderSettings {
        let is_default_pass = field == "headers";
        let fixed: [HeaderField<'_>; 5] = [
            (
                "hsts",
                "strict-transport-security",
                &site.hsts,
                &defaults.hsts,
                crate::headers::recommended("strict-transport-security"),
            ),
            (
                "content_security_policy",
                "content-security-policy",
                &site.content_security_policy,
                &defaults.content_security_policy,
                crate::headers::recommended("content-security-policy"),
            ),
            (
                "x_frame_options",
                "x-frame-options",
                &site.x_frame_options,
                &defaults.x_frame_options,
                crate::headers::recommended("x-frame-options"),
            ),
            (
                "referrer_policy",
                "referrer-policy",
                &site.referrer_policy,
                &defaults.referrer_policy,
                crate::headers::recommended("referrer-policy"),
            ),
            (
                "permissions_policy",
                "permissions-policy",
                &site.permissions_policy,
                &defaults.permissions_policy,
                crate::headers::recommended("permissions-policy"),
            ),
        ];
        let nosniff = "x-content-type-options";
        let mut add = vec![(
            HeaderName::from_static(nosniff),
            HeaderValue::from_static(crate::headers::recommended(nosniff)),
        )];
        for (key, name, own, inherited, builtin) in fixed {
            let (text, report) = match (own, inherited) {
                (Some(v), _) => (v.as_str(), true),
                (None, Some(v)) => (v.as_str(), is_default_pass),
                (None, None) => (builtin, false),
            };
            // An empty value switches the header off.
            if text.is_empty() {
                continue;
            }
            match header_value(text) {
                Some(v) => add.push((HeaderName::from_static(name), v)),
                None if report => self.err(
                    format!("{field}.{key}"),
                    format!("{text:?}"),
                    "header values must be visible ASCII without line breaks",
                ),
                None => {}
            }
        }
        let mut extra: Vec<(&String, &String, bool)> = defaults
            .extra
            .iter()
            .filter(|(k, _)| !site.extra.contains_key(*k))
            .map(|(k, v)| (k, v, is_default_pass))
            .collect();
        extra.extend(site.extra.iter().map(|(k, v)| (k, v, true)));
        for (k, value, report) in extra {
            let name = HeaderName::from_bytes(k.as_bytes());
            match (name, header_value(value)) {
                (Ok(n), Some(v)) => {
                    if crate::headers::is_hop_by_hop(&n) || n == http::header::CONTENT_LENGTH {
                        if report {
                            self.err(
                                format!("{field}.extra.{k}"),
                                format!("{value:?}"),
                                "this header is managed by the proxy and cannot be set here",
                            );
                        }
                    } else {
                        add.retain(|(existing, _)| existing != n);
                        add.push((n, v));
                    }
                }
                (Err(_), _) if report => self.err(
                    format!("{field}.extra"),
                    format!("{k:?}"),
                    "not a valid header name (letters, digits and '-')",
                ),
                (_, None) if report => self.err(
                    format!("{field}.extra.{k}"),
                    format!("{value:?}"),
                    "header values must be visible ASCII without line breaks",
                ),
                _ => {}
            }
        }
        let (server_text, report) = match (&site.server, &defaults.server) {
            (Some(v), _) => (v.as_str(), true),
            (None, Some(v)) => (v.as_str(), is_default_pass),
            (None, None) => ("galion-edge", false),
        };
        let mut server = header_value(server_text);
        if server_text.chars().any(|c| c.is_ascii_digit()) {
            if report {
                self.err(
                    format!("{field}.server"),
                    format!("{server_text:?}"),
                    "the Server header must not carry a version; use a bare name such as \"galion-edge\"",
                );
            }
            server = None;
        } else if server.is_none() && report {
            self.err(
                format!("{field}.server"),
                format!("{server_text:?}"),
                "header values must be visible ASCII without line breaks",
            );
        }
        HeaderSettings {
            add,
            server: server.unwrap_or_else(|| HeaderValue::from_static("galion-edge")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn site(
        &mut self,
        i: usize,
        raw: &raw::RawSite,
        default_headers: &RawHeaders,
        upstreams: &[UpstreamSettings],
        downstream: &DownstreamSettings,
        listeners: &ListenerSettings,
        cache: &CacheSettings,
        limits: &LimitsSettings,
    ) -> SiteSettings {
        let field = format!("sites[{i}]");
        let name = raw
            .name
            .clone()
            .or_else(|| raw.hosts.first().cloned())
            .unwrap_or_else(|| format!("site{i}"));
        if raw.hosts.is_empty() {
            self.err(
                format!("{field}.hosts"),
                "[]",
                "a site needs at least one host name, such as [\"galion.app\"]",
            );
        }
        let mut hosts = Vec::new();
        for (j, h) in raw.hosts.iter().enumerate() {
            let lower = h.to_ascii_lowercase();
            if valid_hostname(&lower) {
                if hosts.contains(&lower) {
                    self.err(
                        format!("{field}.hosts[{j}]"),
                        format!("{h:?}"),
                        "listed twice in this site",
                    );
                } else {
                    hosts.push(lower);
                }
            } else {
                self.err(
                    format!("{field}.hosts[{j}]"),
                    format!("{h:?}"),
                    "expected a host name without port or scheme, such as \"galion.app\"",
                );
            }
        }
        let tls = match &raw.tls {
            None => {
                if !listeners.https.is_empty() {
                    self.err(
                        format!("{field}.tls"),
                        "",
                        "missing: sites served on https listeners need `tls = { cert = \"…/fullchain.pem\", key = \"…/privkey.pem\" }`",
                    );
                }
                None
            }
            Some(c) => match (&c.cert, &c.key) {
                (Some(cert), Some(key)) => {
                    let paths = CertPaths {
                        cert: self.path(cert),
                        key: self.path(key),
                    };
                    if let Err(e) = check_cert_pair(&paths.cert, &paths.key) {
                        self.err(
                            format!("{field}.tls.{}", e.field()),
                            e.value(),
                            e.to_string(),
                        );
                    }
                    Some(paths)
                }
                (None, _) => {
                    self.err(
                        format!("{field}.tls.cert"),
                        "",
                        "missing: path to the certificate chain (PEM)",
                    );
                    None
                }
                (_, None) => {
                    self.err(
                        format!("{field}.tls.key"),
                        "",
                        "missing: path to the private key (PEM)",
                    );
                    None
                }
            },
        };
        let headers = self.headers(&format!("{field}.headers"), &raw.headers, default_headers);
        let mut routes = Vec::new();
        let mut prefixes = BTreeSet::new();
        if raw.routes.is_empty() {
            self.err(
                format!("{field}.routes"),
                "[]",
                "a site needs at least one route, such as { path = \"/\", upstream = \"frontend\" }",
            );
        }
        for (j, r) in raw.routes.iter().enumerate() {
            let rfield = format!("{field}.routes[{j}]");
            // Every field of a route is checked even when an earlier one is bad.
            let prefix = match &r.path {
                None => {
                    self.err(
                        format!("{rfield}.path"),
                        "",
                        "missing: a path prefix such as \"/api/\"",
                    );
                    None
                }
                Some(p)
                    if !p.starts_with('/')
                        || p.chars()
                            .any(|c| c.is_control() || c == ' ' || c == '?' || c == '#') =>
                {
                    self.err(
                        format!("{rfield}.path"),
                        format!("{p:?}"),
                        "expected a path prefix starting with '/', without spaces, '?' or '#'",
                    );
                    None
                }
                Some(p) => {
                    if !prefixes.insert(p.clone()) {
                        self.err(
                            format!("{rfield}.path"),
                            format!("{p:?}"),
                            "another route of this site has the same prefix",
                        );
                    }
                    Some(p.clone())
                }
            };
            let upstream = match &r.upstream {
                None => {
                    self.err(
                        format!("{rfield}.upstream"),
                        "",
                        "missing: the name of an [upstreams.NAME] group",
                    );
                    None
                }
                Some(u) => {
                    let found = upstreams.iter().position(|g| &g.name == u);
                    if found.is_none() {
                        let known: Vec<&str> = upstreams.iter().map(|g| g.name.as_str()).collect();
                        self.err(
                            format!("{rfield}.upstream"),
                            format!("{u:?}"),
                            format!(
                                "no upstream group has this name; defined groups: {}",
                                known.join(", ")
                            ),
                        );
                    }
                    found
                }
            };
            let max_body_size = self.size(
                &format!("{rfield}.max_body_size"),
                &r.max_body_size,
                downstream.max_body_size,
                0,
                1 << 40,
            );
            let read_timeout = r.read_timeout.as_ref().map(|_| {
                self.duration(
                    &format!("{rfield}.read_timeout"),
                    &r.read_timeout,
                    Duration::from_secs(60),
                )
            });
            let route_cache = self.route_cache(&rfield, r, cache);
            let limit = self.route_limit(&rfield, r, limits);
            if let (Some(prefix), Some(upstream)) = (prefix, upstream) {
                routes.push(RouteSettings {
                    prefix,
                    upstream,
                    max_body_size,
                    read_timeout,
                    cache: route_cache,
                    limit,
                });
            }
        }
        SiteSettings {
            name,
            hosts,
            tls,
            headers,
            routes,
        }
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A header value of visible ASCII and spaces (what the `http` crate accepts is wider: it lets
/// bytes over 0x7f through, which clients decode inconsistently).
fn header_value(text: &str) -> Option<HeaderValue> {
    if !text
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

/// A DNS host name: labels of letters, digits and '-', at most 253 bytes, or `localhost`.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}
