//! The admin listener: liveness, cache stats and cache purges. Loopback only unless the config
//! says `allow_remote = true` (nothing here is authenticated).
//!
//! | request | answer |
//! |---|---|
//! | `GET /healthz` | `200 {"status":"ok"}` while the process serves |
//! | `GET /cache/stats` | JSON: per zone, hits by tier, misses, fills, errors, evictions, sizes; compression counts |
//! | `POST /cache/purge?url=https://galion.app/api/x` | every variant of one URL, in every zone |
//! | `POST /cache/purge?prefix=https://galion.app/api/` | every URL under a prefix |
//! | `POST /cache/purge?zone=api` | one zone |
//! | `POST /cache/purge?all=1` | everything |
//!
//! Purges answer `{"purged": N}`. URLs are matched without their scheme, so an entry cached
//! through the https and the plain listener goes alike.

use crate::cache::Caches;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// The admin app, served by Pingora's `HttpServer`.
pub struct Admin {
    caches: Arc<Caches>,
    compression: Arc<crate::service::CompressionStats>,
}

impl Admin {
    /// An admin app over these cache zones.
    pub fn new(caches: Arc<Caches>, compression: Arc<crate::service::CompressionStats>) -> Self {
        Admin {
            caches,
            compression,
        }
    }

    /// Carries out a purge request's query; an error (with the reason) if it names no target.
    pub fn purge(&self, query: &str) -> Result<usize, String> {
        let param = |name: &str| {
            query.split('&').find_map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k == name).then(|| percent_decode(v))
            })
        };
        if let Some(url) = param("url") {
            return Ok(self.each(|z| z.purge_url(&url)));
        }
        if let Some(prefix) = param("prefix") {
            if prefix
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .is_empty()
            {
                return Err(
                    "prefix must name at least a host; use all=1 to purge everything".into(),
                );
            }
            return Ok(self.each(|z| z.purge_prefix(&prefix)));
        }
        if let Some(name) = param("zone") {
            return match self.caches.zone(&name) {
                Some(z) => Ok(z.storage.purge_all()),
                None => Err(format!("no cache zone named {name:?}")),
            };
        }
        if param("all").is_some() {
            return Ok(self.each(|z| z.purge_all()));
        }
        Err("say what to purge: url=, prefix=, zone= or all=1".into())
    }

    fn each(&self, f: impl Fn(&crate::cache::TieredStorage) -> usize) -> usize {
        self.caches.zones.iter().map(|z| f(z.storage)).sum()
    }

    /// The `/cache/stats` document.
    pub fn stats(&self) -> serde_json::Value {
        let mut zones = serde_json::Map::new();
        for z in &self.caches.zones {
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
                "compressed": self.compression.compressed.load(Ordering::Relaxed),
                "decompressed": self.compression.decompressed.load(Ordering::Relaxed),
            },
        })
    }
}

/// Decodes `%XX` escapes and `+` (as a space) in a query value; malformed escapes are kept as
/// they are. Never fails; invalid UTF-8 is replaced.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

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
            (Method::GET | Method::HEAD, "/cache/stats") => answer(StatusCode::OK, self.stats()),
            (m, "/cache/purge") if m == Method::POST || m.as_str() == "PURGE" => {
                match self.purge(&query) {
                    Ok(n) => answer(StatusCode::OK, serde_json::json!({ "purged": n })),
                    Err(e) => answer(StatusCode::BAD_REQUEST, serde_json::json!({ "error": e })),
                }
            }
            (_, "/healthz" | "/cache/stats" | "/cache/purge") => answer(
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
