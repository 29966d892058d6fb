//! Byte pumping between an upgraded origin connection and a tunnel stream: the shared
//! implementation in `mcp_tunnel_net::pipe`, and the body types the connector answers with.

use bytes::Bytes;

pub use mcp_tunnel_net::pipe::{BoxError, ChannelBody};

/// Response body of a tunnel stream.
pub type TunnelBody = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// Pumps bytes both ways between `io` (the origin) and the tunnel stream.
pub async fn pipe<IO>(
    io: IO,
    from_tunnel: hyper::body::Incoming,
    to_tunnel: tokio::sync::mpsc::Sender<Bytes>,
) -> (u64, u64)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    mcp_tunnel_net::pipe::pipe(io, from_tunnel, to_tunnel, |_, _| {}).await
}
