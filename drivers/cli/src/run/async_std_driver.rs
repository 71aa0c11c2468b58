//! `run --driver async-std`: the same session as the tokio arm (the same JSON lines, the same exit codes),
//! on async-std, with runtime-neutral pieces: `async-io` timers and `async-signal` for SIGINT/SIGTERM.

use std::time::{Duration, Instant};

use futures_lite::{future, StreamExt};
use genesys_keepalive::{Config, Notification};
use genesys_keepalive_async_std::{Options, RecvError, Report, Reports};

use super::{
    connect_failed, finish, lagged, save, stopped_stats, Checkpointer, Ending, Outcome, RunOptions,
};
use crate::checkpoint::CHECKPOINT_EVERY;
use crate::failure::Failure;
use crate::output;
use crate::plot::Recorder;

pub fn run(config: Config, opts: RunOptions) -> Result<Outcome, Failure> {
    async_std::task::block_on(session(config, opts))
}

/// SIGINT / SIGTERM. Listeners are installed by [`Shutdown::install`], so a later signal never terminates
/// the process outright.
struct Shutdown(async_signal::Signals);

impl Shutdown {
    fn install() -> std::io::Result<Self> {
        use async_signal::Signal;
        #[cfg(unix)]
        let signals = [Signal::Int, Signal::Term];
        #[cfg(not(unix))]
        let signals = [Signal::Int];
        async_signal::Signals::new(signals).map(Shutdown)
    }

    /// Resolves at the next SIGINT or SIGTERM, with the signal's name.
    async fn recv(&mut self) -> &'static str {
        loop {
            match self.0.next().await {
                Some(Ok(async_signal::Signal::Int)) => return "SIGINT",
                Some(Ok(async_signal::Signal::Term)) => return "SIGTERM",
                Some(_) => continue,
                None => future::pending::<()>().await,
            }
        }
    }
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
    future::or(all, async {
        async_io::Timer::after(Duration::from_secs(3)).await;
    })
    .await;
}

/// The next periodic stats tick (a missed tick is delayed, not burst).
async fn tick(next: &mut Option<Instant>, every: Option<Duration>) {
    match (next.as_mut(), every) {
        (Some(at), Some(every)) => {
            async_io::Timer::at(*at).await;
            *at = Instant::now() + every;
        }
        _ => future::pending().await,
    }
}

/// What woke the session loop.
enum Wake {
    Signal(&'static str),
    Report(Result<Report, RecvError>),
    Notification(Option<Notification>),
    Tick,
    Checkpoint,
}

async fn session(config: Config, opts: RunOptions) -> Result<Outcome, Failure> {
    let mut signals = Shutdown::install()
        .map_err(|e| Failure::internal(format!("cannot install signal handlers: {e}")))?;
    let started = Instant::now();
    let options = Options {
        seed: opts.seed,
        extra_root_certs: opts.extra_roots,
        resume_after: opts.state.as_ref().and_then(|s| s.resume_after),
        ..Options::default()
    };

    // The driver resolves once the first socket is open; until then only a stop or a signal can end it.
    let connect = async { Ok(genesys_keepalive_async_std::connect_with(config, options).await) };
    let (handle, mut notifications) =
        match future::or(connect, async { Err(signals.recv().await) }).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => return connect_failed(e),
            Err(sig) => {
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
    let every = opts.stats_interval;
    let mut next_tick = every.map(|d| Instant::now() + d);
    let mut checkpoints = Checkpointer::start(opts.state.as_ref());
    let checkpoint_every = checkpoints.as_ref().map(|_| CHECKPOINT_EVERY);
    let mut next_checkpoint = checkpoint_every.map(|d| Instant::now() + d);
    let mut reports_open = true;
    loop {
        // In priority order, like the tokio arm's biased select.
        let wake = future::or(
            async { Wake::Signal(signals.recv().await) },
            future::or(
                async {
                    if reports_open {
                        Wake::Report(reports.recv().await)
                    } else {
                        future::pending().await
                    }
                },
                future::or(
                    async { Wake::Notification(notifications.recv().await) },
                    future::or(
                        async {
                            tick(&mut next_tick, every).await;
                            Wake::Tick
                        },
                        async {
                            tick(&mut next_checkpoint, checkpoint_every).await;
                            Wake::Checkpoint
                        },
                    ),
                ),
            ),
        )
        .await;
        match wake {
            Wake::Signal(sig) => {
                tracing::info!("{sig}: shutting down gracefully (close 1000)");
                let stats = future::or(handle.shutdown(), async {
                    let sig = signals.recv().await;
                    tracing::warn!("{sig} again: not waiting for the close handshake");
                    handle.stats()
                })
                .await;
                drain(&mut reports).await;
                let end = Ending {
                    handle: &handle,
                    reports: &mut reports,
                    notes: &mut notifications,
                    checkpoints,
                    plot,
                };
                finish(end, &stats).await?;
                return Ok(Outcome::Shutdown);
            }
            Wake::Report(Ok(report)) => output::emit_report(report),
            Wake::Report(Err(RecvError::Lagged(n))) => lagged(n),
            Wake::Report(Err(RecvError::Closed)) => reports_open = false,
            Wake::Notification(Some(n)) => {
                output::emit_raw(&output::notification_line(&n.raw, &n.topic_name))
            }
            Wake::Notification(None) => break, // the machine stopped
            Wake::Tick => output::emit_stats(&handle.stats(), false),
            Wake::Checkpoint => {
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
