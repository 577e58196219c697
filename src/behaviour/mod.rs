//! [`Behaviour`]: the DHT as a libp2p [`NetworkBehaviour`]. Glue only: it routes swarm and
//! handler events into the modules (network, routing table, server) and drains their actions
//! into [`ToSwarm`].

use std::collections::VecDeque;

use fnv::{FnvHashMap, FnvHashSet};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, NotifyHandler, ToSwarm};
use libp2p::{Multiaddr, PeerId};

use crate::config::Config;
use crate::event::Event;
use crate::mode::{Mode, ModeState};
use crate::network::dispatch::{OutboundAction, OutboundRequests};
use crate::network::handler::HandlerIn;
use crate::network::message::{Request, Response};
use crate::network::{OutboundRequestId, RequestError};
use crate::provider::Provider;
use crate::routing::accelerated::Accelerated;
use crate::routing::addresses::{scope_of_connection, AddressPolicy, Scope};
use crate::routing::query::QueryPool;
use crate::routing::QueryId;
use crate::routing_table::maintenance::Maintenance;
use crate::routing_table::{KBucketTable, RoutingTable};
use crate::server::{DecisionId, Server, ServerAction, ServerSettings, UnknownDecision};
use crate::store::{Background, GcProgress, MemoryStore, Store, StoreError};

/// How often the routing table is asked for peers due a liveness check.
const LIVENESS_TICK: Duration = Duration::from_secs(5);
/// How often the routing table is saved to the store (a persistent store keeps it for restarts).
const SNAPSHOT_TICK: Duration = Duration::from_secs(60);

/// Who sent an outbound request, recorded when it is sent: its outcome goes back there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// [`Behaviour::send_request`]: reported as [`Event::OutboundRequestFinished`].
    Application,
    /// A DHT operation's lookup or writes.
    Query,
    /// An announcement of the reprovide sweep.
    Sweep,
    /// A liveness check of the routing table.
    Check,
    /// A request of the accelerated client's crawl.
    Crawl,
}

/// The kadence DHT behaviour. Compose it into your swarm's behaviour with
/// `#[derive(NetworkBehaviour)]`, beside `identify` (which tells it who serves the DHT).
pub struct Behaviour {
    local: PeerId,
    config: Config,
    mode: ModeState,
    /// The swarm's listen addresses, and where this node says it can be reached.
    listen_addrs: Vec<Multiaddr>,
    local_addrs: Vec<Multiaddr>,
    outbound: OutboundRequests,
    /// Which addresses the DHT dials, and how many per peer.
    addresses: AddressPolicy,
    maintenance: Maintenance,
    server: Server,
    liveness_tick: Delay,
    /// When `liveness_tick` is due: how late it fires tells whether the node is overloaded.
    liveness_due: Instant,
    /// Dials the DHT made itself, still under way: only their failures may evict a peer.
    own_dials: FnvHashSet<ConnectionId>,
    flush_tick: Delay,
    gc_tick: Delay,
    /// A GC pass is under way: one bounded step per poll until it completes.
    gc_running: bool,
    /// A GC step runs in the store's background; its outcome comes from `poll_background`.
    gc_waiting: bool,
    snapshot_tick: Delay,
    queries: QueryPool,
    /// Refresh lookups: run for the table's sake, not reported.
    internal_queries: FnvHashSet<QueryId>,
    query_timer: Delay,
    refresh_tick: Delay,
    /// The first poll bootstraps when the table already knows peers (snapshot, add_address).
    started: bool,
    provider: Provider,
    sweep_tick: Delay,
    /// Outbound requests in flight, by who sent them.
    owners: FnvHashMap<OutboundRequestId, Owner>,
    /// The accelerated client's full table and crawl, when it is on.
    accelerated: Option<Accelerated>,
    crawl_timer: Delay,
    /// An outcome reached the crawl, or a crawl was asked for: poll it without waiting for
    /// its timer.
    crawl_due: bool,
    actions: VecDeque<ToSwarm<Event, HandlerIn>>,
    /// Woken when an API call queues an action outside of `poll`.
    waker: Option<Waker>,
    #[cfg(feature = "metrics")]
    metrics: Option<metrics::MetricsState>,
    /// The commands of the behaviour's [`Handle`](crate::Handle)s and their waiting results.
    handle_driver: crate::handle::driver::Driver,
}

impl Behaviour {
    /// A DHT node with the default routing table ([`KBucketTable`]) and in-memory stores.
    /// Use [`Config::amino`] for the public IPFS DHT.
    pub fn new(local: PeerId, config: Config) -> Self {
        let table = KBucketTable::new(local, config.kbuckets.clone());
        let store = MemoryStore::new(config.store);
        Self::with_parts(local, config, table, store)
    }

    /// A DHT node with your own routing table and store (a [`PersistentStore`] for records
    /// that survive restarts).
    ///
    /// [`PersistentStore`]: crate::store::PersistentStore
    pub fn with_parts(
        local: PeerId,
        config: Config,
        table: impl RoutingTable,
        store: impl Store,
    ) -> Self {
        let settings = ServerSettings {
            k: config.kbuckets.k,
            max_message_size: config.max_message_size,
            max_answer_size: config.max_answer_size,
            max_provider_addrs: config.max_provider_addrs,
            lifetimes: config.lifetimes,
            manual_approval: config.manual_store_approval,
            max_pending_decisions: config.max_pending_store_decisions,
        };
        let validators = config.validators.clone();
        let mut store = store;
        let mut table = table;
        Self::restore_routing_snapshot(&mut store, &mut table, &config);
        let provider = provide::new_provider(config.kbuckets.k, &config, &mut store);
        let accelerated = config.accelerated.clone().map(|accelerated| {
            let mut accelerated = Accelerated::new(local, accelerated, Instant::now());
            Self::restore_crawl_snapshot(&mut accelerated, &mut store);
            accelerated
        });
        Self {
            local,
            mode: ModeState::new(config.mode),
            listen_addrs: Vec::new(),
            local_addrs: Vec::new(),
            outbound: OutboundRequests::new(
                config.max_pending_requests,
                config.max_dials,
                config.max_dial_addresses_per_peer,
            ),
            addresses: AddressPolicy::new(config.max_dial_addresses_per_peer),
            maintenance: Maintenance::new(
                Box::new(table),
                config.kbuckets.max_addresses_per_peer,
                config.address_book_size,
                config.max_liveness_checks,
                config.max_kept_connections,
                config.request_timeout,
            ),
            server: Server::new(settings, Box::new(store), validators),
            liveness_tick: Delay::new(LIVENESS_TICK),
            liveness_due: Instant::now() + LIVENESS_TICK,
            own_dials: FnvHashSet::default(),
            flush_tick: Delay::new(config.store_flush_interval),
            gc_tick: Delay::new(config.gc_interval),
            gc_running: false,
            gc_waiting: false,
            snapshot_tick: Delay::new(SNAPSHOT_TICK),
            queries: QueryPool::default(),
            internal_queries: FnvHashSet::default(),
            query_timer: Delay::new(Duration::from_secs(3600)),
            refresh_tick: Delay::new(config.refresh_interval.unwrap_or(Duration::from_secs(3600))),
            started: false,
            provider,
            sweep_tick: Delay::new(Duration::from_secs(1)),
            owners: FnvHashMap::default(),
            accelerated,
            crawl_timer: Delay::new(Duration::ZERO),
            crawl_due: true,
            actions: VecDeque::new(),
            waker: None,
            #[cfg(feature = "metrics")]
            metrics: None,
            handle_driver: crate::handle::driver::Driver::new(config.handle_queue),
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The local peer id.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.mode.current()
    }

    /// Fixes the mode, or with `None` makes it automatic (server while the swarm has a confirmed
    /// external address). Takes effect on every open connection at once.
    pub fn set_mode(&mut self, mode: Option<Mode>) {
        if let Some(changed) = self.mode.set(mode) {
            self.on_mode_changed(changed);
            self.wake();
        }
    }

    /// The routing table.
    pub fn routing_table(&self) -> &dyn RoutingTable {
        self.maintenance.table()
    }

    /// The record store (value and provider records).
    pub fn store_mut(&mut self) -> &mut dyn Store {
        self.server.store_mut()
    }

    /// Sends one request to `peer` and reports the outcome as
    /// [`Event::OutboundRequestFinished`]. Dials the peer if no connection is open: at the
    /// routing table's addresses (at most
    /// [`Config::with_max_dial_addresses_per_peer`](crate::Config::with_max_dial_addresses_per_peer)),
    /// or, for a peer the table does not hold, at those of the swarm's other behaviours.
    ///
    /// This is the raw protocol; the DHT operations are built on it.
    pub fn send_request(&mut self, peer: PeerId, request: Request) -> OutboundRequestId {
        let id = self.send(peer, Vec::new(), request);
        self.wake();
        id
    }

    /// Stores a write that waits for approval (see [`Event::StoreRequest`]); a PUT_VALUE is
    /// then echoed to its sender.
    pub fn approve_store(&mut self, id: DecisionId) -> Result<(), UnknownDecision> {
        let actions = self.server.decide(id, true)?;
        self.apply_server(actions);
        self.wake();
        Ok(())
    }

    /// Refuses a write that waits for approval: nothing is stored, a PUT_VALUE stream is reset.
    pub fn reject_store(&mut self, id: DecisionId) -> Result<(), UnknownDecision> {
        let actions = self.server.decide(id, false)?;
        self.apply_server(actions);
        self.wake();
        Ok(())
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    fn send(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, request: Request) -> OutboundRequestId {
        let addrs = self.or_known_addresses(&peer, addrs);
        self.send_for(Owner::Application, peer, addrs, request, |_, _| {})
    }

    /// Sends `request` for `owner`, its outcome to come back there (see `finish`). `register`
    /// records the request in the owner's module before the dispatcher's actions run: a
    /// request that fails at once must still reach it.
    fn send_for(
        &mut self,
        owner: Owner,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Request,
        register: impl FnOnce(&mut Self, OutboundRequestId),
    ) -> OutboundRequestId {
        #[cfg(feature = "metrics")]
        let message_type = request.message_type();
        let (id, actions) = self.outbound.send(peer, addrs, request);
        self.owners.insert(id, owner);
        #[cfg(feature = "metrics")]
        self.metrics_sent(id, message_type);
        register(self, id);
        self.apply_all(actions);
        id
    }

    /// `addrs`, or when there are none the routing table's addresses of `peer`: a dial is
    /// given the DHT's own addresses, capped, never left to grow through other behaviours.
    fn or_known_addresses(&self, peer: &PeerId, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
        if !addrs.is_empty() {
            return addrs;
        }
        self.maintenance
            .table()
            .addresses(peer)
            .map(<[_]>::to_vec)
            .unwrap_or_default()
    }

    /// Whether an address `peer` says it has (identify) is worth keeping for dials: of a kind
    /// the node can dial and, while the peer is connected, of a scope its connection allows
    /// (a peer connected from a public address does not get its loopback or private addresses
    /// dialled, as go's identify drops them). An address another behaviour reports for a peer
    /// not connected (mDNS, the application) is the swarm's own knowledge: no scope applies.
    fn usable_own_address(&self, peer: &PeerId, addr: Multiaddr) -> bool {
        let scope = self
            .maintenance
            .observed_address(peer)
            .map_or(Scope::Loopback, |a| scope_of_connection(Some(a)));
        !self.addresses.learned(peer, vec![addr], scope).is_empty()
    }

    /// External addresses if the swarm has confirmed any, else the listen addresses.
    fn update_local_addrs(&mut self) {
        let external: Vec<Multiaddr> = self.mode.external_addresses().cloned().collect();
        self.local_addrs = if external.is_empty() {
            self.listen_addrs.clone()
        } else {
            external
        };
    }

    fn on_mode_changed(&mut self, mode: Mode) {
        tracing::info!(%mode, "DHT mode changed");
        for (peer_id, connection) in self.outbound.connections() {
            self.actions.push_back(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::SetMode(mode),
            });
        }
        self.report(Event::ModeChanged { mode });
    }

    fn report(&mut self, event: Event) {
        self.actions.push_back(ToSwarm::GenerateEvent(event));
    }

    fn apply(&mut self, action: OutboundAction) {
        let action = match action {
            OutboundAction::Send {
                peer,
                connection,
                id,
                request,
            } => ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::Request { id, request },
            },
            OutboundAction::Dial { peer, addrs } => {
                // Usable kinds only, ranked, at most the cap. The swarm's other behaviours add
                // their addresses only when the DHT knows none (a peer the application names):
                // otherwise a dial would grow past the cap. The swarm dials them all at once
                // (its dial concurrency factor, 8 by default, is above the cap) and keeps the
                // first that connects: no request waits on a peer's slowest address.
                let addrs = self.addresses.to_dial(&peer, addrs);
                let unknown = addrs.is_empty();
                let (reason, closed) = self.maintenance.dial_reason(&peer);
                tracing::debug!(
                    target: "kadence::dial",
                    %peer,
                    ?reason,
                    closed_ago_ms = ?closed.map(|c| c.at.elapsed().as_millis()),
                    lost = ?closed.map(|c| c.lost),
                    "dial"
                );
                let opts = DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .addresses(addrs);
                let opts = if unknown {
                    opts.extend_addresses_through_behaviour()
                } else {
                    opts
                };
                let opts = opts.build();
                self.own_dials.insert(opts.connection_id());
                ToSwarm::Dial { opts }
            }
            OutboundAction::Fail { peer, id, error } => {
                self.finish(peer, id, Err(error));
                return;
            }
        };
        self.actions.push_back(action);
    }

    /// Every outbound request ends here, whoever failed or answered it: the routing tables
    /// learn the outcome, and it goes back to who sent it (the application hears of its own
    /// requests only).
    fn finish(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        result: Result<Option<Response>, RequestError>,
    ) {
        #[cfg(feature = "metrics")]
        self.metrics_finished(id, &result);
        if let Err(error) = &result {
            tracing::debug!(%peer, %error, "request failed");
        }
        let (_, change) = self
            .maintenance
            .on_request_finished(id, peer, &result, Instant::now());
        self.apply_table_change(change);
        self.full_table_outcome(peer, &result);
        match self.owners.remove(&id) {
            Some(Owner::Check) => {}
            Some(Owner::Sweep) => self.route_to_sweep(id, result),
            Some(Owner::Query) => self.route_to_query(peer, id, result),
            Some(Owner::Crawl) => self.route_to_crawl(peer, id, result),
            Some(Owner::Application) => {
                self.report(Event::OutboundRequestFinished { peer, id, result })
            }
            None => tracing::warn!(%peer, ?id, "outcome of a request nobody sent"),
        }
    }

    fn apply_all(&mut self, actions: Vec<OutboundAction>) {
        for action in actions {
            self.apply(action);
        }
    }

    fn apply_server(&mut self, actions: impl IntoIterator<Item = ServerAction>) {
        for action in actions {
            let action = match action {
                ServerAction::Respond {
                    peer,
                    connection,
                    id,
                    response,
                } => ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(connection),
                    event: HandlerIn::Respond { id, response },
                },
                ServerAction::Refuse {
                    peer,
                    connection,
                    id,
                } => ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(connection),
                    event: HandlerIn::Refuse { id },
                },
                ServerAction::Report {
                    peer,
                    request,
                    outcome,
                } => ToSwarm::GenerateEvent(Event::InboundRequest {
                    peer,
                    request,
                    outcome,
                }),
                ServerAction::AskApproval { id, peer, request } => {
                    ToSwarm::GenerateEvent(Event::StoreRequest { id, peer, request })
                }
            };
            self.actions.push_back(action);
        }
    }

    /// Store upkeep from `poll`. Nothing here waits for the disk: the flush and the routing
    /// snapshot are handed to the store (a persistent store commits them on its writer thread),
    /// a GC step is started and its outcome collected when the store reports it.
    fn poll_store(&mut self, cx: &mut Context<'_>) {
        if self.snapshot_tick.poll_unpin(cx).is_ready() {
            self.snapshot_tick.reset(SNAPSHOT_TICK);
            let _ = self.snapshot_tick.poll_unpin(cx);
            self.save_routing_snapshot();
            self.expire_full_table();
        }
        if self.flush_tick.poll_unpin(cx).is_ready() {
            self.flush_tick.reset(self.config.store_flush_interval);
            let _ = self.flush_tick.poll_unpin(cx);
            if let Err(error) = self.server.store_mut().start_flush() {
                tracing::warn!(%error, "store flush failed");
            }
        }
        if self.gc_tick.poll_unpin(cx).is_ready() {
            self.gc_tick.reset(self.config.gc_interval);
            let _ = self.gc_tick.poll_unpin(cx);
            self.gc_running = true;
        }
        if self.gc_running && !self.gc_waiting {
            let started = self
                .server
                .store_mut()
                .start_gc(SystemTime::now(), self.config.gc_batch);
            match started {
                Ok(Some(progress)) => self.on_gc_step(Ok(progress), cx),
                Ok(None) => self.gc_waiting = true,
                Err(error) => self.on_gc_step(Err(error), cx),
            }
        }
        while let Poll::Ready(done) = self.server.store_mut().poll_background(cx) {
            match done {
                Background::Gc(result) => {
                    self.gc_waiting = false;
                    self.on_gc_step(result, cx);
                }
                Background::Provided { tag, page } => {
                    let actions = self.provider.page_loaded(tag, page, SystemTime::now());
                    self.apply_provider(actions);
                    // A region lookup may have started after this poll drove the queries.
                    cx.waker().wake_by_ref();
                }
            }
        }
    }

    fn on_gc_step(&mut self, result: Result<GcProgress, StoreError>, cx: &mut Context<'_>) {
        match result {
            Ok(progress) => {
                self.gc_running = !progress.done;
                if progress.removed > 0 {
                    tracing::debug!(removed = progress.removed, "expired records collected");
                }
            }
            Err(error) => {
                tracing::warn!(%error, "store GC failed");
                self.gc_running = false;
            }
        }
        if self.gc_running {
            // Yield to the swarm, and come back for the next step.
            cx.waker().wake_by_ref();
        }
    }
}

impl Drop for Behaviour {
    /// Keeps the routing table for the next run, and makes every accepted write durable (this
    /// waits for the disk: the behaviour is going away, nothing else is polled through it).
    fn drop(&mut self) {
        self.save_routing_snapshot();
        if let Err(error) = self.server.flush() {
            tracing::warn!(%error, "store flush on close failed");
        }
    }
}

mod accelerated;
mod dht;
mod handle;
#[cfg(feature = "metrics")]
mod metrics;
mod provide;
mod swarm;
mod table;

pub use dht::{NoKnownPeers, ProvideError, PutValueError};
pub use provide::{ProvideStatus, ProvidedCursor, StartProvideError};

#[cfg(test)]
mod tests;
