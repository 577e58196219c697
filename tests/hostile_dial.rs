//! Dial amplification (issue 14, item 1): a hostile peer answers one FIND_NODE with 20 made-up
//! peers of 200 addresses each. The node under test must not turn that 40 KB answer into
//! thousands of connections, nor wait out its request timeout because of it.
//!
//! The addresses point at TCP listeners of this test that count every connection they accept
//! and close it at once (the dial then fails fast, as it would against a victim that is not a
//! libp2p node). Everything runs on 127.0.0.1: a loopback informant may hand out loopback
//! addresses, so what bounds the connections in the first two tests is the per-peer cap and
//! the per-lookup bound. The third makes the hostile peer's connection seem to come from a
//! public address (`common/fake_remote.rs`): then its loopback addresses are not dialled at all.

mod common;
#[path = "common/fake_remote.rs"]
mod fake_remote;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::net::{node_config, TestNode};
use common::watch::{tcp_swarm, Node, NodeEvent, Running};
use common::TEST_PROTOCOL;
use fake_remote::{start_node, Sources};
use futures::StreamExt;
use kadence::network::codec::{read_frame, write_frame};
use kadence::network::message::{decode_request, encode_response};
use kadence::{ConnectionType, Event, PeerRecord, QueryResult, Request, Response};
use libp2p::identity::Keypair;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};

/// Peers in the hostile answer, as many as a FIND_NODE answer normally holds (k).
const ENTRIES: usize = 20;
/// Addresses per made-up peer: about 2 KB per entry, under the 8 KiB entry limit.
const ADDRS_PER_ENTRY: usize = 200;
/// The key of the lookup under attack; other FIND_NODEs get an empty answer.
const TARGET: &[u8] = b"hostile-dial-target";

/// Listeners on 127.0.0.1 that count the connections they accept and drop each at once.
async fn counting_listeners(n: usize) -> (Vec<u16>, Arc<AtomicUsize>) {
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut ports = Vec::with_capacity(n);
    for _ in 0..n {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        ports.push(listener.local_addr().unwrap().port());
        let accepted = accepted.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
    }
    (ports, accepted)
}

/// A peer speaking the DHT protocol by hand: it answers the FIND_NODE for [`TARGET`] with
/// `poison`, every other FIND_NODE with no peers. Returns its swarm (for the caller to run)
/// and address.
async fn hostile_peer(poison: Vec<PeerRecord>) -> (Swarm<libp2p_stream::Behaviour>, Multiaddr) {
    let (swarm, addr) = tcp_swarm(Keypair::generate_ed25519(), 0, |_| {
        libp2p_stream::Behaviour::new()
    })
    .await;
    let mut incoming = swarm
        .behaviour()
        .new_control()
        .accept(TEST_PROTOCOL)
        .unwrap();
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            let poison = poison.clone();
            tokio::spawn(async move {
                while let Ok(Some(frame)) = read_frame(&mut stream, 4 << 20).await {
                    let Ok(Request::FindNode { key }) = decode_request(&frame, &Default::default())
                    else {
                        return;
                    };
                    let closer_peers = if key == TARGET {
                        poison.clone()
                    } else {
                        Vec::new()
                    };
                    let answer = encode_response(&Response::FindNode { closer_peers }, &key);
                    if write_frame(&mut stream, &answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (swarm, addr)
}

/// [`ENTRIES`] made-up peers, each at the addresses of all the counting listeners.
async fn poison() -> (Vec<PeerRecord>, Arc<AtomicUsize>) {
    let (ports, accepted) = counting_listeners(ADDRS_PER_ENTRY).await;
    let addrs: Vec<Multiaddr> = ports
        .iter()
        .map(|p| format!("/ip4/127.0.0.1/tcp/{p}").parse().unwrap())
        .collect();
    let peers = (0..ENTRIES)
        .map(|_| PeerRecord {
            id: PeerId::random(),
            addrs: addrs.clone(),
            connection: ConnectionType::NotConnected,
        })
        .collect();
    (peers, accepted)
}

/// Waits until `accepted` has not moved for a while: dials still under way when a lookup ended
/// count too (a failed dial's addresses are all tried within milliseconds).
async fn settled(accepted: &AtomicUsize) -> usize {
    let mut opened = accepted.load(Ordering::SeqCst);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = accepted.load(Ordering::SeqCst);
        if now == opened {
            return opened;
        }
        opened = now;
    }
}

/// What one attacked lookup cost.
struct Attack {
    /// Connections the made-up peers' addresses received.
    opened: usize,
    /// From the start of the lookup to its result.
    took: Duration,
    hostile: PeerId,
    result: Option<QueryResult>,
}

/// Starts a node with `config` that knows only the hostile peer, runs one lookup for
/// [`TARGET`] and counts the connections it opened to the made-up peers.
async fn attacked_lookup(config: kadence::Config) -> Attack {
    let (poison, accepted) = poison().await;
    let (swarm, hostile_addr) = hostile_peer(poison).await;
    let hostile = *swarm.local_peer_id();
    let running = Running::spawn(swarm);
    let node = TestNode::start_tcp(config, Some((hostile, hostile_addr))).await;
    let start = Instant::now();
    let outcome = node
        .run(|dht| Some(dht.get_closest_peers(TARGET.to_vec())))
        .await;
    let took = start.elapsed();
    let opened = settled(&accepted).await;
    node.stop();
    running.stop().await;
    Attack {
        opened,
        took,
        hostile,
        result: outcome.result,
    }
}

/// The lookup's result holds the hostile peer: it answered, the made-up peers failed.
fn assert_found_hostile(attack: &Attack) {
    match &attack.result {
        Some(QueryResult::ClosestPeers {
            result: Ok(peers), ..
        }) => {
            assert!(peers.iter().any(|p| p.id == attack.hostile), "{peers:?}");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_find_node_answer_opens_at_most_the_cap_per_named_peer() {
    // The default request timeout (10 s, as go): the lookup must not wait it out.
    let config = node_config()
        .with_request_timeout(Duration::from_secs(10))
        .with_query_timeout(Duration::from_secs(60));
    let cap = config.max_dial_addresses_per_peer();
    let timeout = config.request_timeout();
    let attack = attacked_lookup(config).await;
    eprintln!(
        "lookup took {:?}; connections opened: {} ({ENTRIES} peers x {ADDRS_PER_ENTRY} addresses named)",
        attack.took, attack.opened
    );
    assert_found_hostile(&attack);
    // Before the fix: 4,000 connections (every address), the lookup 4.5 s on an idle machine.
    assert!(
        attack.opened <= cap * ENTRIES,
        "{} connections opened for one answer, at most {cap} x {ENTRIES} allowed",
        attack.opened
    );
    assert!(
        attack.took < timeout,
        "the lookup waited out the request timeout ({:?})",
        attack.took
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_dials_at_most_its_budget_of_new_peers() {
    let budget = 5;
    let config = node_config()
        .with_request_timeout(Duration::from_secs(10))
        .with_query_timeout(Duration::from_secs(60))
        .with_max_dials_per_lookup(budget);
    let cap = config.max_dial_addresses_per_peer();
    let attack = attacked_lookup(config).await;
    eprintln!(
        "budget {budget}: lookup took {:?}; connections opened: {}",
        attack.took, attack.opened
    );
    assert_found_hostile(&attack);
    // (The hostile peer itself may have taken one dial of the budget.)
    assert!(
        attack.opened <= budget * cap,
        "{} connections opened, at most {budget} x {cap} allowed",
        attack.opened
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_informant_cannot_point_the_node_at_loopback() {
    let sources = Sources::default();
    let config = node_config()
        .with_request_timeout(Duration::from_secs(10))
        .with_query_timeout(Duration::from_secs(60));
    let mut node = start_node(Keypair::generate_ed25519(), config, sources.clone()).await;
    let (poison, accepted) = poison().await;
    let (mut swarm, hostile_addr) = hostile_peer(poison).await;
    let hostile = *swarm.local_peer_id();
    // The hostile peer connects to the node from a public address, as on the Internet.
    sources.set(
        common::watch::port_of(&hostile_addr),
        "45.10.1.1".parse().unwrap(),
    );
    swarm.dial(node.p2p_addr()).unwrap();
    let running = Running::spawn(swarm);
    node.until(30, "the hostile peer connected", |seen| {
        seen.connected.contains(&hostile)
    })
    .await;
    assert_eq!(sources.rewritten(), 1, "its connection came from 45.10.1.1");

    // The node knows it as a DHT server (as after identify) and asks it on that connection.
    let dht = &mut node.swarm.behaviour_mut().dht;
    let _ = dht.add_address(hostile, hostile_addr);
    let query = dht.get_closest_peers(TARGET.to_vec());
    let result = common::within(60, async {
        loop {
            if let SwarmEvent::Behaviour(NodeEvent::Dht(Event::QueryFinished {
                id, result, ..
            })) = node.swarm.select_next_some().await
            {
                if id == query {
                    return result;
                }
            }
        }
    })
    .await;
    // Keep the node running while late dials (there should be none) would land.
    let opened = node.during(settled(&accepted)).await;
    eprintln!("connections opened on the word of a public peer: {opened}");
    match result {
        QueryResult::ClosestPeers {
            result: Ok(peers), ..
        } => {
            assert!(peers.iter().any(|p| p.id == hostile), "{peers:?}")
        }
        other => panic!("{other:?}"),
    }
    // Before the fix: 4,000.
    assert_eq!(
        opened, 0,
        "no loopback address named by a public peer is dialled"
    );
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_public_peer_cannot_make_the_node_keep_its_loopback_or_private_addresses() {
    let sources = Sources::default();
    let mut node = start_node(Keypair::generate_ed25519(), node_config(), sources.clone()).await;
    // A DHT server connected from a public address that also claims local addresses (its
    // listen address on 127.0.0.1 among them): identify reports them all.
    let (mut swarm, addr) = tcp_swarm(Keypair::generate_ed25519(), 0, |key| {
        Node::new(key, node_config(), |c| c)
    })
    .await;
    let public: Multiaddr = "/ip4/45.10.9.9/tcp/4001".parse().unwrap();
    for a in [
        public.clone(),
        "/ip4/192.168.1.1/tcp/4001".parse().unwrap(),
        "/ip4/127.0.0.1/tcp/22".parse().unwrap(),
    ] {
        swarm.add_external_address(a);
    }
    let peer = *swarm.local_peer_id();
    sources.set(common::watch::port_of(&addr), "45.10.9.9".parse().unwrap());
    swarm.dial(node.p2p_addr()).unwrap();
    let running = Running::spawn(swarm);
    node.until(60, "the peer is admitted with its addresses", |seen| {
        seen.admitted.contains(&peer) && seen.addresses.get(&peer).is_some_and(|a| a.len() >= 4)
    })
    .await;
    assert_eq!(sources.rewritten(), 1);
    // Before the fix: all four, loopback and private ones included.
    assert_eq!(node.table_addresses(&peer), Some(vec![public]));
    running.stop().await;
}
