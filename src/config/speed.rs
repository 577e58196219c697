//! The settings of issue 15 (fast by default): lookups that widen, request deadlines that
//! adapt, optimistic provide, routing-table health and the connections kept to its peers.

use std::time::Duration;

use super::Config;
use crate::routing::rtt::RequestDeadlines;

/// Lookups that widen and request deadlines that adapt (issue 15).
impl Config {
    /// Requests in flight per lookup once it has widened: once the `beta` closest answered
    /// (converged), or once `alpha` answers in a row brought no peer closer than the closest
    /// known (stalled, as libp2p-kad), the rest of the `k` closest are asked this many at a
    /// time rather than `alpha`. Default 20 (k): all at once, so a lookup takes about its hops
    /// in round trips, not its requests / alpha. Never below `alpha`; set it to `alpha` for
    /// the old pace.
    pub fn with_widened_alpha(mut self, requests: usize) -> Self {
        self.widened_alpha = requests.max(1);
        self
    }

    /// See [`Config::with_widened_alpha`].
    pub fn widened_alpha(&self) -> usize {
        self.widened_alpha
    }

    /// How long a lookup waits for each request, from the round trips observed (per route:
    /// open connection or dial; see [`RequestDeadlines`] for the defaults and why). Past the
    /// 90th percentile of the latest answer times (of the last minute: older ones have aged
    /// out) a request is overdue: the next candidate is
    /// asked in its stead. Past its deadline, 1.5 x that percentile within 1 s and the request
    /// timeout (3 s before there are answers to go by), the lookup no longer waits for it. The
    /// request itself runs until the request timeout, and a late answer still counts while the
    /// lookup runs. A silent peer costs a few round trips rather than the request timeout.
    /// The requests in flight follow the estimate as answers come in.
    pub fn with_request_deadlines(mut self, deadlines: RequestDeadlines) -> Self {
        self.request_deadlines = deadlines;
        self
    }

    /// See [`Config::with_request_deadlines`].
    pub fn request_deadlines(&self) -> RequestDeadlines {
        self.request_deadlines
    }
}

// Optimistic provide (issue 15).
impl Config {
    /// Optimistic provide, for [`provide`](crate::Behaviour::provide) and
    /// [`put_value`](crate::Behaviour::put_value): while the lookup runs, peers that answered
    /// and are, by the network-size estimate, among the k closest to the key are sent the
    /// record at once; the result is reported once 15 of k = 20 stored it (and the quorum of a
    /// `put_value`), and the rest follow, with the lookup, in the background
    /// ([`Event::WritesSettled`](crate::Event::WritesSettled) says how many stored it in the
    /// end). Until the node has an estimate (five lookups that found k peers, in the last two
    /// hours), and with `false`, the writes go to the k closest once the lookup ends and the
    /// result waits for all of them. See `routing::optimistic` for the thresholds (go's).
    ///
    /// Default on, as Kubo since 0.39: in the simulation of `src/routing/optimistic_sim.rs`
    /// (500 and 2,000 nodes, round trips of 10-300 ms) the result came in 0.60-0.70x the
    /// time of a provide that waits for its whole lookup (0.17x with a tenth of the nodes
    /// silent, whose request deadlines that one waits for), and every record still reached all
    /// 20 of its key's true closest peers in the end (at least 18 of 20 with a tenth silent).
    pub fn with_optimistic_provide(mut self, on: bool) -> Self {
        self.optimistic_provide = on;
        self
    }

    /// See [`Config::with_optimistic_provide`].
    pub fn optimistic_provide(&self) -> bool {
        self.optimistic_provide
    }
}

/// Routing-table health and the connections kept to its peers (issue 15).
impl Config {
    /// How long `max_failures` failed requests in a row (no answer: a timeout, a broken
    /// stream) must span, with no answer between them, to evict a routing-table peer. Default
    /// 60 s: a burst of timeouts from an overload lasts seconds, a silent peer stays silent.
    /// A dial refused outright evicts at once.
    /// See [`KBucketConfig::failure_span`](crate::KBucketConfig::failure_span).
    pub fn with_failure_span(mut self, span: Duration) -> Self {
        self.kbuckets.failure_span = span;
        self
    }

    /// A routing-table peer whose request failed is checked again this long later (a liveness
    /// check, outside lookups). Default 30 s.
    /// See [`KBucketConfig::recheck_after`](crate::KBucketConfig::recheck_after).
    pub fn with_recheck_after(mut self, delay: Duration) -> Self {
        self.kbuckets.recheck_after = delay;
        self
    }

    /// A routing-table peer whose kept connection was lost is checked, unless it was checked
    /// within this. Default 10 min.
    /// See [`KBucketConfig::lost_check_interval`](crate::KBucketConfig::lost_check_interval).
    pub fn with_lost_check_interval(mut self, interval: Duration) -> Self {
        self.kbuckets.lost_check_interval = interval;
        self
    }

    /// Routing-table peers whose connections are kept open while idle, the shallowest buckets'
    /// first (one connection each; 0 keeps none). A lookup's first requests go to them (a
    /// random key falls in bucket 0 half of the time, bucket 1 a quarter), and without this an
    /// idle node's lookups start with a dial each once rust-libp2p's idle timeout (10 s by
    /// default) closed their connections: several round trips before the request. Default 64:
    /// buckets 0 to 2 and a few of bucket 3, the first requests of about 90% of lookups; go
    /// protects buckets 0 and 1 (up to 40 peers) from its connection manager and trims the
    /// rest of its table's peers last. Each open connection costs memory (buffers of the
    /// security and multiplexing layers) and the remote's too.
    pub fn with_max_kept_connections(mut self, peers: usize) -> Self {
        self.max_kept_connections = peers;
        self
    }

    /// See [`Config::with_max_kept_connections`].
    pub fn max_kept_connections(&self) -> usize {
        self.max_kept_connections
    }
}
