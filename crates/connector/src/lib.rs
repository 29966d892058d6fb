//! The connector: keeps `--ha-connections` outbound connections to the edge and replays
//! every stream the edge opens as an HTTP request (or WebSocket upgrade) to the origin.
//! It opens no listening port for the tunnel; only the optional `--metrics` server.

pub mod backoff;
pub mod config;
mod link;
pub mod metrics;
pub mod origin;
mod pipe;
pub mod tls;
pub mod token_source;

use std::net::SocketAddr;
use std::sync::Arc;

use mcp_tunnel_proto::InstanceId;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub use config::{ConfigError, ConnectorConfig, RunArgs, TOKEN_ENV};
pub use link::{LinkError, LinkExit};
pub use metrics::ConnectorMetrics;
pub use origin::{Origin, OriginError};
pub use token_source::{TokenLoadError, TokenSource};

use crate::link::LinkContext;
use crate::origin::OriginService;
use crate::token_source::watch;

/// How the connector stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Drained after [`ConnectorHandle::drain`] (SIGTERM).
    Drained,
    /// The edge said the tunnel is archived: the caller should exit non-zero.
    Archived,
}

/// Why the connector could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--metrics: cannot listen on {addr}: {error}")]
    Metrics {
        addr: SocketAddr,
        error: std::io::Error,
    },
}

/// A running connector.
#[derive(Debug)]
pub struct ConnectorHandle {
    drain: CancellationToken,
    stop: CancellationToken,
    links: JoinSet<LinkExit>,
    metrics: Arc<ConnectorMetrics>,
    instance: InstanceId,
    metrics_addr: Option<SocketAddr>,
}

/// Starts the links (and the metrics server); returns at once.
pub async fn start(config: ConnectorConfig) -> Result<ConnectorHandle, StartError> {
    let config = Arc::new(config);
    let metrics = Arc::new(ConnectorMetrics::default());
    let instance = InstanceId::random();
    let drain = CancellationToken::new();
    let stop = CancellationToken::new();
    let metrics_addr = match config.metrics {
        None => None,
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|error| StartError::Metrics { addr, error })?;
            let bound = listener.local_addr().ok();
            tokio::spawn(metrics::serve(
                listener,
                metrics.clone(),
                instance,
                stop.clone(),
            ));
            bound
        }
    };
    let token_changed = Arc::new(Notify::new());
    if let TokenSource::File(path) = &config.token {
        let (path, changed, every) = (
            path.clone(),
            token_changed.clone(),
            config.token_poll_interval,
        );
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = watch(path, changed, every) => {}
            }
        });
    }
    if config.origin.is_none() {
        tracing::warn!(
            "{}: every request will get 503",
            mcp_tunnel_proto::stream::NO_INGRESS_MESSAGE
        );
    }
    let ctx = Arc::new(LinkContext {
        service: OriginService::new(config.origin.clone(), metrics.clone()),
        config: config.clone(),
        instance,
        metrics: metrics.clone(),
        token_changed,
        drain: drain.clone(),
    });
    let mut links = JoinSet::new();
    for index in 0..config.ha_connections {
        links.spawn(link::run(index, ctx.clone()));
    }
    tracing::info!(connectorId = %instance, ha_connections = config.ha_connections, "connector started");
    Ok(ConnectorHandle {
        drain,
        stop,
        links,
        metrics,
        instance,
        metrics_addr,
    })
}

/// Starts a drain from elsewhere (a signal handler) while the handle is being awaited.
#[derive(Debug, Clone)]
pub struct Drainer(CancellationToken);

impl Drainer {
    pub fn drain(&self) {
        self.0.cancel();
    }
}

impl ConnectorHandle {
    pub fn drainer(&self) -> Drainer {
        Drainer(self.drain.clone())
    }

    /// Starts a graceful drain: GOAWAY on every connection, in-flight streams get the
    /// grace period, no reconnects.
    pub fn drain(&self) {
        self.drain.cancel();
    }

    /// Waits until every link has stopped. If one reports the tunnel archived, the rest
    /// are stopped at once.
    pub async fn wait(mut self) -> Outcome {
        let mut outcome = Outcome::Drained;
        while let Some(r) = self.links.join_next().await {
            if let Ok(LinkExit::Archived) = r {
                outcome = Outcome::Archived;
                self.links.abort_all();
            }
        }
        self.stop.cancel();
        outcome
    }

    pub fn metrics(&self) -> &Arc<ConnectorMetrics> {
        &self.metrics
    }

    pub fn instance_id(&self) -> InstanceId {
        self.instance
    }

    /// Where the metrics server listens, once bound.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops everything immediately, like a crash: connections drop without GOAWAY.
    pub fn abort(mut self) {
        self.stop.cancel();
        self.links.abort_all();
    }
}
