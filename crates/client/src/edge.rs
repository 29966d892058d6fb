//! Reaching a tunnel through the edge: outer TLS to the edge's client listener, a
//! WebSocket for the tunnel domain authenticated with a client access key, then the
//! inner-TLS session to the proxy inside it.

use std::sync::Arc;

use mcp_tunnel_pki::crypto::Secret;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::{ClientError, InnerTls, Session, Target};

/// Everything needed to open sessions through one edge.
#[derive(Clone)]
pub struct EdgeDialer {
    addr: String,
    server_name: ServerName<'static>,
    tls: TlsConnector,
    client_key: Secret,
}

impl std::fmt::Debug for EdgeDialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeDialer")
            .field("addr", &self.addr)
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl EdgeDialer {
    /// `addr` is `host:port` of the edge's client listener; its certificate must chain
    /// to one of `edge_cas` for the name `server_name`.
    pub fn new(
        addr: impl Into<String>,
        server_name: &str,
        edge_cas: &[CertificateDer<'static>],
        client_key: Secret,
    ) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        for ca in edge_cas {
            roots
                .add(ca.clone())
                .map_err(|e| ClientError::Config(e.to_string()))?;
        }
        let mut config = ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|_| ClientError::ServerName(server_name.to_owned()))?;
        Ok(Self {
            addr: addr.into(),
            server_name,
            tls: TlsConnector::from(Arc::new(config)),
            client_key,
        })
    }

    /// Opens an inner-TLS session to `route_host` (`<route>.<tunnel domain>`).
    pub async fn open(&self, route_host: &str, inner: &InnerTls) -> Result<Session, ClientError> {
        let tcp = TcpStream::connect(&self.addr)
            .await
            .map_err(|e| ClientError::Connect(format!("{}: {e}", self.addr)))?;
        let _ = tcp.set_nodelay(true);
        let outer = self
            .tls
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| ClientError::Connect(format!("TLS to the edge {}: {e}", self.addr)))?;
        let mut target = Target::new(route_host, route_host);
        target.ws_headers.push((
            "authorization".into(),
            format!("Bearer {}", self.client_key.expose()),
        ));
        Session::open(outer, &target, inner).await
    }
}
