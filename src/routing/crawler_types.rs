//! The crawler's settings, what it hands out, and the pieces a result carries to the next
//! crawl: see [`super`] for how it crawls.

use std::time::{Duration, Instant};

use fnv::FnvHashMap;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;

use super::{
    ADDRESS_BYTES, MAX_CACHED_TARGETS, MAX_CPL, MIN_DEPTH_SAMPLES, PEER_BYTES, TARGET_BYTES,
    VISIT_BYTES,
};
use crate::key::Key;
use crate::network::message::{ConnectionType, PeerRecord, Request};

/// Settings of a crawl.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlerConfig {
    /// New peers contacted per second, at most (at least 1). Default 50: a network of 10,000 servers is
    /// covered in under 4 minutes while the crawl keeps at most a few hundred connections open
    /// (50 per second times `request_timeout` when every peer is silent). A burst of thousands
    /// of dials is what takes home routers down (ipfs/kubo#10192).
    pub pace: u32,
    /// New peers that may be contacted at once when the pace has been idle: the token bucket's
    /// size. Default 10: the pace is reached in 0.2 s, so the crawler need not wake up 50 times
    /// a second, and no second sees more than `pace + pace_burst` new peers.
    pub pace_burst: u32,
    /// Peers being crawled at once (each one connection). Default 256: about `pace` times
    /// `request_timeout`, so the pace, not this, is what binds even while every peer contacted
    /// is silent.
    pub max_peers_in_flight: usize,
    /// Requests in flight at once, over all peers. Default 2,048: at ten requests per peer (a
    /// network of some 10,000 servers), 200 peers at once, four times what the pace needs while
    /// peers answer within a second; with most peers silent, the crawl slows down rather than
    /// open more streams.
    pub max_requests_in_flight: usize,
    /// A request not answered this long after it left has failed; it covers the dial of the
    /// first wave. Default 5 s, go's crawler's connect timeout and its per-message timeout: a
    /// server that slow is a poor closest peer anyway.
    pub request_timeout: Duration,
    /// The deepest cpl asked of a peer. Default (and at most) [`MAX_CPL`], as go's crawler.
    pub max_cpl: usize,
    /// The depth of the first wave until 16 peers finished (see the module docs). Default 8:
    /// the depth at which most peers' buckets are complete in a network of a few thousand
    /// servers (7 or 8 for 2,000 in the simulation).
    pub initial_depth: usize,
    /// Peers taken from one answer; also the bucket size of the servers, which tells when a
    /// peer's buckets are complete. Default 20, Amino's k.
    pub k: usize,
    /// Peers a crawl holds (queued, being crawled, reachable or not). Default 100,000, a few
    /// times the DHT servers that crawlers of the Amino DHT count (tens of thousands).
    pub max_peers: usize,
    /// Peers waiting to be contacted, known only from others' answers. Default 100,000 (as
    /// `max_peers`); lower it to cap the peers held on an informant's word: names past it are
    /// dropped while the queue is full.
    pub max_queued: usize,
    /// Addresses kept per peer. Default 8: a server's IPv4 and IPv6 addresses over TCP, QUIC,
    /// WebTransport and WebRTC.
    pub max_addresses_per_peer: usize,
    /// Bytes of addresses kept per peer. Default 512: eight addresses of 64 bytes (a TCP
    /// address is 8 bytes, a WebTransport one with two certificate hashes about 90).
    pub max_address_bytes_per_peer: usize,
}

impl Default for CrawlerConfig {
    fn default() -> Self {
        Self {
            pace: 50,
            pace_burst: 10,
            max_peers_in_flight: 256,
            max_requests_in_flight: 2048,
            request_timeout: Duration::from_secs(5),
            max_cpl: MAX_CPL,
            initial_depth: 8,
            k: 20,
            max_peers: 100_000,
            max_queued: 100_000,
            max_addresses_per_peer: 8,
            max_address_bytes_per_peer: 512,
        }
    }
}

impl CrawlerConfig {
    /// The most memory a crawl with these settings holds, in bytes (an estimate of the
    /// allocations: see [`CrawlProgress::memory`]): every peer with as many and as long
    /// addresses as allowed.
    pub fn memory_bound(&self) -> usize {
        let per_peer = PEER_BYTES
            + self.max_addresses_per_peer * ADDRESS_BYTES
            + self.max_address_bytes_per_peer;
        self.max_peers * per_peer
            + self.max_peers_in_flight.max(1) * VISIT_BYTES
            + MAX_CACHED_TARGETS * TARGET_BYTES
    }

    pub(super) fn max_cpl(&self) -> usize {
        self.max_cpl.min(MAX_CPL)
    }
}

/// One request of a wave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlRequest {
    /// The cpl of the key with the peer's: report the outcome with it.
    pub bucket: usize,
    /// The FIND_NODE to send.
    pub request: Request,
}

/// What the crawler wants done.
#[derive(Debug, Clone, PartialEq)]
pub enum CrawlAction {
    /// Send these requests to `peer`, together over one connection (dialled at `addrs` if
    /// there is none), and report each outcome with its `bucket`.
    Send {
        /// The peer.
        peer: PeerId,
        /// Its addresses, those that worked first.
        addrs: Vec<Multiaddr>,
        /// The requests.
        requests: Vec<CrawlRequest>,
    },
    /// The crawler is done with `peer`: a connection opened for the crawl can be closed.
    Release {
        /// The peer.
        peer: PeerId,
    },
    /// The crawl is finished.
    Done(CrawlResult),
}

/// A peer that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawledPeer {
    /// The peer.
    pub id: PeerId,
    /// The address its connection reached, when the caller reported it.
    pub reached_at: Option<Multiaddr>,
    /// Its addresses: the one reached first, then those others gave.
    pub addrs: Vec<Multiaddr>,
}

impl CrawledPeer {
    /// As a peer record, addresses in the same order.
    pub fn record(&self) -> PeerRecord {
        PeerRecord {
            id: self.id,
            addrs: self.addrs.clone(),
            connection: ConnectionType::NotConnected,
        }
    }
}

/// What a crawl cost and met.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlStats {
    /// Requests sent.
    pub requests: u64,
    /// Requests answered.
    pub answered: u64,
    /// Requests failed, timeouts included.
    pub failed: u64,
    /// Of those, requests that passed `request_timeout`.
    pub timed_out: u64,
    /// Peers named in answers (the responder and the local node aside).
    pub named: u64,
    /// Names not taken because they were outside the range asked for (see the module docs).
    pub out_of_range: u64,
    /// New peers not taken because the crawl held `max_peers`, or `max_queued` were waiting.
    pub dropped: u64,
    /// Waves beyond each peer's first.
    pub extra_waves: u64,
    /// Most peers being crawled at once: connections the crawl needed at once.
    pub peak_peers_in_flight: usize,
    /// Most requests in flight at once.
    pub peak_requests_in_flight: usize,
    /// From the crawl's start to its end.
    pub duration: Duration,
}

/// How far a crawl is. `found = queued + contacted()`, `contacted() = in_flight + reachable +
/// unreachable`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CrawlProgress {
    /// Distinct peers known, seeds included (those waiting when the crawl was stopped
    /// aside).
    pub found: usize,
    /// Waiting to be contacted.
    pub queued: usize,
    /// Being crawled.
    pub in_flight: usize,
    /// Answered at least one request.
    pub reachable: usize,
    /// Every request failed.
    pub unreachable: usize,
    /// Requests sent.
    pub requests: u64,
    /// Requests in flight.
    pub requests_in_flight: usize,
    /// Estimated bytes the crawl holds (at most [`CrawlerConfig::memory_bound`]).
    pub memory: usize,
}

impl CrawlProgress {
    /// Peers contacted so far.
    pub fn contacted(&self) -> usize {
        self.in_flight + self.reachable + self.unreachable
    }
}

/// The outcome of a crawl.
#[derive(Debug, Clone, PartialEq)]
pub struct CrawlResult {
    /// Peers that answered at least one request.
    pub reachable: Vec<CrawledPeer>,
    /// Peers contacted whose every request failed, with the addresses tried.
    pub unreachable: Vec<PeerRecord>,
    /// Peers known but not contacted ([`Crawler::stop`](super::Crawler::stop)).
    pub not_contacted: usize,
    /// What it cost.
    pub stats: CrawlStats,
    pub(super) depths: Depths,
    pub(super) targets: Targets,
}

impl CrawlResult {
    /// The reachable peers as seeds of the next crawl, the address that worked first.
    pub fn seeds(&self) -> impl Iterator<Item = PeerRecord> + '_ {
        self.reachable.iter().map(CrawledPeer::record)
    }
}

/// The cpls at which crawled peers were complete: `counts[c]` peers at `c`, the last slot for
/// those never complete.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Depths {
    counts: [u32; MAX_CPL + 2],
}

impl Depths {
    pub(super) fn record(&mut self, depth: usize) {
        self.counts[depth.min(MAX_CPL + 1)] += 1;
    }

    /// The depth at which 90% of the peers were complete, once there are enough of them.
    pub(super) fn wave_depth(&self, initial: usize) -> usize {
        let total: u32 = self.counts.iter().sum();
        if total < MIN_DEPTH_SAMPLES {
            return initial;
        }
        let wanted = (total * 9).div_ceil(10);
        let mut seen = 0;
        for (depth, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= wanted {
                return depth;
            }
        }
        MAX_CPL
    }
}

/// Keys drawn at each cpl, by the first `cpl + 1` bits of the peers they serve.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Targets {
    pub(super) by_prefix: FnvHashMap<(u8, u16), PeerId>,
}

impl Targets {
    /// A key at `cpl` (at most [`MAX_CPL`]) from `key`: one kept, or one drawn.
    pub(super) fn at(&mut self, key: &Key, cpl: usize, rng: &mut StdRng) -> Option<PeerId> {
        let [first, second, ..] = *key.as_bytes();
        let slot = (
            cpl as u8,
            u16::from_be_bytes([first, second]) >> (MAX_CPL - cpl),
        );
        if let Some(target) = self.by_prefix.get(&slot) {
            return Some(*target);
        }
        // 32 times the hashes expected: a key is found but once in e^32.
        let target = key.random_peer_in_bucket(cpl, 1 << (cpl + 6), rng)?;
        if self.by_prefix.len() < MAX_CACHED_TARGETS {
            self.by_prefix.insert(slot, target);
        }
        Some(target)
    }
}

/// A token bucket as a theoretical arrival time: a contact is allowed once `tat` is at most
/// `burst - 1` intervals ahead of now.
#[derive(Debug)]
pub(super) struct Pace {
    interval: Duration,
    tolerance: Duration,
    tat: Instant,
}

impl Pace {
    pub(super) fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        let interval = Duration::from_secs(1) / per_second.max(1);
        Self {
            interval,
            tolerance: interval * (burst.max(1) - 1),
            tat: now,
        }
    }

    /// When the next contact is allowed.
    pub(super) fn next(&self) -> Instant {
        self.tat.checked_sub(self.tolerance).unwrap_or(self.tat)
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        if self.next() > now {
            return false;
        }
        self.tat = self.tat.max(now) + self.interval;
        true
    }
}
