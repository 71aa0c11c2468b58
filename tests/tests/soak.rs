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

#[test]
fn soak_tokio() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = tokio_support::Tokio::new();
    d.block_on(Box::pin(async {
        soak(&d, SoakSpec::from_env()).await;
    }));
}

#[test]
fn soak_async_std() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let d = async_std_support::FuturesDriver::async_std();
    d.block_on(Box::pin(async {
        soak(&d, SoakSpec::from_env()).await;
    }));
}
