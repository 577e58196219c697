//! The routing table with real swarms (identify + kadence over 127.0.0.1 TCP): peers that stop
//! leave it within a bounded time and the replacement cache refills it, without any lookup of
//! the application; a peer that stays connected but never answers leaves it too; and only the
//! configured number of idle connections to table peers is kept open.

mod common;

use std::time::Duration;

use common::watch::{tcp_swarm, Node, Running, Watched};
use common::TEST_PROTOCOL;
use futures::StreamExt;
use kadence::key::Key;
use kadence::Mode;
use libp2p::identity::Keypair;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{identify, PeerId};

/// Every wait: generous, for a loaded machine. The table needs far less (see each test).
const DEADLINE_SECS: u64 = 60;

fn config() -> kadence::Config {
    kadence::Config::new(TEST_PROTOCOL).with_mode(Some(Mode::Server))
}

/// A key whose peer falls in bucket `cpl` of `node`'s routing table.
fn key_in_bucket(node: &PeerId, cpl: usize) -> Keypair {
    let local = Key::from_peer(node);
    loop {
        let key = Keypair::generate_ed25519();
        if Key::from_peer(&key.public().to_peer_id()).common_prefix_len(&local) == cpl {
            return key;
        }
    }
}

/// A kadence server with identity `key` that dials `node`, running until stopped.
async fn peer_dialling(key: &Keypair, config: kadence::Config, node: &Watched) -> Running {
    let (mut swarm, _) = tcp_swarm(key.clone(), 0, |k| Node::new(k, config, |c| c)).await;
    swarm.dial(node.p2p_addr()).unwrap();
    Running::spawn(swarm)
}

/// Four peers of bucket 0 with k = 2: two in the table, two waiting as candidates. The two in
/// the table stop. Their connections are lost, so the node checks them at its next liveness
/// tick (every 5 s); the dials are refused outright, which evicts them at once, and the
/// candidates take their slots. Nobody runs a lookup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_peers_leave_the_table_and_candidates_take_their_place() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let mut node = Watched::start(config().with_k(2), |c| c).await;
    let keys: Vec<Keypair> = (0..4).map(|_| key_in_bucket(&node.id, 0)).collect();
    let ids: Vec<PeerId> = keys.iter().map(|k| k.public().to_peer_id()).collect();
    let mut first = Vec::new();
    for key in &keys[..2] {
        first.push(peer_dialling(key, config(), &node).await);
    }
    node.until(DEADLINE_SECS, "the first two peers enter", |s| {
        s.admitted.contains(&ids[0]) && s.admitted.contains(&ids[1])
    })
    .await;
    let mut candidates = Vec::new();
    for key in &keys[2..] {
        candidates.push(peer_dialling(key, config(), &node).await);
    }
    node.until(DEADLINE_SECS, "the other two are known servers", |s| {
        ids[2..]
            .iter()
            .all(|p| s.support.get(p) == Some(&true) && s.addresses.contains_key(p))
    })
    .await;
    let table = node.swarm.behaviour().dht.routing_table();
    assert_eq!(table.len(), 2, "the bucket is full: the others wait");
    assert!(!table.contains(&ids[2]) && !table.contains(&ids[3]));

    for peer in first {
        peer.stop().await;
    }
    let stopped = tokio::time::Instant::now();
    node.until(DEADLINE_SECS, "the stopped peers are evicted", |s| {
        !s.admitted.contains(&ids[0]) && !s.admitted.contains(&ids[1])
    })
    .await;
    let table = node.swarm.behaviour().dht.routing_table();
    assert!(
        table.contains(&ids[2]) && table.contains(&ids[3]),
        "the candidates took the slots"
    );
    assert_eq!(table.len(), 2);
    eprintln!(
        "stopped peers evicted {:.1} s after they stopped",
        stopped.elapsed().as_secs_f64()
    );
    for peer in candidates {
        peer.stop().await;
    }
}

/// A peer that advertises the protocol and accepts its streams, but never answers.
#[derive(NetworkBehaviour)]
struct SilentPeer {
    identify: identify::Behaviour,
    stream: libp2p_stream::Behaviour,
}

/// A silent peer: connected, never answering. The node meets it in a lookup (the request times
/// out), then checks it again `recheck_after` later, twice: the third failure in a row, past
/// `failure_span` after the first, evicts it. With the settings below that takes about 15 s
/// (liveness checks start on a 5 s tick).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_answers_leaves_the_table() {
    let node_config = config()
        .with_request_timeout(Duration::from_secs(1))
        .with_recheck_after(Duration::from_secs(1))
        .with_failure_span(Duration::from_secs(2));
    let mut node = Watched::start(node_config, |c| c).await;
    let (mut swarm, _) = tcp_swarm(Keypair::generate_ed25519(), 0, |k| SilentPeer {
        identify: identify::Behaviour::new(identify::Config::new(
            "/kadence-test/1.0.0".into(),
            k.public(),
        )),
        stream: libp2p_stream::Behaviour::new(),
    })
    .await;
    let silent = *swarm.local_peer_id();
    let mut incoming = swarm
        .behaviour()
        .stream
        .new_control()
        .accept(TEST_PROTOCOL)
        .unwrap();
    let holder = tokio::spawn(async move {
        // Streams are held open, never read from or answered.
        let mut held = Vec::new();
        while let Some((_, stream)) = incoming.next().await {
            held.push(stream);
        }
    });
    swarm.dial(node.p2p_addr()).unwrap();
    let running = Running::spawn(swarm);
    node.until(DEADLINE_SECS, "the silent peer enters", |s| {
        s.admitted.contains(&silent)
    })
    .await;
    node.swarm
        .behaviour_mut()
        .dht
        .get_closest_peers(b"anything".to_vec());
    node.until(DEADLINE_SECS, "the silent peer is evicted", |s| {
        !s.admitted.contains(&silent)
    })
    .await;
    assert!(
        node.seen.connected.contains(&silent),
        "still connected: evicted for its silence alone"
    );
    running.stop().await;
    holder.abort();
}

/// The node keeps one idle connection to a table peer open (`with_max_kept_connections(1)`),
/// while its swarm closes the others once idle for 2 s. Its peers close idle connections only
/// after 60 s and keep none themselves, so what stays open is the node's doing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_configured_number_of_idle_connections_is_kept() {
    let node_config = config()
        .with_max_kept_connections(1)
        .with_outbound_idle_timeout(Duration::from_millis(200));
    let idle = Duration::from_secs(2);
    let mut node = Watched::start_with_idle_timeout(node_config, |c| c, idle).await;
    let mut peers = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let key = Keypair::generate_ed25519();
        ids.push(key.public().to_peer_id());
        let peer_config = config().with_max_kept_connections(0);
        peers.push(peer_dialling(&key, peer_config, &node).await);
    }
    node.until(DEADLINE_SECS, "the three peers enter the table", |s| {
        ids.iter().all(|p| s.admitted.contains(p))
    })
    .await;
    node.until(DEADLINE_SECS, "the connections not kept close", |s| {
        s.connected.len() == 1
    })
    .await;
    let kept = *node.seen.connected.iter().next().unwrap();
    // Idle as long as the two that closed; it stays through more idle timeouts.
    node.during(tokio::time::sleep(3 * idle)).await;
    assert_eq!(
        node.seen.connected.iter().collect::<Vec<_>>(),
        vec![&kept],
        "the kept connection stays open while idle"
    );
    // Closed for idleness by us: nothing against the peers, all stay in the table.
    let table = node.swarm.behaviour().dht.routing_table();
    assert!(ids.iter().all(|p| table.contains(p)));
    for peer in peers {
        peer.stop().await;
    }
}
