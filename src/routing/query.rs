//! The query pool: every DHT operation in flight, each a [`Lookup`] plus what the operation
//! does with the answers (collect records or providers, stop at a target, then store at the k
//! closest). Sans-IO: the behaviour sends what [`QueryPool::poll`] asks for and feeds back the
//! outcomes; requests are indexed by id, so an outcome reaches its query without a scan.
//!
//! Every peer an answer names passes the behaviour's address rules (`routing::addresses`)
//! before anything else sees it, and a lookup dials at most its budget of peers it is not
//! connected to: one answer cannot make the node dial more than a few addresses per named peer,
//! nor a lookup more than `max_dials` new peers.

use std::time::{Duration, Instant};

use fnv::{FnvHashMap, FnvHashSet};
use libp2p::{Multiaddr, PeerId};

use super::lookup::{Lookup, LookupStep};
use super::netsize::{EstimateError, NetworkSizeEstimator};
use super::optimistic::{Plan, Writes};
use super::rtt::{later, Route, RttEstimator};
use super::{QueryError, QueryId, QueryProgress, QueryResult, QueryStats, WritesSummary};
use crate::key::Key;
use crate::network::message::{PeerRecord, Record, Request, Response};
use crate::network::{OutboundRequestId, RequestError};
use crate::server::Validators;

/// What an operation does besides finding the closest peers.
#[derive(Debug)]
pub(crate) enum Operation {
    ClosestPeers,
    FindPeer {
        target: PeerId,
    },
    GetValue {
        quorum: Option<usize>,
        /// Valid records received, with who sent them (`None`: the local store).
        records: Vec<(Option<PeerId>, Record)>,
        /// Peers that answered without a record.
        without: Vec<PeerId>,
    },
    PutValue {
        record: Record,
        quorum: usize,
    },
    GetProviders {
        limit: Option<usize>,
        seen: FnvHashSet<PeerId>,
        /// Every provider reported, in order: the result (bounded by `limit`).
        found: Vec<PeerRecord>,
    },
    Provide {
        provider: PeerRecord,
    },
    Bootstrap {
        bucket: Option<usize>,
    },
}

/// When and how a lookup request left, to time its answer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    pub(super) at: Instant,
    pub(super) route: Route,
}

/// Times the request to `peer` that left as `sent` by the estimate at `now`: when it is
/// overdue and when the lookup stops waiting for it. Called when it leaves and again when the
/// estimate moves (see `routing::rtt`).
pub(super) fn time_request(
    lookup: &mut Lookup,
    peer: &PeerId,
    sent: &Sent,
    rtt: &RttEstimator,
    now: Instant,
) {
    let config = lookup.config();
    let slot = rtt.deadlines(sent.route, &config.deadlines, config.slot_timeout, now);
    let (overdue, deadline) = (later(sent.at, slot.overdue), later(sent.at, slot.deadline));
    lookup.set_deadlines(peer, overdue, deadline);
}

#[derive(Debug)]
struct Query {
    key: Vec<u8>,
    kind: Operation,
    lookup: Lookup,
    /// Peers the lookup asked while not connected to them: its dials.
    dials: usize,
    /// The writes of a PutValue or Provide: from the lookup's end, or during it when
    /// optimistic (see `routing::optimistic`).
    fanout: Option<Writes>,
    deadline: Instant,
    stats: QueryStats,
    /// Requests to send before anything else (fan-out, entry correction).
    outbox: Vec<(PeerId, Vec<Multiaddr>, Request)>,
    /// Lookup requests asked for in this poll, until their ids are known (`on_sent`).
    unsent: Vec<(PeerId, Sent)>,
    finished: Option<Outcome>,
}

/// How a query ended, before it becomes a [`QueryResult`] (see [`into_result`], which adds
/// the key and, to a failure, what was found before it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// ClosestPeers: the closest peers that answered.
    Peers(Vec<PeerRecord>),
    /// FindPeer.
    Peer(PeerRecord),
    /// GetValue: the best record.
    Record(Record),
    /// PutValue, Provide: peers that stored it.
    Stored(usize),
    /// GetProviders: the providers the query gathered.
    Providers,
    /// Bootstrap: peers that answered.
    Answered(usize),
    /// The operation failed.
    Failed(QueryError),
}

/// What the pool wants done.
#[derive(Debug)]
pub(crate) enum PoolAction {
    Send {
        query: QueryId,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Request,
    },
    Progress(QueryId, QueryProgress),
    /// A refresh lookup for this bucket finished.
    Refreshed(usize),
    /// A lookup ran to its end: its closest peers, closest first, for the network-size
    /// estimate (see [`QueryPool::track_network_size`]).
    Walked {
        target: Key,
        closest: Vec<PeerId>,
    },
    Finished(QueryId, QueryResult, QueryStats),
    /// An operation whose result was reported early finished its last write.
    WritesSettled(QueryId, WritesSummary, QueryStats),
}

/// Every query in flight.
#[derive(Debug, Default)]
pub(crate) struct QueryPool {
    next_id: u64,
    queries: FnvHashMap<QueryId, Query>,
    requests: FnvHashMap<OutboundRequestId, (QueryId, PeerId)>,
    /// Requests of queries that ended (or of their entry correction): their outcomes are
    /// swallowed, never reported as the application's. Each leaves when its outcome arrives,
    /// which every request's timeout guarantees.
    orphans: FnvHashSet<OutboundRequestId>,
    /// Request ids by query, so that ending a query finds its requests without a scan.
    by_query: FnvHashMap<QueryId, Vec<OutboundRequestId>>,
    /// Lookup requests in flight, of running and ended queries: when they left. Each leaves
    /// with its outcome, like an orphan.
    sent: FnvHashMap<OutboundRequestId, Sent>,
    /// Round trips of the lookup requests answered, which set the next requests' deadlines.
    rtt: RttEstimator,
    /// Fed by the lookups that run to their end; sets the thresholds of optimistic writes.
    netsize: NetworkSizeEstimator,
}

impl QueryPool {
    /// Starts a query for `key` driven by `lookup` (built for the same key).
    pub(crate) fn start(
        &mut self,
        key: Vec<u8>,
        kind: Operation,
        lookup: Lookup,
        timeout: Duration,
        now: Instant,
    ) -> QueryId {
        let id = QueryId(self.next_id);
        self.next_id += 1;
        self.queries.insert(
            id,
            Query {
                key,
                kind,
                lookup,
                dials: 0,
                fanout: None,
                deadline: later(now, timeout),
                stats: QueryStats::new(now),
                outbox: Vec::new(),
                unsent: Vec::new(),
                finished: None,
            },
        );
        id
    }

    /// Notes that the query's lookup started from the accelerated client's full table.
    pub(crate) fn mark_accelerated(&mut self, id: QueryId) {
        if let Some(query) = self.queries.get_mut(&id) {
            query.stats.accelerated = true;
        }
    }

    /// Number of queries in flight.
    pub(crate) fn len(&self) -> usize {
        self.queries.len()
    }

    /// Makes the writes of a PutValue or Provide query optimistic, with thresholds from the
    /// network-size estimate at `now`. Returns false (the query stays as it was: writes after
    /// the lookup) without an estimate, or for another kind of query.
    pub(crate) fn write_optimistically(&mut self, id: QueryId, now: Instant) -> bool {
        let Ok(others) = self.netsize.estimate(now) else {
            return false;
        };
        let Some(query) = self.queries.get_mut(&id) else {
            return false;
        };
        if !matches!(
            query.kind,
            Operation::PutValue { .. } | Operation::Provide { .. }
        ) || query.fanout.is_some()
        {
            return false;
        }
        let plan = Plan::new(others, query.lookup.config().k);
        query.fanout = Some(Writes::optimistic(plan));
        true
    }

    /// Takes a lookup's `k` closest peers as a sample of the network's size (see
    /// [`NetworkSizeEstimator::track`]); a lookup with fewer is ignored.
    pub(crate) fn track_network_size(
        &mut self,
        local: &Key,
        target: &Key,
        closest: &[Key],
        k: usize,
        bucket_fill: usize,
        now: Instant,
    ) {
        if self.netsize.k() != k {
            self.netsize = NetworkSizeEstimator::new(k);
        }
        if closest.len() >= k {
            let _ = self
                .netsize
                .track(local, target, &closest[..k], bucket_fill, now);
        }
    }

    /// The network-size estimate at `now`: DHT servers other than this node.
    pub(crate) fn network_size(&self, now: Instant) -> Result<f64, EstimateError> {
        self.netsize.estimate(now)
    }

    /// Reports a progress found locally before the query asks anyone (the local store).
    pub(crate) fn add_local_record(&mut self, id: QueryId, record: Record) {
        if let Some(Query {
            kind: Operation::GetValue { records, .. },
            ..
        }) = self.queries.get_mut(&id)
        {
            records.push((None, record));
        }
    }

    /// Adds the local store's providers, reported before the query asks anyone, so that they
    /// are part of the result and not repeated. Returns whether they reach the limit.
    pub(crate) fn add_local_providers(&mut self, id: QueryId, providers: &[PeerRecord]) -> bool {
        if let Some(Query {
            kind: Operation::GetProviders { seen, limit, found },
            ..
        }) = self.queries.get_mut(&id)
        {
            for provider in providers {
                if seen.insert(provider.id) {
                    found.push(provider.clone());
                }
            }
            return limit.is_some_and(|l| seen.len() >= l);
        }
        false
    }

    /// Ends a query now; its result is `result`.
    pub(crate) fn finish(&mut self, id: QueryId, result: Outcome) {
        if let Some(query) = self.queries.get_mut(&id) {
            query.finished.get_or_insert(result);
        }
    }

    /// Removes a query without a result (cancelled by the application).
    pub(crate) fn cancel(&mut self, id: QueryId) -> bool {
        self.end_requests(id);
        self.queries.remove(&id).is_some()
    }

    /// The query's requests still in flight become orphans.
    fn end_requests(&mut self, query: QueryId) {
        for id in self.by_query.remove(&query).unwrap_or_default() {
            if self.requests.remove(&id).is_some() {
                self.orphans.insert(id);
            }
        }
    }

    /// A request the pool asked for was sent with this id.
    pub(crate) fn on_sent(&mut self, id: OutboundRequestId, query: QueryId, peer: PeerId) {
        match self.queries.get_mut(&query) {
            Some(q) => {
                q.stats.requests += 1;
                if let Some(i) = q.unsent.iter().position(|(p, _)| *p == peer) {
                    self.sent.insert(id, q.unsent.swap_remove(i).1);
                }
                self.requests.insert(id, (query, peer));
                self.by_query.entry(query).or_default().push(id);
            }
            // Sent for a query that just ended (entry correction): nobody waits for it.
            None => {
                self.orphans.insert(id);
            }
        }
    }

    /// Whether the request belongs to a query (running or ended).
    #[cfg(test)]
    pub(crate) fn owns(&self, id: &OutboundRequestId) -> bool {
        self.requests.contains_key(id) || self.orphans.contains(id)
    }

    /// The earliest moment something times out.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.queries
            .values()
            .flat_map(|q| {
                // Once the lookup ended, it is no longer stepped: a request it left waiting
                // would keep a deadline in the past here and the timer would never fire again.
                let walking = q.fanout.as_ref().is_none_or(|w| !w.walked());
                [
                    Some(q.deadline),
                    q.lookup.next_deadline().filter(|_| walking),
                ]
            })
            .flatten()
            .min()
    }

    /// Feeds back the outcome of a request sent for a query, at `now`. `addresses` keeps, of
    /// the addresses the answer gives for a peer, those worth dialling (it knows who answered).
    pub(crate) fn on_result(
        &mut self,
        id: OutboundRequestId,
        result: Result<Option<Response>, RequestError>,
        now: Instant,
        validators: &Validators,
        addresses: &AddressFilter<'_>,
    ) -> Vec<PoolAction> {
        // Every lookup request answered is a sample, however late, even for a query that
        // ended: see `routing::rtt`.
        if let Some(sent) = self.sent.remove(&id) {
            if matches!(result, Ok(Some(_))) {
                let rtt = now.saturating_duration_since(sent.at);
                self.rtt.record(sent.route, rtt, now);
            }
        }
        if self.orphans.remove(&id) {
            return Vec::new();
        }
        let Some((query_id, peer)) = self.requests.remove(&id) else {
            return Vec::new();
        };
        if let Some(ids) = self.by_query.get_mut(&query_id) {
            ids.retain(|i| *i != id);
        }
        let Some(query) = self.queries.get_mut(&query_id) else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        if on_write_outcome(query, &peer, &result) {
            return actions;
        }
        match result {
            Ok(Some(response)) => {
                query.stats.successes += 1;
                // The lookup takes no more closer peers than this (the responder may list
                // itself too): the others are not worth the work.
                let max_closer = query.lookup.config().max_closer_per_response + 1;
                let response = sanitize(response, max_closer, addresses);
                let closer =
                    handle_response(query, query_id, peer, response, validators, &mut actions);
                query.lookup.on_success(&peer, closer);
                write_early(query, query_id, peer, &mut actions);
            }
            Ok(None) | Err(_) => {
                query.stats.failures += 1;
                query.lookup.on_failure(&peer);
            }
        }
        // The estimate may have moved: the requests of this query still in flight follow it
        // (a lookup that started cold gives up on its silent peers once its first answers
        // tell how long answers take).
        for id in self.by_query.get(&query_id).into_iter().flatten() {
            if let (Some(sent), Some((_, peer))) = (self.sent.get(id), self.requests.get(id)) {
                time_request(&mut query.lookup, peer, sent, &self.rtt, now);
            }
        }
        actions
    }

    /// Advances every query: timeouts, next requests, results. `connected` says whether a
    /// peer has a connection open (asking one that has not costs a dial of the lookup's
    /// budget).
    pub(crate) fn poll(
        &mut self,
        now: Instant,
        validators: &Validators,
        connected: &dyn Fn(&PeerId) -> bool,
    ) -> Vec<PoolAction> {
        let mut actions = Vec::new();
        let mut done = Vec::new();
        for (id, query) in &mut self.queries {
            if query.finished.is_none() && query.deadline <= now {
                query.finished = Some(timeout_result(query, validators));
            }
            if query.finished.is_none() {
                let rtt = &self.rtt;
                advance(query, *id, now, validators, connected, rtt, &mut actions);
            }
            if query.finished.is_none() {
                report_early(query, *id, now, &mut actions);
            }
            // After `advance`: what it queued (fan-out, entry correction) goes out now.
            for (peer, addrs, request) in query.outbox.drain(..) {
                actions.push(PoolAction::Send {
                    query: *id,
                    peer,
                    addrs,
                    request,
                });
            }
            if query.finished.is_some() {
                done.push(*id);
            }
        }
        for id in done {
            let mut query = self.queries.remove(&id).expect("listed");
            self.end_requests(id);
            query.stats.finish(now, query.lookup.hops());
            // A refresh nobody answered (every dial failed, say at start-up) refreshed
            // nothing: the bucket stays due, for the next bootstrap or refresh.
            if let (
                Operation::Bootstrap {
                    bucket: Some(bucket),
                },
                true,
            ) = (&query.kind, query.stats.successes > 0)
            {
                let bucket = *bucket;
                actions.push(PoolAction::Refreshed(bucket));
            }
            let outcome = query.finished.take().expect("finished");
            let result = into_result(&mut query, outcome);
            match query.fanout.as_ref().filter(|w| w.reported()) {
                // The result went out already: what the writes achieved in the end.
                Some(writes) => {
                    let summary = writes.summary(&query.lookup.result());
                    actions.push(PoolAction::WritesSettled(id, summary, query.stats));
                }
                None => actions.push(PoolAction::Finished(id, result, query.stats)),
            }
        }
        actions
    }
}

/// Keeps, of the addresses an answer gives for a peer, those worth dialling.
pub(crate) type AddressFilter<'a> = dyn Fn(&PeerId, Vec<Multiaddr>) -> Vec<Multiaddr> + 'a;

/// Applies `addresses` to every peer an answer names (the first `max_closer` closer peers, and
/// the providers).
pub(super) fn sanitize(
    response: Response,
    max_closer: usize,
    addresses: &AddressFilter<'_>,
) -> Response {
    let clean = |peers: Vec<PeerRecord>, max: usize| -> Vec<PeerRecord> {
        peers
            .into_iter()
            .take(max)
            .map(|p| PeerRecord {
                addrs: addresses(&p.id, p.addrs),
                ..p
            })
            .collect()
    };
    match response {
        Response::FindNode { closer_peers } => Response::FindNode {
            closer_peers: clean(closer_peers, max_closer),
        },
        Response::GetValue {
            record,
            closer_peers,
        } => Response::GetValue {
            record,
            closer_peers: clean(closer_peers, max_closer),
        },
        Response::GetProviders {
            providers,
            closer_peers,
        } => Response::GetProviders {
            providers: clean(providers, usize::MAX),
            closer_peers: clean(closer_peers, max_closer),
        },
        other => other,
    }
}

fn lookup_request(query: &Query) -> Request {
    let key = query.key.clone();
    match query.kind {
        Operation::GetValue { .. } => Request::GetValue { key },
        Operation::GetProviders { .. } => Request::GetProviders { key },
        _ => Request::FindNode { key },
    }
}

/// Takes what an answer says for the operation; returns the closer peers for the lookup.
fn handle_response(
    query: &mut Query,
    id: QueryId,
    peer: PeerId,
    response: Response,
    validators: &Validators,
    actions: &mut Vec<PoolAction>,
) -> Vec<PeerRecord> {
    match response {
        Response::FindNode { closer_peers } => {
            if let Operation::FindPeer { target } = query.kind {
                if let Some(found) = closer_peers
                    .iter()
                    .find(|p| p.id == target && !p.addrs.is_empty())
                {
                    query.finished = Some(Outcome::Peer(found.clone()));
                }
            }
            closer_peers
        }
        Response::GetValue {
            record,
            closer_peers,
        } => {
            if let Operation::GetValue {
                records,
                without,
                quorum,
            } = &mut query.kind
            {
                match record.filter(|r| r.key == query.key) {
                    Some(r) if validators.validate(&r.key, &r.value).is_ok() => {
                        actions.push(PoolAction::Progress(
                            id,
                            QueryProgress::RecordFound {
                                peer,
                                record: r.clone(),
                            },
                        ));
                        records.push((Some(peer), r));
                        if quorum.is_some_and(|q| records.len() >= q) {
                            query.finished = Some(best_record(&query.key, records, validators));
                            correct_entries(query);
                            return Vec::new();
                        }
                    }
                    // Invalid records are ignored; the peer is corrected like one without.
                    _ => without.push(peer),
                }
            }
            closer_peers
        }
        Response::GetProviders {
            providers,
            closer_peers,
        } => {
            if let Operation::GetProviders { limit, seen, found } = &mut query.kind {
                // Bounded by the limit (the behaviour always sets one): a hostile answer with
                // thousands of providers cannot grow the query.
                let room = limit.map_or(usize::MAX, |l| l.saturating_sub(seen.len()));
                let new: Vec<PeerRecord> = providers
                    .into_iter()
                    .filter(|p| seen.insert(p.id))
                    .take(room)
                    .collect();
                if !new.is_empty() {
                    found.extend(new.iter().cloned());
                    actions.push(PoolAction::Progress(id, QueryProgress::ProvidersFound(new)));
                }
                if limit.is_some_and(|l| seen.len() >= l) {
                    query.finished = Some(Outcome::Providers);
                }
            }
            closer_peers
        }
        Response::PutValue { .. } | Response::Ping => Vec::new(),
    }
}

/// Entry correction, once a GetValue has its best record: the closest peers that answered
/// without a record, or with an outdated one, are sent the best.
fn correct_entries(query: &mut Query) {
    let (
        Some(Outcome::Record(best)),
        Operation::GetValue {
            records, without, ..
        },
    ) = (&query.finished, &query.kind)
    else {
        return;
    };
    let outdated = records
        .iter()
        .filter(|(_, r)| r.value != best.value)
        .filter_map(|(p, _)| *p);
    let stale: FnvHashSet<PeerId> = without.iter().copied().chain(outdated).collect();
    for peer in query
        .lookup
        .result()
        .iter()
        .filter(|p| stale.contains(&p.id))
    {
        query.outbox.push((
            peer.id,
            peer.addrs.clone(),
            Request::PutValue {
                record: best.clone(),
            },
        ));
    }
}

fn best_record(
    key: &[u8],
    records: &[(Option<PeerId>, Record)],
    validators: &Validators,
) -> Outcome {
    let values: Vec<&[u8]> = records.iter().map(|(_, r)| r.value.as_slice()).collect();
    match validators.select(key, &values) {
        Ok(best) => Outcome::Record(records[best].1.clone()),
        Err(_) => Outcome::Failed(QueryError::NotFound),
    }
}

/// The result at the deadline: what was achieved so far when there is something to report
/// (stores done in fan-out, records received), else a timeout.
fn timeout_result(query: &Query, validators: &Validators) -> Outcome {
    if let Some(writes) = query
        .fanout
        .as_ref()
        .filter(|w| w.walked() || w.succeeded() > 0)
    {
        return fanout_result(query, writes.succeeded());
    }
    if let Operation::GetValue { records, .. } = &query.kind {
        if !records.is_empty() {
            return best_record(&query.key, records, validators);
        }
    }
    Outcome::Failed(QueryError::Timeout)
}

/// One step of a query: ask the next peers, or move on to its end.
fn advance(
    query: &mut Query,
    id: QueryId,
    now: Instant,
    validators: &Validators,
    connected: &dyn Fn(&PeerId) -> bool,
    rtt: &RttEstimator,
    actions: &mut Vec<PoolAction>,
) {
    if let Some(writes) = query.fanout.as_ref().filter(|w| w.walked()) {
        if writes.none_pending() {
            query.finished = Some(fanout_result(query, writes.succeeded()));
        }
        return;
    }
    loop {
        match query.lookup.step(now) {
            LookupStep::Ask { peer, addrs } => {
                let route = if connected(&peer) {
                    Route::Connected
                } else {
                    if query.dials >= query.lookup.config().max_dials {
                        // The budget is spent: only peers already connected are asked now.
                        query.lookup.on_failure(&peer);
                        continue;
                    }
                    query.dials += 1;
                    Route::Dial
                };
                let sent = Sent { at: now, route };
                time_request(&mut query.lookup, &peer, &sent, rtt, now);
                query.unsent.push((peer, sent));
                actions.push(PoolAction::Send {
                    query: id,
                    peer,
                    addrs,
                    request: lookup_request(query),
                });
            }
            LookupStep::Wait => return,
            LookupStep::Finished => break,
        }
    }
    let closest = query.lookup.result();
    actions.push(PoolAction::Walked {
        target: *query.lookup.target(),
        closest: closest.iter().map(|p| p.id).collect(),
    });
    query.finished = match &mut query.kind {
        Operation::ClosestPeers => Some(Outcome::Peers(closest.clone())),
        Operation::FindPeer { .. } => Some(Outcome::Failed(QueryError::NotFound)),
        Operation::Bootstrap { .. } => Some(Outcome::Answered(closest.len())),
        Operation::GetProviders { .. } => Some(Outcome::Providers),
        Operation::GetValue { records, .. } => {
            if records.is_empty() {
                Some(Outcome::Failed(QueryError::NotFound))
            } else {
                let result = best_record(&query.key, records, validators);
                Some(result)
            }
        }
        // The writes, below.
        Operation::PutValue { .. } | Operation::Provide { .. } => None,
    };
    correct_entries(query);
    if query.finished.is_none() {
        write_closest(query, &closest);
    }
}

#[path = "query_outcome.rs"]
mod outcome;
use outcome::{fanout_result, fanout_result_empty, into_result};

#[path = "query_writes.rs"]
mod writes;
use writes::{on_write_outcome, report_early, write_closest, write_early};

#[cfg(test)]
#[path = "query_tests.rs"]
pub(super) mod tests;
