//! [`MemoryStore`]: value and provider records in memory, bounded, in LRU order.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::time::SystemTime;

use hashlink::LinkedHashMap;
use libp2p::{Multiaddr, PeerId};
use smallvec::SmallVec;

use super::{from_unix_secs, unix_secs, GcProgress, ProviderRecord, ProviderStore, RecordStore};
use super::{ProvidedKey, Store, StoreError, ValueRecord};
use crate::key::Key;

/// What a full [`MemoryStore`] does with one more key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Refuse it with [`StoreError::Full`]; nothing stored is lost. The default: what the
    /// network stored here stays until it expires.
    #[default]
    Refuse,
    /// Drop the least recently used key to make room: for a node that only caches.
    EvictLeastRecentlyUsed,
}

/// Bounds of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStoreConfig {
    /// Most value records. Default 1,024.
    pub max_records: usize,
    /// Largest value accepted. Default 64 KiB (an IPNS record is at most 10 KiB).
    pub max_value_size: usize,
    /// Most keys with provider records. Default 65,536.
    pub max_provider_keys: usize,
    /// Most providers kept for one key. Default 256; a provider already known for the key
    /// always renews, so a flood of new providers cannot push out the honest ones.
    pub max_providers_per_key: usize,
    /// What happens when `max_records` or `max_provider_keys` is reached. Default: refuse.
    pub full_policy: FullPolicy,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            max_records: 1024,
            max_value_size: 64 * 1024,
            max_provider_keys: 65_536,
            max_providers_per_key: 256,
            full_policy: FullPolicy::Refuse,
        }
    }
}

/// One provider of a key, without the key (stored once per key).
#[derive(Debug, Clone)]
struct Provider {
    peer: PeerId,
    addrs: Box<[Multiaddr]>,
    received: u64,
    expires: u64,
    addrs_expire: u64,
}

type Providers = SmallVec<[Provider; 1]>;

/// Value and provider records in memory, in least-recently-used order. Expired entries are
/// never returned; they are dropped when read and by [`Store::gc`].
#[derive(Debug, Default)]
pub struct MemoryStore {
    config: MemoryStoreConfig,
    records: LinkedHashMap<Vec<u8>, ValueRecord>,
    providers: LinkedHashMap<Box<[u8]>, Providers>,
    /// Provider keys in keyspace order, for [`ProviderStore::provider_keys`] and GC.
    keyspace: BTreeMap<Key, Box<[u8]>>,
    /// Where the next GC call resumes in the keyspace.
    gc_cursor: Option<Key>,
    /// The keys this node provides, in keyspace order.
    provided: BTreeMap<Key, ProvidedKey>,
}

impl MemoryStore {
    /// An empty store with these bounds.
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self {
            config,
            ..Default::default()
        }
    }

    /// Number of value records held (expired ones included until collected).
    pub fn records_len(&self) -> usize {
        self.records.len()
    }

    /// Number of keys with provider records.
    pub fn provider_keys_len(&self) -> usize {
        self.providers.len()
    }

    fn remove_provider_key(&mut self, key: &[u8]) {
        self.providers.remove(key);
        self.keyspace.remove(&Key::new(key));
    }

    fn to_record(key: &[u8], p: &Provider) -> ProviderRecord {
        ProviderRecord {
            key: key.to_vec(),
            provider: p.peer,
            addrs: p.addrs.to_vec(),
            received: from_unix_secs(p.received),
            expires: from_unix_secs(p.expires),
            addrs_expire: from_unix_secs(p.addrs_expire),
        }
    }
}

impl RecordStore for MemoryStore {
    fn get(&mut self, key: &[u8], now: SystemTime) -> Result<Option<ValueRecord>, StoreError> {
        let Some(record) = self.records.to_back(key) else {
            return Ok(None);
        };
        if record.expires <= now {
            self.records.remove(key);
            return Ok(None);
        }
        Ok(Some(record.clone()))
    }

    fn put(&mut self, record: ValueRecord) -> Result<(), StoreError> {
        if record.value.len() > self.config.max_value_size {
            return Err(StoreError::ValueTooLarge {
                len: record.value.len(),
                max: self.config.max_value_size,
            });
        }
        if !self.records.contains_key(&record.key) && self.records.len() >= self.config.max_records
        {
            // Expired records hold no slot.
            let now = record.received;
            self.records.retain(|_, r| r.expires > now);
        }
        if !self.records.contains_key(&record.key) && self.records.len() >= self.config.max_records
        {
            match self.config.full_policy {
                FullPolicy::Refuse => return Err(StoreError::Full),
                FullPolicy::EvictLeastRecentlyUsed => {
                    self.records.pop_front();
                }
            }
        }
        self.records.insert(record.key.clone(), record);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.records.remove(key);
        Ok(())
    }
}

impl ProviderStore for MemoryStore {
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        let now = unix_secs(record.received);
        let stored = Provider {
            peer: record.provider,
            addrs: record.addrs.into_boxed_slice(),
            received: now,
            expires: unix_secs(record.expires),
            addrs_expire: unix_secs(record.addrs_expire),
        };
        if let Some(list) = self.providers.to_back(record.key.as_slice()) {
            list.retain(|p| p.expires > now);
            if let Some(existing) = list.iter_mut().find(|p| p.peer == stored.peer) {
                *existing = stored;
                return Ok(());
            }
            if list.len() >= self.config.max_providers_per_key {
                return Err(StoreError::TooManyProviders);
            }
            list.push(stored);
            return Ok(());
        }
        if self.config.max_providers_per_key == 0 {
            return Err(StoreError::TooManyProviders);
        }
        if self.providers.len() >= self.config.max_provider_keys {
            match self.config.full_policy {
                FullPolicy::Refuse => return Err(StoreError::Full),
                FullPolicy::EvictLeastRecentlyUsed => {
                    if let Some((old, _)) = self.providers.pop_front() {
                        self.keyspace.remove(&Key::new(&old));
                    }
                }
            }
        }
        let key: Box<[u8]> = record.key.into_boxed_slice();
        self.keyspace.insert(Key::new(&key), key.clone());
        self.providers.insert(key, smallvec::smallvec![stored]);
        Ok(())
    }

    fn providers(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        let now_secs = unix_secs(now);
        let Some(list) = self.providers.to_back(key) else {
            return Ok(Vec::new());
        };
        list.retain(|p| p.expires > now_secs);
        if list.is_empty() {
            self.remove_provider_key(key);
            return Ok(Vec::new());
        }
        Ok(list.iter().map(|p| Self::to_record(key, p)).collect())
    }

    fn remove_provider(&mut self, key: &[u8], provider: &PeerId) -> Result<(), StoreError> {
        if let Some(list) = self.providers.get_mut(key) {
            list.retain(|p| p.peer != *provider);
            if list.is_empty() {
                self.remove_provider_key(key);
            }
        }
        Ok(())
    }

    fn provider_keys(&mut self, from: &Key, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .keyspace
            .range((Bound::Included(*from), Bound::Unbounded))
            .take(limit)
            .map(|(_, key)| key.to_vec())
            .collect())
    }
}

impl Store for MemoryStore {
    fn add_provided(&mut self, key: &[u8], now: SystemTime) -> Result<(), StoreError> {
        self.provided
            .entry(Key::new(key))
            .or_insert_with(|| ProvidedKey {
                key: key.to_vec(),
                added: now,
                last_provided: None,
                peers: 0,
            });
        Ok(())
    }

    fn remove_provided(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.provided.remove(&Key::new(key));
        Ok(())
    }

    fn provided(&mut self, from: &Key, limit: usize) -> Result<Vec<ProvidedKey>, StoreError> {
        Ok(self
            .provided
            .range((Bound::Included(*from), Bound::Unbounded))
            .take(limit)
            .map(|(_, p)| p.clone())
            .collect())
    }

    fn set_provided_status(
        &mut self,
        key: &[u8],
        at: SystemTime,
        peers: u16,
    ) -> Result<(), StoreError> {
        if let Some(p) = self.provided.get_mut(&Key::new(key)) {
            p.last_provided = Some(at);
            p.peers = peers;
        }
        Ok(())
    }

    fn provided_len(&mut self) -> Result<u64, StoreError> {
        Ok(self.provided.len() as u64)
    }

    fn gc(&mut self, now: SystemTime, budget: usize) -> Result<GcProgress, StoreError> {
        let mut progress = GcProgress::default();
        // Value records are few (bounded by `max_records`): one sweep each pass start.
        if self.gc_cursor.is_none() {
            let before = self.records.len();
            self.records.retain(|_, r| r.expires > now);
            progress.examined += before;
            progress.removed += before - self.records.len();
        }
        let now_secs = unix_secs(now);
        let start = self.gc_cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let batch: Vec<(Key, Box<[u8]>)> = self
            .keyspace
            .range((start, Bound::Unbounded))
            .take(budget.max(1))
            .map(|(k, v)| (*k, v.clone()))
            .collect();
        for (hash, key) in &batch {
            progress.examined += 1;
            if let Some(list) = self.providers.get_mut(key) {
                let before = list.len();
                list.retain(|p| p.expires > now_secs);
                progress.removed += before - list.len();
                if list.is_empty() {
                    self.providers.remove(key);
                    self.keyspace.remove(hash);
                }
            }
        }
        self.gc_cursor = batch.last().map(|(k, _)| *k);
        progress.done = batch.len() < budget.max(1);
        if progress.done {
            self.gc_cursor = None;
        }
        Ok(progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::suite;

    #[test]
    fn memory_store_passes_the_shared_suite() {
        suite::run_all(MemoryStore::new);
    }

    #[test]
    fn expired_records_hold_no_slot() {
        let config = MemoryStoreConfig {
            max_records: 1,
            ..Default::default()
        };
        let mut store = MemoryStore::new(config);
        let now = SystemTime::now();
        store.put(suite::value(b"/v/a", 1, now)).unwrap();
        let later = now + std::time::Duration::from_secs(7200);
        store.put(suite::value(b"/v/b", 1, later)).unwrap();
        assert!(store.get(b"/v/b", later).unwrap().is_some());
    }

    #[test]
    fn lru_policy_evicts_the_least_recently_used_key() {
        let config = MemoryStoreConfig {
            max_records: 2,
            full_policy: FullPolicy::EvictLeastRecentlyUsed,
            ..Default::default()
        };
        let mut store = MemoryStore::new(config);
        let now = SystemTime::now();
        store.put(suite::value(b"/v/a", 1, now)).unwrap();
        store.put(suite::value(b"/v/b", 1, now)).unwrap();
        store.get(b"/v/a", now).unwrap();
        store.put(suite::value(b"/v/c", 1, now)).unwrap();
        assert!(store.get(b"/v/a", now).unwrap().is_some(), "recently used");
        assert!(store.get(b"/v/b", now).unwrap().is_none(), "evicted");
    }
}
