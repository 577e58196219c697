//! Whether the sweep keeps up, told honestly: how late it is, how long its regions take, and
//! how many workers it would need, so that a node that cannot keep up says what to change
//! instead of falling behind silently (Kubo's old reprovider did).

use std::time::Duration;

/// Where the reprovide sweep stands ([`Behaviour::sweep_status`](crate::Behaviour::sweep_status)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SweepStatus {
    /// Regions the keyspace is cut into now (each swept once per interval).
    pub regions: u64,
    /// Regions being swept now.
    pub running: usize,
    /// Regions due and waiting for a worker.
    pub waiting: usize,
    /// How long the oldest waiting region has waited past its slot (zero: on schedule).
    pub behind: Duration,
    /// Regions swept at once ([`ReprovideConfig::workers`](crate::ReprovideConfig::workers)).
    pub workers: usize,
    /// How long a region took lately (an average of the last ones), once one finished.
    pub region_time: Option<Duration>,
    /// The workers that would sweep every region within the interval at that pace, when more
    /// than [`workers`](Self::workers) are needed.
    pub workers_needed: Option<usize>,
    /// How far past its due time (its last announcement plus the interval) the latest region
    /// announced its most overdue key: records live 48 h, reprovided every 22 h, so past 26 h
    /// some had expired.
    pub overdue: Duration,
    /// Keys announced since the node started, counted as each page of a region is done (a
    /// region of millions of keys reports [`Event::RegionReprovided`](crate::Event::RegionReprovided)
    /// only at its end).
    pub keys_announced: u64,
    /// ADD_PROVIDER messages the sweep wrote since the node started.
    pub messages: u64,
}

/// How long regions take, averaged: the weight of the newest sample.
const WEIGHT: f64 = 0.2;

/// The pace of the sweep, from the regions it finished.
#[derive(Debug, Default)]
pub(crate) struct Pace {
    /// Seconds a region took, moving average; `None` before the first.
    average: Option<f64>,
    /// The most overdue key of the last region.
    pub(crate) overdue: Duration,
    /// Keys announced and messages written since the start.
    pub(crate) keys_announced: u64,
    pub(crate) messages: u64,
}

impl Pace {
    /// A region with keys took `took`. Regions without keys due cost a page read and are not
    /// counted: they would make the pace look faster than the work is.
    pub(crate) fn record(&mut self, took: Duration, keys: usize, overdue: Duration) {
        self.overdue = overdue;
        if keys == 0 {
            return;
        }
        let took = took.as_secs_f64();
        self.average = Some(match self.average {
            Some(average) => average + WEIGHT * (took - average),
            None => took,
        });
    }

    /// How long a region took lately.
    pub(crate) fn region_time(&self) -> Option<Duration> {
        self.average.map(Duration::from_secs_f64)
    }

    /// The workers that sweep `regions` regions within `interval` at this pace, when that is
    /// more than `workers`.
    pub(crate) fn workers_needed(
        &self,
        regions: u64,
        interval: Duration,
        workers: usize,
    ) -> Option<usize> {
        let average = self.average?;
        let needed = (regions as f64 * average / interval.as_secs_f64().max(1.0)).ceil() as usize;
        (needed > workers).then_some(needed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workers_needed_follow_the_pace() {
        let mut pace = Pace::default();
        let interval = Duration::from_secs(22 * 3600);
        assert_eq!(pace.workers_needed(1024, interval, 4), None, "no pace yet");
        // 1,024 regions of 5 minutes: 85 h of work in a 22 h interval, 3.9 workers' worth.
        pace.record(Duration::from_secs(300), 10_000, Duration::ZERO);
        assert_eq!(pace.workers_needed(1024, interval, 4), None);
        assert_eq!(pace.workers_needed(1024, interval, 2), Some(4));
        // Regions without keys due do not make the pace look faster.
        pace.record(Duration::ZERO, 0, Duration::ZERO);
        assert_eq!(pace.region_time(), Some(Duration::from_secs(300)));
        // Slower regions: the average follows, and so does the advice.
        for _ in 0..30 {
            pace.record(Duration::from_secs(600), 10_000, Duration::ZERO);
        }
        assert_eq!(pace.workers_needed(1024, interval, 4), Some(8));
    }
}
