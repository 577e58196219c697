//! Frames on a stream: each message is prefixed by its length as an unsigned varint.
//!
//! The length is checked against the maximum before a single byte of the body is buffered, and
//! the body buffer grows only as bytes arrive: a peer announcing a large frame costs us what it
//! actually sends, not what it announces.

use std::io;
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FrameError {
    /// The stream failed, or ended in the middle of a frame. (Shared, so that the error and
    /// the events that carry it can be cloned.)
    #[error("stream I/O: {0}")]
    Io(#[source] Arc<io::Error>),
    /// The length prefix announces more than the configured maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The announced length.
        len: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The length prefix is not a valid unsigned varint (too long or not minimal).
    #[error("invalid length prefix")]
    InvalidPrefix,
}

impl From<io::Error> for FrameError {
    fn from(error: io::Error) -> Self {
        FrameError::Io(Arc::new(error))
    }
}

/// Longest varint encoding of a `u64`.
const MAX_PREFIX_LEN: usize = 10;
/// Body buffer allocated before any of it arrived; it grows as data comes in.
const INITIAL_BODY_CAPACITY: usize = 16 * 1024;

/// Reads one frame. `Ok(None)` is a clean end of stream before the first byte of a frame.
pub async fn read_frame<S>(io: &mut S, max_len: usize) -> Result<Option<Vec<u8>>, FrameError>
where
    S: AsyncRead + Unpin,
{
    let mut prefix = [0u8; MAX_PREFIX_LEN];
    let mut used = 0;
    let len = loop {
        let n = io.read(&mut prefix[used..used + 1]).await?;
        if n == 0 {
            if used == 0 {
                return Ok(None);
            }
            return Err(FrameError::from(io::Error::from(
                io::ErrorKind::UnexpectedEof,
            )));
        }
        used += 1;
        if prefix[used - 1] & 0x80 == 0 {
            let (len, _) = unsigned_varint::decode::u64(&prefix[..used])
                .map_err(|_| FrameError::InvalidPrefix)?;
            break len;
        }
        if used == MAX_PREFIX_LEN {
            return Err(FrameError::InvalidPrefix);
        }
    };
    if len > max_len as u64 {
        return Err(FrameError::TooLarge { len, max: max_len });
    }
    // Grow with what arrives instead of allocating the announced length up front: a peer that
    // announces 4 MiB and sends nothing must not make us hold 4 MiB per stream.
    let mut body = Vec::with_capacity((len as usize).min(INITIAL_BODY_CAPACITY));
    (&mut *io).take(len).read_to_end(&mut body).await?;
    if body.len() as u64 != len {
        return Err(FrameError::from(io::Error::from(
            io::ErrorKind::UnexpectedEof,
        )));
    }
    Ok(Some(body))
}

/// Writes one frame and flushes it, so that "written" means handed to the transport.
pub async fn write_frame<S>(io: &mut S, body: &[u8]) -> Result<(), FrameError>
where
    S: AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(MAX_PREFIX_LEN + body.len());
    let mut prefix = unsigned_varint::encode::u64_buffer();
    buf.extend_from_slice(unsigned_varint::encode::u64(body.len() as u64, &mut prefix));
    buf.extend_from_slice(body);
    io.write_all(&buf).await?;
    io.flush().await?;
    Ok(())
}

/// Writes a frame that already starts with its length prefix, and flushes it: no copy.
pub(crate) async fn write_prefixed_frame<S>(io: &mut S, frame: &[u8]) -> Result<(), FrameError>
where
    S: AsyncWrite + Unpin,
{
    io.write_all(frame).await?;
    io.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use futures::{executor::block_on, io::Cursor};

    use super::*;

    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        block_on(write_frame(&mut out, body)).unwrap();
        out.into_inner()
    }

    #[test]
    fn frames_round_trip_back_to_back() {
        let mut bytes = framed(b"hello");
        bytes.extend(framed(&[7u8; 300]));
        bytes.extend(framed(b""));
        let mut io = Cursor::new(bytes);
        assert_eq!(
            block_on(read_frame(&mut io, 1024)).unwrap().unwrap(),
            b"hello"
        );
        assert_eq!(
            block_on(read_frame(&mut io, 1024)).unwrap().unwrap(),
            vec![7u8; 300]
        );
        assert_eq!(block_on(read_frame(&mut io, 1024)).unwrap().unwrap(), b"");
        assert!(block_on(read_frame(&mut io, 1024)).unwrap().is_none());
    }

    #[test]
    fn oversized_frame_is_refused_from_its_prefix() {
        // Only the prefix is present: the body is never waited for or buffered.
        let mut prefix = unsigned_varint::encode::u64_buffer();
        let bytes = unsigned_varint::encode::u64(5 * 1024 * 1024, &mut prefix).to_vec();
        let mut io = Cursor::new(bytes);
        match block_on(read_frame(&mut io, 4 * 1024 * 1024)) {
            Err(FrameError::TooLarge { len, max }) => {
                assert_eq!(len, 5 * 1024 * 1024);
                assert_eq!(max, 4 * 1024 * 1024);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn a_body_shorter_than_announced_is_an_error() {
        // 4 MiB announced, 10 bytes sent: an error, after buffering only what arrived.
        let mut prefix = unsigned_varint::encode::u64_buffer();
        let mut bytes = unsigned_varint::encode::u64(4 << 20, &mut prefix).to_vec();
        bytes.extend_from_slice(&[1u8; 10]);
        let mut io = Cursor::new(bytes);
        assert!(matches!(
            block_on(read_frame(&mut io, 4 << 20)),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
    }

    #[test]
    fn frame_at_the_limit_is_accepted() {
        let mut io = Cursor::new(framed(&[1u8; 64]));
        assert_eq!(
            block_on(read_frame(&mut io, 64)).unwrap().unwrap().len(),
            64
        );
    }

    #[test]
    fn truncated_body_is_an_io_error() {
        let mut bytes = framed(b"hello world");
        bytes.truncate(5);
        let mut io = Cursor::new(bytes);
        assert!(matches!(
            block_on(read_frame(&mut io, 1024)),
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof
        ));
    }

    #[test]
    fn truncated_prefix_is_an_io_error() {
        let mut io = Cursor::new(vec![0x80]);
        assert!(matches!(
            block_on(read_frame(&mut io, 1024)),
            Err(FrameError::Io(_))
        ));
    }

    #[test]
    fn overlong_prefix_is_invalid() {
        let mut io = Cursor::new(vec![0xff; 11]);
        assert!(matches!(
            block_on(read_frame(&mut io, usize::MAX)),
            Err(FrameError::InvalidPrefix)
        ));
        // A non-minimal encoding of 1.
        let mut io = Cursor::new(vec![0x81, 0x00]);
        assert!(matches!(
            block_on(read_frame(&mut io, 1024)),
            Err(FrameError::InvalidPrefix)
        ));
    }
}
