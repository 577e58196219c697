use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use libp2p::PeerId;

use super::driver::{Command, Driver, Waiter};
use super::{Handle, HandleError};
use crate::event::Event;
use crate::network::message::{ConnectionType, PeerRecord};
use crate::provider::ProviderKey;
use crate::routing::{QueryError, QueryFailure, QueryId, QueryProgress, QueryResult, QueryStats};

/// Counts its wake-ups.
#[derive(Default)]
struct Wakes(AtomicUsize);

impl Wake for Wakes {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn waker() -> (Arc<Wakes>, Waker) {
    let wakes = Arc::new(Wakes::default());
    (wakes.clone(), Waker::from(wakes))
}

fn next_command(driver: &mut Driver) -> Option<Command> {
    let waker = futures::task::noop_waker();
    match driver.poll_command(&mut Context::from_waker(&waker)) {
        Poll::Ready(command) => command,
        Poll::Pending => None,
    }
}

fn abandoned(driver: &mut Driver, waker: &Waker) -> Vec<QueryId> {
    driver
        .poll_abandoned(&mut Context::from_waker(waker))
        .into()
}

fn peer(id: PeerId) -> PeerRecord {
    PeerRecord {
        id,
        addrs: vec!["/memory/1".parse().unwrap()],
        connection: ConnectionType::NotConnected,
    }
}

fn finished(id: QueryId, result: QueryResult) -> Event {
    Event::QueryFinished {
        id,
        result,
        stats: QueryStats::new(Instant::now()),
    }
}

/// Takes a query command of the handle and ties it to `id`, as the behaviour does.
fn start(driver: &mut Driver, id: QueryId) {
    let waiter_and_guard = match next_command(driver).expect("a command") {
        Command::GetClosestPeers { reply, guard, .. } => (Waiter::ClosestPeers(reply), guard),
        Command::FindProviders { sink, guard, .. } => (Waiter::Providers(sink), guard),
        Command::Bootstrap { reply, guard } => (Waiter::Bootstrap(reply), guard),
        _ => panic!("not a query"),
    };
    driver.wait(id, waiter_and_guard.0, waiter_and_guard.1);
}

#[test]
fn the_bound_holds_over_every_clone() {
    let mut driver = Driver::new(3);
    let handles: Vec<Handle> = (0..5).map(|_| driver.handle()).collect();
    let mut queued: Vec<_> = handles[..3]
        .iter()
        .map(|h| h.remove_peer(PeerId::random()))
        .collect();
    for h in &handles {
        let refused = h.remove_peer(PeerId::random()).now_or_never();
        assert!(matches!(refused, Some(Err(HandleError::QueueFull))));
    }
    // Taking a command frees its slot.
    let Some(Command::RemovePeer { reply, .. }) = next_command(&mut driver) else {
        panic!("the first command")
    };
    reply.send(Ok(true)).unwrap();
    assert_eq!(queued.remove(0).now_or_never(), Some(Ok(true)));
    let mut fourth = handles[4].remove_peer(PeerId::random());
    assert!((&mut fourth).now_or_never().is_none(), "queued, waiting");
    assert!(matches!(
        handles[0].bootstrap().now_or_never(),
        Some(Err(HandleError::QueueFull))
    ));
}

#[test]
fn a_gone_behaviour_is_closed() {
    let driver = Driver::new(4);
    let handle = driver.handle();
    let pending = handle.get_closest_peers(b"key".to_vec());
    let mut stream = handle.find_providers(ProviderKey::sha2_256(b"x"), None);
    drop(driver);
    assert_eq!(pending.now_or_never(), Some(Err(HandleError::Closed)));
    assert_eq!(
        stream.next().now_or_never(),
        Some(Some(Err(HandleError::Closed)))
    );
    assert_eq!(stream.next().now_or_never(), Some(None));
    // Closed, not full, even though the queue never drained.
    for _ in 0..8 {
        assert_eq!(
            handle.remove_peer(PeerId::random()).now_or_never(),
            Some(Err(HandleError::Closed))
        );
    }
}

#[test]
fn a_result_reaches_its_future_and_nothing_stays_behind() {
    let mut driver = Driver::new(4);
    let handle = driver.handle();
    let (wakes, waker) = waker();
    let mut pending = handle.get_closest_peers(b"key".to_vec());
    start(&mut driver, QueryId(7));
    assert_eq!(driver.waiting(), 1);
    let found = vec![peer(PeerId::random())];
    // Another query's result is not this one's.
    driver.observe(&finished(QueryId(8), QueryResult::Bootstrap(Ok(1))));
    assert!((&mut pending).now_or_never().is_none());
    driver.observe(&finished(
        QueryId(7),
        QueryResult::ClosestPeers {
            key: b"key".to_vec(),
            result: Ok(found.clone()),
        },
    ));
    assert_eq!(driver.waiting(), 0);
    assert_eq!(pending.now_or_never(), Some(Ok(found)));
    // The finished future's guard resolves: nothing to cancel, nothing kept.
    assert!(abandoned(&mut driver, &waker).is_empty());
    assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
}

#[test]
fn a_failure_carries_what_was_found() {
    let mut driver = Driver::new(4);
    let handle = driver.handle();
    let pending = handle.bootstrap();
    start(&mut driver, QueryId(1));
    let failure = QueryFailure {
        error: QueryError::Timeout,
        found: 4,
    };
    driver.observe(&finished(
        QueryId(1),
        QueryResult::Bootstrap(Err(failure.clone())),
    ));
    assert_eq!(
        pending.now_or_never(),
        Some(Err(HandleError::Query(failure)))
    );
}

#[test]
fn a_dropped_future_gives_up_its_query() {
    let mut driver = Driver::new(4);
    let handle = driver.handle();
    let waker = futures::task::noop_waker();
    let kept = handle.get_closest_peers(b"kept".to_vec());
    let dropped = handle.get_closest_peers(b"dropped".to_vec());
    start(&mut driver, QueryId(1));
    start(&mut driver, QueryId(2));
    assert!(abandoned(&mut driver, &waker).is_empty());
    drop(dropped);
    assert_eq!(abandoned(&mut driver, &waker), vec![QueryId(2)]);
    assert_eq!(driver.waiting(), 1);
    // A result that comes anyway (already queued as an event) finds no one.
    driver.observe(&finished(
        QueryId(2),
        QueryResult::ClosestPeers {
            key: b"dropped".to_vec(),
            result: Ok(Vec::new()),
        },
    ));
    assert_eq!(driver.waiting(), 1);
    drop(kept);
    assert_eq!(abandoned(&mut driver, &waker), vec![QueryId(1)]);
}

#[test]
fn guards_are_handled_a_bounded_number_per_poll() {
    let mut driver = Driver::new(200);
    let handle = driver.handle();
    let (wakes, waker) = waker();
    let futures: Vec<_> = (0..100u64)
        .map(|i| {
            let f = handle.get_closest_peers(i.to_be_bytes().to_vec());
            start(&mut driver, QueryId(i));
            f
        })
        .collect();
    drop(futures);
    let first = abandoned(&mut driver, &waker);
    assert!(first.len() < 100, "one poll took all {}", first.len());
    assert!(
        wakes.0.load(Ordering::SeqCst) > 0,
        "it asks to be polled again"
    );
    let mut all = first.len();
    while all < 100 {
        let more = abandoned(&mut driver, &waker).len();
        assert!(more > 0);
        all += more;
    }
    assert_eq!(driver.waiting(), 0);
}

#[test]
fn providers_stream_then_the_failure_ends_it() {
    let mut driver = Driver::new(4);
    let handle = driver.handle();
    let mut stream = handle.find_providers(ProviderKey::sha2_256(b"x"), Some(5));
    start(&mut driver, QueryId(3));
    assert!(stream.next().now_or_never().is_none(), "nothing yet");
    let (a, b, c) = (
        peer(PeerId::random()),
        peer(PeerId::random()),
        peer(PeerId::random()),
    );
    let progress = |found: Vec<PeerRecord>| Event::QueryProgress {
        id: QueryId(3),
        progress: QueryProgress::ProvidersFound(found),
    };
    driver.observe(&progress(vec![a.clone(), b.clone()]));
    assert_eq!(stream.next().now_or_never(), Some(Some(Ok(a.clone()))));
    driver.observe(&progress(vec![c.clone()]));
    let failure = QueryFailure {
        error: QueryError::Timeout,
        found: vec![a, b.clone(), c.clone()],
    };
    driver.observe(&finished(
        QueryId(3),
        QueryResult::FindProviders {
            key: ProviderKey::sha2_256(b"x"),
            result: Err(failure.clone()),
        },
    ));
    assert_eq!(stream.next().now_or_never(), Some(Some(Ok(b))));
    assert_eq!(stream.next().now_or_never(), Some(Some(Ok(c))));
    assert_eq!(
        stream.next().now_or_never(),
        Some(Some(Err(HandleError::Query(failure))))
    );
    assert_eq!(stream.next().now_or_never(), Some(None));
    assert!(futures::stream::FusedStream::is_terminated(&stream));
    assert_eq!(driver.waiting(), 0);
}

#[test]
fn providers_stream_ends_quietly_when_the_query_succeeds() {
    let mut driver = Driver::new(4);
    let handle = driver.handle();
    let stream = handle.find_providers(ProviderKey::sha2_256(b"x"), None);
    start(&mut driver, QueryId(3));
    let a = peer(PeerId::random());
    driver.observe(&Event::QueryProgress {
        id: QueryId(3),
        progress: QueryProgress::ProvidersFound(vec![a.clone()]),
    });
    driver.observe(&finished(
        QueryId(3),
        QueryResult::FindProviders {
            key: ProviderKey::sha2_256(b"x"),
            result: Ok(vec![a.clone()]),
        },
    ));
    let items: Vec<_> = stream.collect::<Vec<_>>().now_or_never().unwrap();
    assert_eq!(items, vec![Ok(a)]);
}

#[test]
fn a_refused_stream_says_why_once() {
    let driver = Driver::new(1);
    let handle = driver.handle();
    let _queued = handle.remove_peer(PeerId::random());
    let stream = handle.find_providers(ProviderKey::sha2_256(b"x"), None);
    let items: Vec<_> = stream.collect::<Vec<_>>().now_or_never().unwrap();
    assert_eq!(items, vec![Err(HandleError::QueueFull)]);
}

#[test]
fn the_handle_is_send_sync_and_static() {
    fn check<T: Send + Sync + 'static>() {}
    fn check_send<T: Send + 'static>() {}
    check::<Handle>();
    check_send::<super::HandleFuture<Vec<PeerRecord>, Vec<PeerRecord>>>();
    check_send::<super::ProvidersStream>();
}

#[test]
fn a_query_the_application_cancels_ends_its_future_and_its_stream() {
    let mut driver = Driver::new(8);
    let handle = driver.handle();
    let lookup = handle.get_closest_peers(b"key".to_vec());
    start(&mut driver, QueryId(1));
    let mut providers = handle.find_providers(ProviderKey::sha2_256(b"content"), None);
    start(&mut driver, QueryId(2));
    driver.cancelled(QueryId(1));
    driver.cancelled(QueryId(2));
    assert_eq!(
        lookup.now_or_never().expect("ended at once"),
        Err(HandleError::Cancelled)
    );
    assert_eq!(
        providers.next().now_or_never().expect("ended at once"),
        Some(Err(HandleError::Cancelled))
    );
    assert_eq!(providers.next().now_or_never(), Some(None));
}
