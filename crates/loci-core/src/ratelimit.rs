//! Keyed rate limits on explicit (virtual or real) time, with a bounded key table.
//!
//! Wraps `governor` with a manually advanced clock so the sans-IO core stays deterministic:
//! the caller passes `now` and the limiter's clock is moved to it.

use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::FakeRelativeClock;
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// One key's bucket on the shared manual clock.
type Bucket = RateLimiter<NotKeyed, InMemoryState, FakeRelativeClock, NoOpMiddleware<Nanos>>;

/// A per-key limit of `per_second` with a burst of the same size, or a fixed interval between
/// events per key. Keys are bounded: when the table is full, idle keys (whose bucket has
/// refilled, so forgetting them changes nothing) are purged, and if it is still full, new keys
/// are refused while known ones keep their limit (a flood of spoofed sources can neither grow
/// memory nor lock out the senders already known). One bucket per key, in our own map, so
/// that the table knows its keys: governor's keyed store cannot tell a known key from a new one.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    quota: Option<Quota>,
    /// Each key's bucket and the time (since `epoch`) of its last event.
    keys: HashMap<K, (Bucket, Duration)>,
    clock: FakeRelativeClock,
    epoch: Option<Instant>,
    elapsed: Duration,
    max_keys: usize,
    /// A purge that freed nothing is not tried again before this (a flood of new keys would
    /// otherwise scan the whole table for each).
    next_purge: Duration,
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
        KeyedLimiter {
            quota,
            keys: HashMap::new(),
            clock: FakeRelativeClock::default(),
            epoch: None,
            elapsed: Duration::ZERO,
            max_keys: max_keys.max(1),
            next_purge: Duration::ZERO,
        }
    }

    /// True when the event for `key` at `now` is within the limit (and counts it).
    pub fn check(&mut self, now: Instant, key: &K) -> bool {
        let Some(quota) = self.quota else { return true };
        let epoch = *self.epoch.get_or_insert(now);
        let elapsed = now.saturating_duration_since(epoch);
        if elapsed > self.elapsed {
            self.clock.advance(elapsed - self.elapsed);
            self.elapsed = elapsed;
        }
        let at = self.elapsed;
        if let Some((bucket, last)) = self.keys.get_mut(key) {
            *last = at;
            return bucket.check().is_ok();
        }
        if self.keys.len() >= self.max_keys {
            let refill = quota.burst_size_replenished_in();
            if at < self.next_purge {
                return false;
            }
            self.keys.retain(|_, (_, last)| at.saturating_sub(*last) < refill);
            if self.keys.len() >= self.max_keys {
                self.next_purge = at + refill;
                return false;
            }
        }
        let bucket = Bucket::direct_with_clock(quota, self.clock.clone());
        let ok = bucket.check().is_ok();
        self.keys.insert(key.clone(), (bucket, at));
        ok
    }

    /// Number of keys currently tracked.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
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
        // Known keys keep their limit while the table is full (a flood of new keys does not
        // lock them out).
        let t1 = t0 + Duration::from_secs(1);
        assert!(l.check(t1, &0), "a known key, refilled");
        assert!(!l.check(t1, &0), "and still limited");
        // Once the old keys are idle (bucket refilled), they are purged and new keys fit.
        assert!(l.check(t0 + Duration::from_secs(5), &99));
        assert!(l.len() <= 3);
    }

    #[test]
    fn a_flood_of_new_keys_neither_grows_the_table_nor_locks_out_known_keys() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::per_second(10, 100);
        for k in 0..100u32 {
            assert!(l.check(t0, &k));
        }
        // 100,000 spoofed sources in one second, while key 7 sends 10 per second.
        let mut known_ok = 0;
        for i in 0..100_000u32 {
            let t = t0 + Duration::from_micros(u64::from(i) * 10);
            assert!(!l.check(t, &(1_000_000 + i)), "new key {i} admitted into a full table of busy keys");
            if i % 10_000 == 0 && l.check(t, &7) {
                known_ok += 1;
            }
            // The other known keys send too (every 0.5 s: their buckets never refill), so none
            // is idle and nothing can be purged.
            if i % 50_000 == 0 {
                for k in (0..100u32).filter(|&k| k != 7) {
                    l.check(t, &k);
                }
            }
        }
        assert_eq!(l.len(), 100);
        assert_eq!(known_ok, 10, "the known key kept its 10 per second");
    }

    #[test]
    fn disabled() {
        let t0 = Instant::now();
        let mut l = KeyedLimiter::per_second(0, 1);
        assert!((0..100).all(|k| l.check(t0, &k)));
    }
}
