//! Memory per known peer: the heap a full table holds for random peers with a kubo server's
//! addresses, and the heap of a copy of a crawled table.

use std::time::Instant;

use kadence::{FullTable, FullTableConfig, RoutingTable};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;

use crate::counting_alloc::{self, live};
use crate::report::Report;
use crate::Rng;

/// A kubo server's addresses at `ip`, the first `count` of them: TCP and QUIC, then
/// WebTransport (two certificate hashes) and WebRTC, then the same over IPv6.
pub fn addresses(rng: &mut Rng, count: usize) -> Vec<Multiaddr> {
    let ip4 = std::net::Ipv4Addr::from(rng.next() as u32);
    let ip6 = std::net::Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
    let mut hash = || {
        let digest = rng.bytes();
        Protocol::Certhash(libp2p::multihash::Multihash::wrap(0x12, &digest).expect("32 bytes"))
    };
    let (h1, h2, h3) = (hash(), hash(), hash());
    let mut all = Vec::new();
    for ip in [Protocol::Ip4(ip4), Protocol::Ip6(ip6)] {
        let at = Multiaddr::empty().with(ip);
        let udp = at.clone().with(Protocol::Udp(4001));
        all.push(at.with(Protocol::Tcp(4001)));
        all.push(udp.clone().with(Protocol::QuicV1));
        all.push(
            udp.clone()
                .with(Protocol::QuicV1)
                .with(Protocol::WebTransport)
                .with(h1.clone())
                .with(h2.clone()),
        );
        all.push(udp.with(Protocol::WebRTCDirect).with(h3.clone()));
    }
    // 2 addresses: TCP and QUIC over IPv4.
    all.truncate(count);
    all
}

/// Heap held by a full table of `peers` random peers of `addrs` addresses each:
/// (bytes held, peak while filling, encoded address bytes).
pub fn table_heap(peers: usize, addrs: usize, seed: u64) -> (isize, isize, usize) {
    let mut rng = Rng(seed);
    let before = live();
    counting_alloc::reset_peak();
    let mut table = FullTable::new(PeerId::random(), FullTableConfig::default());
    // Drawn as they are taken: only the table's own copies stay.
    let crawl = (0..peers).map(|_| (PeerId::random(), addresses(&mut rng, addrs)));
    table.replace_with_crawl(crawl, Instant::now());
    let held = live() - before;
    let peak = counting_alloc::peak() - before;
    assert_eq!(table.len(), peers, "every peer taken");
    (held, peak, table.address_bytes())
}

/// Heap of a deep copy of `table` (addresses copied byte by byte, not shared).
pub fn copy_heap(table: &FullTable) -> isize {
    let before = live();
    let mut copy = FullTable::new(PeerId::random(), table.config().clone());
    let peers = table.iter().map(|(id, addrs)| {
        let owned = addrs
            .iter()
            .map(|a| Multiaddr::try_from(a.to_vec()).expect("valid address"))
            .collect::<Vec<_>>();
        (*id, owned)
    });
    copy.replace_with_crawl(peers, Instant::now());
    live() - before
}

pub fn memory(report: &mut Report) {
    let mut rows = Vec::new();
    for (peers, addrs) in [(10_000, 2), (100_000, 2), (10_000, 8), (100_000, 8)] {
        let (held, peak, addr_bytes) = table_heap(peers, addrs, peers as u64 + addrs as u64);
        let per = held as f64 / peers as f64;
        report.row(
            &format!("full table, {peers} peers x {addrs} addresses: bytes per peer"),
            format!("{per:.0}"),
            format!(
                "{:.1} MB held, {:.1} MB peak while filling, {:.0} encoded address bytes per peer",
                held as f64 / 1e6,
                peak as f64 / 1e6,
                addr_bytes as f64 / peers as f64
            ),
        );
        rows.push(json!({
            "peers": peers, "addrs": addrs, "bytes": held, "peak": peak,
            "bytes_per_peer": per, "address_bytes": addr_bytes,
        }));
    }
    report.json["full_table"] = json!(rows);
}
