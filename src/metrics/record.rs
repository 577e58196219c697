//! Recording into the families: one method per thing the behaviour observes. Counters and
//! histograms move as events happen; the `set_*` methods refresh gauges from a reading of the
//! behaviour's state.

use std::time::Duration;

use super::labels::{
    self, BucketLabels, ErrorLabels, KindLabels, OutcomeLabels, QueryLabels, ReasonLabels,
    RejectionLabels, RequestLabels, TypeLabels,
};
use super::Metrics;
use crate::mode::Mode;
use crate::network::message::{MessageType, Response};
use crate::network::{InboundError, RequestError};
use crate::provider::{SweepReport, SweepStatus};
use crate::routing_table::{Failure, RemovalReason};
use crate::server::InboundOutcome;
use crate::store::StoreSizes;

/// K-buckets of a 256-bit keyspace: common-prefix lengths 0 to 255 (256 is the local key).
const BUCKETS: u16 = 256;

/// A count as a gauge value. Prometheus gauges here are `i64`; no count of this crate comes
/// near its end, but a saturated value is still better than a negative one.
fn gauge<T: TryInto<i64>>(n: T) -> i64 {
    n.try_into().unwrap_or(i64::MAX)
}

impl Metrics {
    /// A query finished: `kind` and `outcome` are the snake-case names of its kind
    /// (`closest_peers`, `get_value`, ...) and of how it ended (`ok`, `timeout`, ...);
    /// `requests` is how many requests it sent.
    pub(crate) fn record_query(
        &self,
        kind: &'static str,
        outcome: &'static str,
        duration: Duration,
        requests: u32,
    ) {
        self.queries
            .get_or_create(&QueryLabels { kind, outcome })
            .inc();
        let by_kind = KindLabels { kind };
        self.query_duration
            .get_or_create(&by_kind)
            .observe(duration.as_secs_f64());
        self.query_requests
            .get_or_create(&by_kind)
            .observe(f64::from(requests));
    }

    /// An outbound request finished. `rtt` is the time from its start (its dial included, when
    /// it needed one) to its answer; it is recorded only for a request that succeeded, as a
    /// failure's time says how long the wait was, not how far the peer is.
    pub(crate) fn record_outbound(
        &self,
        request: MessageType,
        result: &Result<Option<Response>, RequestError>,
        rtt: Option<Duration>,
    ) {
        let r#type = labels::message_type(request);
        let outcome = labels::request_outcome(result);
        self.outbound_requests
            .get_or_create(&RequestLabels { r#type, outcome })
            .inc();
        if let (Ok(_), Some(rtt)) = (result, rtt) {
            self.outbound_duration
                .get_or_create(&TypeLabels { r#type })
                .observe(rtt.as_secs_f64());
        }
    }

    /// The server handled a request of another peer.
    pub(crate) fn record_inbound(&self, request: MessageType, outcome: &InboundOutcome) {
        let r#type = labels::message_type(request);
        self.inbound_requests
            .get_or_create(&RequestLabels {
                r#type,
                outcome: labels::inbound_outcome(outcome),
            })
            .inc();
        if let InboundOutcome::Rejected(rejection) = outcome {
            self.inbound_rejections
                .get_or_create(&RejectionLabels {
                    r#type,
                    reason: labels::rejection_reason(rejection),
                })
                .inc();
        }
    }

    /// An inbound stream was reset or closed early.
    pub(crate) fn record_inbound_failure(&self, error: &InboundError) {
        self.inbound_failures
            .get_or_create(&ErrorLabels {
                error: labels::inbound_error(error),
            })
            .inc();
    }

    /// A peer entered the routing table.
    pub(crate) fn record_peer_added(&self) {
        self.peers_added.inc();
    }

    /// A peer left the routing table.
    pub(crate) fn record_peer_removed(&self, reason: &RemovalReason) {
        self.peers_removed
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The routing table holds `peers`, `buckets[i]` of them in bucket `i` (common-prefix
    /// length `i`); buckets past the end of the slice are empty.
    ///
    /// A bucket's series appears once the bucket holds a peer, and stays, at 0 when it empties,
    /// so that a bucket emptying shows as a drop and not as a gap; the 200-odd buckets that
    /// never fill in a real network never appear.
    pub(crate) fn set_routing_table(&self, peers: usize, buckets: &[usize]) {
        self.table_peers.set(gauge(peers));
        for bucket in 0..BUCKETS {
            let labels = BucketLabels { bucket };
            match buckets.get(usize::from(bucket)).copied().unwrap_or(0) {
                0 => {
                    if let Some(series) = self.bucket_peers.get(&labels) {
                        series.set(0);
                    }
                }
                n => {
                    self.bucket_peers.get_or_create(&labels).set(gauge(n));
                }
            }
        }
    }

    /// The accelerated client's full table holds `peers`.
    pub(crate) fn set_full_table(&self, peers: usize) {
        self.full_table_peers.set(gauge(peers));
    }

    /// A crawl finished after `duration`, leaving `peers` in the full table, which serves
    /// lookups (`serving`) or not.
    pub(crate) fn record_crawl(&self, duration: Duration, peers: usize, serving: bool) {
        let outcome = if serving { "serving" } else { "not_serving" };
        self.crawls.get_or_create(&OutcomeLabels { outcome }).inc();
        self.crawl_last_peers.set(gauge(peers));
        self.crawl_last_duration.set(duration.as_secs_f64());
        self.full_table_peers.set(gauge(peers));
    }

    /// The store's sizes.
    /// What the store holds; a figure the store does not keep leaves its gauge as it was.
    pub(crate) fn set_store(&self, sizes: StoreSizes) {
        self.store_records.set(gauge(sizes.records));
        self.store_provider_keys.set(gauge(sizes.provider_keys));
        if let Some(bytes) = sizes.record_bytes {
            self.store_record_bytes.set(gauge(bytes));
        }
        if let Some(records) = sizes.provider_records {
            self.store_provider_records.set(gauge(records));
        }
        if let Some(bytes) = sizes.provider_bytes {
            self.store_provider_bytes.set(gauge(bytes));
        }
    }

    /// This node provides `keys` keys.
    pub(crate) fn set_provided_keys(&self, keys: u64) {
        self.provided_keys.set(gauge(keys));
    }

    /// The sweep reprovided a region. Its lateness becomes the sweep's: a region on time after
    /// late ones brings the gauge back down. Its depth tells how many regions the sweep cuts
    /// the keyspace into (the depth follows the routing table, so it changes seldom).
    pub(crate) fn record_region_reprovided(&self, report: &SweepReport) {
        self.reprovided_regions.inc();
        let regions = 1u64.checked_shl(u32::from(report.region.depth));
        self.reprovide_regions.set(regions.map_or(i64::MAX, gauge));
        self.reprovided_keys.inc_by(report.keys as u64);
        self.reprovide_announcements
            .get_or_create(&OutcomeLabels { outcome: "ok" })
            .inc_by(report.messages as u64);
        self.reprovide_announcements
            .get_or_create(&OutcomeLabels { outcome: "failed" })
            .inc_by(report.failures as u64);
        self.reprovide_behind.set(report.behind.as_secs_f64());
        self.reprovide_overdue.set(report.overdue.as_secs_f64());
    }

    /// Where the sweep stands (read with the other gauges): regions waiting, how late the
    /// oldest is, and the workers it would need.
    pub(crate) fn set_sweep(&self, status: &SweepStatus) {
        self.reprovide_waiting.set(gauge(status.waiting));
        self.reprovide_workers_needed
            .set(status.workers_needed.map_or(0, gauge));
        if status.waiting > 0 {
            self.reprovide_behind.set(status.behind.as_secs_f64());
        }
    }

    /// Regions wait `by` after their slot: every worker of the sweep is busy.
    pub(crate) fn record_reprovide_behind(&self, by: Duration) {
        self.reprovide_behind.set(by.as_secs_f64());
    }

    /// A dial the DHT made itself connected, or failed: with what its failure proves about the
    /// peer, or `None` when it proves nothing (no address this node can dial, or the dial was
    /// denied or aborted on this side).
    pub(crate) fn record_dial(&self, result: Result<(), Option<Failure>>) {
        self.dials
            .get_or_create(&OutcomeLabels {
                outcome: labels::dial_outcome(result),
            })
            .inc();
    }

    /// `open` connections have the DHT's handler.
    pub(crate) fn set_connections(&self, open: usize) {
        self.connections.set(gauge(open));
    }

    /// The node's mode.
    pub(crate) fn set_mode(&self, mode: Mode) {
        self.server_mode.set(match mode {
            Mode::Server => 1,
            Mode::Client => 0,
        });
    }
}
