//! A restarted process reports the restart as a gap: `resume_after` opens a `restart` window from the
//! previous process's checkpoint (`receiving_since`), reported once at the first confirmed socket, and
//! `receiving_since` is, at every moment, the start a window would need if the process died then.

mod common;
mod schedules;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use genesys_keepalive::rng::Rng;
use genesys_keepalive::{Action, Config, Event, Gap, GapReason, SocketId};
use genesys_keepalive_sim as sim;
use schedules::{env_or, random_schedule};

fn gaps(h: &H) -> Vec<Gap> {
    h.log
        .iter()
        .filter_map(|(_, a)| match a {
            Action::Gap(g) => Some(g.clone()),
            _ => None,
        })
        .collect()
}

/// The wall time of the harness's present.
fn wall_now(h: &H) -> SystemTime {
    h.m.wall_clock().at(h.now)
}

/// Token, channel, subscriptions, open; the probe sent at the opening answered at once.
fn establish(h: &mut H) -> SocketId {
    let s = h.establish_notifications();
    h.frame(s, PONG);
    s
}

/// The next heartbeat on `socket`, answered after `rtt`; returns when it was sent (wall time).
fn heartbeat_answered(h: &mut H, socket: SocketId, rtt: Duration) -> SystemTime {
    let before = h.heartbeats(socket).len();
    let mut waited = Duration::ZERO;
    while h.heartbeats(socket).len() == before {
        h.advance(Duration::from_millis(100));
        waited += Duration::from_millis(100);
        assert!(waited < Duration::from_secs(120), "no heartbeat came");
    }
    let (sent, _) = h.heartbeats(socket).last().cloned().unwrap();
    h.advance(rtt);
    h.frame(socket, PONG);
    h.m.wall_clock().at(h.start + sent)
}

#[test]
fn a_resumed_machine_reports_the_restart_once_from_since_to_the_confirmation() {
    let mut h = H::new(notifications_config());
    let since = H::wall() - Duration::from_secs(30);
    assert!(h.m.resume_after(since));
    assert_eq!(
        h.m.receiving_since(),
        Some(since),
        "a crash now owes it all"
    );
    h.advance(Duration::from_secs(2));
    let s = establish(&mut h);
    let confirmed = wall_now(&h);
    let g = gaps(&h);
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(g[0].reason, GapReason::Restart);
    assert_eq!(g[0].reason.as_str(), "restart");
    assert_eq!((g[0].from, g[0].to), (since, confirmed));
    assert_eq!(g[0].topics, [TOPIC]);
    let stats = h.m.stats();
    assert_eq!((stats.gaps, stats.gap_ms), (1, 32_000));
    assert_eq!(
        h.m.receiving_since(),
        Some(confirmed),
        "reported up to the confirmation: a crash now owes only what came after"
    );
    // A healthy minute later: still one gap, and the checkpoint follows the answered heartbeats.
    let mut last = confirmed;
    for _ in 0..3 {
        last = heartbeat_answered(&mut h, s, Duration::from_millis(40));
    }
    assert_eq!(gaps(&h).len(), 1);
    assert_eq!(h.m.receiving_since(), Some(last));
    assert!(!h.m.resume_after(since), "too late once a socket opened");
    assert_eq!(
        serde_json::to_string(&GapReason::Restart).unwrap(),
        "\"restart\""
    );
}

#[test]
fn without_resume_after_there_is_no_gap_and_nothing_is_owed_before_the_first_socket() {
    let mut h = H::new(notifications_config());
    assert_eq!(h.m.receiving_since(), None, "a fresh start owes nothing");
    h.advance(Duration::from_secs(1));
    establish(&mut h);
    assert!(gaps(&h).is_empty());
    assert_eq!(h.m.stats().gaps, 0);
    assert_eq!(h.m.receiving_since(), Some(wall_now(&h)));
}

#[test]
fn a_crash_mid_outage_carries_the_older_start() {
    let mut a = H::new(notifications_config());
    let s = establish(&mut a);
    let proved = heartbeat_answered(&mut a, s, Duration::from_millis(30));
    a.advance(Duration::from_secs(1));
    a.feed(Event::Closed {
        socket: s,
        code: Some(1006),
        reason: "reset".into(),
    });
    // Mid-outage: the window opened at the last proof of receiving, and it stays there.
    assert_eq!(a.m.receiving_since(), Some(proved));
    a.advance(Duration::from_millis(50));
    assert_eq!(a.m.receiving_since(), Some(proved));
    let checkpoint = a.m.receiving_since().unwrap();

    // The process dies here; the next one starts later with the checkpoint.
    let later = wall_now(&a) + Duration::from_secs(2);
    let mut b = H::with_wall(notifications_config(), 7, later);
    assert!(b.m.resume_after(checkpoint));
    // And dies too before it ever connects: what it would store is still the older start.
    assert_eq!(b.m.receiving_since(), Some(checkpoint));
    let mut c = H::with_wall(notifications_config(), 7, later + Duration::from_secs(5));
    assert!(c.m.resume_after(b.m.receiving_since().unwrap()));
    establish(&mut c);
    let g = gaps(&c);
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].reason, g[0].from), (GapReason::Restart, proved));
    assert_eq!(
        g[0].to,
        later + Duration::from_secs(5),
        "c's own clock: it confirmed at once"
    );
    assert!(g[0].from <= g[0].to);
}

#[test]
fn a_since_in_the_future_is_clamped_to_the_present() {
    let mut h = H::new(notifications_config());
    h.advance(Duration::from_secs(1));
    let resumed = wall_now(&h);
    assert!(h.m.resume_after(resumed + Duration::from_secs(3_600)));
    assert_eq!(h.m.receiving_since(), Some(resumed));
    h.advance(Duration::from_secs(2));
    establish(&mut h);
    let g = gaps(&h);
    assert_eq!(g.len(), 1, "the restart is still reported");
    assert_eq!((g[0].from, g[0].to), (resumed, wall_now(&h)));
    assert_eq!(g[0].duration(), Duration::from_secs(2));
}

#[test]
fn no_restart_window_without_gap_reports() {
    let no_topics = Config::builder()
        .credentials("client-1", genesys_keepalive::Secret::new(SECRET))
        .build()
        .expect("valid without topics");
    for config in [keepalive_config(), no_topics] {
        let keepalive = config.profile == genesys_keepalive::ProfileKind::KeepaliveFrame;
        let mut h = H::new(config);
        assert!(!h.m.resume_after(H::wall() - Duration::from_secs(60)));
        assert_eq!(h.m.receiving_since(), None);
        if !keepalive {
            h.answer_ok(86_399); // the token
            h.answer_ok(86_399); // the channel; no topics, no subscriptions
        }
        h.establish_keepalive();
        h.advance(Duration::from_secs(5));
        assert!(gaps(&h).is_empty());
        assert_eq!(h.m.stats().gaps, 0);
        assert_eq!(h.m.receiving_since(), None);
        h.feed(Event::Shutdown);
        assert_eq!(h.m.receiving_since(), None, "nothing at stake at the stop");
    }
}

#[test]
fn after_a_clean_stop_the_checkpoint_is_the_stop_less_the_wire_time() {
    let mut h = H::new(notifications_config());
    let s = establish(&mut h);
    let rtt = Duration::from_millis(80);
    for _ in 0..2 {
        heartbeat_answered(&mut h, s, rtt);
    }
    h.advance(Duration::from_millis(700));
    let stop = wall_now(&h);
    h.feed(Event::Shutdown);
    assert!(h.m.is_stopped());
    assert!(gaps(&h).is_empty(), "a clean shutdown is no gap");
    // The stop, less the largest round trip (the RTT histogram's p99 is a bucket's upper bound, so a
    // little more than the 80 ms measured): not the stop itself (frames then on the wire are not
    // delivered after it), not the last answered heartbeat (0.78 s earlier).
    let checkpoint = h.m.receiving_since().expect("something was at stake");
    assert!(
        stop - Duration::from_millis(250) <= checkpoint && checkpoint <= stop - rtt,
        "{checkpoint:?} vs the stop {stop:?}"
    );
    // The next process reports the restart from there.
    let mut next = H::with_wall(notifications_config(), 7, stop + Duration::from_secs(1));
    assert!(next.m.resume_after(h.m.receiving_since().unwrap()));
    establish(&mut next);
    assert_eq!(gaps(&next)[0].from, checkpoint);
}

#[test]
fn a_stop_before_the_first_socket_reports_the_restart_up_to_the_stop() {
    let mut h = H::new(notifications_config());
    let since = H::wall() - Duration::from_secs(10);
    h.m.resume_after(since);
    h.advance(Duration::from_secs(3));
    h.feed(Event::Shutdown);
    let g = gaps(&h);
    assert_eq!(g.len(), 1);
    assert_eq!(
        (g[0].reason, g[0].from, g[0].to),
        (GapReason::Restart, since, wall_now(&h))
    );
    assert_eq!(h.m.receiving_since(), Some(wall_now(&h)));
    assert_eq!(h.m.stats().gap_ms, 13_000);
}

#[test]
fn a_rollover_not_yet_proved_keeps_the_old_sockets_start() {
    let mut h = H::new(notifications_config());
    let old = establish(&mut h);
    let proved = heartbeat_answered(&mut h, old, Duration::from_millis(30));
    h.advance(Duration::from_secs(1));
    h.frame(
        old,
        r#"{"topicName":"v2.system.socket_closing","eventBody":{"message":"closing"}}"#,
    );
    h.answer_ok(3_600); // the new channel
    h.answer_ok(3_600); // its subscriptions
    let (next, _, _) = h.pending_connect().expect("the rollover's socket");
    h.advance(Duration::from_millis(200));
    h.feed(Event::Opened { socket: next });
    let opened = wall_now(&h);
    assert_eq!(
        h.m.receiving_since(),
        Some(proved),
        "the old socket has not proved it delivered up to the new one's opening"
    );
    // The drain's heartbeat (min_interval after the old socket's last) answered: the rollover completed.
    let pings = h.heartbeats(old).len();
    h.advance(Duration::from_secs(4));
    assert_eq!(h.heartbeats(old).len(), pings + 1, "the drain's heartbeat");
    assert_eq!(h.m.receiving_since(), Some(proved), "not answered yet");
    h.frame(old, PONG);
    assert!(gaps(&h).is_empty());
    assert_eq!(h.m.receiving_since(), Some(opened));
}

#[test]
fn the_same_inputs_give_the_same_restart() {
    let run = || {
        let mut h = H::with_seed(notifications_config(), 11);
        h.m.resume_after(H::wall() - Duration::from_millis(12_345));
        h.advance(Duration::from_millis(1_500));
        let s = establish(&mut h);
        heartbeat_answered(&mut h, s, Duration::from_millis(25));
        h.feed(Event::Closed {
            socket: s,
            code: None,
            reason: "gone".into(),
        });
        h.advance(Duration::from_secs(3));
        let checkpoint = h.m.receiving_since();
        (format!("{:?}", h.log), checkpoint)
    };
    let (a, b) = (run(), run());
    assert!(a.0.contains("Restart"), "the run reported the restart");
    assert_eq!(a, b);
}

/// A crash at any moment: the simulator's fault schedules (those of `gaps.rs`), each cut short at a random
/// moment as if the process died there. Every notification published after the first socket opened and
/// never delivered is inside a reported gap or after the checkpoint `receiving_since` held at that moment
/// (where the next process's restart gap starts), and the checkpoint is never in the future.
/// `RESTART_SCHEDULES=N` for more.
#[test]
fn a_crash_at_any_moment_leaves_nothing_undelivered_before_the_checkpoint() {
    let (first, count) = (
        env_or("RESTART_FIRST", 0),
        env_or("RESTART_SCHEDULES", 1_000),
    );
    let (mut owed, mut runs_owing) = (0, 0);
    for seed in first..first + count {
        let mut sc = random_schedule(seed);
        // The crash: anywhere from the first connect to the end of the schedule, to the millisecond.
        sc.duration = Duration::from_millis(1 + Rng::new(seed ^ 0xc7a5).below_or_equal(299_999));
        let r = sim::run(&sc, Instant::now());
        let s = &r.summary;
        assert_eq!(
            s.uncovered_at_crash, 0,
            "seed {seed}, crash at {:?}: undelivered notifications before the checkpoint {:?} and in no \
             gap; faults {:?}; {s:?}",
            sc.duration, s.crash_checkpoint, sc.faults
        );
        let end = UNIX_EPOCH + Duration::from_millis(1_780_000_000_000) + sc.duration;
        assert!(
            s.crash_checkpoint.is_none_or(|c| c <= end),
            "seed {seed}: a checkpoint in the future: {:?}",
            s.crash_checkpoint
        );
        if r.stats.connections_opened > 0 && s.stopped.is_none() {
            assert!(
                s.crash_checkpoint.is_some(),
                "seed {seed}: a connection that has opened owes a checkpoint"
            );
        }
        owed += s.owed_at_crash;
        runs_owing += u64::from(s.owed_at_crash > 0);
    }
    // Something was checked: many crashes left notifications that only the restart gap covers.
    assert!(
        runs_owing > count / 10,
        "only {runs_owing} of {count} crashes owed anything"
    );
    eprintln!(
        "{runs_owing} of {count} crashes owed {owed} notifications, all after the checkpoint"
    );
}
