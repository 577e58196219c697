//! [`PersistentStore`]: records on disk in an embedded database (redb: pure Rust, ACID,
//! crash-safe copy-on-write B-trees), with an LRU cache of hot provider keys in front.
//!
//! ## The disk is never on the caller's path
//! A commit with an fsync takes tens of milliseconds, and the behaviour calls the store from the
//! swarm's `poll`: waiting there would stall every behaviour of the swarm. So the store commits
//! on a writer thread of its own (`persistent_writer.rs`). A write is applied to an in-memory
//! overlay (`persistent_overlay.rs`) and returns; [`Store::start_flush`] (the behaviour's flush
//! timer, every 100 ms by default) hands the batch to the writer through a bounded queue, and
//! the writer's completions come back through [`Store::poll_background`]. Reads look at the
//! overlay first, then at the database (a point read or a short range of the committed state),
//! so they see every accepted write, buffered or being committed. Long scans (GC, the pages of
//! provided keys the reprovide sweep reads) run on the writer thread too, and their results are
//! merged with the overlay when they come back.
//!
//! ## What is acknowledged, what a crash may lose
//! A write that returned `Ok` is visible to every later read at once, and durable once the
//! writer has committed its batch: [`Store::flush`] returns when everything accepted before it
//! is (it waits: never call it from `poll`), [`PersistentStore::durable_writes`] tells without
//! waiting. A crash loses at most the writes not committed yet: those since the last hand-over
//! (one flush interval) and the batches waiting for the writer, never a committed one, and never
//! leaves the file half-written. A clean close (drop) commits everything first.
//!
//! ## When the disk is slower than the writes
//! Accepted writes that are not durable yet are bounded in bytes
//! ([`PersistentStoreConfig::max_unwritten_bytes`]). Past the bound, records from the network
//! ([`RecordStore::put`], [`ProviderStore::add_provider`], [`ProviderStore::add_providers`])
//! are refused with [`StoreError::Busy`] until the writer catches up: a flood faster than the
//! disk costs refusals, not memory, and never a wait. The node's own bookkeeping (provided
//! keys, GC removals, the routing and crawl snapshots) is still taken. Batches queued behind a
//! slow commit go to the disk together, in one transaction.
//!
//! ## Bounds and quotas
//! Records are bounded in count and in disk bytes ([`PersistentStoreConfig::max_record_bytes`],
//! [`PersistentStoreConfig::max_provider_bytes`]), the cache in keys and in heap bytes. What
//! the network writes is charged to its source, and a full store makes room from the source
//! holding the most, as the memory store does ([`Source`]); the books are on disk
//! (`persistent_quota.rs`), so they cost memory per network block, not per record.
//!
//! The layout is in `persistent_codec.rs`.

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use fnv::FnvHashMap;
use futures::task::AtomicWaker;
use libp2p::{Multiaddr, PeerId};
use redb::{
    Database, DatabaseError, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    ReadableTableMetadata, StorageError,
};

#[path = "persistent_io.rs"]
mod io;
#[path = "persistent_overlay.rs"]
mod overlay;
#[path = "persistent_provided.rs"]
mod provided;
#[path = "persistent_quota.rs"]
mod quota;
#[path = "persistent_records.rs"]
mod records;
#[path = "persistent_writer.rs"]
mod writer;

use super::persistent_codec::{self as codec, Charge, ValueFields, SCHEMA_VERSION};
use super::ValueRecord;
use super::{from_unix_secs, unix_secs, Background, GcProgress, ProviderRecord, ProviderStore};
use super::{
    CrawlSnapshot, ProvidedKey, ProvidedPage, RecordStore, Source, Store, StoreError, StoreSizes,
};
use crate::key::Key;
use crate::provider::SweepMark;
use io::{CrawlState, Snapshot, Writer};
use overlay::Overlay;
use quota::{Charged, GroupBooks, Kind, NewSlot};
use records::{value_cost, ProviderCache};
use writer::{count_of, db_err, Job, Table};
use writer::{META, PROVIDED, PROVIDERS, PROVIDER_KEYS, ROUTING, SOURCES, VALUES};

/// Jobs (commits and scans) given to the writer thread and not finished. What bounds the
/// memory is [`PersistentStoreConfig::max_unwritten_bytes`]: writes that wait behind a full
/// queue stay in the overlay and go with a later job. The writer commits the batches queued
/// behind each other in one transaction, up to this many.
const MAX_JOBS: usize = 8;

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
    /// Most heap, in bytes, the cached provider records take (as estimated); the least
    /// recently used keys leave first. Default 8 MiB: the 256 keys with a few providers of a
    /// few addresses each, while 256 full keys of 256 providers with 16 addresses each (some
    /// 50 MB) no longer fit.
    pub max_cache_bytes: usize,
    /// Most writes handed to the writer thread in one batch, and writes buffered before they
    /// are handed over without waiting for the next [`Store::start_flush`]. The work of a
    /// hand-over, and of taking back its completion, grows with it and happens on the
    /// caller's thread (the swarm's, for the behaviour): at the default 256 each takes tens of
    /// microseconds (a new provider record is two writes: the record and its key's count).
    /// The size of a commit does not depend on it: the writer commits the batches queued
    /// behind each other together.
    pub max_buffered_writes: usize,
    /// Bytes of accepted writes that are not durable yet (buffered, or with the writer thread
    /// and not committed). Past it, records from the network are refused with
    /// [`StoreError::Busy`] until the writer catches up, so that a flood faster than the disk
    /// cannot grow the memory, nor make the caller wait. Default 32 MiB: about 40,000 provider
    /// records, several batch commits even at the slowest rate measured (BENCHMARKS.md).
    pub max_unwritten_bytes: usize,
    /// Most disk, in bytes, that value records take (as the store estimates it: entries and
    /// their share of the B-trees and of the quota bookkeeping). Default 256 MiB: every one of
    /// the 65,536 records at 4 KiB (an IPNS record is at most 10 KiB, most are well under 1).
    pub max_record_bytes: u64,
    /// Most disk, in bytes, that provider records take (estimated likewise). Default 4 GiB:
    /// the 10,000,000 keys with one honest provider each (a few addresses, about 300 bytes),
    /// while a store filled with hostile 8 KiB entries stops at 4 GiB instead of 110 GiB.
    /// When full (in count or in bytes), the source holding the most makes room
    /// ([`Source`](super::Source)).
    pub max_provider_bytes: u64,
    /// Memory redb may keep as a cache of the file's pages. Default 128 MiB (redb's own
    /// default is 1 GiB: a node reading 10 million provided keys grew by that much).
    pub page_cache_bytes: usize,
    /// Bytes of provided keys a bulk call ([`Store::add_provided_many`]) may leave waiting
    /// for the disk before it waits itself. Large, so that a commit carries many keys per
    /// B-tree page it rewrites: the keys land all over the keyspace. Default 256 MiB, commits
    /// of about a million keys (`persistent_provided.rs`). While it is above
    /// `max_unwritten_bytes`, records from the network are refused as [`StoreError::Busy`].
    pub max_bulk_bytes: usize,
    /// Whether dropping the store compacts the file after bulk calls wrote 100,000 keys or
    /// more, giving back the pages their copy-on-write commits left free: after 10 million
    /// keys, from 228-430 bytes a key to 89, in 23-36 s of the drop (a million: 0.8 s).
    /// Default `true`.
    pub compact_after_bulk: bool,
}

impl Default for PersistentStoreConfig {
    fn default() -> Self {
        Self {
            max_records: 65_536,
            max_value_size: 64 * 1024,
            max_provider_keys: 10_000_000,
            max_providers_per_key: 256,
            cache_keys: 256,
            max_cache_bytes: 8 << 20,
            max_buffered_writes: 256,
            max_unwritten_bytes: 32 * 1024 * 1024,
            max_record_bytes: 256 << 20,
            max_provider_bytes: 4 << 30,
            page_cache_bytes: 128 << 20,
            max_bulk_bytes: 256 << 20,
            compact_after_bulk: true,
        }
    }
}

/// Where GC resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum GcCursor {
    Values(Vec<u8>),
    Providers(Vec<u8>),
}

impl GcCursor {
    fn table(&self) -> (Table, &[u8]) {
        match self {
            GcCursor::Values(from) => (Table::Values, from),
            GcCursor::Providers(from) => (Table::Providers, from),
        }
    }
}

/// Peers of a routing snapshot.
type Peers = Vec<(PeerId, Vec<Multiaddr>)>;

/// What a scan on the writer thread was for.
enum ScanFor {
    Gc { now: u64, from: Vec<u8> },
    Provided { tag: u64, from: Key },
}

/// Entry counts of the store as readers see it (the database and the overlay), kept up to date
/// by every write: the bounds are checked against them without counting on disk.
#[derive(Debug, Default)]
struct Lens {
    values: u64,
    provider_keys: u64,
    provided: u64,
}

/// Records on disk (see the module docs).
pub struct PersistentStore {
    db: Arc<Database>,
    config: PersistentStoreConfig,
    overlay: Overlay,
    snapshot: Option<Snapshot>,
    writer: Option<Writer>,
    /// Jobs given to the writer and not finished.
    jobs: usize,
    /// Scans waiting for room in the writer's queue.
    deferred: VecDeque<Job>,
    scans: FnvHashMap<u64, ScanFor>,
    next_scan: u64,
    finished: VecDeque<Background>,
    /// The latest routing snapshot not yet durable, and the batch carrying it (`None`: not
    /// handed over yet).
    routing: Option<(Option<u64>, Peers)>,
    /// The latest crawl snapshot not yet durable.
    crawl: CrawlState,
    /// A commit failed: reported by the next flush.
    error: Option<StoreError>,
    /// A hand-over found the writer's queue full: retried as soon as a job finishes.
    flush_wanted: bool,
    cache: ProviderCache,
    lens: Lens,
    /// Bytes charged to each group, for value and provider records (the rest of the quota
    /// books is on disk).
    value_books: GroupBooks,
    provider_books: GroupBooks,
    /// The order place given to the last record written ([`Charge::written`]).
    last_written: u64,
    gc_cursor: GcCursor,
    gc_scan: Option<u64>,
    /// Keys written by bulk calls since the store was opened (see `compact_after_bulk`).
    bulk_written: u64,
    /// The sweep's latest mark, and whether the writer has yet to get it.
    sweep_mark: Option<SweepMark>,
    sweep_mark_unsent: bool,
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

/// The first table key strictly after `key`.
fn after(key: &[u8]) -> Vec<u8> {
    let mut next = key.to_vec();
    next.push(0);
    next
}

impl PersistentStore {
    /// Opens the store at `path`, creating it if the file does not exist or is empty, and
    /// starts its writer thread. A file that is not a kadence store, or one of another schema
    /// version, is refused with a typed error and left as it is (except a redb file needing
    /// crash recovery, which the recovery writes to before its schema can be read).
    pub fn open(path: impl AsRef<Path>, config: PersistentStoreConfig) -> Result<Self, StoreError> {
        let path = path.as_ref();
        let exists = std::fs::metadata(path).is_ok_and(|m| m.len() > 0);
        // Checked read-only first: opening a database for writing may already write to it.
        let checked = exists && Self::check_existing(path)?;
        let db = Database::builder()
            .set_cache_size(config.page_cache_bytes)
            .create(path)
            .map_err(open_err)?;
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
                txn.open_table(SOURCES).map_err(db_err)?;
            }
            txn.commit().map_err(db_err)?;
        } else {
            Self::add_sources_table(&db)?;
            Self::migrate_provided(&db)?;
        }
        let sweep_mark = Self::read_sweep_mark(&db)?;
        let snapshot = Snapshot::open(&db)?;
        let lens = Lens {
            values: snapshot.values.len().map_err(db_err)?,
            provider_keys: snapshot.provider_keys.len().map_err(db_err)?,
            provided: snapshot.provided.len().map_err(db_err)?,
        };
        let db = Arc::new(db);
        let (jobs, job_queue) = mpsc::sync_channel(MAX_JOBS);
        let (done_tx, done) = mpsc::channel();
        let waker = Arc::new(AtomicWaker::new());
        let thread = {
            let (db, waker) = (db.clone(), waker.clone());
            std::thread::Builder::new()
                .name("kadence-store".into())
                .spawn(move || writer::run(db, job_queue, done_tx, waker))
                .map_err(db_err)?
        };
        let mut store = Self {
            db,
            cache: ProviderCache::new(config.cache_keys, config.max_cache_bytes),
            config,
            overlay: Overlay::default(),
            snapshot: Some(snapshot),
            writer: Some(Writer {
                jobs,
                done,
                waker,
                thread: Some(thread),
            }),
            jobs: 0,
            deferred: VecDeque::new(),
            scans: FnvHashMap::default(),
            next_scan: 0,
            finished: VecDeque::new(),
            routing: None,
            crawl: CrawlState::Durable,
            error: None,
            flush_wanted: false,
            lens,
            value_books: GroupBooks::default(),
            provider_books: GroupBooks::default(),
            last_written: 0,
            gc_cursor: GcCursor::Values(Vec::new()),
            gc_scan: None,
            bulk_written: 0,
            sweep_mark,
            sweep_mark_unsent: false,
        };
        store.load_books()?;
        Ok(store)
    }

    /// A store written before per-source quotas has no `sources` table: it is added (its
    /// records were charged to no one, and count as the local node's).
    fn add_sources_table(db: &Database) -> Result<(), StoreError> {
        let read = db.begin_read().map_err(db_err)?;
        if read.open_table(SOURCES).is_ok() {
            return Ok(());
        }
        drop(read);
        let txn = db.begin_write().map_err(db_err)?;
        txn.open_table(SOURCES).map_err(db_err)?;
        txn.commit().map_err(db_err)
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
        if found != SCHEMA_VERSION && found != codec::SCHEMA_V1 {
            return Err(StoreError::SchemaVersion {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: SCHEMA_VERSION as u32,
            });
        }
        Ok(())
    }

    /// How many writes this store has accepted since it was opened; with
    /// [`PersistentStore::durable_writes`], what a crash could lose right now.
    pub fn accepted_writes(&self) -> u64 {
        self.overlay.accepted()
    }

    /// How many of the [accepted](PersistentStore::accepted_writes) writes are durable:
    /// committed by the writer thread, so that a crash can no longer lose them. Never waits.
    pub fn durable_writes(&mut self) -> u64 {
        self.collect();
        self.overlay.durable()
    }

    fn provider_count(&mut self, key_entry: &[u8]) -> Result<u32, StoreError> {
        Ok(self
            .read(Table::ProviderKeys, key_entry)?
            .map_or(0, |v| count_of(&v)))
    }

    fn read_providers(&mut self, key: &[u8]) -> Result<Vec<ProviderRecord>, StoreError> {
        let prefix = codec::providers_prefix(key);
        let entries = self.read_range(Table::Providers, &prefix, usize::MAX, |k| {
            !k.starts_with(&prefix)
        })?;
        let mut out = Vec::with_capacity(entries.len());
        for (entry, value) in entries {
            let provider = PeerId::from_bytes(&entry[prefix.len()..])
                .map_err(|_| StoreError::Corrupt("provider entry".into()))?;
            let fields = codec::decode_provider(&value)?;
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
}

impl RecordStore for PersistentStore {
    fn get(&mut self, key: &[u8], now: SystemTime) -> Result<Option<ValueRecord>, StoreError> {
        let Some(stored) = self.read(Table::Values, key)? else {
            return Ok(None);
        };
        let stored = codec::decode_value(&stored)?;
        if stored.expires <= unix_secs(now) {
            return Ok(None);
        }
        Ok(Some(ValueRecord {
            key: key.to_vec(),
            value: stored.value,
            received: from_unix_secs(stored.received),
            expires: from_unix_secs(stored.expires),
        }))
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
        self.admit()?;
        let old = self
            .read(Table::Values, &record.key)?
            .map(|v| codec::decode_value(&v))
            .transpose()?;
        let account = source.account();
        let mut fields = ValueFields {
            received: unix_secs(record.received),
            expires: unix_secs(record.expires),
            charge: Some(Charge {
                group: account.map(|a| a.group),
                cost: 0,
                written: 0,
            }),
            holder: account.map(|a| a.holder),
            value: record.value,
        };
        let cost = value_cost(&record.key, &codec::encode_value(&fields));
        let replacing = old.as_ref().and_then(|o| o.charge).map_or(0, |c| c.cost);
        let slot = match old {
            None => NewSlot::Value,
            Some(_) => NewSlot::None,
        };
        self.make_room(Kind::Values, account, cost, replacing, slot, &record.key)?;
        self.remove_value(&record.key)?;
        let charge = Charge {
            group: account.map(|a| a.group),
            cost,
            written: self.next_written(fields.received),
        };
        fields.charge = Some(charge);
        self.write(
            Table::Values,
            record.key.clone(),
            Some(codec::encode_value(&fields)),
        );
        self.lens.values += 1;
        let charged = Charged {
            charge,
            holder: fields.holder,
            record: &record.key,
        };
        self.charge(Kind::Values, charged)
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.remove_value(key)
    }
}

impl ProviderStore for PersistentStore {
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError> {
        self.add_provider_from(record, Source::Local)
    }

    fn add_provider_from(
        &mut self,
        record: ProviderRecord,
        source: Source,
    ) -> Result<(), StoreError> {
        self.admit()?;
        let key = record.key.clone();
        let now = unix_secs(record.received);
        let writer = source.account().map(|a| a.group);
        let mut record = (record, source);
        // A full key makes room from expired providers first, then by the quota rule.
        for attempt in 0..3 {
            record = match self.insert_providers(vec![record])?.pop() {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(full)) => full,
            };
            match attempt {
                0 if self.purge_key(&key, now)? > 0 => {}
                0 | 1 => self.make_room_on_key(&key, writer)?,
                _ => {}
            }
        }
        Err(StoreError::TooManyProviders)
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
        self.remove_provider_entry(key, provider)
    }

    fn provider_keys(&mut self, from: &Key, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let entries = self.read_range(Table::ProviderKeys, from.as_bytes(), limit, |_| false)?;
        Ok(entries.into_iter().map(|(k, _)| k[32..].to_vec()).collect())
    }

    fn add_providers(&mut self, records: Vec<ProviderRecord>) -> Result<usize, StoreError> {
        self.admit()?;
        let offered = records.len();
        // One pass; records of full keys take the slow path.
        let records = records.into_iter().map(|r| (r, Source::Local)).collect();
        let refused = self.insert_providers(records)?;
        let mut stored = offered - refused.len();
        for (record, source) in refused.into_iter().flatten() {
            match self.add_provider_from(record, source) {
                Ok(()) => stored += 1,
                Err(StoreError::TooManyProviders | StoreError::Full) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(stored)
    }
}

impl Store for PersistentStore {
    /// Below half the bound of bulk writes not yet durable: a few thousand keys fit, no wait.
    fn ready_for_bulk(&self) -> bool {
        self.overlay.bytes() < self.config.max_bulk_bytes / 2
    }

    /// The counts kept for the bounds (bytes are on disk, not counted).
    fn sizes(&self) -> StoreSizes {
        StoreSizes {
            records: self.lens.values,
            provider_keys: self.lens.provider_keys,
            ..StoreSizes::default()
        }
    }

    /// Hands every accepted write to the writer and waits until all are durable. This waits for
    /// the disk: the behaviour never calls it from `poll` (it uses [`Store::start_flush`]).
    fn flush(&mut self) -> Result<(), StoreError> {
        self.collect();
        loop {
            self.hand_over();
            if !self.flush_wanted || self.writer.is_none() {
                break;
            }
            self.wait_one()?; // The queue is full: wait for room.
        }
        while self.overlay.in_flight() > 0 && self.writer.is_some() {
            self.wait_one()?;
        }
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn start_flush(&mut self) -> Result<(), StoreError> {
        self.collect();
        self.hand_over();
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }

    fn start_gc(
        &mut self,
        now: SystemTime,
        budget: usize,
    ) -> Result<Option<GcProgress>, StoreError> {
        self.collect();
        if self.gc_scan.is_none() {
            let (table, from) = self.gc_cursor.table();
            let from = from.to_vec();
            let purpose = ScanFor::Gc {
                now: unix_secs(now),
                from: from.clone(),
            };
            self.gc_scan = Some(self.next_scan);
            self.scan(table, from, budget.max(1), purpose);
        }
        Ok(None)
    }

    fn start_load_provided(
        &mut self,
        tag: u64,
        from: &Key,
        limit: usize,
    ) -> Result<Option<ProvidedPage>, StoreError> {
        self.collect();
        let purpose = ScanFor::Provided { tag, from: *from };
        let bound = codec::provided_bound(from);
        self.scan(Table::Provided, bound, limit.max(1), purpose);
        Ok(None)
    }

    fn poll_background(&mut self, cx: &mut Context<'_>) -> Poll<Background> {
        if let Some(writer) = &self.writer {
            // Registered before looking, so that a job finishing meanwhile still wakes us.
            writer.waker.register(cx.waker());
        }
        self.collect();
        match self.finished.pop_front() {
            Some(done) => Poll::Ready(done),
            None => Poll::Pending,
        }
    }

    /// One GC step on the caller's thread: reads up to `budget` entries (use
    /// [`Store::start_gc`] where waiting for the disk is not allowed).
    fn gc(&mut self, now: SystemTime, budget: usize) -> Result<GcProgress, StoreError> {
        self.collect();
        let (table, from) = self.gc_cursor.table();
        let from = from.to_vec();
        let budget = budget.max(1);
        let entries = self.read_range(table, &from, budget, |_| false)?;
        let complete = entries.len() < budget;
        self.gc_page(&from, entries, complete, unix_secs(now))
    }

    fn add_provided(&mut self, key: &[u8], now: SystemTime) -> Result<(), StoreError> {
        self.add_provided_one(key, now)
    }

    fn remove_provided(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.remove_provided_one(key)
    }

    /// In chunks, waiting for the disk past `max_unwritten_bytes` (`persistent_provided.rs`).
    fn add_provided_many(
        &mut self,
        keys: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        self.add_provided_bulk(keys, now)
    }

    fn remove_provided_many(&mut self, keys: &[Vec<u8>]) -> Result<usize, StoreError> {
        self.remove_provided_bulk(keys)
    }

    fn provided(&mut self, from: &Key, limit: usize) -> Result<Vec<ProvidedKey>, StoreError> {
        self.provided_from(from, limit)
    }

    fn set_provided_status(
        &mut self,
        key: &[u8],
        at: SystemTime,
        peers: u16,
    ) -> Result<(), StoreError> {
        let entry = codec::provided_entry(key);
        let Some(stored) = self.read(Table::Provided, &entry)? else {
            return Ok(());
        };
        let (added, _, _) = codec::decode_provided(&stored)?;
        let value = codec::encode_provided(added, unix_secs(at).max(1), peers);
        self.write(Table::Provided, entry, Some(value));
        Ok(())
    }

    fn provided_len(&mut self) -> Result<u64, StoreError> {
        Ok(self.lens.provided)
    }

    fn sweep_mark(&mut self) -> Result<Option<SweepMark>, StoreError> {
        Ok(self.sweep_mark)
    }

    /// Kept with the writer's next commit.
    fn save_sweep_mark(&mut self, mark: SweepMark) -> Result<(), StoreError> {
        self.sweep_mark_unsent |= self.sweep_mark != Some(mark);
        self.sweep_mark = Some(mark);
        Ok(())
    }

    /// Keeps the peers for the writer's next commit, without waiting for it.
    fn save_routing_snapshot(
        &mut self,
        peers: &[(PeerId, Vec<Multiaddr>)],
    ) -> Result<(), StoreError> {
        self.routing = Some((None, peers.to_vec()));
        self.collect();
        self.hand_over();
        Ok(())
    }

    fn load_routing_snapshot(&mut self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, StoreError> {
        if let Some((_, peers)) = &self.routing {
            return Ok(peers.clone());
        }
        let read = self.db.begin_read().map_err(db_err)?;
        let table = read.open_table(ROUTING).map_err(db_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(db_err)? {
            let (k, v) = item.map_err(db_err)?;
            let peer = PeerId::from_bytes(k.value())
                .map_err(|_| StoreError::Corrupt("routing entry".into()))?;
            out.push((peer, codec::decode_routing(v.value())?));
        }
        Ok(out)
    }

    /// Hands the snapshot to the writer thread, which encodes and commits it: this neither
    /// waits for the disk nor copies the peers. A newer snapshot replaces one not committed.
    fn save_crawl_snapshot(&mut self, snapshot: CrawlSnapshot) -> Result<(), StoreError> {
        self.save_crawl(snapshot);
        Ok(())
    }

    /// Waits for the disk when the latest snapshot is being committed (then reads it back).
    fn load_crawl_snapshot(&mut self) -> Result<Option<CrawlSnapshot>, StoreError> {
        self.load_crawl()
    }
}

#[cfg(test)]
#[path = "persistent_tests.rs"]
mod tests;
