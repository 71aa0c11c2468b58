//! Sockets on their way out: closed with a linger (a rollover's old socket may still deliver), or
//! discarded (whatever the driver still reports about them is a leftover).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::drain::Drain;
use super::KeepAliveMachine;
use crate::event::{Action, AuditEvent};
use crate::gap::GapReason;
use crate::http;
use crate::ids::SocketId;
use crate::timers::Timer;

/// How many discarded sockets are remembered.
const DISCARDED_KEPT: usize = 16;

/// The socket lifecycle's own fields.
#[derive(Debug, Default)]
pub(super) struct Sockets {
    /// Sockets we closed that may still deliver until they end (a rollover's old socket), each with the
    /// deadline after which it is discarded. `Timer::Linger` holds the earliest.
    pub(super) closing: Vec<(SocketId, Instant)>,
    /// Sockets we discarded: whatever the driver still reports about them is a leftover. Bounded.
    pub(super) discarded: VecDeque<SocketId>,
    /// Rollovers' old sockets, drained before they are closed (`drain.rs`). `Timer::Linger` covers their
    /// deadlines too.
    pub(super) draining: Vec<Drain>,
}

impl KeepAliveMachine {
    /// Asks the driver to close `socket`: a close frame, then its `Closed` report is expected within
    /// `linger`, and frames it still delivers meanwhile are accepted (a rollover's old socket). With a zero
    /// linger, or for a socket whose handshake is not done, the socket is discarded at once.
    pub(super) fn close_socket(
        &mut self,
        socket: SocketId,
        code: u16,
        reason: &str,
        linger: Duration,
    ) {
        let mut reason = reason.to_owned();
        http::truncate(&mut reason, 123);
        let opening = self.setup.opening_socket() == Some(socket);
        if self.is_closing(socket) || self.was_discarded(socket) {
            return;
        }
        self.push(Action::Close {
            socket,
            code,
            reason,
        });
        if linger.is_zero() || opening {
            self.discard(socket);
        } else {
            self.sockets.closing.push((socket, self.now + linger));
            self.arm_linger();
        }
    }

    /// Tells the driver to drop `socket` now; anything it still reports about it is a leftover.
    fn discard(&mut self, socket: SocketId) {
        self.forget_closing(socket);
        let discarded = &mut self.sockets.discarded;
        if discarded.len() >= DISCARDED_KEPT {
            discarded.pop_front();
        }
        discarded.push_back(socket);
        self.push(Action::Discard { socket });
    }

    /// Discards every closing socket whose linger deadline has passed.
    pub(super) fn expire_lingers(&mut self) {
        let now = self.now;
        while let Some(i) = self.sockets.closing.iter().position(|&(_, t)| t <= now) {
            let (socket, _) = self.sockets.closing.swap_remove(i);
            self.discard(socket);
        }
        self.pump_drains();
    }

    pub(super) fn arm_linger(&mut self) {
        let closing = self.sockets.closing.iter().map(|&(_, until)| until);
        let draining = self.sockets.draining.iter().map(|d| d.deadline());
        match closing.chain(draining).min() {
            Some(at) => self.timers.set(Timer::Linger, at),
            None => self.timers.clear(Timer::Linger),
        }
    }

    /// Closed (or being drained before its close): frames and reports from it are still accepted.
    pub(super) fn is_closing(&self, socket: SocketId) -> bool {
        self.sockets.closing.iter().any(|&(s, _)| s == socket) || self.is_draining(socket)
    }

    pub(super) fn was_discarded(&self, socket: SocketId) -> bool {
        self.sockets.discarded.contains(&socket)
    }

    /// `socket` is closed or discarded: no linger deadline any more.
    pub(super) fn forget_closing(&mut self, socket: SocketId) {
        if let Some(i) = self.sockets.closing.iter().position(|&(s, _)| s == socket) {
            self.sockets.closing.swap_remove(i);
            self.arm_linger();
        }
    }

    /// `socket` has ended: forget it. True if it was one we closed or discarded.
    pub(super) fn forget_socket(&mut self, socket: SocketId) -> bool {
        let known = self.is_closing(socket) || self.was_discarded(socket);
        self.forget_closing(socket);
        self.sockets.discarded.retain(|&s| s != socket);
        known
    }

    /// The active socket and the one being opened, if any.
    pub(super) fn open_sockets(&self) -> Vec<SocketId> {
        let active = self.active.as_ref().map(|c| c.socket);
        active
            .into_iter()
            .chain(self.setup.opening_socket())
            .collect()
    }

    /// A socket ended: one we closed, one we discarded, the active one (lost), or the one opening (a
    /// failed attempt).
    pub(super) fn on_closed(&mut self, socket: SocketId, code: Option<u16>, reason: String) {
        if self.is_draining(socket) {
            // It ended before its drain proved anything.
            return self.drain_failed(socket, false);
        }
        if self.is_closing(socket) {
            self.forget_closing(socket);
            return;
        }
        if self.was_discarded(socket) {
            // It was on its way when we discarded the socket; nothing can follow a socket's end.
            self.sockets.discarded.retain(|&s| s != socket);
            return;
        }
        if self.active.as_ref().is_some_and(|c| c.socket == socket) {
            let why = match code {
                Some(c) => format!("closed by peer with {c} {reason}"),
                None => format!("connection ended: {reason}"),
            };
            self.audit(AuditEvent::Disconnected, 0, Some(why.clone()));
            return self.connection_lost(why, GapReason::UnplannedClose);
        }
        if self.setup.opening_socket() == Some(socket) {
            // Closed before it opened: a failed attempt.
            return self.on_connect_failed(socket, None, None, reason);
        }
        self.unexpected(format!("close for unknown {socket}"));
    }
}
