//! A bench-side driver: a machine connected to an instant, perfect gateway (shared by the bench targets).
#![allow(dead_code)]

pub mod proto;

use std::collections::VecDeque;
use std::time::{Duration, Instant, UNIX_EPOCH};

use genesys_keepalive::{
    Action, Event, Headers, HttpResponse, KeepAliveMachine, ProfileKind, SocketId, State,
};
use genesys_keepalive_sim::Scenario;

/// What the gateway answers to a ping (notifications profile), as Genesys sends it.
pub const PONG: &str = r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#;
/// Simulated round-trip time between a heartbeat and its ack.
pub const RTT: Duration = Duration::from_millis(40);

/// A machine driven by an instant, perfect gateway: every REST call succeeds, every socket opens, every
/// write completes. Responses mirror the simulator's (core/src/sim.rs).
pub struct Driver {
    pub m: KeepAliveMachine,
    pub now: Instant,
    socket: Option<SocketId>,
    profile: ProfileKind,
    /// The text of the last heartbeat written.
    pub last_heartbeat: Option<String>,
    pub pending: VecDeque<Event>,
}

impl Driver {
    /// A connection in STABLE, with a full RTT window (`warm` heartbeat rounds played).
    pub fn established(profile: ProfileKind, warm: usize) -> Self {
        let scenario = match profile {
            ProfileKind::Notifications => Scenario::notifications(7, Duration::from_secs(60)),
            ProfileKind::KeepaliveFrame => Scenario::keepalive_frame(7, Duration::from_secs(60)),
        };
        let now = Instant::now();
        let wall = UNIX_EPOCH + Duration::from_secs(1_780_000_000);
        let m = KeepAliveMachine::new(scenario.config, now, wall, 7).expect("valid config");
        let mut d = Driver {
            m,
            now,
            socket: None,
            profile,
            last_heartbeat: None,
            pending: VecDeque::new(),
        };
        d.pump();
        assert!(d.socket.is_some(), "the socket opened");
        assert!(d.last_heartbeat.is_some(), "a heartbeat on open");
        d.ack();
        assert_eq!(d.m.state(), State::Stable);
        for _ in 0..warm {
            d.emit_heartbeat();
            d.ack();
        }
        assert_eq!(d.m.state(), State::Stable);
        d
    }

    pub fn socket(&self) -> SocketId {
        self.socket.expect("established")
    }

    /// Answers one action (queueing the resulting event, if any).
    pub fn respond(&mut self, action: Action) {
        match action {
            Action::Http(req) => {
                let body = if req.url.ends_with("/oauth/token") {
                    r#"{"access_token":"tok-1-42","token_type":"bearer","expires_in":86399}"#
                        .to_owned()
                } else if req.url.ends_with("/subscriptions") {
                    r#"{"entities":[{"id":"v2.users.sim.presence","state":"Permitted"}]}"#
                        .to_owned()
                } else if req.url.ends_with("/notifications/channels") {
                    r#"{"connectUri":"wss://streaming.sim.invalid/channels/ch1","id":"ch1","expires":"2026-12-01T00:00:00Z"}"#.to_owned()
                } else {
                    panic!("unexpected request {}", req.url)
                };
                self.pending.push_back(Event::HttpResponse(HttpResponse {
                    request: req.id,
                    status: 200,
                    headers: Headers::new(),
                    body: body.into_bytes(),
                }));
            }
            Action::Connect { socket, .. } => {
                self.socket = Some(socket);
                self.pending.push_back(Event::Opened { socket });
            }
            Action::SendFrame {
                socket,
                frame,
                text,
            } => {
                self.last_heartbeat = Some(text);
                self.pending
                    .push_back(Event::SendCompleted { socket, frame });
            }
            Action::Close { socket, .. } => panic!("unexpected close of {socket}"),
            Action::Stopped(r) => panic!("the machine stopped: {r}"),
            _ => {}
        }
    }

    /// Drains every action and feeds every answer, until the machine is quiet.
    pub fn pump(&mut self) {
        loop {
            while let Some(a) = self.m.poll_action() {
                self.respond(a);
            }
            match self.pending.pop_front() {
                Some(ev) => self.m.handle(self.now, ev),
                None => return,
            }
        }
    }

    /// Advances to the next deadline(s) until a heartbeat has been written and reported written.
    pub fn emit_heartbeat(&mut self) {
        self.last_heartbeat = None;
        while self.last_heartbeat.is_none() {
            self.now = self.m.poll_timeout().expect("running");
            self.m.handle(self.now, Event::Tick);
            self.pump();
        }
    }

    /// The gateway's answer to the last heartbeat: a pong, or `KEEP_ALIVE_ACK` echoing its `seq`.
    pub fn ack_text(&self) -> String {
        match self.profile {
            ProfileKind::Notifications => PONG.to_owned(),
            ProfileKind::KeepaliveFrame => {
                let hb = self
                    .last_heartbeat
                    .as_deref()
                    .expect("a heartbeat was sent");
                let v: serde_json::Value = serde_json::from_str(hb).expect("JSON heartbeat");
                let seq = v["seq"].as_u64().expect("seq");
                format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{seq}}}"#)
            }
        }
    }

    /// Answers the last heartbeat one RTT later.
    pub fn ack(&mut self) {
        let text = self.ack_text();
        self.now += RTT;
        let socket = self.socket();
        self.m
            .handle(self.now, Event::FrameReceived { socket, text });
        self.pump();
    }
}

pub fn profile_name(p: ProfileKind) -> &'static str {
    match p {
        ProfileKind::Notifications => "notifications",
        ProfileKind::KeepaliveFrame => "keepalive_frame",
    }
}

pub const PROFILES: [ProfileKind; 2] = [ProfileKind::Notifications, ProfileKind::KeepaliveFrame];
