//! One test per defect of the seed tutorial (DESIGN.md, "What the seed gets wrong"), each named for it.

mod common;

use std::time::Duration;

use common::*;
use genesys_keepalive::backoff::Backoff;
use genesys_keepalive::rng::Rng;
use genesys_keepalive::{
    Action, AlertEvent, Config, ConfigError, Event, IntervalMatrix, ProfileKind, Secret, State,
    StopReason,
};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn reconnects(h: &H) -> Vec<Duration> {
    h.log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::ReconnectAfter(d) => Some(*d),
            _ => None,
        })
        .collect()
}

fn stopped(h: &H) -> Option<StopReason> {
    h.log.iter().find_map(|(_, a)| match a {
        Action::Stopped(r) => Some(r.clone()),
        _ => None,
    })
}

#[test]
fn seed_defect_01_config_is_validated_once_and_defaults_are_coherent_in_every_state() {
    let c = notifications_config();
    for d in [
        c.interval_matrix.stable,
        c.interval_matrix.degraded,
        c.interval_matrix.reconnecting,
    ] {
        assert!(d >= c.min_interval && d < c.max_idle, "{d:?}");
    }
    // The seed's own numbers: 15 s minimum with 10 s and 5 s intervals. Refused, naming both fields.
    let mut seed_like = notifications_config();
    seed_like.min_interval = ms(15_000);
    let err = seed_like.validate().unwrap_err();
    let text = err.to_string();
    assert!(text.contains("interval_matrix.degraded_ms"), "{text}");
    assert!(text.contains("interval_matrix.reconnecting_ms"), "{text}");
    assert!(!text.contains("interval_matrix.stable_ms"), "{text}");
    match err {
        ConfigError::Invalid(v) => assert_eq!(v.len(), 2, "every violation listed at once"),
        other => panic!("{other:?}"),
    }
    // Compressed test timings are valid: a 500 ms heartbeat with a 2 s idle timeout.
    let fast = Config::builder()
        .credentials("id", Secret::new("s"))
        .heartbeat_interval(ms(500))
        .max_idle(ms(2_000))
        .ack_timeout(ms(1_000))
        .build();
    assert!(fast.is_ok(), "{fast:?}");
    // And a heartbeat at or past the idle timeout is refused.
    let slow = Config::builder()
        .credentials("id", Secret::new("s"))
        .interval_matrix(IntervalMatrix::scaled(ms(60_000)))
        .build();
    assert!(slow.unwrap_err().to_string().contains("idle_timeout_ms"));
}

#[test]
fn seed_defect_02_heartbeat_cadence_follows_the_state() {
    let mut h = H::new(keepalive_config());
    let s = h.establish_keepalive();
    // Answer every heartbeat at once for a while: STABLE, 20 s apart.
    for _ in 0..3 {
        let hb = h.heartbeats(s).last().unwrap().1.clone();
        let seq = serde_json::from_str::<serde_json::Value>(&hb).unwrap()["seq"]
            .as_u64()
            .unwrap();
        h.advance(ms(50));
        h.frame(s, &format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{seq}}}"#));
        let next = h.m.poll_timeout().unwrap() - h.now;
        assert!(next <= ms(20_000));
        h.advance(next);
    }
    assert_eq!(h.m.state(), State::Stable);
    // Now slow acks (2 s > 800 ms): DEGRADED, and the next heartbeat comes 10 s after the last one.
    for _ in 0..2 {
        let hb = h.heartbeats(s).last().unwrap().1.clone();
        let seq = serde_json::from_str::<serde_json::Value>(&hb).unwrap()["seq"]
            .as_u64()
            .unwrap();
        h.advance(ms(2_000));
        h.frame(s, &format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{seq}}}"#));
        if h.m.state() == State::Degraded {
            break;
        }
        h.advance(ms(18_000));
    }
    assert_eq!(h.m.state(), State::Degraded);
    let last = h.heartbeats(s).last().unwrap().0;
    h.advance(ms(10_000) - (h.t() - last));
    let hbs = h.heartbeats(s);
    let gap = hbs[hbs.len() - 1].0 - hbs[hbs.len() - 2].0;
    assert_eq!(gap, ms(10_000), "DEGRADED cadence is 10 s");
    let v: serde_json::Value = serde_json::from_str(&hbs.last().unwrap().1).unwrap();
    assert_eq!(v["intervalMatrix"]["state"], "DEGRADED");
    assert_eq!(v["intervalMatrix"]["current"], 10_000);
}

#[test]
fn seed_defect_03_data_frames_are_liveness_not_acks_and_loss_stays_in_range() {
    let mut h = H::new(keepalive_config());
    let s = h.establish_keepalive();
    for _ in 0..50 {
        h.frame(s, r#"{"type":"STREAMING_DATA","payload":{}}"#);
    }
    let st = h.m.stats();
    assert_eq!(st.heartbeats_acked, 0, "STREAMING_DATA is not an ack");
    assert_eq!(
        st.notifications_delivered, 50,
        "it is data for the application"
    );
    // Let every heartbeat go unanswered while data keeps the link alive: loss is counted, never < 0 or > 1.
    for _ in 0..10 {
        h.advance(ms(4_000));
        h.frame(s, r#"{"type":"STREAMING_DATA","payload":{}}"#);
    }
    let st = h.m.stats();
    assert!(st.heartbeats_lost > 0);
    assert!((0.0..=1.0).contains(&st.packet_loss), "{}", st.packet_loss);
}

#[test]
fn seed_defect_04_degraded_returns_to_stable_after_healthy_samples() {
    let mut c = keepalive_config();
    c.recovery_samples = 3;
    let mut h = H::new(c);
    let s = h.establish_keepalive();
    let ack_after = |h: &mut H, delay: u64| {
        let hb = h.heartbeats(s).last().unwrap().1.clone();
        let seq = serde_json::from_str::<serde_json::Value>(&hb).unwrap()["seq"]
            .as_u64()
            .unwrap();
        h.advance(ms(delay));
        h.frame(s, &format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{seq}}}"#));
        let next = h.m.poll_timeout().unwrap();
        let until_hb = next.saturating_duration_since(h.now);
        h.advance(until_hb);
    };
    ack_after(&mut h, 1_500);
    assert_eq!(h.m.state(), State::Degraded);
    let alerts = h.count(
        |a| matches!(a, Action::Alert(al) if al.event == AlertEvent::LatencyThresholdExceeded),
    );
    assert_eq!(alerts, 1);
    ack_after(&mut h, 20);
    ack_after(&mut h, 20);
    assert_eq!(
        h.m.state(),
        State::Degraded,
        "not yet: 2 of 3 healthy samples"
    );
    ack_after(&mut h, 20);
    assert_eq!(h.m.state(), State::Stable, "back after 3 healthy samples");
    // And one healthy sample does not flip it back to DEGRADED although the average is still high.
    ack_after(&mut h, 20);
    assert_eq!(h.m.state(), State::Stable);
}

#[test]
fn seed_defect_05_rtt_is_per_heartbeat_even_with_two_in_flight() {
    let mut c = keepalive_config();
    c.ack_timeout = ms(30_000);
    let mut h = H::new(c);
    let s = h.establish_keepalive(); // heartbeat 1 at t=0 (RECONNECTING-probe cadence: 5 s)
    h.advance(ms(5_000)); // heartbeat 2 at t=5 s, both outstanding
    let seqs: Vec<u64> = h
        .heartbeats(s)
        .iter()
        .map(|(_, t)| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["seq"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs.len(), 2);
    h.advance(ms(300)); // t = 5.3 s
    h.frame(
        s,
        &format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{}}}"#, seqs[1]),
    );
    let st = h.m.stats();
    // The seed would measure against the last heartbeat only; here the ack names heartbeat 2: 300 ms.
    assert!(
        (st.avg_latency_ms - 300.0).abs() < 1.0,
        "{}",
        st.avg_latency_ms
    );
    // Heartbeat 1 is answered implicitly (a later ack answers every older one), not lost, no RTT guess.
    assert_eq!(st.heartbeats_acked, 2);
    assert_eq!(st.heartbeats_lost, 0);
    assert_eq!(st.rtt_samples, 1);
    // A late duplicate ack for heartbeat 1 matches nothing.
    h.frame(
        s,
        &format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{}}}"#, seqs[0]),
    );
    assert_eq!(h.m.stats().acks_unmatched, 1);
}

#[test]
fn seed_defect_06_a_silent_peer_is_declared_dead_closed_and_reconnected() {
    let mut h = H::new(notifications_config());
    let s = h.establish_notifications();
    h.frame(s, PONG);
    // Nothing more ever arrives (half-open TCP). Within max_idle (45 s) it must be declared dead.
    h.advance(ms(45_000));
    let st = h.m.stats();
    assert_eq!(st.dead_peers, 1);
    assert!(h.log.iter().any(
        |(t, a)| matches!(a, Action::Alert(al) if al.event == AlertEvent::DeadPeer)
            && *t <= ms(45_000)
    ));
    assert!(h
        .log
        .iter()
        .any(|(_, a)| matches!(a, Action::Close { socket, code: 4001, .. } if *socket == s)));
    assert_eq!(reconnects(&h).len(), 1);
    assert_eq!(h.m.state(), State::Reconnecting);
}

#[test]
fn seed_defect_07_close_and_error_together_schedule_one_reconnect() {
    let mut h = H::new(notifications_config());
    let s = h.establish_notifications();
    h.frame(s, PONG);
    h.feed(Event::Closed {
        socket: s,
        code: Some(1006),
        reason: "abnormal".into(),
    });
    h.feed(Event::Closed {
        socket: s,
        code: None,
        reason: "io error: reset".into(),
    });
    h.feed(Event::SendFailed {
        socket: s,
        frame: genesys_keepalive::FrameId(1),
        error: "broken pipe".into(),
    });
    assert_eq!(reconnects(&h).len(), 1, "exactly one attempt for one drop");
    let st = h.m.stats();
    assert!(
        st.unexpected_events >= 2,
        "the extra reports are counted, not acted on"
    );
    // And only one connection attempt follows.
    h.advance(ms(10_000));
    let connects = h.count(|a| matches!(a, Action::Http(r) if r.url.ends_with("/channels")));
    assert_eq!(connects, 2, "the first setup and exactly one reconnect");
}

#[test]
fn seed_defect_08_a_flapping_gateway_exhausts_attempts_instead_of_retrying_at_full_speed() {
    let mut c = keepalive_config();
    c.min_uptime = ms(30_000);
    let mut h = H::new(c);
    // Each connection opens, then dies 2 s later: the counter must not reset on open.
    for _ in 0..20 {
        let Some((socket, _, _)) = h.pending_connect() else {
            h.advance(ms(1_000));
            continue;
        };
        h.feed(Event::Opened { socket });
        h.advance(ms(2_000));
        h.feed(Event::Closed {
            socket,
            code: Some(1011),
            reason: "flap".into(),
        });
        if stopped(&h).is_some() {
            break;
        }
        let d = *reconnects(&h).last().unwrap();
        h.advance(d);
    }
    match stopped(&h) {
        Some(StopReason::ReconnectAttemptsExhausted { attempts: 5, .. }) => {}
        other => panic!("expected a stop after 5 attempts, got {other:?}"),
    }
    // After min_uptime of health the counter does reset.
    let mut h = H::new(keepalive_config());
    for _ in 0..10 {
        let Some((socket, _, _)) = h.pending_connect() else {
            break;
        };
        h.feed(Event::Opened { socket });
        // Stay healthy past min_uptime, answering heartbeats.
        for _ in 0..8 {
            h.advance(ms(5_000));
            h.frame(socket, r#"{"type":"KEEP_ALIVE_ACK"}"#);
        }
        h.feed(Event::Closed {
            socket,
            code: Some(1001),
            reason: "going away".into(),
        });
        let d = *reconnects(&h).last().unwrap();
        h.advance(d);
    }
    assert_eq!(stopped(&h), None, "healthy connections reset the counter");
}

#[test]
fn seed_defect_09_full_jitter_clamped_and_never_panics() {
    let b = Backoff {
        base: ms(2_000),
        factor: 2,
        max: ms(60_000),
    };
    for attempt in [0, 1, 2, 10, 64, 1_000, u32::MAX] {
        let d = b.delay(attempt, &mut Rng::new(1));
        assert!(d <= ms(60_000));
    }
    let huge = Backoff {
        base: Duration::from_secs(u64::MAX / 4),
        factor: u32::MAX,
        max: Duration::MAX,
    };
    let _ = huge.delay(u32::MAX, &mut Rng::new(3));
    // Two clients of the same failed gateway come back at different times.
    let first: Vec<Duration> = (0..8)
        .map(|seed| {
            let mut h = H::with_seed(keepalive_config(), seed);
            let (socket, _, _) = h.pending_connect().unwrap();
            h.feed(Event::ConnectFailed {
                socket,
                status: None,
                retry_after: None,
                error: "refused".into(),
            });
            reconnects(&h)[0]
        })
        .collect();
    let distinct: std::collections::HashSet<_> = first.iter().collect();
    assert!(distinct.len() >= 6, "{first:?}");
    assert!(first.iter().all(|d| *d <= ms(2_000)));
}

#[test]
fn seed_defect_10_the_last_attempt_emits_stopped_and_never_exits() {
    let mut c = keepalive_config();
    c.max_reconnect_attempts = 2;
    let mut h = H::new(c);
    for _ in 0..3 {
        let (socket, _, _) = h.pending_connect().unwrap();
        h.feed(Event::ConnectFailed {
            socket,
            status: None,
            retry_after: None,
            error: "refused".into(),
        });
        if let Some(d) = reconnects(&h).last().copied() {
            if stopped(&h).is_none() {
                h.advance(d);
            }
        }
    }
    match stopped(&h) {
        Some(StopReason::ReconnectAttemptsExhausted {
            attempts,
            last_error,
        }) => {
            assert_eq!(attempts, 2);
            assert!(last_error.contains("refused"));
        }
        other => panic!("{other:?}"),
    }
    assert!(h.m.is_stopped());
    assert_eq!(h.m.poll_timeout(), None);
    assert!(h.log.iter().any(
        |(_, a)| matches!(a, Action::Alert(al) if al.event == AlertEvent::ReconnectExhausted)
    ));
    // Still a value the application owns: more input is harmless and emits nothing.
    let before = h.log.len();
    h.feed(Event::Tick);
    h.feed(Event::Shutdown);
    h.advance(ms(100_000));
    assert_eq!(h.log.len(), before);
}

#[test]
fn seed_defect_11_the_token_is_refreshed_before_expiry_while_the_socket_stays_up() {
    let mut h = H::new(notifications_config());
    // A 60 s token: refreshed 30 s early, i.e. at 30 s, 60 s, ...
    h.answer_ok(60);
    h.answer_ok(0);
    h.answer_ok(0);
    let (s, _, _) = h.pending_connect().unwrap();
    h.feed(Event::Opened { socket: s });
    let mut refreshed = 0;
    for _ in 0..40 {
        h.advance(ms(5_000));
        h.frame(s, PONG);
        while let Some(req) = h.last_http() {
            assert!(req.url.ends_with("/oauth/token"), "{}", req.url);
            h.answer_ok(60);
            refreshed += 1;
        }
    }
    assert!(refreshed >= 5, "{refreshed}");
    assert_eq!(h.m.stats().reconnects, 0);
    assert_eq!(
        h.count(|a| matches!(a, Action::Close { .. })),
        0,
        "the socket stayed up"
    );
    // A very short token: the early margin is capped at half its life, so no refresh storm.
    let mut h = H::new(notifications_config());
    h.answer_ok(4);
    assert_eq!(h.m.stats().token_refreshes, 1);
    h.advance(ms(1_900));
    assert!(h
        .last_http()
        .map(|r| !r.url.ends_with("/oauth/token"))
        .unwrap_or(true));
}

#[test]
fn seed_defect_12_401_refreshes_once_403_stops_naming_the_topic_429_waits_retry_after() {
    // 401 on a bearer call: one token refresh, then the same call again.
    let mut h = H::new(notifications_config());
    h.answer_ok(3_600);
    let ch = h.pending_http();
    assert!(ch.url.ends_with("/channels"));
    h.respond(&ch, 401, r#"{"message":"token revoked"}"#, &[]);
    let tok = h.pending_http();
    assert!(tok.url.ends_with("/oauth/token"));
    h.respond(
        &tok,
        200,
        r#"{"access_token":"tok-fresh-1","expires_in":3600}"#,
        &[],
    );
    let again = h.pending_http();
    assert!(again.url.ends_with("/channels"));
    assert_eq!(
        again.headers.get("authorization"),
        Some("Bearer tok-fresh-1")
    );
    // A second 401 after the refresh: stop, no storm.
    h.respond(&again, 401, r#"{"message":"still no"}"#, &[]);
    assert!(
        matches!(stopped(&h), Some(StopReason::AuthenticationFailed { .. })),
        "{:?}",
        stopped(&h)
    );
    assert_eq!(h.count(|a| matches!(a, Action::Http(_))), 4);

    // 403 on subscriptions: stop with the topic named.
    let mut h = H::new(notifications_config());
    h.answer_ok(3_600);
    h.answer_ok(3_600);
    let sub = h.pending_http();
    h.respond(
        &sub,
        403,
        r#"{"message":"Missing permission","code":"missing.permissions"}"#,
        &[],
    );
    match stopped(&h) {
        Some(StopReason::Forbidden { detail }) => assert!(detail.contains(TOPIC), "{detail}"),
        other => panic!("{other:?}"),
    }

    // 429 with Retry-After: 7 s: nothing sent before 7 s, the same call after.
    let mut h = H::new(notifications_config());
    h.answer_ok(3_600);
    let ch = h.pending_http();
    h.respond(&ch, 429, "", &[("Retry-After", "7")]);
    h.advance(ms(6_900));
    assert!(h.last_http().is_none(), "waited");
    h.advance(ms(100));
    let again = h.pending_http();
    assert!(again.url.ends_with("/channels"));
    // 503 without Retry-After: 3 s.
    h.respond(&again, 503, "", &[]);
    h.advance(ms(2_999));
    assert!(h.last_http().is_none());
    h.advance(ms(1));
    assert!(h.last_http().is_some());

    // Bad credentials at the token endpoint: one request, a clear stop.
    let mut h = H::new(notifications_config());
    let tok = h.pending_http();
    h.respond(
        &tok,
        401,
        r#"{"error":"invalid_client","description":"client not found"}"#,
        &[],
    );
    match stopped(&h) {
        Some(StopReason::AuthenticationFailed { detail }) => {
            assert!(detail.contains("invalid_client"))
        }
        other => panic!("{other:?}"),
    }
    h.advance(ms(600_000));
    assert_eq!(h.count(|a| matches!(a, Action::Http(_))), 1);
}

#[test]
fn seed_defect_13_uses_the_real_genesys_endpoints() {
    let mut c = notifications_config();
    c.region = "eu-west-1".parse().unwrap();
    let mut h = H::new(c);
    let tok = h.pending_http();
    assert_eq!(tok.url, "https://login.mypurecloud.ie/oauth/token");
    assert_eq!(tok.method.as_str(), "POST");
    assert_eq!(tok.body.as_deref(), Some("grant_type=client_credentials"));
    assert!(tok
        .headers
        .get("authorization")
        .unwrap()
        .starts_with("Basic "));
    assert_eq!(
        tok.headers.get("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    h.respond(
        &tok,
        200,
        r#"{"access_token":"tok-a","expires_in":86399}"#,
        &[],
    );
    let ch = h.pending_http();
    assert_eq!(
        ch.url,
        "https://api.mypurecloud.ie/api/v2/notifications/channels"
    );
    assert_eq!(ch.headers.get("authorization"), Some("Bearer tok-a"));
    h.respond(&ch, 200, r#"{"connectUri":"wss://streaming.mypurecloud.ie/channels/abc","id":"abc","expires":"2030-01-01T00:00:00Z"}"#, &[]);
    let sub = h.pending_http();
    assert_eq!(sub.method.as_str(), "PUT");
    assert_eq!(
        sub.url,
        "https://api.mypurecloud.ie/api/v2/notifications/channels/abc/subscriptions"
    );
    assert_eq!(
        sub.body.as_deref(),
        Some(&*format!(r#"[{{"id":"{TOPIC}"}}]"#))
    );
    h.respond(&sub, 200, r#"{"entities":[]}"#, &[]);
    let (s, url, _) = h.pending_connect().unwrap();
    assert_eq!(url, "wss://streaming.mypurecloud.ie/channels/abc");
    h.feed(Event::Opened { socket: s });
    assert_eq!(h.heartbeats(s)[0].1, r#"{"message":"ping"}"#);
    // The seed's hosts are not used, and unknown regions are refused with the list.
    assert!(!h
        .everything_printed()
        .contains("api.eu-west-1.mypurecloud.com"));
    let err = "mars-1"
        .parse::<genesys_keepalive::Region>()
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("eu-west-1") && err.contains("ap-southeast-2"),
        "{err}"
    );
}

#[test]
fn credentials_never_appear_in_any_output() {
    let mut h = H::new(notifications_config());
    h.answer_ok(60);
    let ch = h.pending_http();
    // A server that echoes the secret back in an error must not get it printed.
    h.respond(
        &ch,
        500,
        &format!(r#"{{"message":"bad secret {SECRET} and token tok-1-abcdef"}}"#),
        &[],
    );
    h.advance(ms(120_000));
    let all = h.everything_printed();
    assert!(!all.contains(SECRET), "secret leaked");
    assert!(!all.contains("tok-1-abcdef"), "token leaked");
    assert!(format!("{:?}", notifications_config()).contains("[redacted]"));
    let toml = serde_json::to_string(&notifications_config()).unwrap();
    assert!(!toml.contains(SECRET));
}

#[test]
fn keepalive_frames_carry_the_seed_schema_and_a_bearer_token_when_credentials_exist() {
    let c = Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url("wss://gw.example.com/ws")
        .credentials("id", Secret::new(SECRET))
        .build()
        .unwrap();
    let mut h = H::new(c);
    h.answer_ok(3_600);
    let (s, _, headers) = h.pending_connect().unwrap();
    assert_eq!(headers.get("authorization"), Some("Bearer tok-1-abcdef"));
    assert!(
        !format!("{headers:?}").contains("tok-1"),
        "Debug redacts it"
    );
    h.feed(Event::Opened { socket: s });
    let (_, text) = &h.heartbeats(s)[0];
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    for f in [
        "connectionId",
        "type",
        "timestamp",
        "intervalMatrix",
        "sizeDirective",
    ] {
        assert!(v.get(f).is_some(), "{f}");
    }
    assert_eq!(v["type"], "KEEP_ALIVE");
    assert_eq!(
        v["sizeDirective"]["bytes"].as_u64().unwrap() as usize,
        text.len()
    );
    assert_eq!(v["sizeDirective"]["maxAllowed"], 1024);
    assert_eq!(v["timestamp"].as_u64().unwrap(), 1_780_000_000_000);
    // One frame in flight: the next heartbeat waits for the driver's report.
    let mut h = H::new(keepalive_config());
    h.auto_complete_sends = false;
    let s = h.establish_keepalive();
    h.advance(ms(5_000));
    h.advance(ms(5_000));
    assert_eq!(
        h.heartbeats(s).len(),
        1,
        "nothing more until the first is written"
    );
}

#[test]
fn time_going_backwards_is_clamped_and_counted() {
    let mut h = H::new(keepalive_config());
    let s = h.establish_keepalive();
    h.advance(ms(1_000));
    let earlier = h.now - ms(500);
    h.m.handle(
        earlier,
        Event::FrameReceived {
            socket: s,
            text: r#"{"type":"KEEP_ALIVE_ACK"}"#.into(),
        },
    );
    h.drain();
    assert_eq!(h.m.stats().clock_regressions, 1);
    assert_eq!(h.m.stats().heartbeats_acked, 1);
}

#[test]
fn shutdown_closes_with_1000_graceful_shutdown_and_stops() {
    let mut h = H::new(notifications_config());
    let s = h.establish_notifications();
    h.feed(Event::Shutdown);
    assert!(h.log.iter().any(|(_, a)| matches!(a, Action::Close { socket, code: 1000, reason, .. } if *socket == s && reason == "Graceful shutdown")));
    assert_eq!(stopped(&h), Some(StopReason::Shutdown));
    assert_eq!(h.m.state(), State::Stopped);
    h.feed(Event::Closed {
        socket: s,
        code: Some(1000),
        reason: "bye".into(),
    });
    assert_eq!(
        h.m.stats().unexpected_events,
        0,
        "the close we asked for is expected"
    );
}
