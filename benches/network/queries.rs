//! The bench's commands, and the queries they wait on, for either implementation: each DHT
//! starts its queries through [`Dht`], and its driver turns the DHT's own events into
//! [`Queries::providers_found`] and [`Queries::finished`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use libp2p::swarm::{NetworkBehaviour, Swarm};
use libp2p::{Multiaddr, PeerId};
use libp2p_kad::store::{MemoryStore, RecordStore};
use libp2p_kad::RecordKey;
use tokio::sync::oneshot;

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
    /// Close every connection of the node.
    DisconnectAll(oneshot::Sender<()>),
    /// The peers in the node's routing table.
    TablePeers(oneshot::Sender<Vec<PeerId>>),
    /// For each (key, provider): whether the node's store holds that provider record.
    HeldProviders {
        records: Vec<(Vec<u8>, PeerId)>,
        reply: oneshot::Sender<Vec<bool>>,
    },
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
    /// Start a crawl now (the accelerated client); answers whether one started.
    StartCrawl(oneshot::Sender<bool>),
    /// A copy of the accelerated client's full table: every peer with its addresses.
    FullTable(oneshot::Sender<Vec<(PeerId, Vec<Multiaddr>)>>),
}

/// Operations of one kind that finished, and those of them whose lookup started from the
/// accelerated client's full table (`QueryStats::accelerated`), every node of the network.
pub struct Accelerated {
    pub finished: AtomicU64,
    pub accelerated: AtomicU64,
}

impl Accelerated {
    const fn new() -> Self {
        Self {
            finished: AtomicU64::new(0),
            accelerated: AtomicU64::new(0),
        }
    }

    fn count(&self, accelerated: Option<bool>) {
        if let Some(a) = accelerated {
            self.finished.fetch_add(1, Ordering::Relaxed);
            if a {
                self.accelerated.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// (finished, accelerated) so far.
    pub fn read(&self) -> (u64, u64) {
        (
            self.finished.load(Ordering::Relaxed),
            self.accelerated.load(Ordering::Relaxed),
        )
    }
}

/// kadence's lookups, provides and find-providers: how many were accelerated. Networks run one
/// after the other, so a run reads the difference over its phases.
pub static ACCELERATED_LOOKUPS: Accelerated = Accelerated::new();
pub static ACCELERATED_PROVIDES: Accelerated = Accelerated::new();
pub static ACCELERATED_FINDS: Accelerated = Accelerated::new();

/// The queries a command can start, in each implementation's own API.
pub trait Dht {
    type Id: Eq + Hash;
    /// `None` when it cannot start (no known peers).
    fn bootstrap(&mut self) -> Option<Self::Id>;
    fn lookup(&mut self, key: Vec<u8>) -> Self::Id;
    /// `None` when it cannot start.
    fn provide(&mut self, key: Vec<u8>) -> Option<Self::Id>;
    fn find_providers(&mut self, key: Vec<u8>) -> Self::Id;
    /// Every peer in the routing table.
    fn table_peers(&mut self) -> Vec<PeerId>;
    /// Whether the store holds `provider`'s record for `key`.
    fn holds_provider(&mut self, key: &[u8], provider: &PeerId) -> bool;
    /// Starts a crawl of the accelerated client; false when there is none or one runs.
    fn start_crawl(&mut self) -> bool;
    /// The accelerated client's full table, empty without one.
    fn full_table(&mut self) -> Vec<(PeerId, Vec<Multiaddr>)>;
}

impl Dht for kadence::Behaviour {
    type Id = kadence::QueryId;
    fn bootstrap(&mut self) -> Option<Self::Id> {
        kadence::Behaviour::bootstrap(self).ok()
    }
    fn lookup(&mut self, key: Vec<u8>) -> Self::Id {
        self.get_closest_peers(key)
    }
    fn provide(&mut self, key: Vec<u8>) -> Option<Self::Id> {
        kadence::Behaviour::provide(self, kadence::ProviderKey::from_multihash_bytes(key).ok()?)
            .ok()
    }
    fn find_providers(&mut self, key: Vec<u8>) -> Self::Id {
        kadence::Behaviour::find_providers(
            self,
            kadence::ProviderKey::from_multihash_bytes(key).expect("a multihash"),
            None,
        )
    }
    fn table_peers(&mut self) -> Vec<PeerId> {
        self.routing_table()
            .peers()
            .into_iter()
            .map(|p| p.id)
            .collect()
    }
    fn holds_provider(&mut self, key: &[u8], provider: &PeerId) -> bool {
        self.store_mut()
            .providers(key, SystemTime::now())
            .is_ok_and(|records| records.iter().any(|r| r.provider == *provider))
    }
    fn start_crawl(&mut self) -> bool {
        kadence::Behaviour::start_crawl(self)
    }
    fn full_table(&mut self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        kadence::Behaviour::full_table(self).map_or_else(Vec::new, |table| {
            table
                .iter()
                .map(|(id, addrs)| (*id, addrs.to_vec()))
                .collect()
        })
    }
}

impl Dht for libp2p_kad::Behaviour<MemoryStore> {
    type Id = libp2p_kad::QueryId;
    fn bootstrap(&mut self) -> Option<Self::Id> {
        libp2p_kad::Behaviour::bootstrap(self).ok()
    }
    fn lookup(&mut self, key: Vec<u8>) -> Self::Id {
        self.get_closest_peers(key)
    }
    fn provide(&mut self, key: Vec<u8>) -> Option<Self::Id> {
        self.start_providing(RecordKey::new(&key)).ok()
    }
    fn find_providers(&mut self, key: Vec<u8>) -> Self::Id {
        self.get_providers(RecordKey::new(&key))
    }
    fn table_peers(&mut self) -> Vec<PeerId> {
        self.kbuckets()
            .flat_map(|bucket| {
                bucket
                    .iter()
                    .map(|entry| *entry.node.key.preimage())
                    .collect::<Vec<_>>()
            })
            .collect()
    }
    fn holds_provider(&mut self, key: &[u8], provider: &PeerId) -> bool {
        self.store_mut()
            .providers(&RecordKey::new(&key))
            .iter()
            .any(|r| r.provider == *provider)
    }
    fn start_crawl(&mut self) -> bool {
        false
    }
    fn full_table(&mut self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        Vec::new()
    }
}

/// What a finished query reported, in the bench's terms.
#[derive(Default)]
pub struct Finished {
    /// The closest peers, for a lookup.
    pub peers: Vec<PeerId>,
    pub requests: u32,
    pub failures: u32,
    /// Whether a provide succeeded.
    pub provided: bool,
    /// kadence: whether the lookup started from the accelerated client's full table; `None`
    /// for libp2p-kad.
    pub accelerated: Option<bool>,
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

/// The commands under way on one node, by query.
pub struct Queries<Id> {
    pending: HashMap<Id, Pending>,
}

impl<Id: Eq + Hash> Queries<Id> {
    pub fn new() -> Self {
        Self {
            pending: HashMap::new(),
        }
    }

    /// Starts what `command` asks on `dht`. The swarm's own commands are answered by the
    /// driver ([`swarm_command`]) before they get here.
    pub fn start<D: Dht<Id = Id>>(&mut self, dht: &mut D, command: Command) {
        let (id, pending) = match command {
            Command::ConnectedPeers(_) | Command::DisconnectAll(_) => return,
            // Read off the node's state at once: no query to wait on.
            Command::TablePeers(reply) => {
                let _ = reply.send(dht.table_peers());
                return;
            }
            Command::StartCrawl(reply) => {
                let _ = reply.send(dht.start_crawl());
                return;
            }
            Command::FullTable(reply) => {
                let _ = reply.send(dht.full_table());
                return;
            }
            Command::HeldProviders { records, reply } => {
                let held = records
                    .iter()
                    .map(|(key, provider)| dht.holds_provider(key, provider))
                    .collect();
                let _ = reply.send(held);
                return;
            }
            Command::Bootstrap(reply) => match dht.bootstrap() {
                Some(id) => (id, Pending::Bootstrap(reply)),
                None => {
                    let _ = reply.send(());
                    return;
                }
            },
            Command::Lookup(key, reply) => (dht.lookup(key), Pending::Lookup(reply)),
            Command::Provide(key, reply) => match dht.provide(key) {
                Some(id) => (id, Pending::Provide(reply)),
                None => {
                    let _ = reply.send(false);
                    return;
                }
            },
            Command::FindProvider {
                key,
                provider,
                reply,
            } => {
                let started = Instant::now();
                let pending = Pending::FindProvider {
                    provider,
                    started,
                    reply: Some(reply),
                };
                (dht.find_providers(key), pending)
            }
        };
        self.pending.insert(id, pending);
    }

    /// Providers arrived: answers a FindProvider the first time its provider is among them.
    pub fn providers_found(&mut self, id: &Id, found: impl IntoIterator<Item = PeerId>) {
        if let Some(Pending::FindProvider {
            provider,
            started,
            reply,
        }) = self.pending.get_mut(id)
        {
            if found.into_iter().any(|p| p == *provider) {
                if let Some(reply) = reply.take() {
                    let _ = reply.send(Some(started.elapsed()));
                }
            }
        }
    }

    /// The query ended: answers its command.
    pub fn finished(&mut self, id: &Id, finished: Finished) {
        let counter = match self.pending.get(id) {
            Some(Pending::Lookup(_)) => Some(&ACCELERATED_LOOKUPS),
            Some(Pending::Provide(_)) => Some(&ACCELERATED_PROVIDES),
            Some(Pending::FindProvider { .. }) => Some(&ACCELERATED_FINDS),
            Some(Pending::Bootstrap(_)) | None => None,
        };
        if let Some(counter) = counter {
            counter.count(finished.accelerated);
        }
        match self.pending.remove(id) {
            Some(Pending::Bootstrap(reply)) => {
                let _ = reply.send(());
            }
            Some(Pending::Lookup(reply)) => {
                let _ = reply.send(Found {
                    peers: finished.peers,
                    requests: finished.requests,
                    failures: finished.failures,
                });
            }
            Some(Pending::Provide(reply)) => {
                let _ = reply.send(finished.provided);
            }
            Some(Pending::FindProvider {
                reply: Some(reply), ..
            }) => {
                let _ = reply.send(None);
            }
            Some(Pending::FindProvider { reply: None, .. }) | None => {}
        }
    }
}

/// Answers the commands about the swarm itself; hands back the ones for the DHT.
pub fn swarm_command<B: NetworkBehaviour>(
    swarm: &mut Swarm<B>,
    command: Command,
) -> Option<Command> {
    match command {
        Command::ConnectedPeers(reply) => {
            let _ = reply.send(swarm.network_info().num_peers());
        }
        Command::DisconnectAll(reply) => {
            let peers: Vec<PeerId> = swarm.connected_peers().copied().collect();
            for peer in peers {
                let _ = swarm.disconnect_peer_id(peer);
            }
            let _ = reply.send(());
        }
        other => return Some(other),
    }
    None
}
