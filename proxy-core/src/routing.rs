//! Host and path routing, compiled once.
//!
//! [`RouteTable`] is built from its own small builder (sites with their hosts and routes, and
//! the upstream group names routes point at), or from a validated config with
//! `Config::route_table`. [`RouteTable::decide`] takes the request's host (any case, with or
//! without port) and path, and returns the site and route, borrowing both: a request is routed
//! without allocating unless its host has upper-case letters.
//!
//! [`RouteDecider`] is the one extension point of the provided service
//! ([`GalionProxy`](crate::service::GalionProxy)): it decides each proxied request's site, route
//! and upstream group. [`HostPathDecider`], the default, is [`RouteTable::decide`] on the
//! request's host and path.

use pingora_http::RequestHeader;
use std::collections::HashMap;

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteDecision {
    /// The site, numbered in the order sites were added (the config's order).
    pub site: usize,
    /// The route within that site, numbered in the order it was added.
    pub route: usize,
    /// The upstream group, numbered in the order groups were named
    /// ([`RouteTable::upstreams`]).
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

#[derive(Debug, Clone)]
struct CompiledSite {
    name: Box<str>,
    /// By descending prefix length.
    routes: Vec<CompiledRoute>,
}

/// Sites by host, and each site's routes by descending prefix length.
///
/// Built once with [`RouteTable::builder`] (or `Config::route_table`); immutable afterwards (a
/// reload builds a new table). Every lookup borrows its input and never fails or panics.
///
/// ```
/// use proxy_core::{RouteError, RouteTable};
///
/// let table = RouteTable::builder()
///     .upstreams(["api", "web"])
///     .site("app", ["galion.app", "www.galion.app"])
///     .route("/api/", "api")
///     .route("/", "web")
///     .build()
///     .expect("a valid table");
///
/// // The longest matching prefix wins; the host is matched without case or port.
/// let d = table.decide("WWW.Galion.App:443", "/api/users?page=2").unwrap();
/// assert_eq!(table.route_prefix(d.site, d.route), Some("/api/"));
/// assert_eq!(table.upstreams()[d.upstream].as_ref(), "api");
/// let d = table.decide("galion.app", "/apixyz").unwrap();
/// assert_eq!(table.upstreams()[d.upstream].as_ref(), "web");
///
/// // Any other host is refused (the service answers 421).
/// assert_eq!(table.decide("evil.example", "/"), Err(RouteError::UnknownHost));
/// ```
#[derive(Debug, Clone)]
pub struct RouteTable {
    hosts: HashMap<Box<str>, usize>,
    sites: Vec<CompiledSite>,
    upstreams: Vec<Box<str>>,
}

/// Why [`RouteTableBuilder::build`] refused a table.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteTableError {
    /// A route was added before any site.
    #[error("route {prefix:?} added before any site")]
    RouteWithoutSite {
        /// The route's prefix.
        prefix: String,
    },
    /// A route names a group that was not declared with `upstreams`.
    #[error("site {site:?}, route {prefix:?}: no upstream group named {upstream:?}")]
    UnknownUpstream {
        /// The site's name.
        site: String,
        /// The route's prefix.
        prefix: String,
        /// The name it gave.
        upstream: String,
    },
    /// A prefix does not start with `/`, or a site has it twice.
    #[error("site {site:?}: route prefix {prefix:?} must start with '/' and appear once per site")]
    BadPrefix {
        /// The site's name.
        site: String,
        /// The prefix.
        prefix: String,
    },
    /// Two sites claim one host (hosts are matched without case).
    #[error("host {host:?} belongs to two sites")]
    DuplicateHost {
        /// The host.
        host: String,
    },
}

/// Builds a [`RouteTable`]: name the upstream groups, then add sites, each followed by its
/// routes. See [`RouteTable`] for an example.
#[derive(Debug, Default)]
pub struct RouteTableBuilder {
    upstreams: Vec<Box<str>>,
    sites: Vec<SiteSpec>,
    early: Option<String>,
}

/// A site as added to a [`RouteTableBuilder`]: name, hosts, routes (prefix, group).
#[derive(Debug)]
struct SiteSpec {
    name: String,
    hosts: Vec<String>,
    routes: Vec<(String, Target)>,
}

#[derive(Debug)]
enum Target {
    Name(String),
    Index(usize),
}

impl RouteTableBuilder {
    /// Names upstream groups; a group's number in a [`RouteDecision`] is its position over all
    /// calls.
    pub fn upstreams<I, S>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.upstreams
            .extend(names.into_iter().map(|n| n.into().into_boxed_str()));
        self
    }

    /// Adds a site serving `hosts` (exact names, any case; no port). The routes added next
    /// belong to it.
    pub fn site<I, S>(mut self, name: impl Into<String>, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let hosts = hosts
            .into_iter()
            .map(|h| h.into().to_ascii_lowercase())
            .collect();
        self.sites.push(SiteSpec {
            name: name.into(),
            hosts,
            routes: Vec::new(),
        });
        self
    }

    /// Adds a route to the last site: requests whose path starts with `prefix` go to the group
    /// named `upstream`.
    pub fn route(self, prefix: impl Into<String>, upstream: impl Into<String>) -> Self {
        self.push(prefix.into(), Target::Name(upstream.into()))
    }

    /// [`RouteTableBuilder::route`] to a group by its number (for a validated config).
    pub(crate) fn route_to(self, prefix: impl Into<String>, upstream: usize) -> Self {
        self.push(prefix.into(), Target::Index(upstream))
    }

    fn push(mut self, prefix: String, target: Target) -> Self {
        match self.sites.last_mut() {
            Some(site) => site.routes.push((prefix, target)),
            None => {
                self.early.get_or_insert(prefix);
            }
        }
        self
    }

    /// The table, or the first problem found.
    pub fn build(self) -> Result<RouteTable, RouteTableError> {
        if let Some(prefix) = self.early {
            return Err(RouteTableError::RouteWithoutSite { prefix });
        }
        let mut hosts = HashMap::new();
        let mut sites = Vec::with_capacity(self.sites.len());
        for (i, spec) in self.sites.into_iter().enumerate() {
            let SiteSpec {
                name,
                hosts: site_hosts,
                routes,
            } = spec;
            for h in site_hosts {
                if hosts
                    .insert(h.clone().into_boxed_str(), i)
                    .is_some_and(|prev| prev != i)
                {
                    return Err(RouteTableError::DuplicateHost { host: h });
                }
            }
            let mut compiled: Vec<CompiledRoute> = Vec::with_capacity(routes.len());
            for (j, (prefix, target)) in routes.into_iter().enumerate() {
                if !prefix.starts_with('/') || compiled.iter().any(|r| *r.prefix == *prefix) {
                    return Err(RouteTableError::BadPrefix { site: name, prefix });
                }
                let upstream = match &target {
                    Target::Name(n) => self.upstreams.iter().position(|u| **u == **n),
                    Target::Index(i) => (*i < self.upstreams.len()).then_some(*i),
                };
                let Some(upstream) = upstream else {
                    return Err(RouteTableError::UnknownUpstream {
                        site: name,
                        prefix,
                        upstream: match target {
                            Target::Name(n) => n,
                            Target::Index(i) => format!("#{i}"),
                        },
                    });
                };
                compiled.push(CompiledRoute {
                    prefix: prefix.into_boxed_str(),
                    route: j,
                    upstream,
                });
            }
            // Longest prefix first; no ties: prefixes are unique within a site.
            compiled.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
            sites.push(CompiledSite {
                name: name.into_boxed_str(),
                routes: compiled,
            });
        }
        Ok(RouteTable {
            hosts,
            sites,
            upstreams: self.upstreams,
        })
    }
}

impl RouteTable {
    /// An empty builder.
    pub fn builder() -> RouteTableBuilder {
        RouteTableBuilder::default()
    }

    /// The upstream group names, in the numbering decisions use.
    pub fn upstreams(&self) -> &[Box<str>] {
        &self.upstreams
    }

    /// A site's name.
    pub fn site_name(&self, site: usize) -> Option<&str> {
        self.sites.get(site).map(|s| &*s.name)
    }

    /// A route's prefix.
    pub fn route_prefix(&self, site: usize, route: usize) -> Option<&str> {
        let routes = &self.sites.get(site)?.routes;
        routes.iter().find(|r| r.route == route).map(|r| &*r.prefix)
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
    /// here: call `path_is_clean` first, as the service does.
    pub fn decide(&self, host: &str, path: &str) -> Result<RouteDecision, RouteError> {
        let site = self.site_for_host(host).ok_or(RouteError::UnknownHost)?;
        self.decide_in_site(site, path)
    }

    /// Routes a path within a known site (by its number); a number out of range gives
    /// [`RouteError::UnknownHost`].
    pub fn decide_in_site(&self, site: usize, path: &str) -> Result<RouteDecision, RouteError> {
        let site_routes = self.sites.get(site).ok_or(RouteError::UnknownHost)?;
        site_routes
            .routes
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
///   security headers and the route's body limit, cache use and rate-limit class. The numbers
///   are those of the `table` passed in (the config's order; [`RouteTable::upstreams`] names
///   the groups); a decision naming a site, route or group that does not exist is answered
///   with 500 (and logged), never a panic.
/// - `Err(RouteError::UnknownHost)`: 421, never proxied.
/// - `Err(RouteError::NoRoute { site })`: 404, with that site's security headers.
///
/// Whatever is decided, a path with `.`/`..` segments (see `path_is_clean`) is then refused
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
/// use proxy_core::pingora::http::RequestHeader;
/// use proxy_core::{RouteDecider, RouteDecision, RouteError, RouteTable};
///
/// struct ByTenant;
///
/// impl RouteDecider for ByTenant {
///     fn decide(
///         &self,
///         req: &RequestHeader,
///         host: &str,
///         table: &RouteTable,
///     ) -> Result<RouteDecision, RouteError> {
///         let decision = table.decide(host, req.uri.path())?;
///         let Some(tenant) = req.headers.get("x-tenant").and_then(|v| v.to_str().ok()) else {
///             return Ok(decision);
///         };
///         let group = table
///             .upstreams()
///             .iter()
///             .position(|u| u.strip_prefix("tenant_") == Some(tenant))
///             .ok_or(RouteError::NoRoute { site: decision.site })?;
///         Ok(RouteDecision { upstream: group, ..decision })
///     }
/// }
/// # let table = RouteTable::builder()
/// #     .upstreams(["shared", "tenant_a"])
/// #     .site("app", ["app.test"])
/// #     .route("/", "shared")
/// #     .build()
/// #     .unwrap();
/// # let mut req = RequestHeader::build("GET", b"/x", None).unwrap();
/// # req.insert_header("x-tenant", "a").unwrap();
/// # let d = ByTenant.decide(&req, "app.test", &table).unwrap();
/// # assert_eq!(table.upstreams()[d.upstream].as_ref(), "tenant_a");
/// # req.insert_header("x-tenant", "zzz").unwrap();
/// # assert_eq!(ByTenant.decide(&req, "app.test", &table), Err(RouteError::NoRoute { site: 0 }));
/// ```
///
/// [`add_to_server_with`]: crate::server::add_to_server_with
/// [`build_server_with`]: crate::server::build_server_with
pub trait RouteDecider: Send + Sync {
    /// Routes one request. `host` is the request's host as sent (absolute-form or `:authority`
    /// host, else `Host`; any case, maybe with a port), `table` the proxy's current one (it
    /// changes when the state is swapped by a reload).
    fn decide(
        &self,
        req: &RequestHeader,
        host: &str,
        table: &RouteTable,
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
    ) -> Result<RouteDecision, RouteError> {
        table.decide(host, req.uri.path())
    }
}

impl<F> RouteDecider for F
where
    F: Fn(&RequestHeader, &str, &RouteTable) -> Result<RouteDecision, RouteError> + Send + Sync,
{
    fn decide(
        &self,
        req: &RequestHeader,
        host: &str,
        table: &RouteTable,
    ) -> Result<RouteDecision, RouteError> {
        self(req, host, table)
    }
}

pub(crate) use crate::host::strip_port;

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

    fn two_groups() -> RouteTable {
        RouteTable::builder()
            .upstreams(["api", "web"])
            .site("app", ["galion.app"])
            .route("/api/", "api")
            .route("/", "web")
            .build()
            .unwrap()
    }

    #[test]
    fn default_decider_is_the_table() {
        let table = two_groups();
        for (host, target) in [
            ("galion.app", "/api/x?y=1"),
            ("Galion.App:443", "/"),
            ("evil.example", "/api/"),
        ] {
            let req = RequestHeader::build("GET", target.as_bytes(), None).unwrap();
            assert_eq!(
                HostPathDecider.decide(&req, host, &table),
                table.decide(host, req.uri.path()),
                "{host}{target}"
            );
        }
    }

    #[test]
    fn closures_are_deciders() {
        let table = two_groups();
        // Everything on a known host goes to `api`, whatever the path.
        let all_to_api = |req: &RequestHeader, host: &str, t: &RouteTable| {
            let d = t.decide(host, req.uri.path())?;
            let api = t.upstreams().iter().position(|u| &**u == "api").unwrap();
            Ok(RouteDecision { upstream: api, ..d })
        };
        let decider: std::sync::Arc<dyn RouteDecider> = std::sync::Arc::new(all_to_api);
        let req = RequestHeader::build("GET", b"/page", None).unwrap();
        let d = decider.decide(&req, "galion.app", &table).unwrap();
        assert_eq!(&*table.upstreams()[d.upstream], "api");
        assert_eq!(table.route_prefix(d.site, d.route), Some("/"));
        assert_eq!(
            decider.decide(&req, "evil.example", &table),
            Err(RouteError::UnknownHost)
        );
    }

    #[test]
    fn the_builder_refuses_what_cannot_be_routed() {
        let base = || RouteTable::builder().upstreams(["api"]);
        assert_eq!(
            base().route("/", "api").build().unwrap_err(),
            RouteTableError::RouteWithoutSite { prefix: "/".into() }
        );
        assert!(matches!(
            base().site("a", ["a.test"]).route("/", "nope").build(),
            Err(RouteTableError::UnknownUpstream { .. })
        ));
        assert!(matches!(
            base().site("a", ["a.test"]).route("api/", "api").build(),
            Err(RouteTableError::BadPrefix { .. })
        ));
        assert!(matches!(
            base()
                .site("a", ["a.test"])
                .route("/", "api")
                .route("/", "api")
                .build(),
            Err(RouteTableError::BadPrefix { .. })
        ));
        assert_eq!(
            base()
                .site("a", ["A.test"])
                .site("b", ["a.TEST"])
                .build()
                .unwrap_err(),
            RouteTableError::DuplicateHost {
                host: "a.test".into()
            }
        );
        // Route numbers follow the order routes were added, whatever their lengths.
        let t = base()
            .site("a", ["a.test", "a.test"])
            .route("/", "api")
            .route("/x/", "api")
            .build()
            .unwrap();
        assert_eq!(t.decide("a.test", "/x/1").unwrap().route, 1);
        assert_eq!(t.decide("a.test", "/y").unwrap().route, 0);
        assert_eq!(t.site_name(0), Some("a"));
        assert_eq!(t.route_prefix(0, 1), Some("/x/"));
        assert_eq!(t.route_prefix(0, 2), None);
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
