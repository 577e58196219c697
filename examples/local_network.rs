//! A small DHT network on 127.0.0.1 doing every operation through the async [`kadence::Handle`],
//! then the Prometheus metrics of one node, scraped once:
//!
//! ```sh
//! cargo run --example local_network --features metrics
//! ```
//!
//! Each node is a swarm of identify + kadence driven by its own task; the application talks to
//! the DHT through handles only, from the main task.

use std::error::Error;
use std::time::Duration;

use futures::StreamExt;
use kadence::ipns::{self, IpnsRecord};
use kadence::{Handle, ProviderKey};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use prometheus_client::registry::Registry;

/// A private network's protocol: nodes of the public Amino DHT never meet these.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/local-example/kad/1.0.0");
const NODES: usize = 8;

#[derive(NetworkBehaviour)]
struct Node {
    identify: identify::Behaviour,
    dht: kadence::Behaviour,
}

/// A running node: who it is, where it listens, and the handle on its DHT.
struct Running {
    id: PeerId,
    addr: Multiaddr,
    dht: Handle,
    key: Keypair,
}

/// Starts a node on 127.0.0.1 and drives its swarm in a task of its own.
async fn start(registry: Option<&mut Registry>) -> Result<Running, Box<dyn Error>> {
    let key = Keypair::generate_ed25519();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key.clone())
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| Node {
            // identify tells kadence which peers serve the DHT.
            identify: identify::Behaviour::new(identify::Config::new(
                "/local-example/1.0.0".into(),
                key.public(),
            )),
            dht: kadence::Behaviour::new(key.public().to_peer_id(), kadence::Config::new(PROTOCOL)),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build();
    if let Some(registry) = registry {
        swarm.behaviour_mut().dht.register_metrics(registry);
    }
    swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    // Nothing confirms an external address on 127.0.0.1, and in automatic mode a node without
    // one stays a client that serves nobody: say where this node is reached (or pick
    // `Mode::Server` in its Config).
    swarm.add_external_address(addr.clone());
    let dht = swarm.behaviour().dht.handle();
    let id = *swarm.local_peer_id();
    // The results come through the handles: the events are not needed here.
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    Ok(Running { id, addr, dht, key })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    // Node 1's metrics are scraped at the end.
    let mut registry = Registry::default();
    let mut nodes = vec![start(None).await?, start(Some(&mut registry)).await?];
    for _ in 2..NODES {
        nodes.push(start(None).await?);
    }
    // Every other node knows the first; a bootstrap fills its routing table from there. The
    // first has nobody to start from (its bootstrap() fails with NoKnownPeers): it learns of
    // the others as they connect.
    let (first, first_addr) = (nodes[0].id, nodes[0].addr.clone());
    for node in &nodes[1..] {
        node.dht.add_address(first, first_addr.clone()).await?;
        let answered = node.dht.bootstrap().await?;
        println!("{}: bootstrapped, {answered} peers answered", node.id);
    }

    // FindClosestPeers and FindPeer.
    let target = nodes[NODES - 1].id;
    let closest = nodes[1].dht.get_closest_peers(target.to_bytes()).await?;
    println!("closest peers to {target}: {}", closest.len());
    let found = nodes[2].dht.find_peer(target).await?;
    println!("find peer: {} at {:?}", found.id, found.addrs);

    // PutValue / GetValue: node 3 publishes its IPNS name, node 6 resolves it.
    let name = nodes[3].id;
    let record = IpnsRecord::builder("/ipfs/bafkqaaa")
        .sequence(1)
        .valid_for(Duration::from_secs(3600))
        .sign(&nodes[3].key)?;
    let stored = nodes[3]
        .dht
        .put_value(record.to_dht_record(&name), None)
        .await?;
    println!("put value: stored at {stored} peers");
    let got = nodes[6]
        .dht
        .get_value(ipns::routing_key(&name), None)
        .await?;
    let resolved = IpnsRecord::decode(&got.value)?;
    println!(
        "get value: {name} -> {}",
        String::from_utf8_lossy(resolved.value())
    );

    // Provide / FindProviders: the key of content is its multihash.
    let content = ProviderKey::sha2_256(b"hello, kadence");
    let written = nodes[4].dht.provide(content.clone()).await?;
    println!("provide: announced to {written} peers");
    let mut providers = nodes[5].dht.find_providers(content, None);
    while let Some(provider) = providers.next().await {
        println!("find providers: {}", provider?.id);
    }

    // StartProvide / ProvideList / StopProvide: a key kept announced.
    let kept = ProviderKey::sha2_256(b"kept announced");
    nodes[2].dht.start_providing(kept.clone()).await?;
    let listed = nodes[2]
        .dht
        .provided_keys(kadence::key::Key::from_hash([0; 32]), 10)
        .await?;
    println!("provided keys: {}", listed.len());
    nodes[2].dht.stop_providing(kept).await?;

    // Node 1's metrics, as Prometheus would scrape them (a few families shown). Counters move
    // as things happen; gauges (table and store sizes) are read at most once a second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    for line in text.lines().filter(|l| {
        l.starts_with("kadence_queries_total")
            || l.starts_with("kadence_routing_table_peers ")
            || l.starts_with("kadence_inbound_requests_total")
            || l.starts_with("kadence_store_records")
    }) {
        println!("metrics: {line}");
    }
    Ok(())
}
