//! A static [`MemoryStore`] loaded from a JSON file, for running an edge by hand or in a
//! demo before the control plane exists. Production edges use the control plane's store.
//!
//! ```json
//! {
//!   "tunnels": [{"id": "tnl_abc", "workspace_id": "wrkspc_1", "domain": "ab12cd34.tunnels.example",
//!                "token": "eyJ…", "has_active_ca": true}],
//!   "client_keys": [{"key_sha256": "<hex>", "workspace_id": "wrkspc_1", "key_id": "ck_1"}]
//! }
//! ```
//! A tunnel gives either `token` (hashed on load) or `token_secret_sha256`; a client key
//! either `key` or `key_sha256`. Files holding plain secrets must be private (0600).

use std::path::{Path, PathBuf};

use mcp_tunnel_pki::crypto::Secret;
use mcp_tunnel_proto::{TunnelId, TunnelToken};
use serde::Deserialize;

use crate::store::{ClientIdentity, MemoryStore, TunnelRecord, USE_TUNNELS_SCOPE, WorkspaceId};

/// Why the store file was refused; messages name the file and the entry.
#[derive(Debug, thiserror::Error)]
pub enum StoreFileError {
    #[error("{0}")]
    Read(#[from] mcp_tunnel_pki::tls::LoadError),
    #[error("{path}: {reason}")]
    Json { path: PathBuf, reason: String },
    #[error("{path}: tunnels[{index}]: {reason}")]
    Tunnel {
        path: PathBuf,
        index: usize,
        reason: String,
    },
    #[error("{path}: client_keys[{index}]: {reason}")]
    ClientKey {
        path: PathBuf,
        index: usize,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    tunnels: Vec<TunnelEntry>,
    #[serde(default)]
    client_keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TunnelEntry {
    id: String,
    workspace_id: String,
    domain: String,
    token: Option<String>,
    token_secret_sha256: Option<String>,
    #[serde(default = "yes")]
    has_active_ca: bool,
    #[serde(default)]
    archived: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    key: Option<String>,
    key_sha256: Option<String>,
    workspace_id: String,
    key_id: String,
    #[serde(default = "default_scopes")]
    scopes: Vec<String>,
}

fn yes() -> bool {
    true
}

fn default_scopes() -> Vec<String> {
    vec![USE_TUNNELS_SCOPE.to_owned()]
}

fn hash32(hex_str: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_str, &mut out).ok()?;
    Some(out)
}

/// Loads the file into a fresh [`MemoryStore`].
pub fn load(path: &Path) -> Result<MemoryStore, StoreFileError> {
    let raw = mcp_tunnel_pki::tls::read_file(path)?;
    let file: File = serde_json::from_slice(&raw).map_err(|e| StoreFileError::Json {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    let store = MemoryStore::new();
    for (index, t) in file.tunnels.into_iter().enumerate() {
        let bad = |reason: String| StoreFileError::Tunnel {
            path: path.to_owned(),
            index,
            reason,
        };
        let id = TunnelId::parse(&t.id).map_err(|e| bad(format!("id: {e}")))?;
        let hash = match (t.token, t.token_secret_sha256) {
            (Some(tok), None) => {
                let token = TunnelToken::parse(&tok).map_err(|e| bad(e.to_string()))?;
                if token.tunnel_id != id {
                    return Err(bad("token belongs to another tunnel id".into()));
                }
                token.secret_hash()
            }
            (None, Some(h)) => hash32(&h)
                .ok_or_else(|| bad("token_secret_sha256: expected 64 hex digits".into()))?,
            _ => return Err(bad("give exactly one of token, token_secret_sha256".into())),
        };
        let domain = t.domain.to_ascii_lowercase();
        store.put_tunnel(
            TunnelRecord {
                id,
                workspace_id: WorkspaceId(t.workspace_id),
                domain,
                archived: t.archived,
                has_active_ca: t.has_active_ca,
            },
            hash,
        );
    }
    for (index, k) in file.client_keys.into_iter().enumerate() {
        let bad = |reason: &str| StoreFileError::ClientKey {
            path: path.to_owned(),
            index,
            reason: reason.to_owned(),
        };
        let identity = ClientIdentity {
            workspace_id: WorkspaceId(k.workspace_id),
            scopes: k.scopes,
            key_id: k.key_id,
        };
        match (k.key, k.key_sha256) {
            (Some(key), None) => store.add_client_key(&Secret::new(key), identity),
            (None, Some(h)) => {
                let hash = hash32(&h).ok_or_else(|| bad("key_sha256: expected 64 hex digits"))?;
                store.add_client_key_hash(hash, identity);
            }
            _ => return Err(bad("give exactly one of key, key_sha256")),
        }
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EdgeStore, TokenCheck};
    use mcp_tunnel_proto::EdgeAddr;

    #[tokio::test]
    async fn loads_tunnels_and_keys() {
        let token = TunnelToken::generate(
            TunnelId::parse("tnl_f").unwrap(),
            EdgeAddr::parse("localhost:7844").unwrap(),
            None,
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.json");
        let json = serde_json::json!({
            "tunnels": [{"id": "tnl_f", "workspace_id": "wrkspc_1", "domain": "AB12CD34.t.example", "token": token.encode()}],
            "client_keys": [{"key": "k-1", "workspace_id": "wrkspc_1", "key_id": "ck_1"}],
        });
        std::fs::write(&path, json.to_string()).unwrap();
        let store = load(&path).unwrap();
        let t = store
            .tunnel_by_domain("ab12cd34.t.example")
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(
            store.verify_token(&t.id, &token.secret).await.unwrap(),
            TokenCheck::Valid(_)
        ));
        let id = store
            .verify_client_key(&Secret::new("k-1"))
            .await
            .unwrap()
            .unwrap();
        assert!(id.has_scope(USE_TUNNELS_SCOPE));

        std::fs::write(
            &path,
            r#"{"tunnels":[{"id":"tnl_f","workspace_id":"w","domain":"d"}]}"#,
        )
        .unwrap();
        let e = load(&path).unwrap_err().to_string();
        assert!(
            e.contains("tunnels[0]") && e.contains("exactly one of token"),
            "{e}"
        );
        std::fs::write(&path, r#"{"tunnel":[]}"#).unwrap();
        assert!(
            load(&path)
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
    }
}
