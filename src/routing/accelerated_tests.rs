use std::time::{Duration, Instant, SystemTime};

use libp2p::{Multiaddr, PeerId};

use super::*;
use crate::network::message::ConnectionType;
use crate::routing::lookup::LookupStep;
use crate::routing_table::{KBucketConfig, KBucketTable};

fn addr(i: usize) -> Multiaddr {
    format!("/ip4/10.0.{}.{}/tcp/4001", i / 250, i % 250 + 1)
        .parse()
        .unwrap()
}

fn peers(n: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
    (0..n).map(|i| (PeerId::random(), vec![addr(i)])).collect()
}

fn kbuckets(local: PeerId, peers: &[(PeerId, Vec<Multiaddr>)], now: Instant) -> KBucketTable {
    let mut table = KBucketTable::new(local, KBucketConfig::default());
    for (peer, addrs) in peers {
        let _ = table.on_server_peer(*peer, addrs, None, now);
    }
    table
}

/// An accelerated routing whose full table holds `peers`, as crawled `age` ago.
fn crawled(
    local: PeerId,
    peers: &[(PeerId, Vec<Multiaddr>)],
    age: Duration,
    now: Instant,
) -> Accelerated {
    let mut accelerated = Accelerated::new(local, AcceleratedConfig::default(), now);
    let wall = SystemTime::now();
    let snapshot = CrawlSnapshot {
        saved_at: wall - age,
        peers: peers.to_vec(),
    };
    accelerated.restore(snapshot, now, wall);
    accelerated
}

/// Steps the lookup at `now` until it waits: the peers it asks at once.
fn asked_at_once(lookup: &mut Lookup, now: Instant) -> Vec<PeerId> {
    let mut asked = Vec::new();
    while let LookupStep::Ask { peer, .. } = lookup.step(now) {
        asked.push(peer);
    }
    asked
}

fn closest(target: &Key, peers: &[(PeerId, Vec<Multiaddr>)], n: usize) -> Vec<PeerId> {
    let mut ids: Vec<PeerId> = peers.iter().map(|(p, _)| *p).collect();
    ids.sort_by_key(|p| Key::from_peer(p).distance(target));
    ids.truncate(n);
    ids
}

#[test]
fn without_a_crawl_the_lookup_is_the_iterative_one() {
    let now = Instant::now();
    let local = PeerId::random();
    let known = peers(30);
    let table = kbuckets(local, &known, now);
    let accelerated = Accelerated::new(local, AcceleratedConfig::default(), now);
    let config = LookupConfig::default();
    for this in [None, Some(&accelerated)] {
        let mut plan = Accelerated::plan(this, local, Key::new(b"key"), &table, config, now);
        assert!(!plan.accelerated);
        assert_eq!(asked_at_once(&mut plan.lookup, now).len(), config.alpha);
    }
}

#[test]
fn a_crawled_table_asks_the_closest_peers_at_once() {
    let now = Instant::now();
    let local = PeerId::random();
    let network = peers(500);
    // The k-bucket table knows a few peers only; the full table knows all.
    let table = kbuckets(local, &network[..5], now);
    let accelerated = crawled(local, &network, Duration::from_secs(60), now);
    assert!(accelerated.is_ready(now));
    let target = Key::new(b"some key");
    let config = LookupConfig::default();
    let mut plan = Accelerated::plan(Some(&accelerated), local, target, &table, config, now);
    assert!(plan.accelerated);
    let asked = asked_at_once(&mut plan.lookup, now);
    let mut expected = closest(&target, &network, config.k);
    let mut got = asked.clone();
    expected.sort();
    got.sort();
    assert_eq!(
        got, expected,
        "the k closest of the network, all in the first round"
    );
    // They answer naming no one closer: the lookup is over after one round trip.
    for peer in &asked {
        plan.lookup.on_success(peer, Vec::new());
    }
    assert_eq!(plan.lookup.step(now), LookupStep::Finished);
    assert_eq!(plan.lookup.result().len(), config.k);
}

#[test]
fn a_closer_peer_named_in_an_answer_is_still_asked() {
    let now = Instant::now();
    let local = PeerId::random();
    let network = peers(300);
    let target = Key::new(b"key");
    // The crawl missed the peer closest to the key.
    let nearest = closest(&target, &network, 1)[0];
    let missed: Vec<_> = network
        .iter()
        .filter(|(p, _)| *p != nearest)
        .cloned()
        .collect();
    let accelerated = crawled(local, &missed, Duration::ZERO, now);
    let table = kbuckets(local, &[], now);
    let config = LookupConfig::default();
    let mut plan = Accelerated::plan(Some(&accelerated), local, target, &table, config, now);
    let asked = asked_at_once(&mut plan.lookup, now);
    assert!(!asked.contains(&nearest));
    let named = PeerRecord {
        id: nearest,
        addrs: vec![addr(999)],
        connection: ConnectionType::NotConnected,
    };
    plan.lookup.on_success(&asked[0], vec![named]);
    assert!(
        asked_at_once(&mut plan.lookup, now).contains(&nearest),
        "followed like any lookup"
    );
}

#[test]
fn an_old_crawl_or_a_failing_neighbourhood_falls_back() {
    let now = Instant::now();
    let local = PeerId::random();
    let network = peers(200);
    let config = AcceleratedConfig::default();
    let old = crawled(
        local,
        &network,
        config.max_table_age + Duration::from_secs(1),
        now,
    );
    assert!(!old.is_ready(now));
    let target = Key::new(b"key");
    assert!(old.seeds(&target, 30, now).is_none());

    let mut fresh = crawled(local, &network, Duration::ZERO, now);
    let near = closest(&target, &network, 30);
    // A third failed since the crawl: they are skipped, the rest serve.
    for peer in &near[..10] {
        fresh.on_failed(peer, Failure::NoAnswer, now);
    }
    let seeds = fresh.seeds(&target, 30, now).expect("most are healthy");
    assert_eq!(seeds.len(), 20);
    assert!(seeds.iter().all(|s| !near[..10].contains(&s.id)));
    // An answer heals a peer.
    fresh.on_answered(near[0], now);
    assert_eq!(fresh.seeds(&target, 30, now).unwrap().len(), 21);
    // Most of the neighbourhood failed: the table is stale for this key.
    for peer in &near[..20] {
        fresh.on_failed(peer, Failure::NoAnswer, now);
    }
    assert!(fresh.seeds(&target, 30, now).is_none());
    let table = kbuckets(local, &network[..5], now);
    let plan = Accelerated::plan(
        Some(&fresh),
        local,
        target,
        &table,
        LookupConfig::default(),
        now,
    );
    assert!(!plan.accelerated);
}

#[test]
fn the_snapshot_keeps_the_crawl_age_across_a_restart() {
    let now = Instant::now();
    let local = PeerId::random();
    let network = peers(50);
    let age = Duration::from_secs(600);
    let accelerated = crawled(local, &network, age, now);
    let wall = SystemTime::now();
    let snapshot = accelerated.snapshot(now, wall).expect("crawled");
    assert_eq!(snapshot.peers.len(), 50);
    let saved_age = wall.duration_since(snapshot.saved_at).unwrap();
    assert!(
        saved_age.abs_diff(age) < Duration::from_secs(1),
        "{saved_age:?}"
    );
    // Restored later in another process: ready, next crawl an interval after the old one.
    let later = now + Duration::from_secs(30);
    let mut restarted = Accelerated::new(local, AcceleratedConfig::default(), later);
    restarted.restore(snapshot, later, wall + Duration::from_secs(30));
    assert!(restarted.is_ready(later));
    assert_eq!(restarted.table().len(), 50);
    let due = restarted.next_deadline(later);
    let expected =
        later + AcceleratedConfig::default().crawl_interval - age - Duration::from_secs(30);
    assert!(due.max(expected) - due.min(expected) < Duration::from_secs(2));
    // Nothing saved before a crawl.
    let fresh = Accelerated::new(local, AcceleratedConfig::default(), now);
    assert!(fresh.snapshot(now, wall).is_none());
}

/// Fails every crawl request among `actions`, numbering them from `first_id`.
fn fail_all(accelerated: &mut Accelerated, actions: &[AcceleratedAction], first_id: u64) {
    let mut id = first_id;
    for action in actions {
        if let AcceleratedAction::Send { peer, bucket, .. } = action {
            accelerated.on_sent(OutboundRequestId(id), *peer, *bucket);
            let failed = Err(RequestError::Timeout);
            accelerated.on_crawl_result(OutboundRequestId(id), failed, &|_, a| a);
            id += 1;
        }
    }
}

#[test]
fn a_crawl_waits_for_a_seed_then_runs_on_its_schedule() {
    let now = Instant::now();
    let local = PeerId::random();
    let config = AcceleratedConfig::default();
    let mut accelerated = Accelerated::new(local, config.clone(), now);
    let empty = kbuckets(local, &[], now);
    assert!(accelerated.poll(&empty, now).is_empty(), "no seed yet");
    assert_eq!(
        accelerated.next_deadline(now),
        now + SEED_WAIT,
        "looks again later, not at once"
    );
    let seeds = peers(2);
    let table = kbuckets(local, &seeds, now);
    let actions = accelerated.poll(&table, now);
    assert!(matches!(
        actions[0],
        AcceleratedAction::CrawlStarted { seeds: 2 }
    ));
    assert!(actions
        .iter()
        .any(|a| matches!(a, AcceleratedAction::Send { .. })));
    assert!(accelerated.crawl_progress().is_some());
    // Every request fails: the crawl ends with an empty result.
    fail_all(&mut accelerated, &actions, 0);
    let done = accelerated.poll(&table, now);
    assert!(
        done.iter()
            .any(|a| matches!(a, AcceleratedAction::CrawlFinished { peers: 0, .. })),
        "{done:?}"
    );
    assert!(accelerated.crawl_progress().is_none());
    // It found nobody while the k-bucket table knows two servers: the table does not serve,
    // and the next crawl comes after a back-off, doubling.
    assert!(!accelerated.is_ready(now));
    let retry = accelerated.next_deadline(now);
    assert!(
        retry >= now + THIN_CRAWL_BACKOFF / 2 && retry <= now + THIN_CRAWL_BACKOFF * 3 / 2,
        "a back-off, spread"
    );
    let again = accelerated.poll(&table, retry);
    assert!(matches!(again[0], AcceleratedAction::CrawlStarted { .. }));
    fail_all(&mut accelerated, &again, 100);
    assert!(accelerated
        .poll(&table, retry)
        .iter()
        .any(|a| matches!(a, AcceleratedAction::CrawlFinished { serving: false, .. })));
    let next = accelerated.next_deadline(retry);
    assert!(
        next >= retry + THIN_CRAWL_BACKOFF && next <= retry + THIN_CRAWL_BACKOFF * 3,
        "doubled"
    );
    assert!(accelerated.crawl_now(retry));
    assert!(matches!(
        accelerated.poll(&table, retry)[0],
        AcceleratedAction::CrawlStarted { .. }
    ));
    assert!(!accelerated.crawl_now(retry), "one at a time");
    // An outcome of no crawl request is ignored.
    accelerated.on_crawl_result(OutboundRequestId(9_999), Ok(None), &|_, a| a);
}

#[test]
fn answers_fill_the_table_through_a_crawl() {
    let now = Instant::now();
    let local = PeerId::random();
    let seed = peers(1);
    let others = peers(30);
    let table = kbuckets(local, &seed, now);
    let mut accelerated = Accelerated::new(local, AcceleratedConfig::default(), now);
    let mut next_id = 0;
    let mut t = now;
    // Every peer answers every request with the whole network: one crawl finds everyone.
    let everyone: Vec<PeerRecord> = seed
        .iter()
        .chain(&others)
        .map(|(id, addrs)| PeerRecord {
            id: *id,
            addrs: addrs.clone(),
            connection: ConnectionType::NotConnected,
        })
        .collect();
    let mut finished = None;
    for _ in 0..10_000 {
        for action in accelerated.poll(&table, t) {
            match action {
                AcceleratedAction::Send { peer, bucket, .. } => {
                    let id = OutboundRequestId(next_id);
                    next_id += 1;
                    accelerated.on_sent(id, peer, bucket);
                    let answer = Response::FindNode {
                        closer_peers: everyone.iter().take(20).cloned().collect(),
                    };
                    accelerated.on_crawl_result(id, Ok(Some(answer)), &|_, a| a);
                }
                AcceleratedAction::CrawlFinished { peers, serving, .. } => {
                    assert!(serving);
                    finished = Some(peers)
                }
                _ => {}
            }
        }
        if finished.is_some() {
            break;
        }
        t += Duration::from_millis(100);
    }
    let peers = finished.expect("the crawl finished");
    assert!(peers >= 20, "{peers}");
    assert!(accelerated.is_ready(t));
    assert_eq!(accelerated.table().len(), peers);
}
