//! The disk is never on the swarm's poll path: a hostile peer floods a kadence server that
//! keeps its records in a `PersistentStore` with ADD_PROVIDER writes over raw
//! `/ipfs/kad/1.0.0`-style streams, and every poll of the server's swarm is timed. A redb
//! commit (an fsync, tens of milliseconds) inside a poll would stall every behaviour of the
//! swarm; with the commits on the store's writer thread, polls stay short.
//!
//! The flush interval is 20 ms here (100 ms by default): many commits while the flood lasts,
//! each one of which would stall a poll for an fsync if it ran there. A loaded machine also
//! makes polls slow, by preempting them: the bounds leave room for that.

mod common;

use std::path::Path;
use std::task::Poll;
use std::time::{Duration, Instant};

use common::*;
use futures::{AsyncWriteExt, StreamExt};
use kadence::network::codec::write_frame;
use kadence::network::message::encode_request;
use kadence::routing_table::{KBucketConfig, KBucketTable};
use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::{Behaviour, ConnectionType, Event, InboundOutcome, PeerRecord, Request};
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::PeerId;
use libp2p_swarm_test::SwarmExt;
use tokio::sync::{mpsc, oneshot};

/// Writes sent by the attacker, over this many streams at once.
const WRITES: usize = 20_000;
const STREAMS: usize = 4;

fn persistent_server(path: &Path) -> Swarm<Behaviour> {
    Swarm::new_ephemeral_tokio(|key| {
        let local = key.public().to_peer_id();
        let store = PersistentStore::open(path, PersistentStoreConfig::default()).unwrap();
        let table = KBucketTable::new(local, KBucketConfig::default());
        // Commits every 20 ms: many more of them while the flood lasts than at the default
        // 100 ms, each one of which must stay off the poll path.
        let config = server_config().with_store_flush_interval(Duration::from_millis(20));
        Behaviour::with_parts(local, config, table, store)
    })
}

/// Drives `swarm` until `stop` fires, timing every `poll_next` of the swarm (handler events,
/// the behaviour's poll and everything the store does in them).
async fn drive_timed(
    mut swarm: Swarm<Behaviour>,
    events: mpsc::UnboundedSender<Event>,
    mut stop: oneshot::Receiver<()>,
) -> Vec<Duration> {
    let mut times = Vec::with_capacity(4 * WRITES);
    let polled = futures::future::poll_fn(|cx| loop {
        let start = Instant::now();
        let next = swarm.poll_next_unpin(cx);
        times.push(start.elapsed());
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
    // Dropping the swarm closes the store, which waits for its last commit: not a poll.
    drop(swarm);
    times
}

fn random_key() -> Vec<u8> {
    let mut key = vec![0x12, 0x20];
    key.extend_from_slice(&rand::random::<[u8; 32]>());
    key
}

/// Percentile `p` (0-100) of sorted durations.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_flood_does_not_stall_the_swarm_on_the_disk() {
    // On the real disk (the target directory), not a tmpfs where an fsync costs nothing.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("flood.redb");
    let mut server = persistent_server(&path);
    server.listen().with_memory_addr_external().await;
    let server_id = *server.local_peer_id();

    let mut raw = Swarm::new_ephemeral_tokio(|_| libp2p_stream::Behaviour::new());
    let mut control = raw.behaviour().new_control();
    raw.connect(&mut server).await;
    let me: PeerId = *raw.local_peer_id();
    tokio::spawn(raw.loop_on_next());

    let (events_tx, mut events) = mpsc::unbounded_channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let driver = tokio::spawn(drive_timed(server, events_tx, stop_rx));

    // The attacker: ADD_PROVIDER for fresh keys, back to back, on several streams at once.
    let mut floods = Vec::new();
    for _ in 0..STREAMS {
        let mut stream = control.open_stream(server_id, TEST_PROTOCOL).await.unwrap();
        floods.push(tokio::spawn(async move {
            for _ in 0..WRITES / STREAMS {
                let request = Request::AddProvider {
                    key: random_key(),
                    providers: vec![PeerRecord {
                        id: me,
                        addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
                        connection: ConnectionType::Connected,
                    }],
                };
                write_frame(&mut stream, &encode_request(&request))
                    .await
                    .unwrap();
            }
            let _ = stream.close().await;
        }));
    }

    // Every write is handled (stored, or refused because the writer is behind).
    let mut stored = 0;
    let mut refused = 0;
    let deadline = Instant::now() + Duration::from_secs(240);
    while stored + refused < WRITES {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = tokio::time::timeout(left, events.recv())
            .await
            .unwrap_or_else(|_| panic!("handled {stored} + {refused} of {WRITES} in time"))
            .expect("server running");
        if let Event::InboundRequest { outcome, .. } = event {
            match outcome {
                InboundOutcome::Stored => stored += 1,
                InboundOutcome::Rejected(_) => refused += 1,
                other => panic!("{other:?}"),
            }
        }
    }
    for flood in floods {
        flood.await.unwrap();
    }
    // A few more flush intervals, so that the last commits happen while polls are timed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_tx.send(()).unwrap();
    let mut times = driver.await.unwrap();
    times.sort();
    let (p50, p99, p999) = (
        percentile(&times, 50.0),
        percentile(&times, 99.0),
        percentile(&times, 99.9),
    );
    let max = *times.last().unwrap();
    let over = |ms: u64| {
        times
            .iter()
            .filter(|t| **t >= Duration::from_millis(ms))
            .count()
    };
    println!(
        "{} polls while {stored} writes were stored ({refused} refused): \
         p50 {p50:?}, p99 {p99:?}, p99.9 {p999:?}, max {max:?}; \
         {} polls >= 5 ms, {} >= 20 ms",
        times.len(),
        over(5),
        over(20)
    );
    assert!(stored > WRITES / 2, "most writes are stored: {stored}");
    // Generous for a loaded 2-core machine and a debug build.
    assert!(
        p999 < Duration::from_millis(20),
        "the longest polls wait: p99.9 {p999:?}, max {max:?}"
    );
    assert!(
        over(5) <= 100,
        "{} polls took 5 ms or more: they wait for the disk",
        over(5)
    );

    // What was acknowledged survives: the store was closed cleanly, everything is there.
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    use kadence::store::ProviderStore;
    let keys = store
        .provider_keys(&kadence::key::Key::from_hash([0; 32]), usize::MAX)
        .unwrap();
    assert_eq!(keys.len(), stored, "every stored write is on disk");
}
