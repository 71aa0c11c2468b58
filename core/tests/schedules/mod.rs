//! Seeded fault schedules for the simulator, shared by the gap and restart tests.
#![allow(dead_code)]

use std::time::Duration;

use genesys_keepalive::rng::Rng;
use genesys_keepalive_sim::{Fault, Scenario};

/// A number from the environment, or `default`.
pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One to four faults of every kind the simulator has, at random times in a 5-minute run.
pub fn random_schedule(seed: u64) -> Scenario {
    let mut rng = Rng::new(seed ^ 0x6a95);
    let mut below = move |n: u64| rng.below_or_equal(n - 1);
    let mut sc = Scenario::notifications(seed, Duration::from_secs(300));
    sc.publish_every = Some(Duration::from_millis(500));
    sc.gateway.jitter = Duration::from_millis(below(60));
    sc.gateway.loss = [0.0, 0.0, 0.05, 0.2][below(4) as usize];
    sc.gateway.socket_closing_grace = Duration::from_secs(1 + below(60));
    sc.gateway.token_lifetime = Duration::from_secs(60 + below(600));
    sc.record_trace = false;
    for _ in 0..1 + below(4) {
        let at = Duration::from_secs(20 + below(250));
        let fault = match below(8) {
            0 | 1 => Fault::Blackhole,
            2 => Fault::Outage(Duration::from_secs(1 + below(90))),
            3 => Fault::SocketClosing,
            4 => Fault::LatencySpike {
                latency: Duration::from_millis(100 + below(3_000)),
                duration: Duration::from_secs(1 + below(30)),
            },
            5 => Fault::ChannelGone,
            6 => Fault::ExpireTokens,
            _ => Fault::Garbage,
        };
        sc.faults.push((at, fault));
    }
    sc.faults.sort_by_key(|(at, _)| *at);
    sc
}
