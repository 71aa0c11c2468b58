//! Gap reports: a window opens when the active socket is lost (or its channel is gone) without a
//! completed make-before-break, or, before the first connect, for a restart of the process
//! ([`KeepAliveMachine::resume_after`]); it is reported when a new socket is open with its subscriptions
//! confirmed, or when the machine stops first. A rollover that completed, a token refresh and a
//! shutdown of a healthy connection open none.
//!
//! Windows are kept in wall-clock time: a restart's start comes from another process (its checkpoint),
//! possibly from before this machine's first instant, so an `Instant` cannot hold it. Instants of this
//! machine map to wall time through its anchor ([`crate::time::WallClock`]), which keeps their order.

use std::time::{Duration, Instant, SystemTime};

use super::KeepAliveMachine;
use crate::config::ProfileKind;
use crate::event::Action;
use crate::gap::{Gap, GapReason};

/// The gap side's own fields.
#[derive(Debug, Default)]
pub(super) struct Gaps {
    /// The start of the window not yet reported, and why it opened.
    open: Option<(SystemTime, GapReason)>,
    /// Where the last reported window ended: what came before is reported already.
    last_end: Option<SystemTime>,
    /// Set by the stop: up to when the machine was receiving (see [`KeepAliveMachine::receiving_since`]);
    /// `None` if it had nothing at stake.
    stopped_at: Option<SystemTime>,
}

impl KeepAliveMachine {
    /// The process restarted: the previous one (this connection's earlier life) was last known to be
    /// receiving at `since`, a wall time it recorded (its [`KeepAliveMachine::receiving_since`], kept in a
    /// checkpoint). Call it after [`KeepAliveMachine::new`] and before the first socket opens: it opens a
    /// gap window with reason [`GapReason::Restart`] from `since`, closed and reported as any other (when
    /// the first socket is open with its subscriptions confirmed, or at the stop) and counted in
    /// `Stats::gaps` and `Stats::gap_ms`.
    ///
    /// A `since` later than this machine's present (a clock that stepped back, or another host's clock
    /// ahead) is clamped to the present: the restart is still reported, from now to the confirmation, so
    /// that the window is never inverted and the application still learns of the restart. No window opens
    /// (and false is returned) for a machine that reports no gaps (the keepalive-frame profile, or no
    /// topics), once a socket has opened, or after the stop. True if the window opened.
    pub fn resume_after(&mut self, since: SystemTime) -> bool {
        if self.setup.ever_opened || self.is_stopped() || !self.tracks_gaps() {
            return false;
        }
        let now = self.wall.at(self.now);
        self.open_gap_wall(since.min(now), GapReason::Restart);
        self.gaps.open.is_some()
    }

    /// What a checkpoint must store for a later [`KeepAliveMachine::resume_after`]: the start a gap would
    /// have if the process died now, so that a crash at any moment leaves no undelivered notification
    /// outside a reported window. It is the earliest of: the open window's start (not yet reported), the
    /// active socket's last proof of receiving (when the last heartbeat it answered was sent, or its
    /// opening) and a rollover's old socket whose delivery is not yet proved; but never before the end of
    /// the last reported window (what came before is reported already).
    ///
    /// `None` when nothing is at stake: a machine that reports no gaps, or one that has had no socket and
    /// no restart window (a fresh start that has not connected yet: a restart then is a fresh start too).
    /// After the stop, the time of the stop less the largest recent round trip (a bound on how long the
    /// last frames were on the wire; the machine delivers nothing after it stops), never before the end of
    /// the last reported window: the stop reports every window still open.
    pub fn receiving_since(&self) -> Option<SystemTime> {
        if self.is_stopped() {
            return self.gaps.stopped_at;
        }
        if !self.tracks_gaps() {
            return None;
        }
        let open = self.gaps.open.map(|(from, _)| from);
        let active = self
            .active
            .as_ref()
            .map(|c| self.wall.at(c.receiving_since));
        let drains = self.drains_at_stake().map(|t| self.wall.at(t));
        let earliest = open.into_iter().chain(active).chain(drains).min()?;
        Some(earliest.max(self.gaps.last_end.unwrap_or(earliest)))
    }

    /// The stop is happening: records [`KeepAliveMachine::receiving_since`]'s value for after it. Called
    /// before the stop reports the open windows (so that it knows whether anything was at stake).
    pub(super) fn note_stop(&mut self) {
        let Some(before) = self.receiving_since() else {
            return;
        };
        let now = self.wall.at(self.now);
        self.gaps.stopped_at = Some(if self.gaps.open.is_some() || self.has_drains_at_stake() {
            // The stop reports those windows up to now: nothing before now is owed after them.
            now
        } else {
            // A healthy socket: what it delivered up to the stop, less what may still have been on the
            // wire. Both are proofs of receipt; the later one holds.
            let margin = self
                .now
                .checked_sub(self.travel_margin())
                .unwrap_or(self.now);
            self.wall.at(margin).max(before)
        });
    }

    /// Whether this machine reports gaps at all: the notifications profile with topics subscribed.
    fn tracks_gaps(&self) -> bool {
        self.config.profile == ProfileKind::Notifications && !self.rest.topics.is_empty()
    }

    /// The active socket is being lost (or its channel is gone) for `reason`: a window opens at the last
    /// moment the socket was known to be receiving. That is when the last heartbeat it answered was sent:
    /// the server handled that heartbeat later, and whatever it had sent before then came before the answer
    /// (one ordered stream), so it has arrived. The last inbound frame's arrival would be later but not
    /// safe: frames still on the wire when a socket dies are lost, and their travel time is unknown.
    pub(super) fn open_gap(&mut self, reason: GapReason) {
        if let Some(from) = self.active.as_ref().map(|c| c.receiving_since) {
            self.open_gap_at(from, reason);
        }
    }

    /// An upper bound on a frame's one-way travel time: the largest round trip in the window, or, on a
    /// socket with no sample yet, the 99th percentile of every round trip so far.
    pub(super) fn travel_margin(&self) -> Duration {
        let recent = self.heartbeat.latency.max_rtt();
        let lifetime = self.stats.rtt_histogram.quantile(0.99).unwrap_or_default();
        recent.max(lifetime)
    }

    /// A window opens at `from`, unless one is open already (the earlier start and its reason stand).
    pub(super) fn open_gap_at(&mut self, from: Instant, reason: GapReason) {
        self.open_gap_wall(self.wall.at(from), reason);
    }

    fn open_gap_wall(&mut self, from: SystemTime, reason: GapReason) {
        if self.tracks_gaps() && self.gaps.open.is_none() {
            self.gaps.open = Some((from, reason));
        }
    }

    /// A socket is open with its subscriptions confirmed, or the machine stops: the open window, if any,
    /// ends now and is reported. True if one was.
    pub(super) fn close_gap(&mut self) -> bool {
        let Some((from, reason)) = self.gaps.open.take() else {
            return false;
        };
        self.report_gap_wall(from, self.wall.at(self.now), reason);
        true
    }

    /// Reports the window `from`..`to` of this machine's instants.
    pub(super) fn report_gap(&mut self, from: Instant, to: Instant, reason: GapReason) {
        self.report_gap_wall(self.wall.at(from), self.wall.at(to), reason);
    }

    /// Reports the window `from`..`to` (wall time), starting no earlier than the last reported window's
    /// end and no later than `to`.
    fn report_gap_wall(&mut self, from: SystemTime, to: SystemTime, reason: GapReason) {
        let from = from.max(self.gaps.last_end.unwrap_or(from)).min(to);
        self.gaps.last_end = Some(self.gaps.last_end.map_or(to, |e| e.max(to)));
        self.stats.gaps += 1;
        self.stats.gap_ms += to
            .duration_since(from)
            .unwrap_or(Duration::ZERO)
            .as_millis() as u64;
        let gap = Gap {
            from,
            to,
            reason,
            topics: self.rest.topics.clone(),
        };
        self.push(Action::Gap(gap));
    }
}
