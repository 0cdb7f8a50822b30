//! A small, fast, non-cryptographic random generator (SplitMix64) for request ids and service
//! selection. Seeded from the kernel once; nothing here needs to be unpredictable to an attacker.

/// SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded from the kernel's randomness.
    pub fn from_entropy() -> Self {
        Rng::with_seed(crate::sys::random_u64())
    }

    /// A generator with a fixed seed (tests, simulations).
    pub fn with_seed(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut x = self.state;
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^ (x >> 31)
    }

    /// A uniform draw in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        // The top 53 bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_in_range_and_roughly_uniform() {
        let mut rng = Rng::with_seed(7);
        let mut below_half = 0;
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            if x < 0.5 {
                below_half += 1;
            }
        }
        assert!((4_700..5_300).contains(&below_half), "{below_half}");
    }

    #[test]
    fn seeds_replay() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut r = Rng::with_seed(1);
                move |_| r.next_u64()
            })
            .collect();
        let mut r = Rng::with_seed(1);
        assert!(a.iter().all(|&x| x == r.next_u64()));
    }
}
