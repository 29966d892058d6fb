//! An I/O wrapper that fails at once when its connection is severed.
//!
//! hyper drives a client HTTP/2 connection from a background task that lives as long as
//! any stream does, so dropping our handle does not close the socket. Archive and
//! replacement must cut every session immediately; failing the transport does that.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pub(crate) struct Severable<T> {
    inner: T,
    severed: Pin<Box<WaitForCancellationFutureOwned>>,
    token: CancellationToken,
}

impl<T> Severable<T> {
    pub(crate) fn new(inner: T, token: CancellationToken) -> Self {
        Self {
            inner,
            severed: Box::pin(token.clone().cancelled_owned()),
            token,
        }
    }
}

fn severed_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "connection severed by the edge",
    )
}

impl<T: AsyncRead + Unpin> AsyncRead for Severable<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Polling the cancellation here registers the reader's waker with it: the
        // connection task is always waiting to read, so it wakes up when severed.
        if self.severed.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Severable<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.token.is_cancelled() {
            return Poll::Ready(Err(severed_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
