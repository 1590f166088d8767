//! Rate limits shared by every instance through Redis ([`RedisLimiter`]), with the same
//! sliding-window semantics and headers as the local [`RateLimiter`].
//!
//! # One round trip per decision
//!
//! [`SLIDING_WINDOW_LUA`] runs in Redis as one `EVALSHA`: it reads the server's clock (`TIME`,
//! so every instance counts in the same windows whatever its own clock says), rolls the
//! client's windows, computes the estimate `prev × (1 − f) + curr` exactly as
//! [`RateLimiter::check`] does, counts the request if allowed and answers
//! `{allowed, remaining, ms}` (`ms`: until the window resets, or the `Retry-After` wait
//! computed by the same formula as the local limiter's). Redis runs a script atomically, so
//! concurrent requests of one client on any number of instances never overshoot the limit
//! (the local limiter can, by the requests in flight at once). One hash per client and class,
//! `<key_prefix>rl:<class>:<window secs>:<client>` with fields `i` (window index), `c`, `p`
//! (counts), expiring two windows after its last allowed request. The client is its IPv4
//! address or its IPv6 prefix (`2001:db8:1:2::/64`), as the local limiter groups them.
//!
//! # The local sketch answers first where it can
//!
//! When Redis refuses a client, the wait it gives (`Retry-After`) is remembered in a fixed
//! table (65536 slots × 8 bytes, a 32-bit tag per entry); until it passes, that client is
//! refused at once without a round trip. This is exact, not an estimate: the wait is the
//! time until the client's estimate falls under the limit if nothing else is allowed, and
//! anything allowed meanwhile on another instance only pushes it further out. A client
//! hammering while refused therefore costs nothing beyond its first refusal per wait.
//!
//! # When Redis is down or slow
//!
//! A command that does not answer within `[redis] timeout` (default 50 ms), or a connection
//! error, decides the request with the local [`RateLimiter`] instead, counted in
//! `galion_edge_ratelimit_decisions_total{by="fallback"}`; the link's breaker then keeps the
//! request path off Redis until it answers again (see [`crate::redis_link`]). Requests
//! allowed by Redis are also counted in the local sketch, so the fallback starts from this
//! instance's share of the window rather than from zero. While it lasts, each instance
//! enforces the whole limit on its own traffic (N instances: up to N × the limit in total);
//! nothing is refused or fails because Redis is gone.

use super::{ceil_secs, key_bits, Decision, LimitClass, RateLimiter};
use crate::redis_link::{FailKind, Op, RedisLink};
use ::redis::Script;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The sliding-window script. `KEYS[1]`: the client's hash; `ARGV[1]`: window in ms;
/// `ARGV[2]`: the limit (`rate + burst`). Returns `{allowed (1|0), remaining, ms}`.
pub(crate) const SLIDING_WINDOW_LUA: &str = r#"
local w = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local idx = math.floor(now / w)
local frac = (now - idx * w) / w
local st = redis.call('HMGET', KEYS[1], 'i', 'c', 'p')
local i = tonumber(st[1]) or -2
local curr = tonumber(st[2]) or 0
local prev = tonumber(st[3]) or 0
if i == idx - 1 then
  prev = curr
  curr = 0
elseif i < idx - 1 then
  prev = 0
  curr = 0
end
local est = prev * (1 - frac) + curr
if est + 1 <= limit + 1e-9 then
  curr = curr + 1
  redis.call('HSET', KEYS[1], 'i', idx, 'c', curr, 'p', prev)
  redis.call('PEXPIRE', KEYS[1], 2 * w)
  return {1, math.max(0, math.floor(limit - est - 1)), math.ceil((1 - frac) * w)}
end
local target = limit - 1
local d = 0
if target < 0 then
  d = w
elseif curr <= target and prev > 0 then
  d = w * (1 - frac - (target - curr) / prev)
elseif curr > 0 then
  d = w * ((1 - frac) + (1 - target / curr))
end
return {0, 0, math.ceil(d)}
"#;

/// Slots of the table of refused clients (512 KiB).
const REFUSED_SLOTS: usize = 1 << 16;
/// Time unit of the refused table: 10 ms, so 32 bits last 497 days.
const TICK_MS: u64 = 10;

/// Rate limits counted in Redis. See the module docs. Share it in an `Arc`; `&self`
/// everywhere. Its fixed memory is the refused table (512 KiB).
pub struct RedisLimiter {
    link: Arc<RedisLink>,
    script: Script,
    window: Duration,
    prefix: String,
    refused: Box<[AtomicU64]>,
    seed: u64,
    start: Instant,
}

impl std::fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("window", &self.window)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

impl RedisLimiter {
    /// A limiter counting in windows of `window` (whole seconds, clamped like
    /// [`RateLimiter::new`]) through `link`. Keys start with the link's `key_prefix`.
    pub fn new(link: Arc<RedisLink>, window: Duration) -> RedisLimiter {
        let window =
            Duration::from_secs(window.clamp(super::MIN_WINDOW, super::MAX_WINDOW).as_secs());
        let prefix = format!("{}rl:", link.settings().key_prefix);
        RedisLimiter {
            link,
            script: Script::new(SLIDING_WINDOW_LUA),
            window,
            prefix,
            refused: (0..REFUSED_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            seed: rand::random(),
            start: Instant::now(),
        }
    }

    /// The link this limiter counts through.
    pub fn link(&self) -> &Arc<RedisLink> {
        &self.link
    }

    /// The window length after clamping.
    pub fn window(&self) -> Duration {
        self.window
    }

    /// Decides one request of `ip` in `class`, with the same contract as
    /// [`RateLimiter::check`] (same estimate, `remaining`, `reset_secs` and `retry_after_secs`),
    /// counted over every instance that shares the Redis.
    ///
    /// In order: a client Redis refused and whose wait has not passed is refused at once;
    /// otherwise one `EVALSHA` decides, within `[redis] timeout`; if Redis is down, slow or
    /// fails, `local` decides (and counts). Allowed requests are also counted in `local`.
    /// Never fails; the outcome is counted in the link's
    /// [`limit_decisions`](crate::RedisLink::limit_decisions).
    pub async fn check(&self, local: &RateLimiter, class: &LimitClass, ip: IpAddr) -> Decision {
        let bits = key_bits(ip, local.v6_mask);
        let hash = self.hash(class.id, bits);
        let stats = &self.link.stats;
        if let Some(retry_after_secs) = self.refused_for(hash) {
            stats.limit_refused_locally.fetch_add(1, Ordering::Relaxed);
            return Decision::Deny { retry_after_secs };
        }
        let Some(mut conn) = self.link.conn() else {
            stats.limit_fallback.fetch_add(1, Ordering::Relaxed);
            return local.check(class, ip);
        };
        let key = self.key(class, bits, local.v6_mask);
        let mut call = self.script.key(key);
        call.arg(self.window.as_millis() as u64).arg(class.limit());
        let answer = tokio::time::timeout(
            self.link.timeout(),
            call.invoke_async::<(i64, i64, i64)>(&mut conn),
        )
        .await;
        match answer {
            Ok(Ok((allowed, remaining, ms))) => {
                self.link.succeeded();
                stats.limit_redis.fetch_add(1, Ordering::Relaxed);
                let ms = u64::try_from(ms).unwrap_or(0);
                if allowed == 1 {
                    local.record(class, ip);
                    Decision::Allow {
                        remaining: u32::try_from(remaining.max(0)).unwrap_or(u32::MAX),
                        reset_secs: ceil_secs(ms as f64 / 1000.0),
                    }
                } else {
                    self.remember_refusal(hash, ms);
                    Decision::Deny {
                        retry_after_secs: ceil_secs(ms as f64 / 1000.0),
                    }
                }
            }
            Ok(Err(e)) => {
                self.link.failed(Op::Limit, FailKind::of(&e), &e);
                stats.limit_fallback.fetch_add(1, Ordering::Relaxed);
                local.check(class, ip)
            }
            Err(_) => {
                self.link.failed(
                    Op::Limit,
                    FailKind::Timeout,
                    &"no answer within [redis] timeout",
                );
                stats.limit_fallback.fetch_add(1, Ordering::Relaxed);
                local.check(class, ip)
            }
        }
    }

    /// The Redis key of a client in a class: `<prefix>rl:<class>:<window secs>:<client>`.
    /// (One small string per Redis decision; the round trip costs far more.)
    fn key(&self, class: &LimitClass, bits: u128, v6_mask: u128) -> String {
        use std::fmt::Write as _;
        let mut k = String::with_capacity(self.prefix.len() + class.name.len() + 56);
        k.push_str(&self.prefix);
        k.push_str(&class.name);
        let _ = write!(k, ":{}:", self.window.as_secs());
        let v6 = Ipv6Addr::from(bits);
        match v6.to_ipv4_mapped() {
            Some(v4) if bits >> 32 == 0xffff => {
                let _ = write!(k, "{v4}");
            }
            _ => {
                let _ = write!(k, "{v6}/{}", v6_mask.count_ones());
            }
        }
        k
    }

    fn hash(&self, class: u8, bits: u128) -> u64 {
        mix(mix(self.seed ^ (bits as u64) ^ (u64::from(class) << 56)) ^ (bits >> 64) as u64)
    }

    /// Ticks since this limiter started.
    fn now_ticks(&self) -> u64 {
        self.start.elapsed().as_millis() as u64 / TICK_MS
    }

    fn remember_refusal(&self, hash: u64, wait_ms: u64) {
        let until = (self.now_ticks() + wait_ms.div_ceil(TICK_MS)) as u32;
        let tag = (hash >> 32) | 1;
        let slot = (hash as usize) % REFUSED_SLOTS;
        self.refused[slot].store((tag << 32) | u64::from(until), Ordering::Relaxed);
    }

    /// Whole seconds left of a refusal remembered for `hash`, if one is live.
    fn refused_for(&self, hash: u64) -> Option<u32> {
        let slot = (hash as usize) % REFUSED_SLOTS;
        let v = self.refused[slot].load(Ordering::Relaxed);
        if v >> 32 != (hash >> 32) | 1 {
            return None;
        }
        let left = (v as u32).wrapping_sub(self.now_ticks() as u32) as i32;
        // Waits are at most two windows (two days); anything else is a wrapped old entry.
        let max = (2 * super::MAX_WINDOW.as_millis() as u64 / TICK_MS) as i32;
        if left <= 0 || left > max {
            return None;
        }
        Some(ceil_secs(left as f64 * TICK_MS as f64 / 1000.0))
    }
}

/// SplitMix64's finaliser.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RedisSettings;

    fn limiter() -> RedisLimiter {
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1/4".into(),
            db: 4,
            key_prefix: "t:".into(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            retry_interval: Duration::from_secs(1),
            connections: 1,
            purge_channel: None,
        };
        RedisLimiter::new(
            Arc::new(RedisLink::new(&settings).unwrap()),
            Duration::from_secs(60),
        )
    }

    #[test]
    fn keys_name_class_window_and_client() {
        let l = limiter();
        let c = LimitClass {
            id: 0,
            name: "api".into(),
            rate: 1,
            burst: 0,
        };
        let mask = super::super::prefix_mask(64);
        let k = |s: &str| l.key(&c, key_bits(s.parse().unwrap(), mask), mask);
        assert_eq!(k("203.0.113.7"), "t:rl:api:60:203.0.113.7");
        assert_eq!(k("::ffff:203.0.113.7"), "t:rl:api:60:203.0.113.7");
        assert_eq!(k("2001:db8:1:2:3:4:5:6"), "t:rl:api:60:2001:db8:1:2::/64");
    }

    #[test]
    fn refusals_are_remembered_until_their_wait_passes() {
        let l = limiter();
        let a = l.hash(1, 42);
        let b = l.hash(1, 43);
        assert_ne!(a, b);
        assert_eq!(l.refused_for(a), None);
        l.remember_refusal(a, 2500);
        assert_eq!(l.refused_for(a), Some(3));
        assert_eq!(l.refused_for(b), None, "another client is not refused");
        assert_eq!(l.refused_for(l.hash(2, 42)), None, "nor another class");
        l.remember_refusal(b, 5);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(l.refused_for(b), None, "a passed wait is forgotten");
    }

    #[tokio::test]
    async fn without_redis_the_local_limiter_decides() {
        let l = limiter();
        let local = RateLimiter::new(Duration::from_secs(60), 1024);
        let c = LimitClass {
            id: 0,
            name: "api".into(),
            rate: 2,
            burst: 0,
        };
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(l.check(&local, &c, ip).await.is_allowed());
        assert!(l.check(&local, &c, ip).await.is_allowed());
        assert!(!l.check(&local, &c, ip).await.is_allowed());
        assert_eq!(l.link.stats.limit_fallback.load(Ordering::Relaxed), 3);
    }
}
