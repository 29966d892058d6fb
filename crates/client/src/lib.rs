//! The client side of a tunnel: a WebSocket to the proxy (directly, or through the edge),
//! inner TLS inside it with SNI = route host, and HTTP/1.1 or HTTP/2 over that.

use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_tunnel_net::ws::{HandshakeError, WsByteStream};
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsConnector;

pub mod edge;
pub mod mcp;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The request body type sessions carry.
pub type ClientBody = UnsyncBoxBody<Bytes, BoxError>;

/// Why a session could not be opened or a request not sent.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket handshake failed: {0}")]
    WebSocket(#[from] HandshakeError),
    #[error("websocket refused with HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("invalid server name {0:?}")]
    ServerName(String),
    #[error("inner TLS handshake failed: {}", tls_reason(.0))]
    Tls(std::io::Error),
    #[error("HTTP over the tunnel failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("bad TLS configuration: {0}")]
    Config(String),
    #[error("cannot reach the tunnel: {0}")]
    Connect(String),
}

/// The certificate rule that failed, when that is why the handshake failed.
fn tls_reason(e: &std::io::Error) -> String {
    match mcp_tunnel_pki::verifier::rule_error(e) {
        Some(rule) => format!("proxy certificate refused: {rule}"),
        None => e.to_string(),
    }
}

/// Trust for inner TLS: the tunnel's registered CA certificates and nothing else.
#[derive(Debug, Clone)]
pub struct InnerTls {
    config: Arc<ClientConfig>,
}

impl InnerTls {
    /// Trusts exactly `cas` (DER, the tunnel's registered CA certificates) as issuers
    /// of the proxy's certificate, and enforces the server-certificate rules of SPEC §8:
    /// signed directly by one of them (no intermediates), AKI matching its SKI, a SAN
    /// covering the route host, serverAuth if EKU is present, validity, key strength.
    pub fn trusting(cas: &[CertificateDer<'static>]) -> Result<Self, ClientError> {
        Self::with_identity(cas, None)
    }

    /// Like [`InnerTls::trusting`], presenting a client certificate to proxies that
    /// require one (`client_auth`).
    pub fn with_identity(
        cas: &[CertificateDer<'static>],
        identity: Option<mcp_tunnel_pki::verifier::ClientIdentity>,
    ) -> Result<Self, ClientError> {
        let verifier = mcp_tunnel_pki::verifier::TunnelServerVerifier::new(cas.to_vec())
            .map_err(|e| ClientError::Config(format!("tunnel CA certificate refused: {e}")))?;
        let config = mcp_tunnel_pki::verifier::client_config(
            std::sync::Arc::new(verifier),
            identity,
            Vec::new(),
        )
        .map_err(|e| ClientError::Config(e.to_string()))?;
        Ok(Self::from_config(config))
    }

    /// Uses a prepared rustls config; ALPN is set here.
    pub fn from_config(mut config: ClientConfig) -> Self {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Self {
            config: Arc::new(config),
        }
    }

    /// Offers only HTTP/1.1 inside the tunnel.
    pub fn http1_only(&self) -> Self {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Self {
            config: Arc::new(config),
        }
    }
}

/// Where the WebSocket goes and which route the inner TLS is for.
#[derive(Debug, Clone)]
pub struct Target {
    /// `Host` of the WebSocket request (the tunnel domain, or the proxy's address directly).
    pub ws_host: String,
    /// Path of the WebSocket request.
    pub ws_path: String,
    /// Extra headers on the WebSocket request (e.g. the edge's `Authorization`).
    pub ws_headers: Vec<(String, String)>,
    /// The route host: SNI of inner TLS and `Host` of inner requests.
    pub route_host: String,
}

impl Target {
    pub fn new(ws_host: impl Into<String>, route_host: impl Into<String>) -> Self {
        Self {
            ws_host: ws_host.into(),
            ws_path: "/".into(),
            ws_headers: Vec::new(),
            route_host: route_host.into(),
        }
    }
}

enum Sender {
    H1(hyper::client::conn::http1::SendRequest<ClientBody>),
    H2(hyper::client::conn::http2::SendRequest<ClientBody>),
}

/// One inner-TLS session: requests go to the route host over it.
pub struct Session {
    sender: Sender,
    route_host: String,
    resumed: bool,
    peer_fingerprint: String,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("route_host", &self.route_host)
            .field("protocol", &self.protocol())
            .field("resumed", &self.resumed)
            .finish()
    }
}

impl Session {
    /// Opens a session over `io` (a TCP stream to the proxy, or a TLS stream to the edge).
    pub async fn open<S>(io: S, target: &Target, tls: &InnerTls) -> Result<Self, ClientError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let ws = websocket(io, target).await?;
        let name = ServerName::try_from(target.route_host.clone())
            .map_err(|_| ClientError::ServerName(target.route_host.clone()))?;
        let stream = TlsConnector::from(tls.config.clone())
            .connect(name, ws)
            .await
            .map_err(ClientError::Tls)?;
        let conn = stream.get_ref().1;
        let h2 = conn.alpn_protocol() == Some(b"h2");
        let resumed = matches!(conn.handshake_kind(), Some(rustls::HandshakeKind::Resumed));
        let peer_fingerprint = conn
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| mcp_tunnel_pki::crypto::sha256_hex(c.as_ref()))
            .unwrap_or_default();
        let io = TokioIo::new(stream);
        let sender = if h2 {
            let (sender, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H2(sender)
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Sender::H1(sender)
        };
        Ok(Self {
            sender,
            route_host: target.route_host.clone(),
            resumed,
            peer_fingerprint,
        })
    }

    /// `"h2"` or `"http/1.1"`, as negotiated.
    pub fn protocol(&self) -> &'static str {
        match self.sender {
            Sender::H1(_) => "http/1.1",
            Sender::H2(_) => "h2",
        }
    }

    /// Whether inner TLS resumed an earlier session.
    pub fn resumed(&self) -> bool {
        self.resumed
    }

    /// SHA-256 (lowercase hex) of the proxy's certificate, as served in this session.
    pub fn peer_fingerprint(&self) -> &str {
        &self.peer_fingerprint
    }

    /// Another handle on this session for a concurrent request, when the session
    /// multiplexes (h2): requests over the handles run side by side as h2 streams of one
    /// inner-TLS session. `None` over HTTP/1.1, which carries one request at a time.
    pub fn share(&self) -> Option<Self> {
        match &self.sender {
            Sender::H2(s) => Some(Self {
                sender: Sender::H2(s.clone()),
                route_host: self.route_host.clone(),
                resumed: self.resumed,
                peer_fingerprint: self.peer_fingerprint.clone(),
            }),
            Sender::H1(_) => None,
        }
    }

    /// Whether the session can take another request.
    pub fn is_open(&self) -> bool {
        match &self.sender {
            Sender::H1(s) => !s.is_closed(),
            Sender::H2(s) => !s.is_closed(),
        }
    }

    /// Sends one request. A relative URI is completed with the route host; `Host` is set.
    pub async fn send(
        &mut self,
        mut req: Request<ClientBody>,
    ) -> Result<Response<Incoming>, ClientError> {
        match &mut self.sender {
            Sender::H1(s) => {
                if !req.headers().contains_key(http::header::HOST)
                    && let Ok(v) = http::HeaderValue::from_str(&self.route_host)
                {
                    req.headers_mut().insert(http::header::HOST, v);
                }
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
            Sender::H2(s) => {
                if req.uri().authority().is_none() {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_else(|| "/".into());
                    if let Ok(uri) = format!("https://{}{pq}", self.route_host).parse() {
                        *req.uri_mut() = uri;
                    }
                }
                *req.version_mut() = http::Version::HTTP_2;
                s.ready().await?;
                Ok(s.send_request(req).await?)
            }
        }
    }
}

/// The WebSocket handshake as a client; a refusal keeps the server's status and body.
async fn websocket<S>(io: S, target: &Target) -> Result<WsByteStream<S>, ClientError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let handshake = mcp_tunnel_net::ws::client_handshake(
        io,
        &target.ws_host,
        &target.ws_path,
        &target.ws_headers,
    );
    match handshake.await {
        Ok(ws) => Ok(ws),
        Err(HandshakeError::Refused { status, body }) => Err(ClientError::Refused { status, body }),
        Err(e @ (HandshakeError::InvalidHeader { .. } | HandshakeError::InvalidTarget { .. })) => {
            Err(ClientError::Config(e.to_string()))
        }
        Err(e) => Err(ClientError::WebSocket(e)),
    }
}
