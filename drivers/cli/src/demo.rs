//! `genesys-keepalive demo`: the tokio driver against an in-process gateway with compressed timings and a
//! scripted fault schedule, while numbered notifications are published; then a summary of what was lost.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Args;
use genesys_keepalive::{AlertEvent, Config, State, Stats};
use genesys_keepalive_driver_common::random_seed;
use genesys_keepalive_testkit::{Fault, Gateway, GatewayConfig};
use genesys_keepalive_tokio::{Options, Report};
use tokio::time::Instant;

use crate::failure::Failure;
use crate::plot::Story;
use crate::signals::Shutdown;

/// The shortest run that fits every fault and a recovery after the last one.
pub const MIN_SECONDS: u64 = 12;
const TOPIC: &str = "v2.demo.sequence";
const LATENCY: Duration = Duration::from_millis(400);
/// Publishing stops this long before the end, so that everything in flight arrives.
const DRAIN: Duration = Duration::from_millis(1500);

#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// How long to run, in seconds (at least 12, which fits every fault)
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub seconds: u64,
    /// Seed for the core's PRNG (jitter, connection ids) [default: random]
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Publish a numbered notification this often
    #[arg(long, value_name = "MS", default_value_t = 100)]
    pub publish_interval_ms: u64,
    /// Write an SVG picture of the run to FILE (RTT per heartbeat on state bands, marks for dead peers,
    /// reconnects, rollovers and token refreshes, the faults, notifications delivered per second)
    #[arg(long, value_name = "FILE")]
    pub plot: Option<std::path::PathBuf>,
}

/// The compressed timings: heartbeat 500 ms, idle 2 s, ack 1 s, backoff from 200 ms, tokens living 6 s.
pub fn demo_config(gw: &Gateway, client_id: &str, secret: &str) -> Result<Config, Failure> {
    Config::builder()
        .credentials(client_id, genesys_keepalive::Secret::new(secret))
        .api_base(gw.base_url())
        .login_base(gw.base_url())
        .allow_insecure(true)
        .topic(TOPIC)
        .heartbeat_interval(Duration::from_millis(500))
        .max_idle(Duration::from_secs(2))
        .ack_timeout(Duration::from_secs(1))
        .backoff_base(Duration::from_millis(200))
        .backoff_max(Duration::from_secs(2))
        .max_reconnect_attempts(10)
        .min_uptime(Duration::from_secs(3))
        .connect_timeout(Duration::from_secs(2))
        .request_timeout(Duration::from_secs(3))
        .retry_after_default(Duration::from_millis(500))
        .latency_threshold(Duration::from_millis(150))
        .token_refresh_margin(Duration::from_secs(2))
        .rollover_deadline(Duration::from_millis(1500))
        .build()
        .map_err(|e| Failure::internal(format!("the demo's own configuration is invalid: {e}")))
}

fn gateway_config(client_id: &str, secret: &str) -> GatewayConfig {
    GatewayConfig {
        client_id: client_id.to_string(),
        client_secret: secret.to_string(),
        token_lifetime: Duration::from_secs(6),
        server_heartbeat: Duration::from_secs(1),
        idle_timeout: Duration::from_secs(10),
        socket_closing_grace: Duration::from_secs(2),
        ..GatewayConfig::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    LatencyOn,
    LatencyOff,
    ExpireTokens,
    SocketClosing,
    Blackhole,
    StopPublishing,
}

impl Step {
    /// A few words for the plot.
    fn note(self) -> &'static str {
        match self {
            Step::LatencyOn => "latency spike",
            Step::LatencyOff => "latency off",
            Step::ExpireTokens => "token expiry",
            Step::SocketClosing => "socket_closing",
            Step::Blackhole => "blackhole",
            Step::StopPublishing => "publishing stops",
        }
    }

    fn describe(self) -> String {
        match self {
            Step::LatencyOn => format!(
                "fault: latency spike, every gateway frame delayed {} ms",
                LATENCY.as_millis()
            ),
            Step::LatencyOff => "fault cleared: latency back to normal".into(),
            Step::ExpireTokens => "fault: every access token expires now (early)".into(),
            Step::SocketClosing => {
                "fault: v2.system.socket_closing (planned close, rollover)".into()
            }
            Step::Blackhole => "fault: blackhole, the socket goes silent (half-open TCP)".into(),
            Step::StopPublishing => "publishing stopped; waiting for what is in flight".into(),
        }
    }
}

/// When each step happens: spread over the run, 50 ms after a publish tick, with minimum gaps.
fn plan(total: Duration, publish_every: Duration) -> Vec<(Duration, Step)> {
    let n = total.as_secs_f64();
    let tick = (publish_every.as_millis() as u64).max(10);
    let at = |secs: f64| {
        let ms = (secs * 1000.0).round() as u64;
        Duration::from_millis(ms / tick * tick + tick / 2)
    };
    let latency_on = at((0.10 * n).max(1.0));
    let latency_off = at(latency_on.as_secs_f64() + (0.25 * n).max(2.5));
    let expire = at((latency_off.as_secs_f64() + 1.0).max(0.45 * n));
    let closing = at(expire.as_secs_f64() + 0.5);
    let blackhole = at((closing.as_secs_f64() + 1.5).max(0.60 * n));
    let stop = total.saturating_sub(DRAIN);
    vec![
        (latency_on, Step::LatencyOn),
        (latency_off, Step::LatencyOff),
        (expire, Step::ExpireTokens),
        (closing, Step::SocketClosing),
        (blackhole, Step::Blackhole),
        (stop, Step::StopPublishing),
    ]
}

/// Stderr: event lines, and a status line (redrawn in place on a terminal, every 2 s otherwise).
struct Console {
    start: Instant,
    tty: bool,
    status: String,
}

impl Console {
    fn stamp(&self) -> String {
        format!("[{:>5.1}s]", self.start.elapsed().as_secs_f64())
    }

    fn event(&mut self, text: &str) {
        let mut err = std::io::stderr().lock();
        if self.tty {
            let stamp = self.stamp();
            let _ = write!(err, "\r\x1b[2K{stamp} {text}\n{stamp} {}", self.status);
        } else {
            let _ = writeln!(err, "{} {text}", self.stamp());
        }
        let _ = err.flush();
    }

    fn status(&mut self, text: String) {
        self.status = text;
        let mut err = std::io::stderr().lock();
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{} {}", self.stamp(), self.status);
        } else {
            let _ = writeln!(err, "{} {}", self.stamp(), self.status);
        }
        let _ = err.flush();
    }

    fn finish(&mut self) {
        if self.tty {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

type SharedConsole = Arc<Mutex<Console>>;

fn console_event(c: &SharedConsole, text: &str) {
    c.lock().unwrap_or_else(|e| e.into_inner()).event(text);
}

/// What the demo published and whether the gateway had a live, subscribed socket to send it to.
#[derive(Default)]
struct Ledger {
    /// seq → deliverable.
    published: BTreeMap<u64, bool>,
    /// seq → when it was published (wall clock), to find it in a gap report.
    published_at: BTreeMap<u64, std::time::SystemTime>,
    /// After a blackhole: deliverability is unknown until the gateway has blackholed this many sockets.
    blackhole_target: Option<u64>,
}

impl Ledger {
    fn live_sockets(gw: &Gateway) -> (u64, u64) {
        let s = gw.stats();
        // Blackholed sockets stay in the gateway's table (nothing reads them any more); the demo never
        // releases them with a Reset, so open minus blackholed is the number of live sockets.
        (
            s.sockets_open_now.saturating_sub(s.sockets_blackholed),
            s.sockets_blackholed,
        )
    }

    fn publish(&mut self, gw: &Gateway, elapsed: Duration) {
        let (live, blackholed) = Self::live_sockets(gw);
        if self.blackhole_target.is_some_and(|t| blackholed >= t) {
            self.blackhole_target = None;
        }
        let deliverable = live >= 1 && self.blackhole_target.is_none();
        let seq = gw.publish(
            TOPIC,
            serde_json::json!({"demo": true, "publishedAtMs": elapsed.as_millis() as u64}),
        );
        self.published.insert(seq, deliverable);
        self.published_at.insert(seq, std::time::SystemTime::now());
    }

    fn blackhole(&mut self, gw: &Gateway) {
        let (live, blackholed) = Self::live_sockets(gw);
        if live > 0 {
            self.blackhole_target = Some(blackholed + live);
        }
        gw.set_fault(Fault::Blackhole);
    }
}

/// What the client received, by seq.
#[derive(Default)]
struct Received {
    counts: HashMap<u64, u32>,
    without_seq: u64,
}

/// What the report reader saw.
#[derive(Default)]
struct Timeline {
    /// (when, new state)
    states: Vec<(Instant, State)>,
    dead_peer_alerts: Vec<Instant>,
    latency_alerts: u64,
    stopped: Option<String>,
    gaps: Vec<genesys_keepalive::Gap>,
}

struct Outcome {
    elapsed: Duration,
    interrupted: bool,
    stats: Stats,
    gateway: genesys_keepalive_testkit::GatewayStats,
    published: u64,
    delivered: u64,
    not_deliverable: u64,
    received_undeliverable: u64,
    lost: Vec<u64>,
    duplicated: u64,
    without_seq: u64,
    connected: Duration,
    faults: Vec<(Duration, Step)>,
    checks: Vec<(String, bool)>,
    stopped: Option<String>,
}

pub fn main(args: DemoArgs) -> Result<u8, Failure> {
    if args.seconds < MIN_SECONDS {
        return Err(Failure::config(format!(
            "--seconds {} is too short: the fault schedule needs at least {MIN_SECONDS} s",
            args.seconds
        )));
    }
    if args.publish_interval_ms == 0 || args.publish_interval_ms > 1000 {
        return Err(Failure::config(
            "--publish-interval-ms must be between 1 and 1000",
        ));
    }
    let seed = args.seed.unwrap_or_else(random_seed);
    let client_id = "demo-client";
    // A fresh secret per run; it is never printed.
    let secret = format!("demo-secret-{:016x}", random_seed());
    let gw = Gateway::start(gateway_config(client_id, &secret))
        .map_err(|e| Failure::internal(format!("cannot start the in-process gateway: {e}")))?;
    let config = demo_config(&gw, client_id, &secret)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("cannot start the tokio runtime: {e}")))?;
    let outcome = rt.block_on(run(&gw, config, &args, seed))?;
    rt.shutdown_timeout(Duration::from_secs(1));
    let ok = outcome.lost.is_empty() && outcome.duplicated == 0 && outcome.stopped.is_none();
    let table = summary(&outcome, &gw, seed, args.seconds, ok);
    crate::output::emit_raw(table.trim_end());
    gw.shutdown();
    Ok(if ok { 0 } else { 1 })
}

async fn run(gw: &Gateway, config: Config, args: &DemoArgs, seed: u64) -> Result<Outcome, Failure> {
    let total = Duration::from_secs(args.seconds);
    let publish_every = Duration::from_millis(args.publish_interval_ms);
    let mut signals = Shutdown::install()
        .map_err(|e| Failure::internal(format!("cannot install signal handlers: {e}")))?;
    let start = Instant::now();
    let console: SharedConsole = Arc::new(Mutex::new(Console {
        start,
        tty: std::io::stderr().is_terminal(),
        status: String::new(),
    }));
    console_event(
        &console,
        &format!(
            "gateway at {}; connecting (seed {seed}, heartbeat 500 ms, idle timeout 2 s, ack timeout 1 s, tokens live 6 s)",
            gw.base_url()
        ),
    );

    let connect = genesys_keepalive_tokio::connect_with(config, Options::default().seed(seed));
    let (handle, mut notifications) =
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                return Err(Failure::internal(format!(
                    "the demo client could not connect: {e}"
                )))
            }
            Err(_) => {
                return Err(Failure::internal(
                    "the demo client did not connect within 10 s",
                ))
            }
        };

    let story = args.plot.as_ref().map(|_| {
        let mut s = Story::new(start.into_std(), State::Connecting);
        s.state(std::time::Instant::now(), handle.state());
        Arc::new(Mutex::new(s))
    });
    let received = Arc::new(Mutex::new(Received::default()));
    let reader = {
        let received = received.clone();
        let story = story.clone();
        tokio::spawn(async move {
            while let Some(n) = notifications.recv().await {
                if let Some(s) = &story {
                    s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .delivered(std::time::Instant::now());
                }
                let seq = n.json()["eventBody"]["seq"].as_u64();
                let mut r = received.lock().unwrap_or_else(|e| e.into_inner());
                match seq {
                    Some(seq) => *r.counts.entry(seq).or_default() += 1,
                    None => r.without_seq += 1,
                }
            }
        })
    };

    let timeline = Arc::new(Mutex::new(Timeline::default()));
    let watcher = {
        let timeline = timeline.clone();
        let console = console.clone();
        let story = story.clone();
        let mut reports = handle.reports();
        tokio::spawn(async move {
            use genesys_keepalive_tokio::RecvError;
            loop {
                let report = match reports.recv().await {
                    Ok(r) => r,
                    Err(RecvError::Lagged(_)) => continue,
                    Err(RecvError::Closed) => break,
                };
                let now = Instant::now();
                if let Some(s) = &story {
                    s.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .report(now.into_std(), &report);
                }
                match report {
                    Report::State { from, to } => {
                        timeline
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .states
                            .push((now, to));
                        console_event(&console, &format!("state {from} -> {to}"));
                    }
                    Report::Alert(a) => {
                        {
                            let mut t = timeline.lock().unwrap_or_else(|e| e.into_inner());
                            match a.event {
                                AlertEvent::DeadPeer => t.dead_peer_alerts.push(now),
                                AlertEvent::LatencyThresholdExceeded => t.latency_alerts += 1,
                                _ => {}
                            }
                        }
                        let mut text = format!("alert {:?}", a.event);
                        if let Some(avg) = a.metrics.avg_latency {
                            let _ = write!(text, " avg RTT {avg:.0} ms");
                        }
                        if let Some(d) = &a.metrics.detail {
                            let _ = write!(text, ": {d}");
                        }
                        console_event(&console, &text);
                    }
                    Report::Audit(e) => {
                        use genesys_keepalive::AuditEvent as A;
                        let interesting = matches!(
                            e.event,
                            A::TokenRefreshed
                                | A::RolloverStarted
                                | A::RolloverComplete
                                | A::ReconnectScheduled
                                | A::ChannelCreated
                                | A::HttpRetry
                                | A::TokenFailure
                        );
                        if interesting {
                            let mut text = format!("audit {:?}", e.event);
                            if let Some(err) = &e.error {
                                let _ = write!(text, ": {err}");
                            }
                            console_event(&console, &text);
                        }
                    }
                    Report::Gap(gap) => {
                        let text = format!(
                            "gap {} .. {} ({} ms, {}): re-read state for it",
                            gap.from_iso8601(),
                            gap.to_iso8601(),
                            gap.duration().as_millis(),
                            gap.reason
                        );
                        timeline
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .gaps
                            .push(gap);
                        console_event(&console, &text);
                    }
                    Report::Stopped(reason) => {
                        timeline.lock().unwrap_or_else(|e| e.into_inner()).stopped =
                            Some(reason.to_string());
                    }
                }
            }
        })
    };

    let schedule = plan(total, publish_every);
    let mut steps = schedule.clone().into_iter().peekable();
    let mut ledger = Ledger::default();
    let mut publishing = true;
    let mut publish_tick = tokio::time::interval(publish_every);
    publish_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let status_every = if console.lock().map(|c| c.tty).unwrap_or(false) {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(2)
    };
    let mut status_tick = tokio::time::interval_at(start + status_every, status_every);
    let end = start + total;
    let mut interrupted = false;
    let mut blackhole_at: Option<Instant> = None;
    let mut latency_window: Option<(Instant, Instant)> = None;
    let mut expired_at: Option<Instant> = None;
    let expired_before = gw.stats().requests_with_expired_token;
    // For --plot: the RTT of each answered heartbeat, sampled well inside the 500 ms interval.
    let mut sample_tick = tokio::time::interval(Duration::from_millis(50));

    loop {
        let next_step_at = steps.peek().map(|(t, _)| start + *t);
        tokio::select! {
            biased;
            sig = signals.recv() => {
                console_event(&console, &format!("{sig}: stopping early"));
                interrupted = true;
                break;
            }
            _ = tokio::time::sleep_until(end) => break,
            _ = tokio::time::sleep_until(next_step_at.unwrap_or(end)), if next_step_at.is_some() => {
                let Some((_, step)) = steps.next() else { continue };
                console_event(&console, &step.describe());
                let now = Instant::now();
                if let Some(s) = &story {
                    s.lock().unwrap_or_else(|e| e.into_inner()).note(now.into_std(), step.note());
                }
                match step {
                    Step::LatencyOn => {
                        gw.set_fault(Fault::Latency(LATENCY));
                        latency_window = Some((now, now));
                    }
                    Step::LatencyOff => {
                        gw.set_fault(Fault::None);
                        if let Some(w) = latency_window.as_mut() {
                            w.1 = now;
                        }
                    }
                    Step::ExpireTokens => {
                        gw.expire_tokens();
                        expired_at = Some(now);
                    }
                    Step::SocketClosing => {
                        let n = gw.socket_closing();
                        console_event(&console, &format!("socket_closing sent on {n} socket(s)"));
                    }
                    Step::Blackhole => {
                        ledger.blackhole(gw);
                        blackhole_at = Some(now);
                    }
                    Step::StopPublishing => publishing = false,
                }
            }
            _ = publish_tick.tick(), if publishing => ledger.publish(gw, start.elapsed()),
            _ = sample_tick.tick(), if story.is_some() => {
                let acked = handle.stats().heartbeats_acked;
                if let Some(s) = &story {
                    let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                    s.sample(std::time::Instant::now(), acked, handle.last_rtt());
                }
            }
            _ = status_tick.tick() => {
                let s = handle.stats();
                let delivered = received.lock().map(|r| r.counts.len()).unwrap_or(0);
                let text = format!(
                    "{:<12} RTT {:>6.1} ms  reconnects {}  rollovers {}  dead peers {}  delivered {}/{}",
                    s.state.as_str(),
                    s.avg_latency_ms,
                    s.reconnects,
                    s.rollovers,
                    s.dead_peers,
                    delivered,
                    ledger.published.len()
                );
                console.lock().unwrap_or_else(|e| e.into_inner()).status(text);
            }
        }
    }

    // Wait (bounded) for every deliverable notification still in flight.
    let wait_until = Instant::now() + Duration::from_secs(3);
    loop {
        let missing = {
            let r = received.lock().unwrap_or_else(|e| e.into_inner());
            ledger
                .published
                .iter()
                .any(|(seq, d)| *d && !r.counts.contains_key(seq))
        };
        if !missing || Instant::now() >= wait_until || handle.stop_reason().is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = start.elapsed();
    let stopped_early = handle.stop_reason().map(|r| r.to_string());
    let stats = handle.shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), reader).await;
    let _ = tokio::time::timeout(Duration::from_secs(2), watcher).await;
    console.lock().unwrap_or_else(|e| e.into_inner()).finish();
    if let (Some(path), Some(s)) = (&args.plot, &story) {
        let title =
            format!("genesys-keepalive demo, seed {seed}: RTT per heartbeat, state, events");
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        s.write_svg(path, &title, (start + elapsed).into_std())
            .map_err(|e| Failure::internal(format!("cannot write {}: {e}", path.display())))?;
        console_event(&console, &format!("plot written to {}", path.display()));
    }

    let received = received.lock().unwrap_or_else(|e| e.into_inner());
    let timeline = timeline.lock().unwrap_or_else(|e| e.into_inner());
    let mut lost = Vec::new();
    let (mut delivered, mut not_deliverable, mut received_undeliverable) = (0, 0, 0);
    for (seq, deliverable) in &ledger.published {
        match (received.counts.contains_key(seq), deliverable) {
            (true, true) => delivered += 1,
            (true, false) => {
                delivered += 1;
                received_undeliverable += 1;
            }
            (false, true) => lost.push(*seq),
            (false, false) => not_deliverable += 1,
        }
    }
    let duplicated: u64 = received
        .counts
        .values()
        .map(|c| u64::from(c.saturating_sub(1)))
        .sum();

    // Connected = time spent STABLE or DEGRADED.
    let mut connected = Duration::ZERO;
    let mut since: Option<Instant> = None;
    let end_at = start + elapsed;
    for (at, state) in &timeline.states {
        let up = matches!(state, State::Stable | State::Degraded);
        match (up, since) {
            (true, None) => since = Some(*at),
            (false, Some(s)) => {
                connected += at.saturating_duration_since(s);
                since = None;
            }
            _ => {}
        }
    }
    if let Some(s) = since {
        connected += end_at.saturating_duration_since(s);
    }

    // Did each fault have its effect?
    let mut checks = Vec::new();
    if let Some((on, _)) = latency_window {
        let degraded = timeline
            .states
            .iter()
            .any(|(at, s)| *at >= on && *s == State::Degraded);
        let back = timeline
            .states
            .iter()
            .any(|(at, s)| *at >= on && *s == State::Stable);
        checks.push((
            format!(
                "latency spike: DEGRADED, then STABLE again ({} latency alert(s))",
                timeline.latency_alerts
            ),
            degraded && back,
        ));
    }
    let gateway = gw.stats();
    if expired_at.is_some() {
        let refused = gateway
            .requests_with_expired_token
            .saturating_sub(expired_before);
        checks.push((
            format!(
                "token expiry: {refused} request(s) with the expired token refused with 401, token refreshed \
                 ({} refreshes in all)",
                stats.token_refreshes
            ),
            stats.token_refreshes >= 2,
        ));
    }
    checks.push((
        format!(
            "socket_closing: make-before-break rollover ({} completed)",
            stats.rollovers
        ),
        stats.rollovers >= 1,
    ));
    let outside_gaps = ledger
        .published_at
        .iter()
        .filter(|(seq, at)| {
            !received.counts.contains_key(seq) && !timeline.gaps.iter().any(|g| g.contains(**at))
        })
        .count();
    let undelivered = ledger.published.len() - received.counts.len().min(ledger.published.len());
    checks.push((
        format!(
            "gaps: {} reported ({} ms in all); {undelivered} notifications not delivered, {outside_gaps} of \
             them outside every reported gap",
            timeline.gaps.len(),
            timeline.gaps.iter().map(|g| g.duration().as_millis()).sum::<u128>()
        ),
        outside_gaps == 0,
    ));
    if let Some(at) = blackhole_at {
        let detected = timeline.dead_peer_alerts.iter().find(|t| **t >= at);
        let stable = timeline
            .states
            .iter()
            .find(|(t, s)| *t >= at && *s == State::Stable)
            .map(|(t, _)| *t);
        let text = match (detected, stable) {
            (Some(d), Some(s)) => format!(
                "blackhole: dead peer declared after {:.2} s, STABLE again after {:.2} s (idle timeout 2 s + \
                 one heartbeat 0.5 s = 2.5 s)",
                d.saturating_duration_since(at).as_secs_f64(),
                s.saturating_duration_since(at).as_secs_f64()
            ),
            (Some(d), None) => format!(
                "blackhole: dead peer declared after {:.2} s, but not STABLE again",
                d.saturating_duration_since(at).as_secs_f64()
            ),
            _ => "blackhole: the dead peer was not detected".to_string(),
        };
        checks.push((text, detected.is_some() && stable.is_some()));
    }

    Ok(Outcome {
        elapsed,
        interrupted,
        stats,
        gateway,
        published: ledger.published.len() as u64,
        delivered,
        not_deliverable,
        received_undeliverable,
        lost,
        duplicated,
        without_seq: received.without_seq,
        connected,
        faults: schedule,
        checks,
        stopped: stopped_early.or_else(|| {
            timeline
                .stopped
                .clone()
                .filter(|s| !s.contains("shut down"))
        }),
    })
}

fn summary(o: &Outcome, gw: &Gateway, seed: u64, seconds: u64, ok: bool) -> String {
    let s = &o.stats;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "genesys-keepalive demo: {seconds} s against the in-process gateway at {}, seed {seed}{}",
        gw.base_url(),
        if o.interrupted { " (interrupted)" } else { "" }
    );
    let faults: Vec<String> = o
        .faults
        .iter()
        .filter(|(_, step)| *step != Step::StopPublishing)
        .map(|(t, step)| {
            let name = match step {
                Step::LatencyOn => format!("latency {} ms on", LATENCY.as_millis()),
                Step::LatencyOff => "latency off".into(),
                Step::ExpireTokens => "token expiry".into(),
                Step::SocketClosing => "socket_closing".into(),
                Step::Blackhole => "blackhole".into(),
                Step::StopPublishing => String::new(),
            };
            format!("{:.2} s {name}", t.as_secs_f64())
        })
        .collect();
    let _ = writeln!(out, "fault schedule: {}", faults.join(", "));
    let _ = writeln!(out);
    let rows: Vec<(&str, String)> = vec![
        ("run time", format!("{:.1} s", o.elapsed.as_secs_f64())),
        (
            "uptime (STABLE/DEGRADED, client's view)",
            format!(
                "{:.1} s ({:.1} %)",
                o.connected.as_secs_f64(),
                100.0 * o.connected.as_secs_f64() / o.elapsed.as_secs_f64().max(0.001)
            ),
        ),
        (
            "heartbeats sent / acked / lost",
            format!(
                "{} / {} / {}",
                s.heartbeats_sent, s.heartbeats_acked, s.heartbeats_lost
            ),
        ),
        (
            "RTT p50 / p95 / p99",
            format!(
                "{:.1} / {:.1} / {:.1} ms (current connection, last {} heartbeats)",
                s.rtt_p50_ms, s.rtt_p95_ms, s.rtt_p99_ms, s.rtt_samples
            ),
        ),
        ("reconnects", s.reconnects.to_string()),
        ("rollovers", s.rollovers.to_string()),
        ("dead peers", s.dead_peers.to_string()),
        ("token refreshes", s.token_refreshes.to_string()),
        ("notifications published", o.published.to_string()),
        (
            "notifications delivered",
            if o.received_undeliverable > 0 {
                format!(
                    "{} ({} of them published while no live socket was there)",
                    o.delivered, o.received_undeliverable
                )
            } else {
                o.delivered.to_string()
            },
        ),
        ("not deliverable", o.not_deliverable.to_string()),
        ("lost", o.lost.len().to_string()),
        ("duplicated", o.duplicated.to_string()),
        (
            "duplicates dropped by the client",
            s.duplicates_dropped.to_string(),
        ),
        (
            "gateway: sockets opened / frames sent",
            format!(
                "{} / {} notification frames",
                o.gateway.sockets_opened, o.gateway.notifications_sent
            ),
        ),
    ];
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    let _ = writeln!(out, "  {:<width$}  value", "metric");
    let _ = writeln!(out, "  {}  {}", "-".repeat(width), "-".repeat(24));
    for (k, v) in &rows {
        let _ = writeln!(out, "  {k:<width$}  {v}");
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "not deliverable = published while the gateway had no live socket subscribed to the topic (inside the \
         blackhole before it was detected, or while reconnecting): nothing could have carried them to the client, \
         so they are not counted as lost."
    );
    if !o.lost.is_empty() {
        let shown: Vec<String> = o.lost.iter().take(20).map(u64::to_string).collect();
        let _ = writeln!(out, "lost seqs: {}", shown.join(", "));
    }
    if o.without_seq > 0 {
        let _ = writeln!(out, "notifications without a seq: {}", o.without_seq);
    }
    for (text, passed) in &o.checks {
        let _ = writeln!(out, "[{}] {text}", if *passed { "ok" } else { "!!" });
    }
    if let Some(reason) = &o.stopped {
        let _ = writeln!(out, "the client stopped: {reason}");
    }
    let _ = writeln!(
        out,
        "result: {}",
        if ok {
            "PASS: zero lost and zero duplicated notifications after every scripted fault"
        } else {
            "FAIL: notifications were lost or duplicated, or the client stopped"
        }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_fits_the_minimum_run() {
        let total = Duration::from_secs(MIN_SECONDS);
        let p = plan(total, Duration::from_millis(100));
        let times: Vec<Duration> = p.iter().map(|(t, _)| *t).collect();
        assert!(times.windows(2).all(|w| w[0] < w[1]), "{p:?}");
        let blackhole = p.iter().find(|(_, s)| *s == Step::Blackhole).unwrap().0;
        let stop = p
            .iter()
            .find(|(_, s)| *s == Step::StopPublishing)
            .unwrap()
            .0;
        // Detection (idle 2 s) + backoff (200 ms) + setup must fit before publishing stops, with room.
        assert!(stop >= blackhole + Duration::from_millis(2900), "{p:?}");
        // Faults land between publish ticks.
        assert_eq!(blackhole.as_millis() % 100, 50);
    }

    #[test]
    fn plan_spreads_over_longer_runs() {
        let p = plan(Duration::from_secs(60), Duration::from_millis(100));
        let blackhole = p.iter().find(|(_, s)| *s == Step::Blackhole).unwrap().0;
        assert!(blackhole >= Duration::from_secs(36));
    }
}
