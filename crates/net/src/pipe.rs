//! Pumping bytes between an upgraded connection and a tunnel stream (an HTTP/2 body each
//! way): the edge does it towards the client, the connector towards the proxy.
//!
//! The direction into the tunnel is a [`ReaderBody`] that reads the connection itself
//! from inside hyper's body pump: no channel and no extra task between the socket and
//! the HTTP/2 stream, and hyper polls it only when the stream has send capacity, so
//! HTTP/2 flow control is the backpressure (a slow peer stops the reads).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use futures_util::FutureExt;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf};
use tokio::sync::oneshot;

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

/// Which way bytes moved, for counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the tunnel stream into `io`.
    FromTunnel,
    /// From `io` into the tunnel stream.
    ToTunnel,
}

type Counter = Arc<dyn Fn(Direction, usize) + Send + Sync>;

/// What [`pipe`] hands to the [`ReaderBody`] once the connection exists.
struct Attached<IO> {
    /// Only ever used through `get_mut`; the mutex makes the body `Sync` (as boxed bodies
    /// must be) over connections that are only `Send`.
    rd: Mutex<ReadHalf<IO>>,
    count: Counter,
}

/// The tunnel-bound direction of a pipe: a body that reads the connection given to
/// [`pipe`] later. Ends at the connection's EOF (a half-close) or read error.
pub struct ReaderBody<IO> {
    state: ReadState<IO>,
    /// Kept between reads only while data flows; an idle session holds none.
    buf: BytesMut,
    chunk: usize,
    moved: u64,
    done: Option<oneshot::Sender<u64>>,
}

enum ReadState<IO> {
    Waiting(oneshot::Receiver<Attached<IO>>),
    Reading(Attached<IO>),
    Done,
}

impl<IO> std::fmt::Debug for ReaderBody<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match self.state {
            ReadState::Waiting(_) => "waiting",
            ReadState::Reading(_) => "reading",
            ReadState::Done => "done",
        };
        f.debug_struct("ReaderBody")
            .field("state", &state)
            .field("moved", &self.moved)
            .finish()
    }
}

/// The other end of a [`ReaderBody`], consumed by [`pipe`].
pub struct Attach<IO> {
    tx: oneshot::Sender<Attached<IO>>,
    done: oneshot::Receiver<u64>,
}

impl<IO> std::fmt::Debug for Attach<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attach").finish_non_exhaustive()
    }
}

/// A body for the tunnel-bound direction, to be sent before the connection it will read
/// exists (the edge opens the tunnel stream before the client's upgrade completes).
pub fn reader_body<IO>() -> (Attach<IO>, ReaderBody<IO>) {
    let (tx, rx) = oneshot::channel();
    let (done_tx, done) = oneshot::channel();
    (
        Attach { tx, done },
        ReaderBody {
            state: ReadState::Waiting(rx),
            buf: BytesMut::new(),
            chunk: MIN_CHUNK,
            moved: 0,
            done: Some(done_tx),
        },
    )
}

impl<IO> ReaderBody<IO> {
    fn finish(&mut self) {
        self.state = ReadState::Done;
        self.buf = BytesMut::new();
        if let Some(done) = self.done.take() {
            let _ = done.send(self.moved);
        }
    }
}

impl<IO> Drop for ReaderBody<IO> {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(self.moved);
        }
    }
}

impl<IO> Body for ReaderBody<IO>
where
    IO: AsyncRead + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                ReadState::Done => return Poll::Ready(None),
                ReadState::Waiting(rx) => match ready!(Pin::new(rx).poll(cx)) {
                    Ok(attached) => this.state = ReadState::Reading(attached),
                    // The pipe never started (the upgrade failed): no bytes will come.
                    Err(_) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                },
                ReadState::Reading(attached) => {
                    if this.buf.capacity() < this.chunk {
                        this.buf = BytesMut::with_capacity(this.chunk);
                    }
                    let rd = attached.rd.get_mut().unwrap_or_else(|p| p.into_inner());
                    // `read_buf` keeps no state between polls, so a fresh future per
                    // poll is a plain `poll_read` into the spare capacity.
                    let polled = std::pin::pin!(rd.read_buf(&mut this.buf)).poll(cx);
                    match polled {
                        Poll::Pending => {
                            // Nothing to read: an idle session should not pin a buffer.
                            if this.chunk <= MIN_CHUNK {
                                this.buf = BytesMut::new();
                            }
                            return Poll::Pending;
                        }
                        // EOF is the peer's half-close; a read error ends the direction
                        // the same way, the other direction decides the session's fate.
                        Poll::Ready(Ok(0) | Err(_)) => {
                            this.finish();
                            return Poll::Ready(None);
                        }
                        Poll::Ready(Ok(n)) => {
                            this.chunk = next_chunk(this.chunk, n);
                            this.moved += n as u64;
                            (attached.count)(Direction::ToTunnel, n);
                            return Poll::Ready(Some(Ok(Frame::data(this.buf.split().freeze()))));
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, ReadState::Done)
    }
}

/// Pumps `from_tunnel` into `io`, and hands `io`'s read side to the [`ReaderBody`] of
/// `attach` (already the tunnel stream's other body), until both directions end. If the
/// tunnel stream fails (reset, connection lost) the write side is dropped at once and the
/// read side goes with the stream: a severed tunnel must not leave sessions hanging.
/// `count` sees every chunk as it moves. Returns the bytes moved (from, to) the tunnel.
pub async fn pipe<IO, C>(
    io: IO,
    mut from_tunnel: Incoming,
    attach: Attach<IO>,
    count: C,
) -> (u64, u64)
where
    IO: AsyncRead + AsyncWrite + Unpin,
    C: Fn(Direction, usize) + Send + Sync + 'static,
{
    let count: Counter = Arc::new(count);
    let (rd, mut wr) = tokio::io::split(io);
    let Attach { tx, done } = attach;
    // The body is gone (stream already ended): the read side is simply dropped.
    let _ = tx.send(Attached {
        rd: Mutex::new(rd),
        count: count.clone(),
    });
    let mut bytes_in = 0u64;
    let inbound = async {
        loop {
            // Write every frame that is already here, and flush only before waiting:
            // one flush (one TLS record batch, one syscall) per burst, not per frame.
            let frame = match from_tunnel.frame().now_or_never() {
                Some(f) => f,
                None => {
                    wr.flush().await.map_err(|_| ())?;
                    from_tunnel.frame().await
                }
            };
            let Some(frame) = frame else { break };
            if let Ok(data) = frame.map_err(|_| ())?.into_data() {
                bytes_in += data.len() as u64;
                count(Direction::FromTunnel, data.len());
                wr.write_all(&data).await.map_err(|_| ())?;
            }
        }
        let _ = wr.shutdown().await;
        Ok::<(), ()>(())
    };
    let ok = inbound.await.is_ok();
    drop(wr);
    let bytes_out = if ok { done.await.unwrap_or(0) } else { 0 };
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
