//! Re-admission: a peer enters the routing table whenever it is a reachable DHT server, however
//! often it reconnects and whatever it was before. Identify reports a (peer, address) pair once,
//! so a peer met as a client that comes back as a server on the same address must be admitted
//! with what was learned the first time (Kubo's default `Routing.Type=auto` starts as a client).
//! Each peer here dials the node under test, so only identify or an earlier connection can tell
//! the node where the peer listens.

mod common;

use common::go::{binary, hex, GoPeer};
use common::watch::{port_of, tcp_swarm, Node, Running, Watched};
use common::TEST_PROTOCOL;
use kadence::Mode;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, Multiaddr, PeerId};
use libp2p_kad::store::MemoryStore;

/// Every wait: generous, for a loaded machine.
const DEADLINE_SECS: u64 = 30;

fn node_config() -> kadence::Config {
    kadence::Config::new(TEST_PROTOCOL).with_mode(Some(Mode::Server))
}

/// A kadence peer with identity `key`, listening on `port`, dialling `target` if given.
async fn kadence_peer(
    key: &Keypair,
    port: u16,
    mode: Mode,
    target: Option<Multiaddr>,
) -> (Running, Multiaddr) {
    let config = kadence::Config::new(TEST_PROTOCOL).with_mode(Some(mode));
    let (mut swarm, addr) = tcp_swarm(key.clone(), port, |k| Node::new(k, config, |c| c)).await;
    if let Some(target) = target {
        swarm.dial(target).unwrap();
    }
    (Running::spawn(swarm), addr)
}

#[derive(NetworkBehaviour)]
struct KadPeer {
    identify: identify::Behaviour,
    kad: libp2p_kad::Behaviour<MemoryStore>,
}

/// A rust-libp2p `libp2p-kad` 0.49 peer with identity `key` on `port`, dialling `target`.
async fn libp2p_kad_peer(
    key: &Keypair,
    port: u16,
    mode: libp2p_kad::Mode,
    target: Multiaddr,
) -> (Running, Multiaddr) {
    let (mut swarm, addr) = tcp_swarm(key.clone(), port, |k| {
        let id = k.public().to_peer_id();
        let mut config = libp2p_kad::Config::new(TEST_PROTOCOL);
        config.set_periodic_bootstrap_interval(None);
        let mut kad = libp2p_kad::Behaviour::with_config(id, MemoryStore::new(id), config);
        kad.set_mode(Some(mode));
        KadPeer {
            identify: identify::Behaviour::new(identify::Config::new(
                "/kadence-test/1.0.0".into(),
                k.public(),
            )),
            kad,
        }
    })
    .await;
    swarm.dial(target).unwrap();
    (Running::spawn(swarm), addr)
}

/// The node met `peer` on a new connection and heard it is a DHT client; it is not admitted.
async fn met_as_client(node: &mut Watched, peer: PeerId, identify_reports: bool) {
    node.until(DEADLINE_SECS, "the peer is seen as a client", |s| {
        s.support.get(&peer) == Some(&false)
            && (!identify_reports || s.addresses.contains_key(&peer))
    })
    .await;
    assert_eq!(
        node.table_addresses(&peer),
        None,
        "a client is never admitted"
    );
    assert!(!node.seen.admitted.contains(&peer));
}

/// The peer's last connection to the node closed; what the node heard of it is cleared.
async fn left(node: &mut Watched, peer: PeerId) {
    node.until(DEADLINE_SECS, "the peer's connection closes", |s| {
        !s.connected.contains(&peer)
    })
    .await;
    node.seen.support.remove(&peer);
}

/// The node admitted `peer`, as a server, at `addr`.
async fn admitted_at(node: &mut Watched, peer: PeerId, addr: &Multiaddr) {
    node.until(
        DEADLINE_SECS,
        "the returning server enters the routing table",
        |s| s.admitted.contains(&peer),
    )
    .await;
    let addrs = node.table_addresses(&peer).expect("in the table");
    assert!(addrs.contains(addr), "{addrs:?} holds {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kadence_peer_returning_as_a_server_is_admitted_every_time() {
    let mut node = Watched::start(node_config(), |c| c).await;
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();

    let mut port = 0;
    let mut listen: Option<Multiaddr> = None;
    // Client, then server on the same address; then once more, from a server it was.
    for mode in [Mode::Client, Mode::Server, Mode::Client, Mode::Server] {
        let (running, addr) = kadence_peer(&key, port, mode, Some(node.p2p_addr())).await;
        assert_eq!(
            listen.get_or_insert_with(|| addr.clone()),
            &addr,
            "same address"
        );
        port = port_of(&addr);
        match mode {
            Mode::Client => {
                // The first time identify reports the address; afterwards it stays silent.
                met_as_client(&mut node, peer, true).await;
            }
            Mode::Server => admitted_at(&mut node, peer, &addr).await,
        }
        running.stop().await;
        left(&mut node, peer).await;
    }
    assert_eq!(
        node.seen.addresses[&peer].len(),
        1,
        "identify reported once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_libp2p_kad_peer_returning_as_a_server_is_admitted() {
    let mut node = Watched::start(node_config(), |c| c).await;
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();

    let (running, addr) = libp2p_kad_peer(&key, 0, libp2p_kad::Mode::Client, node.p2p_addr()).await;
    met_as_client(&mut node, peer, true).await;
    running.stop().await;
    left(&mut node, peer).await;

    // Restarted with the same identity and port, as a server.
    let (running, again) = libp2p_kad_peer(
        &key,
        port_of(&addr),
        libp2p_kad::Mode::Server,
        node.p2p_addr(),
    )
    .await;
    assert_eq!(again, addr);
    admitted_at(&mut node, peer, &addr).await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_learned_only_from_our_dial_is_enough() {
    // Identify without its cache reports no address at all: the only one the node ever learns
    // is the one it dialled.
    let mut node = Watched::start(node_config(), |c| c.with_cache_size(0)).await;
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();

    let (running, addr) = kadence_peer(&key, 0, Mode::Client, None).await;
    node.swarm
        .dial(addr.clone().with_p2p(peer).unwrap())
        .unwrap();
    met_as_client(&mut node, peer, false).await;
    running.stop().await;
    left(&mut node, peer).await;

    // Back as a server, and this time it dials us.
    let (running, again) =
        kadence_peer(&key, port_of(&addr), Mode::Server, Some(node.p2p_addr())).await;
    assert_eq!(again, addr);
    admitted_at(&mut node, peer, &addr).await;
    assert!(
        node.seen.addresses.is_empty(),
        "identify said nothing: {:?}",
        node.seen.addresses
    );
    assert_eq!(node.table_addresses(&peer), Some(vec![addr]));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_go_peer_restarted_as_a_server_is_admitted() {
    let Some(binary) = binary() else { return };
    let config = kadence::Config::amino().with_mode(Some(Mode::Server));
    let mut node = Watched::start(config, |c| c).await;
    let key = Keypair::generate_ed25519();
    let peer = key.public().to_peer_id();
    let key_hex = hex(&key.to_protobuf_encoding().unwrap());
    let connect = format!("connect {}", node.p2p_addr());

    let mut go = GoPeer::start_with(&binary, &["-mode", "client", "-key", &key_hex]).await;
    assert_eq!(go.id, peer, "the identity given");
    let addr = go.addr.clone();
    node.during(go.ok(&connect)).await;
    met_as_client(&mut node, peer, true).await;
    go.stop().await;
    left(&mut node, peer).await;

    let port = port_of(&addr).to_string();
    let args = ["-mode", "server", "-key", &key_hex, "-port", &port];
    let mut go = GoPeer::start_with(&binary, &args).await;
    assert_eq!(
        (go.id, &go.addr),
        (peer, &addr),
        "same identity and address"
    );
    node.during(go.ok(&connect)).await;
    admitted_at(&mut node, peer, &addr).await;
    go.stop().await;
}
