//! Behaviours of the machine beyond the seed's defects.

mod common;

use std::time::Duration;

use common::*;
use genesys_keepalive::{Action, AlertEvent, AuditEvent, Event, State};

#[test]
fn a_socket_that_never_opens_is_closed_once_and_retried() {
    let mut h = H::new(keepalive_config());
    let (s, _, _) = h.pending_connect().unwrap();
    h.advance(Duration::from_millis(10_000));
    let closes: Vec<u16> = h
        .log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Close { socket, code, .. } if *socket == s => Some(*code),
            _ => None,
        })
        .collect();
    assert_eq!(closes, vec![4003]);
    assert_eq!(h.count(|a| matches!(a, Action::ReconnectAfter(_))), 1);
    h.feed(Event::Closed {
        socket: s,
        code: None,
        reason: "aborted".into(),
    });
    assert_eq!(h.m.stats().unexpected_events, 0);
}

#[test]
fn a_refused_handshake_is_not_closed_again() {
    let mut h = H::new(keepalive_config());
    let (s, _, _) = h.pending_connect().unwrap();
    h.feed(Event::ConnectFailed {
        socket: s,
        status: Some(503),
        retry_after: Some(Duration::from_secs(4)),
        error: "busy".into(),
    });
    assert_eq!(h.count(|a| matches!(a, Action::Close { .. })), 0);
    let d = h
        .log
        .iter()
        .find_map(|(_, a)| match a {
            Action::ReconnectAfter(d) => Some(*d),
            _ => None,
        })
        .unwrap();
    assert!(
        d >= Duration::from_secs(4),
        "Retry-After of a refused handshake is honoured: {d:?}"
    );
}

#[test]
fn a_channel_is_extended_before_the_expiry_the_server_gave() {
    let mut h = H::new(notifications_config());
    h.answer_ok(86_399);
    let ch = h.pending_http();
    // The harness's wall clock starts at 1,780,000,000 s; this channel expires two hours later.
    h.respond(
        &ch,
        200,
        r#"{"connectUri":"wss://streaming.mypurecloud.com/channels/c2","id":"c2","expires":"2026-05-28T22:26:40Z"}"#,
        &[],
    );
    h.answer_ok(0);
    let (s, _, _) = h.pending_connect().unwrap();
    h.feed(Event::Opened { socket: s });
    // Keep the socket alive with pongs; the extension comes after 1 h (2 h - the 1 h margin), not 23 h.
    let mut extended_at = None;
    for _ in 0..800 {
        h.advance(Duration::from_secs(5));
        h.frame(s, PONG);
        if let Some(r) = h.last_http() {
            if r.url.ends_with("/channels/c2/subscriptions") {
                extended_at = Some(h.t());
                break;
            }
        }
    }
    let at = extended_at.expect("the channel was extended");
    assert!(
        at >= Duration::from_secs(3_595) && at <= Duration::from_secs(3_610),
        "{at:?}"
    );
}

#[test]
fn after_stop_leftovers_are_expected_and_strangers_are_counted() {
    let mut h = H::new(notifications_config());
    let s = h.establish_notifications();
    h.advance(Duration::from_secs(20)); // a heartbeat in flight, then shut down
    h.feed(Event::Shutdown);
    let before = h.log.len();
    h.frame(s, PONG);
    h.feed(Event::SendCompleted {
        socket: s,
        frame: genesys_keepalive::FrameId(99),
    });
    h.feed(Event::HttpFailed {
        request: genesys_keepalive::RequestId(3),
        error: "aborted".into(),
    });
    h.feed(Event::Closed {
        socket: s,
        code: Some(1000),
        reason: "bye".into(),
    });
    assert_eq!(h.m.stats().unexpected_events, 0);
    assert_eq!(h.log.len(), before, "nothing follows Stopped");
    h.feed(Event::Opened {
        socket: genesys_keepalive::SocketId(77),
    });
    h.feed(Event::FrameReceived {
        socket: s,
        text: PONG.into(),
    }); // its close is done: now a stranger
    assert_eq!(h.m.stats().unexpected_events, 2);
}

/// The linger after a close is the core's timer: a peer that never answers the close frame is discarded
/// when it passes, and only then is the machine finished.
#[test]
fn a_close_that_is_never_answered_is_discarded_after_the_linger() {
    let mut h = H::new(keepalive_config());
    let s = h.establish_keepalive();
    h.feed(Event::Shutdown);
    assert!(h.m.is_stopped());
    assert!(!h.m.is_finished(), "the socket is still closing");
    let closed_at = h.t();
    let linger = h.m.poll_timeout().expect("the linger deadline");
    assert_eq!(h.count(|a| matches!(a, Action::Discard { .. })), 0);
    h.advance(Duration::from_secs(5));
    let discards: Vec<_> = h
        .log
        .iter()
        .filter(|(_, a)| matches!(a, Action::Discard { socket } if *socket == s))
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(
        discards,
        vec![closed_at + Duration::from_secs(1)],
        "{linger:?}"
    );
    assert!(h.m.is_finished());
    assert_eq!(h.m.poll_timeout(), None);
    // The close that arrives too late is a leftover, not a stranger.
    h.feed(Event::Closed {
        socket: s,
        code: Some(1000),
        reason: "late".into(),
    });
    assert_eq!(h.m.stats().unexpected_events, 0);
}

/// An answered close needs no discard: `Closed` ends the socket and the linger deadline with it.
#[test]
fn an_answered_close_ends_the_linger() {
    let mut h = H::new(keepalive_config());
    let s = h.establish_keepalive();
    h.feed(Event::Shutdown);
    h.feed(Event::Closed {
        socket: s,
        code: Some(1000),
        reason: "bye".into(),
    });
    assert!(h.m.is_finished());
    assert_eq!(h.m.poll_timeout(), None);
    h.advance(Duration::from_secs(5));
    assert_eq!(h.count(|a| matches!(a, Action::Discard { .. })), 0);
}

/// The connect timeout fires inside the same `handle` call that reports the attempt's own failure (the
/// driver saw the failure just after the deadline): the core orders them, the failure is a leftover, and
/// exactly one reconnect follows.
#[test]
fn a_connect_failure_queued_behind_its_timeout_is_a_leftover() {
    let mut h = H::new(keepalive_config());
    let (s, _, _) = h.pending_connect().unwrap();
    let deadline = h.m.poll_timeout().expect("connect timeout");
    h.now = deadline + Duration::from_millis(3);
    h.feed(Event::ConnectFailed {
        socket: s,
        status: None,
        retry_after: None,
        error: "connection refused".into(),
    });
    assert_eq!(
        h.count(|a| matches!(a, Action::Discard { socket } if *socket == s)),
        1
    );
    assert_eq!(h.count(|a| matches!(a, Action::ReconnectAfter(_))), 1);
    assert_eq!(h.m.stats().unexpected_events, 0);
    // Opened for it too (it opened just as we gave up): still a leftover.
    h.feed(Event::Opened { socket: s });
    assert_eq!(h.m.stats().unexpected_events, 0);
    assert_eq!(h.m.stats().connections_opened, 0);
}

/// A channel's `connectUri` comes from the server: an unencrypted one is refused with the same policy as
/// the configuration's URLs.
#[test]
fn one_scheme_policy_for_configured_and_server_given_urls() {
    assert!(genesys_keepalive::config::check_scheme("wss://x/y", false).is_ok());
    assert!(genesys_keepalive::config::check_scheme("https://x/y", false).is_ok());
    assert!(genesys_keepalive::config::check_scheme("ws://x/y", true).is_ok());
    let e = genesys_keepalive::config::check_scheme("ws://x/y", false).unwrap_err();
    assert!(e.contains("allow_insecure"), "{e}");
    let e = genesys_keepalive::config::check_scheme("ftp://x/y", true).unwrap_err();
    assert!(e.contains("not an http(s)"), "{e}");
}

/// The kinds of the actions not yet looked at, in order: `Http(<path end>)`, `Connect`, ….
fn kinds(h: &mut H) -> Vec<String> {
    h.take()
        .iter()
        .filter_map(|a| match a {
            Action::Http(r) => Some(format!("Http({})", r.url.rsplit('/').next().unwrap_or(""))),
            Action::Connect { .. } => Some("Connect".into()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_token_refreshed_between_channel_and_subscriptions_still_subscribes_before_the_socket() {
    // Found by running the split machine against the one before it: the token expired while the
    // channel was being created, so the subscriptions call waited for a fresh token, and the token's
    // answer opened the socket before the subscriptions were in place.
    let mut h = H::new(notifications_config());
    h.answer_ok(3_600); // token
    h.feed(Event::TokenExpired);
    let ch = h.pending_http();
    assert!(ch.url.ends_with("/channels"), "{}", ch.url);
    h.take();
    h.respond(
        &ch,
        200,
        r#"{"connectUri":"wss://streaming.mypurecloud.com/channels/ch-1","id":"ch-1"}"#,
        &[],
    );
    // The token asked for at TokenExpired goes first, then the subscriptions, then the socket.
    assert_eq!(kinds(&mut h), ["Http(token)"]);
    let tok = h.log.iter().rev().find_map(|(_, a)| match a {
        Action::Http(r) => Some(r.clone()),
        _ => None,
    });
    h.respond(
        &tok.expect("the token request"),
        200,
        r#"{"access_token":"tok-2-abcdef","expires_in":3600}"#,
        &[],
    );
    assert_eq!(kinds(&mut h), ["Http(subscriptions)"]);
    let sub = h.log.iter().rev().find_map(|(_, a)| match a {
        Action::Http(r) => Some(r.clone()),
        _ => None,
    });
    h.respond(
        &sub.expect("the subscriptions request"),
        200,
        r#"{"entities":[]}"#,
        &[],
    );
    assert_eq!(kinds(&mut h), ["Connect"]);
}

#[test]
fn a_handshake_refused_with_401_waits_for_the_fresh_token_even_behind_another_call() {
    // Found the same way: during a rollover a 401 handshake asks for a token, but a call already in
    // flight (topics the application added) answered first, and its answer opened the next socket
    // with no fresh token.
    let mut h = H::new(notifications_config());
    let old = h.establish_notifications();
    h.frame(
        old,
        r#"{"topicName":"v2.system.socket_closing","eventBody":{"message":"closing"}}"#,
    );
    h.answer_ok(3_600); // the new channel
    h.answer_ok(3_600); // its subscriptions
    let (next, _, _) = h.pending_connect().expect("the rollover's socket");
    h.feed(Event::Subscribe {
        topics: vec!["v2.users.u2.presence".into()],
    });
    let add = h.pending_http();
    assert!(add.url.ends_with("/subscriptions"), "{}", add.url);
    h.take();
    h.feed(Event::ConnectFailed {
        socket: next,
        status: Some(401),
        retry_after: None,
        error: "HTTP 401".into(),
    });
    assert_eq!(
        kinds(&mut h),
        Vec::<String>::new(),
        "the token waits behind the call in flight"
    );
    h.respond(&add, 200, r#"{"entities":[]}"#, &[]);
    assert_eq!(
        kinds(&mut h),
        ["Http(token)"],
        "no socket before the fresh token"
    );
    let tok = h.log.iter().rev().find_map(|(_, a)| match a {
        Action::Http(r) => Some(r.clone()),
        _ => None,
    });
    h.respond(
        &tok.expect("the token request"),
        200,
        r#"{"access_token":"tok-9-abcdef","expires_in":3600}"#,
        &[],
    );
    assert_eq!(kinds(&mut h), ["Connect"]);
}

#[test]
fn send_success_audits_can_be_turned_off_and_nothing_else_goes_with_them() {
    let run = |audit_send_success: bool| {
        let mut config = keepalive_config();
        config.audit_send_success = audit_send_success;
        let mut h = H::new(config);
        let s = h.establish_keepalive();
        // No acks: heartbeats go out, then the peer is declared dead.
        h.advance(Duration::from_secs(60));
        let audits =
            |event: AuditEvent| h.count(|a| matches!(a, Action::Audit(e) if e.event == event));
        let sent = h.heartbeats(s).len();
        (
            sent,
            audits(AuditEvent::SendSuccess),
            audits(AuditEvent::DeadPeer),
            h.m.stats().frames_sent,
        )
    };
    let (sent_on, successes_on, dead_on, frames_on) = run(true);
    let (sent_off, successes_off, dead_off, frames_off) = run(false);
    assert!(sent_on >= 2, "heartbeats were written: {sent_on}");
    assert_eq!(
        successes_on, sent_on,
        "one SEND_SUCCESS per heartbeat by default"
    );
    assert_eq!(successes_off, 0);
    assert_eq!(
        (sent_off, frames_off),
        (sent_on, frames_on),
        "the same heartbeats, counted"
    );
    assert!(dead_on >= 1);
    assert_eq!(dead_off, dead_on, "other audits still come");
}

/// Karn's rule for id-less pongs: with two heartbeats outstanding, a pong could answer either, so it
/// counts as an answer but gives no RTT sample. Timed from the oldest (a lost first probe), it read as
/// the whole wait between the two heartbeats and turned a healthy connection DEGRADED (the simulated
/// week's seed 2129462009, in its last fault-free hour).
#[test]
fn an_ambiguous_pong_counts_as_answered_but_is_not_timed() {
    let mut h = H::new(notifications_config());
    let s = h.establish_notifications();
    assert_eq!(h.heartbeats(s).len(), 1, "the first heartbeat goes on open");
    // The first is lost: the next heartbeat goes while it is still outstanding.
    while h.heartbeats(s).len() < 2 {
        let next = h.m.poll_timeout().expect("a heartbeat is due");
        h.advance(next.saturating_duration_since(h.now));
    }
    let (first, second) = (h.heartbeats(s)[0].0, h.heartbeats(s)[1].0);
    assert!(
        second - first >= Duration::from_millis(2_000),
        "the second heartbeat {:?} after the first",
        second - first
    );
    assert!(
        second - first < h.m.config().ack_timeout,
        "both are outstanding"
    );
    h.advance(Duration::from_millis(200));
    h.frame(s, PONG);
    let st = h.m.stats();
    assert_eq!(st.heartbeats_acked, 1, "the pong answers one heartbeat");
    assert_eq!(st.rtt_samples, 0, "but which one is unknown: no RTT sample");
    assert_eq!(st.rtt_histogram.count(), 0);
    assert_eq!(st.state, State::Stable, "the first answer makes it stable");
    let slow = |a: &Action| matches!(a, Action::Alert(al) if al.event == AlertEvent::LatencyThresholdExceeded);
    assert_eq!(h.count(slow), 0, "no latency alert from a guess");
    // With one heartbeat outstanding the next pong is timed again.
    while h.heartbeats(s).len() < 3 {
        let next = h.m.poll_timeout().expect("a heartbeat is due");
        h.advance(next.saturating_duration_since(h.now));
    }
    h.advance(Duration::from_millis(150));
    h.frame(s, PONG);
    let st = h.m.stats();
    assert_eq!(st.rtt_samples, 1);
    assert!(
        (149.0..=151.0).contains(&st.avg_latency_ms),
        "{}",
        st.avg_latency_ms
    );
    assert_eq!(st.state, State::Stable);
}
