//! Wire compatibility with go-libp2p-kad-dht v0.42.2 (the DHT Kubo runs), both directions, over
//! 127.0.0.1 TCP with noise and yamux on `/ipfs/kad/1.0.0`. Skipped with a printed reason on a
//! machine without Go; under CI a missing toolchain fails the run.

mod common;

use std::collections::HashSet;

use common::go::{amino_config, binary, hex, multihash, GoPeer};
use common::net::providers_in;
use common::net::TestNode;
use common::pk_record;
use kadence::QueryResult;
use libp2p::PeerId;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_both_directions_with_go() {
    let Some(binary) = binary() else { return };
    let mut g1 = GoPeer::start(&binary).await;
    let mut g2 = GoPeer::start(&binary).await;
    g2.ok(&format!("connect {}", g1.p2p_addr())).await;

    let mut kadence = Vec::new();
    for _ in 0..3 {
        kadence.push(TestNode::start_tcp(amino_config(), Some((g1.id, g1.addr.clone()))).await);
    }
    for node in &kadence {
        node.run(|dht| dht.bootstrap().ok()).await;
    }
    // Go admits kadence nodes into its routing table: they passed its own checks.
    for node in &kadence {
        g1.wait_in_table(node.id).await;
    }
    g1.ok("bootstrap").await;
    g2.ok("bootstrap").await;

    // FIND_NODE both ways.
    let outcome = kadence[0]
        .run(|dht| Some(dht.get_closest_peers(b"interop".to_vec())))
        .await;
    let Some(QueryResult::ClosestPeers {
        result: Ok(peers), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    let ids: HashSet<PeerId> = peers.iter().map(|p| p.id).collect();
    assert!(ids.contains(&g1.id) && ids.contains(&g2.id), "{ids:?}");
    let closest = g2.ok(&format!("closest {}", hex(b"interop"))).await;
    let go_found: Vec<&str> = closest["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        kadence
            .iter()
            .any(|k| go_found.contains(&k.id.to_string().as_str())),
        "go's lookup went through kadence: {closest}"
    );

    // Find peer both ways.
    let wanted = g2.id;
    let outcome = kadence[1].run(move |dht| Some(dht.find_peer(wanted))).await;
    assert!(
        matches!(outcome.result, Some(QueryResult::FindPeer { result: Ok(ref p), .. }) if p.id == wanted && !p.addrs.is_empty()),
        "{outcome:?}"
    );
    let found = g2.ok(&format!("findpeer {}", kadence[2].id)).await;
    assert!(
        found["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap() == kadence[2].addr.to_string()),
        "{found}"
    );

    // PUT_VALUE from kadence, GET_VALUE from go; and the other way, with /pk records.
    let record = pk_record();
    let outcome = kadence[0]
        .run({
            let record = record.clone();
            move |dht| dht.put_value(record, None).ok()
        })
        .await;
    assert!(
        matches!(
            outcome.result,
            Some(QueryResult::PutValue { result: Ok(_), .. })
        ),
        "{outcome:?}"
    );
    let got = g2.ok(&format!("get {}", hex(&record.key))).await;
    assert_eq!(got["value"].as_str().unwrap(), hex(&record.value));

    let record = pk_record();
    g1.ok(&format!("put {} {}", hex(&record.key), hex(&record.value)))
        .await;
    let outcome = kadence[2]
        .run({
            let key = record.key.clone();
            move |dht| Some(dht.get_value(key, None))
        })
        .await;
    let Some(QueryResult::GetValue {
        result: Ok(got), ..
    }) = outcome.result
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(got.value, record.value);

    // Provide from kadence, find from go: the record holds a usable address.
    let cid = multihash(1);
    let outcome = kadence[1]
        .run({
            let cid = cid.clone();
            move |dht| {
                dht.provide(kadence::ProviderKey::try_from(cid).unwrap())
                    .ok()
            }
        })
        .await;
    assert!(
        matches!(
            outcome.result,
            Some(QueryResult::Provide { result: Ok(_), .. })
        ),
        "{outcome:?}"
    );
    let found = g2.ok(&format!("findprovs {}", hex(&cid))).await;
    let provider = found["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].as_str().unwrap() == kadence[1].id.to_string())
        .unwrap_or_else(|| panic!("go found kadence's provider record: {found}"));
    assert!(
        provider["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str().unwrap() == kadence[1].addr.to_string()),
        "with its address: {provider}"
    );

    // Provide from go, find from kadence.
    let cid = multihash(2);
    g1.ok(&format!("provide {}", hex(&cid))).await;
    let outcome = kadence[2]
        .run(move |dht| {
            Some(dht.find_providers(kadence::ProviderKey::try_from(cid).unwrap(), None))
        })
        .await;
    assert!(
        providers_in(&outcome.progress).contains(&g1.id),
        "{outcome:?}"
    );

    g1.stop().await;
    g2.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_of_ten_go_and_ten_kadence_nodes() {
    let Some(binary) = binary() else { return };
    let mut gos = Vec::new();
    for i in 0..10 {
        let mut go = GoPeer::start(&binary).await;
        if i > 0 {
            let previous: &GoPeer = &gos[i - 1];
            let addr = previous.p2p_addr();
            go.ok(&format!("connect {addr}")).await;
        }
        gos.push(go);
    }
    let mut kadence: Vec<TestNode> = Vec::new();
    for go in &gos {
        let node = TestNode::start_tcp(amino_config(), Some((go.id, go.addr.clone()))).await;
        kadence.push(node);
    }
    // Some Go peers learn of kadence nodes directly too.
    for i in 0..10 {
        let addr = format!(
            "{}/p2p/{}",
            kadence[(i + 5) % 10].addr,
            kadence[(i + 5) % 10].id
        );
        gos[i].ok(&format!("connect {addr}")).await;
    }
    for _ in 0..2 {
        for node in &kadence {
            node.run(|dht| dht.bootstrap().ok()).await;
        }
        for go in &mut gos {
            go.ok("bootstrap").await;
        }
    }

    // Routing tables hold the other kind.
    let go_ids: HashSet<PeerId> = gos.iter().map(|g| g.id).collect();
    let kadence_ids: HashSet<String> = kadence.iter().map(|k| k.id.to_string()).collect();
    for go in &mut gos {
        let table = go.ok("table").await;
        let has_kadence = table["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| kadence_ids.contains(p.as_str().unwrap()));
        assert!(has_kadence, "go table without kadence nodes: {table}");
    }
    let table_has_go = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for node in &kadence {
        let counter = table_has_go.clone();
        let go_ids = go_ids.clone();
        node.run(move |dht| {
            if dht
                .routing_table()
                .peers()
                .iter()
                .any(|p| go_ids.contains(&p.id))
            {
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            None
        })
        .await;
    }
    assert_eq!(table_has_go.load(std::sync::atomic::Ordering::SeqCst), 10);

    // Every operation from either side.
    let cid = multihash(3);
    let outcome = kadence[3]
        .run({
            let cid = cid.clone();
            move |dht| {
                dht.provide(kadence::ProviderKey::try_from(cid).unwrap())
                    .ok()
            }
        })
        .await;
    assert!(
        matches!(
            outcome.result,
            Some(QueryResult::Provide { result: Ok(_), .. })
        ),
        "{outcome:?}"
    );
    let found = gos[8].ok(&format!("findprovs {}", hex(&cid))).await;
    assert!(
        found.to_string().contains(&kadence[3].id.to_string()),
        "{found}"
    );

    let cid = multihash(4);
    gos[2].ok(&format!("provide {}", hex(&cid))).await;
    let outcome = kadence[9]
        .run(move |dht| {
            Some(dht.find_providers(kadence::ProviderKey::try_from(cid).unwrap(), None))
        })
        .await;
    assert!(
        providers_in(&outcome.progress).contains(&gos[2].id),
        "{outcome:?}"
    );

    let record = pk_record();
    let outcome = kadence[5]
        .run({
            let record = record.clone();
            move |dht| dht.put_value(record, None).ok()
        })
        .await;
    assert!(
        matches!(
            outcome.result,
            Some(QueryResult::PutValue { result: Ok(_), .. })
        ),
        "{outcome:?}"
    );
    let got = gos[6].ok(&format!("get {}", hex(&record.key))).await;
    assert_eq!(got["value"].as_str().unwrap(), hex(&record.value));

    let record = pk_record();
    gos[1]
        .ok(&format!("put {} {}", hex(&record.key), hex(&record.value)))
        .await;
    let outcome = kadence[7]
        .run({
            let key = record.key.clone();
            move |dht| Some(dht.get_value(key, None))
        })
        .await;
    assert!(
        matches!(outcome.result, Some(QueryResult::GetValue { result: Ok(ref r), .. }) if r.value == record.value),
        "{outcome:?}"
    );

    let wanted = gos[9].id;
    let outcome = kadence[0].run(move |dht| Some(dht.find_peer(wanted))).await;
    assert!(
        matches!(
            outcome.result,
            Some(QueryResult::FindPeer { result: Ok(_), .. })
        ),
        "{outcome:?}"
    );
    let found = gos[0].ok(&format!("findpeer {}", kadence[9].id)).await;
    assert!(!found["addrs"].as_array().unwrap().is_empty(), "{found}");

    for go in gos {
        go.stop().await;
    }
}
