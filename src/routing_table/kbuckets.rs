//! [`KBucketTable`]: 256 buckets of at most k peers each, indexed by the common-prefix length of
//! a peer's key with ours, each with a replacement cache.
//!
//! Health rules:
//! - **Admission**: only peers the behaviour reports as servers, never ourselves, only with at
//!   least one address, and only while the diversity filter allows the IP group of the address
//!   their connection came from (never of the addresses they advertise).
//! - **Full bucket**: a newcomer waits in the replacement cache (newest kept); it never pushes
//!   out a peer that works. Liveness checks are paced, not triggered by newcomers.
//! - **Gone**: a dial refused outright ([`Failure::Unreachable`]) evicts at once, as
//!   go-libp2p-kad-dht removes a peer whose dial failed.
//! - **Silent**: a request with no answer ([`Failure::NoAnswer`]) is only a suspicion, since
//!   a slow peer or our own overload looks the same: the peer is checked again `recheck_after`
//!   later (a liveness check, outside any lookup), and evicted once `max_failures` failures in
//!   a row span at least `failure_span` with no answer between them. A burst of timeouts (the
//!   1,000-node bootstrap storm of `benches/network` lasted 4 s) cannot evict; a peer that stays
//!   silent through the rechecks is evicted within about `recheck_after x max_failures`.
//! - **Liveness**: a peer not heard from for `liveness_interval` is handed out once for a check,
//!   as is a peer whose kept connection was lost (at most once per `lost_check_interval`) and
//!   a candidate just promoted from the replacement cache. Peers deeper in the table, whose
//!   connections are not kept, are met by lookups: the refresh's self-lookup asks the closest
//!   ones every refresh interval, and a dial refused outright evicts them. The evicted slot goes to the most
//!   recently seen replacement candidate that passes the diversity filter.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::Rng;
use smallvec::SmallVec;

use super::diversity::{group_of, DiversityConfig, GroupCounts, IpGroup};
use super::failure::FailureRun;
use super::{Admission, Eviction, Failure, RefreshTarget, RejectReason, RoutingTable};
use crate::key::{Distance, Key};
use crate::network::message::{ConnectionType, PeerRecord};

/// Buckets at or below this common-prefix length get refresh targets, as in go: deeper ones
/// would take more than 2^17 hashes to find a target for, and hold few peers in any network.
const MAX_REFRESH_CPL: usize = 15;
/// Hash attempts allowed to find one refresh target (2^17: over 86% success for cpl 15).
const REFRESH_TARGET_TRIES: usize = 1 << 17;

/// Settings of the [`KBucketTable`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KBucketConfig {
    /// Peers per bucket (k). Default 20, as Amino.
    pub k: usize,
    /// Candidates kept per full bucket to replace evicted peers. Default 10.
    pub replacement_cache_size: usize,
    /// Addresses kept per peer, most recently successful first. Default 16: enough for a peer's
    /// IPv4 and IPv6 addresses over TCP, QUIC, WebTransport and WebSocket; a peer advertising
    /// thousands cannot make us store them.
    pub max_addresses_per_peer: usize,
    /// A peer not heard from for this long is due for a liveness check. Default 43 minutes:
    /// go-libp2p-kad-dht's threshold, ln(1/k) / ln(1 - alpha/k) refresh intervals (4.32 x 10 min
    /// for k = 20, alpha = 10), the time in which a healthy peer is expected to have been
    /// queried by refresh lookups anyway. Shorter would spend requests on peers that work.
    pub liveness_interval: Duration,
    /// Failed requests in a row ([`Failure::NoAnswer`]) that evict a peer, once they also span
    /// `failure_span`. Default 3: one timeout under load is not death.
    pub max_failures: u8,
    /// How long `max_failures` failures in a row must span, with no answer between them, to
    /// evict a peer. Default 60 s: a burst of timeouts while our node or the network is
    /// overloaded lasts seconds (4 s in the 1,000-node run of `benches/network`), a silent peer
    /// stays silent. Zero evicts on `max_failures` alone. A dial refused outright evicts at
    /// once whatever this says.
    pub failure_span: Duration,
    /// A peer whose request failed without evicting it is due for a liveness check this long
    /// later: the checks gather the evidence outside lookups, paced, and clear a peer that
    /// recovered. Default 30 s: with the 10 s request timeout and 3 failures, a silent peer met
    /// once is evicted about 90 s later.
    pub recheck_after: Duration,
    /// A peer whose kept connection was lost (it broke, or the remote closed it) is due for a
    /// liveness check, unless one was handed out for it within this. Default 10 min, the
    /// refresh interval: a node whose kept connection to a peer that stopped is lost finds out
    /// at its next liveness tick, while a remote that keeps closing idle connections costs at
    /// most one check (a dial, which opens the connection again) per interval.
    pub lost_check_interval: Duration,
    /// The IP diversity filter; `None` disables it. On by default (public DHT).
    pub diversity: Option<DiversityConfig>,
}

impl Default for KBucketConfig {
    fn default() -> Self {
        Self {
            k: 20,
            replacement_cache_size: 10,
            max_addresses_per_peer: 16,
            liveness_interval: Duration::from_secs(43 * 60),
            max_failures: 3,
            failure_span: Duration::from_secs(60),
            recheck_after: Duration::from_secs(30),
            lost_check_interval: Duration::from_secs(600),
            diversity: Some(DiversityConfig::default()),
        }
    }
}

pub(super) type Addresses = SmallVec<[Multiaddr; 2]>;

#[derive(Debug)]
struct Entry {
    id: PeerId,
    key: Key,
    addrs: Addresses,
    /// The IP group of the address its connection came from, the only one it counts in:
    /// advertised addresses are the peer's to choose (or DNS names), the connection's is not.
    observed: Option<IpGroup>,
    last_seen: Instant,
    failures: FailureRun,
    /// Due for a liveness check from then on (a failure, a lost connection, a promotion).
    recheck_at: Option<Instant>,
    /// When a check of the peer was last handed out.
    last_checked: Option<Instant>,
    connected: bool,
    checking: bool,
}

impl Entry {
    fn new(
        id: PeerId,
        key: Key,
        addrs: Addresses,
        observed: Option<IpGroup>,
        seen: Instant,
    ) -> Self {
        Self {
            id,
            key,
            addrs,
            observed,
            last_seen: seen,
            failures: FailureRun::default(),
            recheck_at: None,
            last_checked: None,
            connected: true,
            checking: false,
        }
    }
}

#[derive(Debug)]
struct Candidate {
    id: PeerId,
    key: Key,
    addrs: Addresses,
    observed: Option<IpGroup>,
    seen: Instant,
}

#[derive(Debug, Default)]
struct Bucket {
    entries: Vec<Entry>,
    replacements: VecDeque<Candidate>,
    groups: GroupCounts,
    last_refreshed: Option<Instant>,
}

/// The default routing table: k-buckets with liveness checks, replacement caches and an IP
/// diversity filter.
#[derive(Debug)]
pub struct KBucketTable {
    local: Key,
    local_id: PeerId,
    config: KBucketConfig,
    buckets: Vec<Bucket>,
    groups: GroupCounts,
    len: usize,
}

impl KBucketTable {
    /// An empty table around the local peer.
    pub fn new(local_id: PeerId, config: KBucketConfig) -> Self {
        Self {
            local: Key::from_peer(&local_id),
            local_id,
            buckets: (0..256).map(|_| Bucket::default()).collect(),
            groups: GroupCounts::default(),
            config,
            len: 0,
        }
    }

    /// The table's settings.
    pub fn config(&self) -> &KBucketConfig {
        &self.config
    }

    /// Number of peers in bucket `index` (the common-prefix length with the local key).
    pub fn bucket_len(&self, index: usize) -> usize {
        self.buckets.get(index).map_or(0, |b| b.entries.len())
    }

    /// Number of replacement candidates waiting for bucket `index`.
    pub fn replacements_len(&self, index: usize) -> usize {
        self.buckets.get(index).map_or(0, |b| b.replacements.len())
    }

    fn bucket_of(&self, key: &Key) -> Option<usize> {
        let cpl = self.local.common_prefix_len(key);
        (cpl < 256).then_some(cpl)
    }

    fn find(&self, peer: &PeerId) -> Option<(usize, usize)> {
        let b = self.bucket_of(&Key::from_peer(peer))?;
        let i = self.buckets[b].entries.iter().position(|e| e.id == *peer)?;
        Some((b, i))
    }

    /// Merges `new` into `addrs`: new ones first (most recent), capped. The full table applies
    /// the same rule.
    pub(super) fn merge_addresses(addrs: &mut Addresses, new: &[Multiaddr], cap: usize) {
        for addr in new.iter().rev() {
            if let Some(pos) = addrs.iter().position(|a| a == addr) {
                addrs.remove(pos);
            }
            addrs.insert(0, addr.clone());
        }
        addrs.truncate(cap);
    }

    fn admits(&self, bucket: usize, groups: &[IpGroup]) -> bool {
        let Some(limits) = self.config.diversity else {
            return true;
        };
        self.buckets[bucket]
            .groups
            .admits(groups, limits.max_per_bucket)
            && self.groups.admits(groups, limits.max_per_table)
    }

    fn count_groups(&mut self, bucket: usize, groups: &[IpGroup], add: bool) {
        if self.config.diversity.is_none() {
            return;
        }
        if add {
            self.buckets[bucket].groups.add(groups);
            self.groups.add(groups);
        } else {
            self.buckets[bucket].groups.remove(groups);
            self.groups.remove(groups);
        }
    }

    fn offer(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        observed: Option<&Multiaddr>,
        now: Instant,
    ) -> Admission {
        let observed = observed.and_then(group_of);
        if peer == self.local_id {
            return Admission::Rejected(RejectReason::LocalPeer);
        }
        let key = Key::from_peer(&peer);
        let Some(b) = self.bucket_of(&key) else {
            return Admission::Rejected(RejectReason::LocalPeer);
        };
        let cap = self.config.max_addresses_per_peer;
        if let Some(i) = self.buckets[b].entries.iter().position(|e| e.id == peer) {
            self.refresh_entry(b, i, addrs, observed, now);
            return Admission::Updated;
        }
        let mut bounded: Addresses = Addresses::new();
        Self::merge_addresses(&mut bounded, addrs, cap);
        if bounded.is_empty() {
            return Admission::Rejected(RejectReason::NoAddresses);
        }
        let groups = observed.as_slice();
        if !self.admits(b, groups) {
            return Admission::Rejected(RejectReason::Diversity);
        }
        let bucket = &mut self.buckets[b];
        if bucket.entries.len() < self.config.k {
            bucket.replacements.retain(|c| c.id != peer);
            self.count_groups(b, groups, true);
            // Exact capacity: most buckets stay far from full, and slack would cost more
            // memory than the entries (an insert is rare next to a lookup).
            self.buckets[b].entries.reserve_exact(1);
            self.buckets[b]
                .entries
                .push(Entry::new(peer, key, bounded, observed, now));
            self.len += 1;
            return Admission::Inserted;
        }
        bucket.replacements.retain(|c| c.id != peer);
        bucket.replacements.reserve_exact(1);
        bucket.replacements.push_back(Candidate {
            id: peer,
            key,
            addrs: bounded,
            observed,
            seen: now,
        });
        while bucket.replacements.len() > self.config.replacement_cache_size {
            bucket.replacements.pop_front();
        }
        Admission::Pending
    }

    /// Updates a known peer: addresses, connection group (keeping the diversity counts right:
    /// a new connection address may not bring it into a full group), liveness.
    fn refresh_entry(
        &mut self,
        b: usize,
        i: usize,
        addrs: &[Multiaddr],
        observed: Option<IpGroup>,
        now: Instant,
    ) {
        let cap = self.config.max_addresses_per_peer;
        let entry = &mut self.buckets[b].entries[i];
        Self::merge_addresses(&mut entry.addrs, addrs, cap);
        let old = entry.observed;
        let new = observed.or(old);
        if new != old {
            self.count_groups(b, old.as_slice(), false);
            let kept = if self.admits(b, new.as_slice()) {
                new
            } else {
                old
            };
            self.buckets[b].entries[i].observed = kept;
            self.count_groups(b, kept.as_slice(), true);
        }
        let entry = &mut self.buckets[b].entries[i];
        entry.last_seen = now;
        entry.failures.reset();
        entry.recheck_at = None;
        entry.checking = false;
        entry.connected = true;
    }

    fn evict(&mut self, b: usize, i: usize) -> Eviction {
        let entry = self.buckets[b].entries.swap_remove(i);
        self.len -= 1;
        self.count_groups(b, entry.observed.as_slice(), false);
        let mut promoted = None;
        while let Some(candidate) = self.buckets[b].replacements.pop_back() {
            let groups = candidate.observed.as_slice();
            if !self.admits(b, groups) {
                continue;
            }
            self.count_groups(b, groups, true);
            promoted = Some(candidate.id);
            // Its liveness dates from when it was last offered, and it may have left since
            // (in churn, candidates go as table peers do): it is checked before long.
            let mut entry = Entry::new(
                candidate.id,
                candidate.key,
                candidate.addrs,
                candidate.observed,
                candidate.seen,
            );
            entry.connected = false;
            entry.recheck_at = Some(candidate.seen);
            self.buckets[b].entries.reserve_exact(1);
            self.buckets[b].entries.push(entry);
            self.len += 1;
            break;
        }
        Eviction {
            removed: entry.id,
            promoted,
        }
    }

    fn record(entry: &Entry) -> PeerRecord {
        PeerRecord {
            id: entry.id,
            addrs: entry.addrs.to_vec(),
            connection: if entry.connected {
                ConnectionType::Connected
            } else {
                ConnectionType::NotConnected
            },
        }
    }

    /// The deepest non-empty bucket.
    fn max_cpl(&self) -> Option<usize> {
        self.buckets.iter().rposition(|b| !b.entries.is_empty())
    }
}

impl RoutingTable for KBucketTable {
    fn local_closest_peers(&self, target: &Key, count: usize) -> Vec<PeerRecord> {
        // Closeness to `target` by bucket, with i = cpl(local, target): bucket i holds the
        // closest peers; then the buckets deeper than i, all at the same top distance bit; then
        // buckets i-1, i-2, ... 0, each one bit farther. So each group is sorted on its own,
        // and the walk stops as soon as `count` peers are found.
        let i = self.local.common_prefix_len(target);
        let first = i..(i + 1).min(256);
        let deeper = (i + 1).min(256)..256;
        let farther = (0..i.min(256)).rev().map(|b| b..b + 1);
        let mut out = Vec::with_capacity(count.min(self.len));
        let mut group: Vec<(Distance, &Entry)> = Vec::new();
        for range in [first, deeper].into_iter().chain(farther) {
            if out.len() >= count {
                break;
            }
            group.clear();
            for b in range {
                for e in &self.buckets[b].entries {
                    group.push((e.key.distance(target), e));
                }
            }
            let need = count - out.len();
            if group.len() > need {
                group.select_nth_unstable_by(need, |a, b| a.0.cmp(&b.0));
                group.truncate(need);
            }
            group.sort_unstable_by_key(|(d, _)| *d);
            out.extend(group.iter().map(|(_, e)| Self::record(e)));
        }
        out
    }

    fn addresses(&self, peer: &PeerId) -> Option<&[Multiaddr]> {
        let (b, i) = self.find(peer)?;
        Some(&self.buckets[b].entries[i].addrs)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn peers(&self) -> Vec<PeerRecord> {
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(Self::record))
            .collect()
    }

    fn on_server_peer(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        observed: Option<&Multiaddr>,
        now: Instant,
    ) -> Admission {
        self.offer(peer, addrs, observed, now)
    }

    fn on_request_succeeded(
        &mut self,
        peer: PeerId,
        addrs: &[Multiaddr],
        observed: Option<&Multiaddr>,
        now: Instant,
    ) -> Admission {
        self.offer(peer, addrs, observed, now)
    }

    fn on_check_abandoned(&mut self, peer: &PeerId, now: Instant) {
        let delay = self.config.recheck_after;
        if let Some((b, i)) = self.find(peer) {
            let entry = &mut self.buckets[b].entries[i];
            entry.checking = false;
            // Due again, whatever made it due, but not at once: what stopped this check (no
            // address we can dial, our overload, a full queue) may not have passed.
            entry.recheck_at = entry.recheck_at.or(now.checked_add(delay));
        }
    }

    fn on_request_failed(
        &mut self,
        peer: &PeerId,
        failure: Failure,
        now: Instant,
    ) -> Option<Eviction> {
        let (b, i) = self.find(peer)?;
        if failure == Failure::Unreachable {
            return Some(self.evict(b, i));
        }
        let (max, span) = (self.config.max_failures, self.config.failure_span);
        let entry = &mut self.buckets[b].entries[i];
        entry.checking = false;
        if entry.failures.record(now, max, span) {
            return Some(self.evict(b, i));
        }
        entry.recheck_at = now.checked_add(self.config.recheck_after);
        None
    }

    fn on_connection_closed(&mut self, peer: &PeerId, lost: bool, now: Instant) {
        let interval = self.config.lost_check_interval;
        if let Some((b, i)) = self.find(peer) {
            let entry = &mut self.buckets[b].entries[i];
            entry.connected = false;
            let checked_lately = entry
                .last_checked
                .is_some_and(|t| now.saturating_duration_since(t) < interval);
            if lost && !checked_lately {
                entry.recheck_at = Some(entry.recheck_at.map_or(now, |t| t.min(now)));
            }
        }
    }

    fn remove(&mut self, peer: &PeerId) -> Option<Eviction> {
        if let Some((b, i)) = self.find(peer) {
            return Some(self.evict(b, i));
        }
        // A candidate only: forget it quietly.
        let b = self.bucket_of(&Key::from_peer(peer))?;
        self.buckets[b].replacements.retain(|c| c.id != *peer);
        None
    }

    fn next_liveness_check(&mut self, now: Instant) -> Option<PeerId> {
        let interval = self.config.liveness_interval;
        // Suspects first (a failure, a lost connection, a promotion), then the peers not heard
        // from for the interval.
        let mut stale = None;
        let mut due = None;
        for (b, bucket) in self.buckets.iter().enumerate() {
            for (i, e) in bucket.entries.iter().enumerate() {
                if e.checking {
                    continue;
                }
                match e.recheck_at {
                    Some(t) if t <= now => {
                        due = Some((b, i));
                        break;
                    }
                    // A recheck is scheduled: not before then, however long it was silent.
                    Some(_) => {}
                    None if stale.is_none()
                        && now.saturating_duration_since(e.last_seen) >= interval =>
                    {
                        stale = Some((b, i));
                    }
                    None => {}
                }
            }
            if due.is_some() {
                break;
            }
        }
        let (b, i) = due.or(stale)?;
        let entry = &mut self.buckets[b].entries[i];
        entry.checking = true;
        entry.recheck_at = None;
        entry.last_checked = Some(now);
        Some(entry.id)
    }

    fn keep_connected(&self, max: usize) -> Vec<PeerId> {
        // The shallowest buckets first: a random target falls in bucket 0 half of the time,
        // bucket 1 a quarter, so their peers are a lookup's first requests most often (go
        // protects the connections of buckets 0 and 1 for the same reason).
        self.buckets
            .iter()
            .flat_map(|b| b.entries.iter().map(|e| e.id))
            .take(max)
            .collect()
    }

    fn refresh_targets(
        &self,
        now: Instant,
        interval: Duration,
        rng: &mut dyn Rng,
    ) -> Vec<RefreshTarget> {
        let deepest = self.max_cpl().unwrap_or(0).min(MAX_REFRESH_CPL);
        (0..=deepest)
            .filter(|&b| {
                self.buckets[b]
                    .last_refreshed
                    .is_none_or(|t| now.saturating_duration_since(t) >= interval)
            })
            .filter_map(|bucket| {
                let target = self
                    .local
                    .random_peer_in_bucket(bucket, REFRESH_TARGET_TRIES, rng)?;
                Some(RefreshTarget { bucket, target })
            })
            .collect()
    }

    fn on_refreshed(&mut self, bucket: usize, now: Instant) {
        if let Some(b) = self.buckets.get_mut(bucket) {
            b.last_refreshed = Some(now);
        }
    }
}

#[cfg(test)]
#[path = "kbuckets_tests.rs"]
pub(super) mod tests;
