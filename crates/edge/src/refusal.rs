//! Every way the edge refuses a client request, mapped in one exhaustive `match` to the
//! HTTP status, the error body (the Tunnels API's error shape) and the metric label.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::registry::TunnelBody;

/// Why a client request was not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("missing client access key (Authorization: Bearer …)")]
    MissingKey,
    #[error("invalid client access key")]
    BadKey,
    #[error("too many failed authentications from this address; retry later")]
    RateLimited,
    #[error("client access key lacks the scope workspace:use_tunnels")]
    MissingScope,
    #[error("missing or invalid Host header")]
    BadHost,
    #[error("tunnel not found")]
    UnknownTunnel,
    #[error("client access key belongs to another workspace")]
    WrongWorkspace,
    /// 410 rather than 404: the domain is retired for ever, and saying so saves the
    /// operator a search (it reveals nothing to a client without a key of the workspace).
    #[error("tunnel is archived")]
    Archived,
    #[error("tunnel needs a certificate")]
    NeedsCertificate,
    #[error("no connector connected")]
    NoConnector,
    #[error("connector did not answer")]
    ConnectorFailed,
    #[error("tunnel store unavailable")]
    StoreUnavailable,
}

impl Refusal {
    /// (status, API error type, stable code used as metric label). The code lets scripts
    /// tell refusals apart without parsing messages.
    pub fn classify(self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::MissingKey => (S::UNAUTHORIZED, "authentication_error", "missing_key"),
            Self::BadKey => (S::UNAUTHORIZED, "authentication_error", "bad_key"),
            Self::RateLimited => (S::TOO_MANY_REQUESTS, "rate_limit_error", "rate_limited"),
            Self::MissingScope => (S::FORBIDDEN, "permission_error", "missing_scope"),
            Self::BadHost => (S::BAD_REQUEST, "invalid_request_error", "bad_host"),
            Self::UnknownTunnel => (S::NOT_FOUND, "not_found_error", "unknown_tunnel"),
            Self::WrongWorkspace => (S::FORBIDDEN, "permission_error", "wrong_workspace"),
            Self::Archived => (S::GONE, "not_found_error", "tunnel_archived"),
            Self::NeedsCertificate => (S::CONFLICT, "invalid_request_error", "needs_certificate"),
            Self::NoConnector => (S::SERVICE_UNAVAILABLE, "api_error", "no_connector"),
            Self::ConnectorFailed => (S::BAD_GATEWAY, "api_error", "connector_failed"),
            Self::StoreUnavailable => (S::SERVICE_UNAVAILABLE, "api_error", "store_unavailable"),
        }
    }

    pub fn label(self) -> &'static str {
        self.classify().2
    }

    pub fn into_response(self) -> Response<TunnelBody> {
        let (status, kind, code) = self.classify();
        let body = serde_json::json!({
            "type": "error",
            "error": { "type": kind, "code": code, "message": self.to_string() },
        });
        let mut resp = Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}
