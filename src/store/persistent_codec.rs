//! The on-disk layout of [`PersistentStore`](super::PersistentStore), schema version 2.
//!
//! Tables (redb, keys and values are bytes unless said otherwise):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` (str -> u64) | `"schema_version"` | 2 |
//! | `values` | record key | `2, received u64, expires u64, group, holder, cost u64, written u64, value...` |
//! | `provider_keys` | `sha256(key) (32), key` | number of providers (u32) |
//! | `providers` | `sha256(key) (32), len(key) u16, key, provider peer id` | `2, received u64, expires u64, addrs_expire u64, group, cost u64, written u64, n u16, (len u16, multiaddr)*n` |
//! | `provided2` | `sha256(key)[..8], key` | `2, added u32, last provided u32 (0: never), peers u16` |
//! | `routing` | peer id | `1, n u16, (len u16, multiaddr)*n` |
//! | `meta` | `"sweep_cycle"`, `"sweep_next"`, `"sweep_depth"` | the reprovide sweep's mark ([`SweepMark`](crate::SweepMark); absent: none kept) |
//! | `meta` | `"crawl_saved_at"` | the crawl snapshot's `saved_at`, Unix nanoseconds (absent: never saved) |
//! | `meta` | `"crawl_peers"` | number of entries in `crawl` |
//! | `crawl` | position u32 (0, 1, 2, ...) | `1, len u8, peer id, n u16, (len u16, multiaddr)*n` |
//! | `sources` | `kind, b'g', group` | bytes charged to the group (u64), records (u64) |
//! | `sources` | `kind, b'h', group, holder peer id` | bytes charged to the holder (u64) |
//! | `sources` | `kind, b'o', group, written u64, record's table key` | holder peer id |
//!
//! Integers are big-endian; times are Unix seconds (but the crawl snapshot's, in nanoseconds, so
//! that it reads back exactly as saved). Keys start with the SHA-256 of the DHT key,
//! so iterating a table walks the keyspace in order, and all providers of one key are adjacent.
//! Every value starts with its own format byte, so a record can evolve without a new schema.
//!
//! The provided keys, millions of them, are kept small: their entries lead with the first 8
//! bytes of the point only (the sweep reads regions, prefixes of a few bits, and two of the
//! node's own keys share 64 bits of SHA-256 about once in 370,000 stores of 10 million keys), so
//! an entry of a 34-byte multihash is 53 bytes where it was 85 (`persistent_provided.rs` keeps
//! the pages in exact keyspace order all the same). Schema 1 had the whole point and 8-byte
//! times, in a table named `provided`; opening a schema 1 store rewrites it
//! ([`migrate_provided`](super::PersistentStore)).
//!
//! The crawl snapshot (the accelerated client's table) is replaced as a whole, in one
//! transaction with its two `meta` entries: the `crawl` table holds the peers in the order they
//! were saved, and a reader checks that its positions run from 0 to `crawl_peers` without gap.
//!
//! A record written by the network is charged to its source (per-source quotas, see
//! [`Source`](super::Source)): its `group` is `0` for the local node, `1` for a connection
//! without IP address, `4, a, b` for the IPv4 block `a.b.0.0/16`, `6, a, b, c, d` for an IPv6
//! /32; a value record's `holder` is `len u8, peer id` (`0` for the local node; a provider's
//! holder is the provider); `cost` is what it is charged against the disk budget, `written`
//! its place in its group's order (the second it was written, times 2^20, plus a count of
//! the writes within that second). The
//! `sources` table keeps the charges (`kind` is `b'v'` for value records, `b'p'` for provider
//! records): each group's total, each holder's, and each group's records oldest first, which
//! is where a full store finds what to evict. Records of format 1 (written before quotas)
//! were charged to no one, and read as the local node's.

use std::time::{Duration, SystemTime};

use libp2p::{Multiaddr, PeerId};

use super::quota::GroupKey;
use super::{NetGroup, StoreError};
use crate::key::Key;
use crate::provider::SweepMark;

/// The layout version written and read by this build.
pub(crate) const SCHEMA_VERSION: u64 = 2;
/// The older layout this build opens, rewriting its provided keys (see the module docs).
pub(crate) const SCHEMA_V1: u64 = 1;
const FORMAT: u8 = 1;
/// The format of value and provider records charged to a source.
const CHARGED: u8 = 2;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("malformed {what} entry"))
}

/// `sha256(key), key`: a key's place in the keyspace-ordered tables.
pub(crate) fn keyspace_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + key.len());
    out.extend_from_slice(Key::new(key).as_bytes());
    out.extend_from_slice(key);
    out
}

/// The `meta` entries of the sweep's mark.
pub(crate) fn sweep_mark_entries(mark: &SweepMark) -> [(&'static str, u64); 3] {
    [
        ("sweep_cycle", mark.cycle),
        ("sweep_next", mark.next),
        ("sweep_depth", u64::from(mark.depth)),
    ]
}

/// Bytes of the keyspace point that lead a `provided2` entry.
pub(crate) const PROVIDED_PREFIX: usize = 8;
/// The format byte of a provided key's status in schema 2.
const PROVIDED_FORMAT: u8 = 2;

/// `sha256(key)[..8], key`: a provided key's place in the `provided2` table.
pub(crate) fn provided_entry(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(PROVIDED_PREFIX + key.len());
    out.extend_from_slice(&Key::new(key).as_bytes()[..PROVIDED_PREFIX]);
    out.extend_from_slice(key);
    out
}

/// Where the `provided2` entries at or after `point` start: its 8-byte prefix (entries of that
/// prefix below `point` are the reader's to skip).
pub(crate) fn provided_bound(point: &Key) -> Vec<u8> {
    point.as_bytes()[..PROVIDED_PREFIX].to_vec()
}

/// The DHT key of a `provided2` entry.
pub(crate) fn provided_key(entry: &[u8]) -> Result<&[u8], StoreError> {
    entry
        .get(PROVIDED_PREFIX..)
        .ok_or_else(|| corrupt("provided"))
}

/// The prefix shared by every provider entry of `key`.
pub(crate) fn providers_prefix(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(34 + key.len() + 40);
    out.extend_from_slice(Key::new(key).as_bytes());
    out.extend_from_slice(&(key.len() as u16).to_be_bytes());
    out.extend_from_slice(key);
    out
}

/// The table key of one provider of `key`.
pub(crate) fn provider_entry_key(key: &[u8], provider: &PeerId) -> Vec<u8> {
    let mut out = providers_prefix(key);
    out.extend_from_slice(&provider.to_bytes());
    out
}

/// Splits a provider entry key into the DHT key and the provider.
pub(crate) fn split_provider_entry_key(entry: &[u8]) -> Result<(Vec<u8>, PeerId), StoreError> {
    let len = entry
        .get(32..34)
        .map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| corrupt("provider key"))?;
    let key = entry
        .get(34..34 + len)
        .ok_or_else(|| corrupt("provider key"))?;
    let peer = entry
        .get(34 + len..)
        .and_then(|b| PeerId::from_bytes(b).ok())
        .ok_or_else(|| corrupt("provider key"))?;
    Ok((key.to_vec(), peer))
}

/// Reads fields in order, failing on truncation.
pub(crate) struct Reader<'a>(pub(crate) &'a [u8]);

impl<'a> Reader<'a> {
    pub(crate) fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    pub(crate) fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
    }

    fn u32(&mut self, what: &str) -> Result<u32, StoreError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes(b.try_into().expect("4 bytes")))
    }

    fn u16(&mut self, what: &str) -> Result<u16, StoreError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn format(&mut self, what: &str) -> Result<(), StoreError> {
        match self.take(1, what)? {
            [FORMAT] => Ok(()),
            _ => Err(corrupt(what)),
        }
    }

    /// The format byte of a record that may be charged: whether it is.
    fn charged_format(&mut self, what: &str) -> Result<bool, StoreError> {
        match self.take(1, what)? {
            [FORMAT] => Ok(false),
            [CHARGED] => Ok(true),
            _ => Err(corrupt(what)),
        }
    }

    pub(crate) fn group(&mut self, what: &str) -> Result<Option<GroupKey>, StoreError> {
        Ok(match self.take(1, what)? {
            [0] => None,
            [1] => Some(GroupKey::NoIp),
            [4] => {
                let b = self.take(2, what)?;
                Some(GroupKey::Net(NetGroup::V4([b[0], b[1]])))
            }
            [6] => {
                let b = self.take(4, what)?;
                Some(GroupKey::Net(NetGroup::V6([b[0], b[1], b[2], b[3]])))
            }
            _ => return Err(corrupt(what)),
        })
    }

    fn addrs(&mut self, what: &str) -> Result<Vec<Multiaddr>, StoreError> {
        let n = self.u16(what)?;
        (0..n)
            .map(|_| {
                let len = self.u16(what)? as usize;
                Multiaddr::try_from(self.take(len, what)?.to_vec()).map_err(|_| corrupt(what))
            })
            .collect()
    }
}

/// Writes at most `u16::MAX` addresses; one longer than a `u16` length can say is left out
/// rather than written with a truncated length, which would make the whole entry unreadable.
fn put_addrs(out: &mut Vec<u8>, addrs: &[Multiaddr]) {
    let fits = |addr: &&Multiaddr| addr.as_ref().len() <= u16::MAX as usize;
    let n = addrs.iter().filter(fits).take(u16::MAX as usize).count();
    out.extend_from_slice(&(n as u16).to_be_bytes());
    for addr in addrs.iter().filter(fits).take(n) {
        let bytes = addr.as_ref();
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
}

/// Whom a record is charged to, and how much of the disk budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Charge {
    /// `None`: the local node.
    pub(crate) group: Option<GroupKey>,
    pub(crate) cost: u64,
    /// Its place in its group's order, oldest first: the Unix second it was written, times
    /// 2^20, plus a count of the store's writes within that second.
    pub(crate) written: u64,
}

/// A group as stored: see the module docs.
pub(crate) fn group_bytes(group: Option<GroupKey>) -> Vec<u8> {
    match group {
        None => vec![0],
        Some(GroupKey::NoIp) => vec![1],
        Some(GroupKey::Net(NetGroup::V4([a, b]))) => vec![4, a, b],
        Some(GroupKey::Net(NetGroup::V6([a, b, c, d]))) => vec![6, a, b, c, d],
    }
}

/// A value record's stored fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ValueFields {
    pub(crate) received: u64,
    pub(crate) expires: u64,
    /// `None` for a record of format 1, charged to no one.
    pub(crate) charge: Option<Charge>,
    /// The peer that wrote it; `None` for the local node.
    pub(crate) holder: Option<PeerId>,
    pub(crate) value: Vec<u8>,
}

pub(crate) fn encode_value(fields: &ValueFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + fields.value.len());
    match fields.charge {
        None => out.push(FORMAT),
        Some(_) => out.push(CHARGED),
    }
    out.extend_from_slice(&fields.received.to_be_bytes());
    out.extend_from_slice(&fields.expires.to_be_bytes());
    if let Some(charge) = fields.charge {
        out.extend_from_slice(&group_bytes(charge.group));
        match fields.holder {
            Some(peer) => {
                let id = peer.to_bytes();
                out.push(id.len() as u8);
                out.extend_from_slice(&id);
            }
            None => out.push(0),
        }
        out.extend_from_slice(&charge.cost.to_be_bytes());
        out.extend_from_slice(&charge.written.to_be_bytes());
    }
    out.extend_from_slice(&fields.value);
    out
}

pub(crate) fn decode_value(bytes: &[u8]) -> Result<ValueFields, StoreError> {
    let mut r = Reader(bytes);
    let charged = r.charged_format("value")?;
    let received = r.u64("value")?;
    let expires = r.u64("value")?;
    let (charge, holder) = if charged {
        let group = r.group("value")?;
        let len = r.take(1, "value")?[0] as usize;
        let holder = match len {
            0 => None,
            _ => Some(PeerId::from_bytes(r.take(len, "value")?).map_err(|_| corrupt("value"))?),
        };
        let cost = r.u64("value")?;
        let written = r.u64("value")?;
        (
            Some(Charge {
                group,
                cost,
                written,
            }),
            holder,
        )
    } else {
        (None, None)
    };
    Ok(ValueFields {
        received,
        expires,
        charge,
        holder,
        value: r.0.to_vec(),
    })
}

/// A provider entry's stored fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderFields {
    pub(crate) received: u64,
    pub(crate) expires: u64,
    pub(crate) addrs_expire: u64,
    /// `None` for an entry of format 1, charged to no one.
    pub(crate) charge: Option<Charge>,
    pub(crate) addrs: Vec<Multiaddr>,
}

pub(crate) fn encode_provider(fields: &ProviderFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(40 + fields.addrs.len() * 20);
    match fields.charge {
        None => out.push(FORMAT),
        Some(_) => out.push(CHARGED),
    }
    out.extend_from_slice(&fields.received.to_be_bytes());
    out.extend_from_slice(&fields.expires.to_be_bytes());
    out.extend_from_slice(&fields.addrs_expire.to_be_bytes());
    if let Some(charge) = fields.charge {
        out.extend_from_slice(&group_bytes(charge.group));
        out.extend_from_slice(&charge.cost.to_be_bytes());
        out.extend_from_slice(&charge.written.to_be_bytes());
    }
    put_addrs(&mut out, &fields.addrs);
    out
}

pub(crate) fn decode_provider(bytes: &[u8]) -> Result<ProviderFields, StoreError> {
    let mut r = Reader(bytes);
    let charged = r.charged_format("provider")?;
    let received = r.u64("provider")?;
    let expires = r.u64("provider")?;
    let addrs_expire = r.u64("provider")?;
    let charge = if charged {
        let group = r.group("provider")?;
        let cost = r.u64("provider")?;
        let written = r.u64("provider")?;
        Some(Charge {
            group,
            cost,
            written,
        })
    } else {
        None
    };
    Ok(ProviderFields {
        received,
        expires,
        addrs_expire,
        charge,
        addrs: r.addrs("provider")?,
    })
}

/// A provided key's status (times in Unix seconds, saturating at 2106).
pub(crate) fn encode_provided(added: u64, last: u64, peers: u16) -> Vec<u8> {
    let secs = |t: u64| u32::try_from(t).unwrap_or(u32::MAX).to_be_bytes();
    let mut out = Vec::with_capacity(11);
    out.push(PROVIDED_FORMAT);
    out.extend_from_slice(&secs(added));
    out.extend_from_slice(&secs(last));
    out.extend_from_slice(&peers.to_be_bytes());
    out
}

/// A provided key's status: added, last provided (0: never), peers. Reads schema 1's format
/// too (8-byte times), which the migration rewrites.
pub(crate) fn decode_provided(bytes: &[u8]) -> Result<(u64, u64, u16), StoreError> {
    let mut r = Reader(bytes);
    match r.take(1, "provided")? {
        [PROVIDED_FORMAT] => {
            let added = r.u32("provided")?;
            let last = r.u32("provided")?;
            Ok((u64::from(added), u64::from(last), r.u16("provided")?))
        }
        [FORMAT] => Ok((r.u64("provided")?, r.u64("provided")?, r.u16("provided")?)),
        _ => Err(corrupt("provided")),
    }
}

pub(crate) fn encode_routing(addrs: &[Multiaddr]) -> Vec<u8> {
    let mut out = vec![FORMAT];
    put_addrs(&mut out, addrs);
    out
}

pub(crate) fn decode_routing(bytes: &[u8]) -> Result<Vec<Multiaddr>, StoreError> {
    let mut r = Reader(bytes);
    r.format("routing")?;
    r.addrs("routing")
}

/// A `crawl` entry, into `out` (cleared first: the writer reuses one buffer for every peer).
pub(crate) fn encode_crawl_peer(out: &mut Vec<u8>, peer: &PeerId, addrs: &[Multiaddr]) {
    out.clear();
    out.push(FORMAT);
    let id = peer.to_bytes();
    // A peer id is a multihash of at most 64 bytes of digest: its length fits a byte.
    out.push(id.len() as u8);
    out.extend_from_slice(&id);
    put_addrs(out, addrs);
}

/// A `crawl` entry. Bytes past its last address make it corrupt too.
pub(crate) fn decode_crawl_peer(bytes: &[u8]) -> Result<(PeerId, Vec<Multiaddr>), StoreError> {
    let mut r = Reader(bytes);
    r.format("crawl")?;
    let len = r.take(1, "crawl")?[0] as usize;
    let peer = PeerId::from_bytes(r.take(len, "crawl")?).map_err(|_| corrupt("crawl"))?;
    let addrs = r.addrs("crawl")?;
    if !r.0.is_empty() {
        return Err(corrupt("crawl"));
    }
    Ok((peer, addrs))
}

/// A time as Unix nanoseconds: 0 before 1970, `u64::MAX` past 2554.
pub(crate) fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The time of Unix nanoseconds.
pub(crate) fn from_unix_nanos(nanos: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_nanos(nanos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncation_is_corrupt() {
        let groups = [
            None,
            Some(GroupKey::NoIp),
            Some(GroupKey::Net(NetGroup::V4([10, 1]))),
            Some(GroupKey::Net(NetGroup::V6([0x20, 1, 0xd, 0xb8]))),
        ];
        let charges = [None].into_iter().chain(groups.map(|group| {
            Some(Charge {
                group,
                cost: 77,
                written: 5 << 20 | 3,
            })
        }));
        for charge in charges {
            let fields = ProviderFields {
                received: 1,
                expires: 2,
                addrs_expire: 3,
                charge,
                addrs: vec!["/ip4/1.2.3.4/tcp/1".parse().unwrap()],
            };
            let bytes = encode_provider(&fields);
            assert_eq!(decode_provider(&bytes).unwrap(), fields);
            for cut in 0..bytes.len() {
                assert!(decode_provider(&bytes[..cut]).is_err(), "cut at {cut}");
            }
            for holder in [None, Some(PeerId::random())] {
                let value = ValueFields {
                    received: 5,
                    expires: 6,
                    charge,
                    holder: holder.filter(|_| charge.is_some()),
                    value: b"v".to_vec(),
                };
                assert_eq!(decode_value(&encode_value(&value)).unwrap(), value);
            }
        }
        assert!(decode_value(&[3, 0]).is_err(), "unknown format byte");
        let peer = PeerId::random();
        let entry = provider_entry_key(b"key", &peer);
        assert!(entry.starts_with(&providers_prefix(b"key")));
        assert_eq!(
            split_provider_entry_key(&entry).unwrap(),
            (b"key".to_vec(), peer)
        );
    }

    #[test]
    fn crawl_entries_round_trip_and_damage_is_corrupt() {
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = vec![
            "/ip4/1.2.3.4/tcp/4001".parse().unwrap(),
            "/ip6/::1/udp/4001/quic-v1".parse().unwrap(),
        ];
        let mut bytes = vec![9; 3]; // Cleared by the encoder.
        encode_crawl_peer(&mut bytes, &peer, &addrs);
        assert_eq!(decode_crawl_peer(&bytes).unwrap(), (peer, addrs.clone()));
        for cut in 0..bytes.len() {
            assert!(decode_crawl_peer(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(decode_crawl_peer(&trailing).is_err(), "trailing byte");
        let mut format = bytes.clone();
        format[0] = 7;
        assert!(decode_crawl_peer(&format).is_err(), "unknown format byte");
        // A length that claims more than there is fails without allocating it.
        let mut count = bytes.clone();
        let n_at = 2 + peer.to_bytes().len();
        count[n_at..n_at + 2].copy_from_slice(&u16::MAX.to_be_bytes());
        assert!(decode_crawl_peer(&count).is_err(), "address count");

        // An address too long for its u16 length is left out, the others kept.
        let long =
            Multiaddr::empty().with(libp2p::multiaddr::Protocol::Dns("a".repeat(70_000).into()));
        let with_long = vec![addrs[0].clone(), long, addrs[1].clone()];
        encode_crawl_peer(&mut bytes, &peer, &with_long);
        assert_eq!(decode_crawl_peer(&bytes).unwrap(), (peer, addrs));
    }

    #[test]
    fn crawl_times_keep_nanoseconds_and_saturate() {
        let at = SystemTime::UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(from_unix_nanos(unix_nanos(at)), at);
        let before = SystemTime::UNIX_EPOCH - Duration::from_secs(1);
        assert_eq!(unix_nanos(before), 0);
        let far = SystemTime::UNIX_EPOCH + Duration::from_secs(20_000_000_000); // Year 2603.
        assert_eq!(unix_nanos(far), u64::MAX);
    }
}
