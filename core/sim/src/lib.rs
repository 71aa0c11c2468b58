//! # genesys-keepalive-sim
//!
//! Simulated time for [`genesys_keepalive`]: the same [`KeepAliveMachine`] the drivers run, played
//! against a simulated Genesys gateway on a virtual clock, so a day of keep-alive takes milliseconds and a
//! seed replays a run exactly.
//!
//! - [`run`] plays a [`Scenario`] (a config, a gateway, a schedule of [`Fault`]s) and returns a
//!   [`SimReport`]: the trace, the machine's [`Stats`](genesys_keepalive::Stats) and a [`Summary`] of the
//!   timing claims (heartbeat gaps, reconnect delays, lost and duplicated notifications).
//! - [`genesys`] is the one model of the Genesys REST API both answer the machine with.
//! - [`check`] holds the invariant checker and the fuzz harness the fuzz targets and the randomized tests
//!   use.
//!
//! ## Testing your own configuration
//! Build your [`Config`](genesys_keepalive::Config) as in production, and [`Scenario::for_config`] points
//! it at the simulated gateway (endpoints and credentials; every interval and threshold stays yours):
//!
//! ```
//! use std::time::{Duration, Instant};
//! use genesys_keepalive::{Config, IntervalMatrix, Secret, State};
//! use genesys_keepalive_sim::{self as sim, Fault, Scenario};
//!
//! let mine = Config::builder()
//!     .credentials("my-client", Secret::new("my-secret".to_owned()))
//!     .topic("v2.users.me.presence")
//!     .interval_matrix(IntervalMatrix {
//!         stable: Duration::from_secs(20),
//!         degraded: Duration::from_secs(15),
//!         reconnecting: Duration::from_secs(15),
//!     })
//!     .build()?;
//! let mut scenario = Scenario::for_config(mine, 7, Duration::from_secs(3600));
//! scenario.faults.push((Duration::from_secs(600), Fault::Blackhole));
//! let report = sim::run(&scenario, Instant::now());
//! // The silent peer is noticed, and the connection comes back.
//! assert_eq!(report.stats.dead_peers, 1);
//! assert_eq!(report.summary.final_state, State::Stable);
//! // An interval apart (20 s), plus once at most a tenth of it (joining the shared heartbeat phase).
//! assert!(report.summary.max_heartbeat_gap <= Duration::from_secs(23));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`KeepAliveMachine`]: genesys_keepalive::KeepAliveMachine
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod agenda;
pub mod check;
mod gaps;
pub mod genesys;
mod hash;
mod simulator;

pub use simulator::{
    run, Fault, GatewaySpec, Scenario, SimReport, Summary, TraceEntry, RATE_LIMIT_RETRY_AFTER,
    STALE_EVENTS,
};

use genesys_keepalive::frames::PING_FRAME;
use genesys_keepalive::Event;

/// `Debug` of an event, with an HTTP body shown as text (the checker's transcript and the simulator's
/// trace).
pub fn describe_event(event: &Event) -> String {
    match event {
        Event::HttpResponse(r) => format!(
            "HttpResponse {{ request: {}, status: {}, headers: {:?}, body: {:?} }}",
            r.request.0,
            r.status,
            r.headers,
            String::from_utf8_lossy(&r.body)
        ),
        other => format!("{other:?}"),
    }
}

/// True for a frame the machine sends as a heartbeat (either profile).
pub fn is_heartbeat(text: &str) -> bool {
    text == PING_FRAME || text.contains("KEEP_ALIVE")
}
