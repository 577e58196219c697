//! What one implementation's run measured, and the side-by-side table and JSON of all runs.

use std::time::Duration;

use crate::crawl::CrawlReport;
use crate::options::{Kind, Options};
use crate::queries::{ACCELERATED_FINDS, ACCELERATED_LOOKUPS, ACCELERATED_PROVIDES};

/// kadence's operations finished, and those accelerated (`QueryStats::accelerated`), as
/// (finished, accelerated) per kind.
#[derive(Clone, Copy, Default, Debug)]
pub struct Shares {
    pub lookups: (u64, u64),
    pub provides: (u64, u64),
    pub finds: (u64, u64),
}

impl Shares {
    /// The counts so far, every network.
    pub fn read() -> Self {
        Self {
            lookups: ACCELERATED_LOOKUPS.read(),
            provides: ACCELERATED_PROVIDES.read(),
            finds: ACCELERATED_FINDS.read(),
        }
    }

    /// What was counted after `before`.
    pub fn since(&self, before: &Shares) -> Self {
        let d = |a: (u64, u64), b: (u64, u64)| (a.0 - b.0, a.1 - b.1);
        Self {
            lookups: d(self.lookups, before.lookups),
            provides: d(self.provides, before.provides),
            finds: d(self.finds, before.finds),
        }
    }
}

/// The share of `counts` accelerated.
fn share(counts: Option<(u64, u64)>) -> f64 {
    match counts {
        Some((finished, accelerated)) if finished > 0 => accelerated as f64 / finished as f64,
        _ => f64::NAN,
    }
}

#[derive(Default)]
pub struct Report {
    pub kind: Kind,
    /// The network's name in the table (with its alpha when set).
    pub name: String,
    /// Lookups started (`--kad-lookups` runs fewer on libp2p-kad's networks).
    pub lookups_asked: usize,
    pub latency_ms: Vec<f64>,
    pub recall: Vec<f64>,
    pub requests: Vec<f64>,
    pub returned: Vec<f64>,
    pub failures: Vec<f64>,
    /// Per lookup: returned peers that churn stopped or silenced.
    pub down_returned: Vec<f64>,
    /// Connections opened by the dialling side during the lookup phase, per lookup done.
    pub dials_per_lookup: f64,
    /// Bytes written on every connection during the lookup phase, per lookup done.
    pub bytes_per_lookup: f64,
    /// CPU time of the whole process (every node) during the lookup phase, per lookup done.
    pub cpu_ms_per_lookup: f64,
    /// Live heap per node once the tables settled, and its peak over the run.
    pub heap_settled_per_node: f64,
    pub heap_peak_per_node: f64,
    pub provides: usize,
    /// Latency of the provides that succeeded.
    pub provide_ms: Vec<f64>,
    /// Time until the provider was found, for the finds that found it.
    pub find_ms: Vec<f64>,
    pub setup_s: f64,
    /// Peers each live node had a connection to when the lookups began, and at the end.
    pub connected_per_node: f64,
    pub connected_end_per_node: f64,
    /// Per provided key: how many of its K closest live peers hold the record, read from
    /// every node's store once the provides are done.
    pub placement: Vec<f64>,
    /// With churn: the share of live nodes' routing-table entries that point to churned
    /// nodes, when the lookups begin and at the end.
    pub stale_at_start: Option<f64>,
    pub stale_at_end: Option<f64>,
    pub table_removals: usize,
    /// The accelerated client's crawls and tables (`kadence-accel` only).
    pub crawl: Option<CrawlReport>,
    /// kadence's operations that started from the full table, from the churn (or the first
    /// lookup) to the end.
    pub accelerated: Option<Shares>,
}

fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((p * (v.len() - 1) as f64).round() as usize).min(v.len() - 1);
    v[i]
}

fn mean(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

fn min(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::min).unwrap_or(f64::NAN)
}

/// Share of `values` at least `floor`.
fn share_at_least(values: &[f64], floor: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.iter().filter(|&&v| v >= floor).count() as f64 / values.len() as f64
}

/// Only runs with churn have anything down: elsewhere the row stays out of the table.
fn with_churn(r: &Report, value: f64) -> f64 {
    if r.stale_at_start.is_some() {
        value
    } else {
        f64::NAN
    }
}

/// A measure of the accelerated client's crawls; not a number for the other networks.
fn crawl(r: &Report, value: impl Fn(&CrawlReport) -> f64) -> f64 {
    r.crawl.as_ref().map_or(f64::NAN, value)
}

/// A value in the table: "n/a" where the network has none.
fn cell(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "n/a".into()
    }
}

/// One row of the table: its name, its JSON field, and how to read it off a report.
struct Metric {
    name: &'static str,
    field: &'static str,
    value: fn(&Report) -> f64,
    decimals: usize,
}

const METRICS: &[Metric] = &[
    Metric {
        name: "lookup latency p50 (ms)",
        field: "latency_ms_p50",
        value: |r| percentile(&r.latency_ms, 0.5),
        decimals: 0,
    },
    Metric {
        name: "lookup latency p95 (ms)",
        field: "latency_ms_p95",
        value: |r| percentile(&r.latency_ms, 0.95),
        decimals: 0,
    },
    Metric {
        name: "recall, mean",
        field: "recall_mean",
        value: |r| mean(&r.recall),
        decimals: 3,
    },
    Metric {
        name: "recall, p5",
        field: "recall_p5",
        value: |r| percentile(&r.recall, 0.05),
        decimals: 2,
    },
    Metric {
        name: "peers returned, mean",
        field: "returned_mean",
        value: |r| mean(&r.returned),
        decimals: 1,
    },
    Metric {
        name: "returned peers that are down, mean",
        field: "down_returned_mean",
        value: |r| with_churn(r, mean(&r.down_returned)),
        decimals: 2,
    },
    Metric {
        name: "requests per lookup p50",
        field: "requests_p50",
        value: |r| percentile(&r.requests, 0.5),
        decimals: 0,
    },
    Metric {
        name: "requests per lookup p95",
        field: "requests_p95",
        value: |r| percentile(&r.requests, 0.95),
        decimals: 0,
    },
    Metric {
        name: "failed requests per lookup, mean",
        field: "failures_mean",
        value: |r| mean(&r.failures),
        decimals: 2,
    },
    Metric {
        name: "new connections per lookup (dialler side, whole network)",
        field: "dials_per_lookup",
        value: |r| r.dials_per_lookup,
        decimals: 2,
    },
    Metric {
        name: "bytes sent per lookup (KiB, whole network)",
        field: "kib_per_lookup",
        value: |r| r.bytes_per_lookup / 1024.0,
        decimals: 1,
    },
    Metric {
        name: "CPU per lookup (ms, whole network)",
        field: "cpu_ms_per_lookup",
        value: |r| r.cpu_ms_per_lookup,
        decimals: 2,
    },
    Metric {
        name: "heap per node, settled (KiB)",
        field: "heap_kib_settled_per_node",
        value: |r| r.heap_settled_per_node / 1024.0,
        decimals: 0,
    },
    Metric {
        name: "heap per node, peak (KiB)",
        field: "heap_kib_peak_per_node",
        value: |r| r.heap_peak_per_node / 1024.0,
        decimals: 0,
    },
    Metric {
        name: "provide latency p50 (ms)",
        field: "provide_ms_p50",
        value: |r| percentile(&r.provide_ms, 0.5),
        decimals: 0,
    },
    Metric {
        name: "provide latency p95 (ms)",
        field: "provide_ms_p95",
        value: |r| percentile(&r.provide_ms, 0.95),
        decimals: 0,
    },
    Metric {
        name: "provides that succeeded",
        field: "provide_success",
        value: |r| r.provide_ms.len() as f64 / r.provides.max(1) as f64,
        decimals: 2,
    },
    Metric {
        name: "provider record on the 20 closest live peers: min",
        field: "placement_min",
        value: |r| min(&r.placement),
        decimals: 0,
    },
    Metric {
        name: "provider record on the 20 closest live peers: p5",
        field: "placement_p5",
        value: |r| percentile(&r.placement, 0.05),
        decimals: 0,
    },
    Metric {
        name: "provider record on the 20 closest live peers: mean",
        field: "placement_mean",
        value: |r| mean(&r.placement),
        decimals: 2,
    },
    Metric {
        name: "keys on >= 15 of their 20 closest live peers (share)",
        field: "placement_at_least_15",
        value: |r| share_at_least(&r.placement, 15.0),
        decimals: 2,
    },
    Metric {
        name: "keys on >= 18 of their 20 closest live peers (share)",
        field: "placement_at_least_18",
        value: |r| share_at_least(&r.placement, 18.0),
        decimals: 2,
    },
    Metric {
        name: "find-providers success (another node)",
        field: "find_success",
        value: |r| r.find_ms.len() as f64 / r.provides.max(1) as f64,
        decimals: 2,
    },
    Metric {
        name: "find-providers: time to the provider p50 (ms)",
        field: "find_ms_p50",
        value: |r| percentile(&r.find_ms, 0.5),
        decimals: 0,
    },
    Metric {
        name: "lookups done",
        field: "lookups",
        value: |r| r.latency_ms.len() as f64,
        decimals: 0,
    },
    Metric {
        name: "lookups asked",
        field: "lookups_asked",
        value: |r| r.lookups_asked as f64,
        decimals: 0,
    },
    Metric {
        name: "peers connected per node at the first lookup",
        field: "connected_per_node",
        value: |r| r.connected_per_node,
        decimals: 1,
    },
    Metric {
        name: "peers connected per node at the end",
        field: "connected_end_per_node",
        value: |r| r.connected_end_per_node,
        decimals: 1,
    },
    Metric {
        name: "routing-table entries pointing to down nodes, first lookup (share)",
        field: "stale_entries_at_start",
        value: |r| r.stale_at_start.unwrap_or(f64::NAN),
        decimals: 3,
    },
    Metric {
        name: "routing-table entries pointing to down nodes, end (share)",
        field: "stale_entries_at_end",
        value: |r| r.stale_at_end.unwrap_or(f64::NAN),
        decimals: 3,
    },
    Metric {
        name: "lookups accelerated (share)",
        field: "accelerated_lookups",
        value: |r| share(r.accelerated.map(|s| s.lookups)),
        decimals: 3,
    },
    Metric {
        name: "provides accelerated (share)",
        field: "accelerated_provides",
        value: |r| share(r.accelerated.map(|s| s.provides)),
        decimals: 3,
    },
    Metric {
        name: "find-providers accelerated (share)",
        field: "accelerated_finds",
        value: |r| share(r.accelerated.map(|s| s.finds)),
        decimals: 3,
    },
    Metric {
        name: "crawl: nodes finished (share)",
        field: "crawl_finished_share",
        value: |r| {
            crawl(r, |c| {
                c.main().finished as f64 / c.main().nodes.max(1) as f64
            })
        },
        decimals: 3,
    },
    Metric {
        name: "crawl: every node done, wall (s)",
        field: "crawl_wall_s",
        value: |r| crawl(r, |c| c.main().wall_s),
        decimals: 1,
    },
    Metric {
        name: "crawl: duration mean (s)",
        field: "crawl_s_mean",
        value: |r| crawl(r, |c| c.main().duration_ms_mean / 1000.0),
        decimals: 1,
    },
    Metric {
        name: "crawl: duration max (s)",
        field: "crawl_s_max",
        value: |r| crawl(r, |c| c.main().duration_ms_max / 1000.0),
        decimals: 1,
    },
    Metric {
        name: "crawl: requests per crawl, mean",
        field: "crawl_requests_mean",
        value: |r| crawl(r, |c| c.main().requests_mean),
        decimals: 0,
    },
    Metric {
        name: "crawl: requests failed per crawl, mean",
        field: "crawl_failed_mean",
        value: |r| crawl(r, |c| c.main().failed_mean),
        decimals: 1,
    },
    Metric {
        name: "crawl: KiB sent per crawl (whole network)",
        field: "crawl_kib_mean",
        value: |r| crawl(r, |c| c.main().kib_per_crawl.unwrap_or(f64::NAN)),
        decimals: 0,
    },
    Metric {
        name: "crawl: peers crawled at once, max",
        field: "crawl_peak_peers_in_flight_max",
        value: |r| crawl(r, |c| c.main().peak_peers_in_flight_max as f64),
        decimals: 0,
    },
    Metric {
        name: "crawl: connections open at once per node, mean",
        field: "crawl_peak_connections_mean",
        value: |r| crawl(r, |c| c.main().peak_connections_mean),
        decimals: 1,
    },
    Metric {
        name: "crawl: connections open at once per node, max",
        field: "crawl_peak_connections_max",
        value: |r| crawl(r, |c| c.main().peak_connections_max as f64),
        decimals: 0,
    },
    Metric {
        name: "crawl: full-table peers per node, mean",
        field: "crawl_table_peers_mean",
        value: |r| crawl(r, |c| c.main().table_peers_mean),
        decimals: 1,
    },
    Metric {
        name: "crawl: full-table peers per node, min",
        field: "crawl_table_peers_min",
        value: |r| crawl(r, |c| c.main().table_peers_min as f64),
        decimals: 0,
    },
    Metric {
        name: "first crawl (beside the bootstrap): duration mean (s)",
        field: "first_crawl_s_mean",
        value: |r| crawl(r, |c| c.first.duration_ms_mean / 1000.0),
        decimals: 1,
    },
    Metric {
        name: "first crawl: every node done, after the start (s)",
        field: "first_crawl_done_after_start_s",
        value: |r| crawl(r, |c| c.first_done_after_start_s),
        decimals: 1,
    },
    Metric {
        name: "first crawl: full-table peers per node, mean",
        field: "first_crawl_table_peers_mean",
        value: |r| crawl(r, |c| c.first.table_peers_mean),
        decimals: 1,
    },
    Metric {
        name: "full table: heap per known peer (bytes)",
        field: "table_bytes_per_peer",
        value: |r| crawl(r, |c| c.table_bytes_per_peer),
        decimals: 0,
    },
    Metric {
        name: "full table: heap per node (KiB)",
        field: "table_kib_per_node",
        value: |r| crawl(r, |c| c.table_bytes_per_node / 1024.0),
        decimals: 1,
    },
    Metric {
        name: "heap left per node by a crawl (KiB)",
        field: "crawl_heap_growth_kib_per_node",
        value: |r| {
            crawl(r, |c| {
                c.heap_growth_per_node_second_crawl
                    .map_or(f64::NAN, |b| b / 1024.0)
            })
        },
        decimals: 1,
    },
    Metric {
        name: "setup: start, bootstrap, settle (s)",
        field: "setup_s",
        value: |r| r.setup_s,
        decimals: 1,
    },
];

/// The table: a row per metric, a column per implementation, and kadence's value divided by
/// each other implementation's.
pub fn print(command: &str, wall: Duration, reports: &[Report]) {
    let (first, others) = reports.split_first().expect("at least one run");
    println!("\n`{command}`: wall {:.0} s\n", wall.as_secs_f64());
    let mut header = format!("| measure | {}", first.name);
    let mut rule = String::from("|---|---:");
    for other in others {
        header += &format!(" | {} | {} ÷ it", other.name, first.name);
        rule += "|---:|---:";
    }
    println!("{header} |\n{rule}|");
    for metric in METRICS {
        if reports.iter().all(|r| !(metric.value)(r).is_finite()) {
            continue;
        }
        let ours = (metric.value)(first);
        let mut row = format!("| {} | {}", metric.name, cell(ours, metric.decimals));
        for other in others {
            let theirs = (metric.value)(other);
            row += &format!(
                " | {} | {}",
                cell(theirs, metric.decimals),
                cell(ours / theirs, 2)
            );
        }
        println!("{row} |");
    }
    for r in reports.iter().filter(|r| r.kind.is_kadence()) {
        println!(
            "\n{}: routing-table removals during the run: {}",
            r.name, r.table_removals
        );
    }
}

/// The run as JSON: its configuration, every metric per network, and the raw latencies (for
/// other plots).
pub fn json(
    options: &Options,
    wall: Duration,
    reports: &[Report],
    files: &[String],
) -> serde_json::Value {
    let results: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mut row = serde_json::Map::new();
            row.insert("implementation".into(), r.name.clone().into());
            row.insert("network".into(), r.kind.flag().into());
            for metric in METRICS {
                let v = (metric.value)(r);
                row.insert(
                    metric.field.into(),
                    if v.is_finite() {
                        v.into()
                    } else {
                        serde_json::Value::Null
                    },
                );
            }
            if let Some(c) = &r.crawl {
                row.insert("crawl".into(), serde_json::to_value(c).expect("crawl json"));
            }
            if let Some(s) = r.accelerated {
                row.insert(
                    "accelerated_counts".into(),
                    serde_json::json!({
                        "lookups": {"finished": s.lookups.0, "accelerated": s.lookups.1},
                        "provides": {"finished": s.provides.0, "accelerated": s.provides.1},
                        "finds": {"finished": s.finds.0, "accelerated": s.finds.1},
                    }),
                );
            }
            row.insert(
                "samples".into(),
                serde_json::json!({
                    "lookup_ms": r.latency_ms,
                    "provide_ms": r.provide_ms,
                    "placement": r.placement,
                }),
            );
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::json!({
        "command": options.command(),
        "label": options.label(),
        "config": options.json(),
        "nodes": options.nodes,
        "seed": options.seed,
        "files": files,
        "revision": revision(),
        "unix_time_s": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "wall_s": wall.as_secs_f64(),
        "results": results,
    })
}

/// The commit measured, with `-dirty` when the tree had changes, so tracked results can be tied
/// to code; `null` outside a git checkout.
fn revision() -> Option<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let head = git(&["rev-parse", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{head}-dirty") } else { head })
}
