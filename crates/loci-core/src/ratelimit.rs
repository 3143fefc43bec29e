//! Keyed rate limits on explicit (virtual or real) time, with a bounded key table.
//!
//! Wraps `governor` with a manually advanced clock so the sans-IO core stays deterministic:
//! the caller passes `now` and the limiter's clock is moved to it.

use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::keyed::HashMapStateStore;
use governor::{Quota, RateLimiter};

type Limiter<K> = RateLimiter<K, HashMapStateStore<K>, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// A per-key limit of `per_second` with a burst of the same size, or a fixed interval between
/// events per key. Keys are bounded: when the table is full, idle keys are purged, and if it is
/// still full, unknown senders are refused (a flood of spoofed sources cannot grow memory).
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: Option<Limiter<K>>,
    clock: FakeRelativeClock,
    epoch: Option<Instant>,
    elapsed: Duration,
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    /// `per_second` events per key, burst of the same size. 0 disables the limit.
    pub fn per_second(per_second: u32, max_keys: usize) -> Self {
        Self::with_quota(NonZeroU32::new(per_second).map(Quota::per_second), max_keys)
    }

    /// One event per `interval` per key. A zero interval disables the limit.
    pub fn one_per(interval: Duration, max_keys: usize) -> Self {
        Self::with_quota(Quota::with_period(interval), max_keys)
    }

    fn with_quota(quota: Option<Quota>, max_keys: usize) -> Self {
        let clock = FakeRelativeClock::default();
        let limiter = quota.map(|q| Limiter::new(q, HashMapStateStore::default(), clock.clone()));
        KeyedLimiter { limiter, clock, epoch: None, elapsed: Duration::ZERO, max_keys: max_keys.max(1) }
    }

    /// True when the event for `key` at `now` is within the limit (and counts it).
    pub fn check(&mut self, now: Instant, key: &K) -> bool {
        let Some(limiter) = &self.limiter else { return true };
        let epoch = *self.epoch.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        if elapsed > self.elapsed {
            self.clock.advance(elapsed - self.elapsed);
            self.elapsed = elapsed;
        }
        if limiter.len() >= self.max_keys {
            limiter.retain_recent();
            if limiter.len() >= self.max_keys {
                return false;
            }
        }
        limiter.check_key(key).is_ok()
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_key_and_refills() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::per_second(2, 10);
        assert!(l.check(t0, &1));
        assert!(l.check(t0, &1));
        assert!(!l.check(t0, &1));
        assert!(l.check(t0, &2), "other keys are independent");
        assert!(l.check(t0 + Duration::from_secs(1), &1), "refilled after a second");
    }

    #[test]
    fn interval_limit() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::one_per(Duration::from_secs(3), 10);
        assert!(l.check(t0, &"a"));
        assert!(!l.check(t0 + Duration::from_secs(2), &"a"));
        assert!(l.check(t0 + Duration::from_secs(3), &"a"));
    }

    #[test]
    fn bounded_table_refuses_new_keys_when_full() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::per_second(1, 3);
        for k in 0..3 {
            assert!(l.check(t0, &k));
        }
        assert!(!l.check(t0, &99), "table full of fresh keys");
        assert!(l.len() <= 3);
        // Once the old keys are idle (bucket refilled), they are purged and new keys fit.
        assert!(l.check(t0 + Duration::from_secs(5), &99));
    }

    #[test]
    fn disabled() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::per_second(0, 1);
        assert!((0..100).all(|k| l.check(t0, &k)));
    }
}
