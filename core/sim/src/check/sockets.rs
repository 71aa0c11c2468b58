//! The checker's book of sockets: every socket the machine ever asked for (fresh ids, late events and
//! actions on old sockets are judged against it), and the few still in play, which are all the
//! per-`handle` scans need to look at.
//!
//! A socket leaves play for good once it is `Done` (reported closed or failed) or closed *and* discarded
//! by the machine: it can never again be live (not closed by the machine, not done) nor lingering (closed
//! by the machine, not discarded, not done), since nothing resets `Done`, `machine_closed` or
//! `discarded`. So scanning the sockets in play, with the same predicates, finds exactly what a scan of
//! every socket would, in the same (id) order, at a cost that does not grow with the week. The sockets in
//! play are kept apart (a short vector, by id) and a socket that leaves play moves to the retired map.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};
use std::time::{Duration, Instant};

use genesys_keepalive::{FrameId, SocketId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `Connect` emitted; not yet reported opened or finished.
    Pending,
    /// Reported `Opened`.
    Open,
    /// Reported `ConnectFailed` or `Closed`.
    Done,
}

/// What the checker knows of one socket.
#[derive(Debug, Clone)]
pub(super) struct Sock {
    pub(super) phase: Phase,
    pub(super) machine_closed: bool,
    /// The machine emitted `Discard`: it has let go of the socket.
    pub(super) discarded: bool,
    pub(super) last_heartbeat: Option<Instant>,
    pub(super) in_flight: Option<FrameId>,
    /// Opened, last inbound frame (for the idle deadline).
    pub(super) last_inbound: Instant,
    /// Opened, last heartbeat or last write report (for the heartbeat cadence).
    pub(super) last_send_activity: Instant,
    /// When it was reported opened.
    pub(super) opened_at: Option<Instant>,
}

impl Sock {
    /// A socket the machine just asked for (`Connect`) at `now`.
    pub(super) fn pending(now: Instant) -> Self {
        Sock {
            phase: Phase::Pending,
            machine_closed: false,
            discarded: false,
            last_heartbeat: None,
            in_flight: None,
            last_inbound: now,
            last_send_activity: now,
            opened_at: None,
        }
    }

    /// Not closed by the machine and not reported finished.
    pub(super) fn live(&self) -> bool {
        !self.machine_closed && self.phase != Phase::Done
    }

    /// Closed by the machine and still waiting for its end (within the machine's linger deadline).
    pub(super) fn lingering(&self) -> bool {
        self.machine_closed && !self.discarded && self.phase != Phase::Done
    }

    /// Can still be live or lingering (once false, false for good).
    fn in_play(&self) -> bool {
        self.live() || self.lingering()
    }
}

/// Every socket seen: the few in play inline (the per-event lookups and scans touch only them), the rest
/// retired in a map.
#[derive(Debug, Clone, Default)]
pub(super) struct Sockets {
    /// The sockets in play ([`Sock::live`] or [`Sock::lingering`]), by id.
    in_play: Vec<(SocketId, Sock)>,
    /// Every other socket ever connected.
    retired: BTreeMap<SocketId, Sock>,
    /// The highest id in `retired`: no retired socket comes after a socket at or above it.
    max_retired: Option<SocketId>,
}

impl Sockets {
    /// True if `id` was ever connected.
    pub(super) fn contains(&self, id: &SocketId) -> bool {
        self.get(id).is_some()
    }

    /// A new socket (its id must be fresh).
    pub(super) fn insert(&mut self, id: SocketId, sock: Sock) {
        if sock.in_play() {
            let at = self.in_play.partition_point(|(other, _)| *other < id);
            self.in_play.insert(at, (id, sock));
        } else {
            self.retire(id, sock);
        }
    }

    /// The socket `id`, in play or not.
    pub(super) fn get(&self, id: &SocketId) -> Option<&Sock> {
        match self.in_play.iter().find(|(other, _)| other == id) {
            Some((_, s)) => Some(s),
            None => self.retired.get(id),
        }
    }

    /// Changes socket `id` with `f` (if it was ever connected) and retires it if it left play.
    pub(super) fn update<R>(&mut self, id: &SocketId, f: impl FnOnce(&mut Sock) -> R) -> Option<R> {
        let Some(at) = self.in_play.iter().position(|(other, _)| other == id) else {
            // Retired for good: whatever changes, it stays out of play.
            return self.retired.get_mut(id).map(f);
        };
        let r = f(&mut self.in_play[at].1);
        if !self.in_play[at].1.in_play() {
            let (id, s) = self.in_play.remove(at);
            self.retire(id, s);
        }
        Some(r)
    }

    fn retire(&mut self, id: SocketId, sock: Sock) {
        self.max_retired = self.max_retired.max(Some(id));
        self.retired.insert(id, sock);
    }

    /// The sockets in play, by id: every socket that is live or lingering is among them.
    pub(super) fn playing(&self) -> impl Iterator<Item = (SocketId, &Sock)> + '_ {
        self.in_play.iter().map(|(id, s)| (*id, s))
    }

    /// The live sockets in `phase`, by id.
    pub(super) fn live(&self, phase: Phase) -> impl Iterator<Item = SocketId> + '_ {
        self.playing()
            .filter(move |(_, s)| s.live() && s.phase == phase)
            .map(|(id, _)| id)
    }

    /// When the first socket after `id` (by id, in play or not) that was ever opened opened.
    fn next_opened(&self, id: SocketId) -> Option<Instant> {
        let playing = (self.in_play.iter())
            .filter(|(other, _)| *other > id)
            .find_map(|(other, s)| Some((*other, s.opened_at?)));
        // Usually `id` is the newest socket but failed attempts: skip the map search when none is later.
        let retired = match self.max_retired {
            Some(max) if max > id => (self.retired.range((Excluded(id), Unbounded)))
                .find_map(|(other, s)| Some((*other, s.opened_at?))),
            _ => None,
        };
        match (playing, retired) {
            (Some(a), Some(b)) => Some(a.min(b).1),
            (a, b) => a.or(b).map(|(_, t)| t),
        }
    }

    /// The open sockets the machine has not closed, but for rollovers' old sockets while they are
    /// drained: each for at most `drain_bound` after the next socket (by id, in play or not) opened.
    pub(super) fn open_undrained(
        &self,
        now: Instant,
        drain_bound: Duration,
    ) -> impl Iterator<Item = SocketId> + '_ {
        self.live(Phase::Open)
            .filter(move |id| self.next_opened(*id).is_none_or(|t| now > t + drain_bound))
    }

    /// Checks that the sockets in play are exactly those a scan of every socket finds live or lingering,
    /// in id order (debug builds: the checker's own tests and the short simulations verify the books).
    pub(super) fn debug_check(&self) {
        if cfg!(debug_assertions) {
            assert!(
                self.in_play.iter().all(|(_, s)| s.in_play())
                    && self.in_play.windows(2).all(|w| w[0].0 < w[1].0)
                    && self.retired.values().all(|s| !s.in_play())
                    && self
                        .in_play
                        .iter()
                        .all(|(id, _)| !self.retired.contains_key(id))
                    && self.max_retired == self.retired.keys().next_back().copied(),
                "the checker's sockets in play drifted"
            );
        }
    }
}
