//! The accelerated client's crawls (`--only kadence-accel`), between the settle and the churn:
//!
//! 1. Every node's first crawl starts as soon as its k-bucket table knows a peer, that is at
//!    once, beside the bootstrap. The bench waits until every node reported
//!    `Event::CrawlFinished` (or `--crawl-timeout` passed), then until the crawl's connections
//!    went idle and closed (the idle timeout, when it is at most [`MAX_IDLE_WAIT`]).
//! 2. Unless `--no-recrawl`: a first crawl that ran while the whole network was starting
//!    covers little (its seeds' tables were nearly empty), so its table does not serve
//!    (`serving: false`) and the node crawls again after a back-off of its own. A batch of
//!    `--crawl-batch` nodes at a time, the bench asks each node whose table does not serve yet
//!    to crawl now (`start_crawl`; one under way is left to finish), and waits until every
//!    node of the batch reported a crawl after which its table serves. That crawl is the one
//!    reported as the second; the bench then waits for its connections to close. Its bytes
//!    are measured (every byte written on every connection
//!    meanwhile: requests, answers, and the noise, yamux and identify exchanges of the
//!    connections the crawls opened) and so is the heap it leaves behind.
//! 3. Every node's full table is copied into a `FullTable` built here, one at a time, to read
//!    its heap per peer with the counting allocator: the table's own memory, with the
//!    addresses the crawl found, nothing else of the node.
//!
//! Per crawl and node, `Event::CrawlFinished` gives the duration, requests, answers, failures,
//! peers crawled at once and the table's size; the driver adds the most connections the node
//! had open at once while the crawl ran (exact: read at every connection established).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use libp2p::Multiaddr;

use crate::drivers::Node;
use crate::options::Options;
use crate::queries::Command;
use crate::{ask, counting_alloc, delay};

/// Longest idle timeout the bench waits out for a crawl's connections to close: with a warm
/// `--idle-timeout` they stay open anyway, as everything else's.
const MAX_IDLE_WAIT: Duration = Duration::from_secs(30);
/// How often the bench looks whether the crawls finished.
const POLL: Duration = Duration::from_millis(100);

/// One finished crawl of one node.
#[derive(Clone, Copy, Debug)]
pub struct Crawled {
    pub stats: kadence::CrawlStats,
    pub merge: kadence::CrawlMerge,
    /// Peers in the full table after it.
    pub peers: usize,
    /// Most connections open at once while it ran.
    pub peak_connections: usize,
    /// Whether the full table served lookups after it (it covered the network).
    pub serving: bool,
}

/// What a node's accelerated client's crawls did, written by its driver.
#[derive(Default, Debug)]
pub struct CrawlLog {
    running: bool,
    peak: usize,
    pub done: Vec<Crawled>,
}

impl CrawlLog {
    /// `Event::CrawlStarted`, with the node's connections then.
    pub fn started(&mut self, connections: usize) {
        self.running = true;
        self.peak = connections;
    }

    /// The node's connections changed.
    pub fn connections(&mut self, connections: usize) {
        if self.running {
            self.peak = self.peak.max(connections);
        }
    }

    /// `Event::CrawlFinished`.
    pub fn finished(
        &mut self,
        stats: kadence::CrawlStats,
        merge: kadence::CrawlMerge,
        peers: usize,
        serving: bool,
    ) {
        self.running = false;
        self.done.push(Crawled {
            stats,
            merge,
            peers,
            peak_connections: self.peak,
            serving,
        });
    }
}

/// One crawl of every node, summed up.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CrawlSummary {
    /// Nodes whose crawl finished in time, of `nodes`.
    pub finished: usize,
    pub nodes: usize,
    /// From the start of the wait to the last crawl finished (or the timeout).
    pub wall_s: f64,
    pub duration_ms_mean: f64,
    pub duration_ms_max: f64,
    pub requests_mean: f64,
    pub answered_mean: f64,
    pub failed_mean: f64,
    pub timed_out_mean: f64,
    /// Peers named in answers, names outside the range asked, names dropped at the bounds.
    pub named_mean: f64,
    pub out_of_range_mean: f64,
    pub dropped_mean: f64,
    pub peak_peers_in_flight_mean: f64,
    pub peak_peers_in_flight_max: usize,
    pub peak_requests_in_flight_max: usize,
    pub table_peers_mean: f64,
    pub table_peers_min: usize,
    /// How the tables changed (`CrawlMerge`): peers new to them, and peers that left.
    pub table_inserted_mean: f64,
    pub table_removed_mean: f64,
    pub peak_connections_mean: f64,
    pub peak_connections_max: usize,
    /// Bytes written on every connection of the network during the crawls, per crawl: `None`
    /// for the first crawl, which ran beside the bootstrap.
    pub kib_per_crawl: Option<f64>,
}

impl CrawlSummary {
    fn new(crawls: &[Crawled], nodes: usize, wall: Duration) -> Self {
        let n = crawls.len().max(1) as f64;
        let mean = |f: fn(&Crawled) -> f64| crawls.iter().map(f).sum::<f64>() / n;
        let max = |f: fn(&Crawled) -> usize| crawls.iter().map(f).max().unwrap_or(0);
        Self {
            finished: crawls.len(),
            nodes,
            wall_s: wall.as_secs_f64(),
            duration_ms_mean: mean(|c| c.stats.duration.as_secs_f64() * 1000.0),
            duration_ms_max: crawls
                .iter()
                .map(|c| c.stats.duration.as_secs_f64() * 1000.0)
                .fold(0.0, f64::max),
            requests_mean: mean(|c| c.stats.requests as f64),
            answered_mean: mean(|c| c.stats.answered as f64),
            failed_mean: mean(|c| c.stats.failed as f64),
            timed_out_mean: mean(|c| c.stats.timed_out as f64),
            named_mean: mean(|c| c.stats.named as f64),
            out_of_range_mean: mean(|c| c.stats.out_of_range as f64),
            dropped_mean: mean(|c| c.stats.dropped as f64),
            peak_peers_in_flight_mean: mean(|c| c.stats.peak_peers_in_flight as f64),
            peak_peers_in_flight_max: max(|c| c.stats.peak_peers_in_flight),
            peak_requests_in_flight_max: max(|c| c.stats.peak_requests_in_flight),
            table_peers_mean: mean(|c| c.peers as f64),
            table_peers_min: crawls.iter().map(|c| c.peers).min().unwrap_or(0),
            table_inserted_mean: mean(|c| c.merge.inserted as f64),
            table_removed_mean: mean(|c| c.merge.removed as f64),
            peak_connections_mean: mean(|c| c.peak_connections as f64),
            peak_connections_max: max(|c| c.peak_connections),
            kib_per_crawl: None,
        }
    }
}

/// What the crawl phase measured.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct CrawlReport {
    /// The first crawl, beside the bootstrap.
    pub first: CrawlSummary,
    /// From the network's start to every first crawl finished.
    pub first_done_after_start_s: f64,
    /// The second crawl, in a quiet network (not with `--no-recrawl`).
    pub second: Option<CrawlSummary>,
    /// Live heap after the second crawl (its connections closed) minus before it, per node:
    /// what a crawl leaves behind.
    pub heap_growth_per_node_second_crawl: Option<f64>,
    /// Entries of every node's full table.
    pub table_entries: usize,
    /// Heap of a copy of every node's full table, per entry and per node.
    pub table_bytes_per_peer: f64,
    pub table_bytes_per_node: f64,
}

impl CrawlReport {
    /// The crawl the table shows: the quiet one when it ran.
    pub fn main(&self) -> &CrawlSummary {
        self.second.as_ref().unwrap_or(&self.first)
    }
}

/// The default `--crawl-timeout`: 5 min, and 0.3 s more per node (every node crawls the
/// whole network at once on 2 shared cores).
fn timeout(options: &Options) -> Duration {
    options.crawl_timeout.unwrap_or_else(|| {
        Duration::from_secs(300) + Duration::from_millis(300 * options.nodes as u64)
    })
}

/// Waits until every node finished `count` crawls, or the timeout; returns each node's
/// `count`-th crawl (those that finished) and the time waited.
async fn wait_for(nodes: &[Node], count: usize, timeout: Duration) -> (Vec<Crawled>, Duration) {
    let started = Instant::now();
    loop {
        let crawls: Vec<Crawled> = nodes
            .iter()
            .filter_map(|n| n.crawl.lock().unwrap().done.get(count - 1).copied())
            .collect();
        if crawls.len() == nodes.len() || started.elapsed() >= timeout {
            if crawls.len() < nodes.len() {
                eprintln!(
                    "network bench: crawl {count}: {} of {} nodes finished within {} s",
                    crawls.len(),
                    nodes.len(),
                    timeout.as_secs()
                );
            }
            return (crawls, started.elapsed());
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Whether the node's last crawl left its table serving.
fn serving(node: &Node) -> bool {
    node.crawl
        .lock()
        .unwrap()
        .done
        .last()
        .is_some_and(|c| c.serving)
}

/// Waits until every node's last crawl left its table serving, or the timeout; returns those
/// crawls (of the nodes that got there).
async fn wait_serving(nodes: &[Node], timeout: Duration) -> Vec<Crawled> {
    let started = Instant::now();
    while !nodes.iter().all(serving) && started.elapsed() < timeout {
        tokio::time::sleep(POLL).await;
    }
    let crawls: Vec<Crawled> = nodes
        .iter()
        .filter_map(|n| n.crawl.lock().unwrap().done.last().copied())
        .filter(|c| c.serving)
        .collect();
    if crawls.len() < nodes.len() {
        eprintln!(
            "network bench: {} of {} nodes' tables serve after {} s",
            crawls.len(),
            nodes.len(),
            timeout.as_secs()
        );
    }
    crawls
}

/// Lets the crawl's connections go idle and close.
async fn idle_out(options: &Options) {
    if options.idle_timeout <= MAX_IDLE_WAIT {
        tokio::time::sleep(options.idle_timeout + Duration::from_secs(2)).await;
    }
}

/// Waits for the first crawls, runs the second, and measures the tables (see the module docs).
/// `network_started`: when the nodes were started.
pub async fn phase(nodes: &[Node], options: &Options, network_started: Instant) -> CrawlReport {
    let n = nodes.len();
    let timeout = timeout(options);
    let (first, waited) = wait_for(nodes, 1, timeout).await;
    let mut report = CrawlReport {
        first: CrawlSummary::new(&first, n, waited),
        first_done_after_start_s: network_started.elapsed().as_secs_f64(),
        ..CrawlReport::default()
    };
    eprintln!(
        "network bench: first crawls done {:.0} s after the start; {:.0} peers per table",
        report.first_done_after_start_s, report.first.table_peers_mean
    );
    idle_out(options).await;

    if !options.no_recrawl {
        let heap_before = counting_alloc::live();
        let bytes_before = delay::SENT.load(Ordering::Relaxed);
        let asked = Instant::now();
        // A batch at a time: the nodes of a live network do not crawl in step, and 200 nodes
        // each opening 50 connections a second would starve 2 cores, every dial timing out.
        let mut second = Vec::with_capacity(n);
        for batch in nodes.chunks(options.crawl_batch.max(1)) {
            for node in batch {
                if !serving(node) {
                    let _ = ask(node, Command::StartCrawl).await;
                }
            }
            second.extend(wait_serving(batch, timeout).await);
        }
        let waited = asked.elapsed();
        let bytes = delay::SENT.load(Ordering::Relaxed) - bytes_before;
        let mut summary = CrawlSummary::new(&second, n, waited);
        summary.kib_per_crawl = Some(bytes as f64 / 1024.0 / second.len().max(1) as f64);
        eprintln!(
            "network bench: second crawls done in {:.0} s; {:.0} peers per table",
            waited.as_secs_f64(),
            summary.table_peers_mean
        );
        report.second = Some(summary);
        idle_out(options).await;
        report.heap_growth_per_node_second_crawl =
            Some((counting_alloc::live() - heap_before) as f64 / n as f64);
    }

    // One node's table at a time, so that the copies never add up. The addresses are copied
    // within the measure, each its own buffer as the wire decoder builds them, so that the
    // table's bytes include them and share nothing with the node's.
    let mut entries = 0usize;
    let mut bytes = 0isize;
    for node in nodes {
        let Some(peers) = ask(node, Command::FullTable).await else {
            continue;
        };
        entries += peers.len();
        let local = libp2p::PeerId::random();
        let before = counting_alloc::live();
        let copy: Vec<(libp2p::PeerId, Vec<Multiaddr>)> = peers
            .iter()
            .map(|(id, addrs)| {
                let addrs = addrs
                    .iter()
                    .filter_map(|a| Multiaddr::try_from(a.to_vec()).ok())
                    .collect();
                (*id, addrs)
            })
            .collect();
        let mut table = kadence::FullTable::new(local, kadence::FullTableConfig::default());
        table.replace_with_crawl(copy, Instant::now());
        bytes += counting_alloc::live() - before;
        drop(table);
    }
    report.table_entries = entries;
    report.table_bytes_per_peer = bytes as f64 / entries.max(1) as f64;
    report.table_bytes_per_node = bytes as f64 / n.max(1) as f64;
    report
}
