//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod go;
pub mod net;
pub mod watch;

use std::time::Duration;

use kadence::{Behaviour, Config, Event, Mode, PeerRecord, Record, Request, Response};

use libp2p::swarm::Swarm;
use libp2p::{Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;

/// The protocol the tests speak, so that nothing here could ever join the public DHT.
pub const TEST_PROTOCOL: libp2p::StreamProtocol =
    libp2p::StreamProtocol::new("/kadence-test/kad/1.0.0");

/// A test configuration: the test protocol, server mode.
pub fn server_config() -> Config {
    Config::new(TEST_PROTOCOL).with_mode(Some(Mode::Server))
}

/// A swarm over the memory transport running only kadence.
pub fn kadence_swarm(config: Config) -> Swarm<Behaviour> {
    Swarm::new_ephemeral_tokio(|key| Behaviour::new(key.public().to_peer_id(), config))
}

/// A peer record with one loopback TCP address.
pub fn sample_peer() -> PeerRecord {
    let key = libp2p::identity::Keypair::ed25519_from_bytes([7u8; 32]).unwrap();
    PeerRecord {
        id: key.public().to_peer_id(),
        // Port 1 on loopback: nothing listens there, so a dial fails at once.
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()],
        connection: kadence::ConnectionType::NotConnected,
    }
}

/// One request of each type; the GET_VALUE asks for the record the PUT_VALUE stores.
pub fn one_of_each_request(me: PeerId) -> Vec<Request> {
    let record = pk_record();
    vec![
        Request::Ping,
        Request::FindNode {
            key: b"target".to_vec(),
        },
        Request::PutValue {
            record: record.clone(),
        },
        Request::GetValue { key: record.key },
        Request::AddProvider {
            key: vec![0x12, 0x20, 9, 9],
            providers: vec![PeerRecord {
                id: me,
                addrs: vec!["/ip4/127.0.0.1/tcp/4002".parse().unwrap()],
                connection: kadence::ConnectionType::Connected,
            }],
        },
        Request::GetProviders {
            key: vec![0x12, 0x20, 9, 9],
        },
    ]
}

/// A fixed, protocol-correct answer to `request`, as a stand-in server would give.
pub fn canned_answer(request: &Request) -> Option<Response> {
    Some(match request {
        Request::Ping => Response::Ping,
        Request::FindNode { .. } => Response::FindNode {
            closer_peers: vec![sample_peer()],
        },
        Request::GetValue { key } => Response::GetValue {
            record: Some(Record {
                key: key.clone(),
                value: b"stored".to_vec(),
                time_received: "2026-11-25T00:00:00Z".into(),
            }),
            closer_peers: vec![sample_peer()],
        },
        Request::PutValue { record } => Response::PutValue {
            record: record.clone(),
        },
        Request::GetProviders { .. } => Response::GetProviders {
            providers: vec![sample_peer()],
            closer_peers: vec![sample_peer()],
        },
        Request::AddProvider { .. } => return None,
    })
}

/// Drives a kadence swarm forever, forwarding every event to `events`. Its Server module
/// answers every request.
pub async fn serve(mut swarm: Swarm<Behaviour>, events: tokio::sync::mpsc::UnboundedSender<Event>) {
    loop {
        let event = swarm.next_behaviour_event().await;
        let _ = events.send(event);
    }
}

/// A valid `/pk/` record: the public key of a fresh key pair under its own peer id.
pub fn pk_record() -> Record {
    Record::public_key(&libp2p::identity::Keypair::generate_ed25519().public())
}

/// A valid `/ipns/` record: a fresh name pointing at a path, signed by the name's key.
pub fn ipns_record() -> Record {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    kadence::ipns::IpnsRecord::builder("/ipfs/bafkqaaa")
        .sequence(1)
        .sign(&keypair)
        .expect("signed")
        .to_dht_record(&keypair.public().to_peer_id())
}

/// Waits for `fut` at most `secs` seconds; a test that hangs fails instead.
pub async fn within<F: std::future::Future>(secs: u64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("timed out")
}

/// Checks a kadence server's answer to a request of [`one_of_each_request`], sent in order by
/// peer `me`: what the protocol demands of it.
pub fn assert_protocol_answer(request: &Request, answer: Option<Response>, me: PeerId) {
    match (request, answer) {
        (Request::Ping, Some(Response::Ping)) => {}
        (Request::FindNode { .. }, Some(Response::FindNode { closer_peers })) => {
            assert!(
                closer_peers.iter().all(|p| p.id != me),
                "never the requester"
            );
        }
        (Request::PutValue { record }, Some(Response::PutValue { record: echo })) => {
            assert_eq!((&echo.key, &echo.value), (&record.key, &record.value));
            assert!(
                !echo.time_received.is_empty(),
                "the server sets timeReceived"
            );
        }
        (
            Request::GetValue { key },
            Some(Response::GetValue {
                record: Some(r), ..
            }),
        ) => {
            assert_eq!(&r.key, key, "the record stored before");
        }
        (Request::AddProvider { .. }, None) => {}
        (Request::GetProviders { .. }, Some(Response::GetProviders { providers, .. })) => {
            let me_listed = providers.iter().find(|p| p.id == me).expect("our record");
            assert!(!me_listed.addrs.is_empty());
        }
        (request, answer) => panic!("{request:?} answered with {answer:?}"),
    }
}
