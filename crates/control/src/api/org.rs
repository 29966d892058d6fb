//! Our extension: the organization's sign-in settings (SSO provider, `sso_required`)
//! and its console users. `org:admin` required, like every admin endpoint.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use mcp_tunnel_pki::crypto::Secret;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ApiState;
use super::auth::AdminCaller;
use super::error::ApiError;
use super::extract::Body;
use crate::store::{NewSsoConfig, Role, parse_domains};

type Reply = Result<Json<Value>, ApiError>;

fn to_json<T: serde::Serialize>(v: &T) -> Json<Value> {
    Json(serde_json::to_value(v).unwrap_or(Value::Null))
}

pub async fn get_organization(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
) -> Reply {
    Ok(to_json(&s.store.organization(p.org_id()).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgUpdate {
    sso_required: Option<bool>,
}

pub async fn update_organization(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<OrgUpdate>,
) -> Reply {
    let required = b
        .sso_required
        .ok_or_else(|| ApiError::InvalidRequest("sso_required: field required".into()))?;
    Ok(to_json(
        &s.store.set_sso_required(&p.actor(), required).await?,
    ))
}

/// `allowed_domains` as a list or one comma-separated string.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Domains {
    List(Vec<String>),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SsoUpdate {
    issuer: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    allowed_domains: Option<Domains>,
    auto_provision_role: Option<String>,
}

/// Parses `none`/empty as no auto-provisioning, else a role.
pub fn provision_role(v: Option<&str>) -> Result<Option<Role>, ApiError> {
    match v.map(str::trim) {
        None | Some("") | Some("none") => Ok(None),
        Some(r) => Role::parse(r).map(Some).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "auto_provision_role: unknown role {r:?} (owner, admin, developer or none)"
            ))
        }),
    }
}

pub async fn set_sso(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<SsoUpdate>,
) -> Reply {
    let field = |v: Option<String>, name: &str| {
        v.filter(|x| !x.is_empty())
            .ok_or_else(|| ApiError::InvalidRequest(format!("{name}: field required")))
    };
    let domains = match b.allowed_domains {
        None => Vec::new(),
        Some(Domains::List(l)) => parse_domains(&l.join(","))?,
        Some(Domains::Text(t)) => parse_domains(&t)?,
    };
    let cfg = NewSsoConfig {
        issuer: field(b.issuer, "issuer")?,
        client_id: field(b.client_id, "client_id")?,
        client_secret: b.client_secret.map(Secret::new),
        allowed_domains: domains,
        auto_provision_role: provision_role(b.auto_provision_role.as_deref())?,
    };
    s.store.set_sso_config(&p.actor(), cfg).await?;
    Ok(to_json(&s.store.organization(p.org_id()).await?))
}

pub async fn list_users(State(s): State<Arc<ApiState>>, AdminCaller(p): AdminCaller) -> Reply {
    let users = s.store.list_users(p.org_id()).await?;
    Ok(Json(json!({
        "data": users.iter().map(|u| u.json()).collect::<Vec<_>>(),
        "next_page": null,
    })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    login: Option<String>,
    role: Option<String>,
}

fn role_of(r: &str) -> Result<Role, ApiError> {
    Role::parse(r).ok_or_else(|| {
        ApiError::InvalidRequest(format!(
            "role: unknown role {r:?} (owner, admin, developer)"
        ))
    })
}

/// Users are created without a password: they sign in through SSO.
pub async fn create_user(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Body(b): Body<NewUser>,
) -> Reply {
    let login = b
        .login
        .ok_or_else(|| ApiError::InvalidRequest("login: field required".into()))?;
    let role = role_of(b.role.as_deref().unwrap_or("developer"))?;
    let u = s.store.create_user(&p.actor(), &login, role, None).await?;
    Ok(Json(u.json()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserUpdate {
    role: Option<String>,
    disabled: Option<bool>,
}

pub async fn update_user(
    State(s): State<Arc<ApiState>>,
    AdminCaller(p): AdminCaller,
    Path(id): Path<String>,
    Body(b): Body<UserUpdate>,
) -> Reply {
    let role = b.role.as_deref().map(role_of).transpose()?;
    let u = s
        .store
        .update_user(&p.actor(), None, &id, role, b.disabled)
        .await?;
    Ok(Json(u.json()))
}
