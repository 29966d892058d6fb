//! Tunnels and their tokens (SPEC §7.1).
//!
//! The token value is the self-contained `eyJ…` tunnel token of `mcp-tunnel-proto`. It is
//! stored twice: sealed under the master key (so reveal returns the same value until
//! rotation) and as the SHA-256 of its secret (so the edge verifies in constant time).

use mcp_tunnel_edge::StoreEvent;
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_proto::{TunnelId, TunnelToken};
use sqlx::Row as _;
use sqlx::any::AnyRow;

use super::audit::{NewEvent, append};
use super::{
    Actor, ControlError, ControlStore, ListParams, MAX_DISPLAY_NAME_CHARS, Page, Result, page_of,
};
use crate::db::Tx;
use crate::ids;
use crate::time::now_ms;

/// A tunnel as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tunnel {
    pub id: String,
    pub org_id: String,
    pub workspace_id: String,
    pub display_name: Option<String>,
    pub domain: String,
    pub created_at: i64,
    pub archived_at: Option<i64>,
    /// Non-archived CA certificates.
    pub active_certificates: i64,
    /// Live connector connections, over every edge replica.
    pub connections: i64,
}

impl Tunnel {
    /// `needs_certificate`, `active` or `archived`.
    pub fn status(&self) -> &'static str {
        if self.archived_at.is_some() {
            "archived"
        } else if self.active_certificates == 0 {
            "needs_certificate"
        } else {
            "active"
        }
    }
}

/// A revealed or freshly rotated token.
#[derive(Debug, Clone)]
pub struct RevealedToken {
    /// `ttkn_…`; changes on rotation.
    pub id: String,
    pub tunnel_token: Secret,
}

pub(crate) const TUNNEL_COLUMNS: &str = "t.seq, t.id, t.org_id, t.workspace_id, t.display_name, \
    t.domain, t.created_at, t.archived_at, \
    (SELECT COUNT(*) FROM certificates c WHERE c.tunnel_id = t.id AND c.archived_at IS NULL) AS active_certs, \
    (SELECT COUNT(*) FROM connections k WHERE k.tunnel_id = t.id) AS conns";

pub(crate) fn tunnel_from_row(r: &AnyRow) -> Result<Tunnel> {
    Ok(Tunnel {
        id: r.try_get("id")?,
        org_id: r.try_get("org_id")?,
        workspace_id: r.try_get("workspace_id")?,
        display_name: r.try_get("display_name")?,
        domain: r.try_get("domain")?,
        created_at: r.try_get("created_at")?,
        archived_at: r.try_get("archived_at")?,
        active_certificates: r.try_get("active_certs")?,
        connections: r.try_get("conns")?,
    })
}

fn check_display_name(name: Option<&str>) -> Result<()> {
    let Some(name) = name else { return Ok(()) };
    let n = name.chars().count();
    if n == 0 || n > MAX_DISPLAY_NAME_CHARS {
        return Err(ControlError::Invalid(format!(
            "display_name must be 1 to {MAX_DISPLAY_NAME_CHARS} characters (got {n})"
        )));
    }
    if name.chars().any(char::is_control) {
        return Err(ControlError::Invalid(
            "display_name must not contain control characters".into(),
        ));
    }
    Ok(())
}

fn not_found(id: &str) -> ControlError {
    ControlError::NotFound {
        kind: "tunnel",
        id: id.into(),
    }
}

impl ControlStore {
    fn new_token(&self, tunnel_id: &str) -> Result<TunnelToken> {
        let id = TunnelId::parse(tunnel_id)
            .map_err(|e| ControlError::Corrupt(format!("tunnel id {tunnel_id}: {e}")))?;
        let s = self.settings();
        Ok(TunnelToken::generate(
            id,
            s.edge_addr.clone(),
            s.edge_ca_pin,
        ))
    }

    /// Creates a tunnel in the actor's workspace with a fresh domain and token.
    pub async fn create_tunnel(&self, by: &Actor, display_name: Option<&str>) -> Result<Tunnel> {
        check_display_name(display_name)?;
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let live: i64 = sqlx::query(
            "SELECT COUNT(*) AS n FROM tunnels WHERE org_id = $1 AND archived_at IS NULL",
        )
        .bind(by.org_id.as_str())
        .fetch_one(&mut *tx)
        .await?
        .try_get("n")?;
        let max = i64::from(self.settings().max_tunnels_per_org);
        if live >= max {
            return Err(ControlError::Limit(format!(
                "the organization already has {live} non-archived tunnels (limit {max}); archive one before creating another"
            )));
        }
        let domain = self.unused_domain(&mut tx).await?;
        let id = ids::new_id("tnl");
        let token = self.new_token(&id)?;
        let token_id = ids::new_id("ttkn");
        let now = now_ms();
        sqlx::query(
            "INSERT INTO tunnels (id, org_id, workspace_id, display_name, domain, created_at, \
             token_id, token_hash, token_sealed, token_created_at) \
             VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)",
        )
        .bind(id.as_str())
        .bind(by.org_id.as_str())
        .bind(by.workspace_id.as_str())
        .bind(display_name)
        .bind(domain.as_str())
        .bind(now)
        .bind(token_id.as_str())
        .bind(token.secret_hash().to_vec())
        .bind(self.master().seal(&id, token.encode().as_bytes()))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "tunnel.create",
                target: &id,
                reason: None,
                details: serde_json::json!({"display_name": display_name, "domain": domain, "token_id": token_id, "workspace_id": by.workspace_id}),
            },
        )
        .await?;
        tx.commit().await?;
        self.get_tunnel(&by.org_id, &by.workspace_id, &id).await
    }

    /// A domain never used before, by any tunnel, archived or not.
    async fn unused_domain(&self, tx: &mut Tx) -> Result<String> {
        for _ in 0..16 {
            let domain = format!(
                "{}.{}",
                ids::new_domain_label(),
                self.settings().base_domain
            );
            let taken = sqlx::query("SELECT id FROM tunnels WHERE domain = $1")
                .bind(domain.as_str())
                .fetch_optional(&mut **tx)
                .await?
                .is_some();
            if !taken {
                return Ok(domain);
            }
        }
        Err(ControlError::Corrupt(
            "could not find an unused tunnel domain".into(),
        ))
    }

    /// A tunnel of the workspace; tunnels of other workspaces are not found.
    pub async fn get_tunnel(&self, org_id: &str, workspace_id: &str, id: &str) -> Result<Tunnel> {
        let sql = format!(
            "SELECT {TUNNEL_COLUMNS} FROM tunnels t WHERE t.id = $1 AND t.org_id = $2 AND t.workspace_id = $3"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(org_id)
            .bind(workspace_id)
            .fetch_optional(&self.db().pool)
            .await?
            .ok_or_else(|| not_found(id))?;
        tunnel_from_row(&row)
    }

    /// Tunnels of the workspace, newest first.
    pub async fn list_tunnels(
        &self,
        org_id: &str,
        workspace_id: &str,
        params: &ListParams,
    ) -> Result<Page<Tunnel>> {
        let (limit, before) = params.bounds()?;
        let archived = if params.include_archived {
            ""
        } else {
            "AND t.archived_at IS NULL"
        };
        let sql = format!(
            "SELECT {TUNNEL_COLUMNS} FROM tunnels t WHERE t.org_id = $1 AND t.workspace_id = $2 \
             AND t.seq < $3 {archived} ORDER BY t.seq DESC LIMIT $4"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(workspace_id)
            .bind(before)
            .bind(limit + 1)
            .fetch_all(&self.db().pool)
            .await?;
        let rows = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, tunnel_from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok(page_of(rows, limit))
    }

    /// Locks nothing by itself: call inside a write transaction. Fails when the tunnel
    /// is not in the actor's workspace.
    async fn tunnel_in_tx(
        &self,
        tx: &mut Tx,
        by: &Actor,
        id: &str,
    ) -> Result<(String, Option<i64>)> {
        let row = sqlx::query(
            "SELECT token_id, archived_at FROM tunnels WHERE id = $1 AND org_id = $2 AND workspace_id = $3",
        )
        .bind(id)
        .bind(by.org_id.as_str())
        .bind(by.workspace_id.as_str())
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| not_found(id))?;
        Ok((row.try_get("token_id")?, row.try_get("archived_at")?))
    }

    /// Archives the tunnel, its certificates and its token. Irreversible; archiving an
    /// archived tunnel returns it unchanged (and records nothing).
    pub async fn archive_tunnel(&self, by: &Actor, id: &str) -> Result<Tunnel> {
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let (_, archived_at) = self.tunnel_in_tx(&mut tx, by, id).await?;
        if archived_at.is_none() {
            let now = now_ms();
            // The sealed token is wiped: an archived tunnel's token can never be revealed.
            sqlx::query("UPDATE tunnels SET archived_at = $1, token_sealed = $2 WHERE id = $3")
                .bind(now)
                .bind(Vec::<u8>::new())
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let certs = sqlx::query(
                "UPDATE certificates SET archived_at = $1 WHERE tunnel_id = $2 AND archived_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            append(
                &mut tx,
                NewEvent {
                    actor: by,
                    action: "tunnel.archive",
                    target: id,
                    reason: None,
                    details: serde_json::json!({"certificates_archived": certs}),
                },
            )
            .await?;
            self.notify_in_tx(
                &mut tx,
                &StoreEvent::TunnelArchived {
                    tunnel_id: parse_id(id)?,
                },
            )
            .await?;
            tx.commit().await?;
            self.announce(StoreEvent::TunnelArchived {
                tunnel_id: parse_id(id)?,
            });
        } else {
            tx.commit().await?;
        }
        self.get_tunnel(&by.org_id, &by.workspace_id, id).await
    }

    /// The current token; the same value until it is rotated. Audited.
    pub async fn reveal_token(&self, by: &Actor, id: &str) -> Result<RevealedToken> {
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let (token_id, archived_at) = self.tunnel_in_tx(&mut tx, by, id).await?;
        if archived_at.is_some() {
            return Err(archived(id));
        }
        let sealed: Vec<u8> = sqlx::query("SELECT token_sealed FROM tunnels WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?
            .try_get("token_sealed")?;
        let plain = self.master().open(id, &sealed)?;
        let token = String::from_utf8(plain)
            .map_err(|_| ControlError::Corrupt(format!("token of {id} is not UTF-8")))?;
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "tunnel.reveal_token",
                target: id,
                reason: None,
                details: serde_json::json!({"token_id": token_id}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(RevealedToken {
            id: token_id,
            tunnel_token: Secret::new(token),
        })
    }

    /// Replaces the token: new connector connections need the new one at once, while
    /// established connections stay. The reason is recorded in the audit event.
    pub async fn rotate_token(
        &self,
        by: &Actor,
        id: &str,
        reason: Option<&str>,
    ) -> Result<RevealedToken> {
        if let Some(r) = reason
            && r.chars().count() > 1024
        {
            return Err(ControlError::Invalid(
                "reason must be at most 1024 characters".into(),
            ));
        }
        let mut tx = self.db().write_tx(&by.org_id).await?;
        let (old_id, archived_at) = self.tunnel_in_tx(&mut tx, by, id).await?;
        if archived_at.is_some() {
            return Err(archived(id));
        }
        let token = self.new_token(id)?;
        let token_id = ids::new_id("ttkn");
        let encoded = token.encode();
        sqlx::query(
            "UPDATE tunnels SET token_id = $1, token_hash = $2, token_sealed = $3, \
             token_created_at = $4 WHERE id = $5",
        )
        .bind(token_id.as_str())
        .bind(token.secret_hash().to_vec())
        .bind(self.master().seal(id, encoded.as_bytes()))
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
        append(
            &mut tx,
            NewEvent {
                actor: by,
                action: "tunnel.rotate_token",
                target: id,
                reason,
                details: serde_json::json!({"old_token_id": old_id, "token_id": token_id}),
            },
        )
        .await?;
        let event = StoreEvent::TokenRotated {
            tunnel_id: parse_id(id)?,
        };
        self.notify_in_tx(&mut tx, &event).await?;
        tx.commit().await?;
        self.announce(event);
        Ok(RevealedToken {
            id: token_id,
            tunnel_token: Secret::new(encoded),
        })
    }
}

fn archived(id: &str) -> ControlError {
    ControlError::Invalid(format!(
        "tunnel {id} is archived: its token is no longer valid and cannot be revealed or rotated"
    ))
}

pub(crate) fn parse_id(id: &str) -> Result<TunnelId> {
    TunnelId::parse(id).map_err(|e| ControlError::Corrupt(format!("tunnel id {id}: {e}")))
}
