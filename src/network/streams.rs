//! What happens on one stream, written as futures the handler drives: serving an inbound stream
//! request after request, and one request/response exchange on an outbound stream.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::channel::{mpsc, oneshot};
use futures::future::{select, Either};
use futures::{AsyncWriteExt, SinkExt};
use futures_timer::Delay;
use libp2p::swarm::Stream;

use super::codec::{read_frame, write_frame, write_prefixed_frame};
use super::deadline::Deadline;
use super::message::{decode_request, decode_response, encode_request, Limits};
use super::message::{encode_response_frame, Request, Response};
use super::{InboundError, RequestError};

/// How long a graceful close may take before the stream is dropped (and so reset).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Runs `fut`, giving up after `timeout`. The timer is real: it fires on its own.
pub(crate) async fn with_timeout<F: Future>(timeout: Duration, fut: F) -> Option<F::Output> {
    match select(std::pin::pin!(fut), Delay::new(timeout)).await {
        Either::Left((out, _)) => Some(out),
        Either::Right(_) => None,
    }
}

/// Closes a stream gracefully (a FIN, not a reset), within a bound.
pub(crate) async fn close(mut stream: Stream) {
    let _ = with_timeout(CLOSE_TIMEOUT, stream.close()).await;
}

/// An inbound request on its way from a stream to the behaviour.
pub(crate) struct InboundMessage {
    pub(crate) request: Request,
    /// Where the answer goes; `None` for ADD_PROVIDER, which has no response.
    pub(crate) responder: Option<oneshot::Sender<Response>>,
}

/// Settings the inbound loop needs.
#[derive(Clone)]
pub(crate) struct InboundSettings {
    /// Largest request frame accepted.
    pub(crate) max_request_size: usize,
    pub(crate) limits: Limits,
    pub(crate) idle_timeout: Duration,
    pub(crate) response_timeout: Duration,
    /// The connection's budget of answer bytes not yet taken by the transport.
    pub(crate) unsent: UnsentBudget,
}

/// Bytes of answers encoded for a connection's streams and not yet taken by the transport,
/// shared by the streams of one connection. A remote that does not read its answers leaves
/// them here: past the bound, further answers are not sent and their streams are reset, so
/// memory does not grow with what the remote refuses to read.
#[derive(Debug, Clone)]
pub(crate) struct UnsentBudget {
    used: Arc<AtomicUsize>,
    max: usize,
}

impl UnsentBudget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    /// Reserves `bytes` until the reservation is dropped. One answer is always let through
    /// when nothing else is unsent, so a bound under the largest answer cannot stop a
    /// connection for good.
    fn reserve(&self, bytes: usize) -> Option<Reservation> {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                let total = used.saturating_add(bytes);
                (used == 0 || total <= self.max).then_some(total)
            })
            .ok()?;
        Some(Reservation {
            used: Arc::clone(&self.used),
            bytes,
        })
    }

    /// Bytes reserved right now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

/// Bytes of one answer counted as unsent until dropped: when it is written, when writing it
/// failed or timed out, or when its stream is dropped.
struct Reservation {
    used: Arc<AtomicUsize>,
    bytes: usize,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// How an inbound stream ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InboundEnd {
    /// The remote closed its side.
    Eof,
    /// No request within the idle timeout; we closed it.
    Idle,
    /// The handler went away (connection closing).
    HandlerGone,
}

/// Serves one inbound stream: reads a request, hands it to the handler, writes the answer, and
/// again, until EOF or the idle timeout. An error ends the loop; the caller drops the stream,
/// which resets it.
pub(crate) async fn serve_inbound(
    mut stream: Stream,
    settings: InboundSettings,
    mut to_handler: mpsc::Sender<InboundMessage>,
) -> Result<InboundEnd, InboundError> {
    let mut deadline = Deadline::new(settings.idle_timeout.min(settings.response_timeout));
    loop {
        let read = read_frame(&mut stream, settings.max_request_size);
        let frame = match deadline.within(settings.idle_timeout, read).await {
            None => {
                close(stream).await;
                return Ok(InboundEnd::Idle);
            }
            Some(Ok(None)) => {
                close(stream).await;
                return Ok(InboundEnd::Eof);
            }
            Some(Ok(Some(frame))) => frame,
            Some(Err(e)) => return Err(e.into()),
        };
        let request = decode_request(&frame, &settings.limits)?;
        drop(frame);
        if !request.expects_response() {
            let message = InboundMessage {
                request,
                responder: None,
            };
            if to_handler.send(message).await.is_err() {
                return Ok(InboundEnd::HandlerGone);
            }
            continue;
        }
        let key = request_key(&request).to_vec();
        let (responder, response) = oneshot::channel();
        let message = InboundMessage {
            request,
            responder: Some(responder),
        };
        if to_handler.send(message).await.is_err() {
            return Ok(InboundEnd::HandlerGone);
        }
        let response = match deadline.within(settings.response_timeout, response).await {
            None => return Err(InboundError::ResponseTimeout),
            Some(Err(oneshot::Canceled)) => return Err(InboundError::Refused),
            Some(Ok(response)) => response,
        };
        // Encoded straight into its frame; the typed answer goes before the write waits.
        let frame = encode_response_frame(&response, &key);
        drop(response);
        let Some(reservation) = settings.unsent.reserve(frame.len()) else {
            tracing::debug!(
                bytes = frame.len(),
                "answers unread on this connection; reset"
            );
            return Err(InboundError::UnreadResponses);
        };
        let write = write_prefixed_frame(&mut stream, &frame);
        match deadline.within(settings.response_timeout, write).await {
            None => return Err(InboundError::WriteTimeout),
            Some(result) => result?,
        }
        drop(reservation);
    }
}

fn request_key(request: &Request) -> &[u8] {
    match request {
        Request::FindNode { key }
        | Request::GetValue { key }
        | Request::GetProviders { key }
        | Request::AddProvider { key, .. } => key,
        Request::PutValue { record } => &record.key,
        Request::Ping => &[],
    }
}

/// The result of one outbound exchange, with the stream back when it can be reused.
pub(crate) struct Exchange {
    pub(crate) result: Result<Option<Response>, RequestError>,
    pub(crate) stream: Option<Stream>,
    /// Whether the request frame was written and flushed: a failure before that is safe to
    /// retry, one after it may have reached the remote (a refusal resets the stream too).
    pub(crate) written: bool,
}

/// Sends `request` on `stream` and reads its response, within `timeout`. ADD_PROVIDER is done
/// once its frame is flushed: no response is read. On any failure the stream is not returned,
/// so it is dropped, which resets it: a late response must never be read as the answer to the
/// next request.
pub(crate) async fn exchange(
    mut stream: Stream,
    request: &Request,
    timeout: Duration,
    max_message_size: usize,
    limits: Limits,
) -> Exchange {
    let mut written = false;
    let work = async {
        write_frame(&mut stream, &encode_request(request)).await?;
        written = true;
        if !request.expects_response() {
            return Ok(None);
        }
        let frame = read_frame(&mut stream, max_message_size)
            .await?
            .ok_or_else(|| {
                super::codec::FrameError::from(std::io::Error::from(
                    std::io::ErrorKind::UnexpectedEof,
                ))
            })?;
        Ok(Some(decode_response(
            &frame,
            request.message_type(),
            &limits,
        )?))
    };
    let result = with_timeout(timeout, work)
        .await
        .unwrap_or(Err(RequestError::Timeout));
    let stream = result.is_ok().then_some(stream);
    Exchange {
        result,
        stream,
        written,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unsent_budget_bounds_and_releases() {
        let budget = UnsentBudget::new(100);
        let a = budget.reserve(60).expect("room");
        let b = budget.clone().reserve(40).expect("room, shared by clones");
        assert!(budget.reserve(1).is_none(), "full");
        drop(a);
        assert_eq!(budget.used(), 40);
        let c = budget.reserve(60).expect("room again");
        drop((b, c));
        assert_eq!(budget.used(), 0);
        // One answer larger than the bound still goes when nothing else is unsent.
        let big = budget.reserve(1000).expect("alone");
        assert!(budget.reserve(1).is_none());
        drop(big);
    }
}
