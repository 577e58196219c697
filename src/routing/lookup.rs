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
//! 3. once it has converged, or stalled (`alpha` answers in a row brought no peer closer than
//!    the closest known, as libp2p-kad's `ClosestPeersIter`), it has **widened** for good: the
//!    unasked among the `k` closest are asked `widened_alpha` (default `k`) at a time, so all
//!    at once; candidates beyond the `k` closest keep `alpha`.
//!
//! Why step 2: it is the Kademlia/libp2p termination condition (go and js use beta = 3: three
//! answers from the closest known peers mean no closer peer is being announced). Waiting for
//! all `k` answers makes the result hold `k` peers that really answered, which a PUT_VALUE or
//! ADD_PROVIDER to "the k closest" needs. Measured: go's rule cuts the median lookup time by
//! half or more in `benches/network` (no dead peers there, same recall), but with a quarter of
//! the network silent it returns dead peers. Hence the default.
//!
//! Why step 3: asking the rest of the `k` closest `alpha` at a time made a lookup's time grow
//! with its requests / alpha, not with its hops: at alpha 3, a 1-hop and a 2-hop lookup both
//! took about 7 request-times (issue 15). Once converged, the `k` closest are the peers the
//! default rule must hear anyway, so asking them at once costs no extra request; a stalled
//! lookup is as close as its answers get it, and libp2p-kad widens there too. Widening is kept
//! when a later answer brings a closer peer (libp2p-kad narrows back to alpha): that peer is
//! among the `k` closest and asking it at once is what ends the lookup sooner. In the lookup
//! simulation (`lookup_sim.rs`, 1,000 nodes, round trips 10-300 ms) this makes no alpha slower
//! than a model of libp2p-kad's rule with the same alpha, with fewer requests.
//!
//! ## Deadlines
//! Each request has two moments, which the query pool sets from the round trips it observed
//! (see [`crate::routing::rtt`]; both are `slot_timeout` by default):
//! - **overdue** (about the 90th percentile of answer times): the request frees its slot, and
//!   it no longer holds one of the `k` closest places, so the next candidate is asked as a
//!   spare; the lookup still waits for it while it is closer than the `k`-th;
//! - **deadline** (1.5 times that, at least 1 s, at most `slot_timeout`): the lookup no longer
//!   waits for it; the finish rule never waits on a peer past its deadline.
//!
//! An answer after either still counts while the lookup runs. A widened lookup also asks
//! spares ahead, beyond the `k` closest, in proportion to the share of its requests not
//! answered in time: with a quarter of the peers silent, a quarter of the `k` closest need a
//! replacement, and found one after another they made chains of deadlines. Spares are not
//! waited for. A failed peer is skipped.
//!
//! ## Bounds
//! At most `max_closer_per_response` peers are taken from one answer, each with at most
//! `max_addresses_per_peer` addresses (from the moment it becomes a candidate), and the
//! candidate set keeps only the `max_candidates` closest, so memory per lookup is bounded
//! whatever the responders send. At most `max(alpha, widened_alpha)` requests are in flight
//! (not counting overdue ones), and no peer is asked twice. The query around the lookup dials
//! at most `max_dials` peers that are not connected (see [`LookupConfig::max_dials`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};

use crate::key::{Distance, Key};
use crate::network::message::{ConnectionType, PeerRecord};
use crate::routing::rtt::{later, RequestDeadlines};

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
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LookupConfig {
    /// Requests in flight at once. Default 10, as go and js.
    pub alpha: usize,
    /// Closest peers that must answer before the search stops widening. Default 3.
    pub beta: usize,
    /// Peers in the result. Default 20.
    pub k: usize,
    /// A request slower than this frees its slot and is no longer waited for (a late answer
    /// still counts): the request timeout. The query pool sets shorter deadlines from the
    /// round trips it observed (see `deadlines`). Default 10 s.
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
    /// Requests in flight once the lookup has widened (converged or stalled), to the `k`
    /// closest. Default 20 (k): the rest of the `k` closest are asked at once. Never below
    /// `alpha`: see
    /// [`Config::with_widened_alpha`](crate::Config::with_widened_alpha).
    pub widened_alpha: usize,
    /// How the query pool sets each request's overdue moment and deadline from the round
    /// trips it observed. Default [`RequestDeadlines::default`]: see
    /// [`Config::with_request_deadlines`](crate::Config::with_request_deadlines).
    pub deadlines: RequestDeadlines,
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
            widened_alpha: 20,
            deadlines: RequestDeadlines::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    NotAsked,
    /// Asked; holds a slot and one of the `k` places.
    Waiting {
        /// When the answer is overdue.
        overdue: Instant,
        /// When the lookup stops waiting for it.
        deadline: Instant,
    },
    /// Slower than most answers: its slot and its place among the `k` closest go to the next
    /// candidate (likely dead), but a finishing lookup still waits for it until the deadline.
    Overdue {
        deadline: Instant,
    },
    /// Past its deadline: not waited for, but an answer is still welcome.
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
    /// Became overdue before its deadline and has not answered: counted in `missing`.
    missing: bool,
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
    /// The distance of the closest peer ever heard of, to tell an answer that brought the
    /// search closer from one that did not.
    closest_seen: Option<Distance>,
    /// Answers in a row that brought no peer closer than `closest_seen`.
    no_progress: usize,
    /// Converged or stalled once: the `k` closest are asked `widened_alpha` at a time.
    widened: bool,
    /// Requests answered, and those that became overdue and have not answered since: the
    /// share of silent peers, which sets how many spares a widened lookup asks. (A request
    /// that fails frees its place at once: its replacement needs no spare.)
    answered: usize,
    missing: usize,
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
            closest_seen: None,
            no_progress: 0,
            widened: false,
            answered: 0,
            missing: 0,
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
        if self.closest_seen.is_none_or(|closest| distance < closest) {
            self.closest_seen = Some(distance);
        }
        self.candidates.insert(
            distance,
            Candidate {
                id,
                addrs,
                state: State::NotAsked,
                hop,
                missing: false,
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
            State::Overdue { .. } | State::Late => false,
            // Not asked, or already settled: an answer we did not ask for changes nothing.
            _ => return,
        };
        candidate.state = State::Answered;
        let hop = candidate.hop + 1;
        // Slow, not silent.
        let was_missing = std::mem::take(&mut candidate.missing);
        if was_waiting {
            self.in_flight -= 1;
        }
        if was_missing {
            self.missing -= 1;
        }
        self.answered += 1;
        let responder = *peer;
        let closest_before = self.closest_seen;
        for record in closer
            .into_iter()
            .filter(|p| p.id != responder)
            .take(self.config.max_closer_per_response)
        {
            self.add_candidate(record.id, record.addrs, hop);
        }
        // A late answer counts too: it is as much news about the target's region.
        if self.closest_seen == closest_before {
            self.no_progress += 1;
        } else {
            self.no_progress = 0;
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
            State::Overdue { .. } | State::Late => candidate.state = State::Failed,
            _ => {}
        }
    }

    /// The earliest moment a request becomes overdue or passes its deadline (call
    /// [`Lookup::step`] then).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.candidates
            .values()
            .filter_map(|c| match c.state {
                State::Waiting { overdue, .. } => Some(overdue),
                State::Overdue { deadline } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Sets when the answer of the request to `peer` is overdue and when the lookup stops
    /// waiting for it ([`Lookup::step`] set both to `slot_timeout` after it asked): the query
    /// pool sets them from the round trips it observed, when the request leaves and again as
    /// the estimate moves. `overdue` is at most `deadline`. A request already overdue takes
    /// only the new deadline (its slot went to a spare already); one past its deadline, or
    /// answered, is left as it is.
    pub fn set_deadlines(&mut self, peer: &PeerId, overdue: Instant, deadline: Instant) {
        if let Some(candidate) = self.find_mut(peer) {
            match candidate.state {
                State::Waiting { .. } => {
                    candidate.state = State::Waiting {
                        overdue: overdue.min(deadline),
                        deadline,
                    }
                }
                State::Overdue { .. } => candidate.state = State::Overdue { deadline },
                _ => {}
            }
        }
    }

    /// Candidates beyond the `k` closest that a widened lookup asks too, in proportion to the
    /// share of its requests that were not answered in time: were a quarter of the peers
    /// silent, a quarter of the `k` closest would need a replacement, each found only once its
    /// predecessor is overdue, one after the other.
    fn spares(&self) -> usize {
        let settled = self.answered + self.missing;
        if !self.widened || settled == 0 {
            return 0;
        }
        (self.config.k * self.missing).div_ceil(settled)
    }

    /// What to do next.
    pub fn step(&mut self, now: Instant) -> LookupStep {
        let mut overdue_count = 0;
        for candidate in self.candidates.values_mut() {
            match candidate.state {
                State::Waiting { overdue, deadline } if overdue <= now => {
                    self.in_flight -= 1;
                    // Only a request with a moment to be overdue before its deadline: with
                    // no estimate yet, there is nothing to tell a silent peer by.
                    if overdue < deadline {
                        candidate.missing = true;
                        self.missing += 1;
                    }
                    candidate.state = if deadline <= now {
                        State::Late
                    } else {
                        State::Overdue { deadline }
                    };
                }
                State::Overdue { deadline } if deadline <= now => candidate.state = State::Late,
                _ => {}
            }
            if let State::Overdue { .. } = candidate.state {
                overdue_count += 1;
            }
        }
        // Converged: the beta closest candidates answered (nothing closer is pending). An
        // overdue one does not hold back the widening, but it does hold back go's rule, for
        // which converging is finishing.
        let counts = match self.config.finish {
            LookupFinish::KClosestAnswered => ranked,
            LookupFinish::BetaAnswered => usable,
        };
        let converged = self
            .candidates
            .values()
            .filter(|c| counts(c.state))
            .take(self.config.beta)
            .all(|c| c.state == State::Answered);
        if converged && self.config.finish == LookupFinish::BetaAnswered {
            return LookupStep::Finished;
        }
        let alpha = self.config.alpha.max(1);
        if converged || self.no_progress >= alpha {
            self.widened = true;
        }
        let wide = alpha.max(self.config.widened_alpha);
        let k = self.config.k;
        let reach = k + self.spares();
        // Before widening, an overdue request keeps its slot, as it would without deadlines:
        // with alpha 1, its answer often comes just after, and the closer peer it names must
        // not wait for a slot taken by a guess. Once widened, slots are plenty and a spare
        // for it is what shortens the lookup.
        let busy = if self.widened {
            self.in_flight
        } else {
            self.in_flight + overdue_count
        };
        // Before convergence, any candidate may be asked, the closest first; afterwards only
        // the k closest. Once widened, the k closest get `wide` slots, the others `alpha`.
        // An overdue candidate takes no place among the k (the next one is asked in its
        // stead), but until its deadline it is waited for if it is closer than the k-th.
        let mut pending = false;
        let mut ask = None;
        let mut rank = 0;
        for c in self.candidates.values_mut().filter(|c| usable(c.state)) {
            let among_k = rank < k;
            let in_reach = rank < reach;
            if converged && !in_reach {
                break;
            }
            let limit = if self.widened && in_reach {
                wide
            } else {
                alpha
            };
            // A spare beyond the k closest only while one of them is still pending (they
            // all come first): a lookup that is done does not ask for more.
            let wanted = among_k || !converged || pending;
            match c.state {
                State::NotAsked if busy < limit && wanted => {
                    ask = Some(c);
                    break;
                }
                // Spares beyond the k closest are not waited for.
                State::NotAsked | State::Waiting { .. } | State::Overdue { .. }
                    if among_k || !converged =>
                {
                    pending = true
                }
                _ => {}
            }
            if ranked(c.state) {
                rank += 1;
            }
        }
        if let Some(c) = ask {
            let deadline = later(now, self.config.slot_timeout);
            c.state = State::Waiting {
                overdue: deadline,
                deadline,
            };
            self.in_flight += 1;
            self.asked += 1;
            self.asked_peers.insert(c.id);
            return LookupStep::Ask {
                peer: c.id,
                addrs: c.addrs.clone(),
            };
        }
        // Before convergence, what is in flight may still bring closer peers.
        if pending || !converged && self.in_flight > 0 {
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
            LookupFinish::BetaAnswered => usable(c.state),
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

/// Whether a candidate can still count: not failed, and not past its deadline.
fn usable(state: State) -> bool {
    !matches!(state, State::Failed | State::Late)
}

/// Whether a candidate counts among the closest: usable, and not overdue.
fn ranked(state: State) -> bool {
    usable(state) && !matches!(state, State::Overdue { .. })
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
