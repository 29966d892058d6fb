//! `POST /v1/oauth/token`: the RFC 7523 jwt-bearer exchange of workload-identity
//! federation (SPEC §7.2), as the official SDKs perform it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use http::HeaderMap;
use jsonwebtoken::jwk::JwkSet;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::{FEDERATION_BETA, SourceAddr, require_beta};
use super::error::ApiError;
use super::extract::Body;
use crate::ids::{self, CredentialKind};
use crate::jwt::{self, Expected};
use crate::store::{Actor, FederationIssuer, NewCredential};
use crate::time::now_ms;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// How long a fetched JWKS is reused before it is fetched again.
const JWKS_TTL: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Deserialize)]
pub struct TokenRequest {
    grant_type: Option<String>,
    assertion: Option<String>,
    federation_rule_id: Option<String>,
    organization_id: Option<String>,
    service_account_id: Option<String>,
    workspace_id: Option<String>,
}

fn required(v: Option<String>, name: &str) -> Result<String, ApiError> {
    v.filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::InvalidRequest(format!("{name}: field required")))
}

/// One answer for "no such rule", "rule archived" and "wrong organization", so that
/// rule ids cannot be probed.
fn no_rule() -> ApiError {
    ApiError::Authentication("federation rule not found or not active for this organization".into())
}

pub async fn token(
    State(s): State<Arc<ApiState>>,
    headers: HeaderMap,
    source: Option<axum::Extension<SourceAddr>>,
    Body(req): Body<TokenRequest>,
) -> Result<Json<Value>, ApiError> {
    require_beta(&headers, FEDERATION_BETA)?;
    let source = source
        .map(|s| s.0.0.to_string())
        .unwrap_or_else(|| "unknown".into());
    let ip = source
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    s.limiter.check(ip)?;
    let grant = required(req.grant_type, "grant_type")?;
    if grant != GRANT_TYPE {
        return Err(ApiError::InvalidRequest(format!(
            "grant_type: unsupported grant type (expected {GRANT_TYPE})"
        )));
    }
    let assertion = required(req.assertion, "assertion")?;
    let rule_id = required(req.federation_rule_id, "federation_rule_id")?;
    let org_id = required(req.organization_id, "organization_id")?;
    let result = exchange(
        &s,
        &org_id,
        &rule_id,
        &assertion,
        req.service_account_id,
        req.workspace_id,
        &source,
    )
    .await;
    if let Err(ApiError::Authentication(reason)) = &result {
        s.limiter.failed(ip);
        tracing::info!(rule = %rule_id, %source, reason = %reason, "federation token exchange refused");
    }
    result.map(Json)
}

async fn exchange(
    s: &ApiState,
    org_id: &str,
    rule_id: &str,
    assertion: &str,
    service_account_id: Option<String>,
    workspace_id: Option<String>,
    source: &str,
) -> Result<Value, ApiError> {
    if !ids::is_uuid(org_id) || !s.store.organization_exists(org_id).await? {
        return Err(no_rule());
    }
    let rule = s
        .store
        .get_rule(org_id, rule_id)
        .await
        .map_err(|_| no_rule())?;
    if rule.archived_at.is_some() {
        return Err(no_rule());
    }
    if let Some(sa) = &service_account_id
        && *sa != rule.service_account_id
    {
        return Err(ApiError::Authentication(
            "service_account_id does not match the federation rule".into(),
        ));
    }
    if let Some(ws) = workspace_id.as_deref().filter(|w| *w != "default")
        && ws != rule.workspace_id
    {
        return Err(ApiError::Permission(format!(
            "the federation rule does not grant access to workspace {ws}"
        )));
    }
    if workspace_id.as_deref() == Some("default")
        && s.store.default_workspace(org_id).await? != rule.workspace_id
    {
        return Err(ApiError::Permission(
            "the federation rule does not grant access to the default workspace".into(),
        ));
    }
    let issuer = s.store.get_issuer(org_id, &rule.issuer_id).await?;
    if issuer.archived_at.is_some() {
        return Err(no_rule());
    }
    let expected = Expected {
        issuer: &issuer.issuer_url,
        audience: &rule.audience,
        subject: &rule.subject,
    };
    let jwks = s.jwks(&issuer, false).await?;
    let claims = match jwt::verify(assertion, &jwks, &expected) {
        Err(jwt::JwtError::UnknownKey) if issuer.jwks_url.is_some() => {
            // The issuer may have rotated its keys since the cached fetch.
            let fresh = s.jwks(&issuer, true).await?;
            jwt::verify(assertion, &fresh, &expected)
        }
        other => other,
    }
    .map_err(|e| ApiError::Authentication(e.to_string()))?;
    if !s
        .store
        .service_account_active(org_id, &rule.service_account_id)
        .await?
    {
        return Err(ApiError::Authentication(
            "the federation rule's service account is archived".into(),
        ));
    }
    let actor = Actor {
        org_id: org_id.into(),
        workspace_id: rule.workspace_id.clone(),
        name: format!("service_account:{}", rule.service_account_id),
        source: source.into(),
    };
    let lifetime = rule.token_lifetime_seconds;
    let (_, secret) = s
        .store
        .create_credential(
            &actor,
            NewCredential {
                kind: CredentialKind::AccessToken,
                workspace_id: Some(rule.workspace_id.clone()),
                name: format!("federation:{}:{}", rule.id, claims.sub),
                scopes: rule.scope.split(' ').map(str::to_owned).collect(),
                expires_at: Some(now_ms() + lifetime * 1000),
                actor: actor.name.clone(),
            },
        )
        .await?;
    Ok(json!({
        "access_token": secret.expose(),
        "token_type": "Bearer",
        "expires_in": lifetime,
        "scope": rule.scope,
    }))
}

impl ApiState {
    /// The issuer's keys: inline, or fetched (and cached for a few minutes).
    async fn jwks(&self, issuer: &FederationIssuer, refresh: bool) -> Result<JwkSet, ApiError> {
        if let Some(inline) = &issuer.jwks {
            return jwt::parse_jwks(inline)
                .map_err(|e| ApiError::Internal(format!("stored JWKS of {}: {e}", issuer.id)));
        }
        let url = issuer
            .jwks_url
            .as_deref()
            .ok_or_else(|| ApiError::Internal(format!("issuer {} has no keys", issuer.id)))?;
        if !refresh {
            let cache = self.jwks_cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, set)) = cache.get(url)
                && at.elapsed() < JWKS_TTL
            {
                return Ok(set.clone());
            }
        }
        let resp = self
            .http
            .send(http::Method::GET, url, &[], None)
            .await
            .map_err(|e| {
                ApiError::Authentication(format!("cannot fetch the issuer's JWKS: {e}"))
            })?;
        if !resp.status.is_success() {
            return Err(ApiError::Authentication(format!(
                "cannot fetch the issuer's JWKS: HTTP {}",
                resp.status.as_u16()
            )));
        }
        let value: Value = serde_json::from_slice(&resp.body)
            .map_err(|e| ApiError::Authentication(format!("the issuer's JWKS is not JSON: {e}")))?;
        let set = jwt::parse_jwks(&value)
            .map_err(|e| ApiError::Authentication(format!("the issuer's JWKS is invalid: {e}")))?;
        self.jwks_cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(url.to_owned(), (Instant::now(), set.clone()));
        Ok(set)
    }
}
