//! One timer table: a deadline per purpose. `poll_timeout` is the earliest; every input first fires what is
//! due, earliest first.

use std::time::Instant;

/// What a deadline is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// No inbound frame for `max_idle`: the peer is dead.
    Idle,
    /// The oldest outstanding heartbeat counts as lost.
    AckTimeout,
    /// The socket has not opened in time.
    ConnectTimeout,
    /// The outstanding REST call has had no answer in time.
    HttpTimeout,
    /// A planned-close rollover must be finished: close the old socket now.
    RolloverDeadline,
    /// Refresh the access token before it expires.
    TokenRefresh,
    /// The connection has been healthy for `min_uptime`: reset the attempt counter.
    MinUptime,
    /// Start the next connection attempt.
    Reconnect,
    /// Retry a throttled or failed REST call.
    HttpRetry,
    /// Resubscribe before the channel expires.
    Resubscribe,
    /// Send the next heartbeat.
    Heartbeat,
    /// A socket we closed has not ended within its linger time: discard it (the earliest of them).
    Linger,
}

impl Timer {
    /// Every timer, in table order (ties between equal deadlines fire in this order).
    pub const ALL: [Timer; 12] = [
        Timer::Idle,
        Timer::AckTimeout,
        Timer::ConnectTimeout,
        Timer::HttpTimeout,
        Timer::RolloverDeadline,
        Timer::TokenRefresh,
        Timer::MinUptime,
        Timer::Reconnect,
        Timer::HttpRetry,
        Timer::Resubscribe,
        Timer::Heartbeat,
        Timer::Linger,
    ];

    /// The timer's slot: its declaration order, which is the order of [`Timer::ALL`].
    fn index(self) -> usize {
        self as usize
    }
}

/// A deadline per [`Timer`].
#[derive(Debug, Clone, Default)]
pub struct TimerTable {
    deadlines: [Option<Instant>; Timer::ALL.len()],
}

impl TimerTable {
    /// Sets (or moves) a deadline.
    pub fn set(&mut self, timer: Timer, at: Instant) {
        if let Some(d) = self.deadlines.get_mut(timer.index()) {
            *d = Some(at);
        }
    }

    /// Clears a deadline.
    pub fn clear(&mut self, timer: Timer) {
        if let Some(d) = self.deadlines.get_mut(timer.index()) {
            *d = None;
        }
    }

    /// The deadline, if set.
    pub fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines.get(timer.index()).copied().flatten()
    }

    /// True when set.
    pub fn is_set(&self, timer: Timer) -> bool {
        self.get(timer).is_some()
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The earliest timer due at `now` and its deadline, cleared from the table.
    pub fn pop_due(&mut self, now: Instant) -> Option<(Timer, Instant)> {
        let mut best: Option<(usize, Instant)> = None;
        for (i, d) in self.deadlines.iter().enumerate() {
            if let Some(d) = *d {
                if d <= now && best.is_none_or(|(_, b)| d < b) {
                    best = Some((i, d));
                }
            }
        }
        let (i, d) = best?;
        let timer = *Timer::ALL.get(i)?;
        self.clear(timer);
        Some((timer, d))
    }

    /// Clears every deadline.
    pub fn clear_all(&mut self) {
        self.deadlines = [None; Timer::ALL.len()];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn slots_follow_the_table_order() {
        for (i, t) in Timer::ALL.iter().enumerate() {
            assert_eq!(t.index(), i, "{t:?}");
        }
    }

    #[test]
    fn pops_earliest_first_and_only_due() {
        let t0 = Instant::now();
        let mut t = TimerTable::default();
        t.set(Timer::Heartbeat, t0 + Duration::from_secs(2));
        t.set(Timer::Idle, t0 + Duration::from_secs(1));
        t.set(Timer::Reconnect, t0 + Duration::from_secs(9));
        assert_eq!(t.next(), Some(t0 + Duration::from_secs(1)));
        let now = t0 + Duration::from_secs(3);
        assert_eq!(
            t.pop_due(now),
            Some((Timer::Idle, t0 + Duration::from_secs(1)))
        );
        assert_eq!(
            t.pop_due(now),
            Some((Timer::Heartbeat, t0 + Duration::from_secs(2)))
        );
        assert_eq!(t.pop_due(now), None);
        assert!(t.is_set(Timer::Reconnect));
    }
}
