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

use std::time::{Duration, SystemTime};

use genesys_keepalive::{
    Alert, AuditEntry, ConfigError, Event, FrameId, RequestId, SocketId, State, StopReason,
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
    /// The linger time after a close frame has passed.
    LingerExpired(SocketId),
    /// An HTTP request's outcome.
    Http(RequestId, Event),
    /// `Handle::subscribe`.
    Subscribe(Vec<String>),
    /// `Handle::token_expired`.
    TokenExpired,
    /// `Handle::shutdown`.
    Shutdown,
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
