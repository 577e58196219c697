//! [`FullTable`]: every DHT server of the network, for the accelerated client (its docs say
//! how it works, and what it costs).

use std::cmp::Reverse;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::failure::FailureRun;
use super::kbuckets::{Addresses, KBucketTable};
use super::{Admission, Eviction, Failure, RejectReason, RoutingTable};
use crate::key::Key;
use crate::network::message::{ConnectionType, PeerRecord};

#[path = "xor_index.rs"]
mod xor_index;
use xor_index::XorIndex;

/// Settings of the [`FullTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullTableConfig {
    /// Peers kept at most. Default 100,000: Amino has 10,000 to 20,000 DHT servers, so this is
    /// five times the network with room to grow, and it bounds the table to about 145 MB
    /// whatever a crawl brings back (about 1,440 bytes per peer at worst, measured).
    pub max_peers: usize,
    /// Addresses kept per peer (at least 1), most recently learned first. Default 8: a kubo
    /// server's set (TCP, QUIC, WebTransport and WebRTC, over IPv4 and IPv6), twice the 4 a
    /// dial uses.
    pub max_addrs_per_peer: usize,
    /// Encoded bytes of addresses kept per peer. Default 512: a kubo server's 8 addresses take
    /// about 360 (the WebTransport ones, with two certificate hashes, about 90 each), and a peer
    /// advertising 8 KB addresses cannot make us hold them.
    pub max_addr_bytes: usize,
    /// A peer not seen for this long leaves at [`FullTable::expire`]. Default 2 hours, two
    /// crawls at the hourly pace: one crawl may miss a live server (it was busy, or the crawl
    /// stopped early), two in a row mean it is gone, and until then a dead one costs at most a
    /// failed request, which evicts it at once if its host refuses.
    pub stale_after: Duration,
    /// Failed requests in a row ([`Failure::NoAnswer`]) that evict a peer, once they also span
    /// `failure_span`. Default 3, as [`KBucketConfig`](super::KBucketConfig): one timeout under
    /// load is not death.
    pub max_failures: u8,
    /// How long `max_failures` failures in a row must span, with no answer between them, to
    /// evict a peer. Default 60 s, as [`KBucketConfig`](super::KBucketConfig): a burst of
    /// timeouts while we are overloaded lasts seconds, a silent peer stays silent. Zero evicts
    /// on `max_failures` alone.
    pub failure_span: Duration,
}

impl Default for FullTableConfig {
    fn default() -> Self {
        Self {
            max_peers: 100_000,
            max_addrs_per_peer: 8,
            max_addr_bytes: 512,
            stale_after: Duration::from_secs(2 * 60 * 60),
            max_failures: 3,
            failure_span: Duration::from_secs(60),
        }
    }
}

/// What the [`FullTable`] knows of a peer's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerHealth {
    /// When it last answered, announced itself or was reached by a crawl.
    pub last_seen: Instant,
    /// When a request to it last failed, if one ever did.
    pub last_failure: Option<Instant>,
    /// Failed requests since it last answered.
    pub failures: u8,
}

/// What [`FullTable::replace_with_crawl`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlMerge {
    /// Peers of the crawl already in the table: their addresses merged, health kept.
    pub updated: usize,
    /// Peers of the crawl new to the table.
    pub inserted: usize,
    /// Peers the crawl missed, kept because they were seen within `stale_after`.
    pub kept: usize,
    /// Peers that left: missed by the crawl and stale, or no room for them.
    pub removed: usize,
    /// Peers of the crawl not taken: the local peer, no address left within the bounds, or no
    /// room left.
    pub refused: usize,
}

#[derive(Debug)]
struct Entry {
    id: PeerId,
    key: Key,
    addrs: Addresses,
    last_seen: Instant,
    last_failure: Option<Instant>,
    failures: FailureRun,
    connected: bool,
}

impl Entry {
    fn new(id: PeerId, addrs: Addresses, seen: Instant, connected: bool) -> Self {
        Self {
            id,
            key: Key::from_peer(&id),
            addrs,
            last_seen: seen,
            last_failure: None,
            failures: FailureRun::default(),
            connected,
        }
    }

    /// The peer answered (or was reached): its run of failures is over. Time never goes back.
    fn seen(&mut self, now: Instant) {
        self.last_seen = self.last_seen.max(now);
        self.failures.reset();
    }

    fn record(&self) -> PeerRecord {
        PeerRecord {
            id: self.id,
            addrs: self.addrs.to_vec(),
            connection: if self.connected {
                ConnectionType::Connected
            } else {
                ConnectionType::NotConnected
            },
        }
    }
}

/// Encoded bytes of the addresses.
fn bytes_of(addrs: &[Multiaddr]) -> usize {
    addrs.iter().map(|a| a.len()).sum()
}

/// The routing table of the accelerated client: every DHT server of the network, as a crawl
/// finds them, with its addresses and health. The closest peers to any key are known locally,
/// so an operation asks them at once instead of walking towards them hop by hop.
///
/// Storage: the peers sit in one dense vector (a removal moves the last one into the hole), a
/// hash map finds a peer's slot by id ([`addresses`](RoutingTable::addresses) is O(1)), and an
/// ordered index of their keys (a B-tree, walked by prefixes of the target) answers
/// [`local_closest_peers`](RoutingTable::local_closest_peers) without looking at the other
/// peers: O(256 · (log n + count)) at worst, a handful of B-tree ranges with real keys.
///
/// Rules:
/// - **Admission**: a server the behaviour reports
///   ([`on_server_peer`](RoutingTable::on_server_peer),
///   [`on_request_succeeded`](RoutingTable::on_request_succeeded)), or a peer a crawl reached
///   ([`FullTable::replace_with_crawl`]); never ourselves, only with an address left once the
///   bounds applied. A table at `max_peers` takes no newcomer from the trait methods (they get
///   [`RejectReason::TableFull`], and are not remembered): the peers in are the ones
///   crawls vouched for, and a flood of new identities must not push them out. Room comes back
///   with [`FullTable::expire`] and the next crawl.
/// - **Addresses**: as [`KBucketTable`] keeps them (newest first, no duplicates, at most
///   `max_addrs_per_peer`), and within `max_addr_bytes` encoded bytes per peer: an address that
///   does not fit in what is left is skipped.
/// - **Gone**: a dial refused outright ([`Failure::Unreachable`]) evicts at once, as in
///   [`KBucketTable`]: nothing listens there.
/// - **Silent**: [`Failure::NoAnswer`] evicts once `max_failures` failures in a row span at least
///   `failure_span` with no answer between them, the k-bucket rule: a burst of timeouts while we
///   are overloaded cannot empty the table. There are no liveness checks: the crawl is the check.
/// - **Stale**: a peer not seen (an answer, an announcement, a crawl that reached it) for
///   `stale_after` leaves at [`FullTable::expire`], which the behaviour calls: no timers inside.
///
/// No IP diversity limit, unlike [`KBucketTable`]. There, k slots per bucket are contested,
/// and a host with many identities could take them all and eclipse our lookups. Here nothing
/// is contested: every server has its place, the honest ones included, and the closest peers
/// this table names for a key are the closest servers of the network, those an iterative
/// lookup would converge to anyway (an honest walk applies no limit either).
/// A per-group cap would instead drop honest servers: many Amino servers share a few cloud
/// ranges. What a cap still protects is what we hand to others: our server's FIND_NODE answers
/// should keep coming from a diversity-filtered selection (the k-bucket table), or a host whose
/// identities cluster near a key would fill our whole answer where k-buckets give it 2 or 3.
///
/// Measured (a counting global allocator; a release build on a loaded 2-core machine, CPU time
/// per query):
/// - **Memory per peer**: about 530 bytes with two short addresses, 1,270 with a kubo server's 8
///   addresses (356 encoded bytes), 1,440 at the bounds (8 addresses, 512 bytes), which no peer
///   can exceed: at most about 145 MB at the default `max_peers` of 100,000, and about 25 MB for
///   the 10,000 to 20,000 servers of Amino today. Addresses are counted as the wire decoder
///   builds them (each its own exact copy); one sharing a larger buffer would keep it alive.
/// - **Closest 20 peers**: 6 to 10 µs among 20,000 peers and about 12 µs among 1,000,000
///   (the index walk about 3 and 5 µs of that, building the [`PeerRecord`]s the rest), where a
///   scan of every key takes 280 µs and 25 ms.
#[derive(Debug)]
pub struct FullTable {
    local_id: PeerId,
    config: FullTableConfig,
    entries: Vec<Entry>,
    /// SipHash with a random key, not fnv: peer ids come from remotes, who could otherwise
    /// pick ids that all land in one bucket of the map.
    by_id: HashMap<PeerId, u32>,
    index: XorIndex,
    /// Encoded bytes of every address held, kept up to date.
    address_bytes: usize,
    last_crawl: Option<Instant>,
}

impl FullTable {
    /// An empty table for the local peer.
    pub fn new(local_id: PeerId, config: FullTableConfig) -> Self {
        Self {
            local_id,
            config,
            entries: Vec::new(),
            by_id: HashMap::new(),
            index: XorIndex::default(),
            address_bytes: 0,
            last_crawl: None,
        }
    }

    /// The table's settings.
    pub fn config(&self) -> &FullTableConfig {
        &self.config
    }

    /// The health of a peer in the table.
    pub fn health(&self, peer: &PeerId) -> Option<PeerHealth> {
        let e = &self.entries[*self.by_id.get(peer)? as usize];
        Some(PeerHealth {
            last_seen: e.last_seen,
            last_failure: e.last_failure,
            failures: e.failures.count(),
        })
    }

    /// When [`replace_with_crawl`](Self::replace_with_crawl) last ran, if it did.
    pub fn last_crawl(&self) -> Option<Instant> {
        self.last_crawl
    }

    /// Encoded bytes of all the addresses held: at most `len() x max_addr_bytes`.
    pub fn address_bytes(&self) -> usize {
        self.address_bytes
    }

    /// Every peer with its addresses, without copying them (for a snapshot, or to group keys
    /// by their closest peers), in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&PeerId, &[Multiaddr])> + '_ {
        self.entries.iter().map(|e| (&e.id, e.addrs.as_slice()))
    }

    /// Replaces the content with what a crawl found, in one go: `peers` are the servers that
    /// answered it, with their addresses (those not yet in get
    /// [`ConnectionType::NotConnected`]: a crawl closes what it opens).
    ///
    /// Peers already in keep their health (a run of failures ends, since they answered), and
    /// their new addresses are merged in front of the old. A peer the crawl missed stays while
    /// it was seen within `stale_after`, so that one crawl that missed a busy server does not
    /// drop it; the others leave. Within `max_peers`, the crawl's peers come first (those
    /// already in, then the new ones in the order given), then the missed ones, most recently
    /// seen first.
    ///
    /// Costs O(n log n) for the n peers of the table and the crawl, and while it runs the table
    /// may hold up to `max_peers` peers beyond its content (the crawl's newcomers), whatever
    /// the length of `peers`.
    pub fn replace_with_crawl<I>(&mut self, peers: I, now: Instant) -> CrawlMerge
    where
        I: IntoIterator<Item = (PeerId, Vec<Multiaddr>)>,
    {
        let mut merge = CrawlMerge::default();
        let known = self.entries.len();
        let cap = self.max_peers();
        let mut crawled = vec![false; known];
        for (peer, addrs) in peers {
            if peer == self.local_id {
                merge.refused += 1;
                continue;
            }
            if let Some(&slot) = self.by_id.get(&peer) {
                let slot = slot as usize;
                self.merge_into(slot, &addrs);
                self.entries[slot].seen(now);
                if slot < known && !crawled[slot] {
                    crawled[slot] = true;
                    merge.updated += 1;
                }
                continue;
            }
            // Peers already in may still come later in the crawl: those past the cap are
            // trimmed at the end; this only bounds the work and memory on a huge crawl.
            if merge.updated + merge.inserted >= cap {
                merge.refused += 1;
                continue;
            }
            let bounded = self.bounded(&addrs);
            if bounded.is_empty() {
                merge.refused += 1;
                continue;
            }
            self.by_id.insert(peer, self.entries.len() as u32);
            self.entries.push(Entry::new(peer, bounded, now, false));
            merge.inserted += 1;
        }
        // The newest newcomers go first when those already in took their room.
        let trimmed = (merge.updated + merge.inserted)
            .saturating_sub(cap)
            .min(merge.inserted);
        merge.inserted -= trimmed;
        merge.refused += trimmed;
        let room = cap.saturating_sub(merge.updated + merge.inserted);
        let stale_after = self.config.stale_after;
        let mut missed: Vec<usize> = (0..known)
            .filter(|&i| {
                !crawled[i]
                    && now.saturating_duration_since(self.entries[i].last_seen) < stale_after
            })
            .collect();
        if missed.len() > room {
            missed.select_nth_unstable_by_key(room, |&i| Reverse(self.entries[i].last_seen));
            missed.truncate(room);
        }
        merge.kept = missed.len();
        merge.removed = known - merge.updated - merge.kept;
        let mut keep = crawled;
        for i in missed {
            keep[i] = true;
        }
        let newcomers = self.entries.len() - known;
        keep.extend((0..newcomers).map(|i| i < newcomers - trimmed));
        self.retain(&keep);
        self.last_crawl = Some(now);
        merge
    }

    /// Removes the peers not seen for `stale_after`, and returns them. O(n): call it once in
    /// a while (every few minutes), not per request.
    pub fn expire(&mut self, now: Instant) -> Vec<PeerId> {
        let stale_after = self.config.stale_after;
        let stale: Vec<usize> = (0..self.entries.len())
            .filter(|&i| now.saturating_duration_since(self.entries[i].last_seen) >= stale_after)
            .collect();
        let gone = stale.iter().map(|&i| self.entries[i].id).collect();
        if stale.len() > self.entries.len() / 8 {
            // Many at once (the crawls stopped): one rebuild beats as many removals.
            let mut keep = vec![true; self.entries.len()];
            for &i in &stale {
                keep[i] = false;
            }
            self.retain(&keep);
        } else {
            // From the last slot down: a removal only moves a peer from a higher slot, which
            // was either already removed or is not stale.
            for &i in stale.iter().rev() {
                self.evict(i);
            }
        }
        gone
    }

    fn max_peers(&self) -> usize {
        self.config.max_peers.min(u32::MAX as usize)
    }

    /// `new` as a peer's addresses, within the bounds.
    fn bounded(&self, new: &[Multiaddr]) -> Addresses {
        let mut addrs = Addresses::new();
        self.merge(&mut addrs, new);
        addrs
    }

    /// The k-bucket rule (newest first, no duplicates), then the bounds in one pass: addresses
    /// are taken in that order while fewer than `max_addrs_per_peer` are, and each only if it
    /// fits in what is left of `max_addr_bytes`. An address too long is skipped, so a known
    /// peer's new addresses can push out its old ones only by being taken themselves. Only the
    /// first `4 x max_addrs_per_peer` addresses given are looked at: the merge is quadratic,
    /// and a peer listing thousands must not cost thousands squared.
    fn merge(&self, addrs: &mut Addresses, new: &[Multiaddr]) {
        let mut count = self.config.max_addrs_per_peer.max(1);
        let new = &new[..new.len().min(count.saturating_mul(4))];
        KBucketTable::merge_addresses(addrs, new, usize::MAX);
        let mut budget = self.config.max_addr_bytes;
        addrs.retain(|a| {
            let take = count > 0 && a.len() <= budget;
            if take {
                count -= 1;
                budget -= a.len();
            }
            take
        });
        // A long list given once must not leave its capacity behind.
        addrs.shrink_to_fit();
    }

    fn merge_into(&mut self, slot: usize, new: &[Multiaddr]) {
        let mut addrs = std::mem::take(&mut self.entries[slot].addrs);
        let before = bytes_of(&addrs);
        self.merge(&mut addrs, new);
        self.address_bytes = self.address_bytes - before + bytes_of(&addrs);
        self.entries[slot].addrs = addrs;
    }

    fn offer(&mut self, peer: PeerId, addrs: &[Multiaddr], now: Instant) -> Admission {
        if peer == self.local_id {
            return Admission::Rejected(RejectReason::LocalPeer);
        }
        if let Some(&slot) = self.by_id.get(&peer) {
            let slot = slot as usize;
            self.merge_into(slot, addrs);
            let entry = &mut self.entries[slot];
            entry.seen(now);
            entry.connected = true;
            return Admission::Updated;
        }
        let bounded = self.bounded(addrs);
        if bounded.is_empty() {
            return Admission::Rejected(RejectReason::NoAddresses);
        }
        let len = self.entries.len();
        if len >= self.max_peers() {
            return Admission::Rejected(RejectReason::TableFull);
        }
        if len == self.entries.capacity() {
            // Grow by a quarter, not double, and never past the cap: the slack is memory.
            let grow = (len / 4).max(16).min(self.max_peers() - len);
            self.entries.reserve_exact(grow);
        }
        let entry = Entry::new(peer, bounded, now, true);
        self.address_bytes += bytes_of(&entry.addrs);
        let previous = self.index.insert(entry.key, len as u32);
        debug_assert!(previous.is_none(), "two peers of one key");
        self.by_id.insert(peer, len as u32);
        self.entries.push(entry);
        Admission::Inserted
    }

    /// Removes the peer in `slot`; the last peer moves into it.
    fn evict(&mut self, slot: usize) -> Entry {
        let entry = self.entries.swap_remove(slot);
        self.by_id.remove(&entry.id);
        self.index.remove(&entry.key);
        self.address_bytes -= bytes_of(&entry.addrs);
        if let Some(moved) = self.entries.get(slot) {
            self.by_id.insert(moved.id, slot as u32);
            self.index.move_to(&moved.key, slot as u32);
        }
        entry
    }

    /// Keeps the peers whose slot is `true` in `keep`, and rebuilds the maps.
    fn retain(&mut self, keep: &[bool]) {
        let mut slot = 0;
        self.entries.retain(|_| {
            slot += 1;
            keep[slot - 1]
        });
        self.entries.shrink_to_fit();
        self.by_id = HashMap::with_capacity(self.entries.len());
        self.by_id.extend(
            self.entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.id, i as u32)),
        );
        self.index = XorIndex::build(
            self.entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.key, i as u32)),
        );
        self.address_bytes = self.entries.iter().map(|e| bytes_of(&e.addrs)).sum();
    }
}

impl RoutingTable for FullTable {
    fn local_closest_peers(&self, target: &Key, count: usize) -> Vec<PeerRecord> {
        self.index
            .closest(target, count)
            .into_iter()
            .map(|slot| self.entries[slot as usize].record())
            .collect()
    }

    fn addresses(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        let slot = *self.by_id.get(peer)?;
        Some(&self.entries[slot as usize].addrs)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }

    fn peers(&self) -> Vec<PeerRecord> {
        self.entries.iter().map(Entry::record).collect()
    }

    /// The connection address is not used: there is no diversity limit (see the module docs).
    fn on_server_peer(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        _observed: Option<&Multiaddr>,
        now: Instant,
    ) -> Admission {
        self.offer(peer, addrs, now)
    }

    fn on_request_succeeded(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        _observed: Option<&Multiaddr>,
        now: Instant,
    ) -> Admission {
        self.offer(peer, addrs, now)
    }

    fn on_request_failed(
        &mut self,
        peer: &PeerId,
        failure: Failure,
        now: Instant,
    ) -> Option<Eviction> {
        let slot = *self.by_id.get(peer)? as usize;
        let (max, span) = (self.config.max_failures, self.config.failure_span);
        let entry = &mut self.entries[slot];
        entry.last_failure = Some(now);
        let silent = entry.failures.record(now, max, span);
        if failure == Failure::Unreachable || silent {
            let removed = self.evict(slot).id;
            return Some(Eviction {
                removed,
                promoted: None,
            });
        }
        None
    }

    /// Only the connection state reported in [`PeerRecord`]s changes: with no liveness checks,
    /// a lost connection is left to the next request or crawl.
    fn on_connection_closed(&mut self, peer: &PeerId, _lost: bool, _now: Instant) {
        if let Some(&slot) = self.by_id.get(peer) {
            self.entries[slot as usize].connected = false;
        }
    }

    fn remove(&mut self, peer: &PeerId) -> Option<Eviction> {
        let slot = *self.by_id.get(peer)? as usize;
        let removed = self.evict(slot).id;
        Some(Eviction {
            removed,
            promoted: None,
        })
    }

    /// None: the accelerated client reaches each key's closest peers directly, anywhere in the
    /// keyspace, so no small set of peers serves most requests, and the crawl closes what it
    /// opens rather than holding thousands of idle connections.
    fn keep_connected(&self, _max: usize) -> Vec<PeerId> {
        Vec::new()
    }
}

#[cfg(test)]
#[path = "full_tests.rs"]
mod tests;
