//! A simulated week of a fleet: 1,000 independent connections (one machine each, each with its own seed),
//! 7 simulated days each, under a seeded schedule of every fault the simulator injects (blackholes,
//! outages, resets, latency spikes, heartbeat loss, `socket_closing`, token revocation, channel loss,
//! garbage frames, 429 storms, token endpoint outages (503 and hangs), suspended clients (`now` jumps
//! forward), stale timestamps (`now` goes backwards) and gateway wall-clock jumps), with the invariant
//! checker on every event and action.
//!
//! Asserted for every machine: no invariant broken, every notification not delivered inside a gap the
//! machine reported (`Summary::outside_gaps == 0`), nothing duplicated, never gave up, and healthy at the
//! end (the last hour is fault-free).
//!
//! A failing machine prints the one command that replays it alone, with its trace tail:
//! `SIM_SEED=<seed> cargo test --release -p genesys-keepalive-sim --test week -- --include-ignored --exact
//! fleet_week --nocapture`. (Unoptimised builds ignore this test: run it with `--release`.)
//! `WEEK_MACHINES=<n>` runs a smaller fleet (the default is 1,000).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use genesys_keepalive::rng::Rng;
use genesys_keepalive::{ProfileKind, State};
use genesys_keepalive_sim::{self as sim, Fault, Scenario, SimReport};

const MACHINES: u64 = 1_000;
const WEEK: Duration = Duration::from_secs(7 * 24 * 3600);
/// No fault starts in the last hour: every machine must be healthy again by the end.
const QUIET_END: Duration = Duration::from_secs(3600);
/// The fleet's seeds are `FLEET_SEED + i`.
const FLEET_SEED: u64 = 0x7eed_0000;

const MIN: u64 = 60;
const HOUR: u64 = 3600;

/// A seconds value in `[lo, hi]`.
fn secs(rng: &mut Rng, lo: u64, hi: u64) -> Duration {
    Duration::from_secs(lo + rng.below_or_equal(hi - lo))
}

/// One fault of any kind the simulator knows, with seeded parameters.
fn random_fault(rng: &mut Rng) -> Fault {
    match rng.below_or_equal(14) {
        0 | 1 => Fault::Blackhole,
        2 => Fault::Outage(secs(rng, 5, 10 * MIN)),
        3 => Fault::Reset,
        4 => Fault::SocketClosing,
        5 => Fault::LatencySpike {
            latency: Duration::from_millis(200 + rng.below_or_equal(9_800)),
            duration: secs(rng, 10, 10 * MIN),
        },
        6 => Fault::ExpireTokens,
        7 => Fault::ChannelGone,
        8 => Fault::Garbage,
        9 => Fault::RateLimit(secs(rng, 5, 5 * MIN)),
        10 => Fault::TokenOutage {
            duration: secs(rng, MIN, 15 * MIN),
            timeout: rng.below_or_equal(1) == 1,
        },
        11 => Fault::Suspend(secs(rng, 1, 10 * MIN)),
        12 => Fault::StaleClock(secs(rng, 1, HOUR)),
        // Up to a day either way.
        _ => Fault::WallClockJump(rng.below_or_equal(2 * 24 * HOUR) as i64 - (24 * HOUR) as i64),
    }
}

/// Machine `seed`'s week: its profile, network and fault schedule all follow from the seed.
fn scenario(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed);
    let mut sc = if rng.below_or_equal(3) == 0 {
        Scenario::keepalive_frame(seed, WEEK)
    } else {
        Scenario::notifications(seed, WEEK)
    };
    // A fleet that must stay up for a week never gives up on its connection.
    sc.config.max_reconnect_attempts = u32::MAX;
    // Notifications for the notifications profile (the keepalive-frame one subscribes to no topic).
    if sc.config.profile == ProfileKind::Notifications {
        sc.publish_every = Some(Duration::from_secs(5 * MIN));
    }
    sc.record_trace = false;
    sc.check = std::env::var_os("WEEK_NO_CHECK").is_none();
    sc.gateway.loss = [0.0, 0.0, 0.01, 0.05][rng.below_or_equal(3) as usize];
    sc.gateway.latency = Duration::from_millis(5 + rng.below_or_equal(150));
    sc.gateway.jitter = Duration::from_millis(rng.below_or_equal(50));
    // A fault every 1 to 5 hours: 30 to 170 in the week.
    let mut at = secs(&mut rng, 10 * MIN, 5 * HOUR);
    while at < WEEK - QUIET_END {
        let fault = random_fault(&mut rng);
        sc.faults.push((at, fault));
        at += secs(&mut rng, HOUR, 5 * HOUR);
    }
    sc
}

/// Why machine `seed`'s week failed, if it did.
fn verdict(sc: &Scenario, r: &SimReport) -> Option<String> {
    let s = &r.summary;
    if let Some(v) = &r.violation {
        return Some(format!("invariant broken: {v}"));
    }
    // Every notification not delivered must lie inside a gap the machine reported.
    if s.outside_gaps > 0 || s.duplicated > 0 {
        return Some(format!(
            "{} undelivered outside every reported gap (lost {:?}), {} duplicated, of {} published",
            s.outside_gaps, s.lost_seqs, s.duplicated, s.published
        ));
    }
    if let Some(reason) = &s.stopped {
        return Some(format!("stopped ({reason:?}) at {:?}", s.stopped_at));
    }
    if s.final_state != State::Stable {
        return Some(format!("ended {} instead of stable", s.final_state));
    }
    if sc.config.profile == ProfileKind::Notifications && s.delivered == 0 {
        return Some("delivered nothing in a week".into());
    }
    None
}

#[derive(Default)]
struct Totals {
    faults: u64,
    /// Machines on the notifications profile (nothing is published to the keepalive-frame ones).
    notification_machines: u64,
    published: u64,
    delivered: u64,
    unreachable: u64,
    lost_in_gaps: u64,
    gaps: u64,
    gap_time: Duration,
    reconnects: u64,
    dead_peers: u64,
    rollovers: u64,
    clock_regressions: u64,
    heartbeats: u64,
    max_heartbeat_gap: Duration,
    max_detection: Duration,
}

impl Totals {
    fn add(&mut self, sc: &Scenario, r: &SimReport) {
        self.faults += sc.faults.len() as u64;
        if sc.config.profile == ProfileKind::Notifications {
            self.notification_machines += 1;
        }
        self.published += r.summary.published;
        self.delivered += r.summary.delivered;
        self.unreachable += r.summary.unreachable;
        self.lost_in_gaps += r.summary.lost;
        self.gaps += r.summary.gaps;
        self.gap_time += r.summary.gap_time;
        self.reconnects += r.stats.reconnects;
        self.dead_peers += r.stats.dead_peers;
        self.rollovers += r.stats.rollovers;
        self.clock_regressions += r.stats.clock_regressions;
        self.heartbeats += r.stats.heartbeats_sent;
        self.max_heartbeat_gap = self.max_heartbeat_gap.max(r.summary.max_heartbeat_gap);
        let detection = r.summary.dead_peer_detection.iter().max().copied();
        self.max_detection = self.max_detection.max(detection.unwrap_or_default());
    }
}

fn replay_command(seed: u64) -> String {
    format!(
        "SIM_SEED={seed} cargo test --release -p genesys-keepalive-sim --test week -- --include-ignored \
         --exact fleet_week --nocapture"
    )
}

/// Replays one machine with its trace and prints the end of it.
fn replay(seed: u64) {
    let mut sc = scenario(seed);
    sc.record_trace = true;
    let r = sim::run(&sc, Instant::now());
    println!("seed {seed}: {} faults: {:?}", sc.faults.len(), sc.faults);
    // Around the first lost notification, else the end.
    let lost_at = r.summary.lost_seqs.first().map(|(_, at)| *at);
    let at = lost_at
        .and_then(|t| r.trace.iter().position(|e| e.at >= t))
        .unwrap_or(r.trace.len());
    let (from, to) = (at.saturating_sub(60), (at + 60).min(r.trace.len()));
    for e in &r.trace[from..to] {
        println!("+{:>12} ms {}", e.at.as_millis(), e.what);
    }
    // And the end, where a machine that ended unhealthy shows why.
    if to < r.trace.len() {
        println!("...");
        for e in &r.trace[r.trace.len().saturating_sub(60).max(to)..] {
            println!("+{:>12} ms {}", e.at.as_millis(), e.what);
        }
    }
    println!("summary: {:?}", r.summary);
    if let Some(why) = verdict(&sc, &r) {
        panic!("seed {seed}: {why}");
    }
}

#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "a week of 1,000 machines needs an optimised build: \
              cargo test --release -p genesys-keepalive-sim --test week -- --include-ignored"
)]
fn fleet_week() {
    if let Some(seed) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return replay(seed);
    }
    let machines = std::env::var("WEEK_MACHINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(MACHINES);
    let next = AtomicU64::new(0);
    let totals = Mutex::new(Totals::default());
    let failures = Mutex::new(Vec::new());
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= machines {
                    break;
                }
                let seed = FLEET_SEED + i;
                let sc = scenario(seed);
                let r = sim::run(&sc, Instant::now());
                totals.lock().unwrap().add(&sc, &r);
                if let Some(why) = verdict(&sc, &r) {
                    failures.lock().unwrap().push((seed, why));
                }
            });
        }
    });
    let t = totals.into_inner().unwrap();
    println!(
        "week: {machines} machines ({} notifications, the rest keepalive-frame) x 7 simulated days in \
         {:.1} s on {threads} threads; {} faults; published {}, delivered {}, unreachable (no subscribed socket) {}, undelivered (all inside reported gaps) {}; {} gaps reported, {} s in all; reconnects {}, dead peers {}, \
         rollovers {}, clock regressions {}, heartbeats {}; longest heartbeat gap {} ms, slowest dead-peer \
         detection {} ms",
        t.notification_machines,
        started.elapsed().as_secs_f64(),
        t.faults,
        t.published,
        t.delivered,
        t.unreachable,
        t.lost_in_gaps,
        t.gaps,
        t.gap_time.as_secs(),
        t.reconnects,
        t.dead_peers,
        t.rollovers,
        t.clock_regressions,
        t.heartbeats,
        t.max_heartbeat_gap.as_millis(),
        t.max_detection.as_millis(),
    );
    let mut failures = failures.into_inner().unwrap();
    failures.sort();
    for (seed, why) in &failures {
        eprintln!("seed {seed}: {why}\n  replay: {}", replay_command(*seed));
    }
    assert!(
        failures.is_empty(),
        "{} of {machines} machines failed their week (replay commands above)",
        failures.len()
    );
}
