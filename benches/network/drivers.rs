//! One node of each implementation: its swarm over the delayed memory transport, with identify
//! beside the DHT as every deployed node runs it, and a task that runs the bench's commands on
//! it and answers each when its query ends. What is common to both lives in `queries.rs`; a
//! driver only translates its implementation's events.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identify;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use libp2p_kad::store::MemoryStore;
use tokio::sync::mpsc;

use crate::crawl::CrawlLog;
use crate::delay::DelayedConn;
use crate::queries::{swarm_command, Command, Dht, Finished, Queries};

pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/kad/1.0.0");

/// kadence routing-table removals (`Event::PeerRemoved`) during the run.
pub static REMOVED: AtomicUsize = AtomicUsize::new(0);

/// Connections established by the dialling side, every node of every network: the new
/// connections the DHTs (and identify, which never dials by itself) made the nodes open.
pub static DIALS: AtomicU64 = AtomicU64::new(0);

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

/// What one node is made of, the same for every implementation.
pub struct NodeSpec<'a> {
    pub key: &'a Keypair,
    /// The node's access delay, paid on every read.
    pub delay: Duration,
    pub addr: Multiaddr,
    /// The peers (and addresses) the node starts from.
    pub boot: Vec<(PeerId, Multiaddr)>,
    /// The swarm's idle-connection timeout.
    pub idle: Duration,
    /// Set to make the node silent (see `delay.rs`).
    pub silent: Arc<AtomicBool>,
}

/// A running node, as the bench holds it.
pub struct Node {
    pub commands: mpsc::UnboundedSender<Command>,
    /// `None` once the node was stopped.
    task: Option<tokio::task::JoinHandle<()>>,
    /// Set to make the node silent from now on.
    pub silent: Arc<AtomicBool>,
    /// What its accelerated client's crawls did (empty for other nodes).
    pub crawl: Arc<Mutex<CrawlLog>>,
}

impl Node {
    /// Stops the node and waits until its swarm is dropped: its listener and connections
    /// close, and its memory is freed before anything else is measured.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

fn swarm<B: NetworkBehaviour>(spec: &NodeSpec<'_>, behaviour: B) -> Swarm<B> {
    let (key, delay, silent) = (spec.key, spec.delay, spec.silent.clone());
    let transport = MemoryTransport::default()
        .map(move |conn, _| DelayedConn::new(conn, delay, silent.clone()))
        .upgrade(Version::V1)
        .authenticate(libp2p::noise::Config::new(key).expect("noise keys"))
        .multiplex(libp2p::yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed();
    let swarm = Swarm::new(
        transport,
        behaviour,
        key.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(spec.idle),
    );
    listening(swarm, spec.addr.clone())
}

/// Listens on `addr` (announced as the node's external address, which libp2p-kad puts in
/// provider records) before anything runs: every node listens before any node dials.
fn listening<B: NetworkBehaviour>(mut swarm: Swarm<B>, addr: Multiaddr) -> Swarm<B> {
    swarm.listen_on(addr.clone()).expect("memory listen");
    swarm.add_external_address(addr);
    swarm
}

/// `accelerated`: the accelerated client on top of the same settings.
pub fn kadence_swarm(
    spec: NodeSpec<'_>,
    finish: kadence::LookupFinish,
    alpha: usize,
    accelerated: bool,
) -> Swarm<KadenceNode> {
    let key = spec.key;
    let mut config = kadence::Config::new(PROTOCOL)
        .with_mode(Some(kadence::Mode::Server))
        .with_lookup_finish(finish)
        .with_alpha(alpha);
    if accelerated {
        config = config.accelerated();
    }
    let behaviour = KadenceNode {
        dht: kadence::Behaviour::new(key.public().to_peer_id(), config),
        identify: identify(key),
    };
    let mut swarm = swarm(&spec, behaviour);
    for (peer, a) in spec.boot {
        let _ = swarm.behaviour_mut().dht.add_address(peer, a);
    }
    swarm
}

/// `alpha`: libp2p-kad's parallelism, `None` for its default (3).
pub fn kad_swarm(spec: NodeSpec<'_>, alpha: Option<usize>) -> Swarm<KadNode> {
    let key = spec.key;
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
    let mut swarm = swarm(&spec, behaviour);
    for (peer, a) in spec.boot {
        swarm.behaviour_mut().dht.add_address(&peer, a);
    }
    swarm
}

/// A node's behaviour: the DHT under test beside identify.
pub trait WithDht: NetworkBehaviour {
    type Dht: Dht;
    fn dht(&mut self) -> &mut Self::Dht;
}

impl WithDht for KadenceNode {
    type Dht = kadence::Behaviour;
    fn dht(&mut self) -> &mut Self::Dht {
        &mut self.dht
    }
}

impl WithDht for KadNode {
    type Dht = libp2p_kad::Behaviour<MemoryStore>;
    fn dht(&mut self) -> &mut Self::Dht {
        &mut self.dht
    }
}

/// The node's next swarm event, running the bench's commands that arrive meanwhile; `None`
/// once the bench let go of the node.
async fn next_event<N: WithDht>(
    swarm: &mut Swarm<N>,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    queries: &mut Queries<<N::Dht as Dht>::Id>,
) -> Option<SwarmEvent<N::ToSwarm>> {
    loop {
        tokio::select! {
            command = commands.recv() => {
                if let Some(command) = swarm_command(swarm, command?) {
                    queries.start(swarm.behaviour_mut().dht(), command);
                }
            }
            event = swarm.select_next_some() => return Some(event),
        }
    }
}

/// Runs a node in its own task: the bench's commands, and each swarm event handed to
/// `on_event` with the node's query bookkeeping.
fn spawn<N>(
    mut swarm: Swarm<N>,
    silent: Arc<AtomicBool>,
    crawl: Arc<Mutex<CrawlLog>>,
    mut on_event: impl FnMut(&mut Swarm<N>, SwarmEvent<N::ToSwarm>, &mut Queries<<N::Dht as Dht>::Id>)
        + Send
        + 'static,
) -> Node
where
    N: WithDht + Send + 'static,
    N::ToSwarm: Send,
    <N::Dht as Dht>::Id: Send,
{
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        let mut queries = Queries::new();
        while let Some(event) = next_event(&mut swarm, &mut rx, &mut queries).await {
            if let SwarmEvent::ConnectionEstablished { endpoint, .. } = &event {
                if endpoint.is_dialer() {
                    DIALS.fetch_add(1, Ordering::Relaxed);
                }
            }
            on_event(&mut swarm, event, &mut queries);
        }
    });
    Node {
        commands: tx,
        task: Some(task),
        silent,
        crawl,
    }
}

/// Connections the node has open now, both directions.
fn connections<N: NetworkBehaviour>(swarm: &Swarm<N>) -> usize {
    swarm.network_info().connection_counters().num_established() as usize
}

/// `silent`: the switch its transport was built with (`NodeSpec::silent`).
pub fn spawn_kadence(swarm: Swarm<KadenceNode>, silent: Arc<AtomicBool>) -> Node {
    use kadence::{Event, QueryProgress, QueryResult};
    let crawl = Arc::new(Mutex::new(CrawlLog::default()));
    let log = crawl.clone();
    spawn(swarm, silent, crawl, move |swarm, event, queries| {
        let event = match event {
            SwarmEvent::Behaviour(KadenceNodeEvent::Dht(event)) => event,
            // Every change of the connection count is an event: the peak while a crawl runs
            // is exact, not sampled.
            SwarmEvent::ConnectionEstablished { .. } => {
                log.lock().unwrap().connections(connections(swarm));
                return;
            }
            _ => return,
        };
        match event {
            Event::CrawlStarted { .. } => log.lock().unwrap().started(connections(swarm)),
            Event::CrawlFinished {
                stats,
                merge,
                peers,
                serving,
            } => log.lock().unwrap().finished(stats, merge, peers, serving),
            Event::PeerRemoved { .. } => {
                REMOVED.fetch_add(1, Ordering::Relaxed);
            }
            Event::QueryProgress {
                id,
                progress: QueryProgress::ProvidersFound(found),
            } => queries.providers_found(&id, found.iter().map(|r| r.id)),
            Event::QueryFinished { id, result, stats } => {
                let mut finished = Finished {
                    requests: stats.requests,
                    failures: stats.failures,
                    accelerated: Some(stats.accelerated),
                    ..Finished::default()
                };
                match result {
                    QueryResult::ClosestPeers {
                        result: Ok(peers), ..
                    } => {
                        finished.peers = peers.iter().map(|p| p.id).collect();
                    }
                    QueryResult::Provide { result: Ok(n), .. } => finished.provided = n > 0,
                    _ => {}
                }
                queries.finished(&id, finished);
            }
            _ => {}
        }
    })
}

/// `silent`: the switch its transport was built with (`NodeSpec::silent`).
pub fn spawn_kad(swarm: Swarm<KadNode>, silent: Arc<AtomicBool>) -> Node {
    use libp2p_kad::{Event, GetClosestPeersError, GetProvidersOk, QueryResult};
    let crawl = Arc::new(Mutex::new(CrawlLog::default()));
    spawn(swarm, silent, crawl, |swarm, event, queries| {
        let (id, result, stats, step) = match event {
            SwarmEvent::Behaviour(KadNodeEvent::Dht(Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            })) => (id, result, stats, step),
            SwarmEvent::Behaviour(KadNodeEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                if info.protocols.contains(&PROTOCOL) {
                    for addr in info.listen_addrs {
                        swarm.behaviour_mut().dht.add_address(&peer_id, addr);
                    }
                }
                return;
            }
            _ => return,
        };
        if let QueryResult::GetProviders(Ok(GetProvidersOk::FoundProviders { providers, .. })) =
            &result
        {
            queries.providers_found(&id, providers.iter().copied());
        }
        if !step.last {
            return;
        }
        let mut finished = Finished {
            requests: stats.num_requests(),
            failures: stats.num_failures(),
            ..Finished::default()
        };
        match result {
            QueryResult::GetClosestPeers(Ok(ok)) => {
                finished.peers = ok.peers.iter().map(|p| p.peer_id).collect();
            }
            QueryResult::GetClosestPeers(Err(GetClosestPeersError::Timeout { peers, .. })) => {
                finished.peers = peers.iter().map(|p| p.peer_id).collect()
            }
            QueryResult::StartProviding(result) => finished.provided = result.is_ok(),
            _ => {}
        }
        queries.finished(&id, finished);
    })
}
