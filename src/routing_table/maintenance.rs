//! Keeps the routing table fed and healthy from what the network reports: which connected peers
//! serve the protocol (identify), where they listen, how our requests to them went, and which
//! peers are due for a liveness check. Sans-IO: it returns what to send and what to report.
//!
//! A connected peer is offered to the table whenever it says it serves the protocol, with the
//! addresses the [`AddressBook`] holds for it: those survive disconnects, because identify
//! reports an address only once and a peer often comes back (as a server, after starting as a
//! client) on an address it reported before.
//!
//! Failures reach the table classified ([`Failure`]): a dial of ours refused outright, or no
//! answer. No answer is not counted while our own node is overloaded (its timers fire late, see
//! [`Maintenance::on_tick`]): then the timeouts are ours, not the peers'. Liveness checks wait
//! for the overload to pass too.

use std::time::{Duration, Instant};

use fnv::FnvHashMap;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use super::address_book::{AddressBook, Closed};
use super::keep_alive::{KeepAlive, KeptConnections};
use super::{Admission, Eviction, Failure, RemovalReason, RoutingTable};
use crate::network::message::Request;
use crate::network::{OutboundRequestId, RequestError};

/// A periodic timer of the node firing this late means its task waits that long to be polled:
/// the node is overloaded, and answers sit unread while their requests time out. A healthy
/// node's timers are late by milliseconds.
pub(crate) const OVERLOAD_LAG: Duration = Duration::from_secs(1);

/// What a connected peer told us (its addresses are in the address book).
#[derive(Debug, Default)]
struct ConnectedPeer {
    /// The remote address of the first connection: what the diversity filter counts.
    observed: Option<Multiaddr>,
    /// It advertises the protocol: a DHT server.
    server: bool,
}

/// A change to report.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum TableChange {
    /// The peer entered the table.
    Added(PeerId),
    /// The peer left the table, maybe replaced by a candidate, and why.
    Removed(Eviction, RemovalReason),
}

/// Why the DHT dials a peer, as the debug log tells (`kadence::dial`): what a lookup's dials
/// are made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DialReason {
    /// A liveness check of a routing-table peer (never on a lookup's path).
    Liveness,
    /// A routing-table peer whose last connection closed (it expired, or was lost).
    TableReconnect,
    /// A routing-table peer not connected before in this run (a bootstrap peer, a promoted
    /// candidate, one restored from a snapshot).
    TableFirst,
    /// A peer outside the table that was connected before.
    Reconnect,
    /// A peer never connected before, as far as the address book remembers.
    New,
}

/// The routing table with what feeds it.
pub(crate) struct Maintenance {
    table: Box<dyn RoutingTable>,
    connected: FnvHashMap<PeerId, ConnectedPeer>,
    /// Listen addresses (identify) and the addresses we dialled, of connected peers and of
    /// peers seen before.
    book: AddressBook,
    /// Liveness checks under way, by request.
    checks: FnvHashMap<OutboundRequestId, PeerId>,
    max_checks: usize,
    /// Connections kept open while idle, to at most `max_kept` table peers.
    kept: KeptConnections,
    max_kept: usize,
    /// Until then, timeouts may be our own overload's: not counted against peers.
    overloaded_until: Option<Instant>,
    /// How long an overload casts doubt on the timeouts that follow (the request timeout).
    overload_doubt: Duration,
}

impl Maintenance {
    /// `max_addresses` per peer and `book_peers` peers in the address book, `max_checks`
    /// liveness checks at once, `max_kept` connections kept open; an overload casts doubt on
    /// timeouts for `request_timeout`.
    pub(crate) fn new(
        table: Box<dyn RoutingTable>,
        max_addresses: usize,
        book_peers: usize,
        max_checks: usize,
        max_kept: usize,
        request_timeout: Duration,
    ) -> Self {
        Self {
            table,
            connected: FnvHashMap::default(),
            book: AddressBook::new(book_peers, max_addresses),
            checks: FnvHashMap::default(),
            max_checks,
            kept: KeptConnections::default(),
            max_kept,
            overloaded_until: None,
            overload_doubt: request_timeout,
        }
    }

    /// A periodic timer fired `lag` after it was due. A late timer means the node is
    /// overloaded: for a request timeout from now, timeouts are not held against peers.
    pub(crate) fn on_tick(&mut self, now: Instant, lag: Duration) {
        if lag >= OVERLOAD_LAG {
            tracing::debug!(
                ?lag,
                "node overloaded: timeouts are not counted against peers"
            );
            self.overloaded_until = now.checked_add(self.overload_doubt);
        }
    }

    fn overloaded(&self, now: Instant) -> bool {
        self.overloaded_until.is_some_and(|until| now < until)
    }

    /// A peer did not answer: counted against it unless the node is overloaded.
    fn no_answer(&mut self, peer: &PeerId, now: Instant) -> Option<TableChange> {
        if self.overloaded(now) {
            tracing::debug!(%peer, "no answer while overloaded: not counted");
            return None;
        }
        self.table
            .on_request_failed(peer, Failure::NoAnswer, now)
            .map(|e| TableChange::Removed(e, RemovalReason::Unresponsive))
    }

    /// The routing table changed: which connections to keep open now.
    pub(crate) fn update_kept(&mut self) -> Vec<KeepAlive> {
        if self.max_kept == 0 {
            return Vec::new();
        }
        let wanted = self.table.keep_connected(self.max_kept);
        self.kept.update(wanted)
    }

    pub(crate) fn table(&self) -> &dyn RoutingTable {
        self.table.as_ref()
    }

    pub(crate) fn table_mut(&mut self) -> &mut dyn RoutingTable {
        self.table.as_mut()
    }

    /// A peer the application knows to serve the DHT (a bootstrap node).
    pub(crate) fn add_known_server(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        now: Instant,
    ) -> (Admission, Option<TableChange>) {
        let outcome = self.table.on_server_peer(peer, &[addr], None, now);
        let change = (outcome == Admission::Inserted).then_some(TableChange::Added(peer));
        (outcome, change)
    }

    /// The remote address of the first open connection to `peer`, which the peer cannot
    /// choose: what decides whose addresses it may name.
    pub(crate) fn observed_address(&self, peer: &PeerId) -> Option<&Multiaddr> {
        self.connected.get(peer)?.observed.as_ref()
    }

    /// The addresses of a connected peer, for peers that are not in the table.
    pub(crate) fn connected_addresses(&self, peer: &PeerId) -> Option<Vec<Multiaddr>> {
        self.connected
            .contains_key(peer)
            .then(|| self.book.addresses(peer).to_vec())
    }

    fn admit(&mut self, peer: PeerId, now: Instant, succeeded: bool) -> Option<TableChange> {
        let addrs = self.book.addresses(&peer).to_vec();
        let observed = self.connected.get(&peer).and_then(|p| p.observed.clone());
        let outcome = if succeeded {
            self.table
                .on_request_succeeded(peer, &addrs, observed.as_ref(), now)
        } else {
            self.table
                .on_server_peer(peer, &addrs, observed.as_ref(), now)
        };
        (outcome == Admission::Inserted).then_some(TableChange::Added(peer))
    }

    /// A connection opened from `observed` (the remote address); `dialed` is the address we
    /// reached the peer at, if we dialled. The peer is not offered to the table yet: only
    /// once the connection says it serves the protocol. Returns the connection to keep open,
    /// if the peer is one whose connection is kept.
    pub(crate) fn on_connected(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        observed: Multiaddr,
        dialed: Option<Multiaddr>,
    ) -> Option<KeepAlive> {
        let keep = self.kept.on_established(peer, connection);
        let entry = self.connected.entry(peer).or_default();
        entry.observed.get_or_insert(observed);
        match dialed {
            Some(addr) => {
                self.book.add(peer, addr);
            }
            None => self.book.touch(&peer),
        }
        keep
    }

    /// A connection to the peer closed (any, not only its last): another one is kept open if
    /// this one was.
    pub(crate) fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Option<KeepAlive> {
        self.kept.on_closed(peer, connection)
    }

    /// The last connection to the peer closed; `lost` when we did not close it for idleness
    /// (an error, or the remote closed it). Its addresses stay in the book: it may come back,
    /// and identify will not report them again.
    ///
    /// The table hears of a loss only for a peer whose connection we keep open: a remote
    /// closes idle connections it does not keep itself (rust-libp2p after 10 s by default),
    /// and checking every such peer would cost a dial each time; a kept one is worth the dial,
    /// which opens its connection again.
    pub(crate) fn on_disconnected(&mut self, peer: &PeerId, lost: bool, now: Instant) {
        self.connected.remove(peer);
        self.book.closed(peer, Closed { at: now, lost });
        let kept_lost = lost && self.kept.is_kept(peer);
        self.table.on_connection_closed(peer, kept_lost, now);
    }

    /// Why a dial of `peer` is made, and how its last connection ended if one did.
    pub(crate) fn dial_reason(&self, peer: &PeerId) -> (DialReason, Option<Closed>) {
        let closed = self.book.last_closed(peer);
        let reason = if self.checks.values().any(|p| p == peer) {
            DialReason::Liveness
        } else {
            match (self.table.contains(peer), closed.is_some()) {
                (true, true) => DialReason::TableReconnect,
                (true, false) => DialReason::TableFirst,
                (false, true) => DialReason::Reconnect,
                (false, false) => DialReason::New,
            }
        };
        (reason, closed)
    }

    /// A dial to the peer failed at these addresses: they are forgotten (identify forgets
    /// them too, so it reports them again if the peer announces them later). A dial of ours
    /// refused outright ([`Failure::Unreachable`]) evicts the peer; other failures are counted
    /// once with the requests they failed ([`Maintenance::on_unreachable`]). Dials others made
    /// do not evict: the application may have tried an address the peer no longer has; nor
    /// does a refusal while the peer is connected (it reached us from behind a NAT, say).
    pub(crate) fn on_dial_failed(
        &mut self,
        peer: &PeerId,
        addrs: &[Multiaddr],
        failure: Option<Failure>,
        ours: bool,
        now: Instant,
    ) -> Option<TableChange> {
        for addr in addrs {
            self.book.remove(peer, addr);
        }
        let connected = self.connected.contains_key(peer);
        if !(ours && failure == Some(Failure::Unreachable)) || connected {
            return None;
        }
        self.table
            .on_request_failed(peer, Failure::Unreachable, now)
            .map(|e| TableChange::Removed(e, RemovalReason::Unreachable))
    }

    /// A listen address of the peer was reported (identify, or another behaviour). The peer is
    /// offered to the table if it is connected and serves the protocol; otherwise the address
    /// waits in the book until it does.
    pub(crate) fn on_peer_address(
        &mut self,
        peer: PeerId,
        addr: Multiaddr,
        now: Instant,
    ) -> Option<TableChange> {
        let new = self.book.add(peer, addr);
        let server = self.connected.get(&peer).is_some_and(|p| p.server);
        if new && server {
            return self.admit(peer, now, false);
        }
        None
    }

    /// A connection reported whether the peer serves the protocol. A server is offered to the
    /// table with every address the book holds for it, however it was met before; a client
    /// leaves the table.
    pub(crate) fn on_protocol_support(
        &mut self,
        peer: PeerId,
        supported: bool,
        now: Instant,
    ) -> Option<TableChange> {
        self.connected.entry(peer).or_default().server = supported;
        if supported {
            self.admit(peer, now, false)
        } else {
            self.remove(&peer, RemovalReason::NotServing)
        }
    }

    /// Removes `peer` from the table, for `reason`.
    pub(crate) fn remove(&mut self, peer: &PeerId, reason: RemovalReason) -> Option<TableChange> {
        self.table
            .remove(peer)
            .map(|e| TableChange::Removed(e, reason))
    }

    /// An outbound request finished. Returns whether it was a liveness check (internal: not
    /// reported to the application), and the change to the table, if any.
    pub(crate) fn on_request_finished(
        &mut self,
        id: OutboundRequestId,
        peer: PeerId,
        result: &Result<impl Sized, RequestError>,
        now: Instant,
    ) -> (bool, Option<TableChange>) {
        let internal = self.checks.remove(&id).is_some();
        let change = match result {
            Ok(_) => self.admit(peer, now, true),
            // Not the peer's fault: a check that could not even be queued is simply retried.
            Err(RequestError::QueueFull) => None,
            Err(RequestError::UnsupportedProtocol) => self.remove(&peer, RemovalReason::NotServing),
            // One dial or one connection fails every request it carried at once: that is one
            // failure of the peer, counted by `on_dial_failed` or `on_unreachable`, not one per
            // request.
            Err(RequestError::DialFailed(_) | RequestError::ConnectionClosed) => None,
            Err(
                RequestError::Timeout | RequestError::Frame(_) | RequestError::InvalidResponse(_),
            ) => self.no_answer(&peer, now),
        };
        if internal && result.is_err() {
            // The check is over, whether its failure was counted or not (an overload, a full
            // queue): a peer still in doubt is handed out again.
            self.table.on_check_abandoned(&peer, now);
        }
        (internal, change)
    }

    /// A dial to the peer failed (not outright), or its connection closed, while requests
    /// waited on it: one failure, however many requests it took with it.
    pub(crate) fn on_unreachable(&mut self, peer: &PeerId, now: Instant) -> Option<TableChange> {
        self.no_answer(peer, now)
    }

    /// Liveness checks to start now: requests the caller sends and registers with
    /// [`Maintenance::check_started`]. None while the node is overloaded: they would only add
    /// to it, and their timeouts would prove nothing.
    pub(crate) fn due_checks(&mut self, local: PeerId, now: Instant) -> Vec<(PeerId, Request)> {
        let mut due = Vec::new();
        if self.overloaded(now) {
            return due;
        }
        while self.checks.len() + due.len() < self.max_checks {
            let Some(peer) = self.table.next_liveness_check(now) else {
                break;
            };
            // A FIND_NODE for ourselves: cheap, and it is how go probes a peer too.
            due.push((
                peer,
                Request::FindNode {
                    key: local.to_bytes(),
                },
            ));
        }
        due
    }

    pub(crate) fn check_started(&mut self, id: OutboundRequestId, peer: PeerId) {
        self.checks.insert(id, peer);
    }
}

#[cfg(test)]
#[path = "maintenance_tests.rs"]
mod tests;
