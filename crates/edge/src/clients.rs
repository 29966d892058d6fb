//! The client listener: HTTPS/WSS from MCP clients. Each request is authenticated with a
//! client access key, matched to a tunnel by Host, checked against the tunnel's state and
//! then relayed over one of the tunnel's connector connections.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mcp_tunnel_net::host::tunnel_host;
use mcp_tunnel_net::proxy_protocol::client_behind;
use mcp_tunnel_pki::crypto::Secret;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::refusal::Refusal;
use crate::registry::TunnelBody;
use crate::server::Shared;
use crate::store::{TunnelRecord, USE_TUNNELS_SCOPE, tunnel_for_host};

pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    acceptor: Option<TlsAcceptor>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "client listener accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = shared.pending_clients.clone().try_acquire_owned() else {
            shared.metrics.client_requests.inc(&["pending_full"]);
            continue;
        };
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let mut tcp = tcp;
            let timeout = shared.config.client_header_timeout;
            // One deadline for a PROXY header (from a balancer) and the TLS handshake.
            let deadline = tokio::time::Instant::now() + timeout;
            let balancers = &shared.config.proxy_protocol_clients;
            let peer = match client_behind(&mut tcp, peer, balancers, timeout).await {
                Ok(client) => client,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "client connection from a balancer refused");
                    shared.metrics.client_requests.inc(&["proxy_header_error"]);
                    return;
                }
            };
            match acceptor {
                None => {
                    drop(permit);
                    serve(tcp, peer, shared).await
                }
                Some(acceptor) => {
                    let tls = tokio::time::timeout_at(deadline, acceptor.accept(tcp)).await;
                    // The cap covers TLS handshakes; hyper's header timeout bounds the rest.
                    drop(permit);
                    match tls {
                        Ok(Ok(tls)) => serve(tls, peer, shared).await,
                        Ok(Err(_)) | Err(_) => shared.metrics.client_requests.inc(&["tls_error"]),
                    }
                }
            }
        });
    }
}

async fn serve<I>(io: I, peer: SocketAddr, shared: Arc<Shared>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc_shared = shared.clone();
    let svc = service_fn(move |req| {
        let shared = svc_shared.clone();
        async move { Ok::<_, Infallible>(handle(req, peer, &shared).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(shared.config.client_header_timeout)
        .max_buf_size(64 * 1024);
    let conn = builder
        .serve_connection(TokioIo::new(io), svc)
        .with_upgrades();
    tokio::select! {
        _ = conn => {}
        _ = shared.shutdown.cancelled() => {}
    }
}

async fn handle(
    req: Request<Incoming>,
    peer: SocketAddr,
    shared: &Arc<Shared>,
) -> Response<TunnelBody> {
    match admit(&req, peer, shared).await {
        Ok((tunnel, host)) => match crate::relay::forward(req, &host, &tunnel, shared).await {
            Ok(resp) => resp,
            Err(refusal) => refuse(refusal, shared),
        },
        Err(refusal) => refuse(refusal, shared),
    }
}

fn refuse(refusal: Refusal, shared: &Shared) -> Response<TunnelBody> {
    shared.metrics.client_requests.inc(&[refusal.label()]);
    refusal.into_response()
}

/// Authentication first, so that a caller without a valid key learns nothing about
/// which tunnels exist; then the tunnel and its state.
async fn admit(
    req: &Request<Incoming>,
    peer: SocketAddr,
    shared: &Shared,
) -> Result<(TunnelRecord, String), Refusal> {
    let now = Instant::now();
    // The client: the peer, or the one a trusted reverse proxy names.
    let source = shared
        .config
        .trusted_proxies
        .client_of(peer.ip(), req.headers());
    if shared.client_failures.is_blocked(source, now) {
        return Err(Refusal::RateLimited);
    }
    let key = bearer(req).ok_or(Refusal::MissingKey)?;
    let identity = shared
        .store
        .verify_client_key(&key)
        .await
        .map_err(|e| store_down(&e))?;
    let Some(identity) = identity else {
        shared.client_failures.record_failure(source, now);
        return Err(Refusal::BadKey);
    };
    if !identity.has_scope(USE_TUNNELS_SCOPE) {
        return Err(Refusal::MissingScope);
    }
    let host = request_host(req).ok_or(Refusal::BadHost)?;
    let tunnel = tunnel_for_host(shared.store.as_ref(), &host)
        .await
        .map_err(|e| store_down(&e))?
        .ok_or(Refusal::UnknownTunnel)?;
    if tunnel.workspace_id != identity.workspace_id {
        return Err(Refusal::WrongWorkspace);
    }
    if tunnel.archived {
        return Err(Refusal::Archived);
    }
    if !tunnel.has_active_ca {
        return Err(Refusal::NeedsCertificate);
    }
    Ok((tunnel, host))
}

fn store_down(e: &crate::store::StoreError) -> Refusal {
    tracing::error!(error = %e, "client admission failed");
    Refusal::StoreUnavailable
}

fn bearer(req: &Request<Incoming>) -> Option<Secret> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    let key = key.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !key.is_empty() && key.len() <= 512)
        .then(|| Secret::new(key))
}

/// The tunnel host of a request, from `Host` or an absolute-form URI ([`tunnel_host`]:
/// lowercase, no port, a DNS name; IP literals and anything else refused).
pub(crate) fn request_host<B>(req: &Request<B>) -> Option<String> {
    match req.headers().get(header::HOST) {
        Some(h) => tunnel_host(h.to_str().ok()?),
        None => tunnel_host(req.uri().authority()?.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(host: &str) -> Request<()> {
        Request::builder().header("host", host).body(()).unwrap()
    }

    #[test]
    fn hosts() {
        assert_eq!(
            request_host(&req("AB.Example.com:443")).as_deref(),
            Some("ab.example.com")
        );
        assert_eq!(
            request_host(&req("ab.example.com.")).as_deref(),
            Some("ab.example.com")
        );
        assert_eq!(request_host(&req("[::1]:443")), None);
        assert_eq!(request_host(&req("a b")), None);
        assert_eq!(request_host(&req("10.0.0.1")), None);
        assert_eq!(request_host(&req("a..example.com")), None);
        let absolute = Request::get("https://AB.example.com:8443/mcp")
            .body(())
            .unwrap();
        assert_eq!(request_host(&absolute).as_deref(), Some("ab.example.com"));
    }
}
