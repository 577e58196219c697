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

use std::time::Duration;

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
}

impl Default for RequestDeadlines {
    fn default() -> Self {
        Self {
            multiplier: 1.5,
            floor: Duration::from_secs(1),
            cold: Duration::from_secs(3),
        }
    }
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
/// Answers a route needs before its estimate is used (below it, [`RequestDeadlines::cold`]).
/// With five samples the 90th percentile is their maximum: cautious until the window fills.
pub const MIN_SAMPLES: usize = 5;
/// The quantile of the window taken as the estimate, in percent. High, because a deadline
/// must let nearly every live peer answer; not the maximum, so one peer answering after 9 s
/// does not set every deadline.
const QUANTILE_PERCENT: usize = 90;

/// The latest answer times of one route, and their quantile.
#[derive(Debug, Clone)]
struct Window {
    /// Microseconds (saturating at about 71 minutes, far past any request timeout).
    samples: [u32; WINDOW],
    len: usize,
    next: usize,
    estimate: Duration,
}

impl Default for Window {
    fn default() -> Self {
        Self {
            samples: [0; WINDOW],
            len: 0,
            next: 0,
            estimate: Duration::ZERO,
        }
    }
}

impl Window {
    fn record(&mut self, rtt: Duration) {
        self.samples[self.next] = u32::try_from(rtt.as_micros()).unwrap_or(u32::MAX);
        self.next = (self.next + 1) % WINDOW;
        self.len = (self.len + 1).min(WINDOW);
        // Recomputed here, once per answer, rather than per request sent.
        let mut sorted = self.samples;
        let filled = &mut sorted[..self.len];
        let rank = (self.len * QUANTILE_PERCENT).div_ceil(100).max(1) - 1;
        let (_, quantile, _) = filled.select_nth_unstable(rank);
        self.estimate = Duration::from_micros(u64::from(*quantile));
    }

    fn estimate(&self) -> Option<Duration> {
        (self.len >= MIN_SAMPLES).then_some(self.estimate)
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

/// Round-trip estimates of the lookup requests, per [`Route`]; about 0.5 KB whatever the
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

    /// A request on `route` was answered `rtt` after it was sent.
    pub(crate) fn record(&mut self, route: Route, rtt: Duration) {
        match route {
            Route::Connected => self.connected.record(rtt),
            Route::Dial => self.dial.record(rtt),
        }
    }

    /// The estimate of `route` (a high quantile of its answer times), once it has enough
    /// samples.
    pub(crate) fn estimate(&self, route: Route) -> Option<Duration> {
        self.window(route).estimate()
    }

    /// When a request sent now on `route` is overdue, and when the lookup stops waiting for
    /// it: see [`RequestDeadlines`]. Never more than `cap` (the request timeout).
    pub(crate) fn deadlines(&self, route: Route, policy: &RequestDeadlines, cap: Duration) -> Slot {
        match self.estimate(route) {
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

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn fill(rtt: &mut RttEstimator, route: Route, sample: Duration) {
        for _ in 0..WINDOW {
            rtt.record(route, sample);
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
        assert_eq!(rtt.deadlines(Route::Connected, &policy, CAP), cold);
        for _ in 0..MIN_SAMPLES - 1 {
            rtt.record(Route::Connected, ms(800));
            assert_eq!(rtt.deadlines(Route::Connected, &policy, CAP), cold);
        }
        rtt.record(Route::Connected, ms(800));
        assert_eq!(rtt.estimate(Route::Connected), Some(ms(800)));
        let warm = Slot {
            overdue: ms(800),
            deadline: ms(1200),
        };
        assert_eq!(rtt.deadlines(Route::Connected, &policy, CAP), warm);
        // The other route learned nothing.
        assert_eq!(rtt.deadlines(Route::Dial, &policy, CAP), cold);
        // A cold value above the request timeout is cut to it.
        assert_eq!(
            rtt.deadlines(Route::Dial, &policy, ms(2000)).deadline,
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
            rtt.record(Route::Dial, sample);
        }
        let estimate = rtt.estimate(Route::Dial).expect("warm");
        assert!(
            estimate >= ms(250) && estimate <= ms(300),
            "the 90th percentile of 10-300 ms, not the outliers: {estimate:?}"
        );
        // The network slows down: the window follows within one window of answers.
        fill(&mut rtt, Route::Dial, ms(2000));
        assert_eq!(rtt.estimate(Route::Dial), Some(ms(2000)));
        // And back.
        fill(&mut rtt, Route::Dial, ms(40));
        assert_eq!(rtt.estimate(Route::Dial), Some(ms(40)));
        assert_eq!(rtt.estimate(Route::Connected), None, "routes are apart");
    }

    #[test]
    fn the_deadline_is_clamped_between_floor_and_cap() {
        let policy = RequestDeadlines {
            multiplier: 3.0,
            floor: ms(500),
            cold: Duration::from_secs(30),
        };
        let mut rtt = RttEstimator::default();
        // Cold, and a cold value above the cap: the cap.
        assert_eq!(rtt.deadlines(Route::Connected, &policy, CAP).deadline, CAP);
        // A fast network: the floor, and overdue at a quarter of it.
        fill(&mut rtt, Route::Connected, ms(1));
        let slot = rtt.deadlines(Route::Connected, &policy, CAP);
        assert_eq!((slot.overdue, slot.deadline), (ms(125), ms(500)));
        fill(&mut rtt, Route::Connected, ms(200));
        assert_eq!(
            rtt.deadlines(Route::Connected, &policy, CAP).deadline,
            ms(600)
        );
        // A slow one: the request timeout, never later, and never overdue after it.
        fill(&mut rtt, Route::Connected, Duration::from_secs(8));
        let slot = rtt.deadlines(Route::Connected, &policy, CAP);
        assert_eq!((slot.overdue, slot.deadline), (Duration::from_secs(8), CAP));
        fill(&mut rtt, Route::Connected, Duration::from_secs(20));
        let slot = rtt.deadlines(Route::Connected, &policy, CAP);
        assert_eq!((slot.overdue, slot.deadline), (CAP, CAP));
        // A sample beyond what the window can hold saturates instead of wrapping.
        rtt.record(Route::Dial, Duration::from_secs(1 << 40));
        assert!(rtt.dial.samples.contains(&u32::MAX));
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
            let slot = rtt.deadlines(Route::Dial, &policy, CAP);
            assert_eq!((slot.overdue, slot.deadline), (ms(2000), ms(2000)));
        }
        let huge = RequestDeadlines {
            multiplier: f64::INFINITY,
            ..RequestDeadlines::default()
        };
        assert_eq!(rtt.deadlines(Route::Dial, &huge, CAP).deadline, CAP);
    }
}
