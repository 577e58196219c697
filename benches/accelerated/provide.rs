//! Providing many keys: the default client's sweep, the accelerated client's sweep and its
//! one-shot provides, and where the records landed.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use kadence::key::Key;
use kadence::{Event, MessageType, QueryResult};
use serde_json::{json, Value};

use crate::net::Net;
use crate::node::Node;
use crate::report::Report;
use crate::tally::Tally;
use crate::{Rng, PHASE_TIMEOUT, SAMPLE};

/// What one client's providing cost.
#[derive(Default)]
pub struct Providing {
    keys: usize,
    wall: Duration,
    /// The sweep's reports: regions, ADD_PROVIDER messages written and failed.
    regions: u64,
    messages: u64,
    failures: u64,
    /// Counted by the receivers: ADD_PROVIDER and FIND_NODE from the client.
    add_provider: u64,
    find_node: u64,
    /// One-shot provides: finished with at least one peer storing, lookups accelerated.
    succeeded: u64,
    accelerated: u64,
    /// One-shot provides: each one's time, start to `QueryFinished`.
    latencies: Vec<Duration>,
    placement: (u64, u64),
}

impl Providing {
    /// A run of `keys` keys, before it started.
    fn of(keys: usize) -> Self {
        Self {
            keys,
            ..Self::default()
        }
    }

    /// The `q` quantile of the one-shot latencies, in ms.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1));
        l.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

impl Providing {
    pub fn json(&self) -> Value {
        json!({
            "keys": self.keys,
            "wall_s": self.wall.as_secs_f64(),
            "keys_per_s": self.keys as f64 / self.wall.as_secs_f64(),
            "region_lookups": self.regions,
            "sweep_messages": self.messages,
            "sweep_failures": self.failures,
            "add_provider_received": self.add_provider,
            "find_node_received": self.find_node,
            "oneshot_succeeded": self.succeeded,
            "oneshot_accelerated": self.accelerated,
            "oneshot_p50_ms": self.quantile_ms(0.5),
            "oneshot_p95_ms": self.quantile_ms(0.95),
            "placement_held": self.placement.0,
            "placement_of": self.placement.1,
        })
    }
}

/// The ADD_PROVIDER and FIND_NODE requests the receivers had counted from a client when a
/// run started: what the run sent is the count at its end minus these.
struct Received {
    add_provider: u64,
    find_node: u64,
}

impl Received {
    fn now(tally: &Tally, node: &Node) -> Self {
        Self {
            add_provider: tally.get(&node.id, MessageType::AddProvider),
            find_node: tally.get(&node.id, MessageType::FindNode),
        }
    }

    /// Sets the run's counts to what the receivers counted since `self`.
    fn settle(&self, tally: &Tally, node: &Node, run: &mut Providing) {
        let now = Self::now(tally, node);
        run.add_provider = now.add_provider - self.add_provider;
        run.find_node = now.find_node - self.find_node;
    }
}

/// Provided keys of the node announced at least once.
pub async fn announced(node: &Node) -> usize {
    node.call(|swarm| {
        let dht = &mut swarm.behaviour_mut().dht;
        let mut from = Some(Key::from_hash([0; 32]));
        let mut done = 0;
        while let Some(start) = from.take() {
            let page = dht.provided_keys(&start, 10_000).expect("provided keys");
            done += page
                .iter()
                .filter(|s| s.key.last_provided.is_some())
                .count();
            if page.len() == 10_000 {
                from = page.last().and_then(|s| Key::new(&s.key.key).next());
            }
        }
        done
    })
    .await
}

/// `start_providing` once per key, then the sweep until every key was announced.
pub async fn sweep(tally: &Tally, node: &mut Node, keys: &[Vec<u8>]) -> Providing {
    let before = Received::now(tally, node);
    let mut p = Providing::of(keys.len());
    let start = Instant::now();
    // In pages, so that the swarm keeps running between them as an application's would.
    for page in keys.chunks(1_000) {
        let page = page.to_vec();
        node.call(move |s| {
            for key in page {
                s.behaviour_mut()
                    .dht
                    .start_providing(kadence::ProviderKey::try_from(key).unwrap())
                    .expect("start providing");
            }
        })
        .await;
    }
    let (mut reported, mut last_report) = (0, start.elapsed());
    let mut next_check = Instant::now();
    loop {
        if let Some(Event::RegionReprovided(r)) = node.event(Duration::from_secs(1)).await {
            p.regions += 1;
            p.messages += r.messages as u64;
            p.failures += r.failures as u64;
            reported += r.keys;
            last_report = start.elapsed();
        }
        // The sweep's reports may count a key twice (added while its region ran): the store's
        // statuses have the last word.
        if reported >= keys.len() && Instant::now() >= next_check {
            if announced(node).await >= keys.len() {
                break;
            }
            next_check = Instant::now() + Duration::from_secs(2);
        }
        assert!(start.elapsed() < PHASE_TIMEOUT, "the sweep did not finish");
    }
    p.wall = last_report;
    // The last messages reach their receivers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    before.settle(tally, node, &mut p);
    p
}

/// One `provide` per key, `in_flight` at once, each done at its `QueryFinished`.
pub async fn oneshot(
    tally: &Tally,
    node: &mut Node,
    keys: &[Vec<u8>],
    in_flight: usize,
) -> Providing {
    let before = Received::now(tally, node);
    let mut p = Providing::of(keys.len());
    let start = Instant::now();
    let mut pending = HashSet::new();
    let (mut next, mut done) = (0, 0);
    while done < keys.len() {
        while pending.len() < in_flight && next < keys.len() {
            let key = keys[next].clone();
            next += 1;
            let id = node
                .call(move |s| {
                    s.behaviour_mut()
                        .dht
                        .provide(kadence::ProviderKey::try_from(key).unwrap())
                })
                .await
                .expect("provide");
            pending.insert(id);
        }
        match node.event(PHASE_TIMEOUT).await {
            Some(Event::QueryFinished { id, result, stats }) if pending.remove(&id) => {
                done += 1;
                p.succeeded += u64::from(
                    matches!(result, QueryResult::Provide { result: Ok(n), .. } if n > 0),
                );
                p.accelerated += u64::from(stats.accelerated);
                p.latencies.push(stats.duration());
            }
            Some(_) => {}
            None => panic!("a provide did not finish"),
        }
    }
    p.wall = start.elapsed();
    // Optimistic provides report before their last writes: let those land.
    tokio::time::sleep(Duration::from_secs(5)).await;
    before.settle(tally, node, &mut p);
    p
}

/// A sample of `keys` for the placement check.
pub fn sample(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let step = (keys.len() / SAMPLE).max(1);
    keys.iter().step_by(step).take(SAMPLE).cloned().collect()
}

pub async fn provide(net: &mut Net, d: &mut Node, a: &mut Node, report: &mut Report) {
    let (k, c) = (net.opts.keys, net.opts.oneshot_keys.min(net.opts.keys));
    let draw = |rng: &mut Rng, n: usize| (0..n).map(|_| rng.content_key()).collect::<Vec<_>>();
    let (keys_d, keys_a, keys_o) = (
        draw(&mut net.rng, k),
        draw(&mut net.rng, k),
        draw(&mut net.rng, c),
    );
    let tally = net.tally.clone();
    eprintln!("accelerated bench: default client providing {k} keys");
    let mut runs = Vec::new();
    let mut default = sweep(&tally, d, &keys_d).await;
    default.placement = net.placement(d.id, &sample(&keys_d), &[d, a]).await;
    runs.push(("(a) default client, sweep", default));
    eprintln!("accelerated bench: accelerated client providing {k} keys");
    assert!(a.call(|s| s.behaviour().dht.is_accelerated()).await);
    let mut acc = sweep(&tally, a, &keys_a).await;
    acc.placement = net.placement(a.id, &sample(&keys_a), &[d, a]).await;
    runs.push(("(b) accelerated client, sweep", acc));
    if c > 0 {
        eprintln!("accelerated bench: accelerated client, {c} one-shot provides");
        let mut one = oneshot(&tally, a, &keys_o, net.opts.in_flight).await;
        one.placement = net.placement(a.id, &sample(&keys_o), &[d, a]).await;
        runs.push(("(c) accelerated client, one-shot provide", one));
    }
    let base = runs[0].1.wall.as_secs_f64();
    for (label, p) in &runs {
        let secs = p.wall.as_secs_f64();
        let mut note = format!(
            "{:.0} keys/s, {:.2}x (a)'s time",
            p.keys as f64 / secs,
            secs * (k as f64 / p.keys as f64) / base
        );
        if p.keys < k {
            note += &format!(
                "; {} keys, scaled to {k}: {:.1} s",
                p.keys,
                secs * k as f64 / p.keys as f64
            );
        }
        if label.contains("one-shot") {
            note += &format!(
                "; {} in flight, {} succeeded, {} accelerated, each p50 {:.0} ms p95 {:.0} ms",
                net.opts.in_flight,
                p.succeeded,
                p.accelerated,
                p.quantile_ms(0.5),
                p.quantile_ms(0.95)
            );
        }
        report.row(&format!("{label}: wall time"), format!("{secs:.1} s"), note);
        let sweep_note = if p.regions > 0 {
            format!(
                "sweep reports: {} messages, {} failed; {} region lookups",
                p.messages, p.failures, p.regions
            )
        } else {
            "no sweep: a lookup per key".to_string()
        };
        report.row(
            &format!("{label}: ADD_PROVIDER / FIND_NODE received"),
            format!("{} / {}", p.add_provider, p.find_node),
            sweep_note,
        );
        report.row(
            &format!("{label}: placement"),
            format!("{:.3}", p.placement.0 as f64 / p.placement.1.max(1) as f64),
            format!(
                "{} of the {} true-closest slots of {SAMPLE} sampled keys hold the record",
                p.placement.0, p.placement.1
            ),
        );
    }
    report.json["provide"] = json!({
        "store": "MemoryStore",
        "runs": runs.iter().map(|(l, p)| {
            let mut v = p.json();
            v["label"] = json!(l);
            v
        }).collect::<Vec<_>>(),
    });
}
