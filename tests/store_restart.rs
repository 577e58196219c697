//! A kadence node with a persistent store is restarted and still answers GET_PROVIDERS (and
//! GET_VALUE) for records it held before.

mod common;

use std::path::Path;

use common::*;
use kadence::routing_table::{KBucketConfig, KBucketTable};
use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::{Behaviour, ConnectionType, PeerRecord, Request, Response};
use libp2p::swarm::Swarm;
use libp2p_swarm_test::SwarmExt;

fn persistent_server(path: &Path) -> Swarm<Behaviour> {
    Swarm::new_ephemeral_tokio(|key| {
        let local = key.public().to_peer_id();
        let store = PersistentStore::open(path, PersistentStoreConfig::default()).unwrap();
        let table = KBucketTable::new(local, KBucketConfig::default());
        Behaviour::with_parts(local, server_config(), table, store)
    })
}

async fn ask(
    client: &mut Swarm<Behaviour>,
    server: &mut Swarm<Behaviour>,
    request: Request,
) -> Option<Response> {
    let server_id = *server.local_peer_id();
    client.behaviour_mut().send_request(server_id, request);
    within(10, async {
        loop {
            tokio::select! {
                _ = server.next_behaviour_event() => {}
                event = client.next_behaviour_event() => {
                    if let kadence::Event::OutboundRequestFinished { result, .. } = event {
                        return result.unwrap();
                    }
                }
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_restarted_node_still_serves_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let mut client = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    let me = *client.local_peer_id();
    let key = vec![0x12, 0x20, 1, 2, 3, 4];
    let record = pk_record();

    {
        let mut server = persistent_server(&path);
        server.listen().with_memory_addr_external().await;
        client.connect(&mut server).await;
        let provider = PeerRecord {
            id: me,
            addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
            connection: ConnectionType::Connected,
        };
        let add = Request::AddProvider {
            key: key.clone(),
            providers: vec![provider],
        };
        assert_eq!(ask(&mut client, &mut server, add).await, None);
        let put = Request::PutValue {
            record: record.clone(),
        };
        assert!(ask(&mut client, &mut server, put).await.is_some());
        // The ADD_PROVIDER is stored once the server read it, before the later PUT's echo.
    } // The server shuts down: its swarm and store are dropped.

    let mut server = persistent_server(&path);
    server.listen().with_memory_addr_external().await;
    client.connect(&mut server).await;
    let answer = ask(&mut client, &mut server, Request::GetProviders { key }).await;
    let Some(Response::GetProviders { providers, .. }) = answer else {
        panic!("{answer:?}")
    };
    assert!(providers.iter().any(|p| p.id == me && !p.addrs.is_empty()));
    let answer = ask(
        &mut client,
        &mut server,
        Request::GetValue { key: record.key },
    )
    .await;
    let Some(Response::GetValue {
        record: Some(stored),
        ..
    }) = answer
    else {
        panic!("{answer:?}")
    };
    assert_eq!(stored.value, record.value);
}

/// Writes a node took just before it stopped are still waiting for the writer thread (the
/// flush timer has not even handed them over): closing the node commits them.
#[tokio::test]
async fn writes_still_in_flight_when_a_node_stops_are_kept() {
    use kadence::store::{ProviderStore, Store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let mut client = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    let me = *client.local_peer_id();
    let keys: Vec<Vec<u8>> = (0..300u32)
        .map(|i| [&[0x12, 0x20][..], &i.to_be_bytes()].concat())
        .collect();
    {
        let mut server = Swarm::new_ephemeral_tokio(|key| {
            let local = key.public().to_peer_id();
            let store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
            let table = KBucketTable::new(local, KBucketConfig::default());
            // A flush timer that never fires while the test runs.
            let config =
                server_config().with_store_flush_interval(std::time::Duration::from_secs(3600));
            Behaviour::with_parts(local, config, table, store)
        });
        server.listen().with_memory_addr_external().await;
        client.connect(&mut server).await;
        for key in &keys {
            let add = Request::AddProvider {
                key: key.clone(),
                providers: vec![PeerRecord {
                    id: me,
                    addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
                    connection: ConnectionType::Connected,
                }],
            };
            assert_eq!(ask(&mut client, &mut server, add).await, None);
            // Served at once from memory: the write is visible before it is durable.
            let get = Request::GetProviders { key: key.clone() };
            let answer = ask(&mut client, &mut server, get).await;
            let Some(Response::GetProviders { providers, .. }) = answer else {
                panic!("{answer:?}")
            };
            assert!(providers.iter().any(|p| p.id == me));
        }
        let now = std::time::SystemTime::now();
        let store = server.behaviour_mut().store_mut();
        for key in &keys {
            assert_eq!(store.providers(key, now).unwrap().len(), 1);
        }
    } // Stopped at once: the store commits what it accepted as it closes.

    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let now = std::time::SystemTime::now();
    for key in &keys {
        assert_eq!(store.providers(key, now).unwrap().len(), 1, "{key:?} lost");
    }
    store.flush().unwrap();
}

#[test]
fn a_restarted_node_rejoins_from_its_saved_routing_table() {
    use kadence::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("node.redb");
    let peer = libp2p::PeerId::random();
    let addrs: Vec<libp2p::Multiaddr> = vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()];
    let local = libp2p::PeerId::random();
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        store
            .save_routing_snapshot(&[(peer, addrs.clone())])
            .unwrap();
    }
    let store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let table = KBucketTable::new(local, KBucketConfig::default());
    let behaviour = Behaviour::with_parts(local, server_config(), table, store);
    assert!(behaviour.routing_table().contains(&peer));
    assert_eq!(
        behaviour.routing_table().addresses(&peer).unwrap(),
        &addrs[..]
    );
    // Dropping the behaviour saves its table again for the next run.
    drop(behaviour);
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.load_routing_snapshot().unwrap(), vec![(peer, addrs)]);
}

/// The Provider after a restart: keys announced recently are not announced again at once;
/// a key whose announcement is older than the interval is.
#[test]
fn a_restarted_provider_resumes_without_reproviding_everything() {
    use std::task::{Context, Poll};
    use std::time::{Duration, SystemTime};

    use futures::task::noop_waker_ref;
    use kadence::{Event, Store};
    use libp2p::swarm::{NetworkBehaviour, ToSwarm};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("provider.redb");
    let now = SystemTime::now();
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        for i in 0..100u32 {
            let key = i.to_be_bytes();
            store.add_provided(&key, now).unwrap();
            store.set_provided_status(&key, now, 20).unwrap();
        }
        // One key last announced two days ago.
        store.add_provided(b"stale", now).unwrap();
        store
            .set_provided_status(b"stale", now - Duration::from_secs(48 * 3600), 20)
            .unwrap();
    }
    let store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let local = libp2p::PeerId::random();
    let table = KBucketTable::new(local, KBucketConfig::default());
    let mut behaviour = Behaviour::with_parts(local, server_config(), table, store);
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut announced = 0;
    let mut reports = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match behaviour.poll(&mut cx) {
            Poll::Ready(ToSwarm::GenerateEvent(Event::RegionReprovided(report))) => {
                announced += report.keys;
                reports.push(report);
                if announced > 0 {
                    break;
                }
            }
            Poll::Ready(ToSwarm::GenerateEvent(Event::ReprovideBehind { by, .. })) => {
                panic!("catching up after a restart is not being behind ({by:?})")
            }
            Poll::Ready(_) => {}
            Poll::Pending => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    assert_eq!(announced, 1, "only the stale key is announced again");
    // The stale key was due 26 h ago (48 h since its announcement, a 22 h interval): that is
    // what the report calls late, not the region's start, which caught up at once.
    let report = reports.last().unwrap();
    assert_eq!(report.behind, Duration::ZERO);
    let overdue = report.overdue.as_secs();
    assert!(
        (26 * 3600..26 * 3600 + 60).contains(&overdue),
        "{overdue} s"
    );
    assert_eq!(behaviour.sweep_status().waiting, 0);

    // The store keeps how far the sweep got: restarted again within the cycle, the node has
    // no region to read again (the whole keyspace is one region without peers: depth 0).
    drop(behaviour);
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let mark = store
        .sweep_mark()
        .unwrap()
        .expect("the sweep's mark is kept");
    assert_eq!((mark.next, mark.depth), (1, 0), "{mark:?}");
    let cycle = |at: SystemTime| {
        let since = at.duration_since(SystemTime::UNIX_EPOCH).unwrap();
        since.as_secs() / kadence::ReprovideConfig::default().interval.as_secs()
    };
    let table = KBucketTable::new(local, KBucketConfig::default());
    let mut behaviour = Behaviour::with_parts(local, server_config(), table, store);
    // Past the sweep's first tick (1 s after the start).
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        match behaviour.poll(&mut cx) {
            Poll::Ready(ToSwarm::GenerateEvent(Event::RegionReprovided(report))) => {
                // Only a cycle that turned meanwhile brings a region due again.
                assert_ne!(cycle(SystemTime::now()), mark.cycle, "{report:?}");
            }
            Poll::Ready(_) => {}
            Poll::Pending => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let status = behaviour.sweep_status();
    if cycle(SystemTime::now()) == mark.cycle {
        assert_eq!((status.running, status.waiting), (0, 0), "{status:?}");
    }
}
