//! `genesys-keepalive bench`: N keepalive-frame connections in this process, measured like
//! shared/baseline/seed-node/client.js (connections open, heartbeats sent/acked, RSS per connection, CPU),
//! plus heartbeat lateness and RTT percentiles over every connection.
//!
//! Either driver can be measured (`--driver`); the tokio one on a current-thread runtime by default (one
//! event loop, as Node has and as shared/baseline/floor-rust is measured) or on the multi-thread one.

use std::fmt::Display;
use std::future::Future;
use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use genesys_keepalive::{Config, Histogram, ProfileKind, State, Stats};
use genesys_keepalive_testkit::{Gateway, GatewayConfig};
use rustls_pki_types::CertificateDer;
use serde::Serialize;

use crate::failure::Failure;
use crate::run::load_roots;
use crate::settings::DriverKind;

/// The executor the bench runs the driver on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// One thread, one event loop (like Node's; how floor-rust is measured): tokio's current-thread
    /// runtime, or one async-executor for the async-std driver
    CurrentThread,
    /// tokio's work-stealing scheduler, one worker per core; async-std's global executor
    MultiThread,
}

#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Connections to open
    #[arg(long, value_name = "N", default_value_t = 1000)]
    pub connections: usize,
    /// Run time, counted from the start of connecting (as client.js does)
    #[arg(long, value_name = "S", default_value_t = 20)]
    pub seconds: u64,
    /// Heartbeat interval while STABLE
    #[arg(long, value_name = "I", default_value_t = 1000)]
    pub interval_ms: u64,
    /// A gateway's keep-alive WebSocket (answers KEEP_ALIVE with KEEP_ALIVE_ACK), e.g. the seed-node
    /// server.js; by default a `genesys-keepalive gateway` child process is started
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Run the testkit gateway in this process instead of a child (its memory and CPU are then counted too)
    #[arg(long, conflicts_with = "url")]
    pub in_process_gateway: bool,
    /// Connection attempts in flight at once while connecting
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub connect_concurrency: usize,
    /// The driver that opens the connections
    #[arg(long, value_enum, default_value_t = DriverKind::Tokio)]
    pub driver: DriverKind,
    /// The executor [default: current-thread: one event loop, like Node's, and how floor-rust is
    /// measured]
    #[arg(long, value_enum, value_name = "FLAVOUR")]
    pub runtime: Option<RuntimeKind>,
    /// Extra trusted root certificate(s), PEM, in addition to the web roots (for a wss:// gateway with a
    /// test CA)
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Serve Prometheus metrics at http://ADDR/metrics while it runs (all connections share the
    /// `connection="default"` series)
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Write an SVG of the RTT and lateness distributions over all connections to FILE at the end
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
}

/// One JSON line, with client.js's field names first.
#[derive(Serialize)]
struct BenchLine {
    #[serde(rename = "N")]
    n: usize,
    open: usize,
    sent: u64,
    acks: u64,
    rss_mb: f64,
    rss_per_conn_kb: f64,
    cpu_s: f64,
    secs: u64,
    interval_ms: u64,
    driver: &'static str,
    runtime: &'static str,
    connect_failures: usize,
    connect_s: f64,
    cpu_us_per_heartbeat: f64,
    heartbeats_lost: u64,
    /// How late heartbeats went out against their schedule, over every connection (`null`: none sent).
    lateness_p50_ms: Option<f64>,
    lateness_p99_ms: Option<f64>,
    /// Heartbeat round trips, over every connection (`null`: none acked).
    rtt_p50_ms: Option<f64>,
    rtt_p99_ms: Option<f64>,
    gateway: &'static str,
    url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_connect_error: Option<String>,
}

/// VmRSS of this process, in bytes.
fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// User + system CPU time of this process (all threads), from /proc/self/stat (USER_HZ = 100 on Linux).
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // The command name (field 2) may contain spaces; the fields after its closing parenthesis are plain.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall; `rest` starts at field 3.
    let ticks = |i: usize| {
        fields
            .get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(14) + ticks(15)) as f64 / 100.0
}

/// Where the clients connect, and what to stop at the end.
enum Target {
    External,
    InProcess(Gateway),
    Child(Child),
}

fn start_child_gateway() -> Result<(Child, String), Failure> {
    let exe = std::env::current_exe()
        .map_err(|e| Failure::internal(format!("cannot find this executable: {e}")))?;
    let mut child = Command::new(exe)
        .args([
            "gateway",
            "--port",
            "0",
            "--idle-timeout-ms",
            "0",
            "--server-heartbeat-ms",
            "0",
        ])
        .env("RUST_LOG", "error")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| Failure::internal(format!("cannot start the gateway child: {e}")))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| Failure::internal("the gateway child has no stdout"))?;
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .map_err(|e| Failure::internal(format!("cannot read the gateway's first line: {e}")))?;
    let v: serde_json::Value = serde_json::from_str(&first).map_err(|e| {
        Failure::internal(format!(
            "the gateway's first line is not JSON ({e}): {first}"
        ))
    })?;
    let url = v["keepalive_url"]
        .as_str()
        .ok_or_else(|| Failure::internal(format!("no keepalive_url in: {first}")))?
        .to_string();
    Ok((child, url))
}

fn client_config(url: &str, interval: Duration) -> Result<Config, Failure> {
    let idle = (interval * 3).max(interval + Duration::from_secs(2));
    Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url(url)
        .allow_insecure(url.starts_with("ws://"))
        .heartbeat_interval(interval)
        .max_idle(idle)
        .ack_timeout(idle)
        .connect_timeout(Duration::from_secs(30))
        .backoff_base(Duration::from_secs(1))
        .backoff_max(Duration::from_secs(5))
        .build()
        .map_err(|e| Failure::config(format!("{e}. Check --url and --interval-ms")))
}

/// Everything one run needs, whatever the driver.
struct Plan {
    config: Config,
    roots: Arc<Vec<CertificateDer<'static>>>,
    n: usize,
    concurrency: usize,
    seconds: u64,
    progress: Arc<Progress>,
}

pub fn main(args: BenchArgs) -> Result<u8, Failure> {
    if args.connections == 0 || args.seconds == 0 || args.interval_ms < 4 {
        return Err(Failure::config(
            "--connections and --seconds must be at least 1 and --interval-ms at least 4",
        ));
    }
    let roots = match &args.ca_cert {
        Some(path) => load_roots(path)?,
        None => Vec::new(),
    };
    if let Some(addr) = args.metrics_addr {
        crate::metrics_export::serve(addr)?;
    }
    let interval = Duration::from_millis(args.interval_ms);
    let (target, url, kind) = match (&args.url, args.in_process_gateway) {
        (Some(u), _) => (Target::External, u.clone(), "external"),
        (None, true) => {
            let gw = Gateway::start(GatewayConfig {
                idle_timeout: Duration::ZERO,
                server_heartbeat: Duration::ZERO,
                ..GatewayConfig::default()
            })
            .map_err(|e| Failure::internal(format!("cannot start the gateway: {e}")))?;
            let url = gw.ws_url("/keepalive");
            (Target::InProcess(gw), url, "in-process")
        }
        (None, false) => {
            let (child, url) = start_child_gateway()?;
            (Target::Child(child), url, "child process")
        }
    };
    let (driver, runtime) = match (args.driver, args.runtime) {
        (DriverKind::Tokio, Some(RuntimeKind::MultiThread)) => ("tokio", "multi-thread"),
        (DriverKind::Tokio, _) => ("tokio", "current-thread"),
        (DriverKind::AsyncStd, Some(RuntimeKind::MultiThread)) => ("async-std", "global-executor"),
        (DriverKind::AsyncStd, _) => ("async-std", "current-thread"),
    };
    let result = client_config(&url, interval).and_then(|config| {
        let plan = Plan {
            config,
            roots: Arc::new(roots),
            n: args.connections,
            concurrency: args.connect_concurrency.clamp(1, args.connections),
            seconds: args.seconds,
            progress: Arc::new(Progress::new(args.connections)),
        };
        let printer = ProgressPrinter::start(plan.progress.clone());
        let measured = match args.driver {
            DriverKind::Tokio => run_tokio(plan, runtime == "multi-thread"),
            DriverKind::AsyncStd if runtime == "current-thread" => {
                // One async-executor on this thread (it also drives async-io's reactor while idle).
                let ex = Arc::new(async_executor::Executor::new());
                Ok(async_io::block_on(
                    ex.run(measure(plan, Exec::AsyncStd(Some(ex.clone())))),
                ))
            }
            DriverKind::AsyncStd => Ok(async_std::task::block_on(measure(
                plan,
                Exec::AsyncStd(None),
            ))),
        };
        drop(printer);
        measured
    });
    match target {
        Target::Child(mut c) => {
            let _ = c.kill();
            let _ = c.wait();
        }
        Target::InProcess(gw) => gw.shutdown(),
        Target::External => {}
    }
    let m = result?;
    if let Some(e) = &m.first_error {
        tracing::warn!(
            failures = m.failures,
            "some connections failed; the first: {e}"
        );
    }
    let n = args.connections;
    // Whole microseconds over 1000: bucket bounds print as e.g. 1.448, not 1.4480000000000002.
    let ms = |d: Option<Duration>| d.map(|d| d.as_micros() as f64 / 1e3);
    let t = &m.tally;
    let line = BenchLine {
        n,
        open: t.open,
        sent: t.sent,
        acks: t.acks,
        rss_mb: m.rss as f64 / 1_048_576.0,
        rss_per_conn_kb: m.rss.saturating_sub(m.rss0) as f64 / 1024.0 / n as f64,
        cpu_s: m.cpu_s,
        secs: args.seconds,
        interval_ms: args.interval_ms,
        driver,
        runtime,
        connect_failures: m.failures,
        connect_s: m.connect_s,
        cpu_us_per_heartbeat: if t.acks > 0 {
            m.cpu_s * 1e6 / t.acks as f64
        } else {
            0.0
        },
        heartbeats_lost: t.lost,
        lateness_p50_ms: ms(t.lateness.quantile(0.50)),
        lateness_p99_ms: ms(t.lateness.quantile(0.99)),
        rtt_p50_ms: ms(t.rtt.quantile(0.50)),
        rtt_p99_ms: ms(t.rtt.quantile(0.99)),
        gateway: kind,
        url,
        first_connect_error: m.first_error,
    };
    crate::output::emit("bench", &line);
    if let Some(path) = &args.plot {
        let title = format!("bench: {n} connections, {driver} {runtime}");
        crate::plot::write_distributions(path, &title, &t.rtt, &t.lateness)
            .map_err(|e| Failure::internal(format!("cannot write {}: {e}", path.display())))?;
    }
    Ok(if line.open == line.n { 0 } else { 1 })
}

/// What the run measured, before it is turned into a [`BenchLine`].
struct Measured {
    rss0: u64,
    rss: u64,
    cpu_s: f64,
    connect_s: f64,
    failures: usize,
    first_error: Option<String>,
    tally: Tally,
}

/// Every connection's counters and histograms, summed.
#[derive(Default)]
struct Tally {
    open: usize,
    sent: u64,
    acks: u64,
    lost: u64,
    rtt: Histogram,
    lateness: Histogram,
}

impl Tally {
    fn add(&mut self, stats: &Stats, state: State) {
        self.sent += stats.heartbeats_sent;
        self.acks += stats.heartbeats_acked;
        self.lost += stats.heartbeats_lost;
        self.rtt.merge(&stats.rtt_histogram);
        self.lateness.merge(&stats.heartbeat_lateness);
        if matches!(state, State::Stable | State::Degraded) {
            self.open += 1;
        }
    }
}

/// Connections opened so far, for the live progress line.
struct Progress {
    n: usize,
    start: Instant,
    connected: AtomicUsize,
    failed: AtomicUsize,
}

impl Progress {
    fn new(n: usize) -> Self {
        Progress {
            n,
            start: Instant::now(),
            connected: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
        }
    }

    fn line(&self) -> String {
        format!(
            "bench: {}/{} connected, {} failed, {:.1} s",
            self.connected.load(Ordering::Relaxed),
            self.n,
            self.failed.load(Ordering::Relaxed),
            self.start.elapsed().as_secs_f64()
        )
    }

    fn settled(&self) -> bool {
        self.connected.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed) >= self.n
    }
}

/// A thread that redraws the progress line on stderr while connecting, when stderr is a terminal (on its
/// own thread so that both drivers share it and no runtime is woken for it). Stops when dropped.
struct ProgressPrinter {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ProgressPrinter {
    fn start(progress: Arc<Progress>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::io::stderr().is_terminal().then(|| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let draw = |end: &str| {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[2K{}{end}", progress.line());
                    let _ = err.flush();
                };
                while !stop.load(Ordering::Relaxed) && !progress.settled() {
                    draw("");
                    std::thread::park_timeout(Duration::from_millis(200));
                }
                draw("\n");
            })
        });
        ProgressPrinter { stop, thread }
    }
}

impl Drop for ProgressPrinter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

/// What one connector task opened.
struct Opened<C> {
    conns: Vec<C>,
    failures: usize,
    first_error: Option<String>,
}

/// One of `concurrency` connector tasks: takes the next connection index, connects, repeats, so that at
/// most `concurrency` attempts are in flight (as floor-rust's semaphore allows) with either runtime.
async fn connector<C, E, F, Fut>(
    next: Arc<AtomicUsize>,
    progress: Arc<Progress>,
    connect: F,
) -> Opened<C>
where
    E: Display,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<C, E>>,
{
    let mut out = Opened {
        conns: Vec::new(),
        failures: 0,
        first_error: None,
    };
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= progress.n {
            return out;
        }
        match connect(i).await {
            Ok(c) => {
                out.conns.push(c);
                progress.connected.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                out.failures += 1;
                out.first_error.get_or_insert_with(|| e.to_string());
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Adds every connector's result into one.
fn gather<C>(all: &mut Opened<C>, part: Opened<C>) {
    all.conns.extend(part.conns);
    all.failures += part.failures;
    if all.first_error.is_none() {
        all.first_error = part.first_error;
    }
}

fn run_tokio(plan: Plan, multi_thread: bool) -> Result<Measured, Failure> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    let rt = builder
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("cannot start the tokio runtime: {e}")))?;
    let measured = rt.block_on(measure(plan, Exec::Tokio));
    rt.shutdown_timeout(Duration::from_secs(2));
    Ok(measured)
}

/// Where the bench's tasks run: the tokio runtime it is called from, one async-executor, or async-std's
/// global executor. The connections themselves are the same type for both drivers (driver-common's).
enum Exec {
    Tokio,
    AsyncStd(Option<Arc<async_executor::Executor<'static>>>),
}

type Connected = (
    genesys_keepalive_driver_common::Handle,
    genesys_keepalive_driver_common::Notifications,
);

impl Exec {
    /// Runs `fut` as a task; `None` if it panicked.
    fn spawn<T: Send + 'static>(
        &self,
        fut: impl Future<Output = T> + Send + 'static,
    ) -> std::pin::Pin<Box<dyn Future<Output = Option<T>> + Send>> {
        match self {
            Exec::Tokio => {
                let task = tokio::spawn(fut);
                Box::pin(async move { task.await.ok() })
            }
            Exec::AsyncStd(Some(ex)) => {
                let task = ex.spawn(fut);
                Box::pin(async move { Some(task.await) })
            }
            Exec::AsyncStd(None) => {
                let task = async_std::task::spawn(fut);
                Box::pin(async move { Some(task.await) })
            }
        }
    }

    async fn sleep_until(&self, at: Instant) {
        match self {
            Exec::Tokio => tokio::time::sleep_until(at.into()).await,
            Exec::AsyncStd(_) => {
                async_io::Timer::at(at).await;
            }
        }
    }

    /// Connects with the driver that goes with this executor.
    fn connect(
        &self,
        config: Config,
        options: genesys_keepalive_driver_common::Options,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = Result<Connected, genesys_keepalive_driver_common::Error>> + Send>,
    > {
        match self {
            Exec::Tokio => Box::pin(genesys_keepalive_tokio::connect_with(config, options)),
            Exec::AsyncStd(ex) => {
                let mut options = options;
                options.spawner = ex.clone().map(|ex| {
                    genesys_keepalive_driver_common::Spawner::new(move |task| {
                        ex.spawn(task).detach()
                    })
                });
                Box::pin(genesys_keepalive_async_std::connect_with(config, options))
            }
        }
    }
}

async fn measure(plan: Plan, exec: Exec) -> Measured {
    let exec = Arc::new(exec);
    // Start the executor before the first reading (the tokio runtime is built before it anyway).
    exec.spawn(async {}).await;
    let rss0 = rss_bytes();
    let cpu0 = cpu_seconds();
    let start = Instant::now();
    let end = start + Duration::from_secs(plan.seconds);

    let next = Arc::new(AtomicUsize::new(0));
    let connectors: Vec<_> = (0..plan.concurrency)
        .map(|_| {
            let (config, roots, e) = (plan.config.clone(), plan.roots.clone(), exec.clone());
            exec.spawn(connector(next.clone(), plan.progress.clone(), move |i| {
                // The bench reads no reports: keep none.
                let mut options = genesys_keepalive_driver_common::Options::default()
                    .seed(i as u64)
                    .reports_capacity(0);
                for root in roots.iter() {
                    options = options.trust_root(root.clone());
                }
                e.connect(config.clone(), options)
            }))
        })
        .collect();
    let mut opened = Opened {
        conns: Vec::with_capacity(plan.n),
        failures: 0,
        first_error: None,
    };
    for c in connectors {
        match c.await {
            Some(part) => gather(&mut opened, part),
            None => {
                opened.failures += 1;
                opened
                    .first_error
                    .get_or_insert_with(|| "a connecting task panicked".into());
            }
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    exec.sleep_until(end).await;

    let rss = rss_bytes();
    let cpu_s = cpu_seconds() - cpu0;
    let mut tally = Tally::default();
    for (h, _) in &opened.conns {
        tally.add(&h.stats(), h.state());
    }

    let shutdowns: Vec<_> = opened
        .conns
        .iter()
        .map(|(h, _)| {
            let h = h.clone();
            exec.spawn(async move {
                h.shutdown().await;
            })
        })
        .collect();
    let all = async {
        for s in shutdowns {
            s.await;
        }
    };
    let limit = exec.sleep_until(Instant::now() + Duration::from_secs(10));
    futures_lite::future::or(all, limit).await;
    Measured {
        rss0,
        rss,
        cpu_s,
        connect_s,
        failures: opened.failures,
        first_error: opened.first_error,
        tally,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_proc() {
        assert!(rss_bytes() > 0);
        let _ = cpu_seconds();
        // Burn a little CPU; the counter must not go backwards.
        let before = cpu_seconds();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(x != 1);
        assert!(cpu_seconds() >= before);
    }

    fn temp_file(name: &str, body: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("bench-{}-{name}", std::process::id()));
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn ca_cert_errors_are_configuration_errors() {
        let missing = std::env::temp_dir().join("bench-no-such-file.pem");
        let e = load_roots(&missing).unwrap_err();
        assert_eq!(e.code, crate::failure::EXIT_CONFIG);
        assert!(
            e.message.contains("bench-no-such-file.pem"),
            "{}",
            e.message
        );
        for (name, body) in [
            ("empty.pem", ""),
            (
                "key.pem",
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            ),
        ] {
            let path = temp_file(name, body);
            let e = load_roots(&path).unwrap_err();
            let _ = std::fs::remove_file(&path);
            assert_eq!(e.code, crate::failure::EXIT_CONFIG, "{name}");
            assert!(
                e.message.contains("no CERTIFICATE"),
                "{name}: {}",
                e.message
            );
        }
    }

    #[test]
    fn ca_cert_takes_every_certificate_of_the_file() {
        let gw = Gateway::start(GatewayConfig {
            tls: true,
            ..GatewayConfig::default()
        })
        .unwrap();
        let pem = gw.ca_cert_pem().unwrap().to_string();
        gw.shutdown();
        let path = temp_file("two.pem", &format!("{pem}\n{pem}"));
        let roots = load_roots(&path);
        let _ = std::fs::remove_file(&path);
        assert_eq!(roots.unwrap().len(), 2);
    }

    #[test]
    fn connectors_share_the_indices_and_count_failures() {
        let progress = Arc::new(Progress::new(10));
        let next = Arc::new(AtomicUsize::new(0));
        let connect = |i: usize| async move {
            if i % 5 == 0 {
                Err(format!("refused {i}"))
            } else {
                Ok(i)
            }
        };
        let mut all = Opened {
            conns: Vec::new(),
            failures: 0,
            first_error: None,
        };
        futures_lite::future::block_on(async {
            let a = connector(next.clone(), progress.clone(), connect);
            let b = connector(next.clone(), progress.clone(), connect);
            let (a, b) = futures_lite::future::zip(a, b).await;
            gather(&mut all, a);
            gather(&mut all, b);
        });
        all.conns.sort_unstable();
        assert_eq!(all.conns, vec![1, 2, 3, 4, 6, 7, 8, 9]);
        assert_eq!(all.failures, 2);
        assert!(all.first_error.unwrap().starts_with("refused"));
        assert!(progress.settled());
        assert!(progress
            .line()
            .starts_with("bench: 8/10 connected, 2 failed"));
    }

    #[test]
    fn tally_merges_every_connection() {
        let mut one = Stats {
            heartbeats_sent: 10,
            heartbeats_acked: 9,
            heartbeats_lost: 1,
            ..Stats::default()
        };
        for _ in 0..9 {
            one.rtt_histogram.record(Duration::from_millis(1));
            one.heartbeat_lateness.record(Duration::from_micros(50));
        }
        let mut slow = one.clone();
        slow.rtt_histogram = Histogram::default();
        slow.rtt_histogram.record(Duration::from_millis(100));
        let mut t = Tally::default();
        t.add(&one, State::Stable);
        t.add(&slow, State::Degraded);
        t.add(&Stats::default(), State::Reconnecting);
        assert_eq!((t.open, t.sent, t.acks, t.lost), (2, 20, 18, 2));
        assert_eq!(t.rtt.count(), 10);
        assert_eq!(t.lateness.count(), 18);
        assert_eq!(t.rtt.quantile(0.5), Some(Duration::from_micros(1024)));
        assert!(t.rtt.quantile(0.99).unwrap() >= Duration::from_millis(100));
    }

    #[test]
    fn config_is_coherent_for_fast_and_slow_intervals() {
        for ms in [4, 100, 1000, 20_000] {
            client_config("ws://127.0.0.1:1/keepalive", Duration::from_millis(ms)).unwrap();
        }
    }
}
