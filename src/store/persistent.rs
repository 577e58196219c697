//! [`PersistentStore`]: records on disk in an embedded database (redb: pure Rust, ACID,
//! crash-safe copy-on-write B-trees), with an LRU cache of hot provider keys in front.
//!
//! Writes go into one open write transaction and become durable at [`Store::flush`], which
//! commits it with an fsync; the behaviour flushes on a short timer, and a full buffer flushes
//! by itself. So a crash loses at most the writes since the last flush, never a flushed one,
//! and never leaves the file half-written. The layout is in `persistent_codec.rs`.

use std::io::ErrorKind;
use std::path::Path;
use std::time::SystemTime;

use hashlink::LruCache;
use libp2p::{Multiaddr, PeerId};
use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError, TableDefinition, WriteTransaction,
};

use super::persistent_codec::{self as codec, ProviderFields, SCHEMA_VERSION};
use super::{from_unix_secs, unix_secs, GcProgress, ProviderRecord, ProviderStore, RecordStore};
use super::{ProvidedKey, Store, StoreError, ValueRecord};
use crate::key::Key;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("values");
const PROVIDER_KEYS: TableDefinition<&[u8], u32> = TableDefinition::new("provider_keys");
const PROVIDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providers");
const PROVIDED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("provided");
const ROUTING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("routing");

/// Bounds and tuning of a [`PersistentStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersistentStoreConfig {
    /// Most value records. Default 65,536.
    pub max_records: usize,
    /// Largest value accepted. Default 64 KiB.
    pub max_value_size: usize,
    /// Most keys with provider records. Default 10,000,000.
    pub max_provider_keys: usize,
    /// Most providers kept for one key. Default 256 (see [`MemoryStoreConfig`]).
    ///
    /// [`MemoryStoreConfig`]: super::MemoryStoreConfig
    pub max_providers_per_key: usize,
    /// Provider keys whose records are cached in memory. Default 256.
    pub cache_keys: usize,
    /// Writes buffered before a write flushes by itself. Default 4,096.
    pub max_buffered_writes: usize,
}

impl Default for PersistentStoreConfig {
    fn default() -> Self {
        Self {
            max_records: 65_536,
            max_value_size: 64 * 1024,
            max_provider_keys: 10_000_000,
            max_providers_per_key: 256,
            cache_keys: 256,
            max_buffered_writes: 4096,
        }
    }
}

/// Where GC resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GcCursor {
    Values(Vec<u8>),
    Providers(Vec<u8>),
}

/// Records on disk (see the module docs).
pub struct PersistentStore {
    db: Database,
    config: PersistentStoreConfig,
    txn: Option<WriteTransaction>,
    /// Writes in the open transaction: a transaction opened for reads only is dropped at flush,
    /// not committed (a commit costs an fsync).
    buffered: usize,
    cache: LruCache<Vec<u8>, Vec<ProviderRecord>>,
    gc_cursor: GcCursor,
}

impl Drop for PersistentStore {
    /// A clean shutdown keeps what was buffered; only a crash loses the last flush interval.
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "store flush on close failed");
        }
    }
}

impl std::fmt::Debug for PersistentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentStore")
            .field("config", &self.config)
            .field("buffered", &self.buffered)
            .finish()
    }
}

fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// A file redb cannot read as a database is not ours; other failures are the disk's.
fn open_err(e: DatabaseError) -> StoreError {
    match e {
        DatabaseError::Storage(StorageError::Io(io)) if io.kind() != ErrorKind::InvalidData => {
            db_err(io)
        }
        DatabaseError::DatabaseAlreadyOpen => db_err(e),
        other => StoreError::Corrupt(other.to_string()),
    }
}

impl PersistentStore {
    /// Opens the store at `path`, creating it if the file does not exist or is empty. A file
    /// that is not a kadence store, or one of another schema version, is refused with a typed
    /// error and left as it is (except a redb file needing crash recovery, which the recovery
    /// writes to before its schema can be read).
    pub fn open(path: impl AsRef<Path>, config: PersistentStoreConfig) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        // Checked read-only first: opening a database for writing may already write to it.
        let checked = exists && Self::check_existing(path)?;
        let db = Database::create(path).map_err(open_err)?;
        if exists && !checked {
            // Recovered from a crash by the writable open: check it now.
            Self::check_schema(&db)?;
        }
        if !exists {
            let txn = db.begin_write().map_err(db_err)?;
            {
                txn.open_table(META)
                    .map_err(db_err)?
                    .insert("schema_version", SCHEMA_VERSION)
                    .map_err(db_err)?;
                txn.open_table(VALUES).map_err(db_err)?;
                txn.open_table(PROVIDER_KEYS).map_err(db_err)?;
                txn.open_table(PROVIDERS).map_err(db_err)?;
                txn.open_table(PROVIDED).map_err(db_err)?;
                txn.open_table(ROUTING).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
        }
        Ok(Self {
            db,
            cache: LruCache::new(config.cache_keys.max(1)),
            config,
            txn: None,
            buffered: 0,
            gc_cursor: GcCursor::Values(Vec::new()),
        })
    }

    /// Refuses, without writing, a file that is not a kadence store of this schema version.
    /// Returns `false` when the file needs crash recovery, which only a writable open does.
    fn check_existing(path: &Path) -> Result<bool, StoreError> {
        match ReadOnlyDatabase::open(path) {
            Ok(db) => Self::check_schema(&db).map(|()| true),
            Err(DatabaseError::RepairAborted) => Ok(false),
            Err(e) => Err(open_err(e)),
        }
    }

    fn check_schema(db: &impl ReadableDatabase) -> Result<(), StoreError> {
        let read = db.begin_read().map_err(db_err)?;
        let meta = read
            .open_table(META)
            .map_err(|_| StoreError::Corrupt("a database, but not a kadence store".into()))?;
        let found = meta
            .get("schema_version")
            .map_err(db_err)?
            .map(|v| v.value())
            .ok_or_else(|| StoreError::Corrupt("no schema version".into()))?;
        if found != SCHEMA_VERSION {
            return Err(StoreError::SchemaVersion {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION as u32,
            });
        }
        Ok(())
    }

    /// The open write transaction, begun when first needed. Reads go through it too, so they
    /// see the writes not yet flushed.
    fn txn(&mut self) -> Result<&WriteTransaction, StoreError> {
        if self.txn.is_none() {
            self.txn = Some(self.db.begin_write().map_err(db_err)?);
        }
        Ok(self.txn.as_ref().expect("just set"))
    }

    fn wrote(&mut self) -> Result<(), StoreError> {
        self.buffered += 1;
        if self.buffered >= self.config.max_buffered_writes {
            self.flush()?;
        }
        Ok(())
    }

    fn save_routing_table(&mut self, peers: &[(PeerId, Vec<Multiaddr>)]) -> Result<(), StoreError> {
        let txn = self.txn()?;
        let mut table = txn.open_table(ROUTING).map_err(db_err)?;
        table.retain(|_, _| false).map_err(db_err)?;
        for (peer, addrs) in peers {
            table
                .insert(
                    peer.to_bytes().as_slice(),
                    codec::encode_routing(addrs).as_slice(),
                )
                .map_err(db_err)?;
        }
        drop(table);
        // Counted as a write, so that the flush commits instead of dropping the transaction.
        self.buffered += 1;
        self.flush()
    }

    fn load_routing_table(&mut self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, StoreError> {
        let table = self.txn()?.open_table(ROUTING).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let peer = PeerId::from_bytes(k.value())
                .map_err(|_| StoreError::Corrupt("routing entry".into()))?;
            out.push((peer, codec::decode_routing(v.value())?));
        }
        Ok(out)
    }

    /// Inserts provider records with the tables opened once. Returns the records not stored:
    /// `Ok(record)` for a key already at its provider limit (the caller may purge and retry),
    /// `Err(Full)` for a new key when the store holds the most keys it may.
    fn insert_providers(
        &mut self,
        records: Vec<ProviderRecord>,
    ) -> Result<Vec<Result<ProviderRecord, StoreError>>, StoreError> {
        let max_keys = self.config.max_provider_keys as u64;
        let max_per_key = self.config.max_providers_per_key;
        let mut refused = Vec::new();
        let mut touched = Vec::with_capacity(records.len());
        {
            let txn = self.txn()?;
            let mut keys = txn.open_table(PROVIDER_KEYS).map_err(db_err)?;
            let mut providers = txn.open_table(PROVIDERS).map_err(db_err)?;
            for record in records {
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
                let count = keys
                    .get(key_entry.as_slice())
                    .map_err(db_err)?
                    .map_or(0, |v| v.value());
                let exists =
                    count > 0 && providers.get(entry.as_slice()).map_err(db_err)?.is_some();
                if !exists {
                    if count == 0 && keys.len().map_err(db_err)? >= max_keys {
                        refused.push(Err(StoreError::Full));
                        continue;
                    }
                    if count as usize >= max_per_key {
                        refused.push(Ok(record));
                        continue;
                    }
                }
                let fields = ProviderFields {
                    received: unix_secs(record.received),
                    expires: unix_secs(record.expires),
                    addrs_expire: unix_secs(record.addrs_expire),
                    addrs: record.addrs,
                };
                providers
                    .insert(entry.as_slice(), codec::encode_provider(&fields).as_slice())
                    .map_err(db_err)?;
                if !exists {
                    keys.insert(key_entry.as_slice(), count + 1)
                        .map_err(db_err)?;
                }
                touched.push(record.key);
            }
        }
        for key in touched {
            self.cache.remove(&key);
        }
        Ok(refused)
    }

    fn read_providers(&mut self, key: &[u8]) -> Result<Vec<ProviderRecord>, StoreError> {
        let prefix = codec::providers_prefix(key);
        let table = self.txn()?.open_table(PROVIDERS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.range(prefix.as_slice()..).map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let Some(peer) = k.value().strip_prefix(prefix.as_slice()) else {
                break;
            };
            let provider = PeerId::from_bytes(peer)
                .map_err(|_| StoreError::Corrupt("provider entry".into()))?;
            let fields = codec::decode_provider(v.value())?;
            out.push(ProviderRecord {
                key: key.to_vec(),
                provider,
                addrs: fields.addrs,
                received: from_unix_secs(fields.received),
                expires: from_unix_secs(fields.expires),
                addrs_expire: from_unix_secs(fields.addrs_expire),
            });
        }
        Ok(out)
    }

    /// Removes the expired providers of one key, keeping its count right.
    fn purge_key(&mut self, key: &[u8], now: u64) -> Result<usize, StoreError> {
        let expired: Vec<PeerId> = self
            .read_providers(key)?
            .into_iter()
            .filter(|p| unix_secs(p.expires) <= now)
            .map(|p| p.provider)
            .collect();
        for peer in &expired {
            self.remove_provider(key, peer)?;
        }
        Ok(expired.len())
    }

    fn gc_values(
        &mut self,
        from: Vec<u8>,
        now: u64,
        budget: usize,
    ) -> Result<(usize, usize, Option<Vec<u8>>), StoreError> {
        let txn = self.txn()?;
        let mut table = txn.open_table(VALUES).map_err(db_err)?;
        let mut examined = 0;
        let mut expired = Vec::new();
        let mut last = None;
        for item in table.range(from.as_slice()..).map_err(db_err)?.take(budget) {
            let (k, v) = item.map_err(db_err)?;
            examined += 1;
            let (_, expires, _) = codec::decode_value(v.value())?;
            if expires <= now {
                expired.push(k.value().to_vec());
            }
            last = Some(k.value().to_vec());
        }
        for key in &expired {
            table.remove(key.as_slice()).map_err(db_err)?;
        }
        // Resume strictly after the last key examined.
        let next = (examined == budget)
            .then(|| {
                last.map(|mut k| {
                    k.push(0);
                    k
                })
            })
            .flatten();
        Ok((examined, expired.len(), next))
    }

    fn gc_providers(
        &mut self,
        from: Vec<u8>,
        now: u64,
        budget: usize,
    ) -> Result<(usize, usize, Option<Vec<u8>>), StoreError> {
        let mut examined = 0;
        let mut expired = Vec::new();
        let mut last = None;
        {
            let table = self.txn()?.open_table(PROVIDERS).map_err(db_err)?;
            for item in table.range(from.as_slice()..).map_err(db_err)?.take(budget) {
                let (k, v) = item.map_err(db_err)?;
                examined += 1;
                if codec::decode_provider(v.value())?.expires <= now {
                    expired.push(k.value().to_vec());
                }
                last = Some(k.value().to_vec());
            }
        }
        for entry in &expired {
            let (key, peer) = codec::split_provider_entry_key(entry)?;
            self.remove_provider(&key, &peer)?;
        }
        let next = (examined == budget)
            .then(|| {
                last.map(|mut k| {
                    k.push(0);
                    k
                })
            })
            .flatten();
        Ok((examined, expired.len(), next))
    }
}

impl RecordStore for PersistentStore {
    fn get(&mut self, key: &[u8], now: SystemTime) -> Result<Option<ValueRecord>, StoreError> {
        let table = self.txn()?.open_table(VALUES).map_err(db_err)?;
        let Some(stored) = table.get(key).map_err(db_err)? else {
            return Ok(None);
        };
        let (received, expires, value) = codec::decode_value(stored.value())?;
        if expires <= unix_secs(now) {
            return Ok(None);
        }
        Ok(Some(ValueRecord {
            key: key.to_vec(),
            value,
            received: from_unix_secs(received),
            expires: from_unix_secs(expires),
        }))
    }

    fn put(&mut self, record: ValueRecord) -> Result<(), StoreError> {
        if record.value.len() > self.config.max_value_size {
            return Err(StoreError::ValueTooLarge {
                len: record.value.len(),
                max: self.config.max_value_size,
            });
        }
        let max_records = self.config.max_records as u64;
        let txn = self.txn()?;
        let mut table = txn.open_table(VALUES).map_err(db_err)?;
        let exists = table.get(record.key.as_slice()).map_err(db_err)?.is_some();
        if !exists && table.len().map_err(db_err)? >= max_records {
            return Err(StoreError::Full);
        }
        let bytes = codec::encode_value(
            unix_secs(record.received),
            unix_secs(record.expires),
            &record.value,
        );
        table
            .insert(record.key.as_slice(), bytes.as_slice())
            .map_err(db_err)?;
        drop(table);
        self.wrote()
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.txn()?
            .open_table(VALUES)
            .map_err(db_err)?
            .remove(key)
            .map_err(db_err)?;
        self.wrote()
    }
}

impl ProviderStore for PersistentStore {
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        let key = record.key.clone();
        let now = unix_secs(record.received);
        let record = match self.insert_providers(vec![record])?.pop() {
            None => return self.wrote(),
            Some(Err(e)) => return Err(e),
            Some(Ok(full)) => full,
        };
        // The key is full: make room only from expired records, never from live ones.
        if self.purge_key(&key, now)? == 0 {
            return Err(StoreError::TooManyProviders);
        }
        match self.insert_providers(vec![record])?.pop() {
            None => self.wrote(),
            Some(Err(e)) => Err(e),
            Some(Ok(_)) => Err(StoreError::TooManyProviders),
        }
    }

    fn providers(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<Vec<ProviderRecord>, StoreError> {
        if let Some(cached) = self.cache.get(key) {
            return Ok(cached.iter().filter(|p| p.expires > now).cloned().collect());
        }
        let all = self.read_providers(key)?;
        let live = all.iter().filter(|p| p.expires > now).cloned().collect();
        self.cache.insert(key.to_vec(), all);
        Ok(live)
    }

    fn remove_provider(&mut self, key: &[u8], provider: &PeerId) -> Result<(), StoreError> {
        let key_entry = codec::keyspace_key(key);
        let entry = codec::provider_entry_key(key, provider);
        {
            let txn = self.txn()?;
            let removed = txn
                .open_table(PROVIDERS)
                .map_err(db_err)?
                .remove(entry.as_slice())
                .map_err(db_err)?
                .is_some();
            if removed {
                let mut keys = txn.open_table(PROVIDER_KEYS).map_err(db_err)?;
                let count = keys
                    .get(key_entry.as_slice())
                    .map_err(db_err)?
                    .map_or(0, |v| v.value());
                if count <= 1 {
                    keys.remove(key_entry.as_slice()).map_err(db_err)?;
                } else {
                    keys.insert(key_entry.as_slice(), count - 1)
                        .map_err(db_err)?;
                }
            }
        }
        self.cache.remove(key);
        self.wrote()
    }

    fn provider_keys(&mut self, from: &Key, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let table = self.txn()?.open_table(PROVIDER_KEYS).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table
            .range(from.as_bytes().as_slice()..)
            .map_err(db_err)?
            .take(limit)
        {
            let (k, _) = item.map_err(db_err)?;
            out.push(k.value()[32..].to_vec());
        }
        Ok(out)
    }

    fn add_providers(&mut self, records: Vec<ProviderRecord>) -> Result<usize, StoreError> {
        let offered = records.len();
        // One pass over tables opened once; records of full keys take the slow path.
        let refused = self.insert_providers(records)?;
        let mut stored = offered - refused.len();
        self.buffered += stored;
        for record in refused.into_iter().flatten() {
            match self.add_provider(record) {
                Ok(()) => stored += 1,
                Err(StoreError::TooManyProviders | StoreError::Full) => {}
                Err(e) => return Err(e),
            }
        }
        if self.buffered >= self.config.max_buffered_writes {
            self.flush()?;
        }
        Ok(stored)
    }
}

impl Store for PersistentStore {
    fn flush(&mut self) -> Result<(), StoreError> {
        if let Some(txn) = self.txn.take() {
            if self.buffered > 0 {
                txn.commit().map_err(db_err)?;
            } else {
                txn.abort().map_err(db_err)?;
            }
        }
        self.buffered = 0;
        Ok(())
    }

    fn gc(&mut self, now: SystemTime, budget: usize) -> Result<GcProgress, StoreError> {
        let now = unix_secs(now);
        let budget = budget.max(1);
        let mut progress = GcProgress::default();
        let cursor = std::mem::replace(&mut self.gc_cursor, GcCursor::Values(Vec::new()));
        let (examined, removed, next) = match cursor {
            GcCursor::Values(from) => {
                let (examined, removed, next) = self.gc_values(from, now, budget)?;
                let cursor = match next {
                    Some(key) => GcCursor::Values(key),
                    None => GcCursor::Providers(Vec::new()),
                };
                (examined, removed, Some(cursor))
            }
            GcCursor::Providers(from) => {
                let (examined, removed, next) = self.gc_providers(from, now, budget)?;
                progress.done = next.is_none();
                (examined, removed, next.map(GcCursor::Providers))
            }
        };
        progress.examined = examined;
        progress.removed = removed;
        // Removals are writes: the next flush must commit them.
        self.buffered += removed;
        self.gc_cursor = next.unwrap_or(GcCursor::Values(Vec::new()));
        Ok(progress)
    }

    fn add_provided(&mut self, key: &[u8], now: SystemTime) -> Result<(), StoreError> {
        let entry = codec::keyspace_key(key);
        {
            let txn = self.txn()?;
            let mut table = txn.open_table(PROVIDED).map_err(db_err)?;
            if table.get(entry.as_slice()).map_err(db_err)?.is_some() {
                return Ok(());
            }
            let value = codec::encode_provided(unix_secs(now), 0, 0);
            table
                .insert(entry.as_slice(), value.as_slice())
                .map_err(db_err)?;
        }
        self.wrote()
    }

    fn remove_provided(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let entry = codec::keyspace_key(key);
        self.txn()?
            .open_table(PROVIDED)
            .map_err(db_err)?
            .remove(entry.as_slice())
            .map_err(db_err)?;
        self.wrote()
    }

    fn provided(&mut self, from: &Key, limit: usize) -> Result<Vec<ProvidedKey>, StoreError> {
        let table = self.txn()?.open_table(PROVIDED).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table
            .range(from.as_bytes().as_slice()..)
            .map_err(db_err)?
            .take(limit)
        {
            let (k, v) = item.map_err(db_err)?;
            let (added, last, peers) = codec::decode_provided(v.value())?;
            out.push(ProvidedKey {
                key: k.value()[32..].to_vec(),
                added: from_unix_secs(added),
                last_provided: (last > 0).then(|| from_unix_secs(last)),
                peers,
            });
        }
        Ok(out)
    }

    fn set_provided_status(
        &mut self,
        key: &[u8],
        at: SystemTime,
        peers: u16,
    ) -> Result<(), StoreError> {
        let entry = codec::keyspace_key(key);
        {
            let txn = self.txn()?;
            let mut table = txn.open_table(PROVIDED).map_err(db_err)?;
            let Some(stored) = table.get(entry.as_slice()).map_err(db_err)? else {
                return Ok(());
            };
            let (added, _, _) = codec::decode_provided(stored.value())?;
            drop(stored);
            let value = codec::encode_provided(added, unix_secs(at).max(1), peers);
            table
                .insert(entry.as_slice(), value.as_slice())
                .map_err(db_err)?;
        }
        self.wrote()
    }

    fn provided_len(&mut self) -> Result<u64, StoreError> {
        let table = self.txn()?.open_table(PROVIDED).map_err(db_err)?;
        table.len().map_err(db_err)
    }

    fn save_routing_snapshot(
        &mut self,
        peers: &[(PeerId, Vec<Multiaddr>)],
    ) -> Result<(), StoreError> {
        self.save_routing_table(peers)
    }

    fn load_routing_snapshot(&mut self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, StoreError> {
        self.load_routing_table()
    }
}

#[cfg(test)]
#[path = "persistent_tests.rs"]
mod tests;
