//! Kafka's framing: every request and response is a 4-byte big-endian size, then that many
//! bytes.
//!
//! ```text
//!   | size: i32 BE | size bytes: request header | request body |
//! ```
//!
//! The size comes from the socket, so it is checked before anything is allocated for it: a
//! negative size or one above `socket.request.max.bytes` closes the connection (Kafka's
//! `InvalidReceiveException`). Even an accepted size is not allocated up front: the buffer
//! grows with the bytes that actually arrive, so a peer that announces 100 MiB and sends
//! nothing holds no memory.

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Kafka's default `socket.request.max.bytes`: 100 MiB.
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 100 * 1024 * 1024;

/// What the buffer starts with; it grows as bytes arrive.
const INITIAL_BUFFER: usize = 64 * 1024;

/// Why a frame could not be read. Every one of these closes the connection.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The size prefix is negative or above the cap.
    #[error("frame size {size} is not in [0, {max}] (socket.request.max.bytes)")]
    InvalidSize {
        /// The size the peer announced.
        size: i32,
        /// `socket.request.max.bytes`.
        max: usize,
    },
    /// The peer closed the connection in the middle of a frame.
    #[error("connection closed after {received} of {size} bytes of a frame")]
    Truncated {
        /// Bytes of the frame received.
        received: usize,
        /// The frame's announced size.
        size: usize,
    },
    /// Reading from the socket failed.
    #[error("reading a frame failed")]
    Io(#[from] std::io::Error),
}

/// Reads one frame: `Ok(None)` when the peer closed the connection between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    max_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = reader.read(&mut prefix[got..]).await?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(FrameError::Truncated {
                    received: got,
                    size: prefix.len(),
                })
            };
        }
        got += n;
    }
    let size = i32::from_be_bytes(prefix);
    let len = usize::try_from(size)
        .ok()
        .filter(|&len| len <= max_bytes)
        .ok_or(FrameError::InvalidSize {
            size,
            max: max_bytes,
        })?;
    let mut buf = BytesMut::with_capacity(len.min(INITIAL_BUFFER));
    while buf.len() < len {
        if buf.capacity() == buf.len() {
            // Double, up to what is still to come: memory follows the bytes received.
            buf.reserve(buf.len().min(len - buf.len()).max(1));
        }
        let mut limited = (&mut *reader).take((len - buf.len()) as u64);
        if limited.read_buf(&mut buf).await? == 0 {
            return Err(FrameError::Truncated {
                received: buf.len(),
                size: len,
            });
        }
    }
    Ok(Some(buf.freeze()))
}

/// Prepends the size to an encoded response: the bytes to write. `body` was encoded after 4
/// reserved bytes (see [`response_buffer`]).
pub fn finish_frame(mut body: BytesMut) -> Result<Bytes, std::num::TryFromIntError> {
    let size = i32::try_from(body.len() - 4)?;
    body[..4].copy_from_slice(&size.to_be_bytes());
    Ok(body.freeze())
}

/// A buffer for one response, with room for its size prefix.
pub fn response_buffer() -> BytesMut {
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(&[0; 4]);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8], max: usize) -> Result<Option<Bytes>, FrameError> {
        let mut r = bytes;
        read_frame(&mut r, max).await
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_sizes_are_capped() {
        let mut two = vec![0, 0, 0, 3, b'a', b'b', b'c', 0, 0, 0, 0];
        let mut r = two.as_slice();
        assert_eq!(read_frame(&mut r, 10).await.unwrap().unwrap(), &b"abc"[..]);
        assert_eq!(read_frame(&mut r, 10).await.unwrap().unwrap(), &b""[..]);
        assert!(read_frame(&mut r, 10).await.unwrap().is_none());

        assert!(matches!(
            read(&[0xff, 0xff, 0xff, 0xff], 10).await,
            Err(FrameError::InvalidSize { size: -1, .. })
        ));
        assert!(matches!(
            read(&[0, 0, 0, 11], 10).await,
            Err(FrameError::InvalidSize { size: 11, max: 10 })
        ));
        // i32::MAX announced, 3 bytes sent: an error, and nothing near 2 GiB allocated.
        assert!(matches!(
            read(&[0x7f, 0xff, 0xff, 0xff, 1, 2, 3], usize::MAX).await,
            Err(FrameError::Truncated { received: 3, .. })
        ));
        assert!(matches!(
            read(&[0, 0], 10).await,
            Err(FrameError::Truncated {
                received: 2,
                size: 4
            })
        ));
        two.truncate(5);
        assert!(matches!(
            read(&two, 10).await,
            Err(FrameError::Truncated {
                received: 1,
                size: 3
            })
        ));
    }

    #[test]
    fn the_size_prefix_counts_the_body() {
        let mut buf = response_buffer();
        buf.extend_from_slice(b"hello");
        assert_eq!(&finish_frame(buf).unwrap()[..], b"\0\0\0\x05hello");
    }
}
