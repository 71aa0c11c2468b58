//! # genesys-keepalive-driver-common
//!
//! What the genesys-keepalive drivers (`genesys-keepalive-tokio`, `genesys-keepalive-async-std`) share
//! regardless of the runtime they run on: the rustls configuration ([`tls`]), performing the core's HTTP
//! requests with reqwest ([`http`]), the runtime-independent half of a WebSocket ([`socket`]), and the
//! values the drivers hand to their users ([`Report`], [`Error`]).
//!
//! Like the drivers, it holds no keep-alive decision: those are all the core's.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod http;
pub mod socket;
pub mod task;
pub mod tls;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use genesys_keepalive::{
    Alert, AuditEntry, Config, ConfigError, Event, FrameId, KeepAliveMachine, RequestId, SocketId,
    State, StopReason,
};

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

/// Everything that reaches the machine task: reports from socket, writer and HTTP tasks, and requests from
/// the driver's `Handle`.
#[derive(Debug)]
pub enum Input {
    /// The socket's handshake succeeded.
    Opened(SocketId),
    /// The socket's handshake failed; its last report.
    ConnectFailed {
        /// Which socket.
        socket: SocketId,
        /// The HTTP status of a refused upgrade.
        status: Option<u16>,
        /// The refusal's `Retry-After`.
        retry_after: Option<Duration>,
        /// What went wrong.
        error: String,
    },
    /// A text frame arrived.
    Text(SocketId, String),
    /// A binary frame arrived.
    Binary(SocketId, Vec<u8>),
    /// The writer wrote a frame (or failed to).
    Sent {
        /// Which socket.
        socket: SocketId,
        /// Which frame.
        frame: FrameId,
        /// The outcome.
        result: Result<(), String>,
    },
    /// The read half ended; the socket's last report.
    ReaderEnded {
        /// Which socket.
        socket: SocketId,
        /// The peer's close code, if it sent a close frame.
        code: Option<u16>,
        /// The close reason or the error.
        reason: String,
    },
    /// An HTTP request's outcome.
    Http(RequestId, Event),
    /// `Handle::subscribe`.
    Subscribe(Vec<String>),
    /// `Handle::token_expired`.
    TokenExpired,
    /// `Handle::shutdown`.
    Shutdown,
}

/// What `connect` starts from, whatever the runtime: the machine, the rustls configuration and the (not
/// yet built) HTTP client.
pub struct Setup {
    /// The machine, created now.
    pub machine: KeepAliveMachine,
    /// The shared rustls configuration, for the sockets.
    pub tls: Arc<rustls::ClientConfig>,
    /// The HTTP client, built on the first request.
    pub client: http::LazyClient,
    /// The configuration's inbound size limit, for the sockets.
    pub max_inbound_bytes: usize,
    /// Whether `ws://` and `http://` are allowed.
    pub allow_insecure: bool,
}

/// Installs the TLS provider, validates `config`, builds (or reuses) the rustls configuration with
/// `extra_root_certs`, and creates the machine with `seed` (drawn by [`random_seed`] if `None`).
pub fn setup(
    config: Config,
    extra_root_certs: &[CertificateDer<'static>],
    seed: Option<u64>,
    user_agent: &'static str,
) -> Result<Setup, Error> {
    tls::install_provider();
    config.validate()?;
    let tls = tls::shared_client_config(extra_root_certs)?;
    let allow_insecure = config.allow_insecure;
    let client = http::LazyClient::new(tls.clone(), allow_insecure, user_agent);
    let max_inbound_bytes = config.max_inbound_bytes;
    let seed = seed.unwrap_or_else(random_seed);
    let machine = KeepAliveMachine::new(config, Instant::now(), SystemTime::now(), seed)?;
    Ok(Setup {
        machine,
        tls,
        client,
        max_inbound_bytes,
        allow_insecure,
    })
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
