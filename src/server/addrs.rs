//! Where a request came from, and which addresses of a provider record are worth keeping.

use libp2p::{Multiaddr, PeerId};

use crate::routing::addresses::{scope_of_advertised, scope_of_connection, Scope};
use crate::store::{NetGroup, Source};

/// What the server knows of a connection's remote end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Remote {
    /// The network block its address is in; `None` without an IP address.
    pub(crate) group: Option<NetGroup>,
    /// How local the network it came from is (the dial policy's scopes).
    pub(crate) scope: Scope,
}

impl Remote {
    /// The remote end of a connection whose remote address is `addr`, which the peer cannot
    /// choose.
    pub(crate) fn of(addr: &Multiaddr) -> Self {
        Self {
            group: NetGroup::of_addr(addr),
            scope: scope_of_connection(Some(addr)),
        }
    }

    /// A remote end nothing is known of: the strictest, as the dial policy counts it.
    pub(crate) fn unknown() -> Self {
        Self {
            group: None,
            scope: Scope::Public,
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

/// The addresses kept from an ADD_PROVIDER entry, in the order given, at most `max`:
/// - never an unspecified, multicast, broadcast or reserved IP, which no one can dial;
/// - only those at least as public as the network the provider's connection came from, as the
///   dial policy takes addresses from informants (see `routing::addresses`): a provider that
///   reached us from a public address keeps only public ones (go's public DHT filters the
///   others too), one on a private network also private ones, one on loopback all. Handed out
///   to every asker, a provider's loopback or private addresses would point them into their
///   own networks.
pub(crate) fn provider_addrs(addrs: Vec<Multiaddr>, from: &Remote, max: usize) -> Vec<Multiaddr> {
    addrs
        .into_iter()
        .filter(|addr| scope_of_advertised(addr).is_some_and(|scope| scope >= from.scope))
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
        assert_eq!(from.scope, Scope::Public);
        let kept = provider_addrs(
            addrs(&[
                "/ip4/127.0.0.1/tcp/1",
                "/ip4/192.168.1.2/tcp/1",
                "/ip4/100.64.0.1/tcp/1",
                "/ip4/0.0.0.0/tcp/1",
                "/ip6/fe80::1/tcp/1",
                "/ip6/fd00::1/tcp/1",
                "/dns4/localhost/tcp/1",
                "/ip4/1.2.3.4/tcp/1",
                "/ip6/2606:4700::1/udp/1/quic-v1",
                "/dns4/example.com/tcp/443/wss",
                "/ip4/1.2.3.4/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit",
            ]),
            &from,
            16,
        );
        assert_eq!(kept.len(), 4, "{kept:?}");
    }

    #[test]
    fn a_private_provider_keeps_private_addresses_a_loopback_one_all() {
        let list = addrs(&[
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/1.2.3.4/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip6/::/tcp/1",
        ]);
        let lan = Remote::of(&"/ip4/192.168.1.9/tcp/4001".parse().unwrap());
        assert_eq!(provider_addrs(list.clone(), &lan, 16), list[1..3].to_vec());
        let local = Remote::of(&"/ip4/127.0.0.1/tcp/4001".parse().unwrap());
        assert_eq!(provider_addrs(list.clone(), &local, 16), list[..3].to_vec());
        let memory = Remote::of(&"/memory/7".parse().unwrap());
        assert_eq!(memory.scope, Scope::Loopback);
        assert_eq!(memory.group, None);
        assert_eq!(Remote::unknown().scope, Scope::Public);
    }

    #[test]
    fn addresses_are_capped_in_order() {
        let many: Vec<Multiaddr> = (0..100)
            .map(|i| format!("/ip4/10.0.0.1/tcp/{}", i + 1).parse().unwrap())
            .collect();
        let local = Remote::of(&"/ip4/127.0.0.1/tcp/4001".parse().unwrap());
        let kept = provider_addrs(many.clone(), &local, 16);
        assert_eq!(kept, many[..16].to_vec());
    }
}
