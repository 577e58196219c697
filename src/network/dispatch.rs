//! Bookkeeping of outbound requests across connections, sans-IO: which connection carries which
//! request, and what waits for a dial.
//!
//! Everything is indexed by peer and by connection, so a closed connection or a failed dial
//! fails exactly its own requests without a scan of the others.

use fnv::FnvHashMap;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
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
    /// Dial the peer at these addresses (and those other behaviours know); its requests wait
    /// for the connection.
    Dial { peer: PeerId, addrs: Vec<Multiaddr> },
    /// Report the request as failed.
    Fail {
        peer: PeerId,
        id: OutboundRequestId,
        error: RequestError,
    },
}

/// Requests waiting for a connection to their peer, and where to dial it.
#[derive(Default)]
struct Waiting {
    addrs: Vec<Multiaddr>,
    requests: Vec<Queued>,
}

/// A request waiting for its dial.
struct Queued {
    id: OutboundRequestId,
    request: Request,
    since: Instant,
    /// Sent once already, on a connection that closed for idleness before its handler saw it.
    resent: bool,
}

/// A request handed to a connection's handler, until its outcome. The request and the
/// addresses it came with are kept: a connection closed for idleness never had it (an idle
/// handler holds no request), and it goes again, once, on another connection.
struct InFlight {
    peer: PeerId,
    connection: ConnectionId,
    request: Request,
    addrs: Vec<Multiaddr>,
    resent: bool,
}

/// Outbound requests: connections per peer, in-flight requests per connection, requests
/// waiting for a dial, and the dials themselves (bounded: the rest queue). A dial carries at
/// most `max_dial_addresses` addresses, however many requests brought some.
pub(crate) struct OutboundRequests {
    next_id: u64,
    max_waiting_per_peer: usize,
    max_dials: usize,
    max_dial_addresses: usize,
    connections: FnvHashMap<PeerId, SmallVec<[ConnectionId; 2]>>,
    in_flight: FnvHashMap<OutboundRequestId, InFlight>,
    per_connection: FnvHashMap<ConnectionId, SmallVec<[OutboundRequestId; 4]>>,
    awaiting_dial: FnvHashMap<PeerId, Waiting>,
    dialing: fnv::FnvHashSet<PeerId>,
    dial_queue: VecDeque<PeerId>,
}

impl OutboundRequests {
    pub(crate) fn new(
        max_waiting_per_peer: usize,
        max_dials: usize,
        max_dial_addresses: usize,
    ) -> Self {
        Self {
            next_id: 0,
            max_waiting_per_peer,
            max_dials: max_dials.max(1),
            max_dial_addresses: max_dial_addresses.max(1),
            connections: FnvHashMap::default(),
            in_flight: FnvHashMap::default(),
            per_connection: FnvHashMap::default(),
            awaiting_dial: FnvHashMap::default(),
            dialing: Default::default(),
            dial_queue: VecDeque::new(),
        }
    }

    /// Starts queued dials while fewer than the maximum are under way.
    fn next_dials(&mut self) -> Vec<OutboundAction> {
        let mut actions = Vec::new();
        while self.dialing.len() < self.max_dials {
            let Some(peer) = self.dial_queue.pop_front() else {
                break;
            };
            let Some(waiting) = self.awaiting_dial.get(&peer) else {
                continue;
            };
            self.dialing.insert(peer);
            actions.push(OutboundAction::Dial {
                peer,
                addrs: waiting.addrs.clone(),
            });
        }
        actions
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

    /// Sends on an open connection, or queues the request for a dial at `addrs` (dials are
    /// bounded; beyond the limit they wait their turn). The first addresses given are kept, up
    /// to the cap: callers rank them.
    pub(crate) fn send(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        request: Request,
    ) -> (OutboundRequestId, Vec<OutboundAction>) {
        let id = OutboundRequestId(self.next_id);
        self.next_id += 1;
        let actions = self.dispatch(peer, addrs, id, request, false);
        (id, actions)
    }

    fn dispatch(
        &mut self,
        peer: PeerId,
        mut addrs: Vec<Multiaddr>,
        id: OutboundRequestId,
        request: Request,
        resent: bool,
    ) -> Vec<OutboundAction> {
        addrs.truncate(self.max_dial_addresses);
        if let Some(connection) = self.connections.get(&peer).and_then(|c| c.first()).copied() {
            let sent = InFlight {
                peer,
                connection,
                request,
                addrs,
                resent,
            };
            return vec![self.track(id, sent)];
        }
        let waiting = self.awaiting_dial.entry(peer).or_default();
        if waiting.requests.len() >= self.max_waiting_per_peer {
            let error = RequestError::QueueFull;
            return vec![OutboundAction::Fail { peer, id, error }];
        }
        for addr in addrs {
            if waiting.addrs.len() >= self.max_dial_addresses {
                break;
            }
            if !waiting.addrs.contains(&addr) {
                waiting.addrs.push(addr);
            }
        }
        waiting.requests.push(Queued {
            id,
            request,
            since: Instant::now(),
            resent,
        });
        if waiting.requests.len() == 1 && !self.dialing.contains(&peer) {
            self.dial_queue.push_back(peer);
        }
        self.next_dials()
    }

    fn track(&mut self, id: OutboundRequestId, sent: InFlight) -> OutboundAction {
        let action = OutboundAction::Send {
            peer: sent.peer,
            connection: sent.connection,
            id,
            request: sent.request.clone(),
        };
        self.per_connection
            .entry(sent.connection)
            .or_default()
            .push(id);
        self.in_flight.insert(id, sent);
        action
    }

    /// A connection opened: requests waiting for it are sent on it.
    pub(crate) fn on_connection_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Vec<OutboundAction> {
        self.connections.entry(peer).or_default().push(connection);
        self.dialing.remove(&peer);
        let waiting = self.awaiting_dial.remove(&peer).unwrap_or_default();
        let addrs = waiting.addrs;
        let mut actions: Vec<OutboundAction> = waiting
            .requests
            .into_iter()
            .map(|queued| {
                let sent = InFlight {
                    peer,
                    connection,
                    request: queued.request,
                    addrs: addrs.clone(),
                    resent: queued.resent,
                };
                self.track(queued.id, sent)
            })
            .collect();
        actions.extend(self.next_dials());
        actions
    }

    /// A connection closed: its in-flight requests fail. When it closed for idleness (`idle`)
    /// its handler held none of them: they were handed to it while the swarm was already
    /// closing it, and go again, once, on another connection or a new dial.
    pub(crate) fn on_connection_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        idle: bool,
    ) -> Vec<OutboundAction> {
        if let Some(conns) = self.connections.get_mut(&peer) {
            conns.retain(|c| *c != connection);
            if conns.is_empty() {
                self.connections.remove(&peer);
            }
        }
        let ids = self.per_connection.remove(&connection).unwrap_or_default();
        let mut actions = Vec::new();
        for id in ids {
            let Some(sent) = self.in_flight.remove(&id) else {
                continue;
            };
            if idle && !sent.resent {
                tracing::debug!(%peer, ?id, "request handed to a connection closing for idleness; sent again");
                actions.extend(self.dispatch(peer, sent.addrs, id, sent.request, true));
            } else {
                actions.push(OutboundAction::Fail {
                    peer,
                    id,
                    error: RequestError::ConnectionClosed,
                });
            }
        }
        actions
    }

    /// A dial failed: requests waiting for it fail, unless a connection opened meanwhile.
    pub(crate) fn on_dial_failure(&mut self, peer: PeerId, reason: String) -> Vec<OutboundAction> {
        self.dialing.remove(&peer);
        if self.is_connected(&peer) {
            return self.next_dials();
        }
        let waiting = self.awaiting_dial.remove(&peer).unwrap_or_default();
        let mut actions: Vec<OutboundAction> = waiting
            .requests
            .into_iter()
            .map(|queued| OutboundAction::Fail {
                peer,
                id: queued.id,
                error: RequestError::DialFailed(reason.clone()),
            })
            .collect();
        actions.extend(self.next_dials());
        actions
    }

    /// Fails requests that waited longer than `timeout` for their dial, and drops queued dials
    /// nobody waits for any more: a slow dial cannot hold requests forever.
    pub(crate) fn expire_waiting(
        &mut self,
        now: Instant,
        timeout: Duration,
    ) -> Vec<OutboundAction> {
        let mut actions = Vec::new();
        self.awaiting_dial.retain(|peer, waiting| {
            waiting.requests.retain(|queued| {
                let expired = now.saturating_duration_since(queued.since) >= timeout;
                if expired {
                    actions.push(OutboundAction::Fail {
                        peer: *peer,
                        id: queued.id,
                        error: RequestError::Timeout,
                    });
                }
                !expired
            });
            !waiting.requests.is_empty()
        });
        let waiting = &self.awaiting_dial;
        self.dial_queue.retain(|p| waiting.contains_key(p));
        actions
    }

    /// The handler reported the request's outcome: forget it. Returns the peer if it was known.
    pub(crate) fn on_finished(&mut self, id: OutboundRequestId) -> Option<PeerId> {
        let sent = self.in_flight.remove(&id)?;
        if let Some(ids) = self.per_connection.get_mut(&sent.connection) {
            ids.retain(|i| *i != id);
        }
        Some(sent.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Found by the accelerated client's swarm tests: a request handed to a connection the
    /// swarm was closing for idleness failed as `ConnectionClosed`, so a live peer counted as
    /// failed. Such a request goes again, once.
    #[test]
    fn a_request_lost_to_an_idle_close_goes_again_once() {
        let mut out = OutboundRequests::new(8, 8, 4);
        let peer = PeerId::random();
        let addr: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        out.on_connection_established(peer, c1);
        let (id, sent) = out.send(peer, vec![addr.clone()], ping());
        assert!(matches!(sent[..], [OutboundAction::Send { connection, .. }] if connection == c1));
        // Closed for idleness: dialled again at the request's addresses, not failed.
        let again = out.on_connection_closed(peer, c1, true);
        assert!(
            matches!(&again[..], [OutboundAction::Dial { addrs, .. }] if addrs == &vec![addr.clone()]),
            "{again:?}"
        );
        let sent = out.on_connection_established(peer, c2);
        assert!(
            matches!(sent[..], [OutboundAction::Send { id: i, connection, .. }] if i == id && connection == c2)
        );
        // A second idle close fails it: no request goes around forever.
        let failed = out.on_connection_closed(peer, c2, true);
        assert!(matches!(
            failed[..],
            [OutboundAction::Fail { id: i, error: RequestError::ConnectionClosed, .. }] if i == id
        ));
        // A connection that broke fails its requests at once.
        let c3 = ConnectionId::new_unchecked(3);
        out.on_connection_established(peer, c3);
        let (other, _) = out.send(peer, vec![], ping());
        let failed = out.on_connection_closed(peer, c3, false);
        assert!(matches!(failed[..], [OutboundAction::Fail { id: i, .. }] if i == other));
    }

    fn ping() -> Request {
        Request::Ping
    }

    #[test]
    fn requests_to_unconnected_peer_wait_for_one_dial() {
        let mut out = OutboundRequests::new(2, 8, 4);
        let peer = PeerId::random();
        let (_, a) = out.send(peer, vec![], ping());
        assert!(matches!(a[..], [OutboundAction::Dial { .. }]));
        let (_, b) = out.send(peer, vec![], ping());
        assert!(b.is_empty(), "the first request's dial serves the second");
        let (_, c) = out.send(peer, vec![], ping());
        assert!(matches!(
            c[..],
            [OutboundAction::Fail {
                error: RequestError::QueueFull,
                ..
            }]
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
        let mut out = OutboundRequests::new(8, 8, 4);
        let (p1, p2) = (PeerId::random(), PeerId::random());
        let (c1, c2) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
        );
        out.on_connection_established(p1, c1);
        out.on_connection_established(p2, c2);
        let (id1, _) = out.send(p1, vec![], ping());
        let (id2, _) = out.send(p2, vec![], ping());
        let failed = out.on_connection_closed(p1, c1, false);
        assert_eq!(failed.len(), 1);
        assert!(matches!(failed[0], OutboundAction::Fail { id, .. } if id == id1));
        assert_eq!(out.on_finished(id2), Some(p2));
        assert!(!out.is_connected(&p1));
        assert_eq!(out.connections().count(), 1);
    }

    #[test]
    fn dial_failure_fails_waiting_requests() {
        let mut out = OutboundRequests::new(8, 8, 4);
        let peer = PeerId::random();
        out.send(peer, vec![], ping());
        out.send(peer, vec![], ping());
        let failed = out.on_dial_failure(peer, "no addresses".into());
        assert_eq!(failed.len(), 2);
        assert!(out.on_dial_failure(peer, "again".into()).is_empty());
    }

    #[test]
    fn concurrent_dials_are_bounded_and_queued() {
        let mut out = OutboundRequests::new(8, 2, 4);
        let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
        let dials: usize = peers
            .iter()
            .map(|p| {
                let (_, actions) = out.send(*p, vec![], ping());
                actions
                    .iter()
                    .filter(|a| matches!(a, OutboundAction::Dial { .. }))
                    .count()
            })
            .sum();
        assert_eq!(dials, 2, "two dials at once");
        // One dial fails: the next queued peer is dialled.
        let actions = out.on_dial_failure(peers[0], "refused".into());
        assert!(actions
            .iter()
            .any(|a| matches!(a, OutboundAction::Dial { peer, .. } if *peer == peers[2])));
        let actions = out.on_connection_established(peers[1], ConnectionId::new_unchecked(1));
        assert!(actions
            .iter()
            .any(|a| matches!(a, OutboundAction::Dial { peer, .. } if *peer == peers[3])));
    }

    #[test]
    fn a_dial_carries_at_most_the_cap_of_addresses() {
        let mut out = OutboundRequests::new(8, 8, 3);
        let peer = PeerId::random();
        let addr =
            |port: u16| -> Multiaddr { format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap() };
        // The first request brings two addresses, the next 200 more: the dial gets three.
        let (_, first) = out.send(peer, vec![addr(1), addr(2)], ping());
        let (_, second) = out.send(peer, (3..203).map(addr).collect(), ping());
        assert!(second.is_empty(), "one dial for both");
        assert!(matches!(
            &first[..],
            [OutboundAction::Dial { addrs, .. }] if addrs.len() == 2
        ));
        assert_eq!(
            out.awaiting_dial[&peer].addrs,
            vec![addr(1), addr(2), addr(3)]
        );
        // A queued dial goes out with the merged, capped list.
        let mut out = OutboundRequests::new(8, 1, 3);
        let busy = PeerId::random();
        out.send(busy, vec![addr(9)], ping());
        out.send(peer, (1..100).map(addr).collect(), ping());
        out.send(peer, (100..200).map(addr).collect(), ping());
        let actions = out.on_dial_failure(busy, "refused".into());
        assert!(actions.iter().any(|a| matches!(
            a,
            OutboundAction::Dial { peer: p, addrs } if *p == peer && *addrs == vec![addr(1), addr(2), addr(3)]
        )));
    }

    #[test]
    fn requests_waiting_too_long_for_a_dial_time_out() {
        let mut out = OutboundRequests::new(8, 1, 4);
        let (slow, queued) = (PeerId::random(), PeerId::random());
        out.send(slow, vec![], ping());
        out.send(queued, vec![], ping());
        let later = Instant::now() + Duration::from_secs(11);
        let failed = out.expire_waiting(later, Duration::from_secs(10));
        assert_eq!(failed.len(), 2);
        assert!(
            out.dial_queue.is_empty(),
            "nobody waits for the queued dial any more"
        );
    }
}
