//! Configuration: every constant the seed hard-codes, with the seed's value as its default, validated once
//! as a whole by the relations that must hold between the fields.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::region::{Region, UnknownRegion};
use crate::secret::Secret;

mod builder;
pub use builder::ConfigBuilder;

/// The smallest `max_payload_bytes` that fits a heartbeat frame.
pub const MIN_PAYLOAD_BYTES: usize = 384;

/// Which wire protocol the machine speaks on the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProfileKind {
    /// The real Genesys Notifications API: token → channel → subscriptions → `connectUri`,
    /// `{"message":"ping"}` health checks, server heartbeats, `v2.system.socket_closing` rollover.
    #[default]
    Notifications,
    /// The seed's `KEEP_ALIVE` / `KEEP_ALIVE_ACK` frames, for any WebSocket URL.
    KeepaliveFrame,
}

impl std::str::FromStr for ProfileKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "notifications" => Ok(ProfileKind::Notifications),
            "keepalive-frame" => Ok(ProfileKind::KeepaliveFrame),
            other => Err(format!(
                "unknown profile `{other}`; expected `notifications` or `keepalive-frame`"
            )),
        }
    }
}

/// The heartbeat interval for each connection state (the seed's `INTERVAL_MATRIX`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntervalMatrix {
    /// Interval while STABLE (seed: 20,000 ms).
    #[serde(rename = "stable_ms", with = "ms")]
    pub stable: Duration,
    /// Interval while DEGRADED (seed: 10,000 ms): probe a slow link more often.
    #[serde(rename = "degraded_ms", with = "ms")]
    pub degraded: Duration,
    /// Interval on a freshly (re)opened socket until its first ack (seed: 5,000 ms).
    #[serde(rename = "reconnecting_ms", with = "ms")]
    pub reconnecting: Duration,
}

impl Default for IntervalMatrix {
    fn default() -> Self {
        IntervalMatrix {
            stable: Duration::from_millis(20_000),
            degraded: Duration::from_millis(10_000),
            reconnecting: Duration::from_millis(5_000),
        }
    }
}

impl IntervalMatrix {
    /// A matrix in the seed's proportions: `stable`, `stable / 2`, `stable / 4`.
    pub fn scaled(stable: Duration) -> Self {
        IntervalMatrix {
            stable,
            degraded: stable / 2,
            reconnecting: stable / 4,
        }
    }

    /// The smallest of the three intervals.
    pub fn shortest(&self) -> Duration {
        self.stable.min(self.degraded).min(self.reconnecting)
    }

    /// The largest of the three intervals.
    pub fn longest(&self) -> Duration {
        self.stable.max(self.degraded).max(self.reconnecting)
    }
}

/// Everything the machine needs to know. Build it with [`Config::builder`], [`Config::default`] plus field
/// assignment, or serde (TOML/JSON, durations in milliseconds as `*_ms`), then hand it to
/// [`KeepAliveMachine::new`](crate::KeepAliveMachine::new), which validates it.
///
/// ```
/// use std::time::Duration;
/// use genesys_keepalive::{Config, Secret};
/// let config = Config::builder()
///     .credentials("my-client-id", Secret::new("my-secret"))
///     .region("eu-west-1").unwrap()
///     .topic("v2.users.abc.presence")
///     .build()
///     .unwrap();
/// assert_eq!(config.interval_matrix.stable, Duration::from_secs(20));
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Wire protocol on the socket (default `notifications`).
    pub profile: ProfileKind,
    /// Genesys Cloud region (default `us-east-1`); gives the API and login hosts.
    pub region: Region,
    /// Overrides the API base (`https://api.<domain>`), e.g. a local gateway.
    pub api_base: Option<String>,
    /// Overrides the login base (`https://login.<domain>`); the token is at `{login_base}/oauth/token`.
    pub login_base: Option<String>,
    /// The socket URL for the `keepalive-frame` profile.
    pub url: Option<String>,
    /// OAuth client id (client-credentials grant).
    pub client_id: Option<String>,
    /// OAuth client secret. Never printed.
    pub client_secret: Option<Secret>,
    /// Notification topics to subscribe (at most 1,000 per channel).
    pub topics: Vec<String>,
    /// Allow `ws://` and `http://` (tests, local gateways). Off by default.
    pub allow_insecure: bool,

    /// Heartbeat interval per state (seed: 20 s / 10 s / 5 s).
    pub interval_matrix: IntervalMatrix,
    /// No two heartbeats closer than this (seed's `MIN_INTERVAL_MS` was 15 s, which rejects its own 10 s and
    /// 5 s intervals; the default here is 5 s so that every state's interval is legal).
    #[serde(rename = "min_interval_ms", with = "ms")]
    pub min_interval: Duration,
    /// The peer is dead after this long with no inbound frame (seed's `MAX_IDLE_TIMEOUT_MS`, 45 s).
    #[serde(rename = "idle_timeout_ms", with = "ms")]
    pub max_idle: Duration,
    /// A heartbeat with no ack/pong after this long counts as lost (default 10 s).
    #[serde(rename = "ack_timeout_ms", with = "ms")]
    pub ack_timeout: Duration,
    /// Consecutive lost heartbeats that declare the peer dead (default 2).
    pub max_missed_acks: u32,
    /// Largest outbound frame (seed's `MAX_PAYLOAD_BYTES`, 1,024).
    pub max_payload_bytes: usize,
    /// Largest inbound frame accepted; bigger ones are counted and dropped (default 1 MiB). Drivers set their
    /// WebSocket message and frame size limits from it.
    pub max_inbound_bytes: usize,
    /// RTT and loss window, in heartbeats (seed: 100).
    pub rtt_window: usize,
    /// Average RTT above this makes the connection DEGRADED (seed: 800 ms).
    #[serde(rename = "latency_threshold_ms", with = "ms")]
    pub latency_threshold: Duration,
    /// Consecutive healthy RTT samples before DEGRADED returns to STABLE (default 5).
    pub recovery_samples: u32,
    /// Loss above this raises `PACKET_LOSS_CRITICAL` (seed: 0.15).
    pub max_packet_loss: f64,

    /// First reconnect delay cap (seed: 2,000 ms).
    #[serde(rename = "backoff_base_ms", with = "ms")]
    pub backoff_base: Duration,
    /// Growth factor per attempt (seed: 2).
    pub backoff_factor: u32,
    /// Largest reconnect delay (default 60 s).
    #[serde(rename = "backoff_max_ms", with = "ms")]
    pub backoff_max: Duration,
    /// Reconnect attempts before the machine stops (seed: 5).
    pub max_reconnect_attempts: u32,
    /// The attempt counter resets only after a connection stays healthy this long (default 30 s).
    #[serde(rename = "min_uptime_ms", with = "ms")]
    pub min_uptime: Duration,
    /// A socket that has not opened after this long counts as a failed attempt (default 10 s).
    #[serde(rename = "connect_timeout_ms", with = "ms")]
    pub connect_timeout: Duration,

    /// Refresh the token this long before it expires (seed: 30 s); never more than half the token's lifetime.
    #[serde(rename = "token_refresh_margin_ms", with = "ms")]
    pub token_refresh_margin: Duration,
    /// An HTTP request with no answer after this long has failed (default 30 s).
    #[serde(rename = "request_timeout_ms", with = "ms")]
    pub request_timeout: Duration,
    /// Wait for 429/502/503/504 without `Retry-After` (Genesys SDKs: 3 s).
    #[serde(rename = "retry_after_default_ms", with = "ms")]
    pub retry_after_default: Duration,
    /// Give up retrying one REST call after this much waiting (Genesys SDKs: 180 s).
    #[serde(rename = "retry_budget_ms", with = "ms")]
    pub retry_budget: Duration,

    /// Resubscribe this long before a channel's expiry to extend it (default 1 h; channels live 24 h).
    #[serde(rename = "resubscribe_margin_ms", with = "ms")]
    pub resubscribe_margin: Duration,
    /// After `socket_closing`, close the old socket at the latest this long after the notice, even if the new
    /// one is not up yet (default 55 s; the server closes after about 60 s).
    #[serde(rename = "rollover_deadline_ms", with = "ms")]
    pub rollover_deadline: Duration,
    /// How many recent notification ids are remembered to drop duplicates (default 1,024; duplicates only
    /// arise in the seconds a rollover overlaps two sockets).
    pub dedup_window: usize,
    /// Audit every heartbeat written (`SEND_SUCCESS`), as the seed does (default true). Off, failures, dead
    /// peers and every other audit event still come; a fleet of many connections is spared an entry per
    /// heartbeat per connection that nobody reads.
    pub audit_send_success: bool,
    /// How late a timer may run so that many connections in one process wake together (default 10 ms; at
    /// most 1,000 ms; 0 wakes at every deadline exactly). [`crate::KeepAliveMachine::poll_timeout`] rounds
    /// the earliest deadline up to the next whole multiple of this on the wall clock, the same grid for every
    /// machine, so a runtime serving thousands of sockets is woken once for the ones falling due in the same
    /// slot instead of once each. Timers still fire by their own deadlines, and the heartbeat schedule keeps
    /// its rate (it advances from the deadline, not from the late wake). The slack used is at most a tenth of
    /// `min_interval_ms`.
    #[serde(rename = "timer_slack_ms", with = "ms")]
    pub timer_slack: Duration,
    /// How many shared phases per interval the heartbeats keep to (default 10; at most 1,000; 0 keeps each
    /// connection's own phase). A heartbeat is scheduled an interval after the last one and then, when
    /// that is not on the grid already, moved later to the next whole multiple of `interval / phases` on
    /// the wall clock: at most a tenth of an interval by default, and once (the schedule then stays on the
    /// grid; a heartbeat that went out late by less than a step keeps it). Connections of one process that
    /// opened at different moments thus send theirs in at most this many bursts per interval, and a runtime
    /// serving thousands of them wakes that many times, not once per connection: what a wake costs (an
    /// executor thread unparked, a reactor turn) is shared by all the connections of a burst. The price is
    /// lateness within a burst (BENCHMARKS.md, "Fleet": p99 23–33 ms against 12 ms at 5,000 connections on
    /// one thread).
    pub heartbeat_phases: u32,
}

/// The largest [`Config::timer_slack`] accepted.
pub const MAX_TIMER_SLACK: Duration = Duration::from_millis(1_000);

/// The largest [`Config::heartbeat_phases`] accepted.
pub const MAX_HEARTBEAT_PHASES: u32 = 1_000;

impl Default for Config {
    fn default() -> Self {
        Config {
            profile: ProfileKind::Notifications,
            region: Region::US_EAST_1,
            api_base: None,
            login_base: None,
            url: None,
            client_id: None,
            client_secret: None,
            topics: Vec::new(),
            allow_insecure: false,
            interval_matrix: IntervalMatrix::default(),
            min_interval: Duration::from_millis(5_000),
            max_idle: Duration::from_millis(45_000),
            ack_timeout: Duration::from_millis(10_000),
            max_missed_acks: 2,
            max_payload_bytes: 1024,
            max_inbound_bytes: 1 << 20,
            rtt_window: 100,
            latency_threshold: Duration::from_millis(800),
            recovery_samples: 5,
            max_packet_loss: 0.15,
            backoff_base: Duration::from_millis(2_000),
            backoff_factor: 2,
            backoff_max: Duration::from_millis(60_000),
            max_reconnect_attempts: 5,
            min_uptime: Duration::from_millis(30_000),
            connect_timeout: Duration::from_millis(10_000),
            token_refresh_margin: Duration::from_millis(30_000),
            request_timeout: Duration::from_millis(30_000),
            retry_after_default: Duration::from_millis(3_000),
            retry_budget: Duration::from_millis(180_000),
            resubscribe_margin: Duration::from_secs(3_600),
            rollover_deadline: Duration::from_millis(55_000),
            dedup_window: 1024,
            audit_send_success: true,
            timer_slack: Duration::from_millis(10),
            heartbeat_phases: 10,
        }
    }
}

/// One relation the configuration breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The field (or fields) at fault, as named in TOML.
    pub field: &'static str,
    /// What is wrong and what would be right.
    pub problem: String,
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// One or more relations do not hold; every one is listed.
    #[error("invalid configuration: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.problem)).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<Violation>),
    /// The region is not in the table.
    #[error(transparent)]
    Region(#[from] UnknownRegion),
}

impl Config {
    /// A builder starting from the defaults.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder {
            config: Config::default(),
        }
    }

    /// Reads `GENESYS_CLIENT_ID`, `GENESYS_CLIENT_SECRET`, `GENESYS_REGION`, `GENESYS_API_BASE` and
    /// `GENESYS_LOGIN_BASE` through `get` (pass `|k| std::env::var(k).ok()`); the core itself reads no
    /// environment.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = get("GENESYS_CLIENT_ID") {
            self.client_id = Some(v);
        }
        if let Some(v) = get("GENESYS_CLIENT_SECRET") {
            self.client_secret = Some(Secret::new(v));
        }
        if let Some(v) = get("GENESYS_REGION") {
            self.region = v.parse()?;
        }
        if let Some(v) = get("GENESYS_API_BASE") {
            self.api_base = Some(v);
        }
        if let Some(v) = get("GENESYS_LOGIN_BASE") {
            self.login_base = Some(v);
        }
        Ok(())
    }

    /// The API base: the override, or `https://api.<domain>`. No trailing slash.
    pub fn api_base(&self) -> String {
        trim_base(
            self.api_base
                .clone()
                .unwrap_or_else(|| self.region.api_base()),
        )
    }

    /// The login base: the override, or `https://login.<domain>`. No trailing slash.
    pub fn login_base(&self) -> String {
        trim_base(
            self.login_base
                .clone()
                .unwrap_or_else(|| self.region.login_base()),
        )
    }

    /// The OAuth token endpoint: `{login_base}/oauth/token`.
    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.login_base())
    }

    /// True when both a client id and a secret are set.
    pub fn has_credentials(&self) -> bool {
        self.client_id.is_some() && self.client_secret.is_some()
    }

    /// Checks every relation at once and lists every one that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut v = Vec::new();
        self.check_heartbeat(&mut v);
        self.check_limits(&mut v);
        self.check_reconnect(&mut v);
        self.check_endpoints(&mut v);
        if v.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(v))
        }
    }

    /// Heartbeats: every state's interval legal, and within the idle and ack deadlines.
    fn check_heartbeat(&self, v: &mut Vec<Violation>) {
        let mut bad = |field: &'static str, problem: String| v.push(Violation { field, problem });
        let m = &self.interval_matrix;
        let ms = |d: Duration| d.as_millis();
        if self.min_interval.is_zero() {
            bad("min_interval_ms", "must be above 0".into());
        }
        if self.timer_slack > MAX_TIMER_SLACK {
            bad(
                "timer_slack_ms",
                format!(
                    "{} ms is above {} ms: a timer may run late by at most a second",
                    ms(self.timer_slack),
                    ms(MAX_TIMER_SLACK)
                ),
            );
        }
        if self.heartbeat_phases > MAX_HEARTBEAT_PHASES {
            bad(
                "heartbeat_phases",
                format!(
                    "{} is above {MAX_HEARTBEAT_PHASES}: use 0 to keep each connection's own phase",
                    self.heartbeat_phases
                ),
            );
        }
        for (name, d) in [
            ("interval_matrix.stable_ms", m.stable),
            ("interval_matrix.degraded_ms", m.degraded),
            ("interval_matrix.reconnecting_ms", m.reconnecting),
        ] {
            if d < self.min_interval {
                bad(
                    name,
                    format!(
                        "{} ms is below min_interval_ms ({} ms): every state's heartbeat must be legal",
                        ms(d),
                        ms(self.min_interval)
                    ),
                );
            }
            if d >= self.max_idle {
                bad(
                    name,
                    format!(
                        "{} ms must be below idle_timeout_ms ({} ms), or the peer looks dead between heartbeats",
                        ms(d),
                        ms(self.max_idle)
                    ),
                );
            }
        }
        if self.ack_timeout.is_zero() || self.ack_timeout > self.max_idle {
            bad(
                "ack_timeout_ms",
                format!(
                    "{} ms must be above 0 and at most idle_timeout_ms ({} ms)",
                    ms(self.ack_timeout),
                    ms(self.max_idle)
                ),
            );
        }
        if self.max_missed_acks == 0 {
            bad("max_missed_acks", "must be at least 1".into());
        }
    }

    /// Frame sizes and the latency and loss thresholds.
    fn check_limits(&self, v: &mut Vec<Violation>) {
        let mut bad = |field: &'static str, problem: String| v.push(Violation { field, problem });
        if self.max_payload_bytes < MIN_PAYLOAD_BYTES {
            bad(
                "max_payload_bytes",
                format!(
                    "{} is too small for a heartbeat frame; at least {}",
                    self.max_payload_bytes, MIN_PAYLOAD_BYTES
                ),
            );
        }
        if self.max_inbound_bytes < 1024 {
            bad("max_inbound_bytes", "must be at least 1024".into());
        }
        if self.rtt_window == 0 || self.rtt_window > 100_000 {
            bad("rtt_window", "must be between 1 and 100000".into());
        }
        if self.latency_threshold.is_zero() {
            bad("latency_threshold_ms", "must be above 0".into());
        }
        if self.recovery_samples == 0 {
            bad("recovery_samples", "must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.max_packet_loss) {
            bad(
                "max_packet_loss",
                format!("{} must be between 0 and 1", self.max_packet_loss),
            );
        }
    }

    /// Backoff, timeouts and windows.
    fn check_reconnect(&self, v: &mut Vec<Violation>) {
        let mut bad = |field: &'static str, problem: String| v.push(Violation { field, problem });
        let ms = |d: Duration| d.as_millis();
        if self.backoff_base.is_zero() {
            bad("backoff_base_ms", "must be above 0".into());
        }
        if self.backoff_max < self.backoff_base {
            bad(
                "backoff_max_ms",
                format!(
                    "{} ms is below backoff_base_ms ({} ms)",
                    ms(self.backoff_max),
                    ms(self.backoff_base)
                ),
            );
        }
        if self.backoff_factor == 0 {
            bad("backoff_factor", "must be at least 1".into());
        }
        if self.connect_timeout.is_zero() {
            bad("connect_timeout_ms", "must be above 0".into());
        }
        if self.request_timeout.is_zero() {
            bad("request_timeout_ms", "must be above 0".into());
        }
        if self.retry_after_default.is_zero() {
            bad("retry_after_default_ms", "must be above 0".into());
        }
        if self.rollover_deadline.is_zero() {
            bad("rollover_deadline_ms", "must be above 0".into());
        }
        if self.dedup_window == 0 {
            bad("dedup_window", "must be at least 1".into());
        }
    }

    /// Topics, credentials and the endpoints' schemes.
    fn check_endpoints(&self, v: &mut Vec<Violation>) {
        let bad = |v: &mut Vec<Violation>, field: &'static str, problem: String| {
            v.push(Violation { field, problem })
        };
        if self.topics.len() > 1000 {
            bad(
                v,
                "topics",
                format!("{} topics; a channel takes at most 1000", self.topics.len()),
            );
        }
        for t in &self.topics {
            if t.is_empty() || t.chars().any(|c| c.is_whitespace() || c.is_control()) {
                bad(v, "topics", format!("`{t}` is not a topic name"));
            }
        }
        match (&self.client_id, &self.client_secret) {
            (Some(id), Some(s)) => {
                if id.is_empty() || s.is_empty() {
                    bad(
                        v,
                        "client_id/client_secret",
                        "must not be empty (set GENESYS_CLIENT_ID and GENESYS_CLIENT_SECRET)"
                            .into(),
                    );
                }
            }
            (None, None) => {}
            _ => bad(
                v,
                "client_id/client_secret",
                "give both or neither (GENESYS_CLIENT_ID and GENESYS_CLIENT_SECRET)".into(),
            ),
        }
        let secure = |field: &'static str, url: &str, v: &mut Vec<Violation>| {
            if let Err(problem) = check_scheme(url, self.allow_insecure) {
                v.push(Violation { field, problem });
            }
        };
        match self.profile {
            ProfileKind::Notifications => {
                if !self.has_credentials() {
                    v.push(Violation {
                        field: "client_id/client_secret",
                        problem: "the notifications profile needs OAuth client credentials \
                                  (GENESYS_CLIENT_ID and GENESYS_CLIENT_SECRET)"
                            .into(),
                    });
                }
            }
            ProfileKind::KeepaliveFrame => match &self.url {
                None => v.push(Violation {
                    field: "url",
                    problem: "the keepalive-frame profile needs the socket URL".into(),
                }),
                Some(u) => secure("url", u, v),
            },
        }
        if self.profile == ProfileKind::Notifications || self.has_credentials() {
            secure("login_base", &self.login_base(), v);
        }
        if self.profile == ProfileKind::Notifications {
            secure("api_base", &self.api_base(), v);
        }
    }
}

fn trim_base(mut s: String) -> String {
    while s.ends_with('/') {
        s.pop();
    }
    s
}

/// Serde helper: a `Duration` as whole milliseconds.
pub mod ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes whole milliseconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis().min(u64::MAX as u128) as u64)
    }

    /// Reads whole milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// The project's one URL-scheme policy: `https://` and `wss://` always; `http://` and `ws://` only with
/// `allow_insecure` (a local gateway); nothing else. The configuration's URLs are checked with it at
/// construction, and the machine checks every URL the server hands it (a channel's `connectUri`) before
/// asking a driver to connect, so drivers never need to.
pub fn check_scheme(url: &str, allow_insecure: bool) -> Result<(), String> {
    let scheme = url.split_once("://").map(|(s, _)| s);
    match scheme {
        Some("https" | "wss") => Ok(()),
        Some("http" | "ws") if allow_insecure => Ok(()),
        Some("http" | "ws") => Err(format!(
            "`{url}` is not encrypted; use https/wss, or set allow_insecure for a local gateway"
        )),
        _ => Err(format!("`{url}` is not an http(s):// or ws(s):// URL")),
    }
}
