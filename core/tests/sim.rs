//! Simulator scenarios: the timing claims of the core, checked in simulated time.

use std::time::{Duration, Instant};

use genesys_keepalive::{State, StopReason};
use genesys_keepalive_sim::{self as sim, Fault, Scenario};

const HOUR: Duration = Duration::from_secs(3600);

#[test]
fn twenty_four_hours_with_30s_server_heartbeats_and_45s_idle_timeout_never_reconnects() {
    let mut sc = Scenario::notifications(1, 24 * HOUR);
    sc.gateway.server_heartbeat = Some(Duration::from_secs(30));
    sc.gateway.idle_timeout = Some(Duration::from_secs(45));
    sc.gateway.jitter = Duration::from_millis(30);
    sc.publish_every = Some(Duration::from_secs(60));
    sc.record_trace = false;
    let r = sim::run(&sc, Instant::now());
    assert_eq!(r.stats.reconnects, 0, "{:?}", r.summary);
    assert_eq!(r.stats.dead_peers, 0);
    assert_eq!(r.summary.idle_closes, 0);
    assert_eq!(r.stats.connections_opened, 1);
    assert_eq!(r.summary.stopped, None);
    assert_eq!(r.summary.final_state, State::Stable);
    // 24 h at 20 s: about 4,320 pings, every one answered.
    assert!(
        r.stats.heartbeats_sent >= 4_300,
        "{}",
        r.stats.heartbeats_sent
    );
    assert_eq!(r.stats.heartbeats_lost, 0);
    assert!(r.stats.server_heartbeats >= 2_800);
    assert_eq!(r.summary.lost, 0);
    assert_eq!(
        r.summary.delivered + r.summary.in_flight_at_end + r.summary.unreachable,
        r.summary.published
    );
    // A heartbeat runs late by at most the timer slack (wake-ups grouped on its grid) and, once, by a step
    // of the phase grid (a tenth of the interval, to join the shared phase); the schedule keeps its 20 s
    // rate: one full interval per heartbeat over the day, none stretched by the slack.
    let slack = sc.config.timer_slack;
    assert!(!slack.is_zero());
    let phase_step = Duration::from_secs(20) / sc.config.heartbeat_phases;
    assert_eq!(phase_step, Duration::from_secs(2));
    assert!(
        r.summary.max_heartbeat_gap
            <= Duration::from_secs(20) + phase_step + slack + Duration::from_millis(1),
        "{:?}",
        r.summary.max_heartbeat_gap
    );
    assert!(
        r.stats.heartbeats_sent >= 24 * 180 - 1,
        "{} heartbeats in 24 h at 20 s",
        r.stats.heartbeats_sent
    );
    // The channel lives 24 h: it was extended before it expired.
    assert!(
        r.stats.http_requests >= 4,
        "token, channel, subscribe, resubscribe"
    );
}

#[test]
fn blackholed_peer_is_detected_within_max_idle_plus_one_heartbeat_interval() {
    for seed in 0..20 {
        let mut sc = Scenario::notifications(seed, Duration::from_secs(600));
        sc.faults
            .push((Duration::from_secs(100 + seed * 7), Fault::Blackhole));
        sc.publish_every = Some(Duration::from_secs(3));
        let r = sim::run(&sc, Instant::now());
        let bound = sc.config.max_idle + sc.config.interval_matrix.stable;
        assert_eq!(
            r.summary.dead_peer_detection.len(),
            1,
            "seed {seed}: {:?}",
            r.summary
        );
        let took = r.summary.dead_peer_detection[0];
        assert!(
            took <= bound,
            "seed {seed}: detected after {took:?}, bound {bound:?}"
        );
        assert_eq!(r.stats.dead_peers, 1);
        // And it came back: a second socket, healthy.
        assert_eq!(r.stats.connections_opened, 2, "seed {seed}");
        assert_eq!(r.summary.final_state, State::Stable, "seed {seed}");
        assert_eq!(r.summary.stopped, None);
    }
}

#[test]
fn socket_closing_rollover_loses_and_duplicates_nothing() {
    let mut copies_dropped = 0;
    for seed in 0..10 {
        let mut sc = Scenario::notifications(seed, Duration::from_secs(900));
        sc.publish_every = Some(Duration::from_millis(250));
        sc.gateway.jitter = Duration::from_millis(40);
        sc.faults
            .push((Duration::from_secs(300), Fault::SocketClosing));
        sc.faults
            .push((Duration::from_secs(600), Fault::SocketClosing));
        let r = sim::run(&sc, Instant::now());
        assert_eq!(r.stats.rollovers, 2, "seed {seed}: {:?}", r.summary);
        assert_eq!(r.stats.reconnects, 0, "seed {seed}");
        assert_eq!(r.summary.lost, 0, "seed {seed}");
        assert_eq!(r.summary.duplicated, 0, "seed {seed}");
        assert!(r.summary.published > 3_500);
        assert_eq!(
            r.summary.delivered + r.summary.in_flight_at_end + r.summary.unreachable,
            r.summary.published,
            "seed {seed}"
        );
        copies_dropped += r.stats.duplicates_dropped;
    }
    assert!(
        copies_dropped > 0,
        "in some runs both sockets carried the overlap, and the copies were dropped"
    );
}

#[test]
fn a_300s_token_for_24h_is_never_used_expired() {
    let mut sc = Scenario::notifications(3, 24 * HOUR);
    sc.gateway.token_lifetime = Duration::from_secs(300);
    sc.publish_every = Some(Duration::from_secs(120));
    sc.record_trace = false;
    let r = sim::run(&sc, Instant::now());
    assert_eq!(r.summary.expired_token_uses, 0, "{:?}", r.summary);
    // Refreshed about every 270 s (30 s early): ~320 tokens in 24 h.
    assert!(
        r.summary.tokens_issued >= 300,
        "{}",
        r.summary.tokens_issued
    );
    assert_eq!(r.stats.reconnects, 0);
    assert_eq!(r.summary.lost, 0);
}

#[test]
fn a_gateway_down_for_ten_minutes_gets_jittered_backoff_then_a_clean_stop() {
    let mut sc = Scenario::notifications(11, Duration::from_secs(1200));
    sc.faults.push((
        Duration::from_secs(60),
        Fault::Outage(Duration::from_secs(600)),
    ));
    let r = sim::run(&sc, Instant::now());
    let max = sc.config.max_reconnect_attempts;
    assert_eq!(
        r.summary.reconnect_delays.len() as u32,
        max,
        "{:?}",
        r.summary
    );
    for (i, d) in r.summary.reconnect_delays.iter().enumerate() {
        let cap = sc.config.backoff_base * 2u32.pow(i as u32);
        assert!(
            *d <= cap.min(sc.config.backoff_max),
            "attempt {}: {d:?} > {cap:?}",
            i + 1
        );
    }
    let distinct: std::collections::HashSet<_> = r.summary.reconnect_delays.iter().collect();
    assert!(
        distinct.len() > 1,
        "jittered, not fixed: {:?}",
        r.summary.reconnect_delays
    );
    match &r.summary.stopped {
        Some(StopReason::ReconnectAttemptsExhausted { attempts, .. }) => assert_eq!(*attempts, max),
        other => panic!("expected a clean stop, got {other:?}"),
    }
    assert!(
        r.summary.stopped_at.unwrap() < Duration::from_secs(660),
        "stopped inside the outage"
    );
    assert_eq!(r.summary.final_state, State::Stopped);
}

#[test]
fn jitter_differs_between_clients_of_the_same_gateway() {
    let delays = |seed| {
        let mut sc = Scenario::notifications(seed, Duration::from_secs(300));
        sc.faults.push((
            Duration::from_secs(30),
            Fault::Outage(Duration::from_secs(200)),
        ));
        sim::run(&sc, Instant::now()).summary.reconnect_delays
    };
    assert_ne!(delays(1), delays(2));
}

#[test]
fn the_same_seed_gives_the_identical_trace() {
    let mut sc = Scenario::notifications(99, Duration::from_secs(1800));
    sc.publish_every = Some(Duration::from_secs(2));
    sc.gateway.jitter = Duration::from_millis(50);
    sc.gateway.loss = 0.05;
    sc.faults.push((
        Duration::from_secs(200),
        Fault::LatencySpike {
            latency: Duration::from_millis(1500),
            duration: Duration::from_secs(120),
        },
    ));
    sc.faults.push((Duration::from_secs(500), Fault::Blackhole));
    sc.faults
        .push((Duration::from_secs(900), Fault::SocketClosing));
    sc.faults.push((Duration::from_secs(1200), Fault::Garbage));
    let a = sim::run(&sc, Instant::now());
    let b = sim::run(&sc, Instant::now() + Duration::from_secs(5));
    assert!(a.trace.len() > 1000);
    assert_eq!(a.trace, b.trace);
    assert_eq!(a.summary, b.summary);
    let mut other = sc.clone();
    other.seed = 100;
    assert_ne!(
        sim::run(&other, Instant::now()).trace,
        a.trace,
        "the seed matters"
    );
}

#[test]
fn a_latency_spike_degrades_then_recovers_with_one_alert() {
    let mut sc = Scenario::notifications(5, Duration::from_secs(900));
    sc.faults.push((
        Duration::from_secs(120),
        Fault::LatencySpike {
            latency: Duration::from_millis(900),
            duration: Duration::from_secs(300),
        },
    ));
    let r = sim::run(&sc, Instant::now());
    let states: Vec<&str> = r
        .trace
        .iter()
        .filter(|t| t.what.contains("StateChanged"))
        .map(|t| t.what.as_str())
        .collect();
    assert!(
        states.iter().any(|s| s.contains("to: Degraded")),
        "{states:#?}"
    );
    assert_eq!(r.summary.final_state, State::Stable, "{states:#?}");
    let alerts = r
        .trace
        .iter()
        .filter(|t| t.what.contains("LatencyThresholdExceeded"))
        .count();
    assert_eq!(alerts, 1);
    assert_eq!(r.stats.reconnects, 0);
}

#[test]
fn heavy_heartbeat_loss_raises_packet_loss_critical_without_flapping() {
    let mut sc = Scenario::keepalive_frame(8, Duration::from_secs(1800));
    sc.gateway.loss = 0.2;
    let r = sim::run(&sc, Instant::now());
    assert!(r.stats.heartbeats_lost > 0);
    assert!(r
        .trace
        .iter()
        .any(|t| t.what.contains("PacketLossCritical")));
    assert!(r.stats.packet_loss <= 1.0 && r.stats.packet_loss >= 0.0);
}

#[test]
fn keepalive_frame_profile_runs_a_day_clean() {
    let mut sc = Scenario::keepalive_frame(4, 24 * HOUR);
    sc.gateway.token_lifetime = Duration::from_secs(3600);
    sc.record_trace = false;
    let r = sim::run(&sc, Instant::now());
    assert_eq!(r.stats.reconnects, 0, "{:?}", r.summary);
    assert_eq!(r.summary.expired_token_uses, 0);
    assert!(r.stats.heartbeats_acked >= 4_300);
    assert!(r.stats.rtt_samples > 0);
}

#[test]
fn a_channel_gone_on_the_socket_moves_to_a_new_channel_without_loss() {
    let mut sc = Scenario::notifications(6, Duration::from_secs(600));
    sc.publish_every = Some(Duration::from_secs(1));
    sc.faults
        .push((Duration::from_secs(200), Fault::ChannelGone));
    let r = sim::run(&sc, Instant::now());
    assert_eq!(r.stats.rollovers, 1, "{:?}", r.summary);
    assert_eq!(r.summary.duplicated, 0);
    assert_eq!(r.summary.final_state, State::Stable);
}

#[test]
fn garbage_frames_are_counted_and_survived() {
    let mut sc = Scenario::notifications(7, Duration::from_secs(300));
    sc.faults.push((Duration::from_secs(100), Fault::Garbage));
    let r = sim::run(&sc, Instant::now());
    assert_eq!(r.stats.non_json, 1);
    assert!(r.stats.wrong_shape >= 2);
    assert_eq!(r.stats.invalid_utf8, 1);
    assert_eq!(r.stats.unknown_topics, 1);
    assert!(r.stats.acks_unmatched >= 1);
    assert_eq!(r.stats.reconnects, 0);
    assert_eq!(r.summary.final_state, State::Stable);
}
