//! Deterministic simulation: a virtual clock and a simulated Genesys gateway (token endpoint, channels,
//! subscriptions, sockets) whose latency, jitter, loss, idle timeout, blackholes, planned closes
//! (`socket_closing`), outages and token lifetime follow a seeded schedule.
//!
//! One call, [`run`], plays a [`Scenario`] for a simulated duration and returns its [`SimReport`]: the trace
//! and a summary. The same scenario (seed included) gives the identical trace.
//!
//! ```
//! use std::time::{Duration, Instant};
//! use genesys_keepalive_sim::{self as sim, Fault, Scenario};
//!
//! let mut scenario = Scenario::notifications(42, Duration::from_secs(600));
//! scenario.publish_every = Some(Duration::from_secs(5));
//! scenario.faults.push((Duration::from_secs(300), Fault::SocketClosing));
//! let report = sim::run(&scenario, Instant::now());
//! assert_eq!(report.summary.lost, 0);
//! assert_eq!(report.summary.duplicated, 0);
//! assert_eq!(report.stats.rollovers, 1);
//! ```
//!
//! Model notes: heartbeat frames and their acks are subject to `loss` (an application-level drop, as a
//! gateway that discards pings); notifications are not (TCP does not lose frames, it delays them). A
//! blackholed socket drops everything in both directions and never reports a close.

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use genesys_keepalive::frames::PING_FRAME;
use genesys_keepalive::rng::Rng;
use genesys_keepalive::{
    Action, AlertEvent, AuditEvent, Config, Event, GapReason, Headers, HttpRequest, HttpResponse,
    KeepAliveMachine, Method, ProfileKind, RequestId, Secret, SocketId, State, Stats, StopReason,
};

use crate::agenda::Agenda;
use crate::check::{Checker, Violation};
use crate::gaps::GapLedger;
use crate::genesys::{self, Endpoint};
use crate::hash::{FastMap, FastSet};
use crate::{describe_event, is_heartbeat};

/// A scripted change to the network or the gateway.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// Every socket open now stops delivering in both directions (TCP stays up, no close is seen).
    Blackhole,
    /// The gateway is unreachable for this long: open sockets are reset, new requests are refused.
    Outage(Duration),
    /// The gateway announces `v2.system.socket_closing` on every open socket and closes them after
    /// [`GatewaySpec::socket_closing_grace`].
    SocketClosing,
    /// One-way latency becomes this for a while.
    LatencySpike {
        /// The one-way latency during the spike.
        latency: Duration,
        /// How long it lasts.
        duration: Duration,
    },
    /// Every issued token stops being accepted.
    ExpireTokens,
    /// The gateway sends `{"result":"404"}` on every open socket (channel gone).
    ChannelGone,
    /// The gateway sends a burst of garbage frames on every open socket.
    Garbage,
    /// Every open socket is reset (closed without a close frame); the gateway keeps its channels and tokens
    /// and accepts new connections at once.
    Reset,
    /// The client is frozen for this long (a suspended VM or a stopped process): nothing reaches the
    /// machine and no timer fires until it ends, then the machine sees `now` jump forward by this much
    /// and everything that arrived meanwhile. The gateway keeps running (its idle timeout may fire).
    Suspend(Duration),
    /// The next [`STALE_EVENTS`] events from the network are stamped this much in the past (a driver that
    /// read the clock before a long wait): `now` goes backwards for the machine, which must clamp it.
    StaleClock(Duration),
    /// The gateway's wall clock jumps by this many seconds (negative: backwards) relative to the client's:
    /// the channel expiries it hands out from now on follow its clock. (The machine reads the wall clock
    /// once, at construction, and uses it for channel expiries and timestamps only.)
    WallClockJump(i64),
    /// The token endpoint fails for this long: `503` answers, or (`timeout`) no answer at all, so that
    /// the machine's own request timeout has to fire. The rest of the API keeps working.
    TokenOutage {
        /// How long the outage lasts.
        duration: Duration,
        /// Hang instead of answering `503`.
        timeout: bool,
    },
    /// A `429` storm: for this long every REST call and handshake is refused with `429` and a
    /// `Retry-After` of [`RATE_LIMIT_RETRY_AFTER`] seconds.
    RateLimit(Duration),
}

/// How many events a [`Fault::StaleClock`] stamps in the past.
pub const STALE_EVENTS: u32 = 8;

/// The `Retry-After` (seconds) of the `429`s a [`Fault::RateLimit`] answers with.
pub const RATE_LIMIT_RETRY_AFTER: u64 = 5;

/// How the simulated gateway behaves.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewaySpec {
    /// Server heartbeat period (`None`: off). Genesys: about 30 s.
    pub server_heartbeat: Option<Duration>,
    /// The gateway closes a socket with 1001 "idle timeout" after this long without a client frame.
    pub idle_timeout: Option<Duration>,
    /// Lifetime of issued tokens (`expires_in`).
    pub token_lifetime: Duration,
    /// Time between `socket_closing` and the gateway's close.
    pub socket_closing_grace: Duration,
    /// One-way latency.
    pub latency: Duration,
    /// Extra one-way latency, uniform in `[0, jitter]`.
    pub jitter: Duration,
    /// Probability that a heartbeat or its ack is dropped.
    pub loss: f64,
    /// The client id and secret the token endpoint accepts.
    pub client_id: String,
    /// The accepted secret.
    pub client_secret: String,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        GatewaySpec {
            server_heartbeat: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(45)),
            token_lifetime: Duration::from_secs(86_399),
            socket_closing_grace: Duration::from_secs(60),
            latency: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            loss: 0.0,
            client_id: "sim-client".into(),
            client_secret: "sim-secret-never-printed".into(),
        }
    }
}

/// One simulation: the machine's config, the gateway, the schedule.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The machine's configuration.
    pub config: Config,
    /// Seeds the machine and the network.
    pub seed: u64,
    /// Simulated time to run.
    pub duration: Duration,
    /// The gateway and the network.
    pub gateway: GatewaySpec,
    /// Faults, by time since the start.
    pub faults: Vec<(Duration, Fault)>,
    /// Publish a numbered notification on the first topic this often.
    pub publish_every: Option<Duration>,
    /// Record the full trace (off for benchmarks).
    pub record_trace: bool,
    /// Run the invariant checker ([`crate::check::Checker`]) over every event and action; the first
    /// violation ends the run and is in [`SimReport::violation`].
    pub check: bool,
}

impl Scenario {
    /// The notifications profile against a simulated Genesys with the default gateway (30 s server
    /// heartbeats, 45 s idle timeout) and one topic.
    pub fn notifications(seed: u64, duration: Duration) -> Self {
        let gateway = GatewaySpec::default();
        let config = Config::builder()
            .credentials(
                gateway.client_id.clone(),
                Secret::new(gateway.client_secret.clone()),
            )
            .api_base("https://api.sim.invalid")
            .login_base("https://login.sim.invalid")
            .topic("v2.users.sim.presence")
            .build_unchecked();
        Scenario::with(config, gateway, seed, duration)
    }

    /// A scenario with no faults and no publishing, recording its trace.
    fn with(config: Config, gateway: GatewaySpec, seed: u64, duration: Duration) -> Self {
        Scenario {
            config,
            seed,
            duration,
            gateway,
            faults: Vec::new(),
            publish_every: None,
            record_trace: true,
            check: false,
        }
    }

    /// Your own `config` against the simulated gateway of its profile: its endpoints (API, login, socket
    /// URL) are pointed at the simulation and the gateway accepts its credentials; every interval,
    /// timeout, threshold and topic stays as you set it.
    pub fn for_config(config: Config, seed: u64, duration: Duration) -> Self {
        let mut sc = match config.profile {
            ProfileKind::Notifications => Scenario::notifications(seed, duration),
            ProfileKind::KeepaliveFrame => Scenario::keepalive_frame(seed, duration),
        };
        let sim = std::mem::replace(&mut sc.config, config);
        if let (Some(id), Some(secret)) = (&sc.config.client_id, &sc.config.client_secret) {
            sc.gateway.client_id = id.clone();
            sc.gateway.client_secret = secret.expose().to_owned();
        }
        sc.config.api_base = sim.api_base;
        sc.config.login_base = sim.login_base;
        if sc.config.profile == ProfileKind::KeepaliveFrame {
            sc.config.url = sim.url;
        }
        sc
    }

    /// The keepalive-frame profile against a simulated in-house gateway (no server heartbeats).
    pub fn keepalive_frame(seed: u64, duration: Duration) -> Self {
        let gateway = GatewaySpec {
            server_heartbeat: None,
            ..GatewaySpec::default()
        };
        let config = Config::builder()
            .profile(ProfileKind::KeepaliveFrame)
            .url("wss://gateway.sim.invalid/keepalive")
            .credentials(
                gateway.client_id.clone(),
                Secret::new(gateway.client_secret.clone()),
            )
            .login_base("https://login.sim.invalid")
            .build_unchecked();
        Scenario::with(config, gateway, seed, duration)
    }
}

/// One line of the trace: when, and what (an event into the machine, an action out of it, or a fault).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceEntry {
    /// Simulated time since the start.
    pub at: Duration,
    /// What happened.
    pub what: String,
}

/// What a run came to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    /// Notifications the gateway published.
    pub published: u64,
    /// Distinct notifications the application received.
    pub delivered: u64,
    /// Published while a socket was subscribed and never delivered.
    pub lost: u64,
    /// Delivered more than once.
    pub duplicated: u64,
    /// The sequence numbers of the lost ones, in order, with when each was published.
    pub lost_seqs: Vec<(u64, Duration)>,
    /// Published in the last 10 s of the run and not delivered yet (not counted as lost).
    pub in_flight_at_end: u64,
    /// Published while no open socket was subscribed (before the first connection, during an outage).
    pub unreachable: u64,
    /// Requests or handshakes that carried an expired or unknown token.
    pub expired_token_uses: u64,
    /// Tokens issued.
    pub tokens_issued: u64,
    /// For each blackhole, the time from its start to the machine's dead-peer alert.
    pub dead_peer_detection: Vec<Duration>,
    /// Delays the machine announced with `ReconnectAfter`.
    pub reconnect_delays: Vec<Duration>,
    /// Why the machine stopped, if it did.
    pub stopped: Option<StopReason>,
    /// When it stopped.
    pub stopped_at: Option<Duration>,
    /// Sockets the gateway closed for idleness.
    pub idle_closes: u64,
    /// The longest gap between two heartbeats written on one socket.
    pub max_heartbeat_gap: Duration,
    /// The shortest gap between two heartbeats written on one socket.
    pub min_heartbeat_gap: Option<Duration>,
    /// State at the end.
    pub final_state: State,
    /// Gap reports the machine emitted.
    pub gaps: u64,
    /// Their total length.
    pub gap_time: Duration,
    /// Their reasons, in order.
    pub gap_reasons: Vec<GapReason>,
    /// Notifications published while the application was owed them (after the first socket opened, up
    /// to the last socket opening or the stop), never delivered, and inside no reported gap. Must be 0.
    pub outside_gaps: u64,
    /// The machine's `receiving_since` when the run ended: what a checkpoint would hold had the process
    /// died then (see [`Summary::uncovered_at_crash`]).
    pub crash_checkpoint: Option<SystemTime>,
    /// Had the process died when the run ended and a new one resumed from `crash_checkpoint`: the
    /// notifications published after the first socket opened, never delivered, inside no reported gap and
    /// published before the checkpoint, so that the restart gap would not cover them either. Must be 0.
    pub uncovered_at_crash: u64,
    /// Had the process died when the run ended: the notifications published after the first socket
    /// opened, never delivered and inside no reported gap, which a restart gap must cover.
    pub owed_at_crash: u64,
}

/// A run's result.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// Every event and action, in order (empty unless `record_trace`).
    pub trace: Vec<TraceEntry>,
    /// What it came to.
    pub summary: Summary,
    /// The machine's own counters at the end.
    pub stats: Stats,
    /// The first broken invariant, when [`Scenario::check`] is on (the run stops there).
    pub violation: Option<Violation>,
}

#[derive(Debug, Clone)]
enum Item {
    ToMachine(Event),
    Fault(Fault),
    FaultEnd(Fault),
    Publish,
    ServerHeartbeat(SocketId),
    IdleCheck(SocketId),
    GatewayClose(SocketId, u16, &'static str),
    /// A frame from the client reaches the gateway.
    ToGateway(SocketId, String),
    /// The handshake completes: the gateway side opens, then the client hears of it.
    GwOpen(SocketId),
    /// The client's close frame reaches the gateway, which answers with its own.
    ClientClose(SocketId, u16),
}

struct GwSocket {
    channel: Option<String>,
    open: bool,
    /// The client closed it before the handshake finished.
    cancelled: bool,
    /// TCP keeps order: nothing reaches either side before what was sent earlier on the same socket.
    last_to_client: Instant,
    last_to_gateway: Instant,
    blackholed: bool,
    last_client_frame: Instant,
}

struct Sim<'a> {
    sc: &'a Scenario,
    start: Instant,
    now: Instant,
    rng: Rng,
    agenda: Agenda<Item>,
    machine: KeepAliveMachine,
    trace: Vec<TraceEntry>,
    // gateway
    tokens: FastMap<String, Instant>,
    token_serial: u64,
    channels: BTreeMap<String, HashSet<String>>,
    channel_serial: u64,
    sockets: BTreeMap<SocketId, GwSocket>,
    down_until: Option<Instant>,
    latency_override: Option<Instant>,
    spike_latency: Duration,
    // accounting
    published: u64,
    expected: FastMap<u64, Instant>,
    delivered: FastMap<u64, u32>,
    summary: Summary,
    blackhole_started: Vec<Instant>,
    last_heartbeat: FastMap<SocketId, Instant>,
    /// Sockets the machine discarded: like a driver, the simulator drops what was still on its way.
    discarded: FastSet<SocketId>,
    // faults on the client's clock and the token endpoint
    /// The client is frozen until then ([`Fault::Suspend`]).
    frozen_until: Option<Instant>,
    /// How far back the next `stale_left` events are stamped ([`Fault::StaleClock`]).
    stale_by: Duration,
    stale_left: u32,
    /// The wall clock at the start, in ms since the epoch, and the gateway's skew from it
    /// ([`Fault::WallClockJump`]; `None`: never jumped, channels carry a fixed far expiry).
    wall_ms: u64,
    wall_skew_ms: Option<i64>,
    token_down_until: Option<(Instant, bool)>,
    rate_limited_until: Option<Instant>,
    checker: Option<Checker>,
    violation: Option<Violation>,
    /// Publish times and the gaps reported, to check that every undelivered notification is in one.
    gaps: GapLedger,
    /// The wall-clock time at `start`.
    wall: SystemTime,
    stopped_at: Option<Instant>,
}

/// The socket an event is about, if any.
fn event_socket(event: &Event) -> Option<SocketId> {
    match event {
        Event::Opened { socket }
        | Event::FrameReceived { socket, .. }
        | Event::BinaryReceived { socket, .. }
        | Event::SendCompleted { socket, .. }
        | Event::SendFailed { socket, .. }
        | Event::Closed { socket, .. }
        | Event::ConnectFailed { socket, .. } => Some(*socket),
        _ => None,
    }
}

/// Plays `scenario` from `start` (any instant: the trace is relative to it) and returns what happened.
pub fn run(scenario: &Scenario, start: Instant) -> SimReport {
    let wall_ms = 1_780_000_000_000;
    let wall = UNIX_EPOCH + Duration::from_millis(wall_ms);
    let machine = match KeepAliveMachine::new(scenario.config.clone(), start, wall, scenario.seed) {
        Ok(m) => m,
        Err(e) => {
            return SimReport {
                trace: vec![TraceEntry {
                    at: Duration::ZERO,
                    what: format!("config refused: {e}"),
                }],
                summary: Summary::default(),
                stats: Stats::default(),
                violation: None,
            }
        }
    };
    let checker = scenario.check.then(|| Checker::new(&machine, start));
    let mut sim = Sim {
        sc: scenario,
        start,
        now: start,
        rng: Rng::new(scenario.seed ^ 0x0005_eed0_f5e7),
        agenda: Agenda::default(),
        machine,
        trace: Vec::new(),
        tokens: FastMap::default(),
        token_serial: 0,
        channels: BTreeMap::new(),
        channel_serial: 0,
        sockets: BTreeMap::new(),
        down_until: None,
        latency_override: None,
        spike_latency: Duration::ZERO,
        published: 0,
        expected: FastMap::default(),
        delivered: FastMap::default(),
        summary: Summary::default(),
        blackhole_started: Vec::new(),
        last_heartbeat: FastMap::default(),
        discarded: FastSet::default(),
        frozen_until: None,
        stale_by: Duration::ZERO,
        stale_left: 0,
        wall_ms,
        wall_skew_ms: None,
        token_down_until: None,
        rate_limited_until: None,
        checker,
        violation: None,
        gaps: GapLedger::default(),
        wall,
        stopped_at: None,
    };
    sim.play();
    sim.finish()
}

impl Sim<'_> {
    fn at(&self) -> Duration {
        self.now.saturating_duration_since(self.start)
    }

    fn record(&mut self, what: impl FnOnce() -> String) {
        if self.sc.record_trace {
            let at = self.at();
            self.trace.push(TraceEntry { at, what: what() });
        }
    }

    fn schedule(&mut self, at: Instant, item: Item) {
        self.agenda.push(at, item);
    }

    fn one_way(&mut self) -> Duration {
        let base = if self.latency_override.is_some_and(|until| self.now < until) {
            self.spike_latency
        } else {
            self.sc.gateway.latency
        };
        let j = self.sc.gateway.jitter.as_micros() as u64;
        base + Duration::from_micros(self.rng.below_or_equal(j))
    }

    fn lost(&mut self) -> bool {
        self.sc.gateway.loss > 0.0 && self.rng.unit() < self.sc.gateway.loss
    }

    fn is_down(&self) -> bool {
        self.down_until.is_some_and(|u| self.now < u)
    }

    fn play(&mut self) {
        let end = self.start + self.sc.duration;
        for (at, f) in self.sc.faults.clone() {
            self.schedule(self.start + at, Item::Fault(f));
        }
        if let Some(p) = self.sc.publish_every {
            if !p.is_zero() {
                self.schedule(self.start + p, Item::Publish);
            }
        }
        self.drain();
        loop {
            if self.violation.is_some() {
                break;
            }
            let next_item = self.agenda.next_due();
            let mut next_timer = self.machine.poll_timeout();
            if let Some(until) = self.frozen_until {
                // A frozen client's timers fire when it wakes up.
                next_timer = next_timer.map(|t| t.max(until));
            }
            let next = match (next_item, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) => a,
                (None, Some(b)) => b,
                (None, None) => break,
            };
            if next > end {
                break;
            }
            self.now = next.max(self.now);
            if next_item == Some(next) {
                let item = self.agenda.pop().expect("peeked");
                self.process(item);
            } else {
                self.feed(Event::Tick);
            }
            if self.machine.is_stopped() && self.summary.stopped.is_some() {
                // Let the closes land, then end.
                if self.agenda.is_empty() {
                    break;
                }
            }
        }
    }

    fn feed(&mut self, event: Event) {
        let mut stamp = self.now;
        if self.stale_left > 0 && !matches!(event, Event::Tick) {
            // A stale `now` (Fault::StaleClock); ticks keep the true time, or no timer would ever fire.
            self.stale_left -= 1;
            stamp = self.now.checked_sub(self.stale_by).unwrap_or(self.now);
        }
        if !matches!(event, Event::Tick) {
            let back = self.now.saturating_duration_since(stamp);
            self.record(|| {
                let ev = describe_event(&event);
                if back.is_zero() {
                    format!("-> {ev}")
                } else {
                    format!("-> (stamped {} ms early) {ev}", back.as_millis())
                }
            });
        }
        if let Some(c) = self.checker.as_mut() {
            if let Err(v) = c.event(stamp, &event) {
                self.violation.get_or_insert(v);
            }
        }
        self.machine.handle(stamp, event);
        self.drain();
        if let Some(c) = self.checker.as_mut() {
            if let Err(v) = c.after_handle(&self.machine) {
                self.violation.get_or_insert(v);
            }
        }
    }

    fn drain(&mut self) {
        while let Some(action) = self.machine.poll_action() {
            self.record(|| format!("<- {}", describe_action(&action)));
            if let Some(c) = self.checker.as_mut() {
                if let Err(v) = c.action(&action) {
                    self.violation.get_or_insert(v);
                }
            }
            self.perform(action);
        }
    }

    fn is_frozen(&self) -> bool {
        self.frozen_until.is_some_and(|u| self.now < u)
    }

    fn rate_limited(&self) -> bool {
        self.rate_limited_until.is_some_and(|u| self.now < u)
    }

    /// `Some(hang)` while the token endpoint is down ([`Fault::TokenOutage`]).
    fn token_down(&self) -> Option<bool> {
        self.token_down_until
            .filter(|(u, _)| self.now < *u)
            .map(|(_, hang)| hang)
    }

    /// Resets every open socket: no close frame, the client hears of it one latency later.
    fn reset_open_sockets(&mut self) {
        for socket in self.open_sockets() {
            if let Some(s) = self.sockets.get_mut(&socket) {
                s.open = false;
                if !s.blackholed {
                    let at = self.now + self.sc.gateway.latency;
                    self.schedule(
                        at,
                        Item::ToMachine(Event::Closed {
                            socket,
                            code: None,
                            reason: "connection reset".into(),
                        }),
                    );
                }
            }
        }
    }

    fn perform(&mut self, action: Action) {
        match action {
            Action::Http(req) => self.http(req),
            Action::Connect {
                socket,
                url,
                headers,
            } => self.connect(socket, &url, &headers),
            Action::SendFrame {
                socket,
                frame,
                text,
            } => {
                // Written at once; it reaches the gateway one latency later (unless lost or blackholed).
                let open = self.sockets.get(&socket).is_some_and(|s| s.open);
                let ev = if open {
                    Event::SendCompleted { socket, frame }
                } else {
                    Event::SendFailed {
                        socket,
                        frame,
                        error: "socket closed".into(),
                    }
                };
                let heartbeat = is_heartbeat(&text);
                if heartbeat && open {
                    if let Some(prev) = self.last_heartbeat.insert(socket, self.now) {
                        let gap = self.now.saturating_duration_since(prev);
                        self.summary.max_heartbeat_gap = self.summary.max_heartbeat_gap.max(gap);
                        self.summary.min_heartbeat_gap =
                            Some(self.summary.min_heartbeat_gap.map_or(gap, |g| g.min(gap)));
                    }
                }
                self.schedule(self.now, Item::ToMachine(ev));
                if open && !(heartbeat && self.lost()) {
                    let mut at = self.now + self.one_way();
                    if let Some(s) = self.sockets.get_mut(&socket) {
                        at = at.max(s.last_to_gateway);
                        s.last_to_gateway = at;
                    }
                    self.schedule(at, Item::ToGateway(socket, text));
                }
            }
            Action::Discard { socket } => {
                // The client drops the connection: the gateway side ends, nothing more reaches the machine.
                self.discarded.insert(socket);
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.cancelled = true;
                    s.open = false;
                }
            }
            Action::Close { socket, code, .. } => {
                // The close frame reaches the gateway one latency later (after what was sent before it);
                // until then the gateway keeps sending on the socket.
                let Some(s) = self.sockets.get_mut(&socket) else {
                    return;
                };
                if !s.open {
                    return; // no handshake yet: nothing to send (the machine discards it)
                }
                let last = s.last_to_gateway;
                let at = (self.now + self.one_way()).max(last);
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.last_to_gateway = at;
                }
                self.schedule(at, Item::ClientClose(socket, code));
            }
            Action::ReconnectAfter(d) => self.summary.reconnect_delays.push(d),
            Action::Alert(a) => {
                if a.event == AlertEvent::DeadPeer {
                    if let Some(t) = self.blackhole_started.first().copied() {
                        self.blackhole_started.remove(0);
                        self.summary
                            .dead_peer_detection
                            .push(self.now.saturating_duration_since(t));
                    }
                }
            }
            Action::Gap(gap) => {
                self.gaps.reported(&gap, self.start, self.wall);
                self.summary.gap_reasons.push(gap.reason);
            }
            Action::Audit(a)
                if matches!(
                    a.event,
                    AuditEvent::Connected | AuditEvent::RolloverComplete
                ) =>
            {
                self.gaps.opened(self.now);
            }
            Action::Deliver(n) => {
                let seq = self
                    .published_seq(&n.raw)
                    .or_else(|| n.json()["eventBody"]["seq"].as_u64());
                if let Some(seq) = seq {
                    *self.delivered.entry(seq).or_insert(0) += 1;
                }
            }
            Action::Stopped(reason) => {
                self.summary.stopped = Some(reason);
                self.summary.stopped_at = Some(self.at());
                self.stopped_at = Some(self.now);
            }
            Action::Audit(_) | Action::StateChanged { .. } => {}
        }
    }

    /// The sequence number of a delivered notification, without parsing it, when it is byte for byte one
    /// the gateway published (its `eventBody.seq` is then that number); `None`: parse it.
    fn published_seq(&self, raw: &str) -> Option<u64> {
        let topic = self.sc.config.topics.first().map_or("", String::as_str);
        // A topic that would need escaping is not what the text holds verbatim: leave it to the parser.
        if topic.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
            return None;
        }
        let (_, rest) = raw.split_once(r#""eventBody":{"seq":"#)?;
        let digits = &rest[..rest.bytes().take_while(u8::is_ascii_digit).count()];
        let seq = digits.parse().ok()?;
        (raw == notification_text(topic, seq)).then_some(seq)
    }

    fn respond(&mut self, id: RequestId, status: u16, body: String, retry_after: Option<u64>) {
        let mut headers = Headers::new();
        if let Some(s) = retry_after {
            headers.push("Retry-After", s.to_string());
        }
        let at = self.now + self.one_way() + self.one_way();
        self.schedule(
            at,
            Item::ToMachine(Event::HttpResponse(HttpResponse {
                request: id,
                status,
                headers,
                body: body.into_bytes(),
            })),
        );
    }

    fn bearer_ok(&mut self, headers: &Headers) -> bool {
        let token = headers
            .get("authorization")
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        match self.tokens.get(token) {
            Some(exp) if self.now < *exp => true,
            _ => {
                self.summary.expired_token_uses += 1;
                false
            }
        }
    }

    fn http(&mut self, req: HttpRequest) {
        if self.is_down() {
            let at = self.now + self.one_way();
            self.schedule(
                at,
                Item::ToMachine(Event::HttpFailed {
                    request: req.id,
                    error: "connection refused".into(),
                }),
            );
            return;
        }
        if self.rate_limited() {
            let body = genesys::error_body("too.many.requests", "rate limit exceeded");
            return self.respond(req.id, 429, body, Some(RATE_LIMIT_RETRY_AFTER));
        }
        match Endpoint::of(&req.url) {
            Endpoint::Token => match self.token_down() {
                // Hangs: the machine's own request timeout has to end the call.
                Some(true) => self.record(|| "gateway: token endpoint hangs".into()),
                Some(false) => {
                    let body = genesys::error_body("service.unavailable", "token service down");
                    self.respond(req.id, 503, body, None)
                }
                None => self.token(&req),
            },
            _ if !self.bearer_ok(&req.headers) => {
                let body = genesys::error_body("invalid_token", "token expired");
                self.respond(req.id, 401, body, None)
            }
            Endpoint::CreateChannel => {
                self.channel_serial += 1;
                let id = format!("ch{}", self.channel_serial);
                self.channels.insert(id.clone(), HashSet::new());
                let uri = format!("wss://streaming.sim.invalid/channels/{id}");
                let body = genesys::channel_body(&id, &uri, &self.channel_expiry());
                self.respond(req.id, 200, body, None)
            }
            Endpoint::Subscriptions { channel_id } => {
                let topics = genesys::requested_topics(req.body.as_deref());
                let Some(set) = self.channels.get_mut(channel_id) else {
                    let body = genesys::error_body("not.found", "channel not found");
                    return self.respond(req.id, 404, body, None);
                };
                if req.method == Method::Put {
                    set.clear();
                }
                set.extend(topics.iter().cloned());
                let body = genesys::subscriptions_body(&topics, |_| false);
                self.respond(req.id, 200, body, None)
            }
            Endpoint::Unknown => {
                let body = genesys::error_body("not.found", "no such endpoint");
                self.respond(req.id, 404, body, None)
            }
        }
    }

    /// A new channel's `expires`: a fixed far date, or 24 h on the gateway's clock once it has jumped.
    fn channel_expiry(&self) -> String {
        let Some(skew) = self.wall_skew_ms else {
            return "2026-12-01T00:00:00Z".into();
        };
        let day = genesys_keepalive::CHANNEL_LIFETIME.as_millis() as i128;
        let gateway_now =
            i128::from(self.wall_ms) + self.at().as_millis() as i128 + i128::from(skew);
        let ms = u64::try_from((gateway_now + day).max(0)).unwrap_or(u64::MAX / 2);
        genesys_keepalive::time::format_epoch_ms(ms)
    }

    /// The token endpoint: the gateway's client credentials get a token that lives `token_lifetime`.
    fn token(&mut self, req: &HttpRequest) {
        let want = genesys_keepalive::http::basic_auth(
            &self.sc.gateway.client_id,
            &Secret::new(self.sc.gateway.client_secret.clone()),
        );
        if req.headers.get("authorization") != Some(want.as_str()) {
            let body = genesys::error_body("invalid_client", "bad credentials");
            return self.respond(req.id, 401, body, None);
        }
        self.token_serial += 1;
        let token = format!("tok-{}-{}", self.token_serial, self.rng.next_u64());
        let lifetime = self.sc.gateway.token_lifetime;
        self.tokens.insert(token.clone(), self.now + lifetime);
        self.summary.tokens_issued += 1;
        let body = genesys::token_body(&token, Some(lifetime.as_secs()));
        self.respond(req.id, 200, body, None);
    }

    fn connect(&mut self, socket: SocketId, url: &str, headers: &Headers) {
        let lat = self.one_way() + self.one_way();
        if self.is_down() {
            self.schedule(
                self.now + lat,
                Item::ToMachine(Event::ConnectFailed {
                    socket,
                    status: None,
                    retry_after: None,
                    error: "connection refused".into(),
                }),
            );
            return;
        }
        if self.rate_limited() {
            self.schedule(
                self.now + lat,
                Item::ToMachine(Event::ConnectFailed {
                    socket,
                    status: Some(429),
                    retry_after: Some(Duration::from_secs(RATE_LIMIT_RETRY_AFTER)),
                    error: "HTTP 429".into(),
                }),
            );
            return;
        }
        let channel = url.rsplit_once("/channels/").map(|(_, id)| id.to_owned());
        let refuse = match &channel {
            Some(id) => (!self.channels.contains_key(id)).then_some(404),
            None if headers.get("authorization").is_some() => {
                (!self.bearer_ok(headers)).then_some(401)
            }
            None => None,
        };
        if let Some(status) = refuse {
            self.schedule(
                self.now + lat,
                Item::ToMachine(Event::ConnectFailed {
                    socket,
                    status: Some(status),
                    retry_after: None,
                    error: format!("HTTP {status}"),
                }),
            );
            return;
        }
        let opened_at = self.now + lat;
        self.sockets.insert(
            socket,
            GwSocket {
                channel,
                open: false,
                cancelled: false,
                last_to_client: opened_at,
                last_to_gateway: opened_at,
                blackholed: false,
                last_client_frame: opened_at,
            },
        );
        self.schedule(opened_at, Item::GwOpen(socket));
        if let Some(hb) = self.sc.gateway.server_heartbeat {
            if self.sc.config.profile == ProfileKind::Notifications && !hb.is_zero() {
                self.schedule(opened_at + hb, Item::ServerHeartbeat(socket));
            }
        }
        if let Some(idle) = self.sc.gateway.idle_timeout {
            self.schedule(opened_at + idle, Item::IdleCheck(socket));
        }
    }

    /// A frame from the gateway to the client on `socket`, after one latency.
    fn gateway_send(&mut self, socket: SocketId, text: String, droppable: bool) {
        let Some(s) = self.sockets.get(&socket) else {
            return;
        };
        if !s.open || s.blackholed || (droppable && self.lost()) {
            return;
        }
        let at = self.client_arrival(socket);
        self.schedule(at, Item::ToMachine(Event::FrameReceived { socket, text }));
    }

    /// When something the gateway sends now on `socket` reaches the client: one latency, in order.
    fn client_arrival(&mut self, socket: SocketId) -> Instant {
        let mut at = self.now + self.one_way();
        if let Some(s) = self.sockets.get_mut(&socket) {
            at = at.max(s.last_to_client);
            s.last_to_client = at;
        }
        at
    }

    fn gateway_close(&mut self, socket: SocketId, code: u16, reason: &str) {
        let Some(s) = self.sockets.get_mut(&socket) else {
            return;
        };
        if !s.open {
            return;
        }
        s.open = false;
        if s.blackholed {
            return;
        }
        let at = self.client_arrival(socket);
        self.schedule(
            at,
            Item::ToMachine(Event::Closed {
                socket,
                code: Some(code),
                reason: reason.into(),
            }),
        );
    }

    fn open_sockets(&self) -> Vec<SocketId> {
        self.sockets
            .iter()
            .filter(|(_, s)| s.open)
            .map(|(id, _)| *id)
            .collect()
    }

    fn process(&mut self, item: Item) {
        if self.is_frozen() && matches!(item, Item::ToMachine(_) | Item::GwOpen(_)) {
            // The client is frozen: it hears of this when it wakes up (in order: items keep their turn).
            let until = self.frozen_until.expect("frozen");
            self.schedule(until, item);
            return;
        }
        match item {
            Item::ToMachine(ev) => {
                // A frame or close for a socket the gateway already closed (before it opened) still lands,
                // unless the client discarded the socket.
                if !event_socket(&ev).is_some_and(|s| self.discarded.contains(&s)) {
                    self.feed(ev)
                }
            }
            Item::GwOpen(socket) => {
                // The client may have given up on it (Close) before the handshake finished; and a
                // handshake still on its way fails if the gateway went down or the channel went away.
                let outcome = match self.sockets.get(&socket) {
                    Some(s) if !s.cancelled => {
                        let gone = s
                            .channel
                            .as_ref()
                            .is_some_and(|c| !self.channels.contains_key(c));
                        Some(match (self.is_down(), gone) {
                            (true, _) => Err(None),
                            (false, true) => Err(Some(404)),
                            (false, false) => Ok(()),
                        })
                    }
                    _ => None,
                };
                let Some(outcome) = outcome else {
                    return;
                };
                if let Some(s) = self.sockets.get_mut(&socket) {
                    s.open = outcome.is_ok();
                    s.cancelled = outcome.is_err();
                }
                match outcome {
                    Ok(()) => self.feed(Event::Opened { socket }),
                    Err(status) => self.feed(Event::ConnectFailed {
                        socket,
                        status,
                        retry_after: None,
                        error: "the handshake failed: the gateway went down or the channel is gone"
                            .into(),
                    }),
                }
            }
            Item::ToGateway(socket, text) => {
                let Some(s) = self.sockets.get_mut(&socket) else {
                    return;
                };
                if !s.open || s.blackholed {
                    return;
                }
                s.last_client_frame = self.now;
                if text == PING_FRAME {
                    self.gateway_send(
                        socket,
                        r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#.into(),
                        true,
                    );
                } else if text.contains("\"KEEP_ALIVE\"") {
                    let seq = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["seq"].as_u64());
                    let ack = match seq {
                        Some(s) => format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{s}}}"#),
                        None => r#"{"type":"KEEP_ALIVE_ACK"}"#.into(),
                    };
                    self.gateway_send(socket, ack, true);
                }
            }
            Item::ServerHeartbeat(socket) => {
                if self.sockets.get(&socket).is_some_and(|s| s.open) {
                    self.gateway_send(
                        socket,
                        r#"{"topicName":"channel.metadata","eventBody":{"message":"WebSocket Heartbeat"}}"#
                            .into(),
                        false,
                    );
                    if let Some(hb) = self.sc.gateway.server_heartbeat {
                        self.schedule(self.now + hb, Item::ServerHeartbeat(socket));
                    }
                }
            }
            Item::IdleCheck(socket) => {
                let Some(idle) = self.sc.gateway.idle_timeout else {
                    return;
                };
                let Some(s) = self.sockets.get(&socket) else {
                    return;
                };
                if !s.open {
                    return;
                }
                let due = s.last_client_frame + idle;
                if self.now >= due {
                    self.summary.idle_closes += 1;
                    self.record(|| format!("gateway: idle close of {socket}"));
                    self.gateway_close(socket, 1001, "idle timeout");
                } else {
                    self.schedule(due, Item::IdleCheck(socket));
                }
            }
            Item::GatewayClose(socket, code, reason) => self.gateway_close(socket, code, reason),
            Item::ClientClose(socket, code) => {
                if let Some(s) = self.sockets.get_mut(&socket) {
                    // A socket the gateway closed already has nothing to answer with.
                    let answers = s.open && !s.blackholed;
                    s.open = false;
                    if answers {
                        let at = self.client_arrival(socket);
                        self.schedule(
                            at,
                            // The answer echoes the client's code, as RFC 6455 §5.5.1 has it.
                            Item::ToMachine(Event::Closed {
                                socket,
                                code: Some(code),
                                reason: "closed".into(),
                            }),
                        );
                    }
                }
            }
            Item::Publish => {
                self.published += 1;
                self.gaps.published(self.now);
                let seq = self.published;
                let topic = self.sc.config.topics.first().cloned().unwrap_or_default();
                let text = notification_text(&topic, seq);
                let mut reached = false;
                for socket in self.open_sockets() {
                    let s = &self.sockets[&socket];
                    let subscribed = s
                        .channel
                        .as_ref()
                        .and_then(|c| self.channels.get(c))
                        .is_some_and(|set| set.contains(&topic));
                    if subscribed && !s.blackholed {
                        reached = true;
                        self.gateway_send(socket, text.clone(), false);
                    }
                }
                if reached {
                    self.expected.insert(seq, self.now);
                } else {
                    self.summary.unreachable += 1;
                }
                if let Some(p) = self.sc.publish_every {
                    self.schedule(self.now + p, Item::Publish);
                }
            }
            Item::Fault(f) => {
                self.record(|| format!("fault: {f:?}"));
                match &f {
                    Fault::Blackhole => {
                        let mut any = false;
                        for socket in self.open_sockets() {
                            if let Some(s) = self.sockets.get_mut(&socket) {
                                s.blackholed = true;
                                any = true;
                            }
                        }
                        if any {
                            self.blackhole_started.push(self.now);
                        }
                    }
                    Fault::Outage(d) => {
                        self.down_until = Some(self.now + *d);
                        self.reset_open_sockets();
                        self.channels.clear();
                        self.tokens.clear();
                    }
                    Fault::Reset => self.reset_open_sockets(),
                    Fault::Suspend(d) => {
                        let until = self.now + *d;
                        self.frozen_until = Some(self.frozen_until.map_or(until, |u| u.max(until)));
                        self.schedule(until, Item::FaultEnd(f.clone()));
                    }
                    Fault::StaleClock(d) => {
                        self.stale_by = *d;
                        self.stale_left = STALE_EVENTS;
                    }
                    Fault::WallClockJump(secs) => {
                        let skew = self.wall_skew_ms.unwrap_or(0);
                        self.wall_skew_ms = Some(skew.saturating_add(secs.saturating_mul(1000)));
                    }
                    Fault::TokenOutage { duration, timeout } => {
                        self.token_down_until = Some((self.now + *duration, *timeout));
                        self.schedule(self.now + *duration, Item::FaultEnd(f.clone()));
                    }
                    Fault::RateLimit(d) => {
                        self.rate_limited_until = Some(self.now + *d);
                        self.schedule(self.now + *d, Item::FaultEnd(f.clone()));
                    }
                    Fault::SocketClosing => {
                        for socket in self.open_sockets() {
                            self.gateway_send(
                                socket,
                                r#"{"topicName":"v2.system.socket_closing","eventBody":{"message":"maintenance"}}"#
                                    .into(),
                                false,
                            );
                            let at = self.now + self.sc.gateway.socket_closing_grace;
                            self.schedule(at, Item::GatewayClose(socket, 1001, "socket closing"));
                        }
                    }
                    Fault::LatencySpike { latency, duration } => {
                        self.spike_latency = *latency;
                        self.latency_override = Some(self.now + *duration);
                        self.schedule(self.now + *duration, Item::FaultEnd(f.clone()));
                    }
                    Fault::ExpireTokens => {
                        let now = self.now;
                        for exp in self.tokens.values_mut() {
                            *exp = now;
                        }
                    }
                    Fault::ChannelGone => {
                        for socket in self.open_sockets() {
                            if let Some(ch) = self.sockets[&socket].channel.clone() {
                                self.channels.remove(&ch);
                            }
                            self.gateway_send(
                                socket,
                                r#"{"result":"404","message":"channel not found"}"#.into(),
                                false,
                            );
                        }
                    }
                    Fault::Garbage => {
                        for socket in self.open_sockets() {
                            for g in [
                                "not json at all",
                                "{\"topicName\":42}",
                                "[1,2,3]",
                                "{\"topicName\":\"channel.metadata\",\"eventBody\":{\"message\":\"pong\"}}",
                                "{\"type\":\"KEEP_ALIVE_ACK\",\"seq\":999999}",
                                "{\"topicName\":\"v2.not.subscribed\",\"eventBody\":{}}",
                            ] {
                                self.gateway_send(socket, g.into(), false);
                            }
                            let at = self.now + self.one_way();
                            self.schedule(
                                at,
                                Item::ToMachine(Event::BinaryReceived {
                                    socket,
                                    data: vec![0xff, 0xfe, 0x00],
                                }),
                            );
                        }
                    }
                }
            }
            Item::FaultEnd(f) => {
                self.record(|| format!("fault over: {f:?}"));
                match f {
                    Fault::LatencySpike { .. } => self.latency_override = None,
                    Fault::Suspend(_) if !self.is_frozen() => self.frozen_until = None,
                    _ => {}
                }
            }
        }
    }

    fn finish(mut self) -> SimReport {
        let mut lost = 0;
        let mut duplicated = 0;
        // Notifications still on the wire when the run ends are not lost.
        let horizon = self
            .now
            .checked_sub(Duration::from_secs(10))
            .unwrap_or(self.start);
        for (seq, at) in &self.expected {
            if *at > horizon {
                continue;
            }
            match self.delivered.get(seq) {
                None => {
                    lost += 1;
                    let at = at.saturating_duration_since(self.start);
                    self.summary.lost_seqs.push((*seq, at));
                }
                Some(n) if *n > 1 => duplicated += 1,
                _ => {}
            }
        }
        self.summary.published = self.published;
        self.summary.delivered = self.delivered.len() as u64;
        self.summary.in_flight_at_end = self
            .expected
            .iter()
            .filter(|(seq, at)| **at > horizon && !self.delivered.contains_key(seq))
            .count() as u64;
        self.summary.lost = lost;
        self.summary.lost_seqs.sort_unstable();
        self.summary.duplicated = duplicated;
        self.summary.final_state = self.machine.state();
        (self.summary.gaps, self.summary.gap_time) = self.gaps.totals();
        self.summary.outside_gaps = self.gaps.outside(&self.delivered, horizon, self.stopped_at);
        let checkpoint = self.machine.receiving_since();
        self.summary.crash_checkpoint = checkpoint;
        let since = checkpoint.map(|t| crate::gaps::to_instant(t, self.start, self.wall));
        (self.summary.owed_at_crash, self.summary.uncovered_at_crash) =
            self.gaps.at_crash(&self.delivered, self.now, since);
        SimReport {
            trace: self.trace,
            summary: self.summary,
            stats: self.machine.stats(),
            violation: self.violation,
        }
    }
}

/// The notification the gateway publishes as number `seq` on `topic`.
fn notification_text(topic: &str, seq: u64) -> String {
    format!(
        r#"{{"topicName":"{topic}","version":"2","eventBody":{{"seq":{seq}}},"metadata":{{"CorrelationId":"n-{seq}"}}}}"#
    )
}

fn describe_action(a: &Action) -> String {
    match a {
        Action::Http(r) => format!("http {} {} {}", r.id.0, r.method.as_str(), r.url),
        Action::Connect { socket, url, .. } => format!("connect {socket} {url}"),
        Action::SendFrame {
            socket,
            frame,
            text,
        } => format!("send {socket} #{} {text}", frame.0),
        Action::Audit(a) => format!(
            "audit {:?} {} {:?}",
            a.event,
            a.state,
            a.error.as_deref().unwrap_or("")
        ),
        other => format!("{other:?}"),
    }
}
