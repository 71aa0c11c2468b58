//! Invariant checking, shared by the fuzz targets (`fuzz/`) and the randomized tests.
//!
//! - [`Checker`] watches every `(now, Event)` fed to a [`KeepAliveMachine`] and every [`Action`] drained
//!   from it, and reports the first broken invariant as a [`Violation`] (see [`Invariant`] for the list).
//! - [`FuzzHarness`] owns a machine, a checker and a virtual clock, and plays [`Op`]s against it: it
//!   remembers the ids the machine handed out (sockets, frames, requests, heartbeat `seq`s, tokens), so
//!   most ops are meaningful, while some deliberately use stale or bogus ids.
//!
//! ```
//! use genesys_keepalive::check::{FuzzHarness, Op, TimeStep};
//! use genesys_keepalive::ProfileKind;
//! let mut h = FuzzHarness::new(ProfileKind::Notifications, 7);
//! for _ in 0..50 {
//!     h.step(Op::Progress).unwrap();
//! }
//! h.step(Op::Advance(TimeStep::Seconds(90))).unwrap();
//! h.step(Op::Shutdown).unwrap();
//! assert!(h.machine().is_stopped());
//! ```

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::Backoff;
use crate::config::{Config, ProfileKind};
use crate::event::{Action, AuditEvent, Event, FrameId, RequestId, SocketId};
use crate::frames::PING_FRAME;
use crate::http::{Headers, HttpRequest, HttpResponse};
use crate::machine::{KeepAliveMachine, State};
use crate::secret::Secret;
use crate::stats::Stats;

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
    /// interval after its last heartbeat, its last written frame, or its opening.
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// `Connect` emitted; not yet reported opened or finished.
    Pending,
    /// Reported `Opened`.
    Open,
    /// Reported `ConnectFailed` or `Closed`.
    Done,
}

#[derive(Debug, Clone)]
struct Sock {
    phase: Phase,
    machine_closed: bool,
    /// The machine emitted `Discard`: it has let go of the socket.
    discarded: bool,
    last_heartbeat: Option<Instant>,
    in_flight: Option<FrameId>,
    /// Opened, last inbound frame (for the idle deadline).
    last_inbound: Instant,
    /// Opened, last heartbeat or last write report (for the heartbeat cadence).
    last_send_activity: Instant,
}

impl Sock {
    fn live(&self) -> bool {
        !self.machine_closed && self.phase != Phase::Done
    }

    /// Closed by the machine and still waiting for its end (within the machine's linger deadline).
    fn lingering(&self) -> bool {
        self.machine_closed && !self.discarded && self.phase != Phase::Done
    }
}

#[derive(Debug, Clone)]
struct Req {
    sent_at: Instant,
    timeout: Duration,
    token: bool,
}

/// The counters of [`Stats`] (gauges left out), by name.
fn counters(s: &Stats) -> [(&'static str, u64); 28] {
    [
        ("heartbeats_sent", s.heartbeats_sent),
        ("heartbeats_acked", s.heartbeats_acked),
        ("heartbeats_lost", s.heartbeats_lost),
        ("acks_unmatched", s.acks_unmatched),
        ("server_heartbeats", s.server_heartbeats),
        ("frames_received", s.frames_received),
        ("bytes_received", s.bytes_received),
        ("frames_sent", s.frames_sent),
        ("send_failures", s.send_failures),
        ("validation_failures", s.validation_failures),
        ("invalid_utf8", s.invalid_utf8),
        ("non_json", s.non_json),
        ("wrong_shape", s.wrong_shape),
        ("unknown_topics", s.unknown_topics),
        ("oversized_frames", s.oversized_frames),
        ("unexpected_events", s.unexpected_events),
        ("clock_regressions", s.clock_regressions),
        ("notifications_delivered", s.notifications_delivered),
        ("duplicates_dropped", s.duplicates_dropped),
        ("connect_attempts", s.connect_attempts),
        ("connections_opened", s.connections_opened),
        ("reconnects", s.reconnects),
        ("dead_peers", s.dead_peers),
        ("rollovers", s.rollovers),
        ("token_refreshes", s.token_refreshes),
        ("http_requests", s.http_requests),
        ("http_retries", s.http_retries),
        ("alerts", s.alerts),
    ]
}

/// The bearer token of an `Authorization` header, if any.
fn bearer(headers: &Headers) -> Option<&str> {
    let v = headers.get("authorization")?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then_some(token.trim())
}

/// True for a frame the checker counts as a heartbeat.
pub fn is_heartbeat(text: &str) -> bool {
    text == PING_FRAME || text.contains("KEEP_ALIVE")
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
    sockets: BTreeMap<SocketId, Sock>,
    frames_seen: HashSet<FrameId>,
    requests: BTreeMap<RequestId, Req>,
    requests_seen: HashSet<RequestId>,
    /// Every token issued to the machine, with its expiry (`None`: no `expires_in`).
    tokens: HashMap<String, Option<Instant>>,
    /// `ReconnectAfter`s so far: an upper bound on the machine's attempt counter.
    reconnects: u32,
    /// When the announced reconnect attempt may start, until it does.
    reconnect_at: Option<(Instant, Duration)>,
    /// The `Retry-After` of the handshake refusal being handled, if any.
    retry_after_hint: Option<Duration>,
    delivered: VecDeque<String>,
    last_counters: [(&'static str, u64); 28],
}

impl Checker {
    /// A checker for `machine`, freshly created at `now`. Feed it the machine's initial actions next.
    pub fn new(machine: &KeepAliveMachine, now: Instant) -> Self {
        let config: &Config = machine.config();
        Checker {
            min_interval: config.min_interval,
            longest_interval: config.interval_matrix.longest(),
            max_idle: config.max_idle,
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
            sockets: BTreeMap::new(),
            frames_seen: HashSet::new(),
            requests: BTreeMap::new(),
            requests_seen: HashSet::new(),
            tokens: HashMap::new(),
            reconnects: 0,
            reconnect_at: None,
            retry_after_hint: None,
            delivered: VecDeque::new(),
            last_counters: counters(&machine.stats()),
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
                if let Some(s) = self.sockets.get_mut(socket) {
                    if s.phase == Phase::Pending {
                        s.phase = Phase::Open;
                        s.last_inbound = now;
                        s.last_send_activity = now;
                    }
                }
            }
            Event::FrameReceived { socket, .. } | Event::BinaryReceived { socket, .. } => {
                let now = self.now;
                if let Some(s) = self.sockets.get_mut(socket) {
                    s.last_inbound = now;
                }
            }
            Event::ConnectFailed {
                socket,
                retry_after,
                ..
            } => {
                if let Some(s) = self.sockets.get_mut(socket) {
                    if s.phase == Phase::Pending {
                        s.phase = Phase::Done;
                        s.in_flight = None;
                        self.retry_after_hint = *retry_after;
                    }
                }
            }
            Event::Closed { socket, .. } => {
                if let Some(s) = self.sockets.get_mut(socket) {
                    s.phase = Phase::Done;
                    s.in_flight = None;
                }
            }
            Event::SendCompleted { socket, frame } | Event::SendFailed { socket, frame, .. } => {
                let now = self.now;
                if let Some(s) = self.sockets.get_mut(socket) {
                    if s.in_flight == Some(*frame) {
                        s.in_flight = None;
                        s.last_send_activity = now;
                    }
                }
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
                let Some(s) = self.sockets.get_mut(socket) else {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("Discard {socket}, which was never connected"),
                    );
                };
                let (closed, discarded) = (s.machine_closed, s.discarded);
                s.discarded = true;
                s.in_flight = None;
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
                if self.sockets.contains_key(socket) {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("Connect reuses {socket}"),
                    );
                }
                let pending: Vec<SocketId> = self
                    .sockets
                    .iter()
                    .filter(|(_, s)| s.live() && s.phase == Phase::Pending)
                    .map(|(id, _)| *id)
                    .collect();
                let open: Vec<SocketId> = self
                    .sockets
                    .iter()
                    .filter(|(_, s)| s.live() && s.phase == Phase::Open)
                    .map(|(id, _)| *id)
                    .collect();
                if !pending.is_empty() || open.len() > 1 {
                    return self.fail(
                        Invariant::OneConnectAttempt,
                        format!(
                            "Connect {socket} while {pending:?} still pending and {open:?} open"
                        ),
                    );
                }
                self.check_bearer(headers, &format!("Connect {socket}"))?;
                let now = self.now;
                self.sockets.insert(
                    *socket,
                    Sock {
                        phase: Phase::Pending,
                        machine_closed: false,
                        discarded: false,
                        last_heartbeat: None,
                        in_flight: None,
                        last_inbound: now,
                        last_send_activity: now,
                    },
                );
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
                let s = self.sockets.get_mut(socket).expect("checked above");
                s.in_flight = Some(*frame);
                s.last_send_activity = now;
                if is_heartbeat(text) {
                    s.last_heartbeat = Some(now);
                }
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
                let Some(s) = self.sockets.get_mut(socket) else {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("Close {socket}, which was never connected"),
                    );
                };
                if s.machine_closed {
                    return self.fail(
                        Invariant::SocketLifecycle,
                        format!("second Close for {socket} (code {code}, reason {reason:?})"),
                    );
                }
                s.machine_closed = true;
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
                self.delivered.push_back(key);
                while self.delivered.len() > self.dedup_window {
                    self.delivered.pop_front();
                }
            }
            Action::Deliver(_) => {}
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
            let lingering = self.sockets.iter().find(|(_, s)| s.lingering());
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
            if let Some((id, _)) = self.sockets.iter().find(|(_, s)| s.live()) {
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
        let pending: Vec<SocketId> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.live() && s.phase == Phase::Pending)
            .map(|(id, _)| *id)
            .collect();
        let open: Vec<SocketId> = self
            .sockets
            .iter()
            .filter(|(_, s)| s.live() && s.phase == Phase::Open)
            .map(|(id, _)| *id)
            .collect();
        if pending.len() > 1 || open.len() > 1 {
            return self.fail(
                Invariant::OneConnectAttempt,
                format!("after handle: pending {pending:?}, open and not closed {open:?}"),
            );
        }
        for (id, s) in &self.sockets {
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
        let now = counters(&machine.stats());
        for ((name, before), (_, after)) in self.last_counters.iter().zip(now.iter()) {
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

// ------------------------------------------------------------------------------------------------
// The harness
// ------------------------------------------------------------------------------------------------

/// How far the virtual clock moves (then a `Tick` is fed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TimeStep {
    /// Not at all.
    Zero,
    /// Milliseconds.
    Millis(u16),
    /// Seconds.
    Seconds(u16),
    /// Hours (token and channel lifetimes).
    Hours(u8),
    /// One `Tick` stamped this many milliseconds in the past (the machine must clamp); the clock stays.
    Back(u16),
}

/// Which socket an event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum SocketPick {
    /// The socket being opened (the last `Connect` not yet reported).
    Pending,
    /// The open socket.
    Active,
    /// A socket the machine closed that was not yet reported closed.
    Closing,
    /// Any socket seen so far (index modulo their count).
    Stale(u8),
    /// An id the machine never gave out.
    Bogus(u16),
}

/// Which request a reply answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum RequestPick {
    /// The last unanswered request.
    Last,
    /// Any request seen so far (index modulo their count), answered or not.
    Stale(u8),
    /// An id the machine never gave out.
    Bogus(u16),
}

/// What an error body or error string echoes (to test that credentials never reach audit or alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Echo {
    /// Nothing sensitive.
    Nothing,
    /// The last access token issued.
    Token,
    /// The client secret.
    Secret,
}

/// `expires_in` of a token response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TokenLife {
    /// One second.
    OneSecond,
    /// 2-257 seconds.
    Seconds(u8),
    /// One hour.
    Hour,
    /// 86,399 s (Genesys' usual).
    Day,
    /// No `expires_in` at all.
    Missing,
}

/// A 2xx body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum OkBody {
    /// The right body for the request's URL (token, channel or subscriptions).
    Realistic(TokenLife),
    /// Empty.
    Empty,
    /// Not JSON.
    Garbage,
    /// A channel with a `ws://` connectUri (refused: not encrypted); other URLs as `Realistic`.
    InsecureUri,
    /// Subscriptions with the first topic `Rejected`; other URLs as `Realistic`.
    RejectedTopic,
}

/// An HTTP reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum HttpReply {
    /// 200.
    Ok(OkBody),
    /// 400.
    BadRequest(Echo),
    /// 401.
    Unauthorized(Echo),
    /// 403.
    Forbidden(Echo),
    /// 404.
    NotFound,
    /// 429 with an optional `Retry-After` in seconds.
    TooMany(Option<u16>),
    /// 500.
    ServerError(Echo),
    /// 503 with an optional `Retry-After` in seconds.
    Unavailable(Option<u8>),
    /// Any status.
    Status(u16),
}

/// A refused or failed handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Handshake {
    /// No HTTP status (TCP/TLS failure).
    Network,
    /// This status.
    Status(u16),
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 429 with a `Retry-After` in seconds.
    TooMany(u8),
    /// 503.
    Unavailable,
}

/// A topic name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum TopicPick {
    /// One of the harness's topic names (index modulo their count).
    Known(u8),
    /// A topic nobody subscribed to.
    Unknown,
    /// Not a topic name (empty or with a space).
    Invalid(bool),
}

/// An inbound text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum InFrame {
    /// notifications: the pong.
    Pong,
    /// notifications: the server heartbeat.
    ServerHeartbeat,
    /// keepalive-frame: an ack naming the oldest heartbeat the harness saw unacked.
    AckOldest,
    /// keepalive-frame: an ack naming the latest heartbeat.
    AckLatest,
    /// keepalive-frame: an ack with this `seq` (probably wrong).
    AckSeq(u64),
    /// keepalive-frame: an ack with no `seq`.
    AckNoSeq,
    /// notifications: `v2.system.socket_closing`.
    SocketClosing,
    /// A notification (a duplicate when the correlation id repeats).
    Notification {
        /// Its topic.
        topic: TopicPick,
        /// Its correlation id, if any.
        correlation: Option<u8>,
    },
    /// notifications: `{"result":"404"}`.
    ChannelGone,
    /// Arbitrary text.
    Text(String),
    /// Bigger than `max_inbound_bytes`.
    Oversize,
}

/// A close code the peer or the driver reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum PeerClose {
    /// No close frame (the stream ended).
    NoCode,
    /// 1000.
    Normal,
    /// 1001.
    GoingAway,
    /// Any code.
    Code(u16),
}

/// One thing that happens to the machine. Most name the ids the machine gave out; some use stale or
/// bogus ones.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Op {
    /// Do the natural next thing: answer the last request with a realistic 200 (tokens live 1 s to a
    /// day, by seed), report the pending socket open, complete the frame in flight, ack the oldest heartbeat, or else jump to the next deadline.
    Progress,
    /// Move the clock, then `Tick`.
    Advance(TimeStep),
    /// Jump to `poll_timeout()` plus `late_ms`, then `Tick`.
    ToDeadline {
        /// How late the wake-up is.
        late_ms: u8,
    },
    /// `Tick` without moving the clock.
    Tick,
    /// Answer a request.
    Http {
        /// Which request.
        to: RequestPick,
        /// The reply.
        reply: HttpReply,
    },
    /// Report a request failed.
    HttpFailed {
        /// Which request.
        to: RequestPick,
        /// What the error string echoes.
        echo: Echo,
    },
    /// Report a socket open.
    Opened(SocketPick),
    /// Report a handshake failed.
    ConnectFailed {
        /// Which socket.
        socket: SocketPick,
        /// How.
        how: Handshake,
        /// What the error string echoes.
        echo: Echo,
    },
    /// An inbound text frame.
    Frame {
        /// Which socket.
        socket: SocketPick,
        /// What.
        frame: InFrame,
    },
    /// An inbound binary frame.
    Binary {
        /// Which socket.
        socket: SocketPick,
        /// Its bytes.
        data: Vec<u8>,
    },
    /// Report the frame in flight written (or a bogus frame id).
    SendCompleted {
        /// Use a frame id the machine never gave out.
        bogus: bool,
    },
    /// Report the frame in flight failed (or a bogus frame id).
    SendFailed {
        /// Use a frame id the machine never gave out.
        bogus: bool,
        /// What the error string echoes.
        echo: Echo,
    },
    /// Report a socket closed.
    Closed {
        /// Which socket.
        socket: SocketPick,
        /// With which code.
        code: PeerClose,
        /// What the reason echoes.
        echo: Echo,
    },
    /// `Event::TokenExpired`.
    TokenExpired,
    /// `Event::Subscribe`.
    Subscribe(Vec<TopicPick>),
    /// `Event::Shutdown`.
    Shutdown,
}

/// Topic names the harness uses; the config subscribes the first two.
pub const TOPICS: [&str; 5] = [
    "v2.users.6d5b0a9e-0000-4000-8000-000000000001.presence",
    "v2.users.6d5b0a9e-0000-4000-8000-000000000002.presence",
    "v2.routing.queues.q1.conversations",
    "v2.conversations.chats.c1.messages",
    "v2.analytics.queues.q1.observations",
];

/// The client secret of the harness's configs.
pub const HARNESS_SECRET: &str = "fuzz-client-secret-0123456789";

/// Drives a [`KeepAliveMachine`] with [`Op`]s on a virtual clock and checks every step with a
/// [`Checker`].
#[derive(Debug)]
pub struct FuzzHarness {
    machine: KeepAliveMachine,
    checker: Checker,
    profile: ProfileKind,
    max_inbound: usize,
    floor: Instant,
    now: Instant,
    seed: u64,
    pending_socket: Option<SocketId>,
    active_socket: Option<SocketId>,
    closing: Vec<SocketId>,
    all_sockets: Vec<SocketId>,
    in_flight: Vec<(SocketId, FrameId)>,
    /// Heartbeat `seq`s seen on each socket, not yet acked by the harness.
    seqs: Vec<(SocketId, u64)>,
    last_seq: Option<u64>,
    unanswered: Vec<HttpRequest>,
    all_requests: Vec<RequestId>,
    last_token: Option<String>,
    /// The `expires_in` that `Progress` answers token requests with (from the seed).
    progress_life: TokenLife,
    issued: u64,
    channels: u64,
    transcript: Option<Vec<String>>,
}

impl FuzzHarness {
    /// A compressed-time configuration for `profile`: 2 s heartbeats, 4.5 s idle timeout, 100 ms backoff
    /// base, short tokens and request timeouts, a small dedup window and inbound limit. The
    /// keepalive-frame profile gets OAuth credentials when `with_credentials`.
    pub fn compressed_config(profile: ProfileKind, with_credentials: bool) -> Config {
        let mut b = Config::builder()
            .profile(profile)
            .heartbeat_interval(Duration::from_millis(2_000))
            .min_interval(Duration::from_millis(500))
            .max_idle(Duration::from_millis(4_500))
            .ack_timeout(Duration::from_millis(1_000))
            .max_missed_acks(2)
            .max_inbound_bytes(1024)
            .rtt_window(10)
            .latency_threshold(Duration::from_millis(200))
            .recovery_samples(2)
            .backoff_base(Duration::from_millis(100))
            .backoff_factor(2)
            .backoff_max(Duration::from_millis(2_000))
            .max_reconnect_attempts(5)
            .min_uptime(Duration::from_millis(3_000))
            .connect_timeout(Duration::from_millis(1_000))
            .token_refresh_margin(Duration::from_millis(2_000))
            .request_timeout(Duration::from_millis(2_000))
            .retry_after_default(Duration::from_millis(300))
            .retry_budget(Duration::from_millis(10_000))
            .rollover_deadline(Duration::from_millis(3_000))
            .dedup_window(8)
            .topic(TOPICS[0])
            .topic(TOPICS[1]);
        if profile == ProfileKind::Notifications || with_credentials {
            b = b.credentials("fuzz-client-id", Secret::new(HARNESS_SECRET));
        }
        if profile == ProfileKind::KeepaliveFrame {
            b = b.url("wss://gateway.example.invalid/ws");
        }
        b.build().expect("the compressed config is valid")
    }

    /// A harness over [`FuzzHarness::compressed_config`] (keepalive-frame gets credentials for even seeds).
    /// Panics if the machine's very first actions break an invariant.
    pub fn new(profile: ProfileKind, seed: u64) -> Self {
        let config = Self::compressed_config(profile, seed % 2 == 0);
        Self::with_config(config, seed)
    }

    /// A harness over any valid configuration. Panics if the config is invalid or the machine's very first
    /// actions break an invariant.
    pub fn with_config(config: Config, seed: u64) -> Self {
        // Start a day after a real instant so the clock can go backwards.
        let floor = Instant::now();
        let now = floor + Duration::from_secs(86_400);
        let wall = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        let profile = config.profile;
        let max_inbound = config.max_inbound_bytes;
        let machine = KeepAliveMachine::new(config, now, wall, seed).expect("a valid config");
        let checker = Checker::new(&machine, now);
        let mut h = FuzzHarness {
            machine,
            checker,
            profile,
            max_inbound,
            floor,
            now,
            seed,
            pending_socket: None,
            active_socket: None,
            closing: Vec::new(),
            all_sockets: Vec::new(),
            in_flight: Vec::new(),
            seqs: Vec::new(),
            last_seq: None,
            unanswered: Vec::new(),
            all_requests: Vec::new(),
            last_token: None,
            progress_life: match (seed >> 2) % 6 {
                0 => TokenLife::OneSecond,
                1 => TokenLife::Seconds(2),
                2 => TokenLife::Seconds(30),
                3 => TokenLife::Hour,
                4 => TokenLife::Missing,
                _ => TokenLife::Day,
            },
            issued: 0,
            channels: 0,
            transcript: None,
        };
        if let Err(v) = h.drain() {
            panic!("the machine's first actions: {v}");
        }
        h
    }

    /// Records every event fed and action drained, as text (see [`FuzzHarness::transcript`]).
    pub fn record(&mut self, on: bool) {
        self.transcript = on.then(Vec::new);
    }

    /// The recorded events and actions, one per line, stamped with virtual time.
    pub fn transcript(&self) -> &[String] {
        self.transcript.as_deref().unwrap_or(&[])
    }

    /// The machine.
    pub fn machine(&self) -> &KeepAliveMachine {
        &self.machine
    }

    /// The checker.
    pub fn checker(&self) -> &Checker {
        &self.checker
    }

    /// The profile.
    pub fn profile(&self) -> ProfileKind {
        self.profile
    }

    /// The open socket, as the harness sees it.
    pub fn active_socket(&self) -> Option<SocketId> {
        self.active_socket
    }

    fn stamp(&self) -> String {
        let t = self
            .now
            .saturating_duration_since(self.floor + Duration::from_secs(86_400));
        let back = (self.floor + Duration::from_secs(86_400)).saturating_duration_since(self.now);
        if back > Duration::ZERO {
            format!("t=-{}ms", back.as_millis())
        } else {
            format!("t=+{}ms", t.as_millis())
        }
    }

    fn drain(&mut self) -> Result<(), Violation> {
        while let Some(a) = self.machine.poll_action() {
            if let Some(t) = self.transcript.as_mut() {
                t.push(format!("    -> {a:?}"));
            }
            self.checker.action(&a)?;
            self.track(a);
        }
        Ok(())
    }

    fn track(&mut self, a: Action) {
        match a {
            Action::Connect { socket, .. } => {
                self.pending_socket = Some(socket);
                self.all_sockets.push(socket);
            }
            Action::SendFrame {
                socket,
                frame,
                text,
            } => {
                self.in_flight.push((socket, frame));
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    if let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) {
                        self.seqs.push((socket, seq));
                        self.last_seq = Some(seq);
                    }
                }
            }
            Action::Close { socket, .. } => {
                if self.pending_socket == Some(socket) {
                    self.pending_socket = None;
                }
                if self.active_socket == Some(socket) {
                    self.active_socket = None;
                }
                if !self.closing.contains(&socket) {
                    self.closing.push(socket);
                }
                self.in_flight.retain(|(s, _)| *s != socket);
            }
            // The driver drops the socket: nothing more comes from it (unless an op sends leftovers).
            Action::Discard { socket } => self.forget_socket(socket),
            Action::Http(req) => {
                self.all_requests.push(req.id);
                self.unanswered.push(req);
            }
            _ => {}
        }
    }

    /// Feeds one event at the current virtual time, checked.
    pub fn feed(&mut self, event: Event) -> Result<(), Violation> {
        if self.transcript.is_some() {
            let line = format!("{} {}", self.stamp(), describe_event(&event));
            if let Some(t) = self.transcript.as_mut() {
                t.push(line);
            }
        }
        self.checker.event(self.now, &event)?;
        self.machine.handle(self.now, event);
        self.drain()?;
        self.checker.after_handle(&self.machine)
    }

    fn pick_socket(&self, pick: SocketPick) -> SocketId {
        let any = |k: usize| {
            if self.all_sockets.is_empty() {
                SocketId(1)
            } else {
                self.all_sockets[k % self.all_sockets.len()]
            }
        };
        match pick {
            SocketPick::Pending => self.pending_socket.unwrap_or_else(|| any(0)),
            SocketPick::Active => self.active_socket.unwrap_or_else(|| any(1)),
            SocketPick::Closing => self.closing.first().copied().unwrap_or_else(|| any(2)),
            SocketPick::Stale(k) => any(k as usize),
            SocketPick::Bogus(n) => SocketId(1_000_000 + n as u64),
        }
    }

    fn pick_request(&mut self, pick: RequestPick) -> Option<(RequestId, Option<HttpRequest>)> {
        match pick {
            RequestPick::Last => self.unanswered.pop().map(|r| (r.id, Some(r))),
            RequestPick::Stale(k) => {
                if self.all_requests.is_empty() {
                    return None;
                }
                let id = self.all_requests[k as usize % self.all_requests.len()];
                let req = self
                    .unanswered
                    .iter()
                    .position(|r| r.id == id)
                    .map(|i| self.unanswered.remove(i));
                Some((id, req))
            }
            RequestPick::Bogus(n) => Some((RequestId(1_000_000 + n as u64), None)),
        }
    }

    fn echo(&self, echo: Echo) -> String {
        match echo {
            Echo::Nothing => "connection reset by peer".into(),
            Echo::Token => format!(
                "token {} is no longer valid",
                self.last_token.as_deref().unwrap_or("none")
            ),
            Echo::Secret => format!("bad client secret {HARNESS_SECRET}"),
        }
    }

    fn ok_body(&mut self, req: Option<&HttpRequest>, body: OkBody) -> Vec<u8> {
        let url = req.map(|r| r.url.as_str()).unwrap_or("");
        let life = match body {
            OkBody::Realistic(l) => l,
            OkBody::Empty => return Vec::new(),
            OkBody::Garbage => return b"<html>gateway</html>".to_vec(),
            _ => TokenLife::Day,
        };
        if url.ends_with("/oauth/token") {
            self.issued += 1;
            let token = format!("tok{}x{:x}", self.issued, self.seed);
            self.last_token = Some(token.clone());
            let expires = match life {
                TokenLife::OneSecond => Some(1),
                TokenLife::Seconds(s) => Some(2 + s as u64),
                TokenLife::Hour => Some(3_600),
                TokenLife::Day => Some(86_399),
                TokenLife::Missing => None,
            };
            let mut v = serde_json::json!({ "access_token": token, "token_type": "bearer" });
            if let Some(e) = expires {
                v["expires_in"] = e.into();
            }
            return v.to_string().into_bytes();
        }
        if url.ends_with("/notifications/channels") {
            self.channels += 1;
            let id = format!("streaming-{}-{:x}", self.channels, self.seed);
            let scheme = if body == OkBody::InsecureUri {
                "ws"
            } else {
                "wss"
            };
            return serde_json::json!({
                "connectUri": format!("{scheme}://streaming.mypurecloud.com/channels/{id}"),
                "id": id,
                "expires": "2030-01-01T00:00:00.000Z",
            })
            .to_string()
            .into_bytes();
        }
        if url.contains("/subscriptions") {
            let topics: Vec<serde_json::Value> = req
                .and_then(|r| r.body.as_deref())
                .and_then(|b| serde_json::from_str::<serde_json::Value>(b).ok())
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            let entities: Vec<serde_json::Value> = topics
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut e =
                        serde_json::json!({ "id": t.get("id").cloned().unwrap_or_default() });
                    if i == 0 && body == OkBody::RejectedTopic {
                        e["state"] = "Rejected".into();
                    }
                    e
                })
                .collect();
            return serde_json::json!({ "entities": entities })
                .to_string()
                .into_bytes();
        }
        b"{}".to_vec()
    }

    fn reply(&mut self, to: RequestPick, reply: HttpReply) -> Result<(), Violation> {
        let Some((id, req)) = self.pick_request(to) else {
            return self.feed(Event::Tick);
        };
        let mut headers = Headers::new();
        let err = |code: &str, echo: String| {
            serde_json::json!({ "error": code, "message": echo })
                .to_string()
                .into_bytes()
        };
        let (status, body) = match reply {
            HttpReply::Ok(b) => (200, self.ok_body(req.as_ref(), b)),
            HttpReply::BadRequest(e) => (400, err("invalid_request", self.echo(e))),
            HttpReply::Unauthorized(e) => (401, err("invalid_token", self.echo(e))),
            HttpReply::Forbidden(e) => (
                403,
                err("missing.permissions", {
                    let mut s = self.echo(e);
                    s.push_str(": missing notifications:notification:view");
                    s
                }),
            ),
            HttpReply::NotFound => (404, err("not.found", "channel not found".into())),
            HttpReply::TooMany(r) => {
                if let Some(s) = r {
                    headers.push("Retry-After", s.to_string());
                }
                (429, err("too.many.requests", "rate limited".into()))
            }
            HttpReply::ServerError(e) => (500, err("internal", self.echo(e))),
            HttpReply::Unavailable(r) => {
                if let Some(s) = r {
                    headers.push("Retry-After", s.to_string());
                }
                (503, b"Service Unavailable".to_vec())
            }
            HttpReply::Status(s) => (s, Vec::new()),
        };
        self.feed(Event::HttpResponse(HttpResponse {
            request: id,
            status,
            headers,
            body,
        }))
    }

    fn inbound_text(&self, frame: &InFrame) -> String {
        let ack = |seq: Option<u64>| match seq {
            Some(s) => format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{s}}}"#),
            None => r#"{"type":"KEEP_ALIVE_ACK"}"#.to_owned(),
        };
        let socket = self.active_socket;
        let oldest = self
            .seqs
            .iter()
            .find(|(s, _)| Some(*s) == socket)
            .map(|(_, q)| *q);
        match frame {
            InFrame::Pong => {
                r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#.into()
            }
            InFrame::ServerHeartbeat => {
                r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#
                    .into()
            }
            InFrame::AckOldest => ack(oldest.or(self.last_seq)),
            InFrame::AckLatest => ack(self.last_seq),
            InFrame::AckSeq(s) => ack(Some(*s)),
            InFrame::AckNoSeq => ack(None),
            InFrame::SocketClosing => {
                r#"{"topicName":"v2.system.socket_closing","eventBody":{"message":"closing"}}"#
                    .into()
            }
            InFrame::Notification { topic, correlation } => {
                let topic = topic_name(*topic);
                let mut v = serde_json::json!({
                    "topicName": topic,
                    "type": topic,
                    "version": "2",
                    "eventBody": { "id": "6d5b0a9e", "presenceDefinition": { "systemPresence": "Available" } },
                });
                if let Some(c) = correlation {
                    v["metadata"] = serde_json::json!({ "CorrelationId": format!("corr-{c}") });
                }
                v.to_string()
            }
            InFrame::ChannelGone => r#"{"result":"404","message":"channel not found"}"#.into(),
            InFrame::Text(t) => t.clone(),
            InFrame::Oversize => {
                let mut s = String::from(r#"{"topicName":"v2.a","eventBody":""#);
                s.push_str(&"x".repeat(self.max_inbound));
                s.push_str("\"}");
                s
            }
        }
    }

    /// Plays one op, checked. The first violation is returned; later steps may report more.
    pub fn step(&mut self, op: Op) -> Result<(), Violation> {
        if let Some(t) = self.transcript.as_mut() {
            t.push(format!("op {op:?}"));
        }
        match op {
            Op::Progress => self.progress(),
            Op::Advance(step) => {
                self.now = match step {
                    TimeStep::Zero => self.now,
                    TimeStep::Millis(ms) => self.now + Duration::from_millis(ms as u64),
                    TimeStep::Seconds(s) => self.now + Duration::from_secs(s as u64),
                    TimeStep::Hours(h) => self.now + Duration::from_secs(h as u64 * 3_600),
                    TimeStep::Back(ms) => {
                        // One event stamped in the past (a stale `now`); the clock itself stays.
                        let real = self.now;
                        self.now = real
                            .checked_sub(Duration::from_millis(ms as u64))
                            .unwrap_or(self.floor)
                            .max(self.floor);
                        let r = self.feed(Event::Tick);
                        self.now = real;
                        return r;
                    }
                };
                self.feed(Event::Tick)
            }
            Op::ToDeadline { late_ms } => self.jump_to_deadline(late_ms),
            Op::Tick => self.feed(Event::Tick),
            Op::Http { to, reply } => self.reply(to, reply),
            Op::HttpFailed { to, echo } => {
                let Some((id, _)) = self.pick_request(to) else {
                    return self.feed(Event::Tick);
                };
                let error = self.echo(echo);
                self.feed(Event::HttpFailed { request: id, error })
            }
            Op::Opened(pick) => {
                let socket = self.pick_socket(pick);
                if self.pending_socket == Some(socket) {
                    self.pending_socket = None;
                    self.active_socket = Some(socket);
                }
                self.feed(Event::Opened { socket })
            }
            Op::ConnectFailed { socket, how, echo } => {
                let socket = self.pick_socket(socket);
                if self.pending_socket == Some(socket) {
                    self.pending_socket = None;
                }
                let (status, retry_after) = match how {
                    Handshake::Network => (None, None),
                    Handshake::Status(s) => (Some(s), None),
                    Handshake::Unauthorized => (Some(401), None),
                    Handshake::Forbidden => (Some(403), None),
                    Handshake::NotFound => (Some(404), None),
                    Handshake::TooMany(s) => (Some(429), Some(Duration::from_secs(s as u64))),
                    Handshake::Unavailable => (Some(503), None),
                };
                let error = self.echo(echo);
                self.feed(Event::ConnectFailed {
                    socket,
                    status,
                    retry_after,
                    error,
                })
            }
            Op::Frame { socket, frame } => {
                let socket = self.pick_socket(socket);
                let text = self.inbound_text(&frame);
                if let (InFrame::AckOldest | InFrame::AckLatest, Ok(v)) =
                    (&frame, serde_json::from_str::<serde_json::Value>(&text))
                {
                    if let Some(seq) = v.get("seq").and_then(|s| s.as_u64()) {
                        self.seqs.retain(|(s, q)| !(*s == socket && *q <= seq));
                    }
                }
                self.feed(Event::FrameReceived { socket, text })
            }
            Op::Binary { socket, data } => {
                let socket = self.pick_socket(socket);
                self.feed(Event::BinaryReceived { socket, data })
            }
            Op::SendCompleted { bogus } => {
                let (socket, frame) = self.take_frame(bogus);
                self.feed(Event::SendCompleted { socket, frame })
            }
            Op::SendFailed { bogus, echo } => {
                let (socket, frame) = self.take_frame(bogus);
                let error = self.echo(echo);
                self.feed(Event::SendFailed {
                    socket,
                    frame,
                    error,
                })
            }
            Op::Closed { socket, code, echo } => {
                let socket = self.pick_socket(socket);
                self.forget_socket(socket);
                let code = match code {
                    PeerClose::NoCode => None,
                    PeerClose::Normal => Some(1000),
                    PeerClose::GoingAway => Some(1001),
                    PeerClose::Code(c) => Some(c),
                };
                let reason = self.echo(echo);
                self.feed(Event::Closed {
                    socket,
                    code,
                    reason,
                })
            }
            Op::TokenExpired => self.feed(Event::TokenExpired),
            Op::Subscribe(topics) => {
                let topics = topics.into_iter().take(8).map(topic_name).collect();
                self.feed(Event::Subscribe { topics })
            }
            Op::Shutdown => self.feed(Event::Shutdown),
        }
    }

    /// Plays every op in order; stops at the first violation.
    pub fn run(&mut self, ops: impl IntoIterator<Item = Op>) -> Result<(), Violation> {
        for op in ops {
            self.step(op)?;
        }
        Ok(())
    }

    fn forget_socket(&mut self, socket: SocketId) {
        if self.pending_socket == Some(socket) {
            self.pending_socket = None;
        }
        if self.active_socket == Some(socket) {
            self.active_socket = None;
        }
        self.closing.retain(|s| *s != socket);
        self.in_flight.retain(|(s, _)| *s != socket);
    }

    fn take_frame(&mut self, bogus: bool) -> (SocketId, FrameId) {
        if bogus || self.in_flight.is_empty() {
            let socket = self.active_socket.unwrap_or(SocketId(1));
            return (socket, FrameId(1_000_000));
        }
        self.in_flight.remove(0)
    }

    fn jump_to_deadline(&mut self, late_ms: u8) -> Result<(), Violation> {
        if let Some(d) = self.machine.poll_timeout() {
            self.now = self.now.max(d) + Duration::from_millis(late_ms as u64);
        }
        self.feed(Event::Tick)
    }

    /// The natural next step (see [`Op::Progress`]).
    pub fn progress(&mut self) -> Result<(), Violation> {
        if !self.unanswered.is_empty() {
            let life = self.progress_life;
            return self.reply(RequestPick::Last, HttpReply::Ok(OkBody::Realistic(life)));
        }
        if self.pending_socket.is_some() {
            return self.step(Op::Opened(SocketPick::Pending));
        }
        if !self.in_flight.is_empty() {
            return self.step(Op::SendCompleted { bogus: false });
        }
        if let Some(active) = self.active_socket {
            if self.seqs.iter().any(|(s, _)| *s == active) {
                return self.step(Op::Frame {
                    socket: SocketPick::Active,
                    frame: InFrame::AckOldest,
                });
            }
            if self.profile == ProfileKind::Notifications
                && self.machine.stats().heartbeats_sent > 0
            {
                // Pings carry no seq: answer the oldest with a pong if one may be outstanding.
                let s = self.machine.stats();
                if s.heartbeats_sent > s.heartbeats_acked + s.heartbeats_lost {
                    return self.step(Op::Frame {
                        socket: SocketPick::Active,
                        frame: InFrame::Pong,
                    });
                }
            }
        }
        self.jump_to_deadline(0)
    }

    /// Drives the machine until a socket is open and its first heartbeat written (at most `max_steps`
    /// progress steps). Returns whether it got there.
    pub fn open_connection(&mut self, max_steps: usize) -> Result<bool, Violation> {
        for _ in 0..max_steps {
            if self.machine.is_stopped() {
                return Ok(false);
            }
            if self.active_socket.is_some()
                && self.unanswered.is_empty()
                && self.pending_socket.is_none()
                && self.in_flight.is_empty()
            {
                return Ok(true);
            }
            if !self.unanswered.is_empty() {
                self.reply(
                    RequestPick::Last,
                    HttpReply::Ok(OkBody::Realistic(TokenLife::Day)),
                )?;
            } else if self.pending_socket.is_some() {
                self.step(Op::Opened(SocketPick::Pending))?;
            } else if !self.in_flight.is_empty() {
                self.step(Op::SendCompleted { bogus: false })?;
            } else {
                self.jump_to_deadline(0)?;
            }
        }
        Ok(false)
    }

    /// Feeds raw bytes as one inbound frame on the open socket: text if UTF-8, else binary.
    pub fn inbound_bytes(&mut self, bytes: &[u8]) -> Result<(), Violation> {
        let socket = self.active_socket.unwrap_or(SocketId(1));
        match std::str::from_utf8(bytes) {
            Ok(text) => self.feed(Event::FrameReceived {
                socket,
                text: text.to_owned(),
            }),
            Err(_) => self.feed(Event::BinaryReceived {
                socket,
                data: bytes.to_vec(),
            }),
        }
    }
}

/// `Debug` of an event, with an HTTP body shown as text.
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

fn topic_name(t: TopicPick) -> String {
    match t {
        TopicPick::Known(i) => TOPICS[i as usize % TOPICS.len()].to_owned(),
        TopicPick::Unknown => "v2.users.ffffffff-0000-4000-8000-00000000dead.presence".to_owned(),
        TopicPick::Invalid(true) => String::new(),
        TopicPick::Invalid(false) => "v2.users two words".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AuditEntry, AuditEvent, StopReason};

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
            method: crate::http::Method::Post,
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
        dec.last_counters[0].1 = 999;
        let v = dec.after_handle(&m).unwrap_err();
        assert_eq!(v.invariant, Invariant::StatsDecrease, "{v}");
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
}
