//! The connector's metrics and the `--metrics` server (`/ready`, `/metrics`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use mcp_tunnel_net::metrics::{CounterVec, Gauge};
use mcp_tunnel_proto::InstanceId;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct ConnectorMetrics {
    pub ha_connections: Gauge,
    pub registrations: CounterVec,
    pub connect_failures: CounterVec,
    pub requests: CounterVec,
    pub active_streams: Gauge,
    pub active_sessions: Gauge,
    pub bytes: CounterVec,
}

impl Default for ConnectorMetrics {
    fn default() -> Self {
        Self {
            ha_connections: Gauge::new(
                "mcpt_connector_ha_connections",
                "Connections to the edge currently registered.",
            ),
            registrations: CounterVec::new(
                "mcpt_connector_registrations_total",
                "Successful registrations, by connection index.",
                &["conn_index"],
            ),
            connect_failures: CounterVec::new(
                "mcpt_connector_connect_failures_total",
                "Failed connection attempts, by reason.",
                &["reason"],
            ),
            requests: CounterVec::new(
                "mcpt_connector_requests_total",
                "Streams handled, by outcome.",
                &["outcome"],
            ),
            active_streams: Gauge::new(
                "mcpt_connector_active_streams",
                "Streams from the edge in progress.",
            ),
            active_sessions: Gauge::new(
                "mcpt_connector_active_sessions",
                "Upgraded sessions being piped to the origin.",
            ),
            bytes: CounterVec::new(
                "mcpt_connector_relayed_bytes_total",
                "Bytes piped on upgraded sessions.",
                &["direction"],
            ),
        }
    }
}

impl ConnectorMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.ha_connections.render(&mut out);
        self.registrations.render(&mut out);
        self.connect_failures.render(&mut out);
        self.requests.render(&mut out);
        self.active_streams.render(&mut out);
        self.active_sessions.render(&mut out);
        self.bytes.render(&mut out);
        out
    }

    /// The `/ready` answer: 200 once at least one connection is registered.
    pub fn ready(&self, instance: InstanceId) -> (StatusCode, String) {
        let n = self.ha_connections.get();
        let status = if n > 0 {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        let body = serde_json::json!({
            "status": status.as_u16(),
            "readyConnections": n,
            "activeStreams": self.active_streams.get(),
            "connectorId": instance.to_string(),
        });
        (status, body.to_string())
    }
}

pub(crate) async fn serve(
    listener: TcpListener,
    metrics: Arc<ConnectorMetrics>,
    instance: InstanceId,
    stop: CancellationToken,
) {
    loop {
        let tcp = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let metrics = metrics.clone();
                async move { Ok::<_, Infallible>(respond(&req, &metrics, instance)) }
            });
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10))
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}

fn respond(
    req: &Request<Incoming>,
    metrics: &ConnectorMetrics,
    instance: InstanceId,
) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&Method::GET, "/ready") => {
            let (status, body) = metrics.ready(instance);
            (status, "application/json", body)
        }
        (&Method::GET, "/metrics") => (
            StatusCode::OK,
            "text/plain; version=0.0.4",
            metrics.render(),
        ),
        _ => (StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}
