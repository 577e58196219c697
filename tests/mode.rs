//! Client and server mode: advertised through identify, switched live on open connections,
//! automatic from confirmed external addresses.

mod common;

use common::*;
use kadence::{Event, Mode, Request, RequestError, Response};
use libp2p::swarm::{NetworkBehaviour, Swarm};
use libp2p::{identify, Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;

#[derive(NetworkBehaviour)]
struct Node {
    identify: identify::Behaviour,
    dht: kadence::Behaviour,
}

fn node(mode: Option<Mode>) -> Swarm<Node> {
    Swarm::new_ephemeral_tokio(|key| Node {
        identify: identify::Behaviour::new(identify::Config::new(
            "/kadence-test/1.0.0".into(),
            key.public(),
        )),
        dht: kadence::Behaviour::new(
            key.public().to_peer_id(),
            kadence::Config::new(TEST_PROTOCOL).with_mode(mode),
        ),
    })
}

/// Drives both swarms until `a` emits a DHT event that `f` accepts.
async fn a_until<T>(
    a: &mut Swarm<Node>,
    b: &mut Swarm<Node>,
    mut f: impl FnMut(Event) -> Option<T>,
) -> T {
    within(20, async {
        loop {
            tokio::select! {
                event = a.next_behaviour_event() => {
                    if let NodeEvent::Dht(event) = event {
                        if let Some(out) = f(event) {
                            return out;
                        }
                    }
                }
                _ = b.next_behaviour_event() => {}
            }
        }
    })
    .await
}

async fn ping(
    a: &mut Swarm<Node>,
    b: &mut Swarm<Node>,
    to: PeerId,
) -> Result<Option<Response>, RequestError> {
    a.behaviour_mut().dht.send_request(to, Request::Ping);
    a_until(a, b, |e| match e {
        Event::OutboundRequestFinished { result, .. } => Some(result),
        _ => None,
    })
    .await
}

async fn support_of(a: &mut Swarm<Node>, b: &mut Swarm<Node>, peer: PeerId) -> bool {
    a_until(a, b, |e| match e {
        Event::PeerProtocolSupport {
            peer: p, supported, ..
        } if p == peer => Some(supported),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn mode_is_switched_live_on_open_connections() {
    let mut a = node(Some(Mode::Client));
    let mut b = node(Some(Mode::Client));
    b.listen().with_memory_addr_external().await;
    a.connect(&mut b).await;
    let b_id = *b.local_peer_id();

    // A client neither advertises nor answers the protocol.
    assert!(!support_of(&mut a, &mut b, b_id).await);
    let refused = ping(&mut a, &mut b, b_id).await;
    assert!(
        matches!(refused, Err(RequestError::UnsupportedProtocol)),
        "{refused:?}"
    );

    // Switched to server on the open connection: identify pushes the new protocol list.
    b.behaviour_mut().dht.set_mode(Some(Mode::Server));
    assert!(support_of(&mut a, &mut b, b_id).await);
    assert_eq!(
        ping(&mut a, &mut b, b_id).await.unwrap(),
        Some(Response::Ping)
    );

    // And back.
    b.behaviour_mut().dht.set_mode(Some(Mode::Client));
    assert!(!support_of(&mut a, &mut b, b_id).await);
    let refused = ping(&mut a, &mut b, b_id).await;
    assert!(
        matches!(refused, Err(RequestError::UnsupportedProtocol)),
        "{refused:?}"
    );
}

#[tokio::test]
async fn automatic_mode_follows_confirmed_external_addresses() {
    let mut node = node(None);
    assert_eq!(node.behaviour().dht.mode(), Mode::Client);
    let addr: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();

    node.add_external_address(addr.clone());
    let mode = within(5, async {
        loop {
            if let NodeEvent::Dht(Event::ModeChanged { mode }) = node.next_behaviour_event().await {
                return mode;
            }
        }
    })
    .await;
    assert_eq!(mode, Mode::Server);

    node.remove_external_address(&addr);
    let mode = within(5, async {
        loop {
            if let NodeEvent::Dht(Event::ModeChanged { mode }) = node.next_behaviour_event().await {
                return mode;
            }
        }
    })
    .await;
    assert_eq!(mode, Mode::Client);
    assert_eq!(node.behaviour().dht.mode(), Mode::Client);
}
