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
use crate::provider::ProviderKey;
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
    /// Not one DHT server answered: the routing table was empty (`asked` is 0), or every peer
    /// asked failed. The usual cause on a local network is that no node serves the DHT: in
    /// automatic mode a node stays a client until the swarm confirms an external address,
    /// which never happens on 127.0.0.1. Give each node one with
    /// `Swarm::add_external_address`, or set [`Mode::Server`](crate::Mode::Server).
    #[error(
        "no DHT server answered ({asked} asked): on a local network, give each node an \
         external address (Swarm::add_external_address) or set Mode::Server"
    )]
    NoServers {
        /// Requests sent.
        asked: u32,
    },
}

impl QueryError {
    /// A short name for logs and metrics labels: `timeout`, `not_found`, `quorum_failed`,
    /// `no_peers`, `no_servers`.
    pub fn as_str(&self) -> &'static str {
        match self {
            QueryError::Timeout => "timeout",
            QueryError::NotFound => "not_found",
            QueryError::QuorumFailed { .. } => "quorum_failed",
            QueryError::NoPeers => "no_peers",
            QueryError::NoServers { .. } => "no_servers",
        }
    }
}

/// A failed operation: why, and what it had found when it stopped (a lookup that timed out
/// still returns the peers it reached, as `libp2p-kad` does). `found` is the partial form of
/// the result: the closest peers that answered for a lookup that looked for peers, records or
/// a peer; the providers found for [`QueryResult::FindProviders`]; the peers that stored the
/// record for a write; the peers that answered for a bootstrap.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct QueryFailure<P> {
    /// Why it failed.
    pub error: QueryError,
    /// What it found before it stopped.
    pub found: P,
}

/// Which operation a [`QueryResult`] is the outcome of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// [`get_closest_peers`](crate::Behaviour::get_closest_peers).
    ClosestPeers,
    /// [`find_peer`](crate::Behaviour::find_peer).
    FindPeer,
    /// [`get_value`](crate::Behaviour::get_value).
    GetValue,
    /// [`put_value`](crate::Behaviour::put_value).
    PutValue,
    /// [`find_providers`](crate::Behaviour::find_providers).
    FindProviders,
    /// [`provide`](crate::Behaviour::provide).
    Provide,
    /// [`bootstrap`](crate::Behaviour::bootstrap).
    Bootstrap,
}

impl QueryKind {
    /// A short name for logs and metrics labels (`closest_peers`, `find_peer`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            QueryKind::ClosestPeers => "closest_peers",
            QueryKind::FindPeer => "find_peer",
            QueryKind::GetValue => "get_value",
            QueryKind::PutValue => "put_value",
            QueryKind::FindProviders => "find_providers",
            QueryKind::Provide => "provide",
            QueryKind::Bootstrap => "bootstrap",
        }
    }
}

/// The outcome of an operation, with the key it was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryResult {
    /// [`get_closest_peers`](crate::Behaviour::get_closest_peers): the k closest peers that
    /// answered, closest first, with addresses.
    ClosestPeers {
        /// The key looked up.
        key: Vec<u8>,
        /// The peers, or why not (with the peers reached so far).
        result: Result<Vec<PeerRecord>, QueryFailure<Vec<PeerRecord>>>,
    },
    /// [`find_peer`](crate::Behaviour::find_peer): the peer with its addresses.
    FindPeer {
        /// The peer looked for.
        peer: PeerId,
        /// It, or why not (with the closest peers that answered).
        result: Result<PeerRecord, QueryFailure<Vec<PeerRecord>>>,
    },
    /// [`get_value`](crate::Behaviour::get_value): the best valid record.
    GetValue {
        /// The record key.
        key: Vec<u8>,
        /// The record, or why not (with the closest peers that answered).
        result: Result<Record, QueryFailure<Vec<PeerRecord>>>,
    },
    /// [`put_value`](crate::Behaviour::put_value): how many peers stored it (echoed it back)
    /// when the result was reported. With optimistic provide that can be before the last
    /// write finished (once 15 of 20 stored it); [`Event::WritesSettled`](crate::Event::WritesSettled)
    /// then has the final count.
    PutValue {
        /// The record key.
        key: Vec<u8>,
        /// How many stored it, or why too few did (with how many did).
        result: Result<usize, QueryFailure<usize>>,
    },
    /// [`find_providers`](crate::Behaviour::find_providers): every distinct provider found,
    /// the local store's first (they also came one by one as
    /// [`QueryProgress::ProvidersFound`]).
    FindProviders {
        /// The key whose providers were looked for.
        key: ProviderKey,
        /// The providers, or why not (with those found before it stopped).
        result: Result<Vec<PeerRecord>, QueryFailure<Vec<PeerRecord>>>,
    },
    /// [`provide`](crate::Behaviour::provide): to how many peers the ADD_PROVIDER was written
    /// (and flushed) when the result was reported. With optimistic provide that can be before
    /// the last write finished (once 15 of 20 were written);
    /// [`Event::WritesSettled`](crate::Event::WritesSettled) then has the final count.
    Provide {
        /// The key announced.
        key: ProviderKey,
        /// How many peers were sent the record, or why none was.
        result: Result<usize, QueryFailure<usize>>,
    },
    /// [`bootstrap`](crate::Behaviour::bootstrap) or a refresh: peers that answered.
    Bootstrap(Result<usize, QueryFailure<usize>>),
}

impl QueryResult {
    /// Which operation this is the outcome of.
    pub fn kind(&self) -> QueryKind {
        match self {
            QueryResult::ClosestPeers { .. } => QueryKind::ClosestPeers,
            QueryResult::FindPeer { .. } => QueryKind::FindPeer,
            QueryResult::GetValue { .. } => QueryKind::GetValue,
            QueryResult::PutValue { .. } => QueryKind::PutValue,
            QueryResult::FindProviders { .. } => QueryKind::FindProviders,
            QueryResult::Provide { .. } => QueryKind::Provide,
            QueryResult::Bootstrap(_) => QueryKind::Bootstrap,
        }
    }

    /// Why the operation failed, or `None` when it succeeded.
    pub fn error(&self) -> Option<&QueryError> {
        fn error<T, P>(result: &Result<T, QueryFailure<P>>) -> Option<&QueryError> {
            result.as_ref().err().map(|f| &f.error)
        }
        match self {
            QueryResult::ClosestPeers { result, .. } => error(result),
            QueryResult::FindPeer { result, .. } => error(result),
            QueryResult::GetValue { result, .. } => error(result),
            QueryResult::PutValue { result, .. } => error(result),
            QueryResult::FindProviders { result, .. } => error(result),
            QueryResult::Provide { result, .. } => error(result),
            QueryResult::Bootstrap(result) => error(result),
        }
    }

    /// Every peer record the result holds (found or partial), to be amended.
    pub(crate) fn peers_mut(&mut self) -> Vec<&mut PeerRecord> {
        fn all<T>(result: &mut Result<T, QueryFailure<Vec<PeerRecord>>>) -> &mut [PeerRecord]
        where
            T: AsMut<[PeerRecord]>,
        {
            match result {
                Ok(found) => found.as_mut(),
                Err(failure) => &mut failure.found,
            }
        }
        match self {
            QueryResult::ClosestPeers { result, .. }
            | QueryResult::FindProviders { result, .. } => all(result).iter_mut().collect(),
            QueryResult::FindPeer { result, .. } => match result {
                Ok(peer) => vec![peer],
                Err(failure) => failure.found.iter_mut().collect(),
            },
            QueryResult::GetValue {
                result: Err(failure),
                ..
            } => failure.found.iter_mut().collect(),
            _ => Vec::new(),
        }
    }

    /// `ok`, or the error's [`QueryError::as_str`]: the outcome label of metrics.
    pub fn outcome(&self) -> &'static str {
        self.error().map_or("ok", QueryError::as_str)
    }
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
#[derive(Clone, Copy, PartialEq, Eq)]
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

impl std::fmt::Debug for QueryStats {
    /// The public figures only: the start instant means nothing outside the process.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryStats")
            .field("requests", &self.requests)
            .field("successes", &self.successes)
            .field("failures", &self.failures)
            .field("hops", &self.hops)
            .field("accelerated", &self.accelerated)
            .field("duration", &self.duration)
            .finish()
    }
}
