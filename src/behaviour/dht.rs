//! The DHT interface of [`Behaviour`]: the operations users call (each doc comment names the
//! seed design's counterpart), and the glue that drives their queries.

use std::num::NonZeroUsize;
use std::task::Context;
use std::time::{Instant, SystemTime};

use futures::FutureExt;
use libp2p::{Multiaddr, PeerId};

use super::{Behaviour, Owner};
use crate::event::Event;
use crate::key::Key;
use crate::network::message::{ConnectionType, PeerRecord, Record, Response};
use crate::network::{OutboundRequestId, RequestError};
use crate::provider::ProviderKey;
use crate::routing::accelerated::{Accelerated, Plan};
use crate::routing::addresses::scope_of_connection;
use crate::routing::lookup::LookupConfig;
use crate::routing::query::{Operation, Outcome, PoolAction};
use crate::routing::{QueryId, QueryProgress};
use crate::routing_table::{Admission, RoutingTable};
use crate::server::ValidationError;
use crate::store::{ProviderRecord, ValueRecord};

/// Why [`Behaviour::provide`] cannot announce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvideError {
    /// The node has no address to put in its provider record: go servers silently drop a
    /// record without one, so the announcement would be lost. Listen on an address first.
    #[error("no address to announce: listen on an address or confirm an external one")]
    NoAddresses,
    /// Servers refuse provider keys this long (Amino: 80 bytes, a multihash).
    #[error("provider key of {len} bytes exceeds the limit of {max}")]
    KeyTooLong {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why [`Behaviour::put_value`] refused a record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PutValueError {
    /// The record fails its namespace's validator (or the namespace has none).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The local store holds a better record under this key (by the validator's select), as
    /// go refuses to replace a newer value with an older one.
    #[error("a newer record is stored under this key")]
    Outdated,
}

/// [`Behaviour::bootstrap`] needs at least one peer in the routing table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no known peers: add a bootstrap peer with Behaviour::add_address")]
pub struct NoKnownPeers;

impl Behaviour {
    pub(super) fn lookup_config(&self) -> LookupConfig {
        let k = self.config.kbuckets.k;
        LookupConfig {
            alpha: self.config.alpha,
            beta: self.config.beta,
            k,
            slot_timeout: self.config.request_timeout,
            max_closer_per_response: 2 * k,
            max_candidates: 4 * k,
            max_addresses_per_peer: self.config.max_dial_addresses_per_peer,
            max_dials: self.config.max_dials_per_lookup,
            finish: self.config.lookup_finish,
            widened_alpha: self.config.widened_alpha,
            deadlines: self.config.request_deadlines,
        }
    }

    /// Where a lookup for `target` starts (see `routing::accelerated`).
    pub(super) fn plan_lookup(&self, target: Key, config: LookupConfig) -> Plan {
        Accelerated::plan(
            self.accelerated.as_ref(),
            self.local,
            target,
            self.maintenance.table(),
            config,
            Instant::now(),
        )
    }

    fn start_query(&mut self, key: Vec<u8>, kind: Operation, internal: bool) -> QueryId {
        let plan = self.plan_lookup(Key::new(&key), self.lookup_config());
        let timeout = if internal {
            self.config.refresh_query_timeout
        } else {
            self.config.query_timeout
        };
        let id = self
            .queries
            .start(key, kind, plan.lookup, timeout, Instant::now());
        if plan.accelerated {
            self.queries.mark_accelerated(id);
        }
        if internal {
            self.internal_queries.insert(id);
        }
        self.wake();
        id
    }

    /// Adds a peer known to serve the DHT (a bootstrap node) to the routing table. It is
    /// checked like any other peer and evicted if it does not answer.
    #[must_use = "a peer can be refused (a full bucket, the diversity filter): check the Admission"]
    pub fn add_address(&mut self, peer: PeerId, addr: Multiaddr) -> Admission {
        let (outcome, change) = self
            .maintenance
            .add_known_server(peer, addr, Instant::now());
        self.apply_table_change(change);
        self.wake();
        outcome
    }

    /// FindClosestPeers: the k closest peers to `key` that answered, with their addresses
    /// ([`QueryResult::ClosestPeers`](crate::QueryResult::ClosestPeers)).
    pub fn get_closest_peers(&mut self, key: impl Into<Vec<u8>>) -> QueryId {
        self.start_query(key.into(), Operation::ClosestPeers, false)
    }

    /// FindPeer: the addresses of `peer` ([`QueryResult::FindPeer`](crate::QueryResult::FindPeer)). Answered at once when the
    /// routing table or an open connection knows them; otherwise a lookup that stops as soon
    /// as a peer reports it with addresses.
    pub fn find_peer(&mut self, peer: PeerId) -> QueryId {
        let id = self.start_query(peer.to_bytes(), Operation::FindPeer { target: peer }, false);
        let known = self
            .maintenance
            .table()
            .addresses(&peer)
            .or_else(|| self.full_table()?.addresses(&peer))
            .map(<[_]>::to_vec)
            .or_else(|| self.maintenance.connected_addresses(&peer))
            .filter(|a| !a.is_empty());
        if let Some(addrs) = known {
            let found = PeerRecord {
                id: peer,
                addrs,
                connection: self.connection_type(&peer),
            };
            self.queries.finish(id, Outcome::Peer(found));
        }
        id
    }

    /// GetValue: the best valid record under `key` ([`QueryResult::GetValue`](crate::QueryResult::GetValue)). Every record
    /// received is validated; with a quorum the lookup stops after that many valid records
    /// (the local store's counts). The closest peers that returned an outdated record, or
    /// none, are sent the best one.
    pub fn get_value(&mut self, key: impl Into<Vec<u8>>, quorum: Option<NonZeroUsize>) -> QueryId {
        let key = key.into();
        let kind = Operation::GetValue {
            quorum: quorum.map(NonZeroUsize::get),
            records: Vec::new(),
            without: Vec::new(),
        };
        let id = self.start_query(key.clone(), kind, false);
        // A stored record may have become invalid since it was stored (an IPNS record past
        // its validity): it is not an answer.
        let local = self
            .server
            .store_mut()
            .get(&key, SystemTime::now())
            .ok()
            .flatten()
            .filter(|stored| {
                self.server
                    .validators()
                    .validate(&stored.key, &stored.value)
                    .is_ok()
            });
        if let Some(stored) = local {
            let record = Record {
                key: stored.key,
                value: stored.value,
                time_received: crate::server::rfc3339(stored.received),
            };
            if quorum.is_some_and(|q| q.get() == 1) {
                self.queries.finish(id, Outcome::Record(record));
            } else {
                self.queries.add_local_record(id, record);
            }
        }
        id
    }

    /// PutValue: stores `record` here and at the k closest peers ([`QueryResult::PutValue`](crate::QueryResult::PutValue)
    /// says how many stored it, checked by their echo). The record must pass its namespace's
    /// validator and be at least as good as the one stored here. Without a quorum, one peer
    /// storing it is success. With optimistic provide (the default) the result may come once
    /// 15 of the 20 stored it, the count being those so far; see
    /// [`Config::with_optimistic_provide`](crate::Config::with_optimistic_provide).
    pub fn put_value(
        &mut self,
        record: Record,
        quorum: Option<NonZeroUsize>,
    ) -> Result<QueryId, PutValueError> {
        self.server
            .validators()
            .validate(&record.key, &record.value)?;
        let now = SystemTime::now();
        if let Ok(Some(existing)) = self.server.store_mut().get(&record.key, now) {
            let values = [record.value.as_slice(), existing.value.as_slice()];
            if self.server.validators().select(&record.key, &values)? != 0 {
                return Err(PutValueError::Outdated);
            }
        }
        let local = ValueRecord {
            key: record.key.clone(),
            value: record.value.clone(),
            received: now,
            expires: now
                .checked_add(self.config.lifetimes.value_max_age)
                .unwrap_or(now),
        };
        if let Err(error) = self.server.store_mut().put(local) {
            tracing::warn!(%error, "storing our own record locally failed");
        }
        let kind = Operation::PutValue {
            record: record.clone(),
            quorum: quorum.map_or(1, NonZeroUsize::get),
        };
        let id = self.start_query(record.key, kind, false);
        self.write_optimistically(id);
        Ok(id)
    }

    /// FindProvs: the providers of `key` (a multihash: see [`ProviderKey`]), streamed as
    /// [`QueryProgress::ProvidersFound`] as they arrive, de-duplicated, the local store's
    /// first, and all of them in [`QueryResult::FindProviders`](crate::QueryResult::FindProviders);
    /// the lookup stops once `limit` (at most
    /// [`Config::with_max_providers_per_query`](crate::Config::with_max_providers_per_query))
    /// were found.
    pub fn find_providers(&mut self, key: impl Into<ProviderKey>, limit: Option<usize>) -> QueryId {
        let key = key.into().into_bytes();
        let max = self.config.max_providers_per_query;
        let kind = Operation::GetProviders {
            limit: Some(limit.map_or(max, |l| l.min(max))),
            seen: Default::default(),
            found: Vec::new(),
        };
        let id = self.start_query(key.clone(), kind, false);
        let now = SystemTime::now();
        let local: Vec<PeerRecord> = self
            .server
            .store_mut()
            .providers(&key, now)
            .unwrap_or_default()
            .into_iter()
            .map(|p| PeerRecord {
                id: p.provider,
                addrs: if p.addrs_expire > now {
                    p.addrs
                } else {
                    Vec::new()
                },
                connection: self.connection_type(&p.provider),
            })
            .collect();
        if !local.is_empty() {
            let enough = self.queries.add_local_providers(id, &local);
            self.report(Event::QueryProgress {
                id,
                progress: QueryProgress::ProvidersFound(local),
            });
            if enough {
                self.queries.finish(id, Outcome::Providers);
            }
        }
        id
    }

    /// A one-shot announcement that this node provides `key` (a multihash: see
    /// [`ProviderKey`]): a lookup, then ADD_PROVIDER to
    /// the k closest peers ([`QueryResult::Provide`](crate::QueryResult::Provide), reported once the frames were written,
    /// with how many were). With optimistic provide (the default) the ADD_PROVIDERs start
    /// during the lookup and the result may come once 15 of the 20 were written, the count
    /// being those so far; see
    /// [`Config::with_optimistic_provide`](crate::Config::with_optimistic_provide). Fails at
    /// once without an address to announce. (Keeping a key provided is the Provider's job.)
    pub fn provide(&mut self, key: impl Into<ProviderKey>) -> Result<QueryId, ProvideError> {
        let key = key.into().into_bytes();
        let max = self.config.limits.max_provider_key_len;
        if key.len() > max {
            return Err(ProvideError::KeyTooLong {
                len: key.len(),
                max,
            });
        }
        if self.local_addrs.is_empty() {
            return Err(ProvideError::NoAddresses);
        }
        let provider = PeerRecord {
            id: self.local,
            addrs: self.local_addrs.clone(),
            connection: ConnectionType::Connected,
        };
        let now = SystemTime::now();
        let lifetimes = self.config.lifetimes;
        let record = ProviderRecord {
            key: key.clone(),
            provider: self.local,
            addrs: self.local_addrs.clone(),
            received: now,
            expires: now.checked_add(lifetimes.provider_validity).unwrap_or(now),
            addrs_expire: now.checked_add(lifetimes.provider_addrs).unwrap_or(now),
        };
        if let Err(error) = self.server.store_mut().add_provider(record) {
            tracing::warn!(%error, "storing our own provider record locally failed");
        }
        let id = self.start_query(key, Operation::Provide { provider }, false);
        self.write_optimistically(id);
        Ok(id)
    }

    /// Joins the network: a lookup for our own id, plus a lookup in every bucket not refreshed
    /// within the refresh interval. The self-lookup's result is reported.
    pub fn bootstrap(&mut self) -> Result<QueryId, NoKnownPeers> {
        if self.maintenance.table().is_empty() {
            return Err(NoKnownPeers);
        }
        let id = self.start_query(
            self.local.to_bytes(),
            Operation::Bootstrap { bucket: None },
            false,
        );
        self.refresh_buckets();
        Ok(id)
    }

    /// Whether this node has a connection to `peer` now: what a [`PeerRecord`] it reports says.
    pub(super) fn connection_type(&self, peer: &PeerId) -> ConnectionType {
        if self.outbound.is_connected(peer) {
            ConnectionType::Connected
        } else {
            ConnectionType::NotConnected
        }
    }

    /// Stops an operation; no result is reported for it.
    pub fn cancel_query(&mut self, id: QueryId) -> bool {
        self.internal_queries.remove(&id);
        self.handle_driver.cancelled(id);
        self.queries.cancel(id)
    }

    /// Lookups in the buckets due a refresh (internal: their results are not reported).
    fn refresh_buckets(&mut self) {
        let interval = self
            .config
            .refresh_interval
            .unwrap_or(self.config.query_timeout);
        let targets =
            self.maintenance
                .table()
                .refresh_targets(Instant::now(), interval, &mut rand::rng());
        for target in targets {
            let kind = Operation::Bootstrap {
                bucket: Some(target.bucket),
            };
            self.start_query(target.target.to_bytes(), kind, true);
        }
    }

    /// The periodic refresh: a self-lookup and the buckets due.
    pub(super) fn refresh(&mut self) {
        if self.maintenance.table().is_empty() {
            return;
        }
        let key = self.local.to_bytes();
        self.start_query(key, Operation::Bootstrap { bucket: None }, true);
        self.refresh_buckets();
    }

    /// Routes the outcome of a request to `peer` to its query. The addresses the answer gives pass the address rules, with the scope of the
    /// address `peer`'s connection came from.
    pub(super) fn route_to_query(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        result: Result<Option<Response>, RequestError>,
    ) {
        let now = Instant::now();
        let informant = scope_of_connection(self.maintenance.observed_address(&peer));
        let policy = &self.addresses;
        let learned = |p: &PeerId, addrs: Vec<Multiaddr>| policy.learned(p, addrs, informant);
        let actions = self
            .queries
            .on_result(id, result, now, self.server.validators(), &learned);
        self.apply_pool(actions);
    }

    /// Advances every query and re-arms the query timer.
    pub(super) fn drive_queries(&mut self, cx: &mut Context<'_>) {
        if self.queries.len() == 0 {
            return;
        }
        let now = Instant::now();
        let outbound = &self.outbound;
        let connected = |p: &PeerId| outbound.is_connected(p);
        let actions = self.queries.poll(now, self.server.validators(), &connected);
        self.apply_pool(actions);
        if let Some(deadline) = self.queries.next_deadline() {
            self.query_timer
                .reset(deadline.saturating_duration_since(Instant::now()));
            let _ = self.query_timer.poll_unpin(cx);
        }
    }

    fn apply_pool(&mut self, actions: Vec<PoolAction>) {
        for action in actions {
            match action {
                PoolAction::Send {
                    query,
                    peer,
                    addrs,
                    request,
                } => {
                    self.send_for(Owner::Query, peer, addrs, request, |b, id| {
                        b.queries.on_sent(id, query, peer)
                    });
                }
                PoolAction::Progress(id, mut progress) => {
                    if let QueryProgress::ProvidersFound(providers) = &mut progress {
                        providers
                            .iter_mut()
                            .for_each(|p| p.connection = self.connection_type(&p.id));
                    }
                    if !self.internal_queries.contains(&id) {
                        self.report(Event::QueryProgress { id, progress });
                    }
                }
                PoolAction::Refreshed(bucket) => self
                    .maintenance
                    .table_mut()
                    .on_refreshed(bucket, Instant::now()),
                PoolAction::Finished(id, mut result, stats) => {
                    // What the remote peers said of their connections is theirs: the result
                    // says whether this node is connected to each.
                    for peer in result.peers_mut() {
                        peer.connection = self.connection_type(&peer.id);
                    }
                    let sweep = self.on_query_finished(id, &result, stats.accelerated);
                    if !self.internal_queries.remove(&id) && !sweep {
                        self.report(Event::QueryFinished { id, result, stats });
                    }
                }
                PoolAction::Walked { target, closest } => self.on_walked(&target, &closest),
                PoolAction::WritesSettled(id, writes, stats) => {
                    self.report(Event::WritesSettled { id, writes, stats });
                }
            }
        }
    }
}
