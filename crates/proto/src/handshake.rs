//! The connection handshake, run once per connector link right after TLS: the connector
//! sends [`Hello`], the edge answers [`Accept`] or [`Reject`], and both switch to HTTP/2.
//!
//! [`ClientHandshake`] (connector) and [`ServerHandshake`] (edge) are plain state machines:
//! they take received bytes and an explicit `now`, and hand back events and bytes to send.
//! Drivers should read exactly [`ServerHandshake::bytes_needed`] bytes at a time so that
//! nothing after the handshake (the HTTP/2 preface) is consumed by accident.

use std::fmt;
use std::time::{Duration, Instant};

use mcp_tunnel_pki::crypto::Secret;

use crate::frame::{self, FrameError, FrameKind};
use crate::token::{TunnelId, valid_secret};
use crate::wire::{DecodeError, Reader, Writer};

/// Most protocol versions a Hello may offer.
pub const MAX_VERSIONS: usize = 16;
/// Longest Reject message carried; longer ones are cut.
pub const MAX_REJECT_MESSAGE: usize = 1024;

/// A protocol version: what runs on the link after the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProtocolVersion(pub u16);

impl ProtocolVersion {
    /// TLS over TCP, then HTTP/2 with the edge as client.
    pub const H2_V1: Self = Self(1);

    /// Versions this build speaks, most preferred first.
    pub const SUPPORTED: &'static [Self] = &[Self::H2_V1];

    /// Name used in logs and metrics (`protocol=`).
    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "http2",
            _ => "unknown",
        }
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! id16 {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $name(pub [u8; 16]);

        impl $name {
            /// A fresh random id.
            pub fn random() -> Self {
                let mut out = [0u8; 16];
                out.copy_from_slice(&mcp_tunnel_pki::crypto::random_bytes(16));
                Self(out)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

id16!(
    /// Identifies one connector process across its connections.
    InstanceId
);
id16!(
    /// Identifies one registered connection, assigned by the edge.
    ConnectionId
);

/// The connector's opening message. `Debug` redacts the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Offered versions, most preferred first.
    pub versions: Vec<ProtocolVersion>,
    pub tunnel_id: TunnelId,
    pub secret: Secret,
    /// Which of the connector's `--ha-connections` this is (0-based).
    pub conn_index: u8,
    pub instance_id: InstanceId,
    /// Connector software version, for the edge's logs and the console.
    pub software_version: String,
}

/// The edge's answer when the connector is authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    pub version: ProtocolVersion,
    pub connection_id: ConnectionId,
    /// Which edge replica took the connection (for the connector's logs).
    pub edge_id: String,
}

/// Why the edge refused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectCode {
    /// Unknown tunnel or wrong secret (not distinguished: no oracle for tunnel ids).
    TokenRejected,
    TunnelArchived,
    UnsupportedVersion,
    RateLimited,
    TooManyConnections,
    Internal,
}

impl RejectCode {
    fn to_byte(self) -> u8 {
        match self {
            Self::TokenRejected => 1,
            Self::TunnelArchived => 2,
            Self::UnsupportedVersion => 3,
            Self::RateLimited => 4,
            Self::TooManyConnections => 5,
            Self::Internal => 6,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Some(match b {
            1 => Self::TokenRejected,
            2 => Self::TunnelArchived,
            3 => Self::UnsupportedVersion,
            4 => Self::RateLimited,
            5 => Self::TooManyConnections,
            6 => Self::Internal,
            _ => return None,
        })
    }

    /// Stable snake_case name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::TokenRejected => "token_rejected",
            Self::TunnelArchived => "tunnel_archived",
            Self::UnsupportedVersion => "unsupported_version",
            Self::RateLimited => "rate_limited",
            Self::TooManyConnections => "too_many_connections",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for RejectCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The edge's refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: RejectCode,
    /// Human-readable detail (printable ASCII, at most [`MAX_REJECT_MESSAGE`] bytes).
    pub message: String,
}

impl Hello {
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = Writer::default();
        let n = self.versions.len().min(MAX_VERSIONS);
        w.u8(n as u8);
        for v in &self.versions[..n] {
            w.u16(v.0);
        }
        w.str8(self.tunnel_id.as_str());
        w.str8(self.secret.expose());
        w.u8(self.conn_index);
        w.bytes(&self.instance_id.0);
        w.str8(&self.software_version);
        frame::encode(FrameKind::Hello, &w.buf)
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let n = usize::from(r.u8("versions")?);
        if n == 0 || n > MAX_VERSIONS {
            return Err(DecodeError::Invalid {
                field: "versions",
                reason: "must list 1 to 16 versions",
            });
        }
        let mut versions = Vec::with_capacity(n);
        for _ in 0..n {
            let v = r.u16("versions")?;
            if v == 0 {
                return Err(DecodeError::Invalid {
                    field: "versions",
                    reason: "version 0 is reserved",
                });
            }
            versions.push(ProtocolVersion(v));
        }
        let tunnel_id =
            TunnelId::parse(r.str8("tunnel_id")?).map_err(|_| DecodeError::Invalid {
                field: "tunnel_id",
                reason: "not a tunnel id",
            })?;
        let secret = r.str8("secret")?;
        if !valid_secret(secret) {
            return Err(DecodeError::Invalid {
                field: "secret",
                reason: "not a token secret",
            });
        }
        let secret = Secret::new(secret);
        let conn_index = r.u8("conn_index")?;
        let instance_id = InstanceId(r.array16("instance_id")?);
        let software_version = r.str8("software_version")?.to_owned();
        r.finish()?;
        Ok(Self {
            versions,
            tunnel_id,
            secret,
            conn_index,
            instance_id,
            software_version,
        })
    }
}

impl Accept {
    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = Writer::default();
        w.u16(self.version.0);
        w.bytes(&self.connection_id.0);
        w.str8(&self.edge_id);
        frame::encode(FrameKind::Accept, &w.buf)
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let version = ProtocolVersion(r.u16("version")?);
        let connection_id = ConnectionId(r.array16("connection_id")?);
        let edge_id = r.str8("edge_id")?.to_owned();
        r.finish()?;
        Ok(Self {
            version,
            connection_id,
            edge_id,
        })
    }
}

impl Reject {
    pub fn new(code: RejectCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn encode(&self) -> Result<Vec<u8>, FrameError> {
        let mut w = Writer::default();
        w.u8(self.code.to_byte());
        w.str16(&self.message, MAX_REJECT_MESSAGE);
        frame::encode(FrameKind::Reject, &w.buf)
    }

    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(payload);
        let code = r.u8("code")?;
        let code = RejectCode::from_byte(code).ok_or(DecodeError::Invalid {
            field: "code",
            reason: "unknown reject code",
        })?;
        let message = r.str16("message")?;
        if message.len() > MAX_REJECT_MESSAGE {
            return Err(DecodeError::Invalid {
                field: "message",
                reason: "longer than 1024 bytes",
            });
        }
        let message = message.to_owned();
        r.finish()?;
        Ok(Self { code, message })
    }
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    #[error("handshake frame: {0}")]
    Frame(#[from] FrameError),
    #[error("handshake message: {0}")]
    Decode(#[from] DecodeError),
    #[error("expected a {expected:?} frame, got {got:?}")]
    UnexpectedFrame {
        expected: &'static str,
        got: FrameKind,
    },
    #[error("handshake did not complete within the deadline")]
    TimedOut,
    #[error("no protocol version in common (peer offered {offered:?})")]
    NoCommonVersion { offered: Vec<ProtocolVersion> },
    #[error("handshake already finished")]
    Finished,
}

impl HandshakeError {
    /// What the edge should answer before closing, if anything. Garbage gets no answer:
    /// bounded pre-auth work means not spending effort on peers that are not connectors.
    pub fn reply(&self) -> Option<RejectCode> {
        match self {
            Self::NoCommonVersion { .. } => Some(RejectCode::UnsupportedVersion),
            Self::Frame(_)
            | Self::Decode(_)
            | Self::UnexpectedFrame { .. }
            | Self::TimedOut
            | Self::Finished => None,
        }
    }
}

/// Progress made by one call to `feed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress<E> {
    /// Bytes of the input that belonged to the handshake; the rest is not ours.
    pub consumed: usize,
    pub event: Option<E>,
}

/// Accumulates one frame, consuming no byte past its end.
#[derive(Debug, Default)]
struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    /// Returns the bytes consumed and, once complete, the frame bytes.
    fn feed(&mut self, data: &[u8]) -> Result<(usize, bool), FrameError> {
        let mut consumed = 0;
        while consumed < data.len() {
            let want = frame::bytes_needed(&self.buf);
            if want == 0 {
                break;
            }
            let take = want.min(data.len() - consumed);
            self.buf.extend_from_slice(&data[consumed..consumed + take]);
            consumed += take;
            frame::check_header(&self.buf)?;
        }
        Ok((consumed, frame::bytes_needed(&self.buf) == 0))
    }
}

/// Events of the connector side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientEvent {
    Accepted(Accept),
    Rejected(Reject),
}

/// The connector's side of the handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    offered: Vec<ProtocolVersion>,
    hello: Option<Vec<u8>>,
    inbound: FrameBuf,
    deadline: Instant,
    done: bool,
}

impl ClientHandshake {
    pub fn new(hello: &Hello, now: Instant, timeout: Duration) -> Result<Self, FrameError> {
        Ok(Self {
            offered: hello.versions.clone(),
            hello: Some(hello.encode()?),
            inbound: FrameBuf::default(),
            deadline: now + timeout,
            done: false,
        })
    }

    /// The Hello frame, once.
    pub fn poll_transmit(&mut self) -> Option<Vec<u8>> {
        self.hello.take()
    }

    /// Exact number of bytes to read before calling `feed` again.
    pub fn bytes_needed(&self) -> usize {
        if self.done {
            0
        } else {
            frame::bytes_needed(&self.inbound.buf)
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        !self.done && now >= self.deadline
    }

    pub fn feed(
        &mut self,
        data: &[u8],
        now: Instant,
    ) -> Result<Progress<ClientEvent>, HandshakeError> {
        if self.done {
            return Err(HandshakeError::Finished);
        }
        if self.is_expired(now) {
            return Err(HandshakeError::TimedOut);
        }
        let (consumed, complete) = self.inbound.feed(data)?;
        if !complete {
            return Ok(Progress {
                consumed,
                event: None,
            });
        }
        self.done = true;
        let (f, _) = frame::decode(&self.inbound.buf)?.ok_or(HandshakeError::Finished)?;
        let event = match f.kind {
            FrameKind::Accept => {
                let accept = Accept::decode(f.payload)?;
                if !self.offered.contains(&accept.version) {
                    return Err(HandshakeError::NoCommonVersion {
                        offered: self.offered.clone(),
                    });
                }
                ClientEvent::Accepted(accept)
            }
            FrameKind::Reject => ClientEvent::Rejected(Reject::decode(f.payload)?),
            FrameKind::Hello => {
                return Err(HandshakeError::UnexpectedFrame {
                    expected: "Accept or Reject",
                    got: f.kind,
                });
            }
        };
        Ok(Progress {
            consumed,
            event: Some(event),
        })
    }
}

/// Events of the edge side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A well-formed Hello with a version in common; authenticate it, then call
    /// [`ServerHandshake::accept`] or [`ServerHandshake::reject`].
    Hello {
        hello: Hello,
        version: ProtocolVersion,
    },
}

/// The edge's side of the handshake.
#[derive(Debug)]
pub struct ServerHandshake {
    supported: Vec<ProtocolVersion>,
    inbound: FrameBuf,
    deadline: Instant,
    chosen: Option<ProtocolVersion>,
    done: bool,
}

impl ServerHandshake {
    /// `supported` in order of preference; the first one the client also offers wins.
    pub fn new(supported: &[ProtocolVersion], now: Instant, timeout: Duration) -> Self {
        Self {
            supported: supported.to_vec(),
            inbound: FrameBuf::default(),
            deadline: now + timeout,
            chosen: None,
            done: false,
        }
    }

    pub fn bytes_needed(&self) -> usize {
        if self.done || self.chosen.is_some() {
            0
        } else {
            frame::bytes_needed(&self.inbound.buf)
        }
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        !self.done && now >= self.deadline
    }

    pub fn feed(
        &mut self,
        data: &[u8],
        now: Instant,
    ) -> Result<Progress<ServerEvent>, HandshakeError> {
        if self.done || self.chosen.is_some() {
            return Err(HandshakeError::Finished);
        }
        if self.is_expired(now) {
            return Err(HandshakeError::TimedOut);
        }
        let (consumed, complete) = self.inbound.feed(data)?;
        if !complete {
            return Ok(Progress {
                consumed,
                event: None,
            });
        }
        let (f, _) = frame::decode(&self.inbound.buf)?.ok_or(HandshakeError::Finished)?;
        if f.kind != FrameKind::Hello {
            self.done = true;
            return Err(HandshakeError::UnexpectedFrame {
                expected: "Hello",
                got: f.kind,
            });
        }
        let hello = Hello::decode(f.payload).inspect_err(|_| self.done = true)?;
        let Some(version) = self
            .supported
            .iter()
            .copied()
            .find(|v| hello.versions.contains(v))
        else {
            return Err(HandshakeError::NoCommonVersion {
                offered: hello.versions,
            });
        };
        self.chosen = Some(version);
        self.inbound.buf = Vec::new();
        Ok(Progress {
            consumed,
            event: Some(ServerEvent::Hello { hello, version }),
        })
    }

    /// The Accept frame for the negotiated version; the link then belongs to HTTP/2.
    pub fn accept(
        &mut self,
        connection_id: ConnectionId,
        edge_id: &str,
    ) -> Result<Vec<u8>, HandshakeError> {
        let version = self.chosen.take().ok_or(HandshakeError::Finished)?;
        self.done = true;
        Ok(Accept {
            version,
            connection_id,
            edge_id: edge_id.to_owned(),
        }
        .encode()?)
    }

    /// A Reject frame; valid at any point before Accept. The driver closes after sending.
    pub fn reject(&mut self, code: RejectCode, message: &str) -> Result<Vec<u8>, HandshakeError> {
        if self.done {
            return Err(HandshakeError::Finished);
        }
        self.done = true;
        self.chosen = None;
        Ok(Reject::new(code, message).encode()?)
    }
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;
