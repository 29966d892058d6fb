//! Bearer credentials: Tunnels API keys, access tokens minted by the workload-identity
//! exchange, and client access keys for the edge. Only their SHA-256 is stored.

use mcp_tunnel_pki::crypto::Secret;
use serde::Serialize;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::audit::{NewEvent, append};
use super::{Actor, ControlError, ControlStore, Result};
use crate::db::Tx;
use crate::ids::{self, CredentialKind, credential_hash};
use crate::time::{now_ms, rfc3339_ms};

/// A stored credential, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub id: String,
    pub kind: CredentialKind,
    pub org_id: String,
    /// `None`: organization-wide (the request picks a workspace, default otherwise).
    pub workspace_id: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    /// Who the credential acts as, e.g. `service_account:svac_…`.
    pub actor: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

impl Credential {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The public view of a credential, for the admin API.
#[derive(Debug, Serialize)]
pub struct CredentialView<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    id: &'a str,
    name: &'a str,
    workspace_id: Option<&'a str>,
    scopes: &'a [String],
    created_at: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl Credential {
    pub fn view(&self) -> CredentialView<'_> {
        CredentialView {
            kind: self.kind.as_str(),
            id: &self.id,
            name: &self.name,
            workspace_id: self.workspace_id.as_deref(),
            scopes: &self.scopes,
            created_at: rfc3339_ms(self.created_at),
            expires_at: self.expires_at.map(rfc3339_ms),
            revoked_at: self.revoked_at.map(rfc3339_ms),
        }
    }
}

/// What to create.
#[derive(Debug, Clone)]
pub struct NewCredential {
    pub kind: CredentialKind,
    pub workspace_id: Option<String>,
    pub name: String,
    pub scopes: Vec<String>,
    pub expires_at: Option<i64>,
    pub actor: String,
}

fn from_row(r: &AnyRow) -> Result<Credential> {
    let kind: String = r.try_get("kind")?;
    let scopes: String = r.try_get("scopes")?;
    Ok(Credential {
        id: r.try_get("id")?,
        kind: CredentialKind::from_db(&kind)
            .ok_or_else(|| ControlError::Corrupt(format!("credential kind {kind:?}")))?,
        org_id: r.try_get("org_id")?,
        workspace_id: r.try_get("workspace_id")?,
        name: r.try_get("name")?,
        scopes: scopes
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        actor: r.try_get("actor")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

/// Inserts a credential in the caller's transaction; returns it and its secret.
pub(crate) async fn insert_credential(
    tx: &mut Tx,
    by: &Actor,
    new: NewCredential,
) -> Result<(Credential, Secret)> {
    let secret = ids::new_credential(new.kind);
    let cred = Credential {
        id: ids::new_id(new.kind.id_prefix()),
        kind: new.kind,
        org_id: by.org_id.clone(),
        workspace_id: new.workspace_id,
        name: new.name,
        scopes: new.scopes,
        actor: new.actor,
        created_at: now_ms(),
        expires_at: new.expires_at,
        revoked_at: None,
    };
    sqlx::query(
        "INSERT INTO credentials (id, kind, org_id, workspace_id, name, secret_hash, scopes, \
         actor, created_at, expires_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
    )
    .bind(cred.id.as_str())
    .bind(cred.kind.as_str())
    .bind(cred.org_id.as_str())
    .bind(cred.workspace_id.as_deref())
    .bind(cred.name.as_str())
    .bind(credential_hash(secret.expose()))
    .bind(cred.scopes.join(" "))
    .bind(cred.actor.as_str())
    .bind(cred.created_at)
    .bind(cred.expires_at)
    .execute(&mut **tx)
    .await?;
    Ok((cred, secret))
}

impl ControlStore {
    /// Creates a credential and audits it (access tokens are not audited one by one:
    /// the exchange that mints them is).
    pub async fn create_credential(
        &self,
        by: &Actor,
        new: NewCredential,
    ) -> Result<(Credential, Secret)> {
        if let Some(ws) = &new.workspace_id
            && !self.workspace_in_org(&by.org_id, ws).await?
        {
            return Err(ControlError::Invalid(format!(
                "workspace_id: {ws} is not a workspace of this organization"
            )));
        }
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let kind = new.kind;
        let (cred, secret) = insert_credential(&mut tx, by, new).await?;
        let action = match kind {
            CredentialKind::ApiKey => "api_key.create",
            CredentialKind::AccessToken => "oauth.token_exchange",
            CredentialKind::ClientKey => "client_key.create",
        };
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action,
                target: &cred.id,
                reason: None,
                details: serde_json::json!({
                    "name": cred.name, "scopes": cred.scopes,
                    "workspace_id": cred.workspace_id, "acts_as": cred.actor,
                    "expires_at": cred.expires_at.map(rfc3339_ms),
                }),
            },
        )
        .await?;
        tx.commit().await?;
        Ok((cred, secret))
    }

    /// The live credential with this secret: `None` when unknown, revoked or expired.
    pub async fn resolve_credential(&self, secret: &str) -> Result<Option<Credential>> {
        let row = sqlx::query("SELECT * FROM credentials WHERE secret_hash = $1")
            .bind(credential_hash(secret))
            .fetch_optional(&self.db().pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let cred = from_row(&row)?;
        let now = now_ms();
        if cred.revoked_at.is_some() || cred.expires_at.is_some_and(|e| e <= now) {
            return Ok(None);
        }
        Ok(Some(cred))
    }

    /// Credentials of one kind in the organization, newest first (secrets are not kept).
    pub async fn list_credentials(
        &self,
        org_id: &str,
        kind: CredentialKind,
    ) -> Result<Vec<Credential>> {
        let rows = sqlx::query(
            "SELECT * FROM credentials WHERE org_id = $1 AND kind = $2 ORDER BY seq DESC",
        )
        .bind(org_id)
        .bind(kind.as_str())
        .fetch_all(&self.db().pool)
        .await?;
        rows.iter().map(from_row).collect()
    }

    /// Deletes access tokens that expired more than `grace_ms` ago: every exchange mints
    /// one, and an expired one can never authenticate again. Keys are kept (revoked or
    /// not) for the record.
    pub async fn purge_expired_access_tokens(&self, grace_ms: i64) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM credentials WHERE kind = $1 AND expires_at < $2")
                .bind(CredentialKind::AccessToken.as_str())
                .bind(now_ms() - grace_ms)
                .execute(&self.db().pool)
                .await?
                .rows_affected(),
        )
    }

    /// Revokes a credential at once; idempotent.
    pub async fn revoke_credential(
        &self,
        by: &Actor,
        kind: CredentialKind,
        id: &str,
    ) -> Result<Credential> {
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let row =
            sqlx::query("SELECT * FROM credentials WHERE id = $1 AND org_id = $2 AND kind = $3")
                .bind(id)
                .bind(by.org_id.as_str())
                .bind(kind.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .ok_or_else(|| ControlError::NotFound {
                    kind: kind.as_str(),
                    id: id.into(),
                })?;
        let mut cred = from_row(&row)?;
        if cred.revoked_at.is_none() {
            let now = now_ms();
            sqlx::query("UPDATE credentials SET revoked_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            cred.revoked_at = Some(now);
            append(
                &mut tx,
                NewEvent {
                    actor: by,
                    action: match kind {
                        CredentialKind::ClientKey => "client_key.revoke",
                        _ => "api_key.revoke",
                    },
                    target: id,
                    reason: None,
                    details: serde_json::json!({"name": cred.name}),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(cred)
    }
}
