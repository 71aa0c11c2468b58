//! The tokio driver as a [`DriverUnderTest`], on a two-worker multi-thread runtime of its own (the e2e
//! suite in `e2e_tokio`, the nginx tests and the soak).
//!
//! Every `tracing` event of the process is captured in memory (and checked for credentials by the
//! scenarios); set `E2E_LOG=1` to also see it on stderr.

use std::io::Write;
use std::sync::{Mutex, Once};
use std::time::Duration;

use futures_util::StreamExt;
use genesys_keepalive::{Config, Stats, StopReason};
use genesys_keepalive_testkit::scenarios::{
    BoxFuture, ClientHandle, ClientOptions, ClientReport, ConnectError, Connected, DriverUnderTest,
    LocalBoxFuture,
};
use genesys_keepalive_tokio::{CertificateDer, Error, Handle, Options, Report};

static LOGS: Mutex<String> = Mutex::new(String::new());
/// False: lines are checked for the secret as they are written but not kept ([`stop_keeping_logs`]).
static KEEP_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
/// Writes that held the client secret (checked whether or not lines are kept).
static SECRET_WRITES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Stops keeping tracing lines in memory: a soak's worth of them is the largest, ever-growing thing in a
/// process whose RSS the soak measures. Every line is still checked for the client secret as it is written.
#[allow(dead_code)]
pub fn stop_keeping_logs() {
    KEEP_LOGS.store(false, std::sync::atomic::Ordering::Relaxed);
}

/// How many tracing writes held the client secret so far (0, or a credential leaked into the logs).
#[allow(dead_code)]
pub fn secret_writes() -> usize {
    SECRET_WRITES.load(std::sync::atomic::Ordering::Relaxed)
}

/// Appends every formatted tracing line to [`LOGS`] (and to stderr with `E2E_LOG=1`).
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        if std::env::var_os("E2E_LOG").is_some() {
            eprint!("{text}");
        }
        if text.contains(genesys_keepalive_testkit::scenarios::SECRET) {
            SECRET_WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if KEEP_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
            LOGS.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&text);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(|| Capture)
            .try_init();
    });
}

/// The tokio driver on a two-worker multi-thread runtime of its own.
pub struct Tokio {
    rt: tokio::runtime::Runtime,
}

impl Tokio {
    pub fn new() -> Self {
        init_tracing();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        Tokio { rt }
    }
}

struct TokioClient {
    handle: Handle,
    reports: Mutex<genesys_keepalive_tokio::Reports>,
}

impl ClientHandle for TokioClient {
    fn state(&self) -> genesys_keepalive::State {
        self.handle.state()
    }

    fn stats(&self) -> Stats {
        self.handle.stats()
    }

    fn subscribe(&self, topics: Vec<String>) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            self.handle
                .subscribe(topics)
                .await
                .map_err(|e| e.to_string())
        })
    }

    fn shutdown(&self) -> BoxFuture<'_, Stats> {
        Box::pin(self.handle.shutdown())
    }

    fn stopped(&self) -> BoxFuture<'_, StopReason> {
        Box::pin(self.handle.stopped())
    }

    fn receiving_since(&self) -> Option<std::time::SystemTime> {
        self.handle.receiving_since()
    }

    fn take_reports(&self) -> Vec<ClientReport> {
        let mut rx = self.reports.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        loop {
            match rx.try_recv() {
                Ok(r) => out.push(match r {
                    Report::Audit(a) => ClientReport::Audit(a),
                    Report::Alert(a) => ClientReport::Alert(a),
                    Report::State { from, to } => ClientReport::State { from, to },
                    Report::Gap(g) => ClientReport::Gap(g),
                    Report::Stopped(r) => ClientReport::Stopped(r),
                }),
                Err(genesys_keepalive_tokio::TryRecvError::Lagged(n)) => {
                    panic!("{n} reports lost: raise reports_capacity")
                }
                Err(_) => return out,
            }
        }
    }
}

impl DriverUnderTest for Tokio {
    fn name(&self) -> &'static str {
        "tokio"
    }

    fn connect(
        &self,
        config: Config,
        options: ClientOptions,
    ) -> BoxFuture<'_, Result<Connected, ConnectError>> {
        Box::pin(async move {
            let options = Options {
                seed: options.seed,
                resume_after: options.resume_after,
                extra_root_certs: options
                    .extra_root_certs
                    .into_iter()
                    .map(CertificateDer::from)
                    .collect(),
                reports_capacity: 1 << 16,
                spawner: None,
                ..Options::default()
            };
            match genesys_keepalive_tokio::connect_with(config, options).await {
                Ok((handle, notifications)) => {
                    let reports = Mutex::new(handle.reports());
                    Ok(Connected {
                        handle: Box::new(TokioClient { handle, reports }),
                        notifications: notifications.boxed(),
                    })
                }
                Err(Error::Stopped(r)) => Err(ConnectError::Stopped(r)),
                Err(Error::Config(e)) => Err(ConnectError::Config(e)),
                Err(e) => Err(ConnectError::Other(e.to_string())),
            }
        })
    }

    fn sleep(&self, d: Duration) -> BoxFuture<'static, ()> {
        Box::pin(tokio::time::sleep(d))
    }

    fn block_on(&self, fut: LocalBoxFuture<'_, ()>) {
        self.rt.block_on(fut)
    }

    fn captured_logs(&self) -> String {
        LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
