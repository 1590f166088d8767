//! Shared pieces of the criterion benches: the production-shaped config and the targets.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use proxy_core::config::Config;
use std::time::Duration;

/// configs/galion.toml's sites and routes, with certificates and files left out so it loads
/// anywhere.
pub fn production_config() -> Config {
    let text = include_str!("../../configs/galion.toml");
    let mut raw: proxy_core::config::RawConfig = toml::from_str(text).unwrap();
    raw.listeners.https.clear();
    raw.listeners.http_proxy = vec!["127.0.0.1:1".into()];
    raw.access_log.path = Some("off".into());
    raw.acme.webroot = None;
    for s in &mut raw.sites {
        s.tls = None;
    }
    Config::from_raw(raw, std::path::Path::new(".")).unwrap()
}

/// The documented target a bench protects (../shared/seed/ARCHITECTURE.md): a server-side cache
/// hit in 5-20 ms. The proxy's own share of any request must be a small fraction of its low end.
pub const CACHE_HIT_TARGET: Duration = Duration::from_millis(5);

/// Prints how far inside `target` a measured per-operation time is.
pub fn report_margin(what: &str, per_op: Duration, target: Duration) {
    let ratio = target.as_secs_f64() / per_op.as_secs_f64().max(1e-12);
    println!(
        "{what}: {:.0} ns per operation; the {} ms target is {ratio:.0}x that",
        per_op.as_secs_f64() * 1e9,
        target.as_millis()
    );
}
