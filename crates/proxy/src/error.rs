//! Every way a proxied request can fail, and what each failure means to the caller, the
//! log and the metrics. One exhaustive `match` decides all three, so a new failure forces
//! a decision.

use std::net::IpAddr;

use http::StatusCode;

/// Who is to blame for a failure: it picks the log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The request was wrong or disallowed.
    Client,
    /// The upstream MCP server failed or is unreachable.
    Upstream,
}

/// A request that could not be forwarded.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("request has no Host")]
    MissingHost,
    #[error("TLS server name {sni:?} does not match Host {host:?}")]
    Misdirected { sni: String, host: String },
    #[error("no route for host")]
    NoRoute { host: String },
    #[error("IP validation failed: {ip} is not a private address")]
    IpRejected { route: String, ip: IpAddr },
    #[error("upstream connect failed: {reason}")]
    UpstreamConnect { route: String, reason: String },
    #[error("upstream connect timed out")]
    UpstreamTimeout { route: String },
    #[error("upstream TLS failed: {reason}")]
    UpstreamTls { route: String, reason: String },
    #[error("upstream request failed: {reason}")]
    UpstreamRequest { route: String, reason: String },
    #[error("request body larger than limits.max_body_bytes ({limit} bytes)")]
    BodyTooLarge { route: String, limit: usize },
    #[error("request body unreadable: {reason}")]
    BadBody { route: String, reason: String },
}

/// How a [`ProxyError`] is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Disposition {
    pub status: StatusCode,
    /// Body sent to the client: fixed text, never internal detail.
    pub body: &'static str,
    /// `kind` label on `mcp_proxy_upstream_errors_total`, when it counts there.
    pub upstream_error_kind: Option<&'static str>,
    pub blame: Blame,
}

impl ProxyError {
    pub fn disposition(&self) -> Disposition {
        use ProxyError::*;
        let (status, body, kind, blame) = match self {
            MissingHost => (
                StatusCode::BAD_REQUEST,
                "Missing Host header",
                None,
                Blame::Client,
            ),
            Misdirected { .. } => (
                StatusCode::MISDIRECTED_REQUEST,
                "TLS server name does not match Host",
                None,
                Blame::Client,
            ),
            NoRoute { .. } => (
                StatusCode::BAD_GATEWAY,
                "No route configured for host",
                None,
                Blame::Client,
            ),
            IpRejected { .. } => (
                StatusCode::BAD_GATEWAY,
                "Upstream address not allowed",
                Some("ip_rejected"),
                Blame::Client,
            ),
            UpstreamConnect { .. } => (
                StatusCode::BAD_GATEWAY,
                "Upstream unavailable",
                Some("connect"),
                Blame::Upstream,
            ),
            UpstreamTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "Upstream connect timed out",
                Some("timeout"),
                Blame::Upstream,
            ),
            UpstreamTls { .. } => (
                StatusCode::BAD_GATEWAY,
                "Upstream TLS failed",
                Some("tls"),
                Blame::Upstream,
            ),
            UpstreamRequest { .. } => (
                StatusCode::BAD_GATEWAY,
                "Upstream request failed",
                Some("request"),
                Blame::Upstream,
            ),
            BodyTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request body too large",
                None,
                Blame::Client,
            ),
            BadBody { .. } => (
                StatusCode::BAD_REQUEST,
                "Malformed request body",
                None,
                Blame::Client,
            ),
        };
        Disposition {
            status,
            body,
            upstream_error_kind: kind,
            blame,
        }
    }

    /// The route the failure belongs to, when routing got that far.
    pub fn route(&self) -> Option<&str> {
        use ProxyError::*;
        match self {
            MissingHost | Misdirected { .. } | NoRoute { .. } => None,
            IpRejected { route, .. }
            | UpstreamConnect { route, .. }
            | UpstreamTimeout { route }
            | UpstreamTls { route, .. }
            | UpstreamRequest { route, .. }
            | BodyTooLarge { route, .. }
            | BadBody { route, .. } => Some(route),
        }
    }

    /// Writes the one log line for this failure.
    pub fn log(&self) {
        match self {
            ProxyError::NoRoute { host } => tracing::warn!(host = %host, "no route for host"),
            ProxyError::IpRejected { route, ip } => {
                tracing::warn!(route = %route, ip = %ip, "{self}")
            }
            ProxyError::Misdirected { sni, host } => {
                tracing::warn!(sni = %sni, host = %host, "misdirected request")
            }
            other => match other.disposition().blame {
                Blame::Client => tracing::warn!(error = %other, "request refused"),
                Blame::Upstream => {
                    tracing::warn!(route = other.route().unwrap_or(""), error = %other, "upstream error")
                }
            },
        }
    }
}
