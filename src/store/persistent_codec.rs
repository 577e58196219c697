//! The on-disk layout of [`PersistentStore`](super::PersistentStore), schema version 1.
//!
//! Tables (redb, keys and values are bytes unless said otherwise):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` (str -> u64) | `"schema_version"` | 1 |
//! | `values` | record key | `1, received u64, expires u64, value...` |
//! | `provider_keys` | `sha256(key) (32), key` | number of providers (u32) |
//! | `providers` | `sha256(key) (32), len(key) u16, key, provider peer id` | `1, received u64, expires u64, addrs_expire u64, n u16, (len u16, multiaddr)*n` |
//! | `provided` | `sha256(key) (32), key` | `1, added u64, last provided u64 (0: never), peers u16` |
//! | `routing` | peer id | `1, n u16, (len u16, multiaddr)*n` |
//!
//! Integers are big-endian; times are Unix seconds. Keys start with the SHA-256 of the DHT key,
//! so iterating a table walks the keyspace in order, and all providers of one key are adjacent.
//! Every value starts with its own format byte, so a record can evolve without a new schema.

use libp2p::{Multiaddr, PeerId};

use super::StoreError;
use crate::key::Key;

/// The layout version written and read by this build.
pub(crate) const SCHEMA_VERSION: u64 = 1;
const FORMAT: u8 = 1;

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
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], StoreError> {
        if self.0.len() < n {
            return Err(corrupt(what));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u64(&mut self, what: &str) -> Result<u64, StoreError> {
        let b = self.take(8, what)?;
        Ok(u64::from_be_bytes(b.try_into().expect("8 bytes")))
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

fn put_addrs(out: &mut Vec<u8>, addrs: &[Multiaddr]) {
    let n = addrs.len().min(u16::MAX as usize);
    out.extend_from_slice(&(n as u16).to_be_bytes());
    for addr in &addrs[..n] {
        let bytes = addr.as_ref();
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    }
}

/// A value record's stored fields: received, expires, value.
pub(crate) fn encode_value(received: u64, expires: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(17 + value.len());
    out.push(FORMAT);
    out.extend_from_slice(&received.to_be_bytes());
    out.extend_from_slice(&expires.to_be_bytes());
    out.extend_from_slice(value);
    out
}

pub(crate) fn decode_value(bytes: &[u8]) -> Result<(u64, u64, Vec<u8>), StoreError> {
    let mut r = Reader(bytes);
    r.format("value")?;
    let received = r.u64("value")?;
    let expires = r.u64("value")?;
    Ok((received, expires, r.0.to_vec()))
}

/// A provider entry's stored fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProviderFields {
    pub(crate) received: u64,
    pub(crate) expires: u64,
    pub(crate) addrs_expire: u64,
    pub(crate) addrs: Vec<Multiaddr>,
}

pub(crate) fn encode_provider(fields: &ProviderFields) -> Vec<u8> {
    let mut out = Vec::with_capacity(27 + fields.addrs.len() * 20);
    out.push(FORMAT);
    out.extend_from_slice(&fields.received.to_be_bytes());
    out.extend_from_slice(&fields.expires.to_be_bytes());
    out.extend_from_slice(&fields.addrs_expire.to_be_bytes());
    put_addrs(&mut out, &fields.addrs);
    out
}

pub(crate) fn decode_provider(bytes: &[u8]) -> Result<ProviderFields, StoreError> {
    let mut r = Reader(bytes);
    r.format("provider")?;
    Ok(ProviderFields {
        received: r.u64("provider")?,
        expires: r.u64("provider")?,
        addrs_expire: r.u64("provider")?,
        addrs: r.addrs("provider")?,
    })
}

pub(crate) fn encode_provided(added: u64, last: u64, peers: u16) -> Vec<u8> {
    let mut out = vec![FORMAT];
    out.extend_from_slice(&added.to_be_bytes());
    out.extend_from_slice(&last.to_be_bytes());
    out.extend_from_slice(&peers.to_be_bytes());
    out
}

/// A provided key's status: added, last provided (0: never), peers.
pub(crate) fn decode_provided(bytes: &[u8]) -> Result<(u64, u64, u16), StoreError> {
    let mut r = Reader(bytes);
    r.format("provided")?;
    Ok((r.u64("provided")?, r.u64("provided")?, r.u16("provided")?))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_truncation_is_corrupt() {
        let fields = ProviderFields {
            received: 1,
            expires: 2,
            addrs_expire: 3,
            addrs: vec!["/ip4/1.2.3.4/tcp/1".parse().unwrap()],
        };
        let bytes = encode_provider(&fields);
        assert_eq!(decode_provider(&bytes).unwrap(), fields);
        for cut in 0..bytes.len() {
            assert!(decode_provider(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let value = encode_value(5, 6, b"v");
        assert_eq!(decode_value(&value).unwrap(), (5, 6, b"v".to_vec()));
        assert!(decode_value(&[2, 0]).is_err(), "unknown format byte");
        let peer = PeerId::random();
        let entry = provider_entry_key(b"key", &peer);
        assert!(entry.starts_with(&providers_prefix(b"key")));
        assert_eq!(
            split_provider_entry_key(&entry).unwrap(),
            (b"key".to_vec(), peer)
        );
    }
}
