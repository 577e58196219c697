//! Behaviour-level fuzzing: random sequences of swarm events, handler events and API calls are
//! fed to the behaviour, with a simulated swarm around it. Invariants: nothing panics, every
//! outbound request is reported exactly once, answers go to the connection the request came
//! on, and nothing is left pending once every connection and dial has ended.

use std::collections::{HashMap, HashSet};
use std::task::{Context, Poll};

use futures::task::noop_waker_ref;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::swarm::behaviour::{ConnectionClosed, ConnectionEstablished, DialFailure};
use libp2p::swarm::{ConnectionId, DialError, FromSwarm, NetworkBehaviour, NotifyHandler, ToSwarm};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use proptest::prelude::*;

use crate::network::handler::{HandlerEvent, HandlerIn};
use crate::{Behaviour, Event, InboundRequestId, Mode, OutboundRequestId, Request, Response};

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Connect(usize),
    Close(usize),
    DialFail(usize),
    HandlerFinishes(usize),
    InboundRequest(usize, bool),
    Respond(usize),
    SetMode(Option<bool>),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..4usize).prop_map(Op::Send),
        2 => (0..4usize).prop_map(Op::Connect),
        2 => (0..8usize).prop_map(Op::Close),
        1 => (0..4usize).prop_map(Op::DialFail),
        3 => (0..8usize).prop_map(Op::HandlerFinishes),
        2 => ((0..8usize), any::<bool>()).prop_map(|(c, r)| Op::InboundRequest(c, r)),
        2 => (0..16usize).prop_map(Op::Respond),
        1 => prop::option::of(any::<bool>()).prop_map(Op::SetMode),
    ]
}

/// The swarm around the behaviour, reduced to what the invariants need.
struct Sim {
    behaviour: Behaviour,
    peers: Vec<PeerId>,
    next_connection: usize,
    /// Open connections, with the requests their handler holds.
    open: Vec<(PeerId, ConnectionId, Vec<OutboundRequestId>)>,
    issued: HashSet<OutboundRequestId>,
    finished: HashMap<OutboundRequestId, usize>,
    inbound_ids: Vec<(InboundRequestId, ConnectionId)>,
    responses_to: Vec<(InboundRequestId, ConnectionId)>,
}

impl Sim {
    fn new() -> Self {
        let config = crate::Config::new(StreamProtocol::new("/fuzz/kad/1.0.0"))
            .with_max_pending_requests(3)
            .with_max_inbound_streams(2);
        Self {
            behaviour: Behaviour::new(config),
            peers: (0..4).map(|_| PeerId::random()).collect(),
            next_connection: 0,
            open: Vec::new(),
            issued: HashSet::new(),
            finished: HashMap::new(),
            inbound_ids: Vec::new(),
            responses_to: Vec::new(),
        }
    }

    fn endpoint() -> ConnectedPoint {
        ConnectedPoint::Dialer {
            address: "/memory/1".parse::<Multiaddr>().unwrap(),
            role_override: Endpoint::Dialer,
            port_use: libp2p::core::transport::PortUse::Reuse,
        }
    }

    fn drain(&mut self) {
        let mut cx = Context::from_waker(noop_waker_ref());
        while let Poll::Ready(action) = self.behaviour.poll(&mut cx) {
            match action {
                ToSwarm::NotifyHandler {
                    handler: NotifyHandler::One(connection),
                    event,
                    ..
                } => {
                    // The swarm drops events for connections that are gone.
                    let Some(conn) = self.open.iter_mut().find(|c| c.1 == connection) else {
                        continue;
                    };
                    match event {
                        HandlerIn::Request { id, .. } => conn.2.push(id),
                        HandlerIn::Respond { id, .. } | HandlerIn::Refuse { id } => {
                            self.responses_to.push((id, connection))
                        }
                        HandlerIn::SetMode(_) => {}
                    }
                }
                ToSwarm::GenerateEvent(Event::OutboundRequestFinished { id, .. }) => {
                    *self.finished.entry(id).or_default() += 1;
                }
                _ => {}
            }
        }
    }

    fn close(&mut self, index: usize) {
        let (peer_id, connection_id, _) = self.open.remove(index);
        let remaining = self.open.iter().filter(|c| c.0 == peer_id).count();
        let endpoint = Self::endpoint();
        self.behaviour
            .on_swarm_event(FromSwarm::ConnectionClosed(ConnectionClosed {
                peer_id,
                connection_id,
                endpoint: &endpoint,
                cause: None,
                remaining_established: remaining,
            }));
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Send(p) => {
                let id = self.behaviour.send_request(self.peers[p], Request::Ping);
                self.issued.insert(id);
            }
            Op::Connect(p) => {
                let peer_id = self.peers[p];
                let connection_id = ConnectionId::new_unchecked(self.next_connection);
                self.next_connection += 1;
                let endpoint = Self::endpoint();
                let other = self.open.iter().filter(|c| c.0 == peer_id).count();
                let _handler = self.behaviour.handle_established_outbound_connection(
                    connection_id,
                    peer_id,
                    &"/memory/1".parse().unwrap(),
                    Endpoint::Dialer,
                    libp2p::core::transport::PortUse::Reuse,
                );
                self.open.push((peer_id, connection_id, Vec::new()));
                self.behaviour
                    .on_swarm_event(FromSwarm::ConnectionEstablished(ConnectionEstablished {
                        peer_id,
                        connection_id,
                        endpoint: &endpoint,
                        failed_addresses: &[],
                        other_established: other,
                    }));
            }
            Op::Close(c) if c < self.open.len() => self.close(c),
            Op::Close(_) => {}
            Op::DialFail(p) => {
                let error = DialError::NoAddresses;
                self.behaviour
                    .on_swarm_event(FromSwarm::DialFailure(DialFailure {
                        peer_id: Some(self.peers[p]),
                        error: &error,
                        connection_id: ConnectionId::new_unchecked(usize::MAX),
                    }));
            }
            Op::HandlerFinishes(c) => {
                let Some(conn) = self.open.get_mut(c) else {
                    return;
                };
                if conn.2.is_empty() {
                    return;
                }
                let id = conn.2.remove(0);
                let (peer, connection) = (conn.0, conn.1);
                self.behaviour.on_connection_handler_event(
                    peer,
                    connection,
                    HandlerEvent::OutboundFinished {
                        id,
                        result: Ok(Some(Response::Ping)),
                    },
                );
            }
            Op::InboundRequest(c, with_response) => {
                let Some(&(peer, connection, _)) = self.open.get(c) else {
                    return;
                };
                // Ids are minted by handlers; a fresh handler-side id each time.
                let id =
                    with_response.then(|| mint_inbound_id(&mut self.behaviour, peer, connection));
                if let Some(id) = id {
                    self.inbound_ids.push((id, connection));
                }
            }
            Op::Respond(i) => {
                if let Some(&(id, _)) = self.inbound_ids.get(i) {
                    let _ = self.behaviour.respond(id, Response::Ping);
                }
            }
            Op::SetMode(m) => {
                self.behaviour
                    .set_mode(m.map(|s| if s { Mode::Server } else { Mode::Client }))
            }
        }
        self.drain();
    }
}

/// Delivers an inbound request the way a handler does, with a fresh id.
fn mint_inbound_id(
    behaviour: &mut Behaviour,
    peer: PeerId,
    connection: ConnectionId,
) -> InboundRequestId {
    let id = InboundRequestId::next();
    behaviour.on_connection_handler_event(
        peer,
        connection,
        HandlerEvent::InboundRequest {
            id: Some(id),
            request: Request::Ping,
        },
    );
    id
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_event_sequences_keep_the_invariants(ops in prop::collection::vec(op(), 1..120)) {
        let mut sim = Sim::new();
        for op in ops {
            sim.apply(op);
        }
        // Every answer went to the connection its request came on.
        for (id, connection) in &sim.responses_to {
            let origin = sim.inbound_ids.iter().find(|(i, _)| i == id).map(|(_, c)| c);
            prop_assert_eq!(origin, Some(connection));
        }
        // End everything: close every connection, fail every dial.
        while !sim.open.is_empty() {
            sim.close(0);
            sim.drain();
        }
        for p in 0..sim.peers.len() {
            sim.apply(Op::DialFail(p));
        }
        for id in &sim.issued {
            prop_assert_eq!(sim.finished.get(id).copied(), Some(1), "request {:?}", id);
        }
        prop_assert_eq!(sim.finished.len(), sim.issued.len());
        // Nothing left to answer once the connections are gone.
        for (id, _) in &sim.inbound_ids {
            prop_assert!(sim.behaviour.respond(*id, Response::Ping).is_err());
        }
    }
}
