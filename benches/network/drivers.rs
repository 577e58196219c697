//! One node of each implementation: its swarm over the delayed memory transport, with identify
//! beside the DHT as every deployed node runs it, and a task that runs the bench's commands on
//! it and answers each when its query ends.
//!
//! The two drivers have the same shape, but their query ids, events and results are different
//! types; two plain copies read better than one generic driver.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identify;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use libp2p_kad::store::MemoryStore;
use tokio::sync::{mpsc, oneshot};

use crate::delay::DelayedConn;

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/kad/1.0.0");

/// kadence routing-table removals (`Event::PeerRemoved`) during the run.
pub static REMOVED: AtomicUsize = AtomicUsize::new(0);

/// What one lookup returned.
pub struct Found {
    pub peers: Vec<PeerId>,
    pub requests: u32,
    pub failures: u32,
}

pub enum Command {
    Bootstrap(oneshot::Sender<()>),
    /// How many peers the node has a connection to.
    ConnectedPeers(oneshot::Sender<usize>),
    Lookup(Vec<u8>, oneshot::Sender<Found>),
    /// Announce the key once; answers whether the announcement reached any peer.
    Provide(Vec<u8>, oneshot::Sender<bool>),
    /// Look for the key's providers; answers how long it took until `provider` was among
    /// them, or `None` if the lookup ended without it.
    FindProvider {
        key: Vec<u8>,
        provider: PeerId,
        reply: oneshot::Sender<Option<Duration>>,
    },
}

/// A command waiting for its query to end.
enum Pending {
    Bootstrap(oneshot::Sender<()>),
    Lookup(oneshot::Sender<Found>),
    Provide(oneshot::Sender<bool>),
    FindProvider {
        provider: PeerId,
        started: Instant,
        reply: Option<oneshot::Sender<Option<Duration>>>,
    },
}

impl Pending {
    /// Providers arrived: answers a FindProvider the first time its provider is among them.
    fn providers_found(&mut self, found: impl IntoIterator<Item = PeerId>) {
        if let Pending::FindProvider {
            provider,
            started,
            reply,
        } = self
        {
            if found.into_iter().any(|p| p == *provider) {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Some(started.elapsed()));
                }
            }
        }
    }
}

/// A kadence node: kadence learns servers and their addresses from identify by itself.
#[derive(NetworkBehaviour)]
pub struct KadenceNode {
    dht: kadence::Behaviour,
    identify: identify::Behaviour,
}

/// A libp2p-kad node: the application adds identify's listen addresses of peers that
/// support the protocol, as libp2p-kad's documentation asks.
#[derive(NetworkBehaviour)]
pub struct KadNode {
    dht: libp2p_kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

fn identify(key: &Keypair) -> identify::Behaviour {
    identify::Behaviour::new(identify::Config::new("/bench/1.0.0".into(), key.public()))
}

pub struct Node {
    pub commands: mpsc::UnboundedSender<Command>,
    pub task: tokio::task::JoinHandle<()>,
}

fn swarm<B: NetworkBehaviour>(key: &Keypair, delay: Duration, behaviour: B) -> Swarm<B> {
    let transport = MemoryTransport::default()
        .map(move |conn, _| DelayedConn::new(conn, delay))
        .upgrade(Version::V1)
        .authenticate(libp2p::noise::Config::new(key).expect("noise keys"))
        .multiplex(libp2p::yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed();
    Swarm::new(
        transport,
        behaviour,
        key.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(60)),
    )
}

/// Listens on `addr` (announced as the node's external address, which libp2p-kad puts in
/// provider records) before anything runs: every node listens before any node dials.
fn listening<B: NetworkBehaviour>(mut swarm: Swarm<B>, addr: Multiaddr) -> Swarm<B> {
    swarm.listen_on(addr.clone()).expect("memory listen");
    swarm.add_external_address(addr);
    swarm
}

pub fn kadence_swarm(
    key: &Keypair,
    delay: Duration,
    addr: Multiaddr,
    boot: Vec<(PeerId, Multiaddr)>,
) -> Swarm<KadenceNode> {
    let config = kadence::Config::new(PROTOCOL).with_mode(Some(kadence::Mode::Server));
    let behaviour = KadenceNode {
        dht: kadence::Behaviour::new(key.public().to_peer_id(), config),
        identify: identify(key),
    };
    let mut swarm = listening(swarm(key, delay, behaviour), addr);
    for (peer, a) in boot {
        swarm.behaviour_mut().dht.add_address(peer, a);
    }
    swarm
}

pub fn kad_swarm(
    key: &Keypair,
    delay: Duration,
    addr: Multiaddr,
    boot: Vec<(PeerId, Multiaddr)>,
    alpha: Option<usize>,
) -> Swarm<KadNode> {
    let id = key.public().to_peer_id();
    let mut config = libp2p_kad::Config::new(PROTOCOL);
    if let Some(alpha) = alpha.and_then(std::num::NonZeroUsize::new) {
        config.set_parallelism(alpha);
    }
    let mut kad = libp2p_kad::Behaviour::with_config(id, MemoryStore::new(id), config);
    kad.set_mode(Some(libp2p_kad::Mode::Server));
    let behaviour = KadNode {
        dht: kad,
        identify: identify(key),
    };
    let mut swarm = listening(swarm(key, delay, behaviour), addr);
    for (peer, a) in boot {
        swarm.behaviour_mut().dht.add_address(&peer, a);
    }
    swarm
}

pub fn spawn_kadence(mut swarm: Swarm<KadenceNode>) -> Node {
    use kadence::{Event, QueryProgress, QueryResult};
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut pending: HashMap<kadence::QueryId, Pending> = HashMap::new();
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let dht = &mut swarm.behaviour_mut().dht;
                    match command {
                        None => return,
                        Some(Command::Bootstrap(reply)) => match dht.bootstrap() {
                            Ok(id) => { pending.insert(id, Pending::Bootstrap(reply)); }
                            Err(_) => { let _ = reply.send(()); }
                        },
                        Some(Command::ConnectedPeers(reply)) => {
                            let _ = reply.send(swarm.network_info().num_peers());
                        }
                        Some(Command::Lookup(key, reply)) => {
                            pending.insert(dht.get_closest_peers(key), Pending::Lookup(reply));
                        }
                        Some(Command::Provide(key, reply)) => match dht.provide(key) {
                            Ok(id) => { pending.insert(id, Pending::Provide(reply)); }
                            Err(_) => { let _ = reply.send(false); }
                        },
                        Some(Command::FindProvider { key, provider, reply }) => {
                            let started = Instant::now();
                            let id = dht.find_providers(key, None);
                            pending.insert(id, Pending::FindProvider { provider, started, reply: Some(reply) });
                        }
                    }
                }
                event = swarm.select_next_some() => match event {
                    SwarmEvent::Behaviour(KadenceNodeEvent::Dht(Event::PeerRemoved { .. })) => {
                        REMOVED.fetch_add(1, Ordering::Relaxed);
                    }
                    SwarmEvent::Behaviour(KadenceNodeEvent::Dht(Event::QueryProgress { id, progress: QueryProgress::ProvidersFound(found) })) => {
                        if let Some(p) = pending.get_mut(&id) {
                            p.providers_found(found.iter().map(|r| r.id));
                        }
                    }
                    SwarmEvent::Behaviour(KadenceNodeEvent::Dht(Event::QueryFinished { id, result, stats })) => {
                        match (pending.remove(&id), result) {
                            (Some(Pending::Bootstrap(reply)), _) => { let _ = reply.send(()); }
                            (Some(Pending::Lookup(reply)), result) => {
                                let peers = match result {
                                    QueryResult::ClosestPeers(Ok(peers)) => peers.iter().map(|p| p.id).collect(),
                                    _ => Vec::new(),
                                };
                                let _ = reply.send(Found { peers, requests: stats.requests, failures: stats.failures });
                            }
                            (Some(Pending::Provide(reply)), result) => {
                                let _ = reply.send(matches!(result, QueryResult::Provide(Ok(n)) if n > 0));
                            }
                            (Some(Pending::FindProvider { reply: Some(reply), .. }), _) => { let _ = reply.send(None); }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    Node { commands: tx, task }
}

pub fn spawn_kad(mut swarm: Swarm<KadNode>) -> Node {
    use libp2p_kad::{Event, GetClosestPeersError, GetProvidersOk, QueryResult, RecordKey};
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut pending: HashMap<libp2p_kad::QueryId, Pending> = HashMap::new();
        loop {
            tokio::select! {
                command = rx.recv() => {
                    let dht = &mut swarm.behaviour_mut().dht;
                    match command {
                        None => return,
                        Some(Command::Bootstrap(reply)) => match dht.bootstrap() {
                            Ok(id) => { pending.insert(id, Pending::Bootstrap(reply)); }
                            Err(_) => { let _ = reply.send(()); }
                        },
                        Some(Command::ConnectedPeers(reply)) => {
                            let _ = reply.send(swarm.network_info().num_peers());
                        }
                        Some(Command::Lookup(key, reply)) => {
                            pending.insert(dht.get_closest_peers(key), Pending::Lookup(reply));
                        }
                        Some(Command::Provide(key, reply)) => match dht.start_providing(RecordKey::new(&key)) {
                            Ok(id) => { pending.insert(id, Pending::Provide(reply)); }
                            Err(_) => { let _ = reply.send(false); }
                        },
                        Some(Command::FindProvider { key, provider, reply }) => {
                            let started = Instant::now();
                            let id = dht.get_providers(RecordKey::new(&key));
                            pending.insert(id, Pending::FindProvider { provider, started, reply: Some(reply) });
                        }
                    }
                }
                event = swarm.select_next_some() => {
                    let (id, result, stats, step) = match event {
                        SwarmEvent::Behaviour(KadNodeEvent::Dht(Event::OutboundQueryProgressed { id, result, stats, step })) => (id, result, stats, step),
                        SwarmEvent::Behaviour(KadNodeEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                            if info.protocols.contains(&PROTOCOL) {
                                for addr in info.listen_addrs {
                                    swarm.behaviour_mut().dht.add_address(&peer_id, addr);
                                }
                            }
                            continue;
                        }
                        _ => continue,
                    };
                    if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) = &result {
                        if let Some(p) = pending.get_mut(&id) {
                            p.providers_found(providers.iter().copied());
                        }
                    }
                    if !step.last {
                        continue;
                    }
                    match (pending.remove(&id), result) {
                        (Some(Pending::Bootstrap(reply)), _) => { let _ = reply.send(()); }
                        (Some(Pending::Lookup(reply)), result) => {
                            let peers = match result {
                                QueryResult::GetClosestPeers(Ok(ok)) => ok.peers.iter().map(|p| p.peer_id).collect(),
                                QueryResult::GetClosestPeers(Err(GetClosestPeersError::Timeout { peers, .. })) => peers.iter().map(|p| p.peer_id).collect(),
                                _ => Vec::new(),
                            };
                            let _ = reply.send(Found { peers, requests: stats.num_requests(), failures: stats.num_failures() });
                        }
                        (Some(Pending::Provide(reply)), result) => {
                            let _ = reply.send(matches!(result, QueryResult::StartProviding(Ok(_))));
                        }
                        (Some(Pending::FindProvider { reply: Some(reply), .. }), _) => { let _ = reply.send(None); }
                        _ => {}
                    }
                }
            }
        }
    });
    Node { commands: tx, task }
}
