//! The rate limiter's memory: two count-min sketches (Pingora's lock-free
//! `pingora_limits::estimator::Estimator`), one for the current fixed window and one for the
//! previous, rolled on a [`Clock`].
//!
//! This replaces `pingora_limits::rate::Rate` (0.9.1), which the limiter used before, for two
//! reasons:
//!
//! - `Rate` asserts on a lost window-reset race (`assert!(new >= now - 1000)` when another
//!   thread reset the window first, with `now - 1000` underflowing within a second of the
//!   limiter's creation), and subtracts a timestamp another thread may have moved past its own
//!   (`now - last_reset`, an overflow panic in debug builds): a worker thread could panic on a
//!   request. Here a lost race is only a re-read, and time never goes backwards in the
//!   arithmetic (`saturating_sub`).
//! - `Rate` reads `Instant::now()` itself, so its behaviour at a window's edge could only be
//!   tested by sleeping. Here time comes from a [`Clock`]: [`SystemClock`] in the proxy,
//!   [`ManualClock`] in tests, which step it exactly.
//!
//! Windows are aligned: when the clock has passed the current window's end, the new window
//! starts where the old one ended (a multiple of the window length after the first), not at
//! the request that noticed (as `Rate` did), so the elapsed fraction the sliding estimate
//! uses is the true one even after idle periods.

use pingora_limits::estimator::Estimator;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the rate limiter reads the time. Only differences matter: `now` is a duration since
/// any fixed start, and must not go backwards (if it does, the limiter treats it as no time
/// passing).
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The time now, since the clock's start.
    fn now(&self) -> Duration;
}

/// The monotonic system clock ([`Instant`]), from the moment it was created.
#[derive(Debug)]
pub struct SystemClock {
    start: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            start: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]): for tests of anything
/// that depends on the limiter's windows, without sleeping.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ns: AtomicU64,
}

impl ManualClock {
    /// A clock at zero.
    pub fn new() -> ManualClock {
        ManualClock::default()
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.now_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns.load(Ordering::SeqCst))
    }
}

/// What the sketches say about one key now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Counts {
    /// Counted in the previous window (0 if that window is older than one window).
    pub prev: f64,
    /// Counted in the current window.
    pub curr: f64,
    /// How far into the current window the clock is, in `[0, 1)`.
    pub frac: f64,
}

/// Two fixed windows of counts, rolled on a clock. Lock-free; never fails or panics.
pub(crate) struct Windows {
    sketches: [Estimator; 2],
    /// Which of `sketches` is the current window (0 or 1).
    current: AtomicUsize,
    /// Where the current window started, in nanoseconds on the clock.
    start_ns: AtomicU64,
    window_ns: u64,
    clock: Arc<dyn Clock>,
}

/// Attempts to roll the windows before reading the state as it is: other threads that win the
/// race leave it rolled, so a second attempt finds nothing to do.
const ROLL_ATTEMPTS: usize = 4;

fn ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Windows {
    /// Empty windows of `window` (at least a nanosecond), `hashes` × `slots` counters each; the
    /// first window starts now on `clock`.
    pub(crate) fn new(
        window: Duration,
        hashes: usize,
        slots: usize,
        clock: Arc<dyn Clock>,
    ) -> Windows {
        Windows {
            sketches: [Estimator::new(hashes, slots), Estimator::new(hashes, slots)],
            current: AtomicUsize::new(0),
            start_ns: AtomicU64::new(ns(clock.now())),
            window_ns: ns(window).max(1),
            clock,
        }
    }

    /// Rolls the windows if the clock has passed the current one's end; returns the current
    /// sketch's index and the time since the current window started.
    fn roll(&self) -> (usize, u64) {
        let mut attempt = 0;
        loop {
            let now = ns(self.clock.now());
            let start = self.start_ns.load(Ordering::Acquire);
            let past = now.saturating_sub(start);
            if past < self.window_ns || attempt == ROLL_ATTEMPTS {
                return (self.current.load(Ordering::Acquire), past % self.window_ns);
            }
            attempt += 1;
            let periods = past / self.window_ns;
            let new_start = start.saturating_add(periods.saturating_mul(self.window_ns));
            if self
                .start_ns
                .compare_exchange(start, new_start, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                let old = self.current.load(Ordering::Acquire);
                let next = 1 - old;
                // The old previous window becomes the new current one, empty.
                self.sketches[next].reset();
                if periods >= 2 {
                    // Idle for more than a window: the old current one is too old to count.
                    self.sketches[old].reset();
                }
                self.current.store(next, Ordering::Release);
                return (next, now - new_start);
            }
            // Another thread rolled first: read its result.
        }
    }

    /// The counts of `key` now.
    pub(crate) fn counts<K: Hash>(&self, key: &K) -> Counts {
        let (cur, past) = self.roll();
        Counts {
            prev: self.sketches[1 - cur].get(key).max(0) as f64,
            curr: self.sketches[cur].get(key).max(0) as f64,
            frac: past as f64 / self.window_ns as f64,
        }
    }

    /// Counts one event of `key` in the current window. (One counted while another thread
    /// rolls the windows may land in the window that just ended: counted as previous, never
    /// lost.)
    pub(crate) fn observe<K: Hash>(&self, key: &K) {
        let (cur, _) = self.roll();
        self.sketches[cur].incr(key, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn windows(clock: &Arc<ManualClock>) -> Windows {
        Windows::new(Duration::from_secs(10), 4, 64, clock.clone())
    }

    #[test]
    fn counts_roll_with_the_clock() {
        let clock = Arc::new(ManualClock::new());
        let w = windows(&clock);
        for _ in 0..3 {
            w.observe(&"a");
        }
        w.observe(&"b");
        clock.advance(Duration::from_millis(2500));
        assert_eq!(
            w.counts(&"a"),
            Counts {
                prev: 0.0,
                curr: 3.0,
                frac: 0.25
            }
        );
        // Into the next window: what was current is previous.
        clock.advance(Duration::from_secs(10));
        w.observe(&"a");
        assert_eq!(
            w.counts(&"a"),
            Counts {
                prev: 3.0,
                curr: 1.0,
                frac: 0.25
            }
        );
        // Windows stay aligned to the first one's start, however late the next request is.
        clock.advance(Duration::from_millis(9_000));
        assert_eq!(w.counts(&"a").frac, 0.15);
        assert_eq!(w.counts(&"a").prev, 1.0);
        // Idle for over a window: nothing counts any more.
        clock.advance(Duration::from_secs(25));
        assert_eq!(
            w.counts(&"a"),
            Counts {
                prev: 0.0,
                curr: 0.0,
                frac: 0.65
            }
        );
    }

    /// A clock that goes backwards, jumps by centuries or stands still never panics and never
    /// makes counts negative.
    #[test]
    fn odd_clocks_are_harmless() {
        #[derive(Debug)]
        struct Backwards(AtomicU64);
        impl Clock for Backwards {
            fn now(&self) -> Duration {
                // 100 s, 99 s, 98 s, ...
                Duration::from_secs(self.0.fetch_sub(1, Ordering::SeqCst))
            }
        }
        let w = Windows::new(
            Duration::from_secs(1),
            4,
            64,
            Arc::new(Backwards(AtomicU64::new(100))),
        );
        for _ in 0..50 {
            w.observe(&1u8);
            let c = w.counts(&1u8);
            assert!(c.prev >= 0.0 && c.curr >= 0.0 && (0.0..1.0).contains(&c.frac));
        }
        let clock = Arc::new(ManualClock::new());
        let w = windows(&clock);
        w.observe(&1u8);
        clock.advance(Duration::from_secs(u64::MAX / 4));
        assert_eq!(w.counts(&1u8).curr, 0.0);
    }

    /// Many threads rolling the same windows at once (what made Pingora's `Rate` assert): no
    /// panic, and no count is lost (one made while another thread is rolling may be counted in
    /// the window that just ended, never dropped).
    #[test]
    fn concurrent_rolls() {
        let clock = Arc::new(ManualClock::new());
        let w = Arc::new(Windows::new(
            Duration::from_millis(1),
            4,
            1024,
            clock.clone(),
        ));
        for round in 0..20u64 {
            clock.advance(Duration::from_millis(1));
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let w = w.clone();
                    std::thread::spawn(move || {
                        for _ in 0..250 {
                            w.observe(&round);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().expect("no panic");
            }
            let c = w.counts(&round);
            assert_eq!(c.prev + c.curr, 1000.0, "round {round}: {c:?}");
        }
    }
}
