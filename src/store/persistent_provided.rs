//! The provided keys in bulk ([`Store::add_provided_many`], [`Store::remove_provided_many`]):
//! millions of keys at a time into a [`PersistentStore`], with the memory bounded and the
//! count of provided keys exact.
//!
//! The keys go in chunks of [`BULK_CHUNK`]. A chunk's entries are sorted in table order and
//! de-duplicated; each is looked up (the overlay, then the committed state: that is what keeps
//! `provided_len` exact when a key is given twice or is already on the list) and the new ones
//! are written to the overlay. The chunk then goes to the writer thread in batches of
//! [`BULK_BATCH`] writes rather than the usual `max_buffered_writes`: the writer commits a
//! chunk (and the chunks queued behind it) in one transaction, one fsync for tens of thousands
//! of keys instead of one per 256, and its B-tree inserts come in key order.
//!
//! Memory stays bounded by [`PersistentStoreConfig::max_unwritten_bytes`]: when more than that
//! waits for the disk, the call waits for the writer to commit a batch before it reads the
//! next chunk. So a bulk call waits for the disk (the single-key calls never do); from the
//! swarm's `poll`, give it a bounded slice of keys, and it waits at most for a few batches.
//!
//! [`PersistentStoreConfig::max_unwritten_bytes`]: super::PersistentStoreConfig::max_unwritten_bytes

use std::time::SystemTime;

use super::writer::{Entry, Table};
use super::{codec, from_unix_secs, unix_secs, PersistentStore, ProvidedKey, StoreError, MAX_JOBS};

/// Keys looked up and written per step: bounds the sorting buffer and the work between two
/// hand-overs to the writer.
pub(super) const BULK_CHUNK: usize = 16_384;

/// Writes per batch handed to the writer by the bulk calls.
const BULK_BATCH: usize = 16_384;

impl PersistentStore {
    /// [`Store::add_provided`](super::Store::add_provided): a key already there keeps its
    /// status and is not counted twice.
    pub(super) fn add_provided_one(
        &mut self,
        key: &[u8],
        now: SystemTime,
    ) -> Result<(), StoreError> {
        let entry = codec::keyspace_key(key);
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
        let entry = codec::keyspace_key(key);
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
            if self.overlay.bytes() < self.config.max_unwritten_bytes
                || self.overlay.in_flight() == 0
            {
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
    let mut entries: Vec<Vec<u8>> = keys.iter().map(|k| codec::keyspace_key(k)).collect();
    entries.sort_unstable();
    entries.dedup();
    entries
}

impl PersistentStore {
    /// Provided keys with their status from `provided` table entries.
    pub(super) fn decode_provided(entries: Vec<Entry>) -> Result<Vec<ProvidedKey>, StoreError> {
        entries
            .into_iter()
            .map(|(k, v)| {
                let (added, last, peers) = codec::decode_provided(&v)?;
                Ok(ProvidedKey {
                    key: k.get(32..).unwrap_or_default().to_vec(),
                    added: from_unix_secs(added),
                    last_provided: (last > 0).then(|| from_unix_secs(last)),
                    peers,
                })
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "persistent_provided_tests.rs"]
mod tests;
