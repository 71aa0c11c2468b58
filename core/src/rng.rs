//! A small seeded PRNG (SplitMix64): jitter and connection ids come from here, never from the OS, so the
//! same seed and inputs give the same outputs.

/// SplitMix64 (Steele, Lea, Flood 2014): 64 bits of state, passes BigCrush, enough for jitter and ids.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// Seeds the generator.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.state)
    }

    /// A value in `0..=max`, uniform up to a bias below 2^-64 per draw.
    ///
    /// ```
    /// let mut r = genesys_keepalive::rng::Rng::new(1);
    /// assert!((0..1000).all(|_| r.below_or_equal(10) <= 10));
    /// assert_eq!(r.below_or_equal(0), 0);
    /// ```
    pub fn below_or_equal(&mut self, max: u64) -> u64 {
        if max == u64::MAX {
            return self.next_u64();
        }
        ((self.next_u64() as u128 * (max as u128 + 1)) >> 64) as u64
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// A UUID v4 string (the seed's connection ids), from this generator.
    pub fn uuid_v4(&mut self) -> String {
        let hi = self.next_u64();
        let lo = self.next_u64();
        let b = ((hi as u128) << 64) | lo as u128;
        let b = (b & !(0xF000u128 << 64)) | (0x4000u128 << 64); // version 4
        let b = (b & !(0xC000_0000_0000_0000u128)) | 0x8000_0000_0000_0000u128; // variant 10
        format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            (b >> 96) as u32,
            (b >> 80) as u16,
            (b >> 64) as u16,
            (b >> 48) as u16,
            b & 0xFFFF_FFFF_FFFF
        )
    }
}

/// SplitMix64's finalizer: a fixed bijective mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// 64-bit FNV-1a's offset basis.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `bytes`, continuing from `h` (start from [`FNV_OFFSET`]): a fixed hash that never
/// changes between Rust versions or runs.
///
/// ```
/// use genesys_keepalive::rng::{fnv1a64, FNV_OFFSET};
/// assert_eq!(fnv1a64(FNV_OFFSET, b"a"), 0xaf63_dc4c_8601_ec8c);
/// assert_eq!(fnv1a64(fnv1a64(FNV_OFFSET, b"a"), b"b"), fnv1a64(FNV_OFFSET, b"ab"));
/// ```
pub fn fnv1a64(h: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(h, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn uuid_has_v4_shape() {
        let u = Rng::new(9).uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
    }
}
