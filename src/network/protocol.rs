//! The stream upgrade: negotiates one of the configured protocol names and hands over the raw
//! stream. Framing happens afterwards, in the handler, so one stream can carry many messages.

use std::convert::Infallible;

use futures::future::{ready, Ready};
use libp2p::core::upgrade::{InboundUpgrade, OutboundUpgrade, UpgradeInfo};
use libp2p::{swarm::Stream, StreamProtocol};
use smallvec::SmallVec;

/// The protocol names offered on a stream. Empty in client mode, so that nothing is advertised
/// and every inbound stream fails negotiation.
#[derive(Debug, Clone)]
pub struct ProtocolUpgrade {
    protocols: SmallVec<[StreamProtocol; 2]>,
}

impl ProtocolUpgrade {
    pub(crate) fn new(protocols: SmallVec<[StreamProtocol; 2]>) -> Self {
        Self { protocols }
    }
}

impl UpgradeInfo for ProtocolUpgrade {
    type Info = StreamProtocol;
    type InfoIter = smallvec::IntoIter<[StreamProtocol; 2]>;

    fn protocol_info(&self) -> Self::InfoIter {
        self.protocols.clone().into_iter()
    }
}

impl InboundUpgrade<Stream> for ProtocolUpgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_inbound(self, stream: Stream, _: StreamProtocol) -> Self::Future {
        ready(Ok(stream))
    }
}

impl OutboundUpgrade<Stream> for ProtocolUpgrade {
    type Output = Stream;
    type Error = Infallible;
    type Future = Ready<Result<Stream, Infallible>>;

    fn upgrade_outbound(self, stream: Stream, _: StreamProtocol) -> Self::Future {
        ready(Ok(stream))
    }
}
