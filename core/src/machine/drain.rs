//! A rollover's old socket, drained before it is closed. When the new socket is open, the server may
//! still hold notifications it published before the new socket existed, queued for the old one only; a
//! close sent now could overtake them (a server may drop what it had queued when a close arrives). So the
//! old socket gets one more heartbeat first: its answer comes after everything the server queued before
//! it, and only then is the socket closed (no gap). No answer in time (or the socket fails or ends first)
//! and the window from its last answered heartbeat to the new socket's opening is a `failed_rollover` gap.

use std::time::{Duration, Instant};

use super::heartbeat::Conn;
use super::{KeepAliveMachine, CLOSE_ROLLOVER, ROLLOVER_LINGER};
use crate::event::Action;
use crate::frames::PING_FRAME;
use crate::gap::GapReason;
use crate::ids::{FrameId, SocketId};

const WHY: &str = "planned close: moved to a new channel";

/// One old socket being drained.
#[derive(Debug)]
pub(super) struct Drain {
    pub(super) socket: SocketId,
    /// The window that is lost unless the drain's heartbeat is answered (`None`: already reported).
    at_stake: Option<(Instant, Instant)>,
    /// Answers still owed for heartbeats sent before the drain's own (pongs carry no id).
    answers_before: usize,
    /// A frame written before the drain began, not yet reported written.
    in_flight: Option<FrameId>,
    /// The drain's heartbeat, once written.
    ping: Option<FrameId>,
    /// When the heartbeat may go out (`min_interval` after the socket's last one).
    ping_at: Instant,
    /// When to give up.
    until: Instant,
}

impl Drain {
    /// The drain's next deadline: its heartbeat if it can go out, else giving up.
    pub(super) fn deadline(&self) -> Instant {
        if self.ping.is_none() && self.in_flight.is_none() {
            self.ping_at.min(self.until)
        } else {
            self.until
        }
    }
}

impl KeepAliveMachine {
    /// The new socket is open: drain `old` (whose window of `from`..now is at stake unless `covered`, i.e.
    /// a gap report already covers it).
    pub(super) fn start_drain(&mut self, old: Conn, covered: bool) {
        let (last_heartbeat, in_flight, outstanding) = old.drain_view();
        let ping_at = last_heartbeat
            .map(|t| t + self.config.min_interval)
            .unwrap_or(self.now)
            .max(self.now);
        // Within the socket's idle limit and heartbeat cadence, and not for ever.
        let until = (ping_at + self.config.ack_timeout)
            .min(self.now + ROLLOVER_LINGER.max(self.config.ack_timeout))
            .min(old.last_inbound + self.config.max_idle)
            .min(ping_at + self.config.interval_matrix.longest())
            .max(self.now);
        self.sockets.draining.push(Drain {
            socket: old.socket,
            at_stake: (!covered).then_some((old.receiving_since, self.now)),
            answers_before: outstanding,
            in_flight,
            ping: None,
            ping_at,
            until,
        });
        self.pump_drains();
    }

    /// Writes the heartbeats that are due, gives up on drains past their time, re-arms the timer.
    pub(super) fn pump_drains(&mut self) {
        let now = self.now;
        let mut i = 0;
        while let Some(d) = self.sockets.draining.get_mut(i) {
            if d.until <= now {
                let socket = d.socket;
                self.drain_failed(socket, true);
                continue;
            }
            if d.ping.is_none() && d.in_flight.is_none() && d.ping_at <= now {
                self.heartbeat.next_frame += 1;
                let frame = FrameId(self.heartbeat.next_frame);
                d.ping = Some(frame);
                let socket = d.socket;
                self.push(Action::SendFrame {
                    socket,
                    frame,
                    text: PING_FRAME.to_owned(),
                });
            }
            i += 1;
        }
        self.arm_linger();
    }

    pub(super) fn is_draining(&self, socket: SocketId) -> bool {
        self.sockets.draining.iter().any(|d| d.socket == socket)
    }

    fn take_drain(&mut self, socket: SocketId) -> Option<Drain> {
        let i = self
            .sockets
            .draining
            .iter()
            .position(|d| d.socket == socket)?;
        Some(self.sockets.draining.swap_remove(i))
    }

    /// A write on a draining socket was reported done.
    pub(super) fn drain_send_completed(&mut self, socket: SocketId, frame: FrameId) {
        if let Some(d) = self
            .sockets
            .draining
            .iter_mut()
            .find(|d| d.socket == socket)
        {
            if d.in_flight == Some(frame) {
                d.in_flight = None;
            }
        }
        self.pump_drains();
    }

    /// A pong on a draining socket: an older heartbeat's, or the drain's own, which proves the socket
    /// delivered everything the server had for it; then it is closed.
    pub(super) fn drain_answered(&mut self, socket: SocketId) {
        let Some(d) = self
            .sockets
            .draining
            .iter_mut()
            .find(|d| d.socket == socket)
        else {
            return;
        };
        if d.answers_before > 0 {
            d.answers_before -= 1;
            return;
        }
        if d.ping.is_none() {
            return;
        }
        self.take_drain(socket);
        self.close_socket(socket, CLOSE_ROLLOVER, WHY, ROLLOVER_LINGER);
        self.arm_linger();
    }

    /// The drain did not prove anything: its window is a gap. With `close`, the socket is closed (and
    /// dropped) too; without, it has already ended.
    pub(super) fn drain_failed(&mut self, socket: SocketId, close: bool) {
        let Some(d) = self.take_drain(socket) else {
            return;
        };
        if let Some((from, to)) = d.at_stake {
            self.report_gap(from, to, GapReason::FailedRollover);
        }
        if close {
            self.close_socket(socket, CLOSE_ROLLOVER, WHY, Duration::ZERO);
        } else {
            self.forget_socket(socket);
        }
        self.arm_linger();
    }

    /// The machine stops: every drain's window still at stake is reported; returns their sockets (for the
    /// stop to close).
    pub(super) fn end_drains(&mut self) -> Vec<SocketId> {
        let drains = std::mem::take(&mut self.sockets.draining);
        let mut sockets = Vec::with_capacity(drains.len());
        for d in drains {
            if let Some((from, to)) = d.at_stake {
                self.report_gap(from, to, GapReason::FailedRollover);
            }
            sockets.push(d.socket);
        }
        sockets
    }
}

impl KeepAliveMachine {
    /// The starts of the drains' windows still at stake (not proved delivered, not reported).
    pub(super) fn drains_at_stake(&self) -> impl Iterator<Item = Instant> + '_ {
        self.sockets
            .draining
            .iter()
            .filter_map(|d| d.at_stake.map(|(from, _)| from))
    }

    /// Whether a drain's window is still at stake.
    pub(super) fn has_drains_at_stake(&self) -> bool {
        self.drains_at_stake().next().is_some()
    }
}
