use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use proptest::prelude::*;
use rand::SeedableRng;

use super::*;
use crate::routing_table::kbuckets::tests::{addr, admission_contract, lan};
use crate::routing_table::{KBucketConfig, KBucketTable};

/// An address of about `len` encoded bytes (a DNS name that long).
fn long(i: usize, len: usize) -> Multiaddr {
    let name = format!("{i}{}", "a".repeat(len.saturating_sub(16)));
    addr(&format!("/dns4/{name}.io/tcp/4001"))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn table() -> (FullTable, PeerId) {
    table_with(FullTableConfig::default())
}

fn table_with(config: FullTableConfig) -> (FullTable, PeerId) {
    let local = PeerId::random();
    (FullTable::new(local, config), local)
}

fn ids(records: Vec<PeerRecord>) -> Vec<PeerId> {
    records.into_iter().map(|p| p.id).collect()
}

/// Everything that must hold after any operation: the three structures agree, the counters are
/// right, and the bounds hold (in count, bytes and capacity).
fn check(t: &FullTable) {
    let c = &t.config;
    assert_eq!(t.by_id.len(), t.entries.len());
    assert_eq!(t.index.len(), t.entries.len());
    assert!(t.entries.len() <= c.max_peers);
    assert!(t.entries.capacity() <= c.max_peers.max(t.entries.len()));
    for (i, e) in t.entries.iter().enumerate() {
        assert_eq!(t.by_id[&e.id] as usize, i);
        assert_eq!(e.key, Key::from_peer(&e.id));
        assert!(!e.addrs.is_empty());
        assert!(e.addrs.len() <= c.max_addrs_per_peer);
        assert!(e.addrs.capacity() <= c.max_addrs_per_peer.max(2));
        assert!(bytes_of(&e.addrs) <= c.max_addr_bytes);
    }
    for (key, &slot) in t.index.iter() {
        assert_eq!(t.entries[slot as usize].key, *key);
    }
    let bytes: usize = t.entries.iter().map(|e| bytes_of(&e.addrs)).sum();
    assert_eq!(t.address_bytes(), bytes);
    assert!(bytes <= t.len() * c.max_addr_bytes);
}

fn brute_force(t: &FullTable, target: &Key, count: usize) -> Vec<PeerId> {
    let mut all: Vec<PeerId> = t.iter().map(|(id, _)| *id).collect();
    all.sort_by_cached_key(|p| Key::from_peer(p).distance(target));
    all.truncate(count);
    all
}

fn assert_closest_right(t: &FullTable) {
    for count in [0, 1, 20, t.len(), t.len() + 5] {
        let target = Key::from_peer(&PeerId::random());
        assert_eq!(
            ids(t.local_closest_peers(&target, count)),
            brute_force(t, &target, count)
        );
    }
}

#[test]
fn admission_rules() {
    let (mut t, local) = table();
    let now = Instant::now();
    admission_contract(&mut t, local, now);
    // A peer that answered us is a server too.
    let q = PeerId::random();
    assert_eq!(
        t.on_request_succeeded(q, &lan(3), None, now),
        Admission::Inserted
    );
    assert_eq!(t.peers().len(), 2);
    check(&t);
}

#[test]
fn addresses_are_capped_in_count_and_bytes() {
    let (mut t, _) = table();
    let now = Instant::now();
    let p = PeerId::random();
    let many: Vec<Multiaddr> = (0..1000).map(|i| lan(i).remove(0)).collect();
    assert_eq!(t.on_server_peer(p, &many, None, now), Admission::Inserted);
    assert_eq!(
        t.addresses(&p).unwrap(),
        &many[..8],
        "the order given, capped"
    );
    check(&t);

    // Only addresses too long for the budget: nothing left to dial.
    let q = PeerId::random();
    let huge: Vec<Multiaddr> = (0..100).map(|i| long(i, 2000)).collect();
    assert_eq!(
        t.on_server_peer(q, &huge, None, now),
        Admission::Rejected(RejectReason::NoAddresses)
    );
    // Only the first 32 given are looked at: a usable address after 100 is not.
    let late = [&huge[..], &lan(9)].concat();
    assert_eq!(
        t.on_server_peer(q, &late, None, now),
        Admission::Rejected(RejectReason::NoAddresses)
    );
    let early = [&huge[..31], &lan(9)].concat();
    assert_eq!(t.on_server_peer(q, &early, None, now), Admission::Inserted);
    assert_eq!(t.addresses(&q).unwrap(), &lan(9)[..]);
    t.remove(&q);
    // Long ones are taken while they fit in the 512 bytes, in order; the rest are skipped.
    let mixed = vec![long(1, 300), long(2, 300), lan(7).remove(0), long(3, 150)];
    assert_eq!(t.on_server_peer(q, &mixed, None, now), Admission::Inserted);
    assert_eq!(
        t.addresses(&q).unwrap(),
        &[mixed[0].clone(), mixed[2].clone(), mixed[3].clone()]
    );
    // A known peer's huge new addresses cannot push its working ones out.
    t.on_request_succeeded(q, &huge, None, now);
    assert_eq!(t.addresses(&q).unwrap().len(), 3);
    check(&t);
    assert!(t.address_bytes() <= 2 * 512);
}

#[test]
fn a_flood_of_peers_stops_at_max_peers() {
    let config = FullTableConfig {
        max_peers: 100,
        ..Default::default()
    };
    let (mut t, _) = table_with(config);
    let start = Instant::now();
    let first: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
    for (i, p) in first.iter().enumerate() {
        let addrs: Vec<Multiaddr> = (0..20).map(|j| long(i * 20 + j, 60)).collect();
        assert_eq!(
            t.on_server_peer(*p, &addrs, None, start),
            Admission::Inserted
        );
    }
    for i in 0..1000 {
        let addrs: Vec<Multiaddr> = (0..20).map(|j| long(i * 20 + j, 600)).collect();
        assert_eq!(
            t.on_server_peer(PeerId::random(), &addrs, None, start + secs(1)),
            Admission::Rejected(RejectReason::NoAddresses)
        );
        assert_eq!(
            t.on_server_peer(PeerId::random(), &lan(i), None, start + secs(1)),
            Admission::Rejected(RejectReason::TableFull),
            "full: newcomers stay out"
        );
    }
    assert_eq!(t.len(), 100);
    // Those in are still updated, and the bounds held throughout.
    assert_eq!(
        t.on_request_succeeded(first[0], &lan(1), None, start + secs(2)),
        Admission::Updated
    );
    check(&t);
    assert!(t.address_bytes() <= 100 * 512);
    assert!(
        t.address_bytes() > 100 * 400,
        "8 addresses of 60 bytes each"
    );
    // Room comes back as peers leave.
    assert!(t.remove(&first[1]).is_some());
    let late = PeerId::random();
    assert_eq!(
        t.on_server_peer(late, &lan(1), None, start + secs(3)),
        Admission::Inserted
    );
    check(&t);
}

#[test]
fn a_refused_dial_evicts_at_once() {
    let (mut t, _) = table();
    let now = Instant::now();
    let peers: Vec<PeerId> = (0..5).map(|_| PeerId::random()).collect();
    for (i, p) in peers.iter().enumerate() {
        t.on_server_peer(*p, &lan(i), None, now);
    }
    assert_eq!(
        t.on_request_failed(&peers[1], Failure::Unreachable, now),
        Some(Eviction {
            removed: peers[1],
            promoted: None
        })
    );
    assert!(!t.contains(&peers[1]));
    assert_eq!(t.len(), 4);
    assert_eq!(
        t.on_request_failed(&peers[1], Failure::Unreachable, now),
        None,
        "gone already"
    );
    check(&t);
    assert_closest_right(&t);
}

#[test]
fn a_silent_peer_is_evicted_once_its_failures_span_a_while() {
    let (mut t, _) = table();
    let start = Instant::now();
    let (silent, other) = (PeerId::random(), PeerId::random());
    t.on_server_peer(silent, &lan(1), None, start);
    t.on_server_peer(other, &lan(2), None, start);
    assert_eq!(t.on_request_failed(&silent, Failure::NoAnswer, start), None);
    assert_eq!(
        t.on_request_failed(&silent, Failure::NoAnswer, start + secs(40)),
        None
    );
    let health = t.health(&silent).unwrap();
    assert_eq!(
        (health.failures, health.last_failure, health.last_seen),
        (2, Some(start + secs(40)), start),
        "failures are recorded, and are not sightings"
    );
    let eviction = t
        .on_request_failed(&silent, Failure::NoAnswer, start + secs(80))
        .expect("three failures in a row over 80 s");
    assert_eq!((eviction.removed, eviction.promoted), (silent, None));
    assert!(t.contains(&other));
    check(&t);
}

#[test]
fn timeouts_under_overload_do_not_evict_a_healthy_peer() {
    let (mut t, _) = table();
    let start = Instant::now();
    let slow = PeerId::random();
    t.on_server_peer(slow, &lan(1), None, start);
    // Ten timeouts within 15 s: three in a row are not enough without the span.
    for i in 0..10 {
        let at = start + Duration::from_millis(1500 * i);
        assert_eq!(t.on_request_failed(&slow, Failure::NoAnswer, at), None);
    }
    // It answers: the run is over, the last failure is remembered.
    t.on_request_succeeded(slow, &[], None, start + secs(46));
    let health = t.health(&slow).unwrap();
    assert_eq!(health.failures, 0);
    assert_eq!(
        health.last_failure,
        Some(start + Duration::from_millis(13_500))
    );
    assert_eq!(health.last_seen, start + secs(46));
    assert_eq!(
        t.on_request_failed(&slow, Failure::NoAnswer, start + secs(100)),
        None
    );
    assert_eq!(
        t.on_request_failed(&slow, Failure::NoAnswer, start + secs(130)),
        None
    );
    t.on_request_succeeded(slow, &[], None, start + secs(150));
    assert_eq!(
        t.on_request_failed(&slow, Failure::NoAnswer, start + secs(200)),
        None,
        "a new run starts"
    );
    assert!(t.contains(&slow));
}

#[test]
fn without_a_span_max_failures_alone_evicts() {
    let config = FullTableConfig {
        failure_span: Duration::ZERO,
        ..Default::default()
    };
    let (mut t, _) = table_with(config);
    let now = Instant::now();
    let p = PeerId::random();
    t.on_server_peer(p, &lan(1), None, now);
    assert_eq!(t.on_request_failed(&p, Failure::NoAnswer, now), None);
    assert_eq!(t.on_request_failed(&p, Failure::NoAnswer, now), None);
    assert!(t.on_request_failed(&p, Failure::NoAnswer, now).is_some());
}

#[test]
fn peers_not_seen_for_stale_after_expire() {
    let (mut t, _) = table();
    let start = Instant::now();
    let hour = secs(3600);
    let (p, q, r) = (PeerId::random(), PeerId::random(), PeerId::random());
    t.on_server_peer(p, &lan(1), None, start);
    t.on_server_peer(q, &lan(2), None, start + hour);
    t.on_server_peer(r, &lan(3), None, start);
    // r answers later; p only fails.
    t.on_request_succeeded(r, &[], None, start + hour);
    t.on_request_failed(&p, Failure::NoAnswer, start + hour);
    // Enough others that removing p is the one-by-one path.
    for i in 0..20 {
        t.on_server_peer(PeerId::random(), &lan(10 + i), None, start + hour);
    }
    assert!(t.expire(start + 2 * hour - secs(1)).is_empty());
    assert_eq!(t.expire(start + 2 * hour), vec![p]);
    assert!(t.contains(&q) && t.contains(&r) && !t.contains(&p));
    check(&t);
    assert_closest_right(&t);
    // The crawls stopped: everything ages out at once (the rebuild path).
    assert_eq!(t.expire(start + 3 * hour).len(), 22);
    assert!(t.is_empty());
    check(&t);
}

#[test]
fn expiring_a_few_or_many_keeps_the_index_right() {
    let (mut t, _) = table();
    let start = Instant::now();
    for i in 0..200 {
        // Every 7th peer stays fresh.
        let seen = if i % 7 == 0 {
            start + secs(7300)
        } else {
            start
        };
        t.on_server_peer(PeerId::random(), &lan(i), None, seen);
    }
    let old_ones = t.expire(start + secs(7200));
    assert_eq!(old_ones.len(), 200 - 29);
    check(&t);
    assert_closest_right(&t);
    for i in 0..200 {
        t.on_server_peer(
            PeerId::random(),
            &lan(i),
            None,
            start + secs(7200 + i as u64),
        );
    }
    // A few at a time: the one-by-one path.
    assert_eq!(t.expire(start + secs(14_400 + 5)).len(), 6);
    check(&t);
    assert_closest_right(&t);
}

#[test]
fn a_crawl_replaces_the_content_keeping_health() {
    let (mut t, local) = table();
    let start = Instant::now();
    let hour = secs(3600);
    let (stays, missed_fresh, missed_stale) =
        (PeerId::random(), PeerId::random(), PeerId::random());
    t.on_server_peer(missed_stale, &lan(1), None, start);
    t.on_server_peer(stays, &lan(2), None, start + hour);
    t.on_server_peer(missed_fresh, &lan(3), None, start + hour);
    t.on_request_failed(&stays, Failure::NoAnswer, start + hour + secs(5));
    t.on_request_failed(&stays, Failure::NoAnswer, start + hour + secs(10));
    let now = start + 2 * hour;
    let new = PeerId::random();
    let crawl = vec![
        (stays, lan(20)),
        (new, lan(21)),
        (local, lan(22)),
        (PeerId::random(), vec![]),
        (new, lan(23)),
        (stays, lan(20)),
    ];
    let merge = t.replace_with_crawl(crawl, now);
    assert_eq!(
        merge,
        CrawlMerge {
            updated: 1,
            inserted: 1,
            kept: 1,
            removed: 1,
            refused: 2,
        }
    );
    assert_eq!(t.last_crawl(), Some(now));
    assert!(!t.contains(&missed_stale) && t.contains(&missed_fresh));
    // It answered the crawl: its run of failures is over, its history kept.
    let health = t.health(&stays).unwrap();
    assert_eq!(health.last_seen, now);
    assert_eq!(health.failures, 0);
    assert_eq!(health.last_failure, Some(start + hour + secs(10)));
    assert_eq!(
        t.addresses(&stays).unwrap(),
        &[lan(20)[0].clone(), lan(2)[0].clone()]
    );
    // Met twice in the crawl: both address lists merged, newest first.
    assert_eq!(
        t.addresses(&new).unwrap(),
        &[lan(23)[0].clone(), lan(21)[0].clone()]
    );
    let record = t.peers().into_iter().find(|r| r.id == new).unwrap();
    assert_eq!(record.connection, ConnectionType::NotConnected);
    assert_eq!(t.health(&missed_fresh).unwrap().last_seen, start + hour);
    check(&t);
    assert_closest_right(&t);
    // Missed again an hour later: two crawls in a row, it is gone.
    t.replace_with_crawl(vec![(stays, lan(20))], now + hour);
    assert!(!t.contains(&missed_fresh));
    assert!(t.contains(&new), "missed once since it was seen");
    assert!(t.contains(&stays));
    check(&t);
}

#[test]
fn a_crawl_fills_the_room_in_order_of_priority() {
    let config = FullTableConfig {
        max_peers: 10,
        ..Default::default()
    };
    let (mut t, _) = table_with(config);
    let start = Instant::now();
    let known: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    for (i, p) in known.iter().enumerate() {
        t.on_server_peer(*p, &lan(i), None, start + secs(i as u64));
    }
    let now = start + secs(600);
    // Six new peers, then five known ones: 11 crawled for 10 places. The known peers stay,
    // the last new one is dropped, and no missed one is kept.
    let new: Vec<PeerId> = (0..6).map(|_| PeerId::random()).collect();
    let crawl: Vec<_> = new
        .iter()
        .map(|p| (*p, lan(50)))
        .chain(known[..5].iter().map(|p| (*p, lan(60))))
        .collect();
    let merge = t.replace_with_crawl(crawl, now);
    assert_eq!(
        (
            merge.updated,
            merge.inserted,
            merge.kept,
            merge.removed,
            merge.refused
        ),
        (5, 5, 0, 5, 1)
    );
    assert!(known[..5].iter().chain(&new[..5]).all(|p| t.contains(p)));
    assert!(!t.contains(&new[5]));
    check(&t);

    // Three crawled, seven places left for the seven missed ones: all kept. Then one more
    // crawled: the missed peer seen longest ago leaves.
    let crawl: Vec<_> = new[..3].iter().map(|p| (*p, lan(70))).collect();
    let merge = t.replace_with_crawl(crawl, now + secs(1));
    assert_eq!((merge.updated, merge.kept, merge.removed), (3, 7, 0));
    let mut crawl: Vec<_> = new[..3].iter().map(|p| (*p, lan(70))).collect();
    crawl.push((new[5], lan(71)));
    let merge = t.replace_with_crawl(crawl, now + secs(2));
    assert_eq!(
        (merge.updated, merge.inserted, merge.kept, merge.removed),
        (3, 1, 6, 1)
    );
    assert_eq!(t.len(), 10);
    check(&t);

    // A crawl of thousands of newcomers: the first `max_peers` of them replace the content,
    // the others are refused as they come (never held).
    let flood: Vec<_> = (0..5000).map(|i| (PeerId::random(), lan(i))).collect();
    let merge = t.replace_with_crawl(flood, now + secs(3));
    assert_eq!(
        (merge.inserted, merge.refused, merge.removed),
        (10, 4990, 10)
    );
    assert_eq!(t.len(), 10);
    check(&t);
    assert_closest_right(&t);
}

#[test]
fn a_crawl_prefers_the_most_recently_seen_missed_peers() {
    let config = FullTableConfig {
        max_peers: 4,
        ..Default::default()
    };
    let (mut t, _) = table_with(config);
    let start = Instant::now();
    let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
    for (i, p) in peers.iter().enumerate() {
        t.on_server_peer(*p, &lan(i), None, start + secs(10 * i as u64));
    }
    let newcomer = PeerId::random();
    let merge = t.replace_with_crawl(vec![(newcomer, lan(9))], start + secs(60));
    assert_eq!((merge.inserted, merge.kept, merge.removed), (1, 3, 1));
    assert!(!t.contains(&peers[0]), "seen longest ago");
    assert!(peers[1..].iter().all(|p| t.contains(p)));
    check(&t);
}

#[test]
fn connections_are_reported_and_none_are_kept() {
    let (mut t, _) = table();
    let p = PeerId::random();
    let now = Instant::now();
    t.on_server_peer(p, &lan(1), None, now);
    assert_eq!(t.peers()[0].connection, ConnectionType::Connected);
    t.on_connection_closed(&p, true, now);
    assert_eq!(t.peers()[0].connection, ConnectionType::NotConnected);
    assert!(t.keep_connected(100).is_empty());
    assert_eq!(t.next_liveness_check(now + secs(100_000)), None);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    assert!(t.refresh_targets(now, secs(600), &mut rng).is_empty());
    assert_eq!(
        t.remove(&p),
        Some(Eviction {
            removed: p,
            promoted: None
        })
    );
    assert_eq!(t.remove(&p), None);
    assert!(t.is_empty());
}

/// One step of the random histories below.
#[derive(Debug, Clone)]
enum Op {
    Offer {
        peer: usize,
        addrs: Vec<usize>,
        answered: bool,
    },
    Fail {
        peer: usize,
        outright: bool,
    },
    Advance(u64),
    Close(usize),
    Remove(usize),
}

fn op(peers: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..peers, prop::collection::vec(0usize..6, 0..4), any::<bool>())
            .prop_map(|(peer, addrs, answered)| Op::Offer { peer, addrs, answered }),
        2 => (0..peers, prop::bool::weighted(0.2))
            .prop_map(|(peer, outright)| Op::Fail { peer, outright }),
        1 => (0u64..90).prop_map(Op::Advance),
        1 => (0..peers).prop_map(Op::Close),
        1 => (0..peers).prop_map(Op::Remove),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// The k-bucket table is the reference for the trait contract: while no bucket is full (so
    /// that k-buckets keep everyone too) and without its diversity filter, both tables must
    /// answer every call the same and hold the same peers, addresses and connection states.
    #[test]
    fn behaves_as_the_kbucket_table_where_both_keep_everyone(
        ops in prop::collection::vec(op(12), 1..120),
    ) {
        let local = PeerId::random();
        let mut full = FullTable::new(local, FullTableConfig::default());
        let config = KBucketConfig { diversity: None, ..Default::default() };
        let mut kb = KBucketTable::new(local, config);
        // Fewer than k = 20 peers: no bucket can fill.
        let pool: Vec<PeerId> = (0..12).map(|_| PeerId::random()).collect();
        let addrs: Vec<Multiaddr> = (0..6).map(|i| lan(i).remove(0)).collect();
        let mut now = Instant::now();
        for op in ops {
            match op {
                Op::Offer { peer, addrs: picked, answered } => {
                    let given: Vec<Multiaddr> = picked.iter().map(|&i| addrs[i].clone()).collect();
                    let (a, b) = if answered {
                        (full.on_request_succeeded(pool[peer], &given, None, now),
                         kb.on_request_succeeded(pool[peer], &given, None, now))
                    } else {
                        (full.on_server_peer(pool[peer], &given, None, now),
                         kb.on_server_peer(pool[peer], &given, None, now))
                    };
                    prop_assert_eq!(a, b);
                }
                Op::Fail { peer, outright } => {
                    let failure = if outright { Failure::Unreachable } else { Failure::NoAnswer };
                    prop_assert_eq!(
                        full.on_request_failed(&pool[peer], failure, now),
                        kb.on_request_failed(&pool[peer], failure, now)
                    );
                }
                Op::Advance(s) => now += secs(s),
                Op::Close(peer) => {
                    full.on_connection_closed(&pool[peer], false, now);
                    kb.on_connection_closed(&pool[peer], false, now);
                }
                Op::Remove(peer) => {
                    prop_assert_eq!(full.remove(&pool[peer]), kb.remove(&pool[peer]));
                }
            }
            prop_assert_eq!(full.len(), kb.len());
            for p in &pool {
                prop_assert_eq!(full.addresses(p), kb.addresses(p));
            }
            let mut a = full.peers();
            let mut b = kb.peers();
            a.sort_by_key(|r| r.id);
            b.sort_by_key(|r| r.id);
            prop_assert_eq!(a, b);
            let target = Key::from_peer(&PeerId::random());
            for count in [0, 3, 20] {
                let want = kb.local_closest_peers(&target, count);
                prop_assert_eq!(full.local_closest_peers(&target, count), want);
            }
        }
        check(&full);
    }

    /// The closest peers equal a full sort by distance, whatever history built the table
    /// (insertions, evictions that move peers between slots, crawls that rebuild the index,
    /// expiry), for any count, none and more than the table holds included.
    #[test]
    fn closest_peers_match_a_full_sort(
        sizes in prop::collection::vec(0usize..300, 1..4),
        removals in 0usize..100,
        counts in prop::collection::vec(0usize..350, 1..5),
    ) {
        let (mut t, local) = table();
        let start = Instant::now();
        let mut all = Vec::new();
        for (round, &n) in sizes.iter().enumerate() {
            let at = start + secs(3600 * round as u64);
            let peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
            if round % 2 == 1 {
                // A crawl: some known peers again, the newcomers, rebuilt in one go.
                let crawl = all.iter().take(n / 2).chain(&peers).map(|p| (*p, lan(1)));
                t.replace_with_crawl(crawl.collect::<Vec<_>>(), at);
            } else {
                for p in &peers {
                    t.on_server_peer(*p, &lan(2), None, at);
                }
            }
            all.extend(peers);
            t.expire(at);
        }
        for p in all.iter().take(removals) {
            t.on_request_failed(p, Failure::Unreachable, start);
        }
        check(&t);
        let targets = [Key::from_peer(&PeerId::random()), Key::from_peer(&local)]
            .into_iter()
            .chain(all.last().map(Key::from_peer));
        for target in targets {
            for &count in &counts {
                let got = ids(t.local_closest_peers(&target, count));
                prop_assert_eq!(got, brute_force(&t, &target, count));
            }
        }
    }
}
