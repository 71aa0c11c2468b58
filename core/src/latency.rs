//! The RTT and loss window (seed: 100 samples): average latency, percentiles, and loss over recent
//! heartbeats only, so loss is always within `[0, 1]`.

use std::collections::VecDeque;
use std::time::Duration;

/// Recent RTT samples and recent heartbeat outcomes (answered or lost).
#[derive(Debug, Clone)]
pub(crate) struct LatencyWindow {
    capacity: usize,
    /// Microseconds, 4 bytes a sample (up to 71 minutes; longer RTTs are clamped).
    rtts_us: VecDeque<u32>,
    rtt_sum_us: u64,
    outcomes: VecDeque<bool>,
    lost: usize,
}

impl LatencyWindow {
    /// A window of `capacity` samples (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        LatencyWindow {
            capacity,
            rtts_us: VecDeque::with_capacity(capacity),
            rtt_sum_us: 0,
            outcomes: VecDeque::with_capacity(capacity),
            lost: 0,
        }
    }

    /// Records an answered heartbeat and its RTT.
    pub fn record_rtt(&mut self, rtt: Duration) {
        let us = rtt.as_micros().min(u32::MAX as u128) as u32;
        if self.rtts_us.len() == self.capacity {
            if let Some(old) = self.rtts_us.pop_front() {
                self.rtt_sum_us -= u64::from(old);
            }
        }
        self.rtts_us.push_back(us);
        self.rtt_sum_us += u64::from(us);
        self.record_outcome(true);
    }

    /// Records an answered heartbeat whose RTT is unknown (answered implicitly by a later ack).
    pub fn record_answered(&mut self) {
        self.record_outcome(true);
    }

    /// Records a lost heartbeat.
    pub fn record_lost(&mut self) {
        self.record_outcome(false);
    }

    fn record_outcome(&mut self, answered: bool) {
        if self.outcomes.len() == self.capacity {
            if let Some(false) = self.outcomes.pop_front() {
                self.lost -= 1;
            }
        }
        self.outcomes.push_back(answered);
        if !answered {
            self.lost += 1;
        }
    }

    /// Average RTT in ms (0 with no samples).
    pub fn avg_ms(&self) -> f64 {
        if self.rtts_us.is_empty() {
            0.0
        } else {
            self.rtt_sum_us as f64 / self.rtts_us.len() as f64 / 1000.0
        }
    }

    /// Lost share of recent heartbeats, 0 to 1.
    pub fn loss(&self) -> f64 {
        if self.outcomes.is_empty() {
            0.0
        } else {
            self.lost as f64 / self.outcomes.len() as f64
        }
    }

    /// The most recent RTT sample.
    pub fn last(&self) -> Option<Duration> {
        self.rtts_us
            .back()
            .map(|&us| Duration::from_micros(u64::from(us)))
    }

    /// RTT samples held.
    pub fn samples(&self) -> usize {
        self.rtts_us.len()
    }

    /// The largest RTT held (zero with no samples).
    pub fn max_rtt(&self) -> Duration {
        let us = self.rtts_us.iter().copied().max().unwrap_or(0);
        Duration::from_micros(u64::from(us))
    }

    /// Several percentiles (0-100) in ms from one sorted copy of the window (0 with no samples).
    pub fn percentiles_ms<const N: usize>(&self, ps: [f64; N]) -> [f64; N] {
        if self.rtts_us.is_empty() {
            return [0.0; N];
        }
        let mut v: Vec<u32> = self.rtts_us.iter().copied().collect();
        v.sort_unstable();
        ps.map(|p| {
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            let at = rank.clamp(1, v.len()) - 1;
            v.get(at).map_or(0.0, |us| *us as f64 / 1000.0)
        })
    }

    /// Forgets everything (a new connection).
    pub fn clear(&mut self) {
        self.rtts_us.clear();
        self.rtt_sum_us = 0;
        self.outcomes.clear();
        self.lost = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_the_last_n_samples() {
        let mut w = LatencyWindow::new(3);
        for ms in [100, 200, 300, 400] {
            w.record_rtt(Duration::from_millis(ms));
        }
        assert_eq!(w.samples(), 3);
        assert!((w.avg_ms() - 300.0).abs() < 1e-9);
        assert_eq!(w.percentiles_ms([50.0, 99.0]), [300.0, 400.0]);
    }

    #[test]
    fn seed_defect_3_loss_stays_in_range_and_is_recent() {
        let mut w = LatencyWindow::new(4);
        for _ in 0..4 {
            w.record_lost();
        }
        assert_eq!(w.loss(), 1.0);
        for _ in 0..4 {
            w.record_answered();
        }
        assert_eq!(w.loss(), 0.0, "loss is over the recent window only");
        for _ in 0..100 {
            w.record_answered();
        }
        assert!(w.loss() >= 0.0);
    }
}
