//! `[[sites]]`: host names (each claimed by one site), the certificate, headers and routes.

use super::Validator;
use crate::config::{
    valid_hostname, CacheSettings, DownstreamSettings, LimitsSettings, ListenerSettings,
    RawHeaders, RawRoute, RawSite, RouteSettings, SiteSettings, UpstreamSettings,
};
use std::collections::{BTreeSet, HashMap};

/// What a site's checks read from the sections validated before it: the names its routes may
/// refer to and the values they inherit.
pub(super) struct SiteContext<'a> {
    /// `[headers]`, under a site's own headers.
    pub(super) default_headers: &'a RawHeaders,
    /// The groups a route may send to.
    pub(super) upstreams: &'a [UpstreamSettings],
    /// The body limit a route inherits.
    pub(super) downstream: &'a DownstreamSettings,
    /// With an https listener, every site needs a certificate.
    pub(super) listeners: &'a ListenerSettings,
    /// The zones a route may cache in.
    pub(super) cache: &'a CacheSettings,
    /// The classes a route may be limited by.
    pub(super) limits: &'a LimitsSettings,
}

impl Validator {
    /// Every site in file order; a host name belongs to the first site that claims it.
    pub(super) fn sites(&mut self, raw: &[RawSite], ctx: &SiteContext<'_>) -> Vec<SiteSettings> {
        let mut sites = Vec::new();
        let mut host_owner: HashMap<String, usize> = HashMap::new();
        for (i, s) in raw.iter().enumerate() {
            let site = self.site(i, s, ctx);
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
        if raw.is_empty() {
            self.err(
                "sites",
                "",
                "no site: add a [[sites]] table with hosts and routes",
            );
        }
        sites
    }

    /// `sites[i]`.
    fn site(&mut self, i: usize, raw: &RawSite, ctx: &SiteContext<'_>) -> SiteSettings {
        let field = format!("sites[{i}]");
        let name = raw
            .name
            .clone()
            .or_else(|| raw.hosts.first().cloned())
            .unwrap_or_else(|| format!("site{i}"));
        let hosts = self.site_hosts(&field, &raw.hosts);
        let tls = self.site_tls(&field, raw.tls.as_ref(), &hosts, ctx.listeners);
        let headers = self.headers(
            &format!("{field}.headers"),
            &raw.headers,
            ctx.default_headers,
        );
        let routes = self.routes(&field, &raw.routes, ctx);
        SiteSettings {
            name,
            hosts,
            tls,
            headers,
            routes,
        }
    }

    /// A site's host names, lower-cased: at least one, each a valid name, none twice.
    fn site_hosts(&mut self, field: &str, raw: &[String]) -> Vec<String> {
        if raw.is_empty() {
            self.err(
                format!("{field}.hosts"),
                "[]",
                "a site needs at least one host name, such as [\"galion.app\"]",
            );
        }
        let mut hosts = Vec::new();
        for (j, h) in raw.iter().enumerate() {
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
        hosts
    }

    /// A site's routes: at least one, prefixes distinct. A route with a bad path or upstream is
    /// left out (the config is refused anyway).
    fn routes(
        &mut self,
        field: &str,
        raw: &[RawRoute],
        ctx: &SiteContext<'_>,
    ) -> Vec<RouteSettings> {
        let mut routes = Vec::new();
        let mut prefixes = BTreeSet::new();
        if raw.is_empty() {
            self.err(
                format!("{field}.routes"),
                "[]",
                "a site needs at least one route, such as { path = \"/\", upstream = \"frontend\" }",
            );
        }
        for (j, r) in raw.iter().enumerate() {
            let rfield = format!("{field}.routes[{j}]");
            if let Some(route) = self.route(&rfield, r, &mut prefixes, ctx) {
                routes.push(route);
            }
        }
        routes
    }

    /// `sites[i].routes[j]`; `prefixes` holds the site's prefixes so far.
    fn route(
        &mut self,
        rfield: &str,
        r: &RawRoute,
        prefixes: &mut BTreeSet<String>,
        ctx: &SiteContext<'_>,
    ) -> Option<RouteSettings> {
        // Every field of a route is checked even when an earlier one is bad.
        let prefix = self.route_prefix(rfield, r.path.as_deref(), prefixes);
        let upstream = self.route_upstream(rfield, r.upstream.as_deref(), ctx.upstreams);
        let max_body_size = self.size(
            &format!("{rfield}.max_body_size"),
            &r.max_body_size,
            ctx.downstream.max_body_size,
            crate::config::settings::MAX_BODY_SIZE_RANGE,
        );
        // Only set when written; the fallback of a refused value does not matter (the config
        // is refused), the group's default is the natural one.
        let read_timeout = r.read_timeout.as_ref().map(|_| {
            self.duration(
                &format!("{rfield}.read_timeout"),
                &r.read_timeout,
                crate::upstream::DEFAULT_READ_TIMEOUT,
            )
        });
        let cache = self.route_cache(rfield, r, ctx.cache);
        let limit = self.route_limit(rfield, r, ctx.limits);
        Some(RouteSettings {
            prefix: prefix?,
            upstream: upstream?,
            max_body_size,
            read_timeout,
            cache,
            limit,
        })
    }

    /// A route's `path`: a prefix starting with `/`, not used by another route of the site.
    fn route_prefix(
        &mut self,
        rfield: &str,
        path: Option<&str>,
        prefixes: &mut BTreeSet<String>,
    ) -> Option<String> {
        match path {
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
                if !prefixes.insert(p.to_string()) {
                    self.err(
                        format!("{rfield}.path"),
                        format!("{p:?}"),
                        "another route of this site has the same prefix",
                    );
                }
                Some(p.to_string())
            }
        }
    }

    /// A route's `upstream`: the index of a defined group.
    fn route_upstream(
        &mut self,
        rfield: &str,
        name: Option<&str>,
        upstreams: &[UpstreamSettings],
    ) -> Option<usize> {
        let Some(u) = name else {
            self.err(
                format!("{rfield}.upstream"),
                "",
                "missing: the name of an [upstreams.NAME] group",
            );
            return None;
        };
        let found = upstreams.iter().position(|g| g.name == u);
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
}
