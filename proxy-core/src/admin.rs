//! The admin listener: liveness, readiness, metrics, cache stats and cache purges. Loopback
//! only unless the config says `allow_remote = true` (nothing here is authenticated).
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | `200 {"status":"ok"}` while the process serves |
//! | `GET /readyz` | `200 {"status":"ready"}`, or `503` naming what is not ready (see [`Admin::readiness`]) |
//! | `GET /metrics` | Prometheus text exposition 0.0.4 (see [`crate::metrics`]) |
//! | `GET /cache/stats` | JSON: per zone, hits by tier, misses, fills, errors, evictions, sizes; compression counts |
//! | `POST /cache/purge?url=https://galion.app/api/x` | every variant of one URL, in every zone |
//! | `POST /cache/purge?prefix=https://galion.app/api/` | every URL under a prefix |
//! | `POST /cache/purge?zone=api` | one zone |
//! | `POST /cache/purge?all=1` | everything |
//! | `POST /reload` | reloads the config file: `200 {"reloaded":true,"needs_restart":[…]}`, or `400 {"reloaded":false,"errors":[…]}` and the old config keeps serving (see [`crate::reload`]) |
//!
//! Purges answer `{"purged": N}`. URLs are matched without their scheme, so an entry cached
//! through the https and the plain listener goes alike. With a `[redis] purge_channel`, the
//! purge is also published to every other instance and the answer says so:
//! `{"purged": N, "fanout": "published"}`, or `"queued"` while Redis is unreachable (see
//! [`crate::purge_bus`]).

use crate::listeners::unbound;
use crate::purge_bus::Purge;
use crate::reload::Reloader;
use crate::state::ProxyState;
use arc_swap::ArcSwap;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// `[admin] allow_remote`: the admin listener only binds loopback addresses, because nothing
/// on it is authenticated.
pub const DEFAULT_ALLOW_REMOTE: bool = false;

/// The admin app, served by Pingora's `HttpServer`. It reads the proxy's current state at each
/// request, so it follows state swaps.
pub struct Admin {
    state: Arc<ArcSwap<ProxyState>>,
    /// Set once every listener of the config was seen bound (they never unbind while running).
    listeners_bound: AtomicBool,
    reloader: Option<Reloader>,
}

/// What `/readyz` found. Ready when both lists are empty.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Readiness {
    /// Upstream groups none of whose backends is in rotation, in config order.
    pub groups_without_healthy_backend: Vec<String>,
    /// Listener addresses of the config this process does not listen on (yet).
    pub listeners_not_bound: Vec<SocketAddr>,
}

impl Readiness {
    /// Whether the proxy is ready for traffic.
    pub fn is_ready(&self) -> bool {
        self.groups_without_healthy_backend.is_empty() && self.listeners_not_bound.is_empty()
    }
}

impl Admin {
    /// An admin app over the proxy's shared state (what [`crate::add_to_server`] returns).
    pub fn new(state: Arc<ArcSwap<ProxyState>>) -> Self {
        Admin {
            state,
            listeners_bound: AtomicBool::new(false),
            reloader: None,
        }
    }

    /// This app answering `POST /reload` with `reloader` (without one, `/reload` is 404).
    pub fn with_reloader(mut self, reloader: Reloader) -> Self {
        self.reloader = Some(reloader);
        self
    }

    /// The readiness check of `/readyz`:
    ///
    /// - **config loaded**: always true here, since a state exists only for a validated config
    ///   (the process does not start without one);
    /// - **listeners bound**: every address of the config's `[listeners]` and `[admin]` is a
    ///   listening socket of this process. Pingora 0.9.1 binds each service's listeners in that
    ///   service's own runtime, concurrently, when the server starts (and a failed bind panics
    ///   that service's task, not the process), so the admin listener answering proves nothing
    ///   about the others: on Linux this looks at `/proc/self/net/tcp{,6}` and `/proc/self/fd`
    ///   until every address has been seen once. Elsewhere it is assumed;
    /// - **upstreams**: every group has at least one backend in rotation (health check passing,
    ///   or no health check).
    pub fn readiness(&self) -> Readiness {
        let state = self.state.load();
        let groups_without_healthy_backend = state
            .upstreams
            .iter()
            .map(|u| &u.group)
            .filter(|g| !g.settings().backends.iter().any(|b| g.is_healthy(*b)))
            .map(|g| g.name().to_string())
            .collect();
        let listeners_not_bound = if self.listeners_bound.load(Ordering::Relaxed) {
            Vec::new()
        } else {
            let l = &state.config.listeners;
            let all: Vec<SocketAddr> = l
                .https
                .iter()
                .chain(&l.http_proxy)
                .chain(&l.http)
                .chain(&state.config.admin_listen)
                .copied()
                .collect();
            let missing = unbound(&all);
            if missing.is_empty() {
                self.listeners_bound.store(true, Ordering::Relaxed);
            }
            missing
        };
        Readiness {
            groups_without_healthy_backend,
            listeners_not_bound,
        }
    }

    /// Carries out a purge request's query on this instance's zones; an error (with the
    /// reason) if it names no target. (The HTTP handler also publishes it, see
    /// [`crate::purge_bus`].)
    pub fn purge(&self, query: &str) -> Result<usize, String> {
        Purge::from_query(query)?.apply(&self.state.load().caches)
    }

    /// The `/cache/stats` document.
    pub fn stats(&self) -> serde_json::Value {
        let state = self.state.load();
        let mut zones = serde_json::Map::new();
        for z in &state.caches.zones {
            let s = &z.storage.stats;
            let u = z.storage.usage();
            let get = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            zones.insert(
                z.settings.name.clone(),
                serde_json::json!({
                    "memory_hits": get(&s.memory_hits),
                    "disk_hits": get(&s.disk_hits),
                    "misses": get(&s.misses),
                    "fills": get(&s.fills),
                    "fill_errors": get(&s.fill_errors),
                    "corrupt_entries": get(&s.corrupt),
                    "disk_evictions": get(&s.disk_evictions),
                    "memory_evictions": z.storage.memory_evictions(),
                    "disk_bytes": u.disk_bytes,
                    "disk_objects": u.disk_objects,
                    "memory_bytes": u.memory_bytes,
                    "memory_objects": u.memory_objects,
                    "size": z.settings.size,
                    "memory_size": z.settings.memory_size,
                }),
            );
        }
        serde_json::json!({
            "zones": zones,
            "compression": {
                "compressed": state.compression_stats.compressed.load(Ordering::Relaxed),
                "decompressed": state.compression_stats.decompressed.load(Ordering::Relaxed),
            },
        })
    }
}

pub use crate::purge_bus::percent_decode;

fn answer(status: StatusCode, body: serde_json::Value) -> Response<Vec<u8>> {
    let body = body.to_string().into_bytes();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("content-length", body.len())
        .header("cache-control", "no-store")
        .body(body)
        .unwrap_or_else(|_| Response::new(Vec::new()))
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path().to_string();
        let query = req.uri.query().unwrap_or("").to_string();
        let method = req.method.clone();
        match (method, path.as_str()) {
            (Method::GET | Method::HEAD, "/healthz") => {
                answer(StatusCode::OK, serde_json::json!({"status": "ok"}))
            }
            (Method::GET | Method::HEAD, "/readyz") => {
                let r = self.readiness();
                if r.is_ready() {
                    answer(StatusCode::OK, serde_json::json!({"status": "ready"}))
                } else {
                    answer(
                        StatusCode::SERVICE_UNAVAILABLE,
                        serde_json::json!({
                            "status": "not ready",
                            "groups_without_healthy_backend": r.groups_without_healthy_backend,
                            "listeners_not_bound": r
                                .listeners_not_bound
                                .iter()
                                .map(|a| a.to_string())
                                .collect::<Vec<_>>(),
                        }),
                    )
                }
            }
            (Method::GET | Method::HEAD, "/metrics") => {
                let state = self.state.load();
                match state.render_metrics() {
                    Ok(text) => Response::builder()
                        .status(StatusCode::OK)
                        .header("content-type", crate::metrics::CONTENT_TYPE)
                        .header("content-length", text.len())
                        .header("cache-control", "no-store")
                        .body(text.into_bytes())
                        .unwrap_or_else(|_| Response::new(Vec::new())),
                    Err(e) => answer(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({ "error": e.to_string() }),
                    ),
                }
            }
            (Method::GET | Method::HEAD, "/cache/stats") => answer(StatusCode::OK, self.stats()),
            (m, "/cache/purge") if m == Method::POST || m.as_str() == "PURGE" => {
                let state = self.state.load_full();
                match Purge::from_query(&query).and_then(|p| Ok((p.apply(&state.caches)?, p))) {
                    Ok((n, purge)) => {
                        let mut body = serde_json::json!({ "purged": n });
                        if let Some(bus) = &state.purge_bus {
                            body["fanout"] = bus.publish(purge).await.label().into();
                        }
                        answer(StatusCode::OK, body)
                    }
                    Err(e) => answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
                }
            }
            (Method::POST, "/reload") if self.reloader.is_some() => {
                let Some(r) = self.reloader.clone() else {
                    return answer(
                        StatusCode::NOT_FOUND,
                        serde_json::json!({"error": "not found"}),
                    );
                };
                match tokio::task::spawn_blocking(move || r.reload_logged()).await {
                    Ok(Ok(done)) => answer(
                        StatusCode::OK,
                        serde_json::json!({"reloaded": true, "needs_restart": done.needs_restart}),
                    ),
                    Ok(Err(e)) => answer(
                        StatusCode::BAD_REQUEST,
                        serde_json::json!({"reloaded": false, "errors": e.lines()}),
                    ),
                    Err(e) => answer(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        serde_json::json!({"reloaded": false, "errors": [e.to_string()]}),
                    ),
                }
            }
            (_, "/reload") if self.reloader.is_some() => answer(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "method not allowed"}),
            ),
            (_, "/healthz" | "/readyz" | "/metrics" | "/cache/stats" | "/cache/purge") => answer(
                StatusCode::METHOD_NOT_ALLOWED,
                serde_json::json!({"error": "method not allowed"}),
            ),
            _ => answer(
                StatusCode::NOT_FOUND,
                serde_json::json!({"error": "not found"}),
            ),
        }
    }
}
