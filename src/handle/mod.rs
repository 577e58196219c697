//! [`Handle`]: the DHT's operations as async methods, callable from any task while the swarm
//! is driven elsewhere.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::channel::{mpsc, oneshot};
use futures::future::FusedFuture;
use futures::stream::{FusedStream, Stream};
use futures::{FutureExt, StreamExt};
use libp2p::{Multiaddr, PeerId};

use crate::key::Key;
use crate::network::message::{PeerRecord, Record};
use crate::provider::ProviderKey;
use crate::routing_table::Admission;
use crate::{ProvideStatus, ProvidedCursor};

pub(crate) mod driver;
mod error;

use driver::{Command, Guard, ProvidersMsg, Reply, Shared};
pub use error::HandleError;

/// A cloneable, `Send` handle on a [`Behaviour`](crate::Behaviour), from
/// [`Behaviour::handle`](crate::Behaviour::handle): the DHT's operations as async methods,
/// usable from any task while you drive your swarm as usual.
///
/// Each method queues a command for the behaviour at once and returns a future (for
/// [`find_providers`](Handle::find_providers), a stream) of its outcome. The behaviour takes
/// the commands when the swarm polls it, and runs each as if you had called its method: the
/// operation reports its [`Event`](crate::Event)s as before, and the handle's result is the
/// one [`Event::QueryFinished`](crate::Event::QueryFinished) carries. Nothing happens while
/// the swarm is not polled.
///
/// - **Bounded**: at most [`Config::with_handle_queue`](crate::Config::with_handle_queue)
///   commands (default 64) wait to be taken, counted over the handle and all its clones; one
///   more fails at once with [`HandleError::QueueFull`].
/// - **Cancelled on drop**: dropping the future (or the stream) before it finished cancels
///   its query ([`Behaviour::cancel_query`](crate::Behaviour::cancel_query)); one dropped
///   before the behaviour took its command never starts. Operations without a query
///   (`add_address`, `remove_peer`, `start_providing`, `stop_providing`, `provided_keys`,
///   `provided_keys_page`) run once queued, awaited or not; the bulk ones
///   (`start_providing_many`, `stop_providing_many`) send their chunks as they are awaited. A query of the handle's cancelled through
///   [`Behaviour::cancel_query`](crate::Behaviour::cancel_query) ends its future (or stream)
///   with [`HandleError::Cancelled`].
/// - **Closed**: once the behaviour is dropped, every operation fails with
///   [`HandleError::Closed`], including those under way.
///
/// ```no_run
/// use futures::StreamExt;
/// use kadence::{Behaviour, Config, ProviderKey};
/// use libp2p::identity::Keypair;
///
/// # async fn example() -> Result<(), Box<dyn std::error::Error>> {
/// let key = Keypair::generate_ed25519();
/// let dht = Behaviour::new(key.public().to_peer_id(), Config::amino());
/// let handle = dht.handle();
/// // ... put `dht` in your swarm, and drive the swarm in its own task ...
///
/// // Then, from any task:
/// handle.bootstrap().await?;
/// let peers = handle.get_closest_peers(b"some key".to_vec()).await?;
/// println!("{} closest peers", peers.len());
///
/// let mut providers = handle.find_providers(ProviderKey::sha2_256(b"some content"), None);
/// while let Some(provider) = providers.next().await {
///     println!("provider {}", provider?.id);
/// }
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Handle {
    commands: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("closed", &self.commands.is_closed())
            .finish_non_exhaustive()
    }
}

impl Handle {
    /// Most keys one command of [`Handle::start_providing_many`] or
    /// [`Handle::stop_providing_many`] carries: the behaviour adds them to its store within
    /// one poll of the swarm, so this bounds how long that poll takes (and, with a
    /// [`PersistentStore`](crate::store::PersistentStore), how much it can wait for the disk:
    /// see [`Store::add_provided_many`](crate::store::Store::add_provided_many)).
    pub const KEYS_PER_COMMAND: usize = 4_096;

    pub(crate) fn new(commands: mpsc::UnboundedSender<Command>, shared: Arc<Shared>) -> Self {
        Self { commands, shared }
    }

    /// The k closest peers to `key` that answered, closest first, with their addresses
    /// ([`Behaviour::get_closest_peers`](crate::Behaviour::get_closest_peers)). A failure
    /// holds the closest peers reached.
    pub fn get_closest_peers(
        &self,
        key: impl Into<Vec<u8>>,
    ) -> HandleFuture<Vec<PeerRecord>, Vec<PeerRecord>> {
        let key = key.into();
        self.query(|reply, guard| Command::GetClosestPeers { key, reply, guard })
    }

    /// The addresses of `peer` ([`Behaviour::find_peer`](crate::Behaviour::find_peer)). A
    /// failure holds the closest peers that answered.
    pub fn find_peer(&self, peer: PeerId) -> HandleFuture<PeerRecord, Vec<PeerRecord>> {
        self.query(|reply, guard| Command::FindPeer { peer, reply, guard })
    }

    /// The best valid record under `key` ([`Behaviour::get_value`](crate::Behaviour::get_value)).
    /// A failure holds the closest peers that answered.
    pub fn get_value(
        &self,
        key: impl Into<Vec<u8>>,
        quorum: Option<NonZeroUsize>,
    ) -> HandleFuture<Record, Vec<PeerRecord>> {
        let key = key.into();
        self.query(|reply, guard| Command::GetValue {
            key,
            quorum,
            reply,
            guard,
        })
    }

    /// Stores `record` here and at the k closest peers
    /// ([`Behaviour::put_value`](crate::Behaviour::put_value)): how many stored it when the
    /// result was reported (with optimistic provide, possibly before the last write; the final
    /// count comes as [`Event::WritesSettled`](crate::Event::WritesSettled)). A record refused
    /// at once is [`HandleError::PutValue`]; a failure holds how many stored it.
    pub fn put_value(
        &self,
        record: Record,
        quorum: Option<NonZeroUsize>,
    ) -> HandleFuture<usize, usize> {
        self.query(|reply, guard| Command::PutValue {
            record,
            quorum,
            reply,
            guard,
        })
    }

    /// Announces once that this node provides `key`
    /// ([`Behaviour::provide`](crate::Behaviour::provide)): to how many peers the record was
    /// written. A refusal at once is [`HandleError::Provide`].
    pub fn provide(&self, key: impl Into<ProviderKey>) -> HandleFuture<usize, usize> {
        let key = key.into();
        self.query(|reply, guard| Command::Provide { key, reply, guard })
    }

    /// Adds `key` to the provided keys and keeps it announced
    /// ([`Behaviour::start_providing`](crate::Behaviour::start_providing)); resolves once the
    /// key is on the list (the announcements follow, as
    /// [`Event::RegionReprovided`](crate::Event::RegionReprovided)).
    pub fn start_providing(&self, key: impl Into<ProviderKey>) -> HandleFuture<()> {
        let key = key.into();
        self.call(|reply| Command::StartProviding { key, reply })
    }

    /// Stops announcing `key` ([`Behaviour::stop_providing`](crate::Behaviour::stop_providing)).
    pub fn stop_providing(&self, key: impl Into<ProviderKey>) -> HandleFuture<()> {
        let key = key.into();
        self.call(|reply| Command::StopProviding { key, reply })
    }

    /// Up to `limit` provided keys in keyspace order from `from`, with their status
    /// ([`Behaviour::provided_keys`](crate::Behaviour::provided_keys)).
    pub fn provided_keys(&self, from: Key, limit: usize) -> HandleFuture<Vec<ProvideStatus>> {
        self.call(|reply| Command::ProvidedKeys { from, limit, reply })
    }

    /// Adds many keys to the provided keys and keeps them announced
    /// ([`Behaviour::start_providing_many`](crate::Behaviour::start_providing_many)): how many
    /// were not provided before. The keys go to the behaviour in commands of at most
    /// [`Handle::KEYS_PER_COMMAND`], one at a time, so that each takes a bounded part of the
    /// swarm's task and one command slot; a million keys are some 250 commands. Unlike the
    /// other methods, it sends nothing until the future is polled, then each chunk once the
    /// one before it is done. A chunk that fails ends the call with its error, the chunks
    /// before it staying provided; dropping the future sends no further chunk.
    pub fn start_providing_many<K: Into<ProviderKey>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> impl Future<Output = Result<usize, HandleError>> + Send + 'static {
        let keys: Vec<ProviderKey> = keys.into_iter().map(Into::into).collect();
        self.in_chunks(keys, |keys, reply| Command::StartProvidingMany {
            keys,
            reply,
        })
    }

    /// Stops announcing many keys
    /// ([`Behaviour::stop_providing_many`](crate::Behaviour::stop_providing_many)): how many
    /// were provided. Sent in chunks as [`Handle::start_providing_many`] sends them.
    pub fn stop_providing_many<K: Into<ProviderKey>>(
        &self,
        keys: impl IntoIterator<Item = K>,
    ) -> impl Future<Output = Result<usize, HandleError>> + Send + 'static {
        let keys: Vec<ProviderKey> = keys.into_iter().map(Into::into).collect();
        self.in_chunks(keys, |keys, reply| Command::StopProvidingMany {
            keys,
            reply,
        })
    }

    /// Sends `keys` as commands of at most [`Handle::KEYS_PER_COMMAND`], each once the one
    /// before it is done; the sum of their counts.
    fn in_chunks(
        &self,
        keys: Vec<ProviderKey>,
        command: fn(Vec<ProviderKey>, Reply<usize>) -> Command,
    ) -> impl Future<Output = Result<usize, HandleError>> + Send + 'static {
        let handle = self.clone();
        async move {
            let mut total = 0;
            for chunk in chunks(keys) {
                total += handle.call(|reply| command(chunk, reply)).await?;
            }
            Ok(total)
        }
    }

    /// A page of up to `limit` provided keys from `cursor` (`None`: the start), with their
    /// status, and the cursor of the next page (`None`: the last page)
    /// ([`Behaviour::provided_keys_page`](crate::Behaviour::provided_keys_page)).
    pub fn provided_keys_page(
        &self,
        cursor: Option<ProvidedCursor>,
        limit: usize,
    ) -> HandleFuture<(Vec<ProvideStatus>, Option<ProvidedCursor>)> {
        self.call(|reply| Command::ProvidedKeysPage {
            cursor,
            limit,
            reply,
        })
    }

    /// Joins the network ([`Behaviour::bootstrap`](crate::Behaviour::bootstrap)): how many
    /// peers answered the self-lookup. Without a known peer, [`HandleError::NoKnownPeers`].
    pub fn bootstrap(&self) -> HandleFuture<usize, usize> {
        self.query(|reply, guard| Command::Bootstrap { reply, guard })
    }

    /// Adds a peer known to serve the DHT to the routing table
    /// ([`Behaviour::add_address`](crate::Behaviour::add_address)).
    pub fn add_address(&self, peer: PeerId, addr: Multiaddr) -> HandleFuture<Admission> {
        self.call(|reply| Command::AddAddress { peer, addr, reply })
    }

    /// Removes `peer` from the routing tables; whether one held it
    /// ([`Behaviour::remove_peer`](crate::Behaviour::remove_peer)).
    pub fn remove_peer(&self, peer: PeerId) -> HandleFuture<bool> {
        self.call(|reply| Command::RemovePeer { peer, reply })
    }

    /// The providers of `key` as they arrive
    /// ([`Behaviour::find_providers`](crate::Behaviour::find_providers)): each provider once,
    /// the local store's first. The stream ends when the query does: after the last provider
    /// when it succeeded (it walked the network, or found `limit`), or with one last
    /// `Err` item when it failed ([`HandleError::Query`], whose partial result holds every
    /// provider found) or could not run ([`HandleError::QueueFull`],
    /// [`HandleError::Closed`]). Dropping the stream cancels the query.
    pub fn find_providers(
        &self,
        key: impl Into<ProviderKey>,
        limit: Option<usize>,
    ) -> ProvidersStream {
        let key = key.into();
        let (sink, found) = mpsc::unbounded();
        let (guard_tx, guard) = oneshot::channel();
        let command = Command::FindProviders {
            key,
            limit,
            sink,
            guard,
        };
        match self.send(command) {
            Ok(()) => ProvidersStream {
                state: StreamState::Running {
                    found,
                    _guard: guard_tx,
                },
                ready: VecDeque::new(),
            },
            Err(error) => ProvidersStream {
                state: StreamState::Failed(error),
                ready: VecDeque::new(),
            },
        }
    }

    /// An operation that runs a query: tied to a guard, so that dropping its future cancels it.
    fn query<T, P>(
        &self,
        command: impl FnOnce(Reply<T, P>, Guard) -> Command,
    ) -> HandleFuture<T, P> {
        let (reply, result) = oneshot::channel();
        let (guard_tx, guard) = oneshot::channel();
        match self.send(command(reply, guard)) {
            Ok(()) => HandleFuture::waiting(result, Some(guard_tx)),
            Err(error) => HandleFuture::failed(error),
        }
    }

    /// An operation answered within the poll that takes it: nothing to cancel.
    fn call<T>(&self, command: impl FnOnce(Reply<T>) -> Command) -> HandleFuture<T> {
        let (reply, result) = oneshot::channel();
        match self.send(command(reply)) {
            Ok(()) => HandleFuture::waiting(result, None),
            Err(error) => HandleFuture::failed(error),
        }
    }

    /// Queues `command` if a slot is free.
    fn send<P>(&self, command: Command) -> Result<(), HandleError<P>> {
        // A behaviour that is gone never frees its slots: say so rather than "full".
        if self.commands.is_closed() {
            return Err(HandleError::Closed);
        }
        if !self.shared.reserve() {
            return Err(HandleError::QueueFull);
        }
        self.commands.unbounded_send(command).map_err(|_| {
            self.shared.release();
            HandleError::Closed
        })
    }
}

/// `keys` in chunks of at most [`Handle::KEYS_PER_COMMAND`].
fn chunks(keys: Vec<ProviderKey>) -> impl Iterator<Item = Vec<ProviderKey>> + Send {
    let mut keys = keys.into_iter();
    std::iter::from_fn(move || {
        let chunk: Vec<ProviderKey> = keys.by_ref().take(Handle::KEYS_PER_COMMAND).collect();
        (!chunk.is_empty()).then_some(chunk)
    })
}

/// The outcome of an operation asked through a [`Handle`]. Dropping it before it resolved
/// cancels the operation's query.
#[must_use = "dropping the future cancels the operation"]
pub struct HandleFuture<T, P = ()> {
    state: FutureState<T, P>,
}

enum FutureState<T, P> {
    /// Refused before it was queued.
    Failed(HandleError<P>),
    Waiting {
        result: oneshot::Receiver<Result<T, HandleError<P>>>,
        /// Held, never used: dropped with the future, it tells the behaviour to cancel.
        _guard: Option<oneshot::Sender<()>>,
    },
    Done,
}

impl<T, P> HandleFuture<T, P> {
    fn waiting(
        result: oneshot::Receiver<Result<T, HandleError<P>>>,
        guard: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            state: FutureState::Waiting {
                result,
                _guard: guard,
            },
        }
    }

    fn failed(error: HandleError<P>) -> Self {
        Self {
            state: FutureState::Failed(error),
        }
    }
}

// Nothing in it is pinned: the reply channel is polled by `&mut`, the rest is moved out.
impl<T, P> Unpin for HandleFuture<T, P> {}

impl<T, P> std::fmt::Debug for HandleFuture<T, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            FutureState::Failed(_) => "failed",
            FutureState::Waiting { .. } => "waiting",
            FutureState::Done => "done",
        };
        f.debug_struct("HandleFuture")
            .field("state", &state)
            .finish()
    }
}

impl<T, P> Future for HandleFuture<T, P> {
    type Output = Result<T, HandleError<P>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Done from here on unless still waiting: that drops the guard, so the behaviour
        // forgets a finished operation at once.
        match std::mem::replace(&mut self.state, FutureState::Done) {
            FutureState::Failed(error) => Poll::Ready(Err(error)),
            FutureState::Waiting { mut result, _guard } => match result.poll_unpin(cx) {
                Poll::Pending => {
                    self.state = FutureState::Waiting { result, _guard };
                    Poll::Pending
                }
                // The behaviour dropped the reply: it is gone.
                Poll::Ready(outcome) => Poll::Ready(outcome.unwrap_or(Err(HandleError::Closed))),
            },
            FutureState::Done => Poll::Pending,
        }
    }
}

impl<T, P> FusedFuture for HandleFuture<T, P> {
    fn is_terminated(&self) -> bool {
        matches!(self.state, FutureState::Done)
    }
}

/// The providers of a key as a [`find_providers`](Handle::find_providers) query finds them:
/// `Ok` for each provider, then at most one `Err` (the query failed, or could not run), then
/// the end. Dropping it before the end cancels the query.
#[must_use = "streams do nothing unless polled; dropping it cancels the query"]
pub struct ProvidersStream {
    state: StreamState,
    /// Providers received and not yet yielded.
    ready: VecDeque<PeerRecord>,
}

enum StreamState {
    /// Refused before it was queued.
    Failed(HandleError<Vec<PeerRecord>>),
    Running {
        found: mpsc::UnboundedReceiver<ProvidersMsg>,
        /// Held, never used: dropped with the stream (or at its end), it tells the behaviour.
        _guard: oneshot::Sender<()>,
    },
    /// The query ended; the providers still in `ready` come first, then this, then the end.
    Ending(Option<HandleError<Vec<PeerRecord>>>),
}

impl std::fmt::Debug for ProvidersStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProvidersStream")
            .field("ready", &self.ready.len())
            .field("terminated", &self.is_terminated())
            .finish()
    }
}

impl Stream for ProvidersStream {
    type Item = Result<PeerRecord, HandleError<Vec<PeerRecord>>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if let Some(provider) = this.ready.pop_front() {
                return Poll::Ready(Some(Ok(provider)));
            }
            let next = match &mut this.state {
                StreamState::Failed(_) => None,
                StreamState::Running { found, .. } => match found.poll_next_unpin(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(next) => Some(next),
                },
                StreamState::Ending(last) => return Poll::Ready(last.take().map(Err)),
            };
            match next {
                Some(Some(ProvidersMsg::Found(found))) => this.ready.extend(found),
                Some(Some(ProvidersMsg::Finished(end))) => {
                    this.state = StreamState::Ending(end.err());
                }
                // Ended without a word: the behaviour is gone.
                Some(None) => this.state = StreamState::Ending(Some(HandleError::Closed)),
                None => {
                    let failed = std::mem::replace(&mut this.state, StreamState::Ending(None));
                    if let StreamState::Failed(error) = failed {
                        return Poll::Ready(Some(Err(error)));
                    }
                }
            }
        }
    }
}

impl FusedStream for ProvidersStream {
    fn is_terminated(&self) -> bool {
        self.ready.is_empty() && matches!(self.state, StreamState::Ending(None))
    }
}

#[cfg(test)]
mod tests;
