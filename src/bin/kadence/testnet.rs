//! `testnet`: a local network of kadence nodes on 127.0.0.1 that runs every DHT operation.

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use kadence::ipns::{self, IpnsRecord};
use kadence::{ProviderKey, QueryId, QueryProgress, QueryResult, Record};
use libp2p::identity::Keypair;
use libp2p::StreamProtocol;

use crate::crawl::crawl_again;
use crate::driver::{build_swarm, listen, Handle, Outcome};
use crate::progress;

/// A private protocol name: the testnet never joins the public DHT.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/kadence-example/kad/1.0.0");
const TIMEOUT: Duration = Duration::from_secs(60);

/// One line of the summary table.
struct Row {
    operation: &'static str,
    ok: bool,
    result: String,
    latency: Duration,
    requests: u32,
    /// Whether the operation's lookup started from the full table (`None`: not a lookup).
    accelerated: Option<bool>,
}

/// A node of the testnet: its handle, and whether it runs the accelerated client.
struct TestNode {
    handle: Handle,
    accelerated: bool,
}

/// Runs an operation on `node` and checks its outcome; an accelerated node's lookups must
/// start from its full table (it crawled the whole testnet before the operations).
async fn measured(
    node: &TestNode,
    operation: &'static str,
    op: impl FnOnce(&mut kadence::Behaviour) -> Option<QueryId> + Send + 'static,
    check: impl FnOnce(&Outcome) -> Result<String, String>,
) -> Row {
    let start = Instant::now();
    let outcome = node
        .handle
        .run(TIMEOUT, move |swarm| op(&mut swarm.behaviour_mut().dht))
        .await;
    let latency = start.elapsed();
    let (ok, result, requests, accelerated) = match &outcome {
        Some(outcome) => {
            let stats = &outcome.stats;
            let (ok, text) = match check(outcome) {
                Ok(_) if node.accelerated && !stats.accelerated => (
                    false,
                    "an iterative lookup on an accelerated node".to_string(),
                ),
                Ok(text) => (true, text),
                Err(text) => (false, text),
            };
            (ok, text, stats.requests, Some(stats.accelerated))
        }
        None => (false, "did not start or timed out".to_string(), 0, None),
    };
    Row {
        operation,
        ok,
        result,
        latency,
        requests,
        accelerated,
    }
}

/// Every accelerated node crawls the testnet again, now that it is complete (the crawl a node
/// starts on its own ran while the others were still starting); their crawls run at once.
async fn crawl_all(nodes: &[TestNode]) -> Row {
    let start = Instant::now();
    let crawling: Vec<&TestNode> = nodes.iter().filter(|n| n.accelerated).collect();
    let crawls =
        futures::future::join_all(crawling.iter().map(|n| crawl_again(&n.handle, TIMEOUT))).await;
    let others = nodes.len() - 1;
    let finished: Vec<_> = crawls.iter().flatten().collect();
    let fewest = finished.iter().map(|f| f.peers).min().unwrap_or(0);
    let most = finished.iter().map(|f| f.peers).max().unwrap_or(0);
    let requests: u64 = finished.iter().map(|f| f.stats.requests).sum();
    let failed: u64 = finished.iter().map(|f| f.stats.failed).sum();
    // A crawl of a network this small reaches every node: the table holds all the others.
    let ok = finished.len() == crawling.len() && fewest == others;
    let tables = if fewest == most {
        format!("{fewest}")
    } else {
        format!("{fewest}..{most}")
    };
    Row {
        operation: "crawl",
        ok,
        result: format!(
            "{}/{} accelerated nodes crawled, full tables of {tables}/{others} peers, \
             {failed} requests failed",
            finished.len(),
            crawling.len()
        ),
        latency: start.elapsed(),
        // Per crawl, as the other rows count one operation's requests.
        requests: u32::try_from(requests / crawling.len().max(1) as u64).unwrap_or(u32::MAX),
        accelerated: None,
    }
}

/// StartProvide for a batch of keys, then waits until the reprovider's sweep has announced
/// every one of them (the provide list says when each key was last announced).
async fn provide_batch(node: &TestNode, keys: usize) -> Row {
    let start = Instant::now();
    let added = Arc::new(AtomicUsize::new(0));
    // The sweep runs its lookups itself: whether the full table served them is what the node
    // says when the keys are added.
    let accelerated = Arc::new(AtomicBool::new(false));
    let node_accelerated = node.accelerated;
    let node = &node.handle;
    node.run(TIMEOUT, {
        let added = added.clone();
        let accelerated = accelerated.clone();
        move |swarm| {
            let dht = &swarm.behaviour().dht;
            accelerated.store(dht.is_accelerated(), Ordering::Relaxed);
            for i in 0..keys {
                let key =
                    ProviderKey::sha2_256(format!("kadence testnet batch key {i}").as_bytes());
                if swarm.behaviour_mut().dht.start_providing(key).is_ok() {
                    added.fetch_add(1, Ordering::Relaxed);
                }
            }
            None
        }
    })
    .await;
    let (mut announced, mut reached) = (0, 0);
    while start.elapsed() < TIMEOUT {
        (announced, reached) = node.provide_progress(TIMEOUT).await;
        if announced >= keys {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let added = added.load(Ordering::Relaxed);
    let accelerated = accelerated.load(Ordering::Relaxed);
    let ok = added == keys && announced == keys && accelerated == node_accelerated;
    Row {
        operation: "start providing",
        ok,
        result: format!("{added} added, {announced}/{keys} swept, each to >= {reached} peers"),
        latency: start.elapsed(),
        requests: 0,
        accelerated: Some(accelerated),
    }
}

/// The operations the testnet runs (the crawl included), for the progress bar.
const OPERATIONS: usize = 10;

/// The testnet's bar: operations done, and the last one.
pub const OPERATIONS_BAR: &str = "{bar:40} {pos}/{len} operations done ({elapsed}) {msg}";

/// Keeps a row and moves the bar on.
fn keep(rows: &mut Vec<Row>, bar: &ProgressBar, row: Row) {
    bar.set_message(row.operation);
    rows.push(row);
    bar.set_position(rows.len() as u64);
}

/// Runs the testnet with `nodes` nodes; `Ok(true)` when every operation succeeded. The last
/// node runs the accelerated client, or every node does with `all_accelerated`. Prints a
/// table, or with `json` one object.
pub async fn testnet(
    nodes: usize,
    all_accelerated: bool,
    json: bool,
) -> Result<bool, Box<dyn std::error::Error>> {
    let mut handles: Vec<TestNode> = Vec::new();
    for i in 0..nodes {
        let key = Keypair::generate_ed25519();
        let accelerated = all_accelerated || i == nodes - 1;
        let mut config = kadence::Config::new(PROTOCOL).with_mode(Some(kadence::Mode::Server));
        if accelerated {
            config = config.accelerated();
        }
        let mut swarm = build_swarm(key.clone(), config)?;
        let addr = listen(&mut swarm, "/ip4/127.0.0.1/tcp/0".parse()?).await?;
        // A tree: every node knows one node started before it.
        if i > 0 {
            let parent = &handles[(i - 1) / 2].handle;
            let _ = swarm
                .behaviour_mut()
                .dht
                .add_address(parent.id, parent.addr.clone());
        }
        handles.push(TestNode {
            handle: Handle::spawn(swarm, addr, key),
            accelerated,
        });
    }
    let accelerated = if all_accelerated {
        "all accelerated".to_string()
    } else {
        format!("node {} accelerated", nodes - 1)
    };
    if !json {
        println!("started {nodes} nodes on 127.0.0.1 ({accelerated}); bootstrapping");
    }
    for _round in 0..2 {
        for node in &handles {
            node.handle
                .run(TIMEOUT, |swarm| swarm.behaviour_mut().dht.bootstrap().ok())
                .await;
        }
    }

    let last = nodes - 1;
    let mut rows = Vec::new();
    let bar = progress::bar(OPERATIONS as u64, json, OPERATIONS_BAR);
    keep(&mut rows, &bar, crawl_all(&handles).await);
    keep(
        &mut rows,
        &bar,
        measured(
            &handles[1],
            "closest peers",
            |dht| Some(dht.get_closest_peers(b"kadence example key".to_vec())),
            |o| match &o.result {
                QueryResult::ClosestPeers {
                    result: Ok(peers), ..
                } if !peers.is_empty() => {
                    Ok(format!("{} peers, {} hops", peers.len(), o.stats.hops))
                }
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let cid = ProviderKey::sha2_256(b"kadence testnet content");
    keep(
        &mut rows,
        &bar,
        measured(
            &handles[2],
            "provide",
            {
                let cid = cid.clone();
                move |dht| dht.provide(cid).ok()
            },
            |o| match &o.result {
                QueryResult::Provide { result: Ok(n), .. } => Ok(format!("announced to {n} peers")),
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let provider = handles[2].handle.id;
    keep(&mut rows, &bar,
        measured(
            &handles[last],
            "find providers",
            move |dht| Some(dht.find_providers(cid, None)),
            move |o| {
                let found = o.progress.iter().any(|p| {
                    matches!(p, QueryProgress::ProvidersFound(f) if f.iter().any(|r| r.id == provider))
                });
                if found {
                    Ok("found the provider".into())
                } else {
                    Err(format!("{:?}", o.result))
                }
            },
        )
        .await,
    );
    // A `/pk/` record: a node's public key under its peer id, which every validator accepts.
    let record = Record::public_key(&handles[3].handle.key.public());
    keep(
        &mut rows,
        &bar,
        measured(
            &handles[3],
            "put value",
            {
                let record = record.clone();
                move |dht| dht.put_value(record, None).ok()
            },
            |o| match &o.result {
                QueryResult::PutValue { result: Ok(n), .. } => Ok(format!("stored at {n} peers")),
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let expected = record.value.clone();
    keep(
        &mut rows,
        &bar,
        measured(
            &handles[last - 1],
            "get value",
            move |dht| Some(dht.get_value(record.key, NonZeroUsize::new(2))),
            move |o| match &o.result {
                QueryResult::GetValue { result: Ok(r), .. } if r.value == expected => {
                    Ok("the record".into())
                }
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    // IPNS: a node publishes its name; another resolves it and reads the signed value.
    let name = handles[6 % nodes].handle.id;
    let ipns = IpnsRecord::builder("/ipfs/bafkqaaa")
        .sequence(1)
        .sign(&handles[6 % nodes].handle.key)?;
    keep(
        &mut rows,
        &bar,
        measured(
            &handles[6 % nodes],
            "publish name",
            {
                let record = ipns.to_dht_record(&name);
                move |dht| dht.put_value(record, None).ok()
            },
            |o| match &o.result {
                QueryResult::PutValue { result: Ok(n), .. } => Ok(format!("stored at {n} peers")),
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    keep(
        &mut rows,
        &bar,
        measured(
            &handles[last - 3],
            "resolve name",
            move |dht| Some(dht.get_value(ipns::routing_key(&name), NonZeroUsize::new(2))),
            |o| match &o.result {
                QueryResult::GetValue { result: Ok(r), .. } => match IpnsRecord::decode(&r.value) {
                    Ok(found) => Ok(format!(
                        "{} (sequence {})",
                        String::from_utf8_lossy(found.value()),
                        found.sequence()
                    )),
                    Err(e) => Err(e.to_string()),
                },
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let wanted = handles[last - 2].handle.id;
    keep(
        &mut rows,
        &bar,
        measured(
            &handles[4 % nodes],
            "find peer",
            move |dht| Some(dht.find_peer(wanted)),
            |o| match &o.result {
                QueryResult::FindPeer { result: Ok(p), .. } => {
                    Ok(format!("{} addresses", p.addrs.len()))
                }
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );

    keep(
        &mut rows,
        &bar,
        provide_batch(&handles[5 % nodes], 200).await,
    );

    bar.finish_and_clear();
    let all_ok = rows.iter().all(|r| r.ok);
    if json {
        print_json(&rows, nodes, all_accelerated, all_ok);
    } else {
        print_table(&rows, all_ok);
    }
    Ok(all_ok)
}

fn print_table(rows: &[Row], all_ok: bool) {
    println!(
        "\n{:<16} {:<6} {:>10} {:>9} {:<6} result",
        "operation", "ok", "latency", "requests", "accel"
    );
    for row in rows {
        println!(
            "{:<16} {:<6} {:>10.2?} {:>9} {:<6} {}",
            row.operation,
            if row.ok { "yes" } else { "NO" },
            row.latency,
            row.requests,
            match row.accelerated {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            },
            row.result
        );
    }
    if all_ok {
        println!("\nall operations succeeded");
    }
}

/// The table as one JSON object: `ok`, and a row per operation (`accelerated` is null for
/// rows that are no lookup).
fn print_json(rows: &[Row], nodes: usize, all_accelerated: bool, all_ok: bool) {
    let operations: Vec<serde_json::Value> = rows
        .iter()
        .map(|row| {
            serde_json::json!({
                "operation": row.operation,
                "ok": row.ok,
                "ms": row.latency.as_secs_f64() * 1000.0,
                "requests": row.requests,
                "accelerated": row.accelerated,
                "result": row.result,
            })
        })
        .collect();
    let object = serde_json::json!({
        "ok": all_ok,
        "nodes": nodes,
        "all_accelerated": all_accelerated,
        "operations": operations,
    });
    println!("{object}");
}
