//! `fleet --shard K/N`: which connections this process takes, by rendezvous (highest-random-weight)
//! hashing of the connection name.
//!
//! The weight of `name` for shard `i` is
//! `mix(FNV-1a-64(name's UTF-8 bytes, a 0x00 byte, i as 8 little-endian bytes))`, where FNV-1a-64 starts from
//! the offset basis 0xcbf29ce484222325 and multiplies by the prime 0x100000001b3, and `mix` is the
//! SplitMix64 finalizer (`x ^= x >> 30; x *= 0xbf58476d1ce4e5b9; x ^= x >> 27; x *= 0x94d049bb133111eb;
//! x ^= x >> 31`, wrapping). A name belongs to the shard with the highest weight (the lowest `i` on a tie).
//! Everything is fixed arithmetic: the assignment never changes between Rust versions, machines or runs, and
//! going from N to N+1 shards moves only the names whose new shard N wins (about 1/(N+1) of them), all to
//! that new shard.

use std::fmt;
use std::str::FromStr;

use genesys_keepalive::rng::{fnv1a64, mix64, FNV_OFFSET};

/// This process's shard: `index` of `count` (0 ≤ index < count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// Whether `name` falls to this shard.
    pub fn owns(&self, name: &str) -> bool {
        shard_of(name, self.count) == self.index
    }
}

impl FromStr for Shard {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a shard: write K/N with 0 <= K < N, e.g. 0/3");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u64 = k.trim().parse().map_err(|_| bad())?;
        let count: u64 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.index, self.count)
    }
}

/// The rendezvous weight of `name` for shard `i` (see the module documentation).
pub fn weight(name: &str, i: u64) -> u64 {
    let h = fnv1a64(FNV_OFFSET, name.as_bytes());
    let h = fnv1a64(h, &[0]);
    mix64(fnv1a64(h, &i.to_le_bytes()))
}

/// The shard (0-based) that `name` falls to among `count` (at least 1).
pub fn shard_of(name: &str, count: u64) -> u64 {
    let mut best = (0, weight(name, 0));
    for i in 1..count {
        let w = weight(name, i);
        if w > best.1 {
            best = (i, w);
        }
    }
    best.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k_of_n() {
        assert_eq!("1/3".parse(), Ok(Shard { index: 1, count: 3 }));
        for bad in ["3/3", "0/0", "1", "a/2", "-1/2", ""] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_hash_is_fixed() {
        // FNV-1a-64 of "a" is the published test vector 0xaf63dc4c8601ec8c.
        assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
        // The assignments below were computed once from the documented formula (by an independent Python
        // implementation of it); they must never change
        // (every replica of a fleet, built by any Rust version, must agree).
        let names = [
            "org-0", "org-1", "org-2", "org-3", "org-4", "org-5", "acme", "globex",
        ];
        let got: Vec<u64> = names.iter().map(|n| shard_of(n, 3)).collect();
        assert_eq!(got, EXPECTED_OF_3);
        let got: Vec<u64> = names.iter().map(|n| shard_of(n, 5)).collect();
        assert_eq!(got, EXPECTED_OF_5);
    }

    const EXPECTED_OF_3: [u64; 8] = [2, 2, 1, 0, 0, 1, 0, 1];
    const EXPECTED_OF_5: [u64; 8] = [4, 2, 1, 4, 0, 3, 0, 3];

    #[test]
    fn growing_moves_about_one_in_n_plus_one_and_only_to_the_new_shard() {
        let names: Vec<String> = (0..20_000).map(|i| format!("org-{i}")).collect();
        for n in 1..8u64 {
            let moved: Vec<&String> = names
                .iter()
                .filter(|name| shard_of(name, n) != shard_of(name, n + 1))
                .collect();
            for name in &moved {
                assert_eq!(shard_of(name, n + 1), n, "{name} moved to an old shard");
            }
            let share = moved.len() as f64 / names.len() as f64;
            let expected = 1.0 / (n + 1) as f64;
            assert!(
                (share - expected).abs() < expected * 0.1,
                "N={n}: {share:.4} moved, expected about {expected:.4}"
            );
        }
    }

    #[test]
    fn shards_are_balanced_and_disjoint() {
        let names: Vec<String> = (0..10_000).map(|i| format!("tenant-{i}")).collect();
        let count = 4;
        let mut per = [0usize; 4];
        for name in &names {
            let owners: Vec<u64> = (0..count)
                .filter(|&i| Shard { index: i, count }.owns(name))
                .collect();
            assert_eq!(owners.len(), 1, "{name} is owned by exactly one shard");
            per[owners[0] as usize] += 1;
        }
        for p in per {
            assert!((2_200..=2_800).contains(&p), "{per:?}");
        }
    }
}
