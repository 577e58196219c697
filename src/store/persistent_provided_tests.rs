//! The bulk calls of the provided keys on disk: chunks, the bound on unwritten bytes, the
//! overlay's newer writes, restarts, and paging through a large list.

use std::time::{Duration, SystemTime};

use super::super::{PersistentStore, PersistentStoreConfig};
use super::BULK_CHUNK;
use crate::key::Key;
use crate::store::{suite, Store};

/// `n` distinct keys shaped like sha2-256 multihashes (34 bytes), from `seed` on.
fn keys(seed: u64, n: u64) -> Vec<Vec<u8>> {
    (seed..seed + n)
        .map(|i| {
            let mut key = vec![0x12, 0x20];
            key.extend_from_slice(&[0; 24]);
            key.extend_from_slice(&i.to_be_bytes());
            key
        })
        .collect()
}

/// Every provided key, page by page from the start, each page from the point after the last.
fn page_all(store: &mut PersistentStore, limit: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut from = Some(Key::from_hash([0; 32]));
    while let Some(at) = from {
        let page = store.provided(&at, limit).unwrap();
        from = match page.last() {
            Some(last) if page.len() == limit => Key::new(&last.key).next(),
            _ => None,
        };
        out.extend(page.into_iter().map(|p| p.key));
    }
    out
}

#[test]
fn bulk_adds_stay_within_the_unwritten_bound_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    // A small bound: the call must wait for the writer many times over.
    let config = PersistentStoreConfig {
        max_unwritten_bytes: 256 * 1024,
        ..Default::default()
    };
    let now = suite::now();
    let all = keys(0, 5 * BULK_CHUNK as u64 + 7);
    {
        let mut store = PersistentStore::open(&path, config).unwrap();
        assert_eq!(store.add_provided_many(&all, now).unwrap(), all.len());
        // One chunk's writes may come on top of the bound, never more.
        let slack = BULK_CHUNK * 400;
        assert!(
            store.overlay.bytes() < config.max_unwritten_bytes + slack,
            "{} bytes unwritten",
            store.overlay.bytes()
        );
        assert_eq!(store.provided_len().unwrap(), all.len() as u64);
    } // Dropped: a clean close commits the rest.
    let mut store = PersistentStore::open(&path, config).unwrap();
    assert_eq!(store.provided_len().unwrap(), all.len() as u64);
    // Half known, half new, after the restart.
    // The second half of `all` again, then as many new keys as the first half.
    let start = all.len() / 2;
    let more = keys(start as u64, all.len() as u64);
    let new = start;
    assert_eq!(store.add_provided_many(&more, now).unwrap(), new);
    assert_eq!(store.provided_len().unwrap(), (all.len() + new) as u64);
    assert_eq!(store.remove_provided_many(&all).unwrap(), all.len());
    assert_eq!(store.provided_len().unwrap(), new as u64);
    drop(store);
    let mut store = PersistentStore::open(&path, config).unwrap();
    assert_eq!(store.provided_len().unwrap(), new as u64);
    assert_eq!(page_all(&mut store, 10_000).len(), new);
}

#[test]
fn bulk_calls_see_the_writes_not_yet_durable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let now = suite::now();
    let later = now + Duration::from_secs(60);
    let all = keys(0, 100);
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.add_provided_many(&all, now).unwrap(), 100);
    store.flush().unwrap();
    // Still in the overlay, not committed: a removal, and a status.
    store.remove_provided(&all[0]).unwrap();
    store.set_provided_status(&all[1], later, 7).unwrap();
    assert_eq!(store.add_provided_many(&all[..2], later).unwrap(), 1);
    assert_eq!(store.remove_provided_many(&all[2..3]).unwrap(), 1);
    assert_eq!(store.add_provided_many(&all[2..3], later).unwrap(), 1);
    drop(store);
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.provided_len().unwrap(), 100);
    let listed = store.provided(&Key::from_hash([0; 32]), 200).unwrap();
    let status = |key: &[u8]| {
        let p = listed.iter().find(|p| p.key == key).expect("listed");
        (p.added, p.last_provided, p.peers)
    };
    assert_eq!(status(&all[0]), (later, None, 0), "added again");
    assert_eq!(status(&all[1]), (now, Some(later), 7), "kept its status");
    assert_eq!(
        status(&all[2]),
        (later, None, 0),
        "removed, then added again"
    );
    assert_eq!(status(&all[3]), (now, None, 0));
}

/// Bulk add, count and page through a large list. 200,000 keys in the tests (a debug build);
/// the millions are in `benches/provide_bulk.rs`.
#[test]
fn pages_through_a_large_list_in_keyspace_order() {
    const N: u64 = 200_000;
    let dir = tempfile::tempdir().unwrap();
    let mut store = PersistentStore::open(
        dir.path().join("store.redb"),
        PersistentStoreConfig::default(),
    )
    .unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let all = keys(0, N);
    assert_eq!(store.add_provided_many(&all, now).unwrap(), N as usize);
    assert_eq!(store.provided_len().unwrap(), N);
    // Some pages read before everything is durable, the rest after.
    let listed = page_all(&mut store, 7_777);
    assert_eq!(listed.len() as u64, N);
    let points: Vec<Key> = listed.iter().map(|k| Key::new(k)).collect();
    assert!(points.windows(2).all(|w| w[0] < w[1]), "keyspace order");
    store.flush().unwrap();
    assert_eq!(page_all(&mut store, 65_536).len() as u64, N);
    assert_eq!(
        store.remove_provided_many(&all[..N as usize / 2]).unwrap(),
        N as usize / 2
    );
    assert_eq!(page_all(&mut store, 10_000).len() as u64, N / 2);
}
