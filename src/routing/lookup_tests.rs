use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use super::*;

fn record(id: PeerId) -> PeerRecord {
    PeerRecord {
        id,
        addrs: vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        connection: ConnectionType::NotConnected,
    }
}

#[test]
fn a_slow_peer_frees_its_slot_and_a_late_answer_still_counts() {
    let local = PeerId::random();
    let target = Key::new(b"target");
    let peers: Vec<PeerId> = (0..3).map(|_| PeerId::random()).collect();
    let config = LookupConfig {
        alpha: 1,
        beta: 1,
        k: 3,
        ..Default::default()
    };
    let mut lookup = Lookup::new(target, local, peers.iter().map(|p| record(*p)), config);
    let start = Instant::now();
    let LookupStep::Ask { peer: first, .. } = lookup.step(start) else {
        panic!("asks the closest first")
    };
    assert_eq!(lookup.step(start), LookupStep::Wait, "alpha = 1");
    // The slot timeout passes: the next peer is asked.
    let later = start + config.slot_timeout;
    let LookupStep::Ask { peer: second, .. } = lookup.step(later) else {
        panic!("the slot was freed")
    };
    assert_ne!(first, second);
    // The first answers late: it counts.
    lookup.on_success(&first, vec![]);
    lookup.on_success(&second, vec![]);
    while let LookupStep::Ask { peer, .. } = lookup.step(later) {
        lookup.on_failure(&peer);
    }
    let result: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
    assert!(result.contains(&first) && result.contains(&second));
}

#[test]
fn memory_is_bounded_whatever_responders_send() {
    let local = PeerId::random();
    let target = Key::new(b"target");
    let seed = PeerId::random();
    let mut lookup = Lookup::new(target, local, [record(seed)], LookupConfig::default());
    let now = Instant::now();
    assert!(matches!(lookup.step(now), LookupStep::Ask { .. }));
    let flood: Vec<PeerRecord> = (0..10_000).map(|_| record(PeerId::random())).collect();
    lookup.on_success(&seed, flood);
    assert!(
        lookup.candidates.len() <= 41,
        "at most 2k taken from one answer"
    );
    for _ in 0..10 {
        let flood: Vec<PeerRecord> = (0..1000).map(|_| record(PeerId::random())).collect();
        let asked: Vec<PeerId> = std::iter::from_fn(|| match lookup.step(now) {
            LookupStep::Ask { peer, .. } => Some(peer),
            _ => None,
        })
        .collect();
        for peer in asked {
            lookup.on_success(&peer, flood.clone());
        }
        assert!(lookup.candidates.len() <= LookupConfig::default().max_candidates);
    }
}

#[test]
fn never_asks_itself_and_finishes_when_empty() {
    let local = PeerId::random();
    let mut lookup = Lookup::new(
        Key::new(b"x"),
        local,
        [record(local)],
        LookupConfig::default(),
    );
    assert_eq!(lookup.step(Instant::now()), LookupStep::Finished);
    assert!(lookup.result().is_empty());
}

#[test]
fn a_peer_pushed_out_and_learned_again_is_not_asked_twice() {
    let local = PeerId::random();
    let target = Key::new(b"target");
    let config = LookupConfig {
        max_candidates: 3,
        alpha: 1,
        ..Default::default()
    };
    let far = PeerId::random();
    let mut lookup = Lookup::new(target, local, [record(far)], config);
    let now = Instant::now();
    let LookupStep::Ask { peer, .. } = lookup.step(now) else {
        panic!()
    };
    assert_eq!(peer, far);
    // Many closer peers push the asked one out of the full candidate set...
    let mut closer: Vec<PeerRecord> = (0..50).map(|_| record(PeerId::random())).collect();
    closer.sort_by_key(|p| Key::from_peer(&p.id).distance(&target));
    let far_distance = Key::from_peer(&far).distance(&target);
    let nearer: Vec<PeerRecord> = closer
        .into_iter()
        .filter(|p| Key::from_peer(&p.id).distance(&target) < far_distance)
        .take(3)
        .collect();
    if nearer.len() < 3 {
        return; // The random peer happened to be very close; nothing to push it out.
    }
    lookup.on_success(&far, nearer);
    // ...and when some peer mentions it again, it is not asked again.
    let mut asked = Vec::new();
    while let LookupStep::Ask { peer, .. } = lookup.step(now) {
        asked.push(peer);
        lookup.on_success(&peer, vec![record(far)]);
    }
    assert!(!asked.contains(&far));
}

#[test]
fn go_s_rule_finishes_once_the_beta_closest_answered() {
    let now = Instant::now();
    let target = Key::from_peer(&PeerId::random());
    let mut peers: Vec<PeerId> = (0..30).map(|_| PeerId::random()).collect();
    peers.sort_by_key(|p| Key::from_peer(p).distance(&target));
    let config = LookupConfig {
        alpha: 3,
        beta: 3,
        k: 20,
        finish: LookupFinish::BetaAnswered,
        ..LookupConfig::default()
    };
    let seeds = peers.iter().map(|p| record(*p));
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    let mut asked = Vec::new();
    while let LookupStep::Ask { peer, .. } = lookup.step(now) {
        asked.push(peer);
    }
    assert_eq!(
        asked,
        peers[..3],
        "the three closest first, alpha at a time"
    );
    for peer in &asked {
        lookup.on_success(peer, Vec::new());
    }
    // The three closest answered and nothing closer is pending: done, without asking the
    // other 17 of the 20 closest, which are in the result as heard of.
    assert_eq!(lookup.step(now), LookupStep::Finished);
    let result: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
    assert_eq!(result, peers[..20]);
    // The default rule would still be asking them.
    let seeds = peers.iter().map(|p| record(*p));
    let config = LookupConfig {
        finish: LookupFinish::KClosestAnswered,
        ..config
    };
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    for _ in 0..3 {
        let LookupStep::Ask { peer, .. } = lookup.step(now) else {
            panic!("asks the three closest");
        };
        lookup.on_success(&peer, Vec::new());
    }
    assert!(matches!(lookup.step(now), LookupStep::Ask { .. }));
}

/// Issue 14, item 1: a candidate's addresses are capped from the moment it is created, and
/// stay capped when it is named again.
#[test]
fn a_candidate_keeps_at_most_the_cap_of_addresses() {
    let many = |from: u16| -> Vec<Multiaddr> {
        (from..from + 200)
            .map(|port| format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap())
            .collect()
    };
    let entry = |id: PeerId, addrs: Vec<Multiaddr>| PeerRecord {
        id,
        addrs,
        connection: ConnectionType::NotConnected,
    };
    let config = LookupConfig {
        max_addresses_per_peer: 3,
        ..LookupConfig::default()
    };
    let (a, b) = (PeerId::random(), PeerId::random());
    let seeds = [entry(a, many(1)), entry(b, many(1))];
    let mut lookup = Lookup::new(Key::new(b"cap"), PeerId::random(), seeds, config);
    let now = Instant::now();
    for _ in 0..2 {
        let LookupStep::Ask { addrs, .. } = lookup.step(now) else {
            panic!("asks both seeds");
        };
        assert_eq!(addrs, many(1)[..3], "a seed is capped too");
    }
    // Both name the same peer, each with 200 addresses of its own.
    let named = PeerId::random();
    lookup.on_success(&a, vec![entry(named, many(1000))]);
    lookup.on_success(&b, vec![entry(named, many(2000))]);
    let known = lookup
        .candidates
        .values()
        .find(|c| c.id == named)
        .expect("a candidate");
    assert_eq!(known.addrs, many(1000)[..3]);
    let LookupStep::Ask { peer, addrs } = lookup.step(now) else {
        panic!("asks the peer named");
    };
    assert_eq!((peer, addrs), (named, many(1000)[..3].to_vec()));
}

/// `n` random peers, closest to `target` first.
fn sorted_peers(n: usize, target: &Key) -> Vec<PeerId> {
    let mut peers: Vec<PeerId> = (0..n).map(|_| PeerId::random()).collect();
    peers.sort_by_key(|p| Key::from_peer(p).distance(target));
    peers
}

/// Every request the lookup wants now, until it waits or finishes.
fn ask_all(lookup: &mut Lookup, now: Instant) -> Vec<PeerId> {
    std::iter::from_fn(|| match lookup.step(now) {
        LookupStep::Ask { peer, .. } => Some(peer),
        _ => None,
    })
    .collect()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Issue 15: once converged (or stalled), the rest of the k closest are asked at once, with
/// alpha 1, 3 or 10; before, alpha at a time to the end.
#[test]
fn a_converged_or_stalled_lookup_asks_the_rest_of_the_k_closest_at_once() {
    let now = Instant::now();
    let target = Key::new(b"widen");
    let peers = sorted_peers(30, &target);
    // alpha, the answers that converge (or stall) it, then who is asked at once.
    for (alpha, answered, at_once) in [(1, 1..1, 1..20), (3, 0..3, 3..20), (10, 0..3, 10..20)] {
        for widened_alpha in [20, alpha] {
            let config = LookupConfig {
                alpha,
                widened_alpha,
                ..LookupConfig::default()
            };
            let seeds = peers.iter().map(|p| record(*p));
            let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
            assert_eq!(ask_all(&mut lookup, now), peers[..alpha], "alpha {alpha}");
            // With alpha 1, the first answer brings nothing closer: stalled. Otherwise the
            // three closest answer: converged.
            let first: Vec<PeerId> = if answered.is_empty() {
                peers[..1].to_vec()
            } else {
                peers[answered.clone()].to_vec()
            };
            for peer in &first {
                lookup.on_success(peer, Vec::new());
            }
            let asked = ask_all(&mut lookup, now);
            if widened_alpha == alpha {
                // The old pace: as many as answered.
                assert_eq!(asked.len(), first.len(), "alpha {alpha}, not widened");
            } else {
                assert_eq!(asked, peers[at_once.clone()], "alpha {alpha}");
                assert!(lookup.widened);
            }
            assert!(lookup.in_flight <= alpha.max(widened_alpha));
        }
    }
}

/// Issue 15: alpha answers in a row that bring nothing closer widen the lookup, as
/// libp2p-kad's stall, even while a closer peer is still pending (not converged); an answer
/// that brings a closer peer starts the count again.
#[test]
fn a_stalled_lookup_widens_and_progress_resets_the_count() {
    let now = Instant::now();
    let target = Key::new(b"stall");
    let peers = sorted_peers(40, &target);
    let config = LookupConfig {
        alpha: 3,
        ..LookupConfig::default()
    };
    for progress in [false, true] {
        // The closest peer is not known yet: only an answer can name it.
        let seeds = peers[1..].iter().map(|p| record(*p));
        let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
        assert_eq!(ask_all(&mut lookup, now), peers[1..4]);
        // peers[1] stays silent; two answers bring nothing closer.
        lookup.on_success(&peers[2], Vec::new());
        assert_eq!(ask_all(&mut lookup, now), peers[4..5]);
        lookup.on_success(&peers[3], Vec::new());
        assert_eq!(ask_all(&mut lookup, now), peers[5..6]);
        assert!(!lookup.widened);
        // The third either names the closest peer of all, or nothing.
        let named = if progress {
            vec![record(peers[0])]
        } else {
            Vec::new()
        };
        lookup.on_success(&peers[4], named);
        let asked = ask_all(&mut lookup, now);
        if progress {
            // Progress: not stalled, and not converged (peers[1] is pending): alpha.
            assert_eq!(asked, peers[..1]);
            assert!(!lookup.widened);
        } else {
            // Stalled: the rest of the 20 closest at once, though peers[1] is pending.
            assert_eq!(asked, peers[6..21]);
            assert!(lookup.widened);
            assert_eq!(lookup.in_flight, 17);
        }
    }
}

/// Issue 15: an overdue request gives its place among the k closest to the next candidate;
/// the lookup still waits for it until its deadline, counts its answer if it comes (a slow
/// but live peer), and does not wait past the deadline (a silent one).
#[test]
fn an_overdue_peer_is_replaced_and_waited_for_until_its_deadline() {
    let t0 = Instant::now();
    let target = Key::new(b"overdue");
    let peers = sorted_peers(6, &target);
    let config = LookupConfig {
        alpha: 3,
        beta: 1,
        k: 3,
        ..LookupConfig::default()
    };
    for slow_but_live in [true, false] {
        let seeds = peers.iter().map(|p| record(*p));
        let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
        assert_eq!(ask_all(&mut lookup, t0), peers[..3]);
        for peer in &peers[..3] {
            lookup.set_deadlines(peer, t0 + ms(100), t0 + ms(300));
        }
        // Converged: the 3 closest are asked, nothing more.
        lookup.on_success(&peers[0], Vec::new());
        lookup.on_success(&peers[1], Vec::new());
        assert_eq!(ask_all(&mut lookup, t0 + ms(50)), Vec::<PeerId>::new());
        assert_eq!(lookup.next_deadline(), Some(t0 + ms(100)));
        // peers[2] is overdue: the next candidate takes its place among the 3 closest, and
        // one spare goes too (one request in three went silent).
        assert_eq!(ask_all(&mut lookup, t0 + ms(100)), peers[3..5]);
        lookup.on_success(&peers[3], Vec::new());
        // Three answered, but the overdue one is closer: waited for, until its deadline; the
        // spare is not.
        assert_eq!(lookup.step(t0 + ms(150)), LookupStep::Wait);
        assert_eq!(lookup.next_deadline(), Some(t0 + ms(300)));
        let result = if slow_but_live {
            lookup.on_success(&peers[2], Vec::new());
            assert_eq!(lookup.step(t0 + ms(200)), LookupStep::Finished);
            peers[..3].to_vec()
        } else {
            assert_eq!(lookup.step(t0 + ms(299)), LookupStep::Wait);
            assert_eq!(lookup.step(t0 + ms(300)), LookupStep::Finished);
            [peers[0], peers[1], peers[3]].to_vec()
        };
        let found: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
        assert_eq!(found, result, "slow but live: {slow_but_live}");
    }
}

/// Issue 15: the pool times requests again as its estimate moves. A waiting request takes
/// both new moments, an overdue one only the new deadline (its slot is not given back), one
/// past its deadline or answered keeps its state.
#[test]
fn deadlines_set_again_follow_the_estimate() {
    let t0 = Instant::now();
    let target = Key::new(b"rearm");
    let peers = sorted_peers(3, &target);
    let config = LookupConfig {
        alpha: 3,
        beta: 3,
        k: 3,
        ..LookupConfig::default()
    };
    let seeds = peers.iter().map(|p| record(*p));
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    assert_eq!(ask_all(&mut lookup, t0), peers);
    // Sent cold: 3 s each.
    for peer in &peers {
        lookup.set_deadlines(peer, t0 + ms(3000), t0 + ms(3000));
    }
    lookup.on_success(&peers[0], Vec::new());
    // The answers so far say 200 ms: the others are overdue at 200 ms, given up at 1 s.
    for peer in &peers {
        lookup.set_deadlines(peer, t0 + ms(200), t0 + ms(1000));
    }
    assert_eq!(lookup.next_deadline(), Some(t0 + ms(200)));
    assert_eq!(lookup.step(t0 + ms(200)), LookupStep::Wait);
    assert_eq!(lookup.next_deadline(), Some(t0 + ms(1000)));
    // Overdue: a later estimate moves only the deadline; an earlier overdue changes nothing.
    lookup.set_deadlines(&peers[1], t0 + ms(100), t0 + ms(800));
    assert_eq!(lookup.next_deadline(), Some(t0 + ms(800)));
    assert_eq!(
        lookup.step(t0 + ms(800)),
        LookupStep::Wait,
        "peers[2] still waited for"
    );
    // Past its deadline, peers[1] is not waited for again, whatever the estimate says.
    lookup.set_deadlines(&peers[1], t0 + ms(5000), t0 + ms(5000));
    assert_eq!(lookup.next_deadline(), Some(t0 + ms(1000)));
    assert_eq!(lookup.step(t0 + ms(1000)), LookupStep::Finished);
    let found: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
    assert_eq!(found, peers[..1]);
}

/// Issue 15: a late answer (past the deadline) still counts while the lookup waits for
/// others, and the finish rule does not wait for a peer past its deadline.
#[test]
fn an_answer_past_the_deadline_counts_while_the_lookup_runs() {
    let t0 = Instant::now();
    let target = Key::new(b"late");
    let peers = sorted_peers(4, &target);
    let config = LookupConfig {
        alpha: 1,
        beta: 1,
        k: 2,
        ..LookupConfig::default()
    };
    let seeds = peers.iter().map(|p| record(*p));
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    assert_eq!(ask_all(&mut lookup, t0), peers[..1]);
    lookup.set_deadlines(&peers[0], t0 + ms(100), t0 + ms(200));
    // Before widening, an overdue request keeps its slot (alpha 1): nothing more is asked.
    assert_eq!(ask_all(&mut lookup, t0 + ms(100)), Vec::<PeerId>::new());
    // Past its deadline: the next one is asked; the first is not waited for.
    assert_eq!(ask_all(&mut lookup, t0 + ms(200)), peers[1..2]);
    lookup.set_deadlines(&peers[1], t0 + ms(300), t0 + ms(400));
    lookup.on_success(&peers[1], Vec::new());
    // Converged and widened: the second closest, and a spare (one request in two went
    // silent as far as the lookup knows).
    assert_eq!(ask_all(&mut lookup, t0 + ms(250)), peers[2..4]);
    // The first answers now, late: it counts.
    lookup.on_success(&peers[0], Vec::new());
    assert_eq!(lookup.step(t0 + ms(260)), LookupStep::Finished);
    let found: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
    assert_eq!(found, peers[..2]);
}

/// Issue 15: a widened lookup that saw peers go silent asks spares beyond the k closest, in
/// proportion, and does not wait for them.
#[test]
fn spares_in_proportion_to_the_silent_share_are_not_waited_for() {
    let t0 = Instant::now();
    let target = Key::new(b"spares");
    let peers = sorted_peers(12, &target);
    let config = LookupConfig {
        alpha: 4,
        beta: 1,
        k: 4,
        ..LookupConfig::default()
    };
    let seeds = peers.iter().map(|p| record(*p));
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    assert_eq!(ask_all(&mut lookup, t0), peers[..4]);
    for peer in &peers[..4] {
        lookup.set_deadlines(peer, t0 + ms(100), t0 + ms(1000));
    }
    lookup.on_success(&peers[0], Vec::new());
    lookup.on_success(&peers[1], Vec::new());
    // peers[2] and [3] go overdue: half the requests silent, so 2 spares for 4 places, on
    // top of the 2 replacements.
    assert_eq!(ask_all(&mut lookup, t0 + ms(100)), peers[4..8]);
    for peer in &peers[4..8] {
        lookup.set_deadlines(peer, t0 + ms(1100), t0 + ms(2000));
    }
    lookup.on_success(&peers[4], Vec::new());
    lookup.on_success(&peers[5], Vec::new());
    // The spares are not waited for, the overdue ones are, until their deadline.
    assert_eq!(lookup.step(t0 + ms(200)), LookupStep::Wait);
    assert_eq!(lookup.step(t0 + ms(1000)), LookupStep::Finished);
    let found: Vec<PeerId> = lookup.result().into_iter().map(|p| p.id).collect();
    assert_eq!(found, [peers[0], peers[1], peers[4], peers[5]]);
    // A slow peer that answers is no longer counted as silent.
    assert_eq!(lookup.missing, 2);
    lookup.on_success(&peers[2], Vec::new());
    assert_eq!(lookup.missing, 1);
}

/// Without deadlines from the pool (cold), no request is overdue before its deadline, so a
/// lookup asks no spare.
#[test]
fn no_spares_without_an_estimate() {
    let t0 = Instant::now();
    let target = Key::new(b"cold");
    let peers = sorted_peers(12, &target);
    let config = LookupConfig {
        alpha: 4,
        beta: 1,
        k: 4,
        ..LookupConfig::default()
    };
    let seeds = peers.iter().map(|p| record(*p));
    let mut lookup = Lookup::new(target, PeerId::random(), seeds, config);
    assert_eq!(ask_all(&mut lookup, t0), peers[..4]);
    lookup.on_success(&peers[0], Vec::new());
    lookup.on_success(&peers[1], Vec::new());
    // The slot timeout passes for the two others: replaced, no spares.
    assert_eq!(ask_all(&mut lookup, t0 + config.slot_timeout), peers[4..6]);
    assert_eq!(lookup.missing, 0);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// Answer the i-th outstanding request, naming these of the known peers.
        Answer(usize, Vec<usize>),
        Fail(usize),
        /// Let time pass, in milliseconds.
        Wait(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (any::<usize>(), proptest::collection::vec(any::<usize>(), 0..6))
                .prop_map(|(i, named)| Op::Answer(i, named)),
            1 => any::<usize>().prop_map(Op::Fail),
            1 => (0u64..400).prop_map(Op::Wait),
        ]
    }

    /// The states the lookup's counters must agree with.
    fn check(lookup: &Lookup) {
        let count =
            |f: fn(&State) -> bool| lookup.candidates.values().filter(|c| f(&c.state)).count();
        let waiting = count(|s| matches!(s, State::Waiting { .. }));
        let overdue = count(|s| matches!(s, State::Overdue { .. }));
        let config = lookup.config;
        assert_eq!(lookup.in_flight, waiting);
        assert!(waiting <= config.alpha.max(config.widened_alpha));
        if !lookup.widened {
            assert!(
                waiting + overdue <= config.alpha,
                "alpha holds until widened"
            );
        }
        let missing = lookup.candidates.values().filter(|c| c.missing).count();
        assert!(
            lookup.missing >= missing,
            "pushed-out candidates may have been missing"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the answers, failures and timing: in flight within the bound, no peer
        /// asked twice, and it finishes once everyone answers or time runs out.
        #[test]
        fn bounded_never_twice_and_terminates(
            alpha in 1usize..12,
            beta in 1usize..5,
            k in 1usize..25,
            widened_alpha in 1usize..30,
            seeds in 1usize..30,
            estimated in any::<bool>(),
            ops in proptest::collection::vec(op(), 0..150),
        ) {
            let t0 = Instant::now();
            let target = Key::new(b"prop");
            let known: Vec<PeerId> = (0..60).map(|_| PeerId::random()).collect();
            let config = LookupConfig {
                alpha,
                beta,
                k,
                widened_alpha,
                max_candidates: 4 * k,
                ..LookupConfig::default()
            };
            let mut lookup = Lookup::new(
                target,
                PeerId::random(),
                known[..seeds].iter().map(|p| record(*p)),
                config,
            );
            let mut now = t0;
            let mut asked = std::collections::HashSet::new();
            let mut outstanding: Vec<PeerId> = Vec::new();
            let mut finished = false;
            let mut run = |lookup: &mut Lookup, now: Instant, outstanding: &mut Vec<PeerId>| {
                loop {
                    match lookup.step(now) {
                        LookupStep::Ask { peer, .. } => {
                            assert!(asked.insert(peer), "{peer} asked twice");
                            if estimated {
                                lookup.set_deadlines(&peer, now + ms(150), now + ms(400));
                            }
                            outstanding.push(peer);
                        }
                        LookupStep::Wait => return false,
                        LookupStep::Finished => return true,
                    }
                    check(lookup);
                }
            };
            for op in ops {
                if run(&mut lookup, now, &mut outstanding) {
                    finished = true;
                    break;
                }
                check(&lookup);
                match op {
                    Op::Answer(i, named) if !outstanding.is_empty() => {
                        let peer = outstanding.swap_remove(i % outstanding.len());
                        let named = named.iter().map(|n| record(known[n % known.len()])).collect();
                        lookup.on_success(&peer, named);
                    }
                    Op::Fail(i) if !outstanding.is_empty() => {
                        let peer = outstanding.swap_remove(i % outstanding.len());
                        lookup.on_failure(&peer);
                    }
                    Op::Wait(by) => now += ms(by),
                    _ => {}
                }
                check(&lookup);
            }
            // Everyone left answers with nothing new; time moves to each deadline.
            let mut rounds = 0;
            while !finished {
                rounds += 1;
                prop_assert!(rounds < 1000, "does not terminate");
                finished = run(&mut lookup, now, &mut outstanding);
                if let Some(peer) = outstanding.pop() {
                    lookup.on_success(&peer, Vec::new());
                } else if let Some(deadline) = lookup.next_deadline() {
                    now = now.max(deadline);
                }
            }
            prop_assert!(lookup.result().len() <= k);
        }
    }
}
