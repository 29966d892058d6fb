//! Connection phases, in order: accept TCP → WebSocket upgrade → terminate inner TLS →
//! serve inner HTTP (each request goes to [`Forwarder::handle`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mcp_tunnel_net::listen::ListenAddr;
use mcp_tunnel_net::metrics::GaugeGuard;
use mcp_tunnel_pki::tls::{LoadError, load_certs, provider};
use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin;
use crate::certs::CertStore;
use crate::config::ProxyConfig;
use crate::forward::{Forwarder, SessionInfo};
use crate::guard::{GuardedConnector, Resolver, SystemResolver};
use crate::metrics::ProxyMetrics;
use crate::upstream::UpstreamConnector;
use mcp_tunnel_pki::validate::fmt_unix;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("tls: {0}")]
    Certificate(#[from] LoadError),
    #[error("upstream.tls.ca_file: {0}")]
    UpstreamCa(LoadError),
    #[error("client_auth.ca_file: {0}")]
    ClientCa(String),
    #[error("upstream.tls.include_system_cas: no system CA certificates could be loaded")]
    NoSystemCas,
    #[error("listen {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
}

/// A configured proxy, not yet listening.
#[derive(Debug)]
pub struct Proxy {
    config: Arc<ProxyConfig>,
    certs: Arc<CertStore>,
    metrics: Arc<ProxyMetrics>,
    tls: Arc<ServerConfig>,
    forwarder: Arc<Forwarder>,
}

impl Proxy {
    pub fn new(config: ProxyConfig) -> Result<Self, StartError> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// Like [`Proxy::new`] with a custom resolver (tests use it to simulate DNS answers).
    pub fn with_resolver(
        config: ProxyConfig,
        resolver: Arc<dyn Resolver>,
    ) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let metrics = Arc::new(ProxyMetrics::default());
        let certs = Arc::new(CertStore::load(
            config.tls.cert_file.clone(),
            config.tls.key_file.clone(),
            metrics.clone(),
        )?);
        let tls = Arc::new(inner_tls_config(&config, certs.clone())?);
        let guard = Arc::new(GuardedConnector::new(
            config.upstream.policy.clone(),
            resolver,
            config.upstream.connect_timeout,
        ));
        let connector = UpstreamConnector::new(guard, upstream_tls_config(&config)?);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        let forwarder = Arc::new(Forwarder::new(config.clone(), client, metrics.clone()));
        Ok(Self {
            config,
            certs,
            metrics,
            tls,
            forwarder,
        })
    }

    pub fn metrics(&self) -> Arc<ProxyMetrics> {
        self.metrics.clone()
    }

    /// Binds the listener (and the admin listener), logs the routes, and starts serving.
    pub async fn start(self) -> Result<RunningProxy, StartError> {
        let listener = bind(&self.config.listen_addr).await?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: self.config.listen_addr.to_string(),
            source,
        })?;
        let shutdown = CancellationToken::new();
        let admin_addr = match &self.config.admin_addr {
            Some(addr) => {
                let l = bind(addr).await?;
                let a = l.local_addr().ok();
                tokio::spawn(admin::serve(l, self.metrics.clone(), shutdown.clone()));
                a
            }
            None => None,
        };
        for route in self.config.routes.iter() {
            tracing::info!(route = %route.name, upstream = %route.upstream, "route configured");
        }
        let cert = self.certs.current();
        tracing::info!(
            listen_addr = %local_addr,
            admin_addr = ?admin_addr,
            fingerprint = %cert.fingerprint,
            not_after = %fmt_unix(cert.not_after),
            "proxy listening"
        );
        tokio::spawn(
            self.certs
                .clone()
                .watch(self.config.tls.reload_interval, shutdown.clone()),
        );
        let tracker = TaskTracker::new();
        let serve = tokio::spawn(accept_loop(
            Arc::new(self),
            listener,
            shutdown.clone(),
            tracker.clone(),
        ));
        Ok(RunningProxy {
            local_addr,
            admin_addr,
            shutdown,
            tracker,
            serve,
        })
    }
}

/// A proxy that is serving.
#[derive(Debug)]
pub struct RunningProxy {
    local_addr: SocketAddr,
    admin_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    serve: tokio::task::JoinHandle<()>,
}

impl RunningProxy {
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Stops accepting, lets in-flight requests finish for up to `timeout`, then returns
    /// whether everything finished in time.
    pub async fn shutdown(self, timeout: Duration) -> bool {
        self.shutdown.cancel();
        let _ = self.serve.await;
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }
}

async fn bind(addr: &ListenAddr) -> Result<TcpListener, StartError> {
    let mut last = None;
    for candidate in addr.socket_addrs() {
        match TcpListener::bind(candidate).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
    }
    Err(StartError::Bind {
        addr: addr.to_string(),
        source: last.unwrap_or_else(|| std::io::Error::other("no address to bind")),
    })
}

fn inner_tls_config(
    config: &ProxyConfig,
    certs: Arc<CertStore>,
) -> Result<ServerConfig, StartError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::ClientCa(e.to_string()))?;
    let builder = match &config.client_auth {
        None => builder.with_no_client_auth(),
        Some(auth) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                load_certs(&auth.ca_file).map_err(|e| StartError::ClientCa(e.to_string()))?
            {
                roots
                    .add(cert)
                    .map_err(|e| StartError::ClientCa(e.to_string()))?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .map_err(|e| StartError::ClientCa(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut tls = builder.with_cert_resolver(certs);
    tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    tls.session_storage = rustls::server::ServerSessionMemoryCache::new(4096);
    if let Ok(ticketer) = rustls::crypto::aws_lc_rs::Ticketer::new() {
        tls.ticketer = ticketer;
    }
    Ok(tls)
}

fn upstream_tls_config(
    config: &ProxyConfig,
) -> Result<Option<Arc<rustls::ClientConfig>>, StartError> {
    let t = &config.upstream.tls;
    if t.ca_file.is_none() && !t.include_system_cas {
        return Ok(None);
    }
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = &t.ca_file {
        for cert in load_certs(path).map_err(StartError::UpstreamCa)? {
            roots.add(cert).map_err(|e| {
                StartError::UpstreamCa(LoadError::BadCertificate {
                    path: path.clone(),
                    reason: e.to_string(),
                })
            })?;
        }
    }
    if t.include_system_cas {
        let (added, _) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        if added == 0 {
            return Err(StartError::NoSystemCas);
        }
    }
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StartError::ClientCa(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(tls)))
}

/// Phase: accept. One task per TCP connection until shutdown.
async fn accept_loop(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        tracker.spawn(serve_outer(
            proxy.clone(),
            tcp,
            peer,
            shutdown.clone(),
            tracker.clone(),
        ));
    }
}

/// Phase: WebSocket upgrade. Plain HTTP/1.1 that accepts an upgrade on any path; anything
/// else (including a TLS ClientHello sent straight at the port) is refused.
async fn serve_outer(
    proxy: Arc<Proxy>,
    tcp: TcpStream,
    peer: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    let limits = &proxy.config.limits;
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.handshake_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    let svc = {
        let proxy = proxy.clone();
        let shutdown = shutdown.clone();
        service_fn(move |req| {
            let proxy = proxy.clone();
            let shutdown = shutdown.clone();
            let tracker = tracker.clone();
            async move {
                Ok::<_, std::convert::Infallible>(upgrade(proxy, req, peer, shutdown, tracker))
            }
        })
    };
    let conn = http
        .serve_connection(TokioIo::new(tcp), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(peer = %peer, error = %e, "listener connection ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn upgrade(
    proxy: Arc<Proxy>,
    mut req: Request<Incoming>,
    peer: SocketAddr,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) -> Response<Full<Bytes>> {
    if req.method() != http::Method::GET
        || !header_has_token(&req, header::UPGRADE, "websocket")
        || !header_has_token(&req, header::CONNECTION, "upgrade")
    {
        let mut resp = plain(
            StatusCode::UPGRADE_REQUIRED,
            "This listener accepts only WebSocket tunnel connections\n",
        );
        resp.headers_mut()
            .insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
        return resp;
    }
    if req
        .headers()
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut resp = plain(StatusCode::BAD_REQUEST, "Unsupported WebSocket version\n");
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            http::HeaderValue::from_static("13"),
        );
        return resp;
    }
    let Some(key) = req.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return plain(StatusCode::BAD_REQUEST, "Missing Sec-WebSocket-Key\n");
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tracker.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve_session(proxy, TokioIo::new(upgraded), peer, shutdown).await,
            Err(e) => tracing::debug!(peer = %peer, error = %e, "websocket upgrade failed"),
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
    h.insert(
        header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&mcp_tunnel_net::ws::accept_key(key.as_bytes())) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    resp
}

/// Phases: terminate inner TLS, then serve inner HTTP/1.1 or HTTP/2 (by ALPN).
async fn serve_session<S>(proxy: Arc<Proxy>, io: S, peer: SocketAddr, shutdown: CancellationToken)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let ws = mcp_tunnel_net::ws::server_stream(io).await;
    let acceptor = TlsAcceptor::from(proxy.tls.clone());
    let handshake =
        tokio::time::timeout(proxy.config.limits.handshake_timeout, acceptor.accept(ws));
    let tls = match handshake.await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            proxy.metrics.handshake_failures.inc(&[]);
            tracing::warn!(peer = %peer, reason = %e, "tls handshake failed");
            return;
        }
        Err(_) => {
            proxy.metrics.handshake_failures.inc(&[]);
            tracing::warn!(peer = %peer, reason = "timed out", "tls handshake failed");
            return;
        }
    };
    let _active = GaugeGuard::new(&proxy.metrics.active_sessions);
    let sni = tls
        .get_ref()
        .1
        .server_name()
        .and_then(crate::config::normalize_host);
    let session = Arc::new(SessionInfo { sni });
    let forwarder = proxy.forwarder.clone();
    let svc = service_fn(move |req| forwarder.clone().handle(session.clone(), req));
    let limits = &proxy.config.limits;
    let mut http = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    http.http1()
        .timer(TokioTimer::new())
        .max_buf_size(limits.max_header_bytes.max(8192));
    http.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let conn = http.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    tokio::select! {
        res = conn.as_mut() => {
            if let Err(e) = res {
                tracing::debug!(peer = %peer, error = %e, "session ended with an error");
            }
        }
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}
