//! The `config` target: a whole TOML file through `Config::from_toml_str`.

use crate::config::{valid_hostname, Config};
use std::collections::HashMap;
use std::path::Path;

/// `Config::from_toml_str` on `data` (UTF-8 only; anything else is skipped, as TOML must be
/// UTF-8), relative paths resolved against `base_dir`.
///
/// Invariants: no panic; an error list is never empty and every entry has a field path and a
/// message; a valid config has valid host names, routes whose groups exist and whose prefixes
/// start with `/`, and compiles to a [`RouteTable`](crate::routing::RouteTable) that sends every host of every site to
/// that site and every route prefix to that route.
pub fn config(data: &[u8], base_dir: &Path) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::from_toml_str(text, base_dir) {
        Err(errors) => {
            assert!(!errors.0.is_empty(), "an error without entries");
            for e in &errors.0 {
                assert!(!e.path.is_empty(), "error without a field path: {e:?}");
                assert!(!e.message.is_empty(), "error without a message: {e:?}");
            }
            let _ = errors.to_string();
        }
        Ok(config) => check_config(&config),
    }
}

fn check_config(config: &Config) {
    let table = match config.route_table() {
        Ok(t) => t,
        Err(e) => panic!("a validated config that does not route: {e}"),
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (i, site) in config.sites.iter().enumerate() {
        for host in &site.hosts {
            assert!(valid_hostname(host), "invalid host accepted: {host:?}");
            let first = *seen.entry(host.as_str()).or_insert(i);
            assert_eq!(table.site_for_host(host), Some(first), "host {host:?}");
            let upper = host.to_ascii_uppercase();
            assert_eq!(table.site_for_host(&format!("{upper}.:443")), Some(first));
        }
        for (j, route) in site.routes.iter().enumerate() {
            assert!(route.prefix.starts_with('/'), "prefix {:?}", route.prefix);
            assert!(route.upstream < config.upstreams.len(), "route {i}/{j}");
            let d = table.decide_in_site(i, &route.prefix);
            assert_eq!(d.map(|d| (d.route, d.upstream)), Ok((j, route.upstream)));
        }
    }
}
