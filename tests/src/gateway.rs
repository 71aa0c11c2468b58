//! A local Genesys Cloud gateway over real loopback sockets.
//!
//! [`Gateway::start`] binds `127.0.0.1`, serves the OAuth token endpoint, the Notifications API
//! (channels, subscriptions), the notification WebSocket `/channels/<id>`, the seed's
//! `KEEP_ALIVE` WebSocket `/keepalive`, and `/testkit/*` control endpoints, on a dedicated OS
//! thread with its own tokio runtime. Every control method is synchronous, so the gateway works
//! from tokio, async-std, smol or plain threads alike.
//!
//! ```no_run
//! use genesys_keepalive_testkit::gateway::{Gateway, GatewayConfig};
//! let gw = Gateway::start(GatewayConfig::default()).unwrap();
//! println!("token endpoint: {}/oauth/token", gw.base_url());
//! let seq = gw.publish("v2.users.me.presence", serde_json::json!({"presence": "Available"}));
//! assert_eq!(seq, 1);
//! ```

mod http;
mod socket;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize, Serializer};
use tokio::sync::{mpsc, watch, Notify};

use crate::util;

/// How the gateway behaves. Every field is public; start from [`GatewayConfig::default`].
#[derive(Clone)]
pub struct GatewayConfig {
    /// Port to bind on `127.0.0.1`; 0 picks an ephemeral port.
    pub port: u16,
    /// The OAuth client id the token endpoint accepts.
    pub client_id: String,
    /// The OAuth client secret the token endpoint accepts (never printed by `Debug`).
    pub client_secret: String,
    /// How long an issued access token stays valid (`expires_in` reports whole seconds).
    pub token_lifetime: Duration,
    /// Interval of the server heartbeat on notification sockets; `Duration::ZERO` turns it off.
    pub server_heartbeat: Duration,
    /// Close a socket with 1001 "idle timeout" when no frame came from the client for this
    /// long; `Duration::ZERO` turns it off.
    pub idle_timeout: Duration,
    /// Serve HTTPS/WSS with a self-signed CA (see [`Gateway::ca_cert_der`]).
    pub tls: bool,
    /// After [`Gateway::socket_closing`], how long before the gateway closes those sockets (1001).
    pub socket_closing_grace: Duration,
    /// Maximum channels per client; creating one more silently removes the least recently used.
    pub max_channels: usize,
    /// Maximum topics per channel (Genesys: 1,000); more in one request is a 400.
    pub max_topics_per_channel: usize,
    /// How long a channel lives after it was last used (created, subscribed to, connected to); Genesys:
    /// 24 hours. A channel past it with no socket on it is forgotten (its id then answers 404), so that a
    /// long run's abandoned channels do not pile up. A channel with a socket open stays.
    pub channel_lifetime: Duration,
    /// The most [`GatewayStats::requests`] and close codes (overall and per client) kept; past it the
    /// oldest tenth is forgotten. The counters are not bounded by it.
    pub log_limit: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            port: 0,
            client_id: "test-client".to_string(),
            client_secret: "test-secret".to_string(),
            token_lifetime: Duration::from_secs(300),
            server_heartbeat: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(45),
            tls: false,
            socket_closing_grace: Duration::from_secs(60),
            max_channels: 20,
            max_topics_per_channel: 1000,
            channel_lifetime: Duration::from_secs(24 * 3600),
            log_limit: 100_000,
        }
    }
}

impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("client_secret", &"[redacted]")
            .field("token_lifetime", &self.token_lifetime)
            .field("server_heartbeat", &self.server_heartbeat)
            .field("idle_timeout", &self.idle_timeout)
            .field("tls", &self.tls)
            .field("socket_closing_grace", &self.socket_closing_grace)
            .field("max_channels", &self.max_channels)
            .field("max_topics_per_channel", &self.max_topics_per_channel)
            .field("channel_lifetime", &self.channel_lifetime)
            .field("log_limit", &self.log_limit)
            .finish()
    }
}

/// A fault injected on the gateway's WebSockets by [`Gateway::set_fault`].
///
/// `Blackhole`, `Reset` and `Garbage` act once, on the sockets open at the time of the call;
/// sockets opened later behave normally. `Latency` lasts until the next `set_fault` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fault {
    /// No fault: clears a `Latency`. (Sockets already blackholed stay dead.)
    #[default]
    None,
    /// Every socket open now stops reading and writing but keeps its TCP connection open
    /// (a half-open peer). It is only released by a later `Reset` or by shutdown.
    Blackhole,
    /// Every socket open now is dropped abruptly: TCP RST (SO_LINGER 0), no close frame.
    Reset,
    /// Every outbound frame (pong, ack, heartbeat, notification) is delayed by this much.
    Latency(Duration),
    /// Every socket open now receives a burst of garbage: non-JSON text, JSON of the wrong
    /// shape, a binary frame, a 2 MiB text frame, an unsolicited application pong and an
    /// unsolicited WebSocket pong.
    Garbage,
}

/// REST endpoints (and the WebSocket handshake) that [`Gateway::script_http`] can script.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// `POST /oauth/token`.
    Token,
    /// `POST /api/v2/notifications/channels`.
    CreateChannel,
    /// `PUT` or `POST /api/v2/notifications/channels/<id>/subscriptions`.
    Subscriptions,
    /// The WebSocket handshake on `/channels/<id>` or `/keepalive`.
    WebSocket,
}

/// A canned HTTP answer for [`Gateway::script_http`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scripted {
    /// HTTP status code.
    pub status: u16,
    /// `Retry-After` header in seconds, if any.
    #[serde(default)]
    pub retry_after: Option<u64>,
    /// Response body (sent as `application/json`).
    #[serde(default)]
    pub body: String,
}

impl Scripted {
    /// A canned answer with this status and body and no `Retry-After`.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Scripted {
            status,
            retry_after: None,
            body: body.into(),
        }
    }

    /// A 429 with `Retry-After: secs` and a Genesys-shaped body.
    pub fn too_many_requests(secs: u64) -> Self {
        Scripted {
            status: 429,
            retry_after: Some(secs),
            body: r#"{"message":"Rate limit exceeded the maximum. Retry the request in [N] seconds","code":"too.many.requests","status":429}"#.to_string(),
        }
    }

    /// Adds a `Retry-After` header (seconds).
    pub fn with_retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

/// One HTTP request the gateway answered (control endpoints under `/testkit/` are not logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestRecord {
    /// HTTP method, e.g. `POST`.
    pub method: String,
    /// Request path without the query string.
    pub path: String,
    /// Status answered (101 for an accepted WebSocket handshake).
    pub status: u16,
    /// Time since the gateway started (serialized as milliseconds, `at_ms`).
    #[serde(rename = "at_ms", serialize_with = "ser_ms")]
    pub at: Duration,
}

fn ser_ms<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

/// Counters of everything the gateway saw and did. Obtained with [`Gateway::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct GatewayStats {
    /// Access tokens issued (200 answers of `/oauth/token`).
    pub tokens_issued: u64,
    /// Requests to `/oauth/token`, scripted ones included.
    pub token_requests: u64,
    /// `/oauth/token` requests answered with an error status (401, 400, or a scripted error).
    pub token_failures: u64,
    /// Channels created.
    pub channels_created: u64,
    /// Requests to the subscriptions endpoint (PUT or POST), scripted ones included.
    pub subscription_requests: u64,
    /// API or handshake requests that presented an expired or unknown bearer token.
    pub requests_with_expired_token: u64,
    /// WebSockets accepted (both paths).
    pub sockets_opened: u64,
    /// WebSockets open right now.
    pub sockets_open_now: u64,
    /// `{"message":"ping"}` frames received.
    pub pings_received: u64,
    /// Pong replies written.
    pub pongs_sent: u64,
    /// `KEEP_ALIVE` frames received on `/keepalive`.
    pub keepalives_received: u64,
    /// `KEEP_ALIVE` frames that failed the seed's schema (missing field or over 1,024 bytes).
    pub keepalives_invalid: u64,
    /// `KEEP_ALIVE_ACK` replies written.
    pub acks_sent: u64,
    /// Server heartbeats written.
    pub heartbeats_sent: u64,
    /// Notifications published (calls of [`Gateway::publish`] or `/testkit/publish`).
    pub notifications_published: u64,
    /// Notification frames written, summed over sockets. (Every `*_sent` counter is bumped just
    /// before the frame is written, so a client that has read a frame sees it counted.)
    pub notifications_sent: u64,
    /// Close frames received from clients, as `(code, reason)`; 1005 when the frame had no code.
    /// Includes a client's echo of a close the gateway started. At most the last
    /// [`GatewayConfig::log_limit`] or so.
    pub close_codes: Vec<(u16, String)>,
    /// Sockets closed by the gateway for idleness (1001 "idle timeout").
    pub idle_closes: u64,
    /// Sockets closed by the gateway after `socket_closing` (1001).
    pub planned_closes: u64,
    /// `v2.system.socket_closing` frames written.
    pub socket_closing_sent: u64,
    /// Sockets blackholed by a fault.
    pub sockets_blackholed: u64,
    /// Sockets reset by a fault.
    pub sockets_reset: u64,
    /// Garbage frames written.
    pub garbage_frames_sent: u64,
    /// Channels removed because a client went over the channel limit.
    pub channels_evicted: u64,
    /// Scripted answers served.
    pub scripted_served: u64,
    /// The `Retry-After` (seconds) of the last scripted answer that had one.
    pub last_http_retry_after_served: Option<u64>,
    /// Every request answered, in order (not the `/testkit/` control ones; at most the last
    /// [`GatewayConfig::log_limit`] or so).
    pub requests: Vec<RequestRecord>,
    /// What each OAuth client (by client id) did: the configured one and those of
    /// [`Gateway::add_client`]. A socket or channel belongs to the client whose token created the
    /// channel (notification sockets) or was presented in the handshake (`/keepalive`).
    pub per_client: BTreeMap<String, ClientStats>,
}

/// One OAuth client's share of [`GatewayStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientStats {
    /// Access tokens issued to it.
    pub tokens_issued: u64,
    /// Channels it created.
    pub channels_created: u64,
    /// WebSockets of its channels (or with its token) accepted.
    pub sockets_opened: u64,
    /// Of those, open right now.
    pub sockets_open_now: u64,
    /// Notification frames written to its sockets.
    pub notifications_sent: u64,
    /// Close frames received on its sockets, as `(code, reason)`.
    pub close_codes: Vec<(u16, String)>,
}

/// Kinds of outbound frame, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OutKind {
    Pong,
    Ack,
    Heartbeat,
    Notification,
    SocketClosing,
    Garbage,
    Other,
}

/// A command to one socket task.
#[derive(Debug)]
pub(crate) enum SocketCmd {
    Send(String, OutKind),
    Blackhole,
    Reset,
    Garbage,
    SocketClosing,
}

pub(crate) struct Channel {
    pub topics: Vec<String>,
    pub last_used: Instant,
    /// The client whose token created it.
    pub client: Option<String>,
}

pub(crate) struct SocketEntry {
    pub channel: Option<String>,
    /// The client it belongs to (see [`GatewayStats::per_client`]).
    pub client: Option<String>,
    pub tx: mpsc::UnboundedSender<SocketCmd>,
}

pub(crate) struct State {
    pub tokens: HashMap<String, Instant>,
    /// Which client each token in `tokens` was issued to.
    pub token_clients: HashMap<String, String>,
    /// The accepted OAuth clients: id to secret.
    pub clients: HashMap<String, String>,
    pub channels: HashMap<String, Channel>,
    pub sockets: HashMap<u64, SocketEntry>,
    pub forbidden: BTreeSet<String>,
    pub scripts: HashMap<Endpoint, VecDeque<Scripted>>,
    pub fault: Fault,
    pub connect_base: Option<String>,
    pub next_seq: u64,
    pub next_socket: u64,
    pub stats: GatewayStats,
}

/// State shared by the control handle and the server tasks.
pub(crate) struct Shared {
    pub config: GatewayConfig,
    pub started: Instant,
    pub port: u16,
    pub tls: bool,
    state: Mutex<State>,
    changed: Notify,
}

impl State {
    /// `client`'s counters (created on first use); `None` for a socket or channel of no known client.
    pub(crate) fn client_stats(&mut self, client: Option<&str>) -> Option<&mut ClientStats> {
        let client = client?;
        Some(self.stats.per_client.entry(client.to_string()).or_default())
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mutates the state and wakes [`Gateway::wait_until`] callers.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let r = f(&mut self.lock());
        self.changed.notify_waiters();
        r
    }

    /// Reads the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Current outbound latency.
    pub(crate) fn latency(&self) -> Duration {
        match self.read(|s| s.fault) {
            Fault::Latency(d) => d,
            _ => Duration::ZERO,
        }
    }

    /// Sends a command to every open socket; returns how many were addressed.
    fn broadcast(&self, mut make: impl FnMut() -> SocketCmd) -> usize {
        let txs: Vec<_> = self.read(|s| s.sockets.values().map(|e| e.tx.clone()).collect());
        txs.iter().filter(|tx| tx.send(make()).is_ok()).count()
    }

    /// Publishes one notification; see [`Gateway::publish`].
    pub(crate) fn publish(&self, topic: &str, body: serde_json::Value) -> u64 {
        let (seq, frame, targets) = self.update(|s| {
            s.next_seq += 1;
            s.stats.notifications_published += 1;
            let seq = s.next_seq;
            let mut event = match body {
                serde_json::Value::Object(map) => map,
                other => {
                    let mut m = serde_json::Map::new();
                    if !other.is_null() {
                        m.insert("value".to_string(), other);
                    }
                    m
                }
            };
            event.insert("seq".to_string(), serde_json::Value::from(seq));
            let frame = serde_json::json!({
                "topicName": topic,
                "version": "2",
                "eventBody": event,
                "metadata": {"CorrelationId": util::random_uuid()},
            })
            .to_string();
            let subscribed: BTreeSet<&String> = s
                .channels
                .iter()
                .filter(|(_, c)| c.topics.iter().any(|t| t == topic))
                .map(|(id, _)| id)
                .collect();
            let targets: Vec<_> = s
                .sockets
                .values()
                .filter(|e| e.channel.as_ref().is_some_and(|c| subscribed.contains(c)))
                .map(|e| e.tx.clone())
                .collect();
            (seq, frame, targets)
        });
        for tx in targets {
            let _ = tx.send(SocketCmd::Send(frame.clone(), OutKind::Notification));
        }
        seq
    }

    /// Applies a fault; see [`Gateway::set_fault`].
    pub(crate) fn set_fault(&self, fault: Fault) {
        self.update(|s| s.fault = fault);
        match fault {
            Fault::Blackhole => {
                self.broadcast(|| SocketCmd::Blackhole);
            }
            Fault::Reset => {
                self.broadcast(|| SocketCmd::Reset);
            }
            Fault::Garbage => {
                self.broadcast(|| SocketCmd::Garbage);
            }
            Fault::None | Fault::Latency(_) => {}
        }
        tracing::info!(?fault, "testkit gateway: fault set");
    }

    /// Announces `v2.system.socket_closing` on every socket; returns how many.
    pub(crate) fn socket_closing(&self) -> usize {
        self.broadcast(|| SocketCmd::SocketClosing)
    }

    pub(crate) fn script(&self, endpoint: Endpoint, responses: Vec<Scripted>) {
        self.update(|s| s.scripts.entry(endpoint).or_default().extend(responses));
    }

    /// Removes every channel (their subscriptions with them) and tells their sockets with
    /// `{"result":"404"}`, as Genesys does for a channel it deleted.
    pub(crate) fn drop_channels(&self) -> usize {
        let txs: Vec<_> = self.update(|s| {
            s.channels.clear();
            s.sockets
                .values()
                .filter(|e| e.channel.is_some())
                .map(|e| e.tx.clone())
                .collect()
        });
        let frame =
            serde_json::json!({"result": "404", "message": "channel removed by the testkit"});
        txs.iter()
            .filter(|tx| {
                tx.send(SocketCmd::Send(frame.to_string(), OutKind::Other))
                    .is_ok()
            })
            .count()
    }

    pub(crate) fn expire_tokens(&self) {
        let now = Instant::now();
        self.update(|s| {
            for exp in s.tokens.values_mut() {
                if *exp > now {
                    *exp = now;
                }
            }
        });
    }

    pub(crate) fn forbid_topic(&self, topic: &str) {
        self.update(|s| s.forbidden.insert(topic.to_string()));
    }

    pub(crate) fn stats(&self) -> GatewayStats {
        self.read(|s| s.stats.clone())
    }
}

/// The running gateway. Dropping it (or calling [`Gateway::shutdown`]) stops the server and
/// its thread; every open socket is dropped.
pub struct Gateway {
    shared: Arc<Shared>,
    addr: SocketAddr,
    ca: Option<(Vec<u8>, String)>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Gateway {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Gateway")
            .field("addr", &self.addr)
            .field("tls", &self.shared.tls)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts the gateway on its own OS thread (with its own tokio runtime) and returns once
    /// it is listening on `127.0.0.1:<config.port>`. Blocks the caller only for that.
    pub fn start(config: GatewayConfig) -> std::io::Result<Gateway> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", config.port))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let tls = if config.tls {
            Some(crate::tls::make_tls()?)
        } else {
            None
        };
        let ca = tls.as_ref().map(|t| (t.ca_der.clone(), t.ca_pem.clone()));
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.server_config.clone()));
        let clients = HashMap::from([(config.client_id.clone(), config.client_secret.clone())]);
        let shared = Arc::new(Shared {
            tls: config.tls,
            config,
            started: Instant::now(),
            port: addr.port(),
            state: Mutex::new(State {
                tokens: HashMap::new(),
                token_clients: HashMap::new(),
                clients,
                channels: HashMap::new(),
                sockets: HashMap::new(),
                forbidden: BTreeSet::new(),
                scripts: HashMap::new(),
                fault: Fault::None,
                connect_base: None,
                next_seq: 0,
                next_socket: 0,
                stats: GatewayStats::default(),
            }),
            changed: Notify::new(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<std::io::Result<()>>();
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("testkit-gateway-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    http::serve(thread_shared, listener, acceptor, stop_rx).await;
                });
                // Dropping the runtime drops every socket task and so every connection.
                drop(rt);
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::Error::other("gateway thread died while starting")),
        }
        tracing::info!(%addr, tls = shared.tls, "testkit gateway listening");
        Ok(Gateway {
            shared,
            addr,
            ca,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Accepts one more OAuth client (`id`, `secret`) at the token endpoint, besides
    /// [`GatewayConfig::client_id`]; a known `id` gets the new secret. What it does is counted in
    /// [`GatewayStats::per_client`].
    pub fn add_client(&self, id: &str, secret: &str) {
        self.shared
            .update(|s| s.clients.insert(id.to_string(), secret.to_string()));
    }

    /// The bound address (`127.0.0.1:<port>`).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Whether the gateway serves HTTPS/WSS.
    pub fn is_tls(&self) -> bool {
        self.shared.tls
    }

    /// `http://127.0.0.1:<port>` (or `https://…` in TLS mode): the base of the OAuth, API and
    /// control endpoints (paths as real Genesys: `/oauth/token`, `/api/v2/...`).
    pub fn base_url(&self) -> String {
        let scheme = if self.shared.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// `ws://127.0.0.1:<port><path>` (or `wss://…`), e.g. `ws_url("/keepalive")`.
    pub fn ws_url(&self, path: &str) -> String {
        let scheme = if self.shared.tls { "wss" } else { "ws" };
        let sep = if path.starts_with('/') { "" } else { "/" };
        format!("{scheme}://{}{sep}{path}", self.addr)
    }

    /// The DER of the CA that signed the gateway's certificate (TLS mode only).
    pub fn ca_cert_der(&self) -> Option<&[u8]> {
        self.ca.as_ref().map(|(der, _)| der.as_slice())
    }

    /// The PEM of the CA that signed the gateway's certificate (TLS mode only).
    pub fn ca_cert_pem(&self) -> Option<&str> {
        self.ca.as_ref().map(|(_, pem)| pem.as_str())
    }

    /// Overrides the base of the `connectUri` returned by channel creation, e.g.
    /// `Some("ws://127.0.0.1:<proxy port>")` to send sockets through a [`crate::proxy::Proxy`].
    /// `None` (the default) answers `ws(s)://127.0.0.1:<port of the request's Host header>`,
    /// so a client that reaches the API through a proxy also gets its socket through it.
    pub fn set_connect_base(&self, base: Option<String>) {
        self.shared.update(|s| s.connect_base = base);
    }

    /// Publishes a numbered notification on `topic` to every connected socket of every
    /// channel subscribed to it; returns its number (`seq`, from 1). The frame is
    /// `{"topicName":topic,"version":"2","eventBody":{..body, "seq":n},"metadata":{"CorrelationId":id}}`
    /// (a non-object body goes under `eventBody.value`); the CorrelationId is the same on every
    /// socket for one publish.
    pub fn publish(&self, topic: &str, body: serde_json::Value) -> u64 {
        self.shared.publish(topic, body)
    }

    /// Injects a fault; see [`Fault`].
    pub fn set_fault(&self, fault: Fault) {
        self.shared.set_fault(fault)
    }

    /// The fault last set.
    pub fn fault(&self) -> Fault {
        self.shared.read(|s| s.fault)
    }

    /// Sends `{"topicName":"v2.system.socket_closing",...}` on every socket open now, and
    /// closes each of them (1001) after `socket_closing_grace`. Returns how many sockets.
    pub fn socket_closing(&self) -> usize {
        self.shared.socket_closing()
    }

    /// The next `responses.len()` requests to `endpoint` get these canned answers, in order,
    /// before normal behaviour resumes. Calls add to the queue.
    pub fn script_http(&self, endpoint: Endpoint, responses: Vec<Scripted>) {
        self.shared.script(endpoint, responses)
    }

    /// Deletes every channel: their sockets get `{"result":"404"}` and nothing more is published
    /// to them. Returns how many sockets were told.
    pub fn drop_channels(&self) -> usize {
        self.shared.drop_channels()
    }

    /// Makes every token issued so far expire now.
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens()
    }

    /// Makes subscription requests that include `topic` fail with 403 `missing.permissions`.
    pub fn forbid_topic(&self, topic: &str) {
        self.shared.forbid_topic(topic)
    }

    /// Allows a topic forbidden earlier.
    pub fn allow_topic(&self, topic: &str) {
        self.shared.update(|s| s.forbidden.remove(topic));
    }

    /// Ids of the live channels.
    pub fn channel_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.shared.read(|s| s.channels.keys().cloned().collect());
        ids.sort();
        ids
    }

    /// The topics a channel is subscribed to, or `None` if the channel does not exist.
    pub fn channel_topics(&self, channel_id: &str) -> Option<Vec<String>> {
        self.shared
            .read(|s| s.channels.get(channel_id).map(|c| c.topics.clone()))
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> GatewayStats {
        self.shared.stats()
    }

    /// Waits (runtime-agnostic: no timer of any runtime is used) until `pred` holds for the
    /// counters, re-checking on every change. Wrap it in your runtime's timeout.
    pub async fn wait_until(&self, mut pred: impl FnMut(&GatewayStats) -> bool) {
        loop {
            let notified = self.shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.read(|s| pred(&s.stats)) {
                return;
            }
            notified.await;
        }
    }

    /// Stops the gateway and joins its thread. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_is_send_sync() {
        fn check<T: Send + Sync>() {}
        check::<Gateway>();
    }

    #[test]
    fn config_debug_redacts_secret() {
        let c = GatewayConfig {
            client_secret: "hunter2".into(),
            ..Default::default()
        };
        let s = format!("{c:?}");
        assert!(!s.contains("hunter2"));
        assert!(s.contains("[redacted]"));
    }
}
