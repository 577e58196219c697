//! The network and workload every implementation runs, drawn once from the seed: node keys,
//! access delays, bootstrap peers, the churned nodes, and the lookups and provides (from live
//! nodes only).

use std::time::Duration;

use libp2p::identity::Keypair;
use libp2p::PeerId;

use crate::options::Options;
use crate::rng::Rng;
use crate::{BOOTSTRAP_PEERS, K};

/// A second stream from the same seed for the churned nodes, so that the rest of the
/// workload is drawn as it was before churn existed: a run without churn is unchanged.
const CHURN_STREAM: u64 = 0x6368_7572_6e5f_7365;

pub struct Setup {
    pub keys: Vec<Keypair>,
    pub ids: Vec<PeerId>,
    pub delays: Vec<Duration>,
    pub boots: Vec<Vec<usize>>,
    /// Per node: whether churn stops or silences it.
    pub churned: Vec<bool>,
    /// (querying node, key) per lookup.
    pub lookups: Vec<(usize, Vec<u8>)>,
    /// (providing node, finding node, key) per provide -> find-providers pair.
    pub provides: Vec<(usize, usize, Vec<u8>)>,
}

impl Setup {
    pub fn new(options: &Options) -> Self {
        let n = options.nodes;
        let mut rng = Rng(options.seed);
        let keys: Vec<Keypair> = (0..n).map(|_| rng.keypair()).collect();
        let ids = keys.iter().map(|k| k.public().to_peer_id()).collect();
        // Access delays log-uniform between 5 and 150 ms: round trips of 10-300 ms.
        let delays = (0..n)
            .map(|_| Duration::from_secs_f64(0.005 * 30f64.powf(rng.unit())))
            .collect();
        let boots = (0..n)
            .map(|i| {
                let mut b = Vec::new();
                while b.len() < BOOTSTRAP_PEERS {
                    let j = rng.below(n);
                    if j != i && !b.contains(&j) {
                        b.push(j);
                    }
                }
                b
            })
            .collect();

        let mut churned = vec![false; n];
        let churn_count = options.churn.map_or(0, |c| c.count(n));
        let mut churn_rng = Rng(options.seed ^ CHURN_STREAM);
        let mut order: Vec<usize> = (0..n).collect();
        for i in 0..churn_count {
            let j = i + churn_rng.below(n - i);
            order.swap(i, j);
            churned[order[i]] = true;
        }
        // Without churn, live[i] == i: the draws below are those of the bench before churn.
        let live: Vec<usize> = (0..n).filter(|&i| !churned[i]).collect();

        let lookups = (0..options.lookups)
            .map(|_| (live[rng.below(live.len())], rng.bytes().to_vec()))
            .collect();
        let provides = (0..options.provides)
            .map(|_| {
                let (provider, finder) = rng.pair(live.len());
                (live[provider], live[finder], rng.content_key())
            })
            .collect();
        Self {
            keys,
            ids,
            delays,
            boots,
            churned,
            lookups,
            provides,
        }
    }

    pub fn nodes(&self) -> usize {
        self.keys.len()
    }

    /// The K live nodes closest to `key`, but `except` (the node asking, or the provider).
    pub fn true_closest(&self, except: usize, key: &[u8]) -> Vec<usize> {
        let target = libp2p_kad::KBucketKey::new(key.to_vec());
        let mut all: Vec<(libp2p_kad::KBucketDistance, usize)> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != except && !self.churned[*i])
            .map(|(i, id)| (libp2p_kad::KBucketKey::from(*id).distance(&target), i))
            .collect();
        all.sort_by_key(|e| e.0);
        all.into_iter().take(K).map(|e| e.1).collect()
    }
}
