//! The Provider in bulk: thousands of keys started in one call through the handle (several
//! commands), announced by the sweep and found from another node; paged through with a
//! cursor; stopped in one call, after which they expire while the others are renewed.
//!
//! Records live 10 s here and the sweep renews them every 5 s; checks wait for what they
//! look for (with a deadline) rather than expect it at a given moment.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::net::{network, node_config, TestNode};
use kadence::key::Key;
use kadence::{Handle, ProvideStatus, ProviderKey};
use libp2p::PeerId;

/// More than one command's worth of keys.
const KEYS: u32 = Handle::KEYS_PER_COMMAND as u32 + 904;

fn config() -> kadence::Config {
    node_config()
        .with_provider_validity(Duration::from_secs(10))
        .with_provider_address_ttl(Duration::from_secs(10))
        .with_reprovide_interval(Duration::from_secs(5))
}

fn cid(i: u32) -> ProviderKey {
    let mut key = vec![0x12, 0x20];
    key.extend(Key::new(&i.to_be_bytes()).as_bytes());
    ProviderKey::try_from(key).unwrap()
}

async fn handle_of(node: &TestNode) -> Handle {
    let (tx, rx) = std::sync::mpsc::channel();
    node.run(move |dht| {
        tx.send(dht.handle()).unwrap();
        None
    })
    .await;
    rx.recv().unwrap()
}

/// Every provided key of the node behind `handle`, page by page with the cursor.
async fn all_pages(handle: &Handle, limit: usize) -> Vec<ProvideStatus> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let (page, next) = handle.provided_keys_page(cursor, limit).await.unwrap();
        assert!(page.len() <= limit.max(1));
        out.extend(page);
        match next {
            Some(next) => cursor = Some(next),
            None => return out,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_started_in_bulk_are_announced_found_and_stopped_in_bulk() {
    let nodes = network(6, config).await;
    let provider = &nodes[2];
    let handle = handle_of(provider).await;

    // Every key, and a few of them twice: each counts once.
    let keys = (0..KEYS).chain(0..10).map(cid);
    assert_eq!(
        handle.start_providing_many(keys).await.unwrap(),
        KEYS as usize
    );
    assert_eq!(
        handle
            .start_providing_many((0..100).map(cid))
            .await
            .unwrap(),
        0,
        "already provided"
    );

    // The pages cover every key once, in keyspace order, until all are announced.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let listed = all_pages(&handle, 997).await;
        assert_eq!(listed.len(), KEYS as usize);
        let points: Vec<Key> = listed.iter().map(|s| Key::new(&s.key.key)).collect();
        assert!(
            points.windows(2).all(|w| w[0] < w[1]),
            "keyspace order, once each"
        );
        let announced = listed
            .iter()
            .filter(|s| s.key.last_provided.is_some() && s.key.peers > 0)
            .count();
        if announced == KEYS as usize {
            break;
        }
        assert!(Instant::now() < deadline, "announced {announced} of {KEYS}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for i in (0..KEYS).step_by(1_013) {
        nodes[5]
            .until_found(cid(i), provider.id, true, &format!("key {i}"))
            .await;
    }

    // Stop the first half in one call (and keys never provided, which count nothing).
    let half = KEYS / 2;
    let stop = (0..half).chain(KEYS..KEYS + 50).map(cid);
    assert_eq!(
        handle.stop_providing_many(stop).await.unwrap(),
        half as usize
    );
    let left = all_pages(&handle, 10_000).await;
    assert_eq!(left.len(), (KEYS - half) as usize);
    let stopped: HashSet<Vec<u8>> = (0..half).map(|i| cid(i).into_bytes()).collect();
    assert!(left.iter().all(|s| !stopped.contains(&s.key.key)));

    // A stopped key expires everywhere; a kept one is renewed past its first records' life.
    nodes[5]
        .until_found(cid(0), provider.id, false, "the stopped key expires")
        .await;
    nodes[4]
        .until_found(cid(KEYS - 1), provider.id, true, "the kept key stays")
        .await;
    for node in &nodes {
        assert!(
            !node.holds_providers_of(cid(0).as_bytes()).await,
            "stopped key held by {}",
            node.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_start_is_checked_before_any_key_is_added() {
    // Keys of at most 40 bytes: a sha2-256 multihash (34) fits, a sha2-512 one (66) does not.
    let nodes = network(3, || config().with_max_provider_key_len(40)).await;
    let handle = handle_of(&nodes[0]).await;
    let mut long = vec![0x13, 0x40];
    long.extend([7; 64]);
    let too_long = ProviderKey::try_from(long).unwrap();
    // A key the behaviour refuses makes the whole command fail, adding nothing.
    let keys = (0..10).map(cid).chain(std::iter::once(too_long));
    assert!(handle.start_providing_many(keys).await.is_err());
    let (page, next) = handle.provided_keys_page(None, 100).await.unwrap();
    assert!(page.is_empty() && next.is_none(), "nothing was added");
    assert_eq!(
        handle
            .start_providing_many(Vec::<ProviderKey>::new())
            .await
            .unwrap(),
        0
    );
    // Pages of one key: each cursor leads to the next key.
    assert_eq!(
        handle.start_providing_many((0..5).map(cid)).await.unwrap(),
        5
    );
    assert_eq!(all_pages(&handle, 1).await.len(), 5);
    assert_eq!(
        all_pages(&handle, 0).await.len(),
        5,
        "a limit of 0 reads one"
    );
}

/// A bulk command through the handle runs from `poll`, which must never wait for the disk:
/// with a persistent store whose writer is far behind, the behaviour keeps the command until
/// the writer caught up, then runs it. With a bound of writes not yet durable far below one
/// command's worth, every command after the first has to wait its turn, and all finish.
#[test]
fn bulk_commands_wait_for_the_writer_outside_poll() {
    use std::future::Future;
    use std::task::{Context, Poll};

    use futures::task::noop_waker_ref;
    use kadence::routing_table::{KBucketConfig, KBucketTable};
    use kadence::store::{PersistentStore, PersistentStoreConfig};
    use libp2p::swarm::{FromSwarm, NetworkBehaviour};

    let dir = tempfile::tempdir().unwrap();
    let config = PersistentStoreConfig {
        max_unwritten_bytes: 64 * 1024,
        ..PersistentStoreConfig::default()
    };
    let store = PersistentStore::open(dir.path().join("bulk.redb"), config).unwrap();
    let local = PeerId::random();
    let table = KBucketTable::new(local, KBucketConfig::default());
    let mut dht = kadence::Behaviour::with_parts(local, config_for_bulk(), table, store);
    // An address to announce, as a listening swarm would report it.
    let addr: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    dht.on_swarm_event(FromSwarm::NewListenAddr(libp2p::swarm::NewListenAddr {
        listener_id: libp2p::core::transport::ListenerId::next(),
        addr: &addr,
    }));
    let handle = dht.handle();
    let keys: Vec<ProviderKey> = (0..3 * Handle::KEYS_PER_COMMAND as u32).map(cid).collect();
    let mut added = Box::pin(handle.start_providing_many(keys));
    let mut cx = Context::from_waker(noop_waker_ref());
    let deadline = Instant::now() + Duration::from_secs(60);
    let result = loop {
        while dht.poll(&mut cx).is_ready() {}
        if let Poll::Ready(result) = added.as_mut().poll(&mut cx) {
            break result;
        }
        assert!(Instant::now() < deadline, "the bulk start never finished");
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(result, Ok(3 * Handle::KEYS_PER_COMMAND));
    assert_eq!(
        dht.provided_len().unwrap(),
        3 * Handle::KEYS_PER_COMMAND as u64
    );
}

fn config_for_bulk() -> kadence::Config {
    node_config().with_refresh_interval(None)
}
