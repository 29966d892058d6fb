//! The connector listener: TLS, the authenticated handshake with bounded pre-auth work,
//! then an HTTP/2 client connection over the connector's stream, kept in the registry
//! until it closes or is severed.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mcp_tunnel_net::metrics::GaugeGuard;
use mcp_tunnel_net::proxy_protocol::client_behind;
use mcp_tunnel_proto::{
    ConnectionId, HandshakeError, Hello, ProtocolVersion, RejectCode, ServerEvent, ServerHandshake,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::registry::{ConnectionMeta, LiveConnection};
use crate::server::Shared;
use crate::severable::Severable;
use crate::store::{ConnectionRecord, TokenCheck};

/// Why a connector connection ended before registration. Each maps to one metric label.
#[derive(Debug, thiserror::Error)]
enum PreAuthError {
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error("peer did not negotiate ALPN mcpt/1")]
    Alpn,
    #[error("handshake timed out")]
    Timeout,
    #[error("connection closed during handshake: {0}")]
    Io(std::io::Error),
    #[error("bad handshake: {0}")]
    Protocol(HandshakeError),
    #[error("rejected: {0}")]
    Rejected(RejectCode),
}

impl PreAuthError {
    fn label(&self) -> &'static str {
        match self {
            Self::Tls(_) => "tls_error",
            Self::Alpn => "bad_alpn",
            Self::Timeout => "timeout",
            Self::Io(_) => "closed",
            Self::Protocol(_) => "bad_handshake",
            Self::Rejected(code) => code.as_str(),
        }
    }

    /// Failures that count against the source's authentication budget.
    fn is_auth_failure(&self) -> bool {
        match self {
            Self::Rejected(code) => matches!(code, RejectCode::TokenRejected),
            Self::Protocol(_) | Self::Alpn | Self::Timeout => true,
            Self::Tls(_) | Self::Io(_) => false,
        }
    }
}

/// Pending handshakes per source, so one address cannot take the whole global cap.
#[derive(Debug, Default)]
pub(crate) struct PendingPerSource(Mutex<HashMap<IpAddr, usize>>);

struct PendingSlot<'a> {
    map: &'a PendingPerSource,
    ip: IpAddr,
}

impl PendingPerSource {
    fn try_take(&self, ip: IpAddr, max: usize) -> Option<PendingSlot<'_>> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(PendingSlot { map: self, ip })
    }
}

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.map.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// Largest HTTP/2 frame we accept: bigger than the 16 KiB default so bulk transfers
/// cost fewer frames (and TLS records) per byte.
const MAX_FRAME: u32 = 64 * 1024;

pub(crate) async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, acceptor: TlsAcceptor) {
    loop {
        let accepted = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => r,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "connector listener accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = shared.pending.clone().try_acquire_owned() else {
            shared.metrics.handshakes.inc(&["pending_full"]);
            continue;
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            // One deadline from here: PROXY header (from a balancer), TLS and handshake.
            let accepted = Instant::now();
            let mut tcp = tcp;
            let balancers = &shared.config.proxy_protocol_connectors;
            let timeout = shared.config.handshake_timeout;
            let peer = match client_behind(&mut tcp, peer, balancers, timeout).await {
                Ok(client) => client,
                Err(e) => {
                    shared.metrics.handshakes.inc(&["proxy_header_error"]);
                    tracing::info!(peer = %peer, reason = %e, "connector connection refused");
                    return;
                }
            };
            if shared
                .connector_failures
                .is_blocked(peer.ip(), Instant::now())
            {
                shared.metrics.handshakes.inc(&["rate_limited"]);
                return;
            }
            let Some(slot) = shared
                .pending_per_source
                .try_take(peer.ip(), shared.config.max_pending_handshakes_per_source)
            else {
                shared.metrics.handshakes.inc(&["pending_full"]);
                return;
            };
            let result = {
                let _pending = GaugeGuard::new(&shared.metrics.pending_handshakes);
                tokio::select! {
                    _ = shared.shutdown.cancelled() => return,
                    r = authenticate(tcp, peer, accepted, &shared, &acceptor) => r,
                }
            };
            drop(slot);
            drop(permit);
            match result {
                Ok((tls, conn)) => serve(tls, conn, shared).await,
                Err(e) => {
                    shared.metrics.handshakes.inc(&[e.label()]);
                    if e.is_auth_failure() {
                        shared
                            .connector_failures
                            .record_failure(peer.ip(), Instant::now());
                    }
                    tracing::info!(peer = %peer, reason = %e, "connector connection refused");
                }
            }
        });
    }
}

type Tls = TlsStream<TcpStream>;

/// TLS and the handshake, under one deadline that started when the connection was
/// `accepted` (so a PROXY header read before counts against it too).
async fn authenticate(
    tcp: TcpStream,
    peer: SocketAddr,
    accepted: Instant,
    shared: &Shared,
    acceptor: &TlsAcceptor,
) -> Result<(Tls, ConnectionMeta), PreAuthError> {
    let mut hs = ServerHandshake::new(
        ProtocolVersion::SUPPORTED,
        accepted,
        shared.config.handshake_timeout,
    );
    let deadline = tokio::time::Instant::from_std(hs.deadline());
    let _ = tcp.set_nodelay(true);
    let tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp))
        .await
        .map_err(|_| PreAuthError::Timeout)?
        .map_err(PreAuthError::Tls)?;
    if tls.get_ref().1.alpn_protocol() != Some(mcp_tunnel_proto::ALPN) {
        return Err(PreAuthError::Alpn);
    }
    tokio::time::timeout_at(deadline, handshake(tls, peer, &mut hs, shared))
        .await
        .map_err(|_| PreAuthError::Timeout)?
}

async fn handshake(
    mut tls: Tls,
    peer: SocketAddr,
    hs: &mut ServerHandshake,
    shared: &Shared,
) -> Result<(Tls, ConnectionMeta), PreAuthError> {
    let (hello, version) = loop {
        let mut buf = vec![0u8; hs.bytes_needed()];
        tls.read_exact(&mut buf).await.map_err(PreAuthError::Io)?;
        match hs.feed(&buf, Instant::now()) {
            Ok(p) => {
                if let Some(ServerEvent::Hello { hello, version }) = p.event {
                    break (hello, version);
                }
            }
            Err(e) => {
                if let Some(code) = e.reply() {
                    send_reject(&mut tls, hs, code, "no protocol version in common").await;
                }
                return Err(PreAuthError::Protocol(e));
            }
        }
    };
    let check = shared
        .store
        .verify_token(&hello.tunnel_id, &hello.secret)
        .await;
    let refusal = match &check {
        Ok(TokenCheck::Valid(_)) => None,
        Ok(TokenCheck::Rejected) => Some((
            RejectCode::TokenRejected,
            "tunnel token rejected: unknown tunnel or wrong secret (was the token rotated?)",
        )),
        Ok(TokenCheck::Archived) => Some((RejectCode::TunnelArchived, "tunnel is archived")),
        Err(e) => {
            tracing::error!(error = %e, "token check failed");
            Some((
                RejectCode::Internal,
                "edge could not check the token, retry later",
            ))
        }
    };
    if let Some((code, message)) = refusal {
        send_reject(&mut tls, hs, code, message).await;
        return Err(PreAuthError::Rejected(code));
    }
    // A reconnect of the same connector link replaces its old connection, so it does
    // not count against the cap.
    let tunnel_conns = shared
        .registry
        .connections(&hello.tunnel_id)
        .iter()
        .filter(|c| c.instance_id != hello.instance_id || c.record.conn_index != hello.conn_index)
        .count();
    if tunnel_conns >= shared.config.max_connections_per_tunnel {
        let code = RejectCode::TooManyConnections;
        send_reject(&mut tls, hs, code, "too many connections for this tunnel").await;
        return Err(PreAuthError::Rejected(code));
    }
    let id = ConnectionId::random();
    let accept = hs
        .accept(id, &shared.config.edge_id)
        .map_err(PreAuthError::Protocol)?;
    tls.write_all(&accept).await.map_err(PreAuthError::Io)?;
    tls.flush().await.map_err(PreAuthError::Io)?;
    Ok((tls, connection(id, peer, &hello, version, shared)))
}

fn connection(
    id: ConnectionId,
    peer: SocketAddr,
    hello: &Hello,
    version: ProtocolVersion,
    shared: &Shared,
) -> ConnectionMeta {
    let record = ConnectionRecord {
        tunnel_id: hello.tunnel_id.clone(),
        connection_id: id.to_string(),
        edge_id: shared.config.edge_id.clone(),
        conn_index: hello.conn_index,
        peer,
    };
    ConnectionMeta {
        id,
        record,
        instance_id: hello.instance_id,
        protocol: version,
        software_version: hello.software_version.clone(),
    }
}

async fn send_reject(tls: &mut Tls, hs: &mut ServerHandshake, code: RejectCode, message: &str) {
    if let Ok(bytes) = hs.reject(code, message) {
        let _ = tls.write_all(&bytes).await;
        let _ = tls.shutdown().await;
    }
}

/// Runs HTTP/2 (edge as client) until the connection closes or is severed.
async fn serve(tls: Tls, meta: ConnectionMeta, shared: Arc<Shared>) {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .keep_alive_interval(shared.config.keepalive_interval)
        .keep_alive_timeout(shared.config.keepalive_timeout)
        .keep_alive_while_idle(true)
        .initial_stream_window_size(shared.config.stream_window)
        .initial_connection_window_size(shared.config.connection_window)
        .max_concurrent_reset_streams(1024)
        .max_frame_size(MAX_FRAME);
    let sever = shared.shutdown.child_token();
    let io = Severable::new(tls, sever.clone());
    let (sender, conn) = match builder.handshake(TokioIo::new(io)).await {
        Ok(x) => x,
        Err(e) => {
            shared.metrics.handshakes.inc(&["h2_error"]);
            tracing::warn!(error = %e, "HTTP/2 setup with connector failed");
            return;
        }
    };
    let live = Arc::new(LiveConnection::new(meta, sender, sever));
    let record = live.record.clone();
    shared.registry.insert(live.clone());
    shared.metrics.handshakes.inc(&["accepted"]);
    shared.metrics.connector_connections.inc();
    if let Err(e) = shared.store.connection_registered(&record).await {
        tracing::warn!(error = %e, "could not record connection in the store");
    }
    tracing::info!(
        tunnel_id = %record.tunnel_id,
        connection_id = %live.id,
        conn_index = record.conn_index,
        peer = %record.peer,
        version = %live.software_version,
        protocol = %live.protocol,
        "connector connection registered"
    );
    let reason = tokio::select! {
        r = conn => match r {
            Ok(()) => "closed",
            Err(_) => "error",
        },
        _ = live.severed().cancelled() => "severed",
        _ = shared.shutdown.cancelled() => "shutdown",
    };
    shared.registry.remove(&record.tunnel_id, live.id);
    shared.metrics.connector_connections.dec();
    if reason == "severed" || reason == "shutdown" {
        shared.metrics.severed.inc(&[reason]);
    }
    if let Err(e) = shared.store.connection_unregistered(&record).await {
        tracing::warn!(error = %e, "could not remove connection from the store");
    }
    tracing::info!(
        tunnel_id = %record.tunnel_id,
        connection_id = %live.id,
        conn_index = record.conn_index,
        reason,
        "connector connection unregistered"
    );
}
