//! The newcomer's local network: nodes left in automatic mode without an external address
//! stay clients that serve nobody. A lookup among them used to come back as an empty success
//! (`Bootstrap(Ok(0))`, `ClosestPeers(Ok([]))`); it now fails and says what to do.

mod common;

use std::time::Duration;

use common::{within, TEST_PROTOCOL};
use futures::StreamExt;
use kadence::{HandleError, QueryError, QueryFailure};
use libp2p::swarm::{NetworkBehaviour, Swarm};
use libp2p::{identify, Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;

#[derive(NetworkBehaviour)]
struct Node {
    identify: identify::Behaviour,
    dht: kadence::Behaviour,
}

/// A node with the defaults a newcomer starts from (automatic mode), listening on the memory
/// transport with no external address, its swarm driven by a task of its own.
async fn node() -> (PeerId, Multiaddr, kadence::Handle) {
    let mut swarm = Swarm::new_ephemeral_tokio(|key| Node {
        identify: identify::Behaviour::new(identify::Config::new(
            "/kadence-test/1.0.0".into(),
            key.public(),
        )),
        dht: kadence::Behaviour::new(
            key.public().to_peer_id(),
            kadence::Config::new(TEST_PROTOCOL).with_request_timeout(Duration::from_secs(5)),
        ),
    });
    let (addr, _) = swarm.listen().await;
    assert_eq!(swarm.behaviour().dht.mode(), kadence::Mode::Client);
    let id = *swarm.local_peer_id();
    let handle = swarm.behaviour().dht.handle();
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    (id, addr, handle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_of_clients_says_why_it_finds_nothing() {
    let (first, first_addr, _a) = node().await;
    let (_, _, b) = node().await;
    // The bootstrap peer is taken on trust, and asked.
    let admitted = b.add_address(first, first_addr).await;
    assert_eq!(admitted, Ok(kadence::Admission::Inserted));
    let outcome = within(60, b.bootstrap()).await;
    let Err(HandleError::Query(QueryFailure {
        error: error @ QueryError::NoServers { asked },
        found: 0,
    })) = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert!(*asked >= 1, "the bootstrap peer was asked");
    let message = error.to_string();
    assert!(
        message.contains("add_external_address") && message.contains("Mode::Server"),
        "the error says what to do: {message}"
    );
    // The client refused the protocol: it left b's table, so the next lookup has nobody to
    // ask, and says so too.
    let outcome = within(60, b.get_closest_peers(b"anything".to_vec())).await;
    assert!(
        matches!(
            &outcome,
            Err(HandleError::Query(QueryFailure {
                error: QueryError::NoServers { .. },
                ..
            }))
        ),
        "{outcome:?}"
    );
}
