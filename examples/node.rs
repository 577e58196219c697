//! A kadence node you can run.
//!
//! `cargo run --release --example node -- testnet [--nodes 10]` starts a local network of kadence
//! nodes on 127.0.0.1 TCP (noise, yamux, identify, ping) in one process, has every node send
//! every DHT message type to another over the real wire, and prints a table. It exits 0 only if
//! every exchange succeeded.
//!
//! Until the Server module lands, each node answers from a small in-example table (the peers
//! identify told it about, the values and providers it was sent); the wire, the streams and the
//! handler are the real ones.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kadence::{ConnectionType, Event, PeerRecord, Record, Request, RequestError, Response};
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

/// What the in-example stand-in server remembers.
#[derive(Default)]
struct Table {
    peers: HashMap<PeerId, Vec<Multiaddr>>,
    values: HashMap<Vec<u8>, Record>,
    providers: HashMap<Vec<u8>, Vec<PeerRecord>>,
}

impl Table {
    fn answer(&mut self, request: Request) -> Option<Response> {
        let closer_peers: Vec<PeerRecord> = self
            .peers
            .iter()
            .map(|(id, addrs)| PeerRecord {
                id: *id,
                addrs: addrs.clone(),
                connection: ConnectionType::Connected,
            })
            .take(20)
            .collect();
        Some(match request {
            Request::Ping => Response::Ping,
            Request::FindNode { .. } => Response::FindNode { closer_peers },
            Request::GetValue { key } => Response::GetValue {
                record: self.values.get(&key).cloned(),
                closer_peers,
            },
            Request::PutValue { record } => {
                self.values.insert(record.key.clone(), record.clone());
                Response::PutValue { record }
            }
            Request::GetProviders { key } => Response::GetProviders {
                providers: self.providers.get(&key).cloned().unwrap_or_default(),
                closer_peers,
            },
            Request::AddProvider { key, providers } => {
                self.providers.entry(key).or_default().extend(providers);
                return None;
            }
        })
    }
}

fn build_swarm() -> Result<Swarm<Node>, Box<dyn std::error::Error>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
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
                kadence::Config::new(PROTOCOL).with_mode(Some(kadence::Mode::Server)),
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Runs one node until the process ends: answers requests, forwards outbound ones.
async fn run_node(
    mut swarm: Swarm<Node>,
    mut commands: mpsc::UnboundedReceiver<(PeerId, Request, Reply)>,
) {
    let mut table = Table::default();
    let mut replies: HashMap<kadence::OutboundRequestId, Reply> = HashMap::new();
    loop {
        tokio::select! {
            Some((peer, request, reply)) = commands.recv() => {
                let id = swarm.behaviour_mut().dht.send_request(peer, request);
                replies.insert(id, reply);
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(NodeEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                    table.peers.insert(peer_id, info.listen_addrs);
                }
                SwarmEvent::Behaviour(NodeEvent::Dht(Event::InboundRequest { id, request, .. })) => {
                    if let (Some(id), Some(answer)) = (id, table.answer(request)) {
                        let _ = swarm.behaviour_mut().dht.respond(id, answer);
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Dht(Event::OutboundRequestFinished { id, result, .. })) => {
                    if let Some(reply) = replies.remove(&id) {
                        let _ = reply.send(result);
                    }
                }
                _ => {}
            }
        }
    }
}

fn requests_for(me: PeerId, my_addr: &Multiaddr, target: PeerId) -> Vec<(&'static str, Request)> {
    let key = format!("/example/{me}").into_bytes();
    let provided = target.to_bytes();
    vec![
        ("PING", Request::Ping),
        (
            "FIND_NODE",
            Request::FindNode {
                key: target.to_bytes(),
            },
        ),
        (
            "PUT_VALUE",
            Request::PutValue {
                record: Record {
                    key: key.clone(),
                    value: b"hello".to_vec(),
                    time_received: String::new(),
                },
            },
        ),
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
        Some(Response::GetValue { record, .. }) => {
            record.is_some_and(|r| r.value.as_slice() == b"hello")
        }
        Some(Response::GetProviders { providers, .. }) => providers.iter().any(|p| p.id == me),
        Some(Response::FindNode { closer_peers }) => !closer_peers.is_empty(),
        // PING, the PUT_VALUE echo, and ADD_PROVIDER (no response: the frame was flushed).
        _ => true,
    }
}

async fn testnet(nodes: usize) -> Result<bool, Box<dyn std::error::Error>> {
    let mut ids = Vec::new();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    let mut handles = Vec::new();
    for i in 0..nodes {
        let mut swarm = build_swarm()?;
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
        for (name, request) in requests_for(ids[i], &addrs[i], target) {
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
