//! The reprovide sweep's schedule, sans-IO: the keyspace cut into regions, each with its own
//! slot in the reprovide interval.
//!
//! A region is every key whose point (SHA-256) starts with the same `depth` bits. The depth is
//! chosen so that a region holds about k peers: with `f` leading full buckets in our routing
//! table, the network has roughly k * 2^f peers, so `depth = f`. Region `r` (of `2^depth`, in
//! keyspace order) is due at `cycle start + interval * r / 2^depth`, cycles being aligned on
//! the Unix epoch: the schedule is a function of the wall clock, so a restarted node resumes
//! where it was, and regions spread their work evenly over the interval.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::key::Key;

/// A region of the keyspace: the points whose first `depth` bits are `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    /// Which region, in keyspace order.
    pub index: u64,
    /// Prefix length (at most 63).
    pub depth: u8,
}

impl Region {
    fn prefix_bytes(&self, next_bit: bool) -> [u8; 32] {
        let mut bytes = [0u8; 32];
        let mut word = if self.depth == 0 {
            0
        } else {
            self.index << (64 - u32::from(self.depth))
        };
        if next_bit && self.depth < 64 {
            word |= 1 << (63 - u32::from(self.depth));
        }
        bytes[..8].copy_from_slice(&word.to_be_bytes());
        bytes
    }

    /// The index, at `depth`, of the region holding this one's first point.
    pub(crate) fn index_at(&self, depth: u8) -> u64 {
        shift(self.index, self.depth, depth)
    }

    /// The first point of the region: where its keys start in keyspace order.
    pub fn start(&self) -> Key {
        Key::from_hash(self.prefix_bytes(false))
    }

    /// The middle of the region: the target of the lookup that finds its peers.
    pub fn center(&self) -> Key {
        Key::from_hash(self.prefix_bytes(true))
    }

    /// Whether `key` lies in the region.
    pub fn contains(&self, key: &Key) -> bool {
        if self.depth == 0 {
            return true;
        }
        let word = u64::from_be_bytes(key.as_bytes()[..8].try_into().expect("8 bytes"));
        word >> (64 - u32::from(self.depth)) == self.index
    }
}

/// How far the sweep got in a cycle: every region before `next` (counted at `depth`) was
/// read and announced. The store keeps it ([`Store::save_sweep_mark`]), so that a restarted
/// node does not read again, to catch up, the regions it finished before it stopped.
///
/// [`Store::save_sweep_mark`]: crate::Store::save_sweep_mark
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SweepMark {
    /// The cycle: whole reprovide intervals since the Unix epoch.
    pub cycle: u64,
    /// The first region of the cycle not known to be done.
    pub next: u64,
    /// The region depth `next` counts at (the keyspace cut into 2^depth regions).
    pub depth: u8,
}

impl SweepMark {
    /// `next` at `depth`, rounded down: a region only partly below the mark is read again.
    fn next_at(&self, depth: u8) -> u64 {
        shift(self.next, self.depth, depth)
    }
}

/// A region index at depth `from` as the index at depth `to` of the region holding its first
/// point.
fn shift(index: u64, from: u8, to: u8) -> u64 {
    let (from, to) = (u32::from(from.min(63)), u32::from(to.min(63)));
    if to >= from {
        index << (to - from)
    } else {
        index >> (from - to)
    }
}

/// The regions due, in order, as time passes.
#[derive(Debug)]
pub(crate) struct Schedule {
    interval: Duration,
    depth: u8,
    /// The cycle and the next region of it not yet handed out.
    cursor: Option<(u64, u64)>,
    /// Where the sweep stood when the node stopped: the first call of `due` skips the regions
    /// of that cycle before it.
    resume: Option<SweepMark>,
}

impl Schedule {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            // Whole seconds: cycles are counted in seconds since the epoch.
            interval: Duration::from_secs(interval.as_secs().max(1)),
            depth: 0,
            cursor: None,
            resume: None,
        }
    }

    /// Skips, at the first `due` after a start, the regions `mark` says were done.
    pub(crate) fn resume_from(&mut self, mark: SweepMark) {
        if self.cursor.is_none() {
            self.resume = Some(mark);
        }
    }

    /// The cycle and next region of the cursor (`None` before the first `due`).
    pub(crate) fn cursor(&self) -> Option<(u64, u64)> {
        self.cursor
    }

    /// The region holding `key` at the current depth.
    pub(crate) fn region_of(&self, key: &Key) -> Region {
        let word = u64::from_be_bytes(key.as_bytes()[..8].try_into().expect("8 bytes"));
        let index = if self.depth == 0 {
            0
        } else {
            word >> (64 - u32::from(self.depth))
        };
        Region {
            index,
            depth: self.depth,
        }
    }

    /// The current region depth: the keyspace is cut into 2^depth regions.
    pub(crate) fn depth(&self) -> u8 {
        self.depth
    }

    /// The region depth for `leading_full_buckets` full buckets in our table.
    pub(crate) fn set_depth(&mut self, leading_full_buckets: usize) {
        let depth = leading_full_buckets.min(20) as u8;
        if depth != self.depth {
            // Re-map the cursor to the same point of the cycle at the new granularity.
            if let Some((cycle, next)) = self.cursor {
                let fraction = next as f64 / (1u64 << self.depth) as f64;
                let next = (fraction * (1u64 << depth) as f64).ceil() as u64;
                self.cursor = Some((cycle, next));
            }
            self.depth = depth;
        }
    }

    fn cycle_of(&self, now: SystemTime) -> (u64, Duration) {
        let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
        let secs = self.interval.as_secs();
        let cycle = since.as_secs() / secs;
        let into = since.saturating_sub(Duration::from_secs(cycle * secs));
        (cycle, into)
    }

    /// The slot of region `index` within a cycle.
    fn slot(&self, index: u64) -> Duration {
        self.interval
            .mul_f64(index as f64 / (1u64 << self.depth) as f64)
    }

    /// Regions whose slot passed since the last call, oldest first, each with the time it was
    /// due. The first call after a start hands out every region of the current cycle whose
    /// slot passed, due now: the node was not running at their slots, so they are catching
    /// up, not late (their keys are skipped when they were announced recently, so nothing is
    /// done twice; a key whose announcement the downtime missed is overdue by its own time,
    /// see `SweepReport::overdue`).
    pub(crate) fn due(&mut self, now: SystemTime) -> Vec<(Region, SystemTime)> {
        let (cycle, into) = self.cycle_of(now);
        let count = 1u64 << self.depth;
        let starting = self.cursor.is_none();
        // A restart within the cycle of its mark resumes past the regions done before it.
        let resumed = match self.resume.take() {
            Some(mark) if starting && mark.cycle == cycle => mark.next_at(self.depth).min(count),
            _ => 0,
        };
        let (mut cursor_cycle, mut next) = self.cursor.unwrap_or((cycle, resumed));
        let start_of = |c: u64| UNIX_EPOCH + Duration::from_secs(c * self.interval.as_secs());
        let mut due = Vec::new();
        if cursor_cycle < cycle {
            // The rest of the cycle the cursor was in, then the new one from its start.
            while next < count {
                let region = Region {
                    index: next,
                    depth: self.depth,
                };
                due.push((region, start_of(cursor_cycle) + self.slot(next)));
                next += 1;
            }
            cursor_cycle = cycle;
            next = 0;
        }
        while next < count && self.slot(next) <= into {
            let region = Region {
                index: next,
                depth: self.depth,
            };
            let slot = if starting {
                now
            } else {
                start_of(cycle) + self.slot(next)
            };
            due.push((region, slot));
            next += 1;
        }
        self.cursor = Some((cursor_cycle, next));
        due
    }

    /// How long until the next region is due.
    pub(crate) fn until_next(&self, now: SystemTime) -> Duration {
        let (cycle, into) = self.cycle_of(now);
        match self.cursor {
            Some((c, next)) if c == cycle && next < (1u64 << self.depth) => {
                self.slot(next).saturating_sub(into)
            }
            Some((c, _)) if c == cycle => self.interval.saturating_sub(into),
            _ => Duration::ZERO,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_partition_the_keyspace_in_order() {
        for depth in [0u8, 1, 3, 8] {
            let regions: Vec<Region> = (0..1u64 << depth)
                .map(|index| Region { index, depth })
                .collect();
            for i in 0..200u32 {
                let key = Key::new(&i.to_be_bytes());
                let holders: Vec<&Region> = regions.iter().filter(|r| r.contains(&key)).collect();
                assert_eq!(holders.len(), 1, "exactly one region holds each key");
                assert!(holders[0].start() <= key);
            }
            for r in &regions {
                assert!(r.contains(&r.start()) && r.contains(&r.center()));
            }
        }
    }

    #[test]
    fn regions_come_due_spread_over_the_interval() {
        let interval = Duration::from_secs(8000);
        let mut schedule = Schedule::new(interval);
        schedule.set_depth(3);
        // A cycle starts on a multiple of the interval since the epoch.
        let cycle_start = UNIX_EPOCH + interval * 1000;
        let due = schedule.due(cycle_start);
        assert_eq!(due, vec![(Region { index: 0, depth: 3 }, cycle_start)]);
        assert_eq!(schedule.until_next(cycle_start), Duration::from_secs(1000));
        let due = schedule.due(cycle_start + Duration::from_secs(2500));
        assert_eq!(
            due.iter().map(|(r, _)| r.index).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(
            due[1].1,
            cycle_start + Duration::from_secs(2000),
            "its slot"
        );
        assert!(schedule
            .due(cycle_start + Duration::from_secs(2600))
            .is_empty());
        // The next cycle: the rest of this one, then the start of the next.
        let due = schedule.due(cycle_start + interval + Duration::from_secs(10));
        assert_eq!(
            due.iter().map(|(r, _)| r.index).collect::<Vec<_>>(),
            vec![3, 4, 5, 6, 7, 0]
        );
    }

    #[test]
    fn a_restart_hands_out_the_regions_already_passed_once() {
        let interval = Duration::from_secs(8000);
        let mut schedule = Schedule::new(interval);
        schedule.set_depth(2);
        let now = UNIX_EPOCH + interval * 7 + Duration::from_secs(5000);
        let due = schedule.due(now);
        assert_eq!(
            due.iter().map(|(r, _)| r.index).collect::<Vec<_>>(),
            vec![0, 1, 2]
        );
        assert!(
            due.iter().all(|(_, at)| *at == now),
            "catching up after a start is not being late"
        );
        assert!(schedule.due(now).is_empty());
    }

    #[test]
    fn a_restart_with_a_mark_skips_the_regions_done_in_that_cycle_only() {
        let interval = Duration::from_secs(8000);
        let now = UNIX_EPOCH + interval * 7 + Duration::from_secs(5000);
        let mark = |cycle, next, depth| SweepMark { cycle, next, depth };
        let indexes = |due: Vec<(Region, SystemTime)>| -> Vec<u64> {
            due.iter().map(|(r, _)| r.index).collect()
        };
        // Done through region 2 of 4 in this cycle, read at depth 3: regions 0..4 skipped, 4
        // and 5 (slots 4000 and 5000) caught up.
        let mut schedule = Schedule::new(interval);
        schedule.set_depth(3);
        schedule.resume_from(mark(7, 2, 2));
        assert_eq!(indexes(schedule.due(now)), vec![4, 5]);
        // A deeper mark rounds down: region 1 of depth 2 was only half done.
        let mut schedule = Schedule::new(interval);
        schedule.set_depth(2);
        schedule.resume_from(mark(7, 3, 3));
        assert_eq!(indexes(schedule.due(now)), vec![1, 2]);
        // A mark of an earlier cycle says nothing about this one.
        let mut schedule = Schedule::new(interval);
        schedule.set_depth(2);
        schedule.resume_from(mark(6, 4, 2));
        assert_eq!(indexes(schedule.due(now)), vec![0, 1, 2]);
        // Every region done: nothing to catch up, the next one comes at its slot.
        let mut schedule = Schedule::new(interval);
        schedule.set_depth(2);
        schedule.resume_from(mark(7, 4, 2));
        assert!(schedule.due(now).is_empty());
        assert_eq!(schedule.until_next(now), Duration::from_secs(3000));
    }
}
