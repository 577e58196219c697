//! A kadence node you can run.
//!
//! `cargo run --release --example node -- testnet [--nodes 10]` starts a local network of kadence
//! nodes on 127.0.0.1 TCP (noise, yamux, identify, ping) in one process, has every node send
//! every DHT message type to another over the real wire, and prints a table. It exits 0 only if
//! every exchange succeeded.
//!
//! Every node answers with kadence's Server module: closer peers from its routing table (filled
//! through identify), `/pk/` records it validated and stored, provider records.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kadence::{ConnectionType, Event, PeerRecord, Record, Request, RequestError, Response};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};

/// A private protocol name: the example never joins the public DHT.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/kadence-example/kad/1.0.0");

#[derive(NetworkBehaviour)]
struct Node {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    dht: kadence::Behaviour,
}

type Reply = oneshot::Sender<Result<Option<Response>, RequestError>>;

fn build_swarm(key: Keypair) -> Result<Swarm<Node>, Box<dyn std::error::Error>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| Node {
            identify: identify::Behaviour::new(identify::Config::new(
                "/kadence-example/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            dht: kadence::Behaviour::new(
                key.public().to_peer_id(),
                kadence::Config::new(PROTOCOL).with_mode(Some(kadence::Mode::Server)),
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Runs one node until the process ends: its Server answers requests; it forwards outbound ones.
async fn run_node(
    mut swarm: Swarm<Node>,
    mut commands: mpsc::UnboundedReceiver<(PeerId, Request, Reply)>,
) {
    let mut replies: HashMap<kadence::OutboundRequestId, Reply> = HashMap::new();
    loop {
        tokio::select! {
            Some((peer, request, reply)) = commands.recv() => {
                let id = swarm.behaviour_mut().dht.send_request(peer, request);
                replies.insert(id, reply);
            }
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(NodeEvent::Dht(Event::OutboundRequestFinished {
                    id,
                    result,
                    ..
                })) = event
                {
                    if let Some(reply) = replies.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
            }
        }
    }
}

fn requests_for(me: &Keypair, my_addr: &Multiaddr, target: PeerId) -> Vec<(&'static str, Request)> {
    // A `/pk/` record: our public key under our peer id, which every node's validator accepts.
    let record = Record::public_key(&me.public());
    let key = record.key.clone();
    let provided = target.to_bytes();
    let me = me.public().to_peer_id();
    vec![
        ("PING", Request::Ping),
        (
            "FIND_NODE",
            Request::FindNode {
                key: target.to_bytes(),
            },
        ),
        ("PUT_VALUE", Request::PutValue { record }),
        ("GET_VALUE", Request::GetValue { key }),
        (
            "ADD_PROVIDER",
            Request::AddProvider {
                key: provided.clone(),
                providers: vec![PeerRecord {
                    id: me,
                    addrs: vec![my_addr.clone()],
                    connection: ConnectionType::Connected,
                }],
            },
        ),
        ("GET_PROVIDERS", Request::GetProviders { key: provided }),
    ]
}

/// Whether a response shows the request really took effect on the remote.
fn answers_as_expected(me: PeerId, response: Option<Response>) -> bool {
    match response {
        Some(Response::GetValue { record, .. }) => record.is_some(),
        Some(Response::GetProviders { providers, .. }) => providers.iter().any(|p| p.id == me),
        Some(Response::FindNode { closer_peers }) => !closer_peers.is_empty(),
        // PING, the PUT_VALUE echo, and ADD_PROVIDER (no response: the frame was flushed).
        _ => true,
    }
}

async fn testnet(nodes: usize) -> Result<bool, Box<dyn std::error::Error>> {
    let mut ids = Vec::new();
    let mut keys = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let mut handles = Vec::new();
    for i in 0..nodes {
        let key = Keypair::generate_ed25519();
        keys.push(key.clone());
        let mut swarm = build_swarm(key)?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        // A star around node 0 plus a chain: every node is reachable, some through others.
        for &j in [0, i.saturating_sub(1)].iter().filter(|&&j| j != i) {
            swarm.dial(addrs[j].clone())?;
        }
        ids.push(*swarm.local_peer_id());
        addrs.push(addr);
        let (tx, rx) = mpsc::unbounded_channel();
        handles.push(tx);
        tokio::spawn(run_node(swarm, rx));
    }
    println!("started {nodes} nodes on 127.0.0.1; every node sends every message type to its neighbour\n");
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut stats: Vec<(&'static str, usize, usize, Vec<Duration>)> = Vec::new();
    for i in 0..nodes {
        let target = ids[(i + 1) % nodes];
        for (name, request) in requests_for(&keys[i], &addrs[i], target) {
            let start = Instant::now();
            let (tx, rx) = oneshot::channel();
            handles[i].send((target, request, tx))?;
            let ok = match rx.await {
                Ok(Ok(response)) => answers_as_expected(ids[i], response),
                _ => false,
            };
            let entry = match stats.iter_mut().find(|s| s.0 == name) {
                Some(entry) => entry,
                None => {
                    stats.push((name, 0, 0, Vec::new()));
                    stats.last_mut().expect("just pushed")
                }
            };
            entry.1 += usize::from(ok);
            entry.2 += 1;
            entry.3.push(start.elapsed());
        }
    }

    println!("{:<14} {:>9} {:>12}", "operation", "ok", "p50 latency");
    let mut all_ok = true;
    for (name, ok, total, mut latencies) in stats {
        latencies.sort();
        let p50 = latencies[latencies.len() / 2];
        println!("{name:<14} {:>9} {:>10.2?}", format!("{ok}/{total}"), p50);
        all_ok &= ok == total;
    }
    Ok(all_ok)
}

fn usage() -> ! {
    eprintln!("usage: node testnet [--nodes N]");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args.split_first().unwrap_or_else(|| usage());
    let nodes = match rest {
        [] => 10,
        [flag, n] if flag == "--nodes" => match n.parse::<usize>() {
            Ok(n) if n >= 2 => n,
            _ => {
                eprintln!("error: --nodes takes a number of at least 2, got {n:?}");
                std::process::exit(2);
            }
        },
        _ => usage(),
    };
    if command != "testnet" {
        usage();
    }
    match testnet(nodes).await {
        Ok(true) => println!("\nall operations succeeded"),
        Ok(false) => {
            eprintln!("\nerror: some operations failed");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
