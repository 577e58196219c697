//! [`MemoryStore`]: value and provider records in memory, bounded.

use std::collections::HashMap;
use std::time::SystemTime;

use super::{ProviderRecord, ProviderStore, RecordStore, StoreError, ValueRecord};

/// Bounds of a [`MemoryStore`]. Every bound refuses new data with a [`StoreError`] instead of
/// dropping data already stored.
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
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            max_records: 1024,
            max_value_size: 64 * 1024,
            max_provider_keys: 65_536,
            max_providers_per_key: 256,
        }
    }
}

/// Value and provider records in memory. Expired entries are never returned and are dropped
/// when their key is next touched.
#[derive(Debug, Default)]
pub struct MemoryStore {
    config: MemoryStoreConfig,
    records: HashMap<Vec<u8>, ValueRecord>,
    providers: HashMap<Vec<u8>, Vec<ProviderRecord>>,
}

impl MemoryStore {
    /// An empty store with these bounds.
    pub fn new(config: MemoryStoreConfig) -> Self {
        Self {
            config,
            records: HashMap::new(),
            providers: HashMap::new(),
        }
    }
}

impl RecordStore for MemoryStore {
    fn get(&mut self, key: &[u8], now: SystemTime) -> Option<ValueRecord> {
        let record = self.records.get(key)?;
        if record.expires <= now {
            self.records.remove(key);
            return None;
        }
        Some(record.clone())
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
            return Err(StoreError::Full);
        }
        self.records.insert(record.key.clone(), record);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) {
        self.records.remove(key);
    }
}

impl ProviderStore for MemoryStore {
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        let now = record.received;
        let known_key = self.providers.contains_key(&record.key);
        if !known_key && self.providers.len() >= self.config.max_provider_keys {
            return Err(StoreError::Full);
        }
        let list = self.providers.entry(record.key.clone()).or_default();
        list.retain(|p| p.expires > now);
        if let Some(existing) = list.iter_mut().find(|p| p.provider == record.provider) {
            *existing = record;
            return Ok(());
        }
        if list.len() >= self.config.max_providers_per_key {
            return Err(StoreError::TooManyProviders);
        }
        list.push(record);
        Ok(())
    }

    fn providers(&mut self, key: &[u8], now: SystemTime) -> Vec<ProviderRecord> {
        let Some(list) = self.providers.get_mut(key) else {
            return Vec::new();
        };
        list.retain(|p| p.expires > now);
        if list.is_empty() {
            self.providers.remove(key);
            return Vec::new();
        }
        list.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::PeerId;

    use super::*;

    fn provider(key: &[u8], peer: PeerId, at: SystemTime) -> ProviderRecord {
        ProviderRecord {
            key: key.to_vec(),
            provider: peer,
            addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
            received: at,
            expires: at + Duration::from_secs(48 * 3600),
            addrs_expire: at + Duration::from_secs(24 * 3600),
        }
    }

    fn value(key: &[u8], size: usize, at: SystemTime) -> ValueRecord {
        ValueRecord {
            key: key.to_vec(),
            value: vec![1; size],
            received: at,
            expires: at + Duration::from_secs(3600),
        }
    }

    #[test]
    fn values_expire_and_bounds_refuse_without_loss() {
        let config = MemoryStoreConfig {
            max_records: 2,
            max_value_size: 10,
            ..Default::default()
        };
        let mut store = MemoryStore::new(config);
        let now = SystemTime::now();
        store.put(value(b"/v/a", 5, now)).unwrap();
        store.put(value(b"/v/b", 5, now)).unwrap();
        assert_eq!(store.put(value(b"/v/c", 5, now)), Err(StoreError::Full));
        assert!(matches!(
            store.put(value(b"/v/a", 11, now)),
            Err(StoreError::ValueTooLarge { len: 11, max: 10 })
        ));
        assert_eq!(store.get(b"/v/a", now).unwrap().value.len(), 5, "unchanged");
        store.put(value(b"/v/a", 7, now)).unwrap();
        assert_eq!(store.get(b"/v/a", now).unwrap().value.len(), 7, "replaced");
        assert!(store
            .get(b"/v/a", now + Duration::from_secs(3600))
            .is_none());
        store.put(value(b"/v/c", 5, now)).unwrap();
    }

    #[test]
    fn a_flood_cannot_push_out_known_providers_who_can_renew() {
        let config = MemoryStoreConfig {
            max_providers_per_key: 3,
            ..Default::default()
        };
        let mut store = MemoryStore::new(config);
        let now = SystemTime::now();
        let honest: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
        for p in &honest {
            store.add_provider(provider(b"k", *p, now)).unwrap();
        }
        for _ in 0..100 {
            assert_eq!(
                store.add_provider(provider(b"k", PeerId::random(), now)),
                Err(StoreError::TooManyProviders)
            );
        }
        let later = now + Duration::from_secs(40 * 3600);
        store
            .add_provider(provider(b"k", honest[0], later))
            .unwrap();
        let after_expiry = now + Duration::from_secs(50 * 3600);
        let left = store.providers(b"k", after_expiry);
        assert_eq!(left.len(), 1, "only the renewed one is still valid");
        assert_eq!(left[0].provider, honest[0]);
    }
}
