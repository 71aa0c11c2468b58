//! Benchmarks for the sans-IO core: `handle(Tick)`, `handle(ack)`, the heartbeat frame, one simulated day.
//!
//! Run: `cargo bench -p genesys-keepalive --bench machine` (see BENCHMARKS.md for what each figure means).
//!
//! Timing conventions:
//! - Benchmarks named `.../per_iter` need fresh state before every measured call (a heartbeat must be
//!   outstanding for an ack to match it, a heartbeat timer must be due for a tick to send). They time each
//!   call on its own with `Instant::now()` around it, so they carry the clock-read overhead measured by
//!   `breakdown/instant_pair_overhead` (subtract it for the net figure). Setup (advancing time, emitting and
//!   completing the heartbeat, allocating the ack's `String`) is outside the timed region; the drop of the
//!   consumed `Event` (freeing the frame text) happens inside `handle` and is counted. Actions the call
//!   produced are drained and dropped outside the timed region.
//! - `heartbeat_cycle/*` time a whole round (tick that sends + `SendCompleted` + the ack), with no
//!   per-iteration clock reads: everything is counted, including the driver-side allocation of the ack text
//!   and the drop of every action. It cross-checks the per-iteration figures.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use genesys_keepalive::frames::{self, IntervalInfo, KeepAlivePayload, SizeDirective};
use genesys_keepalive::time::WallClock;
use genesys_keepalive::timers::{Timer, TimerTable};
use genesys_keepalive::{Action, Event, ProfileKind, State};
use genesys_keepalive_sim::{self as sim, Scenario};

mod common;
use common::{profile_name, proto, Driver, PONG, PROFILES, RTT};

fn bench_handle_tick(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle_tick");
    for profile in PROFILES {
        // No timer due: the common case of a spurious or early wake-up.
        let mut d = Driver::established(profile, 200);
        let now = d.now + Duration::from_millis(1);
        assert!(d.m.poll_timeout().expect("running") > now);
        g.bench_function(BenchmarkId::new("idle", profile_name(profile)), |b| {
            b.iter(|| d.m.handle(black_box(now), Event::Tick))
        });
        assert!(d.m.poll_action().is_none(), "an idle tick emits nothing");

        // Heartbeat due, timed alone: the tick that builds the frame and emits SendFrame. Only ticks that
        // sent a heartbeat and nothing else count (once a simulated day the resubscription or token refresh
        // falls due on the same tick: those samples are dropped).
        let mut d = Driver::established(profile, 200);
        g.bench_function(
            BenchmarkId::new("heartbeat_due/per_iter", profile_name(profile)),
            |b| {
                let mut taken: Vec<Action> = Vec::with_capacity(64);
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut n = 0;
                    while n < iters {
                        let at = d.m.poll_timeout().expect("running");
                        d.now = at;
                        let t0 = Instant::now();
                        d.m.handle(black_box(at), Event::Tick);
                        let dt = t0.elapsed();
                        taken.extend(std::iter::from_fn(|| d.m.poll_action()));
                        let sent = taken.iter().any(|a| matches!(a, Action::SendFrame { .. }));
                        let rest = taken.iter().any(|a| matches!(a, Action::Http(_)));
                        taken.drain(..).for_each(|a| d.respond(a));
                        d.pump();
                        if sent {
                            if !rest {
                                total += dt;
                                n += 1;
                            }
                            d.ack();
                        }
                    }
                    total
                })
            },
        );

        // Heartbeat due, timed with the driver's report: Tick + take SendFrame + SendCompleted (which
        // writes the SEND_SUCCESS audit entry). Actions are moved out in the timed region, dropped outside.
        let mut d = Driver::established(profile, 200);
        g.bench_function(
            BenchmarkId::new(
                "heartbeat_due_and_send_completed/per_iter",
                profile_name(profile),
            ),
            |b| {
                let mut taken: Vec<Action> = Vec::with_capacity(64);
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    let mut n = 0;
                    while n < iters {
                        let at = d.m.poll_timeout().expect("running");
                        d.now = at;
                        let socket = d.socket();
                        let t0 = Instant::now();
                        d.m.handle(black_box(at), Event::Tick);
                        let mut sent = false;
                        while let Some(a) = d.m.poll_action() {
                            if let Action::SendFrame { frame, .. } = &a {
                                if !sent {
                                    sent = true;
                                    d.m.handle(
                                        at,
                                        Event::SendCompleted {
                                            socket,
                                            frame: *frame,
                                        },
                                    );
                                }
                            }
                            taken.push(a);
                        }
                        let dt = t0.elapsed();
                        let rest = taken.iter().any(|a| matches!(a, Action::Http(_)));
                        for a in taken.drain(..) {
                            match a {
                                // Already reported written above.
                                Action::SendFrame { text, .. } => d.last_heartbeat = Some(text),
                                other => d.respond(other),
                            }
                        }
                        d.pump();
                        if sent {
                            if !rest {
                                total += dt;
                                n += 1;
                            }
                            d.ack();
                        }
                    }
                    total
                })
            },
        );
    }
    g.finish();
}

fn bench_handle_ack(c: &mut Criterion) {
    let mut g = c.benchmark_group("handle_ack");
    for profile in PROFILES {
        let name = match profile {
            ProfileKind::Notifications => "pong/per_iter",
            ProfileKind::KeepaliveFrame => "keep_alive_ack_seq/per_iter",
        };
        let mut d = Driver::established(profile, 200);
        g.bench_function(BenchmarkId::new(name, profile_name(profile)), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Untimed: a real outstanding heartbeat (emitted and reported written), the ack's text.
                    d.emit_heartbeat();
                    let text = d.ack_text();
                    d.now += RTT;
                    let socket = d.socket();
                    let now = d.now;
                    let t0 = Instant::now();
                    d.m.handle(black_box(now), Event::FrameReceived { socket, text });
                    total += t0.elapsed();
                    d.pump();
                }
                total
            })
        });
    }
    g.finish();
}

fn bench_heartbeat_cycle(c: &mut Criterion) {
    let mut g = c.benchmark_group("heartbeat_cycle");
    for profile in PROFILES {
        let mut d = Driver::established(profile, 200);
        let socket = d.socket();
        // The seq of the last heartbeat (keepalive-frame); each heartbeat carries the next one.
        let mut seq = match profile {
            ProfileKind::Notifications => 0,
            ProfileKind::KeepaliveFrame => {
                let hb = d.last_heartbeat.as_deref().expect("a heartbeat was sent");
                let v: serde_json::Value = serde_json::from_str(hb).expect("JSON heartbeat");
                v["seq"].as_u64().expect("seq")
            }
        };
        g.bench_function(profile_name(profile), |b| {
            b.iter(|| {
                // One whole heartbeat round as a driver runs it, every allocation and drop included.
                let at = d.m.poll_timeout().expect("running");
                d.now = at;
                d.m.handle(at, Event::Tick);
                let mut sent = false;
                while let Some(a) = d.m.poll_action() {
                    match a {
                        Action::SendFrame { frame, .. } => {
                            sent = true;
                            seq += 1;
                            d.m.handle(at, Event::SendCompleted { socket, frame });
                        }
                        // A token refresh or resubscription (about once a simulated day): answer it.
                        other @ Action::Http(_) => d.respond(other),
                        _ => {}
                    }
                }
                d.pump();
                if sent {
                    d.now += RTT;
                    let text = match profile {
                        ProfileKind::Notifications => PONG.to_owned(),
                        ProfileKind::KeepaliveFrame => {
                            format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{seq}}}"#)
                        }
                    };
                    d.m.handle(d.now, Event::FrameReceived { socket, text });
                    while let Some(a) = d.m.poll_action() {
                        d.respond(a);
                    }
                    d.pump();
                }
            })
        });
        let st = d.m.stats();
        assert_eq!(st.heartbeats_lost, 0, "every heartbeat answered");
        assert_eq!(st.acks_unmatched, 0, "every ack matched");
        assert_eq!(d.m.state(), State::Stable);
    }
    g.finish();
}

fn payload(ts: u64, seq: u64) -> KeepAlivePayload<'static> {
    KeepAlivePayload {
        connection_id: "3f1c2a9e-5b7d-4e2f-9a1b-6c8d0e2f4a6b",
        kind: "KEEP_ALIVE",
        timestamp: ts,
        interval_matrix: IntervalInfo {
            current: 20_000,
            state: "STABLE",
            next_expected: ts + 20_000,
        },
        size_directive: SizeDirective {
            bytes: 0,
            max_allowed: 1024,
            compression: false,
        },
        seq,
    }
}

fn bench_heartbeat_frame(c: &mut Criterion) {
    let mut g = c.benchmark_group("heartbeat_build_validate_serialize");
    let mut seq = 0u64;
    // Timestamp given (as the machine does: it derives epoch ms from its `now` argument).
    g.bench_function("to_frame", |b| {
        b.iter(|| {
            seq += 1;
            payload(black_box(1_780_000_000_123), seq).to_frame(black_box(5_000))
        })
    });
    // Timestamp read from the system clock each time, as the seed's `Date.now()` does.
    g.bench_function("to_frame_with_clock", |b| {
        b.iter(|| {
            seq += 1;
            let ts = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(1);
            payload(ts, seq).to_frame(black_box(5_000))
        })
    });
    // Prototype of a suggested core change (bench-side, core/benches/common/proto.rs): the same frame,
    // byte for byte, written by hand.
    let reference = payload(1_780_000_000_123, 99).to_frame(5_000);
    assert_eq!(
        proto::frame(payload(1_780_000_000_123, 99), 5_000),
        reference
    );
    for s in [0, 9, 10, 99_999, u64::MAX] {
        assert_eq!(
            proto::frame(payload(1, s), 5_000),
            payload(1, s).to_frame(5_000)
        );
    }
    g.bench_function("prototype_hand_written", |b| {
        b.iter(|| {
            seq += 1;
            proto::frame(payload(black_box(1_780_000_000_123), seq), black_box(5_000))
        })
    });
    // Breakdown: one plain serde_json serialization of the same payload (to_frame does one, then patches
    // in the exact size).
    g.bench_function("breakdown_serialize_only", |b| {
        b.iter(|| serde_json::to_vec(&payload(black_box(1_780_000_000_123), 7)))
    });
    g.finish();
}

fn bench_breakdown(c: &mut Criterion) {
    let mut g = c.benchmark_group("breakdown");
    g.bench_function("instant_pair_overhead", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t0 = Instant::now();
                black_box(());
                total += t0.elapsed();
            }
            total
        })
    });
    g.bench_function("classify/pong", |b| {
        b.iter(|| frames::classify(ProfileKind::Notifications, black_box(PONG)))
    });
    let ack = r#"{"type":"KEEP_ALIVE_ACK","seq":4242}"#;
    g.bench_function("classify/keep_alive_ack_seq", |b| {
        b.iter(|| frames::classify(ProfileKind::KeepaliveFrame, black_box(ack)))
    });
    assert!(proto::classify_pong_borrowed(PONG));
    assert_eq!(proto::classify_ack_borrowed(ack), Some(Some(4242)));
    g.bench_function("classify/pong_prototype_borrowed", |b| {
        b.iter(|| proto::classify_pong_borrowed(black_box(PONG)))
    });
    g.bench_function("classify/keep_alive_ack_prototype_borrowed", |b| {
        b.iter(|| proto::classify_ack_borrowed(black_box(ack)))
    });
    // A fast path the core could put before the parse: the exact bytes Genesys sends for a pong.
    let received = PONG.to_owned();
    g.bench_function("classify/pong_exact_match_fast_path", |b| {
        b.iter(|| black_box(received.as_str()) == PONG)
    });
    let t0 = Instant::now();
    let wall = WallClock::new(t0, UNIX_EPOCH + Duration::from_secs(1_780_000_000));
    let at = t0 + Duration::from_millis(1_234_567);
    g.bench_function("audit_timestamp_iso8601", |b| {
        b.iter(|| wall.iso8601(black_box(at)))
    });
    g.bench_function("string_alloc_free_64B", |b| {
        b.iter(|| black_box(PONG).to_owned())
    });
    let mut table = TimerTable::default();
    for (i, t) in [
        Timer::Heartbeat,
        Timer::Idle,
        Timer::MinUptime,
        Timer::TokenRefresh,
        Timer::Resubscribe,
    ]
    .into_iter()
    .enumerate()
    {
        table.set(t, t0 + Duration::from_secs(10 + i as u64));
    }
    g.bench_function("timer_table_pop_due_none", |b| {
        b.iter(|| black_box(&mut table).pop_due(black_box(t0)))
    });
    g.finish();
}

fn bench_sim(c: &mut Criterion) {
    let mut g = c.benchmark_group("sim_24h");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(8));
    let day = Duration::from_secs(24 * 3600);
    let mut quiet = Scenario::notifications(42, day);
    quiet.record_trace = false;
    let mut publishing = quiet.clone();
    publishing.publish_every = Some(Duration::from_secs(60));
    // Sanity: the run is a healthy day (no loss, no stop), so the timing is of the normal path.
    for sc in [&quiet, &publishing] {
        let r = sim::run(sc, Instant::now());
        assert_eq!(r.summary.lost, 0);
        assert!(r.summary.stopped.is_none());
        assert!(
            r.stats.heartbeats_sent > 4000,
            "{}",
            r.stats.heartbeats_sent
        );
    }
    g.bench_function("notifications", |b| {
        b.iter(|| sim::run(black_box(&quiet), Instant::now()))
    });
    g.bench_function("notifications_publish_60s", |b| {
        b.iter(|| sim::run(black_box(&publishing), Instant::now()))
    });
    g.finish();
}

criterion_group!(
    benches,
    bench_handle_tick,
    bench_handle_ack,
    bench_heartbeat_cycle,
    bench_heartbeat_frame,
    bench_breakdown,
    bench_sim
);
criterion_main!(benches);
