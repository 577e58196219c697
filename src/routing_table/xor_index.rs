//! The ordered index of the [`FullTable`](super::FullTable): every key, sorted, pointing at the
//! slot of its peer. Sorted keys make the peers of any keyspace prefix one contiguous range,
//! which is what finds the closest peers to a target without looking at the others.
//!
//! Why the walk below is exact: take the prefixes of the target, longest shared first. Every key
//! that shares `d + 1` leading bits with the current prefix (the "near" half of its subtree) is
//! closer to the target than every key that shares only `d` (the "far" half), since their XOR
//! distances agree on the first `d` bits and the near ones have a 0 where the far ones have a 1
//! at bit `d`. So the walk descends into the near half while it alone holds more peers than are
//! still needed; otherwise it takes all of the near half (sorted) and goes on in the far half
//! for the rest. Each step costs one B-tree range of at most `count + 1` keys, and there are at
//! most 256 steps. The descent is skipped: the target's neighbours in key order say at once how
//! deep it goes (see `start_depth`), so with random keys a few steps remain, and a
//! 1,000,000-peer table answers from a few hundred keys instead of a million.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Unbounded};

use crate::key::{Distance, Key};

/// Keys in order, each with the slot of its peer in the table's storage.
#[derive(Debug, Default)]
pub(super) struct XorIndex {
    by_key: BTreeMap<Key, u32>,
}

impl XorIndex {
    /// An index of the given keys and slots, built in one go (a sort and a bulk build, faster
    /// than as many inserts).
    pub(super) fn build(keys: impl IntoIterator<Item = (Key, u32)>) -> Self {
        Self {
            by_key: keys.into_iter().collect(),
        }
    }

    /// Adds `key` at `slot`; returns the slot it had, if it was in.
    pub(super) fn insert(&mut self, key: Key, slot: u32) -> Option<u32> {
        self.by_key.insert(key, slot)
    }

    /// Removes `key`; returns its slot.
    pub(super) fn remove(&mut self, key: &Key) -> Option<u32> {
        self.by_key.remove(key)
    }

    /// Points `key`, which must be in, at a new slot (its peer moved in the storage).
    pub(super) fn move_to(&mut self, key: &Key, slot: u32) {
        if let Some(s) = self.by_key.get_mut(key) {
            *s = slot;
        }
    }

    /// Number of keys.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Every key with its slot, in key order.
    #[cfg(test)]
    pub(super) fn iter(&self) -> impl Iterator<Item = (&Key, &u32)> {
        self.by_key.iter()
    }

    /// The slots of the `count` keys closest to `target` by XOR distance, closest first (all of
    /// them when there are fewer). See the module docs for why the walk is exact.
    pub(super) fn closest(&self, target: &Key, count: usize) -> Vec<u32> {
        let mut need = count.min(self.by_key.len());
        let mut out = Vec::with_capacity(need);
        if need == 0 {
            return out;
        }
        // The current subtree: the keys sharing `depth` leading bits with `prefix`. Its bits
        // from `depth` on are always the target's; a bit is flipped when the walk goes far.
        // Invariant: it holds at least `need` keys not yet taken.
        let mut prefix = *target.as_bytes();
        let mut depth = self.start_depth(target, need);
        let mut near: Vec<(&Key, u32)> = Vec::with_capacity(need + 1);
        let mut sorted: Vec<(Distance, u32)> = Vec::with_capacity(need);
        while need > 0 {
            if depth == 256 {
                // A single point is left, and the invariant says it is there.
                if let Some(&slot) = self.by_key.get(&Key::from_hash(prefix)) {
                    out.push(slot);
                }
                break;
            }
            let (low, high) = subtree(&prefix, depth + 1);
            near.clear();
            near.extend(
                self.by_key
                    .range(low..=high)
                    .take(need + 1)
                    .map(|(key, &slot)| (key, slot)),
            );
            if near.len() <= need {
                sorted.clear();
                sorted.extend(near.iter().map(|&(key, slot)| (key.distance(target), slot)));
                sorted.sort_unstable_by_key(|&(d, _)| d);
                out.extend(sorted.iter().map(|&(_, slot)| slot));
                need -= near.len();
                prefix[depth / 8] ^= 0x80 >> (depth % 8);
            }
            depth += 1;
        }
        out
    }

    /// Where the walk can start without changing its outcome: the deepest `depth` whose
    /// subtree around `target` holds more than `need` keys (the walk would only descend until
    /// there, one B-tree range per bit). The keys of that subtree sit around the target's place
    /// in key order, their common prefix with it shrinking outwards, so the `need + 1`
    /// neighbours on each side tell: it is the `need + 1`-th longest common prefix among them.
    fn start_depth(&self, target: &Key, need: usize) -> usize {
        let mut prefixes: Vec<usize> = self
            .by_key
            .range(..=*target)
            .rev()
            .take(need + 1)
            .chain(
                self.by_key
                    .range((Excluded(*target), Unbounded))
                    .take(need + 1),
            )
            .map(|(key, _)| key.common_prefix_len(target))
            .collect();
        if prefixes.len() <= need {
            return 0;
        }
        let (_, &mut depth, _) = prefixes.select_nth_unstable_by_key(need, |&cpl| Reverse(cpl));
        depth
    }
}

/// The smallest and the largest key sharing the first `bits` bits of `prefix`: the bounds of
/// that subtree in key order.
fn subtree(prefix: &[u8; 32], bits: usize) -> (Key, Key) {
    let (mut low, mut high) = (*prefix, *prefix);
    let whole = bits / 8;
    if whole < 32 {
        // The bits of byte `whole` that stay: the first `bits % 8`.
        let kept = !(0xffu8 >> (bits % 8));
        low[whole] &= kept;
        high[whole] |= !kept;
        low[whole + 1..].fill(0);
        high[whole + 1..].fill(0xff);
    }
    (Key::from_hash(low), Key::from_hash(high))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn brute_force(keys: &[Key], target: &Key, count: usize) -> Vec<u32> {
        let mut all: Vec<(Distance, u32)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.distance(target), i as u32))
            .collect();
        all.sort();
        all.truncate(count);
        all.into_iter().map(|(_, slot)| slot).collect()
    }

    #[test]
    fn subtree_bounds() {
        let prefix = [0b1010_1010u8; 32];
        let (low, high) = subtree(&prefix, 0);
        assert_eq!((low.as_bytes(), high.as_bytes()), (&[0; 32], &[0xff; 32]));
        let (low, high) = subtree(&prefix, 3);
        assert_eq!(low.as_bytes()[0], 0b1010_0000);
        assert_eq!(high.as_bytes()[0], 0b1011_1111);
        assert!(low.as_bytes()[1..].iter().all(|&b| b == 0));
        assert!(high.as_bytes()[1..].iter().all(|&b| b == 0xff));
        let (low, high) = subtree(&prefix, 8);
        assert_eq!(
            (low.as_bytes()[0], high.as_bytes()[0]),
            (0b1010_1010, 0b1010_1010)
        );
        assert_eq!((low.as_bytes()[1], high.as_bytes()[1]), (0, 0xff));
        let (low, high) = subtree(&prefix, 256);
        assert_eq!((low.as_bytes(), high.as_bytes()), (&prefix, &prefix));
    }

    #[test]
    fn a_target_in_the_index_and_keys_one_bit_apart() {
        // Keys that differ only in their last bits: the walk goes all the way down.
        let mut keys = Vec::new();
        for last in [0u8, 1, 2, 3, 0x80, 0xff] {
            let mut bytes = [7u8; 32];
            bytes[31] = last;
            keys.push(Key::from_hash(bytes));
        }
        let index = XorIndex::build(keys.iter().enumerate().map(|(i, k)| (*k, i as u32)));
        for target in &keys {
            for count in 0..=keys.len() + 1 {
                assert_eq!(
                    index.closest(target, count),
                    brute_force(&keys, target, count)
                );
            }
        }
        assert!(XorIndex::default().closest(&keys[0], 5).is_empty());
    }

    /// Keys drawn from a few clusters with long shared prefixes, so that the walk meets empty
    /// halves, lopsided subtrees and deep levels, not only the random keys of real peers.
    fn clustered_key() -> impl Strategy<Value = Key> {
        (0usize..4, any::<[u8; 32]>(), 0usize..=256).prop_map(|(cluster, noise, shared)| {
            let mut bytes = [cluster as u8 * 0x40; 32];
            for bit in shared..256 {
                if noise[bit / 8] & (0x80 >> (bit % 8)) != 0 {
                    bytes[bit / 8] ^= 0x80 >> (bit % 8);
                }
            }
            Key::from_hash(bytes)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn closest_matches_a_full_sort(
            keys in prop::collection::btree_set(clustered_key(), 0..200),
            targets in prop::collection::vec(clustered_key(), 1..4),
            counts in prop::collection::vec(0usize..220, 1..4),
        ) {
            let keys: Vec<Key> = keys.into_iter().collect();
            let index = XorIndex::build(keys.iter().enumerate().map(|(i, k)| (*k, i as u32)));
            for target in &targets {
                for &count in &counts {
                    let want = brute_force(&keys, target, count);
                    prop_assert_eq!(index.closest(target, count), want);
                }
            }
        }
    }
}
