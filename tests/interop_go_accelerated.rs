//! An accelerated kadence node (issue 16) in a network of go-libp2p-kad-dht peers (and ordinary
//! kadence nodes), over 127.0.0.1 TCP on `/ipfs/kad/1.0.0`: it crawls them all, does every
//! operation from its full table, and still answers the Go peers as an ordinary server.
//! Skipped with a printed reason on a machine without Go; under CI a missing toolchain fails
//! the run.

mod common;
#[path = "common/accelerated.rs"]
mod helpers;

use std::collections::HashSet;
use std::time::Duration;

use common::go::{binary, hex, GoPeer};
use common::net::{providers_in, TestNode};
use common::pk_record;
use helpers::{in_memory, Noted, Peer};
use kadence::{AcceleratedConfig, InboundOutcome, MessageType, QueryResult};
use libp2p::identity::Keypair;
use libp2p::PeerId;

fn amino() -> kadence::Config {
    kadence::Config::amino()
        .with_mode(Some(kadence::Mode::Server))
        .with_query_timeout(Duration::from_secs(30))
        .with_request_timeout(Duration::from_secs(5))
}

/// A sha2-256 multihash, as provider keys are on Amino.
fn multihash(seed: u8) -> Vec<u8> {
    let mut key = vec![0x12, 0x20];
    key.extend([seed; 32]);
    key
}

fn go_ids(answer: &serde_json::Value, field: &str) -> Vec<String> {
    answer[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {answer}"))
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accelerated_node_does_every_operation_among_go_peers() {
    let Some(binary) = binary() else { return };
    let mut gos: Vec<GoPeer> = Vec::new();
    for i in 0..8 {
        let mut go = GoPeer::start(&binary).await;
        if i > 0 {
            let addr = gos[i - 1].p2p_addr();
            go.ok(&format!("connect {addr}")).await;
        }
        gos.push(go);
    }
    let mut kadence = Vec::new();
    for i in 0..2 {
        let go = &gos[i * 4];
        kadence.push(TestNode::start_tcp(amino(), Some((go.id, go.addr.clone()))).await);
    }
    for go in &mut gos {
        go.ok("bootstrap").await;
    }
    for node in &kadence {
        node.run(|dht| dht.bootstrap().ok()).await;
    }

    // The accelerated node joins through one Go peer and crawls everyone.
    let config = amino().with_accelerated(Some(AcceleratedConfig {
        progress_interval: Duration::from_millis(100),
        ..AcceleratedConfig::default()
    }));
    let mut node = Peer::tcp(
        Keypair::generate_ed25519(),
        Duration::from_secs(10),
        in_memory(config),
        Some((gos[0].id, gos[0].addr.clone())),
    )
    .await;
    let stats = node
        .wait_for(60, "the crawl finished", |noted| match noted {
            Noted::CrawlFinished { stats, .. } => Some(*stats),
            _ => None,
        })
        .await;
    let table = node.full_table().await;
    let servers: HashSet<PeerId> = gos
        .iter()
        .map(|g| g.id)
        .chain(kadence.iter().map(|k| k.id))
        .collect();
    assert_eq!(table, servers, "every Go and kadence server: {stats:?}");
    assert!(node.is_accelerated().await);

    // Closest peers, from the table in one round.
    let done = node
        .run(|dht| Some(dht.get_closest_peers(b"interop accelerated".to_vec())))
        .await;
    assert!(done.stats.accelerated, "{done:?}");
    let QueryResult::ClosestPeers(Ok(peers)) = &done.result else {
        panic!("{done:?}")
    };
    let found: HashSet<PeerId> = peers.iter().map(|p| p.id).collect();
    assert_eq!(found, servers, "a network smaller than k: all of it");

    // Find peer.
    let wanted = gos[5].id;
    let done = node.run(move |dht| Some(dht.find_peer(wanted))).await;
    assert!(done.stats.accelerated, "{done:?}");
    assert!(
        matches!(done.result, QueryResult::FindPeer(Ok(ref p)) if p.id == wanted && p.addrs.contains(&gos[5].addr)),
        "{done:?}"
    );

    // PUT_VALUE from the accelerated node, GET_VALUE by Go; and the other way round.
    let record = pk_record();
    let done = node
        .run({
            let record = record.clone();
            move |dht| dht.put_value(record, None).ok()
        })
        .await;
    assert!(done.stats.accelerated, "{done:?}");
    assert!(
        matches!(done.result, QueryResult::PutValue(Ok(n)) if n >= 1),
        "{done:?}"
    );
    let got = gos[6].ok(&format!("get {}", hex(&record.key))).await;
    assert_eq!(got["value"].as_str().unwrap(), hex(&record.value));

    let record = pk_record();
    gos[2]
        .ok(&format!("put {} {}", hex(&record.key), hex(&record.value)))
        .await;
    let done = node
        .run({
            let key = record.key.clone();
            move |dht| Some(dht.get_value(key, None))
        })
        .await;
    assert!(done.stats.accelerated, "{done:?}");
    assert!(
        matches!(done.result, QueryResult::GetValue(Ok(ref r)) if r.value == record.value),
        "{done:?}"
    );

    // Provide from the accelerated node, found by Go with a usable address.
    let cid = multihash(0xa1);
    let done = node
        .run({
            let cid = cid.clone();
            move |dht| dht.provide(cid).ok()
        })
        .await;
    assert!(done.stats.accelerated, "{done:?}");
    assert!(
        matches!(done.result, QueryResult::Provide(Ok(n)) if n >= 1),
        "{done:?}"
    );
    let found = gos[7].ok(&format!("findprovs {}", hex(&cid))).await;
    let provider = found["providers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["id"].as_str() == Some(&node.id.to_string()))
        .unwrap_or_else(|| panic!("go found the accelerated provider: {found}"));
    assert!(
        provider["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a.as_str() == Some(&node.addr.to_string())),
        "with its address: {provider}"
    );

    // Provide from Go, found from the accelerated node.
    let go_cid = multihash(0xa2);
    gos[3].ok(&format!("provide {}", hex(&go_cid))).await;
    let done = node
        .run(move |dht| Some(dht.find_providers(go_cid, None)))
        .await;
    assert!(done.stats.accelerated, "{done:?}");
    assert!(
        providers_in(&done.progress).contains(&gos[3].id),
        "{done:?}"
    );

    // An ordinary server to Go: a new Go peer that knows only the accelerated node admits it
    // (its FIND_NODE check was answered), finds a peer through it and gets its provider
    // record from it.
    let mut newcomer = GoPeer::start(&binary).await;
    newcomer
        .ok(&format!("connect {}/p2p/{}", node.addr, node.id))
        .await;
    newcomer.wait_in_table(node.id).await;
    let far = gos[1].id;
    let found = newcomer.ok(&format!("findpeer {far}")).await;
    assert!(!found["addrs"].as_array().unwrap().is_empty(), "{found}");
    let found = newcomer.ok(&format!("findprovs {}", hex(&cid))).await;
    assert!(found.to_string().contains(&node.id.to_string()), "{found}");
    let closest = newcomer
        .ok(&format!("closest {}", hex(b"through kadence")))
        .await;
    assert!(go_ids(&closest, "peers").len() >= 5, "{closest}");
    node.drain();
    for request in [MessageType::FindNode, MessageType::GetProviders] {
        assert!(
            node.history.iter().any(|n| matches!(
                n,
                Noted::Inbound { peer, request: r, outcome: InboundOutcome::Answered }
                    if *peer == newcomer.id && *r == request
            )),
            "the accelerated node answered the newcomer's {request:?}"
        );
    }

    node.stop().await;
    newcomer.stop().await;
    for go in gos {
        go.stop().await;
    }
}
