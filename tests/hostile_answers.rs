//! A hostile client against a kadence node's answers (issue 14, item 3): a GET_PROVIDERS or
//! FIND_NODE of some 40 bytes must not draw megabytes, answers the client never reads must not
//! pile up in the node's memory, and requests are limited apart from responses.

mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::time::{Duration, SystemTime};

use common::*;
use futures::AsyncWriteExt;
use hostile::*;
use kadence::network::codec::{read_frame, write_frame};
use kadence::network::message::encode_request;
use kadence::store::ProviderRecord;
use kadence::Request;
use libp2p::{Multiaddr, PeerId};

/// The largest frame the hostile client reads: what deployed peers accept.
const MAX: usize = 4 << 20;

/// The key the providers are stored under: a sha2-256 multihash, as on the public network.
fn popular_key() -> Vec<u8> {
    provider_key(42)
}

/// Fills the victim's store with 256 providers of `popular_key`, each with an 8 KiB entry's
/// worth of addresses (about 800), as a store holds them when filled through its API or before
/// the address cap.
async fn store_fat_providers(victim: &Victim) {
    victim
        .run(|swarm| {
            let now = SystemTime::now();
            let store = swarm.behaviour_mut().store_mut();
            for _ in 0..256 {
                store
                    .add_provider(ProviderRecord {
                        key: popular_key(),
                        provider: PeerId::random(),
                        addrs: fat_short_addrs(),
                        received: now,
                        expires: now + Duration::from_secs(3600),
                        addrs_expire: now + Duration::from_secs(3600),
                    })
                    .unwrap();
            }
        })
        .await;
}

/// 256 peers each announce themselves as providers of `popular_key` with an 8 KiB entry of
/// about 800 addresses: the attack as the issue ran it.
async fn announce_fat_providers(victim: &Victim) -> Vec<RawPeer> {
    let mut peers = Vec::new();
    for _ in 0..256 {
        let peer = RawPeer::dialing(victim).await;
        peer.announce([popular_key()], &fat_short_addrs()).await;
        peers.push(peer);
    }
    victim
        .wait_for(60, "the announcements", |t| {
            t.stored.values().sum::<usize>() == 256
        })
        .await;
    peers
}

/// Sends `request` on `stream` and returns the size of the request frame and of the answer
/// frame (prefixes included).
async fn sizes(stream: &mut libp2p::Stream, request: &Request) -> (usize, usize) {
    let body = encode_request(request);
    write_frame(stream, &body).await.unwrap();
    let answer = within(30, read_frame(stream, MAX))
        .await
        .expect("answered")
        .expect("a frame");
    let prefix = |n: usize| unsigned_varint::encode::usize(n, &mut Default::default()).len();
    (
        body.len() + prefix(body.len()),
        answer.len() + prefix(answer.len()),
    )
}

/// Item 3: 256 providers of about 8 KiB each on one key made a 39-byte GET_PROVIDERS draw a
/// 2.06 MB answer (52,796 times its size); 20 routing-table peers with 16 long addresses each
/// made FIND_NODE answers of 160 KB. Answers now stay within the answer size (64 KiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_stay_small_whatever_the_node_holds() {
    let victim = Victim::start(server_config()).await;
    store_fat_providers(&victim).await;
    // Routing-table peers with as many long addresses as the table keeps.
    victim
        .run(|swarm| {
            for _ in 0..20 {
                let peer = PeerId::random();
                for i in 0..16 {
                    let addr: Multiaddr = format!("/dns4/{}.example/tcp/{i}", "b".repeat(470))
                        .parse()
                        .unwrap();
                    let _ = swarm.behaviour_mut().add_address(peer, addr);
                }
            }
        })
        .await;
    let client = RawPeer::dialing(&victim).await;
    let mut stream = client.stream().await;

    let (request, answer) = sizes(&mut stream, &Request::GetProviders { key: popular_key() }).await;
    let ratio = answer / request;
    eprintln!("GET_PROVIDERS: {request}-byte request, {answer}-byte answer ({ratio}x)");
    assert!(answer <= 64 * 1024 + 64, "{answer}-byte answer");
    assert!(ratio <= 1_700, "amplification {ratio}x");

    let (request, answer) = sizes(&mut stream, &Request::FindNode { key: popular_key() }).await;
    let ratio = answer / request;
    eprintln!("FIND_NODE: {request}-byte request, {answer}-byte answer ({ratio}x)");
    assert!(answer <= 64 * 1024 + 64, "{answer}-byte answer");
    assert!(ratio <= 1_700, "amplification {ratio}x");
}

/// Item 3: 256 peers announce the fat key, then a client opens many streams, asks for it again
/// and again on each, and never reads. Before, each unread 2 MB answer held about 10 MiB of the node's heap until the
/// 10 s timeout: 64 of them over 2 connections took 653 MiB. Now the answers are small, and
/// the bytes a connection leaves unread are bounded (1 MiB): past that its streams are reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_answers_do_not_pile_up_in_the_nodes_heap() {
    const CONNECTIONS: usize = 2;
    const STREAMS: usize = 32;
    const REQUESTS: usize = 8;
    let victim = Victim::start(server_config()).await;
    let providers = announce_fat_providers(&victim).await;
    let mut clients = Vec::new();
    for _ in 0..CONNECTIONS {
        clients.push(RawPeer::dialing(&victim).await);
    }
    // Streams open before the measurement starts: what they cost is the connection's.
    let mut streams = Vec::new();
    for client in &clients {
        for _ in 0..STREAMS {
            streams.push(client.stream().await);
        }
    }
    let request = encode_request(&Request::GetProviders { key: popular_key() });
    // One answer read first: what the first read of a record allocates once stays with the
    // store, not with the answers.
    let mut warm_up = providers[0].stream().await;
    write_frame(&mut warm_up, &request).await.unwrap();
    within(30, read_frame(&mut warm_up, MAX)).await.unwrap();
    let before = victim.heap();
    victim.reset_peak();
    // Each stream asks REQUESTS times at once and never reads an answer.
    for stream in &mut streams {
        for _ in 0..REQUESTS {
            write_frame(stream, &request).await.unwrap();
        }
        stream.flush().await.unwrap();
    }
    // Every stream's answers stall: those past the connection's bound are reset at once, the
    // others when the write times out.
    victim
        .wait_for(60, "the unread answers to end", |t| {
            t.failures("unread") + t.failures("write-timeout") >= CONNECTIONS * STREAMS / 2
        })
        .await;
    let peak = victim.peak() - before;
    let tally = victim.tally().await;
    eprintln!(
        "peak victim heap over {} unread streams: {peak} bytes; {} answered; failures {:?}",
        streams.len(),
        tally.answered_total(),
        tally.failed
    );
    assert!(tally.answered_total() >= streams.len(), "{tally:?}");
    // What may stay: the connections' unsent answers (1 MiB each) and what yamux buffers
    // itself for a slow socket (at most ten 16 KiB frames per stream).
    assert!(peak <= 24 << 20, "the node's heap grew by {peak} bytes");
    drop(streams);
}

/// Item 3: requests are limited apart from responses. A GET_VALUE with a 100 KiB key is refused
/// from its length prefix (before, anything up to 4 MiB was read and answered), while the
/// largest legitimate request, a PUT_VALUE of a 10 KiB IPNS record, is stored and echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_limited_apart_from_answers() {
    let victim = Victim::start(server_config()).await;
    let client = RawPeer::dialing(&victim).await;

    let mut stream = client.stream().await;
    let huge = Request::GetValue {
        key: vec![b'k'; 100 * 1024],
    };
    // The victim refuses from the length prefix, resets the stream and may close the idle
    // connection before the 100 KiB are written: a failed write is that refusal too (seen once
    // in a CI run), and the victim's own tally below says it refused.
    if write_frame(&mut stream, &encode_request(&huge))
        .await
        .is_ok()
    {
        let end = within(30, read_frame(&mut stream, MAX)).await;
        assert!(
            !matches!(end, Ok(Some(_))),
            "a 100 KiB request was answered"
        );
    }
    victim
        .wait_for(30, "the refusal", |t| {
            t.failed.keys().any(|f| f.contains("exceeds the maximum"))
        })
        .await;

    let record = largest_ipns_record();
    assert!(record.value.len() > 10_000, "{}", record.value.len());
    let mut stream = client.stream().await;
    let put = Request::PutValue {
        record: record.clone(),
    };
    write_frame(&mut stream, &encode_request(&put))
        .await
        .unwrap();
    let echo = within(30, read_frame(&mut stream, MAX)).await;
    assert!(matches!(echo, Ok(Some(_))), "not echoed: {echo:?}");
}

/// An IPNS record of nearly the 10 KiB the format allows.
fn largest_ipns_record() -> kadence::Record {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let name = keypair.public().to_peer_id();
    let mut best = None;
    // The largest path that still signs into at most 10 KiB.
    let (mut low, mut high) = (0usize, 10 * 1024);
    while low < high {
        let mid = (low + high).div_ceil(2);
        let value = format!("/ipfs/bafkqaaa/{}", "p".repeat(mid));
        match kadence::ipns::IpnsRecord::builder(value)
            .sequence(1)
            .v1_compatible(false)
            .sign(&keypair)
        {
            Ok(record) => {
                best = Some(record);
                low = mid;
            }
            Err(_) => high = mid - 1,
        }
    }
    best.expect("a record signs").to_dht_record(&name)
}
