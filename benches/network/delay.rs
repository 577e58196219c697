//! A connection wrapper that delays reads: bytes are handed out only once `arrival + delay`
//! has passed, so every connection of a node pays that node's access delay on receive. Every
//! byte written is counted in [`SENT`].
//!
//! A node can be made silent (`--churn silent:SHARE`): from then on every read, write, flush
//! and close on its end of every connection stays pending, including the connections dialled
//! to it later. Its peers see what an unreachable or overloaded peer shows on the live
//! network: connections that stay open but carry nothing back, and dials whose handshake never
//! ends. Both implementations see exactly the same thing, since neither knows of the wrapper.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use futures_timer::Delay;

/// Bytes written on every delayed connection of the process (noise and yamux framing
/// included): what the network carried.
pub static SENT: AtomicU64 = AtomicU64::new(0);

/// `inner` with its reads delayed by `delay`, stalled altogether while `silent` is set.
pub struct DelayedConn<C> {
    inner: C,
    delay: Duration,
    /// The node's silence switch, shared by all its connections.
    silent: Arc<AtomicBool>,
    /// Received chunks with their arrival time; an empty chunk marks end of stream.
    queue: VecDeque<(Instant, Vec<u8>)>,
    inner_done: bool,
    timer: Option<(Instant, Delay)>,
}

impl<C> DelayedConn<C> {
    pub fn new(inner: C, delay: Duration, silent: Arc<AtomicBool>) -> Self {
        Self {
            inner,
            delay,
            silent,
            queue: VecDeque::new(),
            inner_done: false,
            timer: None,
        }
    }
}

impl<C> DelayedConn<C> {
    /// A silent end never makes progress again, so no waker is kept: the connection's task
    /// simply stops hearing from it, as from a peer that went quiet.
    fn is_silent(&self) -> bool {
        self.silent.load(Ordering::Relaxed)
    }
}

impl<C: AsyncRead + Unpin> AsyncRead for DelayedConn<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.is_silent() {
            return Poll::Pending;
        }
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

impl<C: AsyncWrite + Unpin> AsyncWrite for DelayedConn<C> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.is_silent() {
            return Poll::Pending;
        }
        let written = Pin::new(&mut self.get_mut().inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            SENT.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_silent() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_silent() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}
