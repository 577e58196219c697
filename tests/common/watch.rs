//! A node under test (identify + kadence on 127.0.0.1 TCP) that the test drives itself while
//! other peers come and go: every swarm event is folded into [`Seen`], and the test waits, with
//! a deadline, until what was seen meets a condition. Peers that run in their own task can be
//! stopped and started again with the same identity and port.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;

/// Identify and kadence: the node under test, and kadence peers.
#[derive(NetworkBehaviour)]
pub struct Node {
    pub identify: identify::Behaviour,
    pub dht: kadence::Behaviour,
}

impl Node {
    /// Identify (the tests' protocol string, adjusted by `identify`) and kadence with `config`.
    pub fn new(
        key: &Keypair,
        config: kadence::Config,
        identify: impl FnOnce(identify::Config) -> identify::Config,
    ) -> Node {
        let identify_config = identify(identify::Config::new(
            "/kadence-test/1.0.0".into(),
            key.public(),
        ));
        Node {
            identify: identify::Behaviour::new(identify_config),
            dht: kadence::Behaviour::new(key.public().to_peer_id(), config),
        }
    }
}

/// What the node under test saw of other peers.
#[derive(Debug, Default)]
pub struct Seen {
    /// Addresses the swarm was told of, per peer (identify reports each once).
    pub addresses: HashMap<PeerId, Vec<Multiaddr>>,
    /// The protocol support last reported per peer: `false` for a DHT client.
    pub support: HashMap<PeerId, bool>,
    /// Peers with an open connection.
    pub connected: HashSet<PeerId>,
    /// Peers in the routing table (`RoutingUpdated`, until `PeerRemoved`).
    pub admitted: HashSet<PeerId>,
}

impl Seen {
    fn record(&mut self, event: SwarmEvent<NodeEvent>) {
        match event {
            SwarmEvent::NewExternalAddrOfPeer { peer_id, address } => {
                self.addresses.entry(peer_id).or_default().push(address);
            }
            SwarmEvent::ConnectionEstablished { peer_id, .. } => {
                self.connected.insert(peer_id);
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => {
                self.connected.remove(&peer_id);
            }
            SwarmEvent::Behaviour(NodeEvent::Dht(event)) => match event {
                kadence::Event::PeerProtocolSupport {
                    peer, supported, ..
                } => {
                    self.support.insert(peer, supported);
                }
                kadence::Event::RoutingUpdated { peer, .. } => {
                    self.admitted.insert(peer);
                }
                kadence::Event::PeerRemoved { peer, .. } => {
                    self.admitted.remove(&peer);
                }
                _ => {}
            },
            _ => {}
        }
    }
}

/// The node under test.
pub struct Watched {
    pub swarm: Swarm<Node>,
    pub id: PeerId,
    pub addr: Multiaddr,
    pub seen: Seen,
}

impl Watched {
    /// Starts the node on a free port.
    pub async fn start(
        config: kadence::Config,
        identify: impl FnOnce(identify::Config) -> identify::Config,
    ) -> Watched {
        Self::start_with_idle_timeout(config, identify, IDLE_TIMEOUT).await
    }

    /// Starts the node on a free port; its swarm closes connections idle for `idle`.
    pub async fn start_with_idle_timeout(
        config: kadence::Config,
        identify: impl FnOnce(identify::Config) -> identify::Config,
        idle: Duration,
    ) -> Watched {
        let (swarm, addr) =
            tcp_swarm_with_idle_timeout(Keypair::generate_ed25519(), 0, idle, |key| {
                Node::new(key, config, identify)
            })
            .await;
        Watched {
            id: *swarm.local_peer_id(),
            swarm,
            addr,
            seen: Seen::default(),
        }
    }

    /// Its address with `/p2p/<id>`, for peers to dial.
    pub fn p2p_addr(&self) -> Multiaddr {
        self.addr.clone().with_p2p(self.id).unwrap()
    }

    /// Drives the node until `condition` holds of what it saw; panics with `what` after `secs`.
    pub async fn until(&mut self, secs: u64, what: &str, condition: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !condition(&self.seen) {
            match tokio::time::timeout_at(deadline, self.swarm.select_next_some()).await {
                Ok(event) => self.seen.record(event),
                Err(_) => panic!("{what}: not within {secs} s; seen {:?}", self.seen),
            }
        }
    }

    /// Drives the node while `work` runs (a command to a peer that needs the node to answer).
    pub async fn during<F: Future>(&mut self, work: F) -> F::Output {
        let mut work = std::pin::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                event = self.swarm.select_next_some() => self.seen.record(event),
            }
        }
    }

    /// The addresses the routing table holds for `peer`.
    pub fn table_addresses(&self, peer: &PeerId) -> Option<Vec<Multiaddr>> {
        self.swarm
            .behaviour()
            .dht
            .routing_table()
            .addresses(peer)
            .map(<[_]>::to_vec)
    }
}

/// How long the swarms here keep idle connections by default.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// A swarm on 127.0.0.1 TCP with noise and yamux (as the Go peers speak), listening on `port`
/// (0: any free port), and its listen address.
pub async fn tcp_swarm<B>(
    key: Keypair,
    port: u16,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> (Swarm<B>, Multiaddr)
where
    B: NetworkBehaviour + Send,
    <B as NetworkBehaviour>::ToSwarm: Debug,
{
    tcp_swarm_with_idle_timeout(key, port, IDLE_TIMEOUT, behaviour).await
}

/// Like [`tcp_swarm`], closing connections idle for `idle`.
pub async fn tcp_swarm_with_idle_timeout<B>(
    key: Keypair,
    port: u16,
    idle: Duration,
    behaviour: impl FnOnce(&Keypair) -> B,
) -> (Swarm<B>, Multiaddr)
where
    B: NetworkBehaviour + Send,
    <B as NetworkBehaviour>::ToSwarm: Debug,
{
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(behaviour)
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(idle))
        .build();
    swarm
        .listen_on(format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap())
        .unwrap();
    let addr = super::within(10, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await;
    (swarm, addr)
}

/// A peer's swarm running in its own task until stopped.
pub struct Running(tokio::task::JoinHandle<()>);

impl Running {
    pub fn spawn<B>(swarm: Swarm<B>) -> Running
    where
        B: NetworkBehaviour + Send + 'static,
        <B as NetworkBehaviour>::ToSwarm: Debug + Send,
    {
        Running(tokio::spawn(swarm.loop_on_next()))
    }

    /// Stops the peer and waits until its swarm is dropped: its connections are closed and its
    /// port is free for the next start.
    pub async fn stop(self) {
        self.0.abort();
        let _ = self.0.await;
    }
}

/// The TCP port of a `/ip4/.../tcp/<port>` address.
pub fn port_of(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            libp2p::multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .expect("a TCP address")
}
