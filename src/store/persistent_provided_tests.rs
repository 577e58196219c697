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
        max_bulk_bytes: 256 * 1024,
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
            store.overlay.bytes() < config.max_bulk_bytes + slack,
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
    store.flush().unwrap();
    let written = std::fs::metadata(&path).unwrap().len();
    drop(store); // Over 100,000 keys written in bulk: compacted on close.
    let compacted = std::fs::metadata(&path).unwrap().len();
    assert!(compacted < written, "{compacted} bytes, {written} before");
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

#[test]
fn a_schema_1_store_is_migrated_with_its_statuses() {
    use redb::{Database, ReadableDatabase};

    use super::super::writer::{META, PROVIDED, PROVIDED_V1};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    drop(PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap());
    // Turned into a schema 1 store: the old table, its layout, its version.
    let all = keys(0, 1_000);
    {
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(PROVIDED).unwrap();
        {
            let mut old = txn.open_table(PROVIDED_V1).unwrap();
            for (i, key) in all.iter().enumerate() {
                let mut entry = Key::new(key).as_bytes().to_vec();
                entry.extend_from_slice(key);
                let mut value = vec![1];
                value.extend_from_slice(&1_000_000u64.to_be_bytes());
                value.extend_from_slice(&(i as u64 % 3).to_be_bytes());
                value.extend_from_slice(&20u16.to_be_bytes());
                old.insert(entry.as_slice(), value.as_slice()).unwrap();
            }
            // One entry that does not decode: left out, not fatal.
            old.insert([7u8; 40].as_slice(), [9u8].as_slice()).unwrap();
            txn.open_table(META)
                .unwrap()
                .insert("schema_version", 1)
                .unwrap();
        }
        txn.commit().unwrap();
    }
    let mut store = PersistentStore::open(&path, PersistentStoreConfig::default()).unwrap();
    assert_eq!(store.provided_len().unwrap(), all.len() as u64);
    let listed = store
        .provided(&Key::from_hash([0; 32]), usize::MAX)
        .unwrap();
    assert_eq!(listed.len(), all.len());
    for status in &listed {
        let i = all.iter().position(|k| *k == status.key).unwrap() as u64;
        let at = |secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
        assert_eq!(status.added, at(1_000_000));
        assert_eq!(
            status.last_provided,
            (!i.is_multiple_of(3)).then(|| at(i % 3))
        );
        assert_eq!(status.peers, 20);
    }
    drop(store);
    let db = Database::open(&path).unwrap();
    let read = db.begin_read().unwrap();
    assert!(
        read.open_table(PROVIDED_V1).is_err(),
        "the old table is gone"
    );
    let version = read.open_table(META).unwrap();
    assert_eq!(version.get("schema_version").unwrap().unwrap().value(), 2);
}

/// `provided2` entries with the prefix `prefix` (not the key's own: a 64-bit collision of two
/// SHA-256 prefixes cannot be found for a test) and keys `keys`.
fn entries(prefix: u64, keys: &[u64]) -> Vec<(Vec<u8>, Vec<u8>)> {
    keys.iter()
        .map(|k| {
            let mut entry = prefix.to_be_bytes().to_vec();
            entry.extend_from_slice(&k.to_be_bytes());
            (entry, super::codec::encode_provided(1, 0, 0))
        })
        .collect()
}

#[test]
fn keys_sharing_a_prefix_are_ordered_by_point_and_never_split_by_a_page() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        PersistentStore::open(dir.path().join("s.redb"), PersistentStoreConfig::default()).unwrap();
    let zero = Key::from_hash([0; 32]);
    // A page the writer cut inside the run of prefix 9: the run goes to the next page.
    let mut page = entries(5, &[1]);
    page.extend(entries(9, &[1, 2]));
    let upper = page.last().map(|(k, _)| k.clone());
    let cut = store.sweep_page(&zero, page, upper).unwrap();
    assert_eq!(cut.keys.len(), 1);
    assert_eq!(cut.next, Some(super::first_point(&9u64.to_be_bytes(), 0)));
    // A page that is one run: kept whole (the store has nothing more of it), sorted by
    // point, and the next page starts past the prefix.
    let run = entries(9, &[1, 2, 3, 4]);
    let upper = run.last().map(|(k, _)| k.clone());
    let whole = store.sweep_page(&zero, run.clone(), upper).unwrap();
    let points: Vec<Key> = whole.keys.iter().map(|p| Key::new(&p.key)).collect();
    let mut sorted = points.clone();
    sorted.sort();
    assert_eq!((points.len(), &points), (4, &sorted));
    assert_eq!(
        whole.next,
        Some(super::first_point(&10u64.to_be_bytes(), 0))
    );
    assert_eq!(super::next_prefix(&u64::MAX.to_be_bytes()), None);
    // The end of the table: no next page, nothing cut.
    let last = store.sweep_page(&zero, run, None).unwrap();
    assert_eq!((last.keys.len(), last.next), (4, None));
}

#[test]
fn a_page_from_any_point_starts_exactly_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        PersistentStore::open(dir.path().join("s.redb"), PersistentStoreConfig::default()).unwrap();
    let all = keys(0, 3_000);
    store.add_provided_many(&all, suite::now()).unwrap();
    let mut points: Vec<Key> = all.iter().map(|k| Key::new(k)).collect();
    points.sort();
    for i in [0, 1, 17, 1_500, 2_999] {
        // From a key's own point, and from just past it.
        let page = store.provided(&points[i], 3).unwrap();
        let got: Vec<Key> = page.iter().map(|p| Key::new(&p.key)).collect();
        assert_eq!(got, points[i..(i + 3).min(points.len())].to_vec());
        let page = store.provided(&points[i].next().unwrap(), 1).unwrap();
        assert_eq!(
            page.first().map(|p| Key::new(&p.key)),
            points.get(i + 1).copied()
        );
    }
}

#[test]
fn the_sweep_mark_is_kept_across_a_restart() {
    use crate::SweepMark;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let config = PersistentStoreConfig::default();
    let mut store = PersistentStore::open(&path, config).unwrap();
    assert_eq!(store.sweep_mark().unwrap(), None);
    let mark = SweepMark {
        cycle: 24_000,
        next: 117,
        depth: 9,
    };
    store.save_sweep_mark(mark).unwrap();
    assert_eq!(store.sweep_mark().unwrap(), Some(mark));
    store.flush().unwrap();
    drop(store);
    let mut store = PersistentStore::open(&path, config).unwrap();
    assert_eq!(store.sweep_mark().unwrap(), Some(mark));
    // A later mark replaces it; a clean close keeps it without an explicit flush.
    let later = SweepMark { next: 118, ..mark };
    store.save_sweep_mark(later).unwrap();
    drop(store);
    let mut store = PersistentStore::open(&path, config).unwrap();
    assert_eq!(store.sweep_mark().unwrap(), Some(later));
}
