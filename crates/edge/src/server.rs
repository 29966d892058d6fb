//! Wiring: configuration, shared state, the listeners and the store-event task.

use std::sync::Arc;
use std::time::Duration;

use mcp_tunnel_net::forwarded::TrustedProxies;
use mcp_tunnel_proto::ALPN;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, broadcast};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::connectors::PendingPerSource;
use crate::limits::FailureLimiter;
use crate::metrics::EdgeMetrics;
use crate::registry::Registry;
use crate::store::{EdgeStore, StoreEvent};

/// Edge settings with their defaults; durations are real `Duration`s.
#[derive(Debug, Clone)]
pub struct EdgeConfig {
    /// Name of this replica, sent to connectors and shown in logs.
    pub edge_id: String,
    /// Deadline for TLS plus the tunnel handshake on the connector listener.
    pub handshake_timeout: Duration,
    /// Connector connections allowed in TLS/handshake at once, in total…
    pub max_pending_handshakes: usize,
    /// …and from one source address.
    pub max_pending_handshakes_per_source: usize,
    /// Failed connector authentications per source and window before it is refused.
    pub connector_auth_failures: u32,
    /// Failed client-key checks per source and window before it gets 429.
    pub client_auth_failures: u32,
    pub auth_failure_window: Duration,
    /// HTTP/2 PING interval on connector connections, and how long to wait for the ack.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    pub max_connections_per_tunnel: usize,
    /// Client TLS handshakes in progress at once.
    pub max_pending_client_handshakes: usize,
    /// Deadline for a client's TLS handshake and request headers.
    pub client_header_timeout: Duration,
    /// HTTP/2 flow-control windows on connector connections.
    pub stream_window: u32,
    pub connection_window: u32,
    /// Reverse proxies in front of the client listener whose `X-Forwarded-For` names the
    /// client for the failed-key limit (`--trusted-proxy`); from anyone else it is ignored.
    pub trusted_proxies: TrustedProxies,
    /// L4 balancers that put a PROXY protocol header (v1 or v2) before each connection
    /// (`--proxy-protocol-from`), in front of the connector listener and of the client
    /// listener: connections from them must carry one, and its source is the client for
    /// every per-source limit.
    pub proxy_protocol_connectors: TrustedProxies,
    pub proxy_protocol_clients: TrustedProxies,
}

impl Default for EdgeConfig {
    fn default() -> Self {
        Self {
            edge_id: "edge".into(),
            handshake_timeout: Duration::from_secs(10),
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_source: 64,
            connector_auth_failures: 20,
            client_auth_failures: 50,
            auth_failure_window: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(15),
            keepalive_timeout: Duration::from_secs(10),
            max_connections_per_tunnel: 64,
            max_pending_client_handshakes: 4096,
            client_header_timeout: Duration::from_secs(10),
            stream_window: 256 * 1024,
            connection_window: 4 * 1024 * 1024,
            trusted_proxies: TrustedProxies::none(),
            proxy_protocol_connectors: TrustedProxies::none(),
            proxy_protocol_clients: TrustedProxies::none(),
        }
    }
}

/// TLS material for the two listeners.
#[derive(Debug, Clone)]
pub struct EdgeTls {
    /// Presented to connectors. ALPN is set to `mcpt/1` by the edge.
    pub connector: Arc<rustls::ServerConfig>,
    /// Presented to clients; `None` serves plain HTTP (behind a TLS-terminating balancer).
    pub client: Option<Arc<rustls::ServerConfig>>,
}

/// Bound listeners. Binding is the caller's job so that tests can use ephemeral ports.
#[derive(Debug)]
pub struct EdgeListeners {
    pub connector: TcpListener,
    pub client: TcpListener,
    /// Health and metrics.
    pub admin: Option<TcpListener>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EdgeConfig,
    pub(crate) store: Arc<dyn EdgeStore>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) metrics: Arc<EdgeMetrics>,
    pub(crate) connector_failures: FailureLimiter,
    pub(crate) client_failures: FailureLimiter,
    pub(crate) pending: Arc<Semaphore>,
    pub(crate) pending_per_source: PendingPerSource,
    pub(crate) pending_clients: Arc<Semaphore>,
    pub(crate) shutdown: CancellationToken,
}

impl std::fmt::Debug for dyn EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EdgeStore")
    }
}

/// A running edge.
#[derive(Debug)]
pub struct Edge {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

impl Edge {
    /// Starts serving on the given listeners.
    pub fn start(
        config: EdgeConfig,
        tls: EdgeTls,
        listeners: EdgeListeners,
        store: Arc<dyn EdgeStore>,
    ) -> Self {
        let window = config.auth_failure_window;
        let shared = Arc::new(Shared {
            connector_failures: FailureLimiter::new(config.connector_auth_failures, window),
            client_failures: FailureLimiter::new(config.client_auth_failures, window),
            pending: Arc::new(Semaphore::new(config.max_pending_handshakes)),
            pending_per_source: PendingPerSource::default(),
            pending_clients: Arc::new(Semaphore::new(config.max_pending_client_handshakes)),
            config,
            store,
            registry: Arc::default(),
            metrics: Arc::default(),
            shutdown: CancellationToken::new(),
        });
        let mut connector_tls = (*tls.connector).clone();
        connector_tls.alpn_protocols = vec![ALPN.to_vec()];
        let connector_acceptor = TlsAcceptor::from(Arc::new(connector_tls));
        let client_acceptor = tls.client.map(|c| {
            let mut c = (*c).clone();
            // Sessions are HTTP/1.1 upgrades; never let a client pick h2 here.
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            TlsAcceptor::from(Arc::new(c))
        });
        let mut tasks = JoinSet::new();
        let events = shared.store.subscribe();
        tasks.spawn(watch_store(events, shared.clone()));
        tasks.spawn(crate::connectors::accept_loop(
            listeners.connector,
            shared.clone(),
            connector_acceptor,
        ));
        tasks.spawn(crate::clients::accept_loop(
            listeners.client,
            shared.clone(),
            client_acceptor,
        ));
        if let Some(admin) = listeners.admin {
            tasks.spawn(crate::admin::accept_loop(admin, shared.clone()));
        }
        Self { shared, tasks }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.shared.registry
    }

    pub fn metrics(&self) -> &Arc<EdgeMetrics> {
        &self.shared.metrics
    }

    /// Stops accepting, closes every connection and waits for the listeners to stop.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        self.shared.registry.sever_all();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Resolves when the edge is asked to stop (for callers that wait on it).
    pub async fn stopped(&self) {
        self.shared.shutdown.cancelled().await;
    }
}

/// Acts on revocations. A lagging receiver may have missed an archive, so it re-checks
/// every tunnel with live connections.
async fn watch_store(mut events: broadcast::Receiver<StoreEvent>, shared: Arc<Shared>) {
    loop {
        let event = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            e = events.recv() => e,
        };
        match event {
            Ok(StoreEvent::TunnelArchived { tunnel_id }) => {
                let n = shared.registry.sever_tunnel(&tunnel_id);
                tracing::info!(tunnel_id = %tunnel_id, connections = n, "tunnel archived: connections severed");
            }
            Ok(StoreEvent::TokenRotated { tunnel_id }) => {
                tracing::info!(tunnel_id = %tunnel_id, "tunnel token rotated: established connections kept, new ones need the new token");
            }
            Err(broadcast::error::RecvError::Lagged(missed)) => {
                tracing::warn!(missed, "store events lagged; re-checking live tunnels");
                recheck(&shared).await;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

async fn recheck(shared: &Shared) {
    for id in shared.registry.tunnels() {
        match shared.store.tunnel_by_id(&id).await {
            Ok(Some(t)) if !t.archived => {}
            Ok(_) => {
                shared.registry.sever_tunnel(&id);
            }
            Err(e) => tracing::warn!(error = %e, tunnel_id = %id, "re-check failed"),
        }
    }
}
