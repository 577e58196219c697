//! Which addresses of other peers the node dials: a DHT node that dials whatever a stranger
//! names is a reflector, so every address learned from an answer passes three rules.
//!
//! 1. **Usable kind.** An address the local node could never dial is dropped: not starting
//!    with an IP address, a DNS name or `/memory` (so `/unix`, onion, bare `/p2p`), an IP
//!    address without a transport, port 0, an unspecified, multicast, broadcast or reserved IP
//!    address, a `/memory` address while the node has no memory transport in use, a
//!    `/p2p-circuit` address while it has no relay in use (a behaviour cannot see the swarm's
//!    transports; "in use" means a listen address or a connection of that kind), and one that
//!    ends in another peer's `/p2p` id.
//! 2. **Scope of the informant.** An address is only taken from a peer in the same or a more
//!    local network than the address: a peer whose connection comes from a public address may
//!    name public addresses only, one from a private network (RFC 1918, CGNAT, link-local, ULA)
//!    also private ones, and only a loopback (or in-process) peer may name loopback addresses.
//!    The informant's scope is that of the address its connection came from, which it cannot
//!    choose; a peer without a known connection counts as public. This is go's rule for the
//!    public DHT (`manet.IsPublicAddr` keeps only publicly routable addresses) with the
//!    informant's own network deciding, so that LANs and local test networks keep working.
//! 3. **A few per peer.** At most `max_per_peer` addresses, ranked: direct before relayed,
//!    kinds of transport the node already uses before the others, then in the order given
//!    (addresses that worked come first from the routing table).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// How far away an address (or the peer that told us of it) is. Ordered from most local.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Scope {
    /// This host: loopback, `localhost`, or the in-process memory transport.
    Loopback,
    /// A local network: RFC 1918, CGNAT, link-local, ULA, documentation and benchmark ranges,
    /// `.local` and other special-use names.
    Private,
    /// Anything else: publicly routable.
    Public,
}

/// The transport an address needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tcp,
    WebSocket,
    Quic,
    WebTransport,
    WebRtc,
    Memory,
    /// `/dnsaddr`: resolved to other addresses by the swarm's DNS transport.
    DnsAddr,
}

impl Kind {
    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// What an address is, once it passed the shape checks.
#[derive(Debug, Clone, Copy)]
struct Shape {
    scope: Scope,
    kind: Kind,
    relayed: bool,
}

/// The scope of the peer behind a connection that came from (or went to) `remote`. Unknown
/// shapes count as public, the strictest.
pub(crate) fn scope_of_connection(remote: Option<&Multiaddr>) -> Scope {
    remote
        .and_then(|a| shape(a, None))
        .map_or(Scope::Public, |s| s.scope)
}

/// The scope of an address a peer advertises for others to dial (a provider's): `None` when
/// its IP address is one nothing can be dialled at (unspecified, multicast, broadcast,
/// reserved), otherwise as [`scope_of_connection`] counts it.
pub(crate) fn scope_of_advertised(addr: &Multiaddr) -> Option<Scope> {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip_scope(IpAddr::V4(ip))?,
        Some(Protocol::Ip6(ip)) => ip_scope(IpAddr::V6(ip))?,
        _ => Scope::Public,
    };
    Some(scope_of_connection(Some(addr)))
}

/// The kinds of transport the local node has in use, learned from its listen addresses and
/// its connections.
#[derive(Debug, Clone, Copy, Default)]
struct LocalTransports {
    kinds: u8,
    relay: bool,
}

/// The address rules of the module docs, with what the node knows of its own transports.
#[derive(Debug, Clone)]
pub(crate) struct AddressPolicy {
    local: LocalTransports,
    max_per_peer: usize,
}

impl AddressPolicy {
    /// At most `max_per_peer` addresses per peer (at least 1).
    pub(crate) fn new(max_per_peer: usize) -> Self {
        Self {
            local: LocalTransports::default(),
            max_per_peer: max_per_peer.max(1),
        }
    }

    /// The local node listens on, or has a connection over, `addr`: its kind is in use.
    pub(crate) fn observe_local(&mut self, addr: &Multiaddr) {
        if let Some(s) = shape(addr, None) {
            self.local.kinds |= s.kind.bit();
            self.local.relay |= s.relayed;
        }
    }

    /// The addresses of `peer` worth dialling among `addrs`, which a peer of scope `informant`
    /// told us: all three rules.
    pub(crate) fn learned(
        &self,
        peer: &PeerId,
        addrs: Vec<Multiaddr>,
        informant: Scope,
    ) -> Vec<Multiaddr> {
        self.select(peer, addrs, Some(informant))
    }

    /// The addresses to dial `peer` at among `addrs`, from the node's own sources (routing
    /// table, lookups that already applied [`AddressPolicy::learned`]): well-formed, ranked and
    /// capped. The memory and relay kinds are not required to be in use here: see `select`.
    pub(crate) fn to_dial(&self, peer: &PeerId, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
        self.select(peer, addrs, None)
    }

    fn select(
        &self,
        peer: &PeerId,
        addrs: Vec<Multiaddr>,
        informant: Option<Scope>,
    ) -> Vec<Multiaddr> {
        // One list per rank, each at most the cap: the work per address stays bounded by the
        // cap, however many a peer sends.
        let cap = self.max_per_peer;
        let mut ranked: [Vec<Multiaddr>; 4] = Default::default();
        for addr in addrs {
            let Some(s) = shape(&addr, Some(peer)) else {
                continue;
            };
            let in_use = self.local.kinds & s.kind.bit() != 0;
            // The node's own sources (the user's `add_address`, the routing table) are taken
            // at their word: at start-up the node has not yet seen its own listen addresses,
            // and a refresh that dropped every bootstrap address would leave the table empty.
            let usable = informant.is_none()
                || match s.kind {
                    Kind::Memory => in_use,
                    _ => !s.relayed || self.local.relay,
                };
            if !usable || informant.is_some_and(|i| s.scope < i) {
                continue;
            }
            let rank = usize::from(s.relayed) * 2 + usize::from(!in_use);
            if ranked[rank].len() >= cap || ranked.iter().flatten().any(|a| *a == addr) {
                continue;
            }
            ranked[rank].push(addr);
        }
        ranked.into_iter().flatten().take(cap).collect()
    }
}

/// Checks the shape of `addr`; `None` when no transport could dial it, or when it names a
/// peer other than `peer`.
fn shape(addr: &Multiaddr, peer: Option<&PeerId>) -> Option<Shape> {
    let mut parts = addr.iter().peekable();
    let (scope, kind) = direct_part(&mut parts)?;
    let mut relayed = false;
    let mut last_peer = None;
    for part in parts {
        match part {
            Protocol::P2p(id) => last_peer = Some(id),
            Protocol::P2pCircuit if !relayed => {
                relayed = true;
                // The relay's own id may precede the circuit; the target's may follow it.
                last_peer = None;
            }
            Protocol::Certhash(_) | Protocol::Sni(_) | Protocol::Tls | Protocol::Noise => {}
            Protocol::WebRTC if relayed => {}
            _ => return None,
        }
    }
    if let (Some(named), Some(peer)) = (last_peer, peer) {
        if named != *peer {
            return None;
        }
    }
    Some(Shape {
        scope,
        kind,
        relayed,
    })
}

/// Reads the network and transport part of an address (`/ip4/../tcp/..`, `/dns/../udp/../quic-v1`,
/// `/memory/..`), leaving what follows (`/p2p`, `/p2p-circuit`, certificate hashes).
fn direct_part<'a>(
    parts: &mut std::iter::Peekable<impl Iterator<Item = Protocol<'a>>>,
) -> Option<(Scope, Kind)> {
    let scope = match parts.next()? {
        Protocol::Ip4(ip) => ip_scope(IpAddr::V4(ip))?,
        Protocol::Ip6(ip) => ip_scope(IpAddr::V6(ip))?,
        Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name) => dns_scope(&name),
        Protocol::Dnsaddr(name) => return Some((dns_scope(&name), Kind::DnsAddr)),
        Protocol::Memory(port) if port != 0 => return Some((Scope::Loopback, Kind::Memory)),
        _ => return None,
    };
    let kind = match parts.next()? {
        Protocol::Tcp(port) if port != 0 => match parts.peek() {
            Some(Protocol::Ws(_) | Protocol::Wss(_)) => {
                parts.next();
                Kind::WebSocket
            }
            Some(Protocol::Tls) => {
                parts.next();
                if let Some(Protocol::Sni(_)) = parts.peek() {
                    parts.next();
                }
                match parts.next()? {
                    Protocol::Ws(_) => Kind::WebSocket,
                    _ => return None,
                }
            }
            _ => Kind::Tcp,
        },
        Protocol::Udp(port) if port != 0 => match parts.next()? {
            Protocol::QuicV1 | Protocol::Quic => match parts.peek() {
                Some(Protocol::WebTransport) => {
                    parts.next();
                    Kind::WebTransport
                }
                _ => Kind::Quic,
            },
            Protocol::WebRTCDirect => Kind::WebRtc,
            _ => return None,
        },
        _ => return None,
    };
    Some((scope, kind))
}

/// The scope of an IP address; `None` for addresses nothing can be dialled at (unspecified,
/// multicast, broadcast, reserved).
fn ip_scope(ip: IpAddr) -> Option<Scope> {
    match ip {
        IpAddr::V4(v4) => v4_scope(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_scope(v4),
            None => v6_scope(v6),
        },
    }
}

fn v4_scope(ip: Ipv4Addr) -> Option<Scope> {
    let [a, b, c, _] = ip.octets();
    if a == 0 || ip.is_multicast() || a >= 240 {
        return None; // 0.0.0.0/8, 224.0.0.0/4, 240.0.0.0/4 (with the broadcast address)
    }
    if ip.is_loopback() {
        return Some(Scope::Loopback);
    }
    let local = ip.is_private()
        || ip.is_link_local()
        || (a == 100 && (64..128).contains(&b)) // CGNAT, 100.64.0.0/10
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments, 192.0.0.0/24
        || (a == 192 && b == 0 && c == 2) // documentation, 192.0.2.0/24
        || (a == 198 && b == 51 && c == 100) // documentation, 198.51.100.0/24
        || (a == 203 && b == 0 && c == 113) // documentation, 203.0.113.0/24
        || (a == 198 && (b & 0xfe) == 18) // benchmarking, 198.18.0.0/15
        || (a == 192 && b == 88 && c == 99); // retired 6to4 relays, 192.88.99.0/24
    Some(if local { Scope::Private } else { Scope::Public })
}

fn v6_scope(ip: Ipv6Addr) -> Option<Scope> {
    let s = ip.segments();
    if ip.is_unspecified() || ip.is_multicast() {
        return None;
    }
    if ip.is_loopback() {
        return Some(Scope::Loopback);
    }
    // Global unicast is 2000::/3 (go's stricter rule for the public DHT), less documentation.
    let global = s[0] & 0xe000 == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8);
    Some(if global {
        Scope::Public
    } else {
        Scope::Private
    })
}

/// The scope of a DNS name: special-use names (RFC 6761 and local-network suffixes) resolve
/// to loopback or local addresses, any other name counts as public.
fn dns_scope(name: &str) -> Scope {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let is = |suffix: &str| name == suffix || name.ends_with(&format!(".{suffix}"));
    if is("localhost") {
        Scope::Loopback
    } else if [
        "local",
        "home.arpa",
        "internal",
        "lan",
        "test",
        "invalid",
        "example",
    ]
    .iter()
    .any(|s| is(s))
    {
        Scope::Private
    } else {
        Scope::Public
    }
}

#[cfg(test)]
#[path = "addresses_tests.rs"]
mod tests;
