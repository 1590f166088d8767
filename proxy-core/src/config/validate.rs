//! Validation: a decoded [`RawConfig`] in, a [`Config`] out, every problem collected with its
//! field path, the bad value and what would be accepted. Never panics.
//!
//! One [`Validator`] walks the sections in a fixed order (the order errors are listed in); each
//! section's checks live in the file named for it. A section that refers to another (a route
//! names an upstream group, a cache zone, a limit class) gets that one already validated.

mod access_log;
mod cache;
mod client_ip;
mod compression;
mod headers;
mod limits;
mod listeners;
mod redis;
mod server;
mod sites;
mod tls;
mod upstreams;

use crate::config::{
    Config, ConfigError, ConfigErrors, RawConfig, RawDuration, RawHeaders, RawSize,
    UpstreamSettings,
};
use http::HeaderValue;
use sites::SiteContext;
use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validates decoded raw config, collecting every error. Relative paths are resolved against
/// `base_dir`; absolute ones under `root` when given (see [`Config::load_with_root`]).
pub(super) fn validate(
    raw: RawConfig,
    base_dir: &Path,
    root: Option<&Path>,
) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        errors: Vec::new(),
        base: base_dir.to_path_buf(),
        root: root.map(Path::to_path_buf),
    };
    let config = v.config(raw);
    if v.errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(v.errors))
    }
}

/// The errors found so far and what paths are resolved against; the sections' checks are its
/// methods, one file per section.
struct Validator {
    errors: Vec<ConfigError>,
    base: PathBuf,
    root: Option<PathBuf>,
}

impl Validator {
    /// Every section in turn. The order is the order of the error list: keep it.
    fn config(&mut self, raw: RawConfig) -> Config {
        let server = self.server(&raw.server);
        let (listeners, admin_listen) = self.listeners(&raw.listeners, &raw.admin);
        let downstream = self.downstream(&raw.downstream);
        let tls_reload_interval = self.tls_reload_interval(&raw.tls);
        let access_log = self.access_log(&raw.access_log);
        let acme_webroot = self.acme_webroot(&raw.acme);
        let cache = self.cache(&raw.cache);
        let client_ip = self.client_ip(&raw.client_ip);
        let limits = self.limits(&raw.limits);
        let redis = raw.redis.as_ref().map(|r| self.redis(r));
        self.limits_backend(&limits, redis.as_ref());
        let compression = self.compression(&raw.compression);
        self.admin_remote(&raw.admin, &admin_listen);
        let upstreams: Vec<UpstreamSettings> = raw
            .upstreams
            .iter()
            .map(|(name, u)| self.upstream(name, u))
            .collect();
        let default_headers = self.headers("headers", &RawHeaders::default(), &raw.headers);
        let sites = self.sites(
            &raw.sites,
            &SiteContext {
                default_headers: &raw.headers,
                upstreams: &upstreams,
                downstream: &downstream,
                listeners: &listeners,
                cache: &cache,
                limits: &limits,
            },
        );
        let acme = self.acme(&raw.acme, &sites, &listeners, tls_reload_interval);
        Config {
            server,
            listeners,
            downstream,
            tls_reload_interval,
            access_log,
            acme_webroot,
            acme,
            cache,
            client_ip,
            limits,
            redis,
            compression,
            admin_listen,
            upstreams,
            sites,
            default_headers,
            base_dir: self.base.clone(),
        }
    }

    fn err(
        &mut self,
        path: impl Into<String>,
        value: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.errors.push(ConfigError {
            path: path.into(),
            value: value.into(),
            message: message.into(),
        });
    }

    fn duration(&mut self, path: &str, raw: &Option<RawDuration>, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match raw.parse() {
            Ok(d) if d.is_zero() => {
                self.err(path, raw.shown(), "must be greater than zero");
                default
            }
            Ok(d) if d > crate::config::MAX_DURATION => {
                self.err(
                    path,
                    raw.shown(),
                    "is longer than 7 days; use a shorter duration",
                );
                default
            }
            Ok(d) => d,
            Err(msg) => {
                self.err(path, raw.shown(), msg);
                default
            }
        }
    }

    /// A size within `range` (both ends accepted); `default` when unset or refused.
    fn size(
        &mut self,
        path: &str,
        raw: &Option<RawSize>,
        default: u64,
        range: RangeInclusive<u64>,
    ) -> u64 {
        let Some(raw) = raw else { return default };
        let (min, max) = (*range.start(), *range.end());
        match raw.parse() {
            Ok(n) if !range.contains(&n) => {
                self.err(
                    path,
                    raw.shown(),
                    format!("must be between {min} and {max} bytes"),
                );
                default
            }
            Ok(n) => n,
            Err(msg) => {
                self.err(path, raw.shown(), msg);
                default
            }
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            match (&self.root, p.strip_prefix("/")) {
                (Some(root), Ok(rel)) => root.join(rel),
                _ => p.to_path_buf(),
            }
        } else {
            self.base.join(p)
        }
    }

    fn addresses(&mut self, field: &str, list: &[String]) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for (i, a) in list.iter().enumerate() {
            match a.parse::<SocketAddr>() {
                Ok(sa) => out.push(sa),
                Err(_) => self.err(
                    format!("{field}[{i}]"),
                    format!("{a:?}"),
                    "expected an IP address and port such as \"0.0.0.0:443\" or \"[::]:443\"",
                ),
            }
        }
        out
    }

    fn cidrs(&mut self, field: &str, list: &[String]) -> Vec<ipnet::IpNet> {
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let parsed = c
                .parse::<ipnet::IpNet>()
                .or_else(|_| c.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(n) => out.push(n.trunc()),
                Err(_) => self.err(
                    format!("{field}[{i}]"),
                    format!("{c:?}"),
                    "expected an IP network such as \"173.245.48.0/20\", \"2400:cb00::/32\" or a single address",
                ),
            }
        }
        out
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A header value of visible ASCII and spaces (what the `http` crate accepts is wider: it lets
/// bytes over 0x7f through, which clients decode inconsistently).
fn header_value(text: &str) -> Option<HeaderValue> {
    if !text
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || b.is_ascii_graphic())
    {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

/// A DNS host name: labels of letters, digits and '-', at most 253 bytes, or `localhost`.
pub(crate) fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}
