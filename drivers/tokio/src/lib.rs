//! # genesys-keepalive-tokio
//!
//! The tokio driver for [`genesys_keepalive`]: it performs the sans-IO core's actions with
//! [tokio-tungstenite](tokio_tungstenite) (WebSockets) and [reqwest] (REST), both on rustls with the
//! aws-lc-rs provider and certificate verification on. Every keep-alive decision (heartbeats, dead peers,
//! backoff, tokens, rollover, linger) is the core's; this crate is the tokio glue for the one task per
//! connection in [`genesys_keepalive_driver_common`], which documents the run loop, the [`Handle`] and the
//! streams.
//!
//! ```
//! use genesys_keepalive::{Config, ProfileKind};
//! use genesys_keepalive_tokio::{connect_with, Error, Options};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Real Genesys Cloud: `.credentials(id, Secret::new(secret)).region("eu-west-1")?.topic(…)` and the
//! // notifications profile; here a keepalive-frame gateway on a port nobody listens on.
//! let config = Config::builder()
//!     .profile(ProfileKind::KeepaliveFrame)
//!     .url("ws://127.0.0.1:9/keepalive")
//!     .allow_insecure(true)
//!     .backoff_base(std::time::Duration::from_millis(10))
//!     .max_reconnect_attempts(1)
//!     .build()?;
//! match connect_with(config, Options::default().seed(7)).await {
//!     Ok((handle, mut notifications)) => {
//!         while let Some(n) = notifications.recv().await {
//!             println!("{}: {}", n.topic_name, n.raw);
//!         }
//!         println!("{} heartbeats sent", handle.shutdown().await.heartbeats_sent);
//!     }
//!     // The machine stopped before a socket opened: here, attempts exhausted.
//!     Err(Error::Stopped(reason)) => println!("stopped: {reason}"),
//!     Err(e) => return Err(e.into()),
//! }
//! # Ok(()) }
//! ```
//!
//! Every audit entry and alert is also a `tracing` event with target `genesys_keepalive` (audits at
//! `INFO`, successful sends at `DEBUG`, alerts at `WARN`); the core keeps credentials out of them.
//!
//! With the cargo feature `metrics`, every connection publishes counters, gauges and histograms through
//! the `metrics` facade (labels `connection` = [`Options::name`], `profile`, `driver`); install any recorder
//! to export them. The list is in `genesys_keepalive_driver_common::metrics` and the README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fleet;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use genesys_keepalive::{Config, Event, Headers, HttpRequest};
use genesys_keepalive_driver_common::http::{self, error_chain};
use genesys_keepalive_driver_common::socket::{
    client_request, handshake_error, server_name, target, HandshakeFailure, SocketContext,
};
use genesys_keepalive_driver_common::{BoxFuture, Runtime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;

pub use fleet::Fleet;
pub use genesys_keepalive;
pub use genesys_keepalive_driver_common::{AddError, FleetNotifications, FleetReports};
pub use genesys_keepalive_driver_common::{
    Error, Handle, Notifications, Options, RecvError, Report, Reports, Spawner, StateWatch,
    TryRecvError,
};
pub use rustls_pki_types::CertificateDer;

/// The user agent of this driver's HTTP requests.
const USER_AGENT: &str = concat!("genesys-keepalive-tokio/", env!("CARGO_PKG_VERSION"));

/// Connects with default [`Options`]; see [`connect_with`].
pub async fn connect(config: Config) -> Result<(Handle, Notifications), Error> {
    connect_with(config, Options::default()).await
}

/// Starts the connection ([`start_with`]) and resolves once the first socket has opened. Fails with
/// [`Error::Config`] for a configuration the core refuses, or with [`Error::Stopped`] when the machine
/// stops first (bad credentials, a 403, reconnect attempts exhausted). Dropping this future before it
/// resolves shuts the connection down gracefully.
pub async fn connect_with(
    config: Config,
    options: Options,
) -> Result<(Handle, Notifications), Error> {
    let (handle, notifications) = start_with(config, options)?;
    handle.opened().await?;
    Ok((handle, notifications))
}

/// Starts the connection's task and returns at once, before anything is connected, so that every report
/// from the first attempt on can be read (`handle.reports()`), and [`Handle::opened`] tells when the first
/// socket is open. Must be called within a tokio runtime (any flavour) unless `options.spawner` is set.
/// When every clone of the [`Handle`] has been dropped the connection shuts down gracefully.
pub fn start_with(config: Config, options: Options) -> Result<(Handle, Notifications), Error> {
    let (task, handle, notifications) =
        genesys_keepalive_driver_common::start(config, &options, Tokio, USER_AGENT)?;
    match &options.spawner {
        Some(spawner) => spawner.spawn(task),
        None => drop(tokio::spawn(task)),
    }
    Ok((handle, notifications))
}

/// A socket's byte stream: TCP, or TLS over TCP. Boxed, so that a plain socket does not carry the size of
/// a TLS session (about 1 KiB) inline.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// The tokio glue: TCP from tokio, TLS from tokio-rustls, WebSockets from tokio-tungstenite, timers from
/// `tokio::time`, HTTP as is. Public because it names the runtime of a [`Fleet`] (`Deref` target).
#[derive(Debug, Clone, Copy)]
pub struct Tokio;

impl Runtime for Tokio {
    type Ws = WebSocketStream<Box<dyn ByteStream>>;
    type Timer = Pin<Box<tokio::time::Sleep>>;
    const NAME: &'static str = "tokio";

    fn connect(
        &self,
        url: String,
        headers: Headers,
        ctx: &SocketContext,
    ) -> BoxFuture<Result<Self::Ws, HandshakeFailure>> {
        let tls = tokio_rustls::TlsConnector::from(ctx.tls.clone());
        let config = ctx.ws;
        Box::pin(async move {
            let fail = HandshakeFailure::new;
            let request = client_request(&url, &headers)?;
            let (host, port, secure) = target(&url, &request)?;
            let tcp = TcpStream::connect((host.as_str(), port))
                .await
                .map_err(|e| fail(format!("TCP connect to {host}:{port}: {e}")))?;
            let _ = tcp.set_nodelay(true);
            let stream: Box<dyn ByteStream> = if secure {
                let tls = tls.connect(server_name(&host)?, tcp).await.map_err(|e| {
                    fail(format!(
                        "TLS handshake with {host}:{port} failed: {}",
                        error_chain(&e)
                    ))
                })?;
                Box::new(tls)
            } else {
                Box::new(tcp)
            };
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map(|(ws, _response)| ws)
                .map_err(handshake_error)
        })
    }

    fn timer(&self, deadline: Instant) -> Self::Timer {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }

    fn reset(&self, timer: &mut Self::Timer, deadline: Instant) {
        timer.as_mut().reset(deadline.into());
    }

    fn poll_timer(&self, timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        timer.as_mut().poll(cx)
    }

    fn http(&self, client: reqwest::Client, request: HttpRequest) -> BoxFuture<Event> {
        Box::pin(async move { http::perform(&client, request).await })
    }
}
