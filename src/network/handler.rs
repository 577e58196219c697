//! The [`ConnectionHandler`]: the DHT protocol on one connection.
//!
//! Inbound, every stream is served by its own future (`streams::serve_inbound`), at most
//! `max_inbound_streams` at once; a stream beyond that is reset at once. Requests travel to the
//! behaviour as [`HandlerEvent::InboundRequest`] and the answer comes back as
//! [`HandlerIn::Respond`].
//!
//! Outbound, requests queue (bounded) until a stream is free: an idle stream kept from an
//! earlier request, or a new one while fewer than `max_outbound_streams` are busy. One request
//! is in flight per stream. A kept stream the remote closed is dropped as soon as that shows;
//! one found broken when the request is written costs a retry on a fresh stream, not a failed
//! request.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use fnv::{FnvHashMap, FnvHashSet};
use futures::channel::{mpsc, oneshot};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncRead, FutureExt, StreamExt};
use futures_timer::Delay;
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
    ProtocolsChange,
};
use libp2p::swarm::{
    ConnectionHandler, ConnectionHandlerEvent, Stream, StreamUpgradeError, SubstreamProtocol,
};
use libp2p::{PeerId, StreamProtocol};
use smallvec::SmallVec;

use super::message::{Limits, Request, Response};
use super::protocol::ProtocolUpgrade;
use super::streams::{self, Exchange, InboundEnd, InboundMessage, InboundSettings, UnsentBudget};
use super::{InboundError, InboundRequestId, OutboundRequestId, RequestError};
use crate::config::Config;
use crate::mode::Mode;

/// A command from the behaviour to the handler of one connection.
#[derive(Debug)]
pub enum HandlerIn {
    /// Send a request to the remote.
    Request {
        /// Reported back with the outcome.
        id: OutboundRequestId,
        /// What to send.
        request: Request,
    },
    /// Answer an inbound request.
    Respond {
        /// The request being answered.
        id: InboundRequestId,
        /// The answer.
        response: Response,
    },
    /// Refuse to answer an inbound request: its stream is reset.
    Refuse {
        /// The request being refused.
        id: InboundRequestId,
    },
    /// The node's mode changed: advertise and accept the protocol only in server mode.
    SetMode(Mode),
    /// Keep the connection open while idle (`true`: the remote is a routing-table peer that
    /// lookups need), or let it close after the swarm's idle timeout again (`false`).
    KeepAlive(bool),
}

/// An event from the handler of one connection to the behaviour.
#[derive(Debug)]
pub enum HandlerEvent {
    /// The remote sent a request. `id` is `None` when the request takes no response.
    InboundRequest {
        /// Present when a response is expected.
        id: Option<InboundRequestId>,
        /// The request.
        request: Request,
    },
    /// An inbound stream was reset or closed because of an error.
    InboundFailed(InboundError),
    /// An outbound request completed. `Ok(None)` is an ADD_PROVIDER whose frame was flushed.
    OutboundFinished {
        /// The request's id.
        id: OutboundRequestId,
        /// Its outcome.
        result: Result<Option<Response>, RequestError>,
    },
    /// What the remote now says about the protocol: `true` when it supports it (it is a DHT
    /// server), from identify's protocol list or from a negotiation.
    RemoteSupport(bool),
}

struct PendingRequest {
    id: OutboundRequestId,
    request: Request,
    deadline: Instant,
    /// Already failed once on a reused stream; a second failure is final.
    retried: bool,
}

struct IdleStream {
    stream: Stream,
    expires: Delay,
}

type OutboundFuture = BoxFuture<'static, (PendingRequest, bool, Exchange)>;
type InboundFuture = BoxFuture<'static, Result<InboundEnd, InboundError>>;

/// The DHT protocol on one connection. Created by the [`Behaviour`](crate::Behaviour).
pub struct Handler {
    remote: PeerId,
    protocols: SmallVec<[StreamProtocol; 2]>,
    mode: Mode,
    request_timeout: Duration,
    outbound_idle_timeout: Duration,
    max_message_size: usize,
    limits: Limits,
    max_inbound_streams: usize,
    max_outbound_streams: usize,
    max_pending_requests: usize,

    /// Which of our protocols the remote advertises (from identify).
    remote_protocols: FnvHashSet<StreamProtocol>,
    /// The support last reported to the behaviour.
    reported_support: Option<bool>,
    /// The behaviour keeps this connection open while idle.
    keep_alive: bool,

    inbound_settings: InboundSettings,
    inbound: FuturesUnordered<InboundFuture>,
    inbound_tx: mpsc::Sender<InboundMessage>,
    inbound_rx: mpsc::Receiver<InboundMessage>,
    responders: FnvHashMap<InboundRequestId, oneshot::Sender<Response>>,

    pending: VecDeque<PendingRequest>,
    /// Fires at the deadline of the oldest pending request.
    pending_timer: Option<Delay>,
    streams_requested: usize,
    outbound: FuturesUnordered<OutboundFuture>,
    idle: Vec<IdleStream>,
    closing: FuturesUnordered<BoxFuture<'static, ()>>,

    events: VecDeque<HandlerEvent>,
}

impl Handler {
    pub(crate) fn new(remote: PeerId, config: &Config, mode: Mode) -> Self {
        let (inbound_tx, inbound_rx) = mpsc::channel(config.max_inbound_streams);
        Self {
            remote,
            protocols: config.protocols.clone(),
            mode,
            request_timeout: config.request_timeout,
            outbound_idle_timeout: config.outbound_idle_timeout,
            max_message_size: config.max_message_size,
            limits: config.limits,
            max_inbound_streams: config.max_inbound_streams,
            max_outbound_streams: config.max_outbound_streams,
            max_pending_requests: config.max_pending_requests,
            remote_protocols: FnvHashSet::default(),
            reported_support: None,
            keep_alive: false,
            inbound_settings: InboundSettings {
                max_request_size: config.max_request_size,
                limits: config.limits,
                idle_timeout: config.inbound_idle_timeout,
                response_timeout: config.request_timeout,
                unsent: UnsentBudget::new(config.max_response_bytes_in_flight),
            },
            inbound: FuturesUnordered::new(),
            inbound_tx,
            inbound_rx,
            responders: FnvHashMap::default(),
            pending: VecDeque::new(),
            pending_timer: None,
            streams_requested: 0,
            outbound: FuturesUnordered::new(),
            idle: Vec::new(),
            closing: FuturesUnordered::new(),
            events: VecDeque::new(),
        }
    }

    fn report_support(&mut self, supported: bool) {
        if self.reported_support != Some(supported) {
            self.reported_support = Some(supported);
            self.events
                .push_back(HandlerEvent::RemoteSupport(supported));
        }
    }

    fn fail(&mut self, request: PendingRequest, error: RequestError) {
        self.events.push_back(HandlerEvent::OutboundFinished {
            id: request.id,
            result: Err(error),
        });
    }

    fn enqueue(&mut self, id: OutboundRequestId, request: Request) {
        if self.pending.len() >= self.max_pending_requests {
            self.events.push_back(HandlerEvent::OutboundFinished {
                id,
                result: Err(RequestError::QueueFull),
            });
            return;
        }
        self.pending.push_back(PendingRequest {
            id,
            request,
            deadline: deadline_after(self.request_timeout),
            retried: false,
        });
    }

    fn start_exchange(&mut self, request: PendingRequest, stream: Stream, reused: bool) {
        let timeout = request.deadline.saturating_duration_since(Instant::now());
        let max = self.max_message_size;
        let limits = self.limits;
        self.outbound.push(
            async move {
                let exchange =
                    streams::exchange(stream, &request.request, timeout, max, limits).await;
                (request, reused, exchange)
            }
            .boxed(),
        );
    }

    fn on_inbound_stream(&mut self, stream: Stream) {
        if self.mode == Mode::Client {
            // Negotiated just before the switch to client mode: we no longer answer.
            drop(stream);
            return;
        }
        if self.inbound.len() >= self.max_inbound_streams {
            tracing::debug!(peer = %self.remote, "inbound stream over the limit; reset");
            drop(stream);
            self.events
                .push_back(HandlerEvent::InboundFailed(InboundError::TooManyStreams));
            return;
        }
        let settings = self.inbound_settings.clone();
        let to_handler = self.inbound_tx.clone();
        self.inbound
            .push(streams::serve_inbound(stream, settings, to_handler).boxed());
    }

    fn on_outbound_stream(&mut self, stream: Stream) {
        self.streams_requested = self.streams_requested.saturating_sub(1);
        self.report_support(true);
        match self.pending.pop_front() {
            Some(request) => self.start_exchange(request, stream, false),
            None => self.keep_idle(stream),
        }
    }

    fn keep_idle(&mut self, stream: Stream) {
        self.idle.push(IdleStream {
            stream,
            expires: Delay::new(self.outbound_idle_timeout),
        });
    }

    fn on_dial_upgrade_error(&mut self, error: StreamUpgradeError<std::convert::Infallible>) {
        self.streams_requested = self.streams_requested.saturating_sub(1);
        match error {
            StreamUpgradeError::NegotiationFailed => {
                // Every queued request would fail the same way.
                self.report_support(false);
                while let Some(request) = self.pending.pop_front() {
                    self.fail(request, RequestError::UnsupportedProtocol);
                }
            }
            // Stream requests are not tied to requests: every pending request keeps its own
            // deadline (`expire_pending`), so a slow negotiation fails nobody by itself.
            StreamUpgradeError::Timeout => {}
            StreamUpgradeError::Io(e) => {
                if let Some(request) = self.pending.pop_front() {
                    self.fail(
                        request,
                        RequestError::from(super::codec::FrameError::from(e)),
                    );
                }
            }
            StreamUpgradeError::Apply(never) => match never {},
        }
    }

    fn on_remote_protocols(&mut self, change: ProtocolsChange<'_>) {
        match change {
            ProtocolsChange::Added(added) => {
                for p in added {
                    if self.protocols.contains(p) {
                        self.remote_protocols.insert(p.clone());
                    }
                }
            }
            ProtocolsChange::Removed(removed) => {
                for p in removed {
                    self.remote_protocols.remove(p);
                }
            }
        }
        let supported = !self.remote_protocols.is_empty();
        self.report_support(supported);
    }

    /// Fails pending requests whose deadline passed while they waited for a stream.
    fn expire_pending(&mut self, cx: &mut Context<'_>) {
        loop {
            let Some(front) = self.pending.front() else {
                self.pending_timer = None;
                return;
            };
            let now = Instant::now();
            if front.deadline <= now {
                let request = self.pending.pop_front().expect("front exists");
                self.fail(request, RequestError::Timeout);
                continue;
            }
            let timer = self
                .pending_timer
                .get_or_insert_with(|| Delay::new(front.deadline - now));
            timer.reset(front.deadline - now);
            match timer.poll_unpin(cx) {
                Poll::Ready(()) => continue,
                Poll::Pending => return,
            }
        }
    }

    /// Hands pending requests to streams kept from earlier requests.
    fn assign_idle_streams(&mut self) {
        while !self.pending.is_empty() {
            let Some(idle) = self.idle.pop() else { break };
            let request = self.pending.pop_front().expect("not empty");
            self.start_exchange(request, idle.stream, true);
        }
    }

    /// Asks for a new stream while requests wait and fewer than the maximum are busy.
    fn request_stream(&mut self) -> Option<SubstreamProtocol<ProtocolUpgrade, ()>> {
        let busy = self.outbound.len() + self.streams_requested;
        if self.pending.len() > self.streams_requested && busy < self.max_outbound_streams {
            self.streams_requested += 1;
            let upgrade = ProtocolUpgrade::new(smallvec::smallvec![self.protocols[0].clone()]);
            return Some(SubstreamProtocol::new(upgrade, ()).with_timeout(self.request_timeout));
        }
        None
    }

    /// Drops idle streams that expired or that the remote closed or broke.
    fn poll_idle(&mut self, cx: &mut Context<'_>) {
        let mut i = 0;
        while i < self.idle.len() {
            let idle = &mut self.idle[i];
            if idle.expires.poll_unpin(cx).is_ready() {
                let idle = self.idle.swap_remove(i);
                self.closing.push(streams::close(idle.stream).boxed());
                continue;
            }
            // Nothing may arrive on an idle stream: EOF, an error or stray bytes end it.
            let mut byte = [0u8; 1];
            if Pin::new(&mut idle.stream)
                .poll_read(cx, &mut byte)
                .is_ready()
            {
                self.idle.swap_remove(i);
                continue;
            }
            i += 1;
        }
    }

    fn on_exchange(&mut self, request: PendingRequest, reused: bool, exchange: Exchange) {
        match exchange.result {
            Err(RequestError::Frame(_)) if reused && !request.retried && !exchange.written => {
                // The stream we kept was reset by the remote while idle: the request never
                // left. Try a fresh stream. (A failure after the write is final: the remote may
                // have refused the request on purpose, and must not get it twice.)
                tracing::debug!(peer = %self.remote, "reused stream broke; retrying on a new one");
                self.pending.push_front(PendingRequest {
                    retried: true,
                    ..request
                });
            }
            result => {
                if let Some(stream) = exchange.stream {
                    self.keep_idle(stream);
                }
                self.events.push_back(HandlerEvent::OutboundFinished {
                    id: request.id,
                    result,
                });
            }
        }
    }
}

/// `now + timeout`, saturating: a huge configured timeout means "practically never".
fn deadline_after(timeout: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

impl ConnectionHandler for Handler {
    type FromBehaviour = HandlerIn;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ProtocolUpgrade;
    type OutboundProtocol = ProtocolUpgrade;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<ProtocolUpgrade, ()> {
        let protocols = match self.mode {
            Mode::Server => self.protocols.clone(),
            Mode::Client => SmallVec::new(),
        };
        SubstreamProtocol::new(ProtocolUpgrade::new(protocols), ())
    }

    fn connection_keep_alive(&self) -> bool {
        // Streams in use keep the connection alive by themselves; a queued request has none yet.
        // A connection to a routing-table peer may be kept open while idle (bounded by the
        // behaviour, `Config::with_max_kept_connections`).
        self.keep_alive || !self.pending.is_empty()
    }

    fn on_behaviour_event(&mut self, event: HandlerIn) {
        match event {
            HandlerIn::Request { id, request } => self.enqueue(id, request),
            HandlerIn::Respond { id, response } => {
                if let Some(responder) = self.responders.remove(&id) {
                    // The stream may have gone meanwhile; then there is no one to answer.
                    let _ = responder.send(response);
                }
            }
            HandlerIn::Refuse { id } => {
                // Dropping the sender makes the stream's loop end with `Refused`: a reset.
                self.responders.remove(&id);
            }
            HandlerIn::KeepAlive(keep) => self.keep_alive = keep,
            HandlerIn::SetMode(mode) => {
                self.mode = mode;
                if mode == Mode::Client {
                    // A client neither advertises nor answers: end what is being served, and
                    // drop requests already read but not yet delivered.
                    self.inbound.clear();
                    self.responders.clear();
                    let (tx, rx) = mpsc::channel(self.max_inbound_streams);
                    self.inbound_tx = tx;
                    self.inbound_rx = rx;
                }
            }
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<ProtocolUpgrade, ProtocolUpgrade, (), ()>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: stream,
                ..
            }) => self.on_inbound_stream(stream),
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: stream,
                ..
            }) => self.on_outbound_stream(stream),
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.on_dial_upgrade_error(error)
            }
            ConnectionEvent::RemoteProtocolsChange(change) => self.on_remote_protocols(change),
            _ => {}
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<ProtocolUpgrade, (), HandlerEvent>> {
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
            }

            self.expire_pending(cx);
            // Drop kept streams the remote closed before handing one to a request.
            self.poll_idle(cx);
            // Before polling `outbound`, so that exchanges started here are polled at once.
            self.assign_idle_streams();

            if let Poll::Ready(Some(message)) = self.inbound_rx.poll_next_unpin(cx) {
                let id = message.responder.map(|responder| {
                    let id = InboundRequestId::next();
                    self.responders.insert(id, responder);
                    id
                });
                let request = message.request;
                return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(
                    HandlerEvent::InboundRequest { id, request },
                ));
            }

            if let Poll::Ready(Some((request, reused, exchange))) =
                self.outbound.poll_next_unpin(cx)
            {
                self.on_exchange(request, reused, exchange);
                continue;
            }

            if let Poll::Ready(Some(end)) = self.inbound.poll_next_unpin(cx) {
                match end {
                    Ok(end) => tracing::trace!(peer = %self.remote, ?end, "inbound stream ended"),
                    Err(error) => {
                        tracing::debug!(peer = %self.remote, %error, "inbound stream reset");
                        self.events.push_back(HandlerEvent::InboundFailed(error));
                    }
                }
                // Forget responders whose stream is gone; the map stays bounded by the limit.
                self.responders.retain(|_, r| !r.is_canceled());
                continue;
            }

            while let Poll::Ready(Some(())) = self.closing.poll_next_unpin(cx) {}
            if !self.events.is_empty() {
                continue;
            }
            if let Some(protocol) = self.request_stream() {
                return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol });
            }
            return Poll::Pending;
        }
    }
}
