//! The tunnel token (SPEC §5): `eyJ…`, base64url (no padding) of a JSON object carrying
//! everything a connector needs: tunnel id, secret, edge address and an optional pin of
//! the edge's CA certificate.
//!
//! Unknown JSON fields are ignored so that a newer control plane can add hints without
//! breaking older connectors; every known field is validated.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mcp_tunnel_pki::crypto::{self, Secret};
use serde::{Deserialize, Serialize};

/// Longest token accepted, in characters: bounds the work done on hostile input.
pub const MAX_TOKEN_LEN: usize = 4096;
/// Bytes of randomness in a freshly generated secret.
pub const SECRET_BYTES: usize = 32;
/// Fewest decoded bytes a secret may have: anything shorter is guessable.
pub const MIN_SECRET_BYTES: usize = 32;
const MAX_SECRET_CHARS: usize = 128;
const MAX_TUNNEL_ID_LEN: usize = 64;
const MAX_HOST_LEN: usize = 253;

/// Why a tunnel token could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("tunnel token is empty")]
    Empty,
    #[error("tunnel token is longer than {MAX_TOKEN_LEN} characters")]
    TooLong,
    #[error("tunnel token does not start with \"eyJ\" (expected base64url-encoded JSON)")]
    NotEyJ,
    #[error("tunnel token is not valid base64url without padding")]
    Base64,
    #[error("tunnel token does not contain a JSON object: {0}")]
    Json(String),
    #[error("tunnel token is missing the field \"{0}\"")]
    MissingField(&'static str),
    #[error("tunnel token field \"tunnel_id\" is invalid: {0}")]
    BadTunnelId(#[source] TunnelIdError),
    #[error(
        "tunnel token field \"secret\" is invalid: expected base64url of at least {MIN_SECRET_BYTES} bytes"
    )]
    BadSecret,
    #[error("tunnel token field \"edge\" is invalid: {0}")]
    BadEdgeAddress(#[source] EdgeAddrError),
    #[error("tunnel token field \"edge_ca_sha256\" is invalid: expected 64 lowercase hex digits")]
    BadPin,
}

/// Why a tunnel id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TunnelIdError {
    #[error("must start with \"tnl_\"")]
    Prefix,
    #[error("must have 1 to {MAX_TUNNEL_ID_LEN} ASCII letters or digits after \"tnl_\"")]
    Body,
}

/// A tunnel id, `tnl_` followed by ASCII letters and digits.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(String);

impl TunnelId {
    pub fn parse(s: &str) -> Result<Self, TunnelIdError> {
        let body = s.strip_prefix("tnl_").ok_or(TunnelIdError::Prefix)?;
        if body.is_empty()
            || body.len() > MAX_TUNNEL_ID_LEN
            || !body.bytes().all(|b| b.is_ascii_alphanumeric())
        {
            return Err(TunnelIdError::Body);
        }
        Ok(Self(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for TunnelId {
    type Err = TunnelIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TunnelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TunnelId({})", self.0)
    }
}

/// Why an edge address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EdgeAddrError {
    #[error("expected host:port")]
    MissingPort,
    #[error("port must be a number from 1 to 65535")]
    BadPort,
    #[error("host must be a DNS name or an IP address")]
    BadHost,
}

/// Where the edge's connector listener is: a DNS name or IP literal, and a port.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct EdgeAddr {
    host: String,
    port: u16,
}

impl EdgeAddr {
    /// Parses `host:port`, `1.2.3.4:port` or `[::1]:port`.
    pub fn parse(s: &str) -> Result<Self, EdgeAddrError> {
        let (host, port) = s.rsplit_once(':').ok_or(EdgeAddrError::MissingPort)?;
        let port: u16 = port.parse().map_err(|_| EdgeAddrError::BadPort)?;
        if port == 0 {
            return Err(EdgeAddrError::BadPort);
        }
        let host = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| EdgeAddrError::BadHost)?;
            v6
        } else {
            if host.contains(':') || !valid_dns_or_ipv4(host) {
                return Err(EdgeAddrError::BadHost);
            }
            host
        };
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The host without brackets, suitable for TLS server name checks.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }
}

fn valid_dns_or_ipv4(host: &str) -> bool {
    if host.is_empty() || host.len() > MAX_HOST_LEN {
        return false;
    }
    host.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

impl fmt::Display for EdgeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for EdgeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EdgeAddr({self})")
    }
}

/// SHA-256 of the DER of the edge's CA certificate.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaPin([u8; 32]);

impl CaPin {
    pub fn from_der(cert_der: &[u8]) -> Self {
        Self(crypto::sha256(cert_der))
    }

    /// Parses 64 lowercase hex digits.
    pub fn parse_hex(s: &str) -> Option<Self> {
        if s.len() != 64 || s.bytes().any(|b| b.is_ascii_uppercase()) {
            return None;
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// Whether `cert_der` is the pinned certificate.
    pub fn matches(&self, cert_der: &[u8]) -> bool {
        crypto::ct_eq(&crypto::sha256(cert_der), &self.0)
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Debug for CaPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CaPin({})", self.to_hex())
    }
}

/// A parsed tunnel token. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelToken {
    pub tunnel_id: TunnelId,
    pub secret: Secret,
    pub edge: EdgeAddr,
    pub edge_ca_pin: Option<CaPin>,
}

#[derive(Serialize, Deserialize)]
struct TokenJson {
    #[serde(default)]
    tunnel_id: Option<String>,
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    edge: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    edge_ca_sha256: Option<String>,
}

impl TunnelToken {
    /// A token with a fresh random secret.
    pub fn generate(tunnel_id: TunnelId, edge: EdgeAddr, edge_ca_pin: Option<CaPin>) -> Self {
        Self {
            tunnel_id,
            secret: generate_secret(),
            edge,
            edge_ca_pin,
        }
    }

    /// Parses an `eyJ…` token; surrounding whitespace (a trailing newline in a file) is ignored.
    pub fn parse(s: &str) -> Result<Self, TokenError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TokenError::Empty);
        }
        if s.len() > MAX_TOKEN_LEN {
            return Err(TokenError::TooLong);
        }
        if !s.starts_with("eyJ") {
            return Err(TokenError::NotEyJ);
        }
        let json = URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .map_err(|_| TokenError::Base64)?;
        let raw: TokenJson = serde_json::from_slice(&json).map_err(|e| {
            TokenError::Json(e.to_string().split(" at line").next().unwrap_or("").into())
        })?;
        let tunnel_id = raw.tunnel_id.ok_or(TokenError::MissingField("tunnel_id"))?;
        let secret = raw.secret.ok_or(TokenError::MissingField("secret"))?;
        let edge = raw.edge.ok_or(TokenError::MissingField("edge"))?;
        let tunnel_id = TunnelId::parse(&tunnel_id).map_err(TokenError::BadTunnelId)?;
        if !valid_secret(&secret) {
            return Err(TokenError::BadSecret);
        }
        let edge = EdgeAddr::parse(&edge).map_err(TokenError::BadEdgeAddress)?;
        let edge_ca_pin = match raw.edge_ca_sha256 {
            None => None,
            Some(p) => Some(CaPin::parse_hex(&p).ok_or(TokenError::BadPin)?),
        };
        Ok(Self {
            tunnel_id,
            secret: Secret::new(secret),
            edge,
            edge_ca_pin,
        })
    }

    /// The `eyJ…` form; `parse(encode(t)) == t`.
    pub fn encode(&self) -> String {
        let raw = TokenJson {
            tunnel_id: Some(self.tunnel_id.to_string()),
            secret: Some(self.secret.expose().to_owned()),
            edge: Some(self.edge.to_string()),
            edge_ca_sha256: self.edge_ca_pin.map(|p| p.to_hex()),
        };
        // Serialising a struct of strings cannot fail.
        let json = serde_json::to_vec(&raw).unwrap_or_default();
        URL_SAFE_NO_PAD.encode(json)
    }

    /// What the edge stores instead of the secret.
    pub fn secret_hash(&self) -> [u8; 32] {
        hash_secret(&self.secret)
    }
}

impl fmt::Debug for TunnelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelToken")
            .field("tunnel_id", &self.tunnel_id)
            .field("secret", &self.secret)
            .field("edge", &self.edge)
            .field("edge_ca_pin", &self.edge_ca_pin)
            .finish()
    }
}

/// A fresh high-entropy secret: base64url of [`SECRET_BYTES`] random bytes.
pub fn generate_secret() -> Secret {
    Secret::new(URL_SAFE_NO_PAD.encode(crypto::random_bytes(SECRET_BYTES)))
}

/// Whether `s` has the shape of a token secret.
pub fn valid_secret(s: &str) -> bool {
    s.len() <= MAX_SECRET_CHARS
        && URL_SAFE_NO_PAD
            .decode(s.as_bytes())
            .is_ok_and(|b| b.len() >= MIN_SECRET_BYTES)
}

/// SHA-256 of a secret. Secrets are high-entropy, so a fast hash is the right choice
/// (a slow password hash would only hand attackers a CPU-exhaustion lever).
pub fn hash_secret(secret: &Secret) -> [u8; 32] {
    crypto::sha256(secret.expose().as_bytes())
}

/// Checks a presented secret against a stored hash in constant time.
pub fn verify_secret(presented: &Secret, stored_hash: &[u8; 32]) -> bool {
    crypto::ct_eq(&hash_secret(presented), stored_hash)
}

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
