//! A kadence node you can run: `cargo run --release --example node -- <command>`.
//!
//! - `testnet [--nodes 30]`: a local network on 127.0.0.1 that runs every DHT operation and
//!   prints a table; exits 0 only if every operation succeeded (the README's run command).
//! - `serve [--listen <multiaddr>]... [--data-dir <path>] [--bootstrap <multiaddr>]...`: a
//!   long-lived node with the persistent store, in automatic mode; logs through `RUST_LOG`;
//!   Ctrl-C stops it cleanly (store flushed).
//! - One-shot commands against bootstrap peers (default: the public Amino bootstrap peers,
//!   `--bootstrap <multiaddr>` to use others), human-readable or `--json`:
//!   `closest <key>`, `provide <cid>`, `provide --file <keys.txt>`, `find-providers <cid>`,
//!   `find-peer <peer-id>`, `get <key>`, `put <key> <value-file>`.
//!
//! Bad input gives one line on stderr and a non-zero exit.

mod driver;
mod keys;
mod oneshot;
mod serve;
mod testnet;

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

const USAGE: &str = "usage: node testnet [--nodes N]
       node serve [--listen <multiaddr>]... [--data-dir <path>] [--bootstrap <multiaddr>]...
       node [--bootstrap <multiaddr>]... [--json] closest <key> | provide <cid> | provide --file <keys.txt>
            | find-providers <cid> | find-peer <peer-id> | get <key> | put <key> <value-file>";

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
    let command = match rest[..] {
        ["testnet"] => {
            let ok = testnet::testnet(nodes)
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
        _ => return Err(Fail::new(USAGE)),
    };
    oneshot::run(command, bootstrap_or_amino(bootstrap), json).await?;
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
