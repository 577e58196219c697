//! Routing Table: the peers we know, with their addresses. It answers `LocalClosestPeers` and
//! decides which peers are kept.
//!
//! [`RoutingTable`] is the module's contract; [`KBucketTable`] is the default implementation.
//! The table is sans-IO: time is an argument, and it never sends anything itself. It hands out
//! what should be sent ("check this peer", "refresh this bucket") and hears back how it went.

mod address_book;
mod diversity;
pub(crate) mod failure;
mod full;
mod kbuckets;
pub(crate) mod keep_alive;
pub(crate) mod maintenance;

use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::Rng;

pub use diversity::DiversityConfig;
pub use full::{CrawlMerge, FullTable, FullTableConfig, PeerHealth};
pub use kbuckets::{KBucketConfig, KBucketTable};

use crate::key::Key;
use crate::network::message::PeerRecord;

/// The contract of a routing table. The behaviour holds a `Box<dyn RoutingTable>`, so a user can
/// plug in their own ([`Behaviour::with_parts`](crate::Behaviour::with_parts)).
///
/// Only DHT servers may enter: the behaviour calls [`on_server_peer`](Self::on_server_peer)
/// when a peer advertises the protocol, and [`on_request_succeeded`](Self::on_request_succeeded)
/// when a peer answered one of our requests; it never offers client peers or the local peer.
/// Read methods take `&self`.
pub trait RoutingTable: Send + 'static {
    /// LocalClosestPeers: up to `count` peers ordered by XOR distance of their SHA-256 keys to
    /// `target`, closest first, each with its addresses (most recently successful first).
    fn local_closest_peers(&self, target: &Key, count: usize) -> Vec<PeerRecord>;

    /// The addresses of a peer in the table.
    fn addresses(&self, peer: &PeerId) -> Option<&[Multiaddr]>;

    /// Whether the peer is in the table (not counting replacement candidates).
    fn contains(&self, peer: &PeerId) -> bool {
        self.addresses(peer).is_some()
    }

    /// Number of peers in the table.
    fn len(&self) -> usize;

    /// Whether the table is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every peer in the table, in no particular order.
    fn peers(&self) -> Vec<PeerRecord>;

    /// The peer advertises the DHT protocol (it is a server), at these addresses. `observed`
    /// is the remote address of our connection to it, which the peer cannot choose (the
    /// diversity filter counts it).
    fn on_server_peer(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        observed: Option<&Multiaddr>,
        now: Instant,
    ) -> Admission;

    /// The peer answered one of our requests; `addrs` are addresses it was reached at, and
    /// `observed` as for [`on_server_peer`](Self::on_server_peer).
    fn on_request_succeeded(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        observed: Option<&Multiaddr>,
        now: Instant,
    ) -> Admission;

    /// A request to the peer, or a dial of it, failed; `failure` says what that proves (see
    /// [`Failure`]: a dial refused outright, or no answer, which may be our own overload).
    fn on_request_failed(
        &mut self,
        peer: &PeerId,
        failure: Failure,
        now: Instant,
    ) -> Option<Eviction>;

    /// The last connection to the peer closed. The peer stays: it may still be reachable.
    /// `lost` when it was a connection we keep open (see
    /// [`keep_connected`](Self::keep_connected)) and we did not close it (it broke, or the
    /// remote closed it): the peer may be gone, and a table may want to check it.
    fn on_connection_closed(&mut self, peer: &PeerId, lost: bool, now: Instant);

    /// Removes the peer (it stopped serving the protocol, or the user asked).
    fn remove(&mut self, peer: &PeerId) -> Option<Eviction>;

    /// A liveness check handed out could not be sent, or its failure proved nothing (not the
    /// peer's fault): the peer may be handed out again.
    fn on_check_abandoned(&mut self, peer: &PeerId, now: Instant) {
        let _ = (peer, now);
    }

    /// The next peer due for a liveness check, if any; it is handed out once, until its outcome
    /// arrives through `on_request_succeeded`, `on_request_failed` or `on_check_abandoned`.
    fn next_liveness_check(&mut self, now: Instant) -> Option<PeerId> {
        let _ = now;
        None
    }

    /// At most `max` peers of the table whose connections are worth keeping open while idle:
    /// those lookups need most. The default takes the first `max` of [`peers`](Self::peers).
    fn keep_connected(&self, max: usize) -> Vec<PeerId> {
        self.peers().into_iter().take(max).map(|p| p.id).collect()
    }

    /// Lookups that would refresh parts of the keyspace not refreshed within `interval`.
    fn refresh_targets(
        &self,
        now: Instant,
        interval: Duration,
        rng: &mut dyn Rng,
    ) -> Vec<RefreshTarget> {
        let _ = (now, interval, rng);
        Vec::new()
    }

    /// A refresh lookup for the bucket finished.
    fn on_refreshed(&mut self, bucket: usize, now: Instant) {
        let _ = (bucket, now);
    }
}

/// What a failed request or dial proves about a peer, as the behaviour classifies it.
///
/// The two are kept apart because they call for opposite care. A dial refused outright is the
/// remote's own answer: its host (or the memory transport) said nothing listens there, the
/// address now belongs to another peer, or there is no route to its host. A request that got
/// no answer in time may be a silent peer, but also a slow one, or our own node too
/// overloaded to read the answer in time: the 1,000-node run of `benches/network`, every node
/// bootstrapping at once on 2 cores, lost 3,735 table entries to such timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Every address we dialled refused the connection, had no route to its host, or answered
    /// with another peer: the peer is not there. [`KBucketTable`] evicts it at once, as
    /// go-libp2p-kad-dht does on any failed dial.
    Unreachable,
    /// No answer: the request timed out, its stream or connection broke, the answer was
    /// invalid, or the dial timed out. [`KBucketTable`] evicts only after failures in a row
    /// that span a while, so that a burst of timeouts cannot empty the table.
    NoAnswer,
}

/// What happened to a peer offered to the table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The peer entered the table.
    Inserted,
    /// The peer was already in; its addresses and last-seen time were updated.
    Updated,
    /// Its bucket is full: the peer waits in the bucket's replacement cache.
    Pending,
    /// The peer was refused.
    Rejected(RejectReason),
}

/// Why a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// It is the local peer.
    LocalPeer,
    /// No address was given: nobody could reach it through us.
    NoAddresses,
    /// Its IP group already has the most peers allowed in the bucket or the table.
    Diversity,
    /// The table holds as many peers as it may and keeps no waiting list (a [`FullTable`] at
    /// its `max_peers`: the peers crawls vouched for are not pushed out by newcomers).
    TableFull,
}

/// A peer that left the table, and the one that took its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The peer removed.
    pub removed: PeerId,
    /// A replacement candidate moved into the bucket, if one qualified.
    pub promoted: Option<PeerId>,
}

/// Why a peer left the routing table ([`Event::PeerRemoved`](crate::Event::PeerRemoved)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RemovalReason {
    /// It failed requests or a liveness check too often.
    Unresponsive,
    /// A dial of ours was refused outright (nothing listens at its addresses).
    Unreachable,
    /// It stopped serving the protocol (identify says so, or it refused a stream).
    NotServing,
    /// The application removed it ([`Behaviour::remove_peer`](crate::Behaviour::remove_peer)).
    Removed,
}

impl RemovalReason {
    /// A short name for logs and metrics labels.
    pub fn as_str(&self) -> &'static str {
        match self {
            RemovalReason::Unresponsive => "unresponsive",
            RemovalReason::Unreachable => "unreachable",
            RemovalReason::NotServing => "not_serving",
            RemovalReason::Removed => "removed",
        }
    }
}

/// A refresh lookup to run: a FIND_NODE for `target` explores `bucket`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTarget {
    /// The bucket (common-prefix length with the local key).
    pub bucket: usize,
    /// A peer id whose key falls inside the bucket.
    pub target: PeerId,
}
