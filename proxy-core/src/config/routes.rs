//! A validated config's routing table.

use super::Config;
use crate::routing::{RouteTable, RouteTableError};

impl Config {
    /// The routing table of this config: its sites in order with their hosts and routes, and
    /// its upstream groups in order, so a [`RouteDecision`](crate::routing::RouteDecision)
    /// numbers sites, routes and groups as `sites`, `routes` and `upstreams` do. A validated
    /// config always gives a table; the error is for a config built by hand that the
    /// validator never saw.
    pub fn route_table(&self) -> Result<RouteTable, RouteTableError> {
        let mut b = RouteTable::builder().upstreams(self.upstreams.iter().map(|u| u.name.as_str()));
        for site in &self.sites {
            b = b.site(site.name.as_str(), site.hosts.iter().map(String::as_str));
            for r in &site.routes {
                b = b.route_to(r.prefix.as_str(), r.upstream);
            }
        }
        b.build()
    }
}
