//! The control plane (SPEC §7): the store behind the edge (SQLite or PostgreSQL), the
//! Tunnels API compatible with the official SDKs, workload-identity federation, scoped
//! API keys, client access keys and the hash-chained audit log.

pub mod api;
pub mod client;
pub mod db;
pub mod http_client;
pub mod ids;
/// Workload-identity JWT checks live with the other crypto (and its fuzz target) in pki.
pub use mcp_tunnel_pki::jwt;
pub mod launch;
pub mod password;
pub mod replicas;
pub mod scopes;
pub mod seal;
pub mod server_certs;
pub mod store;
pub mod time;

pub use db::{Db, DbError, Dialect};
pub use seal::MasterKey;
pub use store::{ControlError, ControlStore, StoreSettings};
