//! [`MemoryStore`]: value and provider records in memory, bounded in count and in bytes, with
//! per-source quotas deciding what makes room when it is full (see [`Source`]).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::hash::Hash;
use std::ops::Bound;
use std::time::SystemTime;

use hashlink::LinkedHashMap;
use libp2p::{Multiaddr, PeerId};
use smallvec::SmallVec;

use super::quota::{Account, GroupKey, Ledger, Source};
use super::{from_unix_secs, unix_secs, GcProgress, ProviderRecord, ProviderStore, RecordStore};
use super::{ProvidedKey, Store, StoreError, StoreSizes, ValueRecord};
use crate::key::Key;

/// What a full [`MemoryStore`] does with one more record.
///
/// Under both policies the room comes from the source holding the most (per-source quotas,
/// see [`Source`]): a write from a source that holds less than the largest one evicts that
/// source's oldest record, so no source can lock the others out. The policies differ only in
/// what happens to a write from the source holding the most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FullPolicy {
    /// Refuse it with [`StoreError::Full`]. The default: a flood only competes with itself,
    /// and what a source holding no more than others stored stays until it expires.
    #[default]
    Refuse,
    /// Evict that source's own oldest record to make room: for a node that only caches, where
    /// a source's newest record is worth more than its oldest.
    EvictLeastRecentlyUsed,
}

/// Bounds of a [`MemoryStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryStoreConfig {
    /// Most value records. Default 1,024.
    pub max_records: usize,
    /// Largest value accepted. Default 64 KiB (an IPNS record is at most 10 KiB).
    pub max_value_size: usize,
    /// Most heap, in bytes, that value records take (keys, values and bookkeeping, as
    /// estimated by the store). Default 16 MiB: all 1,024 records at 16 KiB each, room for
    /// IPNS records (at most 10 KiB) in every slot.
    pub max_record_bytes: usize,
    /// Most keys with provider records. Default 65,536.
    pub max_provider_keys: usize,
    /// Most providers kept for one key. Default 256. A provider already known for the key
    /// always renews; a new one on a full key takes the oldest slot of the network block
    /// holding the most slots of that key, unless its own block holds as many, so a flood of
    /// new providers from one block cannot push out, nor lock out, providers from others.
    pub max_providers_per_key: usize,
    /// Most heap, in bytes, that provider records take (keys, addresses and bookkeeping, as
    /// estimated by the store). Default 64 MiB: the 65,536 keys with one honest provider each
    /// (a few addresses, under 1 KiB) fit with room to spare, while a store filled with
    /// hostile 8 KiB entries stops at 64 MiB instead of growing to gigabytes.
    pub max_provider_bytes: usize,
    /// What happens to a write of the source holding the most, once a bound is reached.
    /// Default: refuse.
    pub full_policy: FullPolicy,
}

impl Default for MemoryStoreConfig {
    fn default() -> Self {
        Self {
            max_records: 1024,
            max_value_size: 64 * 1024,
            max_record_bytes: 16 << 20,
            max_provider_keys: 65_536,
            max_providers_per_key: 256,
            max_provider_bytes: 64 << 20,
            full_policy: FullPolicy::Refuse,
        }
    }
}

/// Estimated heap of a value record besides its key and value: the map entry, the record and
/// its times, who wrote it, and its ledger entry.
const VALUE_OVERHEAD: u64 = 320;
/// Estimated heap of a provider entry besides its key and addresses: its share of the key's
/// map entries, the entry, and its ledger entry.
const PROVIDER_OVERHEAD: u64 = 352;
/// Estimated heap of an address besides its bytes: the shared allocation holding it and the
/// pointer to it.
const ADDR_OVERHEAD: u64 = 64;
/// Records evicted at most to make room for one write; past it, the write is refused. Bounds
/// the work one write costs.
const MAX_EVICTIONS_PER_WRITE: usize = 64;

fn value_cost(record: &ValueRecord) -> u64 {
    VALUE_OVERHEAD + 3 * record.key.len() as u64 + record.value.len() as u64
}

fn provider_cost(key: &[u8], addrs: &[Multiaddr]) -> u64 {
    let addrs: u64 = addrs.iter().map(|a| ADDR_OVERHEAD + a.len() as u64).sum();
    PROVIDER_OVERHEAD + 3 * key.len() as u64 + addrs
}

/// Charges of one kind of record: remote writes in the ledger, local ones as one sum (their
/// order of use is the store's own LRU order, which only they are left in when the ledger
/// names no victim).
#[derive(Debug)]
struct Books<I> {
    ledger: Ledger<I>,
    local: u64,
}

impl<I> Default for Books<I> {
    fn default() -> Self {
        Self {
            ledger: Ledger::default(),
            local: 0,
        }
    }
}

/// What makes room for a write.
#[derive(Debug, PartialEq, Eq)]
enum Victim<I> {
    /// A remote record: its account and id.
    Remote(Account, I),
    /// The least recently used record of the store, which is a local one.
    LocalLru,
}

impl<I: Hash + Eq + Clone> Books<I> {
    fn total(&self) -> u64 {
        self.ledger.total() + self.local
    }

    /// Charges `item` to `account` (or to the local node) as its holder's newest record.
    fn charge(&mut self, account: Option<Account>, item: I, cost: u64) {
        match account {
            Some(account) => self.ledger.charge(account, item, cost),
            None => self.local += cost,
        }
    }

    fn release<Q>(&mut self, account: Option<Account>, item: &Q, cost: u64)
    where
        I: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        match account {
            Some(account) => {
                self.ledger.release(account, item);
            }
            None => self.local -= cost,
        }
    }

    /// Marks `item` as used.
    fn touch<Q>(&mut self, account: Option<Account>, item: &Q)
    where
        I: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if let Some(account) = account {
            self.ledger.touch(account, item);
        }
    }

    /// What makes room for `writer` (`None`: the local node) under `policy`: the least
    /// recently used record of whoever must give up one, if anyone must.
    fn victim(&self, writer: Option<Account>, policy: FullPolicy) -> Option<Victim<I>> {
        if let Some((account, item)) = self.ledger.victim(writer) {
            return Some(Victim::Remote(account, item));
        }
        match (policy, writer) {
            (FullPolicy::Refuse, _) => None,
            (FullPolicy::EvictLeastRecentlyUsed, Some(w)) => self
                .ledger
                .oldest_of(w)
                .map(|(account, item)| Victim::Remote(account, item)),
            // No remote record left: all are local.
            (FullPolicy::EvictLeastRecentlyUsed, None) => {
                (self.local > 0).then_some(Victim::LocalLru)
            }
        }
    }
}

#[derive(Debug)]
struct StoredValue {
    record: ValueRecord,
    account: Option<Account>,
    cost: u64,
}

/// One provider of a key, without the key (stored once per key).
#[derive(Debug, Clone)]
struct Provider {
    peer: PeerId,
    addrs: Box<[Multiaddr]>,
    received: u64,
    expires: u64,
    addrs_expire: u64,
    /// The group it is charged to; `None` for a local write.
    group: Option<GroupKey>,
    /// What it is charged, in estimated heap bytes.
    cost: u64,
}

impl Provider {
    fn account(&self) -> Option<Account> {
        self.group.map(|group| Account {
            group,
            holder: self.peer,
        })
    }
}

type Providers = SmallVec<[Provider; 1]>;

/// The providers of one key, with the key's place in the keyspace (kept: hashing it again on
/// every read and write was most of their cost).
#[derive(Debug)]
struct KeyProviders {
    hash: Key,
    list: Providers,
}

/// Value and provider records in memory. Expired entries are never returned; they are dropped
/// when read and by [`Store::gc`]. Bounded in count and in bytes; when a bound is reached, the
/// source holding the most makes room (see [`FullPolicy`]).
#[derive(Debug, Default)]
pub struct MemoryStore {
    config: MemoryStoreConfig,
    records: LinkedHashMap<Vec<u8>, StoredValue>,
    values: Books<Vec<u8>>,
    providers: LinkedHashMap<Box<[u8]>, KeyProviders>,
    /// A provider entry is identified by its key within its holder, the provider.
    provider_books: Books<Key>,
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

    /// Estimated heap, in bytes, of the value records (what [`MemoryStoreConfig::max_record_bytes`]
    /// bounds).
    pub fn record_bytes(&self) -> u64 {
        self.values.total()
    }

    /// Estimated heap, in bytes, of the provider records (what
    /// [`MemoryStoreConfig::max_provider_bytes`] bounds).
    pub fn provider_bytes(&self) -> u64 {
        self.provider_books.total()
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

    fn remove_value(&mut self, key: &[u8]) -> Option<StoredValue> {
        let stored = self.records.remove(key)?;
        self.values.release(stored.account, key, stored.cost);
        Some(stored)
    }

    /// Expired records hold no slot: dropped when the store is full (at most `max_records`).
    fn drop_expired_values(&mut self, now: SystemTime) {
        let expired: Vec<Vec<u8>> = self
            .records
            .iter()
            .filter(|(_, s)| s.record.expires <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in expired {
            self.remove_value(&key);
        }
    }

    /// Evicts until a value record of `cost` bytes fits (`replacing` is the one it replaces,
    /// if any), or fails with [`StoreError::Full`].
    fn make_room_for_value(
        &mut self,
        writer: Option<Account>,
        key: &[u8],
        cost: u64,
        replacing: Option<u64>,
    ) -> Result<(), StoreError> {
        if cost > self.config.max_record_bytes as u64 {
            return Err(StoreError::Full);
        }
        for _ in 0..MAX_EVICTIONS_PER_WRITE {
            let count_full = replacing.is_none() && self.records.len() >= self.config.max_records;
            let bytes = self.values.total() - replacing.unwrap_or(0) + cost;
            if !count_full && bytes <= self.config.max_record_bytes as u64 {
                return Ok(());
            }
            let victim = match self.values.victim(writer, self.config.full_policy) {
                None => return Err(StoreError::Full),
                Some(Victim::Remote(_, victim)) => victim,
                Some(Victim::LocalLru) => match self.records.front() {
                    Some((victim, _)) => victim.clone(),
                    None => return Err(StoreError::Full),
                },
            };
            if victim == key {
                return Err(StoreError::Full);
            }
            tracing::debug!("value store full: evicting a record of the largest source");
            self.remove_value(&victim);
        }
        Err(StoreError::Full)
    }

    /// Drops the expired providers of a key (and the key when none is left). Returns whether
    /// the key still has providers.
    fn prune_key(&mut self, key: &[u8], now: u64) -> bool {
        let Some(KeyProviders { hash, list }) = self.providers.get_mut(key) else {
            return false;
        };
        let hash = *hash;
        let books = &mut self.provider_books;
        list.retain(|p| {
            let keep = p.expires > now;
            if !keep {
                books.release(p.account(), &hash, p.cost);
            }
            keep
        });
        if list.is_empty() {
            self.providers.remove(key);
            self.keyspace.remove(&hash);
            return false;
        }
        true
    }

    /// Removes one provider of a key (and the key when none is left).
    fn remove_entry(&mut self, key: &[u8], peer: &PeerId) {
        let Some(KeyProviders { hash, list }) = self.providers.get_mut(key) else {
            return;
        };
        let hash = *hash;
        if let Some(i) = list.iter().position(|p| p.peer == *peer) {
            let p = list.remove(i);
            self.provider_books.release(p.account(), &hash, p.cost);
        }
        if list.is_empty() {
            self.providers.remove(key);
            self.keyspace.remove(&hash);
        }
    }

    /// Removes a key with all its providers.
    fn remove_key(&mut self, key: &[u8]) {
        if let Some(KeyProviders { hash, list }) = self.providers.remove(key) {
            for p in &list {
                self.provider_books.release(p.account(), &hash, p.cost);
            }
            self.keyspace.remove(&hash);
        }
    }

    /// Makes a slot on a key that has the most providers it may: the network block holding
    /// the most slots of the key gives up its oldest, unless the writer's block holds as many.
    fn make_room_on_key(&mut self, key: &[u8], writer: Option<GroupKey>) -> Result<(), StoreError> {
        let Some(KeyProviders { list, .. }) = self.providers.get(key) else {
            return Ok(());
        };
        // (group, slots, oldest entry of the group): a key has at most a few hundred entries.
        let mut groups: SmallVec<[(GroupKey, usize, usize); 8]> = SmallVec::new();
        for (i, p) in list.iter().enumerate() {
            let Some(group) = p.group else { continue };
            match groups.iter_mut().find(|(g, _, _)| *g == group) {
                Some((_, n, oldest)) => {
                    *n += 1;
                    if p.received < list[*oldest].received {
                        *oldest = i;
                    }
                }
                None => groups.push((group, 1, i)),
            }
        }
        let Some(&(_, slots, oldest)) = groups.iter().max_by_key(|(_, n, _)| *n) else {
            return Err(StoreError::TooManyProviders);
        };
        let writer_slots = writer.map_or(0, |w| {
            groups
                .iter()
                .find(|(g, _, _)| *g == w)
                .map_or(0, |(_, n, _)| *n)
        });
        if writer.is_some() && writer_slots >= slots {
            return Err(StoreError::TooManyProviders);
        }
        let peer = list[oldest].peer;
        tracing::debug!("provider slots of a key full: evicting one of the largest block");
        self.remove_entry(key, &peer);
        Ok(())
    }

    /// Evicts until a provider entry of `cost` bytes fits (`replacing` is the cost of the
    /// entry it renews, `new_key` whether it needs a key of its own), or fails with
    /// [`StoreError::Full`]. The entry being renewed is never the one evicted.
    fn make_room_for_provider(
        &mut self,
        writer: Option<Account>,
        renewing: (Key, PeerId),
        cost: u64,
        replacing: Option<u64>,
        new_key: bool,
    ) -> Result<(), StoreError> {
        if cost > self.config.max_provider_bytes as u64 {
            return Err(StoreError::Full);
        }
        for _ in 0..MAX_EVICTIONS_PER_WRITE {
            let keys_full = new_key && self.providers.len() >= self.config.max_provider_keys;
            let bytes = self.provider_books.total() - replacing.unwrap_or(0) + cost;
            if !keys_full && bytes <= self.config.max_provider_bytes as u64 {
                return Ok(());
            }
            match self.provider_books.victim(writer, self.config.full_policy) {
                None => return Err(StoreError::Full),
                Some(Victim::Remote(account, hash)) => {
                    if (hash, account.holder) == renewing {
                        return Err(StoreError::Full);
                    }
                    let Some(key) = self.keyspace.get(&hash).cloned() else {
                        // Books and keys disagree: never expected; refuse rather than loop.
                        tracing::warn!("provider ledger names a key the store does not hold");
                        return Err(StoreError::Full);
                    };
                    tracing::debug!("provider store full: evicting a record of the largest source");
                    self.remove_entry(&key, &account.holder);
                }
                Some(Victim::LocalLru) => {
                    // Only local entries are left: the least recently used key goes whole.
                    let Some(key) = self.providers.front().map(|(k, _)| k.clone()) else {
                        return Err(StoreError::Full);
                    };
                    if Key::new(&key) == renewing.0 {
                        return Err(StoreError::Full);
                    }
                    self.remove_key(&key);
                }
            }
        }
        Err(StoreError::Full)
    }
}

impl RecordStore for MemoryStore {
    fn get(&mut self, key: &[u8], now: SystemTime) -> Result<Option<ValueRecord>, StoreError> {
        let Some(stored) = self.records.to_back(key) else {
            return Ok(None);
        };
        if stored.record.expires <= now {
            self.remove_value(key);
            return Ok(None);
        }
        let record = stored.record.clone();
        let account = stored.account;
        self.values.touch(account, key);
        Ok(Some(record))
    }

    fn put(&mut self, record: ValueRecord) -> Result<(), StoreError> {
        self.put_from(record, Source::Local)
    }

    fn put_from(&mut self, record: ValueRecord, source: Source) -> Result<(), StoreError> {
        if record.value.len() > self.config.max_value_size {
            return Err(StoreError::ValueTooLarge {
                len: record.value.len(),
                max: self.config.max_value_size,
            });
        }
        let account = source.account();
        let cost = value_cost(&record);
        let replacing = self.records.get(&record.key).map(|s| s.cost);
        let full = replacing.is_none() && self.records.len() >= self.config.max_records
            || self.values.total() - replacing.unwrap_or(0) + cost
                > self.config.max_record_bytes as u64;
        if full {
            self.drop_expired_values(record.received);
        }
        let replacing = self.records.get(&record.key).map(|s| s.cost);
        self.make_room_for_value(account, &record.key, cost, replacing)?;
        self.remove_value(&record.key);
        self.values.charge(account, record.key.clone(), cost);
        let key = record.key.clone();
        self.records.insert(
            key,
            StoredValue {
                record,
                account,
                cost,
            },
        );
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.remove_value(key);
        Ok(())
    }
}

impl ProviderStore for MemoryStore {
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        self.add_provider_from(record, Source::Local)
    }

    fn add_provider_from(
        &mut self,
        record: ProviderRecord,
        source: Source,
    ) -> Result<(), StoreError> {
        let now = unix_secs(record.received);
        let group = source.account().map(|a| a.group);
        let writer = group.map(|group| Account {
            group,
            holder: record.provider,
        });
        let cost = provider_cost(&record.key, &record.addrs);
        let exists = self.prune_key(&record.key, now);
        let hash = match self.providers.get(record.key.as_slice()) {
            Some(entry) => entry.hash,
            None => Key::new(&record.key),
        };
        let replacing = self
            .providers
            .get(record.key.as_slice())
            .and_then(|e| e.list.iter().find(|p| p.peer == record.provider))
            .map(|p| p.cost);
        if replacing.is_none() {
            if self.config.max_providers_per_key == 0 {
                return Err(StoreError::TooManyProviders);
            }
            let slots = self
                .providers
                .get(record.key.as_slice())
                .map_or(0, |e| e.list.len());
            if slots >= self.config.max_providers_per_key {
                self.make_room_on_key(&record.key, group)?;
            }
        }
        // Making room on the key may have removed it (one slot per key).
        let exists = exists && self.providers.contains_key(record.key.as_slice());
        self.make_room_for_provider(writer, (hash, record.provider), cost, replacing, !exists)?;
        let stored = Provider {
            peer: record.provider,
            addrs: record.addrs.into_boxed_slice(),
            received: now,
            expires: unix_secs(record.expires),
            addrs_expire: unix_secs(record.addrs_expire),
            group,
            cost,
        };
        let account = stored.account();
        if let Some(entry) = self.providers.to_back(record.key.as_slice()) {
            if let Some(existing) = entry.list.iter_mut().find(|p| p.peer == stored.peer) {
                // A renewal: the ledger replaces a charge in the same account by itself; the
                // local sum, or another account, gives up the old one here.
                let old = std::mem::replace(existing, stored);
                if old.account().is_none() || old.account() != account {
                    self.provider_books.release(old.account(), &hash, old.cost);
                }
            } else {
                entry.list.push(stored);
            }
        } else {
            let key: Box<[u8]> = record.key.into_boxed_slice();
            self.keyspace.insert(hash, key.clone());
            let list = smallvec::smallvec![stored];
            self.providers.insert(key, KeyProviders { hash, list });
        }
        self.provider_books.charge(account, hash, cost);
        Ok(())
    }

    fn providers(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        if !self.prune_key(key, unix_secs(now)) {
            return Ok(Vec::new());
        }
        let Some(KeyProviders { hash, list }) = self.providers.to_back(key) else {
            return Ok(Vec::new());
        };
        for p in list.iter() {
            self.provider_books.touch(p.account(), hash);
        }
        Ok(list.iter().map(|p| Self::to_record(key, p)).collect())
    }

    fn remove_provider(&mut self, key: &[u8], provider: &PeerId) -> Result<(), StoreError> {
        self.remove_entry(key, provider);
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
    fn sizes(&self) -> StoreSizes {
        StoreSizes {
            records: self.records_len() as u64,
            record_bytes: Some(self.record_bytes()),
            provider_keys: self.provider_keys_len() as u64,
            provider_records: None,
            provider_bytes: Some(self.provider_bytes()),
        }
    }

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
            self.drop_expired_values(now);
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
        for (_, key) in &batch {
            progress.examined += 1;
            let before = self.providers.get(key).map_or(0, |e| e.list.len());
            self.prune_key(key, now_secs);
            let after = self.providers.get(key).map_or(0, |e| e.list.len());
            progress.removed += before - after;
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
#[path = "memory_tests.rs"]
mod tests;
