//! `run`'s flags and how they make a [`Config`]: defaults, then the `--config` file, then the environment,
//! then the flags. Credentials come from the environment only.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, ValueEnum};
use genesys_keepalive::{Config, IntervalMatrix, ProfileKind, Region, Secret};

use crate::failure::Failure;

/// Where `run` gets a variable from; the process environment in production, a map in tests.
pub trait Env {
    fn get(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn get(&self, key: &str) -> Option<String> {
        std::env::var(key).ok()
    }
}

/// The process environment read once, for a fleet file's two lookups per organisation: each `getenv`
/// scans the whole environment, which holds those two variables per organisation, so reading them one by
/// one costs N² (13 ms of a 1,000-organisation fleet's start, measured with `perf record`). A variable
/// whose name or value is not UTF-8 is absent, as with [`ProcessEnv`].
pub struct EnvSnapshot(HashMap<String, String>);

impl EnvSnapshot {
    /// The process environment now.
    pub fn of_process() -> Self {
        EnvSnapshot(
            std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .collect(),
        )
    }
}

impl Env for EnvSnapshot {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Profile {
    /// Genesys Notifications API: token, channel, subscriptions, `{"message":"ping"}` health checks
    Notifications,
    /// The seed's KEEP_ALIVE / KEEP_ALIVE_ACK frames on any WebSocket URL (--url)
    KeepaliveFrame,
}

impl From<Profile> for ProfileKind {
    fn from(p: Profile) -> Self {
        match p {
            Profile::Notifications => ProfileKind::Notifications,
            Profile::KeepaliveFrame => ProfileKind::KeepaliveFrame,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// tokio + tokio-tungstenite + reqwest
    Tokio,
    /// async-std + async-tungstenite + reqwest (also runs under smol)
    AsyncStd,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Genesys Cloud region name (e.g. eu-west-1) or domain (e.g. mypurecloud.ie) [default: us-east-1]
    #[arg(long, env = "GENESYS_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// API base URL (default https://api.<domain>); channels at {api-base}/api/v2/notifications/channels
    #[arg(long, env = "GENESYS_API_BASE", value_name = "URL")]
    pub api_base: Option<String>,
    /// Login base URL (default https://login.<domain>); the token at {login-base}/oauth/token
    #[arg(long, env = "GENESYS_LOGIN_BASE", value_name = "URL")]
    pub login_base: Option<String>,
    /// Notification topic to subscribe; repeat for more (replaces the file's `topics`)
    #[arg(long = "topic", value_name = "TOPIC")]
    pub topics: Vec<String>,
    /// Wire protocol on the socket [default: notifications]
    #[arg(long, value_enum)]
    pub profile: Option<Profile>,
    /// Socket URL for the keepalive-frame profile (ws:// needs --allow-insecure); with credentials in the
    /// environment the bearer token goes in the handshake
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Which async driver runs the core
    #[arg(long, value_enum, default_value_t = DriverKind::Tokio)]
    pub driver: DriverKind,
    /// Allow unencrypted http:// and ws:// (local gateways, tests)
    #[arg(long)]
    pub allow_insecure: bool,
    /// TOML file with any Config field (durations as `*_ms`); the flags override it; unknown fields are an error
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Seed for the core's PRNG (jitter, connection ids): the same seed replays the same decisions
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Extra trusted root certificate(s), PEM (e.g. the CA that `gateway --tls --ca-out FILE` wrote)
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Print a `stats` line this often (0: only the final one)
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub stats_interval_ms: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464); README lists them
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Write an SVG picture of the connection's story to FILE at exit (RTT, state bands, events)
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Keep a checkpoint in DIR/default.json (created if needed) so that after a restart (a crash, a
    /// kill, a redeploy) the time the connection was down is printed as a `restart` gap
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Heartbeat interval while STABLE; DEGRADED and RECONNECTING get 1/2 and 1/4 of it, and min-interval is
    /// lowered to 1/4 of it if it was higher
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub heartbeat_interval_ms: Option<u64>,
    /// No two heartbeats closer than this
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub min_interval_ms: Option<u64>,
    /// The peer is dead after this long with no inbound frame
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub idle_timeout_ms: Option<u64>,
    /// A heartbeat unanswered this long counts as lost
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub ack_timeout_ms: Option<u64>,
    /// First reconnect delay cap (full jitter)
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub backoff_base_ms: Option<u64>,
    /// Largest reconnect delay
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub backoff_max_ms: Option<u64>,
    /// Reconnect attempts before giving up (exit 4)
    #[arg(long, value_name = "N", help_heading = "Timing")]
    pub max_reconnect_attempts: Option<u32>,
    /// The attempt counter resets only after a connection stays healthy this long
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub min_uptime_ms: Option<u64>,
    /// Average RTT above this makes the connection DEGRADED
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub latency_threshold_ms: Option<u64>,
    /// Heartbeat loss (0 to 1) above which PACKET_LOSS_CRITICAL is raised
    #[arg(long, value_name = "RATIO", help_heading = "Timing")]
    pub max_packet_loss: Option<f64>,
    /// Refresh the OAuth token this long before it expires
    #[arg(long, value_name = "MS", help_heading = "Timing")]
    pub token_refresh_margin_ms: Option<u64>,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// Reads and parses the `--config` file. Credentials are refused there: they come from the environment.
pub fn load_file(path: &Path) -> Result<Config, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::config(format!(
            "cannot read the configuration file {}: {e}; check the --config path",
            path.display()
        ))
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| toml_failure(path, &text, &e))?;
    for field in ["client_id", "client_secret"] {
        if table.contains_key(field) {
            return Err(Failure::config(format!(
                "{}: `{field}` is not read from files; remove it and set GENESYS_CLIENT_ID and \
                 GENESYS_CLIENT_SECRET in the environment",
                path.display()
            )));
        }
    }
    toml::from_str::<Config>(&text).map_err(|e| toml_failure(path, &text, &e))
}

pub(crate) fn toml_failure(path: &Path, text: &str, e: &toml::de::Error) -> Failure {
    let at = e
        .span()
        .map(|s| {
            let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
            format!(" (line {line})")
        })
        .unwrap_or_default();
    Failure::config(format!(
        "{} is not a valid configuration{at}: {}; see `genesys-keepalive run --help` and the Config fields \
         (durations as `*_ms`)",
        path.display(),
        e.message().trim()
    ))
}

pub(crate) fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.trim().is_empty())
}

/// Builds and validates the configuration for `run`.
pub fn build_config(args: &RunArgs, env: &dyn Env) -> Result<Config, Failure> {
    let mut c = match &args.config {
        Some(path) => load_file(path)?,
        None => Config::default(),
    };
    // Environment and flags (clap already merged GENESYS_REGION / _API_BASE / _LOGIN_BASE into the flags).
    if let Some(r) = &args.region {
        c.region = r.parse::<Region>().map_err(|e| {
            Failure::config(format!(
                "{e}. Pass one of them (or its domain) with --region or GENESYS_REGION"
            ))
        })?;
    }
    if let Some(v) = non_empty(args.api_base.clone()) {
        c.api_base = Some(v);
    }
    if let Some(v) = non_empty(args.login_base.clone()) {
        c.login_base = Some(v);
    }
    if !args.topics.is_empty() {
        c.topics = args.topics.clone();
    }
    if let Some(p) = args.profile {
        c.profile = p.into();
    }
    if let Some(u) = &args.url {
        c.url = Some(u.clone());
    }
    if args.allow_insecure {
        c.allow_insecure = true;
    }

    // Credentials: the environment only.
    let id = non_empty(env.get("GENESYS_CLIENT_ID"));
    let secret = non_empty(env.get("GENESYS_CLIENT_SECRET"));
    match (id, secret) {
        (Some(id), Some(secret)) => {
            c.client_id = Some(id);
            c.client_secret = Some(Secret::new(secret));
        }
        (None, None) if c.profile == ProfileKind::KeepaliveFrame => {}
        (None, None) => {
            return Err(Failure::config(
                "missing credentials: the notifications profile needs an OAuth client; set \
                 GENESYS_CLIENT_ID and GENESYS_CLIENT_SECRET in the environment (they are never read from \
                 flags or files)",
            ))
        }
        (Some(_), None) => {
            return Err(Failure::config(
                "missing credentials: GENESYS_CLIENT_ID is set but GENESYS_CLIENT_SECRET is not; set both",
            ))
        }
        (None, Some(_)) => {
            return Err(Failure::config(
                "missing credentials: GENESYS_CLIENT_SECRET is set but GENESYS_CLIENT_ID is not; set both",
            ))
        }
    }

    // Timing.
    if let Some(v) = args.heartbeat_interval_ms {
        let d = ms(v);
        c.interval_matrix = IntervalMatrix::scaled(d);
        c.min_interval = c.min_interval.min(d / 4);
    }
    if let Some(v) = args.min_interval_ms {
        c.min_interval = ms(v);
    }
    if let Some(v) = args.idle_timeout_ms {
        c.max_idle = ms(v);
    }
    if let Some(v) = args.ack_timeout_ms {
        c.ack_timeout = ms(v);
    }
    if let Some(v) = args.backoff_base_ms {
        c.backoff_base = ms(v);
    }
    if let Some(v) = args.backoff_max_ms {
        c.backoff_max = ms(v);
    }
    if let Some(v) = args.max_reconnect_attempts {
        c.max_reconnect_attempts = v;
    }
    if let Some(v) = args.min_uptime_ms {
        c.min_uptime = ms(v);
    }
    if let Some(v) = args.latency_threshold_ms {
        c.latency_threshold = ms(v);
    }
    if let Some(v) = args.max_packet_loss {
        c.max_packet_loss = v;
    }
    if let Some(v) = args.token_refresh_margin_ms {
        c.token_refresh_margin = ms(v);
    }

    c.validate().map_err(|e| {
        Failure::config(format!(
            "{e}. Fix the flags, the --config file or the environment and start again"
        ))
    })?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    #[test]
    fn the_environment_snapshot_reads_what_the_process_environment_holds() {
        let key = "GENESYS_KEEPALIVE_SNAPSHOT_TEST";
        // Tests run on threads of one process; this variable is this test's alone.
        std::env::set_var(key, "value-1");
        let snapshot = EnvSnapshot::of_process();
        std::env::remove_var(key);
        assert_eq!(snapshot.get(key).as_deref(), Some("value-1"));
        assert_eq!(ProcessEnv.get(key), None, "removed after the snapshot");
        assert_eq!(snapshot.get("PATH"), ProcessEnv.get("PATH"));
        assert_eq!(snapshot.get("GENESYS_KEEPALIVE_NEVER_SET"), None);
    }

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunArgs,
    }

    struct MapEnv(HashMap<&'static str, &'static str>);

    impl Env for MapEnv {
        fn get(&self, key: &str) -> Option<String> {
            self.0.get(key).map(|s| s.to_string())
        }
    }

    fn creds() -> MapEnv {
        MapEnv(HashMap::from([
            ("GENESYS_CLIENT_ID", "id"),
            ("GENESYS_CLIENT_SECRET", "s3cret"),
        ]))
    }

    fn args(a: &[&str]) -> RunArgs {
        let mut v = vec!["t"];
        v.extend_from_slice(a);
        T::try_parse_from(v).unwrap().run
    }

    #[test]
    fn heartbeat_flag_scales_the_matrix_and_lowers_min_interval() {
        let c = build_config(
            &args(&[
                "--region",
                "eu-west-1",
                "--heartbeat-interval-ms",
                "400",
                "--idle-timeout-ms",
                "2000",
                "--ack-timeout-ms",
                "1000",
            ]),
            &creds(),
        )
        .unwrap();
        assert_eq!(c.interval_matrix, IntervalMatrix::scaled(ms(400)));
        assert_eq!(c.min_interval, ms(100));
        assert_eq!(c.region.name(), "eu-west-1");
        assert_eq!(c.client_secret.unwrap().expose(), "s3cret");
    }

    #[test]
    fn missing_credentials_is_a_config_error() {
        let e =
            build_config(&args(&["--region", "us-east-1"]), &MapEnv(HashMap::new())).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("GENESYS_CLIENT_SECRET"));
    }

    #[test]
    fn keepalive_frame_needs_no_credentials() {
        let c = build_config(
            &args(&[
                "--region",
                "us-east-1",
                "--profile",
                "keepalive-frame",
                "--url",
                "ws://127.0.0.1:1/keepalive",
                "--allow-insecure",
            ]),
            &MapEnv(HashMap::new()),
        )
        .unwrap();
        assert_eq!(c.profile, ProfileKind::KeepaliveFrame);
        assert!(c.client_id.is_none());
    }

    #[test]
    fn unknown_region_lists_known_ones() {
        let e = build_config(&args(&["--region", "mars-1"]), &creds()).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("eu-west-1"), "{}", e.message);
    }

    #[test]
    fn file_then_flags() {
        let dir = std::env::temp_dir().join(format!("gk-cli-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("c.toml");
        std::fs::write(
            &path,
            "region = \"eu-west-1\"\nidle_timeout_ms = 9000\nack_timeout_ms = 3000\nmin_interval_ms = 1000\n\
             topics = [\"v2.a\"]\n\
             [interval_matrix]\nstable_ms = 8000\ndegraded_ms = 4000\nreconnecting_ms = 2000\n",
        )
        .unwrap();
        let p = path.to_str().unwrap();
        let c = build_config(
            &args(&["--config", p, "--ack-timeout-ms", "1500"]),
            &creds(),
        )
        .unwrap();
        assert_eq!(c.region.name(), "eu-west-1");
        assert_eq!(c.max_idle, ms(9000));
        assert_eq!(c.ack_timeout, ms(1500));
        assert_eq!(c.interval_matrix.stable, ms(8000));
        assert_eq!(c.topics, vec!["v2.a".to_string()]);

        std::fs::write(&path, "idle_timeout_ms = 9000\nbogus = 1\n").unwrap();
        let e = build_config(&args(&["--config", p]), &creds()).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("bogus"), "{}", e.message);

        std::fs::write(&path, "client_secret = \"x\"\n").unwrap();
        let e = build_config(&args(&["--config", p]), &creds()).unwrap_err();
        assert!(e.message.contains("GENESYS_CLIENT_SECRET"), "{}", e.message);
        assert!(!e.message.contains("\"x\""));

        std::fs::write(&path, "idle_timeout_ms = \n").unwrap();
        let e = build_config(&args(&["--config", p]), &creds()).unwrap_err();
        assert_eq!(e.code, 2);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn incoherent_timing_is_refused() {
        let e = build_config(
            &args(&[
                "--region",
                "us-east-1",
                "--heartbeat-interval-ms",
                "5000",
                "--idle-timeout-ms",
                "2000",
            ]),
            &creds(),
        )
        .unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.message.contains("idle_timeout_ms"), "{}", e.message);
    }
}
