//! Provider Store and value records: what this node holds for the network, and the keys it
//! provides itself.
//!
//! [`RecordStore`] and [`ProviderStore`] are the contracts (a [`Store`] is both);
//! [`MemoryStore`] keeps everything in memory, [`PersistentStore`] in an embedded database with
//! an LRU cache in front. Every implementation must pass the same test suite.
//!
//! ## Time
//! Expiry is wall-clock time ([`SystemTime`], stored as Unix seconds), so that a record's
//! lifetime survives a restart. Every read takes `now` and never returns an expired record;
//! [`Store::gc`] removes expired entries in bounded batches.
//!
//! ## Work per call
//! The behaviour calls the store from its `poll`, on the swarm's task: a call must never wait
//! for the disk. A store that does I/O does it on a thread of its own and reports through
//! [`Store::poll_background`]: the behaviour hands writes over with [`Store::start_flush`]
//! and runs GC with [`Store::start_gc`], never the waiting [`Store::flush`] and [`Store::gc`].
//! [`PersistentStore`] commits on its writer thread and reads through an in-memory overlay of
//! the writes not yet durable, then point reads of the committed state; reads of hot keys come
//! from its cache.
//!
//! ## The provider record
//! "Peer P provides key K, reachable at addresses A": the key (a multihash on the public
//! network, at most 80 bytes), the provider's peer id, its addresses, when it was received,
//! when it expires (48 h later on Amino) and when its addresses stop being handed out (24 h:
//! addresses go stale sooner than the fact that a peer provides the key; after that the record
//! is returned without addresses and the asker looks the peer up). A key has at most a
//! configured number of providers; a known provider always renews its record, an unknown one is
//! refused when the key is full, so a Sybil flood cannot push out honest providers.
//!
//! ## Bounds and quotas
//! Stores are bounded in count and in bytes. What the network writes is charged to its source
//! (the writing peer, within the network block its connection came from: [`Source`]); when a
//! bound is reached, the source holding the most makes room for a source holding less, and a
//! write from the source holding the most is refused. So a flood from one peer, or from many
//! peers in one network block, fills only what nobody else wants and locks nobody out (the
//! rule and why it cannot be gamed: [`Source`]).

mod memory;
mod persistent;
mod persistent_codec;
mod quota;

use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use libp2p::{Multiaddr, PeerId};

pub use memory::{FullPolicy, MemoryStore, MemoryStoreConfig};

pub use persistent::{PersistentStore, PersistentStoreConfig};
pub use quota::{NetGroup, Source};

use crate::key::Key;
use crate::provider::SweepMark;

/// A value record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRecord {
    /// The record key (`/<namespace>/...`).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// When this node received it.
    pub received: SystemTime,
    /// When it stops being served.
    pub expires: SystemTime,
}

/// A provider record as stored: `provider` provides `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The provided key.
    pub key: Vec<u8>,
    /// The providing peer.
    pub provider: PeerId,
    /// Where the provider said it can be reached.
    pub addrs: Vec<Multiaddr>,
    /// When this node received the announcement.
    pub received: SystemTime,
    /// When the record stops being served.
    pub expires: SystemTime,
    /// When the addresses stop being handed out with the record.
    pub addrs_expire: SystemTime,
}

/// A key this node provides (the Provider's list), with its reprovide status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedKey {
    /// The provided key.
    pub key: Vec<u8>,
    /// When it was added to the list.
    pub added: SystemTime,
    /// When it was last announced, if ever.
    pub last_provided: Option<SystemTime>,
    /// How many peers took the last announcement.
    pub peers: u16,
}

/// The accelerated client's crawled table, as saved for the next run
/// ([`Store::save_crawl_snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrawlSnapshot {
    /// When the crawl that produced it (or the last merge into it) finished: how stale the
    /// table is when a restarted node loads it. Default: the Unix epoch.
    pub saved_at: SystemTime,
    /// The servers, each with its addresses (most useful first).
    pub peers: Vec<(PeerId, Vec<Multiaddr>)>,
}

// `SystemTime` has no `Default`: the epoch reads as "saved long ago".
impl Default for CrawlSnapshot {
    fn default() -> Self {
        Self {
            saved_at: SystemTime::UNIX_EPOCH,
            peers: Vec::new(),
        }
    }
}

/// Lifetimes applied to what the network stores at this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long a provider record is valid. Amino: 48 h.
    pub provider_validity: Duration,
    /// How long a provider's addresses are handed out. Amino: 24 h.
    pub provider_addrs: Duration,
    /// How long a value record is kept. Amino: 48 h.
    pub value_max_age: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            provider_validity: Duration::from_secs(48 * 3600),
            provider_addrs: Duration::from_secs(24 * 3600),
            value_max_age: Duration::from_secs(48 * 3600),
        }
    }
}

/// Why a store refused or failed an operation. A refusal changes nothing already stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The value is larger than the store accepts.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store holds the most records (or provider keys) it may.
    #[error("store full")]
    Full,
    /// The key already has the most providers it may; existing ones are kept.
    #[error("too many providers for this key")]
    TooManyProviders,
    /// The database file was written by another schema version; it was not touched.
    #[error("store schema version {found} found, this build reads version {supported}")]
    SchemaVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// The file at the data path is not a kadence store (or is damaged); it was not touched.
    #[error("not a kadence store: {0}")]
    Corrupt(String),
    /// The database failed (I/O, disk full, ...).
    #[error("database: {0}")]
    Database(String),
    /// More accepted writes wait for the disk than the store may hold (a persistent store's
    /// writer thread is behind): this write was refused, nothing changed. Retry later.
    #[error("store busy: too many writes wait for the disk")]
    Busy,
}

/// Value records, by key.
pub trait RecordStore: Send + 'static {
    /// The record under `key`, unless absent or expired at `now`.
    fn get(&mut self, key: &[u8], now: SystemTime) -> Result<Option<ValueRecord>, StoreError>;
    /// Stores or replaces the record under its key, written by this node ([`Source::Local`]).
    fn put(&mut self, record: ValueRecord) -> Result<(), StoreError>;

    /// Stores or replaces the record under its key, written by `source`: a store with
    /// per-source quotas charges it there (see [`Source`]). The default ignores the source.
    fn put_from(&mut self, record: ValueRecord, source: Source) -> Result<(), StoreError> {
        let _ = source;
        self.put(record)
    }
    /// Removes the record under `key`.
    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError>;
}

/// Provider records, by key.
pub trait ProviderStore: Send + 'static {
    /// Adds (or renews, when the provider is already known for the key) a provider record,
    /// written by this node ([`Source::Local`]).
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError>;

    /// Adds or renews a provider record written by `source`: a store with per-source quotas
    /// charges it to the provider, in the source's network block (see [`Source`]). The default
    /// ignores the source.
    fn add_provider_from(
        &mut self,
        record: ProviderRecord,
        source: Source,
    ) -> Result<(), StoreError> {
        let _ = source;
        self.add_provider(record)
    }

    /// Adds many records at once; one refused (a full key) does not stop the others. Returns
    /// how many were stored; an error is a failure of the store itself.
    fn add_providers(&mut self, records: Vec<ProviderRecord>) -> Result<usize, StoreError> {
        let mut stored = 0;
        for record in records {
            match self.add_provider(record) {
                Ok(()) => stored += 1,
                Err(StoreError::TooManyProviders | StoreError::Full) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(stored)
    }

    /// The providers of `key` not expired at `now`, with their addresses.
    fn providers(&mut self, key: &[u8], now: SystemTime)
        -> Result<Vec<ProviderRecord>, StoreError>;

    /// Removes one provider of a key.
    fn remove_provider(&mut self, key: &[u8], provider: &PeerId) -> Result<(), StoreError>;

    /// Up to `limit` provider keys in keyspace order (by [`Key`], the SHA-256 of the key),
    /// starting at `from` (inclusive). Walks the keyspace region by region.
    fn provider_keys(&mut self, from: &Key, limit: usize) -> Result<Vec<Vec<u8>>, StoreError>;
}

/// What a store holds ([`Store::sizes`]); a figure the store does not keep is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreSizes {
    /// Value records (expired ones included until collected).
    pub records: u64,
    /// Their size as the store counts it against its bound.
    pub record_bytes: Option<u64>,
    /// Keys with provider records.
    pub provider_keys: u64,
    /// Provider records: one per key and provider.
    pub provider_records: Option<u64>,
    /// Their size as the store counts it against its bound.
    pub provider_bytes: Option<u64>,
}

/// Work the behaviour schedules on a store.
pub trait Store: RecordStore + ProviderStore {
    /// Makes buffered writes durable. In-memory stores have nothing to do.
    fn flush(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Whether a bulk call ([`Store::add_provided_many`], [`Store::remove_provided_many`]) of a
    /// few thousand keys returns now, without waiting for the disk: the behaviour runs the
    /// handle's bulk commands from `poll` only then. In-memory stores always can.
    fn ready_for_bulk(&self) -> bool {
        true
    }

    /// What the store holds now, for metrics and status lines: counts it keeps, never a scan
    /// (it is read from `poll`). The default knows nothing.
    fn sizes(&self) -> StoreSizes {
        StoreSizes::default()
    }

    /// Removes expired entries, examining about `budget` of them per call (an implementation
    /// may add a small bounded part, as [`MemoryStore`] sweeps its at most `max_records` value
    /// records when a pass starts). Returns whether a full pass has completed.
    fn gc(&mut self, now: SystemTime, budget: usize) -> Result<GcProgress, StoreError>;

    /// Adds `key` to the keys this node provides (idempotent: a known key keeps its status).
    fn add_provided(&mut self, key: &[u8], now: SystemTime) -> Result<(), StoreError>;

    /// Removes `key` from the keys this node provides.
    fn remove_provided(&mut self, key: &[u8]) -> Result<(), StoreError>;

    /// Adds many keys to the keys this node provides, as [`Store::add_provided`] does each:
    /// returns how many were not provided before (a key given twice, or already on the list,
    /// counts once and keeps its status). An error is a failure of the store; the keys before
    /// it may have been added.
    ///
    /// The default adds them one by one. [`PersistentStore`] adds them in bounded chunks, and
    /// waits for its writer thread when more than
    /// [`PersistentStoreConfig::max_bulk_bytes`] wait for the disk: a call of a
    /// million keys waits for the disk, so call it with a bounded slice from `poll` (the
    /// behaviour's [`Handle`](crate::Handle) sends a bulk call in bounded commands).
    fn add_provided_many(
        &mut self,
        keys: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        let before = self.provided_len()?;
        for key in keys {
            self.add_provided(key, now)?;
        }
        Ok(self.provided_len()?.saturating_sub(before) as usize)
    }

    /// Removes many keys from the keys this node provides: returns how many were provided
    /// (a key given twice, or not on the list, counts once or not at all). Waits for the disk
    /// as [`Store::add_provided_many`] does.
    fn remove_provided_many(&mut self, keys: &[Vec<u8>]) -> Result<usize, StoreError> {
        let before = self.provided_len()?;
        for key in keys {
            self.remove_provided(key)?;
        }
        Ok(before.saturating_sub(self.provided_len()?) as usize)
    }

    /// Up to `limit` provided keys in keyspace order from `from` (inclusive), with status.
    fn provided(&mut self, from: &Key, limit: usize) -> Result<Vec<ProvidedKey>, StoreError>;

    /// Records that `key` was announced at `at` to `peers` peers (no-op for unknown keys).
    fn set_provided_status(
        &mut self,
        key: &[u8],
        at: SystemTime,
        peers: u16,
    ) -> Result<(), StoreError>;

    /// Number of provided keys.
    fn provided_len(&mut self) -> Result<u64, StoreError>;

    /// The reprovide sweep's progress kept by [`Store::save_sweep_mark`] (`None`: none kept).
    /// Read once, when the behaviour is built: a restarted node skips, to catch up, the
    /// regions its sweep finished in the current cycle before it stopped. The default keeps
    /// nothing (a store that forgets everything on a restart has nothing to skip).
    fn sweep_mark(&mut self) -> Result<Option<SweepMark>, StoreError> {
        Ok(None)
    }

    /// Keeps how far the reprovide sweep got, without waiting for the disk; called each time
    /// a region finishes and the mark moves. Losing the latest mark in a crash only makes the
    /// next start read a few regions again.
    fn save_sweep_mark(&mut self, mark: SweepMark) -> Result<(), StoreError> {
        let _ = mark;
        Ok(())
    }

    /// Saves the routing table's peers, so that a restarted node rejoins without bootstrap
    /// peers. Stores that do not persist keep nothing.
    fn save_routing_snapshot(
        &mut self,
        peers: &[(PeerId, Vec<Multiaddr>)],
    ) -> Result<(), StoreError> {
        let _ = peers;
        Ok(())
    }

    /// The peers saved by [`Store::save_routing_snapshot`].
    fn load_routing_snapshot(&mut self) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, StoreError> {
        Ok(Vec::new())
    }

    /// Saves the accelerated client's crawled table, replacing the one saved before as a
    /// whole, so that a restarted node is accelerated at once instead of after a new crawl.
    /// Called from the behaviour's `poll` after a crawl: a store that does I/O must not wait
    /// for the disk here (taken by value, so that a table of 100,000 peers is moved, not
    /// copied). Stores that do not persist keep nothing.
    fn save_crawl_snapshot(&mut self, snapshot: CrawlSnapshot) -> Result<(), StoreError> {
        let _ = snapshot;
        Ok(())
    }

    /// The latest snapshot saved by [`Store::save_crawl_snapshot`], in this run or an earlier
    /// one (peers in the order they were saved); `None` when none was ever saved. It may read
    /// the disk: call it when starting, not from `poll`.
    fn load_crawl_snapshot(&mut self) -> Result<Option<CrawlSnapshot>, StoreError> {
        Ok(None)
    }

    // Work that must not wait for the disk. The behaviour calls these from its `poll`, on the
    // swarm's task: a store that does I/O does it on a thread of its own and reports through
    // `poll_background`. The defaults do the work at once, for stores that never wait.

    /// Starts making the writes accepted so far durable, without waiting for them to be (a
    /// [`PersistentStore`] hands them to its writer thread). The behaviour calls it on its flush
    /// timer; [`Store::flush`] is the call that waits.
    fn start_flush(&mut self) -> Result<(), StoreError> {
        self.flush()
    }

    /// Starts one [`Store::gc`] step without waiting for the disk: `Some` when it is done
    /// already, `None` when its outcome comes later as [`Background::Gc`].
    fn start_gc(
        &mut self,
        now: SystemTime,
        budget: usize,
    ) -> Result<Option<GcProgress>, StoreError> {
        self.gc(now, budget).map(Some)
    }

    /// Starts reading a page of the provided keys ([`Store::provided`]: up to `limit` keys in
    /// keyspace order from `from`) without waiting for the disk: `Some` when it is read
    /// already, `None` when it comes later as [`Background::Provided`] with this `tag`.
    fn start_load_provided(
        &mut self,
        tag: u64,
        from: &Key,
        limit: usize,
    ) -> Result<Option<ProvidedPage>, StoreError> {
        let _ = tag;
        let limit = limit.max(1);
        let keys = self.provided(from, limit)?;
        let next = if keys.len() < limit {
            None
        } else {
            keys.last().and_then(|k| Key::new(&k.key).next())
        };
        Ok(Some(ProvidedPage { keys, next }))
    }

    /// Background work that finished, one item per call; when there is none, the task of `cx`
    /// is woken once there is.
    fn poll_background(&mut self, cx: &mut Context<'_>) -> Poll<Background> {
        let _ = cx;
        Poll::Pending
    }
}

/// Background work a store finished (see [`Store::poll_background`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Background {
    /// The GC step started by [`Store::start_gc`].
    Gc(Result<GcProgress, StoreError>),
    /// The page asked for with [`Store::start_load_provided`] and this tag.
    Provided {
        /// The caller's tag.
        tag: u64,
        /// The page.
        page: Result<ProvidedPage, StoreError>,
    },
}

/// A page of the provided keys (see [`Store::start_load_provided`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvidedPage {
    /// Keys in keyspace order, from where the page was asked for.
    pub keys: Vec<ProvidedKey>,
    /// Where the next page starts; `None` when the list ends with this page.
    pub next: Option<Key>,
}

/// What one [`Store::gc`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GcProgress {
    /// Entries examined.
    pub examined: usize,
    /// Expired entries removed.
    pub removed: usize,
    /// A full pass over the store is complete.
    pub done: bool,
}

/// Unix seconds of a time (0 before 1970).
pub(crate) fn unix_secs(time: SystemTime) -> u64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The time of Unix seconds.
pub(crate) fn from_unix_secs(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
}

#[cfg(test)]
pub(crate) mod suite;
