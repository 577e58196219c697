//! A kadence node under attack, on a thread of its own whose heap is counted, and raw
//! `/kadence-test/kad/1.0.0` peers over TCP to attack it with. Only the hostile tests include
//! this file (`#[path]`): it installs the binary's global allocator.
#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use kadence::network::codec::write_frame;
use kadence::network::message::encode_request;
use kadence::{Behaviour, Config, Event, InboundError, InboundOutcome, Request};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{Stream, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use libp2p_swarm_test::SwarmExt;
use tokio::sync::{mpsc, oneshot};

use super::common::TEST_PROTOCOL;

// ---------------------------------------------------------------------------------------------
// Heap counting: what each victim's thread allocates and frees, in a slot of its own, so that
// victims of tests running at once in this process are counted apart.

const SLOTS: usize = 64;

thread_local! {
    /// The counting slot of this thread; 0 for threads that are not counted.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}
static LIVE: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
static PEAK: [AtomicIsize; SLOTS] = [const { AtomicIsize::new(0) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(1);

struct ThreadCounting;

fn slot() -> usize {
    // `try_with`: an allocation during the thread's teardown is simply not counted.
    SLOT.try_with(Cell::get).unwrap_or(0)
}

fn grow(slot: usize, bytes: isize) {
    let live = LIVE[slot].fetch_add(bytes, Ordering::Relaxed) + bytes;
    PEAK[slot].fetch_max(live, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are updated on the side.
unsafe impl GlobalAlloc for ThreadCounting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        let slot = slot();
        if !ptr.is_null() && slot != 0 {
            grow(slot, layout.size() as isize);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        let slot = slot();
        if !ptr.is_null() && slot != 0 {
            grow(slot, layout.size() as isize);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        let slot = slot();
        if slot != 0 {
            LIVE[slot].fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        let slot = slot();
        if !new.is_null() && slot != 0 {
            grow(slot, new_size as isize - layout.size() as isize);
        }
        new
    }
}

#[global_allocator]
static GLOBAL: ThreadCounting = ThreadCounting;

// ---------------------------------------------------------------------------------------------
// The victim.

/// What the victim did with the requests it got, per sending peer, counted on its own thread.
/// Counts only, so that copying it costs next to no heap on the victim's thread.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub answered: HashMap<PeerId, usize>,
    pub stored: HashMap<PeerId, usize>,
    pub rejected: HashMap<PeerId, usize>,
    /// Why writes were rejected, with how many times each.
    pub rejections: HashMap<String, usize>,
    /// Inbound stream failures, by kind, with how many times each.
    pub failed: HashMap<String, usize>,
}

impl Tally {
    pub fn stored_by(&self, peer: &PeerId) -> usize {
        self.stored.get(peer).copied().unwrap_or(0)
    }

    pub fn rejected_by(&self, peer: &PeerId) -> usize {
        self.rejected.get(peer).copied().unwrap_or(0)
    }

    /// Writes of `peer` the victim decided on, stored or not.
    pub fn decided_for(&self, peer: &PeerId) -> usize {
        self.stored_by(peer) + self.rejected_by(peer)
    }

    pub fn answered_total(&self) -> usize {
        self.answered.values().sum()
    }

    /// Inbound failures of a kind (`"unread"`, `"write-timeout"`, ...).
    pub fn failures(&self, kind: &str) -> usize {
        self.failed.get(kind).copied().unwrap_or(0)
    }
}

type Command = Box<dyn FnOnce(&mut Swarm<Behaviour>, &Tally) + Send>;
type Check = Box<dyn Fn(&Tally) -> bool + Send>;

/// A kadence server over TCP on 127.0.0.1, run on its own thread (a current-thread runtime,
/// so its connections run there too), which is the only thread whose heap is counted.
pub struct Victim {
    pub id: PeerId,
    pub addr: Multiaddr,
    commands: mpsc::UnboundedSender<Command>,
    slot: usize,
}

impl Victim {
    /// A victim with the default stores.
    pub async fn start(config: Config) -> Victim {
        Self::start_with(move |id| Behaviour::new(id, config)).await
    }

    /// A victim whose behaviour `make` builds, on the victim's thread, for its peer id.
    pub async fn start_with(make: impl FnOnce(PeerId) -> Behaviour + Send + 'static) -> Victim {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (commands, rx) = mpsc::unbounded_channel();
        let slot = NEXT_SLOT.fetch_add(1, Ordering::Relaxed);
        assert!(slot < SLOTS, "more victims than counting slots");
        std::thread::spawn(move || {
            SLOT.with(|s| s.set(slot));
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(run_victim(make, ready_tx, rx));
        });
        let (id, addr) = ready_rx.await.expect("victim started");
        Victim {
            id,
            addr,
            commands,
            slot,
        }
    }

    /// Heap bytes live on the victim's thread: allocated there and not freed there since.
    /// (Memory handed to another thread and freed there stays counted, so this can only
    /// over-count; the tally and the commands are built to move next to nothing.)
    pub fn heap(&self) -> isize {
        LIVE[self.slot].load(Ordering::Relaxed)
    }

    /// The highest [`Victim::heap`] since the last [`Victim::reset_peak`].
    pub fn peak(&self) -> isize {
        PEAK[self.slot].load(Ordering::Relaxed)
    }

    /// Starts a new peak from the current heap.
    pub fn reset_peak(&self) {
        PEAK[self.slot].store(self.heap(), Ordering::Relaxed);
    }

    /// Runs `op` on the victim's swarm, on its thread.
    pub async fn run<R: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Swarm<Behaviour>) -> R + Send + 'static,
    ) -> R {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |swarm, _| {
            let _ = tx.send(op(swarm));
        });
        self.commands.send(command).expect("victim running");
        rx.await.expect("victim answered")
    }

    /// What the victim did so far.
    pub async fn tally(&self) -> Tally {
        let (tx, rx) = oneshot::channel();
        let command: Command = Box::new(move |_, tally| {
            let _ = tx.send(tally.clone());
        });
        self.commands.send(command).expect("victim running");
        rx.await.expect("victim answered")
    }

    /// Waits, up to `secs` seconds, until the victim's tally satisfies `done` (checked on the
    /// victim's thread, so that waiting costs its heap nothing).
    pub async fn wait_for(
        &self,
        secs: u64,
        what: &str,
        done: impl Fn(&Tally) -> bool + Send + Sync + 'static,
    ) {
        let done = std::sync::Arc::new(done);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let check: Check = {
                let done = done.clone();
                Box::new(move |tally| done(tally))
            };
            let (tx, rx) = oneshot::channel();
            let command: Command = Box::new(move |_, tally| {
                let _ = tx.send(check(tally));
            });
            self.commands.send(command).expect("victim running");
            if rx.await.expect("victim answered") {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!("timed out waiting for {what}: {:?}", self.tally().await);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Makes the victim dial `peer` at `addr`: the connection's remote address is then `addr`
    /// (a TCP dialler's own address is always 127.0.0.1 on loopback).
    pub async fn dial(&self, peer: PeerId, addr: Multiaddr) {
        self.run(move |swarm| {
            swarm
                .dial(DialOpts::peer_id(peer).addresses(vec![addr]).build())
                .expect("dial started")
        })
        .await;
    }
}

async fn run_victim(
    make: impl FnOnce(PeerId) -> Behaviour,
    ready: oneshot::Sender<(PeerId, Multiaddr)>,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let mut swarm = tcp_swarm(libp2p::identity::Keypair::generate_ed25519(), |key| {
        make(key.public().to_peer_id())
    });
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
            break address;
        }
    };
    let _ = ready.send((*swarm.local_peer_id(), addr));
    let mut tally = Tally::default();
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else { return };
                command(&mut swarm, &tally);
            }
            event = swarm.select_next_some() => {
                if let SwarmEvent::Behaviour(event) = event {
                    record(&mut tally, event);
                }
            }
        }
    }
}

fn record(tally: &mut Tally, event: Event) {
    match event {
        Event::InboundRequest { peer, outcome, .. } => match outcome {
            InboundOutcome::Answered => *tally.answered.entry(peer).or_default() += 1,
            InboundOutcome::Stored => *tally.stored.entry(peer).or_default() += 1,
            InboundOutcome::Rejected(why) => {
                *tally.rejected.entry(peer).or_default() += 1;
                *tally.rejections.entry(why.to_string()).or_default() += 1;
            }
            InboundOutcome::AwaitingDecision(_) => {}
        },
        Event::InboundFailed { error, .. } => {
            *tally.failed.entry(describe(&error)).or_default() += 1;
        }
        _ => {}
    }
}

/// A short, stable name of an inbound failure.
fn describe(error: &InboundError) -> String {
    match error {
        InboundError::UnreadResponses => "unread".into(),
        InboundError::WriteTimeout => "write-timeout".into(),
        InboundError::ResponseTimeout => "response-timeout".into(),
        InboundError::TooManyStreams => "too-many-streams".into(),
        other => other.to_string(),
    }
}

/// A swarm over TCP with noise and yamux, as the deployed peers speak.
pub fn tcp_swarm<B: libp2p::swarm::NetworkBehaviour>(
    key: libp2p::identity::Keypair,
    behaviour: impl FnOnce(&libp2p::identity::Keypair) -> B,
) -> Swarm<B> {
    libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|key| behaviour(key))
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
        .build()
}

// ---------------------------------------------------------------------------------------------
// Hostile (and honest) raw peers.

/// A peer that speaks the protocol by hand over its connection to the victim.
pub struct RawPeer {
    pub id: PeerId,
    pub control: libp2p_stream::Control,
    victim: PeerId,
}

impl RawPeer {
    /// A peer that dials the victim: its connection comes from 127.0.0.1.
    pub async fn dialing(victim: &Victim) -> RawPeer {
        let mut swarm = raw_swarm();
        swarm.dial(victim.addr.clone()).unwrap();
        wait_connected(&mut swarm, victim.id).await;
        Self::spawn(swarm, victim.id)
    }

    /// A peer that listens on `ip` and is dialled by the victim: its connection comes from
    /// `ip` (any of 127.0.0.0/8 on loopback), so from another network block than 127.0.0.1.
    pub async fn dialled_from(victim: &Victim, ip: &str) -> RawPeer {
        let mut swarm = raw_swarm();
        swarm
            .listen_on(format!("/ip4/{ip}/tcp/0").parse().unwrap())
            .unwrap();
        let addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.next_swarm_event().await {
                break address;
            }
        };
        victim.dial(*swarm.local_peer_id(), addr).await;
        wait_connected(&mut swarm, victim.id).await;
        Self::spawn(swarm, victim.id)
    }

    fn spawn(swarm: Swarm<libp2p_stream::Behaviour>, victim: PeerId) -> RawPeer {
        let id = *swarm.local_peer_id();
        let control = swarm.behaviour().new_control();
        tokio::spawn(swarm.loop_on_next());
        RawPeer {
            id,
            control,
            victim,
        }
    }

    /// A new stream to the victim.
    pub async fn stream(&self) -> Stream {
        self.control
            .clone()
            .open_stream(self.victim, TEST_PROTOCOL)
            .await
            .expect("stream opened")
    }

    /// An ADD_PROVIDER of `key` for this peer, with `addrs`.
    pub fn add_provider(&self, key: Vec<u8>, addrs: Vec<Multiaddr>) -> Request {
        Request::AddProvider {
            key,
            providers: vec![kadence::PeerRecord {
                id: self.id,
                addrs,
                connection: kadence::ConnectionType::Connected,
            }],
        }
    }

    /// Sends ADD_PROVIDER for every key on one stream (no responses to read).
    pub async fn announce(&self, keys: impl IntoIterator<Item = Vec<u8>>, addrs: &[Multiaddr]) {
        let mut stream = self.stream().await;
        for key in keys {
            let frame = encode_request(&self.add_provider(key, addrs.to_vec()));
            write_frame(&mut stream, &frame).await.expect("written");
        }
    }
}

fn raw_swarm() -> Swarm<libp2p_stream::Behaviour> {
    tcp_swarm(libp2p::identity::Keypair::generate_ed25519(), |_| {
        libp2p_stream::Behaviour::new()
    })
}

async fn wait_connected(swarm: &mut Swarm<libp2p_stream::Behaviour>, peer: PeerId) {
    loop {
        match swarm.next_swarm_event().await {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if peer_id == peer => return,
            SwarmEvent::OutgoingConnectionError { error, .. } => panic!("dial failed: {error}"),
            _ => {}
        }
    }
}

/// A provider key: the multihash form (sha2-256) of `n`.
pub fn provider_key(n: u64) -> Vec<u8> {
    let mut key = vec![0x12, 0x20];
    key.extend_from_slice(&[0u8; 24]);
    key.extend_from_slice(&n.to_be_bytes());
    key
}

/// About 8 KiB of short addresses (the most a `Peer` entry may carry): ~800 of them.
pub fn fat_short_addrs() -> Vec<Multiaddr> {
    (0..800u32)
        .map(|i| {
            format!("/ip4/127.0.{}.{}/tcp/{}", i / 250, i % 250, 1000 + i)
                .parse()
                .unwrap()
        })
        .collect()
}
