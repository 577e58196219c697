//! The command line: every command and flag, with the help `--help` prints, and the parsers
//! that turn what people type into keys, peers and durations (so bad input is refused before
//! any network is touched).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use kadence::ProviderKey;
use libp2p::{Multiaddr, PeerId};

use crate::{keys, units};

/// A Kademlia DHT node for libp2p, wire-compatible with the IPFS Amino DHT.
///
/// `testnet` runs a local network that tries every operation; `serve` runs a long-lived node;
/// the other commands start a short-lived node, join through the bootstrap peers (the public
/// Amino ones unless --bootstrap names others), run one operation and print its result.
#[derive(Debug, Parser)]
#[command(name = "kadence", version, propagate_version = true)]
pub struct Cli {
    /// A peer to join through, as /<address>/p2p/<peer id>; repeat for more. Default: the
    /// public Amino bootstrap peers.
    #[arg(long, global = true, value_name = "MULTIADDR", value_parser = multiaddr)]
    pub bootstrap: Vec<Multiaddr>,

    /// Print JSON for scripts: one object per command (one per line for `serve`); progress
    /// bars are hidden.
    #[arg(long, global = true)]
    pub json: bool,

    /// Run the accelerated client: a crawl of the whole network into a full routing table,
    /// then lookups in about one round trip. One-shot commands crawl first, then say whether
    /// their lookups were accelerated.
    #[arg(long, global = true)]
    pub accelerated: bool,

    /// With --accelerated, how long a one-shot command waits for its crawl (seconds, or a
    /// duration like 10m) before it runs with the iterative lookup. Default: 600 s.
    #[arg(long, global = true, value_name = "DURATION", value_parser = seconds)]
    pub crawl_timeout: Option<Duration>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a local network that tries every DHT operation, and print a table.
    ///
    /// The nodes listen on 127.0.0.1 under a private protocol name; the command exits 0 only
    /// if every operation succeeded. One node runs the accelerated client (every node with
    /// --accelerated).
    Testnet {
        /// How many nodes (at least 6).
        #[arg(long, default_value_t = 30, value_parser = node_count)]
        nodes: usize,
    },

    /// Run a long-lived node with the persistent store.
    ///
    /// The node runs in automatic mode (a server once its address is confirmed), prints a
    /// status line every --status-interval, and keeps its identity and records in --data-dir.
    /// Ctrl-C or SIGTERM stops it and flushes the store. Logs through RUST_LOG.
    Serve(ServeArgs),

    /// The closest peers to a key: a peer id, a CID or multihash, or any text.
    Closest {
        /// The key.
        key: String,
    },

    /// Announce this node as a provider of a CID, or of every key in a file (--file).
    Provide {
        /// The CID (v0 or v1, any multibase) or multihash (hex or base58).
        #[arg(
            value_name = "CID",
            value_parser = provider_key,
            required_unless_present = "file",
            conflicts_with = "file"
        )]
        cid: Option<ProviderKey>,
        /// A file of keys, one CID or multihash a line (`#` starts a comment); the sweep
        /// announces them, with a progress bar.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
    },

    /// The providers of a CID.
    FindProviders {
        /// The CID (v0 or v1, any multibase) or multihash (hex or base58).
        #[arg(value_name = "CID", value_parser = provider_key)]
        cid: ProviderKey,
    },

    /// A peer's addresses.
    FindPeer {
        /// The peer id.
        #[arg(value_name = "PEER_ID", value_parser = peer_id)]
        peer: PeerId,
    },

    /// The best record under a key.
    ///
    /// An IPNS record is printed decoded, any other value as its bytes (hex with --json).
    Get {
        /// /ipns/<name>, /pk/<name> (a peer id or a libp2p-key CID, k51...), or
        /// /<namespace>/<text>.
        #[arg(value_name = "KEY", value_parser = record_key)]
        key: RecordKey,
    },

    /// Store a record at the closest peers.
    Put {
        /// /ipns/<name>, /pk/<name> or /<namespace>/<text>.
        #[arg(value_name = "KEY", value_parser = record_key)]
        key: RecordKey,
        /// The file holding the record's value.
        #[arg(value_name = "VALUE_FILE")]
        value_file: PathBuf,
    },

    /// Publish an IPNS name.
    ///
    /// Signs a record for the name (of --key-file, else of the --data-dir identity `serve`
    /// uses) one sequence above the best record on the DHT, and stores it.
    Publish(PublishArgs),

    /// An IPNS name's value, sequence, validity and TTL.
    Resolve {
        /// A peer id or a libp2p-key CID (k51...), with or without /ipns/.
        #[arg(value_name = "NAME", value_parser = ipns_name)]
        name: PeerId,
    },
}

/// `serve`'s options.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// An address to listen on; repeat for more. Default: /ip4/0.0.0.0/tcp/4001.
    #[arg(long, value_name = "MULTIADDR", value_parser = multiaddr)]
    pub listen: Vec<Multiaddr>,

    /// Where the node keeps its identity, store and crawled table. Default:
    /// $XDG_DATA_HOME/kadence, else ~/.local/share/kadence.
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// How often to print the status line (seconds, or a duration like 5m).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = interval)]
    pub status_interval: Duration,

    /// Serve Prometheus metrics over HTTP at http://<ADDR>/metrics, e.g. 127.0.0.1:9090.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,

    /// Keyspace regions the reprovide sweep announces at once (the status line says when
    /// more are needed to keep every key announced within 22 h).
    #[arg(long, value_name = "N", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub reprovide_workers: u16,
}

/// `publish`'s options.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// What the name points to: a path (/ipfs/<cid>, /ipns/<name>) or a bare CID.
    #[arg(value_name = "VALUE_PATH", value_parser = value_path)]
    pub value: String,

    /// The name's private key in libp2p's protobuf encoding (as `ipfs key export` writes it).
    #[arg(long, value_name = "PATH", conflicts_with = "data_dir")]
    pub key_file: Option<PathBuf>,

    /// Sign with the identity of the `serve` node keeping its data here (the default data
    /// directory when neither this nor --key-file is given).
    #[arg(long, value_name = "PATH")]
    pub data_dir: Option<PathBuf>,

    /// How long the record stays valid, e.g. 48h (the default).
    #[arg(long, value_name = "DURATION", value_parser = lifetime)]
    pub lifetime: Option<Duration>,

    /// How long resolvers may cache the record, e.g. 1h (the default).
    #[arg(long, value_name = "DURATION", value_parser = units::parse_duration)]
    pub ttl: Option<Duration>,
}

/// A record key in its binary form (`/ipns/` and `/pk/` names as the peer id's bytes).
#[derive(Debug, Clone)]
pub struct RecordKey(pub Vec<u8>);

fn multiaddr(text: &str) -> Result<Multiaddr, String> {
    text.parse().map_err(|e| format!("bad multiaddr: {e}"))
}

/// A bound in seconds: a number (`600`) or a duration with units (`10m`).
fn seconds(text: &str) -> Result<Duration, String> {
    match text.parse::<u64>() {
        Ok(n) => Ok(Duration::from_secs(n)),
        Err(_) => units::parse_duration(text),
    }
}

/// A period: as [`seconds`], but never zero (a status line every 0 s would be a busy loop).
fn interval(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        d if d.is_zero() => Err("the interval must be longer than 0s".into()),
        d => Ok(d),
    }
}

fn lifetime(text: &str) -> Result<Duration, String> {
    match units::parse_duration(text)? {
        d if d.is_zero() => Err("a record valid for 0s is already expired".into()),
        d => Ok(d),
    }
}

fn node_count(text: &str) -> Result<usize, String> {
    text.parse()
        .ok()
        .filter(|n| *n >= 6)
        .ok_or_else(|| "a number of at least 6".into())
}

fn provider_key(text: &str) -> Result<ProviderKey, String> {
    let bytes = keys::provider_key(text)?;
    ProviderKey::from_multihash_bytes(bytes).map_err(|e| e.to_string())
}

fn peer_id(text: &str) -> Result<PeerId, String> {
    text.parse().map_err(|_| "not a peer id".into())
}

fn record_key(text: &str) -> Result<RecordKey, String> {
    keys::record_key(text).map(RecordKey)
}

fn ipns_name(text: &str) -> Result<PeerId, String> {
    keys::peer_name(text.strip_prefix("/ipns/").unwrap_or(text))
}

fn value_path(text: &str) -> Result<String, String> {
    crate::ipns::value_path(text).map_err(|e| e.0)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_go_before_or_after_the_command() {
        for args in [
            vec!["kadence", "--json", "--accelerated", "closest", "x"],
            vec!["kadence", "closest", "x", "--accelerated", "--json"],
        ] {
            let cli = Cli::try_parse_from(&args).unwrap();
            assert!(cli.json && cli.accelerated, "{args:?}");
        }
    }

    #[test]
    fn provide_takes_a_cid_or_a_file_not_both() {
        let cid = "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG";
        assert!(Cli::try_parse_from(["kadence", "provide", cid]).is_ok());
        assert!(Cli::try_parse_from(["kadence", "provide", "--file", "keys.txt"]).is_ok());
        assert!(Cli::try_parse_from(["kadence", "provide"]).is_err());
        assert!(Cli::try_parse_from(["kadence", "provide", cid, "--file", "k"]).is_err());
    }

    #[test]
    fn durations_are_checked_while_parsing() {
        assert!(Cli::try_parse_from(["kadence", "serve", "--status-interval", "0"]).is_err());
        let serve = Cli::try_parse_from(["kadence", "serve", "--status-interval", "1m"]).unwrap();
        match serve.command {
            Command::Serve(args) => assert_eq!(args.status_interval, Duration::from_secs(60)),
            other => panic!("{other:?}"),
        }
        let lifetime = ["kadence", "publish", "/ipfs/x", "--lifetime", "0s"];
        assert!(Cli::try_parse_from(lifetime).is_err());
    }
}
