//! One timer for the successive timeouts of a stream.
//!
//! Creating, resetting or dropping a `futures_timer::Delay` is a trip to the timer thread (a
//! push onto its list and a wake-up). An inbound stream that serves thousands of requests a
//! second, with a read, a response and a write timeout for each, spent a tenth of the server's
//! CPU on its timers (measured with `benches/server.rs` under perf). A [`Deadline`] keeps one
//! `Delay` for the stream's life and moves only an `Instant` per timeout. The `Delay` never
//! fires later than the current deadline; when it fires earlier (the deadline moved on since it
//! was armed), it is re-armed, which happens at most once per `shortest` timeout.

use std::future::{poll_fn, Future};
use std::pin::pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::{select, Either};
use futures::FutureExt;
use futures_timer::Delay;

/// Where absurd timeouts saturate.
const CENTURY: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub(crate) struct Deadline {
    /// When the current timeout expires.
    at: Instant,
    /// The shortest timeout the stream uses: the timer is never armed for longer.
    shortest: Duration,
    /// Armed for `at` or earlier.
    timer: Delay,
}

impl Deadline {
    pub(crate) fn new(shortest: Duration) -> Self {
        // Never armed for zero: a zero re-arm would spin with the timer thread.
        let shortest = shortest.clamp(Duration::from_millis(1), CENTURY);
        Self {
            at: Instant::now() + shortest,
            shortest,
            timer: Delay::new(shortest),
        }
    }

    /// Runs `fut`, giving up once `after` has passed from now. The timer is real: it fires by
    /// itself.
    pub(crate) async fn within<F: Future>(&mut self, after: Duration, fut: F) -> Option<F::Output> {
        let now = Instant::now();
        self.at = now + after.min(CENTURY);
        if after < self.shortest {
            // Sooner than the timer may be armed for: re-arm now (not the common path).
            self.timer.reset(after);
        }
        let expired = poll_fn(|cx| self.poll_expired(cx));
        match select(pin!(fut), pin!(expired)).await {
            Either::Left((out, _)) => Some(out),
            Either::Right(_) => None,
        }
    }

    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            if self.timer.poll_unpin(cx).is_pending() {
                return Poll::Pending;
            }
            let now = Instant::now();
            if now >= self.at {
                return Poll::Ready(());
            }
            // Fired early: the deadline moved on since the timer was armed.
            self.timer.reset((self.at - now).min(self.shortest));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::executor::block_on;
    use futures::future::pending;

    #[test]
    fn expires_after_its_timeout_not_at_the_armed_time() {
        block_on(async {
            let mut deadline = Deadline::new(Duration::from_millis(20));
            // Finished in time: the value comes through.
            assert_eq!(
                deadline
                    .within(Duration::from_millis(20), async { 7 })
                    .await,
                Some(7)
            );
            // Let the first arming pass, then ask for a longer timeout: the timer fires early
            // and must be re-armed, not report expiry.
            std::thread::sleep(Duration::from_millis(30));
            let start = Instant::now();
            let out = deadline
                .within(Duration::from_millis(80), pending::<()>())
                .await;
            let waited = start.elapsed();
            assert_eq!(out, None);
            assert!(
                waited >= Duration::from_millis(80),
                "expired early: {waited:?}"
            );
            assert!(
                waited < Duration::from_millis(1000),
                "expired late: {waited:?}"
            );
        });
    }

    #[test]
    fn a_timeout_shorter_than_the_shortest_still_fires_on_time() {
        block_on(async {
            let mut deadline = Deadline::new(Duration::from_secs(60));
            let start = Instant::now();
            let out = deadline
                .within(Duration::from_millis(30), pending::<()>())
                .await;
            assert_eq!(out, None);
            assert!(start.elapsed() < Duration::from_secs(5));
        });
    }

    #[test]
    fn zero_and_absurd_timeouts_neither_spin_nor_overflow() {
        block_on(async {
            let mut deadline = Deadline::new(Duration::ZERO);
            assert_eq!(deadline.within(Duration::ZERO, pending::<()>()).await, None);
            let step = Delay::new(Duration::from_millis(20));
            assert_eq!(deadline.within(Duration::MAX, step).await, Some(()));
            let mut deadline = Deadline::new(Duration::MAX);
            assert_eq!(deadline.within(Duration::MAX, async { 1 }).await, Some(1));
        });
    }

    #[test]
    fn many_timeouts_in_a_row_each_restart_the_clock() {
        block_on(async {
            let mut deadline = Deadline::new(Duration::from_millis(50));
            // Each step takes 20 ms, under its 50 ms timeout, for 200 ms in all: no step may
            // see the deadline of an earlier one.
            for _ in 0..10 {
                let step = Delay::new(Duration::from_millis(20));
                assert_eq!(
                    deadline.within(Duration::from_millis(50), step).await,
                    Some(())
                );
            }
        });
    }
}
