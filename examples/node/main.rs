//! A kadence node you can run: `cargo run --release --example node -- <command>`.
//!
//! - `testnet [--nodes 30] [--accelerated]`: a local network on 127.0.0.1 that runs every
//!   DHT operation and prints a table; exits 0 only if every operation succeeded (the
//!   README's run command). One of its nodes runs the accelerated client; with
//!   `--accelerated`, every node does.
//! - `serve [--listen <multiaddr>]... [--data-dir <path>] [--bootstrap <multiaddr>]...
//!   [--accelerated]`: a long-lived node with the persistent store, in automatic mode; logs
//!   through `RUST_LOG`; Ctrl-C stops it cleanly (store flushed).
//! - One-shot commands against bootstrap peers (default: the public Amino bootstrap peers,
//!   `--bootstrap <multiaddr>` to use others), human-readable or `--json`:
//!   `closest <key>`, `provide <cid>`, `provide --file <keys.txt>`, `find-providers <cid>`,
//!   `find-peer <peer-id>`, `get <key>`, `put <key> <value-file>`. Record keys `/ipns/<name>`
//!   and `/pk/<name>` take a peer id or a libp2p-key CID (`k51...`); `get` prints an IPNS
//!   record decoded.
//! - IPNS: `publish <value-path> [--key-file <path>] [--lifetime 48h] [--ttl 1h]` signs the
//!   node's name (the key file, else the `--data-dir` identity `serve` uses) one sequence above
//!   the best record on the DHT and stores it; `resolve <name>` prints the name's value,
//!   sequence, validity and TTL.
//! - `--accelerated` turns on the accelerated client (`Config::accelerated()`: a crawl of the
//!   whole network into a full routing table, then lookups that ask a key's closest peers at
//!   once). `serve --accelerated` prints the crawl's progress and when the node is
//!   accelerated; the crawled table is saved in its `--data-dir` and restored on restart. A
//!   one-shot command with `--accelerated [--crawl-timeout <secs>]` crawls first (progress on
//!   stderr, so that `--json` output stays one object), at most `--crawl-timeout` (default
//!   600 s; past it the command runs anyway, with the iterative lookup), then says whether its
//!   lookups were accelerated and their time.
//!
//! Bad input gives one line on stderr and a non-zero exit.

mod crawl;
mod driver;
mod ipns;
mod keys;
mod oneshot;
mod serve;
mod testnet;
mod units;

use std::path::PathBuf;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// A failure to report as one line.
#[derive(Debug)]
pub struct Fail(String);

impl Fail {
    pub fn new(message: impl Into<String>) -> Self {
        Fail(message.into())
    }
}

/// Splits `/.../p2p/<id>` into the peer and its address.
pub fn split_p2p(addr: &Multiaddr) -> Result<(PeerId, Multiaddr), Fail> {
    let mut addr = addr.clone();
    match addr.pop() {
        Some(Protocol::P2p(peer)) => Ok((peer, addr)),
        _ => Err(Fail::new(format!(
            "bootstrap addresses end in /p2p/<peer id>: {addr}"
        ))),
    }
}

const USAGE: &str = "usage: node testnet [--nodes N] [--accelerated]
       node serve [--listen <multiaddr>]... [--data-dir <path>] [--bootstrap <multiaddr>]... [--accelerated]
       node [--bootstrap <multiaddr>]... [--json] [--accelerated [--crawl-timeout <secs>]] <command>
commands: closest <key> | provide <cid> | provide --file <keys.txt> | find-providers <cid>
          | find-peer <peer-id> | get <key> | put <key> <value-file>
          | publish <value-path> [--key-file <path> | --data-dir <path>]
              [--lifetime <duration, e.g. 48h>] [--ttl <duration, e.g. 1h>]
          | resolve <name>
record keys: /ipns/<name>, /pk/<name> (a peer id or a libp2p-key CID, k51...), or /<namespace>/<text>
--accelerated: the accelerated client (a crawl of the whole network into a full routing table,
  then lookups in about one round trip); one-shot commands crawl first, at most
  --crawl-timeout seconds (default 600), then run, iteratively if the crawl did not finish";

/// A bound in seconds: a number (`600`) or a duration with units (`10m`).
fn seconds(text: &str) -> Result<std::time::Duration, Fail> {
    match text.parse::<u64>() {
        Ok(n) => Ok(std::time::Duration::from_secs(n)),
        Err(_) => {
            units::parse_duration(text).map_err(|e| Fail::new(format!("--crawl-timeout: {e}")))
        }
    }
}

fn multiaddr(text: &str) -> Result<Multiaddr, Fail> {
    text.parse()
        .map_err(|e| Fail::new(format!("bad multiaddr {text:?}: {e}")))
}

async fn dispatch(args: Vec<String>) -> Result<bool, Fail> {
    let mut bootstrap = Vec::new();
    let mut listen = Vec::new();
    let mut data_dir: Option<PathBuf> = None;
    let mut json = false;
    let mut nodes = 30usize;
    let mut key_file: Option<PathBuf> = None;
    let mut lifetime = None;
    let mut ttl = None;
    let mut accelerated = false;
    let mut crawl_timeout = None;
    let mut rest = Vec::new();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| {
            it.next()
                .ok_or_else(|| Fail::new(format!("{flag} needs a value")))
        };
        match arg.as_str() {
            "--bootstrap" => bootstrap.push(multiaddr(&value("--bootstrap")?)?),
            "--listen" => listen.push(multiaddr(&value("--listen")?)?),
            "--data-dir" => data_dir = Some(PathBuf::from(value("--data-dir")?)),
            "--json" => json = true,
            "--accelerated" => accelerated = true,
            "--crawl-timeout" => crawl_timeout = Some(seconds(&value("--crawl-timeout")?)?),
            "--key-file" => key_file = Some(PathBuf::from(value("--key-file")?)),
            "--lifetime" => {
                let d = units::parse_duration(&value("--lifetime")?)
                    .map_err(|e| Fail::new(format!("--lifetime: {e}")))?;
                if d.is_zero() {
                    return Err(Fail::new(
                        "--lifetime: a record valid for 0s is already expired",
                    ));
                }
                lifetime = Some(d);
            }
            "--ttl" => {
                let d = units::parse_duration(&value("--ttl")?)
                    .map_err(|e| Fail::new(format!("--ttl: {e}")))?;
                ttl = Some(d);
            }
            "--nodes" => {
                let n = value("--nodes")?;
                nodes = n.parse().ok().filter(|n| *n >= 6).ok_or_else(|| {
                    Fail::new(format!("--nodes takes a number of at least 6, got {n:?}"))
                })?;
            }
            _ => rest.push(arg),
        }
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let bootstrap_or_amino = |b: Vec<Multiaddr>| {
        if b.is_empty() {
            oneshot::amino_bootstrap()
        } else {
            b
        }
    };
    let publishing = matches!(rest[..], ["publish", _]);
    if !publishing && (key_file.is_some() || lifetime.is_some() || ttl.is_some()) {
        return Err(Fail::new(
            "--key-file, --lifetime and --ttl are options of publish",
        ));
    }
    let testnet_or_serve = matches!(rest[..], ["testnet"] | ["serve"]);
    if crawl_timeout.is_some() && (!accelerated || testnet_or_serve) {
        return Err(Fail::new(
            "--crawl-timeout is an option of one-shot commands with --accelerated",
        ));
    }
    let out = oneshot::Output {
        json,
        crawl: accelerated.then(|| crawl_timeout.unwrap_or(crawl::DEFAULT_TIMEOUT)),
    };
    let command = match rest[..] {
        ["--help"] | ["-h"] | ["help"] => {
            println!("{USAGE}");
            return Ok(true);
        }
        ["testnet"] => {
            let ok = testnet::testnet(nodes, accelerated)
                .await
                .map_err(|e| Fail::new(e.to_string()))?;
            if ok {
                println!("\nall operations succeeded");
            }
            return Ok(ok);
        }
        ["serve"] => {
            let listen = if listen.is_empty() {
                vec![multiaddr("/ip4/0.0.0.0/tcp/4001")?]
            } else {
                listen
            };
            let options = serve::ServeOptions {
                listen,
                data_dir: data_dir.unwrap_or_else(serve::default_data_dir),
                bootstrap,
                accelerated,
            };
            serve::serve(options).await?;
            return Ok(true);
        }
        ["closest", key] => oneshot::OneShot::Closest(keys::any_key(key)),
        ["provide", "--file", path] => oneshot::OneShot::ProvideFile(oneshot::keys_file(path)?),
        ["provide", cid] => oneshot::OneShot::Provide(keys::provider_key(cid).map_err(Fail::new)?),
        ["find-providers", cid] => {
            oneshot::OneShot::FindProviders(keys::provider_key(cid).map_err(Fail::new)?)
        }
        ["find-peer", peer] => oneshot::OneShot::FindPeer(
            peer.parse()
                .map_err(|_| Fail::new(format!("not a peer id: {peer:?}")))?,
        ),
        ["get", key] => oneshot::OneShot::Get(keys::record_key(key).map_err(Fail::new)?),
        ["put", key, file] => {
            let value =
                std::fs::read(file).map_err(|e| Fail::new(format!("cannot read {file}: {e}")))?;
            oneshot::OneShot::Put(keys::record_key(key).map_err(Fail::new)?, value)
        }
        ["publish", value] => {
            let key = match (key_file, data_dir) {
                (Some(_), Some(_)) => {
                    return Err(Fail::new(
                        "publish takes --key-file or --data-dir, not both",
                    ))
                }
                (Some(path), None) => serve::read_key(&path)?,
                (None, dir) => serve::identity(&dir.unwrap_or_else(serve::default_data_dir))?,
            };
            let options = ipns::PublishOptions {
                value: ipns::value_path(value)?,
                key,
                lifetime,
                ttl,
            };
            ipns::publish(options, bootstrap_or_amino(bootstrap), out).await?;
            return Ok(true);
        }
        ["resolve", name] => {
            let name =
                keys::peer_name(name.strip_prefix("/ipns/").unwrap_or(name)).map_err(Fail::new)?;
            ipns::resolve(name, bootstrap_or_amino(bootstrap), out).await?;
            return Ok(true);
        }
        _ => return Err(Fail::new(USAGE)),
    };
    oneshot::run(command, bootstrap_or_amino(bootstrap), out).await?;
    Ok(true)
}

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match dispatch(args).await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("error: some operations failed");
            std::process::exit(1);
        }
        Err(Fail(message)) => {
            eprintln!("error: {message}");
            std::process::exit(if message.starts_with("usage") { 2 } else { 1 });
        }
    }
}
