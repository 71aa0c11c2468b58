//! The soak (`genesys_keepalive_testkit::soak`) on both drivers: `SOAK_CONNECTIONS` connections (200) for
//! `SOAK_SECS` (20) through the fault proxy under a seeded fault schedule. The full one:
//! `SOAK_CONNECTIONS=1000 SOAK_SECS=120 cargo test --release -p genesys-keepalive-testkit --test soak -- --nocapture`.
//!
//! The two tests share the process's file descriptors and RSS, so they run one after the other.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;

use genesys_keepalive_testkit::scenarios::DriverUnderTest;
use genesys_keepalive_testkit::soak::{soak, AllocatorHooks, SoakSpec};

mod async_std_support;
mod tokio_support;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Bytes the process's allocations hold right now: the heap the program uses, next to the RSS the
/// allocator keeps from the system (the two part when freed memory is not given back).
static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);

struct Counting;

// SAFETY: every call is forwarded to `System` unchanged; the counter only adds the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as i64, Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as i64, Relaxed);
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(new_size as i64 - layout.size() as i64, Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live_heap_kib() -> u64 {
    (LIVE_BYTES.load(Relaxed).max(0) / 1024) as u64
}

/// glibc's `malloc_trim(0)`: every arena's free pages back to the system.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_free() {
    extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointer and may be called at any time from any thread.
    unsafe {
        malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_free() {}

fn spec() -> SoakSpec {
    SoakSpec {
        allocator: Some(AllocatorHooks {
            live_heap_kib,
            release_free,
        }),
        ..SoakSpec::from_env()
    }
}

/// The soak's logs are checked for the secret line by line, not kept: kept, they were the process's
/// growing memory (22 MB of tracing text after 30 s at 300 connections, by heaptrack), not the clients'.
fn quiet_logs() {
    tokio_support::stop_keeping_logs();
    async_std_support::stop_keeping_logs();
}

fn assert_no_secret_logged() {
    let hits = tokio_support::secret_writes() + async_std_support::secret_writes();
    assert_eq!(hits, 0, "tracing lines held the client secret");
}

#[test]
fn soak_tokio() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    quiet_logs();
    let d = tokio_support::Tokio::new();
    d.block_on(Box::pin(async {
        soak(&d, spec()).await;
    }));
    assert_no_secret_logged();
}

#[test]
fn soak_async_std() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    quiet_logs();
    let d = async_std_support::FuturesDriver::async_std();
    d.block_on(Box::pin(async {
        soak(&d, spec()).await;
    }));
    assert_no_secret_logged();
}
