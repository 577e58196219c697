//! How a query's end becomes its [`QueryResult`]: the outcome of its writes, its key, and
//! what it found before a failure.

use super::{Operation, Outcome, Query};
use crate::provider::ProviderKey;
use crate::routing::{QueryError, QueryFailure, QueryResult};

/// The outcome of a fan-out that stored at `succeeded` peers (pending ones count as failed).
pub(super) fn fanout_result(query: &Query, succeeded: usize) -> Outcome {
    match &query.kind {
        Operation::PutValue { quorum, .. } if succeeded < *quorum => {
            Outcome::Failed(QueryError::QuorumFailed {
                stored: succeeded,
                needed: *quorum,
            })
        }
        Operation::PutValue { .. } => Outcome::Stored(succeeded),
        _ if succeeded > 0 => Outcome::Stored(succeeded),
        _ => Outcome::Failed(QueryError::NoPeers),
    }
}

pub(super) fn fanout_result_empty() -> Outcome {
    Outcome::Failed(QueryError::NoPeers)
}

/// The result of `query` that ended with `outcome`: its key, and what it found before a
/// failure. A lookup that found nothing because not one server answered says so
/// ([`QueryError::NoServers`]) rather than reporting an empty success.
pub(super) fn into_result(query: &mut Query, outcome: Outcome) -> QueryResult {
    let outcome = explain_empty(query, outcome);
    let key = query.key.clone();
    let closest = query.lookup.result();
    let stored = query.fanout.as_ref().map_or(0, |w| w.succeeded());
    match &mut query.kind {
        Operation::ClosestPeers => QueryResult::ClosestPeers {
            key,
            result: match outcome {
                Outcome::Peers(peers) => Ok(peers),
                other => Err(failure(other, closest)),
            },
        },
        Operation::FindPeer { target } => QueryResult::FindPeer {
            peer: *target,
            result: match outcome {
                Outcome::Peer(peer) => Ok(peer),
                other => Err(failure(other, closest)),
            },
        },
        Operation::GetValue { .. } => QueryResult::GetValue {
            key,
            result: match outcome {
                Outcome::Record(record) => Ok(record),
                other => Err(failure(other, closest)),
            },
        },
        Operation::PutValue { .. } => QueryResult::PutValue {
            key,
            result: match outcome {
                Outcome::Stored(n) => Ok(n),
                other => Err(failure(other, stored)),
            },
        },
        Operation::Provide { .. } => QueryResult::Provide {
            key: ProviderKey::from_stored(key),
            result: match outcome {
                Outcome::Stored(n) => Ok(n),
                other => Err(failure(other, stored)),
            },
        },
        Operation::GetProviders { found, .. } => {
            let found = std::mem::take(found);
            QueryResult::FindProviders {
                key: ProviderKey::from_stored(key),
                result: match outcome {
                    Outcome::Providers => Ok(found),
                    other => Err(failure(other, found)),
                },
            }
        }
        Operation::Bootstrap { .. } => QueryResult::Bootstrap(match outcome {
            Outcome::Answered(n) => Ok(n),
            other => Err(failure(other, closest.len())),
        }),
    }
}

/// An empty or not-found outcome of a query that not one server answered becomes
/// [`QueryError::NoServers`]: the likely cause (no node serves the DHT) is worth more to the
/// caller than an empty success.
fn explain_empty(query: &Query, outcome: Outcome) -> Outcome {
    if query.stats.successes > 0 {
        return outcome;
    }
    let empty = match &outcome {
        Outcome::Peers(peers) => peers.is_empty(),
        Outcome::Answered(n) => *n == 0,
        Outcome::Failed(error) => matches!(error, QueryError::NotFound | QueryError::NoPeers),
        Outcome::Providers => {
            matches!(&query.kind, Operation::GetProviders { found, .. } if found.is_empty())
        }
        Outcome::Peer(_) | Outcome::Record(_) | Outcome::Stored(_) => false,
    };
    if empty {
        Outcome::Failed(QueryError::NoServers {
            asked: query.stats.requests,
        })
    } else {
        outcome
    }
}

/// The failure of an outcome that is not its operation's success.
fn failure<P>(outcome: Outcome, found: P) -> QueryFailure<P> {
    let error = match outcome {
        Outcome::Failed(error) => error,
        // An outcome of another operation's kind cannot be built; were it, it is no answer.
        _ => QueryError::NotFound,
    };
    QueryFailure { error, found }
}
