//! # genesys-keepalive
//!
//! A sans-IO keep-alive core for Genesys Cloud WebSockets: application heartbeats, dead-peer detection,
//! latency and loss tracking, OAuth token refresh, reconnection with jittered backoff, planned-close
//! rollover without losing a notification, audit entries and alerts.
//!
//! [`KeepAliveMachine`] does no IO, reads no clock and draws no OS randomness: time comes in as arguments,
//! randomness from a seed. A driver (tokio, async-std, or the simulator in the `genesys-keepalive-sim`
//! crate) performs its [`Action`]s and reports what happened as [`Event`]s.
//!
//! ## Reading the source, in the order an event travels
//! 1. `event.rs`: the [`Event`]s a driver reports and the [`Action`]s it performs (ids in `ids.rs`).
//! 2. `machine/mod.rs`: [`KeepAliveMachine::handle`] fires the due timers (`timers.rs`), then dispatches
//!    the event to the concern it belongs to.
//! 3. One file per concern in `machine/`: `setup.rs` (token → channel → subscriptions → socket, one
//!    explicit state in `setup_state.rs`), `reconnect.rs` (backoff, rollover), `heartbeat.rs` (heartbeats, acks, RTT, dead
//!    peer), `inbound.rs` (what a frame means, via `frames.rs`), `rest.rs` (requests and answers, via
//!    `rest_call.rs` and `http.rs`), `sockets.rs` (closing and discarded sockets).
//! 4. `machine/records.rs`: every decision leaves as an [`Action`] on one queue (audit entries, alerts
//!    and state changes included), drained by [`KeepAliveMachine::poll_action`].
//!
//! Around it: `config.rs` (validated once, at `new`), `state.rs`, `stats.rs`, and the small pure parts
//! (`backoff.rs`, `latency.rs`, `token.rs`, `time.rs`, `rng.rs`, `histogram.rs`).
//!
//! ## The run loop
//! After **every** input, drain the actions, then sleep until [`KeepAliveMachine::poll_timeout`] and feed an
//! [`Event::Tick`]:
//!
//! ```
//! use std::time::{Duration, Instant, SystemTime};
//! use genesys_keepalive::{Action, Config, Event, KeepAliveMachine, ProfileKind};
//!
//! let config = Config::builder()
//!     .profile(ProfileKind::KeepaliveFrame)
//!     .url("wss://gateway.example.com/ws")
//!     .build()?;
//! let mut now = Instant::now();
//! let mut machine = KeepAliveMachine::new(config, now, SystemTime::now(), 7)?;
//! let mut socket = None;
//! for _ in 0..3 {
//!     while let Some(action) = machine.poll_action() {
//!         match action {
//!             Action::Connect { socket: id, .. } => socket = Some(id), // open it, then report Opened
//!             Action::SendFrame { socket, frame, text } => {
//!                 assert!(text.contains("KEEP_ALIVE"));
//!                 // write it, then report it written:
//!                 machine.handle(now, Event::SendCompleted { socket, frame });
//!             }
//!             _ => {} // Http, Close, Audit, Alert, Deliver, StateChanged, ReconnectAfter, Stopped
//!         }
//!     }
//!     if let Some(id) = socket.take() {
//!         machine.handle(now, Event::Opened { socket: id });
//!         continue;
//!     }
//!     let deadline = machine.poll_timeout().expect("a heartbeat is always scheduled");
//!     now = deadline; // sleep until then
//!     machine.handle(now, Event::Tick);
//! }
//! assert!(machine.stats().heartbeats_sent >= 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Drain order
//! Actions come out in the order the machine decided them. Within one `handle` call, due timers fire first
//! (oldest deadline first), then the event itself is processed.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
#![warn(clippy::too_many_lines)]

// What an application or a driver uses: the root re-exports below, plus `config::check_scheme`,
// `http::parse_retry_after` and the wire format in `frames`.
pub mod config;
pub mod frames;
pub mod http;

mod event;
mod gap;
mod histogram;
mod ids;
mod latency;
mod machine;
mod region;
mod secret;
mod state;
mod stats;
mod token;

// Building blocks only the core's own tests, benches and the simulator crate reach for: not API.
#[doc(hidden)]
pub mod backoff;
#[doc(hidden)]
pub mod rng;
#[doc(hidden)]
pub mod time;
#[doc(hidden)]
pub mod timers;

pub use config::{Config, ConfigBuilder, ConfigError, IntervalMatrix, ProfileKind, Violation};
pub use event::{
    Action, Alert, AlertEvent, AlertMetrics, AuditEntry, AuditEvent, Event, Notification,
    StopReason,
};
pub use gap::{Gap, GapReason};
pub use histogram::Histogram;
pub use http::{Headers, HttpRequest, HttpResponse, Method};
pub use ids::{FrameId, RequestId, SocketId};
pub use machine::{
    KeepAliveMachine, CHANNEL_LIFETIME, CLOSE_CONNECT_TIMEOUT, CLOSE_DEAD_PEER, CLOSE_ROLLOVER,
    CLOSE_SEND_FAILED,
};
pub use region::{Region, UnknownRegion, REGIONS};
pub use secret::Secret;
pub use state::State;
pub use stats::Stats;
