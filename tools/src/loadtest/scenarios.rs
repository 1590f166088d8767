//! The load-test scenarios: what each one requests, on which transport, and what it shows.
//!
//! Every scenario addresses the sample origins of `configs/local.toml` through the routes of
//! both sites, so the same paths work against the proxy, against nginx with
//! `configs/bench/nginx.conf`, and against an origin directly (which answers every path itself
//! and ignores `Host`). Cacheable objects live under `/api/` (the `api` zone): the sample origin
//! only generates large bodies for paths ending in `/text` or `/bytes`, which have no static
//! file extension, and both zones share the same storage code.

use http::HeaderValue;

/// Chrome's `Accept-Encoding`: the proxy picks brotli for it.
pub const CHROME_AE: &str = "gzip, deflate, br, zstd";

/// How a scenario talks to the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Transport {
    /// Plain HTTP/1.1 with keep-alive (the proxy's `http_proxy` listener, nginx's plain port).
    Http1,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    TlsHttp1,
    /// HTTP/2 over TLS (ALPN `h2`).
    TlsHttp2,
}

impl Transport {
    /// Whether the scenario needs the TLS target URL.
    pub fn is_tls(self) -> bool {
        !matches!(self, Transport::Http1)
    }
}

/// One kind of request in a scenario, with its share of the load.
#[derive(Debug, Clone)]
pub struct RequestSpec {
    /// `Host` (and TLS SNI, and the HTTP/2 `:authority`).
    pub host: &'static str,
    /// Path and query.
    pub path: String,
    /// `Accept-Encoding`, if sent.
    pub accept_encoding: Option<&'static str>,
    /// Relative weight in the mix.
    pub weight: u32,
}

impl RequestSpec {
    fn new(host: &'static str, path: impl Into<String>, ae: Option<&'static str>) -> Self {
        RequestSpec {
            host,
            path: path.into(),
            accept_encoding: ae,
            weight: 1,
        }
    }

    fn weight(mut self, w: u32) -> Self {
        self.weight = w;
        self
    }

    /// The `Accept-Encoding` header value, if any.
    pub fn accept_encoding_value(&self) -> Option<HeaderValue> {
        self.accept_encoding.map(HeaderValue::from_static)
    }
}

/// What a scenario does.
#[derive(Debug, Clone)]
pub enum Workload {
    /// Requests drawn from the specs by weight, each connection closed-loop or at a fixed rate.
    Http {
        /// The requests and their weights.
        requests: Vec<RequestSpec>,
    },
    /// Many idle WebSocket connections through the Socket.IO route: memory per connection.
    IdleWebSockets {
        /// `Host` of the upgrade request.
        host: &'static str,
        /// Path of the upgrade request.
        path: &'static str,
    },
}

/// A named scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The name used on the command line and in reports.
    pub name: &'static str,
    /// One line saying what it measures.
    pub description: &'static str,
    /// How it connects.
    pub transport: Transport,
    /// Whether an origin answered directly makes a meaningful baseline (no TLS, no WebSockets
    /// through a proxy, no compression).
    pub origin_baseline: bool,
    /// What it sends.
    pub workload: Workload,
}

/// The 100 KB JavaScript-like object of the static scenarios (cached, compressible).
pub const STATIC_100K: &str = "/api/static/app/text?n=102400";

/// Every scenario, in the order `all` runs them.
pub fn all() -> Vec<Scenario> {
    let app = "galion.app";
    let http = |name, description, origin_baseline, requests| Scenario {
        name,
        description,
        transport: Transport::Http1,
        origin_baseline,
        workload: Workload::Http { requests },
    };
    let mut mix = Vec::new();
    // A realistic mix, about 75% cache hits (the architecture's 70-80% target): browsers
    // fetching assets (brotli, some gzip), API reads that the cache serves, and personalised
    // API answers (`Cache-Control: private`) that always go to the origin.
    for k in 0..10 {
        let path = format!("/api/static/chunk-{k}/text?n={}", 10_240 * (k + 1));
        mix.push(RequestSpec::new(app, path.clone(), Some(CHROME_AE)).weight(4));
        mix.push(RequestSpec::new(app, path, Some("gzip")).weight(1));
    }
    for k in 0..25 {
        mix.push(
            RequestSpec::new(app, format!("/api/items/{k}?page=1"), Some(CHROME_AE)).weight(1),
        );
    }
    for k in 0..5 {
        mix.push(
            RequestSpec::new(app, format!("/api/me/{k}?cc=private"), Some(CHROME_AE)).weight(5),
        );
    }
    vec![
        http(
            "static-hit",
            "100 KB JavaScript, cache hit, identity",
            true,
            vec![RequestSpec::new(app, STATIC_100K, None)],
        ),
        http(
            "api-hit",
            "about 1 KB of JSON from the API, cache hit",
            true,
            vec![RequestSpec::new(app, "/api/users?page=1", None)],
        ),
        http(
            "api-pass",
            "about 1 KB of JSON, uncacheable (Cache-Control: private): every request to the origin",
            true,
            vec![RequestSpec::new(app, "/api/me?cc=private", None)],
        ),
        http(
            "gzip-hit",
            "100 KB JavaScript, cache hit, Accept-Encoding: gzip",
            false,
            vec![RequestSpec::new(app, STATIC_100K, Some("gzip"))],
        ),
        http(
            "br-hit",
            "100 KB JavaScript, cache hit, Accept-Encoding of Chrome (brotli)",
            false,
            vec![RequestSpec::new(app, STATIC_100K, Some(CHROME_AE))],
        ),
        http(
            "pass-1mb",
            "1 MB binary body, uncached route (/voice/): streamed through",
            true,
            vec![RequestSpec::new(app, "/voice/blob/bytes?n=1048576", None)],
        ),
        Scenario {
            name: "tls-h1",
            description: "about 1 KB of JSON, cache hit, HTTPS with HTTP/1.1 (keep-alive)",
            transport: Transport::TlsHttp1,
            origin_baseline: false,
            workload: Workload::Http {
                requests: vec![RequestSpec::new(app, "/api/users?page=1", None)],
            },
        },
        Scenario {
            name: "tls-h2",
            description: "about 1 KB of JSON, cache hit, HTTPS with HTTP/2",
            transport: Transport::TlsHttp2,
            origin_baseline: false,
            workload: Workload::Http {
                requests: vec![RequestSpec::new(app, "/api/users?page=1", None)],
            },
        },
        http(
            "mix",
            "realistic mix: assets (br/gzip) and API reads from the cache, 25% private API answers",
            true,
            mix,
        ),
        Scenario {
            name: "ws-idle",
            description:
                "idle WebSocket connections through the Socket.IO route: memory per connection",
            transport: Transport::Http1,
            origin_baseline: false,
            workload: Workload::IdleWebSockets {
                host: "galion.studio",
                path: "/socket.io/?EIO=4&transport=websocket",
            },
        },
        Scenario {
            name: "ws-idle-tls",
            description: "idle WebSocket connections through the Socket.IO route over HTTPS \
                          (as Cloudflare connects): memory per connection",
            transport: Transport::TlsHttp1,
            origin_baseline: false,
            workload: Workload::IdleWebSockets {
                host: "galion.studio",
                path: "/socket.io/?EIO=4&transport=websocket",
            },
        },
    ]
}

/// Looks scenarios up by name; `all` means every scenario. Unknown names are an error listing
/// the known ones.
pub fn select(names: &[String]) -> Result<Vec<Scenario>, String> {
    let every = all();
    if names.is_empty() || names.iter().any(|n| n == "all") {
        return Ok(every);
    }
    let mut out = Vec::new();
    for n in names {
        for part in n.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match every.iter().find(|s| s.name == part) {
                Some(s) => out.push(s.clone()),
                None => {
                    return Err(format!(
                        "unknown scenario {part:?}; known: all, {}",
                        every.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                    ))
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_selectable() {
        let every = all();
        for s in &every {
            assert_eq!(every.iter().filter(|t| t.name == s.name).count(), 1);
            assert_eq!(select(&[s.name.to_string()]).map(|v| v.len()), Ok(1));
        }
        assert_eq!(select(&["api-hit,br-hit".into()]).map(|v| v.len()), Ok(2));
        assert!(select(&["nope".into()]).is_err_and(|e| e.contains("static-hit")));
    }

    #[test]
    fn mix_is_three_quarters_cacheable() {
        let mix = all().into_iter().find(|s| s.name == "mix");
        let Some(Scenario {
            workload: Workload::Http { requests },
            ..
        }) = mix
        else {
            panic!("mix is an HTTP scenario");
        };
        let total: u32 = requests.iter().map(|r| r.weight).sum();
        let private: u32 = requests
            .iter()
            .filter(|r| r.path.contains("cc=private"))
            .map(|r| r.weight)
            .sum();
        assert_eq!(total, 100);
        assert_eq!(private, 25);
    }
}
