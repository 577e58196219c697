//! The kadence node: `cargo install kadence --features cli`, then `kadence --help`.
//!
//! - `testnet [--nodes 30]`: a local network on 127.0.0.1 that runs every DHT operation and
//!   prints a table; exits 0 only if every operation succeeded (the README's run command).
//! - `serve`: a long-lived node with the persistent store, in automatic mode, a status line
//!   every `--status-interval`, Prometheus metrics with `--metrics <addr>`; Ctrl-C or SIGTERM
//!   stops it cleanly (store flushed).
//! - One-shot commands against bootstrap peers (default: the public Amino bootstrap peers):
//!   `closest`, `provide` (a CID or `--file`), `find-providers`, `find-peer`, `get`, `put`,
//!   `publish` and `resolve` (IPNS).
//! - `--accelerated` turns on the accelerated client (`Config::accelerated()`); a one-shot
//!   command crawls first, at most `--crawl-timeout`, then says whether its lookups were
//!   accelerated. `--json` prints JSON on every command.
//!
//! Bad input gives one line on stderr and a non-zero exit; `--help` is on every command.

mod cli;
mod crawl;
mod driver;
mod ipns;
mod keys;
mod metrics_http;
mod oneshot;
mod progress;
mod serve;
mod status;
mod testnet;
mod units;

use cli::{Cli, Command};

use clap::{CommandFactory, Parser};
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

/// Refusals the parser cannot express: one line, as clap's own.
fn check(cli: &Cli) -> Result<(), clap::Error> {
    let refuse = |message: &str| {
        Err(Cli::command().error(clap::error::ErrorKind::ArgumentConflict, message))
    };
    let one_shot = !matches!(cli.command, Command::Testnet { .. } | Command::Serve(_));
    if cli.crawl_timeout.is_some() && !(cli.accelerated && one_shot) {
        return refuse("--crawl-timeout is an option of one-shot commands with --accelerated");
    }
    if !cli.bootstrap.is_empty() && matches!(cli.command, Command::Testnet { .. }) {
        return refuse("--bootstrap is not an option of testnet: its network is its own");
    }
    Ok(())
}

/// A parse error on one line: clap's first paragraph (a list it opens, such as missing
/// arguments, joined onto it).
fn one_line(error: &clap::Error) -> String {
    if error.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        return "error: a command is needed (kadence --help lists them)".into();
    }
    let text = error.to_string();
    let first: Vec<&str> = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect();
    first.join(" ")
}

async fn dispatch(cli: Cli) -> Result<bool, Fail> {
    // `serve` joins through the peers given, if any (its store remembers the rest); the
    // one-shot commands need some, the public ones by default.
    let given = cli.bootstrap;
    let bootstrap = if given.is_empty() {
        oneshot::amino_bootstrap()
    } else {
        given.clone()
    };
    let json = cli.json;
    let out = oneshot::Output {
        json,
        crawl: cli
            .accelerated
            .then(|| cli.crawl_timeout.unwrap_or(crawl::DEFAULT_TIMEOUT)),
    };
    let command = match cli.command {
        Command::Testnet { nodes } => {
            let ok = testnet::testnet(nodes, cli.accelerated, json)
                .await
                .map_err(|e| Fail::new(e.to_string()))?;
            return Ok(ok);
        }
        Command::Serve(args) => {
            let listen = if args.listen.is_empty() {
                vec!["/ip4/0.0.0.0/tcp/4001".parse().expect("a valid multiaddr")]
            } else {
                args.listen
            };
            let options = serve::ServeOptions {
                listen,
                data_dir: args.data_dir.unwrap_or_else(serve::default_data_dir),
                bootstrap: given,
                accelerated: cli.accelerated,
                json,
                status_interval: args.status_interval,
                metrics: args.metrics,
                reprovide_workers: usize::from(args.reprovide_workers),
            };
            serve::serve(options).await?;
            return Ok(true);
        }
        Command::Closest { key } => oneshot::OneShot::Closest(keys::any_key(&key)),
        Command::Provide { cid: Some(key), .. } => oneshot::OneShot::Provide(key),
        Command::Provide { file, .. } => {
            let path = file.expect("clap requires a CID or --file");
            oneshot::OneShot::ProvideFile(oneshot::keys_file(&path)?)
        }
        Command::FindProviders { cid } => oneshot::OneShot::FindProviders(cid),
        Command::FindPeer { peer } => oneshot::OneShot::FindPeer(peer),
        Command::Get { key } => oneshot::OneShot::Get(key.0),
        Command::Put { key, value_file } => {
            let value = std::fs::read(&value_file)
                .map_err(|e| Fail::new(format!("cannot read {}: {e}", value_file.display())))?;
            oneshot::OneShot::Put(key.0, value)
        }
        Command::Publish(args) => {
            let key = match (args.key_file, args.data_dir) {
                (Some(path), _) => serve::read_key(&path)?,
                (None, dir) => serve::identity(&dir.unwrap_or_else(serve::default_data_dir))?,
            };
            let options = ipns::PublishOptions {
                value: args.value,
                key,
                lifetime: args.lifetime,
                ttl: args.ttl,
            };
            ipns::publish(options, bootstrap, out).await?;
            return Ok(true);
        }
        Command::Resolve { name } => {
            ipns::resolve(name, bootstrap, out).await?;
            return Ok(true);
        }
    };
    oneshot::run(command, bootstrap, out).await?;
    Ok(true)
}

#[tokio::main]
async fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let cli = match Cli::try_parse().and_then(|cli| check(&cli).map(|()| cli)) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("{}", one_line(&e));
            std::process::exit(2);
        }
    };
    match dispatch(cli).await {
        Ok(true) => {}
        Ok(false) => {
            eprintln!("error: some operations failed");
            std::process::exit(1);
        }
        Err(Fail(message)) => {
            eprintln!("error: {message}");
            std::process::exit(1);
        }
    }
}
