//! Replays each tunnel stream as an HTTP request to the origin (`--url`), including
//! WebSocket upgrades (see `mcp_tunnel_proto::stream`).

use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use mcp_tunnel_proto::stream::{
    CONNECTOR_ERROR_HEADER, NO_INGRESS_MESSAGE, UPGRADE_HEADER, UPGRADED_HEADER, is_hop_by_hop,
};
use tokio::net::TcpStream;

use crate::metrics::ConnectorMetrics;
use crate::pipe::{BoxError, TunnelBody, pipe, reader_body};

/// Why `--url` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OriginError {
    #[error("--url {0:?}: expected http://host:port")]
    NotUrl(String),
    #[error(
        "--url {0:?}: only http:// origins are supported (the payload is already end-to-end TLS)"
    )]
    Scheme(String),
    #[error("--url {0:?}: a path is not supported; give only scheme, host and port")]
    Path(String),
}

/// The origin every stream is replayed against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// `host:port`, port filled in (80) when omitted.
    authority: String,
}

impl Origin {
    pub fn parse(url: &str) -> Result<Self, OriginError> {
        let uri: Uri = url.parse().map_err(|_| OriginError::NotUrl(url.into()))?;
        if uri.scheme_str() != Some("http") {
            return Err(if uri.scheme().is_none() {
                OriginError::NotUrl(url.into())
            } else {
                OriginError::Scheme(url.into())
            });
        }
        let auth = uri
            .authority()
            .ok_or_else(|| OriginError::NotUrl(url.into()))?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(OriginError::Path(url.into()));
        }
        let port = auth.port_u16().unwrap_or(80);
        Ok(Self {
            authority: format!("{}:{port}", auth.host()),
        })
    }

    pub fn authority(&self) -> &str {
        &self.authority
    }
}

/// The per-stream handler shared by every connection.
#[derive(Debug, Clone)]
pub struct OriginService {
    origin: Option<Arc<Origin>>,
    client: Client<HttpConnector, TunnelBody>,
    metrics: Arc<ConnectorMetrics>,
}

impl OriginService {
    pub fn new(origin: Option<Origin>, metrics: Arc<ConnectorMetrics>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            origin: origin.map(Arc::new),
            client: Client::builder(TokioExecutor::new()).build(connector),
            metrics,
        }
    }

    pub async fn handle(&self, req: Request<Incoming>) -> Response<TunnelBody> {
        let Some(origin) = &self.origin else {
            tracing::warn!("{NO_INGRESS_MESSAGE}: answering 503");
            self.metrics.requests.inc(&["no_ingress"]);
            return local_answer(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_ingress",
                NO_INGRESS_MESSAGE,
            );
        };
        let upgrade = req.headers().get(UPGRADE_HEADER).cloned();
        let result = match upgrade {
            Some(token) => self.upgrade(origin, req, token).await,
            None => self.plain(origin, req).await,
        };
        match result {
            Ok(resp) => resp,
            Err(e) => {
                tracing::warn!(origin = %origin.authority, error = %e, "origin request failed");
                self.metrics.requests.inc(&["origin_unreachable"]);
                local_answer(
                    StatusCode::BAD_GATEWAY,
                    "origin_unreachable",
                    "origin unreachable",
                )
            }
        }
    }

    async fn plain(
        &self,
        origin: &Origin,
        req: Request<Incoming>,
    ) -> Result<Response<TunnelBody>, BoxError> {
        let (parts, body) = req.into_parts();
        let out = origin_request(&parts, origin, body.map_err(BoxError::from).boxed(), true)?;
        let resp = self.client.request(out).await?;
        self.metrics.requests.inc(&["forwarded"]);
        let (parts, body) = resp.into_parts();
        let mut back = Response::new(body.map_err(BoxError::from).boxed());
        *back.status_mut() = parts.status;
        copy_end_to_end(&parts.headers, back.headers_mut());
        Ok(back)
    }

    async fn upgrade(
        &self,
        origin: &Origin,
        req: Request<Incoming>,
        token: HeaderValue,
    ) -> Result<Response<TunnelBody>, BoxError> {
        let (parts, tunnel_body) = req.into_parts();
        let mut out = origin_request(&parts, origin, Empty::<Bytes>::new(), false)?;
        out.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        out.headers_mut().insert(header::UPGRADE, token);
        let tcp = TcpStream::connect(&origin.authority).await?;
        let _ = tcp.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn.with_upgrades());
        let mut resp = sender.send_request(out).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            self.metrics.requests.inc(&["upgrade_declined"]);
            let (parts, body) = resp.into_parts();
            let mut back = Response::new(body.map_err(BoxError::from).boxed());
            *back.status_mut() = parts.status;
            copy_end_to_end(&parts.headers, back.headers_mut());
            return Ok(back);
        }
        let upgraded = hyper::upgrade::on(&mut resp).await?;
        let (attach, body) = reader_body();
        let mut back = Response::new(body.boxed());
        copy_end_to_end(resp.headers(), back.headers_mut());
        let switched_to = resp
            .headers()
            .get(header::UPGRADE)
            .cloned()
            .unwrap_or_else(|| HeaderValue::from_static("websocket"));
        back.headers_mut()
            .insert(HeaderName::from_static(UPGRADED_HEADER), switched_to);
        self.metrics.requests.inc(&["upgraded"]);
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            metrics.active_sessions.inc();
            let (i, o) = pipe(TokioIo::new(upgraded), tunnel_body, attach).await;
            metrics.bytes.add(&["edge_to_origin"], i);
            metrics.bytes.add(&["origin_to_edge"], o);
            metrics.active_sessions.dec();
        });
        Ok(back)
    }
}

fn path(uri: &Uri) -> &str {
    uri.path_and_query().map_or("/", |p| p.as_str())
}

/// The origin request: method, origin-form path, end-to-end headers, and the client's
/// Host (the route host), which the proxy needs for routing and MCP servers for checks.
fn origin_request<B>(
    parts: &http::request::Parts,
    origin: &Origin,
    body: B,
    absolute: bool,
) -> Result<Request<B>, BoxError> {
    let mut out = Request::new(body);
    *out.method_mut() = parts.method.clone();
    *out.uri_mut() = if absolute {
        format!("http://{}{}", origin.authority, path(&parts.uri)).parse()?
    } else {
        path(&parts.uri).parse()?
    };
    copy_end_to_end(&parts.headers, out.headers_mut());
    let host = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str())?,
        None => HeaderValue::from_str(&origin.authority)?,
    };
    out.headers_mut().insert(header::HOST, host);
    Ok(out)
}

fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !is_hop_by_hop(name.as_str()) {
            to.append(name.clone(), value.clone());
        }
    }
}

/// An answer the connector makes itself, marked so the edge and client can tell.
fn local_answer(status: StatusCode, reason: &'static str, message: &str) -> Response<TunnelBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|n| match n {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        HeaderName::from_static(CONNECTOR_ERROR_HEADER),
        HeaderValue::from_static(reason),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        assert_eq!(
            Origin::parse("http://localhost:8080").unwrap().authority(),
            "localhost:8080"
        );
        assert_eq!(
            Origin::parse("http://127.0.0.1/").unwrap().authority(),
            "127.0.0.1:80"
        );
        assert!(matches!(
            Origin::parse("https://x:1"),
            Err(OriginError::Scheme(_))
        ));
        assert!(matches!(
            Origin::parse("localhost:8080"),
            Err(OriginError::NotUrl(_))
        ));
        assert!(matches!(
            Origin::parse("http://x:1/api"),
            Err(OriginError::Path(_))
        ));
    }
}
