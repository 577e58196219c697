//! The provided keys in bulk ([`Store::add_provided_many`], [`Store::remove_provided_many`]):
//! millions of keys at a time into a [`PersistentStore`], with the memory bounded and the
//! count of provided keys exact.
//!
//! The keys go in chunks of [`BULK_CHUNK`]. A chunk's entries are sorted in table order and
//! de-duplicated; each is looked up (the overlay, then the committed state: that is what keeps
//! `provided_len` exact when a key is given twice or is already on the list) and the new ones
//! are written to the overlay. The chunk then goes to the writer thread in batches of
//! [`BULK_BATCH`] writes rather than the usual `max_buffered_writes`: the writer commits the
//! batches queued behind each other in one transaction, one fsync for up to a million keys
//! instead of one per 256.
//!
//! Why a million: the keys land all over the keyspace, and redb's copy-on-write commit
//! rewrites every B-tree page it touches. Once the table has more pages than a commit has
//! keys, that is a 4 KiB page per key: 10 million keys in commits of 16,384 wrote 34.8 GB, at
//! 30,000 keys/s. Commits of a million touch each page for several keys (a standalone redb
//! run of 10 million keys: 62,000 keys/s in commits of 262,144, 113,000 in commits of a
//! million). They also leave the file about twice the size of its live pages, which is what
//! the compaction on close gives back ([`PersistentStoreConfig::compact_after_bulk`]).
//!
//! Memory stays bounded by [`PersistentStoreConfig::max_bulk_bytes`]: when more than that
//! waits for the disk, the call waits for the writer to commit a batch before it reads the
//! next chunk. So a bulk call waits for the disk (the single-key calls never do); from the
//! swarm's `poll`, give it a bounded slice of keys while [`Store::ready_for_bulk`] holds, and
//! it never waits.
//!
//! [`PersistentStoreConfig::max_bulk_bytes`]: super::PersistentStoreConfig::max_bulk_bytes
//! [`PersistentStoreConfig::compact_after_bulk`]: super::PersistentStoreConfig::compact_after_bulk
//! [`Store::ready_for_bulk`]: super::Store::ready_for_bulk

use std::time::SystemTime;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::codec::{PROVIDED_PREFIX, SCHEMA_V1, SCHEMA_VERSION};
use super::writer::{Entry, Table, META, PROVIDED, PROVIDED_V1};
use super::{after, codec, db_err, from_unix_secs, unix_secs, PersistentStore, ProvidedKey};
use super::{ProvidedPage, StoreError, MAX_JOBS};
use crate::key::Key;
use crate::provider::SweepMark;

/// Keys looked up and written per step: bounds the sorting buffer and the work between two
/// hand-overs to the writer.
pub(super) const BULK_CHUNK: usize = 16_384;

/// Writes per batch handed to the writer by the bulk calls: with the batches queued behind it,
/// up to a million keys in one commit.
const BULK_BATCH: usize = 131_072;

/// Keys written in bulk since the open past which dropping the store compacts the file.
const COMPACT_AFTER: u64 = 100_000;

impl PersistentStore {
    /// [`Store::add_provided`](super::Store::add_provided): a key already there keeps its
    /// status and is not counted twice.
    pub(super) fn add_provided_one(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let entry = codec::provided_entry(key);
        if self.read(Table::Provided, &entry)?.is_some() {
            return Ok(());
        }
        let value = codec::encode_provided(unix_secs(now), 0, 0);
        self.write(Table::Provided, entry, Some(value));
        self.lens.provided += 1;
        Ok(())
    }

    /// [`Store::remove_provided`](super::Store::remove_provided).
    pub(super) fn remove_provided_one(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let entry = codec::provided_entry(key);
        if self.read(Table::Provided, &entry)?.is_some() {
            self.write(Table::Provided, entry, None);
            self.lens.provided = self.lens.provided.saturating_sub(1);
        }
        Ok(())
    }

    /// [`Store::add_provided_many`](crate::store::Store::add_provided_many) (see the module
    /// docs).
    pub(super) fn add_provided_bulk(
        &mut self,
        keys: &[Vec<u8>],
        now: SystemTime,
    ) -> Result<usize, StoreError> {
        let value = codec::encode_provided(unix_secs(now), 0, 0);
        let mut added = 0;
        for chunk in keys.chunks(BULK_CHUNK) {
            self.collect();
            for entry in sorted_entries(chunk) {
                if self.read(Table::Provided, &entry)?.is_some() {
                    continue; // Already provided: it keeps its status.
                }
                self.overlay
                    .write(Table::Provided, entry, Some(value.clone()));
                self.lens.provided += 1;
                added += 1;
            }
            self.bulk_written += chunk.len() as u64;
            self.hand_over_bulk()?;
        }
        Ok(added)
    }

    /// [`Store::remove_provided_many`](crate::store::Store::remove_provided_many) (see the
    /// module docs).
    pub(super) fn remove_provided_bulk(&mut self, keys: &[Vec<u8>]) -> Result<usize, StoreError> {
        let mut removed = 0;
        for chunk in keys.chunks(BULK_CHUNK) {
            self.collect();
            for entry in sorted_entries(chunk) {
                if self.read(Table::Provided, &entry)?.is_none() {
                    continue;
                }
                self.overlay.write(Table::Provided, entry, None);
                self.lens.provided = self.lens.provided.saturating_sub(1);
                removed += 1;
            }
            self.bulk_written += chunk.len() as u64;
            self.hand_over_bulk()?;
        }
        Ok(removed)
    }

    /// Hands the waiting writes to the writer in large batches, as far as its queue has room,
    /// then waits for it while more than `max_unwritten_bytes` is not durable. A commit that
    /// failed is reported here (its writes stay in the overlay and go again).
    fn hand_over_bulk(&mut self) -> Result<(), StoreError> {
        loop {
            while self.overlay.pending() > 0 && self.jobs < MAX_JOBS && self.writer.is_some() {
                self.hand_over_up_to(BULK_BATCH);
            }
            if self.overlay.bytes() < self.config.max_bulk_bytes || self.overlay.in_flight() == 0 {
                break;
            }
            self.wait_one()?;
        }
        match self.error.take() {
            Some(error) => Err(error),
            None => Ok(()),
        }
    }
}

/// The `provided` table entries of `keys`, in table order, each once.
fn sorted_entries(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut entries: Vec<Vec<u8>> = keys.iter().map(|k| codec::provided_entry(k)).collect();
    entries.sort_unstable();
    entries.dedup();
    entries
}

impl PersistentStore {
    /// Provided keys with their status from `provided2` table entries.
    pub(super) fn decode_provided(entries: Vec<Entry>) -> Result<Vec<ProvidedKey>, StoreError> {
        entries
            .into_iter()
            .map(|(k, v)| {
                let (added, last, peers) = codec::decode_provided(&v)?;
                Ok(ProvidedKey {
                    key: codec::provided_key(&k)?.to_vec(),
                    added: from_unix_secs(added),
                    last_provided: (last > 0).then(|| from_unix_secs(last)),
                    peers,
                })
            })
            .collect()
    }

    /// [`Store::provided`](super::Store::provided): up to `limit` keys from `from`, in exact
    /// keyspace order. The table is ordered by 8 bytes of the point only, so the read goes on
    /// until the key after the limit starts another prefix: keys sharing a prefix are then
    /// all there to be put in order.
    pub(super) fn provided_from(
        &mut self,
        from: &Key,
        limit: usize,
    ) -> Result<Vec<ProvidedKey>, StoreError> {
        let mut entries: Vec<Entry> = Vec::new();
        let mut bound = codec::provided_bound(from);
        loop {
            // The key after the limit too: it shows whether the last run is whole.
            let want = limit
                .saturating_sub(entries.len())
                .saturating_add(1)
                .clamp(16, 1 << 16);
            let read = self.read_range(Table::Provided, &bound, want, |_| false)?;
            let ended = read.len() < want;
            if let Some((last, _)) = read.last() {
                bound = after(last);
            }
            entries.extend(read.into_iter().filter(|e| !before(from, e)));
            let whole = entries.len() > limit
                && prefix(&entries[limit - 1].0) != prefix(&entries[entries.len() - 1].0);
            if ended || whole {
                break;
            }
        }
        sort_ties(&mut entries);
        entries.truncate(limit);
        Self::decode_provided(entries)
    }

    /// A sweep page read by the writer (`entries`, merged with the overlay up to `upper`, the
    /// last entry the writer read, or `None` when the table ended), in exact keyspace order
    /// from `from`, and where the next page starts. A page never ends inside a run of keys
    /// sharing a prefix: the run is left to the next page, or, when it is the whole page (the
    /// writer read nothing else), completed here.
    pub(super) fn sweep_page(
        &mut self,
        from: &Key,
        mut entries: Vec<Entry>,
        upper: Option<Vec<u8>>,
    ) -> Result<ProvidedPage, StoreError> {
        entries.retain(|e| !before(from, e));
        let next = match upper {
            None => None,
            Some(upper) => {
                let last = prefix(&upper).to_vec();
                match entries
                    .iter()
                    .position(|(k, _)| prefix(k) == last.as_slice())
                {
                    Some(run) if run > 0 => {
                        entries.truncate(run);
                        Some(first_point(&last, 0))
                    }
                    _ => {
                        entries.extend(self.rest_of_run(&upper)?);
                        next_prefix(&last)
                    }
                }
            }
        };
        sort_ties(&mut entries);
        Ok(ProvidedPage {
            keys: Self::decode_provided(entries)?,
            next,
        })
    }

    /// The entries after `entry` that share its prefix (read here: a run is a handful of keys
    /// at most, see the codec's docs).
    fn rest_of_run(&mut self, entry: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let run = prefix(entry).to_vec();
        let mut out: Vec<Entry> = Vec::new();
        let mut bound = after(entry);
        loop {
            let read = self.read_range(Table::Provided, &bound, 64, |k| prefix(k) != run)?;
            let ended = read.len() < 64;
            if let Some((last, _)) = read.last() {
                bound = after(last);
            }
            out.extend(read);
            if ended {
                return Ok(out);
            }
        }
    }

    /// Compacts the file on close after large bulk calls (see
    /// [`PersistentStoreConfig::compact_after_bulk`]): their commits rewrote most of the
    /// provided keys' pages, and redb keeps the pages they freed in the file. Runs once the
    /// writer thread has ended, when nothing else holds the database.
    ///
    /// [`PersistentStoreConfig::compact_after_bulk`]: super::PersistentStoreConfig::compact_after_bulk
    pub(super) fn compact_after_bulk(&mut self) {
        if !self.config.compact_after_bulk || self.bulk_written < COMPACT_AFTER {
            return;
        }
        self.snapshot = None;
        let Some(db) = std::sync::Arc::get_mut(&mut self.db) else {
            return;
        };
        let started = std::time::Instant::now();
        loop {
            match db.compact() {
                Ok(true) => {}
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(%error, "store compaction failed");
                    return;
                }
            }
        }
        tracing::info!(
            secs = started.elapsed().as_secs_f64(),
            "store compacted after bulk writes"
        );
    }

    /// The sweep's mark kept in `meta` (`None`: none, or one that does not read back whole).
    pub(super) fn read_sweep_mark(db: &Database) -> Result<Option<SweepMark>, StoreError> {
        let read = db.begin_read().map_err(db_err)?;
        let meta = read.open_table(META).map_err(db_err)?;
        let get = |key: &str| -> Result<Option<u64>, StoreError> {
            Ok(meta.get(key).map_err(db_err)?.map(|v| v.value()))
        };
        let (cycle, next, depth) = (get("sweep_cycle")?, get("sweep_next")?, get("sweep_depth")?);
        Ok(
            match (cycle, next, depth.and_then(|d| u8::try_from(d).ok())) {
                (Some(cycle), Some(next), Some(depth)) if depth < 64 => {
                    Some(SweepMark { cycle, next, depth })
                }
                _ => None,
            },
        )
    }

    /// Rewrites a schema 1 store's provided keys in the compact layout, in one transaction
    /// with the new schema version: a crash during it leaves a schema 1 store, migrated again
    /// by the next open. An entry that does not decode is dropped with a warning (it was
    /// unreadable already), rather than making the whole store unusable.
    pub(super) fn migrate_provided(db: &Database) -> Result<(), StoreError> {
        let read = db.begin_read().map_err(db_err)?;
        let version = read
            .open_table(META)
            .map_err(db_err)?
            .get("schema_version")
            .map_err(db_err)?
            .map(|v| v.value());
        drop(read);
        if version != Some(SCHEMA_V1) {
            return Ok(());
        }
        let started = std::time::Instant::now();
        let txn = db.begin_write().map_err(db_err)?;
        let (mut moved, mut dropped) = (0u64, 0u64);
        {
            let old = txn.open_table(PROVIDED_V1).map_err(db_err)?;
            let mut new = txn.open_table(PROVIDED).map_err(db_err)?;
            for item in old.iter().map_err(db_err)? {
                let (k, v) = item.map_err(db_err)?;
                let status = codec::decode_provided(v.value());
                match (k.value().get(32..), status) {
                    (Some(key), Ok((added, last, peers))) => {
                        let entry = codec::provided_entry(key);
                        let value = codec::encode_provided(added, last, peers);
                        new.insert(entry.as_slice(), value.as_slice())
                            .map_err(db_err)?;
                        moved += 1;
                    }
                    _ => dropped += 1,
                }
            }
        }
        txn.delete_table(PROVIDED_V1).map_err(db_err)?;
        txn.open_table(META)
            .map_err(db_err)?
            .insert("schema_version", SCHEMA_VERSION)
            .map_err(db_err)?;
        txn.commit().map_err(db_err)?;
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "unreadable provided keys left out of the migration"
            );
        }
        tracing::info!(
            keys = moved,
            secs = started.elapsed().as_secs_f64(),
            "provided keys rewritten from schema 1 to schema 2"
        );
        Ok(())
    }
}

/// The 8 bytes of the point that lead a `provided2` entry.
fn prefix(entry: &[u8]) -> &[u8] {
    &entry[..PROVIDED_PREFIX.min(entry.len())]
}

/// The point of an entry's key.
fn point(entry: &Entry) -> Key {
    Key::new(codec::provided_key(&entry.0).unwrap_or_default())
}

/// Whether an entry read from the bound of `from` lies before `from` (only entries of its
/// prefix can).
fn before(from: &Key, entry: &Entry) -> bool {
    prefix(&entry.0) == &from.as_bytes()[..PROVIDED_PREFIX] && point(entry) < *from
}

/// Sorts each run of entries that share a prefix by their full point.
fn sort_ties(entries: &mut [Entry]) {
    let mut start = 0;
    while start < entries.len() {
        let mut end = start + 1;
        while entries
            .get(end)
            .is_some_and(|(k, _)| prefix(k) == prefix(&entries[start].0))
        {
            end += 1;
        }
        if end - start > 1 {
            entries[start..end].sort_by_cached_key(point);
        }
        start = end;
    }
}

/// The first point whose 8-byte prefix is `prefix + add`.
fn first_point(prefix: &[u8], add: u64) -> Key {
    let value = u64::from_be_bytes(prefix.try_into().unwrap_or_default()) + add;
    let mut hash = [0; 32];
    hash[..PROVIDED_PREFIX].copy_from_slice(&value.to_be_bytes());
    Key::from_hash(hash)
}

/// The first point past every point of `prefix` (`None`: the keyspace ends there).
fn next_prefix(prefix: &[u8]) -> Option<Key> {
    let value = u64::from_be_bytes(prefix.try_into().ok()?);
    (value < u64::MAX).then(|| first_point(prefix, 1))
}

#[cfg(test)]
#[path = "persistent_provided_tests.rs"]
mod tests;
