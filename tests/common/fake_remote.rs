//! A node under test whose inbound TCP connections seem to come from chosen public addresses.
//!
//! Everything runs on 127.0.0.1, where no peer can connect from a public address. The node's
//! TCP transport is wrapped so that an inbound connection from `127.0.0.1:<port>` is reported
//! to the swarm (and so to kadence) as coming from the address registered for that port. Peers
//! dial from their listen port (libp2p-tcp reuses it for outgoing connections), so a peer's
//! listen port names its fake source address. The rest is a real node: real connections, noise,
//! yamux, identify, kadence.
//!
//! Included with `#[path]` by the tests that need it (it is not part of `common`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::StreamExt;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::core::upgrade::Version;
use libp2p::identity::Keypair;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{Multiaddr, Transport};

use crate::common::watch::{Node, Seen, Watched};

/// Fake source addresses by the peer's TCP port, and how many connections got one.
#[derive(Clone, Default)]
pub struct Sources {
    by_port: Arc<Mutex<HashMap<u16, Ipv4Addr>>>,
    rewritten: Arc<AtomicUsize>,
}

impl Sources {
    /// Connections from `127.0.0.1:<port>` will seem to come from `ip`.
    pub fn set(&self, port: u16, ip: Ipv4Addr) {
        self.by_port.lock().unwrap().insert(port, ip);
    }

    /// Inbound connections reported with a fake source so far.
    pub fn rewritten(&self) -> usize {
        self.rewritten.load(Ordering::SeqCst)
    }

    fn rewrite(&self, addr: Multiaddr) -> Multiaddr {
        let mut parts = addr.iter();
        let (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(port))) = (parts.next(), parts.next())
        else {
            return addr;
        };
        match self.by_port.lock().unwrap().get(&port) {
            Some(fake) if ip.is_loopback() => {
                self.rewritten.fetch_add(1, Ordering::SeqCst);
                Multiaddr::empty()
                    .with(Protocol::Ip4(*fake))
                    .with(Protocol::Tcp(port))
            }
            _ => addr,
        }
    }
}

/// A transport that reports inbound connections with their fake source address.
struct FakeRemote<T> {
    inner: T,
    sources: Sources,
}

impl<T: Transport + Unpin> Transport for FakeRemote<T> {
    type Output = T::Output;
    type Error = T::Error;
    type ListenerUpgrade = T::ListenerUpgrade;
    type Dial = T::Dial;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        self.inner.dial(addr, opts)
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr,
            }) => Poll::Ready(TransportEvent::Incoming {
                listener_id,
                upgrade,
                local_addr,
                send_back_addr: this.sources.rewrite(send_back_addr),
            }),
            other => other,
        }
    }
}

/// Starts the node under test (identify + kadence with `config`) on 127.0.0.1 with the fake
/// sources of `sources`.
pub async fn start_node(key: Keypair, config: kadence::Config, sources: Sources) -> Watched {
    let tcp = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default());
    let transport = FakeRemote {
        inner: tcp,
        sources,
    }
    .upgrade(Version::V1)
    .authenticate(libp2p::noise::Config::new(&key).unwrap())
    .multiplex(libp2p::yamux::Config::default())
    .boxed();
    let behaviour = Node::new(&key, config, |c| c);
    let mut swarm = Swarm::new(
        transport,
        behaviour,
        key.public().to_peer_id(),
        libp2p::swarm::Config::with_tokio_executor()
            .with_idle_connection_timeout(Duration::from_secs(60)),
    );
    swarm
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .unwrap();
    let addr = crate::common::within(10, async {
        loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                return address;
            }
        }
    })
    .await;
    Watched {
        id: *swarm.local_peer_id(),
        swarm,
        addr,
        seen: Seen::default(),
    }
}
