//! The configuration: one TOML file, decoded with field paths, validated in full.
//!
//! [`Config::from_toml_str`] and [`Config::load`] never panic: a file either becomes a
//! [`Config`] or a [`ConfigErrors`] listing every problem with its field path
//! (`sites[1].routes[0].upstream`), the bad value and what would be accepted.
//!
//! The file goes through four stages, one module each: `raw` (serde structs exactly as
//! written, `deny_unknown_fields`; `units` parses durations and sizes), `load` (reading and
//! decoding, a syntax or type error with its path and line), `validate` (one file per section,
//! every semantic error collected) and `settings` (the plain validated types the rest of the
//! crate reads). Every public name is re-exported here, flat: `proxy_core::config::X`.

mod error;
mod load;
mod raw;
mod routes;
pub(crate) mod settings;
mod units;
mod validate;

pub use crate::access_log::{AccessLogFormat, AccessLogSettings, AccessLogTarget};
pub use crate::acme::{AcmeSettings, AcmeSite, ChallengeKind};
pub use crate::cache::{CacheSettings, CredentialCookies, FreshnessMode, RouteCache, ZoneSettings};
pub use crate::headers::HeaderSettings;
pub(crate) use crate::redis_link::redact_url;
pub use crate::redis_link::RedisSettings;
pub use crate::upstream::{
    HealthCheckKind, HealthCheckSettings, UpstreamSettings, UpstreamTimeouts,
};
pub use error::{ConfigError, ConfigErrors};
pub use raw::*;
pub use settings::{
    CertPaths, ClientIpSettings, CompressionSettings, Config, DownstreamSettings, LimitBackend,
    LimitClassSettings, LimitsSettings, ListenerSettings, RouteSettings, ServerSettings,
    SiteSettings, SiteTls,
};
pub use units::*;
pub(crate) use validate::valid_hostname;
