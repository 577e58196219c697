//! A kadence node on TCP (noise, yamux, identify, ping), driven from other tasks by commands.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kadence::key::Key;
use kadence::{Event, QueryId, QueryProgress, QueryResult, QueryStats};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, Multiaddr, PeerId, Swarm};
use tokio::sync::{mpsc, oneshot, watch};

use crate::crawl::CrawlStatus;

#[derive(NetworkBehaviour)]
pub struct Node {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    pub dht: kadence::Behaviour,
}

/// What an operation produced.
pub struct Outcome {
    pub result: QueryResult,
    pub progress: Vec<QueryProgress>,
    pub stats: QueryStats,
}

type Operation = Box<dyn FnOnce(&mut Swarm<Node>) -> Option<QueryId> + Send>;
type Command = (Operation, oneshot::Sender<Option<Outcome>>);

pub fn build_swarm(
    key: Keypair,
    config: kadence::Config,
) -> Result<Swarm<Node>, Box<dyn std::error::Error>> {
    build_swarm_with(key, |key| {
        kadence::Behaviour::new(key.public().to_peer_id(), config)
    })
}

/// Like [`build_swarm`], with the DHT behaviour made by `dht` (e.g. with a persistent store).
pub fn build_swarm_with(
    key: Keypair,
    dht: impl FnOnce(&Keypair) -> kadence::Behaviour,
) -> Result<Swarm<Node>, Box<dyn std::error::Error>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| Node {
            identify: identify::Behaviour::new(identify::Config::new(
                "/kadence/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            dht: dht(key),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Listens on `addr` and returns the address the OS gave.
pub async fn listen(
    swarm: &mut Swarm<Node>,
    addr: Multiaddr,
) -> Result<Multiaddr, Box<dyn std::error::Error>> {
    swarm.listen_on(addr.clone()).map_err(|e| error_chain(&e))?;
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::NewListenAddr { address, .. } => return Ok(address),
            SwarmEvent::ListenerError { error, .. } => return Err(error_chain(&error)),
            SwarmEvent::ListenerClosed {
                reason: Err(error), ..
            } => return Err(error_chain(&error)),
            _ => {}
        }
    }
}

/// An error and its sources on one line: transport errors often display as "" and keep the
/// useful part (the `io::Error`) in their source.
pub fn error_chain(error: &dyn std::error::Error) -> Box<dyn std::error::Error> {
    let mut parts = vec![];
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.contains(&text) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ").into()
}

/// A running node.
pub struct Handle {
    pub id: PeerId,
    pub addr: Multiaddr,
    pub key: Keypair,
    /// The accelerated client's crawls, as the node's events tell them (never changes when
    /// the client is off).
    pub crawl: watch::Receiver<CrawlStatus>,
    commands: mpsc::UnboundedSender<Command>,
}

impl Handle {
    /// Runs the swarm in its own task.
    pub fn spawn(swarm: Swarm<Node>, addr: Multiaddr, key: Keypair) -> Handle {
        let (tx, rx) = mpsc::unbounded_channel();
        let (crawl_tx, crawl) = watch::channel(CrawlStatus::default());
        let id = *swarm.local_peer_id();
        tokio::spawn(run_node(swarm, rx, crawl_tx));
        Handle {
            id,
            addr,
            key,
            crawl,
            commands: tx,
        }
    }

    /// How many keys of the provide list have been announced, and the fewest peers any of
    /// them reached (0 when none has been announced yet).
    pub async fn provide_progress(&self, timeout: Duration) -> (usize, u16) {
        let progress = Arc::new(Mutex::new((0, 0)));
        let seen = progress.clone();
        self.run(timeout, move |swarm| {
            let list = swarm
                .behaviour_mut()
                .dht
                .provided_keys(&Key::from_hash([0; 32]), usize::MAX)
                .unwrap_or_default();
            let announced = list.iter().filter(|s| s.key.last_provided.is_some());
            let fewest = announced.clone().map(|s| s.key.peers).min().unwrap_or(0);
            *seen.lock().unwrap() = (announced.count(), fewest);
            None
        })
        .await;
        let progress = *progress.lock().unwrap();
        progress
    }

    /// Runs `op` on the node and waits for the query it starts (if any).
    pub async fn run(
        &self,
        timeout: Duration,
        op: impl FnOnce(&mut Swarm<Node>) -> Option<QueryId> + Send + 'static,
    ) -> Option<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.commands.send((Box::new(op), tx)).ok()?;
        tokio::time::timeout(timeout, rx).await.ok()?.ok()?
    }
}

async fn run_node(
    mut swarm: Swarm<Node>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    crawl: watch::Sender<CrawlStatus>,
) {
    type Pending = HashMap<QueryId, (oneshot::Sender<Option<Outcome>>, Vec<QueryProgress>)>;
    let mut pending: Pending = HashMap::new();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some((op, reply)) = command else { return };
                match op(&mut swarm) {
                    Some(id) => { pending.insert(id, (reply, Vec::new())); }
                    None => { let _ = reply.send(None); }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(NodeEvent::Dht(Event::QueryProgress { id, progress })) => {
                    if let Some((_, found)) = pending.get_mut(&id) {
                        found.push(progress);
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Dht(Event::QueryFinished { id, result, stats })) => {
                    if let Some((reply, progress)) = pending.remove(&id) {
                        let _ = reply.send(Some(Outcome { result, progress, stats }));
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Dht(event)) => {
                    // Updated in this task, so that an operation run here reads the status as
                    // of its own start (see `crawl::crawl_again`).
                    crawl.send_if_modified(|status| status.update(&event));
                }
                _ => {}
            }
        }
    }
}
