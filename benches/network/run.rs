//! One network's run: build and start every node, bootstrap, settle, churn, then the lookup
//! phase and the provide -> placement -> find-providers phase, measuring as it goes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};

use crate::drivers::{self, Node, NodeSpec};
use crate::options::{Kind, Options};
use crate::queries::Command;
use crate::report::{Report, Shares};
use crate::setup::Setup;
use crate::{ask, churn, counting_alloc, cpu, crawl, delay, CONCURRENT};

/// Between the provides and the finds: libp2p-kad reports a provide before its ADD_PROVIDER
/// frames are written, so give them time to land.
const PROVIDE_SETTLE: Duration = Duration::from_secs(1);
/// After `--cold` closed every connection: time for the closes to be seen on both ends.
const COLD_SETTLE: Duration = Duration::from_millis(500);
/// After the last node stopped: its connections' tasks end once they see their swarm gone,
/// and free their buffers; the next network's heap is measured from what is left then.
const TEARDOWN_SETTLE: Duration = Duration::from_secs(1);

/// Builds every node's swarm (each listening) before any of them runs, then starts them.
fn start(kind: Kind, setup: &Setup, options: &Options, port_base: u64) -> Vec<Node> {
    let addr =
        |i: usize| -> Multiaddr { format!("/memory/{}", port_base + i as u64).parse().unwrap() };
    let spec = |i: usize| NodeSpec {
        key: &setup.keys[i],
        delay: setup.delays[i],
        addr: addr(i),
        boot: setup.boots[i]
            .iter()
            .map(|&j| (setup.ids[j], addr(j)))
            .collect(),
        idle: options.idle_timeout,
        silent: Arc::new(AtomicBool::new(false)),
    };
    let n = setup.nodes();
    let alpha = kind.alpha(options);
    if kind.is_kadence() {
        let finish = match kind {
            Kind::KadenceBetaFinish => kadence::LookupFinish::BetaAnswered,
            _ => kadence::LookupFinish::default(),
        };
        let alpha = alpha.expect("kadence's alpha is always set");
        let accelerated = kind.is_accelerated();
        let swarms: Vec<_> = (0..n)
            .map(|i| {
                let spec = spec(i);
                let silent = spec.silent.clone();
                let swarm = drivers::kadence_swarm(spec, finish, alpha, accelerated);
                (swarm, silent)
            })
            .collect();
        swarms
            .into_iter()
            .map(|(swarm, silent)| drivers::spawn_kadence(swarm, silent))
            .collect()
    } else {
        let swarms: Vec<_> = (0..n)
            .map(|i| {
                let spec = spec(i);
                let silent = spec.silent.clone();
                (drivers::kad_swarm(spec, alpha), silent)
            })
            .collect();
        swarms
            .into_iter()
            .map(|(swarm, silent)| drivers::spawn_kad(swarm, silent))
            .collect()
    }
}

/// Peers connected per live node.
async fn connected_per_node(nodes: &[Node], churned: &[bool]) -> f64 {
    let counts: Vec<usize> = futures::stream::iter(nodes.iter().zip(churned))
        .filter(|(_, &c)| std::future::ready(!c))
        .then(|(node, _)| ask(node, Command::ConnectedPeers))
        .map(Option::unwrap_or_default)
        .collect()
        .await;
    counts.iter().sum::<usize>() as f64 / counts.len().max(1) as f64
}

/// What one lookup measured.
struct LookupOutcome {
    latency_ms: f64,
    recall: f64,
    requests: f64,
    returned: f64,
    failures: f64,
    /// Returned peers that churn stopped or silenced.
    down_returned: f64,
}

pub async fn run(kind: Kind, setup: &Setup, options: &Options, port_base: u64) -> Report {
    let n = setup.nodes();
    let heap_base = counting_alloc::live();
    counting_alloc::reset_peak();
    let removed_before = drivers::REMOVED.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut running = start(kind, setup, options, port_base);

    // One bootstrap from every node, all at once, then let the tables settle.
    futures::stream::iter(running.iter())
        .for_each_concurrent(None, |node| async move {
            ask(node, Command::Bootstrap).await;
        })
        .await;
    tokio::time::sleep(options.settle).await;
    let mut report = Report {
        kind,
        name: kind.name(options),
        setup_s: started.elapsed().as_secs_f64(),
        ..Report::default()
    };
    if kind.is_accelerated() {
        // Before the churn: the full tables hold the peers that go silent or leave.
        report.crawl = Some(crawl::phase(&running, options, started).await);
    }
    let shares_before = Shares::read();
    if let Some(c) = options.churn {
        churn::apply(&mut running, &setup.churned, c.mode).await;
        tokio::time::sleep(options.churn_wait).await;
        report.stale_at_start =
            Some(churn::stale_share(&running, &setup.churned, &setup.ids).await);
    }
    let nodes = &running;
    if options.close_all {
        // Every lookup starts without connections, as in a network far larger than a node's
        // connection count.
        futures::stream::iter(nodes.iter().zip(&setup.churned))
            .filter(|(_, &c)| std::future::ready(!c))
            .for_each_concurrent(None, |(node, _)| async move {
                ask(node, Command::DisconnectAll).await;
            })
            .await;
        tokio::time::sleep(COLD_SETTLE).await;
    }
    report.connected_per_node = connected_per_node(nodes, &setup.churned).await;
    report.heap_settled_per_node = (counting_alloc::live() - heap_base) as f64 / n as f64;

    // Lookups, CONCURRENT at a time; bytes, CPU and dials are the whole network's during the
    // phase.
    let lookups = &setup.lookups[..options.lookups_for(kind)];
    let bytes_before = delay::SENT.load(Ordering::Relaxed);
    let cpu_before = cpu::process_cpu_ns();
    let dials_before = drivers::DIALS.load(Ordering::Relaxed);
    let down: &HashSet<PeerId> = &setup
        .ids
        .iter()
        .zip(&setup.churned)
        .filter(|(_, &c)| c)
        .map(|(id, _)| *id)
        .collect();
    let outcomes: Vec<LookupOutcome> = futures::stream::iter(lookups.iter())
        .map(|(querier, key)| async move {
            let truth: HashSet<PeerId> = setup
                .true_closest(*querier, key)
                .into_iter()
                .map(|i| setup.ids[i])
                .collect();
            let start = Instant::now();
            let found = ask(&nodes[*querier], |tx| Command::Lookup(key.clone(), tx)).await?;
            let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
            let hits = found.peers.iter().filter(|p| truth.contains(p)).count();
            let down_returned = found.peers.iter().filter(|p| down.contains(p)).count();
            Some(LookupOutcome {
                latency_ms,
                recall: hits as f64 / truth.len().max(1) as f64,
                requests: found.requests as f64,
                returned: found.peers.len() as f64,
                failures: found.failures as f64,
                down_returned: down_returned as f64,
            })
        })
        .buffer_unordered(CONCURRENT)
        .filter_map(|r| async move { r })
        .collect()
        .await;
    let done = outcomes.len().max(1) as f64;
    report.bytes_per_lookup = (delay::SENT.load(Ordering::Relaxed) - bytes_before) as f64 / done;
    report.cpu_ms_per_lookup = cpu::process_cpu_ns().saturating_sub(cpu_before) as f64 / 1e6 / done;
    report.dials_per_lookup = (drivers::DIALS.load(Ordering::Relaxed) - dials_before) as f64 / done;
    report.lookups_asked = lookups.len();
    for o in outcomes {
        report.latency_ms.push(o.latency_ms);
        report.recall.push(o.recall);
        report.requests.push(o.requests);
        report.returned.push(o.returned);
        report.failures.push(o.failures);
        report.down_returned.push(o.down_returned);
    }

    provide_phase(setup, nodes, &mut report).await;

    report.connected_end_per_node = connected_per_node(nodes, &setup.churned).await;
    // find-providers answered early may still be walking: their queries end within a request
    // timeout of the last answer, counted as they do.
    if kind.is_kadence() {
        report.accelerated = Some(Shares::read().since(&shares_before));
    }
    if options.churn.is_some() {
        report.stale_at_end = Some(churn::stale_share(nodes, &setup.churned, &setup.ids).await);
    }
    report.heap_peak_per_node = (counting_alloc::peak() - heap_base) as f64 / n as f64;
    report.table_removals = drivers::REMOVED.load(Ordering::Relaxed) - removed_before;
    for node in &mut running {
        // Wait until the swarm is dropped, so its memory is not freed during the next run.
        node.stop().await;
    }
    tokio::time::sleep(TEARDOWN_SETTLE).await;
    report
}

/// Provide each key, read every live node's store for the records, then find each provider
/// from another node.
async fn provide_phase(setup: &Setup, nodes: &[Node], report: &mut Report) {
    let provided: Vec<Option<f64>> = futures::stream::iter(setup.provides.iter())
        .map(|(provider, _, key)| async move {
            let start = Instant::now();
            let ok = ask(&nodes[*provider], |tx| Command::Provide(key.clone(), tx)).await?;
            ok.then(|| start.elapsed().as_secs_f64() * 1000.0)
        })
        .buffered(CONCURRENT)
        .collect()
        .await;
    tokio::time::sleep(PROVIDE_SETTLE).await;
    report.placement = placement(setup, nodes).await;
    let found: Vec<Option<f64>> = futures::stream::iter(setup.provides.iter())
        .map(|(provider, finder, key)| async move {
            let provider = setup.ids[*provider];
            let took = ask(&nodes[*finder], |reply| Command::FindProvider {
                key: key.clone(),
                provider,
                reply,
            })
            .await??;
            Some(took.as_secs_f64() * 1000.0)
        })
        .buffered(CONCURRENT)
        .collect()
        .await;
    report.provides = setup.provides.len();
    report.provide_ms = provided.into_iter().flatten().collect();
    report.find_ms = found.into_iter().flatten().collect();
}

/// For each provided key: how many of its K closest live peers (the provider aside) hold the
/// provider's record.
async fn placement(setup: &Setup, nodes: &[Node]) -> Vec<f64> {
    let records: Vec<(Vec<u8>, PeerId)> = setup
        .provides
        .iter()
        .map(|(provider, _, key)| (key.clone(), setup.ids[*provider]))
        .collect();
    // held[node][provide], for the live nodes; churned ones hold nothing that counts.
    let held: Vec<Vec<bool>> = futures::stream::iter(nodes.iter().zip(&setup.churned))
        .then(|(node, &churned)| {
            let records = records.clone();
            async move {
                if churned {
                    return Vec::new();
                }
                ask(node, |reply| Command::HeldProviders { records, reply })
                    .await
                    .unwrap_or_default()
            }
        })
        .collect()
        .await;
    setup
        .provides
        .iter()
        .enumerate()
        .map(|(p, (provider, _, key))| {
            setup
                .true_closest(*provider, key)
                .into_iter()
                .filter(|&i| held[i].get(p).copied().unwrap_or(false))
                .count() as f64
        })
        .collect()
}
