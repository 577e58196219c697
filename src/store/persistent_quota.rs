//! Per-source quotas of a [`PersistentStore`](super::PersistentStore) (the rule is on
//! [`Source`](crate::store::Source)), kept on disk in the `sources` table so that they cost no
//! memory per record: each group's total (also held in memory: there are few groups), each
//! holder's total, and each group's records oldest first. A full store reads the largest
//! group from memory and its oldest record from the table.
//!
//! Unlike the memory store, which evicts a holder's least recently *used* record, the
//! persistent store evicts the least recently *written* one: a read does not write to disk.

use std::collections::{BTreeSet, HashMap};

use libp2p::PeerId;

use super::codec::{self, group_bytes, Charge};
use super::writer::Table;
use super::PersistentStore;
use crate::store::quota::{Account, GroupKey};
use crate::store::StoreError;

/// A group's oldest records examined to find one of a holder holding more than the writer,
/// when the writer's own group is the largest: bounds the reads one write costs.
const HOLDER_SCAN: usize = 32;
/// Records evicted at most to make room for one write; past it, the write is refused.
const MAX_EVICTIONS_PER_WRITE: usize = 64;

/// The two kinds of records, each with its own budget and quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Values = b'v' as isize,
    Providers = b'p' as isize,
}

/// Whether a write needs a new slot of the count bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NewSlot {
    /// A new value record.
    Value,
    /// A provider record of a key that has none.
    ProviderKey,
    /// Nothing new to count: a renewal, or one more provider of a known key.
    None,
}

/// Each group's bytes and records, in memory, for one kind of record.
#[derive(Debug, Default)]
pub(super) struct GroupBooks {
    /// `None`: the local node.
    totals: HashMap<Option<GroupKey>, (u64, u64)>,
    /// Remote groups by bytes, for the largest.
    ranks: BTreeSet<(u64, GroupKey)>,
    total: u64,
}

impl GroupBooks {
    pub(super) fn total(&self) -> u64 {
        self.total
    }

    fn usage(&self, group: Option<GroupKey>) -> u64 {
        self.totals.get(&group).map_or(0, |t| t.0)
    }

    fn largest(&self) -> Option<(u64, GroupKey)> {
        self.ranks.last().copied()
    }

    /// Sets a group's totals; returns them as stored (`None` when the group holds nothing).
    fn set(&mut self, group: Option<GroupKey>, usage: u64, records: u64) {
        let old = self.totals.remove(&group).unwrap_or((0, 0));
        self.total = self.total - old.0 + usage;
        if let Some(g) = group {
            self.ranks.remove(&(old.0, g));
            if records > 0 {
                self.ranks.insert((usage, g));
            }
        }
        if records > 0 {
            self.totals.insert(group, (usage, records));
        }
    }

    fn add(&mut self, group: Option<GroupKey>, cost: u64) -> (u64, u64) {
        let (usage, records) = self.totals.get(&group).copied().unwrap_or((0, 0));
        let new = (usage + cost, records + 1);
        self.set(group, new.0, new.1);
        new
    }

    fn sub(&mut self, group: Option<GroupKey>, cost: u64) -> (u64, u64) {
        let (usage, records) = self.totals.get(&group).copied().unwrap_or((0, 0));
        let new = (usage.saturating_sub(cost), records.saturating_sub(1));
        self.set(group, new.0, new.1);
        new
    }
}

fn group_entry(kind: Kind, group: Option<GroupKey>) -> Vec<u8> {
    let mut key = vec![kind as u8, b'g'];
    key.extend_from_slice(&group_bytes(group));
    key
}

fn holder_entry(kind: Kind, group: GroupKey, holder: &PeerId) -> Vec<u8> {
    let mut key = vec![kind as u8, b'h'];
    key.extend_from_slice(&group_bytes(Some(group)));
    key.extend_from_slice(&holder.to_bytes());
    key
}

fn order_prefix(kind: Kind, group: GroupKey) -> Vec<u8> {
    let mut key = vec![kind as u8, b'o'];
    key.extend_from_slice(&group_bytes(Some(group)));
    key
}

fn order_entry(kind: Kind, group: GroupKey, written: u64, record: &[u8]) -> Vec<u8> {
    let mut key = order_prefix(kind, group);
    key.extend_from_slice(&written.to_be_bytes());
    key.extend_from_slice(record);
    key
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    bytes
        .get(at..at + 8)
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

/// Where a record is charged, as the quota code needs it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Charged<'a> {
    pub(super) charge: Charge,
    /// The remote peer it is charged to; `None` for the local node.
    pub(super) holder: Option<PeerId>,
    /// Its key in its own table.
    pub(super) record: &'a [u8],
}

impl PersistentStore {
    /// Reads each group's totals into memory (at open: there are few groups).
    pub(super) fn load_books(&mut self) -> Result<(), StoreError> {
        for kind in [Kind::Values, Kind::Providers] {
            let prefix = [kind as u8, b'g'];
            let entries = self.read_range(Table::Sources, &prefix, usize::MAX, |k| {
                !k.starts_with(&prefix)
            })?;
            for (key, value) in entries {
                let group = codec::Reader(&key[2..]).group("sources")?;
                self.books_mut(kind)
                    .set(group, u64_at(&value, 0), u64_at(&value, 8));
            }
        }
        Ok(())
    }

    pub(super) fn books(&self, kind: Kind) -> &GroupBooks {
        match kind {
            Kind::Values => &self.value_books,
            Kind::Providers => &self.provider_books,
        }
    }

    fn books_mut(&mut self, kind: Kind) -> &mut GroupBooks {
        match kind {
            Kind::Values => &mut self.value_books,
            Kind::Providers => &mut self.provider_books,
        }
    }

    fn write_group(&mut self, kind: Kind, group: Option<GroupKey>, totals: (u64, u64)) {
        let value = (totals.1 > 0).then(|| {
            let mut v = totals.0.to_be_bytes().to_vec();
            v.extend_from_slice(&totals.1.to_be_bytes());
            v
        });
        self.write(Table::Sources, group_entry(kind, group), value);
    }

    fn holder_usage(
        &mut self,
        kind: Kind,
        group: GroupKey,
        holder: &PeerId,
    ) -> Result<u64, StoreError> {
        let entry = holder_entry(kind, group, holder);
        Ok(self
            .read(Table::Sources, &entry)?
            .map_or(0, |v| u64_at(&v, 0)))
    }

    /// Charges a record just written.
    pub(super) fn charge(&mut self, kind: Kind, c: Charged<'_>) -> Result<(), StoreError> {
        let totals = self.books_mut(kind).add(c.charge.group, c.charge.cost);
        self.write_group(kind, c.charge.group, totals);
        if let (Some(group), Some(holder)) = (c.charge.group, c.holder) {
            let usage = self.holder_usage(kind, group, &holder)? + c.charge.cost;
            let entry = holder_entry(kind, group, &holder);
            self.write(Table::Sources, entry, Some(usage.to_be_bytes().to_vec()));
            let order = order_entry(kind, group, c.charge.written, c.record);
            self.write(Table::Sources, order, Some(holder.to_bytes()));
        }
        Ok(())
    }

    /// Releases the charge of a record about to be removed or replaced.
    pub(super) fn release(&mut self, kind: Kind, c: Charged<'_>) -> Result<(), StoreError> {
        let totals = self.books_mut(kind).sub(c.charge.group, c.charge.cost);
        self.write_group(kind, c.charge.group, totals);
        if let (Some(group), Some(holder)) = (c.charge.group, c.holder) {
            let usage = self
                .holder_usage(kind, group, &holder)?
                .saturating_sub(c.charge.cost);
            let entry = holder_entry(kind, group, &holder);
            let value = (usage > 0).then(|| usage.to_be_bytes().to_vec());
            self.write(Table::Sources, entry, value);
            let order = order_entry(kind, group, c.charge.written, c.record);
            self.write(Table::Sources, order, None);
        }
        Ok(())
    }

    /// The place of a record written at `now` (Unix seconds) in its group's order: after
    /// every record written before it by this store.
    pub(super) fn next_written(&mut self, now: u64) -> u64 {
        let second = now << 20;
        self.last_written = (self.last_written + 1).max(second);
        self.last_written
    }

    fn count_full(&self, slot: NewSlot) -> bool {
        match slot {
            NewSlot::Value => self.lens.values >= self.config.max_records as u64,
            NewSlot::ProviderKey => self.lens.provider_keys >= self.config.max_provider_keys as u64,
            NewSlot::None => false,
        }
    }

    fn byte_budget(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Values => self.config.max_record_bytes,
            Kind::Providers => self.config.max_provider_bytes,
        }
    }

    /// Evicts (by the quota rule) until a record of `cost` bytes fits, `replacing` being the
    /// charge of the record it replaces; fails with [`StoreError::Full`]. The record at
    /// `protect` (the one being written) is never evicted.
    pub(super) fn make_room(
        &mut self,
        kind: Kind,
        writer: Option<Account>,
        cost: u64,
        replacing: u64,
        slot: NewSlot,
        protect: &[u8],
    ) -> Result<(), StoreError> {
        if cost > self.byte_budget(kind) {
            return Err(StoreError::Full);
        }
        for _ in 0..MAX_EVICTIONS_PER_WRITE {
            let bytes = self.books(kind).total().saturating_sub(replacing) + cost;
            if !self.count_full(slot) && bytes <= self.byte_budget(kind) {
                return Ok(());
            }
            let Some(victim) = self.victim(kind, writer)? else {
                return Err(StoreError::Full);
            };
            if victim == protect {
                return Err(StoreError::Full);
            }
            tracing::debug!("persistent store full: evicting a record of the largest source");
            match kind {
                Kind::Values => self.remove_value(&victim)?,
                Kind::Providers => {
                    let (key, peer) = codec::split_provider_entry_key(&victim)?;
                    self.remove_provider_entry(&key, &peer)?;
                }
            }
        }
        Err(StoreError::Full)
    }

    /// The record that makes room for `writer` (`None`: the local node), by the quota rule:
    /// the largest group's oldest, unless the writer's group holds as much; then, among its
    /// group's oldest records, one of a holder holding more than the writer.
    fn victim(
        &mut self,
        kind: Kind,
        writer: Option<Account>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let Some((largest_usage, largest)) = self.books(kind).largest() else {
            return Ok(None);
        };
        let group = match writer {
            Some(w) if self.books(kind).usage(Some(w.group)) >= largest_usage => w.group,
            _ => largest,
        };
        let prefix = order_prefix(kind, group);
        let within = writer.filter(|w| w.group == group);
        let limit = if within.is_some() { HOLDER_SCAN } else { 1 };
        let oldest =
            self.read_range(Table::Sources, &prefix, limit, |k| !k.starts_with(&prefix))?;
        let writer_usage = match within {
            Some(w) => self.holder_usage(kind, w.group, &w.holder)?,
            None => 0,
        };
        for (order, holder) in oldest {
            if let Some(w) = within {
                let holder = PeerId::from_bytes(&holder)
                    .map_err(|_| StoreError::Corrupt("sources entry".into()))?;
                if self.holder_usage(kind, w.group, &holder)? <= writer_usage {
                    continue;
                }
            }
            return Ok(order.get(prefix.len() + 8..).map(<[u8]>::to_vec));
        }
        Ok(None)
    }

    /// Makes a slot on a key with the most providers it may: the network block holding the
    /// most slots of the key gives up its oldest, unless the writer's block holds as many.
    pub(super) fn make_room_on_key(
        &mut self,
        key: &[u8],
        writer: Option<GroupKey>,
    ) -> Result<(), StoreError> {
        let prefix = codec::providers_prefix(key);
        let entries = self.read_range(Table::Providers, &prefix, usize::MAX, |k| {
            !k.starts_with(&prefix)
        })?;
        // (group, slots, its oldest entry's place in the write order, that entry)
        let mut groups: Vec<(GroupKey, usize, u64, Vec<u8>)> = Vec::new();
        for (entry, value) in &entries {
            let Some(charge) = codec::decode_provider(value)?.charge else {
                continue;
            };
            let Some(group) = charge.group else { continue };
            match groups.iter_mut().find(|g| g.0 == group) {
                Some(g) => {
                    g.1 += 1;
                    if charge.written < g.2 {
                        (g.2, g.3) = (charge.written, entry.clone());
                    }
                }
                None => groups.push((group, 1, charge.written, entry.clone())),
            }
        }
        let Some((_, slots, _, oldest)) = groups.iter().max_by_key(|g| g.1) else {
            return Err(StoreError::TooManyProviders);
        };
        let writer_slots =
            writer.map_or(0, |w| groups.iter().find(|g| g.0 == w).map_or(0, |g| g.1));
        if writer.is_some() && writer_slots >= *slots {
            return Err(StoreError::TooManyProviders);
        }
        let (key, peer) = codec::split_provider_entry_key(oldest)?;
        self.remove_provider_entry(&key, &peer)
    }
}
