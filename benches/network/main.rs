//! Lookup latency, recall and cost, and provide -> find-providers, of kadence and libp2p-kad
//! (its defaults, and alpha = 10 like the Go peers) in a network of N nodes over the memory
//! transport with per-node access delays. A fourth network runs kadence with go's rule for
//! ending a lookup (`LookupFinish::BetaAnswered`), the trade-off its docs describe.
//!
//! `cargo bench --bench network -- [--nodes N] [--lookups L] [--provides P] [--seed S]
//! [--settle SECONDS] [--cold] [--alpha A] [--only kadence|kad|kad10|kadence-beta]`
//!
//! `--cold` closes every connection once the tables settled, so that every implementation's
//! lookups start from the same state: no connection, as in a network much larger than a
//! node's connection count. `--alpha` sets kadence's requests in flight per lookup (default 10,
//! go's), to measure that trade-off of latency against requests.
//!
//! The networks are built one after the other from the same seed: the same node keys,
//! bootstrap peers and delays, the same lookup keys from the same nodes. The table is printed,
//! and written as JSON to `target/network-bench.json`.

mod delay;
mod drivers;
mod queries;
mod report;

#[path = "../support/counting_alloc.rs"]
mod counting_alloc;
#[path = "../support/cpu.rs"]
mod cpu;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};
use tokio::sync::oneshot;

use drivers::Node;
use queries::Command;
use report::Report;

const K: usize = 20;
const BOOTSTRAP_PEERS: usize = 3;
/// Operations under way at once in the lookup and provide phases.
const CONCURRENT: usize = 10;
/// Longest wait for one operation.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// Between the provides and the finds: libp2p-kad reports a provide before its ADD_PROVIDER
/// frames are written, so give them time to land.
const PROVIDE_SETTLE: Duration = Duration::from_secs(1);
/// After `--cold` closed every connection: time for the closes to be seen on both ends.
const COLD_SETTLE: Duration = Duration::from_millis(500);

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
    /// Two distinct nodes.
    fn pair(&mut self, n: usize) -> (usize, usize) {
        let a = self.below(n);
        let b = (a + 1 + self.below(n - 1)) % n;
        (a, b)
    }
}

#[derive(Clone, Copy, PartialEq, Default)]
pub enum Kind {
    #[default]
    Kadence,
    KadDefault,
    KadAlpha10,
    /// kadence with `LookupFinish::BetaAnswered`, the rule go-libp2p-kad-dht ends lookups by.
    KadenceBetaFinish,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Kadence => "kadence",
            Kind::KadDefault => "libp2p-kad (defaults)",
            Kind::KadAlpha10 => "libp2p-kad (alpha = 10)",
            Kind::KadenceBetaFinish => "kadence (go's finish rule)",
        }
    }

    fn flag(self) -> &'static str {
        match self {
            Kind::Kadence => "kadence",
            Kind::KadDefault => "kad",
            Kind::KadAlpha10 => "kad10",
            Kind::KadenceBetaFinish => "kadence-beta",
        }
    }
}

struct Setup {
    keys: Vec<Keypair>,
    ids: Vec<PeerId>,
    delays: Vec<Duration>,
    boots: Vec<Vec<usize>>,
    /// (querying node, key) per lookup.
    lookups: Vec<(usize, Vec<u8>)>,
    /// (providing node, finding node, key) per provide -> find-providers pair.
    provides: Vec<(usize, usize, Vec<u8>)>,
    settle: Duration,
    /// Close every connection before the lookups.
    cold: bool,
    /// kadence's requests in flight per lookup.
    kadence_alpha: usize,
}

impl Setup {
    fn new(n: usize, lookups: usize, provides: usize, seed: u64, settle: Duration) -> Self {
        let mut rng = Rng(seed);
        let keys: Vec<Keypair> = (0..n)
            .map(|_| Keypair::ed25519_from_bytes(rng.bytes()).expect("ed25519 key"))
            .collect();
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
        let lookups = (0..lookups)
            .map(|_| (rng.below(n), rng.bytes().to_vec()))
            .collect();
        let provides = (0..provides)
            .map(|_| {
                let (provider, finder) = rng.pair(n);
                // Shaped like a sha2-256 multihash, as a CID's would be.
                let mut key = vec![0x12, 0x20];
                key.extend_from_slice(&rng.bytes());
                (provider, finder, key)
            })
            .collect();
        Self {
            keys,
            ids,
            delays,
            boots,
            lookups,
            provides,
            settle,
            cold: false,
            kadence_alpha: 10,
        }
    }

    fn true_closest(&self, querier: usize, key: &[u8]) -> HashSet<PeerId> {
        let target = libp2p_kad::KBucketKey::new(key.to_vec());
        let mut all: Vec<(libp2p_kad::KBucketDistance, PeerId)> = self
            .ids
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != querier)
            .map(|(_, id)| (libp2p_kad::KBucketKey::from(*id).distance(&target), *id))
            .collect();
        all.sort_by_key(|e| e.0);
        all.into_iter().take(K).map(|e| e.1).collect()
    }
}

/// Sends a command built around a reply channel and waits for the answer.
async fn ask<T>(node: &Node, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    node.commands.send(command(tx)).ok()?;
    tokio::time::timeout(OPERATION_TIMEOUT, rx).await.ok()?.ok()
}

/// Builds every node's swarm (each listening) before any of them runs, then starts them.
fn start(kind: Kind, setup: &Setup, port_base: u64) -> Vec<Node> {
    let addr =
        |i: usize| -> Multiaddr { format!("/memory/{}", port_base + i as u64).parse().unwrap() };
    let boot = |i: usize| -> Vec<(PeerId, Multiaddr)> {
        setup.boots[i]
            .iter()
            .map(|&j| (setup.ids[j], addr(j)))
            .collect()
    };
    let n = setup.keys.len();
    let node = |i: usize| (&setup.keys[i], setup.delays[i], addr(i), boot(i));
    match kind {
        Kind::Kadence | Kind::KadenceBetaFinish => {
            let finish = match kind {
                Kind::KadenceBetaFinish => kadence::LookupFinish::BetaAnswered,
                _ => kadence::LookupFinish::default(),
            };
            let swarms: Vec<_> = (0..n)
                .map(|i| {
                    let (key, delay, a, b) = node(i);
                    drivers::kadence_swarm(key, delay, a, b, finish, setup.kadence_alpha)
                })
                .collect();
            swarms.into_iter().map(drivers::spawn_kadence).collect()
        }
        Kind::KadDefault | Kind::KadAlpha10 => {
            let alpha = (kind == Kind::KadAlpha10).then_some(10);
            let swarms: Vec<_> = (0..n)
                .map(|i| {
                    let (key, delay, a, b) = node(i);
                    drivers::kad_swarm(key, delay, a, b, alpha)
                })
                .collect();
            swarms.into_iter().map(drivers::spawn_kad).collect()
        }
    }
}

async fn run(kind: Kind, setup: &Setup, port_base: u64) -> Report {
    let n = setup.keys.len();
    let heap_base = counting_alloc::live();
    counting_alloc::reset_peak();
    let removed_before = drivers::REMOVED.load(Ordering::Relaxed);
    let started = Instant::now();
    let running = start(kind, setup, port_base);
    let nodes = &running;

    // One bootstrap from every node, all at once, then let the tables settle.
    futures::stream::iter(nodes.iter())
        .for_each_concurrent(None, |node| async move {
            ask(node, Command::Bootstrap).await;
        })
        .await;
    tokio::time::sleep(setup.settle).await;
    if setup.cold {
        // Every lookup starts without connections, as in a network far larger than a node's
        // connection count.
        futures::stream::iter(nodes.iter())
            .for_each_concurrent(None, |node| async move {
                ask(node, Command::DisconnectAll).await;
            })
            .await;
        tokio::time::sleep(COLD_SETTLE).await;
    }
    let connected: usize = futures::stream::iter(nodes.iter())
        .then(|node| ask(node, Command::ConnectedPeers))
        .map(Option::unwrap_or_default)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .sum();
    let mut report = Report {
        kind,
        setup_s: started.elapsed().as_secs_f64(),
        connected_per_node: connected as f64 / n as f64,
        heap_settled_per_node: (counting_alloc::live() - heap_base) as f64 / n as f64,
        ..Report::default()
    };

    // Lookups, CONCURRENT at a time; bytes and CPU are the whole network's during the phase.
    let (bytes_before, cpu_before) = (delay::SENT.load(Ordering::Relaxed), cpu::process_cpu_ns());
    let lookups: Vec<(f64, f64, f64, f64, f64)> = futures::stream::iter(setup.lookups.iter())
        .map(|(querier, key)| async move {
            let truth = setup.true_closest(*querier, key);
            let start = Instant::now();
            let found = ask(&nodes[*querier], |tx| Command::Lookup(key.clone(), tx)).await?;
            let hits = found.peers.iter().filter(|p| truth.contains(p)).count();
            Some((
                start.elapsed().as_secs_f64() * 1000.0,
                hits as f64 / truth.len().max(1) as f64,
                found.requests as f64,
                found.peers.len() as f64,
                found.failures as f64,
            ))
        })
        .buffer_unordered(CONCURRENT)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    let done = lookups.len().max(1) as f64;
    report.bytes_per_lookup = (delay::SENT.load(Ordering::Relaxed) - bytes_before) as f64 / done;
    report.cpu_ms_per_lookup = cpu::process_cpu_ns().saturating_sub(cpu_before) as f64 / 1e6 / done;
    for (latency, recall, requests, returned, failures) in lookups {
        report.failures.push(failures);
        report.latency_ms.push(latency);
        report.recall.push(recall);
        report.requests.push(requests);
        report.returned.push(returned);
    }

    // Provide, then find the provider from another node.
    let provided: Vec<Option<f64>> = futures::stream::iter(setup.provides.iter())
        .map(|(provider, _, key)| async move {
            let start = Instant::now();
            let ok = ask(&nodes[*provider], |tx| Command::Provide(key.clone(), tx)).await?;
            ok.then(|| start.elapsed().as_secs_f64() * 1000.0)
        })
        .buffered(CONCURRENT)
        .collect()
        .await;
    tokio::time::sleep(PROVIDE_SETTLE).await;
    let found: Vec<Option<f64>> = futures::stream::iter(setup.provides.iter())
        .map(|(provider, finder, key)| async move {
            let provider = setup.ids[*provider];
            let took = ask(&nodes[*finder], |reply| Command::FindProvider {
                key: key.clone(),
                provider,
                reply,
            })
            .await??;
            Some(took.as_secs_f64() * 1000.0)
        })
        .buffered(CONCURRENT)
        .collect()
        .await;
    report.provides = setup.provides.len();
    report.provide_ms = provided.into_iter().flatten().collect();
    report.find_ms = found.into_iter().flatten().collect();

    report.heap_peak_per_node = (counting_alloc::peak() - heap_base) as f64 / n as f64;
    report.table_removals = drivers::REMOVED.load(Ordering::Relaxed) - removed_before;
    for node in running {
        node.task.abort();
        // Wait until the swarm is dropped, so its memory is not freed during the next run.
        let _ = node.task.await;
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
    counting_alloc::COUNTING.store(true, Ordering::Relaxed);
    let args: Vec<String> = std::env::args().collect();
    let n = arg(&args, "--nodes", 200) as usize;
    let lookups = arg(&args, "--lookups", 300) as usize;
    let provides = arg(&args, "--provides", 30) as usize;
    let seed = arg(&args, "--seed", 1);
    let settle = Duration::from_secs(arg(&args, "--settle", 2));
    assert!(n > BOOTSTRAP_PEERS, "--nodes must exceed {BOOTSTRAP_PEERS}");
    let mut setup = Setup::new(n, lookups, provides, seed, settle);
    setup.cold = args.iter().any(|a| a == "--cold");
    setup.kadence_alpha = arg(&args, "--alpha", 10) as usize;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let wall = Instant::now();
    // `--only kadence|kad|kad10|kadence-beta` runs one implementation, for profiling.
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1));
    let kinds: Vec<Kind> = [
        Kind::Kadence,
        Kind::KadDefault,
        Kind::KadAlpha10,
        Kind::KadenceBetaFinish,
    ]
    .into_iter()
    .filter(|k| only.is_none_or(|o| o == k.flag()))
    .collect();
    let reports: Vec<Report> = kinds
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            eprintln!("network bench: running {} ({n} nodes)", kind.name());
            let report = runtime.block_on(run(kind, &setup, 1_000_000 * (i as u64 + 1)));
            eprintln!(
                "network bench: {} done after {:.0} s",
                kind.name(),
                wall.elapsed().as_secs_f64()
            );
            report
        })
        .collect();
    runtime.shutdown_timeout(Duration::from_secs(1));

    let command = format!(
        "cargo bench --bench network -- --nodes {n} --lookups {lookups} --provides {provides} \
         --seed {seed} --settle {}",
        settle.as_secs()
    ) + &only.map(|o| format!(" --only {o}")).unwrap_or_default()
        + if setup.cold { " --cold" } else { "" }
        + &if setup.kadence_alpha == 10 {
            String::new()
        } else {
            format!(" --alpha {}", setup.kadence_alpha)
        };
    report::print(&command, wall.elapsed(), &reports);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("network-bench.json");
    let json = report::json(&command, n, seed, wall.elapsed(), &reports);
    std::fs::write(&path, serde_json::to_string_pretty(&json).expect("json")).expect("write json");
    println!("\nwrote {}", path.display());
}
