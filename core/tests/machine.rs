//! Behaviours of the machine beyond the seed's defects.

mod common;

use std::time::Duration;

use common::*;
use genesys_keepalive::{Action, Event};

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
