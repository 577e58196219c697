//! The accelerated client (issue 16) in networks of kadence nodes over the memory transport:
//! the crawl finds every server and lets its connections go, every operation is served from
//! the full table (and one issued before the first crawl falls back to the walk), a restarted
//! node is accelerated at once, and a neighbourhood gone silent after the crawl still gets the
//! live closest peers.

mod common;
#[path = "common/accelerated.rs"]
mod helpers;

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::Duration;

use common::net::{node_config, providers_in};
use common::{pk_record, within};
use futures::future::join_all;
use helpers::{
    closest, in_memory, with_store, Done, Noted, Peer, SharedSnapshot, SnapshotStore, DEFAULT_IDLE,
};
use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::{
    AcceleratedConfig, Behaviour, CrawlStats, Mode, QueryResult, RequestDeadlines, SweepReport,
};
use libp2p::identity::Keypair;
use libp2p::PeerId;

/// One network at a time: each test runs dozens of nodes, and two at once on a loaded
/// 2-core machine would measure the machine.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Bucket size and lookup width.
const K: usize = 20;

/// The accelerated node's idle timeout: short, so that the test sees the crawl's connections
/// close.
const ACCELERATED_IDLE: Duration = Duration::from_secs(1);

/// The accelerated client, reporting progress often enough that a crawl of a few dozen nodes
/// (well under a second unloaded) reports some. It keeps no connection open for the k-bucket
/// table, and lets reused streams go after a second, so that nothing but the crawl itself
/// could keep its connections.
fn accelerated_config() -> kadence::Config {
    silence_tolerant_config().with_request_deadlines(RequestDeadlines {
        // Every request gets the full timeout: the exact closest peers are asked of the
        // result, and a dial that a loaded machine slows down must not make a spare win.
        floor: REQUEST_TIMEOUT,
        cold: REQUEST_TIMEOUT,
        ..RequestDeadlines::default()
    })
}

/// The request timeout of `node_config`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// [`accelerated_config`] with the default request deadlines: a silent seed is replaced by a
/// spare after a few round trips rather than the request timeout.
fn silence_tolerant_config() -> kadence::Config {
    node_config()
        .with_accelerated(Some(AcceleratedConfig {
            progress_interval: Duration::from_millis(50),
            ..AcceleratedConfig::default()
        }))
        .with_max_kept_connections(0)
        .with_outbound_idle_timeout(Duration::from_secs(1))
        .with_inbound_idle_timeout(Duration::from_secs(1))
        // Writes reported after all of them: the holders can be checked at once.
        .with_optimistic_provide(false)
}

/// `n` kadence servers, each bootstrapped from one started before it, then all bootstrapped
/// at once.
async fn servers(n: usize) -> Vec<Peer> {
    let mut nodes: Vec<Peer> = Vec::new();
    for i in 0..n {
        let bootstrap = (i > 0).then(|| {
            let b = &nodes[(i * 7919) % i];
            (b.id, b.addr.clone())
        });
        let node = Peer::memory(
            Keypair::generate_ed25519(),
            DEFAULT_IDLE,
            in_memory(node_config()),
            bootstrap,
        )
        .await;
        nodes.push(node);
    }
    // Each looks itself up once all are up, and again while no other server's routing table
    // lists it (it is admitted after identify, which a loaded machine can delay past the
    // lookup): a crawl can only find a server that some server names.
    let mut unlisted: Vec<PeerId> = nodes.iter().map(|n| n.id).collect();
    for _round in 0..5 {
        join_all(
            nodes
                .iter()
                .filter(|n| unlisted.contains(&n.id))
                .map(|n| n.try_run(|dht| dht.bootstrap().ok())),
        )
        .await;
        let tables = join_all(nodes.iter().map(|n| {
            n.with(|s| {
                let peers = s.behaviour().dht.routing_table().peers();
                peers.into_iter().map(|p| p.id).collect::<Vec<_>>()
            })
        }))
        .await;
        let listed: HashSet<PeerId> = tables.into_iter().flatten().collect();
        unlisted.retain(|id| !listed.contains(id));
        if unlisted.is_empty() {
            return nodes;
        }
    }
    panic!("servers no routing table lists: {unlisted:?}");
}

/// A DHT client that joined through `server` (its bootstrap connects it to servers, which must
/// never list it).
async fn client(server: &Peer) -> Peer {
    let node = Peer::memory(
        Keypair::generate_ed25519(),
        DEFAULT_IDLE,
        in_memory(node_config().with_mode(Some(Mode::Client))),
        Some((server.id, server.addr.clone())),
    )
    .await;
    let done = node.run(|dht| dht.bootstrap().ok()).await;
    assert!(
        matches!(done.result, QueryResult::Bootstrap(Ok(n)) if n > 0),
        "{done:?}"
    );
    node
}

/// Waits for the node's next crawl to finish; returns the peers of its full table then, and
/// what the crawl cost.
async fn crawled(node: &mut Peer, secs: u64) -> (usize, CrawlStats) {
    node.wait_for(secs, "a crawl finished", |noted| match noted {
        Noted::CrawlFinished { peers, stats } => Some((*peers, *stats)),
        _ => None,
    })
    .await
}

fn closest_ids(done: &Done) -> Vec<PeerId> {
    match &done.result {
        QueryResult::ClosestPeers {
            result: Ok(peers), ..
        } => peers.iter().map(|p| p.id).collect(),
        _ => panic!("{done:?}"),
    }
}

/// Asserts that `done` started from the full table and cost at most one request per peer of
/// its seeds: no walk.
fn assert_accelerated_lookup(done: &Done) {
    assert!(done.stats.accelerated, "from the full table: {done:?}");
    assert!(
        done.stats.requests as usize <= 2 * K,
        "{} requests for {K} peers",
        done.stats.requests
    );
    assert!(done.stats.hops <= 1, "{} hops: {done:?}", done.stats.hops);
}

/// Looks `key` up from `node`'s full table (see [`assert_accelerated_lookup`]) and asserts
/// that it found the `K` of `servers` closest to the key, closest first.
async fn assert_finds_closest(node: &Peer, servers: &HashSet<PeerId>, key: &[u8]) {
    let target = key.to_vec();
    let done = node
        .run(move |dht| Some(dht.get_closest_peers(target)))
        .await;
    assert_accelerated_lookup(&done);
    assert_eq!(
        closest_ids(&done),
        closest(servers.iter().copied(), key, K),
        "the true closest servers, closest first: {:?}",
        done.stats
    );
}

/// How many of `peers` hold a value record under `key`.
async fn value_holders(peers: &[&Peer], key: &[u8]) -> usize {
    join_all(peers.iter().map(|p| p.holds_value(key)))
        .await
        .into_iter()
        .filter(|held| *held)
        .count()
}

/// How many of the servers of `ids` store a provider record of `provider` for `key` within
/// 10 s. ADD_PROVIDER has no answer: the writer knows it sent the record, not that it was
/// stored, so each server is waited for.
async fn provider_holders(
    servers: &mut [Peer],
    ids: &[PeerId],
    key: &[u8],
    provider: PeerId,
) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    join_all(
        servers
            .iter_mut()
            .filter(|s| ids.contains(&s.id))
            .map(|s| s.stores_provider(key, provider, deadline)),
    )
    .await
    .into_iter()
    .filter(|held| *held)
    .count()
}

fn by_id<'a>(nodes: &'a [Peer], ids: &[PeerId]) -> Vec<&'a Peer> {
    ids.iter()
        .map(|id| nodes.iter().find(|n| n.id == *id).expect("a server"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_crawl_covers_every_server_and_every_operation_uses_it() {
    let _serial = SERIAL.lock().await;
    let mut servers = servers(25).await;
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(client(&servers[i * 8]).await);
    }
    let server_ids: HashSet<PeerId> = servers.iter().map(|s| s.id).collect();

    // The node knows no peer, so no crawl can have started: the lookup issued together with
    // its bootstrap address is the fallback walk, run while the first crawl starts.
    let mut node = Peer::memory(
        Keypair::generate_ed25519(),
        ACCELERATED_IDLE,
        in_memory(accelerated_config()),
        None,
    )
    .await;
    assert!(!node.is_accelerated().await);
    let (b, b_addr) = (servers[0].id, servers[0].addr.clone());
    let early = node
        .run(move |dht| {
            let _ = dht.add_address(b, b_addr);
            Some(dht.get_closest_peers(b"before the crawl".to_vec()))
        })
        .await;
    let found = closest_ids(&early);
    assert!(!early.stats.accelerated, "no crawl finished yet: {early:?}");
    assert!(
        found.len() >= K / 2 && found.iter().all(|p| server_ids.contains(p)),
        "the walk found servers: {early:?}"
    );

    // The crawl: started, progressed, finished with every server.
    let (peers, _) = crawled(&mut node, 60).await;
    let crawl: Vec<&Noted> = node
        .history
        .iter()
        .filter(|n| {
            matches!(
                n,
                Noted::CrawlStarted { .. } | Noted::CrawlProgress(_) | Noted::CrawlFinished { .. }
            )
        })
        .collect();
    assert!(
        matches!(crawl.first(), Some(Noted::CrawlStarted { seeds }) if *seeds >= 1),
        "{crawl:?}"
    );
    assert!(
        crawl
            .iter()
            .any(|n| matches!(n, Noted::CrawlProgress(p) if p.found >= 1)),
        "progress reported: {crawl:?}"
    );
    let Some(Noted::CrawlFinished { stats, .. }) = crawl.last() else {
        panic!("{crawl:?}")
    };
    assert!(stats.answered >= servers.len() as u64, "{stats:?}");
    assert_covers(&node, &servers, peers, *stats).await;
    let table = node.full_table().await;
    assert_eq!(
        table, server_ids,
        "exactly the servers: not itself, not the clients"
    );
    assert!(node.is_accelerated().await);
    let crawl_peak = node
        .history
        .iter()
        .filter_map(|n| match n {
            Noted::Connections(open) => Some(*open),
            _ => None,
        })
        .max()
        .unwrap_or(0);
    assert!(
        crawl_peak >= servers.len() / 2,
        "the crawl met the servers: {crawl_peak}"
    );
    // The crawl's connections are not kept: none is wanted by the node (it keeps none for its
    // table), so all close once idle, the crawl's included.
    node.wait_connections_at_most(2, 30).await;

    // Every operation now starts from the full table.
    assert_finds_closest(&node, &server_ids, b"accelerated closest").await;

    let wanted = servers[9].id;
    let addrs = node.accelerated_find_peer(wanted).await;
    assert!(addrs.contains(&servers[9].addr), "{addrs:?}");

    let record = pk_record();
    let stored = node.accelerated_put_value(record.clone()).await;
    assert!(stored >= K - 2, "stored by {stored}");
    let truth = closest(server_ids.iter().copied(), &record.key, K);
    let holders = value_holders(&by_id(&servers, &truth), &record.key).await;
    assert!(holders >= K - 2, "{holders} of the {K} closest hold it");
    let value = node
        .accelerated_get_value(record.key.clone(), NonZeroUsize::new(3))
        .await;
    assert_eq!(value, record.value);

    let cid = kadence::ProviderKey::sha2_256(&[16, 16, 16]).into_bytes();
    let written = node.accelerated_provide(cid.clone()).await;
    assert!(written >= K - 2, "written to {written}");
    let truth = closest(server_ids.iter().copied(), &cid, K);
    let holders = provider_holders(&mut servers, &truth, &cid, node.id).await;
    assert!(holders >= K - 2, "{holders} of the {K} closest hold it");
    let done = servers[20]
        .run(move |dht| {
            Some(dht.find_providers(kadence::ProviderKey::try_from(cid).unwrap(), None))
        })
        .await;
    assert!(providers_in(&done.progress).contains(&node.id), "{done:?}");

    let other_cid = kadence::ProviderKey::sha2_256(&[17, 17, 17]).into_bytes();
    let done = servers[5]
        .run({
            let cid = other_cid.clone();
            move |dht| {
                dht.provide(kadence::ProviderKey::try_from(cid).unwrap())
                    .ok()
            }
        })
        .await;
    assert!(
        matches!(done.result, QueryResult::Provide { result: Ok(_), .. }),
        "{done:?}"
    );
    node.accelerated_find_provider(other_cid, servers[5].id)
        .await;

    let done = node.run_accelerated(|dht| dht.bootstrap().ok()).await;
    assert!(
        matches!(done.result, QueryResult::Bootstrap(Ok(n)) if n >= K),
        "{done:?}"
    );

    // The sweep: its region's lookup (not reported as a query: see the restart test for the
    // proof that it comes from the full table) reaches the key's closest servers.
    let swept = kadence::ProviderKey::sha2_256(&[18, 18, 18]).into_bytes();
    let report = sweep_one(&mut node, swept.clone()).await;
    assert!(report.peers >= K - 2, "{report:?}");
    let truth = closest(server_ids.iter().copied(), &swept, K);
    let holders = provider_holders(&mut servers, &truth, &swept, node.id).await;
    assert!(holders >= K - 2, "{holders} of the {K} closest hold it");

    node.stop().await;
    for peer in servers.into_iter().chain(clients) {
        peer.stop().await;
    }
}

/// Starts providing `key` and waits (30 s at most) for the first region the sweep announced
/// a key in: the sweep runs on its own schedule, not as a reported query.
async fn sweep_one(node: &mut Peer, key: Vec<u8>) -> SweepReport {
    node.with(move |s| {
        s.behaviour_mut()
            .dht
            .start_providing(kadence::ProviderKey::try_from(key).unwrap())
    })
    .await
    .expect("providing");
    node.wait_for(30, "the sweep reported", |noted| match noted {
        Noted::Region(report) if report.keys >= 1 => Some(*report),
        _ => None,
    })
    .await
}

/// Crawls the network of `servers` with a fresh accelerated node whose store is `store`.
async fn crawl_with_store(servers: &[Peer], key: Keypair, store: impl kadence::Store) -> Peer {
    let mut node = Peer::memory(
        key,
        ACCELERATED_IDLE,
        with_store(accelerated_config(), store),
        Some((servers[0].id, servers[0].addr.clone())),
    )
    .await;
    let (peers, stats) = crawled(&mut node, 60).await;
    assert_covers(&node, servers, peers, stats).await;
    node
}

/// After a restart with `store` (where the first run left its crawl), the node serves lookups
/// from its full table at once: no peer given, no crawl of its own.
async fn accelerated_at_once(servers: &[Peer], key: Keypair, store: impl kadence::Store) {
    let server_ids: HashSet<PeerId> = servers.iter().map(|s| s.id).collect();
    let mut node = Peer::memory(
        key,
        ACCELERATED_IDLE,
        with_store(accelerated_config(), store),
        None,
    )
    .await;
    assert!(
        node.is_accelerated().await,
        "the saved table serves lookups at once"
    );
    assert_eq!(node.full_table().await, server_ids);

    assert_finds_closest(&node, &server_ids, b"after the restart").await;
    node.drain();
    assert!(
        !node
            .history
            .iter()
            .any(|n| matches!(n, Noted::CrawlStarted { .. } | Noted::CrawlFinished { .. })),
        "no crawl of its own: {:?}",
        node.history
    );
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_is_accelerated_at_once_and_sweeps_from_its_table() {
    let _serial = SERIAL.lock().await;
    let mut servers = servers(10).await;
    let server_ids: HashSet<PeerId> = servers.iter().map(|s| s.id).collect();
    let key = Keypair::generate_ed25519();
    let saved = SharedSnapshot::default();
    let first = crawl_with_store(&servers, key.clone(), SnapshotStore::new(saved.clone())).await;
    let snapshot = saved.get().expect("the crawl was saved");
    let saved_ids: HashSet<PeerId> = snapshot.peers.iter().map(|(id, _)| *id).collect();
    assert_eq!(saved_ids, server_ids);
    assert!(snapshot.peers.iter().all(|(_, addrs)| !addrs.is_empty()));
    first.stop().await;

    accelerated_at_once(&servers, key.clone(), SnapshotStore::new(saved.clone())).await;

    // Only the crawled table survives this restart: the k-bucket table starts empty, so a
    // walk would have no peer to start from. The sweep's region lookup still reaches the
    // key's closest servers: it starts from the full table.
    let mut node = Peer::memory(
        key,
        ACCELERATED_IDLE,
        with_store(accelerated_config(), SnapshotStore::new(saved)),
        None,
    )
    .await;
    assert!(
        node.with(|s| s.behaviour().dht.routing_table().is_empty())
            .await
    );
    let swept = kadence::ProviderKey::sha2_256(&[19, 19, 19]).into_bytes();
    let report = sweep_one(&mut node, swept.clone()).await;
    assert_eq!(report.peers, servers.len(), "{report:?}");
    let all: Vec<PeerId> = servers.iter().map(|s| s.id).collect();
    assert_eq!(
        provider_holders(&mut servers, &all, &swept, node.id).await,
        servers.len()
    );
    node.stop().await;
    for peer in servers {
        peer.stop().await;
    }
}

/// The same restart with a [`PersistentStore`]: the crawled table is on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_with_a_persistent_store_is_accelerated_at_once() {
    let _serial = SERIAL.lock().await;
    let servers = servers(8).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let open = || PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let key = Keypair::generate_ed25519();
    let first = crawl_with_store(&servers, key.clone(), open()).await;
    // Stopping drops the store, which commits what is waiting for the disk.
    first.stop().await;
    accelerated_at_once(&servers, key, open()).await;
    for peer in servers {
        peer.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_neighbourhood_gone_silent_after_the_crawl_still_gets_the_live_closest() {
    let _serial = SERIAL.lock().await;
    let servers = servers(28).await;
    let mut node = Peer::memory(
        Keypair::generate_ed25519(),
        ACCELERATED_IDLE,
        in_memory(silence_tolerant_config()),
        Some((servers[0].id, servers[0].addr.clone())),
    )
    .await;
    let (peers, stats) = crawled(&mut node, 60).await;
    assert_covers(&node, &servers, peers, stats).await;

    let key = b"a quiet corner".to_vec();
    let all: Vec<PeerId> = servers.iter().map(|s| s.id).collect();
    let lookup = |key: Vec<u8>| move |dht: &mut Behaviour| Some(dht.get_closest_peers(key));

    // The 10 servers closest to the key hang. The table still lists them (nothing failed
    // yet): the lookup asks them among its seeds, and gets the live closest from the rest.
    let mut silent = closest(all.iter().copied(), &key, 10);
    freeze_all(&servers, &silent);
    for _ in 0..2 {
        let done = within(30, node.run(lookup(key.clone()))).await;
        assert!(done.stats.accelerated, "{done:?}");
        assert_eq!(
            closest_ids(&done),
            closest(live(&all, &silent), &key, K),
            "{done:?}"
        );
        assert!(done.stats.duration() < 2 * REQUEST_TIMEOUT, "{done:?}");
    }

    // Six more hang, so that most of the key's closest in the table are silent: the table
    // no longer serves the key once their failures are known; served or not, the lookup still
    // ends with the live closest. (Which of the two ran depends on whether the requests of
    // the previous lookup reached their timeout yet: the unit tests of `routing::accelerated`
    // hold the rule itself.)
    let more = closest(live(&all, &silent), &key, 6);
    freeze_all(&servers, &more);
    silent.extend(more);
    for _ in 0..2 {
        let done = within(30, node.run(lookup(key.clone()))).await;
        assert_eq!(
            closest_ids(&done),
            closest(live(&all, &silent), &key, K),
            "{done:?}"
        );
        assert!(done.stats.duration() < 2 * REQUEST_TIMEOUT, "{done:?}");
    }

    node.stop().await;
    for peer in servers {
        peer.stop().await;
    }
}

/// Asserts that a crawl that ended with `peers` in the table found every server; if not,
/// says how many servers' routing tables list each one missed.
async fn assert_covers(node: &Peer, servers: &[Peer], peers: usize, stats: CrawlStats) {
    if peers == servers.len() {
        return;
    }
    let table = node.full_table().await;
    let mut missed = Vec::new();
    for server in servers.iter().filter(|s| !table.contains(&s.id)) {
        let id = server.id;
        let mut listed_by = 0;
        for other in servers {
            if other
                .with(move |s| s.behaviour().dht.routing_table().contains(&id))
                .await
            {
                listed_by += 1;
            }
        }
        missed.push((id, listed_by));
    }
    panic!(
        "{peers} of {} servers; missed (id, routing tables listing it): {missed:?}; {stats:?}",
        servers.len()
    );
}

/// The peers of `all` not in `silent`.
fn live(all: &[PeerId], silent: &[PeerId]) -> Vec<PeerId> {
    all.iter()
        .copied()
        .filter(|p| !silent.contains(p))
        .collect()
}

/// Makes the servers of `ids` hang.
fn freeze_all(servers: &[Peer], ids: &[PeerId]) {
    for server in servers.iter().filter(|s| ids.contains(&s.id)) {
        server.freeze();
    }
}
