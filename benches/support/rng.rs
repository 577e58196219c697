//! SplitMix64, the small seeded generator the swarm benchmarks draw their networks and
//! workloads from: the same seed gives the same keys, delays and draws on every machine.

use libp2p::identity::Keypair;

/// SplitMix64 over its state `.0`, which is the seed before the first draw.
pub struct Rng(pub u64);

// Not every benchmark that shares this file draws every kind of value.
#[allow(dead_code)]
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (by remainder: the bias is far below what a benchmark notices).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A number in [0, 1), from the draw's top 53 bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// 32 bytes: four draws, little-endian.
    pub fn bytes(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }

    /// Two distinct indices below `n`.
    pub fn pair(&mut self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let b = (a + 1 + self.below(n - 1)) % n;
        (a, b)
    }

    /// An ed25519 key from one [`Rng::bytes`].
    pub fn keypair(&mut self) -> Keypair {
        Keypair::ed25519_from_bytes(self.bytes()).expect("ed25519 key")
    }

    /// A key shaped like a CID's sha2-256 multihash.
    pub fn content_key(&mut self) -> Vec<u8> {
        [&[0x12, 0x20][..], &self.bytes()].concat()
    }
}
