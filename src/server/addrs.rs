//! Where a request came from, and which addresses of a provider record are worth keeping.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

use crate::store::{NetGroup, Source};

/// What the server knows of a connection's remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Remote {
    /// The network block its address is in; `None` without an IP address.
    pub(crate) group: Option<NetGroup>,
    /// It came from a publicly routable address (or through a relay at one).
    pub(crate) public: bool,
}

impl Remote {
    /// The remote end of a connection whose remote address is `addr`.
    pub(crate) fn of(addr: &Multiaddr) -> Self {
        let ip = first_ip(addr);
        Self {
            group: ip.map(NetGroup::of_ip),
            public: ip.is_some_and(is_public),
        }
    }

    /// The source of a write by `peer` over this connection.
    pub(crate) fn source(&self, peer: PeerId) -> Source {
        Source::Peer {
            id: peer,
            group: self.group,
        }
    }
}

fn first_ip(addr: &Multiaddr) -> Option<IpAddr> {
    addr.iter().find_map(|p| match p {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    })
}

/// Whether an address can be reached from the public internet: not loopback, private,
/// link-local, shared (CGNAT), unspecified, broadcast or multicast.
pub(crate) fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_public_v4(v4),
            None => is_public_v6(v6),
        },
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64;
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || shared)
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = (first & 0xfe00) == 0xfc00;
    let link_local = (first & 0xffc0) == 0xfe80;
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || unique_local || link_local)
}

/// Whether no one can dial the address: an unspecified or multicast IP.
fn is_undialable(ip: IpAddr) -> bool {
    ip.is_unspecified() || ip.is_multicast()
}

/// The addresses kept from an ADD_PROVIDER entry, in the order given, at most `max`:
/// - never an unspecified or multicast IP, which no one can dial;
/// - from a provider that reached us from a public address, only public ones (or names): its
///   loopback and private addresses would point every asker into its own network, as go's
///   public DHT filters them too. A provider on our own LAN (or loopback) keeps them all.
pub(crate) fn provider_addrs(addrs: Vec<Multiaddr>, from: &Remote, max: usize) -> Vec<Multiaddr> {
    addrs
        .into_iter()
        .filter(|addr| match first_ip(addr) {
            None => true,
            Some(ip) if is_undialable(ip) => false,
            Some(ip) => !from.public || is_public(ip),
        })
        .take(max)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(list: &[&str]) -> Vec<Multiaddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_public_provider_keeps_only_public_addresses_and_names() {
        let from = Remote::of(&"/ip4/8.8.4.4/tcp/4001".parse().unwrap());
        assert!(from.public);
        let kept = provider_addrs(
            addrs(&[
                "/ip4/127.0.0.1/tcp/1",
                "/ip4/192.168.1.2/tcp/1",
                "/ip4/100.64.0.1/tcp/1",
                "/ip4/0.0.0.0/tcp/1",
                "/ip6/fe80::1/tcp/1",
                "/ip6/fd00::1/tcp/1",
                "/ip4/1.2.3.4/tcp/1",
                "/ip6/2001:4860::1/udp/1/quic-v1",
                "/dns4/example.com/tcp/443/wss",
                "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            ]),
            &from,
            16,
        );
        assert_eq!(kept.len(), 4, "{kept:?}");
    }

    #[test]
    fn a_local_provider_keeps_local_addresses_but_never_unspecified_ones() {
        let from = Remote::of(&"/ip4/127.0.0.1/tcp/4001".parse().unwrap());
        assert!(!from.public);
        let kept = provider_addrs(
            addrs(&[
                "/ip4/127.0.0.1/tcp/1",
                "/ip4/0.0.0.0/tcp/1",
                "/ip6/::/tcp/1",
            ]),
            &from,
            16,
        );
        assert_eq!(kept, addrs(&["/ip4/127.0.0.1/tcp/1"]));
        let memory = Remote::of(&"/memory/7".parse().unwrap());
        assert_eq!(memory, Remote::default());
    }

    #[test]
    fn addresses_are_capped_in_order() {
        let many: Vec<Multiaddr> = (0..100)
            .map(|i| format!("/ip4/10.0.0.1/tcp/{i}").parse().unwrap())
            .collect();
        let kept = provider_addrs(many.clone(), &Remote::default(), 16);
        assert_eq!(kept, many[..16].to_vec());
    }
}
