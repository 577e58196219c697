use std::time::{Duration, Instant};

use libp2p::PeerId;

use super::*;
use crate::key::Key;
use crate::network::message::ConnectionType;
use crate::routing::lookup::LookupConfig;
use crate::routing::QueryFailure;

fn record(id: PeerId) -> PeerRecord {
    PeerRecord {
        id,
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        connection: ConnectionType::NotConnected,
    }
}

/// Every peer counts as connected: no dial budget spent.
fn all_connected(_: &PeerId) -> bool {
    true
}

/// Keeps every address as given.
fn keep_all(_: &PeerId, addrs: Vec<Multiaddr>) -> Vec<Multiaddr> {
    addrs
}

fn pk() -> Record {
    Record::public_key(&libp2p::identity::Keypair::generate_ed25519().public())
}

fn start(
    pool: &mut QueryPool,
    key: &[u8],
    kind: Operation,
    peers: &[PeerId],
    now: Instant,
) -> QueryId {
    let lookup = Lookup::new(
        Key::new(key),
        PeerId::random(),
        peers.iter().map(|p| record(*p)),
        LookupConfig::default(),
    );
    pool.start(key.to_vec(), kind, lookup, Duration::from_secs(60), now)
}

/// Sends what the pool asks, with made-up request ids; returns (id, peer, request).
pub(in crate::routing) fn sent(
    pool: &mut QueryPool,
    actions: Vec<PoolAction>,
    next: &mut u64,
) -> Vec<(OutboundRequestId, PeerId, Request)> {
    let mut out = Vec::new();
    for action in actions {
        if let PoolAction::Send {
            query,
            peer,
            request,
            ..
        } = action
        {
            let id = OutboundRequestId(*next);
            *next += 1;
            pool.on_sent(id, query, peer);
            out.push((id, peer, request));
        }
    }
    out
}

#[test]
fn fan_out_goes_out_in_the_poll_that_ends_the_lookup() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let peers = [PeerId::random(), PeerId::random()];
    let record = pk();
    let kind = Operation::PutValue {
        record: record.clone(),
        quorum: 1,
    };
    start(&mut pool, &record.key, kind, &peers, now);
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let lookups = sent(&mut pool, actions, &mut next);
    assert_eq!(lookups.len(), 2);
    for (id, _, _) in &lookups {
        let answer = Ok(Some(Response::FindNode {
            closer_peers: vec![],
        }));
        pool.on_result(*id, answer, now, &validators, &keep_all);
    }
    let actions = pool.poll(now, &validators, &all_connected);
    let puts = sent(&mut pool, actions, &mut next);
    assert_eq!(puts.len(), 2, "the PUT_VALUEs leave at once");
    assert!(puts
        .iter()
        .all(|(_, _, r)| matches!(r, Request::PutValue { .. })));

    // One stores, the other never answers: at the deadline, the store that happened counts.
    let echo = Ok(Some(Response::PutValue {
        record: record.clone(),
    }));
    pool.on_result(puts[0].0, echo, now, &validators, &keep_all);
    let actions = pool.poll(now + Duration::from_secs(61), &validators, &all_connected);
    let finished: Vec<_> = actions
        .into_iter()
        .filter_map(|a| match a {
            PoolAction::Finished(_, result, _) => Some(result),
            _ => None,
        })
        .collect();
    assert!(matches!(
        &finished[..],
        [QueryResult::PutValue { result: Ok(1), .. }]
    ));
    // The request left pending is an orphan: its outcome is swallowed, not reported.
    assert!(pool.owns(&puts[1].0));
    assert!(pool
        .on_result(
            puts[1].0,
            Err(RequestError::Timeout),
            now,
            &validators,
            &keep_all
        )
        .is_empty());
    assert!(!pool.owns(&puts[1].0), "forgotten once its outcome arrived");
}

#[test]
fn requests_of_a_query_ended_by_its_quorum_stay_owned() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let peers = [PeerId::random(), PeerId::random(), PeerId::random()];
    let record = pk();
    let kind = Operation::GetValue {
        quorum: Some(1),
        records: vec![],
        without: vec![],
    };
    let query = start(&mut pool, &record.key, kind, &peers, now);
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    assert_eq!(asked.len(), 3);
    let answer = Ok(Some(Response::GetValue {
        record: Some(record.clone()),
        closer_peers: vec![],
    }));
    let actions = pool.on_result(asked[0].0, answer, now, &validators, &keep_all);
    assert!(actions
        .iter()
        .any(|a| matches!(a, PoolAction::Progress(..))));
    let actions = pool.poll(now, &validators, &all_connected);
    assert!(actions.iter().any(
        |a| matches!(a, PoolAction::Finished(q, QueryResult::GetValue { result: Ok(_), .. }, _) if *q == query)
    ));
    // The other two were still in flight: owned, swallowed.
    for (id, _, _) in &asked[1..] {
        assert!(pool.owns(id));
        assert!(pool
            .on_result(*id, Ok(None), now, &validators, &keep_all)
            .is_empty());
    }
    // A request sent for the ended query (entry correction) is owned too.
    pool.on_sent(OutboundRequestId(99), query, peers[0]);
    assert!(pool.owns(&OutboundRequestId(99)));
    assert_eq!(pool.len(), 0);
}

#[test]
fn a_hostile_provider_flood_is_bounded_by_the_limit() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let peer = PeerId::random();
    let kind = Operation::GetProviders {
        limit: Some(10),
        seen: Default::default(),
        found: Vec::new(),
    };
    start(&mut pool, b"key", kind, &[peer], now);
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    let flood: Vec<PeerRecord> = (0..10_000).map(|_| record(PeerId::random())).collect();
    let answer = Ok(Some(Response::GetProviders {
        providers: flood,
        closer_peers: vec![],
    }));
    let actions = pool.on_result(asked[0].0, answer, now, &validators, &keep_all);
    let reported: usize = actions
        .iter()
        .map(|a| match a {
            PoolAction::Progress(_, QueryProgress::ProvidersFound(p)) => p.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(reported, 10);
    let actions = pool.poll(now, &validators, &all_connected);
    assert!(actions.iter().any(|a| matches!(
        a,
        PoolAction::Finished(_, QueryResult::FindProviders { result: Ok(p), .. }, _) if p.len() == 10
    )));
}

#[test]
fn get_value_corrects_the_closest_peers_without_the_record() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let peers = [PeerId::random(), PeerId::random()];
    let record = pk();
    let kind = Operation::GetValue {
        quorum: None,
        records: vec![],
        without: vec![],
    };
    start(&mut pool, &record.key, kind, &peers, now);
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    let with = Ok(Some(Response::GetValue {
        record: Some(record.clone()),
        closer_peers: vec![],
    }));
    let without = Ok(Some(Response::GetValue {
        record: None,
        closer_peers: vec![],
    }));
    pool.on_result(asked[0].0, with, now, &validators, &keep_all);
    pool.on_result(asked[1].0, without, now, &validators, &keep_all);
    let actions = pool.poll(now, &validators, &all_connected);
    let corrected: Vec<PeerId> = actions
        .iter()
        .filter_map(|a| match a {
            PoolAction::Send {
                peer,
                request: Request::PutValue { record: r },
                ..
            } if r.value == record.value => Some(*peer),
            _ => None,
        })
        .collect();
    assert_eq!(
        corrected,
        vec![asked[1].1],
        "only the peer without the record"
    );
    assert!(actions.iter().any(|a| matches!(
        a,
        PoolAction::Finished(_, QueryResult::GetValue { result: Ok(_), .. }, _)
    )));
}

#[test]
fn a_lookup_dials_at_most_its_budget_of_new_peers() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let seed = PeerId::random();
    let config = LookupConfig {
        max_dials: 3,
        ..LookupConfig::default()
    };
    let lookup = Lookup::new(
        Key::new(b"budget"),
        PeerId::random(),
        [record(seed)],
        config,
    );
    pool.start(
        b"budget".to_vec(),
        Operation::ClosestPeers,
        lookup,
        Duration::from_secs(60),
        now,
    );
    // Only the seed is connected; its answer names 20 peers nobody is connected to.
    let connected = |p: &PeerId| *p == seed;
    let mut next = 0;
    let actions = pool.poll(now, &validators, &connected);
    let asked = sent(&mut pool, actions, &mut next);
    assert_eq!(asked.len(), 1);
    let strangers: Vec<PeerRecord> = (0..20).map(|_| record(PeerId::random())).collect();
    let answer = Ok(Some(Response::FindNode {
        closer_peers: strangers,
    }));
    pool.on_result(asked[0].0, answer, now, &validators, &keep_all);
    let actions = pool.poll(now, &validators, &connected);
    let dialled = sent(&mut pool, actions, &mut next);
    assert_eq!(dialled.len(), 3, "three dials, the others count as failed");
    for (id, _, _) in dialled {
        pool.on_result(id, Err(RequestError::Timeout), now, &validators, &keep_all);
    }
    let actions = pool.poll(now, &validators, &connected);
    assert!(!actions.iter().any(|a| matches!(a, PoolAction::Send { .. })));
    assert!(actions
        .iter()
        .any(|a| matches!(a, PoolAction::Finished(_, QueryResult::ClosestPeers { result: Ok(p), .. }, _) if p.len() == 1)));
}

#[test]
fn every_address_an_answer_gives_passes_the_filter() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let seed = PeerId::random();
    let target = PeerId::random();
    let kind = Operation::FindPeer { target };
    start(&mut pool, &target.to_bytes(), kind, &[seed], now);
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    let many: Vec<Multiaddr> = (1..=200)
        .map(|port| format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap())
        .collect();
    let answer = Ok(Some(Response::FindNode {
        closer_peers: vec![PeerRecord {
            id: target,
            addrs: many,
            connection: ConnectionType::NotConnected,
        }],
    }));
    let first_two = |_: &PeerId, addrs: Vec<Multiaddr>| addrs.into_iter().take(2).collect();
    pool.on_result(asked[0].0, answer, now, &validators, &first_two);
    let actions = pool.poll(now, &validators, &all_connected);
    let found = actions.iter().find_map(|a| match a {
        PoolAction::Finished(
            _,
            QueryResult::FindPeer {
                result: Ok(found), ..
            },
            _,
        ) => Some(found),
        _ => None,
    });
    assert_eq!(found.map(|f| f.addrs.len()), Some(2));
}

fn find_node_answer() -> Result<Option<Response>, RequestError> {
    Ok(Some(Response::FindNode {
        closer_peers: Vec::new(),
    }))
}

/// Issue 15: the pool times every lookup request from send to answer, per route, and gives
/// the next requests deadlines from it: cold at first, then from the estimate.
#[test]
fn lookup_requests_get_deadlines_from_the_round_trips_observed() {
    use crate::routing::rtt::{RequestDeadlines, Route};
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let t0 = Instant::now();
    let peers: Vec<PeerId> = (0..30).map(|_| PeerId::random()).collect();
    start(&mut pool, b"rtt", Operation::ClosestPeers, &peers, t0);
    let mut next = 0;
    let actions = pool.poll(t0, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    assert_eq!(asked.len(), 10);
    // Nothing observed yet: the cold deadline.
    let cold = RequestDeadlines::default().cold;
    assert_eq!(pool.next_deadline(), Some(t0 + cold));
    // Five answers after 400 ms: the estimate.
    let t1 = t0 + Duration::from_millis(400);
    for (id, _, _) in &asked[..5] {
        pool.on_result(*id, find_node_answer(), t1, &validators, &keep_all);
    }
    let age = RequestDeadlines::default().max_age;
    assert_eq!(
        pool.rtt.estimate(Route::Connected, t1, age),
        Some(Duration::from_millis(400))
    );
    assert_eq!(
        pool.rtt.estimate(Route::Dial, t1, age),
        None,
        "no dial was timed"
    );
    // The five still in flight follow the estimate: overdue one estimate after they left,
    // not at the cold deadline.
    assert_eq!(pool.next_deadline(), Some(t0 + Duration::from_millis(400)));
    // The next requests are overdue after one estimate, not after the cold deadline.
    let actions = pool.poll(t1, &validators, &all_connected);
    assert!(!sent(&mut pool, actions, &mut next).is_empty());
    assert_eq!(pool.next_deadline(), Some(t1 + Duration::from_millis(400)));
}

/// Issue 15: a request that needs a dial is timed apart from those over open connections.
#[test]
fn dials_are_timed_apart() {
    use crate::routing::rtt::Route;
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let t0 = Instant::now();
    let peers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    start(&mut pool, b"dial", Operation::ClosestPeers, &peers, t0);
    let nobody = |_: &PeerId| false;
    let mut next = 0;
    let actions = pool.poll(t0, &validators, &nobody);
    let asked = sent(&mut pool, actions, &mut next);
    let t1 = t0 + Duration::from_millis(900);
    for (id, _, _) in &asked {
        pool.on_result(*id, find_node_answer(), t1, &validators, &keep_all);
    }
    let age = crate::routing::rtt::RequestDeadlines::default().max_age;
    assert_eq!(
        pool.rtt.estimate(Route::Dial, t1, age),
        Some(Duration::from_millis(900))
    );
    assert_eq!(pool.rtt.estimate(Route::Connected, t1, age), None);
}

/// Issue 15: answers that come after their query ended still teach the estimator (without
/// them it could only shrink), failures teach it nothing, and no request is kept once its
/// outcome is in.
#[test]
fn late_answers_of_ended_queries_are_samples_and_nothing_stays() {
    use crate::routing::rtt::Route;
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let t0 = Instant::now();
    let peers: Vec<PeerId> = (0..10).map(|_| PeerId::random()).collect();
    let query = start(&mut pool, b"late", Operation::ClosestPeers, &peers, t0);
    let mut next = 0;
    let actions = pool.poll(t0, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    assert_eq!(asked.len(), 10);
    assert!(pool.cancel(query));
    let t1 = t0 + Duration::from_secs(2);
    for (id, _, _) in &asked[..5] {
        assert!(pool.owns(id));
        pool.on_result(*id, find_node_answer(), t1, &validators, &keep_all);
    }
    for (id, _, _) in &asked[5..] {
        pool.on_result(*id, Err(RequestError::Timeout), t1, &validators, &keep_all);
    }
    let age = crate::routing::rtt::RequestDeadlines::default().max_age;
    assert_eq!(
        pool.rtt.estimate(Route::Connected, t1, age),
        Some(Duration::from_secs(2)),
        "five answers, the timeouts not counted"
    );
    assert!(pool.sent.is_empty() && pool.orphans.is_empty());
}

#[test]
fn a_lookup_that_ended_leaves_no_deadline_in_the_past() {
    // go's finish rule ends the lookup while a peer is still being asked; the writes go on.
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let peers: Vec<PeerId> = (0..4).map(|_| PeerId::random()).collect();
    let value = pk();
    let config = LookupConfig {
        finish: crate::routing::lookup::LookupFinish::BetaAnswered,
        ..LookupConfig::default()
    };
    let lookup = Lookup::new(
        Key::new(&value.key),
        PeerId::random(),
        peers.iter().map(|p| record(*p)),
        config,
    );
    let kind = Operation::PutValue {
        record: value.clone(),
        quorum: 1,
    };
    pool.start(
        value.key.clone(),
        kind,
        lookup,
        Duration::from_secs(60),
        now,
    );
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let mut asked = sent(&mut pool, actions, &mut next);
    let target = Key::new(&value.key);
    asked.sort_by_key(|(_, p, _)| Key::from_peer(p).distance(&target));
    for (id, _, _) in &asked[..3] {
        let answer = Ok(Some(Response::FindNode {
            closer_peers: vec![],
        }));
        pool.on_result(*id, answer, now, &validators, &keep_all);
    }
    let actions = pool.poll(now, &validators, &all_connected);
    let puts = sent(&mut pool, actions, &mut next);
    assert!(!puts.is_empty(), "the lookup ended and the writes left");
    // The fourth peer never answers. Long past its lookup deadline, the pool's next deadline
    // is the query's own, still ahead.
    let later = now + Duration::from_secs(30);
    pool.poll(later, &validators, &all_connected);
    let deadline = pool.next_deadline().expect("the query runs");
    assert!(deadline > later, "{:?} after the start", deadline - now);
}

#[test]
fn a_refresh_nobody_answered_leaves_its_bucket_due() {
    let validators = Validators::default();
    let now = Instant::now();
    let peers = [PeerId::random(), PeerId::random()];
    let refreshed = |answer: bool| {
        let mut pool = QueryPool::default();
        let kind = Operation::Bootstrap { bucket: Some(3) };
        start(&mut pool, b"refresh target", kind, &peers, now);
        let mut next = 0;
        let actions = pool.poll(now, &validators, &all_connected);
        let asked = sent(&mut pool, actions, &mut next);
        assert_eq!(asked.len(), 2);
        for (i, (id, _, _)) in asked.iter().enumerate() {
            let result = if answer && i == 0 {
                find_node_answer()
            } else {
                Err(RequestError::Timeout)
            };
            pool.on_result(*id, result, now, &validators, &keep_all);
        }
        pool.poll(now, &validators, &all_connected)
            .into_iter()
            .any(|a| matches!(a, PoolAction::Refreshed(3)))
    };
    assert!(!refreshed(false), "every request failed: still due");
    assert!(refreshed(true), "one answer: refreshed");
}

/// A request and query timeout of `Duration::MAX` (a user's "never") neither panics nor ends
/// the query at once; the requests still get deadlines from the round trips observed.
#[test]
fn timeouts_of_duration_max_saturate() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let t0 = Instant::now();
    let peers: Vec<PeerId> = (0..20).map(|_| PeerId::random()).collect();
    let config = LookupConfig {
        slot_timeout: Duration::MAX,
        ..LookupConfig::default()
    };
    let lookup = Lookup::new(
        Key::new(b"max"),
        PeerId::random(),
        peers.iter().map(|p| record(*p)),
        config,
    );
    let kind = Operation::ClosestPeers;
    pool.start(b"max".to_vec(), kind, lookup, Duration::MAX, t0);
    let mut next = 0;
    let actions = pool.poll(t0, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    assert_eq!(asked.len(), 10);
    // Cold: the cold deadline, as with any request timeout above it.
    let cold = crate::routing::rtt::RequestDeadlines::default().cold;
    assert_eq!(pool.next_deadline(), Some(t0 + cold));
    let t1 = t0 + Duration::from_millis(200);
    for (id, _, _) in &asked[..5] {
        pool.on_result(*id, find_node_answer(), t1, &validators, &keep_all);
    }
    // The cold deadline was the request timeout; the estimate now sets one.
    assert!(pool.next_deadline().expect("running") < t0 + Duration::from_secs(2));
    let actions = pool.poll(t1, &validators, &all_connected);
    assert!(!actions
        .iter()
        .any(|a| matches!(a, PoolAction::Finished(..))));
}

fn finished(actions: &[PoolAction]) -> Vec<&QueryResult> {
    actions
        .iter()
        .filter_map(|a| match a {
            PoolAction::Finished(_, result, _) => Some(result),
            _ => None,
        })
        .collect()
}

#[test]
fn a_lookup_that_times_out_returns_the_peers_it_reached() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
    start(&mut pool, b"key", Operation::ClosestPeers, &peers, now);
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    assert_eq!(asked.len(), 3);
    // One answers; the others stay silent past the operation's deadline.
    pool.on_result(asked[0].0, find_node_answer(), now, &validators, &keep_all);
    let actions = pool.poll(now + Duration::from_secs(61), &validators, &all_connected);
    let results = finished(&actions);
    let [QueryResult::ClosestPeers {
        key,
        result: Err(QueryFailure { error, found }),
    }] = &results[..]
    else {
        panic!("{results:?}")
    };
    assert_eq!(key, b"key");
    assert_eq!(*error, QueryError::Timeout);
    assert_eq!(
        found.iter().map(|p| p.id).collect::<Vec<_>>(),
        vec![asked[0].1],
        "the peer that answered is kept"
    );
}

#[test]
fn providers_found_before_a_timeout_are_kept_and_a_full_result_has_them_all() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    let peers: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
    let kind = Operation::GetProviders {
        limit: Some(100),
        seen: Default::default(),
        found: Vec::new(),
    };
    let id = start(&mut pool, b"mh", kind, &peers, now);
    let local = record(PeerId::random());
    assert!(!pool.add_local_providers(id, std::slice::from_ref(&local)));
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    let asked = sent(&mut pool, actions, &mut next);
    let remote = record(PeerId::random());
    let answer = Ok(Some(Response::GetProviders {
        providers: vec![remote.clone(), local.clone()],
        closer_peers: vec![],
    }));
    pool.on_result(asked[0].0, answer, now, &validators, &keep_all);
    let actions = pool.poll(now + Duration::from_secs(61), &validators, &all_connected);
    let results = finished(&actions);
    let [QueryResult::FindProviders {
        key,
        result: Err(QueryFailure { error, found }),
    }] = &results[..]
    else {
        panic!("{results:?}")
    };
    assert_eq!(key.as_bytes(), b"mh");
    assert_eq!(*error, QueryError::Timeout);
    assert_eq!(found, &vec![local, remote], "local first, no duplicate");
}

#[test]
fn a_lookup_no_server_answered_says_so() {
    let validators = Validators::default();
    let mut pool = QueryPool::default();
    let now = Instant::now();
    // An empty routing table: nobody to ask.
    start(&mut pool, b"key", Operation::ClosestPeers, &[], now);
    let actions = pool.poll(now, &validators, &all_connected);
    assert!(matches!(
        &finished(&actions)[..],
        [QueryResult::ClosestPeers {
            result: Err(QueryFailure {
                error: QueryError::NoServers { asked: 0 },
                ..
            }),
            ..
        }]
    ));
    // Every peer asked refuses (a client in automatic mode does not answer).
    let peers: Vec<PeerId> = (0..2).map(|_| PeerId::random()).collect();
    start(
        &mut pool,
        b"key",
        Operation::Bootstrap { bucket: None },
        &peers,
        now,
    );
    let mut next = 0;
    let actions = pool.poll(now, &validators, &all_connected);
    for (id, _, _) in sent(&mut pool, actions, &mut next) {
        let refused = Err(RequestError::UnsupportedProtocol);
        pool.on_result(id, refused, now, &validators, &keep_all);
    }
    let actions = pool.poll(now, &validators, &all_connected);
    let results = finished(&actions);
    assert!(
        matches!(
            &results[..],
            [QueryResult::Bootstrap(Err(QueryFailure {
                error: QueryError::NoServers { asked: 2 },
                found: 0,
            }))]
        ),
        "{results:?}"
    );
    let message = results[0].error().unwrap().to_string();
    assert!(message.contains("add_external_address"), "{message}");
}
