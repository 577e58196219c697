//! The transport's delay (memory connections whose reads are held back by the receiving
//! node's delay) and the tally of requests the nodes received from the clients.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{AsyncRead, AsyncWrite};
use futures_timer::Delay;
use kadence::MessageType;
use libp2p::PeerId;

/// `inner` with every chunk read handed out `delay` after it arrived.
pub struct Delayed<C> {
    pub inner: C,
    pub delay: Duration,
    /// Chunks received, with when; an empty chunk is the end of the stream.
    pub arrived: VecDeque<(Instant, Vec<u8>)>,
    pub ended: bool,
    pub timer: Option<(Instant, Delay)>,
}

impl<C: AsyncRead + Unpin> AsyncRead for Delayed<C> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        while !this.ended {
            let mut chunk = vec![0u8; 16 * 1024];
            match Pin::new(&mut this.inner).poll_read(cx, &mut chunk) {
                Poll::Ready(Ok(0)) => {
                    this.ended = true;
                    this.arrived.push_back((Instant::now(), Vec::new()));
                }
                Poll::Ready(Ok(n)) => {
                    chunk.truncate(n);
                    this.arrived.push_back((Instant::now(), chunk));
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => break,
            }
        }
        loop {
            let Some((at, data)) = this.arrived.front_mut() else {
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
                    this.arrived.pop_front();
                }
                return Poll::Ready(Ok(n));
            }
            // One timer for the chunk at the front; a new front gets a new timer.
            if this.timer.as_ref().is_none_or(|(d, _)| *d != due) {
                this.timer = Some((due, Delay::new(due - now)));
            }
            let (_, timer) = this.timer.as_mut().expect("timer set above");
            if Pin::new(timer).poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

impl<C: AsyncWrite + Unpin> AsyncWrite for Delayed<C> {
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

/// Inbound requests every node received from the watched peers (the clients), by type.
pub struct Tally {
    watched: Vec<PeerId>,
    counts: Vec<[AtomicU64; 6]>,
}

impl Tally {
    pub fn new(watched: Vec<PeerId>) -> Self {
        let counts = watched.iter().map(|_| Default::default()).collect();
        Self { watched, counts }
    }
    pub fn slot(kind: MessageType) -> usize {
        match kind {
            MessageType::PutValue => 0,
            MessageType::GetValue => 1,
            MessageType::AddProvider => 2,
            MessageType::GetProviders => 3,
            MessageType::FindNode => 4,
            MessageType::Ping => 5,
        }
    }
    pub fn record(&self, from: &PeerId, kind: MessageType) {
        if let Some(i) = self.watched.iter().position(|w| w == from) {
            self.counts[i][Self::slot(kind)].fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn get(&self, from: &PeerId, kind: MessageType) -> u64 {
        self.watched.iter().position(|w| w == from).map_or(0, |i| {
            self.counts[i][Self::slot(kind)].load(Ordering::Relaxed)
        })
    }
}
