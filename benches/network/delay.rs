//! The network bench's connections: a [`DelayedStream`] (every connection of a node pays that
//! node's access delay on receive) whose written bytes are counted in [`SENT`].
//!
//! A node can be made silent (`--churn silent:SHARE`): from then on every read, write, flush
//! and close on its end of every connection stays pending, including the connections dialled
//! to it later. Its peers see what an unreachable or overloaded peer shows on the live
//! network: connections that stay open but carry nothing back, and dials whose handshake never
//! ends. Both implementations see exactly the same thing, since neither knows of the wrapper.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};

use crate::delay_stream::DelayedStream;

/// Bytes written on every delayed connection of the process (noise and yamux framing
/// included): what the network carried.
pub static SENT: AtomicU64 = AtomicU64::new(0);

/// `inner` with its reads delayed by `delay`, stalled altogether while `silent` is set.
pub struct DelayedConn<C> {
    stream: DelayedStream<C>,
    /// The node's silence switch, shared by all its connections.
    silent: Arc<AtomicBool>,
}

impl<C> DelayedConn<C> {
    pub fn new(inner: C, delay: Duration, silent: Arc<AtomicBool>) -> Self {
        Self {
            stream: DelayedStream::new(inner, delay),
            silent,
        }
    }

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
        if self.is_silent() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
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
        let written = Pin::new(&mut self.get_mut().stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &written {
            SENT.fetch_add(*n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_silent() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.is_silent() {
            return Poll::Pending;
        }
        Pin::new(&mut self.get_mut().stream).poll_close(cx)
    }
}
