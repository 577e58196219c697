use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::*;

fn addr(port: u16) -> Multiaddr {
    format!("/ip4/10.0.0.1/tcp/{port}").parse().unwrap()
}

fn record(id: PeerId) -> PeerRecord {
    PeerRecord {
        id,
        addrs: vec![addr(1)],
        connection: ConnectionType::NotConnected,
    }
}

/// Keeps every address: the behaviour's rules are tested with the query pool.
fn keep(_: &PeerId, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs
}

fn answer(peers: Vec<PeerRecord>) -> Response {
    Response::FindNode {
        closer_peers: peers,
    }
}

/// A peer whose key shares exactly `cpl` bits with `of`'s.
fn peer_at(of: &PeerId, cpl: usize, rng: &mut StdRng) -> PeerId {
    Key::from_peer(of)
        .random_peer_in_bucket(cpl, 1 << 24, rng)
        .unwrap()
}

/// Everything the crawler wants now.
fn drain(crawler: &mut Crawler, now: Instant) -> Vec<CrawlAction> {
    std::iter::from_fn(|| crawler.poll(now)).collect()
}

fn sends(actions: &[CrawlAction]) -> Vec<(PeerId, Vec<usize>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            CrawlAction::Send { peer, requests, .. } => {
                Some((*peer, requests.iter().map(|r| r.bucket).collect()))
            }
            _ => None,
        })
        .collect()
}

fn released(actions: &[CrawlAction]) -> Vec<PeerId> {
    actions
        .iter()
        .filter_map(|a| match a {
            CrawlAction::Release { peer } => Some(*peer),
            _ => None,
        })
        .collect()
}

fn done(actions: Vec<CrawlAction>) -> Option<CrawlResult> {
    actions.into_iter().find_map(|a| match a {
        CrawlAction::Done(result) => Some(result),
        _ => None,
    })
}

#[test]
fn asks_one_key_per_bucket_and_stops_once_the_buckets_are_complete() {
    let mut rng = StdRng::seed_from_u64(1);
    let local = PeerId::random();
    let seed = PeerId::random();
    let config = CrawlerConfig {
        initial_depth: 4,
        ..Default::default()
    };
    let now = Instant::now();
    let mut crawler = Crawler::new(local, [record(seed)], config, now);
    let actions = drain(&mut crawler, now);
    let [CrawlAction::Send {
        peer,
        addrs,
        requests,
    }] = actions.as_slice()
    else {
        panic!("one peer contacted, all its first wave at once: {actions:?}")
    };
    assert_eq!((*peer, addrs.as_slice()), (seed, &[addr(1)][..]));
    assert_eq!(requests.len(), 5, "cpl 0 to initial_depth");
    for (cpl, request) in requests.iter().enumerate() {
        assert_eq!(request.bucket, cpl);
        let Request::FindNode { key } = &request.request else {
            panic!("FIND_NODE")
        };
        assert_eq!(
            Key::new(key).common_prefix_len(&Key::from_peer(&seed)),
            cpl,
            "the server hashes the key: it lands in bucket {cpl} of the peer"
        );
    }
    // Buckets 0 and 1 are full (20 peers each); from cpl 2 the peer holds fewer than k.
    let mut named = Vec::new();
    for cpl in 0..=4 {
        let count = if cpl < 2 { 20 } else { 5 };
        let peers: Vec<PeerId> = (0..count).map(|_| peer_at(&seed, cpl, &mut rng)).collect();
        named.extend(peers.iter().copied());
        crawler.on_answer(
            &seed,
            cpl,
            answer(peers.into_iter().map(record).collect()),
            &keep,
        );
    }
    let actions = drain(&mut crawler, now);
    assert_eq!(released(&actions), vec![seed], "complete: no second wave");
    assert_eq!(crawler.progress().reachable, 1);
    assert_eq!(crawler.progress().found, 1 + named.len());
    // The peers it named are contacted next, at the pace.
    let contacted: HashSet<PeerId> = sends(&actions).into_iter().map(|(p, _)| p).collect();
    assert_eq!(contacted.len(), config_burst() - 1, "the rest of the burst");
    assert!(contacted.iter().all(|p| named.contains(p)));
}

fn config_burst() -> usize {
    CrawlerConfig::default().pace_burst as usize
}

#[test]
fn a_peer_still_full_at_its_deepest_key_gets_a_deeper_wave() {
    let mut rng = StdRng::seed_from_u64(2);
    let seed = PeerId::random();
    let config = CrawlerConfig {
        initial_depth: 3,
        max_peers_in_flight: 1,
        ..Default::default()
    };
    let now = Instant::now();
    let mut crawler = Crawler::new(PeerId::random(), [record(seed)], config, now);
    assert_eq!(
        sends(&drain(&mut crawler, now)),
        vec![(seed, vec![0, 1, 2, 3])]
    );
    crawler.on_connected(&seed, addr(9));
    for cpl in 0..=3 {
        let peers = (0..20).map(|_| record(peer_at(&seed, cpl, &mut rng)));
        crawler.on_answer(&seed, cpl, answer(peers.collect()), &keep);
    }
    let actions = drain(&mut crawler, now);
    assert_eq!(
        sends(&actions),
        vec![(seed, vec![4, 5, 6])],
        "EXTRA_WAVE deeper keys"
    );
    assert!(
        released(&actions).is_empty(),
        "its connection is still needed"
    );
    // The last answers complete it; a repeated or unasked answer changes nothing.
    crawler.on_answer(&seed, 4, answer(vec![]), &keep);
    crawler.on_answer(&seed, 4, answer(vec![]), &keep);
    crawler.on_answer(&seed, 9, answer(vec![]), &keep);
    crawler.on_failure(&seed, 5);
    assert!(
        released(&drain(&mut crawler, now)).is_empty(),
        "cpl 6 pending"
    );
    // Stopped, it takes no new name.
    crawler.stop();
    let late = (0..3).map(|_| record(peer_at(&seed, 6, &mut rng)));
    crawler.on_answer(&seed, 6, answer(late.collect()), &keep);
    let actions = drain(&mut crawler, now);
    assert_eq!(released(&actions), vec![seed]);
    let result = done(actions).expect("stopped: done once nothing is in flight");
    assert_eq!(result.reachable.len(), 1);
    let reached = &result.reachable[0];
    assert_eq!(reached.reached_at, Some(addr(9)));
    assert_eq!(reached.addrs, vec![addr(9), addr(1)], "reached first");
    assert_eq!(result.not_contacted, 4 * 20);
    assert_eq!(result.stats.extra_waves, 1);
    assert_eq!((result.stats.requests, result.stats.answered), (7, 6));
}

#[test]
fn the_pace_bounds_new_peers_per_second_over_a_whole_crawl() {
    let seeds: Vec<PeerId> = (0..600).map(|_| PeerId::random()).collect();
    let config = CrawlerConfig::default();
    let (pace, burst) = (config.pace as usize, config.pace_burst as usize);
    let start = Instant::now();
    let mut crawler = Crawler::new(
        PeerId::random(),
        seeds.iter().copied().map(record),
        config,
        start,
    );
    let mut now = start;
    let mut contacts = Vec::new();
    let result = loop {
        let actions = drain(&mut crawler, now);
        for (peer, buckets) in sends(&actions) {
            contacts.push(now);
            // Every peer answers at once, naming nobody: only the pace holds the crawl back.
            for bucket in buckets {
                crawler.on_answer(&peer, bucket, answer(vec![]), &keep);
            }
        }
        if let Some(result) = done(actions) {
            break result;
        }
        // Answers unblock it at once; otherwise the pace's next token.
        if let Some(next) = crawler.next_deadline() {
            assert!(next > now, "poll did everything allowed now");
            now = next;
        }
    };
    assert_eq!(result.reachable.len(), 600);
    for (i, at) in contacts.iter().enumerate() {
        let within = contacts[i..]
            .iter()
            .take_while(|t| t.duration_since(*at) < Duration::from_secs(1))
            .count();
        assert!(within <= pace + burst, "{within} new peers within a second");
    }
    let elapsed = now.duration_since(start);
    let fastest = Duration::from_secs(1) * (600 - burst) as u32 / pace as u32;
    assert!(elapsed >= fastest, "{elapsed:?} for 600 peers at {pace}/s");
    assert!(
        elapsed <= fastest + Duration::from_millis(100),
        "{elapsed:?}"
    );
    // Once 16 peers finished at depth 0, a first wave is one request.
    assert!(
        result.stats.requests < 600 + 16 * 9,
        "{}",
        result.stats.requests
    );
}

#[test]
fn peers_and_requests_in_flight_stay_within_their_bounds() {
    let seeds: Vec<PeerId> = (0..100).map(|_| PeerId::random()).collect();
    let config = CrawlerConfig {
        pace: 1000,
        pace_burst: 1000,
        max_peers_in_flight: 7,
        max_requests_in_flight: 40,
        initial_depth: 8,
        ..Default::default()
    };
    let start = Instant::now();
    let mut crawler = Crawler::new(
        PeerId::random(),
        seeds.iter().copied().map(record),
        config,
        start,
    );
    let first = sends(&drain(&mut crawler, start));
    assert_eq!(first.len(), 4, "9 requests per peer, 40 at most in flight");
    let config = CrawlerConfig {
        max_requests_in_flight: 1000,
        ..crawler.config().clone()
    };
    let mut crawler = Crawler::new(
        PeerId::random(),
        seeds.iter().copied().map(record),
        config,
        start,
    );
    let mut now = start;
    let mut pending: VecDeque<(PeerId, Vec<usize>)> = VecDeque::new();
    let mut contacted = HashSet::new();
    while !crawler.is_finished() {
        let actions = drain(&mut crawler, now);
        for (peer, buckets) in sends(&actions) {
            contacted.insert(peer);
            pending.push_back((peer, buckets));
        }
        let progress = crawler.progress();
        assert!(progress.in_flight <= 7, "{progress:?}");
        assert!(progress.requests_in_flight <= 1000);
        // One peer answers every 100 ms; the others wait their turn.
        now += Duration::from_millis(100);
        if let Some((peer, buckets)) = pending.pop_front() {
            for bucket in buckets {
                crawler.on_answer(&peer, bucket, answer(vec![]), &keep);
            }
        }
    }
    assert_eq!(contacted.len(), 100);
    assert_eq!(crawler.stats.peak_peers_in_flight, 7);
}

#[test]
fn failures_and_timeouts_make_peers_unreachable() {
    let mut rng = StdRng::seed_from_u64(3);
    let [refused, failing, silent, partial] = [(); 4].map(|_| PeerId::random());
    let config = CrawlerConfig {
        initial_depth: 2,
        ..Default::default()
    };
    let timeout = config.request_timeout;
    let start = Instant::now();
    let seeds = [refused, failing, silent, partial].map(record);
    let mut crawler = Crawler::new(PeerId::random(), seeds, config, start);
    assert_eq!(sends(&drain(&mut crawler, start)).len(), 4);
    crawler.on_unreachable(&refused);
    for bucket in 0..=2 {
        crawler.on_failure(&failing, bucket);
    }
    crawler.on_failure(&partial, 0);
    crawler.on_failure(&partial, 2);
    let named = peer_at(&partial, 1, &mut rng);
    crawler.on_answer(&partial, 1, answer(vec![record(named)]), &keep);
    // Polled a second later: the peer it named is contacted then.
    let second = start + Duration::from_secs(1);
    let actions = drain(&mut crawler, second);
    let gone: HashSet<PeerId> = released(&actions).into_iter().collect();
    assert_eq!(
        gone,
        HashSet::from([refused, failing, partial]),
        "the silent one is still waited for"
    );
    assert_eq!(sends(&actions), vec![(named, vec![0, 1, 2])]);
    assert_eq!(crawler.next_deadline(), Some(start + timeout));
    // Just before the timeout nothing happens; at it, the silent peer is given up.
    let almost = start + timeout - Duration::from_millis(1);
    assert!(drain(&mut crawler, almost).is_empty());
    let at = start + timeout;
    assert_eq!(released(&drain(&mut crawler, at)), vec![silent]);
    // Its answer, late, is ignored.
    let found = crawler.progress().found;
    crawler.on_answer(&silent, 0, answer(vec![record(PeerId::random())]), &keep);
    assert_eq!(crawler.progress().found, found);
    assert_eq!(crawler.stats.answered, 1);
    let actions = drain(&mut crawler, second + timeout);
    assert_eq!(released(&actions), vec![named]);
    let result = done(actions).expect("nothing left");
    let reachable: Vec<PeerId> = result.reachable.iter().map(|p| p.id).collect();
    assert_eq!(reachable, vec![partial]);
    let unreachable: HashSet<PeerId> = result.unreachable.iter().map(|p| p.id).collect();
    assert_eq!(
        unreachable,
        HashSet::from([refused, failing, silent, named])
    );
    assert_eq!(result.stats.timed_out, 6, "silent's and named's requests");
    assert_eq!(result.stats.failed, 3 + 3 + 2 + 6);
    assert_eq!(result.stats.answered, 1);
}

#[test]
fn names_outside_the_range_asked_are_not_taken() {
    let mut rng = StdRng::seed_from_u64(4);
    let local = PeerId::random();
    let seed = PeerId::random();
    let config = CrawlerConfig {
        initial_depth: 3,
        ..Default::default()
    };
    let now = Instant::now();
    let mut crawler = Crawler::new(local, [record(seed)], config, now);
    drain(&mut crawler, now);
    let shallow = peer_at(&seed, 1, &mut rng);
    let deep = peer_at(&seed, 5, &mut rng);
    let in_bucket = peer_at(&seed, 3, &mut rng);
    let names = [shallow, deep, in_bucket, seed, local].map(record).to_vec();
    crawler.on_answer(&seed, 3, answer(names), &keep);
    assert_eq!(crawler.stats.out_of_range, 1);
    assert!(!crawler.peers.contains_key(&shallow));
    assert!(crawler.peers.contains_key(&deep) && crawler.peers.contains_key(&in_bucket));
    assert!(!crawler.peers.contains_key(&local), "never itself");
    assert_eq!(crawler.progress().found, 3);
}

#[test]
fn a_flood_of_fake_peers_cannot_push_past_the_bounds() {
    let mut rng = StdRng::seed_from_u64(5);
    let config = CrawlerConfig {
        pace: 1000,
        pace_burst: 100,
        max_peers: 600,
        max_queued: 200,
        initial_depth: 2,
        ..Default::default()
    };
    let bound = config.memory_bound();
    let start = Instant::now();
    let seeds: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    let mut crawler = Crawler::new(
        PeerId::random(),
        seeds.iter().copied().map(record),
        config.clone(),
        start,
    );
    // Long addresses, many per peer.
    let fat: Vec<Multiaddr> = (0..50)
        .map(|i| {
            format!("/dns4/{}.example.com/tcp/{i}", "a".repeat(200))
                .parse()
                .unwrap()
        })
        .collect();
    // 100,000 more names after the new ones: not read.
    let flood = vec![record(PeerId::random()); 100_000];
    let mut now = start;
    let mut contacted = HashSet::new();
    while !crawler.is_finished() {
        let actions = drain(&mut crawler, now);
        for (peer, buckets) in sends(&actions) {
            contacted.insert(peer);
            for bucket in buckets {
                // Fresh peers in the range asked, with long addresses, as many as read; the
                // shallow buckets only (deep keys are costly to forge here).
                let fresh = if bucket <= 1 { 21 } else { 0 };
                let mut names: Vec<PeerRecord> = (0..fresh)
                    .map(|_| PeerRecord {
                        id: peer_at(&peer, bucket, &mut rng),
                        addrs: fat.clone(),
                        connection: ConnectionType::NotConnected,
                    })
                    .collect();
                if seeds.contains(&peer) {
                    names.extend(flood.iter().cloned());
                }
                crawler.on_answer(&peer, bucket, answer(names), &keep);
            }
        }
        let progress = crawler.progress();
        assert!(
            progress.found <= 600 && progress.queued <= 200,
            "{progress:?}"
        );
        assert!(progress.memory <= bound, "{} > {bound}", progress.memory);
        for entry in crawler.peers.values() {
            assert!(entry.addrs.len() <= 8);
            assert!(entry.addrs.iter().map(|a| a.len()).sum::<usize>() <= 512);
        }
        now += Duration::from_millis(10);
    }
    assert!(contacted.len() <= 600, "never dials more than max_peers");
    let stats = crawler.stats;
    assert!(stats.dropped > 0, "{stats:?}");
    assert!(stats.named + stats.out_of_range <= stats.answered * 21);
}

#[test]
fn progress_counts_add_up_whatever_the_outcomes() {
    for seed in 0..4 {
        let mut rng = StdRng::seed_from_u64(seed);
        let pool: Vec<PeerId> = (0..300).map(|_| PeerId::random()).collect();
        let config = CrawlerConfig {
            pace: 200,
            max_peers: 250,
            initial_depth: 2,
            ..Default::default()
        };
        let start = Instant::now();
        let mut crawler = Crawler::new(
            PeerId::random(),
            pool[..3].iter().copied().map(record),
            config,
            start,
        );
        let mut now = start;
        let mut waiting: Vec<(PeerId, usize)> = Vec::new();
        let mut releases = 0;
        let mut last_found = 0;
        let result = loop {
            let actions = drain(&mut crawler, now);
            releases += released(&actions).len();
            for (peer, buckets) in sends(&actions) {
                waiting.extend(buckets.into_iter().map(|b| (peer, b)));
            }
            let p = crawler.progress();
            assert_eq!(p.found, p.queued + p.contacted(), "{p:?}");
            assert_eq!(p.requests_in_flight, crawler.requests_in_flight);
            let s = crawler.stats;
            let settled = s.answered + s.failed;
            assert_eq!(s.requests, settled + p.requests_in_flight as u64, "{s:?}");
            if let Some(result) = done(actions) {
                break result;
            }
            // Settle some requests in random order and ways; others are left to time out.
            for _ in 0..rng.random_range(0..=waiting.len().min(12)) {
                let (peer, bucket) = waiting.swap_remove(rng.random_range(0..waiting.len()));
                match rng.random_range(0..4) {
                    0 => crawler.on_failure(&peer, bucket),
                    1 => crawler.on_unreachable(&peer),
                    _ => {
                        let names = (0..rng.random_range(0..25))
                            .map(|_| record(pool[rng.random_range(0..pool.len())]));
                        crawler.on_answer(&peer, bucket, answer(names.collect()), &keep);
                    }
                }
            }
            now += Duration::from_millis(rng.random_range(1..400));
            last_found = crawler.progress().found;
        };
        let total = result.reachable.len() + result.unreachable.len() + result.not_contacted;
        assert_eq!(total, last_found);
        assert_eq!(releases, result.reachable.len() + result.unreachable.len());
        assert!(total <= 250);
    }
}

#[test]
fn a_new_crawl_starts_from_the_previous_result_at_its_depth() {
    let mut rng = StdRng::seed_from_u64(6);
    let local = PeerId::random();
    let seeds: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
    let config = CrawlerConfig {
        pace: 1000,
        pace_burst: 1000,
        initial_depth: 6,
        max_peers_in_flight: 1,
        ..Default::default()
    };
    let start = Instant::now();
    let mut crawler = Crawler::new(
        local,
        seeds.iter().copied().map(record),
        config.clone(),
        start,
    );
    // Every peer is complete at cpl 2 (full buckets 0 and 1), and one address reached it.
    let mut now = start;
    let mut first_waves = Vec::new();
    let result = loop {
        let actions = drain(&mut crawler, now);
        for (peer, buckets) in sends(&actions) {
            first_waves.push(buckets.len());
            crawler.on_connected(&peer, addr(2));
            for bucket in buckets {
                let count = if bucket < 2 { 20 } else { 0 };
                let names = (0..count).map(|_| record(peer_at(&peer, bucket, &mut rng)));
                // Names beyond the seeds are not worth dialling here.
                crawler.on_answer(&peer, bucket, answer(names.collect()), &|_, _| vec![]);
            }
        }
        if let Some(result) = done(actions) {
            break result;
        }
        now += Duration::from_millis(10);
    };
    assert_eq!(result.reachable.len(), 40);
    assert!(first_waves[..16].iter().all(|n| *n == 7), "{first_waves:?}");
    assert!(
        first_waves[16..].iter().all(|n| *n == 3),
        "measured depth 2"
    );
    let config = CrawlerConfig {
        max_peers_in_flight: 256,
        ..config
    };
    let mut next = Crawler::from_previous(local, &result, [], config, now);
    let actions = drain(&mut next, now);
    let sent = sends(&actions);
    assert_eq!(sent.len(), 40);
    assert!(
        sent.iter().all(|(_, b)| b.len() == 3),
        "the depth carried over"
    );
    let first_addrs: HashMap<PeerId, Vec<Multiaddr>> = actions
        .iter()
        .filter_map(|a| match a {
            CrawlAction::Send { peer, addrs, .. } => Some((*peer, addrs.clone())),
            _ => None,
        })
        .collect();
    assert!(
        first_addrs.values().all(|a| a[0] == addr(2)),
        "reached first"
    );
}

#[test]
fn an_empty_crawl_is_done_at_once_and_then_quiet() {
    let local = PeerId::random();
    let now = Instant::now();
    let mut crawler = Crawler::new(local, [record(local)], CrawlerConfig::default(), now);
    let result = done(drain(&mut crawler, now)).expect("nothing to crawl");
    assert!(result.reachable.is_empty() && result.unreachable.is_empty());
    assert!(crawler.is_finished());
    assert_eq!(crawler.poll(now), None);
    assert_eq!(crawler.next_deadline(), None);
}

#[test]
fn the_reached_address_comes_first_within_the_caps() {
    let seed = PeerId::random();
    let config = CrawlerConfig {
        max_addresses_per_peer: 3,
        ..Default::default()
    };
    let now = Instant::now();
    let seed_record = PeerRecord {
        id: seed,
        addrs: (1..=5).map(addr).collect(),
        connection: ConnectionType::NotConnected,
    };
    let mut crawler = Crawler::new(PeerId::random(), [seed_record], config, now);
    let actions = drain(&mut crawler, now);
    let CrawlAction::Send { addrs, .. } = &actions[0] else {
        panic!("contacted")
    };
    assert_eq!(addrs, &vec![addr(1), addr(2), addr(3)], "capped");
    crawler.on_connected(&seed, addr(7));
    crawler.on_connected(&seed, addr(8));
    assert_eq!(crawler.peers[&seed].addrs, vec![addr(7), addr(1), addr(2)]);
    assert_eq!(crawler.address_count, 3);
    assert_eq!(crawler.address_bytes, 3 * addr(1).len());
}

#[test]
fn the_documented_memory_figures_hold() {
    let mb = |bytes: usize| bytes as f64 / 1e6;
    let bound = mb(CrawlerConfig::default().memory_bound());
    assert!(
        (180.0..190.0).contains(&bound),
        "the module docs say 185 MB: {bound}"
    );
    // 100,000 peers with four 30-byte addresses each.
    let typical = mb(100_000 * (PEER_BYTES + 4 * (ADDRESS_BYTES + 30)));
    assert!(
        (105.0..115.0).contains(&typical),
        "the module docs say 110 MB: {typical}"
    );
}

#[test]
fn every_key_lands_in_its_bucket_whether_kept_or_drawn() {
    let seeds: Vec<PeerId> = (0..400).map(|_| PeerId::random()).collect();
    let config = CrawlerConfig {
        pace: 1000,
        pace_burst: 1000,
        max_peers_in_flight: 1000,
        max_requests_in_flight: 10_000,
        ..Default::default()
    };
    let now = Instant::now();
    let mut crawler = Crawler::new(
        PeerId::random(),
        seeds.iter().copied().map(record),
        config,
        now,
    );
    let actions = drain(&mut crawler, now);
    let mut requests = 0;
    for action in &actions {
        let CrawlAction::Send {
            peer,
            requests: sent,
            ..
        } = action
        else {
            continue;
        };
        for request in sent {
            let Request::FindNode { key } = &request.request else {
                panic!("FIND_NODE")
            };
            let cpl = Key::new(key).common_prefix_len(&Key::from_peer(peer));
            assert_eq!(cpl, request.bucket);
            requests += 1;
        }
    }
    assert_eq!(requests, 400 * 9);
    // 400 peers share their first few bits: most keys to cpl 5 were kept, not drawn.
    assert!(crawler.targets.by_prefix.len() < 400 * 9 / 2);
}
