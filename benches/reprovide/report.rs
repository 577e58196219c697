//! The report: markdown tables on stdout.

use std::time::Duration;

use crate::model::add_provider_bytes;
use crate::naive::Naive;
use crate::net::Network;
use crate::sweep::Tally;
use crate::{Options, GOAL_HELD, K};

/// Share of the keys that must reach all K of their true closest.
const GOAL_ALL_SHARE: f64 = 99.0;
/// The lookup-reduction goal at 100,000 keys, in percent.
const GOAL_REDUCTION: f64 = 97.0;

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut s = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            s.push(',');
        }
        s.push(c);
    }
    s
}

pub fn bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else {
        format!("{:.1} KiB", n / 1024.0)
    }
}

fn hours(s: f64) -> String {
    format!("{:.2} h", s / 3600.0)
}

/// The placement of a histogram: mean, min, 1st percentile, share with all K, share >= goal.
struct Placement {
    mean: f64,
    min: usize,
    p1: usize,
    all: f64,
    goal: f64,
}

fn placement(held: &[u64; K + 1]) -> Placement {
    let total: u64 = held.iter().sum::<u64>().max(1);
    let mean = held
        .iter()
        .enumerate()
        .map(|(h, n)| h as f64 * *n as f64)
        .sum::<f64>()
        / total as f64;
    let min = held.iter().position(|n| *n > 0).unwrap_or(0);
    // The smallest h with at least 1% of the keys at or below it.
    let mut below = 0;
    let mut p1 = K;
    for (h, n) in held.iter().enumerate() {
        below += n;
        if below * 100 >= total {
            p1 = h;
            break;
        }
    }
    let share = |from: usize| 100.0 * held[from..].iter().sum::<u64>() as f64 / total as f64;
    Placement {
        mean,
        min,
        p1,
        all: share(K),
        goal: share(GOAL_HELD),
    }
}

pub fn header(net: &Network, provider: usize, o: &Options, built: Duration) {
    let tables: usize = net.tables.iter().map(Vec::len).sum();
    println!(
        "# Reprovide: keyspace sweep vs one lookup per key (simulated, seed {})\n\n\
         {} nodes, k-bucket views of {:.0} peers on average (provider: {}, {} leading full \
         buckets), built in {:.2} s. Lookups are kadence's sans-IO Lookup (alpha 10, beta 3, \
         KClosestAnswered), every request answered at once; placement counts the \
         provider-excluded true closest. {} threads.",
        o.seed,
        thousands(net.len() as u64),
        tables as f64 / net.len() as f64,
        net.tables[provider].len(),
        net.leading_full_buckets(provider),
        built.as_secs_f64(),
        o.threads,
    );
}

pub struct Case<'a> {
    pub net: &'a Network,
    pub keys: usize,
    pub depth: usize,
    pub options: &'a Options,
    pub sweep: &'a Tally,
    pub naive: Option<&'a Naive>,
    pub sweep_wall: Duration,
    pub sweep_cpu_ns: u64,
    pub peak_rss: u64,
}

/// Prints one case; returns whether every goal was met.
pub fn case(c: &Case) -> bool {
    let s = c.sweep;
    let o = c.options;
    let keys = c.keys as u64;
    let regions = 1u64 << c.depth;
    let (body, frame) = add_provider_bytes();
    let p = placement(&s.held);
    println!();
    println!(
        "### N = {} nodes, K = {} keys (k = {K}, sweep k' = {}, {} keys per page{})",
        thousands(c.net.len() as u64),
        thousands(keys),
        o.params.k,
        thousands(o.params.keys_per_page as u64),
        if o.params.extra_depth > 0 {
            format!(", depth = leading full buckets + {}", o.params.extra_depth)
        } else {
            String::new()
        }
    );
    println!();
    // The naive column: measured on every key, or on a sample and scaled to K.
    let (naive_label, scale) = match c.naive {
        Some(n) if n.keys as u64 == keys => ("naive (lookup per key)".to_string(), 1.0),
        Some(n) => (
            format!(
                "naive, EXTRAPOLATED from {} sampled keys (x{:.0})",
                thousands(n.keys as u64),
                keys as f64 / n.keys as f64
            ),
            keys as f64 / n.keys as f64,
        ),
        None => ("naive: not run".to_string(), 0.0),
    };
    let nv = |f: &dyn Fn(&Naive) -> f64| -> String {
        c.naive
            .map_or("-".into(), |n| thousands((f(n) * scale).round() as u64))
    };
    println!("| | sweep | {naive_label} |");
    println!("|---|---:|---:|");
    let row = |name: &str, a: String, b: String| println!("| {name} | {a} | {b} |");
    row(
        "regions (depth); with keys",
        format!(
            "{} (d = {}); {}",
            thousands(regions),
            c.depth,
            thousands(s.regions.len() as u64)
        ),
        "-".into(),
    );
    row(
        "keys per region with keys: mean, max (pages: mean)",
        format!(
            "{:.0}, {} ({:.2})",
            keys as f64 / s.regions.len().max(1) as f64,
            thousands(s.regions.iter().map(|r| r.keys as u64).max().unwrap_or(0)),
            s.regions.iter().map(|r| r.pages).sum::<usize>() as f64 / s.regions.len().max(1) as f64
        ),
        "-".into(),
    );
    row(
        "lookups per interval",
        thousands(s.lookups as u64),
        nv(&|n| n.lookups as f64),
    );
    row(
        "FIND_NODE requests",
        thousands(s.find_node as u64),
        nv(&|n| n.find_node as f64),
    );
    row(
        "FIND_NODE per lookup",
        format!("{:.1}", s.find_node as f64 / s.lookups.max(1) as f64),
        c.naive.map_or("-".into(), |n| {
            format!("{:.1}", n.find_node as f64 / n.lookups.max(1) as f64)
        }),
    );
    row(
        "ADD_PROVIDER messages",
        thousands(s.add_provider),
        nv(&|n| n.add_provider as f64),
    );
    row(
        &format!("ADD_PROVIDER bytes ({frame} B a frame: {body} B body + length prefix)"),
        bytes(s.add_provider * frame as u64),
        c.naive.map_or("-".into(), |n| {
            bytes((n.add_provider as f64 * scale) as u64 * frame as u64)
        }),
    );
    row(
        "distinct peers sent any message",
        thousands(s.peers() as u64),
        c.naive.map_or("-".into(), |n| {
            if scale == 1.0 {
                thousands(n.peers as u64)
            } else {
                format!("{} (in the sample)", thousands(n.peers as u64))
            }
        }),
    );
    let np = c.naive.map(|n| placement(&n.held));
    let nf = |f: &dyn Fn(&Placement) -> String| np.as_ref().map_or("-".into(), f);
    row(
        "true 20 closest holding a key: mean",
        format!("{:.3}", p.mean),
        nf(&|p| format!("{:.3}", p.mean)),
    );
    row(
        "... min / 1st percentile",
        format!("{} / {}", p.min, p.p1),
        nf(&|p| format!("{} / {}", p.min, p.p1)),
    );
    row(
        "keys held by all 20",
        format!("{:.4}%", p.all),
        nf(&|p| format!("{:.4}%", p.all)),
    );
    row(
        "keys held by >= 15",
        format!("{:.4}%", p.goal),
        nf(&|p| format!("{:.4}%", p.goal)),
    );
    row(
        "CPU per key: the provider's per-key planning",
        format!("{:.2} us", s.plan_cpu_ns as f64 / 1e3 / keys as f64),
        "-".into(),
    );
    row(
        "CPU per key: whole simulation (incl. measuring)",
        format!("{:.2} us", c.sweep_cpu_ns as f64 / 1e3 / keys as f64),
        c.naive.map_or("-".into(), |n| {
            format!("{:.1} us", n.cpu_ns as f64 / 1e3 / n.keys.max(1) as f64)
        }),
    );
    row(
        "simulation wall time / CPU",
        format!(
            "{:.2} s / {:.2} s",
            c.sweep_wall.as_secs_f64(),
            c.sweep_cpu_ns as f64 / 1e9
        ),
        c.naive.map_or("-".into(), |n| {
            format!("CPU {:.2} s", n.cpu_ns as f64 / 1e9)
        }),
    );
    row(
        "peak RSS of the process (after the sweep)",
        bytes(c.peak_rss),
        "-".into(),
    );
    println!();
    print!("Placement (keys by true closest holding them):");
    for (h, n) in s.held.iter().enumerate() {
        if *n > 0 {
            print!(" {h}: {}", thousands(*n));
        }
    }
    println!();

    let m = o.model;
    let sched = m.schedule(&s.regions, c.depth);
    println!();
    println!(
        "Time model: a region takes its lookup ({:.1} s) plus, page after page, \
         ceil(most messages to one peer / {}) round trips of {:.0} ms ({} per-peer in flight, \
         every peer in parallel, connections open since the lookup); {} workers; region r \
         comes due at {} x r / {}. Regions: {:.1} s on average, {:.1} s at most; worst start \
         behind its slot {:.1} s; the cycle's last region ends at {} of {}; workers {:.1}% busy.",
        m.lookup_s,
        o.window,
        m.rtt_s * 1000.0,
        o.window,
        m.workers,
        hours(m.interval_s),
        thousands(regions),
        sched.region_mean_s,
        sched.region_max_s,
        sched.max_behind_s,
        hours(sched.last_end_s),
        hours(m.interval_s),
        100.0 * sched.utilisation,
    );
    println!();
    println!(
        "Sweep regions: {:.1} nodes on average (min {}, max {}); {} with more than {sk}, {} \
         with fewer than {K}. Region lookups found {:.2}% of the {sk} true closest to their \
         target, and {:.2}% of the nodes of regions with at most {sk}. Keys whose true 20 are \
         not all among their target's true {sk}: {}. Keys not on all 20 of their true closest: {}, \
         {} of them with all 20 among their target's true {sk} (the region lookup missed \
         peers a perfect lookup would have returned).",
        s.region_nodes_sum as f64 / s.regions.len().max(1) as f64,
        s.region_nodes_min,
        s.region_nodes_max,
        s.regions_over,
        s.regions_under,
        100.0 * s.lookup_recall / s.regions.len().max(1) as f64,
        100.0 * s.small_region_found as f64 / s.small_region_nodes.max(1) as f64,
        thousands(s.keys_unreachable),
        thousands(s.below_all),
        thousands(s.below_all_by_lookup),
        sk = o.params.k,
    );

    let lookups_met = s.lookups as u64 <= regions;
    let min_met = p.min >= GOAL_HELD;
    let all_met = p.all >= GOAL_ALL_SHARE;
    // Every key is announced once per interval when every region starts at its slot (no
    // worker shortage: later than one slot spacing would let the lag build up) and is done
    // well within the interval.
    let spacing = m.interval_s / regions as f64;
    let time_met = sched.max_behind_s < spacing
        && sched.region_max_s < m.interval_s / 8.0
        && sched.utilisation < 1.0;
    let mark = |met: bool| if met { "met" } else { "NOT met" };
    println!();
    println!(
        "- Goal: lookups per interval about the number of regions: {} lookups for {} regions \
         ({:.3} per region) -> {}",
        thousands(s.lookups as u64),
        thousands(regions),
        s.lookups as f64 / regions as f64,
        mark(lookups_met)
    );
    println!(
        "- Goal: every key held by >= {GOAL_HELD} of its true 20: min {} -> {}",
        p.min,
        mark(min_met)
    );
    println!(
        "- Goal: >= {GOAL_ALL_SHARE}% of keys held by all 20: {:.4}% -> {}",
        p.all,
        mark(all_met)
    );
    println!(
        "- Goal: every key announced within the {} interval (time model: every region starts \
         within one slot spacing, {:.1} s, of its slot and takes under interval/8, the \
         provider's due margin): worst start {:.1} s late, longest region {:.1} s, workers \
         {:.1}% busy -> {}",
        hours(m.interval_s),
        spacing,
        sched.max_behind_s,
        sched.region_max_s,
        100.0 * sched.utilisation,
        mark(time_met)
    );
    let mut reduction_met = true;
    if let Some(n) = c.naive {
        let reduction = 100.0 * (1.0 - s.lookups as f64 / (n.lookups as f64 * scale));
        let label = if scale == 1.0 {
            ""
        } else {
            ", naive extrapolated"
        };
        if c.keys == 100_000 {
            reduction_met = reduction >= GOAL_REDUCTION;
        }
        println!(
            "- Lookup reduction against the naive reprovide: {reduction:.4}%{label}{}",
            if c.keys == 100_000 {
                format!(
                    " (goal >= {GOAL_REDUCTION}% at 100,000 keys -> {})",
                    mark(reduction_met)
                )
            } else {
                String::new()
            }
        );
    }
    if !s.misses.is_empty() {
        println!(
            "- Sweep keys below {GOAL_HELD}: {} ({} although a perfect region lookup would have \
             placed them on >= {GOAL_HELD}, {} not even then); the worst regions:",
            thousands(s.missed_by_lookup + s.missed_by_geometry),
            thousands(s.missed_by_lookup),
            thousands(s.missed_by_geometry),
        );
        println!();
        println!(
            "| region (d = {}) | nodes | found | keys | pages | target at | below {GOAL_HELD} | \
             fewest held | fewest reachable |",
            c.depth
        );
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for miss in s.misses.iter().take(12) {
            println!(
                "| {} | {} | {} | {} | {} | {:.2} | {} | {} | {} |",
                miss.index,
                miss.nodes,
                miss.nodes_found,
                thousands(miss.keys as u64),
                miss.pages,
                miss.target_at,
                thousands(miss.missed as u64),
                miss.min_held,
                miss.min_reachable
            );
        }
    }
    lookups_met && min_met && all_met && time_met && reduction_met
}
