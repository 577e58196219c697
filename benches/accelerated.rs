//! The accelerated client's costs, in a network of N kadence nodes over the memory transport
//! (every node delays what it receives by `--delay-ms`, so a round trip costs twice that):
//!
//! `nice -n 19 cargo bench --bench accelerated -- [--nodes N] [--keys K] [--oneshot-keys C]
//! [--in-flight F] [--delay-ms D] [--seed S] [--skip-provide] [--skip-restart]`
//!
//! Defaults: 200 nodes, 100,000 keys, 10,000 one-shot provides with 50 in flight, 20 ms. The
//! table is printed as Markdown and written as JSON to `target/accelerated-bench.json`.
//!
//! What each number means:
//! - **Full table, bytes per peer**: heap (a counting global allocator) held by a `FullTable`
//!   filled by one `replace_with_crawl` with 10,000 and 100,000 random peers of 2 addresses
//!   (`/ip4/x/tcp/4001`, `/ip4/x/udp/4001/quic-v1`) or of a kubo server's 8 (TCP, QUIC,
//!   WebTransport with two certificate hashes and WebRTC, over IPv4 and IPv6), divided by the
//!   peers; the peak is the most heap held while it filled.
//! - **Node after its crawl**: live heap of the whole process once an accelerated node joined
//!   the idle network and its first crawl finished (2 s later), minus before it was built,
//!   divided by its full table's peers; beside it the same for a default node once its table
//!   filled, and the heap of a copy of the crawled table alone. Every node runs in this
//!   process, so the first two include what the others hold for their connections to it.
//! - **Restart**: an accelerated node with a `PersistentStore` crawls, stops (its store is
//!   closed and flushed), and starts again with the same key and data directory. From the
//!   moment its store is opened, the time until the first `get_closest_peers` whose
//!   `QueryStats::accelerated` is true: lookups run back to back until one is. "With the
//!   saved table" restarts on the same directory; "without" on a fresh one (it must crawl).
//! - **Providing K keys**: one client calls `start_providing` once per key (a `MemoryStore`)
//!   and the reprovide sweep announces them; wall time from the first call until every key's
//!   `last_provided` is set, ADD_PROVIDER messages (the sweep's reports, and as counted by
//!   the receivers), FIND_NODE requests the receivers got from the client meanwhile, and
//!   region lookups (one per `RegionReprovided`). (a) the default client, (b) the accelerated
//!   client after its crawl, in the same network one after the other, and (c) the
//!   accelerated client doing C one-shot `provide` calls with F in flight (the Kubo way),
//!   its time also scaled linearly to K.
//! - **Placement**: for 200 sampled keys of each client, how many of their 20 closest nodes
//!   (the provider aside) hold the client's provider record, read from their stores.

#[path = "support/counting_alloc.rs"]
mod counting_alloc;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use futures::{AsyncRead, AsyncWrite, StreamExt};
use futures_timer::Delay;
use kadence::key::Key;
use kadence::routing_table::KBucketTable;
use kadence::store::{PersistentStore, PersistentStoreConfig};
use kadence::{
    Event, FullTable, FullTableConfig, MemoryStoreConfig, MessageType, QueryResult, RoutingTable,
};
use libp2p::core::transport::MemoryTransport;
use libp2p::core::upgrade::Version;
use libp2p::core::Transport;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{NetworkBehaviour, Swarm, SwarmEvent};
use libp2p::{identify, Multiaddr, PeerId, StreamProtocol};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

use counting_alloc::live;

const PROTOCOL: StreamProtocol = StreamProtocol::new("/bench/kad/1.0.0");
const K: usize = 20;
const BOOTSTRAP_PEERS: usize = 3;
/// Sampled keys per client for the placement check.
const SAMPLE: usize = 200;
/// Longest wait for one phase (a crawl, a sweep of every key).
const PHASE_TIMEOUT: Duration = Duration::from_secs(900);

mod options {
    /// The command line.
    pub struct Options {
        pub nodes: usize,
        pub keys: usize,
        pub oneshot_keys: usize,
        pub in_flight: usize,
        pub delay_ms: u64,
        pub seed: u64,
        pub skip_provide: bool,
        pub skip_restart: bool,
    }

    impl Options {
        pub fn parse(args: &[String]) -> Result<Self, String> {
            let mut o = Self {
                nodes: 200,
                keys: 100_000,
                oneshot_keys: 10_000,
                in_flight: 50,
                delay_ms: 20,
                seed: 16,
                skip_provide: false,
                skip_restart: false,
            };
            let mut it = args.iter();
            while let Some(arg) = it.next() {
                let mut number = |name: &str| -> Result<u64, String> {
                    it.next()
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| format!("{name} needs a number"))
                };
                match arg.as_str() {
                    "--nodes" => o.nodes = number(arg)? as usize,
                    "--keys" => o.keys = number(arg)? as usize,
                    "--oneshot-keys" => o.oneshot_keys = number(arg)? as usize,
                    "--in-flight" => o.in_flight = number(arg)?.max(1) as usize,
                    "--delay-ms" => o.delay_ms = number(arg)?,
                    "--seed" => o.seed = number(arg)?,
                    "--skip-provide" => o.skip_provide = true,
                    "--skip-restart" => o.skip_restart = true,
                    // cargo bench passes this to every bench target.
                    "--bench" => {}
                    other => return Err(format!("unknown argument {other}")),
                }
            }
            // k peers for every table, and room for the bootstrap draws.
            if o.nodes < 24 {
                return Err("--nodes must be at least 24".into());
            }
            Ok(o)
        }

        pub fn command(&self) -> String {
            let mut c = format!(
                "cargo bench --bench accelerated -- --nodes {} --keys {} --oneshot-keys {} \
                 --in-flight {} --delay-ms {} --seed {}",
                self.nodes, self.keys, self.oneshot_keys, self.in_flight, self.delay_ms, self.seed
            );
            if self.skip_provide {
                c += " --skip-provide";
            }
            if self.skip_restart {
                c += " --skip-restart";
            }
            c
        }
    }
}
use options::Options;

/// SplitMix64: keys, addresses and bootstrap peers drawn from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn bytes(&mut self) -> [u8; 32] {
        let mut out = [0u8; 32];
        for c in out.chunks_mut(8) {
            c.copy_from_slice(&self.next().to_le_bytes());
        }
        out
    }
    fn keypair(&mut self) -> Keypair {
        Keypair::ed25519_from_bytes(self.bytes()).expect("ed25519 key")
    }
    /// A key shaped like a CID's sha2-256 multihash.
    fn content_key(&mut self) -> Vec<u8> {
        [&[0x12, 0x20][..], &self.bytes()].concat()
    }
}

// ---------------------------------------------------------------------------------------------
// The transport: memory connections whose reads are held back by the receiving node's delay.

/// `inner` with every chunk read handed out `delay` after it arrived.
struct Delayed<C> {
    inner: C,
    delay: Duration,
    /// Chunks received, with when; an empty chunk is the end of the stream.
    arrived: VecDeque<(Instant, Vec<u8>)>,
    ended: bool,
    timer: Option<(Instant, Delay)>,
}

impl<C: AsyncRead + Unpin> AsyncRead for Delayed<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        while !this.ended {
            let mut chunk = vec![0u8; 16 * 1024];
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => {
                    this.ended = true;
                    this.arrived.push_back((Instant::now(), Vec::new()));
                }
                Poll::Ready(Ok(n)) => {
                    chunk.truncate(n);
                    this.arrived.push_back((Instant::now(), chunk));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            let Some((at, data)) = this.arrived.front_mut() else {
                return Poll::Pending;
            };
            let due = *at + this.delay;
            let now = Instant::now();
            if now >= due {
                this.timer = None;
                if data.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                data.drain(..n);
                if data.is_empty() {
                    this.arrived.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            // One timer for the chunk at the front; a new front gets a new timer.
            if this.timer.as_ref().is_none_or(|(d, _)| *d != due) {
                this.timer = Some((due, Delay::new(due - now)));
            }
            let (_, timer) = this.timer.as_mut().expect("timer set above");
            if Pin::new(timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Delayed<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

// ---------------------------------------------------------------------------------------------
// Nodes: a swarm in its own task, driven by closures, reporting the clients' events.

#[derive(NetworkBehaviour)]
struct Peer {
    dht: kadence::Behaviour,
    identify: identify::Behaviour,
}

/// Inbound requests every node received from the watched peers (the clients), by type.
struct Tally {
    watched: Vec<PeerId>,
    counts: Vec<[AtomicU64; 6]>,
}

impl Tally {
    fn new(watched: Vec<PeerId>) -> Self {
        let counts = watched.iter().map(|_| Default::default()).collect();
        Self { watched, counts }
    }
    fn slot(kind: MessageType) -> usize {
        match kind {
            MessageType::PutValue => 0,
            MessageType::GetValue => 1,
            MessageType::AddProvider => 2,
            MessageType::GetProviders => 3,
            MessageType::FindNode => 4,
            MessageType::Ping => 5,
        }
    }
    fn record(&self, from: &PeerId, kind: MessageType) {
        if let Some(i) = self.watched.iter().position(|w| w == from) {
            self.counts[i][Self::slot(kind)].fetch_add(1, Ordering::Relaxed);
        }
    }
    fn get(&self, from: &PeerId, kind: MessageType) -> u64 {
        self.watched.iter().position(|w| w == from).map_or(0, |i| {
            self.counts[i][Self::slot(kind)].load(Ordering::Relaxed)
        })
    }
}

type Command = Box<dyn FnOnce(&mut Swarm<Peer>) + Send>;

struct Node {
    id: PeerId,
    commands: mpsc::UnboundedSender<Command>,
    /// The node's DHT events (operations, sweep, crawl), for the clients only.
    events: Option<mpsc::UnboundedReceiver<Event>>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Runs `f` on the node's swarm, in its task, and returns what it returned.
    async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Swarm<Peer>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |swarm| {
            let _ = tx.send(f(swarm));
        });
        self.commands.send(command).expect("node running");
        rx.await.expect("node answers")
    }

    /// The node's next DHT event, `None` after `timeout`.
    async fn event(&mut self, timeout: Duration) -> Option<Event> {
        let events = self.events.as_mut().expect("a client's events");
        tokio::time::timeout(timeout, events.recv()).await.ok()?
    }

    /// Waits for the node's crawl to finish: (crawl time, requests, peers in the table).
    async fn crawl_finished(&mut self) -> (Duration, u64, usize) {
        let deadline = Instant::now() + PHASE_TIMEOUT;
        while let Some(event) = self.event(deadline - Instant::now()).await {
            if let Event::CrawlFinished { stats, peers, .. } = event {
                return (stats.duration, stats.requests, peers);
            }
        }
        panic!("no crawl finished within {PHASE_TIMEOUT:?}");
    }

    /// Stops the node and waits until its swarm (and store) are dropped.
    async fn stop(self) {
        drop(self.commands);
        let _ = self.task.await;
    }
}

/// What one node is made of.
struct Spec<'a> {
    key: &'a Keypair,
    port: u64,
    delay: Duration,
    boot: Vec<(PeerId, Multiaddr)>,
    accelerated: bool,
    store: Option<PersistentStore>,
}

fn memory_addr(port: u64) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Memory(port))
}

fn config(accelerated: bool) -> kadence::Config {
    // Stores large enough for every key of the run: the bench measures the client, not a
    // server refusing records.
    let store = MemoryStoreConfig {
        max_provider_keys: 1 << 22,
        max_provider_bytes: 1 << 32,
        ..MemoryStoreConfig::default()
    };
    let config = kadence::Config::new(PROTOCOL)
        .with_mode(Some(kadence::Mode::Server))
        .with_memory_store(store);
    if accelerated {
        config.accelerated()
    } else {
        config
    }
}

/// Builds a node's swarm, listening (so that others can dial it before it runs).
fn build(spec: Spec<'_>) -> Swarm<Peer> {
    let key = spec.key;
    let local = key.public().to_peer_id();
    let delay = spec.delay;
    let transport = MemoryTransport::default()
        .map(move |conn, _| Delayed {
            inner: conn,
            delay,
            arrived: VecDeque::new(),
            ended: false,
            timer: None,
        })
        .upgrade(Version::V1)
        .authenticate(libp2p::noise::Config::new(key).expect("noise keys"))
        .multiplex(libp2p::yamux::Config::default())
        .timeout(Duration::from_secs(20))
        .boxed();
    let config = config(spec.accelerated);
    let dht = match spec.store {
        Some(store) => {
            let table = KBucketTable::new(local, config.kbuckets().clone());
            kadence::Behaviour::with_parts(local, config, table, store)
        }
        None => kadence::Behaviour::new(local, config),
    };
    let identify =
        identify::Behaviour::new(identify::Config::new("/bench/1.0.0".into(), key.public()));
    let mut swarm = Swarm::new(
        transport,
        Peer { dht, identify },
        local,
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(30)),
    );
    let addr = memory_addr(spec.port);
    swarm.listen_on(addr.clone()).expect("memory listen");
    swarm.add_external_address(addr);
    for (peer, addr) in spec.boot {
        swarm.behaviour_mut().dht.add_address(peer, addr);
    }
    swarm
}

/// Runs the swarm in its own task; `client` nodes hand their DHT events to the bench.
fn spawn(mut swarm: Swarm<Peer>, tally: Arc<Tally>, client: bool) -> Node {
    let id = *swarm.local_peer_id();
    let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
    let (events_tx, events) = mpsc::unbounded_channel();
    let task = tokio::spawn(async move {
        loop {
            let event = tokio::select! {
                command = rx.recv() => match command {
                    Some(command) => { command(&mut swarm); continue; }
                    None => break,
                },
                event = swarm.select_next_some() => event,
            };
            let SwarmEvent::Behaviour(PeerEvent::Dht(event)) = event else {
                continue;
            };
            match event {
                Event::InboundRequest { peer, request, .. } => tally.record(&peer, request),
                Event::QueryFinished { .. }
                | Event::RegionReprovided(_)
                | Event::CrawlFinished { .. }
                    if client =>
                {
                    let _ = events_tx.send(event);
                }
                _ => {}
            }
        }
    });
    Node {
        id,
        commands,
        events: client.then_some(events),
        task,
    }
}

// ---------------------------------------------------------------------------------------------
// 1. Memory per known peer.

/// A kubo server's addresses at `ip`, the first `count` of them: TCP and QUIC, then
/// WebTransport (two certificate hashes) and WebRTC, then the same over IPv6.
fn addresses(rng: &mut Rng, count: usize) -> Vec<Multiaddr> {
    let ip4 = std::net::Ipv4Addr::from(rng.next() as u32);
    let ip6 = std::net::Ipv6Addr::from(u128::from(rng.next()) << 64 | u128::from(rng.next()));
    let mut hash = || {
        let digest = rng.bytes();
        Protocol::Certhash(libp2p::multihash::Multihash::wrap(0x12, &digest).expect("32 bytes"))
    };
    let (h1, h2, h3) = (hash(), hash(), hash());
    let mut all = Vec::new();
    for ip in [Protocol::Ip4(ip4), Protocol::Ip6(ip6)] {
        let at = Multiaddr::empty().with(ip);
        let udp = at.clone().with(Protocol::Udp(4001));
        all.push(at.with(Protocol::Tcp(4001)));
        all.push(udp.clone().with(Protocol::QuicV1));
        all.push(
            udp.clone()
                .with(Protocol::QuicV1)
                .with(Protocol::WebTransport)
                .with(h1.clone())
                .with(h2.clone()),
        );
        all.push(udp.with(Protocol::WebRTCDirect).with(h3.clone()));
    }
    // 2 addresses: TCP and QUIC over IPv4.
    all.truncate(count);
    all
}

/// Heap held by a full table of `peers` random peers of `addrs` addresses each:
/// (bytes held, peak while filling, encoded address bytes).
fn table_heap(peers: usize, addrs: usize, seed: u64) -> (isize, isize, usize) {
    let mut rng = Rng(seed);
    let before = live();
    counting_alloc::reset_peak();
    let mut table = FullTable::new(PeerId::random(), FullTableConfig::default());
    // Drawn as they are taken: only the table's own copies stay.
    let crawl = (0..peers).map(|_| (PeerId::random(), addresses(&mut rng, addrs)));
    table.replace_with_crawl(crawl, Instant::now());
    let held = live() - before;
    let peak = counting_alloc::peak() - before;
    assert_eq!(table.len(), peers, "every peer taken");
    (held, peak, table.address_bytes())
}

/// Heap of a deep copy of `table` (addresses copied byte by byte, not shared).
fn copy_heap(table: &FullTable) -> isize {
    let before = live();
    let mut copy = FullTable::new(PeerId::random(), table.config().clone());
    let peers = table.iter().map(|(id, addrs)| {
        let owned = addrs
            .iter()
            .map(|a| Multiaddr::try_from(a.to_vec()).expect("valid address"))
            .collect::<Vec<_>>();
        (*id, owned)
    });
    copy.replace_with_crawl(peers, Instant::now());
    live() - before
}

// ---------------------------------------------------------------------------------------------
// The network.

struct Net {
    opts: Options,
    keys: Vec<Keypair>,
    /// The servers, in the order of `keys`.
    servers: Vec<Node>,
    tally: Arc<Tally>,
    /// Every live node's id, for the true closest peers.
    live: HashSet<PeerId>,
    rng: Rng,
}

impl Net {
    fn boot(&mut self, except: Option<usize>) -> Vec<(PeerId, Multiaddr)> {
        // Every server listens from the start, so any of them can be dialled.
        let n = self.opts.nodes;
        let mut picked = Vec::new();
        while picked.len() < BOOTSTRAP_PEERS {
            let j = (self.rng.next() % n as u64) as usize;
            if Some(j) != except && !picked.contains(&j) {
                picked.push(j);
            }
        }
        picked
            .into_iter()
            .map(|j| {
                (
                    self.keys[j].public().to_peer_id(),
                    memory_addr(j as u64 + 1),
                )
            })
            .collect()
    }

    fn delay(&self) -> Duration {
        Duration::from_millis(self.opts.delay_ms)
    }

    /// Starts the N servers and waits until each routing table holds k peers.
    async fn start(&mut self) {
        let n = self.opts.nodes;
        let swarms: Vec<Swarm<Peer>> = (0..n)
            .map(|i| {
                let boot = self.boot(Some(i));
                build(Spec {
                    key: &self.keys[i],
                    port: i as u64 + 1,
                    delay: self.delay(),
                    boot,
                    accelerated: false,
                    store: None,
                })
            })
            .collect();
        for swarm in swarms {
            self.live.insert(*swarm.local_peer_id());
            self.servers.push(spawn(swarm, self.tally.clone(), false));
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let mut short = 0;
            for s in &self.servers {
                if s.call(|sw| sw.behaviour().dht.routing_table().len()).await < K {
                    short += 1;
                }
            }
            if short == 0 || Instant::now() > deadline {
                eprintln!("accelerated bench: {n} servers up, {short} with fewer than {K} peers");
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// A client node (its events come to the bench) on `port`.
    fn client(&mut self, key: &Keypair, port: u64, accelerated: bool) -> Node {
        let boot = self.boot(None);
        let swarm = build(Spec {
            key,
            port,
            delay: self.delay(),
            boot,
            accelerated,
            store: None,
        });
        self.live.insert(*swarm.local_peer_id());
        spawn(swarm, self.tally.clone(), true)
    }

    /// The node with this id, if it is a server.
    fn server(&self, id: &PeerId) -> Option<&Node> {
        self.servers.iter().find(|s| s.id == *id)
    }

    /// The k live nodes closest to `key`, `provider` aside.
    fn true_closest(&self, key: &[u8], provider: &PeerId) -> Vec<PeerId> {
        let target = Key::new(key);
        let mut all: Vec<_> = self
            .live
            .iter()
            .filter(|p| *p != provider)
            .map(|p| (Key::from_peer(p).distance(&target), *p))
            .collect();
        all.sort();
        all.into_iter().take(K).map(|(_, p)| p).collect()
    }

    /// Of the sampled keys' k closest nodes, how many hold `provider`'s record, out of how
    /// many (clients among the closest are asked through `clients`).
    async fn placement(&self, provider: PeerId, keys: &[Vec<u8>], clients: &[&Node]) -> (u64, u64) {
        let mut asks: HashMap<PeerId, Vec<Vec<u8>>> = HashMap::new();
        let mut total = 0;
        for key in keys {
            for peer in self.true_closest(key, &provider) {
                asks.entry(peer).or_default().push(key.clone());
                total += 1;
            }
        }
        let mut held = 0;
        for (peer, keys) in asks {
            let node = self
                .server(&peer)
                .or_else(|| clients.iter().copied().find(|c| c.id == peer))
                .expect("a live node");
            held += node
                .call(move |swarm| {
                    let now = SystemTime::now();
                    let store = swarm.behaviour_mut().dht.store_mut();
                    keys.iter()
                        .filter(|k| {
                            store
                                .providers(k, now)
                                .is_ok_and(|rs| rs.iter().any(|r| r.provider == provider))
                        })
                        .count() as u64
                })
                .await;
        }
        (held, total)
    }
}

// ---------------------------------------------------------------------------------------------
// 2. From a restart to the first accelerated lookup.

/// What a start of the restarted node showed.
struct Restart {
    /// From opening the store to the end of the first accelerated lookup.
    first_accelerated: Duration,
    /// When its crawl finished, if it had to crawl before that lookup.
    crawl: Option<Duration>,
    /// Lookups run until one was accelerated.
    lookups: u32,
}

/// Starts an accelerated node with a persistent store at `path`.
fn persistent_node(net: &mut Net, key: &Keypair, port: u64, path: &std::path::Path) -> Node {
    let store =
        PersistentStore::open(path, PersistentStoreConfig::default()).expect("open the store");
    let boot = net.boot(None);
    let swarm = build(Spec {
        key,
        port,
        delay: net.delay(),
        boot,
        accelerated: true,
        store: Some(store),
    });
    spawn(swarm, net.tally.clone(), true)
}

/// Starts the node on `path` and runs lookups back to back until one is accelerated; the
/// node is stopped again.
async fn first_accelerated(
    net: &mut Net,
    key: &Keypair,
    port: u64,
    path: &std::path::Path,
) -> Restart {
    let start = Instant::now();
    let mut node = persistent_node(net, key, port, path);
    let mut crawl = None;
    let mut lookups = 0;
    loop {
        lookups += 1;
        let target = net.rng.content_key();
        let id = node
            .call(move |s| s.behaviour_mut().dht.get_closest_peers(target))
            .await;
        let accelerated = loop {
            let left = PHASE_TIMEOUT.saturating_sub(start.elapsed());
            match node.event(left).await {
                Some(Event::QueryFinished {
                    id: done, stats, ..
                }) if done == id => break stats.accelerated,
                Some(Event::CrawlFinished { .. }) => crawl = Some(start.elapsed()),
                Some(_) => {}
                None => panic!("no accelerated lookup within {PHASE_TIMEOUT:?}"),
            }
        };
        if accelerated {
            let first_accelerated = start.elapsed();
            node.stop().await;
            return Restart {
                first_accelerated,
                crawl,
                lookups,
            };
        }
    }
}

async fn restart(net: &mut Net, key: &Keypair, port: u64, report: &mut Report) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("node.redb");
    let mut node = persistent_node(net, key, port, &path);
    let (crawl, _, peers) = node.crawl_finished().await;
    node.stop().await;
    eprintln!("accelerated bench: restart node crawled {peers} peers in {crawl:.1?}");
    // Each life on its own port: the memory transport keeps a port taken once its swarm is
    // dropped (only `remove_listener` frees it).
    let saved = first_accelerated(net, key, port + 1, &path).await;
    let fresh = first_accelerated(net, key, port + 2, &dir.path().join("fresh.redb")).await;
    for (label, r) in [
        ("with the saved table", &saved),
        ("without (fresh data dir)", &fresh),
    ] {
        let note = match r.crawl {
            Some(c) => format!(
                "crawled again first ({:.2} s), {} lookups",
                c.as_secs_f64(),
                r.lookups
            ),
            None => format!("accelerated at once, {} lookup(s)", r.lookups),
        };
        report.row(
            &format!("restart -> first accelerated lookup, {label}"),
            format!("{:.2} s", r.first_accelerated.as_secs_f64()),
            note,
        );
    }
    let json = |r: &Restart| {
        json!({
            "first_accelerated_s": r.first_accelerated.as_secs_f64(),
            "crawled_again_s": r.crawl.map(|c| c.as_secs_f64()),
            "lookups": r.lookups,
        })
    };
    report.json["restart"] = json!({
        "first_crawl_s": crawl.as_secs_f64(),
        "first_crawl_peers": peers,
        "with_saved_table": json(&saved),
        "without_saved_table": json(&fresh),
    });
}

// ---------------------------------------------------------------------------------------------
// 3. Providing many keys.

/// What one client's providing cost.
#[derive(Default)]
struct Providing {
    keys: usize,
    wall: Duration,
    /// The sweep's reports: regions, ADD_PROVIDER messages written and failed.
    regions: u64,
    messages: u64,
    failures: u64,
    /// Counted by the receivers: ADD_PROVIDER and FIND_NODE from the client.
    add_provider: u64,
    find_node: u64,
    /// One-shot provides: finished with at least one peer storing, lookups accelerated.
    succeeded: u64,
    accelerated: u64,
    /// One-shot provides: each one's time, start to `QueryFinished`.
    latencies: Vec<Duration>,
    placement: (u64, u64),
}

impl Providing {
    /// The `q` quantile of the one-shot latencies, in ms.
    fn quantile_ms(&self, q: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1));
        l.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
    }
}

impl Providing {
    fn json(&self) -> Value {
        json!({
            "keys": self.keys,
            "wall_s": self.wall.as_secs_f64(),
            "keys_per_s": self.keys as f64 / self.wall.as_secs_f64(),
            "region_lookups": self.regions,
            "sweep_messages": self.messages,
            "sweep_failures": self.failures,
            "add_provider_received": self.add_provider,
            "find_node_received": self.find_node,
            "oneshot_succeeded": self.succeeded,
            "oneshot_accelerated": self.accelerated,
            "oneshot_p50_ms": self.quantile_ms(0.5),
            "oneshot_p95_ms": self.quantile_ms(0.95),
            "placement_held": self.placement.0,
            "placement_of": self.placement.1,
        })
    }
}

/// The point just after `key` in keyspace order, `None` past the end.
fn after(key: &[u8]) -> Option<Key> {
    let mut hash = *Key::new(key).as_bytes();
    for byte in hash.iter_mut().rev() {
        let (next, carry) = byte.overflowing_add(1);
        *byte = next;
        if !carry {
            return Some(Key::from_hash(hash));
        }
    }
    None
}

/// Provided keys of the node announced at least once.
async fn announced(node: &Node) -> usize {
    node.call(|swarm| {
        let dht = &mut swarm.behaviour_mut().dht;
        let mut from = Some(Key::from_hash([0; 32]));
        let mut done = 0;
        while let Some(start) = from.take() {
            let page = dht.provided_keys(&start, 10_000).expect("provided keys");
            done += page
                .iter()
                .filter(|s| s.key.last_provided.is_some())
                .count();
            if page.len() == 10_000 {
                from = page.last().and_then(|s| after(&s.key.key));
            }
        }
        done
    })
    .await
}

/// `start_providing` once per key, then the sweep until every key was announced.
async fn sweep(tally: &Tally, node: &mut Node, keys: &[Vec<u8>]) -> Providing {
    let (add0, find0) = (
        tally.get(&node.id, MessageType::AddProvider),
        tally.get(&node.id, MessageType::FindNode),
    );
    let mut p = Providing {
        keys: keys.len(),
        ..Providing::default()
    };
    let start = Instant::now();
    // In pages, so that the swarm keeps running between them as an application's would.
    for page in keys.chunks(1_000) {
        let page = page.to_vec();
        node.call(move |s| {
            for key in page {
                s.behaviour_mut()
                    .dht
                    .start_providing(key)
                    .expect("start providing");
            }
        })
        .await;
    }
    let (mut reported, mut last_report) = (0, start.elapsed());
    let mut next_check = Instant::now();
    loop {
        if let Some(Event::RegionReprovided(r)) = node.event(Duration::from_secs(1)).await {
            p.regions += 1;
            p.messages += r.messages as u64;
            p.failures += r.failures as u64;
            reported += r.keys;
            last_report = start.elapsed();
        }
        // The sweep's reports may count a key twice (added while its region ran): the store's
        // statuses have the last word.
        if reported >= keys.len() && Instant::now() >= next_check {
            if announced(node).await >= keys.len() {
                break;
            }
            next_check = Instant::now() + Duration::from_secs(2);
        }
        assert!(start.elapsed() < PHASE_TIMEOUT, "the sweep did not finish");
    }
    p.wall = last_report;
    // The last messages reach their receivers.
    tokio::time::sleep(Duration::from_secs(2)).await;
    p.add_provider = tally.get(&node.id, MessageType::AddProvider) - add0;
    p.find_node = tally.get(&node.id, MessageType::FindNode) - find0;
    p
}

/// One `provide` per key, `in_flight` at once, each done at its `QueryFinished`.
async fn oneshot(tally: &Tally, node: &mut Node, keys: &[Vec<u8>], in_flight: usize) -> Providing {
    let (add0, find0) = (
        tally.get(&node.id, MessageType::AddProvider),
        tally.get(&node.id, MessageType::FindNode),
    );
    let mut p = Providing {
        keys: keys.len(),
        ..Providing::default()
    };
    let start = Instant::now();
    let mut pending = HashSet::new();
    let (mut next, mut done) = (0, 0);
    while done < keys.len() {
        while pending.len() < in_flight && next < keys.len() {
            let key = keys[next].clone();
            next += 1;
            let id = node
                .call(move |s| s.behaviour_mut().dht.provide(key))
                .await
                .expect("provide");
            pending.insert(id);
        }
        match node.event(PHASE_TIMEOUT).await {
            Some(Event::QueryFinished { id, result, stats }) if pending.remove(&id) => {
                done += 1;
                p.succeeded += u64::from(matches!(result, QueryResult::Provide(Ok(n)) if n > 0));
                p.accelerated += u64::from(stats.accelerated);
                p.latencies.push(stats.duration());
            }
            Some(_) => {}
            None => panic!("a provide did not finish"),
        }
    }
    p.wall = start.elapsed();
    // Optimistic provides report before their last writes: let those land.
    tokio::time::sleep(Duration::from_secs(5)).await;
    p.add_provider = tally.get(&node.id, MessageType::AddProvider) - add0;
    p.find_node = tally.get(&node.id, MessageType::FindNode) - find0;
    p
}

/// A sample of `keys` for the placement check.
fn sample(keys: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let step = (keys.len() / SAMPLE).max(1);
    keys.iter().step_by(step).take(SAMPLE).cloned().collect()
}

async fn provide(net: &mut Net, d: &mut Node, a: &mut Node, report: &mut Report) {
    let (k, c) = (net.opts.keys, net.opts.oneshot_keys.min(net.opts.keys));
    let draw = |rng: &mut Rng, n: usize| (0..n).map(|_| rng.content_key()).collect::<Vec<_>>();
    let (keys_d, keys_a, keys_o) = (
        draw(&mut net.rng, k),
        draw(&mut net.rng, k),
        draw(&mut net.rng, c),
    );
    let tally = net.tally.clone();
    eprintln!("accelerated bench: default client providing {k} keys");
    let mut runs = Vec::new();
    let mut default = sweep(&tally, d, &keys_d).await;
    default.placement = net.placement(d.id, &sample(&keys_d), &[d, a]).await;
    runs.push(("(a) default client, sweep", default));
    eprintln!("accelerated bench: accelerated client providing {k} keys");
    assert!(a.call(|s| s.behaviour().dht.is_accelerated()).await);
    let mut acc = sweep(&tally, a, &keys_a).await;
    acc.placement = net.placement(a.id, &sample(&keys_a), &[d, a]).await;
    runs.push(("(b) accelerated client, sweep", acc));
    if c > 0 {
        eprintln!("accelerated bench: accelerated client, {c} one-shot provides");
        let mut one = oneshot(&tally, a, &keys_o, net.opts.in_flight).await;
        one.placement = net.placement(a.id, &sample(&keys_o), &[d, a]).await;
        runs.push(("(c) accelerated client, one-shot provide", one));
    }
    let base = runs[0].1.wall.as_secs_f64();
    for (label, p) in &runs {
        let secs = p.wall.as_secs_f64();
        let mut note = format!(
            "{:.0} keys/s, {:.2}x (a)'s time",
            p.keys as f64 / secs,
            secs * (k as f64 / p.keys as f64) / base
        );
        if p.keys < k {
            note += &format!(
                "; {} keys, scaled to {k}: {:.1} s",
                p.keys,
                secs * k as f64 / p.keys as f64
            );
        }
        if label.contains("one-shot") {
            note += &format!(
                "; {} in flight, {} succeeded, {} accelerated, each p50 {:.0} ms p95 {:.0} ms",
                net.opts.in_flight,
                p.succeeded,
                p.accelerated,
                p.quantile_ms(0.5),
                p.quantile_ms(0.95)
            );
        }
        report.row(&format!("{label}: wall time"), format!("{secs:.1} s"), note);
        let sweep_note = if p.regions > 0 {
            format!(
                "sweep reports: {} messages, {} failed; {} region lookups",
                p.messages, p.failures, p.regions
            )
        } else {
            "no sweep: a lookup per key".to_string()
        };
        report.row(
            &format!("{label}: ADD_PROVIDER / FIND_NODE received"),
            format!("{} / {}", p.add_provider, p.find_node),
            sweep_note,
        );
        report.row(
            &format!("{label}: placement"),
            format!("{:.3}", p.placement.0 as f64 / p.placement.1.max(1) as f64),
            format!(
                "{} of the {} true-closest slots of {SAMPLE} sampled keys hold the record",
                p.placement.0, p.placement.1
            ),
        );
    }
    report.json["provide"] = json!({
        "store": "MemoryStore",
        "runs": runs.iter().map(|(l, p)| {
            let mut v = p.json();
            v["label"] = json!(l);
            v
        }).collect::<Vec<_>>(),
    });
}

// ---------------------------------------------------------------------------------------------
// The report and the run.

struct Report {
    rows: Vec<[String; 3]>,
    json: Value,
}

impl Report {
    fn row(&mut self, metric: &str, value: String, note: String) {
        eprintln!("accelerated bench: {metric}: {value} ({note})");
        self.rows.push([metric.to_string(), value, note]);
    }

    fn print(&self) {
        println!("| measure | value | notes |");
        println!("|---|---:|---|");
        for [m, v, n] in &self.rows {
            println!("| {m} | {v} | {n} |");
        }
    }
}

fn memory(report: &mut Report) {
    let mut rows = Vec::new();
    for (peers, addrs) in [(10_000, 2), (100_000, 2), (10_000, 8), (100_000, 8)] {
        let (held, peak, addr_bytes) = table_heap(peers, addrs, peers as u64 + addrs as u64);
        let per = held as f64 / peers as f64;
        report.row(
            &format!("full table, {peers} peers x {addrs} addresses: bytes per peer"),
            format!("{per:.0}"),
            format!(
                "{:.1} MB held, {:.1} MB peak while filling, {:.0} encoded address bytes per peer",
                held as f64 / 1e6,
                peak as f64 / 1e6,
                addr_bytes as f64 / peers as f64
            ),
        );
        rows.push(json!({
            "peers": peers, "addrs": addrs, "bytes": held, "peak": peak,
            "bytes_per_peer": per, "address_bytes": addr_bytes,
        }));
    }
    report.json["full_table"] = json!(rows);
}

/// Waits until the node's k-bucket table holds `peers` peers (or a minute passed).
async fn table_filled(node: &Node, peers: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let len = node.call(|s| s.behaviour().dht.routing_table().len()).await;
        if len >= peers || Instant::now() > deadline {
            return len;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn network(opts: Options, report: &mut Report) {
    let n = opts.nodes;
    let mut rng = Rng(opts.seed);
    let keys: Vec<Keypair> = (0..n).map(|_| rng.keypair()).collect();
    let (kd, ka, kr) = (rng.keypair(), rng.keypair(), rng.keypair());
    let ids = [&kd, &ka, &kr].map(|k| k.public().to_peer_id());
    let mut net = Net {
        opts,
        keys,
        servers: Vec::new(),
        tally: Arc::new(Tally::new(ids.to_vec())),
        live: HashSet::new(),
        rng,
    };
    let started = Instant::now();
    net.start().await;
    report.json["network_settled_s"] = json!(started.elapsed().as_secs_f64());
    // Quiet before measuring: the bootstrap lookups are over.
    tokio::time::sleep(Duration::from_secs(3)).await;

    let before = live();
    let mut d = net.client(&kd, n as u64 + 1, false);
    let d_peers = table_filled(&d, K).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d_heap = live() - before;

    let before = live();
    let mut a = net.client(&ka, n as u64 + 2, true);
    let (crawl, requests, peers) = a.crawl_finished().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let a_heap = live() - before;
    let copy = a
        .call(|s| copy_heap(s.behaviour().dht.full_table().expect("accelerated")))
        .await;
    report.row(
        &format!("accelerated node after its crawl of {n}: heap per table peer"),
        format!("{:.0}", a_heap as f64 / peers as f64),
        format!(
            "{:.2} MB for {peers} peers (crawl {:.1} s, {requests} requests); the table alone {:.0} B/peer",
            a_heap as f64 / 1e6,
            crawl.as_secs_f64(),
            copy as f64 / peers as f64
        ),
    );
    report.row(
        "default node once its table filled: heap per table peer",
        format!("{:.0}", d_heap as f64 / d_peers as f64),
        format!("{:.2} MB for {d_peers} k-bucket peers", d_heap as f64 / 1e6),
    );
    report.json["node"] = json!({
        "accelerated": { "heap": a_heap, "peers": peers, "table_copy_heap": copy,
            "crawl_s": crawl.as_secs_f64(), "crawl_requests": requests },
        "default": { "heap": d_heap, "peers": d_peers },
    });

    if !net.opts.skip_restart {
        restart(&mut net, &kr, n as u64 + 10, report).await;
    }
    if !net.opts.skip_provide {
        provide(&mut net, &mut d, &mut a, report).await;
    }
    for node in [d, a].into_iter().chain(std::mem::take(&mut net.servers)) {
        node.stop().await;
    }
}

fn main() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opts = Options::parse(&args).unwrap_or_else(|e| {
        eprintln!("accelerated bench: {e}");
        std::process::exit(2);
    });
    counting_alloc::COUNTING.store(true, Ordering::Relaxed);
    let command = opts.command();
    let wall = Instant::now();
    let mut report = Report {
        rows: Vec::new(),
        json: json!({ "command": command, "nodes": opts.nodes, "delay_ms": opts.delay_ms }),
    };
    memory(&mut report);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(network(opts, &mut report));
    runtime.shutdown_timeout(Duration::from_secs(1));
    report.json["wall_s"] = json!(wall.elapsed().as_secs_f64());

    println!("\n`{command}` ({:.0} s)\n", wall.elapsed().as_secs_f64());
    report.print();
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/accelerated-bench.json");
    let text = serde_json::to_string_pretty(&report.json).expect("json");
    std::fs::write(&path, text).expect("write json");
    println!("\nwrote {}", path.display());
}
