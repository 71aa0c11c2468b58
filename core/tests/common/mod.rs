//! A hand-driven harness for the machine: every action is kept, sends are reported written at once, and
//! REST calls are answered by the test.
#![allow(dead_code)]

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use genesys_keepalive::{
    Action, Config, Event, Headers, HttpRequest, HttpResponse, KeepAliveMachine, ProfileKind,
    Secret, SocketId,
};

pub const SECRET: &str = "s3cr3t-DO-NOT-PRINT";
pub const PONG: &str = r#"{"topicName":"channel.metadata","eventBody":{"message":"pong"}}"#;
pub const TOPIC: &str = "v2.users.u1.presence";

/// Nanoseconds past a whole multiple of `grid` on the wall clock.
pub fn off_grid(wall: SystemTime, grid: Duration) -> u128 {
    wall.duration_since(UNIX_EPOCH).unwrap().as_nanos() % grid.as_nanos()
}

pub fn notifications_config() -> Config {
    Config::builder()
        .credentials("client-1", Secret::new(SECRET))
        .topic(TOPIC)
        .build()
        .expect("valid")
}

pub fn keepalive_config() -> Config {
    Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url("wss://gw.example.com/ws")
        .build()
        .expect("valid")
}

pub struct H {
    pub m: KeepAliveMachine,
    pub start: Instant,
    pub now: Instant,
    /// Every action, in order, with the time it came out.
    pub log: Vec<(Duration, Action)>,
    /// Actions not yet looked at by the test.
    pub fresh: Vec<Action>,
    pub auto_complete_sends: bool,
    pub token_n: u32,
}

impl H {
    pub fn new(config: Config) -> H {
        Self::with_seed(config, 7)
    }

    pub fn with_seed(config: Config, seed: u64) -> H {
        Self::with_wall(config, seed, Self::wall())
    }

    /// A machine whose clock starts at `wall` (a process started later than the others).
    pub fn with_wall(config: Config, seed: u64, wall: SystemTime) -> H {
        let start = Instant::now();
        let m = KeepAliveMachine::new(config, start, wall, seed).expect("config valid");
        let mut h = H {
            m,
            start,
            now: start,
            log: Vec::new(),
            fresh: Vec::new(),
            auto_complete_sends: true,
            token_n: 0,
        };
        h.drain();
        h
    }

    pub fn wall() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_780_000_000)
    }

    pub fn t(&self) -> Duration {
        self.now - self.start
    }

    pub fn drain(&mut self) {
        while let Some(a) = self.m.poll_action() {
            let complete = match &a {
                Action::SendFrame { socket, frame, .. } if self.auto_complete_sends => {
                    Some(Event::SendCompleted {
                        socket: *socket,
                        frame: *frame,
                    })
                }
                _ => None,
            };
            self.log.push((self.t(), a.clone()));
            self.fresh.push(a);
            if let Some(e) = complete {
                self.m.handle(self.now, e);
            }
        }
    }

    pub fn feed(&mut self, e: Event) {
        self.m.handle(self.now, e);
        self.drain();
    }

    /// Moves time on by `d`, firing every timer on the way, at its deadline.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while let Some(t) = self.m.poll_timeout() {
            if t > target {
                break;
            }
            self.now = t.max(self.now);
            self.feed(Event::Tick);
        }
        self.now = target;
        self.feed(Event::Tick);
    }

    pub fn take(&mut self) -> Vec<Action> {
        std::mem::take(&mut self.fresh)
    }

    pub fn last_http(&self) -> Option<HttpRequest> {
        self.fresh.iter().rev().find_map(|a| match a {
            Action::Http(r) => Some(r.clone()),
            _ => None,
        })
    }

    pub fn pending_http(&mut self) -> HttpRequest {
        let r = self.last_http().expect("an HTTP request is pending");
        self.fresh
            .retain(|a| !matches!(a, Action::Http(x) if x.id == r.id));
        r
    }

    pub fn respond(
        &mut self,
        req: &HttpRequest,
        status: u16,
        body: &str,
        headers: &[(&str, &str)],
    ) {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.push(n, *v);
        }
        self.feed(Event::HttpResponse(HttpResponse {
            request: req.id,
            status,
            headers: h,
            body: body.as_bytes().to_vec(),
        }));
    }

    /// Answers the pending request as a healthy Genesys would.
    pub fn answer_ok(&mut self, token_lifetime_s: u64) -> HttpRequest {
        let req = self.pending_http();
        let body = if req.url.ends_with("/oauth/token") {
            self.token_n += 1;
            format!(
                r#"{{"access_token":"tok-{}-abcdef","token_type":"bearer","expires_in":{token_lifetime_s}}}"#,
                self.token_n
            )
        } else if req.url.ends_with("/channels") {
            r#"{"connectUri":"wss://streaming.mypurecloud.com/channels/ch-1","id":"ch-1","expires":"2030-01-01T00:00:00Z"}"#.into()
        } else if req.url.ends_with("/subscriptions") {
            format!(r#"{{"entities":[{{"id":"{TOPIC}","state":"Permitted"}}]}}"#)
        } else {
            "{}".into()
        };
        self.respond(&req, 200, &body, &[]);
        req
    }

    pub fn pending_connect(&mut self) -> Option<(SocketId, String, Headers)> {
        let found = self.fresh.iter().rev().find_map(|a| match a {
            Action::Connect {
                socket,
                url,
                headers,
            } => Some((*socket, url.clone(), headers.clone())),
            _ => None,
        });
        if let Some((s, _, _)) = &found {
            self.fresh
                .retain(|a| !matches!(a, Action::Connect { socket, .. } if socket == s));
        }
        found
    }

    /// Token → channel → subscriptions → open. Returns the socket.
    pub fn establish_notifications(&mut self) -> SocketId {
        for _ in 0..3 {
            self.answer_ok(86_399);
        }
        let (socket, _, _) = self.pending_connect().expect("connect after setup");
        self.feed(Event::Opened { socket });
        socket
    }

    pub fn establish_keepalive(&mut self) -> SocketId {
        let (socket, _, _) = self.pending_connect().expect("connect");
        self.feed(Event::Opened { socket });
        socket
    }

    pub fn frame(&mut self, socket: SocketId, text: &str) {
        self.feed(Event::FrameReceived {
            socket,
            text: text.into(),
        });
    }

    /// Acks the last heartbeat written on `socket` (keepalive-frame profile: `KEEP_ALIVE_ACK` with its seq).
    pub fn ack_last(&mut self, socket: SocketId) {
        let hb = self.heartbeats(socket).last().unwrap().1.clone();
        let seq = serde_json::from_str::<serde_json::Value>(&hb).unwrap()["seq"]
            .as_u64()
            .unwrap();
        self.frame(
            socket,
            &format!(r#"{{"type":"KEEP_ALIVE_ACK","seq":{seq}}}"#),
        );
    }

    /// Heartbeats written on `socket`, with their times.
    pub fn heartbeats(&self, socket: SocketId) -> Vec<(Duration, String)> {
        self.log
            .iter()
            .filter_map(|(t, a)| match a {
                Action::SendFrame {
                    socket: s, text, ..
                } if *s == socket => Some((*t, text.clone())),
                _ => None,
            })
            .collect()
    }

    pub fn count(&self, pred: impl Fn(&Action) -> bool) -> usize {
        self.log.iter().filter(|(_, a)| pred(a)).count()
    }

    /// Every action of the whole run, printed: for asserting that no credential appears anywhere.
    pub fn everything_printed(&self) -> String {
        let mut s = String::new();
        for (t, a) in &self.log {
            s.push_str(&format!("{t:?} {a:?}\n"));
            match a {
                Action::Audit(e) => s.push_str(&serde_json::to_string(e).unwrap()),
                Action::Alert(e) => s.push_str(&serde_json::to_string(e).unwrap()),
                Action::Stopped(r) => s.push_str(&r.to_string()),
                _ => {}
            }
        }
        s.push_str(&format!("{:?}", self.m));
        s
    }
}
