//! The one task that owns the [`KeepAliveMachine`]: it feeds every input in, stamped with `Instant::now()`,
//! drains and performs every action, and sleeps until the machine's next deadline. It makes no keep-alive
//! decision of its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_channel::{Receiver, Sender};
use futures_lite::future;
use futures_util::future::AbortHandle;
use genesys_keepalive::{
    Action, Alert, AuditEntry, AuditEvent, Event, KeepAliveMachine, Notification, RequestId,
    SocketId, State, Stats, StopReason,
};

use crate::rt::{self, Publisher, Spawner};
use genesys_keepalive_driver_common::http::LazyClient;
use genesys_keepalive_driver_common::socket::WriterCmd;

use crate::socket::{self, SocketContext};
use crate::Report;

pub(crate) use genesys_keepalive_driver_common::Input;

/// How many failed attempts are remembered for answering a late `Close`.
const MAX_FAILED: usize = 16;

/// A socket the machine asked for and has not yet been told is closed.
struct SocketCtl {
    writes: Sender<WriterCmd>,
    task: AbortHandle,
    /// The machine asked to close it: only its end is still reported.
    closing: bool,
}

/// Where the task publishes what the [`Handle`](crate::Handle) reads.
pub(crate) struct Outlets {
    pub notifications: Sender<Notification>,
    pub reports: async_broadcast::Sender<Report>,
    pub stats: Publisher<Stats>,
    pub state: Publisher<State>,
    pub stopped: Publisher<Option<StopReason>>,
    pub finished: Publisher<bool>,
    pub ready: Sender<Result<(), StopReason>>,
}

/// What woke the machine task.
enum Wake {
    Input(Input),
    Timer,
    HandlesGone,
}

pub(crate) struct Driver {
    machine: KeepAliveMachine,
    inputs: Receiver<Input>,
    input_tx: Sender<Input>,
    sockets: HashMap<SocketId, SocketCtl>,
    http: HashMap<RequestId, AbortHandle>,
    ctx: Arc<SocketContext>,
    client: LazyClient,
    spawner: Spawner,
    allow_insecure: bool,
    notifications: Option<Sender<Notification>>,
    reports: async_broadcast::Sender<Report>,
    stats: Publisher<Stats>,
    state: Publisher<State>,
    stopped: Publisher<Option<StopReason>>,
    finished: Publisher<bool>,
    ready: Option<Sender<Result<(), StopReason>>>,
    opened: bool,
    /// Sockets whose handshake failed (reported as `ConnectFailed`): a later `Close` for one of them is
    /// answered with `Closed` at once. Bounded.
    failed: VecDeque<SocketId>,
    /// Events the driver itself produced while performing actions (e.g. a socket dropped at once).
    local: VecDeque<Event>,
}

impl Driver {
    pub(crate) fn new(
        machine: KeepAliveMachine,
        inputs: Receiver<Input>,
        input_tx: Sender<Input>,
        ctx: Arc<SocketContext>,
        client: LazyClient,
        spawner: Spawner,
        out: Outlets,
    ) -> Self {
        let allow_insecure = machine.config().allow_insecure;
        Driver {
            machine,
            inputs,
            input_tx,
            sockets: HashMap::new(),
            http: HashMap::new(),
            ctx,
            client,
            spawner,
            allow_insecure,
            notifications: Some(out.notifications),
            reports: out.reports,
            stats: out.stats,
            state: out.state,
            stopped: out.stopped,
            finished: out.finished,
            ready: Some(out.ready),
            opened: false,
            failed: VecDeque::new(),
            local: VecDeque::new(),
        }
    }

    /// Runs until the machine has stopped and every socket it asked to close is closed. `handles_gone`
    /// closes when the last [`Handle`](crate::Handle) is dropped: that is a graceful shutdown.
    pub(crate) async fn run(mut self, handles_gone: Receiver<()>) {
        let mut handles_alive = true;
        loop {
            self.drain();
            if self.machine.is_stopped() && self.sockets.is_empty() {
                break;
            }
            let deadline = self.machine.poll_timeout();
            let inputs = &self.inputs;
            let gone = &handles_gone;
            let wake = future::or(
                async {
                    if handles_alive {
                        // Nothing is ever sent: this resolves when the last sender (handle) is dropped.
                        let _ = gone.recv().await;
                        Wake::HandlesGone
                    } else {
                        future::pending().await
                    }
                },
                future::or(
                    async {
                        match deadline {
                            Some(d) => rt::sleep_until(d).await,
                            None => future::pending().await,
                        }
                        Wake::Timer
                    },
                    async {
                        match inputs.recv().await {
                            Ok(input) => Wake::Input(input),
                            // The task holds a sender itself, so the channel never closes under it.
                            Err(_) => future::pending().await,
                        }
                    },
                ),
            )
            .await;
            match wake {
                Wake::Input(input) => self.on_input(input),
                Wake::Timer => {
                    // Don't trust the timer: compare with the clock.
                    let now = Instant::now();
                    if deadline.is_some_and(|d| now >= d) {
                        self.machine.handle(now, Event::Tick);
                        self.publish();
                    }
                }
                Wake::HandlesGone => {
                    handles_alive = false;
                    self.feed(Event::Shutdown);
                }
            }
        }
        self.publish();
        self.finished.set(true);
    }

    /// Hands one event to the machine, unless it has stopped (then only socket ends still matter to it).
    fn feed(&mut self, event: Event) {
        if self.machine.is_stopped() && !matches!(event, Event::Closed { .. }) {
            return;
        }
        self.machine.handle(Instant::now(), event);
        // Publish before performing the actions, so that whoever sees an action's effect (a notification, a
        // stop, `connect` resolving) also sees stats at least that new.
        self.publish();
    }

    fn on_input(&mut self, input: Input) {
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
                if let Some(ctl) = self.sockets.remove(&socket) {
                    if ctl.closing {
                        self.feed(Event::Closed {
                            socket,
                            code: None,
                            reason: error,
                        });
                    } else {
                        if self.failed.len() >= MAX_FAILED {
                            self.failed.pop_front();
                        }
                        self.failed.push_back(socket);
                        self.feed(Event::ConnectFailed {
                            socket,
                            status,
                            retry_after,
                            error,
                        });
                    }
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
            Input::LingerExpired(socket) => {
                if self.sockets.get(&socket).is_some_and(|c| c.closing)
                    && self.forget_socket(socket)
                {
                    self.feed(Event::Closed {
                        socket,
                        code: None,
                        reason: "no close frame from the peer within the linger time".into(),
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
                ctl.task.abort();
                true
            }
            None => false,
        }
    }

    /// Performs every pending action (and the events that performing them produced), then publishes.
    fn drain(&mut self) {
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
        if self.opened && !self.machine.is_stopped() {
            if let Some(ready) = self.ready.take() {
                let _ = ready.try_send(Ok(()));
            }
        }
    }

    fn publish(&mut self) {
        let stats = self.machine.stats();
        self.state.update(|s| {
            let changed = *s != stats.state;
            *s = stats.state;
            changed
        });
        self.stats.set(stats);
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
                let tx = self.input_tx.clone();
                let insecure = self.allow_insecure;
                let task = self.spawner.spawn_abortable(async move {
                    let event = crate::http::perform(&client, insecure, request).await;
                    let _ = tx.send(Input::Http(id, event)).await;
                });
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
                let (writes, writes_rx) = async_channel::unbounded();
                let task = self.spawner.spawn_abortable(socket::run(
                    socket,
                    url,
                    headers,
                    self.ctx.clone(),
                    writes_rx,
                    self.input_tx.clone(),
                ));
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
                    .is_some_and(|c| c.writes.try_send(WriterCmd::Frame { frame, text }).is_ok());
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
                linger,
            } => self.close(socket, code, reason, linger),
            Action::ReconnectAfter(delay) => {
                tracing::debug!(target: "genesys_keepalive", delay_ms = delay.as_millis() as u64, "reconnect scheduled");
            }
            Action::Audit(entry) => {
                trace_audit(&entry);
                let _ = self.reports.try_broadcast(Report::Audit(entry));
            }
            Action::Alert(alert) => {
                trace_alert(&alert);
                let _ = self.reports.try_broadcast(Report::Alert(alert));
            }
            Action::Deliver(notification) => {
                if let Some(tx) = &self.notifications {
                    let _ = tx.try_send(notification);
                }
            }
            Action::StateChanged { from, to } => {
                tracing::info!(target: "genesys_keepalive", %from, %to, "state changed");
                let _ = self.reports.try_broadcast(Report::State { from, to });
            }
            Action::Stopped(reason) => {
                tracing::info!(target: "genesys_keepalive", reason = %reason, "stopped");
                for (_, task) in self.http.drain() {
                    task.abort();
                }
                self.notifications = None; // ends the stream
                if let Some(ready) = self.ready.take() {
                    let _ = ready.try_send(Err(reason.clone()));
                }
                self.stopped.set(Some(reason.clone()));
                let _ = self.reports.try_broadcast(Report::Stopped(reason));
            }
        }
    }

    /// Sends the close frame and keeps reading until the peer's close or `linger`; a zero linger drops the
    /// socket at once.
    fn close(&mut self, socket: SocketId, code: u16, reason: String, linger: Duration) {
        let Some(ctl) = self.sockets.get_mut(&socket) else {
            if let Some(i) = self.failed.iter().position(|s| *s == socket) {
                // The attempt already failed: nothing to close, but answer the close.
                self.failed.remove(i);
                self.local.push_back(Event::Closed {
                    socket,
                    code: None,
                    reason: "the connection attempt had already failed".into(),
                });
            }
            return; // otherwise already gone, and its end was reported
        };
        if linger.is_zero() {
            self.forget_socket(socket);
            self.local.push_back(Event::Closed {
                socket,
                code: None,
                reason: format!("dropped by the client ({code} {reason})"),
            });
            return;
        }
        if ctl.closing {
            return;
        }
        ctl.closing = true;
        let _ = ctl.writes.try_send(WriterCmd::Close { code, reason });
        let tx = self.input_tx.clone();
        self.spawner.spawn(async move {
            async_io::Timer::after(linger).await;
            let _ = tx.send(Input::LingerExpired(socket)).await;
        });
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        for (_, ctl) in self.sockets.drain() {
            ctl.task.abort();
        }
        for (_, task) in self.http.drain() {
            task.abort();
        }
        self.finished.set(true);
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
