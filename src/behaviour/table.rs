//! Glue between the swarm's events and the routing table's upkeep (`routing_table::maintenance`
//! holds the rules): failed dials and closed connections, table changes and the connections
//! kept open, liveness checks, and the snapshot kept for restarts.

use std::time::Instant;

use libp2p::swarm::{ConnectionId, DialError, NotifyHandler, ToSwarm};
use libp2p::{Multiaddr, PeerId};

use super::{Behaviour, Owner};
use crate::config::Config;
use crate::event::Event;
use crate::network::dispatch::OutboundAction;
use crate::network::handler::HandlerIn;
use crate::network::message::without_own_peer_id;
use crate::routing_table::failure::dial_failure;
use crate::routing_table::keep_alive::KeepAlive;
use crate::routing_table::maintenance::TableChange;
use crate::routing_table::{Failure, RemovalReason, RoutingTable};
use crate::store::Store;

impl Behaviour {
    /// A dial failed: its addresses are forgotten, a dial of ours refused outright evicts the
    /// peer, and the requests waiting for it fail (one failure of the peer, unless the dial
    /// says nothing of it).
    pub(super) fn on_dial_failure(
        &mut self,
        peer_id: Option<PeerId>,
        error: &DialError,
        connection_id: ConnectionId,
    ) {
        let ours = self.own_dials.remove(&connection_id);
        // Refused because a dial or connection already exists: that one decides.
        if matches!(error, DialError::DialPeerConditionFalse(_)) {
            return;
        }
        let Some(peer) = peer_id else { return };
        let failure = dial_failure(error);
        tracing::debug!(target: "kadence::dial", %peer, %error, ?failure, ours, "dial failed");
        // A peer coming back is offered to the table only with addresses not known bad.
        let addrs: Vec<Multiaddr> = match error {
            DialError::Transport(failed) => failed
                .iter()
                .filter_map(|(addr, _)| without_own_peer_id(addr.clone(), &peer))
                .collect(),
            _ => Vec::new(),
        };
        if let Some(failure) = failure.filter(|_| ours) {
            self.full_table_failure(&peer, failure);
        }
        let change = self
            .maintenance
            .on_dial_failed(&peer, &addrs, failure, ours, Instant::now());
        self.apply_table_change(change);
        let actions = self.outbound.on_dial_failure(peer, error.to_string());
        if failure.is_some() {
            self.apply_failed_together(peer, actions);
        } else {
            // Not the peer's fault (no address we can dial, a local limit): the
            // requests fail, the peer is not counted against.
            self.apply_all(actions);
        }
    }

    /// Applies what a failed dial or a closed connection left to do. If it failed requests,
    /// the table counts one failure of the peer first, so that a liveness check among them
    /// already finds the verdict.
    pub(super) fn apply_failed_together(&mut self, peer: PeerId, actions: Vec<OutboundAction>) {
        if actions
            .iter()
            .any(|a| matches!(a, OutboundAction::Fail { .. }))
        {
            let change = self.maintenance.on_unreachable(&peer, Instant::now());
            self.apply_table_change(change);
            self.full_table_failure(&peer, Failure::NoAnswer);
        }
        self.apply_all(actions);
    }

    pub(super) fn apply_table_change(&mut self, change: Option<TableChange>) {
        match change {
            Some(TableChange::Added(peer)) => {
                let addresses = self
                    .maintenance
                    .table()
                    .addresses(&peer)
                    .map(<[_]>::to_vec)
                    .unwrap_or_default();
                self.report(Event::RoutingUpdated { peer, addresses })
            }
            Some(TableChange::Removed(eviction, reason)) => {
                tracing::debug!(peer = %eviction.removed, promoted = ?eviction.promoted, ?reason, "peer evicted");
                self.report(Event::PeerRemoved {
                    peer: eviction.removed,
                    reason,
                    replaced_by: eviction.promoted,
                })
            }
            None => return,
        }
        let keep = self.maintenance.update_kept();
        self.apply_keep_alive(keep);
    }

    /// Removes `peer` from the routing table (and the accelerated client's full table);
    /// returns whether either held it. Its addresses are forgotten; it may come back when it
    /// is next met serving the DHT.
    pub fn remove_peer(&mut self, peer: &PeerId) -> bool {
        let change = self.maintenance.remove(peer, RemovalReason::Removed);
        let removed = change.is_some();
        self.apply_table_change(change);
        let from_full = self.remove_from_full_table(peer);
        self.wake();
        removed || from_full
    }

    pub(super) fn apply_keep_alive(&mut self, actions: impl IntoIterator<Item = KeepAlive>) {
        for KeepAlive {
            peer,
            connection,
            keep,
        } in actions
        {
            self.actions.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::KeepAlive(keep),
            });
        }
    }

    /// Seeds the table with the peers a previous run saved. They are treated as not heard from
    /// for a liveness interval, so each is checked soon and evicted if it is gone.
    pub(super) fn restore_routing_snapshot(
        store: &mut impl Store,
        table: &mut impl RoutingTable,
        config: &Config,
    ) {
        let peers = match store.load_routing_snapshot() {
            Ok(peers) => peers,
            Err(error) => {
                tracing::warn!(%error, "routing table snapshot unreadable; starting empty");
                return;
            }
        };
        let now = Instant::now();
        let seen = now
            .checked_sub(config.kbuckets.liveness_interval)
            .unwrap_or(now);
        for (peer, addrs) in peers {
            let _ = table.on_server_peer(peer, &addrs, None, seen);
        }
    }

    pub(super) fn save_routing_snapshot(&mut self) {
        let peers: Vec<_> = self
            .maintenance
            .table()
            .peers()
            .into_iter()
            .map(|p| (p.id, p.addrs))
            .collect();
        if let Err(error) = self.server.store_mut().save_routing_snapshot(&peers) {
            tracing::warn!(%error, "saving the routing table failed");
        }
    }

    pub(super) fn start_liveness_checks(&mut self) {
        for (peer, request) in self.maintenance.due_checks(self.local, Instant::now()) {
            // Registered before the dispatcher's actions run: a dial refused at once must
            // still count as the check's failure.
            let addrs = self.or_known_addresses(&peer, Vec::new());
            self.send_for(Owner::Check, peer, addrs, request, |b, id| {
                b.maintenance.check_started(id, peer)
            });
        }
    }
}
