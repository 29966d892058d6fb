//! The edge: accepts outbound connections from connectors and client sessions from MCP
//! clients, and relays each session's bytes over one of the tunnel's connections without
//! ever seeing plaintext (the payload is the client's inner TLS).

mod admin;
mod clients;
mod connectors;
pub mod limits;
pub mod metrics;
pub mod refusal;
pub mod registry;
mod relay;
mod server;
mod severable;
pub mod store;
pub mod store_file;
mod tls_files;

pub use server::{Edge, EdgeConfig, EdgeListeners, EdgeTls};
pub use store::{EdgeStore, MemoryStore, StoreEvent, TokenCheck, TunnelRecord};
pub use tls_files::{
    RELOAD_INTERVAL, TlsFileError, server_config_from_files, server_config_reloading,
};
