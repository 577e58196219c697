//! Label sets of the metric families, and the label values of the crate's types.
//!
//! Every value is a `&'static str` in snake case, written here once: the families' label sets
//! stay small and cheap to hash, and the spelling a dashboard depends on cannot drift between
//! two places that record the same thing. The matches are exhaustive on purpose, so that a new
//! variant cannot be added without choosing its label.

use prometheus_client::encoding::EncodeLabelSet;

use crate::network::message::MessageType;
use crate::network::{InboundError, RequestError};
use crate::routing_table::Failure;
use crate::server::{InboundOutcome, InboundRejection};
use crate::store::StoreError;

/// A query's kind and how it ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct QueryLabels {
    pub(crate) kind: &'static str,
    pub(crate) outcome: &'static str,
}

/// A query's kind alone, for its histograms (an outcome label would multiply their buckets).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: &'static str,
}

/// A request's message type and what became of it.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RequestLabels {
    pub(crate) r#type: &'static str,
    pub(crate) outcome: &'static str,
}

/// A request's message type alone, for the round-trip histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TypeLabels {
    pub(crate) r#type: &'static str,
}

/// Why an inbound request was not honoured.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RejectionLabels {
    pub(crate) r#type: &'static str,
    pub(crate) reason: &'static str,
}

/// Why an inbound stream was reset.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ErrorLabels {
    pub(crate) error: &'static str,
}

/// A k-bucket, by its common-prefix length with the local key.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BucketLabels {
    pub(crate) bucket: u16,
}

/// Why something happened, for the families with one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) reason: &'static str,
}

/// How something ended, for the families with one label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) outcome: &'static str,
}

/// The wire name of a message type, in snake case (`FIND_NODE` is `find_node`).
pub(crate) fn message_type(t: MessageType) -> &'static str {
    match t {
        MessageType::PutValue => "put_value",
        MessageType::GetValue => "get_value",
        MessageType::AddProvider => "add_provider",
        MessageType::GetProviders => "get_providers",
        MessageType::FindNode => "find_node",
        MessageType::Ping => "ping",
    }
}

/// The outcome of an outbound request: `ok` when answered (for ADD_PROVIDER, which has no
/// answer, when its frame was written), else one value per [`RequestError`] variant.
pub(crate) fn request_outcome<T>(result: &Result<T, RequestError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(RequestError::Timeout) => "timeout",
        Err(RequestError::UnsupportedProtocol) => "unsupported_protocol",
        Err(RequestError::QueueFull) => "queue_full",
        Err(RequestError::ConnectionClosed) => "connection_closed",
        Err(RequestError::DialFailed(_)) => "dial_failed",
        Err(RequestError::Frame(_)) => "stream_error",
        Err(RequestError::InvalidResponse(_)) => "invalid_response",
    }
}

/// The outcome of an inbound request handled by the Server module. A rejection's reason goes
/// to its own family ([`rejection_reason`]), so that this one keeps four values.
pub(crate) fn inbound_outcome(outcome: &InboundOutcome) -> &'static str {
    match outcome {
        InboundOutcome::Answered => "answered",
        InboundOutcome::Stored => "stored",
        InboundOutcome::Rejected(_) => "rejected",
        InboundOutcome::AwaitingDecision(_) => "awaiting_decision",
    }
}

/// Why the Server module refused a request. A store's refusal is split by its cause: a full
/// store and a store behind on its disk call for different remedies.
pub(crate) fn rejection_reason(rejection: &InboundRejection) -> &'static str {
    match rejection {
        InboundRejection::InvalidRecord(_) => "invalid_record",
        InboundRejection::OutdatedRecord => "outdated_record",
        InboundRejection::ForeignProvider => "foreign_provider",
        InboundRejection::NoProviderAddress => "no_provider_address",
        InboundRejection::RefusedByApplication => "refused_by_application",
        InboundRejection::Store(e) => match e {
            StoreError::ValueTooLarge { .. } => "value_too_large",
            StoreError::Full => "store_full",
            StoreError::TooManyProviders => "too_many_providers",
            StoreError::Busy => "store_busy",
            StoreError::SchemaVersion { .. } | StoreError::Corrupt(_) | StoreError::Database(_) => {
                "store_failed"
            }
        },
    }
}

/// Why an inbound stream was reset or closed early.
pub(crate) fn inbound_error(error: &InboundError) -> &'static str {
    match error {
        InboundError::TooManyStreams => "too_many_streams",
        InboundError::Frame(_) => "stream_error",
        InboundError::InvalidRequest(_) => "invalid_request",
        InboundError::ResponseTimeout => "response_timeout",
        InboundError::Refused => "refused",
        InboundError::WriteTimeout => "write_timeout",
        InboundError::UnreadResponses => "unread_responses",
    }
}

/// The outcome of a dial the DHT made: `ok`, what its failure proves about the peer, or
/// `not_dialled` when it failed before reaching out (no address this node can dial, or denied
/// or aborted on this side).
pub(crate) fn dial_outcome(result: Result<(), Option<Failure>>) -> &'static str {
    match result {
        Ok(()) => "ok",
        Err(Some(Failure::Unreachable)) => "unreachable",
        Err(Some(Failure::NoAnswer)) => "no_answer",
        Err(None) => "not_dialled",
    }
}
