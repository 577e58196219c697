//! The keyspace: every key and peer id is a point, the SHA-256 of its bytes; closeness is the
//! XOR of two points, compared as a 256-bit big-endian number.

use libp2p::PeerId;
use rand::Rng;
use sha2::{Digest, Sha256};

/// A point in the keyspace: the SHA-256 of a key's bytes (or of a peer id's bytes).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key([u8; 32]);

/// The XOR distance between two [`Key`]s. Comparing the byte arrays lexicographically is
/// comparing the 256-bit numbers, so no big-integer arithmetic is needed.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct Distance([u8; 32]);

impl Key {
    /// The point of arbitrary key bytes (a FIND_NODE target, a record key, a provider key).
    pub fn new(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The point of a peer: the SHA-256 of its id's bytes.
    pub fn from_peer(peer: &PeerId) -> Self {
        Self::new(&peer.to_bytes())
    }

    /// A point from its raw 32 bytes (already a hash).
    pub fn from_hash(hash: [u8; 32]) -> Self {
        Self(hash)
    }

    /// The 32 bytes of the point.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The first point after this one in keyspace order (where a page that ended here goes
    /// on); `None` after the last point.
    pub fn next(&self) -> Option<Key> {
        let mut bytes = self.0;
        for byte in bytes.iter_mut().rev() {
            let (next, carry) = byte.overflowing_add(1);
            *byte = next;
            if !carry {
                return Some(Key(bytes));
            }
        }
        None
    }

    /// The XOR distance to `other`.
    pub fn distance(&self, other: &Key) -> Distance {
        let mut d = [0u8; 32];
        for (i, byte) in d.iter_mut().enumerate() {
            *byte = self.0[i] ^ other.0[i];
        }
        Distance(d)
    }

    /// The number of leading bits `self` and `other` share (256 when equal).
    pub fn common_prefix_len(&self, other: &Key) -> usize {
        self.distance(other).leading_zeros()
    }

    /// Bit `i` (0 is the most significant).
    fn bit(&self, i: usize) -> bool {
        self.0[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Looks for a peer id whose point shares exactly `cpl` leading bits with `self`, by trying
    /// random ids: a refresh lookup for that id really explores bucket `cpl`. Each try succeeds
    /// with probability 2^-(cpl+1), so `max_tries` bounds the work (about 2^(cpl+1) hashes are
    /// needed on average: 65,536 for cpl 15, a few milliseconds).
    pub fn random_peer_in_bucket(
        &self,
        cpl: usize,
        max_tries: usize,
        rng: &mut dyn Rng,
    ) -> Option<PeerId> {
        let mut digest = [0u8; 32];
        for _ in 0..max_tries {
            rng.fill_bytes(&mut digest);
            let multihash = libp2p::multihash::Multihash::<64>::wrap(0x12, &digest).ok()?;
            let peer = PeerId::from_multihash(multihash).ok()?;
            if Key::from_peer(&peer).common_prefix_len(self) == cpl {
                return Some(peer);
            }
        }
        None
    }

    /// Whether `self` lies in the keyspace region of `prefix_len` leading bits shared with
    /// `other`.
    pub fn shares_prefix(&self, other: &Key, prefix_len: usize) -> bool {
        (0..prefix_len.min(256)).all(|i| self.bit(i) == other.bit(i))
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Key(")?;
        for byte in &self.0[..6] {
            write!(f, "{byte:02x}")?;
        }
        write!(f, "..)")
    }
}

impl Distance {
    /// Leading zero bits: the common prefix length of the two keys.
    pub fn leading_zeros(&self) -> usize {
        for (i, byte) in self.0.iter().enumerate() {
            if *byte != 0 {
                return i * 8 + byte.leading_zeros() as usize;
            }
        }
        256
    }

    /// The 32 big-endian bytes of the distance.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn distance_is_symmetric_and_zero_to_self() {
        let a = Key::new(b"a");
        let b = Key::new(b"b");
        assert_eq!(a.distance(&b), b.distance(&a));
        assert_eq!(a.distance(&a).leading_zeros(), 256);
        assert_eq!(a.common_prefix_len(&a), 256);
    }

    #[test]
    fn ordering_is_numeric() {
        let zero = Key::from_hash([0; 32]);
        let mut one = [0u8; 32];
        one[31] = 1;
        let mut big = [0u8; 32];
        big[0] = 0x80;
        let (one, big) = (Key::from_hash(one), Key::from_hash(big));
        assert!(zero.distance(&one) < zero.distance(&big));
        assert_eq!(zero.common_prefix_len(&big), 0);
        assert_eq!(zero.common_prefix_len(&one), 255);
    }

    #[test]
    fn random_peer_lands_in_the_requested_bucket() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let local = Key::from_peer(&PeerId::random());
        for cpl in [0, 1, 5, 10, 15] {
            let peer = local
                .random_peer_in_bucket(cpl, 1 << 20, &mut rng)
                .expect("found within the budget");
            assert_eq!(Key::from_peer(&peer).common_prefix_len(&local), cpl);
        }
    }

    #[test]
    fn shares_prefix_matches_common_prefix_len() {
        let a = Key::new(b"x");
        let b = Key::new(b"y");
        let cpl = a.common_prefix_len(&b);
        assert!(a.shares_prefix(&b, cpl));
        assert!(!a.shares_prefix(&b, cpl + 1));
    }
}
