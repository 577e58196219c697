//! Prometheus metrics of the DHT (cargo feature `metrics`), registered into the application's
//! [`prometheus_client`] [`Registry`] as `libp2p-metrics` registers its own: every family under
//! the prefix `kadence_`, beside the swarm's and the other protocols' metrics.
//!
//! [`Metrics`] lists the families. Counters and histograms are recorded as the behaviour's
//! events happen; the gauges (table sizes, store sizes, connections) are refreshed from the
//! behaviour's state at most once a second, so a scrape may lag that much behind.

mod labels;
mod record;

use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry, Unit};

use labels::{
    BucketLabels, ErrorLabels, KindLabels, OutcomeLabels, QueryLabels, ReasonLabels,
    RejectionLabels, RequestLabels, TypeLabels,
};

/// How a histogram family makes the histogram of a new label set.
type NewHistogram = fn() -> Histogram;

/// The DHT's Prometheus metrics.
///
/// Create it with [`Metrics::new`], which registers every family below into a sub-registry
/// with the prefix `kadence`. A clone is cheap and records into the same families (each metric
/// is shared behind an `Arc`), so one registry may be scraped while the behaviour records.
///
/// ```
/// use prometheus_client::registry::Registry;
///
/// let mut registry = Registry::default();
/// let metrics = kadence::metrics::Metrics::new(&mut registry);
///
/// // Hand `metrics` to the behaviour; scrape `registry` as usual.
/// let mut text = String::new();
/// prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
/// assert!(text.contains("\nkadence_routing_table_peers 0\n"));
/// # drop(metrics);
/// ```
///
/// ## Families
///
/// Names as exposed: counters end in `_total`, durations are in seconds and sizes in bytes. A
/// family with labels is exposed once it has a series (a label set recorded into).
///
/// **Queries** (the operations of [`Behaviour`](crate::Behaviour): lookups, reads, writes)
///
/// | name | type | labels | meaning |
/// |---|---|---|---|
/// | `kadence_queries_total` | counter | `kind`, `outcome` | Queries finished, by kind (`closest_peers`, `get_value`, ...) and how they ended (`ok`, `timeout`, ...). |
/// | `kadence_query_duration_seconds` | histogram | `kind` | Time from a query's start to its result; buckets from 10 ms to 164 s. |
/// | `kadence_query_requests` | histogram | `kind` | Requests a query sent; buckets from 1 to 2,048. |
///
/// **Requests** (the wire; `type` is the message type in snake case: `find_node`,
/// `get_value`, `put_value`, `get_providers`, `add_provider`, `ping`)
///
/// | name | type | labels | meaning |
/// |---|---|---|---|
/// | `kadence_outbound_requests_total` | counter | `type`, `outcome` | Requests this node sent, once finished: `ok` (answered; for `add_provider`, which has no answer, written), `timeout`, `unsupported_protocol`, `queue_full`, `connection_closed`, `dial_failed`, `stream_error`, `invalid_response`. |
/// | `kadence_outbound_request_duration_seconds` | histogram | `type` | Time from a request's start (its dial included, when it needed one) to its answer, for the requests that succeeded; buckets from 1 ms to 33 s. |
/// | `kadence_inbound_requests_total` | counter | `type`, `outcome` | Requests of other peers the server handled: `answered` (a read), `stored` (a write), `rejected`, `awaiting_decision` (a write waiting for the application). |
/// | `kadence_inbound_rejections_total` | counter | `type`, `reason` | Why requests were rejected: `invalid_record`, `outdated_record`, `foreign_provider`, `no_provider_address`, `refused_by_application`, or the store's refusal: `value_too_large`, `store_full`, `too_many_providers`, `store_busy`, `store_failed`. |
/// | `kadence_inbound_failures_total` | counter | `error` | Inbound streams reset or closed early: `too_many_streams`, `stream_error`, `invalid_request`, `response_timeout`, `refused`, `write_timeout`, `unread_responses`. |
///
/// **Routing tables**
///
/// | name | type | labels | meaning |
/// |---|---|---|---|
/// | `kadence_routing_table_peers` | gauge | | Peers in the routing table. |
/// | `kadence_routing_table_bucket_peers` | gauge | `bucket` | Peers per k-bucket; `bucket` is the common-prefix length with the local key. A bucket appears once it has held a peer. |
/// | `kadence_routing_table_peers_added_total` | counter | | Peers that entered the routing table. |
/// | `kadence_routing_table_peers_removed_total` | counter | `reason` | Peers that left it: `unresponsive` (failed too often), `unreachable` (a dial refused outright), `not_serving` (stopped serving the protocol), `removed` (by the application). |
/// | `kadence_full_table_peers` | gauge | | Peers in the accelerated client's full table (0 without it). |
/// | `kadence_crawls_total` | counter | `outcome` | Crawls of the accelerated client finished: `serving` (the full table serves lookups after it) or `not_serving` (it found too few peers). |
/// | `kadence_crawl_last_peers` | gauge | | Peers in the full table after the last crawl. |
/// | `kadence_crawl_last_duration_seconds` | gauge | | How long the last crawl took. |
///
/// **Stores** (what this node holds for the network)
///
/// | name | type | labels | meaning |
/// |---|---|---|---|
/// | `kadence_store_records` | gauge | | Value records held. |
/// | `kadence_store_record_bytes` | gauge | | Their size, as the store counts it against its bound. |
/// | `kadence_store_provider_keys` | gauge | | Keys with provider records. |
/// | `kadence_store_provider_records` | gauge | | Provider records (a key and one of its providers). |
/// | `kadence_store_provider_bytes` | gauge | | Their size, as the store counts it against its bound. |
///
/// **Reprovide sweep** (the keys this node provides itself)
///
/// | name | type | labels | meaning |
/// |---|---|---|---|
/// | `kadence_provided_keys` | gauge | | Keys this node provides. |
/// | `kadence_reprovide_regions` | gauge | | Keyspace regions the sweep cuts its interval into, as of the last region reprovided. |
/// | `kadence_reprovided_regions_total` | counter | | Regions the sweep reprovided. |
/// | `kadence_reprovided_keys_total` | counter | | Keys announced by those sweeps. |
/// | `kadence_reprovide_announcements_total` | counter | `outcome` | ADD_PROVIDER messages of the sweep: `ok` (written) or `failed`. |
/// | `kadence_reprovide_behind_seconds` | gauge | | How late the sweep is: the oldest region waiting past its slot, or the last one started (0: on time). |
/// | `kadence_reprovide_overdue_seconds` | gauge | | How far past its due time (last announcement + interval) the last region announced its most overdue key; past 26 h records had expired. |
/// | `kadence_reprovide_regions_waiting` | gauge | | Regions due and waiting for a worker. |
/// | `kadence_reprovide_workers_needed` | gauge | | Workers the sweep would need to keep up at its pace, when more than configured (0: enough). |
///
/// **Connectivity**
///
/// | name | type | labels | meaning |
/// |---|---|---|---|
/// | `kadence_dials_total` | counter | `outcome` | Dials the DHT made itself: `ok`, `unreachable` (refused, no route, or another peer answered), `no_answer` (timed out or failed otherwise), `not_dialled` (no address this node can dial, or denied or aborted on this side). |
/// | `kadence_connections` | gauge | | Connections open with the DHT's handler. |
/// | `kadence_server_mode` | gauge | | 1 while the node serves the DHT (server mode), 0 in client mode. |
///
/// [`Registry`]: prometheus_client::registry::Registry
#[derive(Debug, Clone)]
pub struct Metrics {
    // Queries.
    queries: Family<QueryLabels, Counter>,
    query_duration: Family<KindLabels, Histogram, NewHistogram>,
    query_requests: Family<KindLabels, Histogram, NewHistogram>,

    // Requests.
    outbound_requests: Family<RequestLabels, Counter>,
    outbound_duration: Family<TypeLabels, Histogram, NewHistogram>,
    inbound_requests: Family<RequestLabels, Counter>,
    inbound_rejections: Family<RejectionLabels, Counter>,
    inbound_failures: Family<ErrorLabels, Counter>,

    // Routing tables.
    table_peers: Gauge,
    bucket_peers: Family<BucketLabels, Gauge>,
    peers_added: Counter,
    peers_removed: Family<ReasonLabels, Counter>,
    full_table_peers: Gauge,
    crawls: Family<OutcomeLabels, Counter>,
    crawl_last_peers: Gauge,
    crawl_last_duration: Gauge<f64, AtomicU64>,

    // Stores.
    store_records: Gauge,
    store_record_bytes: Gauge,
    store_provider_keys: Gauge,
    store_provider_records: Gauge,
    store_provider_bytes: Gauge,

    // Reprovide sweep.
    provided_keys: Gauge,
    reprovide_regions: Gauge,
    reprovided_regions: Counter,
    reprovided_keys: Counter,
    reprovide_announcements: Family<OutcomeLabels, Counter>,
    reprovide_behind: Gauge<f64, AtomicU64>,
    reprovide_overdue: Gauge<f64, AtomicU64>,
    reprovide_waiting: Gauge,
    reprovide_workers_needed: Gauge,

    // Connectivity.
    dials: Family<OutcomeLabels, Counter>,
    connections: Gauge,
    server_mode: Gauge,
}

impl Metrics {
    /// Registers the DHT's metric families into `registry`, under the prefix `kadence` (see
    /// [`Metrics`] for the list). Call it once per registry: a second call registers every
    /// family a second time, and the exposition would then hold each name twice.
    pub fn new(registry: &mut Registry) -> Self {
        let r = registry.sub_registry_with_prefix("kadence");
        Self {
            queries: add(
                r,
                "queries",
                "Queries finished, by kind and outcome",
                None,
                Family::default(),
            ),
            query_duration: add(
                r,
                "query_duration",
                "Time from a query's start to its result, by kind",
                Some(Unit::Seconds),
                Family::new_with_constructor(query_duration_histogram as NewHistogram),
            ),
            query_requests: add(
                r,
                "query_requests",
                "Requests a query sent, by kind",
                None,
                Family::new_with_constructor(query_requests_histogram as NewHistogram),
            ),

            outbound_requests: add(
                r,
                "outbound_requests",
                "Requests this node sent, once finished, by message type and outcome",
                None,
                Family::default(),
            ),
            outbound_duration: add(
                r,
                "outbound_request_duration",
                "Time from an outbound request's start to its answer, by message type",
                Some(Unit::Seconds),
                Family::new_with_constructor(round_trip_histogram as NewHistogram),
            ),
            inbound_requests: add(
                r,
                "inbound_requests",
                "Requests of other peers handled by the server, by message type and outcome",
                None,
                Family::default(),
            ),
            inbound_rejections: add(
                r,
                "inbound_rejections",
                "Inbound requests rejected, by message type and reason",
                None,
                Family::default(),
            ),
            inbound_failures: add(
                r,
                "inbound_failures",
                "Inbound streams reset or closed before their remote ended them, by error",
                None,
                Family::default(),
            ),

            table_peers: add(
                r,
                "routing_table_peers",
                "Peers in the routing table",
                None,
                Gauge::default(),
            ),
            bucket_peers: add(
                r,
                "routing_table_bucket_peers",
                "Peers per k-bucket, by common-prefix length with the local key",
                None,
                Family::default(),
            ),
            peers_added: add(
                r,
                "routing_table_peers_added",
                "Peers that entered the routing table",
                None,
                Counter::default(),
            ),
            peers_removed: add(
                r,
                "routing_table_peers_removed",
                "Peers that left the routing table, by reason",
                None,
                Family::default(),
            ),
            full_table_peers: add(
                r,
                "full_table_peers",
                "Peers in the accelerated client's full routing table",
                None,
                Gauge::default(),
            ),
            crawls: add(
                r,
                "crawls",
                "Crawls of the accelerated client finished, by whether the full table serves lookups after them",
                None,
                Family::default(),
            ),
            crawl_last_peers: add(
                r,
                "crawl_last_peers",
                "Peers in the full routing table after the last crawl",
                None,
                Gauge::default(),
            ),
            crawl_last_duration: add(
                r,
                "crawl_last_duration",
                "How long the last crawl took",
                Some(Unit::Seconds),
                Gauge::default(),
            ),

            store_records: add(
                r,
                "store_records",
                "Value records held",
                None,
                Gauge::default(),
            ),
            store_record_bytes: add(
                r,
                "store_record",
                "Size of the value records held, as the store counts it",
                Some(Unit::Bytes),
                Gauge::default(),
            ),
            store_provider_keys: add(
                r,
                "store_provider_keys",
                "Keys with provider records held",
                None,
                Gauge::default(),
            ),
            store_provider_records: add(
                r,
                "store_provider_records",
                "Provider records held, one per key and provider",
                None,
                Gauge::default(),
            ),
            store_provider_bytes: add(
                r,
                "store_provider",
                "Size of the provider records held, as the store counts it",
                Some(Unit::Bytes),
                Gauge::default(),
            ),

            provided_keys: add(
                r,
                "provided_keys",
                "Keys this node provides",
                None,
                Gauge::default(),
            ),
            reprovide_regions: add(
                r,
                "reprovide_regions",
                "Keyspace regions the reprovide sweep cuts its interval into",
                None,
                Gauge::default(),
            ),
            reprovided_regions: add(
                r,
                "reprovided_regions",
                "Keyspace regions the sweep reprovided",
                None,
                Counter::default(),
            ),
            reprovided_keys: add(
                r,
                "reprovided_keys",
                "Keys announced by the reprovide sweep",
                None,
                Counter::default(),
            ),
            reprovide_announcements: add(
                r,
                "reprovide_announcements",
                "ADD_PROVIDER messages of the reprovide sweep, by outcome",
                None,
                Family::default(),
            ),
            reprovide_behind: add(
                r,
                "reprovide_behind",
                "How late the sweep is: the oldest region waiting past its slot",
                Some(Unit::Seconds),
                Gauge::default(),
            ),
            reprovide_overdue: add(
                r,
                "reprovide_overdue",
                "How far past its due time the last region announced its most overdue key",
                Some(Unit::Seconds),
                Gauge::default(),
            ),
            reprovide_waiting: add(
                r,
                "reprovide_regions_waiting",
                "Regions due and waiting for a worker",
                None,
                Gauge::default(),
            ),
            reprovide_workers_needed: add(
                r,
                "reprovide_workers_needed",
                "Workers the sweep needs to keep up at its pace, when more than configured",
                None,
                Gauge::default(),
            ),

            dials: add(
                r,
                "dials",
                "Dials the DHT made itself, by outcome",
                None,
                Family::default(),
            ),
            connections: add(
                r,
                "connections",
                "Connections open with the DHT's handler",
                None,
                Gauge::default(),
            ),
            server_mode: add(
                r,
                "server_mode",
                "1 while the node serves the DHT protocol, 0 in client mode",
                None,
                Gauge::default(),
            ),
        }
    }
}

/// Registers `metric` under `name` and hands back the handle to record into (the registry
/// keeps a clone; both share the values).
fn add<M: Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    unit: Option<Unit>,
    metric: M,
) -> M {
    match unit {
        Some(unit) => registry.register_with_unit(name, help, unit, metric.clone()),
        None => registry.register(name, help, metric.clone()),
    }
    metric
}

/// Queries take from a few round trips on a LAN to the two minutes of a slow lookup on the
/// public network: 10 ms doubling up to 164 s.
fn query_duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 15))
}

/// A lookup sends from a handful of requests to hundreds (a put to k peers after a walk of
/// alpha-wide rounds; a reprovide region's lookup asks 3k): 1 doubling up to 2,048.
fn query_requests_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1.0, 2.0, 12))
}

/// One request's round trip: from a millisecond on loopback to the request timeout, 1 ms
/// doubling up to 33 s.
fn round_trip_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 16))
}

#[cfg(test)]
mod tests;
