//! Wall-clock values derived from the anchor given at construction: the core never reads a clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Maps monotonic instants to wall-clock times from one `(Instant, SystemTime)` pair.
#[derive(Debug, Clone, Copy)]
pub struct WallClock {
    instant: Instant,
    wall: SystemTime,
}

impl WallClock {
    /// Anchors `instant` at `wall`.
    pub fn new(instant: Instant, wall: SystemTime) -> Self {
        WallClock { instant, wall }
    }

    /// The wall-clock time at `now`.
    pub fn at(&self, now: Instant) -> SystemTime {
        match now.checked_duration_since(self.instant) {
            Some(d) => self.wall.checked_add(d).unwrap_or(self.wall),
            None => self
                .wall
                .checked_sub(self.instant.duration_since(now))
                .unwrap_or(self.wall),
        }
    }

    /// Milliseconds since the Unix epoch at `now` (the seed's `Date.now()`).
    pub fn epoch_ms(&self, now: Instant) -> u64 {
        self.at(now)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64
    }

    /// ISO-8601 with milliseconds (the seed's `new Date().toISOString()`).
    ///
    /// ```
    /// use std::time::{Duration, Instant, UNIX_EPOCH};
    /// use genesys_keepalive::time::WallClock;
    /// let t = Instant::now();
    /// let w = WallClock::new(t, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
    /// assert_eq!(w.iso8601(t + Duration::from_secs(1)), "2023-11-14T22:13:21.123Z");
    /// ```
    pub fn iso8601(&self, now: Instant) -> String {
        humantime::format_rfc3339_millis(self.at(now)).to_string()
    }
}

/// Parses an ISO-8601 / RFC 3339 timestamp (a channel's `expires`).
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s).ok())
}
