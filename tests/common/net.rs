//! A network of kadence nodes (identify + DHT) over the memory transport, each driven by its own
//! task; tests talk to a node through commands.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kadence::{Event, QueryId, QueryProgress, QueryResult, WritesSummary};
use libp2p::swarm::{NetworkBehaviour, Swarm};
use libp2p::{identify, Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;
use tokio::sync::{mpsc, oneshot};

use super::TEST_PROTOCOL;

#[derive(NetworkBehaviour)]
pub struct DhtNode {
    identify: identify::Behaviour,
    pub dht: kadence::Behaviour,
}

type Operation = Box<dyn FnOnce(&mut kadence::Behaviour) -> Option<QueryId> + Send>;

/// What an operation produced.
#[derive(Debug)]
pub struct Outcome {
    pub result: Option<QueryResult>,
    pub progress: Vec<QueryProgress>,
}

/// A running node.
pub struct TestNode {
    pub id: PeerId,
    pub addr: Multiaddr,
    commands: mpsc::UnboundedSender<(Operation, oneshot::Sender<Outcome>)>,
    task: tokio::task::JoinHandle<()>,
    /// Optimistic writes that settled after their operation reported (`Event::WritesSettled`).
    settled: Arc<Mutex<Vec<(QueryId, WritesSummary)>>>,
}

/// The configuration every test node uses; `tweak` adjusts it.
pub fn node_config() -> kadence::Config {
    kadence::Config::new(TEST_PROTOCOL)
        .with_mode(Some(kadence::Mode::Server))
        .with_query_timeout(Duration::from_secs(20))
        .with_request_timeout(Duration::from_secs(5))
}

fn dht_node(key: &libp2p::identity::Keypair, config: kadence::Config) -> DhtNode {
    DhtNode {
        identify: identify::Behaviour::new(identify::Config::new(
            "/kadence-test/1.0.0".into(),
            key.public(),
        )),
        dht: kadence::Behaviour::new(key.public().to_peer_id(), config),
    }
}

impl TestNode {
    /// Starts a node on the memory transport; it learns `bootstrap` as a DHT server.
    pub async fn start(
        config: kadence::Config,
        bootstrap: Option<(PeerId, Multiaddr)>,
    ) -> TestNode {
        let mut swarm = Swarm::new_ephemeral_tokio(|key| dht_node(&key, config));
        let (addr, _) = swarm.listen().with_memory_addr_external().await;
        Self::spawn(swarm, addr, bootstrap)
    }

    /// Starts a node on 127.0.0.1 TCP with noise and yamux, as the Go peers speak.
    pub async fn start_tcp(
        config: kadence::Config,
        bootstrap: Option<(PeerId, Multiaddr)>,
    ) -> TestNode {
        Self::start_tcp_with(
            libp2p::identity::Keypair::generate_ed25519(),
            config,
            bootstrap,
        )
        .await
    }

    /// Like [`TestNode::start_tcp`], with a chosen identity.
    pub async fn start_tcp_with(
        key: libp2p::identity::Keypair,
        config: kadence::Config,
        bootstrap: Option<(PeerId, Multiaddr)>,
    ) -> TestNode {
        let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
            .with_tokio()
            .with_tcp(
                libp2p::tcp::Config::default(),
                libp2p::noise::Config::new,
                libp2p::yamux::Config::default,
            )
            .unwrap()
            .with_behaviour(|key| dht_node(key, config))
            .unwrap()
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let addr = loop {
            if let libp2p::swarm::SwarmEvent::NewListenAddr { address, .. } =
                swarm.next_swarm_event().await
            {
                break address;
            }
        };
        Self::spawn(swarm, addr, bootstrap)
    }

    fn spawn(
        mut swarm: Swarm<DhtNode>,
        addr: Multiaddr,
        bootstrap: Option<(PeerId, Multiaddr)>,
    ) -> TestNode {
        if let Some((peer, peer_addr)) = bootstrap {
            let _ = swarm.behaviour_mut().dht.add_address(peer, peer_addr);
        }
        let id = *swarm.local_peer_id();
        let (tx, rx) = mpsc::unbounded_channel();
        let settled = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn(drive(swarm, rx, settled.clone()));
        TestNode {
            id,
            addr,
            commands: tx,
            task,
            settled,
        }
    }

    /// The optimistic writes that settled so far, in order.
    pub fn settled_writes(&self) -> Vec<(QueryId, WritesSummary)> {
        self.settled.lock().unwrap().clone()
    }

    /// Runs `op` on the node's behaviour and waits for the query it starts (if any).
    pub async fn run(
        &self,
        op: impl FnOnce(&mut kadence::Behaviour) -> Option<QueryId> + Send + 'static,
    ) -> Outcome {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((Box::new(op), tx))
            .expect("node running");
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the operation finished in time")
            .expect("node running")
    }

    /// The providers of `key` a find-providers query from this node finds.
    #[allow(dead_code)] // Not every test binary that includes `common` uses it.
    pub async fn providers_of(&self, key: kadence::ProviderKey) -> HashSet<PeerId> {
        match self
            .succeed(move |dht| Some(dht.find_providers(key, None)))
            .await
        {
            QueryResult::FindProviders {
                result: Ok(providers),
                ..
            } => providers.into_iter().map(|p| p.id).collect(),
            other => panic!("not a find-providers result: {other:?}"),
        }
    }

    /// Waits until a find-providers query from this node finds `provider` for `key`
    /// (`present`), or no longer finds it; fails the test with `what` after 90 s.
    #[allow(dead_code)]
    pub async fn until_found(
        &self,
        key: kadence::ProviderKey,
        provider: PeerId,
        present: bool,
        what: &str,
    ) {
        let deadline = std::time::Instant::now() + Duration::from_secs(90);
        while self.providers_of(key.clone()).await.contains(&provider) != present {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Runs `op` like [`TestNode::run`] and fails the test unless it succeeded; its result.
    #[allow(dead_code)] // Not every test binary that includes `common` uses it.
    pub async fn succeed(
        &self,
        op: impl FnOnce(&mut kadence::Behaviour) -> Option<QueryId> + Send + 'static,
    ) -> QueryResult {
        let outcome = self.run(op).await;
        match outcome.result {
            Some(result) if result.error().is_none() => result,
            _ => panic!("the operation failed: {outcome:?}"),
        }
    }

    /// Whether the node's own store holds a provider record for `key`.
    pub async fn holds_providers_of(&self, key: &[u8]) -> bool {
        let (tx, rx) = oneshot::channel();
        let key = key.to_vec();
        self.run(move |dht| {
            let held = dht
                .store_mut()
                .providers(&key, std::time::SystemTime::now())
                .is_ok_and(|p| !p.is_empty());
            let _ = tx.send(held);
            None
        })
        .await;
        rx.await.expect("answered")
    }

    /// Stops the node, as if its process went away.
    pub fn stop(self) {
        self.task.abort();
    }
}

async fn drive(
    mut swarm: Swarm<DhtNode>,
    mut commands: mpsc::UnboundedReceiver<(Operation, oneshot::Sender<Outcome>)>,
    settled: Arc<Mutex<Vec<(QueryId, WritesSummary)>>>,
) {
    let mut pending: Vec<(QueryId, oneshot::Sender<Outcome>, Vec<QueryProgress>)> = Vec::new();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some((op, reply)) = command else { return };
                match op(&mut swarm.behaviour_mut().dht) {
                    Some(id) => pending.push((id, reply, Vec::new())),
                    None => {
                        let _ = reply.send(Outcome { result: None, progress: Vec::new() });
                    }
                }
            }
            // Not `next_swarm_event`: it panics after 10 s without an event, and a node of a
            // long test may rightly sit idle that long on a loaded machine.
            event = swarm.select_next_some() => {
                let libp2p::swarm::SwarmEvent::Behaviour(DhtNodeEvent::Dht(event)) = event else {
                    continue;
                };
                match event {
                    Event::QueryProgress { id, progress } => {
                        if let Some(p) = pending.iter_mut().find(|p| p.0 == id) {
                            p.2.push(progress);
                        }
                    }
                    Event::QueryFinished { id, result, .. } => {
                        if let Some(i) = pending.iter().position(|p| p.0 == id) {
                            let (_, reply, progress) = pending.remove(i);
                            let _ = reply.send(Outcome { result: Some(result), progress });
                        }
                    }
                    Event::WritesSettled { id, writes, .. } => {
                        settled.lock().unwrap().push((id, writes));
                    }
                    _ => {}
                }
            }
        }
    }
}

/// Starts `n` nodes, each bootstrapped from one started before it, then bootstraps them all.
pub async fn network(n: usize, config: impl Fn() -> kadence::Config) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..n {
        let bootstrap = (i > 0).then(|| {
            let b = &nodes[(i * 7919) % i];
            (b.id, b.addr.clone())
        });
        nodes.push(TestNode::start(config(), bootstrap).await);
    }
    for _round in 0..2 {
        for node in &nodes {
            node.run(|dht| dht.bootstrap().ok()).await;
        }
    }
    nodes
}

/// The providers streamed by a find-providers query.
pub fn providers_in(progress: &[QueryProgress]) -> HashSet<PeerId> {
    progress
        .iter()
        .flat_map(|p| match p {
            QueryProgress::ProvidersFound(found) => found.iter().map(|r| r.id).collect(),
            _ => Vec::new(),
        })
        .collect()
}
