use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::PeerId;
use redb::TableDefinition;

use super::*;
use crate::store::suite::{self, provider, value};
use crate::store::MemoryStoreConfig;

fn config_from(bounds: MemoryStoreConfig) -> PersistentStoreConfig {
    PersistentStoreConfig {
        max_records: bounds.max_records,
        max_value_size: bounds.max_value_size,
        max_provider_keys: bounds.max_provider_keys,
        max_providers_per_key: bounds.max_providers_per_key,
        max_record_bytes: bounds.max_record_bytes as u64,
        max_provider_bytes: bounds.max_provider_bytes as u64,
        ..Default::default()
    }
}

#[test]
fn persistent_store_passes_the_shared_suite() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::cell::Cell::new(0);
    suite::run_all(|bounds| {
        counter.set(counter.get() + 1);
        let path = dir.path().join(format!("store-{}.redb", counter.get()));
        PersistentStore::open(path, config_from(bounds)).unwrap()
    });
}

#[test]
fn persistent_store_passes_the_quota_suite() {
    let dir = tempfile::tempdir().unwrap();
    let counter = std::cell::Cell::new(0);
    suite::run_quotas(|bounds| {
        counter.set(counter.get() + 1);
        let path = dir.path().join(format!("quota-{}.redb", counter.get()));
        PersistentStore::open(path, config_from(bounds)).unwrap()
    });
}

/// The quota books are on disk: a reopened store still knows who holds what, and a flood
/// from before the restart still gives way to other sources after it.
#[test]
fn quotas_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let config = PersistentStoreConfig {
        max_provider_keys: 20,
        ..Default::default()
    };
    let now = suite::now();
    let (flood, flood_src) = suite::peer_in(1);
    {
        let mut store = PersistentStore::open(&path, config).unwrap();
        for i in 0..20u32 {
            let record = provider(&i.to_be_bytes(), flood, now);
            store.add_provider_from(record, flood_src).unwrap();
        }
        let more = provider(b"more", flood, now);
        assert_eq!(
            store.add_provider_from(more, flood_src),
            Err(StoreError::Full)
        );
    }
    let mut store = PersistentStore::open(&path, config).unwrap();
    assert!(store.books(quota::Kind::Providers).total() > 0);
    let more = provider(b"more", flood, now);
    assert_eq!(
        store.add_provider_from(more, flood_src),
        Err(StoreError::Full),
        "still the largest source"
    );
    let (honest, honest_src) = suite::peer_in(2);
    store
        .add_provider_from(provider(b"honest", honest, now), honest_src)
        .unwrap();
    assert_eq!(store.providers(b"honest", now).unwrap().len(), 1);
    assert!(store
        .providers(&0u32.to_be_bytes(), now)
        .unwrap()
        .is_empty());
    // Everything removed, everything released.
    for i in 1..20u32 {
        store.remove_provider(&i.to_be_bytes(), &flood).unwrap();
    }
    store.remove_provider(b"honest", &honest).unwrap();
    assert_eq!(store.books(quota::Kind::Providers).total(), 0);
    store.flush().unwrap();
    let read = store.db.begin_read().unwrap();
    let sources = read.open_table(writer::SOURCES).unwrap();
    assert_eq!(sources.len().unwrap(), 0, "no quota entry left behind");
}

#[test]
fn a_reopened_store_serves_the_same_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let now = suite::now();
    let peer = PeerId::random();
    let routing = vec![(
        PeerId::random(),
        vec!["/ip4/1.2.3.4/tcp/4001".parse().unwrap()],
    )];
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        store.add_provider(provider(b"key", peer, now)).unwrap();
        store.put(value(b"/v/a", 3, now)).unwrap();
        store.add_provided(b"mine", now).unwrap();
        store.save_routing_snapshot(&routing).unwrap();
        store.flush().unwrap();
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(
        store.providers(b"key", now).unwrap(),
        vec![provider(b"key", peer, now)]
    );
    assert_eq!(store.get(b"/v/a", now).unwrap().unwrap().value, vec![1; 3]);
    let zero = Key::from_hash([0; 32]);
    let provided = store.provided(&zero, 10).unwrap();
    assert_eq!(provided.len(), 1);
    assert_eq!(provided[0].key, b"mine".to_vec());
    assert_eq!(store.load_routing_snapshot().unwrap(), routing);
    store.remove_provided(b"mine").unwrap();
    assert_eq!(store.provided_len().unwrap(), 0);
}

#[test]
fn buffered_writes_are_visible_at_once_and_kept_by_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let now = suite::now();
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        store.put(value(b"/v/flushed", 1, now)).unwrap();
        store.flush().unwrap();
        store.put(value(b"/v/buffered", 1, now)).unwrap();
        assert!(
            store.get(b"/v/buffered", now).unwrap().is_some(),
            "read your writes"
        );
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert!(store.get(b"/v/flushed", now).unwrap().is_some());
    assert!(
        store.get(b"/v/buffered", now).unwrap().is_some(),
        "flushed on drop"
    );
}

#[test]
fn a_full_buffer_flushes_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let now = suite::now();
    let config = PersistentStoreConfig {
        max_buffered_writes: 10,
        ..Default::default()
    };
    {
        let mut store = PersistentStore::open(&path, config).unwrap();
        for i in 0..10u8 {
            store
                .add_provider(provider(&[i], PeerId::random(), now))
                .unwrap();
        }
    }
    let mut store = PersistentStore::open(&path, config).unwrap();
    assert_eq!(
        store
            .provider_keys(&Key::from_hash([0; 32]), 100)
            .unwrap()
            .len(),
        10
    );
}

#[test]
fn a_foreign_file_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-store");
    let garbage: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &garbage).unwrap();
    let err = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(std::fs::read(&path).unwrap() == garbage, "file changed");
}

#[test]
fn another_redb_database_or_schema_version_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    // A redb database of some other program.
    let other = dir.path().join("other.redb");
    {
        let db = Database::create(&other).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(TableDefinition::<&str, u64>::new("accounts"))
            .unwrap()
            .insert("alice", 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&other).unwrap();
    let err = PersistentStore::open(&other, PersistentStoreConfig::default()).unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(std::fs::read(&other).unwrap() == before, "file changed");

    // A kadence store from a future version.
    let future = dir.path().join("future.redb");
    drop(PersistentStore::open(&future, PersistentStoreConfig::default()).unwrap());
    {
        let db = Database::create(&future).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert("schema_version", 3)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&future).unwrap();
    let err = PersistentStore::open(&future, PersistentStoreConfig::default()).unwrap_err();
    assert_eq!(
        err,
        StoreError::SchemaVersion {
            found: 3,
            supported: 2
        }
    );
    assert!(std::fs::read(&future).unwrap() == before, "file changed");
}

#[test]
fn a_full_key_makes_room_only_from_expired_providers() {
    let dir = tempfile::tempdir().unwrap();
    let config = PersistentStoreConfig {
        max_providers_per_key: 2,
        ..Default::default()
    };
    let mut store = PersistentStore::open(dir.path().join("s.redb"), config).unwrap();
    let now = suite::now();
    let mut short = provider(b"k", PeerId::random(), now);
    short.expires = now + Duration::from_secs(5);
    store.add_provider(short).unwrap();
    store
        .add_provider(provider(b"k", PeerId::random(), now))
        .unwrap();
    let newcomer = provider(b"k", PeerId::random(), now);
    assert_eq!(
        store.add_provider(newcomer),
        Err(StoreError::TooManyProviders)
    );
    let later = now + Duration::from_secs(10);
    let newcomer = provider(b"k", PeerId::random(), later);
    store.add_provider(newcomer.clone()).unwrap();
    let live = store.providers(b"k", later).unwrap();
    assert_eq!(live.len(), 2);
    assert!(live.contains(&newcomer));
}

/// Review finding: a flush after reads only must not commit (an fsync each time), and the
/// removals of GC, which are writes, must still be committed by it.
#[test]
fn gc_removals_survive_a_reopen_and_reads_alone_commit_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gc.redb");
    let now = suite::now();
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        let mut short = provider(b"old", PeerId::random(), now);
        short.expires = now + Duration::from_secs(1);
        store.add_provider(short).unwrap();
        store
            .add_provider(provider(b"new", PeerId::random(), now))
            .unwrap();
        store.flush().unwrap();
        // Reads then a flush: nothing to commit.
        store.providers(b"new", now).unwrap();
        assert_eq!(store.overlay.pending(), 0);
        store.start_flush().unwrap();
        assert_eq!(store.overlay.in_flight(), 0, "no commit for reads");
        let later = now + Duration::from_secs(10);
        while !store.gc(later, 10).unwrap().done {}
        store.flush().unwrap();
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let zero = Key::from_hash([0; 32]);
    assert_eq!(
        store.provider_keys(&zero, 10).unwrap(),
        vec![b"new".to_vec()]
    );
}

/// Reads see writes the writer has not committed yet, and `durable_writes` follows the
/// writer: a write is acknowledged only once committed.
#[test]
fn reads_see_writes_in_flight_and_durability_is_reported_when_committed() {
    let dir = tempfile::tempdir().unwrap();
    let config = PersistentStoreConfig {
        max_buffered_writes: 8,
        ..Default::default()
    };
    let mut store = PersistentStore::open(dir.path().join("s.redb"), config).unwrap();
    let now = suite::now();
    let peers: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
    for (i, peer) in peers.iter().enumerate() {
        store
            .add_provider(provider(&[i as u8], *peer, now))
            .unwrap();
    }
    store.remove_provider(&[3], &peers[3]).unwrap();
    store.start_flush().unwrap();
    // Whatever the writer has done by now, every read is right.
    for (i, peer) in peers.iter().enumerate() {
        let found = store.providers(&[i as u8], now).unwrap();
        if i == 3 {
            assert!(found.is_empty());
        } else {
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].provider, *peer);
        }
    }
    let zero = Key::from_hash([0; 32]);
    assert_eq!(store.provider_keys(&zero, 100).unwrap().len(), 19);
    let accepted = store.accepted_writes();
    assert!(store.durable_writes() <= accepted);
    store.flush().unwrap();
    assert_eq!(
        store.durable_writes(),
        accepted,
        "flush waits for every write"
    );
    assert_eq!(store.overlay.in_flight(), 0);
    assert_eq!(store.overlay.pending(), 0);
}

/// A GC step started from `poll` scans on the writer thread; its outcome comes back through
/// `poll_background`, and what it removed is removed.
#[test]
fn gc_runs_in_the_background_and_reports_through_poll_background() {
    use std::task::{Context, Poll};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gc.redb");
    let now = suite::now();
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        for i in 0..40u8 {
            let mut record = provider(&[i], PeerId::random(), now);
            if i % 4 == 0 {
                record.expires = now + Duration::from_secs(1);
            }
            store.add_provider(record).unwrap();
        }
        store
            .put(value(b"/v/old", 1, now - Duration::from_secs(7200)))
            .unwrap();
        store.flush().unwrap();
        // Written after the commit, not yet handed over: the scan must not miss them.
        let mut late = provider(b"late", PeerId::random(), now);
        late.expires = now + Duration::from_secs(1);
        store.add_provider(late).unwrap();

        let later = now + Duration::from_secs(10);
        let mut cx = Context::from_waker(futures::task::noop_waker_ref());
        let (mut removed, mut steps) = (0, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            assert_eq!(store.start_gc(later, 8).unwrap(), None, "never at once");
            let progress = loop {
                match store.poll_background(&mut cx) {
                    Poll::Ready(Background::Gc(result)) => break result.unwrap(),
                    Poll::Ready(other) => panic!("{other:?}"),
                    Poll::Pending => {
                        assert!(std::time::Instant::now() < deadline, "no GC outcome");
                        std::thread::sleep(Duration::from_millis(1));
                    }
                }
            };
            steps += 1;
            removed += progress.removed;
            assert!(progress.examined <= 8 + 1, "{progress:?}");
            if progress.done {
                break;
            }
        }
        assert!(steps >= 5, "41 entries in steps of 8: {steps}");
        assert_eq!(removed, 10 + 1 + 1);
        assert!(store.get(b"/v/old", later).unwrap().is_none());
        assert!(store.providers(b"late", now).unwrap().is_empty());
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let zero = Key::from_hash([0; 32]);
    assert_eq!(store.provider_keys(&zero, 100).unwrap().len(), 30);
}

/// When more than `max_unwritten_bytes` wait for the disk, records from the network are
/// refused with a typed error, and nothing changes; the node's own bookkeeping is taken.
#[test]
fn writes_beyond_the_unwritten_bytes_bound_are_refused_as_busy() {
    let dir = tempfile::tempdir().unwrap();
    let config = PersistentStoreConfig {
        max_unwritten_bytes: 4096,
        // Nothing is handed over by itself: the bytes stay unwritten.
        max_buffered_writes: usize::MAX,
        ..Default::default()
    };
    let mut store = PersistentStore::open(dir.path().join("s.redb"), config).unwrap();
    let now = suite::now();
    let mut accepted = 0;
    let refused = loop {
        match store.add_provider(provider(
            &(accepted as u32).to_be_bytes(),
            PeerId::random(),
            now,
        )) {
            Ok(()) => accepted += 1,
            Err(e) => break e,
        }
        assert!(accepted < 1000, "never refused");
    };
    assert_eq!(refused, StoreError::Busy);
    assert!(accepted > 0);
    assert_eq!(
        store.put(value(b"/v/a", 3, now)),
        Err(StoreError::Busy),
        "values too"
    );
    assert!(
        store.get(b"/v/a", now).unwrap().is_none(),
        "nothing changed"
    );
    store.add_provided(b"mine", now).unwrap();
    // Once the writer has caught up, writes are taken again.
    store.flush().unwrap();
    store.put(value(b"/v/a", 3, now)).unwrap();
    let zero = Key::from_hash([0; 32]);
    assert_eq!(store.provider_keys(&zero, 10_000).unwrap().len(), accepted);
    assert_eq!(store.provided_len().unwrap(), 1);
}

/// Pages of the provided keys are read on the writer thread, and come back with the writes
/// not yet committed over them: added keys in, removed keys out, and where the next page
/// starts past what was read.
#[test]
fn provided_pages_come_from_the_writer_with_newer_writes_over_them() {
    use std::task::{Context, Poll};
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        PersistentStore::open(dir.path().join("p.redb"), PersistentStoreConfig::default()).unwrap();
    let now = suite::now();
    let keys: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for key in &keys {
        store.add_provided(key, now).unwrap();
    }
    store.flush().unwrap();
    // Not committed when the pages are read.
    store.remove_provided(&keys[7]).unwrap();
    store.add_provided(b"new", now).unwrap();
    let mut expected: Vec<Vec<u8>> = keys.iter().filter(|k| **k != keys[7]).cloned().collect();
    expected.push(b"new".to_vec());
    expected.sort_by_key(|k| Key::new(k));

    let mut cx = Context::from_waker(futures::task::noop_waker_ref());
    let mut from = Some(Key::from_hash([0; 32]));
    let mut read = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut tag = 0;
    while let Some(start) = from.take() {
        tag += 1;
        assert_eq!(store.start_load_provided(tag, &start, 16).unwrap(), None);
        let page = loop {
            match store.poll_background(&mut cx) {
                Poll::Ready(Background::Provided { tag: t, page }) => {
                    assert_eq!(t, tag);
                    break page.unwrap();
                }
                Poll::Ready(other) => panic!("{other:?}"),
                Poll::Pending => {
                    assert!(std::time::Instant::now() < deadline, "no page");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        };
        read.extend(page.keys.into_iter().map(|p| p.key));
        from = page.next;
    }
    assert_eq!(read, expected);
}

#[test]
fn the_provider_cache_is_bounded_in_keys_and_bytes() {
    let now = suite::now();
    let records = |n: usize| -> Vec<ProviderRecord> {
        (0..n)
            .map(|_| provider(b"k", PeerId::random(), now))
            .collect()
    };
    let mut cache = records::ProviderCache::new(4, 4096);
    for i in 0..10u8 {
        cache.insert(vec![i], records(1));
    }
    assert!(cache.get(&[9]).is_some());
    assert!(cache.get(&[5]).is_none(), "at most 4 keys");
    // A key of many records pushes the others out to stay within the bytes...
    cache.insert(vec![20], records(17));
    assert!(cache.get(&[20]).is_some());
    assert!(cache.get(&[9]).is_none());
    // ...and one too large for the whole budget is not cached at all.
    cache.insert(vec![21], records(100));
    assert!(cache.get(&[21]).is_none());
    assert!(cache.get(&[20]).is_some());
}

// ----- the crawl snapshot ------------------------------------------------------------------------

/// A peer id of its own for each `i` (made, not drawn: 100,000 random ones take a second in a
/// debug build).
fn crawl_peer(i: u32) -> PeerId {
    let mut digest = [0x5a; 32];
    digest[..4].copy_from_slice(&i.to_be_bytes());
    let hash = libp2p::multihash::Multihash::wrap(0x12, &digest).unwrap();
    PeerId::from_multihash(hash).unwrap()
}

/// `n` peers with `addrs` addresses each (distinct, so that a mix-up shows).
fn crawl_snapshot(n: u32, addrs: u16, saved_at: SystemTime) -> CrawlSnapshot {
    let peers = (0..n)
        .map(|i| {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 | i);
            let addrs = (0..addrs)
                .map(|port| Multiaddr::from(ip).with(Protocol::Tcp(port)))
                .collect();
            (crawl_peer(i), addrs)
        })
        .collect();
    CrawlSnapshot { saved_at, peers }
}

fn crawl_time(secs: u64) -> SystemTime {
    // Nanoseconds too: the saved time reads back exactly.
    SystemTime::UNIX_EPOCH + Duration::new(secs, 123_456_789)
}

#[test]
fn a_crawl_snapshot_reads_back_in_order_before_and_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let mut saved = crawl_snapshot(300, 2, crawl_time(1_700_000_000));
    saved.peers[7].1.clear(); // A peer without addresses is kept as one.
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        store.save_crawl_snapshot(saved.clone()).unwrap();
        assert_eq!(store.load_crawl_snapshot().unwrap().as_ref(), Some(&saved));
        store.flush().unwrap();
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.load_crawl_snapshot().unwrap(), Some(saved));
}

#[test]
fn a_second_crawl_snapshot_replaces_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let first = crawl_snapshot(50, 1, crawl_time(1_000));
    let second = crawl_snapshot(20, 3, crawl_time(2_000));
    let third = crawl_snapshot(5, 2, crawl_time(3_000));
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        store.save_crawl_snapshot(first).unwrap();
        store.flush().unwrap();
        // Fewer peers than the committed one: none of the old entries may stay.
        store.save_crawl_snapshot(second.clone()).unwrap();
        store.flush().unwrap();
        assert_eq!(store.load_crawl_snapshot().unwrap().as_ref(), Some(&second));
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.load_crawl_snapshot().unwrap().as_ref(), Some(&second));

    // The writer's queue full: a snapshot waits in the store, and a newer one replaces it.
    let in_queue = store.jobs;
    store.jobs = MAX_JOBS;
    store
        .save_crawl_snapshot(crawl_snapshot(9, 1, crawl_time(2_500)))
        .unwrap();
    store.save_crawl_snapshot(third.clone()).unwrap();
    assert!(matches!(store.crawl, CrawlState::Waiting(_)));
    assert_eq!(store.load_crawl_snapshot().unwrap().as_ref(), Some(&third));
    store.jobs = in_queue;
    drop(store);
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.load_crawl_snapshot().unwrap(), Some(third));
}

#[test]
fn no_crawl_snapshot_loads_as_none_and_the_memory_store_keeps_none() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        assert_eq!(store.load_crawl_snapshot().unwrap(), None);
        store.put(value(b"/v/a", 3, suite::now())).unwrap();
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.load_crawl_snapshot().unwrap(), None);

    let mut memory = crate::store::MemoryStore::new(MemoryStoreConfig::default());
    let saved = crawl_snapshot(3, 1, crawl_time(1));
    memory.save_crawl_snapshot(saved).unwrap();
    assert_eq!(memory.load_crawl_snapshot().unwrap(), None);
}

#[test]
fn a_crawl_snapshot_is_kept_by_a_clean_close() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let saved = crawl_snapshot(40, 2, crawl_time(5));
    {
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        store.save_crawl_snapshot(saved.clone()).unwrap();
        // Dropped without a flush: the close commits it.
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.load_crawl_snapshot().unwrap(), Some(saved));
}

/// Damage done to the stored snapshot, by writing the database behind the store's back.
type Damage = fn(&redb::WriteTransaction);

#[test]
fn a_damaged_crawl_snapshot_is_corrupt_not_a_panic() {
    const CRAWL: TableDefinition<u32, &[u8]> = TableDefinition::new("crawl");
    let damages: [(&str, Damage); 6] = [
        ("garbage entry", |txn| {
            let mut t = txn.open_table(CRAWL).unwrap();
            t.insert(3, [1, 200, 7].as_slice()).unwrap();
        }),
        ("unknown format", |txn| {
            let mut t = txn.open_table(CRAWL).unwrap();
            let mut entry = t.get(0).unwrap().unwrap().value().to_vec();
            entry[0] = 99;
            t.insert(0, entry.as_slice()).unwrap();
        }),
        ("missing entry", |txn| {
            txn.open_table(CRAWL).unwrap().remove(5).unwrap();
        }),
        ("gap in the positions", |txn| {
            let mut t = txn.open_table(CRAWL).unwrap();
            let entry = t.remove(5).unwrap().unwrap().value().to_vec();
            t.insert(1_000_000, entry.as_slice()).unwrap();
        }),
        ("huge peer count", |txn| {
            let mut meta = txn.open_table(META).unwrap();
            meta.insert("crawl_peers", u64::MAX).unwrap();
        }),
        ("no table", |txn| {
            txn.delete_table(CRAWL).unwrap();
        }),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (i, (what, damage)) in damages.into_iter().enumerate() {
        let path = dir.path().join(format!("damaged-{i}.redb"));
        {
            let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
            store
                .save_crawl_snapshot(crawl_snapshot(10, 2, crawl_time(9)))
                .unwrap();
        }
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            damage(&txn);
            txn.commit().unwrap();
        }
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        let err = store.load_crawl_snapshot().unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{what}: {err:?}");
        // The rest of the store is unaffected, and a new snapshot replaces the damaged one.
        let fresh = crawl_snapshot(4, 1, crawl_time(10));
        store.save_crawl_snapshot(fresh.clone()).unwrap();
        store.flush().unwrap();
        drop(store);
        let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
        assert_eq!(store.load_crawl_snapshot().unwrap(), Some(fresh), "{what}");
    }
}

/// A crawl of the size of the public network reads back whole after a reopen. The times it
/// prints are what the caller's thread spends in the save, and what a restart spends loading.
#[test]
fn a_crawl_snapshot_of_100k_peers_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let saved = crawl_snapshot(100_000, 2, crawl_time(1_700_000_000));
    let copy = saved.clone();
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let started = std::time::Instant::now();
    store.save_crawl_snapshot(saved).unwrap();
    let save = started.elapsed();
    store.flush().unwrap();
    let durable = started.elapsed();
    drop(store);
    let started = std::time::Instant::now();
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    let loaded = store.load_crawl_snapshot().unwrap();
    let load = started.elapsed();
    let file = std::fs::metadata(&path).unwrap().len();
    eprintln!(
        "100,000-peer crawl snapshot: save {save:?}, save until durable {durable:?}, \
         reopen and load {load:?}, file {file} bytes"
    );
    assert_eq!(loaded, Some(copy));
}

/// The save hands the snapshot itself to the writer, which encodes it: nothing proportional
/// to the peers happens on the caller's thread. (Its time is printed by the test above; a
/// bound on it would fail on a loaded machine, where this check cannot.)
#[test]
fn a_crawl_snapshot_goes_to_the_writer_unencoded() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        PersistentStore::open(dir.path().join("s.redb"), PersistentStoreConfig::default()).unwrap();
    store
        .save_crawl_snapshot(crawl_snapshot(1_000, 2, crawl_time(1)))
        .unwrap();
    assert!(matches!(store.crawl, CrawlState::Carried(_)));
    assert_eq!(store.overlay.bytes(), 0, "no entry of it in the overlay");
}
