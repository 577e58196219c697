//! What one implementation's run measured, and the side-by-side table and JSON of all runs.

use std::time::Duration;

use crate::Kind;

#[derive(Default)]
pub struct Report {
    pub kind: Kind,
    pub latency_ms: Vec<f64>,
    pub recall: Vec<f64>,
    pub requests: Vec<f64>,
    pub returned: Vec<f64>,
    pub failures: Vec<f64>,
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
    /// Peers each node had a connection to when the lookups began.
    pub connected_per_node: f64,
    pub table_removals: usize,
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
    values.iter().sum::<f64>() / values.len().max(1) as f64
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
        name: "peers connected per node at the first lookup",
        field: "connected_per_node",
        value: |r| r.connected_per_node,
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
    let mut header = format!("| measure | {}", first.kind.name());
    let mut rule = String::from("|---|---:");
    for other in others {
        header += &format!(" | {} | {} ÷ it", other.kind.name(), first.kind.name());
        rule += "|---:|---:";
    }
    println!("{header} |\n{rule}|");
    for metric in METRICS {
        let ours = (metric.value)(first);
        let mut row = format!("| {} | {:.*}", metric.name, metric.decimals, ours);
        for other in others {
            let theirs = (metric.value)(other);
            row += &format!(" | {:.*} | {:.2}", metric.decimals, theirs, ours / theirs);
        }
        println!("{row} |");
    }
    println!(
        "\nkadence routing-table removals during the run: {}",
        first.table_removals
    );
}

pub fn json(
    command: &str,
    nodes: usize,
    seed: u64,
    wall: Duration,
    reports: &[Report],
) -> serde_json::Value {
    let results: Vec<serde_json::Value> = reports
        .iter()
        .map(|r| {
            let mut row = serde_json::Map::new();
            row.insert("implementation".into(), r.kind.name().into());
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
            serde_json::Value::Object(row)
        })
        .collect();
    serde_json::json!({
        "command": command,
        "nodes": nodes,
        "seed": seed,
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
