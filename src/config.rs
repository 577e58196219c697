//! [`Config`]: every knob of the DHT, with the Amino defaults.

use std::time::Duration;

use libp2p::StreamProtocol;
use smallvec::SmallVec;

use crate::mode::Mode;
use crate::network::message::Limits;

/// The protocol of the public IPFS DHT ("Amino").
pub const AMINO_PROTOCOL: StreamProtocol = StreamProtocol::new("/ipfs/kad/1.0.0");

/// The configuration of a [`Behaviour`](crate::Behaviour).
///
/// There is no `Default`: the protocol decides which network a node joins, and a silent
/// default would merge a private network into the public DHT. Use [`Config::amino`] for the
/// public IPFS DHT, or [`Config::new`] with your own protocol name.
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) protocols: SmallVec<[StreamProtocol; 2]>,
    pub(crate) mode: Option<Mode>,
    pub(crate) max_message_size: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) inbound_idle_timeout: Duration,
    pub(crate) outbound_idle_timeout: Duration,
    pub(crate) max_inbound_streams: usize,
    pub(crate) max_outbound_streams: usize,
    pub(crate) max_pending_requests: usize,
    pub(crate) limits: Limits,
}

impl Config {
    /// A configuration for the network that speaks `protocol`, with the Amino defaults for
    /// everything else. Use a name of your own (`/myapp/kad/1.0.0`) for a private network.
    pub fn new(protocol: StreamProtocol) -> Self {
        Self {
            protocols: smallvec::smallvec![protocol],
            mode: None,
            max_message_size: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            inbound_idle_timeout: Duration::from_secs(60),
            outbound_idle_timeout: Duration::from_secs(30),
            max_inbound_streams: 32,
            max_outbound_streams: 8,
            max_pending_requests: 64,
            limits: Limits::default(),
        }
    }

    /// The settings of the public IPFS DHT: protocol `/ipfs/kad/1.0.0` and its defaults.
    pub fn amino() -> Self {
        Self::new(AMINO_PROTOCOL)
    }

    /// Also accepts `protocol` inbound. The first protocol (the one given to [`Config::new`])
    /// stays the one used outbound. Useful while migrating a network to a new protocol name.
    pub fn with_additional_protocol(mut self, protocol: StreamProtocol) -> Self {
        if !self.protocols.contains(&protocol) {
            self.protocols.push(protocol);
        }
        self
    }

    /// Fixes the mode. `None` (the default) is automatic: server once the swarm has a confirmed
    /// external address, client when it has none left.
    pub fn with_mode(mut self, mode: Option<Mode>) -> Self {
        self.mode = mode;
        self
    }

    /// Largest frame accepted, from the length prefix, before the body is read.
    /// Default 4 MiB, as go and js (libp2p-kad's 16 KiB is exceeded by real responses).
    pub fn with_max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = bytes;
        self
    }

    /// How long an outbound request may take, from being handed to the connection to its
    /// response (or, for ADD_PROVIDER, to its frame being flushed). Default 10 s, as go.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// An inbound stream with no request for this long is closed. Default 60 s, as go.
    pub fn with_inbound_idle_timeout(mut self, timeout: Duration) -> Self {
        self.inbound_idle_timeout = timeout;
        self
    }

    /// An outbound stream kept for reuse is closed after this long without a request.
    /// Default 30 s: under go's 60 s server-side idle timeout, so that we usually close a
    /// reused stream before the remote does.
    pub fn with_outbound_idle_timeout(mut self, timeout: Duration) -> Self {
        self.outbound_idle_timeout = timeout;
        self
    }

    /// Most inbound streams served at once on one connection; a stream beyond it is reset at
    /// once. Default 32.
    pub fn with_max_inbound_streams(mut self, streams: usize) -> Self {
        self.max_inbound_streams = streams.max(1);
        self
    }

    /// Most outbound streams (so requests in flight) at once on one connection. Default 8;
    /// go keeps one per peer, a lookup never has more than one request in flight per peer.
    pub fn with_max_outbound_streams(mut self, streams: usize) -> Self {
        self.max_outbound_streams = streams.max(1);
        self
    }

    /// Most requests waiting for a stream on one connection (or for the connection to a peer
    /// being dialled); one beyond fails at once with
    /// [`RequestError::QueueFull`](crate::RequestError::QueueFull). Default 64.
    pub fn with_max_pending_requests(mut self, requests: usize) -> Self {
        self.max_pending_requests = requests;
        self
    }

    /// Longest provider key accepted in ADD_PROVIDER and GET_PROVIDERS. Default 80 bytes, as go.
    pub fn with_max_provider_key_len(mut self, bytes: usize) -> Self {
        self.limits.max_provider_key_len = bytes;
        self
    }

    /// Largest `Peer` entry kept from a message; addresses past it are dropped.
    /// Default 8 KiB, as go.
    pub fn with_max_peer_entry_size(mut self, bytes: usize) -> Self {
        self.limits.max_peer_entry_size = bytes;
        self
    }

    /// The protocols accepted inbound; the first is used outbound.
    pub fn protocols(&self) -> &[StreamProtocol] {
        &self.protocols
    }

    /// The configured mode; `None` is automatic.
    pub fn mode(&self) -> Option<Mode> {
        self.mode
    }

    /// See [`Config::with_max_message_size`].
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// See [`Config::with_request_timeout`].
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// See [`Config::with_inbound_idle_timeout`].
    pub fn inbound_idle_timeout(&self) -> Duration {
        self.inbound_idle_timeout
    }

    /// See [`Config::with_outbound_idle_timeout`].
    pub fn outbound_idle_timeout(&self) -> Duration {
        self.outbound_idle_timeout
    }

    /// See [`Config::with_max_inbound_streams`].
    pub fn max_inbound_streams(&self) -> usize {
        self.max_inbound_streams
    }

    /// See [`Config::with_max_outbound_streams`].
    pub fn max_outbound_streams(&self) -> usize {
        self.max_outbound_streams
    }

    /// See [`Config::with_max_pending_requests`].
    pub fn max_pending_requests(&self) -> usize {
        self.max_pending_requests
    }

    /// See [`Config::with_max_provider_key_len`].
    pub fn max_provider_key_len(&self) -> usize {
        self.limits.max_provider_key_len
    }

    /// See [`Config::with_max_peer_entry_size`].
    pub fn max_peer_entry_size(&self) -> usize {
        self.limits.max_peer_entry_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amino_defaults() {
        let c = Config::amino();
        assert_eq!(c.protocols(), &[AMINO_PROTOCOL]);
        assert_eq!(c.mode(), None);
        assert_eq!(c.max_message_size(), 4 << 20);
        assert_eq!(c.request_timeout(), Duration::from_secs(10));
        assert_eq!(c.inbound_idle_timeout(), Duration::from_secs(60));
        assert_eq!(c.max_inbound_streams(), 32);
        assert_eq!(c.max_provider_key_len(), 80);
        assert_eq!(c.max_peer_entry_size(), 8192);
    }

    #[test]
    fn first_protocol_stays_first() {
        let private = StreamProtocol::new("/myapp/kad/1.0.0");
        let c = Config::new(private.clone())
            .with_additional_protocol(AMINO_PROTOCOL)
            .with_additional_protocol(AMINO_PROTOCOL);
        assert_eq!(c.protocols(), &[private, AMINO_PROTOCOL]);
    }
}
