//! The crawler, as a sans-IO state machine: it finds every reachable DHT server by asking each
//! peer for the contents of its routing table. It says what to send and whom it is done with,
//! and hears back the answers; time is an argument. Feeding a full-network routing table from
//! its result (and crawling again later) is the caller's job.
//!
//! ## Enumerating a peer's buckets
//! A server's FIND_NODE answer holds the `k` peers of its table closest to the key. For a key
//! sharing exactly `c` leading bits with the peer's own key (a key "at cpl `c`"), the closest
//! are first the peer's bucket `c`, then its deeper buckets (cpl above `c`), then the shallower
//! ones. So the crawler asks each peer for one key at each cpl from 0 up, as go-libp2p-kad-dht's
//! crawler does (it always asks cpl 0 to 15). It stops at the first cpl `c` whose answer named
//! fewer than `k` peers at cpl `c` or deeper: then the peer holds fewer than `k` peers in bucket
//! `c` and the deeper ones together, and this answer named them all. Deeper keys would only
//! name them again.
//!
//! Round trips: the requests to one peer go out together, in **waves**, over one connection.
//! The first wave asks cpl 0 to the depth at which 90% of the peers crawled so far were
//! complete (`initial_depth` until 16 peers have finished; then measured), so most peers take
//! one round trip and few requests; a peer not complete after its wave gets a second one of
//! [`EXTRA_WAVE`] deeper keys over the same connection, and so on to `max_cpl`.
//!
//! Keys are drawn with [`Key::random_peer_in_bucket`]: about `2^(c+1)` hashes for cpl `c`, so
//! `2^(d+2)` for a peer asked to depth `d`. A key drawn for one peer at cpl `c` is a key at cpl
//! `c` for every peer sharing its first `c + 1` bits, so the crawl keeps the keys it drew (at
//! most 8,192, about 1.5 MB: every key to cpl 11) and most peers cost a few hashes: in a network
//! of 20,000 servers about five peers share each 12-bit prefix.
//!
//! ## Pace and concurrency
//! New peers are contacted at most `pace` per second, after a first burst of at most
//! `pace_burst` (a token bucket), and at most `max_peers_in_flight` peers are being crawled at
//! once, with at most `max_requests_in_flight` requests. go's crawler runs 1,000 workers at once;
//! Kubo users of the accelerated client report that its start takes their home router down
//! (ipfs/kubo#10192): the pace bounds the connections the crawl opens, not the network's size.
//! When the crawler is done with a peer (every request answered, failed or timed out) it says
//! so ([`CrawlAction::Release`]): the connection it needed can be closed.
//!
//! ## Bounds
//! Whatever the answers say, a crawl holds at most `max_peers` peers and at most `max_queued`
//! not contacted yet; a name past either bound is dropped (past `max_queued`, an honest peer
//! comes back once the queue drains, as it is named by many). One answer gives at most `k`
//! peers besides the responder (the rest is not read), each with at most `max_addresses_per_peer` addresses of at most
//! `max_address_bytes_per_peer` bytes in all, after the caller's address rules
//! (`routing::addresses`, as lookups apply them). So one peer introduces at most
//! `(max_cpl + 1) * k` peers (320 by default), and memory is bounded by
//! [`CrawlerConfig::memory_bound`]: 186 MB for the defaults' 100,000 peers whose every address
//! is as long as allowed; 110 MB for 100,000 peers with four 30-byte addresses each, so about
//! 22 MB for a network of 20,000 servers.
//! [`CrawlProgress::memory`] estimates what a crawl holds.
//!
//! **Forged names.** Within the range asked, nothing tells a forged name from a real one but
//! trying it. The bounds above cap what forgers cost; and the peers vouched for (the seeds, and
//! peers named by two informants or more, as every honest server is) are contacted before
//! those named by one informant only, so forged names delay the crawl only once the network is
//! covered (in the simulation, forgers among 5% of the servers made over 80% of the peers
//! contacted forged ones, and the network was covered as fast as without them).
//!
//! **Out-of-range names.** Asked for a key at cpl `c`, a server names its peers at cpl `c` or
//! deeper first, and shallower ones only when it holds fewer than `k` of those. An honest
//! server does that at every peer's deepest keys (in the 2,000-server simulation, one name in
//! ten is out of range), so such names are no evidence against the peer, which is not
//! penalised. But they add nothing: a peer at cpl `j < c` is in bucket `j`, which the key at
//! cpl `j` enumerates (every cpl from 0 is asked). So they are not taken (counted in
//! [`CrawlStats::out_of_range`]), and a hostile peer cannot use them to push names: its only
//! room is the range asked, at most `k` names per key.
//!
//! ## Outcomes
//! A peer that answered at least one request is **reachable**: the result has the addresses it
//! was reached at ([`Crawler::on_connected`]) and those others gave. A peer whose every request
//! failed or passed `request_timeout` is **unreachable**. An answer after its request's timeout is
//! ignored: the peer's slot went to the next one. [`CrawlAction::Done`] carries the
//! [`CrawlResult`]; [`Crawler::progress`] tells how far the crawl is meanwhile.
//!
//! Crawling again is the caller's choice (periodically, or continuously one crawl after the
//! other): [`Crawler::from_previous`] starts from the previous result's reachable peers, at the
//! addresses that worked, with the depth it measured, so it contacts known servers from its
//! first second instead of discovering them again.

use std::collections::VecDeque;
use std::time::Instant;

use fnv::FnvHashMap;
use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::query::sanitize;
use crate::key::Key;
use crate::network::message::{ConnectionType, PeerRecord, Request, Response};

#[path = "crawler_types.rs"]
mod types;
pub use types::{
    CrawlAction, CrawlProgress, CrawlRequest, CrawlResult, CrawlStats, CrawledPeer, CrawlerConfig,
};
use types::{Depths, Pace, Targets};

/// The deepest cpl the crawler can ask for: a key at cpl 15 takes 2^16 hashes on average, and a
/// bucket that deep is non-empty only in networks of over a million servers.
pub const MAX_CPL: usize = 15;
/// Deeper keys asked of a peer not complete after its first wave.
pub const EXTRA_WAVE: usize = 3;
/// Peers that must have finished before their depth replaces `initial_depth`.
const MIN_DEPTH_SAMPLES: u32 = 16;
/// Keys kept for reuse (see the module docs): all those to cpl 11.
const MAX_CACHED_TARGETS: usize = 8192;

/// Memory per peer held: its map slot (at most half the slots of a map are empty after it
/// grows) and its slots in the two lines of [`Waiting`], likewise.
const PEER_BYTES: usize =
    2 * (std::mem::size_of::<(PeerId, Entry)>() + 1) + 4 * std::mem::size_of::<PeerId>();
/// Memory per address held, besides its bytes: its slot in the peer's list (at most half
/// empty) and the shared header of its bytes.
const ADDRESS_BYTES: usize = 2 * std::mem::size_of::<Multiaddr>() + 24;
/// Memory per key kept for reuse.
const TARGET_BYTES: usize = 2 * (std::mem::size_of::<((u8, u16), PeerId)>() + 1);
/// Memory per peer being crawled.
const VISIT_BYTES: usize = 2 * (std::mem::size_of::<(PeerId, Visit)>() + 1)
    + (MAX_CPL + 1) * std::mem::size_of::<(u8, Instant)>();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Queued,
    Visiting,
    Reachable,
    Unreachable,
}

#[derive(Debug)]
struct Entry {
    /// Its key, kept: every answer naming it is checked against the range asked.
    key: Key,
    addrs: Vec<Multiaddr>,
    /// `addrs[0]` is the address the connection reached.
    reached: bool,
    state: State,
    /// A seed, or named by two informants or more: see [`Waiting`].
    vouched: bool,
    /// The first informant that named it (the first 8 bytes of the informant's key).
    informant: u64,
}

/// The peers waiting to be contacted, in two lines: those vouched for (seeds, and peers named by
/// two informants or more) go first, those named by one informant only wait behind them. An
/// honest server is named by every peer whose bucket it fills, a forged one by its forger
/// alone: forged names cost the crawl time only once the network is covered. An id leaves a
/// line when it is popped; one popped from the other line already is skipped then.
#[derive(Debug, Default)]
struct Waiting {
    vouched: VecDeque<PeerId>,
    named_once: VecDeque<PeerId>,
    /// Peers in the `Queued` state.
    len: usize,
}

/// A peer being crawled.
#[derive(Debug)]
struct Visit {
    key: Key,
    /// Requests in flight: cpl and deadline.
    pending: Vec<(u8, Instant)>,
    answered: u32,
    /// The deepest cpl asked.
    asked_upto: usize,
    /// The shallowest cpl whose answer shows the peer's buckets complete.
    complete: Option<usize>,
}

/// One crawl of the network. See the module docs.
#[derive(Debug)]
pub struct Crawler {
    local: PeerId,
    config: CrawlerConfig,
    peers: FnvHashMap<PeerId, Entry>,
    waiting: Waiting,
    visits: FnvHashMap<PeerId, Visit>,
    /// Peers whose wave is over and that want another.
    waves: VecDeque<PeerId>,
    outbox: VecDeque<CrawlAction>,
    requests_in_flight: usize,
    reachable: usize,
    unreachable: usize,
    address_count: usize,
    address_bytes: usize,
    depths: Depths,
    targets: Targets,
    pace: Pace,
    stats: CrawlStats,
    start: Instant,
    not_contacted: usize,
    /// [`Crawler::stop`] was called: no new peer is taken.
    stopped: bool,
    finished: bool,
    rng: StdRng,
}

impl Crawler {
    /// A crawl starting from `seeds`, at `now`. The local peer is never contacted; a seed may
    /// come without addresses when the caller is connected to it.
    pub fn new(
        local: PeerId,
        seeds: impl IntoIterator<Item = PeerRecord>,
        config: CrawlerConfig,
        now: Instant,
    ) -> Self {
        let mut crawler = Self {
            local,
            pace: Pace::new(config.pace, config.pace_burst, now),
            config,
            peers: FnvHashMap::default(),
            waiting: Waiting::default(),
            visits: FnvHashMap::default(),
            waves: VecDeque::new(),
            outbox: VecDeque::new(),
            requests_in_flight: 0,
            reachable: 0,
            unreachable: 0,
            address_count: 0,
            address_bytes: 0,
            depths: Depths::default(),
            targets: Targets::default(),
            stats: CrawlStats::default(),
            start: now,
            not_contacted: 0,
            stopped: false,
            finished: false,
            rng: StdRng::from_rng(&mut rand::rng()),
        };
        for seed in seeds {
            crawler.learn(seed.id, Key::from_peer(&seed.id), seed.addrs, None);
        }
        tracing::debug!(seeds = crawler.waiting.len, "crawl started");
        crawler
    }

    /// A new crawl from the reachable peers of `previous` (the addresses that worked first)
    /// and `extra` seeds, with the depth `previous` measured.
    pub fn from_previous(
        local: PeerId,
        previous: &CrawlResult,
        extra: impl IntoIterator<Item = PeerRecord>,
        config: CrawlerConfig,
        now: Instant,
    ) -> Self {
        let mut crawler = Self::new(local, previous.seeds().chain(extra), config, now);
        crawler.depths = previous.depths;
        crawler.targets = previous.targets.clone();
        crawler
    }

    /// The crawl's settings.
    pub fn config(&self) -> &CrawlerConfig {
        &self.config
    }

    /// How far the crawl is.
    pub fn progress(&self) -> CrawlProgress {
        // Once done, the peers went to the result.
        let found = if self.finished {
            self.reachable + self.unreachable
        } else {
            self.peers.len()
        };
        CrawlProgress {
            found,
            queued: self.waiting.len,
            in_flight: self.visits.len(),
            reachable: self.reachable,
            unreachable: self.unreachable,
            requests: self.stats.requests,
            requests_in_flight: self.requests_in_flight,
            memory: self.memory(),
        }
    }

    /// Whether [`CrawlAction::Done`] was handed out.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Contacts no new peer: the crawl finishes once the peers being crawled are done. The
    /// peers waiting are counted in [`CrawlResult::not_contacted`]; those named from now on are
    /// not taken.
    pub fn stop(&mut self) {
        self.stopped = true;
        let lines = [&mut self.waiting.vouched, &mut self.waiting.named_once];
        for peer in lines.into_iter().flat_map(|line| line.drain(..)) {
            if self
                .peers
                .get(&peer)
                .is_some_and(|e| e.state == State::Queued)
            {
                let entry = self.peers.remove(&peer).expect("just checked");
                self.address_count -= entry.addrs.len();
                self.address_bytes -= entry.addrs.iter().map(|a| a.len()).sum::<usize>();
                self.not_contacted += 1;
            }
        }
        self.waiting.len = 0;
    }

    fn memory(&self) -> usize {
        self.peers.len() * PEER_BYTES
            + self.address_count * ADDRESS_BYTES
            + self.address_bytes
            + self.visits.len() * VISIT_BYTES
            + self.targets.by_prefix.len() * TARGET_BYTES
    }

    /// Takes `id` at `addrs` into the crawl (a seed, or a peer named in an answer of
    /// `informant`), or adds the addresses to a known one, within the bounds.
    fn learn(&mut self, id: PeerId, key: Key, addrs: Vec<Multiaddr>, informant: Option<u64>) {
        if id == self.local {
            return;
        }
        match self.peers.get_mut(&id) {
            Some(entry) => {
                let vouches = informant.is_none_or(|i| i != entry.informant);
                if entry.state == State::Queued && !entry.vouched && vouches {
                    entry.vouched = true;
                    self.waiting.vouched.push_back(id);
                }
            }
            None => {
                // A name without an address worth dialling is not worth a place; it may come
                // back with one.
                if self.stopped || addrs.is_empty() && informant.is_some() {
                    return;
                }
                if self.peers.len() >= self.config.max_peers
                    || self.waiting.len >= self.config.max_queued
                {
                    self.stats.dropped += 1;
                    return;
                }
                let entry = Entry {
                    key,
                    addrs: Vec::new(),
                    reached: false,
                    state: State::Queued,
                    vouched: informant.is_none(),
                    informant: informant.unwrap_or_default(),
                };
                self.peers.insert(id, entry);
                self.waiting.len += 1;
                match informant {
                    None => self.waiting.vouched.push_back(id),
                    Some(_) => self.waiting.named_once.push_back(id),
                }
            }
        }
        for addr in addrs {
            self.push_address(&id, addr, false);
        }
    }

    /// Adds `addr` to the addresses of the known peer `id`: last, within the count and byte
    /// caps; or, if its connection `reached` it, first, the last ones giving way.
    fn push_address(&mut self, id: &PeerId, addr: Multiaddr, reached: bool) {
        let max_count = self.config.max_addresses_per_peer.max(1);
        let max_bytes = self.config.max_address_bytes_per_peer;
        let Some(entry) = self.peers.get_mut(id) else {
            return;
        };
        if let Some(i) = entry.addrs.iter().position(|a| *a == addr) {
            if reached && !entry.reached {
                let known = entry.addrs.remove(i);
                entry.addrs.insert(0, known);
                entry.reached = true;
            }
            return;
        }
        let len = addr.len();
        let mut bytes: usize = entry.addrs.iter().map(|a| a.len()).sum();
        let fits = |count: usize, bytes: usize| count < max_count && bytes + len <= max_bytes;
        if len > max_bytes || (reached && entry.reached) {
            return;
        }
        if !reached && !fits(entry.addrs.len(), bytes) {
            return;
        }
        while !fits(entry.addrs.len(), bytes) {
            let Some(last) = entry.addrs.pop() else {
                break;
            };
            bytes -= last.len();
            self.address_count -= 1;
            self.address_bytes -= last.len();
        }
        if reached {
            entry.addrs.insert(0, addr);
            entry.reached = true;
        } else {
            entry.addrs.push(addr);
        }
        self.address_count += 1;
        self.address_bytes += len;
    }

    /// The connection to `peer`, being crawled, reached it at `addr` (the remote address of
    /// the dial): that address comes first in the result.
    pub fn on_connected(&mut self, peer: &PeerId, addr: Multiaddr) {
        if self.visits.contains_key(peer) {
            self.push_address(peer, addr, true);
        }
    }

    /// `peer` answered the request of `bucket`. `addresses` keeps, of the addresses the answer
    /// gives for a peer, those worth dialling (the behaviour's address rules, which know who
    /// answered). An answer to no request in flight (late, repeated, unasked) is ignored.
    pub fn on_answer(
        &mut self,
        peer: &PeerId,
        bucket: usize,
        response: Response,
        addresses: &dyn Fn(&PeerId, Vec<Multiaddr>) -> Vec<Multiaddr>,
    ) {
        if !self.take_pending(peer, bucket) {
            return;
        }
        // The responder may list itself besides the k others.
        let Response::FindNode { closer_peers } = sanitize(response, self.config.k + 1, addresses)
        else {
            // The network layer only hands over answers of the request's type.
            self.stats.failed += 1;
            self.settle_if_over(peer);
            return;
        };
        self.stats.answered += 1;
        let key = match self.visits.get_mut(peer) {
            Some(visit) => {
                visit.answered |= 1 << bucket;
                visit.key
            }
            None => return,
        };
        let [a, b, c, d, e, f, g, h, ..] = *key.as_bytes();
        let informant = u64::from_be_bytes([a, b, c, d, e, f, g, h]);
        let mut in_range = 0;
        let mut named: Vec<PeerId> = Vec::with_capacity(closer_peers.len());
        for record in closer_peers {
            if named.contains(&record.id) {
                continue;
            }
            named.push(record.id);
            let name = match self.peers.get(&record.id) {
                Some(entry) => entry.key,
                None => Key::from_peer(&record.id),
            };
            let fits = name.common_prefix_len(&key) >= bucket;
            // The responder and the local node are honest names too: they count towards the
            // bucket's fill, but are not learned.
            if record.id == *peer || record.id == self.local {
                in_range += usize::from(fits);
                continue;
            }
            if !fits {
                self.stats.out_of_range += 1;
                continue;
            }
            in_range += 1;
            self.stats.named += 1;
            self.learn(record.id, name, record.addrs, Some(informant));
        }
        if in_range < self.config.k {
            if let Some(visit) = self.visits.get_mut(peer) {
                visit.complete = Some(visit.complete.map_or(bucket, |c| c.min(bucket)));
            }
        }
        self.settle_if_over(peer);
    }

    /// The request of `bucket` to `peer` failed.
    pub fn on_failure(&mut self, peer: &PeerId, bucket: usize) {
        if self.take_pending(peer, bucket) {
            self.stats.failed += 1;
            self.settle_if_over(peer);
        }
    }

    /// `peer` could not be reached (the dial failed): every request in flight to it failed.
    pub fn on_unreachable(&mut self, peer: &PeerId) {
        let Some(visit) = self.visits.get_mut(peer) else {
            return;
        };
        let failed = visit.pending.len();
        visit.pending.clear();
        self.requests_in_flight -= failed;
        self.stats.failed += failed as u64;
        self.settle_if_over(peer);
    }

    /// Removes the request of `bucket` to `peer` from those in flight; false if there is none.
    fn take_pending(&mut self, peer: &PeerId, bucket: usize) -> bool {
        let Some(visit) = self.visits.get_mut(peer) else {
            return false;
        };
        let Some(i) = visit
            .pending
            .iter()
            .position(|(c, _)| usize::from(*c) == bucket)
        else {
            return false;
        };
        visit.pending.swap_remove(i);
        self.requests_in_flight -= 1;
        true
    }

    /// Once nothing is in flight to `peer`: another wave, or done with it.
    fn settle_if_over(&mut self, peer: &PeerId) {
        let Some(visit) = self.visits.get(peer) else {
            return;
        };
        if !visit.pending.is_empty() {
            return;
        }
        let answered = visit.answered != 0;
        if answered && visit.complete.is_none() && visit.asked_upto < self.config.max_cpl() {
            if !self.waves.contains(peer) {
                self.waves.push_back(*peer);
            }
            return;
        }
        let visit = self.visits.remove(peer).expect("checked above");
        let state = if answered {
            self.depths
                .record(visit.complete.unwrap_or(self.config.max_cpl() + 1));
            self.reachable += 1;
            State::Reachable
        } else {
            self.unreachable += 1;
            State::Unreachable
        };
        if let Some(entry) = self.peers.get_mut(peer) {
            entry.state = state;
        }
        self.outbox.push_back(CrawlAction::Release { peer: *peer });
    }

    /// The earliest moment a request times out or the pace allows the next contact (call
    /// [`Crawler::poll`] then). Outcomes may unblock it sooner.
    pub fn next_deadline(&self) -> Option<Instant> {
        let requests = self
            .visits
            .values()
            .flat_map(|v| v.pending.iter().map(|(_, deadline)| *deadline))
            .min();
        let paced = (self.waiting.len > 0
            && self.waves.is_empty()
            && self.visits.len() < self.config.max_peers_in_flight.max(1)
            && self.room() >= self.first_wave_len())
        .then(|| self.pace.next());
        requests.into_iter().chain(paced).min()
    }

    fn room(&self) -> usize {
        self.config
            .max_requests_in_flight
            .max(1)
            .saturating_sub(self.requests_in_flight)
    }

    fn first_wave_len(&self) -> usize {
        let depth = self
            .depths
            .wave_depth(self.config.initial_depth)
            .min(self.config.max_cpl());
        (depth + 1).min(self.config.max_requests_in_flight.max(1))
    }

    /// What to do now; call until it returns `None`, then again at
    /// [`Crawler::next_deadline`] or after an outcome.
    pub fn poll(&mut self, now: Instant) -> Option<CrawlAction> {
        if self.finished {
            return None;
        }
        self.expire(now);
        if let Some(action) = self.outbox.pop_front() {
            return Some(action);
        }
        if let Some(action) = self.next_wave(now) {
            return Some(action);
        }
        if let Some(action) = self.contact_next(now) {
            return Some(action);
        }
        if self.waiting.len == 0 && self.visits.is_empty() {
            self.finished = true;
            self.stats.duration = now.saturating_duration_since(self.start);
            return Some(CrawlAction::Done(self.take_result()));
        }
        None
    }

    /// Requests past their deadline have failed.
    fn expire(&mut self, now: Instant) {
        let mut over = Vec::new();
        for (peer, visit) in &mut self.visits {
            let before = visit.pending.len();
            visit.pending.retain(|(_, deadline)| *deadline > now);
            let expired = before - visit.pending.len();
            if expired > 0 {
                self.requests_in_flight -= expired;
                self.stats.failed += expired as u64;
                self.stats.timed_out += expired as u64;
                if visit.pending.is_empty() {
                    over.push(*peer);
                }
            }
        }
        for peer in over {
            self.settle_if_over(&peer);
        }
    }

    /// The next wave of a peer that wants one, if the requests fit.
    fn next_wave(&mut self, now: Instant) -> Option<CrawlAction> {
        let (peer, from) = loop {
            let peer = *self.waves.front()?;
            match self.visits.get(&peer) {
                Some(visit) => break (peer, visit.asked_upto + 1),
                None => {
                    self.waves.pop_front();
                }
            }
        };
        let len = EXTRA_WAVE.min(self.config.max_requests_in_flight.max(1));
        let to = (from + len - 1).min(self.config.max_cpl());
        if self.room() < to + 1 - from {
            return None;
        }
        self.waves.pop_front();
        self.stats.extra_waves += 1;
        let action = self.send_wave(peer, from, to, now);
        if action.is_none() {
            // No key was found: as if the peer were complete.
            self.settle_if_over(&peer);
            return self.outbox.pop_front();
        }
        action
    }

    /// Contacts the next peer waiting, if the pace and the bounds allow. Waves of peers being
    /// crawled come first: their connections are open.
    fn contact_next(&mut self, now: Instant) -> Option<CrawlAction> {
        if self.waiting.len == 0
            || !self.waves.is_empty()
            || self.visits.len() >= self.config.max_peers_in_flight.max(1)
            || self.room() < self.first_wave_len()
            || !self.pace.take(now)
        {
            return None;
        }
        let (peer, key) = loop {
            let waiting = &mut self.waiting;
            let peer = waiting
                .vouched
                .pop_front()
                .or_else(|| waiting.named_once.pop_front())?;
            match self.peers.get_mut(&peer) {
                Some(entry) if entry.state == State::Queued => {
                    entry.state = State::Visiting;
                    waiting.len -= 1;
                    break (peer, entry.key);
                }
                _ => {}
            }
        };
        self.visits.insert(
            peer,
            Visit {
                key,
                pending: Vec::new(),
                answered: 0,
                asked_upto: 0,
                complete: None,
            },
        );
        self.stats.peak_peers_in_flight = self.stats.peak_peers_in_flight.max(self.visits.len());
        let last = self.first_wave_len() - 1;
        let action = self.send_wave(peer, 0, last, now);
        if action.is_none() {
            self.settle_if_over(&peer);
            return self.outbox.pop_front();
        }
        action
    }

    /// Sends `peer` one key at each cpl from `from` to `to`.
    fn send_wave(
        &mut self,
        peer: PeerId,
        from: usize,
        to: usize,
        now: Instant,
    ) -> Option<CrawlAction> {
        let deadline = now + self.config.request_timeout;
        let visit = self.visits.get_mut(&peer)?;
        let mut requests = Vec::with_capacity(to + 1 - from);
        for cpl in from..=to {
            if let Some(target) = self.targets.at(&visit.key, cpl, &mut self.rng) {
                visit.pending.push((cpl as u8, deadline));
                requests.push(CrawlRequest {
                    bucket: cpl,
                    request: Request::FindNode {
                        key: target.to_bytes(),
                    },
                });
            }
        }
        visit.asked_upto = to;
        if requests.is_empty() {
            return None;
        }
        self.requests_in_flight += requests.len();
        self.stats.requests += requests.len() as u64;
        self.stats.peak_requests_in_flight = self
            .stats
            .peak_requests_in_flight
            .max(self.requests_in_flight);
        let addrs = self
            .peers
            .get(&peer)
            .map(|e| e.addrs.clone())
            .unwrap_or_default();
        Some(CrawlAction::Send {
            peer,
            addrs,
            requests,
        })
    }

    fn take_result(&mut self) -> CrawlResult {
        let mut reachable = Vec::with_capacity(self.reachable);
        let mut unreachable = Vec::with_capacity(self.unreachable);
        for (id, entry) in self.peers.drain() {
            match entry.state {
                State::Reachable => reachable.push(CrawledPeer {
                    id,
                    reached_at: entry.addrs.first().filter(|_| entry.reached).cloned(),
                    addrs: entry.addrs,
                }),
                State::Unreachable => unreachable.push(PeerRecord {
                    id,
                    addrs: entry.addrs,
                    connection: ConnectionType::NotConnected,
                }),
                State::Queued | State::Visiting => self.not_contacted += 1,
            }
        }
        self.address_count = 0;
        self.address_bytes = 0;
        tracing::debug!(
            reachable = reachable.len(),
            unreachable = unreachable.len(),
            requests = self.stats.requests,
            "crawl done"
        );
        CrawlResult {
            reachable,
            unreachable,
            not_contacted: self.not_contacted,
            stats: self.stats,
            depths: self.depths,
            targets: std::mem::take(&mut self.targets),
        }
    }
}

#[cfg(test)]
#[path = "crawler_tests.rs"]
mod tests;
