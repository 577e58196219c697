//! One reprovide cycle in a simulated network (no sockets): kadence's keyspace sweep against
//! the naive reprovide that runs one lookup per key.
//!
//! - The network: `N` nodes with random peer ids (seeded), each with a k-bucket view (k = 20):
//!   up to k random peers in each common-prefix-length bucket. A node answers FIND_NODE with the
//!   k closest peers it knows. Every node is honest and answers at once, so each lookup (the
//!   public sans-IO [`Lookup`]) is driven synchronously: every Ask is answered before the next
//!   step.
//! - One provider (node 0) provides `K` random keys.
//! - Naive: per key, one lookup (k = 20) seeded with the provider's 20 closest known peers to the
//!   key, then ADD_PROVIDER to the 20 peers of its result.
//! - Sweep (as `kadence::provider`): region depth d = the provider's leading full buckets; per
//!   region of the 2^d holding keys, one lookup with k' = 60 (3k) for the middle key of the
//!   region's keys (in keyspace order), seeded with the provider's 60 closest known to it; then
//!   each key of the region goes to its 20 closest among the 60 found.
//! - Counted: lookups, FIND_NODE requests, ADD_PROVIDER messages, distinct peers sent any
//!   message (a proxy for connections), and placement: for each key, how many of its 20 true
//!   closest nodes in the network (the provider excluded) got its ADD_PROVIDER.
//!
//! `cargo bench --bench reprovide` runs N = 1,000 with K = 10,000 and K = 100,000;
//! `cargo bench --bench reprovide -- --nodes 2000 --keys 10000` runs one case (`--seed S` too;
//! `--sweep-k K'` and `--extra-depth E` try a different region lookup size or deeper regions).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use kadence::key::{Distance, Key};
use kadence::provider::sweep::Region;
use kadence::routing::lookup::{Lookup, LookupConfig, LookupStep};
use kadence::{ConnectionType, PeerRecord};
use libp2p::PeerId;
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

/// Bucket size, answer size and replication factor.
const K: usize = 20;
/// Result size of the sweep's region lookup (kadence: 2k).
const SWEEP_K: usize = 3 * K;
/// The placement goal: each key held by at least this many of its K true closest.
const GOAL_HELD: usize = 15;
/// The lookup-reduction goal at 100,000 keys, in percent.
const GOAL_REDUCTION: f64 = 97.0;
const MAX_NODES: usize = 2000;
/// The depth cap of the sweep's schedule (`Schedule::set_depth`).
const MAX_DEPTH: usize = 20;

fn random_peer(rng: &mut StdRng) -> PeerId {
    let mut digest = [0u8; 32];
    rng.fill_bytes(&mut digest);
    PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &digest).unwrap()).unwrap()
}

/// The `count` entries of `nodes` closest to `target`, closest first.
fn closest_of(
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
struct Network {
    ids: Vec<PeerId>,
    points: Vec<Key>,
    /// Each node's k-bucket view (indices into `ids`), in no particular order.
    tables: Vec<Vec<usize>>,
    index: HashMap<PeerId, usize>,
}

impl Network {
    fn new(n: usize, rng: &mut StdRng) -> Self {
        let ids: Vec<PeerId> = (0..n).map(|_| random_peer(rng)).collect();
        let points: Vec<Key> = ids.iter().map(Key::from_peer).collect();
        let mut tables = Vec::with_capacity(n);
        let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); 257];
        for me in 0..n {
            for bucket in &mut buckets {
                bucket.clear();
            }
            for other in (0..n).filter(|o| *o != me) {
                buckets[points[me].common_prefix_len(&points[other])].push(other);
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
        Self {
            ids,
            points,
            tables,
            index,
        }
    }

    fn len(&self) -> usize {
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
    fn closest_known(&self, node: usize, target: &Key, count: usize) -> Vec<usize> {
        closest_of(
            &self.points,
            self.tables[node].iter().copied(),
            target,
            count,
        )
    }

    /// The `count` nodes of the whole network closest to `target`, `except` excluded.
    fn true_closest(&self, target: &Key, count: usize, except: usize) -> Vec<usize> {
        closest_of(
            &self.points,
            (0..self.len()).filter(|i| *i != except),
            target,
            count,
        )
    }

    /// Leading buckets of `node`'s view holding at least K peers (relative to its own key).
    fn leading_full_buckets(&self, node: usize) -> usize {
        let mut counts = [0usize; 257];
        for peer in &self.tables[node] {
            counts[self.points[*peer].common_prefix_len(&self.points[node])] += 1;
        }
        counts.iter().take_while(|n| **n >= K).count()
    }

    /// Runs a lookup from `from`, every request answered at once. Returns the result (indices,
    /// closest first) and the FIND_NODE requests sent; marks the peers asked in `contacted`.
    fn lookup(
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

/// kadence's lookup settings (`Behaviour::lookup_config`) with result size `k`.
fn lookup_config(k: usize) -> LookupConfig {
    LookupConfig {
        k,
        max_closer_per_response: 2 * K,
        max_candidates: 4 * K,
        ..LookupConfig::default()
    }
}

/// What one reprovide cycle cost and achieved.
#[derive(Default)]
struct Outcome {
    lookups: usize,
    find_node: usize,
    add_provider: usize,
    /// Per node: sent any message.
    contacted: Vec<bool>,
    /// Per key (in the order given): how many of its K true closest got its ADD_PROVIDER.
    held: Vec<usize>,
    time: Duration,
}

impl Outcome {
    fn new(nodes: usize, keys: usize) -> Self {
        Self {
            contacted: vec![false; nodes],
            held: vec![0; keys],
            ..Default::default()
        }
    }

    fn peers(&self) -> usize {
        self.contacted.iter().filter(|c| **c).count()
    }

    fn mean_held(&self) -> f64 {
        self.held.iter().sum::<usize>() as f64 / self.held.len().max(1) as f64
    }

    fn min_held(&self) -> usize {
        self.held.iter().copied().min().unwrap_or(0)
    }

    fn share_at_least(&self, n: usize) -> f64 {
        100.0 * self.held.iter().filter(|h| **h >= n).count() as f64 / self.held.len().max(1) as f64
    }
}

/// Marks which of a key's true closest got it: `stamp[node] == tag` for the true closest.
fn count_held(stamp: &[u32], tag: u32, sent: &[usize]) -> usize {
    sent.iter().filter(|n| stamp[**n] == tag).count()
}

fn stamp_truth(stamp: &mut [u32], tag: u32, truth: &[usize]) {
    for n in truth {
        stamp[*n] = tag;
    }
}

fn naive(net: &Network, provider: usize, keys: &[Key], truths: &[Vec<usize>]) -> Outcome {
    let started = Instant::now();
    let mut out = Outcome::new(net.len(), keys.len());
    let mut stamp = vec![0u32; net.len()];
    for (i, key) in keys.iter().enumerate() {
        let (result, requests) = net.lookup(provider, *key, lookup_config(K), &mut out.contacted);
        out.lookups += 1;
        out.find_node += requests;
        for peer in &result {
            out.contacted[*peer] = true;
        }
        out.add_provider += result.len();
        let tag = i as u32 + 1;
        stamp_truth(&mut stamp, tag, &truths[i]);
        out.held[i] = count_held(&stamp, tag, &result);
    }
    out.time = started.elapsed();
    out
}

/// A region where the sweep placed some key on fewer than GOAL_HELD of its true closest.
struct RegionMiss {
    index: u64,
    /// Nodes (besides the provider) in the region: in the half (bit `depth`) holding the lookup
    /// target, and in the other half.
    nodes_target_half: usize,
    nodes_other_half: usize,
    /// Region nodes the lookup found.
    nodes_found: usize,
    keys: usize,
    /// Keys below GOAL_HELD, in the target's half and in the other half.
    missed_target_half: usize,
    missed_other_half: usize,
    /// Among the keys below: the fewest held, and of their true 20 the fewest among the k'
    /// true closest to the target (what a perfect region lookup could reach).
    min_held: usize,
    min_reachable: usize,
}

struct SweepOutcome {
    out: Outcome,
    depth: usize,
    regions_with_keys: usize,
    /// Nodes per region with keys: min, mean, max.
    region_nodes: (usize, f64, usize),
    /// Regions holding more than k' nodes, or fewer than K.
    regions_over: usize,
    regions_under: usize,
    /// Mean share of the k' true closest to the target that the region lookups found.
    lookup_recall: f64,
    /// Share of the nodes of regions with at most k' nodes that their lookup found.
    region_recall: f64,
    /// Keys whose K true closest are not all among the target's k' true closest.
    keys_unreachable: usize,
    /// Keys below GOAL_HELD although a perfect region lookup would have placed them well
    /// (the lookup missed peers), and keys below it even then (the region's geometry).
    missed_by_lookup: usize,
    missed_by_geometry: usize,
    misses: Vec<RegionMiss>,
}

fn bit(key: &Key, i: usize) -> bool {
    key.as_bytes()[i / 8] & (0x80 >> (i % 8)) != 0
}

/// The sweep's knobs. kadence's: `k' = SWEEP_K`, depth = leading full buckets. The others are
/// for trying changes to the sweep (`--sweep-k`, `--extra-depth`).
#[derive(Clone, Copy)]
struct SweepParams {
    k: usize,
    extra_depth: usize,
}

fn sweep(
    net: &Network,
    provider: usize,
    keys: &[Key],
    truths: &[Vec<usize>],
    params: SweepParams,
) -> SweepOutcome {
    let started = Instant::now();
    let mut out = Outcome::new(net.len(), keys.len());
    let mut stamp = vec![0u32; net.len()];
    let depth = (net.leading_full_buckets(provider) + params.extra_depth).min(MAX_DEPTH);
    // The store hands a region's keys in keyspace order.
    let mut order: Vec<usize> = (0..keys.len()).collect();
    order.sort_unstable_by_key(|i| keys[*i]);
    let mut node_order: Vec<usize> = (0..net.len()).filter(|i| *i != provider).collect();
    node_order.sort_unstable_by_key(|i| net.points[*i]);
    let mut diag = SweepOutcome {
        out: Outcome::default(),
        depth,
        regions_with_keys: 0,
        region_nodes: (usize::MAX, 0.0, 0),
        regions_over: 0,
        regions_under: 0,
        lookup_recall: 0.0,
        region_recall: 0.0,
        keys_unreachable: 0,
        missed_by_lookup: 0,
        missed_by_geometry: 0,
        misses: Vec::new(),
    };
    let (mut small_region_nodes, mut small_region_found) = (0usize, 0usize);
    let mut diag_time = Duration::ZERO;
    let (mut start, mut node_start) = (0, 0);
    for index in 0..1u64 << depth {
        let region = Region {
            index,
            depth: depth as u8,
        };
        let end = start + order[start..].partition_point(|i| region.contains(&keys[*i]));
        let node_end = node_start
            + node_order[node_start..].partition_point(|i| region.contains(&net.points[*i]));
        let nodes = &node_order[node_start..node_end];
        let region_keys = &order[start..end];
        (start, node_start) = (end, node_end);
        if region_keys.is_empty() {
            continue;
        }
        // One lookup, k' = 2k, for the middle key of the region's keys.
        let target = keys[region_keys[region_keys.len() / 2]];
        let (found, requests) = net.lookup(
            provider,
            target,
            lookup_config(params.k),
            &mut out.contacted,
        );
        out.lookups += 1;
        out.find_node += requests;
        // Each key to its K closest among the found.
        for &i in region_keys {
            let sent = closest_of(&net.points, found.iter().copied(), &keys[i], K);
            for peer in &sent {
                out.contacted[*peer] = true;
            }
            out.add_provider += sent.len();
            let tag = i as u32 + 1;
            stamp_truth(&mut stamp, tag, &truths[i]);
            out.held[i] = count_held(&stamp, tag, &sent);
        }
        // Diagnostics (not timed): region sizes, lookup recall, where the misses are.
        let diag_started = Instant::now();
        diag.regions_with_keys += 1;
        diag.region_nodes.0 = diag.region_nodes.0.min(nodes.len());
        diag.region_nodes.1 += nodes.len() as f64;
        diag.region_nodes.2 = diag.region_nodes.2.max(nodes.len());
        diag.regions_over += usize::from(nodes.len() > params.k);
        diag.regions_under += usize::from(nodes.len() < K);
        let ideal = net.true_closest(&target, params.k, provider);
        let found_ideal = ideal.iter().filter(|n| found.contains(n)).count();
        diag.lookup_recall += found_ideal as f64 / ideal.len().max(1) as f64;
        let nodes_found = nodes.iter().filter(|n| found.contains(n)).count();
        if nodes.len() <= params.k {
            small_region_nodes += nodes.len();
            small_region_found += nodes_found;
        }
        let target_half = bit(&target, depth);
        let mut miss = RegionMiss {
            index,
            nodes_target_half: nodes
                .iter()
                .filter(|n| bit(&net.points[**n], depth) == target_half)
                .count(),
            nodes_other_half: 0,
            nodes_found,
            keys: region_keys.len(),
            missed_target_half: 0,
            missed_other_half: 0,
            min_held: usize::MAX,
            min_reachable: usize::MAX,
        };
        miss.nodes_other_half = nodes.len() - miss.nodes_target_half;
        for &i in region_keys {
            let reachable = truths[i].iter().filter(|n| ideal.contains(n)).count();
            diag.keys_unreachable += usize::from(reachable < truths[i].len());
            if out.held[i] >= GOAL_HELD {
                continue;
            }
            if reachable >= GOAL_HELD {
                diag.missed_by_lookup += 1;
            } else {
                diag.missed_by_geometry += 1;
            }
            if bit(&keys[i], depth) == target_half {
                miss.missed_target_half += 1;
            } else {
                miss.missed_other_half += 1;
            }
            miss.min_held = miss.min_held.min(out.held[i]);
            miss.min_reachable = miss.min_reachable.min(reachable);
        }
        if miss.missed_target_half + miss.missed_other_half > 0 {
            diag.misses.push(miss);
        }
        diag_time += diag_started.elapsed();
    }
    assert_eq!(start, keys.len(), "the regions cover every key");
    diag.region_nodes.1 /= diag.regions_with_keys.max(1) as f64;
    diag.lookup_recall /= diag.regions_with_keys.max(1) as f64;
    diag.region_recall = small_region_found as f64 / small_region_nodes.max(1) as f64;
    out.time = started.elapsed() - diag_time;
    diag.out = out;
    diag
}

/// `1234567` as `1,234,567`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

fn run(net: &Network, provider: usize, key_count: usize, seed: u64, params: SweepParams) -> bool {
    let mut rng = StdRng::seed_from_u64(seed ^ key_count as u64);
    let keys: Vec<Key> = (0..key_count)
        .map(|_| {
            let mut bytes = [0u8; 36];
            rng.fill_bytes(&mut bytes);
            Key::new(&bytes)
        })
        .collect();
    let truth_started = Instant::now();
    let truths: Vec<Vec<usize>> = keys
        .iter()
        .map(|key| net.true_closest(key, K, provider))
        .collect();
    let truth_time = truth_started.elapsed();
    let naive = naive(net, provider, &keys, &truths);
    let sweep = sweep(net, provider, &keys, &truths, params);
    let s = &sweep.out;
    let reduction = 100.0 * (1.0 - s.lookups as f64 / naive.lookups as f64);
    let message_reduction = 100.0
        * (1.0
            - (s.find_node + s.add_provider) as f64
                / (naive.find_node + naive.add_provider) as f64);

    println!();
    println!(
        "### N = {} nodes, K = {} keys (k = {K}, sweep k' = {}{})",
        thousands(net.len()),
        thousands(key_count),
        params.k,
        if params.extra_depth > 0 {
            format!(
                ", sweep depth = leading full buckets + {}",
                params.extra_depth
            )
        } else {
            String::new()
        }
    );
    println!();
    println!("| | naive (lookup per key) | sweep |");
    println!("|---|---:|---:|");
    let row = |name: &str, a: String, b: String| println!("| {name} | {a} | {b} |");
    row(
        "regions with keys (depth)",
        "-".into(),
        format!(
            "{} of {} (d = {})",
            thousands(sweep.regions_with_keys),
            thousands(1 << sweep.depth),
            sweep.depth
        ),
    );
    row("lookups", thousands(naive.lookups), thousands(s.lookups));
    row(
        "lookup reduction (1 - sweep/naive)",
        "-".into(),
        format!("{reduction:.3}%"),
    );
    row(
        "FIND_NODE requests",
        thousands(naive.find_node),
        thousands(s.find_node),
    );
    row(
        "FIND_NODE per lookup",
        format!(
            "{:.1}",
            naive.find_node as f64 / naive.lookups.max(1) as f64
        ),
        format!("{:.1}", s.find_node as f64 / s.lookups.max(1) as f64),
    );
    row(
        "ADD_PROVIDER messages",
        thousands(naive.add_provider),
        thousands(s.add_provider),
    );
    row(
        "all messages (reduction)",
        thousands(naive.find_node + naive.add_provider),
        format!(
            "{} ({message_reduction:.1}%)",
            thousands(s.find_node + s.add_provider)
        ),
    );
    row(
        "distinct peers contacted",
        thousands(naive.peers()),
        thousands(s.peers()),
    );
    row(
        "true 20 closest holding a key: mean",
        format!("{:.3}", naive.mean_held()),
        format!("{:.3}", s.mean_held()),
    );
    row(
        "true 20 closest holding a key: min",
        naive.min_held().to_string(),
        s.min_held().to_string(),
    );
    row(
        "keys held by >= 15 of their true 20",
        format!("{:.3}%", naive.share_at_least(GOAL_HELD)),
        format!("{:.3}%", s.share_at_least(GOAL_HELD)),
    );
    row(
        "keys held by all 20",
        format!("{:.3}%", naive.share_at_least(K)),
        format!("{:.3}%", s.share_at_least(K)),
    );
    row(
        "simulation time",
        format!("{:.2} s", naive.time.as_secs_f64()),
        format!("{:.3} s", s.time.as_secs_f64()),
    );
    println!();
    println!(
        "Sweep regions: {:.1} nodes on average (min {}, max {}); {} with more than {sk}, \
         {} with fewer than {K}. Region lookups found {:.2}% of the {sk} true closest to \
         their target, and {:.2}% of the nodes of regions with at most {sk}. Keys whose true \
         20 are not all among their target's true {sk}: {}. \
         (True closest computed in {:.2} s.)",
        sweep.region_nodes.1,
        sweep.region_nodes.0,
        sweep.region_nodes.2,
        sweep.regions_over,
        sweep.regions_under,
        100.0 * sweep.lookup_recall,
        100.0 * sweep.region_recall,
        thousands(sweep.keys_unreachable),
        truth_time.as_secs_f64(),
        sk = params.k,
    );
    let reduction_met = reduction >= GOAL_REDUCTION;
    let placement_met = s.min_held() >= GOAL_HELD;
    println!();
    println!(
        "- Goal: >= {GOAL_REDUCTION}% fewer lookups{}: {:.3}% -> {}",
        if key_count == 100_000 {
            ""
        } else {
            " (set for 100,000 keys)"
        },
        reduction,
        if reduction_met { "met" } else { "NOT met" }
    );
    println!(
        "- Goal: every key held by >= {GOAL_HELD} of its true 20 closest: sweep min {} -> {} \
         (naive min {})",
        s.min_held(),
        if placement_met { "met" } else { "NOT met" },
        naive.min_held()
    );
    if !sweep.misses.is_empty() {
        println!(
            "- Sweep keys below {GOAL_HELD}: {} ({} although a perfect region lookup would have \
             placed them on >= {GOAL_HELD}, {} not even then), by region:",
            thousands(sweep.missed_by_lookup + sweep.missed_by_geometry),
            thousands(sweep.missed_by_lookup),
            thousands(sweep.missed_by_geometry),
        );
        println!();
        println!(
            "| region (d = {}) | nodes: target's half + other half | region nodes found | \
             keys | below {GOAL_HELD}: target's half | below {GOAL_HELD}: other half | \
             fewest held | fewest reachable |",
            sweep.depth
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
        for m in &sweep.misses {
            println!(
                "| {} | {} + {} | {} | {} | {} | {} | {} | {} |",
                m.index,
                m.nodes_target_half,
                m.nodes_other_half,
                m.nodes_found,
                thousands(m.keys),
                thousands(m.missed_target_half),
                thousands(m.missed_other_half),
                m.min_held,
                m.min_reachable
            );
        }
    }
    reduction_met && placement_met
}

fn main() {
    let wall = Instant::now();
    let mut nodes = 1000usize;
    let mut keys: Option<usize> = None;
    let mut seed = 1u64;
    let mut params = SweepParams {
        k: SWEEP_K,
        extra_depth: 0,
    };
    let mut args = std::env::args().skip(1);
    let usage = "usage: reprovide [--nodes N (41..=2000)] [--keys K] [--seed S] [--sweep-k K'] \
                 [--extra-depth E]";
    while let Some(arg) = args.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (arg.clone(), None),
        };
        let mut value = |what: &str| -> u64 {
            let v = inline.clone().or_else(|| args.next());
            match v.as_deref().map(str::parse::<u64>) {
                Some(Ok(v)) => v,
                _ => {
                    eprintln!("{what} needs a number\n{usage}");
                    std::process::exit(2);
                }
            }
        };
        match name.as_str() {
            "--nodes" => nodes = value("--nodes") as usize,
            "--keys" => keys = Some(value("--keys") as usize),
            "--seed" => seed = value("--seed"),
            "--sweep-k" => params.k = value("--sweep-k") as usize,
            "--extra-depth" => params.extra_depth = value("--extra-depth") as usize,
            // cargo bench passes --bench; anything else (a filter) is ignored too.
            _ => {}
        }
    }
    if !(SWEEP_K + 1..=MAX_NODES).contains(&nodes) {
        eprintln!(
            "--nodes must be between {} and {MAX_NODES}\n{usage}",
            SWEEP_K + 1
        );
        std::process::exit(2);
    }
    if !(K..nodes).contains(&params.k) {
        eprintln!("--sweep-k must be between {K} and the node count - 1\n{usage}");
        std::process::exit(2);
    }
    if keys == Some(0) {
        eprintln!("--keys must be positive\n{usage}");
        std::process::exit(2);
    }
    let key_counts = match keys {
        Some(k) => vec![k],
        None => vec![10_000, 100_000],
    };

    let mut rng = StdRng::seed_from_u64(seed);
    let built = Instant::now();
    let net = Network::new(nodes, &mut rng);
    let provider = 0;
    let table_sizes: Vec<usize> = net.tables.iter().map(Vec::len).collect();
    println!(
        "# Reprovide: keyspace sweep vs one lookup per key (simulated, seed {seed})\n\n\
         {} nodes, k-bucket views of {:.0} peers on average (provider: {}, {} leading full \
         buckets), built in {:.2} s. Lookups are kadence's sans-IO Lookup (alpha 10, beta 3), \
         every request answered at once; placement counts the provider-excluded true closest.",
        thousands(nodes),
        table_sizes.iter().sum::<usize>() as f64 / nodes as f64,
        table_sizes[provider],
        net.leading_full_buckets(provider),
        built.elapsed().as_secs_f64()
    );
    let mut all_met = true;
    for k in key_counts {
        all_met &= run(&net, provider, k, seed, params);
    }
    println!();
    println!(
        "Wall time of the whole run: {:.2} s ({})",
        wall.elapsed().as_secs_f64(),
        if all_met {
            "all goals met"
        } else {
            "some goal NOT met"
        }
    );
}
