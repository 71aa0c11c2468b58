//! JSON lines on stdout (one object per line, `kind` first, flushed per line) and wall-clock timestamps.

use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use genesys_keepalive::{Gap, GapReason, State, Stats};
use genesys_keepalive_driver_common::Report;
use serde::Serialize;

/// Serializes `value` (an object) with `"kind": kind` as its first field.
pub fn json_line(kind: &str, value: &impl Serialize) -> String {
    let mut out = Vec::new();
    push_line(&mut out, kind, None, value);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Appends the line [`json_line`] builds to `out`, with `"connection": name` right after `kind` when
/// `connection` is given (for `fleet`), serialized straight into the batch: a fleet writes several lines
/// per connection as it starts (and one per heartbeat with `SEND_SUCCESS` audits on), and building each
/// apart cost two `String`s and a copy. A value that is not an object goes under `"value"`; one that cannot
/// be serialized becomes an `"error"`.
pub fn push_line(out: &mut Vec<u8>, kind: &str, connection: Option<&str>, value: &impl Serialize) {
    let start = out.len();
    out.extend_from_slice(b"{\"kind\":");
    serde_json::to_writer(&mut *out, kind).expect("writing to a Vec cannot fail");
    if let Some(name) = connection {
        out.extend_from_slice(b",\"connection\":");
        serde_json::to_writer(&mut *out, name).expect("writing to a Vec cannot fail");
    }
    let body = out.len();
    if let Err(e) = serde_json::to_writer(&mut *out, value) {
        out.truncate(body);
        out.extend_from_slice(b",\"error\":");
        serde_json::to_writer(&mut *out, &e.to_string()).expect("writing to a Vec cannot fail");
        out.push(b'}');
        return;
    }
    match &out[body..] {
        b"{}" => {
            out.truncate(body);
            out.push(b'}');
        }
        // An object with fields: its `{` becomes the comma after what came before.
        [b'{', ..] => out[body] = b',',
        _ => {
            let value_json = out.split_off(body);
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(&value_json);
            out.push(b'}');
        }
    }
    debug_assert!(out.len() > start);
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

/// Appends `report`'s line ([`report_line`]) with `"connection": name` after `kind` to `out` (for
/// `fleet`); `false` (nothing appended) for the stop, which each command prints its own way.
pub fn push_report_line(out: &mut Vec<u8>, name: &str, report: &Report) -> bool {
    let name = Some(name);
    match report {
        Report::Audit(entry) => push_line(out, "audit", name, entry),
        Report::Alert(alert) => push_line(out, "alert", name, alert),
        Report::State { from, to } => push_line(out, "state", name, &StateLine::now(*from, *to)),
        Report::Gap(gap) => push_line(out, "gap", name, &GapLine::from(gap)),
        Report::Stopped(_) => return false,
    }
    true
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

impl StateLine {
    fn now(from: State, to: State) -> Self {
        StateLine {
            state: to,
            from,
            timestamp: now_iso8601(),
        }
    }
}

/// `{"kind":"state","state":…,"from":…,"timestamp":…}`
pub fn state_line(from: State, to: State) -> String {
    json_line("state", &StateLine::now(from, to))
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
/// `kind` and the given `timestamp` (one per round of lines). A fleet writes one per connection per
/// `--stats-interval-ms`.
pub fn push_stats_line(
    out: &mut Vec<u8>,
    name: &str,
    timestamp: &str,
    stats: &Stats,
    is_final: bool,
) {
    let line = StatsLine {
        timestamp,
        is_final,
        stats,
    };
    push_line(out, "stats", Some(name), &line);
}

/// A notification as received, plus `kind`; a frame that is not a JSON object is wrapped.
pub fn notification_line(raw: &str, topic: &str) -> String {
    let mut out = Vec::new();
    push_notification_line(&mut out, None, raw, topic);
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// Appends [`notification_line`] to `out`, with `"connection": name` after `kind` if given (for `fleet`).
pub fn push_notification_line(out: &mut Vec<u8>, connection: Option<&str>, raw: &str, topic: &str) {
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v @ serde_json::Value::Object(_)) => push_line(out, "notification", connection, &v),
        _ => push_line(
            out,
            "notification",
            connection,
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
    use genesys_keepalive::{Alert, AlertEvent, AlertMetrics, AuditEntry, AuditEvent};
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

    /// `line` without its `"connection":<name>` (to compare a fleet's line with `run`'s).
    fn without_connection(line: &str, name: &str) -> String {
        let field = format!(",\"connection\":{}", serde_json::Value::from(name));
        assert_eq!(line.matches(&field).count(), 1, "{line}");
        line.replacen(&field, "", 1)
    }

    fn pushed(kind: &str, name: &str, value: &impl Serialize) -> String {
        let mut out = Vec::new();
        push_line(&mut out, kind, Some(name), value);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn connection_comes_right_after_kind() {
        assert_eq!(
            pushed("x", "org \"1\"", &serde_json::json!({"a": 1})),
            r#"{"kind":"x","connection":"org \"1\"","a":1}"#
        );
        assert_eq!(
            pushed("y", "o", &serde_json::json!({})),
            r#"{"kind":"y","connection":"o"}"#
        );
        assert_eq!(
            pushed("a\"b", "o", &serde_json::json!({"c": 2})),
            r#"{"kind":"a\"b","connection":"o","c":2}"#
        );
        assert_eq!(
            pushed("z", "o", &5),
            r#"{"kind":"z","connection":"o","value":5}"#
        );
        // A value that cannot be serialized (a map with a key that is not a string) is an error line.
        let bad = std::collections::BTreeMap::from([((1, 2), 3)]);
        assert!(json_line("e", &bad).starts_with(r#"{"kind":"e","error":"key must be a string"#));
        assert!(pushed("e", "o", &bad).starts_with(r#"{"kind":"e","connection":"o","error":"#));
        // Appending keeps what the batch held.
        let mut out = b"before\n".to_vec();
        push_line(&mut out, "x", Some("n"), &serde_json::json!({"a": 1}));
        assert_eq!(
            out,
            br#"before
{"kind":"x","connection":"n","a":1}"#
        );
        // Every kind of value: the fleet's line is `run`'s with the connection added.
        let values = [
            serde_json::json!({"a": {"b": [1, "\u{e9}\n"]}, "c": null}),
            serde_json::json!({}),
            serde_json::json!([1, 2]),
            serde_json::json!("s"),
        ];
        for v in &values {
            for name in ["org-1", "", "o\\\"\u{1}"] {
                assert_eq!(
                    without_connection(&pushed("k", name, v), name),
                    json_line("k", v)
                );
            }
        }
        assert_eq!(
            without_connection(&pushed("e", "o", &bad), "o"),
            json_line("e", &bad)
        );
    }

    #[test]
    fn a_fleet_report_line_is_the_run_line_with_its_connection() {
        let audit = AuditEntry {
            timestamp: "2026-12-04T13:00:00.000Z".into(),
            connection_id: "c-1".into(),
            event: AuditEvent::ConnectFailure,
            payload_size: 0,
            state: State::Reconnecting,
            error: Some("refused \"x\"".into()),
        };
        let alert = Alert {
            event: AlertEvent::DeadPeer,
            metrics: AlertMetrics {
                idle_ms: Some(9000),
                ..AlertMetrics::default()
            },
            timestamp: "2026-12-04T13:00:01.000Z".into(),
        };
        let gap = Gap {
            from: UNIX_EPOCH + Duration::from_millis(1_764_853_200_000),
            to: UNIX_EPOCH + Duration::from_millis(1_764_853_201_250),
            reason: GapReason::DeadPeer,
            topics: vec!["v2.a".into(), "v2.b".into()],
        };
        for report in [Report::Audit(audit), Report::Alert(alert), Report::Gap(gap)] {
            let (kind, line) = report_line(&report).unwrap();
            let mut out = Vec::new();
            assert!(push_report_line(&mut out, "org-7", &report));
            let pushed = String::from_utf8(out).unwrap();
            assert!(pushed.starts_with(&format!(r#"{{"kind":"{kind}","connection":"org-7","#)));
            assert_eq!(without_connection(&pushed, "org-7"), line);
        }
        // A state line has its own timestamp: the same but for it.
        let state = Report::State {
            from: State::Connecting,
            to: State::Stable,
        };
        let mut out = Vec::new();
        assert!(push_report_line(&mut out, "org-7", &state));
        let mut fleet: serde_json::Value = serde_json::from_slice(&out).unwrap();
        let mut run: serde_json::Value =
            serde_json::from_str(&report_line(&state).unwrap().1).unwrap();
        assert_eq!(fleet["connection"], "org-7");
        assert!(fleet["timestamp"].as_str().unwrap().ends_with('Z'));
        for v in [&mut fleet, &mut run] {
            let o = v.as_object_mut().unwrap();
            o.remove("timestamp");
            o.remove("connection");
        }
        assert_eq!(fleet, run);
        // The stop is printed by the caller.
        let mut out = Vec::new();
        let stop = Report::Stopped(genesys_keepalive::StopReason::Shutdown);
        assert!(!push_report_line(&mut out, "o", &stop));
        assert!(out.is_empty());
    }

    #[test]
    fn a_fleet_notification_line_is_the_run_line_with_its_connection() {
        for raw in [
            r#"{"topicName":"v2.t","eventBody":{"seq":3}}"#,
            "not json",
            "[1]",
        ] {
            let mut out = Vec::new();
            push_notification_line(&mut out, Some("o"), raw, "v2.t");
            let pushed = String::from_utf8(out).unwrap();
            assert_eq!(
                without_connection(&pushed, "o"),
                notification_line(raw, "v2.t")
            );
        }
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
            let pushed = String::from_utf8(out).unwrap();
            let pushed = pushed.strip_prefix("before\n").unwrap();
            assert_eq!(without_connection(pushed, name), line);
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
