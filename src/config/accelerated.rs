//! The switch of the accelerated client (issue 16).

use super::Config;
use crate::routing::accelerated::AcceleratedConfig;

/// The accelerated client: a full-network routing table fed by a crawler (issue 16).
impl Config {
    /// The accelerated client, with its defaults: the node crawls the network (at once, then
    /// hourly) into a table of every DHT server, and once that table is ready every operation
    /// (closest peers, find peer, get/put value, find providers, provide, the reprovide
    /// sweep) asks the key's closest peers directly, in about one round trip, instead of
    /// walking to them. Until the first crawl is done (or when the table is stale for a key)
    /// operations use the ordinary iterative lookup, so the node is usable from its first
    /// second; with a [`PersistentStore`](crate::store::PersistentStore) the crawled table is
    /// saved and a restarted node is accelerated at once.
    ///
    /// The cost: a crawl contacts every server of the network (50 new peers per second by
    /// default, so about 4 minutes and a few hundred connections at once for 10,000 servers),
    /// and the table holds some 500 bytes to 1.5 KB per server (at most
    /// [`FullTableConfig::max_peers`](crate::FullTableConfig::max_peers), 100,000). The node
    /// still answers others from its k-bucket table, as an ordinary server.
    pub fn accelerated(self) -> Self {
        self.with_accelerated(Some(AcceleratedConfig::default()))
    }

    /// The accelerated client with these settings, or `None` (the default) for the ordinary
    /// client. See [`Config::accelerated`].
    pub fn with_accelerated(mut self, accelerated: Option<AcceleratedConfig>) -> Self {
        self.accelerated = accelerated;
        self
    }

    /// The accelerated client's settings, when it is on. See [`Config::accelerated`].
    pub fn accelerated_config(&self) -> Option<&AcceleratedConfig> {
        self.accelerated.as_ref()
    }
}
