//! Per-source quotas: who wrote what, and whose records make room when a store is full (the
//! rule is on [`Source`]).

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::net::IpAddr;

use hashlink::LinkedHashMap;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// A network block: an IPv4 /16 or an IPv6 /32, whatever kind of address (public, private,
/// loopback) it is. Peers in one block share one quota in a full store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NetGroup {
    /// The first two octets of an IPv4 address.
    V4([u8; 2]),
    /// The first four octets of an IPv6 address.
    V6([u8; 4]),
}

impl NetGroup {
    /// The group of an IP address (an IPv4-mapped IPv6 address is its IPv4 address).
    pub fn of_ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                NetGroup::V4([o[0], o[1]])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::of_ip(IpAddr::V4(v4)),
                None => {
                    let o = v6.octets();
                    NetGroup::V6([o[0], o[1], o[2], o[3]])
                }
            },
        }
    }

    /// The group of the first IP address in `addr` (for a relayed connection, the relay's),
    /// `None` when it has none (a DNS name, the memory transport).
    pub fn of_addr(addr: &Multiaddr) -> Option<Self> {
        addr.iter().find_map(|p| match p {
            Protocol::Ip4(ip) => Some(Self::of_ip(IpAddr::V4(ip))),
            Protocol::Ip6(ip) => Some(Self::of_ip(IpAddr::V6(ip))),
            _ => None,
        })
    }
}

/// Who wrote a record, for the stores' per-source quotas.
///
/// Every record the network writes is charged, in bytes, to its *holder* (the peer that wrote
/// it; for a provider record, the provider) inside its *group* (the network block of the
/// connection it came over: IPv4 /16, IPv6 /32, see [`NetGroup`]). A store that is full, in
/// count or in bytes, takes a write only at the expense of whoever holds the most:
///
/// 1. the group holding the most bytes gives up its largest holder's least recently used
///    record, unless the writer's group already holds as much;
/// 2. when the writer's group is itself a largest one, its largest holder gives up its least
///    recently used record, unless the writer already holds as much;
/// 3. otherwise the writer holds the most, and the write is refused (or, under
///    [`FullPolicy::EvictLeastRecentlyUsed`](super::FullPolicy), displaces the writer's own
///    least recently used record).
///
/// This is max-min fairness, and it is why a flood harms no one else: a flood only grows its
/// own share, so once the store is full its further writes displace its own records or are
/// refused, while any writer holding less takes room from it. Many peer ids behind one network
/// block share that block's share, so generating peer ids buys nothing. An attacker needs
/// addresses in as many network blocks as it wants shares, and even then it can only push the
/// others down to the size of its per-block share, never out. Who is evicted depends only on
/// what each source holds, which a source can only raise (making itself the one evicted), and
/// on use within a holder, which concerns only that holder.
///
/// A key's provider slots ([`MemoryStoreConfig::max_providers_per_key`]) are shared the same
/// way among network blocks: a new provider on a full key takes the least recent slot of the
/// block holding the most slots of that key, unless its own block holds as many.
///
/// Records the local node writes ([`Source::Local`]) are charged to no one and never evicted
/// for others; they count against the bounds all the same.
///
/// [`MemoryStoreConfig::max_providers_per_key`]: super::MemoryStoreConfig::max_providers_per_key
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// This node, through its own API. Never evicted to make room for others.
    Local,
    /// A remote peer.
    Peer {
        /// The peer that sent the record.
        id: PeerId,
        /// The network block of the connection it came over; `None` when the connection's
        /// address has no IP (all such peers then share one group).
        group: Option<NetGroup>,
    },
}

impl Source {
    /// A remote peer over a connection from `remote_addr`.
    pub fn peer(id: PeerId, remote_addr: &Multiaddr) -> Self {
        Source::Peer {
            id,
            group: NetGroup::of_addr(remote_addr),
        }
    }

    /// The account the record is charged to; `None` for local writes.
    pub(crate) fn account(&self) -> Option<Account> {
        match *self {
            Source::Local => None,
            Source::Peer { id, group } => Some(Account {
                group: GroupKey::from(group),
                holder: id,
            }),
        }
    }
}

/// The group a record is charged to: a network block, or the one group of all peers whose
/// connection has no IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum GroupKey {
    NoIp,
    Net(NetGroup),
}

impl From<Option<NetGroup>> for GroupKey {
    fn from(group: Option<NetGroup>) -> Self {
        group.map_or(GroupKey::NoIp, GroupKey::Net)
    }
}

/// Where a remote write is charged: its group and its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Account {
    pub(crate) group: GroupKey,
    pub(crate) holder: PeerId,
}

/// Estimated heap of the ledger's bookkeeping for one holder (its map entry, its record list,
/// its place in the group's order), charged to the holder beside its records.
pub(crate) const HOLDER_OVERHEAD: u64 = 448;
/// Estimated heap of the ledger's bookkeeping for one group, charged to the group.
pub(crate) const GROUP_OVERHEAD: u64 = 384;

/// What one holder holds: its records, oldest first, with the bytes each is charged.
#[derive(Debug)]
struct Holder<I> {
    usage: u64,
    items: LinkedHashMap<I, u64>,
}

#[derive(Debug)]
struct Group<I> {
    usage: u64,
    // SipHash, not fnv: peer ids are chosen by remote peers.
    holders: HashMap<PeerId, Holder<I>>,
    by_usage: BTreeSet<(u64, PeerId)>,
}

/// The charges of remote writes by group and holder, with the order needed to find the
/// largest of each in O(log n). `I` identifies a record within its holder.
#[derive(Debug)]
pub(crate) struct Ledger<I> {
    total: u64,
    groups: HashMap<GroupKey, Group<I>>,
    by_usage: BTreeSet<(u64, GroupKey)>,
}

impl<I> Default for Ledger<I> {
    fn default() -> Self {
        Self {
            total: 0,
            groups: HashMap::new(),
            by_usage: BTreeSet::new(),
        }
    }
}

/// A record to evict: its account and its id.
pub(crate) type Victim<I> = (Account, I);

impl<I: Hash + Eq + Clone> Ledger<I> {
    /// Bytes charged to all holders.
    pub(crate) fn total(&self) -> u64 {
        self.total
    }

    /// Charges `item` to `account` as its newest record (a renewal is released first). A new
    /// holder or group is charged its own bookkeeping too, so that a thousand peer ids with a
    /// record each cost what they take.
    pub(crate) fn charge(&mut self, account: Account, item: I, cost: u64) {
        if self.recharge(account, &item, cost) {
            return;
        }
        let mut added = cost;
        let group = self.groups.entry(account.group).or_insert_with(|| {
            added += GROUP_OVERHEAD;
            Group {
                usage: 0,
                holders: HashMap::new(),
                by_usage: BTreeSet::new(),
            }
        });
        let mut holder_added = cost;
        let holder = group.holders.entry(account.holder).or_insert_with(|| {
            holder_added += HOLDER_OVERHEAD;
            Holder {
                usage: 0,
                items: LinkedHashMap::new(),
            }
        });
        added += holder_added - cost;
        holder.items.insert(item, cost);
        group.by_usage.remove(&(holder.usage, account.holder));
        holder.usage += holder_added;
        group.by_usage.insert((holder.usage, account.holder));
        self.by_usage.remove(&(group.usage, account.group));
        // The group's own overhead counts in its usage too.
        group.usage += added;
        self.by_usage.insert((group.usage, account.group));
        self.total += added;
    }

    /// A renewal of an item `account` holds: it becomes the newest at its new cost, in place
    /// (renewals are most writes, and releasing and charging again cost four times the work).
    /// Returns whether the item was there.
    fn recharge(&mut self, account: Account, item: &I, cost: u64) -> bool {
        let Some(group) = self.groups.get_mut(&account.group) else {
            return false;
        };
        let Some(holder) = group.holders.get_mut(&account.holder) else {
            return false;
        };
        let Some(slot) = holder.items.to_back(item) else {
            return false;
        };
        let old = std::mem::replace(slot, cost);
        if old != cost {
            group.by_usage.remove(&(holder.usage, account.holder));
            holder.usage = holder.usage - old + cost;
            group.by_usage.insert((holder.usage, account.holder));
            self.by_usage.remove(&(group.usage, account.group));
            group.usage = group.usage - old + cost;
            self.by_usage.insert((group.usage, account.group));
            self.total = self.total - old + cost;
        }
        true
    }

    /// Removes `item` from `account`; returns what it was charged (0 when unknown).
    pub(crate) fn release<Q>(&mut self, account: Account, item: &Q) -> u64
    where
        I: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(group) = self.groups.get_mut(&account.group) else {
            return 0;
        };
        let Some(holder) = group.holders.get_mut(&account.holder) else {
            return 0;
        };
        let Some(cost) = holder.items.remove(item) else {
            return 0;
        };
        let mut freed = cost;
        group.by_usage.remove(&(holder.usage, account.holder));
        holder.usage -= cost;
        if holder.items.is_empty() {
            freed += holder.usage;
            group.holders.remove(&account.holder);
        } else {
            group.by_usage.insert((holder.usage, account.holder));
        }
        self.by_usage.remove(&(group.usage, account.group));
        group.usage -= freed;
        if group.holders.is_empty() {
            freed += group.usage;
            self.groups.remove(&account.group);
        } else {
            self.by_usage.insert((group.usage, account.group));
        }
        self.total -= freed;
        cost
    }

    /// Marks `item` as used: it becomes its holder's newest record.
    pub(crate) fn touch<Q>(&mut self, account: Account, item: &Q)
    where
        I: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(holder) = self
            .groups
            .get_mut(&account.group)
            .and_then(|g| g.holders.get_mut(&account.holder))
        {
            holder.items.to_back(item);
        }
    }

    /// The record that makes room for a write by `writer` (`None` for a local write), by the
    /// rule in the module docs; `None` when the writer holds the most.
    pub(crate) fn victim(&self, writer: Option<Account>) -> Option<Victim<I>> {
        let &(largest_usage, largest) = self.by_usage.last()?;
        let Some(writer) = writer else {
            return self.oldest_of_largest_holder(largest);
        };
        let writer_group = self.groups.get(&writer.group).map_or(0, |g| g.usage);
        if writer_group < largest_usage {
            return self.oldest_of_largest_holder(largest);
        }
        let group = self.groups.get(&writer.group)?;
        let &(holder_usage, holder) = group.by_usage.last()?;
        let writer_usage = group.holders.get(&writer.holder).map_or(0, |h| h.usage);
        if writer_usage < holder_usage {
            return self.oldest_of(Account {
                group: writer.group,
                holder,
            });
        }
        None
    }

    /// The oldest record of `account`.
    pub(crate) fn oldest_of(&self, account: Account) -> Option<Victim<I>> {
        let holder = self
            .groups
            .get(&account.group)?
            .holders
            .get(&account.holder)?;
        holder
            .items
            .front()
            .map(|(item, _)| (account, item.clone()))
    }

    fn oldest_of_largest_holder(&self, group: GroupKey) -> Option<Victim<I>> {
        let &(_, holder) = self.groups.get(&group)?.by_usage.last()?;
        self.oldest_of(Account { group, holder })
    }

    /// Bytes charged to one holder.
    #[cfg(test)]
    pub(crate) fn usage_of(&self, account: Account) -> u64 {
        self.groups
            .get(&account.group)
            .and_then(|g| g.holders.get(&account.holder))
            .map_or(0, |h| h.usage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(group: u8, holder: PeerId) -> Account {
        Account {
            group: GroupKey::Net(NetGroup::V4([10, group])),
            holder,
        }
    }

    #[test]
    fn groups_are_v4_slash_16_and_v6_slash_32() {
        let a: Multiaddr = "/ip4/203.0.113.7/tcp/1".parse().unwrap();
        let b: Multiaddr = "/ip4/203.0.9.9/udp/1/quic-v1".parse().unwrap();
        assert_eq!(NetGroup::of_addr(&a), NetGroup::of_addr(&b));
        let c: Multiaddr = "/ip6/2001:db8:1:2::1/tcp/1".parse().unwrap();
        assert_eq!(
            NetGroup::of_addr(&c),
            Some(NetGroup::V6([0x20, 0x01, 0x0d, 0xb8]))
        );
        let mapped: Multiaddr = "/ip6/::ffff:203.0.1.1/tcp/1".parse().unwrap();
        assert_eq!(NetGroup::of_addr(&mapped), NetGroup::of_addr(&a));
        let memory: Multiaddr = "/memory/5".parse().unwrap();
        assert_eq!(NetGroup::of_addr(&memory), None);
        let dns: Multiaddr = "/dns4/example.com/tcp/1".parse().unwrap();
        assert_eq!(NetGroup::of_addr(&dns), None);
    }

    #[test]
    fn the_largest_group_pays_for_a_smaller_writer() {
        let mut ledger = Ledger::default();
        let (flood, honest) = (PeerId::random(), PeerId::random());
        for i in 0..10u32 {
            ledger.charge(account(1, flood), i, 100);
        }
        ledger.charge(account(2, honest), 100, 100);
        let overheads = 2 * (HOLDER_OVERHEAD + GROUP_OVERHEAD);
        assert_eq!(ledger.total(), 1100 + overheads);
        // The honest group holds less: the flood's oldest record goes.
        assert_eq!(
            ledger.victim(Some(account(2, honest))),
            Some((account(1, flood), 0))
        );
        // The flood holds the most: nothing of anyone else's goes.
        assert_eq!(ledger.victim(Some(account(1, flood))), None);
        // A local write takes from the largest.
        assert_eq!(ledger.victim(None), Some((account(1, flood), 0)));
    }

    #[test]
    fn peers_of_one_group_share_its_quota_and_compete_inside_it() {
        let mut ledger = Ledger::default();
        let sybils: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
        for (i, s) in sybils.iter().enumerate() {
            for j in 0..4u32 {
                ledger.charge(account(1, *s), i as u32 * 10 + j, 100);
            }
        }
        let other = PeerId::random();
        ledger.charge(account(2, other), 999, 500);
        // A new sybil in the flooding group: its group is the largest; inside it, it holds
        // less than its siblings, so one of them pays, never the other group.
        let newcomer = PeerId::random();
        let (victim, _) = ledger.victim(Some(account(1, newcomer))).unwrap();
        assert_eq!(victim.group, account(1, newcomer).group);
        assert_ne!(victim.holder, newcomer);
        // A sybil already holding as much as any sibling is refused.
        assert_eq!(ledger.victim(Some(account(1, sybils[4]))), None);
    }

    #[test]
    fn release_and_renewal_keep_the_books_straight() {
        let mut ledger = Ledger::default();
        let p = PeerId::random();
        ledger.charge(account(1, p), 1u32, 100);
        ledger.charge(account(1, p), 2u32, 50);
        // Renewing record 1 makes it the newest, at its new cost.
        ledger.charge(account(1, p), 1u32, 70);
        assert_eq!(ledger.usage_of(account(1, p)), 120 + HOLDER_OVERHEAD);
        assert_eq!(ledger.oldest_of(account(1, p)), Some((account(1, p), 2)));
        assert_eq!(ledger.release(account(1, p), &2), 50);
        assert_eq!(ledger.release(account(1, p), &2), 0, "already gone");
        assert_eq!(ledger.release(account(1, p), &1), 70);
        assert_eq!(ledger.total(), 0);
        assert!(ledger.groups.is_empty() && ledger.by_usage.is_empty());
        assert_eq!(ledger.victim(None), None);
    }
}
