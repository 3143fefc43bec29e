//! The ITR data plane's filter in front of the control plane: a destination that misses is
//! reported at most once per [`MISS_HOLD`] per worker (the control plane deduplicates too; this
//! keeps a burst from filling the miss queue). The data plane's workers and the simulator use
//! the same filter.

use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a reported destination is not reported again.
pub const MISS_HOLD: Duration = Duration::from_millis(250);

/// Destinations reported lately: direct-mapped, a colliding destination takes the slot over
/// (at worst a destination is reported again early).
pub struct RecentMisses {
    slots: Box<[Option<(u32, IpAddr, Instant)>]>,
}

/// Slots of a worker's filter.
const SLOTS: usize = 256;

impl Default for RecentMisses {
    fn default() -> Self {
        RecentMisses::new(SLOTS)
    }
}

impl RecentMisses {
    /// A filter of `n` slots (rounded up to a power of two).
    pub fn new(n: usize) -> Self {
        RecentMisses { slots: vec![None; n.next_power_of_two()].into_boxed_slice() }
    }

    /// Whether a miss for `dst` in `iid` at `now` should go to the control plane.
    pub fn should_report(&mut self, iid: u32, dst: IpAddr, now: Instant) -> bool {
        let h = match dst {
            IpAddr::V4(a) => u64::from(u32::from(a)),
            IpAddr::V6(a) => {
                let v = u128::from(a);
                (v as u64) ^ ((v >> 64) as u64)
            }
        } ^ u64::from(iid).rotate_left(32);
        let i = (h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize & (self.slots.len() - 1);
        let slot = &mut self.slots[i];
        if let Some((si, sd, at)) = *slot {
            if si == iid && sd == dst && now.saturating_duration_since(at) < MISS_HOLD {
                return false;
            }
        }
        *slot = Some((iid, dst, now));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_are_reported_once_per_hold() {
        let mut r = RecentMisses::new(16);
        let t0 = Instant::now();
        let a: IpAddr = "10.2.0.1".parse().unwrap();
        let b: IpAddr = "2001:db8::1".parse().unwrap();
        assert!(r.should_report(0, a, t0));
        assert!(!r.should_report(0, a, t0 + Duration::from_millis(10)));
        assert!(r.should_report(1, a, t0), "another instance is another destination");
        assert!(r.should_report(0, b, t0));
        assert!(r.should_report(0, a, t0 + MISS_HOLD + Duration::from_millis(1)));
    }
}
