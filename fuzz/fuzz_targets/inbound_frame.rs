//! Arbitrary bytes as inbound frames, under both profiles, on an opened connection: the input is split at
//! 0xFF bytes (never part of UTF-8) into frames, each fed as text when it is UTF-8 and as binary otherwise.
//! `frames::classify` is also called on each text directly. Nothing may panic, and every invariant of
//! `check::Checker` must hold after every frame and after the timers that follow.
#![no_main]

use genesys_keepalive_sim::check::{FuzzHarness, Op};
use genesys_keepalive::frames::classify;
use genesys_keepalive::ProfileKind;
use libfuzzer_sys::fuzz_target;

const MAX_FRAMES: usize = 64;

fuzz_target!(|data: &[u8]| {
    let frames: Vec<&[u8]> = data.split(|b| *b == 0xFF).take(MAX_FRAMES).collect();
    for profile in [ProfileKind::Notifications, ProfileKind::KeepaliveFrame] {
        for frame in &frames {
            if let Ok(text) = std::str::from_utf8(frame) {
                let _ = classify(profile, text);
            }
        }
        // Even seed: the keepalive-frame profile gets OAuth credentials (a bearer token on the socket).
        let mut h = FuzzHarness::new(profile, 2);
        match h.open_connection(64) {
            Ok(true) => {}
            Ok(false) => panic!("{profile:?}: the harness could not open a connection"),
            Err(v) => panic!("{profile:?}, opening: {v}"),
        }
        for (i, frame) in frames.iter().enumerate() {
            if let Err(v) = h.inbound_bytes(frame) {
                panic!(
                    "{profile:?}, frame {i} ({:?}): {v}",
                    String::from_utf8_lossy(frame)
                );
            }
        }
        // Let the timers run over whatever the frames did (rollover, dead peer, reconnect).
        for i in 0..8 {
            if let Err(v) = h.step(Op::Progress) {
                panic!("{profile:?}, progress step {i} after the frames: {v}");
            }
        }
    }
});
