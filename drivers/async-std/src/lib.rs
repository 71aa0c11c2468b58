//! # genesys-keepalive-async-std
//!
//! The async-std driver for [`genesys_keepalive`], which also runs under smol: it performs the sans-IO
//! core's actions with [async-tungstenite](async_tungstenite) (WebSockets) and [reqwest] (REST), both on
//! rustls with the aws-lc-rs provider and certificate verification on, and reports what happened as events
//! stamped with `Instant::now()`. Every keep-alive decision (heartbeats, dead peers, backoff, tokens,
//! rollover) is the core's; this crate only moves bytes and sleeps.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! use genesys_keepalive::{Config, Secret};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::builder()
//!     .credentials("my-client-id", Secret::new("my-secret"))
//!     .region("eu-west-1")?
//!     .topic("v2.users.0000-1111.presence")
//!     .build()?;
//! let (handle, mut notifications) = genesys_keepalive_async_std::connect(config).await?;
//! while let Some(n) = notifications.next().await {
//!     println!("{}: {}", n.topic_name, n.raw);
//!     if handle.stats().notifications_delivered >= 10 {
//!         break;
//!     }
//! }
//! let stats = handle.shutdown().await; // close 1000 "Graceful shutdown", then the task ends
//! println!("{} heartbeats sent", stats.heartbeats_sent);
//! # Ok(()) }
//! # async_std::task::block_on(async { run().await.unwrap() });
//! ```
//!
//! ## How it runs
//! One task owns the [`KeepAliveMachine`]. Inputs reach it on one
//! channel from the socket tasks, the HTTP tasks and the [`Handle`]; after every input it drains and performs
//! the machine's actions, then sleeps until the machine's next deadline (and checks the clock when it wakes).
//! Each socket has one task in which a reader polls the read half all the time and exactly one writer
//! writes, side by side.
//!
//! Every audit entry and alert is also a [`tracing`] event with target `genesys_keepalive` (audits at
//! `INFO`, successful sends at `DEBUG`, alerts at `WARN`); the core keeps credentials out of them.
//!
//! ## async-std and smol
//! async-std is discontinued upstream in favour of smol, and both are facades over the same crates. The
//! driver is written against those crates, not against either facade: TCP from `async-net`, timers from
//! `async-io`, TLS from `futures-rustls`, WebSockets from `async-tungstenite` over `futures-io` streams,
//! channels from `async-channel`/`async-broadcast`. So the same code runs under both:
//!
//! - **async-std**: `connect(config)` as above, from `async_std::task::block_on` or `#[async_std::main]`.
//!   Tasks are spawned with [`Spawner::global`], the executor behind `async_std::task::spawn`.
//! - **smol**: the same call from `smol::block_on`. The default spawner works there too (its threads drive
//!   the tasks); to keep everything on smol's executor, pass
//!   `Options::default().spawner(Spawner::new(|task| smol::spawn(task).detach()))` to [`connect_with`]:
//!
//! ```no_run
//! use genesys_keepalive_async_std::{connect_with, Options, Spawner};
//! # fn config() -> genesys_keepalive::Config { unimplemented!() }
//!
//! smol::block_on(async {
//!     let options = Options::default().spawner(Spawner::new(|task| smol::spawn(task).detach()));
//!     let (handle, mut notifications) = connect_with(config(), options).await?;
//!     while let Some(n) = notifications.recv().await {
//!         println!("{}: {}", n.topic_name, n.raw);
//!     }
//!     println!("stopped: {}", handle.stopped().await);
//!     Ok::<(), genesys_keepalive_async_std::Error>(())
//! })?;
//! # Ok::<(), genesys_keepalive_async_std::Error>(())
//! ```
//!
//! reqwest needs a tokio reactor; the driver lends it one through `async-compat` (one extra thread, started
//! with the first HTTP request; see the crate's README for the measured cost).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod http;
mod rt;
mod socket;
mod task;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use async_channel::{Receiver, Sender};
use futures_core::Stream;
use genesys_keepalive::{Config, Notification, State, Stats, StopReason};
use genesys_keepalive_driver_common::Setup;

pub use genesys_keepalive;
pub use genesys_keepalive_driver_common::{Error, Report};
pub use rt::{Spawner, Task, Watch};
pub use rustls_pki_types::CertificateDer;

/// How many inputs may wait for the machine task before socket readers feel backpressure.
const INPUT_CAPACITY: usize = 1024;

/// Driver options beyond the core's [`Config`].
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed for the machine's PRNG (jitter, connection ids). `None`: drawn from the OS and the clock.
    /// The same seed and the same inputs give the same decisions.
    pub seed: Option<u64>,
    /// Root certificates trusted in addition to the Mozilla roots (webpki-roots), e.g. a test CA.
    pub extra_root_certs: Vec<CertificateDer<'static>>,
    /// Capacity of the [`Reports`] channel (default 1024). A receiver that falls further behind loses the
    /// oldest reports and sees [`RecvError::Lagged`]; the machine never waits for it.
    pub reports_capacity: usize,
    /// Where the driver's tasks run (default: [`Spawner::global`], async-std's executor).
    pub spawner: Spawner,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: None,
            extra_root_certs: Vec::new(),
            reports_capacity: 1024,
            spawner: Spawner::global(),
        }
    }
}

impl Options {
    /// Sets [`Options::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Adds one trusted root certificate (DER).
    pub fn trust_root(mut self, der: impl Into<CertificateDer<'static>>) -> Self {
        self.extra_root_certs.push(der.into());
        self
    }

    /// Sets [`Options::reports_capacity`].
    pub fn reports_capacity(mut self, capacity: usize) -> Self {
        self.reports_capacity = capacity;
        self
    }

    /// Sets [`Options::spawner`], e.g. `Spawner::new(|task| smol::spawn(task).detach())`.
    pub fn spawner(mut self, spawner: Spawner) -> Self {
        self.spawner = spawner;
        self
    }
}

/// Connects with default [`Options`]; see [`connect_with`].
pub async fn connect(config: Config) -> Result<(Handle, Notifications), Error> {
    connect_with(config, Options::default()).await
}

/// Starts the keep-alive task and resolves once the first socket has opened, with a [`Handle`] and the
/// [`Notifications`] stream. Fails with [`Error::Config`] for a configuration the core refuses, or with
/// [`Error::Stopped`] when the machine stops first (bad credentials, a 403, reconnect attempts exhausted).
///
/// Needs no particular runtime: call it from async-std, smol, or any executor (the tasks run on
/// [`Options::spawner`]). When every clone of the returned [`Handle`] has been dropped the task shuts down
/// gracefully, as if [`Handle::shutdown`] had been called; so does dropping this future before it resolves.
pub async fn connect_with(
    config: Config,
    options: Options,
) -> Result<(Handle, Notifications), Error> {
    let Setup {
        machine,
        tls,
        client,
        max_inbound_bytes,
        allow_insecure,
    } = genesys_keepalive_driver_common::setup(
        config,
        &options.extra_root_certs,
        options.seed,
        http::USER_AGENT,
    )?;
    let ctx = Arc::new(socket::SocketContext {
        tls: futures_rustls::TlsConnector::from(tls),
        max_inbound_bytes,
        allow_insecure,
    });

    let (input_tx, input_rx) = async_channel::bounded(INPUT_CAPACITY);
    let (notes_tx, notes_rx) = async_channel::unbounded();
    let (mut reports_tx, first_reports) =
        async_broadcast::broadcast(options.reports_capacity.max(1));
    reports_tx.set_overflow(true);
    let (stats_tx, stats_rx) = rt::watch(machine.stats());
    let (state_tx, state_rx) = rt::watch(machine.state());
    let (stopped_tx, stopped_rx) = rt::watch(None);
    let (finished_tx, finished_rx) = rt::watch(false);
    let (ready_tx, ready_rx) = async_channel::bounded(1);
    let (alive_tx, alive_rx) = async_channel::bounded(1);

    let handle = Handle {
        inner: Arc::new(Inner {
            tx: input_tx.clone(),
            stats: stats_rx,
            state: state_rx,
            stopped: stopped_rx,
            finished: finished_rx,
            reports: first_reports.clone().deactivate(),
            first_reports: Mutex::new(Some(first_reports)),
            _alive: alive_tx,
        }),
    };
    let driver = task::Driver::new(
        machine,
        input_rx,
        input_tx,
        ctx,
        client,
        options.spawner.clone(),
        task::Outlets {
            notifications: Some(notes_tx),
            reports: reports_tx,
            stats: stats_tx,
            state: state_tx,
            stopped: stopped_tx,
            finished: finished_tx,
            ready: Some(ready_tx),
        },
    );
    options.spawner.spawn(driver.run(alive_rx));
    match ready_rx.recv().await {
        Ok(Ok(())) => Ok((
            handle,
            Notifications {
                rx: Box::pin(notes_rx),
            },
        )),
        Ok(Err(reason)) => Err(Error::Stopped(reason)),
        Err(_) => Err(Error::Gone),
    }
}

struct Inner {
    tx: Sender<task::Input>,
    stats: Watch<Stats>,
    state: Watch<State>,
    stopped: Watch<Option<StopReason>>,
    finished: Watch<bool>,
    /// Makes fresh report receivers; keeps the channel open while a handle lives.
    reports: async_broadcast::InactiveReceiver<Report>,
    first_reports: Mutex<Option<async_broadcast::Receiver<Report>>>,
    /// Dropped with the last clone: the task then shuts down gracefully.
    _alive: Sender<()>,
}

/// Controls a running keep-alive task and views its state. Cheap to clone; when the last clone is dropped
/// the task shuts down gracefully.
#[derive(Clone)]
pub struct Handle {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl Handle {
    async fn send(&self, input: task::Input) -> Result<(), Error> {
        if let Some(reason) = self.inner.stopped.peek() {
            return Err(Error::Stopped(reason));
        }
        self.inner.tx.send(input).await.map_err(|_| Error::Gone)
    }

    /// Adds topics to the subscription (notifications profile); the machine subscribes them on the current
    /// channel and on every later one.
    pub async fn subscribe<I, T>(&self, topics: I) -> Result<(), Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        let topics = topics.into_iter().map(Into::into).collect();
        self.send(task::Input::Subscribe(topics)).await
    }

    /// Tells the machine the access token is no longer good (e.g. the application saw a 401 elsewhere): it
    /// refreshes it now.
    pub async fn token_expired(&self) -> Result<(), Error> {
        self.send(task::Input::TokenExpired).await
    }

    /// The connection state now.
    pub fn state(&self) -> State {
        self.inner.state.peek()
    }

    /// The machine's counters and gauges, as of the last input it handled.
    pub fn stats(&self) -> Stats {
        self.inner.stats.peek()
    }

    /// A [`Watch`] of the state; [`Watch::changed`] wakes on every transition.
    pub fn watch_state(&self) -> Watch<State> {
        self.inner.state.clone()
    }

    /// A [`Watch`] of the stats, updated after every input.
    pub fn watch_stats(&self) -> Watch<Stats> {
        self.inner.stats.clone()
    }

    /// A receiver of [`Report`]s. The first call returns the receiver created at start, which holds every
    /// report since then (up to [`Options::reports_capacity`]); every later call returns a fresh receiver
    /// that sees reports from that moment on. Once the task has ended, the receiver is closed.
    pub fn reports(&self) -> Reports {
        if let Some(first) = self
            .inner
            .first_reports
            .lock()
            .ok()
            .and_then(|mut f| f.take())
        {
            return Reports { rx: first };
        }
        Reports {
            rx: self.inner.reports.activate_cloned(),
        }
    }

    /// Why the machine stopped, if it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.inner.stopped.peek()
    }

    /// Shuts down gracefully: the machine closes the socket with 1000 "Graceful shutdown"; this waits until
    /// the close frame has been sent and answered (or the core's linger has passed) and the task has ended,
    /// then returns the final stats. Calling it again, or after the machine stopped, just waits for the end.
    pub async fn shutdown(&self) -> Stats {
        let _ = self.inner.tx.send(task::Input::Shutdown).await;
        let mut finished = self.inner.finished.clone();
        let _ = finished.wait_for(|f| *f).await;
        self.stats()
    }

    /// Waits until the machine stops and returns why. (Should the task itself die, which is a bug, this
    /// returns [`StopReason::Shutdown`].)
    pub async fn stopped(&self) -> StopReason {
        let mut stopped = self.inner.stopped.clone();
        stopped
            .wait_for(|r| r.is_some())
            .await
            .flatten()
            .unwrap_or(StopReason::Shutdown)
    }
}

/// The notifications the machine delivers, duplicates already dropped, in order. A
/// [`futures_core::Stream`]; it ends when the machine stops. Unbounded: the keep-alive task never waits
/// for a slow reader, so read it.
#[derive(Debug)]
pub struct Notifications {
    // Boxed: the receiver is not `Unpin` (it may hold a registered listener).
    rx: Pin<Box<Receiver<Notification>>>,
}

impl Notifications {
    /// The next notification, or `None` once the machine has stopped.
    pub async fn recv(&mut self) -> Option<Notification> {
        self.rx.recv().await.ok()
    }
}

impl Stream for Notifications {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.rx.as_mut().poll_next(cx)
    }
}

/// Why [`Reports::recv`] returned no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// This receiver fell more than [`Options::reports_capacity`] behind: that many of the oldest reports
    /// were dropped for it. The next call returns the oldest one still kept.
    #[error("{0} reports were dropped: read faster or raise Options::reports_capacity")]
    Lagged(u64),
    /// The keep-alive task has ended and every report has been read.
    #[error("the keep-alive task has ended")]
    Closed,
}

/// Why [`Reports::try_recv`] returned no report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TryRecvError {
    /// No report is waiting now.
    #[error("no report is waiting")]
    Empty,
    /// See [`RecvError::Lagged`].
    #[error("{0} reports were dropped: read faster or raise Options::reports_capacity")]
    Lagged(u64),
    /// See [`RecvError::Closed`].
    #[error("the keep-alive task has ended")]
    Closed,
}

/// A receiver of [`Report`]s, from [`Handle::reports`]: a broadcast channel, so every receiver sees every
/// report. Also a [`futures_core::Stream`] of reports, which skips over lost ones silently (use
/// [`recv`](Reports::recv) to hear about them).
#[derive(Debug)]
pub struct Reports {
    rx: async_broadcast::Receiver<Report>,
}

impl Reports {
    /// The next report; waits for one.
    pub async fn recv(&mut self) -> Result<Report, RecvError> {
        self.rx.recv().await.map_err(|e| match e {
            async_broadcast::RecvError::Overflowed(n) => RecvError::Lagged(n),
            async_broadcast::RecvError::Closed => RecvError::Closed,
        })
    }

    /// The next report if one is waiting.
    pub fn try_recv(&mut self) -> Result<Report, TryRecvError> {
        self.rx.try_recv().map_err(|e| match e {
            async_broadcast::TryRecvError::Overflowed(n) => TryRecvError::Lagged(n),
            async_broadcast::TryRecvError::Empty => TryRecvError::Empty,
            async_broadcast::TryRecvError::Closed => TryRecvError::Closed,
        })
    }
}

impl Stream for Reports {
    type Item = Report;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Report>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}
