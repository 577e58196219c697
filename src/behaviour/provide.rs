//! The Provider's interface (StartProvide, StopProvide, ProvideList) and the glue that runs
//! the reprovide sweep.

use std::task::Context;
use std::time::{Duration, Instant, SystemTime};

use fnv::FnvHashSet;
use futures::FutureExt;
use libp2p::PeerId;

use super::{Behaviour, Owner};
use crate::event::Event;
use crate::key::Key;
use crate::network::message::{ConnectionType, PeerRecord, Request, Response};
use crate::network::{OutboundRequestId, RequestError};
use crate::provider::{Provider, ProviderAction, ProviderKey, SweepStatus};
use crate::routing::lookup::LookupFinish;
use crate::routing::query::Operation;
use crate::routing::{QueryId, QueryResult};
use crate::store::{ProvidedKey, StoreError};

use super::dht::ProvideError;

/// Why [`Behaviour::start_providing`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartProvideError {
    /// The key could not be added to the provided-keys list.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The first announcement could not start.
    #[error(transparent)]
    Provide(#[from] ProvideError),
}

/// A provided key and where it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvideStatus {
    /// The key, when it was added, when it was last announced and to how many peers.
    pub key: ProvidedKey,
    /// When its next announcement is due (`None`: not announced yet, due now).
    pub next_due: Option<SystemTime>,
}

/// Where a page of [`Behaviour::provided_keys_page`] starts: the keyspace point of the first
/// key it returns. The page call hands back the cursor of the page after it, so paging through
/// millions of keys needs no arithmetic on keyspace points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProvidedCursor(Key);

impl ProvidedCursor {
    /// A cursor at `point`: its page starts with the first provided key at or after `point`
    /// in keyspace order (the key's SHA-256, [`Key::new`]).
    pub fn at(point: Key) -> Self {
        Self(point)
    }

    /// The keyspace point the page starts at: to keep a position across restarts, save it
    /// and resume with [`ProvidedCursor::at`].
    pub fn point(&self) -> &Key {
        &self.0
    }
}

/// The longest the sweep's timer sleeps, so that a region appearing (the network grew, the
/// table filled) is not noticed late.
const MAX_SWEEP_SLEEP: Duration = Duration::from_secs(60);

impl Behaviour {
    /// StartProvide: adds `key` to the provided-keys list (durably, with a persistent store),
    /// announces it now and keeps it announced: the sweep covers its keyspace region at once,
    /// together with the other keys added meanwhile (thousands of new keys cost a lookup per
    /// region, not per key), and then every reprovide interval. Progress comes as
    /// [`Event::RegionReprovided`]; [`Behaviour::provided_keys`] has each key's status.
    pub fn start_providing(
        &mut self,
        key: impl Into<ProviderKey>,
    ) -> Result<(), StartProvideError> {
        let key = key.into().into_bytes();
        let max = self.config.limits.max_provider_key_len;
        if key.len() > max {
            return Err(ProvideError::KeyTooLong {
                len: key.len(),
                max,
            }
            .into());
        }
        if self.local_addrs.is_empty() {
            return Err(ProvideError::NoAddresses.into());
        }
        let now = SystemTime::now();
        self.server.store_mut().add_provided(&key, now)?;
        self.provider.kick(&Key::new(&key), now);
        self.wake();
        Ok(())
    }

    /// StartProvide for many keys at once: [`Behaviour::start_providing`] for each, with the
    /// keys added to the store in bulk and the sweep kicked once per keyspace region touched
    /// rather than once per key. Returns how many keys were not provided before (a key given
    /// twice, or already provided, counts once and keeps its status).
    ///
    /// Every key is checked before any is added: one too long, or no listen address, and
    /// nothing is. With a [`PersistentStore`](crate::store::PersistentStore) this waits for
    /// the disk when the writes outrun it ([`Store::add_provided_many`]): call it from your
    /// own task, or through the [`Handle`](crate::Handle), which sends bounded chunks.
    ///
    /// [`Store::add_provided_many`]: crate::store::Store::add_provided_many
    pub fn start_providing_many<K: Into<ProviderKey>>(
        &mut self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<usize, StartProvideError> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.into().into_bytes()).collect();
        let max = self.config.limits.max_provider_key_len;
        if let Some(long) = keys.iter().find(|k| k.len() > max) {
            return Err(ProvideError::KeyTooLong {
                len: long.len(),
                max,
            }
            .into());
        }
        if self.local_addrs.is_empty() {
            return Err(ProvideError::NoAddresses.into());
        }
        let now = SystemTime::now();
        let added = self.server.store_mut().add_provided_many(&keys, now)?;
        // Keys are announced by region: each region they fall in is queued once.
        let points: Vec<Key> = keys.iter().map(|k| Key::new(k)).collect();
        self.provider.kick_many(&points, now);
        self.wake();
        Ok(added)
    }

    /// StopProvide for many keys at once ([`Behaviour::stop_providing`] for each, removed from
    /// the store in bulk): returns how many were provided. Waits for the disk as
    /// [`Behaviour::start_providing_many`] does.
    pub fn stop_providing_many<K: Into<ProviderKey>>(
        &mut self,
        keys: impl IntoIterator<Item = K>,
    ) -> Result<usize, StoreError> {
        let keys: Vec<Vec<u8>> = keys.into_iter().map(|k| k.into().into_bytes()).collect();
        let removed = self.server.store_mut().remove_provided_many(&keys)?;
        let stopped: FnvHashSet<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        self.provider.stop_many(&stopped);
        Ok(removed)
    }

    /// StopProvide: removes `key` from the list; it is not announced again, not even by a
    /// sweep under way that read it before (records already stored expire on their own).
    pub fn stop_providing(&mut self, key: &ProviderKey) -> Result<(), StoreError> {
        self.server.store_mut().remove_provided(key.as_bytes())?;
        self.provider
            .stop_many(&FnvHashSet::from_iter([key.as_bytes()]));
        Ok(())
    }

    /// ProvideList: up to `limit` provided keys in keyspace order from `from` (inclusive), with
    /// their status (added, last provided, peers reached, next due). Page through millions of
    /// keys by passing the point after the last key returned as `from`.
    pub fn provided_keys(
        &mut self,
        from: &Key,
        limit: usize,
    ) -> Result<Vec<ProvideStatus>, StoreError> {
        let interval = self.config.reprovide.interval;
        Ok(self
            .server
            .store_mut()
            .provided(from, limit)?
            .into_iter()
            .map(|key| ProvideStatus {
                next_due: key
                    .last_provided
                    .map(|t| t.checked_add(interval).unwrap_or(t)),
                key,
            })
            .collect())
    }

    /// Where the reprovide sweep stands: regions running and waiting, how far behind schedule
    /// it is, how long regions take, and the workers it would need to keep up.
    pub fn sweep_status(&self) -> SweepStatus {
        self.provider.status(SystemTime::now())
    }

    /// ProvideList by cursor: up to `limit` provided keys (at least one) in keyspace order,
    /// from `cursor` (`None`: from the start), with their status, and the cursor of the next
    /// page (`None`: this page ends the list). Pass the cursor back to get the next page: the
    /// pages cover every key once, even over millions of keys, and keys added or removed
    /// meanwhile are seen or not depending on where they fall.
    pub fn provided_keys_page(
        &mut self,
        cursor: Option<ProvidedCursor>,
        limit: usize,
    ) -> Result<(Vec<ProvideStatus>, Option<ProvidedCursor>), StoreError> {
        let from = cursor.map_or(Key::from_hash([0; 32]), |c| c.0);
        let limit = limit.max(1);
        // One key more than asked: the next page starts at it, and a last page that is full
        // is known to be the last.
        let mut page = self.provided_keys(&from, limit.saturating_add(1))?;
        let next = if page.len() > limit {
            page.pop()
                .map(|status| ProvidedCursor(Key::new(&status.key.key)))
        } else {
            None
        };
        Ok((page, next))
    }

    /// How many keys this node provides.
    pub fn provided_len(&mut self) -> Result<u64, StoreError> {
        self.server.store_mut().provided_len()
    }

    /// The estimated number of DHT servers in the network besides this node, from the closest
    /// peers of recent lookups (see [`routing::netsize`](crate::routing::netsize)); `None`
    /// until five lookups that found k peers ran in the last two hours.
    pub fn network_size_estimate(&self) -> Option<u64> {
        let others = self.queries.network_size(Instant::now()).ok()?;
        Some(others.round() as u64)
    }

    /// Optimistic provide for a PutValue or Provide query just started, when configured and
    /// the network size is known (see [`crate::Config::with_optimistic_provide`]).
    pub(super) fn write_optimistically(&mut self, id: QueryId) {
        if self.config.optimistic_provide {
            let optimistic = self.queries.write_optimistically(id, Instant::now());
            tracing::trace!(?id, optimistic, "writes");
        }
    }

    /// A lookup ended with `closest`: a sample of the network's size, weighed by how many
    /// peers the routing table holds in the target's bucket.
    pub(super) fn on_walked(&mut self, target: &Key, closest: &[PeerId]) {
        let k = self.config.kbuckets.k;
        if closest.len() < k {
            return;
        }
        let local = Key::from_peer(&self.local);
        let cpl = local.common_prefix_len(target);
        // The bucket's peers are the closest to any target in it: at most k of them are
        // among the table's k closest to the target.
        let bucket_fill = self
            .maintenance
            .table()
            .local_closest_peers(target, k)
            .iter()
            .filter(|p| Key::from_peer(&p.id).common_prefix_len(&local) == cpl)
            .count();
        let keys: Vec<Key> = closest.iter().take(k).map(Key::from_peer).collect();
        self.queries
            .track_network_size(&local, target, &keys, k, bucket_fill, Instant::now());
    }

    /// Leading full buckets of the routing table: the network has about k * 2^n peers.
    fn leading_full_buckets(&self) -> usize {
        let local = Key::from_peer(&self.local);
        let mut counts = [0usize; 257];
        for peer in self.maintenance.table().peers() {
            counts[Key::from_peer(&peer.id).common_prefix_len(&local)] += 1;
        }
        counts
            .iter()
            .take_while(|n| **n >= self.config.kbuckets.k)
            .count()
    }

    /// Runs the sweep's timer and starts the regions due (at once when keys were just added).
    pub(super) fn poll_sweep(&mut self, cx: &mut Context<'_>) {
        if self.sweep_tick.poll_unpin(cx).is_pending() && !self.provider.has_waiting() {
            return;
        }
        let now = SystemTime::now();
        let actions = self.provider.tick(now, self.leading_full_buckets());
        self.apply_provider(actions);
        let sleep = self
            .provider
            .until_next(SystemTime::now())
            .clamp(Duration::from_millis(10), MAX_SWEEP_SLEEP);
        self.sweep_tick.reset(sleep);
        let _ = self.sweep_tick.poll_unpin(cx);
    }

    pub(super) fn apply_provider(&mut self, actions: Vec<ProviderAction>) {
        let mut queue: std::collections::VecDeque<ProviderAction> = actions.into();
        while let Some(action) = queue.pop_front() {
            tracing::trace!(?action, "sweep");
            match action {
                ProviderAction::LoadKeys { region, from } => {
                    // Read off the swarm's task by a store that does I/O: the page then comes
                    // back through the store's background work (see `poll_store`).
                    let tag = self.provider.page_requested(region);
                    let limit = self.config.reprovide.keys_per_page;
                    let loaded = self
                        .server
                        .store_mut()
                        .start_load_provided(tag, &from, limit);
                    let now = SystemTime::now();
                    match loaded {
                        Ok(None) => {}
                        Ok(Some(page)) => {
                            queue.extend(self.provider.page_loaded(tag, Ok(page), now))
                        }
                        Err(error) => queue.extend(self.provider.page_loaded(tag, Err(error), now)),
                    }
                }
                ProviderAction::FindPeers { region, target } => {
                    let k = self.config.kbuckets.k;
                    // 4k: a region can hold more than 2k peers (up to ~2.8k in a 10,000-node
                    // simulation), and keys at its far edge need peers well beyond 2k from the
                    // target. With 2k, 1.5% of keys reached only 14 of their 20 closest; with
                    // 3k, where the region is at its largest, 0.8% reached only 18 or 19 (a
                    // lookup finds ~86% of the 3k true closest: answers carry the 20 nearest
                    // the target). 4k placed every key on all 20 (benches/reprovide).
                    let mut config = self.lookup_config();
                    config.k = 4 * k;
                    // Every key goes to its k closest among these: each must be confirmed.
                    config.finish = LookupFinish::KClosestAnswered;
                    let plan = self.plan_lookup(Key::new(&target), config);
                    let id = self.queries.start(
                        target,
                        Operation::ClosestPeers,
                        plan.lookup,
                        self.config.query_timeout,
                        Instant::now(),
                    );
                    if plan.accelerated {
                        self.queries.mark_accelerated(id);
                    }
                    self.internal_queries.insert(id);
                    self.provider.lookup_started(id, region);
                }
                ProviderAction::Announce {
                    region,
                    peer,
                    addrs,
                    key,
                    index,
                } => {
                    let request = Request::AddProvider {
                        key,
                        providers: vec![PeerRecord {
                            id: self.local,
                            addrs: self.local_addrs.clone(),
                            connection: ConnectionType::Connected,
                        }],
                    };
                    self.send_for(Owner::Sweep, peer, addrs, request, |b, id| {
                        b.provider.on_sent(id, region, peer, index)
                    });
                }
                ProviderAction::KeyDone { key, at, peers } => {
                    if let Err(error) = self.server.store_mut().set_provided_status(&key, at, peers)
                    {
                        tracing::warn!(%error, "recording a reprovide failed");
                    }
                }
                ProviderAction::Report(report) => {
                    let took = SystemTime::now()
                        .duration_since(report.started)
                        .unwrap_or_default();
                    self.provider.region_took(took, &report);
                    if let Some(mark) = self.provider.new_mark() {
                        if let Err(error) = self.server.store_mut().save_sweep_mark(mark) {
                            tracing::warn!(%error, "keeping the sweep's mark failed");
                        }
                    }
                    self.report(Event::RegionReprovided(report));
                }
                ProviderAction::Behind {
                    by,
                    waiting,
                    workers_needed,
                } => {
                    match workers_needed {
                        Some(needed) => tracing::warn!(
                            ?by,
                            waiting,
                            needed,
                            "the reprovide sweep is behind schedule: at its pace it needs \
                             Config::with_reprovide_workers({needed}) to keep up"
                        ),
                        None => {
                            tracing::warn!(?by, waiting, "the reprovide sweep is behind schedule")
                        }
                    }
                    self.report(Event::ReprovideBehind {
                        by,
                        waiting,
                        workers_needed,
                    });
                }
            }
        }
    }

    /// Routes an announcement's outcome to the sweep.
    pub(super) fn route_to_sweep(
        &mut self,
        id: OutboundRequestId,
        result: Result<Option<Response>, RequestError>,
    ) {
        let actions = self.provider.on_result(id, result.is_ok());
        self.apply_provider(actions);
    }

    /// A query finished: the sweep's lookups feed their region. Returns whether the result
    /// was the sweep's own.
    pub(super) fn on_query_finished(
        &mut self,
        id: QueryId,
        result: &QueryResult,
        accelerated: bool,
    ) -> bool {
        if !self.provider.owns_query(&id) {
            return false;
        }
        let peers = match result {
            QueryResult::ClosestPeers {
                result: Ok(peers), ..
            } => peers.clone(),
            _ => Vec::new(),
        };
        let actions = self.provider.region_peers(id, peers, accelerated);
        self.apply_provider(actions);
        true
    }
}

/// The provider, resuming from the sweep's mark the store kept when the node stopped.
pub(super) fn new_provider(
    behaviour_k: usize,
    config: &crate::Config,
    store: &mut impl crate::Store,
) -> Provider {
    let mut provider = Provider::new(config.reprovide, behaviour_k);
    match store.sweep_mark() {
        Ok(Some(mark)) => provider.resume_from(mark),
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(%error, "the sweep's mark could not be read: catching up in full")
        }
    }
    provider
}
