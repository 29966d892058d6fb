//! A WebSocket connection seen as a plain byte stream.
//!
//! The tunnel carries inner TLS as the concatenation of WebSocket binary messages
//! (SPEC §3). [`WsByteStream`] turns a `WebSocketStream` into `AsyncRead + AsyncWrite`
//! so rustls can run on top of it: each write becomes one binary message, reads yield
//! message payloads in order. Ping/pong is answered by tungstenite; a close frame is EOF;
//! a text message is a protocol violation.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};

/// Largest WebSocket message we accept. Inner TLS records are at most ~16 KiB, and our
/// peers write at most a few records per message; this bounds memory per session.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// WebSocket settings used on both ends of the inner-TLS channel.
///
/// tungstenite's default read buffer is 128 KiB allocated up front per connection, which
/// made an idle session cost ~150 KiB in the proxy; 4 KiB reads (the buffer grows for a
/// large message) keep idle sessions cheap (docs/PERFORMANCE.md).
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
}

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(request_key: &[u8]) -> String {
    tungstenite::handshake::derive_accept_key(request_key)
}

/// Wraps an already-upgraded connection (the bytes after `101`) as the server side.
pub async fn server_stream<S>(io: S) -> WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WsByteStream::new(WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config())).await)
}

/// Wraps an already-upgraded connection (the bytes after `101`) as the client side.
pub async fn client_stream<S>(io: S) -> WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    WsByteStream::new(WebSocketStream::from_raw_socket(io, Role::Client, Some(ws_config())).await)
}

/// `AsyncRead + AsyncWrite` over the binary messages of a WebSocket.
#[derive(Debug)]
pub struct WsByteStream<S> {
    inner: WebSocketStream<S>,
    /// The unread rest of the last binary message.
    pending: Bytes,
    eof: bool,
}

impl<S> WsByteStream<S> {
    pub fn new(inner: WebSocketStream<S>) -> Self {
        Self {
            inner,
            pending: Bytes::new(),
            eof: false,
        }
    }
}

fn to_io(e: tungstenite::Error) -> io::Error {
    match e {
        tungstenite::Error::Io(e) => e,
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            io::Error::new(io::ErrorKind::BrokenPipe, "websocket closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

impl<S> AsyncRead for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.pending.is_empty() {
                let n = this.pending.len().min(buf.remaining());
                buf.put_slice(&this.pending[..n]);
                this.pending.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.inner).poll_next(cx)) {
                None | Some(Ok(Message::Close(_))) => this.eof = true,
                Some(Ok(Message::Binary(data))) => this.pending = data,
                // Control frames are handled (and pongs queued) inside tungstenite.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "text websocket message on a binary tunnel",
                    )));
                }
                Some(Err(tungstenite::Error::ConnectionClosed)) => this.eof = true,
                Some(Err(e)) => return Poll::Ready(Err(to_io(e))),
            }
        }
    }
}

impl<S> AsyncWrite for WsByteStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let chunk = &buf[..buf.len().min(MAX_MESSAGE_BYTES)];
        let mut inner = Pin::new(&mut self.inner);
        ready!(inner.as_mut().poll_ready(cx)).map_err(to_io)?;
        inner
            .start_send(Message::Binary(Bytes::copy_from_slice(chunk)))
            .map_err(to_io)?;
        Poll::Ready(Ok(chunk.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(to_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match ready!(Pin::new(&mut self.inner).poll_close(cx)) {
            Ok(())
            | Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(to_io(e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn bytes_roundtrip_in_order_and_close_is_eof() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (mut server, mut client) = tokio::join!(server_stream(a), client_stream(b));
        let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let sent = payload.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(7_001) {
                client.write_all(chunk).await.unwrap();
            }
            client.flush().await.unwrap();
            client.shutdown().await.unwrap();
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        writer.await.unwrap();
        assert_eq!(got, payload);
    }

    #[tokio::test]
    async fn text_message_is_an_error() {
        let (a, b) = tokio::io::duplex(1 << 12);
        let (mut server, client) = tokio::join!(server_stream(a), async {
            WebSocketStream::from_raw_socket(b, Role::Client, None).await
        });
        let mut client = client;
        futures_util::SinkExt::send(&mut client, Message::text("hello"))
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let err = server.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }
}
