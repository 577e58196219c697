//! The IP-group diversity filter: an attacker with addresses in one network block cannot fill a
//! bucket (or the table) with its Sybils, so eclipsing our view of a keyspace region takes
//! addresses in many networks.
//!
//! A peer belongs to the IP group of the address its connection came from, and only that one:
//! IPv4 /16, IPv6 /32 (go uses the ASN for IPv6; without an ASN database the /32, a typical
//! allocation to one network, is the closest stand-in). The addresses a peer advertises are
//! its to choose: counting them let 3 Sybils advertising 16 public /16s each, while connecting
//! from elsewhere, fill those 16 groups and lock every honest peer of them out (go also counts
//! the remote addresses of the peer's connections). Loopback, private, link-local and shared
//! (CGNAT) addresses belong to no group, so local test networks and LANs are never filtered;
//! neither does a peer whose connection address is not known (a bootstrap peer the
//! application added, one restored from a snapshot) until it connects.
//!
//! Only peers in the table count: a peer refused, waiting as a replacement, or evicted holds
//! no slot of its group.

use std::net::{Ipv4Addr, Ipv6Addr};

use fnv::FnvHashMap;
use libp2p::multiaddr::Protocol;
use libp2p::Multiaddr;

/// Limits of the diversity filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiversityConfig {
    /// Most peers of one IP group in one bucket. Default 2, as go.
    pub max_per_bucket: usize,
    /// Most peers of one IP group in the whole table. Default 3, as go.
    pub max_per_table: usize,
}

impl Default for DiversityConfig {
    fn default() -> Self {
        Self {
            max_per_bucket: 2,
            max_per_table: 3,
        }
    }
}

/// An IPv4 /16 or IPv6 /32 network block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum IpGroup {
    V4([u8; 2]),
    V6([u8; 4]),
}

/// The group of an address, `None` when exempt or not an IP address.
pub(crate) fn group_of(addr: &Multiaddr) -> Option<IpGroup> {
    match addr.iter().next()? {
        Protocol::Ip4(ip) if is_public_v4(&ip) => {
            let o = ip.octets();
            Some(IpGroup::V4([o[0], o[1]]))
        }
        Protocol::Ip6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                let o = v4.octets();
                return is_public_v4(&v4).then_some(IpGroup::V4([o[0], o[1]]));
            }
            if !is_public_v6(&ip) {
                return None;
            }
            let o = ip.octets();
            Some(IpGroup::V6([o[0], o[1], o[2], o[3]]))
        }
        _ => None,
    }
}

fn is_public_v4(ip: &Ipv4Addr) -> bool {
    let o = ip.octets();
    let shared = o[0] == 100 && (64..128).contains(&o[1]); // 100.64.0.0/10, CGNAT
    !(ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || shared)
}

fn is_public_v6(ip: &Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    let unique_local = first & 0xfe00 == 0xfc00; // fc00::/7
    let link_local = first & 0xffc0 == 0xfe80; // fe80::/10
    !(ip.is_loopback() || ip.is_unspecified() || unique_local || link_local)
}

/// Per-group peer counts, for one bucket or for the table.
#[derive(Debug, Default, Clone)]
pub(crate) struct GroupCounts(FnvHashMap<IpGroup, usize>);

impl GroupCounts {
    /// Whether one more peer of every group in `groups` stays within `max`.
    pub(crate) fn admits(&self, groups: &[IpGroup], max: usize) -> bool {
        groups
            .iter()
            .all(|g| self.0.get(g).copied().unwrap_or(0) < max)
    }

    pub(crate) fn add(&mut self, groups: &[IpGroup]) {
        for g in groups {
            *self.0.entry(*g).or_default() += 1;
        }
    }

    pub(crate) fn remove(&mut self, groups: &[IpGroup]) {
        for g in groups {
            if let Some(n) = self.0.get_mut(g) {
                *n -= 1;
                if *n == 0 {
                    self.0.remove(g);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn groups_are_v4_16_and_v6_32() {
        assert_eq!(
            group_of(&addr("/ip4/203.0.113.7/tcp/1")),
            Some(IpGroup::V4([203, 0]))
        );
        assert_eq!(
            group_of(&addr("/ip4/203.0.200.1/udp/1/quic-v1")),
            Some(IpGroup::V4([203, 0]))
        );
        assert_eq!(
            group_of(&addr("/ip6/2001:db8:1:2::1/tcp/1")),
            Some(IpGroup::V6([0x20, 0x01, 0x0d, 0xb8]))
        );
        assert_eq!(
            group_of(&addr("/ip6/::ffff:203.0.113.7/tcp/1")),
            Some(IpGroup::V4([203, 0]))
        );
    }

    #[test]
    fn local_and_non_ip_addresses_are_exempt() {
        for a in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/10.1.2.3/tcp/1",
            "/ip4/192.168.1.1/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/dns4/example.com/tcp/1",
            "/memory/7",
        ] {
            assert_eq!(group_of(&addr(a)), None, "{a}");
        }
    }

    #[test]
    fn counts_admit_up_to_the_limit() {
        let mut counts = GroupCounts::default();
        let g = [IpGroup::V4([1, 2])];
        assert!(counts.admits(&g, 2));
        counts.add(&g);
        assert!(counts.admits(&g, 2));
        counts.add(&g);
        assert!(!counts.admits(&g, 2));
        counts.remove(&g);
        assert!(counts.admits(&g, 2));
        assert!(
            counts.admits(&[], 0),
            "a peer without group is always admitted"
        );
    }
}
