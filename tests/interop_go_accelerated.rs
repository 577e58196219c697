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

use common::go::{amino_config, binary, hex, multihash, GoPeer};
use common::net::TestNode;
use common::pk_record;
use helpers::{in_memory, Noted, Peer};
use kadence::{AcceleratedConfig, InboundOutcome, MessageType, QueryResult};
use libp2p::identity::Keypair;
use libp2p::PeerId;

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
        kadence.push(TestNode::start_tcp(amino_config(), Some((go.id, go.addr.clone()))).await);
    }
    for go in &mut gos {
        go.ok("bootstrap").await;
    }
    for node in &kadence {
        node.run(|dht| dht.bootstrap().ok()).await;
    }

    // The accelerated node joins through one Go peer and crawls everyone.
    let config = amino_config().with_accelerated(Some(AcceleratedConfig {
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
        .run_accelerated(|dht| Some(dht.get_closest_peers(b"interop accelerated".to_vec())))
        .await;
    let QueryResult::ClosestPeers {
        result: Ok(peers), ..
    } = &done.result
    else {
        panic!("{done:?}")
    };
    let found: HashSet<PeerId> = peers.iter().map(|p| p.id).collect();
    assert_eq!(found, servers, "a network smaller than k: all of it");

    // Find peer.
    let wanted = gos[5].id;
    let addrs = node.accelerated_find_peer(wanted).await;
    assert!(addrs.contains(&gos[5].addr), "{addrs:?}");

    // PUT_VALUE from the accelerated node, GET_VALUE by Go; and the other way round.
    let record = pk_record();
    assert!(node.accelerated_put_value(record.clone()).await >= 1);
    let got = gos[6].ok(&format!("get {}", hex(&record.key))).await;
    assert_eq!(got["value"].as_str().unwrap(), hex(&record.value));

    let record = pk_record();
    gos[2]
        .ok(&format!("put {} {}", hex(&record.key), hex(&record.value)))
        .await;
    let value = node.accelerated_get_value(record.key.clone(), None).await;
    assert_eq!(value, record.value);

    // Provide from the accelerated node, found by Go with a usable address.
    let cid = multihash(0xa1);
    assert!(node.accelerated_provide(cid.clone()).await >= 1);
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
    node.accelerated_find_provider(go_cid, gos[3].id).await;

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
