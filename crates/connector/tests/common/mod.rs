//! A whole tunnel on loopback for tests: a memory store, an edge with generated
//! certificates, connectors, a plain HTTP/WebSocket echo origin and a client.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use mcp_tunnel_connector::backoff::Backoff;
use mcp_tunnel_connector::{ConnectorConfig, ConnectorHandle, Origin, TokenSource};
use mcp_tunnel_edge::store::{ClientIdentity, USE_TUNNELS_SCOPE, WorkspaceId};
use mcp_tunnel_edge::{Edge, EdgeConfig, EdgeListeners, EdgeTls, MemoryStore, TunnelRecord};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_pki::generate::{self, GeneratedCert, KeyKind};
use mcp_tunnel_proto::token::generate_secret;
use mcp_tunnel_proto::{CaPin, EdgeAddr, TunnelId, TunnelToken};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub const DOMAIN: &str = "abcd1234.tun.test";
pub const WORKSPACE: &str = "wrkspc_test";

/// The edge's CA and server certificate (for `localhost` and the tunnel domains).
pub struct Pki {
    pub ca: GeneratedCert,
    pub leaf: GeneratedCert,
}

impl Pki {
    pub fn new() -> Self {
        let ca = generate::generate_ca("test edge CA", Duration::from_secs(86_400)).unwrap();
        let leaf = generate::issue_server_cert(
            &ca.cert_pem,
            ca.key_pem.expose(),
            &[
                "localhost".into(),
                "*.tun.test".into(),
                format!("*.{DOMAIN}"),
            ],
            Duration::from_secs(86_400),
            KeyKind::EcdsaP256,
        )
        .unwrap();
        Self { ca, leaf }
    }

    pub fn pin(&self) -> CaPin {
        CaPin::from_der(&self.ca.cert_der)
    }

    pub fn server_config(&self) -> Arc<rustls::ServerConfig> {
        let chain = vec![
            CertificateDer::from(self.leaf.cert_der.clone()),
            CertificateDer::from(self.ca.cert_der.clone()),
        ];
        let key = PrivateKeyDer::from_pem_slice(self.leaf.key_pem.expose().as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        Arc::new(config)
    }

    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(self.ca.cert_der.clone()))
            .unwrap();
        let mut c = rustls::ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        c.alpn_protocols = vec![b"http/1.1".to_vec()];
        Arc::new(c)
    }
}

/// Everything but the connectors.
pub struct World {
    pub store: MemoryStore,
    pub pki: Pki,
    pub tunnel: TunnelRecord,
    pub token: TunnelToken,
    pub client_key: Secret,
    pub edge: Option<Edge>,
    pub edge_config: EdgeConfig,
    pub client_tls: bool,
    pub connector_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub origin: SocketAddr,
}

pub fn fast_edge_config() -> EdgeConfig {
    EdgeConfig {
        edge_id: "edge-test".into(),
        handshake_timeout: Duration::from_secs(5),
        keepalive_interval: Duration::from_secs(2),
        keepalive_timeout: Duration::from_secs(2),
        ..EdgeConfig::default()
    }
}

impl World {
    pub async fn new() -> Self {
        Self::with(fast_edge_config(), false).await
    }

    pub async fn with(edge_config: EdgeConfig, client_tls: bool) -> Self {
        let store = MemoryStore::new();
        let pki = Pki::new();
        let tunnel = TunnelRecord {
            id: TunnelId::parse("tnl_test1").unwrap(),
            workspace_id: WorkspaceId(WORKSPACE.into()),
            domain: DOMAIN.into(),
            archived: false,
            has_active_ca: true,
        };
        let client_key = generate_secret();
        store.add_client_key(
            &client_key,
            ClientIdentity {
                workspace_id: WorkspaceId(WORKSPACE.into()),
                scopes: vec![USE_TUNNELS_SCOPE.into()],
                key_id: "ck_test".into(),
            },
        );
        let connector = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connector_addr = connector.local_addr().unwrap();
        let token = TunnelToken::generate(
            tunnel.id.clone(),
            EdgeAddr::parse(&format!("localhost:{}", connector_addr.port())).unwrap(),
            Some(pki.pin()),
        );
        store.put_tunnel(tunnel.clone(), token.secret_hash());
        let mut world = Self {
            store,
            tunnel,
            token,
            client_key,
            edge: None,
            edge_config,
            client_tls,
            connector_addr,
            client_addr: client.local_addr().unwrap(),
            admin_addr: admin.local_addr().unwrap(),
            origin: start_origin().await,
            pki,
        };
        world.start_edge(EdgeListeners {
            connector,
            client,
            admin: Some(admin),
        });
        world
    }

    fn start_edge(&mut self, listeners: EdgeListeners) {
        let tls = EdgeTls {
            connector: self.pki.server_config(),
            client: self.client_tls.then(|| self.pki.server_config()),
        };
        self.edge = Some(Edge::start(
            self.edge_config.clone(),
            tls,
            listeners,
            Arc::new(self.store.clone()),
        ));
    }

    pub fn edge(&self) -> &Edge {
        self.edge.as_ref().unwrap()
    }

    pub async fn stop_edge(&mut self) {
        if let Some(edge) = self.edge.take() {
            edge.shutdown().await;
        }
    }

    /// A new edge on the same addresses (like a restarted process).
    pub async fn restart_edge(&mut self) {
        self.stop_edge().await;
        let listeners = EdgeListeners {
            connector: TcpListener::bind(self.connector_addr).await.unwrap(),
            client: TcpListener::bind(self.client_addr).await.unwrap(),
            admin: Some(TcpListener::bind(self.admin_addr).await.unwrap()),
        };
        self.start_edge(listeners);
    }

    pub fn connector_config(&self, ha: u8, token: TokenSource) -> ConnectorConfig {
        let mut c = ConnectorConfig::new(token);
        c.origin = Some(Origin::parse(&format!("http://{}", self.origin)).unwrap());
        c.ha_connections = ha;
        c.backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        };
        c.grace_period = Duration::from_secs(5);
        c.keepalive_interval = Duration::from_secs(2);
        c.keepalive_timeout = Duration::from_secs(2);
        c.token_poll_interval = Duration::from_millis(100);
        c
    }

    pub async fn connector(&self, ha: u8) -> ConnectorHandle {
        let source = TokenSource::fixed(&Secret::new(self.token.encode()), "test").unwrap();
        mcp_tunnel_connector::start(self.connector_config(ha, source))
            .await
            .unwrap()
    }

    pub fn live(&self) -> usize {
        self.edge().registry().connections(&self.tunnel.id).len()
    }

    pub async fn wait_live(&self, n: usize, within: Duration) -> Duration {
        let start = Instant::now();
        while self.live() != n {
            assert!(
                start.elapsed() < within,
                "expected {n} live connections, have {} after {within:?}",
                self.live()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        start.elapsed()
    }

    pub async fn session(&self) -> Session {
        self.open(DOMAIN, Some(self.client_key.expose()))
            .await
            .unwrap_or_else(|(s, b)| panic!("session refused: {s} {b}"))
    }

    /// An upgrade request through the edge; `Err((status, body))` when refused.
    pub async fn open(
        &self,
        host: &str,
        key: Option<&str>,
    ) -> Result<Session, (StatusCode, String)> {
        let req = upgrade_request(host, key);
        let resp = self.send(req).await;
        into_session(resp).await
    }

    pub async fn send(&self, req: Request<Empty<Bytes>>) -> hyper::Response<Incoming> {
        let tcp = TcpStream::connect(self.client_addr).await.unwrap();
        if self.client_tls {
            let name = rustls_pki_types::ServerName::try_from(DOMAIN).unwrap();
            let tls = tokio_rustls::TlsConnector::from(self.pki.client_config())
                .connect(name, tcp)
                .await
                .unwrap();
            send_on(TokioIo::new(tls), req).await
        } else {
            send_on(TokioIo::new(tcp), req).await
        }
    }

    pub async fn get(&self, host: &str, key: Option<&str>, path: &str) -> (StatusCode, String) {
        let mut b = Request::get(path).header("host", host);
        if let Some(k) = key {
            b = b.header("authorization", format!("Bearer {k}"));
        }
        let resp = self.send(b.body(Empty::new()).unwrap()).await;
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

async fn send_on<IO>(io: IO, req: Request<Empty<Bytes>>) -> hyper::Response<Incoming>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
    tokio::spawn(conn.with_upgrades());
    sender.send_request(req).await.unwrap()
}

pub fn upgrade_request(host: &str, key: Option<&str>) -> Request<Empty<Bytes>> {
    let mut b = Request::get("/ws?session=1")
        .header("host", host)
        .header("connection", "Upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13");
    if let Some(k) = key {
        b = b.header("authorization", format!("Bearer {k}"));
    }
    b.body(Empty::new()).unwrap()
}

pub type Session = TokioIo<Upgraded>;

async fn into_session(
    mut resp: hyper::Response<Incoming>,
) -> Result<Session, (StatusCode, String)> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let status = resp.status();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        return Err((status, String::from_utf8_lossy(&body).into_owned()));
    }
    assert_eq!(
        resp.headers()["x-origin"],
        "echo",
        "origin headers are relayed"
    );
    let up = hyper::upgrade::on(&mut resp).await.unwrap();
    Ok(TokioIo::new(up))
}

/// Writes `msg` and expects it echoed back within a few seconds.
pub async fn echo(s: &mut Session, msg: &[u8]) -> std::io::Result<()> {
    s.write_all(msg).await?;
    s.flush().await?;
    let mut back = vec![0u8; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "echo timed out"))??;
    assert_eq!(back, msg);
    Ok(())
}

/// Whether the session is closed (EOF or error) within `within`.
pub async fn closed_within(s: &mut Session, within: Duration) -> bool {
    let mut b = [0u8; 1];
    matches!(
        tokio::time::timeout(within, s.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A loopback origin: WebSocket-style upgrades are echoed byte for byte; plain requests
/// are answered with what the origin saw.
pub async fn start_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(origin_handle);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), svc)
                    .with_upgrades()
                    .await;
            });
        }
    });
    addr
}

async fn origin_handle(
    mut req: Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    if req.headers().contains_key("upgrade") {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(up) = on.await {
                let (mut r, mut w) = tokio::io::split(TokioIo::new(up));
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            }
        });
        let resp = hyper::Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("x-origin", "echo")
            .body(Full::new(Bytes::new()))
            .unwrap();
        return Ok(resp);
    }
    let host = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let auth = req.headers().contains_key("authorization");
    let body = format!(
        "origin saw {} {} host={host} authorization={auth}",
        req.method(),
        req.uri()
    );
    Ok(hyper::Response::new(Full::new(Bytes::from(body))))
}
