//! Several `server` replicas over one PostgreSQL: a client session that arrives at a
//! replica without a connection of its tunnel is forwarded to a replica that has one.
//!
//! Why forward rather than steer connectors to every replica: connectors dial one edge
//! address (usually a load balancer), so which replicas hold a tunnel's connections is
//! chance; forwarding makes any replica able to serve any session without changing the
//! connector or its token, and a replica that dies only costs the sessions it carried.
//!
//! Each replica runs the edge's TLS session listener on a peer address, and in front of
//! it, on the public client port, this router: it terminates the client's outer TLS,
//! reads the request head (bounded), resolves the tunnel from `Host`, and relays the
//! request and everything after it, over TLS verified against the shared edge CA, to its
//! own edge when it holds a live connection of the tunnel, else to a live peer that does
//! (found in the store's `connections` and `edges` tables), else to its own edge, which
//! gives the precise refusal. The session payload is the client's inner TLS throughout.
//!
//! The edges behind the router see the router as the source of every session, so the
//! per-source limit on failed client keys is enforced here, on the real address, from
//! the status the edge answers.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mcp_tunnel_edge::registry::Registry;
use mcp_tunnel_edge::store::tunnel_for_host;
use mcp_tunnel_net::forwarded::TrustedProxies;
use mcp_tunnel_net::host::tunnel_host;
use mcp_tunnel_net::proxy_protocol::client_behind;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_util::sync::CancellationToken;

use crate::api::auth::FailureLimiter;
use crate::store::ControlStore;

/// Largest request head read before routing.
const MAX_HEAD: usize = 16 * 1024;
/// Replicas whose heartbeat is older than this are not forwarded to.
pub const PEER_MAX_AGE_MS: i64 = 15_000;
/// How often a replica heartbeats (and reaps silent peers).
pub const HEARTBEAT: Duration = Duration::from_secs(3);

/// What the router needs.
#[derive(Debug, Clone)]
pub struct RouterConfig {
    pub edge_id: String,
    /// Presented to clients on the public port (the edge certificate).
    pub public_tls: Arc<rustls::ServerConfig>,
    /// Trusts the edge CA, for hops to an edge's peer listener.
    pub peer_tls: Arc<rustls::ClientConfig>,
    /// A name in the edge certificate, checked on every hop.
    pub peer_name: ServerName<'static>,
    /// This replica's own edge peer listener.
    pub local_peer: SocketAddr,
    pub head_timeout: Duration,
    /// Failed client keys per source address and minute before 429.
    pub client_auth_failures: u32,
    /// Sessions in their TLS handshake or request head at once (the edge's
    /// `max_pending_client_handshakes`); more are closed at once.
    pub max_pending: usize,
    /// Reverse proxies whose `X-Forwarded-For` names the client for the failed-key
    /// limit (`--trusted-proxy`).
    pub trusted_proxies: TrustedProxies,
    /// L4 balancers that put a PROXY protocol header before each connection
    /// (`--proxy-protocol-from`).
    pub proxy_protocol_from: TrustedProxies,
}

impl RouterConfig {
    /// `edge_ca_file` is the CA every replica's edge certificate chains to, and
    /// `edge_host` a name that certificate carries (the host of the edge address).
    pub fn new(
        edge_id: String,
        public_tls: Arc<rustls::ServerConfig>,
        edge_ca_file: &std::path::Path,
        edge_host: &str,
        local_peer: SocketAddr,
    ) -> Result<Self, String> {
        let mut roots = rustls::RootCertStore::empty();
        let cas = mcp_tunnel_pki::tls::load_certs(edge_ca_file).map_err(|e| e.to_string())?;
        for ca in cas {
            roots
                .add(ca)
                .map_err(|e| format!("{}: {e}", edge_ca_file.display()))?;
        }
        let mut peer = rustls::ClientConfig::builder_with_provider(mcp_tunnel_pki::tls::provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
        peer.alpn_protocols = vec![b"http/1.1".to_vec()];
        let peer_name = ServerName::try_from(edge_host.to_owned())
            .map_err(|_| format!("{edge_host:?} is not a valid TLS server name"))?;
        Ok(Self {
            edge_id,
            public_tls,
            peer_tls: Arc::new(peer),
            peer_name,
            local_peer,
            head_timeout: Duration::from_secs(10),
            client_auth_failures: 50,
            max_pending: mcp_tunnel_edge::EdgeConfig::default().max_pending_client_handshakes,
            trusted_proxies: TrustedProxies::none(),
            proxy_protocol_from: TrustedProxies::none(),
        })
    }
}

/// Runs the router until `stop`.
pub async fn route(
    listener: TcpListener,
    store: ControlStore,
    registry: Arc<Registry>,
    config: RouterConfig,
    stop: CancellationToken,
) {
    let mut public = (*config.public_tls).clone();
    public.alpn_protocols = vec![b"http/1.1".to_vec()];
    let router = Arc::new(Router {
        acceptor: TlsAcceptor::from(Arc::new(public)),
        limiter: FailureLimiter::new(config.client_auth_failures, Duration::from_secs(60)),
        pending: Arc::new(tokio::sync::Semaphore::new(config.max_pending.max(1))),
        store,
        registry,
        config,
    });
    loop {
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "session router accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = router.pending.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "session router: too many sessions before their request head, closed");
            continue;
        };
        let (router, stop) = (router.clone(), stop.clone());
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                r = serve(tcp, peer, permit, &router) => if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "routed session ended");
                },
            }
        });
    }
}

/// What every routed session shares.
struct Router {
    acceptor: TlsAcceptor,
    store: ControlStore,
    registry: Arc<Registry>,
    config: RouterConfig,
    limiter: FailureLimiter,
    /// Sessions before the end of their request head.
    pending: Arc<tokio::sync::Semaphore>,
}

async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    pending: tokio::sync::OwnedSemaphorePermit,
    router: &Router,
) -> std::io::Result<()> {
    let Router {
        acceptor,
        store,
        registry,
        config,
        limiter,
        ..
    } = router;
    let _ = tcp.set_nodelay(true);
    let timeout = config.head_timeout;
    // One deadline for a PROXY header (from a balancer) and the TLS handshake.
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tcp = tcp;
    let peer = client_behind(&mut tcp, peer, &config.proxy_protocol_from, timeout)
        .await
        .map_err(std::io::Error::other)?;
    let mut client = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
        .await
        .map_err(|_| std::io::Error::other("TLS handshake timed out"))??;
    let head = tokio::time::timeout(timeout, read_head(&mut client))
        .await
        .map_err(|_| std::io::Error::other("request head timed out"))??;
    // The cap covers the unauthenticated part: handshake and head.
    drop(pending);
    let source = config
        .trusted_proxies
        .client(peer.ip(), header_values(&head, "x-forwarded-for"));
    if limiter.check(source).is_err() {
        let body = r#"{"type":"error","error":{"type":"rate_limit_error","code":"rate_limited","message":"too many failed authentications from this address; retry later"}}"#;
        let resp = format!(
            "HTTP/1.1 429 Too Many Requests\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(resp.as_bytes()).await?;
        return client.shutdown().await;
    }
    let target = choose(&head, store, registry, config).await;
    let tcp = TcpStream::connect(&target).await?;
    let _ = tcp.set_nodelay(true);
    let mut upstream = TlsConnector::from(config.peer_tls.clone())
        .connect(config.peer_name.clone(), tcp)
        .await?;
    upstream.write_all(&head).await?;
    let answer = read_head(&mut upstream).await?;
    if answer.starts_with(b"HTTP/1.1 401") {
        limiter.failed(source);
    }
    client.write_all(&answer).await?;
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

/// Reads until the end of an HTTP head; returns everything read (the head and whatever
/// followed it in the same reads).
async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> std::io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::other(
                "connection closed before the end of the head",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") {
            return Ok(buf);
        }
        if buf.len() > MAX_HEAD {
            return Err(std::io::Error::other("request head too large"));
        }
    }
}

/// The tunnel host named by the head's `Host` header, read as the edge reads it
/// ([`tunnel_host`]).
pub fn host_of(head: &[u8]) -> Option<String> {
    let value = header_values(head, "host").into_iter().next()?;
    tunnel_host(std::str::from_utf8(value).ok()?.trim())
}

/// The values of header `name` in a request head, in order (empty when the head is not
/// complete).
pub fn header_values<'a>(head: &'a [u8], name: &str) -> Vec<&'a [u8]> {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Vec::new();
    };
    head[..end]
        .split(|b| *b == b'\n')
        .skip(1)
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|b| *b == b':')?;
            let (key, value) = line.split_at(colon);
            key.trim_ascii()
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| value[1..].trim_ascii())
        })
        .collect()
}

async fn choose(
    head: &[u8],
    store: &ControlStore,
    registry: &Registry,
    config: &RouterConfig,
) -> String {
    let local = config.local_peer.to_string();
    let Some(host) = host_of(head) else {
        return local;
    };
    // A store error routes locally, where the edge gives the precise refusal.
    let Ok(Some(tunnel)) = tunnel_for_host(store, &host).await else {
        return local;
    };
    let tunnel = tunnel.id;
    if registry.connections(&tunnel).iter().any(|c| c.is_usable()) {
        return local;
    }
    match store
        .peer_for_tunnel(tunnel.as_str(), &config.edge_id, PEER_MAX_AGE_MS)
        .await
    {
        Ok(Some(peer)) => {
            tracing::debug!(tunnel_id = %tunnel, %peer, "forwarding session to the replica holding the tunnel");
            peer
        }
        Ok(None) => local,
        Err(e) => {
            tracing::warn!(error = %e, "cannot look up peer replicas; serving locally");
            local
        }
    }
}

/// Heartbeats this replica and reaps silent ones until `stop`.
pub async fn heartbeat(
    store: ControlStore,
    edge_id: String,
    advertise: String,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = store.heartbeat_edge(&edge_id, &advertise).await {
            tracing::warn!(error = %e, "replica heartbeat failed");
        }
        match store.reap_stale_edges(PEER_MAX_AGE_MS * 2).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(connections = n, "forgot connections of silent replicas"),
            Err(e) => tracing::warn!(error = %e, "reaping silent replicas failed"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
}

/// Whether `ip` is usable as an advertised peer address (not 0.0.0.0 or ::).
pub fn advertisable(ip: IpAddr) -> bool {
    !ip.is_unspecified()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn host_of_never_panics(head in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = host_of(&head);
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(
            host_of(b"GET / HTTP/1.1\r\nHost: AbC.t.test:443\r\n\r\n").as_deref(),
            Some("abc.t.test")
        );
        assert_eq!(
            host_of(b"GET / HTTP/1.1\r\nx: y\r\nhost:a.b.\r\n\r\nbody").as_deref(),
            Some("a.b")
        );
        assert_eq!(host_of(b"GET / HTTP/1.1\r\nx: y\r\n\r\n"), None);
        assert_eq!(host_of(b"GET / HTTP/1.1\r\nHost: a"), None);
    }

    #[test]
    fn header_values_in_order_and_only_from_a_complete_head() {
        let head = b"GET / HTTP/1.1\r\nX-Forwarded-For: 198.51.100.1\r\nHost: a.b.c\r\nx-forwarded-for:10.0.0.1 \r\n\r\nX-Forwarded-For: 203.0.113.9\r\n";
        assert_eq!(
            header_values(head, "x-forwarded-for"),
            [&b"198.51.100.1"[..], &b"10.0.0.1"[..]],
            "the body is not read as headers"
        );
        assert!(
            header_values(
                b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.2.3.4\r\n",
                "x-forwarded-for"
            )
            .is_empty()
        );
        assert!(header_values(b"GET / HTTP/1.1\r\nnocolon\r\n\r\n", "nocolon").is_empty());
        // The request line is never a header, even if it holds a colon.
        assert!(header_values(b"x-forwarded-for: 1.2.3.4\r\n\r\n", "x-forwarded-for").is_empty());
    }
}
