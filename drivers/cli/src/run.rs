//! `genesys-keepalive run`: one keep-alive connection, everything it reports as JSON lines on stdout.

use std::path::Path;
use std::time::{Duration, SystemTime};

use genesys_keepalive::{Config, State, Stats, StopReason};
use genesys_keepalive_driver_common::{
    Error, Handle, Notifications, Options, Reports, TryRecvError,
};
use rustls_pki_types::CertificateDer;

use crate::checkpoint::{StateDir, Writer};
use crate::failure::Failure;
use crate::output;
use crate::plot::Recorder;
use crate::settings::{self, DriverKind, ProcessEnv, RunArgs};

/// What a driver run ended with (a terminal failure before that is a [`Failure`]).
#[derive(Debug)]
pub enum Outcome {
    /// SIGINT/SIGTERM: closed gracefully.
    Shutdown,
    /// The machine stopped by itself.
    Stopped(StopReason),
}

/// Everything a driver needs besides the core's [`Config`].
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub seed: Option<u64>,
    pub extra_roots: Vec<CertificateDer<'static>>,
    /// `None`: only the final stats line.
    pub stats_interval: Option<Duration>,
    /// `--plot FILE`: the SVG written at exit.
    pub plot: Option<std::path::PathBuf>,
    /// `--state-dir DIR`: the connection's checkpoint.
    pub state: Option<RunState>,
}

/// `--state-dir`: where the connection's checkpoint lives and what the last process left in it.
#[derive(Debug, Clone)]
pub struct RunState {
    pub dir: StateDir,
    /// The connection's name (its file is `<name>.json`).
    pub name: String,
    /// The checkpoint found at start: the restart is reported as a gap from there.
    pub resume_after: Option<SystemTime>,
}

/// A driver: runs the connection until a signal or a stop, printing JSON lines.
type DriverFn = fn(Config, RunOptions) -> Result<Outcome, Failure>;

fn driver(kind: DriverKind) -> Result<DriverFn, Failure> {
    match kind {
        DriverKind::Tokio => Ok(tokio_driver::run),
        DriverKind::AsyncStd => Ok(async_std_driver::run),
    }
}

pub fn main(args: RunArgs) -> Result<u8, Failure> {
    let config = settings::build_config(&args, &ProcessEnv)?;
    // Checked before anything connects: a bad DIR or checkpoint is exit 2.
    let state = match &args.state_dir {
        Some(dir) => {
            let dir = StateDir::open(dir)?;
            let name = Options::default().name;
            let resume_after = dir.read(&name)?;
            Some(RunState {
                dir,
                name,
                resume_after,
            })
        }
        None => None,
    };
    let extra_roots = match &args.ca_cert {
        Some(path) => load_roots(path)?,
        None => Vec::new(),
    };
    if let Some(addr) = args.metrics_addr {
        crate::metrics_export::serve(addr)?;
    }
    let options = RunOptions {
        seed: args.seed,
        extra_roots,
        stats_interval: (args.stats_interval_ms > 0)
            .then(|| Duration::from_millis(args.stats_interval_ms)),
        plot: args.plot.clone(),
        state,
    };
    let run = driver(args.driver)?;
    match run(config, options)? {
        Outcome::Shutdown => Ok(0),
        Outcome::Stopped(reason) => match Failure::from_stop(&reason) {
            Some(failure) => Err(failure),
            None => Ok(0),
        },
    }
}

/// What a failed `connect` means for the run (the same for both drivers, whose `Error` is one type).
fn connect_failed(e: Error) -> Result<Outcome, Failure> {
    match e {
        Error::Stopped(reason) => Ok(Outcome::Stopped(reason)),
        Error::Config(e) => Err(Failure::config(format!(
            "{e}. Fix the flags, the --config file or the environment"
        ))),
        Error::Tls(e) => Err(Failure::config(format!(
            "TLS setup failed: {e}; check --ca-cert"
        ))),
        e => Err(Failure::internal(e.to_string())),
    }
}

/// `--state-dir` while the connection runs: its checkpoint, handed to a writer thread.
pub struct Checkpointer {
    writer: Writer,
    name: String,
}

impl Checkpointer {
    fn start(state: Option<&RunState>) -> Option<Checkpointer> {
        state.map(|s| Checkpointer {
            writer: s.dir.writer(),
            name: s.name.clone(),
        })
    }

    /// The connection's checkpoint, read *before* what is queued is printed: a notification delivered
    /// before that value is then on stdout, and whatever a crash loses lies after it.
    async fn save(&mut self, handle: &Handle, reports: &mut Reports, notes: &mut Notifications) {
        let since = handle.receiving_since();
        print_queued(reports, notes).await;
        self.writer.update(&self.name, since);
    }

    /// The last checkpoint, once everything the connection delivered and reported is printed.
    fn finish(mut self, handle: &Handle) {
        self.writer.update(&self.name, handle.receiving_since());
        self.writer.finish();
    }
}

/// One checkpoint (if `--state-dir` was given).
async fn save(
    cp: &mut Option<Checkpointer>,
    handle: &Handle,
    reports: &mut Reports,
    notes: &mut Notifications,
) {
    if let Some(cp) = cp {
        cp.save(handle, reports, notes).await;
    }
}

/// Reports dropped because stdout did not keep up.
fn lagged(n: u64) {
    tracing::warn!(
        missed = n,
        "stdout is too slow: {n} audit/alert/state reports were dropped"
    );
}

/// Prints the reports and notifications already queued, without waiting for more.
async fn print_queued(reports: &mut Reports, notes: &mut Notifications) {
    loop {
        match reports.try_recv() {
            Ok(r) => output::emit_report(r),
            Err(TryRecvError::Lagged(n)) => lagged(n),
            Err(TryRecvError::Empty | TryRecvError::Closed) => break,
        }
    }
    while let Some(Some(n)) = futures_lite::future::poll_once(notes.recv()).await {
        output::emit_raw(&output::notification_line(&n.raw, &n.topic_name));
    }
}

/// What a run that had connected leaves to its end: the streams still to print, the checkpoint, the plot.
struct Ending<'a> {
    handle: &'a Handle,
    reports: &'a mut Reports,
    notes: &'a mut Notifications,
    checkpoints: Option<Checkpointer>,
    plot: Option<Recorder>,
}

/// The end of a run that had connected (its reports drained by the caller's runtime): what is still
/// queued is printed, then the final stats line, then the last checkpoint, then the plot.
async fn finish(end: Ending<'_>, stats: &Stats) -> Result<(), Failure> {
    print_queued(end.reports, end.notes).await;
    output::emit_stats(stats, true);
    if let Some(cp) = end.checkpoints {
        cp.finish(end.handle);
    }
    finish_plot(end.plot)
}

/// The final stats line of a run interrupted before the first socket opened.
fn stopped_stats() -> Stats {
    Stats {
        state: State::Stopped,
        ..Stats::default()
    }
}

/// The certificates of a PEM file (one or more `CERTIFICATE` blocks), for `--ca-cert`; exit 2 when it
/// cannot be read or has none.
pub(crate) fn load_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, Failure> {
    use rustls_pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| {
        Failure::config(format!(
            "cannot read a PEM certificate from {}: {e}; --ca-cert takes a PEM file",
            path.display()
        ))
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| bad(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    if certs.is_empty() {
        return Err(bad(&"no CERTIFICATE block"));
    }
    Ok(certs)
}

mod async_std_driver;

mod tokio_driver {
    use std::time::Duration;

    use genesys_keepalive::Config;
    use genesys_keepalive_tokio::Options;
    use genesys_keepalive_tokio::{RecvError, Reports};
    use tokio::time::{Instant, Interval};

    use super::{
        connect_failed, finish, lagged, save, stopped_stats, Checkpointer, Ending, Outcome,
        RunOptions,
    };
    use crate::checkpoint::CHECKPOINT_EVERY;
    use crate::failure::Failure;
    use crate::output;
    use crate::plot::Recorder;
    use crate::signals::Shutdown;

    pub fn run(config: Config, opts: RunOptions) -> Result<Outcome, Failure> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| Failure::internal(format!("cannot start the tokio runtime: {e}")))?;
        let outcome = rt.block_on(session(config, opts));
        rt.shutdown_timeout(Duration::from_secs(1));
        outcome
    }

    /// Prints every report still queued, until the task has ended (bounded).
    async fn drain(reports: &mut Reports) {
        let all = async {
            loop {
                match reports.recv().await {
                    Ok(r) => output::emit_report(r),
                    Err(RecvError::Lagged(n)) => lagged(n),
                    Err(RecvError::Closed) => break,
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), all).await;
    }

    async fn tick(t: &mut Option<Interval>) {
        match t {
            Some(t) => {
                t.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    async fn session(config: Config, opts: RunOptions) -> Result<Outcome, Failure> {
        let mut signals = Shutdown::install()
            .map_err(|e| Failure::internal(format!("cannot install signal handlers: {e}")))?;
        let started = std::time::Instant::now();
        let options = Options {
            seed: opts.seed,
            extra_root_certs: opts.extra_roots,
            resume_after: opts.state.as_ref().and_then(|s| s.resume_after),
            ..Options::default()
        };

        // The driver resolves once the first socket is open; until then only a stop or a signal can end it
        // (and the checkpoint, if any, keeps the older start it holds).
        let connect = genesys_keepalive_tokio::connect_with(config, options);
        tokio::pin!(connect);
        let (handle, mut notifications) = tokio::select! {
            r = &mut connect => match r {
                Ok(v) => v,
                Err(e) => return connect_failed(e),
            },
            sig = signals.recv() => {
                tracing::info!("{sig} while connecting: stopping");
                // Dropping the connect future shuts the task down gracefully.
                output::emit_stats(&stopped_stats(), true);
                return Ok(Outcome::Shutdown);
            }
        };

        let mut reports = handle.reports();
        let plot = opts
            .plot
            .map(|path| Recorder::start(handle.clone(), started, path));
        let mut ticker = opts.stats_interval.map(|d| {
            let mut t = tokio::time::interval_at(Instant::now() + d, d);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut checkpoints = Checkpointer::start(opts.state.as_ref());
        let mut checkpoint_ticker = checkpoints.as_ref().map(|_| {
            let mut t = tokio::time::interval(CHECKPOINT_EVERY);
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            t
        });
        let mut reports_open = true;
        loop {
            tokio::select! {
                biased;
                sig = signals.recv() => {
                    tracing::info!("{sig}: shutting down gracefully (close 1000)");
                    let stats = tokio::select! {
                        s = handle.shutdown() => s,
                        sig = signals.recv() => {
                            tracing::warn!("{sig} again: not waiting for the close handshake");
                            handle.stats()
                        }
                    };
                    drain(&mut reports).await;
                    let end = Ending { handle: &handle, reports: &mut reports, notes: &mut notifications, checkpoints, plot };
                    finish(end, &stats).await?;
                    return Ok(Outcome::Shutdown);
                }
                r = reports.recv(), if reports_open => match r {
                    Ok(report) => output::emit_report(report),
                    Err(RecvError::Lagged(n)) => lagged(n),
                    Err(RecvError::Closed) => reports_open = false,
                },
                n = notifications.recv() => match n {
                    Some(n) => output::emit_raw(&output::notification_line(&n.raw, &n.topic_name)),
                    None => break, // the machine stopped
                },
                _ = tick(&mut ticker) => output::emit_stats(&handle.stats(), false),
                _ = tick(&mut checkpoint_ticker) => {
                    save(&mut checkpoints, &handle, &mut reports, &mut notifications).await
                }
            }
        }
        let reason = handle.stopped().await;
        let stats = handle.shutdown().await; // waits for the task to end
        drain(&mut reports).await;
        let end = Ending {
            handle: &handle,
            reports: &mut reports,
            notes: &mut notifications,
            checkpoints,
            plot,
        };
        finish(end, &stats).await?;
        Ok(Outcome::Stopped(reason))
    }
}

/// Writes `--plot`'s SVG, if asked for.
fn finish_plot(plot: Option<Recorder>) -> Result<(), Failure> {
    match plot {
        Some(p) => p.finish("genesys-keepalive run: RTT per heartbeat, state, events"),
        None => Ok(()),
    }
}
