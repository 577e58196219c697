use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::*;

fn record(id: PeerId) -> PeerRecord {
    PeerRecord {
        id,
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        connection: ConnectionType::NotConnected,
    }
}

/// How a simulated node answers.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Honest,
    Silent,
    /// Answers with random far peers.
    Far,
    /// Answers with itself only.
    Itself,
    /// Answers with the same few peers every time.
    Stuck,
}

/// A network of nodes, each with a realistic k-bucket view: up to k random peers per bucket.
struct Network {
    ids: Vec<PeerId>,
    keys: Vec<Key>,
    tables: Vec<Vec<usize>>,
    behaviour: Vec<Behaviour>,
    index: HashMap<PeerId, usize>,
}

fn bit(key: &Key, i: usize) -> bool {
    key.as_bytes()[i / 8] & (0x80 >> (i % 8)) != 0
}

impl Network {
    fn new(n: usize, k: usize, rng: &mut StdRng) -> Self {
        let ids: Vec<PeerId> = (0..n).map(|_| random_peer(rng)).collect();
        let keys: Vec<Key> = ids.iter().map(Key::from_peer).collect();
        let mut sorted: Vec<usize> = (0..n).collect();
        sorted.sort_by_key(|i| keys[*i]);
        let sorted_keys: Vec<Key> = sorted.iter().map(|i| keys[*i]).collect();
        let mut tables = Vec::with_capacity(n);
        for my_key in &keys {
            let mut table = Vec::new();
            for cpl in 0..64 {
                // Peers sharing exactly `cpl` bits with me: those with my first cpl bits and
                // the other value of bit cpl. A contiguous range in key order.
                let mut lo = [0u8; 32];
                for i in 0..cpl {
                    if bit(my_key, i) {
                        lo[i / 8] |= 0x80 >> (i % 8);
                    }
                }
                if !bit(my_key, cpl) {
                    lo[cpl / 8] |= 0x80 >> (cpl % 8);
                }
                let mut hi = lo;
                for i in cpl + 1..256 {
                    hi[i / 8] |= 0x80 >> (i % 8);
                }
                let start = sorted_keys.partition_point(|k| *k < Key::from_hash(lo));
                let end = sorted_keys.partition_point(|k| *k <= Key::from_hash(hi));
                if start >= end {
                    if end == 0 || cpl > 40 {
                        break;
                    }
                    continue;
                }
                let range: Vec<usize> = sorted[start..end].to_vec();
                let take = range.len().min(k);
                for _ in 0..take {
                    table.push(range[rng.random_range(0..range.len())]);
                }
            }
            table.sort_unstable();
            table.dedup();
            tables.push(table);
        }
        let index = ids.iter().enumerate().map(|(i, p)| (*p, i)).collect();
        Self {
            ids,
            keys,
            tables,
            behaviour: vec![Behaviour::Honest; n],
            index,
        }
    }

    fn closest_known(&self, node: usize, target: &Key, k: usize) -> Vec<PeerRecord> {
        let mut known = self.tables[node].clone();
        known.sort_by_key(|i| self.keys[*i].distance(target));
        known
            .into_iter()
            .take(k)
            .map(|i| record(self.ids[i]))
            .collect()
    }

    fn true_closest(
        &self,
        target: &Key,
        k: usize,
        include: impl Fn(usize) -> bool,
    ) -> HashSet<PeerId> {
        let mut all: Vec<usize> = (0..self.ids.len()).filter(|i| include(*i)).collect();
        all.sort_by_key(|i| self.keys[*i].distance(target));
        all.into_iter().take(k).map(|i| self.ids[i]).collect()
    }

    /// Runs a lookup from `from` for `target`; answers arrive in random order, silent peers
    /// never answer (time jumps to the next deadline when only they are pending).
    fn lookup(&self, from: usize, target: Key, config: LookupConfig, rng: &mut StdRng) -> Lookup {
        let seeds = self.closest_known(from, &target, config.k);
        let mut lookup = Lookup::new(target, self.ids[from], seeds, config);
        let mut now = Instant::now();
        let mut pending: VecDeque<PeerId> = VecDeque::new();
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps < 100_000, "the lookup does not terminate");
            match lookup.step(now) {
                LookupStep::Ask { peer, .. } => {
                    let node = self.index[&peer];
                    if self.behaviour[node] != Behaviour::Silent {
                        pending.push_back(peer);
                    }
                }
                LookupStep::Finished => return lookup,
                LookupStep::Wait => {
                    if pending.is_empty() {
                        now = lookup.next_deadline().expect("waiting on something");
                        continue;
                    }
                    let i = rng.random_range(0..pending.len());
                    let peer = pending.remove(i).unwrap();
                    let node = self.index[&peer];
                    let answer = match self.behaviour[node] {
                        Behaviour::Honest => self.closest_known(node, &target, config.k),
                        Behaviour::Far => (0..config.k)
                            .map(|_| record(self.ids[rng.random_range(0..self.ids.len())]))
                            .collect(),
                        Behaviour::Itself => vec![record(peer)],
                        Behaviour::Stuck => (0..5).map(|i| record(self.ids[i])).collect(),
                        Behaviour::Silent => unreachable!(),
                    };
                    lookup.on_success(&peer, answer);
                }
            }
        }
    }
}

fn random_peer(rng: &mut StdRng) -> PeerId {
    let mut digest = [0u8; 32];
    rng.fill_bytes(&mut digest);
    PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &digest).unwrap()).unwrap()
}

fn recall(network: &Network, lookups: usize, rng: &mut StdRng) -> f64 {
    recall_with(network, lookups, LookupConfig::default(), rng)
}

fn recall_with(network: &Network, lookups: usize, config: LookupConfig, rng: &mut StdRng) -> f64 {
    let mut total = 0.0;
    for _ in 0..lookups {
        let from = loop {
            let i = rng.random_range(0..network.ids.len());
            if network.behaviour[i] == Behaviour::Honest {
                break i;
            }
        };
        let target = Key::from_peer(&random_peer(rng));
        let lookup = network.lookup(from, target, config, rng);
        // Every node that answers is a legitimate member of the closest set, hostile or not;
        // silent ones cannot be confirmed by anyone.
        let truth = network.true_closest(&target, config.k, |i| {
            network.behaviour[i] != Behaviour::Silent && i != from
        });
        let found: HashSet<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
        total += found.intersection(&truth).count() as f64 / config.k as f64;
    }
    total / lookups as f64
}

#[test]
fn finds_the_true_closest_in_1k_and_10k_node_networks() {
    let mut rng = StdRng::seed_from_u64(1);
    let network = Network::new(1000, 20, &mut rng);
    let r = recall(&network, 40, &mut rng);
    eprintln!("recall in 1k nodes: {r:.4}");
    assert!(r >= 0.99, "recall {r} in 1k nodes");
    let network = Network::new(10_000, 20, &mut rng);
    let r = recall(&network, 15, &mut rng);
    eprintln!("recall in 10k nodes: {r:.4}");
    assert!(r >= 0.99, "recall {r} in 10k nodes");
}

#[test]
fn finishes_with_a_quarter_of_the_network_silent() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut network = Network::new(1000, 20, &mut rng);
    for i in 0..1000 {
        if rng.random_range(0..4) == 0 {
            network.behaviour[i] = Behaviour::Silent;
        }
    }
    let r = recall(&network, 30, &mut rng);
    eprintln!("recall with 25% silent: {r:.4}");
    assert!(r >= 0.95, "recall {r} with 25% silent");
}

#[test]
fn hostile_responders_cannot_stall_or_mislead_it() {
    let mut rng = StdRng::seed_from_u64(3);
    let mut network = Network::new(1000, 20, &mut rng);
    let kinds = [
        Behaviour::Far,
        Behaviour::Itself,
        Behaviour::Stuck,
        Behaviour::Silent,
    ];
    for i in 5..1000 {
        if rng.random_range(0..10) == 0 {
            network.behaviour[i] = kinds[rng.random_range(0..kinds.len())];
        }
    }
    let r = recall(&network, 30, &mut rng);
    eprintln!("recall with 10% hostile responders: {r:.4}");
    assert!(r >= 0.95, "recall {r} with 10% hostile responders");
}

#[test]
fn a_slow_peer_frees_its_slot_and_a_late_answer_still_counts() {
    let local = PeerId::random();
    let target = Key::new(b"target");
    let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
    let config = LookupConfig {
        alpha: 1,
        beta: 1,
        k: 3,
        ..Default::default()
    };
    let mut lookup = Lookup::new(target, local, peers.iter().map(|p| record(*p)), config);
    let start = Instant::now();
    let LookupStep::Ask { peer: first, .. } = lookup.step(start) else {
        panic!("asks the closest first")
    };
    assert_eq!(lookup.step(start), LookupStep::Wait, "alpha = 1");
    // The slot timeout passes: the next peer is asked.
    let later = start + config.slot_timeout;
    let LookupStep::Ask { peer: second, .. } = lookup.step(later) else {
        panic!("the slot was freed")
    };
    assert_ne!(first, second);
    // The first answers late: it counts.
    lookup.on_success(&first, vec![]);
    lookup.on_success(&second, vec![]);
    while let LookupStep::Ask { peer, .. } = lookup.step(later) {
        lookup.on_failure(&peer);
    }
    let result: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
    assert!(result.contains(&first) && result.contains(&second));
}

#[test]
fn memory_is_bounded_whatever_responders_send() {
    let local = PeerId::random();
    let target = Key::new(b"target");
    let seed = PeerId::random();
    let mut lookup = Lookup::new(target, local, [record(seed)], LookupConfig::default());
    let now = Instant::now();
    assert!(matches!(lookup.step(now), LookupStep::Ask { .. }));
    let flood: Vec<PeerRecord> = (0..10_000).map(|_| record(PeerId::random())).collect();
    lookup.on_success(&seed, flood);
    assert!(
        lookup.candidates.len() <= 41,
        "at most 2k taken from one answer"
    );
    for _ in 0..10 {
        let flood: Vec<PeerRecord> = (0..1000).map(|_| record(PeerId::random())).collect();
        let asked: Vec<PeerId> = std::iter::from_fn(|| match lookup.step(now) {
            LookupStep::Ask { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
        for peer in asked {
            lookup.on_success(&peer, flood.clone());
        }
        assert!(lookup.candidates.len() <= LookupConfig::default().max_candidates);
    }
}

#[test]
fn never_asks_itself_and_finishes_when_empty() {
    let local = PeerId::random();
    let mut lookup = Lookup::new(
        Key::new(b"x"),
        local,
        [record(local)],
        LookupConfig::default(),
    );
    assert_eq!(lookup.step(Instant::now()), LookupStep::Finished);
    assert!(lookup.result().is_empty());
    let _ = Duration::ZERO;
}

#[test]
fn a_peer_pushed_out_and_learned_again_is_not_asked_twice() {
    let local = PeerId::random();
    let target = Key::new(b"target");
    let config = LookupConfig {
        max_candidates: 3,
        alpha: 1,
        ..Default::default()
    };
    let far = PeerId::random();
    let mut lookup = Lookup::new(target, local, [record(far)], config);
    let now = Instant::now();
    let LookupStep::Ask { peer, .. } = lookup.step(now) else {
        panic!()
    };
    assert_eq!(peer, far);
    // Many closer peers push the asked one out of the full candidate set...
    let mut closer: Vec<PeerRecord> = (0..50).map(|_| record(PeerId::random())).collect();
    closer.sort_by_key(|p| Key::from_peer(&p.id).distance(&target));
    let far_distance = Key::from_peer(&far).distance(&target);
    let nearer: Vec<PeerRecord> = closer
        .into_iter()
        .filter(|p| Key::from_peer(&p.id).distance(&target) < far_distance)
        .take(3)
        .collect();
    if nearer.len() < 3 {
        return; // The random peer happened to be very close; nothing to push it out.
    }
    lookup.on_success(&far, nearer);
    // ...and when some peer mentions it again, it is not asked again.
    let mut asked = Vec::new();
    while let LookupStep::Ask { peer, .. } = lookup.step(now) {
        asked.push(peer);
        lookup.on_success(&peer, vec![record(far)]);
    }
    assert!(!asked.contains(&far));
}

#[test]
fn go_s_rule_finds_the_true_closest_where_peers_are_alive() {
    let mut rng = StdRng::seed_from_u64(1);
    let network = Network::new(1000, 20, &mut rng);
    let config = LookupConfig {
        finish: LookupFinish::BetaAnswered,
        ..LookupConfig::default()
    };
    let r = recall_with(&network, 40, config, &mut rng);
    eprintln!("recall in 1k nodes, finished once beta answered: {r:.4}");
    assert!(r >= 0.99, "recall {r} in 1k nodes");
}

#[test]
fn go_s_rule_finishes_once_the_beta_closest_answered() {
    let now = Instant::now();
    let target = Key::from_peer(&PeerId::random());
    let mut peers: Vec<PeerId> = (0..30).map(|_| PeerId::random()).collect();
    peers.sort_by_key(|p| Key::from_peer(p).distance(&target));
    let config = LookupConfig {
        alpha: 3,
        beta: 3,
        k: 20,
        finish: LookupFinish::BetaAnswered,
        ..LookupConfig::default()
    };
    let seeds = peers.iter().map(|p| record(*p));
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    let mut asked = Vec::new();
    while let LookupStep::Ask { peer, .. } = lookup.step(now) {
        asked.push(peer);
    }
    assert_eq!(
        asked,
        peers[..3],
        "the three closest first, alpha at a time"
    );
    for peer in &asked {
        lookup.on_success(peer, Vec::new());
    }
    // The three closest answered and nothing closer is pending: done, without asking the
    // other 17 of the 20 closest, which are in the result as heard of.
    assert_eq!(lookup.step(now), LookupStep::Finished);
    let result: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
    assert_eq!(result, peers[..20]);
    // The default rule would still be asking them.
    let seeds = peers.iter().map(|p| record(*p));
    let config = LookupConfig {
        finish: LookupFinish::KClosestAnswered,
        ..config
    };
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    for _ in 0..3 {
        let LookupStep::Ask { peer, .. } = lookup.step(now) else {
            panic!("asks the three closest");
        };
        lookup.on_success(&peer, Vec::new());
    }
    assert!(matches!(lookup.step(now), LookupStep::Ask { .. }));
}

/// Issue 14, item 1: a candidate's addresses are capped from the moment it is created, and
/// stay capped when it is named again.
#[test]
fn a_candidate_keeps_at_most_the_cap_of_addresses() {
    let many = |from: u16| -> Vec<Multiaddr> {
        (from..from + 200)
            .map(|port| format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap())
            .collect()
    };
    let entry = |id: PeerId, addrs: Vec<Multiaddr>| PeerRecord {
        id,
        addrs,
        connection: ConnectionType::NotConnected,
    };
    let config = LookupConfig {
        max_addresses_per_peer: 3,
        ..LookupConfig::default()
    };
    let (a, b) = (PeerId::random(), PeerId::random());
    let seeds = [entry(a, many(1)), entry(b, many(1))];
    let mut lookup = Lookup::new(Key::new(b"cap"), PeerId::random(), seeds, config);
    let now = Instant::now();
    for _ in 0..2 {
        let LookupStep::Ask { addrs, .. } = lookup.step(now) else {
            panic!("asks both seeds");
        };
        assert_eq!(addrs, many(1)[..3], "a seed is capped too");
    }
    // Both name the same peer, each with 200 addresses of its own.
    let named = PeerId::random();
    lookup.on_success(&a, vec![entry(named, many(1000))]);
    lookup.on_success(&b, vec![entry(named, many(2000))]);
    let known = lookup
        .candidates
        .values()
        .find(|c| c.id == named)
        .expect("a candidate");
    assert_eq!(known.addrs, many(1000)[..3]);
    let LookupStep::Ask { peer, addrs } = lookup.step(now) else {
        panic!("asks the peer named");
    };
    assert_eq!((peer, addrs), (named, many(1000)[..3].to_vec()));
}
