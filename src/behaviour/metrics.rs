//! The behaviour's side of the Prometheus metrics (cargo feature `metrics`): what it records
//! into [`Metrics`], from where.
//!
//! Counters and histograms move with the events the behaviour hands to the swarm, observed as
//! `poll` returns them, and with the two things no event carries: every outbound request's
//! end (the application hears only of its own, the metrics count all of them, lookups, writes,
//! checks, crawls and the sweep included) and the dials the DHT made itself. The gauges are
//! read from the behaviour's state in `poll`, at most once a second.

use std::time::{Duration, Instant};

use fnv::FnvHashMap;
use libp2p::swarm::{ConnectionId, DialError, ToSwarm};
use prometheus_client::registry::Registry;

use super::Behaviour;
use crate::event::Event;
use crate::key::Key;
use crate::metrics::Metrics;
use crate::network::message::{MessageType, Response};
use crate::network::{OutboundRequestId, RequestError};
use crate::routing_table::failure::dial_failure;
use crate::routing_table::RoutingTable;

/// How often, at most, the gauges are read: reading the buckets walks the whole routing table.
const REFRESH: Duration = Duration::from_secs(1);

/// K-buckets of a 256-bit keyspace (a common-prefix length of 256 is the local key itself).
const BUCKETS: usize = 256;

/// What the behaviour keeps for its metrics.
#[derive(Debug)]
pub(super) struct MetricsState {
    metrics: Metrics,
    /// Outbound requests under way: their type, for the label, and when they started, for
    /// the round trip.
    sent: FnvHashMap<OutboundRequestId, (MessageType, Instant)>,
    /// When the gauges were last read; `None` before the first time.
    refreshed: Option<Instant>,
}

impl Behaviour {
    /// Registers the DHT's Prometheus metrics into `registry`, under the prefix `kadence` (the
    /// families are listed on [`Metrics`]), and records into them from now on. Call it once
    /// per registry, before the swarm runs: what happened before is not counted.
    ///
    /// ```
    /// use prometheus_client::registry::Registry;
    ///
    /// let mut registry = Registry::default();
    /// let peer = libp2p::identity::Keypair::generate_ed25519().public().to_peer_id();
    /// let mut dht = kadence::Behaviour::new(peer, kadence::Config::amino());
    /// dht.register_metrics(&mut registry);
    /// // Serve `registry` to Prometheus, e.g. with `prometheus_client::encoding::text::encode`.
    /// ```
    pub fn register_metrics(&mut self, registry: &mut Registry) {
        self.set_metrics(Metrics::new(registry));
    }

    /// Records into `metrics` from now on, in place of any metrics set before. For metrics
    /// created apart from the behaviour; [`register_metrics`](Self::register_metrics) does
    /// both at once.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = Some(MetricsState {
            metrics,
            sent: FnvHashMap::default(),
            refreshed: None,
        });
        // The gauges are read at the next poll.
        self.wake();
    }

    /// An outbound request started.
    pub(super) fn metrics_sent(&mut self, id: OutboundRequestId, request: MessageType) {
        if let Some(state) = &mut self.metrics {
            state.sent.insert(id, (request, Instant::now()));
        }
    }

    /// An outbound request ended, answered or failed. One started before the metrics were set
    /// is not counted: its type is unknown.
    pub(super) fn metrics_finished(
        &mut self,
        id: OutboundRequestId,
        result: &Result<Option<Response>, RequestError>,
    ) {
        if let Some(state) = &mut self.metrics {
            if let Some((request, started)) = state.sent.remove(&id) {
                state
                    .metrics
                    .record_outbound(request, result, Some(started.elapsed()));
            }
        }
    }

    /// A connection was established; it counts as a dial of the DHT's if one of its own dials
    /// made it. Call before `own_dials` forgets the dial.
    pub(super) fn metrics_connected(&self, connection: ConnectionId) {
        if let Some(state) = &self.metrics {
            if self.own_dials.contains(&connection) {
                state.metrics.record_dial(Ok(()));
            }
        }
    }

    /// A dial failed; counted when it was one of the DHT's own. Call before `own_dials`
    /// forgets the dial.
    pub(super) fn metrics_dial_failed(&self, error: &DialError, connection: ConnectionId) {
        let Some(state) = &self.metrics else { return };
        // A dial refused because another to the peer was under way, or a connection open, was
        // never made: that other one is the dial that counts.
        if !self.own_dials.contains(&connection)
            || matches!(error, DialError::DialPeerConditionFalse(_))
        {
            return;
        }
        state.metrics.record_dial(Err(dial_failure(error)));
    }

    /// Called in `poll` before it hands the next action to the swarm: records the event about
    /// to go out, if that action is one, and reads the gauges when they are due.
    pub(super) fn observe_metrics(&mut self) {
        self.refresh_metrics();
        let Some(state) = &self.metrics else { return };
        if let Some(ToSwarm::GenerateEvent(event)) = self.actions.front() {
            record_event(&state.metrics, event);
        }
    }

    /// Reads the gauges from the behaviour's state, at most once per [`REFRESH`].
    fn refresh_metrics(&mut self) {
        let now = Instant::now();
        match &mut self.metrics {
            Some(state) if state.refreshed.is_none_or(|at| now - at >= REFRESH) => {
                state.refreshed = Some(now);
            }
            _ => return,
        }
        let local = Key::from_peer(&self.local);
        let peers = self.maintenance.table().peers();
        let mut buckets = vec![0usize; BUCKETS];
        for peer in &peers {
            let cpl = Key::from_peer(&peer.id).common_prefix_len(&local);
            if let Some(count) = buckets.get_mut(cpl) {
                *count += 1;
            }
        }
        let full_table = self.full_table().map_or(0, |table| table.len());
        let connections = self.outbound.connections().count();
        let mode = self.mode.current();
        let provided = self.server.store_mut().provided_len();
        let sizes = self.server.store_mut().sizes();
        let sweep = self.sweep_status();
        let Some(state) = &self.metrics else { return };
        let metrics = &state.metrics;
        metrics.set_routing_table(peers.len(), &buckets);
        metrics.set_full_table(full_table);
        metrics.set_connections(connections);
        metrics.set_mode(mode);
        metrics.set_store(sizes);
        metrics.set_sweep(&sweep);
        match provided {
            Ok(keys) => metrics.set_provided_keys(keys),
            Err(error) => tracing::debug!(%error, "provided keys not counted for the metrics"),
        }
    }
}

/// Records what an event tells. The match names every event, so that a new one is not
/// forgotten here.
fn record_event(metrics: &Metrics, event: &Event) {
    match event {
        Event::InboundRequest {
            request, outcome, ..
        } => metrics.record_inbound(*request, outcome),
        Event::InboundFailed { error, .. } => metrics.record_inbound_failure(error),
        Event::ModeChanged { mode } => metrics.set_mode(*mode),
        Event::QueryFinished { result, stats, .. } => metrics.record_query(
            result.kind().as_str(),
            result.outcome(),
            stats.duration(),
            stats.requests,
        ),
        Event::RegionReprovided(report) => metrics.record_region_reprovided(report),
        Event::ReprovideBehind { by, .. } => metrics.record_reprovide_behind(*by),
        Event::RoutingUpdated { .. } => metrics.record_peer_added(),
        Event::PeerRemoved { reason, .. } => metrics.record_peer_removed(reason),
        Event::CrawlFinished {
            stats,
            peers,
            serving,
            ..
        } => metrics.record_crawl(stats.duration, *peers, *serving),
        // Counted where every outbound request ends, the application's among them.
        Event::OutboundRequestFinished { .. } => {}
        // A write waiting for a decision is counted as an inbound request, `awaiting_decision`.
        Event::StoreRequest { .. } => {}
        // Nothing to count: steps of work counted when it ends, or state read as gauges.
        Event::PeerProtocolSupport { .. }
        | Event::QueryProgress { .. }
        | Event::WritesSettled { .. }
        | Event::CrawlStarted { .. }
        | Event::CrawlProgress(_) => {}
    }
}
