//! Lookup latency, recall and cost, provide -> placement -> find-providers, of kadence and
//! libp2p-kad (its defaults, and alpha = 10 like the Go peers) in a network of N nodes over
//! the memory transport with per-node access delays. A fourth network runs kadence with go's
//! rule for ending a lookup (`LookupFinish::BetaAnswered`), the trade-off its docs describe,
//! and a fifth, `kadence-accel`, kadence's accelerated client (issue 16).
//!
//! `cargo bench --bench network -- [--nodes N] [--lookups L] [--provides P] [--seed S]
//! [--settle SECS] [--idle-timeout SECS] [--cold] [--alpha A | --alpha-all A]
//! [--only kadence-accel,kadence,kad,kad10,kadence-beta] [--kad-lookups L]
//! [--churn gone:SHARE|silent:SHARE] [--churn-wait SECS] [--crawl-timeout SECS] [--no-recrawl]
//! [--crawl-batch B]`
//!
//! - `--idle-timeout` is every swarm's idle-connection timeout (default 60 s): 10 s, rust-libp2p's
//!   default, is "cold" in issue 15's table and 600 s "warm".
//! - `--cold` closes every connection once the tables settled, so that every implementation's
//!   lookups start from no connection, as in a network much larger than a node's connection
//!   count.
//! - `--alpha` sets kadence's requests in flight per lookup (default 10, go's); `--alpha-all`
//!   sets them for kadence and libp2p-kad alike (libp2p-kad's default is 3). The alpha-10
//!   network keeps its 10.
//! - `--only` takes a comma-separated list of networks, run (and shown) in that order: the
//!   first is the one the others are divided into. Without it, every network but
//!   `kadence-accel` runs; `--only kadence-accel,kadence,kad` shows the accelerated client's
//!   ratios to both.
//! - `--kad-lookups` runs only the first L lookups on libp2p-kad's networks (the same keys
//!   from the same nodes), for sizes where its runs would not fit the time otherwise.
//! - `--churn` stops (`gone`) or silences (`silent`) that share of the nodes once the tables
//!   settled, and `--churn-wait` waits that long before the lookups, so that table
//!   maintenance can act: kadence refreshes its table every 10 min (`Config::
//!   with_refresh_interval`) and checks peers not heard from for 43 min; libp2p-kad
//!   bootstraps every 5 min and 0.5 s after a new peer enters its table.
//!
//! `kadence-accel` is the `kadence` network with `Config::accelerated()` on top. Every node's
//! first crawl starts at once, beside the bootstrap; the bench waits for all of them to finish
//! (`Event::CrawlFinished`, at most `--crawl-timeout`, default 5 min + 0.3 s per node), then,
//! unless `--no-recrawl`, starts a second crawl on every node (`start_crawl`), the hourly crawl
//! of a quiet network, `--crawl-batch` nodes at a time (default 10), whose cost it reports: time, requests, bytes, peers crawled and
//! connections open at once per node, and the full table's heap per known peer (see
//! `crawl.rs`). The crawl's connections are let close (the idle timeout, if at most 30 s)
//! before anything else is measured, and churn comes after the crawl: the full tables hold the
//! peers that go silent or leave. For every kadence network, the share of lookups, provides
//! and find-providers whose lookup started from the full table (`QueryStats::accelerated`) is
//! reported.
//!
//! The networks are built one after the other from the same seed: the same node keys,
//! bootstrap peers and delays, the same churned nodes, the same lookup keys from the same
//! nodes. The table is printed and written as JSON to `target/network-bench.json` and
//! `target/network-bench/LABEL.json`, beside `LABEL-lookup-cdf.svg` and
//! `LABEL-provide-cdf.svg`, where LABEL says the configuration.

mod churn;
mod crawl;
mod delay;
mod drivers;
mod options;
mod plot;
mod queries;
mod report;
mod run;
mod setup;

#[path = "../support/cli.rs"]
mod cli;
#[path = "../support/counting_alloc.rs"]
mod counting_alloc;
#[path = "../support/cpu.rs"]
mod cpu;
#[path = "../support/delay_stream.rs"]
mod delay_stream;
#[path = "../support/rng.rs"]
mod rng;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use drivers::Node;
use options::Options;
use queries::Command;
use report::Report;
use setup::Setup;

const K: usize = 20;
const BOOTSTRAP_PEERS: usize = 3;
/// Operations under way at once in the lookup and provide phases.
const CONCURRENT: usize = 10;
/// Longest wait for one operation.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends a command built around a reply channel and waits for the answer; `None` if the node
/// is stopped or does not answer in time.
async fn ask<T>(node: &Node, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
    let (tx, rx) = oneshot::channel();
    node.commands.send(command(tx)).ok()?;
    tokio::time::timeout(OPERATION_TIMEOUT, rx).await.ok()?.ok()
}

/// Writes the run's pictures into `dir`; returns the files written. A picture that cannot be
/// drawn is reported, not fatal: the table and JSON matter more.
fn pictures(dir: &Path, options: &Options, reports: &[Report]) -> Vec<String> {
    let label = options.label();
    let mut settings = format!(
        "{} nodes, idle timeout {} s",
        options.nodes,
        options.idle_timeout.as_secs()
    );
    if options.close_all {
        settings += ", connections closed";
    }
    if let Some(a) = options.alpha_all {
        settings += &format!(", alpha {a}");
    }
    if let Some(c) = options.churn {
        settings += &format!(", {:.0}% {}", c.share * 100.0, c.mode.name());
        if !options.churn_wait.is_zero() {
            settings += &format!(" + {} s", options.churn_wait.as_secs());
        }
    }
    let plots: [(&str, &str, &str, plot::Samples); 2] = [
        ("lookup", "lookup latency", "lookup latency (ms)", |r| {
            &r.latency_ms
        }),
        ("provide", "provide latency", "provide latency (ms)", |r| {
            &r.provide_ms
        }),
    ];
    let mut written = Vec::new();
    for (file, what, x_label, samples) in plots {
        let path = dir.join(format!("{label}-{file}-cdf.svg"));
        let title = format!("{what}, {settings}");
        match plot::cdf(&path, &title, x_label, reports, samples) {
            Ok(()) => written.push(path.display().to_string()),
            Err(e) => eprintln!("network bench: no {what} picture: {e}"),
        }
    }
    written
}

fn main() {
    cli::init_tracing();
    let options = cli::options("network", Some(Options::usage()), Options::parse);
    counting_alloc::COUNTING.store(true, Ordering::Relaxed);
    let setup = Setup::new(&options);

    let runtime = cli::runtime();
    let wall = Instant::now();
    let n = options.nodes;
    let reports: Vec<Report> = options
        .only
        .iter()
        .enumerate()
        .map(|(i, &kind)| {
            let name = kind.name(&options);
            eprintln!("network bench: running {name} ({n} nodes)");
            let port_base = 1_000_000 * (i as u64 + 1);
            let report = runtime.block_on(run::run(kind, &setup, &options, port_base));
            eprintln!(
                "network bench: {name} done after {:.0} s",
                wall.elapsed().as_secs_f64()
            );
            report
        })
        .collect();
    runtime.shutdown_timeout(Duration::from_secs(1));

    report::print(&options.command(), wall.elapsed(), &reports);
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let dir = target.join("network-bench");
    std::fs::create_dir_all(&dir).expect("create target/network-bench");
    let mut files = pictures(&dir, &options, &reports);
    let labelled = dir.join(format!("{}.json", options.label()));
    files.push(labelled.display().to_string());
    let json = report::json(&options, wall.elapsed(), &reports, &files);
    let text = serde_json::to_string_pretty(&json).expect("json");
    for path in [target.join("network-bench.json"), labelled] {
        std::fs::write(&path, &text).expect("write json");
        println!("wrote {}", path.display());
    }
    for file in &files[..files.len() - 1] {
        println!("wrote {file}");
    }
}
