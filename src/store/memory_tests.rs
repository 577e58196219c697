use std::time::Duration;

use super::*;
use crate::store::quota::NetGroup;
use crate::store::suite;

#[test]
fn memory_store_passes_the_shared_suite() {
    suite::run_all(MemoryStore::new);
    suite::run_quotas(MemoryStore::new);
}

#[test]
fn expired_records_hold_no_slot() {
    let config = MemoryStoreConfig {
        max_records: 1,
        ..Default::default()
    };
    let mut store = MemoryStore::new(config);
    let now = SystemTime::now();
    store.put(suite::value(b"/v/a", 1, now)).unwrap();
    let later = now + Duration::from_secs(7200);
    store.put(suite::value(b"/v/b", 1, later)).unwrap();
    assert!(store.get(b"/v/b", later).unwrap().is_some());
}

#[test]
fn lru_policy_evicts_the_least_recently_used_key() {
    let config = MemoryStoreConfig {
        max_records: 2,
        full_policy: FullPolicy::EvictLeastRecentlyUsed,
        ..Default::default()
    };
    let mut store = MemoryStore::new(config);
    let now = SystemTime::now();
    store.put(suite::value(b"/v/a", 1, now)).unwrap();
    store.put(suite::value(b"/v/b", 1, now)).unwrap();
    store.get(b"/v/a", now).unwrap();
    store.put(suite::value(b"/v/c", 1, now)).unwrap();
    assert!(store.get(b"/v/a", now).unwrap().is_some(), "recently used");
    assert!(store.get(b"/v/b", now).unwrap().is_none(), "evicted");
}

fn from(group: u8) -> Source {
    Source::Peer {
        id: PeerId::random(),
        group: Some(NetGroup::V4([10, group])),
    }
}

#[test]
fn byte_estimates_follow_what_is_stored_and_freed() {
    let mut store = MemoryStore::new(MemoryStoreConfig::default());
    let now = suite::now();
    let source = from(1);
    let Source::Peer { id, .. } = source else {
        unreachable!()
    };
    let mut record = suite::provider(b"key", id, now);
    record.addrs = (0..10)
        .map(|i| format!("/ip4/10.0.0.{i}/tcp/4001").parse().unwrap())
        .collect();
    store.add_provider_from(record.clone(), source).unwrap();
    let one = store.provider_bytes();
    assert!(one > 10 * 8, "{one}");
    // A renewal replaces the charge rather than adding one.
    store.add_provider_from(record, source).unwrap();
    assert_eq!(store.provider_bytes(), one);
    store
        .add_provider(suite::provider(b"key", PeerId::random(), now))
        .unwrap();
    assert!(store.provider_bytes() > one);
    store.remove_provider(b"key", &id).unwrap();
    let gone = now + Duration::from_secs(49 * 3600);
    assert!(store.providers(b"key", gone).unwrap().is_empty());
    assert_eq!(store.provider_bytes(), 0, "everything released");

    store
        .put_from(suite::value(b"/v/a", 100, now), source)
        .unwrap();
    store.put(suite::value(b"/v/b", 100, now)).unwrap();
    assert!(store.record_bytes() > 200);
    store.remove(b"/v/a").unwrap();
    store.gc(now + Duration::from_secs(7200), 10).unwrap();
    assert_eq!(store.record_bytes(), 0, "everything released");
}
