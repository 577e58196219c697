//! The writes of PutValue and Provide queries: after the lookup, and during it when
//! optimistic (see [`optimistic`](super::super::optimistic)). A child of the query pool, so
//! that it reads the queries' state where it lives.

use std::time::Instant;

use libp2p::PeerId;

use super::{fanout_result, fanout_result_empty, into_result, Operation, PoolAction, Query};
use crate::network::message::{PeerRecord, Request, Response};
use crate::network::RequestError;
use crate::routing::optimistic::Writes;
use crate::routing::QueryId;

/// Takes the outcome of a request to `peer` if it is a write's; returns whether the query is
/// done with it (a write's, or a late lookup answer once the writes began after the lookup).
pub(super) fn on_write_outcome(
    query: &mut Query,
    peer: &PeerId,
    result: &Result<Option<Response>, RequestError>,
) -> bool {
    let Some(writes) = query.fanout.as_mut() else {
        return false;
    };
    // A write's outcome is told from a lookup answer by its shape: an optimistic write goes
    // only to a peer that answered the lookup, but after a lookup with go's finish rule the
    // result may hold peers still being asked. A failure could be either; it counts as the
    // write's (a write's success then arriving is not counted: an undercount, never more).
    let is_write = match (&query.kind, result) {
        (Operation::PutValue { .. }, Ok(Some(Response::PutValue { .. }))) => true,
        (Operation::Provide { .. }, Ok(None)) => true,
        (_, Ok(Some(_))) => false,
        _ => true,
    };
    if is_write && writes.awaits(peer) {
        let stored = match (&query.kind, result) {
            // go's client checks that the echo carries our value.
            (Operation::PutValue { record, .. }, Ok(Some(Response::PutValue { record: echo }))) => {
                echo.value == record.value
            }
            (Operation::PutValue { .. }, _) => false,
            (_, r) => r.is_ok(),
        };
        writes.on_outcome(peer, stored);
        return true;
    }
    writes.walked()
}

/// The lookup ended with `closest`: those not sent the record yet are, now.
pub(super) fn write_closest(query: &mut Query, closest: &[PeerRecord]) {
    let writes = query.fanout.get_or_insert_with(Writes::default);
    let unwritten = writes.on_walk_end(closest);
    if writes.none_written() {
        query.finished = Some(fanout_result_empty());
    } else if let Some(request) = write_request(query) {
        for peer in unwritten {
            query.outbox.push((peer.id, peer.addrs, request.clone()));
        }
    }
}

/// The request that writes a PutValue's record or a Provide's provider record.
fn write_request(query: &Query) -> Option<Request> {
    match &query.kind {
        Operation::PutValue { record, .. } => Some(Request::PutValue {
            record: record.clone(),
        }),
        Operation::Provide { provider } => Some(Request::AddProvider {
            key: query.key.clone(),
            providers: vec![provider.clone()],
        }),
        _ => None,
    }
}

/// After `peer` answered the lookup, optimistic writes: the peers that are, by the estimate,
/// among the k closest are sent the record now (see `routing::optimistic`).
pub(super) fn write_early(
    query: &mut Query,
    id: QueryId,
    peer: PeerId,
    actions: &mut Vec<PoolAction>,
) {
    let Some(writes) = query.fanout.as_mut() else {
        return;
    };
    let to_write = writes.on_answer(peer, query.lookup.target(), &query.lookup.result());
    if to_write.is_empty() {
        return;
    }
    let Some(request) = write_request(query) else {
        return;
    };
    for peer in to_write {
        actions.push(PoolAction::Send {
            query: id,
            peer: peer.id,
            addrs: peer.addrs,
            request: request.clone(),
        });
    }
}

/// Reports an optimistic operation's result once enough peers stored the record; its other
/// writes (and its lookup) go on, and their outcome comes as `WritesSettled`.
pub(super) fn report_early(
    query: &mut Query,
    id: QueryId,
    now: Instant,
    actions: &mut Vec<PoolAction>,
) {
    let quorum = match query.kind {
        Operation::PutValue { quorum, .. } => quorum,
        _ => 1,
    };
    let Some(writes) = query.fanout.as_mut() else {
        return;
    };
    if !writes.ready_to_report(quorum) {
        return;
    }
    writes.mark_reported();
    let succeeded = writes.succeeded();
    let mut stats = query.stats;
    stats.finish(now, query.lookup.hops());
    let outcome = fanout_result(query, succeeded);
    actions.push(PoolAction::Finished(id, into_result(query, outcome), stats));
}
