//! The soak (`genesys_keepalive_testkit::soak`) on both drivers: `SOAK_CONNECTIONS` connections (200) for
//! `SOAK_SECS` (20) through the fault proxy under a seeded fault schedule. The full one:
//! `SOAK_CONNECTIONS=1000 SOAK_SECS=120 cargo test --release -p genesys-keepalive-testkit --test soak -- --nocapture`.
//!
//! The two tests share the process's file descriptors and RSS, so they run one after the other.

use std::sync::Mutex;

use genesys_keepalive_testkit::scenarios::DriverUnderTest;
use genesys_keepalive_testkit::soak::{soak, SoakSpec};

mod async_std_support;
mod tokio_support;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

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
        soak(&d, SoakSpec::from_env()).await;
    }));
    assert_no_secret_logged();
}

#[test]
fn soak_async_std() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    quiet_logs();
    let d = async_std_support::FuturesDriver::async_std();
    d.block_on(Box::pin(async {
        soak(&d, SoakSpec::from_env()).await;
    }));
    assert_no_secret_logged();
}
