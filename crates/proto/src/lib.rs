//! The tunnel protocol between connector and edge, sans I/O: the tunnel token, the
//! framed connection handshake, and the conventions used on the HTTP/2 streams after it.
//!
//! Nothing here touches a socket or a clock: state machines take received bytes and an
//! explicit `now`, and hand back events and bytes to send. The async drivers live in
//! `mcp-tunnel-connector` and `mcp-tunnel-edge`.
//!
//! Wire layout of one connector link:
//! 1. TCP, then TLS with ALPN [`ALPN`] (the connector is the TLS client).
//! 2. One [`handshake::Hello`] frame from the connector, answered by one
//!    [`handshake::Accept`] or [`handshake::Reject`] frame from the edge ([`frame`]).
//! 3. After `Accept`, HTTP/2 on the same TLS stream with the roles reversed: the edge is
//!    the HTTP/2 client, the connector the server; each client session is one stream
//!    ([`stream`] describes how upgrades are carried).

pub mod frame;
pub mod handshake;
pub mod stream;
pub mod token;
mod wire;

pub use handshake::{
    Accept, ClientEvent, ClientHandshake, ConnectionId, HandshakeError, Hello, InstanceId,
    ProtocolVersion, Reject, RejectCode, ServerEvent, ServerHandshake,
};
pub use token::{CaPin, EdgeAddr, TokenError, TunnelId, TunnelToken};

/// TLS ALPN protocol id of the connector link. A future QUIC transport gets its own id.
pub const ALPN: &[u8] = b"mcpt/1";

/// Default TCP port of the edge's connector listener.
pub const DEFAULT_EDGE_PORT: u16 = 7844;
