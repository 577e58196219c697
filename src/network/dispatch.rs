//! Bookkeeping of outbound requests across connections, sans-IO: which connection carries which
//! request, and what waits for a dial.
//!
//! Everything is indexed by peer and by connection, so a closed connection or a failed dial
//! fails exactly its own requests without a scan of the others.

use fnv::FnvHashMap;
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;
use smallvec::SmallVec;

use super::message::Request;
use super::{OutboundRequestId, RequestError};

/// What the behaviour must do for the outbound side.
#[derive(Debug)]
pub(crate) enum OutboundAction {
    /// Hand the request to this connection's handler.
    Send {
        peer: PeerId,
        connection: ConnectionId,
        id: OutboundRequestId,
        request: Request,
    },
    /// Dial the peer; its requests wait for the connection.
    Dial { peer: PeerId },
    /// Report the request as failed.
    Fail {
        peer: PeerId,
        id: OutboundRequestId,
        error: RequestError,
    },
}

/// Outbound requests: connections per peer, in-flight requests per connection, and requests
/// waiting for a dial.
pub(crate) struct OutboundRequests {
    next_id: u64,
    max_waiting_per_peer: usize,
    connections: FnvHashMap<PeerId, SmallVec<[ConnectionId; 2]>>,
    in_flight: FnvHashMap<OutboundRequestId, (PeerId, ConnectionId)>,
    per_connection: FnvHashMap<ConnectionId, SmallVec<[OutboundRequestId; 4]>>,
    awaiting_dial: FnvHashMap<PeerId, Vec<(OutboundRequestId, Request)>>,
}

impl OutboundRequests {
    pub(crate) fn new(max_waiting_per_peer: usize) -> Self {
        Self {
            next_id: 0,
            max_waiting_per_peer,
            connections: FnvHashMap::default(),
            in_flight: FnvHashMap::default(),
            per_connection: FnvHashMap::default(),
            awaiting_dial: FnvHashMap::default(),
        }
    }

    /// Every open connection, for broadcasting to all handlers.
    pub(crate) fn connections(&self) -> impl Iterator<Item = (PeerId, ConnectionId)> + '_ {
        self.connections
            .iter()
            .flat_map(|(peer, conns)| conns.iter().map(move |c| (*peer, *c)))
    }

    /// Whether at least one connection to `peer` is open.
    pub(crate) fn is_connected(&self, peer: &PeerId) -> bool {
        self.connections.contains_key(peer)
    }

    /// Sends on an open connection, or queues the request and asks for a dial. `None`: the
    /// request waits for a dial already under way.
    pub(crate) fn send(
        &mut self,
        peer: PeerId,
        request: Request,
    ) -> (OutboundRequestId, Option<OutboundAction>) {
        let id = OutboundRequestId(self.next_id);
        self.next_id += 1;
        if let Some(connection) = self.connections.get(&peer).and_then(|c| c.first()).copied() {
            return (id, Some(self.track(peer, connection, id, request)));
        }
        let waiting = self.awaiting_dial.entry(peer).or_default();
        if waiting.len() >= self.max_waiting_per_peer {
            let error = RequestError::QueueFull;
            return (id, Some(OutboundAction::Fail { peer, id, error }));
        }
        waiting.push((id, request));
        let first = waiting.len() == 1;
        (id, first.then_some(OutboundAction::Dial { peer }))
    }

    fn track(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        id: OutboundRequestId,
        request: Request,
    ) -> OutboundAction {
        self.in_flight.insert(id, (peer, connection));
        self.per_connection.entry(connection).or_default().push(id);
        OutboundAction::Send {
            peer,
            connection,
            id,
            request,
        }
    }

    /// A connection opened: requests waiting for it are sent on it.
    pub(crate) fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Vec<OutboundAction> {
        self.connections.entry(peer).or_default().push(connection);
        let waiting = self.awaiting_dial.remove(&peer).unwrap_or_default();
        waiting
            .into_iter()
            .map(|(id, request)| self.track(peer, connection, id, request))
            .collect()
    }

    /// A connection closed: its in-flight requests fail.
    pub(crate) fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Vec<OutboundAction> {
        if let Some(conns) = self.connections.get_mut(&peer) {
            conns.retain(|c| *c != connection);
            if conns.is_empty() {
                self.connections.remove(&peer);
            }
        }
        let ids = self.per_connection.remove(&connection).unwrap_or_default();
        ids.into_iter()
            .filter(|id| self.in_flight.remove(id).is_some())
            .map(|id| OutboundAction::Fail {
                peer,
                id,
                error: RequestError::ConnectionClosed,
            })
            .collect()
    }

    /// A dial failed: requests waiting for it fail, unless a connection opened meanwhile.
    pub(crate) fn on_dial_failure(&mut self, peer: PeerId, reason: String) -> Vec<OutboundAction> {
        if self.is_connected(&peer) {
            return Vec::new();
        }
        let waiting = self.awaiting_dial.remove(&peer).unwrap_or_default();
        waiting
            .into_iter()
            .map(|(id, _)| OutboundAction::Fail {
                peer,
                id,
                error: RequestError::DialFailed(reason.clone()),
            })
            .collect()
    }

    /// The handler reported the request's outcome: forget it. Returns the peer if it was known.
    pub(crate) fn on_finished(&mut self, id: OutboundRequestId) -> Option<PeerId> {
        let (peer, connection) = self.in_flight.remove(&id)?;
        if let Some(ids) = self.per_connection.get_mut(&connection) {
            ids.retain(|i| *i != id);
        }
        Some(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping() -> Request {
        Request::Ping
    }

    #[test]
    fn requests_to_unconnected_peer_wait_for_one_dial() {
        let mut out = OutboundRequests::new(2);
        let peer = PeerId::random();
        let (_, a) = out.send(peer, ping());
        assert!(matches!(a, Some(OutboundAction::Dial { .. })));
        let (_, b) = out.send(peer, ping());
        assert!(b.is_none(), "the first request's dial serves the second");
        let (_, c) = out.send(peer, ping());
        assert!(matches!(
            c,
            Some(OutboundAction::Fail {
                error: RequestError::QueueFull,
                ..
            })
        ));
        let conn = ConnectionId::new_unchecked(1);
        let sent = out.on_connection_established(peer, conn);
        assert_eq!(sent.len(), 2);
        assert!(sent
            .iter()
            .all(|a| matches!(a, OutboundAction::Send { connection, .. } if *connection == conn)));
    }

    #[test]
    fn closing_a_connection_fails_only_its_requests() {
        let mut out = OutboundRequests::new(8);
        let (p1, p2) = (PeerId::random(), PeerId::random());
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        out.on_connection_established(p1, c1);
        out.on_connection_established(p2, c2);
        let (id1, _) = out.send(p1, ping());
        let (id2, _) = out.send(p2, ping());
        let failed = out.on_connection_closed(p1, c1);
        assert_eq!(failed.len(), 1);
        assert!(matches!(failed[0], OutboundAction::Fail { id, .. } if id == id1));
        assert_eq!(out.on_finished(id2), Some(p2));
        assert!(!out.is_connected(&p1));
        assert_eq!(out.connections().count(), 1);
    }

    #[test]
    fn dial_failure_fails_waiting_requests() {
        let mut out = OutboundRequests::new(8);
        let peer = PeerId::random();
        out.send(peer, ping());
        out.send(peer, ping());
        let failed = out.on_dial_failure(peer, "no addresses".into());
        assert_eq!(failed.len(), 2);
        assert!(out.on_dial_failure(peer, "again".into()).is_empty());
    }
}
