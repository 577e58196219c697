//! Keeps the routing table fed and healthy from what the network reports: which connected peers
//! serve the protocol (identify), where they listen, how our requests to them went, and which
//! peers are due for a liveness check. Sans-IO: it returns what to send and what to report.
//!
//! A connected peer is offered to the table whenever it says it serves the protocol, with the
//! addresses the [`AddressBook`] holds for it: those survive disconnects, because identify
//! reports an address only once and a peer often comes back (as a server, after starting as a
//! client) on an address it reported before.

use std::time::Instant;

use fnv::FnvHashMap;
use libp2p::{Multiaddr, PeerId};

use super::address_book::AddressBook;
use super::{Admission, Eviction, RoutingTable};
use crate::network::message::Request;
use crate::network::{OutboundRequestId, RequestError};

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
    /// The peer left the table, maybe replaced by a candidate.
    Removed(Eviction),
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
}

impl Maintenance {
    /// `max_addresses` per peer and `book_peers` peers in the address book.
    pub(crate) fn new(
        table: Box<dyn RoutingTable>,
        max_addresses: usize,
        book_peers: usize,
        max_checks: usize,
    ) -> Self {
        Self {
            table,
            connected: FnvHashMap::default(),
            book: AddressBook::new(book_peers, max_addresses),
            checks: FnvHashMap::default(),
            max_checks,
        }
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
    /// once the connection says it serves the protocol.
    pub(crate) fn on_connected(
        &mut self,
        peer: PeerId,
        observed: Multiaddr,
        dialed: Option<Multiaddr>,
    ) {
        let entry = self.connected.entry(peer).or_default();
        entry.observed.get_or_insert(observed);
        match dialed {
            Some(addr) => {
                self.book.add(peer, addr);
            }
            None => self.book.touch(&peer),
        }
    }

    /// The last connection to the peer closed. Its addresses stay in the book: it may come
    /// back, and identify will not report them again.
    pub(crate) fn on_disconnected(&mut self, peer: &PeerId, now: Instant) {
        self.connected.remove(peer);
        self.table.on_connection_closed(peer, now);
    }

    /// A dial to the peer failed at these addresses: they are forgotten (identify forgets
    /// them too, so it reports them again if the peer announces them later).
    pub(crate) fn on_dial_failed(&mut self, peer: &PeerId, addrs: &[Multiaddr]) {
        for addr in addrs {
            self.book.remove(peer, addr);
        }
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
            self.table.remove(&peer).map(TableChange::Removed)
        }
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
            Err(RequestError::QueueFull) => {
                if internal {
                    self.table.on_check_abandoned(&peer);
                }
                None
            }
            Err(RequestError::UnsupportedProtocol) => {
                self.table.remove(&peer).map(TableChange::Removed)
            }
            // One dial or one connection fails every request it carried at once: that is one
            // failure of the peer, counted by `on_unreachable`, not one per request.
            Err(RequestError::DialFailed(_) | RequestError::ConnectionClosed) => None,
            Err(_) => self
                .table
                .on_request_failed(&peer, now)
                .map(TableChange::Removed),
        };
        (internal, change)
    }

    /// A dial to the peer failed, or its connection closed, while requests waited on it:
    /// one failure, however many requests it took with it. A liveness check among them is
    /// failed, so a peer under check is evicted.
    pub(crate) fn on_unreachable(&mut self, peer: &PeerId, now: Instant) -> Option<TableChange> {
        self.table
            .on_request_failed(peer, now)
            .map(TableChange::Removed)
    }

    /// Liveness checks to start now: requests the caller sends and registers with
    /// [`Maintenance::check_started`].
    pub(crate) fn due_checks(&mut self, local: PeerId, now: Instant) -> Vec<(PeerId, Request)> {
        let mut due = Vec::new();
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
mod tests {
    use super::*;
    use crate::routing_table::{KBucketConfig, KBucketTable};

    fn maintenance() -> Maintenance {
        let table = KBucketTable::new(PeerId::random(), KBucketConfig::default());
        Maintenance::new(Box::new(table), 8, 64, 4)
    }

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn only_servers_with_addresses_enter() {
        let mut m = maintenance();
        let now = Instant::now();
        let (server, client) = (PeerId::random(), PeerId::random());
        m.on_connected(server, addr(9), None);
        m.on_connected(client, addr(2), Some(addr(2)));
        // Support known before any address: nothing to admit yet.
        assert_eq!(m.on_protocol_support(server, true, now), None);
        assert_eq!(
            m.on_peer_address(server, addr(1), now),
            Some(TableChange::Added(server))
        );
        assert_eq!(m.on_protocol_support(client, false, now), None);
        assert_eq!(m.on_peer_address(client, addr(3), now), None);
        assert!(m.table().contains(&server) && !m.table().contains(&client));
        // Switching to client mode removes it.
        assert!(matches!(
            m.on_protocol_support(server, false, now),
            Some(TableChange::Removed(_))
        ));
    }

    #[test]
    fn a_client_that_comes_back_as_a_server_enters() {
        let mut m = maintenance();
        let now = Instant::now();
        let peer = PeerId::random();
        // Met inbound as a client: identify reports its listen address, once.
        m.on_connected(peer, addr(40000), None);
        assert_eq!(m.on_protocol_support(peer, false, now), None);
        assert_eq!(m.on_peer_address(peer, addr(1), now), None);
        m.on_disconnected(&peer, now);
        assert!(!m.table().contains(&peer));
        // Back inbound as a server; identify stays silent about the address it reported.
        m.on_connected(peer, addr(40001), None);
        assert_eq!(
            m.on_protocol_support(peer, true, now),
            Some(TableChange::Added(peer))
        );
        assert_eq!(m.table().addresses(&peer), Some(&[addr(1)][..]));
    }

    #[test]
    fn a_dialled_address_is_enough_after_a_reconnect() {
        let mut m = maintenance();
        let now = Instant::now();
        let peer = PeerId::random();
        m.on_connected(peer, addr(1), Some(addr(1)));
        assert_eq!(m.on_protocol_support(peer, false, now), None);
        m.on_disconnected(&peer, now);
        m.on_connected(peer, addr(40000), None);
        assert_eq!(
            m.on_protocol_support(peer, true, now),
            Some(TableChange::Added(peer))
        );
        assert_eq!(m.table().addresses(&peer), Some(&[addr(1)][..]));
    }

    #[test]
    fn known_addresses_never_admit_a_client() {
        let mut m = maintenance();
        let now = Instant::now();
        let peer = PeerId::random();
        // Addresses learned before any connection, and while connected as a client.
        assert_eq!(m.on_peer_address(peer, addr(1), now), None);
        m.on_connected(peer, addr(40000), Some(addr(2)));
        assert_eq!(m.on_protocol_support(peer, false, now), None);
        assert_eq!(m.on_peer_address(peer, addr(3), now), None);
        assert!(!m.table().contains(&peer));
        assert_eq!(
            m.connected_addresses(&peer),
            Some(vec![addr(3), addr(2), addr(1)])
        );
        // A server that turns client on a later connection leaves the table.
        m.on_disconnected(&peer, now);
        assert_eq!(m.connected_addresses(&peer), None);
        m.on_connected(peer, addr(40001), None);
        assert!(m.on_protocol_support(peer, true, now).is_some());
        m.on_disconnected(&peer, now);
        m.on_connected(peer, addr(40002), None);
        assert!(matches!(
            m.on_protocol_support(peer, false, now),
            Some(TableChange::Removed(_))
        ));
        assert!(!m.table().contains(&peer));
    }

    #[test]
    fn failed_dial_addresses_are_not_offered() {
        let mut m = maintenance();
        let now = Instant::now();
        let peer = PeerId::random();
        m.on_connected(peer, addr(40000), None);
        m.on_peer_address(peer, addr(1), now);
        m.on_peer_address(peer, addr(2), now);
        m.on_disconnected(&peer, now);
        m.on_dial_failed(&peer, &[addr(2)]);
        m.on_connected(peer, addr(40001), None);
        assert!(m.on_protocol_support(peer, true, now).is_some());
        assert_eq!(m.table().addresses(&peer), Some(&[addr(1)][..]));
    }

    #[test]
    fn answering_a_request_admits_and_failures_evict() {
        let mut m = maintenance();
        let now = Instant::now();
        let peer = PeerId::random();
        m.on_connected(peer, addr(1), Some(addr(1)));
        let ok: Result<(), RequestError> = Ok(());
        let (internal, change) = m.on_request_finished(OutboundRequestId(1), peer, &ok, now);
        assert!(!internal);
        assert_eq!(change, Some(TableChange::Added(peer)));
        let err: Result<(), RequestError> = Err(RequestError::Timeout);
        for i in 0..2 {
            assert_eq!(
                m.on_request_finished(OutboundRequestId(2 + i), peer, &err, now)
                    .1,
                None
            );
        }
        let (_, change) = m.on_request_finished(OutboundRequestId(9), peer, &err, now);
        assert!(matches!(change, Some(TableChange::Removed(_))));
    }

    #[test]
    fn liveness_checks_are_bounded_and_internal() {
        let mut m = maintenance();
        let start = Instant::now();
        let local = PeerId::random();
        let peers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            m.on_connected(*p, addr(i as u16 + 1), Some(addr(i as u16 + 1)));
            m.on_protocol_support(*p, true, start);
        }
        let later = start + std::time::Duration::from_secs(3600);
        let due = m.due_checks(local, later);
        assert_eq!(due.len(), 4, "at most max_checks at once");
        for (i, (peer, _)) in due.iter().enumerate() {
            m.check_started(OutboundRequestId(100 + i as u64), *peer);
        }
        assert!(m.due_checks(local, later).is_empty());
        let ok: Result<(), RequestError> = Ok(());
        let (internal, _) = m.on_request_finished(OutboundRequestId(100), due[0].0, &ok, later);
        assert!(internal);
        assert_eq!(m.due_checks(local, later).len(), 1);
    }
}
