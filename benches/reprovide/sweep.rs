//! kadence's sweep (`src/provider/`), one reprovide cycle, region by region, with the
//! placement of every key measured against the network's true closest.
//!
//! As the provider does: region depth d = the provider's leading full buckets (capped at 20);
//! per region of the 2^d, its keys in keyspace order are read in pages of `keys_per_page`;
//! the first page with keys starts the region's one lookup (k' = 4k results, `KClosestAnswered`)
//! for the middle key of that page; every page then goes to the peers found: each key to its
//! k closest among them (the same per-key sort as `Provider::send_page`, on an order kept for
//! the whole page). A region without keys costs nothing.

use kadence::key::{Distance, Key};
use kadence::provider::sweep::Region;

use crate::cpu::thread_cpu_ns;
use crate::keys::KeySpace;
use crate::net::{lookup_config, word, Network};
use crate::{GOAL_HELD, K};

/// The sweep's knobs. kadence's: `k' = 4k`, depth = leading full buckets, 10,000 keys per
/// page. The others are for trying changes to the sweep.
#[derive(Clone, Copy)]
pub struct SweepParams {
    pub k: usize,
    pub extra_depth: usize,
    pub keys_per_page: usize,
}

/// One region's sweep: what the time model needs.
#[derive(Clone, Copy, Default)]
pub struct RegionRun {
    pub index: u64,
    pub keys: usize,
    /// Per page: the most ADD_PROVIDER messages that went to one peer (the page lasts as long
    /// as that peer's queue), summed over the pages as `ceil(max / window)` rounds.
    pub rounds: usize,
    pub pages: usize,
}

/// A region where some key went to fewer than GOAL_HELD of its true closest.
pub struct RegionMiss {
    pub index: u64,
    pub nodes: usize,
    pub nodes_found: usize,
    pub keys: usize,
    pub pages: usize,
    /// Where the lookup target lies in the region (0 = its start, 1 = its end).
    pub target_at: f64,
    pub missed: usize,
    pub min_held: usize,
    /// Among the keys below: the fewest of their true 20 among the k' true closest to the
    /// target (what a perfect region lookup could reach).
    pub min_reachable: usize,
}

/// Everything counted over one thread's regions; merged at the end.
pub struct Tally {
    /// Keys by how many of their K true closest got their ADD_PROVIDER.
    pub held: [u64; K + 1],
    pub lookups: usize,
    pub find_node: usize,
    pub add_provider: u64,
    pub contacted: Vec<bool>,
    /// CPU time of the provider's own per-key work (each key to its k closest of the peers
    /// found, and queueing the messages), excluding the measurement.
    pub plan_cpu_ns: u64,
    pub regions: Vec<RegionRun>,
    pub misses: Vec<RegionMiss>,
    pub region_nodes_min: usize,
    pub region_nodes_max: usize,
    pub region_nodes_sum: usize,
    pub regions_over: usize,
    pub regions_under: usize,
    /// Sum over region lookups of the share of the k' true closest to the target found.
    pub lookup_recall: f64,
    /// Nodes of the regions with at most k' nodes, and how many of those the lookup found.
    pub small_region_nodes: usize,
    pub small_region_found: usize,
    pub keys_unreachable: u64,
    pub missed_by_lookup: u64,
    pub missed_by_geometry: u64,
    /// Keys below K, and those of them whose true K all lie among the target's true k' (the
    /// lookup missed peers a perfect one would have found).
    pub below_all: u64,
    pub below_all_by_lookup: u64,
}

impl Tally {
    pub fn new(nodes: usize) -> Self {
        Self {
            held: [0; K + 1],
            lookups: 0,
            find_node: 0,
            add_provider: 0,
            contacted: vec![false; nodes],
            plan_cpu_ns: 0,
            regions: Vec::new(),
            misses: Vec::new(),
            region_nodes_min: usize::MAX,
            region_nodes_max: 0,
            region_nodes_sum: 0,
            regions_over: 0,
            regions_under: 0,
            lookup_recall: 0.0,
            small_region_nodes: 0,
            small_region_found: 0,
            keys_unreachable: 0,
            missed_by_lookup: 0,
            missed_by_geometry: 0,
            below_all: 0,
            below_all_by_lookup: 0,
        }
    }

    pub fn merge(&mut self, other: Tally) {
        for (a, b) in self.held.iter_mut().zip(other.held) {
            *a += b;
        }
        self.lookups += other.lookups;
        self.find_node += other.find_node;
        self.add_provider += other.add_provider;
        for (a, b) in self.contacted.iter_mut().zip(other.contacted) {
            *a |= b;
        }
        self.plan_cpu_ns += other.plan_cpu_ns;
        self.regions.extend(other.regions);
        self.misses.extend(other.misses);
        self.region_nodes_min = self.region_nodes_min.min(other.region_nodes_min);
        self.region_nodes_max = self.region_nodes_max.max(other.region_nodes_max);
        self.region_nodes_sum += other.region_nodes_sum;
        self.regions_over += other.regions_over;
        self.regions_under += other.regions_under;
        self.lookup_recall += other.lookup_recall;
        self.small_region_nodes += other.small_region_nodes;
        self.small_region_found += other.small_region_found;
        self.keys_unreachable += other.keys_unreachable;
        self.missed_by_lookup += other.missed_by_lookup;
        self.missed_by_geometry += other.missed_by_geometry;
        self.below_all += other.below_all;
        self.below_all_by_lookup += other.below_all_by_lookup;
    }

    pub fn keys(&self) -> u64 {
        self.held.iter().sum()
    }

    pub fn peers(&self) -> usize {
        self.contacted.iter().filter(|c| **c).count()
    }
}

/// Per-thread buffers reused across regions and pages.
struct Scratch {
    keys: Vec<Key>,
    /// The page's keys' recipients, K per key.
    sent: Vec<u32>,
    /// Messages queued per node in the current page.
    queued: Vec<u32>,
    /// `stamp[node] == tag`: the node is among the current key's true closest.
    stamp: Vec<u32>,
    tag: u32,
    /// `ideal[node] == region tag`: among the k' true closest to the region's target.
    ideal: Vec<u32>,
    distances: Vec<(Distance, u32)>,
    truth: Vec<u32>,
}

/// Sweeps the regions `index % threads == part` of `depth`.
pub fn sweep_part(
    net: &Network,
    provider: usize,
    space: &KeySpace,
    depth: usize,
    params: SweepParams,
    window: usize,
    (part, threads): (u64, u64),
) -> Tally {
    let n = net.len();
    let mut t = Tally::new(n);
    let mut s = Scratch {
        keys: Vec::new(),
        sent: Vec::new(),
        queued: vec![0; n],
        stamp: vec![0; n],
        tag: 0,
        ideal: vec![0; n],
        distances: Vec::new(),
        truth: Vec::new(),
    };
    let page_len = params.keys_per_page.max(1);
    let mut index = part;
    while index < 1u64 << depth {
        let region = Region {
            index,
            depth: depth as u8,
        };
        index += threads;
        space.region(region.index, depth, &mut s.keys);
        if s.keys.is_empty() {
            continue;
        }
        debug_assert!(s.keys.iter().all(|k| region.contains(k)));
        // The first page's middle key: where `Provider::region_keys` aims the lookup.
        let first_page = &s.keys[..s.keys.len().min(page_len)];
        let target = first_page[first_page.len() / 2];
        let (found, requests) =
            net.lookup(provider, target, lookup_config(params.k), &mut t.contacted);
        t.lookups += 1;
        t.find_node += requests;
        let points: Vec<Key> = found.iter().map(|i| net.points[*i]).collect();

        // Diagnostics of the region lookup: region size, recall against the true k'.
        let nodes = net.region_nodes(&target, depth);
        let nodes_found = nodes
            .iter()
            .filter(|n| found.contains(&(**n as usize)))
            .count();
        t.region_nodes_min = t.region_nodes_min.min(nodes.len());
        t.region_nodes_max = t.region_nodes_max.max(nodes.len());
        t.region_nodes_sum += nodes.len();
        t.regions_over += usize::from(nodes.len() > params.k);
        t.regions_under += usize::from(nodes.len() < K);
        if nodes.len() <= params.k {
            t.small_region_nodes += nodes.len();
            t.small_region_found += nodes_found;
        }
        let region_tag = region.index as u32 + 1;
        net.true_closest(&target, params.k, &mut s.distances, &mut s.truth);
        for i in &s.truth {
            s.ideal[*i as usize] = region_tag;
        }
        let ideal_found = found.iter().filter(|i| s.ideal[**i] == region_tag).count();
        t.lookup_recall += ideal_found as f64 / s.truth.len().max(1) as f64;
        let start = word(&region.start());
        let width = if depth == 0 {
            u64::MAX as f64
        } else {
            (1u64 << (64 - depth)) as f64
        };
        let mut miss = RegionMiss {
            index: region.index,
            nodes: nodes.len(),
            nodes_found,
            keys: s.keys.len(),
            pages: s.keys.len().div_ceil(page_len),
            target_at: (word(&target) - start) as f64 / width,
            missed: 0,
            min_held: usize::MAX,
            min_reachable: usize::MAX,
        };
        let mut run = RegionRun {
            index: region.index,
            keys: s.keys.len(),
            rounds: 0,
            pages: miss.pages,
        };

        for page in s.keys.chunks(page_len) {
            // The provider's work for the page, as `Provider::send_page`: one order of the
            // peers, re-sorted by distance for each key (keys come in keyspace order, so it is
            // nearly sorted already), the k first queued.
            let cpu = thread_cpu_ns();
            s.sent.clear();
            let mut order: Vec<usize> = (0..points.len()).collect();
            for key in page {
                order.sort_by_key(|i| points[*i].distance(key));
                for i in order.iter().take(K) {
                    let node = found[*i];
                    s.sent.push(node as u32);
                    s.queued[node] += 1;
                }
            }
            t.plan_cpu_ns += thread_cpu_ns().saturating_sub(cpu);
            let per_key = K.min(points.len());
            t.add_provider += s.sent.len() as u64;
            let busiest = found.iter().map(|n| s.queued[*n]).max().unwrap_or(0) as usize;
            run.rounds += busiest.div_ceil(window.max(1));
            for n in &found {
                if s.queued[*n] > 0 {
                    t.contacted[*n] = true;
                }
                s.queued[*n] = 0;
            }

            // The measurement: each key's true K closest, and how many of them got it.
            for (j, key) in page.iter().enumerate() {
                s.tag += 1;
                net.true_closest(key, K, &mut s.distances, &mut s.truth);
                for i in &s.truth {
                    s.stamp[*i as usize] = s.tag;
                }
                let held = s.sent[j * per_key..(j + 1) * per_key]
                    .iter()
                    .filter(|n| s.stamp[**n as usize] == s.tag)
                    .count();
                t.held[held] += 1;
                let reachable = s
                    .truth
                    .iter()
                    .filter(|n| s.ideal[**n as usize] == region_tag)
                    .count();
                t.keys_unreachable += u64::from(reachable < s.truth.len());
                if held < K {
                    t.below_all += 1;
                    t.below_all_by_lookup += u64::from(reachable == s.truth.len());
                }
                if held < GOAL_HELD {
                    if reachable >= GOAL_HELD {
                        t.missed_by_lookup += 1;
                    } else {
                        t.missed_by_geometry += 1;
                    }
                    miss.missed += 1;
                    miss.min_held = miss.min_held.min(held);
                    miss.min_reachable = miss.min_reachable.min(reachable);
                }
            }
        }
        t.regions.push(run);
        if miss.missed > 0 {
            t.misses.push(miss);
        }
    }
    t
}

/// The whole sweep over `threads` threads (regions split round-robin).
pub fn sweep(
    net: &Network,
    provider: usize,
    space: &KeySpace,
    depth: usize,
    params: SweepParams,
    window: usize,
    threads: usize,
) -> Tally {
    let threads = threads.max(1) as u64;
    let parts: Vec<Tally> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|part| {
                scope.spawn(move || {
                    sweep_part(net, provider, space, depth, params, window, (part, threads))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("sweep thread"))
            .collect()
    });
    let mut all = Tally::new(net.len());
    for part in parts {
        all.merge(part);
    }
    all.regions.sort_unstable_by_key(|r| r.index);
    all.misses
        .sort_unstable_by_key(|m| std::cmp::Reverse(m.missed));
    all
}
