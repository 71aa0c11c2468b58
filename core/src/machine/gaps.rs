//! Gap reports: a window opens when the active socket is lost (or its channel is gone) without a
//! completed make-before-break, and is reported when a new socket is open with its subscriptions
//! confirmed, or when the machine stops first. A rollover that completed, a token refresh and a
//! shutdown of a healthy connection open none.

use std::time::{Duration, Instant};

use super::KeepAliveMachine;
use crate::config::ProfileKind;
use crate::event::Action;
use crate::gap::{Gap, GapReason};

/// The gap side's own fields.
#[derive(Debug, Default)]
pub(super) struct Gaps {
    /// The start of the window not yet reported, and why it opened.
    open: Option<(Instant, GapReason)>,
    /// Where the last reported window ended: what came before is reported already.
    last_end: Option<Instant>,
}

impl KeepAliveMachine {
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
        let notifications = self.config.profile == ProfileKind::Notifications;
        if notifications && !self.rest.topics.is_empty() && self.gaps.open.is_none() {
            self.gaps.open = Some((from, reason));
        }
    }

    /// A socket is open with its subscriptions confirmed, or the machine stops: the open window, if any,
    /// ends now and is reported. True if one was.
    pub(super) fn close_gap(&mut self) -> bool {
        let Some((from, reason)) = self.gaps.open.take() else {
            return false;
        };
        self.report_gap(from, self.now, reason);
        true
    }

    pub(super) fn report_gap(&mut self, from: Instant, to: Instant, reason: GapReason) {
        let from = from.max(self.gaps.last_end.unwrap_or(from)).min(to);
        self.gaps.last_end = Some(self.gaps.last_end.map_or(to, |e| e.max(to)));
        self.stats.gaps += 1;
        self.stats.gap_ms += to.duration_since(from).as_millis() as u64;
        let gap = Gap {
            from: self.wall.at(from),
            to: self.wall.at(to),
            reason,
            topics: self.rest.topics.clone(),
        };
        self.push(Action::Gap(gap));
    }
}
