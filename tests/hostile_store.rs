//! A hostile peer against a kadence node's stores (issue 14, items 2 and 5): provider records
//! of 8 KiB entries must not cost 50 KiB of heap each, stores are bounded in bytes, and a flood
//! from one source (one peer id, or many behind one network block) fills only what nobody else
//! wants: honest writers from other sources are still accepted.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use common::*;
use hostile::*;
use kadence::network::codec::{read_frame, write_frame};
use kadence::network::message::encode_request;
use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::{MemoryStoreConfig, Request};
use libp2p::Multiaddr;

fn loopback_addr() -> Vec<Multiaddr> {
    vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()]
}

/// How many keys the victim holds provider records for.
async fn provider_keys_held(victim: &Victim) -> usize {
    victim
        .run(|swarm| {
            let zero = kadence::key::Key::from_hash([0; 32]);
            let store = swarm.behaviour_mut().store_mut();
            store.provider_keys(&zero, usize::MAX).unwrap().len()
        })
        .await
}

/// Item 2: a hostile peer announces many keys, each with an 8 KiB entry of about 800
/// addresses. Before the fix every record kept them all: about 50 KiB of heap each (3.1 GiB
/// for the default 65,536 keys). Now a record keeps at most 16 addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_records_of_fat_entries_stay_small_in_heap() {
    const KEYS: u64 = 2_000;
    let victim = Victim::start(server_config()).await;
    let attacker = RawPeer::dialing(&victim).await;
    // Settle what the connection itself costs before measuring.
    attacker
        .announce([provider_key(u64::MAX)], &loopback_addr())
        .await;
    let id = attacker.id;
    victim
        .wait_for(30, "the first record", move |t| t.stored_by(&id) == 1)
        .await;
    let before = victim.heap();

    let addrs = fat_short_addrs();
    attacker.announce((0..KEYS).map(provider_key), &addrs).await;
    let id = attacker.id;
    victim
        .wait_for(120, "every record", move |t| {
            t.decided_for(&id) == KEYS as usize + 1
        })
        .await;
    let per_record = (victim.heap() - before) / KEYS as isize;
    let tally = victim.tally().await;
    assert_eq!(
        tally.stored_by(&attacker.id),
        KEYS as usize + 1,
        "{tally:?}"
    );
    eprintln!("victim heap per provider record of an 8 KiB entry: {per_record} bytes");
    assert!(
        per_record <= 4 * 1024,
        "{per_record} bytes of heap per provider record"
    );
}

/// Item 2: the store's bytes are bounded, whatever the records carry. A flood of records at
/// the 16-address cap with long addresses (8 KiB entries) stops at the byte budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_byte_budget_bounds_the_heap_of_provider_records() {
    const KEYS: u64 = 2_000;
    const BUDGET: usize = 2 << 20;
    let config = server_config().with_memory_store(MemoryStoreConfig {
        max_provider_bytes: BUDGET,
        ..Default::default()
    });
    let victim = Victim::start(config).await;
    let attacker = RawPeer::dialing(&victim).await;
    attacker
        .announce([provider_key(u64::MAX)], &loopback_addr())
        .await;
    let id = attacker.id;
    victim
        .wait_for(30, "the first record", move |t| t.stored_by(&id) == 1)
        .await;
    let before = victim.heap();

    // 16 addresses of ~490 bytes: an entry just under 8 KiB.
    let long: Vec<Multiaddr> = (0..16)
        .map(|i| {
            format!("/dns4/{}.example/tcp/{}", "a".repeat(470), 1000 + i)
                .parse()
                .unwrap()
        })
        .collect();
    attacker.announce((0..KEYS).map(provider_key), &long).await;
    let id = attacker.id;
    victim
        .wait_for(120, "every record", move |t| {
            t.decided_for(&id) == KEYS as usize + 1
        })
        .await;
    let grown = victim.heap() - before;
    let stored = victim.tally().await.stored_by(&attacker.id);
    eprintln!("{stored} records stored, victim heap grew by {grown} bytes");
    assert!(stored < KEYS as usize, "the budget bound: {stored} stored");
    assert!(
        grown <= (BUDGET + BUDGET / 2) as isize,
        "heap grew by {grown} bytes, budget {BUDGET}"
    );
}

/// Item 5: one peer id fills the provider keys, then peers from other network blocks announce:
/// every honest record is accepted (the flood gives up its oldest), and the flood's further
/// records are refused. Before the fix every honest record was refused (`store full`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_flood_from_one_peer_locks_no_one_out() {
    const MAX_KEYS: usize = 300;
    let config = server_config().with_memory_store(MemoryStoreConfig {
        max_provider_keys: MAX_KEYS,
        ..Default::default()
    });
    let victim = Victim::start(config).await;
    let flood = RawPeer::dialing(&victim).await;
    flood
        .announce((0..2 * MAX_KEYS as u64).map(provider_key), &loopback_addr())
        .await;
    let id = flood.id;
    victim
        .wait_for(60, "the flood", move |t| t.decided_for(&id) == 2 * MAX_KEYS)
        .await;
    let tally = victim.tally().await;
    assert_eq!(tally.stored_by(&flood.id), MAX_KEYS, "the store filled up");

    let mut honest = Vec::new();
    for block in ["127.10.0.1", "127.11.0.1", "127.12.0.1"] {
        honest.push(RawPeer::dialled_from(&victim, block).await);
    }
    for (i, peer) in honest.iter().enumerate() {
        let keys = (0..20).map(|k| provider_key(1_000_000 * (i as u64 + 1) + k));
        peer.announce(keys, &loopback_addr()).await;
    }
    let ids: Vec<_> = honest.iter().map(|p| p.id).collect();
    victim
        .wait_for(60, "the honest records", move |t| {
            ids.iter().all(|p| t.decided_for(p) == 20)
        })
        .await;
    let tally = victim.tally().await;
    for peer in &honest {
        assert_eq!(
            tally.stored_by(&peer.id),
            20,
            "honest records refused: {tally:?}"
        );
    }
    // The honest records stay while the flood goes on.
    flood
        .announce((5_000..5_100).map(provider_key), &loopback_addr())
        .await;
    victim
        .wait_for(60, "more flood", move |t| {
            t.decided_for(&id) == 2 * MAX_KEYS + 100
        })
        .await;
    let key = provider_key(1_000_000);
    let held = victim
        .run(move |swarm| {
            let now = std::time::SystemTime::now();
            swarm
                .behaviour_mut()
                .store_mut()
                .providers(&key, now)
                .unwrap()
        })
        .await;
    assert_eq!(held.len(), 1, "an honest record survived the flood");
}

/// Item 5: several peer ids behind one network block share one share. They fill the store
/// together; peers from other blocks are still accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sybils_behind_one_block_lock_no_other_block_out() {
    const MAX_KEYS: usize = 300;
    let config = server_config().with_memory_store(MemoryStoreConfig {
        max_provider_keys: MAX_KEYS,
        ..Default::default()
    });
    let victim = Victim::start(config).await;
    let mut sybils = Vec::new();
    for _ in 0..4 {
        sybils.push(RawPeer::dialing(&victim).await);
    }
    for (i, sybil) in sybils.iter().enumerate() {
        let keys = (0..150).map(|k| provider_key(10_000 * i as u64 + k));
        sybil.announce(keys, &loopback_addr()).await;
    }
    let ids: Vec<_> = sybils.iter().map(|s| s.id).collect();
    victim
        .wait_for(60, "the sybils' flood", move |t| {
            ids.iter().all(|s| t.decided_for(s) == 150)
        })
        .await;
    assert_eq!(
        provider_keys_held(&victim).await,
        MAX_KEYS,
        "the store filled up"
    );

    let honest = RawPeer::dialled_from(&victim, "127.20.0.1").await;
    honest
        .announce((0..30).map(|k| provider_key(900_000 + k)), &loopback_addr())
        .await;
    let id = honest.id;
    victim
        .wait_for(60, "the honest records", move |t| t.decided_for(&id) == 30)
        .await;
    let tally = victim.tally().await;
    assert_eq!(tally.stored_by(&honest.id), 30, "{tally:?}");
    assert_eq!(provider_keys_held(&victim).await, MAX_KEYS);
}

/// Item 5, value records: one peer fills the record store with `/pk` records of keys it
/// generates; a peer from another block still gets its record stored (and echoed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pk_record_flood_locks_no_one_out() {
    const MAX_RECORDS: usize = 64;
    let config = server_config().with_memory_store(MemoryStoreConfig {
        max_records: MAX_RECORDS,
        ..Default::default()
    });
    let victim = Victim::start(config).await;
    let flood = RawPeer::dialing(&victim).await;
    for _ in 0..2 * MAX_RECORDS {
        // A refused PUT_VALUE resets its stream: one stream each.
        let mut stream = flood.stream().await;
        let put = encode_request(&Request::PutValue {
            record: pk_record(),
        });
        write_frame(&mut stream, &put).await.unwrap();
        let _ = within(30, read_frame(&mut stream, 1 << 20)).await;
    }
    let id = flood.id;
    victim
        .wait_for(60, "the flood", move |t| {
            t.decided_for(&id) == 2 * MAX_RECORDS
        })
        .await;
    let tally = victim.tally().await;
    assert_eq!(
        tally.stored_by(&flood.id),
        MAX_RECORDS,
        "the store filled up"
    );

    let honest = RawPeer::dialled_from(&victim, "127.30.0.1").await;
    let record = pk_record();
    let mut stream = honest.stream().await;
    let put = encode_request(&Request::PutValue {
        record: record.clone(),
    });
    write_frame(&mut stream, &put).await.unwrap();
    let echo = within(30, read_frame(&mut stream, 1 << 20)).await;
    assert!(
        matches!(echo, Ok(Some(_))),
        "the honest record was refused: {echo:?}"
    );
    let key = record.key.clone();
    let held = victim
        .run(move |swarm| {
            let now = std::time::SystemTime::now();
            swarm.behaviour_mut().store_mut().get(&key, now).unwrap()
        })
        .await;
    assert_eq!(held.map(|r| r.value), Some(record.value));
}

/// A victim whose records are in a [`PersistentStore`] at `path`.
fn persistent_victim(
    path: std::path::PathBuf,
    store: PersistentStoreConfig,
    config: kadence::Config,
) -> impl FnOnce(libp2p::PeerId) -> kadence::Behaviour + Send + 'static {
    move |id| {
        let store = PersistentStore::open(path, store).expect("store opened");
        let table = kadence::KBucketTable::new(id, config.kbuckets().clone());
        kadence::Behaviour::with_parts(id, config, table, store)
    }
}

/// Makes everything the victim's store accepted durable, and returns its file's size.
async fn flushed_size(victim: &Victim, path: &std::path::Path) -> u64 {
    victim
        .run(|swarm| swarm.behaviour_mut().store_mut().flush())
        .await
        .expect("flushed");
    std::fs::metadata(path).expect("store file").len()
}

/// Item 2 on disk: before the fix a provider record of an 8 KiB entry took 11.6 KiB of the
/// persistent store's file (110 GiB at its 10,000,000-key default). Now its 16 addresses do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_provider_records_of_fat_entries_stay_small_on_disk() {
    const KEYS: u64 = 2_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let make = persistent_victim(path.clone(), Default::default(), server_config());
    let victim = Victim::start_with(make).await;
    let attacker = RawPeer::dialing(&victim).await;
    attacker
        .announce([provider_key(u64::MAX)], &loopback_addr())
        .await;
    let id = attacker.id;
    victim
        .wait_for(30, "the first record", move |t| t.stored_by(&id) == 1)
        .await;
    let before = flushed_size(&victim, &path).await;

    attacker
        .announce((0..KEYS).map(provider_key), &fat_short_addrs())
        .await;
    victim
        .wait_for(120, "every record", move |t| {
            t.decided_for(&id) == KEYS as usize + 1
        })
        .await;
    let stored = victim.tally().await.stored_by(&attacker.id);
    let per_record = (flushed_size(&victim, &path).await - before) / KEYS;
    eprintln!("{stored} records stored; file bytes per record of an 8 KiB entry: {per_record}");
    assert_eq!(stored, KEYS as usize + 1);
    // redb's file grows by whole regions and with the number of commits, which a loaded
    // machine changes (1.1 KiB per record quiet, 2.2 KiB seen under load); before the fix a
    // record took 8.7-11.6 KiB.
    assert!(per_record <= 4096, "{per_record} bytes of file per record");
}

/// Item 2 on disk: the persistent store's bytes are bounded too. A flood of 8 KiB entries
/// stops at the budget, and the file stays within a small multiple of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_budget_bounds_the_persistent_store() {
    const KEYS: u64 = 1_000;
    const BUDGET: u64 = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = PersistentStoreConfig {
        max_provider_bytes: BUDGET,
        ..Default::default()
    };
    let victim = Victim::start_with(persistent_victim(path.clone(), store, server_config())).await;
    let attacker = RawPeer::dialing(&victim).await;
    let long: Vec<Multiaddr> = (0..16)
        .map(|i| {
            format!("/dns4/{}.example/tcp/{}", "a".repeat(470), 1000 + i)
                .parse()
                .unwrap()
        })
        .collect();
    attacker.announce((0..KEYS).map(provider_key), &long).await;
    let id = attacker.id;
    victim
        .wait_for(120, "every record", move |t| {
            t.decided_for(&id) == KEYS as usize
        })
        .await;
    let stored = victim.tally().await.stored_by(&attacker.id);
    let size = flushed_size(&victim, &path).await;
    eprintln!("{stored} records of 8 KiB stored; file of {size} bytes, budget {BUDGET}");
    // Each record is charged about 8 KiB: the budget holds 128 of them.
    assert!(stored <= 128, "the budget bound: {stored} stored");
    assert!(size <= 4 * BUDGET + (2 << 20), "file of {size} bytes");
}

/// Item 5 with the persistent store: one peer id fills its provider keys, peers from other
/// network blocks are still accepted, and the books survive in the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_locks_no_one_out_of_the_persistent_store() {
    const MAX_KEYS: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.redb");
    let store = PersistentStoreConfig {
        max_provider_keys: MAX_KEYS,
        ..Default::default()
    };
    let victim = Victim::start_with(persistent_victim(path, store, server_config())).await;
    let flood = RawPeer::dialing(&victim).await;
    flood
        .announce((0..2 * MAX_KEYS as u64).map(provider_key), &loopback_addr())
        .await;
    let id = flood.id;
    victim
        .wait_for(60, "the flood", move |t| t.decided_for(&id) == 2 * MAX_KEYS)
        .await;
    assert_eq!(victim.tally().await.stored_by(&flood.id), MAX_KEYS);
    let honest = RawPeer::dialled_from(&victim, "127.40.0.1").await;
    honest
        .announce((0..30).map(|k| provider_key(900_000 + k)), &loopback_addr())
        .await;
    let id = honest.id;
    victim
        .wait_for(60, "the honest records", move |t| t.decided_for(&id) == 30)
        .await;
    let tally = victim.tally().await;
    assert_eq!(tally.stored_by(&honest.id), 30, "{tally:?}");
    assert_eq!(provider_keys_held(&victim).await, MAX_KEYS);
}
