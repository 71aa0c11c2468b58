//! What goes into the machine ([`Event`]) and what comes out ([`Action`]).

use std::time::Duration;

use serde::Serialize;

use crate::http::{Headers, HttpRequest, HttpResponse};
use crate::ids::{FrameId, RequestId, SocketId};
use crate::state::State;

/// An input, stamped by the caller with `now` in [`KeepAliveMachine::handle`](crate::KeepAliveMachine::handle).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Time passed (a timer from `poll_timeout` is due, or the caller just wants to check).
    Tick,
    /// The WebSocket handshake of `socket` succeeded.
    Opened {
        /// The socket.
        socket: SocketId,
    },
    /// A text frame arrived.
    FrameReceived {
        /// The socket it arrived on.
        socket: SocketId,
        /// Its text.
        text: String,
    },
    /// A binary frame arrived (or a text frame that was not valid UTF-8).
    BinaryReceived {
        /// The socket it arrived on.
        socket: SocketId,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// A frame from [`Action::SendFrame`] was written to the socket.
    SendCompleted {
        /// The socket.
        socket: SocketId,
        /// The frame.
        frame: FrameId,
    },
    /// Writing a frame failed.
    SendFailed {
        /// The socket.
        socket: SocketId,
        /// The frame.
        frame: FrameId,
        /// What the driver saw.
        error: String,
    },
    /// The socket closed: a close frame from the peer (with its code), or the stream ended or failed
    /// (`code: None`). Also the answer to the machine's own [`Action::Close`].
    Closed {
        /// The socket.
        socket: SocketId,
        /// The close code, if a close frame arrived.
        code: Option<u16>,
        /// The close reason or the error.
        reason: String,
    },
    /// The handshake of `socket` failed.
    ConnectFailed {
        /// The socket.
        socket: SocketId,
        /// The HTTP status of a refused handshake, if there was one.
        status: Option<u16>,
        /// The `Retry-After` of a refused handshake, if any.
        retry_after: Option<Duration>,
        /// What the driver saw.
        error: String,
    },
    /// The answer to an [`Action::Http`].
    HttpResponse(HttpResponse),
    /// An [`Action::Http`] got no answer (connection refused, reset, TLS error, timeout).
    HttpFailed {
        /// The request.
        request: RequestId,
        /// What the driver saw.
        error: String,
    },
    /// The application says the token is no longer good (e.g. a 401 it saw elsewhere): refresh now.
    TokenExpired,
    /// Add topics to the subscription (notifications profile).
    Subscribe {
        /// The topics.
        topics: Vec<String>,
    },
    /// Close gracefully (1000 "Graceful shutdown") and stop.
    Shutdown,
}

/// An output, taken with [`KeepAliveMachine::poll_action`](crate::KeepAliveMachine::poll_action).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Perform this HTTP request and report [`Event::HttpResponse`] or [`Event::HttpFailed`].
    Http(HttpRequest),
    /// Open a WebSocket; report [`Event::Opened`] or [`Event::ConnectFailed`], then every frame and the close.
    Connect {
        /// The id to report with.
        socket: SocketId,
        /// `wss://…` (or `ws://…` when insecure is allowed).
        url: String,
        /// Handshake headers (a bearer token for the keepalive-frame profile). `Debug` redacts credentials.
        headers: Headers,
    },
    /// Write this text frame; report [`Event::SendCompleted`] or [`Event::SendFailed`]. At most one frame is
    /// in flight: the next comes after the report.
    SendFrame {
        /// The socket.
        socket: SocketId,
        /// The id to report with.
        frame: FrameId,
        /// The frame's text.
        text: String,
    },
    /// Send a close frame with this code and reason (nothing to send for a socket whose handshake is not
    /// done), then keep reading and reporting frames until the socket ends, and report [`Event::Closed`]
    /// then. How long to wait for that is the machine's business: when its linger deadline passes it emits
    /// [`Action::Discard`] for the socket.
    Close {
        /// The socket.
        socket: SocketId,
        /// 1000, 1001, 1011 or 4000-4999; never 1005, 1006 or 1015.
        code: u16,
        /// At most 123 bytes.
        reason: String,
    },
    /// Drop the socket now (abort its handshake, or drop the connection without waiting for the peer) and
    /// report nothing more about it: the machine has already counted it closed, and ignores whatever was
    /// still on its way from it. Follows an [`Action::Close`] when the linger deadline passed or there was
    /// nothing to wait for (a dead peer, an abandoned attempt).
    Discard {
        /// The socket.
        socket: SocketId,
    },
    /// Informational: the next connection attempt starts after this delay (the machine's own timer does it).
    ReconnectAfter(Duration),
    /// An audit entry (the seed's fields).
    Audit(AuditEntry),
    /// A monitoring alert (the seed's fields).
    Alert(Alert),
    /// A notification for the application, duplicates already dropped.
    Deliver(Notification),
    /// Notifications may have been missed in this window: re-read state through the REST API for it.
    Gap(crate::gap::Gap),
    /// The connection state changed.
    StateChanged {
        /// Before.
        from: State,
        /// After.
        to: State,
    },
    /// The machine has stopped for good; it emits nothing more.
    Stopped(StopReason),
}

/// What an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[allow(missing_docs)]
pub enum AuditEvent {
    SendSuccess,
    SendFailure,
    ValidationFailure,
    ConnectAttempt,
    Connected,
    ConnectFailure,
    Disconnected,
    DeadPeer,
    ReconnectScheduled,
    TokenRefreshed,
    TokenFailure,
    HttpRetry,
    HttpFailure,
    ChannelCreated,
    Subscribed,
    RolloverStarted,
    RolloverComplete,
    ChannelExpired,
    InvalidFrame,
    OversizedFrame,
    UnknownTopic,
    UnmatchedAck,
    UnexpectedEvent,
    ClockWentBackwards,
    Shutdown,
    Stopped,
}

/// One audit entry: the seed's fields, camelCase on the wire.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    /// ISO-8601, derived from the wall-clock anchor given at construction.
    pub timestamp: String,
    /// The connection this concerns.
    pub connection_id: String,
    /// What happened.
    pub event: AuditEvent,
    /// Bytes of the frame concerned (0 when none).
    pub payload_size: usize,
    /// Connection state at the time.
    pub state: State,
    /// What went wrong, if anything. Never holds a credential.
    pub error: Option<String>,
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlertEvent {
    /// Average RTT crossed `latency_threshold` (seed name).
    LatencyThresholdExceeded,
    /// Loss over the window crossed `max_packet_loss` (seed name).
    PacketLossCritical,
    /// No inbound frame for `max_idle`, or too many heartbeats unanswered.
    DeadPeer,
    /// Every reconnect attempt failed.
    ReconnectExhausted,
    /// Authentication or authorization failed for good.
    AuthFailure,
    /// The server announced a planned close (`v2.system.socket_closing`).
    SocketClosing,
}

/// The numbers behind an alert; absent ones are left out.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertMetrics {
    /// Average RTT over the window, in ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub avg_latency: Option<f64>,
    /// Loss over the window, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<f64>,
    /// Heartbeats sent (whole life).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent: Option<u64>,
    /// Heartbeats acked (whole life).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<u64>,
    /// Milliseconds since the last inbound frame.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Reconnect attempts so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Extra words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A monitoring alert: the seed's `{event, metrics, timestamp}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// What it is about.
    pub event: AlertEvent,
    /// The numbers.
    pub metrics: AlertMetrics,
    /// ISO-8601.
    pub timestamp: String,
}

/// A notification from the Notifications API, as received.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    /// Its `topicName`.
    pub topic_name: String,
    /// The whole frame as received (JSON text with `topicName`, `eventBody`, `metadata`, …).
    pub raw: String,
    /// `metadata.CorrelationId`, when present: the key for dropping duplicates.
    pub correlation_id: Option<String>,
}

impl Notification {
    /// The frame parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.raw).unwrap_or(serde_json::Value::Null)
    }
}

/// Why the machine stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StopReason {
    /// [`Event::Shutdown`].
    #[error("shut down on request")]
    Shutdown,
    /// The credentials were refused (401 from the token endpoint, or 401 again after a refresh).
    #[error("authentication failed: {}. Check GENESYS_CLIENT_ID and GENESYS_CLIENT_SECRET and that the OAuth client uses the client-credentials grant", detail.trim_end_matches('.'))]
    AuthenticationFailed {
        /// What the server said.
        detail: String,
    },
    /// 403: the OAuth client lacks a permission or a topic is not allowed.
    #[error("forbidden: {}. Grant the OAuth client's role the permission for this topic (or remove the topic)", detail.trim_end_matches('.'))]
    Forbidden {
        /// What was refused and what the server said.
        detail: String,
    },
    /// Every reconnect attempt failed.
    #[error("gave up after {attempts} reconnect attempts; last error: {}. Check the network and the gateway, then start again", last_error.trim_end_matches('.'))]
    ReconnectAttemptsExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last failure.
        last_error: String,
    },
}
