//! `[redis]`: the URL, key prefix, timeouts, pool and purge channel.

use super::Validator;
use crate::config::{redact_url, RawDuration, RawRedis, RedisSettings};
use crate::redis_link as owner;
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
                Ok(info) if owner::DB_RANGE.contains(&info.redis.db) => db = info.redis.db,
                Ok(info) => self.err(
                    "redis.url",
                    format!("{:?}", redact_url(&url)),
                    format!(
                        "database {} is outside {}..{} (Redis's default `databases 16`); production uses /4",
                        info.redis.db,
                        owner::DB_RANGE.start(),
                        owner::DB_RANGE.end()
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
            .unwrap_or_else(|| owner::DEFAULT_KEY_PREFIX.to_string());
        if key_prefix.len() > owner::MAX_KEY_PREFIX_LEN
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.err(
                "redis.key_prefix",
                format!("{key_prefix:?}"),
                format!(
                    "at most {} characters, no spaces or control characters, such as {:?}",
                    owner::MAX_KEY_PREFIX_LEN,
                    owner::DEFAULT_KEY_PREFIX
                ),
            );
        }
        let bounded = |v: &mut Validator,
                       field: &str,
                       raw: &Option<RawDuration>,
                       default: Duration,
                       max: Duration| {
            let d = v.duration(field, raw, default);
            if d < owner::MIN_TIMEOUT || d > max {
                v.err(
                    field,
                    raw.as_ref().map(|d| d.shown()).unwrap_or_default(),
                    format!(
                        "must be from {} to {}",
                        humantime::format_duration(owner::MIN_TIMEOUT),
                        humantime::format_duration(max)
                    ),
                );
                return default;
            }
            d
        };
        let timeout = bounded(
            self,
            "redis.timeout",
            &raw.timeout,
            owner::DEFAULT_TIMEOUT,
            owner::MAX_TIMEOUT,
        );
        let connect_timeout = bounded(
            self,
            "redis.connect_timeout",
            &raw.connect_timeout,
            owner::DEFAULT_CONNECT_TIMEOUT,
            owner::MAX_CONNECT_TIMEOUT,
        );
        let retry_interval = bounded(
            self,
            "redis.retry_interval",
            &raw.retry_interval,
            owner::DEFAULT_RETRY_INTERVAL,
            owner::MAX_RETRY_INTERVAL,
        );
        let pool = owner::CONNECTIONS_RANGE;
        let connections = raw.connections.unwrap_or(owner::DEFAULT_CONNECTIONS);
        if !pool.contains(&connections) {
            self.err(
                "redis.connections",
                connections.to_string(),
                format!(
                    "must be between {} and {} (each is multiplexed; {} is plenty for one proxy)",
                    pool.start(),
                    pool.end(),
                    owner::DEFAULT_CONNECTIONS
                ),
            );
        }
        let purge_channel = match raw.purge_channel.as_deref() {
            None => Some(format!("{key_prefix}{}", owner::PURGE_CHANNEL_SUFFIX)),
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
            connections: connections.clamp(*pool.start(), *pool.end()),
            purge_channel,
        }
    }
}
