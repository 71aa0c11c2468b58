//! Property tests (proptest, with shrinking): random event sequences under both profiles keep every
//! invariant of `genesys_keepalive_sim::check::Checker`, and the machine is a pure function of its inputs.

use arbitrary::{Arbitrary, Unstructured};
use genesys_keepalive::ProfileKind;
use genesys_keepalive_sim::check::{FuzzHarness, Op};
use proptest::prelude::*;

fn ops_from(bytes: &[u8]) -> Vec<Op> {
    let mut u = Unstructured::new(bytes);
    let mut ops = Vec::new();
    // `arbitrary` keeps producing (default) values from exhausted input: stop when it is used up.
    while !u.is_empty() && ops.len() < 400 {
        let Ok(op) = Op::arbitrary(&mut u) else { break };
        ops.push(op);
        // Interleave progress so that setups complete and heartbeats flow.
        ops.push(Op::Progress);
    }
    ops
}

fn profile(notifications: bool) -> ProfileKind {
    if notifications {
        ProfileKind::Notifications
    } else {
        ProfileKind::KeepaliveFrame
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn random_sequences_keep_every_invariant(
        bytes in proptest::collection::vec(any::<u8>(), 0..1200),
        seed in any::<u64>(),
        notifications in any::<bool>(),
    ) {
        let mut h = FuzzHarness::new(profile(notifications), seed);
        for (i, op) in ops_from(&bytes).into_iter().enumerate() {
            if let Err(v) = h.step(op) {
                prop_assert!(false, "op {i}: {v}");
            }
        }
    }

    #[test]
    fn the_same_inputs_give_the_same_outputs(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        seed in any::<u64>(),
        notifications in any::<bool>(),
    ) {
        let run = || {
            let mut h = FuzzHarness::new(profile(notifications), seed);
            h.record(true);
            for op in ops_from(&bytes) {
                if h.step(op).is_err() {
                    break;
                }
            }
            h.transcript().iter().map(|s| s.to_string()).collect::<Vec<String>>()
        };
        prop_assert_eq!(run(), run());
    }
}
