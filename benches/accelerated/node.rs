//! Nodes: a swarm in its own task, driven by closures, reporting the clients' events.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kadence::routing_table::KBucketTable;
use kadence::store::PersistentStore;
use kadence::{Event, MemoryStoreConfig};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId};
use tokio::sync::{mpsc, oneshot};

use crate::delay_stream::DelayedStream;
use crate::tally::Tally;
use crate::{PHASE_TIMEOUT, PROTOCOL};

#[derive(NetworkBehaviour)]
pub struct Peer {
    pub dht: kadence::Behaviour,
    identify: identify::Behaviour,
}

pub type Command = Box<dyn FnOnce(&mut Swarm<Peer>) + Send>;

pub struct Node {
    pub id: PeerId,
    pub commands: mpsc::UnboundedSender<Command>,
    /// The node's DHT events (operations, sweep, crawl), for the clients only.
    pub events: Option<mpsc::UnboundedReceiver<Event>>,
    pub task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Runs `f` on the node's swarm, in its task, and returns what it returned.
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<Peer>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |swarm| {
            let _ = tx.send(f(swarm));
        });
        self.commands.send(command).expect("node running");
        rx.await.expect("node answers")
    }

    /// The node's next DHT event, `None` after `timeout`.
    pub async fn event(&mut self, timeout: Duration) -> Option<Event> {
        let events = self.events.as_mut().expect("a client's events");
        tokio::time::timeout(timeout, events.recv()).await.ok()?
    }

    /// Waits for the node's crawl to finish: (crawl time, requests, peers in the table).
    pub async fn crawl_finished(&mut self) -> (Duration, u64, usize) {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while let Some(event) = self.event(deadline - Instant::now()).await {
            if let Event::CrawlFinished { stats, peers, .. } = event {
                return (stats.duration, stats.requests, peers);
            }
        }
        panic!("no crawl finished within {PHASE_TIMEOUT:?}");
    }

    /// Stops the node and waits until its swarm (and store) are dropped.
    pub async fn stop(self) {
        drop(self.commands);
        let _ = self.task.await;
    }
}

/// What one node is made of.
pub struct Spec<'a> {
    pub key: &'a Keypair,
    pub port: u64,
    pub delay: Duration,
    pub boot: Vec<(PeerId, Multiaddr)>,
    pub accelerated: bool,
    pub store: Option<PersistentStore>,
}

pub fn memory_addr(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

pub fn config(accelerated: bool) -> kadence::Config {
    // Stores large enough for every key of the run: the bench measures the client, not a
    // server refusing records.
    let store = MemoryStoreConfig {
        max_provider_keys: 1 << 22,
        max_provider_bytes: 1 << 32,
        ..MemoryStoreConfig::default()
    };
    let config = kadence::Config::new(PROTOCOL)
        .with_mode(Some(kadence::Mode::Server))
        .with_memory_store(store);
    if accelerated {
        config.accelerated()
    } else {
        config
    }
}

/// Builds a node's swarm, listening (so that others can dial it before it runs).
pub fn build(spec: Spec<'_>) -> Swarm<Peer> {
    let key = spec.key;
    let local = key.public().to_peer_id();
    let delay = spec.delay;
    let transport = MemoryTransport::default()
        .map(move |conn, _| DelayedStream::new(conn, delay))
        .upgrade(Version::V1)
        .authenticate(libp2p::noise::Config::new(key).expect("noise keys"))
        .multiplex(libp2p::yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed();
    let config = config(spec.accelerated);
    let dht = match spec.store {
        Some(store) => {
            let table = KBucketTable::new(local, config.kbuckets().clone());
            kadence::Behaviour::with_parts(local, config, table, store)
        }
        None => kadence::Behaviour::new(local, config),
    };
    let identify =
        identify::Behaviour::new(identify::Config::new("/bench/1.0.0".into(), key.public()));
    let mut swarm = Swarm::new(
        transport,
        Peer { dht, identify },
        local,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(30)),
    );
    let addr = memory_addr(spec.port);
    swarm.listen_on(addr.clone()).expect("memory listen");
    swarm.add_external_address(addr);
    for (peer, addr) in spec.boot {
        let _ = swarm.behaviour_mut().dht.add_address(peer, addr);
    }
    swarm
}

/// Runs the swarm in its own task; `client` nodes hand their DHT events to the bench.
pub fn spawn(mut swarm: Swarm<Peer>, tally: Arc<Tally>, client: bool) -> Node {
    let id = *swarm.local_peer_id();
    let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
    let (events_tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => { command(&mut swarm); continue; }
                    None => break,
                },
                event = swarm.select_next_some() => event,
            };
            let SwarmEvent::Behaviour(PeerEvent::Dht(event)) = event else {
                continue;
            };
            match event {
                Event::InboundRequest { peer, request, .. } => tally.record(&peer, request),
                Event::QueryFinished { .. }
                | Event::RegionReprovided(_)
                | Event::CrawlFinished { .. }
                    if client =>
                {
                    let _ = events_tx.send(event);
                }
                _ => {}
            }
        }
    });
    Node {
        id,
        commands,
        events: client.then_some(events),
        task,
    }
}
