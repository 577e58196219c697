//! Provider: keeps the keys this node provides announced (StartProvide, StopProvide,
//! ProvideList), with a keyspace sweep instead of one lookup per key.
//!
//! The list lives in the store ([`Store::add_provided`](crate::Store::add_provided)), so it
//! survives restarts. Every region of the keyspace (see [`sweep`]) comes due once per reprovide
//! interval; then its keys due for a reprovide are read from the store, page by page (however
//! many keys share a region: at start-up the whole keyspace is one region), the region's
//! closest peers are found with one lookup (4k peers around the middle key of its first page),
//! and each key goes to its k closest among them. All of a peer's ADD_PROVIDER messages go on its one connection, at most
//! `per_peer_in_flight` at a time (a bulk reprovide must pace what it sends to one peer).
//!
//! Sans-IO: the `Provider` state machine plans; the behaviour runs the lookups and sends the requests.

mod key;
mod progress;
pub mod sweep;

pub use key::{InvalidProviderKey, ProviderKey};
use progress::Pace;
pub use progress::SweepStatus;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use fnv::{FnvHashMap, FnvHashSet};
use libp2p::{Multiaddr, PeerId};

use crate::key::Key;
use crate::network::message::PeerRecord;
use crate::network::OutboundRequestId;
use crate::routing::QueryId;
use crate::store::{ProvidedPage, StoreError};
pub use sweep::SweepMark;
use sweep::{Region, Schedule};

/// Settings of the reprovide sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReprovideConfig {
    /// Every provided key is announced again this often. Default 22 h, as Amino (records live
    /// 48 h).
    pub interval: Duration,
    /// Regions swept at once. Default 4.
    pub workers: usize,
    /// ADD_PROVIDER messages in flight to one peer. Default 8.
    pub per_peer_in_flight: usize,
    /// Provided keys read from the store at once: a region with more is swept page by page,
    /// each page announced before the next is read, with the peers of the region's one lookup.
    /// Default 10,000 (a page costs about 250 bytes per key while it is announced, 20 peers per
    /// key).
    pub keys_per_page: usize,
}

impl Default for ReprovideConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(22 * 3600),
            workers: 4,
            per_peer_in_flight: 8,
            keys_per_page: 10_000,
        }
    }
}

/// What a region sweep achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// The region.
    pub region: Region,
    /// Keys announced.
    pub keys: usize,
    /// Peers reached.
    pub peers: usize,
    /// ADD_PROVIDER messages written.
    pub messages: usize,
    /// ADD_PROVIDER messages that failed.
    pub failures: usize,
    /// How late the region started after its slot (zero for a region caught up after a start:
    /// the node was not running at its slot).
    pub behind: Duration,
    /// How far past its due time (its last announcement plus the interval, or when it was
    /// added) the most overdue key of the region was announced: the lateness that matters to
    /// the records' 48 h lifetime, downtime included.
    pub overdue: Duration,
    /// When the region's sweep started.
    pub started: SystemTime,
    /// Whether the region's lookup started from the accelerated client's full table (see
    /// [`QueryStats::accelerated`](crate::QueryStats::accelerated)).
    pub accelerated: bool,
}

struct Sending {
    keys: Vec<Vec<u8>>,
    /// Per peer: its addresses and the keys (indices) still to send to it.
    queues: FnvHashMap<PeerId, (Vec<Multiaddr>, VecDeque<usize>)>,
    in_flight: FnvHashMap<PeerId, usize>,
    /// Peers that took each key.
    took: Vec<u16>,
    /// Keys stopped while the run was under way (indices): not announced any more, and not
    /// recorded as announced.
    stopped: FnvHashSet<usize>,
    outstanding: usize,
    /// Where the region's next page starts (`None`: this is its last).
    next: Option<Key>,
    /// The region's peers, for the pages after this one.
    peers: Vec<PeerRecord>,
}

enum Phase {
    /// Waiting for a page of the region's keys; `peers` once its lookup is done.
    Loading { peers: Option<Vec<PeerRecord>> },
    /// Waiting for the lookup of the region's peers, with its first page of keys.
    Lookup {
        keys: Vec<Vec<u8>>,
        next: Option<Key>,
    },
    /// Announcing a page.
    Sending(Sending),
}

struct Run {
    region: Region,
    /// When the region's first keys were read: the time recorded as the last announcement of
    /// all its keys, so that the next cycle finds them due however long this run took.
    started: SystemTime,
    behind: Duration,
    /// The most overdue key announced so far.
    overdue: Duration,
    phase: Phase,
    /// Over all the pages so far: keys announced, peers reached, messages, failures.
    keys: usize,
    peers: FnvHashSet<PeerId>,
    messages: usize,
    failures: usize,
    /// Its lookup started from the accelerated client's full table.
    accelerated: bool,
}

/// What the provider wants done.
#[derive(Debug)]
pub(crate) enum ProviderAction {
    /// Read a page of the provided keys from `from` (at most `keys_per_page`), keep those of
    /// the region that are due for a reprovide, and call [`Provider::region_keys`] with them
    /// and where the region's next page starts.
    LoadKeys { region: Region, from: Key },
    /// Find the closest peers (4k) to `target` (a key in the middle of the region: a lookup
    /// needs key bytes, and a hash cannot be inverted), then call [`Provider::region_peers`].
    FindPeers { region: Region, target: Vec<u8> },
    /// Send ADD_PROVIDER for `key` to `peer`; report with [`Provider::on_sent`].
    Announce {
        region: Region,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        key: Vec<u8>,
        index: usize,
    },
    /// Record that `key` was announced at `at` to `peers` peers.
    KeyDone {
        key: Vec<u8>,
        at: SystemTime,
        peers: u16,
    },
    /// A region is done.
    Report(SweepReport),
    /// Regions are due but every worker is busy: the sweep is behind by `by`, with `waiting`
    /// regions waiting, and would need `workers_needed` workers at its pace.
    Behind {
        by: Duration,
        waiting: usize,
        workers_needed: Option<usize>,
    },
}

/// The reprovide sweep.
pub(crate) struct Provider {
    config: ReprovideConfig,
    k: usize,
    schedule: Schedule,
    waiting: VecDeque<(Region, SystemTime)>,
    runs: Vec<Run>,
    lookups: FnvHashMap<QueryId, Region>,
    requests: FnvHashMap<OutboundRequestId, (Region, PeerId, usize)>,
    /// Pages of keys being read, by the tag the store answers with.
    pages: FnvHashMap<u64, Region>,
    next_page: u64,
    pace: Pace,
    /// The mark last handed to the store (see [`Provider::new_mark`]).
    saved_mark: Option<SweepMark>,
}

impl Provider {
    pub(crate) fn new(config: ReprovideConfig, k: usize) -> Self {
        Self {
            schedule: Schedule::new(config.interval),
            config,
            k,
            waiting: VecDeque::new(),
            runs: Vec::new(),
            lookups: FnvHashMap::default(),
            requests: FnvHashMap::default(),
            pages: FnvHashMap::default(),
            next_page: 0,
            pace: Pace::default(),
            saved_mark: None,
        }
    }

    /// Resumes where the sweep stood when the node stopped (the mark its store kept): the
    /// regions of that cycle done before it are not read again to catch up.
    pub(crate) fn resume_from(&mut self, mark: SweepMark) {
        self.schedule.resume_from(mark);
        self.saved_mark = Some(mark);
    }

    /// How far the sweep got, when that changed since the last call: the first region handed
    /// out and not finished (waiting or running; a region queued by new keys counts too, which
    /// only makes a restart read a little more), else the schedule's next region.
    pub(crate) fn new_mark(&mut self) -> Option<SweepMark> {
        let (cycle, next) = self.schedule.cursor()?;
        let depth = self.schedule.depth();
        let outstanding = self.waiting.iter().map(|(r, _)| r);
        let first = outstanding
            .chain(self.runs.iter().map(|run| &run.region))
            .map(|region| region.index_at(depth))
            .fold(next, u64::min);
        let mark = SweepMark {
            cycle,
            next: first,
            depth,
        };
        if self.saved_mark == Some(mark) {
            return None;
        }
        self.saved_mark = Some(mark);
        Some(mark)
    }

    /// The tag to read a page for `region` with (see [`ProviderAction::LoadKeys`]); the page
    /// goes to [`Provider::page_loaded`] with it.
    pub(crate) fn page_requested(&mut self, region: Region) -> u64 {
        let tag = self.next_page;
        self.next_page += 1;
        self.pages.insert(tag, region);
        tag
    }

    /// A page of the provided keys was read for the tag: keeps the keys of its region due for
    /// a reprovide at `now`, and goes on with them (see [`Provider::region_keys`]).
    pub(crate) fn page_loaded(
        &mut self,
        tag: u64,
        page: Result<ProvidedPage, StoreError>,
        now: SystemTime,
    ) -> Vec<ProviderAction> {
        let Some(region) = self.pages.remove(&tag) else {
            return Vec::new();
        };
        let page = match page {
            Ok(page) => page,
            Err(error) => {
                // The region ends here; its keys come due again with its next slot.
                tracing::warn!(%error, "reading the provided keys failed");
                return self.region_keys(region, Vec::new(), None);
            }
        };
        let mut keys = Vec::new();
        let mut ended = false;
        let mut overdue = Duration::ZERO;
        for provided in page.keys {
            // Keyspace order: the first key past the region ends it.
            if !region.contains(&Key::new(&provided.key)) {
                ended = true;
                break;
            }
            if self.key_due(provided.last_provided, now) {
                let due = provided
                    .last_provided
                    .and_then(|last| last.checked_add(self.config.interval))
                    .unwrap_or(provided.added);
                overdue = overdue.max(now.duration_since(due).unwrap_or_default());
                keys.push(provided.key);
            }
        }
        if let Some(run) = self.run_mut(region) {
            run.overdue = run.overdue.max(overdue);
        }
        let next = page.next.filter(|from| !ended && region.contains(from));
        self.region_keys(region, keys, next)
    }

    /// Whether a key last announced at `last` is due at `now`: once per interval, with a
    /// margin so that a region swept a little early in the next cycle still counts.
    pub(crate) fn key_due(&self, last: Option<SystemTime>, now: SystemTime) -> bool {
        let margin = self.config.interval / 8;
        last.is_none_or(|t| {
            now.duration_since(t).unwrap_or_default() + margin >= self.config.interval
        })
    }

    /// Sweeps the region of `key` as soon as a worker is free (a key just added is announced
    /// now, with the other new keys of its region, in one lookup).
    pub(crate) fn kick(&mut self, key: &Key, now: SystemTime) {
        let region = self.schedule.region_of(key);
        let queued = self.waiting.iter().any(|(r, _)| *r == region);
        if !queued {
            self.waiting.push_back((region, now));
        }
    }

    /// [`Provider::kick`] for many keys: each region they fall in is queued once (a million
    /// keys cost a hash each and one set lookup, not a scan of the queue per key).
    pub(crate) fn kick_many<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a Key>,
        now: SystemTime,
    ) {
        let mut queued: FnvHashSet<Region> = self.waiting.iter().map(|(r, _)| *r).collect();
        for key in keys {
            let region = self.schedule.region_of(key);
            if queued.insert(region) {
                self.waiting.push_back((region, now));
            }
        }
    }

    /// StopProvide for the runs under way: `keys` were read before they were stopped, and must
    /// not be announced again. Their announcements not handed over yet are dropped (those
    /// already sent cannot be called back; their records expire on their own). One pass over
    /// each run's page, however many keys stop at once.
    pub(crate) fn stop_many(&mut self, keys: &FnvHashSet<&[u8]>) {
        if keys.is_empty() {
            return;
        }
        for run in &mut self.runs {
            match &mut run.phase {
                // The pages still to read are read after the stop: they are not in them.
                Phase::Loading { .. } => {}
                Phase::Lookup { keys: page, .. } => page.retain(|k| !keys.contains(k.as_slice())),
                Phase::Sending(sending) => {
                    for (index, key) in sending.keys.iter().enumerate() {
                        if keys.contains(key.as_slice()) {
                            sending.stopped.insert(index);
                        }
                    }
                }
            }
        }
    }

    /// Whether regions wait for a worker.
    pub(crate) fn has_waiting(&self) -> bool {
        self.runs.len() < self.config.workers.max(1) && self.next_startable().is_some()
    }

    /// The first waiting region not being swept already. A region runs once at a time: a
    /// second run would take over the first one's lookup and strand both; keys added while it
    /// runs wait for the next pass.
    fn next_startable(&self) -> Option<usize> {
        self.waiting
            .iter()
            .position(|(region, _)| !self.runs.iter().any(|run| run.region == *region))
    }

    /// How long until the schedule wants attention.
    pub(crate) fn until_next(&self, now: SystemTime) -> Duration {
        self.schedule.until_next(now)
    }

    /// Regions due now: starts what the workers allow, reports falling behind.
    pub(crate) fn tick(
        &mut self,
        now: SystemTime,
        leading_full_buckets: usize,
    ) -> Vec<ProviderAction> {
        self.schedule.set_depth(leading_full_buckets);
        for (region, slot) in self.schedule.due(now) {
            if !self.waiting.iter().any(|(r, _)| *r == region) {
                self.waiting.push_back((region, slot));
            }
        }
        let mut actions = Vec::new();
        while self.runs.len() < self.config.workers.max(1) {
            let Some((region, due)) = self.next_startable().and_then(|i| self.waiting.remove(i))
            else {
                break;
            };
            self.runs.push(Run {
                region,
                started: now,
                behind: now.duration_since(due).unwrap_or_default(),
                overdue: Duration::ZERO,
                phase: Phase::Loading { peers: None },
                keys: 0,
                peers: FnvHashSet::default(),
                messages: 0,
                failures: 0,
                accelerated: false,
            });
            actions.push(ProviderAction::LoadKeys {
                region,
                from: region.start(),
            });
        }
        let behind = self.behind(now);
        if behind > Duration::ZERO {
            actions.push(ProviderAction::Behind {
                by: behind,
                waiting: self.waiting.len(),
                workers_needed: self.workers_needed(),
            });
        }
        actions
    }

    /// How long the oldest waiting region has waited past its slot.
    fn behind(&self, now: SystemTime) -> Duration {
        self.waiting
            .iter()
            .map(|(_, due)| now.duration_since(*due).unwrap_or_default())
            .max()
            .unwrap_or_default()
    }

    fn workers_needed(&self) -> Option<usize> {
        let regions = 1u64 << self.schedule.depth();
        let workers = self.config.workers.max(1);
        self.pace
            .workers_needed(regions, self.config.interval, workers)
    }

    /// A region finished `took` after it started (measured by the caller, who has the clock
    /// of the report).
    pub(crate) fn region_took(&mut self, took: Duration, report: &SweepReport) {
        self.pace.record(took, report.keys, report.overdue);
    }

    /// Where the sweep stands at `now`.
    pub(crate) fn status(&self, now: SystemTime) -> SweepStatus {
        SweepStatus {
            regions: 1u64 << self.schedule.depth(),
            running: self.runs.len(),
            waiting: self.waiting.len(),
            behind: self.behind(now),
            workers: self.config.workers.max(1),
            region_time: self.pace.region_time(),
            workers_needed: self.workers_needed(),
            overdue: self.pace.overdue,
            keys_announced: self.pace.keys_announced,
            messages: self.pace.messages,
        }
    }

    fn run_mut(&mut self, region: Region) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.region == region)
    }

    fn finish(&mut self, region: Region) -> Vec<ProviderAction> {
        let Some(i) = self.runs.iter().position(|r| r.region == region) else {
            return Vec::new();
        };
        let run = self.runs.remove(i);
        vec![ProviderAction::Report(SweepReport {
            region,
            keys: run.keys,
            peers: run.peers.len(),
            messages: run.messages,
            failures: run.failures,
            behind: run.behind,
            overdue: run.overdue,
            started: run.started,
            accelerated: run.accelerated,
        })]
    }

    /// A page is announced: its keys are done; the next page is read, or the region is done.
    fn page_done(&mut self, region: Region) -> Vec<ProviderAction> {
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        let Phase::Sending(sending) =
            std::mem::replace(&mut run.phase, Phase::Loading { peers: None })
        else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        let announced = sending.keys.len() - sending.stopped.len();
        run.keys += announced;
        run.peers.extend(sending.queues.keys().copied());
        let done = sending.keys.into_iter().zip(sending.took).enumerate();
        for (index, (key, took)) in done {
            if sending.stopped.contains(&index) {
                continue;
            }
            actions.push(ProviderAction::KeyDone {
                key,
                at: run.started,
                peers: took,
            });
        }
        match sending.next {
            Some(from) => {
                run.phase = Phase::Loading {
                    peers: Some(sending.peers),
                };
                actions.push(ProviderAction::LoadKeys { region, from });
            }
            None => actions.extend(self.finish(region)),
        }
        self.pace.keys_announced += announced as u64;
        actions
    }

    /// A page of the region's keys due for a reprovide (read by the behaviour from the store),
    /// in keyspace order, and where the region's next page starts (`None`: the region ends
    /// with this page). The first page with keys starts the region's lookup (its middle key is
    /// near the region's center); later pages go to the peers found then.
    pub(crate) fn region_keys(
        &mut self,
        region: Region,
        keys: Vec<Vec<u8>>,
        next: Option<Key>,
    ) -> Vec<ProviderAction> {
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        let Phase::Loading { peers } = &mut run.phase else {
            return Vec::new();
        };
        let peers = peers.take();
        if keys.is_empty() {
            return match next {
                Some(from) => {
                    run.phase = Phase::Loading { peers };
                    vec![ProviderAction::LoadKeys { region, from }]
                }
                None => self.finish(region),
            };
        }
        match peers {
            None => {
                let target = keys[keys.len() / 2].clone();
                run.phase = Phase::Lookup { keys, next };
                vec![ProviderAction::FindPeers { region, target }]
            }
            Some(peers) => self.send_page(region, keys, next, peers),
        }
    }

    /// The lookup for a region was started as `query`.
    pub(crate) fn lookup_started(&mut self, query: QueryId, region: Region) {
        self.lookups.insert(query, region);
    }

    /// Whether `query` is one of the sweep's lookups.
    pub(crate) fn owns_query(&self, query: &QueryId) -> bool {
        self.lookups.contains_key(query)
    }

    /// The closest peers of a region were found: each key goes to its k closest among them.
    pub(crate) fn region_peers(
        &mut self,
        query: QueryId,
        peers: Vec<PeerRecord>,
        accelerated: bool,
    ) -> Vec<ProviderAction> {
        let Some(region) = self.lookups.remove(&query) else {
            return Vec::new();
        };
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        run.accelerated = accelerated;
        let Phase::Lookup { keys, next } =
            std::mem::replace(&mut run.phase, Phase::Loading { peers: None })
        else {
            return Vec::new();
        };
        self.send_page(region, keys, next, peers)
    }

    /// Starts announcing a page: each key to its k closest among `peers`.
    fn send_page(
        &mut self,
        region: Region,
        keys: Vec<Vec<u8>>,
        next: Option<Key>,
        peers: Vec<PeerRecord>,
    ) -> Vec<ProviderAction> {
        let k = self.k;
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        let mut queues: FnvHashMap<PeerId, (Vec<Multiaddr>, VecDeque<usize>)> =
            FnvHashMap::default();
        let points: Vec<Key> = peers.iter().map(|p| Key::from_peer(&p.id)).collect();
        let mut order: Vec<usize> = (0..peers.len()).collect();
        for (index, key) in keys.iter().enumerate() {
            let target = Key::new(key);
            order.sort_by_key(|i| points[*i].distance(&target));
            for i in order.iter().take(k) {
                let peer = &peers[*i];
                queues
                    .entry(peer.id)
                    .or_insert_with(|| (peer.addrs.clone(), VecDeque::new()))
                    .1
                    .push_back(index);
            }
        }
        let took = vec![0; keys.len()];
        run.phase = Phase::Sending(Sending {
            keys,
            queues,
            in_flight: FnvHashMap::default(),
            took,
            stopped: FnvHashSet::default(),
            outstanding: 0,
            next,
            peers,
        });
        self.pump(region)
    }

    /// Sends what the per-peer windows allow; moves on when the page is done.
    fn pump(&mut self, region: Region) -> Vec<ProviderAction> {
        let window = self.config.per_peer_in_flight.max(1);
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        let Phase::Sending(sending) = &mut run.phase else {
            return Vec::new();
        };
        let mut actions = Vec::new();
        for (peer, (addrs, queue)) in &mut sending.queues {
            let in_flight = sending.in_flight.entry(*peer).or_default();
            while *in_flight < window {
                let Some(index) = queue.pop_front() else {
                    break;
                };
                if sending.stopped.contains(&index) {
                    continue;
                }
                *in_flight += 1;
                sending.outstanding += 1;
                actions.push(ProviderAction::Announce {
                    region,
                    peer: *peer,
                    addrs: addrs.clone(),
                    key: sending.keys[index].clone(),
                    index,
                });
            }
        }
        if sending.outstanding == 0 && sending.queues.values().all(|(_, q)| q.is_empty()) {
            actions.extend(self.page_done(region));
        }
        actions
    }

    /// An announcement the provider asked for was sent as request `id`.
    pub(crate) fn on_sent(
        &mut self,
        id: OutboundRequestId,
        region: Region,
        peer: PeerId,
        index: usize,
    ) {
        self.requests.insert(id, (region, peer, index));
    }

    /// The outcome of an announcement.
    pub(crate) fn on_result(&mut self, id: OutboundRequestId, ok: bool) -> Vec<ProviderAction> {
        let Some((region, peer, index)) = self.requests.remove(&id) else {
            return Vec::new();
        };
        if ok {
            self.pace.messages += 1;
        }
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        if ok {
            run.messages += 1;
        } else {
            run.failures += 1;
        }
        if let Phase::Sending(sending) = &mut run.phase {
            sending.outstanding = sending.outstanding.saturating_sub(1);
            if let Some(n) = sending.in_flight.get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
            if ok {
                if let Some(took) = sending.took.get_mut(index) {
                    *took = took.saturating_add(1);
                }
            }
        }
        self.pump(region)
    }
}

#[cfg(test)]
mod tests;
