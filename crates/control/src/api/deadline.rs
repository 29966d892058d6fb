//! Time limits the HTTP server does not give by itself.
//!
//! hyper-util's auto builder reads a connection's first bytes to choose HTTP/1.1 or h2
//! with no deadline, and h2 waits for its preface the same way: a client that finishes
//! TLS and then says nothing would hold its connection for ever. [`FirstByte`] ends such
//! a connection once `limit` passes without a byte; after the first byte hyper's own
//! header deadline and the API's request deadline take over.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A stream whose reads fail with `TimedOut` if nothing arrives within the limit.
#[derive(Debug)]
pub struct FirstByte<S> {
    inner: S,
    /// Running until the first byte arrives; gone after it.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<S> FirstByte<S> {
    pub fn new(inner: S, limit: Duration) -> Self {
        Self {
            inner,
            deadline: Some(Box::pin(tokio::time::sleep(limit))),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FirstByte<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    self.deadline = None;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                let expired = self
                    .deadline
                    .as_mut()
                    .is_some_and(|d| d.as_mut().poll(cx).is_ready());
                if expired {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no request within the client deadline",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FirstByte<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn silence_ends_in_timed_out() {
        let (_peer, io) = tokio::io::duplex(64);
        let mut s = FirstByte::new(io, Duration::from_millis(50));
        let mut buf = [0u8; 8];
        let e = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("the deadline did not fire")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn after_the_first_byte_there_is_no_deadline() {
        let (mut peer, io) = tokio::io::duplex(64);
        let mut s = FirstByte::new(io, Duration::from_millis(50));
        peer.write_all(b"G").await.unwrap();
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.unwrap(), 1);
        // A pause longer than the limit is now the other deadlines' business.
        tokio::time::sleep(Duration::from_millis(150)).await;
        peer.write_all(b"ET").await.unwrap();
        assert_eq!(s.read(&mut buf).await.unwrap(), 2);
        assert_eq!(&buf[..2], b"ET");
    }
}
