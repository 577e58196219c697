//! The settings that bound what a hostile peer can make a node hold, send or store, and the
//! reprovide sweep's pages (issue 14).

use super::Config;
use crate::store::MemoryStoreConfig;

/// Bounds of what a hostile peer can make the server hold or send.
impl Config {
    /// Largest inbound request frame, refused from its length prefix (the stream is reset).
    /// Default 68 KiB: a PUT_VALUE of a 64 KiB value (the stores' largest) with its key twice
    /// and the framing; an IPNS record is at most 10 KiB and every other request is smaller.
    /// Responses keep [`Config::with_max_message_size`] (4 MiB), as deployed peers answer
    /// with more than a request ever needs.
    pub fn with_max_request_size(mut self, bytes: usize) -> Self {
        self.max_request_size = bytes;
        self
    }

    /// Most bytes of peer entries (closer peers, then providers) in one answer to FIND_NODE,
    /// GET_VALUE or GET_PROVIDERS; entries past it are left out. Default 64 KiB: the k closest
    /// peers and well over a hundred providers with a few addresses each, so an honest answer
    /// is never cut, while a request of some 40 bytes can no longer draw megabytes (go fills
    /// answers up to its 4 MiB message limit; askers take providers from several servers).
    pub fn with_max_answer_size(mut self, bytes: usize) -> Self {
        self.max_answer_size = bytes;
        self
    }

    /// Most bytes of encoded answers on one connection not yet taken by the transport (its
    /// remote is not reading them); an answer beyond it is not sent and its stream is reset.
    /// Default 1 MiB: sixteen answers of the largest size, far more than a reading client ever
    /// leaves unsent, since the transport takes an answer at once while the remote reads.
    pub fn with_max_response_bytes_in_flight(mut self, bytes: usize) -> Self {
        self.max_response_bytes_in_flight = bytes;
        self
    }

    /// Most addresses kept from, and handed out with, one provider record (after dropping
    /// unspecified ones, and loopback and private ones of a provider that reached us from a
    /// public address). Default 16, as the routing table keeps per peer: well-connected nodes
    /// announce up to about 26 (go's peerstore, which holds providers' addresses, keeps 64 per
    /// peer), and one that works is all an asker needs.
    pub fn with_max_provider_addresses(mut self, addrs: usize) -> Self {
        self.max_provider_addrs = addrs;
        self
    }

    /// See [`Config::with_max_request_size`].
    pub fn max_request_size(&self) -> usize {
        self.max_request_size
    }

    /// See [`Config::with_max_answer_size`].
    pub fn max_answer_size(&self) -> usize {
        self.max_answer_size
    }

    /// See [`Config::with_max_response_bytes_in_flight`].
    pub fn max_response_bytes_in_flight(&self) -> usize {
        self.max_response_bytes_in_flight
    }

    /// See [`Config::with_max_provider_addresses`].
    pub fn max_provider_addresses(&self) -> usize {
        self.max_provider_addrs
    }

    /// The bounds of the default in-memory store (see [`Config::with_memory_store`]).
    pub fn memory_store(&self) -> MemoryStoreConfig {
        self.store
    }
}

/// The reprovide sweep's pages (issue 14).
impl Config {
    /// Provided keys the reprovide sweep reads from the store at once. A region holding more
    /// (at start-up the whole keyspace is one region) is swept page by page, every page
    /// announced with the peers of the region's one lookup, so every provided key is announced
    /// each interval however many share a region. Default 10,000: a page costs about 250 bytes
    /// per key while it is announced (20 peers per key), and is read off the swarm's task by a
    /// persistent store.
    pub fn with_reprovide_keys_per_page(mut self, keys: usize) -> Self {
        self.reprovide.keys_per_page = keys.max(1);
        self
    }

    /// See [`Config::with_reprovide_keys_per_page`].
    pub fn reprovide_keys_per_page(&self) -> usize {
        self.reprovide.keys_per_page
    }
}

/// The async [`Handle`](crate::Handle)'s queue (issue 17).
impl Config {
    /// Most commands the behaviour's [`Handle`](crate::Handle)s may have queued and not yet
    /// taken by the behaviour, counted over a handle and all its clones (not per clone); one
    /// more fails at once with [`HandleError::QueueFull`](crate::HandleError::QueueFull). The
    /// behaviour takes up to 16 per poll. Default 64 (Amino has no counterpart), as
    /// [`Config::with_max_pending_requests`]; at least 1.
    pub fn with_handle_queue(mut self, commands: usize) -> Self {
        self.handle_queue = commands.max(1);
        self
    }

    /// See [`Config::with_handle_queue`].
    pub fn handle_queue(&self) -> usize {
        self.handle_queue
    }
}
