//! `serve`: a long-lived node with the persistent store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::{Event, KBucketTable, RoutingTable};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, Swarm};
use prometheus_client::registry::Registry;
use serde_json::json;

use crate::crawl::{finished_json, finished_line, progress_json, progress_line, CrawlStatus};
use crate::driver::{build_swarm_with, listen, Node, NodeEvent};
use crate::metrics_http;
use crate::status::{Shutdown, Status, Tracker};
use crate::{split_p2p, Fail};

pub struct ServeOptions {
    pub listen: Vec<Multiaddr>,
    pub data_dir: PathBuf,
    pub bootstrap: Vec<Multiaddr>,
    /// Run the accelerated client.
    pub accelerated: bool,
    /// One JSON object per line instead of text.
    pub json: bool,
    /// How often to print the status line.
    pub status_interval: Duration,
    /// Where to serve Prometheus metrics, if anywhere.
    pub metrics: Option<SocketAddr>,
    /// Regions the reprovide sweep announces at once.
    pub reprovide_workers: usize,
}

/// Prints a line of what the node does: `text`, or with `json` the object with its `event`.
fn say(json: bool, event: &str, mut object: serde_json::Value, text: impl FnOnce() -> String) {
    if json {
        object["event"] = json!(event);
        println!("{object}");
    } else {
        println!("{}", text());
    }
}

/// A crawl's progress lines in `serve`: a crawl of the public network lasts minutes, and a
/// line a second (the library's pace) would bury the rest.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The default data directory: `$XDG_DATA_HOME/kadence`, else `~/.local/share/kadence`.
pub fn default_data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("kadence")
}

/// A private key in libp2p's protobuf encoding: the data directory's `identity.key`, or the
/// file `ipfs key export` writes.
pub fn read_key(path: &Path) -> Result<Keypair, Fail> {
    let bytes = std::fs::read(path)
        .map_err(|e| Fail::new(format!("cannot read {}: {e}", path.display())))?;
    Keypair::from_protobuf_encoding(&bytes)
        .map_err(|e| Fail::new(format!("{} is not a private key: {e}", path.display())))
}

/// The node's identity, kept in the data directory so its peer id (and IPNS name) survives
/// restarts; made on first use.
pub fn identity(dir: &Path) -> Result<Keypair, Fail> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Fail::new(format!("cannot use data dir {}: {e}", dir.display())))?;
    let path = dir.join("identity.key");
    if path.exists() {
        return read_key(&path);
    }
    let key = Keypair::generate_ed25519();
    let bytes = key
        .to_protobuf_encoding()
        .map_err(|e| Fail::new(e.to_string()))?;
    std::fs::write(&path, bytes)
        .map_err(|e| Fail::new(format!("cannot write {}: {e}", path.display())))?;
    Ok(key)
}

/// libp2p's TCP transport sets `SO_REUSEPORT` on its listeners, so a second node on a port
/// already in use would silently share it with the first. A plain bind shows the conflict.
fn refuse_taken_port(addr: &Multiaddr) -> Result<(), Fail> {
    let mut parts = addr.iter();
    let ip: std::net::IpAddr = match parts.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return Ok(()),
    };
    let port = match parts.next() {
        Some(Protocol::Tcp(port)) if port != 0 => port,
        _ => return Ok(()),
    };
    std::net::TcpListener::bind((ip, port))
        .map(drop)
        .map_err(|e| Fail::new(format!("cannot listen on {addr}: {e}")))
}

pub async fn serve(options: ServeOptions) -> Result<(), Fail> {
    let dir = &options.data_dir;
    let key = identity(dir)?;
    let local = key.public().to_peer_id();
    let store = PersistentStore::open(dir.join("store.redb"), PersistentStoreConfig::default())
        .map_err(|e| Fail::new(format!("cannot open the store in {}: {e}", dir.display())))?;
    // Automatic mode: server once an external address is confirmed. A listen address on a
    // specific IP is taken as reachable; a wildcard one waits for confirmation.
    let mut config = kadence::Config::amino().with_reprovide_workers(options.reprovide_workers);
    if options.accelerated {
        config = config.accelerated();
    }
    let table = KBucketTable::new(local, config.kbuckets().clone());
    let mut swarm = build_swarm_with(key, |_| {
        kadence::Behaviour::with_parts(local, config, table, store)
    })
    .map_err(|e| Fail::new(e.to_string()))?;
    // Listened for before anything else can take time, so that no signal goes unseen.
    let mut shutdown =
        Shutdown::new().map_err(|e| Fail::new(format!("cannot listen for signals: {e}")))?;
    let mut registry = Registry::default();
    swarm.behaviour_mut().dht.register_metrics(&mut registry);
    let metrics = match options.metrics {
        Some(addr) => Some(metrics_http::serve(addr, registry).await?),
        None => None,
    };
    let mut addrs = Vec::new();
    for addr in &options.listen {
        refuse_taken_port(addr)?;
        let bound = listen(&mut swarm, addr.clone())
            .await
            .map_err(|e| Fail::new(format!("cannot listen on {addr}: {e}")))?;
        let wildcard = matches!(
            bound.iter().next(),
            Some(Protocol::Ip4(ip)) if ip.is_unspecified()
        );
        if !wildcard {
            swarm.add_external_address(bound.clone());
        }
        addrs.push(bound);
    }
    for addr in &options.bootstrap {
        let (peer, addr) = split_p2p(addr)?;
        let _ = swarm.behaviour_mut().dht.add_address(peer, addr);
    }
    let json = options.json;
    let listening: Vec<String> = addrs.iter().map(|a| format!("{a}/p2p/{local}")).collect();
    say(
        json,
        "started",
        json!({"peer_id": local.to_string(), "listening": listening, "data_dir": dir}),
        || {
            let mut text = format!("kadence node {local}");
            for addr in &listening {
                text.push_str(&format!("\nlistening on {addr}"));
            }
            text + &format!("\ndata in {}", dir.display())
        },
    );
    if let Some(addr) = metrics {
        say(
            json,
            "metrics",
            json!({"url": format!("http://{addr}/metrics")}),
            || format!("metrics on http://{addr}/metrics"),
        );
    }
    // The store gave back the table a previous run crawled (when it was recent enough).
    let restored = swarm.behaviour().dht.full_table().map_or(0, |t| t.len());
    if restored > 0 {
        say(json, "table_restored", json!({"peers": restored}), || {
            format!("full routing table restored: {restored} peers")
        });
    }
    let mut reported_accelerated = false;
    let mut crawl = CrawlStatus::default();
    let mut next_progress = Instant::now();
    let mut tracker = Tracker::default();
    let mut status_timer = tokio::time::interval_at(
        tokio::time::Instant::now() + options.status_interval,
        options.status_interval,
    );
    // A slow machine skips a line rather than printing a burst of them.
    status_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let _ = swarm.behaviour_mut().dht.bootstrap();
    let signal = loop {
        if options.accelerated && !reported_accelerated && swarm.behaviour().dht.is_accelerated() {
            reported_accelerated = true;
            let peers = swarm.behaviour().dht.full_table().map_or(0, |t| t.len());
            say(json, "accelerated", json!({"peers": peers}), || {
                format!("accelerated: lookups start from the full routing table ({peers} peers)")
            });
        }
        let event = tokio::select! {
            signal = shutdown.signalled() => break signal,
            _ = status_timer.tick() => {
                let status = status(&mut swarm, &tracker, &crawl, options.accelerated);
                say(json, "status", status.json(), || status.line());
                continue;
            }
            event = swarm.select_next_some() => event,
        };
        if let SwarmEvent::Behaviour(NodeEvent::Dht(event)) = &event {
            tracker.update(event);
        }
        match event {
            SwarmEvent::NewListenAddr { address, .. } => tracing::info!(%address, "listening"),
            SwarmEvent::Behaviour(NodeEvent::Dht(event)) if crawl.update(&event) => match event {
                Event::CrawlStarted { seeds } => {
                    say(json, "crawl_started", json!({"seeds": seeds}), || {
                        format!("crawl started from {seeds} peers")
                    });
                    next_progress = Instant::now() + PROGRESS_EVERY;
                }
                Event::CrawlProgress(progress) if Instant::now() >= next_progress => {
                    say(json, "crawl_progress", progress_json(&progress), || {
                        progress_line(&progress)
                    });
                    next_progress = Instant::now() + PROGRESS_EVERY;
                }
                Event::CrawlFinished { .. } => {
                    if let Some(finished) = &crawl.last {
                        say(json, "crawl_finished", finished_json(finished), || {
                            finished_line(finished)
                        });
                    }
                }
                _ => {}
            },
            _ => {}
        }
    };
    // Dropping the swarm saves the routing table and flushes the store (its writer thread
    // is joined), so the line below is true when it prints.
    drop(swarm);
    say(
        json,
        "stopped",
        json!({"signal": signal, "store_flushed": true}),
        || format!("{signal}: stopped; store flushed"),
    );
    Ok(())
}

/// What the node holds and does now.
fn status(
    swarm: &mut Swarm<Node>,
    tracker: &Tracker,
    crawl: &CrawlStatus,
    accelerated: bool,
) -> Status {
    let dht = &mut swarm.behaviour_mut().dht;
    let sizes = dht.store_mut().sizes();
    let provided = dht
        .provided_len()
        .inspect_err(|error| tracing::warn!(%error, "cannot count the provided keys"))
        .ok();
    Status {
        peers: dht.routing_table().len(),
        records: sizes.records,
        provider_keys: sizes.provider_keys,
        provided,
        regions: tracker.regions,
        checked: tracker.checked,
        keys: tracker.keys,
        messages: tracker.messages,
        sweep: dht.sweep_status(),
        accelerated: accelerated.then(|| {
            (
                dht.is_accelerated(),
                dht.full_table().map_or(0, |t| t.len()),
            )
        }),
        crawl: crawl.clone(),
    }
}
