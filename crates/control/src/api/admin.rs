//! Our extension: administration of the organization (workspaces, service accounts,
//! federation issuers and rules, API keys, client access keys) and the audit log.
//! Every endpoint needs the `org:admin` scope.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::AdminCaller;
use super::error::ApiError;
use super::extract::{Body, Query};
use super::tunnels::ListQuery;
use crate::ids::CredentialKind;
use crate::scopes;
use crate::store::{IdentityKind, NewCredential, NewIssuer, NewRule};
use crate::time::now_ms;

type Reply = Result<Json<Value>, ApiError>;

fn list<T: serde::Serialize>(items: Vec<T>) -> Json<Value> {
    Json(json!({"data": items, "next_page": null}))
}

fn to_json<T: serde::Serialize>(v: &T) -> Json<Value> {
    Json(serde_json::to_value(v).unwrap_or(Value::Null))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named {
    name: Option<String>,
}

fn name_of(n: Named) -> Result<String, ApiError> {
    n.name
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::InvalidRequest("name: field required".into()))
}

pub async fn list_workspaces(State(s): State<Arc<ApiState>>, AdminCaller(p): AdminCaller) -> Reply {
    Ok(list(s.store.list_workspaces(p.org_id()).await?))
}

pub async fn create_workspace(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<Named>,
) -> Reply {
    Ok(to_json(
        &s.store.create_workspace(&p.actor(), &name_of(b)?).await?,
    ))
}

pub async fn list_service_accounts(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
) -> Reply {
    Ok(list(s.store.list_service_accounts(p.org_id()).await?))
}

pub async fn create_service_account(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<Named>,
) -> Reply {
    Ok(to_json(
        &s.store
            .create_service_account(&p.actor(), &name_of(b)?)
            .await?,
    ))
}

pub async fn archive_service_account(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<String>,
) -> Reply {
    s.store
        .archive_identity(&p.actor(), IdentityKind::ServiceAccount, &id)
        .await?;
    Ok(Json(
        json!({"type": "service_account", "id": id, "archived": true}),
    ))
}

#[derive(Debug, Default, Deserialize)]
pub struct MaybeIssuer(Option<NewIssuer>);

pub async fn list_issuers(State(s): State<Arc<ApiState>>, AdminCaller(p): AdminCaller) -> Reply {
    Ok(list(s.store.list_issuers(p.org_id()).await?))
}

pub async fn create_issuer(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<MaybeIssuer>,
) -> Reply {
    let new =
        b.0.ok_or_else(|| ApiError::InvalidRequest("issuer_url: field required".into()))?;
    Ok(to_json(&s.store.create_issuer(&p.actor(), new).await?))
}

pub async fn archive_issuer(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<String>,
) -> Reply {
    s.store
        .archive_identity(&p.actor(), IdentityKind::Issuer, &id)
        .await?;
    Ok(to_json(&s.store.get_issuer(p.org_id(), &id).await?))
}

#[derive(Debug, Default, Deserialize)]
pub struct MaybeRule(Option<NewRule>);

pub async fn list_rules(State(s): State<Arc<ApiState>>, AdminCaller(p): AdminCaller) -> Reply {
    Ok(list(s.store.list_rules(p.org_id()).await?))
}

pub async fn create_rule(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<MaybeRule>,
) -> Reply {
    let new =
        b.0.ok_or_else(|| ApiError::InvalidRequest("issuer_id: field required".into()))?;
    Ok(to_json(&s.store.create_rule(&p.actor(), new).await?))
}

pub async fn archive_rule(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<String>,
) -> Reply {
    s.store
        .archive_identity(&p.actor(), IdentityKind::Rule, &id)
        .await?;
    Ok(to_json(&s.store.get_rule(p.org_id(), &id).await?))
}

/// `{name, role | scopes, workspace_id?, expires_in_seconds?}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    name: Option<String>,
    role: Option<String>,
    scopes: Option<Vec<String>>,
    workspace_id: Option<String>,
    expires_in_seconds: Option<i64>,
}

async fn create_key(
    s: &ApiState,
    p: &super::auth::Principal,
    kind: CredentialKind,
    b: NewKey,
) -> Reply {
    let name = b
        .name
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::InvalidRequest("name: field required".into()))?;
    let key_scopes = match (kind, b.role.as_deref(), b.scopes) {
        (CredentialKind::ClientKey, None, None) => vec![scopes::USE_TUNNELS.to_owned()],
        (CredentialKind::ClientKey, _, _) => {
            return Err(ApiError::InvalidRequest(
                "client keys always have the scope workspace:use_tunnels".into(),
            ));
        }
        (_, Some(_), Some(_)) => {
            return Err(ApiError::InvalidRequest(
                "give role or scopes, not both".into(),
            ));
        }
        (_, Some(role), None) => scopes::for_role(role).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "role: unknown role {role:?} (admin, owner, developer)"
            ))
        })?,
        (_, None, Some(list)) => scopes::parse(&list.join(" "))
            .map_err(|e| ApiError::InvalidRequest(format!("scopes: {e}")))?,
        (_, None, None) => vec![scopes::MANAGE_TUNNELS.to_owned()],
    };
    if kind == CredentialKind::ApiKey && key_scopes.iter().any(|s| s == scopes::USE_TUNNELS) {
        return Err(ApiError::InvalidRequest(
            "scopes: workspace:use_tunnels belongs to client keys".into(),
        ));
    }
    let expires_at = match b.expires_in_seconds {
        None => None,
        Some(n) if n > 0 => Some(now_ms() + n * 1000),
        Some(_) => {
            return Err(ApiError::InvalidRequest(
                "expires_in_seconds must be positive".into(),
            ));
        }
    };
    let actor = p.actor();
    let (cred, secret) = s
        .store
        .create_credential(
            &actor,
            NewCredential {
                kind,
                workspace_id: b.workspace_id,
                name,
                scopes: key_scopes,
                expires_at,
                actor: actor.name.clone(),
            },
        )
        .await?;
    let mut v = serde_json::to_value(cred.view()).unwrap_or(Value::Null);
    v["key"] = Value::String(secret.expose().to_owned());
    Ok(Json(v))
}

pub async fn list_api_keys(State(s): State<Arc<ApiState>>, AdminCaller(p): AdminCaller) -> Reply {
    list_keys(&s, &p, CredentialKind::ApiKey).await
}

pub async fn create_api_key(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<NewKey>,
) -> Reply {
    create_key(&s, &p, CredentialKind::ApiKey, b).await
}

pub async fn revoke_api_key(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<String>,
) -> Reply {
    revoke_key(&s, &p, CredentialKind::ApiKey, &id).await
}

pub async fn list_client_keys(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
) -> Reply {
    list_keys(&s, &p, CredentialKind::ClientKey).await
}

pub async fn create_client_key(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<NewKey>,
) -> Reply {
    create_key(&s, &p, CredentialKind::ClientKey, b).await
}

pub async fn revoke_client_key(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<String>,
) -> Reply {
    revoke_key(&s, &p, CredentialKind::ClientKey, &id).await
}

async fn list_keys(s: &ApiState, p: &super::auth::Principal, kind: CredentialKind) -> Reply {
    let keys = s.store.list_credentials(p.org_id(), kind).await?;
    Ok(list(keys.iter().map(|k| k.view()).collect()))
}

async fn revoke_key(
    s: &ApiState,
    p: &super::auth::Principal,
    kind: CredentialKind,
    id: &str,
) -> Reply {
    let c = s.store.revoke_credential(&p.actor(), kind, id).await?;
    Ok(to_json(&c.view()))
}

pub async fn list_audit(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Query(q): Query<ListQuery>,
) -> Reply {
    let page = s.store.list_audit_events(p.org_id(), &q.params()?).await?;
    Ok(Json(
        json!({"data": page.data, "next_page": page.next_page}),
    ))
}

/// The whole log, oldest first, one JSON object per line.
pub async fn export_audit(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
) -> Result<Response, ApiError> {
    let events = s.store.export_audit_events(p.org_id()).await?;
    let mut out = String::new();
    for e in &events {
        out.push_str(&serde_json::to_string(e).unwrap_or_default());
        out.push('\n');
    }
    Ok(([(http::header::CONTENT_TYPE, "application/x-ndjson")], out).into_response())
}

pub async fn verify_audit(State(s): State<Arc<ApiState>>, AdminCaller(p): AdminCaller) -> Reply {
    Ok(to_json(&s.store.verify_audit_chain(p.org_id()).await?))
}
