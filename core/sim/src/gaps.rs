//! The simulator's ledger of gap reports: when each notification was published and which windows the
//! machine reported, so that a run can check that every notification it did not deliver lies inside a
//! reported [`Gap`].

use std::time::{Duration, Instant, SystemTime};

use genesys_keepalive::Gap;

use crate::hash::FastMap;

/// Publish times and reported windows, on the simulator's clock.
#[derive(Debug, Default)]
pub(crate) struct GapLedger {
    /// Publish time of each notification, by sequence number (1, 2, …: index + 1).
    published_at: Vec<Instant>,
    /// Reported windows, on the simulator's clock.
    windows: Vec<(Instant, Instant)>,
    /// The first and the last time a socket opened (a window closes there).
    first_open: Option<Instant>,
    last_open: Option<Instant>,
}

impl GapLedger {
    pub(crate) fn published(&mut self, at: Instant) {
        self.published_at.push(at);
    }

    pub(crate) fn opened(&mut self, at: Instant) {
        self.first_open.get_or_insert(at);
        self.last_open = Some(at);
    }

    /// A gap report, its wall-clock ends mapped back through the run's `(start, wall)` anchor.
    pub(crate) fn reported(&mut self, gap: &Gap, start: Instant, wall: SystemTime) {
        let at = |t| to_instant(t, start, wall);
        self.windows.push((at(gap.from), at(gap.to)));
    }

    /// If the process died at `end` with the checkpoint `since` (the machine's `receiving_since`, mapped
    /// to the simulator's clock; `None`: nothing recorded, a fresh start): the notifications published
    /// after the first socket opened and up to `end`, never delivered and in no reported window (what a
    /// restart gap must cover), and how many of them lie before `since` (which no report would cover: a
    /// restart gap runs from `since` on; must be 0).
    pub(crate) fn at_crash(
        &self,
        delivered: &FastMap<u64, u32>,
        end: Instant,
        since: Option<Instant>,
    ) -> (u64, u64) {
        let Some(first) = self.first_open else {
            return (0, 0);
        };
        let (mut owed, mut uncovered) = (0, 0);
        for (i, &t) in self.published_at.iter().enumerate() {
            let seq = i as u64 + 1;
            if t < first || t > end || delivered.contains_key(&seq) {
                continue;
            }
            if self.windows.iter().any(|&(from, to)| from <= t && t <= to) {
                continue;
            }
            owed += 1;
            if since.is_none_or(|s| s > t) {
                uncovered += 1;
            }
        }
        (owed, uncovered)
    }

    /// How many notifications were published after the first socket opened and before the last one opened
    /// (or the machine stopped), are older than `horizon`, were never delivered, and lie in no reported
    /// window. Everything published in that span must be delivered or reported: each window closes when a
    /// socket opens or the machine stops.
    pub(crate) fn outside(
        &self,
        delivered: &FastMap<u64, u32>,
        horizon: Instant,
        stopped_at: Option<Instant>,
    ) -> u64 {
        let Some(first) = self.first_open else {
            return 0;
        };
        let until = self.last_open.into_iter().chain(stopped_at).max();
        let Some(until) = until.map(|u| u.min(horizon)) else {
            return 0;
        };
        let mut outside = 0;
        for (i, &t) in self.published_at.iter().enumerate() {
            let seq = i as u64 + 1;
            if t < first || t > until || delivered.contains_key(&seq) {
                continue;
            }
            if !self.windows.iter().any(|&(from, to)| from <= t && t <= to) {
                outside += 1;
            }
        }
        outside
    }

    /// Reported windows and their total length.
    pub(crate) fn totals(&self) -> (u64, Duration) {
        let total = self
            .windows
            .iter()
            .map(|&(f, t)| t.saturating_duration_since(f))
            .sum();
        (self.windows.len() as u64, total)
    }
}

/// A wall time of the run mapped to the simulator's clock through its `(start, wall)` anchor.
pub(crate) fn to_instant(t: SystemTime, start: Instant, wall: SystemTime) -> Instant {
    match t.duration_since(wall) {
        Ok(d) => start + d,
        Err(e) => start.checked_sub(e.duration()).unwrap_or(start),
    }
}
