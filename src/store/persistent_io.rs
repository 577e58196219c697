//! The store's side of its writer thread (`persistent_writer.rs`): handing batches and scans
//! over, taking completions back, and the reads and writes that go through the overlay of
//! writes not yet durable. Everything here runs on the caller's thread and never waits for the
//! disk, except `wait_one` and `load_crawl`, which only the calls that wait use.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use futures::task::AtomicWaker;
use redb::TableError;
use redb::{Database, ReadOnlyTable, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::overlay::merge;
use super::writer::{count_bytes, db_err, Done, Entry, Job, Table};
use super::writer::{CRAWL, CRAWL_PEERS, CRAWL_SAVED_AT, META};
use super::writer::{PROVIDED, PROVIDERS, PROVIDER_KEYS, SOURCES, VALUES};
use super::{after, codec, Background, GcCursor, GcProgress, PersistentStore, ScanFor};
use super::{StoreError, MAX_JOBS};
use crate::key::Key;
use crate::store::{CrawlSnapshot, ProvidedPage, ProviderStore, RecordStore, Store};

/// Where the latest crawl snapshot saved in this run is. It is moved, never copied: to the
/// writer thread, which encodes it, commits it and frees it, so that none of this work, for a
/// table of 100,000 peers, happens on the caller's thread.
#[derive(Default)]
pub(super) enum CrawlState {
    /// None saved in this run, or the latest is durable: the database has the answer.
    #[default]
    Durable,
    /// Saved, and waiting to go with the next batch handed to the writer.
    Waiting(Box<CrawlSnapshot>),
    /// With the writer, in this batch.
    Carried(u64),
}

/// The committed state as of the last completion, one read transaction's tables.
pub(super) struct Snapshot {
    pub(super) values: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(super) provider_keys: ReadOnlyTable<&'static [u8], u32>,
    pub(super) providers: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(super) provided: ReadOnlyTable<&'static [u8], &'static [u8]>,
    pub(super) sources: ReadOnlyTable<&'static [u8], &'static [u8]>,
}

type Items<'a> = Box<dyn Iterator<Item = Result<Entry, StoreError>> + 'a>;

impl Snapshot {
    pub(super) fn open(db: &Database) -> Result<Self, StoreError> {
        let read = db.begin_read().map_err(db_err)?;
        Ok(Self {
            values: read.open_table(VALUES).map_err(db_err)?,
            provider_keys: read.open_table(PROVIDER_KEYS).map_err(db_err)?,
            providers: read.open_table(PROVIDERS).map_err(db_err)?,
            provided: read.open_table(PROVIDED).map_err(db_err)?,
            sources: read.open_table(SOURCES).map_err(db_err)?,
        })
    }

    fn bytes_table(&self, table: Table) -> &ReadOnlyTable<&'static [u8], &'static [u8]> {
        match table {
            Table::Values => &self.values,
            Table::Providers => &self.providers,
            Table::Sources => &self.sources,
            _ => &self.provided,
        }
    }

    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if table == Table::ProviderKeys {
            let found = self.provider_keys.get(key).map_err(db_err)?;
            return Ok(found.map(|v| count_bytes(v.value())));
        }
        let found = self.bytes_table(table).get(key).map_err(db_err)?;
        Ok(found.map(|v| v.value().to_vec()))
    }

    fn range(&self, table: Table, from: &[u8]) -> Result<Items<'_>, StoreError> {
        if table == Table::ProviderKeys {
            let range = self.provider_keys.range(from..).map_err(db_err)?;
            return Ok(Box::new(range.map(|item| {
                let (k, v) = item.map_err(db_err)?;
                Ok((k.value().to_vec(), count_bytes(v.value())))
            })));
        }
        let range = self.bytes_table(table).range(from..).map_err(db_err)?;
        Ok(Box::new(range.map(|item| {
            let (k, v) = item.map_err(db_err)?;
            Ok((k.value().to_vec(), v.value().to_vec()))
        })))
    }
}

/// The writer thread and the channels to it.
pub(super) struct Writer {
    pub(super) jobs: SyncSender<Job>,
    pub(super) done: Receiver<Done>,
    pub(super) waker: Arc<AtomicWaker>,
    pub(super) thread: Option<JoinHandle<()>>,
}

pub(super) fn writer_gone() -> StoreError {
    StoreError::Database("the store's writer thread stopped".into())
}

impl PersistentStore {
    // ----- the writer thread -----------------------------------------------------------------

    /// Takes what the writer finished, without waiting, and gives it what waited for room.
    pub(super) fn collect(&mut self) {
        loop {
            let Some(writer) = &self.writer else { return };
            match writer.done.try_recv() {
                Ok(done) => self.on_done(done),
                Err(_) => break,
            }
        }
        self.send_waiting();
    }

    /// Gives the writer the scans and the hand-over that waited for room in its queue.
    pub(super) fn send_waiting(&mut self) {
        while self.jobs < MAX_JOBS {
            let Some(job) = self.deferred.pop_front() else {
                break;
            };
            self.send(job);
        }
        if self.flush_wanted || self.overlay.pending() >= self.config.max_buffered_writes {
            self.hand_over();
        }
    }

    /// Queues a job; the caller checked that there is room.
    pub(super) fn send(&mut self, job: Job) {
        let Some(writer) = &self.writer else { return };
        match writer.jobs.try_send(job) {
            Ok(()) => self.jobs += 1,
            Err(_) => {
                // Never full (at most MAX_JOBS given): the thread is gone.
                self.error = Some(writer_gone());
            }
        }
    }

    pub(super) fn on_done(&mut self, done: Done) {
        match done {
            Done::Committed {
                batches,
                result,
                snapshot,
                crawl,
            } => {
                self.jobs = self.jobs.saturating_sub(batches.len());
                // The committed state changed: reads now go to a snapshot of the new one (before
                // the overlay lets go of the entries it holds).
                self.snapshot = snapshot.map(|s| *s);
                let ok = result.is_ok();
                if let Err(error) = result {
                    self.error = Some(error);
                }
                if let CrawlState::Carried(carrier) = self.crawl {
                    if batches.contains(&carrier) {
                        // Failed: given back, it goes again with the next batch.
                        self.crawl = match crawl {
                            Some(snapshot) if !ok => CrawlState::Waiting(snapshot),
                            _ => CrawlState::Durable,
                        };
                    }
                }
                for batch in batches {
                    if let Err(error) = self.overlay.committed(batch, ok) {
                        tracing::warn!(%error, "store writer out of step");
                    }
                    if let Some((carrier, _)) = &mut self.routing {
                        if *carrier == Some(batch) {
                            if ok {
                                self.routing = None;
                            } else {
                                *carrier = None; // Goes again with the next batch.
                            }
                        }
                    }
                }
            }
            Done::Scanned {
                id,
                entries,
                complete,
            } => {
                self.jobs = self.jobs.saturating_sub(1);
                match self.scans.remove(&id) {
                    Some(ScanFor::Gc { now, from }) => {
                        self.gc_scan = None;
                        let result = entries.and_then(|e| self.gc_page(&from, e, complete, now));
                        if result.is_err() {
                            self.gc_cursor = GcCursor::Values(Vec::new());
                        }
                        self.finished.push_back(Background::Gc(result));
                    }
                    Some(ScanFor::Provided { tag, from }) => {
                        let page = entries.and_then(|e| self.provided_page(&from, e, complete));
                        self.finished.push_back(Background::Provided { tag, page });
                    }
                    None => {}
                }
            }
        }
    }

    /// A page of the provided keys read by the writer from `from`, with the overlay's newer
    /// writes over it, and where the next page starts.
    pub(super) fn provided_page(
        &mut self,
        from: &Key,
        entries: Vec<Entry>,
        complete: bool,
    ) -> Result<ProvidedPage, StoreError> {
        let upper = (!complete)
            .then(|| entries.last().map(|(k, _)| k.clone()))
            .flatten();
        let bound = codec::provided_bound(from);
        let entries = merge(
            entries.into_iter().map(Ok),
            self.overlay.range(Table::Provided, &bound),
            upper.as_deref(),
            usize::MAX,
            |_| false,
        )?;
        self.sweep_page(from, entries, upper)
    }

    /// Hands a batch (the oldest waiting writes, at most `max_buffered_writes`, and the
    /// routing and crawl snapshots) to the writer if its queue has room. What is left waits in
    /// the overlay, and goes when a job finishes.
    pub(super) fn hand_over(&mut self) {
        self.hand_over_up_to(self.config.max_buffered_writes);
    }

    /// [`hand_over`](Self::hand_over) with batches of at most `max` writes (the bulk calls
    /// hand over larger batches: fewer commits, each taking longer).
    pub(super) fn hand_over_up_to(&mut self, max: usize) {
        let routing_waits = matches!(self.routing, Some((None, _)));
        let crawl_waits = matches!(self.crawl, CrawlState::Waiting(_));
        if self.overlay.pending() == 0 && !routing_waits && !crawl_waits && !self.sweep_mark_unsent
        {
            self.flush_wanted = false;
            return;
        }
        if self.jobs >= MAX_JOBS || self.writer.is_none() {
            self.flush_wanted = true;
            return;
        }
        let (batch, ops) = self.overlay.take_batch(max);
        let routing = match &mut self.routing {
            Some((carrier @ None, peers)) => {
                *carrier = Some(batch);
                Some(
                    peers
                        .iter()
                        .map(|(peer, addrs)| (peer.to_bytes(), codec::encode_routing(addrs)))
                        .collect(),
                )
            }
            _ => None,
        };
        let crawl = match std::mem::take(&mut self.crawl) {
            CrawlState::Waiting(snapshot) => {
                self.crawl = CrawlState::Carried(batch);
                Some(snapshot)
            }
            other => {
                self.crawl = other;
                None
            }
        };
        // Lost if this commit fails: the next mark comes with the next region.
        let meta = match self.sweep_mark.filter(|_| self.sweep_mark_unsent) {
            Some(mark) => codec::sweep_mark_entries(&mark).to_vec(),
            None => Vec::new(),
        };
        self.sweep_mark_unsent = false;
        self.send(Job::Commit {
            batch,
            ops,
            routing,
            crawl,
            meta,
        });
        self.flush_wanted = self.overlay.pending() > 0;
    }

    /// Keeps `snapshot` for the next batch, replacing one still waiting (which is freed here:
    /// that only happens when the writer's queue was full), and hands it over if there is room.
    pub(super) fn save_crawl(&mut self, snapshot: CrawlSnapshot) {
        self.crawl = CrawlState::Waiting(Box::new(snapshot));
        self.collect();
        self.hand_over();
    }

    /// The latest crawl snapshot: the one waiting, else the database's. One with the writer is
    /// waited for (this waits for the disk), then read back from the database.
    pub(super) fn load_crawl(&mut self) -> Result<Option<CrawlSnapshot>, StoreError> {
        self.collect();
        while matches!(self.crawl, CrawlState::Carried(_)) {
            self.wait_one()?;
        }
        if let CrawlState::Waiting(snapshot) = &self.crawl {
            return Ok(Some((**snapshot).clone()));
        }
        read_crawl(&self.db)
    }

    /// Waits for one job of the writer to finish. Only for the calls that wait.
    pub(super) fn wait_one(&mut self) -> Result<(), StoreError> {
        let writer = self.writer.as_ref().ok_or_else(writer_gone)?;
        let done = writer.done.recv().map_err(|_| writer_gone())?;
        self.on_done(done);
        Ok(())
    }

    /// Reads `limit` entries of `table` from `from` on the writer thread.
    pub(super) fn scan(&mut self, table: Table, from: Vec<u8>, limit: usize, purpose: ScanFor) {
        let id = self.next_scan;
        self.next_scan += 1;
        self.scans.insert(id, purpose);
        let job = Job::Scan {
            id,
            table,
            from,
            limit,
        };
        if self.jobs < MAX_JOBS && self.deferred.is_empty() {
            self.send(job);
        } else {
            self.deferred.push_back(job);
        }
    }

    // ----- reads and writes through the overlay ------------------------------------------------

    pub(super) fn snapshot(&mut self) -> Result<&Snapshot, StoreError> {
        if self.snapshot.is_none() {
            self.snapshot = Some(Snapshot::open(&self.db)?);
        }
        Ok(self.snapshot.as_ref().expect("just set"))
    }

    /// An entry as readers see it: the overlay's newest write, else the committed state.
    pub(super) fn read(&mut self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(value) = self.overlay.get(table, key) {
            return Ok(value.map(<[u8]>::to_vec));
        }
        self.snapshot()?.get(table, key)
    }

    /// Up to `limit` entries of `table` from `from`, before the first key `past_end` refuses.
    pub(super) fn read_range(
        &mut self,
        table: Table,
        from: &[u8],
        limit: usize,
        past_end: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<Entry>, StoreError> {
        self.snapshot()?;
        let snapshot = self.snapshot.as_ref().expect("opened");
        let base = snapshot.range(table, from)?;
        merge(base, self.overlay.range(table, from), None, limit, past_end)
    }

    pub(super) fn write(&mut self, table: Table, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.overlay.write(table, key, value);
        if self.overlay.pending() >= self.config.max_buffered_writes {
            self.hand_over();
        }
    }

    /// Admits a record from the network, unless too much waits for the disk already.
    pub(super) fn admit(&mut self) -> Result<(), StoreError> {
        self.collect();
        if self.overlay.bytes() >= self.config.max_unwritten_bytes {
            return Err(StoreError::Busy);
        }
        Ok(())
    }

    /// Removes the expired entries among `entries` (of the table the GC cursor is in, from
    /// `from`), and moves the cursor on: past the last entry, or to the next table when
    /// `complete`.
    pub(super) fn gc_page(
        &mut self,
        from: &[u8],
        entries: Vec<Entry>,
        complete: bool,
        now: u64,
    ) -> Result<GcProgress, StoreError> {
        let (table, _) = self.gc_cursor.table();
        // The page is the committed state when the writer read it: newer writes win.
        let upper = (!complete)
            .then(|| entries.last().map(|(k, _)| k.clone()))
            .flatten();
        let entries = merge(
            entries.into_iter().map(Ok),
            self.overlay.range(table, from),
            upper.as_deref(),
            usize::MAX,
            |_| false,
        )?;
        let mut progress = GcProgress {
            examined: entries.len(),
            ..Default::default()
        };
        for (key, value) in &entries {
            match table {
                Table::Values => {
                    if codec::decode_value(value)?.expires <= now {
                        self.remove(key)?;
                        progress.removed += 1;
                    }
                }
                _ => {
                    if codec::decode_provider(value)?.expires <= now {
                        let (key, peer) = codec::split_provider_entry_key(key)?;
                        self.remove_provider(&key, &peer)?;
                        progress.removed += 1;
                    }
                }
            }
        }
        self.gc_cursor = match (table, upper) {
            (Table::Values, Some(last)) => GcCursor::Values(after(&last)),
            (Table::Values, None) => GcCursor::Providers(Vec::new()),
            (_, Some(last)) => GcCursor::Providers(after(&last)),
            (_, None) => {
                progress.done = true;
                GcCursor::Values(Vec::new())
            }
        };
        Ok(progress)
    }
}

fn crawl_corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("crawl snapshot: {what}"))
}

/// The committed crawl snapshot (layout: `persistent_codec.rs`); `None` when none was saved.
fn read_crawl(db: &Database) -> Result<Option<CrawlSnapshot>, StoreError> {
    let read = db.begin_read().map_err(db_err)?;
    let meta = read.open_table(META).map_err(db_err)?;
    let Some(saved_at) = meta.get(CRAWL_SAVED_AT).map_err(db_err)? else {
        return Ok(None);
    };
    let saved_at = codec::from_unix_nanos(saved_at.value());
    let count = meta
        .get(CRAWL_PEERS)
        .map_err(db_err)?
        .ok_or_else(|| crawl_corrupt("no peer count"))?
        .value();
    let table = read.open_table(CRAWL).map_err(|e| match e {
        TableError::TableDoesNotExist(_) => crawl_corrupt("no table"),
        e => db_err(e),
    })?;
    if table.len().map_err(db_err)? != count {
        return Err(crawl_corrupt("peer count"));
    }
    // Not sized from the count: the vector grows only with entries actually read.
    let mut peers = Vec::new();
    for (position, item) in (0u64..).zip(table.iter().map_err(db_err)?) {
        let (key, value) = item.map_err(db_err)?;
        if u64::from(key.value()) != position {
            return Err(crawl_corrupt("positions"));
        }
        peers.push(codec::decode_crawl_peer(value.value())?);
    }
    Ok(Some(CrawlSnapshot { saved_at, peers }))
}

impl Drop for PersistentStore {
    /// A clean shutdown keeps what was accepted; only a crash loses the writes not committed.
    fn drop(&mut self) {
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "store flush on close failed");
        }
        if let Some(mut writer) = self.writer.take() {
            let thread = writer.thread.take();
            drop(writer); // Closes the queue: the thread ends after its last job.
            if let Some(thread) = thread {
                if thread.join().is_err() {
                    tracing::warn!("the store's writer thread panicked");
                }
            }
        }
        self.compact_after_bulk();
    }
}

impl std::fmt::Debug for PersistentStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersistentStore")
            .field("config", &self.config)
            .field("buffered", &self.overlay.pending())
            .field("in_flight", &self.overlay.in_flight())
            .field("unwritten_bytes", &self.overlay.bytes())
            .finish()
    }
}
