//! IPNS interop with go-libp2p-kad-dht v0.42.2 and boxo's `ipns` package (what Kubo runs), both
//! directions, over 127.0.0.1 TCP on `/ipfs/kad/1.0.0`: records made by either side are stored,
//! resolved and validated by the other with its stock validator; bad records are refused by
//! both; in a mixed network the higher sequence wins everywhere after entry correction.
//! Skipped with a printed reason on a machine without Go; under CI a missing toolchain fails.

mod common;

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::go::{binary, hex, unhex, GoPeer};
use common::net::TestNode;
use kadence::ipns::{self, IpnsError, IpnsRecord};
use kadence::server::ValidationError;
use kadence::{PutValueError, QueryResult, Record, Validators};
use libp2p::identity::Keypair;
use libp2p::PeerId;
use serde_json::Value;

fn amino() -> kadence::Config {
    kadence::Config::amino()
        .with_mode(Some(kadence::Mode::Server))
        .with_query_timeout(Duration::from_secs(30))
        .with_request_timeout(Duration::from_secs(5))
}

/// `gos` Go peers in a chain and `kadences` kadence nodes, each bootstrapped from a Go peer;
/// every Go peer has admitted every kadence node, and both kinds have bootstrapped.
async fn network(binary: &Path, gos: usize, kadences: usize) -> (Vec<GoPeer>, Vec<TestNode>) {
    let mut go_peers: Vec<GoPeer> = Vec::new();
    for i in 0..gos {
        let mut go = GoPeer::start(binary).await;
        if i > 0 {
            let previous = go_peers[i - 1].p2p_addr();
            go.ok(&format!("connect {previous}")).await;
        }
        go_peers.push(go);
    }
    let mut nodes = Vec::new();
    for i in 0..kadences {
        let go = &go_peers[i % gos];
        nodes.push(TestNode::start_tcp(amino(), Some((go.id, go.addr.clone()))).await);
    }
    for node in &nodes {
        node.run(|dht| dht.bootstrap().ok()).await;
    }
    for go in &mut go_peers {
        for node in &nodes {
            go.ok(&format!("connect {}/p2p/{}", node.addr, node.id))
                .await;
            go.wait_in_table(node.id).await;
        }
    }
    for go in &mut go_peers {
        go.ok("bootstrap").await;
    }
    for node in &nodes {
        node.run(|dht| dht.bootstrap().ok()).await;
    }
    (go_peers, nodes)
}

/// A kadence `get_value` of `key`.
async fn get_value(node: &TestNode, key: Vec<u8>) -> Record {
    let outcome = node.run(move |dht| Some(dht.get_value(key, None))).await;
    match outcome.result {
        Some(QueryResult::GetValue {
            result: Ok(record), ..
        }) => record,
        other => panic!("get_value: {other:?}"),
    }
}

/// A kadence `put_value`: the query's result, or the error that refused it before any query.
async fn put_value(node: &TestNode, record: Record) -> Result<QueryResult, PutValueError> {
    let (refused_tx, refused_rx) = tokio::sync::oneshot::channel();
    let outcome = node
        .run(move |dht| match dht.put_value(record, None) {
            Ok(id) => Some(id),
            Err(error) => {
                let _ = refused_tx.send(error);
                None
            }
        })
        .await;
    match outcome.result {
        Some(result) => Ok(result),
        None => Err(refused_rx.await.expect("put_value refused the record")),
    }
}

/// A kadence `put_value` that must succeed: how many peers stored the record.
async fn publish(node: &TestNode, record: Record) -> usize {
    match put_value(node, record).await {
        Ok(QueryResult::PutValue {
            result: Ok(stored), ..
        }) => stored,
        other => panic!("put_value: {other:?}"),
    }
}

fn unix_secs(time: SystemTime) -> i64 {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    i64::try_from(secs).expect("in range")
}

fn name_of(answer: &Value) -> PeerId {
    answer["name"]
        .as_str()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("a peer id as name: {answer}"))
}

fn go_error(answer: &Value) -> &str {
    answer["error"]
        .as_str()
        .unwrap_or_else(|| panic!("go should have refused: {answer}"))
}

/// `encoded` with one bit of its signatureV2 (IpnsEntry field 8) flipped: still a well-formed
/// record, with a wrong signature. Walks the top-level protobuf fields; an IpnsEntry has only
/// varint and length-delimited ones.
fn flip_signature_v2(encoded: &[u8]) -> Vec<u8> {
    fn varint(bytes: &[u8], at: &mut usize) -> u64 {
        let mut value = 0;
        let mut shift = 0;
        loop {
            let byte = bytes[*at];
            *at += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return value;
            }
            shift += 7;
        }
    }
    let mut out = encoded.to_vec();
    let mut at = 0;
    while at < encoded.len() {
        let tag = varint(encoded, &mut at);
        match tag & 7 {
            0 => {
                varint(encoded, &mut at);
            }
            2 => {
                let len = usize::try_from(varint(encoded, &mut at)).expect("a small length");
                if tag >> 3 == 8 {
                    out[at + len / 2] ^= 0x01;
                    return out;
                }
                at += len;
            }
            other => panic!("wire type {other} in an IpnsEntry"),
        }
    }
    panic!("no signatureV2 in the record");
}

/// The sequence of the record each node stores under `key` (`None`: none), each asked with
/// one GET_VALUE by a Go peer other than itself.
async fn held_sequences(
    gos: &mut [GoPeer],
    kadence: &[TestNode],
    key: &[u8],
) -> Vec<(PeerId, Option<u64>)> {
    let mut targets: Vec<(PeerId, libp2p::Multiaddr, usize)> = gos
        .iter()
        .enumerate()
        .map(|(i, go)| (go.id, go.addr.clone(), usize::from(i == 0)))
        .collect();
    targets.extend(kadence.iter().map(|node| (node.id, node.addr.clone(), 0)));
    let mut held = Vec::new();
    for (peer, addr, checker) in targets {
        let stored = gos[checker].stored_at(peer, &addr, key).await;
        let sequence = stored.map(|value| {
            IpnsRecord::decode(&value)
                .expect("a stored IPNS record decodes")
                .sequence()
        });
        held.push((peer, sequence));
    }
    held
}

/// Waits until every node but those of `except` stores the record of `sequence` under `key`
/// (entry correction is sent after the lookup's result, so it may still be on its way).
async fn wait_held_everywhere(
    gos: &mut [GoPeer],
    kadence: &[TestNode],
    key: &[u8],
    sequence: u64,
    except: &[PeerId],
) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let held = held_sequences(gos, kadence, key).await;
        let everywhere = held
            .iter()
            .filter(|(peer, _)| !except.contains(peer))
            .all(|(_, held)| *held == Some(sequence));
        if everywhere {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not every node holds sequence {sequence}: {held:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_publishes_and_kadence_resolves() {
    let Some(binary) = binary() else { return };
    let (mut gos, kadence) = network(&binary, 2, 2).await;

    // The go peer's own name (its ed25519 host key), V1-compatible as boxo makes by default.
    let published = gos[1].ok("ipns-publish /ipfs/bafkqaaa/go 5 3600").await;
    let name = name_of(&published);
    assert_eq!(name, gos[1].id);
    let key = ipns::routing_key(&name);
    assert_eq!(hex(&key), published["key"].as_str().unwrap());
    let got = get_value(&kadence[1], key.clone()).await;
    assert_eq!(got.value, unhex(published["record"].as_str().unwrap()));
    let record = IpnsRecord::decode(&got.value).expect("kadence decodes go's record");
    assert_eq!(record.value(), b"/ipfs/bafkqaaa/go");
    assert_eq!(record.sequence(), 5);
    assert_eq!(record.ttl(), Duration::from_secs(3600));
    assert_eq!(
        unix_secs(record.validity()),
        published["validity_unix"].as_i64().unwrap()
    );
    record
        .verify(&name, SystemTime::now())
        .expect("go's record verifies");

    // Every key type, with and without the V1 fields: published by go, found by kadence,
    // accepted by kadence's own validator.
    for kind in ["ed25519", "secp256k1", "ecdsa", "rsa"] {
        for v2only in [false, true] {
            let signer = gos[0].ok(&format!("genkey {kind}")).await;
            let option = if v2only { "v2only" } else { "" };
            let line = format!(
                "ipns-publish /ipfs/bafkqaaa/{kind} 2 3600 key={} {option}",
                signer["key"].as_str().unwrap()
            );
            let published = gos[0].ok(&line).await;
            let name = name_of(&published);
            let got = get_value(&kadence[0], ipns::routing_key(&name)).await;
            assert_eq!(got.value, unhex(published["record"].as_str().unwrap()));
            Validators::default()
                .validate(&got.key, &got.value)
                .unwrap_or_else(|e| panic!("{kind} v2only={v2only}: {e}"));
            let record = IpnsRecord::decode(&got.value).unwrap();
            record
                .verify(&name, SystemTime::now())
                .unwrap_or_else(|e| panic!("{kind} v2only={v2only}: {e}"));
            assert_eq!(record.value(), format!("/ipfs/bafkqaaa/{kind}").as_bytes());
            assert_eq!(record.sequence(), 2);
        }
    }

    for go in gos {
        go.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kadence_publishes_and_go_resolves() {
    let Some(binary) = binary() else { return };
    let (mut gos, kadence) = network(&binary, 2, 2).await;

    // RSA keys come from go: libp2p-identity cannot generate them, only decode them.
    let rsa = gos[0].ok("genkey rsa").await;
    let rsa = Keypair::from_protobuf_encoding(&unhex(rsa["key"].as_str().unwrap()))
        .expect("kadence decodes go's RSA key");
    let keys = [
        ("ed25519", Keypair::generate_ed25519()),
        ("secp256k1", Keypair::generate_secp256k1()),
        ("ecdsa", Keypair::generate_ecdsa()),
        ("rsa", rsa),
    ];
    for (kind, keypair) in &keys {
        let name = keypair.public().to_peer_id();
        let value = format!("/ipfs/bafkqaaa/{kind}");
        let record = IpnsRecord::builder(value.clone())
            .sequence(7)
            .sign(keypair)
            .unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert!(publish(&kadence[0], record.to_dht_record(&name)).await >= 1);

        // The go peer that did not make the RSA key resolves: it has no public key of these
        // names in its peer store, so RSA and ECDSA records verify only with the key they
        // embed.
        let resolved = gos[1].ok(&format!("ipns-resolve {name}")).await;
        assert_eq!(resolved["value"].as_str(), Some(value.as_str()), "{kind}");
        assert_eq!(resolved["sequence"].as_u64(), Some(7), "{kind}");
        assert_eq!(
            resolved["record"].as_str(),
            Some(hex(&record.encode()).as_str()),
            "{kind}"
        );
        assert_eq!(
            resolved["validity_unix"].as_i64(),
            Some(unix_secs(record.validity())),
            "{kind}"
        );
        assert_eq!(resolved["ttl_secs"].as_u64(), Some(3600), "{kind}");

        // And boxo's validator, through the DHT's, on records it was only handed, V1-compatible
        // or not.
        for v1 in [true, false] {
            let record = IpnsRecord::builder(value.clone())
                .sequence(8)
                .v1_compatible(v1)
                .sign(keypair)
                .unwrap();
            let line = format!(
                "ipns-validate {} {}",
                hex(&ipns::routing_key(&name)),
                hex(&record.encode())
            );
            let checked = gos[1].cmd(&line).await;
            assert_eq!(checked["ok"], true, "{kind} v1={v1}: {checked}");
        }
    }

    for go in gos {
        go.stop().await;
    }
}

/// Checks that every part of the network refuses `value` under `key`: go's validator, go's
/// PutValue, a go server and a kadence server (PUT_VALUE from go), kadence's put_value; and
/// that no node stores it. `go_reason` is part of go's error.
async fn refused_by_both(
    gos: &mut [GoPeer],
    kadence: &[TestNode],
    key: &[u8],
    value: &[u8],
    go_reason: &str,
) {
    let checked = gos[0]
        .cmd(&format!("ipns-validate {} {}", hex(key), hex(value)))
        .await;
    assert!(go_error(&checked).contains(go_reason), "{checked}");
    let put = gos[0]
        .cmd(&format!("put {} {}", hex(key), hex(value)))
        .await;
    assert!(go_error(&put).contains(go_reason), "{put}");
    for (peer, addr) in [
        (gos[0].id, gos[0].addr.clone()),
        (kadence[0].id, kadence[0].addr.clone()),
    ] {
        gos[1].ok(&format!("connect {addr}/p2p/{peer}")).await;
        let sent = gos[1]
            .cmd(&format!("put-to {peer} {} {}", hex(key), hex(value)))
            .await;
        go_error(&sent);
    }
    let record = Record {
        key: key.to_vec(),
        value: value.to_vec(),
        time_received: String::new(),
    };
    let refused = put_value(&kadence[1], record).await;
    assert!(
        matches!(
            refused,
            Err(PutValueError::Invalid(ValidationError::Ipns(_)))
        ),
        "{refused:?}"
    );
    for (peer, stored) in held_sequences(gos, kadence, key).await {
        assert_eq!(stored, None, "{peer} stored a refused record");
    }
}

/// A record the go peer makes with `command`: its name and bytes, after checking that
/// kadence's `verify` refuses it with `expected`.
async fn go_made_refused(
    go: &mut GoPeer,
    command: &str,
    now: SystemTime,
    expected: IpnsError,
) -> (PeerId, Vec<u8>) {
    let made = go.ok(command).await;
    let name = name_of(&made);
    let value = unhex(made["record"].as_str().unwrap());
    let decoded = IpnsRecord::decode(&value).expect("well-formed");
    assert_eq!(decoded.verify(&name, now), Err(expected));
    (name, value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_refused_by_both() {
    let Some(binary) = binary() else { return };
    let (mut gos, kadence) = network(&binary, 2, 2).await;
    let now = SystemTime::now();

    // Expired, made by go: kadence's verify says so, and nobody takes it.
    let (go_name, value) = go_made_refused(
        &mut gos[0],
        "ipns-record /ipfs/bafkqaaa/old 1 3600 expired",
        now,
        IpnsError::Expired,
    )
    .await;
    refused_by_both(
        &mut gos,
        &kadence,
        &ipns::routing_key(&go_name),
        &value,
        "expired",
    )
    .await;

    // Expired, made by kadence.
    let keypair = Keypair::generate_ed25519();
    let kadence_name = keypair.public().to_peer_id();
    let expired = IpnsRecord::builder("/ipfs/bafkqaaa/old")
        .sequence(1)
        .valid_until(now - Duration::from_secs(3600))
        .sign(&keypair)
        .unwrap();
    assert!(matches!(
        expired.verify(&kadence_name, now),
        Err(IpnsError::Expired)
    ));
    refused_by_both(
        &mut gos,
        &kadence,
        &ipns::routing_key(&kadence_name),
        &expired.encode(),
        "expired",
    )
    .await;

    // A flipped bit in signatureV2, made by go.
    let (go_name, value) = go_made_refused(
        &mut gos[0],
        "ipns-record /ipfs/bafkqaaa/bad 1 3600 badsig",
        now,
        IpnsError::BadSignature,
    )
    .await;
    refused_by_both(
        &mut gos,
        &kadence,
        &ipns::routing_key(&go_name),
        &value,
        "signature verification failed",
    )
    .await;

    // The same, made by kadence; and a record signed by another key than the name's.
    let record = IpnsRecord::builder("/ipfs/bafkqaaa/bad")
        .sequence(1)
        .sign(&keypair)
        .unwrap();
    let forged = flip_signature_v2(&record.encode());
    let decoded = IpnsRecord::decode(&forged).expect("well-formed");
    assert!(matches!(
        decoded.verify(&kadence_name, now),
        Err(IpnsError::BadSignature)
    ));
    refused_by_both(
        &mut gos,
        &kadence,
        &ipns::routing_key(&kadence_name),
        &forged,
        "signature verification failed",
    )
    .await;
    let impostor = IpnsRecord::builder("/ipfs/bafkqaaa/bad")
        .sequence(1)
        .sign(&Keypair::generate_ed25519())
        .unwrap();
    assert_eq!(
        impostor.verify(&kadence_name, now),
        Err(IpnsError::BadSignature)
    );
    refused_by_both(
        &mut gos,
        &kadence,
        &ipns::routing_key(&kadence_name),
        &impostor.encode(),
        "signature verification failed",
    )
    .await;

    // A lower sequence than the one stored: kadence publishes sequence 5 everywhere...
    let key = ipns::routing_key(&kadence_name);
    let newer = IpnsRecord::builder("/ipfs/bafkqaaa/5")
        .sequence(5)
        .sign(&keypair)
        .unwrap();
    publish(&kadence[0], newer.to_dht_record(&kadence_name)).await;
    wait_held_everywhere(&mut gos, &kadence, &key, 5, &[]).await;
    // ...then sequence 4, valid in itself, is refused by everyone who holds 5.
    let older = IpnsRecord::builder("/ipfs/bafkqaaa/4")
        .sequence(4)
        .sign(&keypair)
        .unwrap();
    older.verify(&kadence_name, now).expect("valid in itself");
    let checked = gos[0]
        .cmd(&format!(
            "ipns-validate {} {}",
            hex(&key),
            hex(&older.encode())
        ))
        .await;
    assert_eq!(checked["ok"], true, "{checked}");
    for node in &kadence {
        let refused = put_value(node, older.to_dht_record(&kadence_name)).await;
        assert!(
            matches!(refused, Err(PutValueError::Outdated)),
            "{refused:?}"
        );
    }
    let put = gos[0]
        .cmd(&format!("put {} {}", hex(&key), hex(&older.encode())))
        .await;
    assert!(
        go_error(&put).contains("can't replace a newer value"),
        "{put}"
    );
    for (peer, addr) in [
        (gos[0].id, gos[0].addr.clone()),
        (kadence[0].id, kadence[0].addr.clone()),
        (kadence[1].id, kadence[1].addr.clone()),
    ] {
        gos[1].ok(&format!("connect {addr}/p2p/{peer}")).await;
        let sent = gos[1]
            .cmd(&format!(
                "put-to {peer} {} {}",
                hex(&key),
                hex(&older.encode())
            ))
            .await;
        go_error(&sent);
    }
    for (peer, held) in held_sequences(&mut gos, &kadence, &key).await {
        assert_eq!(held, Some(5), "{peer}");
    }

    for go in gos {
        go.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_agrees_with_go() {
    let Some(binary) = binary() else { return };
    let mut go = GoPeer::start(&binary).await;
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let key = ipns::routing_key(&name);
    let eol = SystemTime::now() + Duration::from_secs(3600);
    let make = |sequence: u64, eol: SystemTime, value: &str, v1: bool| {
        IpnsRecord::builder(value)
            .sequence(sequence)
            .valid_until(eol)
            .v1_compatible(v1)
            .sign(&keypair)
            .unwrap()
            .encode()
    };
    // Sequence first, then the later EOL, then (equal in both) go's byte-wise tie-break.
    let records = [
        make(1, eol + Duration::from_secs(600), "/ipfs/bafkqaaa/a", true),
        make(2, eol, "/ipfs/bafkqaaa/b", true),
        make(2, eol + Duration::from_secs(60), "/ipfs/bafkqaaa/c", true),
        make(2, eol + Duration::from_secs(60), "/ipfs/bafkqaaa/d", false),
        make(2, eol + Duration::from_secs(60), "/ipfs/bafkqaaa/e", true),
    ];
    let validators = Validators::default();
    let mut sets: Vec<Vec<usize>> = Vec::new();
    for i in 0..records.len() {
        for j in 0..records.len() {
            if i != j {
                sets.push(vec![i, j]);
            }
        }
    }
    sets.push((0..records.len()).collect());
    sets.push((0..records.len()).rev().collect());
    for set in sets {
        let values: Vec<&[u8]> = set.iter().map(|&i| records[i].as_slice()).collect();
        let line = format!(
            "select {} {}",
            hex(&key),
            values.iter().map(|v| hex(v)).collect::<Vec<_>>().join(" ")
        );
        let go_choice = go.ok(&line).await["index"].as_u64().unwrap();
        let kadence_choice = validators.select(&key, &values).unwrap();
        assert_eq!(
            kadence_choice as u64, go_choice,
            "records {set:?}: kadence chose {kadence_choice}, go {go_choice}"
        );
    }
    go.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_higher_sequence_wins_everywhere_after_entry_correction() {
    let Some(binary) = binary() else { return };
    let (mut gos, kadence) = network(&binary, 4, 4).await;
    let keypair = Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let key = ipns::routing_key(&name);
    // Go signs with the same key: one name, records from both implementations.
    let go_key = hex(&keypair.to_protobuf_encoding().unwrap());

    // Sequence 1 everywhere.
    let first = IpnsRecord::builder("/ipfs/bafkqaaa/1")
        .sequence(1)
        .sign(&keypair)
        .unwrap();
    publish(&kadence[0], first.to_dht_record(&name)).await;
    wait_held_everywhere(&mut gos, &kadence, &key, 1, &[]).await;

    // Go's sequence 2 only at one go and one kadence node; a kadence node that holds 1 looks
    // the name up: it gets 2, and corrects the nodes that answered 1.
    let second = gos[0]
        .ok(&format!("ipns-record /ipfs/bafkqaaa/2 2 3600 key={go_key}"))
        .await;
    let second = second["record"].as_str().unwrap().to_string();
    for (peer, addr) in [
        (gos[1].id, gos[1].addr.clone()),
        (kadence[1].id, kadence[1].addr.clone()),
    ] {
        gos[0].ok(&format!("connect {addr}/p2p/{peer}")).await;
        gos[0]
            .ok(&format!("put-to {peer} {} {second}", hex(&key)))
            .await;
    }
    let held = held_sequences(&mut gos, &kadence, &key).await;
    assert_eq!(
        held.iter().filter(|(_, s)| *s == Some(2)).count(),
        2,
        "{held:?}"
    );
    let got = get_value(&kadence[2], key.clone()).await;
    assert_eq!(got.value, unhex(&second));
    assert_eq!(IpnsRecord::decode(&got.value).unwrap().sequence(), 2);
    // All but the querier: entry correction goes to the peers of the lookup, and a node's
    // lookup never lists itself, in go as in kadence; its own store keeps 1 until go's
    // correction below reaches it.
    wait_held_everywhere(&mut gos, &kadence, &key, 2, &[kadence[2].id]).await;

    // The other way: kadence's sequence 3 only at one kadence and one go node; a go node
    // resolves it and corrects the others, kadence servers included (the querier above too).
    let third = IpnsRecord::builder("/ipfs/bafkqaaa/3")
        .sequence(3)
        .sign(&keypair)
        .unwrap();
    for (peer, addr) in [
        (kadence[3].id, kadence[3].addr.clone()),
        (gos[3].id, gos[3].addr.clone()),
    ] {
        gos[0].ok(&format!("connect {addr}/p2p/{peer}")).await;
        gos[0]
            .ok(&format!(
                "put-to {peer} {} {}",
                hex(&key),
                hex(&third.encode())
            ))
            .await;
    }
    let resolved = gos[2].ok(&format!("ipns-resolve {name}")).await;
    assert_eq!(resolved["sequence"].as_u64(), Some(3), "{resolved}");
    let resolver = gos[2].id;
    wait_held_everywhere(&mut gos, &kadence, &key, 3, &[resolver]).await;

    for go in gos {
        go.stop().await;
    }
}
