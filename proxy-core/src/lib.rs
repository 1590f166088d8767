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
//! accept ── TLS handshake ─────────────── tls::SniResolver (certificate by SNI, hot reload)
//!   │
//!   ├─ HTTP/1 head read with deadlines ── front::Front (408 slow header, 431 too large)
//!   │
//!   ├─ new_ctx ────────────────────────── state::ProxyState (the config compiled per site and
//!   │                                      route; swapped whole on reload)
//!   ├─ request_filter ─────────────────── client_ip::ClientIpResolver (who the client is)
//!   │                                      routing::RouteDecider over routing::RouteTable
//!   │                                      (host → site, prefix → route, 421 / 404 / 400,
//!   │                                      errors::Refusal; TRACE 405)
//!   │                                      acme (port 80 challenges), 301 to https, 413 on CL
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
//! Redis (optional) ────────────────────── redis_link::RedisService (pool, breaker, reconnect),
//!                                          purge_bus::PurgeBus (purges to every instance)
//! ```
//!
//! [`service::GalionProxy`] is the `ProxyHttp` implementation; each hook calls one module.
//! [`server::build_server`] assembles a whole Pingora `Server` from a [`config::Config`].
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

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod cache;
pub mod client_ip;
pub mod compression;
pub mod config;
pub mod errors;
mod exposition;
pub mod front;
// Test-only code: the `fuzzing` feature (cargo-fuzz) and proxy-core's unit tests use it.
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
mod host;
pub mod listeners;
pub mod metrics;
pub mod purge_bus;
pub mod ratelimit;
pub mod redis_link;
pub mod reload;
pub mod routing;
pub mod server;
pub mod service;
pub mod state;
pub mod tls;
pub mod upstream;

pub use cache::{DiskEviction, TieredStorage};
pub use client_ip::{ClientIpResolver, TrustedProxies};
pub use compression::{BodyCoder, CompressionPolicy};
pub use config::{Config, ConfigError, ConfigErrors};
pub use headers::{HeaderPolicy, HeaderPolicyBuilder};
pub use metrics::Metrics;
pub use ratelimit::{ConnLimiter, LimitClass, RateLimiter};
pub use routing::{HostPathDecider, RouteDecider, RouteDecision, RouteError, RouteTable};
pub use server::{
    add_to_server, add_to_server_with, build_server, build_server_with, BuildError, ProxyOptions,
    RunOptions,
};
pub use service::{GalionProxy, ListenerRole};
pub use state::{ProxyState, StateError};

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
