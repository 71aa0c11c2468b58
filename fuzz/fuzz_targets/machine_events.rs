//! Arbitrary event sequences through `genesys_keepalive_sim::check::FuzzHarness`: time advancing (by zero,
//! small and huge steps, and stale `now`s), HTTP replies, socket events, inbound frames, send reports,
//! stale and bogus ids. Every invariant of `check::Checker` is checked after every step; a violation
//! panics with its message.
//!
//! Decode a crash: `cargo +nightly fuzz fmt machine_events <artifact>` prints the ops; run the artifact
//! with `FUZZ_TRANSCRIPT=1` to print every event and action up to the violation.
#![no_main]

use std::sync::OnceLock;

use arbitrary::Arbitrary;
use genesys_keepalive_sim::check::{FuzzHarness, Op};
use genesys_keepalive::ProfileKind;
use libfuzzer_sys::fuzz_target;

/// Enough for rollovers, token refreshes and backoff exhaustion; keeps executions fast.
const MAX_OPS: usize = 512;

#[derive(Debug, Arbitrary)]
struct Input {
    notifications: bool,
    seed: u16,
    ops: Vec<Op>,
}

fn transcript_wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| std::env::var_os("FUZZ_TRANSCRIPT").is_some())
}

fuzz_target!(|input: Input| {
    let profile = if input.notifications {
        ProfileKind::Notifications
    } else {
        ProfileKind::KeepaliveFrame
    };
    let mut h = FuzzHarness::new(profile, u64::from(input.seed));
    h.record(transcript_wanted());
    for (i, op) in input.ops.into_iter().take(MAX_OPS).enumerate() {
        if let Err(v) = h.step(op) {
            if transcript_wanted() {
                for line in h.transcript() {
                    eprintln!("{line}");
                }
            }
            panic!("{profile:?} seed {}, op {i}: {v}", input.seed);
        }
    }
});
