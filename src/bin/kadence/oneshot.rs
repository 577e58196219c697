//! One-shot commands: start an ephemeral node, join through the bootstrap peers, run one
//! operation, print its result, exit.

use std::io::Write as _;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kadence::{
    ProviderKey, QueryError, QueryFailure, QueryProgress, QueryResult, QueryStats, Record,
};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde_json::json;

use crate::crawl::{wait_for_crawl, Acceleration};
use crate::driver::{build_swarm, listen, Handle, Outcome};
use crate::{keys, progress, split_p2p, Fail};

const TIMEOUT: Duration = Duration::from_secs(60);

pub enum OneShot {
    Closest(Vec<u8>),
    Provide(ProviderKey),
    ProvideFile(Vec<ProviderKey>),
    FindProviders(ProviderKey),
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

/// Starts an ephemeral node and joins through `bootstrap`. With `crawl` (the one-shot
/// `--accelerated`), the node runs the accelerated client and waits for its first crawl, at
/// most that long.
pub async fn join(
    bootstrap: &[Multiaddr],
    listen_on: Option<Multiaddr>,
    out: Output,
) -> Result<(Handle, Option<Acceleration>), Fail> {
    let crawl = out.crawl;
    if bootstrap.is_empty() {
        return Err(Fail::new("no bootstrap peer"));
    }
    let key = Keypair::generate_ed25519();
    let mode = if listen_on.is_some() {
        kadence::Mode::Server
    } else {
        kadence::Mode::Client
    };
    let mut config = kadence::Config::amino().with_mode(Some(mode));
    if crawl.is_some() {
        config = config.accelerated();
    }
    let mut swarm = build_swarm(key.clone(), config).map_err(|e| Fail::new(e.to_string()))?;
    let addr = match listen_on {
        Some(addr) => listen(&mut swarm, addr)
            .await
            .map_err(|e| Fail::new(format!("cannot listen: {e}")))?,
        None => Multiaddr::empty(),
    };
    for addr in bootstrap {
        let (peer, addr) = split_p2p(addr)?;
        let _ = swarm.behaviour_mut().dht.add_address(peer, addr);
    }
    // With the accelerated client, the crawl starts now (the table knows the bootstrap
    // peers) and runs beside the bootstrap lookup.
    let node = Handle::spawn(swarm, addr, key);
    let joined = node
        .run(Duration::from_secs(30), |s| {
            s.behaviour_mut().dht.bootstrap().ok()
        })
        .await;
    if !matches!(joined.map(|o| o.result), Some(QueryResult::Bootstrap(Ok(n))) if n > 0) {
        return Err(Fail::new("could not reach any bootstrap peer"));
    }
    let acceleration = match crawl {
        Some(bound) => Some(Acceleration::new(
            wait_for_crawl(&node, bound, out.json).await,
        )),
        None => None,
    };
    Ok((node, acceleration))
}

fn finish(outcome: Option<Outcome>) -> Result<Outcome, Fail> {
    outcome.ok_or_else(|| Fail::new("the operation did not finish in time"))
}

/// How a one-shot command prints.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// One JSON object on stdout, else text.
    pub json: bool,
    /// `--accelerated`: crawl first, at most this long.
    pub crawl: Option<Duration>,
}

/// Prints a command's result: `object` with `--json`, else `text`; with `--accelerated`, whether
/// it was accelerated and its time (JSON fields, or a line after the text).
pub fn print_result(
    json: bool,
    mut object: serde_json::Value,
    text: impl FnOnce() -> String,
    acceleration: Option<&Acceleration>,
) {
    if json {
        if let Some(a) = acceleration {
            a.add_json(&mut object);
        }
        println!("{object}");
        return;
    }
    println!("{}", text());
    if let Some(a) = acceleration {
        println!("{}", a.line());
    }
}

fn peers_text(peers: &[kadence::PeerRecord]) -> String {
    peers
        .iter()
        .map(|p| {
            let addrs: Vec<String> = p.addrs.iter().map(|a| a.to_string()).collect();
            format!("{} {}", p.id, addrs.join(" "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` and then `peers`, one a line.
fn with_peers(text: String, peers: &[kadence::PeerRecord]) -> String {
    if peers.is_empty() {
        return text;
    }
    format!("{text}\n{}", peers_text(peers))
}

pub async fn run(command: OneShot, bootstrap: Vec<Multiaddr>, out: Output) -> Result<(), Fail> {
    let json = out.json;
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
    let (node, mut acceleration) = join(&bootstrap, listen_on, out).await?;
    let start = Instant::now();
    match command {
        OneShot::Closest(key) => {
            let o = finish(
                node.run(TIMEOUT, move |s| {
                    Some(s.behaviour_mut().dht.get_closest_peers(key))
                })
                .await,
            )?;
            let QueryResult::ClosestPeers {
                result: Ok(peers), ..
            } = o.result
            else {
                return Err(Fail::new(format!("lookup failed: {:?}", o.result)));
            };
            crate::crawl::record(&mut acceleration, &o.stats);
            let elapsed = start.elapsed();
            print_result(
                json,
                json!({"peers": peers_json(&peers), "requests": o.stats.requests, "ms": elapsed.as_millis() as u64}),
                || {
                    let head = format!(
                        "{} closest peers ({} requests, {elapsed:?}):",
                        peers.len(),
                        o.stats.requests
                    );
                    with_peers(head, &peers)
                },
                acceleration.as_ref(),
            );
        }
        OneShot::Provide(key) => {
            let o = finish(
                node.run(TIMEOUT, move |s| s.behaviour_mut().dht.provide(key).ok())
                    .await,
            )?;
            let QueryResult::Provide {
                result: Ok(peers), ..
            } = o.result
            else {
                return Err(Fail::new(format!("provide failed: {:?}", o.result)));
            };
            crate::crawl::record(&mut acceleration, &o.stats);
            print_result(
                json,
                json!({"peers": peers}),
                || format!("announced to {peers} peers"),
                acceleration.as_ref(),
            );
        }
        OneShot::ProvideFile(keys) => provide_file(&node, keys, json, acceleration).await?,
        OneShot::FindProviders(key) => {
            let o = finish(
                node.run(TIMEOUT, move |s| {
                    Some(s.behaviour_mut().dht.find_providers(key, None))
                })
                .await,
            )?;
            crate::crawl::record(&mut acceleration, &o.stats);
            let providers: Vec<kadence::PeerRecord> = o
                .progress
                .into_iter()
                .flat_map(|p| match p {
                    QueryProgress::ProvidersFound(found) => found,
                    _ => Vec::new(),
                })
                .collect();
            print_result(
                json,
                json!({"providers": peers_json(&providers)}),
                || with_peers(format!("{} providers:", providers.len()), &providers),
                acceleration.as_ref(),
            );
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
            let QueryResult::FindPeer {
                result: Ok(found), ..
            } = o.result
            else {
                return Err(Fail::new(format!("peer not found: {:?}", o.result)));
            };
            crate::crawl::record(&mut acceleration, &o.stats);
            let found = [found];
            print_result(
                json,
                peers_json(&found)[0].clone(),
                || peers_text(&found),
                acceleration.as_ref(),
            );
        }
        OneShot::Get(key) => {
            let (record, stats) = get_record(&node, key.clone()).await?;
            crate::crawl::record(&mut acceleration, &stats);
            let record = record.ok_or_else(|| Fail::new("no record: not found"))?;
            if key.starts_with(b"/ipns/") {
                crate::ipns::print_record(&key, &record.value, json, acceleration.as_ref())?;
            } else if json {
                let hex: String = record.value.iter().map(|b| format!("{b:02x}")).collect();
                print_result(
                    json,
                    json!({"value_hex": hex}),
                    String::new,
                    acceleration.as_ref(),
                );
            } else {
                std::io::stdout()
                    .write_all(&record.value)
                    .map_err(|e| Fail::new(e.to_string()))?;
                // Stdout is the value's bytes, as stored: the line goes beside the progress.
                if let Some(a) = &acceleration {
                    eprintln!("{}", a.line());
                }
            }
        }
        OneShot::Put(key, value) => {
            let record = Record {
                key,
                value,
                time_received: String::new(),
            };
            let (peers, stats) = put_record(&node, record).await?;
            crate::crawl::record(&mut acceleration, &stats);
            print_result(
                json,
                json!({"stored": peers}),
                || format!("stored at {peers} peers"),
                acceleration.as_ref(),
            );
        }
    }
    Ok(())
}

/// The best valid record under `key` on the DHT (`None` when no peer has one), and what the
/// lookup cost.
pub async fn get_record(node: &Handle, key: Vec<u8>) -> Result<(Option<Record>, QueryStats), Fail> {
    let o = finish(
        node.run(TIMEOUT, move |s| {
            Some(s.behaviour_mut().dht.get_value(key, None))
        })
        .await,
    )?;
    match o.result {
        QueryResult::GetValue {
            result: Ok(record), ..
        } => Ok((Some(record), o.stats)),
        QueryResult::GetValue {
            result:
                Err(QueryFailure {
                    error: QueryError::NotFound,
                    ..
                }),
            ..
        } => Ok((None, o.stats)),
        other => Err(Fail::new(format!("get failed: {other:?}"))),
    }
}

/// Stores `record` at the closest peers; how many stored it, and what it cost.
pub async fn put_record(node: &Handle, record: Record) -> Result<(usize, QueryStats), Fail> {
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
    let o = finish(o)?;
    match o.result {
        QueryResult::PutValue {
            result: Ok(peers), ..
        } => Ok((peers, o.stats)),
        other => Err(Fail::new(format!("put failed: {other:?}"))),
    }
}

/// `provide --file`'s bar: keys the sweep has announced, of the file's.
pub const PROVIDE_BAR: &str = "{bar:30} {pos}/{len} keys announced ({elapsed})";

/// Announces many keys with the sweep, showing progress.
async fn provide_file(
    node: &Handle,
    keys: Vec<ProviderKey>,
    json: bool,
    mut acceleration: Option<Acceleration>,
) -> Result<(), Fail> {
    let total = keys.len();
    let failed = Arc::new(Mutex::new(None));
    let error = failed.clone();
    // The sweep runs the lookups itself: whether the full table served it is what the node
    // says when the keys are added (after the crawl, when there was one).
    let accelerated = Arc::new(Mutex::new(false));
    let full_table = accelerated.clone();
    node.run(TIMEOUT, move |s| {
        *full_table.lock().unwrap() = s.behaviour().dht.is_accelerated();
        // One bulk call: the keys go to the store together, each region they touch is swept
        // once (checked first: a bad key adds none).
        if let Err(e) = s.behaviour_mut().dht.start_providing_many(keys) {
            *error.lock().unwrap() = Some(e.to_string());
        }
        None
    })
    .await;
    if let Some(e) = failed.lock().unwrap().take() {
        return Err(Fail::new(e));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let bar = progress::bar(total as u64, json, PROVIDE_BAR);
    loop {
        let (done, _) = node.provide_progress(TIMEOUT).await;
        bar.set_position(done as u64);
        if done == total {
            break;
        }
        if Instant::now() > deadline {
            bar.abandon();
            return Err(Fail::new(format!("only {done} of {total} keys announced")));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    bar.finish_and_clear();
    if let Some(a) = acceleration.as_mut() {
        a.note(*accelerated.lock().unwrap());
    }
    print_result(
        json,
        json!({"announced": total}),
        || format!("announced {total} keys"),
        acceleration.as_ref(),
    );
    Ok(())
}

/// Reads a file of keys, one CID or multihash per line.
pub fn keys_file(path: &Path) -> Result<Vec<ProviderKey>, Fail> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Fail::new(format!("cannot read {}: {e}", path.display())))?;
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let bytes = keys::provider_key(l).map_err(Fail::new)?;
            ProviderKey::from_multihash_bytes(bytes).map_err(|e| Fail::new(e.to_string()))
        })
        .collect()
}
