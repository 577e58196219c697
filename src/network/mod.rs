//! Network: the wire. Frames ([`codec`]), typed messages ([`message`]) and the
//! [`ConnectionHandler`](libp2p::swarm::ConnectionHandler) that carries them ([`handler`]).
//!
//! Streams are long-lived on both sides, as the deployed peers use them: an inbound stream is
//! served request after request until the remote closes it or it idles out; an outbound stream
//! is kept after its response and reused for the next request to the same peer, which saves the
//! multistream-select round trip a new stream costs.

pub mod codec;
mod deadline;
pub(crate) mod dispatch;
pub mod handler;
pub mod message;
mod protocol;
mod streams;
mod wire;

pub use wire::WireError;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use protocol::ProtocolUpgrade;

use codec::FrameError;
use message::MessageError;

/// Identifies an outbound request from [`Behaviour::send_request`](crate::Behaviour::send_request)
/// to its [`Event::OutboundRequestFinished`](crate::Event::OutboundRequestFinished).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OutboundRequestId(pub(crate) u64);

/// Identifies an inbound request awaiting its response, between a connection handler and the
/// Server module.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundRequestId(u64);

impl InboundRequestId {
    /// Unique within the process, so that the behaviour can index pending responses by id alone.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Self(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Why an outbound request failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    /// No response within the request timeout.
    #[error("request timed out")]
    Timeout,
    /// The remote does not speak the protocol (a client-mode node, or another network).
    #[error("remote does not support the protocol")]
    UnsupportedProtocol,
    /// Too many requests were already waiting for this peer.
    #[error("too many pending requests to this peer")]
    QueueFull,
    /// The connection closed before the request completed.
    #[error("connection closed")]
    ConnectionClosed,
    /// The peer could not be dialled; the text is the swarm's reason.
    #[error("dial failed: {0}")]
    DialFailed(String),
    /// The stream broke or carried a malformed frame.
    #[error("stream: {0}")]
    Frame(Arc<FrameError>),
    /// The response was not a valid answer to the request.
    #[error("invalid response: {0}")]
    InvalidResponse(Arc<MessageError>),
}

impl From<FrameError> for RequestError {
    fn from(e: FrameError) -> Self {
        RequestError::Frame(Arc::new(e))
    }
}

impl From<MessageError> for RequestError {
    fn from(e: MessageError) -> Self {
        RequestError::InvalidResponse(Arc::new(e))
    }
}

/// Why an inbound stream was reset or closed before its remote ended it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum InboundError {
    /// The connection already serves the maximum number of inbound streams.
    #[error("too many inbound streams on this connection")]
    TooManyStreams,
    /// The stream broke, or a frame was oversized or its prefix invalid.
    #[error("stream: {0}")]
    Frame(#[from] FrameError),
    /// A frame did not hold a valid request.
    #[error("invalid request: {0}")]
    InvalidRequest(#[from] MessageError),
    /// The application did not answer within the request timeout.
    #[error("no response in time")]
    ResponseTimeout,
    /// The application refused to answer.
    #[error("request refused")]
    Refused,
    /// The response could not be written within the request timeout.
    #[error("writing the response timed out")]
    WriteTimeout,
    /// The connection already holds the most bytes of answers its remote has not read
    /// ([`Config::with_max_response_bytes_in_flight`](crate::Config::with_max_response_bytes_in_flight));
    /// this answer was not sent.
    #[error("too many answers left unread on this connection")]
    UnreadResponses,
}
