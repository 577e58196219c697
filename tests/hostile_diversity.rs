//! Diversity filter poisoning (issue 14, item 4): 3 Sybils, each advertising addresses in 16
//! public /16s while connecting from elsewhere, must not lock the honest peers of those /16s
//! out of the routing table.
//!
//! A real node on 127.0.0.1 cannot see public source addresses, so its TCP transport reports
//! each peer's connection as coming from a public address chosen by the test
//! (`common/fake_remote.rs`): the honest peers of a /16 connect "from" it, the Sybils "from"
//! three other /16s. Everything else is real: the Sybils are kadence servers whose identify
//! advertises the 16 /16s.

mod common;
#[path = "common/fake_remote.rs"]
mod fake_remote;

use std::net::Ipv4Addr;

use common::net::node_config;
use common::watch::{tcp_swarm, Node, Running, Seen};
use fake_remote::{start_node, Sources};
use kadence::key::Key;
use libp2p::identity::Keypair;
use libp2p::{Multiaddr, PeerId};

/// /16s the Sybils advertise, each with three honest peers.
const GROUPS: u8 = 16;
const HONEST_PER_GROUP: usize = 3;
const SYBILS: usize = 3;

/// A key whose peer falls in bucket `cpl` of `local`'s table.
fn key_in_bucket(local: &PeerId, cpl: usize) -> Keypair {
    let local = Key::from_peer(local);
    loop {
        let key = Keypair::generate_ed25519();
        if Key::from_peer(&key.public().to_peer_id()).common_prefix_len(&local) == cpl {
            return key;
        }
    }
}

/// Starts a kadence server with `key` that advertises `external` addresses (not its loopback
/// listen address, which a peer connected from a public address may not name), connects it to
/// `node`, registers `from` as the source address the node will see. Returns its id and task.
async fn peer(
    key: Keypair,
    external: &[Multiaddr],
    from: Ipv4Addr,
    node: &Multiaddr,
    sources: &Sources,
) -> (PeerId, Running) {
    let (mut swarm, addr) = tcp_swarm(key, 0, |key| {
        Node::new(key, node_config(), |c| c.with_hide_listen_addrs(true))
    })
    .await;
    for a in external {
        swarm.add_external_address(a.clone());
    }
    sources.set(common::watch::port_of(&addr), from);
    swarm.dial(node.clone()).unwrap();
    (*swarm.local_peer_id(), Running::spawn(swarm))
}

/// Identify has told the node whether each of `peers` serves the DHT, and at least one
/// address: its admission is decided.
fn decided(seen: &Seen, peers: &[PeerId]) -> bool {
    peers
        .iter()
        .all(|p| seen.support.contains_key(p) && seen.addresses.contains_key(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sybils_advertising_16_slash_16s_lock_no_honest_peer_out() {
    let key = Keypair::generate_ed25519();
    let local = key.public().to_peer_id();
    let sources = Sources::default();
    let mut node = start_node(key, node_config(), sources.clone()).await;
    let target = node.p2p_addr();
    let group_ip = |g: u8, host: u8| Ipv4Addr::new(45, 10 + g, 1, host);
    let mut running = Vec::new();

    // The Sybils: buckets 3, 4, 5 (so the per-bucket limit does not stop them), each
    // advertising an address in every one of the 16 /16s, connecting from 81.0-2.x.x.
    let advertised: Vec<Multiaddr> = (0..GROUPS)
        .map(|g| {
            format!("/ip4/{}/tcp/4001", group_ip(g, 200))
                .parse()
                .unwrap()
        })
        .collect();
    let mut sybils = Vec::new();
    for s in 0..SYBILS {
        let from = Ipv4Addr::new(81, s as u8, 0, 1);
        let key = key_in_bucket(&local, 3 + s);
        let (id, task) = peer(key, &advertised, from, &target, &sources).await;
        sybils.push(id);
        running.push(task);
    }
    node.until(120, "the Sybils are admitted", |seen| {
        sybils.iter().all(|s| seen.admitted.contains(s))
    })
    .await;

    // The honest peers: three per /16, in buckets 0, 1 and 2 (16 per bucket, one per /16 per
    // bucket: within k and both diversity limits), each connecting from its /16 and
    // advertising that address.
    let mut honest = Vec::new();
    for g in 0..GROUPS {
        for b in 0..HONEST_PER_GROUP {
            let key = key_in_bucket(&local, b);
            let from = group_ip(g, 10 + b as u8);
            let own = [format!("/ip4/{from}/tcp/4001").parse().unwrap()];
            let (id, task) = peer(key, &own, from, &target, &sources).await;
            honest.push(id);
            running.push(task);
        }
    }
    node.until(
        180,
        "identify told the node about every honest peer",
        |seen| decided(seen, &honest),
    )
    .await;
    assert_eq!(
        sources.rewritten(),
        SYBILS + honest.len(),
        "every peer's connection came from its public address"
    );
    let admitted = honest
        .iter()
        .filter(|p| node.seen.admitted.contains(p))
        .count();
    eprintln!("honest peers admitted: {admitted} of {}", honest.len());
    // Before the fix: 0 of 48 (the Sybils held the 3 table slots of all 16 /16s).
    assert_eq!(admitted, honest.len(), "every honest peer of the 16 /16s");

    // The filter still holds, on the connection's address: a fourth peer from a /16 that
    // has three is refused, though the address it advertises is in another one.
    let key = key_in_bucket(&local, 6);
    let elsewhere = ["/ip4/91.1.1.1/tcp/4001".parse().unwrap()];
    let (late, task) = peer(key, &elsewhere, group_ip(0, 99), &target, &sources).await;
    running.push(task);
    node.until(60, "identify told the node about the fourth peer", |seen| {
        decided(seen, &[late])
    })
    .await;
    assert!(
        !node.seen.admitted.contains(&late),
        "a fourth peer connecting from a full /16 is refused"
    );
    assert!(sybils.iter().all(|s| node.seen.admitted.contains(s)));
    for task in running {
        task.stop().await;
    }
}
