//! [`Server`]: the Server module's state (stores, validators, writes awaiting the application's
//! decision) around the pure functions of the parent module.

use std::collections::VecDeque;
use std::time::SystemTime;

use fnv::FnvHashMap;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId};
use smallvec::SmallVec;

use super::Validators;
use super::{commit, prepare, InboundRejection, Prepared, Remote, ServerContext, StoreRequest};
use crate::network::message::{MessageType, Request, Response};
use crate::network::InboundRequestId;
use crate::routing_table::RoutingTable;
use crate::store::{Lifetimes, Source, Store, StoreError};

/// Identifies a write awaiting the application's decision
/// ([`Behaviour::approve_store`](crate::Behaviour::approve_store)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DecisionId(u64);

/// What became of an inbound request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboundOutcome {
    /// A read was answered.
    Answered,
    /// A write was stored.
    Stored,
    /// The request was not honoured; a request with a response had its stream reset.
    Rejected(InboundRejection),
    /// A write waits for the application's decision.
    AwaitingDecision(DecisionId),
}

/// No pending decision has this id: decided already, or dropped because too many were pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no pending store decision with this id")]
pub struct UnknownDecision;

/// Settings of the server.
#[derive(Debug, Clone)]
pub(crate) struct ServerSettings {
    pub(crate) k: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_answer_size: usize,
    pub(crate) max_provider_addrs: usize,
    pub(crate) lifetimes: Lifetimes,
    pub(crate) manual_approval: bool,
    pub(crate) max_pending_decisions: usize,
}

/// What the behaviour must do.
#[derive(Debug)]
pub(crate) enum ServerAction {
    /// Send this answer on the request's stream.
    Respond {
        peer: PeerId,
        connection: ConnectionId,
        id: InboundRequestId,
        response: Response,
    },
    /// Reset the request's stream.
    Refuse {
        peer: PeerId,
        connection: ConnectionId,
        id: InboundRequestId,
    },
    /// Report how a request went.
    Report {
        peer: PeerId,
        request: MessageType,
        outcome: InboundOutcome,
    },
    /// Ask the application about a write.
    AskApproval {
        id: DecisionId,
        peer: PeerId,
        request: StoreRequest,
    },
}

struct Pending {
    peer: PeerId,
    connection: ConnectionId,
    /// The stream awaiting the PUT_VALUE echo; `None` for ADD_PROVIDER.
    responder: Option<InboundRequestId>,
    request: StoreRequest,
    /// Who the write is charged to.
    source: Source,
}

/// The Server module: answers what the network asks of this node.
pub(crate) struct Server {
    settings: ServerSettings,
    store: Box<dyn Store>,
    validators: Validators,
    next_decision: u64,
    pending: FnvHashMap<DecisionId, Pending>,
    pending_order: VecDeque<DecisionId>,
    /// The remote end of every open connection, which a write is charged to.
    connections: FnvHashMap<ConnectionId, Remote>,
}

type Actions = SmallVec<[ServerAction; 2]>;

impl Server {
    pub(crate) fn new(
        settings: ServerSettings,
        store: Box<dyn Store>,
        validators: Validators,
    ) -> Self {
        Self {
            settings,
            store,
            validators,
            next_decision: 0,
            pending: FnvHashMap::default(),
            pending_order: VecDeque::new(),
            connections: FnvHashMap::default(),
        }
    }

    /// A connection opened; `remote_addr` is its remote address (the one dialled, or the one
    /// the remote connected from), which the peer cannot choose.
    pub(crate) fn on_connection_established(
        &mut self,
        connection: ConnectionId,
        remote_addr: &Multiaddr,
    ) {
        self.connections.insert(connection, Remote::of(remote_addr));
    }

    /// A connection closed.
    pub(crate) fn on_connection_closed(&mut self, connection: ConnectionId) {
        self.connections.remove(&connection);
    }

    pub(crate) fn store_mut(&mut self) -> &mut dyn Store {
        self.store.as_mut()
    }

    pub(crate) fn validators(&self) -> &Validators {
        &self.validators
    }

    /// Makes buffered writes durable, waiting for the disk (the behaviour's `poll` uses the
    /// store's `start_flush` instead).
    pub(crate) fn flush(&mut self) -> Result<(), StoreError> {
        self.store.flush()
    }

    /// Handles one inbound request. `id` is present when the request takes a response.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn on_request(
        &mut self,
        local: (PeerId, &[Multiaddr]),
        table: &dyn RoutingTable,
        connected_addrs: &dyn Fn(&PeerId) -> Option<Vec<Multiaddr>>,
        peer: PeerId,
        connection: ConnectionId,
        id: Option<InboundRequestId>,
        request: Request,
        now: SystemTime,
    ) -> Actions {
        let kind = request.message_type();
        // The behaviour reports every connection before its requests; one it did not (only
        // in tests) counts as the strictest.
        let remote_end = self
            .connections
            .get(&connection)
            .copied()
            .unwrap_or_else(Remote::unknown);
        let ctx = ServerContext {
            local: local.0,
            local_addrs: local.1,
            remote: peer,
            remote_end,
            k: self.settings.k,
            max_message_size: self.settings.max_message_size,
            max_answer_size: self.settings.max_answer_size,
            max_provider_addrs: self.settings.max_provider_addrs,
            lifetimes: self.settings.lifetimes,
            table,
            validators: &self.validators,
            connected_addrs,
            now,
        };
        let prepared = prepare(&ctx, self.store.as_mut(), request);
        let mut actions = Actions::new();
        let outcome = match prepared {
            Prepared::Answer(response) => {
                if let Some(id) = id {
                    actions.push(ServerAction::Respond {
                        peer,
                        connection,
                        id,
                        response,
                    });
                }
                InboundOutcome::Answered
            }
            Prepared::Reject(rejection) => {
                if let Some(id) = id {
                    actions.push(ServerAction::Refuse {
                        peer,
                        connection,
                        id,
                    });
                }
                InboundOutcome::Rejected(rejection)
            }
            Prepared::Store(request) if self.settings.manual_approval => {
                let decision = self.park(Pending {
                    peer,
                    connection,
                    responder: id,
                    request: request.clone(),
                    source: remote_end.source(peer),
                });
                actions.push(ServerAction::AskApproval {
                    id: decision,
                    peer,
                    request,
                });
                InboundOutcome::AwaitingDecision(decision)
            }
            Prepared::Store(request) => {
                let pending = Pending {
                    peer,
                    connection,
                    responder: id,
                    request,
                    source: remote_end.source(peer),
                };
                return self.store(pending, kind);
            }
        };
        actions.push(ServerAction::Report {
            peer,
            request: kind,
            outcome,
        });
        actions
    }

    /// The application's decision on a write.
    pub(crate) fn decide(
        &mut self,
        id: DecisionId,
        approve: bool,
    ) -> Result<Actions, UnknownDecision> {
        let pending = self.pending.remove(&id).ok_or(UnknownDecision)?;
        self.pending_order.retain(|d| *d != id);
        let kind = match pending.request {
            StoreRequest::PutValue(_) => MessageType::PutValue,
            StoreRequest::AddProvider(_) => MessageType::AddProvider,
        };
        if approve {
            return Ok(self.store(pending, kind));
        }
        let mut actions = Actions::new();
        if let Some(responder) = pending.responder {
            actions.push(ServerAction::Refuse {
                peer: pending.peer,
                connection: pending.connection,
                id: responder,
            });
        }
        actions.push(ServerAction::Report {
            peer: pending.peer,
            request: kind,
            outcome: InboundOutcome::Rejected(InboundRejection::RefusedByApplication),
        });
        Ok(actions)
    }

    fn park(&mut self, pending: Pending) -> DecisionId {
        let id = DecisionId(self.next_decision);
        self.next_decision += 1;
        self.pending.insert(id, pending);
        self.pending_order.push_back(id);
        // Bounded: the oldest undecided write is dropped (its stream timed out long ago).
        while self.pending_order.len() > self.settings.max_pending_decisions {
            if let Some(old) = self.pending_order.pop_front() {
                self.pending.remove(&old);
            }
        }
        id
    }

    fn store(&mut self, pending: Pending, kind: MessageType) -> Actions {
        let mut actions = Actions::new();
        let outcome = match commit(self.store.as_mut(), pending.request, pending.source) {
            Ok(response) => {
                if let (Some(id), Some(response)) = (pending.responder, response) {
                    actions.push(ServerAction::Respond {
                        peer: pending.peer,
                        connection: pending.connection,
                        id,
                        response,
                    });
                }
                InboundOutcome::Stored
            }
            Err(rejection) => {
                if let Some(id) = pending.responder {
                    actions.push(ServerAction::Refuse {
                        peer: pending.peer,
                        connection: pending.connection,
                        id,
                    });
                }
                InboundOutcome::Rejected(rejection)
            }
        };
        actions.push(ServerAction::Report {
            peer: pending.peer,
            request: kind,
            outcome,
        });
        actions
    }
}
