//! Request deadlines that follow the round trips actually observed, sans-IO.
//!
//! With one fixed deadline of `request_timeout` (10 s) for every request, each silent peer
//! among the `k` closest held a lookup for 10 s, in steps. Here the query pool times every
//! lookup request from send to answer and keeps, per route, a window of the latest answer
//! times; from its 90th percentile (the estimate) each request gets two moments:
//! - **overdue**, at the estimate: nine answers in ten come sooner, so the peer is likely dead.
//!   Its slot, and its place among the `k` closest, go to the next candidate (a spare), but a
//!   finishing lookup still waits for it;
//! - **deadline**, at `multiplier` x the estimate, within `[floor, request_timeout]`: the
//!   lookup no longer waits for it. The request itself runs on until the request timeout, and
//!   an answer after the deadline still counts while the lookup runs.
//!
//! So a silent peer costs a few round trips, its replacement is asked one estimate after it
//! rather than one deadline, and a live peer at the slow end of the spread is still heard.
//!
//! Two routes, two estimates: a request to a peer the node is connected to takes about one
//! round trip, one that needs a dial first two or three more (TCP, the security and
//! multiplexer handshakes, queueing behind the dial limit). Mixed in one window, the dials would
//! stretch every connected peer's deadline, or the connected samples would cut dials short.
//! (The moment the connection comes up is not seen here, so a dial and its request are timed as
//! one.)
//!
//! Only answers are samples. A timeout says nothing about the round trip of a live peer, and
//! counting silent peers (a quarter of the table in bad times) would drive the estimate to the
//! timeout itself. Answers that arrive after their deadline, even after their lookup ended,
//! are samples: without them the estimate could only shrink.
//!
//! Samples age out ([`RequestDeadlines::max_age`]): a node that looked nothing up for a while
//! knows nothing of the network as it is now. In benches/network, nodes that bootstrapped
//! together on a loaded machine saw answers of 5-8 s; two minutes later, with answers back at
//! 50-300 ms, the 64 old samples still set deadlines of 10 s, and every silent peer cost a
//! lookup the full request timeout. And the deadlines of the requests in flight follow the
//! estimate as answers come in (the query pool sets them again): a lookup that starts cold
//! learns from its first answers, and its first requests to silent peers are given up one
//! estimate after they left, not at the cold deadline.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How the deadline of each lookup request is set from the round trips observed (see
/// [`Config::with_request_deadlines`](crate::Config::with_request_deadlines) and the module
/// docs).
///
/// The estimate of a route (requests over an open connection, requests that needed a dial) is
/// the 90th percentile of its latest answer times. A request is overdue at the estimate, and
/// its deadline is `multiplier` x the estimate, within `[floor, request_timeout]`; both are
/// `cold` until the route has [`MIN_SAMPLES`] answers. Setting `floor` and `cold` to the
/// request timeout gives every request the full timeout and no spares, as before.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RequestDeadlines {
    /// The deadline over the estimate. Default 1.5: the estimate is already a high quantile,
    /// half again covers a peer at the slow end of the spread whose answer is also delayed by
    /// load (recall stays 1.00 in the lookup simulation), and a silent peer costs 1.5
    /// estimates: with a quarter of the peers silent, the simulated lookup takes 1.96 s at the
    /// median (2.26 s with 2.0, 20 s with the request timeout). Values below 1 count as 1.
    pub multiplier: f64,
    /// The shortest deadline. Default 1 s: on a LAN the estimate is a millisecond, and a
    /// deadline that short would give up on peers for a scheduling hiccup of a loaded machine.
    pub floor: Duration,
    /// The deadline before a route has [`MIN_SAMPLES`] answers. Default 3 s: a dial and a
    /// request over a few round trips of 300-500 ms fit, and a node's first lookup among dead
    /// peers does not wait 10 s per step.
    pub cold: Duration,
    /// How long an answer counts as a sample. Default 60 s: a busy node has a window of fresh
    /// samples within seconds, and one that looked nothing up for a minute starts `cold`
    /// rather than from round trips of another time (a start-up storm, a congested link).
    pub max_age: Duration,
}

impl Default for RequestDeadlines {
    fn default() -> Self {
        Self {
            multiplier: 1.5,
            floor: Duration::from_secs(1),
            cold: Duration::from_secs(3),
            max_age: Duration::from_secs(60),
        }
    }
}

/// `at` + `after`, saturating far in the future rather than panicking: a user may set a request
/// timeout of `Duration::MAX` to mean "never".
pub(crate) fn later(at: Instant, after: Duration) -> Instant {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    at.checked_add(after)
        .or_else(|| at.checked_add(YEAR))
        .unwrap_or(at)
}

/// How a request reaches its peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// Over a connection already open.
    Connected,
    /// After a dial.
    Dial,
}

/// Samples kept per route: the latest answers, about three lookups' worth, so the estimate
/// follows a change of network or load within seconds.
pub(crate) const WINDOW: usize = 64;
/// Fresh answers a route needs before its estimate is used (below it,
/// [`RequestDeadlines::cold`]). With five samples the 90th percentile is their maximum:
/// cautious until the window fills.
pub const MIN_SAMPLES: usize = 5;
/// The quantile of the window taken as the estimate, in percent. High, because a deadline
/// must let nearly every live peer answer; not the maximum, so one peer answering after 9 s
/// does not set every deadline.
const QUANTILE_PERCENT: usize = 90;

/// The latest answer times of one route, oldest first, and when each arrived.
#[derive(Debug, Clone, Default)]
struct Window {
    /// Arrival and answer time in microseconds (saturating at about 71 minutes, far past any
    /// request timeout). At most [`WINDOW`].
    samples: VecDeque<(Instant, u32)>,
}

impl Window {
    fn record(&mut self, rtt: Duration, now: Instant) {
        if self.samples.len() == WINDOW {
            self.samples.pop_front();
        }
        let micros = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        self.samples.push_back((now, micros));
    }

    /// The quantile of the samples younger than `max_age`, once there are enough of them.
    /// Computed when asked (a copy and a selection among at most 64 numbers): what is fresh
    /// depends on `now`.
    fn estimate(&self, now: Instant, max_age: Duration) -> Option<Duration> {
        let mut fresh = [0u32; WINDOW];
        let mut len = 0;
        // Oldest first: the fresh ones are the tail.
        for (at, micros) in self.samples.iter().rev() {
            if now.saturating_duration_since(*at) >= max_age {
                break;
            }
            fresh[len] = *micros;
            len += 1;
        }
        if len < MIN_SAMPLES {
            return None;
        }
        let rank = (len * QUANTILE_PERCENT).div_ceil(100).max(1) - 1;
        let (_, quantile, _) = fresh[..len].select_nth_unstable(rank);
        Some(Duration::from_micros(u64::from(*quantile)))
    }
}

/// When a request is overdue, and when it is given up on, from when it was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Slot {
    /// Past the estimate: most live peers would have answered by now.
    pub(crate) overdue: Duration,
    /// Past the deadline: the lookup no longer waits for it.
    pub(crate) deadline: Duration,
}

/// Round-trip estimates of the lookup requests, per [`Route`]; about 3 KB whatever the
/// traffic.
#[derive(Debug, Clone, Default)]
pub(crate) struct RttEstimator {
    connected: Window,
    dial: Window,
}

impl RttEstimator {
    fn window(&self, route: Route) -> &Window {
        match route {
            Route::Connected => &self.connected,
            Route::Dial => &self.dial,
        }
    }

    /// A request on `route` was answered `rtt` after it was sent; the answer came at `now`.
    pub(crate) fn record(&mut self, route: Route, rtt: Duration, now: Instant) {
        match route {
            Route::Connected => self.connected.record(rtt, now),
            Route::Dial => self.dial.record(rtt, now),
        }
    }

    /// The estimate of `route` at `now` (a high quantile of its answer times younger than
    /// `max_age`), once it has enough of them.
    pub(crate) fn estimate(
        &self,
        route: Route,
        now: Instant,
        max_age: Duration,
    ) -> Option<Duration> {
        self.window(route).estimate(now, max_age)
    }

    /// When a request sent on `route` is overdue, and when the lookup stops waiting for it,
    /// counted from when it was sent, by the estimate at `now`: see [`RequestDeadlines`].
    /// Never more than `cap` (the request timeout).
    pub(crate) fn deadlines(
        &self,
        route: Route,
        policy: &RequestDeadlines,
        cap: Duration,
        now: Instant,
    ) -> Slot {
        match self.estimate(route, now, policy.max_age) {
            Some(estimate) => {
                // A multiplier below 1, or not a number, counts as 1; the cap bounds it.
                let multiplier = if policy.multiplier >= 1.0 {
                    policy.multiplier.min(1e6)
                } else {
                    1.0
                };
                let deadline = estimate.mul_f64(multiplier).max(policy.floor).min(cap);
                // Not before a quarter of the floor: on a LAN, a hiccup of a loaded machine
                // would make every request overdue at once, and ask a spare for each.
                let overdue = estimate.max(policy.floor / 4);
                Slot {
                    overdue: overdue.min(deadline),
                    deadline,
                }
            }
            // Nothing to tell a slow answer by: no spare before the deadline.
            None => Slot {
                overdue: policy.cold.min(cap),
                deadline: policy.cold.min(cap),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(10);

    const AGE: Duration = Duration::from_secs(60);

    /// One moment for every sample and question of a test that is not about time.
    fn t0() -> Instant {
        static T0: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *T0.get_or_init(Instant::now)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fill(rtt: &mut RttEstimator, route: Route, sample: Duration) {
        for _ in 0..WINDOW {
            rtt.record(route, sample, t0());
        }
    }

    #[test]
    fn cold_until_enough_answers_then_from_the_estimate() {
        let policy = RequestDeadlines::default();
        let mut rtt = RttEstimator::default();
        let cold = Slot {
            overdue: policy.cold,
            deadline: policy.cold,
        };
        assert_eq!(rtt.deadlines(Route::Connected, &policy, CAP, t0()), cold);
        for _ in 0..MIN_SAMPLES - 1 {
            rtt.record(Route::Connected, ms(800), t0());
            assert_eq!(rtt.deadlines(Route::Connected, &policy, CAP, t0()), cold);
        }
        rtt.record(Route::Connected, ms(800), t0());
        assert_eq!(rtt.estimate(Route::Connected, t0(), AGE), Some(ms(800)));
        let warm = Slot {
            overdue: ms(800),
            deadline: ms(1200),
        };
        assert_eq!(rtt.deadlines(Route::Connected, &policy, CAP, t0()), warm);
        // The other route learned nothing.
        assert_eq!(rtt.deadlines(Route::Dial, &policy, CAP, t0()), cold);
        // A cold value above the request timeout is cut to it.
        assert_eq!(
            rtt.deadlines(Route::Dial, &policy, ms(2000), t0()).deadline,
            ms(2000)
        );
    }

    #[test]
    fn converges_on_the_high_quantile_and_ignores_a_few_outliers() {
        let mut rtt = RttEstimator::default();
        // A spread of 10-300 ms, six peers answering after 9 s among them.
        for i in 0..WINDOW as u64 {
            let sample = if i % 11 == 5 {
                ms(9000)
            } else {
                ms(10 + (i * 37) % 291)
            };
            rtt.record(Route::Dial, sample, t0());
        }
        let estimate = rtt.estimate(Route::Dial, t0(), AGE).expect("warm");
        assert!(
            estimate >= ms(250) && estimate <= ms(300),
            "the 90th percentile of 10-300 ms, not the outliers: {estimate:?}"
        );
        // The network slows down: the window follows within one window of answers.
        fill(&mut rtt, Route::Dial, ms(2000));
        assert_eq!(rtt.estimate(Route::Dial, t0(), AGE), Some(ms(2000)));
        // And back.
        fill(&mut rtt, Route::Dial, ms(40));
        assert_eq!(rtt.estimate(Route::Dial, t0(), AGE), Some(ms(40)));
        assert_eq!(
            rtt.estimate(Route::Connected, t0(), AGE),
            None,
            "routes are apart"
        );
    }

    #[test]
    fn the_deadline_is_clamped_between_floor_and_cap() {
        let policy = RequestDeadlines {
            multiplier: 3.0,
            floor: ms(500),
            cold: Duration::from_secs(30),
            ..RequestDeadlines::default()
        };
        let mut rtt = RttEstimator::default();
        // Cold, and a cold value above the cap: the cap.
        assert_eq!(
            rtt.deadlines(Route::Connected, &policy, CAP, t0()).deadline,
            CAP
        );
        // A fast network: the floor, and overdue at a quarter of it.
        fill(&mut rtt, Route::Connected, ms(1));
        let slot = rtt.deadlines(Route::Connected, &policy, CAP, t0());
        assert_eq!((slot.overdue, slot.deadline), (ms(125), ms(500)));
        fill(&mut rtt, Route::Connected, ms(200));
        assert_eq!(
            rtt.deadlines(Route::Connected, &policy, CAP, t0()).deadline,
            ms(600)
        );
        // A slow one: the request timeout, never later, and never overdue after it.
        fill(&mut rtt, Route::Connected, Duration::from_secs(8));
        let slot = rtt.deadlines(Route::Connected, &policy, CAP, t0());
        assert_eq!((slot.overdue, slot.deadline), (Duration::from_secs(8), CAP));
        fill(&mut rtt, Route::Connected, Duration::from_secs(20));
        let slot = rtt.deadlines(Route::Connected, &policy, CAP, t0());
        assert_eq!((slot.overdue, slot.deadline), (CAP, CAP));
        // A sample beyond what the window can hold saturates instead of wrapping.
        rtt.record(Route::Dial, Duration::from_secs(1 << 40), t0());
        assert!(rtt.dial.samples.iter().any(|(_, s)| *s == u32::MAX));
    }

    #[test]
    fn a_multiplier_below_one_or_not_a_number_counts_as_one() {
        let mut rtt = RttEstimator::default();
        fill(&mut rtt, Route::Dial, ms(2000));
        for multiplier in [0.0, -3.0, f64::NAN, 0.5] {
            let policy = RequestDeadlines {
                multiplier,
                ..RequestDeadlines::default()
            };
            let slot = rtt.deadlines(Route::Dial, &policy, CAP, t0());
            assert_eq!((slot.overdue, slot.deadline), (ms(2000), ms(2000)));
        }
        let huge = RequestDeadlines {
            multiplier: f64::INFINITY,
            ..RequestDeadlines::default()
        };
        assert_eq!(rtt.deadlines(Route::Dial, &huge, CAP, t0()).deadline, CAP);
    }

    #[test]
    fn old_answers_age_out_and_the_route_goes_cold_again() {
        let policy = RequestDeadlines::default();
        let mut rtt = RttEstimator::default();
        let start = t0();
        // A start-up storm: every answer took 6 s.
        for i in 0..WINDOW as u64 {
            rtt.record(Route::Connected, ms(6000), start + ms(i * 100));
        }
        let stormy = rtt.deadlines(Route::Connected, &policy, CAP, start + ms(6400));
        assert_eq!((stormy.overdue, stormy.deadline), (ms(6000), ms(9000)));
        // A minute after the last of them, nothing is known: cold, not 9 s.
        let later = start + ms(6300) + policy.max_age;
        let cold = rtt.deadlines(Route::Connected, &policy, CAP, later);
        assert_eq!((cold.overdue, cold.deadline), (policy.cold, policy.cold));
        // Fresh answers count from the fifth on, whatever the old ones said.
        for i in 0..MIN_SAMPLES as u64 {
            assert_eq!(
                rtt.estimate(Route::Connected, later, policy.max_age),
                None,
                "{i} fresh answers"
            );
            rtt.record(Route::Connected, ms(100 + i * 50), later);
        }
        assert_eq!(
            rtt.estimate(Route::Connected, later, policy.max_age),
            Some(ms(300))
        );
        let fresh = rtt.deadlines(Route::Connected, &policy, CAP, later);
        assert_eq!((fresh.overdue, fresh.deadline), (ms(300), policy.floor));
        // Half-way through the storm's samples ageing out, only the young half counts.
        let mid = start + ms(3200) + policy.max_age;
        assert_eq!(
            rtt.estimate(Route::Connected, mid, policy.max_age),
            Some(ms(6000))
        );
    }
}
