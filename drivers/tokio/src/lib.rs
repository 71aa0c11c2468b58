//! # genesys-keepalive-tokio
//!
//! The tokio driver for [`genesys_keepalive`]: it performs the sans-IO core's actions with
//! [tokio-tungstenite](tokio_tungstenite) (WebSockets) and [reqwest] (REST), both on rustls with the
//! aws-lc-rs provider and certificate verification on, and reports what happened as events stamped with
//! `Instant::now()`. Every keep-alive decision (heartbeats, dead peers, backoff, tokens, rollover) is the
//! core's; this crate only moves bytes and sleeps.
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
//! let (handle, mut notifications) = genesys_keepalive_tokio::connect(config).await?;
//! while let Some(n) = notifications.next().await {
//!     println!("{}: {}", n.topic_name, n.raw);
//!     if handle.stats().notifications_delivered >= 10 {
//!         break;
//!     }
//! }
//! let stats = handle.shutdown().await; // close 1000 "Graceful shutdown", then the task ends
//! println!("{} heartbeats sent", stats.heartbeats_sent);
//! # Ok(()) }
//! ```
//!
//! ## How it runs
//! One task owns the [`KeepAliveMachine`](genesys_keepalive::KeepAliveMachine). Inputs reach it on one
//! channel from the socket tasks, the HTTP tasks and the [`Handle`]; after every input it drains and performs
//! the machine's actions, then sleeps until the machine's next deadline (and checks the clock when it wakes).
//! Each socket has a task that polls its read half all the time and exactly one writer task.
//!
//! Every audit entry and alert is also a [`tracing`] event with target `genesys_keepalive` (audits at
//! `INFO`, successful sends at `DEBUG`, alerts at `WARN`); the core keeps credentials out of them.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod http;
mod socket;
mod task;

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use genesys_keepalive::{Config, Notification, State, Stats, StopReason};
use genesys_keepalive_driver_common::Setup;
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub use genesys_keepalive;
pub use genesys_keepalive_driver_common::{Error, Report};
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
    /// Capacity of the [`Report`] broadcast channel (default 1024). A receiver that falls further behind
    /// loses the oldest reports and sees `RecvError::Lagged`; the machine never waits for it.
    pub reports_capacity: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: None,
            extra_root_certs: Vec::new(),
            reports_capacity: 1024,
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
}

/// Connects with default [`Options`]; see [`connect_with`].
pub async fn connect(config: Config) -> Result<(Handle, Notifications), Error> {
    connect_with(config, Options::default()).await
}

/// Starts the keep-alive task and resolves once the first socket has opened, with a [`Handle`] and the
/// [`Notifications`] stream. Fails with [`Error::Config`] for a configuration the core refuses, or with
/// [`Error::Stopped`] when the machine stops first (bad credentials, a 403, reconnect attempts exhausted).
///
/// Must be called within a tokio runtime. When every clone of the returned [`Handle`] has been dropped the
/// task shuts down gracefully, as if [`Handle::shutdown`] had been called; so does dropping this future
/// before it resolves.
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
        tls,
        max_inbound_bytes,
        allow_insecure,
    });

    let (input_tx, input_rx) = mpsc::channel(INPUT_CAPACITY);
    let (notes_tx, notes_rx) = mpsc::unbounded_channel();
    let (reports_tx, first_reports) = broadcast::channel(options.reports_capacity.max(1));
    let (stats_tx, stats_rx) = watch::channel(machine.stats());
    let (state_tx, state_rx) = watch::channel(machine.state());
    let (stopped_tx, stopped_rx) = watch::channel(None);
    let (finished_tx, finished_rx) = watch::channel(false);
    let (ready_tx, ready_rx) = oneshot::channel();
    let (alive_tx, alive_rx) = oneshot::channel();

    let handle = Handle {
        inner: Arc::new(Inner {
            tx: input_tx.clone(),
            stats: stats_rx,
            state: state_rx,
            stopped: stopped_rx,
            finished: finished_rx,
            reports: reports_tx.downgrade(),
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
    tokio::spawn(driver.run(alive_rx));
    match ready_rx.await {
        Ok(Ok(())) => Ok((handle, Notifications { rx: notes_rx })),
        Ok(Err(reason)) => Err(Error::Stopped(reason)),
        Err(_) => Err(Error::Gone),
    }
}

struct Inner {
    tx: mpsc::Sender<task::Input>,
    stats: watch::Receiver<Stats>,
    state: watch::Receiver<State>,
    stopped: watch::Receiver<Option<StopReason>>,
    finished: watch::Receiver<bool>,
    reports: broadcast::WeakSender<Report>,
    first_reports: Mutex<Option<broadcast::Receiver<Report>>>,
    /// Dropped with the last clone: the task then shuts down gracefully.
    _alive: oneshot::Sender<()>,
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
        if let Some(reason) = self.inner.stopped.borrow().clone() {
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
        *self.inner.state.borrow()
    }

    /// The machine's counters and gauges, as of the last input it handled.
    pub fn stats(&self) -> Stats {
        self.inner.stats.borrow().clone()
    }

    /// A `watch` view of the state; `changed().await` wakes on every transition.
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.inner.state.clone()
    }

    /// A `watch` view of the stats, updated after every input.
    pub fn watch_stats(&self) -> watch::Receiver<Stats> {
        self.inner.stats.clone()
    }

    /// A receiver of [`Report`]s (a broadcast channel). The first call returns the receiver created at start,
    /// which holds every report since then (up to [`Options::reports_capacity`]); every later call returns a
    /// fresh receiver that sees reports from that moment on. Once the task has ended, the receiver is closed.
    pub fn reports(&self) -> broadcast::Receiver<Report> {
        if let Some(first) = self
            .inner
            .first_reports
            .lock()
            .ok()
            .and_then(|mut f| f.take())
        {
            return first;
        }
        match self.inner.reports.upgrade() {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Why the machine stopped, if it has.
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.inner.stopped.borrow().clone()
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
        let reason = match stopped.wait_for(|r| r.is_some()).await {
            Ok(r) => r.clone(),
            Err(_) => None,
        };
        reason.unwrap_or(StopReason::Shutdown)
    }
}

/// The notifications the machine delivers, duplicates already dropped, in order. A
/// [`futures_core::Stream`]; it ends when the machine stops. Unbounded: the keep-alive task never waits
/// for a slow reader, so read it.
#[derive(Debug)]
pub struct Notifications {
    rx: mpsc::UnboundedReceiver<Notification>,
}

impl Notifications {
    /// The next notification, or `None` once the machine has stopped.
    pub async fn recv(&mut self) -> Option<Notification> {
        self.rx.recv().await
    }
}

impl futures_core::Stream for Notifications {
    type Item = Notification;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Notification>> {
        self.rx.poll_recv(cx)
    }
}
