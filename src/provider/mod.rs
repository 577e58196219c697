//! Provider: keeps the keys this node provides announced (StartProvide, StopProvide,
//! ProvideList), with a keyspace sweep instead of one lookup per key.
//!
//! The list lives in the store ([`Store::add_provided`](crate::Store::add_provided)), so it
//! survives restarts. Every region of the keyspace (see [`sweep`]) comes due once per reprovide
//! interval; then its keys due for a reprovide are read from the store, the region's closest
//! peers are found with one lookup (3k peers around its middle key), and each key goes to its
//! k closest among them. All of a peer's ADD_PROVIDER messages go on its one connection, at most
//! `per_peer_in_flight` at a time (a bulk reprovide must pace what it sends to one peer).
//!
//! Sans-IO: the `Provider` state machine plans; the behaviour runs the lookups and sends the requests.

pub mod sweep;

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use fnv::{FnvHashMap, FnvHashSet};
use libp2p::{Multiaddr, PeerId};

use crate::key::Key;
use crate::network::message::PeerRecord;
use crate::network::OutboundRequestId;
use crate::routing::QueryId;
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
    /// Keys read from the store per region. Default 100,000; a region with more is swept in
    /// several passes.
    pub max_keys_per_region: usize,
}

impl Default for ReprovideConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(22 * 3600),
            workers: 4,
            per_peer_in_flight: 8,
            max_keys_per_region: 100_000,
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
    /// How late the region started after its slot.
    pub behind: Duration,
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
    messages: usize,
    failures: usize,
}

enum Phase {
    /// Waiting for the lookup of the region's peers.
    Lookup {
        keys: Vec<Vec<u8>>,
    },
    Sending(Sending),
}

struct Run {
    region: Region,
    /// When the region's keys were read: the time recorded as their last announcement, so
    /// that the next cycle finds them due however long this run took.
    started: SystemTime,
    behind: Duration,
    phase: Phase,
}

/// What the provider wants done.
#[derive(Debug)]
pub(crate) enum ProviderAction {
    /// Read the region's keys due for a reprovide, then call [`Provider::region_keys`].
    LoadRegion(Region),
    /// Find the closest peers (3k) to `target` (a key in the middle of the region: a lookup
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
    /// Regions are due but every worker is busy: the sweep is behind by this much.
    Behind(Duration),
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
        }
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

    /// StopProvide for the runs under way: `key` was read before it was stopped, and must not
    /// be announced again. Its announcements not handed over yet are dropped (those already
    /// sent cannot be called back; their records expire on their own).
    pub(crate) fn stop(&mut self, key: &[u8]) {
        for run in &mut self.runs {
            match &mut run.phase {
                Phase::Lookup { keys } => keys.retain(|k| k.as_slice() != key),
                Phase::Sending(sending) => {
                    if let Some(index) = sending.keys.iter().position(|k| k.as_slice() == key) {
                        sending.stopped.insert(index);
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
                phase: Phase::Lookup { keys: Vec::new() },
            });
            actions.push(ProviderAction::LoadRegion(region));
        }
        if let Some((_, oldest)) = self.waiting.front() {
            let behind = now.duration_since(*oldest).unwrap_or_default();
            if behind > Duration::ZERO {
                actions.push(ProviderAction::Behind(behind));
            }
        }
        actions
    }

    fn run_mut(&mut self, region: Region) -> Option<&mut Run> {
        self.runs.iter_mut().find(|r| r.region == region)
    }

    fn finish(&mut self, region: Region) -> Vec<ProviderAction> {
        let Some(i) = self.runs.iter().position(|r| r.region == region) else {
            return Vec::new();
        };
        let run = self.runs.remove(i);
        let mut actions = Vec::new();
        let mut report = SweepReport {
            region,
            keys: 0,
            peers: 0,
            messages: 0,
            failures: 0,
            behind: run.behind,
        };
        if let Phase::Sending(sending) = run.phase {
            report.keys = sending.keys.len() - sending.stopped.len();
            report.peers = sending.queues.len();
            report.messages = sending.messages;
            report.failures = sending.failures;
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
        }
        actions.push(ProviderAction::Report(report));
        actions
    }

    /// The region's keys due for a reprovide (read by the behaviour from the store).
    /// `keys` are in keyspace order, so the middle one is near the region's center.
    pub(crate) fn region_keys(
        &mut self,
        region: Region,
        keys: Vec<Vec<u8>>,
    ) -> Vec<ProviderAction> {
        if keys.is_empty() {
            return self.finish(region);
        }
        let target = keys[keys.len() / 2].clone();
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        run.phase = Phase::Lookup { keys };
        vec![ProviderAction::FindPeers { region, target }]
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
    ) -> Vec<ProviderAction> {
        let Some(region) = self.lookups.remove(&query) else {
            return Vec::new();
        };
        let k = self.k;
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        let Phase::Lookup { keys } =
            std::mem::replace(&mut run.phase, Phase::Lookup { keys: Vec::new() })
        else {
            return Vec::new();
        };
        let mut queues: FnvHashMap<PeerId, (Vec<Multiaddr>, VecDeque<usize>)> =
            FnvHashMap::default();
        let points: Vec<Key> = peers.iter().map(|p| Key::from_peer(&p.id)).collect();
        for (index, key) in keys.iter().enumerate() {
            let target = Key::new(key);
            let mut order: Vec<usize> = (0..peers.len()).collect();
            order.sort_by_key(|i| points[*i].distance(&target));
            for i in order.into_iter().take(k) {
                let peer = &peers[i];
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
            messages: 0,
            failures: 0,
        });
        self.pump(region)
    }

    /// Sends what the per-peer windows allow; finishes the region when all is done.
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
            return self.finish(region);
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

    /// Whether the request is one of the sweep's announcements.
    pub(crate) fn owns_request(&self, id: &OutboundRequestId) -> bool {
        self.requests.contains_key(id)
    }

    /// The outcome of an announcement.
    pub(crate) fn on_result(&mut self, id: OutboundRequestId, ok: bool) -> Vec<ProviderAction> {
        let Some((region, peer, index)) = self.requests.remove(&id) else {
            return Vec::new();
        };
        let Some(run) = self.run_mut(region) else {
            return Vec::new();
        };
        if let Phase::Sending(sending) = &mut run.phase {
            sending.outstanding = sending.outstanding.saturating_sub(1);
            if let Some(n) = sending.in_flight.get_mut(&peer) {
                *n = n.saturating_sub(1);
            }
            if ok {
                sending.messages += 1;
                if let Some(took) = sending.took.get_mut(index) {
                    *took = took.saturating_add(1);
                }
            } else {
                sending.failures += 1;
            }
        }
        self.pump(region)
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use super::*;
    use crate::network::message::ConnectionType;

    fn peer() -> PeerRecord {
        PeerRecord {
            id: PeerId::random(),
            addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            connection: ConnectionType::NotConnected,
        }
    }

    #[test]
    fn a_region_goes_to_each_keys_k_closest_paced_per_peer() {
        let config = ReprovideConfig {
            workers: 1,
            per_peer_in_flight: 2,
            ..Default::default()
        };
        let mut provider = Provider::new(config, 3);
        let now = UNIX_EPOCH + Duration::from_secs(22 * 3600 * 1000);
        let actions = provider.tick(now, 0);
        let [ProviderAction::LoadRegion(region)] = actions[..] else {
            panic!("{actions:?}")
        };
        let keys: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 8]).collect();
        let actions = provider.region_keys(region, keys.clone());
        assert!(matches!(actions[..], [ProviderAction::FindPeers { .. }]));
        let query = QueryId(7);
        provider.lookup_started(query, region);
        let peers: Vec<PeerRecord> = (0..5).map(|_| peer()).collect();
        let mut pending = provider.region_peers(query, peers.clone());
        let mut next = 0u64;
        let mut done = Vec::new();
        let mut report = None;
        let mut max_in_flight: FnvHashMap<PeerId, usize> = FnvHashMap::default();
        let mut in_flight: FnvHashMap<PeerId, usize> = FnvHashMap::default();
        let mut sent: Vec<(OutboundRequestId, PeerId)> = Vec::new();
        let mut announced: Vec<(Vec<u8>, PeerId)> = Vec::new();
        loop {
            for action in std::mem::take(&mut pending) {
                match action {
                    ProviderAction::Announce {
                        region,
                        peer,
                        index,
                        key,
                        ..
                    } => {
                        announced.push((key, peer));
                        let id = OutboundRequestId(next);
                        next += 1;
                        provider.on_sent(id, region, peer, index);
                        let n = in_flight.entry(peer).or_default();
                        *n += 1;
                        let m = max_in_flight.entry(peer).or_default();
                        *m = (*m).max(*n);
                        sent.push((id, peer));
                    }
                    ProviderAction::KeyDone { key, peers, .. } => done.push((key, peers)),
                    ProviderAction::Report(r) => report = Some(r),
                    other => panic!("{other:?}"),
                }
            }
            let Some((id, peer)) = sent.pop() else { break };
            *in_flight.get_mut(&peer).unwrap() -= 1;
            pending = provider.on_result(id, true);
        }
        let report = report.expect("the region finished");
        assert_eq!(report.keys, 10);
        assert_eq!(report.messages, 30, "each key to its 3 closest");
        assert!(max_in_flight.values().all(|m| *m <= 2), "paced per peer");
        assert_eq!(done.len(), 10);
        assert!(done.iter().all(|(_, peers)| *peers == 3));
        // Each key went to its 3 closest peers.
        for key in &keys {
            let mut by_distance = peers.clone();
            by_distance.sort_by_key(|p| Key::from_peer(&p.id).distance(&Key::new(key)));
            let mut closest: Vec<PeerId> = by_distance.iter().take(3).map(|p| p.id).collect();
            let mut got: Vec<PeerId> = announced
                .iter()
                .filter(|(k, _)| k == key)
                .map(|(_, p)| *p)
                .collect();
            closest.sort();
            got.sort();
            assert_eq!(got, closest);
        }
    }

    /// Review of a flaky test: a key stopped while its region was being swept went on being
    /// announced by that sweep, for as long as it ran (seconds, under load).
    #[test]
    fn a_key_stopped_during_a_sweep_is_not_announced_again() {
        let config = ReprovideConfig {
            workers: 1,
            per_peer_in_flight: 1,
            ..Default::default()
        };
        let mut provider = Provider::new(config, 3);
        let now = UNIX_EPOCH + Duration::from_secs(22 * 3600 * 1000);
        let [ProviderAction::LoadRegion(region)] = provider.tick(now, 0)[..] else {
            panic!()
        };
        let keys: Vec<Vec<u8>> = (0..10u8).map(|i| vec![i; 8]).collect();
        let stopped_early = keys[9].clone();
        provider.region_keys(region, keys.clone());
        // Stopped while the region's peers are being looked up.
        provider.stop(&stopped_early);
        let query = QueryId(1);
        provider.lookup_started(query, region);
        let peers: Vec<PeerRecord> = (0..4).map(|_| peer()).collect();
        let mut pending = provider.region_peers(query, peers);
        let stopped = keys[5].clone();
        let mut stop_now = true;
        let mut next = 0u64;
        let mut sent_after_stop = Vec::new();
        let mut done = Vec::new();
        let mut report = None;
        let mut in_flight: Vec<OutboundRequestId> = Vec::new();
        loop {
            for action in std::mem::take(&mut pending) {
                match action {
                    ProviderAction::Announce {
                        region,
                        peer,
                        key,
                        index,
                        ..
                    } => {
                        if !stop_now {
                            sent_after_stop.push(key.clone());
                        }
                        let id = OutboundRequestId(next);
                        next += 1;
                        provider.on_sent(id, region, peer, index);
                        in_flight.push(id);
                    }
                    ProviderAction::KeyDone { key, .. } => done.push(key),
                    ProviderAction::Report(r) => report = Some(r),
                    other => panic!("{other:?}"),
                }
            }
            if stop_now {
                // One message per peer is out; every other announcement waits in line.
                provider.stop(&stopped);
                stop_now = false;
            }
            let Some(id) = in_flight.pop() else { break };
            pending = provider.on_result(id, true);
        }
        assert!(
            !sent_after_stop.contains(&stopped),
            "announced after it was stopped"
        );
        assert!(!sent_after_stop.contains(&stopped_early));
        assert!(!done.contains(&stopped) && !done.contains(&stopped_early));
        assert_eq!(done.len(), 8);
        assert_eq!(report.expect("the region finished").keys, 8);
    }

    #[test]
    fn a_region_without_due_keys_ends_at_once_and_work_beyond_the_workers_waits() {
        let config = ReprovideConfig {
            workers: 1,
            ..Default::default()
        };
        let mut provider = Provider::new(config, 20);
        let now = UNIX_EPOCH + Duration::from_secs(22 * 3600 * 1000);
        provider.kick(&Key::new(b"a"), now);
        provider.kick(&Key::new(b"b"), now);
        let actions = provider.tick(now, 0);
        assert!(matches!(actions[0], ProviderAction::LoadRegion(_)));
        let ProviderAction::LoadRegion(region) = actions[0] else {
            unreachable!()
        };
        let actions = provider.region_keys(region, Vec::new());
        assert!(matches!(
            actions[..],
            [ProviderAction::Report(SweepReport { keys: 0, .. })]
        ));
        assert!(provider.key_due(None, now));
        assert!(!provider.key_due(Some(now), now + Duration::from_secs(3600)));
        assert!(provider.key_due(Some(now), now + Duration::from_secs(20 * 3600)));
    }

    #[test]
    fn falling_behind_is_reported_with_how_much() {
        let config = ReprovideConfig {
            workers: 1,
            interval: Duration::from_secs(8000),
            ..Default::default()
        };
        let mut provider = Provider::new(config, 20);
        // Late in a cycle with 4 regions: all four are due; one worker takes the first.
        let now = UNIX_EPOCH + Duration::from_secs(8000 * 100 + 7000);
        let actions = provider.tick(now, 2);
        let behind: Vec<Duration> = actions
            .iter()
            .filter_map(|a| match a {
                ProviderAction::Behind(by) => Some(*by),
                _ => None,
            })
            .collect();
        // The oldest waiting region (index 1) was due at 2000 s into the cycle.
        assert_eq!(behind, vec![Duration::from_secs(5000)]);
    }
}
