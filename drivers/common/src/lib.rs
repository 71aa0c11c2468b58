//! # genesys-keepalive-driver-common
//!
//! Everything the genesys-keepalive drivers (`genesys-keepalive-tokio`, `genesys-keepalive-async-std`)
//! share regardless of the runtime they run on, which is all but the glue: the one task per connection
//! ([`Connection`], see [`conn`] for its run loop), what the application holds ([`Handle`],
//! [`Notifications`], [`Reports`], [`StateWatch`]), the [`Options`], the rustls configuration ([`tls`]),
//! the core's HTTP requests with reqwest ([`http`]) and the runtime-independent half of a WebSocket
//! ([`socket`]). A runtime crate implements [`Runtime`] (open a socket, a timer, an HTTP request) and
//! spawns the task.
//!
//! Like the drivers, it holds no keep-alive decision: those are all the core's.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod conn;
pub mod fleet;
pub mod handle;
pub mod http;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod socket;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use genesys_keepalive::{
    Alert, AuditEntry, Config, ConfigError, Gap, KeepAliveMachine, State, StopReason,
};

pub use conn::{BoxFuture, Connection, Runtime};
pub use fleet::{AddError, Fleet, FleetNotifications, FleetReports};
use handle::Shared;
pub use handle::{Handle, Notifications, RecvError, Reports, StateWatch, TryRecvError};

pub use rustls_pki_types::CertificateDer;

/// Why `connect` (or a `Handle` call) failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration was refused; every broken relation is listed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The machine stopped before the first socket opened (bad credentials, 403, attempts exhausted), or,
    /// for a `Handle` call, has stopped since.
    #[error("stopped: {0}")]
    Stopped(StopReason),
    /// The TLS or HTTP client could not be set up (e.g. an unusable extra root certificate).
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The driver task is no longer running.
    #[error("the keep-alive task is no longer running")]
    Gone,
}

/// Something the driver reports besides notifications: what the core emitted, as values.
#[derive(Debug, Clone, PartialEq)]
pub enum Report {
    /// An audit entry.
    Audit(AuditEntry),
    /// A monitoring alert.
    Alert(Alert),
    /// Notifications may have been missed in this window (re-read state for it through the REST API).
    Gap(Gap),
    /// The connection state changed.
    State {
        /// Before.
        from: State,
        /// After.
        to: State,
    },
    /// The machine stopped for good; nothing follows.
    Stopped(StopReason),
}

/// How a connection's task is started: a function that hands a boxed future to an executor and returns
/// at once. The tokio driver uses `tokio::spawn` unless one is given; the async-std driver the executor
/// behind `async_std::task::spawn` (`async-global-executor`). Under smol, for example:
/// `Spawner::new(|task| smol::spawn(task).detach())`.
#[derive(Clone)]
pub struct Spawner(Arc<dyn Fn(BoxFuture<()>) + Send + Sync>);

impl Spawner {
    /// A spawner that runs each task with `spawn` (which must not block).
    pub fn new(spawn: impl Fn(BoxFuture<()>) + Send + Sync + 'static) -> Self {
        Spawner(Arc::new(spawn))
    }

    /// Runs `task` in the background.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        (self.0)(Box::pin(task))
    }
}

impl std::fmt::Debug for Spawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spawner")
    }
}

/// Driver options beyond the core's [`Config`], the same for every runtime.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seed for the machine's PRNG (jitter, connection ids). `None`: drawn from the OS and the clock.
    /// The same seed and the same inputs give the same decisions.
    pub seed: Option<u64>,
    /// Root certificates trusted in addition to the Mozilla roots (webpki-roots), e.g. a test CA.
    pub extra_root_certs: Vec<CertificateDer<'static>>,
    /// How many unread [`Report`]s a receiver may fall behind (default 1024) before it loses the oldest and
    /// sees `Lagged`; the connection never waits for it. 0 keeps no reports at all (the first receiver
    /// included), for applications that read none (a benchmark, a large fleet).
    pub reports_capacity: usize,
    /// How the connection's task is spawned; `None`: the runtime's default (see [`Spawner`]).
    pub spawner: Option<Spawner>,
    /// The connection's name: the `connection` label of its metrics (feature `metrics`). Default `default`.
    pub name: String,
    /// This connection is the continuation of one in an earlier process, which was last known to be
    /// receiving at this wall time (what its [`Handle::receiving_since`] was, kept in a checkpoint): the
    /// machine reports the restart as a [`GapReason::Restart`](genesys_keepalive::GapReason::Restart)
    /// gap from then to its first confirmed socket (see `KeepAliveMachine::resume_after`). `None` (the
    /// default): a fresh start, no gap.
    pub resume_after: Option<SystemTime>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seed: None,
            extra_root_certs: Vec::new(),
            reports_capacity: 1024,
            spawner: None,
            name: "default".to_owned(),
            resume_after: None,
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

    /// Sets [`Options::name`].
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets [`Options::resume_after`].
    pub fn resume_after(mut self, since: SystemTime) -> Self {
        self.resume_after = Some(since);
        self
    }

    /// Sets [`Options::spawner`].
    pub fn spawner(mut self, spawner: Spawner) -> Self {
        self.spawner = Some(spawner);
        self
    }
}

/// Builds a connection on `rt`: installs the TLS provider, validates `config`, takes the process-wide
/// rustls configuration for `options.extra_root_certs`, creates the machine (resumed after
/// `options.resume_after`, if set) and its shared state. Returns
/// the task (to be spawned) with its [`Handle`] and [`Notifications`]. What it does not do is decide
/// anything: that is the machine's.
pub fn start<R: Runtime>(
    config: Config,
    options: &Options,
    rt: R,
    user_agent: &'static str,
) -> Result<(Connection<R>, Handle, Notifications), Error> {
    tls::install_provider();
    config.validate()?;
    let tls = tls::shared_client_config(&options.extra_root_certs)?;
    let client = http::LazyClient::new(tls.clone(), config.allow_insecure, user_agent);
    let ctx = socket::SocketContext::new(tls, config.max_inbound_bytes);
    #[cfg(feature = "metrics")]
    let metrics = metrics::ConnMetrics::new(&options.name, config.profile, R::NAME);
    let seed = options.seed.unwrap_or_else(random_seed);
    let mut machine = KeepAliveMachine::new(config, Instant::now(), SystemTime::now(), seed)?;
    if let Some(since) = options.resume_after {
        machine.resume_after(since);
    }
    let shared = Shared::new(machine, options.reports_capacity);
    let (handle, notifications) = Handle::new(shared.clone());
    #[allow(unused_mut)]
    let mut conn = Connection::new(rt, shared, ctx, client);
    #[cfg(feature = "metrics")]
    conn.set_metrics(metrics);
    Ok((conn, handle, notifications))
}

/// A seed for the machine's PRNG when the caller gave none: from the OS-seeded hasher and the clock.
pub fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(nanos);
    h.finish()
}
