use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::network::message::{ConnectionType, Request, Response};
use crate::network::OutboundRequestId;
use crate::routing::lookup::{Lookup, LookupConfig};
use crate::routing::query::tests::sent;
use crate::routing::query::{Operation, PoolAction, QueryPool};
use crate::routing::{QueryId, QueryResult};
use crate::server::Validators;

fn record(id: PeerId) -> PeerRecord {
    PeerRecord {
        id,
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        connection: ConnectionType::NotConnected,
    }
}

/// A peer id from a seeded generator: every test sees the same network on every run.
fn peer(rng: &mut StdRng) -> PeerId {
    let mut digest = [0u8; 32];
    rng.fill_bytes(&mut digest);
    PeerId::from_multihash(libp2p::multihash::Multihash::wrap(0x12, &digest).unwrap()).unwrap()
}

/// `n` peers sorted by distance to `target`, with their normalised distances.
fn peers_around(target: &Key, n: usize, rng: &mut StdRng) -> Vec<(PeerRecord, f64)> {
    let mut peers: Vec<(PeerRecord, f64)> = (0..n)
        .map(|_| {
            let id = peer(rng);
            let d = normalized(&Key::from_peer(&id).distance(target));
            (record(id), d)
        })
        .collect();
    peers.sort_by(|a, b| a.1.total_cmp(&b.1));
    peers
}

#[test]
fn ln_gamma_matches_factorials() {
    let mut factorial = 1.0f64;
    for n in 1..30u32 {
        // Gamma(n + 1) = n!
        factorial *= n as f64;
        let error = (ln_gamma(n as f64 + 1.0) - factorial.ln()).abs();
        assert!(error < 1e-10, "n = {n}: {error}");
    }
    // Gamma(1/2) = sqrt(pi).
    let half = ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln();
    assert!(half.abs() < 1e-10);
}

#[test]
fn gamma_cdf_matches_the_poisson_sum_for_integer_shapes() {
    // P(n, x) = 1 - e^-x sum_{j < n} x^j / j!
    for n in [1u32, 2, 5, 11, 20, 40] {
        for x in [0.5, 3.0, 10.0, 14.5, 25.0, 60.0] {
            let mut term = 1.0;
            let mut sum = 0.0;
            for j in 0..n {
                if j > 0 {
                    term *= x / j as f64;
                }
                sum += term;
            }
            let exact = 1.0 - (-x).exp() * sum;
            let ours = gamma_cdf(n as f64, x);
            assert!(
                (ours - exact).abs() < 1e-9,
                "P({n}, {x}) = {ours}, not {exact}"
            );
        }
    }
}

#[test]
fn go_thresholds_for_k_20() {
    // The 10% quantile of Gamma(20) and the 90% quantile of Gamma(11).
    assert!((gamma_quantile(20.0, 0.1) - 14.5253).abs() < 1e-3);
    assert!((gamma_quantile(11.0, 0.9) - 15.4066).abs() < 1e-3);
    // Exponential: -ln(1 - p).
    assert!((gamma_quantile(1.0, 0.5) - std::f64::consts::LN_2).abs() < 1e-9);
    let plan = Plan::new(10_000.0, 20);
    assert!((plan.peer_threshold * 10_000.0 - 14.5253).abs() < 1e-3);
    assert!((plan.set_threshold * 10_000.0 - 15.4066).abs() < 1e-3);
    assert_eq!(plan.report_after, 15);
    assert_eq!(Plan::new(1_000.0, 3).report_after, 3);
}

#[test]
fn a_peer_close_enough_is_written_at_once_and_only_once() {
    let target = Key::new(b"key");
    let others = 5_000.0;
    let plan = Plan::new(others, 20);
    let mut writes = Writes::optimistic(plan);
    let peers = peers_around(&target, 400, &mut StdRng::seed_from_u64(1));
    // Pick one peer inside the threshold and one well outside it (the 400 are spread over
    // the whole keyspace, so most are far).
    let (near, _) = peers[0].clone();
    let (far, _) = peers
        .iter()
        .find(|(_, d)| *d > plan.peer_threshold * 3.0)
        .cloned()
        .unwrap();
    // A set of two, one far peer first: the far one is not written.
    let far_only = writes.on_answer(far.id, &target, std::slice::from_ref(&far));
    assert!(far_only.is_empty());
    // Fake the near peer's distance by giving a target it is close to.
    let near_target = Key::from_peer(&near.id);
    let now = writes.on_answer(near.id, &near_target, &[near.clone(), far.clone()]);
    assert_eq!(
        now.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![near.id],
        "the near one only"
    );
    assert!(writes.awaits(&near.id));
    assert!(writes
        .on_answer(near.id, &near_target, &[near.clone(), far.clone()])
        .is_empty());
    // The lookup ends with both: only the far one is new.
    let rest = writes.on_walk_end(&[near.clone(), far.clone()]);
    assert_eq!(rest.iter().map(|p| p.id).collect::<Vec<_>>(), vec![far.id]);
    assert!(writes
        .on_answer(far.id, &near_target, std::slice::from_ref(&far))
        .is_empty());
}

/// Every peer of `closest` answers, in turn.
fn answer_each(writes: &mut Writes, target: &Key, closest: &[PeerRecord]) -> Vec<PeerRecord> {
    closest
        .iter()
        .flat_map(|p| writes.on_answer(p.id, target, closest))
        .collect()
}

#[test]
fn only_peers_that_answered_are_written_early() {
    // With go's finish rule the lookup's result holds peers not asked yet: however close,
    // they get no early write (their lookup answer could be taken for the write's outcome).
    let target = Key::new(b"key");
    let peers = peers_around(&target, 1_000, &mut StdRng::seed_from_u64(6));
    let closest: Vec<PeerRecord> = peers.iter().take(3).map(|(p, _)| p.clone()).collect();
    let mut writes = Writes::optimistic(Plan::new(999.0, 20));
    let now = writes.on_answer(closest[1].id, &target, &closest);
    assert_eq!(
        now.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![closest[1].id]
    );
    let now = writes.on_answer(closest[0].id, &target, &closest);
    assert_eq!(
        now.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![closest[0].id]
    );
}

#[test]
fn a_set_close_enough_is_written_whole() {
    let target = Key::new(b"key");
    let k = 20;
    // 2,000 peers, of which the lookup has heard the 20 closest: their mean distance is about
    // 10.5 / 2,000, under the set threshold of 15.4 / 2,000 but most of them past the peer
    // threshold of 14.5 / 2,000.
    let peers = peers_around(&target, 2_000, &mut StdRng::seed_from_u64(2));
    let closest: Vec<PeerRecord> = peers.iter().take(k).map(|(p, _)| p.clone()).collect();
    let mut writes = Writes::optimistic(Plan::new(1_999.0, k));
    // 19 of them: no set yet, only the individually close ones.
    let some = answer_each(&mut writes, &target, &closest[..k - 1]);
    assert!(some.len() < k - 1);
    let all = writes.on_answer(closest[k - 1].id, &target, &closest);
    assert_eq!(some.len() + all.len(), k, "the rest of the set at once");

    // A set far out (every 50th peer) is not close enough: nothing but the close ones.
    let sparse: Vec<PeerRecord> = peers.iter().step_by(50).map(|(p, _)| p.clone()).collect();
    let mut writes = Writes::optimistic(Plan::new(1_999.0, k));
    let now = answer_each(&mut writes, &target, &sparse[..k]);
    assert!(now.len() <= 1, "{}", now.len());
}

#[test]
fn the_result_is_ready_at_15_stored_and_the_quorum() {
    let mut writes = Writes::optimistic(Plan::new(1_000.0, 20));
    let mut rng = StdRng::seed_from_u64(3);
    let peers: Vec<PeerRecord> = (0..20).map(|_| record(peer(&mut rng))).collect();
    let sent = writes.on_walk_end(&peers);
    assert_eq!(sent.len(), 20);
    for (i, peer) in peers.iter().enumerate() {
        assert!(!writes.ready_to_report(1), "ready after {i}");
        // Failures do not count.
        writes.on_outcome(&peer.id, i % 4 != 3);
        if writes.succeeded() == 15 {
            break;
        }
    }
    assert_eq!(writes.succeeded(), 15);
    assert!(writes.ready_to_report(1));
    assert!(!writes.ready_to_report(16), "a quorum of 16 is not met");
    writes.mark_reported();
    assert!(!writes.ready_to_report(1), "reported once");

    // Without a plan: never early.
    let mut plain = Writes::default();
    plain.on_walk_end(&peers);
    for peer in &peers[..19] {
        plain.on_outcome(&peer.id, true);
    }
    assert!(!plain.ready_to_report(1));
    assert!(plain
        .on_answer(peers[0].id, &Key::new(b"x"), &peers)
        .is_empty());
    assert_eq!(
        plain.summary(&peers[..10]),
        WritesSummary {
            stored: 19,
            failed: 1,
            closest: 10,
            stored_at_closest: 10,
        }
    );
}

/// Every peer counts as connected.
fn all_connected(_: &PeerId) -> bool {
    true
}

fn keep_all(_: &PeerId, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs
}

/// A pool whose estimator knows the network of `peers`: fed with perfect lookups in it.
fn pool_knowing(peers: &[PeerId], local: &Key, now: Instant) -> QueryPool {
    let mut pool = QueryPool::default();
    let points: Vec<Key> = peers.iter().map(Key::from_peer).collect();
    for i in 0..20u32 {
        let target = Key::new(&i.to_be_bytes());
        let mut closest = points.clone();
        closest.sort_by_key(|p| p.distance(&target));
        pool.track_network_size(local, &target, &closest[..20], 20, 20, now);
    }
    pool
}

#[test]
fn optimistic_provide_in_the_pool_reports_at_15_and_settles_later() {
    let validators = Validators::default();
    let mut rng = StdRng::seed_from_u64(4);
    let local = peer(&mut rng);
    let start = Instant::now();
    let key = b"provided".to_vec();
    let target = Key::new(&key);
    // 60 peers; the estimator knows the size.
    let mut peers: Vec<PeerId> = (0..60).map(|_| peer(&mut rng)).collect();
    peers.sort_by_key(|p| Key::from_peer(p).distance(&target));
    let mut pool = pool_knowing(&peers, &Key::from_peer(&local), start);
    let config = LookupConfig {
        alpha: 20,
        ..LookupConfig::default()
    };
    // Seeded with all of them; each answers with nothing new.
    let lookup = Lookup::new(target, local, peers.iter().map(|p| record(*p)), config);
    let kind = Operation::Provide {
        provider: record(local),
    };
    let id = pool.start(key, kind, lookup, Duration::from_secs(60), start);
    assert!(pool.write_optimistically(id, start));
    let mut next = 0u64;
    let actions = pool.poll(start, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    assert_eq!(
        asked.len(),
        20,
        "the 20 closest seeds are asked (the lookup's k)"
    );
    // The closest stays silent, so the lookup cannot end; the next 19 answer, and the lookup
    // asks 19 more (it is still widening), which answer too. The writes go out as the
    // answers come, before the lookup ends.
    let mut writes = Vec::new();
    let mut by_peer: std::collections::HashMap<PeerId, OutboundRequestId> =
        asked.iter().map(|(r, p, _)| (*p, *r)).collect();
    let answer = || {
        Ok(Some(Response::FindNode {
            closer_peers: vec![],
        }))
    };
    let mut walked = false;
    for peer in &peers[1..20] {
        let actions = pool.on_result(by_peer[peer], answer(), start, &validators, &keep_all);
        walked |= actions
            .iter()
            .any(|a| matches!(a, PoolAction::Walked { .. }));
        writes.extend(sent(&mut pool, actions, &mut next));
    }
    let actions = pool.poll(start, &validators, &all_connected);
    let more = sent(&mut pool, actions, &mut next);
    assert_eq!(more.len(), 19, "widening: the next 19");
    by_peer.extend(more.iter().map(|(r, p, _)| (*p, *r)));
    for peer in &peers[20..39] {
        let actions = pool.on_result(by_peer[peer], answer(), start, &validators, &keep_all);
        walked |= actions
            .iter()
            .any(|a| matches!(a, PoolAction::Walked { .. }));
        writes.extend(sent(&mut pool, actions, &mut next));
    }
    assert!(!walked, "the lookup is not over");
    assert!(
        writes.len() >= 15,
        "{} written during the lookup",
        writes.len()
    );
    assert!(writes
        .iter()
        .all(|(_, _, r)| matches!(r, Request::AddProvider { .. })));
    let written: std::collections::HashSet<PeerId> = writes.iter().map(|w| w.1).collect();
    assert_eq!(written.len(), writes.len(), "no peer written twice");
    // 14 writes succeed: not yet.
    for (rid, _, _) in &writes[..14] {
        pool.on_result(*rid, Ok(None), start, &validators, &keep_all);
    }
    let actions = pool.poll(start, &validators, &all_connected);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, PoolAction::Finished(..))));
    // The 15th: the result, with the count so far.
    pool.on_result(writes[14].0, Ok(None), start, &validators, &keep_all);
    let later = start + Duration::from_millis(300);
    let actions = pool.poll(later, &validators, &all_connected);
    let finished: Vec<&QueryResult> = actions
        .iter()
        .filter_map(|a| match a {
            PoolAction::Finished(q, r, _) if *q == id => Some(r),
            _ => None,
        })
        .collect();
    assert!(matches!(
        &finished[..],
        [QueryResult::Provide { result: Ok(15), .. }]
    ));
    assert_eq!(pool.len(), 1, "the rest goes on");

    // The silent peer fails (its request times out): the lookup ends, the closest not
    // written yet are written, and once every write is in, the summary.
    let end = start + Duration::from_secs(11);
    let timeout = Err(crate::network::RequestError::Timeout);
    pool.on_result(by_peer[&peers[0]], timeout, end, &validators, &keep_all);
    let actions = pool.poll(end, &validators, &all_connected);
    let rest = sent(&mut pool, actions, &mut next);
    assert!(rest.iter().all(|(_, p, _)| !written.contains(p)));
    for (rid, _, _) in writes[15..].iter().chain(rest.iter()) {
        pool.on_result(*rid, Ok(None), end, &validators, &keep_all);
    }
    let actions = pool.poll(end, &validators, &all_connected);
    let settled: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            PoolAction::WritesSettled(q, summary, _) if *q == id => Some(*summary),
            _ => None,
        })
        .collect();
    assert_eq!(settled.len(), 1);
    let summary = settled[0];
    assert_eq!(summary.stored, writes.len() + rest.len());
    assert_eq!(summary.failed, 0);
    assert_eq!(summary.closest, 20, "the 20 closest that answered");
    assert_eq!(summary.stored_at_closest, 20);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, PoolAction::Finished(..))));
    assert_eq!(pool.len(), 0);
}

#[test]
fn without_an_estimate_writes_wait_for_the_lookup_and_each_other() {
    let validators = Validators::default();
    let mut rng = StdRng::seed_from_u64(5);
    let local = peer(&mut rng);
    let now = Instant::now();
    let key = b"k".to_vec();
    let peers: Vec<PeerId> = (0..25).map(|_| peer(&mut rng)).collect();
    // Four samples: one short of an estimate.
    let mut pool = QueryPool::default();
    for i in 0..4u32 {
        let target = Key::new(&i.to_be_bytes());
        let mut closest: Vec<Key> = peers.iter().map(Key::from_peer).collect();
        closest.sort_by_key(|p| p.distance(&target));
        pool.track_network_size(&Key::from_peer(&local), &target, &closest, 20, 20, now);
    }
    assert!(pool.network_size(now).is_err());
    let lookup = Lookup::new(
        Key::new(&key),
        local,
        peers.iter().map(|p| record(*p)),
        LookupConfig::default(),
    );
    let kind = Operation::Provide {
        provider: record(local),
    };
    let id: QueryId = pool.start(key, kind, lookup, Duration::from_secs(60), now);
    assert!(!pool.write_optimistically(id, now), "no estimate");
    let mut next = 0u64;
    let mut pending: Vec<(OutboundRequestId, Request)> = Vec::new();
    let mut writes_before_walk = 0;
    let mut walked = false;
    let mut finished = None;
    for _ in 0..100 {
        for action in pool.poll(now, &validators, &all_connected) {
            match action {
                PoolAction::Send {
                    query,
                    peer,
                    request,
                    ..
                } => {
                    let rid = OutboundRequestId(next);
                    next += 1;
                    pool.on_sent(rid, query, peer);
                    if matches!(request, Request::AddProvider { .. }) && !walked {
                        writes_before_walk += 1;
                    }
                    pending.push((rid, request));
                }
                PoolAction::Walked { .. } => walked = true,
                PoolAction::Finished(q, result, _) if q == id => finished = Some(result),
                _ => {}
            }
        }
        if finished.is_some() {
            break;
        }
        // Answer everything in flight; the writes one by one, checking none is early.
        let mut actions = Vec::new();
        for (rid, request) in pending.drain(..) {
            let answer = match request {
                Request::AddProvider { .. } => Ok(None),
                _ => Ok(Some(Response::FindNode {
                    closer_peers: vec![],
                })),
            };
            actions.extend(pool.on_result(rid, answer, now, &validators, &keep_all));
        }
        assert!(actions.is_empty());
    }
    assert!(walked);
    assert_eq!(writes_before_walk, 0);
    assert!(
        matches!(finished, Some(QueryResult::Provide { result: Ok(20), .. })),
        "all 20 writes counted"
    );
}

#[test]
fn a_lookup_answer_is_not_taken_for_a_write_to_the_same_peer() {
    // go's finish rule ends the lookup while peers of its result are still being asked; they
    // are written to at once. Their FIND_NODE answers, arriving after, are not ADD_PROVIDERs
    // that succeeded.
    use crate::routing::lookup::LookupFinish;
    let validators = Validators::default();
    let mut rng = StdRng::seed_from_u64(7);
    let local = peer(&mut rng);
    let now = Instant::now();
    let key = b"k".to_vec();
    let target = Key::new(&key);
    let mut peers: Vec<PeerId> = (0..5).map(|_| peer(&mut rng)).collect();
    peers.sort_by_key(|p| Key::from_peer(p).distance(&target));
    let config = LookupConfig {
        k: 3,
        beta: 1,
        finish: LookupFinish::BetaAnswered,
        ..LookupConfig::default()
    };
    let lookup = Lookup::new(target, local, peers.iter().map(|p| record(*p)), config);
    let kind = Operation::Provide {
        provider: record(local),
    };
    let mut pool = QueryPool::default();
    let id = pool.start(key, kind, lookup, Duration::from_secs(60), now);
    let mut next = 0u64;
    let mut sent = Vec::new();
    let mut send = |pool: &mut QueryPool, actions: Vec<PoolAction>, sent: &mut Vec<_>| {
        let mut finished = None;
        for action in actions {
            match action {
                PoolAction::Send {
                    query,
                    peer,
                    request,
                    ..
                } => {
                    pool.on_sent(OutboundRequestId(next), query, peer);
                    sent.push((OutboundRequestId(next), peer, request));
                    next += 1;
                }
                PoolAction::Finished(q, result, _) if q == id => finished = Some(result),
                _ => {}
            }
        }
        finished
    };
    let actions = pool.poll(now, &validators, &all_connected);
    assert_eq!(send(&mut pool, actions, &mut sent), None);
    let lookups: Vec<(OutboundRequestId, PeerId)> = sent.iter().map(|(r, p, _)| (*r, *p)).collect();
    // The closest answers: converged; the result is the 3 closest, two still asked.
    let answer = || {
        Ok(Some(Response::FindNode {
            closer_peers: vec![],
        }))
    };
    pool.on_result(lookups[0].0, answer(), now, &validators, &keep_all);
    let actions = pool.poll(now, &validators, &all_connected);
    assert_eq!(send(&mut pool, actions, &mut sent), None);
    let writes: Vec<(OutboundRequestId, PeerId)> = sent
        .iter()
        .filter(|(_, _, r)| matches!(r, Request::AddProvider { .. }))
        .map(|(r, p, _)| (*r, *p))
        .collect();
    assert_eq!(writes.len(), 3);
    // The two pending FIND_NODEs answer: no write counted, nothing finished.
    for (rid, peer) in &lookups[1..3] {
        assert!(writes.iter().any(|(_, p)| p == peer));
        pool.on_result(*rid, answer(), now, &validators, &keep_all);
    }
    let actions = pool.poll(now, &validators, &all_connected);
    assert_eq!(
        send(&mut pool, actions, &mut sent),
        None,
        "the writes are still pending"
    );
    // Two writes go through, one fails: two stored.
    pool.on_result(writes[0].0, Ok(None), now, &validators, &keep_all);
    pool.on_result(writes[1].0, Ok(None), now, &validators, &keep_all);
    let failed = Err(crate::network::RequestError::Timeout);
    pool.on_result(writes[2].0, failed, now, &validators, &keep_all);
    let actions = pool.poll(now, &validators, &all_connected);
    assert!(matches!(
        send(&mut pool, actions, &mut sent),
        Some(QueryResult::Provide { result: Ok(2), .. })
    ));
}
