//! The naive reprovide: one lookup (k = 20) per key, then ADD_PROVIDER to its result. Run on
//! every key for the small cases; at millions of keys (as many lookups) on a random sample,
//! and its totals extrapolated (labelled so in the report).

use kadence::key::Key;

use crate::cpu::thread_cpu_ns;
use crate::net::{lookup_config, Network};
use crate::K;

pub struct Naive {
    /// Keys run (all of them, or the sample).
    pub keys: usize,
    pub lookups: usize,
    pub find_node: usize,
    pub add_provider: usize,
    pub held: [u64; K + 1],
    pub peers: usize,
    pub cpu_ns: u64,
}

pub fn naive(net: &Network, provider: usize, keys: &[Key]) -> Naive {
    let cpu = thread_cpu_ns();
    let mut contacted = vec![false; net.len()];
    let mut out = Naive {
        keys: keys.len(),
        lookups: 0,
        find_node: 0,
        add_provider: 0,
        held: [0; K + 1],
        peers: 0,
        cpu_ns: 0,
    };
    let (mut distances, mut truth) = (Vec::new(), Vec::new());
    for key in keys {
        let (result, requests) = net.lookup(provider, *key, lookup_config(K), &mut contacted);
        out.lookups += 1;
        out.find_node += requests;
        out.add_provider += result.len();
        for peer in &result {
            contacted[*peer] = true;
        }
        net.true_closest(key, K, &mut distances, &mut truth);
        let held = result
            .iter()
            .filter(|n| truth.contains(&(**n as u32)))
            .count();
        out.held[held] += 1;
    }
    out.peers = contacted.iter().filter(|c| **c).count();
    out.cpu_ns = thread_cpu_ns().saturating_sub(cpu);
    out
}
