//! Heap per connection of the tokio driver, measured with a counting global allocator: N keepalive-frame
//! connections on a current-thread runtime against a small acking server on another thread. Only the
//! client thread's allocations are counted, so the server's never mix in. Run (optimized, output shown):
//!
//! ```text
//! cargo test --release -p genesys-keepalive-tokio --bench memory -- --nocapture
//! ```
//!
//! It prints live heap bytes and live allocations per connection once the RTT windows are full, and the
//! allocations per heartbeat round in the steady state. BENCHMARKS.md explains each byte.
//!
//! With `--features metrics` every connection also publishes its metrics, to a recorder installed first:
//! `METRICS_RECORDER=atomic` (the default: plain atomics, so that only the driver's own work is counted) or
//! `METRICS_RECORDER=prometheus` (`metrics-exporter-prometheus`'s recorder, with the CLI's buckets, nobody
//! scraping):
//!
//! ```text
//! cargo test --release -p genesys-keepalive-tokio --features metrics --bench memory -- --nocapture
//! METRICS_RECORDER=prometheus cargo test --release -p genesys-keepalive-tokio --features metrics --bench memory -- --nocapture
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use genesys_keepalive::{Config, ProfileKind};
use genesys_keepalive_tokio::{connect_with, Options};
use tokio_tungstenite::tungstenite::Message;

struct Counting;

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static LIVE_ALLOCS: AtomicI64 = AtomicI64::new(0);
static ALLOCS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Allocations on this thread are counted (the client's thread only).
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn counted() -> bool {
    COUNTED.try_with(|c| c.get()).unwrap_or(false)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            LIVE_ALLOCS.fetch_add(1, Relaxed);
            LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.alloc(layout) };
        if counted() {
            record::alloc(p as usize, layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if counted() {
            LIVE_ALLOCS.fetch_sub(1, Relaxed);
            LIVE_BYTES.fetch_sub(layout.size() as i64, Relaxed);
            record::dealloc(ptr as usize);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if counted() {
            ALLOCS.fetch_add(1, Relaxed);
            LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
            record::dealloc(ptr as usize);
        }
        // SAFETY: forwarded unchanged to the system allocator.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if counted() {
            record::alloc(p as usize, new_size);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// A gateway that acks every KEEP_ALIVE like the seed's server.js, on its own thread and runtime.
fn start_server() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("server runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(tcp).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if let Message::Text(t) = m {
                            if t.contains("\"KEEP_ALIVE\"") {
                                let ack = r#"{"type":"KEEP_ALIVE_ACK"}"#;
                                if ws.send(Message::text(ack)).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
    });
    format!("ws://{addr}/")
}

fn config(url: &str) -> Config {
    Config::builder()
        .profile(ProfileKind::KeepaliveFrame)
        .url(url)
        .allow_insecure(true)
        .heartbeat_interval(Duration::from_millis(20))
        .max_idle(Duration::from_secs(5))
        .ack_timeout(Duration::from_secs(5))
        .build()
        .expect("config")
}

/// Installs the recorder `METRICS_RECORDER` names, before anything is counted; returns its name.
#[cfg(feature = "metrics")]
fn install_recorder() -> &'static str {
    use genesys_keepalive_driver_common::metrics::histogram_bounds;
    if std::env::var("METRICS_RECORDER").as_deref() == Ok("prometheus") {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
            .set_buckets_for_metric(
                metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
                &histogram_bounds(),
            )
            .expect("buckets")
            .build_recorder();
        metrics::set_global_recorder(recorder).expect("one recorder");
        "metrics-exporter-prometheus (not scraped)"
    } else {
        metrics::set_global_recorder(atomic::Atomic).expect("one recorder");
        "atomic counters"
    }
}

#[cfg(not(feature = "metrics"))]
fn install_recorder() -> &'static str {
    "none (feature metrics off)"
}

/// A recorder of plain atomics: what any recorder must at least do, and nothing an exporter adds.
#[cfg(feature = "metrics")]
mod atomic {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    use std::sync::Arc;

    use metrics::{
        Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString,
        Unit,
    };

    pub struct Atomic;

    struct Hist(AtomicU64);
    impl HistogramFn for Hist {
        fn record(&self, _value: f64) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    impl Recorder for Atomic {
        fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
        fn register_counter(&self, _: &Key, _: &Metadata<'_>) -> Counter {
            Counter::from_arc(Arc::new(AtomicU64::new(0)))
        }
        fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
            Gauge::from_arc(Arc::new(AtomicU64::new(0)))
        }
        fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
            Histogram::from_arc(Arc::new(Hist(AtomicU64::new(0))))
        }
    }
}

#[test]
fn heap_per_connection() {
    const N: usize = 500;
    let recorder = install_recorder();
    let url = start_server();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    COUNTED.with(|c| c.set(true));
    rt.block_on(async {
        // Warm the process-wide pieces (TLS configuration, timer wheel, the runtime's slabs) with one
        // connection before the baseline.
        let (first, _n) = connect_with(config(&url), Options::default().reports_capacity(0))
            .await
            .expect("first connection");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let (bytes0, allocs0) = (LIVE_BYTES.load(Relaxed), LIVE_ALLOCS.load(Relaxed));
        let mut conns = Vec::with_capacity(N);
        for i in 0..N {
            let options = Options::default().seed(i as u64).reports_capacity(0);
            conns.push(connect_with(config(&url), options).await.expect("connect"));
        }
        // 100 heartbeats at 20 ms: every RTT window full.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        let bytes = LIVE_BYTES.load(Relaxed) - bytes0;
        let allocs = LIVE_ALLOCS.load(Relaxed) - allocs0;
        let rounds0: u64 = conns.iter().map(|(h, _)| h.stats().heartbeats_acked).sum();
        let a0 = ALLOCS.load(Relaxed);
        tokio::time::sleep(Duration::from_millis(1_000)).await;
        let a1 = ALLOCS.load(Relaxed);
        let rounds1: u64 = conns.iter().map(|(h, _)| h.stats().heartbeats_acked).sum();
        let acked = conns.iter().filter(|(h, _)| h.stats().rtt_samples >= 100).count();
        println!(
            "tokio driver, keepalive-frame over ws://, {N} connections, RTT windows full on {acked}; \
             metrics recorder: {recorder}:"
        );
        println!(
            "  live heap per connection: {} bytes in {:.1} allocations",
            bytes / N as i64,
            allocs as f64 / N as f64
        );
        println!(
            "  allocations per heartbeat round (tick, write, ack) in the steady state: {:.2}",
            (a1 - a0) as f64 / (rounds1 - rounds0).max(1) as f64
        );
        println!(
            "  size_of: KeepAliveMachine {} B, Stats {} B, Config {} B",
            std::mem::size_of::<genesys_keepalive::KeepAliveMachine>(),
            std::mem::size_of::<genesys_keepalive::Stats>(),
            std::mem::size_of::<Config>()
        );
        assert_eq!(acked, N, "every connection's RTT window filled");
        // The breakdown: the live allocations of one more connection, by size.
        record::ON.store(true, Relaxed);
        let (one, _n1) = connect_with(config(&url), Options::default().reports_capacity(0))
            .await
            .expect("connect");
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        record::ON.store(false, Relaxed);
        let mut sizes = record::live();
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        println!(
            "  one connection's live allocations (bytes, largest first): {sizes:?} = {}",
            sizes.iter().sum::<usize>()
        );
        one.shutdown().await;
        for (h, _) in &conns {
            h.shutdown().await;
        }
        first.shutdown().await;
    });
    COUNTED.with(|c| c.set(false));
}

/// Records the size of every live counted allocation (for the breakdown test; one connection only).
mod record {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
    const SLOTS: usize = 8192;
    pub static ON: AtomicBool = AtomicBool::new(false);
    static PTRS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    static SIZES: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
    pub fn alloc(ptr: usize, size: usize) {
        if !ON.load(Relaxed) {
            return;
        }
        if let Some(i) = (0..SLOTS).find(|&i| PTRS[i].load(Relaxed) == 0) {
            PTRS[i].store(ptr, Relaxed);
            SIZES[i].store(size, Relaxed);
        }
    }
    pub fn dealloc(ptr: usize) {
        if let Some(i) = (0..SLOTS).find(|&i| PTRS[i].load(Relaxed) == ptr) {
            PTRS[i].store(0, Relaxed);
        }
    }
    pub fn live() -> Vec<usize> {
        (0..SLOTS)
            .filter(|&i| PTRS[i].load(Relaxed) != 0)
            .map(|i| SIZES[i].load(Relaxed))
            .collect()
    }
}
