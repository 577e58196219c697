//! [`Config`]: every knob of the DHT, with the Amino defaults.

use std::time::Duration;

use libp2p::StreamProtocol;
use smallvec::SmallVec;

use crate::mode::Mode;
use crate::network::message::Limits;
use crate::provider::ReprovideConfig;
use crate::routing::accelerated::AcceleratedConfig;
use crate::routing::lookup::LookupFinish;
use crate::routing::rtt::RequestDeadlines;
use crate::routing_table::{DiversityConfig, KBucketConfig};
use crate::server::{Validator, Validators};
use crate::store::{Lifetimes, MemoryStoreConfig};

mod accelerated;
mod bounds;
mod speed;

/// The protocol of the public IPFS DHT ("Amino").
pub const AMINO_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");

/// The configuration of a [`Behaviour`](crate::Behaviour).
///
/// There is no `Default`: the protocol decides which network a node joins, and a silent
/// default would merge a private network into the public DHT. Use [`Config::amino`] for the
/// public IPFS DHT, or [`Config::new`] with your own protocol name.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) protocols: SmallVec<[StreamProtocol; 2]>,
    pub(crate) mode: Option<Mode>,
    pub(crate) max_message_size: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) inbound_idle_timeout: Duration,
    pub(crate) outbound_idle_timeout: Duration,
    pub(crate) max_inbound_streams: usize,
    pub(crate) max_outbound_streams: usize,
    pub(crate) max_pending_requests: usize,
    pub(crate) limits: Limits,
    pub(crate) kbuckets: KBucketConfig,
    pub(crate) max_liveness_checks: usize,
    pub(crate) address_book_size: usize,
    pub(crate) store: MemoryStoreConfig,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) validators: Validators,
    pub(crate) manual_store_approval: bool,
    pub(crate) max_pending_store_decisions: usize,
    pub(crate) store_flush_interval: Duration,
    pub(crate) gc_interval: Duration,
    pub(crate) gc_batch: usize,
    pub(crate) max_dials: usize,
    pub(crate) alpha: usize,
    pub(crate) beta: usize,
    pub(crate) lookup_finish: LookupFinish,
    pub(crate) query_timeout: Duration,
    pub(crate) refresh_interval: Option<Duration>,
    pub(crate) refresh_query_timeout: Duration,
    pub(crate) max_providers_per_query: usize,
    pub(crate) reprovide: ReprovideConfig,
    // Dial amplification (issue 14): addresses per peer and dials per lookup.
    pub(crate) max_dial_addresses_per_peer: usize,
    pub(crate) max_dials_per_lookup: usize,
    // Bounds of what a hostile peer can make the server hold or send (issue 14).
    pub(crate) max_request_size: usize,
    pub(crate) max_answer_size: usize,
    pub(crate) max_response_bytes_in_flight: usize,
    pub(crate) max_provider_addrs: usize,
    // Lookups that widen and request deadlines that adapt (issue 15).
    pub(crate) widened_alpha: usize,
    pub(crate) request_deadlines: RequestDeadlines,
    // Optimistic provide (issue 15).
    pub(crate) optimistic_provide: bool,
    // Connections kept open to routing-table peers (issue 15).
    pub(crate) max_kept_connections: usize,
    // The accelerated client (issue 16).
    pub(crate) accelerated: Option<AcceleratedConfig>,
    // Commands the async handle may queue (issue 17).
    pub(crate) handle_queue: usize,
}

impl Config {
    /// A configuration for the network that speaks `protocol`, with the Amino defaults for
    /// everything else. Use a name of your own (`/myapp/kad/1.0.0`) for a private network.
    pub fn new(protocol: StreamProtocol) -> Self {
        Self {
            protocols: smallvec::smallvec![protocol],
            mode: None,
            max_message_size: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            inbound_idle_timeout: Duration::from_secs(60),
            outbound_idle_timeout: Duration::from_secs(30),
            max_inbound_streams: 32,
            max_outbound_streams: 8,
            max_pending_requests: 64,
            limits: Limits::default(),
            kbuckets: KBucketConfig::default(),
            max_liveness_checks: 4,
            address_book_size: 1024,
            store: MemoryStoreConfig::default(),
            lifetimes: Lifetimes::default(),
            validators: Validators::default(),
            manual_store_approval: false,
            max_pending_store_decisions: 256,
            store_flush_interval: Duration::from_millis(100),
            gc_interval: Duration::from_secs(3600),
            gc_batch: 1024,
            max_dials: 32,
            alpha: 10,
            beta: 3,
            lookup_finish: LookupFinish::KClosestAnswered,
            query_timeout: Duration::from_secs(60),
            refresh_interval: Some(Duration::from_secs(600)),
            refresh_query_timeout: Duration::from_secs(10),
            max_providers_per_query: 1000,
            reprovide: ReprovideConfig::default(),
            max_dial_addresses_per_peer: 4,
            max_dials_per_lookup: 256,
            max_request_size: 68 * 1024,
            max_answer_size: 64 * 1024,
            max_response_bytes_in_flight: 1024 * 1024,
            max_provider_addrs: 16,
            widened_alpha: 20,
            request_deadlines: RequestDeadlines::default(),
            optimistic_provide: true,
            max_kept_connections: 64,
            accelerated: None,
            handle_queue: 64,
        }
    }

    /// The settings of the public IPFS DHT: protocol `/ipfs/kad/1.0.0` and its defaults.
    pub fn amino() -> Self {
        Self::new(AMINO_PROTOCOL)
    }

    /// Also accepts `protocol` inbound. The first protocol (the one given to [`Config::new`])
    /// stays the one used outbound. Useful while migrating a network to a new protocol name.
    pub fn with_additional_protocol(mut self, protocol: StreamProtocol) -> Self {
        if !self.protocols.contains(&protocol) {
            self.protocols.push(protocol);
        }
        self
    }

    /// Fixes the mode. `None` (the default) is automatic: server once the swarm has a confirmed
    /// external address, client when it has none left.
    pub fn with_mode(mut self, mode: Option<Mode>) -> Self {
        self.mode = mode;
        self
    }

    /// Largest frame accepted, from the length prefix, before the body is read.
    /// Default 4 MiB, as go and js (libp2p-kad's 16 KiB is exceeded by real responses).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long an outbound request may take, from being handed to the connection to its
    /// response (or, for ADD_PROVIDER, to its frame being flushed). Default 10 s, as go.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// An inbound stream with no request for this long is closed. Default 60 s, as go.
    pub fn with_inbound_idle_timeout(mut self, timeout: Duration) -> Self {
        self.inbound_idle_timeout = timeout;
        self
    }

    /// An outbound stream kept for reuse is closed after this long without a request.
    /// Default 30 s: under go's 60 s server-side idle timeout, so that we usually close a
    /// reused stream before the remote does.
    pub fn with_outbound_idle_timeout(mut self, timeout: Duration) -> Self {
        self.outbound_idle_timeout = timeout;
        self
    }

    /// Most inbound streams served at once on one connection; a stream beyond it is reset at
    /// once. Default 32.
    pub fn with_max_inbound_streams(mut self, streams: usize) -> Self {
        self.max_inbound_streams = streams.max(1);
        self
    }

    /// Most outbound streams (so requests in flight) at once on one connection. Default 8;
    /// go keeps one per peer, a lookup never has more than one request in flight per peer.
    pub fn with_max_outbound_streams(mut self, streams: usize) -> Self {
        self.max_outbound_streams = streams.max(1);
        self
    }

    /// Most requests waiting for a stream on one connection (or for the connection to a peer
    /// being dialled); one beyond fails at once with
    /// [`RequestError::QueueFull`](crate::RequestError::QueueFull). Default 64.
    pub fn with_max_pending_requests(mut self, requests: usize) -> Self {
        self.max_pending_requests = requests;
        self
    }

    /// Longest provider key accepted in ADD_PROVIDER and GET_PROVIDERS. Default 80 bytes, as go.
    pub fn with_max_provider_key_len(mut self, bytes: usize) -> Self {
        self.limits.max_provider_key_len = bytes;
        self
    }

    /// Largest `Peer` entry kept from a message; addresses past it are dropped.
    /// Default 8 KiB, as go.
    pub fn with_max_peer_entry_size(mut self, bytes: usize) -> Self {
        self.limits.max_peer_entry_size = bytes;
        self
    }

    /// Replication factor and bucket size (k): peers per bucket, closer peers per answer.
    /// Default 20, as Amino.
    pub fn with_k(mut self, k: usize) -> Self {
        self.kbuckets.k = k.max(1);
        self
    }

    /// Replacement candidates kept per full bucket. Default 10.
    pub fn with_replacement_cache_size(mut self, size: usize) -> Self {
        self.kbuckets.replacement_cache_size = size;
        self
    }

    /// Addresses kept per routing-table peer, most recently successful first. Default 16.
    pub fn with_max_addresses_per_peer(mut self, addrs: usize) -> Self {
        self.kbuckets.max_addresses_per_peer = addrs.max(1);
        self
    }

    /// A routing-table peer not heard from for this long gets a liveness check (a failed one
    /// counts as a failed request). Default 43 min (see [`KBucketConfig::liveness_interval`]
    /// for why).
    pub fn with_liveness_interval(mut self, interval: Duration) -> Self {
        self.kbuckets.liveness_interval = interval;
        self
    }

    /// Failed requests in a row that evict a routing-table peer, once they span
    /// [`with_failure_span`](Config::with_failure_span). Default 3.
    pub fn with_max_failures(mut self, failures: u8) -> Self {
        self.kbuckets.max_failures = failures.max(1);
        self
    }

    /// The IP-group diversity filter of the routing table; `None` disables it. Default on:
    /// at most 2 peers per IPv4 /16 or IPv6 /32 per bucket and 3 per table; loopback and
    /// private addresses are exempt.
    pub fn with_diversity_filter(mut self, filter: Option<DiversityConfig>) -> Self {
        self.kbuckets.diversity = filter;
        self
    }

    /// Liveness checks in flight at once. Default 4: checks are paced, never a burst.
    pub fn with_max_liveness_checks(mut self, checks: usize) -> Self {
        self.max_liveness_checks = checks;
        self
    }

    /// Peers whose addresses are remembered after they disconnect, least recently seen
    /// forgotten first (each with up to [`with_max_addresses_per_peer`] addresses). A peer that
    /// comes back, say as a server after it started as a client, enters the routing table with
    /// them: identify reports an address only once, so nothing would tell us again. Default
    /// 1,024: ten times identify's own cache (100 peers), so a peer identify stays silent
    /// about is still here; under 2 MiB with 16 addresses each, well under 1 MiB with the few
    /// a peer usually has. At least 1.
    ///
    /// [`with_max_addresses_per_peer`]: Config::with_max_addresses_per_peer
    pub fn with_address_book_size(mut self, peers: usize) -> Self {
        self.address_book_size = peers.max(1);
        self
    }

    /// Bounds of the default in-memory store.
    pub fn with_memory_store(mut self, store: MemoryStoreConfig) -> Self {
        self.store = store;
        self
    }

    /// How long provider records are valid. Default 48 h, as Amino.
    pub fn with_provider_validity(mut self, validity: Duration) -> Self {
        self.lifetimes.provider_validity = validity;
        self
    }

    /// How long a provider's addresses are handed out with its record. Default 24 h.
    pub fn with_provider_address_ttl(mut self, ttl: Duration) -> Self {
        self.lifetimes.provider_addrs = ttl;
        self
    }

    /// How long value records are kept. Default 48 h, as Amino.
    pub fn with_value_max_age(mut self, age: Duration) -> Self {
        self.lifetimes.value_max_age = age;
        self
    }

    /// Registers (or replaces) the validator of a record namespace (`"app"` for `/app/...`
    /// keys). `/pk` and `/ipns` are built in; records of a namespace without a validator are
    /// refused.
    pub fn with_validator(mut self, namespace: &str, validator: impl Validator) -> Self {
        self.validators.register(namespace, validator);
        self
    }

    /// Inbound PUT_VALUE and ADD_PROVIDER wait for the application's
    /// [`approve_store`](crate::Behaviour::approve_store) or
    /// [`reject_store`](crate::Behaviour::reject_store) before anything is stored; the
    /// PUT_VALUE echo is sent only after approval. Default off.
    pub fn with_manual_store_approval(mut self, manual: bool) -> Self {
        self.manual_store_approval = manual;
        self
    }

    /// Writes awaiting a decision at once; beyond it the oldest is dropped. Default 256.
    pub fn with_max_pending_store_decisions(mut self, decisions: usize) -> Self {
        self.max_pending_store_decisions = decisions.max(1);
        self
    }

    /// How often buffered store writes are made durable ([`Store::flush`]). Default 100 ms: a
    /// crash loses at most the records received in the last 100 ms, and a disk sync costs at
    /// most ten times a second.
    ///
    /// [`Store::flush`]: crate::Store::flush
    pub fn with_store_flush_interval(mut self, interval: Duration) -> Self {
        self.store_flush_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// How often expired records are collected. Default 1 h, as Amino.
    pub fn with_gc_interval(mut self, interval: Duration) -> Self {
        self.gc_interval = interval.max(Duration::from_millis(1));
        self
    }

    /// Entries examined per GC step; a pass is spread over as many polls as it needs, so a
    /// large store never stalls the swarm. Default 1,024.
    pub fn with_gc_batch(mut self, entries: usize) -> Self {
        self.gc_batch = entries.max(1);
        self
    }

    /// Dials under way at once for DHT requests; more wait their turn. Default 32.
    pub fn with_max_concurrent_dials(mut self, dials: usize) -> Self {
        self.max_dials = dials.max(1);
        self
    }

    /// Requests in flight per lookup. Default 10, as go and js (libp2p-kad uses 3).
    pub fn with_alpha(mut self, alpha: usize) -> Self {
        self.alpha = alpha.max(1);
        self
    }

    /// Closest peers that must answer before a lookup stops widening. Default 3.
    pub fn with_beta(mut self, beta: usize) -> Self {
        self.beta = beta.max(1);
        self
    }

    /// When a lookup that converged is finished. Default [`LookupFinish::KClosestAnswered`]:
    /// once the `k` closest answered, so results hold only peers that did, at the pace of the
    /// slowest of them. [`LookupFinish::BetaAnswered`] is go's rule: once the `beta` closest
    /// answered, with the `k` closest known peers as the result, some not asked yet (about
    /// half the lookup time where peers are alive; dead peers in results where they are not).
    /// The reprovide sweep's region lookups always wait for their peers.
    pub fn with_lookup_finish(mut self, finish: LookupFinish) -> Self {
        self.lookup_finish = finish;
        self
    }

    /// Deadline of a DHT operation. Default 60 s.
    pub fn with_query_timeout(mut self, timeout: Duration) -> Self {
        self.query_timeout = timeout;
        self
    }

    /// How often the routing table is refreshed (a self-lookup plus a lookup in every bucket
    /// not refreshed within the interval); `None` disables it. Default 10 min, as Amino.
    pub fn with_refresh_interval(mut self, interval: Option<Duration>) -> Self {
        self.refresh_interval = interval;
        self
    }

    /// Deadline of one refresh lookup. Default 10 s, as Amino.
    pub fn with_refresh_query_timeout(mut self, timeout: Duration) -> Self {
        self.refresh_query_timeout = timeout;
        self
    }

    /// Most providers one `find_providers` reports (and keeps track of); the lookup stops
    /// there. Default 1,000.
    pub fn with_max_providers_per_query(mut self, providers: usize) -> Self {
        self.max_providers_per_query = providers.max(1);
        self
    }

    /// How often provided keys are announced again by the sweep. Default 22 h, as Amino.
    pub fn with_reprovide_interval(mut self, interval: Duration) -> Self {
        self.reprovide.interval = interval.max(Duration::from_secs(1));
        self
    }

    /// Keyspace regions swept at once. Default 4.
    pub fn with_reprovide_workers(mut self, workers: usize) -> Self {
        self.reprovide.workers = workers.max(1);
        self
    }

    /// ADD_PROVIDER messages in flight to one peer during a sweep. Default 8: a bulk
    /// reprovide paces what it sends to one peer.
    pub fn with_reprovide_per_peer_in_flight(mut self, messages: usize) -> Self {
        self.reprovide.per_peer_in_flight = messages.max(1);
        self
    }

    /// Most addresses dialled per peer, for the DHT's own dials: the addresses a lookup keeps
    /// per candidate, and those a dial is given (the DHT does not let the swarm's other
    /// behaviours add more to a dial it has addresses for). Addresses learned from other peers
    /// are first filtered: none the node could not dial (`/unix`, `/memory` without the memory
    /// transport in use, `/p2p-circuit` without a relay in use, malformed), and, from a peer
    /// whose connection comes from a public address, no loopback or private ones (see
    /// `routing::addresses`). The rest are ranked (direct before relayed, transports in use
    /// first) and the first ones kept.
    ///
    /// Default 4. go-libp2p ranks a peer's addresses and dials them one group after another,
    /// 250 ms apart: the best QUIC address (IPv6, then IPv4), then TCP the same way, and the
    /// rest only if those fail; four addresses are one per transport and IP version, what go
    /// tries first. js-libp2p dialled 4 addresses per peer at once (`maxDialsPerPeer`). With
    /// the cap, one FIND_NODE answer of 20 peers makes the node open at most 80 connections,
    /// not one per address the answer lists. At least 1.
    pub fn with_max_dial_addresses_per_peer(mut self, addrs: usize) -> Self {
        self.max_dial_addresses_per_peer = addrs.max(1);
        self
    }

    /// Most peers one lookup may ask that the node is not connected to (each one a dial);
    /// once spent, candidates that would need a new connection count as failed and the lookup
    /// ends with the peers it can reach. With [`with_max_dial_addresses_per_peer`], it bounds
    /// the connections one lookup can be made to open, whatever the answers say.
    ///
    /// Default 256: four times the 95th percentile of requests per lookup measured for go and
    /// kadence (63-65 and 51, `benches/network` in BENCHMARKS.md) and of the ~60 requests of a
    /// reprovide sweep's region lookup, so that an honest lookup among many dead peers is not
    /// cut short. go has no such bound. At least 1.
    ///
    /// [`with_max_dial_addresses_per_peer`]: Config::with_max_dial_addresses_per_peer
    pub fn with_max_dials_per_lookup(mut self, dials: usize) -> Self {
        self.max_dials_per_lookup = dials.max(1);
        self
    }

    /// The protocols accepted inbound; the first is used outbound.
    pub fn protocols(&self) -> &[StreamProtocol] {
        &self.protocols
    }

    /// The configured mode; `None` is automatic.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// See [`Config::with_max_message_size`].
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// See [`Config::with_request_timeout`].
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// See [`Config::with_inbound_idle_timeout`].
    pub fn inbound_idle_timeout(&self) -> Duration {
        self.inbound_idle_timeout
    }

    /// See [`Config::with_outbound_idle_timeout`].
    pub fn outbound_idle_timeout(&self) -> Duration {
        self.outbound_idle_timeout
    }

    /// See [`Config::with_max_inbound_streams`].
    pub fn max_inbound_streams(&self) -> usize {
        self.max_inbound_streams
    }

    /// See [`Config::with_max_outbound_streams`].
    pub fn max_outbound_streams(&self) -> usize {
        self.max_outbound_streams
    }

    /// See [`Config::with_max_pending_requests`].
    pub fn max_pending_requests(&self) -> usize {
        self.max_pending_requests
    }

    /// See [`Config::with_max_provider_key_len`].
    pub fn max_provider_key_len(&self) -> usize {
        self.limits.max_provider_key_len
    }

    /// See [`Config::with_max_peer_entry_size`].
    pub fn max_peer_entry_size(&self) -> usize {
        self.limits.max_peer_entry_size
    }

    /// The routing table's settings (k and the `with_*` setters above).
    pub fn kbuckets(&self) -> &KBucketConfig {
        &self.kbuckets
    }

    /// See [`Config::with_address_book_size`].
    pub fn address_book_size(&self) -> usize {
        self.address_book_size
    }

    /// The record lifetimes.
    pub fn lifetimes(&self) -> Lifetimes {
        self.lifetimes
    }

    /// The record validators.
    pub fn validators(&self) -> &Validators {
        &self.validators
    }

    /// See [`Config::with_max_dial_addresses_per_peer`].
    pub fn max_dial_addresses_per_peer(&self) -> usize {
        self.max_dial_addresses_per_peer
    }

    /// See [`Config::with_max_dials_per_lookup`].
    pub fn max_dials_per_lookup(&self) -> usize {
        self.max_dials_per_lookup
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amino_defaults() {
        let c = Config::amino();
        assert_eq!(c.protocols(), &[AMINO_PROTOCOL]);
        assert_eq!(c.mode(), None);
        assert_eq!(c.max_message_size(), 4 << 20);
        assert_eq!(c.request_timeout(), Duration::from_secs(10));
        assert_eq!(c.inbound_idle_timeout(), Duration::from_secs(60));
        assert_eq!(c.max_inbound_streams(), 32);
        assert_eq!(c.max_provider_key_len(), 80);
        assert_eq!(c.max_peer_entry_size(), 8192);
        assert_eq!(c.kbuckets().k, 20);
        assert_eq!(c.address_book_size(), 1024);
        assert_eq!(
            c.lifetimes().provider_validity,
            Duration::from_secs(48 * 3600)
        );
        assert_eq!(c.lifetimes().provider_addrs, Duration::from_secs(24 * 3600));
        assert_eq!(c.lifetimes().value_max_age, Duration::from_secs(48 * 3600));
        let mut namespaces: Vec<_> = c.validators().namespaces().collect();
        namespaces.sort();
        assert_eq!(namespaces, vec!["ipns", "pk"]);
    }

    #[test]
    fn lookup_widening_and_deadline_defaults() {
        let c = Config::amino();
        assert_eq!(c.widened_alpha(), 20);
        let deadlines = c.request_deadlines();
        assert_eq!(deadlines.multiplier, 1.5);
        assert_eq!(deadlines.floor, Duration::from_secs(1));
        assert_eq!(deadlines.cold, Duration::from_secs(3));
        assert_eq!(c.with_widened_alpha(0).widened_alpha(), 1);
    }

    #[test]
    fn first_protocol_stays_first() {
        let private = StreamProtocol::new("/myapp/kad/1.0.0");
        let c = Config::new(private.clone())
            .with_additional_protocol(AMINO_PROTOCOL)
            .with_additional_protocol(AMINO_PROTOCOL);
        assert_eq!(c.protocols(), &[private, AMINO_PROTOCOL]);
    }
}
