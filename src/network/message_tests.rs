use std::borrow::Cow;

use libp2p::{Multiaddr, PeerId};
use proptest::prelude::*;
use quick_protobuf::{MessageWrite, Writer};

use super::*;
use crate::proto::pb;

fn peer(addrs: &[&str]) -> PeerRecord {
    PeerRecord {
        id: PeerId::random(),
        addrs: addrs.iter().map(|a| a.parse().unwrap()).collect(),
        connection: ConnectionType::Connected,
    }
}

fn record(key: &[u8]) -> Record {
    Record {
        key: key.to_vec(),
        value: b"value".to_vec(),
        time_received: "2026-11-25T14:00:00Z".into(),
    }
}

fn all_requests() -> Vec<Request> {
    vec![
        Request::FindNode {
            key: b"target".to_vec(),
        },
        Request::GetValue {
            key: b"/pk/abc".to_vec(),
        },
        Request::PutValue {
            record: record(b"/pk/abc"),
        },
        Request::AddProvider {
            key: vec![0x12, 0x20, 1, 2, 3],
            providers: vec![peer(&["/ip4/127.0.0.1/tcp/4001"])],
        },
        Request::GetProviders {
            key: vec![0x12, 0x20, 1, 2, 3],
        },
        Request::Ping,
    ]
}

fn all_responses() -> Vec<Response> {
    vec![
        Response::FindNode {
            closer_peers: vec![peer(&["/ip4/1.2.3.4/tcp/1"]), peer(&[])],
        },
        Response::GetValue {
            record: Some(record(b"/pk/abc")),
            closer_peers: vec![peer(&["/ip6/::1/udp/4001/quic-v1"])],
        },
        Response::GetValue {
            record: None,
            closer_peers: vec![],
        },
        Response::PutValue {
            record: record(b"/pk/abc"),
        },
        Response::GetProviders {
            providers: vec![peer(&["/dns4/example.com/tcp/443/wss"])],
            closer_peers: vec![peer(&["/ip4/1.2.3.4/tcp/1"])],
        },
        Response::Ping,
    ]
}

fn raw(msg: &pb::Message<'_>) -> Vec<u8> {
    let mut buf = Vec::new();
    msg.write_message(&mut Writer::new(&mut buf)).unwrap();
    buf
}

fn limits() -> Limits {
    Limits::default()
}

#[test]
fn every_request_round_trips() {
    for request in all_requests() {
        let bytes = encode_request(&request);
        assert_eq!(decode_request(&bytes, &limits()).unwrap(), request);
    }
}

#[test]
fn every_response_round_trips() {
    for response in all_responses() {
        let bytes = encode_response(&response, b"key");
        let decoded = decode_response(&bytes, response.message_type(), &limits()).unwrap();
        assert_eq!(decoded, response);
    }
}

#[test]
fn unknown_type_is_rejected() {
    let bytes = raw(&pb::Message {
        type_pb: 6,
        key: Cow::Borrowed(b"k"),
        ..Default::default()
    });
    assert!(matches!(
        decode_request(&bytes, &limits()),
        Err(MessageError::UnknownType(6))
    ));
    assert!(matches!(
        decode_response(&bytes, MessageType::FindNode, &limits()),
        Err(MessageError::UnknownType(6))
    ));
}

#[test]
fn missing_fields_are_rejected() {
    for kind in [1, 2, 3, 4] {
        let bytes = raw(&pb::Message {
            type_pb: kind,
            ..Default::default()
        });
        assert!(
            matches!(
                decode_request(&bytes, &limits()),
                Err(MessageError::MissingField { field: "key", .. })
            ),
            "type {kind}"
        );
    }
    // PUT_VALUE without a record.
    let bytes = raw(&pb::Message {
        type_pb: 0,
        key: Cow::Borrowed(b"/pk/a"),
        ..Default::default()
    });
    assert!(matches!(
        decode_request(&bytes, &limits()),
        Err(MessageError::MissingField {
            field: "record",
            ..
        })
    ));
    // ADD_PROVIDER without a usable provider.
    let bytes = raw(&pb::Message {
        type_pb: 2,
        key: Cow::Borrowed(b"k"),
        providerPeers: vec![pb::mod_Message::Peer {
            id: Cow::Borrowed(b"not a peer id"),
            ..Default::default()
        }],
        ..Default::default()
    });
    assert!(matches!(
        decode_request(&bytes, &limits()),
        Err(MessageError::MissingField {
            field: "providerPeers",
            ..
        })
    ));
    // A PUT_VALUE response without its echoed record.
    let bytes = raw(&pb::Message::default());
    assert!(matches!(
        decode_response(&bytes, MessageType::PutValue, &limits()),
        Err(MessageError::MissingField {
            field: "record",
            ..
        })
    ));
}

#[test]
fn put_value_key_must_match_record_key() {
    let rec = record(b"/pk/abc");
    let bytes = raw(&pb::Message {
        type_pb: 0,
        key: Cow::Borrowed(b"/pk/other"),
        record: Some(pb::Record {
            key: Cow::Borrowed(&rec.key),
            value: Cow::Borrowed(&rec.value),
            timeReceived: Cow::Borrowed(""),
        }),
        ..Default::default()
    });
    assert!(matches!(
        decode_request(&bytes, &limits()),
        Err(MessageError::KeyMismatch)
    ));
}

#[test]
fn provider_keys_over_the_limit_are_rejected() {
    let long = vec![7u8; 81];
    for request in [
        Request::GetProviders { key: long.clone() },
        Request::AddProvider {
            key: long.clone(),
            providers: vec![peer(&["/ip4/127.0.0.1/tcp/1"])],
        },
    ] {
        let bytes = encode_request(&request);
        assert!(matches!(
            decode_request(&bytes, &limits()),
            Err(MessageError::ProviderKeyTooLong { len: 81, max: 80 })
        ));
    }
    // Exactly 80 bytes is fine.
    let bytes = encode_request(&Request::GetProviders { key: vec![7u8; 80] });
    assert!(decode_request(&bytes, &limits()).is_ok());
    // FIND_NODE keys are not provider keys: no such limit.
    let bytes = encode_request(&Request::FindNode { key: long });
    assert!(decode_request(&bytes, &limits()).is_ok());
}

#[test]
fn response_of_the_wrong_type_is_rejected() {
    let bytes = encode_response(&Response::Ping, b"");
    assert!(matches!(
        decode_response(&bytes, MessageType::FindNode, &limits()),
        Err(MessageError::UnexpectedResponseType {
            expected: MessageType::FindNode,
            actual: MessageType::Ping
        })
    ));
}

#[test]
fn garbage_is_a_protobuf_error() {
    assert!(matches!(
        decode_request(&[0x0a, 0xff, 0xff], &limits()),
        Err(MessageError::Wire(_))
    ));
}

#[test]
fn bad_peer_entries_are_cleaned_and_the_message_survives() {
    let good = PeerId::random();
    let addr: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().unwrap();
    let other: Multiaddr = "/ip4/10.0.0.2/tcp/4001".parse().unwrap();
    let good_bytes = good.to_bytes();
    let addr_bytes = addr.to_vec();
    let other_bytes = other.to_vec();
    let bytes = raw(&pb::Message {
        type_pb: 4,
        key: Cow::Borrowed(b"k"),
        closerPeers: vec![
            // Invalid id: skipped.
            pb::mod_Message::Peer {
                id: Cow::Borrowed(b"\x00garbage"),
                addrs: vec![Cow::Borrowed(&addr_bytes)],
                ..Default::default()
            },
            // Invalid and duplicate addresses: dropped.
            pb::mod_Message::Peer {
                id: Cow::Borrowed(&good_bytes),
                addrs: vec![
                    Cow::Borrowed(&addr_bytes),
                    Cow::Borrowed(b"\xff\xff\xff"),
                    Cow::Borrowed(&addr_bytes),
                    Cow::Borrowed(&other_bytes),
                ],
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let Response::FindNode { closer_peers } =
        decode_response(&bytes, MessageType::FindNode, &limits()).unwrap()
    else {
        panic!("wrong variant")
    };
    assert_eq!(closer_peers.len(), 1);
    assert_eq!(closer_peers[0].id, good);
    assert_eq!(closer_peers[0].addrs, vec![addr, other]);
}

#[test]
fn peer_entry_addresses_are_capped_to_the_entry_size() {
    let id = PeerId::random();
    let addrs: Vec<Multiaddr> = (0..2000u16)
        .map(|i| {
            format!("/ip4/10.0.{}.{}/tcp/{}", i / 256, i % 256, 1000 + i)
                .parse()
                .unwrap()
        })
        .collect();
    let encoded = Response::FindNode {
        closer_peers: vec![
            PeerRecord {
                id,
                addrs: addrs.clone(),
                connection: ConnectionType::NotConnected,
            },
            peer(&["/ip4/1.1.1.1/tcp/1"]),
        ],
    };
    let bytes = encode_response(&encoded, b"k");
    let Response::FindNode { closer_peers } =
        decode_response(&bytes, MessageType::FindNode, &limits()).unwrap()
    else {
        panic!("wrong variant")
    };
    assert_eq!(closer_peers.len(), 2, "the rest of the message survives");
    let kept = &closer_peers[0];
    let size: usize = id.to_bytes().len() + kept.addrs.iter().map(|a| a.len()).sum::<usize>();
    assert!(size <= 8 * 1024, "entry of {size} bytes");
    assert!(kept.addrs.len() > 900 && kept.addrs.len() < 2000);
    assert_eq!(
        kept.addrs[..],
        addrs[..kept.addrs.len()],
        "the first ones are kept"
    );
}

#[test]
fn unknown_fields_are_ignored() {
    // A rust-libp2p record carries publisher (666) and ttl (777).
    let mut bytes = encode_request(&Request::PutValue {
        record: record(b"/pk/x"),
    });
    // Append an unknown varint field 99 to the message: tag (99 << 3) | 0.
    bytes.extend_from_slice(&[0x98, 0x06, 0x01]);
    assert!(decode_request(&bytes, &limits()).is_ok());
}

fn arb_peer() -> impl Strategy<Value = PeerRecord> {
    (
        prop::collection::vec((any::<[u8; 4]>(), any::<u16>()), 0..4),
        0..4u8,
    )
        .prop_map(|(addrs, conn)| {
            let mut seen = std::collections::HashSet::new();
            let addrs = addrs
                .into_iter()
                .map(|(ip, port)| {
                    format!("/ip4/{}.{}.{}.{}/tcp/{port}", ip[0], ip[1], ip[2], ip[3])
                        .parse::<Multiaddr>()
                        .unwrap()
                })
                .filter(|a| seen.insert(a.clone()))
                .collect();
            PeerRecord {
                id: PeerId::random(),
                addrs,
                connection: match conn {
                    0 => ConnectionType::NotConnected,
                    1 => ConnectionType::Connected,
                    2 => ConnectionType::CanConnect,
                    _ => ConnectionType::CannotConnect,
                },
            }
        })
}

fn arb_key() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 1..80)
}

fn arb_record() -> impl Strategy<Value = Record> {
    (
        arb_key(),
        prop::collection::vec(any::<u8>(), 0..64),
        "[ -~]{0,30}",
    )
        .prop_map(|(key, value, time_received)| Record {
            key,
            value,
            time_received,
        })
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        arb_key().prop_map(|key| Request::FindNode { key }),
        arb_key().prop_map(|key| Request::GetValue { key }),
        arb_key().prop_map(|key| Request::GetProviders { key }),
        arb_record().prop_map(|record| Request::PutValue { record }),
        (arb_key(), prop::collection::vec(arb_peer(), 1..3))
            .prop_map(|(key, providers)| Request::AddProvider { key, providers }),
        Just(Request::Ping),
    ]
}

fn arb_response() -> impl Strategy<Value = Response> {
    let peers = || prop::collection::vec(arb_peer(), 0..20);
    prop_oneof![
        peers().prop_map(|closer_peers| Response::FindNode { closer_peers }),
        (prop::option::of(arb_record()), peers()).prop_map(|(record, closer_peers)| {
            Response::GetValue {
                record,
                closer_peers,
            }
        }),
        arb_record().prop_map(|record| Response::PutValue { record }),
        (peers(), peers()).prop_map(|(providers, closer_peers)| Response::GetProviders {
            providers,
            closer_peers
        }),
        Just(Response::Ping),
    ]
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(&bytes, &limits());
        for kind in [MessageType::FindNode, MessageType::GetValue, MessageType::PutValue,
                     MessageType::GetProviders, MessageType::Ping, MessageType::AddProvider] {
            let _ = decode_response(&bytes, kind, &limits());
        }
    }

    #[test]
    fn valid_requests_round_trip(request in arb_request()) {
        let bytes = encode_request(&request);
        prop_assert_eq!(decode_request(&bytes, &limits()).unwrap(), request);
    }

    #[test]
    fn valid_responses_round_trip(response in arb_response(), key in arb_key()) {
        let bytes = encode_response(&response, &key);
        let decoded = decode_response(&bytes, response.message_type(), &limits()).unwrap();
        prop_assert_eq!(decoded, response);
    }

    #[test]
    fn mutated_valid_messages_never_panic(request in arb_request(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut bytes = encode_request(&request);
        for (i, b) in flips {
            let i = i.index(bytes.len().max(1));
            if let Some(slot) = bytes.get_mut(i) { *slot ^= b; }
        }
        let _ = decode_request(&bytes, &limits());
    }
}

/// Regression: found by `mutated_valid_messages_never_panic`. A varint inside a nested Peer that
/// runs past the Peer's end made quick-protobuf 0.8 underflow (a panic in debug builds).
#[test]
fn nested_field_running_past_its_message_is_rejected_not_a_panic() {
    // ADD_PROVIDER, key "k", providerPeers of 2 bytes: a `connection` varint cut after 0x80,
    // continued by the outer message's next byte.
    let bytes = [0x08, 0x02, 0x12, 0x01, b'k', 0x4a, 0x02, 0x18, 0x80, 0x01];
    assert!(matches!(
        decode_request(&bytes, &limits()),
        Err(MessageError::Wire(_))
    ));
}

/// Regression (interop with libp2p-kad 0.49): it appends `/p2p/<id>` to every address of a
/// `Peer` entry. The suffix is stripped, so the same address from go and from Rust is one.
#[test]
fn trailing_own_peer_id_is_stripped_and_foreign_one_dropped() {
    let id = PeerId::random();
    let plain: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
    let own = plain.clone().with(libp2p::multiaddr::Protocol::P2p(id));
    let foreign = plain
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(PeerId::random()));
    let relayed: Multiaddr = format!("/ip4/1.2.3.4/tcp/1/p2p/{}/p2p-circuit", PeerId::random())
        .parse()
        .unwrap();
    let response = Response::FindNode {
        closer_peers: vec![PeerRecord {
            id,
            addrs: vec![own, plain.clone(), foreign, relayed.clone()],
            connection: ConnectionType::Connected,
        }],
    };
    let bytes = encode_response(&response, b"k");
    let Response::FindNode { closer_peers } =
        decode_response(&bytes, MessageType::FindNode, &limits()).unwrap()
    else {
        panic!("wrong variant")
    };
    assert_eq!(closer_peers[0].addrs, vec![plain, relayed]);
}

proptest! {
    /// The decoder's shortcuts (a byte scan for `/p2p/`, linear de-duplication of the first
    /// few addresses) keep exactly what the plain rule keeps: every address once, in order,
    /// with the entry's own `/p2p/` suffix stripped and addresses naming another peer dropped.
    #[test]
    fn entry_addresses_are_cleaned_as_the_plain_rule_says(
        picks in prop::collection::vec((0..12usize, 0..3u8), 0..40),
    ) {
        let id = PeerId::random();
        let other = PeerId::random();
        // A small pool, so duplicates are common and entries cross the linear limit.
        let pool: Vec<Multiaddr> = (0..12u16)
            .map(|i| format!("/ip4/10.0.0.{i}/tcp/{}", 4000 + i).parse().unwrap())
            .collect();
        let sent: Vec<Multiaddr> = picks
            .iter()
            .map(|&(i, suffix)| match suffix {
                0 => pool[i].clone(),
                1 => pool[i].clone().with(libp2p::multiaddr::Protocol::P2p(id)),
                _ => pool[i].clone().with(libp2p::multiaddr::Protocol::P2p(other)),
            })
            .collect();
        let mut expected: Vec<Multiaddr> = Vec::new();
        for addr in &sent {
            let mut addr = addr.clone();
            match addr.iter().last() {
                Some(libp2p::multiaddr::Protocol::P2p(p)) if p == other => continue,
                Some(libp2p::multiaddr::Protocol::P2p(_)) => { addr.pop(); }
                _ => {}
            }
            if !expected.contains(&addr) {
                expected.push(addr);
            }
        }
        let bytes = encode_response(
            &Response::FindNode {
                closer_peers: vec![PeerRecord { id, addrs: sent, connection: ConnectionType::Connected }],
            },
            b"k",
        );
        let Response::FindNode { closer_peers } =
            decode_response(&bytes, MessageType::FindNode, &limits()).unwrap()
        else {
            panic!("wrong variant")
        };
        prop_assert_eq!(&closer_peers[0].addrs, &expected);
    }
}

/// The frame as the generated writer and the codec would make it, for comparison.
fn framed_by_the_generated_writer(response: &Response, key: &[u8]) -> Vec<u8> {
    let body = encode_response(response, key);
    let mut prefix = unsigned_varint::encode::u64_buffer();
    let mut frame = unsigned_varint::encode::u64(body.len() as u64, &mut prefix).to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn response_frames_are_those_of_the_generated_writer() {
    for response in all_responses() {
        for key in [&b"key"[..], b""] {
            assert_eq!(
                encode_response_frame(&response, key),
                framed_by_the_generated_writer(&response, key),
                "{response:?}"
            );
        }
    }
    // A body past 127 bytes takes a two-byte prefix, past 16 KiB a three-byte one.
    let big = Response::FindNode {
        closer_peers: (0..500)
            .map(|i| peer(&[&format!("/ip4/1.2.3.4/tcp/{i}")]))
            .collect(),
    };
    assert_eq!(
        encode_response_frame(&big, b"k"),
        framed_by_the_generated_writer(&big, b"k")
    );
}

proptest! {
    #[test]
    fn arbitrary_response_frames_are_those_of_the_generated_writer(
        response in arb_response(),
        key in prop::collection::vec(any::<u8>(), 0..80),
    ) {
        prop_assert_eq!(
            encode_response_frame(&response, &key),
            framed_by_the_generated_writer(&response, &key)
        );
    }
}
