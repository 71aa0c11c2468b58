//! Reconnect delays: exponential growth with full jitter from the seeded PRNG, clamped before it becomes a
//! `Duration`, so no attempt count can overflow or panic.

use std::time::Duration;

use crate::rng::Rng;

/// The backoff policy (seed: base 2,000 ms, ×2; capped at `max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The cap of the first attempt's delay.
    pub base: Duration,
    /// Growth per attempt.
    pub factor: u32,
    /// The largest cap.
    pub max: Duration,
}

impl Backoff {
    /// The upper bound of attempt `attempt`'s delay (1-based): `min(max, base × factor^(attempt-1))`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use genesys_keepalive::backoff::Backoff;
    /// let b = Backoff { base: Duration::from_secs(2), factor: 2, max: Duration::from_secs(60) };
    /// assert_eq!(b.cap(1), Duration::from_secs(2));
    /// assert_eq!(b.cap(3), Duration::from_secs(8));
    /// assert_eq!(b.cap(u32::MAX), Duration::from_secs(60));
    /// ```
    pub fn cap(&self, attempt: u32) -> Duration {
        let base = self.base.as_nanos();
        let max = self.max.as_nanos();
        let mut cap = base;
        for _ in 1..attempt.max(1) {
            cap = cap.saturating_mul(self.factor as u128);
            if cap >= max || self.factor <= 1 {
                break;
            }
        }
        let cap = cap.min(max).min(u64::MAX as u128) as u64;
        Duration::from_nanos(cap)
    }

    /// Full jitter: uniform in `[0, cap(attempt)]`, at millisecond resolution.
    pub fn delay(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let cap_ms = self.cap(attempt).as_millis().min(u64::MAX as u128) as u64;
        Duration::from_millis(rng.below_or_equal(cap_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use proptest::prelude::{any, prop_assert, proptest};

    proptest! {
        #[test]
        fn delay_is_within_cap_for_any_attempt(attempt in any::<u32>(), base in 1u64..100_000, extra in 0u64..10_000_000, factor in 1u32..10, seed in any::<u64>()) {
            let b = Backoff { base: Duration::from_millis(base), factor, max: Duration::from_millis(base + extra) };
            let mut rng = Rng::new(seed);
            let d = b.delay(attempt, &mut rng);
            prop_assert!(d <= b.cap(attempt));
            prop_assert!(b.cap(attempt) <= b.max);
        }
    }

    #[test]
    fn seed_defect_9_jitter_spreads_clients() {
        let b = Backoff {
            base: Duration::from_secs(2),
            factor: 2,
            max: Duration::from_secs(60),
        };
        let delays: std::collections::HashSet<_> = (0..50)
            .map(|seed| b.delay(3, &mut Rng::new(seed)))
            .collect();
        assert!(
            delays.len() > 40,
            "50 clients should not return together: {delays:?}"
        );
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(8)));
    }
}
