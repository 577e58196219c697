//! [`Behaviour`]: the DHT as a libp2p [`NetworkBehaviour`]. Glue only: it routes swarm and
//! handler events into the modules and drains their actions into [`ToSwarm`].

use std::collections::VecDeque;
use std::task::{Context, Poll, Waker};

use libp2p::core::transport::PortUse;
use libp2p::core::Endpoint;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, DialError, DialFailure, FromSwarm,
    NetworkBehaviour, NotifyHandler, THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use crate::config::Config;
use crate::event::{Event, RespondError};
use crate::mode::{Mode, ModeState};
use crate::network::dispatch::{InboundRequests, OutboundAction, OutboundRequests, PendingInbound};
use crate::network::handler::{Handler, HandlerEvent, HandlerIn};
use crate::network::message::{Request, Response};
use crate::network::{InboundRequestId, OutboundRequestId};

/// The kadence DHT behaviour. Compose it into your swarm's behaviour with
/// `#[derive(NetworkBehaviour)]`.
pub struct Behaviour {
    config: Config,
    mode: ModeState,
    outbound: OutboundRequests,
    inbound: InboundRequests,
    actions: VecDeque<ToSwarm<Event, HandlerIn>>,
    /// Woken when an API call queues an action outside of `poll`.
    waker: Option<Waker>,
}

impl Behaviour {
    /// A DHT node with `config`. Use [`Config::amino`] for the public IPFS DHT.
    pub fn new(config: Config) -> Self {
        Self {
            mode: ModeState::new(config.mode),
            outbound: OutboundRequests::new(config.max_pending_requests),
            inbound: InboundRequests::new(config.max_inbound_streams),
            actions: VecDeque::new(),
            waker: None,
            config,
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The mode in force.
    pub fn mode(&self) -> Mode {
        self.mode.current()
    }

    /// Fixes the mode, or with `None` makes it automatic (server while the swarm has a confirmed
    /// external address). Takes effect on every open connection at once.
    pub fn set_mode(&mut self, mode: Option<Mode>) {
        if let Some(changed) = self.mode.set(mode) {
            self.on_mode_changed(changed);
            self.wake();
        }
    }

    fn wake(&mut self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Sends one request to `peer` and reports the outcome as
    /// [`Event::OutboundRequestFinished`]. Dials the peer if no connection is open; its
    /// addresses then come from the swarm's other behaviours or an earlier connection.
    ///
    /// This is the raw protocol; the DHT operations are built on it.
    pub fn send_request(&mut self, peer: PeerId, request: Request) -> OutboundRequestId {
        let (id, action) = self.outbound.send(peer, request);
        if let Some(action) = action {
            self.apply(action);
        }
        self.wake();
        id
    }

    /// Answers the inbound request `id` (from [`Event::InboundRequest`]).
    pub fn respond(
        &mut self,
        id: InboundRequestId,
        response: Response,
    ) -> Result<(), RespondError> {
        let pending = self.inbound.take(id).ok_or(RespondError::UnknownRequest)?;
        if pending.kind != response.message_type() {
            let error = RespondError::WrongType {
                request: pending.kind,
                response: response.message_type(),
            };
            // Still pending: the caller may answer again with the right type.
            self.inbound.insert(id, pending);
            return Err(error);
        }
        self.actions.push_back(ToSwarm::NotifyHandler {
            peer_id: pending.peer,
            handler: NotifyHandler::One(pending.connection),
            event: HandlerIn::Respond { id, response },
        });
        self.wake();
        Ok(())
    }

    /// Refuses to answer the inbound request `id`: its stream is reset.
    pub fn refuse(&mut self, id: InboundRequestId) -> Result<(), RespondError> {
        let pending = self.inbound.take(id).ok_or(RespondError::UnknownRequest)?;
        self.actions.push_back(ToSwarm::NotifyHandler {
            peer_id: pending.peer,
            handler: NotifyHandler::One(pending.connection),
            event: HandlerIn::Refuse { id },
        });
        self.wake();
        Ok(())
    }

    fn on_mode_changed(&mut self, mode: Mode) {
        tracing::info!(%mode, "DHT mode changed");
        for (peer_id, connection) in self.outbound.connections() {
            self.actions.push_back(ToSwarm::NotifyHandler {
                peer_id,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::SetMode(mode),
            });
        }
        self.actions
            .push_back(ToSwarm::GenerateEvent(Event::ModeChanged { mode }));
    }

    fn apply(&mut self, action: OutboundAction) {
        let action = match action {
            OutboundAction::Send {
                peer,
                connection,
                id,
                request,
            } => ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: HandlerIn::Request { id, request },
            },
            OutboundAction::Dial { peer } => ToSwarm::Dial {
                opts: DialOpts::peer_id(peer)
                    .condition(PeerCondition::DisconnectedAndNotDialing)
                    .build(),
            },
            OutboundAction::Fail { peer, id, error } => {
                ToSwarm::GenerateEvent(Event::OutboundRequestFinished {
                    peer,
                    id,
                    result: Err(error),
                })
            }
        };
        self.actions.push_back(action);
    }

    fn apply_all(&mut self, actions: Vec<OutboundAction>) {
        for action in actions {
            self.apply(action);
        }
    }
}

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
                let actions = self
                    .outbound
                    .on_connection_established(e.peer_id, e.connection_id);
                self.apply_all(actions);
            }
            FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                ..
            }) => {
                let actions = self.outbound.on_connection_closed(peer_id, connection_id);
                self.apply_all(actions);
                self.inbound.on_connection_closed(connection_id);
            }
            // Refused because a dial or connection already exists: that one decides.
            FromSwarm::DialFailure(DialFailure {
                error: DialError::DialPeerConditionFalse(_),
                ..
            }) => {}
            FromSwarm::DialFailure(DialFailure {
                peer_id: Some(peer),
                error,
                ..
            }) => {
                let actions = self.outbound.on_dial_failure(peer, error.to_string());
                self.apply_all(actions);
            }
            FromSwarm::ExternalAddrConfirmed(e) => {
                if let Some(mode) = self.mode.on_external_confirmed(e.addr) {
                    self.on_mode_changed(mode);
                }
            }
            FromSwarm::ExternalAddrExpired(e) => {
                if let Some(mode) = self.mode.on_external_expired(e.addr) {
                    self.on_mode_changed(mode);
                }
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
        let event = match event {
            HandlerEvent::InboundRequest { id, request } => {
                if let Some(id) = id {
                    let kind = request.message_type();
                    let entry = PendingInbound {
                        peer,
                        connection,
                        kind,
                    };
                    self.inbound.insert(id, entry);
                }
                Event::InboundRequest {
                    peer,
                    connection,
                    id,
                    request,
                }
            }
            HandlerEvent::InboundFailed(error) => Event::InboundFailed {
                peer,
                connection,
                error,
            },
            HandlerEvent::OutboundFinished { id, result } => {
                if self.outbound.on_finished(id).is_none() {
                    return; // Already failed when its connection closed.
                }
                Event::OutboundRequestFinished { peer, id, result }
            }
            HandlerEvent::RemoteSupport(supported) => Event::PeerProtocolSupport {
                peer,
                connection,
                supported,
            },
        };
        self.actions.push_back(ToSwarm::GenerateEvent(event));
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
        match self.actions.pop_front() {
            Some(action) => Poll::Ready(action),
            None => {
                self.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
#[path = "behaviour_tests.rs"]
mod tests;
