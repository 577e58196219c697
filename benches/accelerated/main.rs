//! The accelerated client's costs, in a network of N kadence nodes over the memory transport
//! (every node delays what it receives by `--delay-ms`, so a round trip costs twice that):
//!
//! `nice -n 19 cargo bench --bench accelerated -- [--nodes N] [--keys K] [--oneshot-keys C]
//! [--in-flight F] [--delay-ms D] [--seed S] [--skip-provide] [--skip-restart]`
//!
//! Defaults: 200 nodes, 100,000 keys, 10,000 one-shot provides with 50 in flight, 20 ms. The
//! table is printed as Markdown and written as JSON to `target/accelerated-bench.json`.
//!
//! What each number means:
//! - **Full table, bytes per peer**: heap (a counting global allocator) held by a `FullTable`
//!   filled by one `replace_with_crawl` with 10,000 and 100,000 random peers of 2 addresses
//!   (`/ip4/x/tcp/4001`, `/ip4/x/udp/4001/quic-v1`) or of a kubo server's 8 (TCP, QUIC,
//!   WebTransport with two certificate hashes and WebRTC, over IPv4 and IPv6), divided by the
//!   peers; the peak is the most heap held while it filled.
//! - **Node after its crawl**: live heap of the whole process once an accelerated node joined
//!   the idle network and its first crawl finished (2 s later), minus before it was built,
//!   divided by its full table's peers; beside it the same for a default node once its table
//!   filled, and the heap of a copy of the crawled table alone. Every node runs in this
//!   process, so the first two include what the others hold for their connections to it.
//! - **Restart**: an accelerated node with a `PersistentStore` crawls, stops (its store is
//!   closed and flushed), and starts again with the same key and data directory. From the
//!   moment its store is opened, the time until the first `get_closest_peers` whose
//!   `QueryStats::accelerated` is true: lookups run back to back until one is. "With the
//!   saved table" restarts on the same directory; "without" on a fresh one (it must crawl).
//! - **Providing K keys**: one client calls `start_providing` once per key (a `MemoryStore`)
//!   and the reprovide sweep announces them; wall time from the first call until every key's
//!   `last_provided` is set, ADD_PROVIDER messages (the sweep's reports, and as counted by
//!   the receivers), FIND_NODE requests the receivers got from the client meanwhile, and
//!   region lookups (one per `RegionReprovided`). (a) the default client, (b) the accelerated
//!   client after its crawl, in the same network one after the other, and (c) the
//!   accelerated client doing C one-shot `provide` calls with F in flight (the Kubo way),
//!   its time also scaled linearly to K.
//! - **Placement**: for 200 sampled keys of each client, how many of their 20 closest nodes
//!   (the provider aside) hold the client's provider record, read from their stores.

mod memory;
mod net;
mod node;
mod options;
mod provide;
mod report;
mod restart;
mod tally;

#[path = "../support/cli.rs"]
mod cli;
#[path = "../support/counting_alloc.rs"]
mod counting_alloc;
#[path = "../support/delay_stream.rs"]
mod delay_stream;
#[path = "../support/rng.rs"]
mod rng;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::identity::Keypair;
use libp2p::StreamProtocol;
use serde_json::json;

use counting_alloc::live;
use memory::{copy_heap, memory};
use net::Net;
use node::Node;
use options::Options;
use provide::provide;
use report::Report;
use restart::restart;
use rng::Rng;
use tally::Tally;

const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/kad/1.0.0");
const K: usize = 20;
const BOOTSTRAP_PEERS: usize = 3;
/// Sampled keys per client for the placement check.
const SAMPLE: usize = 200;
/// Longest wait for one phase (a crawl, a sweep of every key).
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

/// Waits until the node's k-bucket table holds `peers` peers (or a minute passed).
async fn table_filled(node: &Node, peers: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = node.call(|s| s.behaviour().dht.routing_table().len()).await;
        if len >= peers || Instant::now() > deadline {
            return len;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn network(opts: Options, report: &mut Report) {
    let n = opts.nodes;
    let mut rng = Rng(opts.seed);
    let keys: Vec<Keypair> = (0..n).map(|_| rng.keypair()).collect();
    let (kd, ka, kr) = (rng.keypair(), rng.keypair(), rng.keypair());
    let ids = [&kd, &ka, &kr].map(|k| k.public().to_peer_id());
    let mut net = Net {
        opts,
        keys,
        servers: Vec::new(),
        tally: Arc::new(Tally::new(ids.to_vec())),
        live: HashSet::new(),
        rng,
    };
    let started = Instant::now();
    net.start().await;
    report.json["network_settled_s"] = json!(started.elapsed().as_secs_f64());
    // Quiet before measuring: the bootstrap lookups are over.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before = live();
    let mut d = net.client(&kd, n as u64 + 1, false);
    let d_peers = table_filled(&d, K).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d_heap = live() - before;

    let before = live();
    let mut a = net.client(&ka, n as u64 + 2, true);
    let (crawl, requests, peers) = a.crawl_finished().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a_heap = live() - before;
    let copy = a
        .call(|s| copy_heap(s.behaviour().dht.full_table().expect("accelerated")))
        .await;
    report.row(
        &format!("accelerated node after its crawl of {n}: heap per table peer"),
        format!("{:.0}", a_heap as f64 / peers as f64),
        format!(
            "{:.2} MB for {peers} peers (crawl {:.1} s, {requests} requests); the table alone {:.0} B/peer",
            a_heap as f64 / 1e6,
            crawl.as_secs_f64(),
            copy as f64 / peers as f64
        ),
    );
    report.row(
        "default node once its table filled: heap per table peer",
        format!("{:.0}", d_heap as f64 / d_peers as f64),
        format!("{:.2} MB for {d_peers} k-bucket peers", d_heap as f64 / 1e6),
    );
    report.json["node"] = json!({
        "accelerated": { "heap": a_heap, "peers": peers, "table_copy_heap": copy,
            "crawl_s": crawl.as_secs_f64(), "crawl_requests": requests },
        "default": { "heap": d_heap, "peers": d_peers },
    });

    if !net.opts.skip_restart {
        restart(&mut net, &kr, n as u64 + 10, report).await;
    }
    if !net.opts.skip_provide {
        provide(&mut net, &mut d, &mut a, report).await;
    }
    for node in [d, a].into_iter().chain(std::mem::take(&mut net.servers)) {
        node.stop().await;
    }
}

fn main() {
    cli::init_tracing();
    let opts = cli::options("accelerated", None, Options::parse);
    counting_alloc::COUNTING.store(true, Ordering::Relaxed);
    let command = opts.command();
    let wall = Instant::now();
    let mut report = Report {
        rows: Vec::new(),
        json: json!({ "command": command, "nodes": opts.nodes, "delay_ms": opts.delay_ms }),
    };
    memory(&mut report);
    let runtime = cli::runtime();
    runtime.block_on(network(opts, &mut report));
    runtime.shutdown_timeout(Duration::from_secs(1));
    report.json["wall_s"] = json!(wall.elapsed().as_secs_f64());

    println!("\n`{command}` ({:.0} s)\n", wall.elapsed().as_secs_f64());
    report.print();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/accelerated-bench.json");
    let text = serde_json::to_string_pretty(&report.json).expect("json");
    std::fs::write(&path, text).expect("write json");
    println!("\nwrote {}", path.display());
}
