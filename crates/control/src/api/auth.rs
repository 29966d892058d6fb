//! Who is calling: API version and beta headers, the bearer credential (`Authorization:
//! Bearer …` or the SDKs' `x-api-key`), the workspace the request acts in, and the
//! per-source limit on failed authentications.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use http::HeaderMap;
use http::request::Parts;

use super::ApiState;
use super::error::ApiError;
use crate::ids::CredentialKind;
use crate::scopes;
use crate::store::Actor;
use crate::store::Credential;

/// The beta every Tunnels API request must announce.
pub const TUNNELS_BETA: &str = "mcp-tunnels-2026-06-22";
/// The beta of the workload-identity token exchange.
pub const FEDERATION_BETA: &str = "oidc-federation-2026-04-01";
/// The API version the SDKs send.
pub const API_VERSION: &str = "2023-06-01";
/// Header selecting a workspace for organization-wide credentials.
pub const WORKSPACE_HEADER: &str = "anthropic-workspace-id";

/// The peer address of the connection, set by the server loop.
#[derive(Debug, Clone, Copy)]
pub struct SourceAddr(pub SocketAddr);

/// Whether `name` is among the comma-separated values of every `anthropic-beta` header.
pub fn has_beta(headers: &HeaderMap, name: &str) -> bool {
    headers
        .get_all("anthropic-beta")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|b| b.trim() == name)
}

pub fn require_beta(headers: &HeaderMap, name: &str) -> Result<(), ApiError> {
    if has_beta(headers, name) {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "this endpoint requires the header anthropic-beta: {name}"
        )))
    }
}

/// The versions the SDKs send are dates; any from the first (2023-06-01) on is accepted,
/// since the Tunnels API has not changed with them.
fn require_version(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(v) = headers.get("anthropic-version") else {
        return Err(ApiError::InvalidRequest(format!(
            "anthropic-version: header is required (e.g. {API_VERSION})"
        )));
    };
    let v = v.to_str().unwrap_or("");
    let is_date = v.len() == 10
        && v.bytes().enumerate().all(|(i, b)| match i {
            4 | 7 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    if is_date && v >= API_VERSION {
        Ok(())
    } else {
        Err(ApiError::InvalidRequest(format!(
            "anthropic-version: unsupported version {v:?} (a date from {API_VERSION} on)"
        )))
    }
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    {
        let (scheme, token) = v.split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then_some(token.trim());
    }
    headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Failed authentications per source address in a sliding minute.
#[derive(Debug)]
pub struct FailureLimiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl FailureLimiter {
    pub fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            seen: Mutex::default(),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<IpAddr, (Instant, u32)>) -> T) -> T {
        f(&mut self.seen.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        let now = Instant::now();
        let blocked = self.with(|m| {
            m.get(&ip).is_some_and(|(start, n)| {
                now.duration_since(*start) < self.window && *n >= self.max
            })
        });
        if blocked {
            return Err(ApiError::RateLimit(
                "too many failed authentications from this address; retry later".into(),
            ));
        }
        Ok(())
    }

    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        self.with(|m| {
            if m.len() > 100_000 {
                m.retain(|_, (start, _)| now.duration_since(*start) < self.window);
            }
            let e = m.entry(ip).or_insert((now, 0));
            if now.duration_since(e.0) >= self.window {
                *e = (now, 0);
            }
            e.1 += 1;
        });
    }
}

/// An authenticated caller acting in one workspace.
#[derive(Debug, Clone)]
pub struct Principal {
    pub credential: Credential,
    pub workspace_id: String,
    pub source: String,
}

impl Principal {
    pub fn actor(&self) -> Actor {
        let c = &self.credential;
        let name = match c.kind {
            CredentialKind::AccessToken => c.actor.clone(),
            _ => format!("{}:{}", c.kind.as_str(), c.id),
        };
        Actor {
            org_id: c.org_id.clone(),
            workspace_id: self.workspace_id.clone(),
            name,
            source: self.source.clone(),
        }
    }

    pub fn org_id(&self) -> &str {
        &self.credential.org_id
    }

    pub fn require(&self, any_of: &[&str]) -> Result<(), ApiError> {
        if any_of.iter().any(|s| self.credential.has_scope(s)) {
            Ok(())
        } else {
            Err(ApiError::Permission(format!(
                "this credential lacks the scope required here ({})",
                any_of.join(" or ")
            )))
        }
    }
}

async fn authenticate(parts: &Parts, state: &ApiState) -> Result<Principal, ApiError> {
    let source = parts
        .extensions
        .get::<SourceAddr>()
        .map(|s| s.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    state.limiter.check(source.ip())?;
    let fail = |msg: &str| {
        state.limiter.failed(source.ip());
        ApiError::Authentication(msg.into())
    };
    let token = bearer(&parts.headers).ok_or_else(|| {
        fail("missing credentials: send Authorization: Bearer <key> or x-api-key")
    })?;
    let cred = state
        .store
        .resolve_credential(token)
        .await?
        .ok_or_else(|| fail("invalid, expired or revoked credential"))?;
    if cred.kind == CredentialKind::ClientKey {
        return Err(ApiError::Permission(
            "client access keys open tunnel sessions at the edge; they cannot call the API".into(),
        ));
    }
    let requested = parts
        .headers
        .get(WORKSPACE_HEADER)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let workspace_id = match (&cred.workspace_id, requested) {
        (Some(own), None) => own.clone(),
        (Some(own), Some(req)) if *own == req => own.clone(),
        (Some(own), Some(req)) => {
            return Err(ApiError::Permission(format!(
                "this credential belongs to workspace {own}, not {req}"
            )));
        }
        (None, None) => state.store.default_workspace(&cred.org_id).await?,
        (None, Some(req)) => {
            if !state.store.workspace_in_org(&cred.org_id, &req).await? {
                return Err(ApiError::Permission(format!(
                    "workspace {req} is not a workspace of this organization"
                )));
            }
            req
        }
    };
    Ok(Principal {
        credential: cred,
        workspace_id,
        source: source.to_string(),
    })
}

/// A caller of the Tunnels API: version and `mcp-tunnels` beta checked, then credentials.
#[derive(Debug)]
pub struct TunnelsCaller(pub Principal);

impl FromRequestParts<Arc<ApiState>> for TunnelsCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        require_beta(&parts.headers, TUNNELS_BETA)?;
        require_version(&parts.headers)?;
        let p = authenticate(parts, state).await?;
        p.require(&[scopes::MANAGE_TUNNELS, scopes::READ_TUNNELS])?;
        Ok(Self(p))
    }
}

/// A caller of the admin endpoints (our extension): `org:admin` required.
#[derive(Debug)]
pub struct AdminCaller(pub Principal);

impl FromRequestParts<Arc<ApiState>> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, ApiError> {
        require_version(&parts.headers)?;
        let p = authenticate(parts, state).await?;
        p.require(&[scopes::ORG_ADMIN])?;
        Ok(Self(p))
    }
}
