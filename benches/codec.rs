//! Encode and decode of the two largest common messages: a FIND_NODE response with 20 peers of
//! 4 addresses each, and a GET_PROVIDERS response with 20 providers and 20 closer peers.
//!
//! `cargo bench --bench codec`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kadence::network::message::{decode_response, encode_response, Limits};
use kadence::{ConnectionType, PeerRecord, Response};
use libp2p::{Multiaddr, PeerId};

fn peers(n: usize) -> Vec<PeerRecord> {
    (0..n)
        .map(|i| PeerRecord {
            id: PeerId::random(),
            addrs: [
                format!("/ip4/203.0.113.{i}/tcp/4001"),
                format!("/ip4/203.0.113.{i}/udp/4001/quic-v1"),
                format!("/ip6/2001:db8::{i:x}/tcp/4001"),
                format!("/ip6/2001:db8::{i:x}/udp/4001/quic-v1"),
            ]
            .iter()
            .map(|a| a.parse::<Multiaddr>().unwrap())
            .collect(),
            connection: ConnectionType::Connected,
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let key = PeerId::random().to_bytes();
    let cases = [
        (
            "find_node_20x4",
            Response::FindNode {
                closer_peers: peers(20),
            },
        ),
        (
            "get_providers_20+20",
            Response::GetProviders {
                providers: peers(20),
                closer_peers: peers(20),
            },
        ),
    ];
    let limits = Limits::default();
    let mut group = c.benchmark_group("codec");
    group.throughput(Throughput::Elements(1));
    for (name, response) in &cases {
        let bytes = encode_response(response, &key);
        group.bench_function(format!("encode/{name}"), |b| {
            b.iter(|| encode_response(std::hint::black_box(response), &key))
        });
        group.bench_function(format!("decode/{name}"), |b| {
            b.iter(|| {
                decode_response(
                    std::hint::black_box(&bytes),
                    response.message_type(),
                    &limits,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
