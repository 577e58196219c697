//! One-shot commands: start an ephemeral node, join through the bootstrap peers, run one
//! operation, print its result, exit.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kadence::{QueryError, QueryProgress, QueryResult, Record};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;

use crate::driver::{build_swarm, listen, Handle, Outcome};
use crate::{keys, split_p2p, Fail};

const TIMEOUT: Duration = Duration::from_secs(60);

pub enum OneShot {
    Closest(Vec<u8>),
    Provide(Vec<u8>),
    ProvideFile(Vec<Vec<u8>>),
    FindProviders(Vec<u8>),
    FindPeer(PeerId),
    Get(Vec<u8>),
    Put(Vec<u8>, Vec<u8>),
}

/// The public Amino bootstrap peers reachable without DNS.
pub fn amino_bootstrap() -> Vec<Multiaddr> {
    ["/ip4/104.131.131.82/tcp/4001/p2p/QmaCpDMGvV2BGHeYERUEnRQAwe3N8SzbUtfsmvsqQLuvuJ"]
        .iter()
        .map(|a| a.parse().expect("a valid multiaddr"))
        .collect()
}

fn peers_json(peers: &[kadence::PeerRecord]) -> serde_json::Value {
    peers
        .iter()
        .map(|p| json!({"id": p.id.to_string(), "addrs": p.addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>()}))
        .collect()
}

fn print_peers(peers: &[kadence::PeerRecord]) {
    for p in peers {
        let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
        println!("{} {}", p.id, addrs.join(" "));
    }
}

pub async fn join(bootstrap: &[Multiaddr], listen_on: Option<Multiaddr>) -> Result<Handle, Fail> {
    if bootstrap.is_empty() {
        return Err(Fail::new("no bootstrap peer"));
    }
    let key = Keypair::generate_ed25519();
    let mode = if listen_on.is_some() {
        kadence::Mode::Server
    } else {
        kadence::Mode::Client
    };
    let config = kadence::Config::amino().with_mode(Some(mode));
    let mut swarm = build_swarm(key.clone(), config).map_err(|e| Fail::new(e.to_string()))?;
    let addr = match listen_on {
        Some(addr) => listen(&mut swarm, addr)
            .await
            .map_err(|e| Fail::new(format!("cannot listen: {e}")))?,
        None => Multiaddr::empty(),
    };
    for addr in bootstrap {
        let (peer, addr) = split_p2p(addr)?;
        swarm.behaviour_mut().dht.add_address(peer, addr);
    }
    let node = Handle::spawn(swarm, addr, key);
    let joined = node
        .run(Duration::from_secs(30), |s| {
            s.behaviour_mut().dht.bootstrap().ok()
        })
        .await;
    match joined.map(|o| o.result) {
        Some(QueryResult::Bootstrap(Ok(n))) if n > 0 => Ok(node),
        _ => Err(Fail::new("could not reach any bootstrap peer")),
    }
}

fn finish(outcome: Option<Outcome>) -> Result<Outcome, Fail> {
    outcome.ok_or_else(|| Fail::new("the operation did not finish in time"))
}

pub async fn run(command: OneShot, bootstrap: Vec<Multiaddr>, json: bool) -> Result<(), Fail> {
    let needs_address = matches!(command, OneShot::Provide(_) | OneShot::ProvideFile(_));
    // A provider record must carry an address: a provide listens, on loopback when the
    // bootstrap peers are local.
    let local = bootstrap
        .iter()
        .all(|a| matches!(a.iter().next(), Some(Protocol::Ip4(ip)) if ip.is_loopback()));
    let listen_on = needs_address.then(|| {
        let ip = if local { "127.0.0.1" } else { "0.0.0.0" };
        format!("/ip4/{ip}/tcp/0").parse().expect("valid")
    });
    let node = join(&bootstrap, listen_on).await?;
    let start = Instant::now();
    match command {
        OneShot::Closest(key) => {
            let o = finish(
                node.run(TIMEOUT, move |s| {
                    Some(s.behaviour_mut().dht.get_closest_peers(key))
                })
                .await,
            )?;
            let QueryResult::ClosestPeers(Ok(peers)) = o.result else {
                return Err(Fail::new(format!("lookup failed: {:?}", o.result)));
            };
            if json {
                println!(
                    "{}",
                    json!({"peers": peers_json(&peers), "requests": o.stats.requests, "ms": start.elapsed().as_millis() as u64})
                );
            } else {
                println!(
                    "{} closest peers ({} requests, {:?}):",
                    peers.len(),
                    o.stats.requests,
                    start.elapsed()
                );
                print_peers(&peers);
            }
        }
        OneShot::Provide(key) => {
            let o = finish(
                node.run(TIMEOUT, move |s| s.behaviour_mut().dht.provide(key).ok())
                    .await,
            )?;
            let QueryResult::Provide(Ok(peers)) = o.result else {
                return Err(Fail::new(format!("provide failed: {:?}", o.result)));
            };
            if json {
                println!("{}", json!({"peers": peers}));
            } else {
                println!("announced to {peers} peers");
            }
        }
        OneShot::ProvideFile(keys) => provide_file(&node, keys, json).await?,
        OneShot::FindProviders(key) => {
            let o = finish(
                node.run(TIMEOUT, move |s| {
                    Some(s.behaviour_mut().dht.find_providers(key, None))
                })
                .await,
            )?;
            let providers: Vec<kadence::PeerRecord> = o
                .progress
                .into_iter()
                .flat_map(|p| match p {
                    QueryProgress::ProvidersFound(found) => found,
                    _ => Vec::new(),
                })
                .collect();
            if json {
                println!("{}", json!({"providers": peers_json(&providers)}));
            } else {
                println!("{} providers:", providers.len());
                print_peers(&providers);
            }
            if providers.is_empty() {
                return Err(Fail::new("no provider found"));
            }
        }
        OneShot::FindPeer(peer) => {
            let o = finish(
                node.run(TIMEOUT, move |s| {
                    Some(s.behaviour_mut().dht.find_peer(peer))
                })
                .await,
            )?;
            let QueryResult::FindPeer(Ok(found)) = o.result else {
                return Err(Fail::new(format!("peer not found: {:?}", o.result)));
            };
            if json {
                println!("{}", peers_json(std::slice::from_ref(&found))[0]);
            } else {
                print_peers(&[found]);
            }
        }
        OneShot::Get(key) => {
            let record = get_record(&node, key.clone())
                .await?
                .ok_or_else(|| Fail::new("no record: not found"))?;
            if key.starts_with(b"/ipns/") {
                crate::ipns::print_record(&key, &record.value, json)?;
            } else if json {
                let hex: String = record.value.iter().map(|b| format!("{b:02x}")).collect();
                println!("{}", json!({"value_hex": hex}));
            } else {
                std::io::stdout()
                    .write_all(&record.value)
                    .map_err(|e| Fail::new(e.to_string()))?;
            }
        }
        OneShot::Put(key, value) => {
            let record = Record {
                key,
                value,
                time_received: String::new(),
            };
            let peers = put_record(&node, record).await?;
            if json {
                println!("{}", json!({"stored": peers}));
            } else {
                println!("stored at {peers} peers");
            }
        }
    }
    Ok(())
}

/// The best valid record under `key` on the DHT; `None` when no peer has one.
pub async fn get_record(node: &Handle, key: Vec<u8>) -> Result<Option<Record>, Fail> {
    let o = finish(
        node.run(TIMEOUT, move |s| {
            Some(s.behaviour_mut().dht.get_value(key, None))
        })
        .await,
    )?;
    match o.result {
        QueryResult::GetValue(Ok(record)) => Ok(Some(record)),
        QueryResult::GetValue(Err(QueryError::NotFound)) => Ok(None),
        other => Err(Fail::new(format!("get failed: {other:?}"))),
    }
}

/// Stores `record` at the closest peers; how many stored it.
pub async fn put_record(node: &Handle, record: Record) -> Result<usize, Fail> {
    let refused = Arc::new(Mutex::new(None));
    let error = refused.clone();
    let o = node
        .run(TIMEOUT, move |s| {
            match s.behaviour_mut().dht.put_value(record, None) {
                Ok(id) => Some(id),
                Err(e) => {
                    *error.lock().unwrap() = Some(e.to_string());
                    None
                }
            }
        })
        .await;
    if let Some(e) = refused.lock().unwrap().take() {
        return Err(Fail::new(format!("record refused: {e}")));
    }
    match finish(o)?.result {
        QueryResult::PutValue(Ok(peers)) => Ok(peers),
        other => Err(Fail::new(format!("put failed: {other:?}"))),
    }
}

/// Announces many keys with the sweep, showing progress.
async fn provide_file(node: &Handle, keys: Vec<Vec<u8>>, json: bool) -> Result<(), Fail> {
    let total = keys.len();
    let failed = Arc::new(Mutex::new(None));
    let error = failed.clone();
    node.run(TIMEOUT, move |s| {
        for key in keys {
            if let Err(e) = s.behaviour_mut().dht.start_providing(key) {
                *error.lock().unwrap() = Some(e.to_string());
                break;
            }
        }
        None
    })
    .await;
    if let Some(e) = failed.lock().unwrap().take() {
        return Err(Fail::new(e));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let (done, _) = node.provide_progress(TIMEOUT).await;
        if !json {
            let width = 30;
            let filled = width * done / total.max(1);
            print!(
                "\r[{}{}] {done}/{total}",
                "#".repeat(filled),
                " ".repeat(width - filled)
            );
            let _ = std::io::stdout().flush();
        }
        if done == total {
            break;
        }
        if Instant::now() > deadline {
            return Err(Fail::new(format!("only {done} of {total} keys announced")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if json {
        println!("{}", json!({"announced": total}));
    } else {
        println!("\nannounced {total} keys");
    }
    Ok(())
}

/// Reads a file of keys, one CID or multihash per line.
pub fn keys_file(path: &str) -> Result<Vec<Vec<u8>>, Fail> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Fail::new(format!("cannot read {path}: {e}")))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| keys::provider_key(l).map_err(Fail::new))
        .collect()
}
