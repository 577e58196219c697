//! One reprovide cycle in a simulated network (no sockets): kadence's keyspace sweep, at up
//! to tens of millions of keys, against the naive reprovide that runs one lookup per key.
//!
//! - The network (`net`): `N` nodes with random peer ids (seeded), each with a k-bucket view
//!   (k = 20): up to k random peers in each common-prefix-length bucket. A node answers
//!   FIND_NODE with the k closest peers it knows. Every node is honest and answers at once, so
//!   each lookup (the public sans-IO `Lookup`) is driven synchronously.
//! - One provider (node 0) provides `K` random keys (`keys`: generated region by region in
//!   keyspace order from a seeded generator, never all in memory).
//! - Sweep (`sweep`, as `kadence::provider`): region depth = the provider's leading full
//!   buckets; per region with keys, one lookup (4k results) for the middle key of its first
//!   page of `keys_per_page` keys; each key to its 20 closest among the peers found.
//! - Naive (`naive`): per key, one lookup (k = 20), then ADD_PROVIDER to its 20 results; on
//!   every key up to 100,000 keys, on a random sample (extrapolated, labelled) above.
//! - Placement: for each key, how many of its 20 true closest nodes in the network (the
//!   provider excluded) got its ADD_PROVIDER. Cost: lookups, FIND_NODE requests, ADD_PROVIDER
//!   messages and their bytes (`model`: the real encoding), CPU, peak RSS, and a time model of
//!   the regions against their slots in the 22 h interval.
//!
//! `cargo bench --bench reprovide` runs N = 1,000 with K = 10,000 and K = 100,000;
//! `cargo bench --bench reprovide -- --nodes 10000 --keys 10000000` runs one case. Options:
//! `--seed S`, `--threads T` (2), `--naive full|sample|off`, `--naive-sample S` (1,000),
//! `--sweep-k K'`, `--extra-depth E`, `--keys-per-page P`, `--workers W`,
//! `--per-peer-in-flight F`, `--rtt-ms R` (100), `--lookup-s L` (1).

#[path = "../support/cpu.rs"]
mod cpu;
mod keys;
mod model;
mod naive;
mod net;
mod report;
mod sweep;

use std::time::Instant;

use kadence::key::Key;
use kadence::ReprovideConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use keys::{KeySpace, GEN_DEPTH};
use model::TimeModel;
use net::Network;
use sweep::SweepParams;

/// Bucket size, answer size and replication factor.
pub const K: usize = 20;
/// The placement goal: each key held by at least this many of its K true closest.
pub const GOAL_HELD: usize = 15;
const MAX_NODES: usize = 20_000;
/// Above this many keys the naive baseline runs on a sample.
const NAIVE_FULL_MAX: usize = 100_000;

#[derive(Clone, Copy, PartialEq)]
enum NaiveMode {
    Full,
    Sample,
    Off,
}

pub struct Options {
    nodes: usize,
    keys: Vec<usize>,
    seed: u64,
    threads: usize,
    naive: Option<NaiveMode>,
    naive_sample: usize,
    params: SweepParams,
    model: TimeModel,
    window: usize,
}

const USAGE: &str = "reprovide [--nodes N (61..=20000)] [--keys K] [--seed S] [--threads T] \
                     [--naive full|sample|off] [--naive-sample S] [--sweep-k K'] \
                     [--extra-depth E] [--keys-per-page P] [--workers W] \
                     [--per-peer-in-flight F] [--rtt-ms R] [--lookup-s L]";

fn parse(args: &[String]) -> Result<Options, String> {
    let config = ReprovideConfig::default();
    let mut o = Options {
        nodes: 1000,
        keys: vec![10_000, 100_000],
        seed: 1,
        threads: 2,
        naive: None,
        naive_sample: 1000,
        params: SweepParams {
            k: 4 * K,
            extra_depth: 0,
            keys_per_page: config.keys_per_page,
        },
        model: TimeModel {
            lookup_s: 1.0,
            rtt_s: 0.1,
            workers: config.workers,
            interval_s: config.interval.as_secs_f64(),
        },
        window: config.per_peer_in_flight,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (arg.as_str(), None),
        };
        let mut value = || -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or(format!("{name} needs a value"))
        };
        let number = |v: String| -> Result<u64, String> {
            v.parse::<u64>()
                .map_err(|_| format!("{name} needs a number"))
        };
        match name {
            "--nodes" => o.nodes = number(value()?)? as usize,
            "--keys" => o.keys = vec![number(value()?)? as usize],
            "--seed" => o.seed = number(value()?)?,
            "--threads" => o.threads = number(value()?)?.max(1) as usize,
            "--naive" => {
                o.naive = Some(match value()?.as_str() {
                    "full" => NaiveMode::Full,
                    "sample" => NaiveMode::Sample,
                    "off" => NaiveMode::Off,
                    _ => return Err("--naive is full, sample or off".into()),
                })
            }
            "--naive-sample" => o.naive_sample = number(value()?)?.max(1) as usize,
            "--sweep-k" => o.params.k = number(value()?)? as usize,
            "--extra-depth" => o.params.extra_depth = number(value()?)? as usize,
            "--keys-per-page" => o.params.keys_per_page = number(value()?)?.max(1) as usize,
            "--workers" => o.model.workers = number(value()?)?.max(1) as usize,
            "--per-peer-in-flight" => o.window = number(value()?)?.max(1) as usize,
            "--rtt-ms" => o.model.rtt_s = number(value()?)? as f64 / 1000.0,
            "--lookup-s" => {
                o.model.lookup_s = value()?
                    .parse::<f64>()
                    .map_err(|_| "--lookup-s needs a number".to_string())?
            }
            // cargo bench passes --bench; anything else (a filter) is ignored too.
            _ => {}
        }
    }
    if !(4 * K + 1..=MAX_NODES).contains(&o.nodes) {
        return Err(format!(
            "--nodes must be between {} and {MAX_NODES}",
            4 * K + 1
        ));
    }
    if !(K..o.nodes).contains(&o.params.k) {
        return Err("--sweep-k must be between 20 and the node count - 1".into());
    }
    if o.keys.contains(&0) {
        return Err("--keys must be positive".into());
    }
    Ok(o)
}

/// Peak resident set size of the process so far, in bytes (VmHWM).
fn peak_rss() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Uniform random points: the naive baseline's sample (the provided keys' distribution).
fn sample_points(count: usize, seed: u64) -> Vec<Key> {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5a5a_5a5a);
    (0..count)
        .map(|_| {
            let mut bytes = [0u8; 32];
            rng.fill_bytes(&mut bytes);
            Key::from_hash(bytes)
        })
        .collect()
}

fn run(net: &Network, provider: usize, key_count: usize, o: &Options) -> bool {
    let depth = (net.leading_full_buckets(provider) + o.params.extra_depth).min(GEN_DEPTH);
    let wall = Instant::now();
    let cpu = cpu::process_cpu_ns();
    let space = KeySpace::new(key_count, o.seed ^ key_count as u64);
    let sweep = sweep::sweep(net, provider, &space, depth, o.params, o.window, o.threads);
    let sweep_wall = wall.elapsed();
    let sweep_cpu = cpu::process_cpu_ns().saturating_sub(cpu);
    let rss = peak_rss();
    assert_eq!(sweep.keys(), key_count as u64, "every key swept once");

    let mode = o.naive.unwrap_or(if key_count <= NAIVE_FULL_MAX {
        NaiveMode::Full
    } else {
        NaiveMode::Sample
    });
    let naive = match mode {
        NaiveMode::Off => None,
        NaiveMode::Full => {
            let mut all = Vec::with_capacity(key_count);
            let mut region = Vec::new();
            for b in 0..1u64 << 8 {
                space.region(b, 8, &mut region);
                all.extend_from_slice(&region);
            }
            Some(naive::naive(net, provider, &all))
        }
        NaiveMode::Sample => Some(naive::naive(
            net,
            provider,
            &sample_points(o.naive_sample.min(key_count), o.seed),
        )),
    };
    report::case(&report::Case {
        net,
        keys: key_count,
        depth,
        options: o,
        sweep: &sweep,
        naive: naive.as_ref(),
        sweep_wall,
        sweep_cpu_ns: sweep_cpu,
        peak_rss: rss,
    })
}

fn main() {
    let o = options();
    let wall = Instant::now();
    let mut rng = StdRng::seed_from_u64(o.seed);
    let provider = 0;
    let built = Instant::now();
    let net = Network::new(o.nodes, provider, &mut rng);
    report::header(&net, provider, &o, built.elapsed());
    let mut all_met = true;
    for &k in &o.keys {
        all_met &= run(&net, provider, k, &o);
    }
    println!();
    println!(
        "Wall time of the whole run: {:.2} s, process CPU {:.2} s, peak RSS {} ({})",
        wall.elapsed().as_secs_f64(),
        cpu::process_cpu_ns() as f64 / 1e9,
        report::bytes(peak_rss()),
        if all_met {
            "all goals met"
        } else {
            "some goal NOT met"
        }
    );
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().skip(1).collect();
    parse(&args).unwrap_or_else(|e| {
        eprintln!("reprovide bench: {e}\nusage: {USAGE}");
        std::process::exit(2);
    })
}
