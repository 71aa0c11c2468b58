//! The fleet's run loop, the same for both drivers (only the runtime that carries it differs): the merged
//! reports and notifications of every connection as JSON lines, periodic stats, the stopped lines, and the
//! graceful shutdown on SIGINT/SIGTERM. The runtime gives the loop its signals and its timer: tokio's own
//! under tokio (async-io's, polled from a tokio thread, kept the loop spinning: one idle connection cost half
//! a core), `async-signal` and `async-io` under async-std.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{future, StreamExt};
use genesys_keepalive::{Notification, StopReason};
use genesys_keepalive_driver_common::{
    AddError, Fleet, FleetNotifications, FleetReports, Options, Report, Runtime,
};
use serde::Serialize;

use super::{FleetOptions, Member};
use crate::checkpoint::{Writer, CHECKPOINT_EVERY};
use crate::failure::{Failure, EXIT_INTERNAL, EXIT_SOME_STOPPED};
use crate::output::{self, json_line};

/// `fleet --driver tokio`: one current-thread tokio runtime carries every connection and the loop.
pub fn run_tokio(members: Vec<Member>, opts: FleetOptions) -> Result<u8, Failure> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::internal(format!("cannot start the tokio runtime: {e}")))?;
    let out = rt.block_on(async {
        let signals = crate::signals::Shutdown::install()
            .map(Shutdown::Tokio)
            .map_err(|e| Failure::internal(format!("cannot install signal handlers: {e}")))?;
        let fleet = genesys_keepalive_tokio::Fleet::with_options(options(&opts));
        let sleep: Sleep = |at| Box::pin(tokio::time::sleep_until(at.into()));
        session(&fleet, members, &opts, signals, sleep).await
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    out
}

/// `fleet --driver async-std`: the connections on async-std's executor, the loop on `block_on`.
pub fn run_async_std(members: Vec<Member>, opts: FleetOptions) -> Result<u8, Failure> {
    async_std::task::block_on(async {
        let signals = Shutdown::install_neutral()?;
        let fleet = genesys_keepalive_async_std::Fleet::with_options(options(&opts));
        let sleep: Sleep = |at| {
            Box::pin(async move {
                async_io::Timer::at(at).await;
            })
        };
        session(&fleet, members, &opts, signals, sleep).await
    })
}

fn options(opts: &FleetOptions) -> Options {
    Options {
        seed: opts.seed,
        extra_root_certs: opts.extra_roots.clone(),
        ..Options::default()
    }
}

/// A timer of the runtime that carries the loop.
type Sleep = fn(Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;

/// SIGINT / SIGTERM, installed before the first connection starts: tokio's under tokio, `async-signal`'s
/// otherwise.
enum Shutdown {
    Tokio(crate::signals::Shutdown),
    Neutral(async_signal::Signals),
}

impl Shutdown {
    fn install_neutral() -> Result<Self, Failure> {
        use async_signal::Signal;
        #[cfg(unix)]
        let signals = [Signal::Int, Signal::Term];
        #[cfg(not(unix))]
        let signals = [Signal::Int];
        async_signal::Signals::new(signals)
            .map(Shutdown::Neutral)
            .map_err(|e| Failure::internal(format!("cannot install signal handlers: {e}")))
    }

    async fn recv(&mut self) -> &'static str {
        let signals = match self {
            Shutdown::Tokio(s) => return s.recv().await,
            Shutdown::Neutral(s) => s,
        };
        loop {
            match signals.next().await {
                Some(Ok(async_signal::Signal::Int)) => return "SIGINT",
                Some(Ok(async_signal::Signal::Term)) => return "SIGTERM",
                Some(_) => continue,
                None => future::pending::<()>().await,
            }
        }
    }
}

#[derive(Serialize)]
struct StoppedLine<'a> {
    connection: &'a str,
    reason: String,
    exit_code: u8,
}

/// Which connections still run, which stopped on their own (in order), and the output not yet written.
#[derive(Default)]
struct Book {
    running: BTreeMap<Arc<str>, ()>,
    stopped: Vec<(Arc<str>, u8, String)>,
    out: Vec<u8>,
}

/// Lines are written to stdout in one `write` per batch (what was ready at once) rather than one per line:
/// a fleet prints a line per heartbeat per connection.
const OUT_BATCH: usize = 64 * 1024;
/// Items read without waiting after a wake, before the batch is written.
const READY_BUDGET: usize = 512;
/// Connections started at once: each start is a TCP connection, maybe TLS, and a token request on an
/// HTTP/1 connection of the shared client, which keeps as many idle as a wave needs (`IDLE_PER_HOST`), so
/// that the next wave reuses them; a fleet starts the next wave when a wave's sockets are open or have
/// stopped. Measured at 1,000 organisations (BENCHMARKS.md, "Fleet"):
/// waves of 256 left 1.65x bench's RSS per connection (the heap's peak of 256 HTTP connections' buffers stays
/// in the allocator), 64 left 1.21x, 16 1.14x; 16 also keeps a fleet's start gentle on the token endpoint.
const CONNECT_WAVE: usize = 16;
const _: () = assert!(CONNECT_WAVE <= genesys_keepalive_driver_common::http::IDLE_PER_HOST);

impl Book {
    fn all_stopped(&self) -> bool {
        self.running.is_empty() && !self.stopped.is_empty()
    }

    fn line(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.end_line();
    }

    /// `name`'s report, unless it is the stop (see [`output::push_report_line`]); `false` for the stop.
    fn report_line(&mut self, name: &str, report: &Report) -> bool {
        let pushed = output::push_report_line(&mut self.out, name, report);
        if pushed {
            self.end_line();
        }
        pushed
    }

    /// `name`'s notification (see [`output::push_notification_line`]).
    fn notification_line(&mut self, name: &str, n: &Notification) {
        output::push_notification_line(&mut self.out, Some(name), &n.raw, &n.topic_name);
        self.end_line();
    }

    /// `name`'s stats line (see [`output::push_stats_line`]).
    fn stats_line(
        &mut self,
        name: &str,
        timestamp: &str,
        stats: &genesys_keepalive::Stats,
        is_final: bool,
    ) {
        output::push_stats_line(&mut self.out, name, timestamp, stats, is_final);
        self.end_line();
    }

    fn end_line(&mut self) {
        self.out.push(b'\n');
        if self.out.len() >= OUT_BATCH {
            self.flush();
        }
    }

    /// Writes and flushes the batch. A closed stdout is ignored (the fleet goes on).
    fn flush(&mut self) {
        use std::io::Write;
        if self.out.is_empty() {
            return;
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(&self.out);
        let _ = stdout.flush();
        self.out.clear();
    }
}

/// What woke the loop.
enum Wake {
    Signal(&'static str),
    Report(Option<(Arc<str>, Report)>),
    Note(Option<(Arc<str>, Notification)>),
    Tick,
    Checkpoint,
}

/// The session, then (with `--state-dir`) the last checkpoint of every connection, once everything they
/// delivered and reported is printed.
async fn session<R: Runtime + Clone>(
    fleet: &Fleet<R>,
    members: Vec<Member>,
    opts: &FleetOptions,
    signals: Shutdown,
    sleep: Sleep,
) -> Result<u8, Failure> {
    let mut writer = opts.state.as_ref().map(|d| d.writer());
    let out = run_session(fleet, members, opts, signals, sleep, &mut writer).await;
    if let Some(mut w) = writer {
        for (name, since) in checkpoints(fleet) {
            w.update(&name, since);
        }
        w.finish();
    }
    out
}

/// Every member's checkpoint now (see `Handle::receiving_since`).
fn checkpoints<R: Runtime + Clone>(
    fleet: &Fleet<R>,
) -> Vec<(Arc<str>, Option<std::time::SystemTime>)> {
    fleet
        .names()
        .into_iter()
        .filter_map(|n| fleet.handle(&n).map(|h| (n, h.receiving_since())))
        .collect()
}

async fn run_session<R: Runtime + Clone>(
    fleet: &Fleet<R>,
    members: Vec<Member>,
    opts: &FleetOptions,
    mut signals: Shutdown,
    sleep: Sleep,
    writer: &mut Option<Writer>,
) -> Result<u8, Failure> {
    let internal = || Failure::new(EXIT_INTERNAL, "the fleet's merged streams were taken twice");
    let mut notes = fleet.notifications().ok_or_else(internal)?;
    let mut reports = fleet.reports().ok_or_else(internal)?;
    let mut book = Book::default();
    // Connections start in waves of CONNECT_WAVE, each wave once its sockets are open (or stopped).
    let mut pending = members.into_iter();
    loop {
        let mut wave = Vec::new();
        for m in pending.by_ref().take(CONNECT_WAVE) {
            let h = fleet.add_resuming(&m.name, m.config, m.resume_after);
            wave.push(h.map_err(add_failed)?);
            book.running.insert(Arc::from(m.name.as_str()), ());
        }
        if wave.is_empty() {
            break;
        }
        let opened = async {
            for h in &wave {
                let _ = h.opened().await;
            }
            None
        };
        if let Some(sig) = future::or(opened, async { Some(signals.recv().await) }).await {
            tracing::info!("{sig} while connecting: closing every connection gracefully");
            return shut_down(fleet, &mut signals, &mut reports, &mut notes, &mut book).await;
        }
        if let Some(failure) = drain(&mut reports, &mut notes, &mut book, usize::MAX).await {
            book.flush();
            return Err(failure);
        }
        book.flush();
    }
    // The members' buffer (each entry held a whole configuration) is not needed once every one has
    // started: freed here, not when the session ends.
    drop(pending);
    if book.running.is_empty() {
        tracing::warn!("no connection to run (is this shard empty?); waiting for SIGINT/SIGTERM");
    }
    let every = opts.stats_interval;
    // One timer per stats period, kept across the loop's turns (not made anew on every wake).
    let mut ticker = every.map(|d| sleep(Instant::now() + d));
    let mut checkpoint_timer = writer
        .as_ref()
        .map(|_| sleep(Instant::now() + CHECKPOINT_EVERY));
    loop {
        let wake = future::or(async { Wake::Signal(signals.recv().await) }, async {
            future::or(async { Wake::Report(reports.recv().await) }, async {
                future::or(async { Wake::Note(notes.recv().await) }, async {
                    future::or(
                        async {
                            match ticker.as_mut() {
                                Some(t) => t.as_mut().await,
                                None => future::pending().await,
                            }
                            Wake::Tick
                        },
                        async {
                            match checkpoint_timer.as_mut() {
                                Some(t) => t.as_mut().await,
                                None => future::pending().await,
                            }
                            Wake::Checkpoint
                        },
                    )
                    .await
                })
                .await
            })
            .await
        })
        .await;
        match wake {
            Wake::Signal(sig) => {
                tracing::info!("{sig}: closing every connection gracefully (close 1000)");
                return shut_down(fleet, &mut signals, &mut reports, &mut notes, &mut book).await;
            }
            Wake::Report(Some((name, report))) => {
                if let Some(failure) = on_report(&mut book, &name, report) {
                    drain(&mut reports, &mut notes, &mut book, usize::MAX).await;
                    book.flush();
                    return Err(failure);
                }
            }
            Wake::Note(Some((name, n))) => book.notification_line(&name, &n),
            // The merged streams end only once the fleet is gone, which it is not while this runs.
            Wake::Report(None) | Wake::Note(None) => future::pending::<()>().await,
            Wake::Checkpoint => {
                checkpoint_timer = Some(sleep(Instant::now() + CHECKPOINT_EVERY));
                // Read before printing what is queued: what a crash then loses lies after each value.
                let values = checkpoints(fleet);
                let failure = drain(&mut reports, &mut notes, &mut book, usize::MAX).await;
                book.flush();
                if let Some(w) = writer.as_mut() {
                    for (name, since) in values {
                        w.update(&name, since);
                    }
                }
                if let Some(failure) = failure {
                    return Err(failure);
                }
            }
            Wake::Tick => {
                ticker = every.map(|d| sleep(Instant::now() + d));
                let names: Vec<Arc<str>> = book.running.keys().cloned().collect();
                let now = output::now_iso8601();
                for name in names {
                    if let Some(stats) = fleet.stats(&name) {
                        book.stats_line(&name, &now, &stats, false);
                    }
                }
            }
        }
        // What else is ready goes into the same batch; then one write.
        if let Some(failure) = drain(&mut reports, &mut notes, &mut book, READY_BUDGET).await {
            drain(&mut reports, &mut notes, &mut book, usize::MAX).await;
            book.flush();
            return Err(failure);
        }
        book.flush();
    }
}

fn add_failed(e: AddError) -> Failure {
    match e {
        AddError::Duplicate(name) => {
            Failure::config(format!("connection `{name}`: field `name`: duplicate name"))
        }
        AddError::Start { name, error } => Failure::config(format!(
            "connection `{name}`: {error}; check the fleet file and --ca-cert"
        )),
    }
}

/// Prints `report`; a stop on the connection's own account prints the stopped line and, when it was the
/// last running one, returns the fleet's failure (the first stopped connection's code).
fn on_report(book: &mut Book, name: &Arc<str>, report: Report) -> Option<Failure> {
    if book.report_line(name, &report) {
        return None;
    }
    match &report {
        Report::Stopped(StopReason::Shutdown) => None,
        Report::Stopped(reason) => on_stopped(book, name, reason),
        _ => None,
    }
}

fn on_stopped(book: &mut Book, name: &Arc<str>, reason: &StopReason) -> Option<Failure> {
    let code = Failure::from_stop(reason).map_or(EXIT_INTERNAL, |f| f.code);
    let line = json_line(
        "stopped",
        &StoppedLine {
            connection: name,
            reason: reason.to_string(),
            exit_code: code,
        },
    );
    book.line(&line);
    tracing::warn!(connection = %name, %reason, "a connection stopped on its own; the others go on");
    if book.running.remove(name).is_some() {
        book.stopped.push((name.clone(), code, reason.to_string()));
    }
    if !book.all_stopped() {
        return None;
    }
    let (first, code, reason) = &book.stopped[0];
    Some(Failure::new(
        *code,
        format!("every connection stopped on its own; the first was `{first}`: {reason}"),
    ))
}

/// Prints up to `budget` reports and as many notifications already queued, without waiting for more;
/// returns the fleet's failure if the last running connection stopped meanwhile.
async fn drain(
    reports: &mut FleetReports,
    notes: &mut FleetNotifications,
    book: &mut Book,
    budget: usize,
) -> Option<Failure> {
    let mut failure = None;
    for _ in 0..budget {
        let Some(Some((name, report))) = future::poll_once(reports.recv()).await else {
            break;
        };
        if let Some(f) = on_report(book, &name, report) {
            failure.get_or_insert(f);
        }
    }
    for _ in 0..budget {
        let Some(Some((name, n))) = future::poll_once(notes.recv()).await else {
            break;
        };
        book.notification_line(&name, &n);
    }
    failure
}

/// SIGINT/SIGTERM: every connection closes gracefully (a second signal stops waiting), then a final stats
/// line per connection still running; 0 if they all were, 5 if any had stopped on its own.
async fn shut_down<R: Runtime + Clone>(
    fleet: &Fleet<R>,
    signals: &mut Shutdown,
    reports: &mut FleetReports,
    notes: &mut FleetNotifications,
    book: &mut Book,
) -> Result<u8, Failure> {
    let finals = future::or(async { Some(fleet.shutdown_all().await) }, async {
        let sig = signals.recv().await;
        tracing::warn!("{sig} again: not waiting for the close handshakes");
        None
    })
    .await;
    let finals = finals.unwrap_or_else(|| {
        fleet
            .names()
            .into_iter()
            .filter_map(|n| fleet.stats(&n).map(|s| (n, s)))
            .collect()
    });
    drain(reports, notes, book, usize::MAX).await;
    let now = output::now_iso8601();
    for (name, stats) in finals {
        if book.running.contains_key(&name) {
            book.stats_line(&name, &now, &stats, true);
        }
    }
    book.flush();
    Ok(if book.stopped.is_empty() {
        0
    } else {
        EXIT_SOME_STOPPED
    })
}
