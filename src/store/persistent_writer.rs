//! The writer thread of [`PersistentStore`](super::PersistentStore): the only place that waits
//! for the disk. It takes jobs from a bounded channel, in order: a batch of writes to commit
//! (one redb transaction, one fsync), or a range of a table to read (the GC's and the reprovide
//! sweep's scans). What it finished goes back on the completion channel, and the store's task
//! is woken to collect it.
//!
//! Jobs run strictly in the order they were sent, so a scan sees every batch sent before it,
//! and none sent after: that is what lets the store merge a scan with its own newer writes.

use std::sync::mpsc::{Receiver, Sender, TryRecvError};
use std::sync::Arc;

use futures::task::AtomicWaker;
use redb::{Database, ReadableDatabase, TableDefinition, WriteTransaction};

use super::codec;
use super::io::Snapshot;
use super::StoreError;
use crate::store::CrawlSnapshot;

pub(super) const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
pub(super) const VALUES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("values");
pub(super) const PROVIDER_KEYS: TableDefinition<&[u8], u32> = TableDefinition::new("provider_keys");
pub(super) const PROVIDERS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("providers");
pub(super) const PROVIDED: TableDefinition<&[u8], &[u8]> = TableDefinition::new("provided2");
/// Schema 1's provided keys, rewritten into [`PROVIDED`] when such a store is opened.
pub(super) const PROVIDED_V1: TableDefinition<&[u8], &[u8]> = TableDefinition::new("provided");
pub(super) const SOURCES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sources");
pub(super) const ROUTING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("routing");
pub(super) const CRAWL: TableDefinition<u32, &[u8]> = TableDefinition::new("crawl");
/// `meta` keys of the crawl snapshot (see `persistent_codec.rs`).
pub(super) const CRAWL_SAVED_AT: &str = "crawl_saved_at";
pub(super) const CRAWL_PEERS: &str = "crawl_peers";

pub(super) fn db_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Database(e.to_string())
}

/// The tables written through the store's overlay. `provider_keys` holds a `u32`; in the
/// overlay and in jobs it travels as 4 little-endian bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Table {
    Values = 0,
    ProviderKeys = 1,
    Providers = 2,
    Provided = 3,
    Sources = 4,
}

/// The value of a `provider_keys` entry as overlay bytes.
pub(super) fn count_bytes(count: u32) -> Vec<u8> {
    count.to_le_bytes().to_vec()
}

/// A `provider_keys` value from overlay bytes (a malformed one reads as no providers).
pub(super) fn count_of(bytes: &[u8]) -> u32 {
    bytes.try_into().map_or(0, u32::from_le_bytes)
}

/// One entry of a table: key and value.
pub(super) type Entry = (Vec<u8>, Vec<u8>);

/// One write: the entry's new value, or `None` to delete it (bytes shared with the overlay).
pub(super) type Op = (Table, Arc<[u8]>, Option<Arc<[u8]>>);

/// Work for the writer thread.
pub(super) enum Job {
    /// Commit these writes, in one transaction; `routing` replaces the routing snapshot,
    /// `crawl` the crawl snapshot (encoded here, not on the store's thread).
    Commit {
        batch: u64,
        ops: Vec<Op>,
        routing: Option<Vec<Entry>>,
        crawl: Option<Box<CrawlSnapshot>>,
        /// `meta` entries to write (the sweep's mark).
        meta: Vec<(&'static str, u64)>,
    },
    /// Read up to `limit` entries of `table` from `from` (inclusive), in key order.
    Scan {
        id: u64,
        table: Table,
        from: Vec<u8>,
        limit: usize,
    },
}

/// What the writer thread finished.
pub(super) enum Done {
    /// These batches (committed together, and nothing after them) are durable, or failed and
    /// changed nothing. `snapshot`: the committed state right after them, opened here so that
    /// the store's reads never wait for the writer's locks to open it themselves. `crawl`: the
    /// newest crawl snapshot they carried, given back when the commit failed, to go again.
    Committed {
        batches: Vec<u64>,
        result: Result<(), StoreError>,
        snapshot: Option<Box<Snapshot>>,
        crawl: Option<Box<CrawlSnapshot>>,
    },
    /// The entries found by scan `id`; `complete` when the table ended before `limit`.
    Scanned {
        id: u64,
        entries: Result<Vec<Entry>, StoreError>,
        complete: bool,
    },
}

/// Runs jobs until the store drops its end of the channel.
pub(super) fn run(
    db: Arc<Database>,
    jobs: Receiver<Job>,
    done: Sender<Done>,
    waker: Arc<AtomicWaker>,
) {
    let mut next: Option<Job> = None;
    loop {
        let mut release = None;
        let job = match next.take() {
            Some(job) => job,
            None => match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            },
        };
        match job {
            Job::Commit {
                batch,
                ops,
                routing,
                crawl,
                meta,
            } => {
                // Batches queued behind this one go into the same transaction: a writer that
                // fell behind catches up with one fsync for all of them. A scan stops the
                // merge, so that it still sees exactly the batches sent before it.
                let mut batches = vec![batch];
                let mut all = vec![(ops, routing, meta)];
                // Only the newest crawl snapshot is written; older ones are dropped here, off
                // the store's thread.
                let mut newest = crawl;
                loop {
                    match jobs.try_recv() {
                        Ok(Job::Commit {
                            batch,
                            ops,
                            routing,
                            crawl,
                            meta,
                        }) => {
                            batches.push(batch);
                            all.push((ops, routing, meta));
                            newest = crawl.or(newest);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                    }
                }
                let result = commit(&db, all, newest.as_deref());
                if let Err(error) = &result {
                    tracing::warn!(%error, "store commit failed");
                }
                // Without a snapshot the store opens one itself when it next reads.
                let snapshot = Snapshot::open(&db).ok().map(Box::new);
                // A written crawl snapshot is freed here, once the store has been told.
                let (crawl, written) = if result.is_ok() {
                    (None, newest)
                } else {
                    (newest, None)
                };
                let finished = Done::Committed {
                    batches,
                    result,
                    snapshot,
                    crawl,
                };
                if done.send(finished).is_err() {
                    return;
                }
                release = written;
            }
            Job::Scan {
                id,
                table,
                from,
                limit,
            } => {
                let (entries, complete) = match scan(&db, table, &from, limit) {
                    Ok((entries, complete)) => (Ok(entries), complete),
                    Err(e) => (Err(e), true),
                };
                if done
                    .send(Done::Scanned {
                        id,
                        entries,
                        complete,
                    })
                    .is_err()
                {
                    return;
                }
            }
        }
        waker.wake();
        drop(release);
    }
}

type Batch = (Vec<Op>, Option<Vec<Entry>>, Vec<(&'static str, u64)>);

fn commit(
    db: &Database,
    batches: Vec<Batch>,
    crawl: Option<&CrawlSnapshot>,
) -> Result<(), StoreError> {
    let txn = db.begin_write().map_err(db_err)?;
    if let Some(crawl) = crawl {
        write_crawl(&txn, crawl)?;
    }
    for (ops, routing, meta) in batches {
        apply(&txn, ops)?;
        if !meta.is_empty() {
            let mut table = txn.open_table(META).map_err(db_err)?;
            for (key, value) in meta {
                table.insert(key, value).map_err(db_err)?;
            }
        }
        if let Some(routing) = routing {
            let mut table = txn.open_table(ROUTING).map_err(db_err)?;
            table.retain(|_, _| false).map_err(db_err)?;
            for (peer, addrs) in routing {
                table
                    .insert(peer.as_slice(), addrs.as_slice())
                    .map_err(db_err)?;
            }
        }
    }
    txn.commit().map_err(db_err)
}

/// Replaces the crawl snapshot as a whole, encoding its entries here.
fn write_crawl(txn: &WriteTransaction, crawl: &CrawlSnapshot) -> Result<(), StoreError> {
    // Deleting the table drops its pages at once, instead of removing each old entry.
    txn.delete_table(CRAWL).map_err(db_err)?;
    let mut table = txn.open_table(CRAWL).map_err(db_err)?;
    let mut entry = Vec::new();
    let mut written: u32 = 0;
    for (peer, addrs) in &crawl.peers {
        if written == u32::MAX {
            tracing::warn!(
                peers = crawl.peers.len(),
                "crawl snapshot cut at u32::MAX peers"
            );
            break;
        }
        codec::encode_crawl_peer(&mut entry, peer, addrs);
        table.insert(written, entry.as_slice()).map_err(db_err)?;
        written += 1;
    }
    let mut meta = txn.open_table(META).map_err(db_err)?;
    meta.insert(CRAWL_SAVED_AT, codec::unix_nanos(crawl.saved_at))
        .map_err(db_err)?;
    meta.insert(CRAWL_PEERS, u64::from(written))
        .map_err(db_err)?;
    Ok(())
}

fn apply(txn: &WriteTransaction, ops: Vec<Op>) -> Result<(), StoreError> {
    let mut values = txn.open_table(VALUES).map_err(db_err)?;
    let mut counts = txn.open_table(PROVIDER_KEYS).map_err(db_err)?;
    let mut providers = txn.open_table(PROVIDERS).map_err(db_err)?;
    let mut provided = txn.open_table(PROVIDED).map_err(db_err)?;
    let mut sources = txn.open_table(SOURCES).map_err(db_err)?;
    for (table, key, value) in ops {
        let key = &*key;
        match (table, value) {
            (Table::ProviderKeys, Some(v)) => {
                counts.insert(key, count_of(&v)).map_err(db_err)?;
            }
            (Table::ProviderKeys, None) => {
                counts.remove(key).map_err(db_err)?;
            }
            (table, value) => {
                let target = match table {
                    Table::Values => &mut values,
                    Table::Providers => &mut providers,
                    Table::Sources => &mut sources,
                    _ => &mut provided,
                };
                match value {
                    Some(v) => target.insert(key, &*v).map(drop),
                    None => target.remove(key).map(drop),
                }
                .map_err(db_err)?;
            }
        }
    }
    Ok(())
}

/// Up to `limit` entries from `from`; whether the table ended first.
fn scan(
    db: &Database,
    table: Table,
    from: &[u8],
    limit: usize,
) -> Result<(Vec<Entry>, bool), StoreError> {
    let read = db.begin_read().map_err(db_err)?;
    let mut out = Vec::new();
    if table == Table::ProviderKeys {
        let t = read.open_table(PROVIDER_KEYS).map_err(db_err)?;
        for item in t.range(from..).map_err(db_err)?.take(limit) {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value().to_vec(), count_bytes(v.value())));
        }
    } else {
        let definition = match table {
            Table::Values => VALUES,
            Table::Providers => PROVIDERS,
            Table::Sources => SOURCES,
            _ => PROVIDED,
        };
        let t = read.open_table(definition).map_err(db_err)?;
        for item in t.range(from..).map_err(db_err)?.take(limit) {
            let (k, v) = item.map_err(db_err)?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
    }
    let complete = out.len() < limit;
    Ok((out, complete))
}
