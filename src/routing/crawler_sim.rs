//! The crawler in a simulated network, in simulated time: coverage, requests per peer, time to
//! cover the network at the default pace, connections open at once.
//!
//! The network: 2,000 servers, each with a k-bucket table as real ones fill (k = 20): in each
//! bucket, up to k peers drawn from those sharing that prefix with it, the old ones first. One
//! server in ten joined lately: full buckets hold none of them, so they are known only to
//! the deep buckets of their neighbours, which only a crawl to each peer's last bucket finds. A share of the servers
//! cannot be reached, though the tables still name them (they left after the tables filled): a
//! gone one refuses the dial after a round trip, a silent one accepts it and never answers.
//! Round trips are 10-300 ms (each node a one-way latency of 5-150 ms); the first wave to a
//! peer pays its dial first (two more round trips), a later wave goes over the open
//! connection. The crawler is a node outside the network that knows a few servers.
//!
//! Run with `cargo test --lib crawler_sim -- --nocapture` to see the figures.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::{Rng, RngExt, SeedableRng};

use super::crawler::{CrawlAction, CrawlResult, Crawler, CrawlerConfig};
use crate::key::Key;
use crate::network::message::{ConnectionType, PeerRecord, Request, Response};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Honest,
    /// Accepts the dial, never answers.
    Silent,
    /// Refuses the dial.
    Gone,
    /// Answers a key at cpl 4 or less with k peers that do not exist, forged in the range
    /// asked (deeper keys cost too many hashes to forge here: honest answers).
    Forger,
}

struct Network {
    ids: Vec<PeerId>,
    /// The first 128 bits of each key: enough to order 2,000 keys (a tie is a 2^-128 chance).
    heads: Vec<u128>,
    tables: Vec<Vec<usize>>,
    kind: Vec<Kind>,
    /// One-way latency in milliseconds.
    latency: Vec<u64>,
    addresses: Vec<Multiaddr>,
    index: HashMap<PeerId, usize>,
}

fn head(key: &Key) -> u128 {
    u128::from_be_bytes(key.as_bytes()[..16].try_into().unwrap())
}

fn address(i: usize) -> Multiaddr {
    format!("/ip4/10.{}.{}.1/tcp/4001", i / 256, i % 256)
        .parse()
        .unwrap()
}

impl Network {
    fn new(n: usize, k: usize, rng: &mut StdRng) -> Self {
        let ids: Vec<PeerId> = (0..n)
            .map(|_| {
                let mut digest = [0u8; 32];
                rng.fill_bytes(&mut digest);
                let hash = libp2p::multihash::Multihash::wrap(0x12, &digest).unwrap();
                PeerId::from_multihash(hash).unwrap()
            })
            .collect();
        let heads: Vec<u128> = ids.iter().map(|p| head(&Key::from_peer(p))).collect();
        // One server in ten joined lately: a full bucket keeps the peers it met first, so the
        // newcomers are only in the buckets that were not full, the deep ones of their
        // neighbours.
        let newcomer: Vec<bool> = (0..n).map(|_| rng.random_range(0..10) == 0).collect();
        let tables = (0..n)
            .map(|i| {
                let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); 129];
                for j in (0..n).filter(|j| *j != i) {
                    buckets[(heads[i] ^ heads[j]).leading_zeros() as usize].push(j);
                }
                let mut table = Vec::new();
                for mut bucket in buckets {
                    // The old peers in random order, then the newcomers: the first k stay.
                    for at in (1..bucket.len()).rev() {
                        bucket.swap(at, rng.random_range(0..=at));
                    }
                    bucket.sort_by_key(|j| newcomer[*j]);
                    bucket.truncate(k);
                    table.extend(bucket);
                }
                table
            })
            .collect();
        Self {
            index: ids.iter().enumerate().map(|(i, p)| (*p, i)).collect(),
            ids,
            heads,
            tables,
            kind: vec![Kind::Honest; n],
            latency: (0..n).map(|_| rng.random_range(5..=150)).collect(),
            addresses: (0..n).map(address).collect(),
        }
    }

    /// One node in `one_in` (the first `spared` aside) becomes `kind`.
    fn make(&mut self, kind: Kind, one_in: u32, spared: usize, rng: &mut StdRng) {
        for i in spared..self.ids.len() {
            if self.kind[i] == Kind::Honest && rng.random_range(0..one_in) == 0 {
                self.kind[i] = kind;
            }
        }
    }

    fn reachable(&self) -> HashSet<PeerId> {
        (0..self.ids.len())
            .filter(|i| matches!(self.kind[*i], Kind::Honest | Kind::Forger))
            .map(|i| self.ids[i])
            .collect()
    }

    fn record(&self, i: usize) -> PeerRecord {
        PeerRecord {
            id: self.ids[i],
            addrs: vec![self.addresses[i].clone()],
            connection: ConnectionType::NotConnected,
        }
    }

    /// What `node` answers for `target`: its `k` closest, as a server does.
    fn answer(&self, node: usize, target: &Key, k: usize, rng: &mut StdRng) -> Vec<PeerRecord> {
        let own = Key::from_peer(&self.ids[node]);
        let bucket = own.common_prefix_len(target);
        if self.kind[node] == Kind::Forger && bucket <= 4 {
            return (0..k)
                .map(|_| PeerRecord {
                    id: own.random_peer_in_bucket(bucket, 1 << 20, rng).unwrap(),
                    addrs: vec!["/ip4/10.255.0.1/tcp/1".parse().unwrap()],
                    connection: ConnectionType::NotConnected,
                })
                .collect();
        }
        let target = head(target);
        let mut known: Vec<(u128, usize)> = self.tables[node]
            .iter()
            .map(|i| (self.heads[*i] ^ target, *i))
            .collect();
        if known.len() > k {
            known.select_nth_unstable(k);
            known.truncate(k);
        }
        known.sort_unstable();
        known.iter().map(|(_, i)| self.record(*i)).collect()
    }

    /// Crawls the network from `seeds` (or from `previous`'s result), at `config`.
    fn crawl(
        &self,
        seeds: &[usize],
        previous: Option<&CrawlResult>,
        config: CrawlerConfig,
        rng: &mut StdRng,
    ) -> Figures {
        let start = Instant::now();
        let local = PeerId::random();
        let seeds: Vec<PeerRecord> = seeds.iter().map(|i| self.record(*i)).collect();
        let mut crawler = match previous {
            Some(previous) => Crawler::from_previous(local, previous, seeds, config, start),
            None => Crawler::new(local, seeds, config, start),
        };
        let truth = self.reachable();
        let mut events: BinaryHeap<Reverse<(Instant, u64, Event)>> = BinaryHeap::new();
        let mut sequence = 0;
        let mut open: HashSet<PeerId> = HashSet::new();
        let mut peak_open = 0;
        let mut contacts: Vec<Instant> = Vec::new();
        let mut covered_at = None;
        let mut peak_memory = 0;
        let mut now = start;
        let result = 'crawl: loop {
            while let Some(action) = crawler.poll(now) {
                match action {
                    CrawlAction::Send { peer, requests, .. } => {
                        if open.insert(peer) {
                            contacts.push(now);
                        }
                        peak_open = peak_open.max(open.len());
                        let mut schedule = |at: Instant, event: Event| {
                            sequence += 1;
                            events.push(Reverse((at, sequence, event)));
                        };
                        // A forged peer: nothing at its address.
                        let Some(&node) = self.index.get(&peer) else {
                            schedule(now + Duration::from_millis(100), Event::Refused(peer));
                            continue;
                        };
                        let rtt = Duration::from_millis(2 * self.latency[node] + 20);
                        let dial = if requests[0].bucket == 0 {
                            2 * rtt
                        } else {
                            Duration::ZERO
                        };
                        match self.kind[node] {
                            Kind::Gone => schedule(now + rtt, Event::Refused(peer)),
                            Kind::Silent => {}
                            Kind::Honest | Kind::Forger => {
                                for request in requests {
                                    let Request::FindNode { key } = request.request else {
                                        panic!("the crawler sends FIND_NODE")
                                    };
                                    let answer = Event::Answer(node, request.bucket, key);
                                    schedule(now + dial + rtt, answer);
                                }
                            }
                        }
                    }
                    CrawlAction::Release { peer } => {
                        open.remove(&peer);
                    }
                    CrawlAction::Done(result) => break 'crawl result,
                }
            }
            let progress = crawler.progress();
            peak_memory = peak_memory.max(progress.memory);
            if covered_at.is_none() && progress.reachable * 100 >= truth.len() * 99 {
                covered_at = Some(now);
            }
            let next_event = events.peek().map(|Reverse((at, _, _))| *at);
            now = match (next_event, crawler.next_deadline()) {
                (Some(a), Some(b)) => a.min(b),
                (Some(a), None) | (None, Some(a)) => a,
                (None, None) => panic!("the crawl stalled: {progress:?}"),
            }
            .max(now);
            while let Some(Reverse((at, _, event))) = events.peek().cloned() {
                if at > now {
                    break;
                }
                events.pop();
                match event {
                    Event::Refused(peer) => crawler.on_unreachable(&peer),
                    Event::Answer(node, bucket, key) => {
                        let peer = self.ids[node];
                        crawler.on_connected(&peer, self.addresses[node].clone());
                        let closer_peers = self.answer(node, &Key::new(&key), 20, rng);
                        let response = Response::FindNode { closer_peers };
                        crawler.on_answer(&peer, bucket, response, &|_, a| a);
                    }
                }
            }
        };
        let found: HashSet<PeerId> = result.reachable.iter().map(|p| p.id).collect();
        assert!(
            found.is_subset(&truth),
            "only servers that answered are reachable"
        );
        let contacted = result.reachable.len() + result.unreachable.len();
        Figures {
            servers: self.ids.len(),
            truth: truth.len(),
            recall: found.len() as f64 / truth.len() as f64,
            contacted,
            requests_per_peer: result.stats.requests as f64 / contacted as f64,
            requests_per_reachable: result.stats.answered as f64 / found.len() as f64,
            duration: result.stats.duration,
            covered: covered_at.map(|t| t.duration_since(start)),
            peak_open,
            peak_requests: result.stats.peak_requests_in_flight,
            max_in_a_second: contacts
                .iter()
                .enumerate()
                .map(|(i, at)| {
                    contacts[i..]
                        .iter()
                        .take_while(|t| t.duration_since(*at) < Duration::from_secs(1))
                        .count()
                })
                .max()
                .unwrap_or(0),
            out_of_range: result.stats.out_of_range,
            memory_per_peer: peak_memory / contacted.max(1),
            forged: result
                .unreachable
                .iter()
                .filter(|p| !self.index.contains_key(&p.id))
                .count(),
            result,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Refused(PeerId),
    Answer(usize, usize, Vec<u8>),
}

struct Figures {
    servers: usize,
    truth: usize,
    recall: f64,
    contacted: usize,
    requests_per_peer: f64,
    requests_per_reachable: f64,
    duration: Duration,
    covered: Option<Duration>,
    peak_open: usize,
    peak_requests: usize,
    max_in_a_second: usize,
    out_of_range: u64,
    /// The crawl's peak estimated memory, per peer it held.
    memory_per_peer: usize,
    forged: usize,
    result: CrawlResult,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} servers, {} reachable: recall {:.4}, {} contacted, {:.2} requests per peer \
             contacted ({:.2} answered per reachable), 99% covered after {:.1} s, done after \
             {:.1} s, at most {} connections and {} requests at once, {} new peers in a second, \
             {} names out of range, {} bytes per peer held, {} forged peers contacted",
            self.servers,
            self.truth,
            self.recall,
            self.contacted,
            self.requests_per_peer,
            self.requests_per_reachable,
            self.covered.unwrap_or_default().as_secs_f64(),
            self.duration.as_secs_f64(),
            self.peak_open,
            self.peak_requests,
            self.max_in_a_second,
            self.out_of_range,
            self.memory_per_peer,
            self.forged,
        )
    }
}

/// 2,000 servers, about 10% gone and 5% silent.
fn network(rng: &mut StdRng) -> Network {
    let mut network = Network::new(2000, 20, rng);
    network.make(Kind::Gone, 10, 5, rng);
    network.make(Kind::Silent, 20, 5, rng);
    network
}

fn check_pace(figures: &Figures, config: &CrawlerConfig) {
    let (pace, burst) = (config.pace as usize, config.pace_burst as usize);
    assert!(figures.max_in_a_second <= pace + burst, "{figures}");
    let fastest = (figures.contacted - burst) as f64 / pace as f64;
    assert!(figures.duration.as_secs_f64() >= fastest, "{figures}");
    assert!(figures.peak_open <= config.max_peers_in_flight, "{figures}");
}

#[test]
fn covers_2000_servers_at_the_default_pace() {
    let mut rng = StdRng::seed_from_u64(1);
    let network = network(&mut rng);
    let config = CrawlerConfig::default();
    let figures = network.crawl(&[0, 1, 2], None, config.clone(), &mut rng);
    eprintln!("first crawl: {figures}");
    assert!(figures.recall >= 0.99, "{figures}");
    check_pace(&figures, &config);
    // Each peer's buckets in about one round trip: depth 7 or 8 here.
    assert!(figures.requests_per_peer < 11.0, "{figures}");
    // Crawled again from the result: every known server at once, at the depth measured.
    let previous = figures.result;
    let again = network.crawl(&[0], Some(&previous), config.clone(), &mut rng);
    eprintln!("crawled again from the result: {again}");
    assert!(again.recall >= 0.99, "{again}");
    check_pace(&again, &config);
    assert!(
        again.requests_per_peer <= figures.requests_per_peer + 0.5,
        "{again}"
    );
}

#[test]
fn forged_peers_cost_time_within_their_bound_not_coverage() {
    let mut rng = StdRng::seed_from_u64(2);
    let mut network = Network::new(1000, 20, &mut rng);
    network.make(Kind::Gone, 10, 5, &mut rng);
    network.make(Kind::Forger, 20, 5, &mut rng);
    let forgers = network.kind.iter().filter(|k| **k == Kind::Forger).count();
    let config = CrawlerConfig {
        pace: 200,
        ..CrawlerConfig::default()
    };
    let figures = network.crawl(&[0, 1, 2], None, config.clone(), &mut rng);
    eprintln!("{forgers} forgers in 1,000: {figures}");
    assert!(figures.recall >= 0.99, "{figures}");
    // Each forger names at most k peers per key it is asked for, here 5 of them.
    assert!(
        figures.forged > 0 && figures.forged <= forgers * 5 * 20,
        "{figures}"
    );
    check_pace(&figures, &config);
    // The same network, the forgers honest: forged names came after the real peers.
    for kind in &mut network.kind {
        if *kind == Kind::Forger {
            *kind = Kind::Honest;
        }
    }
    let honest = network.crawl(&[0, 1, 2], None, config, &mut rng);
    eprintln!("the same, no forger: {honest}");
    let (with, without) = (figures.covered.unwrap(), honest.covered.unwrap());
    assert!(with <= without + without / 20, "{with:?} vs {without:?}");
}
