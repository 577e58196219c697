//! Server throughput: one DHT server (kadence, then libp2p-kad) flooded with FIND_NODE and
//! GET_PROVIDERS by C concurrent clients for a fixed time.
//!
//! `cargo bench --bench server [--features metrics] -- [--clients C] [--window W] [--seconds S]`
//! (with `metrics`, a third server: kadence recording its Prometheus metrics)
//!
//! The server runs alone on its own thread (a current-thread tokio runtime: its connection
//! tasks run there too), so its CPU time is measured exactly from
//! `/proc/thread-self/schedstat`. The clients run on a multi-thread runtime and speak the raw
//! protocol over libp2p-stream (one stream per client with W requests pipelined on it, so the
//! server never waits for a round trip), over TCP on loopback with noise and yamux. The clients
//! decode one answer in 16, which keeps them cheap enough for the server to be the
//! bottleneck. Whole-process CPU time (clients included) is reported too.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

#[path = "support/cpu.rs"]
mod cpu;

use cpu::{process_cpu_ns, thread_cpu_ns};
use futures::StreamExt;
use kadence::network::codec::{read_frame, write_frame};
use kadence::network::message::{decode_response, encode_request, Limits};
use kadence::{MessageType, Request, Response};
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol};
use libp2p_kad::store::RecordStore;
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/kad/1.0.0");
const TABLE_PEERS: usize = 200;
const PROVIDER_KEYS: usize = 256;
const PROVIDERS_PER_KEY: usize = 4;
const FIND_NODE_KEYS: usize = 1024;
const STREAMS_PER_CLIENT_SWARM: usize = 8;
const WARMUP: Duration = Duration::from_millis(500);
/// One answer in this many is decoded and checked by the clients.
const DECODE_EVERY: u64 = 16;
const MAX_FRAME: usize = 4 * 1024 * 1024;

#[derive(Clone, Copy, PartialEq)]
enum Impl {
    Kadence,
    /// kadence recording Prometheus metrics (the `metrics` feature): what they cost.
    #[cfg(feature = "metrics")]
    KadenceMetrics,
    Libp2pKad,
}

impl Impl {
    fn name(self) -> &'static str {
        match self {
            Impl::Kadence => "kadence",
            #[cfg(feature = "metrics")]
            Impl::KadenceMetrics => "kadence + metrics",
            Impl::Libp2pKad => "libp2p-kad",
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    FindNode,
    GetProviders,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::FindNode => "FIND_NODE",
            Kind::GetProviders => "GET_PROVIDERS",
        }
    }
}

/// What both servers hold: the same routing-table peers and provider records.
struct Fixture {
    peers: Vec<(PeerId, Multiaddr)>,
    providers: Vec<(Vec<u8>, PeerId, Multiaddr)>,
    provider_keys: Vec<Vec<u8>>,
    find_node_keys: Vec<Vec<u8>>,
}

/// A 34-byte sha2-256 multihash of `seed`.
fn multihash(seed: &str) -> Vec<u8> {
    let mut key = vec![0x12, 0x20];
    key.extend_from_slice(&Sha256::digest(seed.as_bytes()));
    key
}

fn loopback(port: u16) -> Multiaddr {
    Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Tcp(port))
}

impl Fixture {
    fn new() -> Self {
        let peers = (0..TABLE_PEERS)
            .map(|i| (PeerId::random(), loopback(20_000 + i as u16)))
            .collect();
        let provider_keys: Vec<_> = (0..PROVIDER_KEYS)
            .map(|i| multihash(&format!("provided {i}")))
            .collect();
        let mut providers = Vec::new();
        for (i, key) in provider_keys.iter().enumerate() {
            for j in 0..PROVIDERS_PER_KEY {
                let port = 30_000 + (i * PROVIDERS_PER_KEY + j) as u16;
                providers.push((key.clone(), PeerId::random(), loopback(port)));
            }
        }
        let find_node_keys = (0..FIND_NODE_KEYS)
            .map(|i| multihash(&format!("target {i}")))
            .collect();
        Self {
            peers,
            providers,
            provider_keys,
            find_node_keys,
        }
    }

    fn requests(&self, kind: Kind) -> Vec<Vec<u8>> {
        match kind {
            Kind::FindNode => self
                .find_node_keys
                .iter()
                .map(|key| encode_request(&Request::FindNode { key: key.clone() }))
                .collect(),
            Kind::GetProviders => self
                .provider_keys
                .iter()
                .map(|key| encode_request(&Request::GetProviders { key: key.clone() }))
                .collect(),
        }
    }

    fn kadence(&self, local: PeerId) -> kadence::Behaviour {
        let config = kadence::Config::new(PROTOCOL)
            .with_mode(Some(kadence::Mode::Server))
            .with_diversity_filter(None)
            .with_refresh_interval(None)
            .with_liveness_interval(Duration::from_secs(24 * 3600));
        let mut behaviour = kadence::Behaviour::new(local, config);
        for (peer, addr) in &self.peers {
            let _ = behaviour.add_address(*peer, addr.clone());
        }
        let now = SystemTime::now();
        let hour = Duration::from_secs(3600);
        for (key, provider, addr) in &self.providers {
            behaviour
                .store_mut()
                .add_provider(kadence::store::ProviderRecord {
                    key: key.clone(),
                    provider: *provider,
                    addrs: vec![addr.clone()],
                    received: now,
                    expires: now + hour,
                    addrs_expire: now + hour,
                })
                .expect("provider stored");
        }
        behaviour
    }

    fn libp2p_kad(&self, local: PeerId) -> libp2p_kad::Behaviour<libp2p_kad::store::MemoryStore> {
        let mut config = libp2p_kad::Config::new(PROTOCOL);
        config.set_periodic_bootstrap_interval(None);
        let store = libp2p_kad::store::MemoryStore::new(local);
        let mut behaviour = libp2p_kad::Behaviour::with_config(local, store, config);
        behaviour.set_mode(Some(libp2p_kad::Mode::Server));
        for (peer, addr) in &self.peers {
            behaviour.add_address(peer, addr.clone());
        }
        for (key, provider, addr) in &self.providers {
            let record = libp2p_kad::ProviderRecord::new(
                libp2p_kad::RecordKey::new(key),
                *provider,
                vec![addr.clone()],
            );
            behaviour
                .store_mut()
                .add_provider(record)
                .expect("provider stored");
        }
        behaviour
    }
}

/// On-CPU time of the calling thread, in nanoseconds.
enum Command {
    /// Server thread CPU time (ns) and routing-table size.
    Sample(oneshot::Sender<(u64, usize)>),
    Stop,
}

struct ServerHandle {
    addr: Multiaddr,
    commands: mpsc::UnboundedSender<Command>,
    thread: std::thread::JoinHandle<()>,
}

impl ServerHandle {
    async fn sample(&self) -> (u64, usize) {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Sample(tx)).expect("server up");
        rx.await.expect("server answers")
    }

    fn stop(self) {
        let _ = self.commands.send(Command::Stop);
        self.thread.join().expect("server thread");
    }
}

/// Starts a server swarm with the behaviour `make` builds, alone on a thread of its own.
fn spawn_server<B, M, L>(make: M, table_len: L) -> ServerHandle
where
    B: NetworkBehaviour,
    M: FnOnce(PeerId) -> B + Send + 'static,
    L: Fn(&mut Swarm<B>) -> usize + Send + 'static,
{
    let (addr_tx, addr_rx) = std::sync::mpsc::channel();
    let (commands, mut command_rx) = mpsc::unbounded_channel();
    // Named, so that a profiler can tell the server's samples from the clients'.
    let thread = std::thread::Builder::new()
        .name("dht-server".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            runtime.block_on(async move {
                let mut swarm = server_swarm(make);
                swarm.listen_on(loopback(0)).expect("listen");
                let addr = loop {
                    if let SwarmEvent::NewListenAddr { address, .. } =
                        swarm.select_next_some().await
                    {
                        break address.with(Protocol::P2p(*swarm.local_peer_id()));
                    }
                };
                addr_tx.send(addr).expect("main thread waits");
                loop {
                    tokio::select! {
                        _ = swarm.select_next_some() => {}
                        command = command_rx.recv() => match command {
                            Some(Command::Sample(reply)) => {
                                let _ = reply.send((thread_cpu_ns(), table_len(&mut swarm)));
                            }
                            Some(Command::Stop) | None => break,
                        },
                    }
                }
            });
        })
        .expect("server thread");
    let addr = addr_rx.recv().expect("server listens");
    ServerHandle {
        addr,
        commands,
        thread,
    }
}

fn server_swarm<B: NetworkBehaviour>(make: impl FnOnce(PeerId) -> B) -> Swarm<B> {
    libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|key: &Keypair| make(key.public().to_peer_id()))
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build()
}

/// A client swarm connected to the server; its event loop runs on the client runtime.
async fn client_swarm(server: &Multiaddr) -> libp2p_stream::Control {
    let mut swarm = libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp transport")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build();
    let control = swarm.behaviour().new_control();
    swarm.dial(server.clone()).expect("dial");
    loop {
        match swarm.select_next_some().await {
            SwarmEvent::ConnectionEstablished { .. } => break,
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => {}
        }
    }
    tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    control
}

#[derive(Default)]
struct Tally {
    ok: u64,
    errors: u64,
    /// Answers decoded and checked.
    decoded: u64,
    /// Closer peers plus providers in the decoded answers.
    entries: u64,
}

/// Keeps `window` requests in flight on one stream until `deadline`, then reads the rest of
/// the answers. Every answer is framed and counted; one in [`DECODE_EVERY`] is decoded and
/// checked, so that the clients stay cheap next to the server they load.
async fn client_loop(
    mut stream: libp2p::Stream,
    requests: Arc<Vec<Vec<u8>>>,
    expected: MessageType,
    mut next: usize,
    window: usize,
    deadline: Instant,
) -> (libp2p::Stream, Tally) {
    let limits = Limits::default();
    let mut tally = Tally::default();
    let mut in_flight = 0;
    let mut answered = 0u64;
    loop {
        while in_flight < window && Instant::now() < deadline {
            let request = &requests[next % requests.len()];
            next += 1;
            if write_frame(&mut stream, request).await.is_err() {
                tally.errors += 1;
                return (stream, tally);
            }
            in_flight += 1;
        }
        if in_flight == 0 {
            return (stream, tally);
        }
        let frame = match read_frame(&mut stream, MAX_FRAME).await {
            Ok(Some(frame)) => frame,
            _ => {
                tally.errors += 1;
                return (stream, tally);
            }
        };
        in_flight -= 1;
        answered += 1;
        if !answered.is_multiple_of(DECODE_EVERY) {
            tally.ok += 1;
            continue;
        }
        tally.decoded += 1;
        match decode_response(&frame, expected, &limits) {
            Ok(Response::FindNode { closer_peers }) => {
                tally.ok += 1;
                tally.entries += closer_peers.len() as u64;
            }
            Ok(Response::GetProviders {
                providers,
                closer_peers,
            }) => {
                tally.ok += 1;
                tally.entries += (providers.len() + closer_peers.len()) as u64;
            }
            _ => tally.errors += 1,
        }
    }
}

struct Measurement {
    imp: Impl,
    kind: Kind,
    ok: u64,
    errors: u64,
    decoded: u64,
    entries: u64,
    elapsed: Duration,
    server_cpu_ns: u64,
    process_cpu_ns: u64,
    table_len: usize,
}

impl Measurement {
    fn rps(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn per_request_us(&self, ns: u64) -> f64 {
        ns as f64 / 1000.0 / self.ok.max(1) as f64
    }
}

/// Runs every client loop until `deadline`, returning the streams and the summed tally.
async fn flood(
    streams: Vec<libp2p::Stream>,
    requests: &Arc<Vec<Vec<u8>>>,
    expected: MessageType,
    window: usize,
    deadline: Instant,
) -> (Vec<libp2p::Stream>, Tally) {
    let stride = requests.len() / streams.len().max(1);
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            tokio::spawn(client_loop(
                stream,
                requests.clone(),
                expected,
                i * stride,
                window,
                deadline,
            ))
        })
        .collect();
    let mut streams = Vec::new();
    let mut total = Tally::default();
    for task in tasks {
        let (stream, tally) = task.await.expect("client task");
        streams.push(stream);
        total.ok += tally.ok;
        total.errors += tally.errors;
        total.decoded += tally.decoded;
        total.entries += tally.entries;
    }
    (streams, total)
}

async fn bench_impl(
    imp: Impl,
    fixture: &Arc<Fixture>,
    clients: usize,
    window: usize,
    seconds: Duration,
) -> Vec<Measurement> {
    let server = match imp {
        Impl::Kadence => {
            let f = fixture.clone();
            spawn_server(
                move |local| f.kadence(local),
                |s: &mut Swarm<kadence::Behaviour>| s.behaviour().routing_table().len(),
            )
        }
        #[cfg(feature = "metrics")]
        Impl::KadenceMetrics => {
            let f = fixture.clone();
            spawn_server(
                move |local| {
                    let mut behaviour = f.kadence(local);
                    // The registry is only written to: nothing scrapes it during the run.
                    let mut registry = prometheus_client::registry::Registry::default();
                    behaviour.register_metrics(&mut registry);
                    behaviour
                },
                |s: &mut Swarm<kadence::Behaviour>| s.behaviour().routing_table().len(),
            )
        }
        Impl::Libp2pKad => {
            let f = fixture.clone();
            spawn_server(
                move |local| f.libp2p_kad(local),
                |s: &mut Swarm<libp2p_kad::Behaviour<libp2p_kad::store::MemoryStore>>| {
                    s.behaviour_mut().kbuckets().map(|b| b.num_entries()).sum()
                },
            )
        }
    };
    let swarms = clients.div_ceil(STREAMS_PER_CLIENT_SWARM);
    let mut controls = Vec::new();
    for _ in 0..swarms {
        controls.push(client_swarm(&server.addr).await);
    }
    let server_id = match server.addr.iter().last() {
        Some(Protocol::P2p(id)) => id,
        _ => unreachable!("the address ends with /p2p"),
    };
    let mut results = Vec::new();
    for kind in [Kind::FindNode, Kind::GetProviders] {
        let requests = Arc::new(fixture.requests(kind));
        let expected = match kind {
            Kind::FindNode => MessageType::FindNode,
            Kind::GetProviders => MessageType::GetProviders,
        };
        let mut streams = Vec::new();
        for i in 0..clients {
            let control = &mut controls[i % swarms];
            let stream = control
                .open_stream(server_id, PROTOCOL)
                .await
                .expect("stream opens");
            streams.push(stream);
        }
        let (streams, _) = flood(
            streams,
            &requests,
            expected,
            window,
            Instant::now() + WARMUP,
        )
        .await;
        let (server_before, table_len) = server.sample().await;
        let process_before = process_cpu_ns();
        let start = Instant::now();
        let (streams, tally) = flood(streams, &requests, expected, window, start + seconds).await;
        let elapsed = start.elapsed();
        let process_after = process_cpu_ns();
        let (server_after, _) = server.sample().await;
        drop(streams);
        results.push(Measurement {
            imp,
            kind,
            ok: tally.ok,
            errors: tally.errors,
            decoded: tally.decoded,
            entries: tally.entries,
            elapsed,
            server_cpu_ns: server_after.saturating_sub(server_before),
            process_cpu_ns: process_after.saturating_sub(process_before),
            table_len,
        });
    }
    server.stop();
    results
}

struct Args {
    clients: usize,
    window: usize,
    seconds: u64,
}

fn parse_args() -> Args {
    let mut clients = 16;
    let mut window = 8;
    let mut seconds = 5;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--clients" => {
                clients = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&c| c > 0)
                    .expect("--clients takes a positive number");
            }
            "--window" => {
                window = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&w| w > 0)
                    .expect("--window takes a positive number");
            }
            "--seconds" => {
                seconds = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&s| s > 0)
                    .expect("--seconds takes a positive number");
            }
            // `cargo bench` passes `--bench`; ignore it and anything else unknown.
            _ => {}
        }
    }
    Args {
        clients,
        window,
        seconds,
    }
}

fn main() {
    let Args {
        clients,
        window,
        seconds,
    } = parse_args();
    let fixture = Arc::new(Fixture::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("client runtime");
    let results = runtime.block_on(async {
        let mut results = Vec::new();
        let imps = [
            Impl::Kadence,
            #[cfg(feature = "metrics")]
            Impl::KadenceMetrics,
            Impl::Libp2pKad,
        ];
        for imp in imps {
            results.extend(
                bench_impl(imp, &fixture, clients, window, Duration::from_secs(seconds)).await,
            );
        }
        results
    });

    println!("# DHT server throughput");
    println!();
    let features = if cfg!(feature = "metrics") {
        " --features metrics"
    } else {
        ""
    };
    println!("command: `cargo bench --bench server{features} -- --clients {clients} --window {window} --seconds {seconds}`");
    println!(
        "clients: {clients} streams over {} connections (TCP loopback + noise + yamux), \
         {window} requests in flight on each, {seconds} s per implementation and request type (after {} ms warm-up)",
        clients.div_ceil(STREAMS_PER_CLIENT_SWARM),
        WARMUP.as_millis()
    );
    println!(
        "server: {TABLE_PEERS} peers added to the routing table, {PROVIDER_KEYS} provided keys \
         x {PROVIDERS_PER_KEY} providers; cores: {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| request | implementation | table peers | requests/s | vs libp2p-kad | \
         server CPU µs/req | process CPU µs/req | server thread busy | entries/answer | errors |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for m in &results {
        let baseline = results
            .iter()
            .find(|b| b.imp == Impl::Libp2pKad && b.kind.name() == m.kind.name())
            .map(Measurement::rps)
            .unwrap_or(f64::NAN);
        println!(
            "| {} | {} | {} | {:.0} | {:.2}x | {:.1} | {:.1} | {:.0}% | {:.1} | {} |",
            m.kind.name(),
            m.imp.name(),
            m.table_len,
            m.rps(),
            m.rps() / baseline,
            m.per_request_us(m.server_cpu_ns),
            m.per_request_us(m.process_cpu_ns),
            100.0 * m.server_cpu_ns as f64 / m.elapsed.as_nanos() as f64,
            m.entries as f64 / m.decoded.max(1) as f64,
            m.errors,
        );
    }
    println!();
    println!(
        "server CPU: on-CPU time of the server's thread (its swarm and connection tasks run on \
         a current-thread runtime there), from /proc/thread-self/schedstat. process CPU: \
         utime+stime of the whole process from /proc/self/stat (10 ms ticks), clients included, \
         so an upper bound for the server. A server thread busy near 100% means the server, \
         not the clients, is the bottleneck. entries/answer: closer peers + providers per decoded answer (one in {DECODE_EVERY} is decoded and checked)."
    );
}
