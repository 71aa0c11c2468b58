//! JSON lines on stdout (one object per line, `kind` first, flushed per line) and wall-clock timestamps.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use genesys_keepalive::{Gap, GapReason, State, Stats};
use genesys_keepalive_driver_common::Report;
use serde::Serialize;

/// Serializes `value` (an object) with `"kind": kind` as its first field.
pub fn json_line(kind: &str, value: &impl Serialize) -> String {
    let kind_json = serde_json::Value::from(kind).to_string();
    let body = match serde_json::to_string(value) {
        Ok(s) => s,
        Err(e) => {
            return format!(
                "{{\"kind\":{kind_json},\"error\":{}}}",
                serde_json::Value::from(e.to_string())
            )
        }
    };
    if body == "{}" {
        format!("{{\"kind\":{kind_json}}}")
    } else if let Some(rest) = body.strip_prefix('{') {
        format!("{{\"kind\":{kind_json},{rest}")
    } else {
        format!("{{\"kind\":{kind_json},\"value\":{body}}}")
    }
}

/// Writes one line to stdout and flushes it. A closed stdout is ignored (the run goes on).
pub fn emit(kind: &str, value: &impl Serialize) {
    let line = json_line(kind, value);
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes a pre-built line to stdout and flushes it.
pub fn emit_raw(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints a report of the connection as its JSON line: audit entries, alerts, state changes and gaps (the
/// stop is the caller's to print, with its exit code).
pub fn emit_report(report: Report) {
    match (report_line(&report), report) {
        (Some((_, line)), _) => emit_raw(&line),
        (None, Report::Stopped(reason)) => {
            tracing::info!(%reason, "the keep-alive machine stopped")
        }
        (None, _) => {}
    }
}

/// A report's kind and JSON line; `None` for the stop (each command prints it its own way).
pub fn report_line(report: &Report) -> Option<(&'static str, String)> {
    Some(match report {
        Report::Audit(entry) => ("audit", json_line("audit", entry)),
        Report::Alert(alert) => ("alert", json_line("alert", alert)),
        Report::State { from, to } => ("state", state_line(*from, *to)),
        Report::Gap(gap) => ("gap", json_line("gap", &GapLine::from(gap))),
        Report::Stopped(_) => return None,
    })
}

/// `{"kind":"gap","from":…,"to":…,"duration_ms":…,"reason":…,"topics":[…]}`: re-read state for this window.
#[derive(Serialize)]
pub struct GapLine<'a> {
    from: String,
    to: String,
    duration_ms: u64,
    reason: GapReason,
    topics: &'a [String],
}

impl<'a> From<&'a Gap> for GapLine<'a> {
    fn from(gap: &'a Gap) -> Self {
        GapLine {
            from: gap.from_iso8601(),
            to: gap.to_iso8601(),
            duration_ms: gap.duration().as_millis() as u64,
            reason: gap.reason,
            topics: &gap.topics,
        }
    }
}

#[derive(Serialize)]
struct StateLine {
    state: State,
    from: State,
    timestamp: String,
}

/// `{"kind":"state","state":…,"from":…,"timestamp":…}`
pub fn state_line(from: State, to: State) -> String {
    json_line(
        "state",
        &StateLine {
            state: to,
            from,
            timestamp: now_iso8601(),
        },
    )
}

/// Appends `line` (from [`json_line`] with `kind`) to `out` with `"connection": name` right after `kind`
/// (for `fleet`), without building the new line apart: a fleet writes one per heartbeat per connection with
/// `SEND_SUCCESS` audits on, into the batch it is about to write. A line of another kind is appended as is.
pub fn push_with_connection(out: &mut Vec<u8>, line: &str, kind: &str, name: &str) {
    let rest = line
        .strip_prefix("{\"kind\":")
        .and_then(|r| strip_json_string(r, kind));
    match rest {
        Some(rest) => {
            out.extend_from_slice(&line.as_bytes()[..line.len() - rest.len()]);
            out.extend_from_slice(b",\"connection\":");
            serde_json::to_writer(&mut *out, name).expect("writing to a Vec cannot fail");
            out.extend_from_slice(rest.as_bytes());
        }
        None => out.extend_from_slice(line.as_bytes()),
    }
}

/// `text` after the JSON string that encodes `value`, if `text` starts with it.
fn strip_json_string<'a>(text: &'a str, value: &str) -> Option<&'a str> {
    let plain = !value.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20);
    if plain {
        text.strip_prefix('"')?
            .strip_prefix(value)?
            .strip_prefix('"')
    } else {
        text.strip_prefix(serde_json::Value::from(value).to_string().as_str())
    }
}

#[derive(Serialize)]
struct StatsLine<'a> {
    timestamp: &'a str,
    #[serde(rename = "final")]
    is_final: bool,
    #[serde(flatten)]
    stats: &'a Stats,
}

/// `{"kind":"stats","timestamp":…,"final":…, <every Stats field>}`
pub fn emit_stats(stats: &Stats, is_final: bool) {
    emit_raw(&stats_line(stats, is_final));
}

/// The line [`emit_stats`] writes.
pub fn stats_line(stats: &Stats, is_final: bool) -> String {
    json_line(
        "stats",
        &StatsLine {
            timestamp: &now_iso8601(),
            is_final,
            stats,
        },
    )
}

/// Appends `name`'s stats line to `out` (for `fleet`): [`stats_line`] with `"connection": name` after
/// `kind` and the given `timestamp` (one per round of lines), serialized straight into the batch. A fleet
/// writes one per connection per `--stats-interval-ms`; building each apart cost a `String` for the
/// timestamp, two for the line and a copy into the batch.
pub fn push_stats_line(
    out: &mut Vec<u8>,
    name: &str,
    timestamp: &str,
    stats: &Stats,
    is_final: bool,
) {
    out.extend_from_slice(b"{\"kind\":\"stats\",\"connection\":");
    serde_json::to_writer(&mut *out, name).expect("writing to a Vec cannot fail");
    let body = out.len();
    let line = StatsLine {
        timestamp,
        is_final,
        stats,
    };
    serde_json::to_writer(&mut *out, &line).expect("a Stats serializes");
    // The body is an object with fields (`timestamp` first): its `{` becomes the comma after `connection`.
    debug_assert_eq!(out[body], b'{');
    out[body] = b',';
}

/// A notification as received, plus `kind`; a frame that is not a JSON object is wrapped.
pub fn notification_line(raw: &str, topic: &str) -> String {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v @ serde_json::Value::Object(_)) => json_line("notification", &v),
        _ => json_line(
            "notification",
            &serde_json::json!({"topicName": topic, "raw": raw}),
        ),
    }
}

pub fn now_iso8601() -> String {
    iso8601(SystemTime::now())
}

/// `2024-05-01T12:34:56.789Z`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn kind_comes_first() {
        let line = json_line("x", &serde_json::json!({"a": 1}));
        assert_eq!(line, r#"{"kind":"x","a":1}"#);
        assert_eq!(json_line("x", &serde_json::json!({})), r#"{"kind":"x"}"#);
        assert_eq!(json_line("x", &5), r#"{"kind":"x","value":5}"#);
    }

    #[test]
    fn stats_line_has_every_field() {
        let line = json_line(
            "stats",
            &StatsLine {
                timestamp: "t",
                is_final: true,
                stats: &Stats::default(),
            },
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["kind"], "stats");
        assert_eq!(v["final"], true);
        assert_eq!(v["state"], "CONNECTING");
        assert_eq!(v["reconnects"], 0);
        assert!(v.get("rtt_p99_ms").is_some());
    }

    fn with_connection(line: &str, kind: &str, name: &str) -> String {
        let mut out = Vec::new();
        push_with_connection(&mut out, line, kind, name);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn connection_comes_right_after_kind() {
        let line = json_line("x", &serde_json::json!({"a": 1}));
        assert_eq!(
            with_connection(&line, "x", "org \"1\""),
            r#"{"kind":"x","connection":"org \"1\"","a":1}"#
        );
        let empty = json_line("y", &serde_json::json!({}));
        assert_eq!(
            with_connection(&empty, "y", "o"),
            r#"{"kind":"y","connection":"o"}"#
        );
        // A kind that needs escaping is found as JSON encodes it; a line of another kind is left alone.
        let odd = json_line("a\"b", &serde_json::json!({"c": 2}));
        assert_eq!(
            with_connection(&odd, "a\"b", "o"),
            r#"{"kind":"a\"b","connection":"o","c":2}"#
        );
        assert_eq!(with_connection(&line, "xy", "o"), line);
        assert_eq!(with_connection(&line, "", "o"), line);
        // Appending keeps what the batch held.
        let mut out = b"before\n".to_vec();
        push_with_connection(&mut out, &line, "x", "n");
        assert_eq!(
            out,
            br#"before
{"kind":"x","connection":"n","a":1}"#
        );
    }

    #[test]
    fn a_fleet_stats_line_is_the_stats_line_with_its_connection() {
        let mut stats = Stats {
            reconnects: 3,
            ..Stats::default()
        };
        stats.rtt_histogram.record(Duration::from_millis(40));
        for (name, is_final) in [("org-1", false), ("org \"2\"", true)] {
            let line = json_line(
                "stats",
                &StatsLine {
                    timestamp: "2026-12-03T18:00:00.000Z",
                    is_final,
                    stats: &stats,
                },
            );
            let mut out = b"before\n".to_vec();
            push_stats_line(&mut out, name, "2026-12-03T18:00:00.000Z", &stats, is_final);
            let expected = format!("before\n{}", with_connection(&line, "stats", name));
            assert_eq!(String::from_utf8(out).unwrap(), expected);
        }
    }

    #[test]
    fn notification_keeps_fields() {
        let raw = r#"{"topicName":"v2.t","eventBody":{"seq":3},"metadata":{"CorrelationId":"c"}}"#;
        let v: serde_json::Value = serde_json::from_str(&notification_line(raw, "v2.t")).unwrap();
        assert_eq!(v["kind"], "notification");
        assert_eq!(v["eventBody"]["seq"], 3);
        assert_eq!(v["metadata"]["CorrelationId"], "c");
        let v: serde_json::Value =
            serde_json::from_str(&notification_line("not json", "v2.t")).unwrap();
        assert_eq!(v["raw"], "not json");
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso8601(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(951_827_696_789); // 2000-02-29T12:34:56.789Z
        assert_eq!(iso8601(t), "2000-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_735_689_599); // 2024-12-31T23:59:59Z
        assert_eq!(iso8601(t), "2024-12-31T23:59:59.000Z");
    }
}
