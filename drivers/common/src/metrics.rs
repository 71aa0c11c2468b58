//! Metrics through the [`metrics`] facade (cargo feature `metrics`): the connection task publishes what
//! the machine already counts, and nothing else. No exporter is installed here: without a recorder every
//! handle is a no-op; the CLI installs `metrics-exporter-prometheus`.
//!
//! Every handle is registered once, when the connection is started, with the labels `connection` (see
//! [`crate::Options::name`]), `profile` (`notifications` or `keepalive-frame`) and `driver` (`tokio`,
//! `async-std`, …). After that the task only compares the machine's counters (by reference, see
//! [`genesys_keepalive::KeepAliveMachine::counters`]) with what it last published, when it goes back to
//! sleep, and touches the handles whose value changed: no allocation, no formatting, no lookup.
//!
//! The histograms are fed from the core's own half-octave histograms ([`genesys_keepalive::Histogram`]):
//! each new sample is recorded at the upper bound of its core bucket, so an exporter configured with
//! [`histogram_bounds`] as its buckets counts exactly what the core counted (the `_sum` is then an upper
//! bound, within a factor √2).

use std::time::Duration;

use genesys_keepalive::{
    AlertEvent, Gap, GapReason, Histogram as CoreHistogram, KeepAliveMachine, ProfileKind, State,
    Stats,
};
use metrics::{Counter, Gauge, Histogram, Label, Unit};

/// What kind of series a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (`_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One metric the drivers publish: its name, kind, unit, extra labels beyond `connection`, `profile`,
/// `driver`, and meaning (also its Prometheus `HELP`).
#[derive(Debug, Clone, Copy)]
pub struct MetricInfo {
    /// The full name, e.g. `genesys_keepalive_heartbeats_sent_total`.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: Kind,
    /// The unit (`None`: a count).
    pub unit: Option<Unit>,
    /// Labels beyond the three every series has.
    pub labels: &'static str,
    /// What it means.
    pub help: &'static str,
}

type Getter = fn(&Stats) -> u64;

/// The counters read straight from the machine's [`Stats`], with their meaning.
const COUNTERS: [(&str, &str, Getter); 12] = [
    (
        "genesys_keepalive_heartbeats_sent_total",
        "Heartbeats (pings / KEEP_ALIVE frames) written.",
        |s| s.heartbeats_sent,
    ),
    (
        "genesys_keepalive_heartbeats_acked_total",
        "Heartbeats answered (pong / KEEP_ALIVE_ACK).",
        |s| s.heartbeats_acked,
    ),
    (
        "genesys_keepalive_heartbeats_lost_total",
        "Heartbeats unanswered past ack_timeout.",
        |s| s.heartbeats_lost,
    ),
    (
        "genesys_keepalive_connect_attempts_total",
        "WebSocket connection attempts started.",
        |s| s.connect_attempts,
    ),
    (
        "genesys_keepalive_reconnects_total",
        "Reconnects scheduled after a lost connection (rollovers not included).",
        |s| s.reconnects,
    ),
    (
        "genesys_keepalive_dead_peers_total",
        "Peers declared dead (idle or ack deadline passed).",
        |s| s.dead_peers,
    ),
    (
        "genesys_keepalive_rollovers_total",
        "Planned-close (socket_closing) rollovers completed.",
        |s| s.rollovers,
    ),
    (
        "genesys_keepalive_token_refreshes_total",
        "OAuth tokens obtained.",
        |s| s.token_refreshes,
    ),
    (
        "genesys_keepalive_http_retries_total",
        "HTTP requests retried (429, 5xx, 401).",
        |s| s.http_retries,
    ),
    (
        "genesys_keepalive_notifications_delivered_total",
        "Notifications handed to the application.",
        |s| s.notifications_delivered,
    ),
    (
        "genesys_keepalive_duplicates_dropped_total",
        "Duplicate notifications dropped (rollover overlap).",
        |s| s.duplicates_dropped,
    ),
    (
        "genesys_keepalive_unmatched_acks_total",
        "Acks that matched no outstanding heartbeat.",
        |s| s.acks_unmatched,
    ),
];

/// `genesys_keepalive_bad_frames_total{kind=…}`: inbound frames refused, by why.
const BAD_FRAMES: [(&str, Getter); 4] = [
    ("invalid_utf8", |s| s.invalid_utf8),
    ("non_json", |s| s.non_json),
    ("wrong_shape", |s| s.wrong_shape),
    ("oversized", |s| s.oversized_frames),
];
const BAD_FRAMES_NAME: &str = "genesys_keepalive_bad_frames_total";
const ALERTS_NAME: &str = "genesys_keepalive_alerts_total";
const GAPS_NAME: &str = "genesys_keepalive_gaps_total";
const GAP_SECONDS_NAME: &str = "genesys_keepalive_gap_seconds";
const STATE_NAME: &str = "genesys_keepalive_state";
const OPEN_NAME: &str = "genesys_keepalive_connections_open";
const LAST_RTT_NAME: &str = "genesys_keepalive_last_rtt_seconds";
const RTT_NAME: &str = "genesys_keepalive_rtt_seconds";
const LATENESS_NAME: &str = "genesys_keepalive_heartbeat_lateness_seconds";

const STATES: [State; 5] = [
    State::Connecting,
    State::Stable,
    State::Degraded,
    State::Reconnecting,
    State::Stopped,
];
const ALERTS: [AlertEvent; 6] = [
    AlertEvent::LatencyThresholdExceeded,
    AlertEvent::PacketLossCritical,
    AlertEvent::DeadPeer,
    AlertEvent::ReconnectExhausted,
    AlertEvent::AuthFailure,
    AlertEvent::SocketClosing,
];

const GAP_REASONS: [GapReason; 6] = [
    GapReason::DeadPeer,
    GapReason::UnplannedClose,
    GapReason::FailedRollover,
    GapReason::ChannelGone,
    GapReason::WriteFailure,
    GapReason::Restart,
];

fn gap_index(r: GapReason) -> usize {
    match r {
        GapReason::DeadPeer => 0,
        GapReason::UnplannedClose => 1,
        GapReason::FailedRollover => 2,
        GapReason::ChannelGone => 3,
        GapReason::WriteFailure => 4,
        GapReason::Restart => 5,
    }
}

fn state_index(s: State) -> usize {
    match s {
        State::Connecting => 0,
        State::Stable => 1,
        State::Degraded => 2,
        State::Reconnecting => 3,
        State::Stopped => 4,
    }
}

fn alert_index(e: AlertEvent) -> usize {
    match e {
        AlertEvent::LatencyThresholdExceeded => 0,
        AlertEvent::PacketLossCritical => 1,
        AlertEvent::DeadPeer => 2,
        AlertEvent::ReconnectExhausted => 3,
        AlertEvent::AuthFailure => 4,
        AlertEvent::SocketClosing => 5,
    }
}

/// The `event` label of an alert: its name in snake case.
pub fn alert_label(e: AlertEvent) -> &'static str {
    match e {
        AlertEvent::LatencyThresholdExceeded => "latency_threshold_exceeded",
        AlertEvent::PacketLossCritical => "packet_loss_critical",
        AlertEvent::DeadPeer => "dead_peer",
        AlertEvent::ReconnectExhausted => "reconnect_exhausted",
        AlertEvent::AuthFailure => "auth_failure",
        AlertEvent::SocketClosing => "socket_closing",
    }
}

/// The `state` label of a state: its name in lower case.
pub fn state_label(s: State) -> &'static str {
    match s {
        State::Connecting => "connecting",
        State::Stable => "stable",
        State::Degraded => "degraded",
        State::Reconnecting => "reconnecting",
        State::Stopped => "stopped",
    }
}

/// The `profile` label.
pub fn profile_label(p: ProfileKind) -> &'static str {
    match p {
        ProfileKind::Notifications => "notifications",
        ProfileKind::KeepaliveFrame => "keepalive-frame",
    }
}

/// Every metric the drivers publish, in the order of README.md's table.
pub fn catalogue() -> Vec<MetricInfo> {
    let mut all: Vec<MetricInfo> = COUNTERS
        .iter()
        .map(|&(name, help, _)| MetricInfo {
            name,
            kind: Kind::Counter,
            unit: None,
            labels: "",
            help,
        })
        .collect();
    let more = [
        (BAD_FRAMES_NAME, Kind::Counter, None, "kind", "Inbound frames refused: invalid_utf8 (binary or not UTF-8), non_json, wrong_shape, oversized."),
        (ALERTS_NAME, Kind::Counter, None, "event", "Alerts raised, by event (latency_threshold_exceeded, packet_loss_critical, dead_peer, reconnect_exhausted, auth_failure, socket_closing)."),
        (GAPS_NAME, Kind::Counter, None, "reason", "Windows in which notifications may have been missed (gap reports), by reason (dead_peer, unplanned_close, failed_rollover, channel_gone, write_failure, restart)."),
        (GAP_SECONDS_NAME, Kind::Histogram, Some(Unit::Seconds), "", "How long each reported gap lasted."),
        (STATE_NAME, Kind::Gauge, None, "state", "Connections in each state (connecting, stable, degraded, reconnecting, stopped): 1 for a connection's current state, 0 for the others; connections sharing a name add up."),
        (OPEN_NAME, Kind::Gauge, None, "", "WebSockets open now (2 during a rollover's overlap); connections sharing a name add up."),
        (LAST_RTT_NAME, Kind::Gauge, Some(Unit::Seconds), "", "RTT of the most recent answered heartbeat (of any connection sharing the name)."),
        (RTT_NAME, Kind::Histogram, Some(Unit::Seconds), "", "Heartbeat RTT, every socket since start (at the core histogram's half-octave resolution)."),
        (LATENESS_NAME, Kind::Histogram, Some(Unit::Seconds), "", "How late each heartbeat went out against its schedule (timer and scheduling delay)."),
    ];
    all.extend(
        more.into_iter()
            .map(|(name, kind, unit, labels, help)| MetricInfo {
                name,
                kind,
                unit,
                labels,
                help,
            }),
    );
    all
}

/// Describes every metric (unit and `HELP` text) to the installed recorder; call once after installing it.
pub fn describe() {
    for m in catalogue() {
        let unit = m.unit.unwrap_or(Unit::Count);
        match m.kind {
            Kind::Counter => metrics::describe_counter!(m.name, unit, m.help),
            Kind::Gauge => metrics::describe_gauge!(m.name, unit, m.help),
            Kind::Histogram => metrics::describe_histogram!(m.name, unit, m.help),
        }
    }
}

/// The upper bounds (seconds) of the core histogram's buckets: give them to the exporter as the buckets of
/// `genesys_keepalive_rtt_seconds` and `genesys_keepalive_heartbeat_lateness_seconds` and its counts are the
/// core's.
pub fn histogram_bounds() -> Vec<f64> {
    CoreHistogram::default()
        .buckets()
        .filter_map(|(bound, _)| bound.map(|d| d.as_secs_f64()))
        .collect()
}

/// One connection's registered handles and what was last published through them.
pub(crate) struct ConnMetrics {
    counters: Vec<(Counter, Getter, u64)>,
    alerts: [Counter; 6],
    gaps: [Counter; 6],
    gap_seconds: Histogram,
    states: [Gauge; 5],
    state: Option<State>,
    open: Gauge,
    last_open: usize,
    last_rtt: Gauge,
    last_rtt_value: Option<Duration>,
    rtt: Histogram,
    rtt_seen: CoreHistogram,
    lateness: Histogram,
    lateness_seen: CoreHistogram,
}

impl ConnMetrics {
    /// Registers every handle for one connection.
    pub(crate) fn new(connection: &str, profile: ProfileKind, driver: &'static str) -> Self {
        let base = vec![
            Label::new("connection", connection.to_owned()),
            Label::new("profile", profile_label(profile)),
            Label::new("driver", driver),
        ];
        let with = |key: &'static str, value: &'static str| {
            let mut l = base.clone();
            l.push(Label::new(key, value));
            l
        };
        let mut counters: Vec<(Counter, Getter, u64)> = COUNTERS
            .iter()
            .map(|&(name, _, get)| (metrics::counter!(name, base.iter()), get, 0))
            .collect();
        counters.extend(BAD_FRAMES.iter().map(|&(kind, get)| {
            (
                metrics::counter!(BAD_FRAMES_NAME, with("kind", kind).iter()),
                get,
                0,
            )
        }));
        ConnMetrics {
            counters,
            alerts: ALERTS
                .map(|e| metrics::counter!(ALERTS_NAME, with("event", alert_label(e)).iter())),
            gaps: GAP_REASONS
                .map(|r| metrics::counter!(GAPS_NAME, with("reason", r.as_str()).iter())),
            gap_seconds: metrics::histogram!(GAP_SECONDS_NAME, base.iter()),
            states: STATES
                .map(|s| metrics::gauge!(STATE_NAME, with("state", state_label(s)).iter())),
            state: None,
            open: metrics::gauge!(OPEN_NAME, base.iter()),
            last_open: 0,
            last_rtt: metrics::gauge!(LAST_RTT_NAME, base.iter()),
            last_rtt_value: None,
            rtt: metrics::histogram!(RTT_NAME, base.iter()),
            rtt_seen: CoreHistogram::default(),
            lateness: metrics::histogram!(LATENESS_NAME, base.iter()),
            lateness_seen: CoreHistogram::default(),
        }
    }

    /// Counts one alert.
    pub(crate) fn alert(&self, event: AlertEvent) {
        if let Some(c) = self.alerts.get(alert_index(event)) {
            c.increment(1);
        }
    }

    /// Counts one gap report, by reason, and its length.
    pub(crate) fn gap(&self, gap: &Gap) {
        if let Some(c) = self.gaps.get(gap_index(gap.reason)) {
            c.increment(1);
        }
        self.gap_seconds.record(gap.duration().as_secs_f64());
    }

    /// Publishes whatever changed since the last call.
    pub(crate) fn sync(&mut self, machine: &KeepAliveMachine, open: usize) {
        let stats = machine.counters();
        for (counter, get, seen) in &mut self.counters {
            let now = get(stats);
            if now != *seen {
                counter.increment(now.saturating_sub(*seen));
                *seen = now;
            }
        }
        // Gauges move by differences, so that connections sharing one name add up (a fleet, a benchmark):
        // per state, the connections in it; the sockets open over all of them.
        let state = machine.state();
        if self.state != Some(state) {
            if let Some(g) = self.state.and_then(|s| self.states.get(state_index(s))) {
                g.decrement(1.0);
            }
            if let Some(g) = self.states.get(state_index(state)) {
                g.increment(1.0);
            }
            self.state = Some(state);
        }
        if open != self.last_open {
            self.open.increment(open as f64 - self.last_open as f64);
            self.last_open = open;
        }
        let rtt = machine.last_rtt();
        if rtt != self.last_rtt_value {
            if let Some(d) = rtt {
                self.last_rtt.set(d.as_secs_f64());
            }
            self.last_rtt_value = rtt;
        }
        feed(&self.rtt, &mut self.rtt_seen, &stats.rtt_histogram);
        feed(
            &self.lateness,
            &mut self.lateness_seen,
            &stats.heartbeat_lateness,
        );
    }
}

/// Records the samples `now` has beyond `seen`, each at its core bucket's upper bound (the overflow bucket's
/// above the last bound).
fn feed(h: &Histogram, seen: &mut CoreHistogram, now: &CoreHistogram) {
    if seen == now {
        return;
    }
    let mut previous = Duration::ZERO;
    for ((bound, n), (_, m)) in now.buckets().zip(seen.buckets()) {
        if n > m {
            let at = bound.unwrap_or(previous * 2);
            h.record_many(at.as_secs_f64(), (n - m) as usize);
        }
        previous = bound.unwrap_or(previous);
    }
    *seen = *now;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_follow_the_conventions() {
        let all = catalogue();
        assert_eq!(all.len(), COUNTERS.len() + 9);
        for m in &all {
            assert!(m.name.starts_with("genesys_keepalive_"), "{}", m.name);
            match m.kind {
                Kind::Counter => assert!(m.name.ends_with("_total"), "{}", m.name),
                _ if m.unit == Some(Unit::Seconds) => assert!(m.name.ends_with("_seconds")),
                _ => assert!(!m.name.ends_with("_total"), "{}", m.name),
            }
        }
    }

    #[test]
    fn bounds_are_the_core_buckets() {
        let b = histogram_bounds();
        assert_eq!(b.len(), CoreHistogram::default().buckets().count() - 1);
        assert!((b[0] - 64e-6).abs() < 1e-12);
        assert!(b.windows(2).all(|w| w[1] > w[0]));
    }
}
