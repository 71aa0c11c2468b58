//! Memory per connection and allocations per operation, measured with a counting global allocator.
//!
//! This is a libtest target (auto-discovered, `harness = true`), kept apart from the timing benches so that
//! the counting allocator cannot perturb them. Run (optimized, output shown):
//!
//! ```text
//! cargo test --release -p genesys-keepalive --bench memory -- --nocapture --test-threads=1
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use genesys_keepalive::frames;
use genesys_keepalive::{Action, Event, KeepAliveMachine, ProfileKind};

mod common;
use common::{profile_name, Driver, PROFILES};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static ALLOC_BYTES: AtomicU64 = AtomicU64::new(0);
static FREED_BYTES: AtomicU64 = AtomicU64::new(0);
/// The counters are process-wide: measure one thing at a time.
static SERIAL: Mutex<()> = Mutex::new(());

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREED_BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        ALLOC_BYTES.fetch_add(new_size as u64, Relaxed);
        FREED_BYTES.fetch_add(layout.size() as u64, Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone, Copy)]
struct Snap {
    allocs: u64,
    live: i64,
}

fn snap() -> Snap {
    Snap {
        allocs: ALLOCS.load(Relaxed),
        live: ALLOC_BYTES.load(Relaxed) as i64 - FREED_BYTES.load(Relaxed) as i64,
    }
}

/// Delivers `n` distinct notifications (notifications profile), as the gateway publishes them.
fn deliver(d: &mut Driver, from: u64, n: u64) {
    let socket = d.socket();
    for seq in from..from + n {
        d.now += Duration::from_millis(1);
        let text = format!(
            r#"{{"topicName":"v2.users.sim.presence","version":"2","eventBody":{{"seq":{seq}}},"metadata":{{"CorrelationId":"n-{seq}"}}}}"#
        );
        d.m.handle(d.now, Event::FrameReceived { socket, text });
        while let Some(a) = d.m.poll_action() {
            assert!(matches!(a, Action::Deliver(_)));
        }
        if seq % 500 == 0 {
            // Keep the connection alive: answer heartbeats as they fall due.
            while d.m.poll_timeout().is_some_and(|t| t <= d.now) {
                d.m.handle(d.now, Event::Tick);
                d.pump();
            }
        }
    }
}

#[test]
fn memory_per_connection_and_allocations_per_operation() {
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    println!(
        "size_of::<KeepAliveMachine>() = {} bytes",
        std::mem::size_of::<KeepAliveMachine>()
    );
    const N: usize = 200;
    for profile in PROFILES {
        // Heap held by N established machines (steady state: 200 heartbeat rounds, RTT window full).
        let before = snap();
        let mut conns: Vec<Driver> = (0..N)
            .map(|_| {
                let mut d = Driver::established(profile, 200);
                // Count the machine only, not the bench driver's own buffers.
                d.pending = Default::default();
                d.last_heartbeat = None;
                d
            })
            .collect();
        let after = snap();
        let vec_bytes = (conns.capacity() * std::mem::size_of::<Driver>()) as i64;
        let heap = (after.live - before.live - vec_bytes) as f64 / N as f64;
        println!(
            "[{}] heap per established connection (steady state): {:.0} bytes (+{} inline)",
            profile_name(profile),
            heap,
            std::mem::size_of::<KeepAliveMachine>()
        );

        // Allocations per operation, averaged over 1000 rounds on one connection.
        let d = &mut conns[0];
        let rounds = 1000u64;
        let mut tick_allocs = 0;
        let mut ack_allocs = 0;
        let mut idle_allocs = 0;
        for _ in 0..rounds {
            let s0 = snap();
            d.m.handle(d.now + Duration::from_millis(1), Event::Tick);
            idle_allocs += snap().allocs - s0.allocs;
            let s0 = snap();
            d.emit_heartbeat();
            tick_allocs += snap().allocs - s0.allocs;
            let text = d.ack_text();
            d.now += common::RTT;
            let socket = d.socket();
            let s0 = snap();
            d.m.handle(d.now, Event::FrameReceived { socket, text });
            ack_allocs += snap().allocs - s0.allocs;
            d.pump();
        }
        println!(
            "[{}] allocations: idle tick {:.2}; heartbeat tick + SendCompleted (driver's drain included) {:.2}; ack {:.2}",
            profile_name(profile),
            idle_allocs as f64 / rounds as f64,
            tick_allocs as f64 / rounds as f64,
            ack_allocs as f64 / rounds as f64,
        );

        let (text, what) = match profile {
            ProfileKind::Notifications => (common::PONG, "pong"),
            ProfileKind::KeepaliveFrame => {
                (r#"{"type":"KEEP_ALIVE_ACK","seq":4242}"#, "KEEP_ALIVE_ACK")
            }
        };
        let s0 = snap();
        for _ in 0..rounds {
            std::hint::black_box(frames::classify(profile, std::hint::black_box(text)));
        }
        println!(
            "[{}] allocations in frames::classify({what}) alone: {:.2}",
            profile_name(profile),
            (snap().allocs - s0.allocs) as f64 / rounds as f64
        );

        if profile == ProfileKind::Notifications {
            // The duplicate filter fills up to `dedup_window` (4096) keys, then stays at that size.
            let d = &mut conns[1];
            let s0 = snap();
            deliver(d, 0, 5_000);
            let grown = snap().live - s0.live;
            println!(
                "[notifications] heap growth after 5,000 distinct notifications (dedup window full): {grown} bytes"
            );
            let s0 = snap();
            deliver(d, 5_000, 5_000);
            println!(
                "[notifications] further growth over the next 5,000: {} bytes",
                snap().live - s0.live
            );
        }
        drop(conns);
    }
}
