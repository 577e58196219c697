//! # kadence
//!
//! A Kademlia DHT for rust-libp2p, wire-compatible with the libp2p kad-dht protocol
//! (`/ipfs/kad/1.0.0`, the IPFS "Amino" DHT spoken by go-libp2p-kad-dht, js-libp2p and
//! `libp2p-kad`).
//!
//! The crate is one [`NetworkBehaviour`](libp2p::swarm::NetworkBehaviour), [`Behaviour`], that
//! you compose into your swarm. Its modules follow the DHT design: the Network (the wire,
//! [`network`]), the Routing Table ([`routing_table`]), Routing (lookups, [`routing`]; the
//! operations are methods of [`Behaviour`]), the Server ([`server`]) and the stores
//! ([`store`]) and the Provider ([`provider`], the reprovide sweep). [`ipns`] creates, reads and
//! validates IPNS records, which the Amino DHT stores under `/ipns/<name>`.
//!
//! [`Config::accelerated`] turns on the accelerated client: a crawl of the whole network into a
//! [`FullTable`], from which every operation asks a key's closest peers at once instead of
//! walking to them ([`routing::accelerated`] says how, and when it falls back).
//!
//! ## Quick start
//!
//! Compose the behaviour into your swarm, then ask the DHT from any task through its async
//! [`Handle`] (or call the same operations on the behaviour and match
//! [`Event::QueryFinished`]: both report the same results).
//!
//! ```
//! use libp2p::swarm::NetworkBehaviour;
//! use libp2p::{identify, identity::Keypair};
//!
//! #[derive(NetworkBehaviour)]
//! struct Node {
//!     // identify tells kadence which peers serve the DHT.
//!     identify: identify::Behaviour,
//!     dht: kadence::Behaviour,
//! }
//!
//! let key = Keypair::generate_ed25519();
//! let node = Node {
//!     identify: identify::Behaviour::new(identify::Config::new(
//!         "/my-app/1.0.0".into(),
//!         key.public(),
//!     )),
//!     // The public IPFS DHT. For a private network: kadence::Config::new(your protocol).
//!     dht: kadence::Behaviour::new(key.public().to_peer_id(), kadence::Config::amino()),
//! };
//! // In automatic mode a node serves the DHT once the swarm confirms an external address; on a
//! // local network, add one (`Swarm::add_external_address`) or pick `Mode::Server`.
//! assert_eq!(node.dht.mode(), kadence::Mode::Client);
//!
//! // Cloneable and Send: hand it to any task. The swarm (built around `node`) must be polled.
//! let dht = node.dht.handle();
//!
//! async fn find(dht: kadence::Handle) -> Result<(), Box<dyn std::error::Error>> {
//!     use futures::StreamExt;
//!     dht.bootstrap().await?;
//!     let content = kadence::ProviderKey::sha2_256(b"some content"); // its multihash
//!     dht.provide(content.clone()).await?;
//!     let mut providers = dht.find_providers(content, None);
//!     while let Some(provider) = providers.next().await {
//!         println!("provided by {}", provider?.id);
//!     }
//!     Ok(())
//! }
//! # drop(find(dht));
//! ```
//!
//! The README has a complete local network, and `examples/local_network.rs` one that does
//! every operation and scrapes the [metrics](crate#features).
//!
//! ## Features
//!
//! - `metrics`: Prometheus metrics (`prometheus-client`, registered into your `Registry` as
//!   `libp2p-metrics` does) with `Behaviour::register_metrics`; the families are listed on
//!   `metrics::Metrics`.
//! - `cid`: CIDs and CID strings to [`ProviderKey`]s.
//! - `cli`: the `kadence` node binary (`cargo install kadence --features cli`).

#![forbid(unsafe_code)]
#![warn(missing_docs)]

// The README's Rust snippets compile as doctests, so they cannot drift from the API.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod behaviour;
mod config;
mod event;
pub mod handle;
pub mod ipns;
pub mod key;
#[cfg(feature = "metrics")]
pub mod metrics;
mod mode;
pub mod network;
mod proto;
pub mod provider;
pub mod routing;
pub mod routing_table;
pub mod server;
pub mod store;

pub use behaviour::{
    Behaviour, NoKnownPeers, ProvideError, ProvideStatus, ProvidedCursor, PutValueError,
    StartProvideError,
};
pub use config::{Config, AMINO_PROTOCOL};
pub use event::Event;
pub use handle::{Handle, HandleError, HandleFuture, ProvidersStream};
pub use mode::Mode;
pub use network::message::{ConnectionType, MessageType, PeerRecord, Record, Request, Response};
pub use network::{InboundError, InboundRequestId, OutboundRequestId, RequestError};
pub use provider::{
    InvalidProviderKey, ProviderKey, ReprovideConfig, SweepMark, SweepReport, SweepStatus,
};
pub use routing::accelerated::AcceleratedConfig;
pub use routing::crawler::{
    CrawlAction, CrawlProgress, CrawlRequest, CrawlResult, CrawlStats, CrawledPeer, Crawler,
    CrawlerConfig,
};
pub use routing::lookup::LookupFinish;
pub use routing::rtt::RequestDeadlines;
pub use routing::{
    QueryError, QueryFailure, QueryId, QueryKind, QueryProgress, QueryResult, QueryStats,
    WritesSummary,
};
pub use routing_table::{
    Admission, CrawlMerge, FullTable, FullTableConfig, KBucketConfig, KBucketTable, PeerHealth,
    RemovalReason, RoutingTable,
};
pub use server::{
    DecisionId, InboundOutcome, InboundRejection, StoreRequest, ValidationError, Validator,
    Validators,
};
pub use store::{
    CrawlSnapshot, MemoryStore, MemoryStoreConfig, NetGroup, PersistentStore,
    PersistentStoreConfig, ProviderStore, RecordStore, Source, Store, StoreSizes,
};
