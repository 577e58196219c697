//! The swarm's side of [`Behaviour`]: connections, swarm events, handler events, and `poll`,
//! which drives every sub-state machine in turn and hands their actions to the swarm.

use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use futures::FutureExt;
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionError, ConnectionId, DialFailure, FromSwarm,
    NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use super::{Behaviour, LIVENESS_TICK};
use crate::event::Event;
use crate::mode::Mode;
use crate::network::handler::{Handler, HandlerEvent, HandlerIn};
use crate::network::message::without_own_peer_id;

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = Handler;
    type ToSwarm = Event;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(peer, &self.config, self.mode.current()))
    }

    fn handle_pending_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: Option<PeerId>,
        _: &[Multiaddr],
        _: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        // For dials of others (the DHT's own carry their addresses): the table's, as capped
        // as the DHT's own dials.
        Ok(peer
            .and_then(|p| {
                let known = self.maintenance.table().addresses(&p)?.to_vec();
                Some(self.addresses.to_dial(&p, known))
            })
            .unwrap_or_default())
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(peer, &self.config, self.mode.current()))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                #[cfg(feature = "metrics")]
                self.metrics_connected(e.connection_id);
                self.own_dials.remove(&e.connection_id);
                let actions = self
                    .outbound
                    .on_connection_established(e.peer_id, e.connection_id);
                self.apply_all(actions);
                // A connection of a kind shows the swarm has its transport.
                match e.endpoint {
                    ConnectedPoint::Dialer { address, .. } => self.addresses.observe_local(address),
                    ConnectedPoint::Listener { local_addr, .. } => {
                        self.addresses.observe_local(local_addr)
                    }
                }
                self.server
                    .on_connection_established(e.connection_id, e.endpoint.get_remote_address());
                let (observed, dialed) = match e.endpoint {
                    ConnectedPoint::Dialer { address, .. } => (
                        address.clone(),
                        without_own_peer_id(address.clone(), &e.peer_id),
                    ),
                    ConnectedPoint::Listener { send_back_addr, .. } => {
                        (send_back_addr.clone(), None)
                    }
                };
                if let Some(addr) = &dialed {
                    self.crawl_connected(&e.peer_id, addr.clone());
                }
                let keep =
                    self.maintenance
                        .on_connected(e.peer_id, e.connection_id, observed, dialed);
                self.apply_keep_alive(keep);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                remaining_established,
                cause,
                ..
            }) => {
                let idle = matches!(cause, Some(ConnectionError::KeepAliveTimeout));
                let actions = self
                    .outbound
                    .on_connection_closed(peer_id, connection_id, idle);
                self.apply_failed_together(peer_id, actions);
                self.server.on_connection_closed(connection_id);
                let keep = self
                    .maintenance
                    .on_connection_closed(peer_id, connection_id);
                self.apply_keep_alive(keep);
                if remaining_established == 0 {
                    // Closed by us for idleness, or on purpose: nothing to learn of the peer.
                    let lost = matches!(cause, Some(ConnectionError::IO(_)));
                    self.maintenance
                        .on_disconnected(&peer_id, lost, Instant::now());
                }
            }
            FromSwarm::DialFailure(DialFailure {
                peer_id,
                error,
                connection_id,
            }) => {
                #[cfg(feature = "metrics")]
                self.metrics_dial_failed(error, connection_id);
                self.on_dial_failure(peer_id, error, connection_id);
            }
            FromSwarm::NewExternalAddrOfPeer(e) => {
                if let Some(addr) = without_own_peer_id(e.addr.clone(), &e.peer_id) {
                    if self.usable_own_address(&e.peer_id, addr.clone()) {
                        let change =
                            self.maintenance
                                .on_peer_address(e.peer_id, addr, Instant::now());
                        self.apply_table_change(change);
                    }
                }
            }
            FromSwarm::ExternalAddrConfirmed(e) => {
                if let Some(mode) = self.mode.on_external_confirmed(e.addr) {
                    self.on_mode_changed(mode);
                }
                self.update_local_addrs();
            }
            FromSwarm::ExternalAddrExpired(e) => {
                if let Some(mode) = self.mode.on_external_expired(e.addr) {
                    self.on_mode_changed(mode);
                }
                self.update_local_addrs();
            }
            FromSwarm::NewListenAddr(e) => {
                self.addresses.observe_local(e.addr);
                if !self.listen_addrs.contains(e.addr) {
                    self.listen_addrs.push(e.addr.clone());
                }
                self.update_local_addrs();
            }
            FromSwarm::ExpiredListenAddr(e) => {
                self.listen_addrs.retain(|a| a != e.addr);
                self.update_local_addrs();
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        match event {
            HandlerEvent::InboundRequest { id, request } => {
                if self.mode.current() == Mode::Client {
                    // Read just before the switch to client mode: a client does not answer.
                    if let Some(id) = id {
                        self.actions.push_back(ToSwarm::NotifyHandler {
                            peer_id: peer,
                            handler: NotifyHandler::One(connection),
                            event: HandlerIn::Refuse { id },
                        });
                    }
                    return;
                }
                let maintenance = &self.maintenance;
                let actions = self.server.on_request(
                    (self.local, &self.local_addrs),
                    maintenance.table(),
                    &|p| maintenance.connected_addresses(p),
                    peer,
                    connection,
                    id,
                    request,
                    SystemTime::now(),
                );
                self.apply_server(actions);
            }
            HandlerEvent::InboundFailed(error) => self.report(Event::InboundFailed {
                peer,
                connection,
                error,
            }),
            HandlerEvent::OutboundFinished { id, result } => {
                if self.outbound.on_finished(id).is_none() {
                    return; // Already failed when its connection closed.
                }
                self.finish(peer, id, result);
            }
            HandlerEvent::RemoteSupport(supported) => {
                let change = self
                    .maintenance
                    .on_protocol_support(peer, supported, Instant::now());
                self.apply_table_change(change);
                self.report(Event::PeerProtocolSupport {
                    peer,
                    connection,
                    supported,
                });
            }
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        if !self.started {
            self.started = true;
            if !self.maintenance.table().is_empty() {
                self.refresh();
            }
            // Peers restored from a snapshot or added before the first poll.
            let keep = self.maintenance.update_kept();
            self.apply_keep_alive(keep);
        }
        if let Some(interval) = self.config.refresh_interval {
            if self.refresh_tick.poll_unpin(cx).is_ready() {
                self.refresh_tick.reset(interval);
                let _ = self.refresh_tick.poll_unpin(cx);
                self.refresh();
            }
        }
        self.poll_handle(cx);
        let _ = self.query_timer.poll_unpin(cx);
        self.drive_queries(cx);
        self.poll_sweep(cx);
        self.poll_accelerated(cx);
        if self.liveness_tick.poll_unpin(cx).is_ready() {
            let now = Instant::now();
            self.maintenance
                .on_tick(now, now.saturating_duration_since(self.liveness_due));
            self.liveness_tick.reset(LIVENESS_TICK);
            self.liveness_due = now + LIVENESS_TICK;
            // Registers the timer's waker again.
            let _ = self.liveness_tick.poll_unpin(cx);
            self.start_liveness_checks();
            let expired = self
                .outbound
                .expire_waiting(Instant::now(), self.config.request_timeout);
            self.apply_all(expired);
        }
        self.poll_store(cx);
        // Sees the event about to go out, before the pop hands it over.
        #[cfg(feature = "metrics")]
        self.observe_metrics();
        match self.actions.pop_front() {
            Some(action) => {
                if let ToSwarm::GenerateEvent(event) = &action {
                    self.handle_observe(event);
                }
                Poll::Ready(action)
            }
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}
