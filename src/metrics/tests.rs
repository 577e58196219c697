use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

use super::Metrics;
use crate::mode::Mode;
use crate::network::codec::FrameError;
use crate::network::message::{MessageType, Response};
use crate::network::{InboundError, RequestError};
use crate::provider::sweep::Region;
use crate::provider::SweepReport;
use crate::routing_table::{Failure, RemovalReason};
use crate::server::{InboundOutcome, InboundRejection};
use crate::store::StoreError;
use crate::store::StoreSizes;

fn setup() -> (Registry, Metrics) {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    (registry, metrics)
}

fn text(registry: &Registry) -> String {
    let mut out = String::new();
    encode(&mut out, registry).expect("encoding into a String cannot fail");
    out
}

/// The value of the sample whose name and labels are exactly `series` (as written before the
/// value: `name{a="x",b="y"}`, labels in their declared order), `None` if it is absent.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(series)?;
        let value = rest.strip_prefix(' ')?;
        // A sample line is `series value`, maybe with a timestamp or exemplar after it.
        value.split(' ').next()?.parse().ok()
    })
}

fn sample(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no sample {series} in:\n{text}"))
}

fn report(keys: usize, messages: usize, failures: usize, behind: Duration) -> SweepReport {
    SweepReport {
        region: Region { index: 0, depth: 2 },
        keys,
        peers: 20,
        messages,
        failures,
        behind,
        overdue: Duration::ZERO,
        started: std::time::UNIX_EPOCH,
        accelerated: false,
    }
}

#[test]
fn every_family_is_exposed_under_the_prefix() {
    let (registry, metrics) = setup();
    // A family with labels is exposed once it has a series: record one into each.
    metrics.record_query("closest_peers", "ok", Duration::from_secs(1), 3);
    metrics.record_outbound(MessageType::Ping, &Ok(Some(Response::Ping)), None);
    metrics.record_inbound(
        MessageType::PutValue,
        &InboundOutcome::Rejected(InboundRejection::ForeignProvider),
    );
    metrics.record_inbound_failure(&InboundError::Refused);
    metrics.set_routing_table(1, &[1]);
    metrics.record_crawl(Duration::from_secs(1), 1, true);
    metrics.record_region_reprovided(&report(1, 1, 0, Duration::ZERO));
    metrics.record_dial(Ok(()));
    metrics.record_peer_removed(&RemovalReason::Removed);
    metrics.record_outbound(
        MessageType::Ping,
        &Ok(Some(Response::Ping)),
        Some(Duration::from_millis(1)),
    );
    let text = text(&registry);
    for (name, kind) in [
        ("kadence_queries", "counter"),
        ("kadence_query_duration_seconds", "histogram"),
        ("kadence_query_requests", "histogram"),
        ("kadence_outbound_requests", "counter"),
        ("kadence_outbound_request_duration_seconds", "histogram"),
        ("kadence_inbound_requests", "counter"),
        ("kadence_inbound_rejections", "counter"),
        ("kadence_inbound_failures", "counter"),
        ("kadence_routing_table_peers", "gauge"),
        ("kadence_routing_table_bucket_peers", "gauge"),
        ("kadence_routing_table_peers_added", "counter"),
        ("kadence_routing_table_peers_removed", "counter"),
        ("kadence_full_table_peers", "gauge"),
        ("kadence_crawls", "counter"),
        ("kadence_crawl_last_peers", "gauge"),
        ("kadence_crawl_last_duration_seconds", "gauge"),
        ("kadence_store_records", "gauge"),
        ("kadence_store_record_bytes", "gauge"),
        ("kadence_store_provider_keys", "gauge"),
        ("kadence_store_provider_records", "gauge"),
        ("kadence_store_provider_bytes", "gauge"),
        ("kadence_provided_keys", "gauge"),
        ("kadence_reprovide_regions", "gauge"),
        ("kadence_reprovided_regions", "counter"),
        ("kadence_reprovided_keys", "counter"),
        ("kadence_reprovide_announcements", "counter"),
        ("kadence_reprovide_behind_seconds", "gauge"),
        ("kadence_reprovide_overdue_seconds", "gauge"),
        ("kadence_reprovide_regions_waiting", "gauge"),
        ("kadence_reprovide_workers_needed", "gauge"),
        ("kadence_dials", "counter"),
        ("kadence_connections", "gauge"),
        ("kadence_server_mode", "gauge"),
    ] {
        let line = format!("# TYPE {name} {kind}");
        assert!(
            text.lines().any(|l| l == line),
            "missing `{line}` in:\n{text}"
        );
    }
    // No name is registered twice (the exposition would be invalid).
    let mut types: Vec<_> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    let all = types.len();
    types.sort_unstable();
    types.dedup();
    assert_eq!(types.len(), all);
}

#[test]
fn queries_count_by_kind_and_outcome_and_time_by_kind() {
    let (registry, metrics) = setup();
    metrics.record_query("closest_peers", "ok", Duration::from_millis(40), 12);
    metrics.record_query("closest_peers", "ok", Duration::from_secs(3), 30);
    metrics.record_query("closest_peers", "timeout", Duration::from_secs(60), 200);
    metrics.record_query("get_value", "not_found", Duration::from_millis(5), 1);
    let text = text(&registry);

    let q = |kind, outcome| {
        sample(
            &text,
            &format!("kadence_queries_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(q("closest_peers", "ok"), 2.0);
    assert_eq!(q("closest_peers", "timeout"), 1.0);
    assert_eq!(q("get_value", "not_found"), 1.0);

    let d = "kadence_query_duration_seconds";
    assert_eq!(
        sample(&text, &format!("{d}_count{{kind=\"closest_peers\"}}")),
        3.0
    );
    let sum = sample(&text, &format!("{d}_sum{{kind=\"closest_peers\"}}"));
    assert!((sum - 63.04).abs() < 1e-9, "sum {sum}");
    // 40 ms falls in the 0.04 bucket (10 ms doubling), 5 ms in the first.
    assert_eq!(
        sample(
            &text,
            &format!("{d}_bucket{{le=\"0.04\",kind=\"closest_peers\"}}")
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            &format!("{d}_bucket{{le=\"0.01\",kind=\"get_value\"}}")
        ),
        1.0
    );
    // Two minutes are inside the buckets: a slow lookup is not lost in +Inf.
    assert_eq!(
        sample(
            &text,
            &format!("{d}_bucket{{le=\"163.84\",kind=\"closest_peers\"}}")
        ),
        3.0
    );

    let r = "kadence_query_requests";
    assert_eq!(
        sample(&text, &format!("{r}_sum{{kind=\"closest_peers\"}}")),
        242.0
    );
    assert_eq!(
        sample(&text, &format!("{r}_count{{kind=\"get_value\"}}")),
        1.0
    );
}

#[test]
fn outbound_requests_have_one_outcome_per_error() {
    let (registry, metrics) = setup();
    let rtt = Some(Duration::from_millis(20));
    let answered = Ok(Some(Response::FindNode {
        closer_peers: Vec::new(),
    }));
    metrics.record_outbound(MessageType::FindNode, &answered, rtt);
    metrics.record_outbound(MessageType::FindNode, &answered, rtt);
    metrics.record_outbound(MessageType::AddProvider, &Ok(None), rtt);
    let errors = [
        (RequestError::Timeout, "timeout"),
        (RequestError::UnsupportedProtocol, "unsupported_protocol"),
        (RequestError::QueueFull, "queue_full"),
        (RequestError::ConnectionClosed, "connection_closed"),
        (RequestError::DialFailed("refused".into()), "dial_failed"),
        (
            RequestError::Frame(Arc::new(FrameError::InvalidPrefix)),
            "stream_error",
        ),
    ];
    for (error, _) in &errors {
        // A failure's time is not a round trip: it must not reach the histogram.
        metrics.record_outbound(MessageType::GetValue, &Err(error.clone()), rtt);
    }
    let text = text(&registry);

    let sent = |t: &str, outcome: &str| {
        sample(
            &text,
            &format!("kadence_outbound_requests_total{{type=\"{t}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(sent("find_node", "ok"), 2.0);
    assert_eq!(sent("add_provider", "ok"), 1.0);
    for (_, outcome) in errors {
        assert_eq!(sent("get_value", outcome), 1.0, "{outcome}");
    }
    let rt = "kadence_outbound_request_duration_seconds";
    assert_eq!(
        sample(&text, &format!("{rt}_count{{type=\"find_node\"}}")),
        2.0
    );
    assert_eq!(
        sample(&text, &format!("{rt}_count{{type=\"add_provider\"}}")),
        1.0
    );
    assert_eq!(
        value(&text, &format!("{rt}_count{{type=\"get_value\"}}")),
        None
    );
}

#[test]
fn inbound_requests_and_rejections_and_failures() {
    let (registry, metrics) = setup();
    metrics.record_inbound(MessageType::GetValue, &InboundOutcome::Answered);
    metrics.record_inbound(MessageType::PutValue, &InboundOutcome::Stored);
    metrics.record_inbound(
        MessageType::PutValue,
        &InboundOutcome::Rejected(InboundRejection::OutdatedRecord),
    );
    metrics.record_inbound(
        MessageType::AddProvider,
        &InboundOutcome::Rejected(InboundRejection::Store(StoreError::Full)),
    );
    metrics.record_inbound(
        MessageType::AddProvider,
        &InboundOutcome::Rejected(InboundRejection::Store(StoreError::Busy)),
    );
    metrics.record_inbound_failure(&InboundError::TooManyStreams);
    metrics.record_inbound_failure(&InboundError::ResponseTimeout);
    metrics.record_inbound_failure(&InboundError::ResponseTimeout);
    let text = text(&registry);

    let handled = |t: &str, outcome: &str| {
        sample(
            &text,
            &format!("kadence_inbound_requests_total{{type=\"{t}\",outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(handled("get_value", "answered"), 1.0);
    assert_eq!(handled("put_value", "stored"), 1.0);
    assert_eq!(handled("put_value", "rejected"), 1.0);
    assert_eq!(handled("add_provider", "rejected"), 2.0);

    let rejected = |t: &str, reason: &str| {
        sample(
            &text,
            &format!("kadence_inbound_rejections_total{{type=\"{t}\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(rejected("put_value", "outdated_record"), 1.0);
    assert_eq!(rejected("add_provider", "store_full"), 1.0);
    assert_eq!(rejected("add_provider", "store_busy"), 1.0);

    let failed = |error: &str| {
        sample(
            &text,
            &format!("kadence_inbound_failures_total{{error=\"{error}\"}}"),
        )
    };
    assert_eq!(failed("too_many_streams"), 1.0);
    assert_eq!(failed("response_timeout"), 2.0);
}

#[test]
fn routing_table_gauges_and_buckets() {
    let (registry, metrics) = setup();
    metrics.record_peer_added();
    metrics.record_peer_added();
    metrics.record_peer_removed(&RemovalReason::Unresponsive);
    metrics.record_peer_removed(&RemovalReason::NotServing);
    metrics.record_peer_removed(&RemovalReason::NotServing);
    let mut buckets = vec![0; 256];
    buckets[0] = 20;
    buckets[1] = 20;
    buckets[7] = 3;
    metrics.set_routing_table(43, &buckets);
    let text1 = text(&registry);
    assert_eq!(sample(&text1, "kadence_routing_table_peers"), 43.0);
    assert_eq!(
        sample(&text1, "kadence_routing_table_peers_added_total"),
        2.0
    );
    let removed = |reason: &str| {
        sample(
            &text1,
            &format!("kadence_routing_table_peers_removed_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(removed("unresponsive"), 1.0);
    assert_eq!(removed("not_serving"), 2.0);
    let bucket = |text: &str, b: u16| {
        value(
            text,
            &format!("kadence_routing_table_bucket_peers{{bucket=\"{b}\"}}"),
        )
    };
    assert_eq!(bucket(&text1, 0), Some(20.0));
    assert_eq!(bucket(&text1, 7), Some(3.0));
    // Buckets that never held a peer have no series.
    assert_eq!(bucket(&text1, 2), None);
    assert_eq!(bucket(&text1, 200), None);

    // Bucket 7 empties and bucket 9 fills, with a shorter slice: 7 stays, at 0.
    metrics.set_routing_table(41, &[20, 20, 0, 0, 0, 0, 0, 0, 0, 1]);
    let text2 = text(&registry);
    assert_eq!(sample(&text2, "kadence_routing_table_peers"), 41.0);
    assert_eq!(bucket(&text2, 7), Some(0.0));
    assert_eq!(bucket(&text2, 9), Some(1.0));
    metrics.set_routing_table(0, &[]);
    let text3 = text(&registry);
    assert_eq!(bucket(&text3, 0), Some(0.0));
    assert_eq!(bucket(&text3, 9), Some(0.0));
}

#[test]
fn crawls_set_the_full_table() {
    let (registry, metrics) = setup();
    metrics.set_full_table(5);
    assert_eq!(sample(&text(&registry), "kadence_full_table_peers"), 5.0);
    metrics.record_crawl(Duration::from_millis(2500), 900, true);
    metrics.record_crawl(Duration::from_secs(1), 3, false);
    let text = text(&registry);
    assert_eq!(
        sample(&text, "kadence_crawls_total{outcome=\"serving\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "kadence_crawls_total{outcome=\"not_serving\"}"),
        1.0
    );
    assert_eq!(sample(&text, "kadence_crawl_last_peers"), 3.0);
    assert_eq!(sample(&text, "kadence_crawl_last_duration_seconds"), 1.0);
    assert_eq!(sample(&text, "kadence_full_table_peers"), 3.0);
}

#[test]
fn store_and_provided_keys_gauges_follow_their_setters() {
    let (registry, metrics) = setup();
    metrics.set_store(StoreSizes {
        records: 3,
        record_bytes: Some(4096),
        provider_keys: 2,
        provider_records: Some(5),
        provider_bytes: Some(1500),
    });
    metrics.set_provided_keys(11);
    let text1 = text(&registry);
    assert_eq!(sample(&text1, "kadence_store_records"), 3.0);
    assert_eq!(sample(&text1, "kadence_store_record_bytes"), 4096.0);
    assert_eq!(sample(&text1, "kadence_store_provider_keys"), 2.0);
    assert_eq!(sample(&text1, "kadence_store_provider_records"), 5.0);
    assert_eq!(sample(&text1, "kadence_store_provider_bytes"), 1500.0);
    assert_eq!(sample(&text1, "kadence_provided_keys"), 11.0);

    // Gauges go down as well as up; a size past i64 saturates instead of wrapping negative.
    metrics.set_store(StoreSizes {
        records: u64::MAX,
        ..StoreSizes::default()
    });
    let text2 = text(&registry);
    assert_eq!(sample(&text2, "kadence_store_records"), i64::MAX as f64);
    assert_eq!(
        sample(&text2, "kadence_store_record_bytes"),
        4096.0,
        "a figure the store does not report stays as it was"
    );
}

#[test]
fn sweep_reports_count_regions_keys_and_announcements() {
    let (registry, metrics) = setup();
    metrics.record_reprovide_behind(Duration::from_secs(90));
    assert_eq!(
        sample(&text(&registry), "kadence_reprovide_behind_seconds"),
        90.0
    );
    metrics.record_region_reprovided(&report(10, 190, 10, Duration::from_secs(30)));
    metrics.record_region_reprovided(&report(4, 80, 0, Duration::from_millis(500)));
    let text = text(&registry);
    assert_eq!(sample(&text, "kadence_reprovided_regions_total"), 2.0);
    // Regions of depth 2: the keyspace is cut in four.
    assert_eq!(sample(&text, "kadence_reprovide_regions"), 4.0);
    assert_eq!(sample(&text, "kadence_reprovided_keys_total"), 14.0);
    let announced = |outcome: &str| {
        sample(
            &text,
            &format!("kadence_reprovide_announcements_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(announced("ok"), 270.0);
    assert_eq!(announced("failed"), 10.0);
    // The last region was on time (nearly): the sweep is no longer 90 s behind.
    assert_eq!(sample(&text, "kadence_reprovide_behind_seconds"), 0.5);
}

#[test]
fn dials_connections_and_mode() {
    let (registry, metrics) = setup();
    metrics.record_dial(Ok(()));
    metrics.record_dial(Ok(()));
    metrics.record_dial(Err(Some(Failure::Unreachable)));
    metrics.record_dial(Err(Some(Failure::NoAnswer)));
    metrics.record_dial(Err(None));
    metrics.set_connections(7);
    metrics.set_mode(Mode::Server);
    let text1 = text(&registry);
    assert_eq!(sample(&text1, "kadence_dials_total{outcome=\"ok\"}"), 2.0);
    assert_eq!(
        sample(&text1, "kadence_dials_total{outcome=\"unreachable\"}"),
        1.0
    );
    assert_eq!(
        sample(&text1, "kadence_dials_total{outcome=\"no_answer\"}"),
        1.0
    );
    assert_eq!(
        sample(&text1, "kadence_dials_total{outcome=\"not_dialled\"}"),
        1.0
    );
    assert_eq!(sample(&text1, "kadence_connections"), 7.0);
    assert_eq!(sample(&text1, "kadence_server_mode"), 1.0);
    metrics.set_mode(Mode::Client);
    metrics.set_connections(0);
    let text2 = text(&registry);
    assert_eq!(sample(&text2, "kadence_server_mode"), 0.0);
    assert_eq!(sample(&text2, "kadence_connections"), 0.0);
}

#[test]
fn a_clone_records_into_the_same_registry() {
    let (registry, metrics) = setup();
    let clone = metrics.clone();
    metrics.record_peer_added();
    clone.record_peer_added();
    assert_eq!(
        sample(&text(&registry), "kadence_routing_table_peers_added_total"),
        2.0
    );
}

#[test]
fn the_prefix_nests_under_the_application_s() {
    // libp2p-metrics' users often hand a sub-registry of their own: names compose.
    let mut registry = Registry::with_prefix("app");
    let metrics = Metrics::new(&mut registry);
    metrics.set_connections(1);
    assert_eq!(sample(&text(&registry), "app_kadence_connections"), 1.0);
}
