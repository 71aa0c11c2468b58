//! Invariant checking, shared by the fuzz targets (`fuzz/`) and the randomized tests.
//!
//! - [`Checker`] watches every `(now, Event)` fed to a [`KeepAliveMachine`] and every [`Action`] drained
//!   from it, and reports the first broken invariant as a [`Violation`] (see [`Invariant`] for the list).
//! - [`FuzzHarness`] owns a machine, a checker and a virtual clock, and plays [`Op`]s against it: it
//!   remembers the ids the machine handed out (sockets, frames, requests, heartbeat `seq`s, tokens), so
//!   most ops are meaningful, while some deliberately use stale or bogus ids.
//!
//! ```
//! use genesys_keepalive_sim::check::{FuzzHarness, Op, TimeStep};
//! use genesys_keepalive::ProfileKind;
//! let mut h = FuzzHarness::new(ProfileKind::Notifications, 7);
//! for _ in 0..50 {
//!     h.step(Op::Progress).unwrap();
//! }
//! h.step(Op::Advance(TimeStep::Seconds(90))).unwrap();
//! h.step(Op::Shutdown).unwrap();
//! assert!(h.machine().is_stopped());
//! ```

use std::collections::{BTreeMap, VecDeque};

use sockets::{Phase, Sock, Sockets};
use window::Window;

use crate::hash::{FastMap, FastSet};
use std::fmt;
use std::time::{Duration, Instant};

use genesys_keepalive::backoff::Backoff;
use genesys_keepalive::{
    Action, AuditEvent, Config, Event, FrameId, Headers, HttpRequest, HttpResponse,
    KeepAliveMachine, ProfileKind, RequestId, SocketId, State, Stats,
};

pub use crate::describe_event;
pub use crate::is_heartbeat;
pub use harness::*;

mod harness;
mod sockets;
#[cfg(test)]
mod tests;
mod window;

/// The invariants a [`Checker`] enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Invariant {
    /// Never two connection attempts in flight: a `Connect` only when no other socket is pending (asked
    /// for, not yet reported `Opened`/`ConnectFailed`/`Closed`, not closed by the machine) and at most one
    /// is open (rollover: one pending + one active). After every `handle`: at most one pending and at most
    /// one open socket that the machine has not closed.
    OneConnectAttempt,
    /// Socket ids are fresh; frames go only to open sockets the machine has not closed; the machine closes
    /// a socket at most once and only sockets it asked for; once stopped, every socket is closed.
    SocketLifecycle,
    /// No two heartbeats on one socket closer than `min_interval`.
    HeartbeatSpacing,
    /// At most one `SendFrame` per socket awaiting its `SendCompleted`/`SendFailed`; frame ids are fresh.
    OneFrameInFlight,
    /// Every `ReconnectAfter(d)` has `d <= cap(attempt)` and `d <= backoff_max` (a handshake refusal's
    /// `Retry-After` may raise the bound to that value), and the next attempt (audit `CONNECT_ATTEMPT`)
    /// starts no earlier than `d` later.
    BackoffBounds,
    /// One reconnect per loss: no second `ReconnectAfter` before the attempt it announced has started.
    OneReconnect,
    /// Dead-peer detection: an open socket with no inbound frame for `max_idle` is closed by the machine
    /// by the first `handle` at or after that deadline.
    IdleTimeout,
    /// Heartbeats never stop: an open socket with no frame in flight gets a heartbeat at most the longest
    /// interval (and one step of the phase grid, a `heartbeat_phases`-th of it) after its last heartbeat,
    /// its last written frame, or its opening.
    HeartbeatCadence,
    /// No request or handshake carries a bearer token after its expiry, or one that was never issued.
    ExpiredToken,
    /// Close codes: never 1004, 1005, 1006 or 1015; only 1000-1014 or 3000-4999.
    CloseCode,
    /// Close reasons are at most 123 bytes.
    CloseReason,
    /// Nothing at all after `Stopped`; a stopped machine has emitted `Stopped` and has no timer.
    AfterStopped,
    /// `poll_timeout()` after a `handle` is never before that `handle`'s `now`: a past deadline is a timer
    /// that did not fire.
    TimerMissed,
    /// No audit entry, alert or stop reason contains the client secret or any access token issued.
    SecretLeak,
    /// Stats counters never decrease.
    StatsDecrease,
    /// One REST call in flight at a time (until answered, failed, or past its own timeout); ids are fresh.
    OneRestCall,
    /// `StateChanged { from, to }` chains (`from` is the previous `to`, `from != to`) and matches `state()`.
    StateConsistency,
    /// notifications profile: no notification is delivered twice within the dedup window (by correlation
    /// id, else by text).
    DuplicateDelivered,
    /// A gap report ends no earlier than it starts and no later than the machine's `now`, overlaps none of
    /// the gaps reported before it, comes only after a socket was once open, and names a topic.
    GapReport,
}

/// A broken invariant, with a message precise enough to find the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// Virtual time since the checker started.
    pub at: Duration,
    /// What happened.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} violated at +{} ms: {}",
            self.invariant,
            self.at.as_millis(),
            self.message
        )
    }
}

impl std::error::Error for Violation {}

#[derive(Debug, Clone)]
struct Req {
    sent_at: Instant,
    timeout: Duration,
    token: bool,
}

/// The counters of [`Stats`] (gauges left out): their names, and a function reading their values in that
/// order (values only, so that the per-handle comparison copies 30 integers, not 30 named pairs).
macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        const COUNTER_NAMES: [&str; 30] = [$(stringify!($name)),*];

        /// The values of the counters named by `COUNTER_NAMES`, in that order.
        fn counters(s: &Stats) -> [u64; 30] {
            [$(s.$name),*]
        }
    };
}

counters!(
    heartbeats_sent,
    heartbeats_acked,
    heartbeats_lost,
    acks_unmatched,
    server_heartbeats,
    frames_received,
    bytes_received,
    frames_sent,
    send_failures,
    validation_failures,
    invalid_utf8,
    non_json,
    wrong_shape,
    unknown_topics,
    oversized_frames,
    unexpected_events,
    clock_regressions,
    notifications_delivered,
    duplicates_dropped,
    connect_attempts,
    connections_opened,
    reconnects,
    dead_peers,
    rollovers,
    token_refreshes,
    http_requests,
    http_retries,
    alerts,
    gaps,
    gap_ms,
);

/// The bearer token of an `Authorization` header, if any.
fn bearer(headers: &Headers) -> Option<&str> {
    let v = headers.get("authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// True for a close code a client may send (RFC 6455 §7.4): 1000-1014 or 3000-4999, except the reserved
/// 1004 and the never-sent 1005, 1006 and 1015.
pub fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1014 | 3000..=4999) && !matches!(code, 1004 | 1005 | 1006 | 1015)
}

/// Watches one machine's inputs and outputs and checks the [`Invariant`]s.
///
/// Call [`Checker::event`] before every `handle`, [`Checker::action`] for every action drained (including
/// the ones ready right after `new`), and [`Checker::after_handle`] once the actions are drained; or use
/// [`Checker::handle`], which does all three.
#[derive(Debug, Clone)]
pub struct Checker {
    min_interval: Duration,
    longest_interval: Duration,
    max_idle: Duration,
    backoff: Backoff,
    max_attempts: u32,
    /// Duplicates are dropped in the notifications profile only (keepalive-frame delivers every message).
    dedup: bool,
    dedup_window: usize,
    secret: Option<String>,
    start: Instant,
    /// The machine's notion of now: the latest `now` fed (earlier ones are clamped).
    now: Instant,
    stopped: bool,
    state: State,
    sockets: Sockets,
    frames_seen: FastSet<FrameId>,
    requests: BTreeMap<RequestId, Req>,
    requests_seen: FastSet<RequestId>,
    /// Every token issued to the machine, with its expiry (`None`: no `expires_in`).
    tokens: FastMap<String, Option<Instant>>,
    /// `ReconnectAfter`s so far: an upper bound on the machine's attempt counter.
    reconnects: u32,
    /// When the announced reconnect attempt may start, until it does.
    reconnect_at: Option<(Instant, Duration)>,
    /// The `Retry-After` of the handshake refusal being handled, if any.
    retry_after_hint: Option<Duration>,
    delivered: Window,
    last_counters: [u64; 30],
    /// The machine's clock anchor, to read gap reports' wall-clock ends.
    wall: genesys_keepalive::time::WallClock,
    /// How long a rollover's old socket may stay open after the new one opened (its drain).
    drain_bound: Duration,
    /// The last gaps reported (bounded), none of which a new one may overlap.
    recent_gaps: VecDeque<(std::time::SystemTime, std::time::SystemTime)>,
    ever_open: bool,
}

impl Checker {
    /// A checker for `machine`, freshly created at `now`. Feed it the machine's initial actions next.
    pub fn new(machine: &KeepAliveMachine, now: Instant) -> Self {
        let config: &Config = machine.config();
        Checker {
            min_interval: config.min_interval,
            longest_interval: {
                let longest = config.interval_matrix.longest();
                match config.heartbeat_phases {
                    0 => longest,
                    phases => longest + longest / phases,
                }
            },
            max_idle: config.max_idle,
            // A rollover's old socket is drained for at most the larger of the rollover linger (5 s)
            // and the ack timeout (core/src/machine/drain.rs).
            drain_bound: config.ack_timeout.max(Duration::from_secs(5)),
            backoff: Backoff {
                base: config.backoff_base,
                factor: config.backoff_factor,
                max: config.backoff_max,
            },
            max_attempts: config.max_reconnect_attempts,
            dedup: config.profile == ProfileKind::Notifications,
            dedup_window: config.dedup_window,
            secret: config
                .client_secret
                .as_ref()
                .map(|s| s.expose().to_owned())
                .filter(|s| !s.is_empty()),
            start: now,
            now,
            stopped: false,
            state: machine.state(),
            sockets: Sockets::default(),
            frames_seen: FastSet::default(),
            requests: BTreeMap::new(),
            requests_seen: FastSet::default(),
            tokens: FastMap::default(),
            reconnects: 0,
            reconnect_at: None,
            retry_after_hint: None,
            delivered: Window::default(),
            last_counters: counters(machine.counters()),
            wall: machine.wall_clock(),
            recent_gaps: VecDeque::new(),
            ever_open: false,
        }
    }

    /// The machine's time as the checker sees it (the latest `now` fed).
    pub fn now(&self) -> Instant {
        self.now
    }

    /// True once `Stopped` was emitted.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    /// Every access token issued so far (from the token responses fed).
    pub fn issued_tokens(&self) -> impl Iterator<Item = &str> {
        self.tokens.keys().map(|s| s.as_str())
    }

    /// The open sockets the machine has not closed, but for rollovers' old sockets while they are
    /// drained: each for at most `drain_bound` after the next socket opened.
    fn open_undrained(&self) -> impl Iterator<Item = SocketId> + '_ {
        self.sockets.open_undrained(self.now, self.drain_bound)
    }

    fn fail(&self, invariant: Invariant, message: impl Into<String>) -> Result<(), Violation> {
        Err(Violation {
            invariant,
            at: self.now.saturating_duration_since(self.start),
            message: message.into(),
        })
    }

    /// Feeds one event, before the machine handles it.
    pub fn event(&mut self, now: Instant, event: &Event) -> Result<(), Violation> {
        if now > self.now {
            self.now = now;
        }
        self.retry_after_hint = None;
        match event {
            Event::Opened { socket } => {
                let now = self.now;
                let opened = self.sockets.update(socket, |s| {
                    let pending = s.phase == Phase::Pending;
                    if pending {
                        s.phase = Phase::Open;
                        s.last_inbound = now;
                        s.last_send_activity = now;
                        s.opened_at = Some(now);
                    }
                    pending
                });
                if opened == Some(true) {
                    self.ever_open = true;
                }
            }
            Event::FrameReceived { socket, .. } | Event::BinaryReceived { socket, .. } => {
                let now = self.now;
                self.sockets.update(socket, |s| s.last_inbound = now);
            }
            Event::ConnectFailed {
                socket,
                retry_after,
                ..
            } => {
                let failed = self.sockets.update(socket, |s| {
                    let pending = s.phase == Phase::Pending;
                    if pending {
                        s.phase = Phase::Done;
                        s.in_flight = None;
                    }
                    pending
                });
                if failed == Some(true) {
                    self.retry_after_hint = *retry_after;
                }
            }
            Event::Closed { socket, .. } => {
                self.sockets.update(socket, |s| {
                    s.phase = Phase::Done;
                    s.in_flight = None;
                });
            }
            Event::SendCompleted { socket, frame } | Event::SendFailed { socket, frame, .. } => {
                let now = self.now;
                self.sockets.update(socket, |s| {
                    if s.in_flight == Some(*frame) {
                        s.in_flight = None;
                        s.last_send_activity = now;
                    }
                });
            }
            Event::HttpResponse(resp) => self.on_response(resp),
            Event::HttpFailed { request, .. } => {
                self.requests.remove(request);
            }
            _ => {}
        }
        Ok(())
    }

    fn on_response(&mut self, resp: &HttpResponse) {
        let Some(req) = self.requests.remove(&resp.request) else {
            return;
        };
        // A response after the request's own timeout (or after Stopped) is one the machine ignores.
        if !req.token
            || !(200..300).contains(&resp.status)
            || self.stopped
            || self.now >= req.sent_at + req.timeout
        {
            return;
        }
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(&resp.body) else {
            return;
        };
        let Some(token) = v.get("access_token").and_then(|t| t.as_str()) else {
            return;
        };
        if token.is_empty() {
            return;
        }
        let expiry = match v.get("expires_in").and_then(|e| e.as_f64()) {
            Some(secs) if secs.is_finite() => {
                let secs = secs.clamp(0.0, 1e9);
                self.now.checked_add(Duration::from_secs_f64(secs))
            }
            _ => None,
        };
        self.tokens.insert(token.to_owned(), expiry);
    }

    fn check_bearer(&self, headers: &Headers, what: &str) -> Result<(), Violation> {
        let Some(token) = bearer(headers) else {
            return Ok(());
        };
        match self.tokens.get(token) {
            None => self.fail(
                Invariant::ExpiredToken,
                format!("{what} carries a bearer token that was never issued"),
            ),
            Some(Some(expiry)) if self.now >= *expiry => self.fail(
                Invariant::ExpiredToken,
                format!(
                    "{what} carries a bearer token that expired {} ms ago",
                    self.now.saturating_duration_since(*expiry).as_millis()
                ),
            ),
            Some(_) => Ok(()),
        }
    }

    fn check_no_secret(&self, text: &str, what: &str) -> Result<(), Violation> {
        if let Some(secret) = &self.secret {
            if text.contains(secret.as_str()) {
                return self.fail(
                    Invariant::SecretLeak,
                    format!("{what} contains the client secret: {text:?}"),
                );
            }
        }
        for token in self.tokens.keys() {
            if !token.is_empty() && text.contains(token.as_str()) {
                return self.fail(
                    Invariant::SecretLeak,
                    format!("{what} contains the access token {token:?}: {text:?}"),
                );
            }
        }
        Ok(())
    }

    /// Feeds one action, as drained.
    pub fn action(&mut self, action: &Action) -> Result<(), Violation> {
        if self.stopped && !matches!(action, Action::Discard { .. }) {
            return self.fail(
                Invariant::AfterStopped,
                format!("action after Stopped: {action:?}"),
            );
        }
        match action {
            Action::Discard { socket } => {
                let before = self.sockets.update(socket, |s| {
                    let before = (s.machine_closed, s.discarded);
                    s.discarded = true;
                    s.in_flight = None;
                    before
                });
                let Some((closed, discarded)) = before else {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("Discard {socket}, which was never connected"),
                    );
                };
                if !closed || discarded {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!(
                            "Discard {socket} (closed by the machine: {closed}, already discarded: {discarded})"
                        ),
                    );
                }
            }
            Action::Connect {
                socket, headers, ..
            } => {
                if self.sockets.contains(socket) {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("Connect reuses {socket}"),
                    );
                }
                let pending = self.sockets.live(Phase::Pending).next().is_some();
                if pending || self.open_undrained().nth(1).is_some() {
                    let pending: Vec<_> = self.sockets.live(Phase::Pending).collect();
                    let open: Vec<_> = self.open_undrained().collect();
                    return self.fail(
                        Invariant::OneConnectAttempt,
                        format!(
                            "Connect {socket} while {pending:?} still pending and {open:?} open"
                        ),
                    );
                }
                self.check_bearer(headers, &format!("Connect {socket}"))?;
                self.sockets.insert(*socket, Sock::pending(self.now));
            }
            Action::SendFrame {
                socket,
                frame,
                text,
            } => {
                let now = self.now;
                let min = self.min_interval;
                if !self.frames_seen.insert(*frame) {
                    return self.fail(
                        Invariant::OneFrameInFlight,
                        format!("SendFrame reuses frame id {}", frame.0),
                    );
                }
                let Some(s) = self.sockets.get(socket).cloned() else {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("SendFrame on {socket}, which was never connected"),
                    );
                };
                if s.phase != Phase::Open || s.machine_closed {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!(
                            "SendFrame on {socket}, which is not open (phase {:?}, closed by the machine: {})",
                            s.phase, s.machine_closed
                        ),
                    );
                }
                if let Some(f) = s.in_flight {
                    return self.fail(
                        Invariant::OneFrameInFlight,
                        format!(
                            "SendFrame {} on {socket} while frame {} is still in flight",
                            frame.0, f.0
                        ),
                    );
                }
                if is_heartbeat(text) {
                    if let Some(last) = s.last_heartbeat {
                        let gap = now.saturating_duration_since(last);
                        if gap < min {
                            return self.fail(
                                Invariant::HeartbeatSpacing,
                                format!(
                                    "two heartbeats on {socket} {} ms apart (min_interval {} ms)",
                                    gap.as_millis(),
                                    min.as_millis()
                                ),
                            );
                        }
                    }
                }
                let heartbeat = is_heartbeat(text);
                self.sockets.update(socket, |s| {
                    s.in_flight = Some(*frame);
                    s.last_send_activity = now;
                    if heartbeat {
                        s.last_heartbeat = Some(now);
                    }
                });
            }
            Action::Close {
                socket,
                code,
                reason,
                ..
            } => {
                if !close_code_allowed(*code) {
                    return self.fail(
                        Invariant::CloseCode,
                        format!("Close {socket} with code {code}"),
                    );
                }
                if reason.len() > 123 {
                    return self.fail(
                        Invariant::CloseReason,
                        format!(
                            "Close {socket} with a reason of {} bytes (max 123)",
                            reason.len()
                        ),
                    );
                }
                // A first Close marks the socket closed; a second one changes nothing (and fails).
                let Some(again) = self
                    .sockets
                    .update(socket, |s| std::mem::replace(&mut s.machine_closed, true))
                else {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("Close {socket}, which was never connected"),
                    );
                };
                if again {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("second Close for {socket} (code {code}, reason {reason:?})"),
                    );
                }
            }
            Action::Http(req) => self.on_request(req)?,
            Action::ReconnectAfter(d) => {
                if let Some((at, prev)) = self.reconnect_at {
                    return self.fail(
                        Invariant::OneReconnect,
                        format!(
                            "ReconnectAfter({} ms) while the attempt announced by ReconnectAfter({} ms) \
                             has not started (due in {} ms)",
                            d.as_millis(),
                            prev.as_millis(),
                            at.saturating_duration_since(self.now).as_millis()
                        ),
                    );
                }
                self.reconnect_at = self.now.checked_add(*d).map(|at| (at, *d));
                self.reconnects = self.reconnects.saturating_add(1);
                // The machine's counter never exceeds the count since start, nor max_reconnect_attempts.
                let attempt = self.reconnects.min(self.max_attempts).max(1);
                let cap = self.backoff.cap(attempt);
                let mut bound = cap.min(self.backoff.max);
                let mut why = format!(
                    "cap of attempt {attempt} is {} ms, backoff_max {} ms",
                    cap.as_millis(),
                    self.backoff.max.as_millis()
                );
                if let Some(r) = self.retry_after_hint {
                    if r > bound {
                        bound = r;
                        why.push_str(&format!(", Retry-After {} ms", r.as_millis()));
                    }
                }
                if *d > bound {
                    return self.fail(
                        Invariant::BackoffBounds,
                        format!(
                            "ReconnectAfter({} ms) above the bound: {why}",
                            d.as_millis()
                        ),
                    );
                }
            }
            Action::Audit(entry) => {
                if entry.event == AuditEvent::ConnectAttempt {
                    if let Some((at, d)) = self.reconnect_at.take() {
                        if self.now < at {
                            return self.fail(
                                Invariant::BackoffBounds,
                                format!(
                                    "a connection attempt started {} ms before the end of its \
                                     ReconnectAfter({} ms)",
                                    at.saturating_duration_since(self.now).as_millis(),
                                    d.as_millis()
                                ),
                            );
                        }
                    }
                }
                if let Some(e) = &entry.error {
                    self.check_no_secret(e, &format!("audit entry {:?}", entry.event))?;
                }
            }
            Action::Alert(alert) => {
                if let Some(d) = &alert.metrics.detail {
                    self.check_no_secret(d, &format!("alert {:?}", alert.event))?;
                }
            }
            Action::Deliver(n) if self.dedup => {
                let key = n.correlation_id.clone().unwrap_or_else(|| n.raw.clone());
                if self.delivered.contains(&key) {
                    return self.fail(
                        Invariant::DuplicateDelivered,
                        format!(
                            "notification {key:?} delivered again within the last {} deliveries",
                            self.dedup_window
                        ),
                    );
                }
                self.delivered.push(key, self.dedup_window);
            }
            Action::Deliver(_) => {}
            Action::Gap(gap) => self.check_gap(gap)?,
            Action::StateChanged { from, to } => {
                if *from != self.state || from == to {
                    return self.fail(
                        Invariant::StateConsistency,
                        format!(
                            "StateChanged {from} -> {to}, but the state was {}",
                            self.state
                        ),
                    );
                }
                self.state = *to;
            }
            Action::Stopped(reason) => {
                self.check_no_secret(&reason.to_string(), "stop reason")?;
                self.stopped = true;
            }
        }
        Ok(())
    }

    fn check_gap(&mut self, gap: &genesys_keepalive::Gap) -> Result<(), Violation> {
        let now = self.wall.at(self.now);
        let problem = if gap.from > gap.to {
            Some("it ends before it starts".to_owned())
        } else if gap.to > now {
            Some("it ends after the machine's now".to_owned())
        } else if let Some(other) = self
            .recent_gaps
            .iter()
            .find(|(f, t)| gap.from < *t && *f < gap.to)
        {
            Some(format!("it overlaps an earlier gap {other:?}"))
        } else if !self.ever_open {
            Some("no socket was ever open".to_owned())
        } else if gap.topics.is_empty() {
            Some("it names no topic".to_owned())
        } else {
            None
        };
        if self.recent_gaps.len() >= 16 {
            self.recent_gaps.pop_front();
        }
        self.recent_gaps.push_back((gap.from, gap.to));
        match problem {
            Some(p) => self.fail(Invariant::GapReport, format!("gap report {gap:?}: {p}")),
            None => Ok(()),
        }
    }

    fn on_request(&mut self, req: &HttpRequest) -> Result<(), Violation> {
        if !self.requests_seen.insert(req.id) {
            return self.fail(
                Invariant::OneRestCall,
                format!("Http reuses request id {}", req.id.0),
            );
        }
        let now = self.now;
        if let Some((id, r)) = self
            .requests
            .iter()
            .find(|(_, r)| now < r.sent_at + r.timeout)
        {
            return self.fail(
                Invariant::OneRestCall,
                format!(
                    "Http {} ({} {}) while request {} (sent {} ms ago, timeout {} ms) is unanswered",
                    req.id.0,
                    req.method.as_str(),
                    req.url,
                    id.0,
                    now.saturating_duration_since(r.sent_at).as_millis(),
                    r.timeout.as_millis()
                ),
            );
        }
        self.check_bearer(
            &req.headers,
            &format!("Http {} {} {}", req.id.0, req.method.as_str(), req.url),
        )?;
        let token = req.url.ends_with("/oauth/token")
            || req
                .body
                .as_deref()
                .is_some_and(|b| b.contains("grant_type="));
        self.requests.insert(
            req.id,
            Req {
                sent_at: now,
                timeout: req.timeout,
                token,
            },
        );
        Ok(())
    }

    /// Checks the machine once every action of a `handle` is drained.
    pub fn after_handle(&mut self, machine: &KeepAliveMachine) -> Result<(), Violation> {
        let deadline = machine.poll_timeout();
        if machine.is_stopped() {
            if !self.stopped {
                return self.fail(
                    Invariant::AfterStopped,
                    "the machine is stopped but emitted no Stopped",
                );
            }
            let lingering = self.sockets.playing().find(|(_, s)| s.lingering());
            if deadline.is_some() && lingering.is_none() {
                return self.fail(
                    Invariant::AfterStopped,
                    "a stopped machine still has a deadline but no socket left to close",
                );
            }
            if let Some((id, _)) = lingering {
                if deadline.is_none() || machine.is_finished() {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!(
                            "stopped, {id} still closing, but no linger deadline to discard it"
                        ),
                    );
                }
            }
            if let Some((id, _)) = self.sockets.playing().find(|(_, s)| s.live()) {
                return self.fail(
                    Invariant::SocketLifecycle,
                    format!("stopped, but {id} was never closed"),
                );
            }
        } else if self.stopped {
            return self.fail(
                Invariant::AfterStopped,
                "Stopped was emitted but the machine is not stopped",
            );
        }
        if let Some(d) = deadline {
            if d < self.now {
                return self.fail(
                    Invariant::TimerMissed,
                    format!(
                        "poll_timeout() is {} ms in the past after handle",
                        self.now.saturating_duration_since(d).as_millis()
                    ),
                );
            }
        }
        if machine.state() != self.state {
            return self.fail(
                Invariant::StateConsistency,
                format!(
                    "state() is {} but the StateChanged actions say {}",
                    machine.state(),
                    self.state
                ),
            );
        }
        self.sockets.debug_check();
        let pending = self.sockets.live(Phase::Pending).nth(1).is_some();
        if pending || self.open_undrained().nth(1).is_some() {
            let pending: Vec<_> = self.sockets.live(Phase::Pending).collect();
            let open: Vec<_> = self.open_undrained().collect();
            return self.fail(
                Invariant::OneConnectAttempt,
                format!("after handle: pending {pending:?}, open and not closed {open:?}"),
            );
        }
        for (id, s) in self.sockets.playing() {
            if !(s.live() && s.phase == Phase::Open) {
                continue;
            }
            let idle = self.now.saturating_duration_since(s.last_inbound);
            if idle >= self.max_idle {
                return self.fail(
                    Invariant::IdleTimeout,
                    format!(
                        "{id} has had no inbound frame for {} ms (max_idle {} ms) and is still open",
                        idle.as_millis(),
                        self.max_idle.as_millis()
                    ),
                );
            }
            let quiet = self.now.saturating_duration_since(s.last_send_activity);
            if s.in_flight.is_none() && quiet > self.longest_interval {
                return self.fail(
                    Invariant::HeartbeatCadence,
                    format!(
                        "{id} is open with nothing in flight and no heartbeat for {} ms \
                         (longest interval {} ms)",
                        quiet.as_millis(),
                        self.longest_interval.as_millis()
                    ),
                );
            }
        }
        let now = counters(machine.counters());
        let pairs = self.last_counters.iter().zip(now.iter());
        for (name, (before, after)) in COUNTER_NAMES.iter().zip(pairs) {
            if after < before {
                return self.fail(
                    Invariant::StatsDecrease,
                    format!("stats.{name} went from {before} to {after}"),
                );
            }
        }
        self.last_counters = now;
        Ok(())
    }

    /// Drains `machine`'s actions through the checker and returns them.
    pub fn drain(&mut self, machine: &mut KeepAliveMachine) -> Result<Vec<Action>, Violation> {
        let mut out = Vec::new();
        while let Some(a) = machine.poll_action() {
            self.action(&a)?;
            out.push(a);
        }
        Ok(out)
    }

    /// `event`, `machine.handle`, drain, `after_handle`: one checked step. Returns the actions.
    pub fn handle(
        &mut self,
        machine: &mut KeepAliveMachine,
        now: Instant,
        event: Event,
    ) -> Result<Vec<Action>, Violation> {
        self.event(now, &event)?;
        machine.handle(now, event);
        let actions = self.drain(machine)?;
        self.after_handle(machine)?;
        Ok(actions)
    }
}
