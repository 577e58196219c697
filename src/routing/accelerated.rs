//! The accelerated client's routing: a [`FullTable`] of every DHT server, kept by crawling the
//! network (the [`Crawler`]), and the choice each operation makes between it and the iterative
//! lookup. This is the seed design's "`fullrt` only has a different Routing Table
//! implementation (allowing to bypass some Routing)".
//!
//! ## The bypass
//! Every operation (closest peers, find peer, get/put value, find providers, provide, the
//! sweep's regions) starts its lookup through `Accelerated::plan`. When the full table serves
//! the key, the lookup is seeded with the table's closest peers and asks all `k` of them at
//! once (`alpha = k`): one round trip. It is still a lookup: an answer naming a peer closer
//! than those asked is followed, so a table that missed a peer near the key costs another round
//! trip, not a wrong answer, and a silent seed is replaced by the next one as the lookup's
//! spares are. When the table does not serve the key, the lookup is the ordinary iterative one
//! from the k-bucket table: there is no window in which the node cannot route.
//!
//! The full table serves a key when:
//! - a crawl that covered the network finished (or one was restored from the store) within
//!   [`AcceleratedConfig::max_table_age`]. A crawl covered the network when the table it left
//!   holds at least half as many servers as the k-bucket table knows (half: some of those may
//!   be gone, and a crawl on a loaded node misses a few); one that found fewer (every
//!   node of a network starting at once, the seeds' tables still nearly empty) is followed by
//!   another after a back-off of 30 s, doubling, and does not make the table serve;
//! - among its closest peers to the key, at least half have not failed since they were last
//!   seen. Those that failed are skipped as seeds (one timeout under load is not death: the
//!   table keeps them, and an answer naming them brings them back into the lookup); when most
//!   of them failed, the network near the key changed since the crawl and the iterative lookup
//!   is the better guess.
//!
//! ## Crawls
//! A crawl starts as soon as the k-bucket table knows a peer (or when the restored table is due
//! for one), and again every [`AcceleratedConfig::crawl_interval`] after the previous one
//! started. Its seeds are the peers of both tables. What it found replaces the table
//! ([`FullTable::replace_with_crawl`]: peers it missed stay while seen recently). The crawl's
//! pace and bounds are the [`CrawlerConfig`]'s; the connections it opens are not kept (the
//! handler lets them close once idle, as any connection the routing table does not need).
//!
//! ## What the table never does
//! It does not answer other peers: our server's FIND_NODE answers keep coming from the k-bucket
//! table, whose diversity filter a forger cannot fill. It does not decide which connections are
//! kept open. Its memory is bounded by [`FullTableConfig::max_peers`] and the per-peer address
//! bounds.

use std::time::{Duration, Instant, SystemTime};

use fnv::FnvHashMap;
use libp2p::{Multiaddr, PeerId};

use super::crawler::{CrawlAction, CrawlProgress, CrawlStats, Crawler, CrawlerConfig};
use super::lookup::{Lookup, LookupConfig};
use crate::key::Key;
use crate::network::message::{PeerRecord, Request, Response};
use crate::network::{OutboundRequestId, RequestError};
use crate::routing_table::{CrawlMerge, Failure, FullTable, FullTableConfig, RoutingTable};
use crate::store::CrawlSnapshot;

/// The first wait before crawling again after a crawl that missed most of the network.
const THIN_CRAWL_BACKOFF: Duration = Duration::from_secs(30);

/// How long a crawl that is due waits before looking for a seed again.
const SEED_WAIT: Duration = Duration::from_secs(1);

/// Settings of the accelerated client: see [`Config::accelerated`](crate::Config::accelerated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceleratedConfig {
    /// The full table's bounds (peers, addresses, when a peer not seen leaves).
    pub table: FullTableConfig,
    /// The crawl's pace and bounds.
    pub crawler: CrawlerConfig,
    /// From the start of one crawl to the start of the next. Default 1 hour, as
    /// go-libp2p-kad-dht's accelerated client.
    pub crawl_interval: Duration,
    /// The full table serves lookups while its last crawl finished at most this long ago.
    /// Default 2 hours: one crawl may fail (no peer reachable, the node was offline) without
    /// the node going back to iterative lookups.
    pub max_table_age: Duration,
    /// [`Event::CrawlProgress`](crate::Event::CrawlProgress) at most this often. Default 1 s.
    pub progress_interval: Duration,
}

impl Default for AcceleratedConfig {
    fn default() -> Self {
        Self {
            table: FullTableConfig::default(),
            crawler: CrawlerConfig::default(),
            crawl_interval: Duration::from_secs(60 * 60),
            max_table_age: Duration::from_secs(2 * 60 * 60),
            progress_interval: Duration::from_secs(1),
        }
    }
}

/// What the accelerated routing wants done.
#[derive(Debug)]
pub(crate) enum AcceleratedAction {
    /// Send a crawl request; register its id with [`Accelerated::on_sent`].
    Send {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        bucket: usize,
        request: Request,
    },
    /// A crawl started from this many seeds.
    CrawlStarted { seeds: usize },
    /// How far the crawl under way is.
    Progress(CrawlProgress),
    /// A crawl finished and the table took its result.
    CrawlFinished {
        stats: CrawlStats,
        merge: CrawlMerge,
        peers: usize,
        serving: bool,
    },
}

/// Where a lookup starts: see the module docs.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) lookup: Lookup,
    /// Whether the full table seeded it.
    pub(crate) accelerated: bool,
}

/// The full table, the crawl under way and its schedule.
#[derive(Debug)]
pub(crate) struct Accelerated {
    local: PeerId,
    config: AcceleratedConfig,
    table: FullTable,
    crawl: Option<Crawler>,
    /// When the next crawl may start.
    next_crawl: Instant,
    /// When the last crawl that covered the network finished (or the restored table's): the
    /// table serves lookups while this is recent.
    covered_at: Option<Instant>,
    /// Crawls in a row that found fewer than half the servers the k-bucket table knows.
    thin_crawls: u32,
    /// Crawl requests in flight: the peer and bucket to report their outcome with.
    requests: FnvHashMap<OutboundRequestId, (PeerId, usize)>,
    next_progress: Instant,
}

impl Accelerated {
    pub(crate) fn new(local: PeerId, config: AcceleratedConfig, now: Instant) -> Self {
        Self {
            local,
            table: FullTable::new(local, config.table.clone()),
            config,
            crawl: None,
            next_crawl: now,
            covered_at: None,
            thin_crawls: 0,
            requests: FnvHashMap::default(),
            next_progress: now,
        }
    }

    /// The full table.
    pub(crate) fn table(&self) -> &FullTable {
        &self.table
    }

    /// How far the crawl under way is, if one is.
    pub(crate) fn crawl_progress(&self) -> Option<CrawlProgress> {
        self.crawl.as_ref().map(Crawler::progress)
    }

    /// Takes the table a previous run saved, as crawled when it was saved: it serves lookups at
    /// once if that is within `max_table_age`, and the next crawl is due an interval after it.
    pub(crate) fn restore(&mut self, snapshot: CrawlSnapshot, now: Instant, wall: SystemTime) {
        if snapshot.peers.is_empty() {
            return;
        }
        // A snapshot from the future (the clock was set back) counts as just saved.
        let age = wall
            .duration_since(snapshot.saved_at)
            .unwrap_or(Duration::ZERO);
        let Some(crawled) = now.checked_sub(age) else {
            return; // Older than this process's clock can express: stale anyway.
        };
        let merge = self.table.replace_with_crawl(snapshot.peers, crawled);
        // Only crawls that covered the network are saved.
        self.covered_at = Some(crawled);
        self.next_crawl = crawled + self.config.crawl_interval;
        tracing::info!(
            peers = merge.inserted,
            age_s = age.as_secs(),
            "full routing table restored"
        );
    }

    /// The table as saved for the next run, with the wall-clock time of its last crawl.
    pub(crate) fn snapshot(&self, now: Instant, wall: SystemTime) -> Option<CrawlSnapshot> {
        let crawled = self.covered_at?;
        let saved_at = wall
            .checked_sub(now.saturating_duration_since(crawled))
            .unwrap_or(wall);
        let peers = self
            .table
            .iter()
            .map(|(id, addrs)| (*id, addrs.to_vec()))
            .collect();
        Some(CrawlSnapshot { saved_at, peers })
    }

    /// Whether the table serves lookups at all now: a crawl that covered the network (or a
    /// restored one) finished within `max_table_age`.
    pub(crate) fn is_ready(&self, now: Instant) -> bool {
        self.covered_at
            .is_some_and(|at| now.saturating_duration_since(at) <= self.config.max_table_age)
            && !self.table.is_empty()
    }

    /// The full table's seeds for a lookup of `target` wanting `count` peers, or `None` when
    /// it does not serve the key (see the module docs).
    pub(crate) fn seeds(
        &self,
        target: &Key,
        count: usize,
        now: Instant,
    ) -> Option<Vec<PeerRecord>> {
        if !self.is_ready(now) {
            return None;
        }
        let closest = self.table.local_closest_peers(target, count);
        let healthy: Vec<PeerRecord> = closest
            .iter()
            .filter(|p| self.table.health(&p.id).is_none_or(|h| h.failures == 0))
            .cloned()
            .collect();
        if healthy.is_empty() || healthy.len() * 2 < closest.len() {
            return None;
        }
        Some(healthy)
    }

    /// The lookup for `target`: seeded from the full table's closest healthy peers (half again
    /// `k`, the rest spares) and asking `k` of them at once when the table serves the key, else
    /// the iterative lookup from `kbuckets`.
    pub(crate) fn plan(
        this: Option<&Self>,
        local: PeerId,
        target: Key,
        kbuckets: &dyn RoutingTable,
        mut config: LookupConfig,
        now: Instant,
    ) -> Plan {
        // Half again the peers wanted: the spares that replace silent seeds without a hop.
        let wanted = config.k + config.k / 2;
        if let Some(seeds) = this.and_then(|a| a.seeds(&target, wanted, now)) {
            config.alpha = config.alpha.max(config.k);
            config.widened_alpha = config.widened_alpha.max(config.k);
            return Plan {
                lookup: Lookup::new(target, local, seeds, config),
                accelerated: true,
            };
        }
        let seeds = kbuckets.local_closest_peers(&target, config.k);
        Plan {
            lookup: Lookup::new(target, local, seeds, config),
            accelerated: false,
        }
    }

    /// Starts a crawl when one is due and there are seeds, drives the one under way, and says
    /// what to send and report.
    pub(crate) fn poll(
        &mut self,
        kbuckets: &dyn RoutingTable,
        now: Instant,
    ) -> Vec<AcceleratedAction> {
        let mut actions = Vec::new();
        if self.crawl.is_none() && now >= self.next_crawl && !kbuckets.is_empty() {
            let seeds: Vec<PeerRecord> = kbuckets
                .peers()
                .into_iter()
                .chain(self.table.peers())
                .collect();
            actions.push(AcceleratedAction::CrawlStarted { seeds: seeds.len() });
            tracing::info!(seeds = seeds.len(), "crawl started");
            self.crawl = Some(Crawler::new(
                self.local,
                seeds,
                self.config.crawler.clone(),
                now,
            ));
            self.next_crawl = now + self.config.crawl_interval;
            self.next_progress = now;
        }
        let Some(crawl) = self.crawl.as_mut() else {
            return actions;
        };
        while let Some(action) = crawl.poll(now) {
            match action {
                CrawlAction::Send {
                    peer,
                    addrs,
                    requests,
                } => actions.extend(requests.into_iter().map(|r| AcceleratedAction::Send {
                    peer,
                    addrs: addrs.clone(),
                    bucket: r.bucket,
                    request: r.request,
                })),
                // The handler closes an idle connection the routing table does not keep.
                CrawlAction::Release { .. } => {}
                CrawlAction::Done(result) => {
                    let peers = result.reachable.into_iter().map(|p| (p.id, p.addrs));
                    let merge = self.table.replace_with_crawl(peers, now);
                    self.on_crawl_done(kbuckets.len(), now);
                    tracing::info!(
                        peers = self.table.len(),
                        covered = self.covered_at == Some(now),
                        requests = result.stats.requests,
                        duration_ms = result.stats.duration.as_millis() as u64,
                        "crawl finished"
                    );
                    actions.push(AcceleratedAction::CrawlFinished {
                        stats: result.stats,
                        merge,
                        peers: self.table.len(),
                        serving: self.is_ready(now),
                    });
                    self.crawl = None;
                    return actions;
                }
            }
        }
        if now >= self.next_progress {
            self.next_progress = now + self.config.progress_interval;
            actions.push(AcceleratedAction::Progress(crawl.progress()));
        }
        actions
    }

    /// A crawl finished and the table took its result. One that left the table with fewer
    /// than half the servers the k-bucket table knows (`known`) missed most of the network: the peers it
    /// started from had hardly any table yet (the whole network was starting), or most of them
    /// did not answer. The table does not serve from it, and the next crawl comes after a
    /// back-off (30 s, doubling, spread by half either way) rather than an interval later.
    fn on_crawl_done(&mut self, known: usize, now: Instant) {
        if self.table.len() * 2 >= known {
            self.covered_at = Some(now);
            self.thin_crawls = 0;
            return;
        }
        let backoff = THIN_CRAWL_BACKOFF * 2u32.saturating_pow(self.thin_crawls.min(16));
        self.thin_crawls += 1;
        // Every node of a network that started at once crawled at once, and would again:
        // spread them over half to one and a half times the back-off.
        let backoff = backoff
            .min(self.config.crawl_interval)
            .mul_f64(rand::random_range(0.5..1.5));
        self.next_crawl = now + backoff;
        tracing::info!(
            peers = self.table.len(),
            known,
            retry_s = backoff.as_secs(),
            "crawl found under half the servers of the k-bucket table; crawling again soon"
        );
    }

    /// The next moment [`poll`](Self::poll) has something to do without an outcome arriving.
    /// A crawl that is due but has no seed yet is looked at again a second later.
    pub(crate) fn next_deadline(&self, now: Instant) -> Instant {
        match &self.crawl {
            Some(crawl) => crawl
                .next_deadline()
                .map_or(self.next_progress, |d| d.min(self.next_progress)),
            None => self.next_crawl.max(now + SEED_WAIT),
        }
    }

    /// Starts a crawl at the next poll, whatever the schedule (none if one is under way).
    pub(crate) fn crawl_now(&mut self, now: Instant) -> bool {
        if self.crawl.is_some() {
            return false;
        }
        self.next_crawl = now;
        true
    }

    /// A crawl request left as `id`.
    pub(crate) fn on_sent(&mut self, id: OutboundRequestId, peer: PeerId, bucket: usize) {
        self.requests.insert(id, (peer, bucket));
    }

    /// A connection to `peer` reached it at `addr`.
    pub(crate) fn on_connected(&mut self, peer: &PeerId, addr: Multiaddr) {
        if let Some(crawl) = self.crawl.as_mut() {
            crawl.on_connected(peer, addr);
        }
    }

    /// The outcome of a crawl request. `addresses` applies the address rules to the peers an
    /// answer names.
    pub(crate) fn on_crawl_result(
        &mut self,
        id: OutboundRequestId,
        result: Result<Option<Response>, RequestError>,
        addresses: &dyn Fn(&PeerId, Vec<Multiaddr>) -> Vec<Multiaddr>,
    ) {
        let Some((peer, bucket)) = self.requests.remove(&id) else {
            return;
        };
        // A request of a crawl that ended (stopped, or past its deadline) is swallowed.
        let Some(crawl) = self.crawl.as_mut() else {
            return;
        };
        match result {
            Ok(Some(response)) => crawl.on_answer(&peer, bucket, response, addresses),
            Ok(None) | Err(_) => crawl.on_failure(&peer, bucket),
        }
    }

    /// Any request to `peer` (a lookup's, a check's) was answered: the table's health.
    pub(crate) fn on_answered(&mut self, peer: PeerId, now: Instant) {
        if self.table.contains(&peer) {
            let _ = self.table.on_request_succeeded(peer, &[], None, now);
        }
    }

    /// A request to `peer`, or a dial of it, failed with what it proves.
    pub(crate) fn on_failed(&mut self, peer: &PeerId, failure: Failure, now: Instant) {
        let _ = self.table.on_request_failed(peer, failure, now);
    }

    /// Removes `peer` (the application asked); whether the table held it.
    pub(crate) fn remove(&mut self, peer: &PeerId) -> bool {
        crate::routing_table::RoutingTable::remove(&mut self.table, peer).is_some()
    }

    /// Removes the peers not seen for the table's `stale_after`.
    pub(crate) fn expire(&mut self, now: Instant) {
        let gone = self.table.expire(now);
        if !gone.is_empty() {
            tracing::debug!(gone = gone.len(), "full routing table expired peers");
        }
    }
}

#[cfg(test)]
#[path = "accelerated_tests.rs"]
mod tests;
