//! Nodes for the accelerated client's tests: each runs in its own task like `net::TestNode`,
//! but with a chosen identity, store, transport and idle timeout (a restart keeps the identity;
//! the crawl's connections must be seen closing), and it reports what the crawl tests look at:
//! each operation's [`QueryStats`], the crawl's events, the sweep's reports, the count of open
//! connections and the requests it answered.
//!
//! Memory-transport nodes speak noise rather than plaintext (what `new_ephemeral_tokio` uses):
//! plaintext is not among the dev-dependencies, and a node restarted with the same identity
//! cannot come from `new_ephemeral_tokio`. They talk to each other only.

#![allow(dead_code)]

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use kadence::key::Key;
use kadence::store::{
    Background, CrawlSnapshot, GcProgress, ProvidedKey, ProvidedPage, ProviderRecord, StoreError,
    ValueRecord,
};
use kadence::{
    Behaviour, CrawlProgress, CrawlStats, Event, InboundOutcome, KBucketConfig, KBucketTable,
    MemoryStore, MemoryStoreConfig, MessageType, ProviderStore, QueryId, QueryProgress,
    QueryResult, QueryStats, Record, RecordStore, Source, Store, SweepReport,
};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{identify, noise, yamux, Multiaddr, PeerId, Transport};
use tokio::sync::{mpsc, oneshot};

use crate::common::net::providers_in;
use crate::common::watch::{Node, NodeEvent};

/// The idle timeout of nodes whose connections the test does not watch: rust-libp2p's default.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(10);

/// What an operation produced.
#[derive(Debug)]
pub struct Done {
    pub result: QueryResult,
    pub stats: QueryStats,
    pub progress: Vec<QueryProgress>,
}

/// What a node reports besides its operations' results.
#[derive(Debug)]
pub enum Noted {
    CrawlStarted {
        seeds: usize,
    },
    CrawlProgress(CrawlProgress),
    CrawlFinished {
        stats: CrawlStats,
        peers: usize,
    },
    Region(SweepReport),
    /// Connections open after one opened or closed.
    Connections(usize),
    /// A request of another peer was handled.
    Inbound {
        peer: PeerId,
        request: MessageType,
        outcome: InboundOutcome,
    },
}

type Operation = Box<dyn FnOnce(&mut Behaviour) -> Option<QueryId> + Send>;
type Inspection = Box<dyn FnOnce(&mut Swarm<Node>) + Send>;
/// A query waiting for its result: where to send it, and its progress so far.
type Pending = (QueryId, oneshot::Sender<Option<Done>>, Vec<QueryProgress>);

enum Command {
    Run(Operation, oneshot::Sender<Option<Done>>),
    With(Inspection),
    /// Stop polling the swarm, keeping it: the node hangs, silent but not gone.
    Freeze,
}

/// A running node.
pub struct Peer {
    pub id: PeerId,
    pub key: Keypair,
    pub addr: Multiaddr,
    commands: mpsc::UnboundedSender<Command>,
    noted: mpsc::UnboundedReceiver<Noted>,
    /// Everything taken from `noted` so far, in order.
    pub history: Vec<Noted>,
    task: tokio::task::JoinHandle<()>,
}

/// Identify and a kadence behaviour made by `dht` for the key's peer id.
pub fn node(key: &Keypair, dht: impl FnOnce(PeerId) -> Behaviour) -> Node {
    Node {
        identify: identify::Behaviour::new(identify::Config::new(
            "/kadence-test/1.0.0".into(),
            key.public(),
        )),
        dht: dht(key.public().to_peer_id()),
    }
}

/// A kadence behaviour with `config` and an in-memory store.
pub fn in_memory(config: kadence::Config) -> impl FnOnce(PeerId) -> Behaviour {
    move |local| Behaviour::new(local, config)
}

/// A kadence behaviour with `config`, the default k-bucket table and `store`.
pub fn with_store(config: kadence::Config, store: impl Store) -> impl FnOnce(PeerId) -> Behaviour {
    move |local| {
        let table = KBucketTable::new(local, KBucketConfig::default());
        Behaviour::with_parts(local, config, table, store)
    }
}

impl Peer {
    /// Starts a node on the memory transport (noise, yamux) that closes connections idle for
    /// `idle`; it learns `bootstrap` as a DHT server.
    pub async fn memory(
        key: Keypair,
        idle: Duration,
        dht: impl FnOnce(PeerId) -> Behaviour,
        bootstrap: Option<(PeerId, Multiaddr)>,
    ) -> Peer {
        let transport = MemoryTransport::default()
            .upgrade(Version::V1)
            .authenticate(noise::Config::new(&key).expect("noise keys"))
            .multiplex(yamux::Config::default())
            .timeout(Duration::from_secs(20))
            .boxed();
        let behaviour = node(&key, dht);
        let mut swarm = Swarm::new(
            transport,
            behaviour,
            key.public().to_peer_id(),
            libp2p::swarm::Config::with_tokio_executor().with_idle_connection_timeout(idle),
        );
        swarm
            .listen_on("/memory/0".parse().unwrap())
            .expect("memory listener");
        let addr = crate::common::within(10, async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    return address;
                }
            }
        })
        .await;
        swarm.add_external_address(addr.clone());
        Self::spawn(key, swarm, addr, bootstrap)
    }

    /// Starts a node on 127.0.0.1 TCP (noise, yamux: as the Go peers speak).
    pub async fn tcp(
        key: Keypair,
        idle: Duration,
        dht: impl FnOnce(PeerId) -> Behaviour,
        bootstrap: Option<(PeerId, Multiaddr)>,
    ) -> Peer {
        let (mut swarm, addr) =
            crate::common::watch::tcp_swarm_with_idle_timeout(key.clone(), 0, idle, |key| {
                node(key, dht)
            })
            .await;
        swarm.add_external_address(addr.clone());
        Self::spawn(key, swarm, addr, bootstrap)
    }

    fn spawn(
        key: Keypair,
        mut swarm: Swarm<Node>,
        addr: Multiaddr,
        bootstrap: Option<(PeerId, Multiaddr)>,
    ) -> Peer {
        if let Some((peer, peer_addr)) = bootstrap {
            let _ = swarm.behaviour_mut().dht.add_address(peer, peer_addr);
        }
        let (commands, rx) = mpsc::unbounded_channel();
        let (noted_tx, noted) = mpsc::unbounded_channel();
        Peer {
            id: *swarm.local_peer_id(),
            key,
            addr,
            commands,
            noted,
            history: Vec::new(),
            task: tokio::spawn(drive(swarm, rx, noted_tx)),
        }
    }

    /// Runs `op` on the node's behaviour and waits (60 s at most) for the query it starts.
    pub async fn run(
        &self,
        op: impl FnOnce(&mut Behaviour) -> Option<QueryId> + Send + 'static,
    ) -> Done {
        self.try_run(op)
            .await
            .expect("the operation started a query")
    }

    /// Like [`Peer::run`]; `None` when `op` started no query.
    pub async fn try_run(
        &self,
        op: impl FnOnce(&mut Behaviour) -> Option<QueryId> + Send + 'static,
    ) -> Option<Done> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Run(Box::new(op), tx))
            .expect("node running");
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the operation finished in time")
            .expect("node running")
    }

    /// Runs `f` on the node's swarm, between two of its events, and returns what it returns.
    pub async fn with<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<Node>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let inspection: Inspection = Box::new(move |swarm| {
            let _ = tx.send(f(swarm));
        });
        self.commands
            .send(Command::With(inspection))
            .expect("node running");
        crate::common::within(30, rx).await.expect("node running")
    }

    /// Takes what the node noted, in order, until `f` picks something; panics with `what`
    /// after `secs`.
    pub async fn wait_for<T>(
        &mut self,
        secs: u64,
        what: &str,
        mut f: impl FnMut(&Noted) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            match tokio::time::timeout_at(deadline, self.noted.recv()).await {
                Ok(Some(noted)) => {
                    let picked = f(&noted);
                    self.history.push(noted);
                    if let Some(picked) = picked {
                        return picked;
                    }
                }
                Ok(None) => panic!("{what}: the node stopped"),
                Err(_) => panic!(
                    "{what}: not within {secs} s; noted {:?}",
                    self.history.iter().rev().take(20).collect::<Vec<_>>()
                ),
            }
        }
    }

    /// Moves what the node noted so far into `history`, without waiting.
    pub fn drain(&mut self) {
        while let Ok(noted) = self.noted.try_recv() {
            self.history.push(noted);
        }
    }

    /// Waits until at most `n` connections are open; panics after `secs`.
    pub async fn wait_connections_at_most(&mut self, n: usize, secs: u64) {
        let now = self.with(|s| open_connections(s)).await;
        if now <= n {
            return;
        }
        let what = format!("at most {n} connections open (were {now})");
        self.wait_for(secs, &what, |noted| match noted {
            Noted::Connections(open) if *open <= n => Some(()),
            _ => None,
        })
        .await
    }

    /// The peers of its full table.
    pub async fn full_table(&self) -> HashSet<PeerId> {
        self.with(|s| {
            s.behaviour()
                .dht
                .full_table()
                .map(|t| t.iter().map(|(id, _)| *id).collect())
                .unwrap_or_default()
        })
        .await
    }

    /// Whether its full table serves lookups now.
    pub async fn is_accelerated(&self) -> bool {
        self.with(|s| s.behaviour().dht.is_accelerated()).await
    }

    // The operations below run from the full table: each asserts that its lookup started
    // there and that it succeeded, and returns what it found.

    /// Runs `op` like [`Peer::run`] and asserts that its lookup started from the full table.
    pub async fn run_accelerated(
        &self,
        op: impl FnOnce(&mut Behaviour) -> Option<QueryId> + Send + 'static,
    ) -> Done {
        let done = self.run(op).await;
        assert!(done.stats.accelerated, "{done:?}");
        done
    }

    /// Finds `wanted` from the full table; the addresses found.
    pub async fn accelerated_find_peer(&self, wanted: PeerId) -> Vec<Multiaddr> {
        let done = self
            .run_accelerated(move |dht| Some(dht.find_peer(wanted)))
            .await;
        match done.result {
            QueryResult::FindPeer {
                result: Ok(peer), ..
            } if peer.id == wanted => peer.addrs,
            _ => panic!("{done:?}"),
        }
    }

    /// Puts `record` from the full table; how many peers stored it.
    pub async fn accelerated_put_value(&self, record: Record) -> usize {
        let done = self
            .run_accelerated(move |dht| dht.put_value(record, None).ok())
            .await;
        match done.result {
            QueryResult::PutValue {
                result: Ok(stored), ..
            } => stored,
            _ => panic!("{done:?}"),
        }
    }

    /// Gets the value under `key` from the full table, with `quorum`.
    pub async fn accelerated_get_value(
        &self,
        key: Vec<u8>,
        quorum: Option<NonZeroUsize>,
    ) -> Vec<u8> {
        let done = self
            .run_accelerated(move |dht| Some(dht.get_value(key, quorum)))
            .await;
        match done.result {
            QueryResult::GetValue {
                result: Ok(record), ..
            } => record.value,
            _ => panic!("{done:?}"),
        }
    }

    /// Provides `key` from the full table; to how many peers the record was written.
    pub async fn accelerated_provide(&self, key: Vec<u8>) -> usize {
        let done = self
            .run_accelerated(move |dht| {
                dht.provide(kadence::ProviderKey::try_from(key).unwrap())
                    .ok()
            })
            .await;
        match done.result {
            QueryResult::Provide {
                result: Ok(written),
                ..
            } => written,
            _ => panic!("{done:?}"),
        }
    }

    /// Looks for `key`'s providers from the full table and asserts that `provider` is found.
    pub async fn accelerated_find_provider(&self, key: Vec<u8>, provider: PeerId) {
        let done = self
            .run_accelerated(move |dht| {
                Some(dht.find_providers(kadence::ProviderKey::try_from(key).unwrap(), None))
            })
            .await;
        assert!(providers_in(&done.progress).contains(&provider), "{done:?}");
    }

    /// Whether its own store holds a value record under `key`.
    pub async fn holds_value(&self, key: &[u8]) -> bool {
        let key = key.to_vec();
        self.with(move |s| {
            s.behaviour_mut()
                .dht
                .store_mut()
                .get(&key, SystemTime::now())
                .is_ok_and(|r| r.is_some())
        })
        .await
    }

    /// Whether its own store holds a provider record of `provider` for `key`.
    pub async fn holds_provider(&self, key: &[u8], provider: PeerId) -> bool {
        let key = key.to_vec();
        self.with(move |s| {
            s.behaviour_mut()
                .dht
                .store_mut()
                .providers(&key, SystemTime::now())
                .is_ok_and(|p| p.iter().any(|r| r.provider == provider))
        })
        .await
    }

    /// Waits until its own store holds a provider record of `provider` for `key`: checked
    /// again after each ADD_PROVIDER it handles. False if not by `deadline`.
    pub async fn stores_provider(
        &mut self,
        key: &[u8],
        provider: PeerId,
        deadline: tokio::time::Instant,
    ) -> bool {
        loop {
            if self.holds_provider(key, provider).await {
                return true;
            }
            loop {
                match tokio::time::timeout_at(deadline, self.noted.recv()).await {
                    Ok(Some(noted)) => {
                        let write = matches!(
                            noted,
                            Noted::Inbound { peer, request: MessageType::AddProvider, .. }
                                if peer == provider
                        );
                        self.history.push(noted);
                        if write {
                            break;
                        }
                    }
                    Ok(None) | Err(_) => return false,
                }
            }
        }
    }

    /// Makes the node hang, as a process that stopped answering: its swarm is kept (dials
    /// of it are neither accepted nor refused) but no longer polled, until [`Peer::stop`].
    pub fn freeze(&self) {
        self.commands.send(Command::Freeze).expect("node running");
    }

    /// Stops the node and waits until its swarm (and store) is dropped.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

fn open_connections(swarm: &Swarm<Node>) -> usize {
    swarm.network_info().connection_counters().num_established() as usize
}

async fn drive(
    mut swarm: Swarm<Node>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    noted: mpsc::UnboundedSender<Noted>,
) {
    let mut pending: Vec<(QueryId, oneshot::Sender<Option<Done>>, Vec<QueryProgress>)> = Vec::new();
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                None => return,
                Some(Command::With(f)) => f(&mut swarm),
                Some(Command::Freeze) => std::future::pending::<()>().await,
                Some(Command::Run(op, reply)) => match op(&mut swarm.behaviour_mut().dht) {
                    Some(id) => pending.push((id, reply, Vec::new())),
                    None => {
                        let _ = reply.send(None);
                    }
                },
            },
            // Not `next_swarm_event`: it panics after 10 s without an event.
            event = swarm.select_next_some() => {
                let note = match event {
                    SwarmEvent::ConnectionEstablished { .. }
                    | SwarmEvent::ConnectionClosed { .. } => {
                        Some(Noted::Connections(open_connections(&swarm)))
                    }
                    SwarmEvent::Behaviour(NodeEvent::Dht(event)) => {
                        on_event(event, &mut pending)
                    }
                    _ => None,
                };
                if let Some(note) = note {
                    let _ = noted.send(note);
                }
            }
        }
    }
}

fn on_event(event: Event, pending: &mut Vec<Pending>) -> Option<Noted> {
    match event {
        Event::QueryProgress { id, progress } => {
            if let Some(p) = pending.iter_mut().find(|p| p.0 == id) {
                p.2.push(progress);
            }
            None
        }
        Event::QueryFinished { id, result, stats } => {
            if let Some(i) = pending.iter().position(|p| p.0 == id) {
                let (_, reply, progress) = pending.remove(i);
                let _ = reply.send(Some(Done {
                    result,
                    stats,
                    progress,
                }));
            }
            None
        }
        Event::CrawlStarted { seeds } => Some(Noted::CrawlStarted { seeds }),
        Event::CrawlProgress(progress) => Some(Noted::CrawlProgress(progress)),
        Event::CrawlFinished { stats, peers, .. } => Some(Noted::CrawlFinished { stats, peers }),
        Event::RegionReprovided(report) => Some(Noted::Region(report)),
        Event::InboundRequest {
            peer,
            request,
            outcome,
        } => Some(Noted::Inbound {
            peer,
            request,
            outcome,
        }),
        _ => None,
    }
}

/// The `n` peers of `peers` closest to `key` (by the XOR of their keys), closest first.
pub fn closest(peers: impl IntoIterator<Item = PeerId>, key: &[u8], n: usize) -> Vec<PeerId> {
    let target = Key::new(key);
    let mut all: Vec<PeerId> = peers.into_iter().collect();
    all.sort_by_key(|p| Key::from_peer(p).distance(&target));
    all.truncate(n);
    all
}

/// The crawled table a [`SnapshotStore`] saved, shared with the next node given it: a restart
/// that keeps only that, so that the restored node's k-bucket table starts empty.
#[derive(Debug, Clone, Default)]
pub struct SharedSnapshot(Arc<Mutex<Option<CrawlSnapshot>>>);

impl SharedSnapshot {
    /// The snapshot saved last.
    pub fn get(&self) -> Option<CrawlSnapshot> {
        self.0.lock().unwrap().clone()
    }
}

/// An in-memory store whose crawled table outlives it (in a [`SharedSnapshot`]); everything
/// else is a [`MemoryStore`]'s, and is lost with it, routing snapshot included.
pub struct SnapshotStore {
    inner: MemoryStore,
    saved: SharedSnapshot,
}

impl SnapshotStore {
    pub fn new(saved: SharedSnapshot) -> Self {
        Self {
            inner: MemoryStore::new(MemoryStoreConfig::default()),
            saved,
        }
    }
}

impl RecordStore for SnapshotStore {
    fn get(&mut self, key: &[u8], now: SystemTime) -> Result<Option<ValueRecord>, StoreError> {
        self.inner.get(key, now)
    }

    fn put(&mut self, record: ValueRecord) -> Result<(), StoreError> {
        self.inner.put(record)
    }

    fn put_from(&mut self, record: ValueRecord, source: Source) -> Result<(), StoreError> {
        self.inner.put_from(record, source)
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.inner.remove(key)
    }
}

impl ProviderStore for SnapshotStore {
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        self.inner.add_provider(record)
    }

    fn add_provider_from(
        &mut self,
        record: ProviderRecord,
        source: Source,
    ) -> Result<(), StoreError> {
        self.inner.add_provider_from(record, source)
    }

    fn add_providers(&mut self, records: Vec<ProviderRecord>) -> Result<usize, StoreError> {
        self.inner.add_providers(records)
    }

    fn providers(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        self.inner.providers(key, now)
    }

    fn remove_provider(&mut self, key: &[u8], provider: &PeerId) -> Result<(), StoreError> {
        self.inner.remove_provider(key, provider)
    }

    fn provider_keys(&mut self, from: &Key, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        self.inner.provider_keys(from, limit)
    }
}

impl Store for SnapshotStore {
    fn flush(&mut self) -> Result<(), StoreError> {
        self.inner.flush()
    }

    fn gc(&mut self, now: SystemTime, budget: usize) -> Result<GcProgress, StoreError> {
        self.inner.gc(now, budget)
    }

    fn add_provided(&mut self, key: &[u8], now: SystemTime) -> Result<(), StoreError> {
        self.inner.add_provided(key, now)
    }

    fn remove_provided(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.inner.remove_provided(key)
    }

    fn provided(&mut self, from: &Key, limit: usize) -> Result<Vec<ProvidedKey>, StoreError> {
        self.inner.provided(from, limit)
    }

    fn set_provided_status(
        &mut self,
        key: &[u8],
        at: SystemTime,
        peers: u16,
    ) -> Result<(), StoreError> {
        self.inner.set_provided_status(key, at, peers)
    }

    fn provided_len(&mut self) -> Result<u64, StoreError> {
        self.inner.provided_len()
    }

    fn save_crawl_snapshot(&mut self, snapshot: CrawlSnapshot) -> Result<(), StoreError> {
        *self.saved.0.lock().unwrap() = Some(snapshot);
        Ok(())
    }

    fn load_crawl_snapshot(&mut self) -> Result<Option<CrawlSnapshot>, StoreError> {
        Ok(self.saved.get())
    }

    fn start_flush(&mut self) -> Result<(), StoreError> {
        self.inner.start_flush()
    }

    fn start_gc(
        &mut self,
        now: SystemTime,
        budget: usize,
    ) -> Result<Option<GcProgress>, StoreError> {
        self.inner.start_gc(now, budget)
    }

    fn start_load_provided(
        &mut self,
        tag: u64,
        from: &Key,
        limit: usize,
    ) -> Result<Option<ProvidedPage>, StoreError> {
        self.inner.start_load_provided(tag, from, limit)
    }

    fn poll_background(&mut self, cx: &mut Context<'_>) -> Poll<Background> {
        self.inner.poll_background(cx)
    }
}
