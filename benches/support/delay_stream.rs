//! A connection whose reads are held back: each chunk received is handed out only once
//! `arrival + delay` has passed, so that a node given a delay pays it on everything it
//! receives, as a node far away would. Writes pass through untouched. Shared by the swarm
//! benchmarks, which wrap it when they need more (silence, a count of bytes sent).

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use futures_timer::Delay;

/// `inner` with every chunk read handed out `delay` after it arrived.
pub struct DelayedStream<C> {
    inner: C,
    delay: Duration,
    /// Received chunks with their arrival time; an empty chunk marks the end of the stream.
    queue: VecDeque<(Instant, Vec<u8>)>,
    inner_done: bool,
    /// The timer of the chunk at the front, with when it is due.
    timer: Option<(Instant, Delay)>,
}

impl<C> DelayedStream<C> {
    pub fn new(inner: C, delay: Duration) -> Self {
        Self {
            inner,
            delay,
            queue: VecDeque::new(),
            inner_done: false,
            timer: None,
        }
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for DelayedStream<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Take in everything that has arrived, stamping it with its arrival time.
        while !this.inner_done {
            let mut chunk = [0u8; 16 * 1024];
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => {
                    this.inner_done = true;
                    this.queue.push_back((Instant::now(), Vec::new()));
                }
                Poll::Ready(Ok(n)) => this.queue.push_back((Instant::now(), chunk[..n].to_vec())),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            let Some((at, data)) = this.queue.front_mut() else {
                return Poll::Pending;
            };
            let due = *at + this.delay;
            let now = Instant::now();
            if now >= due {
                this.timer = None;
                if data.is_empty() {
                    return Poll::Ready(Ok(0));
                }
                let n = data.len().min(buf.len());
                buf[..n].copy_from_slice(&data[..n]);
                data.drain(..n);
                if data.is_empty() {
                    this.queue.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            // One timer for the chunk at the front; a new front gets a new timer. A timer
            // that fired is dropped, so that the loop never polls a finished one again.
            match &mut this.timer {
                Some((deadline, timer)) if *deadline == due => {
                    if Pin::new(timer).poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    this.timer = None;
                }
                _ => {
                    let mut timer = Delay::new(due - now);
                    if Pin::new(&mut timer).poll(cx).is_pending() {
                        this.timer = Some((due, timer));
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for DelayedStream<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
