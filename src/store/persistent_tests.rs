use std::time::Duration;

use libp2p::PeerId;

use super::*;
use crate::store::suite::{self, provider, value};
use crate::store::MemoryStoreConfig;

fn config_from(bounds: MemoryStoreConfig) -> PersistentStoreConfig {
    PersistentStoreConfig {
        max_records: bounds.max_records,
        max_value_size: bounds.max_value_size,
        max_provider_keys: bounds.max_provider_keys,
        max_providers_per_key: bounds.max_providers_per_key,
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
            .insert("schema_version", 2)
            .unwrap();
        txn.commit().unwrap();
    }
    let before = std::fs::read(&future).unwrap();
    let err = PersistentStore::open(&future, PersistentStoreConfig::default()).unwrap_err();
    assert_eq!(
        err,
        StoreError::SchemaVersion {
            found: 2,
            supported: 1
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
        assert_eq!(store.buffered, 0);
        store.flush().unwrap();
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
