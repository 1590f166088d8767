//! # proxy-core: the Galion Edge proxy as a library
//!
//! An edge proxy on [Pingora](https://github.com/cloudflare/pingora) 0.9.1 (rustls only) that
//! serves several sites from one config: TLS with SNI and certificate reload, routing by host and
//! path to upstream groups with health checks and keepalive pools, port-80 redirects with ACME
//! challenges, security headers, request limits, client-IP resolution and rate limits,
//! compression, a two-tier HTTP cache and an access log.
//!
//! ## A request's path through the Pingora phases
//!
//! ```text
//! accept ── TLS handshake ─────────────── tls::SniResolver (certificate by SNI, hot reload,
//!   │                                      ACME certificates and TLS-ALPN-01 challenges)
//!   │
//!   ├─ HTTP/1 head read with deadlines ── front::Front (408 slow header, 431 too large)
//!   │
//!   ├─ new_ctx ────────────────────────── state::ProxyState (the config compiled per site and
//!   │                                      route; swapped whole on reload)
//!   ├─ request_filter ─────────────────── client_ip::ClientIpResolver (who the client is)
//!   │                                      routing::RouteDecider over routing::RouteTable
//!   │                                      (host → site, prefix → route, 421 / 404 / 400,
//!   │                                      errors::Refusal; TRACE 405)
//!   │                                      acme (port 80 HTTP-01: issuer's answers, webroot),
//!   │                                      301 to https, 413 on CL
//!   │                                      ratelimit::{RateLimiter, ConnLimiter} (429),
//!   │                                      ratelimit::redis::RedisLimiter (shared, Redis)
//!   ├─ request_cache_filter … ─────────── cache (zone choice, key, policy, Vary;
//!   │                                      cache::TieredStorage memory over disk)
//!   ├─ upstream_peer / fail_to_connect ── upstream::UpstreamGroup (round robin, health, retry)
//!   ├─ upstream_request_filter ────────── headers (X-Forwarded-*, X-Request-Id, hop-by-hop)
//!   ├─ request_body_filter ────────────── 413 on streamed bodies
//!   ├─ upstream_response_filter / body ── compression::{CompressionPolicy, BodyCoder}
//!   ├─ response_filter ────────────────── headers::HeaderPolicy (HSTS, CSP, …), X-Cache-Status
//!   ├─ fail_to_proxy ──────────────────── errors::answer_for (502 / 504 / 4xx)
//!   └─ logging ────────────────────────── access_log::AccessLog, the route's
//!                                          metrics::RequestMetrics
//!
//! admin listener ──────────────────────── admin::Admin (/healthz, /readyz, /metrics,
//!                                          cache stats and purges, /reload;
//!                                          state::ProxyState::render_metrics)
//! start-up ────────────────────────────── listeners::ReadyAnnouncer ("ready: listening on …")
//! SIGHUP / SIGUSR1 ────────────────────── reload::SignalHandler (config reload, log reopen)
//! SIGUSR2 (when set up) ───────────────── upgrade::Upgrader (binary upgrade started by itself;
//!                                          systemd READY=1 / MAINPID= at the ready line)
//! Redis (optional) ────────────────────── redis_link::RedisService (pool, breaker, reconnect),
//!                                          purge_bus::PurgeBus (purges to every instance)
//! ```
//!
//! [`GalionProxy`] is the `ProxyHttp` implementation; each hook calls one module.
//! [`build_server`] assembles a whole Pingora `Server` from a [`Config`].
//!
//! ## The public surface
//!
//! The modules in the map above are private: every item an embedder needs is re-exported
//! once at the crate root (blocks, their errors and constants), the config's schema lives in
//! [`config`], the defaults a config leaves out in [`defaults`], and Pingora's crates in
//! [`pingora`]. Everything else is `pub(crate)`, so it can change without a major version.
//! docs/architecture.md draws the layers.
//!
//! ## Using it as a library
//!
//! - **The whole proxy** inside a Pingora `Server` you own, next to your own services: build a
//!   [`Config`] from a file ([`Config::load`]) or a string ([`Config::from_toml_str`]), then
//!   [`add_to_server`] (see its example), or [`build_server`] for a server of its own.
//! - **A custom route decision** in the provided service: implement [`RouteDecider`] and install
//!   it with [`ProxyOptions`] ([`add_to_server_with`], [`build_server_with`]) or
//!   [`GalionProxy::with_decider`]. It is the only extension point; everything else is
//!   configured.
//! - **The building blocks**, each usable from your own `ProxyHttp` without a config:
//!
//! | block | what it is for | hook |
//! |---|---|---|
//! | [`RouteTable`] ([`RouteTable::builder`], no config needed) | host → site, longest prefix → route, allocation-free | `request_filter` |
//! | [`TieredStorage`] + [`DiskEviction`] | a `pingora_cache::Storage`: memory over checksummed disk, survives restarts | `request_cache_filter` |
//! | [`ClientIpResolver`] + [`TrustedProxies`] | the client's IP behind trusted proxies (Cloudflare) | `request_filter` |
//! | [`RateLimiter`] + [`LimitClass`], [`ConnLimiter`] | sliding-window request limits and in-flight caps per IP, fixed memory | `request_filter` |
//! | [`CompressionPolicy`] + [`BodyCoder`] | gzip/brotli negotiation, what to do with a response, bounded streaming coder | `upstream_response_filter`, `upstream_response_body_filter` |
//! | [`HeaderPolicy`] ([`HeaderPolicyBuilder`]) | security headers and `Server` on every response | `response_filter` |
//!
//! `proxy-core/examples/` has one program for each way: `embed_whole_proxy.rs`,
//! `cache_and_limiter.rs` (a `ProxyHttp` of its own on the cache storage and the rate limiter)
//! and `custom_routing.rs` (a [`RouteDecider`]).
//!
//! ## Pingora version
//!
//! Types from Pingora 0.9.1 (`pingora-core`, `pingora-proxy`, `pingora-http`, `pingora-cache`,
//! `pingora-limits`, `pingora-error`, `pingora-load-balancing`) appear in this API. They are
//! re-exported in [`pingora`], so an embedder can name them without depending on the crates;
//! one that does depend on them must use the same versions.

#![deny(missing_docs)]
// Helpers stay `pub(crate)` and every type an embedder can reach has a name (CI denies warnings).
#![warn(unreachable_pub, unnameable_types)]

mod access_log;
mod acme;
mod admin;
mod cache;
mod client_ip;
mod compression;
pub mod config;
mod errors;
mod exposition;
mod front;
// Test-only code: the `fuzzing` feature (cargo-fuzz) and proxy-core's unit tests use it.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
mod headers;
mod host;
mod listeners;
mod metrics;
mod purge_bus;
mod ratelimit;
mod redis_link;
mod reload;
mod routing;
mod server;
mod service;
mod state;
mod tls;
mod upgrade;
mod upstream;

// The public surface, flat (as linkerd2's `stack` crate does): the modules above are private
// and each item an embedder needs is named here once. Anything not listed is `pub(crate)`.

// The whole proxy.
pub use config::{Config, ConfigError, ConfigErrors};
pub use server::{
    add_to_server, add_to_server_with, build_server, build_server_with, server_conf, BuildError,
    ProxyOptions, RunOptions,
};
pub use service::{GalionProxy, ListenerRole, RequestCtx};
pub use state::{ProxyState, StateError};
// What `StateError` and `BuildError` carry: each names the zone, file, group or link.
pub use access_log::OpenError as AccessLogOpenError;
pub use cache::OpenError as ZoneOpenError;
pub use listeners::READY as READY_LINE;
pub use metrics::MetricsError;
pub use redis_link::LinkError as RedisLinkError;
pub use tls::CertError;
pub use upstream::UpstreamError;

// Routing.
pub use routing::path_is_clean;
pub use routing::{
    HostPathDecider, RouteDecider, RouteDecision, RouteError, RouteTable, RouteTableBuilder,
    RouteTableError,
};
pub use service::request_host;

// The cache.
pub use cache::disk::{
    decode as decode_cache_entry, Corrupt as CorruptCacheEntry, Footer as CacheEntryFooter,
};
pub use cache::storage::LOG_EVERY as DISK_ERROR_LOG_INTERVAL;
pub use cache::{
    cache_key, status_label as cache_status_label, variance as cache_variance, DiskEviction,
    DiskOp, TieredStorage, ZoneStats, ZoneUsage,
};

// Client IP and rate limits.
pub use client_ip::{ClientIpResolver, IpNet, TrustedProxies, CF_CONNECTING_IP, CLOUDFLARE_RANGES};
pub use ratelimit::redis::RedisLimiter;
pub use ratelimit::window::{Clock, ManualClock, SystemClock};
pub use ratelimit::{
    policy_header as ratelimit_policy_header, ratelimit_header, ConnLimiter, Decision, LimitClass,
    RateLimiter, RATELIMIT, RATELIMIT_POLICY,
};
pub use redis_link::{LinkUser as RedisLinkUser, RedisDecisions, RedisLink, RedisService};

// Compression, headers, access log, TLS, upstreams.
pub use access_log::{write_line as write_access_line, AccessLog, AccessRecord};
pub use compression::{
    apply_headers as apply_compression_headers, ensure_vary_accept_encoding,
    negotiate as negotiate_encoding, BodyCoder, CompressionPolicy, Encoding,
    Plan as CompressionPlan,
};
pub use headers::{
    request_id, set_forwarded, HeaderPolicy, HeaderPolicyBuilder, X_CACHE_STATUS, X_FORWARDED_FOR,
    X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID,
};
pub use tls::{
    crypto_provider, install_crypto_provider, CertInfo, CertReloader, CertSource,
    CertificateStatus, SiteCertSpec, SniResolver, ACME_TLS_ALPN,
};

// Certificates by ACME.
pub use acme::{
    renewal_time as acme_renewal_time, AcmeError, AcmeService, AcmeStats,
    Challenges as AcmeChallenges, StateDir, StoredCert,
};
pub use upstream::{GroupSource, HealthChecker, UpstreamGroup};

// The binary upgrade a running process starts itself (SIGUSR2).
pub use upgrade::{UpgradeError, Upgrader, UPGRADE_START_TIMEOUT};

/// The value each setting takes when the config leaves it out, and the range it accepts: one
/// module per section, each re-exporting the constants of the module that owns the behaviour.
/// The validator uses the same constants, and a test holds docs/configuration.md to them.
pub mod defaults {
    /// `[admin]`.
    pub mod admin {
        pub use crate::config::settings::DEFAULT_ALLOW_REMOTE;
    }
    /// `[cache]` and its zones (`api` and `static`).
    pub mod cache {
        pub use crate::cache::{
            default_max_object_size, default_memory_size, max_object_size_limit,
            DEFAULT_LOCK_TIMEOUT, DEFAULT_MAX_OBJECT_SIZE_CAP, DEFAULT_MAX_TTL,
            DEFAULT_MEMORY_SIZE_CAP, DEFAULT_MIN_TTL, DEFAULT_STALE_IF_ERROR,
            DEFAULT_STALE_WHILE_REVALIDATE, DEFAULT_STATIC_EXTENSIONS, DEFAULT_TARGETED_FIELDS,
            DEFAULT_TTL, DEFAULT_ZONE_SIZE, MAX_OBJECT_SIZE_RANGE, MEMORY_SIZE_RANGE,
            STATIC_DEFAULT_TTL, STATIC_MAX_TTL, STATIC_MIN_TTL, STATIC_ZONE, ZONE_SIZE_RANGE,
        };
    }
    /// `[client_ip]`.
    pub mod client_ip {
        pub use crate::client_ip::DEFAULT_HEADER;
    }
    /// `[compression]`.
    pub mod compression {
        pub use crate::compression::{
            BROTLI_QUALITIES, DEFAULT_BROTLI_QUALITY, DEFAULT_ENABLED, DEFAULT_GZIP_LEVEL,
            DEFAULT_MAX_DECOMPRESSED, DEFAULT_MIN_SIZE, GZIP_LEVELS, MIN_SIZE_RANGE,
        };
    }
    /// `[headers]`.
    pub mod headers {
        pub use crate::headers::{DEFAULT_SERVER, DEFAULT_SERVER_NAME};
    }
    /// `[limits]` and its classes.
    pub mod ratelimit {
        pub use crate::ratelimit::{
            DEFAULT_BURST, DEFAULT_IPV6_PREFIX_LEN, DEFAULT_JSON, DEFAULT_MAX_CONNECTIONS_PER_IP,
            DEFAULT_SLOTS, DEFAULT_WINDOW, MAX_BURST, MAX_CLASSES, MAX_SLOTS, MAX_WINDOW,
            MIN_SLOTS, MIN_WINDOW, RATE_RANGE,
        };
    }
    /// `[redis]`.
    pub mod redis_link {
        pub use crate::redis_link::{
            CONNECTIONS_RANGE, DB_RANGE, DEFAULT_CONNECTIONS, DEFAULT_CONNECT_TIMEOUT,
            DEFAULT_KEY_PREFIX, DEFAULT_RETRY_INTERVAL, DEFAULT_TIMEOUT, MAX_CONNECT_TIMEOUT,
            MAX_KEY_PREFIX_LEN, MAX_RETRY_INTERVAL, MAX_TIMEOUT, MIN_TIMEOUT, PURGE_CHANNEL_SUFFIX,
        };
    }
    /// `[server]` and `[downstream]`.
    pub mod server {
        pub use crate::config::settings::{
            DEFAULT_CLIENT_HEADER_TIMEOUT, DEFAULT_GRACEFUL_SHUTDOWN_TIMEOUT, DEFAULT_GRACE_PERIOD,
            DEFAULT_H2_MAX_CONCURRENT_STREAMS, DEFAULT_KEEPALIVE_REQUESTS,
            DEFAULT_KEEPALIVE_TIMEOUT, DEFAULT_MAX_BODY_SIZE, DEFAULT_MAX_CONNECTIONS_PER_PEER,
            DEFAULT_MAX_HEADER_BYTES, DEFAULT_MAX_HEADER_COUNT, DEFAULT_PID_FILE,
            DEFAULT_SEND_TIMEOUT, DEFAULT_UPGRADE_SOCK, DEFAULT_UPSTREAM_KEEPALIVE_POOL_SIZE,
            DEFAULT_WORK_STEALING, FALLBACK_THREADS, H2_MAX_CONCURRENT_STREAMS_RANGE,
            MAX_BODY_SIZE_RANGE, MAX_HEADER_BYTES_RANGE, MAX_HEADER_COUNT_RANGE, MAX_THREADS,
        };
    }
    /// The TLS certificates' reload.
    pub mod tls {
        pub use crate::tls::DEFAULT_RELOAD_INTERVAL;
    }
    /// `[acme]`.
    pub mod acme {
        pub use crate::acme::{
            DEFAULT_FIRST_RETRY, DEFAULT_STATE_DIR, LETSENCRYPT_PRODUCTION, LETSENCRYPT_STAGING,
            MAX_RETRY,
        };
    }
    /// `[upstreams.NAME]` and their health checks.
    pub mod upstream {
        pub use crate::upstream::{
            DEFAULT_CONNECT_TIMEOUT, DEFAULT_HEALTH_CHECK_COUNT, DEFAULT_HEALTH_CHECK_INTERVAL,
            DEFAULT_HEALTH_CHECK_PATH, DEFAULT_HEALTH_CHECK_TIMEOUT, DEFAULT_IDLE_TIMEOUT,
            DEFAULT_READ_TIMEOUT, DEFAULT_WRITE_TIMEOUT, HEALTH_CHECK_COUNT_RANGE,
        };
    }
    /// Durations and sizes in general.
    pub use crate::config::MAX_DURATION;
}

/// Re-exported Pingora crates, at the versions this library is built with (0.9.1).
pub mod pingora {
    pub use pingora_cache as cache;
    pub use pingora_core as core;
    pub use pingora_error as error;
    pub use pingora_http as http;
    pub use pingora_limits as limits;
    pub use pingora_load_balancing as load_balancing;
    pub use pingora_proxy as proxy;
}
