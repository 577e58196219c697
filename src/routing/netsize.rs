//! A network-size estimator, fed by the closest peers that lookups find.
//!
//! ## The model
//! Points of the keyspace are SHA-256 hashes, so the XOR distances from any target to the `N`
//! other servers of the network are `N` independent uniform draws. Normalised to `[0, 1)`, the
//! `i`-th smallest of them has mean `i / (N + 1)` and a variance close to `i / (N + 1)^2`. A
//! completed lookup gives the distances of the `k` closest peers to its target, one draw of each
//! rank `1..=k`; averaged over many lookups, rank `i`'s mean distance lies on the line
//! `y = i / (N + 1)` through the origin. The estimator fits that line by least squares weighted
//! by the inverse variance of each rank (`1 / i`), which makes the slope the sum of the ranks'
//! mean distances over `1 + 2 + ... + k`, and answers `N = 1 / slope - 1`: the number of servers
//! other than this node (a lookup never returns the node itself).
//!
//! This is the model of go-libp2p-kad-dht's `netsize` package (ProbeLab's optimistic provide),
//! with the same bounds: a lookup counts only with at least `k` peers, each sample is weighted by
//! how well the routing table knows the target's bucket (a lookup whose target falls in a bucket
//! the table holds `b < k` peers of counts `2^(b - k)`), samples older than two hours are
//! dropped, at most 150 are kept (the newest), and with fewer than 5 there is no estimate.
//!
//! Sans-IO: time is an argument, and nothing here knows the routing table; the caller says how
//! full the target's bucket is.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::key::{Distance, Key};

/// Samples kept at most (the newest): about 24 KiB with k = 20.
pub const MAX_SAMPLES: usize = 150;
/// Samples needed before there is an estimate.
pub const MIN_SAMPLES: usize = 5;
/// Age past which a sample no longer counts: the network changes.
pub const MAX_SAMPLE_AGE: Duration = Duration::from_secs(2 * 3600);

/// Why a lookup's peers were not taken as a sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TrackError {
    /// The lookup found fewer than `k` peers: the network is too small to measure this way, or
    /// the lookup did not complete.
    #[error("{found} peers found, {k} needed")]
    TooFewPeers {
        /// Peers found.
        found: usize,
        /// Peers needed.
        k: usize,
    },
}

/// Why there is no estimate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EstimateError {
    /// Too few lookups were tracked in the last two hours.
    #[error("{samples} lookups tracked, {needed} needed")]
    NotEnoughData {
        /// Samples at hand.
        samples: usize,
        /// Samples needed.
        needed: usize,
    },
}

#[derive(Debug, Clone)]
struct Sample {
    at: Instant,
    weight: f64,
    /// Normalised distances of the k closest peers, closest first.
    distances: Box<[f64]>,
}

/// Estimates how many DHT servers the network has from the distances of the `k` closest peers
/// that lookups found. See the module docs.
#[derive(Debug, Clone)]
pub struct NetworkSizeEstimator {
    k: usize,
    samples: VecDeque<Sample>,
}

/// A distance as a fraction of the keyspace, in `[0, 1)`. The leading 64 bits are plenty: the
/// k-th closest of a billion peers is still 2^34 units of them away.
pub fn normalized(distance: &Distance) -> f64 {
    let mut top = [0u8; 8];
    top.copy_from_slice(&distance.as_bytes()[..8]);
    u64::from_be_bytes(top) as f64 / 18_446_744_073_709_551_616.0
}

impl Default for NetworkSizeEstimator {
    /// With Amino's k = 20.
    fn default() -> Self {
        Self::new(20)
    }
}

impl NetworkSizeEstimator {
    /// An estimator fed with the `k` closest peers of each lookup (`k` at least 1).
    pub fn new(k: usize) -> Self {
        Self {
            k: k.max(1),
            samples: VecDeque::new(),
        }
    }

    /// The `k` it measures with.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Samples held (some may be too old to count).
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Takes the result of a completed lookup for `target` from the node `local`: `closest`
    /// holds the keys of the peers it found (at least `k`; the `k` closest count).
    /// `bucket_fill` is how many peers the routing table holds in the bucket of `target`
    /// (common prefix length with `local`), which weighs the sample.
    pub fn track(
        &mut self,
        local: &Key,
        target: &Key,
        closest: &[Key],
        bucket_fill: usize,
        now: Instant,
    ) -> Result<(), TrackError> {
        if closest.len() < self.k {
            return Err(TrackError::TooFewPeers {
                found: closest.len(),
                k: self.k,
            });
        }
        let mut nearest: Vec<(f64, &Key)> = closest
            .iter()
            .map(|peer| (normalized(&peer.distance(target)), peer))
            .collect();
        nearest.sort_by(|a, b| a.0.total_cmp(&b.0));
        nearest.truncate(self.k);
        let cpl = local.common_prefix_len(target);
        let in_bucket = nearest
            .iter()
            .filter(|(_, p)| p.common_prefix_len(local) == cpl)
            .count();
        let distances: Vec<f64> = nearest.iter().map(|(d, _)| *d).collect();
        let weight = sample_weight(self.k, bucket_fill, in_bucket);
        self.prune(now);
        if self.samples.len() >= MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample {
            at: now,
            weight,
            distances: distances.into_boxed_slice(),
        });
        Ok(())
    }

    /// Drops the samples too old at `now` (they are in time order).
    fn prune(&mut self, now: Instant) {
        while self
            .samples
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.at) > MAX_SAMPLE_AGE)
        {
            self.samples.pop_front();
        }
    }

    /// The estimated number of DHT servers other than this node, from the samples of the last
    /// two hours at `now`.
    pub fn estimate(&self, now: Instant) -> Result<f64, EstimateError> {
        let fresh = || {
            self.samples
                .iter()
                .filter(move |s| now.saturating_duration_since(s.at) <= MAX_SAMPLE_AGE)
        };
        let count = fresh().count();
        if count < MIN_SAMPLES {
            return Err(EstimateError::NotEnoughData {
                samples: count,
                needed: MIN_SAMPLES,
            });
        }
        let total_weight: f64 = fresh().map(|s| s.weight).sum();
        // Weighted mean distance of each rank, summed over the ranks.
        let sum_of_means: f64 = (0..self.k)
            .map(|rank| fresh().map(|s| s.weight * s.distances[rank]).sum::<f64>() / total_weight)
            .sum();
        let sum_of_ranks = (self.k * (self.k + 1) / 2) as f64;
        let slope = sum_of_means / sum_of_ranks;
        let others = 1.0 / slope - 1.0;
        if !others.is_finite() {
            // Only with every sample at distance zero, which hashes do not produce.
            return Err(EstimateError::NotEnoughData {
                samples: 0,
                needed: MIN_SAMPLES,
            });
        }
        // Lookups found k peers: there are at least that many.
        Ok(others.max(self.k as f64))
    }
}

/// The weight of a sample: 1 when the routing table's bucket of the target is full, halved for
/// each peer it lacks (go's rule: the table knows that part of the keyspace less well). When
/// more of the lookup's peers fall in that bucket than the table holds, the bucket is as full
/// as the lookup shows.
pub fn sample_weight(k: usize, bucket_fill: usize, found_in_bucket: usize) -> f64 {
    let level = bucket_fill.max(found_in_bucket).min(k);
    0.5f64.powi((k - level) as i32)
}

#[cfg(test)]
#[path = "netsize_tests.rs"]
mod tests;
