//! Live connector connections per tunnel, and the choice of connection for a new session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::client::conn::http2::SendRequest;
use mcp_tunnel_proto::{ConnectionId, InstanceId, ProtocolVersion, TunnelId};
use tokio_util::sync::CancellationToken;

use crate::store::ConnectionRecord;

/// Error type of bodies sent over the tunnel.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Request body of a tunnel stream.
pub type TunnelBody = BoxBody<Bytes, BoxError>;

/// What the handshake established about a connection.
#[derive(Debug, Clone)]
pub struct ConnectionMeta {
    pub id: ConnectionId,
    pub record: ConnectionRecord,
    pub instance_id: InstanceId,
    pub protocol: ProtocolVersion,
    pub software_version: String,
}

/// One registered connector connection.
#[derive(Debug)]
pub struct LiveConnection {
    pub id: ConnectionId,
    pub record: ConnectionRecord,
    pub instance_id: InstanceId,
    pub protocol: ProtocolVersion,
    pub software_version: String,
    sender: SendRequest<TunnelBody>,
    active_streams: AtomicUsize,
    /// Set when a stream could not be opened (GOAWAY, reset): no new sessions go here.
    draining: AtomicBool,
    sever: CancellationToken,
}

impl LiveConnection {
    pub(crate) fn new(
        meta: ConnectionMeta,
        sender: SendRequest<TunnelBody>,
        sever: CancellationToken,
    ) -> Self {
        Self {
            id: meta.id,
            record: meta.record,
            instance_id: meta.instance_id,
            protocol: meta.protocol,
            software_version: meta.software_version,
            sender,
            active_streams: AtomicUsize::new(0),
            draining: AtomicBool::new(false),
            sever,
        }
    }

    /// Whether new sessions may be placed here.
    pub fn is_usable(&self) -> bool {
        !self.draining.load(Ordering::Relaxed)
            && !self.sever.is_cancelled()
            && !self.sender.is_closed()
    }

    pub fn active_streams(&self) -> usize {
        self.active_streams.load(Ordering::Relaxed)
    }

    pub(crate) fn mark_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Closes the connection at once (archive, replacement, shutdown).
    pub fn sever(&self) {
        self.sever.cancel();
    }

    pub(crate) fn severed(&self) -> &CancellationToken {
        &self.sever
    }

    pub(crate) fn sender(&self) -> SendRequest<TunnelBody> {
        self.sender.clone()
    }
}

/// Counts a stream as active on its connection until dropped.
#[derive(Debug)]
pub struct StreamGuard(Arc<LiveConnection>);

impl StreamGuard {
    pub fn connection(&self) -> &Arc<LiveConnection> {
        &self.0
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.active_streams.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Every live connection of this edge, by tunnel.
#[derive(Debug, Default)]
pub struct Registry {
    tunnels: Mutex<HashMap<TunnelId, Vec<Arc<LiveConnection>>>>,
    next: AtomicUsize,
}

impl Registry {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<TunnelId, Vec<Arc<LiveConnection>>>) -> T) -> T {
        let mut t = self.tunnels.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t)
    }

    /// Adds a connection. A connection from the same connector instance and index
    /// replaces (and severs) the old one: that is the connector reconnecting.
    pub fn insert(&self, conn: Arc<LiveConnection>) {
        let replaced = self.with(|t| {
            let list = t.entry(conn.record.tunnel_id.clone()).or_default();
            let mut replaced = Vec::new();
            list.retain(|c| {
                let same = c.instance_id == conn.instance_id
                    && c.record.conn_index == conn.record.conn_index;
                if same {
                    replaced.push(c.clone());
                }
                !same
            });
            list.push(conn);
            replaced
        });
        for c in replaced {
            c.sever();
        }
    }

    pub fn remove(&self, tunnel: &TunnelId, id: ConnectionId) {
        self.with(|t| {
            if let Some(list) = t.get_mut(tunnel) {
                list.retain(|c| c.id != id);
                if list.is_empty() {
                    t.remove(tunnel);
                }
            }
        });
    }

    /// The usable connection with the fewest active streams; ties are broken round-robin
    /// so that idle connections share new sessions evenly.
    pub fn pick(&self, tunnel: &TunnelId, exclude: &[ConnectionId]) -> Option<StreamGuard> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let chosen = self.with(|t| {
            let list = t.get(tunnel)?;
            let n = list.len();
            (0..n)
                .map(|i| &list[(start + i) % n])
                .filter(|c| c.is_usable() && !exclude.contains(&c.id))
                .min_by_key(|c| c.active_streams())
                .cloned()
        })?;
        chosen.active_streams.fetch_add(1, Ordering::Relaxed);
        Some(StreamGuard(chosen))
    }

    /// Severs every connection of a tunnel; returns how many.
    pub fn sever_tunnel(&self, tunnel: &TunnelId) -> usize {
        let list = self.with(|t| t.remove(tunnel)).unwrap_or_default();
        for c in &list {
            c.sever();
        }
        list.len()
    }

    pub fn sever_all(&self) {
        let all: Vec<_> = self.with(|t| t.drain().flat_map(|(_, l)| l).collect());
        for c in all {
            c.sever();
        }
    }

    pub fn connections(&self, tunnel: &TunnelId) -> Vec<Arc<LiveConnection>> {
        self.with(|t| t.get(tunnel).cloned().unwrap_or_default())
    }

    pub fn tunnels(&self) -> Vec<TunnelId> {
        self.with(|t| t.keys().cloned().collect())
    }

    pub fn total(&self) -> usize {
        self.with(|t| t.values().map(Vec::len).sum())
    }
}
