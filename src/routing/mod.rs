//! Routing: the iterative query engine ([`lookup`]) and the DHT operations built on it. The
//! operations themselves are methods of [`Behaviour`](crate::Behaviour); their results arrive
//! as [`Event::QueryFinished`](crate::Event::QueryFinished), with progress (records, providers)
//! streamed as [`Event::QueryProgress`](crate::Event::QueryProgress). Where each lookup starts,
//! from the full table of the accelerated client or from the k-bucket table, is
//! [`accelerated`]'s choice.

pub mod accelerated;
pub(crate) mod addresses;
pub mod crawler;
#[cfg(test)]
mod crawler_sim;
pub mod lookup;
#[cfg(test)]
mod lookup_sim;
pub mod netsize;
pub(crate) mod optimistic;
pub(crate) mod query;
pub mod rtt;

use std::time::{Duration, Instant};

use crate::network::message::{PeerRecord, Record};
use libp2p::PeerId;

/// Identifies a DHT operation from its start to its [`QueryResult`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId(pub(crate) u64);

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The operation's deadline passed.
    #[error("query timed out")]
    Timeout,
    /// The lookup finished without finding what was asked for.
    #[error("not found")]
    NotFound,
    /// Fewer peers than the quorum stored the record.
    #[error("{stored} peers stored the record, {needed} needed")]
    QuorumFailed {
        /// Peers that stored it.
        stored: usize,
        /// The quorum.
        needed: usize,
    },
    /// No peer could be reached to store at.
    #[error("no peers to store at")]
    NoPeers,
}

/// The outcome of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// [`get_closest_peers`](crate::Behaviour::get_closest_peers): the k closest peers that
    /// answered, closest first, with addresses.
    ClosestPeers(Result<Vec<PeerRecord>, QueryError>),
    /// [`find_peer`](crate::Behaviour::find_peer): the peer with its addresses.
    FindPeer(Result<PeerRecord, QueryError>),
    /// [`get_value`](crate::Behaviour::get_value): the best valid record.
    GetValue(Result<Record, QueryError>),
    /// [`put_value`](crate::Behaviour::put_value): how many peers stored it (echoed it back)
    /// when the result was reported. With optimistic provide that can be before the last
    /// write finished (once 15 of 20 stored it); [`Event::WritesSettled`](crate::Event::WritesSettled)
    /// then has the final count.
    PutValue(Result<usize, QueryError>),
    /// [`find_providers`](crate::Behaviour::find_providers): how many distinct providers were
    /// reported (the providers themselves came as progress).
    GetProviders(Result<usize, QueryError>),
    /// [`provide`](crate::Behaviour::provide): to how many peers the ADD_PROVIDER was written
    /// (and flushed) when the result was reported. With optimistic provide that can be before
    /// the last write finished (once 15 of 20 were written);
    /// [`Event::WritesSettled`](crate::Event::WritesSettled) then has the final count.
    Provide(Result<usize, QueryError>),
    /// [`bootstrap`](crate::Behaviour::bootstrap) or a refresh: peers that answered.
    Bootstrap(Result<usize, QueryError>),
}

/// What became of the writes of a [`put_value`](crate::Behaviour::put_value) or
/// [`provide`](crate::Behaviour::provide) that reported its result before its last write
/// finished (optimistic provide, see
/// [`Config::with_optimistic_provide`](crate::Config::with_optimistic_provide)); sent with
/// [`Event::WritesSettled`](crate::Event::WritesSettled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WritesSummary {
    /// Peers that stored the record: for PUT_VALUE, those that echoed it; for ADD_PROVIDER
    /// (which has no answer), those the message was written and flushed to.
    pub stored: usize,
    /// Peers sent the record that did not store it (failed, or still pending at the
    /// operation's deadline).
    pub failed: usize,
    /// Peers in the lookup's final result: the `k` closest that answered.
    pub closest: usize,
    /// Of those, how many stored the record.
    pub stored_at_closest: usize,
}

/// A partial result, streamed while the operation runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryProgress {
    /// New providers, de-duplicated (the local store's first).
    ProvidersFound(Vec<PeerRecord>),
    /// A valid record from a peer.
    RecordFound {
        /// Who sent it.
        peer: PeerId,
        /// The record.
        record: Record,
    },
}

/// What an operation cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryStats {
    /// Requests sent.
    pub requests: u32,
    /// Lookup requests answered.
    pub successes: u32,
    /// Lookup requests failed.
    pub failures: u32,
    /// Rounds of answers needed to reach the farthest peer of the result.
    pub hops: u32,
    /// Whether the lookup started from the accelerated client's full table and asked its
    /// closest peers at once (see [`accelerated`]), rather than walking from the k-bucket
    /// table.
    pub accelerated: bool,
    start: Instant,
    duration: Duration,
}

impl QueryStats {
    pub(crate) fn new(start: Instant) -> Self {
        Self {
            requests: 0,
            successes: 0,
            failures: 0,
            hops: 0,
            accelerated: false,
            start,
            duration: Duration::ZERO,
        }
    }

    pub(crate) fn finish(&mut self, now: Instant, hops: u32) {
        self.duration = now.saturating_duration_since(self.start);
        self.hops = hops;
    }

    /// From start to result.
    pub fn duration(&self) -> Duration {
        self.duration
    }
}
