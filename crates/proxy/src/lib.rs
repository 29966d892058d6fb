//! The proxy: terminates inner TLS carried over WebSocket, routes each request by
//! hostname, checks every upstream address against the allow-list, and forwards.
//!
//! Reading order follows a request: [`server`] (accept → WebSocket → inner TLS → inner
//! HTTP), [`forward`] (route → forward → log), [`guard`] and [`upstream`] (the address
//! check and connection), [`error`] (what each failure means), [`certs`] (hot reload).

pub mod admin;
pub mod certs;
pub mod config;
pub mod error;
pub mod forward;
pub mod guard;
pub mod metrics;
pub mod server;
pub mod upstream;

pub use config::ProxyConfig;
pub use server::{Proxy, RunningProxy, StartError};
