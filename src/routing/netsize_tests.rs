use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;

fn random_key(rng: &mut StdRng) -> Key {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    Key::from_hash(bytes)
}

/// A synthetic network of `n` servers: their points, uniform in the keyspace.
fn network(n: usize, rng: &mut StdRng) -> Vec<Key> {
    (0..n).map(|_| random_key(rng)).collect()
}

/// The true `k` closest of `points` to `target`, leaving out `local`.
fn closest(points: &[Key], local: &Key, target: &Key, k: usize) -> Vec<Key> {
    // Each distance computed once: a 100,000-node network is searched 30 times.
    let mut others: Vec<(Distance, Key)> = points
        .iter()
        .filter(|p| *p != local)
        .map(|p| (p.distance(target), *p))
        .collect();
    let k = k.min(others.len());
    if k < others.len() {
        others.select_nth_unstable(k);
    }
    others.truncate(k);
    others.sort_unstable();
    others.into_iter().map(|(_, p)| p).collect()
}

/// Feeds `lookups` perfect lookups for random targets from `points[0]`.
fn feed(
    estimator: &mut NetworkSizeEstimator,
    points: &[Key],
    lookups: usize,
    now: Instant,
    rng: &mut StdRng,
) {
    let local = points[0];
    for _ in 0..lookups {
        let target = random_key(rng);
        let found = closest(points, &local, &target, estimator.k());
        estimator
            .track(&local, &target, &found, estimator.k(), now)
            .expect("k peers");
    }
}

#[test]
fn estimates_synthetic_networks_of_known_size_within_20_percent() {
    let mut rng = StdRng::seed_from_u64(15);
    let now = Instant::now();
    for n in [200usize, 1_000, 10_000, 100_000] {
        let points = network(n, &mut rng);
        let mut estimator = NetworkSizeEstimator::new(20);
        feed(&mut estimator, &points, 30, now, &mut rng);
        let estimate = estimator.estimate(now).expect("enough samples");
        let truth = (n - 1) as f64;
        let error = (estimate - truth).abs() / truth;
        eprintln!(
            "n = {n}: estimate {estimate:.0}, error {:.1}%",
            error * 100.0
        );
        assert!(error < 0.2, "n = {n}: estimate {estimate:.0}");
    }
}

#[test]
fn the_error_shrinks_with_more_samples() {
    // 5 samples (the minimum) against 150 (the most kept), over seeds: the mean absolute error
    // falls, as sampling noise should (about 11% and 2% by the model).
    let mut rng = StdRng::seed_from_u64(16);
    let now = Instant::now();
    let points = network(2_000, &mut rng);
    let truth = 1_999.0;
    let mut few = 0.0;
    let mut many = 0.0;
    for _ in 0..10 {
        let mut estimator = NetworkSizeEstimator::new(20);
        feed(&mut estimator, &points, MIN_SAMPLES, now, &mut rng);
        few += (estimator.estimate(now).unwrap() - truth).abs() / truth / 10.0;
        feed(&mut estimator, &points, MAX_SAMPLES, now, &mut rng);
        many += (estimator.estimate(now).unwrap() - truth).abs() / truth / 10.0;
    }
    eprintln!(
        "mean error: {:.1}% with 5 samples, {:.1}% with 150",
        few * 100.0,
        many * 100.0
    );
    assert!(few < 0.2, "{few}");
    assert!(many < 0.05, "{many}");
    assert!(many < few);
}

#[test]
fn refuses_to_answer_with_too_few_samples() {
    let mut rng = StdRng::seed_from_u64(17);
    let now = Instant::now();
    let points = network(500, &mut rng);
    let mut estimator = NetworkSizeEstimator::new(20);
    assert_eq!(
        estimator.estimate(now),
        Err(EstimateError::NotEnoughData {
            samples: 0,
            needed: MIN_SAMPLES
        })
    );
    feed(&mut estimator, &points, MIN_SAMPLES - 1, now, &mut rng);
    assert!(estimator.estimate(now).is_err());
    feed(&mut estimator, &points, 1, now, &mut rng);
    assert!(estimator.estimate(now).is_ok());
}

#[test]
fn a_lookup_with_fewer_than_k_peers_is_no_sample() {
    let mut rng = StdRng::seed_from_u64(18);
    let points = network(10, &mut rng);
    let mut estimator = NetworkSizeEstimator::new(20);
    let target = random_key(&mut rng);
    let found = closest(&points, &points[0], &target, 20);
    assert_eq!(
        estimator.track(&points[0], &target, &found, 20, Instant::now()),
        Err(TrackError::TooFewPeers { found: 9, k: 20 })
    );
    assert!(estimator.is_empty());
}

#[test]
fn old_samples_stop_counting_and_memory_is_bounded() {
    let mut rng = StdRng::seed_from_u64(19);
    let start = Instant::now();
    let points = network(1_000, &mut rng);
    let mut estimator = NetworkSizeEstimator::new(20);
    feed(&mut estimator, &points, 2 * MAX_SAMPLES, start, &mut rng);
    assert_eq!(estimator.len(), MAX_SAMPLES, "the newest 150 are kept");
    assert!(estimator.estimate(start).is_ok());
    // Two hours on, nothing is fresh: no estimate until new lookups come.
    let later = start + MAX_SAMPLE_AGE + Duration::from_secs(1);
    assert!(estimator.estimate(later).is_err());
    feed(&mut estimator, &points, MIN_SAMPLES, later, &mut rng);
    assert_eq!(estimator.len(), MIN_SAMPLES, "the stale ones were dropped");
    assert!(estimator.estimate(later).is_ok());
}

#[test]
fn the_network_grows_and_the_estimate_follows() {
    // Samples of a 1,000-node network, then of a 10,000-node one: once the old ones age out,
    // only the new size counts.
    let mut rng = StdRng::seed_from_u64(20);
    let start = Instant::now();
    let mut estimator = NetworkSizeEstimator::new(20);
    feed(
        &mut estimator,
        &network(1_000, &mut rng),
        50,
        start,
        &mut rng,
    );
    let small = estimator.estimate(start).unwrap();
    let later = start + Duration::from_secs(3 * 3600);
    feed(
        &mut estimator,
        &network(10_000, &mut rng),
        50,
        later,
        &mut rng,
    );
    let large = estimator.estimate(later).unwrap();
    eprintln!("{small:.0} then {large:.0}");
    assert!((small - 999.0).abs() < 200.0);
    assert!((large - 9_999.0).abs() < 2_000.0);
}

#[test]
fn samples_from_a_bucket_the_table_barely_knows_weigh_little() {
    assert_eq!(sample_weight(20, 20, 0), 1.0);
    assert_eq!(sample_weight(20, 30, 0), 1.0);
    assert_eq!(sample_weight(20, 17, 0), 0.125);
    assert_eq!(sample_weight(20, 10, 0), 1.0 / 1024.0);
    // The lookup found more peers of that bucket than the table holds: as full as that.
    assert_eq!(sample_weight(20, 3, 19), 0.5);

    // Samples that badly understate the size (every distance doubled) but weigh 2^-10 barely
    // move an estimate made of full-weight ones.
    let mut rng = StdRng::seed_from_u64(21);
    let now = Instant::now();
    let points = network(2_000, &mut rng);
    let mut estimator = NetworkSizeEstimator::new(20);
    feed(&mut estimator, &points, 20, now, &mut rng);
    let before = estimator.estimate(now).unwrap();
    let local = points[0];
    for _ in 0..20 {
        // Targets sharing 12 bits with the local point: the table would hold all of that
        // bucket's few peers, and holds 10.
        let mut bytes = *random_key(&mut rng).as_bytes();
        bytes[0] = local.as_bytes()[0];
        bytes[1] = (local.as_bytes()[1] & 0xf0) | (!local.as_bytes()[1] & 0x08) | (bytes[1] & 0x07);
        let target = Key::from_hash(bytes);
        assert_eq!(target.common_prefix_len(&local), 12);
        // Every other of the 40 closest: distances about twice the true ones.
        let found: Vec<Key> = closest(&points, &local, &target, 40)
            .into_iter()
            .step_by(2)
            .collect();
        estimator.track(&local, &target, &found, 10, now).unwrap();
    }
    let after = estimator.estimate(now).unwrap();
    eprintln!("{before:.0} then {after:.0}");
    assert!(
        (after - before).abs() / before < 0.01,
        "{before} -> {after}"
    );
}

#[test]
fn normalized_distance_is_a_fraction_of_the_keyspace() {
    let zero = Key::from_hash([0; 32]);
    assert_eq!(normalized(&zero.distance(&zero)), 0.0);
    let mut half = [0u8; 32];
    half[0] = 0x80;
    assert_eq!(normalized(&zero.distance(&Key::from_hash(half))), 0.5);
    assert!(normalized(&zero.distance(&Key::from_hash([0xff; 32]))) <= 1.0);
}
