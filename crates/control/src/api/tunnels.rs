//! The ten endpoints of the Tunnels API (SPEC §7.1).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::ApiState;
use super::auth::TunnelsCaller;
use super::error::ApiError;
use super::extract::{Body, Query};
use crate::scopes;
use crate::store::{Certificate, DEFAULT_LIMIT, ListParams, Page, RevealedToken, Tunnel};
use crate::time::rfc3339_ms;

type Reply = Result<Json<Value>, ApiError>;

pub fn tunnel_json(t: &Tunnel) -> Value {
    json!({
        "type": "tunnel",
        "id": t.id,
        "display_name": t.display_name,
        "domain": t.domain,
        "created_at": rfc3339_ms(t.created_at),
        "archived_at": t.archived_at.map(rfc3339_ms),
        "status": t.status(),
        "connections": t.connections,
        "workspace_id": t.workspace_id,
    })
}

pub fn certificate_json(c: &Certificate) -> Value {
    json!({
        "type": "tunnel_certificate",
        "id": c.id,
        "tunnel_id": c.tunnel_id,
        "fingerprint": c.fingerprint,
        "created_at": rfc3339_ms(c.created_at),
        "expires_at": c.expires_at.map(rfc3339_ms),
        "archived_at": c.archived_at.map(rfc3339_ms),
        "ca_certificate_pem": c.pem,
        "subject": c.subject,
    })
}

fn token_json(t: &RevealedToken) -> Value {
    json!({
        "type": "tunnel_token",
        "id": t.id,
        "tunnel_token": t.tunnel_token.expose(),
    })
}

fn page_json<T>(p: &Page<T>, f: fn(&T) -> Value) -> Value {
    json!({"data": p.data.iter().map(f).collect::<Vec<_>>(), "next_page": p.next_page})
}

/// `include_archived`, `limit`, `page` (and anything else, ignored).
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    #[serde(default)]
    include_archived: Option<String>,
    #[serde(default)]
    limit: Option<String>,
    #[serde(default)]
    page: Option<String>,
}

impl ListQuery {
    pub fn params(&self) -> Result<ListParams, ApiError> {
        let include_archived = match self.include_archived.as_deref() {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") => true,
            Some(other) => {
                return Err(ApiError::InvalidRequest(format!(
                    "include_archived must be true or false (got {other:?})"
                )));
            }
        };
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(s) => s.parse().map_err(|_| {
                ApiError::InvalidRequest(format!(
                    "limit must be an integer from 1 to 1000 (got {s:?})"
                ))
            })?,
        };
        Ok(ListParams {
            include_archived,
            limit,
            page: self.page.clone().filter(|p| !p.is_empty()),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTunnel {
    display_name: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateToken {
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AddCertificate {
    ca_certificate_pem: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct Empty {}

pub async fn create(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Body(b): Body<CreateTunnel>,
) -> Reply {
    p.require(&[scopes::MANAGE_TUNNELS])?;
    let t = s
        .store
        .create_tunnel(&p.actor(), b.display_name.as_deref())
        .await?;
    Ok(Json(tunnel_json(&t)))
}

pub async fn list(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Query(q): Query<ListQuery>,
) -> Reply {
    let page = s
        .store
        .list_tunnels(p.org_id(), &p.workspace_id, &q.params()?)
        .await?;
    Ok(Json(page_json(&page, tunnel_json)))
}

pub async fn get(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path(id): Path<String>,
) -> Reply {
    let t = s.store.get_tunnel(p.org_id(), &p.workspace_id, &id).await?;
    Ok(Json(tunnel_json(&t)))
}

pub async fn archive(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path(id): Path<String>,
    Body(_): Body<Empty>,
) -> Reply {
    p.require(&[scopes::MANAGE_TUNNELS])?;
    let t = s.store.archive_tunnel(&p.actor(), &id).await?;
    Ok(Json(tunnel_json(&t)))
}

pub async fn reveal_token(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path(id): Path<String>,
    Body(_): Body<Empty>,
) -> Reply {
    p.require(&[scopes::MANAGE_TUNNELS])?;
    let t = s.store.reveal_token(&p.actor(), &id).await?;
    Ok(Json(token_json(&t)))
}

pub async fn rotate_token(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path(id): Path<String>,
    Body(b): Body<RotateToken>,
) -> Reply {
    p.require(&[scopes::MANAGE_TUNNELS])?;
    let t = s
        .store
        .rotate_token(&p.actor(), &id, b.reason.as_deref())
        .await?;
    Ok(Json(token_json(&t)))
}

pub async fn add_certificate(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path(id): Path<String>,
    Body(b): Body<AddCertificate>,
) -> Reply {
    p.require(&[scopes::MANAGE_TUNNELS])?;
    let pem = b
        .ca_certificate_pem
        .ok_or_else(|| ApiError::InvalidRequest("ca_certificate_pem: field required".into()))?;
    let c = s.store.add_certificate(&p.actor(), &id, &pem).await?;
    Ok(Json(certificate_json(&c)))
}

pub async fn list_certificates(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path(id): Path<String>,
    Query(q): Query<ListQuery>,
) -> Reply {
    let page = s
        .store
        .list_certificates(p.org_id(), &p.workspace_id, &id, &q.params()?)
        .await?;
    Ok(Json(page_json(&page, certificate_json)))
}

pub async fn get_certificate(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path((id, cid)): Path<(String, String)>,
) -> Reply {
    let c = s
        .store
        .get_certificate(p.org_id(), &p.workspace_id, &id, &cid)
        .await?;
    Ok(Json(certificate_json(&c)))
}

pub async fn archive_certificate(
    State(s): State<Arc<ApiState>>,
    TunnelsCaller(p): TunnelsCaller,
    Path((id, cid)): Path<(String, String)>,
    Body(_): Body<Empty>,
) -> Reply {
    p.require(&[scopes::MANAGE_TUNNELS])?;
    let c = s.store.archive_certificate(&p.actor(), &id, &cid).await?;
    Ok(Json(certificate_json(&c)))
}
