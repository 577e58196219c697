use super::*;

fn a(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

fn all(s: &[&str]) -> Vec<Multiaddr> {
    s.iter().map(|s| a(s)).collect()
}

/// A policy of a node that uses TCP (it listens on it).
fn tcp_node(cap: usize) -> AddressPolicy {
    let mut policy = AddressPolicy::new(cap);
    policy.observe_local(&a("/ip4/127.0.0.1/tcp/4001"));
    policy
}

#[test]
fn a_public_informant_names_public_addresses_only() {
    let policy = tcp_node(16);
    let peer = PeerId::random();
    let told = all(&[
        "/ip4/127.0.0.1/tcp/1",
        "/ip4/10.0.0.1/tcp/1",
        "/ip4/172.16.5.4/tcp/1",
        "/ip4/192.168.1.1/tcp/1",
        "/ip4/169.254.1.1/tcp/1",
        "/ip4/100.64.0.1/tcp/1",
        "/ip4/203.0.113.9/tcp/1",
        "/ip6/::1/tcp/1",
        "/ip6/fd00::1/tcp/1",
        "/ip6/fe80::1/tcp/1",
        "/ip6/::ffff:10.0.0.1/tcp/1",
        "/dns4/localhost/tcp/1",
        "/dns/printer.local/tcp/1",
        "/ip4/45.10.1.1/tcp/4001",
        "/ip6/2a01:4f8::1/tcp/4001",
        "/dns4/node.example.com/tcp/4001",
    ]);
    let public = all(&[
        "/ip4/45.10.1.1/tcp/4001",
        "/ip6/2a01:4f8::1/tcp/4001",
        "/dns4/node.example.com/tcp/4001",
    ]);
    assert_eq!(policy.learned(&peer, told.clone(), Scope::Public), public);
    // The informant's own network decides: a LAN peer may name LAN addresses, not loopback.
    let from_lan = policy.learned(&peer, told.clone(), Scope::Private);
    assert!(from_lan.contains(&a("/ip4/192.168.1.1/tcp/1")));
    assert!(!from_lan.iter().any(|x| [
        a("/ip4/127.0.0.1/tcp/1"),
        a("/ip6/::1/tcp/1"),
        a("/dns4/localhost/tcp/1")
    ]
    .contains(x)));
    // A loopback peer (a local test network) may name anything.
    assert_eq!(policy.learned(&peer, told.clone(), Scope::Loopback), told);
}

#[test]
fn the_informant_scope_is_that_of_its_connection() {
    let scope = |s: &str| scope_of_connection(Some(&a(s)));
    assert_eq!(scope("/ip4/45.10.1.1/tcp/50000"), Scope::Public);
    assert_eq!(scope("/ip4/192.168.0.7/tcp/50000"), Scope::Private);
    assert_eq!(scope("/ip4/127.0.0.1/tcp/50000"), Scope::Loopback);
    assert_eq!(scope("/memory/12"), Scope::Loopback);
    assert_eq!(scope("/ip6/2a01:4f8::1/udp/4001/quic-v1"), Scope::Public);
    assert_eq!(
        scope_of_connection(None),
        Scope::Public,
        "unknown: strictest"
    );
}

#[test]
fn addresses_nothing_could_dial_are_dropped() {
    let policy = tcp_node(16);
    let peer = PeerId::random();
    let other = PeerId::random();
    let told = vec![
        a("/unix/tmp%2Fsock"),
        a("/memory/5"),
        a("/ip4/45.10.1.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit"),
        a("/ip4/45.10.1.1"),
        a("/ip4/45.10.1.1/tcp/0"),
        a("/ip4/0.0.0.0/tcp/1"),
        a("/ip4/224.0.0.1/tcp/1"),
        a("/ip4/255.255.255.255/tcp/1"),
        a("/ip4/240.1.1.1/tcp/1"),
        a("/ip6/::/tcp/1"),
        a("/ip6/ff02::1/tcp/1"),
        a("/ip4/45.10.1.1/udp/1"),
        a("/ip4/45.10.1.1/tcp/1/http"),
        a(&format!("/p2p/{peer}")),
        a(&format!("/ip4/45.10.1.1/tcp/1/p2p/{other}")),
        a(&format!("/ip4/45.10.1.2/tcp/1/p2p/{peer}")),
    ];
    assert_eq!(
        policy.learned(&peer, told, Scope::Loopback),
        vec![a(&format!("/ip4/45.10.1.2/tcp/1/p2p/{peer}"))]
    );
}

#[test]
fn memory_and_relay_addresses_need_the_transport_in_use() {
    let peer = PeerId::random();
    let relay =
        "/ip4/45.10.1.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit";
    let told = all(&["/memory/5", relay]);
    let mut policy = tcp_node(16);
    assert!(policy
        .learned(&peer, told.clone(), Scope::Loopback)
        .is_empty());
    policy.observe_local(&a("/memory/77"));
    assert_eq!(
        policy.learned(&peer, told.clone(), Scope::Loopback),
        all(&["/memory/5"])
    );
    policy.observe_local(&a(&format!("{relay}/p2p/{}", PeerId::random())));
    assert_eq!(policy.learned(&peer, told.clone(), Scope::Loopback), told);
}

#[test]
fn the_nodes_own_addresses_are_dialled_before_its_transports_are_seen() {
    // At start-up the bootstrap peers the user added are dialled before the swarm reported
    // the node's own listen addresses.
    let peer = PeerId::random();
    let policy = AddressPolicy::new(4);
    assert_eq!(
        policy.to_dial(&peer, all(&["/memory/5"])),
        all(&["/memory/5"])
    );
    assert!(policy
        .learned(&peer, all(&["/memory/5"]), Scope::Loopback)
        .is_empty());
}

#[test]
fn a_few_per_peer_ranked_direct_and_known_transports_first() {
    let peer = PeerId::random();
    let mut policy = AddressPolicy::new(3);
    policy.observe_local(&a("/ip4/127.0.0.1/tcp/4001"));
    policy.observe_local(&a(
        "/ip4/45.10.1.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit",
    ));
    let told = all(&[
        "/ip4/45.10.1.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit",
        "/ip4/45.10.2.2/udp/4001/quic-v1",
        "/ip4/45.10.2.2/tcp/4001",
        "/ip4/45.10.2.2/tcp/4001",
        "/ip6/2a01:4f8::1/tcp/4001",
        "/ip4/45.10.2.2/tcp/4002/ws",
    ]);
    assert_eq!(
        policy.to_dial(&peer, told),
        all(&[
            "/ip4/45.10.2.2/tcp/4001",
            "/ip6/2a01:4f8::1/tcp/4001",
            "/ip4/45.10.2.2/udp/4001/quic-v1",
        ]),
        "TCP (in use) first, duplicates once, relayed last, three at most"
    );
}

#[test]
fn the_cap_holds_against_hundreds_of_addresses() {
    let policy = tcp_node(4);
    let peer = PeerId::random();
    let told: Vec<Multiaddr> = (1..=200)
        .map(|port| a(&format!("/ip4/127.0.0.1/tcp/{port}")))
        .collect();
    let kept = policy.learned(&peer, told.clone(), Scope::Loopback);
    assert_eq!(kept, told[..4]);
    assert_eq!(policy.to_dial(&peer, told).len(), 4);
}

#[test]
fn common_transports_are_understood() {
    let policy = AddressPolicy::new(16);
    let peer = PeerId::random();
    let told = all(&[
        "/ip4/45.10.1.1/udp/4001/quic-v1",
        "/ip4/45.10.1.1/udp/4001/quic-v1/webtransport/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ",
        "/ip4/45.10.1.1/udp/4001/webrtc-direct/certhash/uEiAkH5a4DPGKUuOBjYw0CgwjvcJCJMD2K_1aluKR_tpevQ",
        "/dns4/node.example.com/tcp/443/wss",
        "/dns4/node.example.com/tcp/443/tls/sni/node.example.com/ws",
        "/dnsaddr/bootstrap.libp2p.io",
        "/ip6/2a01:4f8::1/tcp/4001",
    ]);
    assert_eq!(policy.learned(&peer, told.clone(), Scope::Public), told);
}
