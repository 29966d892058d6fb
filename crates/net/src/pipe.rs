//! Pumping bytes between an upgraded connection and a tunnel stream (an HTTP/2 body each
//! way): the edge does it towards the client, the connector towards the proxy.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Error type of the bodies we produce.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Read sizes adapt between these bounds: a read that fills the buffer doubles the next
/// one (bulk transfer), a short one shrinks it, so an idle session holds a small buffer.
const MIN_CHUNK: usize = 1024;
const MAX_CHUNK: usize = 64 * 1024;

fn next_chunk(current: usize, read: usize) -> usize {
    if read >= current {
        (current * 2).min(MAX_CHUNK)
    } else if read < current / 4 {
        (current / 2).max(MIN_CHUNK)
    } else {
        current
    }
}

/// A body fed from a channel; the sender going away ends the body (half-close).
#[derive(Debug)]
pub struct ChannelBody(pub mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}

/// Which way bytes moved, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the tunnel stream into `io`.
    FromTunnel,
    /// From `io` into the tunnel stream.
    ToTunnel,
}

/// Pumps `from_tunnel` into `io` and `io` into `to_tunnel` until both directions end.
/// If the tunnel stream fails (reset, connection lost) `io` is dropped at once instead of
/// waiting for its peer to notice: a severed tunnel must not leave sessions hanging.
/// `count` sees every chunk as it moves. Returns the bytes moved (from, to) the tunnel.
pub async fn pipe<IO>(
    io: IO,
    mut from_tunnel: Incoming,
    to_tunnel: mpsc::Sender<Bytes>,
    count: impl Fn(Direction, usize),
) -> (u64, u64)
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let mut bytes_in = 0u64;
    let mut bytes_out = 0u64;
    let inbound = async {
        while let Some(frame) = from_tunnel.frame().await {
            let frame = frame.map_err(|_| ())?;
            if let Ok(data) = frame.into_data() {
                bytes_in += data.len() as u64;
                count(Direction::FromTunnel, data.len());
                wr.write_all(&data).await.map_err(|_| ())?;
                wr.flush().await.map_err(|_| ())?;
            }
        }
        let _ = wr.shutdown().await;
        Ok::<(), ()>(())
    };
    let outbound = async {
        let mut chunk = MIN_CHUNK;
        loop {
            let mut buf = BytesMut::with_capacity(chunk);
            match rd.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    chunk = next_chunk(chunk, n);
                    bytes_out += n as u64;
                    count(Direction::ToTunnel, n);
                    if to_tunnel.send(buf.freeze()).await.is_err() {
                        break;
                    }
                }
            }
        }
        drop(to_tunnel);
    };
    {
        tokio::pin!(inbound, outbound);
        tokio::select! {
            r = &mut inbound => if r.is_ok() { outbound.await },
            () = &mut outbound => { let _ = inbound.await; },
        }
    }
    (bytes_in, bytes_out)
}

#[cfg(test)]
mod tests {
    use super::next_chunk;

    #[test]
    fn chunk_sizes_adapt_within_bounds() {
        assert_eq!(next_chunk(1024, 1024), 2048);
        assert_eq!(next_chunk(64 * 1024, 64 * 1024), 64 * 1024);
        assert_eq!(next_chunk(8192, 100), 4096);
        assert_eq!(next_chunk(1024, 10), 1024);
        assert_eq!(next_chunk(8192, 4000), 8192);
    }
}
