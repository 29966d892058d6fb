//! Cookies, the signed-in user, and the checks every POST passes: same origin, CSRF
//! token, role.

use std::sync::Arc;

use aws_lc_rs::hmac;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::request::Parts;
use http::{HeaderMap, StatusCode, header};
use mcp_tunnel_pki::crypto::{self, Secret};
use serde::de::DeserializeOwned;

use super::Console;
use super::html;
use crate::api::auth::SourceAddr;
use crate::store::{Actor, ControlError, LoginMethod, User};

/// Cookie names: the session, the pre-sign-in CSRF value, and the pending OIDC state.
pub const SESSION: &str = "mcpt_session";
pub const PRE: &str = "mcpt_pre";
pub const OIDC: &str = "mcpt_oidc";

/// Why a console request failed; rendered as a page (or a redirect to sign in).
#[derive(Debug)]
pub enum ConsoleError {
    /// Not signed in (or the session ended): go to the sign-in page.
    SignIn,
    BadRequest(String),
    Forbidden(String),
    NotFound(String),
    Internal(String),
}

impl From<ControlError> for ConsoleError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::NotFound { .. } => Self::NotFound(e.to_string()),
            ControlError::Invalid(m) | ControlError::Limit(m) => Self::BadRequest(m),
            ControlError::Certificate(rule) => Self::BadRequest(rule.to_string()),
            ControlError::Forbidden(m) => Self::Forbidden(m),
            ControlError::Db(_) | ControlError::Seal(_) | ControlError::Corrupt(_) => {
                Self::Internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let (status, title, msg) = match self {
            Self::SignIn => return Redirect::to("/console/login").into_response(),
            Self::BadRequest(m) => (StatusCode::BAD_REQUEST, "Request refused", m),
            Self::Forbidden(m) => (StatusCode::FORBIDDEN, "Not allowed", m),
            Self::NotFound(m) => (StatusCode::NOT_FOUND, "Not found", m),
            Self::Internal(cause) => {
                tracing::error!(error = %cause, "console request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "internal server error".to_owned(),
                )
            }
        };
        (status, html::error_page(title, &msg)).into_response()
    }
}

pub type Page = Result<Response, ConsoleError>;

/// The value of cookie `name` (with or without the `__Host-` prefix, as configured).
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_owned())
}

impl Console {
    /// The cookie name as sent: `__Host-` prefixed over HTTPS.
    pub(super) fn cookie_name(&self, base: &str) -> String {
        if self.cfg.https {
            format!("__Host-{base}")
        } else {
            base.to_owned()
        }
    }

    /// A `Set-Cookie` value; `max_age` `Some(0)` deletes it, `None` lasts the browser
    /// session (the server enforces the session's own timeouts).
    pub(super) fn set_cookie(&self, base: &str, value: &str, max_age: Option<u64>) -> String {
        let mut c = format!(
            "{}={value}; Path=/; HttpOnly; SameSite=Lax",
            self.cookie_name(base)
        );
        if self.cfg.https {
            c.push_str("; Secure");
        }
        if let Some(s) = max_age {
            c.push_str(&format!("; Max-Age={s}"));
        }
        c
    }

    pub(super) fn read_cookie(&self, headers: &HeaderMap, base: &str) -> Option<String> {
        cookie(headers, &self.cookie_name(base))
    }

    /// The console's origin: configured, or this request's scheme and Host.
    pub(super) fn origin(&self, parts: &Parts) -> String {
        if let Some(u) = &self.cfg.public_url {
            return u.trim_end_matches('/').to_owned();
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(str::to_owned)
            .or_else(|| parts.uri.authority().map(|a| a.to_string()))
            .unwrap_or_else(|| "localhost".into());
        let scheme = if self.cfg.https { "https" } else { "http" };
        format!("{scheme}://{host}")
    }

    /// Refuses a cross-site POST: `Origin`, when sent, must be ours; without it,
    /// `Sec-Fetch-Site` must not say cross-site. (Non-browser clients send neither and
    /// still need the CSRF token.)
    pub(super) fn check_origin(&self, parts: &Parts) -> Result<(), ConsoleError> {
        let refused = || {
            ConsoleError::Forbidden(
                "cross-origin request refused: submit the form from the console itself".into(),
            )
        };
        if let Some(o) = parts.headers.get(header::ORIGIN) {
            let ours = self.origin(parts);
            if o.to_str().ok() != Some(ours.as_str()) {
                return Err(refused());
            }
            return Ok(());
        }
        match parts
            .headers
            .get("sec-fetch-site")
            .and_then(|v| v.to_str().ok())
        {
            None | Some("same-origin") | Some("none") => Ok(()),
            Some(_) => Err(refused()),
        }
    }
}

/// The synchronizer token of a session: HMAC-SHA256 keyed by the session id, so it is
/// bound to the session without being stored.
pub fn csrf_token(session_id: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, session_id.as_bytes());
    URL_SAFE_NO_PAD.encode(hmac::sign(&key, b"mcp-tunnel console csrf v1").as_ref())
}

/// The signed-in user of a request.
#[derive(Debug, Clone)]
pub struct Me {
    pub user: User,
    pub method: LoginMethod,
    pub session_id: Secret,
    pub csrf: String,
    pub source: String,
    pub workspace_id: String,
}

impl Me {
    pub fn can_manage(&self) -> bool {
        self.user.role.can_manage()
    }

    /// The audit actor of this user's changes.
    pub fn actor(&self) -> Actor {
        Actor {
            org_id: self.user.org_id.clone(),
            workspace_id: self.workspace_id.clone(),
            name: self.user.actor_name(),
            source: self.source.clone(),
        }
    }

    /// Checks a submitted CSRF token against the session's.
    pub fn check_csrf(&self, submitted: &str) -> Result<(), ConsoleError> {
        if crypto::ct_eq(submitted.as_bytes(), self.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(
                "the form's CSRF token is missing or does not match your session: reload the page and try again".into(),
            ))
        }
    }

    pub fn require_manager(&self) -> Result<(), ConsoleError> {
        if self.can_manage() {
            Ok(())
        } else {
            Err(ConsoleError::Forbidden(format!(
                "your role ({}) can view but not change anything; ask an owner or admin",
                self.user.role.as_str()
            )))
        }
    }
}

impl FromRequestParts<Arc<Console>> for Me {
    type Rejection = ConsoleError;

    async fn from_request_parts(parts: &mut Parts, c: &Arc<Console>) -> Result<Self, ConsoleError> {
        let id = c
            .read_cookie(&parts.headers, SESSION)
            .ok_or(ConsoleError::SignIn)?;
        let session = c
            .store()
            .session(c.org(), &id, c.cfg.limits)
            .await?
            .ok_or(ConsoleError::SignIn)?;
        if parts.method != http::Method::GET && parts.method != http::Method::HEAD {
            c.check_origin(parts)?;
        }
        Ok(Me {
            csrf: csrf_token(&id),
            workspace_id: c.store().default_workspace(c.org()).await?,
            user: session.user,
            method: session.method,
            session_id: Secret::new(id),
            source: source(&parts.extensions),
        })
    }
}

/// A form that carries the CSRF token.
pub trait CsrfForm {
    fn csrf(&self) -> &str;
}

/// A change requested by an owner or admin: session, origin, CSRF token and role all
/// checked, then the urlencoded form `T`.
#[derive(Debug)]
pub struct Act<T>(pub Me, pub T);

impl<T> FromRequest<Arc<Console>> for Act<T>
where
    T: DeserializeOwned + CsrfForm + Send,
{
    type Rejection = ConsoleError;

    async fn from_request(req: Request, c: &Arc<Console>) -> Result<Self, ConsoleError> {
        let (mut parts, body) = req.into_parts();
        let me = Me::from_request_parts(&mut parts, c).await?;
        me.require_manager()?;
        let req = Request::from_parts(parts, body);
        let axum::Form(form) = axum::Form::<T>::from_request(req, c)
            .await
            .map_err(|e| ConsoleError::BadRequest(format!("invalid form: {}", e.body_text())))?;
        me.check_csrf(form.csrf())?;
        Ok(Self(me, form))
    }
}

/// A form of nothing but the CSRF token.
#[derive(Debug, serde::Deserialize)]
pub struct CsrfOnly {
    #[serde(default)]
    pub csrf: String,
}

impl CsrfForm for CsrfOnly {
    fn csrf(&self) -> &str {
        &self.csrf
    }
}

/// The peer address of a request, for audit events.
pub fn source(extensions: &http::Extensions) -> String {
    extensions
        .get::<SourceAddr>()
        .map(|s| s.0.to_string())
        .unwrap_or_else(|| "unknown".into())
}
