//! Lookup latency, recall and cost of kadence and libp2p-kad (defaults and alpha = 10) in a
//! network of N nodes over the memory transport with per-node access delays.
//!
//! `cargo bench --bench network -- [--nodes N] [--lookups L] [--seed S]`

mod delay;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use delay::DelayedConn;
use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use libp2p_kad::store::MemoryStore;
use tokio::sync::{mpsc, oneshot};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/kad/1.0.0");
const K: usize = 20;
const BOOTSTRAP_PEERS: usize = 3;
const CONCURRENT_LOOKUPS: usize = 10;

/// kadence routing-table removals (`Event::PeerRemoved`) during the run.
static REMOVED: AtomicUsize = AtomicUsize::new(0);

/// SplitMix64: a small seeded generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn bytes(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Kadence,
    KadDefault,
    KadAlpha10,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Kadence => "kadence",
            Kind::KadDefault => "libp2p-kad (defaults)",
            Kind::KadAlpha10 => "libp2p-kad (alpha = 10)",
        }
    }
}

/// What one lookup returned.
struct Found {
    peers: Vec<PeerId>,
    requests: u32,
}

enum Command {
    Bootstrap(oneshot::Sender<()>),
    Lookup(Vec<u8>, oneshot::Sender<Found>),
}

struct Node {
    commands: mpsc::UnboundedSender<Command>,
    task: tokio::task::JoinHandle<()>,
}

fn swarm<B: NetworkBehaviour>(key: &Keypair, delay: Duration, behaviour: B) -> Swarm<B> {
    let transport = MemoryTransport::default()
        .map(move |conn, _| DelayedConn::new(conn, delay))
        .upgrade(Version::V1)
        .authenticate(libp2p::noise::Config::new(key).expect("noise keys"))
        .multiplex(libp2p::yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed();
    Swarm::new(
        transport,
        behaviour,
        key.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

fn start_kadence(
    key: &Keypair,
    delay: Duration,
    addr: Multiaddr,
    boot: Vec<(PeerId, Multiaddr)>,
) -> Node {
    let config = kadence::Config::new(PROTOCOL).with_mode(Some(kadence::Mode::Server));
    let mut swarm = swarm(
        key,
        delay,
        kadence::Behaviour::new(key.public().to_peer_id(), config),
    );
    swarm.listen_on(addr).expect("memory listen");
    for (peer, a) in boot {
        swarm.behaviour_mut().add_address(peer, a);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut boots: Vec<(kadence::QueryId, oneshot::Sender<()>)> = Vec::new();
        let mut lookups: Vec<(kadence::QueryId, oneshot::Sender<Found>)> = Vec::new();
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    None => return,
                    Some(Command::Bootstrap(reply)) => match swarm.behaviour_mut().bootstrap() {
                        Ok(id) => boots.push((id, reply)),
                        Err(_) => { let _ = reply.send(()); }
                    },
                    Some(Command::Lookup(key, reply)) => {
                        let id = swarm.behaviour_mut().get_closest_peers(key);
                        lookups.push((id, reply));
                    }
                },
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(kadence::Event::PeerRemoved { .. }) = event {
                        REMOVED.fetch_add(1, Ordering::Relaxed);
                    }
                    if let SwarmEvent::Behaviour(kadence::Event::QueryFinished { id, result, stats }) = event {
                        if let Some(i) = boots.iter().position(|b| b.0 == id) {
                            let _ = boots.swap_remove(i).1.send(());
                        } else if let Some(i) = lookups.iter().position(|l| l.0 == id) {
                            let peers = match result {
                                kadence::QueryResult::ClosestPeers(Ok(peers)) => peers.iter().map(|p| p.id).collect(),
                                _ => Vec::new(),
                            };
                            let _ = lookups.swap_remove(i).1.send(Found { peers, requests: stats.requests });
                        }
                    }
                }
            }
        }
    });
    Node { commands: tx, task }
}

fn start_kad(
    key: &Keypair,
    delay: Duration,
    addr: Multiaddr,
    boot: Vec<(PeerId, Multiaddr)>,
    alpha: Option<usize>,
) -> Node {
    let id = key.public().to_peer_id();
    let mut config = libp2p_kad::Config::new(PROTOCOL);
    if let Some(alpha) = alpha.and_then(std::num::NonZeroUsize::new) {
        config.set_parallelism(alpha);
    }
    let mut kad = libp2p_kad::Behaviour::with_config(id, MemoryStore::new(id), config);
    kad.set_mode(Some(libp2p_kad::Mode::Server));
    let mut swarm = swarm(key, delay, kad);
    swarm.listen_on(addr).expect("memory listen");
    for (peer, a) in boot {
        swarm.behaviour_mut().add_address(&peer, a);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut boots: Vec<(libp2p_kad::QueryId, oneshot::Sender<()>)> = Vec::new();
        let mut lookups: Vec<(libp2p_kad::QueryId, oneshot::Sender<Found>)> = Vec::new();
        loop {
            tokio::select! {
                command = rx.recv() => match command {
                    None => return,
                    Some(Command::Bootstrap(reply)) => match swarm.behaviour_mut().bootstrap() {
                        Ok(id) => boots.push((id, reply)),
                        Err(_) => { let _ = reply.send(()); }
                    },
                    Some(Command::Lookup(key, reply)) => {
                        let id = swarm.behaviour_mut().get_closest_peers(key);
                        lookups.push((id, reply));
                    }
                },
                event = swarm.select_next_some() => {
                    if let SwarmEvent::Behaviour(libp2p_kad::Event::OutboundQueryProgressed { id, result, stats, step }) = event {
                        if !step.last {
                            continue;
                        }
                        if let Some(i) = boots.iter().position(|b| b.0 == id) {
                            let _ = boots.swap_remove(i).1.send(());
                        } else if let Some(i) = lookups.iter().position(|l| l.0 == id) {
                            let peers = match result {
                                libp2p_kad::QueryResult::GetClosestPeers(Ok(ok)) => ok.peers.iter().map(|p| p.peer_id).collect(),
                                libp2p_kad::QueryResult::GetClosestPeers(Err(libp2p_kad::GetClosestPeersError::Timeout { peers, .. })) => peers.iter().map(|p| p.peer_id).collect(),
                                _ => Vec::new(),
                            };
                            let _ = lookups.swap_remove(i).1.send(Found { peers, requests: stats.num_requests() });
                        }
                    }
                }
            }
        }
    });
    Node { commands: tx, task }
}

struct Setup {
    keys: Vec<Keypair>,
    ids: Vec<PeerId>,
    delays: Vec<Duration>,
    boots: Vec<Vec<usize>>,
    /// (querying node, key) per lookup.
    lookups: Vec<(usize, Vec<u8>)>,
}

#[derive(Default)]
struct Report {
    latency_ms: Vec<f64>,
    recall: Vec<f64>,
    requests: Vec<f64>,
    returned: Vec<f64>,
    setup_s: f64,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1);
    v[i]
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

fn true_closest(ids: &[PeerId], querier: usize, key: &[u8]) -> HashSet<PeerId> {
    let target = libp2p_kad::KBucketKey::new(key.to_vec());
    let mut all: Vec<(libp2p_kad::KBucketDistance, PeerId)> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != querier)
        .map(|(_, id)| (libp2p_kad::KBucketKey::from(*id).distance(&target), *id))
        .collect();
    all.sort_by_key(|e| e.0);
    all.into_iter().take(K).map(|e| e.1).collect()
}

async fn run(kind: Kind, setup: &Setup, port_base: u64) -> Report {
    let n = setup.keys.len();
    let started = Instant::now();
    let addr =
        |i: usize| -> Multiaddr { format!("/memory/{}", port_base + i as u64).parse().unwrap() };
    let nodes: Vec<Node> = (0..n)
        .map(|i| {
            let boot = setup.boots[i]
                .iter()
                .map(|&j| (setup.ids[j], addr(j)))
                .collect();
            let (key, delay) = (&setup.keys[i], setup.delays[i]);
            match kind {
                Kind::Kadence => start_kadence(key, delay, addr(i), boot),
                Kind::KadDefault => start_kad(key, delay, addr(i), boot, None),
                Kind::KadAlpha10 => start_kad(key, delay, addr(i), boot, Some(10)),
            }
        })
        .collect();
    // Two rounds of bootstrap from every node, all at once, then let the tables settle.
    for _round in 0..2 {
        futures::stream::iter(nodes.iter())
            .for_each_concurrent(None, |node| async move {
                let (tx, rx) = oneshot::channel();
                if node.commands.send(Command::Bootstrap(tx)).is_ok() {
                    let _ = tokio::time::timeout(Duration::from_secs(120), rx).await;
                }
            })
            .await;
    }
    tokio::time::sleep(Duration::from_secs(
        std::env::var("BENCH_SETTLE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(2),
    ))
    .await;
    let removed_at_setup = REMOVED.load(Ordering::Relaxed);
    let mut report = Report {
        setup_s: started.elapsed().as_secs_f64(),
        ..Report::default()
    };

    let results: Vec<(f64, f64, f64, f64)> = futures::stream::iter(setup.lookups.iter())
        .map(|(querier, key)| {
            let node = &nodes[*querier];
            async move {
                let truth = true_closest(&setup.ids, *querier, key);
                let (tx, rx) = oneshot::channel();
                let start = Instant::now();
                node.commands.send(Command::Lookup(key.clone(), tx)).ok()?;
                let found = tokio::time::timeout(Duration::from_secs(120), rx)
                    .await
                    .ok()?
                    .ok()?;
                let latency = start.elapsed().as_secs_f64() * 1000.0;
                let hits = found.peers.iter().filter(|p| truth.contains(p)).count();
                Some((
                    latency,
                    hits as f64 / truth.len().max(1) as f64,
                    found.requests as f64,
                    found.peers.len() as f64,
                ))
            }
        })
        .buffer_unordered(CONCURRENT_LOOKUPS)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    for (latency, recall, requests, returned) in results {
        report.returned.push(returned);
        report.latency_ms.push(latency);
        report.recall.push(recall);
        report.requests.push(requests);
    }
    for node in nodes {
        node.task.abort();
    }
    if kind == Kind::Kadence {
        eprintln!(
            "kadence table removals: {removed_at_setup} during setup, {} during lookups",
            REMOVED.load(Ordering::Relaxed) - removed_at_setup
        );
    }
    report
}

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} takes a number"))
        })
        .unwrap_or(default)
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--nodes", 200) as usize;
    let lookups = arg(&args, "--lookups", 300) as usize;
    let seed = arg(&args, "--seed", 1);
    assert!(n > BOOTSTRAP_PEERS, "--nodes must exceed {BOOTSTRAP_PEERS}");

    let mut rng = Rng(seed);
    let keys: Vec<Keypair> = (0..n)
        .map(|_| Keypair::ed25519_from_bytes(rng.bytes()).expect("ed25519 key"))
        .collect();
    let ids = keys.iter().map(|k| k.public().to_peer_id()).collect();
    // Access delays log-uniform between 5 and 150 ms.
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
    let lookups = (0..lookups)
        .map(|_| (rng.below(n), rng.bytes().to_vec()))
        .collect();
    let setup = Setup {
        keys,
        ids,
        delays,
        boots,
        lookups,
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let wall = Instant::now();
    let kinds = [Kind::Kadence, Kind::KadDefault, Kind::KadAlpha10];
    let reports: Vec<Report> = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            eprintln!("network bench: running {} ({n} nodes)", kind.name());
            runtime.block_on(run(kind, &setup, 1_000_000 * (i as u64 + 1)))
        })
        .collect();
    runtime.shutdown_timeout(Duration::from_secs(1));

    println!(
        "\n{n} nodes, {} lookups, seed {seed}, wall {:.1} s\n",
        setup.lookups.len(),
        wall.elapsed().as_secs_f64()
    );
    println!("| implementation | lookups done | latency p50 (ms) | latency p95 (ms) | recall mean | recall p5 | requests p50 | requests p95 | peers returned (mean) | setup (s) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut json = Vec::new();
    for (kind, r) in kinds.iter().zip(&reports) {
        let row = serde_json::json!({
            "implementation": kind.name(),
            "lookups": r.latency_ms.len(),
            "latency_ms_p50": percentile(&r.latency_ms, 0.5),
            "latency_ms_p95": percentile(&r.latency_ms, 0.95),
            "recall_mean": mean(&r.recall),
            "recall_p5": percentile(&r.recall, 0.05),
            "requests_p50": percentile(&r.requests, 0.5),
            "requests_p95": percentile(&r.requests, 0.95),
            "returned_mean": mean(&r.returned),
            "setup_s": r.setup_s,
        });
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.3} | {:.2} | {:.0} | {:.0} | {:.1} | {:.1} |",
            kind.name(),
            r.latency_ms.len(),
            percentile(&r.latency_ms, 0.5),
            percentile(&r.latency_ms, 0.95),
            mean(&r.recall),
            percentile(&r.recall, 0.05),
            percentile(&r.requests, 0.5),
            percentile(&r.requests, 0.95),
            mean(&r.returned),
            r.setup_s,
        );
        json.push(row);
    }
    let out = serde_json::json!({
        "nodes": n,
        "lookups": setup.lookups.len(),
        "seed": seed,
        "wall_s": wall.elapsed().as_secs_f64(),
        "results": json,
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("network-bench.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out).expect("json")).expect("write json");
    println!("\nwrote {}", path.display());
}
