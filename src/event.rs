//! What the [`Behaviour`](crate::Behaviour) reports to the application.

use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};

use crate::mode::Mode;
use crate::network::message::{MessageType, Response};
use crate::network::{InboundError, OutboundRequestId, RequestError};
use crate::routing::crawler::{CrawlProgress, CrawlStats};
use crate::routing::{QueryId, QueryProgress, QueryResult, QueryStats, WritesSummary};
use crate::routing_table::{CrawlMerge, RemovalReason};
use crate::server::{DecisionId, InboundOutcome, StoreRequest};

/// An event of the DHT behaviour, as seen by the swarm.
#[derive(Debug, Clone)]
pub enum Event {
    /// A remote peer's request was handled by the Server module. One per inbound request, for
    /// metrics and logs.
    InboundRequest {
        /// The sender.
        peer: PeerId,
        /// The request's type.
        request: MessageType,
        /// What became of it.
        outcome: InboundOutcome,
    },
    /// With [`Config::with_manual_store_approval`](crate::Config::with_manual_store_approval):
    /// a valid write waits for [`Behaviour::approve_store`](crate::Behaviour::approve_store) or
    /// [`Behaviour::reject_store`](crate::Behaviour::reject_store).
    StoreRequest {
        /// Pass it to the decision.
        id: DecisionId,
        /// The sender.
        peer: PeerId,
        /// The validated record to store.
        request: StoreRequest,
    },
    /// An inbound stream was reset: a malformed or oversized frame, one stream too many, or no
    /// answer in time. Other streams of the connection are unaffected.
    InboundFailed {
        /// The remote peer.
        peer: PeerId,
        /// The connection.
        connection: ConnectionId,
        /// What went wrong.
        error: InboundError,
    },
    /// An outbound request from [`Behaviour::send_request`](crate::Behaviour::send_request)
    /// completed. `Ok(None)` is an ADD_PROVIDER whose frame was written and flushed.
    OutboundRequestFinished {
        /// The peer asked.
        peer: PeerId,
        /// The request's id.
        id: OutboundRequestId,
        /// The response, or why there is none.
        result: Result<Option<Response>, RequestError>,
    },
    /// This node's mode changed.
    ModeChanged {
        /// The mode now in force.
        mode: Mode,
    },
    /// What a connected peer says about the protocol changed: `supported` is `true` when it
    /// advertises it through identify or negotiated it with us, so it is a DHT server.
    PeerProtocolSupport {
        /// The peer.
        peer: PeerId,
        /// The connection the information came on.
        connection: ConnectionId,
        /// Whether the peer serves the protocol.
        supported: bool,
    },
    /// A DHT operation found something (records, providers) while it runs.
    QueryProgress {
        /// The operation.
        id: QueryId,
        /// What it found.
        progress: QueryProgress,
    },
    /// A DHT operation finished.
    QueryFinished {
        /// The operation.
        id: QueryId,
        /// Its result.
        result: QueryResult,
        /// What it cost.
        stats: QueryStats,
    },
    /// A [`put_value`](crate::Behaviour::put_value) or [`provide`](crate::Behaviour::provide)
    /// whose [`Event::QueryFinished`] came early (optimistic provide, once enough peers stored
    /// the record) finished its other writes and its lookup: how many peers stored the record
    /// in the end. Not sent for operations that reported only at their end, nor for one
    /// stopped with [`cancel_query`](crate::Behaviour::cancel_query) (which stops the writes
    /// still to come).
    WritesSettled {
        /// The operation.
        id: QueryId,
        /// What its writes achieved.
        writes: WritesSummary,
        /// What it cost, start to end.
        stats: QueryStats,
    },
    /// The sweep reprovided a keyspace region.
    RegionReprovided(crate::provider::SweepReport),
    /// The sweep has more work than the reprovide interval allows: regions wait this long
    /// after their slot. It keeps going, oldest first. `workers_needed` says what to change
    /// ([`Config::with_reprovide_workers`](crate::Config::with_reprovide_workers)) once the
    /// pace of finished regions shows it; [`Behaviour::sweep_status`](crate::Behaviour::sweep_status)
    /// has the whole picture.
    ReprovideBehind {
        /// How late the oldest waiting region is.
        by: std::time::Duration,
        /// Regions due and waiting for a worker.
        waiting: usize,
        /// The workers that would keep up at the pace of the regions swept lately, when more
        /// than configured are needed.
        workers_needed: Option<usize>,
    },
    /// A peer entered the routing table.
    RoutingUpdated {
        /// The peer.
        peer: PeerId,
        /// The addresses the table holds for it.
        addresses: Vec<Multiaddr>,
    },
    /// A peer left the routing table.
    PeerRemoved {
        /// The peer.
        peer: PeerId,
        /// Why it left.
        reason: RemovalReason,
        /// The replacement candidate that took its place, if any.
        replaced_by: Option<PeerId>,
    },
    /// The accelerated client ([`Config::accelerated`](crate::Config::accelerated)) started a
    /// crawl of the network.
    CrawlStarted {
        /// Peers it starts from (both routing tables).
        seeds: usize,
    },
    /// How far the crawl under way is; sent at most every
    /// [`AcceleratedConfig::progress_interval`](crate::AcceleratedConfig::progress_interval).
    CrawlProgress(CrawlProgress),
    /// A crawl finished: the full routing table now holds what it found, and serves lookups.
    CrawlFinished {
        /// What the crawl cost.
        stats: CrawlStats,
        /// How the table changed.
        merge: CrawlMerge,
        /// Peers in the full table now.
        peers: usize,
        /// Whether the table now serves lookups
        /// ([`Behaviour::is_accelerated`](crate::Behaviour::is_accelerated)): false after a
        /// crawl that left it with fewer than half the servers the k-bucket table knows
        /// (another crawl follows soon).
        serving: bool,
    },
}

#[cfg(test)]
mod tests {
    /// What an application hands between tasks: a compile-time check, so that a field that is
    /// not `Clone` or not `Send` cannot slip into the public types.
    fn shareable<T: Clone + Send + Sync + 'static>() {}

    #[test]
    fn events_results_and_handles_can_be_cloned_and_sent() {
        shareable::<super::Event>();
        shareable::<crate::QueryResult>();
        shareable::<crate::Handle>();
        shareable::<crate::HandleError<Vec<crate::PeerRecord>>>();
    }
}
