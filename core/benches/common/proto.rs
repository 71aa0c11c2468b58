//! Bench-side prototypes of two suggested core changes, to put a number on them. Not used by the core.
//!
//! - [`frame`]: the KEEP_ALIVE frame written by hand (fixed field order, numbers formatted on the stack,
//!   the size patched in at a remembered offset) instead of serde_json + a search for `"bytes":0` + a splice
//!   + a UTF-8 re-check. Byte-identical to `KeepAlivePayload::to_frame` (asserted by the bench).
//! - [`classify_pong_borrowed`]: the core's `WireFrame`/`MessageBody` parse with string fields that really
//!   borrow. `#[serde(borrow)]` on an `Option<Cow<str>>` field does not borrow (serde special-cases only a
//!   bare `Cow<str>`), so today every `topicName`, `type` and `message` is copied into a fresh `String`.

use std::borrow::Cow;

use genesys_keepalive::frames::{FrameError, KeepAlivePayload};
use serde::{Deserialize, Deserializer};

fn push_u64(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or("0"));
}

fn push_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).unwrap_or_default());
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

/// Build + validate + serialize, by hand.
pub fn frame(mut p: KeepAlivePayload<'_>, min_ms: u64) -> Result<String, FrameError> {
    let mut s = String::with_capacity(320);
    s.push_str("{\"connectionId\":");
    push_str(&mut s, p.connection_id);
    s.push_str(",\"type\":");
    push_str(&mut s, p.kind);
    s.push_str(",\"timestamp\":");
    push_u64(&mut s, p.timestamp);
    s.push_str(",\"intervalMatrix\":{\"current\":");
    push_u64(&mut s, p.interval_matrix.current);
    s.push_str(",\"state\":");
    push_str(&mut s, p.interval_matrix.state);
    s.push_str(",\"nextExpected\":");
    push_u64(&mut s, p.interval_matrix.next_expected);
    s.push_str("},\"sizeDirective\":{\"bytes\":");
    let at = s.len();
    s.push_str(",\"maxAllowed\":");
    push_u64(&mut s, p.size_directive.max_allowed as u64);
    s.push_str(if p.size_directive.compression {
        ",\"compression\":true},\"seq\":"
    } else {
        ",\"compression\":false},\"seq\":"
    });
    push_u64(&mut s, p.seq);
    s.push('}');
    let base = s.len();
    let mut size = base + 1;
    for d in 1..=20 {
        if digits(base + d) == d {
            size = base + d;
            break;
        }
    }
    p.size_directive.bytes = size;
    p.validate(min_ms)?;
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    let mut n = size;
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    s.insert_str(at, std::str::from_utf8(&tmp[i..]).unwrap_or("0"));
    Ok(s)
}

fn opt_cow<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    // `Cow<str>` deserialized through this wrapper borrows when the input has no escapes.
    #[derive(Deserialize)]
    struct W<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<W<'de>>::deserialize(d)?.map(|w| w.0))
}

#[derive(Deserialize)]
struct WireFrame<'a> {
    #[serde(rename = "topicName", borrow, default, deserialize_with = "opt_cow")]
    topic_name: Option<Cow<'a, str>>,
    #[serde(rename = "eventBody", borrow, default)]
    event_body: Option<&'a serde_json::value::RawValue>,
    #[serde(rename = "type", borrow, default, deserialize_with = "opt_cow")]
    kind: Option<Cow<'a, str>>,
    #[serde(default)]
    seq: Option<u64>,
    #[serde(borrow, default)]
    result: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    message: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct MessageBody<'a> {
    #[serde(borrow, default, deserialize_with = "opt_cow")]
    message: Option<Cow<'a, str>>,
}

/// The core's pong classification path (notifications), with borrowing string fields. True for a pong.
pub fn classify_pong_borrowed(text: &str) -> bool {
    let Ok(w) = serde_json::from_str::<WireFrame<'_>>(text) else {
        return false;
    };
    let _ = (&w.kind, w.seq, w.result, &w.message, w.metadata);
    if w.topic_name.as_deref() != Some("channel.metadata") {
        return false;
    }
    w.event_body
        .and_then(|b| serde_json::from_str::<MessageBody<'_>>(b.get()).ok())
        .and_then(|b| b.message)
        .as_deref()
        == Some("pong")
}

/// The same, for `KEEP_ALIVE_ACK` (keepalive-frame): the echoed seq, if it is an ack.
pub fn classify_ack_borrowed(text: &str) -> Option<Option<u64>> {
    let w = serde_json::from_str::<WireFrame<'_>>(text).ok()?;
    (w.kind.as_deref() == Some("KEEP_ALIVE_ACK")).then_some(w.seq)
}
