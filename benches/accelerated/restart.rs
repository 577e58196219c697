//! From a restart to the first accelerated lookup, with and without the saved crawled table.

use std::time::{Duration, Instant};

use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::Event;
use libp2p::identity::Keypair;
use serde_json::json;

use crate::net::Net;
use crate::node::{build, spawn, Node, Spec};
use crate::report::Report;
use crate::PHASE_TIMEOUT;

/// What a start of the restarted node showed.
pub struct Restart {
    /// From opening the store to the end of the first accelerated lookup.
    first_accelerated: Duration,
    /// When its crawl finished, if it had to crawl before that lookup.
    crawl: Option<Duration>,
    /// Lookups run until one was accelerated.
    lookups: u32,
}

/// Starts an accelerated node with a persistent store at `path`.
pub fn persistent_node(net: &mut Net, key: &Keypair, port: u64, path: &std::path::Path) -> Node {
    let store =
        PersistentStore::open(path, PersistentStoreConfig::default()).expect("open the store");
    let boot = net.boot(None);
    let swarm = build(Spec {
        key,
        port,
        delay: net.delay(),
        boot,
        accelerated: true,
        store: Some(store),
    });
    spawn(swarm, net.tally.clone(), true)
}

/// Starts the node on `path` and runs lookups back to back until one is accelerated; the
/// node is stopped again.
pub async fn first_accelerated(
    net: &mut Net,
    key: &Keypair,
    port: u64,
    path: &std::path::Path,
) -> Restart {
    let start = Instant::now();
    let mut node = persistent_node(net, key, port, path);
    let mut crawl = None;
    let mut lookups = 0;
    loop {
        lookups += 1;
        let target = net.rng.content_key();
        let id = node
            .call(move |s| s.behaviour_mut().dht.get_closest_peers(target))
            .await;
        let accelerated = loop {
            let left = PHASE_TIMEOUT.saturating_sub(start.elapsed());
            match node.event(left).await {
                Some(Event::QueryFinished {
                    id: done, stats, ..
                }) if done == id => break stats.accelerated,
                Some(Event::CrawlFinished { .. }) => crawl = Some(start.elapsed()),
                Some(_) => {}
                None => panic!("no accelerated lookup within {PHASE_TIMEOUT:?}"),
            }
        };
        if accelerated {
            let first_accelerated = start.elapsed();
            node.stop().await;
            return Restart {
                first_accelerated,
                crawl,
                lookups,
            };
        }
    }
}

pub async fn restart(net: &mut Net, key: &Keypair, port: u64, report: &mut Report) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.redb");
    let mut node = persistent_node(net, key, port, &path);
    let (crawl, _, peers) = node.crawl_finished().await;
    node.stop().await;
    eprintln!("accelerated bench: restart node crawled {peers} peers in {crawl:.1?}");
    // Each life on its own port: the memory transport keeps a port taken once its swarm is
    // dropped (only `remove_listener` frees it).
    let saved = first_accelerated(net, key, port + 1, &path).await;
    let fresh = first_accelerated(net, key, port + 2, &dir.path().join("fresh.redb")).await;
    for (label, r) in [
        ("with the saved table", &saved),
        ("without (fresh data dir)", &fresh),
    ] {
        let note = match r.crawl {
            Some(c) => format!(
                "crawled again first ({:.2} s), {} lookups",
                c.as_secs_f64(),
                r.lookups
            ),
            None => format!("accelerated at once, {} lookup(s)", r.lookups),
        };
        report.row(
            &format!("restart -> first accelerated lookup, {label}"),
            format!("{:.2} s", r.first_accelerated.as_secs_f64()),
            note,
        );
    }
    let json = |r: &Restart| {
        json!({
            "first_accelerated_s": r.first_accelerated.as_secs_f64(),
            "crawled_again_s": r.crawl.map(|c| c.as_secs_f64()),
            "lookups": r.lookups,
        })
    };
    report.json["restart"] = json!({
        "first_crawl_s": crawl.as_secs_f64(),
        "first_crawl_peers": peers,
        "with_saved_table": json(&saved),
        "without_saved_table": json(&fresh),
    });
}
