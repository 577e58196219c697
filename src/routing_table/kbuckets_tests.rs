use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::*;

pub(in crate::routing_table) fn addr(s: &str) -> Multiaddr {
    s.parse().unwrap()
}

/// A LAN address, one per `i`.
pub(in crate::routing_table) fn lan(i: usize) -> Vec<Multiaddr> {
    vec![addr(&format!(
        "/ip4/10.0.{}.{}/tcp/4001",
        i / 250,
        i % 250 + 1
    ))]
}

fn table() -> (KBucketTable, PeerId) {
    let local = PeerId::random();
    (KBucketTable::new(local, KBucketConfig::default()), local)
}

/// A peer in bucket `cpl` of `table`.
fn peer_in_bucket(table: &KBucketTable, cpl: usize, rng: &mut StdRng) -> PeerId {
    table
        .local
        .random_peer_in_bucket(cpl, 1 << 16, rng)
        .expect("found")
}

#[test]
fn admission_rules() {
    let (mut t, local) = table();
    admission_contract(&mut t, local, Instant::now());
}

/// What every `RoutingTable` must do on admission: never the local peer nor a peer without
/// addresses; a known peer's new address goes first. Leaves one peer in `t`.
pub(in crate::routing_table) fn admission_contract(
    t: &mut dyn RoutingTable,
    local: PeerId,
    now: Instant,
) {
    let p = PeerId::random();
    assert_eq!(
        t.on_server_peer(local, &lan(1), None, now),
        Admission::Rejected(RejectReason::LocalPeer)
    );
    assert_eq!(
        t.on_server_peer(p, &[], None, now),
        Admission::Rejected(RejectReason::NoAddresses)
    );
    assert_eq!(t.on_server_peer(p, &lan(1), None, now), Admission::Inserted);
    assert_eq!(
        t.on_request_succeeded(p, &lan(2), None, now),
        Admission::Updated
    );
    // Most recently seen address first.
    assert_eq!(
        t.addresses(&p).unwrap(),
        &[lan(2)[0].clone(), lan(1)[0].clone()]
    );
    assert_eq!(t.len(), 1);
    assert!(t.contains(&p) && !t.contains(&local));
}

#[test]
fn a_peer_advertising_1000_addresses_keeps_the_cap() {
    let (mut t, _) = table();
    let p = PeerId::random();
    let addrs: Vec<Multiaddr> = (0..1000).map(lan).map(|mut v| v.remove(0)).collect();
    assert_eq!(
        t.on_server_peer(p, &addrs, None, Instant::now()),
        Admission::Inserted
    );
    let kept = t.addresses(&p).unwrap();
    assert_eq!(kept.len(), 16);
    assert_eq!(kept[0], addrs[0], "the order given is kept");
    t.on_request_succeeded(p, &addrs, None, Instant::now());
    assert_eq!(t.addresses(&p).unwrap().len(), 16);
}

#[test]
fn five_hundred_peers_from_one_slash_16_get_three_slots() {
    let (mut t, _) = table();
    let now = Instant::now();
    let mut admitted = 0;
    for i in 0..500 {
        let a = addr(&format!("/ip4/198.51.{}.{}/tcp/4001", i / 250, i % 250 + 1));
        if t.on_server_peer(PeerId::random(), &lan(i), Some(&a), now) == Admission::Inserted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "3 per table");
    assert_eq!(t.len(), 3);
    for b in 0..256 {
        assert!(t.bucket_len(b) <= 2, "2 per bucket");
    }
    // Another /16 is unaffected.
    let other = addr("/ip4/198.52.0.1/tcp/4001");
    assert_eq!(
        t.on_server_peer(PeerId::random(), &lan(1), Some(&other), now),
        Admission::Inserted
    );
}

#[test]
fn same_group_is_limited_per_bucket() {
    let (mut t, _) = table();
    let mut rng = StdRng::seed_from_u64(1);
    let now = Instant::now();
    let results: Vec<_> = (0..3)
        .map(|i| {
            let p = peer_in_bucket(&t, 0, &mut rng);
            let a = addr(&format!("/ip4/198.51.100.{}/tcp/1", i + 1));
            t.on_server_peer(p, &lan(i), Some(&a), now)
        })
        .collect();
    assert_eq!(
        results,
        vec![
            Admission::Inserted,
            Admission::Inserted,
            Admission::Rejected(RejectReason::Diversity)
        ]
    );
}

#[test]
fn loopback_and_private_peers_are_exempt_and_filter_can_be_disabled() {
    let (mut t, _) = table();
    let now = Instant::now();
    for i in 0..100 {
        let a = addr(&format!("/ip4/127.0.0.1/tcp/{}", 1000 + i));
        assert_ne!(
            t.on_server_peer(PeerId::random(), std::slice::from_ref(&a), Some(&a), now),
            Admission::Rejected(RejectReason::Diversity)
        );
    }
    let config = KBucketConfig {
        diversity: None,
        ..KBucketConfig::default()
    };
    let mut open = KBucketTable::new(PeerId::random(), config);
    let public = addr("/ip4/198.51.100.1/tcp/1");
    for _ in 0..10 {
        let p = PeerId::random();
        open.on_server_peer(p, std::slice::from_ref(&public), Some(&public), now);
    }
    assert!(open.len() >= 9, "no diversity limit: {}", open.len());
}

#[test]
fn a_new_connection_address_may_not_break_the_group_limit() {
    let (mut t, _) = table();
    let mut rng = StdRng::seed_from_u64(5);
    let now = Instant::now();
    let group = |i: u8| addr(&format!("/ip4/198.51.100.{i}/tcp/1"));
    // In five different buckets, so that only the table-wide limit (3) applies.
    let peers: Vec<PeerId> = (0..5).map(|b| peer_in_bucket(&t, b, &mut rng)).collect();
    for (i, p) in peers.iter().take(3).enumerate() {
        assert_eq!(
            t.on_server_peer(*p, &lan(i), Some(&group(i as u8 + 1)), now),
            Admission::Inserted
        );
    }
    // Met without a known connection address (a bootstrap peer the application added).
    assert_eq!(
        t.on_server_peer(peers[3], &lan(3), None, now),
        Admission::Inserted
    );
    // It now connects from the full group: it stays, outside the group.
    assert_eq!(
        t.on_request_succeeded(peers[3], &lan(3), Some(&group(9)), now),
        Admission::Updated
    );
    let (b, i) = t.find(&peers[3]).unwrap();
    assert_eq!(t.buckets[b].entries[i].observed, None);
    assert_eq!(
        t.on_server_peer(peers[4], &lan(4), Some(&group(10)), now),
        Admission::Rejected(RejectReason::Diversity),
        "the group still holds three"
    );
}

/// Issue 14, item 4: 3 Sybils advertise addresses in 16 public /16s each while connecting from
/// elsewhere. Advertised addresses count nowhere: the honest peers of those /16s get in.
#[test]
fn advertised_addresses_never_fill_a_group() {
    let (mut t, _) = table();
    let mut rng = StdRng::seed_from_u64(14);
    let now = Instant::now();
    let victims: Vec<Multiaddr> = (0..16)
        .map(|g| addr(&format!("/ip4/45.{}.1.1/tcp/4001", 10 + g)))
        .collect();
    for s in 0..3 {
        let sybil = peer_in_bucket(&t, 3 + s, &mut rng);
        let from = addr(&format!("/ip4/81.{s}.0.1/tcp/50000"));
        assert_eq!(
            t.on_server_peer(sybil, &victims, Some(&from), now),
            Admission::Inserted
        );
    }
    // Three honest peers per /16, one per bucket 0, 1, 2: within both limits.
    let mut admitted = 0;
    for g in 0..16 {
        for b in 0..3 {
            let honest = peer_in_bucket(&t, b, &mut rng);
            let from = addr(&format!("/ip4/45.{}.{}.7/tcp/50000", 10 + g, 2 + b));
            if t.on_server_peer(honest, &lan(g * 3 + b), Some(&from), now) == Admission::Inserted {
                admitted += 1;
            }
        }
    }
    assert_eq!(admitted, 48, "every honest peer of the advertised /16s");
}

#[test]
fn refused_waiting_and_evicted_peers_hold_no_slot() {
    let (mut t, _) = table();
    let mut rng = StdRng::seed_from_u64(6);
    let now = Instant::now();
    let from = |i: u8| addr(&format!("/ip4/198.51.7.{i}/tcp/1"));
    // A full bucket 0 of LAN peers: a newcomer of the group waits there as a replacement.
    for i in 0..20 {
        let p = peer_in_bucket(&t, 0, &mut rng);
        assert_eq!(
            t.on_server_peer(p, &lan(i), Some(&lan(i)[0]), now),
            Admission::Inserted
        );
    }
    let waiting = peer_in_bucket(&t, 0, &mut rng);
    assert_eq!(
        t.on_server_peer(waiting, &lan(100), Some(&from(100)), now),
        Admission::Pending
    );
    // It holds no slot: three peers of the group get in elsewhere; a fourth is refused.
    let members: Vec<PeerId> = (1..4).map(|b| peer_in_bucket(&t, b, &mut rng)).collect();
    for (i, p) in members.iter().enumerate() {
        assert_eq!(
            t.on_server_peer(*p, &lan(200 + i), Some(&from(i as u8 + 1)), now),
            Admission::Inserted
        );
    }
    let refused = peer_in_bucket(&t, 4, &mut rng);
    assert_eq!(
        t.on_server_peer(refused, &lan(300), Some(&from(50)), now),
        Admission::Rejected(RejectReason::Diversity)
    );
    // A refused peer holds none either, and an evicted one frees its own.
    assert_eq!(
        t.on_server_peer(refused, &lan(300), Some(&from(50)), now),
        Admission::Rejected(RejectReason::Diversity)
    );
    assert!(t.remove(&members[0]).is_some());
    assert_eq!(
        t.on_server_peer(refused, &lan(300), Some(&from(50)), now),
        Admission::Inserted
    );
}

#[test]
fn full_bucket_keeps_newcomers_as_replacements() {
    let (mut t, _) = table();
    let mut rng = StdRng::seed_from_u64(2);
    let now = Instant::now();
    for i in 0..20 {
        let p = peer_in_bucket(&t, 0, &mut rng);
        assert_eq!(t.on_server_peer(p, &lan(i), None, now), Admission::Inserted);
    }
    for i in 0..15 {
        let p = peer_in_bucket(&t, 0, &mut rng);
        assert_eq!(
            t.on_server_peer(p, &lan(100 + i), None, now),
            Admission::Pending
        );
    }
    assert_eq!(t.bucket_len(0), 20);
    assert_eq!(t.replacements_len(0), 10, "cache bounded");
}

/// A full bucket of 20 in bucket 0, and two candidates waiting (`old` offered before `new`).
fn full_bucket(t: &mut KBucketTable, seed: u64, now: Instant) -> (Vec<PeerId>, PeerId, PeerId) {
    let mut rng = StdRng::seed_from_u64(seed);
    let members: Vec<PeerId> = (0..20).map(|_| peer_in_bucket(t, 0, &mut rng)).collect();
    for (i, p) in members.iter().enumerate() {
        t.on_server_peer(*p, &lan(i), None, now);
    }
    let old = peer_in_bucket(t, 0, &mut rng);
    let new = peer_in_bucket(t, 0, &mut rng);
    assert_eq!(
        t.on_server_peer(old, &lan(50), None, now),
        Admission::Pending
    );
    assert_eq!(
        t.on_server_peer(new, &lan(51), None, now),
        Admission::Pending
    );
    (members, old, new)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn a_refused_dial_evicts_at_once_and_promotes_the_newest_candidate() {
    let (mut t, _) = table();
    let now = Instant::now();
    let (members, old, new) = full_bucket(&mut t, 3, now);
    let eviction = t
        .on_request_failed(&members[0], Failure::Unreachable, now)
        .expect("a dial refused outright evicts");
    assert_eq!(eviction.removed, members[0]);
    assert_eq!(eviction.promoted, Some(new));
    assert!(t.contains(&new) && !t.contains(&members[0]));
    assert_eq!(t.bucket_len(0), 20, "refilled from the replacement cache");
    // The candidate may have left since it was offered: it is checked first.
    assert_eq!(t.next_liveness_check(now), Some(new));
    // Refused too: the next candidate takes the slot.
    let eviction = t
        .on_request_failed(&new, Failure::Unreachable, now)
        .unwrap();
    assert_eq!(eviction.promoted, Some(old));
    assert_eq!(t.replacements_len(0), 0);
    assert!(t
        .on_request_failed(&old, Failure::Unreachable, now)
        .is_some());
    assert_eq!(t.bucket_len(0), 19, "nothing left to promote");
}

#[test]
fn a_silent_peer_is_evicted_once_its_failures_span_a_while() {
    let (mut t, _) = table();
    let start = Instant::now();
    let (members, _, new) = full_bucket(&mut t, 5, start);
    let silent = members[3];
    // A lookup's request times out: a suspicion, checked again 30 s later.
    assert_eq!(t.on_request_failed(&silent, Failure::NoAnswer, start), None);
    assert_eq!(t.next_liveness_check(start + secs(29)), None);
    assert_eq!(t.next_liveness_check(start + secs(30)), Some(silent));
    assert_eq!(
        t.next_liveness_check(start + secs(30)),
        None,
        "handed out once"
    );
    // The check times out too: still in, checked again.
    assert_eq!(
        t.on_request_failed(&silent, Failure::NoAnswer, start + secs(40)),
        None
    );
    assert_eq!(t.next_liveness_check(start + secs(70)), Some(silent));
    // The third failure in a row, 80 s after the first: evicted, and replaced.
    let eviction = t
        .on_request_failed(&silent, Failure::NoAnswer, start + secs(80))
        .expect("silent through three checks");
    assert_eq!((eviction.removed, eviction.promoted), (silent, Some(new)));
}

#[test]
fn timeouts_under_overload_do_not_evict_a_healthy_peer() {
    let (mut t, _) = table();
    let start = Instant::now();
    let (members, _, _) = full_bucket(&mut t, 6, start);
    let slow = members[7];
    // A burst: ten timeouts within 15 s, as when every node of a network bootstraps at once
    // on two cores. Three failures in a row are not enough without the span.
    for i in 0..10 {
        let at = start + Duration::from_millis(1500 * i);
        assert_eq!(t.on_request_failed(&slow, Failure::NoAnswer, at), None);
    }
    // Its check once the overload passed is answered: the run of failures is forgotten.
    assert_eq!(t.next_liveness_check(start + secs(45)), Some(slow));
    t.on_request_succeeded(slow, &[], None, start + secs(46));
    assert_eq!(
        t.on_request_failed(&slow, Failure::NoAnswer, start + secs(100)),
        None
    );
    assert_eq!(
        t.on_request_failed(&slow, Failure::NoAnswer, start + secs(130)),
        None
    );
    // An answer between failures always resets the run.
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
    let local = PeerId::random();
    let config = KBucketConfig {
        failure_span: Duration::ZERO,
        ..Default::default()
    };
    let mut t = KBucketTable::new(local, config);
    let now = Instant::now();
    let p = PeerId::random();
    t.on_server_peer(p, &lan(1), None, now);
    assert_eq!(t.on_request_failed(&p, Failure::NoAnswer, now), None);
    assert_eq!(t.on_request_failed(&p, Failure::NoAnswer, now), None);
    assert!(t.on_request_failed(&p, Failure::NoAnswer, now).is_some());
}

#[test]
fn liveness_checks_are_paced() {
    let (mut t, _) = table();
    let start = Instant::now();
    let p = PeerId::random();
    let q = PeerId::random();
    t.on_server_peer(p, &lan(1), None, start);
    t.on_server_peer(q, &lan(2), None, start + secs(600));
    assert_eq!(t.next_liveness_check(start + secs(60)), None);
    let due = start + secs(43 * 60);
    assert_eq!(t.next_liveness_check(due), Some(p));
    assert_eq!(t.next_liveness_check(due), None, "handed out once");
    // A check that could not be sent is handed out again, after a while.
    t.on_check_abandoned(&p, due);
    assert_eq!(t.next_liveness_check(due + secs(29)), None);
    assert_eq!(t.next_liveness_check(due + secs(30)), Some(p));
    // A successful check keeps the peer and restarts its clock.
    t.on_request_succeeded(p, &[], None, due);
    let later = start + secs(53 * 60 + 1);
    assert_eq!(t.next_liveness_check(later), Some(q));
    t.on_request_succeeded(q, &[], None, later);
    assert_eq!(t.next_liveness_check(later), None);
    assert!(t.contains(&p) && t.contains(&q));
}

#[test]
fn a_lost_connection_is_checked_at_most_once_per_interval() {
    let (mut t, _) = table();
    let start = Instant::now();
    let (p, q) = (PeerId::random(), PeerId::random());
    t.on_server_peer(p, &lan(1), None, start);
    t.on_server_peer(q, &lan(2), None, start);
    // Closed by us for idleness: nothing to check.
    t.on_connection_closed(&q, false, start);
    assert_eq!(t.next_liveness_check(start), None);
    // Lost: checked at once; it answers.
    t.on_connection_closed(&p, true, start);
    assert_eq!(t.next_liveness_check(start + secs(5)), Some(p));
    t.on_request_succeeded(p, &[], None, start + secs(6));
    // A remote that closes idle connections again soon costs no second check...
    t.on_connection_closed(&p, true, start + secs(60));
    assert_eq!(t.next_liveness_check(start + secs(65)), None);
    // ...until the interval passed since the last one.
    t.on_connection_closed(&p, true, start + secs(605));
    assert_eq!(t.next_liveness_check(start + secs(610)), Some(p));
}

#[test]
fn connections_kept_are_the_shallowest_buckets_peers() {
    let (mut t, _) = table();
    let mut rng = StdRng::seed_from_u64(8);
    let now = Instant::now();
    let mut by_bucket = Vec::new();
    for (cpl, n) in [(3, 2), (0, 3), (1, 2)] {
        for i in 0..n {
            let p = peer_in_bucket(&t, cpl, &mut rng);
            t.on_server_peer(p, &lan(10 * cpl + i), None, now);
            by_bucket.push((cpl, p));
        }
    }
    let kept = t.keep_connected(4);
    assert_eq!(kept.len(), 4, "bounded");
    let buckets: Vec<usize> = kept
        .iter()
        .map(|p| by_bucket.iter().find(|(_, q)| q == p).unwrap().0)
        .collect();
    assert_eq!(buckets, vec![0, 0, 0, 1]);
    assert_eq!(t.keep_connected(100).len(), 7);
    assert!(t.keep_connected(0).is_empty());
}

#[test]
fn connection_state_is_reported() {
    let (mut t, _) = table();
    let p = PeerId::random();
    let now = Instant::now();
    t.on_server_peer(p, &lan(1), None, now);
    assert_eq!(t.peers()[0].connection, ConnectionType::Connected);
    t.on_connection_closed(&p, false, now);
    assert_eq!(t.peers()[0].connection, ConnectionType::NotConnected);
    assert!(t.remove(&p).is_some());
    assert!(t.is_empty());
}

#[test]
fn refresh_targets_fall_in_their_bucket_and_respect_the_interval() {
    let (mut t, _) = table();
    let mut rng = StdRng::seed_from_u64(4);
    let now = Instant::now();
    for cpl in 0..6 {
        let p = peer_in_bucket(&t, cpl, &mut rng);
        t.on_server_peer(p, &lan(cpl), None, now);
    }
    let interval = Duration::from_secs(600);
    let targets = t.refresh_targets(now, interval, &mut rng);
    assert_eq!(
        targets.iter().map(|r| r.bucket).collect::<Vec<_>>(),
        (0..6).collect::<Vec<_>>()
    );
    for r in &targets {
        assert_eq!(
            Key::from_peer(&r.target).common_prefix_len(&t.local),
            r.bucket
        );
        t.on_refreshed(r.bucket, now);
    }
    assert!(t
        .refresh_targets(now + Duration::from_secs(1), interval, &mut rng)
        .is_empty());
    assert_eq!(
        t.refresh_targets(now + interval, interval, &mut rng).len(),
        6
    );
}

fn brute_force(t: &KBucketTable, target: &Key, count: usize) -> Vec<PeerId> {
    let mut all: Vec<_> = t.peers().into_iter().map(|p| p.id).collect();
    all.sort_by_key(|p| Key::from_peer(p).distance(target));
    all.truncate(count);
    all
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn closest_peers_match_a_full_sort(seed in any::<u64>(), peers in 0usize..400, count in 1usize..40) {
        let mut rng = StdRng::seed_from_u64(seed);
        let local = PeerId::random();
        let mut t = KBucketTable::new(local, KBucketConfig { diversity: None, ..Default::default() });
        let now = Instant::now();
        for i in 0..peers {
            t.on_server_peer(PeerId::random(), &lan(i), None, now);
        }
        // Also in-bucket targets and the local key itself.
        let targets = [
            Key::from_peer(&PeerId::random()),
            Key::from_peer(&local),
            Key::from_peer(&t.local.random_peer_in_bucket(3, 1 << 12, &mut rng).unwrap()),
        ];
        for target in targets {
            let got: Vec<PeerId> = t.local_closest_peers(&target, count).into_iter().map(|p| p.id).collect();
            prop_assert_eq!(got, brute_force(&t, &target, count));
        }
    }
}

/// Review finding: advertised addresses are the peer's to choose. Sybils advertising only DNS
/// names (which belong to no IP group) are still grouped by the address they connect from.
#[test]
fn sybils_are_grouped_by_their_connection_address() {
    let (mut t, _) = table();
    let now = Instant::now();
    let mut admitted = 0;
    for i in 0..100 {
        let advertised = addr(&format!("/dns4/s{i}.example.com/tcp/4001"));
        let observed = addr(&format!(
            "/ip4/198.51.{}.{}/tcp/50000",
            i / 200,
            i % 200 + 1
        ));
        let outcome = t.on_server_peer(PeerId::random(), &[advertised], Some(&observed), now);
        if outcome == Admission::Inserted {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "3 per table from one /16");
}
