//! A fixed-size latency histogram: 32 half-octave buckets from 64 µs up, counts only, mergeable across
//! connections. Used for RTTs and for how late heartbeats went out against their schedule, so that a
//! process with thousands of connections can state p50/p99 over all of them without keeping samples.

use std::time::Duration;

use serde::Serialize;

/// Number of buckets.
const BUCKETS: usize = 32;
/// The upper bound of bucket 0, in microseconds; every later bucket is √2 wider than the one before
/// (bounds 64, 90, 128, 181, 256, … µs; bucket 31 is everything above ≈ 2.9 s).
const FIRST_BOUND_US: u64 = 64;

/// Counts of durations by bucket (128 bytes, no heap).
///
/// ```
/// use std::time::Duration;
/// use genesys_keepalive::Histogram;
///
/// let mut a = Histogram::default();
/// for ms in [1, 2, 3, 40] {
///     a.record(Duration::from_millis(ms));
/// }
/// let mut all = Histogram::default();
/// all.merge(&a);
/// assert_eq!(all.count(), 4);
/// // A quantile is the upper bound of the bucket it falls in (within a factor √2 of the samples).
/// let p50 = all.quantile(0.5).unwrap();
/// assert!(p50 >= Duration::from_millis(2) && p50 <= Duration::from_micros(2_900));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub struct Histogram {
    counts: [u32; BUCKETS],
}

/// The upper bound of bucket `i`, in microseconds (bucket `BUCKETS - 1` has none).
fn bound_us(i: usize) -> u64 {
    // 64 · 2^(i/2), times √2 for odd i (181/128 ≈ √2).
    let base = FIRST_BOUND_US << (i / 2);
    if i % 2 == 1 {
        base * 181 / 128
    } else {
        base
    }
}

impl Histogram {
    /// Counts one duration.
    pub fn record(&mut self, d: Duration) {
        let us = d.as_micros().min(u64::MAX as u128) as u64;
        let i = (0..BUCKETS - 1)
            .find(|&i| us <= bound_us(i))
            .unwrap_or(BUCKETS - 1);
        if let Some(c) = self.counts.get_mut(i) {
            *c = c.saturating_add(1);
        }
    }

    /// Adds every count of `other` (e.g. another connection's).
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The `q` quantile (0 to 1) as the upper bound of its bucket; `None` with no samples. The last bucket
    /// has no upper bound: a quantile there is reported as its lower bound.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += u64::from(c);
            if seen >= rank {
                let i = i.min(BUCKETS - 2);
                return Some(Duration::from_micros(bound_us(i)));
            }
        }
        Some(Duration::from_micros(bound_us(BUCKETS - 2)))
    }

    /// Every bucket as (upper bound, count), the last with `None` for "above the previous bound".
    pub fn buckets(&self) -> impl Iterator<Item = (Option<Duration>, u64)> + '_ {
        self.counts.iter().enumerate().map(|(i, &c)| {
            let bound = (i < BUCKETS - 1).then(|| Duration::from_micros(bound_us(i)));
            (bound, u64::from(c))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_by_about_root_two() {
        for i in 1..BUCKETS - 1 {
            let r = bound_us(i) as f64 / bound_us(i - 1) as f64;
            assert!((1.40..1.43).contains(&r), "bucket {i}: ratio {r}");
        }
        assert_eq!(bound_us(0), 64);
        assert!(bound_us(BUCKETS - 2) > 2_000_000);
    }

    #[test]
    fn quantiles_land_in_the_right_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..99 {
            h.record(Duration::from_millis(1));
        }
        h.record(Duration::from_millis(30));
        // 1 ms = 1000 µs falls in the bucket bounded by 1024 µs.
        assert_eq!(h.quantile(0.5), Some(Duration::from_micros(1024)));
        assert_eq!(h.quantile(0.99), Some(Duration::from_micros(1024)));
        let top = h.quantile(1.0).unwrap();
        assert!(
            top >= Duration::from_millis(30) && top < Duration::from_millis(43),
            "{top:?}"
        );
        assert_eq!(h.count(), 100);
    }

    #[test]
    fn huge_and_zero_durations_are_counted() {
        let mut h = Histogram::default();
        h.record(Duration::ZERO);
        h.record(Duration::MAX);
        assert_eq!(h.count(), 2);
        assert_eq!(
            h.buckets().next(),
            Some((Some(Duration::from_micros(64)), 1))
        );
        assert_eq!(h.buckets().last(), Some((None, 1)));
        assert!(h.quantile(1.0).is_some());
    }
}
