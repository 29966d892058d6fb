//! A WebSocket connection seen as a plain byte stream.
//!
//! The tunnel carries inner TLS as the concatenation of WebSocket binary messages
//! (SPEC §3). [`WsByteStream`] is `AsyncRead + AsyncWrite` directly over the upgraded
//! connection so rustls can run on top of it; it is our own RFC 6455 codec rather than a
//! general WebSocket library because the data path needs far less, and cheaper:
//!
//! - reads parse each header ([`frame`], sans-IO) from a small buffer, then copy the
//!   payload straight into the caller's buffer and unmask it there; the buffer is freed
//!   whenever the connection goes quiet, so an idle session holds no read buffer;
//! - each write becomes one binary frame, sent with a vectored write of header and
//!   payload by the server (no copy), or copied and masked with a fresh key by the client;
//! - a ping is answered with a pong, a pong is ignored, a close frame is EOF (answered
//!   once), and a text message or any other violation of [`frame`]'s rules is an
//!   `InvalidData` error.
//!
//! The client's HTTP upgrade is in [`handshake`]; the proxy's is in hyper.

pub mod frame;
pub mod handshake;
mod stream;

pub use frame::{FrameError, Role};
pub use handshake::{HandshakeError, client_handshake};
pub use stream::WsByteStream;

/// Largest WebSocket frame we accept. Inner TLS records are at most ~16 KiB and our peers
/// write at most a few per frame; messages may be longer (they are streamed, not held).
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(request_key: &[u8]) -> String {
    use base64::Engine as _;
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(request_key);
    ctx.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(ctx.finish())
}

/// Wraps an already-upgraded connection (the bytes after `101`) as the server side.
/// (`async` for its callers' sake: nothing is awaited.)
pub async fn server_stream<S>(io: S) -> WsByteStream<S> {
    WsByteStream::new(io, Role::Server)
}

/// Wraps an already-upgraded connection (the bytes after `101`) as the client side.
pub async fn client_stream<S>(io: S) -> WsByteStream<S> {
    WsByteStream::new(io, Role::Client)
}

#[cfg(test)]
mod tests;
