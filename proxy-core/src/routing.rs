//! Host and path routing, compiled once from the config.
//!
//! [`RouteTable::decide`] takes the request's host (any case, with or without port) and path,
//! and returns the site and route, borrowing both: a request is routed without allocating
//! unless its host has upper-case letters.

use crate::config::Config;
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
    pub fn decide(&self, host: &str, path: &str) -> Result<RouteDecision, RouteError> {
        let site = self.site_for_host(host).ok_or(RouteError::UnknownHost)?;
        self.decide_in_site(site, path)
    }

    /// Routes a path within a known site.
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

/// `"galion.app:443"` to `"galion.app"`; `"[::1]:80"` to `"[::1]"`.
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match host.rfind(':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

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
