//! The edge's view of the store ([`EdgeStore`]) and the revocation events behind it.
//!
//! On SQLite (one process) events go over an in-process broadcast channel. On PostgreSQL
//! they are also sent with `NOTIFY` in the transaction that causes them, and every
//! replica's [`ControlStore::listen`] task turns them back into events, so an archive or
//! rotation on one replica reaches the edges of all the others within moments.

use std::time::Duration;

use mcp_tunnel_edge::store::{
    ClientIdentity, ConnectionRecord, StoreError, StoreFuture, WorkspaceId,
};
use mcp_tunnel_edge::{EdgeStore, StoreEvent, TokenCheck, TunnelRecord};
use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_proto::TunnelId;
use mcp_tunnel_proto::token::verify_secret;
use serde::{Deserialize, Serialize};
use sqlx::Row as _;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::tunnels::{TUNNEL_COLUMNS, parse_id, tunnel_from_row};
use super::{ControlError, ControlStore, Result, Tunnel};
use crate::db::{Dialect, Tx};
use crate::ids::CredentialKind;
use crate::scopes;
use crate::time::now_ms;

/// PostgreSQL channel carrying [`WireEvent`]s between replicas.
const CHANNEL: &str = "mcp_tunnel_events";

#[derive(Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum WireEvent {
    TokenRotated { tunnel_id: String },
    TunnelArchived { tunnel_id: String },
}

impl From<&StoreEvent> for WireEvent {
    fn from(e: &StoreEvent) -> Self {
        match e {
            StoreEvent::TokenRotated { tunnel_id } => Self::TokenRotated {
                tunnel_id: tunnel_id.to_string(),
            },
            StoreEvent::TunnelArchived { tunnel_id } => Self::TunnelArchived {
                tunnel_id: tunnel_id.to_string(),
            },
        }
    }
}

impl WireEvent {
    fn into_event(self) -> Option<StoreEvent> {
        Some(match self {
            Self::TokenRotated { tunnel_id } => StoreEvent::TokenRotated {
                tunnel_id: TunnelId::parse(&tunnel_id).ok()?,
            },
            Self::TunnelArchived { tunnel_id } => StoreEvent::TunnelArchived {
                tunnel_id: TunnelId::parse(&tunnel_id).ok()?,
            },
        })
    }
}

fn record(t: &Tunnel) -> Result<TunnelRecord> {
    Ok(TunnelRecord {
        id: parse_id(&t.id)?,
        workspace_id: WorkspaceId(t.workspace_id.clone()),
        domain: t.domain.clone(),
        archived: t.archived_at.is_some(),
        has_active_ca: t.active_certificates > 0,
    })
}

fn store_err(e: ControlError) -> StoreError {
    StoreError(e.to_string())
}

impl ControlStore {
    /// Sends `event` to other replicas when the transaction commits (PostgreSQL only).
    pub(crate) async fn notify_in_tx(&self, tx: &mut Tx, event: &StoreEvent) -> Result<()> {
        if self.dialect() == Dialect::Postgres {
            let payload = serde_json::to_string(&WireEvent::from(event)).unwrap_or_default();
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(CHANNEL)
                .bind(payload)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Tells this process's subscribers.
    pub(crate) fn announce(&self, event: StoreEvent) {
        // No subscriber (an API without an edge) is fine.
        let _ = self.inner.events.send(event);
    }

    /// On PostgreSQL, relays events of every replica to this one's subscribers until
    /// `stop`; reconnects after errors. On SQLite there is nothing to listen to.
    pub fn listen(&self, stop: CancellationToken) -> tokio::task::JoinHandle<()> {
        let store = self.clone();
        tokio::spawn(async move {
            if store.dialect() != Dialect::Postgres {
                return;
            }
            while !stop.is_cancelled() {
                if let Err(e) = store.listen_once(&stop).await {
                    tracing::warn!(error = %e, "store event listener failed; reconnecting");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    }
                }
            }
        })
    }

    async fn listen_once(&self, stop: &CancellationToken) -> std::result::Result<(), sqlx::Error> {
        let mut listener = sqlx::postgres::PgListener::connect(self.db().url()).await?;
        listener.listen(CHANNEL).await?;
        loop {
            let n = tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                n = listener.recv() => n?,
            };
            match serde_json::from_str::<WireEvent>(n.payload())
                .ok()
                .and_then(WireEvent::into_event)
            {
                Some(ev) => self.announce(ev),
                None => tracing::warn!("ignoring malformed store event notification"),
            }
        }
    }

    /// Forgets connections an edge registered before it restarted.
    pub async fn forget_edge_connections(&self, edge_id: &str) -> Result<u64> {
        Ok(sqlx::query("DELETE FROM connections WHERE edge_id = $1")
            .bind(edge_id)
            .execute(&self.db().pool)
            .await?
            .rows_affected())
    }

    /// Records that replica `edge_id` is alive and reachable by its peers at `peer_addr`
    /// (empty for a server that takes no forwarded sessions).
    pub async fn heartbeat_edge(&self, edge_id: &str, peer_addr: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO edges (edge_id, peer_addr, heartbeat_at) VALUES ($1, $2, $3) \
             ON CONFLICT (edge_id) DO UPDATE SET peer_addr = excluded.peer_addr, \
             heartbeat_at = excluded.heartbeat_at",
        )
        .bind(edge_id)
        .bind(peer_addr)
        .bind(now_ms())
        .execute(&self.db().pool)
        .await?;
        Ok(())
    }

    /// Forgets replicas silent for longer than `max_age_ms`, and their connections.
    pub async fn reap_stale_edges(&self, max_age_ms: i64) -> Result<u64> {
        let cutoff = now_ms() - max_age_ms;
        let n = sqlx::query(
            "DELETE FROM connections WHERE edge_id IN (SELECT edge_id FROM edges WHERE heartbeat_at < $1)",
        )
        .bind(cutoff)
        .execute(&self.db().pool)
        .await?
        .rows_affected();
        sqlx::query("DELETE FROM edges WHERE heartbeat_at < $1")
            .bind(cutoff)
            .execute(&self.db().pool)
            .await?;
        Ok(n)
    }

    /// Removes a replica's row (on shutdown).
    pub async fn forget_edge(&self, edge_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM edges WHERE edge_id = $1")
            .bind(edge_id)
            .execute(&self.db().pool)
            .await?;
        Ok(())
    }

    /// The peer address of another live replica holding a connection of the tunnel.
    pub async fn peer_for_tunnel(
        &self,
        tunnel_id: &str,
        self_edge_id: &str,
        max_age_ms: i64,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT e.peer_addr FROM connections c JOIN edges e ON e.edge_id = c.edge_id \
             WHERE c.tunnel_id = $1 AND c.edge_id <> $2 AND e.heartbeat_at >= $3 AND e.peer_addr <> '' \
             ORDER BY c.registered_at DESC LIMIT 1",
        )
        .bind(tunnel_id)
        .bind(self_edge_id)
        .bind(now_ms() - max_age_ms)
        .fetch_optional(&self.db().pool)
        .await?;
        Ok(row.map(|r| r.try_get("peer_addr")).transpose()?)
    }

    async fn tunnel_record_where(&self, column: &str, value: &str) -> Result<Option<TunnelRecord>> {
        let sql = format!("SELECT {TUNNEL_COLUMNS} FROM tunnels t WHERE t.{column} = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(value)
            .fetch_optional(&self.db().pool)
            .await?;
        row.map(|r| record(&tunnel_from_row(&r)?)).transpose()
    }

    async fn check_token(&self, id: &TunnelId, secret: &Secret) -> Result<TokenCheck> {
        let sql = format!("SELECT {TUNNEL_COLUMNS}, t.token_hash FROM tunnels t WHERE t.id = $1");
        let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.as_str())
            .fetch_optional(&self.db().pool)
            .await?
        else {
            return Ok(TokenCheck::Rejected);
        };
        let hash: Vec<u8> = row.try_get("token_hash")?;
        let Ok(hash) = <[u8; 32]>::try_from(hash.as_slice()) else {
            return Ok(TokenCheck::Rejected);
        };
        if !verify_secret(secret, &hash) {
            return Ok(TokenCheck::Rejected);
        }
        let rec = record(&tunnel_from_row(&row)?)?;
        Ok(if rec.archived {
            TokenCheck::Archived
        } else {
            TokenCheck::Valid(rec)
        })
    }

    async fn client_identity(&self, key: &Secret) -> Result<Option<ClientIdentity>> {
        let Some(cred) = self.resolve_credential(key.expose()).await? else {
            return Ok(None);
        };
        if cred.kind != CredentialKind::ClientKey || !cred.has_scope(scopes::USE_TUNNELS) {
            return Ok(None);
        }
        let workspace = match cred.workspace_id {
            Some(ws) => ws,
            None => self.default_workspace(&cred.org_id).await?,
        };
        Ok(Some(ClientIdentity {
            workspace_id: WorkspaceId(workspace),
            scopes: cred.scopes,
            key_id: cred.id,
        }))
    }

    async fn register(&self, c: &ConnectionRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO connections (connection_id, tunnel_id, edge_id, conn_index, peer, registered_at) \
             VALUES ($1,$2,$3,$4,$5,$6) ON CONFLICT (connection_id) DO NOTHING",
        )
        .bind(c.connection_id.as_str())
        .bind(c.tunnel_id.as_str())
        .bind(c.edge_id.as_str())
        .bind(i64::from(c.conn_index))
        .bind(c.peer.to_string())
        .bind(now_ms())
        .execute(&self.db().pool)
        .await?;
        Ok(())
    }

    async fn unregister(&self, c: &ConnectionRecord) -> Result<()> {
        sqlx::query("DELETE FROM connections WHERE connection_id = $1")
            .bind(c.connection_id.as_str())
            .execute(&self.db().pool)
            .await?;
        Ok(())
    }
}

impl EdgeStore for ControlStore {
    fn tunnel_by_domain<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, Option<TunnelRecord>> {
        Box::pin(async move {
            self.tunnel_record_where("domain", domain)
                .await
                .map_err(store_err)
        })
    }

    fn tunnel_by_id<'a>(&'a self, id: &'a TunnelId) -> StoreFuture<'a, Option<TunnelRecord>> {
        Box::pin(async move {
            self.tunnel_record_where("id", id.as_str())
                .await
                .map_err(store_err)
        })
    }

    fn verify_token<'a>(
        &'a self,
        id: &'a TunnelId,
        secret: &'a Secret,
    ) -> StoreFuture<'a, TokenCheck> {
        Box::pin(async move { self.check_token(id, secret).await.map_err(store_err) })
    }

    fn verify_client_key<'a>(&'a self, key: &'a Secret) -> StoreFuture<'a, Option<ClientIdentity>> {
        Box::pin(async move { self.client_identity(key).await.map_err(store_err) })
    }

    fn connection_registered<'a>(&'a self, conn: &'a ConnectionRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.register(conn).await.map_err(store_err) })
    }

    fn connection_unregistered<'a>(&'a self, conn: &'a ConnectionRecord) -> StoreFuture<'a, ()> {
        Box::pin(async move { self.unregister(conn).await.map_err(store_err) })
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.inner.events.subscribe()
    }
}
