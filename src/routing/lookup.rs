//! The iterative closest-peers lookup, as a sans-IO state machine: it says whom to ask next and
//! hears what they answered; time is an argument.
//!
//! ## The rule
//! Seeded with the closest peers the routing table knows, the lookup keeps a candidate set
//! ordered by XOR distance to the target and:
//! 1. asks the closest candidates not yet asked, with at most `alpha` requests in flight;
//! 2. once the `beta` closest candidates that have not failed have all answered, and no
//!    candidate closer than them is still waiting for an answer or unasked, the search has
//!    converged. What happens then is [`LookupFinish`]:
//!    - [`LookupFinish::KClosestAnswered`] (the default): it makes sure the `k` closest
//!      candidates that have not failed have been asked and have answered (or failed); the
//!      result is the `k` closest peers that answered;
//!    - [`LookupFinish::BetaAnswered`] (go-libp2p-kad-dht's rule): it is finished; the result
//!      is the `k` closest candidates that have not failed, whether they answered, are being
//!      asked, or were only heard of.
//!
//! Why: step 2 is the Kademlia/libp2p termination condition (go and js use beta = 3: three
//! answers from the closest known peers mean no closer peer is being announced). Waiting for
//! all `k` answers makes the result hold `k` peers that really answered, which a PUT_VALUE or
//! ADD_PROVIDER to "the k closest" needs, but the slowest of the `k`, often a fresh dial, sets
//! the lookup's pace. Measured: go's rule cuts the median lookup time by half or more in
//! `benches/network` (no dead peers there, same recall), but with a quarter of the network
//! silent it returns dead peers and recall falls from above 0.95 to 0.85 (`lookup_tests.rs`).
//! Hence the default.
//!
//! A request that takes longer than `slot_timeout` frees its slot (its peer no longer counts as
//! waiting), but a late answer still counts. A failed peer is skipped. At most
//! `max_closer_per_response` peers are taken from one answer, each with at most
//! `max_addresses_per_peer` addresses (from the moment it becomes a candidate), and the
//! candidate set keeps only the `max_candidates` closest, so memory per lookup is bounded
//! whatever the responders send. The query around the lookup dials at most `max_dials` peers
//! that are not connected (see [`LookupConfig::max_dials`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use crate::key::{Distance, Key};
use crate::network::message::{ConnectionType, PeerRecord};

/// When a converged lookup is finished: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LookupFinish {
    /// Once the `k` closest have answered or failed; the result holds only peers that
    /// answered.
    #[default]
    KClosestAnswered,
    /// As soon as the `beta` closest have answered (go's rule); the result may hold peers that
    /// were not asked yet, or never answer.
    BetaAnswered,
}

/// Parameters of a lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LookupConfig {
    /// Requests in flight at once. Default 10, as go and js.
    pub alpha: usize,
    /// Closest peers that must answer before the search stops widening. Default 3.
    pub beta: usize,
    /// Peers in the result. Default 20.
    pub k: usize,
    /// A request slower than this frees its slot (a late answer still counts). Default 10 s.
    pub slot_timeout: Duration,
    /// Closer peers taken from one answer. Default 40 (2k), as go.
    pub max_closer_per_response: usize,
    /// Candidates kept (the closest ones). Default 80 (4k).
    pub max_candidates: usize,
    /// Addresses kept per candidate, whether it is new or known. Default 4: see
    /// [`Config::with_max_dial_addresses_per_peer`](crate::Config::with_max_dial_addresses_per_peer).
    pub max_addresses_per_peer: usize,
    /// Peers not connected that the lookup may ask (each a new dial); once spent, the
    /// candidates that would need a dial count as failed. Default 256: see
    /// [`Config::with_max_dials_per_lookup`](crate::Config::with_max_dials_per_lookup).
    pub max_dials: usize,
    /// When a converged lookup is finished. Default [`LookupFinish::KClosestAnswered`].
    pub finish: LookupFinish,
}

impl Default for LookupConfig {
    fn default() -> Self {
        Self {
            alpha: 10,
            beta: 3,
            k: 20,
            slot_timeout: Duration::from_secs(10),
            max_closer_per_response: 40,
            max_candidates: 80,
            max_addresses_per_peer: 4,
            max_dials: 256,
            finish: LookupFinish::KClosestAnswered,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotAsked,
    Waiting {
        deadline: Instant,
    },
    /// Slower than the slot timeout: no longer counted, but an answer is still welcome.
    Late,
    Answered,
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    id: PeerId,
    addrs: Vec<Multiaddr>,
    state: State,
    /// 1 for the seeds, n + 1 for a peer learned from an answer of hop n.
    hop: u32,
}

/// What the lookup wants now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookupStep {
    /// Send the lookup's request to this peer (dial it at these addresses if need be).
    Ask {
        /// The peer.
        peer: PeerId,
        /// Addresses learned for it.
        addrs: Vec<Multiaddr>,
    },
    /// Nothing to send until an answer, a failure or the next deadline.
    Wait,
    /// Done; take the result.
    Finished,
}

/// One closest-peers lookup.
#[derive(Debug)]
pub struct Lookup {
    target: Key,
    local: PeerId,
    config: LookupConfig,
    candidates: BTreeMap<Distance, Candidate>,
    /// Every peer asked so far: one pushed out of a full candidate set and learned again is
    /// not asked twice (its record would count twice towards a quorum).
    asked_peers: fnv::FnvHashSet<PeerId>,
    in_flight: usize,
    /// Requests sent, answers and failures, for statistics.
    asked: usize,
}

impl Lookup {
    /// A lookup for `target`, seeded with peers from the routing table. `local` is never asked.
    pub fn new(
        target: Key,
        local: PeerId,
        seeds: impl IntoIterator<Item = PeerRecord>,
        config: LookupConfig,
    ) -> Self {
        let mut lookup = Self {
            target,
            local,
            config,
            candidates: BTreeMap::new(),
            asked_peers: fnv::FnvHashSet::default(),
            in_flight: 0,
            asked: 0,
        };
        for peer in seeds {
            lookup.add_candidate(peer.id, peer.addrs, 1);
        }
        lookup
    }

    /// The lookup's target.
    pub fn target(&self) -> &Key {
        &self.target
    }

    /// Requests sent so far.
    pub fn requests(&self) -> usize {
        self.asked
    }

    /// The lookup's parameters.
    pub fn config(&self) -> &LookupConfig {
        &self.config
    }

    fn add_candidate(&mut self, id: PeerId, mut addrs: Vec<Multiaddr>, hop: u32) {
        if id == self.local {
            return;
        }
        let cap = self.config.max_addresses_per_peer.max(1);
        let distance = Key::from_peer(&id).distance(&self.target);
        if !self.candidates.contains_key(&distance) && self.asked_peers.contains(&id) {
            return;
        }
        if let Some(known) = self.candidates.get_mut(&distance) {
            // Learn new addresses of a known peer; never change its state.
            for addr in addrs {
                if !known.addrs.contains(&addr) && known.addrs.len() < cap {
                    known.addrs.push(addr);
                }
            }
            return;
        }
        if self.candidates.len() >= self.config.max_candidates {
            // Full: only a closer peer gets in, pushing out the farthest that is not waiting.
            let farthest = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| !matches!(c.state, State::Waiting { .. }))
                .map(|(d, _)| *d);
            match farthest {
                Some(far) if far > distance => {
                    self.candidates.remove(&far);
                }
                _ => return,
            }
        }
        // Capped from the start: a newcomer's list is as bounded as a known one's.
        addrs.truncate(cap);
        self.candidates.insert(
            distance,
            Candidate {
                id,
                addrs,
                state: State::NotAsked,
                hop,
            },
        );
    }

    fn find_mut(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        let distance = Key::from_peer(peer).distance(&self.target);
        self.candidates.get_mut(&distance).filter(|c| c.id == *peer)
    }

    /// `peer` answered with `closer` peers.
    pub fn on_success(&mut self, peer: &PeerId, closer: Vec<PeerRecord>) {
        let Some(candidate) = self.find_mut(peer) else {
            return;
        };
        let was_waiting = match candidate.state {
            State::Waiting { .. } => true,
            State::Late => false,
            // Not asked, or already settled: an answer we did not ask for changes nothing.
            _ => return,
        };
        candidate.state = State::Answered;
        let hop = candidate.hop + 1;
        if was_waiting {
            self.in_flight -= 1;
        }
        let responder = *peer;
        for record in closer
            .into_iter()
            .filter(|p| p.id != responder)
            .take(self.config.max_closer_per_response)
        {
            self.add_candidate(record.id, record.addrs, hop);
        }
    }

    /// The request to `peer` failed.
    pub fn on_failure(&mut self, peer: &PeerId) {
        let Some(candidate) = self.find_mut(peer) else {
            return;
        };
        match candidate.state {
            State::Waiting { .. } => {
                candidate.state = State::Failed;
                self.in_flight -= 1;
            }
            State::Late => candidate.state = State::Failed,
            _ => {}
        }
    }

    /// The earliest moment a waiting request frees its slot.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.candidates
            .values()
            .filter_map(|c| match c.state {
                State::Waiting { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// What to do next.
    pub fn step(&mut self, now: Instant) -> LookupStep {
        for candidate in self.candidates.values_mut() {
            if matches!(candidate.state, State::Waiting { deadline } if deadline <= now) {
                candidate.state = State::Late;
                self.in_flight -= 1;
            }
        }
        let usable = |c: &Candidate| !matches!(c.state, State::Failed | State::Late);
        // Have the beta closest usable candidates answered, with nothing closer pending?
        let mut answered = 0;
        let mut pending_closer = false;
        for c in self.candidates.values().filter(|c| usable(c)) {
            if answered >= self.config.beta {
                break;
            }
            match c.state {
                State::Answered => answered += 1,
                _ => {
                    pending_closer = true;
                    break;
                }
            }
        }
        let widening = pending_closer;
        if !widening && self.config.finish == LookupFinish::BetaAnswered {
            return LookupStep::Finished;
        }
        // While widening, ask the closest unasked; afterwards, only among the k closest.
        let scope = if widening { usize::MAX } else { self.config.k };
        let mut waiting = self.in_flight > 0 && widening;
        let mut ask = None;
        for c in self
            .candidates
            .values_mut()
            .filter(|c| !matches!(c.state, State::Failed | State::Late))
            .take(scope)
        {
            match c.state {
                State::NotAsked if self.in_flight < self.config.alpha => {
                    ask = Some(c);
                    break;
                }
                State::NotAsked | State::Waiting { .. } => waiting = true,
                _ => {}
            }
        }
        if let Some(c) = ask {
            c.state = State::Waiting {
                deadline: now + self.config.slot_timeout,
            };
            self.in_flight += 1;
            self.asked += 1;
            self.asked_peers.insert(c.id);
            return LookupStep::Ask {
                peer: c.id,
                addrs: c.addrs.clone(),
            };
        }
        if waiting || self.in_flight > 0 && widening {
            LookupStep::Wait
        } else {
            LookupStep::Finished
        }
    }

    /// The `k` closest peers, closest first, with their addresses: those that answered, and
    /// with [`LookupFinish::BetaAnswered`] those still being asked or only heard of too.
    pub fn result(&self) -> Vec<PeerRecord> {
        let in_result = |c: &&Candidate| match self.config.finish {
            LookupFinish::KClosestAnswered => c.state == State::Answered,
            LookupFinish::BetaAnswered => !matches!(c.state, State::Failed | State::Late),
        };
        self.candidates
            .values()
            .filter(in_result)
            .take(self.config.k)
            .map(|c| PeerRecord {
                id: c.id,
                addrs: c.addrs.clone(),
                connection: ConnectionType::NotConnected,
            })
            .collect()
    }

    /// Hops to the farthest peer of the result: how many rounds of answers it took.
    pub fn hops(&self) -> u32 {
        self.candidates
            .values()
            .filter(|c| c.state == State::Answered)
            .take(self.config.k)
            .map(|c| c.hop)
            .max()
            .unwrap_or(0)
    }

    /// Whether `peer` is among the candidates (so its answer is expected).
    pub fn knows(&self, peer: &PeerId) -> bool {
        let distance = Key::from_peer(peer).distance(&self.target);
        self.candidates
            .get(&distance)
            .is_some_and(|c| c.id == *peer)
    }
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
