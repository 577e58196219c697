//! The network: the N servers, the clients joining it, and the true closest nodes of a key
//! for the placement check.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use kadence::key::Key;
use libp2p::identity::Keypair;
use libp2p::swarm::Swarm;
use libp2p::{Multiaddr, PeerId};

use crate::node::{build, memory_addr, spawn, Node, Peer, Spec};
use crate::options::Options;
use crate::tally::Tally;
use crate::{Rng, BOOTSTRAP_PEERS, K};

pub struct Net {
    pub opts: Options,
    pub keys: Vec<Keypair>,
    /// The servers, in the order of `keys`.
    pub servers: Vec<Node>,
    pub tally: Arc<Tally>,
    /// Every live node's id, for the true closest peers.
    pub live: HashSet<PeerId>,
    pub rng: Rng,
}

impl Net {
    pub fn boot(&mut self, except: Option<usize>) -> Vec<(PeerId, Multiaddr)> {
        // Every server listens from the start, so any of them can be dialled.
        let n = self.opts.nodes;
        let mut picked = Vec::new();
        while picked.len() < BOOTSTRAP_PEERS {
            let j = self.rng.below(n);
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

    pub fn delay(&self) -> Duration {
        Duration::from_millis(self.opts.delay_ms)
    }

    /// Starts the N servers and waits until each routing table holds k peers.
    pub async fn start(&mut self) {
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
    pub fn client(&mut self, key: &Keypair, port: u64, accelerated: bool) -> Node {
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
    pub fn server(&self, id: &PeerId) -> Option<&Node> {
        self.servers.iter().find(|s| s.id == *id)
    }

    /// The k live nodes closest to `key`, `provider` aside.
    pub fn true_closest(&self, key: &[u8], provider: &PeerId) -> Vec<PeerId> {
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
    pub async fn placement(
        &self,
        provider: PeerId,
        keys: &[Vec<u8>],
        clients: &[&Node],
    ) -> (u64, u64) {
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
