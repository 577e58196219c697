//! The glue between [`Behaviour`] and its [`Handle`]s: commands taken in `poll` run as calls
//! of the behaviour's own methods, results come back from the events it emits.

use std::task::{Context, Poll};

use super::Behaviour;
use crate::event::Event;
use crate::handle::driver::{Command, Waiter, COMMANDS_PER_POLL};
use crate::handle::{Handle, HandleError};

impl Behaviour {
    /// A [`Handle`] on this behaviour: its operations as async methods, to call from any task
    /// while the swarm holding the behaviour is driven elsewhere. Handles are cheap to clone;
    /// all of them share one queue of
    /// [`Config::with_handle_queue`](crate::Config::with_handle_queue) commands.
    pub fn handle(&self) -> Handle {
        self.handle_driver.handle()
    }

    /// Takes a bounded number of queued commands and runs them, then cancels the queries
    /// whose callers went away.
    pub(super) fn poll_handle(&mut self, cx: &mut Context<'_>) {
        let mut taken = 0;
        while let Poll::Ready(Some(command)) = self.handle_driver.poll_command(cx) {
            if command.is_bulk() && !self.server.store_mut().ready_for_bulk() {
                // poll must not wait for the disk: the store's writer wakes the behaviour when
                // it has committed, and the command runs then.
                self.handle_driver.defer(command);
                break;
            }
            self.run_command(command);
            taken += 1;
            if taken == COMMANDS_PER_POLL {
                // More may wait: come back after the swarm had its turn.
                cx.waker().wake_by_ref();
                break;
            }
        }
        for id in self.handle_driver.poll_abandoned(cx) {
            if self.cancel_query(id) {
                tracing::debug!(?id, "query cancelled: its handle future was dropped");
            }
        }
    }

    /// Feeds the handles' waiting operations from an event the behaviour emits.
    pub(super) fn handle_observe(&mut self, event: &Event) {
        self.handle_driver.observe(event);
    }

    fn run_command(&mut self, command: Command) {
        match command {
            Command::GetClosestPeers { key, reply, guard } => {
                if !reply.is_canceled() {
                    let id = self.get_closest_peers(key);
                    self.handle_driver
                        .wait(id, Waiter::ClosestPeers(reply), guard);
                }
            }
            Command::FindPeer { peer, reply, guard } => {
                if !reply.is_canceled() {
                    let id = self.find_peer(peer);
                    self.handle_driver.wait(id, Waiter::FindPeer(reply), guard);
                }
            }
            Command::GetValue {
                key,
                quorum,
                reply,
                guard,
            } => {
                if !reply.is_canceled() {
                    let id = self.get_value(key, quorum);
                    self.handle_driver.wait(id, Waiter::GetValue(reply), guard);
                }
            }
            Command::PutValue {
                record,
                quorum,
                reply,
                guard,
            } => {
                if !reply.is_canceled() {
                    match self.put_value(record, quorum) {
                        Ok(id) => self.handle_driver.wait(id, Waiter::Written(reply), guard),
                        Err(error) => drop(reply.send(Err(HandleError::PutValue(error)))),
                    }
                }
            }
            Command::Provide { key, reply, guard } => {
                if !reply.is_canceled() {
                    match self.provide(key) {
                        Ok(id) => self.handle_driver.wait(id, Waiter::Written(reply), guard),
                        Err(error) => drop(reply.send(Err(HandleError::Provide(error)))),
                    }
                }
            }
            Command::Bootstrap { reply, guard } => {
                if !reply.is_canceled() {
                    match self.bootstrap() {
                        Ok(id) => self.handle_driver.wait(id, Waiter::Bootstrap(reply), guard),
                        Err(error) => drop(reply.send(Err(HandleError::NoKnownPeers(error)))),
                    }
                }
            }
            Command::FindProviders {
                key,
                limit,
                sink,
                guard,
            } => {
                if !sink.is_closed() {
                    let id = self.find_providers(key, limit);
                    self.handle_driver.wait(id, Waiter::Providers(sink), guard);
                }
            }
            // Answered at once: run even when the caller left, as the call itself would.
            Command::StartProviding { key, reply } => {
                let _ = reply.send(self.start_providing(key).map_err(HandleError::from));
            }
            Command::StopProviding { key, reply } => {
                let _ = reply.send(self.stop_providing(&key).map_err(HandleError::from));
            }
            Command::ProvidedKeys { from, limit, reply } => {
                let _ = reply.send(self.provided_keys(&from, limit).map_err(HandleError::from));
            }
            Command::StartProvidingMany { keys, reply } => {
                let result = self.start_providing_many(keys);
                let _ = reply.send(result.map_err(HandleError::from));
            }
            Command::StopProvidingMany { keys, reply } => {
                let result = self.stop_providing_many(keys);
                let _ = reply.send(result.map_err(HandleError::from));
            }
            Command::ProvidedKeysPage {
                cursor,
                limit,
                reply,
            } => {
                let page = self.provided_keys_page(cursor, limit);
                let _ = reply.send(page.map_err(HandleError::from));
            }
            Command::AddAddress { peer, addr, reply } => {
                let _ = reply.send(Ok(self.add_address(peer, addr)));
            }
            Command::RemovePeer { peer, reply } => {
                let _ = reply.send(Ok(self.remove_peer(&peer)));
            }
        }
    }
}
