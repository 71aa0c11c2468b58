//! The end-to-end scenarios, written once for any driver.
//!
//! A driver crate implements [`DriverUnderTest`] (connect, sleep, run a future to completion on its
//! runtime) and [`ClientHandle`] (a view of its handle); its test file then expands [`e2e_suite!`](crate::e2e_suite) to get one
//! `#[test]` per scenario. Every scenario runs over real loopback sockets against a [`Gateway`] with
//! compressed timings and asserts outcomes (counts of reconnects, notifications, close codes, stop
//! reasons). This crate does not depend on any driver.
//!
//! ```ignore
//! struct MyDriver { /* a runtime */ }
//! impl DriverUnderTest for MyDriver { /* … */ }
//! genesys_keepalive_testkit::e2e_suite!(MyDriver::new());
//! ```
//!
//! The client secret used everywhere is [`SECRET`]; every scenario checks that neither it nor anything
//! shaped like a gateway access token appears in the client's reports, stop reasons or captured logs.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use genesys_keepalive::{
    Alert, AuditEntry, Config, ConfigBuilder, ConfigError, Notification, ProfileKind, Secret,
    State, Stats, StopReason,
};

pub use crate::gap_scenarios::{gap_reports, no_gap_without_loss, restart_from_a_checkpoint};
use crate::gateway::{Endpoint, Fault, Gateway, GatewayConfig, Scripted};

/// A boxed, `Send` future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
/// A boxed future that need not be `Send` (what [`DriverUnderTest::block_on`] runs).
pub type LocalBoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + 'a>>;

/// The OAuth client id the scenarios use.
pub const CLIENT_ID: &str = "e2e-client";
/// The client secret the scenarios use: it must never be printed.
pub const SECRET: &str = "s3cr3t-DO-NOT-PRINT";
/// The topic the scenarios subscribe to.
pub const TOPIC: &str = "v2.users.e2e-user.presence";

/// Heartbeat interval while STABLE (DEGRADED: half, RECONNECTING/CONNECTING: a quarter).
pub const HEARTBEAT: Duration = Duration::from_millis(400);
/// The client's idle timeout.
pub const IDLE: Duration = Duration::from_millis(1500);

/// Options a scenario passes to a driver's connect, in runtime-neutral form.
#[derive(Debug, Clone, Default)]
pub struct ClientOptions {
    /// PRNG seed (`None`: the driver's default).
    pub seed: Option<u64>,
    /// Extra trusted root certificates, DER.
    pub extra_root_certs: Vec<Vec<u8>>,
    /// The driver's `Options::resume_after`: continue a connection of an earlier process.
    pub resume_after: Option<std::time::SystemTime>,
}

/// Why a driver's connect failed, in runtime-neutral form.
#[derive(Debug, Clone, PartialEq)]
pub enum ConnectError {
    /// The core refused the configuration.
    Config(ConfigError),
    /// The machine stopped before the first socket opened.
    Stopped(StopReason),
    /// Anything else (the driver's own words).
    Other(String),
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectError::Config(e) => write!(f, "{e}"),
            ConnectError::Stopped(r) => write!(f, "stopped: {r}"),
            ConnectError::Other(s) => f.write_str(s),
        }
    }
}

/// A report from the client (the driver's report type, mapped).
#[derive(Debug, Clone, PartialEq)]
pub enum ClientReport {
    /// An audit entry.
    Audit(AuditEntry),
    /// An alert.
    Alert(Alert),
    /// A state change.
    State {
        /// Before.
        from: State,
        /// After.
        to: State,
    },
    /// A window in which notifications may have been missed.
    Gap(genesys_keepalive::Gap),
    /// The machine stopped.
    Stopped(StopReason),
}

/// What a scenario needs from a driver's handle.
pub trait ClientHandle: Send + Sync {
    /// The connection state now.
    fn state(&self) -> State;
    /// The machine's stats as of its last input.
    fn stats(&self) -> Stats;
    /// Adds topics.
    fn subscribe(&self, topics: Vec<String>) -> BoxFuture<'_, Result<(), String>>;
    /// Graceful shutdown; resolves once the close frame went out and the driver's task ended.
    fn shutdown(&self) -> BoxFuture<'_, Stats>;
    /// Resolves when the machine stops.
    fn stopped(&self) -> BoxFuture<'_, StopReason>;
    /// Every report since the previous call (the first call: since start). Must not lose any under the
    /// scenarios' load.
    fn take_reports(&self) -> Vec<ClientReport>;
    /// The driver's `Handle::receiving_since`: what a checkpoint would store now.
    fn receiving_since(&self) -> Option<std::time::SystemTime>;
}

/// A connected client: its handle and its notification stream.
pub struct Connected {
    /// The handle.
    pub handle: Box<dyn ClientHandle>,
    /// The notifications.
    pub notifications: BoxStream<'static, Notification>,
}

/// A driver (and its runtime) as the scenarios see it.
pub trait DriverUnderTest {
    /// A short name for messages, e.g. `tokio`.
    fn name(&self) -> &'static str;
    /// The driver's `connect_with(config, options)`.
    fn connect(
        &self,
        config: Config,
        options: ClientOptions,
    ) -> BoxFuture<'_, Result<Connected, ConnectError>>;
    /// The runtime's sleep.
    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()>;
    /// Runs `fut` to completion on the driver's runtime (the scenario runs inside it).
    fn block_on(&self, fut: LocalBoxFuture<'_, ()>);
    /// Everything the driver logged (e.g. through `tracing`) so far, if captured; checked for credentials.
    fn captured_logs(&self) -> String {
        String::new()
    }
}

/// Expands to one `#[test]` per scenario for a driver: `e2e_suite!(MyDriver::new());` (the expression is
/// evaluated once per test).
#[macro_export]
macro_rules! e2e_suite {
    ($make:expr) => {
        $crate::e2e_suite!(@tests $make;
            steady_state, blackhole, socket_closing_rollover, token_expiry, bad_credentials,
            forbidden_topic, rate_limited_channel_creation, garbage_and_oversized_frames,
            graceful_shutdown, keepalive_frame_profile, tls, handshake_refused, gap_reports,
            no_gap_without_loss, restart_from_a_checkpoint);
    };
    (@tests $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let driver = $make;
                $crate::scenarios::DriverUnderTest::block_on(
                    &driver,
                    ::std::boxed::Box::pin($crate::scenarios::$name(&driver)),
                );
            }
        )*
    };
}

// ---------------------------------------------------------------------------------------------
// helpers

/// Runs `fut` for at most `limit`.
pub async fn within<D, F>(d: &D, limit: Duration, fut: F) -> Option<F::Output>
where
    D: DriverUnderTest + ?Sized,
    F: Future,
{
    let fut = std::pin::pin!(fut);
    match select(fut, d.sleep(limit)).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// Polls the client's stats every 20 ms until `pred` holds (returns them) or `limit` passes (`Err` with the
/// last stats).
pub async fn wait_stats<D>(
    d: &D,
    h: &dyn ClientHandle,
    limit: Duration,
    mut pred: impl FnMut(&Stats) -> bool,
) -> Result<Stats, Stats>
where
    D: DriverUnderTest + ?Sized,
{
    let start = Instant::now();
    loop {
        let s = h.stats();
        if pred(&s) {
            return Ok(s);
        }
        if start.elapsed() >= limit {
            return Err(s);
        }
        d.sleep(Duration::from_millis(20)).await;
    }
}

/// A gateway with the scenarios' credentials; server heartbeat and idle close off unless `edit` sets them.
pub fn gateway(edit: impl FnOnce(&mut GatewayConfig)) -> Gateway {
    let mut cfg = GatewayConfig {
        client_id: CLIENT_ID.into(),
        client_secret: SECRET.into(),
        server_heartbeat: Duration::ZERO,
        idle_timeout: Duration::ZERO,
        ..GatewayConfig::default()
    };
    edit(&mut cfg);
    Gateway::start(cfg).expect("the gateway starts")
}

/// The notifications-profile configuration against `gw`, with compressed timings: heartbeat 400 ms,
/// idle timeout 1.5 s, ack timeout 1 s, backoff from 100 ms.
pub fn config(gw: &Gateway) -> ConfigBuilder {
    Config::builder()
        .credentials(CLIENT_ID, Secret::new(SECRET))
        .api_base(gw.base_url())
        .login_base(gw.base_url())
        .allow_insecure(!gw.is_tls())
        .topic(TOPIC)
        .heartbeat_interval(HEARTBEAT)
        .max_idle(IDLE)
        .ack_timeout(Duration::from_millis(1000))
        .backoff_base(Duration::from_millis(100))
        .backoff_max(Duration::from_millis(1000))
        .min_uptime(Duration::from_secs(2))
        .connect_timeout(Duration::from_secs(3))
        .request_timeout(Duration::from_secs(3))
        .retry_after_default(Duration::from_millis(200))
        .retry_budget(Duration::from_secs(10))
}

/// A connected client plus everything it reported so far.
pub struct Client {
    /// The handle.
    pub handle: Box<dyn ClientHandle>,
    /// The notifications.
    pub notifications: BoxStream<'static, Notification>,
    reports: Vec<ClientReport>,
}

impl Client {
    fn new(c: Connected) -> Self {
        Client {
            handle: c.handle,
            notifications: c.notifications,
            reports: Vec::new(),
        }
    }

    /// Every report so far.
    pub fn reports(&mut self) -> &[ClientReport] {
        self.reports.extend(self.handle.take_reports());
        &self.reports
    }

    /// The reports as a compact event trace, one per line (for assertion messages).
    pub fn trace(&mut self) -> String {
        self.reports();
        trace(&self.reports)
    }

    /// The next notification within `limit`.
    pub async fn next<D: DriverUnderTest + ?Sized>(
        &mut self,
        d: &D,
        limit: Duration,
    ) -> Option<Notification> {
        within(d, limit, self.notifications.next()).await.flatten()
    }

    /// Collects notifications until `done` holds for the seqs seen or `limit` passes; returns seq → count.
    pub async fn collect_seqs<D: DriverUnderTest + ?Sized>(
        &mut self,
        d: &D,
        limit: Duration,
        mut done: impl FnMut(&BTreeMap<u64, u32>) -> bool,
        seen: &mut BTreeMap<u64, u32>,
    ) {
        let start = Instant::now();
        while !done(seen) {
            let Some(left) = limit.checked_sub(start.elapsed()) else {
                return;
            };
            match self.next(d, left).await {
                Some(n) => {
                    if let Some(seq) = seq_of(&n) {
                        *seen.entry(seq).or_default() += 1;
                    }
                }
                None => return,
            }
        }
    }
}

/// The gateway's `eventBody.seq` of a notification.
pub fn seq_of(n: &Notification) -> Option<u64> {
    n.json()["eventBody"]["seq"].as_u64()
}

/// One line per report.
pub fn trace(reports: &[ClientReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let line = match r {
            ClientReport::Audit(a) => format!(
                "{} AUDIT {:?} [{}] {}",
                a.timestamp,
                a.event,
                a.state,
                a.error.as_deref().unwrap_or("")
            ),
            ClientReport::Alert(a) => format!(
                "{} ALERT {:?} {}",
                a.timestamp,
                a.event,
                a.metrics.detail.as_deref().unwrap_or("")
            ),
            ClientReport::State { from, to } => format!("STATE {from} -> {to}"),
            ClientReport::Gap(g) => format!(
                "GAP {} .. {} {} {:?}",
                g.from_iso8601(),
                g.to_iso8601(),
                g.reason,
                g.topics
            ),
            ClientReport::Stopped(r) => format!("STOPPED {r}"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// True when `s` holds a run of 64 or more hex digits: the shape of the gateway's access tokens.
fn has_token_like(s: &str) -> bool {
    let mut run = 0;
    for c in s.chars() {
        if c.is_ascii_hexdigit() {
            run += 1;
            if run >= 64 {
                return true;
            }
        } else {
            run = 0;
        }
    }
    false
}

/// Asserts that no credential shows in `text`.
pub fn assert_no_credentials(what: &str, text: &str) {
    assert!(!text.contains(SECRET), "{what} contains the client secret");
    assert!(
        !has_token_like(text),
        "{what} contains something shaped like an access token"
    );
}

/// Asserts that neither the client's reports nor the driver's captured logs hold a credential.
pub fn assert_clean<D: DriverUnderTest + ?Sized>(d: &D, c: &mut Client) {
    let reports = format!("{:?}", c.reports());
    assert_no_credentials("the client's reports", &reports);
    assert_no_credentials("the captured logs", &d.captured_logs());
}

pub(crate) async fn connect<D: DriverUnderTest + ?Sized>(
    d: &D,
    config: Config,
    options: ClientOptions,
) -> Result<Client, ConnectError> {
    d.connect(config, options).await.map(Client::new)
}

pub(crate) async fn connect_ok<D: DriverUnderTest + ?Sized>(d: &D, config: Config) -> Client {
    match within(
        d,
        Duration::from_secs(10),
        connect(d, config, ClientOptions::default()),
    )
    .await
    {
        Some(Ok(c)) => c,
        Some(Err(e)) => panic!("[{}] connect failed: {e}", d.name()),
        None => panic!("[{}] connect did not resolve within 10 s", d.name()),
    }
}

/// Waits until the client is STABLE with at least `opened` sockets opened.
pub(crate) async fn wait_stable<D: DriverUnderTest + ?Sized>(
    d: &D,
    c: &mut Client,
    opened: u64,
) -> Stats {
    match wait_stats(d, c.handle.as_ref(), Duration::from_secs(5), |s| {
        s.state == State::Stable && s.connections_opened >= opened
    })
    .await
    {
        Ok(s) => s,
        Err(s) => panic!(
            "[{}] not STABLE with {opened} socket(s) opened within 5 s: {s:?}\ntrace:\n{}",
            d.name(),
            c.trace()
        ),
    }
}

/// Publishes `n` notifications on `topic`; returns their seqs.
fn publish_n(gw: &Gateway, topic: &str, n: usize) -> Vec<u64> {
    (0..n)
        .map(|i| gw.publish(topic, serde_json::json!({ "i": i })))
        .collect()
}

/// Asserts that every seq in `expected` was seen exactly once.
pub(crate) fn assert_exactly_once(
    d: &str,
    expected: &[u64],
    seen: &BTreeMap<u64, u32>,
    trace: &str,
) {
    let missing: Vec<u64> = expected
        .iter()
        .copied()
        .filter(|s| !seen.contains_key(s))
        .collect();
    let dup: Vec<(u64, u32)> = seen
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(s, c)| (*s, *c))
        .collect();
    assert!(
        missing.is_empty() && dup.is_empty(),
        "[{d}] notifications: {} missing {missing:?}, duplicated {dup:?}\ntrace:\n{trace}",
        missing.len()
    );
}

pub(crate) async fn shutdown_and_check<D: DriverUnderTest + ?Sized>(d: &D, mut c: Client) -> Stats {
    let stats = within(d, Duration::from_secs(5), c.handle.shutdown())
        .await
        .unwrap_or_else(|| panic!("[{}] shutdown did not finish within 5 s", d.name()));
    assert_eq!(stats.state, State::Stopped);
    // Every report the driver made fitted what the machine expected (no stale ids, no double closes).
    assert_eq!(
        stats.unexpected_events,
        0,
        "[{}] unexpected events\ntrace:\n{}",
        d.name(),
        c.trace()
    );
    assert_clean(d, &mut c);
    stats
}

// ---------------------------------------------------------------------------------------------
// scenarios

/// 1. Steady state: 3 s on a healthy gateway; zero reconnects, heartbeats acked, every published
///    notification delivered exactly once.
pub async fn steady_state<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|_| {});
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    let mut expected = Vec::new();
    let mut seen = BTreeMap::new();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        expected.extend(publish_n(&gw, TOPIC, 2));
        c.collect_seqs(d, Duration::from_millis(100), |_| false, &mut seen)
            .await;
    }
    let n = expected.len();
    c.collect_seqs(d, Duration::from_secs(2), |s| s.len() >= n, &mut seen)
        .await;
    let trace = c.trace();
    assert_exactly_once(d.name(), &expected, &seen, &trace);
    let s = c.handle.stats();
    assert_eq!(
        s.reconnects,
        0,
        "[{}] reconnects\ntrace:\n{trace}",
        d.name()
    );
    assert_eq!(s.connections_opened, 1, "{s:?}");
    assert_eq!(s.dead_peers, 0, "{s:?}");
    assert_eq!(s.heartbeats_lost, 0, "{s:?}");
    assert!(s.heartbeats_acked >= 4, "heartbeats acked: {s:?}");
    assert!(s.rtt_samples >= 4, "{s:?}");
    assert_eq!(s.state, State::Stable, "{s:?}");
    assert_eq!(s.notifications_delivered as usize, n, "{s:?}");
    let g = gw.stats();
    assert!(g.pings_received >= s.heartbeats_acked, "{g:?}");
    assert_eq!(g.sockets_opened, 1);
    shutdown_and_check(d, c).await;
}

/// 2. Blackhole: the live socket stops answering (half-open) → the peer is declared dead within the idle
///    timeout plus one heartbeat interval, the client reconnects, and notifications published after the
///    recovery are delivered.
pub async fn blackhole<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|_| {});
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    wait_stable(d, &mut c, 1).await;
    let before = publish_n(&gw, TOPIC, 3);
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_secs(2), |s| s.len() >= 3, &mut seen)
        .await;
    assert_exactly_once(d.name(), &before, &seen, &c.trace());

    let t0 = Instant::now();
    gw.set_fault(Fault::Blackhole);
    let bound = IDLE + HEARTBEAT;
    let dead = wait_stats(d, c.handle.as_ref(), bound + Duration::from_secs(3), |s| {
        s.dead_peers >= 1
    })
    .await;
    let detected = t0.elapsed();
    let s = dead.unwrap_or_else(|s| {
        panic!(
            "[{}] blackhole never detected: {s:?}\ntrace:\n{}",
            d.name(),
            c.trace()
        )
    });
    assert_eq!(s.dead_peers, 1, "{s:?}");
    assert!(
        detected <= bound,
        "[{}] dead peer detected after {detected:?}, bound {bound:?}\ntrace:\n{}",
        d.name(),
        c.trace()
    );

    let s = wait_stable(d, &mut c, 2).await;
    assert_eq!(
        s.reconnects,
        1,
        "[{}] {s:?}\ntrace:\n{}",
        d.name(),
        c.trace()
    );
    assert_eq!(gw.stats().sockets_blackholed, 1);
    let after = publish_n(&gw, TOPIC, 5);
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_secs(3), |s| s.len() >= 5, &mut seen)
        .await;
    assert_exactly_once(d.name(), &after, &seen, &c.trace());
    let s = c.handle.stats();
    assert_eq!(s.dead_peers, 1, "{s:?}");
    shutdown_and_check(d, c).await;
}

/// 3. Planned close: a numbered stream is published continuously while the gateway announces
///    `v2.system.socket_closing` and later closes the old socket → every number is delivered exactly once,
///    one rollover, no reconnect.
pub async fn socket_closing_rollover<D: DriverUnderTest + ?Sized>(d: &D) {
    const N: usize = 200;
    let gw = Arc::new(gateway(|g| {
        g.socket_closing_grace = Duration::from_millis(1500);
    }));
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    wait_stable(d, &mut c, 1).await;

    let publisher = {
        let gw = gw.clone();
        std::thread::spawn(move || {
            let mut seqs = Vec::with_capacity(N);
            for i in 0..N {
                if i == 50 {
                    assert_eq!(gw.socket_closing(), 1, "one socket gets socket_closing");
                }
                seqs.push(gw.publish(TOPIC, serde_json::json!({ "i": i })));
                std::thread::sleep(Duration::from_millis(10));
            }
            seqs
        })
    };
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_secs(8), |s| s.len() >= N, &mut seen)
        .await;
    let expected = publisher.join().expect("the publisher thread");
    // Let the gateway's grace pass, so its own close of the old socket (if still open) happens too.
    c.collect_seqs(d, Duration::from_millis(1200), |_| false, &mut seen)
        .await;
    let trace = c.trace();
    assert_exactly_once(d.name(), &expected, &seen, &trace);
    let s = c.handle.stats();
    assert_eq!(s.rollovers, 1, "[{}] {s:?}\ntrace:\n{trace}", d.name());
    assert_eq!(s.reconnects, 0, "[{}] {s:?}\ntrace:\n{trace}", d.name());
    assert_eq!(s.connections_opened, 2, "{s:?}");
    assert_eq!(s.notifications_delivered as usize, N, "{s:?}");
    let g = gw.stats();
    assert_eq!(g.socket_closing_sent, 1, "{g:?}");
    assert_eq!(g.channels_created, 2, "{g:?}");
    assert!(matches!(s.state, State::Stable | State::Degraded), "{s:?}");
    shutdown_and_check(d, c).await;
}

/// 4. Token expiry: tokens live 2 s; over 8 s the client refreshes several times, never presents an
///    expired token (topics added along the way use the current one), and the socket stays up.
pub async fn token_expiry<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|g| g.token_lifetime = Duration::from_secs(2));
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    let mut expected = Vec::new();
    let mut seen = BTreeMap::new();
    for round in 0..4 {
        c.collect_seqs(d, Duration::from_millis(1800), |_| false, &mut seen)
            .await;
        let topic = format!("v2.users.e2e-token-{round}.presence");
        c.handle
            .subscribe(vec![topic.clone()])
            .await
            .unwrap_or_else(|e| panic!("[{}] subscribe: {e}", d.name()));
        // The subscription is a REST call; wait until the gateway has it before publishing on it.
        let ch = gw.channel_ids();
        let subscribed = within(d, Duration::from_secs(3), async {
            loop {
                if ch
                    .iter()
                    .any(|id| gw.channel_topics(id).is_some_and(|t| t.contains(&topic)))
                {
                    return;
                }
                d.sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        assert!(
            subscribed.is_some(),
            "[{}] topic {topic} never subscribed\ntrace:\n{}",
            d.name(),
            c.trace()
        );
        expected.extend(publish_n(&gw, &topic, 2));
        expected.extend(publish_n(&gw, TOPIC, 1));
    }
    let n = expected.len();
    c.collect_seqs(d, Duration::from_secs(2), |s| s.len() >= n, &mut seen)
        .await;
    let trace = c.trace();
    assert_exactly_once(d.name(), &expected, &seen, &trace);
    let s = c.handle.stats();
    let g = gw.stats();
    assert!(
        s.token_refreshes >= 4,
        "[{}] token refreshes: {s:?}\ntrace:\n{trace}",
        d.name()
    );
    assert_eq!(g.tokens_issued, s.token_refreshes, "{g:?}");
    assert_eq!(
        g.requests_with_expired_token,
        0,
        "[{}] expired token presented\ntrace:\n{trace}",
        d.name()
    );
    assert_eq!(s.reconnects, 0, "[{}] {s:?}\ntrace:\n{trace}", d.name());
    assert_eq!(s.connections_opened, 1, "{s:?}");
    assert_eq!(g.sockets_opened, 1, "{g:?}");
    shutdown_and_check(d, c).await;
}

/// 5. Bad credentials: connect fails with `AuthenticationFailed` after exactly one token request.
pub async fn bad_credentials<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|g| g.client_secret = "a-different-secret".into());
    let result = within(
        d,
        Duration::from_secs(10),
        connect(d, config(&gw).build_unchecked(), ClientOptions::default()),
    )
    .await
    .expect("connect resolves");
    let err = match result {
        Ok(_) => panic!("[{}] connected with bad credentials", d.name()),
        Err(e) => e,
    };
    assert!(
        matches!(
            err,
            ConnectError::Stopped(StopReason::AuthenticationFailed { .. })
        ),
        "[{}] {err:?}",
        d.name()
    );
    assert_no_credentials("the connect error", &format!("{err} {err:?}"));
    d.sleep(Duration::from_millis(500)).await;
    let g = gw.stats();
    assert_eq!(g.token_requests, 1, "[{}] retry storm: {g:?}", d.name());
    assert_eq!(g.tokens_issued, 0);
    assert_eq!(g.sockets_opened, 0);
    assert_no_credentials("the captured logs", &d.captured_logs());
}

/// 6. A 403 on a topic: connect fails with `Forbidden`, naming the topic.
pub async fn forbidden_topic<D: DriverUnderTest + ?Sized>(d: &D) {
    const SECRET_TOPIC: &str = "v2.users.someone-else.conversations";
    let gw = gateway(|_| {});
    gw.forbid_topic(SECRET_TOPIC);
    let config = config(&gw).topic(SECRET_TOPIC).build_unchecked();
    let result = within(
        d,
        Duration::from_secs(10),
        connect(d, config, ClientOptions::default()),
    )
    .await
    .expect("connect resolves");
    match result {
        Err(ConnectError::Stopped(StopReason::Forbidden { detail })) => {
            assert!(
                detail.contains(SECRET_TOPIC),
                "[{}] the stop reason does not name the topic: {detail}",
                d.name()
            );
            assert_no_credentials("the stop reason", &detail);
        }
        Err(e) => panic!("[{}] expected Forbidden, got {e:?}", d.name()),
        Ok(_) => panic!("[{}] connected despite the 403", d.name()),
    }
    d.sleep(Duration::from_millis(300)).await;
    let g = gw.stats();
    assert_eq!(g.subscription_requests, 1, "[{}] {g:?}", d.name());
    assert_eq!(g.sockets_opened, 0, "{g:?}");
    assert_no_credentials("the captured logs", &d.captured_logs());
}

/// 7. 429 with `Retry-After: 1` on channel creation: the retry comes no sooner than 1 s, then it works.
pub async fn rate_limited_channel_creation<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|_| {});
    gw.script_http(
        Endpoint::CreateChannel,
        vec![Scripted::too_many_requests(1)],
    );
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    let g = gw.stats();
    let creates: Vec<_> = g
        .requests
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/v2/notifications/channels")
        .collect();
    assert_eq!(creates.len(), 2, "[{}] {creates:?}", d.name());
    assert_eq!(creates[0].status, 429);
    assert_eq!(creates[1].status, 200);
    let gap = creates[1].at.saturating_sub(creates[0].at);
    assert!(
        gap >= Duration::from_secs(1),
        "[{}] retried after {gap:?}, before Retry-After (1 s)\ntrace:\n{}",
        d.name(),
        c.trace()
    );
    let s = c.handle.stats();
    assert!(s.http_retries >= 1, "{s:?}");
    assert_eq!(s.reconnects, 0, "{s:?}");
    let seqs = publish_n(&gw, TOPIC, 2);
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_secs(2), |s| s.len() >= 2, &mut seen)
        .await;
    assert_exactly_once(d.name(), &seqs, &seen, &c.trace());
    shutdown_and_check(d, c).await;
}

/// 8. Garbage: non-JSON, wrong shapes, a binary frame, a 2 MiB frame (over the 1 MiB inbound limit), an
///    unsolicited pong → counted; the client is still connected or cleanly reconnected, and delivers.
pub async fn garbage_and_oversized_frames<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|_| {});
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    wait_stable(d, &mut c, 1).await;
    gw.set_fault(Fault::Garbage);
    let counted = wait_stats(d, c.handle.as_ref(), Duration::from_secs(5), |s| {
        s.non_json >= 1 && s.wrong_shape >= 1 && s.invalid_utf8 >= 1
    })
    .await;
    let s = counted.unwrap_or_else(|s| {
        panic!(
            "[{}] garbage not counted: {s:?}\ntrace:\n{}",
            d.name(),
            c.trace()
        )
    });
    assert!(s.wrong_shape >= 2, "{s:?}");
    // The oversized frame ends the first socket (the driver's frame limit); at most one reconnect.
    let s = wait_stable(d, &mut c, 1).await;
    d.sleep(Duration::from_millis(300)).await;
    let s2 = wait_stable(d, &mut c, s.connections_opened).await;
    assert!(
        s2.reconnects <= 1,
        "[{}] {s2:?}\ntrace:\n{}",
        d.name(),
        c.trace()
    );
    assert_eq!(s2.connections_opened, 1 + s2.reconnects, "{s2:?}");
    assert_eq!(s2.dead_peers, 0, "{s2:?}");
    assert_ne!(c.handle.state(), State::Stopped);
    let seqs = publish_n(&gw, TOPIC, 3);
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_secs(3), |s| s.len() >= 3, &mut seen)
        .await;
    assert_exactly_once(d.name(), &seqs, &seen, &c.trace());
    shutdown_and_check(d, c).await;
}

/// 9. Graceful shutdown: the gateway receives close 1000 "Graceful shutdown"; the stream ends; the stop
///    reason is `Shutdown`.
pub async fn graceful_shutdown<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|_| {});
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    wait_stable(d, &mut c, 1).await;
    let stats = within(d, Duration::from_secs(5), c.handle.shutdown())
        .await
        .expect("shutdown finishes within 5 s");
    assert_eq!(stats.state, State::Stopped);
    assert_eq!(
        stats.unexpected_events,
        0,
        "{stats:?}\ntrace:\n{}",
        c.trace()
    );
    let recorded = within(
        d,
        Duration::from_secs(2),
        gw.wait_until(|g| !g.close_codes.is_empty()),
    )
    .await;
    let g = gw.stats();
    assert!(recorded.is_some(), "[{}] no close frame: {g:?}", d.name());
    assert_eq!(
        g.close_codes,
        vec![(1000, "Graceful shutdown".to_string())],
        "[{}]",
        d.name()
    );
    let reason = within(d, Duration::from_secs(1), c.handle.stopped())
        .await
        .expect("stopped resolves");
    assert_eq!(reason, StopReason::Shutdown);
    let end = within(d, Duration::from_secs(1), c.notifications.next()).await;
    assert!(
        matches!(end, Some(None)),
        "[{}] the notification stream did not end",
        d.name()
    );
    assert!(c
        .reports()
        .iter()
        .any(|r| matches!(r, ClientReport::Stopped(StopReason::Shutdown))));
    assert_clean(d, &mut c);
}

/// 10. The keepalive-frame profile against `/keepalive`: KEEP_ALIVE frames acked, RTT samples recorded,
///     no reconnect.
pub async fn keepalive_frame_profile<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|_| {});
    let config = Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url(gw.ws_url("/keepalive"))
        .credentials(CLIENT_ID, Secret::new(SECRET))
        .login_base(gw.base_url())
        .allow_insecure(true)
        .heartbeat_interval(HEARTBEAT)
        .max_idle(IDLE)
        .ack_timeout(Duration::from_millis(1000))
        .backoff_base(Duration::from_millis(100))
        .backoff_max(Duration::from_millis(1000))
        .build_unchecked();
    let mut c = connect_ok(d, config).await;
    d.sleep(Duration::from_millis(2500)).await;
    let s = c.handle.stats();
    let trace = c.trace();
    assert!(
        s.heartbeats_acked >= 4,
        "[{}] {s:?}\ntrace:\n{trace}",
        d.name()
    );
    assert!(s.rtt_samples >= 4, "{s:?}");
    assert_eq!(s.heartbeats_lost, 0, "{s:?}");
    assert_eq!(s.reconnects, 0, "[{}] {s:?}\ntrace:\n{trace}", d.name());
    assert_eq!(s.connections_opened, 1, "{s:?}");
    assert_eq!(s.state, State::Stable, "{s:?}");
    let g = gw.stats();
    assert!(g.keepalives_received >= s.heartbeats_acked, "{g:?}");
    assert_eq!(g.keepalives_invalid, 0, "{g:?}");
    assert!(g.acks_sent >= s.heartbeats_acked, "{g:?}");
    assert_eq!(g.tokens_issued, 1, "{g:?}");
    assert_eq!(g.requests_with_expired_token, 0, "{g:?}");
    shutdown_and_check(d, c).await;
}

/// 11. TLS: an untrusted self-signed gateway is refused (the setup fails, then a clean stop after the
///     attempts); trusted through `extra_root_certs` it works; `ws://` without `allow_insecure` is refused
///     by configuration validation.
pub async fn tls<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|g| g.tls = true);
    assert!(gw.base_url().starts_with("https://"));

    // Not trusted.
    let config = config(&gw).max_reconnect_attempts(2).build_unchecked();
    let result = within(
        d,
        Duration::from_secs(15),
        connect(d, config, ClientOptions::default()),
    )
    .await
    .expect("connect resolves");
    match &result {
        Err(ConnectError::Stopped(StopReason::ReconnectAttemptsExhausted {
            last_error, ..
        })) => {
            let e = last_error.to_ascii_lowercase();
            assert!(
                e.contains("certificate") || e.contains("unknownissuer") || e.contains("tls"),
                "[{}] the last error does not say TLS: {last_error}",
                d.name()
            );
        }
        Err(e) => panic!("[{}] expected attempts exhausted, got {e:?}", d.name()),
        Ok(_) => panic!("[{}] connected to an untrusted gateway", d.name()),
    }
    let g = gw.stats();
    assert_eq!(g.token_requests, 0, "no request got through TLS: {g:?}");

    // Not trusted, straight to the socket (keepalive-frame, no credentials): the handshake fails.
    let config = Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url(gw.ws_url("/keepalive"))
        .heartbeat_interval(HEARTBEAT)
        .max_idle(IDLE)
        .ack_timeout(Duration::from_millis(1000))
        .backoff_base(Duration::from_millis(100))
        .max_reconnect_attempts(1)
        .build_unchecked();
    match within(
        d,
        Duration::from_secs(15),
        connect(d, config, ClientOptions::default()),
    )
    .await
    .expect("connect resolves")
    {
        Err(ConnectError::Stopped(StopReason::ReconnectAttemptsExhausted {
            last_error, ..
        })) => {
            let e = last_error.to_ascii_lowercase();
            assert!(
                e.contains("certificate") || e.contains("unknownissuer"),
                "[{}] the last error does not say TLS: {last_error}",
                d.name()
            );
        }
        Err(e) => panic!("[{}] expected attempts exhausted, got {e:?}", d.name()),
        Ok(_) => panic!("[{}] opened a socket to an untrusted gateway", d.name()),
    }
    assert_eq!(gw.stats().sockets_opened, 0);

    // Trusted through extra_root_certs.
    let ca = gw.ca_cert_der().expect("a TLS gateway has a CA").to_vec();
    let options = ClientOptions {
        extra_root_certs: vec![ca],
        ..Default::default()
    };
    let mut c = match within(
        d,
        Duration::from_secs(10),
        connect(d, config_tls(&gw), options),
    )
    .await
    {
        Some(Ok(c)) => c,
        Some(Err(e)) => panic!("[{}] trusted TLS connect failed: {e}", d.name()),
        None => panic!("[{}] trusted TLS connect timed out", d.name()),
    };
    wait_stable(d, &mut c, 1).await;
    let seqs = publish_n(&gw, TOPIC, 2);
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_secs(2), |s| s.len() >= 2, &mut seen)
        .await;
    assert_exactly_once(d.name(), &seqs, &seen, &c.trace());
    shutdown_and_check(d, c).await;
    let closed = within(
        d,
        Duration::from_secs(2),
        gw.wait_until(|g| !g.close_codes.is_empty()),
    )
    .await;
    assert!(closed.is_some());
    assert_eq!(
        gw.stats().close_codes,
        vec![(1000, "Graceful shutdown".to_string())]
    );

    // ws:// and http:// without allow_insecure: refused before anything is sent.
    let plain = Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url("ws://127.0.0.1:9/keepalive")
        .build_unchecked();
    match d.connect(plain, ClientOptions::default()).await {
        Err(ConnectError::Config(e)) => {
            assert!(e.to_string().contains("allow_insecure"), "{e}")
        }
        Err(e) => panic!("[{}] expected a config error, got {e:?}", d.name()),
        Ok(_) => panic!("[{}] ws:// accepted without allow_insecure", d.name()),
    }
    let plain = Config::builder()
        .credentials(CLIENT_ID, Secret::new(SECRET))
        .api_base("http://127.0.0.1:9")
        .login_base("http://127.0.0.1:9")
        .build_unchecked();
    match d.connect(plain, ClientOptions::default()).await {
        Err(ConnectError::Config(e)) => {
            let text = e.to_string();
            assert!(text.contains("allow_insecure"), "{text}");
            assert_no_credentials("the config error", &text);
        }
        Err(e) => panic!("[{}] expected a config error, got {e:?}", d.name()),
        Ok(_) => panic!("[{}] http:// accepted without allow_insecure", d.name()),
    }
    assert_no_credentials("the captured logs", &d.captured_logs());
}

/// 12. The WebSocket handshake is refused with 503 and `Retry-After: 1`: the driver reports the status and
///     the delay, the machine waits at least that long, then connects; the abandoned attempt's close is
///     answered without an unexpected event.
pub async fn handshake_refused<D: DriverUnderTest + ?Sized>(d: &D) {
    let gw = gateway(|_| {});
    gw.script_http(
        Endpoint::WebSocket,
        vec![Scripted::new(503, r#"{"message":"maintenance"}"#).with_retry_after(1)],
    );
    let mut c = connect_ok(d, config(&gw).build_unchecked()).await;
    let g = gw.stats();
    let handshakes: Vec<_> = g
        .requests
        .iter()
        .filter(|r| r.method == "GET" && r.path.starts_with("/channels/"))
        .collect();
    assert_eq!(handshakes.len(), 2, "[{}] {handshakes:?}", d.name());
    assert_eq!(handshakes[0].status, 503);
    assert_eq!(handshakes[1].status, 101);
    let gap = handshakes[1].at.saturating_sub(handshakes[0].at);
    let trace = c.trace();
    assert!(
        gap >= Duration::from_secs(1),
        "[{}] reconnected after {gap:?}, before Retry-After (1 s)\ntrace:\n{trace}",
        d.name()
    );
    assert!(
        trace.contains("503"),
        "[{}] the refusal's status is not in the audit trail\ntrace:\n{trace}",
        d.name()
    );
    let s = c.handle.stats();
    assert_eq!(s.reconnects, 1, "[{}] {s:?}\ntrace:\n{trace}", d.name());
    assert_eq!(s.connections_opened, 1, "{s:?}");
    assert_eq!(
        s.unexpected_events,
        0,
        "[{}] {s:?}\ntrace:\n{trace}",
        d.name()
    );
    let seqs = publish_n(&gw, TOPIC, 2);
    let mut seen = BTreeMap::new();
    c.collect_seqs(d, Duration::from_secs(2), |s| s.len() >= 2, &mut seen)
        .await;
    assert_exactly_once(d.name(), &seqs, &seen, &c.trace());
    shutdown_and_check(d, c).await;
}

fn config_tls(gw: &Gateway) -> Config {
    config(gw).build_unchecked()
}
