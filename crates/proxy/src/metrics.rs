//! The proxy's Prometheus metrics (served on `admin_addr` at `/metrics`).

use mcp_tunnel_net::metrics::{CounterVec, Gauge};

#[derive(Debug)]
pub struct ProxyMetrics {
    pub requests: CounterVec,
    pub upstream_errors: CounterVec,
    pub ip_rejections: CounterVec,
    pub handshake_failures: CounterVec,
    pub active_sessions: Gauge,
    pub cert_not_after: Gauge,
    pub cert_reloads: CounterVec,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self {
            requests: CounterVec::new(
                "mcp_proxy_requests_total",
                "Requests answered, by route and status.",
                &["route", "status"],
            ),
            upstream_errors: CounterVec::new(
                "mcp_proxy_upstream_errors_total",
                "Requests that failed at or before the upstream, by kind.",
                &["route", "kind"],
            ),
            ip_rejections: CounterVec::new(
                "mcp_proxy_ip_validation_rejections_total",
                "Upstream connections refused by IP validation.",
                &[],
            ),
            handshake_failures: CounterVec::new(
                "mcp_proxy_tls_handshake_failures_total",
                "Inner TLS handshakes that failed or timed out.",
                &[],
            ),
            active_sessions: Gauge::new(
                "mcp_proxy_active_sessions",
                "Inner TLS sessions currently open.",
            ),
            cert_not_after: Gauge::new(
                "mcp_proxy_certificate_not_after_seconds",
                "notAfter of the served certificate, Unix seconds.",
            ),
            cert_reloads: CounterVec::new(
                "mcp_proxy_certificate_reloads_total",
                "Certificate reload attempts, by result.",
                &["result"],
            ),
        }
    }
}

impl ProxyMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        self.requests.render(&mut out);
        self.upstream_errors.render(&mut out);
        self.ip_rejections.render(&mut out);
        self.handshake_failures.render(&mut out);
        self.active_sessions.render(&mut out);
        self.cert_not_after.render(&mut out);
        self.cert_reloads.render(&mut out);
        out
    }
}
