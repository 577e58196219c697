//! Optimistic provide over real swarms: a node that knows the network's size reports a provide
//! (or a put_value) once 15 of the 20 closest stored its record, and another node finds the
//! provider (the record) right after, every time; the other writes settle in the background.

mod common;

use std::time::{Duration, Instant};

use std::num::NonZeroUsize;

use common::net::{network, node_config, providers_in, TestNode};
use common::pk_record;
use kadence::key::Key;
use kadence::QueryResult;

fn cid(i: u32) -> Vec<u8> {
    let mut key = vec![0x12, 0x20];
    key.extend(Key::new(&i.to_be_bytes()).as_bytes());
    key
}

/// Runs lookups for random keys from `node` until it has a network-size estimate (a node's
/// bootstrap and refresh lookups usually give it one already).
async fn estimate(node: &TestNode) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0u32.. {
        let (tx, rx) = tokio::sync::oneshot::channel();
        node.run(move |dht| {
            let _ = tx.send(dht.network_size_estimate());
            None
        })
        .await;
        if let Some(n) = rx.await.unwrap() {
            return n;
        }
        assert!(Instant::now() < deadline, "no estimate after {i} lookups");
        node.run(move |dht| Some(dht.get_closest_peers(cid(1_000_000 + i))))
            .await;
    }
    unreachable!()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_provides_are_found_from_another_node_at_once() {
    let nodes = network(40, node_config).await;
    let provider = &nodes[3];
    let others = estimate(provider).await;
    eprintln!("estimate: {others} servers besides this one (39 in truth)");
    assert!((20..=80).contains(&others), "estimate {others}");

    let provides = 12u32;
    let mut ids = Vec::new();
    for i in 0..provides {
        let key = cid(i);
        let outcome = provider
            .run(move |dht| {
                dht.provide(kadence::ProviderKey::try_from(key).unwrap())
                    .ok()
            })
            .await;
        let Some(QueryResult::Provide {
            result: Ok(stored), ..
        }) = outcome.result
        else {
            panic!("provide {i}: {:?}", outcome.result);
        };
        assert!(stored >= 15, "provide {i}: reported with {stored} stored");
        ids.push(stored);
        // Right after, from another node: the provider is found.
        let finder = &nodes[(3 + 7 * (i as usize + 1)) % nodes.len()];
        assert_ne!(finder.id, provider.id);
        let key = cid(i);
        let found = finder
            .run(move |dht| {
                Some(dht.find_providers(kadence::ProviderKey::try_from(key).unwrap(), None))
            })
            .await;
        assert!(
            matches!(
                found.result,
                Some(QueryResult::FindProviders { result: Ok(_), .. })
            ),
            "{:?}",
            found.result
        );
        assert!(
            providers_in(&found.progress).contains(&provider.id),
            "provide {i} not found from {}",
            finder.id
        );
    }
    eprintln!("stored when reported: {ids:?}");

    // put_value: the same rule, the record found from another node right after.
    for i in 0..4usize {
        let record = pk_record();
        let put = record.clone();
        let outcome = provider.run(move |dht| dht.put_value(put, None).ok()).await;
        let Some(QueryResult::PutValue {
            result: Ok(stored), ..
        }) = outcome.result
        else {
            panic!("put {i}: {:?}", outcome.result);
        };
        assert!(stored >= 15, "put {i}: reported with {stored} stored");
        ids.push(stored);
        let finder = &nodes[(5 + 11 * (i + 1)) % nodes.len()];
        let key = record.key.clone();
        let got = finder
            .run(move |dht| Some(dht.get_value(key, NonZeroUsize::new(1))))
            .await;
        match got.result {
            Some(QueryResult::GetValue {
                result: Ok(found), ..
            }) => assert_eq!(found.value, record.value),
            other => panic!("put {i} not found from {}: {other:?}", finder.id),
        }
    }

    // The provides reported early settle in the background, at their key's closest peers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let settled = loop {
        let settled = provider.settled_writes();
        let early = ids.iter().filter(|n| **n < 20).count();
        if settled.len() >= early.max(1) {
            break settled;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {early} early provides settled",
            settled.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("settled: {settled:?}");
    for (_, writes) in &settled {
        assert!(writes.stored_at_closest >= 15, "{writes:?}");
        assert!(writes.stored >= writes.stored_at_closest);
    }
}
