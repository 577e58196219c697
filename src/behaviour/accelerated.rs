//! Glue of the accelerated client (`routing::accelerated` holds the rules): the crawl's timer
//! and requests, the full table's health from every outcome, its snapshot, and its events.

use std::task::Context;
use std::time::{Instant, SystemTime};

use futures::FutureExt;
use libp2p::{Multiaddr, PeerId};

use super::{Behaviour, Owner};
use crate::event::Event;
use crate::network::message::Response;
use crate::network::{OutboundRequestId, RequestError};
use crate::routing::accelerated::{Accelerated, AcceleratedAction};
use crate::routing::addresses::scope_of_connection;
use crate::routing::crawler::CrawlProgress;
use crate::routing_table::{Failure, FullTable};
use crate::store::Store;

impl Behaviour {
    /// The accelerated client's full routing table, when it is on
    /// ([`Config::accelerated`](crate::Config::accelerated)).
    pub fn full_table(&self) -> Option<&FullTable> {
        self.accelerated.as_ref().map(Accelerated::table)
    }

    /// How far the crawl under way is, if one is.
    pub fn crawl_progress(&self) -> Option<CrawlProgress> {
        self.accelerated.as_ref()?.crawl_progress()
    }

    /// Whether the full table serves lookups now: a crawl finished (or a saved table was
    /// restored) within
    /// [`AcceleratedConfig::max_table_age`](crate::AcceleratedConfig::max_table_age).
    pub fn is_accelerated(&self) -> bool {
        self.accelerated
            .as_ref()
            .is_some_and(|a| a.is_ready(Instant::now()))
    }

    /// Starts a crawl now rather than at its hourly slot. False when the accelerated client is
    /// off or a crawl is under way.
    pub fn start_crawl(&mut self) -> bool {
        let started = self
            .accelerated
            .as_mut()
            .is_some_and(|a| a.crawl_now(Instant::now()));
        if started {
            self.crawl_due = true;
            self.wake();
        }
        started
    }

    /// Removes `peer` from the full table, if the accelerated client is on and holds it.
    pub(super) fn remove_from_full_table(&mut self, peer: &PeerId) -> bool {
        self.accelerated.as_mut().is_some_and(|a| a.remove(peer))
    }

    /// Takes the crawled table a previous run saved (see [`Accelerated::restore`]).
    pub(super) fn restore_crawl_snapshot(accelerated: &mut Accelerated, store: &mut impl Store) {
        match store.load_crawl_snapshot() {
            Ok(Some(snapshot)) => accelerated.restore(snapshot, Instant::now(), SystemTime::now()),
            Ok(None) => {}
            Err(error) => tracing::warn!(%error, "crawled table unreadable; crawling again"),
        }
    }

    fn save_crawl_snapshot(&mut self) {
        let Some(snapshot) = self
            .accelerated
            .as_ref()
            .and_then(|a| a.snapshot(Instant::now(), SystemTime::now()))
        else {
            return;
        };
        if let Err(error) = self.server.store_mut().save_crawl_snapshot(snapshot) {
            tracing::warn!(%error, "saving the crawled table failed");
        }
    }

    /// Runs the crawl: starts one when due, sends what it asks, reports its progress.
    pub(super) fn poll_accelerated(&mut self, cx: &mut Context<'_>) {
        let Some(accelerated) = self.accelerated.as_mut() else {
            return;
        };
        if self.crawl_timer.poll_unpin(cx).is_pending() && !self.crawl_due {
            return;
        }
        self.crawl_due = false;
        let now = Instant::now();
        let actions = accelerated.poll(self.maintenance.table(), now);
        let next = accelerated.next_deadline(now);
        self.crawl_timer
            .reset(next.saturating_duration_since(Instant::now()));
        if self.crawl_timer.poll_unpin(cx).is_ready() {
            // Due already: a ready timer registers no waker, so come back by ourselves.
            self.crawl_due = true;
            cx.waker().wake_by_ref();
        }
        for action in actions {
            match action {
                AcceleratedAction::Send {
                    peer,
                    addrs,
                    bucket,
                    request,
                } => {
                    self.send_for(Owner::Crawl, peer, addrs, request, |b, id| {
                        if let Some(accelerated) = b.accelerated.as_mut() {
                            accelerated.on_sent(id, peer, bucket);
                        }
                    });
                }
                AcceleratedAction::CrawlStarted { seeds } => {
                    self.report(Event::CrawlStarted { seeds })
                }
                AcceleratedAction::Progress(progress) => {
                    self.report(Event::CrawlProgress(progress))
                }
                AcceleratedAction::CrawlFinished {
                    stats,
                    merge,
                    peers,
                    serving,
                } => {
                    self.save_crawl_snapshot();
                    self.report(Event::CrawlFinished {
                        stats,
                        merge,
                        peers,
                        serving,
                    });
                }
            }
        }
    }

    /// The outcome of a crawl request: the answer's peers pass the address rules, with the
    /// scope of the address `peer`'s connection came from.
    pub(super) fn route_to_crawl(
        &mut self,
        peer: PeerId,
        id: OutboundRequestId,
        result: Result<Option<Response>, RequestError>,
    ) {
        let Some(accelerated) = self.accelerated.as_mut() else {
            return;
        };
        let informant = scope_of_connection(self.maintenance.observed_address(&peer));
        let policy = &self.addresses;
        let learned = |p: &PeerId, addrs: Vec<Multiaddr>| policy.learned(p, addrs, informant);
        accelerated.on_crawl_result(id, result, &learned);
        self.crawl_due = true;
    }

    /// Every outcome of a request to `peer` tells the full table about the peer's health, as
    /// the k-bucket table's upkeep classifies it (`routing_table::maintenance`): a dial or a
    /// closed connection counts once, through [`Behaviour::full_table_failure`].
    pub(super) fn full_table_outcome(
        &mut self,
        peer: PeerId,
        result: &Result<Option<Response>, RequestError>,
    ) {
        let Some(accelerated) = self.accelerated.as_mut() else {
            return;
        };
        let now = Instant::now();
        match result {
            Ok(_) => accelerated.on_answered(peer, now),
            Err(RequestError::UnsupportedProtocol) => {
                accelerated.on_failed(&peer, Failure::Unreachable, now)
            }
            Err(
                RequestError::Timeout | RequestError::Frame(_) | RequestError::InvalidResponse(_),
            ) => accelerated.on_failed(&peer, Failure::NoAnswer, now),
            Err(
                RequestError::QueueFull
                | RequestError::DialFailed(_)
                | RequestError::ConnectionClosed,
            ) => {}
        }
    }

    /// A dial of `peer` failed, or its connection closed with requests waiting: one failure.
    pub(super) fn full_table_failure(&mut self, peer: &PeerId, failure: Failure) {
        if let Some(accelerated) = self.accelerated.as_mut() {
            accelerated.on_failed(peer, failure, Instant::now());
        }
    }

    /// Upkeep on the snapshot tick: peers not seen for long leave.
    pub(super) fn expire_full_table(&mut self) {
        if let Some(accelerated) = self.accelerated.as_mut() {
            accelerated.expire(Instant::now());
        }
    }

    /// A connection we dialled reached `peer` at `addr`: the crawl keeps that address first.
    pub(super) fn crawl_connected(&mut self, peer: &PeerId, addr: Multiaddr) {
        if let Some(accelerated) = self.accelerated.as_mut() {
            accelerated.on_connected(peer, addr);
        }
    }
}
