//! The Provider: start_providing many keys, the sweep renews them before they expire, and
//! stop_providing ends that; tiny networks work too.
//!
//! Records live 4 s here, and a machine under load may take longer than that to sweep a
//! thousand keys to 20 peers each: checks wait for what they look for (with a deadline) rather
//! than expect it at a given moment.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::net::{network, node_config, TestNode};
use kadence::key::Key;

/// Records live 4 s; the sweep renews them every 2 s.
fn fast_config() -> kadence::Config {
    node_config()
        .with_provider_validity(Duration::from_secs(4))
        .with_provider_address_ttl(Duration::from_secs(4))
        .with_reprovide_interval(Duration::from_secs(2))
}

fn cid(i: u32) -> kadence::ProviderKey {
    let mut key = vec![0x12, 0x20];
    key.extend(Key::new(&i.to_be_bytes()).as_bytes());
    kadence::ProviderKey::try_from(key).unwrap()
}

/// Waits until every provided key of `node` has been announced.
async fn wait_all_announced(node: &TestNode, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let announced = Arc::new(Mutex::new(0));
        let seen = announced.clone();
        node.run(move |dht| {
            let keys = dht
                .provided_keys(&Key::from_hash([0; 32]), usize::MAX)
                .unwrap();
            *seen.lock().unwrap() = keys
                .iter()
                .filter(|s| {
                    s.key.last_provided.is_some() && s.key.peers > 0 && s.next_due.is_some()
                })
                .count();
            None
        })
        .await;
        if *announced.lock().unwrap() == count {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "announced {} of {count}",
            announced.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_keys_are_provided_renewed_and_stopped() {
    let nodes = network(50, fast_config).await;
    let provider = &nodes[7];
    let provider_id = provider.id;
    provider
        .run(|dht| {
            for i in 0..1000 {
                dht.start_providing(cid(i)).unwrap();
            }
            None
        })
        .await;
    wait_all_announced(provider, 1000).await;
    let first_sweep_done = Instant::now();
    for i in (0..1000).step_by(97) {
        nodes[31]
            .until_found(cid(i), provider_id, true, &format!("key {i}"))
            .await;
    }

    provider
        .run(|dht| {
            dht.stop_providing(&cid(3)).unwrap();
            None
        })
        .await;
    // Past the 4 s lifetime of the first sweep's records (and 2 s for messages still on their
    // way), the keys are still found: the sweep renewed them.
    tokio::time::sleep_until((first_sweep_done + Duration::from_secs(6)).into()).await;
    for i in [0u32, 500, 999] {
        nodes[40]
            .until_found(cid(i), provider_id, true, &format!("key {i} renewed"))
            .await;
    }
    // The stopped key was not renewed: it expires everywhere, and stays gone for three more
    // intervals (a sweep announcing it would bring it back).
    nodes[40]
        .until_found(cid(3), provider_id, false, "the stopped key expires")
        .await;
    let watch_until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < watch_until {
        assert!(
            !nodes[40].providers_of(cid(3)).await.contains(&provider_id),
            "the stopped key was announced again"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in &nodes {
        assert!(
            !node.holds_providers_of(cid(3).as_bytes()).await,
            "held by {}",
            node.id
        );
    }
}

/// Issue 14: a region's keys past the first read (100,000, never continued) were never
/// announced, and at start-up the whole keyspace is one region. Five nodes (fewer than k: one
/// region), 1,000 keys read 64 at a time: every key is announced, and found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_one_region_is_announced_page_by_page() {
    let nodes = network(5, || fast_config().with_reprovide_keys_per_page(64)).await;
    nodes[0]
        .run(|dht| {
            for i in 0..1000 {
                dht.start_providing(cid(i)).unwrap();
            }
            None
        })
        .await;
    wait_all_announced(&nodes[0], 1000).await;
    // The first and last keys of the keyspace: the first and last pages.
    let mut order: Vec<u32> = (0..1000).collect();
    order.sort_by_key(|i| Key::new(cid(*i).as_bytes()));
    for i in [order[0], order[500], order[999]] {
        nodes[4]
            .until_found(cid(i), nodes[0].id, true, &format!("key {i}"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_networks_and_a_single_key() {
    // Fewer peers than k: one region, every key to every peer.
    let nodes = network(5, fast_config).await;
    nodes[0]
        .run(|dht| {
            dht.start_providing(cid(42)).unwrap();
            None
        })
        .await;
    wait_all_announced(&nodes[0], 1).await;
    nodes[4]
        .until_found(cid(42), nodes[0].id, true, "key 42")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_peers_in_one_corner_of_the_keyspace() {
    // Eight nodes whose points all start with three zero bits: 1/8 of the keyspace.
    let corner = || loop {
        let key = libp2p::identity::Keypair::generate_ed25519();
        if Key::from_peer(&key.public().to_peer_id()).as_bytes()[0] < 0x20 {
            return key;
        }
    };
    let mut nodes: Vec<TestNode> = Vec::new();
    for _ in 0..8 {
        let bootstrap = nodes.last().map(|n: &TestNode| (n.id, n.addr.clone()));
        nodes.push(TestNode::start_tcp_with(corner(), fast_config(), bootstrap).await);
    }
    for node in &nodes {
        node.run(|dht| dht.bootstrap().ok()).await;
    }
    // Keys spread over the whole keyspace, far from every peer.
    nodes[0]
        .run(|dht| {
            for i in 0..50 {
                dht.start_providing(cid(i)).unwrap();
            }
            None
        })
        .await;
    wait_all_announced(&nodes[0], 50).await;
    for i in [0u32, 17, 49] {
        nodes[7]
            .until_found(cid(i), nodes[0].id, true, &format!("key {i}"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_key_is_announced_at_once_with_the_amino_interval() {
    // The default 22 h interval: a key just added must not wait for its region's slot.
    let nodes = network(5, node_config).await;
    nodes[0]
        .run(|dht| {
            dht.start_providing(cid(7)).unwrap();
            None
        })
        .await;
    wait_all_announced(&nodes[0], 1).await;
}
