//! CA certificates of tunnels: validated by the rules of SPEC §8 on registration, at most
//! two non-archived per tunnel.

use mcp_tunnel_pki::validate::validate_ca_pem;
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::audit::{NewEvent, append};
use super::{
    Actor, ControlError, ControlStore, ListParams, MAX_ACTIVE_CERTIFICATES, Page, Result, page_of,
};
use crate::ids;
use crate::time::now_ms;

/// A registered CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    pub id: String,
    pub tunnel_id: String,
    /// Lowercase hex SHA-256 of the DER.
    pub fingerprint: String,
    pub subject: String,
    pub pem: String,
    pub created_at: i64,
    /// Unix milliseconds of `notAfter`.
    pub expires_at: Option<i64>,
    pub archived_at: Option<i64>,
}

fn from_row(r: &AnyRow) -> Result<Certificate> {
    Ok(Certificate {
        id: r.try_get("id")?,
        tunnel_id: r.try_get("tunnel_id")?,
        fingerprint: r.try_get("fingerprint")?,
        subject: r.try_get("subject")?,
        pem: r.try_get("pem")?,
        created_at: r.try_get("created_at")?,
        expires_at: r.try_get("expires_at")?,
        archived_at: r.try_get("archived_at")?,
    })
}

fn not_found(id: &str) -> ControlError {
    ControlError::NotFound {
        kind: "certificate",
        id: id.into(),
    }
}

impl ControlStore {
    /// Registers a CA certificate after checking every rule of SPEC §8.
    pub async fn add_certificate(
        &self,
        by: &Actor,
        tunnel_id: &str,
        pem: &str,
    ) -> Result<Certificate> {
        let now = now_ms();
        let info = validate_ca_pem(pem, now / 1000)?;
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let tunnel = sqlx::query(
            "SELECT archived_at FROM tunnels WHERE id = $1 AND org_id = $2 AND workspace_id = $3",
        )
        .bind(tunnel_id)
        .bind(by.org_id.as_str())
        .bind(by.workspace_id.as_str())
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| ControlError::NotFound {
            kind: "tunnel",
            id: tunnel_id.into(),
        })?;
        if tunnel.try_get::<Option<i64>, _>("archived_at")?.is_some() {
            return Err(ControlError::Invalid(format!(
                "tunnel {tunnel_id} is archived: certificates cannot be added"
            )));
        }
        let active = sqlx::query(
            "SELECT fingerprint FROM certificates WHERE tunnel_id = $1 AND archived_at IS NULL",
        )
        .bind(tunnel_id)
        .fetch_all(&mut *tx)
        .await?;
        for r in &active {
            if r.try_get::<String, _>("fingerprint")? == info.fingerprint {
                return Err(ControlError::Invalid(format!(
                    "this CA certificate (fingerprint {}) is already registered for tunnel {tunnel_id}",
                    info.fingerprint
                )));
            }
        }
        if active.len() as i64 >= MAX_ACTIVE_CERTIFICATES {
            return Err(ControlError::Limit(format!(
                "tunnel {tunnel_id} already has {MAX_ACTIVE_CERTIFICATES} non-archived certificates; archive one before adding another"
            )));
        }
        let cert = Certificate {
            id: ids::new_id("tcrt"),
            tunnel_id: tunnel_id.into(),
            fingerprint: info.fingerprint.clone(),
            subject: info.subject.clone(),
            pem: pem.trim().to_owned() + "\n",
            created_at: now,
            expires_at: Some(info.not_after.saturating_mul(1000)),
            archived_at: None,
        };
        sqlx::query(
            "INSERT INTO certificates (id, tunnel_id, fingerprint, subject, pem, created_at, expires_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(cert.id.as_str())
        .bind(tunnel_id)
        .bind(cert.fingerprint.as_str())
        .bind(cert.subject.as_str())
        .bind(cert.pem.as_str())
        .bind(cert.created_at)
        .bind(cert.expires_at)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "certificate.create",
                target: &cert.id,
                reason: None,
                details: serde_json::json!({"tunnel_id": tunnel_id, "fingerprint": cert.fingerprint, "subject": cert.subject, "key": info.key}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(cert)
    }

    async fn check_tunnel_visible(
        &self,
        org_id: &str,
        workspace_id: &str,
        tunnel_id: &str,
    ) -> Result<()> {
        self.get_tunnel(org_id, workspace_id, tunnel_id)
            .await
            .map(|_| ())
    }

    pub async fn list_certificates(
        &self,
        org_id: &str,
        workspace_id: &str,
        tunnel_id: &str,
        params: &ListParams,
    ) -> Result<Page<Certificate>> {
        let (limit, before) = params.bounds()?;
        self.check_tunnel_visible(org_id, workspace_id, tunnel_id)
            .await?;
        let archived = if params.include_archived {
            ""
        } else {
            "AND archived_at IS NULL"
        };
        let sql = format!(
            "SELECT * FROM certificates WHERE tunnel_id = $1 AND seq < $2 {archived} \
             ORDER BY seq DESC LIMIT $3"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(tunnel_id)
            .bind(before)
            .bind(limit + 1)
            .fetch_all(&self.db().pool)
            .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(page_of(rows, limit))
    }

    pub async fn get_certificate(
        &self,
        org_id: &str,
        workspace_id: &str,
        tunnel_id: &str,
        id: &str,
    ) -> Result<Certificate> {
        self.check_tunnel_visible(org_id, workspace_id, tunnel_id)
            .await?;
        let row = sqlx::query("SELECT * FROM certificates WHERE id = $1 AND tunnel_id = $2")
            .bind(id)
            .bind(tunnel_id)
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or_else(|| not_found(id))?;
        from_row(&row)
    }

    /// Archives a certificate; idempotent. Archiving the last one is allowed: the tunnel
    /// goes back to `needs_certificate` and the edge refuses its client sessions.
    pub async fn archive_certificate(
        &self,
        by: &Actor,
        tunnel_id: &str,
        id: &str,
    ) -> Result<Certificate> {
        self.check_tunnel_visible(&by.org_id, &by.workspace_id, tunnel_id)
            .await?;
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let row = sqlx::query("SELECT * FROM certificates WHERE id = $1 AND tunnel_id = $2")
            .bind(id)
            .bind(tunnel_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| not_found(id))?;
        let mut cert = from_row(&row)?;
        if cert.archived_at.is_none() {
            let now = now_ms();
            sqlx::query("UPDATE certificates SET archived_at = $1 WHERE id = $2")
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            cert.archived_at = Some(now);
            append(
                &mut tx,
                NewEvent {
                    actor: by,
                    action: "certificate.archive",
                    target: id,
                    reason: None,
                    details: serde_json::json!({"tunnel_id": tunnel_id, "fingerprint": cert.fingerprint}),
                },
            )
            .await?;
        }
        tx.commit().await?;
        Ok(cert)
    }
}
