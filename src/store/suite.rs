//! The behaviour every store must show, run against each implementation.

use std::time::{Duration, SystemTime};

use libp2p::PeerId;

use super::{GcProgress, MemoryStoreConfig, ProviderRecord, Store, StoreError, ValueRecord};
use super::{NetGroup, Source};
use crate::key::Key;

pub(crate) fn value(key: &[u8], size: usize, at: SystemTime) -> ValueRecord {
    ValueRecord {
        key: key.to_vec(),
        value: vec![1; size],
        received: at,
        expires: at + Duration::from_secs(3600),
    }
}

pub(crate) fn provider(key: &[u8], peer: PeerId, at: SystemTime) -> ProviderRecord {
    ProviderRecord {
        key: key.to_vec(),
        provider: peer,
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        received: at,
        expires: at + Duration::from_secs(48 * 3600),
        addrs_expire: at + Duration::from_secs(24 * 3600),
    }
}

/// Whole seconds: stores keep Unix seconds.
pub(crate) fn now() -> SystemTime {
    super::from_unix_secs(super::unix_secs(SystemTime::now()))
}

/// Runs every check with fresh stores from `make`.
pub(crate) fn run_all<S: Store>(make: impl Fn(MemoryStoreConfig) -> S) {
    values_expire_and_bounds_refuse_without_loss(&make);
    a_flood_cannot_push_out_known_providers_who_can_renew(&make);
    providers_keep_their_addresses_and_can_be_removed(&make);
    provider_keys_come_in_keyspace_order(&make);
    gc_removes_expired_entries_in_bounded_batches(&make);
    batches_store_what_fits(&make);
    provided_keys_keep_their_status_in_keyspace_order(&make);
    provided_in_bulk_counts_each_key_once(&make);
}

fn values_expire_and_bounds_refuse_without_loss<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let config = MemoryStoreConfig {
        max_records: 2,
        max_value_size: 10,
        ..Default::default()
    };
    let mut store = make(config);
    let now = now();
    store.put(value(b"/v/a", 5, now)).unwrap();
    store.put(value(b"/v/b", 5, now)).unwrap();
    store.flush().unwrap();
    assert_eq!(store.put(value(b"/v/c", 5, now)), Err(StoreError::Full));
    assert!(matches!(
        store.put(value(b"/v/a", 11, now)),
        Err(StoreError::ValueTooLarge { len: 11, max: 10 })
    ));
    assert_eq!(
        store.get(b"/v/a", now).unwrap().unwrap().value.len(),
        5,
        "unchanged"
    );
    store.put(value(b"/v/a", 7, now)).unwrap();
    assert_eq!(
        store.get(b"/v/a", now).unwrap().unwrap().value.len(),
        7,
        "replaced"
    );
    let expired = now + Duration::from_secs(3600);
    assert!(store.get(b"/v/a", expired).unwrap().is_none());
    store.remove(b"/v/b").unwrap();
    assert!(store.get(b"/v/b", now).unwrap().is_none());
    store.put(value(b"/v/c", 5, now)).unwrap();
}

fn a_flood_cannot_push_out_known_providers_who_can_renew<S: Store>(
    make: &impl Fn(MemoryStoreConfig) -> S,
) {
    let config = MemoryStoreConfig {
        max_providers_per_key: 3,
        ..Default::default()
    };
    let mut store = make(config);
    let now = now();
    let honest: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
    for p in &honest {
        store.add_provider(provider(b"k", *p, now)).unwrap();
    }
    for _ in 0..50 {
        assert_eq!(
            store.add_provider(provider(b"k", PeerId::random(), now)),
            Err(StoreError::TooManyProviders)
        );
    }
    let later = now + Duration::from_secs(40 * 3600);
    store
        .add_provider(provider(b"k", honest[0], later))
        .unwrap();
    let after_expiry = now + Duration::from_secs(50 * 3600);
    let left = store.providers(b"k", after_expiry).unwrap();
    assert_eq!(left.len(), 1, "only the renewed one is still valid");
    assert_eq!(left[0].provider, honest[0]);
}

fn providers_keep_their_addresses_and_can_be_removed<S: Store>(
    make: &impl Fn(MemoryStoreConfig) -> S,
) {
    let mut store = make(MemoryStoreConfig::default());
    let now = now();
    let (a, b) = (PeerId::random(), PeerId::random());
    let mut ra = provider(b"key", a, now);
    ra.addrs.push("/ip6/::1/udp/4001/quic-v1".parse().unwrap());
    store.add_provider(ra.clone()).unwrap();
    store.add_provider(provider(b"key", b, now)).unwrap();
    store.flush().unwrap();
    let mut got = store.providers(b"key", now).unwrap();
    got.sort_by_key(|p| p.provider != a);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], ra, "the record comes back whole");
    store.remove_provider(b"key", &a).unwrap();
    let got = store.providers(b"key", now).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].provider, b);
    assert!(store.providers(b"other", now).unwrap().is_empty());
}

fn provider_keys_come_in_keyspace_order<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let mut store = make(MemoryStoreConfig::default());
    let now = now();
    let keys: Vec<Vec<u8>> = (0..50u32).map(|i| i.to_be_bytes().to_vec()).collect();
    for key in &keys {
        store
            .add_provider(provider(key, PeerId::random(), now))
            .unwrap();
    }
    store.flush().unwrap();
    let mut expected = keys.clone();
    expected.sort_by_key(|k| Key::new(k));
    let zero = Key::from_hash([0; 32]);
    assert_eq!(store.provider_keys(&zero, 100).unwrap(), expected);
    // Resume from the middle, and respect the limit.
    let from = Key::new(&expected[20]);
    assert_eq!(
        store.provider_keys(&from, 5).unwrap(),
        expected[20..25].to_vec()
    );
}

fn gc_removes_expired_entries_in_bounded_batches<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let mut store = make(MemoryStoreConfig::default());
    let now = now();
    for i in 0..30u32 {
        let mut record = provider(&i.to_be_bytes(), PeerId::random(), now);
        if i % 2 == 0 {
            record.expires = now + Duration::from_secs(10);
        }
        store.add_provider(record).unwrap();
    }
    store
        .put(value(b"/v/old", 1, now - Duration::from_secs(7200)))
        .unwrap();
    store.flush().unwrap();
    let later = now + Duration::from_secs(60);
    let mut total = GcProgress::default();
    let mut calls = 0;
    loop {
        let progress = store.gc(later, 8).unwrap();
        calls += 1;
        total.removed += progress.removed;
        assert!(progress.examined <= 8 + 1, "bounded: {progress:?}");
        if progress.done {
            break;
        }
        assert!(calls < 100);
    }
    assert!(calls >= 4, "30 keys in batches of 8");
    assert_eq!(total.removed, 15 + 1);
    assert_eq!(
        store
            .provider_keys(&Key::from_hash([0; 32]), 100)
            .unwrap()
            .len(),
        15
    );
    assert!(store.get(b"/v/old", later).unwrap().is_none());
}

fn batches_store_what_fits<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let config = MemoryStoreConfig {
        max_providers_per_key: 2,
        ..Default::default()
    };
    let mut store = make(config);
    let now = now();
    let batch: Vec<ProviderRecord> = (0..5)
        .map(|_| provider(b"same", PeerId::random(), now))
        .chain((0..3).map(|i: u8| provider(&[i], PeerId::random(), now)))
        .collect();
    assert_eq!(store.add_providers(batch).unwrap(), 2 + 3);
    store.flush().unwrap();
    assert_eq!(store.providers(b"same", now).unwrap().len(), 2);
}

pub(crate) fn provided_keys_keep_their_status_in_keyspace_order<S: Store>(
    make: &impl Fn(MemoryStoreConfig) -> S,
) {
    let mut store = make(MemoryStoreConfig::default());
    let now = now();
    let keys: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 4]).collect();
    for key in &keys {
        store.add_provided(key, now).unwrap();
    }
    store
        .add_provided(&keys[0], now + Duration::from_secs(5))
        .unwrap();
    assert_eq!(store.provided_len().unwrap(), 20, "idempotent");
    store
        .set_provided_status(&keys[3], now + Duration::from_secs(9), 17)
        .unwrap();
    store.remove_provided(&keys[4]).unwrap();
    store.flush().unwrap();
    let all = store.provided(&Key::from_hash([0; 32]), 100).unwrap();
    assert_eq!(all.len(), 19);
    let mut expected: Vec<Vec<u8>> = keys.iter().filter(|k| **k != keys[4]).cloned().collect();
    expected.sort_by_key(|k| Key::new(k));
    assert_eq!(
        all.iter().map(|p| p.key.clone()).collect::<Vec<_>>(),
        expected
    );
    let three = all.iter().find(|p| p.key == keys[3]).unwrap();
    assert_eq!(three.last_provided, Some(now + Duration::from_secs(9)));
    assert_eq!(three.peers, 17);
    let zero = all.iter().find(|p| p.key == keys[0]).unwrap();
    assert_eq!((zero.added, zero.last_provided), (now, None));
}

/// Bulk adds and removes count each key once, and keys already provided keep their status.
pub(crate) fn provided_in_bulk_counts_each_key_once<S: Store>(
    make: &impl Fn(MemoryStoreConfig) -> S,
) {
    let mut store = make(MemoryStoreConfig::default());
    let now = now();
    let later = now + Duration::from_secs(5);
    let keys: Vec<Vec<u8>> = (0..1000u32).map(|i| i.to_be_bytes().to_vec()).collect();
    store.add_provided(&keys[0], now).unwrap();
    store
        .set_provided_status(&keys[0], now + Duration::from_secs(9), 3)
        .unwrap();
    // Every key, then the first hundred again: one was provided already, the rest are new.
    let mut batch = keys.clone();
    batch.extend(keys[..100].iter().cloned());
    assert_eq!(store.add_provided_many(&batch, later).unwrap(), 999);
    assert_eq!(store.provided_len().unwrap(), 1000);
    assert_eq!(
        store.add_provided_many(&keys, later).unwrap(),
        0,
        "all known"
    );
    assert_eq!(store.add_provided_many(&[], later).unwrap(), 0);
    let all = store.provided(&Key::from_hash([0; 32]), 2000).unwrap();
    assert_eq!(all.len(), 1000);
    let first = all.iter().find(|p| p.key == keys[0]).unwrap();
    assert_eq!(
        (first.added, first.last_provided, first.peers),
        (now, Some(now + Duration::from_secs(9)), 3),
        "a known key keeps its status"
    );
    let other = all.iter().find(|p| p.key == keys[1]).unwrap();
    assert_eq!((other.added, other.last_provided), (later, None));

    // The first 300, a few twice, and keys never provided: 300 removed.
    let mut gone = keys[..300].to_vec();
    gone.extend(keys[..10].iter().cloned());
    gone.push(b"never provided".to_vec());
    assert_eq!(store.remove_provided_many(&gone).unwrap(), 300);
    assert_eq!(store.remove_provided_many(&gone).unwrap(), 0);
    assert_eq!(store.provided_len().unwrap(), 700);
    store.flush().unwrap();
    let left = store.provided(&Key::from_hash([0; 32]), 2000).unwrap();
    let mut expected = keys[300..].to_vec();
    expected.sort_by_key(|k| Key::new(k));
    assert_eq!(
        left.into_iter().map(|p| p.key).collect::<Vec<_>>(),
        expected
    );
}

/// Runs the per-source quota checks (see [`Source`]) with fresh stores from `make`.
pub(crate) fn run_quotas<S: Store>(make: impl Fn(MemoryStoreConfig) -> S) {
    a_full_store_takes_other_sources_at_the_floods_expense(&make);
    peers_of_one_block_share_its_share(&make);
    a_byte_budget_holds_and_still_takes_other_sources(&make);
    value_records_have_quotas_too(&make);
    a_full_key_shares_its_slots_among_blocks(&make);
    local_records_are_never_evicted_for_others(&make);
}

/// A peer in network block 10.`block`.0.0/16.
pub(crate) fn peer_in(block: u8) -> (PeerId, Source) {
    let id = PeerId::random();
    let group = Some(NetGroup::V4([10, block]));
    (id, Source::Peer { id, group })
}

fn holds<S: Store>(store: &mut S, key: &[u8], peer: PeerId) -> bool {
    store
        .providers(key, now())
        .unwrap()
        .iter()
        .any(|p| p.provider == peer)
}

fn a_full_store_takes_other_sources_at_the_floods_expense<S: Store>(
    make: &impl Fn(MemoryStoreConfig) -> S,
) {
    let mut store = make(MemoryStoreConfig {
        max_provider_keys: 20,
        ..Default::default()
    });
    let now = now();
    let (flood, flood_src) = peer_in(1);
    for i in 0..20u32 {
        let key = format!("flood-{i}");
        store
            .add_provider_from(provider(key.as_bytes(), flood, now), flood_src)
            .unwrap();
    }
    // Full, and the flood holds everything: its next write is refused.
    let refused = store.add_provider_from(provider(b"flood-more", flood, now), flood_src);
    assert_eq!(refused, Err(StoreError::Full));
    // Writers from other blocks get in, each at the flood's expense.
    let honest: Vec<(PeerId, Source)> = (2..7).map(peer_in).collect();
    for (i, (peer, src)) in honest.iter().enumerate() {
        let key = format!("honest-{i}");
        store
            .add_provider_from(provider(key.as_bytes(), *peer, now), *src)
            .unwrap();
    }
    store.flush().unwrap();
    for (i, (peer, _)) in honest.iter().enumerate() {
        assert!(holds(&mut store, format!("honest-{i}").as_bytes(), *peer));
    }
    // The flood lost its oldest records, and cannot take them back from the others.
    assert!(!holds(&mut store, b"flood-0", flood));
    assert!(holds(&mut store, b"flood-19", flood));
    for i in 0..20u32 {
        let key = format!("flood-again-{i}");
        let _ = store.add_provider_from(provider(key.as_bytes(), flood, now), flood_src);
    }
    for (i, (peer, _)) in honest.iter().enumerate() {
        assert!(holds(&mut store, format!("honest-{i}").as_bytes(), *peer));
    }
}

fn peers_of_one_block_share_its_share<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let mut store = make(MemoryStoreConfig {
        max_provider_keys: 30,
        ..Default::default()
    });
    let now = now();
    // Ten peer ids in one block fill the store.
    let sybils: Vec<(PeerId, Source)> = (0..10).map(|_| peer_in(1)).collect();
    for round in 0..3 {
        for (i, (peer, src)) in sybils.iter().enumerate() {
            let key = format!("sybil-{i}-{round}");
            store
                .add_provider_from(provider(key.as_bytes(), *peer, now), *src)
                .unwrap();
        }
    }
    let (honest, honest_src) = peer_in(2);
    for i in 0..5u32 {
        let key = format!("honest-{i}");
        store
            .add_provider_from(provider(key.as_bytes(), honest, now), honest_src)
            .unwrap();
    }
    // More sybils from the same block only compete among themselves.
    for i in 0..40u32 {
        let (peer, src) = peer_in(1);
        let key = format!("new-sybil-{i}");
        let _ = store.add_provider_from(provider(key.as_bytes(), peer, now), src);
    }
    for i in 0..5u32 {
        assert!(holds(&mut store, format!("honest-{i}").as_bytes(), honest));
    }
}

fn a_byte_budget_holds_and_still_takes_other_sources<S: Store>(
    make: &impl Fn(MemoryStoreConfig) -> S,
) {
    let budget = 64 * 1024;
    let mut store = make(MemoryStoreConfig {
        max_provider_bytes: budget,
        ..Default::default()
    });
    let now = now();
    let (flood, flood_src) = peer_in(1);
    let fat: Vec<libp2p::Multiaddr> = (0..16)
        .map(|i| {
            format!("/dns4/{}.example/tcp/{i}", "x".repeat(200))
                .parse()
                .unwrap()
        })
        .collect();
    let mut refused = 0;
    for i in 0..200u32 {
        let mut record = provider(format!("flood-{i}").as_bytes(), flood, now);
        record.addrs = fat.clone();
        if store.add_provider_from(record, flood_src) == Err(StoreError::Full) {
            refused += 1;
        }
    }
    assert!(refused > 100, "the budget binds: {refused} refused");
    let (honest, honest_src) = peer_in(2);
    store
        .add_provider_from(provider(b"honest", honest, now), honest_src)
        .unwrap();
    store.flush().unwrap();
    assert!(holds(&mut store, b"honest", honest));
}

fn value_records_have_quotas_too<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let mut store = make(MemoryStoreConfig {
        max_records: 10,
        ..Default::default()
    });
    let now = now();
    let (_, flood_src) = peer_in(1);
    for i in 0..10u32 {
        store
            .put_from(value(format!("/v/flood-{i}").as_bytes(), 5, now), flood_src)
            .unwrap();
    }
    assert_eq!(
        store.put_from(value(b"/v/flood-more", 5, now), flood_src),
        Err(StoreError::Full)
    );
    let (_, honest_src) = peer_in(2);
    store
        .put_from(value(b"/v/honest", 5, now), honest_src)
        .unwrap();
    store.flush().unwrap();
    assert!(store.get(b"/v/honest", now).unwrap().is_some());
    assert!(
        store.get(b"/v/flood-0", now).unwrap().is_none(),
        "oldest gone"
    );
    assert!(store.get(b"/v/flood-9", now).unwrap().is_some());
}

fn a_full_key_shares_its_slots_among_blocks<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let mut store = make(MemoryStoreConfig {
        max_providers_per_key: 4,
        ..Default::default()
    });
    let now = now();
    let sybils: Vec<(PeerId, Source)> = (0..4).map(|_| peer_in(1)).collect();
    for (peer, src) in &sybils {
        store
            .add_provider_from(provider(b"k", *peer, now), *src)
            .unwrap();
    }
    let (peer, src) = peer_in(1);
    assert_eq!(
        store.add_provider_from(provider(b"k", peer, now), src),
        Err(StoreError::TooManyProviders),
        "a block holding every slot gets no more"
    );
    let (honest, honest_src) = peer_in(2);
    store
        .add_provider_from(provider(b"k", honest, now), honest_src)
        .unwrap();
    store.flush().unwrap();
    let listed = store.providers(b"k", now).unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().any(|p| p.provider == honest));
    // Known providers still renew on a full key.
    let (known, known_src) = sybils
        .iter()
        .find(|(p, _)| listed.iter().any(|l| l.provider == *p))
        .copied()
        .unwrap();
    store
        .add_provider_from(provider(b"k", known, now), known_src)
        .unwrap();
}

fn local_records_are_never_evicted_for_others<S: Store>(make: &impl Fn(MemoryStoreConfig) -> S) {
    let mut store = make(MemoryStoreConfig {
        max_provider_keys: 5,
        ..Default::default()
    });
    let now = now();
    for i in 0..5u8 {
        store
            .add_provider(provider(&[i], PeerId::random(), now))
            .unwrap();
    }
    let (peer, src) = peer_in(1);
    assert_eq!(
        store.add_provider_from(provider(b"remote", peer, now), src),
        Err(StoreError::Full)
    );
    store.flush().unwrap();
    assert_eq!(
        store
            .provider_keys(&Key::from_hash([0; 32]), 10)
            .unwrap()
            .len(),
        5
    );
}
