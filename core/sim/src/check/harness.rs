//! The fuzz harness: a machine, a [`Checker`], a virtual clock and the op language it plays.

use std::time::{Duration, Instant, SystemTime};

use genesys_keepalive::{
    Action, Config, Event, FrameId, Headers, HttpRequest, HttpResponse, KeepAliveMachine,
    ProfileKind, RequestId, Secret, SocketId,
};

use super::{Checker, Violation};
use crate::describe_event;
use crate::genesys::{self, Endpoint};

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
        let text = match Endpoint::of(url) {
            Endpoint::Token => {
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
                genesys::token_body(&token, expires)
            }
            Endpoint::CreateChannel => {
                self.channels += 1;
                let id = format!("streaming-{}-{:x}", self.channels, self.seed);
                let scheme = if body == OkBody::InsecureUri {
                    "ws"
                } else {
                    "wss"
                };
                let uri = format!("{scheme}://streaming.mypurecloud.com/channels/{id}");
                genesys::channel_body(&id, &uri, "2030-01-01T00:00:00.000Z")
            }
            Endpoint::Subscriptions { .. } => {
                let topics = genesys::requested_topics(req.and_then(|r| r.body.as_deref()));
                let reject_first = body == OkBody::RejectedTopic;
                genesys::subscriptions_body(&topics, |i| i == 0 && reject_first)
            }
            Endpoint::Unknown => "{}".to_owned(),
        };
        text.into_bytes()
    }

    fn reply(&mut self, to: RequestPick, reply: HttpReply) -> Result<(), Violation> {
        let Some((id, req)) = self.pick_request(to) else {
            return self.feed(Event::Tick);
        };
        let mut headers = Headers::new();
        let err = |code: &str, echo: String| genesys::error_body(code, &echo).into_bytes();
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

fn topic_name(t: TopicPick) -> String {
    match t {
        TopicPick::Known(i) => TOPICS[i as usize % TOPICS.len()].to_owned(),
        TopicPick::Unknown => "v2.users.ffffffff-0000-4000-8000-00000000dead.presence".to_owned(),
        TopicPick::Invalid(true) => String::new(),
        TopicPick::Invalid(false) => "v2.users two words".to_owned(),
    }
}
