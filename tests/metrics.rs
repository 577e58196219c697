//! The Prometheus metrics (feature `metrics`) move as a small network works: three nodes look
//! up closest peers, put and get a value, provide and find providers, and start providing a
//! key the sweep announces; each node's registry then shows its queries, its requests both
//! ways, its routing table and connections, and the sweep's work.
#![cfg(feature = "metrics")]

mod common;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use common::net::{network, TestNode};
use common::pk_record;
use kadence::metrics::Metrics;
use kadence::{ProviderKey, QueryResult};
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;

/// The test configuration, with a sweep fast enough to finish a region while the test runs.
fn config() -> kadence::Config {
    common::net::node_config().with_reprovide_interval(Duration::from_secs(2))
}

/// A registry whose metrics `node` records into from now on.
async fn registry_of(node: &TestNode) -> Registry {
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    node.run(move |dht| {
        dht.set_metrics(metrics);
        None
    })
    .await;
    registry
}

/// The value of the sample written exactly `series` (`name{label="v",...}`, labels in the
/// order the crate declares them), `None` while it is absent.
fn sample(registry: &Registry, series: &str) -> Option<f64> {
    let mut text = String::new();
    encode(&mut text, registry).expect("encoding into a String cannot fail");
    text.lines().find_map(|line| {
        let value = line.strip_prefix(series)?.strip_prefix(' ')?;
        value.split(' ').next()?.parse().ok()
    })
}

/// Waits until `series` of `node`'s registry is at least `min`. Events are recorded as the
/// node's swarm takes them and gauges are read at most once a second, both on the node's own
/// task: a check made at once could run ahead of it. Each round nudges the node with an empty
/// command, so that it polls its behaviour; the deadline only keeps a failure from hanging.
async fn at_least(node: &TestNode, registry: &Registry, series: &str, min: f64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let value = sample(registry, series);
        if value.is_some_and(|v| v >= min) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{series} is {value:?}, want >= {min}"
        );
        node.run(|_| None).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_as_a_small_network_works() {
    let nodes = network(3, config).await;
    let mut registries = Vec::new();
    for node in &nodes {
        registries.push(registry_of(node).await);
    }

    // Closest peers, from node 0.
    nodes[0]
        .succeed(|dht| Some(dht.get_closest_peers(b"some key".to_vec())))
        .await;

    // A value put by node 1, read by node 2.
    let record = pk_record();
    let key = record.key.clone();
    nodes[1]
        .succeed(move |dht| dht.put_value(record, None).ok())
        .await;
    // Node 2 holds the record itself: a quorum of 2 makes it ask the network too.
    nodes[2]
        .succeed(move |dht| Some(dht.get_value(key, NonZeroUsize::new(2))))
        .await;

    // A key provided by node 0 and found by node 2, once node 2 holds its record (ADD_PROVIDER
    // has no answer: "written" is not "stored").
    let key = ProviderKey::sha2_256(b"metrics");
    let provided = key.clone();
    nodes[0]
        .succeed(move |dht| dht.provide(provided).ok())
        .await;
    common::within(30, async {
        while !nodes[2].holds_providers_of(key.as_bytes()).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // No limit: the one record node 2 holds does not end the lookup at once.
    let result = nodes[2]
        .succeed(move |dht| Some(dht.find_providers(key, None)))
        .await;
    assert!(
        matches!(&result, QueryResult::FindProviders { result: Ok(p), .. } if !p.is_empty()),
        "{result:?}"
    );

    // And a key node 1 keeps provided: the sweep announces its region.
    nodes[1]
        .run(|dht| {
            dht.start_providing(ProviderKey::sha2_256(b"kept"))
                .expect("node 1 has an address");
            None
        })
        .await;

    let (n0, n1, n2) = (&nodes[0], &nodes[1], &nodes[2]);
    let (r0, r1, r2) = (&registries[0], &registries[1], &registries[2]);

    // Queries, by kind and outcome, with their duration.
    for (node, registry, kind) in [
        (n0, r0, "closest_peers"),
        (n1, r1, "put_value"),
        (n2, r2, "get_value"),
        (n0, r0, "provide"),
        (n2, r2, "find_providers"),
    ] {
        let series = format!("kadence_queries_total{{kind=\"{kind}\",outcome=\"ok\"}}");
        at_least(node, registry, &series, 1.0).await;
        let series = format!("kadence_query_duration_seconds_count{{kind=\"{kind}\"}}");
        at_least(node, registry, &series, 1.0).await;
    }

    // Requests sent, by type: every one of them, the lookups' and the writes' included.
    for (node, registry, t) in [
        (n0, r0, "find_node"),
        (n1, r1, "put_value"),
        (n2, r2, "get_value"),
        (n0, r0, "add_provider"),
        (n2, r2, "get_providers"),
    ] {
        let series = format!("kadence_outbound_requests_total{{type=\"{t}\",outcome=\"ok\"}}");
        at_least(node, registry, &series, 1.0).await;
    }
    let series = "kadence_outbound_request_duration_seconds_count{type=\"find_node\"}";
    at_least(n0, r0, series, 1.0).await;

    // Requests received, by type and outcome: node 2 stored node 1's value and node 0's
    // provider record, and answered lookups.
    let inbound = |t: &str, outcome: &str| {
        format!("kadence_inbound_requests_total{{type=\"{t}\",outcome=\"{outcome}\"}}")
    };
    at_least(n2, r2, &inbound("put_value", "stored"), 1.0).await;
    at_least(n2, r2, &inbound("add_provider", "stored"), 1.0).await;
    at_least(n1, r1, &inbound("find_node", "answered"), 1.0).await;
    // ...and holds them: the store's gauges.
    at_least(n2, r2, "kadence_store_records", 1.0).await;
    at_least(n2, r2, "kadence_store_record_bytes", 1.0).await;
    at_least(n2, r2, "kadence_store_provider_keys", 1.0).await;

    // Gauges: every node knows the other two and is connected; node 1 provides one key, and
    // the sweep reprovided its region.
    for (node, registry) in [(n0, r0), (n1, r1), (n2, r2)] {
        at_least(node, registry, "kadence_routing_table_peers", 1.0).await;
        at_least(node, registry, "kadence_connections", 1.0).await;
        at_least(node, registry, "kadence_server_mode", 1.0).await;
    }
    at_least(n1, r1, "kadence_provided_keys", 1.0).await;
    at_least(n1, r1, "kadence_reprovided_regions_total", 1.0).await;
    at_least(n1, r1, "kadence_reprovided_keys_total", 1.0).await;
    at_least(n1, r1, "kadence_reprovide_regions", 1.0).await;
}
