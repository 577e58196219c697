//! Optimistic writes for `provide` and `put_value`: the record goes to peers that are, by the
//! network-size estimate, among the `k` closest to the key while the lookup still runs, and the
//! operation reports its result once enough of them stored it.
//!
//! ## The rule
//! With `N` servers (the [`netsize`](super::netsize) estimate), the normalised distance from a
//! key to its `k`-th closest server is close to a Gamma(`k`, 1/`N`) draw. From that, as
//! go-libp2p-kad-dht's optimistic provide (ProbeLab RFM17) does:
//! - **a peer is close enough** when its distance is below the 10% quantile of that law
//!   (`P^-1(k, 0.1) / N`, 14.5 / N for k = 20): with 90% certainty it is among the `k` closest;
//! - **the set is close enough** when the mean distance of the `k` closest peers is below
//!   `P^-1(k/2 + 1, 0.9) / N` (15.4 / N for k = 20; the true set's mean is about 10.5 / N): a
//!   true closest set is farther than that one time in ten;
//! - **the operation reports its result** once `ceil(0.75 k)` writes succeeded (15 of 20), and
//!   at least its quorum for a `put_value` (go counts writes that finished, failed or not:
//!   kadence reports only what was stored).
//!
//! kadence differs from go in what it trusts and in what it keeps doing. Only peers that
//! answered the lookup are written to (go also writes to peers it has only heard of), so no
//! write waits on a dial to a dead peer. Each time a peer answers, those of the `k` closest that
//! answered and are close enough, or all of them once the set is close enough, are sent the
//! record at once; the lookup goes on (go stops it) and when it ends, the `k` closest that
//! answered and were not written to yet are: the record reaches the closest peers the lookup
//! confirms, whether or not the estimate was right. Writes that were not needed (a peer close
//! enough by the estimate but not in the final `k`) are the price.
//!
//! Without an estimate nothing changes: the writes go out when the lookup ends, and the result
//! is reported once they all finished.

use fnv::FnvHashSet;
use libp2p::PeerId;

use super::netsize::normalized;
use super::WritesSummary;
use crate::key::Key;
use crate::network::message::PeerRecord;

/// How sure one must be that a single peer is among the `k` closest to write to it early.
pub const PEER_CERTAINTY: f64 = 0.9;
/// How often a true closest set is farther than the set threshold.
pub const SET_STRICTNESS: f64 = 0.1;
/// Share of `k` successful writes after which the result is reported.
pub const REPORT_RATIO: f64 = 0.75;

/// The thresholds for one operation, from the network-size estimate at its start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Plan {
    k: usize,
    /// Normalised distance below which a peer is written to at once.
    peer_threshold: f64,
    /// Mean normalised distance of the k closest below which all of them are written to.
    set_threshold: f64,
    /// Successful writes after which the result is reported.
    report_after: usize,
}

impl Plan {
    /// The thresholds for a network of `others` servers besides this node, `k` per key.
    pub(crate) fn new(others: f64, k: usize) -> Self {
        let k = k.max(1);
        let others = others.max(1.0);
        Self {
            k,
            peer_threshold: gamma_quantile(k as f64, 1.0 - PEER_CERTAINTY) / others,
            set_threshold: gamma_quantile(k as f64 / 2.0 + 1.0, 1.0 - SET_STRICTNESS) / others,
            report_after: (k as f64 * REPORT_RATIO).ceil() as usize,
        }
    }
}

/// The writes of a `put_value` or `provide`: during the lookup (optimistic) and after it.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    plan: Option<Plan>,
    /// Every peer sent the record: none is sent it twice.
    written: FnvHashSet<PeerId>,
    /// Peers that answered the lookup (with go's finish rule, its result also holds peers
    /// that did not): only they are written to early. As many as the lookup's requests.
    answered: FnvHashSet<PeerId>,
    pending: FnvHashSet<PeerId>,
    stored: FnvHashSet<PeerId>,
    set_close: bool,
    walked: bool,
    reported: bool,
}

impl Writes {
    /// Writes that start during the lookup, by `plan`.
    pub(crate) fn optimistic(plan: Plan) -> Self {
        Self {
            plan: Some(plan),
            ..Self::default()
        }
    }

    /// Whether the lookup ended (its closest were sent the record).
    pub(crate) fn walked(&self) -> bool {
        self.walked
    }

    /// Whether the result was reported before the last write finished.
    pub(crate) fn reported(&self) -> bool {
        self.reported
    }

    /// Peers that stored the record so far.
    pub(crate) fn succeeded(&self) -> usize {
        self.stored.len()
    }

    /// Whether no peer was sent the record.
    pub(crate) fn none_written(&self) -> bool {
        self.written.is_empty()
    }

    /// Whether every write sent has finished.
    pub(crate) fn none_pending(&self) -> bool {
        self.pending.is_empty()
    }

    /// `peer` answered the lookup for `target`; `closest` is the lookup's result so far
    /// (closest first: the `k` closest that answered, or with go's finish rule the `k` closest
    /// not failed). Returns the peers to send the record to now.
    pub(crate) fn on_answer(
        &mut self,
        peer: PeerId,
        target: &Key,
        closest: &[PeerRecord],
    ) -> Vec<PeerRecord> {
        let Some(plan) = self.plan else {
            return Vec::new();
        };
        if self.walked {
            return Vec::new();
        }
        self.answered.insert(peer);
        let closest: Vec<&PeerRecord> = closest
            .iter()
            .filter(|p| self.answered.contains(&p.id))
            .collect();
        let distances: Vec<f64> = closest
            .iter()
            .map(|p| normalized(&Key::from_peer(&p.id).distance(target)))
            .collect();
        if !self.set_close && closest.len() >= plan.k {
            let mean = distances.iter().take(plan.k).sum::<f64>() / plan.k as f64;
            self.set_close = mean < plan.set_threshold;
        }
        let mut now = Vec::new();
        for (peer, distance) in closest.into_iter().zip(distances).take(plan.k) {
            if (self.set_close || distance <= plan.peer_threshold) && self.written.insert(peer.id) {
                self.pending.insert(peer.id);
                now.push(peer.clone());
            }
        }
        now
    }

    /// The lookup ended with `closest`: returns those not sent the record yet.
    pub(crate) fn on_walk_end(&mut self, closest: &[PeerRecord]) -> Vec<PeerRecord> {
        self.walked = true;
        closest
            .iter()
            .filter(|p| self.written.insert(p.id))
            .inspect(|p| {
                self.pending.insert(p.id);
            })
            .cloned()
            .collect()
    }

    /// Whether a write to `peer` is in flight (so an outcome from it is the write's).
    pub(crate) fn awaits(&self, peer: &PeerId) -> bool {
        self.pending.contains(peer)
    }

    /// The write to `peer` finished; `stored` says whether the peer took the record.
    pub(crate) fn on_outcome(&mut self, peer: &PeerId, stored: bool) {
        if self.pending.remove(peer) && stored {
            self.stored.insert(*peer);
        }
    }

    /// Whether the result can be reported now, before the remaining writes finish: with a
    /// plan, once `ceil(0.75 k)` peers (and at least `quorum`) stored the record.
    pub(crate) fn ready_to_report(&self, quorum: usize) -> bool {
        let Some(plan) = self.plan else {
            return false;
        };
        !self.reported && self.stored.len() >= plan.report_after.max(quorum)
    }

    /// The result was reported.
    pub(crate) fn mark_reported(&mut self) {
        self.reported = true;
    }

    /// What the writes achieved, against the lookup's final `closest`.
    pub(crate) fn summary(&self, closest: &[PeerRecord]) -> WritesSummary {
        WritesSummary {
            stored: self.stored.len(),
            failed: self.written.len() - self.stored.len(),
            closest: closest.len(),
            stored_at_closest: closest
                .iter()
                .filter(|p| self.stored.contains(&p.id))
                .count(),
        }
    }
}

/// The `p` quantile of the Gamma(`shape`, 1) law: `x` with `P(shape, x) = p`, by bisection.
pub(crate) fn gamma_quantile(shape: f64, p: f64) -> f64 {
    let p = p.clamp(0.0, 1.0);
    let mut lo = 0.0;
    // Past the mean by 20 standard deviations: P is 1 to double precision.
    let mut hi = shape + 20.0 * shape.sqrt() + 20.0;
    for _ in 0..200 {
        let mid = (lo + hi) / 2.0;
        if gamma_cdf(shape, mid) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    (lo + hi) / 2.0
}

/// The regularised lower incomplete gamma function `P(shape, x)`, by its power series
/// `x^a e^-x / Gamma(a + 1) * sum x^n / ((a + 1) ... (a + n))`, which converges for every `x`
/// (within the range `gamma_quantile` searches, in a few hundred terms).
pub(crate) fn gamma_cdf(shape: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    let mut term = 1.0;
    let mut sum = 1.0;
    for n in 1..10_000 {
        term *= x / (shape + n as f64);
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    let log = -x + shape * x.ln() - ln_gamma(shape + 1.0) + sum.ln();
    log.exp().min(1.0)
}

/// `ln Gamma(z)` for `z > 0`: Stirling's series, after raising `z` past 10 by the recurrence
/// `Gamma(z + 1) = z Gamma(z)` (the series' error is then below 1e-12).
pub(crate) fn ln_gamma(z: f64) -> f64 {
    let mut z = z;
    let mut shift = 0.0;
    while z < 10.0 {
        shift -= z.ln();
        z += 1.0;
    }
    let inv = 1.0 / z;
    let inv2 = inv * inv;
    let series = inv * (1.0 / 12.0 - inv2 * (1.0 / 360.0 - inv2 * (1.0 / 1260.0 - inv2 / 1680.0)));
    shift + (z - 0.5) * z.ln() - z + 0.5 * (2.0 * std::f64::consts::PI).ln() + series
}

#[cfg(test)]
#[path = "optimistic_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "optimistic_sim.rs"]
mod sim;
