//! What a failed dial says about the peer: a [`Failure`] for the routing table, or nothing when
//! the fault may be ours.
//!
//! Outright ([`Failure::Unreachable`]): every address we dialled was refused (nothing listens
//! there; the memory transport's "no listener"), had no route to its host, or answered as
//! another peer, or as us. The remote side (or the route to it) said no.
//!
//! No answer ([`Failure::NoAnswer`]): a timeout, a handshake that broke, a reset, a network our
//! host has no route into (an IPv6 address seen from an IPv4-only host), anything not known to
//! be the remote's refusal. A slow or overloaded peer, or our own overload, looks like this.
//!
//! Nothing: no address we could dial, a dial another one made redundant, one aborted, or
//! refused by a local policy (connection limits). These say nothing of the peer.

use std::error::Error;
use std::io;
use std::time::{Duration, Instant};

use libp2p::core::transport::memory::MemoryTransportError;
use libp2p::core::transport::TransportError;
use libp2p::swarm::DialError;

use super::Failure;

/// Levels of nested errors looked through; transports wrap a few times at most.
const MAX_DEPTH: usize = 16;

/// A peer's run of failed requests with no answer between them: the eviction rule both
/// routing tables share. A run proves the peer gone once it holds `max` failures spanning at
/// least `span` (a burst of timeouts from an overload lasts seconds, a silent peer stays
/// silent); an answer ends it.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FailureRun {
    count: u8,
    /// The first failure of the run.
    since: Option<Instant>,
}

impl FailureRun {
    /// One more failure at `now`; whether the run now proves the peer gone.
    pub(crate) fn record(&mut self, now: Instant, max: u8, span: Duration) -> bool {
        self.count = self.count.saturating_add(1);
        let since = *self.since.get_or_insert(now);
        self.count >= max && now.saturating_duration_since(since) >= span
    }

    /// The peer answered: the run is over.
    pub(crate) fn reset(&mut self) {
        *self = Self::default();
    }

    /// Failures in the current run.
    pub(crate) fn count(&self) -> u8 {
        self.count
    }
}

/// What a failed dial proves about the peer.
pub(crate) fn dial_failure(error: &DialError) -> Option<Failure> {
    match error {
        DialError::WrongPeerId { .. } | DialError::LocalPeerId { .. } => Some(Failure::Unreachable),
        DialError::Transport(attempts) => {
            let mut tried = 0;
            let mut refused = 0;
            for (_, error) in attempts {
                match error {
                    // An address our transports cannot dial: says nothing of the peer.
                    TransportError::MultiaddrNotSupported(_) => {}
                    TransportError::Other(error) => {
                        tried += 1;
                        refused += usize::from(is_refusal(error));
                    }
                }
            }
            match tried {
                0 => None,
                _ if refused == tried => Some(Failure::Unreachable),
                _ => Some(Failure::NoAnswer),
            }
        }
        DialError::NoAddresses
        | DialError::DialPeerConditionFalse(_)
        | DialError::Aborted
        | DialError::Denied { .. } => None,
    }
}

/// Whether an error (or one it wraps) is the remote's refusal, or no route to its host.
fn is_refusal(error: &io::Error) -> bool {
    match refusal_in_chain(error) {
        Some(refused) => refused,
        None => refusal_in_text(error),
    }
}

/// Walks the chain of sources: `Some` once an error in it tells.
fn refusal_in_chain(error: &io::Error) -> Option<bool> {
    let mut current: Option<&(dyn Error + 'static)> = Some(error);
    for _ in 0..MAX_DEPTH {
        let error = current?;
        if let Some(io) = error.downcast_ref::<io::Error>() {
            match io.kind() {
                io::ErrorKind::ConnectionRefused | io::ErrorKind::HostUnreachable => {
                    return Some(true)
                }
                io::ErrorKind::TimedOut => return Some(false),
                _ => {}
            }
            // `io::Error::source` skips the error it wraps: look at that one first.
            if let Some(inner) = io.get_ref() {
                current = Some(inner);
                continue;
            }
        }
        if let Some(memory) = error.downcast_ref::<MemoryTransportError>() {
            return Some(matches!(memory, MemoryTransportError::Unreachable));
        }
        current = error.source();
    }
    None
}

/// The fallback: rust-libp2p's transport stacks wrap errors in `Either` layers (one per
/// `or_transport`, as `SwarmBuilder::with_tcp` builds) whose `source` skips the error they
/// hold, so a refused TCP dial's `io::Error` cannot be reached by walking the chain, nor its
/// `Either` type named to downcast. Its debug text still shows the error's kind.
fn refusal_in_text(error: &io::Error) -> bool {
    let text = format!("{error:?}");
    if text.contains("TimedOut") || text.contains("Timeout") {
        return false;
    }
    text.contains("ConnectionRefused")
        || text.contains("HostUnreachable")
        // The memory transport's `MemoryTransportError::Unreachable`: no listener on the port.
        || text.contains("(Unreachable)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::{Multiaddr, PeerId};

    fn addr() -> Multiaddr {
        "/ip4/192.0.2.1/tcp/4001".parse().unwrap()
    }

    fn transport(errors: Vec<io::Error>) -> DialError {
        DialError::Transport(
            errors
                .into_iter()
                .map(|e| (addr(), TransportError::Other(e)))
                .collect(),
        )
    }

    /// An error wrapped the way `Either` wraps it in a transport stack: its `source` skips it.
    fn hidden(inner: io::Error) -> io::Error {
        #[derive(Debug)]
        enum Either {
            Left(io::Error),
        }
        impl std::fmt::Display for Either {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let Either::Left(e) = self;
                write!(f, "{e}")
            }
        }
        impl Error for Either {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                let Either::Left(e) = self;
                e.source()
            }
        }
        io::Error::other(Either::Left(inner))
    }

    /// An error wrapped the way a boxed transport stack wraps it.
    fn wrapped(inner: impl Error + Send + Sync + 'static) -> io::Error {
        #[derive(Debug)]
        struct Layer(Box<dyn Error + Send + Sync>);
        impl std::fmt::Display for Layer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "layer")
            }
        }
        impl Error for Layer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(self.0.as_ref())
            }
        }
        io::Error::other(Layer(Box::new(inner)))
    }

    #[test]
    fn refusals_are_outright() {
        let refused = || io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(
            dial_failure(&transport(vec![refused(), refused()])),
            Some(Failure::Unreachable)
        );
        assert_eq!(
            dial_failure(&transport(vec![io::Error::from(
                io::ErrorKind::HostUnreachable
            )])),
            Some(Failure::Unreachable)
        );
        // Deep in a transport stack, as the memory transport reports a port nobody listens on.
        assert_eq!(
            dial_failure(&transport(vec![wrapped(MemoryTransportError::Unreachable)])),
            Some(Failure::Unreachable)
        );
        assert_eq!(
            dial_failure(&transport(vec![wrapped(refused())])),
            Some(Failure::Unreachable)
        );
        // Behind a layer that hides it from the chain of sources, as TCP's refusal is.
        assert_eq!(
            dial_failure(&transport(vec![hidden(refused())])),
            Some(Failure::Unreachable)
        );
        assert_eq!(
            dial_failure(&transport(vec![hidden(io::Error::from(
                io::ErrorKind::TimedOut
            ))])),
            Some(Failure::NoAnswer)
        );
        let wrong = DialError::WrongPeerId {
            obtained: PeerId::random(),
            address: addr(),
        };
        assert_eq!(dial_failure(&wrong), Some(Failure::Unreachable));
    }

    #[test]
    fn timeouts_and_partial_refusals_are_no_answer() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let timed_out = io::Error::from(io::ErrorKind::TimedOut);
        assert_eq!(
            dial_failure(&transport(vec![refused, timed_out])),
            Some(Failure::NoAnswer),
            "one address might have answered"
        );
        assert_eq!(
            dial_failure(&transport(vec![io::Error::other("handshake failed")])),
            Some(Failure::NoAnswer)
        );
        // Our host has no route into that network: not the peer's answer.
        assert_eq!(
            dial_failure(&transport(vec![io::Error::from(
                io::ErrorKind::NetworkUnreachable
            )])),
            Some(Failure::NoAnswer)
        );
    }

    #[test]
    fn our_own_limits_say_nothing() {
        assert_eq!(dial_failure(&DialError::NoAddresses), None);
        assert_eq!(dial_failure(&DialError::Aborted), None);
        let unsupported = DialError::Transport(vec![(
            addr(),
            TransportError::MultiaddrNotSupported(addr()),
        )]);
        assert_eq!(dial_failure(&unsupported), None);
    }
}
