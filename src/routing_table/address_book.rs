//! The address book: where peers said they listen (identify) and where we reached them (our own
//! dials), kept across disconnects.
//!
//! Identify reports an address of a peer once (it caches what it reported), so a peer that
//! disconnects and comes back on the same address is not reported again. Without this book a
//! peer first met as a client could never enter the routing table when it came back as a
//! server. Bounded twice: peers least recently seen are evicted first, and each peer keeps its
//! newest addresses only.

use std::time::Instant;

use fnv::FnvBuildHasher;
use hashlink::LruCache;
use libp2p::{Multiaddr, PeerId};
use smallvec::SmallVec;

type Addresses = SmallVec<[Multiaddr; 4]>;

/// How the last connection to a peer ended: what tells a dial to a known peer (its connection
/// expired) from a dial to a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Closed {
    /// When the last connection closed.
    pub(crate) at: Instant,
    /// It was lost (an error, or the remote closed it), not closed by us for idleness.
    pub(crate) lost: bool,
}

#[derive(Debug, Default)]
struct Known {
    addrs: Addresses,
    closed: Option<Closed>,
}

/// Peers and their addresses, newest first, least recently seen peer evicted first.
pub(crate) struct AddressBook {
    peers: LruCache<PeerId, Known, FnvBuildHasher>,
    max_addresses: usize,
}

impl AddressBook {
    /// A book of at most `max_peers` peers with at most `max_addresses` addresses each (both at
    /// least one).
    pub(crate) fn new(max_peers: usize, max_addresses: usize) -> Self {
        Self {
            peers: LruCache::with_hasher(max_peers.max(1), FnvBuildHasher::default()),
            max_addresses: max_addresses.max(1),
        }
    }

    /// Records `addr` for `peer` as its newest address, and the peer as the most recently
    /// seen. Returns whether the address was new for the peer.
    pub(crate) fn add(&mut self, peer: PeerId, addr: Multiaddr) -> bool {
        let Some(known) = self.peers.get_mut(&peer) else {
            // Evicts the least recently seen peer when the book is full.
            let known = Known {
                addrs: smallvec::smallvec![addr],
                closed: None,
            };
            self.peers.insert(peer, known);
            return true;
        };
        let addrs = &mut known.addrs;
        match addrs.iter().position(|a| *a == addr) {
            Some(i) => {
                addrs[..=i].rotate_right(1);
                false
            }
            None => {
                addrs.insert(0, addr);
                addrs.truncate(self.max_addresses);
                true
            }
        }
    }

    /// The peer was just seen (a connection opened): it is kept over peers seen longer ago. A
    /// peer without addresses is not added, so that connections alone (which anyone can open)
    /// never push out what identify or our dials taught us.
    pub(crate) fn touch(&mut self, peer: &PeerId) {
        let _ = self.peers.get_mut(peer);
    }

    /// The peer's addresses, newest first; empty for a peer not in the book.
    pub(crate) fn addresses(&self, peer: &PeerId) -> &[Multiaddr] {
        self.peers.peek(peer).map_or(&[], |k| k.addrs.as_slice())
    }

    /// Records how the last connection to a peer in the book ended.
    pub(crate) fn closed(&mut self, peer: &PeerId, closed: Closed) {
        if let Some(known) = self.peers.peek_mut(peer) {
            known.closed = Some(closed);
        }
    }

    /// How the last connection to the peer ended, if it is in the book and one did.
    pub(crate) fn last_closed(&self, peer: &PeerId) -> Option<Closed> {
        self.peers.peek(peer)?.closed
    }

    /// Forgets one address of the peer (a dial to it failed), and the peer with its last one.
    pub(crate) fn remove(&mut self, peer: &PeerId, addr: &Multiaddr) {
        let Some(known) = self.peers.peek_mut(peer) else {
            return;
        };
        known.addrs.retain(|a| a != addr);
        if known.addrs.is_empty() {
            self.peers.remove(peer);
        }
    }

    /// Number of peers in the book.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn addresses_newest_first_and_capped() {
        let mut book = AddressBook::new(4, 3);
        let peer = PeerId::random();
        assert!(book.addresses(&peer).is_empty());
        for port in 1..=4 {
            assert!(book.add(peer, addr(port)));
        }
        assert_eq!(book.addresses(&peer), [addr(4), addr(3), addr(2)]);
        // Learned again: not new, but the newest now.
        assert!(!book.add(peer, addr(2)));
        assert_eq!(book.addresses(&peer), [addr(2), addr(4), addr(3)]);
        assert!(!book.add(peer, addr(2)));
        assert_eq!(book.addresses(&peer), [addr(2), addr(4), addr(3)]);
    }

    #[test]
    fn least_recently_seen_peer_is_evicted() {
        let mut book = AddressBook::new(2, 4);
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        book.add(a, addr(1));
        book.add(b, addr(2));
        // `a` reconnects: `b` is now the one seen longest ago.
        book.touch(&a);
        book.add(c, addr(3));
        assert_eq!(book.len(), 2);
        assert_eq!(book.addresses(&a), [addr(1)]);
        assert!(book.addresses(&b).is_empty());
        assert_eq!(book.addresses(&c), [addr(3)]);
        // A new address also counts as seeing the peer.
        book.add(a, addr(4));
        book.add(b, addr(2));
        assert!(book.addresses(&c).is_empty());
        assert_eq!(book.addresses(&a), [addr(4), addr(1)]);
    }

    #[test]
    fn connections_alone_add_nobody() {
        let mut book = AddressBook::new(1, 4);
        let (known, stranger) = (PeerId::random(), PeerId::random());
        book.add(known, addr(1));
        book.touch(&stranger);
        assert_eq!(book.len(), 1);
        assert_eq!(book.addresses(&known), [addr(1)]);
    }

    #[test]
    fn failed_addresses_are_forgotten() {
        let mut book = AddressBook::new(4, 4);
        let peer = PeerId::random();
        book.add(peer, addr(1));
        book.add(peer, addr(2));
        book.remove(&peer, &addr(1));
        assert_eq!(book.addresses(&peer), [addr(2)]);
        book.remove(&peer, &addr(2));
        assert_eq!(book.len(), 0);
        // Unknown peers and addresses are ignored.
        book.remove(&PeerId::random(), &addr(2));
        book.remove(&peer, &addr(9));
    }

    #[test]
    fn bounds_are_at_least_one() {
        let mut book = AddressBook::new(0, 0);
        let (a, b) = (PeerId::random(), PeerId::random());
        book.add(a, addr(1));
        book.add(a, addr(2));
        assert_eq!(book.addresses(&a), [addr(2)]);
        book.add(b, addr(3));
        assert_eq!(book.len(), 1);
        assert_eq!(book.addresses(&b), [addr(3)]);
    }
}
