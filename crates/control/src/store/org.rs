//! Organizations and their bootstrap: the organization, its default workspace and the
//! first admin API key, created together by `server init`.

use sqlx::Row as _;

use super::audit::{NewEvent, append};
use super::credentials::{NewCredential, insert_credential};
use super::{Actor, ControlError, ControlStore, Result};
use crate::ids::{self, CredentialKind};
use crate::scopes;
use crate::time::now_ms;
use mcp_tunnel_pki::crypto::Secret;

/// What `server init` created. The admin key is shown once.
#[derive(Debug)]
pub struct Bootstrap {
    pub organization_id: String,
    pub workspace_id: String,
    pub admin_key_id: String,
    pub admin_key: Secret,
}

impl ControlStore {
    /// Creates an organization with its default workspace and an admin API key
    /// (scopes `org:admin` and `workspace:manage_tunnels`).
    pub async fn bootstrap(&self, org_name: &str) -> Result<Bootstrap> {
        let org_id = ids::new_uuid();
        let ws_id = ids::new_id("wrkspc");
        let now = now_ms();
        let mut tx = self.db().pool.begin().await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, created_at, audit_head, audit_count) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(org_id.as_str())
        .bind(org_name)
        .bind(now)
        .bind(vec![0u8; 32])
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO workspaces (id, org_id, name, is_default, created_at) \
             VALUES ($1, $2, 'Default', 1, $3)",
        )
        .bind(ws_id.as_str())
        .bind(org_id.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let actor = Actor {
            org_id: org_id.clone(),
            workspace_id: ws_id.clone(),
            name: "system:server-init".into(),
            source: "local".into(),
        };
        let (cred, secret) = insert_credential(
            &mut tx,
            &actor,
            NewCredential {
                kind: CredentialKind::ApiKey,
                workspace_id: None,
                name: "bootstrap admin".into(),
                scopes: vec![scopes::ORG_ADMIN.into(), scopes::MANAGE_TUNNELS.into()],
                expires_at: None,
                actor: "system:server-init".into(),
            },
        )
        .await?;
        append(
            &mut tx,
            NewEvent {
                actor: &actor,
                action: "organization.create",
                target: &org_id,
                reason: None,
                details: serde_json::json!({"name": org_name, "default_workspace_id": ws_id, "admin_key_id": cred.id}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(Bootstrap {
            organization_id: org_id,
            workspace_id: ws_id,
            admin_key_id: cred.id,
            admin_key: secret,
        })
    }

    /// Ids of every organization, oldest first.
    pub async fn organizations(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT id FROM organizations ORDER BY created_at ASC")
            .fetch_all(&self.db().pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>("id").map_err(ControlError::from))
            .collect()
    }

    pub async fn organization_exists(&self, org_id: &str) -> Result<bool> {
        Ok(sqlx::query("SELECT id FROM organizations WHERE id = $1")
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?
            .is_some())
    }

    /// The organization's default workspace.
    pub async fn default_workspace(&self, org_id: &str) -> Result<String> {
        let row = sqlx::query(
            "SELECT id FROM workspaces WHERE org_id = $1 AND is_default = 1 ORDER BY seq LIMIT 1",
        )
        .bind(org_id)
        .fetch_optional(&self.db().pool)
        .await?
        .ok_or_else(|| ControlError::NotFound {
            kind: "default workspace of organization",
            id: org_id.into(),
        })?;
        Ok(row.try_get("id")?)
    }

    /// Whether `workspace_id` is a live workspace of the organization.
    pub async fn workspace_in_org(&self, org_id: &str, workspace_id: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT id FROM workspaces WHERE id = $1 AND org_id = $2 AND archived_at IS NULL",
        )
        .bind(workspace_id)
        .bind(org_id)
        .fetch_optional(&self.db().pool)
        .await?
        .is_some())
    }
}
