//! The HTTP API: the Tunnels API (SPEC §7.1), the token exchange (§7.2), and our admin
//! and audit extensions, served over HTTPS (the official SDKs require it) or plain HTTP
//! behind a TLS-terminating balancer.

mod admin;
pub mod auth;
mod conns;
pub mod console;
mod deadline;
mod error;
mod extract;
mod oauth;
mod org;
mod tunnels;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse as _;
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jsonwebtoken::jwk::JwkSet;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tower_service::Service as _;

pub use auth::{API_VERSION, FEDERATION_BETA, SourceAddr, TUNNELS_BETA};
pub use conns::ConnLimits;
pub use error::ApiError;
pub use mcp_tunnel_net::forwarded::TrustedProxies;

use crate::http_client::HttpClient;
use crate::store::ControlStore;

/// Largest request body (a CA PEM is at most 8 KB).
const MAX_BODY_BYTES: usize = 64 * 1024;

/// Deadline for a client's TLS handshake, for its first byte after it, and for each
/// HTTP/1.1 request head (without them a silent or dribbling client holds its connection
/// for ever).
const CLIENT_DEADLINE: Duration = Duration::from_secs(10);

/// Deadline for a whole request, body included, and its answer: a client that announces
/// a body and stops sending it is answered 400 and its connection closed. Every handler
/// is a few database operations or one call to an identity provider (with its own
/// shorter timeout), far below this.
const REQUEST_DEADLINE: Duration = Duration::from_secs(30);

/// Shared by every request.
#[derive(Debug)]
pub struct ApiState {
    pub store: ControlStore,
    http: HttpClient,
    limiter: auth::FailureLimiter,
    jwks_cache: Mutex<HashMap<String, (Instant, JwkSet)>>,
}

impl ApiState {
    /// `http` fetches issuers' JWKS; `failed_auth_per_minute` bounds failed
    /// authentications per source address before it gets 429.
    pub fn new(store: ControlStore, http: HttpClient, failed_auth_per_minute: u32) -> Arc<Self> {
        Arc::new(Self {
            store,
            http,
            limiter: auth::FailureLimiter::new(failed_auth_per_minute, Duration::from_secs(60)),
            jwks_cache: Mutex::default(),
        })
    }
}

/// Every API route, without the console.
pub fn router(state: Arc<ApiState>) -> Router {
    let store = state.store.clone();
    finish(api_routes().with_state(state), store)
}

/// Every API route and the console at `/console`.
pub fn router_with_console(state: Arc<ApiState>, console: console::ConsoleConfig) -> Router {
    let console = console::routes(state.clone(), console);
    let store = state.store.clone();
    finish(api_routes().with_state(state).merge(console), store)
}

fn api_routes() -> Router<Arc<ApiState>> {
    use admin as a;
    use tunnels as t;
    Router::new()
        .route("/v1/tunnels", post(t::create).get(t::list))
        .route("/v1/tunnels/{id}", get(t::get))
        .route("/v1/tunnels/{id}/archive", post(t::archive))
        .route("/v1/tunnels/{id}/reveal_token", post(t::reveal_token))
        .route("/v1/tunnels/{id}/rotate_token", post(t::rotate_token))
        .route(
            "/v1/tunnels/{id}/certificates",
            post(t::add_certificate).get(t::list_certificates),
        )
        .route(
            "/v1/tunnels/{id}/certificates/{cid}",
            get(t::get_certificate),
        )
        .route(
            "/v1/tunnels/{id}/certificates/{cid}/archive",
            post(t::archive_certificate),
        )
        .route("/v1/oauth/token", post(oauth::token))
        .route(
            "/v1/admin/workspaces",
            get(a::list_workspaces).post(a::create_workspace),
        )
        .route(
            "/v1/admin/service_accounts",
            get(a::list_service_accounts).post(a::create_service_account),
        )
        .route(
            "/v1/admin/service_accounts/{id}/archive",
            post(a::archive_service_account),
        )
        .route(
            "/v1/admin/federation/issuers",
            get(a::list_issuers).post(a::create_issuer),
        )
        .route(
            "/v1/admin/federation/issuers/{id}/archive",
            post(a::archive_issuer),
        )
        .route(
            "/v1/admin/federation/rules",
            get(a::list_rules).post(a::create_rule),
        )
        .route(
            "/v1/admin/federation/rules/{id}/archive",
            post(a::archive_rule),
        )
        .route(
            "/v1/admin/api_keys",
            get(a::list_api_keys).post(a::create_api_key),
        )
        .route("/v1/admin/api_keys/{id}/revoke", post(a::revoke_api_key))
        .route(
            "/v1/admin/client_keys",
            get(a::list_client_keys).post(a::create_client_key),
        )
        .route(
            "/v1/admin/client_keys/{id}/revoke",
            post(a::revoke_client_key),
        )
        .route(
            "/v1/admin/organization",
            get(org::get_organization).post(org::update_organization),
        )
        .route("/v1/admin/organization/sso", post(org::set_sso))
        .route(
            "/v1/admin/users",
            get(org::list_users).post(org::create_user),
        )
        .route("/v1/admin/users/{id}", post(org::update_user))
        .route("/v1/audit_events", get(a::list_audit))
        .route("/v1/audit_events/export", get(a::export_audit))
        .route("/v1/audit_events/verify", get(a::verify_audit))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
}

/// How long readiness waits for the database's answer.
const READY_TIMEOUT: Duration = Duration::from_secs(3);

/// `/readyz`: 200 when the database answers a query, 503 when it does not or when the
/// process is shutting down (so a balancer stops sending it requests).
async fn ready(
    axum::extract::State(s): axum::extract::State<Arc<ApiState>>,
) -> axum::response::Response {
    use http::StatusCode;
    let unavailable = |why: &str| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    };
    if s.store.is_closing() {
        return unavailable("shutting down");
    }
    match tokio::time::timeout(READY_TIMEOUT, s.store.ping()).await {
        Ok(Ok(())) => (StatusCode::OK, "ready\n").into_response(),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness: the database did not answer");
            unavailable("database unavailable")
        }
        Err(_) => unavailable(&format!(
            "database did not answer within {}s",
            READY_TIMEOUT.as_secs()
        )),
    }
}

/// The fallbacks and layers every router gets.
fn finish(router: Router, store: ControlStore) -> Router {
    router
        .fallback(|req: axum::extract::Request| async move {
            let msg = format!("no endpoint {} {}", req.method(), req.uri().path());
            if is_console(&req) {
                return console::ConsoleError::NotFound(msg).into_response();
            }
            ApiError::NotFound(msg).into_response()
        })
        .method_not_allowed_fallback(|req: axum::extract::Request| async move {
            let msg = format!(
                "method {} is not allowed on {}",
                req.method(),
                req.uri().path()
            );
            if is_console(&req) {
                return (
                    http::StatusCode::METHOD_NOT_ALLOWED,
                    console::error_page("Method not allowed", &msg),
                )
                    .into_response();
            }
            ApiError::MethodNotAllowed(msg).into_response()
        })
        .layer(axum::middleware::from_fn(request_id))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(store, hold_store))
}

/// Holds the store open ([`ControlStore::hold`]) from the start of a request until its
/// response body has been handed to the connection, so that shutdown lets requests in
/// flight finish instead of closing the database under them.
async fn hold_store(
    axum::extract::State(store): axum::extract::State<ControlStore>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use http_body_util::BodyExt as _;
    let token = store.hold();
    let resp = next.run(req).await;
    resp.map(move |body| {
        axum::body::Body::new(body.map_frame(move |frame| {
            let _held = &token;
            frame
        }))
    })
}

/// Console paths answer people: errors there are pages, not JSON.
fn is_console(req: &axum::extract::Request) -> bool {
    req.uri().path().starts_with("/console")
}

/// Every response carries a `request-id`, which the SDKs attach to their errors.
async fn request_id(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let id = crate::ids::new_id("req");
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let mut resp = next.run(req).await;
    tracing::debug!(request_id = %id, %method, %path, status = resp.status().as_u16(), "api request");
    if let Ok(v) = http::HeaderValue::from_str(&id) {
        resp.headers_mut().insert("request-id", v);
    }
    resp
}

/// Serves `router` on `listener` until `stop`, over TLS when `tls` is given (ALPN h2 and
/// http/1.1). Each request carries its client's address as a [`SourceAddr`] extension.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    stop: CancellationToken,
) {
    serve_with(listener, tls, router, stop, ServeOptions::default()).await;
}

/// How [`serve_with`] treats connections.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// Limits on open connections.
    pub limits: ConnLimits,
    /// Reverse proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`):
    /// requests from them are attributed to that client (failed-authentication limit,
    /// audit `source`), and they have no per-source connection share.
    pub trusted_proxies: TrustedProxies,
}

/// [`serve`] with its limits on open connections and its trusted proxies.
pub async fn serve_with(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    stop: CancellationToken,
    opts: ServeOptions,
) {
    let trusted = Arc::new(opts.trusted_proxies);
    let conns = conns::ConnCounter::new(opts.limits, trusted.clone());
    let acceptor = tls.map(|c| {
        let mut c = (*c).clone();
        c.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(c))
    });
    loop {
        let total = tokio::select! {
            _ = stop.cancelled() => return,
            slot = conns.ready() => slot,
        };
        let (tcp, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(slot) = conns.admit(total, peer.ip()) else {
            tracing::debug!(%peer, "api connection refused: too many open from this address");
            continue;
        };
        let router = router.clone();
        let acceptor = acceptor.clone();
        let stop = stop.clone();
        let trusted = trusted.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match acceptor {
                Some(a) => {
                    let tls = match tokio::time::timeout(CLIENT_DEADLINE, a.accept(tcp)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "api TLS handshake failed");
                            return;
                        }
                        Err(_) => return,
                    };
                    let io = deadline::FirstByte::new(tls, CLIENT_DEADLINE);
                    serve_conn(TokioIo::new(io), peer, trusted, router, stop).await;
                }
                None => {
                    let io = deadline::FirstByte::new(tcp, CLIENT_DEADLINE);
                    serve_conn(TokioIo::new(io), peer, trusted, router, stop).await
                }
            }
        });
    }
}

/// The client of a request from `peer`: the peer itself, or, when the peer is a trusted
/// proxy, the address its `X-Forwarded-For` names (port 0: the proxy does not say it).
fn request_source(
    peer: SocketAddr,
    trusted: &TrustedProxies,
    headers: &http::HeaderMap,
) -> SocketAddr {
    if trusted.is_empty() {
        return peer;
    }
    let client = trusted.client_of(peer.ip(), headers);
    if client == peer.ip().to_canonical() {
        peer
    } else {
        SocketAddr::new(client, 0)
    }
}

async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    trusted: Arc<TrustedProxies>,
    router: Router,
    stop: CancellationToken,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service =
        hyper::service::service_fn(move |mut req: http::Request<hyper::body::Incoming>| {
            let source = request_source(peer, &trusted, req.headers());
            req.extensions_mut().insert(SourceAddr(source));
            let mut router = router.clone();
            async move {
                let call = router.call(req.map(axum::body::Body::new));
                match tokio::time::timeout(REQUEST_DEADLINE, call).await {
                    Ok(answer) => answer,
                    Err(_) => {
                        tracing::debug!(%peer, "api request not completed within its deadline");
                        let mut resp = ApiError::InvalidRequest(format!(
                            "request not completed within {}s",
                            REQUEST_DEADLINE.as_secs()
                        ))
                        .into_response();
                        // What is left of the body will not be read: end the connection.
                        resp.headers_mut().insert(
                            http::header::CONNECTION,
                            http::HeaderValue::from_static("close"),
                        );
                        Ok(resp)
                    }
                }
            }
        });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(CLIENT_DEADLINE);
    let conn = builder.serve_connection(io, service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(%peer, error = %e, "api connection ended with an error");
            }
        }
        _ = stop.cancelled() => {
            // Requests in flight finish (within the store's drain limit); idle
            // keep-alive connections close now.
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(crate::store::DRAIN_LIMIT, conn).await;
        }
    }
}
