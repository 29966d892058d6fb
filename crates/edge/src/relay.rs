//! Relaying one client request over a connector connection (see `mcp_tunnel_proto::stream`
//! for how upgrades are carried on HTTP/2). Payload bytes are counted, never inspected.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use mcp_tunnel_proto::stream::{UPGRADE_HEADER, UPGRADED_HEADER, is_hop_by_hop};

use crate::refusal::Refusal;
use crate::registry::{BoxError, StreamGuard, TunnelBody};
use crate::server::Shared;
use crate::store::TunnelRecord;
use mcp_tunnel_net::pipe::{Attach, Direction, pipe, reader_body};

/// The client's upgraded connection, as the pipe sees it.
type ClientIo = TokioIo<hyper::upgrade::Upgraded>;

/// Connections tried for one session before giving up: enough to step over a connection
/// that is draining or just died, few enough to answer quickly.
const ATTEMPTS: usize = 3;
pub(crate) async fn forward(
    mut req: Request<Incoming>,
    host: &str,
    tunnel: &TunnelRecord,
    shared: &Shared,
) -> Result<Response<TunnelBody>, Refusal> {
    match upgrade_token(req.headers()) {
        Some(token) => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            let (parts, _) = req.into_parts();
            forward_upgrade(parts, token, on_upgrade, host, tunnel, shared).await
        }
        None => forward_plain(req, host, tunnel, shared).await,
    }
}

/// The `Upgrade` value when the request asks for one (`Connection: upgrade`).
fn upgrade_token(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers.get_all(header::CONNECTION).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
    });
    asks.then(|| headers.get(header::UPGRADE).cloned())
        .flatten()
}

/// End-to-end headers of the client request, without the edge's own credentials.
fn tunnel_request<B>(
    parts: &http::request::Parts,
    host: &str,
    body: B,
) -> Result<Request<B>, Refusal> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let uri: Uri = format!("https://{host}{path}")
        .parse()
        .map_err(|_| Refusal::BadHost)?;
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = uri;
    copy_end_to_end(&parts.headers, out.headers_mut());
    out.headers_mut().remove(header::AUTHORIZATION);
    Ok(out)
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let listed = connection_listed(from);
    for (name, value) in from {
        if !is_hop_by_hop(name.as_str()) && !listed.contains(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// Headers named in `Connection` are hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect()
}

async fn forward_upgrade(
    parts: http::request::Parts,
    token: HeaderValue,
    on_upgrade: OnUpgrade,
    host: &str,
    tunnel: &TunnelRecord,
    shared: &Shared,
) -> Result<Response<TunnelBody>, Refusal> {
    let mut tried = Vec::new();
    for _ in 0..ATTEMPTS {
        let guard = shared
            .registry
            .pick(&tunnel.id, &tried)
            .ok_or(Refusal::NoConnector)?;
        let (attach, body) = reader_body();
        let mut req = tunnel_request(&parts, host, body.boxed())?;
        req.headers_mut()
            .insert(HeaderName::from_static(UPGRADE_HEADER), token.clone());
        let conn = guard.connection().clone();
        match conn.sender().send_request(req).await {
            Ok(resp) => return Ok(finish_upgrade(resp, on_upgrade, attach, guard, shared)),
            Err(e) => {
                tracing::debug!(connection_id = %conn.id, error = %e, "stream open failed, trying another connection");
                conn.mark_draining();
                tried.push(conn.id);
            }
        }
    }
    Err(Refusal::ConnectorFailed)
}

fn finish_upgrade(
    resp: Response<Incoming>,
    on_upgrade: OnUpgrade,
    attach: Attach<ClientIo>,
    guard: StreamGuard,
    shared: &Shared,
) -> Response<TunnelBody> {
    let switched = resp.status() == StatusCode::OK && resp.headers().contains_key(UPGRADED_HEADER);
    if !switched {
        shared.metrics.client_requests.inc(&["upgrade_declined"]);
        return relay_response(resp);
    }
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(http_body_util::Empty::new().map_err(|n| match n {}).boxed());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    copy_end_to_end(&parts.headers, out.headers_mut());
    let upgrade = parts
        .headers
        .get(UPGRADED_HEADER)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("websocket"));
    out.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    out.headers_mut().insert(header::UPGRADE, upgrade);
    shared.metrics.client_requests.inc(&["upgraded"]);
    let metrics = shared.metrics.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        metrics.active_sessions.inc();
        let counted = metrics.clone();
        pipe(TokioIo::new(upgraded), body, attach, move |dir, n| {
            let label = match dir {
                Direction::FromTunnel => "connector_to_client",
                Direction::ToTunnel => "client_to_connector",
            };
            counted.bytes.add(&[label], n as u64);
        })
        .await;
        metrics.active_sessions.dec();
        drop(guard);
    });
    out
}

async fn forward_plain(
    req: Request<Incoming>,
    host: &str,
    tunnel: &TunnelRecord,
    shared: &Shared,
) -> Result<Response<TunnelBody>, Refusal> {
    let (parts, body) = req.into_parts();
    let mut req = tunnel_request(&parts, host, body.map_err(BoxError::from).boxed())?;
    let mut tried = Vec::new();
    for _ in 0..ATTEMPTS {
        let guard = shared
            .registry
            .pick(&tunnel.id, &tried)
            .ok_or(Refusal::NoConnector)?;
        let conn = guard.connection().clone();
        match conn.sender().try_send_request(req).await {
            Ok(resp) => {
                shared.metrics.client_requests.inc(&["forwarded"]);
                let (parts, body) = relay_response(resp).into_parts();
                // The stream stays counted on its connection until the body is done.
                let body = GuardedBody {
                    body,
                    _guard: guard,
                };
                return Ok(Response::from_parts(parts, body.boxed()));
            }
            Err(mut e) => {
                conn.mark_draining();
                tried.push(conn.id);
                // Only a request that never left can be retried elsewhere.
                match e.take_message() {
                    Some(r) => req = r,
                    None => return Err(Refusal::ConnectorFailed),
                }
            }
        }
    }
    Err(Refusal::ConnectorFailed)
}

/// A response body that keeps its connection's stream count until it is dropped.
struct GuardedBody {
    body: TunnelBody,
    _guard: StreamGuard,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }
}

fn relay_response(resp: Response<Incoming>) -> Response<TunnelBody> {
    let (parts, body) = resp.into_parts();
    let mut out = Response::new(body.map_err(BoxError::from).boxed());
    *out.status_mut() = parts.status;
    copy_end_to_end(&parts.headers, out.headers_mut());
    out
}
