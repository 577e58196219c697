//! The provided keys, generated region by region in keyspace order, so that ten million of
//! them never sit in memory at once.
//!
//! A key's point is uniform in the keyspace (it is a SHA-256). The keyspace is cut into
//! 2^GEN_DEPTH buckets by the points' first bits; how many of the `K` keys fall in each bucket
//! is drawn once (K uniform bucket indices, counted: a multinomial draw), and each bucket's
//! points are drawn from its own seeded generator. Any range of buckets (a sweep region of
//! depth <= GEN_DEPTH) is then generated on its own, sorted, in a few milliseconds, and the
//! keys do not depend on the region depth or on how the regions are split among threads.

use kadence::key::Key;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Bucket depth of the generator: the sweep's depth cap (`Schedule::set_depth`).
pub const GEN_DEPTH: usize = 20;

pub struct KeySpace {
    seed: u64,
    /// Keys per bucket.
    counts: Vec<u32>,
}

/// A generator seed for bucket `b`: the seed and the bucket mixed (splitmix64), so that
/// neighbouring buckets do not get related streams.
fn mix(seed: u64, b: u64) -> u64 {
    let mut z = seed ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl KeySpace {
    pub fn new(keys: usize, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(mix(seed, u64::MAX));
        let mut counts = vec![0u32; 1 << GEN_DEPTH];
        for _ in 0..keys {
            counts[(rng.next_u64() >> (64 - GEN_DEPTH)) as usize] += 1;
        }
        Self { seed, counts }
    }

    /// The points of region `index` at `depth` (<= GEN_DEPTH), in keyspace order, into `out`.
    pub fn region(&self, index: u64, depth: usize, out: &mut Vec<Key>) {
        out.clear();
        let shift = GEN_DEPTH - depth;
        let first = (index << shift) as usize;
        for b in first..first + (1usize << shift) {
            let count = self.counts[b];
            if count == 0 {
                continue;
            }
            let mut rng = StdRng::seed_from_u64(mix(self.seed, b as u64));
            let start = out.len();
            for _ in 0..count {
                let mut bytes = [0u8; 32];
                rng.fill_bytes(&mut bytes);
                // The bucket's prefix, then random bits.
                let w = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
                let w = ((b as u64) << (64 - GEN_DEPTH)) | (w >> GEN_DEPTH);
                bytes[..8].copy_from_slice(&w.to_be_bytes());
                out.push(Key::from_hash(bytes));
            }
            out[start..].sort_unstable();
        }
    }
}
