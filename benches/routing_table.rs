//! kadence's routing table against libp2p-kad's, in the same run:
//!
//! - `routing_table/closest20/{kadence,libp2p-kad}/{1000,10000}`: the 20 closest peers to a
//!   random target, with their addresses, from a table offered 1,000 or 10,000 random peers
//!   (what a server does to answer FIND_NODE). libp2p-kad's `KBucketsTable` is not public, so
//!   its `Behaviour::find_closest_local_peers` is used, the call its server answers with.
//! - `routing_table/insert1000/{kadence,libp2p-kad}`: 1,000 random peers offered to an empty
//!   table.
//! - Before those, live heap bytes per entry kept, measured with a counting global allocator,
//!   printed as a table, with the bytes of the empty table beside them (libp2p-kad allocates
//!   room for k nodes in each of its 256 buckets up front, so its entries add little on top).
//!
//! Both tables have k = 20 and hash peer ids with SHA-256, so given the same peers in the same
//! order they keep the same set; with random peers only the deepest few buckets are not full,
//! so a table offered N peers keeps far fewer than N (the sizes are printed).
//!
//! `cargo bench --bench routing_table`

use std::hint::black_box;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use kadence::key::Key;
use kadence::routing_table::{KBucketConfig, KBucketTable, RoutingTable};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use libp2p_kad::store::MemoryStore;
use libp2p_kad::KBucketKey;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, COUNTING};

// ---------------------------------------------------------------------------------------------
// Inputs.

const K: usize = 20;
const TARGETS: usize = 1024;

/// The one address each peer gets (loopback: the diversity filter would exempt it anyway).
fn address(port: u16) -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Tcp(port))
}

/// `n` random peers, each with its port.
fn random_peers(n: usize) -> Vec<(PeerId, u16)> {
    (0..n)
        .map(|i| (PeerId::random(), 1024 + i as u16))
        .collect()
}

fn kadence_table(local: PeerId) -> KBucketTable {
    KBucketTable::new(
        local,
        KBucketConfig {
            diversity: None,
            ..Default::default()
        },
    )
}

type Kad = libp2p_kad::Behaviour<MemoryStore>;

fn kad_table(local: PeerId) -> Kad {
    Kad::with_config(
        local,
        MemoryStore::new(local),
        libp2p_kad::Config::new(StreamProtocol::new("/bench/kad/1.0.0")),
    )
}

/// Polls the behaviour until it has nothing more to say: drops the `RoutingUpdated` events and
/// `Dial`s `add_address` queues.
fn drain(kad: &mut Kad) -> usize {
    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut n = 0;
    while let Poll::Ready(event) = NetworkBehaviour::poll(kad, &mut cx) {
        drop(event);
        n += 1;
    }
    n
}

fn kad_len(kad: &mut Kad) -> usize {
    kad.kbuckets().map(|b| b.num_entries()).sum()
}

fn kad_pending(kad: &mut Kad) -> usize {
    kad.kbuckets().filter(|b| b.has_pending()).count()
}

fn kadence_replacements(table: &KBucketTable) -> usize {
    (0..256).map(|b| table.replacements_len(b)).sum()
}

fn build_kadence(local: PeerId, peers: &[(PeerId, u16)], now: Instant) -> KBucketTable {
    let mut table = kadence_table(local);
    for &(peer, port) in peers {
        table.on_server_peer(peer, &[address(port)], None, now);
    }
    table
}

fn build_kad(local: PeerId, peers: &[(PeerId, u16)]) -> Kad {
    let mut kad = kad_table(local);
    for &(peer, port) in peers {
        kad.add_address(&peer, address(port));
    }
    drain(&mut kad);
    kad
}

// ---------------------------------------------------------------------------------------------
// Memory per entry.

struct MemoryRow {
    implementation: &'static str,
    inserted: usize,
    kept: usize,
    candidates: String,
    empty: isize,
    bytes: isize,
}

/// Live bytes of the table built from `peers`, minus those of the empty table, with the number
/// of entries kept and of candidates waiting. The addresses are created inside the counted
/// window and handed over, so the table owns them as it would after decoding a message.
fn measure<T>(
    empty: impl FnOnce() -> T,
    fill: impl FnOnce(&mut T),
    stats: impl FnOnce(&mut T) -> (usize, String),
) -> (usize, String, isize, isize) {
    COUNTING.store(true, Ordering::SeqCst);
    let start = live();
    let mut table = empty();
    let empty_bytes = live() - start;
    fill(&mut table);
    let full_bytes = live() - start;
    COUNTING.store(false, Ordering::SeqCst);
    let (kept, candidates) = stats(&mut table);
    drop(table);
    (kept, candidates, empty_bytes, full_bytes - empty_bytes)
}

fn memory_table(local: PeerId, now: Instant) -> Vec<MemoryRow> {
    // Warm up once, so that lazily created globals (the timer thread libp2p-kad's bootstrap
    // timers register with, thread-locals) are not counted against the first table measured.
    drop(build_kadence(local, &random_peers(100), now));
    drop(build_kad(local, &random_peers(100)));

    let mut rows = Vec::new();
    for n in [1_000, 10_000] {
        let peers = random_peers(n);
        let (kept, candidates, empty, bytes) = measure(
            || kadence_table(local),
            |t| {
                for &(peer, port) in &peers {
                    t.on_server_peer(peer, &[address(port)], None, now);
                }
            },
            |t| (t.len(), format!("{} replacements", kadence_replacements(t))),
        );
        rows.push(MemoryRow {
            implementation: "kadence",
            inserted: n,
            kept,
            candidates,
            empty,
            bytes,
        });
        // libp2p-kad queues an event per peer inserted; its queue keeps the capacity it grew
        // to after being drained. Draining after each insert (as a swarm polling between
        // events would) measures the table; draining once at the end shows what a batch of
        // inserts leaves behind in the queue.
        for (implementation, drain_each) in [("libp2p-kad", true), ("libp2p-kad*", false)] {
            let (kept, candidates, empty, bytes) = measure(
                || {
                    let mut kad = kad_table(local);
                    drain(&mut kad);
                    kad
                },
                |kad| {
                    for &(peer, port) in &peers {
                        kad.add_address(&peer, address(port));
                        if drain_each {
                            drain(kad);
                        }
                    }
                    drain(kad);
                },
                |kad| (kad_len(kad), format!("{} pending", kad_pending(kad))),
            );
            rows.push(MemoryRow {
                implementation,
                inserted: n,
                kept,
                candidates,
                empty,
                bytes,
            });
        }
    }
    rows
}

fn print_memory_table(rows: &[MemoryRow]) {
    println!();
    println!("routing_table memory: live heap bytes of the filled table minus the empty one");
    println!(
        "{:<12} {:>9} {:>6} {:>16} {:>12} {:>10} {:>12}",
        "impl", "inserted", "kept", "candidates", "empty bytes", "added", "bytes/entry"
    );
    for r in rows {
        println!(
            "{:<12} {:>9} {:>6} {:>16} {:>12} {:>10} {:>12.1}",
            r.implementation,
            r.inserted,
            r.kept,
            r.candidates,
            r.empty,
            r.bytes,
            r.bytes as f64 / r.kept.max(1) as f64
        );
    }
    println!(
        "bytes/entry = added / kept; empty bytes = the empty table (libp2p-kad: whole behaviour)"
    );
    println!("libp2p-kad: events drained after each insert; libp2p-kad*: drained once at the end");
    println!();
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

fn bench(c: &mut Criterion) {
    let local = PeerId::random();
    let now = Instant::now();

    print_memory_table(&memory_table(local, now));

    // Targets and their keys are computed up front: only the query is measured.
    let targets: Vec<PeerId> = (0..TARGETS).map(|_| PeerId::random()).collect();
    let kadence_targets: Vec<Key> = targets.iter().map(Key::from_peer).collect();
    let kad_targets: Vec<KBucketKey<PeerId>> =
        targets.iter().map(|t| KBucketKey::from(*t)).collect();
    // The requester, not in the table (a server leaves it out of its answer).
    let source = PeerId::random();

    let mut group = c.benchmark_group("routing_table/closest20");
    for n in [1_000, 10_000] {
        let peers = random_peers(n);
        let kadence = build_kadence(local, &peers, now);
        let mut kad = build_kad(local, &peers);
        println!(
            "closest20/{n}: kadence keeps {} peers, libp2p-kad keeps {}",
            kadence.len(),
            kad_len(&mut kad)
        );

        // Both must give the same answer, or the comparison means nothing.
        for i in 0..16 {
            let ours: Vec<PeerId> = kadence
                .local_closest_peers(&kadence_targets[i], K)
                .into_iter()
                .map(|p| p.id)
                .collect();
            let theirs: Vec<PeerId> = kad
                .find_closest_local_peers(&kad_targets[i], &source)
                .take(K)
                .map(|p| p.node_id)
                .collect();
            assert_eq!(ours, theirs, "the two tables disagree on target {i}");
        }

        let mut i = 0;
        group.bench_function(BenchmarkId::new("kadence", n), |b| {
            b.iter(|| {
                i = (i + 1) % TARGETS;
                black_box(kadence.local_closest_peers(black_box(&kadence_targets[i]), K))
            })
        });
        let mut i = 0;
        group.bench_function(BenchmarkId::new("libp2p-kad", n), |b| {
            b.iter(|| {
                i = (i + 1) % TARGETS;
                black_box(
                    kad.find_closest_local_peers(black_box(&kad_targets[i]), &source)
                        .take(K)
                        .collect::<Vec<_>>(),
                )
            })
        });
    }
    group.finish();

    // Insert: a fresh empty table per iteration, built (and later dropped, with whatever
    // libp2p-kad queued) outside the measurement.
    let peers: Vec<(PeerId, Multiaddr)> = random_peers(1_000)
        .into_iter()
        .map(|(peer, port)| (peer, address(port)))
        .collect();
    let mut group = c.benchmark_group("routing_table/insert1000");
    group.throughput(Throughput::Elements(peers.len() as u64));
    // 100 samples of libp2p-kad's ~0.6 ms inserts do not fit in 3 s.
    group.sample_size(50);
    group.bench_function("kadence", |b| {
        b.iter_batched(
            || (kadence_table(local), peers.clone()),
            |(mut table, peers)| {
                for (peer, addr) in &peers {
                    table.on_server_peer(*peer, std::slice::from_ref(addr), None, now);
                }
                (table, peers)
            },
            BatchSize::SmallInput,
        )
    });
    group.bench_function("libp2p-kad", |b| {
        b.iter_batched(
            || (kad_table(local), peers.clone()),
            |(mut kad, peers)| {
                for (peer, addr) in peers {
                    kad.add_address(&peer, addr);
                }
                kad
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}
criterion_main!(benches);
