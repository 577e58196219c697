//! Interop smoke test against rust-libp2p's own `libp2p-kad` 0.49, both directions.

mod common;

use common::*;
use kadence::{Event, Request, Response};
use libp2p::swarm::Swarm;
use libp2p::{Multiaddr, PeerId};
use libp2p_kad::store::MemoryStore;
use libp2p_swarm_test::SwarmExt;
use tokio::sync::mpsc;

fn libp2p_kad_swarm() -> Swarm<libp2p_kad::Behaviour<MemoryStore>> {
    Swarm::new_ephemeral_tokio(|key| {
        let id = key.public().to_peer_id();
        let mut config = libp2p_kad::Config::new(TEST_PROTOCOL);
        // No background queries: the test decides every message.
        config.set_periodic_bootstrap_interval(None);
        let mut kad = libp2p_kad::Behaviour::with_config(id, MemoryStore::new(id), config);
        kad.set_mode(Some(libp2p_kad::Mode::Server));
        kad
    })
}

#[tokio::test]
async fn kadence_answers_find_node_from_libp2p_kad() {
    let mut kad = libp2p_kad_swarm();
    let mut kadence = kadence_swarm(server_config());
    kadence.listen().with_memory_addr_external().await;
    let kadence_id = *kadence.local_peer_id();
    let addr = kadence.external_addresses().next().unwrap().clone();
    kad.behaviour_mut().add_address(&kadence_id, addr);
    let (tx, mut events) = mpsc::unbounded_channel();
    tokio::spawn(serve(kadence, tx));

    kad.behaviour_mut().get_closest_peers(b"target".to_vec());
    let ok = within(30, async {
        loop {
            if let libp2p_kad::Event::OutboundQueryProgressed {
                result: libp2p_kad::QueryResult::GetClosestPeers(result),
                step,
                ..
            } = kad.next_behaviour_event().await
            {
                if step.last {
                    return result.expect("the query succeeds");
                }
            }
        }
    })
    .await;
    // libp2p-kad counts a peer as succeeded only when its response decoded and was valid.
    assert!(ok.peers.iter().any(|p| p.peer_id == kadence_id), "{ok:?}");

    let (request, outcome) = within(10, async {
        loop {
            if let Some(Event::InboundRequest {
                request, outcome, ..
            }) = events.recv().await
            {
                return (request, outcome);
            }
        }
    })
    .await;
    assert_eq!(request, kadence::MessageType::FindNode);
    assert_eq!(outcome, kadence::InboundOutcome::Answered);
}

#[tokio::test]
async fn libp2p_kad_answers_find_node_from_kadence() {
    let mut kad = libp2p_kad_swarm();
    kad.listen().with_memory_addr_external().await;
    // A peer libp2p-kad knows, so that its answer is not empty.
    let known = PeerId::random();
    let known_addr: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
    kad.behaviour_mut().add_address(&known, known_addr.clone());

    let mut kadence = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    kadence.connect(&mut kad).await;
    let kad_id = *kad.local_peer_id();
    tokio::spawn(kad.loop_on_next());

    kadence.behaviour_mut().send_request(
        kad_id,
        Request::FindNode {
            key: known.to_bytes(),
        },
    );
    let result = within(10, async {
        loop {
            if let Event::OutboundRequestFinished { result, .. } =
                kadence.next_behaviour_event().await
            {
                return result;
            }
        }
    })
    .await;
    let Some(Response::FindNode { closer_peers }) = result.expect("libp2p-kad answers") else {
        panic!("a FIND_NODE answer")
    };
    let entry = closer_peers
        .iter()
        .find(|p| p.id == known)
        .expect("the known peer is returned");
    // libp2p-kad sends it as `known_addr/p2p/<known>`; the suffix is stripped on receipt.
    assert_eq!(entry.addrs, vec![known_addr]);
}
