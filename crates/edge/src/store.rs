//! What the edge needs to know about tunnels, tokens, certificates and client keys, behind
//! one trait that the control plane implements (SQLite/PostgreSQL), plus [`MemoryStore`]
//! for tests and single-process setups.
//!
//! Revocation reaches the edge as [`StoreEvent`]s on a broadcast channel; a store shared
//! by several edge replicas must deliver them to every replica.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use mcp_tunnel_net::host::tunnel_domains;
use mcp_tunnel_pki::crypto::{self, Secret};
use mcp_tunnel_proto::TunnelId;
use mcp_tunnel_proto::token::verify_secret;
use tokio::sync::broadcast;

/// Scope a client access key needs to open sessions.
pub const USE_TUNNELS_SCOPE: &str = "workspace:use_tunnels";

/// A boxed future, so that `EdgeStore` can be used as `dyn EdgeStore`.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The store could not answer; the edge refuses with an internal error and logs this.
#[derive(Debug, Clone, thiserror::Error)]
#[error("tunnel store unavailable: {0}")]
pub struct StoreError(pub String);

/// A workspace id (`wrkspc_…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WorkspaceId(pub String);

impl fmt::Display for WorkspaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the edge knows about one tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRecord {
    pub id: TunnelId,
    pub workspace_id: WorkspaceId,
    /// The tunnel domain, lowercase, e.g. `ab12cd34.tunnels.example.com`.
    pub domain: String,
    pub archived: bool,
    /// Whether at least one non-archived CA certificate is registered. Without one the
    /// client could not verify the proxy, so sessions are refused ("needs certificate").
    pub has_active_ca: bool,
}

/// Result of checking a connector's token secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenCheck {
    Valid(TunnelRecord),
    /// Unknown tunnel or wrong secret: deliberately one answer.
    Rejected,
    Archived,
}

/// Who a client access key belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    pub workspace_id: WorkspaceId,
    pub scopes: Vec<String>,
    /// For logs and audit: the key's id, never the key.
    pub key_id: String,
}

impl ClientIdentity {
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// One live connector connection, as reported to the store (for the `connections` count).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub tunnel_id: TunnelId,
    pub connection_id: String,
    pub edge_id: String,
    pub conn_index: u8,
    pub peer: std::net::SocketAddr,
}

/// Changes the edge must act on at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// New connections must present the new token; established ones stay.
    TokenRotated { tunnel_id: TunnelId },
    /// Sever every connection of the tunnel and refuse new ones.
    TunnelArchived { tunnel_id: TunnelId },
}

/// The edge's view of the control plane.
pub trait EdgeStore: Send + Sync + 'static {
    /// The tunnel whose domain is exactly `domain` (lowercase, no port).
    fn tunnel_by_domain<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, Option<TunnelRecord>>;

    fn tunnel_by_id<'a>(&'a self, id: &'a TunnelId) -> StoreFuture<'a, Option<TunnelRecord>>;

    /// Checks a connector's secret against the stored hash, in constant time.
    fn verify_token<'a>(
        &'a self,
        id: &'a TunnelId,
        secret: &'a Secret,
    ) -> StoreFuture<'a, TokenCheck>;

    /// Resolves a client access key; `None` when unknown, revoked or expired.
    fn verify_client_key<'a>(&'a self, key: &'a Secret) -> StoreFuture<'a, Option<ClientIdentity>>;

    fn connection_registered<'a>(&'a self, conn: &'a ConnectionRecord) -> StoreFuture<'a, ()>;

    fn connection_unregistered<'a>(&'a self, conn: &'a ConnectionRecord) -> StoreFuture<'a, ()>;

    /// Events from now on. A lagging receiver must assume it missed revocations.
    fn subscribe(&self) -> broadcast::Receiver<StoreEvent>;
}

/// The tunnel a normalised host reaches: the one whose domain it is, else the one
/// directly above it (a route host, `<route>.<tunnel domain>`), in the lookup order of
/// [`tunnel_domains`]. The edge and the replica router both route by it.
pub async fn tunnel_for_host<S: EdgeStore + ?Sized>(
    store: &S,
    host: &str,
) -> Result<Option<TunnelRecord>, StoreError> {
    for domain in tunnel_domains(host) {
        if let Some(t) = store.tunnel_by_domain(domain).await? {
            return Ok(Some(t));
        }
    }
    Ok(None)
}

#[derive(Debug)]
struct MemTunnel {
    record: TunnelRecord,
    token_hash: [u8; 32],
    connections: Vec<ConnectionRecord>,
}

#[derive(Debug, Default)]
struct MemState {
    tunnels: HashMap<TunnelId, MemTunnel>,
    /// SHA-256 of the client key → identity. Keys are high-entropy, so a lookup by hash
    /// reveals nothing useful through timing.
    client_keys: HashMap<[u8; 32], ClientIdentity>,
}

/// An in-memory [`EdgeStore`].
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<MemState>>,
    events: broadcast::Sender<StoreEvent>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            events: broadcast::channel(256).0,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut MemState) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Adds or replaces a tunnel with the hash of its current token secret.
    pub fn put_tunnel(&self, record: TunnelRecord, token_hash: [u8; 32]) {
        self.with(|s| {
            let connections = s
                .tunnels
                .remove(&record.id)
                .map(|t| t.connections)
                .unwrap_or_default();
            s.tunnels.insert(
                record.id.clone(),
                MemTunnel {
                    record,
                    token_hash,
                    connections,
                },
            );
        });
    }

    /// Replaces the token hash and announces the rotation.
    pub fn rotate_token(&self, id: &TunnelId, new_hash: [u8; 32]) -> bool {
        let found = self.with(|s| match s.tunnels.get_mut(id) {
            Some(t) => {
                t.token_hash = new_hash;
                true
            }
            None => false,
        });
        if found {
            let _ = self.events.send(StoreEvent::TokenRotated {
                tunnel_id: id.clone(),
            });
        }
        found
    }

    /// Archives the tunnel and announces it.
    pub fn archive(&self, id: &TunnelId) -> bool {
        let found = self.with(|s| match s.tunnels.get_mut(id) {
            Some(t) => {
                t.record.archived = true;
                true
            }
            None => false,
        });
        if found {
            let _ = self.events.send(StoreEvent::TunnelArchived {
                tunnel_id: id.clone(),
            });
        }
        found
    }

    pub fn set_has_active_ca(&self, id: &TunnelId, has: bool) {
        self.with(|s| {
            if let Some(t) = s.tunnels.get_mut(id) {
                t.record.has_active_ca = has;
            }
        });
    }

    pub fn add_client_key(&self, key: &Secret, identity: ClientIdentity) {
        self.add_client_key_hash(crypto::sha256(key.expose().as_bytes()), identity);
    }

    /// Adds a client key known only by its SHA-256.
    pub fn add_client_key_hash(&self, hash: [u8; 32], identity: ClientIdentity) {
        self.with(|s| s.client_keys.insert(hash, identity));
    }

    /// Live connections the edge has registered for this tunnel.
    pub fn connections(&self, id: &TunnelId) -> Vec<ConnectionRecord> {
        self.with(|s| {
            s.tunnels
                .get(id)
                .map(|t| t.connections.clone())
                .unwrap_or_default()
        })
    }
}

fn ready<'a, T: Send + 'a>(v: T) -> StoreFuture<'a, T> {
    Box::pin(std::future::ready(Ok(v)))
}

impl EdgeStore for MemoryStore {
    fn tunnel_by_domain<'a>(&'a self, domain: &'a str) -> StoreFuture<'a, Option<TunnelRecord>> {
        ready(self.with(|s| {
            s.tunnels
                .values()
                .find(|t| t.record.domain == domain)
                .map(|t| t.record.clone())
        }))
    }

    fn tunnel_by_id<'a>(&'a self, id: &'a TunnelId) -> StoreFuture<'a, Option<TunnelRecord>> {
        ready(self.with(|s| s.tunnels.get(id).map(|t| t.record.clone())))
    }

    fn verify_token<'a>(
        &'a self,
        id: &'a TunnelId,
        secret: &'a Secret,
    ) -> StoreFuture<'a, TokenCheck> {
        ready(self.with(|s| match s.tunnels.get(id) {
            None => TokenCheck::Rejected,
            Some(t) if !verify_secret(secret, &t.token_hash) => TokenCheck::Rejected,
            Some(t) if t.record.archived => TokenCheck::Archived,
            Some(t) => TokenCheck::Valid(t.record.clone()),
        }))
    }

    fn verify_client_key<'a>(&'a self, key: &'a Secret) -> StoreFuture<'a, Option<ClientIdentity>> {
        let hash = crypto::sha256(key.expose().as_bytes());
        ready(self.with(|s| s.client_keys.get(&hash).cloned()))
    }

    fn connection_registered<'a>(&'a self, conn: &'a ConnectionRecord) -> StoreFuture<'a, ()> {
        self.with(|s| {
            if let Some(t) = s.tunnels.get_mut(&conn.tunnel_id) {
                t.connections.push(conn.clone());
            }
        });
        ready(())
    }

    fn connection_unregistered<'a>(&'a self, conn: &'a ConnectionRecord) -> StoreFuture<'a, ()> {
        self.with(|s| {
            if let Some(t) = s.tunnels.get_mut(&conn.tunnel_id) {
                t.connections
                    .retain(|c| c.connection_id != conn.connection_id);
            }
        });
        ready(())
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_tunnel_proto::token::{generate_secret, hash_secret};

    fn record() -> TunnelRecord {
        TunnelRecord {
            id: TunnelId::parse("tnl_a").unwrap(),
            workspace_id: WorkspaceId("wrkspc_1".into()),
            domain: "abcd1234.t.example".into(),
            archived: false,
            has_active_ca: true,
        }
    }

    #[tokio::test]
    async fn token_rotation_and_archive() {
        let store = MemoryStore::new();
        let mut events = store.subscribe();
        let old = generate_secret();
        let r = record();
        store.put_tunnel(r.clone(), hash_secret(&old));
        assert_eq!(
            store.verify_token(&r.id, &old).await.unwrap(),
            TokenCheck::Valid(r.clone())
        );
        let new = generate_secret();
        assert!(store.rotate_token(&r.id, hash_secret(&new)));
        assert_eq!(
            store.verify_token(&r.id, &old).await.unwrap(),
            TokenCheck::Rejected
        );
        assert!(matches!(
            store.verify_token(&r.id, &new).await.unwrap(),
            TokenCheck::Valid(_)
        ));
        assert_eq!(
            events.recv().await.unwrap(),
            StoreEvent::TokenRotated {
                tunnel_id: r.id.clone()
            }
        );
        store.archive(&r.id);
        assert_eq!(
            store.verify_token(&r.id, &new).await.unwrap(),
            TokenCheck::Archived
        );
        // A wrong secret on an archived tunnel says nothing about the archive.
        assert_eq!(
            store.verify_token(&r.id, &old).await.unwrap(),
            TokenCheck::Rejected
        );
        assert_eq!(
            events.recv().await.unwrap(),
            StoreEvent::TunnelArchived { tunnel_id: r.id }
        );
    }

    #[tokio::test]
    async fn client_keys_and_domains() {
        let store = MemoryStore::new();
        store.put_tunnel(record(), [0; 32]);
        let key = generate_secret();
        store.add_client_key(
            &key,
            ClientIdentity {
                workspace_id: WorkspaceId("wrkspc_1".into()),
                scopes: vec![USE_TUNNELS_SCOPE.into()],
                key_id: "ck_1".into(),
            },
        );
        let id = store.verify_client_key(&key).await.unwrap().unwrap();
        assert!(id.has_scope(USE_TUNNELS_SCOPE));
        assert!(
            store
                .verify_client_key(&generate_secret())
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            store
                .tunnel_by_domain("abcd1234.t.example")
                .await
                .unwrap()
                .is_some()
        );
        assert!(
            store
                .tunnel_by_domain("x.abcd1234.t.example")
                .await
                .unwrap()
                .is_none()
        );
    }
}
