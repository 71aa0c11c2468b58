//! `Config::timer_slack`: the machine asks to be woken on a shared wall-clock grid, so that many machines in
//! one process fall due together, without stretching the heartbeat schedule or firing anything early.

mod common;

use std::time::Duration;

use common::{keepalive_config, off_grid, H};
use genesys_keepalive::Config;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One heartbeat interval in every state (20 s), so that the schedule does not change with the state.
const INTERVAL: Duration = Duration::from_secs(20);

/// `slack`, and no heartbeat phase grid (tests/heartbeat_phases.rs has that): the slack on its own.
fn with_slack(slack: Duration) -> Config {
    let mut c = keepalive_config();
    c.timer_slack = slack;
    c.heartbeat_phases = 0;
    c.interval_matrix = genesys_keepalive::IntervalMatrix {
        stable: INTERVAL,
        degraded: INTERVAL,
        reconnecting: INTERVAL,
    };
    c
}

#[test]
fn the_default_slack_is_ten_milliseconds_and_more_than_a_second_is_refused() {
    assert_eq!(Config::default().timer_slack, ms(10));
    let mut c = keepalive_config();
    c.timer_slack = ms(1_001);
    let err = c.validate().unwrap_err().to_string();
    assert!(err.contains("timer_slack_ms"), "{err}");
    c.timer_slack = ms(1_000);
    c.validate().expect("a second is accepted");
    let parsed: Config = toml::from_str("timer_slack_ms = 25").unwrap();
    assert_eq!(parsed.timer_slack, ms(25));
}

#[test]
fn machines_anchored_apart_ask_to_wake_on_one_grid_no_earlier_than_their_deadline_and_within_the_slack(
) {
    let slack = ms(10);
    // Three processes' clocks, 0, 3.7 and 8.25 ms off the grid, and one with no slack as the reference.
    let offsets = [0u64, 3_700_000, 8_250_000];
    let mut exact = H::with_wall(with_slack(Duration::ZERO), 7, H::wall());
    let s0 = exact.establish_keepalive();
    exact.ack_last(s0);
    let exact_deadline = exact.m.poll_timeout().unwrap();
    for off in offsets {
        let wall = H::wall() + Duration::from_nanos(off);
        let mut h = H::with_wall(with_slack(slack), 7, wall);
        let s = h.establish_keepalive();
        assert_eq!(h.heartbeats(s).len(), 1, "the first heartbeat goes at once");
        h.ack_last(s);
        let due = h.m.poll_timeout().unwrap();
        // Same schedule as the exact machine (same start instant offset), rounded up onto the grid.
        let deadline = h.start + (exact_deadline - exact.start);
        assert!(due >= deadline, "never before the deadline");
        assert!(due - deadline < slack, "late by less than the slack");
        assert_eq!(off_grid(h.m.wall_clock().at(due), slack), 0, "offset {off}");
        // A tick at the exact deadline, before the grid point, already fires the heartbeat: the slack is
        // when to wake, not a delay of the timer.
        let before = h.heartbeats(s).len();
        h.now = deadline;
        h.feed(genesys_keepalive::Event::Tick);
        assert_eq!(h.heartbeats(s).len(), before + 1);
    }
    // With no slack, the deadline itself.
    assert_eq!(
        exact_deadline - exact.start,
        INTERVAL,
        "an interval after the first heartbeat"
    );
}

#[test]
fn waking_late_within_the_slack_keeps_the_heartbeat_rate_and_later_than_it_restarts_the_schedule() {
    let slack = ms(10);
    // A driver that always wakes 4 ms past what it was asked (a loaded runtime); every heartbeat answered.
    let mut h = H::new(with_slack(slack));
    let s = h.establish_keepalive();
    h.ack_last(s);
    while h.heartbeats(s).len() < 31 {
        let before = h.heartbeats(s).len();
        let due = h.m.poll_timeout().unwrap();
        h.now = due + ms(4);
        h.feed(genesys_keepalive::Event::Tick);
        if h.heartbeats(s).len() > before {
            h.ack_last(s);
        }
    }
    let sent: Vec<Duration> = h.heartbeats(s).iter().map(|(t, _)| *t).collect();
    // 30 intervals after the first heartbeat, give or take one slot and the 4 ms: not 30 × (interval + 14 ms).
    let span = sent[30] - sent[0];
    assert!(
        span >= INTERVAL * 30 && span <= INTERVAL * 30 + slack + ms(4),
        "{span:?}"
    );
    for w in sent.windows(2) {
        assert!(w[1] - w[0] <= INTERVAL + slack + ms(4), "{:?}", w[1] - w[0]);
        assert!(w[1] - w[0] >= INTERVAL - slack, "{:?}", w[1] - w[0]);
    }
    let lateness = h.m.stats().heartbeat_lateness.quantile(1.0).unwrap();
    assert!(lateness <= slack + ms(4), "{lateness:?}");

    // Woken a second late (past the slack): the next heartbeat is a whole interval after this one.
    let before = h.heartbeats(s).len();
    let due = h.m.poll_timeout().unwrap();
    h.now = due + ms(1_000);
    h.feed(genesys_keepalive::Event::Tick);
    assert_eq!(h.heartbeats(s).len(), before + 1, "the late heartbeat went");
    h.ack_last(s);
    let next = h.m.poll_timeout().unwrap();
    assert!(next - h.now >= INTERVAL, "{:?}", next - h.now);
    assert!(next - h.now < INTERVAL + slack, "{:?}", next - h.now);
}

#[test]
fn no_slack_wakes_at_every_deadline_exactly_and_the_same_inputs_give_the_same_schedule() {
    let run = |slack: Duration| {
        let mut h = H::new(with_slack(slack));
        let s = h.establish_keepalive();
        let mut dues = Vec::new();
        for _ in 0..5 {
            h.ack_last(s);
            let due = h.m.poll_timeout().unwrap();
            dues.push(due - h.start);
            h.now = due;
            h.feed(genesys_keepalive::Event::Tick);
        }
        dues
    };
    let exact = run(Duration::ZERO);
    assert_eq!(
        exact,
        [20, 30, 40, 60, 80].map(Duration::from_secs),
        "no slack: every deadline as armed (heartbeats every 20 s, min_uptime at 30 s)"
    );
    assert_eq!(run(ms(10)), run(ms(10)), "deterministic");
    // The slack used is at most a tenth of min_interval: 10 ms asked, 1 ms used with min_interval 10 ms.
    // A clock 3.7 ms off the grid: the 10 ms grid would wake 6.3 ms late, the 1 ms grid 0.3 ms.
    let mut c = with_slack(ms(10));
    c.min_interval = ms(10);
    c.interval_matrix = genesys_keepalive::IntervalMatrix {
        stable: ms(40),
        degraded: ms(40),
        reconnecting: ms(40),
    };
    let mut h = H::with_wall(c, 7, H::wall() + Duration::from_micros(3_700));
    let s = h.establish_keepalive();
    h.ack_last(s);
    let due = h.m.poll_timeout().unwrap();
    let deadline = h.start + ms(40);
    assert!(
        due >= deadline && due - deadline < ms(1),
        "{:?}",
        due - deadline
    );
    assert_eq!(off_grid(h.m.wall_clock().at(due), ms(1)), 0);
    assert_eq!(h.heartbeats(s).len(), 1);
}
