//! Frames and profiles: what a keep-alive frame is, how it is validated before sending, and what an
//! inbound frame means under each profile.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::config::ProfileKind;

/// The Notifications API health check, sent exactly as Genesys documents it.
pub const PING_FRAME: &str = r#"{"message":"ping"}"#;

/// The answer to [`PING_FRAME`], byte for byte as Genesys sends it.
pub const PONG_FRAME: &str = r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#;

/// The Genesys server heartbeat, byte for byte.
pub const SERVER_HEARTBEAT_FRAME: &str =
    r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#;

const ACK_FRAME: &str = r#"{"type":"KEEP_ALIVE_ACK"}"#;
const ACK_SEQ_PREFIX: &str = r#"{"type":"KEEP_ALIVE_ACK","seq":"#;

/// The seed's `intervalMatrix` block of a heartbeat.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IntervalInfo<'a> {
    /// The interval in force, ms.
    pub current: u64,
    /// The state that chose it.
    pub state: &'a str,
    /// When the next heartbeat is due, epoch ms.
    pub next_expected: u64,
}

/// The seed's `sizeDirective` block of a heartbeat.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SizeDirective {
    /// The serialized frame's size in bytes (exact: the size with this number in it).
    pub bytes: usize,
    /// The gateway's limit.
    pub max_allowed: usize,
    /// Always false.
    pub compression: bool,
}

/// The seed's KEEP_ALIVE frame, plus `seq` so that an ack can name the heartbeat it answers.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KeepAlivePayload<'a> {
    /// The connection's id (a UUID).
    pub connection_id: &'a str,
    /// Always `KEEP_ALIVE`.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// Epoch ms when built.
    pub timestamp: u64,
    /// Interval and state.
    pub interval_matrix: IntervalInfo<'a>,
    /// Size and limit.
    pub size_directive: SizeDirective,
    /// Heartbeat sequence number; a `KEEP_ALIVE_ACK` may echo it.
    pub seq: u64,
}

/// Why a frame was refused before sending.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// A required field is empty or wrong.
    #[error("invalid heartbeat schema: {0}")]
    Schema(&'static str),
    /// The interval is below the minimum.
    #[error("interval {current} ms violates minimum threshold {min} ms")]
    IntervalTooShort {
        /// The interval.
        current: u64,
        /// The minimum.
        min: u64,
    },
    /// The frame is too big.
    #[error("heartbeat payload exceeds gateway constraint: {size} > {max}")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
}

impl KeepAlivePayload<'_> {
    /// The seed's `validateHeartbeatSchema`: required fields present and sane, interval at least `min_ms`,
    /// size within the limit.
    pub fn validate(&self, min_ms: u64) -> Result<(), FrameError> {
        if self.connection_id.is_empty() {
            return Err(FrameError::Schema("connectionId is empty"));
        }
        if self.kind != "KEEP_ALIVE" {
            return Err(FrameError::Schema("type is not KEEP_ALIVE"));
        }
        if self.timestamp == 0 {
            return Err(FrameError::Schema("timestamp is missing"));
        }
        if self.interval_matrix.state.is_empty() {
            return Err(FrameError::Schema("intervalMatrix.state is empty"));
        }
        if self.interval_matrix.current < min_ms {
            return Err(FrameError::IntervalTooShort {
                current: self.interval_matrix.current,
                min: min_ms,
            });
        }
        if self.size_directive.bytes > self.size_directive.max_allowed {
            return Err(FrameError::TooLarge {
                size: self.size_directive.bytes,
                max: self.size_directive.max_allowed,
            });
        }
        Ok(())
    }

    /// Serializes the frame with `sizeDirective.bytes` set to the exact size of the result, then validates
    /// it: build + validate + serialize in one pass (the seed serializes twice and reports the size of a
    /// frame with `bytes: 0` in it). The JSON is written directly, in the field order of the `Serialize`
    /// derive, and is byte-identical to `serde_json` with the size filled in.
    ///
    /// ```
    /// use genesys_keepalive::frames::*;
    /// let p = KeepAlivePayload {
    ///     connection_id: "c0ffee00-0000-4000-8000-000000000000", kind: "KEEP_ALIVE", timestamp: 1_700_000_000_000,
    ///     interval_matrix: IntervalInfo { current: 20_000, state: "STABLE", next_expected: 1_700_000_020_000 },
    ///     size_directive: SizeDirective { bytes: 0, max_allowed: 1024, compression: false },
    ///     seq: 1,
    /// };
    /// let text = p.to_frame(5_000).unwrap();
    /// let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    /// assert_eq!(v["sizeDirective"]["bytes"].as_u64().unwrap() as usize, text.len());
    /// ```
    pub fn to_frame(mut self, min_ms: u64) -> Result<String, FrameError> {
        let mut out = String::with_capacity(320);
        out.push_str("{\"connectionId\":");
        push_json_str(&mut out, self.connection_id);
        out.push_str(",\"type\":");
        push_json_str(&mut out, self.kind);
        out.push_str(",\"timestamp\":");
        push_u64(&mut out, self.timestamp);
        out.push_str(",\"intervalMatrix\":{\"current\":");
        push_u64(&mut out, self.interval_matrix.current);
        out.push_str(",\"state\":");
        push_json_str(&mut out, self.interval_matrix.state);
        out.push_str(",\"nextExpected\":");
        push_u64(&mut out, self.interval_matrix.next_expected);
        out.push_str("},\"sizeDirective\":{\"bytes\":");
        let size_at = out.len();
        out.push_str(",\"maxAllowed\":");
        push_u64(&mut out, self.size_directive.max_allowed as u64);
        out.push_str(if self.size_directive.compression {
            ",\"compression\":true},\"seq\":"
        } else {
            ",\"compression\":false},\"seq\":"
        });
        push_u64(&mut out, self.seq);
        out.push('}');
        // The final size has d digits where d is the digit count of (len + d).
        let base = out.len();
        let size = (1..=20)
            .map(|d| base + d)
            .find(|candidate| digits(*candidate) == candidate - base)
            .unwrap_or(base + 1);
        self.size_directive.bytes = size;
        self.validate(min_ms)?;
        let mut num = itoa::Buffer::new();
        out.insert_str(size_at, num.format(size));
        debug_assert_eq!(out.len(), size);
        Ok(out)
    }
}

fn push_u64(out: &mut String, n: u64) {
    let mut b = itoa::Buffer::new();
    out.push_str(b.format(n));
}

/// A JSON string literal: copied as is when nothing needs escaping, else escaped by serde_json.
fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

fn digits(mut n: usize) -> usize {
    let mut d = 1;
    while n >= 10 {
        n /= 10;
        d += 1;
    }
    d
}

/// What an inbound text frame means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// keepalive-frame: a `KEEP_ALIVE_ACK`, naming its heartbeat's `seq` if it echoes one.
    KeepAliveAck {
        /// The echoed `seq`.
        seq: Option<u64>,
    },
    /// notifications: the answer to `{"message":"ping"}`.
    Pong,
    /// notifications: `channel.metadata` "WebSocket Heartbeat".
    ServerHeartbeat,
    /// notifications: `v2.system.socket_closing`: the server closes this socket in about a minute.
    SocketClosing,
    /// notifications: `{"result":"404",…}`: the channel is gone or replaced.
    ChannelGone {
        /// The server's message.
        message: Cow<'a, str>,
    },
    /// A notification (or, for keepalive-frame, any other typed message) for the application.
    Notification {
        /// `topicName` (keepalive-frame: `type`).
        topic: Cow<'a, str>,
        /// `metadata.CorrelationId`, if present.
        correlation_id: Option<Cow<'a, str>>,
    },
    /// Valid JSON of a shape the profile does not know.
    WrongShape(&'static str),
    /// Not JSON at all.
    NotJson,
}

#[derive(Deserialize)]
struct WireFrame<'a> {
    #[serde(rename = "topicName", borrow, default)]
    topic_name: Option<Cow<'a, str>>,
    #[serde(rename = "eventBody", borrow, default)]
    event_body: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "type", borrow, default)]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct MessageBody<'a> {
    #[serde(borrow, default)]
    message: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(rename = "CorrelationId", borrow, default)]
    correlation_id: Option<Cow<'a, str>>,
}

/// Classifies an inbound text frame under `profile`. Never panics, whatever the text.
///
/// ```
/// use genesys_keepalive::{ProfileKind, frames::{classify, Inbound}};
/// let pong = r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#;
/// assert_eq!(classify(ProfileKind::Notifications, pong), Inbound::Pong);
/// assert_eq!(classify(ProfileKind::KeepaliveFrame, r#"{"type":"KEEP_ALIVE_ACK","seq":3}"#),
///            Inbound::KeepAliveAck { seq: Some(3) });
/// assert_eq!(classify(ProfileKind::Notifications, "garbage"), Inbound::NotJson);
/// ```
pub fn classify(profile: ProfileKind, text: &str) -> Inbound<'_> {
    // Fast paths for the frames that come every few seconds, exactly as the servers send them; anything
    // else (other spacing, extra fields) takes the full parse below and means the same.
    match profile {
        ProfileKind::Notifications => {
            if text == PONG_FRAME {
                return Inbound::Pong;
            }
            if text == SERVER_HEARTBEAT_FRAME {
                return Inbound::ServerHeartbeat;
            }
        }
        ProfileKind::KeepaliveFrame => {
            if text == ACK_FRAME {
                return Inbound::KeepAliveAck { seq: None };
            }
            if let Some(digits) = text
                .strip_prefix(ACK_SEQ_PREFIX)
                .and_then(|rest| rest.strip_suffix('}'))
            {
                if !digits.is_empty()
                    && digits.len() <= 19
                    && digits.bytes().all(|b| b.is_ascii_digit())
                {
                    if let Ok(seq) = digits.parse() {
                        return Inbound::KeepAliveAck { seq: Some(seq) };
                    }
                }
            }
        }
    }
    let wire: WireFrame<'_> = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(e) if e.is_data() => return Inbound::WrongShape("fields of the wrong type"),
        Err(_) => return Inbound::NotJson,
    };
    match profile {
        ProfileKind::KeepaliveFrame => match wire.kind {
            Some(k) if k == "KEEP_ALIVE_ACK" => Inbound::KeepAliveAck { seq: wire.seq },
            Some(k) if k.is_empty() => Inbound::WrongShape("empty type"),
            Some(k) => Inbound::Notification {
                topic: k,
                correlation_id: correlation(wire.metadata),
            },
            None => Inbound::WrongShape("no type"),
        },
        ProfileKind::Notifications => {
            let Some(topic) = wire.topic_name else {
                if let Some(r) = wire.result {
                    let r = r.get().trim_matches('"');
                    if r == "404" {
                        return Inbound::ChannelGone {
                            message: wire.message.unwrap_or(Cow::Borrowed("")),
                        };
                    }
                    return Inbound::WrongShape("result other than 404");
                }
                return Inbound::WrongShape("no topicName");
            };
            if topic == "channel.metadata" {
                let msg = wire
                    .event_body
                    .and_then(|b| serde_json::from_str::<MessageBody<'_>>(b.get()).ok())
                    .and_then(|b| b.message);
                return match msg.as_deref() {
                    Some("pong") => Inbound::Pong,
                    Some("WebSocket Heartbeat") => Inbound::ServerHeartbeat,
                    _ => Inbound::WrongShape("unknown channel.metadata message"),
                };
            }
            if topic == "v2.system.socket_closing" {
                return Inbound::SocketClosing;
            }
            if topic.is_empty() {
                return Inbound::WrongShape("empty topicName");
            }
            Inbound::Notification {
                topic,
                correlation_id: correlation(wire.metadata),
            }
        }
    }
}

fn correlation(meta: Option<&serde_json::value::RawValue>) -> Option<Cow<'_, str>> {
    meta.and_then(|m| serde_json::from_str::<Metadata<'_>>(m.get()).ok())
        .and_then(|m| m.correlation_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(current: u64) -> KeepAlivePayload<'static> {
        KeepAlivePayload {
            connection_id: "c0ffee00-0000-4000-8000-000000000000",
            kind: "KEEP_ALIVE",
            timestamp: 1_700_000_000_000,
            interval_matrix: IntervalInfo {
                current,
                state: "DEGRADED",
                next_expected: 1_700_000_000_000 + current,
            },
            size_directive: SizeDirective {
                bytes: 0,
                max_allowed: 1024,
                compression: false,
            },
            seq: 99,
        }
    }

    #[test]
    fn size_directive_is_exact_across_digit_boundaries() {
        for seq in [0, 9, 10, 99_999, u64::MAX] {
            let mut p = payload(10_000);
            p.seq = seq;
            let text = p.to_frame(5_000).unwrap();
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(
                v["sizeDirective"]["bytes"].as_u64().unwrap() as usize,
                text.len()
            );
            for f in [
                "connectionId",
                "type",
                "timestamp",
                "intervalMatrix",
                "sizeDirective",
            ] {
                assert!(v.get(f).is_some(), "missing {f}");
            }
        }
    }

    #[test]
    fn validation_refuses_short_interval_and_oversize() {
        assert!(matches!(
            payload(1_000).to_frame(5_000),
            Err(FrameError::IntervalTooShort { .. })
        ));
        let mut p = payload(10_000);
        p.size_directive.max_allowed = 100;
        assert!(matches!(
            p.to_frame(5_000),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn fast_paths_agree_with_the_full_parse() {
        use ProfileKind::*;
        for (profile, fast, slow) in [
            (
                Notifications,
                PONG_FRAME,
                r#"{ "topicName": "channel.metadata", "eventBody": {"message":"pong"} }"#,
            ),
            (
                Notifications,
                SERVER_HEARTBEAT_FRAME,
                r#"{"eventBody":{"message":"WebSocket Heartbeat"},"topicName":"channel.metadata"}"#,
            ),
            (
                KeepaliveFrame,
                r#"{"type":"KEEP_ALIVE_ACK"}"#,
                r#"{ "type":"KEEP_ALIVE_ACK" }"#,
            ),
            (
                KeepaliveFrame,
                r#"{"type":"KEEP_ALIVE_ACK","seq":42}"#,
                r#"{"seq":42,"type":"KEEP_ALIVE_ACK"}"#,
            ),
        ] {
            assert_eq!(classify(profile, fast), classify(profile, slow), "{fast}");
        }
        // Not taken by the fast path, and still right.
        assert_eq!(
            classify(
                KeepaliveFrame,
                r#"{"type":"KEEP_ALIVE_ACK","seq":99999999999999999999}"#
            ),
            Inbound::WrongShape("fields of the wrong type")
        );
        assert_eq!(
            classify(KeepaliveFrame, r#"{"type":"KEEP_ALIVE_ACK","seq":-1}"#),
            Inbound::WrongShape("fields of the wrong type")
        );
        assert!(matches!(
            classify(KeepaliveFrame, r#"{"type":"KEEP_ALIVE_ACK","seq":}"#),
            Inbound::NotJson
        ));
    }

    #[test]
    fn hand_written_frame_is_byte_identical_to_serde() {
        for (seq, id, state) in [
            (0, "c0ffee00-0000-4000-8000-000000000000", "STABLE"),
            (u64::MAX, "id with \"quotes\" and \\ and \u{1}", "DEGRADED"),
            (10, "ünïcödé", "RECONNECTING"),
        ] {
            let mut p = payload(10_000);
            p.seq = seq;
            p.connection_id = id;
            p.interval_matrix.state = state;
            let text = p.clone().to_frame(5_000).unwrap();
            let mut q = p;
            q.size_directive.bytes = text.len();
            assert_eq!(text, serde_json::to_string(&q).unwrap());
        }
    }

    #[test]
    fn classify_notifications_shapes() {
        use ProfileKind::Notifications as N;
        assert_eq!(
            classify(
                N,
                r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#
            ),
            Inbound::ServerHeartbeat
        );
        assert_eq!(
            classify(
                N,
                r#"{"topicName":"v2.system.socket_closing","eventBody":{}}"#
            ),
            Inbound::SocketClosing
        );
        assert!(matches!(
            classify(N, r#"{"result":"404","message":"gone"}"#),
            Inbound::ChannelGone { .. }
        ));
        assert_eq!(
            classify(
                N,
                r#"{"topicName":"v2.a","eventBody":{"n":1},"metadata":{"CorrelationId":"x1"}}"#
            ),
            Inbound::Notification {
                topic: "v2.a".into(),
                correlation_id: Some("x1".into())
            }
        );
        assert!(matches!(
            classify(N, r#"{"topicName":5}"#),
            Inbound::WrongShape(_)
        ));
        assert!(matches!(classify(N, "[1,2]"), Inbound::WrongShape(_)));
        assert_eq!(classify(N, "{"), Inbound::NotJson);
        assert_eq!(classify(N, ""), Inbound::NotJson);
    }
}
