//! The web console at `/console` (SPEC §7.3): server-rendered pages over the same store
//! functions as the API, so every change is audited with the signed-in user as actor.
//!
//! Security model, in the order a request meets it:
//! - every response: a strict Content-Security-Policy (scripts and styles from
//!   `/console/static` only), no framing, no caching, no cross-origin referrer (not
//!   `no-referrer`: Chromium then sends `Origin: null` on form posts);
//! - sign-in by OIDC SSO (authorization code + PKCE S256, state bound to the browser by a
//!   cookie, nonce checked in the ID token) or by password, unless the organization
//!   requires SSO;
//! - a session cookie (`__Host-` over HTTPS, HttpOnly, Secure, SameSite=Lax) naming a
//!   server-side session with idle and absolute timeouts;
//! - every POST: same-origin check, then a synchronizer CSRF token derived from the
//!   session, then the role (developers read only: their POSTs get 403);
//! - no state change on GET; tokens and keys appear once in a POST response, never in a
//!   URL or a log line.

mod html;
mod identity;
mod login;
mod oidc;
mod session;
mod settings;
mod tunnels;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderValue, header};

use super::ApiState;
use crate::store::SessionLimits;

pub use html::error_page;
pub use session::ConsoleError;

/// How the console is served.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// The organization the console signs people in to.
    pub org_id: String,
    /// The console's external origin (`https://console.example.com`), used for the OIDC
    /// redirect URI and the same-origin check. When absent, it is taken from each
    /// request's Host with the scheme the API is served with.
    pub public_url: Option<String>,
    /// Whether the API is reached over HTTPS (directly or through a TLS-terminating
    /// balancer): cookies are then `Secure` and `__Host-` prefixed.
    pub https: bool,
    pub limits: SessionLimits,
}

/// Shared by the console's handlers.
#[derive(Debug)]
pub struct Console {
    api: Arc<ApiState>,
    cfg: ConsoleConfig,
    oidc: Mutex<Option<oidc::Cached>>,
}

type C = axum::extract::State<Arc<Console>>;

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// The console's routes, ready to merge into the API router.
pub fn routes(api: Arc<ApiState>, cfg: ConsoleConfig) -> Router {
    let console = Arc::new(Console {
        api,
        cfg,
        oidc: Mutex::new(None),
    });
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/tunnels") }),
        )
        .route(
            "/console/",
            get(|| async { Redirect::to("/console/tunnels") }),
        )
        .route("/console/static/console.css", get(css))
        .route("/console/static/console.js", get(js))
        .route("/console/login", get(login::page).post(login::password))
        .route("/console/login/sso", post(login::sso_start))
        .route("/console/sso/callback", get(login::sso_callback))
        .route("/console/logout", post(login::logout))
        .route("/console/tunnels", get(tunnels::list).post(tunnels::create))
        .route("/console/tunnels/{id}", get(tunnels::detail))
        .route("/console/tunnels/{id}/reveal", post(tunnels::reveal))
        .route("/console/tunnels/{id}/rotate", post(tunnels::rotate))
        .route(
            "/console/tunnels/{id}/certificates",
            post(tunnels::add_certificate),
        )
        .route(
            "/console/tunnels/{id}/certificates/{cid}/revoke",
            post(tunnels::revoke_certificate),
        )
        .route(
            "/console/tunnels/{id}/archive",
            get(tunnels::archive_confirm).post(tunnels::archive),
        )
        .route("/console/federation", get(identity::federation))
        .route("/console/federation/issuers", post(identity::create_issuer))
        .route(
            "/console/federation/issuers/{id}/archive",
            post(identity::archive_issuer),
        )
        .route("/console/federation/rules", post(identity::create_rule))
        .route(
            "/console/federation/rules/{id}/archive",
            post(identity::archive_rule),
        )
        .route(
            "/console/service-accounts",
            get(identity::service_accounts).post(identity::create_service_account),
        )
        .route(
            "/console/service-accounts/{id}/archive",
            post(identity::archive_service_account),
        )
        .route("/console/keys", get(identity::keys))
        .route("/console/keys/{kind}", post(identity::create_key))
        .route(
            "/console/keys/{kind}/{id}/revoke",
            post(identity::revoke_key),
        )
        .route(
            "/console/users",
            get(settings::users).post(settings::create_user),
        )
        .route("/console/users/{id}", post(settings::update_user))
        .route("/console/settings", get(settings::settings))
        .route("/console/settings/sso", post(settings::set_sso))
        .route(
            "/console/settings/sso-required",
            post(settings::set_sso_required),
        )
        .route("/console/audit", get(settings::audit))
        .layer(axum::middleware::from_fn(security_headers))
        .with_state(console)
}

async fn css() -> Response {
    static_asset("text/css; charset=utf-8", CSS)
}

async fn js() -> Response {
    static_asset("text/javascript; charset=utf-8", JS)
}

fn static_asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// Headers every console response carries; a handler may set its own CSP first.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    let defaults: [(header::HeaderName, &str); 6] = [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
        (
            header::HeaderName::from_static("cross-origin-opener-policy"),
            "same-origin",
        ),
    ];
    for (name, value) in defaults {
        if !h.contains_key(&name) {
            h.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

impl Console {
    fn store(&self) -> &crate::store::ControlStore {
        &self.api.store
    }

    fn org(&self) -> &str {
        &self.cfg.org_id
    }
}

/// How often expired sessions are swept.
pub const PURGE_EVERY: Duration = Duration::from_secs(600);
