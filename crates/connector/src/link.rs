//! One of the connector's `--ha-connections`: connect to the edge, authenticate, serve
//! HTTP/2 streams until the connection ends, then reconnect with backoff.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mcp_tunnel_proto::{
    Accept, ClientEvent, ClientHandshake, Hello, InstanceId, ProtocolVersion, RejectCode,
    TunnelToken,
};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::backoff::unit_random;
use crate::config::ConnectorConfig;
use crate::metrics::ConnectorMetrics;
use crate::origin::OriginService;
use crate::tls::{EdgeTlsError, EdgeTrust};
use crate::token_source::TokenLoadError;

/// Largest HTTP/2 frame we accept: bigger than the 16 KiB default so bulk transfers
/// cost fewer frames (and TLS records) per byte.
const MAX_FRAME: u32 = 64 * 1024;

/// Why one connection attempt failed. `label` feeds the failure metric.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("tunnel token unavailable: {0}")]
    Token(#[from] TokenLoadError),
    #[error("edge TLS setup: {0}")]
    TlsSetup(#[from] EdgeTlsError),
    #[error("cannot connect to the edge at {edge}: {error}")]
    Connect { edge: String, error: std::io::Error },
    #[error("TLS handshake with the edge at {edge} failed: {error}")]
    Tls { edge: String, error: std::io::Error },
    #[error("edge at {0} did not negotiate ALPN mcpt/1")]
    Alpn(String),
    #[error("handshake with the edge timed out")]
    Timeout,
    #[error("connection to the edge closed during the handshake: {0}")]
    Io(std::io::Error),
    #[error("bad handshake from the edge: {0}")]
    Protocol(#[from] mcp_tunnel_proto::HandshakeError),
    #[error("edge rejected the connection ({code}): {message}")]
    Rejected { code: RejectCode, message: String },
}

impl LinkError {
    fn label(&self) -> &'static str {
        match self {
            Self::Token(_) => "token_unavailable",
            Self::TlsSetup(_) => "tls_setup",
            Self::Connect { .. } => "connect",
            Self::Tls { .. } => "tls",
            Self::Alpn(_) => "alpn",
            Self::Timeout => "timeout",
            Self::Io(_) => "io",
            Self::Protocol(_) => "protocol",
            Self::Rejected { code, .. } => code.as_str(),
        }
    }
}

/// How a link ended for good.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkExit {
    Drained,
    Archived,
}

/// What every link shares.
#[derive(Debug)]
pub(crate) struct LinkContext {
    pub(crate) config: Arc<ConnectorConfig>,
    pub(crate) instance: InstanceId,
    pub(crate) service: OriginService,
    pub(crate) metrics: Arc<ConnectorMetrics>,
    pub(crate) token_changed: Arc<Notify>,
    pub(crate) drain: CancellationToken,
}

struct Registered {
    tls: TlsStream<TcpStream>,
    accept: Accept,
    edge: String,
    peer: Option<SocketAddr>,
}

pub(crate) async fn run(index: u8, ctx: Arc<LinkContext>) -> LinkExit {
    let backoff = ctx.config.backoff;
    if wait(&ctx, backoff.first(unit_random())).await {
        return LinkExit::Drained;
    }
    let mut attempt = 0u32;
    loop {
        match connect(index, &ctx).await {
            Ok(reg) => {
                attempt = 0;
                if serve(index, reg, &ctx).await {
                    return LinkExit::Drained;
                }
            }
            Err(LinkError::Rejected {
                code: RejectCode::TunnelArchived,
                message,
            }) => {
                tracing::error!(connIndex = index, %message, "Tunnel is archived: the edge refuses this tunnel for good; stopping the connector");
                return LinkExit::Archived;
            }
            Err(
                e @ LinkError::Rejected {
                    code: RejectCode::TokenRejected,
                    ..
                },
            ) => {
                ctx.metrics.connect_failures.inc(&[e.label()]);
                tracing::error!(connIndex = index, error = %e, "Tunnel token rejected by the edge: check TUNNEL_TOKEN / --token-file (a rotated token keeps failing until the new one is supplied); retrying with backoff");
            }
            Err(e) => {
                ctx.metrics.connect_failures.inc(&[e.label()]);
                tracing::warn!(connIndex = index, error = %e, "connection to the edge failed; retrying with backoff");
            }
        }
        let delay = backoff.delay(attempt, unit_random());
        attempt = attempt.saturating_add(1);
        tracing::debug!(connIndex = index, ?delay, "waiting before reconnecting");
        if wait(&ctx, delay).await {
            return LinkExit::Drained;
        }
    }
}

/// Sleeps for `delay`, cut short by a changed token file; true when draining.
async fn wait(ctx: &LinkContext, delay: std::time::Duration) -> bool {
    tokio::select! {
        _ = ctx.drain.cancelled() => true,
        _ = tokio::time::sleep(delay) => false,
        _ = ctx.token_changed.notified() => false,
    }
}

async fn connect(index: u8, ctx: &LinkContext) -> Result<Registered, LinkError> {
    let token = ctx.config.token.load()?;
    let trust = EdgeTrust::choose(token.edge_ca_pin, ctx.config.edge_ca_file.as_deref())?;
    let tls_config = trust.client_config()?;
    let timeout = ctx.config.handshake_timeout;
    let hello = Hello {
        versions: ProtocolVersion::SUPPORTED.to_vec(),
        tunnel_id: token.tunnel_id.clone(),
        secret: token.secret.clone(),
        conn_index: index,
        instance_id: ctx.instance,
        software_version: ctx.config.software_version.clone(),
    };
    let mut hs = ClientHandshake::new(&hello, Instant::now(), timeout)
        .map_err(|e| LinkError::Protocol(e.into()))?;
    let deadline = tokio::time::Instant::from_std(hs.deadline());
    tokio::time::timeout_at(deadline, handshake(&token, tls_config, &mut hs))
        .await
        .map_err(|_| LinkError::Timeout)?
}

async fn handshake(
    token: &TunnelToken,
    tls_config: Arc<rustls::ClientConfig>,
    hs: &mut ClientHandshake,
) -> Result<Registered, LinkError> {
    let edge = token.edge.to_string();
    let tcp = TcpStream::connect((token.edge.host(), token.edge.port()))
        .await
        .map_err(|error| LinkError::Connect {
            edge: edge.clone(),
            error,
        })?;
    let _ = tcp.set_nodelay(true);
    let peer = tcp.peer_addr().ok();
    let name = ServerName::try_from(token.edge.host().to_owned()).map_err(|e| LinkError::Tls {
        edge: edge.clone(),
        error: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    let mut tls = TlsConnector::from(tls_config)
        .connect(name, tcp)
        .await
        .map_err(|error| LinkError::Tls {
            edge: edge.clone(),
            error,
        })?;
    if tls.get_ref().1.alpn_protocol() != Some(mcp_tunnel_proto::ALPN) {
        return Err(LinkError::Alpn(edge));
    }
    if let Some(bytes) = hs.poll_transmit() {
        tls.write_all(&bytes).await.map_err(LinkError::Io)?;
        tls.flush().await.map_err(LinkError::Io)?;
    }
    loop {
        // Read exactly what the handshake needs: the HTTP/2 preface that follows
        // must stay in the stream for hyper.
        let mut buf = vec![0u8; hs.bytes_needed()];
        tls.read_exact(&mut buf).await.map_err(LinkError::Io)?;
        match hs.feed(&buf, Instant::now())?.event {
            None => continue,
            Some(ClientEvent::Accepted(accept)) => {
                return Ok(Registered {
                    tls,
                    accept,
                    edge,
                    peer,
                });
            }
            Some(ClientEvent::Rejected(r)) => {
                return Err(LinkError::Rejected {
                    code: r.code,
                    message: r.message,
                });
            }
        }
    }
}

/// Serves streams until the connection ends; returns true when it ended by draining.
async fn serve(index: u8, reg: Registered, ctx: &LinkContext) -> bool {
    let Registered {
        tls,
        accept,
        edge,
        peer,
    } = reg;
    tracing::info!(
        connIndex = index,
        connection = %accept.connection_id,
        edge = %edge,
        ip = %peer.map(|p| p.ip().to_string()).unwrap_or_default(),
        location = %accept.edge_id,
        protocol = %accept.version,
        "Registered tunnel connection"
    );
    ctx.metrics.ha_connections.inc();
    ctx.metrics.registrations.inc(&[&index.to_string()]);
    let service = ctx.service.clone();
    let metrics = ctx.metrics.clone();
    let svc = service_fn(move |req| {
        let service = service.clone();
        let metrics = metrics.clone();
        async move {
            metrics.active_streams.inc();
            let resp = service.handle(req).await;
            metrics.active_streams.dec();
            Ok::<_, std::convert::Infallible>(resp)
        }
    });
    let cfg = &ctx.config;
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .keep_alive_interval(cfg.keepalive_interval)
        .keep_alive_timeout(cfg.keepalive_timeout)
        .initial_stream_window_size(cfg.stream_window)
        .initial_connection_window_size(cfg.connection_window)
        .max_frame_size(MAX_FRAME);
    let conn = builder.serve_connection(TokioIo::new(tls), svc);
    tokio::pin!(conn);
    let drained = tokio::select! {
        r = conn.as_mut() => {
            match r {
                Ok(()) => tracing::warn!(connIndex = index, "edge closed the connection; reconnecting"),
                Err(e) => tracing::warn!(connIndex = index, error = %e, "connection to the edge lost; reconnecting"),
            }
            false
        }
        _ = ctx.drain.cancelled() => {
            // GOAWAY: the edge stops opening streams here; in-flight ones may finish.
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(cfg.grace_period, conn.as_mut()).await {
                Ok(_) => tracing::info!(connIndex = index, "connection drained"),
                Err(_) => tracing::warn!(connIndex = index, "grace period elapsed with streams in flight; closing"),
            }
            true
        }
    };
    ctx.metrics.ha_connections.dec();
    tracing::info!(connIndex = index, connection = %accept.connection_id, "Unregistered tunnel connection");
    drained
}
