//! Identity (SPEC §7.2): workspaces, service accounts, federation issuers and rules.

use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::audit::{NewEvent, append};
use super::{Actor, ControlError, ControlStore, Result};
use crate::ids;
use crate::scopes;
use crate::time::{now_ms, rfc3339_ms};

/// Bounds of a rule's `token_lifetime_seconds`, and its default.
pub const MIN_TOKEN_LIFETIME: i64 = 60;
pub const MAX_TOKEN_LIFETIME: i64 = 86_400;
pub const DEFAULT_TOKEN_LIFETIME: i64 = 3600;

#[derive(Debug, Clone, Serialize)]
pub struct Workspace {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub is_default: bool,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceAccount {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub archived_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FederationIssuer {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub issuer_url: String,
    /// Inline JWKS (public keys), when given.
    pub jwks: Option<serde_json::Value>,
    pub jwks_url: Option<String>,
    pub created_at: String,
    pub archived_at: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FederationRule {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    pub name: String,
    pub issuer_id: String,
    pub subject: String,
    pub audience: String,
    pub service_account_id: String,
    pub workspace_id: String,
    pub scope: String,
    pub token_lifetime_seconds: i64,
    pub created_at: String,
    pub archived_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIssuer {
    pub name: Option<String>,
    pub issuer_url: String,
    pub jwks: Option<serde_json::Value>,
    pub jwks_url: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRule {
    pub name: Option<String>,
    pub issuer_id: String,
    pub subject: String,
    pub audience: String,
    pub service_account_id: String,
    pub workspace_id: Option<String>,
    pub scope: Option<String>,
    pub token_lifetime_seconds: Option<i64>,
}

fn opt_time(r: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(r.try_get::<Option<i64>, _>(col)?.map(rfc3339_ms))
}

fn issuer_from_row(r: &AnyRow) -> Result<FederationIssuer> {
    let jwks: Option<String> = r.try_get("jwks_json")?;
    Ok(FederationIssuer {
        kind: "federation_issuer",
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        issuer_url: r.try_get("issuer_url")?,
        jwks: jwks.and_then(|j| serde_json::from_str(&j).ok()),
        jwks_url: r.try_get("jwks_url")?,
        created_at: rfc3339_ms(r.try_get("created_at")?),
        archived_at: opt_time(r, "archived_at")?,
    })
}

fn rule_from_row(r: &AnyRow) -> Result<FederationRule> {
    Ok(FederationRule {
        kind: "federation_rule",
        id: r.try_get("id")?,
        name: r.try_get("name")?,
        issuer_id: r.try_get("issuer_id")?,
        subject: r.try_get("subject")?,
        audience: r.try_get("audience")?,
        service_account_id: r.try_get("service_account_id")?,
        workspace_id: r.try_get("workspace_id")?,
        scope: r.try_get("scope")?,
        token_lifetime_seconds: r.try_get("token_lifetime_seconds")?,
        created_at: rfc3339_ms(r.try_get("created_at")?),
        archived_at: opt_time(r, "archived_at")?,
    })
}

fn invalid(msg: impl Into<String>) -> ControlError {
    ControlError::Invalid(msg.into())
}

/// JWKS may be fetched over https, or over http from a loopback address only.
pub fn check_jwks_url(url: &str) -> Result<()> {
    if url.starts_with("https://") {
        return Ok(());
    }
    let host = url
        .strip_prefix("http://")
        .map(|rest| rest.split(['/', '?']).next().unwrap_or(""))
        .unwrap_or("");
    let host_only = host.rsplit_once(':').map_or(host, |(h, _)| h);
    if matches!(host_only, "localhost" | "127.0.0.1" | "[::1]") {
        return Ok(());
    }
    Err(invalid(
        "jwks_url must be https, or http on a loopback address (localhost, 127.0.0.1, [::1])",
    ))
}

impl ControlStore {
    /// Records the event and commits the transaction the caller wrote in.
    async fn audit_commit(
        &self,
        mut tx: crate::db::Tx,
        by: &Actor,
        action: &str,
        target: &str,
        details: serde_json::Value,
    ) -> Result<()> {
        let event = NewEvent {
            actor: by,
            action,
            target,
            reason: None,
            details,
        };
        append(&mut tx, event).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create_workspace(&self, by: &Actor, name: &str) -> Result<Workspace> {
        if name.is_empty() || name.chars().count() > 255 {
            return Err(invalid("name must be 1 to 255 characters"));
        }
        let id = ids::new_id("wrkspc");
        let now = now_ms();
        let mut tx = self.db().write_tx(&by.org_id).await?;
        sqlx::query(
            "INSERT INTO workspaces (id, org_id, name, is_default, created_at) \
             VALUES ($1, $2, $3, 0, $4)",
        )
        .bind(id.as_str())
        .bind(by.org_id.as_str())
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({"name": name});
        self.audit_commit(tx, by, "workspace.create", &id, details)
            .await?;
        Ok(Workspace {
            kind: "workspace",
            id,
            name: name.into(),
            is_default: false,
            created_at: rfc3339_ms(now),
        })
    }

    pub async fn list_workspaces(&self, org_id: &str) -> Result<Vec<Workspace>> {
        let rows = sqlx::query(
            "SELECT * FROM workspaces WHERE org_id = $1 AND archived_at IS NULL ORDER BY seq DESC",
        )
        .bind(org_id)
        .fetch_all(&self.db().pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(Workspace {
                    kind: "workspace",
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    is_default: r.try_get::<i64, _>("is_default")? != 0,
                    created_at: rfc3339_ms(r.try_get("created_at")?),
                })
            })
            .collect()
    }

    pub async fn create_service_account(&self, by: &Actor, name: &str) -> Result<ServiceAccount> {
        if name.is_empty() || name.chars().count() > 255 {
            return Err(invalid("name must be 1 to 255 characters"));
        }
        let id = ids::new_id("svac");
        let now = now_ms();
        let mut tx = self.db().write_tx(&by.org_id).await?;
        sqlx::query(
            "INSERT INTO service_accounts (id, org_id, name, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id.as_str())
        .bind(by.org_id.as_str())
        .bind(name)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({"name": name});
        self.audit_commit(tx, by, "service_account.create", &id, details)
            .await?;
        Ok(ServiceAccount {
            kind: "service_account",
            id,
            name: name.into(),
            created_at: rfc3339_ms(now),
            archived_at: None,
        })
    }

    pub async fn list_service_accounts(&self, org_id: &str) -> Result<Vec<ServiceAccount>> {
        let rows =
            sqlx::query("SELECT * FROM service_accounts WHERE org_id = $1 ORDER BY seq DESC")
                .bind(org_id)
                .fetch_all(&self.db().pool)
                .await?;
        rows.iter()
            .map(|r| {
                Ok(ServiceAccount {
                    kind: "service_account",
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    created_at: rfc3339_ms(r.try_get("created_at")?),
                    archived_at: opt_time(r, "archived_at")?,
                })
            })
            .collect()
    }

    pub async fn create_issuer(&self, by: &Actor, new: NewIssuer) -> Result<FederationIssuer> {
        if !(new.issuer_url.starts_with("https://") || new.issuer_url.starts_with("http://")) {
            return Err(invalid(
                "issuer_url must be an http(s) URL, exactly as the tokens' iss claim",
            ));
        }
        let jwks_text = match (&new.jwks, &new.jwks_url) {
            (Some(j), None) => {
                crate::jwt::parse_jwks(j).map_err(|e| invalid(format!("jwks: {e}")))?;
                Some(j.to_string())
            }
            (None, Some(u)) => {
                check_jwks_url(u)?;
                None
            }
            _ => {
                return Err(invalid(
                    "give exactly one of jwks (inline JSON Web Key Set) or jwks_url",
                ));
            }
        };
        let id = ids::new_id("fdis");
        let now = now_ms();
        let name = new.name.clone().unwrap_or_else(|| new.issuer_url.clone());
        let mut tx = self.db().write_tx(&by.org_id).await?;
        sqlx::query(
            "INSERT INTO federation_issuers \
             (id, org_id, name, issuer_url, jwks_json, jwks_url, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(by.org_id.as_str())
        .bind(name)
        .bind(new.issuer_url.as_str())
        .bind(jwks_text)
        .bind(new.jwks_url.as_deref())
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({
            "issuer_url": new.issuer_url,
            "jwks_url": new.jwks_url,
            "inline_jwks": new.jwks.is_some(),
        });
        self.audit_commit(tx, by, "federation_issuer.create", &id, details)
            .await?;
        self.get_issuer(&by.org_id, &id).await
    }

    pub async fn get_issuer(&self, org_id: &str, id: &str) -> Result<FederationIssuer> {
        let row = sqlx::query("SELECT * FROM federation_issuers WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or_else(|| ControlError::NotFound {
                kind: "federation issuer",
                id: id.into(),
            })?;
        issuer_from_row(&row)
    }

    pub async fn list_issuers(&self, org_id: &str) -> Result<Vec<FederationIssuer>> {
        let rows =
            sqlx::query("SELECT * FROM federation_issuers WHERE org_id = $1 ORDER BY seq DESC")
                .bind(org_id)
                .fetch_all(&self.db().pool)
                .await?;
        rows.iter().map(issuer_from_row).collect()
    }

    pub async fn create_rule(&self, by: &Actor, new: NewRule) -> Result<FederationRule> {
        let issuer = self
            .get_issuer(&by.org_id, &new.issuer_id)
            .await
            .map_err(|_| invalid(format!("issuer_id: no federation issuer {}", new.issuer_id)))?;
        if issuer.archived_at.is_some() {
            return Err(invalid(format!(
                "issuer_id: federation issuer {} is archived",
                issuer.id
            )));
        }
        if new.subject.is_empty() || new.audience.is_empty() {
            return Err(invalid(
                "subject and audience must not be empty (they are compared byte for byte)",
            ));
        }
        let sa_ok = self
            .list_service_accounts(&by.org_id)
            .await?
            .iter()
            .any(|s| s.id == new.service_account_id && s.archived_at.is_none());
        if !sa_ok {
            return Err(invalid(format!(
                "service_account_id: no service account {}",
                new.service_account_id
            )));
        }
        let workspace_id = match new.workspace_id.as_deref() {
            None | Some("default") => self.default_workspace(&by.org_id).await?,
            Some(ws) if self.workspace_in_org(&by.org_id, ws).await? => ws.to_owned(),
            Some(ws) => return Err(invalid(format!("workspace_id: no workspace {ws}"))),
        };
        let scope = new
            .scope
            .clone()
            .unwrap_or_else(|| scopes::MANAGE_TUNNELS.into());
        let parsed = scopes::parse(&scope).map_err(|e| invalid(format!("scope: {e}")))?;
        if parsed
            .iter()
            .any(|s| s == scopes::ORG_ADMIN || s == scopes::USE_TUNNELS)
        {
            return Err(invalid(
                "scope: federation rules grant workspace:manage_tunnels or workspace:read_tunnels",
            ));
        }
        let lifetime = new.token_lifetime_seconds.unwrap_or(DEFAULT_TOKEN_LIFETIME);
        if !(MIN_TOKEN_LIFETIME..=MAX_TOKEN_LIFETIME).contains(&lifetime) {
            return Err(invalid(format!(
                "token_lifetime_seconds must be between {MIN_TOKEN_LIFETIME} and {MAX_TOKEN_LIFETIME} (got {lifetime})"
            )));
        }
        let id = ids::new_id("fdrl");
        let now = now_ms();
        let name = new.name.clone().unwrap_or_else(|| new.subject.clone());
        let scope = parsed.join(" ");
        let mut tx = self.db().write_tx(&by.org_id).await?;
        sqlx::query(
            "INSERT INTO federation_rules (id, org_id, issuer_id, name, subject, audience, \
             service_account_id, workspace_id, scope, token_lifetime_seconds, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(id.as_str())
        .bind(by.org_id.as_str())
        .bind(new.issuer_id.as_str())
        .bind(name)
        .bind(new.subject.as_str())
        .bind(new.audience.as_str())
        .bind(new.service_account_id.as_str())
        .bind(workspace_id.as_str())
        .bind(scope.as_str())
        .bind(lifetime)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let details = serde_json::json!({
            "issuer_id": new.issuer_id,
            "subject": new.subject,
            "audience": new.audience,
            "service_account_id": new.service_account_id,
            "workspace_id": workspace_id,
            "scope": scope,
            "token_lifetime_seconds": lifetime,
        });
        self.audit_commit(tx, by, "federation_rule.create", &id, details)
            .await?;
        self.get_rule(&by.org_id, &id).await
    }

    pub async fn get_rule(&self, org_id: &str, id: &str) -> Result<FederationRule> {
        let row = sqlx::query("SELECT * FROM federation_rules WHERE id = $1 AND org_id = $2")
            .bind(id)
            .bind(org_id)
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or_else(|| ControlError::NotFound {
                kind: "federation rule",
                id: id.into(),
            })?;
        rule_from_row(&row)
    }

    pub async fn list_rules(&self, org_id: &str) -> Result<Vec<FederationRule>> {
        let rows =
            sqlx::query("SELECT * FROM federation_rules WHERE org_id = $1 ORDER BY seq DESC")
                .bind(org_id)
                .fetch_all(&self.db().pool)
                .await?;
        rows.iter().map(rule_from_row).collect()
    }

    /// Archives an issuer, rule or service account; idempotent.
    pub async fn archive_identity(&self, by: &Actor, kind: IdentityKind, id: &str) -> Result<()> {
        let (table, action) = match kind {
            IdentityKind::Issuer => ("federation_issuers", "federation_issuer.archive"),
            IdentityKind::Rule => ("federation_rules", "federation_rule.archive"),
            IdentityKind::ServiceAccount => ("service_accounts", "service_account.archive"),
        };
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let sql = format!(
            "UPDATE {table} SET archived_at = $1 WHERE id = $2 AND org_id = $3 AND archived_at IS NULL"
        );
        let n = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(now_ms())
            .bind(id)
            .bind(by.org_id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            let sql = format!("SELECT id FROM {table} WHERE id = $1 AND org_id = $2");
            if sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(id)
                .bind(by.org_id.as_str())
                .fetch_optional(&mut *tx)
                .await?
                .is_none()
            {
                return Err(ControlError::NotFound {
                    kind: kind.name(),
                    id: id.into(),
                });
            }
        } else {
            append(
                &mut tx,
                NewEvent {
                    actor: by,
                    action,
                    target: id,
                    reason: None,
                    details: serde_json::json!({}),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether a service account is live.
    pub async fn service_account_active(&self, org_id: &str, id: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT id FROM service_accounts WHERE id = $1 AND org_id = $2 AND archived_at IS NULL",
        )
        .bind(id)
        .bind(org_id)
        .fetch_optional(&self.db().pool)
        .await?
        .is_some())
    }
}

/// What [`ControlStore::archive_identity`] archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityKind {
    Issuer,
    Rule,
    ServiceAccount,
}

impl IdentityKind {
    fn name(self) -> &'static str {
        match self {
            Self::Issuer => "federation issuer",
            Self::Rule => "federation rule",
            Self::ServiceAccount => "service account",
        }
    }
}
