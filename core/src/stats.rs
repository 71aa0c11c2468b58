//! Counters and gauges, read with [`KeepAliveMachine::stats`](crate::KeepAliveMachine::stats).

use serde::Serialize;

use crate::histogram::Histogram;
use crate::state::State;

/// Everything the machine has counted. Every input that was wrong or made no sense has a counter here.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// The connection state now.
    pub state: State,
    /// Heartbeats (pings / KEEP_ALIVE frames) written.
    pub heartbeats_sent: u64,
    /// Heartbeats answered (pong / KEEP_ALIVE_ACK), including ones answered implicitly by a later ack.
    pub heartbeats_acked: u64,
    /// Heartbeats that went unanswered past `ack_timeout`.
    pub heartbeats_lost: u64,
    /// Acks that matched no outstanding heartbeat (late, duplicate or unsolicited).
    pub acks_unmatched: u64,
    /// Server heartbeats seen (notifications profile).
    pub server_heartbeats: u64,
    /// Frames received (all kinds).
    pub frames_received: u64,
    /// Bytes received in frames.
    pub bytes_received: u64,
    /// Frames written (heartbeats included).
    pub frames_sent: u64,
    /// Writes that failed.
    pub send_failures: u64,
    /// Frames that failed schema validation before sending (never sent).
    pub validation_failures: u64,
    /// Binary frames or invalid UTF-8.
    pub invalid_utf8: u64,
    /// Text frames that were not JSON.
    pub non_json: u64,
    /// JSON of a shape the profile does not know.
    pub wrong_shape: u64,
    /// Notifications for topics we did not subscribe to (still delivered).
    pub unknown_topics: u64,
    /// Frames over `max_inbound_bytes` (dropped).
    pub oversized_frames: u64,
    /// Events that made no sense in the state they came in (stale socket ids, unknown request ids, …).
    pub unexpected_events: u64,
    /// Times `now` went backwards (clamped).
    pub clock_regressions: u64,
    /// Notifications handed to the application.
    pub notifications_delivered: u64,
    /// Duplicate notifications dropped.
    pub duplicates_dropped: u64,
    /// Connection attempts started.
    pub connect_attempts: u64,
    /// Sockets opened.
    pub connections_opened: u64,
    /// Reconnects scheduled after a loss (rollovers not included).
    pub reconnects: u64,
    /// Peers declared dead.
    pub dead_peers: u64,
    /// Planned-close rollovers completed.
    pub rollovers: u64,
    /// Tokens obtained.
    pub token_refreshes: u64,
    /// HTTP requests issued.
    pub http_requests: u64,
    /// HTTP requests retried (429/5xx/401).
    pub http_retries: u64,
    /// Alerts raised.
    pub alerts: u64,
    /// Windows in which notifications may have been missed, reported as [`crate::Gap`]s.
    pub gaps: u64,
    /// Their total length, ms.
    pub gap_ms: u64,
    /// Average RTT over the window, ms (0 with no samples).
    pub avg_latency_ms: f64,
    /// RTT percentiles over the window, ms.
    pub rtt_p50_ms: f64,
    /// 95th percentile RTT, ms.
    pub rtt_p95_ms: f64,
    /// 99th percentile RTT, ms.
    pub rtt_p99_ms: f64,
    /// Loss over the window, 0 to 1.
    pub packet_loss: f64,
    /// RTT samples in the window.
    pub rtt_samples: usize,
    /// Milliseconds the current socket has been open (0 when none).
    pub uptime_ms: u64,
    /// Every RTT measured since start, over all sockets (the window above covers the current one only).
    pub rtt_histogram: Histogram,
    /// How late each heartbeat's timer fired against its schedule (the `handle` call's `now` minus the
    /// deadline): the driver's timer and scheduling delay.
    pub heartbeat_lateness: Histogram,
}
