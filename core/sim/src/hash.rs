//! A fixed, cheap hasher for the simulator's and the checker's tables (ids, sequence numbers, tokens):
//! they are hit on every event, where SipHash's per-lookup cost showed in the week's profile. Keys come
//! from the machine and the simulation, not from an adversary, so flooding resistance buys nothing here;
//! and a fixed hash keeps runs free of OS randomness.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

use genesys_keepalive::rng::{fnv1a64, mix64, FNV_OFFSET};

/// Integers go through SplitMix64's finalizer, bytes through FNV-1a.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FastHasher(u64);

impl Default for FastHasher {
    fn default() -> Self {
        FastHasher(FNV_OFFSET)
    }
}

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0 = fnv1a64(self.0, bytes);
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = mix64(self.0 ^ n);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// A `HashMap` with [`FastHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// A `HashSet` with [`FastHasher`].
pub(crate) type FastSet<K> = HashSet<K, BuildHasherDefault<FastHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_strings_spread_and_round_trip() {
        let mut m: FastMap<u64, u64> = FastMap::default();
        for i in 0..10_000 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000).all(|i| m[&i] == i * 2));
        let mut s: FastSet<String> = FastSet::default();
        assert!(s.insert("tok-1".into()));
        assert!(!s.insert("tok-1".into()));
        assert!(s.contains("tok-1") && !s.contains("tok-2"));
        // Neighbouring ids land in different places.
        let h = |n: u64| {
            let mut h = FastHasher::default();
            h.write_u64(n);
            h.finish()
        };
        assert_ne!(h(1) >> 57, h(2) >> 57);
    }
}
