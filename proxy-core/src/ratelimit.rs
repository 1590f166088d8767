//! Request-rate limits per client IP and route class ([`RateLimiter`]), concurrent-request
//! limits per client IP ([`ConnLimiter`]), and the `RateLimit` / `RateLimit-Policy` response
//! headers of the IETF httpapi draft.
//!
//! Both limiters live in fixed memory: count-min sketches (Pingora's
//! `pingora_limits::estimator::Estimator` in two fixed windows, see [`window`], and
//! `pingora_limits::inflight::Inflight`) hold counters, never keys, so a flood of distinct addresses costs CPU, not memory. The price is that a client's
//! count may be over-estimated when other clients hash onto its counters; it is never
//! under-estimated. [`RateLimiter::new`] says how to size the sketch so that this never
//! matters in practice.
//!
//! Keys are the client address in canonical form: IPv4-mapped IPv6 addresses count as their
//! IPv4 address, and IPv6 addresses are grouped by their /64 prefix by default (one subscriber
//! line or host usually owns a whole /64, so a per-address IPv6 limit could be dodged by
//! changing address). See `with_ipv6_prefix_len` on each limiter.
//!
//! With `[limits] backend = "redis"`, [`redis::RedisLimiter`] counts in Redis instead, shared
//! by every instance, and this sketch answers while Redis cannot.

pub(crate) mod redis;
pub(crate) mod window;

use crate::client_ip::canonical;
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use pingora_limits::inflight::{Guard, Inflight};
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use window::{Clock, SystemClock, Windows};

/// `RateLimit-Policy` (draft-ietf-httpapi-ratelimit-headers, structured-field version).
pub const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
/// `RateLimit` (draft-ietf-httpapi-ratelimit-headers, structured-field version).
pub const RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

/// Shortest window: the limiter's windows and its headers are in whole seconds.
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// The window when the config names none (`[limits] window`): one minute, as the
/// requests-per-minute limits of ARCHITECTURE.md.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Longest window (one day); longer ones are clamped to it.
pub const MAX_WINDOW: Duration = Duration::from_secs(86_400);
/// Largest sketch accepted by [`RateLimiter::new`] (2^24 slots: 1 GiB); larger requests are
/// clamped to it.
pub const MAX_SLOTS: usize = 1 << 24;

/// Counters per hash row when the config says nothing (`limits.sketch_slots`): 131072, 8 MiB.
pub const DEFAULT_SLOTS: usize = 131_072;
/// Smallest `limits.sketch_slots` the config accepts (64 KiB of sketch).
pub const MIN_SLOTS: usize = 1024;
/// What a class's `rate` (requests per window) may be set to.
pub const RATE_RANGE: RangeInclusive<u32> = 1..=1_000_000;
/// A class's `burst` when unset: no requests beyond `rate`.
pub const DEFAULT_BURST: u32 = 0;
/// Largest `burst` of a class.
pub const MAX_BURST: u32 = 1_000_000;
/// A class's `json` when unset: 429 answers have a text body.
pub const DEFAULT_JSON: bool = false;
/// Most classes in a config: a class's [`LimitClass::id`] is a `u8`.
pub const MAX_CLASSES: usize = u8::MAX as usize;
/// `limits.max_connections_per_ip` when unset: 0, no cap.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: u32 = 0;
/// The default IPv6 prefix length that forms one client key.
pub const DEFAULT_IPV6_PREFIX_LEN: u8 = 64;

/// Hash rows of the rate sketch. Four independent rows make a false refusal need four
/// independent collisions (see [`RateLimiter::new`]).
const HASHES: usize = 4;

/// One rate-limit class: a budget that routes share (`api`, `login`, `default`).
///
/// Semantics (nginx `limit_req zone=… burst=…` gives the same per-minute totals): a client may
/// make `rate + burst` requests in any window of the limiter's length, as measured by the
/// sliding-window estimate `prev × (1 − elapsed fraction) + curr`, where `prev` and `curr` are
/// the client's allowed requests in the previous and current fixed windows. A client that keeps
/// to `rate` per window never meets the limit; `burst` is headroom for a client that arrives in
/// a rush and then slows down. The estimate assumes the previous window's requests were spread
/// evenly; a client that crowds its requests at the very end of one window and then spaces them
/// out over the next can therefore get up to `limit + ⌊limit × f⌋` requests into a true
/// sliding window ending at fraction `f` of the next fixed window: always fewer than twice the
/// limit, never the fixed-window double burst.
///
/// `rate + burst` saturates at `u32::MAX`; a class whose `rate + burst` is 0 refuses every
/// request. Classes are distinguished by `id` alone: two classes with one id share a budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitClass {
    /// Key prefix in the shared sketch, unique per class (the config gives classes ids in name
    /// order).
    pub id: u8,
    /// Name used in the `RateLimit` headers (`"api"`).
    pub name: String,
    /// Requests per window a steady client may make.
    pub rate: u32,
    /// Extra requests per window on top of `rate`.
    pub burst: u32,
}

impl LimitClass {
    /// The number of requests allowed per window: `rate + burst`, saturating.
    pub fn limit(&self) -> u32 {
        self.rate.saturating_add(self.burst)
    }
}

/// What [`RateLimiter::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Serve the request; it has been counted.
    Allow {
        /// Requests left in the sliding window after this one: `⌊limit − estimate − 1⌋`.
        remaining: u32,
        /// Whole seconds until the current fixed window ends (rounded up, at least 1), when
        /// this window's count starts to decay.
        reset_secs: u32,
    },
    /// Refuse with 429; the request was not counted.
    Deny {
        /// Whole seconds after which the next request will be allowed if no other is made
        /// (rounded up, at least 1; see [`RateLimiter::check`]). For `Retry-After`.
        retry_after_secs: u32,
    },
}

impl Decision {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }
}

/// Request-rate limiter for every class and client, in one fixed-size sketch.
///
/// Thread-safe and lock-free (`&self` everywhere); share it in an `Arc`. Never fails. The
/// sketch is allocated once, by the first request it counts: a limiter that only ever sees
/// allowed (`[limits] allow`) or exempt traffic costs no sketch memory.
pub struct RateLimiter {
    /// Built by [`RateLimiter::sketch`] on first use.
    rate: OnceLock<Windows>,
    clock: Arc<dyn Clock>,
    window: Duration,
    slots: usize,
    v6_mask: u128,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("window", &self.window)
            .field("slots", &self.slots)
            .field("memory_bytes", &self.memory_bytes())
            .finish()
    }
}

impl RateLimiter {
    /// A limiter with fixed windows of `window` (whole seconds, clamped to
    /// `MIN_WINDOW`..=`MAX_WINDOW`; the config default is 60 s) and a sketch of `slots`
    /// counters per hash row (clamped to 1..=`MAX_SLOTS`; the config default is [`DEFAULT_SLOTS`]).
    /// Memory is fixed: [`memory_bytes`](Self::memory_bytes) = 2 windows × 4 rows × `slots` ×
    /// 8 bytes (131072 slots: 8 MiB), allocated and zeroed at once by the first
    /// [`check`](Self::check) or [`record`](Self::record) (a few milliseconds for 8 MiB, once;
    /// nothing before: nginx's `limit_req_zone` memory is likewise only resident once written).
    ///
    /// # Sizing `slots`
    ///
    /// A client's estimate is inflated by the other keys that share each of its counters. Let
    /// `T` be the allowed requests per window over all clients and classes, and `m` the
    /// headroom of a well-behaved client (`rate + burst` minus what it makes per window). The
    /// noise on one row has mean at most `T / slots`, whatever the traffic (hashing is
    /// random; an abusive key's count is itself capped at the limit). A false refusal needs the
    /// noise of every one of the 4 independent rows to exceed `m`, so by Markov's inequality it
    /// happens with probability at most `(T / (slots × m))^4` per request within one fixed
    /// window. The sliding estimate adds the previous window's noise (at most the same bound
    /// again, with `m/2` each), giving at most `2 × (2T / (slots × m))^4`. For a per-request
    /// false-refusal rate below ε:
    ///
    /// `slots ≥ 2T / (m × (ε/2)^¼)`, i.e. `slots ≥ 75 × T / m` for ε = 10⁻⁶.
    ///
    /// That is the distribution-free rule (it holds for adversarial mixes). When the window's
    /// traffic comes from many similar clients the noise is close to Poisson and far smaller:
    /// 100,000 clients × 10 requests a window under a limit of 120 need only 32768 slots for
    /// at most 10⁻³ expected false refusals over all their 10⁶ requests (each row's noise is
    /// 10 × Poisson(clients / slots), and a refusal needs it ≥ 111 on all four rows; the unit
    /// test `no_false_positives` prints the computation). The default 131072 leaves a wide
    /// margin there (≈ 10⁻³⁶ expected), and by the Markov rule is safe to ε = 10⁻⁶ for up to
    /// `T ≈ 1700 × m` requests a window.
    pub fn new(window: Duration, slots: usize) -> RateLimiter {
        let window = Duration::from_secs(window.clamp(MIN_WINDOW, MAX_WINDOW).as_secs());
        let slots = slots.clamp(1, MAX_SLOTS);
        RateLimiter {
            rate: OnceLock::new(),
            clock: Arc::new(SystemClock::default()),
            window,
            slots,
            v6_mask: prefix_mask(DEFAULT_IPV6_PREFIX_LEN),
        }
    }

    /// Groups IPv6 clients by their first `len` bits (default [`DEFAULT_IPV6_PREFIX_LEN`], 64;
    /// 128 limits each address alone; values above 128 count as 128). IPv4 clients are always
    /// limited per address.
    pub fn with_ipv6_prefix_len(mut self, len: u8) -> RateLimiter {
        self.v6_mask = prefix_mask(len);
        self
    }

    /// Reads the time from `clock` instead of the system's monotonic clock: tests step a
    /// [`window::ManualClock`] through windows without sleeping. Set it before the first
    /// request is counted (the first window starts then).
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> RateLimiter {
        self.clock = clock;
        self
    }

    /// The fixed window length after clamping (whole seconds).
    pub fn window(&self) -> Duration {
        self.window
    }

    /// The sketch's fixed size in bytes: 2 windows × 4 hash rows × slots × 8-byte counters,
    /// whether or not it has been allocated yet (see [`is_allocated`](Self::is_allocated)).
    pub fn memory_bytes(&self) -> usize {
        2 * HASHES * self.slots * std::mem::size_of::<isize>()
    }

    /// Whether the sketch exists: false until the first request is counted.
    pub fn is_allocated(&self) -> bool {
        self.rate.get().is_some()
    }

    /// The sketch, allocated on first use.
    fn sketch(&self) -> &Windows {
        self.rate
            .get_or_init(|| Windows::new(self.window, HASHES, self.slots, self.clock.clone()))
    }

    /// Decides one request of `ip` in `class`, and counts it if allowed.
    ///
    /// With `prev`, `curr` the client's allowed requests in the previous and current fixed
    /// windows, `f` the elapsed fraction of the current window and `L = rate + burst`, the
    /// estimate is `e = prev × (1 − f) + curr` and the request is allowed iff `e + 1 ≤ L`.
    /// Refused requests are not counted: a client hammering while refused is not pushed further
    /// out, and it gets through again as soon as its allowed history decays.
    ///
    /// On refusal, `retry_after_secs` is the time `Δ` (window `W` seconds) after which
    /// `e` falls to `L − 1` if nothing else is allowed, rounded up to whole seconds, at least 1:
    ///
    /// - if `curr ≤ L − 1` (the current window alone leaves room; `prev > 0` then):
    ///   `Δ = W × (1 − f − (L − 1 − curr) / prev)`, within the current window;
    /// - otherwise the current window must itself decay in the next one:
    ///   `Δ = W × ((1 − f) + (1 − (L − 1) / curr))`, at most `2W`;
    /// - for `L = 0`: `W` (nothing will ever pass; the client is told to wait a window).
    ///
    /// Accuracy: the first window starts with the first counted request (when the sketch is
    /// allocated), and the next ones follow it back to back, whatever the traffic (see
    /// `window`), so the elapsed fraction is exact and `retry_after_secs` holds to the
    /// rounding. The check and the count are two steps, so concurrent requests of one client
    /// may together overshoot `L` by at most the number of requests in flight at once (bounded
    /// by worker threads); a request counted while another thread starts the next window is
    /// counted in the window that just ended. The sketch never under-counts otherwise. Never
    /// fails or panics; allocates only the sketch, on the first call.
    ///
    /// ```
    /// use proxy_core::{Decision, LimitClass, RateLimiter};
    /// use std::time::Duration;
    ///
    /// // 60 s windows, a small sketch (the config default is 131072 slots).
    /// let limiter = RateLimiter::new(Duration::from_secs(60), 1024);
    /// let api = LimitClass { id: 0, name: "api".into(), rate: 2, burst: 1 };
    /// let client = "203.0.113.7".parse().unwrap();
    ///
    /// for left in [2, 1, 0] {
    ///     assert!(matches!(limiter.check(&api, client), Decision::Allow { remaining, .. } if remaining == left));
    /// }
    /// let Decision::Deny { retry_after_secs } = limiter.check(&api, client) else {
    ///     panic!("the fourth request in a window is over rate + burst");
    /// };
    /// assert!((1..=120).contains(&retry_after_secs));
    /// // Another client has its own budget.
    /// assert!(limiter.check(&api, "203.0.113.8".parse().unwrap()).is_allowed());
    /// ```
    pub fn check(&self, class: &LimitClass, ip: IpAddr) -> Decision {
        let key = (class.id, key_bits(ip, self.v6_mask));
        let rate = self.sketch();
        let window::Counts { prev, curr, frac } = rate.counts(&key);
        let limit = f64::from(class.limit());
        let window = self.window.as_secs_f64();
        let estimate = prev * (1.0 - frac) + curr;
        // A hair of tolerance so that float rounding at exact equality (what retry_after
        // promises) never refuses.
        if estimate + 1.0 <= limit + 1e-9 {
            rate.observe(&key);
            Decision::Allow {
                remaining: (limit - estimate - 1.0).max(0.0).floor() as u32,
                reset_secs: ceil_secs((1.0 - frac) * window),
            }
        } else {
            Decision::Deny {
                retry_after_secs: retry_after(prev, curr, frac, window, limit),
            }
        }
    }
}

impl RateLimiter {
    /// Counts one request of `ip` in `class` without deciding anything: the shared limiter
    /// ([`redis::RedisLimiter`]) records here what Redis allowed, so that a fallback to this
    /// limiter starts from this instance's share of the window. Never fails; allocates only the
    /// sketch, on the first call.
    pub fn record(&self, class: &LimitClass, ip: IpAddr) {
        self.sketch()
            .observe(&(class.id, key_bits(ip, self.v6_mask)));
    }
}

/// `Δ` of [`RateLimiter::check`], in whole seconds (at least 1).
fn retry_after(prev: f64, curr: f64, frac: f64, window: f64, limit: f64) -> u32 {
    let target = limit - 1.0;
    if target < 0.0 {
        return ceil_secs(window);
    }
    let delta = if curr <= target && prev > 0.0 {
        window * (1.0 - frac - (target - curr) / prev)
    } else if curr > 0.0 {
        window * ((1.0 - frac) + (1.0 - target / curr))
    } else {
        // Not refused in the first place (e ≤ target); only reachable through rounding.
        0.0
    };
    ceil_secs(delta)
}

/// `secs` rounded up to whole seconds, at least 1 (saturating; NaN gives 1).
fn ceil_secs(secs: f64) -> u32 {
    (secs.ceil() as u32).max(1)
}

/// A mask of the first `len` bits of a 128-bit address (`len` above 128 counts as 128).
fn prefix_mask(len: u8) -> u128 {
    let len = u32::from(len.min(128));
    u128::MAX.checked_shl(128 - len).unwrap_or(0)
}

/// The client key of `ip`: IPv4 (or IPv4-mapped) addresses as their mapped form, IPv6
/// addresses masked with `v6_mask`. The two never collide: a mapped key has its low 64 bits
/// non-zero, a masked IPv6 key with a prefix of 64 or shorter has them zero, and longer
/// prefixes never see `::ffff:0:0/96` because [`canonical`] turned those into IPv4 first.
#[inline]
fn key_bits(ip: IpAddr, v6_mask: u128) -> u128 {
    match canonical(ip) {
        IpAddr::V4(a) => u128::from(a.to_ipv6_mapped()),
        IpAddr::V6(a) => u128::from(a) & v6_mask,
    }
}

/// The `RateLimit-Policy` value of `class` over `window`: `"<name>";q=<rate+burst>;w=<secs>`.
///
/// Constant per class: build it once when the config is loaded and clone it per response.
/// The name is written as a structured-field string: `"` and `\` are escaped and characters
/// outside printable ASCII become `_`, so the result is always a valid header value (never
/// fails). `w` is the window in whole seconds.
pub fn policy_header(class: &LimitClass, window: Duration) -> HeaderValue {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(class.name.len() + 32);
    push_sf_string(&mut s, &class.name);
    // Writing to a String cannot fail.
    let _ = write!(s, ";q={};w={}", class.limit(), window.as_secs());
    header_value(s)
}

/// The `RateLimit` value after a decision: `"<name>";r=<remaining>;t=<reset_secs>`.
///
/// For a refusal, pass `remaining = 0` and `reset_secs = retry_after_secs`. The name is
/// written as in [`ratelimit_policy_header`](crate::ratelimit_policy_header); never fails. One allocation per call. The value changes
/// with every request, so it is marked sensitive (sent as a never-indexed HTTP/2 literal).
pub fn ratelimit_header(class: &LimitClass, remaining: u32, reset_secs: u32) -> HeaderValue {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(class.name.len() + 30);
    push_sf_string(&mut s, &class.name);
    let _ = write!(s, ";r={remaining};t={reset_secs}");
    crate::headers::unique_value(header_value(s))
}

/// Appends `name` as an RFC 8941 sf-string.
fn push_sf_string(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('_'),
        }
    }
    out.push('"');
}

/// A header value taking ownership of `s` without copying it again.
fn header_value(s: String) -> HeaderValue {
    // `s` is printable ASCII by construction; the fallback is unreachable.
    HeaderValue::from_maybe_shared(Bytes::from(s))
        .unwrap_or_else(|_| HeaderValue::from_static("\"limit\""))
}

/// Concurrent requests per client IP (nginx `limit_conn`).
///
/// Counts in Pingora's `Inflight` sketch (4 rows × 8192 counters, 256 KiB, fixed). Like the
/// rate sketch it can over-count when many clients are in flight at once: with `n` requests
/// in flight over all clients, a client's count is inflated on each row by `n / 8192` on
/// average, and a false refusal needs all four rows inflated past the headroom. Keys are
/// formed as in [`RateLimiter`] (IPv6 by /64 by default). Thread-safe, lock-free, never fails.
pub struct ConnLimiter {
    inflight: Inflight,
    max: u32,
    v6_mask: u128,
}

impl std::fmt::Debug for ConnLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnLimiter")
            .field("max_per_ip", &self.max)
            .finish()
    }
}

impl ConnLimiter {
    /// A limiter allowing `max_per_ip` concurrent requests per client; 0 means unlimited (the
    /// config default), and then nothing is counted.
    pub fn new(max_per_ip: u32) -> ConnLimiter {
        ConnLimiter {
            inflight: Inflight::new(),
            max: max_per_ip,
            v6_mask: prefix_mask(DEFAULT_IPV6_PREFIX_LEN),
        }
    }

    /// Groups IPv6 clients by their first `len` bits, as
    /// [`RateLimiter::with_ipv6_prefix_len`].
    pub fn with_ipv6_prefix_len(mut self, len: u8) -> ConnLimiter {
        self.v6_mask = prefix_mask(len);
        self
    }

    /// The configured maximum (0: unlimited).
    pub fn max_per_ip(&self) -> u32 {
        self.max
    }

    /// Takes a slot for one request of `ip`.
    ///
    /// - `Ok(Some(guard))`: the count after this increment is at most the maximum; keep the
    ///   guard for the life of the request (in the `CTX`); dropping it frees the slot.
    /// - `Ok(None)`: the limiter is unlimited (`max_per_ip` 0); nothing is counted.
    /// - `Err(in_flight)`: refused; `in_flight` is the (estimated) number of requests this
    ///   client already has in flight. The increment has already been undone.
    ///
    /// The increment comes first and the check reads its result, so concurrent acquires never
    /// overshoot the maximum (they may both be refused at the edge). Never fails otherwise.
    pub fn acquire(&self, ip: IpAddr) -> Result<Option<Guard>, u32> {
        if self.max == 0 {
            return Ok(None);
        }
        let (guard, count) = self.inflight.incr(key_bits(ip, self.v6_mask), 1);
        if count >= 1 && count <= self.max as isize {
            Ok(Some(guard))
        } else {
            drop(guard);
            Err(u32::try_from(count.saturating_sub(1).max(0)).unwrap_or(u32::MAX))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn class(id: u8, rate: u32, burst: u32) -> LimitClass {
        LimitClass {
            id,
            name: format!("c{id}"),
            rate,
            burst,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn exact_budget_per_ip_and_class() {
        let rl = RateLimiter::new(Duration::from_secs(60), 65536);
        let api = class(1, 8, 2);
        let login = class(2, 3, 0);
        let a = ip("198.51.100.7");
        for i in 0..10u32 {
            match rl.check(&api, a) {
                Decision::Allow {
                    remaining,
                    reset_secs,
                } => {
                    assert_eq!(remaining, 9 - i, "request {i}");
                    assert!((1..=60).contains(&reset_secs), "{reset_secs}");
                }
                d => panic!("request {i} refused: {d:?}"),
            }
        }
        let d = rl.check(&api, a);
        assert!(
            matches!(d, Decision::Deny { retry_after_secs } if (1..=120).contains(&retry_after_secs)),
            "{d:?}"
        );
        // Refusals are not counted: still refused, not further out.
        assert_eq!(rl.check(&api, a), d);
        // Other clients and other classes have their own budgets.
        assert!(rl.check(&api, ip("198.51.100.8")).is_allowed());
        assert!(rl.check(&api, ip("2001:db8:0:1::1")).is_allowed());
        for _ in 0..3 {
            assert!(rl.check(&login, a).is_allowed());
        }
        assert!(!rl.check(&login, a).is_allowed());
        // The mapped form of the same address shares its budget.
        assert!(!rl.check(&api, ip("::ffff:198.51.100.7")).is_allowed());
        // A zero budget refuses everything, asking to wait a window.
        assert_eq!(
            rl.check(&class(3, 0, 0), a),
            Decision::Deny {
                retry_after_secs: 60
            }
        );
    }

    #[test]
    fn ipv6_grouped_by_prefix() {
        let c = class(1, 2, 0);
        let rl = RateLimiter::new(Duration::from_secs(60), 65536);
        assert!(rl.check(&c, ip("2001:db8:0:1::1")).is_allowed());
        assert!(rl.check(&c, ip("2001:db8:0:1::2")).is_allowed());
        // Same /64, new address: same budget.
        assert!(!rl.check(&c, ip("2001:db8:0:1:ffff::3")).is_allowed());
        assert!(rl.check(&c, ip("2001:db8:0:2::1")).is_allowed());
        let rl = RateLimiter::new(Duration::from_secs(60), 65536).with_ipv6_prefix_len(128);
        for i in 1..=4u16 {
            let a = IpAddr::V6(std::net::Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, i));
            assert!(rl.check(&c, a).is_allowed());
        }
        assert_eq!(prefix_mask(0), 0);
        assert_eq!(prefix_mask(200), u128::MAX);
        assert_eq!(prefix_mask(64), u128::MAX << 64);
    }

    /// A limiter on a manual clock at zero, its first window started (by a request of another
    /// client), so window `k` is `[k·w, (k+1)·w)`.
    fn on_manual_clock(w: Duration) -> (RateLimiter, Arc<window::ManualClock>) {
        let clock = Arc::new(window::ManualClock::new());
        let rl = RateLimiter::new(w, 65536).with_clock(clock.clone());
        rl.record(&class(2, 1, 0), ip("198.51.100.1"));
        (rl, clock)
    }

    #[test]
    fn window_edge_gives_no_double_burst() {
        // L = 10 in a 2 s window. Spend the budget late in window 0, then ask every 10 ms until
        // the sliding window that starts at the burst has closed.
        let w = Duration::from_secs(2);
        let (rl, clock) = on_manual_clock(w);
        let c = class(1, 8, 2);
        let limit = 10usize;
        let a = ip("203.0.113.5");
        let step = Duration::from_millis(10);
        clock.advance(Duration::from_millis(1700));
        let mut t = 1.7f64;
        let mut allowed: Vec<f64> = Vec::new();
        let mut log: Vec<(f64, bool)> = Vec::new();
        // The burst goes out back to back at 1.7 s; after it, one request per 10 ms until 3.7 s.
        while rl.check(&c, a).is_allowed() {
            allowed.push(t);
            assert!(allowed.len() <= limit, "over the budget at once");
        }
        for _ in 0..200 {
            clock.advance(step);
            t += 0.01;
            let ok = rl.check(&c, a).is_allowed();
            log.push((t, ok));
            if ok {
                allowed.push(t);
            }
        }
        assert_eq!(
            allowed.len() - allowed.iter().filter(|&&t| t >= 2.0).count(),
            limit
        );
        // At the start of window 1 the estimate is 10 × (1 − f) + 0: nothing passes before
        // f = 1/L = 0.1 (2.2 s), and the first request at 2.2 s does.
        let early: Vec<_> = log.iter().filter(|(t, _)| *t < 2.195).collect();
        assert!(early.iter().all(|(_, ok)| !ok), "refused early: {early:?}");
        assert!(
            log.iter().any(|(t, ok)| *ok && (2.195..2.205).contains(t)),
            "allowed again at 2.2 s: {log:?}"
        );
        // Over every sliding window of 2 s: at most L + ⌊L × f⌋ where f is how far into
        // window 1 the sliding window ends (the documented bound).
        let mut max_count = 0;
        for (i, &t_end) in allowed.iter().enumerate() {
            let count = allowed[..=i]
                .iter()
                .filter(|&&t| t > t_end - 2.0 + 1e-9)
                .count();
            let f = ((t_end - 2.0) / 2.0).max(0.0);
            let bound = limit + (limit as f64 * f + 1e-9).floor() as usize;
            assert!(
                count <= bound,
                "{count} > {bound} in the window ending {t_end:.3}"
            );
            max_count = max_count.max(count);
        }
        assert!(max_count < 2 * limit, "{max_count}: never twice the limit");
    }

    #[test]
    fn retry_after_is_honoured() {
        let (rl, clock) = on_manual_clock(Duration::from_secs(2));
        let c = class(1, 3, 1);
        let a = ip("192.0.2.44");
        clock.advance(Duration::from_millis(300));
        for _ in 0..4 {
            assert!(rl.check(&c, a).is_allowed());
        }
        // Refused with the whole budget in the current window: it must decay in the next one.
        let Decision::Deny { retry_after_secs } = rl.check(&c, a) else {
            panic!("fifth request allowed");
        };
        assert!((1..=4).contains(&retry_after_secs), "{retry_after_secs}");
        // The wait is rounded up to whole seconds: a second before the promised time it is
        // still refused; at the time it is allowed.
        let promised = Duration::from_secs(u64::from(retry_after_secs));
        clock.advance(promised - Duration::from_secs(1));
        assert!(!rl.check(&c, a).is_allowed(), "early");
        clock.advance(Duration::from_secs(1));
        assert!(rl.check(&c, a).is_allowed(), "after {retry_after_secs} s");
        // Now both windows hold requests; spend what is left and wait again.
        while rl.check(&c, a).is_allowed() {}
        let Decision::Deny { retry_after_secs } = rl.check(&c, a) else {
            panic!("not refused");
        };
        assert!((1..=4).contains(&retry_after_secs), "{retry_after_secs}");
        clock.advance(Duration::from_secs(u64::from(retry_after_secs)));
        assert!(rl.check(&c, a).is_allowed(), "after {retry_after_secs} s");
    }

    #[test]
    fn retry_after_formula() {
        // At exactly Δ the estimate reaches L − 1; a little before it is still above.
        let estimate_at = |p: f64, c: f64, f: f64, w: f64, dt: f64| {
            let g = f + dt / w;
            if g < 1.0 {
                p * (1.0 - g) + c
            } else {
                c * (1.0 - (g - 1.0))
            }
        };
        let w = 60.0;
        for &(p, c, f, l) in &[
            (10.0, 0.0, 0.05, 10.0),
            (10.0, 5.0, 0.3, 10.0),
            (120.0, 60.0, 0.5, 120.0),
            (0.0, 10.0, 0.0, 10.0),
            (0.0, 10.0, 0.99, 10.0),
            (10.0, 10.0, 0.5, 10.0),
            (3.0, 12.0, 0.2, 10.0),
        ] {
            assert!(p * (1.0 - f) + c + 1.0 > l, "case {p} {c} {f} refused");
            let secs = retry_after(p, c, f, w, l);
            assert!(secs >= 1 && f64::from(secs) <= 2.0 * w);
            assert!(
                estimate_at(p, c, f, w, f64::from(secs)) + 1.0 <= l + 1e-9,
                "case {p} {c} {f}: still refused after {secs}"
            );
            if secs > 1 {
                assert!(
                    estimate_at(p, c, f, w, f64::from(secs) - 1.0) + 1.0 > l,
                    "case {p} {c} {f}: {secs} is a whole second too long"
                );
            }
        }
        assert_eq!(retry_after(5.0, 5.0, 0.1, w, 0.0), 60);
        assert_eq!(ceil_secs(f64::NAN), 1);
        assert_eq!(ceil_secs(0.2), 1);
        assert_eq!(ceil_secs(1.2), 2);
    }

    /// Resident set size of this process in bytes (`/proc/self/statm` × page size).
    fn rss_bytes() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
        let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
        let page_kib: usize = smaps
            .lines()
            .find_map(|l| l.strip_prefix("KernelPageSize:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(4);
        pages * page_kib * 1024
    }

    /// Set by `memory_stays_flat` for its child process.
    const RSS_CHILD: &str = "GALION_RATELIMIT_RSS_CHILD";

    #[test]
    fn memory_stays_flat() {
        // Measured in a child process running only `memory_child`, so allocations of tests
        // running in parallel threads of this process cannot show up in its RSS.
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .env(RSS_CHILD, "1")
            .args([
                "--exact",
                "ratelimit::tests::memory_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        println!("{stdout}");
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(stdout.contains("memory_child: rss"), "child ran: {stdout}");
    }

    #[test]
    #[ignore = "child process of memory_stays_flat: run alone, so only this test's memory shows in the RSS"]
    fn memory_child() {
        rss_bytes(); // its own buffers are resident from now on
        let at_start = rss_bytes();
        let rl = RateLimiter::new(Duration::from_secs(60), 131_072);
        let constructed = rss_bytes();
        let c = class(1, 100, 20);
        let bytes = rl.memory_bytes();
        assert_eq!(bytes, 8 << 20);
        assert!(!rl.is_allocated(), "no sketch before the first request");
        // The first request allocates the sketch (and touches the code paths once).
        let _ = rl.check(&c, ip("10.0.0.1"));
        assert!(rl.is_allocated());
        let before = rss_bytes();
        let unused = constructed.saturating_sub(at_start);
        let first = before.saturating_sub(constructed);
        println!("memory_child: rss {unused} bytes for the unused limiter, {first} after its first request");
        let mut allowed = 0u32;
        for n in 0..1_000_000u32 {
            let a = IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n));
            allowed += u32::from(rl.check(&c, a).is_allowed());
        }
        let after = rss_bytes();
        let growth = after.saturating_sub(before);
        println!(
            "memory_child: rss before {before} after {after} growth {growth} bytes; sketch {bytes} \
             bytes; {allowed} of 1000000 allowed"
        );
        assert_eq!(allowed, 1_000_000);
        assert_eq!(rl.memory_bytes(), bytes);
        // Run in-process (`--include-ignored`), other tests share the RSS: skip that check.
        if std::env::var_os(RSS_CHILD).is_some() {
            assert!(unused < 1 << 20, "an unused limiter took {unused} bytes");
            assert!(
                first >= bytes / 2,
                "the first request made only {first} bytes resident"
            );
            assert!(growth < 8 << 20, "RSS grew {growth} bytes");
        } else {
            println!("memory_child: not a child process, RSS growth not asserted");
        }
    }

    /// P(X ≥ k) for X ~ Poisson(λ), summed from the tail side (no cancellation).
    fn poisson_tail(lambda: f64, k: u32) -> f64 {
        let mut term = (-lambda).exp();
        for i in 1..=k {
            term *= lambda / f64::from(i);
        }
        let mut sum = 0.0;
        let mut i = k;
        while term > 1e-300 && i < k + 400 {
            sum += term;
            i += 1;
            term *= lambda / f64::from(i);
        }
        sum
    }

    #[test]
    fn no_false_positives() {
        let slots = 131_072usize;
        let clients = 100_000u32;
        let per_client = 10u32;
        let rl = RateLimiter::new(Duration::from_secs(60), slots);
        let c = class(1, 100, 20);
        let mut denied = 0u32;
        // Round-robin, so every client's own count is low while the sketch fills.
        for _ in 0..per_client {
            for n in 0..clients {
                let a = IpAddr::V4(Ipv4Addr::from(0x6400_0000 + n * 7));
                denied += u32::from(!rl.check(&c, a).is_allowed());
            }
        }
        // The sizing rules of RateLimiter::new, for this traffic.
        let t = f64::from(clients * per_client);
        let m = f64::from(c.limit() - per_client);
        let markov = (t / (slots as f64 * m)).powi(4);
        let eps: f64 = 1e-6;
        let markov_slots = t / (m * eps.powf(0.25));
        // Poisson model: each row's noise is 10 × Poisson(clients / slots); a refusal of a
        // request needs 10 × X > L − 1 − own count ≥ 110 on all four rows, i.e. X ≥ 12.
        let need = (m as u32 + 1).div_ceil(per_client);
        let requests = t;
        let poisson_expected =
            |s: f64| requests * poisson_tail(f64::from(clients) / s, need).powi(4);
        let mut small = 1024.0;
        while poisson_expected(small) > 1e-3 {
            small *= 2.0;
        }
        println!(
            "no_false_positives: {denied} denied of {requests} requests; slots {slots}; \
             Markov bound per request (T/(slots·m))^4 = {markov:.2e}; \
             Markov slots for 1e-6 per request: {markov_slots:.0}; \
             Poisson model expects {:.1e} refusals at {slots} slots; \
             smallest power-of-two slots with ≤ 1e-3 expected: {small}",
            poisson_expected(slots as f64)
        );
        assert_eq!(denied, 0);
    }

    #[test]
    fn conn_limiter() {
        let cl = ConnLimiter::new(3);
        let a = ip("198.51.100.9");
        let g1 = cl.acquire(a).unwrap().unwrap();
        let g2 = cl.acquire(a).unwrap().unwrap();
        let g3 = cl.acquire(a).unwrap().unwrap();
        assert_eq!(cl.acquire(a).err(), Some(3));
        // The refused attempt was undone: still exactly one slot short.
        assert_eq!(cl.acquire(a).err(), Some(3));
        // Another client is unaffected; the mapped form is the same client.
        assert!(cl.acquire(ip("198.51.100.10")).unwrap().is_some());
        assert_eq!(cl.acquire(ip("::ffff:198.51.100.9")).err(), Some(3));
        drop(g2);
        let g4 = cl.acquire(a).unwrap().unwrap();
        assert_eq!(cl.acquire(a).err(), Some(3));
        drop((g1, g3, g4));
        assert!(cl.acquire(a).unwrap().is_some());
        // 0 is unlimited and counts nothing.
        let free = ConnLimiter::new(0);
        for _ in 0..100 {
            assert!(free.acquire(a).unwrap().is_none());
        }
    }

    #[test]
    fn headers() {
        let c = LimitClass {
            id: 0,
            name: "api".into(),
            rate: 100,
            burst: 20,
        };
        let p = policy_header(&c, Duration::from_secs(60));
        assert_eq!(p, "\"api\";q=120;w=60");
        assert_eq!(ratelimit_header(&c, 7, 42), "\"api\";r=7;t=42");
        assert!(ratelimit_header(&c, 7, 42).is_sensitive());
        let odd = LimitClass {
            name: "a\"b\\c\u{e9}\n".into(),
            ..c
        };
        assert_eq!(
            policy_header(&odd, Duration::from_secs(1)),
            "\"a\\\"b\\\\c__\";q=120;w=1"
        );
        assert_eq!(RATELIMIT.as_str(), "ratelimit");
        assert_eq!(RATELIMIT_POLICY.as_str(), "ratelimit-policy");
    }

    #[test]
    fn window_and_slots_are_clamped() {
        let rl = RateLimiter::new(Duration::from_millis(10), 0);
        assert_eq!(rl.window(), MIN_WINDOW);
        assert_eq!(rl.memory_bytes(), 64);
        assert!(rl.check(&class(1, 1, 0), ip("10.0.0.1")).is_allowed());
        let rl = RateLimiter::new(Duration::from_millis(2500), 1024);
        assert_eq!(rl.window(), Duration::from_secs(2));
        assert_eq!(
            RateLimiter::new(Duration::from_secs(1 << 40), 1024).window(),
            MAX_WINDOW
        );
    }
}
