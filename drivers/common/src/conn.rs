//! The one task per connection: [`Connection`] is a future that owns the open socket(s) (two only during a
//! make-before-break rollover), the in-flight HTTP requests and the timer, and drives the machine that
//! sits in the connection's [`Shared`] state. A runtime crate only provides [`Runtime`] (how to open a
//! WebSocket, make a timer, send an HTTP request) and spawns the future.
//!
//! ## The run loop (one `poll`)
//! Under the shared lock, up to 64 rounds of:
//! 1. perform every action the machine has queued, in order (write the one pending frame, start a request,
//!    open, close or discard a socket, hand a notification or report to the application);
//! 2. poll every socket (handshake, pending write and flush, then reads until none is ready: reading never
//!    stops, so tungstenite flushes its automatic pongs) and every HTTP request, feeding each event they
//!    yield to `handle(now, event)` as it comes (the actions wait for the next round's step 1);
//! 3. if the machine's deadline has passed by the clock, feed `Tick`; otherwise arm the timer for it.
//!
//! When a round yields nothing, the task sleeps until a socket, a request, the timer or a handle wakes it.
//! Nothing is computed or published per input beyond what the machine's actions ask for.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use futures_core::Stream;
use futures_util::Sink;
use genesys_keepalive::{
    Action, Alert, AuditEntry, AuditEvent, Event, FrameId, Headers, HttpRequest, RequestId,
    SocketId,
};
use tungstenite::protocol::frame::CloseFrame;
use tungstenite::{Error as WsError, Message};

use crate::handle::{Inner, Shared};
use crate::http::LazyClient;
use crate::socket::{ws_error, HandshakeFailure, SocketContext};
use crate::Report;

/// A boxed, `Send`, `'static` future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a runtime crate provides to [`Connection`]. None of it decides anything.
pub trait Runtime: Send + Unpin + 'static {
    /// An open WebSocket.
    type Ws: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static;
    /// A resettable timer.
    type Timer: Send + Unpin + 'static;

    /// The runtime's name, the `driver` label of its metrics.
    const NAME: &'static str = "custom";

    /// Opens a WebSocket to `url` with the core's `headers` (TCP, TLS, handshake).
    fn connect(
        &self,
        url: String,
        headers: Headers,
        ctx: &SocketContext,
    ) -> BoxFuture<Result<Self::Ws, HandshakeFailure>>;

    /// A timer that fires at `deadline`.
    fn timer(&self, deadline: Instant) -> Self::Timer;

    /// Moves `timer` to `deadline`.
    fn reset(&self, timer: &mut Self::Timer, deadline: Instant);

    /// Polls `timer`.
    fn poll_timer(&self, timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()>;

    /// Sends `request` with `client` ([`crate::http::perform`], under whatever context reqwest needs).
    fn http(&self, client: reqwest::Client, request: HttpRequest) -> BoxFuture<Event>;
}

/// Rounds per `poll` before the task yields to its executor.
const ROUNDS: usize = 64;
/// Frames read from one socket per round.
const READS_PER_ROUND: usize = 32;

/// One connection's task. Spawn it; it ends when the machine has stopped and every socket is closed or
/// discarded.
pub struct Connection<R: Runtime> {
    rt: R,
    shared: Arc<Shared>,
    ctx: SocketContext,
    client: LazyClient,
    sockets: Vec<Sock<R::Ws>>,
    http: Vec<(RequestId, BoxFuture<Event>)>,
    timer: Option<(R::Timer, Instant)>,
    /// Events the task produced itself while performing actions (a frame for a socket that is gone).
    local: Vec<Event>,
    /// Something was published that waiters may want to see.
    notify: bool,
    /// A handshake completed since `ready` was last checked (the machine may still ignore it).
    opened: bool,
    /// The connection's metric handles (registered once; fed when the task goes back to sleep).
    #[cfg(feature = "metrics")]
    metrics: Option<crate::metrics::ConnMetrics>,
}

struct Sock<W> {
    id: SocketId,
    io: Io<W>,
}

enum Io<W> {
    Connecting(BoxFuture<Result<W, HandshakeFailure>>),
    Open(Open<W>),
}

struct Open<W> {
    ws: W,
    /// The machine's one frame in flight, not yet handed to the socket.
    frame: Option<(FrameId, String)>,
    /// A close frame to send after it.
    close: Option<(u16, String)>,
    /// The frame handed to the socket, reported once flushed.
    flushing: Option<FrameId>,
    /// Something was handed to the socket and not flushed yet.
    dirty: bool,
    /// The peer's close frame, reported when the stream ends.
    peer_close: Option<(u16, String)>,
}

impl<R: Runtime> Connection<R> {
    /// The task for the machine in `shared`.
    pub fn new(rt: R, shared: Arc<Shared>, ctx: SocketContext, client: LazyClient) -> Self {
        Connection {
            rt,
            shared,
            ctx,
            client,
            sockets: Vec::new(),
            http: Vec::new(),
            timer: None,
            local: Vec::new(),
            notify: false,
            opened: false,
            #[cfg(feature = "metrics")]
            metrics: None,
        }
    }

    /// Publishes the connection's metrics through `metrics` (registered now, with these labels).
    #[cfg(feature = "metrics")]
    pub(crate) fn set_metrics(&mut self, metrics: crate::metrics::ConnMetrics) {
        self.metrics = Some(metrics);
    }

    /// Publishes what changed to the metrics, if any (nothing without the `metrics` feature).
    fn sync_metrics(&mut self, inner: &Inner) {
        #[cfg(feature = "metrics")]
        if let Some(m) = &mut self.metrics {
            let open = self
                .sockets
                .iter()
                .filter(|s| matches!(s.io, Io::Open(_)))
                .count();
            m.sync(&inner.machine, open);
        }
        #[cfg(not(feature = "metrics"))]
        let _ = inner;
    }

    /// Performs every queued action (and the events performing them produced).
    fn perform_all(&mut self, inner: &mut Inner) {
        loop {
            while let Some(action) = inner.machine.poll_action() {
                self.perform(action, inner);
            }
            if self.local.is_empty() {
                break;
            }
            let event = self.local.remove(0);
            inner.machine.handle(Instant::now(), event);
        }
    }

    fn perform(&mut self, action: Action, inner: &mut Inner) {
        match action {
            Action::Http(request) => match self.client.get() {
                Ok(client) => {
                    let id = request.id;
                    self.http.push((id, self.rt.http(client, request)));
                }
                Err(error) => self.local.push(Event::HttpFailed {
                    request: request.id,
                    error,
                }),
            },
            Action::Connect {
                socket,
                url,
                headers,
            } => {
                // The query string is left out of the log: it is the caller's and may hold anything.
                let shown = url.split(['?', '#']).next().unwrap_or("");
                tracing::debug!(target: "genesys_keepalive", %socket, url = shown, "connecting");
                let io = Io::Connecting(self.rt.connect(url, headers, &self.ctx));
                // A socket is a few hundred bytes: grow by one (a Vec would round up to four).
                self.sockets.reserve_exact(1);
                self.sockets.push(Sock { id: socket, io });
            }
            Action::SendFrame {
                socket,
                frame,
                text,
            } => match self.open(socket) {
                Some(o) if o.frame.is_none() && o.close.is_none() => o.frame = Some((frame, text)),
                _ => self.local.push(Event::SendFailed {
                    socket,
                    frame,
                    error: "the socket is no longer open".into(),
                }),
            },
            Action::Close {
                socket,
                code,
                reason,
            } => {
                // Nothing to send before the handshake: the machine discards such a socket.
                if let Some(o) = self.open(socket) {
                    o.close.get_or_insert((code, reason));
                }
            }
            Action::Discard { socket } => self.sockets.retain(|s| s.id != socket),
            Action::ReconnectAfter(delay) => {
                tracing::debug!(target: "genesys_keepalive", delay_ms = delay.as_millis() as u64, "reconnect scheduled");
            }
            Action::Audit(entry) => {
                trace_audit(&entry);
                self.notify |= inner.report(Report::Audit(entry));
            }
            Action::Alert(alert) => {
                trace_alert(&alert);
                #[cfg(feature = "metrics")]
                if let Some(m) = &self.metrics {
                    m.alert(alert.event);
                }
                self.notify |= inner.report(Report::Alert(alert));
            }
            Action::Deliver(notification) => inner.deliver(notification),
            Action::Gap(gap) => {
                tracing::warn!(target: "genesys_keepalive", from = %gap.from_iso8601(), to = %gap.to_iso8601(), reason = %gap.reason, "notifications may have been missed");
                #[cfg(feature = "metrics")]
                if let Some(m) = &self.metrics {
                    m.gap(&gap);
                }
                self.notify |= inner.report(Report::Gap(gap));
            }
            Action::StateChanged { from, to } => {
                tracing::info!(target: "genesys_keepalive", %from, %to, "state changed");
                inner.report(Report::State { from, to });
                self.notify = true;
            }
            Action::Stopped(reason) => {
                tracing::info!(target: "genesys_keepalive", reason = %reason, "stopped");
                self.http.clear();
                inner.set_ready(Err(reason.clone()));
                inner.set_stopped(reason.clone());
                inner.report(Report::Stopped(reason));
                self.notify = true;
            }
        }
    }

    fn open(&mut self, socket: SocketId) -> Option<&mut Open<R::Ws>> {
        self.sockets.iter_mut().find_map(|s| match &mut s.io {
            Io::Open(o) if s.id == socket => Some(o),
            _ => None,
        })
    }

    /// Polls every socket and request and feeds what they yield to the machine (its actions wait for the
    /// next round). Returns how many events it fed.
    fn poll_io(&mut self, inner: &mut Inner, cx: &mut Context<'_>) -> usize {
        let now = Instant::now();
        let mut fed = 0;
        let opened = &mut self.opened;
        let mut emit = |event: Event| {
            *opened |= matches!(event, Event::Opened { .. });
            inner.machine.handle(now, event);
            fed += 1;
        };
        self.sockets.retain_mut(|s| poll_socket(s, cx, &mut emit));
        let mut i = 0;
        while i < self.http.len() {
            match self.http[i].1.as_mut().poll(cx) {
                Poll::Ready(event) => {
                    drop(self.http.swap_remove(i));
                    emit(event);
                }
                Poll::Pending => i += 1,
            }
        }
        fed
    }

    /// Feeds `Tick` if the machine's deadline has passed by the clock (never on the timer's word alone);
    /// otherwise arms the timer. True if the machine ticked or the timer is already due.
    fn poll_deadline(&mut self, inner: &mut Inner, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = inner.machine.poll_timeout() else {
            self.timer = None;
            return false;
        };
        let now = Instant::now();
        if now >= deadline {
            inner.machine.handle(now, Event::Tick);
            return true;
        }
        match &mut self.timer {
            Some((t, at)) if *at != deadline => {
                self.rt.reset(t, deadline);
                *at = deadline;
            }
            Some(_) => {}
            None => self.timer = Some((self.rt.timer(deadline), deadline)),
        }
        match &mut self.timer {
            Some((t, _)) => self.rt.poll_timer(t, cx).is_ready(),
            None => false,
        }
    }

    /// Sets `ready` once the machine has counted a socket opened; asked only after a handshake completed.
    fn check_ready(&mut self, inner: &mut Inner) {
        if std::mem::take(&mut self.opened)
            && !inner.is_ready()
            && inner.machine.counters().connections_opened > 0
        {
            inner.set_ready(Ok(()));
            self.notify = true;
        }
    }
}

impl<R: Runtime> Future for Connection<R> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let shared = this.shared.clone();
        let mut inner = shared.lock();
        inner.set_task_waker(cx.waker());
        for _ in 0..ROUNDS {
            this.perform_all(&mut inner);
            this.check_ready(&mut inner);
            if inner.machine.is_finished() {
                this.sockets.clear();
                this.http.clear();
                this.sync_metrics(&inner);
                inner.set_finished();
                let notes = inner.take_notes_wake();
                drop(inner);
                wake(notes);
                shared.publish();
                return Poll::Ready(());
            }
            let mut progressed = this.poll_io(&mut inner, cx) > 0;
            progressed |= this.poll_deadline(&mut inner, cx);
            if !progressed {
                this.sync_metrics(&inner);
                let notes = inner.take_notes_wake();
                drop(inner);
                wake(notes);
                if std::mem::take(&mut this.notify) {
                    shared.publish();
                }
                return Poll::Pending;
            }
        }
        // Busy: let the executor run others, and come back.
        this.sync_metrics(&inner);
        let notes = inner.take_notes_wake();
        drop(inner);
        wake(notes);
        if std::mem::take(&mut this.notify) {
            shared.publish();
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<R: Runtime> Drop for Connection<R> {
    fn drop(&mut self) {
        // Ended, or cancelled with its runtime: either way nobody may wait for it any longer.
        let notes = {
            let mut inner = self.shared.lock();
            inner.set_finished();
            inner.take_notes_wake()
        };
        wake(notes);
        self.shared.publish();
    }
}

/// Wakes the notifications consumer, if due: only ever with the shared lock released, since the waker may
/// drop the [`crate::Notifications`] (whose drop takes that lock).
fn wake(notes: Option<Waker>) {
    if let Some(w) = notes {
        w.wake();
    }
}

/// Polls one socket; false when it has ended (its last event is in `events`).
fn poll_socket<W>(s: &mut Sock<W>, cx: &mut Context<'_>, emit: &mut impl FnMut(Event)) -> bool
where
    W: Stream<Item = Result<Message, WsError>> + Sink<Message, Error = WsError> + Unpin,
{
    let socket = s.id;
    if let Io::Connecting(handshake) = &mut s.io {
        match handshake.as_mut().poll(cx) {
            Poll::Pending => return true,
            Poll::Ready(Err(f)) => {
                emit(Event::ConnectFailed {
                    socket,
                    status: f.status,
                    retry_after: f.retry_after,
                    error: f.error,
                });
                return false;
            }
            Poll::Ready(Ok(ws)) => {
                emit(Event::Opened { socket });
                s.io = Io::Open(Open {
                    ws,
                    frame: None,
                    close: None,
                    flushing: None,
                    dirty: false,
                    peer_close: None,
                });
            }
        }
    }
    let Io::Open(o) = &mut s.io else {
        return true;
    };
    poll_writes(o, socket, cx, emit);
    poll_reads(o, socket, cx, emit)
}

/// Hands the pending frame (then the close frame) to the socket and flushes; reports the frame once flushed.
fn poll_writes<W>(
    o: &mut Open<W>,
    socket: SocketId,
    cx: &mut Context<'_>,
    emit: &mut impl FnMut(Event),
) where
    W: Sink<Message, Error = WsError> + Unpin,
{
    loop {
        if o.dirty {
            match Pin::new(&mut o.ws).poll_flush(cx) {
                Poll::Pending => return,
                Poll::Ready(result) => {
                    o.dirty = false;
                    if let Some(frame) = o.flushing.take() {
                        emit(match result {
                            Ok(()) => Event::SendCompleted { socket, frame },
                            Err(e) => Event::SendFailed {
                                socket,
                                frame,
                                error: ws_error(&e),
                            },
                        });
                    }
                }
            }
        }
        if o.frame.is_none() && o.close.is_none() {
            return;
        }
        match Pin::new(&mut o.ws).poll_ready(cx) {
            Poll::Pending => return,
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(e)) => {
                if let Some((frame, _)) = o.frame.take() {
                    emit(Event::SendFailed {
                        socket,
                        frame,
                        error: ws_error(&e),
                    });
                }
                o.close = None; // the failure shows up on the read side, when the stream ends
                return;
            }
        }
        let message = match (o.frame.take(), o.close.take()) {
            (Some((frame, text)), close) => {
                o.close = close;
                o.flushing = Some(frame);
                Message::text(text)
            }
            (None, Some((code, reason))) => Message::Close(Some(CloseFrame {
                code: code.into(),
                reason: reason.into(),
            })),
            (None, None) => return,
        };
        match Pin::new(&mut o.ws).start_send(message) {
            Ok(()) => o.dirty = true,
            Err(e) => {
                if let Some(frame) = o.flushing.take() {
                    emit(Event::SendFailed {
                        socket,
                        frame,
                        error: ws_error(&e),
                    });
                }
            }
        }
    }
}

/// Reads until nothing is ready; false when the stream has ended (its `Closed` is in `events`).
fn poll_reads<W>(
    o: &mut Open<W>,
    socket: SocketId,
    cx: &mut Context<'_>,
    emit: &mut impl FnMut(Event),
) -> bool
where
    W: Stream<Item = Result<Message, WsError>> + Unpin,
{
    for _ in 0..READS_PER_ROUND {
        let (code, reason) = match Pin::new(&mut o.ws).poll_next(cx) {
            Poll::Pending => return true,
            Poll::Ready(Some(Ok(Message::Text(text)))) => {
                emit(Event::FrameReceived {
                    socket,
                    text: text.as_str().to_owned(),
                });
                continue;
            }
            Poll::Ready(Some(Ok(Message::Binary(data)))) => {
                emit(Event::BinaryReceived {
                    socket,
                    data: data.to_vec(),
                });
                continue;
            }
            Poll::Ready(Some(Ok(Message::Close(frame)))) => {
                // Keep reading: tungstenite answers the close and then ends the stream.
                o.peer_close = Some(match frame {
                    Some(f) => (u16::from(f.code), f.reason.as_str().to_owned()),
                    None => (1005, String::new()),
                });
                continue;
            }
            // A ping (answered by tungstenite on a later read or write), a pong, a raw frame.
            Poll::Ready(Some(Ok(_))) => continue,
            Poll::Ready(Some(Err(e))) => match o.peer_close.take() {
                Some((code, reason)) => (Some(code), reason),
                None => (None, ws_error(&e)),
            },
            Poll::Ready(None) => match o.peer_close.take() {
                Some((code, reason)) => (Some(code), reason),
                None => (
                    None,
                    "the connection ended without a close frame".to_owned(),
                ),
            },
        };
        if let Some(frame) = o.flushing.take() {
            emit(Event::SendFailed {
                socket,
                frame,
                error: reason.clone(),
            });
        }
        emit(Event::Closed {
            socket,
            code,
            reason,
        });
        return false;
    }
    // More may be ready: come back for it.
    cx.waker().wake_by_ref();
    true
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
