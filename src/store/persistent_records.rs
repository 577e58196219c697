//! Writing and removing the records of a [`PersistentStore`](super::PersistentStore), each
//! with its charge against the disk budget and its source's quota (`persistent_quota.rs`), and
//! the cache of hot provider keys, bounded in keys and in bytes.

use hashlink::LruCache;
use libp2p::PeerId;

use super::codec::{self, Charge, ProviderFields};
use super::quota::{Charged, Kind, NewSlot};
use super::writer::{count_bytes, Table};
use super::{unix_secs, PersistentStore};
use crate::store::quota::Account;
use crate::store::{ProviderRecord, Source, StoreError};

/// Estimated disk bytes of a provider entry besides its key and value: its share of the
/// B-trees, of its key's count entry, and its quota bookkeeping (order and holder entries).
const PROVIDER_DISK_OVERHEAD: u64 = 160;
/// Estimated disk bytes of a value record besides its key and value, likewise.
const VALUE_DISK_OVERHEAD: u64 = 128;

/// What a provider entry is charged against the disk budget.
pub(super) fn provider_cost(key: &[u8], entry: &[u8], value: &[u8]) -> u64 {
    // The entry key twice (the entry, its place in its group's order), the key's count entry.
    (2 * entry.len() + 36 + key.len() + value.len()) as u64 + PROVIDER_DISK_OVERHEAD
}

/// What a value record is charged against the disk budget.
pub(super) fn value_cost(key: &[u8], value: &[u8]) -> u64 {
    (2 * key.len() + value.len()) as u64 + VALUE_DISK_OVERHEAD
}

/// Estimated heap of a cached provider record besides its key and addresses.
const CACHED_RECORD_OVERHEAD: usize = 160;
/// Estimated heap of a cached address besides its bytes.
const CACHED_ADDR_OVERHEAD: usize = 64;

/// The provider records of hot keys, bounded in keys and in (estimated) bytes.
pub(super) struct ProviderCache {
    entries: LruCache<Vec<u8>, (Vec<ProviderRecord>, usize)>,
    max_keys: usize,
    max_bytes: usize,
    bytes: usize,
}

impl ProviderCache {
    pub(super) fn new(max_keys: usize, max_bytes: usize) -> Self {
        Self {
            entries: LruCache::new_unbounded(),
            max_keys: max_keys.max(1),
            max_bytes,
            bytes: 0,
        }
    }

    pub(super) fn get(&mut self, key: &[u8]) -> Option<&Vec<ProviderRecord>> {
        self.entries.get(key).map(|(records, _)| records)
    }

    pub(super) fn remove(&mut self, key: &[u8]) {
        if let Some((_, bytes)) = self.entries.remove(key) {
            self.bytes -= bytes;
        }
    }

    /// Caches the records of a key, dropping the least recently used keys to stay within
    /// both bounds; a key whose records alone exceed the byte bound is not cached.
    pub(super) fn insert(&mut self, key: Vec<u8>, records: Vec<ProviderRecord>) {
        self.remove(&key);
        let bytes: usize = key.len()
            + records
                .iter()
                .map(|r| {
                    let addrs: usize = r.addrs.iter().map(|a| a.len() + CACHED_ADDR_OVERHEAD).sum();
                    CACHED_RECORD_OVERHEAD + r.key.len() + addrs
                })
                .sum::<usize>();
        if bytes > self.max_bytes {
            return;
        }
        while self.entries.len() >= self.max_keys || self.bytes + bytes > self.max_bytes {
            match self.entries.remove_lru() {
                Some((_, (_, freed))) => self.bytes -= freed,
                None => break,
            }
        }
        self.bytes += bytes;
        self.entries.insert(key, (records, bytes));
    }
}

/// A record [`PersistentStore::insert_providers`] did not store: `Ok` for a full key (it may
/// be retried once there is room), `Err` for a store without room.
pub(super) type Refused = Result<(ProviderRecord, Source), StoreError>;

impl PersistentStore {
    /// Inserts provider records, each written by its source. Returns the records not stored:
    /// `Ok` for a key already at its provider limit (the caller may purge and retry), `Err`
    /// for one the store has no room for ([`StoreError::Full`]).
    pub(super) fn insert_providers(
        &mut self,
        records: Vec<(ProviderRecord, Source)>,
    ) -> Result<Vec<Refused>, StoreError> {
        let max_per_key = self.config.max_providers_per_key;
        let mut refused = Vec::new();
        for (record, source) in records {
            if record.key.len() > u16::MAX as usize {
                // The layout stores the key length in 16 bits.
                refused.push(Err(StoreError::ValueTooLarge {
                    len: record.key.len(),
                    max: u16::MAX as usize,
                }));
                continue;
            }
            let key_entry = codec::keyspace_key(&record.key);
            let entry = codec::provider_entry_key(&record.key, &record.provider);
            let count = self.provider_count(&key_entry)?;
            let old = match count {
                0 => None,
                _ => self.read(Table::Providers, &entry)?,
            };
            if old.is_none() && count as usize >= max_per_key {
                refused.push(Ok((record, source)));
                continue;
            }
            let old = old.map(|v| codec::decode_provider(&v)).transpose()?;
            let group = source.account().map(|a| a.group);
            let writer = group.map(|group| Account {
                group,
                holder: record.provider,
            });
            let mut fields = ProviderFields {
                received: unix_secs(record.received),
                expires: unix_secs(record.expires),
                addrs_expire: unix_secs(record.addrs_expire),
                charge: Some(Charge {
                    group,
                    cost: 0,
                    written: 0,
                }),
                addrs: record.addrs,
            };
            let cost = provider_cost(&record.key, &entry, &codec::encode_provider(&fields));
            let replacing = old.as_ref().and_then(|o| o.charge).map_or(0, |c| c.cost);
            let slot = if count == 0 {
                NewSlot::ProviderKey
            } else {
                NewSlot::None
            };
            if let Err(e) = self.make_room(Kind::Providers, writer, cost, replacing, slot, &entry) {
                refused.push(Err(e));
                continue;
            }
            // Making room may have removed providers of this very key.
            let count = self.provider_count(&key_entry)?;
            let written = self.next_written(fields.received);
            let charge = Charge {
                group,
                cost,
                written,
            };
            fields.charge = Some(charge);
            self.cache.remove(&record.key);
            if let Some(old) = &old {
                self.release_provider(&entry, &record.provider, old)?;
            }
            self.write(
                Table::Providers,
                entry.clone(),
                Some(codec::encode_provider(&fields)),
            );
            let charged = Charged {
                charge,
                holder: group.map(|_| record.provider),
                record: &entry,
            };
            self.charge(Kind::Providers, charged)?;
            if old.is_none() {
                self.write(Table::ProviderKeys, key_entry, Some(count_bytes(count + 1)));
                if count == 0 {
                    self.lens.provider_keys += 1;
                }
            }
        }
        Ok(refused)
    }

    /// Releases the charge of a provider entry (none for one of format 1).
    fn release_provider(
        &mut self,
        entry: &[u8],
        provider: &PeerId,
        fields: &ProviderFields,
    ) -> Result<(), StoreError> {
        let Some(charge) = fields.charge else {
            return Ok(());
        };
        let charged = Charged {
            charge,
            holder: charge.group.map(|_| *provider),
            record: entry,
        };
        self.release(Kind::Providers, charged)
    }

    /// Removes one provider entry, its charge and its key's count.
    pub(super) fn remove_provider_entry(
        &mut self,
        key: &[u8],
        provider: &PeerId,
    ) -> Result<(), StoreError> {
        let entry = codec::provider_entry_key(key, provider);
        let Some(old) = self.read(Table::Providers, &entry)? else {
            return Ok(());
        };
        self.release_provider(&entry, provider, &codec::decode_provider(&old)?)?;
        self.cache.remove(key);
        self.write(Table::Providers, entry, None);
        let key_entry = codec::keyspace_key(key);
        let count = self.provider_count(&key_entry)?;
        if count <= 1 {
            self.write(Table::ProviderKeys, key_entry, None);
            self.lens.provider_keys = self.lens.provider_keys.saturating_sub(1);
        } else {
            self.write(Table::ProviderKeys, key_entry, Some(count_bytes(count - 1)));
        }
        Ok(())
    }

    /// Removes one value record and its charge.
    pub(super) fn remove_value(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let Some(old) = self.read(Table::Values, key)? else {
            return Ok(());
        };
        let old = codec::decode_value(&old)?;
        if let Some(charge) = old.charge {
            let charged = Charged {
                charge,
                holder: old.holder,
                record: key,
            };
            self.release(Kind::Values, charged)?;
        }
        self.write(Table::Values, key.to_vec(), None);
        self.lens.values = self.lens.values.saturating_sub(1);
        Ok(())
    }
}
