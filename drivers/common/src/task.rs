//! The bookkeeping of the one task that owns the [`KeepAliveMachine`], without the task itself: [`Core`]
//! feeds inputs in (stamped with `Instant::now()`), drains and performs the machine's actions, tracks the
//! sockets and HTTP requests it started, and publishes what a driver's `Handle` reads. What needs a runtime
//! (spawning, channels, sleeping, waiting for the next input) goes through [`Runtime`] and [`Outlets`]; each
//! driver's loop only waits for an input, the deadline or the last handle's drop and calls [`Core`].
//!
//! It makes no keep-alive decision of its own.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use genesys_keepalive::{
    Action, Alert, AuditEntry, AuditEvent, Event, Headers, HttpRequest, KeepAliveMachine,
    Notification, RequestId, SocketId, Stats, StopReason,
};

use crate::http::LazyClient;
use crate::socket::WriterCmd;
use crate::{Input, Report};

/// The few things the machine task asks of a runtime. Every task it starts reports back on the driver's
/// input channel; none is ever joined, only cancelled.
pub trait Runtime {
    /// Cancels a started task (a socket's or an HTTP request's).
    type Task;
    /// Feeds a socket's single writer.
    type Writer;

    /// Starts a socket's task (handshake, reader, writer), which reports `Opened` or `ConnectFailed`, then
    /// frames, writes and finally `ReaderEnded`. Returns its writer and a handle that cancels it.
    fn spawn_socket(
        &self,
        socket: SocketId,
        url: String,
        headers: Headers,
    ) -> (Self::Writer, Self::Task);

    /// Starts an HTTP request ([`crate::http::perform`] under a tokio context) that reports
    /// [`Input::Http`] with the request's id.
    fn spawn_http(
        &self,
        client: reqwest::Client,
        allow_insecure: bool,
        request: HttpRequest,
    ) -> Self::Task;

    /// Queues `cmd` for the writer without waiting; false if the socket's task is gone.
    fn write(&self, writer: &Self::Writer, cmd: WriterCmd) -> bool;

    /// Cancels `task`.
    fn abort(&self, task: &Self::Task);
}

/// Where the machine task publishes what the driver's `Handle` and streams read. None of these may wait.
pub trait Outlets {
    /// The machine's stats after an input: publish them, and the state if it changed.
    fn publish(&mut self, stats: Stats);
    /// A notification for the notifications stream.
    fn deliver(&mut self, notification: Notification);
    /// Ends the notifications stream.
    fn end_notifications(&mut self);
    /// A report for the reports channel (a receiver that lags loses the oldest).
    fn report(&mut self, report: Report);
    /// Resolves `connect`: called at most once.
    fn ready(&mut self, result: Result<(), StopReason>);
    /// The machine stopped for `reason`.
    fn stopped(&mut self, reason: StopReason);
    /// The task has ended (may be called more than once).
    fn finished(&mut self);
}

/// A socket the machine asked for and has not yet been told is closed.
struct SocketCtl<R: Runtime> {
    writes: R::Writer,
    task: R::Task,
    /// The machine asked to close it: only its end is still reported.
    closing: bool,
}

/// The machine task's state and logic, short of the loop that waits.
pub struct Core<R: Runtime, O: Outlets> {
    machine: KeepAliveMachine,
    rt: R,
    out: O,
    sockets: HashMap<SocketId, SocketCtl<R>>,
    http: HashMap<RequestId, R::Task>,
    client: LazyClient,
    allow_insecure: bool,
    /// `connect` has not been answered yet.
    ready_pending: bool,
    opened: bool,
    /// Events the driver itself produced while performing actions (e.g. a socket dropped at once).
    local: VecDeque<Event>,
}

impl<R: Runtime, O: Outlets> Core<R, O> {
    /// The core for `machine`, starting tasks on `rt` and publishing on `out`.
    pub fn new(machine: KeepAliveMachine, client: LazyClient, rt: R, out: O) -> Self {
        let allow_insecure = machine.config().allow_insecure;
        Core {
            machine,
            rt,
            out,
            sockets: HashMap::new(),
            http: HashMap::new(),
            client,
            allow_insecure,
            ready_pending: true,
            opened: false,
            local: VecDeque::new(),
        }
    }

    /// True once the machine has stopped and every socket it asked to close is closed: the loop ends.
    pub fn is_done(&self) -> bool {
        self.machine.is_finished()
    }

    /// When the machine next wants a [`Core::on_timer`] call, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.machine.poll_timeout()
    }

    /// The timer for `deadline` fired. Don't trust the timer: the machine ticks only if the clock agrees.
    pub fn on_timer(&mut self, deadline: Option<Instant>) {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            self.machine.handle(now, Event::Tick);
            self.publish();
        }
    }

    /// The last handle was dropped: a graceful shutdown.
    pub fn on_handles_gone(&mut self) {
        self.feed(Event::Shutdown);
    }

    /// The loop ended: publishes the final stats and marks the task finished.
    pub fn finish(&mut self) {
        self.publish();
        self.out.finished();
    }

    /// Hands one event to the machine (after it has stopped too: it knows which reports are leftovers).
    fn feed(&mut self, event: Event) {
        self.machine.handle(Instant::now(), event);
        // Publish before performing the actions, so that whoever sees an action's effect (a notification, a
        // stop, `connect` resolving) also sees stats at least that new.
        self.publish();
    }

    /// Handles one input from a socket, writer or HTTP task or from a handle.
    pub fn on_input(&mut self, input: Input) {
        match input {
            Input::Opened(socket) => {
                if self.sockets.get(&socket).is_some_and(|c| !c.closing) {
                    self.feed(Event::Opened { socket });
                    self.opened = true;
                }
            }
            Input::ConnectFailed {
                socket,
                status,
                retry_after,
                error,
            } => {
                // The attempt is over: this is the socket's last report.
                if self.sockets.remove(&socket).is_some() {
                    self.feed(Event::ConnectFailed {
                        socket,
                        status,
                        retry_after,
                        error,
                    });
                }
            }
            Input::Text(socket, text) => {
                if self.sockets.contains_key(&socket) {
                    self.feed(Event::FrameReceived { socket, text });
                }
            }
            Input::Binary(socket, data) => {
                if self.sockets.contains_key(&socket) {
                    self.feed(Event::BinaryReceived { socket, data });
                }
            }
            Input::Sent {
                socket,
                frame,
                result,
            } => {
                if self.sockets.contains_key(&socket) {
                    self.feed(match result {
                        Ok(()) => Event::SendCompleted { socket, frame },
                        Err(error) => Event::SendFailed {
                            socket,
                            frame,
                            error,
                        },
                    });
                }
            }
            Input::ReaderEnded {
                socket,
                code,
                reason,
            } => {
                if self.forget_socket(socket) {
                    self.feed(Event::Closed {
                        socket,
                        code,
                        reason,
                    });
                }
            }
            Input::Http(request, event) => {
                if self.http.remove(&request).is_some() {
                    self.feed(event);
                }
            }
            Input::Subscribe(topics) => self.feed(Event::Subscribe { topics }),
            Input::TokenExpired => self.feed(Event::TokenExpired),
            Input::Shutdown => self.feed(Event::Shutdown),
        }
    }

    /// Drops a socket's tasks; true if it was still known.
    fn forget_socket(&mut self, socket: SocketId) -> bool {
        match self.sockets.remove(&socket) {
            Some(ctl) => {
                self.rt.abort(&ctl.task);
                true
            }
            None => false,
        }
    }

    /// Performs every pending action (and the events that performing them produced), then publishes.
    pub fn drain(&mut self) {
        loop {
            while let Some(action) = self.machine.poll_action() {
                self.perform(action);
            }
            match self.local.pop_front() {
                Some(event) => self.feed(event),
                None => break,
            }
        }
        if self.machine.is_stopped() {
            // The machine emits nothing more: a socket it did not ask to close can never be closed by it
            // (the core closes every open socket when it stops, so this is only a safety net).
            let orphans: Vec<SocketId> = self
                .sockets
                .iter()
                .filter(|(_, c)| !c.closing)
                .map(|(s, _)| *s)
                .collect();
            for socket in orphans {
                self.forget_socket(socket);
            }
        }
        if self.opened && !self.machine.is_stopped() && self.ready_pending {
            self.ready_pending = false;
            self.out.ready(Ok(()));
        }
    }

    fn publish(&mut self) {
        self.out.publish(self.machine.stats());
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Http(request) => {
                let id = request.id;
                let client = match self.client.get() {
                    Ok(c) => c,
                    Err(error) => {
                        self.local
                            .push_back(Event::HttpFailed { request: id, error });
                        return;
                    }
                };
                let task = self.rt.spawn_http(client, self.allow_insecure, request);
                self.http.insert(id, task);
            }
            Action::Connect {
                socket,
                url,
                headers,
            } => {
                // The query string is left out of the log: it is the caller's and may hold anything.
                let shown = url.split(['?', '#']).next().unwrap_or("");
                tracing::debug!(target: "genesys_keepalive", %socket, url = shown, "connecting");
                let (writes, task) = self.rt.spawn_socket(socket, url, headers);
                self.sockets.insert(
                    socket,
                    SocketCtl {
                        writes,
                        task,
                        closing: false,
                    },
                );
            }
            Action::SendFrame {
                socket,
                frame,
                text,
            } => {
                let queued = self
                    .sockets
                    .get(&socket)
                    .is_some_and(|c| self.rt.write(&c.writes, WriterCmd::Frame { frame, text }));
                if !queued {
                    self.local.push_back(Event::SendFailed {
                        socket,
                        frame,
                        error: "the socket is no longer open".into(),
                    });
                }
            }
            Action::Close {
                socket,
                code,
                reason,
            } => self.close(socket, code, reason),
            Action::Discard { socket } => {
                self.forget_socket(socket);
            }
            Action::ReconnectAfter(delay) => {
                tracing::debug!(target: "genesys_keepalive", delay_ms = delay.as_millis() as u64, "reconnect scheduled");
            }
            Action::Audit(entry) => {
                trace_audit(&entry);
                self.out.report(Report::Audit(entry));
            }
            Action::Alert(alert) => {
                trace_alert(&alert);
                self.out.report(Report::Alert(alert));
            }
            Action::Deliver(notification) => self.out.deliver(notification),
            Action::StateChanged { from, to } => {
                tracing::info!(target: "genesys_keepalive", %from, %to, "state changed");
                self.out.report(Report::State { from, to });
            }
            Action::Stopped(reason) => {
                tracing::info!(target: "genesys_keepalive", reason = %reason, "stopped");
                for (_, task) in self.http.drain() {
                    self.rt.abort(&task);
                }
                self.out.end_notifications();
                if self.ready_pending {
                    self.ready_pending = false;
                    self.out.ready(Err(reason.clone()));
                }
                self.out.stopped(reason.clone());
                self.out.report(Report::Stopped(reason));
            }
        }
    }

    /// Sends the close frame and keeps reading until the socket ends (the core discards it if that takes
    /// too long).
    fn close(&mut self, socket: SocketId, code: u16, reason: String) {
        let Some(ctl) = self.sockets.get_mut(&socket) else {
            return; // already gone, and its end was reported
        };
        if ctl.closing {
            return;
        }
        ctl.closing = true;
        let _ = self
            .rt
            .write(&ctl.writes, WriterCmd::Close { code, reason });
    }
}

impl<R: Runtime, O: Outlets> Drop for Core<R, O> {
    fn drop(&mut self) {
        for (_, ctl) in self.sockets.drain() {
            self.rt.abort(&ctl.task);
        }
        for (_, task) in self.http.drain() {
            self.rt.abort(&task);
        }
        self.out.finished();
    }
}

fn trace_audit(e: &AuditEntry) {
    let error = e.error.as_deref().unwrap_or("");
    macro_rules! audit {
        ($level:ident) => {
            tracing::$level!(
                target: "genesys_keepalive",
                event = ?e.event,
                connection_id = %e.connection_id,
                state = %e.state,
                payload_size = e.payload_size,
                error,
                timestamp = %e.timestamp,
                "audit"
            )
        };
    }
    match e.event {
        AuditEvent::SendSuccess => audit!(debug),
        _ => audit!(info),
    }
}

fn trace_alert(a: &Alert) {
    let m = &a.metrics;
    tracing::warn!(
        target: "genesys_keepalive",
        event = ?a.event,
        avg_latency_ms = ?m.avg_latency,
        packet_loss = ?m.packet_loss,
        sent = ?m.sent,
        ack = ?m.ack,
        idle_ms = ?m.idle_ms,
        attempts = ?m.attempts,
        detail = m.detail.as_deref().unwrap_or(""),
        timestamp = %a.timestamp,
        "alert"
    );
}
