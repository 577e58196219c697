//! The async [`Handle`]: every operation awaited from a task other than the swarm's, in a
//! network of 5 kadence nodes over the memory transport; results equal to the events'; a
//! dropped future or stream cancels its query; a full queue refuses at once; a gone swarm
//! closes the handle.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{pk_record, within, TEST_PROTOCOL};
use futures::{FutureExt, StreamExt};
use kadence::key::Key;
use kadence::{
    Admission, Handle, HandleError, NoKnownPeers, ProvideError, ProviderKey, PutValueError,
    QueryResult, Record,
};
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;

#[derive(NetworkBehaviour)]
struct Node {
    identify: identify::Behaviour,
    dht: kadence::Behaviour,
}

fn config() -> kadence::Config {
    kadence::Config::new(TEST_PROTOCOL)
        .with_mode(Some(kadence::Mode::Server))
        .with_query_timeout(Duration::from_secs(20))
        .with_request_timeout(Duration::from_secs(5))
}

fn swarm(config: kadence::Config) -> Swarm<Node> {
    Swarm::new_ephemeral_tokio(|key| Node {
        identify: identify::Behaviour::new(identify::Config::new(
            "/kadence-test/1.0.0".into(),
            key.public(),
        )),
        dht: kadence::Behaviour::new(key.public().to_peer_id(), config),
    })
}

/// A node whose swarm runs in its own task; the test reaches it only through its handle.
struct Running {
    id: PeerId,
    addr: Multiaddr,
    handle: Handle,
    /// The results its events reported, in order.
    finished: Arc<Mutex<Vec<QueryResult>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: kadence::Config) -> Running {
        let mut swarm = swarm(config);
        let (addr, _) = swarm.listen().with_memory_addr_external().await;
        Self::spawn(swarm, addr)
    }

    fn spawn(mut swarm: Swarm<Node>, addr: Multiaddr) -> Running {
        let id = *swarm.local_peer_id();
        let handle = swarm.behaviour().dht.handle();
        let finished = Arc::new(Mutex::new(Vec::new()));
        let events = finished.clone();
        let task = tokio::spawn(async move {
            loop {
                // Not `next_swarm_event`: it panics after 10 s without an event.
                if let SwarmEvent::Behaviour(NodeEvent::Dht(kadence::Event::QueryFinished {
                    result,
                    ..
                })) = swarm.select_next_some().await
                {
                    events.lock().unwrap().push(result);
                }
            }
        });
        Running {
            id,
            addr,
            handle,
            finished,
            task,
        }
    }

    /// The result the events reported for the first query `is` picks, waiting for the event
    /// to come out of the swarm (it follows the handle's result).
    async fn reported(&self, is: impl Fn(&QueryResult) -> bool) -> QueryResult {
        within(30, async {
            loop {
                if let Some(r) = self.finished.lock().unwrap().iter().find(|r| is(r)) {
                    return r.clone();
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }
}

/// Five servers, each told of the first through its handle, then bootstrapped twice.
async fn network() -> Vec<Running> {
    let mut nodes = vec![Running::start(config()).await];
    for _ in 1..5 {
        let node = Running::start(config()).await;
        let admission = node
            .handle
            .add_address(nodes[0].id, nodes[0].addr.clone())
            .await;
        assert_eq!(admission, Ok(Admission::Inserted));
        nodes.push(node);
    }
    for _round in 0..2 {
        // The first node last: it learns the others as they bootstrap through it.
        for node in nodes.iter().skip(1).chain(&nodes[..1]) {
            let answered = within(60, node.handle.bootstrap()).await;
            assert!(matches!(answered, Ok(n) if n > 0), "{answered:?}");
        }
    }
    nodes
}

fn provider_key(seed: &[u8]) -> ProviderKey {
    ProviderKey::sha2_256(seed)
}

/// A peer that accepts connections and never answers: its swarm listens and is never polled
/// again, so a request to it waits until the query's deadline.
async fn silent_peer() -> (Swarm<Node>, PeerId, Multiaddr) {
    let mut swarm = swarm(config());
    let (addr, _) = swarm.listen().with_memory_addr_external().await;
    let id = *swarm.local_peer_id();
    (swarm, id, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_through_the_handle_reports_what_the_events_do() {
    let nodes = network().await;

    // FindClosestPeers, from a task of its own.
    let key = b"closest".to_vec();
    let handle = nodes[1].handle.clone();
    let peers = within(60, tokio::spawn(handle.get_closest_peers(key.clone())))
        .await
        .expect("the task ran")
        .expect("closest peers");
    let others: HashSet<PeerId> = nodes
        .iter()
        .map(|n| n.id)
        .filter(|p| *p != nodes[1].id)
        .collect();
    let found: HashSet<PeerId> = peers.iter().map(|p| p.id).collect();
    assert!(found.len() >= 3 && found.is_subset(&others), "{found:?}");
    let reported = nodes[1]
        .reported(|r| matches!(r, QueryResult::ClosestPeers { key: k, .. } if *k == key))
        .await;
    assert_eq!(
        reported,
        QueryResult::ClosestPeers {
            key: key.clone(),
            result: Ok(peers)
        }
    );

    // FindPeer.
    let wanted = nodes[4].id;
    let record = within(60, nodes[2].handle.find_peer(wanted))
        .await
        .expect("found");
    assert_eq!(record.id, wanted);
    assert!(record.addrs.contains(&nodes[4].addr));
    let reported = nodes[2]
        .reported(|r| matches!(r, QueryResult::FindPeer { peer, .. } if *peer == wanted))
        .await;
    assert_eq!(
        reported,
        QueryResult::FindPeer {
            peer: wanted,
            result: Ok(record)
        }
    );

    // PutValue, then GetValue from another node.
    let value = pk_record();
    let stored = within(60, nodes[1].handle.put_value(value.clone(), None))
        .await
        .expect("stored");
    assert!(stored >= 1, "stored at {stored}");
    let reported = nodes[1]
        .reported(|r| matches!(r, QueryResult::PutValue { key, .. } if *key == value.key))
        .await;
    assert_eq!(
        reported,
        QueryResult::PutValue {
            key: value.key.clone(),
            result: Ok(stored)
        }
    );
    let got = within(60, nodes[3].handle.get_value(value.key.clone(), None))
        .await
        .expect("got the record");
    assert_eq!((&got.key, &got.value), (&value.key, &value.value));
    let reported = nodes[3]
        .reported(|r| matches!(r, QueryResult::GetValue { key, .. } if *key == value.key))
        .await;
    assert_eq!(
        reported,
        QueryResult::GetValue {
            key: value.key.clone(),
            result: Ok(got)
        }
    );

    // Provide, then the providers as a stream from another node.
    let content = provider_key(b"content");
    let written = within(60, nodes[2].handle.provide(content.clone()))
        .await
        .expect("provided");
    assert!(written >= 1, "written to {written}");
    let items: Vec<_> = within(
        60,
        nodes[4]
            .handle
            .find_providers(content.clone(), None)
            .collect(),
    )
    .await;
    let streamed: Vec<PeerId> = items
        .into_iter()
        .map(|item| item.expect("no failure").id)
        .collect();
    assert!(streamed.contains(&nodes[2].id), "{streamed:?}");
    let unique: HashSet<PeerId> = streamed.iter().copied().collect();
    assert_eq!(unique.len(), streamed.len(), "each provider once");
    let reported = nodes[4]
        .reported(|r| matches!(r, QueryResult::FindProviders { key, .. } if *key == content))
        .await;
    let QueryResult::FindProviders {
        result: Ok(all), ..
    } = reported
    else {
        panic!("{reported:?}")
    };
    assert_eq!(all.len(), streamed.len());
    assert_eq!(all.iter().map(|p| p.id).collect::<HashSet<_>>(), unique);

    // StartProvide, ProvideList, StopProvide.
    let kept = provider_key(b"kept provided");
    within(30, nodes[3].handle.start_providing(kept.clone()))
        .await
        .expect("on the list");
    let everything = Key::from_hash([0; 32]);
    let listed = within(30, nodes[3].handle.provided_keys(everything, 10))
        .await
        .expect("listed");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key.key, kept.as_bytes());
    within(30, nodes[3].handle.stop_providing(kept))
        .await
        .expect("off the list");
    let listed = within(30, nodes[3].handle.provided_keys(everything, 10))
        .await
        .expect("listed");
    assert!(listed.is_empty(), "{listed:?}");

    // The routing table.
    let first = nodes[0].id;
    assert_eq!(nodes[4].handle.remove_peer(first).await, Ok(true));
    assert_eq!(nodes[4].handle.remove_peer(first).await, Ok(false));
    let readmitted = nodes[4]
        .handle
        .add_address(first, nodes[0].addr.clone())
        .await;
    assert_eq!(readmitted, Ok(Admission::Inserted));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_come_back_as_errors() {
    // Not listening: no address to announce, no peer to bootstrap from.
    let lone = Running::spawn(swarm(config()), Multiaddr::empty());
    let handle = &lone.handle;
    assert_eq!(
        within(30, handle.bootstrap()).await,
        Err(HandleError::NoKnownPeers(NoKnownPeers))
    );
    assert_eq!(
        within(30, handle.provide(provider_key(b"x"))).await,
        Err(HandleError::Provide(ProvideError::NoAddresses))
    );
    assert!(matches!(
        within(30, handle.start_providing(provider_key(b"x"))).await,
        Err(HandleError::StartProvide(_))
    ));
    let unvalidated = Record {
        key: b"/nobody/knows".to_vec(),
        value: b"v".to_vec(),
        time_received: String::new(),
    };
    assert!(matches!(
        within(30, handle.put_value(unvalidated, None)).await,
        Err(HandleError::PutValue(PutValueError::Invalid(_)))
    ));
    // A lookup with nobody to ask fails with what it found: nothing.
    let failed = within(30, handle.get_closest_peers(b"k".to_vec())).await;
    let failure = failed.expect_err("no peers").failure().cloned();
    assert!(failure.is_some_and(|f| f.found.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_future_or_a_stream_cancels_its_query() {
    let (_silent, silent_id, silent_addr) = silent_peer().await;
    // Requests wait longer than queries: a query that runs ends at its deadline.
    let node = Running::start(
        config()
            .with_query_timeout(Duration::from_secs(3))
            .with_request_timeout(Duration::from_secs(120)),
    )
    .await;
    let admission = node.handle.add_address(silent_id, silent_addr).await;
    assert_eq!(admission, Ok(Admission::Inserted));

    let dropped = node.handle.get_closest_peers(b"dropped".to_vec());
    let content = provider_key(b"dropped stream");
    let stream = node.handle.find_providers(content.clone(), None);
    // Commands run in order: once this one is answered, both queries run.
    assert_eq!(node.handle.remove_peer(PeerId::random()).await, Ok(false));
    drop(dropped);
    drop(stream);

    // A query started later, left to run, reaches its deadline and is reported; the dropped
    // ones would have been reported before it.
    let control = within(60, node.handle.get_closest_peers(b"control".to_vec())).await;
    assert!(control.is_err(), "nobody answers: {control:?}");
    node.reported(|r| matches!(r, QueryResult::ClosestPeers { key, .. } if key == b"control"))
        .await;
    let finished = node.finished.lock().unwrap().clone();
    assert!(
        finished.iter().all(|r| match r {
            QueryResult::ClosestPeers { key, .. } => key != b"dropped",
            QueryResult::FindProviders { key, .. } => *key != content,
            _ => true,
        }),
        "a dropped query was reported: {finished:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_at_once() {
    let mut swarm = swarm(config().with_handle_queue(4));
    let (addr, _) = swarm.listen().with_memory_addr_external().await;
    // The swarm is not polled: nothing is taken from the queue.
    let handle = swarm.behaviour().dht.handle();
    let queued: Vec<_> = (0..4)
        .map(|_| handle.clone().remove_peer(PeerId::random()))
        .collect();
    for _ in 0..3 {
        let clone = handle.clone();
        assert_eq!(
            clone.remove_peer(PeerId::random()).now_or_never(),
            Some(Err(HandleError::QueueFull))
        );
        assert!(matches!(
            clone.get_closest_peers(b"k".to_vec()).now_or_never(),
            Some(Err(HandleError::QueueFull))
        ));
        let mut stream = clone.find_providers(provider_key(b"k"), None);
        assert_eq!(
            stream.next().now_or_never(),
            Some(Some(Err(HandleError::QueueFull)))
        );
    }

    // Driven, the swarm takes the queued commands, and there is room again.
    let node = Running::spawn(swarm, addr);
    for answer in within(30, futures::future::join_all(queued)).await {
        assert_eq!(answer, Ok(false));
    }
    assert_eq!(
        within(30, handle.remove_peer(PeerId::random())).await,
        Ok(false)
    );
    node.task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_swarm_closes_the_handle() {
    let (_silent, silent_id, silent_addr) = silent_peer().await;
    let node = Running::start(config().with_request_timeout(Duration::from_secs(120))).await;
    let admission = node.handle.add_address(silent_id, silent_addr).await;
    assert_eq!(admission, Ok(Admission::Inserted));
    let running = node.handle.get_closest_peers(b"never answered".to_vec());
    let mut stream = node.handle.find_providers(provider_key(b"never"), None);
    assert_eq!(node.handle.remove_peer(PeerId::random()).await, Ok(false));

    node.task.abort();
    assert_eq!(within(30, running).await, Err(HandleError::Closed));
    assert_eq!(
        within(30, stream.next()).await,
        Some(Err(HandleError::Closed))
    );
    assert_eq!(stream.next().await, None);
    assert_eq!(
        node.handle.remove_peer(PeerId::random()).await,
        Err(HandleError::Closed)
    );
}
