//! A fault-injecting TCP proxy on `127.0.0.1`, between a client and any upstream (usually the
//! [`crate::gateway::Gateway`]). It knows nothing of HTTP or TLS: it moves bytes, late, never or
//! not at all, as its [`ProxyMode`] says.
//!
//! Like the gateway it runs on its own OS thread with its own tokio runtime, and every method
//! is synchronous, so it serves tests on any async runtime.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What the proxy does with the bytes of its connections. A mode applies at once to every
/// connection, current and new, until the next [`Proxy::set_mode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Forward everything as it comes.
    #[default]
    Pass,
    /// Forward everything, each chunk (one read) delayed by this much, in both directions.
    Delay(Duration),
    /// Forward nothing in either direction (EOF included) but keep both TCP connections open,
    /// like a silent network partition. New connections are accepted and connected upstream
    /// but carry nothing. Back to `Pass`, held bytes flow again.
    Blackhole,
    /// Reset (TCP RST, SO_LINGER 0) every current connection on both sides; while the mode
    /// stays `Reset`, every new connection is accepted and reset at once.
    Reset,
}

/// Counters of the proxy. Obtained with [`Proxy::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections_accepted: u64,
    /// Connections open right now (client side).
    pub connections_open_now: u64,
    /// Connections reset by the `Reset` mode.
    pub connections_reset: u64,
    /// Upstream connections that could not be made (the client is then reset).
    pub upstream_failures: u64,
    /// Bytes forwarded client → upstream.
    pub bytes_up: u64,
    /// Bytes forwarded upstream → client.
    pub bytes_down: u64,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    open_now: AtomicU64,
    reset: AtomicU64,
    upstream_failures: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

/// The mode plus a counter of `Reset` orders, so a connection knows a reset is meant for it.
#[derive(Debug, Clone, Copy)]
struct ModeState {
    mode: ProxyMode,
    reset_epoch: u64,
}

/// A running proxy. Dropping it (or [`Proxy::shutdown`]) stops it and drops every connection.
pub struct Proxy {
    addr: SocketAddr,
    upstream: SocketAddr,
    mode: watch::Sender<ModeState>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("addr", &self.addr)
            .field("upstream", &self.upstream)
            .field("mode", &self.mode())
            .finish()
    }
}

impl Proxy {
    /// Starts a proxy on an ephemeral port of `127.0.0.1` forwarding to `upstream`, on its own
    /// OS thread; returns once it is listening.
    pub fn start(upstream: SocketAddr) -> io::Result<Proxy> {
        let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (mode, mode_rx) = watch::channel(ModeState {
            mode: ProxyMode::Pass,
            reset_epoch: 0,
        });
        let (stop, stop_rx) = watch::channel(false);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<io::Result<()>>();
        let thread = std::thread::Builder::new()
            .name(format!("testkit-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    accept_loop(listener, upstream, mode_rx, stop_rx, thread_counters).await;
                });
                drop(rt);
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::Error::other("proxy thread died while starting")),
        }
        tracing::info!(%addr, %upstream, "testkit proxy listening");
        Ok(Proxy {
            addr,
            upstream,
            mode,
            counters,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The proxy's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream address it forwards to.
    pub fn upstream(&self) -> SocketAddr {
        self.upstream
    }

    /// Changes the mode for every connection, current and new (see [`ProxyMode`]).
    pub fn set_mode(&self, mode: ProxyMode) {
        self.mode.send_modify(|m| {
            m.mode = mode;
            if mode == ProxyMode::Reset {
                m.reset_epoch += 1;
            }
        });
        tracing::info!(?mode, "testkit proxy: mode set");
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        self.mode.borrow().mode
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ProxyStats {
        let c = &self.counters;
        ProxyStats {
            connections_accepted: c.accepted.load(Ordering::SeqCst),
            connections_open_now: c.open_now.load(Ordering::SeqCst),
            connections_reset: c.reset.load(Ordering::SeqCst),
            upstream_failures: c.upstream_failures.load(Ordering::SeqCst),
            bytes_up: c.bytes_up.load(Ordering::SeqCst),
            bytes_down: c.bytes_down.load(Ordering::SeqCst),
        }
    }

    /// Client connections accepted so far.
    pub fn connections_accepted(&self) -> u64 {
        self.counters.accepted.load(Ordering::SeqCst)
    }

    /// Stops the proxy and joins its thread. Idempotent; also done on drop.
    pub fn shutdown(&self) {
        let _ = self.stop.send(true);
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    mode: watch::Receiver<ModeState>,
    mut stop: watch::Receiver<bool>,
    counters: Arc<Counters>,
) {
    loop {
        if *stop.borrow() {
            break;
        }
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            accepted = listener.accept() => match accepted {
                Ok((client, _)) => {
                    counters.accepted.fetch_add(1, Ordering::SeqCst);
                    tokio::spawn(connection(client, upstream, mode.clone(), counters.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "testkit proxy: accept failed");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
        }
    }
}

/// Decrements `open_now` when a connection ends.
struct OpenGuard(Arc<Counters>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open_now.fetch_sub(1, Ordering::SeqCst);
    }
}

fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<ModeState>,
    counters: Arc<Counters>,
) {
    counters.open_now.fetch_add(1, Ordering::SeqCst);
    let _open = OpenGuard(counters.clone());
    let start = *mode.borrow_and_update();
    if start.mode == ProxyMode::Reset {
        counters.reset.fetch_add(1, Ordering::SeqCst);
        reset(client);
        return;
    }
    let _ = client.set_nodelay(true);
    let server = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "testkit proxy: upstream connect failed");
            counters.upstream_failures.fetch_add(1, Ordering::SeqCst);
            reset(client);
            return;
        }
    };
    let _ = server.set_nodelay(true);
    let (mut client, mut server) = (client, server);
    let was_reset = {
        let (cr, cw) = client.split();
        let (sr, sw) = server.split();
        let up = pump(cr, sw, mode.clone(), &counters.bytes_up);
        let down = pump(sr, cw, mode.clone(), &counters.bytes_down);
        let reset_order = async {
            loop {
                if mode.borrow_and_update().reset_epoch != start.reset_epoch {
                    return;
                }
                if mode.changed().await.is_err() {
                    // The proxy is shutting down: wait to be dropped.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = reset_order => true,
            _ = async { tokio::try_join!(up, down) } => false,
        }
    };
    if was_reset {
        counters.reset.fetch_add(1, Ordering::SeqCst);
        reset(client);
        reset(server);
    }
}

/// Waits while the mode is `Blackhole`; returns the delay to apply, if any.
async fn gate(mode: &mut watch::Receiver<ModeState>) -> Option<Duration> {
    loop {
        let m = mode.borrow_and_update().mode;
        match m {
            ProxyMode::Blackhole => {
                if mode.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            ProxyMode::Delay(d) => return Some(d),
            ProxyMode::Pass | ProxyMode::Reset => return None,
        }
    }
}

/// Copies one direction chunk by chunk, honouring the mode before every write (and EOF).
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    mut mode: watch::Receiver<ModeState>,
    bytes: &AtomicU64,
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if let Some(d) = gate(&mut mode).await {
            tokio::time::sleep(d).await;
        }
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
        bytes.fetch_add(n as u64, Ordering::SeqCst);
    }
}
