//! Provider Store and value records: what this node holds for the network.
//!
//! [`RecordStore`] and [`ProviderStore`] are the contracts; [`MemoryStore`] implements both.
//! Expiry is wall-clock time ([`SystemTime`]), so that a record's lifetime survives a restart
//! in a persistent implementation; every method that reads takes `now` and never returns an
//! expired record.
//!
//! ## The provider record
//! A provider record says "peer P provides key K, reachable at addresses A": the key (a
//! multihash on the public network, at most 80 bytes), the provider's peer id, its addresses,
//! when it was received, when it expires (48 h after, on Amino) and when its addresses stop
//! being handed out (24 h after: a provider's addresses go stale sooner than the fact that it
//! provides the key; after that it is returned without addresses and the asker looks the peer
//! up).

mod memory;

use std::time::{Duration, SystemTime};

use libp2p::{Multiaddr, PeerId};

pub use memory::{MemoryStore, MemoryStoreConfig};

/// A value record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRecord {
    /// The record key (`/<namespace>/...`).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// When this node received it.
    pub received: SystemTime,
    /// When it stops being served.
    pub expires: SystemTime,
}

/// A provider record as stored: `provider` provides `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderRecord {
    /// The provided key.
    pub key: Vec<u8>,
    /// The providing peer.
    pub provider: PeerId,
    /// Where the provider said it can be reached.
    pub addrs: Vec<Multiaddr>,
    /// When this node received the announcement.
    pub received: SystemTime,
    /// When the record stops being served.
    pub expires: SystemTime,
    /// When the addresses stop being handed out with the record.
    pub addrs_expire: SystemTime,
}

/// Lifetimes applied to what the network stores at this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetimes {
    /// How long a provider record is valid. Amino: 48 h.
    pub provider_validity: Duration,
    /// How long a provider's addresses are handed out. Amino: 24 h.
    pub provider_addrs: Duration,
    /// How long a value record is kept. Amino: 48 h.
    pub value_max_age: Duration,
}

impl Default for Lifetimes {
    fn default() -> Self {
        Self {
            provider_validity: Duration::from_secs(48 * 3600),
            provider_addrs: Duration::from_secs(24 * 3600),
            value_max_age: Duration::from_secs(48 * 3600),
        }
    }
}

/// Why a store refused or failed an operation. Nothing already stored is changed by a refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The value is larger than the store accepts.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store holds the most records (or provided keys) it may.
    #[error("store full")]
    Full,
    /// The key already has the most providers it may; existing ones are kept.
    #[error("too many providers for this key")]
    TooManyProviders,
}

/// Value records, by key.
pub trait RecordStore: Send + 'static {
    /// The record under `key`, unless absent or expired at `now`.
    fn get(&mut self, key: &[u8], now: SystemTime) -> Option<ValueRecord>;
    /// Stores or replaces the record under its key.
    fn put(&mut self, record: ValueRecord) -> Result<(), StoreError>;
    /// Removes the record under `key`.
    fn remove(&mut self, key: &[u8]);
}

/// Provider records, by key.
pub trait ProviderStore: Send + 'static {
    /// Adds (or renews, when the provider is already known for the key) a provider record.
    fn add_provider(&mut self, record: ProviderRecord) -> Result<(), StoreError>;
    /// The providers of `key` not expired at `now`.
    fn providers(&mut self, key: &[u8], now: SystemTime) -> Vec<ProviderRecord>;
}
