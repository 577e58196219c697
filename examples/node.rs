//! A kadence node you can run.
//!
//! `cargo run --release --example node -- testnet [--nodes 20]` starts a local network of
//! kadence nodes on 127.0.0.1 TCP (noise, yamux, identify, ping) in one process, bootstraps
//! them, then runs every DHT operation from different nodes: closest peers, provide -> find
//! providers, put -> get, find peer. It prints a table (operation, result, latency, requests)
//! and exits 0 only if every operation succeeded.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kadence::{Event, QueryId, QueryProgress, QueryResult, QueryStats, Record};
use libp2p::identity::Keypair;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{identify, noise, ping, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};

/// A private protocol name: the example never joins the public DHT.
const PROTOCOL: StreamProtocol = StreamProtocol::new("/kadence-example/kad/1.0.0");

#[derive(NetworkBehaviour)]
struct Node {
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    dht: kadence::Behaviour,
}

/// What an operation produced.
struct Outcome {
    result: QueryResult,
    progress: Vec<QueryProgress>,
    stats: QueryStats,
}

type Operation = Box<dyn FnOnce(&mut kadence::Behaviour) -> Option<QueryId> + Send>;
type Command = (Operation, oneshot::Sender<Option<Outcome>>);

fn build_swarm(key: Keypair) -> Result<Swarm<Node>, Box<dyn std::error::Error>> {
    Ok(libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|key| Node {
            identify: identify::Behaviour::new(identify::Config::new(
                "/kadence-example/1.0.0".into(),
                key.public(),
            )),
            ping: ping::Behaviour::default(),
            dht: kadence::Behaviour::new(
                key.public().to_peer_id(),
                kadence::Config::new(PROTOCOL).with_mode(Some(kadence::Mode::Server)),
            ),
        })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build())
}

/// Runs one node until the process ends: starts the operations it is sent and reports their
/// results.
async fn run_node(mut swarm: Swarm<Node>, mut commands: mpsc::UnboundedReceiver<Command>) {
    let mut pending: HashMap<QueryId, (oneshot::Sender<Option<Outcome>>, Vec<QueryProgress>)> =
        HashMap::new();
    loop {
        tokio::select! {
            Some((op, reply)) = commands.recv() => {
                match op(&mut swarm.behaviour_mut().dht) {
                    Some(id) => { pending.insert(id, (reply, Vec::new())); }
                    None => { let _ = reply.send(None); }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(NodeEvent::Dht(Event::QueryProgress { id, progress })) => {
                    if let Some((_, found)) = pending.get_mut(&id) {
                        found.push(progress);
                    }
                }
                SwarmEvent::Behaviour(NodeEvent::Dht(Event::QueryFinished { id, result, stats })) => {
                    if let Some((reply, progress)) = pending.remove(&id) {
                        let _ = reply.send(Some(Outcome { result, progress, stats }));
                    }
                }
                _ => {}
            }
        }
    }
}

struct Handle {
    id: PeerId,
    addr: Multiaddr,
    key: Keypair,
    commands: mpsc::UnboundedSender<Command>,
}

impl Handle {
    async fn run(
        &self,
        op: impl FnOnce(&mut kadence::Behaviour) -> Option<QueryId> + Send + 'static,
    ) -> Option<Outcome> {
        let (tx, rx) = oneshot::channel();
        self.commands.send((Box::new(op), tx)).ok()?;
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .ok()?
            .ok()?
    }
}

/// One line of the summary table.
struct Row {
    operation: &'static str,
    ok: bool,
    result: String,
    latency: Duration,
    requests: u32,
}

async fn measured(
    node: &Handle,
    operation: &'static str,
    op: impl FnOnce(&mut kadence::Behaviour) -> Option<QueryId> + Send + 'static,
    check: impl FnOnce(&Outcome) -> Result<String, String>,
) -> Row {
    let start = Instant::now();
    let outcome = node.run(op).await;
    let latency = start.elapsed();
    let (ok, result, requests) = match &outcome {
        Some(outcome) => match check(outcome) {
            Ok(text) => (true, text, outcome.stats.requests),
            Err(text) => (false, text, outcome.stats.requests),
        },
        None => (false, "did not start or timed out".to_string(), 0),
    };
    Row {
        operation,
        ok,
        result,
        latency,
        requests,
    }
}

async fn testnet(nodes: usize) -> Result<bool, Box<dyn std::error::Error>> {
    let mut handles: Vec<Handle> = Vec::new();
    for i in 0..nodes {
        let key = Keypair::generate_ed25519();
        let mut swarm = build_swarm(key.clone())?;
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        // A tree: every node knows one node started before it.
        if i > 0 {
            let parent = &handles[(i - 1) / 2];
            swarm
                .behaviour_mut()
                .dht
                .add_address(parent.id, parent.addr.clone());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        handles.push(Handle {
            id: *swarm.local_peer_id(),
            addr,
            key,
            commands: tx,
        });
        tokio::spawn(run_node(swarm, rx));
    }
    println!("started {nodes} nodes on 127.0.0.1; bootstrapping");
    for _round in 0..2 {
        for node in &handles {
            node.run(|dht| dht.bootstrap().ok()).await;
        }
    }

    let last = nodes - 1;
    let mut rows = Vec::new();
    rows.push(
        measured(
            &handles[1],
            "closest peers",
            |dht| Some(dht.get_closest_peers(b"kadence example key".to_vec())),
            |o| match &o.result {
                QueryResult::ClosestPeers(Ok(peers)) if !peers.is_empty() => {
                    Ok(format!("{} peers, {} hops", peers.len(), o.stats.hops))
                }
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let cid = vec![0x12, 0x20, 0xde, 0xad, 0xbe, 0xef];
    rows.push(
        measured(
            &handles[2],
            "provide",
            {
                let cid = cid.clone();
                move |dht| dht.provide(cid).ok()
            },
            |o| match &o.result {
                QueryResult::Provide(Ok(n)) => Ok(format!("announced to {n} peers")),
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let provider = handles[2].id;
    rows.push(
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
    let record = Record::public_key(&handles[3].key.public());
    rows.push(
        measured(
            &handles[3],
            "put value",
            {
                let record = record.clone();
                move |dht| dht.put_value(record, None).ok()
            },
            |o| match &o.result {
                QueryResult::PutValue(Ok(n)) => Ok(format!("stored at {n} peers")),
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let expected = record.value.clone();
    rows.push(
        measured(
            &handles[last - 1],
            "get value",
            move |dht| Some(dht.get_value(record.key, NonZeroUsize::new(2))),
            move |o| match &o.result {
                QueryResult::GetValue(Ok(r)) if r.value == expected => Ok("the record".into()),
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );
    let wanted = handles[last - 2].id;
    rows.push(
        measured(
            &handles[4 % nodes],
            "find peer",
            move |dht| Some(dht.find_peer(wanted)),
            |o| match &o.result {
                QueryResult::FindPeer(Ok(p)) => Ok(format!("{} addresses", p.addrs.len())),
                other => Err(format!("{other:?}")),
            },
        )
        .await,
    );

    println!(
        "\n{:<16} {:<6} {:>10} {:>9}  result",
        "operation", "ok", "latency", "requests"
    );
    let mut all_ok = true;
    for row in &rows {
        println!(
            "{:<16} {:<6} {:>10.2?} {:>9}  {}",
            row.operation,
            if row.ok { "yes" } else { "NO" },
            row.latency,
            row.requests,
            row.result
        );
        all_ok &= row.ok;
    }
    Ok(all_ok)
}

fn usage() -> ! {
    eprintln!("usage: node testnet [--nodes N]   (N >= 6)");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (command, rest) = args.split_first().unwrap_or_else(|| usage());
    let nodes = match rest {
        [] => 20,
        [flag, n] if flag == "--nodes" => match n.parse::<usize>() {
            Ok(n) if n >= 6 => n,
            _ => {
                eprintln!("error: --nodes takes a number of at least 6, got {n:?}");
                std::process::exit(2);
            }
        },
        _ => usage(),
    };
    if command != "testnet" {
        usage();
    }
    match testnet(nodes).await {
        Ok(true) => println!("\nall operations succeeded"),
        Ok(false) => {
            eprintln!("\nerror: some operations failed");
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
