//! Host and path routing, compiled once from the config.
//!
//! [`RouteTable::decide`] takes the request's host (any case, with or without port) and path,
//! and returns the site and route, borrowing both: a request is routed without allocating
//! unless its host has upper-case letters.
//!
//! [`RouteDecider`] is the one extension point of the provided service
//! ([`GalionProxy`](crate::service::GalionProxy)): it decides each proxied request's site, route
//! and upstream group. [`HostPathDecider`], the default, is [`RouteTable::decide`] on the
//! request's host and path.

use crate::config::Config;
use pingora_http::RequestHeader;
use std::collections::HashMap;

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision {
    /// Index into [`Config::sites`].
    pub site: usize,
    /// Index into that site's routes.
    pub route: usize,
    /// Index into [`Config::upstreams`].
    pub upstream: usize,
}

/// Why a request could not be routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteError {
    /// No site has this host: refuse (421), never proxy.
    UnknownHost,
    /// The site has no route for this path (404).
    NoRoute {
        /// The site that matched the host.
        site: usize,
    },
}

#[derive(Debug, Clone)]
struct CompiledRoute {
    prefix: Box<str>,
    route: usize,
    upstream: usize,
}

/// Sites by host, and each site's routes by descending prefix length.
///
/// Built once from a validated [`Config`] with [`RouteTable::new`]; immutable afterwards (a
/// reload builds a new table). Every lookup borrows its input and never fails or panics.
///
/// ```
/// use proxy_core::{Config, RouteTable};
/// use proxy_core::routing::RouteError;
///
/// let config = Config::from_toml_str(
///     r#"
///     [listeners]
///     http_proxy = ["127.0.0.1:8080"]
///
///     [upstreams.api]
///     backends = ["127.0.0.1:8001"]
///     [upstreams.web]
///     backends = ["127.0.0.1:3001"]
///
///     [[sites]]
///     hosts = ["galion.app", "www.galion.app"]
///     routes = [
///       { path = "/api/", upstream = "api" },
///       { path = "/", upstream = "web" },
///     ]
///     "#,
///     std::path::Path::new("."),
/// )
/// .expect("a valid config");
/// let table = RouteTable::new(&config);
///
/// // The longest matching prefix wins; the host is matched without case or port.
/// let d = table.decide("WWW.Galion.App:443", "/api/users?page=2").unwrap();
/// assert_eq!(config.sites[d.site].routes[d.route].prefix, "/api/");
/// assert_eq!(config.upstreams[d.upstream].name, "api");
/// assert_eq!(config.upstreams[table.decide("galion.app", "/apixyz").unwrap().upstream].name, "web");
///
/// // Any other host is refused (the service answers 421).
/// assert_eq!(table.decide("evil.example", "/"), Err(RouteError::UnknownHost));
/// ```
#[derive(Debug, Clone)]
pub struct RouteTable {
    hosts: HashMap<Box<str>, usize>,
    sites: Vec<Vec<CompiledRoute>>,
}

impl RouteTable {
    /// Compiles the routing part of a validated config.
    pub fn new(config: &Config) -> RouteTable {
        let mut hosts = HashMap::new();
        let mut sites = Vec::with_capacity(config.sites.len());
        for (i, site) in config.sites.iter().enumerate() {
            for h in &site.hosts {
                hosts.entry(h.as_str().into()).or_insert(i);
            }
            let mut routes: Vec<CompiledRoute> = site
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| CompiledRoute {
                    prefix: r.prefix.as_str().into(),
                    route: j,
                    upstream: r.upstream,
                })
                .collect();
            // Longest prefix first; file order breaks no ties because prefixes are unique.
            routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
            sites.push(routes);
        }
        RouteTable { hosts, sites }
    }

    /// The site serving `host` (`Host` header or `:authority`, any case, port allowed).
    pub fn site_for_host(&self, host: &str) -> Option<usize> {
        let name = strip_port(host);
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.bytes().any(|b| b.is_ascii_uppercase()) {
            self.hosts.get(name.to_ascii_lowercase().as_str()).copied()
        } else {
            self.hosts.get(name).copied()
        }
    }

    /// Routes a request: the host picks the site, the longest matching prefix the route.
    /// Fails with [`RouteError::UnknownHost`] when no site has the host, and with
    /// [`RouteError::NoRoute`] when the site has no prefix of `path`. The path is not checked
    /// here: call [`path_is_clean`] first, as the service does.
    pub fn decide(&self, host: &str, path: &str) -> Result<RouteDecision, RouteError> {
        let site = self.site_for_host(host).ok_or(RouteError::UnknownHost)?;
        self.decide_in_site(site, path)
    }

    /// Routes a path within a known site (an index into [`Config::sites`]); an index out of
    /// range gives [`RouteError::UnknownHost`].
    pub fn decide_in_site(&self, site: usize, path: &str) -> Result<RouteDecision, RouteError> {
        let routes = self.sites.get(site).ok_or(RouteError::UnknownHost)?;
        routes
            .iter()
            .find(|r| path.starts_with(&*r.prefix))
            .map(|r| RouteDecision {
                site,
                route: r.route,
                upstream: r.upstream,
            })
            .ok_or(RouteError::NoRoute { site })
    }
}

/// Decides where the provided service sends a request: the extension point of
/// [`GalionProxy`](crate::service::GalionProxy).
///
/// Install one with [`GalionProxy::with_decider`](crate::service::GalionProxy::with_decider) or
/// [`ProxyOptions`](crate::server::ProxyOptions) (for [`add_to_server_with`] and
/// [`build_server_with`]); the default is [`HostPathDecider`]. A closure with the same
/// signature as [`RouteDecider::decide`] is a decider too.
///
/// # Contract
///
/// The service calls [`decide`](RouteDecider::decide) once per request on the `https` and
/// plain-proxy listeners, in `request_filter`, after it has found the request's host (a request
/// without one gets 400 first) and before anything else is checked. The port-80 redirect
/// listener does not call it: it only looks the host up in the table. The answer means:
///
/// - `Ok(RouteDecision { site, route, upstream })`: the request is proxied to the group
///   `upstream` (any group of the config, not necessarily the route's own), with the site's
///   security headers and the route's body limit, cache use and rate-limit class. The indexes
///   are those of the `config` passed in; a decision naming a site, route or group that does not
///   exist is answered with 500 (and logged), never a panic.
/// - `Err(RouteError::UnknownHost)`: 421, never proxied.
/// - `Err(RouteError::NoRoute { site })`: 404, with that site's security headers.
///
/// Whatever is decided, a path with `.`/`..` segments (see [`path_is_clean`]) is then refused
/// with 400, unless the answer was `UnknownHost`; deciders need not check paths.
///
/// The cache key is the scheme, host and path with query: if the decision depends on anything
/// else (a header, a cookie), send such requests to routes without a cache zone, or different
/// clients may be served each other's responses.
///
/// The decider runs on every request: it should neither block nor allocate. It is shared by
/// every worker thread, hence `Send + Sync`.
///
/// # Example
///
/// Route by an `X-Tenant` header to the group `tenant_<name>`, keeping the route the host and
/// path chose:
///
/// ```
/// use proxy_core::config::Config;
/// use proxy_core::pingora::http::RequestHeader;
/// use proxy_core::routing::{RouteDecider, RouteDecision, RouteError, RouteTable};
///
/// struct ByTenant;
///
/// impl RouteDecider for ByTenant {
///     fn decide(
///         &self,
///         req: &RequestHeader,
///         host: &str,
///         table: &RouteTable,
///         config: &Config,
///     ) -> Result<RouteDecision, RouteError> {
///         let decision = table.decide(host, req.uri.path())?;
///         let Some(tenant) = req.headers.get("x-tenant").and_then(|v| v.to_str().ok()) else {
///             return Ok(decision);
///         };
///         let group = config
///             .upstreams
///             .iter()
///             .position(|u| u.name.strip_prefix("tenant_") == Some(tenant))
///             .ok_or(RouteError::NoRoute { site: decision.site })?;
///         Ok(RouteDecision { upstream: group, ..decision })
///     }
/// }
/// # let config = Config::from_toml_str(r#"
/// #   [listeners]
/// #   http_proxy = ["127.0.0.1:8080"]
/// #   [upstreams.shared]
/// #   backends = ["127.0.0.1:3001"]
/// #   [upstreams.tenant_a]
/// #   backends = ["127.0.0.1:3002"]
/// #   [[sites]]
/// #   hosts = ["app.test"]
/// #   routes = [{ path = "/", upstream = "shared" }]
/// # "#, std::path::Path::new(".")).unwrap();
/// # let table = RouteTable::new(&config);
/// # let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
/// # req.insert_header("x-tenant", "a").unwrap();
/// # let d = ByTenant.decide(&req, "app.test", &table, &config).unwrap();
/// # assert_eq!(config.upstreams[d.upstream].name, "tenant_a");
/// # req.insert_header("x-tenant", "zzz").unwrap();
/// # assert_eq!(ByTenant.decide(&req, "app.test", &table, &config), Err(RouteError::NoRoute { site: 0 }));
/// ```
///
/// [`add_to_server_with`]: crate::server::add_to_server_with
/// [`build_server_with`]: crate::server::build_server_with
pub trait RouteDecider: Send + Sync {
    /// Routes one request. `host` is the request's host as sent (absolute-form or `:authority`
    /// host, else `Host`; any case, maybe with a port), `table` and `config` are the proxy's
    /// current ones (they change together when the state is swapped).
    fn decide(
        &self,
        req: &RequestHeader,
        host: &str,
        table: &RouteTable,
        config: &Config,
    ) -> Result<RouteDecision, RouteError>;
}

/// The default [`RouteDecider`]: the host picks the site, the longest matching path prefix the
/// route, and the route's own group is the upstream ([`RouteTable::decide`] on the host and
/// the URI path). Allocation-free unless the host has upper-case letters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostPathDecider;

impl RouteDecider for HostPathDecider {
    #[inline]
    fn decide(
        &self,
        req: &RequestHeader,
        host: &str,
        table: &RouteTable,
        _config: &Config,
    ) -> Result<RouteDecision, RouteError> {
        table.decide(host, req.uri.path())
    }
}

impl<F> RouteDecider for F
where
    F: Fn(&RequestHeader, &str, &RouteTable, &Config) -> Result<RouteDecision, RouteError>
        + Send
        + Sync,
{
    fn decide(
        &self,
        req: &RequestHeader,
        host: &str,
        table: &RouteTable,
        config: &Config,
    ) -> Result<RouteDecision, RouteError> {
        self(req, host, table, config)
    }
}

pub use crate::host::strip_port;

/// Whether a request path is safe to route by prefix: no `.` or `..` segments, plain or
/// percent-encoded, and no encoded `/`. Such paths could match one route here and mean another
/// path to the upstream after it normalises them (`/voice/../api/`).
pub fn path_is_clean(path: &str) -> bool {
    if !path.starts_with('/') {
        return false;
    }
    if !path.bytes().any(|b| b == b'.' || b == b'%' || b == b'\\') {
        return true;
    }
    if path.contains('\\') {
        return false;
    }
    path.split('/').all(|seg| {
        let lower = seg.to_ascii_lowercase();
        if lower.contains("%2f") || lower.contains("%5c") {
            return false;
        }
        let decoded = lower.replace("%2e", ".");
        decoded != "." && decoded != ".."
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_stripped() {
        assert_eq!(strip_port("galion.app:443"), "galion.app");
        assert_eq!(strip_port("galion.app"), "galion.app");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("a:b"), "a:b");
    }

    fn two_groups() -> Config {
        Config::from_toml_str(
            r#"
            [listeners]
            http_proxy = ["127.0.0.1:8080"]
            [upstreams.api]
            backends = ["127.0.0.1:8001"]
            [upstreams.web]
            backends = ["127.0.0.1:3001"]
            [[sites]]
            hosts = ["galion.app"]
            routes = [{ path = "/api/", upstream = "api" }, { path = "/", upstream = "web" }]
            "#,
            std::path::Path::new("."),
        )
        .unwrap()
    }

    #[test]
    fn default_decider_is_the_table() {
        let config = two_groups();
        let table = RouteTable::new(&config);
        for (host, target) in [
            ("galion.app", "/api/x?y=1"),
            ("Galion.App:443", "/"),
            ("evil.example", "/api/"),
        ] {
            let req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
            assert_eq!(
                HostPathDecider.decide(&req, host, &table, &config),
                table.decide(host, req.uri.path()),
                "{host}{target}"
            );
        }
    }

    #[test]
    fn closures_are_deciders() {
        let config = two_groups();
        let table = RouteTable::new(&config);
        // Everything on a known host goes to `api`, whatever the path.
        let all_to_api = |req: &RequestHeader, host: &str, t: &RouteTable, c: &Config| {
            let d = t.decide(host, req.uri.path())?;
            let api = c.upstreams.iter().position(|u| u.name == "api").unwrap();
            Ok(RouteDecision { upstream: api, ..d })
        };
        let decider: std::sync::Arc<dyn RouteDecider> = std::sync::Arc::new(all_to_api);
        let req = RequestHeader::build("GET", b"/page", None).unwrap();
        let d = decider.decide(&req, "galion.app", &table, &config).unwrap();
        assert_eq!(config.upstreams[d.upstream].name, "api");
        assert_eq!(config.sites[0].routes[d.route].prefix, "/");
        assert_eq!(
            decider.decide(&req, "evil.example", &table, &config),
            Err(RouteError::UnknownHost)
        );
    }

    #[test]
    fn dot_segments_are_refused() {
        assert!(path_is_clean("/api/v1/users"));
        assert!(path_is_clean("/static/app.3f2a.js"));
        assert!(path_is_clean("/"));
        assert!(!path_is_clean("/voice/../api/x"));
        assert!(!path_is_clean("/voice/%2e%2E/api/x"));
        assert!(!path_is_clean("/voice/.%2e/api"));
        assert!(!path_is_clean("/a/./b"));
        assert!(!path_is_clean("/a%2fb"));
        assert!(!path_is_clean("/a\\..\\b"));
        assert!(!path_is_clean("api"));
    }
}
