//! # proxy-core: the Galion Edge proxy as a library
//!
//! An edge proxy on [Pingora](https://github.com/cloudflare/pingora) 0.9 (rustls only) that
//! serves several sites from one config: TLS with SNI and certificate reload, routing by host and
//! path to upstream groups with health checks and keepalive pools, port-80 redirects with ACME
//! challenges, security headers, request limits and an access log.
//!
//! ## A request's path through the Pingora phases
//!
//! ```text
//! accept ── TLS handshake ─────────────── tls::SniResolver (certificate by SNI, hot reload)
//!   │
//!   ├─ HTTP/1 head read with deadlines ── front::Front (408 slow header, 431 too large)
//!   │
//!   ├─ request_filter ─────────────────── routing::RouteTable (host → site, prefix → route)
//!   │                                      acme (port 80 challenges), 301 to https, 413 on CL
//!   ├─ request_cache_filter … ─────────── cache (zone choice, key, policy, Vary; storage tiers)
//!   ├─ upstream_peer / fail_to_connect ── upstream::UpstreamGroup (round robin, health, retry)
//!   ├─ upstream_request_filter ────────── headers (X-Forwarded-*, X-Request-Id, hop-by-hop)
//!   ├─ request_body_filter ────────────── 413 on streamed bodies
//!   ├─ response_filter ────────────────── headers::HeaderPolicy (HSTS, CSP, …)
//!   ├─ fail_to_proxy ──────────────────── errors::answer_for (502 / 504 / 4xx)
//!   └─ logging ────────────────────────── access_log::AccessLog
//! ```
//!
//! [`service::GalionProxy`] is the `ProxyHttp` implementation; each hook calls one module.
//! [`server::build_server`] assembles a whole Pingora `Server` from a [`config::Config`].
//!
//! ## Pingora version
//!
//! Types from `pingora-core`, `pingora-proxy`, `pingora-http` and `pingora-load-balancing`
//! 0.9.1 appear in this API; depend on the same versions.

#![deny(missing_docs)]

pub mod access_log;
pub mod acme;
pub mod admin;
pub mod cache;
pub mod client_ip;
pub mod compression;
pub mod config;
pub mod errors;
pub mod front;
pub mod headers;
pub mod ratelimit;
pub mod routing;
pub mod server;
pub mod service;
pub mod tls;
pub mod upstream;

pub use config::{Config, ConfigError, ConfigErrors};
pub use routing::{RouteDecision, RouteTable};
pub use server::{add_to_server, build_server, RunOptions};
pub use service::{GalionProxy, ListenerRole, ProxyState};

/// Re-exported Pingora crates, at the versions this library is built with.
pub mod pingora {
    pub use pingora_cache as cache;
    pub use pingora_core as core;
    pub use pingora_http as http;
    pub use pingora_load_balancing as load_balancing;
    pub use pingora_proxy as proxy;
}
