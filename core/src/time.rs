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

    /// The first instant at or after `at` whose wall-clock time is a whole multiple of `grid` since the Unix
    /// epoch (`at` itself for a zero grid). Machines anchored in one process share the grid, so deadlines
    /// rounded up with it fall due together.
    ///
    /// ```
    /// use std::time::{Duration, Instant, UNIX_EPOCH};
    /// use genesys_keepalive::time::WallClock;
    /// let t = Instant::now();
    /// let w = WallClock::new(t, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
    /// let grid = Duration::from_millis(10);
    /// assert_eq!(w.align_up(t, grid), t + Duration::from_millis(7));
    /// assert_eq!(w.align_up(t + Duration::from_millis(7), grid), t + Duration::from_millis(7));
    /// assert_eq!(w.align_up(t, Duration::ZERO), t);
    /// ```
    pub fn align_up(&self, at: Instant, grid: Duration) -> Instant {
        let grid = grid.as_nanos();
        if grid == 0 {
            return at;
        }
        let Ok(since_epoch) = self.at(at).duration_since(UNIX_EPOCH) else {
            return at;
        };
        match since_epoch.as_nanos() % grid {
            0 => at,
            // Below `grid`, which is at most a `Duration`'s nanoseconds of a bounded slack.
            r => u64::try_from(grid - r)
                .ok()
                .and_then(|late| at.checked_add(Duration::from_nanos(late)))
                .unwrap_or(at),
        }
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
        format_epoch_ms(self.epoch_ms(now))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` for milliseconds since the epoch (proleptic Gregorian, UTC).
pub fn format_epoch_ms(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, sod) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days);
    let mut out = String::with_capacity(24);
    let mut b = itoa::Buffer::new();
    let year = b.format(y);
    for _ in year.len()..4 {
        out.push('0');
    }
    out.push_str(year);
    let two = |out: &mut String, v: u64| {
        out.push((b'0' + (v / 10) as u8) as char);
        out.push((b'0' + (v % 10) as u8) as char);
    };
    out.push('-');
    two(&mut out, m);
    out.push('-');
    two(&mut out, d);
    out.push('T');
    two(&mut out, sod / 3600);
    out.push(':');
    two(&mut out, sod / 60 % 60);
    out.push(':');
    two(&mut out, sod % 60);
    out.push('.');
    let milli = ms % 1000;
    out.push((b'0' + (milli / 100) as u8) as char);
    two(&mut out, milli % 100);
    out.push('Z');
    out
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (non-negative here).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// Parses an ISO-8601 / RFC 3339 timestamp (a channel's `expires`).
pub fn parse_iso8601(s: &str) -> Option<SystemTime> {
    humantime::parse_rfc3339_weak(s.trim_end_matches('Z'))
        .ok()
        .or_else(|| humantime::parse_rfc3339(s).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting_matches_humantime_across_the_calendar() {
        let mut ms: u64 = 0;
        // Leap days, year ends, centuries, milliseconds: a spread of instants up to year 9999.
        while ms < 253_402_300_799_999 {
            let want = humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms))
                .to_string();
            assert_eq!(format_epoch_ms(ms), want, "{ms}");
            ms = ms * 3 / 2 + 86_399_937;
        }
        assert_eq!(format_epoch_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            format_epoch_ms(4_107_542_399_999),
            "2100-02-28T23:59:59.999Z"
        );
    }
}
