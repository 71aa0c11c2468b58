//! One task per accepted WebSocket: answers pings and KEEP_ALIVE frames, writes heartbeats
//! and notifications (through the latency queue), applies faults and closes idle sockets.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{OutKind, Shared, SocketCmd};
use crate::tls::Conn;
use crate::util;

/// The seed's maximum KEEP_ALIVE frame size.
const MAX_KEEPALIVE_BYTES: usize = 1024;

const PONG: &str = r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#;
const HEARTBEAT: &str =
    r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#;

/// Removes the socket from the gateway's table when its task ends (or never starts).
pub(super) struct SocketGuard {
    shared: Arc<Shared>,
    id: u64,
}

impl SocketGuard {
    pub(super) fn new(shared: Arc<Shared>, id: u64) -> Self {
        SocketGuard { shared, id }
    }
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let id = self.id;
        self.shared.update(|s| {
            if let Some(entry) = s.sockets.remove(&id) {
                s.stats.sockets_open_now = s.stats.sockets_open_now.saturating_sub(1);
                if let Some(c) = s.client_stats(entry.client.as_deref()) {
                    c.sockets_open_now = c.sockets_open_now.saturating_sub(1);
                }
            }
        });
    }
}

type Queue = VecDeque<(Instant, Message, OutKind)>;

fn non_zero(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

/// Queues a frame, due after the current latency.
fn enqueue(shared: &Shared, queue: &mut Queue, msg: Message, kind: OutKind) {
    let due = Instant::now() + shared.latency();
    queue.push_back((due, msg, kind));
}

/// Writes every frame that is due; counts them (as they are handed to the socket).
async fn flush_due(
    shared: &Shared,
    client: Option<&str>,
    ws: &mut WebSocketStream<Conn>,
    queue: &mut Queue,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    while queue
        .front()
        .is_some_and(|(due, _, _)| *due <= Instant::now())
    {
        let Some((_, msg, kind)) = queue.pop_front() else {
            break;
        };
        // Count before writing, so a client that has read the frame always sees it counted.
        shared.update(|s| match kind {
            OutKind::Pong => s.stats.pongs_sent += 1,
            OutKind::Ack => s.stats.acks_sent += 1,
            OutKind::Heartbeat => s.stats.heartbeats_sent += 1,
            OutKind::Notification => {
                s.stats.notifications_sent += 1;
                if let Some(c) = s.client_stats(client) {
                    c.notifications_sent += 1;
                }
            }
            OutKind::SocketClosing => s.stats.socket_closing_sent += 1,
            OutKind::Garbage => s.stats.garbage_frames_sent += 1,
            OutKind::Other => {}
        });
        ws.send(msg).await?;
    }
    Ok(())
}

fn record_close(shared: &Shared, client: Option<&str>, frame: Option<&CloseFrame>) {
    let entry = match frame {
        Some(f) => (u16::from(f.code), f.reason.to_string()),
        None => (1005, String::new()),
    };
    let limit = shared.config.log_limit;
    shared.update(|s| {
        if let Some(c) = s.client_stats(client) {
            util::push_bounded(&mut c.close_codes, limit, entry.clone());
        }
        util::push_bounded(&mut s.stats.close_codes, limit, entry);
    });
}

/// Sends a close frame, then reads until the client's answer (or 2 s), recording close frames.
async fn close(
    shared: &Shared,
    client: Option<&str>,
    mut ws: WebSocketStream<Conn>,
    code: u16,
    reason: &str,
) {
    let frame = CloseFrame {
        code: CloseCode::from(code),
        reason: reason.into(),
    };
    if ws.send(Message::Close(Some(frame))).await.is_err() {
        return;
    }
    let drain = async {
        while let Some(Ok(msg)) = ws.next().await {
            if let Message::Close(f) = msg {
                record_close(shared, client, f.as_ref());
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
}

fn garbage() -> Vec<Message> {
    vec![
        Message::text("this is not JSON {{{"),
        Message::text("[1,2,3]"),
        Message::text(r#"{"topicName":42,"eventBody":"not an object"}"#),
        Message::text(r#"{"unexpected":true}"#),
        Message::binary(vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]),
        Message::text("x".repeat(2 * 1024 * 1024)),
        Message::text(PONG),
        Message::Pong(Bytes::from_static(b"unsolicited")),
    ]
}

fn is_ping(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .is_some_and(|v| v.get("message").and_then(Value::as_str) == Some("ping"))
}

/// The seed's schema: required fields present and well-typed, frame at most 1,024 bytes.
fn keepalive_valid(v: &Value, len: usize) -> bool {
    len <= MAX_KEEPALIVE_BYTES
        && v.get("connectionId")
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
        && v.get("type").and_then(Value::as_str) == Some("KEEP_ALIVE")
        && v.get("timestamp")
            .is_some_and(|t| t.is_number() || t.is_string())
        && v.get("intervalMatrix").is_some_and(Value::is_object)
        && v.get("sizeDirective").is_some_and(Value::is_object)
}

fn on_frame(
    shared: &Shared,
    client: Option<&str>,
    queue: &mut Queue,
    notifications: bool,
    msg: Message,
) {
    match msg {
        Message::Text(text) => {
            if notifications {
                if is_ping(&text) {
                    shared.update(|s| s.stats.pings_received += 1);
                    enqueue(shared, queue, Message::text(PONG), OutKind::Pong);
                }
                return;
            }
            let Ok(v) = serde_json::from_str::<Value>(&text) else {
                return;
            };
            if v.get("type").and_then(Value::as_str) != Some("KEEP_ALIVE") {
                return;
            }
            let valid = keepalive_valid(&v, text.len());
            shared.update(|s| {
                s.stats.keepalives_received += 1;
                if !valid {
                    s.stats.keepalives_invalid += 1;
                }
            });
            let mut ack = json!({
                "type": "KEEP_ALIVE_ACK",
                "timestamp": util::epoch_ms(std::time::SystemTime::now()),
            });
            for field in ["seq", "connectionId"] {
                if let Some(x) = v.get(field) {
                    ack[field] = x.clone();
                }
            }
            enqueue(shared, queue, Message::text(ack.to_string()), OutKind::Ack);
        }
        Message::Close(frame) => record_close(shared, client, frame.as_ref()),
        _ => {}
    }
}

/// Runs one socket until it closes, fails, is reset, or the gateway stops.
pub(super) async fn run(
    shared: Arc<Shared>,
    mut ws: WebSocketStream<Conn>,
    channel: Option<String>,
    client: Option<String>,
    mut rx: mpsc::UnboundedReceiver<SocketCmd>,
    guard: SocketGuard,
) {
    let _guard = guard;
    let client = client.as_deref();
    let notifications = channel.is_some();
    let heartbeat = non_zero(shared.config.server_heartbeat).filter(|_| notifications);
    let idle = non_zero(shared.config.idle_timeout);
    let grace = shared.config.socket_closing_grace;
    let far = Duration::from_secs(365 * 24 * 3600);

    let mut queue: Queue = VecDeque::new();
    let mut last_in = Instant::now();
    let mut next_heartbeat = heartbeat.map(|d| Instant::now() + d);
    let mut close_at: Option<Instant> = None;
    let mut blackholed = false;

    loop {
        let now = Instant::now();
        let queue_due = queue.front().map(|(due, _, _)| *due);
        let idle_at = idle.map(|d| last_in + d);
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { break };
                match cmd {
                    SocketCmd::Reset => {
                        shared.update(|s| s.stats.sockets_reset += 1);
                        // RST instead of FIN, and no close frame.
                        let _ = ws.get_ref().tcp().set_zero_linger();
                        drop(ws);
                        return;
                    }
                    _ if blackholed => {}
                    SocketCmd::Blackhole => {
                        blackholed = true;
                        queue.clear();
                        shared.update(|s| s.stats.sockets_blackholed += 1);
                    }
                    SocketCmd::Send(text, kind) => enqueue(&shared, &mut queue, Message::text(text), kind),
                    SocketCmd::Garbage => {
                        for m in garbage() {
                            enqueue(&shared, &mut queue, m, OutKind::Garbage);
                        }
                    }
                    SocketCmd::SocketClosing => {
                        let frame = json!({
                            "topicName": "v2.system.socket_closing",
                            "eventBody": {"message": format!(
                                "This socket will be closed in {} ms for maintenance; open a new one.",
                                grace.as_millis()
                            )},
                        });
                        enqueue(&shared, &mut queue, Message::text(frame.to_string()), OutKind::SocketClosing);
                        if close_at.is_none() {
                            close_at = Some(Instant::now() + grace);
                        }
                    }
                }
            }
            msg = ws.next(), if !blackholed => match msg {
                None => break,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "testkit gateway: socket read failed");
                    break;
                }
                Some(Ok(m)) => {
                    last_in = Instant::now();
                    on_frame(&shared, client, &mut queue, notifications, m);
                }
            },
            _ = sleep_until(queue_due.unwrap_or(now + far)), if !blackholed && queue_due.is_some() => {
                if let Err(e) = flush_due(&shared, client, &mut ws, &mut queue).await {
                    tracing::debug!(error = %e, "testkit gateway: socket write failed");
                    break;
                }
            }
            _ = sleep_until(next_heartbeat.unwrap_or(now + far)), if !blackholed && next_heartbeat.is_some() => {
                enqueue(&shared, &mut queue, Message::text(HEARTBEAT), OutKind::Heartbeat);
                if let (Some(at), Some(every)) = (next_heartbeat, heartbeat) {
                    next_heartbeat = Some((at + every).max(Instant::now()));
                }
            }
            _ = sleep_until(idle_at.unwrap_or(now + far)), if !blackholed && idle_at.is_some() => {
                shared.update(|s| s.stats.idle_closes += 1);
                close(&shared, client, ws, 1001, "idle timeout").await;
                return;
            }
            _ = sleep_until(close_at.unwrap_or(now + far)), if !blackholed && close_at.is_some() => {
                shared.update(|s| s.stats.planned_closes += 1);
                // Flush what is already due (e.g. the socket_closing frame itself) first.
                let _ = flush_due(&shared, client, &mut ws, &mut queue).await;
                close(&shared, client, ws, 1001, "socket closing").await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_detection() {
        assert!(is_ping(r#"{"message":"ping"}"#));
        assert!(is_ping(r#"{ "message" : "ping" }"#));
        assert!(!is_ping(r#"{"message":"pong"}"#));
        assert!(!is_ping("ping"));
    }

    #[test]
    fn keepalive_schema() {
        let good = json!({
            "connectionId": "c1", "type": "KEEP_ALIVE", "timestamp": 1,
            "intervalMatrix": {"current": 20000, "state": "STABLE", "nextExpected": 20001},
            "sizeDirective": {"bytes": 200, "maxAllowed": 1024, "compression": false},
        });
        assert!(keepalive_valid(&good, 200));
        assert!(!keepalive_valid(&good, 1025));
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("sizeDirective");
        assert!(!keepalive_valid(&missing, 100));
    }
}
