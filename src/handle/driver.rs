//! The behaviour's side of the [`Handle`]: the command queue it drains, the operations waiting
//! for their result, and the drop-guards that tell it an operation's caller went away.
//!
//! Each operation that runs a query is tied to three things: the reply channel (a oneshot, or
//! for `find_providers` a channel of providers), the query id it runs as, and a guard: a
//! oneshot whose sender the caller's future holds and never uses. The future dropped (or
//! finished), the guard's receiver resolves; those receivers sit in one [`FuturesUnordered`],
//! so a poll touches only the guards that resolved, never every waiter.

use std::collections::VecDeque;
use std::future::Future;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use fnv::FnvHashMap;
use futures::channel::{mpsc, oneshot};
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use libp2p::{Multiaddr, PeerId};

use super::{Handle, HandleError};
use crate::event::Event;
use crate::key::Key;
use crate::network::message::{PeerRecord, Record};
use crate::provider::ProviderKey;
use crate::routing::{QueryFailure, QueryId, QueryProgress, QueryResult};
use crate::routing_table::Admission;
use crate::{ProvideStatus, ProvidedCursor};

/// A page of provided keys and the cursor of the next one
/// ([`Behaviour::provided_keys_page`](crate::Behaviour::provided_keys_page)).
pub(crate) type ProvidedKeysPage = (Vec<ProvideStatus>, Option<ProvidedCursor>);

/// Commands the behaviour takes from the queue in one poll; it wakes itself when more wait,
/// so a burst of commands never makes one poll long.
pub(crate) const COMMANDS_PER_POLL: usize = 16;
/// Resolved guards handled in one poll (each is a map removal and perhaps a cancellation).
const GUARDS_PER_POLL: usize = 64;

/// Where the result of an operation goes.
pub(crate) type Reply<T, P = ()> = oneshot::Sender<Result<T, HandleError<P>>>;
/// The behaviour's end of a drop-guard: resolves when the caller's future is gone.
pub(crate) type Guard = oneshot::Receiver<()>;
/// A lookup's reply: the partial result of a failure is the closest peers that answered.
pub(crate) type LookupReply<T> = Reply<T, Vec<PeerRecord>>;
/// A write's or a bootstrap's reply: the partial result of a failure is a count.
pub(crate) type CountReply = Reply<usize, usize>;

/// What `find_providers` sends its stream.
#[derive(Debug)]
pub(crate) enum ProvidersMsg {
    /// Providers found, de-duplicated.
    Found(Vec<PeerRecord>),
    /// The query ended: the stream ends, with the failure as its last item if it failed.
    Finished(Result<(), HandleError<Vec<PeerRecord>>>),
}

/// An operation, as a [`Handle`] queues it for the behaviour.
pub(crate) enum Command {
    GetClosestPeers {
        key: Vec<u8>,
        reply: LookupReply<Vec<PeerRecord>>,
        guard: Guard,
    },
    FindPeer {
        peer: PeerId,
        reply: LookupReply<PeerRecord>,
        guard: Guard,
    },
    GetValue {
        key: Vec<u8>,
        quorum: Option<NonZeroUsize>,
        reply: LookupReply<Record>,
        guard: Guard,
    },
    PutValue {
        record: Record,
        quorum: Option<NonZeroUsize>,
        reply: CountReply,
        guard: Guard,
    },
    Provide {
        key: ProviderKey,
        reply: CountReply,
        guard: Guard,
    },
    Bootstrap {
        reply: CountReply,
        guard: Guard,
    },
    FindProviders {
        key: ProviderKey,
        limit: Option<usize>,
        sink: mpsc::UnboundedSender<ProvidersMsg>,
        guard: Guard,
    },
    StartProviding {
        key: ProviderKey,
        reply: Reply<()>,
    },
    StopProviding {
        key: ProviderKey,
        reply: Reply<()>,
    },
    ProvidedKeys {
        from: Key,
        limit: usize,
        reply: Reply<Vec<ProvideStatus>>,
    },
    /// At most [`Handle::KEYS_PER_COMMAND`] keys.
    StartProvidingMany {
        keys: Vec<ProviderKey>,
        reply: Reply<usize>,
    },
    /// At most [`Handle::KEYS_PER_COMMAND`] keys.
    StopProvidingMany {
        keys: Vec<ProviderKey>,
        reply: Reply<usize>,
    },
    ProvidedKeysPage {
        cursor: Option<ProvidedCursor>,
        limit: usize,
        reply: Reply<ProvidedKeysPage>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
        reply: Reply<Admission>,
    },
    RemovePeer {
        peer: PeerId,
        reply: Reply<bool>,
    },
}

/// An operation whose query runs: where its result goes.
pub(crate) enum Waiter {
    ClosestPeers(LookupReply<Vec<PeerRecord>>),
    FindPeer(LookupReply<PeerRecord>),
    GetValue(LookupReply<Record>),
    /// `put_value` and `provide`: how many peers stored the record.
    Written(CountReply),
    Bootstrap(CountReply),
    Providers(mpsc::UnboundedSender<ProvidersMsg>),
}

/// What the handles and the driver share: the bound of the queue, and how full it is.
///
/// The channel itself is unbounded: a bounded `futures` channel gives every sender clone a
/// slot of its own, so its capacity would grow with the clones of the handle. The count here
/// is the bound: a handle reserves a slot before it sends, the driver frees it when it takes
/// the command.
#[derive(Debug)]
pub(crate) struct Shared {
    queued: AtomicUsize,
    capacity: usize,
}

impl Shared {
    /// Reserves a slot in the queue; `false` when all `capacity` are taken.
    pub(crate) fn reserve(&self) -> bool {
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.capacity).then_some(n + 1)
            })
            .is_ok()
    }

    /// Frees a slot: its command was taken, or never sent.
    pub(crate) fn release(&self) {
        self.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Resolves to its query's id once the caller's future holding the paired sender is gone.
struct Watch {
    id: QueryId,
    guard: Guard,
}

impl Future for Watch {
    type Output = QueryId;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<QueryId> {
        // The sender never sends: any readiness is its drop.
        self.guard.poll_unpin(cx).map(|_| self.id)
    }
}

/// The behaviour's side of every [`Handle`] it gave out.
pub(crate) struct Driver {
    commands: mpsc::UnboundedReceiver<Command>,
    /// Kept to give out handles; the channel stays open while the behaviour lives.
    sender: mpsc::UnboundedSender<Command>,
    shared: Arc<Shared>,
    waiters: FnvHashMap<QueryId, Waiter>,
    watches: FuturesUnordered<Watch>,
    /// A bulk command taken while the store could not take it without waiting for the disk:
    /// it runs first once the store can.
    deferred: Option<Command>,
}

impl Command {
    /// Whether the command writes many keys to the store at once.
    pub(crate) fn is_bulk(&self) -> bool {
        matches!(
            self,
            Command::StartProvidingMany { .. } | Command::StopProvidingMany { .. }
        )
    }
}

impl Driver {
    /// A driver whose handles may queue `capacity` commands (at least one).
    pub(crate) fn new(capacity: usize) -> Self {
        let (sender, commands) = mpsc::unbounded();
        Self {
            commands,
            sender,
            shared: Arc::new(Shared {
                queued: AtomicUsize::new(0),
                capacity: capacity.max(1),
            }),
            waiters: FnvHashMap::default(),
            watches: FuturesUnordered::new(),
            deferred: None,
        }
    }

    /// A new handle on this driver.
    pub(crate) fn handle(&self) -> Handle {
        Handle::new(self.sender.clone(), self.shared.clone())
    }

    /// The next queued command, freeing its slot. The caller bounds how many it takes per
    /// poll ([`COMMANDS_PER_POLL`]).
    pub(crate) fn poll_command(&mut self, cx: &mut Context<'_>) -> Poll<Option<Command>> {
        if let Some(command) = self.deferred.take() {
            return Poll::Ready(Some(command));
        }
        let next = self.commands.poll_next_unpin(cx);
        if let Poll::Ready(Some(_)) = &next {
            self.shared.release();
        }
        next
    }

    /// Keeps a bulk command for the next poll: the store's writer is behind.
    pub(crate) fn defer(&mut self, command: Command) {
        self.deferred = Some(command);
    }

    /// Ties the running query `id` to its waiter and its caller's guard.
    pub(crate) fn wait(&mut self, id: QueryId, waiter: Waiter, guard: Guard) {
        self.waiters.insert(id, waiter);
        self.watches.push(Watch { id, guard });
    }

    /// Queries whose callers went away while they still ran: the behaviour cancels them.
    /// Guards of finished queries resolve here too, and are dropped. Bounded per poll; wakes
    /// the task when more may be ready.
    pub(crate) fn poll_abandoned(&mut self, cx: &mut Context<'_>) -> VecDeque<QueryId> {
        let mut abandoned = VecDeque::new();
        for _ in 0..GUARDS_PER_POLL {
            match self.watches.poll_next_unpin(cx) {
                Poll::Ready(Some(id)) => {
                    if self.waiters.remove(&id).is_some() {
                        abandoned.push_back(id);
                    }
                }
                Poll::Ready(None) | Poll::Pending => return abandoned,
            }
        }
        cx.waker().wake_by_ref();
        abandoned
    }

    /// Feeds the waiters from an event the behaviour emits: providers to their stream, a
    /// result to its caller.
    pub(crate) fn observe(&mut self, event: &Event) {
        if self.waiters.is_empty() {
            return;
        }
        match event {
            Event::QueryProgress {
                id,
                progress: QueryProgress::ProvidersFound(found),
            } => {
                if let Some(Waiter::Providers(sink)) = self.waiters.get(id) {
                    // A closed stream is a dropped one: its guard cancels the query.
                    let _ = sink.unbounded_send(ProvidersMsg::Found(found.clone()));
                }
            }
            Event::QueryFinished { id, result, .. } => {
                if let Some(waiter) = self.waiters.remove(id) {
                    deliver(waiter, result);
                }
            }
            _ => {}
        }
    }

    /// The application cancelled query `id` itself (`Behaviour::cancel_query`): its caller
    /// hears so at once rather than waiting for a result that will never come.
    pub(crate) fn cancelled(&mut self, id: QueryId) {
        let Some(waiter) = self.waiters.remove(&id) else {
            return;
        };
        match waiter {
            Waiter::ClosestPeers(reply) => drop(reply.send(Err(HandleError::Cancelled))),
            Waiter::FindPeer(reply) => drop(reply.send(Err(HandleError::Cancelled))),
            Waiter::GetValue(reply) => drop(reply.send(Err(HandleError::Cancelled))),
            Waiter::Written(reply) | Waiter::Bootstrap(reply) => {
                drop(reply.send(Err(HandleError::Cancelled)))
            }
            Waiter::Providers(sink) => {
                let _ = sink.unbounded_send(ProvidersMsg::Finished(Err(HandleError::Cancelled)));
            }
        }
    }

    /// Operations waiting for their query.
    #[cfg(test)]
    pub(crate) fn waiting(&self) -> usize {
        self.waiters.len()
    }
}

/// Sends `result` to `waiter` (a caller that went away is no error).
fn deliver(waiter: Waiter, result: &QueryResult) {
    fn failed<P>(failure: QueryFailure<P>) -> HandleError<P> {
        HandleError::Query(failure)
    }
    match (waiter, result) {
        (Waiter::ClosestPeers(reply), QueryResult::ClosestPeers { result, .. }) => {
            let _ = reply.send(result.clone().map_err(failed));
        }
        (Waiter::FindPeer(reply), QueryResult::FindPeer { result, .. }) => {
            let _ = reply.send(result.clone().map_err(failed));
        }
        (Waiter::GetValue(reply), QueryResult::GetValue { result, .. }) => {
            let _ = reply.send(result.clone().map_err(failed));
        }
        (
            Waiter::Written(reply),
            QueryResult::PutValue { result, .. } | QueryResult::Provide { result, .. },
        )
        | (Waiter::Bootstrap(reply), QueryResult::Bootstrap(result)) => {
            let _ = reply.send(result.clone().map_err(failed));
        }
        (Waiter::Providers(sink), QueryResult::FindProviders { result, .. }) => {
            let end = result.as_ref().map(|_| ()).map_err(|f| failed(f.clone()));
            let _ = sink.unbounded_send(ProvidersMsg::Finished(end));
        }
        (_, result) => {
            // Query ids are never reused: a result of another kind cannot be this query's.
            tracing::warn!(
                kind = result.kind().as_str(),
                "handle: result of another kind"
            );
        }
    }
}
