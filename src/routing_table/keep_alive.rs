//! Which connections stay open while idle: one to each of the routing-table peers that lookups
//! need most, at most a configured number
//! ([`Config::with_max_kept_connections`](crate::Config::with_max_kept_connections)).
//!
//! A lookup's first requests go to the table's closest peers to the target; with a random
//! target those are in bucket 0 half of the time, bucket 1 a quarter, and so on. Once their
//! connections expire (rust-libp2p closes idle connections after 10 s by default), every lookup
//! of a node that was idle for a while starts with dials, each several round trips (transport,
//! noise, yamux, then the stream) before its request goes out. go-libp2p-kad-dht protects the
//! connections of its buckets 0 and 1 in the connection manager for this reason, and tags the
//! rest of its table's peers so that they are trimmed last.
//!
//! Sans-IO: it is told of connections and of the peers to keep, and returns which connection
//! handlers must keep their connection alive (or no longer). One connection per peer is kept.

use fnv::{FnvHashMap, FnvHashSet};
use libp2p::swarm::ConnectionId;
use libp2p::PeerId;
use smallvec::SmallVec;

/// Tell this connection's handler whether to keep it open while idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeepAlive {
    pub(crate) peer: PeerId,
    pub(crate) connection: ConnectionId,
    pub(crate) keep: bool,
}

/// The peers whose connections are kept, and the connection kept for each.
#[derive(Debug, Default)]
pub(crate) struct KeptConnections {
    /// Peers to keep, with the connection kept open (none while not connected).
    kept: FnvHashMap<PeerId, Option<ConnectionId>>,
    /// Open connections, by peer.
    connections: FnvHashMap<PeerId, SmallVec<[ConnectionId; 2]>>,
}

impl KeptConnections {
    /// The peers to keep are now `wanted` (bounded by the caller).
    pub(crate) fn update(&mut self, wanted: Vec<PeerId>) -> Vec<KeepAlive> {
        let wanted_set: FnvHashSet<PeerId> = wanted.iter().copied().collect();
        let mut out = Vec::new();
        self.kept.retain(|peer, connection| {
            if wanted_set.contains(peer) {
                return true;
            }
            if let Some(connection) = connection {
                out.push(KeepAlive {
                    peer: *peer,
                    connection: *connection,
                    keep: false,
                });
            }
            false
        });
        for peer in wanted {
            if self.kept.contains_key(&peer) {
                continue;
            }
            let connection = self.connections.get(&peer).and_then(|c| c.first().copied());
            if let Some(connection) = connection {
                out.push(KeepAlive {
                    peer,
                    connection,
                    keep: true,
                });
            }
            self.kept.insert(peer, connection);
        }
        out
    }

    /// A connection to `peer` opened; it is kept if the peer is and has none kept yet.
    pub(crate) fn on_established(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Option<KeepAlive> {
        self.connections.entry(peer).or_default().push(connection);
        let slot = self.kept.get_mut(&peer)?;
        if slot.is_some() {
            return None;
        }
        *slot = Some(connection);
        Some(KeepAlive {
            peer,
            connection,
            keep: true,
        })
    }

    /// A connection to `peer` closed; if it was the one kept, another one is, if any is open.
    pub(crate) fn on_closed(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
    ) -> Option<KeepAlive> {
        if let Some(open) = self.connections.get_mut(&peer) {
            open.retain(|c| *c != connection);
            if open.is_empty() {
                self.connections.remove(&peer);
            }
        }
        let slot = self.kept.get_mut(&peer)?;
        if *slot != Some(connection) {
            return None;
        }
        *slot = self.connections.get(&peer).and_then(|c| c.first().copied());
        slot.map(|connection| KeepAlive {
            peer,
            connection,
            keep: true,
        })
    }

    /// Whether the peer is one whose connection is kept (connected or not).
    pub(crate) fn is_kept(&self, peer: &PeerId) -> bool {
        self.kept.contains_key(peer)
    }

    /// Connections kept open now.
    #[cfg(test)]
    pub(crate) fn kept_open(&self) -> usize {
        self.kept.values().filter(|c| c.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(i: usize) -> ConnectionId {
        ConnectionId::new_unchecked(i)
    }

    #[test]
    fn one_connection_per_kept_peer() {
        let mut k = KeptConnections::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        assert_eq!(k.on_established(a, conn(1)), None, "not kept yet");
        k.on_established(a, conn(2));
        k.on_established(c, conn(3));
        // `a` is connected: its first connection is kept at once; `b` once it connects.
        let actions = k.update(vec![a, b]);
        assert_eq!(
            actions,
            vec![KeepAlive {
                peer: a,
                connection: conn(1),
                keep: true
            }]
        );
        assert_eq!(
            k.on_established(b, conn(4)),
            Some(KeepAlive {
                peer: b,
                connection: conn(4),
                keep: true
            })
        );
        assert_eq!(k.on_established(b, conn(5)), None, "one per peer");
        assert_eq!(k.kept_open(), 2);
        // The kept connection closes: the other one of `a` takes over; a spare one closing
        // changes nothing.
        assert_eq!(
            k.on_closed(a, conn(1)),
            Some(KeepAlive {
                peer: a,
                connection: conn(2),
                keep: true
            })
        );
        assert_eq!(k.on_closed(b, conn(5)), None);
        assert_eq!(k.on_closed(c, conn(3)), None, "never kept");
        assert_eq!(k.on_closed(a, conn(2)), None, "none left");
        assert_eq!(k.kept_open(), 1);
        // A reconnect is kept again.
        assert!(k.on_established(a, conn(6)).is_some());
    }

    #[test]
    fn peers_no_longer_wanted_are_released() {
        let mut k = KeptConnections::default();
        let (a, b) = (PeerId::random(), PeerId::random());
        k.on_established(a, conn(1));
        k.on_established(b, conn(2));
        k.update(vec![a, b]);
        let actions = k.update(vec![b]);
        assert_eq!(
            actions,
            vec![KeepAlive {
                peer: a,
                connection: conn(1),
                keep: false
            }]
        );
        assert!(k.update(vec![b]).is_empty(), "nothing changed");
        assert_eq!(k.kept_open(), 1);
        assert_eq!(k.on_closed(a, conn(1)), None);
    }
}
