//! What the [`Behaviour`](crate::Behaviour) reports to the application, and its API errors.

use libp2p::swarm::ConnectionId;
use libp2p::PeerId;

use crate::mode::Mode;
use crate::network::message::{MessageType, Request, Response};
use crate::network::{InboundError, InboundRequestId, OutboundRequestId, RequestError};

/// An event of the DHT behaviour, as seen by the swarm.
#[derive(Debug)]
pub enum Event {
    /// A remote peer sent a request. Answer it with
    /// [`Behaviour::respond`](crate::Behaviour::respond) (or refuse it with
    /// [`Behaviour::refuse`](crate::Behaviour::refuse)) within the request timeout; `id` is
    /// `None` for ADD_PROVIDER, which takes no response.
    InboundRequest {
        /// The sender.
        peer: PeerId,
        /// The connection it came on.
        connection: ConnectionId,
        /// Present when a response is expected.
        id: Option<InboundRequestId>,
        /// The request, validated.
        request: Request,
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
}

/// Why [`Behaviour::respond`](crate::Behaviour::respond) could not deliver an answer.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum RespondError {
    /// No request with this id awaits an answer: it was answered already, its stream or
    /// connection ended, or it takes no response.
    #[error("no pending inbound request with this id")]
    UnknownRequest,
    /// The response's type does not answer the request's.
    #[error("a {response:?} response cannot answer a {request:?} request")]
    WrongType {
        /// The request's type.
        request: MessageType,
        /// The response's type.
        response: MessageType,
    },
}
