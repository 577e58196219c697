//! The writes of a [`PersistentStore`](super::PersistentStore) that are not durable yet: the
//! batch being filled, and the batches handed to the writer thread and not yet committed. Reads
//! look here first, so they see every accepted write whatever the writer is doing.

use std::collections::{btree_map, BTreeMap, VecDeque};
use std::sync::Arc;

use super::writer::{Entry, Op, Table};
use super::StoreError;

/// Bytes counted for an entry besides its key and value (map node, reference counts, batch
/// bookkeeping): a rough figure, so that a flood of tiny entries is still bounded.
const ENTRY_OVERHEAD: usize = 96;

/// Keys and values are shared between the overlay and the writer's jobs, not copied: handing a
/// batch over costs a reference count per entry.
pub(super) type Bytes = Arc<[u8]>;

/// The newest write of one entry: its value (`None`: deleted); the batch that carries it to
/// the writer (`None`: not handed over yet); the number of the oldest write it stands for.
pub(super) struct Slot {
    pub(super) value: Option<Bytes>,
    batch: Option<u64>,
    seq: u64,
}

impl Slot {
    fn size(&self, key: &[u8]) -> usize {
        key.len() + self.value.as_ref().map_or(0, |v| v.len()) + ENTRY_OVERHEAD
    }
}

/// A batch handed to the writer.
struct InFlight {
    batch: u64,
    /// The entries it writes.
    keys: Vec<(Table, Bytes)>,
    /// Bytes its job holds.
    bytes: usize,
    /// Every write numbered up to this is in this batch or an earlier one.
    covers: u64,
    /// The number of its oldest write.
    first: u64,
}

/// Writes not yet durable, newest per entry.
#[derive(Default)]
pub(super) struct Overlay {
    tables: [BTreeMap<Bytes, Slot>; 5],
    /// The number of the next batch.
    next_batch: u64,
    /// Entries written and not handed over yet, oldest write first.
    dirty: VecDeque<(Table, Bytes)>,
    in_flight: VecDeque<InFlight>,
    bytes: usize,
    /// Writes accepted, and how many of them (the first ones) are durable.
    accepted: u64,
    durable: u64,
}

impl Overlay {
    /// The newest unwritten value of an entry: `Some(None)` if it was deleted, `None` if the
    /// overlay does not know it (the database has the answer).
    pub(super) fn get(&self, table: Table, key: &[u8]) -> Option<Option<&[u8]>> {
        self.tables[table as usize]
            .get(key)
            .map(|slot| slot.value.as_deref())
    }

    /// The unwritten entries of `table` from `from` on, in key order.
    pub(super) fn range(&self, table: Table, from: &[u8]) -> btree_map::Range<'_, Bytes, Slot> {
        self.tables[table as usize]
            .range::<[u8], _>((std::ops::Bound::Included(from), std::ops::Bound::Unbounded))
    }

    /// Records a write, to be handed over with a coming batch.
    pub(super) fn write(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.accepted += 1;
        let map = &mut self.tables[table as usize];
        let mut new = Slot {
            value: value.map(Bytes::from),
            batch: None,
            seq: self.accepted,
        };
        self.bytes += new.size(&key);
        match map.get_key_value(key.as_slice()) {
            Some((shared, slot)) => {
                let shared = shared.clone();
                self.bytes -= slot.size(&key);
                if slot.batch.is_some() {
                    // In a batch already: this newer value goes with a later one.
                    self.dirty.push_back((table, shared.clone()));
                } else {
                    // Waiting already, in its place: it now carries this write too.
                    new.seq = slot.seq;
                }
                map.insert(shared, new);
            }
            None => {
                let key = Bytes::from(key);
                self.dirty.push_back((table, key.clone()));
                map.insert(key, new);
            }
        }
    }

    /// Writes accepted so far.
    pub(super) fn accepted(&self) -> u64 {
        self.accepted
    }

    /// How many of the accepted writes are durable (the first ones, in order).
    pub(super) fn durable(&self) -> u64 {
        self.durable
    }

    /// Writes not handed over yet.
    pub(super) fn pending(&self) -> usize {
        self.dirty.len()
    }

    /// Batches handed over and not yet finished.
    pub(super) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Bytes held for writes not yet durable (the entries, and the copies in the writer's jobs).
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn seq_of(&self, (table, key): &(Table, Bytes)) -> u64 {
        self.tables[*table as usize]
            .get(&**key)
            .map_or(0, |slot| slot.seq)
    }

    /// The next batch for the writer: its number and up to `max` of the oldest writes not
    /// handed over yet (a bounded amount of work for the caller, however much waits).
    pub(super) fn take_batch(&mut self, max: usize) -> (u64, Vec<Op>) {
        let batch = self.next_batch;
        self.next_batch += 1;
        let first = self.dirty.front().map_or(self.accepted, |e| self.seq_of(e));
        let take = self.dirty.len().min(max.max(1));
        let keys: Vec<(Table, Bytes)> = self.dirty.drain(..take).collect();
        let covers = self
            .dirty
            .front()
            .map_or(self.accepted, |e| self.seq_of(e) - 1);
        let mut bytes = 0;
        let ops: Vec<Op> = keys
            .iter()
            .map(|(table, key)| {
                let slot = self.tables[*table as usize]
                    .get_mut(&**key)
                    .expect("a waiting entry is in the overlay");
                slot.batch = Some(batch);
                let value = slot.value.clone();
                // The job shares the bytes: only its own bookkeeping is counted.
                bytes += ENTRY_OVERHEAD;
                (*table, key.clone(), value)
            })
            .collect();
        self.bytes += bytes;
        self.in_flight.push_back(InFlight {
            batch,
            keys,
            bytes,
            covers,
            first,
        });
        (batch, ops)
    }

    /// The writer finished `batch`. Committed: its entries not written again since leave the
    /// overlay (reads now find them in the database). Failed: they wait to be handed over
    /// again, first in line, and the batches after it no longer make their writes durable.
    pub(super) fn committed(&mut self, batch: u64, ok: bool) -> Result<(), StoreError> {
        let Some(i) = self.in_flight.iter().position(|f| f.batch == batch) else {
            return Err(StoreError::Database(format!(
                "the writer finished batch {batch}, which it was never given"
            )));
        };
        let done = self.in_flight.remove(i).expect("found");
        self.bytes -= done.bytes;
        if ok {
            self.durable = self.durable.max(done.covers);
        } else {
            for later in &mut self.in_flight {
                later.covers = later.covers.min(done.first.saturating_sub(1));
            }
        }
        let mut again = Vec::new();
        for (table, key) in done.keys {
            let map = &mut self.tables[table as usize];
            let Some(slot) = map.get_mut(&*key) else {
                continue;
            };
            if slot.batch != Some(batch) {
                continue; // Written again since: a later batch carries it.
            }
            if ok {
                self.bytes -= slot.size(&key);
                map.remove(&*key);
            } else {
                slot.batch = None;
                again.push((table, key));
            }
        }
        if !again.is_empty() {
            self.dirty.extend(again);
            // Oldest write first again (rare: only after a failed commit).
            let mut dirty: Vec<_> = std::mem::take(&mut self.dirty).into();
            dirty.sort_by_key(|e| self.seq_of(e));
            self.dirty = dirty.into();
        }
        Ok(())
    }
}

/// The entries of a table in key order as a reader must see them: `base` (the database, in key
/// order) with the overlay's newer writes over it. Overlay entries past `upper` (inclusive) are
/// left out: `base` is a page that ends there. Stops after `limit` entries, or at the first key
/// for which `past_end` holds.
pub(super) fn merge<'a>(
    base: impl Iterator<Item = Result<Entry, StoreError>>,
    overlay: btree_map::Range<'a, Bytes, Slot>,
    upper: Option<&[u8]>,
    limit: usize,
    past_end: impl Fn(&[u8]) -> bool,
) -> Result<Vec<Entry>, StoreError> {
    let mut base = base.peekable();
    let mut overlay = overlay
        .take_while(|(key, _)| upper.is_none_or(|u| &***key <= u))
        .peekable();
    let mut out = Vec::new();
    while out.len() < limit {
        if let Some(Err(_)) = base.peek() {
            return Err(base.next().expect("peeked").expect_err("an error"));
        }
        let base_key = base.peek().and_then(|r| r.as_ref().ok()).map(|(k, _)| k);
        let from_overlay = match (base_key, overlay.peek()) {
            (None, None) => break,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(b), Some((o, _))) => &***o <= b.as_slice(),
        };
        let (key, value) = if from_overlay {
            let (key, slot) = overlay.next().expect("peeked");
            if base_key.is_some_and(|b| b.as_slice() == &**key) {
                base.next(); // Superseded by the overlay.
            }
            if past_end(key) {
                break;
            }
            match &slot.value {
                Some(value) => (key.to_vec(), value.to_vec()),
                None => continue,
            }
        } else {
            let entry = base.next().expect("peeked")?;
            if past_end(&entry.0) {
                break;
            }
            entry
        };
        out.push((key, value));
    }
    Ok(out)
}
