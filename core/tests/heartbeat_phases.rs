//! `Config::heartbeat_phases`: the heartbeats of machines that opened at different moments keep to a few
//! shared phases of the wall clock, so that a process with thousands of connections wakes a few times per
//! interval rather than once per connection; no heartbeat goes before an interval has passed, none later
//! than one grid step after it, and the schedule keeps its rate.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{keepalive_config, off_grid, H};
use genesys_keepalive::{Config, Event, IntervalMatrix, SocketId};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One heartbeat interval in every state, so that the schedule does not change with the state.
const INTERVAL: Duration = Duration::from_secs(20);

/// A tenth of the interval: the grid step of the default ten phases.
const STEP: Duration = Duration::from_secs(2);

fn with_phases(phases: u32, slack: Duration) -> Config {
    let mut c = keepalive_config();
    c.heartbeat_phases = phases;
    c.timer_slack = slack;
    c.interval_matrix = IntervalMatrix {
        stable: INTERVAL,
        degraded: INTERVAL,
        reconnecting: INTERVAL,
    };
    c
}

/// A machine of this process (same wall clock as every other `H`) whose socket opens `after` its start;
/// returns it with the socket, once the first heartbeat (sent at once on opening) is answered.
fn opened_after(config: Config, after: Duration) -> (H, SocketId) {
    let mut h = H::new(config);
    let (socket, _, _) = h.pending_connect().expect("connect");
    h.now = h.start + after;
    h.feed(Event::Opened { socket });
    assert_eq!(
        h.heartbeats(socket).len(),
        1,
        "the first heartbeat goes at once"
    );
    h.ack_last(socket);
    (h, socket)
}

/// Wakes `late` past the heartbeat's deadline, checks that it went and acks it; returns the deadline and
/// the next one.
fn wake_late(h: &mut H, s: SocketId, late: Duration) -> (std::time::Instant, std::time::Instant) {
    let due = h.m.poll_timeout().unwrap();
    h.now = due + late;
    let before = h.heartbeats(s).len();
    h.feed(Event::Tick);
    assert_eq!(h.heartbeats(s).len(), before + 1, "the late heartbeat went");
    h.ack_last(s);
    (due, h.m.poll_timeout().unwrap())
}

#[test]
fn ten_phases_by_default_and_more_than_a_thousand_are_refused() {
    assert_eq!(Config::default().heartbeat_phases, 10);
    let mut c = keepalive_config();
    c.heartbeat_phases = 1_001;
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("heartbeat_phases"), "{err}");
    c.heartbeat_phases = 1_000;
    c.validate().expect("a thousand is accepted");
    let parsed: Config = toml::from_str("heartbeat_phases = 0").unwrap();
    assert_eq!(parsed.heartbeat_phases, 0);
    let built = Config::builder()
        .url("wss://gw.example.com/ws")
        .profile(genesys_keepalive::ProfileKind::KeepaliveFrame)
        .heartbeat_phases(4)
        .build()
        .unwrap();
    assert_eq!(built.heartbeat_phases, 4);
}

#[test]
fn machines_opened_at_fifty_moments_send_their_next_heartbeats_in_at_most_ten_phases() {
    // Fifty sockets opening over 9 s, each at its own moment (none on a grid point).
    let offsets: Vec<Duration> = (0..50u64).map(|i| ms(i * 181 + 7)).collect();
    let dues = |phases: u32| {
        let mut walls = BTreeSet::new();
        for &after in &offsets {
            let (h, s) = opened_after(with_phases(phases, ms(10)), after);
            let opened = h.start + after;
            let due = h.m.poll_timeout().unwrap();
            assert_eq!(h.heartbeats(s)[0].0, after, "sent on opening");
            // Never before an interval has passed, never later than a step (and the slack's grid) after it.
            assert!(due >= opened + INTERVAL, "{phases} phases, {after:?}");
            let step = if phases == 0 { ms(10) } else { STEP };
            assert!(due < opened + INTERVAL + step, "{phases} phases, {after:?}");
            walls.insert(h.m.wall_clock().at(due));
        }
        walls
    };
    let phased = dues(10);
    for w in &phased {
        assert_eq!(off_grid(*w, STEP), 0, "on the 2 s grid: {w:?}");
    }
    // 9 s of openings fall into five 2 s steps: five wakes for fifty heartbeats.
    assert!(phased.len() <= 5, "{} distinct deadlines", phased.len());
    // Without phases every machine keeps its own (181 ms apart: no two in one 10 ms slot of the slack).
    assert_eq!(dues(0).len(), 50);
}

#[test]
fn on_the_grid_the_schedule_keeps_its_rate_and_a_late_wake_returns_to_the_grid() {
    let (mut h, s) = opened_after(with_phases(10, ms(10)), ms(3_701));
    let mut deadlines = Vec::new();
    // A driver that always wakes 4 ms past what it asked (within the slack); every heartbeat answered.
    while deadlines.len() < 30 {
        let before = h.heartbeats(s).len();
        let due = h.m.poll_timeout().unwrap();
        h.now = due + ms(4);
        h.feed(Event::Tick);
        if h.heartbeats(s).len() > before {
            deadlines.push(due);
            h.ack_last(s);
        }
    }
    for d in &deadlines {
        assert_eq!(off_grid(h.m.wall_clock().at(*d), STEP), 0);
    }
    for w in deadlines.windows(2) {
        assert_eq!(w[1] - w[0], INTERVAL, "one interval apart once on the grid");
    }
    // Woken 1.9 s late (past the slack, within a step: the tail of a burst of many connections sharing the
    // phase): the schedule holds, the next one an interval after the deadline.
    let (due, next) = wake_late(&mut h, s, ms(1_900));
    assert_eq!(next, due + INTERVAL, "not stretched");
    // Woken 2.5 s late (more than a step): the next one is at least an interval after it, back on the grid.
    let (_, next) = wake_late(&mut h, s, ms(2_500));
    assert!(next >= h.now + INTERVAL, "{:?}", next - h.now);
    assert!(next < h.now + INTERVAL + STEP, "{:?}", next - h.now);
    assert_eq!(off_grid(h.m.wall_clock().at(next), STEP), 0);
}

#[test]
fn no_phases_keeps_each_connections_own_phase() {
    let (h, s) = opened_after(with_phases(0, Duration::ZERO), ms(3_701));
    let due = h.m.poll_timeout().unwrap();
    assert_eq!(h.heartbeats(s)[0].0, ms(3_701));
    assert_eq!(
        due,
        h.start + ms(3_701) + INTERVAL,
        "an interval after opening, exactly"
    );
}
