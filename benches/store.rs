//! kadence's provider stores against libp2p-kad's `MemoryStore`, in the same run:
//!
//! - `store/add_provider_10k/{kadence-memory,kadence-persistent,libp2p-kad-memory}`: 10,000
//!   provider records (distinct 34-byte keys shaped like sha2-256 multihashes, one provider
//!   each, with a TCP and a QUIC address) added to a fresh, empty store, one by one. The store
//!   and the records are built outside the measurement. kadence's `PersistentStore` (redb in a
//!   temporary directory) buffers the whole batch in one write transaction
//!   (`max_buffered_writes: usize::MAX`) and the `flush()` that commits it, with an fsync, is
//!   measured too. Throughput is in records per second.
//! - `store/providers/{kadence-memory,kadence-persistent-cached,kadence-persistent-cold,
//!   libp2p-kad-memory}`: `providers(key)` on a store holding 10,000 keys. The memory stores
//!   and `kadence-persistent-cold` cycle through all 10,000 keys (random bytes, so in no
//!   particular order in any of the stores): the persistent store's LRU cache of 256 keys
//!   misses on every lookup, which reads and decodes the records from redb's B-tree (its
//!   pages are in memory by then: cold means a cache miss, not a disk read).
//!   `kadence-persistent-cached` cycles through 128 hot keys, all in the cache.
//! - Before those, printed: live heap bytes per provider record kept by each memory store,
//!   measured with a counting global allocator (10,000 keys, one provider each, minus the
//!   empty store); and the time to write 100,000 records to a `PersistentStore` in batches of
//!   10,000 with `add_providers`, each batch followed by `flush()` (an fsync'd redb commit).
//!   libp2p-kad keeps each key's providers in a `SmallVec` with room for 20 records inline
//!   (about 3 KB, in the hash table itself), so its bytes per record with one provider per key
//!   are mostly that reserved room.
//! - Then the longest polls of a swarm whose store is on disk: a kadence server with a
//!   `PersistentStore` (default settings: flushed every 100 ms) takes 100,000 ADD_PROVIDER
//!   writes from a peer that sends them back to back on 4 streams (memory transport), and every
//!   `poll_next` of the server's swarm is timed (the handler events, the behaviour's poll and
//!   whatever the store does in them). Percentiles of the poll durations are printed.
//!
//! `cargo bench --bench store` (`cargo bench --bench store -- poll` for the poll part alone)

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use std::task::Poll;

use criterion::{criterion_group, BatchSize, Criterion, SamplingMode, Throughput};
use futures::{AsyncWriteExt, StreamExt};
use kadence::network::codec::write_frame;
use kadence::network::message::encode_request;
use kadence::routing_table::{KBucketConfig, KBucketTable};
use kadence::store::{
    MemoryStore, MemoryStoreConfig, PersistentStore, PersistentStoreConfig, ProviderRecord,
    ProviderStore, Store,
};
use kadence::{Behaviour, ConnectionType, Event, InboundOutcome, Mode, PeerRecord, Request};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use libp2p_kad::store::{
    MemoryStore as KadStore, MemoryStoreConfig as KadStoreConfig, RecordStore as _,
};
use libp2p_kad::RecordKey;
use libp2p_swarm_test::SwarmExt;
use tempfile::TempDir;

#[path = "support/counting_alloc.rs"]
mod counting_alloc;
use counting_alloc::{live, COUNTING};

// ---------------------------------------------------------------------------------------------
// Inputs.

/// Keys in a store, and records per benchmark iteration.
const N: usize = 10_000;
/// Hot keys of the cached lookups: well within the persistent store's default 256-key cache.
const HOT: usize = 128;
/// Records written by the batched persistent-write run, and the batch size.
const SCALE: usize = 100_000;
const BATCH: usize = 10_000;

/// What differs between records: the key and the provider.
struct Input {
    key: Vec<u8>,
    provider: PeerId,
}

/// A sha2-256 multihash of random bytes (`0x12 0x20` + 32 bytes), as keys of the public DHT
/// are.
fn random_key() -> Vec<u8> {
    let mut key = Vec::with_capacity(34);
    key.extend_from_slice(&[0x12, 0x20]);
    key.extend_from_slice(&rand::random::<[u8; 32]>());
    key
}

fn inputs(n: usize) -> Vec<Input> {
    (0..n)
        .map(|_| Input {
            key: random_key(),
            provider: PeerId::random(),
        })
        .collect()
}

/// The two addresses of every provider, built anew each time (as decoding a message does).
fn addrs() -> Vec<Multiaddr> {
    let ip = Protocol::Ip4([1, 2, 3, 4].into());
    vec![
        Multiaddr::empty()
            .with(ip.clone())
            .with(Protocol::Tcp(4001)),
        Multiaddr::empty()
            .with(ip)
            .with(Protocol::Udp(4001))
            .with(Protocol::QuicV1),
    ]
}

fn kadence_record(input: &Input, now: SystemTime) -> ProviderRecord {
    ProviderRecord {
        key: input.key.clone(),
        provider: input.provider,
        addrs: addrs(),
        received: now,
        expires: now + Duration::from_secs(48 * 3600),
        addrs_expire: now + Duration::from_secs(24 * 3600),
    }
}

fn kad_record(input: &Input) -> libp2p_kad::ProviderRecord {
    libp2p_kad::ProviderRecord::new(RecordKey::new(&input.key), input.provider, addrs())
}

// ---------------------------------------------------------------------------------------------
// Stores.

fn kadence_memory() -> MemoryStore {
    MemoryStore::new(MemoryStoreConfig {
        max_provider_keys: 10 * SCALE,
        ..Default::default()
    })
}

fn kad_memory() -> KadStore {
    KadStore::with_config(
        PeerId::random(),
        KadStoreConfig {
            max_records: 10 * SCALE,
            max_provided_keys: 10 * SCALE,
            max_providers_per_key: 20,
            ..Default::default()
        },
    )
}

/// An empty persistent store in a fresh temporary directory, committing only on `flush()`.
/// The directory goes after the store (tuple fields drop in order).
fn kadence_persistent() -> (PersistentStore, TempDir) {
    let dir = tempfile::tempdir().expect("temporary directory");
    let store = PersistentStore::open(
        db_path(&dir),
        PersistentStoreConfig {
            max_buffered_writes: usize::MAX,
            ..Default::default()
        },
    )
    .expect("open the persistent store");
    (store, dir)
}

fn db_path(dir: &TempDir) -> PathBuf {
    dir.path().join("store.redb")
}

// ---------------------------------------------------------------------------------------------
// Memory per record.

struct MemoryRow {
    implementation: &'static str,
    keys: usize,
    empty: isize,
    added: isize,
}

/// Live bytes of the store filled with one record per input, minus those of the empty store.
/// The records are built inside the counted window and handed over, so the store owns them as
/// it would after decoding a message; whatever it drops or copies is accounted for.
fn measure<T>(empty: impl FnOnce() -> T, fill: impl FnOnce(&mut T)) -> (isize, isize) {
    COUNTING.store(true, Ordering::SeqCst);
    let start = live();
    let mut store = empty();
    let empty_bytes = live() - start;
    fill(&mut store);
    let full_bytes = live() - start;
    COUNTING.store(false, Ordering::SeqCst);
    drop(store);
    (empty_bytes, full_bytes - empty_bytes)
}

fn memory_table(inputs: &[Input], now: SystemTime) -> Vec<MemoryRow> {
    // Warm up once, so that lazily created globals are not counted against the first store.
    let mut warm = kadence_memory();
    let mut warm_kad = kad_memory();
    for input in inputs.iter().take(16) {
        warm.add_provider(kadence_record(input, now)).unwrap();
        warm_kad.add_provider(kad_record(input)).unwrap();
    }
    drop((warm, warm_kad));

    let (empty, added) = measure(kadence_memory, |store| {
        for input in inputs {
            store.add_provider(kadence_record(input, now)).unwrap();
        }
        assert_eq!(store.provider_keys_len(), inputs.len());
    });
    let kadence = MemoryRow {
        implementation: "kadence",
        keys: inputs.len(),
        empty,
        added,
    };
    let (empty, added) = measure(kad_memory, |store| {
        for input in inputs {
            store.add_provider(kad_record(input)).unwrap();
        }
    });
    let kad = MemoryRow {
        implementation: "libp2p-kad",
        keys: inputs.len(),
        empty,
        added,
    };
    vec![kadence, kad]
}

fn print_memory_table(rows: &[MemoryRow]) {
    println!();
    println!(
        "store memory: live heap bytes of the filled store minus the empty one \
         (1 provider per key, 2 multiaddrs each)"
    );
    println!(
        "{:<12} {:>7} {:>12} {:>12} {:>13}",
        "impl", "keys", "empty bytes", "added", "bytes/record"
    );
    for r in rows {
        println!(
            "{:<12} {:>7} {:>12} {:>12} {:>13.1}",
            r.implementation,
            r.keys,
            r.empty,
            r.added,
            r.added as f64 / r.keys as f64
        );
    }
    println!();
}

// ---------------------------------------------------------------------------------------------
// Persistent writes at scale.

fn persistent_batches(now: SystemTime) {
    let records: Vec<Vec<ProviderRecord>> = inputs(SCALE)
        .chunks(BATCH)
        .map(|chunk| chunk.iter().map(|i| kadence_record(i, now)).collect())
        .collect();
    let (mut store, dir) = kadence_persistent();
    let mut batch_times = Vec::with_capacity(records.len());
    let start = Instant::now();
    for batch in records {
        let batch_start = Instant::now();
        let stored = store.add_providers(batch).expect("add_providers");
        assert_eq!(stored, BATCH);
        store.flush().expect("flush");
        batch_times.push(batch_start.elapsed());
    }
    let total = start.elapsed();
    let file = std::fs::metadata(db_path(&dir)).map_or(0, |m| m.len());
    drop(store);

    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let first = batch_times.first().map_or(0.0, ms);
    let last = batch_times.last().map_or(0.0, ms);
    let max = batch_times.iter().map(ms).fold(0.0, f64::max);
    println!(
        "store persistent writes: {SCALE} provider records in batches of {BATCH} \
         (add_providers + flush)"
    );
    println!(
        "  total {:.3} s = {:.0} records/s; batch first {first:.1} ms, last {last:.1} ms, \
         slowest {max:.1} ms",
        total.as_secs_f64(),
        SCALE as f64 / total.as_secs_f64()
    );
    println!(
        "  file {:.1} MiB ({:.0} bytes/record on disk)",
        file as f64 / (1024.0 * 1024.0),
        file as f64 / SCALE as f64
    );
    println!(
        "  each flush is an fsync'd redb commit: a crash loses at most the unflushed batch, \
         never a flushed one"
    );
    println!();
}

// ---------------------------------------------------------------------------------------------
// Benchmarks.

fn bench(c: &mut Criterion) {
    let now = SystemTime::now();
    let inputs = inputs(N);

    print_memory_table(&memory_table(&inputs, now));
    persistent_batches(now);

    // Records are built once; each iteration gets a clone (made outside the measurement).
    let kadence_records: Vec<ProviderRecord> =
        inputs.iter().map(|i| kadence_record(i, now)).collect();
    let kad_records: Vec<libp2p_kad::ProviderRecord> = inputs.iter().map(kad_record).collect();

    let mut group = c.benchmark_group("store/add_provider_10k");
    group.throughput(Throughput::Elements(N as u64));
    // Milliseconds per iteration: flat sampling, and fewer samples, fit in the 3 s.
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(30);
    group.bench_function("kadence-memory", |b| {
        b.iter_batched(
            || (kadence_memory(), kadence_records.clone()),
            |(mut store, records)| {
                for record in records {
                    store.add_provider(record).unwrap();
                }
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.sample_size(10);
    group.bench_function("kadence-persistent", |b| {
        b.iter_batched(
            || (kadence_persistent(), kadence_records.clone()),
            |((mut store, dir), records)| {
                for record in records {
                    store.add_provider(record).unwrap();
                }
                store.flush().unwrap();
                (store, dir)
            },
            BatchSize::PerIteration,
        )
    });
    group.sample_size(30);
    group.bench_function("libp2p-kad-memory", |b| {
        b.iter_batched(
            || (kad_memory(), kad_records.clone()),
            |(mut store, records)| {
                for record in records {
                    store.add_provider(record).unwrap();
                }
                store
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    // Lookups on stores holding the same 10,000 keys.
    let keys: Vec<Vec<u8>> = inputs.iter().map(|i| i.key.clone()).collect();
    let kad_keys: Vec<RecordKey> = keys.iter().map(RecordKey::new).collect();

    let mut kadence = kadence_memory();
    for record in kadence_records.iter().cloned() {
        kadence.add_provider(record).unwrap();
    }
    let mut kad = kad_memory();
    for record in kad_records.iter().cloned() {
        kad.add_provider(record).unwrap();
    }
    let (mut persistent, _dir) = kadence_persistent();
    persistent.add_providers(kadence_records.clone()).unwrap();
    persistent.flush().unwrap();

    // All must find the one provider of every key, or the comparison means nothing.
    for (key, kad_key) in keys.iter().zip(&kad_keys).step_by(97) {
        assert_eq!(kadence.providers(key, now).unwrap().len(), 1);
        assert_eq!(persistent.providers(key, now).unwrap().len(), 1);
        assert_eq!(kad.providers(kad_key).len(), 1);
    }

    let mut group = c.benchmark_group("store/providers");
    group.throughput(Throughput::Elements(1));
    let mut i = 0;
    group.bench_function("kadence-memory", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(kadence.providers(black_box(&keys[i]), now).unwrap())
        })
    });
    // Warm the cache with the hot keys.
    for key in &keys[..HOT] {
        persistent.providers(key, now).unwrap();
    }
    let mut i = 0;
    group.bench_function("kadence-persistent-cached", |b| {
        b.iter(|| {
            i = (i + 1) % HOT;
            black_box(persistent.providers(black_box(&keys[i]), now).unwrap())
        })
    });
    let mut i = 0;
    group.bench_function("kadence-persistent-cold", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(persistent.providers(black_box(&keys[i]), now).unwrap())
        })
    });
    let mut i = 0;
    group.bench_function("libp2p-kad-memory", |b| {
        b.iter(|| {
            i = (i + 1) % N;
            black_box(kad.providers(black_box(&kad_keys[i])))
        })
    });
    group.finish();
}

// ---------------------------------------------------------------------------------------------
// The longest polls of a swarm while a peer floods its persistent store with writes.

/// Writes the flooding peer sends, over this many streams at once.
const FLOOD: usize = 100_000;
const FLOOD_STREAMS: usize = 4;
const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/kad/1.0.0");

thread_local! {
    /// This thread's /proc status, kept open and read again from the start for each sample.
    static STATUS: std::cell::RefCell<Option<std::fs::File>> =
        const { std::cell::RefCell::new(None) };
}

/// How many times the calling thread has gone to sleep: waited for I/O or a lock, as opposed
/// to being preempted (Linux only). Exact, unlike the kernel's CPU times.
fn voluntary_switches() -> Option<u64> {
    use std::io::{Read, Seek};
    STATUS.with(|file| {
        let mut file = file.borrow_mut();
        if file.is_none() {
            *file = std::fs::File::open("/proc/thread-self/status").ok();
        }
        let file = file.as_mut()?;
        let mut text = String::new();
        file.rewind().ok()?;
        file.read_to_string(&mut text).ok()?;
        let line = text
            .lines()
            .find(|l| l.starts_with("voluntary_ctxt_switches:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    })
}

/// What the server's swarm did while flooded.
struct FloodRun {
    polls: Vec<Duration>,
    /// The polls in which the thread went to sleep (waited for the disk or a lock).
    slept: Vec<Duration>,
    stored: usize,
    refused: usize,
    elapsed: Duration,
}

/// Drives the server until `stop` fires, timing every `poll_next` of its swarm.
async fn drive_timed(
    mut swarm: Swarm<Behaviour>,
    events: tokio::sync::mpsc::UnboundedSender<Event>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) -> (Vec<Duration>, Vec<Duration>) {
    let mut times = Vec::with_capacity(2 * FLOOD);
    let mut slept = Vec::new();
    let polled = futures::future::poll_fn(|cx| loop {
        // Read before the clock starts: its cost (a few microseconds) is not the poll's.
        let before = voluntary_switches();
        let start = Instant::now();
        let next = swarm.poll_next_unpin(cx);
        let wall = start.elapsed();
        times.push(wall);
        if before.zip(voluntary_switches()).is_some_and(|(b, a)| a > b) {
            slept.push(wall);
        }
        match next {
            Poll::Ready(Some(SwarmEvent::Behaviour(event))) => {
                let _ = events.send(event);
            }
            Poll::Ready(Some(_)) => {}
            Poll::Ready(None) => return Poll::Ready(()),
            Poll::Pending => return Poll::Pending,
        }
    });
    tokio::select! {
        _ = polled => {}
        _ = &mut stop => {}
    }
    // The store's last commit happens when it is dropped, outside the timed polls.
    drop(swarm);
    (times, slept)
}

async fn flood_run(path: PathBuf) -> FloodRun {
    let mut server = Swarm::new_ephemeral_tokio(|key| {
        let local = key.public().to_peer_id();
        let store = PersistentStore::open(&path, PersistentStoreConfig::default())
            .expect("open the persistent store");
        let table = KBucketTable::new(local, KBucketConfig::default());
        let config = kadence::Config::new(PROTOCOL).with_mode(Some(Mode::Server));
        Behaviour::with_parts(local, config, table, store)
    });
    server.listen().with_memory_addr_external().await;
    let server_id = *server.local_peer_id();
    let mut raw = Swarm::new_ephemeral_tokio(|_| libp2p_stream::Behaviour::new());
    let mut control = raw.behaviour().new_control();
    raw.connect(&mut server).await;
    let me = *raw.local_peer_id();
    tokio::spawn(raw.loop_on_next());

    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
    let driver = tokio::spawn(drive_timed(server, events_tx, stop_rx));
    let start = Instant::now();
    for _ in 0..FLOOD_STREAMS {
        let mut stream = control
            .open_stream(server_id, PROTOCOL)
            .await
            .expect("a stream to the server");
        tokio::spawn(async move {
            for _ in 0..FLOOD / FLOOD_STREAMS {
                let request = Request::AddProvider {
                    key: random_key(),
                    providers: vec![PeerRecord {
                        id: me,
                        addrs: addrs(),
                        connection: ConnectionType::Connected,
                    }],
                };
                write_frame(&mut stream, &encode_request(&request))
                    .await
                    .expect("the server reads");
            }
            let _ = stream.close().await;
        });
    }
    let (mut stored, mut refused) = (0, 0);
    while stored + refused < FLOOD {
        match events.recv().await.expect("the server runs") {
            Event::InboundRequest {
                outcome: InboundOutcome::Stored,
                ..
            } => stored += 1,
            Event::InboundRequest {
                outcome: InboundOutcome::Rejected(_),
                ..
            } => refused += 1,
            _ => {}
        }
    }
    let elapsed = start.elapsed();
    // The commits of the last writes happen in the next flush intervals: time those polls too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(());
    let (polls, slept) = driver.await.expect("the server's task");
    FloodRun {
        polls,
        slept,
        stored,
        refused,
        elapsed,
    }
}

fn poll_under_flood() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    // In the target directory, on the disk (a tmpfs would make an fsync free).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temporary directory");
    let run = runtime.block_on(flood_run(dir.path().join("flood.redb")));
    let mut polls = run.polls;
    polls.sort();
    let at = |p: f64| {
        let rank = ((p / 100.0) * polls.len() as f64).ceil() as usize;
        polls[rank.clamp(1, polls.len()) - 1]
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "store poll under flood: {} ADD_PROVIDER writes from one peer on {FLOOD_STREAMS} \
         streams, PersistentStore on disk, default settings",
        FLOOD
    );
    println!(
        "  stored {} refused {} in {:.2} s ({:.0} writes/s), {} polls of the server's swarm",
        run.stored,
        run.refused,
        run.elapsed.as_secs_f64(),
        FLOOD as f64 / run.elapsed.as_secs_f64(),
        polls.len()
    );
    println!(
        "  poll duration: p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us",
        us(at(50.0)),
        us(at(99.0)),
        us(at(99.9)),
        us(*polls.last().expect("polls"))
    );
    let over = |ms: u64| {
        polls
            .iter()
            .filter(|d| **d >= Duration::from_millis(ms))
            .count()
    };
    println!(
        "  polls >= 1 ms: {}, >= 10 ms: {}, >= 30 ms: {}",
        over(1),
        over(10),
        over(30)
    );
    // Preemption (the machine is shared) makes polls slow without them waiting for anything;
    // a poll that went to sleep waited for the disk or a lock.
    let slept_over = |ms: u64| {
        run.slept
            .iter()
            .filter(|d| **d >= Duration::from_millis(ms))
            .count()
    };
    println!(
        "  polls that went to sleep (waited for the disk or a lock): {}, >= 1 ms: {}, \
         >= 10 ms: {}",
        run.slept.len(),
        slept_over(1),
        slept_over(10)
    );
    println!();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    targets = bench
}

fn main() {
    // `-- poll`: the poll measurement alone.
    let only_poll = std::env::args().skip(1).any(|a| a == "poll");
    poll_under_flood();
    if !only_poll {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
}
