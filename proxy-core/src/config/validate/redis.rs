//! `[redis]`: the URL, key prefix, timeouts, pool and purge channel.

use super::Validator;
use crate::config::{redact_url, RawDuration, RawRedis, RedisSettings};
use std::time::Duration;

impl Validator {
    pub(super) fn redis(&mut self, raw: &RawRedis) -> RedisSettings {
        use redis::IntoConnectionInfo as _;
        let url = raw.url.clone().unwrap_or_default();
        let mut db = 0;
        if url.is_empty() {
            self.err(
                "redis.url",
                "",
                "missing: the Redis to share, such as \"redis://127.0.0.1:6379/4\"",
            );
        } else if !url.starts_with("redis://") {
            self.err(
                "redis.url",
                format!("{:?}", redact_url(&url)),
                "expected a redis:// URL such as \"redis://127.0.0.1:6379/4\" (TLS and unix sockets are not supported)",
            );
        } else {
            match url.as_str().into_connection_info() {
                Ok(info) if (0..=15).contains(&info.redis.db) => db = info.redis.db,
                Ok(info) => self.err(
                    "redis.url",
                    format!("{:?}", redact_url(&url)),
                    format!(
                        "database {} is outside 0..15 (Redis's default `databases 16`); production uses /4",
                        info.redis.db
                    ),
                ),
                Err(e) => self.err(
                    "redis.url",
                    format!("{:?}", redact_url(&url)),
                    format!("not a Redis URL ({e}); expected redis://[user:password@]host[:port][/db]"),
                ),
            }
        }
        let key_prefix = raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| "galion-edge:".to_string());
        if key_prefix.len() > 64
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.err(
                "redis.key_prefix",
                format!("{key_prefix:?}"),
                "at most 64 characters, no spaces or control characters, such as \"galion-edge:\"",
            );
        }
        let bounded = |v: &mut Validator,
                       field: &str,
                       raw: &Option<RawDuration>,
                       default: Duration,
                       max: Duration| {
            let d = v.duration(field, raw, default);
            if d < Duration::from_millis(1) || d > max {
                v.err(
                    field,
                    raw.as_ref().map(|d| d.shown()).unwrap_or_default(),
                    format!("must be from 1ms to {}", humantime::format_duration(max)),
                );
                return default;
            }
            d
        };
        let timeout = bounded(
            self,
            "redis.timeout",
            &raw.timeout,
            Duration::from_millis(50),
            Duration::from_secs(5),
        );
        let connect_timeout = bounded(
            self,
            "redis.connect_timeout",
            &raw.connect_timeout,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let retry_interval = bounded(
            self,
            "redis.retry_interval",
            &raw.retry_interval,
            Duration::from_secs(1),
            Duration::from_secs(300),
        );
        let connections = raw.connections.unwrap_or(2);
        if !(1..=64).contains(&connections) {
            self.err(
                "redis.connections",
                connections.to_string(),
                "must be between 1 and 64 (each is multiplexed; 2 is plenty for one proxy)",
            );
        }
        let purge_channel = match raw.purge_channel.as_deref() {
            None => Some(format!("{key_prefix}purge")),
            Some("") => None,
            Some(c) if c.chars().any(|ch| ch.is_whitespace() || ch.is_control()) => {
                self.err(
                    "redis.purge_channel",
                    format!("{c:?}"),
                    "no spaces or control characters; or \"\" to turn the purge fan-out off",
                );
                None
            }
            Some(c) => Some(c.to_string()),
        };
        RedisSettings {
            url,
            db,
            key_prefix,
            timeout,
            connect_timeout,
            retry_interval,
            connections: connections.clamp(1, 64),
            purge_channel,
        }
    }
}
