//! The checker flags what it should, and the harness runs a healthy session clean.

use std::time::SystemTime;

use super::*;
use genesys_keepalive::frames::PING_FRAME;
use genesys_keepalive::{AuditEntry, AuditEvent, StopReason};

fn machine() -> (KeepAliveMachine, Instant) {
    let now = Instant::now();
    let config = FuzzHarness::compressed_config(ProfileKind::KeepaliveFrame, false);
    let m = KeepAliveMachine::new(config, now, SystemTime::UNIX_EPOCH, 1).unwrap();
    (m, now)
}

fn open(c: &mut Checker, now: Instant, id: u64) {
    let socket = SocketId(id);
    c.action(&Action::Connect {
        socket,
        url: "wss://x".into(),
        headers: Headers::new(),
    })
    .unwrap();
    c.event(now, &Event::Opened { socket }).unwrap();
}

#[test]
fn flags_two_heartbeats_1ms_apart() {
    let (m, now) = machine();
    let mut c = Checker::new(&m, now);
    open(&mut c, now, 1);
    let hb = |frame| Action::SendFrame {
        socket: SocketId(1),
        frame: FrameId(frame),
        text: PING_FRAME.into(),
    };
    c.action(&hb(1)).unwrap();
    c.event(
        now + Duration::from_millis(1),
        &Event::SendCompleted {
            socket: SocketId(1),
            frame: FrameId(1),
        },
    )
    .unwrap();
    let v = c.action(&hb(2)).unwrap_err();
    assert_eq!(v.invariant, Invariant::HeartbeatSpacing, "{v}");
    assert!(v.message.contains("1 ms apart"), "{v}");
}

#[test]
fn flags_close_code_1006_and_long_reason() {
    let (m, now) = machine();
    let mut c = Checker::new(&m, now);
    open(&mut c, now, 1);
    let close = |code, reason: &str| Action::Close {
        socket: SocketId(1),
        code,
        reason: reason.into(),
    };
    for code in [1005, 1006, 1015, 999, 2000, 5000] {
        let v = c.clone().action(&close(code, "x")).unwrap_err();
        assert_eq!(v.invariant, Invariant::CloseCode, "{code}: {v}");
    }
    let v = c
        .clone()
        .action(&close(1000, &"r".repeat(124)))
        .unwrap_err();
    assert_eq!(v.invariant, Invariant::CloseReason);
    c.action(&close(4001, "dead peer")).unwrap();
    let v = c.action(&close(1000, "again")).unwrap_err();
    assert_eq!(v.invariant, Invariant::SocketLifecycle);
}

#[test]
fn flags_second_connect_and_action_after_stopped() {
    let (m, now) = machine();
    let mut c = Checker::new(&m, now);
    let connect = |id| Action::Connect {
        socket: SocketId(id),
        url: "wss://x".into(),
        headers: Headers::new(),
    };
    c.action(&connect(1)).unwrap();
    let v = c.clone().action(&connect(2)).unwrap_err();
    assert_eq!(v.invariant, Invariant::OneConnectAttempt);
    c.action(&Action::Stopped(StopReason::Shutdown)).unwrap();
    let v = c
        .action(&Action::ReconnectAfter(Duration::ZERO))
        .unwrap_err();
    assert_eq!(v.invariant, Invariant::AfterStopped);
}

#[test]
fn flags_backoff_above_cap() {
    let (m, now) = machine();
    let mut c = Checker::new(&m, now);
    // attempt 1: cap = backoff_base = 100 ms
    let v = c
        .action(&Action::ReconnectAfter(Duration::from_millis(101)))
        .unwrap_err();
    assert_eq!(v.invariant, Invariant::BackoffBounds, "{v}");
}

#[test]
fn flags_expired_bearer_and_leaked_token() {
    let (m, now) = machine();
    let mut c = Checker::new(&m, now);
    let token_req = HttpRequest {
        id: RequestId(1),
        method: genesys_keepalive::Method::Post,
        url: "https://login.example/oauth/token".into(),
        headers: Headers::new(),
        body: Some("grant_type=client_credentials".into()),
        timeout: Duration::from_secs(2),
    };
    c.action(&Action::Http(token_req)).unwrap();
    c.event(
        now,
        &Event::HttpResponse(HttpResponse {
            request: RequestId(1),
            status: 200,
            headers: Headers::new(),
            body: br#"{"access_token":"abcd1234","expires_in":5}"#.to_vec(),
        }),
    )
    .unwrap();
    let mut headers = Headers::new();
    headers.push("Authorization", "Bearer abcd1234");
    let connect = Action::Connect {
        socket: SocketId(1),
        url: "wss://x".into(),
        headers,
    };
    c.clone().action(&connect).unwrap();
    let mut late = c.clone();
    late.event(now + Duration::from_secs(5), &Event::Tick)
        .unwrap();
    let v = late.action(&connect).unwrap_err();
    assert_eq!(v.invariant, Invariant::ExpiredToken, "{v}");
    let v = c
        .action(&Action::Audit(AuditEntry {
            timestamp: String::new(),
            connection_id: String::new(),
            event: AuditEvent::HttpFailure,
            payload_size: 0,
            state: State::Connecting,
            error: Some("HTTP 401: token abcd1234 expired".into()),
        }))
        .unwrap_err();
    assert_eq!(v.invariant, Invariant::SecretLeak, "{v}");
}

#[test]
fn flags_past_deadline_and_decreasing_stats() {
    let (mut m, now) = machine();
    let mut c = Checker::new(&m, now);
    c.drain(&mut m).unwrap();
    c.after_handle(&m).unwrap();
    let mut dec = c.clone();
    dec.last_counters[0] = 999;
    let v = dec.after_handle(&m).unwrap_err();
    assert_eq!(v.invariant, Invariant::StatsDecrease, "{v}");
    // The message names the counter that went down.
    assert!(
        v.message.contains("stats.heartbeats_sent went from 999"),
        "{v}"
    );
    // The checker's clock is an hour ahead of a machine that was never told: its deadline is past.
    c.event(now + Duration::from_secs(3_600), &Event::Tick)
        .unwrap();
    let v = c.after_handle(&m).unwrap_err();
    assert_eq!(v.invariant, Invariant::TimerMissed, "{v}");
}

/// A machine whose clock is an hour ahead of the checker's: its deadlines are never "missed".
fn far_machine() -> (KeepAliveMachine, Instant) {
    let now = Instant::now();
    let config = FuzzHarness::compressed_config(ProfileKind::KeepaliveFrame, false);
    let mut m = KeepAliveMachine::new(
        config,
        now + Duration::from_secs(3_600),
        SystemTime::UNIX_EPOCH,
        1,
    )
    .unwrap();
    while m.poll_action().is_some() {}
    (m, now)
}

#[test]
fn flags_missed_idle_timeout_and_stalled_heartbeats() {
    let (m, now) = far_machine();
    let mut c = Checker::new(&m, now);
    open(&mut c, now, 1);
    c.after_handle(&m).unwrap();
    let mut idle = c.clone();
    idle.event(now + Duration::from_millis(4_500), &Event::Tick)
        .unwrap();
    let v = idle.after_handle(&m).unwrap_err();
    assert_eq!(v.invariant, Invariant::IdleTimeout, "{v}");
    // Inbound traffic keeps it alive, but 2.5 s without a heartbeat (longest interval 2 s) is a stall.
    c.event(
        now + Duration::from_millis(2_000),
        &Event::FrameReceived {
            socket: SocketId(1),
            text: "{}".into(),
        },
    )
    .unwrap();
    c.after_handle(&m).unwrap();
    c.event(now + Duration::from_millis(2_500), &Event::Tick)
        .unwrap();
    let v = c.after_handle(&m).unwrap_err();
    assert_eq!(v.invariant, Invariant::HeartbeatCadence, "{v}");
}

#[test]
fn flags_double_reconnect_and_early_attempt() {
    let (m, now) = far_machine();
    let mut c = Checker::new(&m, now);
    c.action(&Action::ReconnectAfter(Duration::from_millis(50)))
        .unwrap();
    let v = c
        .clone()
        .action(&Action::ReconnectAfter(Duration::from_millis(50)))
        .unwrap_err();
    assert_eq!(v.invariant, Invariant::OneReconnect, "{v}");
    let attempt = Action::Audit(AuditEntry {
        timestamp: String::new(),
        connection_id: String::new(),
        event: AuditEvent::ConnectAttempt,
        payload_size: 0,
        state: State::Reconnecting,
        error: None,
    });
    c.event(now + Duration::from_millis(49), &Event::Tick)
        .unwrap();
    let v = c.clone().action(&attempt).unwrap_err();
    assert_eq!(v.invariant, Invariant::BackoffBounds, "{v}");
    c.event(now + Duration::from_millis(50), &Event::Tick)
        .unwrap();
    c.action(&attempt).unwrap();
}

#[test]
fn harness_runs_a_healthy_session_clean() {
    for profile in [ProfileKind::Notifications, ProfileKind::KeepaliveFrame] {
        for seed in 0..4 {
            let mut h = FuzzHarness::new(profile, seed);
            assert!(h.open_connection(50).unwrap(), "{profile:?} {seed}");
            for _ in 0..200 {
                h.step(Op::Progress).unwrap();
            }
            assert!(h.machine().stats().heartbeats_acked > 10);
            h.step(Op::Shutdown).unwrap();
            h.step(Op::Tick).unwrap();
            assert!(h.machine().is_stopped());
        }
    }
}
