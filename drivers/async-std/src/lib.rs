//! # genesys-keepalive-async-std
//!
//! The async-std driver for [`genesys_keepalive`], which also runs under smol: it performs the sans-IO
//! core's actions with [async-tungstenite](async_tungstenite) (WebSockets) and [reqwest] (REST), both on
//! rustls with the aws-lc-rs provider and certificate verification on. Every keep-alive decision
//! (heartbeats, dead peers, backoff, tokens, rollover, linger) is the core's; this crate is the glue for the
//! one task per connection in [`genesys_keepalive_driver_common`], which documents the run loop, the
//! [`Handle`] and the streams.
//!
//! ```
//! use genesys_keepalive::{Config, ProfileKind};
//! use genesys_keepalive_async_std::{connect_with, Error, Options};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Real Genesys Cloud: `.credentials(id, Secret::new(secret)).region("eu-west-1")?.topic(…)` and the
//! // notifications profile; here a keepalive-frame gateway on a port nobody listens on.
//! let config = Config::builder()
//!     .profile(ProfileKind::KeepaliveFrame)
//!     .url("ws://127.0.0.1:9/keepalive")
//!     .allow_insecure(true)
//!     .backoff_base(std::time::Duration::from_millis(10))
//!     .max_reconnect_attempts(1)
//!     .build()?;
//! async_std::task::block_on(async {
//!     match connect_with(config, Options::default().seed(7)).await {
//!         Ok((handle, mut notifications)) => {
//!             while let Some(n) = notifications.recv().await {
//!                 println!("{}: {}", n.topic_name, n.raw);
//!             }
//!             println!("{} heartbeats sent", handle.shutdown().await.heartbeats_sent);
//!         }
//!         // The machine stopped before a socket opened: here, attempts exhausted.
//!         Err(Error::Stopped(reason)) => println!("stopped: {reason}"),
//!         Err(e) => return Err(e),
//!     }
//!     Ok(())
//! })?;
//! # Ok(()) }
//! ```
//!
//! ## async-std and smol
//! async-std is discontinued upstream in favour of smol, and both are facades over the same crates. The
//! driver is written against those crates, not against either facade: TCP from `async-net`, timers from
//! `async-io`, TLS from `futures-rustls`, WebSockets from `async-tungstenite` over `futures-io` streams. The
//! connection's task is spawned on the executor behind `async_std::task::spawn` (`async-global-executor`),
//! which also runs from `smol::block_on`; to keep it on smol's executor, pass
//! `Options::default().spawner(Spawner::new(|task| smol::spawn(task).detach()))`.
//!
//! reqwest needs a tokio reactor; the driver lends it one through `async-compat` (one extra thread, started
//! with the first HTTP request; see the crate's README for the measured cost). Each HTTP request runs as a
//! task on that thread, and is cancelled when the connection drops it.
//!
//! With the cargo feature `metrics`, every connection publishes counters, gauges and histograms through
//! the `metrics` facade (labels `connection` = [`Options::name`], `profile`, `driver`); install any recorder
//! to export them. The list is in `genesys_keepalive_driver_common::metrics` and the README.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod fleet;

use std::future::Future;
use std::task::{Context, Poll};
use std::time::Instant;

use async_net::TcpStream;
use async_tungstenite::WebSocketStream;
use futures_util::io::{AsyncRead, AsyncWrite};
use genesys_keepalive::{Config, Event, Headers, HttpRequest};
use genesys_keepalive_driver_common::http::{self, error_chain};
use genesys_keepalive_driver_common::socket::{
    client_request, handshake_error, server_name, target, HandshakeFailure, SocketContext,
};
use genesys_keepalive_driver_common::{BoxFuture, Runtime};

pub use fleet::Fleet;
pub use genesys_keepalive;
pub use genesys_keepalive_driver_common::{AddError, FleetNotifications, FleetReports};
pub use genesys_keepalive_driver_common::{
    Error, Handle, Notifications, Options, RecvError, Report, Reports, Spawner, StateWatch,
    TryRecvError,
};
pub use rustls_pki_types::CertificateDer;

/// The user agent of this driver's HTTP requests.
const USER_AGENT: &str = concat!("genesys-keepalive-async-std/", env!("CARGO_PKG_VERSION"));

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

/// Starts the connection's task (on `options.spawner`, by default async-std's executor) and returns at
/// once, before anything is connected, so that every report from the first attempt on can be read
/// (`handle.reports()`), and [`Handle::opened`] tells when the first socket is open. When every clone of
/// the [`Handle`] has been dropped the connection shuts down gracefully.
pub fn start_with(config: Config, options: Options) -> Result<(Handle, Notifications), Error> {
    let (task, handle, notifications) =
        genesys_keepalive_driver_common::start(config, &options, AsyncStd, USER_AGENT)?;
    match &options.spawner {
        Some(spawner) => spawner.spawn(task),
        None => async_global_executor::spawn(task).detach(),
    }
    Ok((handle, notifications))
}

/// A socket's byte stream: TCP, or TLS over TCP. Boxed, so that a plain socket does not carry the size of
/// a TLS session (about 1 KiB) inline.
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// The runtime-neutral glue: `async-net`, `futures-rustls`, `async-tungstenite`, `async-io` timers, and
/// reqwest under `async-compat`. Public because it names the runtime of a [`Fleet`] (`Deref` target).
#[derive(Debug, Clone, Copy)]
pub struct AsyncStd;

impl Runtime for AsyncStd {
    type Ws = WebSocketStream<Box<dyn ByteStream>>;
    type Timer = async_io::Timer;
    const NAME: &'static str = "async-std";

    fn connect(
        &self,
        url: String,
        headers: Headers,
        ctx: &SocketContext,
    ) -> BoxFuture<Result<Self::Ws, HandshakeFailure>> {
        let tls = futures_rustls::TlsConnector::from(ctx.tls.clone());
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
            async_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map(|(ws, _response)| ws)
                .map_err(handshake_error)
        })
    }

    fn timer(&self, deadline: Instant) -> Self::Timer {
        async_io::Timer::at(deadline)
    }

    fn reset(&self, timer: &mut Self::Timer, deadline: Instant) {
        timer.set_at(deadline);
    }

    fn poll_timer(&self, timer: &mut Self::Timer, cx: &mut Context<'_>) -> Poll<()> {
        std::pin::Pin::new(timer).poll(cx).map(|_| ())
    }

    fn http(&self, client: reqwest::Client, request: HttpRequest) -> BoxFuture<Event> {
        // reqwest runs on tokio's reactor: Compat enters a tokio context while the future is polled. The
        // request is a task of that runtime, beside the HTTP connection task it talks to, so that their
        // wakes stay on tokio's thread and only the outcome crosses back: polled from async-std, every
        // step of the request woke the other thread (measured: see "Fleet" in BENCHMARKS.md).
        let id = request.id;
        Box::pin(async_compat::Compat::new(async move {
            let mut task = AbortOnDrop(
                tokio::runtime::Handle::current()
                    .spawn(async move { http::perform(&client, request).await }),
            );
            match (&mut task.0).await {
                Ok(event) => event,
                Err(e) => Event::HttpFailed {
                    request: id,
                    error: format!("the HTTP request's task ended: {e}"),
                },
            }
        }))
    }
}

/// A tokio task that is cancelled when its handle is dropped, as the request future it stands for would
/// be: the connection drops the HTTP futures it no longer wants.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use genesys_keepalive::{Method, RequestId};
    use std::time::Duration;

    #[test]
    fn a_refused_port_and_a_refused_request_fail_on_both_runtimes() {
        genesys_keepalive_driver_common::tls::install_provider();
        let tls =
            std::sync::Arc::new(genesys_keepalive_driver_common::tls::client_config(&[]).unwrap());
        let ctx = SocketContext::new(tls.clone(), 1 << 20);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("ws://127.0.0.1:{port}/x");
        let c = http::client((*tls).clone(), true, USER_AGENT).unwrap();
        let req = HttpRequest {
            id: RequestId(1),
            method: Method::Post,
            url: format!("http://127.0.0.1:{port}/oauth/token"),
            headers: Headers::new(),
            body: None,
            timeout: Duration::from_secs(1),
        };
        let socket = |ws| match ws {
            Err(f @ HandshakeFailure { .. }) => assert!(f.error.contains("TCP connect"), "{f:?}"),
            Ok(_) => panic!("connected"),
        };
        socket(async_std::task::block_on(AsyncStd.connect(
            url.clone(),
            Headers::new(),
            &ctx,
        )));
        socket(smol::block_on(AsyncStd.connect(url, Headers::new(), &ctx)));
        for event in [
            async_std::task::block_on(AsyncStd.http(c.clone(), req.clone())),
            smol::block_on(AsyncStd.http(c, req)),
        ] {
            assert!(matches!(event, Event::HttpFailed { .. }), "{event:?}");
        }
    }

    #[test]
    fn a_dropped_request_is_cancelled_and_its_http_connection_closed() {
        use std::io::Read;
        genesys_keepalive_driver_common::tls::install_provider();
        let tls = genesys_keepalive_driver_common::tls::client_config(&[]).unwrap();
        // A server that reads the request and never answers: only the client can end the exchange.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let (closed_tx, closed_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let (mut socket, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let n = socket.read(&mut buf).unwrap();
            seen_tx.send(n).unwrap();
            socket
                .set_read_timeout(Some(Duration::from_secs(20)))
                .unwrap();
            // Ok(0) once the client closes; an error if it does not within 20 s.
            closed_tx
                .send(socket.read(&mut buf).map(|n| n == 0))
                .unwrap();
        });
        let c = http::client(tls, true, USER_AGENT).unwrap();
        let req = HttpRequest {
            id: RequestId(7),
            method: Method::Post,
            url: format!("http://127.0.0.1:{port}/oauth/token"),
            headers: Headers::new(),
            body: Some("grant_type=client_credentials".into()),
            timeout: Duration::from_secs(60),
        };
        let mut request = AsyncStd.http(c, req);
        async_std::task::block_on(async {
            let started = futures_lite::future::poll_once(&mut request).await;
            assert!(
                started.is_none(),
                "answered without a server reply: {started:?}"
            );
            let sent = async_std::task::spawn_blocking(move || {
                seen_rx
                    .recv_timeout(Duration::from_secs(30))
                    .expect("the request never reached the server")
            })
            .await;
            assert!(sent > 0, "the server read nothing");
        });
        // The request's task runs on async-compat's thread: dropping the future must cancel it there.
        drop(request);
        match closed_rx.recv_timeout(Duration::from_secs(30)).unwrap() {
            Ok(true) => {}
            other => {
                panic!("the HTTP connection stayed open after the request was dropped: {other:?}")
            }
        }
    }
}
