//! The API's error envelope, `{"type":"error","error":{"type":…,"message":…}}`, and the
//! one place where every failure gets its status.

use axum::Json;
use axum::response::{IntoResponse, Response};
use http::StatusCode;

use crate::store::ControlError;

/// A failure as the caller sees it. Internal causes are logged, never returned.
#[derive(Debug)]
pub enum ApiError {
    InvalidRequest(String),
    Authentication(String),
    Permission(String),
    NotFound(String),
    MethodNotAllowed(String),
    RateLimit(String),
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str, &str) {
        match self {
            Self::InvalidRequest(m) => (StatusCode::BAD_REQUEST, "invalid_request_error", m),
            Self::Authentication(m) => (StatusCode::UNAUTHORIZED, "authentication_error", m),
            Self::Permission(m) => (StatusCode::FORBIDDEN, "permission_error", m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "not_found_error", m),
            Self::MethodNotAllowed(m) => {
                (StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", m)
            }
            Self::RateLimit(m) => (StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", m),
            Self::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "api_error",
                "internal server error",
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Self::Internal(cause) = &self {
            tracing::error!(error = %cause, "request failed");
        }
        let (status, kind, message) = self.parts();
        let body = serde_json::json!({
            "type": "error",
            "error": {"type": kind, "message": message},
        });
        (status, Json(body)).into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound { .. } => Self::NotFound(e.to_string()),
            ControlError::Invalid(m) | ControlError::Limit(m) => Self::InvalidRequest(m),
            ControlError::Certificate(rule) => Self::InvalidRequest(rule.to_string()),
            ControlError::Forbidden(m) => Self::Permission(m),
            ControlError::Db(_) | ControlError::Seal(_) | ControlError::Corrupt(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}
