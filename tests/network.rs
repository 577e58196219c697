//! The Network module over real swarms: request types, stream reuse, idle timeout, stream cap,
//! malformed input, timeouts, queue bounds.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use futures::{AsyncWriteExt, StreamExt};
use kadence::network::codec::{read_frame, write_frame, FrameError};
use kadence::network::message::{decode_request, decode_response, encode_request, encode_response};
use kadence::{Event, InboundError, InboundOutcome, Request, RequestError, Response};
use libp2p::swarm::{Stream, Swarm};
use libp2p::PeerId;
use libp2p_swarm_test::SwarmExt;
use tokio::sync::mpsc;

const MAX: usize = 4 * 1024 * 1024;

/// A swarm with only libp2p-stream, to speak the protocol by hand.
fn raw_swarm() -> (Swarm<libp2p_stream::Behaviour>, libp2p_stream::Control) {
    let swarm = Swarm::new_ephemeral_tokio(|_| libp2p_stream::Behaviour::new());
    let control = swarm.behaviour().new_control();
    (swarm, control)
}

/// Sends `request` on a raw stream and reads the answer (none for ADD_PROVIDER).
async fn ask(stream: &mut Stream, request: &Request) -> Result<Option<Response>, FrameError> {
    write_frame(stream, &encode_request(request)).await?;
    if !request.expects_response() {
        return Ok(None);
    }
    let frame = read_frame(stream, MAX)
        .await?
        .ok_or_else(|| FrameError::from(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)))?;
    Ok(Some(
        decode_response(&frame, request.message_type(), &Default::default()).unwrap(),
    ))
}

/// Starts a kadence server answering with canned responses; returns its id and event feed.
async fn spawn_kadence_server<T>(
    config: kadence::Config,
    client: &mut Swarm<T>,
) -> (PeerId, mpsc::UnboundedReceiver<Event>)
where
    T: libp2p::swarm::NetworkBehaviour + Send,
    T::ToSwarm: std::fmt::Debug,
{
    let mut server = kadence_swarm(config);
    server.listen().with_memory_addr_external().await;
    client.connect(&mut server).await;
    let id = *server.local_peer_id();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(serve(server, tx));
    (id, rx)
}

async fn next_outbound(
    swarm: &mut Swarm<kadence::Behaviour>,
) -> Result<Option<Response>, RequestError> {
    loop {
        if let Event::OutboundRequestFinished { result, .. } = swarm.next_behaviour_event().await {
            return result;
        }
    }
}

#[tokio::test]
async fn two_kadence_nodes_exchange_every_request_type() {
    let mut client = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    let (server, mut server_events) = spawn_kadence_server(server_config(), &mut client).await;
    let me = *client.local_peer_id();
    for request in one_of_each_request(me) {
        client.behaviour_mut().send_request(server, request.clone());
        let result = within(10, next_outbound(&mut client)).await;
        assert_protocol_answer(&request, result.unwrap(), me);
        let (kind, outcome) = within(10, async {
            loop {
                if let Some(Event::InboundRequest {
                    request,
                    peer,
                    outcome,
                }) = server_events.recv().await
                {
                    assert_eq!(peer, me);
                    return (request, outcome);
                }
            }
        })
        .await;
        assert_eq!(kind, request.message_type());
        let stored = matches!(
            request,
            Request::PutValue { .. } | Request::AddProvider { .. }
        );
        let expected = if stored {
            InboundOutcome::Stored
        } else {
            InboundOutcome::Answered
        };
        assert_eq!(outcome, expected);
    }
}

/// Counters of a hand-written server: streams accepted and requests read.
struct RawServer {
    id: PeerId,
    streams: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

/// How a hand-written server treats each stream.
#[derive(Clone, Copy, PartialEq)]
enum RawMode {
    /// Answers every request.
    Answer,
    /// Closes the stream after its first answer, as a go server does to a stream idle for a
    /// minute.
    AnswerThenClose,
    /// Reads requests and never answers.
    Silent,
}

/// A server speaking the protocol by hand on libp2p-stream.
async fn spawn_raw_server(client: &mut Swarm<kadence::Behaviour>, mode: RawMode) -> RawServer {
    let (mut raw, mut control) = raw_swarm();
    raw.listen().with_memory_addr_external().await;
    client.connect(&mut raw).await;
    let id = *raw.local_peer_id();
    let mut incoming = control.accept(TEST_PROTOCOL).unwrap();
    tokio::spawn(raw.loop_on_next());
    let streams = Arc::new(AtomicUsize::new(0));
    let requests = Arc::new(AtomicUsize::new(0));
    let (s, r) = (streams.clone(), requests.clone());
    tokio::spawn(async move {
        while let Some((_, mut stream)) = incoming.next().await {
            s.fetch_add(1, Ordering::SeqCst);
            let r = r.clone();
            tokio::spawn(async move {
                while let Ok(Some(frame)) = read_frame(&mut stream, MAX).await {
                    let request = decode_request(&frame, &Default::default()).unwrap();
                    r.fetch_add(1, Ordering::SeqCst);
                    if mode == RawMode::Silent {
                        continue;
                    }
                    if let Some(answer) = canned_answer(&request) {
                        let bytes = encode_response(&answer, b"");
                        write_frame(&mut stream, &bytes).await.unwrap();
                    }
                    if mode == RawMode::AnswerThenClose {
                        let _ = stream.close().await;
                        return;
                    }
                }
            });
        }
    });
    RawServer {
        id,
        streams,
        requests,
    }
}

#[tokio::test]
async fn outbound_requests_reuse_one_stream() {
    let mut client = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    let server = spawn_raw_server(&mut client, RawMode::Answer).await;
    for _ in 0..4 {
        client
            .behaviour_mut()
            .send_request(server.id, Request::Ping);
        let result = within(10, next_outbound(&mut client)).await;
        assert_eq!(result.unwrap(), Some(Response::Ping));
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    let streams = server.streams.load(Ordering::SeqCst);
    assert_eq!(streams, 1, "one stream carried every request");
}

#[tokio::test]
async fn a_kept_stream_closed_by_the_remote_is_replaced() {
    let mut client = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    let server = spawn_raw_server(&mut client, RawMode::AnswerThenClose).await;
    for _ in 0..4 {
        client
            .behaviour_mut()
            .send_request(server.id, Request::Ping);
        let result = within(10, next_outbound(&mut client)).await;
        assert_eq!(result.unwrap(), Some(Response::Ping), "no request fails");
    }
    assert_eq!(server.requests.load(Ordering::SeqCst), 4);
    assert_eq!(
        server.streams.load(Ordering::SeqCst),
        4,
        "a new stream each time"
    );
}

#[tokio::test]
async fn one_inbound_stream_serves_sequential_requests() {
    let (mut raw, mut control) = raw_swarm();
    let (server, mut events) = spawn_kadence_server(server_config(), &mut raw).await;
    let me = *raw.local_peer_id();
    tokio::spawn(raw.loop_on_next());
    let mut stream = control.open_stream(server, TEST_PROTOCOL).await.unwrap();
    let requests = one_of_each_request(me);
    for request in &requests {
        let answer = within(10, ask(&mut stream, request)).await.unwrap();
        assert_protocol_answer(request, answer, me);
    }
    stream.close().await.unwrap();
    let mut seen = 0;
    while seen < requests.len() {
        if let Event::InboundRequest { .. } = within(10, events.recv()).await.unwrap() {
            seen += 1;
        }
    }
}

#[tokio::test]
async fn idle_inbound_stream_is_closed_after_the_timeout() {
    let (mut raw, mut control) = raw_swarm();
    let idle = Duration::from_millis(300);
    let config = server_config().with_inbound_idle_timeout(idle);
    let (server, _events) = spawn_kadence_server(config, &mut raw).await;
    tokio::spawn(raw.loop_on_next());
    let mut stream = control.open_stream(server, TEST_PROTOCOL).await.unwrap();
    assert_eq!(
        ask(&mut stream, &Request::Ping).await.unwrap(),
        Some(Response::Ping)
    );
    let start = Instant::now();
    let end = within(5, read_frame(&mut stream, MAX)).await.unwrap();
    assert!(end.is_none(), "the server ended the stream");
    assert!(start.elapsed() >= idle - Duration::from_millis(50));
}

#[tokio::test]
async fn inbound_streams_beyond_the_cap_are_reset_and_none_is_left_open() {
    let (mut raw, control) = raw_swarm();
    let config = server_config().with_inbound_idle_timeout(Duration::from_secs(1));
    let cap = config.max_inbound_streams();
    let (server, mut events) = spawn_kadence_server(config, &mut raw).await;
    tokio::spawn(raw.loop_on_next());

    let opened = futures::future::join_all((0..100).map(|_| {
        let mut control = control.clone();
        async move { control.open_stream(server, TEST_PROTOCOL).await.unwrap() }
    }))
    .await;
    // Every stream asks at once; each gets an answer or a reset, never silence.
    let outcomes = within(
        20,
        futures::future::join_all(opened.into_iter().map(|mut stream| async move {
            let outcome =
                tokio::time::timeout(Duration::from_secs(10), ask(&mut stream, &Request::Ping))
                    .await
                    .expect("a stream was left hanging");
            (outcome, stream)
        })),
    )
    .await;
    let (served, refused): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(|(o, _)| o.is_ok());
    assert!(!served.is_empty());
    assert!(served.len() <= cap, "{} served, cap {cap}", served.len());
    assert_eq!(served.len() + refused.len(), 100);

    // The served streams stay open for more requests, then idle out: nothing is left open.
    for (_, mut stream) in served {
        let end = within(5, read_frame(&mut stream, MAX)).await;
        assert!(
            matches!(end, Ok(None)),
            "served stream closed after idling: {end:?}"
        );
    }
    let mut too_many = 0;
    while let Ok(event) = events.try_recv() {
        if let Event::InboundFailed {
            error: InboundError::TooManyStreams,
            ..
        } = event
        {
            too_many += 1;
        }
    }
    assert_eq!(too_many, refused.len());
}

#[tokio::test]
async fn malformed_frames_reset_only_their_stream() {
    let (mut raw, mut control) = raw_swarm();
    let (server, mut events) = spawn_kadence_server(server_config(), &mut raw).await;
    tokio::spawn(raw.loop_on_next());

    let mut good = control.open_stream(server, TEST_PROTOCOL).await.unwrap();
    let mut garbage = control.open_stream(server, TEST_PROTOCOL).await.unwrap();
    let mut oversized = control.open_stream(server, TEST_PROTOCOL).await.unwrap();

    // Unknown message type 9.
    write_frame(&mut garbage, &[0x08, 0x09]).await.unwrap();
    // A length prefix of 5 MiB, with no body behind it.
    let mut prefix = unsigned_varint::encode::u64_buffer();
    oversized
        .write_all(unsigned_varint::encode::u64(5 << 20, &mut prefix))
        .await
        .unwrap();
    oversized.flush().await.unwrap();

    // A reset reads as the end of the stream (yamux) or an error: never as a frame, never hangs.
    let garbage_end = within(10, read_frame(&mut garbage, MAX)).await;
    assert!(!matches!(garbage_end, Ok(Some(_))), "{garbage_end:?}");
    let oversized_end = within(10, read_frame(&mut oversized, MAX)).await;
    assert!(!matches!(oversized_end, Ok(Some(_))), "{oversized_end:?}");
    assert_eq!(
        within(10, ask(&mut good, &Request::Ping)).await.unwrap(),
        Some(Response::Ping),
        "the other stream still works"
    );
    let (mut invalid, mut too_large) = (false, false);
    while !(invalid && too_large) {
        match within(10, events.recv()).await.unwrap() {
            Event::InboundFailed {
                error: InboundError::InvalidRequest(_),
                ..
            } => invalid = true,
            Event::InboundFailed {
                error: InboundError::Frame(FrameError::TooLarge { .. }),
                ..
            } => too_large = true,
            _ => {}
        }
    }
}

#[tokio::test]
async fn unanswered_request_times_out() {
    let mut client = kadence_swarm(
        kadence::Config::new(TEST_PROTOCOL).with_request_timeout(Duration::from_millis(400)),
    );
    let server = spawn_raw_server(&mut client, RawMode::Silent).await;
    let start = Instant::now();
    client
        .behaviour_mut()
        .send_request(server.id, Request::Ping);
    let result = within(10, next_outbound(&mut client)).await;
    assert!(matches!(result, Err(RequestError::Timeout)), "{result:?}");
    assert!(start.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn requests_beyond_the_queue_fail_at_once() {
    let mut client = kadence_swarm(
        kadence::Config::new(TEST_PROTOCOL)
            .with_max_outbound_streams(1)
            .with_max_pending_requests(2),
    );
    let server = spawn_raw_server(&mut client, RawMode::Silent).await;
    for _ in 0..4 {
        client
            .behaviour_mut()
            .send_request(server.id, Request::Ping);
    }
    let first = within(5, next_outbound(&mut client)).await;
    assert!(matches!(first, Err(RequestError::QueueFull)), "{first:?}");
}

#[tokio::test]
async fn request_to_an_unreachable_peer_fails_with_a_dial_error() {
    let mut client = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    client
        .behaviour_mut()
        .send_request(PeerId::random(), Request::Ping);
    let result = within(10, next_outbound(&mut client)).await;
    assert!(
        matches!(result, Err(RequestError::DialFailed(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn writes_wait_for_the_applications_decision() {
    let mut client = kadence_swarm(kadence::Config::new(TEST_PROTOCOL));
    let mut server = kadence_swarm(server_config().with_manual_store_approval(true));
    server.listen().with_memory_addr_external().await;
    client.connect(&mut server).await;
    let server_id = *server.local_peer_id();

    for approve in [true, false] {
        let record = pk_record();
        client.behaviour_mut().send_request(
            server_id,
            Request::PutValue {
                record: record.clone(),
            },
        );
        // The server application sees the validated record first; nothing is answered yet.
        let decision = within(10, async {
            loop {
                tokio::select! {
                    event = server.next_behaviour_event() => {
                        if let Event::StoreRequest { id, request, .. } = event {
                            return (id, request);
                        }
                    }
                    event = client.next_behaviour_event() => {
                        let early = matches!(event, Event::OutboundRequestFinished { .. });
                        assert!(!early, "answered before the decision: {event:?}");
                    }
                }
            }
        })
        .await;
        let (id, kadence::StoreRequest::PutValue(stored)) = decision else {
            panic!("a PUT_VALUE")
        };
        assert_eq!(stored.value, record.value);
        if approve {
            server.behaviour_mut().approve_store(id).unwrap();
        } else {
            server.behaviour_mut().reject_store(id).unwrap();
        }
        assert!(
            server.behaviour_mut().approve_store(id).is_err(),
            "decided once"
        );
        let result = within(10, async {
            loop {
                tokio::select! {
                    _ = server.next_behaviour_event() => {}
                    result = next_outbound(&mut client) => return result,
                }
            }
        })
        .await;
        let now = std::time::SystemTime::now();
        let held = server
            .behaviour_mut()
            .store_mut()
            .get(&record.key, now)
            .unwrap();
        if approve {
            assert!(
                matches!(result, Ok(Some(Response::PutValue { .. }))),
                "{result:?}"
            );
            assert!(held.is_some());
        } else {
            assert!(result.is_err(), "the stream is reset: {result:?}");
            assert!(held.is_none());
        }
    }
}
