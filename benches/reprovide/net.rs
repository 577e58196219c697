//! The simulated network: node ids, each node's k-bucket view, lookups driven synchronously,
//! and the true closest nodes to any point.

use std::collections::HashMap;
use std::ops::Range;
use std::time::Instant;

use kadence::key::{Distance, Key};
use kadence::routing::lookup::{Lookup, LookupConfig, LookupStep};
use kadence::{ConnectionType, PeerRecord};
use libp2p::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, RngExt};

use crate::K;

fn random_peer(rng: &mut StdRng) -> PeerId {
    let mut digest = [0u8; 32];
    rng.fill_bytes(&mut digest);
    PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &digest).unwrap()).unwrap()
}

/// The first 64 bits of a point: enough to order and bucket 20,000 random points (two of them
/// share 64 bits with probability about 1e-11).
pub fn word(key: &Key) -> u64 {
    u64::from_be_bytes(key.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// The `count` entries of `nodes` closest to `target`, closest first.
pub fn closest_of(
    points: &[Key],
    nodes: impl Iterator<Item = usize>,
    target: &Key,
    count: usize,
) -> Vec<usize> {
    let mut by: Vec<(Distance, usize)> = nodes.map(|i| (points[i].distance(target), i)).collect();
    if count == 0 {
        return Vec::new();
    }
    if by.len() > count {
        by.select_nth_unstable(count - 1);
        by.truncate(count);
    }
    by.sort_unstable();
    by.into_iter().map(|(_, i)| i).collect()
}

/// The simulated network.
pub struct Network {
    pub ids: Vec<PeerId>,
    pub points: Vec<Key>,
    /// Each node's k-bucket view (indices into `ids`), in no particular order.
    pub tables: Vec<Vec<usize>>,
    index: HashMap<PeerId, usize>,
    /// Every node but `except` (the provider), in keyspace order, and their first 64 bits.
    sorted: Vec<u32>,
    sorted_words: Vec<u64>,
}

impl Network {
    /// `n` random nodes, each with up to K random peers in each common-prefix-length bucket.
    /// `except` (the provider) is left out of [`Network::true_closest`].
    pub fn new(n: usize, except: usize, rng: &mut StdRng) -> Self {
        let ids: Vec<PeerId> = (0..n).map(|_| random_peer(rng)).collect();
        let points: Vec<Key> = ids.iter().map(Key::from_peer).collect();
        let words: Vec<u64> = points.iter().map(word).collect();
        let mut tables = Vec::with_capacity(n);
        let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); 257];
        for me in 0..n {
            for bucket in &mut buckets {
                bucket.clear();
            }
            for other in (0..n).filter(|o| *o != me) {
                // 64 bits decide every bucket a 20,000-node table fills; past them, the full
                // points.
                let x = words[me] ^ words[other];
                let cpl = if x != 0 {
                    x.leading_zeros() as usize
                } else {
                    points[me].common_prefix_len(&points[other])
                };
                buckets[cpl].push(other);
            }
            let mut table = Vec::new();
            for bucket in &mut buckets {
                // Up to K distinct random peers of the bucket (a partial Fisher-Yates shuffle).
                let take = bucket.len().min(K);
                for t in 0..take {
                    let r = rng.random_range(t..bucket.len());
                    bucket.swap(t, r);
                }
                table.extend_from_slice(&bucket[..take]);
            }
            tables.push(table);
        }
        let index = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        let mut sorted: Vec<u32> = (0..n as u32).filter(|i| *i as usize != except).collect();
        sorted.sort_unstable_by_key(|i| points[*i as usize]);
        let sorted_words = sorted.iter().map(|i| words[*i as usize]).collect();
        Self {
            ids,
            points,
            tables,
            index,
            sorted,
            sorted_words,
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    fn record(&self, node: usize) -> PeerRecord {
        PeerRecord {
            id: self.ids[node],
            addrs: Vec::new(),
            connection: ConnectionType::NotConnected,
        }
    }

    /// The `count` peers of `node`'s view closest to `target`: its FIND_NODE answer (count = K)
    /// or a lookup's seeds.
    pub fn closest_known(&self, node: usize, target: &Key, count: usize) -> Vec<usize> {
        closest_of(
            &self.points,
            self.tables[node].iter().copied(),
            target,
            count,
        )
    }

    /// The positions in keyspace order of the nodes (provider excluded) whose first `len`
    /// bits are those of `w`: a contiguous range, as every prefix subtree is.
    fn subtree(&self, w: u64, len: u32) -> Range<usize> {
        if len == 0 {
            return 0..self.sorted.len();
        }
        let mask = !0u64 << (64 - len);
        let (lo, hi) = (w & mask, (w & mask) | !mask);
        let a = self.sorted_words.partition_point(|v| *v < lo);
        let b = a + self.sorted_words[a..].partition_point(|v| *v <= hi);
        a..b
    }

    /// The nodes in the region of `depth` bits holding `target` (provider excluded).
    pub fn region_nodes(&self, target: &Key, depth: usize) -> &[u32] {
        &self.sorted[self.subtree(word(target), depth as u32)]
    }

    /// The `count` nodes of the whole network (provider excluded) closest to `target`, in no
    /// particular order, into `out`. They all lie in the deepest prefix subtree around
    /// `target` holding at least `count` nodes (every node inside it is closer than any node
    /// outside), a contiguous range of the sorted nodes: a binary search over the prefix
    /// length, then a selection among the few nodes of that subtree.
    pub fn true_closest(
        &self,
        target: &Key,
        count: usize,
        scratch: &mut Vec<(Distance, u32)>,
        out: &mut Vec<u32>,
    ) {
        let w = word(target);
        // Invariant: subtree(lo) holds >= count nodes; subtree(hi + 1) fewer (or hi = 64).
        let (mut lo, mut hi) = (0u32, 64u32);
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if self.subtree(w, mid).len() >= count {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        let range = self.subtree(w, lo);
        scratch.clear();
        scratch.extend(
            self.sorted[range]
                .iter()
                .map(|i| (self.points[*i as usize].distance(target), *i)),
        );
        if scratch.len() > count {
            scratch.select_nth_unstable(count - 1);
            scratch.truncate(count);
        }
        out.clear();
        out.extend(scratch.iter().map(|(_, i)| *i));
    }

    /// Leading buckets of `node`'s view holding at least K peers (relative to its own key), as
    /// the behaviour counts them for the sweep's depth.
    pub fn leading_full_buckets(&self, node: usize) -> usize {
        let mut counts = [0usize; 257];
        for peer in &self.tables[node] {
            counts[self.points[*peer].common_prefix_len(&self.points[node])] += 1;
        }
        counts.iter().take_while(|n| **n >= K).count()
    }

    /// Runs a lookup from `from`, every request answered at once. Returns the result (indices,
    /// closest first) and the FIND_NODE requests sent; marks the peers asked in `contacted`.
    pub fn lookup(
        &self,
        from: usize,
        target: Key,
        config: LookupConfig,
        contacted: &mut [bool],
    ) -> (Vec<usize>, usize) {
        let seeds = self
            .closest_known(from, &target, config.k)
            .into_iter()
            .map(|i| self.record(i));
        let mut lookup = Lookup::new(target, self.ids[from], seeds, config);
        let now = Instant::now();
        loop {
            match lookup.step(now) {
                LookupStep::Ask { peer, .. } => {
                    let node = self.index[&peer];
                    contacted[node] = true;
                    let answer = self
                        .closest_known(node, &target, K)
                        .into_iter()
                        .map(|i| self.record(i))
                        .collect();
                    lookup.on_success(&peer, answer);
                }
                LookupStep::Finished => break,
                LookupStep::Wait => unreachable!("every request is answered before the next step"),
            }
        }
        let result = lookup.result().iter().map(|p| self.index[&p.id]).collect();
        (result, lookup.requests())
    }
}

/// kadence's lookup settings (`Behaviour::lookup_config`) with result size `k`; the finish
/// rule is the default, `KClosestAnswered`, which the sweep's lookups use.
pub fn lookup_config(k: usize) -> LookupConfig {
    LookupConfig {
        k,
        max_closer_per_response: 2 * K,
        max_candidates: 4 * K,
        ..LookupConfig::default()
    }
}
