//! Per-request phases, in order: route by host → (connect through the guard) → forward →
//! log. [`Forwarder::handle`] is the driver; each phase is a function below it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri, Version};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;

use mcp_tunnel_net::duration::format_duration;

use crate::config::{ProxyConfig, Route, normalize_host};
use crate::error::ProxyError;
use crate::guard::GuardError;
use crate::metrics::ProxyMetrics;
use crate::upstream::{ConnectError, UpstreamConnector, find_cause};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type ProxyBody = http_body_util::combinators::UnsyncBoxBody<Bytes, BoxError>;

/// Everything a request needs, shared by all sessions.
#[derive(Debug)]
pub struct Forwarder {
    config: Arc<ProxyConfig>,
    client: Client<UpstreamConnector, ProxyBody>,
    metrics: Arc<ProxyMetrics>,
}

/// Facts about the inner TLS session a request arrived on.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// SNI sent by the client, normalised.
    pub sni: Option<String>,
}

impl Forwarder {
    pub fn new(
        config: Arc<ProxyConfig>,
        client: Client<UpstreamConnector, ProxyBody>,
        metrics: Arc<ProxyMetrics>,
    ) -> Self {
        Self {
            config,
            client,
            metrics,
        }
    }

    /// Serves one inner request. Never fails: errors become responses.
    pub async fn handle(
        self: Arc<Self>,
        session: Arc<SessionInfo>,
        req: Request<Incoming>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let started = Instant::now();
        let method = req.method().clone();
        let outcome = match self.route(&session, &req) {
            Ok((route, host)) => {
                let route = route.clone();
                tracing::info!(route = %route.name, method = %method, "request started");
                match self.forward(&route, &host, req).await {
                    Ok(resp) => Ok((route, resp)),
                    Err(e) => Err((Some(route), e)),
                }
            }
            Err(e) => Err((None, e)),
        };
        Ok(match outcome {
            Ok((route, resp)) => self.respond(route, method, started, resp),
            Err((route, e)) => self.fail(route, method, started, e),
        })
    }

    /// Phase: route by host. The request's host (Host header, or `:authority` in HTTP/2),
    /// normalised, must agree with the SNI and name a configured route.
    fn route<'a>(
        &'a self,
        session: &SessionInfo,
        req: &Request<Incoming>,
    ) -> Result<(&'a Route, String), ProxyError> {
        let raw = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .ok_or(ProxyError::MissingHost)?;
        let host = normalize_host(raw).ok_or(ProxyError::MissingHost)?;
        if let Some(sni) = &session.sni
            && *sni != host
        {
            return Err(ProxyError::Misdirected {
                sni: sni.clone(),
                host,
            });
        }
        match self.config.routes.lookup(&host) {
            Some(route) => Ok((route, host)),
            None => Err(ProxyError::NoRoute { host }),
        }
    }

    /// Phase: forward. Rewrites the request for the upstream and sends it; the guarded
    /// connector checks the address of any new connection.
    async fn forward(
        &self,
        route: &Route,
        route_host: &str,
        req: Request<Incoming>,
    ) -> Result<Response<Incoming>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let uri: Uri =
            format!("{}{path}", route.upstream)
                .parse()
                .map_err(|e: http::uri::InvalidUri| ProxyError::UpstreamRequest {
                    route: route.name.clone(),
                    reason: e.to_string(),
                })?;
        parts.uri = uri;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        let host_value = if self.config.preserve_host {
            route_host.to_owned()
        } else {
            route.upstream.authority()
        };
        set(&mut parts.headers, header::HOST, &host_value);
        set(&mut parts.headers, X_FORWARDED_PROTO, "https");
        set(&mut parts.headers, X_FORWARDED_HOST, route_host);

        let limit = self.config.limits.max_body_bytes.map(|m| m as usize);
        // A declared length over the limit is refused before the upstream hears of it.
        if let Some(max) = limit
            && body.size_hint().lower() > max as u64
        {
            return Err(ProxyError::BodyTooLarge {
                route: route.name.clone(),
                limit: max,
            });
        }
        // Errors of the client's body are marked, so they are not blamed on the upstream.
        let body = match limit {
            Some(max) => Limited::new(body, max)
                .map_err(move |e| BoxError::from(RequestBodyError::new(e, Some(max))))
                .boxed_unsync(),
            None => body
                .map_err(|e| BoxError::from(RequestBodyError::new(e.into(), None)))
                .boxed_unsync(),
        };
        self.client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|e| classify(&route.name, &e))
    }

    fn respond(
        &self,
        route: Route,
        method: http::Method,
        started: Instant,
        resp: Response<Incoming>,
    ) -> Response<ProxyBody> {
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        parts.version = Version::default();
        let status = parts.status;
        self.metrics.requests.inc(&[&route.name, status.as_str()]);
        let logged = LoggedBody {
            inner: body,
            log: Some(Completion {
                route: route.name,
                method,
                status: status.as_u16(),
                started,
                bytes: 0,
            }),
        };
        Response::from_parts(parts, logged.boxed_unsync())
    }

    fn fail(
        &self,
        route: Option<Route>,
        method: http::Method,
        started: Instant,
        e: ProxyError,
    ) -> Response<ProxyBody> {
        e.log();
        let d = e.disposition();
        let route_label = route.as_ref().map(|r| r.name.as_str()).unwrap_or("");
        if matches!(e, ProxyError::IpRejected { .. }) {
            self.metrics.ip_rejections.inc(&[]);
        }
        if let Some(kind) = d.upstream_error_kind {
            self.metrics.upstream_errors.inc(&[route_label, kind]);
        }
        self.metrics.requests.inc(&[route_label, d.status.as_str()]);
        if let Some(route) = route {
            tracing::info!(
                route = %route.name,
                method = %method,
                status = d.status.as_u16(),
                duration = %format_duration(started.elapsed()),
                bytes = d.body.len(),
                "request completed"
            );
        }
        let mut resp = Response::new(
            Full::new(Bytes::from_static(d.body.as_bytes()))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *resp.status_mut() = d.status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        resp
    }
}

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

/// Hop-by-hop headers (RFC 9110 §7.6.1), besides any the `Connection` header names.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
];

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Runs twice per request: no allocation unless `Connection` names headers.
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The inner request's body failed while it was being sent upstream: the client's doing.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
struct RequestBodyError {
    source: BoxError,
    /// The limit it went over, when that is what happened.
    over_limit: Option<usize>,
}

impl RequestBodyError {
    /// `limit`: the `limits.max_body_bytes` the body was read under, if any.
    fn new(source: BoxError, limit: Option<usize>) -> Self {
        let over_limit = limit.filter(|_| source.is::<http_body_util::LengthLimitError>());
        Self { source, over_limit }
    }
}

/// Maps a client error to our failure, looking for the guard's verdict first.
fn classify(route: &str, e: &hyper_util::client::legacy::Error) -> ProxyError {
    let route = route.to_owned();
    if let Some(b) = find_cause::<RequestBodyError>(e) {
        return match b.over_limit {
            Some(limit) => ProxyError::BodyTooLarge { route, limit },
            None => ProxyError::BadBody {
                route,
                reason: b.source.to_string(),
            },
        };
    }
    match find_cause::<ConnectError>(e) {
        Some(ConnectError::Guard(GuardError::Rejected { ip, .. })) => {
            ProxyError::IpRejected { route, ip: *ip }
        }
        Some(ConnectError::Guard(GuardError::Timeout { .. })) => {
            ProxyError::UpstreamTimeout { route }
        }
        Some(c @ (ConnectError::Tls { .. } | ConnectError::NoTrust(_))) => {
            ProxyError::UpstreamTls {
                route,
                reason: c.to_string(),
            }
        }
        Some(other) => ProxyError::UpstreamConnect {
            route,
            reason: other.to_string(),
        },
        None => ProxyError::UpstreamRequest {
            route,
            reason: e.to_string(),
        },
    }
}

#[derive(Debug)]
struct Completion {
    route: String,
    method: http::Method,
    status: u16,
    started: Instant,
    bytes: u64,
}

impl Completion {
    fn log(&self, outcome: &'static str) {
        tracing::info!(
            route = %self.route,
            method = %self.method,
            status = self.status,
            duration = %format_duration(self.started.elapsed()),
            bytes = self.bytes,
            outcome,
            "request completed"
        );
    }
}

/// The upstream's response body, passed through frame by frame (so SSE events are not
/// held back), counting bytes and logging `request completed` when it ends or is dropped.
#[derive(Debug)]
struct LoggedBody {
    inner: Incoming,
    log: Option<Completion>,
}

impl Body for LoggedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(log)) = (frame.data_ref(), self.log.as_mut()) {
                    log.bytes += data.len() as u64;
                }
            }
            Poll::Ready(None) => {
                if let Some(log) = self.log.take() {
                    log.log("complete");
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(log) = self.log.take() {
                    log.log("upstream_error");
                }
            }
            Poll::Pending => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for LoggedBody {
    fn drop(&mut self) {
        if let Some(log) = self.log.take() {
            log.log("client_gone");
        }
    }
}

#[cfg(test)]
mod hop_tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Session-Hop"),
            ("connection", "x-second"),
            ("keep-alive", "timeout=5"),
            ("x-session-hop", "1"),
            ("x-second", "2"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic abc"),
            ("proxy-connection", "keep-alive"),
            ("authorization", "Bearer end-to-end"),
            ("mcp-session-id", "s1"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort();
        assert_eq!(left, ["authorization", "mcp-session-id"]);

        // Without `Connection`, end-to-end headers are untouched.
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
    }
}
