//! [`KeepAliveMachine`]: every keep-alive decision, as a pure function of events and time.
//!
//! The machine is driven from outside: [`KeepAliveMachine::handle`] takes one [`Event`] stamped with the
//! caller's `now`; [`KeepAliveMachine::poll_action`] hands out what to do; [`KeepAliveMachine::poll_timeout`]
//! says when to call again with [`Event::Tick`]. Every `handle` first fires the timers that are due
//! (earliest first), so a throttled or late timer cannot hide a dead peer.
//!
//! ## Connection flow
//! - `notifications`: token → create channel → subscribe topics (PUT) → connect to `connectUri`.
//! - `keepalive-frame`: token (only with credentials) → connect to `url` with the bearer token.
//!
//! One setup runs at a time and one REST call is in flight at a time. A lost socket schedules exactly one
//! reconnect, after a full-jitter backoff delay; the attempt counter resets only after `min_uptime` of health.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant, SystemTime};

use crate::backoff::Backoff;
use crate::config::{Config, ProfileKind};
use crate::event::{
    Action, Alert, AlertEvent, AlertMetrics, AuditEntry, AuditEvent, Event, Notification,
    StopReason,
};
use crate::frames::{self, Inbound, IntervalInfo, KeepAlivePayload, SizeDirective};
use crate::http::{self, Headers, HttpRequest, HttpResponse, Method};
use crate::ids::{FrameId, RequestId, SocketId};
use crate::latency::LatencyWindow;
use crate::rng::Rng;
use crate::state::State;
use crate::stats::Stats;
use crate::time::WallClock;
use crate::timers::{Timer, TimerTable};
use crate::token::TokenCache;

/// How long a Genesys channel lives without resubscription.
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// Close code for a peer declared dead (the project's own range, 4000-4999).
pub const CLOSE_DEAD_PEER: u16 = 4001;
/// Close code for the old socket after a planned-close rollover.
pub const CLOSE_ROLLOVER: u16 = 4002;
/// Close code for a socket that did not open in time.
pub const CLOSE_CONNECT_TIMEOUT: u16 = 4003;
/// Close code for a socket whose write failed.
pub const CLOSE_SEND_FAILED: u16 = 1011;
/// How long a rollover's old socket may keep delivering after its close frame.
const ROLLOVER_LINGER: Duration = Duration::from_secs(5);
/// How many recent access tokens are remembered for scrubbing.
const ISSUED_TOKENS_KEPT: usize = 64;
/// How long a graceful shutdown waits for the peer's close frame.
const SHUTDOWN_LINGER: Duration = Duration::from_secs(1);

/// What a frame in the send queue is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    Heartbeat { seq: u64 },
}

#[derive(Debug)]
struct Outstanding {
    seq: u64,
    sent_at: Instant,
}

#[derive(Debug)]
struct InFlight {
    frame: FrameId,
    kind: FrameKind,
    size: usize,
}

/// One WebSocket and its heartbeat state (cleared with it).
#[derive(Debug)]
struct Conn {
    socket: SocketId,
    connection_id: String,
    opened_at: Option<Instant>,
    last_inbound: Instant,
    last_heartbeat_at: Option<Instant>,
    outstanding: VecDeque<Outstanding>,
    queue: VecDeque<(FrameKind, String)>,
    in_flight: Option<InFlight>,
    missed_acks: u32,
    acked: bool,
}

impl Conn {
    fn new(socket: SocketId, connection_id: String, now: Instant) -> Self {
        Conn {
            socket,
            connection_id,
            opened_at: None,
            last_inbound: now,
            last_heartbeat_at: None,
            outstanding: VecDeque::new(),
            queue: VecDeque::new(),
            in_flight: None,
            missed_acks: 0,
            acked: false,
        }
    }

    fn heartbeat_pending(&self) -> bool {
        self.queue
            .iter()
            .any(|(k, _)| matches!(k, FrameKind::Heartbeat { .. }))
            || matches!(
                self.in_flight,
                Some(InFlight {
                    kind: FrameKind::Heartbeat { .. },
                    ..
                })
            )
    }
}

/// A notification channel (notifications profile).
#[derive(Debug, Clone)]
struct Channel {
    id: String,
    connect_uri: String,
    /// How long it lives from its creation (its `expires`, at most 24 h).
    lifetime: Duration,
}

/// Why a connection setup runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SetupKind {
    /// First connection or a reconnect: there is no active socket.
    Connect,
    /// Make-before-break: the active socket stays until the new one is open.
    Rollover,
}

/// Where a setup is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum SetupStep {
    /// Waiting for a REST call (token, channel or subscriptions).
    Rest,
    /// Waiting for the socket to open.
    Opening(SocketId),
}

#[derive(Debug, Clone)]
struct Setup {
    kind: SetupKind,
    step: SetupStep,
    channel: Option<Channel>,
}

/// What a REST call is for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RestCall {
    Token,
    CreateChannel,
    /// Replace the channel's subscriptions (setup, or to extend the channel before it expires).
    Subscribe {
        channel_id: String,
        topics: Vec<String>,
        extend: bool,
    },
    /// Add topics to the current channel (the application asked).
    AddTopics {
        channel_id: String,
        topics: Vec<String>,
    },
}

impl RestCall {
    fn describe(&self) -> String {
        match self {
            RestCall::Token => "requesting an OAuth token".into(),
            RestCall::CreateChannel => "creating a notification channel".into(),
            RestCall::Subscribe { topics, .. } | RestCall::AddTopics { topics, .. } => {
                let mut shown: Vec<&str> = topics.iter().take(5).map(|s| s.as_str()).collect();
                if topics.len() > 5 {
                    shown.push("…");
                }
                format!("subscribing to topics [{}]", shown.join(", "))
            }
        }
    }
}

#[derive(Debug)]
struct PendingRest {
    id: RequestId,
    call: RestCall,
    first_sent: Instant,
    refreshed_for_401: bool,
}

/// The sans-IO keep-alive state machine. See the [crate docs](crate) for the run loop.
#[derive(Debug)]
pub struct KeepAliveMachine {
    config: Config,
    rng: Rng,
    wall: WallClock,
    now: Instant,
    state: State,
    actions: VecDeque<Action>,
    timers: TimerTable,
    stats: Stats,
    latency: LatencyWindow,
    backoff: Backoff,
    token: TokenCache,
    next_socket: u64,
    next_frame: u64,
    next_request: u64,
    next_seq: u64,
    /// Consecutive failed connection attempts (reset after `min_uptime` of health).
    attempts: u32,
    last_error: String,
    active: Option<Conn>,
    /// Sockets we closed that may still deliver until they end (a rollover's old socket), each with the
    /// deadline after which it is discarded. `Timer::Linger` holds the earliest.
    closing: Vec<(SocketId, Instant)>,
    /// Sockets we discarded: whatever the driver still reports about them is a leftover. Bounded.
    discarded: VecDeque<SocketId>,
    setup: Option<Setup>,
    channel: Option<Channel>,
    rest: Option<PendingRest>,
    rest_queue: VecDeque<RestCall>,
    /// When the current REST call chain first started waiting (for the retry budget).
    rest_retry: Option<(RestCall, Instant, bool)>,
    topics: Vec<String>,
    topic_set: HashSet<String>,
    dedup_order: VecDeque<u64>,
    dedup_set: HashSet<u64>,
    connection_id: String,
    healthy_samples: u32,
    loss_alerted: bool,
    ever_opened: bool,
    token_fail_streak: u32,
    /// A call that got a 401: sent again (once) after the fresh token arrives.
    retry_after_token: Option<(RestCall, Instant)>,
    /// The handshake got a 401 and the token was refreshed for it: a second 401 stops.
    handshake_refreshed: bool,
    /// Recent access tokens (expired ones too), scrubbed from any text that leaves the machine.
    issued_tokens: VecDeque<crate::Secret>,
}

impl KeepAliveMachine {
    /// Validates `config` and creates the machine. `now` and `wall` anchor time (wall-clock values in frames
    /// and audit entries derive from them); `seed` drives jitter and connection ids. The first actions (a
    /// token request or a connect) are ready at once.
    pub fn new(
        config: Config,
        now: Instant,
        wall: SystemTime,
        seed: u64,
    ) -> Result<Self, crate::ConfigError> {
        config.validate()?;
        let mut rng = Rng::new(seed);
        let connection_id = rng.uuid_v4();
        let topics: Vec<String> = dedup_topics(&config.topics);
        let mut m = KeepAliveMachine {
            latency: LatencyWindow::new(config.rtt_window),
            backoff: Backoff {
                base: config.backoff_base,
                factor: config.backoff_factor,
                max: config.backoff_max,
            },
            topic_set: topics.iter().cloned().collect(),
            topics,
            config,
            rng,
            wall: WallClock::new(now, wall),
            now,
            state: State::Connecting,
            actions: VecDeque::new(),
            timers: TimerTable::default(),
            stats: Stats::default(),
            token: TokenCache::default(),
            next_socket: 0,
            next_frame: 0,
            next_request: 0,
            next_seq: 0,
            attempts: 0,
            last_error: String::new(),
            active: None,
            closing: Vec::new(),
            discarded: VecDeque::new(),
            setup: None,
            channel: None,
            rest: None,
            rest_queue: VecDeque::new(),
            rest_retry: None,
            dedup_order: VecDeque::new(),
            dedup_set: HashSet::new(),
            connection_id,
            healthy_samples: 0,
            loss_alerted: false,
            ever_opened: false,
            token_fail_streak: 0,
            retry_after_token: None,
            handshake_refreshed: false,
            issued_tokens: VecDeque::new(),
        };
        m.start_setup(SetupKind::Connect);
        Ok(m)
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The connection state.
    pub fn state(&self) -> State {
        self.state
    }

    /// True once the machine has stopped for good.
    pub fn is_stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// The id of the current connection (a UUID, as in audit entries).
    pub fn connection_id(&self) -> &str {
        &self.connection_id
    }

    /// The topics subscribed (or to be subscribed).
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Counters and gauges.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.state = self.state;
        s.avg_latency_ms = self.latency.avg_ms();
        [s.rtt_p50_ms, s.rtt_p95_ms, s.rtt_p99_ms] =
            self.latency.percentiles_ms([50.0, 95.0, 99.0]);
        s.packet_loss = self.latency.loss();
        s.rtt_samples = self.latency.samples();
        s.uptime_ms = self
            .active
            .as_ref()
            .and_then(|c| c.opened_at)
            .map(|t| self.now.saturating_duration_since(t).as_millis() as u64)
            .unwrap_or(0);
        s
    }

    /// The next action to perform, in the order decided. Drain after every `handle`.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When to call `handle(now, Event::Tick)` next. Once stopped, only the linger deadline of a socket
    /// still closing; `None` when [`KeepAliveMachine::is_finished`].
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.is_stopped() {
            self.timers.get(Timer::Linger)
        } else {
            self.timers.next()
        }
    }

    /// Stopped, and every socket closed or discarded: nothing will ever be asked of the driver again.
    pub fn is_finished(&self) -> bool {
        self.is_stopped() && self.closing.is_empty()
    }

    /// Feeds one event at time `now`. Time that goes backwards is clamped (and counted). Due timers fire
    /// first, then the event is processed. Never panics, whatever the input.
    pub fn handle(&mut self, now: Instant, event: Event) {
        if now < self.now {
            self.stats.clock_regressions += 1;
            if !self.is_stopped() {
                self.audit(AuditEvent::ClockWentBackwards, 0, None);
            }
        } else {
            self.now = now;
        }
        if self.is_stopped() {
            if self
                .timers
                .get(Timer::Linger)
                .is_some_and(|d| d <= self.now)
            {
                self.expire_lingers();
            }
            self.after_stop(event);
            return;
        }
        self.fire_timers();
        if self.is_stopped() {
            return;
        }
        match event {
            Event::Tick => {}
            Event::Opened { socket } => self.on_opened(socket),
            Event::FrameReceived { socket, text } => self.on_text(socket, &text),
            Event::BinaryReceived { socket, data } => self.on_binary(socket, data.len()),
            Event::SendCompleted { socket, frame } => self.on_send_completed(socket, frame),
            Event::SendFailed {
                socket,
                frame,
                error,
            } => self.on_send_failed(socket, frame, error),
            Event::Closed {
                socket,
                code,
                reason,
            } => self.on_closed(socket, code, reason),
            Event::ConnectFailed {
                socket,
                status,
                retry_after,
                error,
            } => self.on_connect_failed(socket, status, retry_after, error),
            Event::HttpResponse(resp) => self.on_http_response(resp),
            Event::HttpFailed { request, error } => self.on_http_failed(request, error),
            Event::TokenExpired => {
                self.token.invalidate();
                self.timers.clear(Timer::TokenRefresh);
                if self.config.has_credentials() {
                    self.enqueue_rest_front(RestCall::Token);
                }
            }
            Event::Subscribe { topics } => self.on_subscribe(topics),
            Event::Shutdown => self.shutdown(),
        }
    }

    /// After `Stopped` nothing is acted on. What the driver still reports about sockets the machine closed
    /// (their last frames, write reports, the close itself) and answers to requests it had sent are
    /// expected leftovers; anything else is counted as unexpected.
    fn after_stop(&mut self, event: Event) {
        let leftover = match &event {
            Event::Tick | Event::Shutdown => true,
            Event::Closed { socket, .. } => {
                let known = self.is_closing(*socket) || self.was_discarded(*socket);
                self.forget_closing(*socket);
                self.discarded.retain(|s| s != socket);
                known
            }
            Event::Opened { socket }
            | Event::FrameReceived { socket, .. }
            | Event::BinaryReceived { socket, .. }
            | Event::SendCompleted { socket, .. }
            | Event::SendFailed { socket, .. }
            | Event::ConnectFailed { socket, .. } => {
                self.is_closing(*socket) || self.was_discarded(*socket)
            }
            Event::HttpResponse(HttpResponse { request, .. })
            | Event::HttpFailed { request, .. } => request.0 <= self.next_request,
            Event::TokenExpired | Event::Subscribe { .. } => false,
        };
        if !leftover {
            self.stats.unexpected_events += 1;
        }
    }

    // ----- time -----

    fn fire_timers(&mut self) {
        // Bounded: each pass clears the timer it fires; a handler may re-arm a timer in the future only.
        for _ in 0..64 {
            let Some((timer, deadline)) = self.timers.pop_due(self.now) else {
                return;
            };
            if timer == Timer::Heartbeat {
                // How late the schedule ran: the driver's wake-up and this call's own delay.
                self.stats
                    .heartbeat_lateness
                    .record(self.now.saturating_duration_since(deadline));
            }
            self.on_timer(timer);
            if self.is_stopped() {
                return;
            }
        }
    }

    fn on_timer(&mut self, timer: Timer) {
        match timer {
            Timer::Heartbeat => self.send_heartbeat(),
            Timer::AckTimeout => self.on_ack_timeout(),
            Timer::Idle => {
                let idle = self
                    .active
                    .as_ref()
                    .map(|c| self.now.saturating_duration_since(c.last_inbound))
                    .unwrap_or_default();
                self.declare_dead(format!(
                    "no inbound frame for {} ms (idle timeout {} ms)",
                    idle.as_millis(),
                    self.config.max_idle.as_millis()
                ));
            }
            Timer::Reconnect => {
                if self.setup.is_none() {
                    self.start_setup(if self.active.is_some() {
                        SetupKind::Rollover
                    } else {
                        SetupKind::Connect
                    });
                }
            }
            Timer::ConnectTimeout => {
                if matches!(
                    self.setup,
                    Some(Setup {
                        step: SetupStep::Opening(_),
                        ..
                    })
                ) {
                    // setup_failed closes the half-open socket.
                    self.setup_failed(format!(
                        "the socket did not open within {} ms",
                        self.config.connect_timeout.as_millis()
                    ));
                }
            }
            Timer::TokenRefresh => {
                if self.config.has_credentials() {
                    self.enqueue_rest_front(RestCall::Token);
                }
            }
            Timer::HttpRetry => {
                if let Some((call, first, refreshed)) = self.rest_retry.take() {
                    self.send_rest(call, first, refreshed);
                }
            }
            Timer::HttpTimeout => {
                if let Some(p) = self.rest.take() {
                    self.rest_failed(
                        p.call,
                        format!(
                            "no answer within {} ms",
                            self.config.request_timeout.as_millis()
                        ),
                    );
                }
            }
            Timer::MinUptime => {
                if self.active.as_ref().is_some_and(|c| c.missed_acks == 0) {
                    self.attempts = 0;
                } else if self.active.is_some() {
                    self.timers
                        .set(Timer::MinUptime, self.now + self.config.min_uptime);
                }
            }
            Timer::Resubscribe => {
                if let Some(ch) = self.channel.clone() {
                    self.enqueue_rest(RestCall::Subscribe {
                        channel_id: ch.id,
                        topics: self.topics.clone(),
                        extend: true,
                    });
                }
            }
            Timer::Linger => self.expire_lingers(),
            Timer::RolloverDeadline => {
                if let Some(s) = self.setup.as_mut() {
                    if s.kind == SetupKind::Rollover {
                        s.kind = SetupKind::Connect;
                        if let Some(old) = self.active.take() {
                            self.close_socket(
                                old.socket,
                                CLOSE_ROLLOVER,
                                "planned close: rollover did not finish in time",
                                ROLLOVER_LINGER,
                            );
                            self.clear_conn_timers();
                            self.set_state(State::Reconnecting);
                        }
                    }
                }
            }
        }
    }

    // ----- actions and records -----

    fn push(&mut self, action: Action) {
        self.actions.push_back(action);
    }

    /// Asks the driver to close `socket`: a close frame, then its `Closed` report is expected within
    /// `linger`, and frames it still delivers meanwhile are accepted (a rollover's old socket). With a zero
    /// linger, or for a socket whose handshake is not done, the socket is discarded at once.
    fn close_socket(&mut self, socket: SocketId, code: u16, reason: &str, linger: Duration) {
        let mut reason = reason.to_owned();
        http::truncate(&mut reason, 123);
        let opening = matches!(
            &self.setup,
            Some(Setup { step: SetupStep::Opening(s), .. }) if *s == socket
        );
        if self.is_closing(socket) || self.was_discarded(socket) {
            return;
        }
        self.push(Action::Close {
            socket,
            code,
            reason,
        });
        if linger.is_zero() || opening {
            self.discard(socket);
        } else {
            self.closing.push((socket, self.now + linger));
            self.arm_linger();
        }
    }

    /// Tells the driver to drop `socket` now; anything it still reports about it is a leftover.
    fn discard(&mut self, socket: SocketId) {
        self.forget_closing(socket);
        if self.discarded.len() >= 16 {
            self.discarded.pop_front();
        }
        self.discarded.push_back(socket);
        self.push(Action::Discard { socket });
    }

    /// Discards every closing socket whose linger deadline has passed.
    fn expire_lingers(&mut self) {
        let now = self.now;
        while let Some(i) = self.closing.iter().position(|&(_, until)| until <= now) {
            let (socket, _) = self.closing.swap_remove(i);
            self.discard(socket);
        }
        self.arm_linger();
    }

    fn arm_linger(&mut self) {
        match self.closing.iter().map(|&(_, until)| until).min() {
            Some(at) => self.timers.set(Timer::Linger, at),
            None => self.timers.clear(Timer::Linger),
        }
    }

    fn is_closing(&self, socket: SocketId) -> bool {
        self.closing.iter().any(|&(s, _)| s == socket)
    }

    fn was_discarded(&self, socket: SocketId) -> bool {
        self.discarded.contains(&socket)
    }

    /// `socket` is closed or discarded: no linger deadline any more.
    fn forget_closing(&mut self, socket: SocketId) {
        if let Some(i) = self.closing.iter().position(|&(s, _)| s == socket) {
            self.closing.swap_remove(i);
            self.arm_linger();
        }
    }

    fn timestamp(&self) -> String {
        self.wall.iso8601(self.now)
    }

    fn audit(&mut self, event: AuditEvent, payload_size: usize, error: Option<String>) {
        let connection_id = self
            .active
            .as_ref()
            .map(|c| c.connection_id.clone())
            .unwrap_or_else(|| self.connection_id.clone());
        let error = error.map(|e| self.scrub(e));
        let entry = AuditEntry {
            timestamp: self.timestamp(),
            connection_id,
            event,
            payload_size,
            state: self.state,
            error,
        };
        self.push(Action::Audit(entry));
    }

    fn alert(&mut self, event: AlertEvent, metrics: AlertMetrics) {
        self.stats.alerts += 1;
        let mut metrics = metrics;
        metrics.detail = metrics.detail.map(|d| self.scrub(d));
        let alert = Alert {
            event,
            metrics,
            timestamp: self.timestamp(),
        };
        self.push(Action::Alert(alert));
    }

    /// Removes any credential from a text bound for an audit entry, alert or stop reason.
    fn scrub(&self, mut text: String) -> String {
        let secrets = self
            .config
            .client_secret
            .iter()
            .chain(self.issued_tokens.iter());
        for s in secrets {
            let s = s.expose();
            if s.len() >= 4 && text.contains(s) {
                text = text.replace(s, "[redacted]");
            }
        }
        http::truncate(&mut text, 500);
        text
    }

    fn set_state(&mut self, to: State) {
        let from = self.state;
        if from == to || from == State::Stopped {
            return;
        }
        self.state = to;
        self.push(Action::StateChanged { from, to });
        // Defect 2: the cadence follows the state.
        self.reschedule_heartbeat();
    }

    fn stop(&mut self, reason: StopReason) {
        if self.is_stopped() {
            return;
        }
        let alert = match &reason {
            StopReason::Shutdown => None,
            StopReason::AuthenticationFailed { .. } | StopReason::Forbidden { .. } => {
                Some(AlertEvent::AuthFailure)
            }
            StopReason::ReconnectAttemptsExhausted { .. } => Some(AlertEvent::ReconnectExhausted),
        };
        let reason = match reason {
            StopReason::AuthenticationFailed { detail } => StopReason::AuthenticationFailed {
                detail: self.scrub(detail),
            },
            StopReason::Forbidden { detail } => StopReason::Forbidden {
                detail: self.scrub(detail),
            },
            StopReason::ReconnectAttemptsExhausted {
                attempts,
                last_error,
            } => StopReason::ReconnectAttemptsExhausted {
                attempts,
                last_error: self.scrub(last_error),
            },
            r => r,
        };
        if let Some(event) = alert {
            self.alert(
                event,
                AlertMetrics {
                    attempts: Some(self.attempts),
                    detail: Some(reason.to_string()),
                    ..Default::default()
                },
            );
        }
        for socket in self.open_sockets() {
            let (code, why, linger) = if reason == StopReason::Shutdown {
                (1000, "Graceful shutdown", SHUTDOWN_LINGER)
            } else {
                (1000, "Stopping", Duration::ZERO)
            };
            self.close_socket(socket, code, why, linger);
        }
        self.audit(AuditEvent::Stopped, 0, Some(reason.to_string()));
        self.active = None;
        self.setup = None;
        self.rest = None;
        self.rest_queue.clear();
        self.rest_retry = None;
        self.timers.clear_all();
        self.arm_linger();
        let from = self.state;
        self.state = State::Stopped;
        self.push(Action::StateChanged {
            from,
            to: State::Stopped,
        });
        self.push(Action::Stopped(reason));
    }

    fn open_sockets(&self) -> Vec<SocketId> {
        let mut v = Vec::new();
        if let Some(c) = &self.active {
            v.push(c.socket);
        }
        if let Some(Setup {
            step: SetupStep::Opening(s),
            ..
        }) = &self.setup
        {
            v.push(*s);
        }
        v
    }

    fn shutdown(&mut self) {
        self.audit(AuditEvent::Shutdown, 0, None);
        self.stop(StopReason::Shutdown);
    }

    // ----- setup: token → channel → subscriptions → socket -----

    fn start_setup(&mut self, kind: SetupKind) {
        if self.setup.is_some() || self.is_stopped() {
            return;
        }
        self.timers.clear(Timer::Reconnect);
        self.connection_id = self.rng.uuid_v4();
        self.stats.connect_attempts += 1;
        self.setup = Some(Setup {
            kind,
            step: SetupStep::Rest,
            channel: None,
        });
        self.audit(AuditEvent::ConnectAttempt, 0, None);
        self.advance_setup();
    }

    /// Moves the setup one step on: what it needs next, it asks for.
    fn advance_setup(&mut self) {
        let Some(setup) = self.setup.clone() else {
            return;
        };
        if setup.step != SetupStep::Rest || self.rest.is_some() || self.rest_retry.is_some() {
            return;
        }
        match self.config.profile {
            ProfileKind::Notifications => match setup.channel {
                None => self.enqueue_rest(RestCall::CreateChannel),
                Some(ch) => self.open_socket(ch.connect_uri.clone(), Headers::new()),
            },
            ProfileKind::KeepaliveFrame => {
                let mut headers = Headers::new();
                if self.config.has_credentials() {
                    match self.token.valid_at(self.now) {
                        Some(t) => headers.push("Authorization", format!("Bearer {}", t.expose())),
                        None => {
                            self.enqueue_rest_front(RestCall::Token);
                            return;
                        }
                    }
                }
                let url = self.config.url.clone().unwrap_or_default();
                self.open_socket(url, headers);
            }
        }
    }

    fn open_socket(&mut self, url: String, headers: Headers) {
        // The configuration's URLs were checked at construction; a channel's `connectUri` comes from the
        // server and is checked here, with the same policy.
        let websocket = matches!(url.split_once("://"), Some(("ws" | "wss", _)));
        let scheme_ok =
            websocket && crate::config::check_scheme(&url, self.config.allow_insecure).is_ok();
        if !scheme_ok {
            self.setup_failed(format!(
                "refusing to connect to `{url}`: not wss:// (set allow_insecure for a local gateway)"
            ));
            return;
        }
        self.next_socket += 1;
        let socket = SocketId(self.next_socket);
        if let Some(s) = self.setup.as_mut() {
            s.step = SetupStep::Opening(socket);
        }
        self.timers.set(
            Timer::ConnectTimeout,
            self.now + self.config.connect_timeout,
        );
        self.push(Action::Connect {
            socket,
            url,
            headers,
        });
    }

    fn on_opened(&mut self, socket: SocketId) {
        if self.was_discarded(socket) {
            return; // it opened while we were giving up on it; the driver drops it
        }
        let Some(setup) = self.setup.clone() else {
            return self.unexpected(format!("{socket} opened but no connection was pending"));
        };
        if setup.step != SetupStep::Opening(socket) {
            return self.unexpected(format!("{socket} opened but it is not the pending socket"));
        }
        self.timers.clear(Timer::ConnectTimeout);
        self.timers.clear(Timer::RolloverDeadline);
        self.setup = None;
        self.stats.connections_opened += 1;
        self.handshake_refreshed = false;
        if let Some(ch) = setup.channel.clone() {
            let at = self.now + self.resubscribe_after(ch.lifetime);
            self.channel = Some(ch);
            self.timers.set(Timer::Resubscribe, at);
        }
        let rollover = setup.kind == SetupKind::Rollover && self.active.is_some();
        if let Some(old) = self.active.take() {
            self.close_socket(
                old.socket,
                CLOSE_ROLLOVER,
                "planned close: moved to a new channel",
                ROLLOVER_LINGER,
            );
        }
        self.clear_conn_timers();
        let mut conn = Conn::new(socket, self.connection_id.clone(), self.now);
        conn.opened_at = Some(self.now);
        self.active = Some(conn);
        self.ever_opened = true;
        if rollover {
            self.stats.rollovers += 1;
            self.audit(AuditEvent::RolloverComplete, 0, None);
            // Same network, same history: keep the latency window; the new socket starts its own pings.
            if self.state == State::Reconnecting || self.state == State::Connecting {
                self.set_state(State::Stable);
            }
        } else {
            self.latency.clear();
            self.healthy_samples = 0;
            self.audit(AuditEvent::Connected, 0, None);
        }
        self.timers
            .set(Timer::Idle, self.now + self.config.max_idle);
        self.timers
            .set(Timer::MinUptime, self.now + self.config.min_uptime);
        // Probe the new path at once.
        self.send_heartbeat();
    }

    fn on_connect_failed(
        &mut self,
        socket: SocketId,
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    ) {
        if self.was_discarded(socket) {
            return; // the attempt failed on its own as we abandoned it (e.g. its connect timeout fired first)
        }
        match &self.setup {
            Some(Setup {
                step: SetupStep::Opening(s),
                ..
            }) if *s == socket => {}
            _ => return self.unexpected(format!("connect failure for unknown {socket}")),
        }
        self.timers.clear(Timer::ConnectTimeout);
        let detail = match status {
            Some(st) => format!("handshake refused with HTTP {st}: {error}"),
            None => format!("connect failed: {error}"),
        };
        match status {
            Some(401) if self.config.has_credentials() => {
                self.audit(AuditEvent::ConnectFailure, 0, Some(detail.clone()));
                if self.handshake_refreshed {
                    return self.stop(StopReason::AuthenticationFailed {
                        detail: format!("still refused after a token refresh: {detail}"),
                    });
                }
                self.handshake_refreshed = true;
                self.token.invalidate();
                if let Some(s) = self.setup.as_mut() {
                    s.step = SetupStep::Rest;
                }
                self.enqueue_rest_front(RestCall::Token);
            }
            Some(403) => {
                self.audit(AuditEvent::ConnectFailure, 0, Some(detail.clone()));
                self.stop(StopReason::Forbidden {
                    detail: format!("opening the socket: {detail}"),
                })
            }
            Some(404) if self.config.profile == ProfileKind::Notifications => {
                // The channel is gone: take a new one.
                self.audit(AuditEvent::ChannelExpired, 0, Some(detail));
                if let Some(s) = self.setup.as_mut() {
                    s.step = SetupStep::Rest;
                    s.channel = None;
                }
                self.advance_setup();
            }
            _ => {
                self.audit(AuditEvent::ConnectFailure, 0, Some(detail.clone()));
                // The attempt is over on the driver's side: nothing to close.
                if let Some(s) = self.setup.as_mut() {
                    s.step = SetupStep::Rest;
                }
                self.setup_failed_after(detail, retry_after);
            }
        }
    }

    fn setup_failed(&mut self, error: String) {
        self.setup_failed_after(error, None);
    }

    /// The setup failed: one reconnect, after a backoff delay (at least `min_delay`).
    fn setup_failed_after(&mut self, error: String, min_delay: Option<Duration>) {
        let Some(setup) = self.setup.take() else {
            return;
        };
        self.timers.clear(Timer::ConnectTimeout);
        if let SetupStep::Opening(socket) = setup.step {
            // Make sure the driver drops a half-open attempt.
            self.close_socket(
                socket,
                CLOSE_CONNECT_TIMEOUT,
                "connection attempt abandoned",
                Duration::ZERO,
            );
        }
        self.schedule_reconnect(error, min_delay);
    }

    /// Exactly one reconnect at a time (defect 7), with full jitter (defect 9), and a stop after the last
    /// attempt (defect 10).
    fn schedule_reconnect(&mut self, error: String, min_delay: Option<Duration>) {
        if self.setup.is_some() || self.timers.is_set(Timer::Reconnect) || self.is_stopped() {
            return;
        }
        self.last_error = error;
        if self.active.is_none() {
            self.set_state(if self.ever_opened {
                State::Reconnecting
            } else {
                State::Connecting
            });
        }
        if self.attempts >= self.config.max_reconnect_attempts {
            let last_error = self.last_error.clone();
            return self.stop(StopReason::ReconnectAttemptsExhausted {
                attempts: self.attempts,
                last_error,
            });
        }
        self.attempts += 1;
        let mut delay = self.backoff.delay(self.attempts, &mut self.rng);
        if let Some(min) = min_delay {
            delay = delay.max(min.min(self.config.retry_budget.max(self.config.backoff_max)));
        }
        self.stats.reconnects += 1;
        self.timers.set(Timer::Reconnect, self.now + delay);
        self.audit(
            AuditEvent::ReconnectScheduled,
            0,
            Some(format!(
                "attempt {} of {} in {} ms after: {}",
                self.attempts,
                self.config.max_reconnect_attempts,
                delay.as_millis(),
                self.last_error
            )),
        );
        self.push(Action::ReconnectAfter(delay));
    }

    /// The active socket is gone: forget it and reconnect.
    fn connection_lost(&mut self, error: String) {
        if self.active.take().is_none() {
            return;
        }
        self.clear_conn_timers();
        self.set_state(State::Reconnecting);
        if matches!(
            self.setup,
            Some(Setup {
                kind: SetupKind::Rollover,
                ..
            })
        ) {
            // A rollover is already bringing up the next socket.
            if let Some(s) = self.setup.as_mut() {
                s.kind = SetupKind::Connect;
            }
            self.last_error = error;
            return;
        }
        self.schedule_reconnect(error, None);
    }

    /// When to extend a channel that lives `lifetime`: `resubscribe_margin` before it expires, or halfway
    /// for a channel shorter than the margin.
    fn resubscribe_after(&self, lifetime: Duration) -> Duration {
        match lifetime.checked_sub(self.config.resubscribe_margin) {
            Some(d) if !d.is_zero() => d,
            _ => (lifetime / 2).max(Duration::from_secs(1)),
        }
    }

    fn clear_conn_timers(&mut self) {
        for t in [
            Timer::Heartbeat,
            Timer::AckTimeout,
            Timer::Idle,
            Timer::MinUptime,
        ] {
            self.timers.clear(t);
        }
    }

    fn declare_dead(&mut self, why: String) {
        let Some(conn) = self.active.as_ref() else {
            return;
        };
        let socket = conn.socket;
        let idle_ms = self
            .now
            .saturating_duration_since(conn.last_inbound)
            .as_millis() as u64;
        self.stats.dead_peers += 1;
        self.alert(
            AlertEvent::DeadPeer,
            AlertMetrics {
                avg_latency: Some(self.latency.avg_ms()),
                packet_loss: Some(self.latency.loss()),
                sent: Some(self.stats.heartbeats_sent),
                ack: Some(self.stats.heartbeats_acked),
                idle_ms: Some(idle_ms),
                detail: Some(why.clone()),
                ..Default::default()
            },
        );
        self.audit(AuditEvent::DeadPeer, 0, Some(why.clone()));
        self.close_socket(socket, CLOSE_DEAD_PEER, "dead peer", Duration::ZERO);
        self.connection_lost(format!("dead peer: {why}"));
    }

    fn on_closed(&mut self, socket: SocketId, code: Option<u16>, reason: String) {
        if self.is_closing(socket) {
            self.forget_closing(socket);
            return;
        }
        if self.was_discarded(socket) {
            // It was on its way when we discarded the socket; nothing can follow a socket's end.
            self.discarded.retain(|&s| s != socket);
            return;
        }
        if self.active.as_ref().is_some_and(|c| c.socket == socket) {
            let why = match code {
                Some(c) => format!("closed by peer with {c} {reason}"),
                None => format!("connection ended: {reason}"),
            };
            self.audit(AuditEvent::Disconnected, 0, Some(why.clone()));
            return self.connection_lost(why);
        }
        if matches!(&self.setup, Some(Setup { step: SetupStep::Opening(s), .. }) if *s == socket) {
            // Closed before it opened: a failed attempt.
            return self.on_connect_failed(socket, None, None, reason);
        }
        self.unexpected(format!("close for unknown {socket}"));
    }

    fn unexpected(&mut self, what: String) {
        self.stats.unexpected_events += 1;
        self.audit(AuditEvent::UnexpectedEvent, 0, Some(what));
    }

    // ----- heartbeats -----

    fn interval(&self) -> Duration {
        let m = &self.config.interval_matrix;
        match self.state {
            State::Stable => m.stable,
            State::Degraded => m.degraded,
            _ => m.reconnecting,
        }
    }

    fn reschedule_heartbeat(&mut self) {
        let Some(conn) = self.active.as_ref() else {
            return;
        };
        if let Some(last) = conn.last_heartbeat_at {
            let next = (last + self.interval()).max(self.now);
            self.timers.set(Timer::Heartbeat, next);
        }
    }

    fn send_heartbeat(&mut self) {
        let interval = self.interval();
        let now = self.now;
        let Some(conn) = self.active.as_ref() else {
            return;
        };
        if conn.heartbeat_pending() {
            // The previous one is still queued behind a slow write: don't pile up.
            self.timers.set(Timer::Heartbeat, now + interval);
            return;
        }
        if let Some(last) = conn.last_heartbeat_at {
            let earliest = last + self.config.min_interval;
            if now < earliest {
                self.timers.set(Timer::Heartbeat, earliest);
                return;
            }
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let text = match self.config.profile {
            ProfileKind::Notifications => Ok(frames::PING_FRAME.to_owned()),
            ProfileKind::KeepaliveFrame => {
                let ts = self.wall.epoch_ms(now);
                let conn_id = self
                    .active
                    .as_ref()
                    .map(|c| c.connection_id.as_str())
                    .unwrap_or("");
                KeepAlivePayload {
                    connection_id: conn_id,
                    kind: "KEEP_ALIVE",
                    timestamp: ts,
                    interval_matrix: IntervalInfo {
                        current: interval.as_millis() as u64,
                        state: self.state.as_str(),
                        next_expected: ts + interval.as_millis() as u64,
                    },
                    size_directive: SizeDirective {
                        bytes: 0,
                        max_allowed: self.config.max_payload_bytes,
                        compression: false,
                    },
                    seq,
                }
                .to_frame(self.config.min_interval.as_millis() as u64)
            }
        };
        self.timers.set(Timer::Heartbeat, now + interval);
        match text {
            Ok(text) if text.len() <= self.config.max_payload_bytes => {
                self.enqueue_frame(FrameKind::Heartbeat { seq }, text);
            }
            Ok(text) => {
                self.stats.validation_failures += 1;
                let err = format!(
                    "frame of {} bytes exceeds max_payload_bytes {}",
                    text.len(),
                    self.config.max_payload_bytes
                );
                self.audit(AuditEvent::ValidationFailure, text.len(), Some(err));
            }
            Err(e) => {
                self.stats.validation_failures += 1;
                self.audit(AuditEvent::ValidationFailure, 0, Some(e.to_string()));
            }
        }
    }

    fn enqueue_frame(&mut self, kind: FrameKind, text: String) {
        if let Some(conn) = self.active.as_mut() {
            conn.queue.push_back((kind, text));
        }
        self.pump_sends();
    }

    /// One frame in flight; the next goes out when the driver reports the last one written.
    fn pump_sends(&mut self) {
        let now = self.now;
        let Some(conn) = self.active.as_mut() else {
            return;
        };
        if conn.in_flight.is_some() {
            return;
        }
        let Some((kind, text)) = conn.queue.pop_front() else {
            return;
        };
        self.next_frame += 1;
        let frame = FrameId(self.next_frame);
        let socket = conn.socket;
        let size = text.len();
        let FrameKind::Heartbeat { seq } = kind;
        conn.last_heartbeat_at = Some(now);
        conn.outstanding
            .push_back(Outstanding { seq, sent_at: now });
        conn.in_flight = Some(InFlight { frame, kind, size });
        self.stats.heartbeats_sent += 1;
        if !self.timers.is_set(Timer::AckTimeout) {
            self.timers
                .set(Timer::AckTimeout, now + self.config.ack_timeout);
        }
        self.push(Action::SendFrame {
            socket,
            frame,
            text,
        });
    }

    fn on_send_completed(&mut self, socket: SocketId, frame: FrameId) {
        let Some(conn) = self.active.as_mut().filter(|c| c.socket == socket) else {
            if !self.is_closing(socket) && !self.was_discarded(socket) {
                self.unexpected(format!("send report for unknown {socket}"));
            }
            return;
        };
        match conn.in_flight.take() {
            Some(f) if f.frame == frame => {
                self.stats.frames_sent += 1;
                self.audit(AuditEvent::SendSuccess, f.size, None);
                self.pump_sends();
            }
            other => {
                conn.in_flight = other;
                self.unexpected(format!("send report for unknown frame {}", frame.0));
            }
        }
    }

    fn on_send_failed(&mut self, socket: SocketId, frame: FrameId, error: String) {
        let Some(conn) = self.active.as_mut().filter(|c| c.socket == socket) else {
            if !self.is_closing(socket) && !self.was_discarded(socket) {
                self.unexpected(format!("send failure for unknown {socket}"));
            }
            return;
        };
        let size = match conn.in_flight.take() {
            Some(f) if f.frame == frame => f.size,
            other => {
                conn.in_flight = other;
                return self.unexpected(format!("send failure for unknown frame {}", frame.0));
            }
        };
        self.stats.send_failures += 1;
        self.audit(AuditEvent::SendFailure, size, Some(error.clone()));
        self.close_socket(socket, CLOSE_SEND_FAILED, "send failed", Duration::ZERO);
        self.connection_lost(format!("send failed: {error}"));
    }

    fn on_ack_timeout(&mut self) {
        let now = self.now;
        let ack_timeout = self.config.ack_timeout;
        let Some(conn) = self.active.as_mut() else {
            return;
        };
        let mut lost = 0u32;
        while let Some(o) = conn.outstanding.front() {
            if o.sent_at + ack_timeout <= now {
                conn.outstanding.pop_front();
                lost += 1;
            } else {
                break;
            }
        }
        conn.missed_acks += lost;
        let missed = conn.missed_acks;
        let next = conn.outstanding.front().map(|o| o.sent_at + ack_timeout);
        if let Some(at) = next {
            self.timers.set(Timer::AckTimeout, at);
        }
        for _ in 0..lost {
            self.stats.heartbeats_lost += 1;
            self.latency.record_lost();
        }
        self.check_loss();
        if missed >= self.config.max_missed_acks {
            self.declare_dead(format!(
                "{missed} heartbeats in a row unanswered after {} ms",
                ack_timeout.as_millis()
            ));
        }
    }

    /// An ack or pong: `seq` names the heartbeat (it and every older one are answered), or `None` for
    /// the oldest outstanding (Genesys pongs carry no id).
    fn on_ack(&mut self, seq: Option<u64>) {
        let now = self.now;
        let Some(conn) = self.active.as_mut() else {
            return;
        };
        let pos = match seq {
            Some(s) => conn.outstanding.iter().position(|o| o.seq == s),
            None => (!conn.outstanding.is_empty()).then_some(0),
        };
        let Some(pos) = pos else {
            self.stats.acks_unmatched += 1;
            self.audit(
                AuditEvent::UnmatchedAck,
                0,
                Some(match seq {
                    Some(s) => format!("ack for heartbeat {s}, which is not outstanding"),
                    None => "ack with no heartbeat outstanding".into(),
                }),
            );
            return;
        };
        let mut implicit = 0u64;
        let mut rtt = Duration::ZERO;
        for i in 0..=pos {
            let o = conn.outstanding.pop_front().expect("pos < len");
            if i == pos {
                rtt = now.saturating_duration_since(o.sent_at);
            } else {
                implicit += 1;
            }
        }
        conn.missed_acks = 0;
        let first_ack = !conn.acked;
        conn.acked = true;
        let next = conn
            .outstanding
            .front()
            .map(|o| o.sent_at + self.config.ack_timeout);
        match next {
            Some(at) => self.timers.set(Timer::AckTimeout, at),
            None => self.timers.clear(Timer::AckTimeout),
        }
        for _ in 0..implicit {
            self.latency.record_answered();
        }
        self.stats.heartbeats_acked += implicit + 1;
        self.latency.record_rtt(rtt);
        self.stats.rtt_histogram.record(rtt);
        if first_ack && matches!(self.state, State::Connecting | State::Reconnecting) {
            self.set_state(State::Stable);
        }
        self.evaluate_latency(rtt);
        self.check_loss();
    }

    /// Hysteresis (defect 4): DEGRADED when the average crosses the threshold on a slow sample; STABLE
    /// again after `recovery_samples` healthy samples in a row.
    fn evaluate_latency(&mut self, rtt: Duration) {
        let threshold = self.config.latency_threshold;
        let avg = self.latency.avg_ms();
        let slow = rtt > threshold;
        match self.state {
            State::Stable if slow && avg > threshold.as_secs_f64() * 1000.0 => {
                self.healthy_samples = 0;
                self.set_state(State::Degraded);
                self.alert(
                    AlertEvent::LatencyThresholdExceeded,
                    AlertMetrics {
                        avg_latency: Some(avg),
                        packet_loss: Some(self.latency.loss()),
                        ..Default::default()
                    },
                );
            }
            State::Degraded => {
                if slow {
                    self.healthy_samples = 0;
                } else {
                    self.healthy_samples += 1;
                    if self.healthy_samples >= self.config.recovery_samples {
                        self.healthy_samples = 0;
                        self.set_state(State::Stable);
                    }
                }
            }
            _ => {}
        }
    }

    fn check_loss(&mut self) {
        let loss = self.latency.loss();
        if loss > self.config.max_packet_loss {
            if !self.loss_alerted {
                self.loss_alerted = true;
                self.alert(
                    AlertEvent::PacketLossCritical,
                    AlertMetrics {
                        packet_loss: Some(loss),
                        sent: Some(self.stats.heartbeats_sent),
                        ack: Some(self.stats.heartbeats_acked),
                        ..Default::default()
                    },
                );
            }
        } else {
            self.loss_alerted = false;
        }
    }

    // ----- inbound frames -----

    /// Liveness: any frame on the active socket proves the peer is there (defect 3: it is not an ack).
    fn touch(&mut self, socket: SocketId, len: usize) -> bool {
        self.stats.frames_received += 1;
        self.stats.bytes_received += len as u64;
        if let Some(conn) = self.active.as_mut().filter(|c| c.socket == socket) {
            conn.last_inbound = self.now;
            self.timers
                .set(Timer::Idle, self.now + self.config.max_idle);
            true
        } else {
            false
        }
    }

    fn on_binary(&mut self, socket: SocketId, len: usize) {
        let active = self.touch(socket, len);
        if !active && self.was_discarded(socket) {
            return;
        }
        if !active && !self.is_closing(socket) {
            return self.unexpected(format!("frame on unknown {socket}"));
        }
        self.stats.invalid_utf8 += 1;
        self.audit(
            AuditEvent::InvalidFrame,
            len,
            Some("binary frame or invalid UTF-8".into()),
        );
    }

    fn on_text(&mut self, socket: SocketId, text: &str) {
        let active = self.touch(socket, text.len());
        let closing = self.is_closing(socket);
        if !active && !closing && self.was_discarded(socket) {
            return;
        }
        if !active && !closing {
            return self.unexpected(format!("frame on unknown {socket}"));
        }
        if text.len() > self.config.max_inbound_bytes {
            self.stats.oversized_frames += 1;
            return self.audit(
                AuditEvent::OversizedFrame,
                text.len(),
                Some(format!(
                    "frame of {} bytes over max_inbound_bytes {}",
                    text.len(),
                    self.config.max_inbound_bytes
                )),
            );
        }
        match frames::classify(self.config.profile, text) {
            Inbound::KeepAliveAck { seq } => {
                if active {
                    self.on_ack(seq);
                }
            }
            Inbound::Pong => {
                if active {
                    self.on_ack(None);
                }
            }
            Inbound::ServerHeartbeat => self.stats.server_heartbeats += 1,
            Inbound::SocketClosing => {
                if active {
                    self.on_socket_closing();
                }
            }
            Inbound::ChannelGone { message } => {
                if active {
                    let message = message.into_owned();
                    self.audit(AuditEvent::ChannelExpired, text.len(), Some(message));
                    self.begin_rollover();
                }
            }
            Inbound::Notification {
                topic,
                correlation_id,
            } => {
                let topic = topic.into_owned();
                let correlation_id = correlation_id.map(|c| c.into_owned());
                self.on_notification(topic, correlation_id, text);
            }
            Inbound::WrongShape(why) => {
                self.stats.wrong_shape += 1;
                self.audit(AuditEvent::InvalidFrame, text.len(), Some(why.into()));
            }
            Inbound::NotJson => {
                self.stats.non_json += 1;
                self.audit(
                    AuditEvent::InvalidFrame,
                    text.len(),
                    Some("not JSON".into()),
                );
            }
        }
    }

    fn on_notification(&mut self, topic: String, correlation_id: Option<String>, raw: &str) {
        if self.config.profile == ProfileKind::Notifications && !self.topic_set.contains(&topic) {
            self.stats.unknown_topics += 1;
            return self.audit(
                AuditEvent::UnknownTopic,
                raw.len(),
                Some(format!("notification for unsubscribed topic `{topic}`")),
            );
        }
        if self.config.profile == ProfileKind::Notifications
            && !self.first_sighting(&correlation_id, raw)
        {
            self.stats.duplicates_dropped += 1;
            return;
        }
        self.stats.notifications_delivered += 1;
        self.push(Action::Deliver(Notification {
            topic_name: topic,
            raw: raw.to_owned(),
            correlation_id,
        }));
    }

    /// Rollover overlap: the same notification may come on the old and the new socket. Its key is
    /// `metadata.CorrelationId`, or the whole frame when there is none.
    fn first_sighting(&mut self, correlation_id: &Option<String>, raw: &str) -> bool {
        let key = fnv1a(correlation_id.as_deref().unwrap_or(raw).as_bytes());
        if self.dedup_set.contains(&key) {
            return false;
        }
        // Make room first, so that neither collection ever grows past the window.
        if self.dedup_order.len() >= self.config.dedup_window {
            if let Some(old) = self.dedup_order.pop_front() {
                self.dedup_set.remove(&old);
            }
        }
        self.dedup_set.insert(key);
        self.dedup_order.push_back(key);
        true
    }

    fn on_socket_closing(&mut self) {
        self.alert(
            AlertEvent::SocketClosing,
            AlertMetrics {
                detail: Some("server announced a planned close; rolling over".into()),
                ..Default::default()
            },
        );
        self.begin_rollover();
    }

    /// Make before break: a new channel and socket, then close the old one.
    fn begin_rollover(&mut self) {
        // Only a live socket rolls over; with none, the scheduled reconnect (and its backoff) stands.
        if self.config.profile != ProfileKind::Notifications
            || self.setup.is_some()
            || self.active.is_none()
            || self.timers.is_set(Timer::Reconnect)
        {
            return;
        }
        self.audit(AuditEvent::RolloverStarted, 0, None);
        self.timers.set(
            Timer::RolloverDeadline,
            self.now + self.config.rollover_deadline,
        );
        self.timers.clear(Timer::Reconnect);
        self.start_setup(SetupKind::Rollover);
    }

    fn on_subscribe(&mut self, topics: Vec<String>) {
        let mut added = Vec::new();
        for t in topics {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                self.audit(
                    AuditEvent::UnexpectedEvent,
                    0,
                    Some(format!("`{t}` is not a topic name")),
                );
                continue;
            }
            if self.topic_set.len() >= 1000 {
                self.audit(
                    AuditEvent::UnexpectedEvent,
                    0,
                    Some("a channel takes at most 1000 topics".into()),
                );
                break;
            }
            if self.topic_set.insert(t.clone()) {
                self.topics.push(t.clone());
                added.push(t);
            }
        }
        if added.is_empty() || self.config.profile != ProfileKind::Notifications {
            return;
        }
        if let (Some(ch), true) = (self.channel.clone(), self.active.is_some()) {
            self.enqueue_rest(RestCall::AddTopics {
                channel_id: ch.id,
                topics: added,
            });
        }
        // Otherwise the next setup subscribes the whole list.
    }

    // ----- REST -----

    fn enqueue_rest(&mut self, call: RestCall) {
        if self.rest.as_ref().is_some_and(|p| p.call == call) || self.rest_queue.contains(&call) {
            return;
        }
        self.rest_queue.push_back(call);
        self.pump_rest();
    }

    fn enqueue_rest_front(&mut self, call: RestCall) {
        if self.rest.as_ref().is_some_and(|p| p.call == call) {
            return;
        }
        self.rest_queue.retain(|c| *c != call);
        self.rest_queue.push_front(call);
        self.pump_rest();
    }

    fn pump_rest(&mut self) {
        if self.rest.is_some() || self.rest_retry.is_some() || self.is_stopped() {
            return;
        }
        let Some(call) = self.rest_queue.pop_front() else {
            return;
        };
        self.send_rest(call, self.now, false);
    }

    /// Builds and emits one request. A bearer call with no good token gets a token first (defect 11).
    fn send_rest(&mut self, call: RestCall, first_sent: Instant, refreshed_for_401: bool) {
        let api = self.config.api_base();
        let mut headers = Headers::new();
        let (method, url, body) = match &call {
            RestCall::Token => {
                let (Some(id), Some(secret)) = (&self.config.client_id, &self.config.client_secret)
                else {
                    return;
                };
                headers.push("Authorization", http::basic_auth(id, secret));
                headers.push("Content-Type", "application/x-www-form-urlencoded");
                (
                    Method::Post,
                    self.config.token_url(),
                    Some("grant_type=client_credentials".to_owned()),
                )
            }
            RestCall::CreateChannel => (
                Method::Post,
                format!("{api}/api/v2/notifications/channels"),
                Some("{}".to_owned()),
            ),
            RestCall::Subscribe {
                channel_id, topics, ..
            } => (
                Method::Put,
                format!("{api}/api/v2/notifications/channels/{channel_id}/subscriptions"),
                Some(http::topics_body(topics)),
            ),
            RestCall::AddTopics { channel_id, topics } => (
                Method::Post,
                format!("{api}/api/v2/notifications/channels/{channel_id}/subscriptions"),
                Some(http::topics_body(topics)),
            ),
        };
        if call != RestCall::Token {
            match self.token.valid_at(self.now) {
                Some(t) => headers.push("Authorization", format!("Bearer {}", t.expose())),
                None => {
                    // Put the call back behind a fresh token.
                    self.rest_queue.push_front(call);
                    self.rest_queue.push_front(RestCall::Token);
                    return self.pump_rest();
                }
            }
            headers.push("Content-Type", "application/json");
        }
        headers.push("Accept", "application/json");
        self.next_request += 1;
        let id = RequestId(self.next_request);
        self.stats.http_requests += 1;
        self.rest = Some(PendingRest {
            id,
            call,
            first_sent,
            refreshed_for_401,
        });
        self.timers
            .set(Timer::HttpTimeout, self.now + self.config.request_timeout);
        self.push(Action::Http(HttpRequest {
            id,
            method,
            url,
            headers,
            body,
            timeout: self.config.request_timeout,
        }));
    }

    fn take_rest(&mut self, id: RequestId) -> Option<PendingRest> {
        if self.rest.as_ref().is_some_and(|p| p.id == id) {
            self.timers.clear(Timer::HttpTimeout);
            self.rest.take()
        } else {
            None
        }
    }

    fn on_http_failed(&mut self, request: RequestId, error: String) {
        let Some(p) = self.take_rest(request) else {
            return self.unexpected(format!("failure report for unknown request {}", request.0));
        };
        self.rest_failed(p.call, error);
    }

    fn on_http_response(&mut self, resp: HttpResponse) {
        let Some(p) = self.take_rest(resp.request) else {
            return self.unexpected(format!("response for unknown request {}", resp.request.0));
        };
        let status = resp.status;
        match status {
            200..=299 => self.rest_succeeded(p.call, &resp.body),
            401 if p.call == RestCall::Token => {
                let detail = format!(
                    "the token endpoint refused the client credentials ({})",
                    http::describe_error(status, &resp.body)
                );
                self.audit(AuditEvent::TokenFailure, 0, Some(detail.clone()));
                self.stop(StopReason::AuthenticationFailed { detail });
            }
            400 if p.call == RestCall::Token => {
                let detail = format!(
                    "the token request was refused ({})",
                    http::describe_error(status, &resp.body)
                );
                self.audit(AuditEvent::TokenFailure, 0, Some(detail.clone()));
                self.stop(StopReason::AuthenticationFailed { detail });
            }
            401 => {
                // Defect 12: one refresh, then retry once.
                let detail = format!(
                    "{}: {}",
                    p.call.describe(),
                    http::describe_error(status, &resp.body)
                );
                if p.refreshed_for_401 {
                    self.audit(AuditEvent::HttpFailure, 0, Some(detail.clone()));
                    return self.stop(StopReason::AuthenticationFailed {
                        detail: format!("still 401 after a token refresh: {detail}"),
                    });
                }
                self.stats.http_retries += 1;
                self.audit(AuditEvent::HttpRetry, 0, Some(detail));
                self.token.invalidate();
                self.rest_retry = None;
                // Token first, then the same call, marked as already retried.
                self.send_rest_after_token(p.call, p.first_sent);
            }
            403 => {
                let detail = format!(
                    "{}: {}",
                    p.call.describe(),
                    http::describe_error(status, &resp.body)
                );
                self.audit(AuditEvent::HttpFailure, 0, Some(detail.clone()));
                self.stop(StopReason::Forbidden { detail });
            }
            404 if matches!(
                p.call,
                RestCall::Subscribe { .. } | RestCall::AddTopics { .. }
            ) =>
            {
                self.audit(
                    AuditEvent::ChannelExpired,
                    0,
                    Some(format!("{}: channel not found", p.call.describe())),
                );
                if let Some(s) = self.setup.as_mut() {
                    s.channel = None;
                    self.advance_setup();
                } else {
                    self.begin_rollover();
                }
            }
            429 | 502 | 503 | 504 => {
                let wait =
                    http::retry_after(&resp.headers).unwrap_or(self.config.retry_after_default);
                let waited = self.now.saturating_duration_since(p.first_sent);
                let detail = format!(
                    "{}: {}",
                    p.call.describe(),
                    http::describe_error(status, &resp.body)
                );
                if waited + wait > self.config.retry_budget {
                    return self.rest_failed(
                        p.call,
                        format!(
                            "{detail}; gave up after {} ms of retries",
                            waited.as_millis()
                        ),
                    );
                }
                self.stats.http_retries += 1;
                self.audit(
                    AuditEvent::HttpRetry,
                    0,
                    Some(format!("{detail}; retrying in {} ms", wait.as_millis())),
                );
                self.rest_retry = Some((p.call, p.first_sent, p.refreshed_for_401));
                self.timers.set(Timer::HttpRetry, self.now + wait);
            }
            _ => {
                let detail = format!(
                    "{}: {}",
                    p.call.describe(),
                    http::describe_error(status, &resp.body)
                );
                self.rest_failed(p.call, detail);
            }
        }
    }

    fn send_rest_after_token(&mut self, call: RestCall, first_sent: Instant) {
        // The retried call must not be retried for 401 again: remember it through the token request.
        self.rest_queue
            .retain(|c| *c != call && *c != RestCall::Token);
        self.retry_after_token = Some((call, first_sent));
        self.send_rest(RestCall::Token, self.now, false);
    }

    fn rest_succeeded(&mut self, call: RestCall, body: &[u8]) {
        match call {
            RestCall::Token => match serde_json::from_slice::<http::TokenResponse>(body) {
                Ok(t)
                    if !t.access_token.is_empty()
                        && t.expires_in.is_none_or(|s| s.is_finite() && s >= 1.0) =>
                {
                    // Genesys tokens live 300 s to 48 h; below a second is a broken answer, refused
                    // rather than refreshed in a tight loop.
                    let secs = t.expires_in.unwrap_or(86_399.0).min(1e7);
                    let lifetime = Duration::from_secs_f64(secs);
                    let token = crate::Secret::new(t.access_token);
                    if self.issued_tokens.len() >= ISSUED_TOKENS_KEPT {
                        self.issued_tokens.pop_front();
                    }
                    self.issued_tokens.push_back(token.clone());
                    let refresh_at = self.token.store(
                        token,
                        lifetime,
                        self.config.token_refresh_margin,
                        self.now,
                    );
                    self.token_fail_streak = 0;
                    self.stats.token_refreshes += 1;
                    self.timers.set(Timer::TokenRefresh, refresh_at);
                    self.audit(
                        AuditEvent::TokenRefreshed,
                        0,
                        Some(format!("token valid for {} s", lifetime.as_secs())),
                    );
                    if let Some((call, first)) = self.retry_after_token.take() {
                        self.send_rest(call, first, true);
                        return;
                    }
                }
                _ => {
                    return self.rest_failed(
                        RestCall::Token,
                        "the token response had no access_token, or an expires_in below 1 s".into(),
                    )
                }
            },
            RestCall::CreateChannel => {
                match serde_json::from_slice::<http::ChannelResponse>(body) {
                    Ok(ch) if !ch.connect_uri.is_empty() && !ch.id.is_empty() => {
                        let lifetime = ch
                            .expires
                            .as_deref()
                            .and_then(crate::time::parse_iso8601)
                            .and_then(|exp| exp.duration_since(self.wall.at(self.now)).ok())
                            .map_or(CHANNEL_LIFETIME, |d| d.min(CHANNEL_LIFETIME));
                        self.audit(
                            AuditEvent::ChannelCreated,
                            0,
                            Some(format!("channel {}", ch.id)),
                        );
                        let channel = Channel {
                            id: ch.id.clone(),
                            connect_uri: ch.connect_uri,
                            lifetime,
                        };
                        if let Some(s) = self.setup.as_mut() {
                            s.channel = Some(channel);
                        }
                        if self.topics.is_empty() {
                            // Nothing to subscribe: straight to the socket.
                        } else if self.setup.is_some() {
                            self.rest_queue.push_front(RestCall::Subscribe {
                                channel_id: ch.id,
                                topics: self.topics.clone(),
                                extend: false,
                            });
                            return self.pump_rest();
                        }
                    }
                    _ => {
                        return self.rest_failed(
                            RestCall::CreateChannel,
                            "the channel response had no connectUri/id".into(),
                        )
                    }
                }
            }
            RestCall::Subscribe {
                channel_id,
                topics,
                extend,
            } => {
                let rejected: Vec<String> =
                    serde_json::from_slice::<http::SubscriptionResponse>(body)
                        .map(|r| {
                            r.entities
                                .into_iter()
                                .filter(|e| e.state.as_deref() == Some("Rejected"))
                                .map(|e| e.id)
                                .collect()
                        })
                        .unwrap_or_default();
                if !rejected.is_empty() {
                    return self.stop(StopReason::Forbidden {
                        detail: format!("topics rejected by the server: {}", rejected.join(", ")),
                    });
                }
                self.audit(
                    AuditEvent::Subscribed,
                    0,
                    Some(format!("{} topics on channel {channel_id}", topics.len())),
                );
                if extend {
                    // Resubscribing gives the channel a new lifetime.
                    let lifetime = self
                        .channel
                        .as_ref()
                        .map_or(CHANNEL_LIFETIME, |c| c.lifetime);
                    let at = self.now + self.resubscribe_after(lifetime);
                    self.timers.set(Timer::Resubscribe, at);
                }
            }
            RestCall::AddTopics { channel_id, topics } => {
                self.audit(
                    AuditEvent::Subscribed,
                    0,
                    Some(format!(
                        "added {} topics on channel {channel_id}",
                        topics.len()
                    )),
                );
            }
        }
        self.after_rest();
    }

    /// After any REST call ends: move the setup on, then the next queued call.
    fn after_rest(&mut self) {
        self.advance_setup();
        self.pump_rest();
    }

    fn rest_failed(&mut self, call: RestCall, error: String) {
        self.audit(AuditEvent::HttpFailure, 0, Some(error.clone()));
        self.retry_after_token = None;
        let setup_call = matches!(
            call,
            RestCall::Token | RestCall::CreateChannel | RestCall::Subscribe { extend: false, .. }
        );
        if self.setup.is_some() && setup_call {
            // Any failure during setup: the attempt failed.
            self.rest_queue.clear();
            self.setup_failed(error);
            return self.pump_rest();
        }
        match call {
            RestCall::Token => {
                // The socket stays up; try again later, while the old token may still be good.
                self.token_fail_streak += 1;
                let delay = self
                    .backoff
                    .delay(self.token_fail_streak.min(30), &mut self.rng)
                    .max(self.config.retry_after_default);
                self.timers.set(Timer::TokenRefresh, self.now + delay);
                // Calls waiting for a token wait for the refresh.
                self.rest_queue.retain(|c| *c != RestCall::Token);
            }
            RestCall::Subscribe { extend: true, .. } => {
                self.timers.set(
                    Timer::Resubscribe,
                    self.now
                        + self
                            .config
                            .retry_after_default
                            .max(self.config.backoff_base),
                );
            }
            _ => {}
        }
        self.pump_rest();
    }
}

fn dedup_topics(topics: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    topics
        .iter()
        .filter(|t| seen.insert(t.as_str()))
        .cloned()
        .collect()
}

/// FNV-1a 64: the key for dropping duplicate notifications.
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
