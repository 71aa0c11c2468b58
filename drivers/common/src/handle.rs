//! What an application holds: the [`Handle`], the [`Notifications`] stream, [`Reports`] receivers and the
//! [`StateWatch`]. They share one [`Shared`] value with the connection's task: the machine itself sits in
//! it behind a mutex, so `stats()` and `state()` are computed when asked and nothing is published per
//! input. Waiters (a state watch, `stopped`, `shutdown`, a reports receiver, `connect`) wait on one
//! `event-listener` event, which costs an atomic load when nobody listens.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use event_listener::{Event as Listeners, EventListener};
use genesys_keepalive::{Event, KeepAliveMachine, Notification, State, Stats, StopReason};

use crate::{Error, Report};

/// The connection's state, shared by its task and the application's handles.
pub struct Shared {
    inner: Mutex<Inner>,
    /// Woken on a state change, a report, `ready`, `stopped` and `finished`.
    changed: Listeners,
}

/// What [`Shared`] holds behind its mutex.
pub(crate) struct Inner {
    pub(crate) machine: KeepAliveMachine,
    /// The connection task's waker: an input from a handle wakes it to perform the machine's actions.
    task: Option<Waker>,
    notes: VecDeque<Notification>,
    notes_waker: Option<Waker>,
    /// `notes_waker` is due a wake, given by whoever holds the lock once they have released it
    /// ([`Inner::take_notes_wake`]): a waker may do anything, down to dropping the [`Notifications`] it
    /// was registered for, whose drop takes this lock.
    notes_wake: bool,
    /// The [`Notifications`] stream exists and the machine has not stopped.
    notes_open: bool,
    reports: ReportRing,
    /// Set once: the first socket opened, or the machine stopped first.
    ready: Option<Result<(), StopReason>>,
    stopped: Option<StopReason>,
    finished: bool,
    /// Bumped on every state change, for [`StateWatch::changed`].
    state_version: u64,
}

impl Shared {
    /// The shared state of a new connection around `machine`; reports are kept for at most
    /// `reports_capacity` unread entries.
    pub fn new(machine: KeepAliveMachine, reports_capacity: usize) -> Arc<Shared> {
        Arc::new(Shared {
            inner: Mutex::new(Inner {
                machine,
                task: None,
                notes: VecDeque::new(),
                notes_waker: None,
                notes_wake: false,
                notes_open: true,
                reports: ReportRing::new(reports_capacity),
                ready: None,
                stopped: None,
                finished: false,
                state_version: 0,
            }),
            changed: Listeners::new(),
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes everyone waiting for a change (after the task published under the lock).
    pub(crate) fn publish(&self) {
        self.changed.notify(usize::MAX);
    }

    /// Feeds `event` to the machine now and wakes the task to perform what it decided. Refused once the
    /// machine has stopped.
    fn input(&self, event: Event) -> Result<(), Error> {
        let mut inner = self.lock();
        if let Some(reason) = &inner.stopped {
            return Err(Error::Stopped(reason.clone()));
        }
        if inner.finished {
            return Err(Error::Gone);
        }
        inner.machine.handle(Instant::now(), event);
        inner.wake_task();
        Ok(())
    }

    /// Waits until `done` holds for the shared state, then returns what it returned.
    async fn wait_for<T>(&self, mut done: impl FnMut(&Inner) -> Option<T>) -> T {
        loop {
            if let Some(v) = done(&self.lock()) {
                return v;
            }
            let listener = self.changed.listen();
            if let Some(v) = done(&self.lock()) {
                return v;
            }
            listener.await;
        }
    }
}

impl Inner {
    /// Records the task's waker (cloned only when it changed).
    pub(crate) fn set_task_waker(&mut self, waker: &Waker) {
        if !self.task.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.task = Some(waker.clone());
        }
    }

    fn wake_task(&mut self) {
        if let Some(w) = &self.task {
            w.wake_by_ref();
        }
    }
}

/// What the connection task publishes, under the lock it already holds.
impl Inner {
    pub(crate) fn deliver(&mut self, n: Notification) {
        if self.notes_open {
            self.notes.push_back(n);
            self.notes_wake = true;
        }
    }

    /// Queues a report for the receivers; true if any receiver or the first one (not yet taken) keeps it.
    pub(crate) fn report(&mut self, r: Report) -> bool {
        if let Report::State { .. } = r {
            self.state_version += 1;
        }
        self.reports.push(r)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.is_some()
    }

    pub(crate) fn set_ready(&mut self, result: Result<(), StopReason>) {
        if self.ready.is_none() {
            self.ready = Some(result);
        }
    }

    pub(crate) fn set_stopped(&mut self, reason: StopReason) {
        self.stopped = Some(reason);
        self.notes_open = false;
        self.notes_wake = true;
    }

    /// The notifications consumer's waker if a wake is due: to be woken after the lock is released.
    #[must_use]
    pub(crate) fn take_notes_wake(&mut self) -> Option<Waker> {
        if std::mem::take(&mut self.notes_wake) {
            self.notes_waker.take()
        } else {
            None
        }
    }

    pub(crate) fn set_finished(&mut self) {
        self.finished = true;
        self.set_ready(Err(self.stopped.clone().unwrap_or(StopReason::Shutdown)));
        self.notes_open = false;
        self.notes_wake = true;
    }
}

/// Reports kept for the receivers: a bounded ring with a sequence number per entry. Each receiver has a
/// cursor; entries every receiver has read are dropped, and a receiver that falls more than `capacity`
/// behind loses the oldest (it sees [`RecvError::Lagged`]). With no receiver (and the first one taken),
/// nothing is kept.
struct ReportRing {
    buf: VecDeque<Report>,
    /// Sequence number of `buf[0]`.
    first: u64,
    capacity: usize,
    /// Each live receiver's next sequence number; `None` for a free slot. Slot 0 is the first receiver,
    /// created at start.
    cursors: Vec<Option<u64>>,
    /// The first receiver has not been taken by `Handle::reports` yet.
    first_untaken: bool,
}

impl ReportRing {
    fn new(capacity: usize) -> Self {
        ReportRing {
            buf: VecDeque::new(),
            first: 0,
            capacity,
            // Slot 0: the first receiver, kept from the start unless nothing is to be kept at all.
            cursors: if capacity > 0 {
                vec![Some(0)]
            } else {
                Vec::new()
            },
            first_untaken: capacity > 0,
        }
    }

    fn end(&self) -> u64 {
        self.first + self.buf.len() as u64
    }

    fn push(&mut self, r: Report) -> bool {
        if self.capacity == 0 || self.cursors.iter().all(Option::is_none) {
            self.first += 1;
            return false;
        }
        self.buf.push_back(r);
        if self.buf.len() > self.capacity {
            self.buf.pop_front();
            self.first += 1;
        }
        true
    }

    /// Drops the entries every receiver has read.
    fn trim(&mut self) {
        let min = self.cursors.iter().flatten().min().copied();
        let min = min.unwrap_or_else(|| self.end());
        while self.first < min && !self.buf.is_empty() {
            self.buf.pop_front();
            self.first += 1;
        }
        // Read to the end: the buffer goes too, so that a quiet connection (most of a fleet, most of the
        // time) holds none. With a report per heartbeat that is one allocation per report, next to the
        // report's own strings.
        if self.buf.is_empty() && self.buf.capacity() > 0 {
            self.buf = VecDeque::new();
        }
    }

    fn add_receiver(&mut self) -> usize {
        let at = self.end();
        match self.cursors.iter().position(Option::is_none) {
            Some(i) => {
                self.cursors[i] = Some(at);
                i
            }
            None => {
                self.cursors.push(Some(at));
                self.cursors.len() - 1
            }
        }
    }

    fn remove_receiver(&mut self, slot: usize) {
        if let Some(c) = self.cursors.get_mut(slot) {
            *c = None;
        }
        self.trim();
    }

    fn try_recv(&mut self, slot: usize, finished: bool) -> Result<Report, TryRecvError> {
        let Some(Some(next)) = self.cursors.get(slot).copied() else {
            return Err(TryRecvError::Closed);
        };
        if next < self.first {
            self.cursors[slot] = Some(self.first);
            return Err(TryRecvError::Lagged(self.first - next));
        }
        let i = (next - self.first) as usize;
        match self.buf.get(i) {
            Some(r) => {
                let r = r.clone();
                self.cursors[slot] = Some(next + 1);
                if i == 0 {
                    self.trim();
                }
                Ok(r)
            }
            None if finished => Err(TryRecvError::Closed),
            None => Err(TryRecvError::Empty),
        }
    }
}

/// Why [`Reports::recv`] returned no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// The receiver fell behind by this many reports, which are lost; the next call returns the oldest
    /// one still kept.
    #[error("lagged behind by {0} reports")]
    Lagged(u64),
    /// The connection's task has ended and every report has been read.
    #[error("the connection has ended")]
    Closed,
}

/// Why [`Reports::try_recv`] returned no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No report yet.
    #[error("no report yet")]
    Empty,
    /// The receiver fell behind by this many reports, which are lost.
    #[error("lagged behind by {0} reports")]
    Lagged(u64),
    /// The connection's task has ended and every report has been read.
    #[error("the connection has ended")]
    Closed,
}

/// A receiver of the connection's [`Report`]s, from [`Handle::reports`]. Bounded by
/// `Options::reports_capacity` unread reports; the task never waits for it (a receiver that falls further
/// behind loses the oldest and sees [`RecvError::Lagged`]). Also a [`futures_core::Stream`] of reports,
/// which skips lost ones.
pub struct Reports {
    shared: Arc<Shared>,
    slot: usize,
    listener: Option<EventListener>,
}

impl Reports {
    /// The next report without waiting.
    pub fn try_recv(&mut self) -> Result<Report, TryRecvError> {
        let mut inner = self.shared.lock();
        let finished = inner.finished;
        inner.reports.try_recv(self.slot, finished)
    }

    /// The next report, waiting for one.
    pub async fn recv(&mut self) -> Result<Report, RecvError> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<Report, RecvError>> {
        loop {
            match self.try_recv() {
                Ok(r) => return Poll::Ready(Ok(r)),
                Err(TryRecvError::Lagged(n)) => return Poll::Ready(Err(RecvError::Lagged(n))),
                Err(TryRecvError::Closed) => return Poll::Ready(Err(RecvError::Closed)),
                Err(TryRecvError::Empty) => {}
            }
            match self.listener.as_mut() {
                None => self.listener = Some(self.shared.changed.listen()),
                Some(l) => {
                    if Pin::new(l).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    self.listener = None;
                }
            }
        }
    }
}

impl futures_core::Stream for Reports {
    type Item = Report;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Report>> {
        loop {
            return match self.poll_recv(cx) {
                Poll::Ready(Ok(r)) => Poll::Ready(Some(r)),
                Poll::Ready(Err(RecvError::Lagged(_))) => continue,
                Poll::Ready(Err(RecvError::Closed)) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            };
        }
    }
}

impl Drop for Reports {
    fn drop(&mut self) {
        self.shared.lock().reports.remove_receiver(self.slot);
    }
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports").finish_non_exhaustive()
    }
}

/// The notifications the machine delivers, duplicates already dropped, in order: a
/// [`futures_core::Stream`] that ends when the machine stops. Unbounded: the connection never waits for a
/// slow reader (a notification is never dropped for being unread), so read it. Dropping it discards the
/// ones that arrive later.
pub struct Notifications {
    shared: Arc<Shared>,
}

impl Notifications {
    /// The next notification, or `None` once the machine has stopped and every one has been read.
    pub async fn recv(&mut self) -> Option<Notification> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        let mut inner = self.shared.lock();
        if let Some(n) = inner.notes.pop_front() {
            return Poll::Ready(Some(n));
        }
        if !inner.notes_open {
            return Poll::Ready(None);
        }
        if inner
            .notes_waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        // The waker replaced is dropped after the lock (it may own a `Notifications`).
        let replaced = inner.notes_waker.replace(cx.waker().clone());
        drop(inner);
        drop(replaced);
        Poll::Pending
    }
}

impl futures_core::Stream for Notifications {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.poll_recv(cx)
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        let mut inner = self.shared.lock();
        inner.notes_open = false;
        inner.notes = VecDeque::new();
    }
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications").finish_non_exhaustive()
    }
}

/// A view of the connection state that can wait for the next change (like tokio's `watch::Receiver`).
pub struct StateWatch {
    shared: Arc<Shared>,
    seen: u64,
}

impl StateWatch {
    /// The state now.
    pub fn get(&self) -> State {
        self.shared.lock().machine.state()
    }

    /// Waits until the state changes after the last call (or since the watch was made); `Err` once the
    /// connection has ended with no change left to see.
    pub async fn changed(&mut self) -> Result<State, Error> {
        let seen = self.seen;
        let (version, state) = self
            .shared
            .wait_for(|i| {
                (i.state_version != seen || i.finished)
                    .then(|| (i.state_version, i.machine.state()))
            })
            .await;
        if version == seen {
            return Err(Error::Gone);
        }
        self.seen = version;
        Ok(state)
    }
}

/// Controls a running connection and views its state. Cheap to clone; when the last clone is dropped the
/// connection shuts down gracefully, as if [`Handle::shutdown`] had been called.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<HandleInner>,
}

struct HandleInner {
    shared: Arc<Shared>,
}

impl Drop for HandleInner {
    fn drop(&mut self) {
        let _ = self.shared.input(Event::Shutdown);
    }
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// A handle and the notifications stream on `shared` (for a driver's `start`).
    pub fn new(shared: Arc<Shared>) -> (Handle, Notifications) {
        let notes = Notifications {
            shared: shared.clone(),
        };
        let handle = Handle {
            inner: Arc::new(HandleInner { shared }),
        };
        (handle, notes)
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    /// Waits until the first socket has opened (`Ok`) or the machine stopped before that (`Err` with the
    /// reason).
    pub async fn opened(&self) -> Result<(), Error> {
        self.shared()
            .wait_for(|i| i.ready.clone())
            .await
            .map_err(Error::Stopped)
    }

    /// Adds topics to the subscription (notifications profile); the machine subscribes them on the current
    /// channel and on every later one.
    pub async fn subscribe<I, T>(&self, topics: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let topics = topics.into_iter().map(Into::into).collect();
        self.shared().input(Event::Subscribe { topics })
    }

    /// Tells the machine the access token is no longer good (e.g. the application saw a 401 elsewhere): it
    /// refreshes it now.
    pub async fn token_expired(&self) -> Result<(), Error> {
        self.shared().input(Event::TokenExpired)
    }

    /// The connection state now.
    pub fn state(&self) -> State {
        self.shared().lock().machine.state()
    }

    /// The machine's counters and gauges now (computed on this call: nothing is published per input).
    pub fn stats(&self) -> Stats {
        self.shared().lock().machine.stats()
    }

    /// The RTT of the most recent answered heartbeat on the current socket (cheap: no copy of the window).
    pub fn last_rtt(&self) -> Option<std::time::Duration> {
        self.shared().lock().machine.last_rtt()
    }

    /// What a checkpoint must store for a later process to report this connection's restart
    /// ([`Options::resume_after`](crate::Options::resume_after)): the start a gap would have if the process
    /// died now (see `KeepAliveMachine::receiving_since`); `None` when nothing is at stake (no gap reports,
    /// or a fresh start not yet connected). Read it before printing what is still queued (reports and
    /// notifications), then write it: what it covers was either delivered or lies after it.
    pub fn receiving_since(&self) -> Option<std::time::SystemTime> {
        self.shared().lock().machine.receiving_since()
    }

    /// A view of the state that can wait for each change.
    pub fn watch_state(&self) -> StateWatch {
        let seen = self.shared().lock().state_version;
        StateWatch {
            shared: self.inner.shared.clone(),
            seen,
        }
    }

    /// A receiver of [`Report`]s. The first call returns the receiver created at start, which holds every
    /// report since then (up to `Options::reports_capacity` unread); every later call returns a fresh
    /// receiver that sees reports from that moment on. Once the connection has ended and every report has
    /// been read, the receiver reports `Closed`. With a `reports_capacity` of 0 nothing is ever kept.
    pub fn reports(&self) -> Reports {
        let mut inner = self.shared().lock();
        let slot = if inner.reports.first_untaken {
            inner.reports.first_untaken = false;
            0
        } else {
            inner.reports.add_receiver()
        };
        Reports {
            shared: self.inner.shared.clone(),
            slot,
            listener: None,
        }
    }

    /// Why the machine stopped, if it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.shared().lock().stopped.clone()
    }

    /// Shuts down gracefully: the machine closes the socket with 1000 "Graceful shutdown"; this waits until
    /// the peer answered the close (or the core's linger passed) and the connection's task has ended, then
    /// returns the final stats. Calling it again, or after the machine stopped, just waits for the end.
    pub async fn shutdown(&self) -> Stats {
        let _ = self.shared().input(Event::Shutdown);
        self.shared()
            .wait_for(|i| i.finished.then(|| i.machine.stats()))
            .await
    }

    /// Waits until the machine stops and returns why.
    pub async fn stopped(&self) -> StopReason {
        self.shared().wait_for(|i| i.stopped.clone()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesys_keepalive::{AuditEntry, AuditEvent};

    fn audit(i: usize) -> Report {
        Report::Audit(AuditEntry {
            timestamp: String::new(),
            connection_id: String::new(),
            event: AuditEvent::SendSuccess,
            payload_size: i,
            state: State::Stable,
            error: None,
        })
    }

    fn size(r: &Report) -> usize {
        match r {
            Report::Audit(a) => a.payload_size,
            _ => usize::MAX,
        }
    }

    #[test]
    fn the_ring_keeps_unread_reports_and_drops_read_ones() {
        let mut ring = ReportRing::new(3);
        for i in 0..2 {
            assert!(ring.push(audit(i)));
        }
        assert_eq!(ring.try_recv(0, false).map(|r| size(&r)), Ok(0));
        assert_eq!(ring.buf.len(), 1, "what every receiver read is dropped");
        for i in 2..6 {
            ring.push(audit(i));
        }
        // 1..=5 were pushed after the cursor's position 1; the ring keeps 3: 3, 4, 5.
        assert_eq!(ring.try_recv(0, false), Err(TryRecvError::Lagged(2)));
        assert_eq!(ring.try_recv(0, false).map(|r| size(&r)), Ok(3));
        let late = ring.add_receiver();
        ring.push(audit(6));
        assert_eq!(ring.try_recv(late, false).map(|r| size(&r)), Ok(6));
        assert_eq!(ring.try_recv(late, false), Err(TryRecvError::Empty));
        assert_eq!(ring.try_recv(late, true), Err(TryRecvError::Closed));
    }

    #[test]
    fn with_no_receiver_nothing_is_kept() {
        let mut ring = ReportRing::new(8);
        ring.remove_receiver(0);
        assert!(!ring.push(audit(1)));
        assert!(ring.buf.is_empty());
        let mut none = ReportRing::new(0);
        assert!(!none.push(audit(1)));
    }
}
